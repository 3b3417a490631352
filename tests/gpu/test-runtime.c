/* SPDX-License-Identifier: MIT */
/* The Vulkan runtime on a real device: buffers, transfers, pipelines, dispatch, timestamps, host read-back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gpu-test.h"

static GpuTestCtx T;

static void test_buffer_roundtrip(void **state) {
        const GpuCaps *caps = gpu_device_caps(T.dev);
        GpuBuffer *b = NULL;
        size_t n = (size_t) (MIN(caps->max_storage_buffer_range, 96ULL << 20) / sizeof(float));
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);

        /* Larger than the 64 MiB staging buffer: the transfer is chunked. */
        test_fill_random(x, n, 1);
        assert_int_equal(gpu_buffer_new(T.dev, n * sizeof(float), GPU_MEMORY_DEVICE, &b), 0);
        assert_true(gpu_device_allocated(T.dev) >= n * sizeof(float));
        assert_int_equal(gpu_buffer_write(b, 0, x, n * sizeof(float)), 0);
        assert_int_equal(gpu_buffer_read(b, 0, y, n * sizeof(float)), 0);
        assert_memory_equal(x, y, n * sizeof(float));
        /* Partial, offset writes. */
        assert_int_equal(gpu_buffer_write(b, 12, x + 100, 40), 0);
        assert_int_equal(gpu_buffer_read(b, 12, y, 40), 0);
        assert_memory_equal(x + 100, y, 40);
        assert_int_equal(gpu_buffer_write(b, n * sizeof(float) - 4, x, 8), -ERANGE);
        gpu_buffer_free(b);
        free(x);
        free(y);
}

/* gpu_buffer_fill on device and host memory: only the range it names, word-aligned ranges only. */
static void test_buffer_fill(void **state) {
        static const GpuMemory kinds[] = { GPU_MEMORY_DEVICE, GPU_MEMORY_HOST };
        uint32_t x[256], y[256];

        for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
                GpuBuffer *b = NULL;
                for (size_t i = 0; i < ELEMENTSOF(x); i++)
                        x[i] = (uint32_t) i * 2654435761u;
                assert_int_equal(gpu_buffer_new(T.dev, sizeof x, kinds[k], &b), 0);
                assert_int_equal(gpu_buffer_write(b, 0, x, sizeof x), 0);
                assert_int_equal(gpu_buffer_fill(b, 16, 400, 0x7fc00000u), 0);
                for (size_t i = 4; i < 104; i++)
                        x[i] = 0x7fc00000u;
                assert_int_equal(gpu_buffer_read(b, 0, y, sizeof y), 0);
                assert_memory_equal(x, y, sizeof x);
                assert_int_equal(gpu_buffer_fill(b, 0, sizeof x, 0), 0);
                assert_int_equal(gpu_buffer_read(b, 0, y, sizeof y), 0);
                for (size_t i = 0; i < ELEMENTSOF(y); i++)
                        assert_int_equal(y[i], 0);
                assert_int_equal(gpu_buffer_fill(b, 2, 8, 0), -EINVAL);
                assert_int_equal(gpu_buffer_fill(b, 0, 6, 0), -EINVAL);
                assert_int_equal(gpu_buffer_fill(b, sizeof x - 4, 8, 0), -ERANGE);
                gpu_buffer_free(b);
        }
}

static void test_buffer_limits(void **state) {
        const GpuCaps *caps = gpu_device_caps(T.dev);
        GpuBuffer *b = NULL;
        assert_int_equal(gpu_buffer_new(T.dev, caps->max_storage_buffer_range + 4, GPU_MEMORY_DEVICE, &b), -EFBIG);
        assert_null(b);
        assert_int_equal(gpu_buffer_new(T.dev, 0, GPU_MEMORY_DEVICE, &b), -EINVAL);
        assert_int_equal(gpu_buffer_new(T.dev, 4096, GPU_MEMORY_HOST, &b), 0);
        assert_non_null(gpu_buffer_map(b));
        gpu_buffer_free(b);
}

