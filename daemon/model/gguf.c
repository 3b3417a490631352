/* SPDX-License-Identifier: MIT */
/*
 * GGUF reader and writer. The layout (little-endian throughout):
 *
 *   "GGUF" u32 version u64 tensor_count u64 kv_count
 *   kv_count x { string key, u32 type, value }
 *   tensor_count x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
 *   padding to general.alignment, then the data section
 *
 * with string = u64 length + bytes and array = u32 element type + u64 count +
 * elements. The parser reads through a bounded cursor: every read checks the
 * bytes that remain first, every size is computed with overflow checks, and
 * every count is checked against both the limits and the bytes that could
 * possibly hold it before anything is allocated for it, so allocations stay
 * proportional to the file.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "gguf.h"
#include "macro.h"

#define GGUF_DEFAULT_ALIGNMENT 32u
/* Larger alignments only waste space; a huge one is a corrupt file. */
#define GGUF_MAX_ALIGNMENT (1u << 20)
/* The spec's limits: keys up to 65535 bytes, tensor names up to 64. */
#define GGUF_MAX_KEY 65535u
#define GGUF_MAX_NAME 64u
/* Arrays of arrays are allowed by the spec but no known key uses them; one
 * level of nesting is accepted, deeper is refused. */
#define GGUF_MAX_NESTING 2

/* Smallest encodings, for "can this count possibly fit" checks. */
#define MIN_KV_BYTES (8 + 1 + 4 + 1)                  /* key len, 1-byte key, type, u8 */
#define MIN_TENSOR_BYTES (8 + 1 + 4 + 8 + 4 + 8)      /* name len, name, n_dims, ne[0], type, offset */
#define MIN_INNER_ARRAY_BYTES (4 + 8)                 /* element type, count (empty array) */

/* Metadata is read during parsing: ask for it up front, in one go. */
#define GGUF_PREFETCH_BYTES (16u << 20)

static const GgufLimits default_limits = {
        .max_tensors = 65536,
        .max_kv = 65536,
        .max_string = 16u << 20,
        .max_array = 16u << 20,
        .max_file_size = 0,
};

static const struct {
        const char *name;
        uint8_t size;   /* bytes of a scalar; 0 for strings and arrays */
} gguf_types[GGUF_TYPE__MAX] = {
        [GGUF_TYPE_UINT8] = { "uint8", 1 },
        [GGUF_TYPE_INT8] = { "int8", 1 },
        [GGUF_TYPE_UINT16] = { "uint16", 2 },
        [GGUF_TYPE_INT16] = { "int16", 2 },
        [GGUF_TYPE_UINT32] = { "uint32", 4 },
        [GGUF_TYPE_INT32] = { "int32", 4 },
        [GGUF_TYPE_FLOAT32] = { "float32", 4 },
        [GGUF_TYPE_BOOL] = { "bool", 1 },
        [GGUF_TYPE_STRING] = { "string", 0 },
        [GGUF_TYPE_ARRAY] = { "array", 0 },
        [GGUF_TYPE_UINT64] = { "uint64", 8 },
        [GGUF_TYPE_INT64] = { "int64", 8 },
        [GGUF_TYPE_FLOAT64] = { "float64", 8 },
};

const char *gguf_type_name(GgufType t) {
        return (unsigned) t < GGUF_TYPE__MAX ? gguf_types[t].name : NULL;
}

static uint64_t le_read(const uint8_t *p, unsigned n) {
        uint64_t v = 0;
        for (unsigned i = 0; i < n; i++)
                v |= (uint64_t) p[i] << (8 * i);
        return v;
}

static void le_write(uint8_t *p, uint64_t v, unsigned n) {
        for (unsigned i = 0; i < n; i++)
                p[i] = (uint8_t) (v >> (8 * i));
}

/* ---- name index ---------------------------------------------------------- */

/* Open addressing over NUL-terminated names: duplicate detection while
 * parsing and O(1) lookups after, even for hostile files with 64Ki names. */
typedef struct NameSlot {
        const char *name;
        size_t index;
} NameSlot;

typedef struct NameIndex {
        NameSlot *slots;
        size_t mask;
} NameIndex;

static uint64_t hash_name(const char *s) {
        uint64_t h = UINT64_C(0xcbf29ce484222325);      /* FNV-1a */
        for (; *s; s++)
                h = (h ^ (uint8_t) *s) * UINT64_C(0x100000001b3);
        return h ^ (h >> 29);
}

static int name_index_init(NameIndex *ix, size_t n) {
        size_t cap = 8;
        while (cap < n * 2) {
                if (cap > SIZE_MAX / 4)
                        return -ENOMEM;
                cap *= 2;
        }
        ix->slots = calloc(cap, sizeof(NameSlot));
        if (!ix->slots)
                return -ENOMEM;
        ix->mask = cap - 1;
        return 0;
}

/* Inserts name; returns SIZE_MAX, or the index of an entry with that name. */
static size_t name_index_insert(NameIndex *ix, const char *name, size_t index) {
        for (size_t i = hash_name(name) & ix->mask;; i = (i + 1) & ix->mask) {
                if (!ix->slots[i].name) {
                        ix->slots[i] = (NameSlot) { name, index };
                        return SIZE_MAX;
                }
                if (streq(ix->slots[i].name, name))
                        return ix->slots[i].index;
        }
}

static size_t name_index_find(const NameIndex *ix, const char *name) {
        if (!ix->slots)
                return SIZE_MAX;
        for (size_t i = hash_name(name) & ix->mask; ix->slots[i].name; i = (i + 1) & ix->mask)
                if (streq(ix->slots[i].name, name))
                        return ix->slots[i].index;
        return SIZE_MAX;
}

/* ---- the parsed file ----------------------------------------------------- */

typedef struct GgufKv {
        char *key;
        GgufType type;
        GgufType elem_type;     /* arrays */
        uint64_t n;             /* strings: bytes; arrays: elements */
        const uint8_t *data;    /* scalar value, string bytes, or the first array element */
        uint64_t *strings;      /* arrays of strings: file offset of each element's length */
} GgufKv;

struct GgufFile {
        char *name;             /* for messages */
        const uint8_t *base;
        uint64_t size;
        void *map;              /* NULL over a caller's buffer */
        size_t map_size;

        uint32_t version;
        uint32_t alignment;
        uint64_t data_offset;

        GgufKv *kv;
        size_t n_kv;
        NameIndex kv_index;

        GgufTensor *tensors;
        size_t n_tensors;
        NameIndex tensor_index;
};

