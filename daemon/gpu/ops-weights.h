/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Kernels that read weight tensors (GpuTensor, tensor.h) at batch 1 or
 * nearly: matrix x vector for decode, and the embedding row lookup.
 *
 * Each gpu_op_*() records one dispatch per chunk of the tensor into `c`
 * (nothing is submitted, no barrier recorded: callers put gpu_cmd_barrier()
 * between dependent ops) and returns 0 or -errno: -EINVAL for bad shapes or
 * bindings too small for them, -E2BIG when the grid exceeds the device's
 * limits, or what gpu_pipeline_get() / gpu_cmd_dispatch() return.
 * Activations are F32, row-major, rows contiguous.
 */

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine.h"
#include "ops-basic.h"
#include "quant.h"
#include "tensor.h"

#define GPU_MATVEC_MAX_VECTORS 8

/*
 * y[v][r] = sum_k W[r][k] x[v][k] for v < n_vectors (1..8): x binds F32
 * [n_vectors][w->n_cols], y binds F32 [n_vectors][w->n_rows]. Every weight
 * row is read once for all vectors; F32 accumulation. All seven types.
 */
int gpu_op_matvec(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y, uint32_t n_vectors);

/*
 * The same, added to what y holds: y[v][r] += sum_k W[r][k] x[v][k]. A
 * residual connection in one dispatch instead of a matvec, a barrier and an
 * add; exactly what gpu_op_add() of the matvec's output would store (one
 * F32 addition per element).
 */
int gpu_op_matvec_add(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y, uint32_t n_vectors);

/*
 * SwiGLU of a fused [gate | up] projection in one dispatch: y[v][i] =
 * silu(W[i] . x[v]) * (W[i + up_row] . x[v]) for i < n_out, y binding F32
 * [n_vectors][n_out]. A workgroup takes gate rows with their up rows, so
 * the gate and up outputs never leave it: a dispatch, a barrier and a
 * round trip of both through memory fewer than gpu_op_matvec() then
 * gpu_op_swiglu_strided(), with the same sums and silu. w must be one
 * chunk (-EOPNOTSUPP otherwise: the caller takes the two-step path).
 */
/*
 * The RMSNorm that follows a residual add, in the same dispatch: y[v] +=
 * W x[v] as gpu_op_matvec_add(), then out[v][k] = y[v][k] /
 * sqrt(mean(y[v]^2) + eps) * weight[k] over the w->n_rows values of each
 * vector (y and out bind [n_vectors][w->n_rows]), what gpu_op_rmsnorm()
 * of the finished y would give, up to the order of the sum of squares.
 * The last workgroup to finish computes it (on CPU devices the last
 * invocation: shaders/common/mv_norm.glsl says why), counting on scratch, which holds gpu_matvec_norm_scratch_size() bytes
 * and must be zeroed once before its first use; the op leaves it zeroed,
 * so recordings may be replayed. Ops on the same scratch must be
 * separated by a barrier.
 */
typedef struct GpuMatvecNorm {
        GpuBinding weight;
        GpuBinding out;
        GpuBinding scratch;
        float eps;
} GpuMatvecNorm;

uint64_t gpu_matvec_norm_scratch_size(uint32_t n_rows, uint32_t n_vectors);

int gpu_op_matvec_add_norm(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y,
                           uint32_t n_vectors, const GpuMatvecNorm *norm);

/*
 * The fused Q/K/V projection with the bias add, RoPE and KV-cache store
 * that follow it, in one dispatch (shaders/common/mv_qkv.glsl): w's rows
 * are q [0, n_head x head_dim), k from k_row and v from v_row (n_head_kv x
 * head_dim each); for each vector v, bias (if bound, [w->n_rows]) is added,
 * q is rotated into y ([n_vectors][w->n_rows], rows of k and v untouched),
 * and k rotated and v are stored as F16 into the caches ([n_head_kv][n_ctx]
 * [head_dim]) at position pos[v] (int32; outside [0, n_ctx): not stored) --
 * the same numbers gpu_op_matvec(), gpu_op_add() and
 * gpu_op_rope_kv_store() give. head_dim must be a multiple of 4, and for
 * NeoX ordering n_rot too (the kernel works on quads of rows that hold
 * both RoPE partners and whole F16 pairs); -EOPNOTSUPP otherwise, as for a
 * w in several chunks: the caller then takes the separate ops.
 */
