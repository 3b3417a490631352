/* SPDX-License-Identifier: MIT */
/*
 * The llama-family forward pass on the Vulkan engine.
 *
 * Loading: the GGUF file is mapped (gguf.c), its hyper-parameters read and
 * checked, and every weight matrix uploaded once as a GpuTensor in the
 * device layout of tensor.h. The one-dimensional tensors (norm weights,
 * biases, RoPE frequency factors) are small: they are converted to F32 and
 * packed into one buffer, each at a 256-byte aligned offset so it can be
 * bound on its own.
 *
 * Running: a ModelContext owns the F16 KV cache (a K and a V buffer per
 * layer, each [n_head_kv][n_ctx][head_dim] as ops-attention.h wants) and the
 * activations for n_batch tokens. A batch of tokens is one forward pass,
 * recorded into one GpuCmd with a barrier between dependent ops and
 * submitted once; prompts longer than n_batch are split into chunks. Token
 * ids and positions travel in a small host-visible buffer (host writes
 * before vkQueueSubmit are visible to the device without a barrier); each
 * pass starts by copying it to a device-local one, which the kernels read.
 *
 * Projections that read the same input are fused at load into one matrix
 * (q|k|v, gate|up; gpu_tensor_upload_rows), each part starting at a
 * 64-float row so its output can be bound on its own: one matrix x vector
 * instead of three or two, and the kernels after it (RoPE, KV store,
 * attention, SwiGLU) read strided views of the fused output.
 *
 * Decode does not record anything per token: every kernel of the
 * single-token pass reads the token id and its position from that buffer
 * (KV store and decode attention through GpuAttentionParams.pos_buffer, the
 * decode grid sized for the whole context), so the pass is recorded once per
 * context and wanted output (none, logits, argmax), each in its own GpuCmd,
 * and replayed: a token costs two stores into the buffer and one submission.
 * Nothing in those recordings depends on the position, so truncating the
 * context leaves them valid. Prefill chunks (n > 1) are recorded per chunk.
 *
 * Results come back in the same submission: the pass ends with a copy of
 * the logits into a host-visible buffer (or the argmax kernel writes its
 * result there) and a host barrier, and the host reads them from its
 * mapping once the submission is done. The ids come from host-visible
 * memory too, read once per token by the embedding kernel, which copies
 * the positions to device memory for the rest of the pass.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "model-arch.h"
#include "model.h"
#include "ops-attention.h"
#include "ops-basic.h"
#include "ops-matmul.h"
#include "ops-weights.h"
#include "tensor.h"
#include "time-util.h"

static_assert(MODEL_TOP_MAX == GPU_TOPK_MAX, "model_eval_top() passes the op's limits on");

/* Offsets of bindings: the largest minStorageBufferOffsetAlignment Vulkan allows. */
#define BIND_ALIGN 256u
/* model_decode_greedy()'s blocks in c->io: an id and a position per pass, and the last argmax. */
#define CHAIN_SLOTS (2u * MODEL_CHAIN_MAX + 1u)
/* Context length when the file does not say (llama.cpp's default for such files). */
#define DEFAULT_CTX 4096u
#define MAX_LAYERS 4096u
#define MAX_NAME 256

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

static void context_destroy(ModelContext *c);

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
};

static uint64_t align_up(uint64_t v, uint64_t a) {
        return (v + a - 1) / a * a;
}

_printf_(3, 4) static int fail(char **ret_error, int r, const char *fmt, ...) {
        va_list ap;

        if (ret_error) {
                char *s = NULL;
                va_start(ap, fmt);
                if (vasprintf(&s, fmt, ap) < 0)
                        s = NULL;
                va_end(ap);
                free(*ret_error);
                *ret_error = s;
        }
        return r;
}

/* ---- hyper-parameters ------------------------------------------------------ */

static int arch_key(char *buf, size_t len, const ModelArch *arch, const char *suffix) {
        int n = snprintf(buf, len, "%s.%s", arch->name, suffix);
        return n < 0 || (size_t) n >= len ? -ENAMETOOLONG : 0;
}

/* An integer hyper-parameter: absent and not required gives def. */
static int hp_u32(Model *m, const char *suffix, bool required, uint32_t def, uint32_t *ret, char **ret_error) {
        char key[MAX_NAME];
        int r;

        r = arch_key(key, sizeof key, m->arch, suffix);
        if (r < 0)
                return fail(ret_error, r, "%s: key name too long", m->path);
        r = gguf_get_u32(m->gguf, key, ret);
        if (r == -ENOENT && !required) {
                *ret = def;
                return 0;
        }
        if (r == -ENOENT)
                return fail(ret_error, -EBADMSG, "%s: missing metadata key '%s'", m->path, key);
        if (r < 0)
                return fail(ret_error, r, "%s: metadata key '%s' is not a usable integer: %s", m->path, key,
                            strerror(-r));
        return 0;
}

static int hp_f32(Model *m, const char *suffix, bool required, float def, float *ret, char **ret_error) {
        char key[MAX_NAME];
        int r;

        r = arch_key(key, sizeof key, m->arch, suffix);
        if (r < 0)
                return fail(ret_error, r, "%s: key name too long", m->path);
        r = gguf_get_f32(m->gguf, key, ret);
        if (r == -ENOENT && !required) {
                *ret = def;
                return 0;
        }
        if (r == -ENOENT)
                return fail(ret_error, -EBADMSG, "%s: missing metadata key '%s'", m->path, key);
        if (r < 0)
                return fail(ret_error, r, "%s: metadata key '%s' is not a number: %s", m->path, key, strerror(-r));
        if (!isfinite(*ret))
                return fail(ret_error, -EBADMSG, "%s: metadata key '%s' is not finite", m->path, key);
        return 0;
}

