/* SPDX-License-Identifier: MIT */
/*
 * Matrix x matrix for prefill (shaders/mul_mm.comp; mul_mm_cm.comp on
 * tensor cores; mul_mm_rows.comp on CPU devices): kernel and tile choice,
 * dispatch per weight chunk, the C reference and the benchmark entry point.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "bench.h"
#include "macro.h"
#include "ops-matmul.h"

/* Mirrors the push-constant block of shaders/mul_mm.comp. */
typedef struct MatmulPush {
        uint32_t k;
        uint32_t n_rows;
        uint32_t n_tokens;
        uint32_t y_stride;
        uint32_t y_col0;
} MatmulPush;
static_assert(sizeof(MatmulPush) == 20, "MatmulPush must match mul_mm.comp's push block");
static_assert(sizeof(MatmulPush) <= 128, "push constants are limited to 128 bytes");

/* The kernel's K step (BK in mul_mm.comp) and the shared-memory row it pads to. */
#define MM_BK 32u
#define MM_STRIDE_BYTES ((MM_BK / 4 + 1) * 16u)

typedef struct MmTile {
        uint32_t bm, bn;        /* output tile: weight rows x tokens */
        uint32_t tm, tn;        /* register micro-tile per invocation */
} MmTile;

/*
 * 128x128 with 8x8 per invocation (256 invocations, 36 KiB of shared memory,
 * 64 accumulators) is the classic discrete-GPU shape: 8 FMAs per shared
 * memory read. 64x64 at 4x4 (18 KiB) fits devices with 32 KiB and wastes
 * less on short batches; 32x32 at 4x4 (9 KiB, 64 invocations) fits the
 * Vulkan minimums (16 KiB, 128 invocations), so every device gets a kernel.
 * CPU devices (lavapipe) run one workgroup per thread with a software
 * barrier: fewer invocations with more work each (64x64 at 8x8) measured
 * about twice as fast there as 64x64 at 4x4.
 */
static const MmTile tile_large = { 128, 128, 8, 8 };
static const MmTile tile_medium = { 64, 64, 4, 4 };
static const MmTile tile_small = { 32, 32, 4, 4 };
static const MmTile tile_cpu = { 64, 64, 8, 8 };

static uint32_t tile_invocations(const MmTile *t) {
        return (t->bm / t->tm) * (t->bn / t->tn);
}

static uint32_t tile_shared_bytes(const MmTile *t) {
        return (t->bm + t->bn) * MM_STRIDE_BYTES;
}

static bool tile_fits(const GpuCaps *caps, const MmTile *t) {
        return t->tm > 0 && t->tn > 0 && t->tm <= 8 && t->tn <= 8 && t->bm % t->tm == 0 && t->bn % t->tn == 0 &&
               tile_invocations(t) <= caps->max_workgroup_invocations && tile_invocations(t) <= 1024 &&
               tile_shared_bytes(t) <= caps->max_shared_memory;
}

/*
 * $INFERD_GPU_MM_TILE=BM,BN,TM,TN overrides the choice, for tuning on new
 * hardware; a shape the device cannot run is ignored.
 */
static bool tile_from_env(const GpuCaps *caps, MmTile *ret) {
        const char *e = getenv("INFERD_GPU_MM_TILE");
        MmTile t;

        if (!e || sscanf(e, "%u,%u,%u,%u", &t.bm, &t.bn, &t.tm, &t.tn) != 4 || !tile_fits(caps, &t))
                return false;
        *ret = t;
        return true;
}

static MmTile tile_choose(GpuDevice *d, uint32_t n_rows, uint32_t n_tokens) {
        const GpuCaps *caps = gpu_device_caps(d);
        MmTile t;

        if (tile_from_env(caps, &t))
                return t;
        if (gpu_device_is_cpu(d) && tile_fits(caps, &tile_cpu))
                return tile_cpu;
        /* Short batches or few rows would leave most of a large tile idle. */
        if (n_tokens > 64 && n_rows > 64 && tile_fits(caps, &tile_large))
                return tile_large;
        if (tile_fits(caps, &tile_medium))
                return tile_medium;
        return tile_small;
}

