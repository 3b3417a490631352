/* SPDX-License-Identifier: MIT */
/*
 * Attention over the F16 KV cache against the host reference: kv_store into a
 * cache pre-filled with NaN (so a kernel that reads a position it should not
 * poisons its output), then prefill or decode. Run twice by meson, the second
 * time with INFERD_GPU_NO_SUBGROUP=1 for the shared-memory reductions.
 *
 * The position-buffer path (GpuAttentionParams.pos_buffer): kv_store to
 * scattered positions read from the buffer, and one recording of kv_store +
 * decode replayed at many positions (short and long, up and down), only the
 * buffers rewritten between submissions; the cache past each position is NaN
 * again before every replay. Decode's completion counters: several decodes
 * sharing one scratch in one recording, replayed, the counters read back as
 * zero after every submission.
 *
 * Tolerances:
 *  - rope_kv_store: q NMSE < 1e-8 against ref_rope (test-ops-basic's rope
 *    bound), with frequency factors too (and then > 0.1 against ref_rope
 *    without them); k and v as kv_store's, k after ref_rope (a k rotated a few F32
 *    ulps apart may round to the next F16, so an element near zero gets an
 *    absolute 1e-4 instead of one F16 step).
 *  - kv_store: every F16 within one unit in the last place of the
 *    round-to-nearest-even conversion (packHalf2x16 leaves the rounding to
 *    the implementation), and positions outside the batch untouched.
 *  - attention: NMSE < 1e-9 against gpu_attention_ref, which works in double
 *    on the very F16 values read back from the device's cache. The kernels'
 *    only error is F32 rounding (NMSE around 1e-13); a single key missed or
 *    attended to by mistake out of 10k moves the output by ~1e-4 relative,
 *    an NMSE near 1e-8, so the bound catches masking errors that a looser
 *    1e-5 would let through.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gpu-test.h"
#include "ops-attention.h"
#include "quant.h"
#include "ref-basic.h"

#define NMSE_BOUND 1e-9
#define CACHE_POISON 0x7e007e00u /* two F16 quiet NaNs */

static GpuTestCtx T;

typedef enum Path { PATH_AUTO, PATH_PREFILL, PATH_DECODE } Path;

typedef struct Case {
        uint32_t n_head, n_head_kv, dim, n_ctx, pos0, n_tokens;
        float qmul;             /* 0: 1; large values make the softmax peaky */
        uint32_t q_pad;         /* extra floats between tokens of q (a view into a wider row) */
        Path path;
} Case;

static GpuBuffer *new_buffer(uint64_t size) {
        GpuBuffer *b = NULL;
        assert_int_equal(gpu_buffer_new(T.dev, MAX(size, 256u), GPU_MEMORY_DEVICE, &b), 0);
        return b;
}

static GpuBuffer *upload(const void *data, uint64_t size) {
        GpuBuffer *b = new_buffer(size);
        if (size > 0)
                assert_int_equal(gpu_buffer_write(b, 0, data, size), 0);
        return b;
}

/* Decode's scratch as the model makes it: its completion counters zeroed. */
static GpuBuffer *new_scratch(uint32_t n_head, uint32_t dim, uint32_t n_ctx) {
        GpuBuffer *b = NULL;
        assert_int_equal(gpu_attention_scratch_new(T.dev, n_head, dim, n_ctx, &b), 0);
        return b;
}

/* Decode's grid: 0, the device's choice (on lavapipe a few chunks), or a GPU's (tests *_gpu_grid). */
static uint32_t decode_groups;