/* Linear position scaling; the other schemes (YaRN, LongRoPE) change the kernel and are refused. */
static int read_rope_scaling(Model *m, char **ret_error) {
        char key[MAX_NAME];
        const char *s;
        size_t len;
        float factor = 0;
        int r;

        m->hp.rope_scale = 1.0f;
        r = arch_key(key, sizeof key, m->arch, "rope.scaling.type");
        if (r < 0)
                return fail(ret_error, r, "%s: key name too long", m->path);
        r = gguf_get_string(m->gguf, key, &s, &len);
        if (r == -ENOENT) {
                /* Older files: rope.scale_linear is the factor. */
                r = hp_f32(m, "rope.scale_linear", false, 0, &factor, ret_error);
                if (r < 0)
                        return r;
                if (factor > 0 && factor != 1.0f)
                        m->hp.rope_scale = 1.0f / factor;
                return 0;
        }
        if (r < 0)
                return fail(ret_error, r, "%s: metadata key '%s' is not a string", m->path, key);
        if (len == 4 && memcmp(s, "none", 4) == 0)
                return 0;
        if (len == 6 && memcmp(s, "linear", 6) == 0) {
                r = hp_f32(m, "rope.scaling.factor", true, 0, &factor, ret_error);
                if (r < 0)
                        return r;
                if (!(factor > 0))
                        return fail(ret_error, -EBADMSG, "%s: RoPE scaling factor %g is not positive", m->path,
                                    (double) factor);
                m->hp.rope_scale = 1.0f / factor;
                return 0;
        }
        return fail(ret_error, -EOPNOTSUPP, "%s: RoPE scaling '%.*s' is not supported (only linear)", m->path,
                    (int) MIN(len, 64u), s);
}

static int read_hparams(Model *m, char **ret_error) {
        ModelHParams *hp = &m->hp;
        uint32_t key_len, value_len;
        int r;

        snprintf(hp->arch, sizeof hp->arch, "%s", m->arch->name);
        hp->rope_neox = m->arch->rope_neox;
        hp->qkv_bias = m->arch->qkv_bias;

        if ((r = hp_u32(m, "embedding_length", true, 0, &hp->n_embd, ret_error)) < 0 ||
            (r = hp_u32(m, "block_count", true, 0, &hp->n_layer, ret_error)) < 0 ||
            (r = hp_u32(m, "feed_forward_length", true, 0, &hp->n_ff, ret_error)) < 0 ||
            (r = hp_u32(m, "attention.head_count", true, 0, &hp->n_head, ret_error)) < 0 ||
            (r = hp_u32(m, "attention.head_count_kv", false, hp->n_head, &hp->n_head_kv, ret_error)) < 0 ||
            (r = hp_u32(m, "context_length", false, 0, &hp->n_ctx_train, ret_error)) < 0 ||
            (r = hp_f32(m, "attention.layer_norm_rms_epsilon", true, 0, &hp->rms_eps, ret_error)) < 0 ||
            (r = hp_f32(m, "rope.freq_base", false, 10000.0f, &hp->rope_base, ret_error)) < 0)
                return r;
        if (hp->n_embd == 0 || hp->n_layer == 0 || hp->n_layer > MAX_LAYERS || hp->n_ff == 0 || hp->n_head == 0 ||
            hp->n_head_kv == 0)
                return fail(ret_error, -EBADMSG,
                            "%s: bad hyper-parameters (embedding %u, blocks %u, feed-forward %u, heads %u/%u)",
                            m->path, hp->n_embd, hp->n_layer, hp->n_ff, hp->n_head, hp->n_head_kv);
        if (hp->n_head % hp->n_head_kv != 0)
                return fail(ret_error, -EBADMSG, "%s: %u heads are not a multiple of %u key/value heads", m->path,
                            hp->n_head, hp->n_head_kv);

        /* Head size: explicit key_length/value_length (equal), else n_embd / n_head. */
        if (hp->n_embd % hp->n_head != 0)
                return fail(ret_error, -EBADMSG, "%s: embedding length %u is not a multiple of %u heads", m->path,
                            hp->n_embd, hp->n_head);
        if ((r = hp_u32(m, "attention.key_length", false, hp->n_embd / hp->n_head, &key_len, ret_error)) < 0 ||
            (r = hp_u32(m, "attention.value_length", false, key_len, &value_len, ret_error)) < 0)
                return r;
        if (key_len != value_len || key_len * hp->n_head != hp->n_embd)
                return fail(ret_error, -EOPNOTSUPP,
                            "%s: head sizes %u (keys) and %u (values) with %u heads do not fill the embedding "
                            "length %u",
                            m->path, key_len, value_len, hp->n_head, hp->n_embd);
        hp->head_dim = key_len;
        /* The attention kernels' range (ops-attention.h). */
        if (hp->head_dim < 8 || hp->head_dim > 256 || hp->head_dim % 8 != 0)
                return fail(ret_error, -EOPNOTSUPP,
                            "%s: head size %u is not supported (a multiple of 8 between 8 and 256)", m->path,
                            hp->head_dim);

        if ((r = hp_u32(m, "rope.dimension_count", false, hp->head_dim, &hp->n_rot, ret_error)) < 0)
                return r;
        if (hp->n_rot > hp->head_dim || hp->n_rot % 2 != 0)
                return fail(ret_error, -EBADMSG, "%s: RoPE dimension count %u does not fit head size %u", m->path,
                            hp->n_rot, hp->head_dim);
        if (!(hp->rope_base > 0))
                return fail(ret_error, -EBADMSG, "%s: RoPE frequency base %g is not positive", m->path,
                            (double) hp->rope_base);
        if (!(hp->rms_eps >= 0))
                return fail(ret_error, -EBADMSG, "%s: RMS norm epsilon %g is negative", m->path,
                            (double) hp->rms_eps);
        return read_rope_scaling(m, ret_error);
}

