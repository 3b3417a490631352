/* SPDX-License-Identifier: MIT */
/*
 * GPU timings for `inferctl bench ops`. Everything between the two
 * timestamps is one submission, so host overhead is not counted; the first
 * submission warms caches and clocks, then the median of five is reported
 * (one, for submissions of 10 ms and more).
 */
#include <errno.h>
#include <stdlib.h>

#include "bench.h"
#include "macro.h"
#include "tensor.h"

/* Deterministic weights: a few distinct quantised rows repeated, so large matrices are cheap to make. */
#define BENCH_DISTINCT_ROWS 64u

static uint64_t bench_rand(uint64_t *s) {
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        return *s * 2685821657736338717ULL;
}

void gpu_bench_fill(float *x, size_t n, uint64_t seed) {
        uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
        for (size_t i = 0; i < n; i++)
                x[i] = (float) ((double) (bench_rand(&s) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

int gpu_bench_weights(GpuDevice *d, GgmlType type, uint32_t n_rows, uint32_t n_cols, GpuTensor **ret) {
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_free_ float *row = NULL;
        uint64_t rb = ggml_row_bytes(type, n_cols);
        int r;

        if (rb == 0 || !ggml_type_supported(type))
                return -EINVAL;
        data = malloc(rb * n_rows);
        row = malloc(sizeof(float) * n_cols);
        if (!data || !row)
                return -ENOMEM;
        for (uint32_t i = 0; i < MIN(n_rows, BENCH_DISTINCT_ROWS); i++) {
                gpu_bench_fill(row, n_cols, i + 1);
                r = ggml_quantize_row(type, row, data + rb * i, n_cols);
                if (r < 0)
                        return r;
        }
        for (uint32_t i = BENCH_DISTINCT_ROWS; i < n_rows; i++)
                memcpy(data + rb * i, data + rb * (i % BENCH_DISTINCT_ROWS), rb);
        return gpu_tensor_upload(d, type, n_cols, n_rows, data, ret);
}

int gpu_bench_buffer_random(GpuDevice *d, size_t n_floats, uint64_t seed, GpuBuffer **ret) {
        _cleanup_(gpu_buffer_freep) GpuBuffer *b = NULL;
        _cleanup_free_ float *x = malloc(n_floats * sizeof(float));
        int r;

        if (!x)
                return -ENOMEM;
        gpu_bench_fill(x, n_floats, seed);
        r = gpu_buffer_new(d, n_floats * sizeof(float), GPU_MEMORY_DEVICE, &b);
        if (r < 0)
                return r;
        r = gpu_buffer_write(b, 0, x, n_floats * sizeof(float));
        if (r < 0)
                return r;
        *ret = TAKE_PTR(b);
        return 0;
}

#define BENCH_RUNS 5

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

/*
 * Submits the recording once to warm caches and clocks, then measures it:
 * once when that takes BENCH_LONG_NS or more, else BENCH_RUNS times,
 * returning the median. Single short submissions swing by 2x and more with
 * a GPU's clocks, which follow its recent load; long ones (CPU devices) do
 * not, and repeating them would only make the benchmark slow.
 */
#define BENCH_LONG_NS 10e6

int gpu_bench_measure(GpuCmd *c, int t0, int t1, uint32_t n_iter, double *ret_ns) {
        double ns[BENCH_RUNS];
        int r, n = 0;

        if (t0 < 0)
                return t0;
        if (t1 < 0)
                return t1;
        r = gpu_cmd_submit(c);
        if (r < 0)
                return r;
        while (n < BENCH_RUNS) {
                r = gpu_cmd_submit(c);
                if (r < 0)
                        return r;
                r = gpu_cmd_elapsed_ns(c, t0, t1, &ns[n++]);
                if (r < 0)
                        return r;
                if (ns[0] >= BENCH_LONG_NS)
                        break;
        }
        qsort(ns, n, sizeof ns[0], cmp_double);
        *ret_ns = ns[n / 2] / n_iter;
        return 0;
}

int gpu_bench_matvec_tensor(GpuDevice *d, const GpuTensor *w, uint32_t n_vectors, uint32_t n_iter,
                            const GpuMatvecParams *params, double *ret_ns_per_call) {
        _cleanup_(gpu_buffer_freep) GpuBuffer *x = NULL, *y = NULL;
        _cleanup_(gpu_cmd_freep) GpuCmd *c = NULL;
        int r;

        if (!w || n_iter == 0 || n_vectors == 0 || n_vectors > GPU_MATVEC_MAX_VECTORS)
                return -EINVAL;
        r = gpu_bench_buffer_random(d, (size_t) w->n_cols * n_vectors, 7, &x);
        if (r < 0)
                return r;
        r = gpu_buffer_new(d, (uint64_t) w->n_rows * n_vectors * sizeof(float), GPU_MEMORY_DEVICE, &y);
        if (r < 0)
                return r;
        r = gpu_cmd_new(d, &c);
        if (r < 0)
                return r;
        r = gpu_cmd_begin(c);
        if (r < 0)
                return r;
        int t0 = gpu_cmd_timestamp(c);
        for (uint32_t i = 0; i < n_iter; i++) {
                r = gpu_op_matvec_params(c, d, w, (GpuBinding) { x, 0, 0 }, (GpuBinding) { y, 0, 0 }, n_vectors,
                                         params);
                if (r < 0)
                        return r;
                gpu_cmd_barrier(c);
        }
        int t1 = gpu_cmd_timestamp(c);
        return gpu_bench_measure(c, t0, t1, n_iter, ret_ns_per_call);
}

int gpu_bench_matvec_params(GpuDevice *d, GgmlType type, uint32_t n_rows, uint32_t n_cols, uint32_t n_vectors,
                            uint32_t n_iter, const GpuMatvecParams *params, double *ret_ns_per_call) {
        _cleanup_(gpu_tensor_freep) GpuTensor *w = NULL;
        int r;

        if (n_iter == 0 || n_rows == 0 || n_vectors == 0 || n_vectors > GPU_MATVEC_MAX_VECTORS)
                return -EINVAL;
        r = gpu_bench_weights(d, type, n_rows, n_cols, &w);
        if (r < 0)
                return r;
        return gpu_bench_matvec_tensor(d, w, n_vectors, n_iter, params, ret_ns_per_call);
}

int gpu_bench_matvec(GpuDevice *d, GgmlType type, uint32_t n_rows, uint32_t n_cols, uint32_t n_iter,
                     double *ret_ns_per_call) {
        return gpu_bench_matvec_params(d, type, n_rows, n_cols, 1, n_iter, NULL, ret_ns_per_call);
}

#define COPY_BLOCK 256u
#define COPY_ITER 10u

int gpu_bench_copy_bandwidth(GpuDevice *d, uint64_t bytes, double *ret_bytes_per_sec) {
        const GpuCaps *caps = gpu_device_caps(d);
        _cleanup_(gpu_buffer_freep) GpuBuffer *src = NULL, *dst = NULL;
        _cleanup_(gpu_cmd_freep) GpuCmd *c = NULL;
        GpuPipeline *p;
        double ns;
        int r;

        bytes = MIN(bytes, caps->max_storage_buffer_range);
        bytes = MIN(bytes, caps->max_allocation);
        bytes &= ~(uint64_t) 15;
        if (bytes == 0 || bytes / 16 > UINT32_MAX)
                return -EINVAL;
        r = gpu_buffer_new(d, bytes, GPU_MEMORY_DEVICE, &src);
        if (r < 0)
                return r;
        r = gpu_buffer_new(d, bytes, GPU_MEMORY_DEVICE, &dst);
        if (r < 0)
                return r;
        r = gpu_cmd_new(d, &c);
        if (r < 0)
                return r;
        GpuSpec spec = { .v = { COPY_BLOCK }, .n = 1 };
        r = gpu_pipeline_get(d, GPU_SHADER_COPY_F32, &spec, &p);
        if (r < 0)
                return r;

        uint32_t n4 = (uint32_t) (bytes / 16);
        uint32_t groups = MIN((n4 + COPY_BLOCK - 1) / COPY_BLOCK, MIN(caps->max_workgroup_count[0], 65535u));
        GpuBinding b[2] = { { src, 0, 0 }, { dst, 0, 0 } };
        r = gpu_cmd_begin(c);
        if (r < 0)
                return r;
        /* Make the source defined (and resident) before timing. */
        gpu_cmd_fill(c, src, 0, bytes, 0x3f800000u);
        gpu_cmd_barrier(c);
        int t0 = gpu_cmd_timestamp(c);
        for (uint32_t i = 0; i < COPY_ITER; i++) {
                r = gpu_cmd_dispatch(c, p, b, 2, &n4, sizeof n4, groups, 1, 1);
                if (r < 0)
                        return r;
                gpu_cmd_barrier(c);
        }
        int t1 = gpu_cmd_timestamp(c);
        r = gpu_bench_measure(c, t0, t1, COPY_ITER, &ns);
        if (r < 0)
                return r;
        if (ns <= 0)
                return -EIO;
        *ret_bytes_per_sec = 2.0 * (double) bytes / (ns * 1e-9);
        return 0;
}