/* The kernels per weight type: plain, on tensor cores, and for CPU devices. */
static const struct {
        GgmlType type;
        GpuShaderId plain, coopmat, rows;
} mm_shaders[] = {
        { GGML_TYPE_F32, GPU_SHADER_MUL_MM_F32, GPU_SHADER_MUL_MM_CM_F32, GPU_SHADER_MUL_MM_ROWS_F32 },
        { GGML_TYPE_F16, GPU_SHADER_MUL_MM_F16, GPU_SHADER_MUL_MM_CM_F16, GPU_SHADER_MUL_MM_ROWS_F16 },
        { GGML_TYPE_Q8_0, GPU_SHADER_MUL_MM_Q8_0, GPU_SHADER_MUL_MM_CM_Q8_0, GPU_SHADER_MUL_MM_ROWS_Q8_0 },
        { GGML_TYPE_Q4_0, GPU_SHADER_MUL_MM_Q4_0, GPU_SHADER_MUL_MM_CM_Q4_0, GPU_SHADER_MUL_MM_ROWS_Q4_0 },
        { GGML_TYPE_Q4_K, GPU_SHADER_MUL_MM_Q4_K, GPU_SHADER_MUL_MM_CM_Q4_K, GPU_SHADER_MUL_MM_ROWS_Q4_K },
        { GGML_TYPE_Q5_K, GPU_SHADER_MUL_MM_Q5_K, GPU_SHADER_MUL_MM_CM_Q5_K, GPU_SHADER_MUL_MM_ROWS_Q5_K },
        { GGML_TYPE_Q6_K, GPU_SHADER_MUL_MM_Q6_K, GPU_SHADER_MUL_MM_CM_Q6_K, GPU_SHADER_MUL_MM_ROWS_Q6_K },
};

/* ---- the CPU kernel (mul_mm_rows.comp) -----------------------------------
 *
 * A workgroup is one SIMD vector of lanes (8 on AVX2; more would only add
 * llvmpipe's coroutine switches). A lane holds RM_ROWS rows x RM_TOKENS
 * tokens of accumulators and its rows' dequantised step. What costs there is
 * the loads (each a loop over the lanes), so the tile is as large as pays:
 * on lavapipe (2 cores, Q8_0 4096 x 4096 x 512 tokens) 8 x 8 ran at 21
 * GFLOP/s, 16 x 8 at 26, 24 x 8 at 29, 24 x 12 at 35-38 (the tiled kernel:
 * 11), and larger tiles no faster, as LLVM spills more. x is read 32 bytes
 * a load, which needs shaderInt64.
 */
#define RM_LANES 8u
#define RM_ROWS 24u
#define RM_TOKENS 12u

bool gpu_matmul_rows(GpuDevice *d, uint32_t n_cols) {
        const char *e = getenv("INFERD_GPU_MM_ROWS");

        if (n_cols % 32 != 0 || !gpu_device_caps(d)->shader_int64)
                return false;
        if (e && (streq(e, "0") || streq(e, "1")))
                return streq(e, "1");
        return gpu_device_is_cpu(d);
}

/* $INFERD_GPU_MM_ROWS_SHAPE=ROWS,TOKENS overrides the lane tile, for tuning. */
static void rows_shape(uint32_t *ret_rows, uint32_t *ret_tokens) {
        const char *e = getenv("INFERD_GPU_MM_ROWS_SHAPE");
        unsigned r, t;

        *ret_rows = RM_ROWS;
        *ret_tokens = RM_TOKENS;
        if (e && sscanf(e, "%u,%u", &r, &t) == 2 && r >= 1 && r <= 32 && t >= 1 && t <= 32) {
                *ret_rows = r;
                *ret_tokens = t;
        }
}

