/* SPDX-License-Identifier: MIT */
/*
 * The prefill matrix x matrix kernels (gpu_op_matmul) against
 * dequantise-then-multiply in C (matmul_ref: the file's own dequantisation,
 * double accumulation), for every weight type, on shapes that are not
 * multiples of any tile, through split tensors and with every tile shape.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gpu-test.h"
#include "ops-matmul.h"
#include "quant.h"
#include "tensor.h"

/*
 * The kernel dequantises exactly as the reference does (same products in the
 * same order), so what is left is F32 accumulation against double over K
 * terms: relative error ~1e-7 * sqrt(K) per output, NMSE ~1e-12 at K = 4096.
 * 1e-9 leaves a wide margin while still catching any wrong element, scale
 * or row (one wrong weight in 4096 already costs ~1e-4).
 */
#define MATMUL_NMSE_MAX 1e-9
/*
 * The tensor-core kernel (devices with VK_NV_cooperative_matrix only) rounds
 * X and the dequantised W to f16: relative error up to 2^-11 per factor,
 * NMSE ~ 2 * (2^-11)^2 / 3 ~ 1.6e-7 for uniform data. 2e-6 still fails on
 * one wrong element in a 256-long row (~4e-3).
 */
#define MATMUL_NMSE_MAX_F16 2e-6

static GpuTestCtx T;

typedef struct Case {
        GgmlType type;
        uint32_t n_rows, n_cols, n_tokens;
        uint32_t max_rows_per_chunk;    /* 0: one chunk */
        uint64_t x_offset, y_offset;    /* where X and Y start in their buffers */
} Case;

/* Random weights quantised to `type` in the file layout (n_rows * row bytes). */
static uint8_t *make_weights(GgmlType type, uint32_t n_rows, uint32_t n_cols, uint64_t seed) {
        uint64_t row_bytes = ggml_row_bytes(type, n_cols);
        uint8_t *w = malloc(row_bytes * n_rows);
        float *row = malloc(n_cols * sizeof *row);

        assert_non_null(w);
        assert_non_null(row);
        for (uint32_t r = 0; r < n_rows; r++) {
                test_fill_random(row, n_cols, seed * 100003 + r);
                assert_int_equal(ggml_quantize_row(type, row, w + r * row_bytes, n_cols), 0);
        }
        free(row);
        return w;
}

static double run_case(const Case *k, const char *path) {
        uint64_t x_bytes = (uint64_t) k->n_tokens * k->n_cols * sizeof(float);
        uint64_t y_bytes = (uint64_t) k->n_tokens * k->n_rows * sizeof(float);
        uint8_t *wdata = make_weights(k->type, k->n_rows, k->n_cols, k->n_rows ^ k->n_cols ^ k->type);
        float *x = malloc(x_bytes), *y = malloc(y_bytes), *ref = malloc(y_bytes), *guard = malloc(256);
        GpuTensor *w = NULL;
        GpuBuffer *xb = NULL, *yb = NULL;
        GpuCmd *c = NULL;

        assert_non_null(x);
        assert_non_null(y);
        assert_non_null(ref);
        assert_non_null(guard);
        test_fill_random(x, (size_t) k->n_tokens * k->n_cols, 7 + k->n_tokens);
        assert_int_equal(matmul_ref(k->type, wdata, k->n_rows, k->n_cols, x, k->n_tokens, ref), 0);

        assert_int_equal(gpu_tensor_upload_split(T.dev, k->type, k->n_cols, k->n_rows, wdata, k->max_rows_per_chunk,
                                                 &w),
                         0);
        if (k->max_rows_per_chunk)
                assert_int_equal(w->n_chunks, (k->n_rows + k->max_rows_per_chunk - 1) / k->max_rows_per_chunk);
        assert_int_equal(gpu_buffer_new(T.dev, k->x_offset + x_bytes, GPU_MEMORY_DEVICE, &xb), 0);
        /* 256 bytes of slack after Y, so a write past the end shows up. */
        assert_int_equal(gpu_buffer_new(T.dev, k->y_offset + y_bytes + 256, GPU_MEMORY_DEVICE, &yb), 0);
        assert_int_equal(gpu_buffer_write(xb, k->x_offset, x, x_bytes), 0);
        /* NaN everywhere first: any output the kernel misses poisons the NMSE. */
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        gpu_cmd_fill(c, yb, 0, gpu_buffer_size(yb), 0x7fc00000u);
        gpu_cmd_barrier(c);
        assert_int_equal(gpu_op_matmul(c, T.dev, w, (GpuBinding) { xb, k->x_offset, x_bytes },
                                       (GpuBinding) { yb, k->y_offset, y_bytes }, k->n_tokens),
                         0);
        assert_int_equal(gpu_cmd_submit(c), 0);
        assert_int_equal(gpu_buffer_read(yb, k->y_offset, y, y_bytes), 0);
        /* Nothing written outside Y's binding. */
        assert_int_equal(gpu_buffer_read(yb, k->y_offset + y_bytes, guard, 256), 0);
        for (int i = 0; i < 64; i++)
                assert_true(isnan(guard[i]));

        double e = test_nmse(y, ref, (size_t) k->n_tokens * k->n_rows);
        fprintf(stderr, "# %-7s %-4s %4u x %4u, %3u tokens, %u rows/chunk: NMSE %.3g\n", path,
                ggml_type_name(k->type), k->n_rows, k->n_cols, k->n_tokens, k->max_rows_per_chunk, e);

        gpu_cmd_free(c);
        gpu_buffer_free(xb);
        gpu_buffer_free(yb);
        gpu_tensor_free(w);
        free(wdata);
        free(x);
        free(y);
        free(ref);
        free(guard);
        return e;
}

