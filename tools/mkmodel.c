/* SPDX-License-Identifier: MIT */
/*
 * inferd-mkmodel: writes synthetic GGUF models (llama, qwen2) with random
 * weights, a synthetic SentencePiece-style vocabulary and the metadata and
 * tensor names llama.cpp uses, so tests and benchmarks can have a model of
 * any shape and type without downloading one.
 *
 * The weights come from a seeded generator keyed by tensor name and row, so
 * a file is reproducible bit for bit, and tensors are produced row by row
 * while the file is written: an 8B model in F32 needs a few MiB of memory.
 * Llama 3.1+ RoPE frequency factors (rope_freqs.weight) are not random: they
 * follow Llama 3's rule, as llama.cpp's converter writes them.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "macro.h"
#include "quant.h"

typedef enum Arch {
        ARCH_LLAMA,
        ARCH_QWEN2,
} Arch;

static const char *const arch_names[] = {
        [ARCH_LLAMA] = "llama",
        [ARCH_QWEN2] = "qwen2",
};

typedef struct Spec {
        const char *name;
        Arch arch;
        uint64_t dim, layers, heads, kv_heads, ff, vocab, ctx;
        double rope_base, rms_eps;
        /* > 0: rope_freqs.weight by Llama 3's rule with this factor and original context */
        double rope_factor;
        uint64_t rope_orig_ctx;
} Spec;

/* Llama 3's rope_scaling defaults (config.json), as llama.cpp's converter takes them. */
#define LLAMA3_ORIG_CTX 8192
#define LLAMA3_LOW_FREQ_FACTOR 1.0
#define LLAMA3_HIGH_FREQ_FACTOR 4.0

/* Shapes of the real models (context lengths and RoPE scaling as their config.json has them). */
static const Spec presets[] = {
        { "tiny", ARCH_LLAMA, 64, 2, 4, 2, 128, 512, 2048, 10000.0, 1e-5, 0, 0 },
        { "llama-3.2-1b", ARCH_LLAMA, 2048, 16, 32, 8, 8192, 128256, 131072, 500000.0, 1e-5, 32.0, LLAMA3_ORIG_CTX },
        { "llama-3-8b", ARCH_LLAMA, 4096, 32, 32, 8, 14336, 128256, 8192, 500000.0, 1e-5, 0, 0 },
        { "qwen2-0.5b", ARCH_QWEN2, 896, 24, 14, 2, 4864, 151936, 32768, 1000000.0, 1e-6, 0, 0 },
};

/* The types the engine runs, with llama.cpp's general.file_type for a model
 * "mostly" of that type. */
static const struct {
        GgmlType type;
        uint32_t file_type;
} types[] = {
        { GGML_TYPE_F32, 0 },  { GGML_TYPE_F16, 1 },  { GGML_TYPE_Q4_0, 2 }, { GGML_TYPE_Q8_0, 7 },
        { GGML_TYPE_Q4_K, 14 }, { GGML_TYPE_Q5_K, 16 }, { GGML_TYPE_Q6_K, 18 },
};

/* llama.cpp's token types */
enum {
        TOKEN_NORMAL = 1,
        TOKEN_UNKNOWN = 2,
        TOKEN_CONTROL = 3,
        TOKEN_BYTE = 6,
};

#define N_SPECIAL 3
#define N_BYTES 256

/* ---- deterministic randomness -------------------------------------------- */

static uint64_t splitmix64(uint64_t x) {
        x += UINT64_C(0x9e3779b97f4a7c15);
        x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
        return x ^ (x >> 31);
}

static uint64_t hash_string(const char *s) {
        uint64_t h = UINT64_C(0xcbf29ce484222325);
        for (; *s; s++)
                h = (h ^ (uint8_t) *s) * UINT64_C(0x100000001b3);
        return h;
}

