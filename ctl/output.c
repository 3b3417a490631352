/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
