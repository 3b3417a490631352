/* SPDX-License-Identifier: MIT */
/*
 * The reference forward pass (ref-forward.h). Deliberately simple: one token
 * at a time, float weights, double accumulation.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"
#include "ref-forward.h"

typedef struct Mat {
        uint32_t rows, cols;
        float *w;               /* [rows][cols] */
} Mat;

typedef struct RefLayer {
        Mat wq, wk, wv, wo, gate, up, down;
        float *attn_norm, *ffn_norm;
        float *bq, *bk, *bv;    /* NULL without biases */
        float *k_cache, *v_cache; /* [n_head_kv][n_ctx][head_dim], F16-rounded */
} RefLayer;

struct RefModel {
        uint32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_rot, n_ctx, pos;
        float eps, rope_base, rope_scale;
        bool neox;
        Mat embd, output;
        float *output_norm;
        float *rope_freqs;      /* n_rot/2 factors (Llama 3.1+), or NULL */
        RefLayer *layers;
        /* Work space for one token. */
        float *x, *h, *q, *k, *v, *att, *g, *u, *o;
        double *scores;
};

static int set_error(char **ret_error, int r, const char *fmt, ...) {
        va_list ap;

        if (ret_error) {
                va_start(ap, fmt);
                if (vasprintf(ret_error, fmt, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return r;
}

static void mat_free(Mat *m) {
        free(m->w);
        m->w = NULL;
}

RefModel *ref_model_free(RefModel *m) {
        if (!m)
                return NULL;
        if (m->layers)
                for (uint32_t i = 0; i < m->n_layer; i++) {
                        RefLayer *l = &m->layers[i];
                        mat_free(&l->wq);
                        mat_free(&l->wk);
                        mat_free(&l->wv);
                        mat_free(&l->wo);
                        mat_free(&l->gate);
                        mat_free(&l->up);
                        mat_free(&l->down);
                        free(l->attn_norm);
                        free(l->ffn_norm);
                        free(l->bq);
                        free(l->bk);
                        free(l->bv);
                        free(l->k_cache);
                        free(l->v_cache);
                }
        free(m->layers);
        mat_free(&m->embd);
        mat_free(&m->output);
        free(m->output_norm);
        free(m->rope_freqs);
        free(m->x);
        free(m->h);
        free(m->q);
        free(m->k);
        free(m->v);
        free(m->att);
        free(m->g);
        free(m->u);
        free(m->o);
        free(m->scores);
        free(m);
        return NULL;
}

/* The tensor's elements as floats, after checking it holds rows x cols of them. */
static int load_floats(const GgufFile *f, const char *name, uint64_t cols, uint64_t rows, float **ret,
                       char **ret_error) {
        const GgufTensor *t = gguf_find_tensor(f, name);
        if (!t)
                return set_error(ret_error, -ENOENT, "tensor %s missing", name);
        if (t->ne[0] != cols || t->ne[1] * t->ne[2] * t->ne[3] != rows)
                return set_error(ret_error, -EINVAL, "tensor %s has the wrong shape", name);
        float *w = malloc(sizeof(float) * cols * rows);
        if (!w)
                return -ENOMEM;
        uint64_t row_bytes = ggml_row_bytes(t->type, cols);
        for (uint64_t r = 0; r < rows; r++) {
                int e = ggml_dequantize_row(t->type, (const uint8_t *) t->data + r * row_bytes, w + r * cols, cols);
                if (e < 0) {
                        free(w);
                        return set_error(ret_error, e, "tensor %s: cannot dequantise type %d", name, t->type);
                }
        }
        *ret = w;
        return 0;
}

static int load_mat(const GgufFile *f, const char *name, uint32_t cols, uint32_t rows, Mat *ret, char **ret_error) {
        ret->rows = rows;
        ret->cols = cols;
        return load_floats(f, name, cols, rows, &ret->w, ret_error);
}

static int layer_name(char *buf, size_t len, uint32_t il, const char *what) {
        snprintf(buf, len, "blk.%u.%s", il, what);
        return 0;
}

static int get_u32(const GgufFile *f, const char *arch, const char *key, uint32_t def, uint32_t *ret) {
        char k[128];
        snprintf(k, sizeof k, "%s.%s", arch, key);
        int r = gguf_get_u32(f, k, ret);
        if (r == -ENOENT && def != UINT32_MAX) {
                *ret = def;
                return 0;
        }
        return r;
}

static int get_f32(const GgufFile *f, const char *arch, const char *key, float def, float *ret) {
        char k[128];
        snprintf(k, sizeof k, "%s.%s", arch, key);
        int r = gguf_get_f32(f, k, ret);
        if (r == -ENOENT && !isnan(def)) {
                *ret = def;
                return 0;
        }
        return r;
}

int ref_model_load(const char *path, uint32_t n_ctx, RefModel **ret, char **ret_error) {
        GgufFile *f = NULL;
        RefModel *m = NULL;
        const char *s;
        size_t len;
        char arch[32], name[128];
        int r;

        r = gguf_open(path, NULL, &f, ret_error);
        if (r < 0)
                return r;
        m = calloc(1, sizeof *m);
        if (!m) {
                r = -ENOMEM;
                goto out;
        }
        r = gguf_get_string(f, "general.architecture", &s, &len);
        if (r < 0 || len >= sizeof arch) {
                r = set_error(ret_error, -EINVAL, "no architecture");
                goto out;
        }
        memcpy(arch, s, len);
        arch[len] = 0;
        if (strcmp(arch, "llama") != 0 && strcmp(arch, "qwen2") != 0) {
                r = set_error(ret_error, -EOPNOTSUPP, "architecture %s", arch);
                goto out;
        }
        m->neox = strcmp(arch, "qwen2") == 0;
        bool bias = m->neox;

        if ((r = get_u32(f, arch, "embedding_length", UINT32_MAX, &m->n_embd)) < 0 ||
            (r = get_u32(f, arch, "block_count", UINT32_MAX, &m->n_layer)) < 0 ||
            (r = get_u32(f, arch, "feed_forward_length", UINT32_MAX, &m->n_ff)) < 0 ||
            (r = get_u32(f, arch, "attention.head_count", UINT32_MAX, &m->n_head)) < 0 ||
            (r = get_u32(f, arch, "attention.head_count_kv", m->n_head, &m->n_head_kv)) < 0 ||
            (r = get_f32(f, arch, "attention.layer_norm_rms_epsilon", NAN, &m->eps)) < 0 ||
            (r = get_f32(f, arch, "rope.freq_base", 10000.0f, &m->rope_base)) < 0) {
                set_error(ret_error, r, "hyper-parameters");
                goto out;
        }
        m->head_dim = m->n_embd / m->n_head;
        if ((r = get_u32(f, arch, "rope.dimension_count", m->head_dim, &m->n_rot)) < 0)
                goto out;
        m->rope_scale = 1.0f;
        snprintf(name, sizeof name, "%s.rope.scaling.type", arch);
        if (gguf_get_string(f, name, &s, &len) >= 0 && len == 6 && memcmp(s, "linear", 6) == 0) {
                float factor;
                if ((r = get_f32(f, arch, "rope.scaling.factor", NAN, &factor)) < 0)
                        goto out;
                m->rope_scale = 1.0f / factor;
        }
        m->n_ctx = n_ctx;

        const GgufTensor *te = gguf_find_tensor(f, "token_embd.weight");
        if (!te) {
                r = set_error(ret_error, -EINVAL, "no token_embd.weight");
                goto out;
        }
        m->n_vocab = (uint32_t) te->ne[1];
        uint32_t kv_dim = m->n_head_kv * m->head_dim;

        if ((r = load_mat(f, "token_embd.weight", m->n_embd, m->n_vocab, &m->embd, ret_error)) < 0)
                goto out;
        if (gguf_find_tensor(f, "output.weight"))
                r = load_mat(f, "output.weight", m->n_embd, m->n_vocab, &m->output, ret_error);
        else
                r = load_mat(f, "token_embd.weight", m->n_embd, m->n_vocab, &m->output, ret_error);
        if (r < 0)
                goto out;
        if ((r = load_floats(f, "output_norm.weight", m->n_embd, 1, &m->output_norm, ret_error)) < 0)
                goto out;
        if (gguf_find_tensor(f, "rope_freqs.weight") &&
            (r = load_floats(f, "rope_freqs.weight", m->n_rot / 2, 1, &m->rope_freqs, ret_error)) < 0)
                goto out;

        m->layers = calloc(m->n_layer, sizeof *m->layers);
        if (!m->layers) {
                r = -ENOMEM;
                goto out;
        }
        for (uint32_t il = 0; il < m->n_layer; il++) {
                RefLayer *l = &m->layers[il];
                struct {
                        const char *what;
                        uint32_t cols, rows;
                        Mat *mat;
                        float **vec;
                } ts[] = {
                        { "attn_q.weight", m->n_embd, m->n_embd, &l->wq, NULL },
                        { "attn_k.weight", m->n_embd, kv_dim, &l->wk, NULL },
                        { "attn_v.weight", m->n_embd, kv_dim, &l->wv, NULL },
                        { "attn_output.weight", m->n_embd, m->n_embd, &l->wo, NULL },
                        { "ffn_gate.weight", m->n_embd, m->n_ff, &l->gate, NULL },
                        { "ffn_up.weight", m->n_embd, m->n_ff, &l->up, NULL },
                        { "ffn_down.weight", m->n_ff, m->n_embd, &l->down, NULL },
                        { "attn_norm.weight", m->n_embd, 1, NULL, &l->attn_norm },
                        { "ffn_norm.weight", m->n_embd, 1, NULL, &l->ffn_norm },
                        { "attn_q.bias", m->n_embd, 1, NULL, bias ? &l->bq : NULL },
                        { "attn_k.bias", kv_dim, 1, NULL, bias ? &l->bk : NULL },
                        { "attn_v.bias", kv_dim, 1, NULL, bias ? &l->bv : NULL },
                };
                for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
                        layer_name(name, sizeof name, il, ts[i].what);
                        if (ts[i].mat)
                                r = load_mat(f, name, ts[i].cols, ts[i].rows, ts[i].mat, ret_error);
                        else if (ts[i].vec)
                                r = load_floats(f, name, ts[i].cols, 1, ts[i].vec, ret_error);
                        if (r < 0)
                                goto out;
                }
                size_t cache = (size_t) m->n_head_kv * n_ctx * m->head_dim;
                l->k_cache = calloc(cache, sizeof(float));
                l->v_cache = calloc(cache, sizeof(float));
                if (!l->k_cache || !l->v_cache) {
                        r = -ENOMEM;
                        goto out;
                }
        }

        m->x = calloc(m->n_embd, sizeof(float));
        m->h = calloc(m->n_embd, sizeof(float));
        m->q = calloc(m->n_embd, sizeof(float));
        m->k = calloc(kv_dim, sizeof(float));
        m->v = calloc(kv_dim, sizeof(float));
        m->att = calloc(m->n_embd, sizeof(float));
        m->o = calloc(m->n_embd, sizeof(float));
        m->g = calloc(m->n_ff, sizeof(float));
        m->u = calloc(m->n_ff, sizeof(float));
        m->scores = calloc(n_ctx, sizeof(double));
        if (!m->x || !m->h || !m->q || !m->k || !m->v || !m->att || !m->o || !m->g || !m->u || !m->scores) {
                r = -ENOMEM;
                goto out;
        }
        *ret = m;
        m = NULL;
        r = 0;
out:
        ref_model_free(m);
        gguf_free(f);
        return r;
}

uint32_t ref_model_n_vocab(const RefModel *m) {
        return m->n_vocab;
}

uint32_t ref_model_pos(const RefModel *m) {
        return m->pos;
}

void ref_model_truncate(RefModel *m, uint32_t pos) {
        if (pos < m->pos)
                m->pos = pos;
}

uint32_t ref_argmax(const float *x, uint32_t n) {
        uint32_t best = 0;
        for (uint32_t i = 1; i < n; i++)
                if (x[i] > x[best])
                        best = i;
        return best;
}

static void matvec(const Mat *w, const float *x, float *y) {
        for (uint32_t r = 0; r < w->rows; r++) {
                const float *row = w->w + (size_t) r * w->cols;
                double s = 0;
                for (uint32_t k = 0; k < w->cols; k++)
                        s += (double) row[k] * x[k];
                y[r] = (float) s;
        }
}

static void rmsnorm(const float *x, const float *w, float *out, uint32_t n, float eps) {
        double ss = 0;
        for (uint32_t i = 0; i < n; i++)
                ss += (double) x[i] * x[i];
        double scale = 1.0 / sqrt(ss / n + eps);
        for (uint32_t i = 0; i < n; i++)
                out[i] = (float) (x[i] * scale * w[i]);
}

/* Frequency factors divide the angle, as in llama.cpp (the GPU multiplies by 1/factor in float). */
static void rope(const RefModel *m, float *x, uint32_t n_heads, uint32_t pos) {
        for (uint32_t h = 0; h < n_heads; h++) {
                float *v = x + (size_t) h * m->head_dim;
                for (uint32_t i = 0; i < m->n_rot / 2; i++) {
                        double theta = (double) pos * m->rope_scale * pow(m->rope_base, -2.0 * i / m->n_rot);
                        if (m->rope_freqs)
                                theta /= m->rope_freqs[i];
                        uint32_t i0 = m->neox ? i : 2 * i, i1 = m->neox ? i + m->n_rot / 2 : 2 * i + 1;
                        double c = cos(theta), s = sin(theta), a = v[i0], b = v[i1];
                        v[i0] = (float) (a * c - b * s);
                        v[i1] = (float) (a * s + b * c);
                }
        }
}

static float f16_round(float x) {
        return half_to_float(float_to_half(x));
}

static void add_bias(float *x, const float *b, uint32_t n) {
        if (b)
                for (uint32_t i = 0; i < n; i++)
                        x[i] += b[i];
}

static void forward_one(RefModel *m, int32_t token, float *logits) {
        uint32_t pos = m->pos, dim = m->head_dim, group = m->n_head / m->n_head_kv;
        double scale = 1.0 / sqrt((double) dim);

        memcpy(m->x, m->embd.w + (size_t) token * m->n_embd, sizeof(float) * m->n_embd);
        for (uint32_t il = 0; il < m->n_layer; il++) {
                RefLayer *l = &m->layers[il];

                rmsnorm(m->x, l->attn_norm, m->h, m->n_embd, m->eps);
                matvec(&l->wq, m->h, m->q);
                matvec(&l->wk, m->h, m->k);
                matvec(&l->wv, m->h, m->v);
                add_bias(m->q, l->bq, m->n_embd);
                add_bias(m->k, l->bk, l->wk.rows);
                add_bias(m->v, l->bv, l->wv.rows);
                rope(m, m->q, m->n_head, pos);
                rope(m, m->k, m->n_head_kv, pos);
                for (uint32_t g = 0; g < m->n_head_kv; g++)
                        for (uint32_t i = 0; i < dim; i++) {
                                size_t c = ((size_t) g * m->n_ctx + pos) * dim + i;
                                l->k_cache[c] = f16_round(m->k[g * dim + i]);
                                l->v_cache[c] = f16_round(m->v[g * dim + i]);
                        }

                for (uint32_t hh = 0; hh < m->n_head; hh++) {
                        const float *q = m->q + (size_t) hh * dim;
                        const float *kc = l->k_cache + (size_t) (hh / group) * m->n_ctx * dim;
                        const float *vc = l->v_cache + (size_t) (hh / group) * m->n_ctx * dim;
                        double mx = -INFINITY, sum = 0;
                        for (uint32_t t = 0; t <= pos; t++) {
                                double s = 0;
                                for (uint32_t i = 0; i < dim; i++)
                                        s += (double) q[i] * kc[(size_t) t * dim + i];
                                m->scores[t] = s * scale;
                                if (m->scores[t] > mx)
                                        mx = m->scores[t];
                        }
                        for (uint32_t t = 0; t <= pos; t++) {
                                m->scores[t] = exp(m->scores[t] - mx);
                                sum += m->scores[t];
                        }
                        for (uint32_t i = 0; i < dim; i++) {
                                double a = 0;
                                for (uint32_t t = 0; t <= pos; t++)
                                        a += m->scores[t] * vc[(size_t) t * dim + i];
                                m->att[hh * dim + i] = (float) (a / sum);
                        }
                }
                matvec(&l->wo, m->att, m->o);
                for (uint32_t i = 0; i < m->n_embd; i++)
                        m->x[i] += m->o[i];

                rmsnorm(m->x, l->ffn_norm, m->h, m->n_embd, m->eps);
                matvec(&l->gate, m->h, m->g);
                matvec(&l->up, m->h, m->u);
                for (uint32_t i = 0; i < m->n_ff; i++) {
                        double g = m->g[i];
                        m->g[i] = (float) (g / (1.0 + exp(-g)) * m->u[i]);
                }
                matvec(&l->down, m->g, m->o);
                for (uint32_t i = 0; i < m->n_embd; i++)
                        m->x[i] += m->o[i];
        }
        if (logits) {
                rmsnorm(m->x, m->output_norm, m->h, m->n_embd, m->eps);
                matvec(&m->output, m->h, logits);
        }
        m->pos++;
}

int ref_model_eval(RefModel *m, const int32_t *tokens, uint32_t n_tokens, float *logits) {
        if (n_tokens == 0)
                return -EINVAL;
        if (n_tokens > m->n_ctx - m->pos)
                return -ENOSPC;
        for (uint32_t i = 0; i < n_tokens; i++)
                if (tokens[i] < 0 || (uint32_t) tokens[i] >= m->n_vocab)
                        return -EINVAL;
        for (uint32_t i = 0; i < n_tokens; i++)
                forward_one(m, tokens[i], i + 1 == n_tokens ? logits : NULL);
        return 0;
}