static void test_dispatch_copy_and_timestamps(void **state) {
        const uint32_t n = 1000001; /* n + 3 floats: 250001 vec4, an odd count */
        GpuBuffer *src = NULL, *dst = NULL;
        GpuPipeline *p = NULL, *p2 = NULL;
        GpuCmd *c = NULL;
        float *x = malloc((n + 3) * sizeof *x), *y = calloc(n + 3, sizeof *y);
        GpuSpec spec = { .v = { 256 }, .n = 1 };

        test_fill_random(x, n + 3, 2);
        assert_int_equal(gpu_buffer_new(T.dev, (n + 3) * 4ULL, GPU_MEMORY_DEVICE, &src), 0);
        assert_int_equal(gpu_buffer_new(T.dev, (n + 3) * 4ULL, GPU_MEMORY_DEVICE, &dst), 0);
        assert_int_equal(gpu_buffer_write(src, 0, x, (n + 3) * 4ULL), 0);
        assert_int_equal(gpu_pipeline_get(T.dev, GPU_SHADER_COPY_F32, &spec, &p), 0);
        assert_int_equal(gpu_pipeline_get(T.dev, GPU_SHADER_COPY_F32, &spec, &p2), 0);
        assert_ptr_equal(p, p2); /* cached */
        assert_string_equal(gpu_pipeline_name(p), "copy_f32");

        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        int t0 = gpu_cmd_timestamp(c);
        uint32_t n4 = (n + 3) / 4;
        GpuBinding b[2] = { { src, 0, 0 }, { dst, 0, 0 } };
        assert_int_equal(gpu_cmd_dispatch(c, p, b, 2, &n4, sizeof n4, 64, 1, 1), 0);
        int t1 = gpu_cmd_timestamp(c);
        assert_int_equal(gpu_cmd_submit(c), 0);
        assert_int_equal(gpu_buffer_read(dst, 0, y, (n + 3) * 4ULL), 0);
        assert_memory_equal(x, y, (n + 3) * 4ULL);
        if (t0 >= 0 && t1 >= 0) {
                double ns = -1;
                assert_int_equal(gpu_cmd_elapsed_ns(c, t0, t1, &ns), 0);
                assert_true(ns > 0);
        }

        /* Replaying the same recording works without re-recording. */
        memset(y, 0, (n + 3) * 4ULL);
        assert_int_equal(gpu_buffer_write(dst, 0, y, (n + 3) * 4ULL), 0);
        assert_int_equal(gpu_cmd_submit(c), 0);
        assert_int_equal(gpu_buffer_read(dst, 0, y, (n + 3) * 4ULL), 0);
        assert_memory_equal(x, y, (n + 3) * 4ULL);

        /* A dispatch that does not match the shader is refused, and so is the submission. */
        assert_int_equal(gpu_cmd_begin(c), 0);
        assert_int_equal(gpu_cmd_dispatch(c, p, b, 1, &n4, sizeof n4, 1, 1, 1), -EINVAL);
        assert_int_equal(gpu_cmd_dispatch(c, p, b, 2, &n4, 2, 1, 1, 1), -EINVAL);
        assert_int_equal(gpu_cmd_submit(c), -EINVAL);

        gpu_cmd_free(c);
        gpu_buffer_free(src);
        gpu_buffer_free(dst);
        free(x);
        free(y);
}

static void test_many_dispatches_one_submission(void **state) {
        /* More descriptor sets than one pool holds: pools are added as needed. */
        GpuBuffer *a = NULL, *b = NULL;
        GpuPipeline *p = NULL;
        GpuCmd *c = NULL;
        float x[64], y[64];
        GpuSpec spec = { .v = { 64 }, .n = 1 };
        uint32_t n4 = 16;

        test_fill_random(x, 64, 3);
        assert_int_equal(gpu_buffer_new(T.dev, sizeof x, GPU_MEMORY_DEVICE, &a), 0);
        assert_int_equal(gpu_buffer_new(T.dev, sizeof x, GPU_MEMORY_DEVICE, &b), 0);
        assert_int_equal(gpu_buffer_write(a, 0, x, sizeof x), 0);
        assert_int_equal(gpu_pipeline_get(T.dev, GPU_SHADER_COPY_F32, &spec, &p), 0);
        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        for (int round = 0; round < 2; round++) {
                assert_int_equal(gpu_cmd_begin(c), 0);
                for (int i = 0; i < 1000; i++) {
                        GpuBinding bb[2] = { { i % 2 ? b : a, 0, 0 }, { i % 2 ? a : b, 0, 0 } };
                        assert_int_equal(gpu_cmd_dispatch(c, p, bb, 2, &n4, sizeof n4, 1, 1, 1), 0);
                        gpu_cmd_barrier(c);
                }
                assert_int_equal(gpu_cmd_submit(c), 0);
        }
        assert_int_equal(gpu_buffer_read(a, 0, y, sizeof y), 0);
        assert_memory_equal(x, y, sizeof x);
        gpu_cmd_free(c);
        gpu_buffer_free(a);
        gpu_buffer_free(b);
}

/*
 * Results read by the host straight from a GPU_MEMORY_HOST buffer after the
 * submission that produced them, no second one: a dispatch into device
 * memory, a copy into the host buffer and gpu_cmd_barrier_host; and a
 * dispatch writing into the host buffer itself. The recording is replayed
 * with new input and the host sees the new results each time.
 */
