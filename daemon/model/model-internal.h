/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * What model.c (loading), model-context.c (contexts and evaluation) and
 * model-pass.c (recording the forward pass) share: the Model and
 * ModelContext structures and the layout of their buffers.
 */

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"
#include "model-arch.h"
#include "model.h"
#include "tensor.h"

/* Offsets of bindings: the largest minStorageBufferOffsetAlignment Vulkan allows. */
#define BIND_ALIGN 256u
/* model_decode_greedy()'s blocks in c->io: an id and a position per pass, and the last argmax. */
#define CHAIN_SLOTS (2u * MODEL_CHAIN_MAX + 1u)
/* Context length when the file does not say (llama.cpp's default for such files). */
#define DEFAULT_CTX 4096u

/* Rows of a fused projection's parts start at multiples of this (floats), so each part's output can be
 * bound at a BIND_ALIGN offset. */
#define PART_ALIGN (BIND_ALIGN / 4)

typedef struct ModelLayer {
        /* With Model.fuse_qkv: wqkv only, rows [q | 0 | k | 0 | v] at Model.k_off/v_off; else wq, wk, wv. */
        GpuTensor *wqkv, *wq, *wk, *wv, *wo;
        /* With Model.fuse_ffn: w_gu only, rows [gate | 0 | up] at Model.up_off; else w_gate, w_up. */
        GpuTensor *w_gu, *w_gate, *w_up, *w_down;
        /* Offsets into Model.vecs (F32); the biases only with hp.qkv_bias: bqkv (the three zero-padded like
         * wqkv's rows) when fused, else bq, bk, bv. */
        uint64_t attn_norm, ffn_norm;
        uint64_t bqkv, bq, bk, bv;
} ModelLayer;

struct Model {
        GpuDevice *dev;
        GgufFile *gguf;
        Tokenizer *tokenizer;
        const ModelArch *arch;
        ModelHParams hp;
        ModelInfo info;
        ModelOptions opts;
        char *name, *path, *file_type;

        GpuTensor *tok_embd;
        GpuTensor *output;      /* NULL when tied: use tok_embd */
        GpuBuffer *vecs;        /* norm weights, biases and inverse RoPE frequency factors, F32 */
        uint64_t output_norm;
        uint64_t rope_freqs_inv; /* offset in vecs of 1/factor per rotated pair, with hp.rope_freqs */
        ModelLayer *layers;

        /*
         * Fused projections: one matrix x vector instead of three (q, k, v) or two (gate, up). Used when
         * every layer's parts have one type (Q4_K_M files mix Q4_K and Q6_K in attn_v: those stay apart).
         * Offsets and strides in floats of one token's output row.
         */
        bool fuse_qkv, fuse_ffn;
        /* With fuse_ffn and every w_gu in one chunk: matrix x vector passes apply SwiGLU in the
         * projection's own dispatch (gpu_op_matvec_swiglu()). */
        bool fuse_swiglu;
        /* Matrix x vector passes: the residual projections (wo, down) also compute the next RMSNorm
         * (gpu_op_matvec_add_norm()). */
        bool fuse_norm;
        /* With fuse_qkv and every wqkv in one chunk: matrix x vector passes add the bias, rotate and
         * store K and V in the projection's dispatch (gpu_op_matvec_qkv()). */
        bool fuse_rope;
        uint32_t k_off, v_off, qkv_stride;
        uint32_t up_off, ffn_stride;
        bool sample_on_device;  /* model_samples_on_device() */
        ModelContext *spare;    /* the last context freed, for the next one of its size */
        uint32_t decode_chain;  /* model_decode_chain() */
};

typedef enum EvalOutput {
        EVAL_NONE,              /* only fill the KV cache (all but the last prompt chunk) */
        EVAL_LOGITS,
        EVAL_ARGMAX,
        EVAL_TOP,               /* the best logits and the gathered ones (gpu_op_topk_split()) */
        EVAL__MAX,
} EvalOutput;

struct ModelContext {
        Model *model;
        uint32_t n_ctx;
        uint32_t n_batch;
        uint32_t pos;

        /* Per layer: the F16 caches, [n_head_kv][n_ctx][head_dim] each (two buffers, so each may be as
         * large as one binding allows). */
        GpuBuffer **k_cache, **v_cache;

