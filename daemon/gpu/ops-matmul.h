/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Matrix x matrix products for prompt processing (prefill): a batch of token
 * rows through one weight matrix, Y[t][r] = sum_k W[r][k] X[t][k], with the
 * weights dequantised into shared-memory tiles and F32 accumulation
 * (shaders/mul_mm.comp; shaders/mul_mm_cm.comp on tensor cores where the
 * device has VK_NV_cooperative_matrix). Decode (one token) uses the matrix x
 * vector kernels.
 */

#include "engine.h"
#include "quant.h"
#include "tensor.h"

/*
 * Records Y = X W^T: x binds F32 [n_tokens][w->n_cols], y binds F32
 * [n_tokens][w->n_rows] (token rows contiguous). One dispatch per chunk of w,
 * each writing its columns row0 .. row0 + n of every Y row. Records no
 * barrier: callers put gpu_cmd_barrier() between dependent ops.
 * n_tokens == 0 records nothing. -EINVAL for a bindings too small for the
 * shapes or an unsupported weight type; -E2BIG when n_tokens needs more
 * workgroups than the device allows.
 */
int gpu_op_matmul(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y, uint32_t n_tokens);

/*
 * Whether gpu_op_matmul() runs the tensor-core kernel on this device
 * (mul_mm_cm.comp: VK_NV_cooperative_matrix, X and W rounded to f16, F32
 * accumulation): caps.coopmat_nv with subgroups of 32, unless
 * $INFERD_GPU_NO_COOPMAT=1. Otherwise the plain F32 kernel runs.
 */
bool gpu_matmul_coopmat(GpuDevice *d);

/*
 * Whether the plain path runs mul_mm_rows.comp, the CPU devices' kernel
 * (rows and tokens in each lane's registers, no shared memory), for rows of
 * n_cols columns: on CPU devices with shaderInt64 when n_cols % 32 == 0.
 * $INFERD_GPU_MM_ROWS=0/1 overrides the device test (for tests and tuning).
 */
bool gpu_matmul_rows(GpuDevice *d, uint32_t n_cols);

/*
 * Plain-C reference (the test's): y[t][r] = sum_k dequant(w)[r][k] x[t][k]
 * in double precision, w in the file layout (row r at r * ggml_row_bytes()).
 */
int matmul_ref(GgmlType type, const void *w, uint32_t n_rows, uint32_t n_cols, const float *x, uint32_t n_tokens,
               float *y);

/*
 * Benchmark for the lead: uploads random weights of `type`, records n_iter
 * dispatches (with barriers between, as in a forward pass) between two
 * timestamps in one submission, submits once to warm up and once to measure.
 * Returns the device time per call in *ret_ns_per_call.
 */
int gpu_bench_matmul(GpuDevice *d, GgmlType type, uint32_t n_rows, uint32_t n_cols, uint32_t n_tokens,
                     uint32_t n_iter, double *ret_ns_per_call);
