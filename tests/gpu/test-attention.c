/* SPDX-License-Identifier: MIT */
/*
 * Attention over the F16 KV cache against the host reference: kv_store into a
 * cache pre-filled with NaN (so a kernel that reads a position it should not
 * poisons its output), then prefill or decode. Run twice by meson, the second
 * time with INFERD_GPU_NO_SUBGROUP=1 for the shared-memory reductions.
 *
 * Tolerances:
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

static void run_case(const Case *cs, uint64_t seed) {
        GpuAttentionParams p = {
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
        GpuBuffer *scratch = new_buffer(gpu_attention_scratch_size(cs->n_head, dim, cs->n_ctx));
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
        /* Bindings too small for the shape: the cache, then the decode scratch. */
        p = good, p.n_ctx = 4096;
        assert_int_equal(gpu_op_attention(c, T.dev, x, s, x, x, x, &p), -EINVAL);
        p = good, p.n_head = 64, p.n_head_kv = 1, p.pos0 = 63;
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, s, &p), -EINVAL);
        /* Prefill needs no scratch. */
        p = good, p.n_tokens = 3;
        assert_int_equal(gpu_op_attention(c, T.dev, x, x, x, x, (GpuBinding) {}, &p), 0);

        /* Scratch: n_head x chunks x (head_dim + 2) floats, chunks capped. */
        assert_int_equal(gpu_attention_scratch_size(32, 128, 64), 32 * 1 * 130 * 4);
        assert_int_equal(gpu_attention_scratch_size(32, 128, 1000), 32 * 16 * 130 * 4);
        assert_int_equal(gpu_attention_scratch_size(32, 128, 1 << 20), 32 * GPU_ATTN_MAX_SPLITS * 130 * 4);

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
                cmocka_unit_test(test_bad_shapes),
        };
        gpu_test_open(&T);
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        gpu_test_close(&T);
        return r;
}
