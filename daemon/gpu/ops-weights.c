/* SPDX-License-Identifier: MIT */
/*
 * Host side of the weight-reading kernels (shaders/mul_mv.comp,
 * shaders/get_rows.comp): shape checks, default tuning, one dispatch per
 * tensor chunk.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "macro.h"
#include "ops-weights.h"

typedef struct TypeShaders {
        GpuShaderId mv, mv_nosg, get_rows;
        uint32_t unit_cols;     /* columns per 16-byte load of a row */
        bool has_h;             /* quantised: packed-f16 variants mv_h, mv_h_nosg */
        GpuShaderId mv_h, mv_h_nosg;
        GpuShaderId mv_qkv, mv_qkv_nosg;
} TypeShaders;

static int type_shaders(GgmlType t, TypeShaders *ret) {
        switch (t) {
        case GGML_TYPE_F32:
                *ret = (TypeShaders) { GPU_SHADER_MUL_MV_F32, GPU_SHADER_MUL_MV_F32_NOSG, GPU_SHADER_GET_ROWS_F32, 4,
                                       false, 0, 0, GPU_SHADER_MUL_MV_F32_QKV, GPU_SHADER_MUL_MV_F32_QKV_NOSG };
                return 0;
        case GGML_TYPE_F16:
                *ret = (TypeShaders) { GPU_SHADER_MUL_MV_F16, GPU_SHADER_MUL_MV_F16_NOSG, GPU_SHADER_GET_ROWS_F16, 8,
                                       false, 0, 0, GPU_SHADER_MUL_MV_F16_QKV, GPU_SHADER_MUL_MV_F16_QKV_NOSG };
                return 0;
        case GGML_TYPE_Q8_0:
                *ret = (TypeShaders) { GPU_SHADER_MUL_MV_Q8_0, GPU_SHADER_MUL_MV_Q8_0_NOSG, GPU_SHADER_GET_ROWS_Q8_0,
                                       16, true,
                                       GPU_SHADER_MUL_MV_Q8_0_H, GPU_SHADER_MUL_MV_Q8_0_H_NOSG,
                                       GPU_SHADER_MUL_MV_Q8_0_QKV, GPU_SHADER_MUL_MV_Q8_0_QKV_NOSG };
                return 0;
        case GGML_TYPE_Q4_0:
                *ret = (TypeShaders) { GPU_SHADER_MUL_MV_Q4_0, GPU_SHADER_MUL_MV_Q4_0_NOSG, GPU_SHADER_GET_ROWS_Q4_0,
                                       32, true,
                                       GPU_SHADER_MUL_MV_Q4_0_H, GPU_SHADER_MUL_MV_Q4_0_H_NOSG,
                                       GPU_SHADER_MUL_MV_Q4_0_QKV, GPU_SHADER_MUL_MV_Q4_0_QKV_NOSG };
                return 0;
        case GGML_TYPE_Q4_K:
                *ret = (TypeShaders) { GPU_SHADER_MUL_MV_Q4_K, GPU_SHADER_MUL_MV_Q4_K_NOSG, GPU_SHADER_GET_ROWS_Q4_K,
                                       32, true,
                                       GPU_SHADER_MUL_MV_Q4_K_H, GPU_SHADER_MUL_MV_Q4_K_H_NOSG,
                                       GPU_SHADER_MUL_MV_Q4_K_QKV, GPU_SHADER_MUL_MV_Q4_K_QKV_NOSG };
                return 0;
        case GGML_TYPE_Q5_K:
                *ret = (TypeShaders) { GPU_SHADER_MUL_MV_Q5_K, GPU_SHADER_MUL_MV_Q5_K_NOSG, GPU_SHADER_GET_ROWS_Q5_K,
                                       32, true,
                                       GPU_SHADER_MUL_MV_Q5_K_H, GPU_SHADER_MUL_MV_Q5_K_H_NOSG,
                                       GPU_SHADER_MUL_MV_Q5_K_QKV, GPU_SHADER_MUL_MV_Q5_K_QKV_NOSG };
                return 0;
        case GGML_TYPE_Q6_K:
                *ret = (TypeShaders) { GPU_SHADER_MUL_MV_Q6_K, GPU_SHADER_MUL_MV_Q6_K_NOSG, GPU_SHADER_GET_ROWS_Q6_K,
                                       32, true,
                                       GPU_SHADER_MUL_MV_Q6_K_H, GPU_SHADER_MUL_MV_Q6_K_H_NOSG,
                                       GPU_SHADER_MUL_MV_Q6_K_QKV, GPU_SHADER_MUL_MV_Q6_K_QKV_NOSG };
                return 0;
        default:
                return -EINVAL;
        }
}

/* mul_mv with integer dot products (DOT=1) per quantised type: plain and QKV_ROPE, with and without subgroups. */
typedef struct DotShaders {
        GgmlType type;
        GpuShaderId mv, mv_nosg, qkv, qkv_nosg;
} DotShaders;

