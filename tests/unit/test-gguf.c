/* SPDX-License-Identifier: MIT */
/*
 * GGUF: writer -> parser round trips, the real model files in ../shared, the
 * synthetic models of inferd-mkmodel, and hostile files, each of which must
 * get its own error, never a crash.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fileio.h"
#include "gguf.h"
#include "macro.h"
#include "quant.h"

extern char **environ;

static char tmpdir[] = "/tmp/test-gguf-XXXXXX";

static int setup(void **state) {
        return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        return system(cmd) == 0 ? 0 : -1;
}

static char *tmp_path(const char *name) {
        static char buf[256];
        snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
        return buf;
}

/* Writes w to a temporary file and reads it back. */
static void write_to_memory(GgufWriter *w, uint8_t **ret, size_t *ret_size) {
        char *path = tmp_path("mem.gguf");
        char *data;
        assert_int_equal(gguf_writer_write_file(w, path), 0);
        assert_int_equal(read_full_file(path, 64u << 20, &data, ret_size), 0);
        *ret = (uint8_t *) data;
        (void) unlink(path);
}

static GgufFile *parse_ok(const void *data, size_t size) {
        GgufFile *f = NULL;
        char *why = NULL;
        int r = gguf_parse_buffer_named(data, size, "test.gguf", NULL, &f, &why);
        if (r < 0)
                fail_msg("unexpected error %d: %s", r, strna(why));
        free(why);
        return f;
}

static void parse_fails(const void *data, size_t size, const GgufLimits *limits, int error, const char *expect) {
        GgufFile *f = NULL;
        char *why = NULL;
        int r = gguf_parse_buffer_named(data, size, "test.gguf", limits, &f, &why);
        if (r >= 0)
                fail_msg("parsed, expected error '%s'", expect);
        assert_null(f);
        if (!why)
                fail_msg("error %d without a message (expected '%s')", r, expect);
        if (r != error || strncmp(why, "test.gguf: ", 11) != 0 || !strstr(why, expect))
                fail_msg("error %d '%s', expected %d '%s'", r, why, error, expect);
        free(why);
}

/* ---- raw files, for what the writer refuses to produce ------------------- */

typedef struct Raw {
        uint8_t buf[8192];
        size_t n;
} Raw;

static void raw_put(Raw *r, const void *p, size_t n) {
        assert_true(r->n + n <= sizeof r->buf);
        memcpy(r->buf + r->n, p, n);
        r->n += n;
}

static void raw_le(Raw *r, uint64_t v, unsigned n) {
        for (unsigned i = 0; i < n; i++) {
                uint8_t b = (uint8_t) (v >> (8 * i));
                raw_put(r, &b, 1);
        }
}

static void raw_u32(Raw *r, uint32_t v) {
        raw_le(r, v, 4);
}

static void raw_u64(Raw *r, uint64_t v) {
        raw_le(r, v, 8);
}

static void raw_str(Raw *r, const char *s) {
        raw_u64(r, strlen(s));
        raw_put(r, s, strlen(s));
}

static void raw_header(Raw *r, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
        r->n = 0;
        raw_put(r, "GGUF", 4);
        raw_u32(r, version);
        raw_u64(r, n_tensors);
        raw_u64(r, n_kv);
}

static void raw_kv_u32(Raw *r, const char *key, uint32_t v) {
        raw_str(r, key);
        raw_u32(r, GGUF_TYPE_UINT32);
        raw_u32(r, v);
}

static void raw_tensor(Raw *r, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset) {
        raw_str(r, name);
        raw_u32(r, n_dims);
        for (uint32_t i = 0; i < n_dims; i++)
                raw_u64(r, ne[i]);
        raw_u32(r, type);
        raw_u64(r, offset);
}

static void raw_pad(Raw *r, size_t alignment) {
        while (r->n % alignment)
                raw_put(r, "", 1);
}

static void raw_zeros(Raw *r, size_t n) {
        for (size_t i = 0; i < n; i++)
                raw_put(r, "", 1);
}

/* ---- round trip ---------------------------------------------------------- */

static void fill_bytes(uint8_t *p, size_t n, unsigned seed) {
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t) (i * 131 + seed * 7 + (i >> 8));
}