/* Uniform in [-1, 1). */
static float uniform(uint64_t *state) {
        *state = splitmix64(*state);
        return (float) (*state >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* ---- tensors ------------------------------------------------------------- */

typedef enum Fill {
        FILL_MATRIX,    /* std 1/sqrt(fan_in): activations keep their scale */
        FILL_NORM,      /* near 1 */
        FILL_BIAS,      /* near 0 */
} Fill;

typedef struct Tensor {
        char name[64];
        GgmlType type;
        uint32_t n_dims;
        uint64_t ne[2];
        Fill fill;
        uint64_t seed;          /* from the model seed and the name */
        const float *values;    /* NULL: random by fill; else the contents, ne[0] x ne[1] */
        float *row;             /* scratch, ne[0] floats */
} Tensor;

static int produce_rows(void *userdata, uint64_t first_row, uint64_t n_rows, void *buf) {
        Tensor *t = userdata;
        uint64_t row_bytes = ggml_row_bytes(t->type, t->ne[0]);
        /* uniform(-a, a) has std a / sqrt(3) */
        float a = sqrtf(3.0f / (float) t->ne[0]);

        if (!t->row) {
                t->row = malloc(t->ne[0] * sizeof(float));
                if (!t->row)
                        return -ENOMEM;
        }
        for (uint64_t r = 0; r < n_rows; r++) {
                /* each row from its own state: independent of chunking */
                uint64_t state = splitmix64(t->seed ^ splitmix64(first_row + r));
                for (uint64_t i = 0; i < t->ne[0]; i++) {
                        float u = uniform(&state);
                        t->row[i] = t->fill == FILL_MATRIX ? u * a : t->fill == FILL_NORM ? 1.0f + 0.1f * u : 0.02f * u;
                }
                const float *src = t->values ? t->values + (first_row + r) * t->ne[0] : t->row;
                int k = ggml_quantize_row(t->type, src, (uint8_t *) buf + r * row_bytes, t->ne[0]);
                if (k < 0)
                        return k;
        }
        return 0;
}

typedef struct Model {
        Spec spec;
        GgmlType type;
        uint32_t file_type;
        bool allow_fallback;
        uint64_t seed;
        Tensor *tensors;
        size_t n_tensors;
        size_t n_fallback;
        char **tokens;
        size_t n_tokens;
        float *rope_freqs;      /* rope_freqs.weight's values, or NULL */
} Model;

static void model_done(Model *m) {
        for (size_t i = 0; i < m->n_tensors; i++)
                free(m->tensors[i].row);
        free(m->tensors);
        free(m->rope_freqs);
        for (size_t i = 0; i < m->n_tokens; i++)
                free(m->tokens[i]);
        free(m->tokens);
}

/*
 * The type for a matrix with rows of n elements: the requested one, or with
 * --allow-fallback the nearest that fits (Q8_0, else F16), as llama.cpp's
 * quantiser does for tensors whose rows do not fit the K-quant blocks.
 */
static int matrix_type(Model *m, const char *name, uint64_t n, const char *what, GgmlType *ret) {
        uint32_t block = ggml_type_block_elems(m->type);

        if (n % block == 0) {
                *ret = m->type;
                return 0;
        }
        if (!m->allow_fallback) {
                fprintf(stderr,
                        "--type %s needs rows that are a multiple of %" PRIu32 " elements, but %s is %" PRIu64
                        " (tensor %s); pass --allow-fallback to store such tensors as Q8_0 or F16\n",
                        ggml_type_name(m->type), block, what, n, name);
                return -EINVAL;
        }
        *ret = n % QK8_0 == 0 && m->type != GGML_TYPE_Q8_0 ? GGML_TYPE_Q8_0 : GGML_TYPE_F16;
        m->n_fallback++;
        return 0;
}

static void add_tensor(Model *m, Fill fill, GgmlType type, uint64_t ne0, uint64_t ne1, const char *fmt, ...)
        _printf_(6, 7);

/* Appends to m->tensors, which plan_tensors() sized for the model. */
static void add_tensor(Model *m, Fill fill, GgmlType type, uint64_t ne0, uint64_t ne1, const char *fmt, ...) {
        Tensor *t = m->tensors + m->n_tensors++;
        va_list ap;

        *t = (Tensor) { .type = type, .n_dims = ne1 > 0 ? 2 : 1, .ne = { ne0, ne1 > 0 ? ne1 : 1 }, .fill = fill };
        va_start(ap, fmt);
        (void) vsnprintf(t->name, sizeof t->name, fmt, ap);
        va_end(ap);
        t->seed = splitmix64(m->seed) ^ hash_string(t->name);
}

static int add_matrix(Model *m, uint64_t ne0, uint64_t ne1, const char *what, const char *fmt, ...) _printf_(5, 6);

static int add_matrix(Model *m, uint64_t ne0, uint64_t ne1, const char *what, const char *fmt, ...) {
        char name[64];
        GgmlType type;
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(name, sizeof name, fmt, ap);
        va_end(ap);
        int r = matrix_type(m, name, ne0, what, &type);
        if (r < 0)
                return r;
        add_tensor(m, FILL_MATRIX, type, ne0, ne1, "%s", name);
        return 0;
}

/*
 * Llama 3's RoPE frequency factors, one per rotated pair, as llama.cpp's converter computes them from
 * config.json's rope_scaling: pairs that turn more than 4 times (high_freq_factor) within the original
 * context keep their frequency, those that turn less than once (low_freq_factor) are slowed down by
 * factor, and those between by a blend of the two.
 */
static void llama3_rope_freqs(const Spec *s, float *ret) {
        uint64_t n_rot = s->dim / s->heads;
        double orig = (double) s->rope_orig_ctx;

        for (uint64_t i = 0; i < n_rot / 2; i++) {
                double freq = pow(s->rope_base, -2.0 * (double) i / (double) n_rot);
                double wavelen = 2 * M_PI / freq;
                double f;
                if (wavelen < orig / LLAMA3_HIGH_FREQ_FACTOR)
                        f = 1;
                else if (wavelen > orig / LLAMA3_LOW_FREQ_FACTOR)
                        f = s->rope_factor;
                else {
                        double smooth = (orig / wavelen - LLAMA3_LOW_FREQ_FACTOR) /
                                        (LLAMA3_HIGH_FREQ_FACTOR - LLAMA3_LOW_FREQ_FACTOR);
                        f = 1 / ((1 - smooth) / s->rope_factor + smooth);
                }
                ret[i] = (float) f;
        }
}

static int plan_tensors(Model *m) {
        const Spec *s = &m->spec;
        uint64_t kv_dim = s->dim / s->heads * s->kv_heads;
        bool bias = s->arch == ARCH_QWEN2;
        int r;

        m->tensors = calloc(4 + s->layers * 12, sizeof(Tensor));
        if (!m->tensors)
                return -ENOMEM;
        if (s->rope_factor > 0) {
                uint64_t n_pairs = s->dim / s->heads / 2;
                m->rope_freqs = malloc(n_pairs * sizeof(float));
                if (!m->rope_freqs)
                        return -ENOMEM;
                llama3_rope_freqs(s, m->rope_freqs);
                /* First, where llama.cpp's converter puts it. */
                add_tensor(m, FILL_NORM, GGML_TYPE_F32, n_pairs, 0, "rope_freqs.weight");
                m->tensors[m->n_tensors - 1].values = m->rope_freqs;
        }
        r = add_matrix(m, s->dim, s->vocab, "--dim", "token_embd.weight");
        if (r < 0)
                return r;
        for (uint64_t l = 0; l < s->layers; l++) {
                add_tensor(m, FILL_NORM, GGML_TYPE_F32, s->dim, 0, "blk.%" PRIu64 ".attn_norm.weight", l);
                if ((r = add_matrix(m, s->dim, s->dim, "--dim", "blk.%" PRIu64 ".attn_q.weight", l)) < 0 ||
                    (r = add_matrix(m, s->dim, kv_dim, "--dim", "blk.%" PRIu64 ".attn_k.weight", l)) < 0 ||
                    (r = add_matrix(m, s->dim, kv_dim, "--dim", "blk.%" PRIu64 ".attn_v.weight", l)) < 0)
                        return r;
                if (bias) {
                        add_tensor(m, FILL_BIAS, GGML_TYPE_F32, s->dim, 0, "blk.%" PRIu64 ".attn_q.bias", l);
                        add_tensor(m, FILL_BIAS, GGML_TYPE_F32, kv_dim, 0, "blk.%" PRIu64 ".attn_k.bias", l);
                        add_tensor(m, FILL_BIAS, GGML_TYPE_F32, kv_dim, 0, "blk.%" PRIu64 ".attn_v.bias", l);
                }
                if ((r = add_matrix(m, s->dim, s->dim, "--dim", "blk.%" PRIu64 ".attn_output.weight", l)) < 0)
                        return r;
                add_tensor(m, FILL_NORM, GGML_TYPE_F32, s->dim, 0, "blk.%" PRIu64 ".ffn_norm.weight", l);
                if ((r = add_matrix(m, s->dim, s->ff, "--dim", "blk.%" PRIu64 ".ffn_gate.weight", l)) < 0 ||
                    (r = add_matrix(m, s->dim, s->ff, "--dim", "blk.%" PRIu64 ".ffn_up.weight", l)) < 0 ||
                    (r = add_matrix(m, s->ff, s->dim, "--ff", "blk.%" PRIu64 ".ffn_down.weight", l)) < 0)
                        return r;
        }
        add_tensor(m, FILL_NORM, GGML_TYPE_F32, s->dim, 0, "output_norm.weight");
        return add_matrix(m, s->dim, s->vocab, "--dim", "output.weight");
}

/* ---- vocabulary ---------------------------------------------------------- */

/* A set of pieces, so each is added once. */
typedef struct PieceSet {
        char **slots;
        size_t mask;
} PieceSet;

static bool set_add(PieceSet *set, char *s) {
        for (size_t i = hash_string(s) & set->mask;; i = (i + 1) & set->mask) {
                if (!set->slots[i]) {
                        set->slots[i] = s;
                        return true;
                }
                if (streq(set->slots[i], s))
                        return false;
        }
}

#define SPACE "\xe2\x96\x81" /* U+2581, SentencePiece's word boundary */
#define LETTERS "etaoinshrdlcumwfgypbvkjxqz" /* English letter frequency */

static const char *const words[] = {
        "the", "and", "a", "to", "was", "he", "she", "it", "of", "in", "that", "is", "his", "her", "they", "with",
        "for", "on", "you", "said", "had", "but", "at", "as", "be", "one", "day", "time", "once", "upon", "there",
        "little", "big", "girl", "boy", "named", "play", "happy", "friend", "mom", "dog", "cat", "tree", "sun",
        "saw", "went", "very", "so", "not", "all", "we", "can", "what", "want", "wanted", "loved", "toy", "ball",
};

typedef struct Vocab {
        Model *m;
        PieceSet set;
        size_t cap;
} Vocab;

/* Adds s unless present or the vocabulary is full; takes ownership. */
static int vocab_add(Vocab *v, char *s) {
        if (v->m->n_tokens >= v->cap || !set_add(&v->set, s)) {
                free(s);
                return 0;
        }
        v->m->tokens[v->m->n_tokens++] = s;
        return 0;
}

/* Adds piece after its prefixes (dropping one letter at a time), so every
 * piece can be built by merging pieces already in the vocabulary. */
static int vocab_add_closed(Vocab *v, const char *piece) {
        size_t n = strlen(piece), first = strncmp(piece, SPACE, 3) == 0 ? 3 : 1;
        for (size_t len = first; len <= n; len++) {
                char *s = strndup(piece, len);
                if (!s)
                        return -ENOMEM;
                int r = vocab_add(v, s);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int make_vocab(Model *m) {
        _cleanup_free_ char **slots = NULL;
        Vocab v = { .m = m, .cap = m->spec.vocab };
        char buf[64];
        size_t cap = 16;
        int r;

        while (cap < m->spec.vocab * 2)
                cap *= 2;
        slots = calloc(cap, sizeof(char *));
        m->tokens = calloc(m->spec.vocab, sizeof(char *));
        if (!slots || !m->tokens)
                return -ENOMEM;
        v.set = (PieceSet) { slots, cap - 1 };

        static const char *const special[N_SPECIAL] = { "<unk>", "<s>", "</s>" };
        for (size_t i = 0; i < N_SPECIAL; i++) {
                char *sp = strdup(special[i]);
                if (!sp)
                        return -ENOMEM;
                vocab_add(&v, sp);
        }
        for (unsigned b = 0; b < N_BYTES; b++) {
                snprintf(buf, sizeof buf, "<0x%02X>", b);
                char *s = strdup(buf);
                if (!s)
                        return -ENOMEM;
                vocab_add(&v, s);
        }

        r = vocab_add_closed(&v, SPACE);
        for (const char *c = LETTERS; r >= 0 && *c; c++) {
                snprintf(buf, sizeof buf, SPACE "%c", *c);
                r = vocab_add_closed(&v, buf);
                if (r >= 0)
                        r = vocab_add_closed(&v, (char[]) { *c, 0 });
        }
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(words); i++) {
                snprintf(buf, sizeof buf, SPACE "%s", words[i]);
                r = vocab_add_closed(&v, buf);
        }
        /* then every string of 2, 3, ... letters, with and without the boundary */
        for (size_t len = 2; r >= 0 && m->n_tokens < v.cap && len < 16; len++) {
                size_t idx[16] = { 0 };
                for (;;) {
                        char word[17];
                        for (size_t i = 0; i < len; i++)
                                word[i] = LETTERS[idx[i]];
                        word[len] = 0;
                        snprintf(buf, sizeof buf, SPACE "%s", word);
                        if ((r = vocab_add_closed(&v, buf)) < 0 || (r = vocab_add_closed(&v, word)) < 0)
                                break;
                        if (m->n_tokens >= v.cap)
                                break;
                        size_t k = len;
                        while (k > 0 && ++idx[k - 1] == strlen(LETTERS))
                                idx[--k] = 0;
                        if (k == 0)
                                break;
                }
        }
        if (r < 0)
                return r;
        if (m->n_tokens != m->spec.vocab)
                return -EINVAL; /* not reached for vocab >= N_SPECIAL + N_BYTES */
        return 0;
}

/* ---- the file ------------------------------------------------------------ */

static int add_metadata(Model *m, GgufWriter *w) {
        const Spec *s = &m->spec;
        const char *arch = arch_names[s->arch];
        char key[128], name[128];
        int r = 0;

#define KEY(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
        if (s->name)
                snprintf(name, sizeof name, "%s (synthetic)", s->name);
        else
                snprintf(name, sizeof name, "synthetic %s", arch);
        if ((r = gguf_writer_add_string(w, "general.architecture", arch)) < 0 ||
            (r = gguf_writer_add_string(w, "general.name", name)) < 0 ||
            (r = gguf_writer_add_u32(w, "general.file_type", m->file_type)) < 0 ||
            (r = gguf_writer_add_u32(w, "general.quantization_version", 2)) < 0 ||
            (r = gguf_writer_add_u64(w, "inferd.mkmodel.seed", m->seed)) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("vocab_size"), (uint32_t) s->vocab)) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("context_length"), (uint32_t) s->ctx)) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("embedding_length"), (uint32_t) s->dim)) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("block_count"), (uint32_t) s->layers)) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("feed_forward_length"), (uint32_t) s->ff)) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("attention.head_count"), (uint32_t) s->heads)) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("attention.head_count_kv"), (uint32_t) s->kv_heads)) < 0 ||
            (r = gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), (float) s->rms_eps)) < 0 ||
            (r = gguf_writer_add_f32(w, KEY("rope.freq_base"), (float) s->rope_base)) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("rope.dimension_count"), (uint32_t) (s->dim / s->heads))) < 0)
                return r;