static const DotShaders dot_shaders[] = {
        { GGML_TYPE_Q8_0, GPU_SHADER_MUL_MV_Q8_0_DOT, GPU_SHADER_MUL_MV_Q8_0_DOT_NOSG, GPU_SHADER_MUL_MV_Q8_0_DOT_QKV,
          GPU_SHADER_MUL_MV_Q8_0_DOT_QKV_NOSG },
        { GGML_TYPE_Q4_0, GPU_SHADER_MUL_MV_Q4_0_DOT, GPU_SHADER_MUL_MV_Q4_0_DOT_NOSG, GPU_SHADER_MUL_MV_Q4_0_DOT_QKV,
          GPU_SHADER_MUL_MV_Q4_0_DOT_QKV_NOSG },
        { GGML_TYPE_Q4_K, GPU_SHADER_MUL_MV_Q4_K_DOT, GPU_SHADER_MUL_MV_Q4_K_DOT_NOSG, GPU_SHADER_MUL_MV_Q4_K_DOT_QKV,
          GPU_SHADER_MUL_MV_Q4_K_DOT_QKV_NOSG },
        { GGML_TYPE_Q5_K, GPU_SHADER_MUL_MV_Q5_K_DOT, GPU_SHADER_MUL_MV_Q5_K_DOT_NOSG, GPU_SHADER_MUL_MV_Q5_K_DOT_QKV,
          GPU_SHADER_MUL_MV_Q5_K_DOT_QKV_NOSG },
        { GGML_TYPE_Q6_K, GPU_SHADER_MUL_MV_Q6_K_DOT, GPU_SHADER_MUL_MV_Q6_K_DOT_NOSG, GPU_SHADER_MUL_MV_Q6_K_DOT_QKV,
          GPU_SHADER_MUL_MV_Q6_K_DOT_QKV_NOSG },
};

static const DotShaders *dot_shaders_of(GgmlType t) {
        for (size_t i = 0; i < ELEMENTSOF(dot_shaders); i++)
                if (dot_shaders[i].type == t)
                        return &dot_shaders[i];
        return NULL;
}

/* Shared memory of a mul_mv dispatch: the reduction's rows x vectors x block floats, mv_norm.glsl's
 * block floats and counter, and with integer dot products x as integers (mul_mv.comp's xq_*). */
static uint64_t matvec_shared_bytes(uint32_t block_size, uint32_t num_rows, uint32_t n_vectors, bool dot,
                                    uint32_t n_cols, uint32_t digits) {
        uint64_t b = (uint64_t) (num_rows * n_vectors + 1) * block_size * sizeof(float) + 4;
        if (dot)
                b += (uint64_t) n_vectors * (n_cols / 16) * (16 * digits + 8) + (digits == 1 ? 16 : 0);
        return b;
}

/* mul_mv_rows per type: plain, and its QKV_ROPE and NORM builds. F32 has none: mul_mv reads it at copy speed
 * on lavapipe already. */
static const struct {
        GgmlType type;
        GpuShaderId plain, qkv, norm;
} rows_shaders[] = {
        { GGML_TYPE_F16, GPU_SHADER_MUL_MV_ROWS_F16, GPU_SHADER_MUL_MV_ROWS_F16_QKV, GPU_SHADER_MUL_MV_ROWS_F16_NORM },
        { GGML_TYPE_Q8_0, GPU_SHADER_MUL_MV_ROWS_Q8_0, GPU_SHADER_MUL_MV_ROWS_Q8_0_QKV,
          GPU_SHADER_MUL_MV_ROWS_Q8_0_NORM },
        { GGML_TYPE_Q4_0, GPU_SHADER_MUL_MV_ROWS_Q4_0, GPU_SHADER_MUL_MV_ROWS_Q4_0_QKV,
          GPU_SHADER_MUL_MV_ROWS_Q4_0_NORM },
        { GGML_TYPE_Q4_K, GPU_SHADER_MUL_MV_ROWS_Q4_K, GPU_SHADER_MUL_MV_ROWS_Q4_K_QKV,
          GPU_SHADER_MUL_MV_ROWS_Q4_K_NORM },
        { GGML_TYPE_Q5_K, GPU_SHADER_MUL_MV_ROWS_Q5_K, GPU_SHADER_MUL_MV_ROWS_Q5_K_QKV,
          GPU_SHADER_MUL_MV_ROWS_Q5_K_NORM },
        { GGML_TYPE_Q6_K, GPU_SHADER_MUL_MV_ROWS_Q6_K, GPU_SHADER_MUL_MV_ROWS_Q6_K_QKV,
          GPU_SHADER_MUL_MV_ROWS_Q6_K_NORM },
};

/* mul_mv_rows for the type (GPU_MATVEC_UNITS_ROW), or -EOPNOTSUPP. F16 rows need n_cols % 32 == 0, the
 * kernel's step. */
static int rows_shader(GgmlType t, uint32_t n_cols, bool qkv, bool norm, GpuShaderId *ret) {
        for (size_t i = 0; i < ELEMENTSOF(rows_shaders); i++) {
                if (rows_shaders[i].type != t)
                        continue;
                *ret = qkv ? rows_shaders[i].qkv : norm ? rows_shaders[i].norm : rows_shaders[i].plain;
                return t == GGML_TYPE_F16 && n_cols % 32 != 0 ? -EOPNOTSUPP : 0;
        }
        return -EOPNOTSUPP;
}

