/* SPDX-License-Identifier: MIT */
/*
 * Tokenizer construction from GGUF metadata, the special-token pass, and
 * decoding. The two encoders live in tokenizer-spm.c and tokenizer-bpe.c.
 *
 * Behaviour follows llama.cpp's llama-vocab.cpp wherever the test vectors
 * (../shared/testdata/tokenizer) depend on it; the places where it
 * deliberately differs are marked.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "tokenizer-internal.h"
#include "unicode.h"

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_PRE "tokenizer.ggml.pre"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_MERGES "tokenizer.ggml.merges"

static int fail(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);
static int fail(char **ret_error, int r, const char *fmt, ...) {
        if (ret_error) {
                va_list ap;
                char *s;

                va_start(ap, fmt);
                if (vasprintf(&s, fmt, ap) < 0)
                        s = NULL;
                va_end(ap);
                *ret_error = s;
        }
        return r;
}

/* Text from the file, short and printable, for error messages: they may end
 * up in a D-Bus reply, whose strings must be valid UTF-8. */
#define SHOW_MAX 96
static const char *show(char buf[static SHOW_MAX], const char *s, size_t n) {
        size_t k = 0;

        for (size_t i = 0; i < n;) {
                uint32_t cp;
                int m = utf8_decode((const uint8_t *) s + i, n - i, &cp);

                if (k + 8 >= SHOW_MAX) {
                        memcpy(buf + k, "...", 4);
                        return buf;
                }
                if (m > 1 || (m == 1 && cp >= 0x20 && cp < 0x7F && cp != '\\' && cp != '\'')) {
                        memcpy(buf + k, s + i, (size_t) m);
                        k += (size_t) m;
                        i += (size_t) m;
                } else {
                        k += (size_t) snprintf(buf + k, SHOW_MAX - k, "\\x%02x", (uint8_t) s[i]);
                        i++;
                }
        }
        buf[k] = 0;
        return buf;
}

static const char *show_token(char buf[static SHOW_MAX], const Tokenizer *t, uint32_t id) {
        return show(buf, t->text + t->tokens[id].text_off, t->tokens[id].text_len);
}

/* ---- hash maps ------------------------------------------------------------ */

static uint64_t hash_u64(uint64_t k) {
        k ^= k >> 33;
        k *= 0xff51afd7ed558ccdULL;
        k ^= k >> 33;
        return k;
}

static uint64_t hash_bytes(const char *s, size_t n) {
        uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, then mixed so the low and high bits are both good */
        for (size_t i = 0; i < n; i++)
                h = (h ^ (uint8_t) s[i]) * 0x100000001b3ULL;
        return hash_u64(h);
}

static size_t table_size(size_t n) {
        size_t size = 16;
        while (size < n * 2) /* at most half full: probe runs stay short */
                size *= 2;
        return size;
}

int32_t tokenizer_lookup(const Tokenizer *t, const char *s, size_t n) {
        uint64_t h = hash_bytes(s, n);
        uint32_t tag = (uint32_t) (h >> 32);

        for (size_t i = h & t->map_mask;; i = (i + 1) & t->map_mask) {
                const MapSlot *m = t->map + i;
                if (m->id < 0)
                        return -1;
                if (m->tag == tag && t->tokens[m->id].text_len == n && memcmp(token_text(t, m->id), s, n) == 0)
                        return m->id;
        }
}

/* Later duplicates replace earlier ones, as in llama.cpp's token_to_id. */
static void map_insert(Tokenizer *t, int32_t id) {
        const char *s = token_text(t, id);
        size_t n = t->tokens[id].text_len;
        uint64_t h = hash_bytes(s, n);
        uint32_t tag = (uint32_t) (h >> 32);

        for (size_t i = h & t->map_mask;; i = (i + 1) & t->map_mask) {
                MapSlot *m = t->map + i;
                if (m->id < 0 ||
                    (m->tag == tag && t->tokens[m->id].text_len == n && memcmp(token_text(t, m->id), s, n) == 0)) {
                        *m = (MapSlot) { id, tag };
                        return;
                }
        }
}

const MergeSlot *tokenizer_find_merge(const Tokenizer *t, int32_t left, int32_t right) {
        uint64_t key = (uint64_t) (uint32_t) left << 32 | (uint32_t) right;

        if (!t->merges)
                return NULL;
        for (size_t i = hash_u64(key) & t->merges_mask;; i = (i + 1) & t->merges_mask) {
                if (t->merges[i].key == key)
                        return t->merges + i;
                if (t->merges[i].key == UINT64_MAX)
                        return NULL;
        }
}

/* ---- small containers ----------------------------------------------------- */

int idvec_push(IdVec *v, int32_t id) {
        if (v->n == v->cap) {
                size_t cap = MAX(v->cap * 2, (size_t) 64);
                int32_t *p = realloc(v->ids, cap * sizeof *p);
                if (!p)
                        return -ENOMEM;
                v->ids = p;
                v->cap = cap;
        }
        v->ids[v->n++] = id;
        return 0;
}

static void idvec_done(IdVec *v) {
        free(v->ids);
        *v = (IdVec) {};
}

