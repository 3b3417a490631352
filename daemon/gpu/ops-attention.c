/* SPDX-License-Identifier: MIT */
/*
 * Recording of the attention kernels (shaders/list-attention.txt): shape
 * checks, tile and split choice, push constants, grid size; and the host
 * references the tests compare them with.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "ops-attention.h"
#include "quant.h"

/* attn_decode: invocations per workgroup, which is also the keys per sub-block. */
#define DECODE_WG 64u
#define KV_STORE_WG 256u
/* Query heads of one kv head scored together by a decode workgroup (registers grow with it). */
#define DECODE_MAX_GB 8u
/*
 * Decode workgroups to aim for: a few per multiprocessor of a large GPU
 * (~130 on an H100), so the cache streams at full bandwidth even when there
 * are few kv heads.
 */
#define DECODE_TARGET_GROUPS 512u
/*
 * On CPU devices (lavapipe) every workgroup costs microseconds even when it
 * returns at once, and a decode recording is sized for the whole context:
 * 512 workgroups per layer, most of them chunks past the last key early in
 * a conversation, took a 134M llama on 2 cores from 27 to 15 tokens/s at a
 * 2048 context. A few long chunks keep the threads busy there.
 */
#define DECODE_TARGET_GROUPS_CPU 16u

static uint32_t div_up(uint32_t a, uint32_t b) {
        return (a + b - 1) / b;
}

static bool pos_from_buffer(const GpuAttentionParams *p) {
        return p->pos_buffer.buffer != NULL;
}

static int check_shape(const GpuAttentionParams *p) {
        if (!p || p->n_tokens == 0 || p->n_head == 0 || p->n_head_kv == 0 || p->n_head % p->n_head_kv != 0)
                return -EINVAL;
        if (p->head_dim < 8 || p->head_dim > 256 || p->head_dim % 8 != 0)
                return -EINVAL;
        if (p->n_ctx == 0)
                return -EINVAL;
        if (pos_from_buffer(p)) {
                /* The positions are only known on the device, which checks each against n_ctx. */
                if (p->n_tokens > p->n_ctx || !gpu_binding_covers(p->pos_buffer, (uint64_t) p->n_tokens * 4))
                        return -EINVAL;
        } else if (p->pos0 >= p->n_ctx || p->n_tokens > p->n_ctx - p->pos0)
                return -EINVAL;
        /* Word indices into the cache are 32-bit in the kernels. */
        if ((uint64_t) p->n_head_kv * p->n_ctx * p->head_dim / 2 > UINT32_MAX)
                return -EINVAL;
        return 0;
}

static uint64_t cache_bytes(const GpuAttentionParams *p) {
        return (uint64_t) p->n_head_kv * p->n_ctx * p->head_dim * 2;
}

/* Floats touched by n_rows rows of n_cols, row_stride apart. */
static uint64_t strided_floats(uint32_t n_rows, uint32_t n_cols, uint32_t row_stride) {
        return (uint64_t) (n_rows - 1) * row_stride + n_cols;
}

static uint32_t q_stride(const GpuAttentionParams *p) {
        return p->q_stride ? p->q_stride : p->n_head * p->head_dim;
}

static int check_qkv_out(GpuBinding q, GpuBinding k_cache, GpuBinding v_cache, GpuBinding out,
                         const GpuAttentionParams *p) {
        uint32_t row = p->n_head * p->head_dim;
        uint32_t qs = q_stride(p);

        /* Kernels read q as float pairs. */
        if (qs < row || qs % 2 != 0)
                return -EINVAL;
        if (!gpu_binding_covers(q, strided_floats(p->n_tokens, row, qs) * 4) ||
            !gpu_binding_covers(k_cache, cache_bytes(p)) || !gpu_binding_covers(v_cache, cache_bytes(p)) ||
            !gpu_binding_covers(out, (uint64_t) p->n_tokens * row * 4))
                return -EINVAL;
        return 0;
}

