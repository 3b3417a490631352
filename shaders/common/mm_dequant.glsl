// Weight loads for the matrix x matrix kernels (mul_mm.comp), following the
// device weight layout of daemon/gpu/tensor.h exactly: binding 0 is the
// chunk's first region (QS, or the whole blocks for Q4_K/Q5_K), binding 1 its
// f16 scale region D (Q8_0, Q4_0, Q6_K; the host binds region 0 again for the
// other types). One of TYPE_F32, TYPE_F16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_K,
// TYPE_Q5_K, TYPE_Q6_K is defined to 1.
//
// mm_load_w4(r, k0, q, K) returns W[r][k0 + 4q .. k0 + 4q + 3] with k0 a
// multiple of 32 and q < 8: one 32-wide K step is exactly one Q8_0/Q4_0
// block or one K-quant sub-block, so every load is a single aligned uint of
// quants plus its scales. Elements past K (F32/F16 only; the quantised
// types have K a multiple of their block) read as 0.
//
// Dequantisation multiplies in the same order as ggml_dequantize_row
// (quant.c) so the test can hold the kernels to a tight error bound.

#ifndef MM_DEQUANT_GLSL
#define MM_DEQUANT_GLSL

#if TYPE_F32
layout(binding = 0, std430) readonly buffer W { float w[]; };
layout(binding = 0, std430) readonly buffer W4 { vec4 w4[]; };
#else
// Read as uint words (not 8/16-bit storage) so every device can run it.
layout(binding = 0, std430) readonly buffer W { uint w[]; };
#endif
#if TYPE_F16
layout(binding = 0, std430) readonly buffer W2 { uvec2 w2[]; };
#endif
#if TYPE_Q8_0 || TYPE_Q4_0 || TYPE_Q6_K
layout(binding = 1, std430) readonly buffer D { uint dw[]; };

float mm_load_d(uint i) {
    return unpackHalf2x16(dw[i >> 1])[i & 1u];
}
#endif

const uvec4 MM_BYTE_SHIFT = uvec4(0, 8, 16, 24);

#if TYPE_Q4_K || TYPE_Q5_K
// Sub-block j's six-bit scale and min from the 12 packed bytes that start at
// word `base` + 1 (get_scale_min_k4 of the file format).
uint mm_scale_byte(uint base, uint i) {
    return (w[base + 1 + (i >> 2)] >> (8 * (i & 3u))) & 0xFFu;
}

void mm_scale_min_k4(uint base, uint j, out float sc, out float mn) {
    if (j < 4) {
        sc = float(mm_scale_byte(base, j) & 63u);
        mn = float(mm_scale_byte(base, j + 4) & 63u);
    } else {
        uint hi = mm_scale_byte(base, j + 4);
        sc = float((hi & 0xFu) | ((mm_scale_byte(base, j - 4) >> 6) << 4));
        mn = float((hi >> 4) | ((mm_scale_byte(base, j) >> 6) << 4));
    }
}
#endif

