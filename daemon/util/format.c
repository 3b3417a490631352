/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "macro.h"

char *format_bytes(char *buf, size_t len, uint64_t bytes) {
        static const char suffix[] = "KMGTPE";
        if (bytes < 1024) {
                snprintf(buf, len, "%" PRIu64 "B", bytes);
                return buf;
        }
        double v = (double) bytes;
        size_t i = 0;
        v /= 1024.0;
        while (v >= 1024.0 && i + 1 < sizeof suffix - 1) {
                v /= 1024.0;
                i++;
        }
        snprintf(buf, len, "%.1f%c", v, suffix[i]);
        return buf;
}

char *format_timespan(char *buf, size_t len, uint64_t usec) {
        static const struct { const char *unit; uint64_t usec; } units[] = {
                { "d", 86400000000ULL }, { "h", 3600000000ULL }, { "min", 60000000ULL },
                { "s", 1000000ULL },
        };
        if (usec < 1000000ULL) {
                if (usec >= 1000)
                        snprintf(buf, len, "%" PRIu64 "ms", usec / 1000);
                else
                        snprintf(buf, len, "%" PRIu64 "us", usec);
                return buf;
        }
        size_t off = 0;
        buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(units) && off < len; i++) {
                uint64_t n = usec / units[i].usec;
                if (n == 0)
                        continue;
                usec %= units[i].usec;
                off += (size_t) snprintf(buf + off, len - off, "%s%" PRIu64 "%s", off ? " " : "", n, units[i].unit);
        }
        return buf;
}

/* Parses "<number><unit>" pairs ("1min 30s" too); unit table in increasing order of length. */
static int parse_with_units(const char *s, const char *const *names, const uint64_t *mult, size_t n_units,
                            uint64_t default_mult, uint64_t *ret) {
        uint64_t total = 0;
        bool any = false;

        if (!s)
                return -EINVAL;
        while (*s) {
                while (isspace((unsigned char) *s))
                        s++;
                if (!*s)
                        break;
                if (!isdigit((unsigned char) *s) && *s != '.')
                        return -EINVAL;
                char *end;
                errno = 0;
                double v = strtod(s, &end);
                if (errno != 0 || end == s || v < 0)
                        return -EINVAL;
                s = end;
                while (isspace((unsigned char) *s))
                        s++;
                uint64_t m = default_mult;
                size_t best = 0;
                for (size_t i = 0; i < n_units; i++) {
                        size_t l = strlen(names[i]);
                        if (l > best && strncmp(s, names[i], l) == 0 && !isalpha((unsigned char) s[l])) {
                                best = l;
                                m = mult[i];
                        }
                }
                if (best == 0 && isalpha((unsigned char) *s))
                        return -EINVAL;
                s += best;
                double t = v * (double) m;
                if (t >= 18446744073709551615.0 || (double) total + t >= 18446744073709551615.0)
                        return -ERANGE;
                total += (uint64_t) t;
                any = true;
        }
        if (!any)
                return -EINVAL;
        *ret = total;
        return 0;
}

int parse_timespan(const char *s, uint64_t *ret_usec) {
        static const char *const names[] = { "us", "ms", "s", "sec", "m", "min", "h", "hr", "d", "w" };
        static const uint64_t mult[] = { 1ULL, 1000ULL, 1000000ULL, 1000000ULL, 60000000ULL, 60000000ULL,
                                         3600000000ULL, 3600000000ULL, 86400000000ULL, 604800000000ULL };
        return parse_with_units(s, names, mult, ELEMENTSOF(names), 1000000ULL, ret_usec);
}

int parse_size(const char *s, uint64_t *ret_bytes) {
        static const char *const names[] = { "B", "K", "KiB", "M", "MiB", "G", "GiB", "T", "TiB" };
        static const uint64_t mult[] = { 1ULL, 1ULL << 10, 1ULL << 10, 1ULL << 20, 1ULL << 20,
                                         1ULL << 30, 1ULL << 30, 1ULL << 40, 1ULL << 40 };
        return parse_with_units(s, names, mult, ELEMENTSOF(names), 1ULL, ret_bytes);
}
