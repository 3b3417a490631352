/* SPDX-License-Identifier: MIT */
#include <stdbool.h>

#include "unicode.h"

uint16_t unicode_flags(uint32_t cp) {
        size_t lo = 0, hi = unicode_n_runs;

        if (cp < 256)
                return unicode_flags_latin1[cp];
        if (cp > 0x10FFFF)
                return UNICODE_UNDEFINED;

        /* The last run that starts at or before cp; runs[0] starts at 0. */
        while (hi - lo > 1) {
                size_t mid = lo + (hi - lo) / 2;
                if (unicode_runs[mid].first <= cp)
                        lo = mid;
                else
                        hi = mid;
        }
        return unicode_runs[lo].flags;
}

int utf8_decode(const uint8_t *s, size_t len, uint32_t *ret_cp) {
        uint8_t b = s[0], lo = 0x80, hi = 0xBF;
        uint32_t cp;
        int n;

        if (b < 0x80) {
                *ret_cp = b;
                return 1;
        }
        /* Table 3-7 of the Unicode standard: the second byte's range is what
         * rules out overlong forms, surrogates and values past U+10FFFF. */
        if (b >= 0xC2 && b <= 0xDF) {
                n = 2;
                cp = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
                n = 3;
                cp = b & 0x0F;
                if (b == 0xE0)
                        lo = 0xA0;
                else if (b == 0xED)
                        hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
                n = 4;
                cp = b & 0x07;
                if (b == 0xF0)
                        lo = 0x90;
                else if (b == 0xF4)
                        hi = 0x8F;
        } else
                return -1;

        for (int i = 1; i < n; i++) {
                if ((size_t) i >= len)
                        return 0;
                if (s[i] < lo || s[i] > hi)
                        return -i;
                cp = (cp << 6) | (s[i] & 0x3F);
                lo = 0x80;
                hi = 0xBF;
        }
        *ret_cp = cp;
        return n;
}

size_t utf8_encode(uint32_t cp, char out[static 4]) {
        if (cp < 0x80) {
                out[0] = (char) cp;
                return 1;
        }
        if (cp < 0x800) {
                out[0] = (char) (0xC0 | (cp >> 6));
                out[1] = (char) (0x80 | (cp & 0x3F));
                return 2;
        }
        if (cp < 0x10000) {
                out[0] = (char) (0xE0 | (cp >> 12));
                out[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
                out[2] = (char) (0x80 | (cp & 0x3F));
                return 3;
        }
        out[0] = (char) (0xF0 | (cp >> 18));
        out[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
        out[3] = (char) (0x80 | (cp & 0x3F));
        return 4;
}

/* Bytes that are printable in Latin-1 stand for themselves; the 68 others
 * (0x00..0x20, 0x7F..0xA0, 0xAD) take U+0100.. in byte order. */
static bool byte_is_printable(uint8_t b) {
        return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
}

uint32_t unicode_byte_to_cpt(uint8_t b) {
        if (byte_is_printable(b))
                return b;
        if (b <= 0x20)
                return 0x100 + b;
        if (b <= 0xA0)
                return 0x100 + 33 + (b - 0x7F);
        return 0x100 + 67; /* 0xAD */
}

int unicode_cpt_to_byte(uint32_t cp) {
        if (cp < 0x100)
                return byte_is_printable((uint8_t) cp) ? (int) cp : -1;
        if (cp < 0x100 + 33)
                return (int) (cp - 0x100);
        if (cp < 0x100 + 67)
                return (int) (0x7F + cp - 0x100 - 33);
        if (cp == 0x100 + 67)
                return 0xAD;
        return -1;
}