static void test_round_trip(void **state) {
        _cleanup_(gguf_writer_freep) GgufWriter *w = NULL;
        _cleanup_(gguf_freep) GgufFile *f = NULL;
        _cleanup_free_ uint8_t *file = NULL;
        size_t size;

        assert_int_equal(gguf_writer_new(&w), 0);

        /* every scalar type */
        uint8_t u8 = 200;
        int8_t i8 = -100;
        uint16_t u16 = 60000;
        int16_t i16 = -30000;
        int64_t i64 = -5000000000LL;
        double f64 = 3.141592653589793;
        assert_int_equal(gguf_writer_add_scalar(w, "t.u8", GGUF_TYPE_UINT8, &u8), 0);
        assert_int_equal(gguf_writer_add_scalar(w, "t.i8", GGUF_TYPE_INT8, &i8), 0);
        assert_int_equal(gguf_writer_add_scalar(w, "t.u16", GGUF_TYPE_UINT16, &u16), 0);
        assert_int_equal(gguf_writer_add_scalar(w, "t.i16", GGUF_TYPE_INT16, &i16), 0);
        assert_int_equal(gguf_writer_add_u32(w, "t.u32", 4000000000u), 0);
        assert_int_equal(gguf_writer_add_i32(w, "t.i32", -2000000000), 0);
        assert_int_equal(gguf_writer_add_f32(w, "t.f32", 0.5f), 0);
        assert_int_equal(gguf_writer_add_bool(w, "t.bool", true), 0);
        assert_int_equal(gguf_writer_add_string(w, "t.string", "h\xc3\xa9llo"), 0);
        assert_int_equal(gguf_writer_add_u64(w, "t.u64", UINT64_C(0x123456789abcdef0)), 0);
        assert_int_equal(gguf_writer_add_scalar(w, "t.i64", GGUF_TYPE_INT64, &i64), 0);
        assert_int_equal(gguf_writer_add_scalar(w, "t.f64", GGUF_TYPE_FLOAT64, &f64), 0);
        assert_int_equal(gguf_writer_add_string(w, "t.empty", ""), 0);

        /* arrays of every scalar type, of strings, and empty */
        const int16_t a16[] = { -1, 2, -3 };
        const float af[] = { 1.5f, -2.25f };
        const bool ab[] = { true, false, true };
        const double ad[] = { 1e300, -0.0 };
        const uint64_t au64[] = { 1, UINT64_MAX };
        const char *const strs[] = { "<unk>", "", "\xe2\x96\x81the", "zz" };
        assert_int_equal(gguf_writer_add_array(w, "a.i16", GGUF_TYPE_INT16, a16, 3), 0);
        assert_int_equal(gguf_writer_add_array(w, "a.f32", GGUF_TYPE_FLOAT32, af, 2), 0);
        assert_int_equal(gguf_writer_add_array(w, "a.bool", GGUF_TYPE_BOOL, ab, 3), 0);
        assert_int_equal(gguf_writer_add_array(w, "a.f64", GGUF_TYPE_FLOAT64, ad, 2), 0);
        assert_int_equal(gguf_writer_add_array(w, "a.u64", GGUF_TYPE_UINT64, au64, 2), 0);
        assert_int_equal(gguf_writer_add_array(w, "a.empty", GGUF_TYPE_UINT8, NULL, 0), 0);
        assert_int_equal(gguf_writer_add_array_string(w, "a.str", strs, 4), 0);
        assert_int_equal(gguf_writer_add_array(w, "a.bad", GGUF_TYPE_STRING, strs, 4), -EINVAL);
        assert_int_equal(gguf_writer_add_u32(w, "t.u32", 1), -EEXIST);

        /* tensors: F32, F16, Q8_0, Q4_K, and one whose size is not a multiple of the alignment */
        static uint8_t d_f32[8 * 3 * 4], d_f16[64 * 2 * 2], d_q8[34 * 2 * 4], d_q4k[144 * 2 * 3], d_odd[5 * 4];
        fill_bytes(d_f32, sizeof d_f32, 1);
        fill_bytes(d_f16, sizeof d_f16, 2);
        fill_bytes(d_q8, sizeof d_q8, 3);
        fill_bytes(d_q4k, sizeof d_q4k, 4);
        fill_bytes(d_odd, sizeof d_odd, 5);
        assert_int_equal(gguf_writer_add_tensor(w, "odd", GGML_TYPE_F32, 1, (uint64_t[]) { 5 }, d_odd), 0);
        assert_int_equal(gguf_writer_add_tensor(w, "f32", GGML_TYPE_F32, 2, (uint64_t[]) { 8, 3 }, d_f32), 0);
        assert_int_equal(gguf_writer_add_tensor(w, "f16", GGML_TYPE_F16, 2, (uint64_t[]) { 64, 2 }, d_f16), 0);
        assert_int_equal(gguf_writer_add_tensor(w, "q8", GGML_TYPE_Q8_0, 3, (uint64_t[]) { 64, 2, 2 }, d_q8), 0);
        assert_int_equal(gguf_writer_add_tensor(w, "blk.0.q4k", GGML_TYPE_Q4_K, 4, (uint64_t[]) { 512, 1, 3, 1 }, d_q4k),
                         0);
        assert_int_equal(gguf_writer_add_tensor(w, "f32", GGML_TYPE_F32, 1, (uint64_t[]) { 1 }, d_f32), -EEXIST);
        assert_int_equal(gguf_writer_add_tensor(w, "q4k-bad", GGML_TYPE_Q4_K, 1, (uint64_t[]) { 100 }, d_q4k), -EINVAL);
        assert_int_equal(gguf_writer_add_tensor(w, "n0", GGML_TYPE_F32, 0, (uint64_t[]) { 1 }, d_f32), -EINVAL);
        assert_int_equal(gguf_writer_add_tensor(w, "n5", GGML_TYPE_F32, 5, (uint64_t[]) { 1, 1, 1, 1, 1 }, d_f32),
                         -EINVAL);
        assert_int_equal(gguf_writer_add_tensor(w, "x", (GgmlType) 99, 1, (uint64_t[]) { 1 }, d_f32), -EINVAL);

        write_to_memory(w, &file, &size);
        f = parse_ok(file, size);

        assert_int_equal(gguf_version(f), 3);
        assert_int_equal(gguf_alignment(f), 32);
        assert_int_equal(gguf_file_size(f), size);
        assert_int_equal(gguf_data_offset(f) % 32, 0);
        assert_int_equal(gguf_n_kv(f), 20);
        assert_string_equal(gguf_kv_key(f, 0), "t.u8");
        assert_int_equal(gguf_kv_type(f, 0), GGUF_TYPE_UINT8);
        assert_int_equal(gguf_kv_type(f, 8), GGUF_TYPE_STRING);
        assert_int_equal(gguf_kv_type(f, 19), GGUF_TYPE_ARRAY);
        assert_null(gguf_kv_key(f, 20));
        assert_int_equal(gguf_find_key(f, "t.f64"), 11);
        assert_int_equal(gguf_find_key(f, "t.nope"), -ENOENT);

        uint32_t v32;
        uint64_t v64;
        int32_t s32;
        int64_t s64;
        float fl;
        double db;
        bool b;
        const char *s;
        size_t len;

        assert_int_equal(gguf_get_u32(f, "t.u8", &v32), 0);
        assert_int_equal(v32, 200);
        assert_int_equal(gguf_get_i32(f, "t.i8", &s32), 0);
        assert_int_equal(s32, -100);
        assert_int_equal(gguf_get_u32(f, "t.i8", &v32), -ERANGE);
        assert_int_equal(gguf_get_u32(f, "t.u16", &v32), 0);
        assert_int_equal(v32, 60000);
        assert_int_equal(gguf_get_i32(f, "t.i16", &s32), 0);
        assert_int_equal(s32, -30000);
        assert_int_equal(gguf_get_u32(f, "t.u32", &v32), 0);
        assert_int_equal(v32, 4000000000u);
        assert_int_equal(gguf_get_i32(f, "t.u32", &s32), -ERANGE);
        assert_int_equal(gguf_get_u64(f, "t.u32", &v64), 0);
        assert_int_equal(v64, 4000000000u);
        assert_int_equal(gguf_get_i32(f, "t.i32", &s32), 0);
        assert_int_equal(s32, -2000000000);
        assert_int_equal(gguf_get_u64(f, "t.i32", &v64), -ERANGE);
        assert_int_equal(gguf_get_f32(f, "t.f32", &fl), 0);
        assert_true(fl == 0.5f);
        assert_int_equal(gguf_get_bool(f, "t.bool", &b), 0);
        assert_true(b);
        assert_int_equal(gguf_get_string(f, "t.string", &s, &len), 0);
        assert_int_equal(len, 6);
        assert_memory_equal(s, "h\xc3\xa9llo", 6);
        assert_int_equal(gguf_get_u64(f, "t.u64", &v64), 0);
        assert_true(v64 == UINT64_C(0x123456789abcdef0));
        assert_int_equal(gguf_get_u32(f, "t.u64", &v32), -ERANGE);
        assert_int_equal(gguf_get_i64(f, "t.u64", &s64), 0);
        assert_true(s64 == INT64_C(0x123456789abcdef0));
        assert_int_equal(gguf_get_i64(f, "t.i64", &s64), 0);
        assert_true(s64 == -5000000000LL);
        assert_int_equal(gguf_get_i32(f, "t.i64", &s32), -ERANGE);
        assert_int_equal(gguf_get_f64(f, "t.f64", &db), 0);
        assert_true(db == f64);
        assert_int_equal(gguf_get_f32(f, "t.f64", &fl), 0);
        assert_true(fl == (float) f64);
        assert_int_equal(gguf_get_string(f, "t.empty", &s, &len), 0);
        assert_int_equal(len, 0);

        /* wrong types and missing keys; outputs untouched */
        v32 = 7;
        assert_int_equal(gguf_get_u32(f, "t.string", &v32), -EBADMSG);
        assert_int_equal(gguf_get_u32(f, "t.f32", &v32), -EBADMSG);
        assert_int_equal(gguf_get_u32(f, "t.bool", &v32), -EBADMSG);
        assert_int_equal(gguf_get_u32(f, "missing", &v32), -ENOENT);
        assert_int_equal(v32, 7);
        assert_int_equal(gguf_get_f32(f, "t.u32", &fl), -EBADMSG);
        assert_int_equal(gguf_get_bool(f, "t.u8", &b), -EBADMSG);
        assert_int_equal(gguf_get_string(f, "a.str", &s, &len), -EBADMSG);
        assert_int_equal(gguf_get_array(f, "t.string", NULL, NULL, NULL), -EBADMSG);

        GgufType type;
        uint64_t n;
        const void *data;
        assert_int_equal(gguf_get_array(f, "a.i16", &type, &n, &data), 0);
        assert_int_equal(type, GGUF_TYPE_INT16);
        assert_int_equal(n, 3);
        assert_memory_equal(data, "\xff\xff\x02\x00\xfd\xff", 6);
        assert_int_equal(gguf_get_array(f, "a.f32", &type, &n, &data), 0);
        float got_f[2];
        memcpy(got_f, data, sizeof got_f);
        assert_true(got_f[0] == 1.5f && got_f[1] == -2.25f);
        assert_int_equal(gguf_get_array(f, "a.bool", &type, &n, &data), 0);
        assert_int_equal(type, GGUF_TYPE_BOOL);
        assert_memory_equal(data, "\x01\x00\x01", 3);
        assert_int_equal(gguf_get_array(f, "a.f64", &type, &n, &data), 0);
        double got_d[2];
        memcpy(got_d, data, sizeof got_d);
        assert_true(got_d[0] == 1e300 && got_d[1] == 0.0 && signbit(got_d[1]));
        assert_int_equal(gguf_get_array(f, "a.u64", &type, &n, &data), 0);
        assert_memory_equal((const uint8_t *) data + 8, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
        assert_int_equal(gguf_get_array(f, "a.empty", &type, &n, &data), 0);
        assert_int_equal(type, GGUF_TYPE_UINT8);
        assert_int_equal(n, 0);
        assert_int_equal(gguf_get_array(f, "a.str", &type, &n, NULL), 0);
        assert_int_equal(type, GGUF_TYPE_STRING);
        assert_int_equal(n, 4);
        for (uint64_t i = 0; i < 4; i++) {
                assert_int_equal(gguf_get_array_string(f, "a.str", i, &s, &len), 0);
                assert_int_equal(len, strlen(strs[i]));
                assert_memory_equal(s, strs[i], len);
        }
        assert_int_equal(gguf_get_array_string(f, "a.str", 4, &s, &len), -ERANGE);
        assert_int_equal(gguf_get_array_string(f, "a.i16", 0, &s, &len), -EBADMSG);
        assert_int_equal(gguf_get_array_string(f, "missing", 0, &s, &len), -ENOENT);

        /* tensors, in order, with their data */
        static const struct {
                const char *name;
                GgmlType type;
                uint32_t n_dims;
                uint64_t ne[4];
                const uint8_t *data;
                size_t size;
        } want[] = {
                { "odd", GGML_TYPE_F32, 1, { 5, 1, 1, 1 }, d_odd, sizeof d_odd },
                { "f32", GGML_TYPE_F32, 2, { 8, 3, 1, 1 }, d_f32, sizeof d_f32 },
                { "f16", GGML_TYPE_F16, 2, { 64, 2, 1, 1 }, d_f16, sizeof d_f16 },
                { "q8", GGML_TYPE_Q8_0, 3, { 64, 2, 2, 1 }, d_q8, sizeof d_q8 },
                { "blk.0.q4k", GGML_TYPE_Q4_K, 4, { 512, 1, 3, 1 }, d_q4k, sizeof d_q4k },
        };
        assert_int_equal(gguf_n_tensors(f), ELEMENTSOF(want));
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                const GgufTensor *t = gguf_tensor(f, i);
                assert_non_null(t);
                assert_ptr_equal(gguf_find_tensor(f, want[i].name), t);
                assert_string_equal(t->name, want[i].name);
                assert_int_equal(t->type, want[i].type);
                assert_int_equal(t->n_dims, want[i].n_dims);
                for (int d = 0; d < 4; d++)
                        assert_int_equal(t->ne[d], want[i].ne[d]);
                assert_int_equal(t->size, want[i].size);
                assert_int_equal(t->offset % 32, 0);
                assert_ptr_equal(t->data, file + gguf_data_offset(f) + t->offset);
                assert_memory_equal(t->data, want[i].data, want[i].size);
        }
        assert_null(gguf_tensor(f, ELEMENTSOF(want)));
        assert_null(gguf_find_tensor(f, "nope"));
}