GgufFile *gguf_free(GgufFile *f) {
        if (!f)
                return NULL;
        for (size_t i = 0; f->kv && i < f->n_kv; i++) {
                free(f->kv[i].key);
                free(f->kv[i].strings);
        }
        free(f->kv);
        free(f->kv_index.slots);
        for (size_t i = 0; f->tensors && i < f->n_tensors; i++)
                free((char *) f->tensors[i].name);
        free(f->tensors);
        free(f->tensor_index.slots);
        if (f->map)
                (void) munmap(f->map, f->map_size);
        free(f->name);
        free(f);
        return NULL;
}

/* ---- parser -------------------------------------------------------------- */

typedef struct Parser {
        GgufFile *f;
        const GgufLimits *limits;
        uint64_t pos;           /* invariant: pos <= f->size */
        char what[192];         /* the item being parsed, for messages */
        char *error;
} Parser;

/* Names and keys may hold any byte but NUL: escape what a terminal or the
 * journal would mangle, and keep messages short. */
static void escape_name(char *buf, size_t len, const char *s) {
        size_t o = 0, n = strlen(s);
        for (size_t i = 0; i < n && o + 8 < len; i++) {
                uint8_t c = (uint8_t) s[i];
                if (i >= 80) {
                        o += (size_t) snprintf(buf + o, len - o, "...");
                        break;
                }
                if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'')
                        buf[o++] = (char) c;
                else
                        o += (size_t) snprintf(buf + o, len - o, "\\x%02x", c);
        }
        buf[o] = 0;
}

static void set_what(Parser *p, const char *kind, size_t i, const char *name) {
        char esc[128];
        if (!name) {
                (void) snprintf(p->what, sizeof p->what, "%s %zu", kind, i);
                return;
        }
        escape_name(esc, sizeof esc, name);
        (void) snprintf(p->what, sizeof p->what, "%s %zu '%s'", kind, i, esc);
}

/* Records the first error with the file's name and the current item. */
_printf_(3, 4) static int fail(Parser *p, int r, const char *fmt, ...) {
        char *msg = NULL;
        va_list ap;

        if (p->error)
                return r;
        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        if (!msg || asprintf(&p->error, "%s: %s%s%s", p->f->name, p->what, p->what[0] ? ": " : "", msg) < 0)
                p->error = NULL;
        free(msg);
        return r;
}

static int fail_oom(Parser *p) {
        return fail(p, -ENOMEM, "out of memory");
}

static uint64_t remaining(const Parser *p) {
        return p->f->size - p->pos;
}

static int need(Parser *p, uint64_t n, const char *thing) {
        if (n > remaining(p))
                return fail(p, -EBADMSG,
                            "%s at byte %" PRIu64 " (%" PRIu64 " bytes) extends past the end of the file (%" PRIu64
                            " bytes)",
                            thing, p->pos, n, p->f->size);
        return 0;
}

static int read_uint(Parser *p, unsigned n, const char *thing, uint64_t *ret) {
        int r = need(p, n, thing);
        if (r < 0)
                return r;
        *ret = le_read(p->f->base + p->pos, n);
        p->pos += n;
        return 0;
}

static int read_u32(Parser *p, const char *thing, uint32_t *ret) {
        uint64_t v;
        int r = read_uint(p, 4, thing, &v);
        if (r < 0)
                return r;
        *ret = (uint32_t) v;
        return 0;
}

static int read_u64(Parser *p, const char *thing, uint64_t *ret) {
        return read_uint(p, 8, thing, ret);
}

/* A string's length is checked against max (a limit: -EMSGSIZE) and then the
 * file (-EBADMSG); the bytes stay in the file. */
static int read_string(Parser *p, const char *thing, uint64_t max, int over_max, const uint8_t **ret,
                       uint64_t *ret_len) {
        uint64_t len;
        int r = read_u64(p, thing, &len);
        if (r < 0)
                return r;
        if (len > max)
                return fail(p, over_max, "%s at byte %" PRIu64 " is %" PRIu64 " bytes long, over the limit of %" PRIu64,
                            thing, p->pos - 8, len, max);
        r = need(p, len, thing);
        if (r < 0)
                return r;
        *ret = p->f->base + p->pos;
        *ret_len = len;
        p->pos += len;
        return 0;
}

/* Keys and tensor names: non-empty, no NUL, copied NUL-terminated. */
static int read_name(Parser *p, const char *thing, uint64_t max, char **ret) {
        const uint8_t *s;
        uint64_t len;
        int r = read_string(p, thing, max, -EBADMSG, &s, &len);
        if (r < 0)
                return r;
        if (len == 0)
                return fail(p, -EBADMSG, "%s at byte %" PRIu64 " is empty", thing, p->pos - 8);
        if (memchr(s, 0, len))
                return fail(p, -EBADMSG, "%s at byte %" PRIu64 " contains a NUL byte", thing, p->pos - len - 8);
        char *c = malloc(len + 1);
        if (!c)
                return fail_oom(p);
        memcpy(c, s, len);
        c[len] = 0;
        *ret = c;
        return 0;
}

static int read_type(Parser *p, const char *thing, GgufType *ret) {
        uint32_t t;
        int r = read_u32(p, thing, &t);
        if (r < 0)
                return r;
        if (t >= GGUF_TYPE__MAX)
                return fail(p, -EBADMSG, "unknown %s %" PRIu32 " at byte %" PRIu64, thing, t, p->pos - 4);
        *ret = (GgufType) t;
        return 0;
}

static int check_count(Parser *p, uint64_t n, uint64_t max, const char *thing) {
        if (n > max)
                return fail(p, -EMSGSIZE, "%s %" PRIu64 " at byte %" PRIu64 " is over the limit of %" PRIu64, thing, n,
                            p->pos - 8, max);
        return 0;
}

/*
 * The elements of an array whose element type and count have been read.
 * ret_strings, if not NULL, receives the index of a string array.
 */
