/* SPDX-License-Identifier: MIT */
/*
 * Recording of the non-matrix kernels (shaders/list-ops.txt): shape checks,
 * variant and workgroup-size choice, push constants, grid size.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "ops-basic.h"

/* Elementwise kernels: invocations per workgroup. */
#define ELT_BLOCK 256

/* 0 when b shows at least bytes, else -EINVAL. */
static int covers(GpuBinding b, uint64_t bytes) {
        return gpu_binding_covers(b, bytes) ? 0 : -EINVAL;
}

/* Floats touched by n_rows rows of n_cols, row_stride apart. */
static uint64_t strided_floats(uint32_t n_rows, uint32_t n_cols, uint32_t row_stride) {
        return n_rows == 0 ? 0 : (uint64_t) (n_rows - 1) * row_stride + n_cols;
}

/*
 * Workgroup size for a row reduction: a power of two (the fallback tree
 * needs one) that leaves each invocation about 8 elements, between 64 and
 * max_block and within the device limit.
 */
static uint32_t row_block(GpuDevice *d, uint32_t n_cols, uint32_t max_block) {
        uint32_t lim = MIN(max_block, gpu_device_caps(d)->max_workgroup_invocations);
        uint32_t b = 64;

        while (b * 2 <= lim && (uint64_t) b * 8 < n_cols)
                b *= 2;
        return b;
}

/* Workgroups along grid dimension dim for n items, capped by the device: kernels loop over the rest. */
static uint32_t groups(GpuDevice *d, int dim, uint64_t n, uint32_t per_group) {
        uint64_t g = (n + per_group - 1) / per_group;
        return (uint32_t) MIN(g, (uint64_t) gpu_device_caps(d)->max_workgroup_count[dim]);
}

static int dispatch(GpuCmd *c, GpuDevice *d, GpuShaderId id, uint32_t block, const GpuBinding *b, uint32_t n_b,
                    const void *push, uint32_t push_size, uint32_t gx, uint32_t gy) {
        GpuSpec spec = { .v = { block }, .n = 1 };
        GpuPipeline *p;
        int r;

        r = gpu_pipeline_get(d, id, &spec, &p);
        if (r < 0)
                return r;
        return gpu_cmd_dispatch(c, p, b, n_b, push, push_size, gx, gy, 1);
}

int gpu_op_rmsnorm(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding weight, GpuBinding out,
                   uint32_t n_rows, uint32_t n_cols, float eps) {
        uint64_t n = (uint64_t) n_rows * n_cols;
        bool sg = gpu_device_use_subgroup(d), w = weight.buffer;
        int r;

        if (n_cols == 0 || !(eps >= 0))
                return -EINVAL;
        if (n_rows == 0)
                return 0;
        r = covers(x, n * 4);
        if (r >= 0 && w)
                r = covers(weight, (uint64_t) n_cols * 4);
        if (r >= 0)
                r = covers(out, n * 4);
        if (r < 0)
                return r;

        GpuRowsPush push = { .n_rows = n_rows, .n_cols = n_cols, .param = eps };
        GpuBinding b[3] = { x, w ? weight : out, out };
        GpuShaderId id = w ? (sg ? GPU_SHADER_RMSNORM_F32 : GPU_SHADER_RMSNORM_F32_NOSG)
                           : (sg ? GPU_SHADER_RMSNORM_NOWEIGHT_F32 : GPU_SHADER_RMSNORM_NOWEIGHT_F32_NOSG);
        return dispatch(c, d, id, row_block(d, n_cols, 1024), b, w ? 3 : 2, &push, sizeof push,
                        groups(d, 0, n_rows, 1), 1);
}

int gpu_rope_check_factors(const GpuRope *p) {
        if (p->freq_factors_inv.buffer && !gpu_binding_covers(p->freq_factors_inv, (uint64_t) p->n_rot / 2 * 4))
                return -EINVAL;
        return 0;
}

