/* SPDX-License-Identifier: MIT */
/*
 * Recording a model's forward pass: the embedding, each block's attention
 * and feed-forward halves and the head, as dispatches on the engine's ops
 * with a barrier between dependent ones. Up to GPU_MATVEC_MAX_VECTORS
 * tokens the projections are matrix x vector products that also run what
 * follows them (bias, RoPE and the KV store; SwiGLU; the residual add and
 * the next RMSNorm); past that, matrix x matrix and separate ops.
 */

#include <errno.h>
#include <math.h>

#include "macro.h"
#include "model-internal.h"
#include "ops-attention.h"
#include "ops-basic.h"
#include "ops-matmul.h"
#include "ops-weights.h"

/* ---- the forward pass ------------------------------------------------------------- */

/* x [n][w->n_cols] -> y [n][w->n_rows]: matrix x vector for a few tokens, matrix x matrix beyond. */
static int project(GpuCmd *cmd, GpuDevice *d, const GpuTensor *w, GpuBuffer *x, GpuBuffer *y, uint32_t n) {
        if (n <= GPU_MATVEC_MAX_VECTORS)
                return gpu_op_matvec(cmd, d, w, bind(x), bind(y), n);
        return gpu_op_matmul(cmd, d, w, bind(x), bind(y), n);
}

/* The residual connection after a projection: y += W x. A few tokens (decode) take one matvec that adds
 * as it stores, one dispatch and barrier fewer per call; beyond, the matmul into tmp and an add. */
static int project_add(GpuCmd *cmd, GpuDevice *d, const GpuTensor *w, GpuBuffer *x, GpuBuffer *y, GpuBuffer *tmp,
                       uint32_t n) {
        if (n <= GPU_MATVEC_MAX_VECTORS)
                return gpu_op_matvec_add(cmd, d, w, bind(x), bind(y), n);
        int r = gpu_op_matmul(cmd, d, w, bind(x), bind(tmp), n);
        if (r < 0)
                return r;
        gpu_cmd_barrier(cmd);
        return gpu_op_add(cmd, d, bind(y), bind(tmp), bind(y), n, w->n_rows, false);
}

#define TRY(expr)                       \
        do {                            \
                int _r_ = (expr);       \
                if (_r_ < 0)            \
                        return _r_;     \
        } while (0)

/* Profiling (model_profile_step()): a timestamp after each barrier, named for what ran since the last. */

static void mark_start(ModelContext *c, GpuCmd *cmd) {
        if (!c->profile)
                return;
        int r = gpu_cmd_timestamp(cmd);
        if (r < 0)
                c->profile->error = r;
        c->profile->slot[0] = r;
}

static void mark_end(ModelContext *c, GpuCmd *cmd, const char *what) {
        if (!c->profile || c->profile->error < 0)
                return;
        if (c->profile->n >= MODEL_PROFILE_MAX) {
                c->profile->error = -ENOBUFS;
                return;
        }
        int r = gpu_cmd_timestamp(cmd);
        if (r < 0) {
                c->profile->error = r;
                return;
        }
        c->profile->name[c->profile->n] = what;
        c->profile->slot[++c->profile->n] = r;
}

/* The barrier between dependent ops. */
static void mark(ModelContext *c, GpuCmd *cmd, const char *what) {
        gpu_cmd_barrier(cmd);
        mark_end(c, cmd, what);
}

/*
 * x += W in, then h = RMSNorm(x) * the weight at norm_w in vecs: a residual
 * connection and the next norm in one dispatch (matrix x vector only).
 */
static int residual_norm(GpuCmd *cmd, ModelContext *c, const GpuTensor *w, GpuBuffer *in, uint64_t norm_w,
                         uint32_t n) {
        Model *m = c->model;
        const GpuMatvecNorm norm = {
                .weight = bind_at(m->vecs, norm_w, (uint64_t) m->hp.n_embd * 4),
                .out = bind(c->h),
                .scratch = bind(c->sync),
                .eps = m->hp.rms_eps,
        };
        return gpu_op_matvec_add_norm(cmd, m->dev, w, bind(in), bind(c->x), n, &norm);
}