static int parse_array_elements(Parser *p, GgufType elem, uint64_t n, unsigned depth, uint64_t **ret_strings) {
        uint64_t bytes;
        int r;

        if (elem == GGUF_TYPE_STRING) {
                _cleanup_free_ uint64_t *index = NULL;

                /* each needs at least its length: bounds the index by the file */
                if (n > remaining(p) / 8)
                        return fail(p, -EBADMSG,
                                    "array of %" PRIu64 " strings at byte %" PRIu64
                                    " cannot fit in the rest of the file (%" PRIu64 " bytes)",
                                    n, p->pos, remaining(p));
                if (ret_strings && n > 0) {
                        index = malloc(n * sizeof(uint64_t));
                        if (!index)
                                return fail_oom(p);
                }
                for (uint64_t i = 0; i < n; i++) {
                        const uint8_t *s;
                        uint64_t len;
                        if (index)
                                index[i] = p->pos;
                        r = read_string(p, "array string", p->limits->max_string, -EMSGSIZE, &s, &len);
                        if (r < 0)
                                return r;
                }
                if (ret_strings)
                        *ret_strings = TAKE_PTR(index);
                return 0;
        }

        if (elem == GGUF_TYPE_ARRAY) {
                if (depth + 1 >= GGUF_MAX_NESTING)
                        return fail(p, -EBADMSG, "arrays nested deeper than %d levels are not supported (byte %" PRIu64 ")",
                                    GGUF_MAX_NESTING, p->pos);
                if (n > remaining(p) / MIN_INNER_ARRAY_BYTES)
                        return fail(p, -EBADMSG,
                                    "array of %" PRIu64 " arrays at byte %" PRIu64
                                    " cannot fit in the rest of the file (%" PRIu64 " bytes)",
                                    n, p->pos, remaining(p));
                for (uint64_t i = 0; i < n; i++) {
                        GgufType inner;
                        uint64_t count;
                        r = read_type(p, "array element type", &inner);
                        if (r < 0)
                                return r;
                        r = read_u64(p, "array length", &count);
                        if (r < 0)
                                return r;
                        r = check_count(p, count, p->limits->max_array, "array length");
                        if (r < 0)
                                return r;
                        r = parse_array_elements(p, inner, count, depth + 1, NULL);
                        if (r < 0)
                                return r;
                }
                return 0;
        }

        if (__builtin_mul_overflow(n, (uint64_t) gguf_types[elem].size, &bytes))
                return fail(p, -EBADMSG, "array of %" PRIu64 " %s at byte %" PRIu64 " overflows", n,
                            gguf_types[elem].name, p->pos);
        r = need(p, bytes, "array data");
        if (r < 0)
                return r;
        p->pos += bytes;
        return 0;
}

static int parse_value(Parser *p, GgufKv *kv) {
        int r;

        switch (kv->type) {
        case GGUF_TYPE_STRING:
                return read_string(p, "string value", p->limits->max_string, -EMSGSIZE, &kv->data, &kv->n);
        case GGUF_TYPE_ARRAY:
                r = read_type(p, "array element type", &kv->elem_type);
                if (r < 0)
                        return r;
                r = read_u64(p, "array length", &kv->n);
                if (r < 0)
                        return r;
                r = check_count(p, kv->n, p->limits->max_array, "array length");
                if (r < 0)
                        return r;
                kv->data = p->f->base + p->pos;
                return parse_array_elements(p, kv->elem_type, kv->n, 0, &kv->strings);
        default:
                r = need(p, gguf_types[kv->type].size, "value");
                if (r < 0)
                        return r;
                kv->data = p->f->base + p->pos;
                p->pos += gguf_types[kv->type].size;
                return 0;
        }
}

static int parse_header(Parser *p, uint64_t *ret_n_tensors, uint64_t *ret_n_kv) {
        const uint8_t *b = p->f->base;
        uint32_t v;
        int r;

        snprintf(p->what, sizeof p->what, "header");
        r = need(p, 4, "magic");
        if (r < 0)
                return r;
        if (memcmp(b, "GGUF", 4) != 0)
                return fail(p, -EBADMSG, "not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")", b[0], b[1],
                            b[2], b[3]);
        p->pos = 4;
        r = read_u32(p, "version", &v);
        if (r < 0)
                return r;
        if (v != 2 && v != 3) {
                if ((v & 0xffff) == 0 && __builtin_bswap32(v) <= 3)
                        return fail(p, -EPROTONOSUPPORT,
                                    "big-endian GGUF file (version %" PRIu32 " byte-swapped) is not supported", __builtin_bswap32(v));
                return fail(p, -EPROTONOSUPPORT, "GGUF version %" PRIu32 " is not supported (only 2 and 3)", v);
        }
        p->f->version = v;

        r = read_u64(p, "tensor count", ret_n_tensors);
        if (r < 0)
                return r;
        r = check_count(p, *ret_n_tensors, p->limits->max_tensors, "tensor count");
        if (r < 0)
                return r;
        r = read_u64(p, "key/value count", ret_n_kv);
        if (r < 0)
                return r;
        return check_count(p, *ret_n_kv, p->limits->max_kv, "key/value count");
}