static uint64_t binding_bytes(const GpuBinding *b) {
        uint64_t size = b->buffer ? gpu_buffer_size(b->buffer) : 0;
        if (b->offset >= size)
                return 0;
        return b->range ? MIN(b->range, size - b->offset) : size - b->offset;
}

static uint32_t pow2_floor(uint32_t v) {
        uint32_t p = 1;
        while (p <= v / 2)
                p *= 2;
        return p;
}

/* Columns per unit: one 16-byte load of a row, or 4 bytes for Q8_0/Q4_0 word units. */
static uint32_t unit_cols(GgmlType t, uint32_t wide_cols, GpuMatvecUnits units) {
        if (units != GPU_MATVEC_UNITS_WORD)
                return wide_cols;
        return t == GGML_TYPE_Q8_0 ? 4 : t == GGML_TYPE_Q4_0 ? 8 : wide_cols;
}

/*
 * GPU defaults per type, from sweeps on an NVIDIA H100 (bench-weights --sweep, 4096 x 14336
 * and 14336 x 4096, one vector; the setting with the best worst case of the two shapes). What
 * they showed: an uncapped grid wins everywhere (capping it, persistent workgroups, loses
 * 5-25%); 4 rows per group, 8 for Q4_0 (whose x loads are the costliest per weight byte), 2
 * for F32/F16 (whose x loads are cheap) and Q5_K; software pipelining and 4-byte units never
 * won by more than noise; f16 dequantisation always beats f32.
 */
/* A workgroup size from a wanted power of two p: at least a whole subgroup (and 32), at most hi (or
 * that subgroup) and what the device allows. */
static uint32_t block_clamp(const GpuCaps *caps, uint32_t p, uint32_t hi) {
        uint32_t lo = MAX(32u, caps->subgroup_size);
        p = MIN(MAX(p, lo), MAX(hi, lo));
        return pow2_floor(MIN(p, pow2_floor(MAX(caps->max_workgroup_invocations, 8u))));
}

/* The knobs that won with packed f16 arithmetic: one unit per iteration, about 8 units per
 * invocation (the block size rounded to the nearest power of two), at least a subgroup, at most 128. */
static void f16math_knobs(const GpuCaps *caps, uint32_t units, GpuMatvecParams *ret) {
        uint32_t b8 = MAX(units / 8, 1u), p = pow2_floor(b8);
        if (b8 - p > p / 2)
                p *= 2;
        ret->num_units = 1;
        ret->block_size = block_clamp(caps, p, 128);
}

typedef struct TypeDefaults {
        GgmlType type;
        uint8_t block_max, num_rows, num_units;
        GpuMatvecUnits units;
        GpuMatvecPipeline pipeline;
} TypeDefaults;

static const TypeDefaults type_defaults[] = {
        { GGML_TYPE_F32, 128, 2, 2, GPU_MATVEC_UNITS_WIDE, GPU_MATVEC_PIPELINE_OFF },
        { GGML_TYPE_F16, 128, 2, 2, GPU_MATVEC_UNITS_WIDE, GPU_MATVEC_PIPELINE_OFF },
        { GGML_TYPE_Q8_0, 128, 4, 2, GPU_MATVEC_UNITS_WIDE, GPU_MATVEC_PIPELINE_OFF },
        { GGML_TYPE_Q4_0, 128, 8, 1, GPU_MATVEC_UNITS_WIDE, GPU_MATVEC_PIPELINE_OFF },
        { GGML_TYPE_Q4_K, 64, 4, 1, GPU_MATVEC_UNITS_WIDE, GPU_MATVEC_PIPELINE_OFF },
        { GGML_TYPE_Q5_K, 64, 2, 1, GPU_MATVEC_UNITS_WIDE, GPU_MATVEC_PIPELINE_OFF },
        { GGML_TYPE_Q6_K, 64, 4, 2, GPU_MATVEC_UNITS_WIDE, GPU_MATVEC_PIPELINE_OFF },
};

