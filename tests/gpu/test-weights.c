/* SPDX-License-Identifier: MIT */
/*
 * Weight tensors on a real device: upload (whole and split by rows), matrix
 * x vector for every weight type against dequantise-then-multiply in C with
 * double accumulation, the embedding row lookup, and bad input.
 *
 * Tolerances (normalised mean squared error against the reference): the
 * kernel reads exactly the quantised values the reference dequantises, so
 * only F32 accumulation order differs, plus, for the quantised types, the
 * per-span folding of scale and offset (sum((a q + c) x) = a 2^B S1 +
 * (c - a 2^B) Sx), which cancels a few bits:
 *   F32, F16 (exact dequantisation)              1e-10
 *   Q8_0, Q4_0, Q4_K, Q5_K, Q6_K                 1e-8
 *   the same with packed f16 arithmetic          2e-5
 *     (GPU_MATVEC_DEQUANT_F16MATH: x rounded to f16, 2^-11 relative, and
 *     f16 span sums of 16-32 centred products; scale and row total in f32)
 * get_rows dequantises exactly as the reference (up to a fused
 * multiply-add in the K-quants): 1e-12.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gpu-test.h"
#include "ops-attention.h"
#include "ops-weights.h"
#include "ref-basic.h"
#include "quant.h"
#include "tensor.h"

static GpuTestCtx T;

static const GgmlType all_types[] = {
        GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};

static double matvec_bound(GgmlType t) {
        return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 ? 1e-10 : 1e-8;
}

static bool is_quant(GgmlType t) {
        return t != GGML_TYPE_F32 && t != GGML_TYPE_F16;
}

/* The arithmetic these parameters (0 = this device's default) give weights of type t. */
static GpuMatvecParams effective(GgmlType t, uint32_t n_cols, uint32_t n_vectors, const GpuMatvecParams *mp) {
        GpuMatvecParams eff;
        gpu_matvec_default_params(T.dev, t, n_cols, n_vectors, &eff);
        if (mp && mp->dequant)
                eff.dequant = mp->dequant;
        if (mp && mp->int_digits)
                eff.int_digits = mp->int_digits;
        if (!is_quant(t))
                eff.dequant = GPU_MATVEC_DEQUANT_F32;
        return eff;
}

static const char *arith_name(GgmlType t, uint32_t n_cols, uint32_t n_vectors, const GpuMatvecParams *mp) {
        GpuMatvecParams e = effective(t, n_cols, n_vectors, mp);
        return e.dequant == GPU_MATVEC_DEQUANT_F16MATH ? " f16 math"
               : e.dequant != GPU_MATVEC_DEQUANT_DOT   ? ""
               : e.int_digits == 1                     ? " int8 dot"
                                                       : " int16 dot";
}

/* The bound for these parameters: packed f16 arithmetic rounds x and the span sums; integer dot
 * products round x to 16 (or 8) bits per 16 columns. */
static double matvec_bound_params(GgmlType t, uint32_t n_cols, uint32_t n_vectors, const GpuMatvecParams *mp) {
        GpuMatvecParams e = effective(t, n_cols, n_vectors, mp);
        if (e.dequant == GPU_MATVEC_DEQUANT_DOT)
                return e.int_digits == 1 ? 1e-4 : 1e-8;
        return e.dequant == GPU_MATVEC_DEQUANT_F16MATH ? 2e-5 : matvec_bound(t);
}

static uint32_t block_cols(GgmlType t) {
        uint32_t e = ggml_type_block_elems(t);
        return e == 1 ? 32 : e;
}

/* Random weights in the file layout, and their dequantised values. */
typedef struct Weights {
        GgmlType type;
        uint32_t n_rows, n_cols;
        uint8_t *data;
        float *deq;
} Weights;

static void weights_make(Weights *w, GgmlType type, uint32_t n_rows, uint32_t n_cols, uint64_t seed) {
        uint64_t rb = ggml_row_bytes(type, n_cols);
        float *row = malloc(sizeof(float) * n_cols);

        assert_true(rb > 0);
        *w = (Weights) { type, n_rows, n_cols, malloc(rb * n_rows), malloc(sizeof(float) * n_rows * n_cols) };
        assert_non_null(w->data);
        assert_non_null(w->deq);
        for (uint32_t r = 0; r < n_rows; r++) {
                test_fill_random(row, n_cols, seed * 1000003 + r);
                /* Rows of different magnitudes, as real layers have. */
                for (uint32_t k = 0; k < n_cols; k++)
                        row[k] *= 0.05f + (float) (r % 7);
                assert_int_equal(ggml_quantize_row(type, row, w->data + rb * r, n_cols), 0);
                assert_int_equal(ggml_dequantize_row(type, w->data + rb * r, w->deq + (size_t) r * n_cols, n_cols),
                                 0);
        }
        free(row);
}

static void weights_free(Weights *w) {
        free(w->data);
        free(w->deq);
}

static void matvec_ref(const Weights *w, const float *x, uint32_t n_vectors, float *y) {
        for (uint32_t v = 0; v < n_vectors; v++)
                for (uint32_t r = 0; r < w->n_rows; r++) {
                        const float *wr = w->deq + (size_t) r * w->n_cols, *xv = x + (size_t) v * w->n_cols;
                        double s = 0;
                        for (uint32_t k = 0; k < w->n_cols; k++)
                                s += (double) wr[k] * (double) xv[k];
                        y[(size_t) v * w->n_rows + r] = (float) s;
                }
}

/*
 * Uploads, runs y = W x for n_vectors vectors (x and y bound at a 256-byte
 * offset when `offset`), and checks against the reference.
 */
static void check_matvec_params(GgmlType type, uint32_t n_rows, uint32_t n_cols, uint32_t n_vectors,
                                uint32_t max_rows, bool offset, uint64_t seed, const GpuMatvecParams *mp) {
        const uint64_t off = offset ? 256 : 0;
        size_t nx = (size_t) n_vectors * n_cols, ny = (size_t) n_vectors * n_rows;
        float *x = malloc(nx * sizeof(float)), *y = malloc(ny * sizeof(float)), *ref = malloc(ny * sizeof(float));
        GpuBuffer *bx = NULL, *by = NULL;
        GpuTensor *t = NULL;
        GpuCmd *c = NULL;
        Weights w;

        weights_make(&w, type, n_rows, n_cols, seed);
        test_fill_random(x, nx, seed + 17);
        matvec_ref(&w, x, n_vectors, ref);

        assert_int_equal(gpu_tensor_upload_split(T.dev, type, n_cols, n_rows, w.data, max_rows, &t), 0);
        assert_int_equal(t->n_rows, n_rows);
        assert_int_equal(t->n_cols, n_cols);
        if (max_rows)
                assert_int_equal(t->n_chunks, (n_rows + max_rows - 1) / max_rows);
        assert_int_equal(gpu_buffer_new(T.dev, off + nx * sizeof(float), GPU_MEMORY_DEVICE, &bx), 0);
        assert_int_equal(gpu_buffer_new(T.dev, off + ny * sizeof(float) + 64, GPU_MEMORY_DEVICE, &by), 0);
        assert_int_equal(gpu_buffer_write(bx, off, x, nx * sizeof(float)), 0);
        if (mp && mp->accumulate) {
                /* y += W x: y starts as a residual, added to the reference as gpu_op_add() would. */
                test_fill_random(y, ny, seed + 29);
                for (size_t i = 0; i < ny; i++)
                        ref[i] += y[i];
                assert_int_equal(gpu_buffer_write(by, off, y, ny * sizeof(float)), 0);
        }
        /* A canary after y: the kernel must not write past its rows. */
        float canary[16];
        for (int i = 0; i < 16; i++)
                canary[i] = 12345.0f;
        assert_int_equal(gpu_buffer_write(by, off + ny * sizeof(float), canary, sizeof canary), 0);

        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, (GpuBinding) { bx, off, nx * sizeof(float) },
                                              (GpuBinding) { by, off, ny * sizeof(float) }, n_vectors, mp),
                         0);
        assert_int_equal(gpu_cmd_submit(c), 0);
        assert_int_equal(gpu_buffer_read(by, off, y, ny * sizeof(float)), 0);
        float after[16];
        assert_int_equal(gpu_buffer_read(by, off + ny * sizeof(float), after, sizeof after), 0);
        assert_memory_equal(after, canary, sizeof canary);

        double e = test_nmse(y, ref, ny);
        fprintf(stderr, "# matvec %-4s %5u x %-5u nv %u chunks %u%s%s: nmse %.3g (bound %.0e)\n",
                ggml_type_name(type), n_rows, n_cols, n_vectors, t->n_chunks,
                arith_name(type, n_cols, n_vectors, mp), mp && mp->accumulate ? " add" : "", e,
                matvec_bound_params(type, n_cols, n_vectors, mp));
        assert_true(e < matvec_bound_params(type, n_cols, n_vectors, mp));

        gpu_cmd_free(c);
        gpu_buffer_free(bx);
        gpu_buffer_free(by);
        gpu_tensor_free(t);
        weights_free(&w);
        free(x);
        free(y);
        free(ref);
}

static void check_matvec(GgmlType type, uint32_t n_rows, uint32_t n_cols, uint32_t n_vectors, uint32_t max_rows,
                         bool offset, uint64_t seed) {
        check_matvec_params(type, n_rows, n_cols, n_vectors, max_rows, offset, seed, NULL);
}