int gpu_op_kv_store(GpuCmd *c, GpuDevice *d, GpuBinding k_new, GpuBinding v_new, GpuBinding k_cache,
                    GpuBinding v_cache, const GpuAttentionParams *p) {
        GpuPipeline *pl;
        int r;

        r = check_shape(p);
        if (r < 0)
                return r;
        uint32_t row = p->n_head_kv * p->head_dim;
        uint32_t stride = p->kv_stride ? p->kv_stride : row;
        if (stride < row || stride % 2 != 0)
                return -EINVAL;
        uint64_t src = strided_floats(p->n_tokens, row, stride) * 4;
        if (!gpu_binding_covers(k_new, src) || !gpu_binding_covers(v_new, src) || !gpu_binding_covers(k_cache, cache_bytes(p)) ||
            !gpu_binding_covers(v_cache, cache_bytes(p)))
                return -EINVAL;

        KvStorePush push = {
                .n_tokens = p->n_tokens,
                .n_head_kv = p->n_head_kv,
                .half_dim = p->head_dim / 2,
                .n_ctx = p->n_ctx,
                .pos0 = p->pos0,
                .src_stride = stride,
        };
        uint64_t pairs = (uint64_t) p->n_tokens * row / 2;
        uint32_t gx = (uint32_t) MIN((pairs + KV_STORE_WG - 1) / KV_STORE_WG,
                                     (uint64_t) gpu_device_caps(d)->max_workgroup_count[0]);
        GpuSpec spec = { .v = { KV_STORE_WG }, .n = 1 };
        bool from_buffer = pos_from_buffer(p);
        r = gpu_pipeline_get(d, from_buffer ? GPU_SHADER_KV_STORE_F32_F16_POS : GPU_SHADER_KV_STORE_F32_F16, &spec,
                             &pl);
        if (r < 0)
                return r;
        if (from_buffer)
                push.pos0 = 0;
        GpuBinding b[5] = { k_new, v_new, k_cache, v_cache, p->pos_buffer };
        return gpu_cmd_dispatch(c, pl, b, from_buffer ? 5 : 4, &push, sizeof push, gx, 1, 1);
}

int gpu_op_rope_kv_store(GpuCmd *c, GpuDevice *d, GpuBinding q, GpuBinding k_new, GpuBinding v_new,
                         GpuBinding k_cache, GpuBinding v_cache, const GpuRope *rope, const GpuAttentionParams *p) {
        const GpuCaps *caps = gpu_device_caps(d);
        GpuPipeline *pl;
        int r;

        r = check_shape(p);
        if (r < 0)
                return r;
        if (!pos_from_buffer(p) || !rope || rope->head_dim != p->head_dim || rope->n_rot % 2 != 0 ||
            rope->n_rot > p->head_dim || (rope->mode != GPU_ROPE_NORMAL && rope->mode != GPU_ROPE_NEOX) ||
            !(rope->freq_base > 0) || !isfinite(rope->freq_scale))
                return -EINVAL;
        uint32_t q_row = p->n_head * p->head_dim, qs = q_stride(p);
        uint32_t kv_row = p->n_head_kv * p->head_dim, kvs = p->kv_stride ? p->kv_stride : kv_row;
        if (qs < q_row || kvs < kv_row || kvs % 2 != 0)
                return -EINVAL;
        uint64_t src = strided_floats(p->n_tokens, kv_row, kvs) * 4;
        if (!gpu_binding_covers(q, strided_floats(p->n_tokens, q_row, qs) * 4) ||
            !gpu_binding_covers(k_new, src) || !gpu_binding_covers(v_new, src) ||
            !gpu_binding_covers(k_cache, cache_bytes(p)) || !gpu_binding_covers(v_cache, cache_bytes(p)))
                return -EINVAL;
        r = gpu_rope_check_factors(rope);
        if (r < 0)
                return r;

        GpuRopeKvStorePush push = {
                .n_tokens = p->n_tokens,
                .n_head = p->n_head,
                .n_head_kv = p->n_head_kv,
                .head_dim = p->head_dim,
                .n_rot = rope->n_rot,
                .q_stride = qs,
                .kv_stride = kvs,
                .n_ctx = p->n_ctx,
                /* Rounded to float once, as gpu_op_rope() does, so the two rotate alike. */
                .theta_scale = rope->n_rot ? (float) pow(rope->freq_base, -2.0 / rope->n_rot) : 1.0f,
                .freq_scale = rope->freq_scale,
                .has_factors = rope->freq_factors_inv.buffer != NULL,
        };
        /* One invocation per F16 pair of q, k and v. */
        uint64_t slots = (uint64_t) (p->n_head + 2 * p->n_head_kv) * p->head_dim / 2;
        uint32_t gx = (uint32_t) MIN((slots + KV_STORE_WG - 1) / KV_STORE_WG, (uint64_t) caps->max_workgroup_count[0]);
        uint32_t gy = MIN(p->n_tokens, caps->max_workgroup_count[1]);
        GpuSpec spec = { .v = { KV_STORE_WG }, .n = 1 };
        GpuShaderId id = rope->mode == GPU_ROPE_NEOX ? GPU_SHADER_ROPE_KV_STORE_NEOX : GPU_SHADER_ROPE_KV_STORE_NORM;
        r = gpu_pipeline_get(d, id, &spec, &pl);
        if (r < 0)
                return r;
        /* Without factors binding 6 is not read, but it needs a buffer: the positions will do. */
        GpuBinding b[7] = { q, p->pos_buffer, k_new, v_new, k_cache, v_cache,
                            push.has_factors ? rope->freq_factors_inv : p->pos_buffer };
        return gpu_cmd_dispatch(c, pl, b, ELEMENTSOF(b), &push, sizeof push, gx, gy, 1);
}