/* Set when $INFERD_GPU_NO_COOPMAT=1 came from outside: then only the plain kernel runs. */
static bool no_coopmat_outside;

/* Runs a case through both F32 kernels (the tiled one, and the CPU devices'
 * per-lane one wherever the device can run it and K allows, whichever the
 * device would pick) and, where the device has one, the tensor-core kernel,
 * each against its own bound. */
static void check(const Case *k) {
        assert_int_equal(setenv("INFERD_GPU_NO_COOPMAT", "1", 1), 0);
        assert_false(gpu_matmul_coopmat(T.dev));
        assert_int_equal(setenv("INFERD_GPU_MM_ROWS", "0", 1), 0);
        assert_false(gpu_matmul_rows(T.dev, k->n_cols));
        assert_true(run_case(k, "tiles") < MATMUL_NMSE_MAX);
        assert_int_equal(setenv("INFERD_GPU_MM_ROWS", "1", 1), 0);
        if (gpu_matmul_rows(T.dev, k->n_cols))
                assert_true(run_case(k, "rows") < MATMUL_NMSE_MAX);
        assert_int_equal(unsetenv("INFERD_GPU_MM_ROWS"), 0);
        if (no_coopmat_outside)
                return;
        assert_int_equal(unsetenv("INFERD_GPU_NO_COOPMAT"), 0);
        if (gpu_matmul_coopmat(T.dev))
                assert_true(run_case(k, "coopmat") < MATMUL_NMSE_MAX_F16);
}

static const GgmlType all_types[] = {
        GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};

static void test_shapes_all_types(void **state) {
        static const struct {
                uint32_t n_rows, n_cols, n_tokens;
        } shapes[] = {
                { 67, 256, 5 },
                { 129, 512, 64 },
                { 300, 4096, 33 },
                { 40, 768, 130 },       /* more token tiles than row tiles */
        };
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++)
                for (size_t j = 0; j < ELEMENTSOF(shapes); j++) {
                        Case k = { all_types[i], shapes[j].n_rows, shapes[j].n_cols, shapes[j].n_tokens };
                        check(&k);
                }
}

/* F32 and F16 take any K: not a multiple of the 32-wide step, of 4 (the
 * vector loads), or even odd (F16 elements straddling words). */
static void test_float_odd_k(void **state) {
        static const uint32_t ks[] = { 100, 66, 67, 1, 33 };
        for (size_t i = 0; i < ELEMENTSOF(ks); i++) {
                Case a = { GGML_TYPE_F32, 45, ks[i], 9 };
                Case b = { GGML_TYPE_F16, 45, ks[i], 9 };
                check(&a);
                check(&b);
        }
}

/* Split tensors: one dispatch per chunk, each writing its strided block of Y
 * columns; chunk sizes that are not multiples of the tile. */
static void test_split(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++) {
                Case k = { all_types[i], 300, 512, 21, 77 };
                check(&k);
        }
        Case one_row = { GGML_TYPE_Q6_K, 5, 256, 3, 1 };
        check(&one_row);
}