void gpu_matvec_default_params(const GpuDevice *d, GgmlType type, uint32_t n_cols, uint32_t n_vectors,
                               GpuMatvecParams *ret) {
        const GpuCaps *caps = gpu_device_caps(d);
        TypeDefaults td = { type, 128, 4, 2, GPU_MATVEC_UNITS_WIDE, GPU_MATVEC_PIPELINE_OFF };
        TypeShaders ts = { .unit_cols = 4 };
        (void) type_shaders(type, &ts);

        for (size_t i = 0; i < ELEMENTSOF(type_defaults); i++)
                if (type_defaults[i].type == type)
                        td = type_defaults[i];
        ret->units = td.units;
        ret->num_units = td.num_units;
        ret->pipeline = td.pipeline;
        ret->dequant = GPU_MATVEC_DEQUANT_F16;
        /* Registers grow with rows x vectors. */
        ret->num_rows = n_vectors <= 2 ? td.num_rows : MIN(td.num_rows, 2u);
        ret->max_groups = UINT32_MAX;

        /* Rows not 16-byte aligned take the element-by-element path: a unit is one column. */
        uint32_t cols = unit_cols(type, ts.unit_cols, ret->units);
        uint32_t units = n_cols % cols == 0 ? n_cols / cols : n_cols;
        /* At least two units per invocation (and num_units), so each has loads per row in flight;
         * at least one whole subgroup; at most the type's measured best, which keeps enough
         * workgroups per multiprocessor. */
        ret->block_size = block_clamp(caps, pow2_floor(MAX(units / MAX(ret->num_units, 2u), 1u)), td.block_max);
        /* One unit per loop iteration and about 8 units per invocation (H100, % of copy bandwidth at
         * 4096x14336 / 14336x4096, was with 2 units and the block rule above): Q8_0 78.0/83.3
         * (77.4/78.6), Q4_K 61.5/62.8 (60.5/60.8), Q5_K 56.8/56.2 (56.6/56.0); Q6_K lost with f16
         * dequantisation (60.6/56.2, was 62.4/63.5) but won with packed f16 arithmetic, so it gets
         * these knobs only with that (f16math_knobs() in gpu_op_matvec_params()). */
        if (type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_K || type == GGML_TYPE_Q5_K)
                f16math_knobs(caps, units, ret);
        if (gpu_device_is_cpu(d)) {
                /* lavapipe runs a workgroup as a loop over SIMD-wide subgroups: one subgroup per
                 * workgroup (no shared-memory step) and integer-only dequantisation measure 20-40%
                 * faster there; the rest as the kernel always ran there (software pipelining only
                 * makes the shader slower to compile). */
                ret->block_size = MAX(8u, pow2_floor(MAX(caps->subgroup_size, 1u)));
                ret->dequant = GPU_MATVEC_DEQUANT_F32;
                ret->pipeline = GPU_MATVEC_PIPELINE_OFF;
                ret->units = GPU_MATVEC_UNITS_WIDE;
                ret->num_units = 2;
                ret->num_rows = n_vectors <= 2 ? 4 : 2;
                /* Whole rows per invocation (mul_mv_rows.comp says why): Q8_0 4096 x 768 went from
                 * 1.46 ms to 0.58 ms on a 2-core AVX-512 host (llvmpipe 22.3, 256 bits), about 90% of
                 * its copy bandwidth; 8 rows per lane beat 4 (0.61 ms) and tied 16. On a 2-core
                 * host (llvmpipe, LLVM 15, 256 bits), % of copy bandwidth at 4096x14336 / 14336x4096,
                 * one vector (runs vary by about 10%), was with mul_mv: F16 127/122 (72/68; 4 rows,
                 * 8 gave 108/88), Q4_0 73/73 (31/29), Q4_K 65/67 (27/24), Q5_K 56/50 (27/24), Q6_K
                 * 68/68 (29/27); with four vectors 4 rows beat 2, and mul_mv by 2-3x. F32 keeps
                 * mul_mv (96/92). */
                GpuShaderId row_sh;
                if (rows_shader(type, n_cols, false, false, &row_sh) == 0) {
                        ret->units = GPU_MATVEC_UNITS_ROW;
                        ret->num_rows = n_vectors <= 2 && type != GGML_TYPE_F16 ? 8 : 4;
                }
        }
        /* Integer dot products: x is quantised once per workgroup, so more rows share it (8, where
         * the float path's best was 2-8). One unit per iteration: a unit is already 16-32 columns of
         * 4-8 rows. Not measured on a GPU yet: the figures in gpu_op_matvec_params() are for the
         * float path, which the sweeps of bench-weights compare with this one. */
        ret->int_digits = 2;
        ret->group_loops = 0;
        if (gpu_device_use_int_dot(d) && dot_shaders_of(type) && n_cols % 16 == 0) {
                GpuMatvecParams t = *ret;
                t.dequant = GPU_MATVEC_DEQUANT_DOT;
                t.units = GPU_MATVEC_UNITS_WIDE;
                t.pipeline = GPU_MATVEC_PIPELINE_OFF;
                t.num_units = 1;
                t.num_rows = n_vectors <= 2 ? 8 : 4;
                if (!gpu_device_is_cpu(d))
                        t.block_size = block_clamp(caps, pow2_floor(MAX(n_cols / ts.unit_cols, 1u)), 128);
                if (matvec_shared_bytes(t.block_size, t.num_rows, n_vectors, true, n_cols, t.int_digits) <=
                    caps->max_shared_memory)
                        *ret = t;
        }
}

