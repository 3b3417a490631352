/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the GGUF parser: any bytes give a file or an error that names the
 * input, never a crash. What parses is then walked entirely (every key
 * through every getter, every array string, the first and last byte of every
 * tensor), so an accepted file can be used without further checks.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Keeps the reads from being optimised away. */
static volatile uint8_t sink;

static void touch(const void *p, size_t n) {
        if (n > 0)
                sink ^= ((const uint8_t *) p)[0] ^ ((const uint8_t *) p)[n - 1];
}

static void walk_kv(const GgufFile *f, size_t i) {
        const char *key = gguf_kv_key(f, i);
        uint32_t u32;
        uint64_t u64, n;
        int32_t i32;
        int64_t i64;
        float f32;
        double f64;
        bool b;
        const char *s;
        size_t len;
        GgufType type;
        const void *p;

        if (!key || gguf_find_key(f, key) != (int64_t) i)
                abort(); /* keys are unique and found where they are */
        (void) gguf_get_u32(f, key, &u32);
        (void) gguf_get_u64(f, key, &u64);
        (void) gguf_get_i32(f, key, &i32);
        (void) gguf_get_i64(f, key, &i64);
        (void) gguf_get_f32(f, key, &f32);
        (void) gguf_get_f64(f, key, &f64);
        (void) gguf_get_bool(f, key, &b);
        if (gguf_get_string(f, key, &s, &len) == 0)
                touch(s, len);
        if (gguf_get_array(f, key, &type, &n, &p) == 0) {
                if (type == GGUF_TYPE_STRING) {
                        for (uint64_t k = 0; k < n; k++) {
                                if (gguf_get_array_string(f, key, k, &s, &len) < 0)
                                        abort();
                                touch(s, len);
                        }
                        if (gguf_get_array_string(f, key, n, &s, &len) >= 0)
                                abort();
                } else if (type != GGUF_TYPE_ARRAY && n > 0) {
                        touch(p, 1);
                } else if (gguf_get_array_string(f, key, 0, &s, &len) >= 0)
                        abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        /* small limits, so the fuzzer meets them too */
        static const GgufLimits limits = {
                .max_tensors = 1024,
                .max_kv = 1024,
                .max_string = 1u << 16,
                .max_array = 1u << 16,
        };
        GgufFile *f = NULL;
        char *why = NULL;
        int r;

        r = gguf_parse_buffer_named(data, size, "fuzz.gguf", &limits, &f, &why);
        if (r < 0) {
                if (f || !why || strncmp(why, "fuzz.gguf: ", 11) != 0)
                        abort(); /* every error names the input */
                free(why);
                return 0;
        }
        if (!f || why)
                abort();

        for (size_t i = 0; i < gguf_n_kv(f); i++)
                walk_kv(f, i);
        for (size_t i = 0; i < gguf_n_tensors(f); i++) {
                const GgufTensor *t = gguf_tensor(f, i);
                const uint8_t *d = t->data;
                if (gguf_find_tensor(f, t->name) != t)
                        abort();
                if (t->offset % gguf_alignment(f) != 0 || d < data || d + t->size > data + size ||
                    t->size != ggml_row_bytes(t->type, t->ne[0]) * t->ne[1] * t->ne[2] * t->ne[3])
                        abort();
                touch(d, t->size);
        }
        gguf_free(f);
        return 0;
}
