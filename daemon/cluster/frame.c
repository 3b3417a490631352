/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>

#include "frame.h"
#include "macro.h"
#include "utf8.h"

/* For a frame whose objects took no zone memory (an empty map). */
#define FRAME_ZONE_CHUNK 1024u

struct Frame {
        uint8_t *data;          /* a copy of the frame: msgpack-c points binaries into its input */
        msgpack_zone *zone;     /* the objects, NUL-terminated strings, frame_alloc() */
        msgpack_object root;
        uint32_t version;
        const char *type;
};

static const msgpack_object *obj(const FrameValue *v) {
        return (const msgpack_object *) v;
}

static const FrameValue *value(const msgpack_object *o) {
        return (const FrameValue *) o;
}

_printf_(3, 4) static int fail(char **ret_error, int r, const char *fmt, ...) {
        va_list ap;

        if (!ret_error)
                return r;
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
        return r;
}

/* ---- writing -------------------------------------------------------------- */

void frame_buffer_done(FrameBuffer *b) {
        free(b->data);
        *b = (FrameBuffer) {};
}

static int buffer_reserve(FrameBuffer *b, size_t n) {
        if (n <= b->allocated - b->len)
                return 0;
        if (n > SIZE_MAX / 2 - b->len)
                return -ENOMEM;
        size_t want = MAX(MAX(b->len + n, b->allocated * 2), (size_t) 256);
        uint8_t *p = realloc(b->data, want);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->allocated = want;
        return 0;
}

/* msgpack_packer's output: appends to the frame, or records why it cannot. */
static int writer_append(void *userdata, const char *p, size_t n) {
        FrameWriter *w = userdata;
        FrameBuffer *b = w->buf;

        if (w->error < 0)
                return -1;
        if (n > FRAME_MAX || b->len - w->start - FRAME_HEADER_SIZE > FRAME_MAX - n) {
                /* stop here rather than grow a frame nobody may receive */
                w->error = -EMSGSIZE;
                return -1;
        }
        if (buffer_reserve(b, n) < 0) {
                w->error = -ENOMEM;
                return -1;
        }
        memcpy(b->data + b->len, p, n);
        b->len += n;
        return 0;
}

static msgpack_packer packer(FrameWriter *w) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, w, writer_append);
        return pk;
}

void frame_begin(FrameWriter *w, FrameBuffer *buf, const char *type, size_t n_fields) {
        *w = (FrameWriter) { .buf = buf, .start = buf->len };

        if (buffer_reserve(buf, FRAME_HEADER_SIZE) < 0) {
                w->error = -ENOMEM;
                return;
        }
        memset(buf->data + buf->len, 0, FRAME_HEADER_SIZE);
        buf->len += FRAME_HEADER_SIZE;

        msgpack_packer pk = packer(w);
        (void) msgpack_pack_map(&pk, 2 + n_fields);
        frame_write_key(w, "v");
        frame_write_u64(w, FRAME_VERSION);
        frame_write_key(w, "t");
        frame_write_str(w, type);
}

int frame_end(FrameWriter *w) {
        FrameBuffer *b = w->buf;

        if (w->error < 0) {
                b->len = w->start;
                return w->error;
        }
        size_t n = b->len - w->start - FRAME_HEADER_SIZE;
        assert(n > 0 && n <= FRAME_MAX);
        uint8_t *p = b->data + w->start;
        p[0] = (uint8_t) (n >> 24);
        p[1] = (uint8_t) (n >> 16);
        p[2] = (uint8_t) (n >> 8);
        p[3] = (uint8_t) n;
        return 0;
}

void frame_write_key(FrameWriter *w, const char *key) {
        frame_write_str(w, key);
}

void frame_write_u64(FrameWriter *w, uint64_t v) {
        msgpack_packer pk = packer(w);
        (void) msgpack_pack_uint64(&pk, v);
}

void frame_write_i64(FrameWriter *w, int64_t v) {
        msgpack_packer pk = packer(w);
        (void) msgpack_pack_int64(&pk, v);
}

void frame_write_double(FrameWriter *w, double v) {
        msgpack_packer pk = packer(w);
        (void) msgpack_pack_double(&pk, v);
}

void frame_write_bool(FrameWriter *w, bool v) {
        msgpack_packer pk = packer(w);
        (void) (v ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk));
}

