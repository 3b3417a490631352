/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The bits of Unicode the tokenizers need: strict UTF-8 decoding, the
 * general-category classes and White_Space property that the pre-tokenizer
 * regexes test (\p{L}, \p{N}, \p{P}, \s), and GPT-2's byte <-> code point
 * alphabet. The tables are generated from Python's unicodedata by
 * tools/gen-unicode-data.py into unicode-data.c.
 */

#include <stddef.h>
#include <stdint.h>

/* Flags of a code point: exactly one category class, plus WHITESPACE. Keep in
 * sync with tools/gen-unicode-data.py. */
enum {
        UNICODE_LETTER = 1 << 0,        /* L*: \p{L} */
        UNICODE_NUMBER = 1 << 1,        /* N*: \p{N} */
        UNICODE_MARK = 1 << 2,          /* M*: \p{M} */
        UNICODE_PUNCT = 1 << 3,         /* P*: \p{P} */
        UNICODE_SYMBOL = 1 << 4,        /* S*: \p{S} */
        UNICODE_SEPARATOR = 1 << 5,     /* Z*: \p{Z} */
        UNICODE_CONTROL = 1 << 6,       /* Cc, Cf, Cs, Co */
        UNICODE_UNDEFINED = 1 << 7,     /* Cn, and anything past U+10FFFF */
        UNICODE_WHITESPACE = 1 << 8,    /* the White_Space property: \s */
};

typedef struct UnicodeRun {
        uint32_t first;
        uint16_t flags;
} UnicodeRun;

extern const char unicode_data_version[];
extern const uint16_t unicode_flags_latin1[256];
extern const UnicodeRun unicode_runs[];
extern const size_t unicode_n_runs;

uint16_t unicode_flags(uint32_t cp);

/*
 * Decodes the UTF-8 sequence at the start of s[0..len), len > 0, strictly
 * (no overlong forms, surrogates or code points past U+10FFFF). Returns:
 *   1..4  the length of a well-formed sequence, and its code point in *ret_cp;
 *   0     s is a proper prefix of a well-formed sequence (more bytes needed);
 *   -n    ill-formed: the first n bytes (1..3) are its maximal subpart, the
 *         unit that one U+FFFD replaces (Unicode 3.9, "best practice").
 */
int utf8_decode(const uint8_t *s, size_t len, uint32_t *ret_cp);

/* Writes cp (<= U+10FFFF) as UTF-8 into out, returns the length 1..4. */
size_t utf8_encode(uint32_t cp, char out[static 4]);

/*
 * GPT-2's byte-level alphabet: every byte is written as a printable code
 * point (bytes_to_unicode() in OpenAI's encoder.py), so byte-level BPE
 * vocabularies hold text like "Ġthe" for " the".
 */
uint32_t unicode_byte_to_cpt(uint8_t b);
/* The byte written as cp, or -1 if cp is not in the alphabet. */
int unicode_cpt_to_byte(uint32_t cp);