#undef KEY

        _cleanup_free_ float *scores = calloc(m->n_tokens, sizeof(float));
        _cleanup_free_ int32_t *token_types = calloc(m->n_tokens, sizeof(int32_t));
        if (!scores || !token_types)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_tokens; i++) {
                /* SentencePiece scores are log-probabilities: earlier pieces are likelier */
                token_types[i] = i == 0 ? TOKEN_UNKNOWN : i < N_SPECIAL ? TOKEN_CONTROL : i < N_SPECIAL + N_BYTES ? TOKEN_BYTE : TOKEN_NORMAL;
                scores[i] = token_types[i] == TOKEN_NORMAL ? -(float) (i - N_SPECIAL - N_BYTES) : 0.0f;
        }
        if ((r = gguf_writer_add_string(w, "tokenizer.ggml.model", "llama")) < 0 ||
            (r = gguf_writer_add_array_string(w, "tokenizer.ggml.tokens", (const char *const *) m->tokens, m->n_tokens)) < 0 ||
            (r = gguf_writer_add_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, m->n_tokens)) < 0 ||
            (r = gguf_writer_add_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, token_types, m->n_tokens)) < 0 ||
            (r = gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1)) < 0 ||
            (r = gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2)) < 0 ||
            (r = gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0)) < 0 ||
            (r = gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true)) < 0 ||
            (r = gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", false)) < 0)
                return r;
        return 0;
}