/* X and Y bound at offsets inside larger buffers. */
static void test_offsets(void **state) {
        Case k = { GGML_TYPE_Q4_0, 70, 320, 19, 0, 256, 512 };
        check(&k);
        Case s = { GGML_TYPE_F16, 70, 320, 19, 32, 1024, 256 };
        check(&s);
}

/* Every tile shape the plain kernel may be specialised to (the device picks
 * one; $INFERD_GPU_MM_TILE forces the others), including shapes beyond the
 * defaults lavapipe would pick; ones the device cannot run fall back to the
 * default. Where the tensor-core kernel exists, its tile shapes too. */
static void test_tiles(void **state) {
        static const char *tiles[] = {
                "32,32,4,4", "64,64,4,4", "128,64,8,4", "64,128,4,8", "64,32,8,2", "16,64,2,8", "32,16,1,1",
                "128,128,8,8",
        };
        static const char *cm_tiles[] = { "128,128", "128,64", "128,32", "64,64", "32,16", "64,128" };
        Case a = { GGML_TYPE_Q5_K, 131, 512, 37 };
        Case b = { GGML_TYPE_F32, 131, 99, 37 };

        assert_int_equal(setenv("INFERD_GPU_MM_ROWS", "0", 1), 0);
        for (size_t i = 0; i < ELEMENTSOF(tiles); i++) {
                assert_int_equal(setenv("INFERD_GPU_MM_TILE", tiles[i], 1), 0);
                fprintf(stderr, "# tile %s\n", tiles[i]);
                assert_int_equal(setenv("INFERD_GPU_NO_COOPMAT", "1", 1), 0);
                assert_true(run_case(&a, "tiles") < MATMUL_NMSE_MAX);
                assert_true(run_case(&b, "tiles") < MATMUL_NMSE_MAX);
        }
        assert_int_equal(unsetenv("INFERD_GPU_MM_TILE"), 0);
        assert_int_equal(unsetenv("INFERD_GPU_MM_ROWS"), 0);
        if (no_coopmat_outside)
                return;
        assert_int_equal(unsetenv("INFERD_GPU_NO_COOPMAT"), 0);
        if (!gpu_matmul_coopmat(T.dev))
                return;
        for (size_t i = 0; i < ELEMENTSOF(cm_tiles); i++) {
                assert_int_equal(setenv("INFERD_GPU_MM_CM_TILE", cm_tiles[i], 1), 0);
                fprintf(stderr, "# coopmat tile %s\n", cm_tiles[i]);
                assert_true(run_case(&a, "coopmat") < MATMUL_NMSE_MAX_F16);
                assert_true(run_case(&b, "coopmat") < MATMUL_NMSE_MAX_F16);
        }
        assert_int_equal(unsetenv("INFERD_GPU_MM_CM_TILE"), 0);
}

/* The per-lane kernel's tile (rows x tokens per lane; the default is 24 x
 * 12): a single row and token, odd sizes, and more than the matrix has, so
 * every partial group is clamped and never stored. Every weight type, split
 * tensors included. Invalid shapes fall back to the default. */
static void test_rows_tiles(void **state) {
        static const char *shapes[] = { "1,1", "3,5", "8,2", "24,12", "32,4", "0,4", "33,1", "bad" };
        Case k[] = {
                { GGML_TYPE_Q8_0, 131, 512, 37 },       { GGML_TYPE_F32, 45, 96, 13 },
                { GGML_TYPE_F16, 200, 64, 1 },          { GGML_TYPE_Q4_0, 70, 320, 19, 0, 256, 512 },
                { GGML_TYPE_Q4_K, 67, 512, 29, 20 },    { GGML_TYPE_Q5_K, 9, 256, 40 },
                { GGML_TYPE_Q6_K, 130, 768, 7, 64 },
        };

        assert_int_equal(setenv("INFERD_GPU_NO_COOPMAT", "1", 1), 0);
        assert_int_equal(setenv("INFERD_GPU_MM_ROWS", "1", 1), 0);
        if (!gpu_matmul_rows(T.dev, 32)) {
                assert_int_equal(unsetenv("INFERD_GPU_MM_ROWS"), 0);
                skip();
        }
        assert_false(gpu_matmul_rows(T.dev, 48));
        for (size_t i = 0; i < ELEMENTSOF(shapes); i++) {
                assert_int_equal(setenv("INFERD_GPU_MM_ROWS_SHAPE", shapes[i], 1), 0);
                fprintf(stderr, "# rows x tokens %s\n", shapes[i]);
                for (size_t j = 0; j < ELEMENTSOF(k); j++)
                        assert_true(run_case(&k[j], "rows") < MATMUL_NMSE_MAX);
        }
        assert_int_equal(unsetenv("INFERD_GPU_MM_ROWS_SHAPE"), 0);
        assert_int_equal(unsetenv("INFERD_GPU_MM_ROWS"), 0);
}