/* ---- the tensor-core kernel (mul_mm_cm.comp) ----------------------------
 *
 * Isolated on purpose: only devices with VK_NV_cooperative_matrix run it,
 * and CI's lavapipe has no such extension, so only such a device tests it
 * (test-matmul runs every case through both kernels there).
 *
 * Four subgroups of 32 (2 x 2) per workgroup, 128 weight rows x 32/64/128
 * tokens per tile, matrices of CM_M x CM_N x CM_K = 16 x 8 x 16 (f16 inputs,
 * F32 accumulators: the shape NVIDIA drivers list since Turing; the engine
 * does not query the list yet). glslang compiles GL_NV_cooperative_matrix to
 * the Vulkan memory model, so caps.coopmat_nv must also mean the device's
 * vulkanMemoryModel feature is enabled. $INFERD_GPU_MM_CM_TILE=BM,BN and
 * $INFERD_GPU_MM_CM_SHAPE=M,N,K override, for tuning; $INFERD_GPU_NO_COOPMAT=1
 * turns the kernel off.
 */
#define CM_INVOCATIONS 128u

typedef struct CmTile {
        uint32_t bm, bn;
        uint32_t m, n, k;       /* matrix shape */
} CmTile;

static uint32_t cm_shared_bytes(const CmTile *t) {
        /* A and B tiles: 40 halves a row; the output staging: 4 subgroups x m x n floats. */
        return (t->bm + t->bn) * 80 + 4 * t->m * t->n * 4;
}

static bool cm_tile_fits(const GpuCaps *caps, const CmTile *t) {
        return t->m > 0 && t->n > 0 && (t->k == 8 || t->k == 16 || t->k == 32) && t->bm % (2 * t->m) == 0 &&
               t->bn % (2 * t->n) == 0 && t->bm > 0 && t->bn > 0 &&
               (t->bm / 2 / t->m) * (t->bn / 2 / t->n) <= 64 && cm_shared_bytes(t) <= caps->max_shared_memory;
}

bool gpu_matmul_coopmat(GpuDevice *d) {
        const GpuCaps *caps = gpu_device_caps(d);
        const char *e = getenv("INFERD_GPU_NO_COOPMAT");

        if (e && streq(e, "1"))
                return false;
        return caps->coopmat_nv && caps->fp16 && caps->subgroup_size == 32 &&
               caps->max_workgroup_invocations >= CM_INVOCATIONS;
}

/* The shape to run, or false when even the default does not fit the device
 * (then the plain kernel runs). An override that does not fit is ignored. */
static bool cm_tile_choose(GpuDevice *d, uint32_t n_tokens, CmTile *ret) {
        const GpuCaps *caps = gpu_device_caps(d);
        const CmTile def = { 128, n_tokens <= 32 ? 32 : n_tokens <= 64 ? 64 : 128, 16, 8, 16 };
        CmTile t = def;
        const char *e;

        e = getenv("INFERD_GPU_MM_CM_TILE");
        if (e && sscanf(e, "%u,%u", &t.bm, &t.bn) != 2)
                t = def;
        e = getenv("INFERD_GPU_MM_CM_SHAPE");
        if (e && sscanf(e, "%u,%u,%u", &t.m, &t.n, &t.k) != 3)
                t = def;
        if (!cm_tile_fits(caps, &t))
                t = def;
        if (!cm_tile_fits(caps, &t))
                return false;
        *ret = t;
        return true;
}

/* What one gpu_op_matmul() runs: the kernel, its constants, its tile. */
typedef struct MmPlan {
        GpuShaderId id;
        GpuSpec spec;
        uint32_t bm, bn;
        bool tokens_first;      /* grid (token blocks, row blocks) instead of (rows, tokens) */
} MmPlan;