vec4 mm_load_w4(uint r, uint k0, uint q, uint K) {
#if TYPE_F32
    uint k = k0 + 4 * q;
    if ((K & 3u) == 0)
        return k < K ? w4[(r * K + k) >> 2] : vec4(0);
    vec4 v = vec4(0);
    for (uint e = 0; e < 4; e++)
        if (k + e < K)
            v[e] = w[r * K + k + e];
    return v;
#elif TYPE_F16
    uint k = k0 + 4 * q;
    if ((K & 3u) == 0) {
        if (k >= K)
            return vec4(0);
        uvec2 u = w2[(r * K + k) >> 2];
        return vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
    }
    vec4 v = vec4(0);
    for (uint e = 0; e < 4; e++) {
        uint i = r * K + k + e;
        if (k + e < K)
            v[e] = unpackHalf2x16(w[i >> 1])[i & 1u];
    }
    return v;
#elif TYPE_Q8_0
    // QS: int8[rows][K]; D: f16[rows][K/32].
    uint word = w[((r * K + k0) >> 2) + q];
    float d = mm_load_d(r * (K >> 5) + (k0 >> 5));
    ivec4 qv = ivec4(uvec4(word) << (24u - MM_BYTE_SHIFT)) >> 24;
    return d * vec4(qv);
#elif TYPE_Q4_0
    // QS: uint8[rows][K/2], 16 bytes a block: byte j holds element j (low
    // nibble) and j + 16 (high). Item q covers elements 4q..4q+3: bytes
    // 4(q&3).. of the block, low nibbles for q < 4, high for q >= 4.
    uint word = w[((r * K + k0) >> 3) + (q & 3u)];
    float d = mm_load_d(r * (K >> 5) + (k0 >> 5));
    uvec4 n = (uvec4(word) >> (MM_BYTE_SHIFT + 4 * (q >> 2))) & 0xFu;
    return d * (vec4(n) - 8.0);
#elif TYPE_Q4_K
    // 144-byte blocks (36 words): d, dmin | scales[12] | qs[128]. Sub-block s
    // (32 elements) is nibble half (s & 1) of qs bytes 32 * (s / 2) ...
    uint base = (r * (K >> 8) + (k0 >> 8)) * 36;
    uint s = (k0 & 255u) >> 5;
    vec2 dm = unpackHalf2x16(w[base]);
    float sc, mn;
    mm_scale_min_k4(base, s, sc, mn);
    uint word = w[base + 4 + (s >> 1) * 8 + q];
    uvec4 n = (uvec4(word) >> (MM_BYTE_SHIFT + 4 * (s & 1u))) & 0xFu;
    return (dm.x * sc) * vec4(n) - vec4(dm.y * mn);
#elif TYPE_Q5_K
    // 176-byte blocks (44 words): d, dmin | scales[12] | qh[32] | qs[128].
    // Element l of sub-block s takes its fifth bit from bit s of qh[l].
    uint base = (r * (K >> 8) + (k0 >> 8)) * 44;
    uint s = (k0 & 255u) >> 5;
    vec2 dm = unpackHalf2x16(w[base]);
    float sc, mn;
    mm_scale_min_k4(base, s, sc, mn);
    uint lo = w[base + 12 + (s >> 1) * 8 + q];
    uint hi = w[base + 4 + q];
    uvec4 n = ((uvec4(lo) >> (MM_BYTE_SHIFT + 4 * (s & 1u))) & 0xFu) |
              (((uvec4(hi) >> (MM_BYTE_SHIFT + s)) & 1u) << 4);
    return (dm.x * sc) * vec4(n) - vec4(dm.y * mn);
#elif TYPE_Q6_K
    // QS: 208-byte blocks (52 words): ql[128] | qh[64] | scales[16]; D: f16
    // per block. Sub-block s: half n = s / 4 (128 elements), group g = s % 4:
    // ql bytes 64n + 32(g & 1) (nibble g / 2), qh bytes 32n (bits 2g), scale
    // 8n + 2g + l / 16.
    uint blk = r * (K >> 8) + (k0 >> 8);
    uint base = blk * 52;
    uint s = (k0 & 255u) >> 5;
    uint n = s >> 2, g = s & 3u;
    uint ql = w[base + n * 16 + (g & 1u) * 8 + q];
    uint qh = w[base + 32 + n * 8 + q];
    uvec4 u = ((uvec4(ql) >> (MM_BYTE_SHIFT + 4 * (g >> 1))) & 0xFu) |
              (((uvec4(qh) >> (MM_BYTE_SHIFT + 2 * g)) & 3u) << 4);
    uint si = n * 8 + 2 * g + (q >> 2);
    int sc = int(w[base + 48 + (si >> 2)] << (24u - 8 * (si & 3u))) >> 24;
    float d = mm_load_d(blk);
    return (d * float(sc)) * (vec4(u) - 32.0);
#else
#error "mm_dequant.glsl: no weight type defined"
#endif
}

#endif