static int qkv_check(const GpuTensor *w, uint32_t n_vectors, const GpuMatvecQkv *q) {
        uint64_t n_q = (uint64_t) q->n_head * q->head_dim, n_kv = (uint64_t) q->n_head_kv * q->head_dim;

        if (q->mode != GPU_ROPE_NORMAL && q->mode != GPU_ROPE_NEOX)
                return -EINVAL;
        if (q->n_head == 0 || q->n_head_kv == 0 || q->head_dim == 0 || q->head_dim % 2 != 0 || q->n_rot % 2 != 0 ||
            q->n_rot > q->head_dim || q->n_ctx == 0 || !(q->freq_base > 0) || !isfinite(q->freq_scale))
                return -EINVAL;
        if (q->k_row < n_q || q->v_row < q->k_row + n_kv || q->v_row + n_kv > w->n_rows)
                return -EINVAL;
        if (binding_bytes(&q->pos) < (uint64_t) n_vectors * 4 ||
            binding_bytes(&q->k_cache) < n_kv * q->n_ctx * 2 || binding_bytes(&q->v_cache) < n_kv * q->n_ctx * 2 ||
            (q->freq_factors_inv.buffer && binding_bytes(&q->freq_factors_inv) < (uint64_t) q->n_rot / 2 * 4) ||
            (q->bias.buffer && binding_bytes(&q->bias) < (uint64_t) w->n_rows * 4))
                return -EINVAL;
        /* Quads (mv_qkv.glsl) must fill every head, and not cross chunks. */
        if (q->head_dim % 4 != 0 || (q->mode == GPU_ROPE_NEOX && q->n_rot % 4 != 0) || w->n_chunks != 1)
                return -EOPNOTSUPP;
        return 0;
}

static void qkv_push(const GpuMatvecQkv *q, MulMvQkvPush *ret) {
        ret->k_row = q->k_row;
        ret->v_row = q->v_row;
        ret->n_q = q->n_head * q->head_dim;
        ret->n_kv = q->n_head_kv * q->head_dim;
        ret->head_dim = q->head_dim;
        ret->n_rot = q->n_rot;
        ret->n_ctx = q->n_ctx;
        /* Rounded to float once, as gpu_op_rope() does, so the two rotate alike. */
        ret->theta_scale = q->n_rot ? (float) pow(q->freq_base, -2.0 / q->n_rot) : 1.0f;
        ret->freq_scale = q->freq_scale;
        ret->has_factors = q->freq_factors_inv.buffer != NULL;
        ret->has_bias = q->bias.buffer != NULL;
        ret->neox = q->mode == GPU_ROPE_NEOX;
}

/* Workgroups of one chunk's dispatch that do work: row groups, or fewer with a capped grid. */
static uint32_t matvec_groups(const GpuMatvecParams *mp, bool row, uint32_t group_rows, uint32_t out_rows) {
        uint32_t row_groups = (out_rows + group_rows - 1) / group_rows;
        if (row)        /* block_size x num_rows rows per workgroup, no loop */
                return (out_rows + mp->block_size * group_rows - 1) / (mp->block_size * group_rows);
        uint32_t per_wg = (row_groups + mp->max_groups - 1) / mp->max_groups;
        if (mp->max_groups >= row_groups)
                per_wg = 1;
        per_wg = MAX(per_wg, mp->group_loops);
        return (row_groups + per_wg - 1) / per_wg;
}

/* Workgroups the norm counts in a dispatch of `groups`: mul_mv's overhang returns at once, mul_mv_rows's
 * runs (an early return costs it on llvmpipe) and counts. */
static uint32_t norm_counted(const GpuCaps *caps, uint32_t groups, bool row) {
        uint32_t gx = MIN(groups, caps->max_workgroup_count[0]);
        return row ? gx * ((groups + gx - 1) / gx) : groups;
}

uint64_t gpu_matvec_norm_scratch_size(uint32_t n_rows, uint32_t n_vectors) {
        /* The counter, then a sum per vector and workgroup (mul_mv: at most one per row), or per invocation
         * (mul_mv_rows: at least one row each, plus a workgroup of slack per dimension of the grid). */
        return 4 * (1 + ((uint64_t) n_rows + 2048) * n_vectors);
}