static int write_model(Model *m, const char *path) {
        _cleanup_(gguf_writer_freep) GgufWriter *w = NULL;
        int r;

        r = gguf_writer_new(&w);
        if (r < 0)
                return r;
        r = add_metadata(m, w);
        if (r < 0)
                return r;
        for (size_t i = 0; i < m->n_tensors; i++) {
                Tensor *t = m->tensors + i;
                r = gguf_writer_add_tensor_rows(w, t->name, t->type, t->n_dims, t->ne, produce_rows, t);
                if (r < 0)
                        return r;
        }
        return gguf_writer_write_file(w, path);
}

/* ---- command line -------------------------------------------------------- */

static void help(void) {
        printf("Usage: inferd-mkmodel [OPTIONS] -o FILE\n"
               "\n"
               "Writes a synthetic GGUF model with random weights and a synthetic vocabulary.\n"
               "\n"
               "  --preset NAME       start from a real model's shape: tiny, llama-3.2-1b,\n"
               "                      llama-3-8b, qwen2-0.5b (without one: tiny's)\n"
               "  --arch ARCH         llama or qwen2 (qwen2 adds Q/K/V biases)\n"
               "  --type TYPE         matrices as F32, F16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K\n"
               "                      (default F32; norms and biases are always F32)\n"
               "  --dim N             embedding length\n"
               "  --layers N          blocks\n"
               "  --heads N           attention heads\n"
               "  --kv-heads N        key/value heads (divides --heads)\n"
               "  --ff N              feed-forward length\n"
               "  --vocab N           tokens (at least %d)\n"
               "  --ctx N             context length in the metadata\n"
               "  --rope-base F       RoPE frequency base\n"
               "  --rope-freqs F[:N]  write rope_freqs.weight, Llama 3.1+'s RoPE frequency\n"
               "                      factors, by Llama 3's rule with factor F and original\n"
               "                      context N (default 8192); none: do not (llama-3.2-1b\n"
               "                      has 32:8192, the other presets none)\n"
               "  --seed N            weights' seed (default 1)\n"
               "  --allow-fallback    store matrices whose rows do not fit --type's blocks\n"
               "                      as Q8_0 or F16 instead of failing\n"
               "  -o, --output FILE   where to write the model\n"
               "  -h, --help          this text\n"
               "\n"
               "Example: inferd-mkmodel --preset llama-3.2-1b --type Q4_K -o llama-1b-q4k.gguf\n",
               N_SPECIAL + N_BYTES);
}

