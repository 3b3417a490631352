/* SPDX-License-Identifier: MIT */
/*
 * The non-matrix kernels (ops-basic.h) against their C references
 * (ref-basic.c), on random data with sizes that are multiples of no
 * workgroup size, out of place and in place. meson runs this file twice: as
 * is, and with INFERD_GPU_NO_SUBGROUP=1 for the shared-memory reductions.
 *
 * Error bounds (normalised mean squared error, test_nmse()):
 *   rmsnorm, softmax, swiglu  1e-10  float accumulation and exp/inversesqrt
 *                                    against double; measured ~1e-14
 *   rope                      1e-8   theta is bit-identical by construction,
 *                                    so this is sin/cos after range reduction
 *                                    (Vulkan allows 2^-11 absolute within
 *                                    [-pi, pi], real devices do far better);
 *                                    the same with frequency factors, whose
 *                                    omission must give an NMSE above 0.1
 *   add, mul, scale           exact  one correctly rounded operation
 *   argmax                    exact  indices, ties to the lowest
 *   topk                      exact  the candidate set, values and gathered
 *                                    values bit for bit
 */
#include <float.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gpu-test.h"
#include "ops-basic.h"
#include "ref-basic.h"

#define NMSE_ROWS 1e-10
#define NMSE_ROPE 1e-8

static GpuTestCtx T;

/* Every buffer the tests make is at least this much larger than asked: room for an offset binding. */
#define ALIGN_OFF 256

static GpuBuffer *upload(const void *data, size_t bytes) {
        GpuBuffer *b = NULL;
        assert_int_equal(gpu_buffer_new(T.dev, bytes + ALIGN_OFF, GPU_MEMORY_DEVICE, &b), 0);
        if (data)
                assert_int_equal(gpu_buffer_write(b, 0, data, bytes), 0);
        return b;
}

static void download(GpuBuffer *b, void *dst, size_t bytes) {
        assert_int_equal(gpu_buffer_read(b, 0, dst, bytes), 0);
}

static GpuBinding bind(GpuBuffer *b) {
        return (GpuBinding) { b, 0, 0 };
}

static GpuCmd *begin(void) {
        GpuCmd *c = NULL;
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        return c;
}

static void submit(GpuCmd *c) {
        assert_int_equal(gpu_cmd_submit(c), 0);
        gpu_cmd_free(c);
}

static float *random_floats(size_t n, uint64_t seed, float amplitude) {
        float *x = malloc(n * sizeof *x);
        assert_non_null(x);
        test_fill_random(x, n, seed);
        for (size_t i = 0; i < n; i++)
                x[i] *= amplitude;
        return x;
}

static void check_nmse(const char *what, const float *got, const float *ref, size_t n, double bound) {
        double e = test_nmse(got, ref, n);
        fprintf(stderr, "# %-40s nmse %.3g (bound %.0e)\n", what, e, bound);
        assert_true(e <= bound);
}

/* ---- rmsnorm -------------------------------------------------------------- */

static const uint32_t row_shapes[][2] = {
        { 3, 4099 }, { 5, 65 }, { 7, 1 }, { 64, 896 }, { 1, 20000 },
};

static void test_rmsnorm(void **state) {
        for (size_t s = 0; s < ELEMENTSOF(row_shapes); s++)
                for (int mode = 0; mode < 3; mode++) { /* 0: weight, 1: no weight, 2: weight, in place */
                        uint32_t rows = row_shapes[s][0], cols = row_shapes[s][1];
                        size_t n = (size_t) rows * cols;
                        float *x = random_floats(n, 10 + s, 3.0f), *w = random_floats(cols, 20 + s, 2.0f);
                        float *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
                        GpuBuffer *bx = upload(x, n * 4), *bw = upload(w, cols * 4), *bo = upload(NULL, n * 4);
                        GpuCmd *c = begin();
                        char what[80];

                        ref_rmsnorm(x, mode == 1 ? NULL : w, ref, rows, cols, 1e-6f);
                        GpuBinding out = mode == 2 ? bind(bx) : bind(bo);
                        GpuBinding wb = mode == 1 ? (GpuBinding) {} : bind(bw);
                        assert_int_equal(gpu_op_rmsnorm(c, T.dev, bind(bx), wb, out, rows, cols, 1e-6f), 0);
                        submit(c);
                        download(out.buffer, got, n * 4);
                        snprintf(what, sizeof what, "rmsnorm %ux%u%s", rows, cols,
                                 mode == 0 ? "" : mode == 1 ? " no weight" : " in place");
                        check_nmse(what, got, ref, n, NMSE_ROWS);

                        gpu_buffer_free(bx);
                        gpu_buffer_free(bw);
                        gpu_buffer_free(bo);
                        free(x);
                        free(w);
                        free(ref);
                        free(got);
                }
}

