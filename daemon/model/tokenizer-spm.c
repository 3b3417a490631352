/* SPDX-License-Identifier: MIT */
/*
 * SentencePiece BPE as llama.cpp runs it (llm_tokenizer_spm_session): start
 * from one symbol per UTF-8 character, repeatedly merge the adjacent pair
 * whose concatenation is the highest-scoring vocabulary entry (ties: the
 * leftmost), then emit each remaining symbol's token, or its bytes' <0xNN>
 * tokens when the symbol is not in the vocabulary.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "tokenizer-internal.h"
#include "unicode.h"

#define SPM_SPACE "\xe2\x96\x81" /* U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's space */

static int try_add_bigram(const Tokenizer *t, const char *buf, const Symbol *sym, int32_t left, int32_t right,
                          BigramHeap *heap) {
        if (left < 0 || right < 0)
                return 0;

        /* Adjacent symbols are adjacent in buf: no copy needed. */
        size_t n = sym[left].n + sym[right].n;
        int32_t id = tokenizer_lookup(t, buf + sym[left].start, n);
        if (id < 0)
                return 0;

        Bigram b = {
                .prio = t->tokens[id].score,
                .left = (uint32_t) left,
                .right = (uint32_t) right,
                .size = (uint32_t) n,
        };
        return bigram_heap_push(heap, &b);
}

static int emit_bytes(const Tokenizer *t, const char *s, size_t n, IdVec *out) {
        for (size_t i = 0; i < n; i++) {
                int32_t id = t->byte_token[(uint8_t) s[i]];
                if (id < 0)
                        id = t->unk;
                if (id < 0)
                        continue; /* nothing can stand for it: dropped, as there is no way to say it */
                int r = idvec_push(out, id);
                if (r < 0)
                        return r;
        }
        return 0;
}

int spm_tokenize(const Tokenizer *t, const char *text, size_t len, bool space_prefix, IdVec *out) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_free_ Symbol *sym = NULL;
        _cleanup_(bigram_heap_done) BigramHeap heap = {};
        size_t n_spaces = 0, n = 0, n_sym = 0;
        int r;

        for (size_t i = 0; i < len; i++)
                n_spaces += text[i] == ' ';
        size_t buf_len = len + 2 * n_spaces + (space_prefix ? 3 : 0);
        if (buf_len > INT32_MAX)
                return -E2BIG;
        if (buf_len == 0)
                return 0;

        buf = malloc(buf_len);
        if (!buf)
                return -ENOMEM;
        if (space_prefix) {
                memcpy(buf, SPM_SPACE, 3);
                n = 3;
        }
        for (size_t i = 0; i < len; i++) {
                if (text[i] == ' ') {
                        memcpy(buf + n, SPM_SPACE, 3);
                        n += 3;
                } else
                        buf[n++] = text[i];
        }

        /* At most one symbol per byte. Ill-formed UTF-8 gets one symbol per
         * maximal subpart, which no token matches, so it falls back to its
         * bytes. */
        sym = malloc(buf_len * sizeof *sym);
        if (!sym)
                return -ENOMEM;
        for (size_t off = 0; off < buf_len;) {
                uint32_t cp;
                int k = utf8_decode((const uint8_t *) buf + off, buf_len - off, &cp);
                size_t step = k > 0 ? (size_t) k : k < 0 ? (size_t) -k : buf_len - off;
                sym[n_sym] = (Symbol) {
                        .start = (uint32_t) off,
                        .n = (uint32_t) step,
                        .prev = (int32_t) n_sym - 1,
                        .next = off + step == buf_len ? -1 : (int32_t) n_sym + 1,
                        .id = -1,
                };
                n_sym++;
                off += step;
        }

        for (size_t i = 1; i < n_sym; i++) {
                r = try_add_bigram(t, buf, sym, (int32_t) i - 1, (int32_t) i, &heap);
                if (r < 0)
                        return r;
        }

        Bigram b;
        while (bigram_heap_pop(&heap, &b)) {
                Symbol *l = sym + b.left, *rs = sym + b.right;

                /* Stale: one side was merged away or grew since it was queued. */
                if (l->n == 0 || rs->n == 0 || l->n + rs->n != b.size)
                        continue;

                l->n += rs->n;
                rs->n = 0;
                l->next = rs->next;
                if (rs->next >= 0)
                        sym[rs->next].prev = (int32_t) b.left;

                r = try_add_bigram(t, buf, sym, l->prev, (int32_t) b.left, &heap);
                if (r < 0)
                        return r;
                r = try_add_bigram(t, buf, sym, (int32_t) b.left, l->next, &heap);
                if (r < 0)
                        return r;
        }

        /* Every merged symbol is a token (only tokens are queued); single
         * characters may not be, and go out as bytes. */
        for (int32_t i = 0; i != -1; i = sym[i].next) {
                int32_t id = tokenizer_lookup(t, buf + sym[i].start, sym[i].n);
                r = id >= 0 ? idvec_push(out, id) : emit_bytes(t, buf + sym[i].start, sym[i].n, out);
                if (r < 0)
                        return r;
        }
        return 0;
}
