/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * A loaded model on one device, and the per-sequence state that runs it.
 *
 *   Model         weights on the device (GpuTensors), hyper-parameters, the
 *                 tokenizer; read-only once loaded, shared by contexts.
 *   ModelContext  one sequence: its F16 KV cache, activations, the recorded
 *                 command buffers for prefill and decode, the position.
 *
 * Architectures are small tables of tensor names and flags (llama, qwen2):
 * adding one is one small file (model/arch-*.c).
 *
 * Threads: a Model and its contexts are used by one worker thread at a time.
 */

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"
#include "gguf.h"
#include "tokenizer.h"

typedef struct ModelHParams {
        char arch[32];                  /* "llama", "qwen2" */
        uint32_t n_vocab;
        uint32_t n_embd;
        uint32_t n_layer;
        uint32_t n_head;
        uint32_t n_head_kv;
        uint32_t head_dim;
        uint32_t n_ff;
        uint32_t n_ctx_train;
        uint32_t n_rot;
        float rms_eps;
        float rope_base;
        float rope_scale;               /* frequency scale (1 / linear factor) */
        bool rope_neox;                 /* qwen2: NeoX pairs */
        bool rope_freqs;                /* per-pair frequency factors (rope_freqs.weight, Llama 3.1+) applied */
        bool qkv_bias;                  /* qwen2 */
        bool tied_output;               /* no output.weight: reuse token_embd */
} ModelHParams;

typedef struct ModelInfo {
        const char *name;               /* general.name, or the file's base name */
        const char *path;
        uint64_t n_params;
        const char *file_type;          /* "Q8_0", "F16", "mostly Q4_K", ... */
        uint64_t file_size;
        uint64_t device_bytes;          /* weights on the device */
} ModelInfo;

typedef struct ModelOptions {
        uint32_t max_ctx;               /* cap on contexts' n_ctx (0: the model's) */
        uint32_t n_batch;               /* prefill chunk in tokens (0: MODEL_DEFAULT_BATCH) */
} ModelOptions;

/*
 * Prompt tokens per forward pass: bounds the activations (n_batch x n_ff
 * floats for the FFN) while keeping the matrix x matrix kernels busy.
 */
#define MODEL_DEFAULT_BATCH 512u

typedef struct Model Model;
typedef struct ModelContext ModelContext;

/* Loads path onto dev. Errors: -errno and a message naming the file and the problem. */
int model_load(GpuDevice *dev, const char *path, const ModelOptions *opts, Model **ret, char **ret_error);
Model *model_free(Model *m);
static inline void model_freep(Model **m) {
        if (*m)
                model_free(*m);
}
const ModelHParams *model_hparams(const Model *m);
const ModelInfo *model_info(const Model *m);
const Tokenizer *model_tokenizer(const Model *m);
const GgufFile *model_gguf(const Model *m);

/*
 * A sequence with room for n_ctx tokens (0: the model's context_length, or
 * 4096 when the file has none, capped by max_ctx). Allocates the F16 KV cache
 * (2 x n_layer x n_head_kv x n_ctx x head_dim x 2 bytes, one K and one V
 * buffer per layer) and activations for n_batch tokens. -EINVAL when n_ctx
 * exceeds max_ctx, -EFBIG when a layer's cache does not fit one buffer,
 * -ENOMEM when the device is full.
 */
int model_context_new(Model *m, uint32_t n_ctx, ModelContext **ret);
/* The model keeps the last context freed (unless a submission on it failed) and hands it out again
 * for the next one of the same n_ctx, with its recorded passes: setting a context up costs a job
 * more than a few tokens. Freed with the model. */
ModelContext *model_context_free(ModelContext *c);
static inline void model_context_freep(ModelContext **c) {
        if (*c)
                model_context_free(*c);
}
const Model *model_context_model(const ModelContext *c);
uint32_t model_context_n_ctx(const ModelContext *c);
uint32_t model_context_pos(const ModelContext *c);
/* Forget everything from position pos on (0: start over); a pos at or past
 * the current position changes nothing. The cache is not cleared: positions
 * past the current one are never read. */
int model_context_truncate(ModelContext *c, uint32_t pos);

/*
 * Builds the pipelines a job needs and records its decode passes on a
 * context of n_ctx, which the model then keeps (model_context_free()): a
 * short prompt and a decode pass of each kind this device uses. So that
 * the first job after a load does not pay for them. -errno as
 * model_context_new() and model_eval().
 */
int model_warm_up(Model *m, uint32_t n_ctx);

