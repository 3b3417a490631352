/* SPDX-License-Identifier: MIT */
/*
 * The llama-family models: loading them onto the Vulkan engine.
 * model-context.c runs them, model-pass.c records their forward pass.
 *
 * The GGUF file is mapped (gguf.c), its hyper-parameters read and checked,
 * and every weight matrix uploaded once as a GpuTensor in the device layout
 * of tensor.h. The one-dimensional tensors (norm weights, biases, RoPE
 * frequency factors) are small: they are converted to F32 and packed into
 * one buffer, each at a 256-byte aligned offset so it can be bound on its
 * own.
 *
 * Projections that read the same input are fused at load into one matrix
 * (q|k|v, gate|up; gpu_tensor_upload_rows), each part starting at a
 * 64-float row so its output can be bound on its own: one matrix x vector
 * instead of three or two, and the kernels after it (RoPE, KV store,
 * attention, SwiGLU) read strided views of the fused output.
 */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "model-internal.h"
#include "ops-basic.h"

#define MAX_LAYERS 4096u
#define MAX_NAME 256

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
        model_context_destroy(m->spare);
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

