/* SPDX-License-Identifier: MIT */
/*
 * Running a model: contexts and the evaluation entry points.
 *
 * A ModelContext owns the F16 KV cache (a K and a V buffer per layer, each
 * [n_head_kv][n_ctx][head_dim] as ops-attention.h wants) and the
 * activations for n_batch tokens. A batch of tokens is one forward pass
 * (model-pass.c), recorded into one GpuCmd with a barrier between dependent
 * ops and submitted once; prompts longer than n_batch are split into
 * chunks. Token ids and positions travel in a small host-visible buffer
 * (host writes before vkQueueSubmit are visible to the device without a
 * barrier); the embedding kernel reads the ids from it and copies the
 * positions to device memory for the rest of the pass.
 *
 * Decode does not record anything per token: every kernel of the
 * single-token pass reads the token id and its position from that buffer
 * (KV store and decode attention through GpuAttentionParams.pos_buffer, the
 * decode grid sized for the whole context), so the pass is recorded once per
 * context and wanted output (none, logits, argmax, top-k), each in its own
 * GpuCmd, and replayed: a token costs two stores into the buffer and one
 * submission. Nothing in those recordings depends on the position, so
 * truncating the context leaves them valid, and the model keeps the last
 * context freed for the next one of its size. Prefill chunks (n > 1) are
 * recorded per chunk.
 *
 * Results come back in the same submission: the pass ends with a copy of
 * the logits into a host-visible buffer (or the argmax or top-k kernel
 * writes its result there) and a host barrier, and the host reads them from
 * its mapping once the submission is done.
 */

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "model-internal.h"
#include "ops-attention.h"
#include "ops-basic.h"
#include "ops-weights.h"
#include "time-util.h"

static_assert(MODEL_TOP_MAX == GPU_TOPK_MAX, "model_eval_top() passes the op's limits on");

/* ---- contexts --------------------------------------------------------------------- */

void model_context_destroy(ModelContext *c) {
        if (!c)
                return;
        gpu_cmd_free(c->cmd);
        for (size_t i = 0; i < ELEMENTSOF(c->step); i++)
                gpu_cmd_free(c->step[i]);
        for (size_t i = 0; i < ELEMENTSOF(c->chain); i++)
                gpu_cmd_free(c->chain[i]);
        for (uint32_t il = 0; il < c->model->hp.n_layer; il++) {
                if (c->k_cache)
                        gpu_buffer_free(c->k_cache[il]);
                if (c->v_cache)
                        gpu_buffer_free(c->v_cache[il]);
        }
        free(c->k_cache);
        free(c->v_cache);
        GpuBuffer *bufs[] = { c->x, c->h, c->q, c->k, c->v, c->att, c->g, c->u,
                              c->logits, c->scratch, c->sync, c->topk_scratch, c->io, c->io_dev, c->out };
        for (size_t i = 0; i < ELEMENTSOF(bufs); i++)
                gpu_buffer_free(bufs[i]);
        free(c);
}

static inline void context_destroyp(ModelContext **c) {
        model_context_destroy(*c);
}

ModelContext *model_context_free(ModelContext *c) {
        if (!c)
                return NULL;
        /* Kept for the next context of its size: its buffers, and the passes recorded on them, which
         * cost a job more than a few tokens. One spare per model, the latest. */
        if (!c->broken) {
                model_context_destroy(c->model->spare);
                c->pos = 0;
                c->model->spare = c;
        } else
                model_context_destroy(c);
        return NULL;
}