static int mm_plan(GpuDevice *d, GgmlType type, uint32_t n_rows, uint32_t n_cols, uint32_t n_tokens, bool coopmat,
                   MmPlan *ret) {
        size_t i;
        CmTile cm;

        for (i = 0; i < ELEMENTSOF(mm_shaders); i++)
                if (mm_shaders[i].type == type)
                        break;
        if (i == ELEMENTSOF(mm_shaders))
                return -EINVAL;

        if (coopmat && cm_tile_choose(d, n_tokens, &cm)) {
                *ret = (MmPlan) {
                        .id = mm_shaders[i].coopmat,
                        .spec = { .v = { CM_INVOCATIONS, 0, 0, cm.bm, cm.bn, cm.m, cm.n, cm.k }, .n = 8 },
                        .bm = cm.bm,
                        .bn = cm.bn,
                };
                return 0;
        }

        if (!coopmat && gpu_matmul_rows(d, n_cols)) {
                uint32_t rr, rt;

                rows_shape(&rr, &rt);
                *ret = (MmPlan) {
                        .id = mm_shaders[i].rows,
                        .spec = { .v = { RM_LANES, 0, 0, rr, rt }, .n = 5 },
                        .bm = RM_LANES * rr,
                        .bn = rt,
                        .tokens_first = true,
                };
                return 0;
        }

        MmTile t = tile_choose(d, n_rows, n_tokens);
        *ret = (MmPlan) {
                .id = mm_shaders[i].plain,
                .spec = { .v = { tile_invocations(&t), 0, 0, t.bm, t.bn, t.tm, t.tn }, .n = 7 },
                .bm = t.bm,
                .bn = t.bn,
        };
        return 0;
}

/* Whether the layout has a separate f16 scale region D (tensor.h). */
static bool has_d_region(GgmlType type) {
        return type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q6_K;
}

int gpu_op_matmul(GpuCmd *c, GpuDevice *d, const GpuTensor *w, GpuBinding x, GpuBinding y, uint32_t n_tokens) {
        MmPlan plan;
        GpuPipeline *p;
        int r;

        if (!c || !d || !w || !x.buffer || !y.buffer || w->n_cols == 0 || w->n_rows == 0)
                return -EINVAL;
        if (n_tokens == 0)
                return ggml_type_supported(w->type) ? 0 : -EINVAL;
        if (gpu_binding_bytes(x) < (uint64_t) n_tokens * w->n_cols * sizeof(float) ||
            gpu_binding_bytes(y) < (uint64_t) n_tokens * w->n_rows * sizeof(float))
                return -EINVAL;
        bool coopmat = gpu_matmul_coopmat(d);
        r = mm_plan(d, w->type, w->n_rows, w->n_cols, n_tokens, coopmat, &plan);
        if (r < 0)
                return r;
        r = gpu_pipeline_get(d, plan.id, &plan.spec, &p);
        if (r < 0 && coopmat) {
                /* A driver that refuses the tensor-core pipeline still gets the plain one. */
                log_debug_errno(r, "Tensor-core matmul pipeline %s failed, using the plain kernel: %m",
                                gpu_shader_table[plan.id].name);
                r = mm_plan(d, w->type, w->n_rows, w->n_cols, n_tokens, false, &plan);
                if (r < 0)
                        return r;
                r = gpu_pipeline_get(d, plan.id, &plan.spec, &p);
        }
        if (r < 0)
                return r;

        uint32_t g_tokens = (n_tokens + plan.bn - 1) / plan.bn;
        if (g_tokens > gpu_device_caps(d)->max_workgroup_count[plan.tokens_first ? 0 : 1])
                return -E2BIG;
        for (uint32_t i = 0; i < w->n_chunks; i++) {
                const GpuTensorChunk *ch = &w->chunks[i];
                MatmulPush push = {
                        .k = w->n_cols,
                        .n_rows = ch->n_rows,
                        .n_tokens = n_tokens,
                        .y_stride = w->n_rows,
                        .y_col0 = ch->row0,
                };
                GpuBinding b[4] = {
                        { ch->buffer, ch->qs_offset, 0 },
                        { ch->buffer, has_d_region(w->type) ? ch->d_offset : ch->qs_offset, 0 },
                        x,
                        y,
                };
                if (ch->n_rows == 0)
                        continue;
                if (ch->row0 + (uint64_t) ch->n_rows > w->n_rows)
                        return -EINVAL;
                uint32_t g_rows = (ch->n_rows + plan.bm - 1) / plan.bm;
                if (g_rows > gpu_device_caps(d)->max_workgroup_count[plan.tokens_first ? 1 : 0])
                        return -E2BIG;
                r = gpu_cmd_dispatch(c, p, b, ELEMENTSOF(b), &push, sizeof push,
                                     plan.tokens_first ? g_tokens : g_rows, plan.tokens_first ? g_rows : g_tokens, 1);
                if (r < 0)
                        return r;
        }
        return 0;
}