static void run_case(const Case *cs, uint64_t seed) {
        GpuAttentionParams p = {
                .decode_groups = decode_groups,
                .n_tokens = cs->n_tokens,
                .n_head = cs->n_head,
                .n_head_kv = cs->n_head_kv,
                .head_dim = cs->dim,
                .n_ctx = cs->n_ctx,
                .pos0 = cs->pos0,
                .scale = 1.0f / sqrtf((float) cs->dim),
                .q_stride = cs->q_pad ? cs->n_head * cs->dim + cs->q_pad : 0,
        };
        const uint32_t dim = cs->dim, n_all = cs->pos0 + cs->n_tokens;
        const size_t kv_row = (size_t) cs->n_head_kv * dim, q_row = p.q_stride ? p.q_stride : cs->n_head * dim;
        const size_t cache_n = (size_t) cs->n_head_kv * cs->n_ctx * dim;
        const size_t out_n = (size_t) cs->n_tokens * cs->n_head * dim;

        float *k_all = malloc(sizeof(float) * n_all * kv_row), *v_all = malloc(sizeof(float) * n_all * kv_row);
        float *q = malloc(sizeof(float) * cs->n_tokens * q_row);
        float *out = malloc(sizeof(float) * out_n), *ref = malloc(sizeof(float) * out_n);
        uint16_t *kc = malloc(2 * cache_n), *vc = malloc(2 * cache_n);
        uint16_t *kc_ref = malloc(2 * cache_n), *vc_ref = malloc(2 * cache_n);
        assert_non_null(k_all && v_all && q && out && ref && kc && vc && kc_ref && vc_ref);

        test_fill_random(k_all, n_all * kv_row, seed * 4 + 1);
        test_fill_random(v_all, n_all * kv_row, seed * 4 + 2);
        test_fill_random(q, cs->n_tokens * q_row, seed * 4 + 3);
        for (size_t i = 0; i < cs->n_tokens * q_row; i++)
                q[i] *= cs->qmul > 0 ? cs->qmul : 1.0f;

        /* The earlier positions and this batch's come from separate projections. */
        GpuBuffer *k_prev = upload(k_all, sizeof(float) * cs->pos0 * kv_row);
        GpuBuffer *v_prev = upload(v_all, sizeof(float) * cs->pos0 * kv_row);
        GpuBuffer *k_cur = upload(k_all + cs->pos0 * kv_row, sizeof(float) * cs->n_tokens * kv_row);
        GpuBuffer *v_cur = upload(v_all + cs->pos0 * kv_row, sizeof(float) * cs->n_tokens * kv_row);
        GpuBuffer *qb = upload(q, sizeof(float) * cs->n_tokens * q_row);
        GpuBuffer *k_cache = new_buffer(2 * cache_n), *v_cache = new_buffer(2 * cache_n);
        GpuBuffer *ob = new_buffer(sizeof(float) * out_n);
        GpuBuffer *scratch = new_scratch(cs->n_head, dim, cs->n_ctx);
        GpuCmd *c = NULL;

        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        gpu_cmd_fill(c, k_cache, 0, 2 * cache_n, CACHE_POISON);
        gpu_cmd_fill(c, v_cache, 0, 2 * cache_n, CACHE_POISON);
        gpu_cmd_barrier(c);
        if (cs->pos0 > 0) {
                GpuAttentionParams prev = p;
                prev.pos0 = 0;
                prev.n_tokens = cs->pos0;
                assert_int_equal(gpu_op_kv_store(c, T.dev, (GpuBinding) { k_prev }, (GpuBinding) { v_prev },
                                                 (GpuBinding) { k_cache }, (GpuBinding) { v_cache }, &prev),
                                 0);
        }
        assert_int_equal(gpu_op_kv_store(c, T.dev, (GpuBinding) { k_cur }, (GpuBinding) { v_cur },
                                         (GpuBinding) { k_cache }, (GpuBinding) { v_cache }, &p),
                         0);
        gpu_cmd_barrier(c);
        GpuBinding bq = { qb }, bk = { k_cache }, bv = { v_cache }, bo = { ob }, bs = { scratch };
        int r = cs->path == PATH_PREFILL ? gpu_op_attention_prefill(c, T.dev, bq, bk, bv, bo, &p)
                : cs->path == PATH_DECODE ? gpu_op_attention_decode(c, T.dev, bq, bk, bv, bo, bs, &p)
                                          : gpu_op_attention(c, T.dev, bq, bk, bv, bo, bs, &p);
        assert_int_equal(r, 0);
        assert_int_equal(gpu_cmd_submit(c), 0);
        assert_int_equal(gpu_buffer_read(ob, 0, out, sizeof(float) * out_n), 0);
        assert_int_equal(gpu_buffer_read(k_cache, 0, kc, 2 * cache_n), 0);
        assert_int_equal(gpu_buffer_read(v_cache, 0, vc, 2 * cache_n), 0);

        /* kv_store: within one F16 step of round-to-nearest-even, nothing else touched. */
        for (size_t i = 0; i < cache_n; i++)
                kc_ref[i] = vc_ref[i] = (uint16_t) CACHE_POISON;
        GpuAttentionParams all = p;
        all.pos0 = 0;
        all.n_tokens = n_all;
        gpu_kv_store_ref(&all, k_all, v_all, kc_ref, vc_ref);
        size_t inexact = 0;
        for (size_t i = 0; i < cache_n; i++) {
                int dk = abs((int) kc[i] - (int) kc_ref[i]), dv = abs((int) vc[i] - (int) vc_ref[i]);
                bool in_batch = (i / dim) % cs->n_ctx < n_all;
                if ((in_batch && (dk > 1 || dv > 1)) || (!in_batch && (dk || dv)))
                        fail_msg("cache[%zu]: k %04x (want %04x), v %04x (want %04x)", i, kc[i], kc_ref[i], vc[i],
                                 vc_ref[i]);
                inexact += (dk != 0) + (dv != 0);
        }

        gpu_attention_ref(&p, q, kc, vc, ref);
        double nmse = test_nmse(out, ref, out_n);
        fprintf(stderr, "# heads %u/%u dim %u ctx %u pos0 %u tokens %u qmul %g pad %u %s: nmse %.3g%s\n", cs->n_head,
                cs->n_head_kv, dim, cs->n_ctx, cs->pos0, cs->n_tokens, cs->qmul ? cs->qmul : 1.0, cs->q_pad,
                cs->path == PATH_PREFILL ? "prefill" : cs->path == PATH_DECODE ? "decode" : "auto", nmse,
                inexact ? " (kv_store: some F16 off by one step)" : "");
        assert_true(nmse < NMSE_BOUND);

        gpu_cmd_free(c);
        gpu_buffer_free(k_prev);
        gpu_buffer_free(v_prev);
        gpu_buffer_free(k_cur);
        gpu_buffer_free(v_cur);
        gpu_buffer_free(qb);
        gpu_buffer_free(k_cache);
        gpu_buffer_free(v_cache);
        gpu_buffer_free(ob);
        gpu_buffer_free(scratch);
        free(k_all);
        free(v_all);
        free(q);
        free(out);
        free(ref);
        free(kc);
        free(vc);
        free(kc_ref);
        free(vc_ref);
}

static void run_cases(const Case *cases, size_t n) {
        for (size_t i = 0; i < n; i++)
                run_case(&cases[i], i + 1);
}

/* The tiny real model: 8 query heads over 4 kv heads of 8. */
static void test_prefill_tiny(void **state) {
        static const Case cases[] = {
                { 8, 4, 8, 256, 0, 1, .path = PATH_PREFILL },
                { 8, 4, 8, 256, 0, 7 },
                { 8, 4, 8, 256, 0, 70 },
                { 8, 4, 8, 256, 45, 1, .path = PATH_PREFILL },
                { 8, 4, 8, 256, 45, 7 },
                { 8, 4, 8, 256, 45, 70 },
                { 8, 4, 8, 256, 186, 70 },      /* fills the cache to the last position */
        };
        run_cases(cases, ELEMENTSOF(cases));
}

static void test_prefill_gqa(void **state) {
        static const Case cases[] = {
                { 32, 8, 64, 320, 0, 1, .path = PATH_PREFILL },
                { 32, 8, 64, 320, 0, 7 },
                { 32, 8, 64, 320, 0, 70 },
                { 32, 8, 64, 320, 100, 7 },
                { 32, 8, 64, 320, 100, 70 },
                { 32, 8, 128, 320, 0, 7 },
                { 32, 8, 128, 320, 0, 70 },
                { 32, 8, 128, 320, 100, 1, .path = PATH_PREFILL },
                { 32, 8, 128, 320, 100, 70 },
        };
        run_cases(cases, ELEMENTSOF(cases));
}

/* Odd groups and head sizes, MQA, no GQA, a strided q, and a peaky softmax (the running max at work). */
static void test_prefill_odd(void **state) {
        static const Case cases[] = {
                { 14, 2, 40, 128, 13, 33, .q_pad = 8 },
                { 12, 1, 32, 64, 5, 20 },
                { 4, 4, 256, 64, 3, 20 },
                { 6, 3, 16, 100, 0, 2 },
                { 8, 2, 64, 256, 50, 40, .qmul = 30 },
        };
        run_cases(cases, ELEMENTSOF(cases));
}

static void test_decode_tiny(void **state) {
        static const Case cases[] = {
                { 8, 4, 8, 8192, 0, 1 },
                { 8, 4, 8, 8192, 32, 1 },
                { 8, 4, 8, 8192, 1499, 1 },
                { 8, 4, 8, 8192, 4999, 1 },
        };
        run_cases(cases, ELEMENTSOF(cases));
}

static void test_decode_gqa(void **state) {
        static const Case cases[] = {
                { 32, 8, 64, 2048, 0, 1 },
                { 32, 8, 64, 2048, 32, 1 },
                { 32, 8, 64, 2048, 1499, 1 },
                { 32, 8, 128, 8400, 0, 1 },
                { 32, 8, 128, 8400, 32, 1 },
                { 32, 8, 128, 8400, 1023, 1 },
                { 32, 8, 128, 8400, 8299, 1 },  /* chunks of several sub-blocks */
        };
        run_cases(cases, ELEMENTSOF(cases));
}