        /* Activations, [n_batch][...] F32. */
        GpuBuffer *x;           /* the residual stream */
        GpuBuffer *h;           /* normed input of a block; projection outputs */
        GpuBuffer *q, *k, *v;   /* fused: q holds [n_batch][qkv_stride], k and v are NULL */
        GpuBuffer *att;         /* attention output; FFN output */
        GpuBuffer *g, *u;       /* FFN gate and up, SwiGLU in place into g; fused: g [n_batch][ffn_stride],
                                 * SwiGLU into u [n_batch][n_ff] */
        GpuBuffer *logits;      /* [n_vocab] of the last token */
        GpuBuffer *scratch;     /* decode attention's counters and partial results */
        GpuBuffer *sync;        /* counters and partial results of the ops whose last workgroup finishes
                                 * the job (gpu_op_matvec_add_norm, gpu_op_argmax_split); zeroed */
        GpuBuffer *topk_scratch; /* gpu_op_topk_split's: its counters sit where the others keep partial
                                 * results; zeroed */
        GpuBuffer *io;          /* host-visible: ids [n_batch] at 0, positions at pos_offset, GpuTopkParams
                                 * at top_offset */
        GpuBuffer *io_dev;      /* device-local: the positions, at pos_offset, copied there by the embedding */
        uint64_t pos_offset, top_offset;
        uint64_t chain_offset;  /* in io: model_decode_greedy()'s slots, chain_slot() */
        GpuBuffer *out;         /* host-visible: logits [n_vocab] at 0, the argmax at argmax_offset, the
                                 * top-k selection at top_out_offset */
        uint64_t argmax_offset, top_out_offset;

        struct PassProfile *profile; /* set while model_profile_step() records */
        GpuCmd *cmd;            /* prefill chunks, recorded for each */
        GpuCmd *step[EVAL__MAX]; /* the single-token pass per output, recorded on first use, then replayed */
        GpuCmd *chain[MODEL_CHAIN_MAX + 1]; /* n chained greedy passes, by n, recorded on first use */
        bool broken;            /* a submission failed: counters may be left set, never reuse it */
        unsigned faults;        /* ModelFault bits, each cleared when it happens */
};

static inline uint64_t align_up(uint64_t v, uint64_t a) {
        return (v + a - 1) / a * a;
}

static inline GpuBinding bind(GpuBuffer *b) {
        return (GpuBinding) { .buffer = b };
}

static inline GpuBinding bind_at(GpuBuffer *b, uint64_t offset, uint64_t range) {
        return (GpuBinding) { .buffer = b, .offset = offset, .range = range };
}

typedef struct PassProfile {
        const char *name[MODEL_PROFILE_MAX];
        int slot[MODEL_PROFILE_MAX + 1];
        size_t n;
        int error;
} PassProfile;

/*
 * A chain of n single-token passes in one recording: pass s reads its id
 * from id slot s and its position from position slot s, and its argmax goes
 * to id slot s + 1, which the next pass reads behind a barrier. Slots are
 * whole binding-aligned blocks of c->io (CHAIN_SLOTS of them), so each can
 * be bound on its own.
 */

static inline uint64_t chain_id_slot(const ModelContext *c, uint32_t s) {
        return c->chain_offset + (uint64_t) s * 2 * BIND_ALIGN;
}

static inline uint64_t chain_pos_slot(const ModelContext *c, uint32_t s) {
        return chain_id_slot(c, s) + BIND_ALIGN;
}

/* Frees a context for good (model_context_free() keeps one for reuse). */
void model_context_destroy(ModelContext *c);

/*
 * Records the pass of n tokens at positions pos0.. (ids and positions already
 * in c->io) into cmd. out: what to compute from the last token. A single
 * token (n == 1) is recorded for any position: pos0 is not used, every
 * kernel reads the position from c->io, so the recording may be replayed.
 */
int pass_record(ModelContext *c, GpuCmd *cmd, uint32_t n, uint32_t pos0, EvalOutput out);

/* n single-token passes chained in one recording, each argmax the next one's input (chain slots). */
int pass_record_chain(ModelContext *c, GpuCmd *cmd, uint32_t n);