/* ---- prefill ------------------------------------------------------------- */

/* Mirrors the shared arrays of attn_prefill.comp. */
static uint64_t prefill_shared(uint32_t dim, uint32_t br, uint32_t bc) {
        uint64_t d4 = dim / 8;
        return 16 * (br * (2 * d4 + 1) + bc * (d4 + 1) + bc * d4 + br * (bc / 4 + 1));
}

typedef struct PrefillTile {
        uint32_t wg, br, bc;
} PrefillTile;

/*
 * Rows per tile and keys per block: the largest tile that fits the device's
 * shared memory; more rows reuse each K/V block more. T invocations share a
 * row, each owning 8-column chunks of its output: up to 8, and no more than
 * there are chunks (head_dim / 8), a power of two so it divides the block.
 */
static int prefill_tile(GpuDevice *d, uint32_t dim, PrefillTile *ret) {
        static const uint32_t tiles[][2] = { { 32, 32 }, { 16, 32 }, { 16, 16 }, { 8, 16 }, { 8, 8 } };
        const GpuCaps *caps = gpu_device_caps(d);
        uint32_t t = 8;

        while (t > dim / 8)
                t /= 2;
        for (size_t i = 0; i < ELEMENTSOF(tiles); i++) {
                uint32_t br = tiles[i][0], bc = tiles[i][1];
                if (br * t > caps->max_workgroup_invocations || prefill_shared(dim, br, bc) > caps->max_shared_memory)
                        continue;
                *ret = (PrefillTile) { .wg = br * t, .br = br, .bc = bc };
                return 0;
        }
        return -EOPNOTSUPP;
}

int gpu_op_attention_prefill(GpuCmd *c, GpuDevice *d, GpuBinding q, GpuBinding k_cache, GpuBinding v_cache,
                             GpuBinding out, const GpuAttentionParams *p) {
        PrefillTile tile;
        GpuPipeline *pl;
        int r;

        r = check_shape(p);
        if (r < 0)
                return r;
        /* attn_prefill takes pos0 only: a position buffer would be silently ignored. */
        if (pos_from_buffer(p))
                return -EINVAL;
        r = check_qkv_out(q, k_cache, v_cache, out, p);
        if (r < 0)
                return r;
        r = prefill_tile(d, p->head_dim, &tile);
        if (r < 0)
                return r;

        uint32_t group = p->n_head / p->n_head_kv;
        AttnPrefillPush push = {
                .n_tokens = p->n_tokens,
                .n_group = group,
                .n_head = p->n_head,
                .n_ctx = p->n_ctx,
                .pos0 = p->pos0,
                .q_stride = q_stride(p),
                .scale = p->scale,
        };
        GpuSpec spec = { .v = { tile.wg, 1, 1, p->head_dim, tile.br, tile.bc }, .n = 6 };
        r = gpu_pipeline_get(d, GPU_SHADER_ATTN_PREFILL_F16, &spec, &pl);
        if (r < 0)
                return r;
        uint64_t rows = (uint64_t) p->n_tokens * group;
        uint64_t n_tiles = (rows + tile.br - 1) / tile.br;
        if (n_tiles > UINT32_MAX)
                return -E2BIG;
        GpuBinding b[4] = { q, k_cache, v_cache, out };
        return gpu_cmd_dispatch(c, pl, b, 4, &push, sizeof push, (uint32_t) n_tiles, p->n_head_kv, 1);
}