/* ---- tensors ------------------------------------------------------------------ */

static int tensor_name(char *buf, size_t len, const char *pattern, uint32_t layer) {
        int n = snprintf(buf, len, pattern, layer);
        return n < 0 || (size_t) n >= len ? -ENAMETOOLONG : 0;
}

static const GgufTensor *find_tensor(Model *m, const char *pattern, uint32_t layer, char *name, size_t len) {
        if (tensor_name(name, len, pattern, layer) < 0)
                return NULL;
        return gguf_find_tensor(m->gguf, name);
}

static int check_shape(Model *m, const GgufTensor *t, uint32_t n_dims, uint64_t ne0, uint64_t ne1,
                       char **ret_error) {
        for (uint32_t i = n_dims; i < GGUF_MAX_DIMS; i++)
                if (t->ne[i] != 1)
                        return fail(ret_error, -EBADMSG, "%s: tensor '%s' has %u dimensions, expected %u", m->path,
                                    t->name, t->n_dims, n_dims);
        if (t->ne[0] != ne0 || (n_dims > 1 && t->ne[1] != ne1)) {
                if (n_dims == 1)
                        return fail(ret_error, -EBADMSG, "%s: tensor '%s' has %" PRIu64 " elements, expected %" PRIu64,
                                    m->path, t->name, t->ne[0], ne0);
                return fail(ret_error, -EBADMSG,
                            "%s: tensor '%s' is %" PRIu64 " x %" PRIu64 ", expected %" PRIu64 " x %" PRIu64, m->path,
                            t->name, t->ne[0], t->ne[1], ne0, ne1);
        }
        if (!ggml_type_supported(t->type))
                return fail(ret_error, -EOPNOTSUPP, "%s: tensor '%s' has type %s, which is not supported", m->path,
                            t->name, strna(ggml_type_name(t->type)));
        uint32_t block = ggml_type_block_elems(t->type);
        if (block == 0 || ne0 % block != 0)
                return fail(ret_error, -EOPNOTSUPP,
                            "%s: tensor '%s' has rows of %" PRIu64 " elements, not a multiple of %s's block size %u",
                            m->path, t->name, ne0, ggml_type_name(t->type), block);
        return 0;
}

/* A weight matrix of ne1 rows of ne0 elements (GGUF order: ne[0] is the row). */
static int load_matrix(Model *m, const char *pattern, uint32_t layer, uint64_t ne0, uint64_t ne1, bool required,
                       GpuTensor **ret, char **ret_error) {
        char name[MAX_NAME];
        const GgufTensor *t;
        int r;

        t = find_tensor(m, pattern, layer, name, sizeof name);
        if (!t) {
                if (!required) {
                        *ret = NULL;
                        return 0;
                }
                return fail(ret_error, -EBADMSG, "%s: tensor '%s' is missing", m->path, name);
        }
        r = check_shape(m, t, 2, ne0, ne1, ret_error);
        if (r < 0)
                return r;
        r = gpu_tensor_upload(m->dev, t->type, (uint32_t) ne0, (uint32_t) ne1, t->data, ret);
        if (r < 0)
                return fail(ret_error, r, "%s: uploading tensor '%s' (%s, %" PRIu64 " x %" PRIu64 ") failed: %s",
                            m->path, t->name, ggml_type_name(t->type), ne0, ne1, strerror(-r));
        return 0;
}

/*
 * The matrices `patterns` of this layer (ne0 columns, rows[i] rows each), stacked into one tensor with
 * part i starting at row offs[i] and zero rows in the gaps, total rows in all.
 */
static int load_fused(Model *m, uint32_t layer, uint64_t ne0, uint32_t n, const char *const patterns[],
                      const uint32_t rows[], const uint32_t offs[], uint32_t total, GpuTensor **ret,
                      char **ret_error) {
        const void *parts[8];
        uint32_t part_rows[8], n_parts = 0, cur = 0;
        GgmlType type = GGML_TYPE__MAX;
        char name[MAX_NAME];
        int r;

        assert(2 * n + 1 <= ELEMENTSOF(parts));
        for (uint32_t i = 0; i < n; i++) {
                const GgufTensor *t = find_tensor(m, patterns[i], layer, name, sizeof name);
                if (!t)
                        return fail(ret_error, -EBADMSG, "%s: tensor '%s' is missing", m->path, name);
                r = check_shape(m, t, 2, ne0, rows[i], ret_error);
                if (r < 0)
                        return r;
                type = t->type;
                if (offs[i] > cur) {
                        parts[n_parts] = NULL;
                        part_rows[n_parts++] = offs[i] - cur;
                }
                parts[n_parts] = t->data;
                part_rows[n_parts++] = rows[i];
                cur = offs[i] + rows[i];
        }
        if (total > cur) {
                parts[n_parts] = NULL;
                part_rows[n_parts++] = total - cur;
        }
        r = gpu_tensor_upload_rows(m->dev, type, (uint32_t) ne0, n_parts, parts, part_rows, 0, ret);
        if (r < 0)
                return fail(ret_error, r, "%s: uploading block %u's fused '%s' (%s, %" PRIu64 " x %u) failed: %s",
                            m->path, layer, patterns[0], ggml_type_name(type), ne0, total, strerror(-r));
        return 0;
}