static void test_decode_odd(void **state) {
        static const Case cases[] = {
                { 14, 2, 40, 1024, 999, 1, .q_pad = 8 },
                { 12, 1, 32, 8192, 4999, 1 },   /* 12 heads: two blocks of 6; 79 chunks */
                { 71, 1, 64, 512, 300, 1 },     /* Falcon-style MQA: 9 blocks of 8 */
                { 4, 4, 256, 512, 299, 1 },
                { 8, 2, 64, 4096, 2000, 1, .qmul = 30 },
        };
        run_cases(cases, ELEMENTSOF(cases));
}

/* ---- positions from a buffer ------------------------------------------------ */

static void write_i32(GpuBuffer *b, const int32_t *v, size_t n) {
        assert_int_equal(gpu_buffer_write(b, 0, v, n * sizeof *v), 0);
}

/* kv_store to the positions in the buffer, some out of range (skipped); the rest of the cache untouched. */
static void run_kv_store_positions(uint32_t n_head_kv, uint32_t dim, uint32_t n_ctx, uint32_t kv_pad,
                                   const int32_t *pos, uint32_t n_tokens, uint64_t seed) {
        const size_t row = (size_t) n_head_kv * dim, stride = row + kv_pad;
        const size_t cache_n = (size_t) n_head_kv * n_ctx * dim, src_n = (n_tokens - 1) * stride + row;
        GpuAttentionParams p = {
                .n_tokens = n_tokens, .n_head = n_head_kv, .n_head_kv = n_head_kv, .head_dim = dim,
                .n_ctx = n_ctx, .kv_stride = kv_pad ? (uint32_t) stride : 0,
        };
        float *k = malloc(sizeof(float) * src_n), *v = malloc(sizeof(float) * src_n);
        uint16_t *kc = malloc(2 * cache_n), *vc = malloc(2 * cache_n);
        uint16_t *kc_ref = malloc(2 * cache_n), *vc_ref = malloc(2 * cache_n);
        assert_non_null(k && v && kc && vc && kc_ref && vc_ref);
        test_fill_random(k, src_n, seed * 2 + 1);
        test_fill_random(v, src_n, seed * 2 + 2);

        GpuBuffer *kb = upload(k, sizeof(float) * src_n), *vb = upload(v, sizeof(float) * src_n);
        GpuBuffer *kcb = new_buffer(2 * cache_n), *vcb = new_buffer(2 * cache_n), *pb = new_buffer(4 * n_tokens);
        GpuCmd *c = NULL;
        write_i32(pb, pos, n_tokens);
        p.pos_buffer = (GpuBinding) { pb };
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        gpu_cmd_fill(c, kcb, 0, 2 * cache_n, CACHE_POISON);
        gpu_cmd_fill(c, vcb, 0, 2 * cache_n, CACHE_POISON);
        gpu_cmd_barrier(c);
        assert_int_equal(gpu_op_kv_store(c, T.dev, (GpuBinding) { kb }, (GpuBinding) { vb }, (GpuBinding) { kcb },
                                         (GpuBinding) { vcb }, &p),
                         0);
        assert_int_equal(gpu_cmd_submit(c), 0);
        assert_int_equal(gpu_buffer_read(kcb, 0, kc, 2 * cache_n), 0);
        assert_int_equal(gpu_buffer_read(vcb, 0, vc, 2 * cache_n), 0);

        /* The reference one token at a time, at its position. */
        bool *stored = calloc(n_ctx, sizeof *stored);
        assert_non_null(stored);
        for (size_t i = 0; i < cache_n; i++)
                kc_ref[i] = vc_ref[i] = (uint16_t) CACHE_POISON;
        for (uint32_t t = 0; t < n_tokens; t++) {
                if (pos[t] < 0 || (uint32_t) pos[t] >= n_ctx)
                        continue;
                GpuAttentionParams one = p;
                one.pos_buffer = (GpuBinding) {};
                one.n_tokens = 1;
                one.pos0 = (uint32_t) pos[t];
                gpu_kv_store_ref(&one, k + t * stride, v + t * stride, kc_ref, vc_ref);
                stored[pos[t]] = true;
        }
        for (size_t i = 0; i < cache_n; i++) {
                int dk = abs((int) kc[i] - (int) kc_ref[i]), dv = abs((int) vc[i] - (int) vc_ref[i]);
                bool in_batch = stored[(i / dim) % n_ctx];
                if ((in_batch && (dk > 1 || dv > 1)) || (!in_batch && (dk || dv)))
                        fail_msg("cache[%zu]: k %04x (want %04x), v %04x (want %04x)", i, kc[i], kc_ref[i], vc[i],
                                 vc_ref[i]);
        }

        gpu_cmd_free(c);
        gpu_buffer_free(kb);
        gpu_buffer_free(vb);
        gpu_buffer_free(kcb);
        gpu_buffer_free(vcb);
        gpu_buffer_free(pb);
        free(stored);
        free(k);
        free(v);
        free(kc);
        free(vc);
        free(kc_ref);
        free(vc_ref);
}

static void test_kv_store_positions(void **state) {
        static const int32_t scattered[] = { 5, 3, 100, 0, 255, 17, 18 };
        static const int32_t out_of_range[] = { 7, -1, 256, 9, INT32_MIN, 1000000 };
        static const int32_t one[] = { 4999 };
        int32_t many[300];
        for (uint32_t i = 0; i < ELEMENTSOF(many); i++)
                many[i] = (int32_t) ((i * 37 + 11) % 311);      /* a permutation of part of 0..310 */

        run_kv_store_positions(4, 8, 256, 0, scattered, ELEMENTSOF(scattered), 1);
        run_kv_store_positions(4, 8, 256, 0, out_of_range, ELEMENTSOF(out_of_range), 2);
        run_kv_store_positions(8, 64, 8192, 0, one, 1, 3);
        run_kv_store_positions(2, 40, 320, 6, many, ELEMENTSOF(many), 4);
}

/*
 * rope_kv_store against ref_rope on q and k followed by gpu_kv_store_ref:
 * q rotated in place, k rotated and v stored at the buffer's positions (out
 * of range: skipped), the rest of the caches untouched, k_new unchanged.
 * factors: with random frequency factors, which must then matter (q far
 * from the reference without them).
 */