static void test_alignment_key(void **state) {
        _cleanup_(gguf_writer_freep) GgufWriter *w = NULL;
        _cleanup_(gguf_freep) GgufFile *f = NULL;
        _cleanup_free_ uint8_t *file = NULL;
        uint8_t data[3 * 4] = { 1, 2, 3 };
        size_t size;

        assert_int_equal(gguf_writer_new(&w), 0);
        assert_int_equal(gguf_writer_add_u32(w, "general.alignment", 48), -EINVAL);
        assert_int_equal(gguf_writer_add_u32(w, "general.alignment", 0), -EINVAL);
        assert_int_equal(gguf_writer_add_u64(w, "general.alignment", 64), -EINVAL);
        assert_int_equal(gguf_writer_add_u32(w, "general.alignment", 256), 0);
        assert_int_equal(gguf_writer_add_tensor(w, "a", GGML_TYPE_F32, 1, (uint64_t[]) { 3 }, data), 0);
        assert_int_equal(gguf_writer_add_tensor(w, "b", GGML_TYPE_F32, 1, (uint64_t[]) { 3 }, data), 0);
        write_to_memory(w, &file, &size);
        f = parse_ok(file, size);
        assert_int_equal(gguf_alignment(f), 256);
        assert_int_equal(gguf_data_offset(f) % 256, 0);
        assert_int_equal(gguf_tensor(f, 1)->offset, 256);
        assert_int_equal(size, gguf_data_offset(f) + 512);
}

typedef struct RowsState {
        unsigned calls;
        uint64_t next;
} RowsState;

static int rows_fn(void *userdata, uint64_t first, uint64_t n, void *buf) {
        RowsState *st = userdata;
        assert_int_equal(first, st->next); /* in order */
        for (uint64_t r = 0; r < n; r++)
                fill_bytes((uint8_t *) buf + r * 34 * 8, 34 * 8, (unsigned) (first + r));
        st->next += n;
        st->calls++;
        return 0;
}

static int rows_fail(void *userdata, uint64_t first, uint64_t n, void *buf) {
        return -EIO;
}

static void test_streamed_tensor(void **state) {
        _cleanup_(gguf_writer_freep) GgufWriter *w = NULL;
        _cleanup_(gguf_freep) GgufFile *f = NULL;
        _cleanup_free_ uint8_t *file = NULL;
        RowsState st = { 0 };
        size_t size;

        /* 40000 rows of 256 Q8_0 elements: 10.9 MB, more than one chunk */
        assert_int_equal(gguf_writer_new(&w), 0);
        assert_int_equal(gguf_writer_add_tensor_rows(w, "big", GGML_TYPE_Q8_0, 2, (uint64_t[]) { 256, 40000 }, rows_fn, &st),
                         0);
        write_to_memory(w, &file, &size);
        assert_true(st.calls > 1);
        assert_int_equal(st.next, 40000);
        f = parse_ok(file, size);
        const GgufTensor *t = gguf_find_tensor(f, "big");
        assert_non_null(t);
        assert_int_equal(t->size, 40000 * 34 * 8);
        uint8_t row[34 * 8];
        for (unsigned r = 0; r < 40000; r += 3999) {
                fill_bytes(row, sizeof row, r);
                assert_memory_equal((const uint8_t *) t->data + (size_t) r * sizeof row, row, sizeof row);
        }

        /* a failing producer fails the write and leaves nothing behind */
        gguf_writer_free(TAKE_PTR(w));
        assert_int_equal(gguf_writer_new(&w), 0);
        assert_int_equal(gguf_writer_add_tensor_rows(w, "bad", GGML_TYPE_F32, 1, (uint64_t[]) { 8 }, rows_fail, NULL), 0);
        assert_int_equal(gguf_writer_write_file(w, tmp_path("fail.gguf")), -EIO);
        assert_int_equal(access(tmp_path("fail.gguf"), F_OK), -1);
}

/* ---- hostile files ------------------------------------------------------- */

/* A small valid file: 3 kv (one string array), 2 tensors, no trailing padding. */
static void make_small(uint8_t **ret, size_t *ret_size) {
        _cleanup_(gguf_writer_freep) GgufWriter *w = NULL;
        const char *const toks[] = { "a", "bc", "" };
        uint8_t data[64 * 4];

        fill_bytes(data, sizeof data, 9);
        assert_int_equal(gguf_writer_new(&w), 0);
        assert_int_equal(gguf_writer_add_string(w, "general.architecture", "llama"), 0);
        assert_int_equal(gguf_writer_add_array_string(w, "tokenizer.ggml.tokens", toks, 3), 0);
        assert_int_equal(gguf_writer_add_f32(w, "x.eps", 1e-5f), 0);
        assert_int_equal(gguf_writer_add_tensor(w, "t0", GGML_TYPE_F32, 1, (uint64_t[]) { 24 }, data), 0);
        assert_int_equal(gguf_writer_add_tensor(w, "t1", GGML_TYPE_F32, 2, (uint64_t[]) { 8, 4 }, data), 0);
        write_to_memory(w, ret, ret_size);
}

static void test_truncated(void **state) {
        _cleanup_free_ uint8_t *file = NULL;
        size_t size;

        make_small(&file, &size);
        _cleanup_(gguf_freep) GgufFile *f = parse_ok(file, size);
        const GgufTensor *last = gguf_tensor(f, 1);
        assert_int_equal(gguf_data_offset(f) + last->offset + last->size, size);

        for (size_t n = 0; n < size; n++) {
                /* a copy of exactly n bytes, so ASan sees any over-read */
                uint8_t *copy = malloc(MAX(n, (size_t) 1));
                GgufFile *g = NULL;
                char *why = NULL;
                assert_non_null(copy);
                memcpy(copy, file, n);
                int r = gguf_parse_buffer_named(copy, n, "cut.gguf", NULL, &g, &why);
                if (r != -EBADMSG || g || !why || strncmp(why, "cut.gguf: ", 10) != 0)
                        fail_msg("prefix of %zu bytes: %d '%s'", n, r, strna(why));
                free(why);
                free(copy);
        }
}