/* Whether this layer's tensors `patterns` all exist with one type. */
static bool same_type(Model *m, uint32_t layer, uint32_t n, const char *const patterns[]) {
        char name[MAX_NAME];
        GgmlType type = GGML_TYPE__MAX;

        for (uint32_t i = 0; i < n; i++) {
                const GgufTensor *t = find_tensor(m, patterns[i], layer, name, sizeof name);
                if (!t || (i > 0 && t->type != type))
                        return false;
                type = t->type;
        }
        return true;
}

typedef struct VecSlot {
        const GgufTensor *t[3]; /* up to three vectors, concatenated (fused biases) */
        uint64_t at[3];         /* where each starts in the slot, in floats */
        uint64_t n;             /* floats in the slot; gaps are zeros */
        uint64_t *offset;       /* where the slot's offset in Model.vecs goes */
        bool invert;            /* store 1/x rounded to float (RoPE factors: the kernels only multiply) */
} VecSlot;

static int add_vec(Model *m, VecSlot *slots, size_t *n_slots, const char *pattern, uint32_t layer, uint64_t n,
                   uint64_t *offset, char **ret_error) {
        char name[MAX_NAME];
        const GgufTensor *t;
        int r;

        t = find_tensor(m, pattern, layer, name, sizeof name);
        if (!t)
                return fail(ret_error, -EBADMSG, "%s: tensor '%s' is missing", m->path, name);
        r = check_shape(m, t, 1, n, 1, ret_error);
        if (r < 0)
                return r;
        slots[(*n_slots)++] = (VecSlot) { .t = { t }, .n = n, .offset = offset };
        return 0;
}

/* Appends vector pattern (n floats) at float `at` of the slot added last. */
static int add_vec_part(Model *m, VecSlot *slots, size_t n_slots, uint32_t part, const char *pattern,
                        uint32_t layer, uint64_t n, uint64_t at, uint64_t total, char **ret_error) {
        char name[MAX_NAME];
        const GgufTensor *t;
        int r;

        t = find_tensor(m, pattern, layer, name, sizeof name);
        if (!t)
                return fail(ret_error, -EBADMSG, "%s: tensor '%s' is missing", m->path, name);
        r = check_shape(m, t, 1, n, 1, ret_error);
        if (r < 0)
                return r;
        VecSlot *s = &slots[n_slots - 1];
        s->t[part] = t;
        s->at[part] = at;
        s->n = total;
        return 0;
}

/*
 * The Llama 3.1+ RoPE frequency factors, if the file has them (Llama 3.0 and qwen2 files do not): one
 * per rotated pair, dividing its angle (llama.cpp's ggml_rope_ext). Every factor is checked, since one
 * zero or NaN would quietly wreck every position; load_vecs() uploads them.
 */
static int check_rope_freqs(Model *m, char **ret_error) {
        const GgufTensor *t;
        int r;

        t = gguf_find_tensor(m->gguf, m->arch->names->rope_freqs);
        if (!t)
                return 0;
        if (t->type != GGML_TYPE_F32)
                return fail(ret_error, -EBADMSG, "%s: tensor '%s' has type %s, expected F32", m->path, t->name,
                            strna(ggml_type_name(t->type)));
        r = check_shape(m, t, 1, m->hp.n_rot / 2, 1, ret_error);
        if (r < 0)
                return r;
        for (uint64_t i = 0; i < t->ne[0]; i++) {
                float f;
                memcpy(&f, (const uint8_t *) t->data + i * sizeof f, sizeof f);
                /* 1/f must be finite too: the kernels multiply by it. */
                if (!(f > 0 && isfinite(f) && isfinite(1.0f / f)))
                        return fail(ret_error, -EBADMSG,
                                    "%s: tensor '%s' has factor %g for pair %" PRIu64
                                    ", which is not a finite positive number", m->path, t->name, (double) f, i);
        }
        m->hp.rope_freqs = true;
        return 0;
}