int model_context_new(Model *m, uint32_t n_ctx, ModelContext **ret) {
        _cleanup_(context_destroyp) ModelContext *c = NULL;
        const ModelHParams *hp = &m->hp;
        const GpuCaps *caps = gpu_device_caps(m->dev);
        uint32_t cap = m->opts.max_ctx;
        int r;

        if (n_ctx == 0) {
                n_ctx = hp->n_ctx_train ? hp->n_ctx_train : DEFAULT_CTX;
                if (cap)
                        n_ctx = MIN(n_ctx, cap);
        } else if (cap && n_ctx > cap)
                return -EINVAL;
        /* Cache word indices are 32-bit in the attention kernels. */
        if ((uint64_t) hp->n_head_kv * n_ctx * hp->head_dim / 2 > UINT32_MAX)
                return -EFBIG;

        /* The spare one if it has this size (positions past 0 are never read before they are written);
         * otherwise its memory goes to the new one. */
        ModelContext *spare = TAKE_PTR(m->spare);
        if (spare && spare->n_ctx == n_ctx) {
                spare->pos = 0;
                *ret = spare;
                return 0;
        }
        model_context_destroy(spare);

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->model = m;
        c->n_ctx = n_ctx;

        /* The batch: what was asked, no more than the context, and activations within one binding. */
        uint32_t widest = MAX(MAX(hp->n_embd, hp->n_ff), 1u);
        if (m->fuse_qkv)
                widest = MAX(widest, m->qkv_stride);
        if (m->fuse_ffn)
                widest = MAX(widest, m->ffn_stride);
        uint64_t max_rows = MIN(caps->max_storage_buffer_range, caps->max_allocation) / ((uint64_t) widest * 4);
        c->n_batch = m->opts.n_batch ? m->opts.n_batch : MODEL_DEFAULT_BATCH;
        c->n_batch = (uint32_t) MIN(MIN((uint64_t) c->n_batch, (uint64_t) n_ctx), max_rows);
        if (c->n_batch == 0)
                return -EFBIG;

        uint64_t cache = (uint64_t) hp->n_head_kv * n_ctx * hp->head_dim * 2;
        c->k_cache = calloc(hp->n_layer, sizeof *c->k_cache);
        c->v_cache = calloc(hp->n_layer, sizeof *c->v_cache);
        if (!c->k_cache || !c->v_cache)
                return -ENOMEM;
        for (uint32_t il = 0; il < hp->n_layer; il++) {
                r = gpu_buffer_new(m->dev, cache, GPU_MEMORY_DEVICE, &c->k_cache[il]);
                if (r >= 0)
                        r = gpu_buffer_new(m->dev, cache, GPU_MEMORY_DEVICE, &c->v_cache[il]);
                if (r < 0)
                        return r;
        }

        uint64_t nb = c->n_batch, kv_dim = (uint64_t) hp->n_head_kv * hp->head_dim;
        struct {
                GpuBuffer **b;
                uint64_t size;
        } acts[] = {
                { &c->x, nb * hp->n_embd * 4 },
                { &c->h, nb * hp->n_embd * 4 },
                { &c->q, nb * (m->fuse_qkv ? m->qkv_stride : hp->n_embd) * 4 },
                { m->fuse_qkv ? NULL : &c->k, nb * kv_dim * 4 },
                { m->fuse_qkv ? NULL : &c->v, nb * kv_dim * 4 },
                { &c->att, nb * hp->n_embd * 4 },
                { &c->g, nb * (m->fuse_ffn ? m->ffn_stride : hp->n_ff) * 4 },
                { &c->u, nb * hp->n_ff * 4 },
                { &c->logits, (uint64_t) hp->n_vocab * 4 },
                { &c->sync, MAX(gpu_matvec_norm_scratch_size(hp->n_embd, GPU_MATVEC_MAX_VECTORS),
                                gpu_argmax_scratch_size(hp->n_vocab)) },
                { &c->topk_scratch, gpu_topk_scratch_size(hp->n_vocab) },
        };
        for (size_t i = 0; i < ELEMENTSOF(acts); i++) {
                if (!acts[i].b)
                        continue;
                r = gpu_buffer_new(m->dev, MAX(acts[i].size, 4u), GPU_MEMORY_DEVICE, acts[i].b);
                if (r < 0)
                        return r;
        }
        /* Zeroed: decode attention's completion counters live in it and must start at zero. */
        r = gpu_attention_scratch_new(m->dev, hp->n_head, hp->head_dim, n_ctx, &c->scratch);
        if (r < 0)
                return r;
        c->pos_offset = align_up(nb * 4, BIND_ALIGN);
        c->top_offset = align_up(c->pos_offset + nb * 4, BIND_ALIGN);
        c->chain_offset = align_up(c->top_offset + sizeof(GpuTopkParams), BIND_ALIGN);
        r = gpu_buffer_new(m->dev, c->chain_offset + CHAIN_SLOTS * BIND_ALIGN, GPU_MEMORY_HOST, &c->io);
        if (r < 0)
                return r;
        if (!gpu_buffer_map(c->io))
                return -EIO;
        r = gpu_buffer_new(m->dev, c->pos_offset + nb * 4, GPU_MEMORY_DEVICE, &c->io_dev);
        if (r < 0)
                return r;
        c->argmax_offset = align_up((uint64_t) hp->n_vocab * 4, BIND_ALIGN);
        c->top_out_offset = align_up(c->argmax_offset + 4, BIND_ALIGN);
        r = gpu_buffer_new(m->dev, c->top_out_offset + gpu_topk_out_size(), GPU_MEMORY_HOST, &c->out);
        if (r < 0)
                return r;
        if (!gpu_buffer_map(c->out))
                return -EIO;
        /* The counters start at zero and every use leaves them so. */
        r = gpu_buffer_fill(c->sync, 0, gpu_buffer_size(c->sync), 0);
        if (r < 0)
                return r;
        r = gpu_buffer_fill(c->topk_scratch, 0, gpu_buffer_size(c->topk_scratch), 0);
        if (r < 0)
                return r;
        r = gpu_cmd_new(m->dev, &c->cmd);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(c);
        return 0;
}