typedef struct GpuMatvecQkv {
        uint32_t n_head, n_head_kv, head_dim, n_rot;
        uint32_t k_row, v_row;
        GpuRopeMode mode;
        float freq_base, freq_scale;    /* as GpuRope's */
        GpuBinding freq_factors_inv;    /* optional: as GpuRope's */
        GpuBinding pos;
        GpuBinding k_cache, v_cache;
        uint32_t n_ctx;
        GpuBinding bias;                /* optional */
} GpuMatvecQkv;

int gpu_op_matvec_qkv(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y, uint32_t n_vectors,
                      const GpuMatvecQkv *qkv);

int gpu_op_matvec_swiglu(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y,
                         uint32_t n_vectors, uint32_t n_out, uint32_t up_row);

typedef enum GpuMatvecDequant {
        GPU_MATVEC_DEQUANT_DEFAULT,
        GPU_MATVEC_DEQUANT_F32,         /* quant bits into an f32 mantissa: 2 integer ops per element */
        GPU_MATVEC_DEQUANT_F16,         /* into f16 mantissas, then widened: 1 integer op + 1 conversion */
        GPU_MATVEC_DEQUANT_F16MATH,     /* into f16 mantissas, products in packed f16 (f32 per block and
                                         * row): about half the instructions; NMSE ~1e-6 instead of < 1e-8;
                                         * needs caps->fp16 (-EOPNOTSUPP), no effect on F32/F16 weights;
                                         * opt-in, never a default (precision) */
        GPU_MATVEC_DEQUANT_DOT,         /* quantised weights only: x as 16-bit integers per 16 columns in
                                         * shared memory, 4x8-bit integer dot products (int_digits: 1 for
                                         * 8-bit x); needs caps->int_dot (-EOPNOTSUPP) and room for x in
                                         * shared memory (-E2BIG); wide units; the default where
                                         * gpu_device_use_int_dot() */
} GpuMatvecDequant;

/* How much of a row one invocation loads per unit (one load per row). */
typedef enum GpuMatvecUnits {
        GPU_MATVEC_UNITS_DEFAULT,
        GPU_MATVEC_UNITS_WIDE,          /* 16 bytes */
        GPU_MATVEC_UNITS_WORD,          /* 4 bytes (Q8_0 and Q4_0; the other types always load 16) */
        GPU_MATVEC_UNITS_ROW,           /* whole rows per invocation (mul_mv_rows.comp; not F32) */
} GpuMatvecUnits;

/* Whether an iteration's loads are issued before the previous iteration's arithmetic. */
typedef enum GpuMatvecPipeline {
        GPU_MATVEC_PIPELINE_DEFAULT,
        GPU_MATVEC_PIPELINE_OFF,
        GPU_MATVEC_PIPELINE_ON,         /* software-pipelined: twice the registers for loads */
} GpuMatvecPipeline;

/*
 * The kernel's tuning knobs (specialization constants of mul_mv.comp, and
 * the grid). block_size: invocations per workgroup, a power of two >= 8
 * (constant 0); num_rows: rows per group (constant 3), each invocation
 * reusing its x loads for all of them; dequant: how quants become floats
 * (constant 5; no effect on F32/F16 weights); num_units: units per loop
 * iteration, 1..4, whose loads are all issued before the arithmetic
 * (constant 6); units: the unit size (constant 7), or whole rows
 * (GPU_MATVEC_UNITS_ROW: mul_mv_rows.comp, num_rows rows per invocation,
 * block_size x num_rows per workgroup, no grid cap); pipeline: software
 * pipelining (constant 8); max_groups: at most this many workgroups per
 * dispatch, each looping over row groups; group_loops: row groups per
 * workgroup at least (GPU_MATVEC_DEQUANT_DOT quantises x once per workgroup,
 * so more rows share that work); int_digits (constant 10); accumulate: y += W x
 * (gpu_op_matvec_add()), swiglu_rows/swiglu_up_row (SwiGLU pairs,
 * gpu_op_matvec_swiglu()) and norm (gpu_op_matvec_add_norm()), not tuning knobs. 0 in a field: the default for
 * this device and shape (gpu_matvec_default_params()).
 */