/* Norm weights, biases and RoPE frequency factors, converted to F32, into one buffer. */
static int load_vecs(Model *m, char **ret_error) {
        const ModelHParams *hp = &m->hp;
        const ModelTensorNames *nm = m->arch->names;
        uint32_t kv_dim = hp->n_head_kv * hp->head_dim;
        _cleanup_free_ VecSlot *slots = NULL;
        _cleanup_free_ float *tmp = NULL;
        size_t n_slots = 0, max_n = 0;
        uint64_t size = 0;
        int r;

        slots = calloc((size_t) hp->n_layer * 5 + 2, sizeof *slots);
        if (!slots)
                return -ENOMEM;
        r = add_vec(m, slots, &n_slots, nm->output_norm, 0, hp->n_embd, &m->output_norm, ret_error);
        if (r >= 0 && hp->rope_freqs)
                /* Inverted: the kernels multiply (rope.comp says why). */
                slots[n_slots++] = (VecSlot) { .t = { gguf_find_tensor(m->gguf, nm->rope_freqs) }, .n = hp->n_rot / 2,
                                               .offset = &m->rope_freqs_inv, .invert = true };
        for (uint32_t il = 0; r >= 0 && il < hp->n_layer; il++) {
                ModelLayer *l = &m->layers[il];
                r = add_vec(m, slots, &n_slots, nm->attn_norm, il, hp->n_embd, &l->attn_norm, ret_error);
                if (r >= 0)
                        r = add_vec(m, slots, &n_slots, nm->ffn_norm, il, hp->n_embd, &l->ffn_norm, ret_error);
                if (r >= 0 && hp->qkv_bias && m->fuse_qkv) {
                        r = add_vec(m, slots, &n_slots, nm->attn_q_bias, il, hp->n_embd, &l->bqkv, ret_error);
                        if (r >= 0)
                                r = add_vec_part(m, slots, n_slots, 1, nm->attn_k_bias, il, kv_dim, m->k_off,
                                                 m->qkv_stride, ret_error);
                        if (r >= 0)
                                r = add_vec_part(m, slots, n_slots, 2, nm->attn_v_bias, il, kv_dim, m->v_off,
                                                 m->qkv_stride, ret_error);
                } else if (r >= 0 && hp->qkv_bias) {
                        r = add_vec(m, slots, &n_slots, nm->attn_q_bias, il, hp->n_embd, &l->bq, ret_error);
                        if (r >= 0)
                                r = add_vec(m, slots, &n_slots, nm->attn_k_bias, il, kv_dim, &l->bk, ret_error);
                        if (r >= 0)
                                r = add_vec(m, slots, &n_slots, nm->attn_v_bias, il, kv_dim, &l->bv, ret_error);
                }
        }
        if (r < 0)
                return r;

        for (size_t i = 0; i < n_slots; i++) {
                *slots[i].offset = size;
                size += align_up(slots[i].n * sizeof(float), BIND_ALIGN);
                max_n = MAX(max_n, (size_t) slots[i].n);
        }
        r = gpu_buffer_new(m->dev, size, GPU_MEMORY_DEVICE, &m->vecs);
        if (r < 0)
                return fail(ret_error, r, "%s: allocating %" PRIu64 " bytes for norm weights and biases failed: %s",
                            m->path, size, strerror(-r));
        tmp = malloc(max_n * sizeof(float));
        if (!tmp)
                return -ENOMEM;
        for (size_t i = 0; i < n_slots; i++) {
                const VecSlot *sl = &slots[i];
                memset(tmp, 0, sl->n * sizeof(float));
                r = 0;
                for (size_t j = 0; r >= 0 && j < ELEMENTSOF(sl->t) && sl->t[j]; j++)
                        r = ggml_dequantize_row(sl->t[j]->type, sl->t[j]->data, tmp + sl->at[j], sl->t[j]->ne[0]);
                for (uint64_t k = 0; sl->invert && k < sl->n; k++)
                        tmp[k] = 1.0f / tmp[k];
                if (r >= 0)
                        r = gpu_buffer_write(m->vecs, *sl->offset, tmp, sl->n * sizeof(float));
                if (r < 0)
                        return fail(ret_error, r, "%s: uploading tensor '%s' failed: %s", m->path, sl->t[0]->name,
                                    strerror(-r));
        }
        return 0;
}