/* What the ops of one pass share: where it records, its bindings and the fixed parameters of its ops. */
typedef struct Pass {
        ModelContext *c;
        GpuCmd *cmd;
        uint32_t n;                     /* tokens */
        GpuBinding pos;                 /* their positions, in device memory */
        /* Views of the projections' outputs: strided rows of the fused buffers, or their own buffers. */
        GpuBinding q, k, v;
        uint32_t qkv_stride;            /* 0 unless fused */
        bool rope_once;                 /* q and k rotated by one dispatch: the gap between them is whole heads */
        /* Up to GPU_MATVEC_MAX_VECTORS tokens the projections are matvecs, with their epilogues. */
        bool fuse_norm, fuse_rope, fuse_swiglu;
        GpuRope rope_q, rope_k;
        GpuAttentionParams ap;
        /* Where the embedding reads the ids and positions, and where the argmax goes: c->io and c->out,
         * or a chain's slots (record_chain()). */
        GpuBinding ids_in, pos_in, argmax_out;
        bool chained;                   /* more passes follow in the same recording */
} Pass;

static void pass_init(Pass *ps, ModelContext *c, GpuCmd *cmd, uint32_t n, uint32_t pos0) {
        const Model *m = c->model;
        const ModelHParams *hp = &m->hp;
        uint32_t kv_dim = hp->n_head_kv * hp->head_dim;
        bool mv = n <= GPU_MATVEC_MAX_VECTORS;

        *ps = (Pass) {
                .c = c,
                .cmd = cmd,
                .n = n,
                /* The embedding kernel reads the ids from host-visible c->io (once per token) and copies
                 * the positions into io_dev, where the other kernels read them: on a discrete GPU a
                 * kernel reading host memory crosses the bus once per workgroup. */
                .pos = bind_at(c->io_dev, c->pos_offset, (uint64_t) n * 4),
                .q = bind(c->q),
                .k = m->fuse_qkv ? bind_at(c->q, (uint64_t) m->k_off * 4, 0) : bind(c->k),
                .v = m->fuse_qkv ? bind_at(c->q, (uint64_t) m->v_off * 4, 0) : bind(c->v),
                .qkv_stride = m->fuse_qkv ? m->qkv_stride : 0,
                .rope_once = m->fuse_qkv && (m->k_off - hp->n_embd) % hp->head_dim == 0,
                .fuse_norm = m->fuse_norm && mv,
                .fuse_rope = m->fuse_rope && mv,
                .fuse_swiglu = m->fuse_swiglu && mv,
                .rope_q = {
                        .n_tokens = n,
                        .n_heads = hp->n_head,
                        .head_dim = hp->head_dim,
                        .n_rot = hp->n_rot,
                        .mode = hp->rope_neox ? GPU_ROPE_NEOX : GPU_ROPE_NORMAL,
                        .freq_base = hp->rope_base,
                        .freq_scale = hp->rope_scale,
                        .freq_factors_inv = hp->rope_freqs ? bind_at(m->vecs, m->rope_freqs_inv,
                                                                     (uint64_t) hp->n_rot / 2 * 4)
                                                           : (GpuBinding) {},
                },
        };
        ps->rope_k = ps->rope_q;
        ps->rope_k.n_heads = hp->n_head_kv;
        if (m->fuse_qkv) {
                ps->rope_q.x_stride = ps->rope_q.out_stride = ps->qkv_stride;
                ps->rope_k.x_stride = ps->rope_k.out_stride = ps->qkv_stride;
        }
        if (ps->rope_once)
                ps->rope_q.n_heads = (m->k_off + kv_dim) / hp->head_dim;
        ps->ap = (GpuAttentionParams) {
                .n_tokens = n,
                .n_head = hp->n_head,
                .n_head_kv = hp->n_head_kv,
                .head_dim = hp->head_dim,
                .n_ctx = c->n_ctx,
                .pos0 = n == 1 ? 0 : pos0,
                .scale = 1.0f / sqrtf((float) hp->head_dim),
                .q_stride = ps->qkv_stride,
                .kv_stride = ps->qkv_stride,
                .pos_buffer = n == 1 ? ps->pos : (GpuBinding) {},
        };
        ps->ids_in = bind_at(c->io, 0, (uint64_t) n * 4);
        ps->pos_in = bind_at(c->io, c->pos_offset, (uint64_t) n * 4);
        ps->argmax_out = bind_at(c->out, c->argmax_offset, 4);
}