/*
 * Runs tokens through the model at the current position (prefill in chunks
 * with matrix x matrix, or one-token decode), advancing the position.
 * logits: if not NULL, receives the n_vocab logits of the LAST token.
 * -ENOSPC when the tokens do not fit in the context, -EINVAL for no tokens or
 * ids outside the vocabulary; the device's errors otherwise. On any error the
 * position is where it was (what was written to the cache past it is
 * ignored), so the caller may retry.
 */
int model_eval(ModelContext *c, const int32_t *tokens, uint32_t n_tokens, float *logits);

/* The same, but the argmax of the last token's logits is taken on the device
 * (greedy decoding without reading the logits back). */
int model_eval_greedy(ModelContext *c, const int32_t *tokens, uint32_t n_tokens, int32_t *ret_token);

/*
 * Greedy decoding of n tokens (1 <= n <= MODEL_CHAIN_MAX) in one
 * submission: token is evaluated at the current position, its argmax is the
 * next pass's input, and so on; each argmax goes from one pass to the next
 * on the device, with no round trip through the host between tokens.
 * ret_tokens[i] receives the argmax of the i-th pass, the same tokens n
 * calls of model_eval_greedy() would give. Returns the number of tokens
 * (n, or fewer when a later pass's logits had nothing to pick: the position
 * then stops before that pass), the position having advanced by it; -EIO if
 * the first pass's had nothing, -ENOSPC if n tokens do not fit, -EINVAL.
 */
#define MODEL_CHAIN_MAX 16u
int model_decode_greedy(ModelContext *c, int32_t token, uint32_t n, int32_t *ret_tokens);
/* How many tokens greedy decoding should chain: enough to hide the host's round trip between
 * tokens, few enough that a stop wastes little. INFERD_DECODE_CHAIN=1..16 overrides (1: none),
 * read at load. */
#define MODEL_CHAIN_DEFAULT 8u
uint32_t model_decode_chain(const Model *m);

/*
 * The same for sampling on the device (sampler_top_request()): instead of
 * the whole row of the last token's logits, the pass hands over its k best
 * (1 <= k <= MODEL_TOP_MAX; higher first, ties to the lower id, NaN and -inf
 * never, +inf as FLT_MAX; ret->m of them, fewer only when the row has fewer
 * selectable values, in no particular order) and the raw logits of
 * gather[0..n_gather) (n_gather <= MODEL_TOP_MAX, ids in the vocabulary).
 * A few kilobytes cross to the host instead of n_vocab floats, and the host
 * never scans the row. -EINVAL for bad k or ids; -EIO if the device returned
 * nonsense (the position then stays where it was).
 */
#define MODEL_TOP_MAX 256u
/* Whether to: on GPUs, where reading and scanning the row would be a sizeable
 * part of a token's time; not on CPU devices, where the host scans it faster.
 * INFERD_SAMPLE_ON_DEVICE=0/1 overrides, read at load. */
bool model_samples_on_device(const Model *m);
typedef struct ModelTop {
        uint32_t m;
        float logits[MODEL_TOP_MAX];
        int32_t ids[MODEL_TOP_MAX];
        float gathered[MODEL_TOP_MAX];
} ModelTop;
int model_eval_top(ModelContext *c, const int32_t *tokens, uint32_t n_tokens, uint32_t k, const int32_t *gather,
                   uint32_t n_gather, ModelTop *ret);

/*
 * Faults a test can make happen once on c, for the paths that handle a
 * device going wrong, which a working device never takes:
 * MODEL_FAULT_SUBMIT: the next submission fails (-EIO), as when the device
 * is lost; MODEL_FAULT_TOP: the next model_eval_top() result is refused as
 * invalid (-EIO, the position where it was).
 */
typedef enum ModelFault {
        MODEL_FAULT_SUBMIT = 1 << 0,
        MODEL_FAULT_TOP = 1 << 1,
} ModelFault;
void model_context_inject_fault(ModelContext *c, ModelFault f);

/*
 * GPU time of each step of one single-token pass at the current position
 * (the pass decode replays, with a timestamp after every barrier), for
 * benchmarks: ret[i] in pass order, named for what ran since the previous
 * timestamp (names repeat once per block). Writes the KV cache at the
 * current position but does not move it. Returns the number of entries
 * (at most max), -EOPNOTSUPP on devices without timestamps.
 */
#define MODEL_PROFILE_MAX 1024
typedef struct ModelProfileEntry {
        const char *name;               /* static */
        double ns;
} ModelProfileEntry;
int model_profile_step(ModelContext *c, int32_t token, ModelProfileEntry *ret, size_t max);