int gpu_op_matvec_params(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y,
                         uint32_t n_vectors, const GpuMatvecParams *params) {
        const GpuCaps *caps = gpu_device_caps(d);
        GpuMatvecParams mp;
        TypeShaders ts;
        GpuPipeline *p;
        int r;

        if (!w || n_vectors == 0 || n_vectors > GPU_MATVEC_MAX_VECTORS)
                return -EINVAL;
        r = type_shaders(w->type, &ts);
        if (r < 0)
                return r;
        /* SwiGLU pairs: n_out outputs from gate rows [0, n_out) and up rows [up_row, up_row + n_out). */
        uint32_t up_row = params ? params->swiglu_up_row : 0, n_out = params ? params->swiglu_rows : 0;
        bool pair = n_out > 0;
        if (pair && (params->accumulate || up_row < n_out || up_row > w->n_rows || n_out > w->n_rows - up_row))
                return -EINVAL;
        if (pair && w->n_chunks != 1)
                return -EOPNOTSUPP;
        /* Q/K/V pairs: (2e, 2e + 1) rows of q, then k, then v; y is the whole projection's output. */
        const GpuMatvecQkv *qkv = params ? params->qkv : NULL;
        if (qkv) {
                if (params->accumulate || pair || params->norm)
                        return -EINVAL;
                r = qkv_check(w, n_vectors, qkv);
                if (r < 0)
                        return r;
                n_out = (qkv->n_head + 2 * qkv->n_head_kv) * (qkv->head_dim / 4);
                pair = true;    /* the kernel's tuple machinery, with mv_qkv.glsl's quads */
        }
        /* Floats per vector in y; pairs make n_out outputs per vector. */
        uint32_t y_rows = pair && !qkv ? n_out : w->n_rows;
        if (!pair)
                n_out = w->n_rows;
        if (binding_bytes(&x) < (uint64_t) n_vectors * w->n_cols * sizeof(float) ||
            binding_bytes(&y) < (uint64_t) n_vectors * y_rows * sizeof(float))
                return -EINVAL;
        /* The norm: of the whole y after the residual add, into its own output. */
        const GpuMatvecNorm *norm = params ? params->norm : NULL;
        if (norm && (!params->accumulate || pair || !(norm->eps >= 0) ||
                     binding_bytes(&norm->weight) < (uint64_t) w->n_rows * sizeof(float) ||
                     binding_bytes(&norm->out) < (uint64_t) n_vectors * w->n_rows * sizeof(float) ||
                     binding_bytes(&norm->scratch) < gpu_matvec_norm_scratch_size(w->n_rows, n_vectors)))
                return -EINVAL;

        gpu_matvec_default_params(d, w->type, w->n_cols, n_vectors, &mp);
        if (params && params->block_size)
                mp.block_size = params->block_size;
        if (params && params->num_rows)
                mp.num_rows = params->num_rows;
        if (params && params->dequant)
                mp.dequant = params->dequant;
        if (mp.dequant == GPU_MATVEC_DEQUANT_F16MATH && ts.has_h && w->type != GGML_TYPE_Q4_0 &&
            !gpu_device_is_cpu(d)) {
                /* Packed f16 arithmetic (H100, bench-weights --dequant=h16, % of copy bandwidth at
                 * 4096x14336 / 14336x4096, was with the defaults): Q8_0 79.0/84.5 (78.0/83.3), Q4_0
                 * 69.2/60.4 (64.7/57.9, its own knobs), Q4_K 60.0/63.1 (61.5/62.8), Q5_K 58.2/57.5
                 * (56.8/56.2), Q6_K 67.9/70.6 (62.4/63.5), with these knobs. Not the default: it
                 * rounds x to f16 (NMSE ~1e-6, and test-gpu-model's llama logits moved by 2.25e-3 of
                 * the largest, over its 2e-3 bound). */
                uint32_t cols = unit_cols(w->type, ts.unit_cols, mp.units);
                f16math_knobs(caps, w->n_cols % cols == 0 ? w->n_cols / cols : w->n_cols, &mp);
                if (params->block_size)
                        mp.block_size = params->block_size;
        }
        if (params && params->num_units)
                mp.num_units = params->num_units;
        if (params && params->units)
                mp.units = params->units;
        if (params && params->max_groups)
                mp.max_groups = params->max_groups;
        if (params && params->pipeline)
                mp.pipeline = params->pipeline;
        if (params && params->group_loops)
                mp.group_loops = params->group_loops;
        if (params && params->int_digits)
                mp.int_digits = params->int_digits;
        if (mp.block_size < 8 || (mp.block_size & (mp.block_size - 1)) != 0 ||
            mp.block_size > caps->max_workgroup_invocations || mp.num_rows == 0 || mp.num_rows > 16 ||
            mp.dequant > GPU_MATVEC_DEQUANT_DOT || mp.num_units == 0 || mp.num_units > 4 ||
            mp.units > GPU_MATVEC_UNITS_ROW || mp.pipeline > GPU_MATVEC_PIPELINE_ON || mp.group_loops > 64 ||
            mp.int_digits < 1 || mp.int_digits > 2)
                return -EINVAL;
        /* Integer dot products: quantised weights in wide units (whole rows and 4-byte units have no
         * such variant); F32/F16 weights ignore the choice, as they do packed f16 arithmetic. */
        const DotShaders *ds = mp.dequant == GPU_MATVEC_DEQUANT_DOT ? dot_shaders_of(w->type) : NULL;
        bool dot_asked = params && params->dequant == GPU_MATVEC_DEQUANT_DOT;
        if (ds && !dot_asked && params && params->units && params->units != GPU_MATVEC_UNITS_WIDE)
                ds = NULL;      /* a default, and the caller asked for units it does not have */
        if (mp.dequant == GPU_MATVEC_DEQUANT_DOT && !ds)
                mp.dequant = gpu_device_is_cpu(d) ? GPU_MATVEC_DEQUANT_F32 : GPU_MATVEC_DEQUANT_F16;
        if (ds) {
                if (!caps->int_dot)
                        return -EOPNOTSUPP;
                if (!params || !params->units)
                        mp.units = GPU_MATVEC_UNITS_WIDE;
                if (mp.units != GPU_MATVEC_UNITS_WIDE)
                        return -EINVAL;
                /* x is read in 16-column groups; at least a few workgroups per multiprocessor on a GPU
                 * (512 of them) before a workgroup takes more row groups, at most 4 (the last rows of
                 * the grid must not be a long tail). */
                if (mp.group_loops == 0) {
                        uint32_t rg = (n_out + mp.num_rows - 1) / mp.num_rows;
                        mp.group_loops = gpu_device_is_cpu(d) ? 1 : MIN(MAX(rg / 512, 1u), 4u);
                }
        }
        bool row = mp.units == GPU_MATVEC_UNITS_ROW;
        GpuShaderId row_sh = 0;
        if (row) {
                r = rows_shader(w->type, w->n_cols, qkv != NULL, params && params->norm, &row_sh);
                if (r < 0)
                        return r;
        }
        /* Tuples (a gate row and its up row, or a Q/K/V quad) are taken whole: rows in multiples of them. */
        uint32_t tuple = qkv ? 4 : pair ? 2 : 1;
        mp.num_rows = MIN((mp.num_rows + tuple - 1) / tuple * tuple, 16u);
        /* The reduction's shared array (rows x vectors x block floats) must fit beside x. */
        while (matvec_shared_bytes(mp.block_size, mp.num_rows, n_vectors, ds, w->n_cols, mp.int_digits) >
                       caps->max_shared_memory &&
               mp.num_rows > tuple)
                mp.num_rows /= 2;
        if (ds && matvec_shared_bytes(mp.block_size, mp.num_rows, n_vectors, ds, w->n_cols, mp.int_digits) >
                          caps->max_shared_memory)
                return -E2BIG;
        /* Outputs per row group. */
        uint32_t group_rows = mp.num_rows / tuple;
        bool word = unit_cols(w->type, ts.unit_cols, mp.units) != ts.unit_cols;

        GpuSpec spec = {
                .v = { mp.block_size, 1, 1, mp.num_rows, n_vectors, mp.dequant == GPU_MATVEC_DEQUANT_F16,
                       mp.num_units, word, mp.pipeline == GPU_MATVEC_PIPELINE_ON },
                .n = 9,
        };
        GpuShaderId sh = gpu_device_use_subgroup(d) ? ts.mv : ts.mv_nosg;
        if (ds) {
                /* Constants 9 and 10 only here: other variants would be built once per row length. */
                spec.v[9] = w->n_cols / 16;
                spec.v[10] = mp.int_digits;
                spec.n = 11;
                if (qkv)
                        sh = gpu_device_use_subgroup(d) ? ds->qkv : ds->qkv_nosg;
                else
                        sh = gpu_device_use_subgroup(d) ? ds->mv : ds->mv_nosg;
        } else if (row)
                sh = row_sh;
        else if (qkv)
                sh = gpu_device_use_subgroup(d) ? ts.mv_qkv : ts.mv_qkv_nosg;
        else if (mp.dequant == GPU_MATVEC_DEQUANT_F16MATH && ts.has_h) {
                if (!caps->fp16)
                        return -EOPNOTSUPP;
                sh = gpu_device_use_subgroup(d) ? ts.mv_h : ts.mv_h_nosg;
        }
        r = gpu_pipeline_get(d, sh, &spec, &p);
        if (r < 0)
                return r;

        /* Workgroups per chunk first: the norm counts those of all chunks. */
        uint32_t norm_groups = 0, norm_base = 0;
        for (uint32_t i = 0; norm && i < w->n_chunks; i++) {
                uint32_t g = norm_counted(caps, matvec_groups(&mp, row, group_rows, w->chunks[i].n_rows), row);
                if (g > UINT32_MAX / mp.block_size - norm_groups)
                        return -E2BIG;
                norm_groups += g;
        }
        /* A sum per workgroup, or per invocation for mul_mv_rows (mv_norm.glsl says why). */
        uint64_t norm_sums = (uint64_t) norm_groups * (row ? mp.block_size : 1) * n_vectors;
        if (norm && binding_bytes(&norm->scratch) < 4 * (1 + norm_sums))
                return -EINVAL;

        for (uint32_t i = 0; i < w->n_chunks; i++) {
                const GpuTensorChunk *ch = &w->chunks[i];
                /* Workgroups loop over row groups: at most max_groups of them, each taking the same
                 * number of groups (ceil), so none is left with a long tail of its own. */
                uint32_t out_rows = pair ? n_out : ch->n_rows;
                uint32_t groups = matvec_groups(&mp, row, group_rows, out_rows);
                uint32_t gx = MIN(groups, caps->max_workgroup_count[0]);
                uint32_t gy = (groups + gx - 1) / gx;
                if (gy > caps->max_workgroup_count[1])
                        return -E2BIG;
                MulMvQkvPush push = {
                        .mv = {
                                .ncols = w->n_cols,
                                .nrows = out_rows,
                                .x_stride = w->n_cols,
                                .y_stride = y_rows,
                                .y_offset = ch->row0,
                                .accumulate = params && params->accumulate,
                                .pair_offset = pair && !qkv ? up_row : 0,
                                .norm = !!norm,
                                .norm_groups = norm_groups,
                                .norm_base = norm_base,
                                .norm_eps = norm ? norm->eps : 0,
                        },
                };
                if (qkv)
                        qkv_push(qkv, &push);
                /* Bindings an op does not use are never read or written: y stands in. */
                GpuBinding b[12] = {
                        { ch->buffer, 0, 0 },
                        { ch->buffer, ch->d_offset, 0 },
                        x,
                        y,
                        norm ? norm->weight : y,
                        norm ? norm->out : y,
                        norm ? norm->scratch : y,
                        qkv ? qkv->pos : y,
                        qkv ? qkv->k_cache : y,
                        qkv ? qkv->v_cache : y,
                        qkv && qkv->freq_factors_inv.buffer ? qkv->freq_factors_inv : y,
                        qkv && qkv->bias.buffer ? qkv->bias : y,
                };
                norm_base += norm_counted(caps, groups, row);
                r = gpu_cmd_dispatch(c, p, b, qkv ? 12 : 7, &push, qkv ? sizeof push : sizeof push.mv, gx, gy, 1);
                if (r < 0)
                        return r;
        }
        return 0;
}

