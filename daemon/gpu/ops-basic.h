/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The non-matrix transformer kernels on F32 activations: RMSNorm, RoPE,
 * softmax, SwiGLU, element-wise add/mul/scale, per-row argmax and the top-k
 * candidates of a row.
 *
 * Each gpu_op_*() records one dispatch into `c` (nothing is submitted) and
 * returns 0 or -errno: -EINVAL for a bad shape, or what gpu_pipeline_get()
 * and gpu_cmd_dispatch() return. Tensors are row-major with contiguous rows
 * ("a row" is one token's vector) unless a stride is given; strides and
 * sizes are in floats. The caller orders dependent ops with
 * gpu_cmd_barrier(). Unless said otherwise `out` may be the same memory as
 * an input (in place).
 *
 * Reductions (rmsnorm, softmax, argmax) use subgroup arithmetic when the
 * device has it, a shared-memory tree otherwise, or always when the
 * environment has INFERD_GPU_NO_SUBGROUP=1 (so tests cover both paths).
 *
 * The plain-C references the tests compare against, with the exact
 * arithmetic, are in tests/gpu/ref-basic.c.
 */

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

/* ---- push-constant blocks, mirrored from the shaders ------------------- */

typedef struct GpuRowsPush {            /* rmsnorm.comp, softmax.comp */
        uint32_t n_rows;
        uint32_t n_cols;
        float param;                    /* rmsnorm: eps; softmax: scale */
        uint32_t pad;
} GpuRowsPush;
static_assert(sizeof(GpuRowsPush) == 16, "GpuRowsPush mirrors Push in rmsnorm.comp/softmax.comp");

typedef struct GpuArgmaxPush {          /* argmax.comp */
        uint32_t n_rows;
        uint32_t n_cols;
        uint32_t n_split;               /* > 1: gpu_op_argmax_split() */
        uint32_t seg;
} GpuArgmaxPush;
static_assert(sizeof(GpuArgmaxPush) == 16, "GpuArgmaxPush mirrors Push in argmax.comp");

typedef struct GpuTopkPush {            /* topk.comp */
        uint32_t n_cols;
        uint32_t n_split;               /* workgroups */
        uint32_t seg;                   /* columns per workgroup */
        uint32_t pad;
} GpuTopkPush;
static_assert(sizeof(GpuTopkPush) == 16, "GpuTopkPush mirrors Push in topk.comp");

typedef struct GpuRopePush {            /* rope.comp */
        uint32_t n_tokens;
        uint32_t n_heads;
        uint32_t head_dim;
        uint32_t n_rot;
        uint32_t x_stride;
        uint32_t o_stride;
        float theta_scale;
        float freq_scale;
        uint32_t copy_rest;
        uint32_t has_factors;           /* binding 3 holds GpuRope.freq_factors_inv */
} GpuRopePush;
static_assert(sizeof(GpuRopePush) == 40, "GpuRopePush mirrors Push in rope.comp");

typedef struct GpuEltwisePush {         /* binary.comp, swiglu.comp */
        uint32_t n_rows;
        uint32_t n_cols;
        uint32_t a_stride;              /* swiglu: gate */
        uint32_t b_stride;              /* swiglu: up */
        uint32_t o_stride;
} GpuEltwisePush;
static_assert(sizeof(GpuEltwisePush) == 20, "GpuEltwisePush mirrors Push in binary.comp/swiglu.comp");

typedef struct GpuScalePush {           /* scale.comp */
        uint32_t n;
        float scale;
} GpuScalePush;
static_assert(sizeof(GpuScalePush) == 8, "GpuScalePush mirrors Push in scale.comp");

/* ---- ops ---------------------------------------------------------------- */

/*
 * out[r][i] = x[r][i] / sqrt(mean_i(x[r]^2) + eps) * weight[i], n_rows rows
 * of n_cols. weight.buffer NULL: no weight (multiply by 1).
 */
int gpu_op_rmsnorm(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding weight, GpuBinding out,
                   uint32_t n_rows, uint32_t n_cols, float eps);

typedef enum GpuRopeMode {
        GPU_ROPE_NORMAL,                /* pairs (2i, 2i+1): llama */
        GPU_ROPE_NEOX,                  /* pairs (i, i + n_rot/2): gpt-neox, qwen2 */
} GpuRopeMode;

typedef struct GpuRope {
        uint32_t n_tokens;
        uint32_t n_heads;
        uint32_t head_dim;              /* even */
        uint32_t n_rot;                 /* rotated dims, even, <= head_dim; the rest pass through */
        GpuRopeMode mode;
        float freq_base;                /* e.g. 10000, 1000000 */
        float freq_scale;               /* 1: none; linear position scaling otherwise */
        uint32_t x_stride;              /* floats from one token to the next in x; 0: n_heads * head_dim */
        uint32_t out_stride;            /* ... in out; 0: n_heads * head_dim */
        /*
         * Optional (.buffer NULL: none): n_rot/2 floats, 1/factor for each rotated pair, the Llama 3.1+
         * frequency factors (rope_freqs.weight) inverted and rounded to float by the caller, since the
         * kernels only multiply (rope.comp says why).
         */
        GpuBinding freq_factors_inv;
} GpuRope;

/*
 * Rotates x ([n_tokens][n_heads][head_dim], token rows x_stride apart) into
 * out; pos holds one int32 position per token. For rotated pair i
 * (0 <= i < n_rot/2):
 *   theta = (pos * freq_scale) * theta_scale^i [* freq_factors_inv[i]],
 *   theta_scale = freq_base^(-2/n_rot)
 * (see rope.comp and ref_rope() for the exact float arithmetic). out may be x.
 */
int gpu_op_rope(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding pos, GpuBinding out, const GpuRope *p);

/* -EINVAL when p->freq_factors_inv is given but shows fewer than n_rot/2 floats (gpu_op_rope_kv_store's check too). */
int gpu_rope_check_factors(const GpuRope *p);

/* out[r] = softmax(scale * x[r]) over n_cols, max subtracted. A row that is all -inf gives NaN. */
int gpu_op_softmax(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding out, uint32_t n_rows, uint32_t n_cols,
                   float scale);

/* out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)), over n_rows * n_cols contiguous floats. */
int gpu_op_swiglu(GpuCmd *c, GpuDevice *d, GpuBinding gate, GpuBinding up, GpuBinding out, uint32_t n_rows,
                  uint32_t n_cols);

/*
 * The same with row strides: gate row r starts at gate + r * gate_stride, and
 * so on. Lets gate and up be the halves of one fused [n_rows][2 * n_cols]
 * projection (up bound at gate's offset + n_cols floats, when that is
 * aligned).
 */
int gpu_op_swiglu_strided(GpuCmd *c, GpuDevice *d, GpuBinding gate, GpuBinding up, GpuBinding out,
                          uint32_t n_rows, uint32_t n_cols, uint32_t gate_stride, uint32_t up_stride,
                          uint32_t out_stride);

/*
 * out = a + b and out = a * b on [n_rows][n_cols]. b_broadcast: b is one row
 * of n_cols applied to every row of a (biases, norm weights); otherwise b has
 * a's shape.
 */
int gpu_op_add(GpuCmd *c, GpuDevice *d, GpuBinding a, GpuBinding b, GpuBinding out, uint32_t n_rows,
               uint32_t n_cols, bool b_broadcast);
int gpu_op_mul(GpuCmd *c, GpuDevice *d, GpuBinding a, GpuBinding b, GpuBinding out, uint32_t n_rows,
               uint32_t n_cols, bool b_broadcast);

/* out[i] = scale * x[i] over n floats. */
int gpu_op_scale(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding out, uint32_t n, float scale);

/*
 * out[r] = the index (uint32) of the largest x[r][i], ties to the lowest
 * index. One workgroup per row: meant for a few rows of a vocabulary
 * (128k-256k columns), i.e. greedy sampling. +inf counts as FLT_MAX (as in
 * the host sampler), NaN is never picked; a row of NaNs gives 0xffffffff.
 */
int gpu_op_argmax(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding out, uint32_t n_rows, uint32_t n_cols);

/*
 * The same for one row, over several workgroups that each scan a segment;
 * the last to finish merges their results (argmax.comp). For decode on a
 * GPU, where one workgroup streaming a 128k-entry row is latency-bound.
 * scratch holds gpu_argmax_scratch_size() bytes and must be zeroed once
 * before its first use; the op leaves it zeroed. Ops on the same scratch
 * must be separated by a barrier.
 */
uint64_t gpu_argmax_scratch_size(uint32_t n_cols);
int gpu_op_argmax_split(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding out, GpuBinding scratch, uint32_t n_cols);

/*
 * The top-k candidates of one row of n_cols floats x, for temperature
 * sampling on the host without reading the whole row back (topk.comp).
 *
 * The order is the host sampler's: higher value first, equal values lower
 * index first; NaN and -inf are never candidates, +inf counts as FLT_MAX
 * (they tie) and -0.0 equals +0.0. The candidates are exactly the best
 * m = min(k, selectable entries) by that order, ties at the k-th value
 * included; m is 0 for a row of NaN and -inf.
 *
 * params holds a GpuTopkParams that the kernel reads when it runs, so a
 * recorded command is replayed with the values of each submission (put it
 * in host-visible memory). out receives gpu_topk_out_size() bytes laid out
 * as GPU_TOPK_OUT_GATHER says. The row is split over up to 64 workgroups;
 * the last to finish merges their candidates (as gpu_op_argmax_split()).
 * scratch holds gpu_topk_scratch_size() bytes and must be zeroed once
 * before its first use; the op leaves it ready for the next (its counters
 * zeroed). Ops on the same scratch must be separated by a barrier.
 * -EINVAL for n_cols == 0 or a binding that is too small, -EOPNOTSUPP on a
 * device with fewer than 256 invocations per workgroup.
 */

/* At most this many candidates (k) and gathered entries. */
#define GPU_TOPK_MAX 256u

typedef struct GpuTopkParams {
        uint32_t k;                     /* 1..GPU_TOPK_MAX (the kernel clamps to that range) */
        uint32_t n_gather;              /* 0..GPU_TOPK_MAX (clamped) */
        uint32_t gather[GPU_TOPK_MAX];  /* indices into x */
} GpuTopkParams;
static_assert(sizeof(GpuTopkParams) == 4 * (2 + GPU_TOPK_MAX), "GpuTopkParams mirrors P in topk.comp");

/*
 * out, in 32-bit words: [0] m, the number of candidates; [1 + 2i] the bits
 * of candidate i's x value (the raw float, not sanitised), [2 + 2i] its
 * index, for i < m (capacity GPU_TOPK_MAX, in no particular order); then
 * from word GPU_TOPK_OUT_GATHER, n_gather floats: x[gather[j]] bit for bit
 * (a quiet NaN where gather[j] >= n_cols).
 */
#define GPU_TOPK_OUT_GATHER (1u + 2u * GPU_TOPK_MAX)

/* Whether d runs it: it needs 256 invocations per workgroup, Vulkan promises 128. */
bool gpu_topk_supported(const GpuDevice *d);
uint64_t gpu_topk_out_size(void);
uint64_t gpu_topk_scratch_size(uint32_t n_cols);
int gpu_op_topk_split(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding params, GpuBinding out,
                      GpuBinding scratch, uint32_t n_cols);