void model_context_inject_fault(ModelContext *c, ModelFault f) {
        c->faults |= f;
}

const Model *model_context_model(const ModelContext *c) {
        return c->model;
}

uint32_t model_context_n_ctx(const ModelContext *c) {
        return c->n_ctx;
}

uint32_t model_context_pos(const ModelContext *c) {
        return c->pos;
}

int model_context_truncate(ModelContext *c, uint32_t pos) {
        /* The cache past pos is never read again: attention only reads positions < the current one.
         * The recorded single-token passes stay valid: they read the position from c->io. */
        if (pos < c->pos)
                c->pos = pos;
        return 0;
}

/* A failed submission may leave the ops' counters set: the context is not handed out again. */
static int submit(ModelContext *c, GpuCmd *cmd) {
        int r;
        if (c->faults & MODEL_FAULT_SUBMIT) {
                c->faults &= ~MODEL_FAULT_SUBMIT;
                r = -EIO;
        } else
                r = gpu_cmd_submit(cmd);
        if (r < 0)
                c->broken = true;
        return r;
}

/* Submits *slot, recording it on first use: the single-token pass for out (n_chain 0), or n_chain
 * of them chained (pass_record_chain()). Nothing in them depends on the position, so they are replayed. */
static int replay(ModelContext *c, GpuCmd **slot, EvalOutput out, uint32_t n_chain) {
        int r;

        if (!*slot) {
                _cleanup_(gpu_cmd_freep) GpuCmd *cmd = NULL;

                r = gpu_cmd_new(c->model->dev, &cmd);
                if (r < 0)
                        return r;
                r = n_chain > 0 ? pass_record_chain(c, cmd, n_chain) : pass_record(c, cmd, 1, 0, out);
                if (r < 0)
                        return r;
                *slot = TAKE_PTR(cmd);
        }
        return submit(c, *slot);
}

static int eval(ModelContext *c, const int32_t *tokens, uint32_t n_tokens, EvalOutput out) {
        const ModelHParams *hp = &c->model->hp;
        uint32_t pos = c->pos;
        int r;

        if (!tokens || n_tokens == 0)
                return -EINVAL;
        if (n_tokens > c->n_ctx - c->pos)
                return -ENOSPC;
        for (uint32_t i = 0; i < n_tokens; i++)
                if (tokens[i] < 0 || (uint32_t) tokens[i] >= hp->n_vocab)
                        return -EINVAL;

        uint8_t *io = gpu_buffer_map(c->io);
        for (uint32_t done = 0; done < n_tokens;) {
                uint32_t n = MIN(n_tokens - done, c->n_batch);
                EvalOutput wanted = done + n == n_tokens ? out : EVAL_NONE;
                uint32_t *ids = (uint32_t *) io;
                int32_t *positions = (int32_t *) (io + c->pos_offset);

                for (uint32_t i = 0; i < n; i++) {
                        ids[i] = (uint32_t) tokens[done + i];
                        positions[i] = (int32_t) (pos + i);
                }
                if (n == 1)
                        r = replay(c, &c->step[wanted], wanted, 0);
                else {
                        r = pass_record(c, c->cmd, n, pos, wanted);
                        if (r >= 0)
                                r = submit(c, c->cmd);
                }
                if (r < 0)
                        return r;
                done += n;
                pos += n;
        }
        /* Only a complete batch moves the position: after an error the caller may retry from where it was. */
        c->pos = pos;
        return 0;
}