/* The embeddings, the first block's norm of them, and the positions to the device. */
static int record_embed(Pass *ps) {
        ModelContext *c = ps->c;
        const Model *m = c->model;
        const ModelHParams *hp = &m->hp;
        const GpuEmbed embed = {
                .norm_weight = bind_at(m->vecs, m->layers[0].attn_norm, hp->n_embd * 4),
                .norm_out = bind(c->h),
                .eps = hp->rms_eps,
                .pos_in = ps->pos_in,
                .pos_out = ps->pos,
        };
        TRY(gpu_op_embed(ps->cmd, m->dev, m->tok_embd, ps->ids_in, bind(c->x), ps->n, &embed));
        mark(c, ps->cmd, "embed+norm");
        return 0;
}

/* Q, K and V by separate ops: projections, bias, RoPE and the KV store (prefill, or no fused epilogue). */
static int record_qkv_separate(Pass *ps, const ModelLayer *l, GpuBinding kc, GpuBinding vc) {
        ModelContext *c = ps->c;
        const Model *m = c->model;
        const ModelHParams *hp = &m->hp;
        GpuCmd *cmd = ps->cmd;
        GpuDevice *d = m->dev;
        uint32_t kv_dim = hp->n_head_kv * hp->head_dim, n = ps->n;

        if (m->fuse_qkv)
                TRY(project(cmd, d, l->wqkv, c->h, c->q, n));
        else {
                TRY(project(cmd, d, l->wq, c->h, c->q, n));
                TRY(project(cmd, d, l->wk, c->h, c->k, n));
                TRY(project(cmd, d, l->wv, c->h, c->v, n));
        }
        mark(c, cmd, "qkv");
        if (hp->qkv_bias && m->fuse_qkv) {
                TRY(gpu_op_add(cmd, d, ps->q, bind_at(m->vecs, l->bqkv, (uint64_t) ps->qkv_stride * 4), ps->q, n,
                               ps->qkv_stride, true));
                mark(c, cmd, "bias");
        } else if (hp->qkv_bias) {
                TRY(gpu_op_add(cmd, d, bind(c->q), bind_at(m->vecs, l->bq, hp->n_embd * 4), bind(c->q), n,
                               hp->n_embd, true));
                TRY(gpu_op_add(cmd, d, bind(c->k), bind_at(m->vecs, l->bk, kv_dim * 4), bind(c->k), n, kv_dim,
                               true));
                TRY(gpu_op_add(cmd, d, bind(c->v), bind_at(m->vecs, l->bv, kv_dim * 4), bind(c->v), n, kv_dim,
                               true));
                mark(c, cmd, "bias");
        }
        if (n == 1)     /* decode: positions from the buffer, one dispatch for both */
                TRY(gpu_op_rope_kv_store(cmd, d, ps->q, ps->k, ps->v, kc, vc, &ps->rope_q, &ps->ap));
        else {
                TRY(gpu_op_rope(cmd, d, ps->q, ps->pos, ps->q, &ps->rope_q));
                if (!ps->rope_once)
                        TRY(gpu_op_rope(cmd, d, ps->k, ps->pos, ps->k, &ps->rope_k));
                mark(c, cmd, "rope");
                TRY(gpu_op_kv_store(cmd, d, ps->k, ps->v, kc, vc, &ps->ap));
        }
        mark(c, cmd, "rope+kv_store");
        return 0;
}