/* ---- decode --------------------------------------------------------------- */

/*
 * Keys per decode workgroup: whole sub-blocks, enough chunks per head for
 * about DECODE_TARGET_GROUPS workgroups in all and at most
 * GPU_ATTN_MAX_SPLITS. 8 kv heads at 8k positions: 64 chunks of 128 keys,
 * each workgroup streaming 64 KiB of K/V at head_dim 128; 2 kv heads: 128
 * chunks of 64. Longer caches get longer chunks, which also amortise the
 * partial results each chunk writes.
 */
static uint32_t decode_splits(GpuDevice *d, const GpuAttentionParams *p, uint32_t groups_per_chunk) {
        uint32_t target = gpu_device_is_cpu(d) ? DECODE_TARGET_GROUPS_CPU : DECODE_TARGET_GROUPS;
        if (p->decode_groups)
                target = p->decode_groups;
        return MIN(div_up(target, groups_per_chunk), GPU_ATTN_MAX_SPLITS);
}

static uint32_t decode_chunk(uint32_t n_kv, uint32_t splits) {
        return DECODE_WG * div_up(div_up(n_kv, DECODE_WG), splits);
}

/*
 * Scratch of a decode over n_chunks chunks, as attn_decode.comp lays it out in 32-bit words: one
 * completion counter per query head (the dispatch uses one per (kv head, head block), never more),
 * then per head and chunk D floats of output and the (max, sum) pair. The counters come first so
 * they sit at the same place whatever n_chunks a decode picks.
 */
static uint64_t decode_scratch(uint32_t n_head, uint32_t head_dim, uint32_t n_chunks) {
        return ((uint64_t) n_head + (uint64_t) n_head * n_chunks * (head_dim + 2)) * sizeof(float);
}

uint64_t gpu_attention_scratch_size(uint32_t n_head, uint32_t head_dim, uint32_t n_ctx) {
        uint32_t n_chunks = MIN(GPU_ATTN_MAX_SPLITS, div_up(MAX(n_ctx, 1u), DECODE_WG));
        return decode_scratch(n_head, head_dim, n_chunks);
}

int gpu_attention_scratch_new(GpuDevice *d, uint32_t n_head, uint32_t head_dim, uint32_t n_ctx,
                              GpuBuffer **ret) {
        _cleanup_(gpu_buffer_freep) GpuBuffer *b = NULL;
        uint64_t size = gpu_attention_scratch_size(n_head, head_dim, n_ctx);
        int r;

        r = gpu_buffer_new(d, size, GPU_MEMORY_DEVICE, &b);
        if (r < 0)
                return r;
        /* The counters must start at zero; the partials need not (each is written before it is read). */
        r = gpu_buffer_fill(b, 0, (uint64_t) n_head * sizeof(uint32_t), 0);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(b);
        return 0;
}

/* Mirrors the shared arrays of attn_decode.comp (with attn_reduce.glsl); 16 bytes for last_sh and padding. */
static uint64_t decode_shared(uint32_t dim, uint32_t gb) {
        uint64_t dc4 = MIN(dim / 8, 16u);
        return gb * dim * 4 + DECODE_WG * (dc4 + 1) * 16 + gb * DECODE_WG * 4 + gb * DECODE_WG * 8 +
               gb * DECODE_WG * 4 + 16;
}