int model_eval(ModelContext *c, const int32_t *tokens, uint32_t n_tokens, float *logits) {
        int r;

        r = eval(c, tokens, n_tokens, logits ? EVAL_LOGITS : EVAL_NONE);
        if (r < 0 || !logits)
                return r;
        /* The pass copied them to c->out behind a host barrier: no transfer left to wait for. */
        memcpy(logits, gpu_buffer_map(c->out), (size_t) c->model->hp.n_vocab * sizeof(float));
        return 0;
}

bool model_samples_on_device(const Model *m) {
        return m->sample_on_device;
}

uint32_t model_decode_chain(const Model *m) {
        return m->decode_chain;
}

int model_eval_top(ModelContext *c, const int32_t *tokens, uint32_t n_tokens, uint32_t k, const int32_t *gather,
                   uint32_t n_gather, ModelTop *ret) {
        const ModelHParams *hp = &c->model->hp;
        int r;

        if (!ret || k == 0 || k > MODEL_TOP_MAX || n_gather > MODEL_TOP_MAX || (n_gather > 0 && !gather))
                return -EINVAL;
        for (uint32_t i = 0; i < n_gather; i++)
                if (gather[i] < 0 || (uint32_t) gather[i] >= hp->n_vocab)
                        return -EINVAL;

        /* Read by the pass when it runs: the recorded one is replayed with new values. */
        GpuTopkParams *params = (GpuTopkParams *) ((uint8_t *) gpu_buffer_map(c->io) + c->top_offset);
        params->k = k;
        params->n_gather = n_gather;
        for (uint32_t i = 0; i < n_gather; i++)
                params->gather[i] = (uint32_t) gather[i];

        r = eval(c, tokens, n_tokens, EVAL_TOP);
        if (r < 0)
                return r;

        const uint32_t *o = (const uint32_t *) ((const uint8_t *) gpu_buffer_map(c->out) + c->top_out_offset);
        uint32_t m = o[0];
        if (c->faults & MODEL_FAULT_TOP) {
                c->faults &= ~MODEL_FAULT_TOP;
                m = k + 1;
        }
        if (m > k) {
                c->pos -= n_tokens;     /* cannot happen; never hand out a short read */
                return -EIO;
        }
        for (uint32_t i = 0; i < m; i++) {
                uint32_t id = o[2 + 2 * i];
                if (id >= hp->n_vocab) {
                        c->pos -= n_tokens;
                        return -EIO;
                }
                memcpy(&ret->logits[i], &o[1 + 2 * i], 4);
                ret->ids[i] = (int32_t) id;
        }
        memcpy(ret->gathered, o + GPU_TOPK_OUT_GATHER, (size_t) n_gather * 4);
        ret->m = m;
        return 0;
}

int model_warm_up(Model *m, uint32_t n_ctx) {
        const ModelHParams *hp = &m->hp;
        _cleanup_(model_context_freep) ModelContext *c = NULL;
        _cleanup_free_ float *logits = NULL;
        _cleanup_free_ ModelTop *top = NULL;
        int32_t ids[GPU_MATVEC_MAX_VECTORS + 1], t;
        int r;

        r = model_context_new(m, n_ctx, &c);
        if (r < 0)
                return r;
        logits = malloc((size_t) hp->n_vocab * sizeof(float));
        top = malloc(sizeof *top);
        if (!logits || !top)
                return -ENOMEM;
        /* A prompt just long enough for the matrix x matrix kernels, if it fits, then a decode pass of
         * each kind a job uses on this device. */
        if (c->n_ctx < 4)
                return 0;
        uint32_t n = MIN((uint32_t) ELEMENTSOF(ids), c->n_ctx - 3);
        for (uint32_t i = 0; i < n; i++)
                ids[i] = (int32_t) (i % hp->n_vocab);
        r = model_eval_greedy(c, ids, n, &t);
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        if (r >= 0)
                r = model_eval_greedy(c, &t, 1, &t);
        uint64_t pass_usec = now_usec(CLOCK_MONOTONIC) - t0;
        if (r >= 0 && m->sample_on_device)
                r = model_eval_top(c, &t, 1, 40, NULL, 0, top);
        else if (r >= 0)
                r = model_eval(c, &t, 1, logits);
        /* Prompts of 2 to 8 tokens run the matrix x vector kernels with as many vectors, a pipeline
         * each: short prompts are common ("Once upon a time"). Built here where the pipeline cache
         * keeps them for the next start (GPU drivers; lavapipe would build some forty pipelines at
         * every start, seconds, where a job builds the one it needs) and a pass is quick. */
        bool all_widths = !gpu_device_is_cpu(m->dev) && pass_usec < 100000;
        for (uint32_t k = 2; r >= 0 && all_widths && k <= GPU_MATVEC_MAX_VECTORS && k + 1 <= c->n_ctx; k++) {
                r = model_context_truncate(c, 0);
                if (r >= 0)
                        r = model_eval_greedy(c, ids, k, &t);
        }
        /* -EIO: random ids made a row of NaNs, which says nothing about the model; the pipelines are built. */
        return r == -EIO ? 0 : r;
}

