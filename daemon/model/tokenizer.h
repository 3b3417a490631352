/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Tokenizers built from a GGUF file's tokenizer.ggml.* metadata, giving the
 * same ids as llama.cpp (and so as the Hugging Face tokenizers its test
 * vectors come from):
 *
 *   - "llama": SentencePiece BPE. Spaces become U+2581, one is prepended to
 *     the text (and after every special token), then adjacent symbols are
 *     merged by the highest-scoring vocabulary entry; characters without a
 *     token fall back to the <0xNN> byte tokens.
 *   - "gpt2": byte-level BPE. The text is split into words by the
 *     pre-tokenizer named in tokenizer.ggml.pre (a hand-written matcher per
 *     regex), each word's bytes are written in GPT-2's byte alphabet and
 *     merged by rank from tokenizer.ggml.merges.
 *
 * Everything read from the file is validated when the tokenizer is built;
 * encoding and decoding never fail on any input bytes (invalid UTF-8
 * included), only on memory.
 *
 * A Tokenizer is immutable once built: any number of threads may encode and
 * decode with it at the same time. It keeps no pointer into the GgufFile.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct Tokenizer Tokenizer;
typedef struct TokenDecoder TokenDecoder;

/* tokenizer.ggml.token_type values. */
typedef enum TokenType {
        TOKEN_TYPE_UNDEFINED = 0,
        TOKEN_TYPE_NORMAL = 1,
        TOKEN_TYPE_UNKNOWN = 2,
        TOKEN_TYPE_CONTROL = 3,
        TOKEN_TYPE_USER_DEFINED = 4,
        TOKEN_TYPE_UNUSED = 5,
        TOKEN_TYPE_BYTE = 6,
        TOKEN_TYPE__MAX,
} TokenType;

/* Vocabularies are limited to this many tokens (ids fit an int32_t with room). */
#define TOKENIZER_MAX_TOKENS (1u << 24)

/*
 * Builds the tokenizer of f. On failure returns -EBADMSG for missing or
 * malformed metadata (an array of the wrong type or length, an id out of
 * range, a merge naming an unknown token), -EOPNOTSUPP for a tokenizer model
 * or pre-tokenizer this code does not implement, -ENOMEM; and, if ret_error
 * is not NULL, a message that names the key and what is wrong with it (free()
 * it). f may be freed as soon as this returns.
 */
int tokenizer_new_from_gguf(const GgufFile *f, Tokenizer **ret, char **ret_error);
Tokenizer *tokenizer_free(Tokenizer *t);
static inline void tokenizer_freep(Tokenizer **t) {
        if (*t)
                tokenizer_free(*t);
}

/* "llama" or "gpt2"; the pre-tokenizer's name ("gpt-2", "llama3", "qwen2", ...,
 * "default"). */
const char *tokenizer_model_name(const Tokenizer *t);
const char *tokenizer_pre_name(const Tokenizer *t);

uint32_t tokenizer_n_vocab(const Tokenizer *t);
/* The special ids, or -1 where the model has none. */
int32_t tokenizer_bos(const Tokenizer *t);
int32_t tokenizer_eos(const Tokenizer *t);
int32_t tokenizer_eot(const Tokenizer *t);
int32_t tokenizer_unk(const Tokenizer *t);
int32_t tokenizer_pad(const Tokenizer *t);
/* Whether encoding with add_special prepends BOS and appends EOS. */
bool tokenizer_add_bos(const Tokenizer *t);
bool tokenizer_add_eos(const Tokenizer *t);

/*
 * End of generation: EOS, EOT, EOM, and the tokens llama.cpp recognises by
 * their text ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>",
 * ...); those are treated as control tokens whatever the file says, as
 * llama.cpp does. False for ids out of range.
 */
bool tokenizer_is_eog(const Tokenizer *t, int32_t id);