static int parse_kvs(Parser *p, uint64_t n) {
        GgufFile *f = p->f;
        int r;

        if (n > remaining(p) / MIN_KV_BYTES)
                return fail(p, -EBADMSG, "%" PRIu64 " key/value pairs cannot fit in the file (%" PRIu64 " bytes)", n,
                            f->size);
        f->kv = calloc(MAX(n, 1), sizeof(GgufKv));
        if (!f->kv)
                return fail_oom(p);
        f->n_kv = n;
        r = name_index_init(&f->kv_index, n);
        if (r < 0)
                return fail_oom(p);

        for (size_t i = 0; i < n; i++) {
                GgufKv *kv = f->kv + i;

                set_what(p, "key", i, NULL);
                r = read_name(p, "key", GGUF_MAX_KEY, &kv->key);
                if (r < 0)
                        return r;
                set_what(p, "key", i, kv->key);
                size_t other = name_index_insert(&f->kv_index, kv->key, i);
                if (other != SIZE_MAX)
                        return fail(p, -EBADMSG, "duplicate key (also key %zu)", other);
                r = read_type(p, "value type", &kv->type);
                if (r < 0)
                        return r;
                r = parse_value(p, kv);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int parse_alignment(Parser *p) {
        GgufFile *f = p->f;
        size_t i = name_index_find(&f->kv_index, "general.alignment");

        f->alignment = GGUF_DEFAULT_ALIGNMENT;
        if (i == SIZE_MAX)
                return 0;
        set_what(p, "key", i, "general.alignment");
        if (f->kv[i].type != GGUF_TYPE_UINT32)
                return fail(p, -EBADMSG, "has type %s, expected uint32", gguf_types[f->kv[i].type].name);
        uint32_t a = (uint32_t) le_read(f->kv[i].data, 4);
        if (a == 0 || (a & (a - 1)) != 0 || a > GGUF_MAX_ALIGNMENT)
                return fail(p, -EBADMSG, "alignment %" PRIu32 " is not a power of two up to %u", a, GGUF_MAX_ALIGNMENT);
        f->alignment = a;
        return 0;
}

static int parse_tensor_infos(Parser *p, uint64_t n) {
        GgufFile *f = p->f;
        int r;

        snprintf(p->what, sizeof p->what, "tensor table");
        if (n > remaining(p) / MIN_TENSOR_BYTES)
                return fail(p, -EBADMSG, "%" PRIu64 " tensors cannot fit in the rest of the file (%" PRIu64 " bytes)", n,
                            remaining(p));
        f->tensors = calloc(MAX(n, 1), sizeof(GgufTensor));
        if (!f->tensors)
                return fail_oom(p);
        f->n_tensors = n;
        r = name_index_init(&f->tensor_index, n);
        if (r < 0)
                return fail_oom(p);

        for (size_t i = 0; i < n; i++) {
                GgufTensor *t = f->tensors + i;
                char *name = NULL;
                uint32_t type;

                set_what(p, "tensor", i, NULL);
                r = read_name(p, "name", GGUF_MAX_NAME, &name);
                if (r < 0)
                        return r;
                t->name = name;
                set_what(p, "tensor", i, name);
                size_t other = name_index_insert(&f->tensor_index, name, i);
                if (other != SIZE_MAX)
                        return fail(p, -EBADMSG, "duplicate tensor name (also tensor %zu)", other);

                r = read_u32(p, "dimension count", &t->n_dims);
                if (r < 0)
                        return r;
                if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
                        return fail(p, -EBADMSG, "has %" PRIu32 " dimensions (must be 1 to %d)", t->n_dims, GGUF_MAX_DIMS);
                for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
                        t->ne[d] = 1;
                        if (d >= t->n_dims)
                                continue;
                        r = read_u64(p, "dimension", &t->ne[d]);
                        if (r < 0)
                                return r;
                        /* ggml counts elements in int64_t */
                        if (t->ne[d] > INT64_MAX)
                                return fail(p, -EBADMSG, "dimension %" PRIu32 " is %" PRIu64 ", too large", d, t->ne[d]);
                }
                r = read_u32(p, "type", &type);
                if (r < 0)
                        return r;
                /* Types the engine cannot run are the loader's business; ids
                 * without a known block layout cannot even be sized. */
                if (ggml_type_block_elems((GgmlType) type) == 0)
                        return fail(p, -EBADMSG, "unknown ggml type %" PRIu32, type);
                t->type = (GgmlType) type;
                r = read_u64(p, "data offset", &t->offset);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Sizes and places every tensor's data, now that the data section is known. */
static int place_tensors(Parser *p) {
        GgufFile *f = p->f;

        for (size_t i = 0; i < f->n_tensors; i++) {
                GgufTensor *t = f->tensors + i;
                uint32_t block = ggml_type_block_elems(t->type);
                uint64_t rows, elems, start, end;

                set_what(p, "tensor", i, t->name);
                if (t->ne[0] % block != 0)
                        return fail(p, -EBADMSG, "row length %" PRIu64 " is not a multiple of the %s block size %" PRIu32,
                                    t->ne[0], ggml_type_name(t->type), block);
                if (__builtin_mul_overflow(t->ne[1], t->ne[2], &rows) || __builtin_mul_overflow(rows, t->ne[3], &rows) ||
                    __builtin_mul_overflow(rows, t->ne[0], &elems) || elems > INT64_MAX)
                        return fail(p, -EBADMSG,
                                    "element count %" PRIu64 " x %" PRIu64 " x %" PRIu64 " x %" PRIu64 " overflows",
                                    t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
                /* ne[0] * rows fits, so bytes per row (<= 4 * ne[0]) times rows can still overflow: check */
                if (__builtin_mul_overflow(ggml_row_bytes(t->type, t->ne[0]), rows, &t->size))
                        return fail(p, -EBADMSG, "data size overflows");
                if (t->offset % f->alignment != 0)
                        return fail(p, -EBADMSG, "data offset %" PRIu64 " is not a multiple of the alignment %" PRIu32,
                                    t->offset, f->alignment);
                if (__builtin_add_overflow(f->data_offset, t->offset, &start) ||
                    __builtin_add_overflow(start, t->size, &end))
                        return fail(p, -EBADMSG, "data offset %" PRIu64 " (%" PRIu64 " bytes) overflows", t->offset,
                                    t->size);
                if (end > f->size)
                        return fail(p, -EBADMSG,
                                    "data [%" PRIu64 ", %" PRIu64 ") extends past the end of the file (%" PRIu64 " bytes)",
                                    start, end, f->size);
                t->data = f->base + start;
        }
        return 0;
}

static int parse(const void *data, size_t size, const char *name, const GgufLimits *limits, GgufFile **ret,
                 char **ret_error) {
        _cleanup_(gguf_freep) GgufFile *f = NULL;
        Parser p = { .limits = limits ?: &default_limits };
        uint64_t n_tensors = 0, n_kv = 0;
        int r;

        f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        f->name = strdup(name);
        if (!f->name)
                return -ENOMEM;
        f->base = data;
        f->size = size;
        p.f = f;

        r = parse_header(&p, &n_tensors, &n_kv);
        if (r >= 0)
                r = parse_kvs(&p, n_kv);
        if (r >= 0)
                r = parse_alignment(&p);
        if (r >= 0)
                r = parse_tensor_infos(&p, n_tensors);
        if (r >= 0) {
                uint64_t a = f->alignment;
                /* pos <= size < 2^63 and a <= 2^20: no overflow */
                f->data_offset = (p.pos + a - 1) / a * a;
                r = place_tensors(&p);
        }
        if (r < 0) {
                if (ret_error)
                        *ret_error = TAKE_PTR(p.error);
                free(p.error);
                return r;
        }
        *ret = TAKE_PTR(f);
        return 0;
}

int gguf_parse_buffer_named(const void *data, size_t size, const char *name, const GgufLimits *limits, GgufFile **ret,
                            char **ret_error) {
        if (!data && size > 0)
                return -EINVAL;
        if (!ret)
                return -EINVAL;
        return parse(size > 0 ? data : "", size, name ?: "buffer", limits, ret, ret_error);
}

int gguf_parse_buffer(const void *data, size_t size, const GgufLimits *limits, GgufFile **ret, char **ret_error) {
        return gguf_parse_buffer_named(data, size, NULL, limits, ret, ret_error);
}

_printf_(3, 4) static int open_fail(char **ret_error, int r, const char *fmt, ...) {
        va_list ap;
        if (!ret_error)
                return r;
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
        return r;
}

int gguf_open(const char *path, const GgufLimits *limits, GgufFile **ret, char **ret_error) {
        const GgufLimits *l = limits ?: &default_limits;
        _cleanup_close_ int fd = -EBADF;
        GgufFile *f = NULL;
        struct stat st;
        void *map;
        int r;

        if (!path || !ret)
                return -EINVAL;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                r = negative_errno();
                return open_fail(ret_error, r, "%s: %s", path, strerror(-r));
        }
        if (fstat(fd, &st) < 0) {
                r = negative_errno();
                return open_fail(ret_error, r, "%s: %s", path, strerror(-r));
        }
        if (S_ISDIR(st.st_mode))
                return open_fail(ret_error, -EISDIR, "%s: is a directory", path);
        if (!S_ISREG(st.st_mode))
                return open_fail(ret_error, -EINVAL, "%s: not a regular file", path);
        if (l->max_file_size > 0 && (uint64_t) st.st_size > l->max_file_size)
                return open_fail(ret_error, -EMSGSIZE, "%s: file of %" PRIu64 " bytes is over the limit of %" PRIu64 " bytes",
                                 path, (uint64_t) st.st_size, l->max_file_size);
        if (st.st_size == 0)
                return open_fail(ret_error, -EBADMSG, "%s: empty file", path);
        if ((uint64_t) st.st_size > SIZE_MAX)
                return open_fail(ret_error, -EFBIG, "%s: too large to map", path);

        /* MAP_PRIVATE and read-only: the weights are never written, and a
         * private map keeps another process's writes from reaching us
         * through pages not yet faulted in... as far as Linux allows: a file
         * truncated under us still raises SIGBUS, which nothing portable
         * prevents (model files are replaced by rename, not rewritten). */
        map = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
                r = negative_errno();
                return open_fail(ret_error, r, "%s: mmap: %s", path, strerror(-r));
        }
        /* Gigabytes of weights have no place in a core dump. */
        (void) madvise(map, (size_t) st.st_size, MADV_DONTDUMP);
        /* The metadata (vocabularies run to megabytes) is read right away. */
        (void) madvise(map, MIN((size_t) st.st_size, (size_t) GGUF_PREFETCH_BYTES), MADV_WILLNEED);

        r = parse(map, (size_t) st.st_size, path, l, &f, ret_error);
        if (r < 0) {
                (void) munmap(map, (size_t) st.st_size);
                return r;
        }
        f->map = map;
        f->map_size = (size_t) st.st_size;
        *ret = f;
        return 0;
}

/* ---- accessors ----------------------------------------------------------- */

uint32_t gguf_version(const GgufFile *f) {
        return f ? f->version : 0;
}

uint64_t gguf_file_size(const GgufFile *f) {
        return f ? f->size : 0;
}

uint32_t gguf_alignment(const GgufFile *f) {
        return f ? f->alignment : 0;
}

uint64_t gguf_data_offset(const GgufFile *f) {
        return f ? MIN(f->data_offset, f->size) : 0;
}

size_t gguf_n_kv(const GgufFile *f) {
        return f ? f->n_kv : 0;
}

const char *gguf_kv_key(const GgufFile *f, size_t i) {
        return f && i < f->n_kv ? f->kv[i].key : NULL;
}

GgufType gguf_kv_type(const GgufFile *f, size_t i) {
        return f && i < f->n_kv ? f->kv[i].type : GGUF_TYPE__MAX;
}

int64_t gguf_find_key(const GgufFile *f, const char *key) {
        if (!f || !key)
                return -EINVAL;
        size_t i = name_index_find(&f->kv_index, key);
        return i == SIZE_MAX ? -ENOENT : (int64_t) i;
}

static int lookup(const GgufFile *f, const char *key, const GgufKv **ret) {
        if (!f || !key)
                return -EINVAL;
        size_t i = name_index_find(&f->kv_index, key);
        if (i == SIZE_MAX)
                return -ENOENT;
        *ret = f->kv + i;
        return 0;
}

/* An integer value of any width, with its signedness. */
typedef struct IntValue {
        bool is_signed;
        int64_t s;
        uint64_t u;
} IntValue;

static int lookup_int(const GgufFile *f, const char *key, IntValue *ret) {
        const GgufKv *kv;
        int r = lookup(f, key, &kv);
        if (r < 0)
                return r;
        uint64_t raw = le_read(kv->data, gguf_types[kv->type].size);
        switch (kv->type) {
        case GGUF_TYPE_UINT8:
        case GGUF_TYPE_UINT16:
        case GGUF_TYPE_UINT32:
        case GGUF_TYPE_UINT64:
                *ret = (IntValue) { .u = raw };
                return 0;
        case GGUF_TYPE_INT8:
                *ret = (IntValue) { true, (int8_t) raw, 0 };
                return 0;
        case GGUF_TYPE_INT16:
                *ret = (IntValue) { true, (int16_t) raw, 0 };
                return 0;
        case GGUF_TYPE_INT32:
                *ret = (IntValue) { true, (int32_t) raw, 0 };
                return 0;
        case GGUF_TYPE_INT64:
                *ret = (IntValue) { true, (int64_t) raw, 0 };
                return 0;
        default:
                return -EBADMSG;
        }
}

static int get_unsigned(const GgufFile *f, const char *key, uint64_t max, uint64_t *ret) {
        IntValue v;
        int r = lookup_int(f, key, &v);
        if (r < 0)
                return r;
        if (v.is_signed) {
                if (v.s < 0)
                        return -ERANGE;
                v.u = (uint64_t) v.s;
        }
        if (v.u > max)
                return -ERANGE;
        *ret = v.u;
        return 0;
}

static int get_signed(const GgufFile *f, const char *key, int64_t min, int64_t max, int64_t *ret) {
        IntValue v;
        int r = lookup_int(f, key, &v);
        if (r < 0)
                return r;
        if (!v.is_signed) {
                if (v.u > (uint64_t) INT64_MAX)
                        return -ERANGE;
                v.s = (int64_t) v.u;
        }
        if (v.s < min || v.s > max)
                return -ERANGE;
        *ret = v.s;
        return 0;
}

int gguf_get_u32(const GgufFile *f, const char *key, uint32_t *ret) {
        uint64_t v;
        int r = get_unsigned(f, key, UINT32_MAX, &v);
        if (r < 0)
                return r;
        *ret = (uint32_t) v;
        return 0;
}

int gguf_get_u64(const GgufFile *f, const char *key, uint64_t *ret) {
        return get_unsigned(f, key, UINT64_MAX, ret);
}

int gguf_get_i32(const GgufFile *f, const char *key, int32_t *ret) {
        int64_t v;
        int r = get_signed(f, key, INT32_MIN, INT32_MAX, &v);
        if (r < 0)
                return r;
        *ret = (int32_t) v;
        return 0;
}

int gguf_get_i64(const GgufFile *f, const char *key, int64_t *ret) {
        return get_signed(f, key, INT64_MIN, INT64_MAX, ret);
}

int gguf_get_f64(const GgufFile *f, const char *key, double *ret) {
        const GgufKv *kv;
        int r = lookup(f, key, &kv);
        if (r < 0)
                return r;
        if (kv->type == GGUF_TYPE_FLOAT32) {
                uint32_t bits = (uint32_t) le_read(kv->data, 4);
                float v;
                memcpy(&v, &bits, sizeof v);
                *ret = v;
        } else if (kv->type == GGUF_TYPE_FLOAT64) {
                uint64_t bits = le_read(kv->data, 8);
                memcpy(ret, &bits, sizeof *ret);
        } else
                return -EBADMSG;
        return 0;
}

int gguf_get_f32(const GgufFile *f, const char *key, float *ret) {
        double v;
        int r = gguf_get_f64(f, key, &v);
        if (r < 0)
                return r;
        *ret = (float) v;
        return 0;
}

int gguf_get_bool(const GgufFile *f, const char *key, bool *ret) {
        const GgufKv *kv;
        int r = lookup(f, key, &kv);
        if (r < 0)
                return r;
        if (kv->type != GGUF_TYPE_BOOL)
                return -EBADMSG;
        *ret = kv->data[0] != 0;
        return 0;
}

int gguf_get_string(const GgufFile *f, const char *key, const char **ret, size_t *ret_len) {
        const GgufKv *kv;
        int r = lookup(f, key, &kv);
        if (r < 0)
                return r;
        if (kv->type != GGUF_TYPE_STRING)
                return -EBADMSG;
        *ret = (const char *) kv->data;
        if (ret_len)
                *ret_len = (size_t) kv->n;
        return 0;
}

int gguf_get_array(const GgufFile *f, const char *key, GgufType *ret_type, uint64_t *ret_n, const void **ret_data) {
        const GgufKv *kv;
        int r = lookup(f, key, &kv);
        if (r < 0)
                return r;
        if (kv->type != GGUF_TYPE_ARRAY)
                return -EBADMSG;
        if (ret_type)
                *ret_type = kv->elem_type;
        if (ret_n)
                *ret_n = kv->n;
        if (ret_data)
                *ret_data = kv->data;
        return 0;
}

int gguf_get_array_string(const GgufFile *f, const char *key, uint64_t i, const char **ret, size_t *ret_len) {
        const GgufKv *kv;
        int r = lookup(f, key, &kv);
        if (r < 0)
                return r;
        if (kv->type != GGUF_TYPE_ARRAY || kv->elem_type != GGUF_TYPE_STRING)
                return -EBADMSG;
        if (i >= kv->n)
                return -ERANGE;
        const uint8_t *s = f->base + kv->strings[i];
        *ret = (const char *) s + 8;
        if (ret_len)
                *ret_len = (size_t) le_read(s, 8);
        return 0;
}

size_t gguf_n_tensors(const GgufFile *f) {
        return f ? f->n_tensors : 0;
}

const GgufTensor *gguf_tensor(const GgufFile *f, size_t i) {
        return f && i < f->n_tensors ? f->tensors + i : NULL;
}

const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name) {
        if (!f || !name)
                return NULL;
        size_t i = name_index_find(&f->tensor_index, name);
        return i == SIZE_MAX ? NULL : f->tensors + i;
}

/* ---- writer -------------------------------------------------------------- */

typedef struct Buf {
        uint8_t *p;
        size_t n, cap;
} Buf;

static int buf_grow(Buf *b, size_t extra) {
        size_t want;
        if (__builtin_add_overflow(b->n, extra, &want))
                return -ENOMEM;
        if (want <= b->cap)
                return 0;
        size_t cap = MAX(b->cap * 2, MAX(want, (size_t) 256));
        uint8_t *p = realloc(b->p, cap);
        if (!p)
                return -ENOMEM;
        b->p = p;
        b->cap = cap;
        return 0;
}

static int buf_put(Buf *b, const void *data, size_t n) {
        int r = buf_grow(b, n);
        if (r < 0)
                return r;
        if (n > 0)
                memcpy(b->p + b->n, data, n);
        b->n += n;
        return 0;
}

static int buf_put_le(Buf *b, uint64_t v, unsigned n) {
        int r = buf_grow(b, n);
        if (r < 0)
                return r;
        le_write(b->p + b->n, v, n);
        b->n += n;
        return 0;
}

static int buf_put_string(Buf *b, const char *s, size_t len) {
        int r = buf_put_le(b, len, 8);
        if (r < 0)
                return r;
        return buf_put(b, s, len);
}

typedef struct WriterTensor {
        char *name;
        GgmlType type;
        uint32_t n_dims;
        uint64_t ne[GGUF_MAX_DIMS];
        uint64_t row_bytes, n_rows, size, offset;
        void *data;             /* the copy, or NULL when produced by fn */
        GgufRowsFn fn;
        void *userdata;
} WriterTensor;

struct GgufWriter {
        Buf kv;                 /* the serialised pairs, in order */
        char **keys;
        size_t n_keys;
        uint32_t alignment;
        WriterTensor *tensors;
        size_t n_tensors;
};

int gguf_writer_new(GgufWriter **ret) {
        GgufWriter *w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->alignment = GGUF_DEFAULT_ALIGNMENT;
        *ret = w;
        return 0;
}

GgufWriter *gguf_writer_free(GgufWriter *w) {
        if (!w)
                return NULL;
        free(w->kv.p);
        for (size_t i = 0; i < w->n_keys; i++)
                free(w->keys[i]);
        free(w->keys);
        for (size_t i = 0; i < w->n_tensors; i++) {
                free(w->tensors[i].name);
                free(w->tensors[i].data);
        }
        free(w->tensors);
        free(w);
        return NULL;
}

/* Checks and records the key, then writes it and the value type. */
static int writer_begin_kv(GgufWriter *w, const char *key, GgufType type) {
        if (!w || !key)
                return -EINVAL;
        size_t len = strlen(key);
        if (len == 0 || len > GGUF_MAX_KEY)
                return -EINVAL;
        for (size_t i = 0; i < w->n_keys; i++)
                if (streq(w->keys[i], key))
                        return -EEXIST;
        char **keys = realloc(w->keys, (w->n_keys + 1) * sizeof(char *));
        if (!keys)
                return -ENOMEM;
        w->keys = keys;
        char *copy = strdup(key);
        if (!copy)
                return -ENOMEM;
        size_t mark = w->kv.n;
        int r = buf_put_string(&w->kv, key, len);
        if (r >= 0)
                r = buf_put_le(&w->kv, type, 4);
        if (r < 0) {
                w->kv.n = mark;
                free(copy);
                return r;
        }
        w->keys[w->n_keys++] = copy;
        return 0;
}

/* Undoes writer_begin_kv when the value could not be written. */
static int writer_abort_kv(GgufWriter *w, size_t mark, int r) {
        w->kv.n = mark;
        free(w->keys[--w->n_keys]);
        return r;
}

static bool is_scalar(GgufType t) {
        return (unsigned) t < GGUF_TYPE__MAX && gguf_types[t].size > 0;
}

/* Native value at p (bool as C bool, floats as float/double) to its bits. */
static uint64_t scalar_bits(GgufType t, const void *p) {
        switch (t) {
        case GGUF_TYPE_UINT8: return *(const uint8_t *) p;
        case GGUF_TYPE_INT8: return (uint8_t) *(const int8_t *) p;
        case GGUF_TYPE_UINT16: return *(const uint16_t *) p;
        case GGUF_TYPE_INT16: return (uint16_t) *(const int16_t *) p;
        case GGUF_TYPE_UINT32: return *(const uint32_t *) p;
        case GGUF_TYPE_INT32: return (uint32_t) *(const int32_t *) p;
        case GGUF_TYPE_UINT64: return *(const uint64_t *) p;
        case GGUF_TYPE_INT64: return (uint64_t) *(const int64_t *) p;
        case GGUF_TYPE_BOOL: return *(const bool *) p ? 1 : 0;
        case GGUF_TYPE_FLOAT32: {
                uint32_t b;
                memcpy(&b, p, 4);
                return b;
        }
        case GGUF_TYPE_FLOAT64: {
                uint64_t b;
                memcpy(&b, p, 8);
                return b;
        }
        default:
                return 0;
        }
}

/* Bytes of one native element in the caller's array. */
static size_t native_size(GgufType t) {
        return t == GGUF_TYPE_BOOL ? sizeof(bool) : gguf_types[t].size;
}

int gguf_writer_add_scalar(GgufWriter *w, const char *key, GgufType type, const void *value) {
        if (!is_scalar(type) || !value)
                return -EINVAL;
        uint64_t bits = scalar_bits(type, value);
        if (key && streq(key, "general.alignment")) {
                /* the one key the format itself interprets */
                if (type != GGUF_TYPE_UINT32 || bits == 0 || (bits & (bits - 1)) != 0 || bits > GGUF_MAX_ALIGNMENT)
                        return -EINVAL;
        }
        size_t mark = w ? w->kv.n : 0;
        int r = writer_begin_kv(w, key, type);
        if (r < 0)
                return r;
        r = buf_put_le(&w->kv, bits, gguf_types[type].size);
        if (r < 0)
                return writer_abort_kv(w, mark, r);
        if (streq(key, "general.alignment"))
                w->alignment = (uint32_t) bits;
        return 0;
}

int gguf_writer_add_u32(GgufWriter *w, const char *key, uint32_t v) {
        return gguf_writer_add_scalar(w, key, GGUF_TYPE_UINT32, &v);
}

int gguf_writer_add_i32(GgufWriter *w, const char *key, int32_t v) {
        return gguf_writer_add_scalar(w, key, GGUF_TYPE_INT32, &v);
}

int gguf_writer_add_u64(GgufWriter *w, const char *key, uint64_t v) {
        return gguf_writer_add_scalar(w, key, GGUF_TYPE_UINT64, &v);
}

int gguf_writer_add_f32(GgufWriter *w, const char *key, float v) {
        return gguf_writer_add_scalar(w, key, GGUF_TYPE_FLOAT32, &v);
}

int gguf_writer_add_bool(GgufWriter *w, const char *key, bool v) {
        return gguf_writer_add_scalar(w, key, GGUF_TYPE_BOOL, &v);
}

int gguf_writer_add_string(GgufWriter *w, const char *key, const char *v) {
        if (!v)
                return -EINVAL;
        size_t mark = w ? w->kv.n : 0;
        int r = writer_begin_kv(w, key, GGUF_TYPE_STRING);
        if (r < 0)
                return r;
        r = buf_put_string(&w->kv, v, strlen(v));
        if (r < 0)
                return writer_abort_kv(w, mark, r);
        return 0;
}

int gguf_writer_add_array(GgufWriter *w, const char *key, GgufType type, const void *data, uint64_t n) {
        const uint8_t *src = data;
        size_t total;

        if (!is_scalar(type) || (!data && n > 0))
                return -EINVAL;
        if (n > SIZE_MAX || __builtin_mul_overflow((size_t) n, (size_t) gguf_types[type].size, &total))
                return -ENOMEM;
        size_t mark = w ? w->kv.n : 0;
        int r = writer_begin_kv(w, key, GGUF_TYPE_ARRAY);
        if (r < 0)
                return r;
        r = buf_put_le(&w->kv, type, 4);
        if (r >= 0)
                r = buf_put_le(&w->kv, n, 8);
        if (r >= 0)
                r = buf_grow(&w->kv, total);
        if (r < 0)
                return writer_abort_kv(w, mark, r);
        for (uint64_t i = 0; i < n; i++) {
                le_write(w->kv.p + w->kv.n, scalar_bits(type, src + i * native_size(type)), gguf_types[type].size);
                w->kv.n += gguf_types[type].size;
        }
        return 0;
}

int gguf_writer_add_array_string(GgufWriter *w, const char *key, const char *const *v, uint64_t n) {
        if (!v && n > 0)
                return -EINVAL;
        for (uint64_t i = 0; i < n; i++)
                if (!v[i])
                        return -EINVAL;
        size_t mark = w ? w->kv.n : 0;
        int r = writer_begin_kv(w, key, GGUF_TYPE_ARRAY);
        if (r < 0)
                return r;
        r = buf_put_le(&w->kv, GGUF_TYPE_STRING, 4);
        if (r >= 0)
                r = buf_put_le(&w->kv, n, 8);
        for (uint64_t i = 0; r >= 0 && i < n; i++)
                r = buf_put_string(&w->kv, v[i], strlen(v[i]));
        if (r < 0)
                return writer_abort_kv(w, mark, r);
        return 0;
}

static int writer_add_tensor(GgufWriter *w, const char *name, GgmlType type, uint32_t n_dims, const uint64_t *ne,
                             const void *data, GgufRowsFn fn, void *userdata) {
        WriterTensor t = { .type = type, .n_dims = n_dims, .fn = fn, .userdata = userdata };
        uint64_t elems;

        if (!w || !name || !ne || (!data && !fn))
                return -EINVAL;
        size_t len = strlen(name);
        if (len == 0 || len > GGUF_MAX_NAME || n_dims < 1 || n_dims > GGUF_MAX_DIMS)
                return -EINVAL;
        if (ggml_type_block_elems(type) == 0 || ne[0] % ggml_type_block_elems(type) != 0)
                return -EINVAL;
        for (size_t i = 0; i < w->n_tensors; i++)
                if (streq(w->tensors[i].name, name))
                        return -EEXIST;
        t.n_rows = 1;
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
                t.ne[d] = d < n_dims ? ne[d] : 1;
                if (d > 0 && __builtin_mul_overflow(t.n_rows, t.ne[d], &t.n_rows))
                        return -EOVERFLOW;
        }
        t.row_bytes = ggml_row_bytes(type, t.ne[0]);
        if (__builtin_mul_overflow(t.n_rows, t.ne[0], &elems) || elems > INT64_MAX ||
            __builtin_mul_overflow(t.row_bytes, t.n_rows, &t.size) || t.size > SIZE_MAX)
                return -EOVERFLOW;
        WriterTensor *ts = realloc(w->tensors, (w->n_tensors + 1) * sizeof(WriterTensor));
        if (!ts)
                return -ENOMEM;
        w->tensors = ts;
        _cleanup_free_ char *copy = strdup(name);
        if (!copy)
                return -ENOMEM;
        if (data) {
                t.data = malloc(MAX(t.size, (uint64_t) 1));
                if (!t.data)
                        return -ENOMEM;
                memcpy(t.data, data, t.size);
        }
        t.name = TAKE_PTR(copy);
        w->tensors[w->n_tensors++] = t;
        return 0;
}