static void run_rope_kv_store(uint32_t n_head, uint32_t n_head_kv, uint32_t dim, uint32_t n_rot, GpuRopeMode mode,
                              uint32_t n_ctx, uint32_t pad, const int32_t *pos, uint32_t n_tokens, bool factors,
                              uint64_t seed) {
        const uint32_t q_row = n_head * dim, kv_row = n_head_kv * dim, qs = q_row + pad, kvs = kv_row + pad;
        const size_t q_n = (size_t) (n_tokens - 1) * qs + q_row, kv_n = (size_t) (n_tokens - 1) * kvs + kv_row;
        const size_t cache_n = (size_t) n_head_kv * n_ctx * dim;
        GpuAttentionParams p = {
                .n_tokens = n_tokens, .n_head = n_head, .n_head_kv = n_head_kv, .head_dim = dim, .n_ctx = n_ctx,
                .q_stride = qs, .kv_stride = kvs,
        };
        GpuRope rope = {
                .n_tokens = n_tokens, .head_dim = dim, .n_rot = n_rot, .mode = mode,
                .freq_base = 10000.0f, .freq_scale = 0.5f,
        };
        float *q = malloc(sizeof(float) * q_n), *q_gpu = malloc(sizeof(float) * q_n);
        float *q_ref = malloc(sizeof(float) * q_n), *k = malloc(sizeof(float) * kv_n);
        float *k_gpu = malloc(sizeof(float) * kv_n), *k_rot = malloc(sizeof(float) * kv_n);
        float *v = malloc(sizeof(float) * kv_n);
        uint16_t *kc = malloc(2 * cache_n), *vc = malloc(2 * cache_n);
        uint16_t *kc_ref = malloc(2 * cache_n), *vc_ref = malloc(2 * cache_n);
        bool *stored = calloc(n_ctx, sizeof *stored);
        float *inv = factors ? malloc(sizeof(float) * n_rot / 2) : NULL;
        assert_non_null(q && q_gpu && q_ref && k && k_gpu && k_rot && v && kc && vc && kc_ref && vc_ref && stored);
        assert_true(!factors || inv);
        test_fill_random(q, q_n, seed * 3 + 1);
        test_fill_random(k, kv_n, seed * 3 + 2);
        test_fill_random(v, kv_n, seed * 3 + 3);
        GpuBuffer *fb = NULL;
        if (factors) {
                test_rope_factors_inv(inv, n_rot / 2, seed);
                fb = upload(inv, sizeof(float) * n_rot / 2);
                rope.freq_factors_inv = (GpuBinding) { fb };
        }

        GpuBuffer *qb = upload(q, sizeof(float) * q_n), *kb = upload(k, sizeof(float) * kv_n);
        GpuBuffer *vb = upload(v, sizeof(float) * kv_n), *pb = new_buffer(4 * n_tokens);
        GpuBuffer *kcb = new_buffer(2 * cache_n), *vcb = new_buffer(2 * cache_n);
        GpuCmd *c = NULL;
        write_i32(pb, pos, n_tokens);
        p.pos_buffer = (GpuBinding) { pb };
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        gpu_cmd_fill(c, kcb, 0, 2 * cache_n, CACHE_POISON);
        gpu_cmd_fill(c, vcb, 0, 2 * cache_n, CACHE_POISON);
        gpu_cmd_barrier(c);
        assert_int_equal(gpu_op_rope_kv_store(c, T.dev, (GpuBinding) { qb }, (GpuBinding) { kb }, (GpuBinding) { vb },
                                              (GpuBinding) { kcb }, (GpuBinding) { vcb }, &rope, &p),
                         0);
        assert_int_equal(gpu_cmd_submit(c), 0);
        assert_int_equal(gpu_buffer_read(qb, 0, q_gpu, sizeof(float) * q_n), 0);
        assert_int_equal(gpu_buffer_read(kb, 0, k_gpu, sizeof(float) * kv_n), 0);
        assert_int_equal(gpu_buffer_read(kcb, 0, kc, 2 * cache_n), 0);
        assert_int_equal(gpu_buffer_read(vcb, 0, vc, 2 * cache_n), 0);

        GpuRope rq = rope, rk = rope;
        rq.n_heads = n_head;
        rq.x_stride = rq.out_stride = qs;
        rk.n_heads = n_head_kv;
        rk.x_stride = rk.out_stride = kvs;
        memcpy(q_ref, q, sizeof(float) * q_n);
        memcpy(k_rot, k, sizeof(float) * kv_n);
        ref_rope(q_ref, pos, inv, q_ref, &rq);
        ref_rope(k_rot, pos, inv, k_rot, &rk);
        /* ref_rope leaves the padding alone, as the kernel does. */
        double e = test_nmse(q_gpu, q_ref, q_n);
        fprintf(stderr, "# rope_kv_store %s %u/%u heads x %u rot %u, %u tokens%s: q nmse %.3g\n",
                mode == GPU_ROPE_NEOX ? "neox" : "norm", n_head, n_head_kv, dim, n_rot, n_tokens,
                factors ? ", factors" : "", e);
        assert_true(e < 1e-8);
        if (factors) {
                float *plain = malloc(sizeof(float) * q_n);
                assert_non_null(plain);
                memcpy(plain, q, sizeof(float) * q_n);
                ref_rope(plain, pos, NULL, plain, &rq);
                double e0 = test_nmse(q_gpu, plain, q_n);
                fprintf(stderr, "# ... q nmse %.3g against no factors\n", e0);
                assert_true(e0 > 0.1);
                free(plain);
        }
        assert_memory_equal(k_gpu, k, sizeof(float) * kv_n);

        for (size_t i = 0; i < cache_n; i++)
                kc_ref[i] = vc_ref[i] = (uint16_t) CACHE_POISON;
        for (uint32_t t = 0; t < n_tokens; t++) {
                if (pos[t] < 0 || (uint32_t) pos[t] >= n_ctx)
                        continue;
                GpuAttentionParams one = p;
                one.pos_buffer = (GpuBinding) {};
                one.n_tokens = 1;
                one.pos0 = (uint32_t) pos[t];
                gpu_kv_store_ref(&one, k_rot + (size_t) t * kvs, v + (size_t) t * kvs, kc_ref, vc_ref);
                stored[pos[t]] = true;
        }
        for (size_t i = 0; i < cache_n; i++) {
                int dk = abs((int) kc[i] - (int) kc_ref[i]), dv = abs((int) vc[i] - (int) vc_ref[i]);
                bool in_batch = stored[(i / dim) % n_ctx];
                bool k_ok = dk <= 1 || fabsf(half_to_float(kc[i]) - half_to_float(kc_ref[i])) <= 1e-4f;
                if ((in_batch && (!k_ok || dv > 1)) || (!in_batch && (dk || dv)))
                        fail_msg("cache[%zu]: k %04x (want %04x), v %04x (want %04x)", i, kc[i], kc_ref[i], vc[i],
                                 vc_ref[i]);
        }

        gpu_cmd_free(c);
        gpu_buffer_free(qb);
        gpu_buffer_free(kb);
        gpu_buffer_free(vb);
        gpu_buffer_free(pb);
        gpu_buffer_free(kcb);
        gpu_buffer_free(vcb);
        gpu_buffer_free(fb);
        free(inv);
        free(q);
        free(q_gpu);
        free(q_ref);
        free(k);
        free(k_gpu);
        free(k_rot);
        free(v);
        free(kc);
        free(vc);
        free(kc_ref);
        free(vc_ref);
        free(stored);
}

