/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Causal self-attention with grouped-query heads over an F16 KV cache.
 *
 * Layouts (all rows contiguous, no padding unless a stride says so):
 *
 *   q        F32 [n_tokens][n_head][head_dim], already RoPE'd. Token t starts
 *            at float t * q_stride (q_stride 0: n_head * head_dim), so q may
 *            be a view into a fused QKV projection.
 *   k_new,   F32 [n_tokens][n_head_kv][head_dim], the projection's rows for
 *   v_new    this batch (gpu_op_kv_store); token t at t * kv_stride
 *            (kv_stride 0: n_head_kv * head_dim).
 *   k_cache, F16 [n_head_kv][n_ctx][head_dim], one per layer. Head-major so
 *   v_cache  that one head's keys are one contiguous run: a key block of a
 *            head is a single coalesced read and decode streams each head
 *            linearly. n_ctx is the capacity in positions. Read and written
 *            as packed 32-bit pairs (unpackHalf2x16/packHalf2x16), so no
 *            16-bit storage feature is needed.
 *   out      F32 [n_tokens][n_head][head_dim].
 *
 * Token t of the batch sits at absolute position pos0 + t and attends to
 * cache positions 0..pos0+t; query head h reads kv head h / (n_head /
 * n_head_kv). The cache must already hold positions 0..pos0+n_tokens-1 (store
 * this batch's rows with gpu_op_kv_store and put a gpu_cmd_barrier between
 * the two). Positions beyond that are never read, whatever they hold.
 *
 * Kernels: n_tokens > 1 runs attn_prefill (a tile of query rows of one kv
 * head per workgroup, the kv head's query heads packed into the rows so each
 * K/V tile loaded into shared memory serves all of them; online softmax over
 * key blocks). n_tokens == 1 runs attn_decode, one dispatch of flash-decoding:
 * the positions split into at most GPU_ATTN_MAX_SPLITS chunks, one workgroup
 * per (chunk, kv head, block of query heads) writes partial (max, sum,
 * unnormalised output) rows to the scratch buffer, and the last workgroup of
 * each (kv head, block) to finish, found with a completion counter in the
 * scratch, merges the chunks into out. Nothing is barriered before or after
 * an op.
 *
 * Positions from a buffer: with p->pos_buffer set (int32 per token, the
 * buffer RoPE reads), kv_store stores token t at position pos[t] and decode
 * attends to pos[0] + 1 keys; pos0 is then not used. Such a recording does
 * not depend on the position, so a decode pass recorded once is replayed for
 * every token after the host writes the new position into the buffer. The
 * decode grid is then sized for the largest position (n_ctx - 1) and the
 * kernel derives its chunk length from the position it reads; workgroups
 * past the last key only count themselves done. Prefill always takes pos0.
 *
 * Shapes: head_dim a multiple of 8, 8..256; n_head a multiple of n_head_kv;
 * pos0 + n_tokens <= n_ctx (n_tokens <= n_ctx with a position buffer, whose
 * positions must lie in [0, n_ctx): the kernels skip a store and clamp a
 * decode position outside it rather than touch memory past the cache).
 * Anything else is -EINVAL.
 */

#include <assert.h>
#include <stdint.h>

#include "engine.h"
#include "ops-basic.h"

typedef struct GpuAttentionParams {
        uint32_t n_tokens;      /* query rows in this batch */
        uint32_t n_head;
        uint32_t n_head_kv;
        uint32_t head_dim;
        uint32_t n_ctx;         /* cache capacity in positions */
        uint32_t pos0;          /* absolute position of token 0 */
        float scale;            /* usually 1/sqrt(head_dim) */
        uint32_t q_stride;      /* floats from one token's q to the next; 0: n_head * head_dim */
        uint32_t kv_stride;     /* same for k_new/v_new of gpu_op_kv_store; 0: n_head_kv * head_dim */
        GpuBinding pos_buffer;  /* int32 [n_tokens] positions for kv_store and decode; .buffer NULL: pos0 */
        uint32_t decode_groups; /* decode workgroups to aim for; 0: the device's (many on a GPU, a few on a
                                 * CPU device, where each costs even when it has no key) */
} GpuAttentionParams;

/* Decode splits the keys into at most this many chunks per head. */
#define GPU_ATTN_MAX_SPLITS 256u

/*
 * Decode's scratch: n_head 32-bit completion counters, then the partial
 * results. The counters must be zero before the first decode that uses the
 * scratch; every decode leaves them zero again, so one scratch serves every
 * layer and every replay of a recorded pass, as long as its decodes do not
 * overlap (a barrier between them, as for any buffer both write).
 *
 * gpu_attention_scratch_size(): bytes of scratch gpu_op_attention needs for
 * any batch with these sizes (prefill needs none). Covers every pos0 < n_ctx.
 * gpu_attention_scratch_new(): a device buffer of that size, counters zeroed.
 */
uint64_t gpu_attention_scratch_size(uint32_t n_head, uint32_t head_dim, uint32_t n_ctx);
int gpu_attention_scratch_new(GpuDevice *d, uint32_t n_head, uint32_t head_dim, uint32_t n_ctx,
                              GpuBuffer **ret);