/* The token's text as stored in the vocabulary ("▁the", "Ġthe", "<0x0A>",
 * "<|im_end|>"), NUL-terminated; its length in *ret_len if not NULL. NULL for
 * ids out of range. Lives as long as t. */
const char *tokenizer_token_text(const Tokenizer *t, int32_t id, size_t *ret_len);
/* TOKEN_TYPE_*, or -EINVAL for ids out of range. */
int tokenizer_token_type(const Tokenizer *t, int32_t id);
/* The id of the token whose text is exactly text[0..len), or -1. */
int32_t tokenizer_find_token(const Tokenizer *t, const char *text, size_t len);

/*
 * Tokenizes text[0..len) (any bytes; need not be NUL-terminated).
 *
 * add_special: prepend BOS and append EOS where the model asks for them
 * (tokenizer.ggml.add_bos_token / add_eos_token).
 *
 * parse_special: occurrences of control-token texts ("<|im_start|>", "<s>")
 * in the text become those tokens, longest token text first, and the text
 * between them is tokenized on its own. When false they are ordinary text.
 * User-defined tokens are always matched this way, as Hugging Face's
 * tokenizers (and llama.cpp) do with added tokens that are not special.
 *
 * Returns 0 and a malloc()ed array (NULL when empty) of *ret_n ids, or
 * -ENOMEM, or -E2BIG when len exceeds INT32_MAX.
 */
int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special,
                     int32_t **ret_ids, size_t *ret_n);

/* ---- decoding ----------------------------------------------------------- */

typedef enum TokenizerDecodeFlags {
        /* Render control and unknown tokens as their text ("<|im_end|>");
         * without this they render as nothing. */
        TOKENIZER_DECODE_SPECIAL = 1 << 0,
        /* SentencePiece vocabularies with a space prefix: drop the leading
         * space of the first piece of the stream and of the first piece after
         * a BOS, control or user-defined token, i.e. the space the encoder
         * added there, so decode(encode(text)) == text. Leave it out when
         * decoding a continuation (generated tokens after a prompt), where
         * the space is real. Ignored for other vocabularies. */
        TOKENIZER_DECODE_STRIP_SPACE = 1 << 1,
} TokenizerDecodeFlags;

/*
 * The bytes one token stands for, without regard to UTF-8 boundaries (a byte
 * token is one byte of a character): "▁the" -> " the", "Ġthe" -> " the",
 * "<0xE2>" -> "\xe2". Control and unknown tokens give their text if special
 * is true and "" otherwise; unused and undefined tokens give "". Returns 0,
 * or -EINVAL for ids out of range. The bytes live as long as t.
 */
int tokenizer_token_piece(const Tokenizer *t, int32_t id, bool special, const char **ret, size_t *ret_len);

/*
 * Streaming detokenizer: feed ids one at a time, get text back as soon as it
 * forms whole UTF-8 characters. A character split over several tokens (byte
 * fallback, BPE byte pieces) is held back until complete; bytes that can
 * never form a character come out as U+FFFD, so everything returned is valid
 * UTF-8. Ids out of range are -EINVAL and change nothing.
 *
 * tokenizer_decode_push() and tokenizer_decode_flush() return 0 and a
 * malloc()ed NUL-terminated string (possibly "") and its length; free() it.
 * flush returns whatever was held back (as U+FFFD) and resets the decoder for
 * a new stream.
 */
int tokenizer_decoder_new(const Tokenizer *t, unsigned flags, TokenDecoder **ret);
TokenDecoder *tokenizer_decoder_free(TokenDecoder *d);
static inline void tokenizer_decoder_freep(TokenDecoder **d) {
        if (*d)
                tokenizer_decoder_free(*d);
}
int tokenizer_decode_push(TokenDecoder *d, int32_t id, char **ret_text, size_t *ret_len);
int tokenizer_decode_flush(TokenDecoder *d, char **ret_text, size_t *ret_len);

/* All of ids at once, through a decoder with flags and a final flush. */
int tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t n, unsigned flags, char **ret_text,
                     size_t *ret_len);
