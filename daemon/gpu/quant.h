/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * GGUF/GGML tensor types as stored in model files: block sizes, byte sizes,
 * reference dequantisation and simple round-to-nearest quantisers. The
 * numeric type ids are the file format's and never change.
 *
 * These are the plain-C references the GPU kernels are tested against, and
 * the quantisers the synthetic-model writer uses.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum GgmlType {
        GGML_TYPE_F32 = 0,
        GGML_TYPE_F16 = 1,
        GGML_TYPE_Q4_0 = 2,
        GGML_TYPE_Q4_1 = 3,
        GGML_TYPE_Q5_0 = 6,
        GGML_TYPE_Q5_1 = 7,
        GGML_TYPE_Q8_0 = 8,
        GGML_TYPE_Q8_1 = 9,
        GGML_TYPE_Q2_K = 10,
        GGML_TYPE_Q3_K = 11,
        GGML_TYPE_Q4_K = 12,
        GGML_TYPE_Q5_K = 13,
        GGML_TYPE_Q6_K = 14,
        GGML_TYPE_Q8_K = 15,
        GGML_TYPE_BF16 = 30,
        GGML_TYPE__MAX = 64,
} GgmlType;

#define QK8_0 32
#define QK4_0 32
#define QK_K 256

/* Block layouts of the file format (packed: no padding). */
typedef struct __attribute__((packed)) BlockQ8_0 {
        uint16_t d;             /* f16 */
        int8_t qs[QK8_0];
} BlockQ8_0;

typedef struct __attribute__((packed)) BlockQ4_0 {
        uint16_t d;
        uint8_t qs[QK4_0 / 2];  /* byte j: element j in the low nibble, j+16 in the high */
} BlockQ4_0;

typedef struct __attribute__((packed)) BlockQ4_K {
        uint16_t d;
        uint16_t dmin;
        uint8_t scales[12];     /* 8 six-bit scales and 8 six-bit mins */
        uint8_t qs[QK_K / 2];
} BlockQ4_K;

typedef struct __attribute__((packed)) BlockQ5_K {
        uint16_t d;
        uint16_t dmin;
        uint8_t scales[12];
        uint8_t qh[QK_K / 8];
        uint8_t qs[QK_K / 2];
} BlockQ5_K;

typedef struct __attribute__((packed)) BlockQ6_K {
        uint8_t ql[QK_K / 2];
        uint8_t qh[QK_K / 4];
        int8_t scales[QK_K / 16];
        uint16_t d;
} BlockQ6_K;

_Static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block");
_Static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block");
_Static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block");
_Static_assert(sizeof(BlockQ5_K) == 176, "Q5_K block");
_Static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block");

/* "F32", "Q4_K", ...; NULL for unknown ids. */
const char *ggml_type_name(GgmlType t);
/* Elements per block (1 for F32/F16) and bytes per block; 0 if unknown. */
uint32_t ggml_type_block_elems(GgmlType t);
uint32_t ggml_type_block_bytes(GgmlType t);
/* Whether the engine runs this type (F32, F16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K). */
bool ggml_type_supported(GgmlType t);
/* Bytes of n elements (n a multiple of the block size), 0 on overflow or bad n. */
uint64_t ggml_row_bytes(GgmlType t, uint64_t n);

float half_to_float(uint16_t h);
uint16_t float_to_half(float f);        /* round to nearest even */

/* Dequantises n elements (a multiple of the block size). -EINVAL for unsupported types. */
int ggml_dequantize_row(GgmlType t, const void *src, float *dst, uint64_t n);
/* Quantises n elements by rounding to nearest (not the best error, but exact
 * and deterministic): for tests and synthetic models. */
int ggml_quantize_row(GgmlType t, const float *src, void *dst, uint64_t n);
