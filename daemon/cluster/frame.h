/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Frames of the cluster protocol: a 4-byte big-endian length N
 * (1 <= N <= FRAME_MAX) and N bytes holding exactly one msgpack map. Every
 * map has "v" (the protocol version, a positive integer) and "t" (the message
 * type, a string); the rest are the message's fields (proto.h). Unknown keys
 * are ignored and a higher "v" is still parsed, so a newer peer can add
 * fields; everything else that is off is an error with a human reason, and
 * the caller closes the connection.
 *
 * Reading is two steps. frame_parse() checks the frame's shape: the size,
 * that the bytes are one msgpack map, that containers nest at most
 * FRAME_DEPTH_MAX deep and declare no more elements than the bytes could
 * hold (msgpack-c allocates a container's elements before reading them, so
 * an unchecked 5-byte header would ask for gigabytes), that maps have unique
 * string keys, and "v" and "t". The typed readers below then check each
 * field as the message's decoder asks for it, telling a missing field from a
 * wrong-typed or out-of-range one.
 *
 * Ownership: a Frame owns a copy of its bytes and one memory zone; every
 * FrameValue, string and binary it hands out, and whatever frame_alloc()
 * returns, lives until frame_free(). Strings are NUL-terminated copies.
 *
 * Writing: frame_begin() starts a frame in a FrameBuffer (the length is
 * patched by frame_end()), the frame_write_*() calls add the body, and
 * frame_end() checks the result. Write errors are sticky: the calls in
 * between need no checks, frame_end() reports the first one.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The protocol version this build speaks, written into every frame. */
#define FRAME_VERSION 1u

#define FRAME_HEADER_SIZE 4u
#define FRAME_MAX (4u * 1024u * 1024u)
/* The root map is level 1. The protocol needs 3 (a map of arrays of tuples). */
#define FRAME_DEPTH_MAX 8u
/* Entries of any map: the protocol's largest has 13; keys are unique, checked pairwise. */
#define FRAME_MAP_MAX 32u
/* Bytes of a map key. */
#define FRAME_KEY_MAX 32u
/* Values in one frame, containers and their elements alike. */
#define FRAME_ELEMENTS_MAX (1u << 18)
/* Bytes of "t". */
#define FRAME_TYPE_MAX 32u

/* ---- writing -------------------------------------------------------------- */

/* Growable bytes: what frames are written into. Zero-initialise it. */
typedef struct FrameBuffer {
        uint8_t *data;
        size_t len;
        size_t allocated;
} FrameBuffer;

/* Frees the bytes and leaves an empty buffer. */
void frame_buffer_done(FrameBuffer *b);

typedef struct FrameWriter {
        FrameBuffer *buf;
        size_t start;           /* where this frame's length goes */
        int error;              /* the first failure, sticky */
} FrameWriter;

/* Appends the start of a frame to buf: the length (patched later) and a map
 * of 2 + n_fields entries, "v" and "t" written. Follow with exactly n_fields
 * frame_write_key() + value pairs. */
void frame_begin(FrameWriter *w, FrameBuffer *buf, const char *type, size_t n_fields);
/* 0, or -ENOMEM, or -EMSGSIZE when the frame exceeds FRAME_MAX. On failure
 * the buffer is as it was before frame_begin(). */
int frame_end(FrameWriter *w);

void frame_write_key(FrameWriter *w, const char *key);
void frame_write_u64(FrameWriter *w, uint64_t v);
void frame_write_i64(FrameWriter *w, int64_t v);
void frame_write_double(FrameWriter *w, double v);
void frame_write_bool(FrameWriter *w, bool v);
/* NULL is written as "". */
void frame_write_str(FrameWriter *w, const char *s);
void frame_write_bin(FrameWriter *w, const void *p, size_t n);
/* Headers: follow with n values (n keys and values for a map). */
void frame_write_array(FrameWriter *w, size_t n);
void frame_write_map(FrameWriter *w, size_t n);

/* ---- reading -------------------------------------------------------------- */

typedef struct Frame Frame;
/* A value inside a Frame. */
typedef struct FrameValue FrameValue;

/*
 * Parses the frame at the start of buf[len] (the length prefix included).
 * Returns 0 when more bytes are needed (never when the length prefix alone
 * is already bad); 1 with the frame in *ret_frame and the bytes it took in
 * *ret_consumed; or -EMSGSIZE (too large, too deep, too many elements),
 * -EBADMSG (anything else malformed), with a human reason in *ret_error
 * if that is not NULL (free() it), or -ENOMEM.
 */
int frame_parse(const uint8_t *buf, size_t len, size_t *ret_consumed, Frame **ret_frame, char **ret_error);

Frame *frame_free(Frame *f);
static inline void frame_freep(Frame **f) {
        if (*f)
                frame_free(*f);
}

/* "v": >= 1, possibly above FRAME_VERSION. */
uint32_t frame_version(const Frame *f);
/* "t": 1..FRAME_TYPE_MAX bytes of UTF-8. */
const char *frame_type(const Frame *f);
/* The whole map. */
const FrameValue *frame_root(const Frame *f);
/* n * size bytes in the frame's zone, aligned to a pointer's size (enough for
 * every struct of proto.h); NULL when out of memory or when n * size
 * overflows. Freed with the frame. */
void *frame_alloc(const Frame *f, size_t n, size_t size);

/* The value under key in map, or NULL when absent or when map is NULL or not a map. */
const FrameValue *frame_map_get(const FrameValue *map, const char *key);
/* Element i of an array; NULL when out of range or not an array. */
const FrameValue *frame_array_at(const FrameValue *array, size_t i);

/*
 * Typed readers. v may be NULL (an absent field); what names it in the
 * message. They return 0, or:
 *   -ENOENT   v is NULL: "missing field 'what'"
 *   -EBADMSG  of another type: "field 'what' is a string, expected an unsigned integer"
 *   -ERANGE   a number outside [min, max] (or not finite)
 *   -EMSGSIZE a string, binary or array outside its length bounds
 *   -EILSEQ   a string that is not UTF-8 or holds a NUL
 * with the message in *ret_error (if not NULL). The result is stored only on
 * success.
 */
int frame_read_u64(const FrameValue *v, const char *what, uint64_t max, uint64_t *ret, char **ret_error);
int frame_read_u32(const FrameValue *v, const char *what, uint32_t max, uint32_t *ret, char **ret_error);
int frame_read_i64(const FrameValue *v, const char *what, int64_t min, int64_t max, int64_t *ret, char **ret_error);
/* float32 or float64 (integers are not converted); never NaN or infinite. */
int frame_read_double(const FrameValue *v, const char *what, double min, double max, double *ret,
                      char **ret_error);
int frame_read_bool(const FrameValue *v, const char *what, bool *ret, char **ret_error);
/* min_len..max_len bytes; *ret points into the frame. */
int frame_read_str(const FrameValue *v, const char *what, size_t min_len, size_t max_len, const char **ret,
                   char **ret_error);
int frame_read_bin(const FrameValue *v, const char *what, size_t min_len, size_t max_len, const uint8_t **ret,
                   size_t *ret_len, char **ret_error);
/* Exactly n bytes, copied to dst. */
int frame_read_bin_exact(const FrameValue *v, const char *what, void *dst, size_t n, char **ret_error);
/* An array of min_n..max_n elements; its length in *ret_n. */
int frame_read_array(const FrameValue *v, const char *what, size_t min_n, size_t max_n, size_t *ret_n,
                     char **ret_error);
/* A map (look its keys up with frame_map_get()). */
int frame_read_map(const FrameValue *v, const char *what, char **ret_error);