typedef struct GpuMatvecParams {
        uint32_t block_size;
        uint32_t num_rows;
        GpuMatvecDequant dequant;
        uint32_t num_units;
        GpuMatvecUnits units;
        uint32_t max_groups;
        GpuMatvecPipeline pipeline;
        bool accumulate;
        uint32_t swiglu_rows;           /* > 0: outputs of SwiGLU pairs */
        uint32_t swiglu_up_row;         /* the first up row */
        const GpuMatvecNorm *norm;      /* with accumulate: gpu_op_matvec_add_norm() */
        const GpuMatvecQkv *qkv;        /* gpu_op_matvec_qkv() */
        uint32_t group_loops;           /* at least this many row groups per workgroup (1..64) */
        uint32_t int_digits;            /* GPU_MATVEC_DEQUANT_DOT: bytes per integer of x, 1 or 2 */
} GpuMatvecParams;

/*
 * Defaults: see gpu_matvec_default_params() in ops-weights.c, which says
 * what was measured for each choice. CPU devices (lavapipe) get whole rows
 * per invocation for all types but F32 (and F16 with n_cols % 32 != 0),
 * and otherwise one subgroup per workgroup, F32 dequantisation and no grid cap.
 */
void gpu_matvec_default_params(const GpuDevice *d, GgmlType type, uint32_t n_cols, uint32_t n_vectors,
                               GpuMatvecParams *ret);

int gpu_op_matvec_params(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y,
                         uint32_t n_vectors, const GpuMatvecParams *params);

/*
 * out[i][k] = dequant(W[ids[i]][k]): ids binds uint32 [n_ids], out binds F32
 * [n_ids][w->n_cols]. Ids past the tensor's rows give zero rows.
 */
int gpu_op_get_rows(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding ids, GpuBinding out, uint32_t n_ids);

/*
 * The first dispatch of a forward pass: gpu_op_get_rows(), and
 *   - h[i][k] = out[i][k] / sqrt(mean(out[i]^2) + eps) * norm_weight[k]
 *     into norm_out (bound as out is), what gpu_op_rmsnorm() of out gives
 *     up to the order of the sum of squares: the first block's norm;
 *   - if pos_in is bound, a copy of the n_ids int32 positions from pos_in
 *     to pos_out: ids and positions may then come from host-visible memory,
 *     and the positions reach the device memory the later kernels read them
 *     from without a copy and a barrier of their own.
 */
typedef struct GpuEmbed {
        GpuBinding norm_weight, norm_out;
        float eps;
        GpuBinding pos_in, pos_out;
} GpuEmbed;

int gpu_op_embed(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding ids, GpuBinding out, uint32_t n_ids,
                 const GpuEmbed *e);

/* ---- push-constant blocks, mirrored from the shaders ------------------- */

typedef struct MulMvPush {              /* mul_mv.comp */
        uint32_t ncols;
        uint32_t nrows;                 /* of the chunk */
        uint32_t x_stride;
        uint32_t y_stride;
        uint32_t y_offset;              /* the chunk's row0 */
        uint32_t accumulate;            /* y += W x */
        uint32_t pair_offset;           /* SwiGLU pairs: up row = gate row + pair_offset; 0: none */
        uint32_t norm;                  /* the RMSNorm epilogue (mv_norm.glsl) */
        uint32_t norm_groups;           /* workgroups of all the op's dispatches */
        uint32_t norm_base;             /* this dispatch's first */
        float norm_eps;
} MulMvPush;
static_assert(sizeof(MulMvPush) == 44, "MulMvPush mirrors Push in mul_mv.comp");

typedef struct MulMvQkvPush {           /* mul_mv.comp with QKV_ROPE */
        MulMvPush mv;
        uint32_t k_row, v_row;
        uint32_t n_q, n_kv;             /* rows of q, and of k and of v */
        uint32_t head_dim, n_rot, n_ctx;
        float theta_scale, freq_scale;
        uint32_t has_factors, has_bias;
        uint32_t neox;
} MulMvQkvPush;
static_assert(sizeof(MulMvQkvPush) == 92, "MulMvQkvPush mirrors Push in mul_mv.comp");

typedef struct GetRowsPush {            /* get_rows.comp */
        uint32_t ncols;
        uint32_t row0;
        uint32_t nrows;
        uint32_t total_rows;
        uint32_t n_ids;
        uint32_t out_stride;
        uint32_t zero_oob;
        uint32_t norm;
        float eps;
        uint32_t copy_pos;
} GetRowsPush;
static_assert(sizeof(GetRowsPush) == 40, "GetRowsPush mirrors Push in get_rows.comp");
