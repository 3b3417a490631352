/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Whether s (NUL-terminated) is well-formed UTF-8: no overlong forms, no
 * surrogates, nothing above U+10FFFF. D-Bus refuses strings that are not. */
bool utf8_is_valid(const char *s);
/* The same for n bytes. */
bool utf8_is_valid_n(const char *s, size_t n);