static void test_rope_kv_store(void **state) {
        static const int32_t one[] = { 4321 };
        static const int32_t some[] = { 5, 0, 255, -1, 300, 17 };

        run_rope_kv_store(8, 4, 64, 64, GPU_ROPE_NORMAL, 8192, 0, one, 1, false, 1);
        run_rope_kv_store(8, 4, 64, 64, GPU_ROPE_NEOX, 8192, 0, one, 1, false, 2);
        /* Partial rotation (pass-through dims), GQA, padded rows, positions out of range. */
        run_rope_kv_store(6, 2, 32, 16, GPU_ROPE_NORMAL, 256, 6, some, ELEMENTSOF(some), false, 3);
        run_rope_kv_store(6, 2, 32, 16, GPU_ROPE_NEOX, 256, 6, some, ELEMENTSOF(some), false, 4);
        run_rope_kv_store(4, 4, 128, 128, GPU_ROPE_NORMAL, 64, 0, some, 3, false, 5);
        /* Frequency factors (Llama 3.1+), with the same variations. */
        run_rope_kv_store(8, 4, 64, 64, GPU_ROPE_NORMAL, 8192, 0, one, 1, true, 6);
        run_rope_kv_store(8, 4, 64, 64, GPU_ROPE_NEOX, 8192, 0, one, 1, true, 7);
        run_rope_kv_store(6, 2, 32, 16, GPU_ROPE_NORMAL, 256, 6, some, ELEMENTSOF(some), true, 8);
        run_rope_kv_store(6, 2, 32, 16, GPU_ROPE_NEOX, 256, 6, some, ELEMENTSOF(some), true, 9);

        /* Decode only: positions from the buffer; and the rotation's head_dim must be attention's. */
        GpuBuffer *b = new_buffer(1 << 16);
        GpuBinding x = { b };
        GpuAttentionParams p = { .n_tokens = 1, .n_head = 2, .n_head_kv = 2, .head_dim = 8, .n_ctx = 16 };
        GpuRope rope = { .head_dim = 8, .n_rot = 8, .freq_base = 10000.0f, .freq_scale = 1.0f };
        GpuCmd *c = NULL;
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        assert_int_equal(gpu_op_rope_kv_store(c, T.dev, x, x, x, x, x, &rope, &p), -EINVAL);
        p.pos_buffer = x;
        assert_int_equal(gpu_op_rope_kv_store(c, T.dev, x, x, x, x, x, &rope, &p), 0);
        rope.head_dim = 16;
        assert_int_equal(gpu_op_rope_kv_store(c, T.dev, x, x, x, x, x, &rope, &p), -EINVAL);
        rope.head_dim = 8;
        rope.n_rot = 10;
        assert_int_equal(gpu_op_rope_kv_store(c, T.dev, x, x, x, x, x, &rope, &p), -EINVAL);
        rope.n_rot = 8;
        rope.freq_factors_inv = (GpuBinding) { b, 0, 4 * 4 }; /* one factor per rotated pair */
        assert_int_equal(gpu_op_rope_kv_store(c, T.dev, x, x, x, x, x, &rope, &p), 0);
        rope.freq_factors_inv.range = 3 * 4;
        assert_int_equal(gpu_op_rope_kv_store(c, T.dev, x, x, x, x, x, &rope, &p), -EINVAL);
        gpu_cmd_free(c);
        gpu_buffer_free(b);
}

typedef struct ReplayCase {
        uint32_t n_head, n_head_kv, dim, n_ctx;
        float qmul;
} ReplayCase;

/*
 * One recording of kv_store + decode through the position buffer, replayed at
 * each of positions[]: before each submission the host writes the new
 * token's q/k/v and its position, and the cache (earlier positions random,
 * this one and later ones NaN). Each replay must store at that position and
 * attend to exactly positions 0..pos.
 */