void frame_write_str(FrameWriter *w, const char *s) {
        msgpack_packer pk = packer(w);
        size_t n = s ? strlen(s) : 0;
        if (msgpack_pack_str(&pk, n) == 0 && n > 0)
                (void) msgpack_pack_str_body(&pk, s, n);
}

void frame_write_bin(FrameWriter *w, const void *p, size_t n) {
        msgpack_packer pk = packer(w);
        if (msgpack_pack_bin(&pk, n) == 0 && n > 0)
                (void) msgpack_pack_bin_body(&pk, p, n);
}

void frame_write_array(FrameWriter *w, size_t n) {
        msgpack_packer pk = packer(w);
        (void) msgpack_pack_array(&pk, n);
}

void frame_write_map(FrameWriter *w, size_t n) {
        msgpack_packer pk = packer(w);
        (void) msgpack_pack_map(&pk, n);
}

/* ---- checking the encoding before msgpack-c allocates for it ----------------- */

static uint64_t be_read(const uint8_t *p, unsigned n) {
        uint64_t v = 0;
        for (unsigned i = 0; i < n; i++)
                v = v << 8 | p[i];
        return v;
}

/*
 * Walks the headers of the msgpack object in p[n] without building it:
 * msgpack-c allocates room for all of a container's elements when it meets
 * the header, so the counts are checked here first. Every element takes at
 * least one byte, so no count may exceed the bytes left; the total, the
 * nesting and map sizes have their own limits. Iterative: the input cannot
 * grow the stack.
 */
static int check_encoding(const uint8_t *p, size_t n, char **ret_error) {
        uint64_t left[FRAME_DEPTH_MAX + 1];     /* elements still to read at each open level */
        unsigned top = 1;
        size_t pos = 0, elements = 1;

        left[0] = 1;    /* the root object */
        while (top > 0) {
                if (left[top - 1] == 0) {
                        top--;
                        continue;
                }
                left[top - 1]--;

                if (pos >= n)
                        return fail(ret_error, -EBADMSG, "frame ends inside its msgpack object");
                uint8_t c = p[pos++];
                unsigned len_bytes = 0;         /* bytes of a length or count field that follows */
                uint64_t skip = 0, count = 0, extra = 0;
                bool container = false, is_map = false;

                if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
                        ;
                else if (c <= 0x8f) {
                        container = is_map = true;
                        count = c & 0x0f;
                } else if (c <= 0x9f) {
                        container = true;
                        count = c & 0x0f;
                } else if (c <= 0xbf)
                        skip = c & 0x1f;
                else
                        switch (c) {
                        case 0xc4: case 0xc5: case 0xc6:        /* bin 8/16/32 */
                                len_bytes = 1u << (c - 0xc4);
                                break;
                        case 0xc7: case 0xc8: case 0xc9:        /* ext 8/16/32: length, type, data */
                                len_bytes = 1u << (c - 0xc7);
                                extra = 1;
                                break;
                        case 0xca:
                                skip = 4;
                                break;
                        case 0xcb:
                                skip = 8;
                                break;
                        case 0xcc: case 0xcd: case 0xce: case 0xcf:
                                skip = 1u << (c - 0xcc);
                                break;
                        case 0xd0: case 0xd1: case 0xd2: case 0xd3:
                                skip = 1u << (c - 0xd0);
                                break;
                        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:   /* fixext: type, data */
                                skip = 1 + (1u << (c - 0xd4));
                                break;
                        case 0xd9: case 0xda: case 0xdb:        /* str 8/16/32 */
                                len_bytes = 1u << (c - 0xd9);
                                break;
                        case 0xdc: case 0xdd:
                                container = true;
                                len_bytes = 2u << (c - 0xdc);
                                break;
                        case 0xde: case 0xdf:
                                container = is_map = true;
                                len_bytes = 2u << (c - 0xde);
                                break;
                        default:                                /* 0xc1: never used */
                                return fail(ret_error, -EBADMSG, "frame is not valid msgpack (byte 0x%02x at offset %zu)",
                                            c, pos - 1);
                        }

                if (len_bytes > 0) {
                        if (n - pos < len_bytes)
                                return fail(ret_error, -EBADMSG, "frame ends inside its msgpack object");
                        uint64_t l = be_read(p + pos, len_bytes);
                        pos += len_bytes;
                        if (container)
                                count = l;
                        else
                                skip = l + extra;
                }

                if (!container) {
                        if (skip > n - pos)
                                return fail(ret_error, -EBADMSG, "frame ends inside its msgpack object");
                        pos += skip;
                        continue;
                }

                if (top > FRAME_DEPTH_MAX)
                        return fail(ret_error, -EMSGSIZE, "frame nests containers deeper than %u levels",
                                    FRAME_DEPTH_MAX);
                if (is_map) {
                        if (count > FRAME_MAP_MAX)
                                return fail(ret_error, -EMSGSIZE, "frame has a map of %" PRIu64 " entries (the limit is %u)",
                                            count, FRAME_MAP_MAX);
                        count *= 2;
                }
                if (count > n - pos)
                        return fail(ret_error, -EBADMSG, "frame ends inside its msgpack object");
                elements += count;
                if (elements > FRAME_ELEMENTS_MAX)
                        return fail(ret_error, -EMSGSIZE, "frame has more than %u values", FRAME_ELEMENTS_MAX);
                if (count > 0)
                        left[top++] = count;
        }
        if (pos < n)
                return fail(ret_error, -EBADMSG, "%zu trailing bytes after the msgpack object", n - pos);
        return 0;
}