static int load_tensors(Model *m, char **ret_error) {
        const ModelHParams *hp = &m->hp;
        const ModelTensorNames *nm = m->arch->names;
        uint32_t kv_dim = hp->n_head_kv * hp->head_dim;
        const GgufTensor *emb;
        int r;

        emb = gguf_find_tensor(m->gguf, nm->token_embd);
        if (!emb)
                return fail(ret_error, -EBADMSG, "%s: tensor '%s' is missing", m->path, nm->token_embd);
        if (emb->ne[1] == 0 || emb->ne[1] > INT32_MAX)
                return fail(ret_error, -EBADMSG, "%s: tensor '%s' has a bad vocabulary size %" PRIu64, m->path,
                            nm->token_embd, emb->ne[1]);
        m->hp.n_vocab = (uint32_t) emb->ne[1];

        r = load_matrix(m, nm->token_embd, 0, hp->n_embd, hp->n_vocab, true, &m->tok_embd, ret_error);
        if (r < 0)
                return r;
        r = load_matrix(m, nm->output, 0, hp->n_embd, hp->n_vocab, false, &m->output, ret_error);
        if (r < 0)
                return r;
        m->hp.tied_output = !m->output;
        r = check_rope_freqs(m, ret_error);
        if (r < 0)
                return r;

        m->layers = calloc(hp->n_layer, sizeof *m->layers);
        if (!m->layers)
                return -ENOMEM;

        /* Fuse where every layer allows it; a missing tensor is reported by the unfused load. */
        const char *const qkv[] = { nm->attn_q, nm->attn_k, nm->attn_v };
        const char *const gu[] = { nm->ffn_gate, nm->ffn_up };
        m->fuse_qkv = m->fuse_ffn = m->fuse_swiglu = m->fuse_norm = !getenv("INFERD_MODEL_NO_FUSE");
        /* On a CPU device the host scans a row faster than a kernel does (lavapipe: a 128k row's top-k
         * 3 ms, the host's heap select 0.2 ms). */
        const char *e = getenv("INFERD_SAMPLE_ON_DEVICE");
        m->sample_on_device = (e && *e ? strcmp(e, "0") != 0 : !gpu_device_is_cpu(m->dev)) &&
                              gpu_topk_supported(m->dev);
        e = getenv("INFERD_DECODE_CHAIN");
        m->decode_chain = e && *e ? (uint32_t) MIN(MAX(atoi(e), 1), (int) MODEL_CHAIN_MAX) : MODEL_CHAIN_DEFAULT;
        /* Heads are whole quads (head_dim % 8 == 0 is checked at load); NeoX needs whole quads of rotated
         * dimensions too (gpu_op_matvec_qkv()). */
        m->fuse_rope = m->fuse_qkv && (!hp->rope_neox || hp->n_rot % 4 == 0);
        for (uint32_t il = 0; il < hp->n_layer; il++) {
                m->fuse_qkv = m->fuse_qkv && same_type(m, il, 3, qkv);
                m->fuse_ffn = m->fuse_ffn && same_type(m, il, 2, gu);
        }
        m->k_off = (uint32_t) align_up(hp->n_embd, PART_ALIGN);
        m->v_off = m->k_off + (uint32_t) align_up(kv_dim, PART_ALIGN);
        m->qkv_stride = m->v_off + kv_dim;
        m->up_off = (uint32_t) align_up(hp->n_ff, PART_ALIGN);
        m->ffn_stride = m->up_off + hp->n_ff;
        const uint32_t qkv_rows[] = { hp->n_embd, kv_dim, kv_dim }, qkv_offs[] = { 0, m->k_off, m->v_off };
        const uint32_t gu_rows[] = { hp->n_ff, hp->n_ff }, gu_offs[] = { 0, m->up_off };

        for (uint32_t il = 0; il < hp->n_layer; il++) {
                ModelLayer *l = &m->layers[il];
                if (m->fuse_qkv)
                        r = load_fused(m, il, hp->n_embd, 3, qkv, qkv_rows, qkv_offs, m->qkv_stride, &l->wqkv,
                                       ret_error);
                else if ((r = load_matrix(m, nm->attn_q, il, hp->n_embd, hp->n_embd, true, &l->wq, ret_error)) >= 0 &&
                         (r = load_matrix(m, nm->attn_k, il, hp->n_embd, kv_dim, true, &l->wk, ret_error)) >= 0)
                        r = load_matrix(m, nm->attn_v, il, hp->n_embd, kv_dim, true, &l->wv, ret_error);
                m->fuse_rope = m->fuse_rope && r >= 0 && m->fuse_qkv && l->wqkv->n_chunks == 1;
                if (r < 0)
                        return r;
                if (m->fuse_ffn) {
                        r = load_fused(m, il, hp->n_embd, 2, gu, gu_rows, gu_offs, m->ffn_stride, &l->w_gu,
                                       ret_error);
                        m->fuse_swiglu = m->fuse_swiglu && r >= 0 && l->w_gu->n_chunks == 1;
                }
                else if ((r = load_matrix(m, nm->ffn_gate, il, hp->n_embd, hp->n_ff, true, &l->w_gate, ret_error)) >= 0)
                        r = load_matrix(m, nm->ffn_up, il, hp->n_embd, hp->n_ff, true, &l->w_up, ret_error);
                if (r < 0)
                        return r;
                if ((r = load_matrix(m, nm->attn_output, il, hp->n_embd, hp->n_embd, true, &l->wo, ret_error)) < 0 ||
                    (r = load_matrix(m, nm->ffn_down, il, hp->n_ff, hp->n_embd, true, &l->w_down, ret_error)) < 0)
                        return r;
        }
        return load_vecs(m, ret_error);
}

/* ---- model info ------------------------------------------------------------------ */

/* llama.cpp's general.file_type values (enum llama_ftype). */
static const char *ftype_name(uint32_t ftype) {
        static const char *const names[] = {
                [0] = "F32",     [1] = "F16",     [2] = "Q4_0",    [3] = "Q4_1",    [7] = "Q8_0",
                [8] = "Q5_0",    [9] = "Q5_1",    [10] = "Q2_K",   [11] = "Q3_K_S", [12] = "Q3_K_M",
                [13] = "Q3_K_L", [14] = "Q4_K_S", [15] = "Q4_K_M", [16] = "Q5_K_S", [17] = "Q5_K_M",
                [18] = "Q6_K",   [32] = "BF16",
        };
        return ftype < ELEMENTSOF(names) ? names[ftype] : NULL;
}

