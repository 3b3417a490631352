// Dequantisation of weights in the device layout (daemon/gpu/tensor.h), for
// any kernel that reads a GpuTensor chunk. The function names below are a
// stable interface; kernels other than mul_mv/get_rows may rely on them.
//
// Before including, define exactly one weight type to 1:
//   WTYPE_F32, WTYPE_F16, WTYPE_Q8_0, WTYPE_Q4_0, WTYPE_Q4_K, WTYPE_Q5_K, WTYPE_Q6_K
// and optionally WT_BINDING_QS / WT_BINDING_D (default 0 and 1): the chunk's
// first region (QS, or the whole blocks of Q4_K/Q5_K) and its f16 scale
// region D (Q8_0, Q4_0, Q6_K; bind anything, e.g. QS again, for the others).
//
// Declared here:
//   wt_u4[]   QS as uvec4 (16-byte loads)         wt_u[]  QS as uint
//   wt_u2[]   QS as uvec2 (8-byte loads)
//   wt_du[]   D as uint (two f16 per word)
//   WT_BLOCK  elements per block (1, 32 or 256)
//
// Element access; row is the row inside the chunk, k the column, K = n_cols:
//   float wt_d(uint i)                        f16 scale i of region D
//   float wt_get1(uint row, uint k, uint K)   one element
//   vec4  wt_get4(uint row, uint k, uint K)   k..k+3, k % 4 == 0 (F32/F16
//                                             with K % 4 != 0: elements >= K are 0)
//   void  wt_get8(uint row, uint k, uint K, out vec4 a, out vec4 b)    k % 8 == 0
//   void  wt_get16(uint row, uint k, uint K, out vec4 v[4])            k % 16 == 0
//
// Bit tricks (exact, no integer->float conversion instruction): for a word w
// holding four bytes, wt_unorm4(w, BITS, LSB) returns, for each byte b (k =
// 0..3 from the low byte), 1 + q_k / 2^BITS where q_k = (b >> LSB) & (2^BITS-1):
// the BITS value bits are moved to the top of an f32 mantissa of exponent 0.
// A dot product of such values with x gives S1 = Sx + sum(q x) / 2^BITS, so
// sum((a q + c) x) = a 2^BITS S1 + (c - a 2^BITS) Sx with Sx = sum(x): the
// matrix x vector kernel folds scale and offset per span this way.
//   vec4 wt_unorm4(uint w, const int BITS, const int LSB)
//   vec4 wt_unorm4h(uint w, const int BITS, const int LSB)   same values via f16
//   uvec4 wt_scale_min_k4(uvec4 header, uint c)   Q4_K/Q5_K: (sc, m) of sub-blocks
//                                             2c and 2c+1 as (sc0, sc1, m0, m1)

#ifndef WEIGHTS_GLSL
#define WEIGHTS_GLSL

#ifndef WT_BINDING_QS
#define WT_BINDING_QS 0
#endif
#ifndef WT_BINDING_D
#define WT_BINDING_D 1
#endif

layout(binding = WT_BINDING_QS, std430) readonly buffer WtQs4 { uvec4 wt_u4[]; };
layout(binding = WT_BINDING_QS, std430) readonly buffer WtQs2 { uvec2 wt_u2[]; };
layout(binding = WT_BINDING_QS, std430) readonly buffer WtQs1 { uint wt_u[]; };
layout(binding = WT_BINDING_D, std430) readonly buffer WtD { uint wt_du[]; };

#if WTYPE_F32 || WTYPE_F16
#define WT_BLOCK 1
#elif WTYPE_Q8_0 || WTYPE_Q4_0
#define WT_BLOCK 32
#elif WTYPE_Q4_K || WTYPE_Q5_K || WTYPE_Q6_K
#define WT_BLOCK 256
#else
#error "define one WTYPE_*"
#endif

float wt_d(uint i) {
    return unpackHalf2x16(wt_du[i >> 1])[i & 1u];
}

uint wt_shift(uint w, const int s) {
    return s >= 0 ? (w << uint(s)) : (w >> uint(-s));
}

vec4 wt_unorm4(uint w, const int BITS, const int LSB) {
    uint m = ((1u << BITS) - 1u) << (23 - BITS);
    uvec4 t = uvec4(wt_shift(w, 23 - BITS - LSB), wt_shift(w, 15 - BITS - LSB),
                    wt_shift(w, 7 - BITS - LSB), wt_shift(w, -1 - BITS - LSB));
    return uintBitsToFloat((t & m) | 0x3F800000u);
}

// The same values through f16: two fields per 32-bit word land at the top of
// each half's 10-bit mantissa (exponent 0: 0x3C00), and unpackHalf2x16
// widens them. One shift and one mask per two elements instead of per
// element, at the price of a conversion (a full-rate FP instruction on the
// GPUs we know: HADD2.F32 on NVIDIA, v_cvt_f32_f16 on AMD).
vec4 wt_unorm4h(uint w, const int BITS, const int LSB) {
    uint m = ((1u << BITS) - 1u) << (10 - BITS);
    m |= m << 16;
    vec2 e02 = unpackHalf2x16((wt_shift(w, 10 - BITS - LSB) & m) | 0x3C003C00u);
    vec2 e13 = unpackHalf2x16((wt_shift(w, 2 - BITS - LSB) & m) | 0x3C003C00u);
    return vec4(e02.x, e13.x, e02.y, e13.y);
}

// Byte i (0..3) of w as a signed integer.
int wt_sbyte(uint w, uint i) {
    return bitfieldExtract(int(w), int(8u * i), 8);
}

uint wt_ubyte(uint w, uint i) {
    return bitfieldExtract(w, int(8u * i), 8);
}