/* ---- parsing -------------------------------------------------------------- */

/* A key for an error message: hostile bytes, so only printable ASCII, and not much of it. */
static const char *printable_key(const msgpack_object_str *k, char buf[static FRAME_KEY_MAX + 1]) {
        size_t i;
        for (i = 0; i < k->size && i < FRAME_KEY_MAX; i++)
                buf[i] = k->ptr[i] >= 0x20 && k->ptr[i] < 0x7f ? k->ptr[i] : '?';
        buf[i] = 0;
        return buf;
}

/*
 * Makes every string NUL-terminated (a copy in the zone: in the frame they
 * run into the next value) and checks that map keys are unique strings.
 * Recursion is bounded: check_encoding() refused anything deeper than
 * FRAME_DEPTH_MAX.
 */
static int finish_object(msgpack_zone *zone, msgpack_object *o, char **ret_error) {
        int r;

        switch (o->type) {
        case MSGPACK_OBJECT_STR: {
                char *s = msgpack_zone_malloc_no_align(zone, (size_t) o->via.str.size + 1);
                if (!s)
                        return -ENOMEM;
                /* msgpack-c may leave the pointer of an empty string NULL */
                if (o->via.str.size > 0)
                        memcpy(s, o->via.str.ptr, o->via.str.size);
                s[o->via.str.size] = 0;
                o->via.str.ptr = s;
                return 0;
        }
        case MSGPACK_OBJECT_BIN:
                /* the same for binaries: never hand out NULL */
                if (o->via.bin.size == 0)
                        o->via.bin.ptr = "";
                return 0;
        case MSGPACK_OBJECT_ARRAY:
                for (uint32_t i = 0; i < o->via.array.size; i++) {
                        r = finish_object(zone, &o->via.array.ptr[i], ret_error);
                        if (r < 0)
                                return r;
                }
                return 0;
        case MSGPACK_OBJECT_MAP:
                for (uint32_t i = 0; i < o->via.map.size; i++) {
                        msgpack_object_kv *kv = &o->via.map.ptr[i];
                        char buf[FRAME_KEY_MAX + 1];

                        if (kv->key.type != MSGPACK_OBJECT_STR)
                                return fail(ret_error, -EBADMSG, "frame has a map key that is not a string");
                        if (kv->key.via.str.size > FRAME_KEY_MAX)
                                return fail(ret_error, -EMSGSIZE, "frame has a map key of %" PRIu32 " bytes (the limit is %u)",
                                            kv->key.via.str.size, FRAME_KEY_MAX);
                        /* first, so that no key compared has a NULL pointer */
                        r = finish_object(zone, &kv->key, ret_error);
                        if (r < 0)
                                return r;
                        for (uint32_t j = 0; j < i; j++) {
                                const msgpack_object_str *a = &o->via.map.ptr[j].key.via.str, *b = &kv->key.via.str;
                                if (a->size == b->size && memcmp(a->ptr, b->ptr, a->size) == 0)
                                        return fail(ret_error, -EBADMSG, "frame has the key '%s' twice in one map",
                                                    printable_key(b, buf));
                        }
                        r = finish_object(zone, &kv->val, ret_error);
                        if (r < 0)
                                return r;
                }
                return 0;
        default:
                return 0;
        }
}