static void test_bad_header(void **state) {
        Raw r;

        raw_header(&r, 3, 0, 0);
        memcpy(r.buf, "GGUG", 4);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "header: not a GGUF file (magic 47 47 55 47");
        raw_header(&r, 1, 0, 0);
        parse_fails(r.buf, r.n, NULL, -EPROTONOSUPPORT, "GGUF version 1 is not supported");
        raw_header(&r, 4, 0, 0);
        parse_fails(r.buf, r.n, NULL, -EPROTONOSUPPORT, "GGUF version 4 is not supported");
        raw_header(&r, 0x03000000, 0, 0);
        parse_fails(r.buf, r.n, NULL, -EPROTONOSUPPORT, "big-endian GGUF file (version 3 byte-swapped)");
        raw_header(&r, 2, 0, 0);
        _cleanup_(gguf_freep) GgufFile *f = parse_ok(r.buf, r.n); /* version 2, empty */
        assert_int_equal(gguf_version(f), 2);
        assert_int_equal(gguf_n_tensors(f), 0);

        parse_fails("GG", 2, NULL, -EBADMSG, "magic at byte 0 (4 bytes) extends past the end of the file (2 bytes)");
        parse_fails("", 0, NULL, -EBADMSG, "extends past the end of the file (0 bytes)");
}

static void test_huge_counts(void **state) {
        GgufLimits unlimited = { UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX, 0 };
        GgufLimits small = { 1, 1, 4, 2, 0 };
        Raw r;

        raw_header(&r, 3, UINT64_C(1) << 60, 0);
        parse_fails(r.buf, r.n, NULL, -EMSGSIZE, "tensor count 1152921504606846976 at byte 8 is over the limit of 65536");
        parse_fails(r.buf, r.n, &unlimited, -EBADMSG, "1152921504606846976 tensors cannot fit");
        raw_header(&r, 3, 0, UINT64_MAX);
        parse_fails(r.buf, r.n, NULL, -EMSGSIZE, "key/value count 18446744073709551615 at byte 16 is over the limit");
        parse_fails(r.buf, r.n, &unlimited, -EBADMSG, "key/value pairs cannot fit in the file");

        raw_header(&r, 3, 2, 0);
        parse_fails(r.buf, r.n, &small, -EMSGSIZE, "tensor count 2 at byte 8 is over the limit of 1");

        /* a string array with a huge count */
        raw_header(&r, 3, 0, 1);
        raw_str(&r, "tokens");
        raw_u32(&r, GGUF_TYPE_ARRAY);
        raw_u32(&r, GGUF_TYPE_STRING);
        raw_u64(&r, UINT64_C(1) << 40);
        raw_zeros(&r, 64);
        parse_fails(r.buf, r.n, NULL, -EMSGSIZE, "key 0 'tokens': array length 1099511627776");
        parse_fails(r.buf, r.n, &unlimited, -EBADMSG, "array of 1099511627776 strings at byte 54 cannot fit");

        /* an array whose byte size overflows */
        raw_header(&r, 3, 0, 1);
        raw_str(&r, "a");
        raw_u32(&r, GGUF_TYPE_ARRAY);
        raw_u32(&r, GGUF_TYPE_UINT64);
        raw_u64(&r, UINT64_C(1) << 62);
        parse_fails(r.buf, r.n, &unlimited, -EBADMSG, "key 0 'a': array of 4611686018427387904 uint64 at byte 49 overflows");
        raw_header(&r, 3, 0, 1);
        raw_str(&r, "a");
        raw_u32(&r, GGUF_TYPE_ARRAY);
        raw_u32(&r, GGUF_TYPE_UINT32);
        raw_u64(&r, 1000);
        parse_fails(r.buf, r.n, &unlimited, -EBADMSG, "array data at byte 49 (4000 bytes) extends past the end");
        parse_fails(r.buf, r.n, &small, -EMSGSIZE, "array length 1000 at byte 41 is over the limit of 2");

        /* string limit */
        raw_header(&r, 3, 0, 1);
        raw_str(&r, "s");
        raw_u32(&r, GGUF_TYPE_STRING);
        raw_str(&r, "hello");
        parse_fails(r.buf, r.n, &small, -EMSGSIZE, "string value at byte 37 is 5 bytes long, over the limit of 4");
}

static void test_bad_strings(void **state) {
        Raw r;

        /* string length past the end */
        raw_header(&r, 3, 0, 1);
        raw_str(&r, "general.name");
        raw_u32(&r, GGUF_TYPE_STRING);
        raw_u64(&r, 1000);
        raw_put(&r, "abc", 3);
        parse_fails(r.buf, r.n, NULL, -EBADMSG,
                    "key 0 'general.name': string value at byte 56 (1000 bytes) extends past the end of the file (59 bytes)");

        /* key length past the end */
        raw_header(&r, 3, 0, 1);
        raw_u64(&r, 1000);
        raw_zeros(&r, 20);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "key 0: key at byte 32 (1000 bytes) extends past the end of the file (52 bytes)");

        /* NUL in a key, empty key, over-long key */
        raw_header(&r, 3, 0, 1);
        raw_u64(&r, 3);
        raw_put(&r, "a\0b", 3);
        raw_u32(&r, GGUF_TYPE_UINT8);
        raw_put(&r, "x", 1);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "key 0: key at byte 24 contains a NUL byte");
        raw_header(&r, 3, 0, 1);
        raw_str(&r, "");
        raw_u32(&r, GGUF_TYPE_UINT8);
        raw_put(&r, "x", 1);
        raw_zeros(&r, 8);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "key 0: key at byte 24 is empty");
        raw_header(&r, 3, 0, 1);
        raw_u64(&r, 70000);
        raw_zeros(&r, 100);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "key 0: key at byte 24 is 70000 bytes long, over the limit of 65535");

        /* duplicate key */
        raw_header(&r, 3, 0, 3);
        raw_kv_u32(&r, "a.b", 1);
        raw_kv_u32(&r, "c", 2);
        raw_kv_u32(&r, "a.b", 3);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "key 2 'a.b': duplicate key (also key 0)");

        /* unknown value type; control bytes in the key are escaped */
        raw_header(&r, 3, 0, 1);
        raw_str(&r, "x\ny");
        raw_u32(&r, 13);
        raw_u32(&r, 0);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "key 0 'x\\x0ay': unknown value type 13 at byte 35");
}

static void test_nested_arrays(void **state) {
        Raw r;

        /* an array of two arrays (of uint8 and of strings): accepted */
        raw_header(&r, 3, 0, 2);
        raw_str(&r, "nested");
        raw_u32(&r, GGUF_TYPE_ARRAY);
        raw_u32(&r, GGUF_TYPE_ARRAY);
        raw_u64(&r, 2);
        raw_u32(&r, GGUF_TYPE_UINT8);
        raw_u64(&r, 3);
        raw_put(&r, "abc", 3);
        raw_u32(&r, GGUF_TYPE_STRING);
        raw_u64(&r, 1);
        raw_str(&r, "xy");
        raw_kv_u32(&r, "after", 42);
        _cleanup_(gguf_freep) GgufFile *f = parse_ok(r.buf, r.n);
        GgufType type;
        uint64_t n;
        uint32_t v;
        assert_int_equal(gguf_get_array(f, "nested", &type, &n, NULL), 0);
        assert_int_equal(type, GGUF_TYPE_ARRAY);
        assert_int_equal(n, 2);
        assert_int_equal(gguf_get_u32(f, "after", &v), 0);
        assert_int_equal(v, 42);

        /* three levels: refused */
        raw_header(&r, 3, 0, 1);
        raw_str(&r, "deep");
        raw_u32(&r, GGUF_TYPE_ARRAY);
        raw_u32(&r, GGUF_TYPE_ARRAY);
        raw_u64(&r, 1);
        raw_u32(&r, GGUF_TYPE_ARRAY);
        raw_u64(&r, 1);
        raw_u32(&r, GGUF_TYPE_UINT8);
        raw_u64(&r, 1);
        raw_put(&r, "a", 1);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "key 0 'deep': arrays nested deeper than 2 levels are not supported");
}

static void test_bad_alignment(void **state) {
        static const uint32_t bad[] = { 0, 3, 48, 1u << 21 };
        Raw r;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char expect[128];
                raw_header(&r, 3, 0, 1);
                raw_kv_u32(&r, "general.alignment", bad[i]);
                snprintf(expect, sizeof expect, "key 0 'general.alignment': alignment %u is not a power of two", bad[i]);
                parse_fails(r.buf, r.n, NULL, -EBADMSG, expect);
        }
        raw_header(&r, 3, 0, 1);
        raw_str(&r, "general.alignment");
        raw_u32(&r, GGUF_TYPE_UINT64);
        raw_u64(&r, 32);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "general.alignment': has type uint64, expected uint32");

        /* alignment 64 honoured: the data section starts at 64 */
        raw_header(&r, 3, 1, 1);
        raw_kv_u32(&r, "general.alignment", 64);
        raw_tensor(&r, "t", 1, (uint64_t[]) { 16 }, GGML_TYPE_F32, 0);
        raw_pad(&r, 64);
        size_t data_at = r.n;
        raw_zeros(&r, 64);
        _cleanup_(gguf_freep) GgufFile *f = parse_ok(r.buf, r.n);
        assert_int_equal(gguf_alignment(f), 64);
        assert_int_equal(gguf_data_offset(f), data_at);
}

