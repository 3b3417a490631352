/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "macro.h"
#include "quant.h"

static const struct {
        const char *name;
        uint32_t elems, bytes;
        bool supported;
} types[GGML_TYPE__MAX] = {
        [GGML_TYPE_F32] = { "F32", 1, 4, true },
        [GGML_TYPE_F16] = { "F16", 1, 2, true },
        [GGML_TYPE_Q4_0] = { "Q4_0", 32, 18, true },
        [GGML_TYPE_Q4_1] = { "Q4_1", 32, 20, false },
        [GGML_TYPE_Q5_0] = { "Q5_0", 32, 22, false },
        [GGML_TYPE_Q5_1] = { "Q5_1", 32, 24, false },
        [GGML_TYPE_Q8_0] = { "Q8_0", 32, 34, true },
        [GGML_TYPE_Q8_1] = { "Q8_1", 32, 36, false },
        [GGML_TYPE_Q2_K] = { "Q2_K", 256, 84, false },
        [GGML_TYPE_Q3_K] = { "Q3_K", 256, 110, false },
        [GGML_TYPE_Q4_K] = { "Q4_K", 256, 144, true },
        [GGML_TYPE_Q5_K] = { "Q5_K", 256, 176, true },
        [GGML_TYPE_Q6_K] = { "Q6_K", 256, 210, true },
        [GGML_TYPE_Q8_K] = { "Q8_K", 256, 292, false },
        [GGML_TYPE_BF16] = { "BF16", 1, 2, false },
};

const char *ggml_type_name(GgmlType t) {
        return (unsigned) t < GGML_TYPE__MAX ? types[t].name : NULL;
}

uint32_t ggml_type_block_elems(GgmlType t) {
        return (unsigned) t < GGML_TYPE__MAX ? types[t].elems : 0;
}

uint32_t ggml_type_block_bytes(GgmlType t) {
        return (unsigned) t < GGML_TYPE__MAX ? types[t].bytes : 0;
}

bool ggml_type_supported(GgmlType t) {
        return (unsigned) t < GGML_TYPE__MAX && types[t].supported;
}

uint64_t ggml_row_bytes(GgmlType t, uint64_t n) {
        uint32_t e = ggml_type_block_elems(t), b = ggml_type_block_bytes(t);
        if (e == 0 || n % e != 0 || n / e > UINT64_MAX / b)
                return 0;
        return n / e * b;
}