vec4 wt_sbytes4(uint w) {
    return vec4(wt_sbyte(w, 0), wt_sbyte(w, 1), wt_sbyte(w, 2), wt_sbyte(w, 3));
}

vec4 wt_ubytes4(uint w) {
    return vec4(w & 0xFFu, (w >> 8) & 0xFFu, (w >> 16) & 0xFFu, w >> 24);
}

#if WTYPE_Q4_K || WTYPE_Q5_K
// The K-quants' 6-bit scales and mins (get_scale_min_k4 of the file format),
// four bytes at a time: header.yzw hold the 12 scale bytes q[0..11].
// Sub-blocks 0..3: sc = q[j] & 63, m = q[j+4] & 63; sub-blocks 4..7:
// sc = q[j+4] & 15 | (q[j-4] >> 6) << 4, m = q[j+4] >> 4 | (q[j] >> 6) << 4.
uvec4 wt_scale_min_k4(uvec4 header, uint c) {
    uint scw = c < 2u ? (header.y & 0x3F3F3F3Fu)
                      : ((header.w & 0x0F0F0F0Fu) | ((header.y >> 2) & 0x30303030u));
    uint mw = c < 2u ? (header.z & 0x3F3F3F3Fu)
                     : (((header.w >> 4) & 0x0F0F0F0Fu) | ((header.z >> 2) & 0x30303030u));
    uint sh = 16u * (c & 1u);
    return uvec4((scw >> sh) & 0xFFu, (scw >> (sh + 8u)) & 0xFFu, (mw >> sh) & 0xFFu, (mw >> (sh + 8u)) & 0xFFu);
}
#endif

vec4 wt_get4(uint row, uint k, uint K);

float wt_get1(uint row, uint k, uint K) {
#if WTYPE_F32
    return uintBitsToFloat(wt_u[row * K + k]);
#elif WTYPE_F16
    uint e = row * K + k;
    return unpackHalf2x16(wt_u[e >> 1])[e & 1u];
#else
    return wt_get4(row, k & ~3u, K)[k & 3u];
#endif
}

vec4 wt_get4(uint row, uint k, uint K) {
#if WTYPE_F32 || WTYPE_F16
    if ((K & 3u) != 0u) {
        vec4 v = vec4(0);
        for (uint i = 0; i < 4u; i++)
            if (k + i < K)
                v[i] = wt_get1(row, k + i, K);
        return v;
    }
#endif
#if WTYPE_F32
    return uintBitsToFloat(wt_u4[(row * K + k) >> 2]);
#elif WTYPE_F16
    uint e = (row * K + k) >> 1;
    return vec4(unpackHalf2x16(wt_u[e]), unpackHalf2x16(wt_u[e + 1u]));
#elif WTYPE_Q8_0
    uint e = row * K + k;
    return wt_d(e >> 5) * wt_sbytes4(wt_u[e >> 2]);
#elif WTYPE_Q4_0
    uint e = row * K + k;
    uint b = e >> 5, j = e & 31u;
    uint w = wt_u[b * 4u + ((j & 15u) >> 2)];
    w = j < 16u ? (w & 0x0F0F0F0Fu) : ((w >> 4) & 0x0F0F0F0Fu);
    return wt_d(b) * (wt_ubytes4(w) - 8.0);
#elif WTYPE_Q4_K || WTYPE_Q5_K
    uint e = row * K + k;
    uint b = e >> 8, kk = e & 255u;
    uint c = kk >> 6, hi = (kk >> 5) & 1u, l = kk & 31u;
#if WTYPE_Q4_K
    uint base = b * 9u;
    uint qw = wt_u[base * 4u + 4u + 8u * c + (l >> 2)];
#else
    uint base = b * 11u;
    uint qw = wt_u[base * 4u + 12u + 8u * c + (l >> 2)];
#endif
    uvec4 h = wt_u4[base];
    vec2 dm = unpackHalf2x16(h.x);
    uvec4 sm = wt_scale_min_k4(h, c);
    uint q = (qw >> (4u * hi)) & 0x0F0F0F0Fu;
#if WTYPE_Q5_K
    uint qh = wt_u[base * 4u + 4u + (l >> 2)];
    q |= ((qh >> (2u * c + hi)) & 0x01010101u) << 4;
#endif
    float d1 = dm.x * float(hi == 0u ? sm.x : sm.y);
    float m1 = dm.y * float(hi == 0u ? sm.z : sm.w);
    return d1 * wt_ubytes4(q) - m1;
#elif WTYPE_Q6_K
    uint e = row * K + k;
    uint b = e >> 8, kk = e & 255u;
    uint n = kk >> 7, qq = (kk >> 5) & 3u, l = kk & 31u;
    uint base = b * 52u;
    uint ql = wt_u[base + ((64u * n + 32u * (qq & 1u) + l) >> 2)];
    uint qh = wt_u[base + 32u + ((32u * n + l) >> 2)];
    uint q = ((ql >> (4u * (qq >> 1))) & 0x0F0F0F0Fu) | (((qh >> (2u * qq)) & 0x03030303u) << 4);
    uint si = 8u * n + (l >> 4) + 2u * qq;
    float sc = float(wt_sbyte(wt_u[base + 48u + (si >> 2)], si & 3u));
    return (wt_d(b) * sc) * (wt_ubytes4(q) - 32.0);
#endif
}

void wt_get8(uint row, uint k, uint K, out vec4 a, out vec4 b) {
    a = wt_get4(row, k, K);
    b = wt_get4(row, k + 4u, K);
}

void wt_get16(uint row, uint k, uint K, out vec4 v[4]) {
    for (uint i = 0; i < 4u; i++)
        v[i] = wt_get4(row, k + 4u * i, K);
}

#endif