int gpu_op_matvec(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y, uint32_t n_vectors) {
        return gpu_op_matvec_params(c, d, w, x, y, n_vectors, NULL);
}

int gpu_op_matvec_add(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y, uint32_t n_vectors) {
        const GpuMatvecParams mp = { .accumulate = true };
        return gpu_op_matvec_params(c, d, w, x, y, n_vectors, &mp);
}

int gpu_op_matvec_add_norm(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y,
                           uint32_t n_vectors, const GpuMatvecNorm *norm) {
        if (!norm)
                return -EINVAL;
        const GpuMatvecParams mp = { .accumulate = true, .norm = norm };
        return gpu_op_matvec_params(c, d, w, x, y, n_vectors, &mp);
}

int gpu_op_matvec_qkv(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y, uint32_t n_vectors,
                      const GpuMatvecQkv *qkv) {
        if (!qkv)
                return -EINVAL;
        const GpuMatvecParams mp = { .qkv = qkv };
        return gpu_op_matvec_params(c, d, w, x, y, n_vectors, &mp);
}

int gpu_op_matvec_swiglu(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y,
                         uint32_t n_vectors, uint32_t n_out, uint32_t up_row) {
        if (n_out == 0)
                return -EINVAL;
        const GpuMatvecParams mp = { .swiglu_rows = n_out, .swiglu_up_row = up_row };
        return gpu_op_matvec_params(c, d, w, x, y, n_vectors, &mp);
}