int gpu_op_rope(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding pos, GpuBinding out, const GpuRope *p) {
        int r;

        if (!p || p->head_dim == 0 || p->head_dim % 2 != 0 || p->n_rot % 2 != 0 || p->n_rot > p->head_dim ||
            (p->mode != GPU_ROPE_NORMAL && p->mode != GPU_ROPE_NEOX) || !(p->freq_base > 0) ||
            !isfinite(p->freq_scale))
                return -EINVAL;
        uint64_t row = (uint64_t) p->n_heads * p->head_dim;
        if (row > UINT32_MAX)
                return -EINVAL;
        uint32_t xs = p->x_stride ? p->x_stride : (uint32_t) row;
        uint32_t os = p->out_stride ? p->out_stride : (uint32_t) row;
        if (xs < row || os < row)
                return -EINVAL;
        if (p->n_tokens == 0 || p->n_heads == 0)
                return 0;
        r = covers(x, strided_floats(p->n_tokens, (uint32_t) row, xs) * 4);
        if (r >= 0)
                r = covers(pos, (uint64_t) p->n_tokens * 4);
        if (r >= 0)
                r = covers(out, strided_floats(p->n_tokens, (uint32_t) row, os) * 4);
        if (r >= 0)
                r = gpu_rope_check_factors(p);
        if (r < 0)
                return r;

        /* In place, the pass-through dims are already where they belong. */
        bool in_place = x.buffer == out.buffer && x.offset == out.offset && xs == os;
        GpuRopePush push = {
                .n_tokens = p->n_tokens,
                .n_heads = p->n_heads,
                .head_dim = p->head_dim,
                .n_rot = p->n_rot,
                .x_stride = xs,
                .o_stride = os,
                /* Rounded to float once, here; the shader only multiplies (see rope.comp). */
                .theta_scale = p->n_rot ? (float) pow(p->freq_base, -2.0 / p->n_rot) : 1.0f,
                .freq_scale = p->freq_scale,
                .copy_rest = !in_place,
                .has_factors = p->freq_factors_inv.buffer != NULL,
        };
        /* Without factors the kernel does not read binding 3, but it needs a buffer: pos will do. */
        GpuBinding b[4] = { x, pos, out, push.has_factors ? p->freq_factors_inv : pos };
        uint64_t slots = row / 2;
        return dispatch(c, d, p->mode == GPU_ROPE_NEOX ? GPU_SHADER_ROPE_NEOX_F32 : GPU_SHADER_ROPE_NORM_F32,
                        ELT_BLOCK, b, ELEMENTSOF(b), &push, sizeof push, groups(d, 0, slots, ELT_BLOCK),
                        groups(d, 1, p->n_tokens, 1));
}

int gpu_op_softmax(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding out, uint32_t n_rows, uint32_t n_cols,
                   float scale) {
        uint64_t n = (uint64_t) n_rows * n_cols;
        int r;

        if (n_cols == 0 || !isfinite(scale))
                return -EINVAL;
        if (n_rows == 0)
                return 0;
        r = covers(x, n * 4);
        if (r >= 0)
                r = covers(out, n * 4);
        if (r < 0)
                return r;

        GpuRowsPush push = { .n_rows = n_rows, .n_cols = n_cols, .param = scale };
        GpuBinding b[2] = { x, out };
        return dispatch(c, d, gpu_device_use_subgroup(d) ? GPU_SHADER_SOFTMAX_F32 : GPU_SHADER_SOFTMAX_F32_NOSG,
                        row_block(d, n_cols, 1024), b, 2, &push, sizeof push, groups(d, 0, n_rows, 1), 1);
}

static int eltwise(GpuCmd *c, GpuDevice *d, GpuShaderId id, GpuBinding a, GpuBinding b, GpuBinding out,
                   uint32_t n_rows, uint32_t n_cols, uint32_t a_stride, uint32_t b_stride, uint32_t o_stride) {
        int r;

        if (n_rows == 0 || n_cols == 0)
                return 0;
        r = covers(a, strided_floats(n_rows, n_cols, a_stride) * 4);
        if (r >= 0)
                r = covers(b, strided_floats(n_rows, n_cols, b_stride) * 4);
        if (r >= 0)
                r = covers(out, strided_floats(n_rows, n_cols, o_stride) * 4);
        if (r < 0)
                return r;

        GpuEltwisePush push = {
                .n_rows = n_rows,
                .n_cols = n_cols,
                .a_stride = a_stride,
                .b_stride = b_stride,
                .o_stride = o_stride,
        };
        GpuBinding bb[3] = { a, b, out };
        return dispatch(c, d, id, ELT_BLOCK, bb, 3, &push, sizeof push, groups(d, 0, n_cols, ELT_BLOCK),
                        groups(d, 1, n_rows, 1));
}