static int fill_info(Model *m) {
        uint64_t by_type[GGML_TYPE__MAX] = {};
        size_t n = gguf_n_tensors(m->gguf);
        uint32_t ftype;
        const char *s;
        size_t len;

        for (size_t i = 0; i < n; i++) {
                const GgufTensor *t = gguf_tensor(m->gguf, i);
                uint64_t elems = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
                m->info.n_params += elems;
                if (t->ne[1] > 1 && (unsigned) t->type < GGML_TYPE__MAX)
                        by_type[t->type] += elems;
        }

        if (gguf_get_u32(m->gguf, "general.file_type", &ftype) >= 0 && ftype_name(ftype))
                m->file_type = strdup(ftype_name(ftype));
        else {
                /* The type of most matrix elements; "mostly" when there are others. */
                size_t best = 0, n_types = 0;
                for (size_t t = 0; t < GGML_TYPE__MAX; t++) {
                        n_types += by_type[t] > 0;
                        if (by_type[t] > by_type[best])
                                best = t;
                }
                const char *tn = strna(ggml_type_name((GgmlType) best));
                if (n_types > 1) {
                        if (asprintf(&m->file_type, "mostly %s", tn) < 0)
                                m->file_type = NULL;
                } else
                        m->file_type = strdup(tn);
        }
        if (!m->file_type)
                return -ENOMEM;

        if (gguf_get_string(m->gguf, "general.name", &s, &len) >= 0 && len > 0)
                m->name = strndup(s, len);
        else {
                const char *base = strrchr(m->path, '/');
                base = base ? base + 1 : m->path;
                const char *dot = strrchr(base, '.');
                m->name = dot && dot != base && streq(dot, ".gguf") ? strndup(base, dot - base) : strdup(base);
        }
        if (!m->name)
                return -ENOMEM;

        m->info.name = m->name;
        m->info.path = m->path;
        m->info.file_type = m->file_type;
        m->info.file_size = gguf_file_size(m->gguf);
        m->info.device_bytes = gpu_buffer_size(m->vecs) + m->tok_embd->device_bytes +
                               (m->output ? m->output->device_bytes : 0);
        for (uint32_t il = 0; il < m->hp.n_layer; il++) {
                const ModelLayer *l = &m->layers[il];
                const GpuTensor *ts[] = { l->wqkv, l->wq, l->wk, l->wv, l->wo, l->w_gu, l->w_gate, l->w_up,
                                          l->w_down };
                for (size_t i = 0; i < ELEMENTSOF(ts); i++)
                        if (ts[i])
                                m->info.device_bytes += ts[i]->device_bytes;
        }
        return 0;
}

/* ---- model ---------------------------------------------------------------------- */

Model *model_free(Model *m) {
        if (!m)
                return NULL;
        context_destroy(m->spare);
        if (m->layers)
                for (uint32_t il = 0; il < m->hp.n_layer; il++) {
                        ModelLayer *l = &m->layers[il];
                        gpu_tensor_free(l->wqkv);
                        gpu_tensor_free(l->wq);
                        gpu_tensor_free(l->wk);
                        gpu_tensor_free(l->wv);
                        gpu_tensor_free(l->wo);
                        gpu_tensor_free(l->w_gu);
                        gpu_tensor_free(l->w_gate);
                        gpu_tensor_free(l->w_up);
                        gpu_tensor_free(l->w_down);
                }
        free(m->layers);
        gpu_tensor_free(m->tok_embd);
        gpu_tensor_free(m->output);
        gpu_buffer_free(m->vecs);
        tokenizer_free(m->tokenizer);
        gguf_free(m->gguf);
        free(m->name);
        free(m->path);
        free(m->file_type);
        free(m);
        return NULL;
}

int model_load(GpuDevice *dev, const char *path, const ModelOptions *opts, Model **ret, char **ret_error) {
        _cleanup_(model_freep) Model *m = NULL;
        const char *arch;
        size_t arch_len;
        int r;

        if (!dev || !path || !ret)
                return -EINVAL;
        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->dev = dev;
        if (opts)
                m->opts = *opts;
        m->path = strdup(path);
        if (!m->path)
                return -ENOMEM;

        r = gguf_open(path, NULL, &m->gguf, ret_error);
        if (r < 0)
                return r;

        r = gguf_get_string(m->gguf, "general.architecture", &arch, &arch_len);
        if (r < 0)
                return fail(ret_error, -EBADMSG, "%s: no general.architecture", path);
        m->arch = model_arch_find(arch, arch_len);
        if (!m->arch)
                return fail(ret_error, -EOPNOTSUPP, "%s: architecture '%.*s' is not supported", path,
                            (int) MIN(arch_len, 64u), arch);

        r = read_hparams(m, ret_error);
        if (r < 0)
                return r;
        r = load_tensors(m, ret_error);
        if (r < 0)
                return r == -ENOMEM ? fail(ret_error, r, "%s: out of memory", path) : r;

        r = tokenizer_new_from_gguf(m->gguf, &m->tokenizer, ret_error);
        if (r < 0)
                return r;
        /* Fewer tokens than embedding rows is common (rows padded to a round number); more is not. */
        if (tokenizer_n_vocab(m->tokenizer) > m->hp.n_vocab)
                return fail(ret_error, -EBADMSG, "%s: the vocabulary has %u tokens but '%s' only %u rows", path,
                            tokenizer_n_vocab(m->tokenizer), m->arch->names->token_embd, m->hp.n_vocab);

        r = fill_info(m);
        if (r < 0)
                return fail(ret_error, r, "%s: out of memory", path);

        log_debug("Loaded %s: %s, %u layers, embedding %u, %u/%u heads of %u, feed-forward %u, vocabulary %u, "
                  "%" PRIu64 " bytes on the device.",
                  path, m->hp.arch, m->hp.n_layer, m->hp.n_embd, m->hp.n_head, m->hp.n_head_kv, m->hp.head_dim,
                  m->hp.n_ff, m->hp.n_vocab, m->info.device_bytes);
        *ret = TAKE_PTR(m);
        return 0;
}

const ModelHParams *model_hparams(const Model *m) {
        return &m->hp;
}

const ModelInfo *model_info(const Model *m) {
        return &m->info;
}

const Tokenizer *model_tokenizer(const Model *m) {
        return m->tokenizer;
}

const GgufFile *model_gguf(const Model *m) {
        return m->gguf;
}

/* ---- contexts --------------------------------------------------------------------- */

static void context_destroy(ModelContext *c) {
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
        context_destroy(*c);
}

