/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Shared by the GPU tests: opens the device named by $INFERD_TEST_DEVICE
 * (default 0) or exits 77 (skip) when the machine has no Vulkan device, and
 * small helpers for random data and error measures.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

#include "engine.h"
#include "vkdev.h"

typedef struct GpuTestCtx {
        GpuInstance *inst;
        GpuDevice *dev;
} GpuTestCtx;

static inline void gpu_test_open(GpuTestCtx *t) {
        const char *e = getenv("INFERD_TEST_DEVICE");
        size_t index = e ? strtoul(e, NULL, 10) : 0;
        int r;

        r = gpu_instance_new(&t->inst);
        if (r < 0 || gpu_instance_n_devices(t->inst) == 0) {
                printf("1..0 # SKIP no Vulkan device\n");
                exit(77);
        }
        r = gpu_device_new(t->inst, index, NULL, &t->dev);
        if (r < 0) {
                fprintf(stderr, "gpu_device_new(%zu): %s\n", index, strerror(-r));
                exit(1);
        }
        fprintf(stderr, "# device: %s\n", gpu_device_info(t->dev)->name);
}

static inline void gpu_test_close(GpuTestCtx *t) {
        gpu_device_free(t->dev);
        gpu_instance_free(t->inst);
}

/* xorshift64*: the same data on every run and every machine. */
static inline uint64_t test_rand_u64(uint64_t *s) {
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        return *s * 2685821657736338717ULL;
}

/* Uniform in [-1, 1). */
static inline float test_rand_f(uint64_t *s) {
        return (float) ((double) (test_rand_u64(s) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static inline void test_fill_random(float *x, size_t n, uint64_t seed) {
        uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
        for (size_t i = 0; i < n; i++)
                x[i] = test_rand_f(&s);
}

/* Normalised mean squared error: sum (a-b)^2 / sum b^2. */
static inline double test_nmse(const float *a, const float *ref, size_t n) {
        double num = 0, den = 0;
        for (size_t i = 0; i < n; i++) {
                double d = (double) a[i] - (double) ref[i];
                num += d * d;
                den += (double) ref[i] * (double) ref[i];
        }
        return den > 0 ? num / den : num;
}

/*
 * n RoPE frequency factors, log-uniform in [0.5, 8) (Llama 3.1's run from 1 to 8 or 32; nothing forbids
 * less than 1), as the kernels take them: 1/factor rounded to float, as model.c uploads them.
 */
static inline void test_rope_factors_inv(float *inv, uint32_t n, uint64_t seed) {
        uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 7;
        for (uint32_t i = 0; i < n; i++)
                inv[i] = 1.0f / exp2f(2.0f * test_rand_f(&s) + 1.0f);
}