static void test_host_readback(void **state) {
        const uint32_t n = 4099, n4 = (n + 3) / 4; /* whole vec4s: 1025 */
        GpuBuffer *src = NULL, *mid = NULL, *host = NULL;
        GpuPipeline *p = NULL;
        GpuCmd *c = NULL;
        float *x = malloc(n4 * 16);
        GpuSpec spec = { .v = { 64 }, .n = 1 };

        assert_non_null(x);
        assert_int_equal(gpu_buffer_new(T.dev, n4 * 16, GPU_MEMORY_DEVICE, &src), 0);
        assert_int_equal(gpu_buffer_new(T.dev, n4 * 16, GPU_MEMORY_DEVICE, &mid), 0);
        /* The copy at 0, the dispatch's output at a 256-byte aligned offset after it. */
        uint64_t second = (n4 * 16 + 255) / 256 * 256;
        assert_int_equal(gpu_buffer_new(T.dev, second + n4 * 16, GPU_MEMORY_HOST, &host), 0);
        const uint8_t *map = gpu_buffer_map(host);
        assert_non_null(map);
        assert_int_equal(gpu_pipeline_get(T.dev, GPU_SHADER_COPY_F32, &spec, &p), 0);

        assert_int_equal(gpu_cmd_new(T.dev, &c), 0);
        assert_int_equal(gpu_cmd_begin(c), 0);
        GpuBinding b1[2] = { { src, 0, 0 }, { mid, 0, 0 } };
        GpuBinding b2[2] = { { src, 0, 0 }, { host, second, n4 * 16 } };
        assert_int_equal(gpu_cmd_dispatch(c, p, b1, 2, &n4, sizeof n4, (n4 + 63) / 64, 1, 1), 0);
        assert_int_equal(gpu_cmd_dispatch(c, p, b2, 2, &n4, sizeof n4, (n4 + 63) / 64, 1, 1), 0);
        gpu_cmd_barrier(c);
        gpu_cmd_copy(c, mid, 0, host, 0, n4 * 16);
        gpu_cmd_barrier_host(c);
        for (int round = 0; round < 3; round++) {
                test_fill_random(x, n4 * 4, 10 + round);
                assert_int_equal(gpu_buffer_write(src, 0, x, n4 * 16), 0);
                assert_int_equal(gpu_cmd_submit(c), 0);
                assert_memory_equal(map, x, n4 * 16);
                assert_memory_equal(map + second, x, n4 * 16);
        }

        gpu_cmd_free(c);
        gpu_buffer_free(src);
        gpu_buffer_free(mid);
        gpu_buffer_free(host);
        free(x);
}

static void test_pipeline_cache_persisted(void **state) {
        char dir[] = "/tmp/inferd-gpu-cache-XXXXXX";
        GpuDevice *d = NULL;
        GpuPipeline *p = NULL;
        GpuSpec spec = { .v = { 128 }, .n = 1 };
        char cmd[128];

        assert_non_null(mkdtemp(dir));
        assert_int_equal(gpu_device_new(T.inst, 0, dir, &d), 0);
        assert_int_equal(gpu_pipeline_get(d, GPU_SHADER_COPY_F32, &spec, &p), 0);
        gpu_device_free(d);
        snprintf(cmd, sizeof cmd, "test -s %s/pipeline-cache-*.bin", dir);
        assert_int_equal(system(cmd), 0);
        /* Loading it back works (and a corrupt file is ignored by the driver's header check). */
        assert_int_equal(gpu_device_new(T.inst, 0, dir, &d), 0);
        gpu_device_free(d);
        snprintf(cmd, sizeof cmd, "for f in %s/pipeline-cache-*.bin; do echo garbage > $f; done", dir);
        assert_int_equal(system(cmd), 0);
        assert_int_equal(gpu_device_new(T.inst, 0, dir, &d), 0);
        assert_int_equal(gpu_pipeline_get(d, GPU_SHADER_COPY_F32, &spec, &p), 0);
        gpu_device_free(d);
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        assert_int_equal(system(cmd), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_buffer_roundtrip),
                cmocka_unit_test(test_buffer_fill),
                cmocka_unit_test(test_buffer_limits),
                cmocka_unit_test(test_dispatch_copy_and_timestamps),
                cmocka_unit_test(test_many_dispatches_one_submission),
                cmocka_unit_test(test_host_readback),
                cmocka_unit_test(test_pipeline_cache_persisted),
        };
        gpu_test_open(&T);
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        gpu_test_close(&T);
        return r;
}