static void test_bad_tensors(void **state) {
        Raw r;

        /* offset not a multiple of the alignment */
        raw_header(&r, 3, 1, 0);
        raw_tensor(&r, "w", 1, (uint64_t[]) { 4 }, GGML_TYPE_F32, 16);
        raw_pad(&r, 32);
        raw_zeros(&r, 64);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "tensor 0 'w': data offset 16 is not a multiple of the alignment 32");

        /* data past the end */
        raw_header(&r, 3, 2, 0);
        raw_tensor(&r, "ok", 1, (uint64_t[]) { 8 }, GGML_TYPE_F32, 0);
        raw_tensor(&r, "blk.0.attn_q.weight", 2, (uint64_t[]) { 64, 64 }, GGML_TYPE_F32, 32);
        raw_pad(&r, 32);
        size_t data_at = r.n;
        raw_zeros(&r, 1000);
        char expect[160];
        snprintf(expect, sizeof expect,
                 "test.gguf: tensor 1 'blk.0.attn_q.weight': data [%zu, %zu) extends past the end of the file (%zu bytes)",
                 data_at + 32, data_at + 32 + 64 * 64 * 4, r.n);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, expect);

        /* offsets that overflow */
        raw_header(&r, 3, 1, 0);
        raw_tensor(&r, "w", 1, (uint64_t[]) { 4 }, GGML_TYPE_F32, UINT64_MAX - 31);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "tensor 0 'w': data offset 18446744073709551584 (16 bytes) overflows");

        /* element counts that overflow */
        raw_header(&r, 3, 1, 0);
        raw_tensor(&r, "w", 3, (uint64_t[]) { UINT64_C(1) << 32, UINT64_C(1) << 32, 2 }, GGML_TYPE_F32, 0);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "tensor 0 'w': element count 4294967296 x 4294967296 x 2 x 1 overflows");
        raw_header(&r, 3, 1, 0);
        raw_tensor(&r, "w", 4, (uint64_t[]) { 32, 1u << 20, 1u << 20, 1u << 21 }, GGML_TYPE_F32, 0);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "overflows");
        raw_header(&r, 3, 1, 0);
        raw_tensor(&r, "w", 1, (uint64_t[]) { UINT64_C(1) << 63 }, GGML_TYPE_F32, 0);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "tensor 0 'w': dimension 0 is 9223372036854775808, too large");

        /* dimension counts */
        raw_header(&r, 3, 1, 0);
        raw_tensor(&r, "w", 0, NULL, GGML_TYPE_F32, 0);
        raw_zeros(&r, 64);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "tensor 0 'w': has 0 dimensions (must be 1 to 4)");
        raw_header(&r, 3, 1, 0);
        raw_tensor(&r, "w", 5, (uint64_t[]) { 1, 1, 1, 1, 1 }, GGML_TYPE_F32, 0);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "tensor 0 'w': has 5 dimensions (must be 1 to 4)");

        /* duplicate names */
        raw_header(&r, 3, 3, 0);
        raw_tensor(&r, "a", 1, (uint64_t[]) { 1 }, GGML_TYPE_F32, 0);
        raw_tensor(&r, "b", 1, (uint64_t[]) { 1 }, GGML_TYPE_F32, 32);
        raw_tensor(&r, "a", 1, (uint64_t[]) { 1 }, GGML_TYPE_F32, 64);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "tensor 2 'a': duplicate tensor name (also tensor 0)");

        /* unknown type ids; types the engine cannot run are fine */
        raw_header(&r, 3, 1, 0);
        raw_tensor(&r, "blk.3.ffn_up.weight", 1, (uint64_t[]) { 32 }, 99, 0);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "tensor 0 'blk.3.ffn_up.weight': unknown ggml type 99");
        raw_header(&r, 3, 1, 0);
        raw_tensor(&r, "w", 1, (uint64_t[]) { 32 }, 4, 0); /* Q4_2, long removed */
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "unknown ggml type 4");
        raw_header(&r, 3, 1, 0);
        raw_tensor(&r, "q2k", 1, (uint64_t[]) { 256 }, GGML_TYPE_Q2_K, 0);
        raw_pad(&r, 32);
        raw_zeros(&r, 84);
        _cleanup_(gguf_freep) GgufFile *f = parse_ok(r.buf, r.n);
        assert_int_equal(gguf_tensor(f, 0)->type, GGML_TYPE_Q2_K);
        assert_false(ggml_type_supported(gguf_tensor(f, 0)->type));

        /* rows that do not fill whole blocks */
        raw_header(&r, 3, 1, 0);
        raw_tensor(&r, "w", 2, (uint64_t[]) { 100, 2 }, GGML_TYPE_Q4_K, 0);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "tensor 0 'w': row length 100 is not a multiple of the Q4_K block size 256");

        /* names: empty, too long, NUL */
        raw_header(&r, 3, 1, 0);
        raw_tensor(&r, "", 1, (uint64_t[]) { 1 }, GGML_TYPE_F32, 0);
        raw_zeros(&r, 64);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "tensor 0: name at byte 24 is empty");
        raw_header(&r, 3, 1, 0);
        raw_tensor(&r, "0123456789012345678901234567890123456789012345678901234567890123456789", 1, (uint64_t[]) { 1 },
                   GGML_TYPE_F32, 0);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "tensor 0: name at byte 24 is 70 bytes long, over the limit of 64");
        raw_header(&r, 3, 1, 0);
        raw_u64(&r, 2);
        raw_put(&r, "a\0", 2);
        raw_u32(&r, 1);
        raw_u64(&r, 1);
        raw_u32(&r, 0);
        raw_u64(&r, 0);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "tensor 0: name at byte 24 contains a NUL byte");

        /* the tensor table itself cut short */
        raw_header(&r, 3, 2, 0);
        raw_tensor(&r, "wwwwwwwwww", 1, (uint64_t[]) { 4 }, GGML_TYPE_F32, 0);
        raw_str(&r, "v");
        raw_u32(&r, 2);
        raw_u64(&r, 4);
        raw_u64(&r, 4);
        parse_fails(r.buf, r.n, NULL, -EBADMSG, "tensor 1 'v': type at byte 95 (4 bytes) extends past the end");
}

static void test_open(void **state) {
        GgufFile *f = NULL;
        char *why = NULL;
        _cleanup_free_ uint8_t *file = NULL;
        size_t size;

        assert_int_equal(gguf_open("/nonexistent/model.gguf", NULL, &f, &why), -ENOENT);
        assert_null(f);
        assert_string_equal(why, "/nonexistent/model.gguf: No such file or directory");
        free(why);

        assert_int_equal(gguf_open(tmpdir, NULL, &f, &why), -EISDIR);
        free(why);

        char *empty = tmp_path("empty.gguf");
        assert_int_equal(write_file_atomic(empty, "", 0, 0644), 0);
        assert_int_equal(gguf_open(empty, NULL, &f, &why), -EBADMSG);
        assert_non_null(strstr(why, "empty file"));
        free(why);

        make_small(&file, &size);
        char *path = tmp_path("small.gguf");
        assert_int_equal(write_file_atomic(path, file, size, 0644), 0);
        GgufLimits limits = { 10, 10, 100, 100, size - 1 };
        assert_int_equal(gguf_open(path, &limits, &f, &why), -EMSGSIZE);
        assert_non_null(strstr(why, "over the limit"));
        free(why);
        why = NULL;

        limits.max_file_size = size;
        assert_int_equal(gguf_open(path, &limits, &f, &why), 0);
        assert_null(why);
        assert_int_equal(gguf_n_tensors(f), 2);
        assert_memory_equal(gguf_tensor(f, 1)->data, file + size - 128, 128);
        gguf_free(f);

        /* corrupt on disk: the message names the path */
        file[size - 200] ^= 0xff;
        file[4] = 7;
        assert_int_equal(write_file_atomic(path, file, size, 0644), 0);
        assert_int_equal(gguf_open(path, NULL, &f, &why), -EPROTONOSUPPORT);
        assert_true(strncmp(why, path, strlen(path)) == 0);
        free(why);

        assert_null(gguf_free(NULL));
}