/* What discrete GPUs get (several subgroups per workgroup, f16 dequantisation, a capped grid
 * whose workgroups loop over row groups), whatever this device's defaults are. */
static const GpuMatvecParams gpu_like_128 = { 128, 4, GPU_MATVEC_DEQUANT_F16, 2, GPU_MATVEC_UNITS_WIDE, 16 };
static const GpuMatvecParams gpu_like_64 = { 64, 4, GPU_MATVEC_DEQUANT_F16, 1, GPU_MATVEC_UNITS_WORD, 7,
                                              GPU_MATVEC_PIPELINE_ON };

static void test_matvec_small(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++)
                check_matvec(all_types[i], 67, 256, 1, 0, false, 1);
}

static void test_matvec_medium(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++)
                check_matvec_params(all_types[i], 300, 4096, 3, 0, false, 2, &gpu_like_128);
}

static void test_matvec_many_rows(void **state) {
        /* More rows than any workgroup multiple, the shortest rows, 8 vectors (1 for some types:
         * every 8-vector pipeline costs lavapipe seconds to compile). */
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++)
                check_matvec(all_types[i], 4099, block_cols(all_types[i]), i % 2 ? 1 : 8, 0, false, 3);
}

static void test_matvec_long_rows(void **state) {
        /* Long rows: many units per invocation, the two-unit loop and its tail. */
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++)
                check_matvec_params(all_types[i], 13, 8192 + block_cols(all_types[i]), 2, 0, false, 4,
                                    i % 2 ? &gpu_like_64 : NULL);
}

static void test_matvec_vectors(void **state) {
        for (uint32_t nv = 1; nv <= GPU_MATVEC_MAX_VECTORS; nv++)
                check_matvec(all_types[nv % ELEMENTSOF(all_types)], 37, 512, nv, 0, true, 10 + nv);
}

static void test_matvec_unaligned_float(void **state) {
        /* F32/F16 rows that are not 16-byte aligned take the element-by-element path. */
        check_matvec(GGML_TYPE_F32, 67, 37, 2, 0, false, 5);
        check_matvec(GGML_TYPE_F16, 67, 37, 3, 0, false, 6);
        check_matvec(GGML_TYPE_F16, 29, 36, 1, 0, true, 7);
        check_matvec(GGML_TYPE_F32, 5, 1, 1, 0, false, 8);
}

static void test_matvec_split(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++)
                check_matvec(all_types[i], 300, 512, 2, 64, true, 9);
        check_matvec(GGML_TYPE_Q6_K, 77, 256, 1, 1, false, 10);
}

static void test_matvec_accumulate(void **state) {
        /* y += W x (gpu_op_matvec_add(), the residual connections): this device's kernel, a GPU's,
         * split tensors (each chunk adds to its own rows) and several vectors. */
        static const GpuMatvecParams acc = { .accumulate = true };
        GpuMatvecParams acc_gpu = gpu_like_128;
        acc_gpu.accumulate = true;
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++) {
                check_matvec_params(all_types[i], 67, 256, 1, 0, false, 31, &acc);
                check_matvec_params(all_types[i], 300, 512, 2, 64, true, 32, &acc);
                check_matvec_params(all_types[i], 37, 512, 3, 0, false, 33, &acc_gpu);
        }
        check_matvec_params(GGML_TYPE_F32, 67, 37, 2, 0, false, 34, &acc);
}

/*
 * SwiGLU pairs (gpu_op_matvec_swiglu(), the fused [gate | up] projection):
 * n_out gate rows, a gap, n_out up rows from up_row, trailing rows never
 * read. Against silu(gate) * up in double over the reference products; the
 * matvec's bound (silu's slope is at most 1.1).
 */
static void check_matvec_swiglu(GgmlType type, uint32_t n_out, uint32_t up_row, uint32_t n_cols,
                                uint32_t n_vectors, uint64_t seed, const GpuMatvecParams *base) {
        uint32_t n_rows = up_row + n_out + 3;
        size_t nx = (size_t) n_vectors * n_cols, ny = (size_t) n_vectors * n_out;
        float *x = malloc(nx * sizeof(float)), *y = malloc(ny * sizeof(float));
        float *prod = malloc((size_t) n_vectors * n_rows * sizeof(float)), *ref = malloc(ny * sizeof(float));
        GpuBuffer *bx = NULL, *by = NULL;
        GpuTensor *t = NULL;
        GpuCmd *c = NULL;
        Weights w;

        weights_make(&w, type, n_rows, n_cols, seed);
        test_fill_random(x, nx, seed + 17);
        matvec_ref(&w, x, n_vectors, prod);
        for (uint32_t v = 0; v < n_vectors; v++)
                for (uint32_t i = 0; i < n_out; i++) {
                        double g = prod[(size_t) v * n_rows + i], u = prod[(size_t) v * n_rows + up_row + i];
                        ref[(size_t) v * n_out + i] = (float) (g / (1.0 + exp(-g)) * u);
                }

        GpuMatvecParams mp = base ? *base : (GpuMatvecParams) {};
        mp.swiglu_rows = n_out;
        mp.swiglu_up_row = up_row;
        assert_int_equal(gpu_tensor_upload_split(T.dev, type, n_cols, n_rows, w.data, 0, &t), 0);
        assert_int_equal(gpu_buffer_new(T.dev, nx * sizeof(float), GPU_MEMORY_DEVICE, &bx), 0);
        assert_int_equal(gpu_buffer_new(T.dev, ny * sizeof(float) + 64, GPU_MEMORY_DEVICE, &by), 0);
        assert_int_equal(gpu_buffer_write(bx, 0, x, nx * sizeof(float)), 0);
        float canary[16];
        for (int i = 0; i < 16; i++)
                canary[i] = 12345.0f;
        assert_int_equal(gpu_buffer_write(by, ny * sizeof(float), canary, sizeof canary), 0);

        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, (GpuBinding) { bx },
                                              (GpuBinding) { by, 0, ny * sizeof(float) }, n_vectors, &mp),
                         0);
        assert_int_equal(gpu_cmd_submit(c), 0);
        assert_int_equal(gpu_buffer_read(by, 0, y, ny * sizeof(float)), 0);
        float after[16];
        assert_int_equal(gpu_buffer_read(by, ny * sizeof(float), after, sizeof after), 0);
        assert_memory_equal(after, canary, sizeof canary);

        double e = test_nmse(y, ref, ny), bound = matvec_bound_params(type, n_cols, n_vectors, &mp);
        fprintf(stderr, "# matvec swiglu %-4s %5u(+%u) x %-5u nv %u%s: nmse %.3g (bound %.0e)\n",
                ggml_type_name(type), n_out, up_row, n_cols, n_vectors, base ? " gpu-like" : "", e, bound);
        assert_true(e < bound);

        gpu_cmd_free(c);
        gpu_buffer_free(bx);
        gpu_buffer_free(by);
        gpu_tensor_free(t);
        weights_free(&w);
        free(x);
        free(y);
        free(prod);
        free(ref);
}

static void test_matvec_swiglu(void **state) {
        /* This device's kernel and a GPU's (several subgroups, odd row counts for the pairs'
         * partial last group), one and several vectors, a gap before the up rows as the model's
         * aligned layout has. */
        GpuMatvecParams odd_rows = gpu_like_128;
        odd_rows.num_rows = 3;          /* made even: a pair is two rows */
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++) {
                GgmlType t = all_types[i];
                check_matvec_swiglu(t, 67, 67, 256, 1, 41, NULL);
                check_matvec_swiglu(t, 301, 320, 512, i % 2 ? 2 : 1, 42, &gpu_like_128);
                check_matvec_swiglu(t, 37, 40, 2 * block_cols(t), 3, 43, i % 2 ? &gpu_like_64 : &odd_rows);
        }
        check_matvec_swiglu(GGML_TYPE_F16, 29, 29, 36, 2, 44, NULL);   /* rows not 16-byte aligned */

        /* Bad pairs, and a split tensor: the caller's two-step path. */
        Weights w;
        GpuTensor *t = NULL, *split = NULL;
        GpuBuffer *b = NULL;
        GpuCmd *c = NULL;
        weights_make(&w, GGML_TYPE_Q8_0, 64, 64, 45);
        assert_int_equal(gpu_tensor_upload_split(T.dev, GGML_TYPE_Q8_0, 64, 64, w.data, 0, &t), 0);
        assert_int_equal(gpu_tensor_upload_split(T.dev, GGML_TYPE_Q8_0, 64, 64, w.data, 16, &split), 0);
        assert_int_equal(gpu_buffer_new(T.dev, 64 * 64 * 4, GPU_MEMORY_DEVICE, &b), 0);
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        GpuBinding bb = { b };
        assert_int_equal(gpu_op_matvec_swiglu(c, T.dev, t, bb, bb, 1, 0, 32), -EINVAL);
        assert_int_equal(gpu_op_matvec_swiglu(c, T.dev, t, bb, bb, 1, 32, 16), -EINVAL);   /* overlapping */
        assert_int_equal(gpu_op_matvec_swiglu(c, T.dev, t, bb, bb, 1, 32, 33), -EINVAL);   /* past the rows */
        assert_int_equal(gpu_op_matvec_swiglu(c, T.dev, split, bb, bb, 1, 32, 32), -EOPNOTSUPP);
        const GpuMatvecParams both = { .accumulate = true, .swiglu_rows = 32, .swiglu_up_row = 32 };
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, bb, bb, 1, &both), -EINVAL);
        assert_int_equal(gpu_op_matvec_swiglu(c, T.dev, t, bb, bb, 1, 32, 32), 0);
        gpu_cmd_free(c);
        gpu_buffer_free(b);
        gpu_tensor_free(t);
        gpu_tensor_free(split);
        weights_free(&w);
}

