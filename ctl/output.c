/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "output.h"

int ctl_error_internal(int error, const char *format, ...) {
        va_list ap;

        if (error < 0)
                error = -error;

        /* One line, written at once, so it is not interleaved with stdout. */
        fflush(stdout);
        errno = error;
        fputs("inferctl: ", stderr);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
        return -error;
}

bool utf8_is_valid(const char *s) {
        const unsigned char *p = (const unsigned char *) s;

        while (*p) {
                uint32_t c;
                size_t n;

                if (*p < 0x80) {
                        p++;
                        continue;
                }
                if ((*p & 0xe0) == 0xc0)
                        n = 1, c = *p & 0x1f;
                else if ((*p & 0xf0) == 0xe0)
                        n = 2, c = *p & 0x0f;
                else if ((*p & 0xf8) == 0xf0)
                        n = 3, c = *p & 0x07;
                else
                        return false;
                for (size_t i = 1; i <= n; i++) {
                        if ((p[i] & 0xc0) != 0x80)
                                return false;   /* also stops at the terminating NUL */
                        c = (c << 6) | (p[i] & 0x3f);
                }
                if ((n == 1 && c < 0x80) || (n == 2 && c < 0x800) || (n == 3 && c < 0x10000) ||
                    c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
                        return false;
                p += n + 1;
        }
        return true;
}

/* "260K", "1.2B", "70B": parameter counts as model cards write them. */
char *format_params(char *buf, size_t len, uint64_t n) {
        static const struct { uint64_t unit; char suffix; } units[] = {
                { 1000000000000ULL, 'T' }, { 1000000000ULL, 'B' }, { 1000000ULL, 'M' }, { 1000ULL, 'K' },
        };

        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (n >= units[i].unit) {
                        double v = (double) n / (double) units[i].unit;
                        /* "999.7K" would round to "1000K": one unit up reads better. */
                        if (i > 0 && v >= 999.5)
                                v /= 1000.0, i--;
                        snprintf(buf, len, v < 9.95 ? "%.1f%c" : "%.0f%c", v, units[i].suffix);
                        return buf;
                }
        snprintf(buf, len, "%" PRIu64, n);
        return buf;
}

char *format_iso8601(char *buf, size_t len, uint64_t usec) {
        time_t t = (time_t) (usec / 1000000ULL);
        struct tm tm;

        if (!gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                return NULL;
        return buf;
}

char *format_timestamp(char *buf, size_t len, uint64_t usec) {
        time_t t = (time_t) (usec / 1000000ULL);
        struct tm tm;

        if (usec == 0 || !localtime_r(&t, &tm) || strftime(buf, len, "%a %Y-%m-%d %H:%M:%S %Z", &tm) == 0)
                return NULL;
        return buf;
}

int json_print(json_t *v, JsonMode mode) {
        size_t flags = JSON_ENCODE_ANY | (mode == JSON_PRETTY ? JSON_INDENT(2) : JSON_COMPACT);

        if (json_dumpf(v, stdout, flags) < 0 || fputc('\n', stdout) == EOF)
                return ctl_error_errno(EIO, "Failed to write the JSON output: %m");
        return 0;
}

struct Table {
        size_t n_columns;
        size_t n_cells;         /* header included */
        size_t n_allocated;
        char **cells;           /* row-major */
        bool *align_right;
};

Table *table_new(size_t n_columns, const char *const *headers) {
        Table *t;

        assert(n_columns > 0);

        t = calloc(1, sizeof *t);
        if (!t)
                return NULL;
        t->n_columns = n_columns;
        t->align_right = calloc(n_columns, sizeof(bool));
        if (!t->align_right || table_add_row(t, headers) < 0)
                return table_free(t);
        return t;
}

Table *table_free(Table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_cells; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t->align_right);
        free(t);
        return NULL;
}

int table_set_align_right(Table *t, size_t column, bool b) {
        if (column >= t->n_columns)
                return -EINVAL;
        t->align_right[column] = b;
        return 0;
}

int table_add_row(Table *t, const char *const *cells) {
        if (t->n_cells + t->n_columns > t->n_allocated) {
                size_t n = MAX(t->n_allocated * 2, t->n_columns * 8);
                char **c = reallocarray(t->cells, n, sizeof(char *));
                if (!c)
                        return -ENOMEM;
                t->cells = c;
                t->n_allocated = n;
        }

        for (size_t i = 0; i < t->n_columns; i++) {
                char *s = strdup(cells[i] ?: "-");
                if (!s) {
                        /* Drop the half-added row, so the table stays rectangular. */
                        while (i > 0)
                                free(t->cells[t->n_cells + --i]);
                        return -ENOMEM;
                }
                t->cells[t->n_cells + i] = s;
        }
        t->n_cells += t->n_columns;
        return 0;
}

size_t table_n_rows(const Table *t) {
        return t->n_cells / t->n_columns - 1;
}

/* Device names may be UTF-8: count code points, not bytes, so columns line up. */
static size_t utf8_width(const char *s) {
        size_t n = 0;
        for (; *s; s++)
                if (((unsigned char) *s & 0xc0) != 0x80)
                        n++;
        return n;
}

int table_print(const Table *t, FILE *f) {
        _cleanup_free_ size_t *width = calloc(t->n_columns, sizeof(size_t));
        if (!width)
                return -ENOMEM;

        for (size_t i = 0; i < t->n_cells; i++)
                width[i % t->n_columns] = MAX(width[i % t->n_columns], utf8_width(t->cells[i]));

        for (size_t i = 0; i < t->n_cells; i++) {
                size_t col = i % t->n_columns;
                size_t pad = width[col] - utf8_width(t->cells[i]);
                bool last = col == t->n_columns - 1;

                if (col > 0)
                        fputc(' ', f);
                if (t->align_right[col])
                        fprintf(f, "%*s", (int) pad, "");
                fputs(t->cells[i], f);
                if (!t->align_right[col] && !last)
                        fprintf(f, "%*s", (int) pad, "");
                if (last)
                        fputc('\n', f);
        }

        return ferror(f) ? -EIO : 0;
}

/* llama-bench's output: "| a | b |", then "| --- | --: |" (right-aligned columns end in ':'). */
int table_print_markdown(const Table *t, FILE *f) {
        _cleanup_free_ size_t *width = calloc(t->n_columns, sizeof(size_t));
        if (!width)
                return -ENOMEM;

        /* Markdown wants at least three dashes. */
        for (size_t i = 0; i < t->n_cells; i++)
                width[i % t->n_columns] = MAX(width[i % t->n_columns], MAX(utf8_width(t->cells[i]), 3));

        for (size_t i = 0; i < t->n_cells; i++) {
                size_t col = i % t->n_columns;
                size_t pad = width[col] - utf8_width(t->cells[i]);

                fputs(col == 0 ? "| " : " | ", f);
                if (t->align_right[col])
                        fprintf(f, "%*s%s", (int) pad, "", t->cells[i]);
                else
                        fprintf(f, "%s%*s", t->cells[i], (int) pad, "");
                if (col == t->n_columns - 1)
                        fputs(" |\n", f);

                /* The rule under the header. */
                if (i == t->n_columns - 1)
                        for (size_t c = 0; c < t->n_columns; c++) {
                                fputs(c == 0 ? "| " : " | ", f);
                                for (size_t k = 0; k + (t->align_right[c] ? 1 : 0) < width[c]; k++)
                                        fputc('-', f);
                                if (t->align_right[c])
                                        fputc(':', f);
                                if (c == t->n_columns - 1)
                                        fputs(" |\n", f);
                        }
        }

        return ferror(f) ? -EIO : 0;
}