/* ---- the real files in ../shared ----------------------------------------- */

static const char *shared_dir(void) {
        const char *d = getenv("INFERD_SHARED_DIR");
        struct stat st;
        if (!d || stat(d, &st) < 0 || !S_ISDIR(st.st_mode))
                return NULL;
        return d;
}

static GgufFile *open_shared(const char *rel) {
        const char *d = shared_dir();
        char path[1024];
        GgufFile *f = NULL;
        char *why = NULL;

        if (!d) {
                print_message("INFERD_SHARED_DIR is not set or not a directory: skipping %s\n", rel);
                return NULL;
        }
        snprintf(path, sizeof path, "%s/%s", d, rel);
        if (access(path, R_OK) < 0) {
                print_message("%s is missing: skipping\n", path);
                return NULL;
        }
        int r = gguf_open(path, NULL, &f, &why);
        if (r < 0)
                fail_msg("%s: error %d: %s", path, r, strna(why));
        return f;
}

static void check_string(GgufFile *f, const char *key, const char *want) {
        const char *s;
        size_t len;
        assert_int_equal(gguf_get_string(f, key, &s, &len), 0);
        assert_int_equal(len, strlen(want));
        assert_memory_equal(s, want, len);
}

static void check_token(GgufFile *f, uint64_t i, const char *want) {
        const char *s;
        size_t len;
        assert_int_equal(gguf_get_array_string(f, "tokenizer.ggml.tokens", i, &s, &len), 0);
        if (len != strlen(want) || memcmp(s, want, len) != 0)
                fail_msg("token %" PRIu64 " is '%.*s', expected '%s'", i, (int) len, s, want);
}

static void test_stories260k(void **state) {
        _cleanup_(gguf_freep) GgufFile *f = open_shared("models/stories260K.gguf");
        uint32_t v;
        float eps;
        GgufType type;
        uint64_t n;

        if (!f)
                skip();
        assert_int_equal(gguf_version(f), 3);
        check_string(f, "general.architecture", "llama");
        check_string(f, "tokenizer.ggml.model", "llama");
        assert_int_equal(gguf_get_u32(f, "llama.embedding_length", &v), 0);
        assert_int_equal(v, 64);
        assert_int_equal(gguf_get_u32(f, "llama.block_count", &v), 0);
        assert_int_equal(v, 5);
        assert_int_equal(gguf_get_u32(f, "llama.attention.head_count", &v), 0);
        assert_int_equal(v, 8);
        assert_int_equal(gguf_get_u32(f, "llama.attention.head_count_kv", &v), 0);
        assert_int_equal(v, 4);
        assert_int_equal(gguf_get_u32(f, "llama.feed_forward_length", &v), 0);
        assert_int_equal(v, 172);
        assert_int_equal(gguf_get_u32(f, "llama.context_length", &v), 0);
        assert_int_equal(v, 128);
        assert_int_equal(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &eps), 0);
        assert_true(fabsf(eps - 1e-5f) < 1e-9f);
        assert_int_equal(gguf_find_key(f, "llama.rope.freq_base"), -ENOENT);
        assert_int_equal(gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &v), 0);
        assert_int_equal(v, 1);
        assert_int_equal(gguf_get_u32(f, "tokenizer.ggml.seperator_token_id", &v), 0);
        assert_int_equal(v, UINT32_MAX);

        assert_int_equal(gguf_get_array(f, "tokenizer.ggml.tokens", &type, &n, NULL), 0);
        assert_int_equal(type, GGUF_TYPE_STRING);
        assert_int_equal(n, 512);
        check_token(f, 0, "<unk>");
        check_token(f, 1, "<s>");
        check_token(f, 2, "</s>");
        check_token(f, 3, "<0x00>");
        assert_int_equal(gguf_get_array(f, "tokenizer.ggml.scores", &type, &n, NULL), 0);
        assert_int_equal(type, GGUF_TYPE_FLOAT32);
        assert_int_equal(n, 512);
        assert_int_equal(gguf_get_array(f, "tokenizer.ggml.token_type", &type, &n, NULL), 0);
        assert_int_equal(n, 512);

        assert_int_equal(gguf_n_tensors(f), 48);
        const GgufTensor *t = gguf_find_tensor(f, "token_embd.weight");
        assert_non_null(t);
        assert_int_equal(t->type, GGML_TYPE_F32);
        assert_int_equal(t->n_dims, 2);
        assert_int_equal(t->ne[0], 64);
        assert_int_equal(t->ne[1], 512);
        assert_int_equal(t->size, 64 * 512 * 4);
        const GgufTensor *o = gguf_find_tensor(f, "output.weight");
        assert_non_null(o);
        /* output.weight is a copy of the embedding */
        assert_memory_equal(o->data, t->data, t->size);
        t = gguf_find_tensor(f, "blk.4.ffn_down.weight");
        assert_non_null(t);
        assert_int_equal(t->ne[0], 172);
        assert_int_equal(t->ne[1], 64);
        t = gguf_find_tensor(f, "blk.0.attn_k.weight");
        assert_non_null(t);
        assert_int_equal(t->ne[0], 64);
        assert_int_equal(t->ne[1], 32);
        for (size_t i = 0; i < gguf_n_tensors(f); i++)
                assert_int_equal(gguf_tensor(f, i)->type, GGML_TYPE_F32);
        assert_null(gguf_find_tensor(f, "blk.5.attn_q.weight"));
}

static void test_llama2_tiny_random(void **state) {
        _cleanup_(gguf_freep) GgufFile *f = open_shared("models/llama-2-tiny-random.gguf");
        uint32_t v;
        uint64_t n;

        if (!f)
                skip();
        check_string(f, "general.architecture", "llama");
        assert_int_equal(gguf_get_u32(f, "llama.embedding_length", &v), 0);
        assert_int_equal(v, 8);
        assert_int_equal(gguf_get_u32(f, "llama.block_count", &v), 0);
        assert_int_equal(v, 1);
        assert_int_equal(gguf_get_u32(f, "llama.context_length", &v), 0);
        assert_int_equal(v, 4096);
        assert_int_equal(gguf_get_array(f, "tokenizer.ggml.tokens", NULL, &n, NULL), 0);
        assert_int_equal(n, 32000);
        check_token(f, 1, "<s>");
        check_token(f, 29871, "\xe2\x96\x81");
        const GgufTensor *t = gguf_find_tensor(f, "blk.0.attn_q.weight");
        assert_non_null(t);
        assert_int_equal(t->type, GGML_TYPE_F16);
        t = gguf_find_tensor(f, "output.weight");
        assert_non_null(t);
        assert_int_equal(t->ne[0], 8);
        assert_int_equal(t->ne[1], 32000);
        t = gguf_find_tensor(f, "output_norm.weight");
        assert_non_null(t);
        assert_int_equal(t->type, GGML_TYPE_F32);
}

static void test_vocab_files(void **state) {
        static const struct {
                const char *file, *model, *pre;
                uint64_t n_tokens;
        } vocabs[] = {
                { "ggml-vocab-llama-spm.gguf", "llama", "default", 32000 },
                { "ggml-vocab-gpt-2.gguf", "gpt2", "gpt-2", 50257 },
                { "ggml-vocab-llama-bpe.gguf", "gpt2", "llama-bpe", 128256 },
                { "ggml-vocab-qwen2.gguf", "gpt2", "qwen2", 151936 },
        };
        bool any = false;

        for (size_t i = 0; i < ELEMENTSOF(vocabs); i++) {
                char rel[256];
                uint64_t n;
                snprintf(rel, sizeof rel, "testdata/tokenizer/%s", vocabs[i].file);
                _cleanup_(gguf_freep) GgufFile *f = open_shared(rel);
                if (!f)
                        continue;
                any = true;
                assert_int_equal(gguf_n_tensors(f), 0);
                check_string(f, "tokenizer.ggml.model", vocabs[i].model);
                const char *pre;
                size_t len;
                if (gguf_get_string(f, "tokenizer.ggml.pre", &pre, &len) == 0)
                        assert_true(len == strlen(vocabs[i].pre) && memcmp(pre, vocabs[i].pre, len) == 0);
                assert_int_equal(gguf_get_array(f, "tokenizer.ggml.tokens", NULL, &n, NULL), 0);
                assert_int_equal(n, vocabs[i].n_tokens);
                /* every token readable, random access */
                for (uint64_t k = n; k-- > 0;) {
                        const char *s;
                        assert_int_equal(gguf_get_array_string(f, "tokenizer.ggml.tokens", k, &s, &len), 0);
                }
                if (streq(vocabs[i].model, "gpt2")) {
                        GgufType type;
                        assert_int_equal(gguf_get_array(f, "tokenizer.ggml.merges", &type, &n, NULL), 0);
                        assert_int_equal(type, GGUF_TYPE_STRING);
                        assert_true(n > 10000);
                }
        }
        if (!any)
                skip();
}