/*
 * The RMSNorm epilogue (gpu_op_matvec_add_norm()): y += W x, then
 * h = rmsnorm(y) * g, against double arithmetic. One recording submitted
 * three times (y growing each time), as decode passes are replayed: the
 * last-workgroup counter must come back to zero. Bounds: the matvec's for
 * y; for h the same plus the norm's sum order (F32).
 */
static void check_matvec_norm(GgmlType type, uint32_t n_rows, uint32_t n_cols, uint32_t n_vectors,
                              uint32_t max_rows, uint64_t seed, const GpuMatvecParams *base) {
        const float eps = 1e-5f;
        size_t nx = (size_t) n_vectors * n_cols, ny = (size_t) n_vectors * n_rows;
        float *x = malloc(nx * sizeof(float)), *y = malloc(ny * sizeof(float)), *h = malloc(ny * sizeof(float));
        float *prod = malloc(ny * sizeof(float)), *g = malloc(n_rows * sizeof(float));
        double *yref = malloc(ny * sizeof(double));
        float *ref = malloc(ny * sizeof(float)), *yref_f = malloc(ny * sizeof(float));
        GpuBuffer *bx = NULL, *by = NULL, *bg = NULL, *bh = NULL, *bs = NULL;
        GpuTensor *t = NULL;
        GpuCmd *c = NULL;
        Weights w;

        weights_make(&w, type, n_rows, n_cols, seed);
        test_fill_random(x, nx, seed + 17);
        test_fill_random(y, ny, seed + 29);
        test_fill_random(g, n_rows, seed + 31);
        matvec_ref(&w, x, n_vectors, prod);
        for (size_t i = 0; i < ny; i++)
                yref[i] = y[i];

        uint64_t scratch = gpu_matvec_norm_scratch_size(n_rows, n_vectors);
        assert_int_equal(gpu_tensor_upload_split(T.dev, type, n_cols, n_rows, w.data, max_rows, &t), 0);
        assert_int_equal(gpu_buffer_new(T.dev, nx * sizeof(float), GPU_MEMORY_DEVICE, &bx), 0);
        assert_int_equal(gpu_buffer_new(T.dev, ny * sizeof(float), GPU_MEMORY_DEVICE, &by), 0);
        assert_int_equal(gpu_buffer_new(T.dev, n_rows * sizeof(float), GPU_MEMORY_DEVICE, &bg), 0);
        assert_int_equal(gpu_buffer_new(T.dev, ny * sizeof(float), GPU_MEMORY_DEVICE, &bh), 0);
        assert_int_equal(gpu_buffer_new(T.dev, scratch, GPU_MEMORY_DEVICE, &bs), 0);
        uint8_t *zero = calloc(1, scratch);
        assert_int_equal(gpu_buffer_write(bs, 0, zero, scratch), 0);
        free(zero);
        assert_int_equal(gpu_buffer_write(bx, 0, x, nx * sizeof(float)), 0);
        assert_int_equal(gpu_buffer_write(by, 0, y, ny * sizeof(float)), 0);
        assert_int_equal(gpu_buffer_write(bg, 0, g, n_rows * sizeof(float)), 0);

        GpuMatvecNorm norm = { { bg }, { bh }, { bs }, eps };
        GpuMatvecParams mp = base ? *base : (GpuMatvecParams) {};
        mp.accumulate = true;
        mp.norm = &norm;
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, (GpuBinding) { bx }, (GpuBinding) { by }, n_vectors, &mp),
                         0);
        for (int run = 0; run < 3; run++) {
                assert_int_equal(gpu_cmd_submit(c), 0);
                for (uint32_t v = 0; v < n_vectors; v++) {
                        double ss = 0;
                        for (uint32_t k = 0; k < n_rows; k++) {
                                size_t i = (size_t) v * n_rows + k;
                                yref[i] += prod[i];
                                ss += yref[i] * yref[i];
                        }
                        double scale = 1.0 / sqrt(ss / n_rows + eps);
                        for (uint32_t k = 0; k < n_rows; k++) {
                                size_t i = (size_t) v * n_rows + k;
                                yref_f[i] = (float) yref[i];
                                ref[i] = (float) (yref[i] * scale * g[k]);
                        }
                }
                assert_int_equal(gpu_buffer_read(by, 0, y, ny * sizeof(float)), 0);
                assert_int_equal(gpu_buffer_read(bh, 0, h, ny * sizeof(float)), 0);
                double bound = matvec_bound_params(type, n_cols, n_vectors, &mp);
                double ey = test_nmse(y, yref_f, ny), eh = test_nmse(h, ref, ny);
                fprintf(stderr, "# matvec norm %-4s %5u x %-5u nv %u chunks %u%s run %d: nmse y %.3g h %.3g "
                        "(bound %.0e)\n", ggml_type_name(type), n_rows, n_cols, n_vectors, t->n_chunks,
                        base ? " gpu-like" : "", run, ey, eh, bound);
                assert_true(ey < bound);
                assert_true(eh < bound);
        }
        /* Left zeroed for the next op. */
        uint32_t counter = 1;
        assert_int_equal(gpu_buffer_read(bs, 0, &counter, sizeof counter), 0);
        assert_int_equal(counter, 0);

        gpu_cmd_free(c);
        gpu_buffer_free(bx);
        gpu_buffer_free(by);
        gpu_buffer_free(bg);
        gpu_buffer_free(bh);
        gpu_buffer_free(bs);
        gpu_tensor_free(t);
        weights_free(&w);
        free(x);
        free(y);
        free(h);
        free(prod);
        free(g);
        free(yref);
        free(yref_f);
        free(ref);
}

static void test_matvec_norm(void **state) {
        /* This device's kernel, a GPU's (several subgroups per workgroup), a capped grid whose
         * workgroups loop over row groups, split tensors (the count spans the chunks' dispatches),
         * many workgroups, and several vectors. */
        GpuMatvecParams capped = gpu_like_128;
        capped.max_groups = 5;
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++) {
                GgmlType t = all_types[i];
                check_matvec_norm(t, 67, 256, 1, 0, 51, NULL);
                check_matvec_norm(t, 300, 512, i % 2 ? 3 : 1, 64, 52, NULL);
                check_matvec_norm(t, 301, 2 * block_cols(t), 2, 0, 53, i % 2 ? &gpu_like_64 : &gpu_like_128);
                check_matvec_norm(t, 129, 256, 1, 0, 54, &capped);
        }
        check_matvec_norm(GGML_TYPE_Q8_0, 4099, 64, 8, 0, 55, NULL);
        check_matvec_norm(GGML_TYPE_F16, 29, 36, 2, 0, 56, NULL);     /* rows not 16-byte aligned */

        /* Bad input: no residual add, SwiGLU pairs, scratch too small, a negative eps. */
        Weights w;
        GpuTensor *t = NULL;
        GpuBuffer *b = NULL;
        GpuCmd *c = NULL;
        weights_make(&w, GGML_TYPE_Q8_0, 64, 64, 57);
        assert_int_equal(gpu_tensor_upload_split(T.dev, GGML_TYPE_Q8_0, 64, 64, w.data, 0, &t), 0);
        assert_int_equal(gpu_buffer_new(T.dev, 64 * 64 * 4, GPU_MEMORY_DEVICE, &b), 0);
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        GpuBinding bb = { b };
        GpuMatvecNorm norm = { bb, bb, bb, 1e-5f };
        GpuMatvecParams no_add = { .norm = &norm };
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, bb, bb, 1, &no_add), -EINVAL);
        GpuMatvecParams pairs = { .accumulate = true, .norm = &norm, .swiglu_rows = 32, .swiglu_up_row = 32 };
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, bb, bb, 1, &pairs), -EINVAL);
        norm.scratch.range = gpu_matvec_norm_scratch_size(64, 1) - 4;
        assert_int_equal(gpu_op_matvec_add_norm(c, T.dev, t, bb, bb, 1, &norm), -EINVAL);
        norm.scratch.range = 0;
        norm.eps = -1;
        assert_int_equal(gpu_op_matvec_add_norm(c, T.dev, t, bb, bb, 1, &norm), -EINVAL);
        assert_int_equal(gpu_op_matvec_add_norm(c, T.dev, t, bb, bb, 1, NULL), -EINVAL);
        gpu_cmd_free(c);
        gpu_buffer_free(b);
        gpu_tensor_free(t);
        weights_free(&w);
}

/*
 * The Q/K/V epilogue (gpu_op_matvec_qkv()) against the ops it replaces on
 * the same device (matvec, bias add, rope_kv_store), and q against the C
 * references (matvec products, ref_rope). The fused pass must not touch
 * y's k and v rows or cache positions other than the vectors'. Bounds: q
 * NMSE 1e-12 against the separate ops (same sums, same rotation) and the
 * matvec's bound against C; cache entries within one F16 ulp.
 */