static void run_replay(const ReplayCase *cs, const uint32_t *positions, size_t n_pos, uint64_t seed) {
        const uint32_t dim = cs->dim;
        const size_t kv_row = (size_t) cs->n_head_kv * dim, q_row = (size_t) cs->n_head * dim;
        const size_t cache_n = (size_t) cs->n_head_kv * cs->n_ctx * dim;
        GpuAttentionParams p = {
                .n_tokens = 1,
                .n_head = cs->n_head,
                .n_head_kv = cs->n_head_kv,
                .head_dim = dim,
                .n_ctx = cs->n_ctx,
                .scale = 1.0f / sqrtf((float) dim),
                .decode_groups = decode_groups,
        };
        float *hist = malloc(sizeof(float) * cache_n), *kn = malloc(sizeof(float) * kv_row);
        float *vn = malloc(sizeof(float) * kv_row), *q = malloc(sizeof(float) * q_row);
        float *out = malloc(sizeof(float) * q_row), *ref = malloc(sizeof(float) * q_row);
        uint16_t *kc_hist = malloc(2 * cache_n), *vc_hist = malloc(2 * cache_n);
        uint16_t *kc_up = malloc(2 * cache_n), *vc_up = malloc(2 * cache_n);
        uint16_t *kc = malloc(2 * cache_n), *vc = malloc(2 * cache_n);
        assert_non_null(hist && kn && vn && q && out && ref && kc_hist && vc_hist && kc_up && vc_up && kc && vc);

        /* The history the earlier positions hold (already F16, as after kv_store). */
        test_fill_random(hist, cache_n, seed * 8 + 1);
        for (size_t i = 0; i < cache_n; i++)
                kc_hist[i] = float_to_half(hist[i]);
        test_fill_random(hist, cache_n, seed * 8 + 2);
        for (size_t i = 0; i < cache_n; i++)
                vc_hist[i] = float_to_half(hist[i]);

        GpuBuffer *kb = new_buffer(sizeof(float) * kv_row), *vb = new_buffer(sizeof(float) * kv_row);
        GpuBuffer *qb = new_buffer(sizeof(float) * q_row), *ob = new_buffer(sizeof(float) * q_row);
        GpuBuffer *kcb = new_buffer(2 * cache_n), *vcb = new_buffer(2 * cache_n), *pb = new_buffer(4);
        GpuBuffer *scratch = new_scratch(cs->n_head, dim, cs->n_ctx);
        GpuCmd *c = NULL;
        double worst = 0;

        p.pos_buffer = (GpuBinding) { pb };
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        assert_int_equal(gpu_op_kv_store(c, T.dev, (GpuBinding) { kb }, (GpuBinding) { vb }, (GpuBinding) { kcb },
                                         (GpuBinding) { vcb }, &p),
                         0);
        gpu_cmd_barrier(c);
        assert_int_equal(gpu_op_attention(c, T.dev, (GpuBinding) { qb }, (GpuBinding) { kcb }, (GpuBinding) { vcb },
                                          (GpuBinding) { ob }, (GpuBinding) { scratch }, &p),
                         0);

        for (size_t step = 0; step < n_pos; step++) {
                const uint32_t P = positions[step];
                const int32_t pos = (int32_t) P;

                test_fill_random(kn, kv_row, seed * 1000 + step * 4 + 1);
                test_fill_random(vn, kv_row, seed * 1000 + step * 4 + 2);
                test_fill_random(q, q_row, seed * 1000 + step * 4 + 3);
                for (size_t i = 0; i < q_row; i++)
                        q[i] *= cs->qmul > 0 ? cs->qmul : 1.0f;
                for (size_t i = 0; i < cache_n; i++) {
                        bool before = (i / dim) % cs->n_ctx < P;
                        kc_up[i] = before ? kc_hist[i] : (uint16_t) CACHE_POISON;
                        vc_up[i] = before ? vc_hist[i] : (uint16_t) CACHE_POISON;
                }
                assert_int_equal(gpu_buffer_write(kcb, 0, kc_up, 2 * cache_n), 0);
                assert_int_equal(gpu_buffer_write(vcb, 0, vc_up, 2 * cache_n), 0);
                assert_int_equal(gpu_buffer_write(kb, 0, kn, sizeof(float) * kv_row), 0);
                assert_int_equal(gpu_buffer_write(vb, 0, vn, sizeof(float) * kv_row), 0);
                assert_int_equal(gpu_buffer_write(qb, 0, q, sizeof(float) * q_row), 0);
                write_i32(pb, &pos, 1);

                assert_int_equal(gpu_cmd_submit(c), 0);     /* the same recording every time */
                assert_int_equal(gpu_buffer_read(ob, 0, out, sizeof(float) * q_row), 0);
                assert_int_equal(gpu_buffer_read(kcb, 0, kc, 2 * cache_n), 0);
                assert_int_equal(gpu_buffer_read(vcb, 0, vc, 2 * cache_n), 0);

                /* Stored at P (one F16 step at most), nothing else touched. */
                GpuAttentionParams at = p;
                at.pos_buffer = (GpuBinding) {};
                at.pos0 = P;
                gpu_kv_store_ref(&at, kn, vn, kc_up, vc_up);
                for (size_t i = 0; i < cache_n; i++) {
                        int dk = abs((int) kc[i] - (int) kc_up[i]), dv = abs((int) vc[i] - (int) vc_up[i]);
                        bool here = (i / dim) % cs->n_ctx == P;
                        if ((here && (dk > 1 || dv > 1)) || (!here && (dk || dv)))
                                fail_msg("pos %u: cache[%zu]: k %04x (want %04x), v %04x (want %04x)", P, i, kc[i],
                                         kc_up[i], vc[i], vc_up[i]);
                }

                gpu_attention_ref(&at, q, kc, vc, ref);
                double nmse = test_nmse(out, ref, q_row);
                if (!(nmse < NMSE_BOUND))
                        fail_msg("heads %u/%u dim %u ctx %u: replay at pos %u: nmse %.3g", cs->n_head, cs->n_head_kv,
                                 dim, cs->n_ctx, P, nmse);
                worst = MAX(worst, nmse);
        }
        fprintf(stderr, "# heads %u/%u dim %u ctx %u: one decode recording replayed at %zu positions: worst nmse %.3g\n",
                cs->n_head, cs->n_head_kv, dim, cs->n_ctx, n_pos, worst);

        gpu_cmd_free(c);
        GpuBuffer *bufs[] = { kb, vb, qb, ob, kcb, vcb, pb, scratch };
        for (size_t i = 0; i < ELEMENTSOF(bufs); i++)
                gpu_buffer_free(bufs[i]);
        free(hist);
        free(kn);
        free(vn);
        free(q);
        free(out);
        free(ref);
        free(kc_hist);
        free(vc_hist);
        free(kc_up);
        free(vc_up);
        free(kc);
        free(vc);
}

static void test_decode_replay(void **state) {
        /* 128 chunks of one sub-block: most are empty at short positions. */
        static const ReplayCase tiny = { 8, 4, 8, 8192 };
        static const uint32_t tiny_pos[] = { 4999, 0, 32, 63, 64, 65, 1499, 8191, 1 };
        /* 64 chunks dispatched; chunks of 3 sub-blocks near the end, 1 at short positions. */
        static const ReplayCase gqa = { 32, 8, 128, 8400 };
        static const uint32_t gqa_pos[] = { 8299, 0, 1023, 127, 8399, 4095 };
        /* Two head blocks of 6, 128 chunks; a peaky softmax; Falcon-style MQA over a short cache. */
        static const ReplayCase odd = { 12, 1, 32, 8192 };
        static const uint32_t odd_pos[] = { 7, 4999, 8191, 100 };
        static const ReplayCase peaky = { 8, 2, 64, 4096, 30 };
        static const uint32_t peaky_pos[] = { 2000, 3, 4095 };
        static const ReplayCase mqa = { 71, 1, 64, 512 };
        static const uint32_t mqa_pos[] = { 300, 0, 511, 64 };

        run_replay(&tiny, tiny_pos, ELEMENTSOF(tiny_pos), 1);
        run_replay(&gqa, gqa_pos, ELEMENTSOF(gqa_pos), 2);
        run_replay(&odd, odd_pos, ELEMENTSOF(odd_pos), 3);
        run_replay(&peaky, peaky_pos, ELEMENTSOF(peaky_pos), 4);
        run_replay(&mqa, mqa_pos, ELEMENTSOF(mqa_pos), 5);
}

/*
 * The completion counters: one recording of LAYERS decodes (each its own q
 * and caches, all sharing the scratch and the position buffer, a barrier
 * between them as in the model's pass) replayed at each of positions[]. Every
 * merge must see exactly this dispatch's chunks, so the counters must be back
 * to zero after each decode: checked directly after every submission, and by
 * the outputs of the later layers and replays. The scratch's partials start
 * as NaN (only the counters zeroed), so a merge that read a slot no
 * workgroup of its dispatch wrote, such as an empty chunk's, shows.
 */
#define LAYERS 3