/* Block il's attention: its norm (unless fused), Q/K/V into the cache, attention, and wo with the residual. */
static int record_attention(Pass *ps, uint32_t il) {
        ModelContext *c = ps->c;
        const Model *m = c->model;
        const ModelHParams *hp = &m->hp;
        const ModelLayer *l = &m->layers[il];
        GpuCmd *cmd = ps->cmd;
        GpuDevice *d = m->dev;
        GpuBinding kc = bind(c->k_cache[il]), vc = bind(c->v_cache[il]);

        if (!ps->fuse_norm && il > 0) {         /* else done by the embedding or the last block's down */
                TRY(gpu_op_rmsnorm(cmd, d, bind(c->x), bind_at(m->vecs, l->attn_norm, hp->n_embd * 4), bind(c->h),
                                   ps->n, hp->n_embd, hp->rms_eps));
                mark(c, cmd, "attn_norm");
        }
        if (ps->fuse_rope) {
                /* Bias, RoPE and the KV store inside the projection. */
                const GpuMatvecQkv qk = {
                        .n_head = hp->n_head,
                        .n_head_kv = hp->n_head_kv,
                        .head_dim = hp->head_dim,
                        .n_rot = hp->n_rot,
                        .k_row = m->k_off,
                        .v_row = m->v_off,
                        .mode = ps->rope_q.mode,
                        .freq_base = hp->rope_base,
                        .freq_scale = hp->rope_scale,
                        .freq_factors_inv = ps->rope_q.freq_factors_inv,
                        .pos = ps->pos,
                        .k_cache = kc,
                        .v_cache = vc,
                        .n_ctx = c->n_ctx,
                        .bias = hp->qkv_bias ? bind_at(m->vecs, l->bqkv, (uint64_t) ps->qkv_stride * 4)
                                             : (GpuBinding) {},
                };
                TRY(gpu_op_matvec_qkv(cmd, d, l->wqkv, bind(c->h), bind(c->q), ps->n, &qk));
                mark(c, cmd, "qkv+rope+kv_store");
        } else
                TRY(record_qkv_separate(ps, l, kc, vc));
        TRY(gpu_op_attention(cmd, d, ps->q, kc, vc, bind(c->att), bind(c->scratch), &ps->ap));
        mark(c, cmd, "attention");
        if (ps->fuse_norm)
                TRY(residual_norm(cmd, c, l->wo, c->att, l->ffn_norm, ps->n));
        else
                TRY(project_add(cmd, d, l->wo, c->att, c->x, c->h, ps->n));
        mark(c, cmd, ps->fuse_norm ? "wo+norm" : "wo");
        return 0;
}

/* Block il's feed-forward: its norm (unless fused), gate/up with SwiGLU, and down with the residual. */
static int record_ffn(Pass *ps, uint32_t il) {
        ModelContext *c = ps->c;
        const Model *m = c->model;
        const ModelHParams *hp = &m->hp;
        const ModelLayer *l = &m->layers[il];
        GpuCmd *cmd = ps->cmd;
        GpuDevice *d = m->dev;
        uint32_t n = ps->n;

        if (!ps->fuse_norm) {
                TRY(gpu_op_rmsnorm(cmd, d, bind(c->x), bind_at(m->vecs, l->ffn_norm, hp->n_embd * 4), bind(c->h), n,
                                   hp->n_embd, hp->rms_eps));
                mark(c, cmd, "ffn_norm");
        }
        if (ps->fuse_swiglu) {
                TRY(gpu_op_matvec_swiglu(cmd, d, l->w_gu, bind(c->h), bind(c->u), n, hp->n_ff, m->up_off));
                mark(c, cmd, "gate_up+swiglu");
        } else {
                if (m->fuse_ffn) {
                        TRY(project(cmd, d, l->w_gu, c->h, c->g, n));
                        mark(c, cmd, "gate_up");
                        TRY(gpu_op_swiglu_strided(cmd, d, bind(c->g), bind_at(c->g, (uint64_t) m->up_off * 4, 0),
                                                  bind(c->u), n, hp->n_ff, m->ffn_stride, m->ffn_stride, hp->n_ff));
                } else {
                        TRY(project(cmd, d, l->w_gate, c->h, c->g, n));
                        TRY(project(cmd, d, l->w_up, c->h, c->u, n));
                        mark(c, cmd, "gate_up");
                        TRY(gpu_op_swiglu(cmd, d, bind(c->g), bind(c->u), bind(c->g), n, hp->n_ff));
                }
                mark(c, cmd, "swiglu");
        }
        GpuBuffer *act = m->fuse_ffn ? c->u : c->g;
        if (ps->fuse_norm)      /* for the next block, or the head after the last */
                TRY(residual_norm(cmd, c, l->w_down, act,
                                  il + 1 < hp->n_layer ? m->layers[il + 1].attn_norm : m->output_norm, n));
        else
                TRY(project_add(cmd, d, l->w_down, act, c->x, c->att, n));
        mark(c, cmd, ps->fuse_norm ? "down+norm" : "down");
        return 0;
}