ModelContext *model_context_free(ModelContext *c) {
        if (!c)
                return NULL;
        /* Kept for the next context of its size: its buffers, and the passes recorded on them, which
         * cost a job more than a few tokens. One spare per model, the latest. */
        if (!c->broken) {
                context_destroy(c->model->spare);
                c->pos = 0;
                c->model->spare = c;
        } else
                context_destroy(c);
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
        context_destroy(spare);

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

/* ---- the forward pass ------------------------------------------------------------- */

static GpuBinding bind(GpuBuffer *b) {
        return (GpuBinding) { .buffer = b };
}

static GpuBinding bind_at(GpuBuffer *b, uint64_t offset, uint64_t range) {
        return (GpuBinding) { .buffer = b, .offset = offset, .range = range };
}

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
typedef struct PassProfile {
        const char *name[MODEL_PROFILE_MAX];
        int slot[MODEL_PROFILE_MAX + 1];
        size_t n;
        int error;
} PassProfile;

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

/*
 * Records the pass of n tokens at positions pos0.. (ids and positions already
 * in c->io) into cmd. out: what to compute from the last token. A single
 * token (n == 1) is recorded for any position: pos0 is not used, every
 * kernel reads the position from c->io, so the recording may be replayed.
 */
static int record_pass(ModelContext *c, GpuCmd *cmd, uint32_t n, uint32_t pos0, EvalOutput out) {
        Pass ps;

        pass_init(&ps, c, cmd, n, pos0);
        TRY(gpu_cmd_begin(cmd));
        mark_start(c, cmd);
        TRY(record_embed(&ps));
        for (uint32_t il = 0; il < c->model->hp.n_layer; il++) {
                TRY(record_attention(&ps, il));
                TRY(record_ffn(&ps, il));
        }
        if (out == EVAL_NONE)
                return 0;
        return record_head(&ps, out);
}

/* A failed submission may leave the ops' counters set: the context is not handed out again. */
static int submit(ModelContext *c, GpuCmd *cmd) {
        int r = gpu_cmd_submit(cmd);
        if (r < 0)
                c->broken = true;
        return r;
}

/* Runs the single-token pass for the token and position already in c->io: recorded once, then replayed. */
static int step(ModelContext *c, EvalOutput out) {
        int r;

        if (!c->step[out]) {
                _cleanup_(gpu_cmd_freep) GpuCmd *cmd = NULL;

                r = gpu_cmd_new(c->model->dev, &cmd);
                if (r < 0)
                        return r;
                r = record_pass(c, cmd, 1, 0, out);
                if (r < 0)
                        return r;
                c->step[out] = TAKE_PTR(cmd);
        }
        return submit(c, c->step[out]);
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
                bool last = done + n == n_tokens;
                uint32_t *ids = (uint32_t *) io;
                int32_t *positions = (int32_t *) (io + c->pos_offset);

                for (uint32_t i = 0; i < n; i++) {
                        ids[i] = (uint32_t) tokens[done + i];
                        positions[i] = (int32_t) (pos + i);
                }
                if (n == 1)
                        r = step(c, last ? out : EVAL_NONE);
                else {
                        r = record_pass(c, c->cmd, n, pos, last ? out : EVAL_NONE);
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
        r = record_pass(c, cmd, 1, 0, EVAL_ARGMAX);
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

/*
 * A chain of n single-token passes in one recording: pass s reads its id
 * from id slot s and its position from position slot s, and its argmax goes
 * to id slot s + 1, which the next pass reads behind a barrier. Slots are
 * whole binding-aligned blocks of c->io (CHAIN_SLOTS of them), so each can
 * be bound on its own.
 */

static uint64_t chain_id_slot(const ModelContext *c, uint32_t s) {
        return c->chain_offset + (uint64_t) s * 2 * BIND_ALIGN;
}

static uint64_t chain_pos_slot(const ModelContext *c, uint32_t s) {
        return chain_id_slot(c, s) + BIND_ALIGN;
}

static int record_chain(ModelContext *c, GpuCmd *cmd, uint32_t n) {
        TRY(gpu_cmd_begin(cmd));
        for (uint32_t s = 0; s < n; s++) {
                Pass ps;
                pass_init(&ps, c, cmd, 1, 0);
                ps.ids_in = bind_at(c->io, chain_id_slot(c, s), 4);
                ps.pos_in = bind_at(c->io, chain_pos_slot(c, s), 4);
                ps.argmax_out = bind_at(c->io, chain_id_slot(c, s + 1), 4);
                ps.chained = s + 1 < n;
                TRY(record_embed(&ps));
                for (uint32_t il = 0; il < c->model->hp.n_layer; il++) {
                        TRY(record_attention(&ps, il));
                        TRY(record_ffn(&ps, il));
                }
                TRY(record_head(&ps, EVAL_ARGMAX));
        }
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

        if (!c->chain[n]) {
                _cleanup_(gpu_cmd_freep) GpuCmd *cmd = NULL;

                r = gpu_cmd_new(c->model->dev, &cmd);
                if (r < 0)
                        return r;
                r = record_chain(c, cmd, n);
                if (r < 0)
                        return r;
                c->chain[n] = TAKE_PTR(cmd);
        }
        memcpy(io + chain_id_slot(c, 0), &token, 4);
        for (uint32_t s = 0; s < n; s++) {
                int32_t p = (int32_t) (pos + s);
                memcpy(io + chain_pos_slot(c, s), &p, 4);
        }
        r = submit(c, c->chain[n]);
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
