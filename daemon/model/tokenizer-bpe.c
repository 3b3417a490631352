/* SPDX-License-Identifier: MIT */
/*
 * Byte-level BPE (GPT-2 and its descendants): a pre-tokenizer splits the text
 * into words with a regex, and each word, its bytes written in GPT-2's byte
 * alphabet, is merged pair by pair, lowest merge rank first (ties: leftmost),
 * as llama.cpp's llm_tokenizer_bpe_session does.
 *
 * The regexes are matched by hand, one function per regex, each trying the
 * alternatives in the regex's order at the current position, so the words are
 * those of a backtracking regex engine (Oniguruma in Hugging Face's
 * tokenizers) without needing one:
 *
 * gpt-2:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *         ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * qwen2:  llama3's with \p{N} instead of \p{N}{1,3}
 *
 * Text is split into units: one per well-formed UTF-8 character, and one per
 * maximal ill-formed subpart, which counts as a symbol ([^\s\p{L}\p{N}], like
 * the U+FFFD llama.cpp substitutes) but keeps its bytes, so they still reach
 * the byte alphabet and decode back unchanged.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "tokenizer-internal.h"
#include "unicode.h"

#define UNIT_INVALID UINT32_MAX

typedef struct Units {
        uint32_t *cp;                   /* code point, UNIT_INVALID for an ill-formed subpart */
        uint16_t *flags;
        uint32_t *off;                  /* byte offset of each unit, and off[n] = length */
        size_t n;
} Units;

static void units_done(Units *u) {
        free(u->cp);
        free(u->flags);
        free(u->off);
        *u = (Units) {};
}

static int units_from_utf8(const char *text, size_t len, Units *ret) {
        _cleanup_(units_done) Units u = {};

        u.cp = malloc((len + 1) * sizeof *u.cp);
        u.flags = malloc((len + 1) * sizeof *u.flags);
        u.off = malloc((len + 1) * sizeof *u.off);
        if (!u.cp || !u.flags || !u.off)
                return -ENOMEM;

        for (size_t off = 0; off < len;) {
                uint32_t cp;
                int k = utf8_decode((const uint8_t *) text + off, len - off, &cp);
                size_t step = k > 0 ? (size_t) k : k < 0 ? (size_t) -k : len - off;
                u.cp[u.n] = k > 0 ? cp : UNIT_INVALID;
                u.flags[u.n] = k > 0 ? unicode_flags(cp) : UNICODE_SYMBOL;
                u.off[u.n] = (uint32_t) off;
                u.n++;
                off += step;
        }
        u.off[u.n] = (uint32_t) len;
        *ret = u;
        u = (Units) {};
        return 0;
}

/* Tests at i < end; past the end nothing matches, which is what makes
 * (?!\S) succeed there. */
static bool is_letter(const Units *u, size_t i, size_t end) {
        return i < end && (u->flags[i] & UNICODE_LETTER);
}

static bool is_number(const Units *u, size_t i, size_t end) {
        return i < end && (u->flags[i] & UNICODE_NUMBER);
}

static bool is_space(const Units *u, size_t i, size_t end) {
        return i < end && (u->flags[i] & UNICODE_WHITESPACE);
}

/* [^\s\p{L}\p{N}] */
static bool is_other(const Units *u, size_t i, size_t end) {
        return i < end && !(u->flags[i] & (UNICODE_WHITESPACE | UNICODE_LETTER | UNICODE_NUMBER));
}

static bool is_cr_lf(const Units *u, size_t i, size_t end) {
        return i < end && (u->cp[i] == '\r' || u->cp[i] == '\n');
}

static uint32_t cp_at(const Units *u, size_t i, size_t end) {
        return i < end ? u->cp[i] : UNIT_INVALID;
}

static size_t run(const Units *u, size_t i, size_t end, bool (*pred)(const Units *, size_t, size_t)) {
        size_t k = i;
        while (pred(u, k, end))
                k++;
        return k - i;
}