static void run_counters(const ReplayCase *cs, const uint32_t *positions, size_t n_pos, uint64_t seed) {
        const uint32_t dim = cs->dim;
        const size_t q_row = (size_t) cs->n_head * dim, cache_n = (size_t) cs->n_head_kv * cs->n_ctx * dim;
        GpuAttentionParams p = {
                .n_tokens = 1,
                .n_head = cs->n_head,
                .n_head_kv = cs->n_head_kv,
                .head_dim = dim,
                .n_ctx = cs->n_ctx,
                .scale = 1.0f / sqrtf((float) dim),
                .decode_groups = decode_groups,
        };
        uint16_t *kc[LAYERS], *vc[LAYERS];
        float *q[LAYERS], *out = malloc(sizeof(float) * q_row), *ref = malloc(sizeof(float) * q_row);
        float *tmp = malloc(sizeof(float) * MAX(cache_n, q_row));
        uint32_t *counters = malloc(sizeof(uint32_t) * cs->n_head);
        GpuBuffer *qb[LAYERS], *kcb[LAYERS], *vcb[LAYERS], *ob[LAYERS];
        GpuBuffer *pb = new_buffer(4), *scratch = new_scratch(cs->n_head, dim, cs->n_ctx);
        GpuCmd *c = NULL;
        double worst = 0;

        assert_non_null(out && ref && tmp && counters);
        assert_int_equal(gpu_buffer_fill(scratch, 0, gpu_buffer_size(scratch), 0x7fc00000u), 0);
        assert_int_equal(gpu_buffer_fill(scratch, 0, sizeof(uint32_t) * cs->n_head, 0), 0);
        p.pos_buffer = (GpuBinding) { pb };
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        for (uint32_t l = 0; l < LAYERS; l++) {
                kc[l] = malloc(2 * cache_n);
                vc[l] = malloc(2 * cache_n);
                q[l] = malloc(sizeof(float) * q_row);
                assert_non_null(kc[l] && vc[l] && q[l]);
                test_fill_random(tmp, cache_n, seed * 100 + l * 4 + 1);
                for (size_t i = 0; i < cache_n; i++)
                        kc[l][i] = float_to_half(tmp[i]);
                test_fill_random(tmp, cache_n, seed * 100 + l * 4 + 2);
                for (size_t i = 0; i < cache_n; i++)
                        vc[l][i] = float_to_half(tmp[i]);
                kcb[l] = upload(kc[l], 2 * cache_n);
                vcb[l] = upload(vc[l], 2 * cache_n);
                qb[l] = new_buffer(sizeof(float) * q_row);
                ob[l] = new_buffer(sizeof(float) * q_row);
                if (l > 0)
                        gpu_cmd_barrier(c);
                assert_int_equal(gpu_op_attention_decode(c, T.dev, (GpuBinding) { qb[l] }, (GpuBinding) { kcb[l] },
                                                         (GpuBinding) { vcb[l] }, (GpuBinding) { ob[l] },
                                                         (GpuBinding) { scratch }, &p),
                                 0);
        }

        for (size_t step = 0; step < n_pos; step++) {
                const uint32_t P = positions[step];
                const int32_t pos = (int32_t) P;

                for (uint32_t l = 0; l < LAYERS; l++) {
                        test_fill_random(q[l], q_row, seed * 1000 + step * 8 + l);
                        assert_int_equal(gpu_buffer_write(qb[l], 0, q[l], sizeof(float) * q_row), 0);
                }
                write_i32(pb, &pos, 1);
                assert_int_equal(gpu_cmd_submit(c), 0);     /* the same recording every time */

                assert_int_equal(gpu_buffer_read(scratch, 0, counters, sizeof(uint32_t) * cs->n_head), 0);
                for (uint32_t h = 0; h < cs->n_head; h++)
                        if (counters[h] != 0)
                                fail_msg("heads %u/%u dim %u ctx %u: pos %u: counter %u left at %u", cs->n_head,
                                         cs->n_head_kv, dim, cs->n_ctx, P, h, counters[h]);
                GpuAttentionParams at = p;
                at.pos_buffer = (GpuBinding) {};
                at.pos0 = P;
                for (uint32_t l = 0; l < LAYERS; l++) {
                        assert_int_equal(gpu_buffer_read(ob[l], 0, out, sizeof(float) * q_row), 0);
                        gpu_attention_ref(&at, q[l], kc[l], vc[l], ref);
                        double nmse = test_nmse(out, ref, q_row);
                        if (!(nmse < NMSE_BOUND))
                                fail_msg("heads %u/%u dim %u ctx %u: pos %u layer %u: nmse %.3g", cs->n_head,
                                         cs->n_head_kv, dim, cs->n_ctx, P, l, nmse);
                        worst = MAX(worst, nmse);
                }
        }
        fprintf(stderr, "# heads %u/%u dim %u ctx %u: %d decodes on one scratch replayed at %zu positions: "
                "counters back to 0, worst nmse %.3g\n", cs->n_head, cs->n_head_kv, dim, cs->n_ctx, LAYERS, n_pos,
                worst);

        gpu_cmd_free(c);
        for (uint32_t l = 0; l < LAYERS; l++) {
                gpu_buffer_free(qb[l]);
                gpu_buffer_free(kcb[l]);
                gpu_buffer_free(vcb[l]);
                gpu_buffer_free(ob[l]);
                free(kc[l]);
                free(vc[l]);
                free(q[l]);
        }
        gpu_buffer_free(pb);
        gpu_buffer_free(scratch);
        free(out);
        free(ref);
        free(tmp);
        free(counters);
}

/*
 * Positions of three kinds each: keys in chunk 0 only (it writes the output
 * itself, no counter), in a few chunks with most of the grid empty, and in
 * every chunk dispatched. The chunk counts below are a GPU grid's
 * (test_decode_counters_gpu_grid); a CPU device's grid has a few long
 * chunks instead.
 */
static void test_decode_counters(void **state) {
        /* 32 chunks of one sub-block: 64 fills 2 of them, 1000 16, 2047 and 1984 all. */
        static const ReplayCase d64 = { 32, 8, 64, 2048 };
        static const uint32_t d64_pos[] = { 2047, 0, 1984, 5, 1000, 64, 2047 };
        /* 64 chunks: 100 fills 2; 4032 all, one sub-block each; 8191 and 8100 all, two sub-blocks each. */
        static const ReplayCase d128 = { 32, 8, 128, 8192 };
        static const uint32_t d128_pos[] = { 3, 8191, 100, 4032, 63, 8100, 0 };
        /* Twelve heads per kv head: two blocks of 6, 64 chunks; 700 fills 11. */
        static const ReplayCase blocks = { 24, 2, 128, 4096 };
        static const uint32_t blocks_pos[] = { 4095, 1, 700, 4032 };
        /* Twenty: blocks of 7, 7 and 6; 16 chunks; 200 fills 4. */
        static const ReplayCase uneven = { 40, 2, 64, 1024 };
        static const uint32_t uneven_pos[] = { 2, 1023, 200, 960, 17 };

        run_counters(&d64, d64_pos, ELEMENTSOF(d64_pos), 1);
        run_counters(&d128, d128_pos, ELEMENTSOF(d128_pos), 2);
        run_counters(&blocks, blocks_pos, ELEMENTSOF(blocks_pos), 3);
        run_counters(&uneven, uneven_pos, ELEMENTSOF(uneven_pos), 4);
}