/*
 * Records the conversion of k_new/v_new to F16 and their store into the
 * caches at positions pos0..pos0+n_tokens-1, or pos_buffer's (uses n_tokens,
 * n_head_kv, head_dim, n_ctx, pos0 or pos_buffer, kv_stride of p).
 */
int gpu_op_kv_store(GpuCmd *c, GpuDevice *d, GpuBinding k_new, GpuBinding v_new, GpuBinding k_cache,
                    GpuBinding v_cache, const GpuAttentionParams *p);

/*
 * RoPE and kv_store in one dispatch (decode; p->pos_buffer required): rotates
 * q ([n_tokens][n_head][head_dim], token rows q_stride apart) in place, and
 * stores k_new rotated and v_new into the caches at pos_buffer's positions,
 * as gpu_op_rope() on q and k followed by gpu_op_kv_store() would, except
 * that k_new itself is left as it was. The positions for the rotation are
 * p->pos_buffer's; rope gives head_dim, n_rot, mode, freq_base, freq_scale
 * and freq_factors_inv (its n_tokens, n_heads and strides are not used).
 */
int gpu_op_rope_kv_store(GpuCmd *c, GpuDevice *d, GpuBinding q, GpuBinding k_new, GpuBinding v_new,
                         GpuBinding k_cache, GpuBinding v_cache, const GpuRope *rope, const GpuAttentionParams *p);

/*
 * Records attention for the batch: prefill for n_tokens > 1, decode for 1.
 * scratch must hold gpu_attention_scratch_size() bytes for decode, its
 * counters zero (see above); it may be { NULL } when n_tokens > 1.
 */
int gpu_op_attention(GpuCmd *c, GpuDevice *d, GpuBinding q, GpuBinding k_cache, GpuBinding v_cache,
                     GpuBinding out, GpuBinding scratch, const GpuAttentionParams *p);

/* The two paths on their own (tests and benchmarks): prefill takes any n_tokens, decode only 1. */
int gpu_op_attention_prefill(GpuCmd *c, GpuDevice *d, GpuBinding q, GpuBinding k_cache, GpuBinding v_cache,
                             GpuBinding out, const GpuAttentionParams *p);
int gpu_op_attention_decode(GpuCmd *c, GpuDevice *d, GpuBinding q, GpuBinding k_cache, GpuBinding v_cache,
                            GpuBinding out, GpuBinding scratch, const GpuAttentionParams *p);

/*
 * Plain-C references on the host, in the layouts above (caches as F16 bit
 * patterns). The attention reference accumulates in double on the F16 values
 * the cache holds, so a test compares against exactly the data the GPU read.
 * kv_store rounds to nearest even.
 */
void gpu_attention_ref(const GpuAttentionParams *p, const float *q, const uint16_t *k_cache,
                       const uint16_t *v_cache, float *out);
void gpu_kv_store_ref(const GpuAttentionParams *p, const float *k_new, const float *v_new, uint16_t *k_cache,
                      uint16_t *v_cache);

/* ---- push-constant blocks, mirrored by shaders/common/attn_common.glsl ---- */

typedef struct AttnPrefillPush {
        uint32_t n_tokens;
        uint32_t n_group;       /* n_head / n_head_kv */
        uint32_t n_head;
        uint32_t n_ctx;
        uint32_t pos0;
        uint32_t q_stride;
        float scale;
} AttnPrefillPush;
static_assert(sizeof(AttnPrefillPush) == 28, "AttnPrefillPush must match attn_common.glsl");

typedef struct AttnDecodePush {
        uint32_t n_head;
        uint32_t n_group;
        uint32_t n_ctx;
        uint32_t n_kv;          /* keys to attend: pos0 + 1 (0 and unused with a position buffer) */
        uint32_t chunk;         /* keys per chunk, a multiple of the workgroup size (same) */
        uint32_t n_chunks;      /* chunks dispatched */
        uint32_t q_stride;
        float scale;
} AttnDecodePush;
static_assert(sizeof(AttnDecodePush) == 32, "AttnDecodePush must match attn_common.glsl");

typedef struct KvStorePush {
        uint32_t n_tokens;
        uint32_t n_head_kv;
        uint32_t half_dim;      /* head_dim / 2: the kernel moves F16 pairs */
        uint32_t n_ctx;
        uint32_t pos0;
        uint32_t src_stride;
} KvStorePush;
static_assert(sizeof(KvStorePush) == 24, "KvStorePush must match attn_common.glsl");

typedef struct GpuRopeKvStorePush {     /* rope_kv_store.comp */
        uint32_t n_tokens;
        uint32_t n_head;
        uint32_t n_head_kv;
        uint32_t head_dim;
        uint32_t n_rot;
        uint32_t q_stride;
        uint32_t kv_stride;
        uint32_t n_ctx;
        float theta_scale;
        float freq_scale;
        uint32_t has_factors;   /* binding 6 holds GpuRope.freq_factors_inv */
} GpuRopeKvStorePush;
static_assert(sizeof(GpuRopeKvStorePush) == 44, "GpuRopeKvStorePush mirrors Push in rope_kv_store.comp");