static void test_rmsnorm_offsets_and_errors(void **state) {
        /* Rows bound at a 256-byte offset inside a larger buffer, weight likewise. */
        const uint32_t rows = 4, cols = 333;
        size_t n = (size_t) rows * cols;
        float *x = random_floats(n, 30, 1.0f), *w = random_floats(cols, 31, 1.0f);
        float *ref = malloc(n * 4), *got = malloc(n * 4);
        GpuBuffer *bx = upload(NULL, n * 4 + 4096), *bw = upload(NULL, cols * 4 + 512);
        assert_int_equal(gpu_buffer_write(bx, 1024, x, n * 4), 0);
        assert_int_equal(gpu_buffer_write(bw, 512, w, cols * 4), 0);
        GpuBinding xb = { bx, 1024, n * 4 }, wb = { bw, 512, cols * 4 };
        GpuCmd *c = begin();

        ref_rmsnorm(x, w, ref, rows, cols, 1e-5f);
        assert_int_equal(gpu_op_rmsnorm(c, T.dev, xb, wb, xb, rows, cols, 1e-5f), 0);
        /* Shapes that do not fit the bindings, or make no sense, are refused before recording. */
        assert_int_equal(gpu_op_rmsnorm(c, T.dev, xb, wb, xb, rows + 1, cols, 1e-5f), -EINVAL);
        assert_int_equal(gpu_op_rmsnorm(c, T.dev, xb, wb, xb, rows, 0, 1e-5f), -EINVAL);
        assert_int_equal(gpu_op_rmsnorm(c, T.dev, xb, (GpuBinding) { bw, 512, 8 }, xb, rows, cols, 1e-5f), -EINVAL);
        assert_int_equal(gpu_op_rmsnorm(c, T.dev, xb, wb, xb, 0, cols, 1e-5f), 0);
        submit(c);
        assert_int_equal(gpu_buffer_read(bx, 1024, got, n * 4), 0);
        check_nmse("rmsnorm at offsets, in place", got, ref, n, NMSE_ROWS);

        gpu_buffer_free(bx);
        gpu_buffer_free(bw);
        free(x);
        free(w);
        free(ref);
        free(got);
}

/* ---- rope ------------------------------------------------------------------ */

typedef struct RopeCase {
        GpuRopeMode mode;
        uint32_t n_tokens, n_heads, head_dim, n_rot;
        float base, freq_scale;
        bool in_place;
        uint32_t extra_stride;          /* > 0: token rows padded, as Q inside a fused QKV row */
        bool factors;                   /* Llama 3.1+ frequency factors (GpuRope.freq_factors_inv) */
} RopeCase;

static void run_rope(const RopeCase *k) {
        GpuRope p = {
                .n_tokens = k->n_tokens,
                .n_heads = k->n_heads,
                .head_dim = k->head_dim,
                .n_rot = k->n_rot,
                .mode = k->mode,
                .freq_base = k->base,
                .freq_scale = k->freq_scale,
        };
        uint32_t row = k->n_heads * k->head_dim;
        uint32_t xs = row + k->extra_stride;
        size_t nx = (size_t) k->n_tokens * xs, no = (size_t) k->n_tokens * row;
        float *x = random_floats(nx, 40 + k->n_rot + k->mode, 1.0f);
        float *ref = calloc(nx, 4), *got = calloc(nx, 4);
        int32_t *pos = malloc(k->n_tokens * sizeof *pos);
        float *inv = k->factors ? malloc(MAX(k->n_rot / 2, 1u) * sizeof *inv) : NULL;
        uint64_t seed = 77;
        char what[120];

        /* Positions over the whole range, including 0 and the large ones. */
        for (uint32_t t = 0; t < k->n_tokens; t++)
                pos[t] = t == 0 ? 0 : t == 1 ? 30000 : (int32_t) (test_rand_u64(&seed) % 30001);
        p.x_stride = k->extra_stride ? xs : 0;
        p.out_stride = k->in_place ? p.x_stride : 0;

        GpuBuffer *bx = upload(x, nx * 4), *bp = upload(pos, k->n_tokens * 4), *bo = upload(NULL, no * 4);
        GpuBuffer *bf = NULL;
        if (inv) {
                test_rope_factors_inv(inv, k->n_rot / 2, 90 + k->n_rot);
                bf = upload(inv, k->n_rot / 2 * 4);
                p.freq_factors_inv = (GpuBinding) { bf, 0, k->n_rot / 2 * 4 };
        }
        GpuBinding out = k->in_place ? bind(bx) : bind(bo);
        GpuCmd *c = begin();
        assert_int_equal(gpu_op_rope(c, T.dev, bind(bx), bind(bp), out, &p), 0);
        submit(c);

        if (k->in_place) {
                memcpy(ref, x, nx * 4); /* the padding between rows must survive */
                ref_rope(ref, pos, inv, ref, &p);
                download(bx, got, nx * 4);
        } else {
                ref_rope(x, pos, inv, ref, &p);
                download(bo, got, no * 4);
        }
        size_t n = k->in_place ? nx : no;
        snprintf(what, sizeof what, "rope %s %ux%ux%u rot %u base %g scale %g%s%s%s",
                 k->mode == GPU_ROPE_NEOX ? "neox" : "norm", k->n_tokens, k->n_heads, k->head_dim, k->n_rot,
                 k->base, k->freq_scale, k->in_place ? " in place" : "", k->extra_stride ? " strided" : "",
                 k->factors ? " factors" : "");
        check_nmse(what, got, ref, n, NMSE_ROPE);
        if (inv) {
                /* The factors matter: without them the reference is far from what the kernel gave. */
                float *plain = malloc(nx * 4);
                assert_non_null(plain);
                memcpy(plain, x, nx * 4);
                ref_rope(x, pos, NULL, plain, &p);
                double e = test_nmse(got, plain, n);
                fprintf(stderr, "# %-40s nmse %.3g against no factors\n", what, e);
                assert_true(e > 0.1);
                free(plain);
        }

        /* Dims past n_rot (and row padding) are copied bit for bit. */
        uint32_t os = k->in_place ? xs : row;
        for (uint32_t t = 0; t < k->n_tokens; t++)
                for (uint32_t h = 0; h < k->n_heads; h++)
                        for (uint32_t i = k->n_rot; i < k->head_dim; i++)
                                assert_true(got[(size_t) t * os + h * k->head_dim + i] ==
                                            x[(size_t) t * xs + h * k->head_dim + i]);
        if (k->in_place && k->extra_stride)
                for (uint32_t t = 0; t < k->n_tokens; t++)
                        assert_memory_equal(got + (size_t) t * xs + row, x + (size_t) t * xs + row,
                                            k->extra_stride * 4);

        gpu_buffer_free(bx);
        gpu_buffer_free(bp);
        gpu_buffer_free(bo);
        gpu_buffer_free(bf);
        free(x);
        free(ref);
        free(got);
        free(pos);
        free(inv);
}