Frame *frame_free(Frame *f) {
        if (!f)
                return NULL;
        if (f->zone)
                msgpack_zone_free(f->zone);
        free(f->data);
        free(f);
        return NULL;
}

int frame_parse(const uint8_t *buf, size_t len, size_t *ret_consumed, Frame **ret_frame, char **ret_error) {
        _cleanup_(frame_freep) Frame *f = NULL;
        const FrameValue *v;
        uint64_t version;
        const char *type;
        int r;

        assert(buf || len == 0);
        assert(ret_consumed);
        assert(ret_frame);

        if (len < FRAME_HEADER_SIZE)
                return 0;
        uint32_t n = (uint32_t) be_read(buf, FRAME_HEADER_SIZE);
        if (n == 0)
                return fail(ret_error, -EBADMSG, "frame of 0 bytes");
        if (n > FRAME_MAX)
                return fail(ret_error, -EMSGSIZE, "frame of %" PRIu32 " bytes exceeds the %u MiB limit", n,
                            FRAME_MAX >> 20);
        if (len - FRAME_HEADER_SIZE < n)
                return 0;
        const uint8_t *p = buf + FRAME_HEADER_SIZE;

        if (!((p[0] >= 0x80 && p[0] <= 0x8f) || p[0] == 0xde || p[0] == 0xdf))
                return fail(ret_error, -EBADMSG, "frame is not a msgpack map");
        r = check_encoding(p, n, ret_error);
        if (r < 0)
                return r;

        f = calloc(1, sizeof(Frame));
        if (!f)
                return -ENOMEM;
        f->data = malloc(n);
        if (!f->data)
                return -ENOMEM;
        memcpy(f->data, p, n);

        msgpack_unpacked u;
        size_t off = 0;
        msgpack_unpacked_init(&u);
        r = msgpack_unpack_next(&u, (const char *) f->data, n, &off);
        if (r != MSGPACK_UNPACK_SUCCESS || off != n) {
                msgpack_unpacked_destroy(&u);
                if (r == MSGPACK_UNPACK_NOMEM_ERROR)
                        return -ENOMEM;
                /* check_encoding() let through something msgpack-c refuses */
                return fail(ret_error, -EBADMSG, "frame is not valid msgpack");
        }
        f->root = u.data;
        f->zone = msgpack_unpacked_release_zone(&u);
        if (!f->zone) {
                f->zone = msgpack_zone_new(FRAME_ZONE_CHUNK);
                if (!f->zone)
                        return -ENOMEM;
        }
        assert(f->root.type == MSGPACK_OBJECT_MAP);
        r = finish_object(f->zone, &f->root, ret_error);
        if (r < 0)
                return r;

        v = frame_map_get(frame_root(f), "v");
        if (!v)
                return fail(ret_error, -EBADMSG, "frame has no protocol version");
        if (frame_read_u64(v, "v", UINT32_MAX, &version, NULL) < 0 || version == 0)
                return fail(ret_error, -EBADMSG, "frame's protocol version is not an integer in 1..%" PRIu32,
                            UINT32_MAX);
        v = frame_map_get(frame_root(f), "t");
        if (!v)
                return fail(ret_error, -EBADMSG, "frame has no message type");
        if (frame_read_str(v, "t", 1, FRAME_TYPE_MAX, &type, NULL) < 0)
                return fail(ret_error, -EBADMSG, "frame's message type is not a string of 1..%u bytes of UTF-8",
                            FRAME_TYPE_MAX);
        f->version = (uint32_t) version;
        f->type = type;

        *ret_consumed = FRAME_HEADER_SIZE + (size_t) n;
        *ret_frame = TAKE_PTR(f);
        return 1;
}

uint32_t frame_version(const Frame *f) {
        return f->version;
}

const char *frame_type(const Frame *f) {
        return f->type;
}

const FrameValue *frame_root(const Frame *f) {
        return value(&f->root);
}