int gpu_op_swiglu_strided(GpuCmd *c, GpuDevice *d, GpuBinding gate, GpuBinding up, GpuBinding out,
                          uint32_t n_rows, uint32_t n_cols, uint32_t gate_stride, uint32_t up_stride,
                          uint32_t out_stride) {
        if (n_rows > 1 && (gate_stride < n_cols || up_stride < n_cols || out_stride < n_cols))
                return -EINVAL;
        return eltwise(c, d, GPU_SHADER_SWIGLU_F32, gate, up, out, n_rows, n_cols, gate_stride, up_stride,
                       out_stride);
}

int gpu_op_swiglu(GpuCmd *c, GpuDevice *d, GpuBinding gate, GpuBinding up, GpuBinding out, uint32_t n_rows,
                  uint32_t n_cols) {
        return gpu_op_swiglu_strided(c, d, gate, up, out, n_rows, n_cols, n_cols, n_cols, n_cols);
}

int gpu_op_add(GpuCmd *c, GpuDevice *d, GpuBinding a, GpuBinding b, GpuBinding out, uint32_t n_rows,
               uint32_t n_cols, bool b_broadcast) {
        return eltwise(c, d, GPU_SHADER_ADD_F32, a, b, out, n_rows, n_cols, n_cols, b_broadcast ? 0 : n_cols,
                       n_cols);
}

int gpu_op_mul(GpuCmd *c, GpuDevice *d, GpuBinding a, GpuBinding b, GpuBinding out, uint32_t n_rows,
               uint32_t n_cols, bool b_broadcast) {
        return eltwise(c, d, GPU_SHADER_MUL_F32, a, b, out, n_rows, n_cols, n_cols, b_broadcast ? 0 : n_cols,
                       n_cols);
}

int gpu_op_scale(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding out, uint32_t n, float scale) {
        int r;

        if (n == 0)
                return 0;
        r = covers(x, (uint64_t) n * 4);
        if (r >= 0)
                r = covers(out, (uint64_t) n * 4);
        if (r < 0)
                return r;

        GpuScalePush push = { .n = n, .scale = scale };
        GpuBinding b[2] = { x, out };
        return dispatch(c, d, GPU_SHADER_SCALE_F32, ELT_BLOCK, b, 2, &push, sizeof push,
                        groups(d, 0, n, ELT_BLOCK), 1);
}

int gpu_op_argmax(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding out, uint32_t n_rows, uint32_t n_cols) {
        uint64_t n = (uint64_t) n_rows * n_cols;
        int r;

        if (n_cols == 0)
                return -EINVAL;
        if (n_rows == 0)
                return 0;
        r = covers(x, n * 4);
        if (r >= 0)
                r = covers(out, (uint64_t) n_rows * 4);
        if (r < 0)
                return r;

        GpuArgmaxPush push = { .n_rows = n_rows, .n_cols = n_cols, .n_split = 1 };
        GpuBinding b[3] = { x, out, x };        /* the scratch binding is not used: x stands in */
        /* vec4 loads: a quarter as many elements per invocation to aim for. */
        return dispatch(c, d, gpu_device_use_subgroup(d) ? GPU_SHADER_ARGMAX_F32 : GPU_SHADER_ARGMAX_F32_NOSG,
                        row_block(d, n_cols / 4, 1024), b, 3, &push, sizeof push, groups(d, 0, n_rows, 1), 1);
}

/* Workgroups for a split row: about 8k columns each (8 per invocation of a 1024-wide workgroup), at most
 * ARGMAX_MAX_SPLIT, so the merge stays a short loop. */
#define ARGMAX_SPLIT_COLS 8192u
#define ARGMAX_MAX_SPLIT 64u