/* The head for the last token, and the logits or the argmax into the host-visible buffer. */
static int record_head(Pass *ps, EvalOutput out) {
        ModelContext *c = ps->c;
        const Model *m = c->model;
        const ModelHParams *hp = &m->hp;
        GpuCmd *cmd = ps->cmd;
        GpuDevice *d = m->dev;

        /* The last token's row is bound directly when aligned, else copied. */
        uint64_t row = (uint64_t) hp->n_embd * 4, last = (uint64_t) (ps->n - 1) * row;
        GpuBinding hl = bind_at(c->h, 0, row);
        if (ps->fuse_norm) {    /* h holds every token's final norm already */
                hl = bind_at(c->h, last, row);
                if (last % BIND_ALIGN != 0) {
                        gpu_cmd_copy(cmd, c->h, last, c->att, 0, row);
                        mark(c, cmd, "copy");
                        hl = bind_at(c->att, 0, row);
                }
        } else {
                GpuBinding xl = bind_at(c->x, last, row);
                if (last % BIND_ALIGN != 0) {
                        gpu_cmd_copy(cmd, c->x, last, c->h, 0, row);
                        mark(c, cmd, "copy");
                        xl = bind_at(c->h, 0, row);
                }
                TRY(gpu_op_rmsnorm(cmd, d, xl, bind_at(m->vecs, m->output_norm, row), hl, 1, hp->n_embd,
                                   hp->rms_eps));
                mark(c, cmd, "output_norm");
        }
        TRY(gpu_op_matvec(cmd, d, m->output ? m->output : m->tok_embd, hl, bind(c->logits), 1));
        mark(c, cmd, "head");
        /* Into the host-visible buffer, readable as soon as the submission is done. */
        /* The kernels write the host-visible words themselves; the parameters come from c->io. */
        if (out == EVAL_ARGMAX)
                TRY(gpu_op_argmax_split(cmd, d, bind(c->logits), ps->argmax_out, bind(c->sync), hp->n_vocab));
        else if (out == EVAL_TOP)
                TRY(gpu_op_topk_split(cmd, d, bind(c->logits), bind_at(c->io, c->top_offset, sizeof(GpuTopkParams)),
                                      bind_at(c->out, c->top_out_offset, gpu_topk_out_size()),
                                      bind(c->topk_scratch), hp->n_vocab));
        else
                gpu_cmd_copy(cmd, c->logits, 0, c->out, 0, (uint64_t) hp->n_vocab * 4);
        if (ps->chained)        /* the next pass's embedding reads the argmax */
                gpu_cmd_barrier(cmd);
        else
                gpu_cmd_barrier_host(cmd);
        mark_end(c, cmd, out == EVAL_ARGMAX ? "argmax" : out == EVAL_TOP ? "top-k" : "copy out");
        return 0;
}

/* The embedding, every block and, unless out is EVAL_NONE, the head: one pass, as ps says. */
static int record_tokens(Pass *ps, EvalOutput out) {
        TRY(record_embed(ps));
        for (uint32_t il = 0; il < ps->c->model->hp.n_layer; il++) {
                TRY(record_attention(ps, il));
                TRY(record_ffn(ps, il));
        }
        return out == EVAL_NONE ? 0 : record_head(ps, out);
}

/* model-internal.h says what it records. */
int pass_record(ModelContext *c, GpuCmd *cmd, uint32_t n, uint32_t pos0, EvalOutput out) {
        Pass ps;

        pass_init(&ps, c, cmd, n, pos0);
        TRY(gpu_cmd_begin(cmd));
        mark_start(c, cmd);
        return record_tokens(&ps, out);
}

int pass_record_chain(ModelContext *c, GpuCmd *cmd, uint32_t n) {
        TRY(gpu_cmd_begin(cmd));
        for (uint32_t s = 0; s < n; s++) {
                Pass ps;
                pass_init(&ps, c, cmd, 1, 0);
                ps.ids_in = bind_at(c->io, chain_id_slot(c, s), 4);
                ps.pos_in = bind_at(c->io, chain_pos_slot(c, s), 4);
                ps.argmax_out = bind_at(c->io, chain_id_slot(c, s + 1), 4);
                ps.chained = s + 1 < n;
                TRY(record_tokens(&ps, EVAL_ARGMAX));
        }
        return 0;
}