/*
 * The decode cases again with a GPU's grid (512 workgroups to aim for: up to
 * 128 chunks per head, most of them empty at short positions), whatever this
 * device would pick, so lavapipe runs both the long-chunk and many-chunk
 * shapes of the merge.
 */
static void with_gpu_grid(void (*f)(void **), void **state) {
        decode_groups = 512;
        f(state);
        decode_groups = 0;
}
static void test_decode_gqa_gpu_grid(void **state) {
        with_gpu_grid(test_decode_gqa, state);
}
static void test_decode_odd_gpu_grid(void **state) {
        with_gpu_grid(test_decode_odd, state);
}
static void test_decode_replay_gpu_grid(void **state) {
        with_gpu_grid(test_decode_replay, state);
}
static void test_decode_counters_gpu_grid(void **state) {
        with_gpu_grid(test_decode_counters, state);
}

static void test_bad_shapes(void **state) {
        GpuBuffer *b = new_buffer(1 << 20);
        GpuBuffer *small = new_buffer(256);
        GpuBinding x = { b }, s = { small };
        GpuCmd *c = NULL;
        GpuAttentionParams good = {
                .n_tokens = 1, .n_head = 8, .n_head_kv = 4, .head_dim = 8, .n_ctx = 64, .pos0 = 10, .scale = 0.35f,
        }, p;

        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, x, &good), 0);
        p = good, p.head_dim = 12;
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, x, &p), -EINVAL);
        p = good, p.head_dim = 264;
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, x, &p), -EINVAL);
        p = good, p.n_head = 6;
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, x, &p), -EINVAL);
        p = good, p.pos0 = 64;
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, x, &p), -EINVAL);
        p = good, p.pos0 = 60, p.n_tokens = 5;
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, x, &p), -EINVAL);
        assert_int_equal(gpu_op_kv_store(c, T.dev, x, x, x, x, &p), -EINVAL);
        p = good, p.n_tokens = 2;
        assert_int_equal(gpu_op_attention_decode(c, T.dev, x, x, x, x, x, &p), -EINVAL);
        p = good, p.q_stride = 8 * 8 - 2;
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, x, &p), -EINVAL);
        /* Bindings too small for the shape: the cache, then the decode scratch (a GPU's grid: the decode
         * kernel of CPU devices needs none). */
        p = good, p.n_ctx = 4096;
        assert_int_equal(gpu_op_attention(c, T.dev, x, s, x, x, x, &p), -EINVAL);
        p = good, p.n_head = 64, p.n_head_kv = 1, p.pos0 = 63, p.decode_groups = 512;
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, s, &p), -EINVAL);
        /* Prefill needs no scratch. */
        p = good, p.n_tokens = 3;
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, (GpuBinding) {}, &p), 0);
        /* A position buffer: pos0 is not checked; the buffer must hold n_tokens positions; not for prefill. */
        p = good, p.pos0 = 1000, p.pos_buffer = x;
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, x, &p), 0);
        p.n_tokens = 64;
        assert_int_equal(gpu_op_kv_store(c, T.dev, x, x, x, x, &p), 0);
        p.n_tokens = 65;
        assert_int_equal(gpu_op_kv_store(c, T.dev, x, x, x, x, &p), -EINVAL);
        p = good, p.pos_buffer = (GpuBinding) { b, 1 << 20 };  /* past the end: empty */
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, x, &p), -EINVAL);
        p = good, p.n_tokens = 3, p.pos_buffer = x;
        assert_int_equal(gpu_op_kv_store(c, T.dev, x, x, x, x, &p), 0);
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, x, &p), -EINVAL);

        /* Scratch: n_head counters, then n_head x chunks x (head_dim + 2) floats, chunks capped. */
        assert_int_equal(gpu_attention_scratch_size(32, 128, 64), (32 + 32 * 1 * 130) * 4);
        assert_int_equal(gpu_attention_scratch_size(32, 128, 1000), (32 + 32 * 16 * 130) * 4);
        assert_int_equal(gpu_attention_scratch_size(32, 128, 1 << 20), (32 + 32 * GPU_ATTN_MAX_SPLITS * 130) * 4);

        /* Not the recording above (its buffers alias): an empty one, so the fence is signalled before the free. */
        assert_int_equal(gpu_cmd_begin(c), 0);
        assert_int_equal(gpu_cmd_submit(c), 0);
        gpu_cmd_free(c);
        gpu_buffer_free(b);
        gpu_buffer_free(small);
}

static void test_f16_conversion(void **state) {
        static const struct { float f; uint16_t h; } v[] = {
                { 0.0f, 0x0000 }, { -0.0f, 0x8000 }, { 1.0f, 0x3c00 }, { -2.0f, 0xc000 },
                { 65504.0f, 0x7bff }, { 65520.0f, 0x7c00 }, { 1e-8f, 0x0000 }, { 5.9604645e-08f, 0x0001 },
                { 6.1035156e-05f, 0x0400 }, { 1.0009765625f, 0x3c01 }, { 1.00048828125f, 0x3c00 }, /* tie: even */
                { 1.00146484375f, 0x3c02 },                                                          /* tie: even */
        };
        for (size_t i = 0; i < ELEMENTSOF(v); i++) {
                assert_int_equal(float_to_half(v[i].f), v[i].h);
                if (v[i].h != 0x7c00 && v[i].f != 1e-8f && v[i].f != 1.00048828125f && v[i].f != 1.00146484375f)
                        assert_true(half_to_float(v[i].h) == v[i].f);
        }
        for (uint32_t h = 0; h < 0x7c00; h++) /* every finite half survives the round trip */
                assert_int_equal(float_to_half(half_to_float((uint16_t) h)), h);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_f16_conversion),
                cmocka_unit_test(test_prefill_tiny),
                cmocka_unit_test(test_prefill_gqa),
                cmocka_unit_test(test_prefill_odd),
                cmocka_unit_test(test_decode_tiny),
                cmocka_unit_test(test_decode_gqa),
                cmocka_unit_test(test_decode_odd),
                cmocka_unit_test(test_kv_store_positions),
                cmocka_unit_test(test_rope_kv_store),
                cmocka_unit_test(test_decode_replay),
                cmocka_unit_test(test_decode_counters),
                cmocka_unit_test(test_decode_gqa_gpu_grid),
                cmocka_unit_test(test_decode_odd_gpu_grid),
                cmocka_unit_test(test_decode_replay_gpu_grid),
                cmocka_unit_test(test_decode_counters_gpu_grid),
                cmocka_unit_test(test_bad_shapes),
        };
        gpu_test_open(&T);
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        gpu_test_close(&T);
        return r;
}
