/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * What inferctl prints: one-line errors on stderr, aligned tables and JSON on
 * stdout. Verbs build their output with these so every verb looks alike.
 */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "macro.h"

typedef enum JsonMode {
        JSON_OFF,
        JSON_SHORT,     /* one line, for pipes */
        JSON_PRETTY,    /* indented, the default of --json on a terminal */
} JsonMode;

/*
 * "inferctl: MESSAGE" on stderr. errno is set from error for "%m"; returns
 * -abs(error), so "return ctl_error_errno(r, ...)" logs and fails at once.
 */
int ctl_error_internal(int error, const char *format, ...) _printf_(2, 3);
#define ctl_error_errno(error, ...) ctl_error_internal((error), __VA_ARGS__)
#define ctl_oom() ctl_error_errno(ENOMEM, "Out of memory.")

/* json_decrefp() comes with jansson >= 2.9 (json_auto_t). */
#define _cleanup_json_ _cleanup_(json_decrefp)

/* D-Bus strings must be UTF-8: true if s is (no overlong forms, no surrogates). */
bool utf8_is_valid(const char *s);

/* "260K", "1.2B", "70B": parameter counts as model cards write them. */
char *format_params(char *buf, size_t len, uint64_t n);
#define FORMAT_PARAMS_MAX 32

/*
 * "Tue 2024-05-07 10:00:00 UTC", as systemctl prints timestamps, from
 * CLOCK_REALTIME microseconds in local time; NULL for 0.
 */
char *format_timestamp(char *buf, size_t len, uint64_t usec);
/* "2026-11-23T04:05:06Z" (UTC) from CLOCK_REALTIME microseconds, for JSON; NULL if it does not fit. */
char *format_iso8601(char *buf, size_t len, uint64_t usec);
#define FORMAT_TIMESTAMP_MAX 64

/* Dumps v and a newline to stdout; prints why on failure. */
int json_print(json_t *v, JsonMode mode);

/* Strings as JSON, NULL as null. */
static inline json_t *json_string_or_null(const char *s) {
        return s ? json_string(s) : json_null();
}

/*
 * A text table: a header row, then rows of cells, columns padded to their
 * widest cell and separated by one space; the last column is not padded.
 * Cells are copied; NULL prints as "-".
 */
typedef struct Table Table;

Table *table_new(size_t n_columns, const char *const *headers);
Table *table_free(Table *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(Table *, table_free);

/* Numbers read better right-aligned. */
int table_set_align_right(Table *t, size_t column, bool b);

/* Exactly n_columns cells. -ENOMEM. */
int table_add_row(Table *t, const char *const *cells);

size_t table_n_rows(const Table *t);

int table_print(const Table *t, FILE *f);

/* The same as a Markdown table, as llama-bench prints its results. */
int table_print_markdown(const Table *t, FILE *f);