float half_to_float(uint16_t h) {
        uint32_t sign = (uint32_t) (h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
        if (exp == 0) {
                if (man == 0)
                        bits = sign;
                else {
                        /* subnormal: renormalise */
                        int e = -1;
                        do {
                                e++;
                                man <<= 1;
                        } while (!(man & 0x400));
                        bits = sign | ((uint32_t) (127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
                }
        } else if (exp == 31)
                bits = sign | 0x7f800000u | (man << 13);
        else
                bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
}

uint16_t float_to_half(float f) {
        uint32_t x;
        memcpy(&x, &f, sizeof x);
        uint32_t sign = (x >> 16) & 0x8000, mant = x & 0x7fffff;
        int32_t exp = (int32_t) ((x >> 23) & 0xff);

        if (exp == 0xff) /* inf or nan */
                return (uint16_t) (sign | 0x7c00 | (mant ? 0x200 : 0));
        exp = exp - 127 + 15;
        if (exp >= 31)
                return (uint16_t) (sign | 0x7c00);
        if (exp <= 0) {
                if (exp < -10)
                        return (uint16_t) sign;
                mant |= 0x800000;
                uint32_t shift = (uint32_t) (14 - exp);
                uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
                if (rem > half || (rem == half && (h & 1)))
                        h++;
                return (uint16_t) (sign | h);
        }
        uint32_t h = ((uint32_t) exp << 10) | (mant >> 13), rem = mant & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
                h++; /* may carry into the exponent, which is right */
        return (uint16_t) (sign | h);
}

static void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
        if (j < 4) {
                *sc = q[j] & 63;
                *m = q[j + 4] & 63;
        } else {
                *sc = (uint8_t) ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
                *m = (uint8_t) ((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
        }
}

static void dequant_q4_k(const BlockQ4_K *b, float *y) {
        const float d = half_to_float(b->d), min = half_to_float(b->dmin);
        const uint8_t *q = b->qs;
        int is = 0;
        for (int j = 0; j < QK_K; j += 64) {
                uint8_t sc, m;
                scale_min_k4(is, b->scales, &sc, &m);
                float d1 = d * sc, m1 = min * m;
                scale_min_k4(is + 1, b->scales, &sc, &m);
                float d2 = d * sc, m2 = min * m;
                for (int l = 0; l < 32; l++)
                        *y++ = d1 * (float) (q[l] & 0xF) - m1;
                for (int l = 0; l < 32; l++)
                        *y++ = d2 * (float) (q[l] >> 4) - m2;
                q += 32;
                is += 2;
        }
}

static void dequant_q5_k(const BlockQ5_K *b, float *y) {
        const float d = half_to_float(b->d), min = half_to_float(b->dmin);
        const uint8_t *ql = b->qs, *qh = b->qh;
        int is = 0;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < QK_K; j += 64) {
                uint8_t sc, m;
                scale_min_k4(is, b->scales, &sc, &m);
                float d1 = d * sc, m1 = min * m;
                scale_min_k4(is + 1, b->scales, &sc, &m);
                float d2 = d * sc, m2 = min * m;
                for (int l = 0; l < 32; l++)
                        *y++ = d1 * (float) ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
                for (int l = 0; l < 32; l++)
                        *y++ = d2 * (float) ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
                ql += 32;
                is += 2;
                u1 <<= 2;
                u2 <<= 2;
        }
}

static void dequant_q6_k(const BlockQ6_K *b, float *y) {
        const float d = half_to_float(b->d);
        const uint8_t *ql = b->ql, *qh = b->qh;
        const int8_t *sc = b->scales;
        for (int n = 0; n < QK_K; n += 128) {
                for (int l = 0; l < 32; l++) {
                        int is = l / 16;
                        int q1 = (int) ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                        int q2 = (int) ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                        int q3 = (int) ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                        int q4 = (int) ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                        y[l] = d * sc[is + 0] * (float) q1;
                        y[l + 32] = d * sc[is + 2] * (float) q2;
                        y[l + 64] = d * sc[is + 4] * (float) q3;
                        y[l + 96] = d * sc[is + 6] * (float) q4;
                }
                y += 128;
                ql += 64;
                qh += 32;
                sc += 8;
        }
}

int ggml_dequantize_row(GgmlType t, const void *src, float *dst, uint64_t n) {
        uint32_t e = ggml_type_block_elems(t);

        if (!ggml_type_supported(t) || n % e != 0)
                return -EINVAL;
        switch (t) {
        case GGML_TYPE_F32:
                memcpy(dst, src, n * sizeof(float));
                return 0;
        case GGML_TYPE_F16: {
                const uint16_t *h = src;
                for (uint64_t i = 0; i < n; i++)
                        dst[i] = half_to_float(h[i]);
                return 0;
        }
        case GGML_TYPE_Q8_0: {
                const BlockQ8_0 *b = src;
                for (uint64_t i = 0; i < n / QK8_0; i++) {
                        float d = half_to_float(b[i].d);
                        for (int j = 0; j < QK8_0; j++)
                                dst[i * QK8_0 + j] = d * (float) b[i].qs[j];
                }
                return 0;
        }
        case GGML_TYPE_Q4_0: {
                const BlockQ4_0 *b = src;
                for (uint64_t i = 0; i < n / QK4_0; i++) {
                        float d = half_to_float(b[i].d);
                        for (int j = 0; j < QK4_0 / 2; j++) {
                                dst[i * QK4_0 + j] = d * (float) ((b[i].qs[j] & 0xF) - 8);
                                dst[i * QK4_0 + j + 16] = d * (float) ((b[i].qs[j] >> 4) - 8);
                        }
                }
                return 0;
        }
        case GGML_TYPE_Q4_K:
                for (uint64_t i = 0; i < n / QK_K; i++)
                        dequant_q4_k((const BlockQ4_K *) src + i, dst + i * QK_K);
                return 0;
        case GGML_TYPE_Q5_K:
                for (uint64_t i = 0; i < n / QK_K; i++)
                        dequant_q5_k((const BlockQ5_K *) src + i, dst + i * QK_K);
                return 0;
        case GGML_TYPE_Q6_K:
                for (uint64_t i = 0; i < n / QK_K; i++)
                        dequant_q6_k((const BlockQ6_K *) src + i, dst + i * QK_K);
                return 0;
        default:
                return -EINVAL;
        }
}

static int nearest(float x) {
        return (int) lrintf(x);
}

/* K-quant sub-block scales and mins, 6 bits each, packed as the format wants. */
static void pack_scale_min_k4(uint8_t q[12], const uint8_t sc[8], const uint8_t m[8]) {
        memset(q, 0, 12);
        for (int j = 0; j < 8; j++) {
                if (j < 4) {
                        q[j] = sc[j] & 63;
                        q[j + 4] = m[j] & 63;
                } else {
                        q[j + 4] = (uint8_t) ((sc[j] & 0xF) | ((m[j] & 0xF) << 4));
                        q[j - 4] |= (uint8_t) ((sc[j] >> 4) << 6);
                        q[j] |= (uint8_t) ((m[j] >> 4) << 6);
                }
        }
}

/* Q4_K and Q5_K: x ~ d*sc*q - dmin*m per 32-element sub-block, q in [0, qmax]. */
static void quant_k_asym(const float *x, uint16_t *ret_d, uint16_t *ret_dmin, uint8_t scales[12], uint8_t *q,
                         int qmax) {
        float sub_scale[8], sub_min[8], max_scale = 0, max_min = 0;
        uint8_t sc[8], m[8];

        for (int j = 0; j < 8; j++) {
                float lo = x[j * 32], hi = x[j * 32];
                for (int l = 1; l < 32; l++) {
                        lo = fminf(lo, x[j * 32 + l]);
                        hi = fmaxf(hi, x[j * 32 + l]);
                }
                lo = fminf(lo, 0.0f); /* the format subtracts a non-negative min */
                sub_min[j] = -lo;
                sub_scale[j] = (hi - lo) / (float) qmax;
                max_scale = fmaxf(max_scale, sub_scale[j]);
                max_min = fmaxf(max_min, sub_min[j]);
        }
        float d = max_scale / 63.0f, dmin = max_min / 63.0f;
        *ret_d = float_to_half(d);
        *ret_dmin = float_to_half(dmin);
        d = half_to_float(*ret_d);
        dmin = half_to_float(*ret_dmin);
        for (int j = 0; j < 8; j++) {
                sc[j] = (uint8_t) MIN(63, MAX(0, d > 0 ? nearest(sub_scale[j] / d) : 0));
                m[j] = (uint8_t) MIN(63, MAX(0, dmin > 0 ? nearest(sub_min[j] / dmin) : 0));
                float s = d * sc[j], mm = dmin * m[j];
                for (int l = 0; l < 32; l++) {
                        int v = s > 0 ? nearest((x[j * 32 + l] + mm) / s) : 0;
                        q[j * 32 + l] = (uint8_t) MIN(qmax, MAX(0, v));
                }
        }
        pack_scale_min_k4(scales, sc, m);
}

int ggml_quantize_row(GgmlType t, const float *src, void *dst, uint64_t n) {
        uint32_t e = ggml_type_block_elems(t);

        if (!ggml_type_supported(t) || n % e != 0)
                return -EINVAL;
        switch (t) {
        case GGML_TYPE_F32:
                memcpy(dst, src, n * sizeof(float));
                return 0;
        case GGML_TYPE_F16: {
                uint16_t *h = dst;
                for (uint64_t i = 0; i < n; i++)
                        h[i] = float_to_half(src[i]);
                return 0;
        }
        case GGML_TYPE_Q8_0: {
                BlockQ8_0 *b = dst;
                for (uint64_t i = 0; i < n / QK8_0; i++) {
                        const float *x = src + i * QK8_0;
                        float amax = 0;
                        for (int j = 0; j < QK8_0; j++)
                                amax = fmaxf(amax, fabsf(x[j]));
                        b[i].d = float_to_half(amax / 127.0f);
                        float d = half_to_float(b[i].d), id = d > 0 ? 1.0f / d : 0;
                        for (int j = 0; j < QK8_0; j++)
                                b[i].qs[j] = (int8_t) MIN(127, MAX(-127, nearest(x[j] * id)));
                }
                return 0;
        }
        case GGML_TYPE_Q4_0: {
                BlockQ4_0 *b = dst;
                for (uint64_t i = 0; i < n / QK4_0; i++) {
                        const float *x = src + i * QK4_0;
                        float amax = 0, max = 0;
                        for (int j = 0; j < QK4_0; j++)
                                if (fabsf(x[j]) > amax) {
                                        amax = fabsf(x[j]);
                                        max = x[j];
                                }
                        b[i].d = float_to_half(max / -8.0f);
                        float d = half_to_float(b[i].d), id = d != 0 ? 1.0f / d : 0;
                        for (int j = 0; j < QK4_0 / 2; j++) {
                                int lo = MIN(15, MAX(0, nearest(x[j] * id) + 8));
                                int hi = MIN(15, MAX(0, nearest(x[j + 16] * id) + 8));
                                b[i].qs[j] = (uint8_t) (lo | (hi << 4));
                        }
                }
                return 0;
        }
        case GGML_TYPE_Q4_K: {
                BlockQ4_K *b = dst;
                uint8_t q[QK_K];
                for (uint64_t i = 0; i < n / QK_K; i++) {
                        uint16_t d, dmin;
                        quant_k_asym(src + i * QK_K, &d, &dmin, b[i].scales, q, 15);
                        b[i].d = d;
                        b[i].dmin = dmin;
                        for (int j = 0; j < QK_K; j += 64)
                                for (int l = 0; l < 32; l++)
                                        b[i].qs[j / 2 + l] = (uint8_t) (q[j + l] | (q[j + 32 + l] << 4));
                }
                return 0;
        }
        case GGML_TYPE_Q5_K: {
                BlockQ5_K *b = dst;
                uint8_t q[QK_K];
                for (uint64_t i = 0; i < n / QK_K; i++) {
                        uint16_t d, dmin;
                        quant_k_asym(src + i * QK_K, &d, &dmin, b[i].scales, q, 31);
                        b[i].d = d;
                        b[i].dmin = dmin;
                        memset(b[i].qh, 0, sizeof b[i].qh);
                        uint8_t u1 = 1, u2 = 2;
                        for (int j = 0; j < QK_K; j += 64) {
                                for (int l = 0; l < 32; l++) {
                                        uint8_t lo = q[j + l], hi = q[j + 32 + l];
                                        b[i].qs[j / 2 + l] = (uint8_t) ((lo & 0xF) | ((hi & 0xF) << 4));
                                        if (lo & 16)
                                                b[i].qh[l] |= u1;
                                        if (hi & 16)
                                                b[i].qh[l] |= u2;
                                }
                                u1 <<= 2;
                                u2 <<= 2;
                        }
                }
                return 0;
        }
        case GGML_TYPE_Q6_K: {
                BlockQ6_K *b = dst;
                for (uint64_t i = 0; i < n / QK_K; i++) {
                        const float *x = src + i * QK_K;
                        float sub[16], max_abs_scale = 0;
                        int q[QK_K];
                        for (int j = 0; j < 16; j++) {
                                float amax = 0;
                                for (int l = 0; l < 16; l++)
                                        amax = fmaxf(amax, fabsf(x[j * 16 + l]));
                                sub[j] = amax / 31.0f;
                                max_abs_scale = fmaxf(max_abs_scale, sub[j]);
                        }
                        b[i].d = float_to_half(max_abs_scale / 127.0f);
                        float d = half_to_float(b[i].d);
                        for (int j = 0; j < 16; j++) {
                                b[i].scales[j] = (int8_t) MIN(127, MAX(-128, d > 0 ? nearest(sub[j] / d) : 0));
                                float s = d * b[i].scales[j];
                                for (int l = 0; l < 16; l++) {
                                        int v = s > 0 ? nearest(x[j * 16 + l] / s) : 0;
                                        q[j * 16 + l] = MIN(31, MAX(-32, v)) + 32;
                                }
                        }
                        memset(b[i].qh, 0, sizeof b[i].qh);
                        for (int n0 = 0; n0 < QK_K; n0 += 128) {
                                uint8_t *ql = b[i].ql + n0 / 2, *qh = b[i].qh + n0 / 4;
                                for (int l = 0; l < 32; l++) {
                                        int q1 = q[n0 + l], q2 = q[n0 + l + 32], q3 = q[n0 + l + 64], q4 = q[n0 + l + 96];
                                        ql[l] = (uint8_t) ((q1 & 0xF) | ((q3 & 0xF) << 4));
                                        ql[l + 32] = (uint8_t) ((q2 & 0xF) | ((q4 & 0xF) << 4));
                                        qh[l] = (uint8_t) ((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
                                }
                        }
                }
                return 0;
        }
        default:
                return -EINVAL;
        }
}
