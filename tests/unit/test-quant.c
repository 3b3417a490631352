/* SPDX-License-Identifier: MIT */
/* GGUF tensor types: sizes, f16 conversion, and the reference (de)quantisers. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "quant.h"

static void test_type_table(void **state) {
        assert_string_equal(ggml_type_name(GGML_TYPE_Q4_K), "Q4_K");
        assert_null(ggml_type_name(GGML_TYPE__MAX));
        assert_int_equal(ggml_type_block_bytes(GGML_TYPE_Q6_K), 210);
        assert_int_equal(ggml_type_block_elems(GGML_TYPE_Q8_0), 32);
        assert_int_equal(ggml_row_bytes(GGML_TYPE_Q8_0, 4096), 4096 / 32 * 34);
        assert_int_equal(ggml_row_bytes(GGML_TYPE_Q4_K, 100), 0); /* not a whole block */
        assert_int_equal(ggml_row_bytes(GGML_TYPE_F16, 3), 6);
        assert_true(ggml_type_supported(GGML_TYPE_Q5_K));
        assert_false(ggml_type_supported(GGML_TYPE_Q2_K));
        assert_false(ggml_type_supported((GgmlType) 99));
}

static void test_half(void **state) {
        assert_int_equal(float_to_half(1.0f), 0x3c00);
        assert_int_equal(float_to_half(-2.0f), 0xc000);
        assert_int_equal(float_to_half(65504.0f), 0x7bff);
        assert_int_equal(float_to_half(1e6f), 0x7c00);                 /* overflow to inf */
        assert_int_equal(float_to_half(5.9604645e-8f), 0x0001);        /* smallest subnormal */
        assert_int_equal(float_to_half(1.0f + 1.0f / 2048.0f), 0x3c00); /* tie to even */
        assert_true(half_to_float(0x3555) > 0.333f && half_to_float(0x3555) < 0.3334f);
        assert_true(isnan(half_to_float(0x7e00)));
        assert_true(half_to_float(0x0001) > 5.9e-8f && half_to_float(0x0001) < 6.0e-8f);
        for (uint32_t h = 0; h < 0x7c00; h++) /* every finite half survives the round trip */
                assert_int_equal(float_to_half(half_to_float((uint16_t) h)), h);
}

static void test_quant_roundtrip(void **state) {
        static const struct { GgmlType t; double bound; } cases[] = {
                { GGML_TYPE_F32, 0 },     { GGML_TYPE_F16, 1e-6 },  { GGML_TYPE_Q8_0, 1e-4 },
                { GGML_TYPE_Q4_0, 1e-2 }, { GGML_TYPE_Q4_K, 1e-2 }, { GGML_TYPE_Q5_K, 3e-3 },
                { GGML_TYPE_Q6_K, 1e-3 },
        };
        enum { N = 2048 };
        static float x[N], y[N];
        static uint8_t buf[N * 4];
        uint64_t s = 12345;

        for (int i = 0; i < N; i++) {
                s = s * 6364136223846793005ULL + 1442695040888963407ULL;
                x[i] = (float) ((double) (s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        }
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
                double num = 0, den = 0;
                assert_int_equal(ggml_quantize_row(cases[c].t, x, buf, N), 0);
                assert_int_equal(ggml_dequantize_row(cases[c].t, buf, y, N), 0);
                for (int i = 0; i < N; i++) {
                        num += (double) (x[i] - y[i]) * (x[i] - y[i]);
                        den += (double) x[i] * x[i];
                }
                if (num / den > cases[c].bound)
                        fail_msg("%s: nmse %g above %g", ggml_type_name(cases[c].t), num / den, cases[c].bound);
        }
        assert_int_equal(ggml_quantize_row(GGML_TYPE_Q4_K, x, buf, 100), -EINVAL);
        assert_int_equal(ggml_dequantize_row(GGML_TYPE_Q2_K, buf, y, 256), -EINVAL);
}

static void test_known_blocks(void **state) {
        /* Q8_0: d = 0.5, q = -3 -> -1.5 */
        BlockQ8_0 b8 = { .d = 0x3800 };
        b8.qs[0] = -3;
        float y[256];
        assert_int_equal(ggml_dequantize_row(GGML_TYPE_Q8_0, &b8, y, 32), 0);
        assert_true(y[0] == -1.5f && y[1] == 0.0f);
        /* Q4_0: d = 1, byte 0 = 0xF1: element 0 = 1-8, element 16 = 15-8 */
        BlockQ4_0 b4 = { .d = 0x3c00 };
        b4.qs[0] = 0xF1;
        assert_int_equal(ggml_dequantize_row(GGML_TYPE_Q4_0, &b4, y, 32), 0);
        assert_true(y[0] == -7.0f && y[16] == 7.0f && y[1] == -8.0f);
        /* Q6_K: d = 1, scale 2 for sub-block 0, element 0 = (ql low nibble 5 | qh bits 1<<4) - 32 = -11 */
        BlockQ6_K b6;
        memset(&b6, 0, sizeof b6);
        b6.d = 0x3c00;
        b6.scales[0] = 2;
        b6.ql[0] = 5;
        b6.qh[0] = 1;
        assert_int_equal(ggml_dequantize_row(GGML_TYPE_Q6_K, &b6, y, 256), 0);
        assert_true(y[0] == 2.0f * (float) ((5 | 16) - 32));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_type_table),
                cmocka_unit_test(test_half),
                cmocka_unit_test(test_quant_roundtrip),
                cmocka_unit_test(test_known_blocks),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