#define QKV_POISON 0x7e007e00u  /* two F16 quiet NaNs; as F32 a NaN too */

static void check_matvec_qkv(GgmlType type, GpuRopeMode mode, uint32_t n_head, uint32_t n_head_kv, uint32_t hd,
                             uint32_t n_rot, uint32_t n_cols, const int32_t *pos, uint32_t n_vectors, bool bias,
                             bool factors, uint64_t seed, const GpuMatvecParams *base) {
        const uint32_t n_ctx = 40, n_q = n_head * hd, n_kv = n_head_kv * hd;
        const uint32_t k_row = (n_q + 63) / 64 * 64, v_row = (k_row + n_kv + 63) / 64 * 64, n_rows = v_row + n_kv + 6;
        const size_t nx = (size_t) n_vectors * n_cols, ny = (size_t) n_vectors * n_rows;
        const size_t cache_n = (size_t) n_kv * n_ctx;
        float *x = malloc(nx * sizeof(float)), *b = malloc(n_rows * sizeof(float)), *inv = malloc(hd * sizeof(float));
        float *y = malloc(ny * sizeof(float)), *y2 = malloc(ny * sizeof(float)), *prod = malloc(ny * sizeof(float));
        uint16_t *kc = malloc(2 * cache_n), *vc = malloc(2 * cache_n);
        uint16_t *kc2 = malloc(2 * cache_n), *vc2 = malloc(2 * cache_n);
        Weights w;
        assert_true(x && b && inv && y && y2 && prod && kc && vc && kc2 && vc2);

        weights_make(&w, type, n_rows, n_cols, seed);
        test_fill_random(x, nx, seed + 17);
        test_fill_random(b, n_rows, seed + 19);
        test_rope_factors_inv(inv, n_rot / 2, seed);

        GpuTensor *t = NULL;
        GpuBuffer *bx, *by, *by2, *bb, *bf, *bp, *bkc, *bvc, *bkc2, *bvc2;
        GpuCmd *c = NULL;
        assert_int_equal(gpu_tensor_upload_split(T.dev, type, n_cols, n_rows, w.data, 0, &t), 0);
        GpuBuffer **bufs[] = { &bx, &by, &by2, &bb, &bf, &bp, &bkc, &bvc, &bkc2, &bvc2 };
        uint64_t sizes[] = { nx * 4, ny * 4, ny * 4, n_rows * 4, hd * 4, n_vectors * 4, 2 * cache_n, 2 * cache_n,
                             2 * cache_n, 2 * cache_n };
        for (size_t i = 0; i < ELEMENTSOF(bufs); i++)
                assert_int_equal(gpu_buffer_new(T.dev, sizes[i], GPU_MEMORY_DEVICE, bufs[i]), 0);
        assert_int_equal(gpu_buffer_write(bx, 0, x, nx * 4), 0);
        assert_int_equal(gpu_buffer_write(bb, 0, b, n_rows * 4), 0);
        assert_int_equal(gpu_buffer_write(bf, 0, inv, n_rot / 2 * 4), 0);
        assert_int_equal(gpu_buffer_write(bp, 0, pos, n_vectors * 4), 0);

        GpuMatvecQkv qkv = {
                .n_head = n_head, .n_head_kv = n_head_kv, .head_dim = hd, .n_rot = n_rot,
                .k_row = k_row, .v_row = v_row, .mode = mode,
                .freq_base = 10000.0f, .freq_scale = 0.5f,
                .freq_factors_inv = factors ? (GpuBinding) { bf } : (GpuBinding) {},
                .pos = { bp }, .k_cache = { bkc }, .v_cache = { bvc }, .n_ctx = n_ctx,
                .bias = bias ? (GpuBinding) { bb } : (GpuBinding) {},
        };
        GpuMatvecParams mp = base ? *base : (GpuMatvecParams) {};
        mp.qkv = &qkv;
        GpuMatvecParams plain = base ? *base : (GpuMatvecParams) {};
        /* The separate ops, as the model ran them: q | k | v rows of y2, rotated and stored. */
        GpuRope rope = {
                .n_tokens = n_vectors, .n_heads = n_head, .head_dim = hd, .n_rot = n_rot, .mode = mode,
                .freq_base = 10000.0f, .freq_scale = 0.5f,
                .freq_factors_inv = qkv.freq_factors_inv, .x_stride = n_rows, .out_stride = n_rows,
        };
        GpuAttentionParams ap = {
                .n_tokens = n_vectors, .n_head = n_head, .n_head_kv = n_head_kv, .head_dim = hd, .n_ctx = n_ctx,
                .q_stride = n_rows, .kv_stride = n_rows, .pos_buffer = { bp },
        };

        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        GpuBuffer *poisoned[] = { by, by2, bkc, bvc, bkc2, bvc2 };
        for (size_t i = 0; i < ELEMENTSOF(poisoned); i++)
                gpu_cmd_fill(c, poisoned[i], 0, gpu_buffer_size(poisoned[i]), QKV_POISON);
        gpu_cmd_barrier(c);
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, (GpuBinding) { bx }, (GpuBinding) { by }, n_vectors, &mp),
                         0);
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, (GpuBinding) { bx }, (GpuBinding) { by2 }, n_vectors,
                                              &plain),
                         0);
        gpu_cmd_barrier(c);
        if (bias) {
                assert_int_equal(gpu_op_add(c, T.dev, (GpuBinding) { by2 }, (GpuBinding) { bb }, (GpuBinding) { by2 },
                                            n_vectors, n_rows, true),
                                 0);
                gpu_cmd_barrier(c);
        }
        assert_int_equal(gpu_op_rope_kv_store(c, T.dev, (GpuBinding) { by2 }, (GpuBinding) { by2, k_row * 4, 0 },
                                              (GpuBinding) { by2, v_row * 4, 0 }, (GpuBinding) { bkc2 },
                                              (GpuBinding) { bvc2 }, &rope, &ap),
                         0);
        assert_int_equal(gpu_cmd_submit(c), 0);
        assert_int_equal(gpu_buffer_read(by, 0, y, ny * 4), 0);
        assert_int_equal(gpu_buffer_read(by2, 0, y2, ny * 4), 0);
        assert_int_equal(gpu_buffer_read(bkc, 0, kc, 2 * cache_n), 0);
        assert_int_equal(gpu_buffer_read(bvc, 0, vc, 2 * cache_n), 0);
        assert_int_equal(gpu_buffer_read(bkc2, 0, kc2, 2 * cache_n), 0);
        assert_int_equal(gpu_buffer_read(bvc2, 0, vc2, 2 * cache_n), 0);

        /* q: against the separate ops, and against C: products (+ bias) rotated by ref_rope. */
        float *qf = malloc((size_t) n_vectors * n_q * 4), *qs = malloc((size_t) n_vectors * n_q * 4);
        float *qr = malloc((size_t) n_vectors * n_q * 4);
        matvec_ref(&w, x, n_vectors, prod);
        for (uint32_t v = 0; v < n_vectors; v++)
                for (uint32_t i = 0; i < n_q; i++) {
                        qf[v * n_q + i] = y[v * n_rows + i];
                        qs[v * n_q + i] = y2[v * n_rows + i];
                        qr[v * n_q + i] = prod[v * n_rows + i] + (bias ? b[i] : 0.0f);
                }
        GpuRope rq = rope;
        rq.x_stride = rq.out_stride = 0;
        ref_rope(qr, pos, factors ? inv : NULL, qr, &rq);
        double e_sep = test_nmse(qf, qs, (size_t) n_vectors * n_q), e_ref = test_nmse(qf, qr, (size_t) n_vectors * n_q);
        double bound = matvec_bound_params(type, n_cols, n_vectors, &plain);
        fprintf(stderr, "# matvec qkv %-4s %s %u/%u heads x %u rot %u, %u vectors%s%s%s: q nmse %.3g (separate ops), "
                "%.3g (C; bound %.0e)\n", ggml_type_name(type), mode == GPU_ROPE_NEOX ? "neox" : "norm", n_head,
                n_head_kv, hd, n_rot, n_vectors,
                bias ? ", bias" : "", factors ? ", factors" : "", base ? ", gpu-like" : "", e_sep, e_ref, bound);
        assert_true(e_sep < 1e-12);
        assert_true(e_ref < bound);
        /* k and v rows of y (and the padding) are not written. */
        for (uint32_t v = 0; v < n_vectors; v++)
                for (uint32_t i = n_q; i < n_rows; i++) {
                        uint32_t bits;
                        memcpy(&bits, &y[v * n_rows + i], 4);
                        if (bits != QKV_POISON)
                                fail_msg("y[%u][%u] was written (k or v row, or padding)", v, i);
                }
        /* The caches: the separate ops' entries within an F16 ulp; untouched where they are. */
        for (size_t i = 0; i < cache_n; i++) {
                int dk = abs((int) kc[i] - (int) kc2[i]), dv = abs((int) vc[i] - (int) vc2[i]);
                if (dk > 1 || dv > 1)
                        fail_msg("cache[%zu]: k %04x (separate %04x), v %04x (separate %04x)", i, kc[i], kc2[i], vc[i],
                                 vc2[i]);
        }
        bool any_stored = false;
        for (size_t i = 0; i < cache_n; i++)
                any_stored = any_stored || kc[i] != (uint16_t) QKV_POISON;
        assert_true(any_stored);

        free(qf);
        free(qs);
        free(qr);
        gpu_cmd_free(c);
        for (size_t i = 0; i < ELEMENTSOF(bufs); i++)
                gpu_buffer_free(*bufs[i]);
        gpu_tensor_free(t);
        weights_free(&w);
        free(x);
        free(b);
        free(inv);
        free(y);
        free(y2);
        free(prod);
        free(kc);
        free(vc);
        free(kc2);
        free(vc2);
}