/* ---- inferd-mkmodel ------------------------------------------------------ */

/* Runs inferd-mkmodel with args; its exit status (stdout discarded). */
static int run_mkmodel(const char *const *args) {
        const char *tool = getenv("INFERD_MKMODEL");
        const char *argv[32] = { tool };
        posix_spawn_file_actions_t fa;
        pid_t pid;
        int status;
        size_t n = 1;

        for (; args[n - 1]; n++)
                argv[n] = args[n - 1];
        argv[n] = NULL;
        assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
        assert_int_equal(posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0), 0);
        assert_int_equal(posix_spawn(&pid, tool, &fa, NULL, (char *const *) argv, environ), 0);
        posix_spawn_file_actions_destroy(&fa);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static bool have_mkmodel(void) {
        const char *tool = getenv("INFERD_MKMODEL");
        if (tool && access(tool, X_OK) == 0)
                return true;
        print_message("INFERD_MKMODEL is not set or not executable: skipping\n");
        return false;
}

static void check_model(const char *path, const char *arch, GgmlType type, GgmlType fallback, uint32_t dim, uint32_t layers,
                        uint32_t heads, uint32_t kv_heads, uint32_t ff, uint32_t vocab) {
        _cleanup_(gguf_freep) GgufFile *f = NULL;
        char *why = NULL, key[128];
        uint32_t v;
        uint64_t n;
        uint32_t kv_dim = dim / heads * kv_heads;

        if (gguf_open(path, NULL, &f, &why) < 0)
                fail_msg("%s", strna(why));
        check_string(f, "general.architecture", arch);
        check_string(f, "tokenizer.ggml.model", "llama");
#define CHECK_U32(k, want)                                        \
        do {                                                      \
                snprintf(key, sizeof key, "%s.%s", arch, k);      \
                assert_int_equal(gguf_get_u32(f, key, &v), 0);    \
                assert_int_equal(v, want);                        \
        } while (0)
        CHECK_U32("embedding_length", dim);
        CHECK_U32("block_count", layers);
        CHECK_U32("attention.head_count", heads);
        CHECK_U32("attention.head_count_kv", kv_heads);
        CHECK_U32("feed_forward_length", ff);
        CHECK_U32("rope.dimension_count", dim / heads);
#undef CHECK_U32
        float f32;
        snprintf(key, sizeof key, "%s.rope.freq_base", arch);
        assert_int_equal(gguf_get_f32(f, key, &f32), 0);
        snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
        assert_int_equal(gguf_get_f32(f, key, &f32), 0);
        assert_int_equal(gguf_get_u32(f, "general.file_type", &v), 0);

        assert_int_equal(gguf_get_array(f, "tokenizer.ggml.tokens", NULL, &n, NULL), 0);
        assert_int_equal(n, vocab);
        check_token(f, 0, "<unk>");
        check_token(f, 1, "<s>");
        check_token(f, 2, "</s>");
        check_token(f, 3, "<0x00>");
        check_token(f, 258, "<0xFF>");
        check_token(f, 259, "\xe2\x96\x81");
        GgufType type_;
        const void *types;
        assert_int_equal(gguf_get_array(f, "tokenizer.ggml.token_type", &type_, &n, &types), 0);
        assert_int_equal(type_, GGUF_TYPE_INT32);
        assert_int_equal(n, vocab);
        int32_t tt[300];
        memcpy(tt, types, sizeof tt);
        assert_int_equal(tt[0], 2);
        assert_int_equal(tt[1], 3);
        assert_int_equal(tt[100], 6);
        assert_int_equal(tt[299], 1);
        assert_int_equal(gguf_get_array(f, "tokenizer.ggml.scores", &type_, &n, NULL), 0);
        assert_int_equal(n, vocab);
        assert_int_equal(gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &v), 0);
        assert_int_equal(v, 1);
        assert_int_equal(gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &v), 0);
        assert_int_equal(v, 2);

        bool qwen = streq(arch, "qwen2");
        assert_int_equal(gguf_n_tensors(f), 3 + layers * (qwen ? 12 : 9));
        static const struct {
                const char *name;
                int ne0, ne1; /* 'd' dim, 'k' kv_dim, 'f' ff, 'v' vocab, 0 none */
                bool matrix;
        } shapes[] = {
                { "token_embd.weight", 'd', 'v', true },      { "output_norm.weight", 'd', 0, false },
                { "output.weight", 'd', 'v', true },          { "blk.%u.attn_norm.weight", 'd', 0, false },
                { "blk.%u.attn_q.weight", 'd', 'd', true },   { "blk.%u.attn_k.weight", 'd', 'k', true },
                { "blk.%u.attn_v.weight", 'd', 'k', true },   { "blk.%u.attn_output.weight", 'd', 'd', true },
                { "blk.%u.ffn_norm.weight", 'd', 0, false },  { "blk.%u.ffn_gate.weight", 'd', 'f', true },
                { "blk.%u.ffn_up.weight", 'd', 'f', true },   { "blk.%u.ffn_down.weight", 'f', 'd', true },
                { "blk.%u.attn_q.bias", 'd', 0, false },      { "blk.%u.attn_k.bias", 'k', 0, false },
                { "blk.%u.attn_v.bias", 'k', 0, false },
        };
        for (uint32_t l = 0; l < layers; l++)
                for (size_t i = 0; i < ELEMENTSOF(shapes); i++) {
                        char name[64];
                        snprintf(name, sizeof name, shapes[i].name, l);
                        const GgufTensor *t = gguf_find_tensor(f, name);
                        if (strstr(name, "bias") && !qwen) {
                                assert_null(t);
                                continue;
                        }
                        if (!t)
                                fail_msg("%s: no tensor %s", path, name);
                        uint64_t want[2];
                        for (int d = 0; d < 2; d++) {
                                int c = d == 0 ? shapes[i].ne0 : shapes[i].ne1;
                                want[d] = c == 'd' ? dim : c == 'k' ? kv_dim : c == 'f' ? ff : c == 'v' ? vocab : 1;
                        }
                        assert_int_equal(t->n_dims, shapes[i].ne1 ? 2 : 1);
                        assert_int_equal(t->ne[0], want[0]);
                        assert_int_equal(t->ne[1], want[1]);
                        if (!shapes[i].matrix)
                                assert_int_equal(t->type, GGML_TYPE_F32);
                        else if (t->ne[0] % ggml_type_block_elems(type) == 0)
                                assert_int_equal(t->type, type);
                        else
                                assert_int_equal(t->type, fallback);
                        /* weights are sane: finite, of the scale intended */
                        if (t->ne[0] % 32 == 0 || t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16) {
                                float row[4096];
                                assert_true(t->ne[0] <= 4096);
                                assert_int_equal(ggml_dequantize_row(t->type, t->data, row, t->ne[0]), 0);
                                double sum2 = 0;
                                for (uint64_t k = 0; k < t->ne[0]; k++) {
                                        assert_true(isfinite(row[k]));
                                        sum2 += (double) row[k] * row[k];
                                }
                                double rms = sqrt(sum2 / (double) t->ne[0]);
                                if (strstr(name, "norm"))
                                        assert_true(rms > 0.9 && rms < 1.1);
                                else if (shapes[i].matrix)
                                        assert_true(rms > 0.5 / sqrt((double) t->ne[0]) && rms < 2 / sqrt((double) t->ne[0]));
                        }
                }
}