static uint32_t ascii_lower(uint32_t c) {
        return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* 's|'t|'re|'ve|'m|'ll|'d, ASCII case-insensitive if asked: the length, or 0. */
static size_t match_contraction(const Units *u, size_t pos, size_t end, bool icase) {
        if (cp_at(u, pos, end) != '\'')
                return 0;
        uint32_t a = cp_at(u, pos + 1, end), b = cp_at(u, pos + 2, end);
        if (icase) {
                a = ascii_lower(a);
                b = ascii_lower(b);
        }
        if (a == 's' || a == 't' || a == 'm' || a == 'd')
                return 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
                return 3;
        return 0;
}

/* \s+(?!\S)|\s+ at a run of n >= 1 whitespace units: the run, but if a
 * non-space follows and the run is longer than one, all but its last unit,
 * which then goes with the word after it. */
static size_t match_space_run(size_t pos, size_t n, size_t end) {
        if (n > 1 && pos + n < end)
                return n - 1;
        return n;
}

static size_t match_gpt2(const Units *u, size_t pos, size_t end) {
        size_t k = match_contraction(u, pos, end, false);
        if (k > 0)
                return k;

        /* ' ?' then \p{L}+, \p{N}+ or [^\s\p{L}\p{N}]+, in that order */
        size_t p = pos + (cp_at(u, pos, end) == ' ');
        if (is_letter(u, p, end))
                return p - pos + run(u, p, end, is_letter);
        if (is_number(u, p, end))
                return p - pos + run(u, p, end, is_number);
        if (is_other(u, p, end))
                return p - pos + run(u, p, end, is_other);

        /* Here the unit at pos is whitespace (a lone ' ' at the end included). */
        return match_space_run(pos, run(u, pos, end, is_space), end);
}

static size_t match_llama3(const Units *u, size_t pos, size_t end, size_t max_digits) {
        size_t k = match_contraction(u, pos, end, true);
        if (k > 0)
                return k;

        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (is_letter(u, pos, end))
                return run(u, pos, end, is_letter);
        if (!is_cr_lf(u, pos, end) && !is_number(u, pos, end) && is_letter(u, pos + 1, end))
                return 1 + run(u, pos + 1, end, is_letter);

        /* \p{N}{1,3} (or \p{N}) */
        if (is_number(u, pos, end))
                return MIN(run(u, pos, end, is_number), max_digits);

        /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
        size_t p = pos + (cp_at(u, pos, end) == ' ');
        if (is_other(u, p, end)) {
                p += run(u, p, end, is_other);
                return p - pos + run(u, p, end, is_cr_lf);
        }

        /* Whitespace. \s*[\r\n]+ backtracks to end right after the run's
         * last \r or \n, if it has one. */
        size_t n = run(u, pos, end, is_space), last_cr_lf = 0;
        for (size_t i = 0; i < n; i++)
                if (is_cr_lf(u, pos + i, end))
                        last_cr_lf = i + 1;
        if (last_cr_lf > 0)
                return last_cr_lf;
        return match_space_run(pos, n, end);
}

/* llama.cpp's fallback for BPE vocabularies that name no known pre-tokenizer
 * ("default"): four regexes applied one after the other, each splitting the
 * pieces the previous one left, unmatched stretches staying pieces of their
 * own. */
static size_t match_default_punct(const Units *u, size_t pos, size_t end) {
        size_t k = pos;
        /* [\p{P}\$\+<=>\^~\|]+ */
        while (k < end && ((u->flags[k] & UNICODE_PUNCT) || (u->cp[k] > 0 && u->cp[k] < 128 &&
                                                             strchr("$+<=>^~|", (int) u->cp[k]))))
                k++;
        return k - pos;
}

static size_t match_numbers(const Units *u, size_t pos, size_t end) {
        return run(u, pos, end, is_number);
}

static size_t match_three_digits(const Units *u, size_t pos, size_t end) {
        for (size_t i = 0; i < 3; i++) {
                uint32_t c = cp_at(u, pos + i, end);
                if (c < '0' || c > '9')
                        return 0;
        }
        return 3;
}

typedef enum Pass {
        PASS_GPT2,
        PASS_LLAMA3,
        PASS_QWEN2,
        PASS_DEFAULT_PUNCT,
        PASS_NUMBERS,
        PASS_THREE_DIGITS,
} Pass;

static size_t match(Pass pass, const Units *u, size_t pos, size_t end) {
        switch (pass) {
        case PASS_GPT2:
                return match_gpt2(u, pos, end);
        case PASS_LLAMA3:
                return match_llama3(u, pos, end, 3);
        case PASS_QWEN2:
                return match_llama3(u, pos, end, 1);
        case PASS_DEFAULT_PUNCT:
                return match_default_punct(u, pos, end);
        case PASS_NUMBERS:
                return match_numbers(u, pos, end);
        case PASS_THREE_DIGITS:
                return match_three_digits(u, pos, end);
        }
        abort();
}

/* Word boundaries, as unit indices: word i is [bounds[i], bounds[i + 1]). */
typedef struct Bounds {
        size_t *at;
        size_t n, cap;
} Bounds;

static int bounds_push(Bounds *b, size_t at) {
        if (b->n == b->cap) {
                size_t cap = MAX(b->cap * 2, (size_t) 64);
                size_t *p = realloc(b->at, cap * sizeof *p);
                if (!p)
                        return -ENOMEM;
                b->at = p;
                b->cap = cap;
        }
        b->at[b->n++] = at;
        return 0;
}

static void bounds_done(Bounds *b) {
        free(b->at);
        *b = (Bounds) {};
}

/* Splits every piece of in with pass: matches and the stretches between them
 * become pieces. */
static int split_pass(Pass pass, const Units *u, const Bounds *in, Bounds *out) {
        int r;

        out->n = 0;
        r = bounds_push(out, 0);
        if (r < 0)
                return r;
        for (size_t w = 0; w + 1 < in->n; w++) {
                size_t end = in->at[w + 1];
                for (size_t pos = in->at[w]; pos < end;) {
                        size_t k = match(pass, u, pos, end);
                        if (k == 0) {
                                pos++;
                                continue;
                        }
                        if (pos != out->at[out->n - 1]) {
                                r = bounds_push(out, pos);
                                if (r < 0)
                                        return r;
                        }
                        pos += k;
                        r = bounds_push(out, pos);
                        if (r < 0)
                                return r;
                }
                if (end != out->at[out->n - 1]) {
                        r = bounds_push(out, end);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int pre_tokenize(PreTokenizer pre, const Units *u, Bounds *ret) {
        static const Pass gpt2[] = { PASS_GPT2 }, llama3[] = { PASS_LLAMA3 }, qwen2[] = { PASS_QWEN2 },
                          fallback[] = { PASS_DEFAULT_PUNCT, PASS_GPT2, PASS_NUMBERS, PASS_THREE_DIGITS };
        _cleanup_(bounds_done) Bounds a = {}, b = {};
        const Pass *passes;
        size_t n_passes;
        int r;

        switch (pre) {
        case PRE_TOKENIZER_GPT2:
                passes = gpt2, n_passes = ELEMENTSOF(gpt2);
                break;
        case PRE_TOKENIZER_LLAMA3:
                passes = llama3, n_passes = ELEMENTSOF(llama3);
                break;
        case PRE_TOKENIZER_QWEN2:
                passes = qwen2, n_passes = ELEMENTSOF(qwen2);
                break;
        case PRE_TOKENIZER_DEFAULT:
                passes = fallback, n_passes = ELEMENTSOF(fallback);
                break;
        default:
                return -EINVAL;
        }

        r = bounds_push(&a, 0);
        if (r < 0)
                return r;
        if (u->n > 0) {
                r = bounds_push(&a, u->n);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < n_passes; i++) {
                r = split_pass(passes[i], u, &a, &b);
                if (r < 0)
                        return r;
                Bounds tmp = a;
                a = b;
                b = tmp;
        }
        *ret = a;
        a = (Bounds) {};
        return 0;
}

int bpe_pre_tokenize(PreTokenizer pre, const char *text, size_t len, size_t **ret_lens, size_t *ret_n) {
        _cleanup_(units_done) Units u = {};
        _cleanup_(bounds_done) Bounds b = {};
        int r;

        if (len > INT32_MAX)
                return -E2BIG;
        r = units_from_utf8(text, len, &u);
        if (r < 0)
                return r;
        r = pre_tokenize(pre, &u, &b);
        if (r < 0)
                return r;

        size_t n = b.n > 0 ? b.n - 1 : 0;
        size_t *lens = malloc(MAX(n, (size_t) 1) * sizeof *lens);
        if (!lens)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                lens[i] = u.off[b.at[i + 1]] - u.off[b.at[i]];
        *ret_lens = lens;
        *ret_n = n;
        return 0;
}

/* ---- merging ------------------------------------------------------------ */

static int try_add_bigram(const Tokenizer *t, const Symbol *sym, int32_t left, int32_t right, BigramHeap *heap) {
        if (left < 0 || right < 0 || sym[left].id < 0 || sym[right].id < 0)
                return 0;

        const MergeSlot *m = tokenizer_find_merge(t, sym[left].id, sym[right].id);
        if (!m)
                return 0;

        Bigram b = {
                .prio = -(double) m->rank,
                .left = (uint32_t) left,
                .right = (uint32_t) right,
                .size = sym[left].n + sym[right].n,
        };
        return bigram_heap_push(heap, &b);
}

typedef struct BpeScratch {
        Symbol *sym;
        char *mapped;                   /* a word in GPT-2's alphabet: up to 2 bytes per byte */
        BigramHeap heap;
} BpeScratch;

static void bpe_scratch_done(BpeScratch *s) {
        free(s->sym);
        free(s->mapped);
        bigram_heap_done(&s->heap);
}

static int bpe_word(const Tokenizer *t, const uint8_t *w, size_t n, BpeScratch *s, IdVec *out) {
        Symbol *sym = s->sym;
        int r;

        if (t->ignore_merges) {
                size_t k = 0;
                for (size_t i = 0; i < n; i++)
                        k += utf8_encode(unicode_byte_to_cpt(w[i]), s->mapped + k);
                int32_t id = tokenizer_lookup(t, s->mapped, k);
                if (id >= 0)
                        return idvec_push(out, id);
        }

        /* One symbol per byte: each is one character of the byte alphabet. */
        for (size_t i = 0; i < n; i++)
                sym[i] = (Symbol) {
                        .start = (uint32_t) i,
                        .n = 1,
                        .prev = (int32_t) i - 1,
                        .next = i + 1 < n ? (int32_t) i + 1 : -1,
                        .id = t->byte_token[w[i]],
                };

        s->heap.n = 0;
        for (size_t i = 1; i < n; i++) {
                r = try_add_bigram(t, sym, (int32_t) i - 1, (int32_t) i, &s->heap);
                if (r < 0)
                        return r;
        }

        Bigram b;
        while (bigram_heap_pop(&s->heap, &b)) {
                Symbol *l = sym + b.left, *rs = sym + b.right;

                /* Stale: one side was merged away or grew since it was queued. */
                if (l->n == 0 || rs->n == 0 || l->n + rs->n != b.size)
                        continue;

                const MergeSlot *m = tokenizer_find_merge(t, l->id, rs->id);
                l->id = m ? m->result : -1;
                l->n += rs->n;
                rs->n = 0;
                l->next = rs->next;
                if (rs->next >= 0)
                        sym[rs->next].prev = (int32_t) b.left;

                r = try_add_bigram(t, sym, l->prev, (int32_t) b.left, &s->heap);
                if (r < 0)
                        return r;
                r = try_add_bigram(t, sym, (int32_t) b.left, l->next, &s->heap);
                if (r < 0)
                        return r;
        }

        for (int32_t i = 0; n > 0 && i != -1; i = sym[i].next) {
                if (sym[i].id >= 0) {
                        r = idvec_push(out, sym[i].id);
                        if (r < 0)
                                return r;
                        continue;
                }
                /* A merge whose result is not in the vocabulary, or a byte
                 * the vocabulary lacks: the bytes one by one. */
                for (uint32_t j = sym[i].start; j < sym[i].start + sym[i].n; j++) {
                        int32_t id = t->byte_token[w[j]] >= 0 ? t->byte_token[w[j]] : t->unk;
                        if (id < 0)
                                continue;
                        r = idvec_push(out, id);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int bpe_tokenize(const Tokenizer *t, const char *text, size_t len, IdVec *out) {
        _cleanup_(units_done) Units u = {};
        _cleanup_(bounds_done) Bounds b = {};
        _cleanup_(bpe_scratch_done) BpeScratch s = {};
        int r;

        if (len > INT32_MAX)
                return -E2BIG;
        if (len == 0)
                return 0;

        r = units_from_utf8(text, len, &u);
        if (r < 0)
                return r;
        r = pre_tokenize(t->pre, &u, &b);
        if (r < 0)
                return r;

        size_t longest = 0;
        for (size_t i = 0; i + 1 < b.n; i++)
                longest = MAX(longest, (size_t) (u.off[b.at[i + 1]] - u.off[b.at[i]]));
        s.sym = malloc(MAX(longest, (size_t) 1) * sizeof *s.sym);
        s.mapped = malloc(MAX(longest, (size_t) 1) * 2);
        if (!s.sym || !s.mapped)
                return -ENOMEM;

        for (size_t i = 0; i + 1 < b.n; i++) {
                size_t start = u.off[b.at[i]], end = u.off[b.at[i + 1]];
                r = bpe_word(t, (const uint8_t *) text + start, end - start, &s, out);
                if (r < 0)
                        return r;
        }
        return 0;
}