static void test_matvec_qkv(void **state) {
        /* One vector (decode) and small batches with a position out of range, GQA, partial
         * rotation, bias and factors, this device's kernel and a GPU's. */
        static const int32_t one[] = { 17 }, some[] = { 3, 39, 40, -1, 0 };
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++) {
                GgmlType t = all_types[i];
                const GpuRopeMode m = i % 2 ? GPU_ROPE_NEOX : GPU_ROPE_NORMAL, o = i % 2 ? GPU_ROPE_NORMAL : GPU_ROPE_NEOX;
                check_matvec_qkv(t, m, 4, 2, 16, 16, 256, one, 1, false, false, 61, NULL);
                check_matvec_qkv(t, o, 6, 2, 32, 16, 256, some, ELEMENTSOF(some), i % 2, !(i % 2), 62, NULL);
                check_matvec_qkv(t, m, 4, 4, 64, 64, 512, one, 1, true, true, 63, i % 2 ? &gpu_like_64 : &gpu_like_128);
                check_matvec_qkv(t, o, 2, 1, 64, 32, 256, some, 3, true, false, 64, i % 2 ? &gpu_like_128 : NULL);
        }

        /* NeoX with n_rot not a multiple of 4, or a tensor in several chunks: the separate ops. Bad shapes:
         * -EINVAL. */
        Weights w;
        GpuTensor *t = NULL, *split = NULL;
        GpuBuffer *b = NULL;
        GpuCmd *c = NULL;
        weights_make(&w, GGML_TYPE_Q8_0, 256, 64, 64);
        assert_int_equal(gpu_tensor_upload_split(T.dev, GGML_TYPE_Q8_0, 64, 256, w.data, 0, &t), 0);
        assert_int_equal(gpu_tensor_upload_split(T.dev, GGML_TYPE_Q8_0, 64, 256, w.data, 64, &split), 0);
        assert_int_equal(gpu_buffer_new(T.dev, 1 << 16, GPU_MEMORY_DEVICE, &b), 0);
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        GpuBinding bb = { b };
        GpuMatvecQkv q = { .n_head = 4, .n_head_kv = 2, .head_dim = 16, .n_rot = 16, .k_row = 64, .v_row = 128,
                           .mode = GPU_ROPE_NORMAL, .freq_base = 10000.0f, .freq_scale = 1.0f, .pos = bb,
                           .k_cache = bb, .v_cache = bb, .n_ctx = 64 };
        assert_int_equal(gpu_op_matvec_qkv(c, T.dev, t, bb, bb, 1, &q), 0);
        assert_int_equal(gpu_op_matvec_qkv(c, T.dev, split, bb, bb, 1, &q), -EOPNOTSUPP);
        q.mode = GPU_ROPE_NEOX;
        assert_int_equal(gpu_op_matvec_qkv(c, T.dev, t, bb, bb, 1, &q), 0);
        q.n_rot = 14;
        assert_int_equal(gpu_op_matvec_qkv(c, T.dev, t, bb, bb, 1, &q), -EOPNOTSUPP);
        q.mode = GPU_ROPE_NORMAL;
        assert_int_equal(gpu_op_matvec_qkv(c, T.dev, t, bb, bb, 1, &q), 0);
        q.n_rot = 16;
        q.k_row = 32;                   /* overlaps q */
        assert_int_equal(gpu_op_matvec_qkv(c, T.dev, t, bb, bb, 1, &q), -EINVAL);
        q.k_row = 64;
        q.v_row = 250;                  /* past the rows */
        assert_int_equal(gpu_op_matvec_qkv(c, T.dev, t, bb, bb, 1, &q), -EINVAL);
        q.v_row = 128;
        q.n_rot = 18;                   /* more than the head */
        assert_int_equal(gpu_op_matvec_qkv(c, T.dev, t, bb, bb, 1, &q), -EINVAL);
        q.n_rot = 16;
        q.k_cache.range = 64 * 2 * 32 - 2;      /* a cache too small for n_ctx */
        assert_int_equal(gpu_op_matvec_qkv(c, T.dev, t, bb, bb, 1, &q), -EINVAL);
        q.k_cache.range = 0;
        GpuMatvecParams both = { .accumulate = true, .qkv = &q };
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, bb, bb, 1, &both), -EINVAL);
        assert_int_equal(gpu_op_matvec_qkv(c, T.dev, t, bb, bb, 1, NULL), -EINVAL);
        gpu_cmd_free(c);
        gpu_buffer_free(b);
        gpu_tensor_free(t);
        gpu_tensor_free(split);
        weights_free(&w);
}

static void test_matvec_auto_split(void **state) {
        /* Larger than one storage buffer on devices like lavapipe (128 MiB): chunked by the caps. */
        const GpuCaps *caps = gpu_device_caps(T.dev);
        const uint32_t n_cols = 1024;
        uint64_t limit = MIN(caps->max_storage_buffer_range, caps->max_allocation);
        if (limit > (256ULL << 20)) {
                skip();
                return;
        }
        uint32_t n_rows = (uint32_t) (limit / (n_cols * sizeof(float))) + 1000;
        size_t n = (size_t) n_rows * n_cols;
        float *wdata = malloc(n * sizeof(float)), *x = malloc(n_cols * sizeof(float));
        float *y = malloc(n_rows * sizeof(float)), *ref = malloc(n_rows * sizeof(float));
        GpuBuffer *bx = NULL, *by = NULL;
        GpuTensor *t = NULL;
        GpuCmd *c = NULL;

        test_fill_random(wdata, n, 21);
        test_fill_random(x, n_cols, 22);
        for (uint32_t r = 0; r < n_rows; r++) {
                double s = 0;
                for (uint32_t k = 0; k < n_cols; k++)
                        s += (double) wdata[(size_t) r * n_cols + k] * x[k];
                ref[r] = (float) s;
        }
        assert_int_equal(gpu_tensor_upload(T.dev, GGML_TYPE_F32, n_cols, n_rows, wdata, &t), 0);
        assert_true(t->n_chunks >= 2);
        for (uint32_t i = 0; i < t->n_chunks; i++)
                assert_true(gpu_buffer_size(t->chunks[i].buffer) <= limit);
        assert_int_equal(gpu_buffer_new(T.dev, n_cols * sizeof(float), GPU_MEMORY_DEVICE, &bx), 0);
        assert_int_equal(gpu_buffer_new(T.dev, n_rows * sizeof(float), GPU_MEMORY_DEVICE, &by), 0);
        assert_int_equal(gpu_buffer_write(bx, 0, x, n_cols * sizeof(float)), 0);
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        assert_int_equal(gpu_op_matvec(c, T.dev, t, (GpuBinding) { bx, 0, 0 }, (GpuBinding) { by, 0, 0 }, 1), 0);
        assert_int_equal(gpu_cmd_submit(c), 0);
        assert_int_equal(gpu_buffer_read(by, 0, y, n_rows * sizeof(float)), 0);
        double e = test_nmse(y, ref, n_rows);
        fprintf(stderr, "# matvec F32 %u x %u in %u chunks: nmse %.3g\n", n_rows, n_cols, t->n_chunks, e);
        assert_true(e < 1e-10);
        gpu_cmd_free(c);
        gpu_buffer_free(bx);
        gpu_buffer_free(by);
        gpu_tensor_free(t);
        free(wdata);
        free(x);
        free(y);
        free(ref);
}

/* With norm: gpu_op_embed(), h checked against RMSNorm of the reference rows in double (1e-12; the rows of
 * ids past the end are zeros, and so is their norm), and the positions copied (once, with any number of
 * chunks). */