static void test_rope(void **state) {
        static const RopeCase cases[] = {
                { GPU_ROPE_NORMAL, 7, 3, 128, 128, 10000.0f, 1.0f, false, 0 },
                { GPU_ROPE_NEOX, 7, 3, 128, 128, 1000000.0f, 1.0f, false, 0 },
                { GPU_ROPE_NORMAL, 9, 5, 64, 32, 10000.0f, 0.25f, false, 0 },
                { GPU_ROPE_NEOX, 9, 5, 64, 32, 10000.0f, 0.25f, false, 0 },
                { GPU_ROPE_NORMAL, 6, 4, 96, 48, 500000.0f, 1.0f, true, 0 },
                { GPU_ROPE_NEOX, 6, 4, 96, 48, 1000000.0f, 0.5f, true, 0 },
                /* Q of a fused QKV row: K and V follow each token's Q heads. */
                { GPU_ROPE_NEOX, 5, 7, 64, 64, 1000000.0f, 1.0f, true, 2 * 2 * 64 },
                { GPU_ROPE_NORMAL, 5, 7, 64, 24, 10000.0f, 1.0f, false, 2 * 64 + 4 },
                { GPU_ROPE_NEOX, 3, 2, 10, 0, 10000.0f, 1.0f, false, 0 },   /* nothing rotated */
                { GPU_ROPE_NORMAL, 300, 1, 2, 2, 10000.0f, 1.0f, false, 0 }, /* tiny heads, many tokens */
                /* Frequency factors (Llama 3.1+), with the variations above. */
                { GPU_ROPE_NORMAL, 7, 3, 128, 128, 500000.0f, 1.0f, false, 0, true },
                { GPU_ROPE_NEOX, 7, 3, 128, 128, 1000000.0f, 1.0f, false, 0, true },
                { GPU_ROPE_NORMAL, 9, 5, 64, 32, 10000.0f, 0.25f, true, 0, true },
                { GPU_ROPE_NEOX, 9, 5, 64, 32, 10000.0f, 0.25f, false, 0, true },
                { GPU_ROPE_NORMAL, 5, 7, 64, 64, 500000.0f, 1.0f, true, 2 * 2 * 64, true },
                { GPU_ROPE_NEOX, 5, 7, 64, 24, 10000.0f, 1.0f, false, 2 * 64 + 4, true },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                run_rope(&cases[i]);
}

static void test_rope_errors(void **state) {
        GpuBuffer *bx = upload(NULL, 4096), *bp = upload(NULL, 64);
        GpuRope p = { .n_tokens = 2, .n_heads = 2, .head_dim = 64, .n_rot = 64, .freq_base = 10000, .freq_scale = 1 };
        GpuCmd *c = begin();

        assert_int_equal(gpu_op_rope(c, T.dev, bind(bx), bind(bp), bind(bx), &p), 0);
        p.n_rot = 65;
        assert_int_equal(gpu_op_rope(c, T.dev, bind(bx), bind(bp), bind(bx), &p), -EINVAL);
        p.n_rot = 66;
        assert_int_equal(gpu_op_rope(c, T.dev, bind(bx), bind(bp), bind(bx), &p), -EINVAL);
        p.n_rot = 64;
        p.head_dim = 63;
        assert_int_equal(gpu_op_rope(c, T.dev, bind(bx), bind(bp), bind(bx), &p), -EINVAL);
        p.head_dim = 64;
        p.freq_base = 0;
        assert_int_equal(gpu_op_rope(c, T.dev, bind(bx), bind(bp), bind(bx), &p), -EINVAL);
        p.freq_base = 10000;
        p.x_stride = 100; /* shorter than a token's row */
        assert_int_equal(gpu_op_rope(c, T.dev, bind(bx), bind(bp), bind(bx), &p), -EINVAL);
        p.x_stride = 0;
        p.n_tokens = 100; /* more than the buffers hold */
        assert_int_equal(gpu_op_rope(c, T.dev, bind(bx), bind(bp), bind(bx), &p), -EINVAL);
        p.n_tokens = 2;
        p.freq_factors_inv = (GpuBinding) { bp, 0, 32 * 4 }; /* a factor per rotated pair */
        assert_int_equal(gpu_op_rope(c, T.dev, bind(bx), bind(bp), bind(bx), &p), 0);
        p.freq_factors_inv.range = 31 * 4;
        assert_int_equal(gpu_op_rope(c, T.dev, bind(bx), bind(bp), bind(bx), &p), -EINVAL);
        submit(c);
        gpu_buffer_free(bx);
        gpu_buffer_free(bp);
}

/* ---- softmax --------------------------------------------------------------- */

static void test_softmax(void **state) {
        static const struct { uint32_t rows, cols; float scale, amp; bool in_place; } cases[] = {
                { 3, 4099, 1.0f, 4.0f, false },
                { 5, 65, 0.125f, 20.0f, true },
                { 4, 1, 1.0f, 1.0f, false },
                { 33, 300, -2.0f, 3.0f, false },
                { 1, 151936, 1.0f, 30.0f, true },
        };
        for (size_t s = 0; s < ELEMENTSOF(cases); s++) {
                uint32_t rows = cases[s].rows, cols = cases[s].cols;
                size_t n = (size_t) rows * cols;
                float *x = random_floats(n, 50 + s, cases[s].amp);
                float *ref = malloc(n * 4), *got = malloc(n * 4);
                GpuBuffer *bx = upload(x, n * 4), *bo = upload(NULL, n * 4);
                GpuBinding out = cases[s].in_place ? bind(bx) : bind(bo);
                GpuCmd *c = begin();
                char what[80];

                ref_softmax(x, ref, rows, cols, cases[s].scale);
                assert_int_equal(gpu_op_softmax(c, T.dev, bind(bx), out, rows, cols, cases[s].scale), 0);
                submit(c);
                download(out.buffer, got, n * 4);
                snprintf(what, sizeof what, "softmax %ux%u scale %g%s", rows, cols, cases[s].scale,
                         cases[s].in_place ? " in place" : "");
                check_nmse(what, got, ref, n, NMSE_ROWS);
                gpu_buffer_free(bx);
                gpu_buffer_free(bo);
                free(x);
                free(ref);
                free(got);
        }
}

static void test_softmax_masked(void **state) {
        /* -inf entries (a masked row) get exactly 0 and do not poison the rest. */
        const uint32_t rows = 2, cols = 1000;
        float *x = random_floats(rows * cols, 60, 5.0f), *ref = malloc(rows * cols * 4), *got = malloc(rows * cols * 4);
        for (uint32_t i = 0; i < cols; i++)
                if (i % 3 || i > 900)
                        x[i] = -INFINITY;
        GpuBuffer *bx = upload(x, rows * cols * 4);
        GpuCmd *c = begin();
        ref_softmax(x, ref, rows, cols, 1.0f);
        assert_int_equal(gpu_op_softmax(c, T.dev, bind(bx), bind(bx), rows, cols, 1.0f), 0);
        submit(c);
        download(bx, got, rows * cols * 4);
        for (uint32_t i = 0; i < cols; i++)
                if (x[i] == -INFINITY)
                        assert_true(got[i] == 0.0f);
        check_nmse("softmax with -inf", got, ref, rows * cols, NMSE_ROWS);
        gpu_buffer_free(bx);
        free(x);
        free(ref);
        free(got);
}

/* ---- swiglu, add, mul, scale ------------------------------------------------ */

static void test_swiglu(void **state) {
        static const uint32_t shapes[][2] = { { 3, 4099 }, { 5, 65 }, { 1, 1 }, { 70000, 1 } };
        for (size_t s = 0; s < ELEMENTSOF(shapes); s++)
                for (int in_place = 0; in_place < 2; in_place++) {
                        uint32_t rows = shapes[s][0], cols = shapes[s][1];
                        size_t n = (size_t) rows * cols;
                        float *g = random_floats(n, 70 + s, 12.0f), *u = random_floats(n, 80 + s, 2.0f);
                        float *ref = malloc(n * 4), *got = malloc(n * 4);
                        GpuBuffer *bg = upload(g, n * 4), *bu = upload(u, n * 4), *bo = upload(NULL, n * 4);
                        GpuBinding out = in_place ? bind(bg) : bind(bo);
                        GpuCmd *c = begin();
                        char what[80];

                        ref_swiglu(g, u, ref, n);
                        assert_int_equal(gpu_op_swiglu(c, T.dev, bind(bg), bind(bu), out, rows, cols), 0);
                        submit(c);
                        download(out.buffer, got, n * 4);
                        snprintf(what, sizeof what, "swiglu %ux%u%s", rows, cols, in_place ? " in place" : "");
                        check_nmse(what, got, ref, n, NMSE_ROWS);
                        gpu_buffer_free(bg);
                        gpu_buffer_free(bu);
                        gpu_buffer_free(bo);
                        free(g);
                        free(u);
                        free(ref);
                        free(got);
                }
}

static void test_swiglu_fused(void **state) {
        /* gate and up as the halves of one [rows][2 * cols] projection; cols * 4 is 256-aligned. */
        const uint32_t rows = 6, cols = 320;
        size_t n = (size_t) rows * cols;
        float *gu = random_floats(2 * n, 90, 6.0f), *g = malloc(n * 4), *u = malloc(n * 4);
        float *ref = malloc(n * 4), *got = malloc(n * 4);
        for (uint32_t r = 0; r < rows; r++) {
                memcpy(g + r * cols, gu + 2 * r * cols, cols * 4);
                memcpy(u + r * cols, gu + 2 * r * cols + cols, cols * 4);
        }
        GpuBuffer *b = upload(gu, 2 * n * 4), *bo = upload(NULL, n * 4);
        GpuCmd *c = begin();
        ref_swiglu(g, u, ref, n);
        assert_int_equal(gpu_op_swiglu_strided(c, T.dev, bind(b), (GpuBinding) { b, cols * 4, 0 }, bind(bo), rows,
                                               cols, 2 * cols, 2 * cols, cols),
                         0);
        submit(c);
        download(bo, got, n * 4);
        check_nmse("swiglu fused gate|up", got, ref, n, NMSE_ROWS);
        gpu_buffer_free(b);
        gpu_buffer_free(bo);
        free(gu);
        free(g);
        free(u);
        free(ref);
        free(got);
}

static void test_binary(void **state) {
        static const uint32_t shapes[][2] = { { 3, 4099 }, { 5, 65 }, { 9, 1 }, { 1, 100003 } };
        for (size_t s = 0; s < ELEMENTSOF(shapes); s++)
                for (int v = 0; v < 8; v++) { /* bit 0: mul, bit 1: broadcast, bit 2: in place */
                        bool mul = v & 1, bc = v & 2, in_place = v & 4;
                        uint32_t rows = shapes[s][0], cols = shapes[s][1];
                        size_t n = (size_t) rows * cols, nb = bc ? cols : n;
                        float *a = random_floats(n, 100 + s, 3.0f), *b = random_floats(nb, 110 + s, 3.0f);
                        float *ref = malloc(n * 4), *got = malloc(n * 4);
                        GpuBuffer *ba = upload(a, n * 4), *bb = upload(b, nb * 4), *bo = upload(NULL, n * 4);
                        GpuBinding out = in_place ? bind(ba) : bind(bo);
                        GpuCmd *c = begin();

                        ref_binary(a, b, ref, rows, cols, bc, mul);
                        if (mul)
                                assert_int_equal(gpu_op_mul(c, T.dev, bind(ba), bind(bb), out, rows, cols, bc), 0);
                        else
                                assert_int_equal(gpu_op_add(c, T.dev, bind(ba), bind(bb), out, rows, cols, bc), 0);
                        submit(c);
                        download(out.buffer, got, n * 4);
                        /* One correctly rounded float operation: bit-exact. */
                        assert_memory_equal(got, ref, n * 4);
                        gpu_buffer_free(ba);
                        gpu_buffer_free(bb);
                        gpu_buffer_free(bo);
                        free(a);
                        free(b);
                        free(ref);
                        free(got);
                }
        /* b with a's shape is refused when it is only one row. */
        GpuBuffer *ba = upload(NULL, 4096), *bb = upload(NULL, 16);
        GpuCmd *c = begin();
        assert_int_equal(gpu_op_add(c, T.dev, bind(ba), (GpuBinding) { bb, 0, 16 }, bind(ba), 4, 4, false), -EINVAL);
        assert_int_equal(gpu_op_add(c, T.dev, bind(ba), (GpuBinding) { bb, 0, 16 }, bind(ba), 4, 4, true), 0);
        submit(c);
        gpu_buffer_free(ba);
        gpu_buffer_free(bb);
}

static void test_scale(void **state) {
        const uint32_t n = 100003;
        float *x = random_floats(n, 120, 5.0f), *got = malloc(n * 4);
        GpuBuffer *bx = upload(x, n * 4);
        GpuCmd *c = begin();
        assert_int_equal(gpu_op_scale(c, T.dev, bind(bx), bind(bx), n, -0.375f), 0);
        submit(c);
        download(bx, got, n * 4);
        for (uint32_t i = 0; i < n; i++)
                assert_true(got[i] == -0.375f * x[i]);
        gpu_buffer_free(bx);
        free(x);
        free(got);
}

/* ---- argmax ----------------------------------------------------------------- */

/*
 * One row with gpu_op_argmax_split(): two ops on one scratch in a recording
 * submitted twice, so the counter must come back to zero each time.
 */
static void run_argmax_split(const float *x, uint32_t cols, uint32_t want) {
        uint64_t scratch = gpu_argmax_scratch_size(cols);
        uint8_t *zero = calloc(1, scratch);
        GpuBuffer *bx = upload(x, (size_t) cols * 4), *bo1 = upload(NULL, 4), *bo2 = upload(NULL, 4);
        GpuBuffer *bs = upload(zero, scratch);
        GpuCmd *c = NULL;

        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        assert_int_equal(gpu_op_argmax_split(c, T.dev, bind(bx), bind(bo1), bind(bs), cols), 0);
        gpu_cmd_barrier(c);
        assert_int_equal(gpu_op_argmax_split(c, T.dev, bind(bx), bind(bo2), bind(bs), cols), 0);
        for (int run = 0; run < 2; run++) {
                uint32_t got1 = 1, got2 = 2, counter = 1;
                assert_int_equal(gpu_cmd_submit(c), 0);
                download(bo1, &got1, 4);
                download(bo2, &got2, 4);
                download(bs, &counter, 4);
                assert_int_equal(got1, want);
                assert_int_equal(got2, want);
                assert_int_equal(counter, 0);
        }
        gpu_cmd_free(c);
        gpu_buffer_free(bx);
        gpu_buffer_free(bo1);
        gpu_buffer_free(bo2);
        gpu_buffer_free(bs);
        free(zero);
}

static void run_argmax(const char *what, const float *x, uint32_t rows, uint32_t cols) {
        size_t n = (size_t) rows * cols;
        uint32_t *ref = malloc(rows * 4), *got = malloc(rows * 4);
        GpuBuffer *bx = upload(x, n * 4), *bo = upload(NULL, rows * 4);
        GpuCmd *c = begin();

        ref_argmax(x, ref, rows, cols);
        assert_int_equal(gpu_op_argmax(c, T.dev, bind(bx), bind(bo), rows, cols), 0);
        submit(c);
        download(bo, got, rows * 4);
        fprintf(stderr, "# argmax %s %ux%u: row 0 -> %u\n", what, rows, cols, got[0]);
        for (uint32_t r = 0; r < rows; r++)
                assert_int_equal(got[r], ref[r]);
        /* Each row again, split over workgroups. */
        for (uint32_t r = 0; r < rows; r++)
                run_argmax_split(x + (size_t) r * cols, cols, ref[r]);
        gpu_buffer_free(bx);
        gpu_buffer_free(bo);
        free(ref);
        free(got);
}

static void test_argmax(void **state) {
        static const uint32_t shapes[][2] = { { 3, 151936 }, { 1, 262144 }, { 2, 4099 }, { 5, 65 }, { 4, 1 }, { 6, 7 } };
        for (size_t s = 0; s < ELEMENTSOF(shapes); s++) {
                uint32_t rows = shapes[s][0], cols = shapes[s][1];
                float *x = random_floats((size_t) rows * cols, 130 + s, 10.0f);
                run_argmax("random", x, rows, cols);
                free(x);
        }
}

static void test_argmax_ties(void **state) {
        /* Odd row length: rows start at every alignment, so head, vec4 body and tail all matter. */
        const uint32_t rows = 8, cols = 10007;
        float *x = random_floats((size_t) rows * cols, 140, 1.0f);
        float *y = x;
        /* Row 0: the max repeated. */
        y[1] = y[5000] = y[10006] = 2.0f;
        /* Row 1: only in the tail. */
        y += cols;
        y[cols - 1] = 3.0f;
        /* Row 2: all equal: index 0. */
        y += cols;
        for (uint32_t i = 0; i < cols; i++)
                y[i] = 0.5f;
        /* Row 3: all -inf: index 0. */
        y += cols;
        for (uint32_t i = 0; i < cols; i++)
                y[i] = -INFINITY;
        /* Row 4: all negative with the max twice, far apart. */
        y += cols;
        for (uint32_t i = 0; i < cols; i++)
                y[i] = -1.0f - fabsf(y[i]);
        y[7777] = y[9999] = -0.25f;
        /* Row 5: +inf, which counts as FLT_MAX: the FLT_MAX before it wins the tie. */
        y += cols;
        y[4242] = INFINITY;
        y[4000] = FLT_MAX;
        /* Rows 6, 7: ties spanning many invocations' strides. */
        y += cols;
        for (uint32_t i = 3000; i < 3100; i++)
                y[i] = 5.0f;
        y[1] = 5.0f; /* row 6 starts at 2 mod 4: index 1 is in the scalar head */
        y += cols;
        y[9000] = y[2048] = y[2049] = 7.0f;
        run_argmax("ties", x, rows, cols);
        free(x);

        /* Split rows: the max in several segments (the lowest index must win across them), only in
         * the last segment, and a row of NaNs (no index: the model's check for broken logits). */
        const uint32_t long_cols = 128256;
        float *z = random_floats(long_cols, 141, 1.0f);
        z[100000] = z[20000] = z[120000] = 9.0f;
        run_argmax_split(z, long_cols, 20000);
        z[20000] = z[100000] = 0.0f;
        run_argmax_split(z, long_cols, 120000);
        for (uint32_t i = 0; i < long_cols; i++)
                z[i] = NAN;
        run_argmax_split(z, long_cols, 0xffffffffu);
        free(z);

        GpuBuffer *b = upload(NULL, 64);
        GpuCmd *c = begin();
        assert_int_equal(gpu_op_argmax(c, T.dev, bind(b), bind(b), 1, 0), -EINVAL);
        assert_int_equal(gpu_op_argmax(c, T.dev, bind(b), bind(b), 1, 1000), -EINVAL);
        submit(c);
        gpu_buffer_free(b);
}

/* ---- top-k ------------------------------------------------------------------ */

/* Rows for the top-k test. Special values come with probabilities of about count / n, so that a
 * long row holds a few dozen of each and the k-th boundary falls inside a run of ties. */
typedef enum TopkRow {
        TOPK_RANDOM,            /* uniform in [-10, 10) */
        TOPK_TIES,              /* a few levels: ~50 at the top, ~200 next, across every segment */
        TOPK_SPECIALS,          /* +inf and FLT_MAX tied at the top, ±0 runs, NaNs, -inf, denormals */
        TOPK_SPARSE,            /* ~50 selectable in a row of NaN and -inf: fewer than k */
        TOPK_NONE,              /* NaN and -inf only: m = 0 */
        _TOPK_ROW_MAX,
} TopkRow;

static const char *const topk_row_name[] = { "random", "ties", "specials", "sparse", "none" };

static float bits_float(uint32_t u) {
        float f;
        memcpy(&f, &u, 4);
        return f;
}

static uint32_t float_bits(float f) {
        uint32_t u;
        memcpy(&u, &f, 4);
        return u;
}

/* Each an unusual NaN or -inf: payloads and signs must come back bit for bit. */
static float topk_unselectable(uint64_t *s) {
        static const uint32_t bits[] = { 0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff812345u, 0xff800000u };
        return bits_float(bits[test_rand_u64(s) % ELEMENTSOF(bits)]);
}

static float *topk_row(TopkRow kind, uint32_t n, uint64_t seed) {
        float *x = malloc((size_t) n * sizeof *x);
        uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 3;
        /* Expected counts per row, for rows long enough; short rows get at most these shares. */
        double scale = 1.0 / MAX(n, 500u);

        assert_non_null(x);
        for (uint32_t i = 0; i < n; i++) {
                double u = (double) (test_rand_u64(&s) >> 11) / 9007199254740992.0;
                float r = test_rand_f(&s);
                switch (kind) {
                case TOPK_RANDOM:
                        x[i] = 10.0f * r;
                        break;
                case TOPK_TIES: {
                        static const float low[] = { 1.0f, 0.5f, -0.0f, 0.0f, -1.0f };
                        x[i] = u < 50 * scale ? 3.0f : u < 250 * scale ? 2.0f : low[test_rand_u64(&s) % 5];
                        break;
                }
                case TOPK_SPECIALS: {
                        static const uint32_t rest[] = {
                                0x80000000u, 0x00000000u,       /* -0.0, +0.0 */
                                0xff7fffffu,                    /* -FLT_MAX */
                                0x80000001u, 0x00000001u,       /* ± the smallest denormal */
                                0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800000u,
                        };
                        if (u < 20 * scale)
                                x[i] = INFINITY;
                        else if (u < 40 * scale)
                                x[i] = FLT_MAX;
                        else if (u < 70 * scale)
                                x[i] = fabsf(r);
                        else if (test_rand_u64(&s) % 4 == 0)
                                x[i] = -fabsf(r);
                        else
                                x[i] = bits_float(rest[test_rand_u64(&s) % ELEMENTSOF(rest)]);
                        break;
                }
                case TOPK_SPARSE:
                        x[i] = u < 50 * scale ? r : topk_unselectable(&s);
                        break;
                default:
                        x[i] = topk_unselectable(&s);
                }
        }
        return x;
}

static int cmp_u32(const void *a, const void *b) {
        uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
        return x < y ? -1 : x > y;
}

/* One submission's params: k and gather vary, and go past their limits (the kernel clamps). */
static const struct {
        uint32_t k, n_gather;
} topk_cases[] = {
        { 1, 0 }, { 40, 64 }, { 104, 256 }, { 256, 7 }, { 0, 1 }, { 1000, 1000 },
};

static void topk_params(GpuTopkParams *p, uint32_t k, uint32_t n_gather, uint32_t n_cols, uint64_t seed) {
        uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 5;

        memset(p, 0, sizeof *p);
        p->k = k;
        p->n_gather = n_gather;
        for (uint32_t j = 0; j < GPU_TOPK_MAX; j++) {
                uint64_t r = test_rand_u64(&s);
                /* Mostly in range, some just past the end and some far past it. */
                p->gather[j] = r % 8 == 0 ? n_cols + (uint32_t) (r >> 32) % 3 : r % 8 == 1 ? 0xffffffffu
                                                                                       : (uint32_t) (r >> 32) % n_cols;
        }
}

/* out (one op's) against the reference order of x. */
static void topk_check(const uint32_t *out, const float *x, uint32_t n_cols, const uint32_t *order, uint32_t n_sel,
                       const GpuTopkParams *p) {
        uint32_t k = MIN(MAX(p->k, 1u), GPU_TOPK_MAX), m = MIN(k, n_sel);
        uint32_t got[GPU_TOPK_MAX], want[GPU_TOPK_MAX];

        assert_int_equal(out[0], m);
        for (uint32_t i = 0; i < m; i++) {
                uint32_t idx = out[2 + 2 * i];
                assert_true(idx < n_cols);
                assert_int_equal(out[1 + 2 * i], float_bits(x[idx]));
                got[i] = idx;
        }
        memcpy(want, order, m * 4);
        qsort(got, m, 4, cmp_u32);
        qsort(want, m, 4, cmp_u32);
        assert_memory_equal(got, want, m * 4);

        for (uint32_t j = 0; j < MIN(p->n_gather, GPU_TOPK_MAX); j++) {
                uint32_t g = p->gather[j], v = out[GPU_TOPK_OUT_GATHER + j];
                if (g < n_cols)
                        assert_int_equal(v, float_bits(x[g]));
                else
                        assert_true(isnan(bits_float(v)));
        }
}

/*
 * One row: a recording of two ops on one scratch (a barrier between), submitted once per entry
 * of topk_cases with new params each time: the counter must come back to zero and the params
 * must be read at run time.
 */
static void run_topk(TopkRow kind, uint32_t n_cols, uint64_t seed) {
        float *x = topk_row(kind, n_cols, seed);
        uint32_t *order = malloc((size_t) n_cols * 4);
        uint64_t out_size = gpu_topk_out_size(), scratch = gpu_topk_scratch_size(n_cols);
        uint32_t *out1 = malloc(out_size), *out2 = malloc(out_size);
        uint8_t *zero = calloc(1, scratch);
        GpuBuffer *bx = upload(x, (size_t) n_cols * 4), *bo1 = upload(NULL, out_size), *bo2 = upload(NULL, out_size);
        GpuBuffer *bs = upload(zero, scratch), *bp = NULL;
        GpuCmd *c = NULL;

        assert_non_null(order);
        uint32_t n_sel = ref_topk_order(x, n_cols, order);
        assert_int_equal(gpu_buffer_new(T.dev, sizeof(GpuTopkParams), GPU_MEMORY_HOST, &bp), 0);
        GpuTopkParams *p = gpu_buffer_map(bp);
        assert_non_null(p);

        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        assert_int_equal(gpu_op_topk_split(c, T.dev, bind(bx), bind(bp), bind(bo1), bind(bs), n_cols), 0);
        gpu_cmd_barrier(c);
        assert_int_equal(gpu_op_topk_split(c, T.dev, bind(bx), bind(bp), bind(bo2), bind(bs), n_cols), 0);
        for (size_t t = 0; t < ELEMENTSOF(topk_cases); t++) {
                uint32_t counter = 1;
                topk_params(p, topk_cases[t].k, topk_cases[t].n_gather, n_cols, seed + t);
                assert_int_equal(gpu_cmd_submit(c), 0);
                download(bo1, out1, out_size);
                download(bo2, out2, out_size);
                download(bs, &counter, 4);
                topk_check(out1, x, n_cols, order, n_sel, p);
                topk_check(out2, x, n_cols, order, n_sel, p);
                assert_int_equal(counter, 0);
        }
        fprintf(stderr, "# topk %-8s %6u cols: %u selectable\n", topk_row_name[kind], n_cols, n_sel);

        gpu_cmd_free(c);
        gpu_buffer_free(bx);
        gpu_buffer_free(bp);
        gpu_buffer_free(bo1);
        gpu_buffer_free(bo2);
        gpu_buffer_free(bs);
        free(x);
        free(order);
        free(out1);
        free(out2);
        free(zero);
}

static void test_topk(void **state) {
        /* 1, 7: rows shorter than k, no select at all; 300: a select in one workgroup; 4097: two
         * segments of up to 4096 columns; the rest are vocabularies (Llama 2, Llama 3, Qwen2) split 8
         * to 38 ways. */
        static const uint32_t cols[] = { 1, 7, 300, 4097, 32000, 128256, 151936 };
        for (size_t s = 0; s < ELEMENTSOF(cols); s++)
                for (TopkRow kind = 0; kind < _TOPK_ROW_MAX; kind++)
                        run_topk(kind, cols[s], 160 + 10 * s + kind);
}

static void test_topk_errors(void **state) {
        const uint32_t n = 128256;
        GpuBuffer *bx = upload(NULL, n * 4), *bp = upload(NULL, sizeof(GpuTopkParams));
        GpuBuffer *bo = upload(NULL, gpu_topk_out_size()), *bs = upload(NULL, gpu_topk_scratch_size(n));
        GpuBinding x = bind(bx), prm = bind(bp), o = bind(bo), s = bind(bs);
        GpuCmd *c = begin();

        assert_true(gpu_topk_scratch_size(n) > gpu_topk_scratch_size(2048));
        assert_int_equal(gpu_op_topk_split(c, T.dev, x, prm, o, s, 0), -EINVAL);
        assert_int_equal(gpu_op_topk_split(c, T.dev, x, prm, o, s, n + 64 + ALIGN_OFF / 4), -EINVAL);
        assert_int_equal(gpu_op_topk_split(c, T.dev, x, (GpuBinding) { bp, 0, 8 }, o, s, n), -EINVAL);
        assert_int_equal(gpu_op_topk_split(c, T.dev, x, prm, (GpuBinding) { bo, 0, 4 * GPU_TOPK_OUT_GATHER }, s, n),
                         -EINVAL);
        assert_int_equal(gpu_op_topk_split(c, T.dev, x, prm, o, (GpuBinding) { bs, 0, gpu_topk_scratch_size(2048) }, n),
                         -EINVAL);
        assert_int_equal(gpu_op_topk_split(c, T.dev, x, prm, o, (GpuBinding) {}, n), -EINVAL);
        submit(c);
        gpu_buffer_free(bx);
        gpu_buffer_free(bp);
        gpu_buffer_free(bo);
        gpu_buffer_free(bs);
}

static void test_chain(void **state) {
        /* One recording, several dependent ops with barriers: x -> rmsnorm -> *w (broadcast) -> + x -> argmax. */
        const uint32_t rows = 3, cols = 5003;
        size_t n = (size_t) rows * cols;
        float *x = random_floats(n, 150, 2.0f), *w = random_floats(cols, 151, 1.0f);
        float *t = malloc(n * 4), *t2 = malloc(n * 4), *got = malloc(n * 4);
        uint32_t ref_idx[3], idx[3];
        GpuBuffer *bx = upload(x, n * 4), *bw = upload(w, cols * 4), *bt = upload(NULL, n * 4), *bi = upload(NULL, 12);
        GpuCmd *c = begin();

        ref_rmsnorm(x, NULL, t, rows, cols, 1e-6f);
        ref_binary(t, w, t2, rows, cols, true, true);
        ref_binary(t2, x, t, rows, cols, false, false);
        ref_argmax(t, ref_idx, rows, cols);

        assert_int_equal(gpu_op_rmsnorm(c, T.dev, bind(bx), (GpuBinding) {}, bind(bt), rows, cols, 1e-6f), 0);
        gpu_cmd_barrier(c);
        assert_int_equal(gpu_op_mul(c, T.dev, bind(bt), bind(bw), bind(bt), rows, cols, true), 0);
        gpu_cmd_barrier(c);
        assert_int_equal(gpu_op_add(c, T.dev, bind(bt), bind(bx), bind(bt), rows, cols, false), 0);
        gpu_cmd_barrier(c);
        assert_int_equal(gpu_op_argmax(c, T.dev, bind(bt), bind(bi), rows, cols), 0);
        submit(c);
        download(bt, got, n * 4);
        download(bi, idx, sizeof idx);
        check_nmse("chain rmsnorm*w+x", got, t, n, NMSE_ROWS);
        assert_memory_equal(idx, ref_idx, sizeof idx);

        gpu_buffer_free(bx);
        gpu_buffer_free(bw);
        gpu_buffer_free(bt);
        gpu_buffer_free(bi);
        free(x);
        free(w);
        free(t);
        free(t2);
        free(got);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_rmsnorm),
                cmocka_unit_test(test_rmsnorm_offsets_and_errors),
                cmocka_unit_test(test_rope),
                cmocka_unit_test(test_rope_errors),
                cmocka_unit_test(test_softmax),
                cmocka_unit_test(test_softmax_masked),
                cmocka_unit_test(test_swiglu),
                cmocka_unit_test(test_swiglu_fused),
                cmocka_unit_test(test_binary),
                cmocka_unit_test(test_scale),
                cmocka_unit_test(test_argmax),
                cmocka_unit_test(test_argmax_ties),
                cmocka_unit_test(test_topk),
                cmocka_unit_test(test_topk_errors),
                cmocka_unit_test(test_chain),
        };
        gpu_test_open(&T);
        const char *e = getenv("INFERD_GPU_NO_SUBGROUP");
        fprintf(stderr, "# reductions: %s\n",
                gpu_device_caps(T.dev)->subgroup_arithmetic && !(e && *e && strcmp(e, "0") != 0)
                        ? "subgroup"
                        : "shared memory");
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        gpu_test_close(&T);
        return r;
}
