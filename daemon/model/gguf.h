/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * GGUF model files (versions 2 and 3, little-endian): the header, metadata
 * and tensor table are parsed and validated up front; tensor data stays in
 * the memory map and is handed out as pointers into it, never copied.
 *
 * Every length, count and offset is checked against the file size and the
 * limits below before use, so a truncated, corrupt or hostile file gets an
 * error that names what is wrong ("tensor 'blk.0.attn_q.weight': data ends
 * at byte 123456789, past the end of the file (1048576 bytes)"), never a
 * crash or an over-read.
 *
 * Ownership: GgufFile owns the map; every pointer it hands out lives until
 * gguf_free().
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quant.h"

typedef enum GgufType {
        GGUF_TYPE_UINT8 = 0,
        GGUF_TYPE_INT8 = 1,
        GGUF_TYPE_UINT16 = 2,
        GGUF_TYPE_INT16 = 3,
        GGUF_TYPE_UINT32 = 4,
        GGUF_TYPE_INT32 = 5,
        GGUF_TYPE_FLOAT32 = 6,
        GGUF_TYPE_BOOL = 7,
        GGUF_TYPE_STRING = 8,
        GGUF_TYPE_ARRAY = 9,
        GGUF_TYPE_UINT64 = 10,
        GGUF_TYPE_INT64 = 11,
        GGUF_TYPE_FLOAT64 = 12,
        GGUF_TYPE__MAX,
} GgufType;

#define GGUF_MAX_DIMS 4

typedef struct GgufTensor {
        const char *name;               /* NUL-terminated copy */
        uint32_t n_dims;
        uint64_t ne[GGUF_MAX_DIMS];     /* ne[0] is the row length (innermost); unused dims are 1 */
        GgmlType type;
        uint64_t offset;                /* from the start of the data section */
        uint64_t size;                  /* bytes */
        const void *data;               /* into the map */
} GgufTensor;

typedef struct GgufLimits {
        uint64_t max_tensors;           /* default 65536 */
        uint64_t max_kv;                /* default 65536 */
        uint64_t max_string;            /* bytes of one string, default 16 MiB */
        uint64_t max_array;             /* elements of one array, default 16 Mi */
        uint64_t max_file_size;         /* 0: no limit */
} GgufLimits;

typedef struct GgufFile GgufFile;

/*
 * Maps and parses path. limits may be NULL (defaults). On failure returns
 * -errno (-EBADMSG for a malformed file, -EMSGSIZE when a limit is hit,
 * -EPROTONOSUPPORT for other versions or big-endian files, -ENOENT, ...) and,
 * if ret_error is not NULL, a message naming the file and what is wrong.
 */
int gguf_open(const char *path, const GgufLimits *limits, GgufFile **ret, char **ret_error);

/* The same over memory the caller keeps alive until gguf_free() (tests, fuzzing). */
int gguf_parse_buffer(const void *data, size_t size, const GgufLimits *limits, GgufFile **ret, char **ret_error);
/* The same, with the name error messages start with (gguf_parse_buffer() says "buffer"). */
int gguf_parse_buffer_named(const void *data, size_t size, const char *name, const GgufLimits *limits, GgufFile **ret,
                            char **ret_error);

GgufFile *gguf_free(GgufFile *f);
static inline void gguf_freep(GgufFile **f) {
        if (*f)
                gguf_free(*f);
}

uint32_t gguf_version(const GgufFile *f);
uint64_t gguf_file_size(const GgufFile *f);
uint32_t gguf_alignment(const GgufFile *f);
/* Where the data section starts (tensor offsets count from here). */
uint64_t gguf_data_offset(const GgufFile *f);

/* "uint32", "string", ...; NULL for unknown ids. */
const char *gguf_type_name(GgufType t);

/* ---- metadata ------------------------------------------------------------ */

size_t gguf_n_kv(const GgufFile *f);
const char *gguf_kv_key(const GgufFile *f, size_t i);
GgufType gguf_kv_type(const GgufFile *f, size_t i);
/* Index of key, or -ENOENT. */
int64_t gguf_find_key(const GgufFile *f, const char *key);

/*
 * Typed getters. -ENOENT when absent, -EBADMSG when of a type that cannot
 * represent the request (integers convert between widths when the value
 * fits, else -ERANGE; floats accept FLOAT32 and FLOAT64).
 */
int gguf_get_u32(const GgufFile *f, const char *key, uint32_t *ret);
int gguf_get_u64(const GgufFile *f, const char *key, uint64_t *ret);
int gguf_get_i32(const GgufFile *f, const char *key, int32_t *ret);
int gguf_get_i64(const GgufFile *f, const char *key, int64_t *ret);
int gguf_get_f32(const GgufFile *f, const char *key, float *ret);
int gguf_get_f64(const GgufFile *f, const char *key, double *ret);
int gguf_get_bool(const GgufFile *f, const char *key, bool *ret);
/* Strings are not NUL-terminated in the file: use the length. */
int gguf_get_string(const GgufFile *f, const char *key, const char **ret, size_t *ret_len);

/* Arrays: element type and count; for numeric arrays a pointer to the packed
 * little-endian elements (unaligned: read with memcpy). For arrays of arrays
 * (one level of nesting is accepted) the pointer is to the raw encoding. */
int gguf_get_array(const GgufFile *f, const char *key, GgufType *ret_type, uint64_t *ret_n, const void **ret_data);
/* Element i of an array of strings (random access, O(1)). */
int gguf_get_array_string(const GgufFile *f, const char *key, uint64_t i, const char **ret, size_t *ret_len);

/* ---- tensors ------------------------------------------------------------- */

size_t gguf_n_tensors(const GgufFile *f);
const GgufTensor *gguf_tensor(const GgufFile *f, size_t i);
const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name);