static void check_get_rows(GgmlType type, uint32_t n_rows, uint32_t n_cols, uint32_t max_rows, uint64_t seed,
                           bool norm) {
        const uint32_t n_ids = 23;
        const float eps = 1e-5f;
        uint32_t ids[23];
        size_t n_out = (size_t) n_ids * n_cols;
        float *out = malloc(n_out * sizeof(float)), *ref = calloc(n_out, sizeof(float));
        float *h = malloc(n_out * sizeof(float)), *href = malloc(n_out * sizeof(float));
        float *g = malloc(n_cols * sizeof(float));
        GpuBuffer *bi = NULL, *bo = NULL, *bh = NULL, *bg = NULL;
        GpuTensor *t = NULL;
        GpuCmd *c = NULL;
        Weights w;

        weights_make(&w, type, n_rows, n_cols, seed);
        for (uint32_t i = 0; i < n_ids; i++) {
                /* Spread over the chunks, with repeats, the last row, and two ids past the end. */
                ids[i] = i == 5 ? n_rows - 1 : i == 9 ? n_rows : i == 14 ? UINT32_MAX : (i * 37 + 3) % n_rows;
                if (ids[i] < n_rows)
                        memcpy(ref + (size_t) i * n_cols, w.deq + (size_t) ids[i] * n_cols, n_cols * sizeof(float));
        }
        assert_int_equal(gpu_tensor_upload_split(T.dev, type, n_cols, n_rows, w.data, max_rows, &t), 0);
        assert_int_equal(gpu_buffer_new(T.dev, sizeof ids, GPU_MEMORY_DEVICE, &bi), 0);
        assert_int_equal(gpu_buffer_new(T.dev, n_out * sizeof(float), GPU_MEMORY_DEVICE, &bo), 0);
        assert_int_equal(gpu_buffer_write(bi, 0, ids, sizeof ids), 0);
        /* Garbage first: rows for ids past the end must come back as zeros. */
        for (size_t i = 0; i < n_out; i++)
                out[i] = 777.0f;
        assert_int_equal(gpu_buffer_write(bo, 0, out, n_out * sizeof(float)), 0);
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        test_fill_random(g, n_cols, seed + 5);
        assert_int_equal(gpu_buffer_new(T.dev, n_out * sizeof(float), GPU_MEMORY_DEVICE, &bh), 0);
        assert_int_equal(gpu_buffer_new(T.dev, n_cols * sizeof(float), GPU_MEMORY_DEVICE, &bg), 0);
        assert_int_equal(gpu_buffer_write(bg, 0, g, n_cols * sizeof(float)), 0);
        int32_t pos[23], pos_got[23];
        for (uint32_t i = 0; i < n_ids; i++)
                pos[i] = (int32_t) (i * 1000 + seed) - 5000;
        GpuBuffer *bpi = NULL, *bpo = NULL;
        assert_int_equal(gpu_buffer_new(T.dev, sizeof pos, GPU_MEMORY_DEVICE, &bpi), 0);
        assert_int_equal(gpu_buffer_new(T.dev, sizeof pos, GPU_MEMORY_DEVICE, &bpo), 0);
        assert_int_equal(gpu_buffer_write(bpi, 0, pos, sizeof pos), 0);
        assert_int_equal(gpu_buffer_fill(bpo, 0, sizeof pos, 0xdeadbeefu), 0);
        const GpuEmbed embed = { { bg }, { bh }, eps, { bpi }, { bpo } };
        if (norm)
                assert_int_equal(gpu_op_embed(c, T.dev, t, (GpuBinding) { bi }, (GpuBinding) { bo }, n_ids, &embed),
                                 0);
        else
                assert_int_equal(gpu_op_get_rows(c, T.dev, t, (GpuBinding) { bi }, (GpuBinding) { bo }, n_ids), 0);
        assert_int_equal(gpu_cmd_submit(c), 0);
        assert_int_equal(gpu_buffer_read(bo, 0, out, n_out * sizeof(float)), 0);
        double e = test_nmse(out, ref, n_out);
        fprintf(stderr, "# get_rows %-4s %u x %u chunks %u%s: nmse %.3g\n", ggml_type_name(type), n_rows, n_cols,
                t->n_chunks, norm ? " norm" : "", e);
        assert_true(e < 1e-12);
        if (norm) {
                for (uint32_t i = 0; i < n_ids; i++) {
                        double ss = 0;
                        for (uint32_t k = 0; k < n_cols; k++)
                                ss += (double) ref[(size_t) i * n_cols + k] * ref[(size_t) i * n_cols + k];
                        double scale = 1.0 / sqrt(ss / n_cols + eps);
                        for (uint32_t k = 0; k < n_cols; k++)
                                href[(size_t) i * n_cols + k] = (float) (ref[(size_t) i * n_cols + k] * scale * g[k]);
                }
                assert_int_equal(gpu_buffer_read(bh, 0, h, n_out * sizeof(float)), 0);
                double eh = test_nmse(h, href, n_out);
                fprintf(stderr, "# ... its norm: nmse %.3g\n", eh);
                assert_true(eh < 1e-12);
                assert_int_equal(gpu_buffer_read(bpo, 0, pos_got, sizeof pos_got), 0);
                assert_memory_equal(pos_got, pos, sizeof pos);
        }
        gpu_buffer_free(bpi);
        gpu_buffer_free(bpo);
        for (uint32_t k = 0; k < n_cols; k++) {
                assert_true(out[9 * n_cols + k] == 0.0f);
                assert_true(out[14 * n_cols + k] == 0.0f);
        }
        gpu_cmd_free(c);
        gpu_buffer_free(bi);
        gpu_buffer_free(bo);
        gpu_buffer_free(bh);
        gpu_buffer_free(bg);
        gpu_tensor_free(t);
        weights_free(&w);
        free(out);
        free(ref);
        free(h);
        free(href);
        free(g);
}

static void test_get_rows(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++) {
                check_get_rows(all_types[i], 67, 512, 0, 30, i % 2);
                check_get_rows(all_types[i], 67, 256, 10, 31, !(i % 2));   /* split */
        }
        check_get_rows(GGML_TYPE_F32, 41, 37, 0, 32, false);
        check_get_rows(GGML_TYPE_F32, 41, 37, 0, 32, true);
        check_get_rows(GGML_TYPE_F16, 41, 37, 6, 33, true);
        check_get_rows(GGML_TYPE_F16, 41, 1030, 0, 34, false);
        check_get_rows(GGML_TYPE_F16, 41, 1030, 0, 34, true);
}

static void test_layout(void **state) {
        /* The contract of tensor.h: region offsets and sizes per chunk. */
        Weights w;
        GpuTensor *t = NULL;
        uint64_t qs, d;

        weights_make(&w, GGML_TYPE_Q8_0, 100, 96, 40);
        assert_int_equal(gpu_tensor_upload_split(T.dev, GGML_TYPE_Q8_0, 96, 100, w.data, 30, &t), 0);
        assert_int_equal(t->n_chunks, 4);
        assert_int_equal(gpu_tensor_row_layout(GGML_TYPE_Q8_0, 96, &qs, &d), 0);
        assert_int_equal(qs, 96);
        assert_int_equal(d, 6);
        for (uint32_t i = 0; i < 4; i++) {
                const GpuTensorChunk *ch = &t->chunks[i];
                uint8_t buf[30 * 96];
                uint16_t dd[30 * 3];
                assert_int_equal(ch->row0, i * 30);
                assert_int_equal(ch->n_rows, i < 3 ? 30 : 10);
                assert_int_equal(ch->qs_offset, 0);
                assert_int_equal(ch->d_offset % 256, 0);
                assert_true(ch->d_offset >= ch->n_rows * 96ULL);
                assert_int_equal(gpu_buffer_read(ch->buffer, 0, buf, ch->n_rows * 96ULL), 0);
                assert_int_equal(gpu_buffer_read(ch->buffer, ch->d_offset, dd, ch->n_rows * 6ULL), 0);
                const BlockQ8_0 *b = (const BlockQ8_0 *) w.data + (size_t) ch->row0 * 3;
                for (uint32_t j = 0; j < ch->n_rows * 3; j++) {
                        assert_memory_equal(buf + 32 * j, b[j].qs, 32);
                        assert_int_equal(dd[j], b[j].d);
                }
        }
        gpu_tensor_free(t);
        weights_free(&w);

        assert_int_equal(gpu_tensor_row_layout(GGML_TYPE_Q4_K, 512, &qs, &d), 0);
        assert_int_equal(qs, 288);
        assert_int_equal(d, 0);
        assert_int_equal(gpu_tensor_row_layout(GGML_TYPE_Q6_K, 512, &qs, &d), 0);
        assert_int_equal(qs, 416);
        assert_int_equal(d, 4);
}