int gguf_writer_add_tensor(GgufWriter *w, const char *name, GgmlType type, uint32_t n_dims, const uint64_t *ne,
                           const void *data) {
        return writer_add_tensor(w, name, type, n_dims, ne, data, NULL, NULL);
}

int gguf_writer_add_tensor_rows(GgufWriter *w, const char *name, GgmlType type, uint32_t n_dims, const uint64_t *ne,
                                GgufRowsFn fn, void *userdata) {
        if (!fn)
                return -EINVAL;
        return writer_add_tensor(w, name, type, n_dims, ne, NULL, fn, userdata);
}

static int write_all(int fd, const void *data, size_t n) {
        const uint8_t *p = data;
        while (n > 0) {
                ssize_t k = write(fd, p, MIN(n, (size_t) 1 << 30));
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

static int write_padding(int fd, uint64_t pos, uint32_t alignment) {
        static const uint8_t zeros[4096];
        uint64_t pad = (alignment - pos % alignment) % alignment;
        while (pad > 0) {
                size_t k = (size_t) MIN(pad, (uint64_t) sizeof zeros);
                int r = write_all(fd, zeros, k);
                if (r < 0)
                        return r;
                pad -= k;
        }
        return 0;
}

/* Rows are produced in chunks of about this many bytes (at least one row). */
#define WRITER_CHUNK_BYTES (8u << 20)

static int write_tensor_data(int fd, const WriterTensor *t) {
        if (t->data)
                return write_all(fd, t->data, (size_t) t->size);
        if (t->size == 0)
                return 0;

        uint64_t chunk_rows = MAX((uint64_t) 1, WRITER_CHUNK_BYTES / MAX(t->row_bytes, (uint64_t) 1));
        chunk_rows = MIN(chunk_rows, t->n_rows);
        _cleanup_free_ void *buf = malloc((size_t) (chunk_rows * t->row_bytes));
        if (!buf)
                return -ENOMEM;
        for (uint64_t row = 0; row < t->n_rows; row += chunk_rows) {
                uint64_t n = MIN(chunk_rows, t->n_rows - row);
                int r = t->fn(t->userdata, row, n, buf);
                if (r < 0)
                        return r;
                r = write_all(fd, buf, (size_t) (n * t->row_bytes));
                if (r < 0)
                        return r;
        }
        return 0;
}

static int writer_write_fd(GgufWriter *w, int fd) {
        _cleanup_free_ uint8_t *header_p = NULL;
        Buf h = { 0 };
        uint64_t offset = 0;
        int r;

        /* Final offsets, now that the alignment cannot change any more. */
        for (size_t i = 0; i < w->n_tensors; i++) {
                WriterTensor *t = w->tensors + i;
                uint64_t a = w->alignment;
                if (__builtin_add_overflow(offset, a - 1, &offset))
                        return -EOVERFLOW;
                t->offset = offset / a * a;
                if (__builtin_add_overflow(t->offset, t->size, &offset))
                        return -EOVERFLOW;
        }

        r = buf_put(&h, "GGUF", 4);
        if (r >= 0)
                r = buf_put_le(&h, 3, 4);
        if (r >= 0)
                r = buf_put_le(&h, w->n_tensors, 8);
        if (r >= 0)
                r = buf_put_le(&h, w->n_keys, 8);
        if (r >= 0)
                r = buf_put(&h, w->kv.p, w->kv.n);
        for (size_t i = 0; r >= 0 && i < w->n_tensors; i++) {
                const WriterTensor *t = w->tensors + i;
                r = buf_put_string(&h, t->name, strlen(t->name));
                if (r >= 0)
                        r = buf_put_le(&h, t->n_dims, 4);
                for (uint32_t d = 0; r >= 0 && d < t->n_dims; d++)
                        r = buf_put_le(&h, t->ne[d], 8);
                if (r >= 0)
                        r = buf_put_le(&h, t->type, 4);
                if (r >= 0)
                        r = buf_put_le(&h, t->offset, 8);
        }
        header_p = h.p;
        if (r < 0)
                return r;

        r = write_all(fd, h.p, h.n);
        if (r < 0)
                return r;
        r = write_padding(fd, h.n, w->alignment);
        if (r < 0)
                return r;
        for (size_t i = 0; i < w->n_tensors; i++) {
                const WriterTensor *t = w->tensors + i;
                r = write_tensor_data(fd, t);
                if (r < 0)
                        return r;
                r = write_padding(fd, t->size, w->alignment);
                if (r < 0)
                        return r;
        }
        return 0;
}

int gguf_writer_write_file(GgufWriter *w, const char *path) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (!w || !path)
                return -EINVAL;
        /* Next to the target and renamed over it: a reader never sees half a model. */
        if (asprintf(&tmp, "%s.XXXXXX", path) < 0)
                return -ENOMEM;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        if (fchmod(fd, 0644) < 0) {
                r = negative_errno();
                goto fail;
        }
        r = writer_write_fd(w, fd);
        if (r < 0)
                goto fail;
        if (close(TAKE_FD(fd)) < 0) {
                r = negative_errno();
                goto fail;
        }
        if (rename(tmp, path) < 0) {
                r = negative_errno();
                goto fail;
        }
        return 0;
fail:
        (void) unlink(tmp);
        return r;
}