void *frame_alloc(const Frame *f, size_t n, size_t size) {
        if (size > 0 && n > SIZE_MAX / size)
                return NULL;
        return msgpack_zone_malloc(f->zone, MAX(n * size, (size_t) 1));
}

/* ---- typed readers -------------------------------------------------------- */

const FrameValue *frame_map_get(const FrameValue *map, const char *key) {
        const msgpack_object *m = obj(map);
        size_t l = strlen(key);

        if (!m || m->type != MSGPACK_OBJECT_MAP)
                return NULL;
        /* keys are unique strings (finish_object()) */
        for (uint32_t i = 0; i < m->via.map.size; i++) {
                const msgpack_object_str *k = &m->via.map.ptr[i].key.via.str;
                if (k->size == l && memcmp(k->ptr, key, l) == 0)
                        return value(&m->via.map.ptr[i].val);
        }
        return NULL;
}

const FrameValue *frame_array_at(const FrameValue *array, size_t i) {
        const msgpack_object *a = obj(array);

        if (!a || a->type != MSGPACK_OBJECT_ARRAY || i >= a->via.array.size)
                return NULL;
        return value(&a->via.array.ptr[i]);
}

static const char *type_name(const msgpack_object *o) {
        switch (o->type) {
        case MSGPACK_OBJECT_NIL:
                return "nil";
        case MSGPACK_OBJECT_BOOLEAN:
                return "a boolean";
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                return "an unsigned integer";
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                return "a negative integer";
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
                return "a float";
        case MSGPACK_OBJECT_STR:
                return "a string";
        case MSGPACK_OBJECT_BIN:
                return "a binary";
        case MSGPACK_OBJECT_ARRAY:
                return "an array";
        case MSGPACK_OBJECT_MAP:
                return "a map";
        case MSGPACK_OBJECT_EXT:
                return "an extension";
        }
        return "an unknown value";
}

/* -ENOENT for an absent field, -EBADMSG for one of another type, else 0. */
static int check_type(const msgpack_object *o, msgpack_object_type type, const char *what, const char *expected,
                      char **ret_error) {
        if (!o)
                return fail(ret_error, -ENOENT, "missing field '%s'", what);
        if (o->type != type)
                return fail(ret_error, -EBADMSG, "field '%s' is %s, expected %s", what, type_name(o), expected);
        return 0;
}

int frame_read_u64(const FrameValue *v, const char *what, uint64_t max, uint64_t *ret, char **ret_error) {
        const msgpack_object *o = obj(v);

        if (o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                return fail(ret_error, -ERANGE, "field '%s' is %" PRIi64 ", expected 0..%" PRIu64, what, o->via.i64,
                            max);
        int r = check_type(o, MSGPACK_OBJECT_POSITIVE_INTEGER, what, "an unsigned integer", ret_error);
        if (r < 0)
                return r;
        if (o->via.u64 > max)
                return fail(ret_error, -ERANGE, "field '%s' is %" PRIu64 ", expected 0..%" PRIu64, what, o->via.u64,
                            max);
        *ret = o->via.u64;
        return 0;
}

int frame_read_u32(const FrameValue *v, const char *what, uint32_t max, uint32_t *ret, char **ret_error) {
        uint64_t u;
        int r = frame_read_u64(v, what, max, &u, ret_error);
        if (r < 0)
                return r;
        *ret = (uint32_t) u;
        return 0;
}

int frame_read_i64(const FrameValue *v, const char *what, int64_t min, int64_t max, int64_t *ret, char **ret_error) {
        const msgpack_object *o = obj(v);

        if (!o)
                return fail(ret_error, -ENOENT, "missing field '%s'", what);
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                if (max < 0 || o->via.u64 > (uint64_t) max || (int64_t) o->via.u64 < min)
                        return fail(ret_error, -ERANGE, "field '%s' is %" PRIu64 ", expected %" PRIi64 "..%" PRIi64,
                                    what, o->via.u64, min, max);
                *ret = (int64_t) o->via.u64;
                return 0;
        }
        if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
                if (o->via.i64 < min || o->via.i64 > max)
                        return fail(ret_error, -ERANGE, "field '%s' is %" PRIi64 ", expected %" PRIi64 "..%" PRIi64,
                                    what, o->via.i64, min, max);
                *ret = o->via.i64;
                return 0;
        }
        return fail(ret_error, -EBADMSG, "field '%s' is %s, expected an integer", what, type_name(o));
}