static uint32_t argmax_split(uint32_t n_cols) {
        return MIN(MAX((n_cols + ARGMAX_SPLIT_COLS - 1) / ARGMAX_SPLIT_COLS, 1u), ARGMAX_MAX_SPLIT);
}

uint64_t gpu_argmax_scratch_size(uint32_t n_cols) {
        return 4 * (1 + 2 * (uint64_t) argmax_split(n_cols));
}

int gpu_op_argmax_split(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding out, GpuBinding scratch, uint32_t n_cols) {
        int r;

        if (n_cols == 0)
                return -EINVAL;
        r = covers(x, (uint64_t) n_cols * 4);
        if (r >= 0)
                r = covers(out, 4);
        if (r >= 0)
                r = covers(scratch, gpu_argmax_scratch_size(n_cols));
        if (r < 0)
                return r;

        uint32_t n_split = argmax_split(n_cols);
        /* Whole vec4s per segment, so every segment but the last starts aligned. */
        uint32_t seg = ((n_cols + n_split - 1) / n_split + 3) / 4 * 4;
        n_split = (n_cols + seg - 1) / seg;
        GpuArgmaxPush push = { .n_rows = 1, .n_cols = n_cols, .n_split = n_split, .seg = seg };
        GpuBinding b[3] = { x, out, scratch };
        return dispatch(c, d, gpu_device_use_subgroup(d) ? GPU_SHADER_ARGMAX_F32 : GPU_SHADER_ARGMAX_F32_NOSG,
                        row_block(d, seg / 4, 1024), b, 3, &push, sizeof push, n_split, 1);
}

/* The top-k split: about 4k columns per workgroup (16 per invocation, which
 * topk.comp keeps in registers: CACHED), at most TOPK_MAX_SPLIT, so the merge
 * selects from at most 64 k entries (32 k for a 128k vocabulary). */
#define TOPK_SPLIT_COLS 4096u
#define TOPK_MAX_SPLIT 64u
/* topk.comp's fixed workgroup size, one histogram bin per invocation (dispatch() passes it as
 * constant 0, which that shader does not declare: unused constants are ignored). */
#define TOPK_BLOCK 256u

static uint32_t topk_split(uint32_t n_cols) {
        return MIN(MAX((n_cols + TOPK_SPLIT_COLS - 1) / TOPK_SPLIT_COLS, 1u), TOPK_MAX_SPLIT);
}

bool gpu_topk_supported(const GpuDevice *d) {
        return gpu_device_caps(d)->max_workgroup_invocations >= TOPK_BLOCK;
}

uint64_t gpu_topk_out_size(void) {
        return ((uint64_t) GPU_TOPK_OUT_GATHER + GPU_TOPK_MAX) * 4;
}

uint64_t gpu_topk_scratch_size(uint32_t n_cols) {
        /* Two counters, then up to GPU_TOPK_MAX (bits, index) pairs from each workgroup. */
        return 4 * (2 + 2 * (uint64_t) topk_split(n_cols) * GPU_TOPK_MAX);
}

int gpu_op_topk_split(GpuCmd *c, GpuDevice *d, GpuBinding x, GpuBinding params, GpuBinding out,
                      GpuBinding scratch, uint32_t n_cols) {
        int r;

        if (n_cols == 0)
                return -EINVAL;
        r = covers(x, (uint64_t) n_cols * 4);
        if (r >= 0)
                r = covers(params, sizeof(GpuTopkParams));
        if (r >= 0)
                r = covers(out, gpu_topk_out_size());
        if (r >= 0)
                r = covers(scratch, gpu_topk_scratch_size(n_cols));
        if (r < 0)
                return r;
        if (!gpu_topk_supported(d))
                return -EOPNOTSUPP;

        uint32_t n_split = topk_split(n_cols);
        uint32_t seg = (n_cols + n_split - 1) / n_split;
        n_split = (n_cols + seg - 1) / seg;
        GpuTopkPush push = { .n_cols = n_cols, .n_split = n_split, .seg = seg };
        GpuBinding b[4] = { x, params, out, scratch };
        return dispatch(c, d, GPU_SHADER_TOPK_F32, TOPK_BLOCK, b, 4, &push, sizeof push, n_split, 1);
}