int matmul_ref(GgmlType type, const void *w, uint32_t n_rows, uint32_t n_cols, const float *x, uint32_t n_tokens,
               float *y) {
        uint64_t row_bytes = ggml_row_bytes(type, n_cols);
        _cleanup_free_ float *wr = NULL;
        int r;

        if (row_bytes == 0 || !ggml_type_supported(type))
                return -EINVAL;
        wr = malloc((size_t) n_cols * sizeof *wr);
        if (!wr)
                return -ENOMEM;
        for (uint32_t i = 0; i < n_rows; i++) {
                r = ggml_dequantize_row(type, (const uint8_t *) w + (uint64_t) i * row_bytes, wr, n_cols);
                if (r < 0)
                        return r;
                for (uint32_t t = 0; t < n_tokens; t++) {
                        const float *xt = x + (uint64_t) t * n_cols;
                        double s = 0;
                        for (uint32_t k = 0; k < n_cols; k++)
                                s += (double) wr[k] * (double) xt[k];
                        y[(uint64_t) t * n_rows + i] = (float) s;
                }
        }
        return 0;
}



int gpu_bench_matmul(GpuDevice *d, GgmlType type, uint32_t n_rows, uint32_t n_cols, uint32_t n_tokens,
                     uint32_t n_iter, double *ret_ns_per_call) {
        _cleanup_(gpu_tensor_freep) GpuTensor *w = NULL;
        _cleanup_(gpu_buffer_freep) GpuBuffer *xb = NULL, *yb = NULL;
        _cleanup_(gpu_cmd_freep) GpuCmd *c = NULL; /* declared last, freed first: it uses the rest */
        uint64_t row_bytes = ggml_row_bytes(type, n_cols);
        int r, t0, t1;

        if (!d || !ret_ns_per_call || !ggml_type_supported(type) || row_bytes == 0 || n_rows == 0 ||
            n_tokens == 0 || n_iter == 0)
                return -EINVAL;

        r = gpu_bench_weights(d, type, n_rows, n_cols, &w);
        if (r < 0)
                return r;
        r = gpu_bench_buffer_random(d, (size_t) n_tokens * n_cols, 0x5eed, &xb);
        if (r < 0)
                return r;
        r = gpu_buffer_new(d, (uint64_t) n_tokens * n_rows * sizeof(float), GPU_MEMORY_DEVICE, &yb);
        if (r < 0)
                return r;

        r = gpu_cmd_new(d, &c);
        if (r < 0)
                return r;
        r = gpu_cmd_begin(c);
        if (r < 0)
                return r;
        t0 = gpu_cmd_timestamp(c);
        for (uint32_t i = 0; i < n_iter; i++) {
                r = gpu_op_matmul(c, d, w, (GpuBinding) { xb, 0, 0 }, (GpuBinding) { yb, 0, 0 }, n_tokens);
                if (r < 0)
                        return r;
                /* Back to back as in a forward pass, where the next op reads Y. */
                gpu_cmd_barrier(c);
        }
        t1 = gpu_cmd_timestamp(c);

        return gpu_bench_measure(c, t0, t1, n_iter, ret_ns_per_call);
}