#define GET_ROWS_BLOCK 128u

static int get_rows(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding ids, GpuBinding out, uint32_t n_ids,
                    const GpuEmbed *e) {
        const GpuCaps *caps = gpu_device_caps(d);
        TypeShaders ts;
        GpuPipeline *p;
        int r;

        if (!w)
                return -EINVAL;
        r = type_shaders(w->type, &ts);
        if (r < 0)
                return r;
        if (n_ids == 0)
                return 0;
        if (binding_bytes(&ids) < (uint64_t) n_ids * sizeof(uint32_t) ||
            binding_bytes(&out) < (uint64_t) n_ids * w->n_cols * sizeof(float))
                return -EINVAL;
        bool pos = e && e->pos_in.buffer;
        if (e && (binding_bytes(&e->norm_weight) < (uint64_t) w->n_cols * sizeof(float) ||
                  binding_bytes(&e->norm_out) < (uint64_t) n_ids * w->n_cols * sizeof(float) || !(e->eps >= 0)))
                return -EINVAL;
        if (pos && (binding_bytes(&e->pos_in) < (uint64_t) n_ids * 4 ||
                    binding_bytes(&e->pos_out) < (uint64_t) n_ids * 4))
                return -EINVAL;

        GpuSpec spec = { .v = { GET_ROWS_BLOCK }, .n = 1 };
        r = gpu_pipeline_get(d, ts.get_rows, &spec, &p);
        if (r < 0)
                return r;

        /* One workgroup per id, looping over the columns; y and z: ids. */
        uint32_t gx = 1;
        uint32_t gy = MIN(n_ids, caps->max_workgroup_count[1]);
        uint32_t gz = (n_ids + gy - 1) / gy;
        if (gz > caps->max_workgroup_count[2])
                return -E2BIG;
        for (uint32_t i = 0; i < w->n_chunks; i++) {
                const GpuTensorChunk *ch = &w->chunks[i];
                GetRowsPush push = {
                        .ncols = w->n_cols,
                        .row0 = ch->row0,
                        .nrows = ch->n_rows,
                        .total_rows = w->n_rows,
                        .n_ids = n_ids,
                        .out_stride = w->n_cols,
                        .zero_oob = i == 0,
                        .norm = e != NULL,
                        .eps = e ? e->eps : 0,
                        .copy_pos = pos && i == 0,
                };
                /* Bindings an op does not use are never read or written: out stands in. */
                GpuBinding b[8] = {
                        { ch->buffer, 0, 0 },
                        { ch->buffer, ch->d_offset, 0 },
                        ids,
                        out,
                        e ? e->norm_weight : out,
                        e ? e->norm_out : out,
                        pos ? e->pos_in : out,
                        pos ? e->pos_out : out,
                };
                r = gpu_cmd_dispatch(c, p, b, ELEMENTSOF(b), &push, sizeof push, gx, gy, gz);
                if (r < 0)
                        return r;
        }
        return 0;
}

int gpu_op_get_rows(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding ids, GpuBinding out, uint32_t n_ids) {
        return get_rows(c, d, w, ids, out, n_ids, NULL);
}

int gpu_op_embed(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding ids, GpuBinding out, uint32_t n_ids,
                 const GpuEmbed *e) {
        if (!e)
                return -EINVAL;
        return get_rows(c, d, w, ids, out, n_ids, e);
}