int frame_read_double(const FrameValue *v, const char *what, double min, double max, double *ret,
                      char **ret_error) {
        const msgpack_object *o = obj(v);

        if (!o)
                return fail(ret_error, -ENOENT, "missing field '%s'", what);
        if (o->type != MSGPACK_OBJECT_FLOAT32 && o->type != MSGPACK_OBJECT_FLOAT64)
                return fail(ret_error, -EBADMSG, "field '%s' is %s, expected a float", what, type_name(o));
        double d = o->via.f64;
        if (!isfinite(d) || d < min || d > max)
                return fail(ret_error, -ERANGE, "field '%s' is %g, expected %g..%g", what, d, min, max);
        *ret = d;
        return 0;
}

int frame_read_bool(const FrameValue *v, const char *what, bool *ret, char **ret_error) {
        const msgpack_object *o = obj(v);
        int r = check_type(o, MSGPACK_OBJECT_BOOLEAN, what, "a boolean", ret_error);
        if (r < 0)
                return r;
        *ret = o->via.boolean;
        return 0;
}

static int check_len(const char *what, const char *unit, size_t n, size_t min, size_t max, char **ret_error) {
        if (n >= min && n <= max)
                return 0;
        if (max == SIZE_MAX)
                return fail(ret_error, -EMSGSIZE, "field '%s' has %zu %s, expected at least %zu", what, n, unit, min);
        return fail(ret_error, -EMSGSIZE, "field '%s' has %zu %s, expected %zu..%zu", what, n, unit, min, max);
}

int frame_read_str(const FrameValue *v, const char *what, size_t min_len, size_t max_len, const char **ret,
                   char **ret_error) {
        const msgpack_object *o = obj(v);
        int r = check_type(o, MSGPACK_OBJECT_STR, what, "a string", ret_error);
        if (r < 0)
                return r;
        r = check_len(what, "bytes", o->via.str.size, min_len, max_len, ret_error);
        if (r < 0)
                return r;
        if (memchr(o->via.str.ptr, 0, o->via.str.size))
                return fail(ret_error, -EILSEQ, "field '%s' contains a NUL byte", what);
        if (!utf8_is_valid_n(o->via.str.ptr, o->via.str.size))
                return fail(ret_error, -EILSEQ, "field '%s' is not valid UTF-8", what);
        *ret = o->via.str.ptr;  /* NUL-terminated by finish_object() */
        return 0;
}

int frame_read_bin(const FrameValue *v, const char *what, size_t min_len, size_t max_len, const uint8_t **ret,
                   size_t *ret_len, char **ret_error) {
        const msgpack_object *o = obj(v);
        int r = check_type(o, MSGPACK_OBJECT_BIN, what, "a binary", ret_error);
        if (r < 0)
                return r;
        r = check_len(what, "bytes", o->via.bin.size, min_len, max_len, ret_error);
        if (r < 0)
                return r;
        *ret = (const uint8_t *) o->via.bin.ptr;
        *ret_len = o->via.bin.size;
        return 0;
}

int frame_read_bin_exact(const FrameValue *v, const char *what, void *dst, size_t n, char **ret_error) {
        const uint8_t *p;
        size_t l;
        int r = frame_read_bin(v, what, n, n, &p, &l, ret_error);
        if (r < 0)
                return r;
        memcpy(dst, p, n);
        return 0;
}

int frame_read_array(const FrameValue *v, const char *what, size_t min_n, size_t max_n, size_t *ret_n,
                     char **ret_error) {
        const msgpack_object *o = obj(v);
        int r = check_type(o, MSGPACK_OBJECT_ARRAY, what, "an array", ret_error);
        if (r < 0)
                return r;
        r = check_len(what, "elements", o->via.array.size, min_n, max_n, ret_error);
        if (r < 0)
                return r;
        *ret_n = o->via.array.size;
        return 0;
}

int frame_read_map(const FrameValue *v, const char *what, char **ret_error) {
        return check_type(obj(v), MSGPACK_OBJECT_MAP, what, "a map", ret_error);
}
