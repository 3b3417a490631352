/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Plain-C references for the kernels of daemon/gpu/ops-basic.h: the
 * semantics the GPU tests hold the shaders to. Straightforward loops,
 * accumulating in double where the shader accumulates in float, so the
 * measured error is the shader's.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops-basic.h"

void ref_rmsnorm(const float *x, const float *weight, float *out, uint32_t n_rows, uint32_t n_cols, float eps);
/* factors_inv: NULL, or the n_rot/2 floats gpu_op_rope() gets in p->freq_factors_inv. */
void ref_rope(const float *x, const int32_t *pos, const float *factors_inv, float *out, const GpuRope *p);
void ref_softmax(const float *x, float *out, uint32_t n_rows, uint32_t n_cols, float scale);
void ref_swiglu(const float *gate, const float *up, float *out, size_t n);
void ref_binary(const float *a, const float *b, float *out, uint32_t n_rows, uint32_t n_cols, bool b_broadcast,
                bool mul);
void ref_argmax(const float *x, uint32_t *out, uint32_t n_rows, uint32_t n_cols);
/*
 * The host sampler's order for gpu_op_topk_split(): the indices of x's selectable entries (not NaN,
 * not -inf), best first: higher value first with +inf as FLT_MAX and -0.0 equal to +0.0, equal
 * values lower index first. order holds n_cols; returns how many were selectable. The candidates
 * for k are the first min(k, that) of order.
 */
uint32_t ref_topk_order(const float *x, uint32_t n_cols, uint32_t *order);