static int parse_uint(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 0);
        if (errno != 0 || end == s || *end || s[0] == '-' || v < min || v > max) {
                fprintf(stderr, "%s: '%s' is not a number from %" PRIu64 " to %" PRIu64 "\n", opt, s, min, max);
                return -EINVAL;
        }
        *ret = v;
        return 0;
}

/* --rope-freqs F[:N] or none (factor 0). */
static int parse_rope_freqs(const char *s, double *ret_factor, uint64_t *ret_orig) {
        uint64_t orig = LLAMA3_ORIG_CTX;
        char *end;

        if (streq(s, "none")) {
                *ret_factor = 0;
                *ret_orig = 0;
                return 0;
        }
        errno = 0;
        double f = strtod(s, &end);
        if (errno != 0 || end == s || (*end && *end != ':') || !(f > 0) || !isfinite(f)) {
                fprintf(stderr, "--rope-freqs: '%s' is not FACTOR[:ORIGINAL_CONTEXT] with a positive factor, "
                        "nor none\n", s);
                return -EINVAL;
        }
        if (*end == ':' && parse_uint("--rope-freqs ORIGINAL_CONTEXT", end + 1, 1, UINT32_MAX, &orig) < 0)
                return -EINVAL;
        *ret_factor = f;
        *ret_orig = orig;
        return 0;
}