static void test_mkmodel(void **state) {
        static const struct {
                const char *type;
                GgmlType t, fallback;
        } types[] = {
                { "F32", GGML_TYPE_F32, GGML_TYPE_F32 },     { "F16", GGML_TYPE_F16, GGML_TYPE_F16 },
                { "Q8_0", GGML_TYPE_Q8_0, GGML_TYPE_Q8_0 },  { "Q4_0", GGML_TYPE_Q4_0, GGML_TYPE_Q4_0 },
                { "Q4_K", GGML_TYPE_Q4_K, GGML_TYPE_Q8_0 },  { "Q5_K", GGML_TYPE_Q5_K, GGML_TYPE_Q8_0 },
                { "Q6_K", GGML_TYPE_Q6_K, GGML_TYPE_Q8_0 },
        };
        char *path = tmp_path("model.gguf");

        if (!have_mkmodel())
                skip();
        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                bool k = types[i].t != types[i].fallback;
                /* the tiny preset: K-quants need --allow-fallback for its 64-wide rows */
                int status = run_mkmodel((const char *[]) { "--preset", "tiny", "--type", types[i].type, "-o", path, NULL });
                if (k) {
                        assert_int_not_equal(status, 0);
                        assert_int_equal(run_mkmodel((const char *[]) { "--preset", "tiny", "--type", types[i].type,
                                                                         "--allow-fallback", "-o", path, NULL }),
                                         0);
                } else
                        assert_int_equal(status, 0);
                check_model(path, "llama", types[i].t, types[i].fallback, 64, 2, 4, 2, 128, 512);

                /* a shape whose rows fit every type, as qwen2 with biases */
                assert_int_equal(run_mkmodel((const char *[]) { "--arch", "qwen2", "--type", types[i].type, "--dim", "256",
                                                                 "--layers", "1", "--heads", "4", "--kv-heads", "1", "--ff",
                                                                 "512", "--vocab", "300", "--seed", "7", "-o", path, NULL }),
                                 0);
                check_model(path, "qwen2", types[i].t, types[i].t, 256, 1, 4, 1, 512, 300);
        }
}

static void test_mkmodel_deterministic(void **state) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;
        size_t na, nb, nc;
        char pa[256], pb[256], pc[256];

        if (!have_mkmodel())
                skip();
        snprintf(pa, sizeof pa, "%s", tmp_path("a.gguf"));
        snprintf(pb, sizeof pb, "%s", tmp_path("b.gguf"));
        snprintf(pc, sizeof pc, "%s", tmp_path("c.gguf"));
        /* explicit sizes equal to the preset's, in any order, give the same file */
        assert_int_equal(run_mkmodel((const char *[]) { "--preset", "tiny", "--type", "Q8_0", "--seed", "5", "-o", pa, NULL }), 0);
        assert_int_equal(run_mkmodel((const char *[]) { "--dim", "64", "--type", "q8_0", "--seed", "5", "--preset", "tiny",
                                                         "-o", pb, NULL }),
                         0);
        assert_int_equal(run_mkmodel((const char *[]) { "--preset", "tiny", "--type", "Q8_0", "--seed", "6", "-o", pc, NULL }), 0);
        assert_int_equal(read_full_file(pa, 64u << 20, &a, &na), 0);
        assert_int_equal(read_full_file(pb, 64u << 20, &b, &nb), 0);
        assert_int_equal(read_full_file(pc, 64u << 20, &c, &nc), 0);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na);
        assert_int_equal(na, nc);
        assert_memory_not_equal(a, c, na);

        assert_int_not_equal(run_mkmodel((const char *[]) { "--dim", "65", "-o", pa, NULL }), 0);
        assert_int_not_equal(run_mkmodel((const char *[]) { "--kv-heads", "3", "-o", pa, NULL }), 0);
        assert_int_not_equal(run_mkmodel((const char *[]) { "--vocab", "100", "-o", pa, NULL }), 0);
        assert_int_not_equal(run_mkmodel((const char *[]) { "--type", "Q2_K", "-o", pa, NULL }), 0);
        assert_int_not_equal(run_mkmodel((const char *[]) { "--preset", "huge", "-o", pa, NULL }), 0);
        assert_int_not_equal(run_mkmodel((const char *[]) { "--preset", "tiny", NULL }), 0);
}

/*
 * The factors path's rope_freqs.weight holds, or -1 when it has none: n_pairs F32 values checked
 * against Llama 3's rule (low_freq_factor 1, high_freq_factor 4), worked out here on its own.
 */
static int check_rope_freqs(const char *path, uint32_t n_pairs, double base, double factor, double orig) {
        _cleanup_(gguf_freep) GgufFile *f = NULL;
        char *why = NULL;

        if (gguf_open(path, NULL, &f, &why) < 0)
                fail_msg("%s", strna(why));
        const GgufTensor *t = gguf_find_tensor(f, "rope_freqs.weight");
        if (!t)
                return -1;
        assert_int_equal(t->type, GGML_TYPE_F32);
        assert_int_equal(t->n_dims, 1);
        assert_int_equal(t->ne[0], n_pairs);
        for (uint32_t i = 0; i < n_pairs; i++) {
                float got;
                memcpy(&got, (const uint8_t *) t->data + 4 * i, 4);
                /* Pair i turns orig / wavelength times within the original context. */
                double turns = orig * pow(base, -2.0 * i / (2.0 * n_pairs)) / (2 * M_PI);
                double smooth = (turns - 1) / 3;
                double want = turns > 4 ? 1 : turns < 1 ? factor : 1 / ((1 - smooth) / factor + smooth);
                if (fabs(got - want) > 1e-6 * want)
                        fail_msg("%s: factor %u is %.9g, want %.9g", path, i, (double) got, want);
        }
        return 0;
}

static void test_mkmodel_rope_freqs(void **state) {
        char path[256];
        static const char *const small[] = { "--dim", "256", "--layers", "1", "--heads", "4", "--kv-heads", "1",
                                             "--ff", "512", "--vocab", "300" };
#define SMALL small[0], small[1], small[2], small[3], small[4], small[5], small[6], small[7], small[8], small[9], \
              small[10], small[11]

        if (!have_mkmodel())
                skip();
        snprintf(path, sizeof path, "%s", tmp_path("freqs.gguf"));
        /* tiny: head size 16, base 10000; an original context of 64 puts pairs in all three ranges. */
        assert_int_equal(run_mkmodel((const char *[]) { "--preset", "tiny", "--rope-freqs", "8:64", "-o", path, NULL }),
                         0);
        assert_int_equal(check_rope_freqs(path, 8, 10000, 8, 64), 0);
        assert_int_equal(run_mkmodel((const char *[]) { "--preset", "tiny", "--rope-freqs", "4", "-o", path, NULL }),
                         0);
        assert_int_equal(check_rope_freqs(path, 8, 10000, 4, 8192), 0);
        assert_int_equal(run_mkmodel((const char *[]) { "--preset", "tiny", "-o", path, NULL }), 0);
        assert_int_equal(check_rope_freqs(path, 8, 10000, 1, 1), -1);

        /* llama-3.2-1b has them (factor 32, as the real one), llama-3-8b (Llama 3.0) not. */
        assert_int_equal(run_mkmodel((const char *[]) { "--preset", "llama-3.2-1b", SMALL, "-o", path, NULL }), 0);
        assert_int_equal(check_rope_freqs(path, 32, 500000, 32, 8192), 0);
        assert_int_equal(run_mkmodel((const char *[]) { "--preset", "llama-3.2-1b", "--rope-freqs", "none", SMALL, "-o",
                                                         path, NULL }),
                         0);
        assert_int_equal(check_rope_freqs(path, 32, 500000, 32, 8192), -1);
        assert_int_equal(run_mkmodel((const char *[]) { "--preset", "llama-3-8b", SMALL, "-o", path, NULL }), 0);
        assert_int_equal(check_rope_freqs(path, 32, 500000, 32, 8192), -1);
#undef SMALL

        static const char *const bad[] = { "0", "-1", "x", "nan", "inf", "8:", "8:0", "8:x", "8:64:1" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_int_not_equal(run_mkmodel((const char *[]) { "--rope-freqs", bad[i], "-o", path, NULL }), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_alignment_key),
                cmocka_unit_test(test_streamed_tensor),
                cmocka_unit_test(test_truncated),
                cmocka_unit_test(test_bad_header),
                cmocka_unit_test(test_huge_counts),
                cmocka_unit_test(test_bad_strings),
                cmocka_unit_test(test_nested_arrays),
                cmocka_unit_test(test_bad_alignment),
                cmocka_unit_test(test_bad_tensors),
                cmocka_unit_test(test_open),
                cmocka_unit_test(test_stories260k),
                cmocka_unit_test(test_llama2_tiny_random),
                cmocka_unit_test(test_vocab_files),
                cmocka_unit_test(test_mkmodel),
                cmocka_unit_test(test_mkmodel_deterministic),
                cmocka_unit_test(test_mkmodel_rope_freqs),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