static void test_bad_input(void **state) {
        uint8_t data[4096] = {};
        GpuTensor *t = NULL;
        GpuBuffer *b = NULL;
        GpuCmd *c = NULL;

        /* K not a multiple of the block size. */
        assert_int_equal(gpu_tensor_upload(T.dev, GGML_TYPE_Q8_0, 48, 2, data, &t), -EINVAL);
        assert_int_equal(gpu_tensor_upload(T.dev, GGML_TYPE_Q4_0, 16, 2, data, &t), -EINVAL);
        assert_int_equal(gpu_tensor_upload(T.dev, GGML_TYPE_Q4_K, 288, 2, data, &t), -EINVAL);
        assert_int_equal(gpu_tensor_upload(T.dev, GGML_TYPE_Q6_K, 128, 2, data, &t), -EINVAL);
        assert_int_equal(gpu_tensor_upload(T.dev, GGML_TYPE_F32, 0, 2, data, &t), -EINVAL);
        /* Types the engine does not run. */
        assert_int_equal(gpu_tensor_upload(T.dev, GGML_TYPE_Q4_1, 32, 2, data, &t), -EINVAL);
        assert_int_equal(gpu_tensor_upload(T.dev, GGML_TYPE_Q8_K, 256, 2, data, &t), -EINVAL);
        assert_int_equal(gpu_tensor_upload(T.dev, GGML_TYPE_BF16, 32, 2, data, &t), -EINVAL);
        assert_int_equal(gpu_tensor_upload(T.dev, (GgmlType) 99, 32, 2, data, &t), -EINVAL);
        assert_null(t);

        assert_int_equal(gpu_tensor_upload(T.dev, GGML_TYPE_Q8_0, 64, 4, data, &t), 0);
        assert_int_equal(gpu_buffer_new(T.dev, 4096, GPU_MEMORY_DEVICE, &b), 0);
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        GpuBinding whole = { b, 0, 0 };
        assert_int_equal(gpu_op_matvec(c, T.dev, t, whole, whole, 0), -EINVAL);
        assert_int_equal(gpu_op_matvec(c, T.dev, t, whole, whole, GPU_MATVEC_MAX_VECTORS + 1), -EINVAL);
        /* Bindings too small for the shapes. */
        assert_int_equal(gpu_op_matvec(c, T.dev, t, (GpuBinding) { b, 0, 64 * 4 - 4 }, whole, 1), -EINVAL);
        assert_int_equal(gpu_op_matvec(c, T.dev, t, whole, (GpuBinding) { b, 0, 12 }, 1), -EINVAL);
        assert_int_equal(gpu_op_get_rows(c, T.dev, t, (GpuBinding) { b, 0, 8 }, whole, 3), -EINVAL);
        assert_int_equal(gpu_op_get_rows(c, T.dev, t, whole, (GpuBinding) { b, 0, 64 * 4 * 3 - 4 }, 3), -EINVAL);
        GpuMatvecParams bad = { .block_size = 48 };
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, whole, whole, 1, &bad), -EINVAL);
        bad = (GpuMatvecParams) { .dequant = GPU_MATVEC_DEQUANT_DOT + 1 };
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, whole, whole, 1, &bad), -EINVAL);
        bad = (GpuMatvecParams) { .num_units = 5 };
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, whole, whole, 1, &bad), -EINVAL);
        bad = (GpuMatvecParams) { .units = GPU_MATVEC_UNITS_ROW + 1 };
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, whole, whole, 1, &bad), -EINVAL);
        bad = (GpuMatvecParams) { .pipeline = 3 };
        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, whole, whole, 1, &bad), -EINVAL);
        /* Nothing bad was recorded. */
        assert_int_equal(gpu_op_matvec(c, T.dev, t, whole, whole, 1), 0);
        assert_int_equal(gpu_cmd_submit(c), 0);
        gpu_cmd_free(c);
        gpu_buffer_free(b);
        gpu_tensor_free(t);
}

/* Runs y = W x once for a Q4_0 tensor of n_rows x n_cols with these parameters; returns the op's result. */
static int run_q4_0(uint32_t n_rows, uint32_t n_cols, const float *x, float *y, const GpuMatvecParams *mp) {
        GpuTensor *t = NULL;
        GpuBuffer *bx = NULL, *by = NULL;
        GpuCmd *c = NULL;
        Weights w;
        int r;

        weights_make(&w, GGML_TYPE_Q4_0, n_rows, n_cols, 80);
        assert_int_equal(gpu_tensor_upload(T.dev, GGML_TYPE_Q4_0, n_cols, n_rows, w.data, &t), 0);
        assert_int_equal(gpu_buffer_new(T.dev, (uint64_t) n_cols * 4, GPU_MEMORY_DEVICE, &bx), 0);
        assert_int_equal(gpu_buffer_new(T.dev, (uint64_t) n_rows * 4, GPU_MEMORY_DEVICE, &by), 0);
        if (x)
                assert_int_equal(gpu_buffer_write(bx, 0, x, (uint64_t) n_cols * 4), 0);
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        r = gpu_op_matvec_params(c, T.dev, t, (GpuBinding) { bx, 0, 0 }, (GpuBinding) { by, 0, 0 }, 1, mp);
        if (r == 0) {
                assert_int_equal(gpu_cmd_submit(c), 0);
                if (y)
                        assert_int_equal(gpu_buffer_read(by, 0, y, (uint64_t) n_rows * 4), 0);
        }
        gpu_cmd_free(c);
        gpu_buffer_free(bx);
        gpu_buffer_free(by);
        gpu_tensor_free(t);
        weights_free(&w);
        return r;
}

static void test_matvec_f16math(void **state) {
        /* Packed f16 arithmetic, every quantised type (F32/F16 ignore it): the defaults, then
         * discrete-GPU-like knobs (several subgroups, word units, pipelining, a capped grid),
         * over several chunks, with long rows (many blocks per row) and several vectors. */
        static const GpuMatvecParams h_default = { .dequant = GPU_MATVEC_DEQUANT_F16MATH };
        static const GpuMatvecParams h_128 = { 128, 4, GPU_MATVEC_DEQUANT_F16MATH, 2, GPU_MATVEC_UNITS_WIDE, 16 };
        static const GpuMatvecParams h_64 = { 64, 4, GPU_MATVEC_DEQUANT_F16MATH, 1, GPU_MATVEC_UNITS_WORD, 7,
                                              GPU_MATVEC_PIPELINE_ON };

        if (!gpu_device_caps(T.dev)->fp16) {
                assert_int_equal(run_q4_0(4, 64, NULL, NULL, &h_default), -EOPNOTSUPP);
                skip();
        }
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++) {
                if (!is_quant(all_types[i]))
                        continue;
                check_matvec_params(all_types[i], 67, 256, 1, 0, false, 60, &h_default);
                check_matvec_params(all_types[i], 45, 2048, 3, 16, true, 61, &h_128);
                check_matvec_params(all_types[i], 37, 4096, 1, 0, false, 62, &h_64);
        }
}

static void test_matvec_dot(void **state) {
        /* Integer dot products, every quantised type (F32/F16 ignore the choice): the defaults,
         * 8-bit x, a GPU's workgroups looping over row groups, several subgroups, software
         * pipelining, chunks, long rows and several vectors. The epilogues (SwiGLU, RMSNorm,
         * Q/K/V) run in weights-dot, which runs this whole file with INFERD_GPU_INT_DOT=1. */
        static const GpuMatvecParams d_default = { .dequant = GPU_MATVEC_DEQUANT_DOT };
        static const GpuMatvecParams d_8bit = { .dequant = GPU_MATVEC_DEQUANT_DOT, .int_digits = 1 };
        static const GpuMatvecParams d_128 = { 128, 8, GPU_MATVEC_DEQUANT_DOT, 1, GPU_MATVEC_UNITS_WIDE, 0,
                                               .group_loops = 3 };
        static const GpuMatvecParams d_32 = { 32, 3, GPU_MATVEC_DEQUANT_DOT, 2, GPU_MATVEC_UNITS_WIDE, 5,
                                              GPU_MATVEC_PIPELINE_ON, .group_loops = 2 };

        if (!gpu_device_caps(T.dev)->int_dot) {
                assert_int_equal(run_q4_0(4, 64, NULL, NULL, &d_default), -EOPNOTSUPP);
                skip();
        }
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++) {
                check_matvec_params(all_types[i], 67, 256, 1, 0, false, 70, &d_default);
                check_matvec_params(all_types[i], 45, 2048, 3, 16, true, 71, &d_128);
                check_matvec_params(all_types[i], 37, 4096, 2, 0, false, 72, &d_32);
                check_matvec_params(all_types[i], 29, 512, 1, 0, false, 73, &d_8bit);
        }

        /* A NaN or an infinity in x gives NaN, as float arithmetic would, not a finite number. */
        float x[256], y[8];
        for (int k = 0; k < 3; k++) {
                test_fill_random(x, 256, 81);
                x[100] = k == 0 ? NAN : k == 1 ? INFINITY : -INFINITY;
                assert_int_equal(run_q4_0(8, 256, x, y, &d_default), 0);
                for (int r = 0; r < 8; r++)
                        assert_true(isnan(y[r]));
        }
        /* All zeros: zeros, not NaN (the scale of a zero group is 0, and so is its inverse). */
        memset(x, 0, sizeof x);
        assert_int_equal(run_q4_0(8, 256, x, y, &d_default), 0);
        for (int r = 0; r < 8; r++)
                assert_true(y[r] == 0.0f);

        /* Bad knobs; rows whose x does not fit in shared memory. */
        static const GpuMatvecParams bad_digits = { .dequant = GPU_MATVEC_DEQUANT_DOT, .int_digits = 3 };
        static const GpuMatvecParams bad_loops = { .dequant = GPU_MATVEC_DEQUANT_DOT, .group_loops = 65 };
        static const GpuMatvecParams bad_units = { .dequant = GPU_MATVEC_DEQUANT_DOT,
                                                   .units = GPU_MATVEC_UNITS_WORD };
        assert_int_equal(run_q4_0(4, 64, NULL, NULL, &bad_digits), -EINVAL);
        assert_int_equal(run_q4_0(4, 64, NULL, NULL, &bad_loops), -EINVAL);
        assert_int_equal(run_q4_0(4, 64, NULL, NULL, &bad_units), -EINVAL);
        uint32_t too_long = (gpu_device_caps(T.dev)->max_shared_memory / 40 + 2) * 32;
        assert_int_equal(run_q4_0(1, too_long, NULL, NULL, &d_default), -E2BIG);
        /* ... which the defaults never choose: they read such rows with float arithmetic. */
        GpuMatvecParams eff;
        gpu_matvec_default_params(T.dev, GGML_TYPE_Q4_0, too_long, 1, &eff);
        assert_int_not_equal(eff.dequant, GPU_MATVEC_DEQUANT_DOT);
}