int model_profile_step(ModelContext *c, int32_t token, ModelProfileEntry *ret, size_t max) {
        const ModelHParams *hp = &c->model->hp;
        _cleanup_(gpu_cmd_freep) GpuCmd *cmd = NULL;
        _cleanup_free_ PassProfile *prof = NULL;
        int r;

        if (!ret || token < 0 || (uint32_t) token >= hp->n_vocab)
                return -EINVAL;
        if (c->pos >= c->n_ctx)
                return -ENOSPC;
        prof = calloc(1, sizeof *prof);
        if (!prof)
                return -ENOMEM;
        r = gpu_cmd_new(c->model->dev, &cmd);
        if (r < 0)
                return r;
        uint8_t *io = gpu_buffer_map(c->io);
        memcpy(io, &token, 4);
        memcpy(io + c->pos_offset, &c->pos, 4);
        /* The pass the decode replays, timestamped; it writes the KV cache at c->pos, which the next
         * eval overwrites, and leaves c->pos alone. */
        c->profile = prof;
        r = pass_record(c, cmd, 1, 0, EVAL_ARGMAX);
        c->profile = NULL;
        if (r < 0)
                return r;
        if (prof->error < 0)
                return prof->error;
        r = submit(c, cmd);
        if (r < 0)
                return r;
        size_t n = MIN(prof->n, max);
        for (size_t i = 0; i < n; i++) {
                ret[i].name = prof->name[i];
                r = gpu_cmd_elapsed_ns(cmd, prof->slot[i], prof->slot[i + 1], &ret[i].ns);
                if (r < 0)
                        return r;
        }
        return (int) n;
}

int model_eval_greedy(ModelContext *c, const int32_t *tokens, uint32_t n_tokens, int32_t *ret_token) {
        uint32_t pos = c->pos, token;
        int r;

        r = eval(c, tokens, n_tokens, EVAL_ARGMAX);
        if (r < 0)
                return r;
        memcpy(&token, (const uint8_t *) gpu_buffer_map(c->out) + c->argmax_offset, sizeof token);
        if (token >= c->model->hp.n_vocab) {
                c->pos = pos;   /* NaN logits: the argmax is unspecified */
                return -EIO;
        }
        if (ret_token)
                *ret_token = (int32_t) token;
        return 0;
}

int model_decode_greedy(ModelContext *c, int32_t token, uint32_t n, int32_t *ret_tokens) {
        const ModelHParams *hp = &c->model->hp;
        uint8_t *io = gpu_buffer_map(c->io);
        uint32_t pos = c->pos;
        int r;

        if (!ret_tokens || n == 0 || n > MODEL_CHAIN_MAX || token < 0 || (uint32_t) token >= hp->n_vocab)
                return -EINVAL;
        if (n > c->n_ctx - c->pos)
                return -ENOSPC;

        memcpy(io + chain_id_slot(c, 0), &token, 4);
        for (uint32_t s = 0; s < n; s++) {
                int32_t p = (int32_t) (pos + s);
                memcpy(io + chain_pos_slot(c, s), &p, 4);
        }
        r = replay(c, &c->chain[n], EVAL_ARGMAX, n);
        if (r < 0)
                return r;

        /* An invalid argmax (a row of NaNs) ends the chain: the passes after it ran on nonsense. */
        uint32_t done = 0;
        for (; done < n; done++) {
                uint32_t t;
                memcpy(&t, io + chain_id_slot(c, done + 1), 4);
                if (t >= hp->n_vocab)
                        break;
                ret_tokens[done] = (int32_t) t;
        }
        if (done == 0)
                return -EIO;
        c->pos = pos + done;
        return (int) done;
}