static void test_errors(void **state) {
        uint8_t *wdata = make_weights(GGML_TYPE_Q8_0, 64, 64, 1);
        GpuTensor *w = NULL;
        GpuBuffer *xb = NULL, *yb = NULL;
        GpuCmd *c = NULL;

        assert_int_equal(gpu_tensor_upload(T.dev, GGML_TYPE_Q8_0, 64, 64, wdata, &w), 0);
        assert_int_equal(gpu_buffer_new(T.dev, 64 * 64 * sizeof(float), GPU_MEMORY_DEVICE, &xb), 0);
        assert_int_equal(gpu_buffer_new(T.dev, 64 * 64 * sizeof(float), GPU_MEMORY_DEVICE, &yb), 0);
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        GpuBinding x = { xb, 0, 0 }, y = { yb, 0, 0 };
        assert_int_equal(gpu_op_matmul(c, T.dev, w, x, y, 64), 0);
        assert_int_equal(gpu_op_matmul(c, T.dev, w, x, y, 0), 0);
        assert_int_equal(gpu_op_matmul(c, T.dev, NULL, x, y, 1), -EINVAL);
        /* X or Y too small for the shapes. */
        assert_int_equal(gpu_op_matmul(c, T.dev, w, x, y, 65), -EINVAL);
        assert_int_equal(gpu_op_matmul(c, T.dev, w, (GpuBinding) { xb, 256, 0 }, y, 64), -EINVAL);
        assert_int_equal(gpu_op_matmul(c, T.dev, w, x, (GpuBinding) { yb, 0, 256 }, 2), -EINVAL);
        assert_int_equal(gpu_cmd_submit(c), 0);
        gpu_cmd_free(c);
        gpu_buffer_free(xb);
        gpu_buffer_free(yb);
        gpu_tensor_free(w);
        free(wdata);
}

/* $INFERD_GPU_BENCH_MATMUL=1: the lead's numbers (GFLOP/s at 4096 x 4096 x
 * 512 tokens) for each kernel the device has, after the tests; not a test
 * case, it takes seconds on lavapipe. */
static int bench(void) {
        static const GgmlType types[] = { GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K };
        for (int cm = 0; cm < 2; cm++) {
                if (cm) {
                        if (no_coopmat_outside)
                                break;
                        (void) unsetenv("INFERD_GPU_NO_COOPMAT");
                        if (!gpu_matmul_coopmat(T.dev))
                                break;
                } else
                        (void) setenv("INFERD_GPU_NO_COOPMAT", "1", 1);
                for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                        double ns = 0;
                        int r = gpu_bench_matmul(T.dev, types[i], 4096, 4096, 512, 2, &ns);
                        if (r < 0) {
                                fprintf(stderr, "gpu_bench_matmul(%s): %s\n", ggml_type_name(types[i]), strerror(-r));
                                return 1;
                        }
                        fprintf(stderr, "# bench %-7s %-4s 4096 x 4096 x 512: %.2f ms, %.1f GFLOP/s\n",
                                cm ? "coopmat" : "plain", ggml_type_name(types[i]), ns / 1e6,
                                2.0 * 4096 * 4096 * 512 / ns);
                }
        }
        return 0;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_shapes_all_types),
                cmocka_unit_test(test_float_odd_k),
                cmocka_unit_test(test_split),
                cmocka_unit_test(test_offsets),
                cmocka_unit_test(test_tiles),
                cmocka_unit_test(test_rows_tiles),
                cmocka_unit_test(test_errors),
        };
        const char *e = getenv("INFERD_GPU_BENCH_MATMUL"), *nc = getenv("INFERD_GPU_NO_COOPMAT");
        no_coopmat_outside = nc && streq(nc, "1");
        gpu_test_open(&T);
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        if (r == 0 && e && streq(e, "1"))
                r = bench();
        gpu_test_close(&T);
        return r;
}