static void test_params(void **state) {
        /* Non-default tuning knobs give the same results. */
        static const GpuMatvecParams variants[] = {
                { 32, 1, GPU_MATVEC_DEQUANT_F32 },
                { 64, 3, GPU_MATVEC_DEQUANT_F32, 3, GPU_MATVEC_UNITS_WIDE, 4, GPU_MATVEC_PIPELINE_ON },
                { 256, 8, GPU_MATVEC_DEQUANT_F16, 0, 0, 0, GPU_MATVEC_PIPELINE_ON },
                { 8, 2, GPU_MATVEC_DEQUANT_F16, 4, GPU_MATVEC_UNITS_WORD, 0, GPU_MATVEC_PIPELINE_OFF },
                { 16, 5, GPU_MATVEC_DEQUANT_F16, 1, GPU_MATVEC_UNITS_WIDE, 1, GPU_MATVEC_PIPELINE_ON },
                { 32, 4, GPU_MATVEC_DEQUANT_F16, 1, GPU_MATVEC_UNITS_WORD, 2, GPU_MATVEC_PIPELINE_OFF },
                { 64, 3, GPU_MATVEC_DEQUANT_F32, 4, GPU_MATVEC_UNITS_WORD, 5, GPU_MATVEC_PIPELINE_ON },
                { 128, 2, GPU_MATVEC_DEQUANT_F32, 2, GPU_MATVEC_UNITS_WIDE, 3, GPU_MATVEC_PIPELINE_ON },
        };
        static const GpuMatvecParams rows = { 32, 3, .units = GPU_MATVEC_UNITS_ROW };
        const uint32_t n_rows = 45, n_cols = 1024, nv = 2;
        float x[2 * 1024], y[2 * 45], ref[2 * 45];
        GpuBuffer *bx = NULL, *by = NULL;
        GpuCmd *c = NULL;
        int r;

        test_fill_random(x, nv * n_cols, 50);
        assert_int_equal(gpu_buffer_new(T.dev, sizeof x, GPU_MEMORY_DEVICE, &bx), 0);
        assert_int_equal(gpu_buffer_new(T.dev, sizeof y, GPU_MEMORY_DEVICE, &by), 0);
        assert_int_equal(gpu_buffer_write(bx, 0, x, sizeof x), 0);
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++) {
                GpuTensor *t = NULL;
                Weights w;
                weights_make(&w, all_types[i], n_rows, n_cols, 51);
                matvec_ref(&w, x, nv, ref);
                assert_int_equal(gpu_tensor_upload(T.dev, all_types[i], n_cols, n_rows, w.data, &t), 0);
                /* Two variants per type, rotating so Q8_0 and Q4_0 get word units, most types a
                 * capped grid (workgroups looping over row groups) and every type software
                 * pipelining (each is a pipeline to compile). */
                for (size_t j = 0; j < 2; j++) {
                        size_t v = (i + 4 * j) % ELEMENTSOF(variants);
                        if (variants[v].block_size > gpu_device_caps(T.dev)->max_workgroup_invocations)
                                continue;
                        assert_int_equal(gpu_cmd_begin(c), 0);
                        assert_int_equal(gpu_op_matvec_params(c, T.dev, t, (GpuBinding) { bx, 0, 0 },
                                                              (GpuBinding) { by, 0, 0 }, nv, &variants[v]),
                                         0);
                        assert_int_equal(gpu_cmd_submit(c), 0);
                        assert_int_equal(gpu_buffer_read(by, 0, y, sizeof y), 0);
                        double e = test_nmse(y, ref, nv * n_rows);
                        double bound = matvec_bound_params(all_types[i], n_cols, nv, &variants[v]);
                        if (!(e < bound))
                                fprintf(stderr, "# %s variant %zu: nmse %.3g\n", ggml_type_name(all_types[i]), v, e);
                        assert_true(e < bound);
                }
                /* Whole rows per invocation (the CPU default but for F32; 3 x 32 rows a workgroup,
                 * so the only one is partial) on every device; F32 does not have it. */
                assert_int_equal(gpu_cmd_begin(c), 0);
                r = gpu_op_matvec_params(c, T.dev, t, (GpuBinding) { bx, 0, 0 }, (GpuBinding) { by, 0, 0 }, nv,
                                         &rows);
                if (all_types[i] != GGML_TYPE_F32) {
                        assert_int_equal(r, 0);
                        assert_int_equal(gpu_cmd_submit(c), 0);
                        assert_int_equal(gpu_buffer_read(by, 0, y, sizeof y), 0);
                        assert_true(test_nmse(y, ref, nv * n_rows) < matvec_bound(all_types[i]));
                } else
                        assert_int_equal(r, -EOPNOTSUPP);
                gpu_tensor_free(t);
                weights_free(&w);
        }
        gpu_cmd_free(c);
        gpu_buffer_free(bx);
        gpu_buffer_free(by);
}

/*
 * gpu_tensor_upload_rows: rows 0..22 of W, 6 zero rows, rows 23..49 of W,
 * with chunks (17 rows) that cut across the parts, and without a split.
 * y must be W's product with the zero rows' outputs (exactly 0) in between;
 * same bound as a plain upload.
 */
static void test_upload_rows(void **state) {
        const uint32_t n_rows = 50, n_cols = 256, split = 23, n_pad = 6, total = n_rows + n_pad;
        const uint32_t caps[] = { 17, 0 };
        float x[256], ref[50], y[56], want[56];

        for (size_t i = 0; i < ELEMENTSOF(all_types); i++)
                for (size_t ci = 0; ci < ELEMENTSOF(caps); ci++) {
                        GgmlType type = all_types[i];
                        uint64_t rb = ggml_row_bytes(type, n_cols);
                        GpuBuffer *bx = NULL, *by = NULL;
                        GpuTensor *t = NULL;
                        GpuCmd *c = NULL;
                        Weights w;

                        weights_make(&w, type, n_rows, n_cols, 40 + i);
                        test_fill_random(x, n_cols, 41 + i);
                        matvec_ref(&w, x, 1, ref);
                        memcpy(want, ref, split * sizeof(float));
                        memset(want + split, 0, n_pad * sizeof(float));
                        memcpy(want + split + n_pad, ref + split, (n_rows - split) * sizeof(float));

                        const void *parts[] = { w.data, NULL, w.data + rb * split };
                        const uint32_t rows[] = { split, n_pad, n_rows - split };
                        assert_int_equal(gpu_tensor_upload_rows(T.dev, type, n_cols, 3, parts, rows, caps[ci], &t), 0);
                        assert_int_equal(t->n_rows, total);
                        if (caps[ci])
                                assert_int_equal(t->n_chunks, (total + caps[ci] - 1) / caps[ci]);
                        assert_int_equal(gpu_buffer_new(T.dev, sizeof x, GPU_MEMORY_DEVICE, &bx), 0);
                        assert_int_equal(gpu_buffer_new(T.dev, sizeof y, GPU_MEMORY_DEVICE, &by), 0);
                        assert_int_equal(gpu_buffer_write(bx, 0, x, sizeof x), 0);
                        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
                        assert_int_equal(gpu_cmd_begin(c), 0);
                        assert_int_equal(gpu_op_matvec(c, T.dev, t, (GpuBinding) { bx, 0, sizeof x },
                                                       (GpuBinding) { by, 0, sizeof y }, 1),
                                         0);
                        assert_int_equal(gpu_cmd_submit(c), 0);
                        assert_int_equal(gpu_buffer_read(by, 0, y, sizeof y), 0);
                        for (uint32_t r = split; r < split + n_pad; r++)
                                assert_true(y[r] == 0.0f);
                        double e = test_nmse(y, want, total);
                        fprintf(stderr, "# upload_rows %-4s chunks %u: nmse %.3g (bound %.0e)\n", ggml_type_name(type),
                                t->n_chunks, e, matvec_bound_params(type, n_cols, 1, NULL));
                        assert_true(e < matvec_bound_params(type, n_cols, 1, NULL));

                        gpu_cmd_free(c);
                        gpu_buffer_free(bx);
                        gpu_buffer_free(by);
                        gpu_tensor_free(t);
                        weights_free(&w);
                }
        /* No rows at all. */
        GpuTensor *t = NULL;
        const void *none[] = { NULL };
        const uint32_t zero[] = { 0 };
        assert_int_equal(gpu_tensor_upload_rows(T.dev, GGML_TYPE_F32, 32, 1, none, zero, 0, &t), -EINVAL);
        assert_null(t);
        (void) state;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_layout),
                cmocka_unit_test(test_bad_input),
                cmocka_unit_test(test_matvec_small),
                cmocka_unit_test(test_matvec_medium),
                cmocka_unit_test(test_matvec_many_rows),
                cmocka_unit_test(test_matvec_long_rows),
                cmocka_unit_test(test_matvec_vectors),
                cmocka_unit_test(test_matvec_unaligned_float),
                cmocka_unit_test(test_matvec_split),
                cmocka_unit_test(test_matvec_accumulate),
                cmocka_unit_test(test_matvec_swiglu),
                cmocka_unit_test(test_matvec_norm),
                cmocka_unit_test(test_matvec_qkv),
                cmocka_unit_test(test_matvec_auto_split),
                cmocka_unit_test(test_params),
                cmocka_unit_test(test_matvec_f16math),
                cmocka_unit_test(test_matvec_dot),
                cmocka_unit_test(test_get_rows),
                cmocka_unit_test(test_upload_rows),
        };
        gpu_test_open(&T);
        fprintf(stderr, "# subgroup reductions: %s\n", gpu_device_use_subgroup(T.dev) ? "yes" : "no");
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        gpu_test_close(&T);
        return r;
}