static bool bigram_before(const Bigram *a, const Bigram *b) {
        return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

int bigram_heap_push(BigramHeap *h, const Bigram *b) {
        if (h->n == h->cap) {
                size_t cap = MAX(h->cap * 2, (size_t) 64);
                Bigram *p = realloc(h->items, cap * sizeof *p);
                if (!p)
                        return -ENOMEM;
                h->items = p;
                h->cap = cap;
        }
        size_t i = h->n++;
        while (i > 0) {
                size_t parent = (i - 1) / 2;
                if (!bigram_before(b, &h->items[parent]))
                        break;
                h->items[i] = h->items[parent];
                i = parent;
        }
        h->items[i] = *b;
        return 0;
}

bool bigram_heap_pop(BigramHeap *h, Bigram *ret) {
        if (h->n == 0)
                return false;
        *ret = h->items[0];
        Bigram last = h->items[--h->n];
        size_t i = 0;
        for (;;) {
                size_t c = 2 * i + 1;
                if (c >= h->n)
                        break;
                if (c + 1 < h->n && bigram_before(&h->items[c + 1], &h->items[c]))
                        c++;
                if (!bigram_before(&h->items[c], &last))
                        break;
                h->items[i] = h->items[c];
                i = c;
        }
        if (h->n > 0)
                h->items[i] = last;
        return true;
}

/* ---- construction --------------------------------------------------------- */

typedef struct PreTokenizerName {
        const char *name;
        PreTokenizer pre;
        bool ignore_merges;
        bool add_bos;                   /* default when tokenizer.ggml.add_bos_token is absent */
} PreTokenizerName;

/* Only names whose llama.cpp pre-tokenizer is exactly one of the regexes
 * implemented here; anything else is refused rather than tokenized subtly
 * wrong. */
static const PreTokenizerName pre_tokenizers[] = {
        { "gpt-2", PRE_TOKENIZER_GPT2, false, false },
        { "phi-2", PRE_TOKENIZER_GPT2, false, false },
        { "llama3", PRE_TOKENIZER_LLAMA3, true, true },
        { "llama-v3", PRE_TOKENIZER_LLAMA3, true, true },
        { "llama-bpe", PRE_TOKENIZER_LLAMA3, true, true },
        { "smaug-bpe", PRE_TOKENIZER_LLAMA3, false, false },
        { "dbrx", PRE_TOKENIZER_LLAMA3, false, false },
        { "qwen2", PRE_TOKENIZER_QWEN2, false, false },
        { "deepseek-r1-qwen", PRE_TOKENIZER_QWEN2, false, false },
        { "default", PRE_TOKENIZER_DEFAULT, false, false },
};

/* Texts llama.cpp takes for end-of-turn markers and so for end of generation
 * (llama-vocab.cpp); it makes them control tokens whatever the file says. */
static const char *const eot_texts[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "_<EOT>",
        "<\uff5cend\u2581of\u2581sentence\uff5c>", "<end_of_utterance>",
};
static const char *const eog_texts[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>",
        "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
};

static int read_string(const GgufFile *f, const char *key, const char **ret, size_t *ret_len, char **ret_error) {
        int r = gguf_get_string(f, key, ret, ret_len);
        if (r == -ENOENT)
                return r;
        if (r < 0)
                return fail(ret_error, -EBADMSG, "%s is not a string", key);
        return 0;
}

/* An optional special token id. Absent: def, if in range. UINT32_MAX and -1
 * mean "none" (converters write them for tokens the model lacks). */
static int read_id(const GgufFile *f, const char *key, uint32_t n_tokens, int32_t def, int32_t *ret,
                   char **ret_error) {
        int64_t v;
        int r = gguf_get_i64(f, key, &v);
        if (r == -ENOENT) {
                *ret = def >= 0 && (uint32_t) def < n_tokens ? def : -1;
                return 0;
        }
        if (r < 0)
                return fail(ret_error, -EBADMSG, "%s is not an integer", key);
        if (v == -1 || v == UINT32_MAX) {
                *ret = -1;
                return 0;
        }
        if (v < 0 || v >= n_tokens)
                return fail(ret_error, -EBADMSG,
                            "%s is %" PRIi64 ", out of range for a vocabulary of %" PRIu32 " tokens", key, v,
                            n_tokens);
        *ret = (int32_t) v;
        return 0;
}

static int read_bool(const GgufFile *f, const char *key, bool def, bool *ret, char **ret_error) {
        int r = gguf_get_bool(f, key, ret);
        if (r == -ENOENT) {
                *ret = def;
                return 0;
        }
        if (r < 0)
                return fail(ret_error, -EBADMSG, "%s is not a boolean", key);
        return 0;
}

/* An array that must have one element per token. */
static int read_token_array(const GgufFile *f, const char *key, uint32_t n_tokens, const GgufType *types,
                            size_t n_types, GgufType *ret_type, const void **ret_data, char **ret_error) {
        GgufType type;
        uint64_t n;
        int r = gguf_get_array(f, key, &type, &n, ret_data);
        if (r == -ENOENT)
                return r;
        if (r < 0)
                return fail(ret_error, -EBADMSG, "%s is not an array", key);
        bool ok = false;
        for (size_t i = 0; i < n_types; i++)
                ok = ok || type == types[i];
        if (!ok)
                return fail(ret_error, -EBADMSG, "%s is an array of %s, expected %s", key, gguf_type_name(type),
                            gguf_type_name(types[0]));
        if (n != n_tokens)
                return fail(ret_error, -EBADMSG, "%s has %" PRIu64 " entries but %s has %" PRIu32, key, n, KEY_TOKENS,
                            n_tokens);
        *ret_type = type;
        return 0;
}

static int load_tokens(Tokenizer *t, const GgufFile *f, char **ret_error) {
        char buf[SHOW_MAX];
        GgufType type;
        uint64_t n;
        int r;

        r = gguf_get_array(f, KEY_TOKENS, &type, &n, NULL);
        if (r == -ENOENT)
                return fail(ret_error, -EBADMSG, "%s is missing", KEY_TOKENS);
        if (r < 0 || type != GGUF_TYPE_STRING)
                return fail(ret_error, -EBADMSG, "%s is not an array of strings", KEY_TOKENS);
        if (n == 0)
                return fail(ret_error, -EBADMSG, "%s is empty", KEY_TOKENS);
        if (n > TOKENIZER_MAX_TOKENS)
                return fail(ret_error, -EBADMSG, "%s has %" PRIu64 " tokens, more than the %u supported", KEY_TOKENS, n,
                            TOKENIZER_MAX_TOKENS);
        t->n_tokens = (uint32_t) n;

        t->tokens = calloc(n, sizeof *t->tokens);
        if (!t->tokens)
                return -ENOMEM;

        /* Texts: one arena, each NUL-terminated so tokenizer_token_text()
         * can hand them out as C strings. */
        uint64_t total = 0;
        for (uint32_t i = 0; i < n; i++) {
                size_t len;
                const char *s;
                r = gguf_get_array_string(f, KEY_TOKENS, i, &s, &len);
                if (r < 0)
                        return fail(ret_error, -EBADMSG, "%s: cannot read token %" PRIu32, KEY_TOKENS, i);
                total += len + 1;
        }
        if (total > UINT32_MAX)
                return fail(ret_error, -EBADMSG, "%s: the token texts add up to %" PRIu64 " bytes, more than 4 GiB",
                            KEY_TOKENS, total);
        t->text = malloc(total);
        t->pieces = malloc(total);
        if (!t->text || !t->pieces)
                return -ENOMEM;
        uint32_t off = 0;
        for (uint32_t i = 0; i < n; i++) {
                size_t len;
                const char *s;
                (void) gguf_get_array_string(f, KEY_TOKENS, i, &s, &len);
                memcpy(t->text + off, s, len);
                t->text[off + len] = 0;
                t->tokens[i].text_off = off;
                t->tokens[i].text_len = (uint32_t) len;
                t->tokens[i].type = TOKEN_TYPE_NORMAL;
                off += (uint32_t) len + 1;
        }

        static const GgufType score_types[] = { GGUF_TYPE_FLOAT32 };
        const void *data;
        r = read_token_array(f, KEY_SCORES, t->n_tokens, score_types, ELEMENTSOF(score_types), &type, &data,
                             ret_error);
        if (r == 0) {
                for (uint32_t i = 0; i < n; i++) {
                        float v;
                        memcpy(&v, (const uint8_t *) data + 4 * (size_t) i, 4);
                        if (isnan(v))
                                return fail(ret_error, -EBADMSG, "%s: token %" PRIu32 " ('%s') has a NaN score",
                                            KEY_SCORES, i, show_token(buf, t, i));
                        t->tokens[i].score = v;
                }
        } else if (r != -ENOENT)
                return r;

        static const GgufType type_types[] = { GGUF_TYPE_INT32, GGUF_TYPE_UINT32 };
        r = read_token_array(f, KEY_TYPES, t->n_tokens, type_types, ELEMENTSOF(type_types), &type, &data, ret_error);
        if (r == 0) {
                for (uint32_t i = 0; i < n; i++) {
                        uint32_t v;
                        memcpy(&v, (const uint8_t *) data + 4 * (size_t) i, 4);
                        if (v >= TOKEN_TYPE__MAX)
                                return fail(ret_error, -EBADMSG,
                                            "%s: token %" PRIu32 " ('%s') has type %" PRIi32 " (valid: 0 to %d)",
                                            KEY_TYPES, i, show_token(buf, t, i), (int32_t) v, TOKEN_TYPE__MAX - 1);
                        t->tokens[i].type = (uint8_t) v;
                }
        } else if (r != -ENOENT)
                return r;

        t->map_mask = table_size(n) - 1;
        t->map = malloc((t->map_mask + 1) * sizeof *t->map);
        if (!t->map)
                return -ENOMEM;
        for (size_t i = 0; i <= t->map_mask; i++)
                t->map[i] = (MapSlot) { -1, 0 };
        for (uint32_t i = 0; i < n; i++)
                if (t->tokens[i].text_len > 0) /* an empty token can never match text */
                        map_insert(t, (int32_t) i);
        return 0;
}

static int load_merges(Tokenizer *t, const GgufFile *f, char **ret_error) {
        _cleanup_free_ char *joined = NULL;
        char buf[SHOW_MAX], buf2[SHOW_MAX];
        GgufType type;
        uint64_t n;
        int r;

        r = gguf_get_array(f, KEY_MERGES, &type, &n, NULL);
        if (r == -ENOENT)
                return fail(ret_error, -EBADMSG, "%s is missing (byte-level BPE needs it)", KEY_MERGES);
        if (r < 0 || type != GGUF_TYPE_STRING)
                return fail(ret_error, -EBADMSG, "%s is not an array of strings", KEY_MERGES);
        if (n > UINT32_MAX / 4)
                return fail(ret_error, -EBADMSG, "%s has %" PRIu64 " entries, too many", KEY_MERGES, n);

        t->merges_mask = table_size(n) - 1;
        t->merges = malloc((t->merges_mask + 1) * sizeof *t->merges);
        if (!t->merges)
                return -ENOMEM;
        for (size_t i = 0; i <= t->merges_mask; i++)
                t->merges[i].key = UINT64_MAX;

        size_t joined_cap = 0;
        for (uint64_t i = 0; i < n; i++) {
                const char *s;
                size_t len;
                r = gguf_get_array_string(f, KEY_MERGES, i, &s, &len);
                if (r < 0)
                        return fail(ret_error, -EBADMSG, "%s: cannot read merge %" PRIu64, KEY_MERGES, i);

                /* "left right"; the search starts at 1 as in llama.cpp, so a
                 * left half may begin with a space. */
                const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
                if (!sp)
                        return fail(ret_error, -EBADMSG,
                                    "%s: merge %" PRIu64 " ('%s') is not two tokens separated by a space", KEY_MERGES,
                                    i, show(buf, s, len));
                size_t ll = (size_t) (sp - s), rl = len - ll - 1;
                int32_t left = tokenizer_lookup(t, s, ll), right = tokenizer_lookup(t, sp + 1, rl);
                if (left < 0 || right < 0)
                        return fail(ret_error, -EBADMSG,
                                    "%s: merge %" PRIu64 " ('%s') names '%s', which is not a token", KEY_MERGES, i,
                                    show(buf, s, len),
                                    left < 0 ? show(buf2, s, ll) : show(buf2, sp + 1, rl));

                if (ll + rl > joined_cap) {
                        joined_cap = MAX(ll + rl, joined_cap * 2);
                        free(joined);
                        joined = malloc(joined_cap);
                        if (!joined)
                                return -ENOMEM;
                }
                memcpy(joined, s, ll);
                memcpy(joined + ll, sp + 1, rl);

                uint64_t key = (uint64_t) (uint32_t) left << 32 | (uint32_t) right;
                size_t k = hash_u64(key) & t->merges_mask;
                while (t->merges[k].key != UINT64_MAX && t->merges[k].key != key)
                        k = (k + 1) & t->merges_mask;
                if (t->merges[k].key == key)
                        continue; /* a repeated pair keeps its first (best) rank */
                t->merges[k] = (MergeSlot) {
                        .key = key,
                        .rank = (uint32_t) i,
                        /* Hugging Face refuses merges whose result is not a
                         * token; llama.cpp merges anyway and emits the bytes.
                         * Do the latter: the file loads, the output is valid. */
                        .result = tokenizer_lookup(t, joined, ll + rl),
                };
                t->n_merges++;
        }
        return 0;
}

static int hex_digit(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

/* "<0x0A>" -> 0x0A, or -1. */
static int parse_byte_token(const char *s, size_t n) {
        if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
                return -1;
        int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
        return hi < 0 || lo < 0 ? -1 : hi << 4 | lo;
}

/* What each token decodes to; never longer than its text. */
static int build_pieces(Tokenizer *t, char **ret_error) {
        char buf[SHOW_MAX];
        uint32_t off = 0;

        for (uint32_t i = 0; i < t->n_tokens; i++) {
                TokenInfo *ti = t->tokens + i;
                const char *s = token_text(t, (int32_t) i);
                char *p = t->pieces + off;
                size_t k = 0;

                switch (ti->type) {
                case TOKEN_TYPE_CONTROL:
                case TOKEN_TYPE_UNKNOWN:
                case TOKEN_TYPE_USER_DEFINED:
                        memcpy(p, s, ti->text_len);
                        k = ti->text_len;
                        break;
                case TOKEN_TYPE_BYTE:
                        if (t->model == TOKENIZER_MODEL_SPM) {
                                int b = parse_byte_token(s, ti->text_len);
                                if (b < 0)
                                        return fail(ret_error, -EBADMSG,
                                                    "%s: token %" PRIu32 " ('%s') is a byte token but not <0xNN>",
                                                    KEY_TOKENS, i, show(buf, s, ti->text_len));
                                p[k++] = (char) b;
                                break;
                        }
                        __attribute__((fallthrough));
                case TOKEN_TYPE_NORMAL:
                        if (t->model == TOKENIZER_MODEL_SPM) {
                                /* U+2581 -> ' ' */
                                for (size_t j = 0; j < ti->text_len;)
                                        if (j + 3 <= ti->text_len && memcmp(s + j, "\xe2\x96\x81", 3) == 0) {
                                                p[k++] = ' ';
                                                j += 3;
                                        } else
                                                p[k++] = s[j++];
                                break;
                        }
                        /* GPT-2's byte alphabet back to bytes; characters not in
                         * it (rare, hand-added tokens) pass through as they are. */
                        for (size_t j = 0; j < ti->text_len;) {
                                uint32_t cp;
                                int m = utf8_decode((const uint8_t *) s + j, ti->text_len - j, &cp);
                                int b = m > 0 ? unicode_cpt_to_byte(cp) : -1;
                                if (b >= 0) {
                                        p[k++] = (char) b;
                                        j += (size_t) m;
                                        continue;
                                }
                                size_t step = m > 0 ? (size_t) m : m < 0 ? (size_t) -m : ti->text_len - j;
                                memcpy(p + k, s + j, step);
                                k += step;
                                j += step;
                        }
                        break;
                default: /* unused, undefined: nothing, as in llama.cpp */
                        break;
                }
                ti->piece_off = off;
                ti->piece_len = (uint32_t) k;
                off += (uint32_t) k;
        }
        return 0;
}

static int cmp_special(const void *a, const void *b, void *userdata) {
        const Tokenizer *t = userdata;
        int32_t x = *(const int32_t *) a, y = *(const int32_t *) b;
        if (t->tokens[x].text_len != t->tokens[y].text_len)
                return t->tokens[x].text_len > t->tokens[y].text_len ? -1 : 1;
        return x < y ? -1 : x > y;
}

static int build_special(Tokenizer *t) {
        for (size_t i = 0; i < ELEMENTSOF(eog_texts); i++) {
                int32_t id = tokenizer_lookup(t, eog_texts[i], strlen(eog_texts[i]));
                if (id >= 0)
                        t->tokens[id].type = TOKEN_TYPE_CONTROL;
        }
        if (t->eom < 0)
                t->eom = tokenizer_lookup(t, "<|eom_id|>", strlen("<|eom_id|>"));
        for (size_t i = 0; t->eot < 0 && i < ELEMENTSOF(eot_texts); i++) {
                int32_t id = tokenizer_lookup(t, eot_texts[i], strlen(eot_texts[i]));
                if (id >= 0) {
                        t->eot = id;
                        t->tokens[id].type = TOKEN_TYPE_CONTROL;
                }
        }

        t->eog = calloc(t->n_tokens, 1);
        if (!t->eog)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(eog_texts); i++) {
                int32_t id = tokenizer_lookup(t, eog_texts[i], strlen(eog_texts[i]));
                if (id >= 0)
                        t->eog[id] = 1;
        }
        if (t->eos >= 0)
                t->eog[t->eos] = 1;
        if (t->eot >= 0)
                t->eog[t->eot] = 1;
        if (t->eom >= 0)
                t->eog[t->eom] = 1;

        for (uint32_t i = 0; i < t->n_tokens; i++) {
                uint8_t type = t->tokens[i].type;
                if ((type == TOKEN_TYPE_CONTROL || type == TOKEN_TYPE_USER_DEFINED || type == TOKEN_TYPE_UNKNOWN) &&
                    t->tokens[i].text_len > 0)
                        t->n_special++;
        }
        t->special = malloc(MAX(t->n_special, (size_t) 1) * sizeof *t->special);
        if (!t->special)
                return -ENOMEM;
        size_t k = 0;
        for (uint32_t i = 0; i < t->n_tokens; i++) {
                uint8_t type = t->tokens[i].type;
                if ((type == TOKEN_TYPE_CONTROL || type == TOKEN_TYPE_USER_DEFINED || type == TOKEN_TYPE_UNKNOWN) &&
                    t->tokens[i].text_len > 0)
                        t->special[k++] = (int32_t) i;
        }
        qsort_r(t->special, t->n_special, sizeof *t->special, cmp_special, t);
        return 0;
}

static void build_byte_tokens(Tokenizer *t) {
        for (int b = 0; b < 256; b++) {
                char s[8];
                int32_t id;

                if (t->model == TOKENIZER_MODEL_SPM) {
                        snprintf(s, sizeof s, "<0x%02X>", b);
                        id = tokenizer_lookup(t, s, 6);
                        if (id < 0) { /* llama.cpp's fallback: the byte as a one-byte token */
                                s[0] = (char) b;
                                id = tokenizer_lookup(t, s, 1);
                        }
                } else
                        id = tokenizer_lookup(t, s, utf8_encode(unicode_byte_to_cpt((uint8_t) b), s));
                t->byte_token[b] = id;
        }
}

int tokenizer_new_from_gguf(const GgufFile *f, Tokenizer **ret, char **ret_error) {
        _cleanup_(tokenizer_freep) Tokenizer *t = NULL;
        char buf[SHOW_MAX];
        const char *s;
        size_t len;
        int r;

        if (!f || !ret)
                return -EINVAL;

        t = calloc(1, sizeof *t);
        if (!t)
                return -ENOMEM;

        r = read_string(f, KEY_MODEL, &s, &len, ret_error);
        if (r == -ENOENT)
                return fail(ret_error, -EBADMSG, "%s is missing: the file has no tokenizer", KEY_MODEL);
        if (r < 0)
                return r;
        if (len == 5 && memcmp(s, "llama", 5) == 0)
                t->model = TOKENIZER_MODEL_SPM;
        else if (len == 4 && memcmp(s, "gpt2", 4) == 0)
                t->model = TOKENIZER_MODEL_BPE;
        else
                return fail(ret_error, -EOPNOTSUPP,
                            "%s is '%s'; only 'llama' (SentencePiece) and 'gpt2' (byte-level BPE) are supported",
                            KEY_MODEL, show(buf, s, len));

        bool default_add_bos = t->model == TOKENIZER_MODEL_SPM;
        r = read_string(f, KEY_PRE, &s, &len, ret_error);
        if (r < 0 && r != -ENOENT)
                return r;
        if (t->model == TOKENIZER_MODEL_SPM) {
                /* SentencePiece has no pre-tokenizer; llama.cpp ignores the key. */
                t->pre = PRE_TOKENIZER_NONE;
                t->pre_name = "default";
        } else if (r == -ENOENT) {
                /* Files from before the key existed are GPT-2's. */
                t->pre = PRE_TOKENIZER_GPT2;
                t->pre_name = "gpt-2";
        } else {
                const PreTokenizerName *p = NULL;
                for (size_t i = 0; !p && i < ELEMENTSOF(pre_tokenizers); i++)
                        if (strlen(pre_tokenizers[i].name) == len && memcmp(pre_tokenizers[i].name, s, len) == 0)
                                p = pre_tokenizers + i;
                if (!p)
                        return fail(ret_error, -EOPNOTSUPP,
                                    "%s is '%s', a pre-tokenizer that is not supported "
                                    "(supported: gpt-2, phi-2, llama3, llama-v3, llama-bpe, smaug-bpe, dbrx, qwen2, "
                                    "deepseek-r1-qwen, default)",
                                    KEY_PRE, show(buf, s, len));
                t->pre = p->pre;
                t->pre_name = p->name;
                t->ignore_merges = p->ignore_merges;
                default_add_bos = p->add_bos;
        }

        r = load_tokens(t, f, ret_error);
        if (r < 0)
                return r;
        if (t->model == TOKENIZER_MODEL_BPE) {
                r = load_merges(t, f, ret_error);
                if (r < 0)
                        return r;
        }

        /* llama.cpp's defaults for SentencePiece files that name no ids. */
        bool spm = t->model == TOKENIZER_MODEL_SPM;
        if ((r = read_id(f, "tokenizer.ggml.bos_token_id", t->n_tokens, spm ? 1 : -1, &t->bos, ret_error)) < 0 ||
            (r = read_id(f, "tokenizer.ggml.eos_token_id", t->n_tokens, spm ? 2 : -1, &t->eos, ret_error)) < 0 ||
            (r = read_id(f, "tokenizer.ggml.unknown_token_id", t->n_tokens, spm ? 0 : -1, &t->unk, ret_error)) < 0 ||
            (r = read_id(f, "tokenizer.ggml.padding_token_id", t->n_tokens, -1, &t->pad, ret_error)) < 0 ||
            (r = read_id(f, "tokenizer.ggml.eot_token_id", t->n_tokens, -1, &t->eot, ret_error)) < 0 ||
            (r = read_id(f, "tokenizer.ggml.eom_token_id", t->n_tokens, -1, &t->eom, ret_error)) < 0)
                return r;

        if ((r = read_bool(f, "tokenizer.ggml.add_bos_token", default_add_bos, &t->add_bos, ret_error)) < 0 ||
            (r = read_bool(f, "tokenizer.ggml.add_eos_token", false, &t->add_eos, ret_error)) < 0 ||
            (r = read_bool(f, "tokenizer.ggml.add_space_prefix", spm, &t->add_space_prefix, ret_error)) < 0)
                return r;
        if (!spm)
                t->add_space_prefix = false; /* only SentencePiece has the notion */
        if (t->add_bos && t->bos < 0)
                return fail(ret_error, -EBADMSG, "tokenizer.ggml.add_bos_token is set but there is no BOS token");
        if (t->add_eos && t->eos < 0)
                return fail(ret_error, -EBADMSG, "tokenizer.ggml.add_eos_token is set but there is no EOS token");

        r = build_special(t);
        if (r < 0)
                return r;
        r = build_pieces(t, ret_error); /* after build_special(), which may change types */
        if (r < 0)
                return r;
        build_byte_tokens(t);

        *ret = TAKE_PTR(t);
        return 0;
}

Tokenizer *tokenizer_free(Tokenizer *t) {
        if (!t)
                return NULL;
        free(t->tokens);
        free(t->text);
        free(t->pieces);
        free(t->map);
        free(t->merges);
        free(t->special);
        free(t->eog);
        free(t);
        return NULL;
}

/* ---- accessors ------------------------------------------------------------ */

const char *tokenizer_model_name(const Tokenizer *t) {
        return t->model == TOKENIZER_MODEL_SPM ? "llama" : "gpt2";
}

const char *tokenizer_pre_name(const Tokenizer *t) {
        return t->pre_name;
}

uint32_t tokenizer_n_vocab(const Tokenizer *t) {
        return t->n_tokens;
}

int32_t tokenizer_bos(const Tokenizer *t) {
        return t->bos;
}

int32_t tokenizer_eos(const Tokenizer *t) {
        return t->eos;
}

int32_t tokenizer_eot(const Tokenizer *t) {
        return t->eot;
}

int32_t tokenizer_unk(const Tokenizer *t) {
        return t->unk;
}

int32_t tokenizer_pad(const Tokenizer *t) {
        return t->pad;
}

bool tokenizer_add_bos(const Tokenizer *t) {
        return t->add_bos;
}

bool tokenizer_add_eos(const Tokenizer *t) {
        return t->add_eos;
}

static bool id_valid(const Tokenizer *t, int32_t id) {
        return id >= 0 && (uint32_t) id < t->n_tokens;
}

bool tokenizer_is_eog(const Tokenizer *t, int32_t id) {
        return id_valid(t, id) && t->eog[id];
}

const char *tokenizer_token_text(const Tokenizer *t, int32_t id, size_t *ret_len) {
        if (!id_valid(t, id))
                return NULL;
        if (ret_len)
                *ret_len = t->tokens[id].text_len;
        return token_text(t, id);
}

int tokenizer_token_type(const Tokenizer *t, int32_t id) {
        return id_valid(t, id) ? t->tokens[id].type : -EINVAL;
}

int32_t tokenizer_find_token(const Tokenizer *t, const char *text, size_t len) {
        return len > 0 ? tokenizer_lookup(t, text, len) : -1;
}

static bool renders_only_if_special(uint8_t type) {
        return type == TOKEN_TYPE_CONTROL || type == TOKEN_TYPE_UNKNOWN;
}

int tokenizer_token_piece(const Tokenizer *t, int32_t id, bool special, const char **ret, size_t *ret_len) {
        if (!id_valid(t, id))
                return -EINVAL;
        const TokenInfo *ti = t->tokens + id;
        *ret = t->pieces + ti->piece_off;
        *ret_len = !special && renders_only_if_special(ti->type) ? 0 : ti->piece_len;
        return 0;
}

/* ---- encoding ------------------------------------------------------------- */

/* A stretch of the input: raw text (id -1) or a special token found in it. */
typedef struct Fragment {
        size_t start, len;
        int32_t id;
} Fragment;

typedef struct Fragments {
        Fragment *f;
        size_t n, cap;
} Fragments;

static int fragments_push(Fragments *v, size_t start, size_t len, int32_t id) {
        if (v->n == v->cap) {
                size_t cap = MAX(v->cap * 2, (size_t) 16);
                Fragment *p = realloc(v->f, cap * sizeof *p);
                if (!p)
                        return -ENOMEM;
                v->f = p;
                v->cap = cap;
        }
        v->f[v->n++] = (Fragment) { start, len, id };
        return 0;
}

static void fragments_done(Fragments *v) {
        free(v->f);
        *v = (Fragments) {};
}

/*
 * llama.cpp's tokenizer_st_partition(): one pass per special token, longest
 * text first, each cutting every occurrence out of the raw fragments left by
 * the passes before. (Not leftmost-longest: with tokens "bcd" and "ab",
 * "abcd" gives "a" + bcd.) Control and unknown tokens only if parse_special.
 */
static int partition(const Tokenizer *t, const char *text, size_t len, bool parse_special, Fragments *ret) {
        _cleanup_(fragments_done) Fragments a = {}, b = {};
        int r;

        if (len == 0)
                return 0;
        r = fragments_push(&a, 0, len, -1);
        if (r < 0)
                return r;

        for (size_t s = 0; s < t->n_special; s++) {
                int32_t id = t->special[s];
                const TokenInfo *ti = t->tokens + id;
                const char *needle = token_text(t, id);
                bool found = false;

                if (!parse_special && renders_only_if_special(ti->type))
                        continue;

                b.n = 0;
                for (size_t i = 0; i < a.n; i++) {
                        Fragment fr = a.f[i];
                        if (fr.id >= 0 || fr.len < ti->text_len) {
                                r = fragments_push(&b, fr.start, fr.len, fr.id);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        size_t pos = fr.start, end = fr.start + fr.len;
                        for (;;) {
                                const char *m = memmem(text + pos, end - pos, needle, ti->text_len);
                                if (!m)
                                        break;
                                size_t at = (size_t) (m - text);
                                found = true;
                                if (at > pos && (r = fragments_push(&b, pos, at - pos, -1)) < 0)
                                        return r;
                                if ((r = fragments_push(&b, at, ti->text_len, id)) < 0)
                                        return r;
                                pos = at + ti->text_len;
                        }
                        if (pos < end && (r = fragments_push(&b, pos, end - pos, -1)) < 0)
                                return r;
                }
                if (found) {
                        Fragments tmp = a;
                        a = b;
                        b = tmp;
                }
        }
        *ret = a;
        a = (Fragments) {};
        return 0;
}

int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special,
                     int32_t **ret_ids, size_t *ret_n) {
        _cleanup_(idvec_done) IdVec out = {};
        _cleanup_(fragments_done) Fragments frags = {};
        int r;

        if (!t || (!text && len > 0) || !ret_ids || !ret_n)
                return -EINVAL;
        if (len > INT32_MAX)
                return -E2BIG;

        if (add_special && t->add_bos && (r = idvec_push(&out, t->bos)) < 0)
                return r;

        r = partition(t, text, len, parse_special, &frags);
        if (r < 0)
                return r;

        /* SentencePiece: the space prefix goes at the start and after every
         * special token, as llama.cpp does (is_prev_special). */
        bool after_special = true;
        for (size_t i = 0; i < frags.n; i++) {
                const Fragment *fr = frags.f + i;
                if (fr->id >= 0) {
                        r = idvec_push(&out, fr->id);
                        after_special = true;
                } else if (t->model == TOKENIZER_MODEL_SPM) {
                        r = spm_tokenize(t, text + fr->start, fr->len, t->add_space_prefix && after_special, &out);
                        after_special = false;
                } else
                        r = bpe_tokenize(t, text + fr->start, fr->len, &out);
                if (r < 0)
                        return r;
        }

        if (add_special && t->add_eos && (r = idvec_push(&out, t->eos)) < 0)
                return r;

        *ret_n = out.n;
        *ret_ids = TAKE_PTR(out.ids);
        return 0;
}

/* ---- decoding ------------------------------------------------------------- */

struct TokenDecoder {
        const Tokenizer *t;
        unsigned flags;
        bool strip_space;               /* the next text piece's leading space is the encoder's */
        uint8_t pending[4];             /* an incomplete UTF-8 sequence, held back */
        size_t n_pending;
};

static bool decoder_strips(const TokenDecoder *d) {
        return (d->flags & TOKENIZER_DECODE_STRIP_SPACE) && d->t->model == TOKENIZER_MODEL_SPM &&
               d->t->add_space_prefix;
}

int tokenizer_decoder_new(const Tokenizer *t, unsigned flags, TokenDecoder **ret) {
        TokenDecoder *d;

        if (!t || !ret)
                return -EINVAL;
        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        d->t = t;
        d->flags = flags;
        d->strip_space = decoder_strips(d);
        *ret = d;
        return 0;
}

TokenDecoder *tokenizer_decoder_free(TokenDecoder *d) {
        free(d);
        return NULL;
}

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */

/* Appends pending + s[0..n) to a new string, whole characters only; keeps an
 * incomplete tail in pending, replaces what can never be a character. */
static int decoder_emit(TokenDecoder *d, const char *s, size_t n, bool final, char **ret_text, size_t *ret_len) {
        size_t total = d->n_pending + n, k = 0;
        _cleanup_free_ uint8_t *in = malloc(total + 1);
        _cleanup_free_ char *out = malloc(total * 3 + 1); /* each byte may become U+FFFD */

        if (!in || !out)
                return -ENOMEM;
        memcpy(in, d->pending, d->n_pending);
        if (n > 0)
                memcpy(in + d->n_pending, s, n);
        d->n_pending = 0;

        for (size_t i = 0; i < total;) {
                uint32_t cp;
                int m = utf8_decode(in + i, total - i, &cp);
                if (m > 0) {
                        memcpy(out + k, in + i, (size_t) m);
                        k += (size_t) m;
                        i += (size_t) m;
                } else if (m == 0 && !final) {
                        /* a proper prefix of a character: at most 3 bytes */
                        d->n_pending = total - i;
                        memcpy(d->pending, in + i, d->n_pending);
                        break;
                } else {
                        memcpy(out + k, REPLACEMENT, 3);
                        k += 3;
                        i += m < 0 ? (size_t) -m : total - i;
                }
        }
        out[k] = 0;
        *ret_len = k;
        *ret_text = TAKE_PTR(out);
        return 0;
}

int tokenizer_decode_push(TokenDecoder *d, int32_t id, char **ret_text, size_t *ret_len) {
        const Tokenizer *t;
        const char *piece;
        size_t n;

        if (!d || !ret_text || !ret_len)
                return -EINVAL;
        t = d->t;
        if (tokenizer_token_piece(t, id, d->flags & TOKENIZER_DECODE_SPECIAL, &piece, &n) < 0)
                return -EINVAL;

        uint8_t type = t->tokens[id].type;
        if (type == TOKEN_TYPE_CONTROL || type == TOKEN_TYPE_UNKNOWN || type == TOKEN_TYPE_USER_DEFINED) {
                /* The encoder puts a space prefix after each of these. */
                int r = decoder_emit(d, piece, n, false, ret_text, ret_len);
                if (r < 0)
                        return r;
                d->strip_space = decoder_strips(d);
                return 0;
        }
        if (n > 0 && d->strip_space) {
                if (piece[0] == ' ') {
                        piece++;
                        n--;
                }
                d->strip_space = false;
        }
        return decoder_emit(d, piece, n, false, ret_text, ret_len);
}

int tokenizer_decode_flush(TokenDecoder *d, char **ret_text, size_t *ret_len) {
        int r;

        if (!d || !ret_text || !ret_len)
                return -EINVAL;
        r = decoder_emit(d, NULL, 0, true, ret_text, ret_len);
        if (r < 0)
                return r;
        d->strip_space = decoder_strips(d);
        return 0;
}

int tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t n, unsigned flags, char **ret_text,
                     size_t *ret_len) {
        _cleanup_(tokenizer_decoder_freep) TokenDecoder *d = NULL;
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, cap = 0;
        int r;

        if (!t || (!ids && n > 0) || !ret_text)
                return -EINVAL;
        r = tokenizer_decoder_new(t, flags, &d);
        if (r < 0)
                return r;

        for (size_t i = 0; i <= n; i++) {
                _cleanup_free_ char *s = NULL;
                size_t k;

                r = i < n ? tokenizer_decode_push(d, ids[i], &s, &k) : tokenizer_decode_flush(d, &s, &k);
                if (r < 0)
                        return r;
                if (len + k + 1 > cap) {
                        size_t c = MAX(cap * 2, len + k + 64);
                        char *p = realloc(buf, c);
                        if (!p)
                                return -ENOMEM;
                        buf = p;
                        cap = c;
                }
                memcpy(buf + len, s, k);
                len += k;
                buf[len] = 0;
        }
        if (ret_len)
                *ret_len = len;
        *ret_text = TAKE_PTR(buf);
        return 0;
}