/* ---- writing (synthetic models, tests) ----------------------------------- */

typedef struct GgufWriter GgufWriter;

int gguf_writer_new(GgufWriter **ret);
GgufWriter *gguf_writer_free(GgufWriter *w);
static inline void gguf_writer_freep(GgufWriter **w) {
        if (*w)
                gguf_writer_free(*w);
}
/* Keys are unique (-EEXIST), 1 to 65535 bytes. general.alignment must be a
 * uint32 power of two up to 1 MiB (-EINVAL). */
int gguf_writer_add_u32(GgufWriter *w, const char *key, uint32_t v);
int gguf_writer_add_u64(GgufWriter *w, const char *key, uint64_t v);
int gguf_writer_add_i32(GgufWriter *w, const char *key, int32_t v);
int gguf_writer_add_f32(GgufWriter *w, const char *key, float v);
int gguf_writer_add_bool(GgufWriter *w, const char *key, bool v);
int gguf_writer_add_string(GgufWriter *w, const char *key, const char *v);
/* Any scalar type; value points to the native value (uint8_t ... double, bool). */
int gguf_writer_add_scalar(GgufWriter *w, const char *key, GgufType type, const void *value);
/* Scalar element types only; data holds n native values as for gguf_writer_add_scalar(). */
int gguf_writer_add_array(GgufWriter *w, const char *key, GgufType type, const void *data, uint64_t n);
int gguf_writer_add_array_string(GgufWriter *w, const char *key, const char *const *v, uint64_t n);
/* ne[0] is the row length. The data is copied. */
int gguf_writer_add_tensor(GgufWriter *w, const char *name, GgmlType type, uint32_t n_dims, const uint64_t *ne,
                           const void *data);
/*
 * A tensor whose data is produced while the file is written, so models larger
 * than memory can be written: fn fills rows [first_row, first_row + n_rows)
 * (each ggml_row_bytes(type, ne[0]) bytes; rows are ne[1] * ne[2] * ne[3])
 * into buf, in order, a chunk of a few MiB at a time; a negative return
 * aborts the write with that error. userdata must live until
 * gguf_writer_write_file() returns.
 */
typedef int (*GgufRowsFn)(void *userdata, uint64_t first_row, uint64_t n_rows, void *buf);
int gguf_writer_add_tensor_rows(GgufWriter *w, const char *name, GgmlType type, uint32_t n_dims, const uint64_t *ne,
                                GgufRowsFn fn, void *userdata);
/* Writes version 3 with alignment 32 (or general.alignment if added), each
 * tensor's data padded to the alignment; via a temporary file and rename(). */
int gguf_writer_write_file(GgufWriter *w, const char *path);