/* CPU devices: a query head per invocation (attn_decode_rows.comp says why); one dispatch, no scratch. */
static int attention_decode_rows(GpuCmd *c, GpuDevice *d, GpuBinding q, GpuBinding k_cache, GpuBinding v_cache,
                                 GpuBinding out, const GpuAttentionParams *p) {
        const GpuCaps *caps = gpu_device_caps(d);
        bool from_buffer = pos_from_buffer(p);
        uint32_t wg = MIN(MAX(caps->subgroup_size, 1u), 64u);
        GpuPipeline *pl;
        int r;

        AttnDecodePush push = {
                .n_head = p->n_head,
                .n_group = p->n_head / p->n_head_kv,
                .n_ctx = p->n_ctx,
                .n_kv = from_buffer ? 0 : p->pos0 + 1,
                .q_stride = q_stride(p),
                .scale = p->scale,
        };
        GpuSpec spec = { .v = { wg, 1, 1, p->head_dim }, .n = 4 };
        r = gpu_pipeline_get(d, from_buffer ? GPU_SHADER_ATTN_DECODE_ROWS_F16_POS : GPU_SHADER_ATTN_DECODE_ROWS_F16,
                             &spec, &pl);
        if (r < 0)
                return r;
        GpuBinding b[6] = { q, k_cache, v_cache, out, out, p->pos_buffer };    /* binding 3, the scratch, unused */
        return gpu_cmd_dispatch(c, pl, b, from_buffer ? 6 : 5, &push, sizeof push, div_up(p->n_head, wg), 1, 1);
}

int gpu_op_attention_decode(GpuCmd *c, GpuDevice *d, GpuBinding q, GpuBinding k_cache, GpuBinding v_cache,
                            GpuBinding out, GpuBinding scratch, const GpuAttentionParams *p) {
        const GpuCaps *caps = gpu_device_caps(d);
        GpuPipeline *pl;
        int r;

        r = check_shape(p);
        if (r < 0)
                return r;
        if (p->n_tokens != 1)
                return -EINVAL;
        r = check_qkv_out(q, k_cache, v_cache, out, p);
        if (r < 0)
                return r;
        if (gpu_device_is_cpu(d) && !p->decode_groups)
                return attention_decode_rows(c, d, q, k_cache, v_cache, out, p);
        /* Heads per workgroup: as even blocks as possible, shrunk until the tiles fit. */
        uint32_t group = p->n_head / p->n_head_kv;
        uint32_t n_hb = div_up(group, DECODE_MAX_GB);
        uint32_t gb = div_up(group, n_hb);
        while (gb > 1 && decode_shared(p->head_dim, gb) > caps->max_shared_memory) {
                n_hb++;
                gb = div_up(group, n_hb);
        }
        if (decode_shared(p->head_dim, gb) > caps->max_shared_memory || DECODE_WG > caps->max_workgroup_invocations)
                return -EOPNOTSUPP;
        n_hb = div_up(group, gb);

        /*
         * With a position buffer the grid must do for any position: as many chunks as the longest cache
         * splits into. attn_decode then recomputes the chunk length from the n_kv it reads, with this
         * n_chunks in place of splits, which gives the same chunks as here (when n_chunks < splits, every
         * n_kv fits in n_chunks sub-blocks and chunks are one sub-block either way).
         */
        uint32_t splits = decode_splits(d, p, p->n_head_kv * n_hb);
        bool from_buffer = pos_from_buffer(p);
        uint32_t n_kv = from_buffer ? 0 : p->pos0 + 1;
        uint32_t chunk = from_buffer ? 0 : decode_chunk(n_kv, splits);
        uint32_t n_chunks = from_buffer ? MIN(splits, div_up(p->n_ctx, DECODE_WG)) : div_up(n_kv, chunk);
        assert(n_chunks <= GPU_ATTN_MAX_SPLITS);
        assert(p->n_head_kv * n_hb <= p->n_head);       /* the counters in the scratch, one per workgroup row */
        if (!gpu_binding_covers(scratch, decode_scratch(p->n_head, p->head_dim, n_chunks)))
                return -EINVAL;

        AttnDecodePush push = {
                .n_head = p->n_head,
                .n_group = group,
                .n_ctx = p->n_ctx,
                .n_kv = n_kv,
                .chunk = chunk,
                .n_chunks = n_chunks,
                .q_stride = q_stride(p),
                .scale = p->scale,
        };
        GpuSpec spec = { .v = { DECODE_WG, 1, 1, p->head_dim, gb }, .n = 5 };
        bool sg = gpu_device_use_subgroup(d);
        GpuShaderId id = from_buffer ? (sg ? GPU_SHADER_ATTN_DECODE_F16_POS : GPU_SHADER_ATTN_DECODE_F16_POS_NOSG)
                                     : (sg ? GPU_SHADER_ATTN_DECODE_F16 : GPU_SHADER_ATTN_DECODE_F16_NOSG);
        r = gpu_pipeline_get(d, id, &spec, &pl);
        if (r < 0)
                return r;
        GpuBinding b[6] = { q, k_cache, v_cache, scratch, out, p->pos_buffer };
        return gpu_cmd_dispatch(c, pl, b, from_buffer ? 6 : 5, &push, sizeof push, n_chunks, p->n_head_kv * n_hb, 1);
}