enum {
        OPT_PRESET = 0x100,
        OPT_ARCH,
        OPT_TYPE,
        OPT_DIM,
        OPT_LAYERS,
        OPT_HEADS,
        OPT_KV_HEADS,
        OPT_FF,
        OPT_VOCAB,
        OPT_CTX,
        OPT_ROPE_BASE,
        OPT_ROPE_FREQS,
        OPT_SEED,
        OPT_ALLOW_FALLBACK,
};

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "preset", required_argument, NULL, OPT_PRESET },
                { "arch", required_argument, NULL, OPT_ARCH },
                { "type", required_argument, NULL, OPT_TYPE },
                { "dim", required_argument, NULL, OPT_DIM },
                { "layers", required_argument, NULL, OPT_LAYERS },
                { "heads", required_argument, NULL, OPT_HEADS },
                { "kv-heads", required_argument, NULL, OPT_KV_HEADS },
                { "ff", required_argument, NULL, OPT_FF },
                { "vocab", required_argument, NULL, OPT_VOCAB },
                { "ctx", required_argument, NULL, OPT_CTX },
                { "rope-base", required_argument, NULL, OPT_ROPE_BASE },
                { "rope-freqs", required_argument, NULL, OPT_ROPE_FREQS },
                { "seed", required_argument, NULL, OPT_SEED },
                { "allow-fallback", no_argument, NULL, OPT_ALLOW_FALLBACK },
                { "output", required_argument, NULL, 'o' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        /* explicit sizes override the preset whatever the order: collect first */
        uint64_t set[OPT_ALLOW_FALLBACK - OPT_DIM] = { 0 };
        const char *preset = NULL, *arch = NULL, *output = NULL;
        double rope_base = NAN, rope_factor = NAN;
        uint64_t rope_orig_ctx = 0;
        Model m = { .type = GGML_TYPE_F32, .seed = 1 };
        int c, r;

        while ((c = getopt_long(argc, argv, "o:h", options, NULL)) >= 0) {
                switch (c) {
                case OPT_PRESET:
                        preset = optarg;
                        break;
                case OPT_ARCH:
                        arch = optarg;
                        break;
                case OPT_TYPE: {
                        bool found = false;
                        for (size_t i = 0; i < ELEMENTSOF(types); i++)
                                if (strcasecmp(optarg, ggml_type_name(types[i].type)) == 0) {
                                        m.type = types[i].type;
                                        m.file_type = types[i].file_type;
                                        found = true;
                                }
                        if (!found) {
                                fprintf(stderr, "--type: unknown type '%s' (F32, F16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K)\n",
                                        optarg);
                                return 1;
                        }
                        break;
                }
                case OPT_DIM:
                case OPT_LAYERS:
                case OPT_HEADS:
                case OPT_KV_HEADS:
                case OPT_FF:
                case OPT_VOCAB:
                case OPT_CTX: {
                        /* the metadata stores these as uint32 */
                        char opt[32];
                        snprintf(opt, sizeof opt, "--%s", options[c - OPT_PRESET].name);
                        if (parse_uint(opt, optarg, 1, UINT32_MAX, &set[c - OPT_DIM]) < 0)
                                return 1;
                        break;
                }
                case OPT_ROPE_BASE: {
                        char *end;
                        rope_base = strtod(optarg, &end);
                        if (end == optarg || *end || !(rope_base > 0) || !isfinite(rope_base)) {
                                fprintf(stderr, "--rope-base: '%s' is not a positive number\n", optarg);
                                return 1;
                        }
                        break;
                }
                case OPT_ROPE_FREQS:
                        if (parse_rope_freqs(optarg, &rope_factor, &rope_orig_ctx) < 0)
                                return 1;
                        break;
                case OPT_SEED:
                        if (parse_uint("--seed", optarg, 0, UINT64_MAX, &m.seed) < 0)
                                return 1;
                        break;
                case OPT_ALLOW_FALLBACK:
                        m.allow_fallback = true;
                        break;
                case 'o':
                        output = optarg;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        return 1;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "unexpected argument '%s'\n", argv[optind]);
                return 1;
        }
        if (!output) {
                fprintf(stderr, "no output file: -o FILE (see --help)\n");
                return 1;
        }

        m.spec = presets[0];
        m.spec.name = NULL;
        if (preset) {
                size_t i;
                for (i = 0; i < ELEMENTSOF(presets); i++)
                        if (streq(presets[i].name, preset))
                                break;
                if (i == ELEMENTSOF(presets)) {
                        fprintf(stderr, "--preset: unknown preset '%s' (tiny, llama-3.2-1b, llama-3-8b, qwen2-0.5b)\n",
                                preset);
                        return 1;
                }
                m.spec = presets[i];
        }
        if (arch) {
                if (streq(arch, "llama"))
                        m.spec.arch = ARCH_LLAMA;
                else if (streq(arch, "qwen2"))
                        m.spec.arch = ARCH_QWEN2;
                else {
                        fprintf(stderr, "--arch: unknown architecture '%s' (llama, qwen2)\n", arch);
                        return 1;
                }
                /* Qwen2's own norm epsilon unless a preset said otherwise */
                if (!preset)
                        m.spec.rms_eps = m.spec.arch == ARCH_QWEN2 ? 1e-6 : 1e-5;
        }
        uint64_t *fields[] = { &m.spec.dim, &m.spec.layers, &m.spec.heads, &m.spec.kv_heads,
                               &m.spec.ff, &m.spec.vocab, &m.spec.ctx };
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                if (set[i])
                        *fields[i] = set[i];
        if (!isnan(rope_base))
                m.spec.rope_base = rope_base;
        if (!isnan(rope_factor)) {
                m.spec.rope_factor = rope_factor;
                m.spec.rope_orig_ctx = rope_orig_ctx;
        }

        const Spec *s = &m.spec;
        if (s->dim % s->heads != 0 || (s->dim / s->heads) % 2 != 0) {
                fprintf(stderr, "--dim %" PRIu64 " must be --heads %" PRIu64 " times an even head size\n", s->dim,
                        s->heads);
                return 1;
        }
        if (s->kv_heads > s->heads || s->heads % s->kv_heads != 0) {
                fprintf(stderr, "--kv-heads %" PRIu64 " must divide --heads %" PRIu64 "\n", s->kv_heads, s->heads);
                return 1;
        }
        if (s->vocab < N_SPECIAL + N_BYTES) {
                fprintf(stderr, "--vocab %" PRIu64 " is too small: the special and byte tokens alone are %d\n",
                        s->vocab, N_SPECIAL + N_BYTES);
                return 1;
        }

        r = plan_tensors(&m);
        if (r == -EINVAL) {
                model_done(&m);
                return 1;
        }
        if (r >= 0)
                r = make_vocab(&m);
        if (r >= 0)
                r = write_model(&m, output);
        if (r < 0) {
                fprintf(stderr, "Failed to write %s: %s\n", output, strerror(-r));
                model_done(&m);
                return 1;
        }

        uint64_t params = 0;
        for (size_t i = 0; i < m.n_tensors; i++)
                params += m.tensors[i].ne[0] * m.tensors[i].ne[1];
        printf("%s: %s, %zu tensors (%zu not %s), %" PRIu64 " parameters, %zu tokens\n", output,
               arch_names[s->arch], m.n_tensors, m.n_fallback, ggml_type_name(m.type), params, m.n_tokens);
        model_done(&m);
        return 0;
}
