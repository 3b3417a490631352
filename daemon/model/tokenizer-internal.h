/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared by tokenizer.c (loading, special tokens, decoding), tokenizer-spm.c
 * and tokenizer-bpe.c (the two encoders). Not for use outside this module. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "tokenizer.h"

typedef enum TokenizerModel {
        TOKENIZER_MODEL_SPM,            /* "llama" */
        TOKENIZER_MODEL_BPE,            /* "gpt2" */
} TokenizerModel;

typedef enum PreTokenizer {
        PRE_TOKENIZER_NONE,             /* SentencePiece has none */
        PRE_TOKENIZER_GPT2,
        PRE_TOKENIZER_LLAMA3,
        PRE_TOKENIZER_QWEN2,
        PRE_TOKENIZER_DEFAULT,          /* llama.cpp's four-regex fallback for BPE */
} PreTokenizer;

typedef struct TokenInfo {
        uint32_t text_off, text_len;    /* into Tokenizer.text */
        uint32_t piece_off, piece_len;  /* into Tokenizer.pieces: what it decodes to */
        float score;
        uint8_t type;                   /* TokenType */
} TokenInfo;

/* A slot of the text -> id table. The tag (high hash bits) settles most
 * mismatches without touching the token's text. */
typedef struct MapSlot {
        int32_t id;                     /* -1 when the slot is free */
        uint32_t tag;
} MapSlot;

/* One merge of the BPE table, found by the ids of its two halves. */
typedef struct MergeSlot {
        uint64_t key;                   /* left << 32 | right; UINT64_MAX when the slot is free */
        uint32_t rank;                  /* index in tokenizer.ggml.merges: lower merges first */
        int32_t result;                 /* the id of left+right, -1 if not in the vocabulary */
} MergeSlot;

struct Tokenizer {
        TokenizerModel model;
        PreTokenizer pre;
        const char *pre_name;
        bool add_space_prefix;          /* SPM: prepend U+2581 to the text */
        bool ignore_merges;             /* BPE: a word that is a token is taken whole (llama3) */
        bool add_bos, add_eos;

        uint32_t n_tokens;
        TokenInfo *tokens;
        char *text;                     /* every token's text, each NUL-terminated */
        char *pieces;

        /* text -> id, open addressing */
        MapSlot *map;
        size_t map_mask;

        MergeSlot *merges;
        size_t merges_mask;
        size_t n_merges;

        /* SPM: the <0xNN> token of each byte; BPE: the token of the byte's
         * character in GPT-2's alphabet. -1 where the vocabulary has none. */
        int32_t byte_token[256];

        int32_t bos, eos, eot, eom, unk, pad;

        /* Control, user-defined and unknown tokens with non-empty text,
         * longest text first: what the special-token pass looks for. */
        int32_t *special;
        size_t n_special;
        uint8_t *eog;                   /* per id */
};

static inline const char *token_text(const Tokenizer *t, int32_t id) {
        return t->text + t->tokens[id].text_off;
}

int32_t tokenizer_lookup(const Tokenizer *t, const char *s, size_t n);
/* The merge of left and right, or NULL. */
const MergeSlot *tokenizer_find_merge(const Tokenizer *t, int32_t left, int32_t right);

/* A growing array of ids: what the encoders append to. */
typedef struct IdVec {
        int32_t *ids;
        size_t n, cap;
} IdVec;

int idvec_push(IdVec *v, int32_t id);

/* The work queue of both BPE flavours: the best adjacent pair first, ties to
 * the leftmost, as llama.cpp's std::priority_queue comparators order them. */
typedef struct Bigram {
        double prio;                    /* SPM: token score; BPE: -rank */
        uint32_t left, right;           /* symbol indices */
        uint32_t size;                  /* bytes of left+right when queued */
} Bigram;

typedef struct BigramHeap {
        Bigram *items;
        size_t n, cap;
} BigramHeap;

int bigram_heap_push(BigramHeap *h, const Bigram *b);
bool bigram_heap_pop(BigramHeap *h, Bigram *ret);
static inline void bigram_heap_done(BigramHeap *h) {
        free(h->items);
        *h = (BigramHeap) {};
}

/* The symbols being merged: a doubly linked list over an array. */
typedef struct Symbol {
        uint32_t start, n;              /* bytes of the text being tokenized */
        int32_t prev, next;             /* -1 at the ends */
        int32_t id;                     /* BPE: the symbol's token, -1 if none */
} Symbol;

/* Tokenizes one piece of text between special tokens. */
int spm_tokenize(const Tokenizer *t, const char *text, size_t len, bool space_prefix, IdVec *out);
int bpe_tokenize(const Tokenizer *t, const char *text, size_t len, IdVec *out);

/* Exposed for tests: splits text into the pre-tokenizer's words, returning
 * their byte lengths (which add up to len). */
int bpe_pre_tokenize(PreTokenizer pre, const char *text, size_t len, size_t **ret_lens, size_t *ret_n);