int gpu_op_attention(GpuCmd *c, GpuDevice *d, GpuBinding q, GpuBinding k_cache, GpuBinding v_cache,
                     GpuBinding out, GpuBinding scratch, const GpuAttentionParams *p) {
        if (p && p->n_tokens == 1)
                return gpu_op_attention_decode(c, d, q, k_cache, v_cache, out, scratch, p);
        return gpu_op_attention_prefill(c, d, q, k_cache, v_cache, out, p);
}

/* ---- host references --------------------------------------------------- */

void gpu_kv_store_ref(const GpuAttentionParams *p, const float *k_new, const float *v_new, uint16_t *k_cache,
                      uint16_t *v_cache) {
        uint32_t dim = p->head_dim, row = p->n_head_kv * dim;
        uint32_t stride = p->kv_stride ? p->kv_stride : row;

        for (uint32_t t = 0; t < p->n_tokens; t++)
                for (uint32_t g = 0; g < p->n_head_kv; g++)
                        for (uint32_t i = 0; i < dim; i++) {
                                size_t src = (size_t) t * stride + (size_t) g * dim + i;
                                size_t dst = ((size_t) g * p->n_ctx + p->pos0 + t) * dim + i;
                                k_cache[dst] = float_to_half(k_new[src]);
                                v_cache[dst] = float_to_half(v_new[src]);
                        }
}

void gpu_attention_ref(const GpuAttentionParams *p, const float *q, const uint16_t *k_cache,
                       const uint16_t *v_cache, float *out) {
        uint32_t dim = p->head_dim, group = p->n_head / p->n_head_kv, qs = q_stride(p);
        uint32_t n_kv = p->pos0 + p->n_tokens;
        double *s = malloc(sizeof(double) * n_kv), *acc = malloc(sizeof(double) * dim);

        assert(s && acc);
        for (uint32_t t = 0; t < p->n_tokens; t++)
                for (uint32_t h = 0; h < p->n_head; h++) {
                        const float *qr = q + (size_t) t * qs + (size_t) h * dim;
                        size_t base = (size_t) (h / group) * p->n_ctx * dim;
                        uint32_t n = p->pos0 + t + 1;
                        double mx = -INFINITY, sum = 0;

                        for (uint32_t k = 0; k < n; k++) {
                                double dot = 0;
                                for (uint32_t i = 0; i < dim; i++)
                                        dot += (double) qr[i] * half_to_float(k_cache[base + (size_t) k * dim + i]);
                                s[k] = dot * p->scale;
                                mx = MAX(mx, s[k]);
                        }
                        memset(acc, 0, sizeof(double) * dim);
                        for (uint32_t k = 0; k < n; k++) {
                                double w = exp(s[k] - mx);
                                sum += w;
                                for (uint32_t i = 0; i < dim; i++)
                                        acc[i] += w * half_to_float(v_cache[base + (size_t) k * dim + i]);
                        }
                        float *o = out + ((size_t) t * p->n_head + h) * dim;
                        for (uint32_t i = 0; i < dim; i++)
                                o[i] = (float) (acc[i] / sum);
                }
        free(s);
        free(acc);
}
