#version 450
// Matrix x vector: y[v][row0 + r] = sum_k W[r][k] x[v][k] for NV vectors
// (batch-1 decode and small batches), over one chunk of a GpuTensor
// (daemon/gpu/ops-weights.c). Memory-bound, so the design is about bytes:
//   - a workgroup takes a group of NUM_ROWS rows at a time and walks the
//     groups gl_NumWorkGroups apart: the host may cap the grid (persistent
//     workgroups; on an H100 that measured slower, so by default every group
//     gets its own workgroup);
//   - each invocation walks "units" of the rows, u = tid, tid + BLOCK_SIZE,
//     ...: one 16-byte load (4 bytes with WORD_UNITS) of quants per row per
//     unit, consecutive invocations on consecutive words (coalesced), every
//     weight byte read once for all NV vectors;
//   - NUM_UNITS units per loop iteration, all their loads issued before any
//     arithmetic: NUM_UNITS x NUM_ROWS loads in flight per invocation; with
//     PIPELINE the next iteration's loads are issued before this one's
//     arithmetic (software pipelining), so memory never waits for the ALUs;
//   - x is read once per unit (vec4 loads, L1-resident) and reused for the
//     NUM_ROWS rows (NUM_ROWS also divides the L1 traffic for x, which for
//     4-bit weights is 8 bytes of x per byte of weights);
//   - quants become floats with exponent bit tricks (wt_unorm4 in f32, or
//     wt_unorm4h through f16: DEQ_HALF), no int->float conversions, and the
//     block's scale and offset are folded in once per span of a unit:
//     sum((a q + c) x) = a 2^B S1 + (c - a 2^B) Sx;
//   - subgroupAdd reduction (USE_SUBGROUP=1) or a shared-memory tree, once
//     per row group.
// Measured on an H100 (bench-weights --sweep): time is close to bytes /
// bandwidth + instructions / issue rate for every type, i.e. the arithmetic
// hardly overlaps the transfer whatever the grid, pipelining or unit size,
// so for the quantised types the instructions per element (about 3.5-5.5
// here) are what is left to cut. DOT=1 builds cut them with integer dot
// products (x_quantise() says how): about 1 instruction per element, plus
// x's rounding once per workgroup.
// Spec constants: 0 BLOCK_SIZE (a power of two), 3 NUM_ROWS, 4 NV,
// 5 DEQ_HALF, 6 NUM_UNITS, 7 WORD_UNITS (Q8_0/Q4_0: 4-byte units, so a
// subgroup's x loads touch 8 cache lines instead of 16-32), 8 PIPELINE;
// DOT builds (wide units only): 9 XG, 10 XDIGITS.
// One WTYPE_* define selects the weight type.

#extension GL_EXT_control_flow_attributes : require
#if F16MATH
// Packed half arithmetic (GPU_MATVEC_DEQUANT_F16MATH, devices with
// shaderFloat16 only): a word's quants become two f16vec2 with one mask-or
// each, are centred exactly (u - C) and multiplied into f16vec2 span sums
// (two lanes per instruction); x is rounded to f16 once per load and shared
// by the rows. Only the span sums are f16 (16-32 terms, centred values, so
// no cancellation); the block's scale and the row total stay f32.
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#endif
#if DOT
// Integer dot products (GPU_MATVEC_DEQUANT_DOT, devices with
// shaderIntegerDotProduct): glslang has no GLSL name for OpSDot
// (SPV_KHR_integer_dot_product), so it is declared as an intrinsic.
#extension GL_EXT_spirv_intrinsics : require
#endif
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

layout(constant_id = 0) const uint BLOCK_SIZE = 128;
layout(local_size_x_id = 0) in;
layout(constant_id = 3) const uint NUM_ROWS = 2;
layout(constant_id = 4) const uint NV = 1;
layout(constant_id = 5) const uint DEQ_HALF = 1;  // quants to floats via f16 (wt_unorm4h) or f32 (wt_unorm4)
layout(constant_id = 6) const uint NUM_UNITS = 2;
layout(constant_id = 7) const uint WORD_UNITS = 0;
layout(constant_id = 8) const uint PIPELINE = 1;

#include "weights.glsl"

layout(binding = 2, std430) readonly buffer X4 { vec4 x4[]; };
layout(binding = 2, std430) readonly buffer X1 { float x1[]; };
layout(binding = 3, std430) coherent buffer Y { float y[]; };   // coherent: mv_norm.glsl reads it across workgroups

#include "mv_common.glsl"
#include "mv_norm.glsl"

float acc[NUM_ROWS][NV];
uint rr[NUM_ROWS];      // rows (clamped: a partial last group recomputes the last row, never stores it)
uint xb[NV];            // x4 index of each vector

vec4 unorm4(uint w, const int BITS, const int LSB) {
    return DEQ_HALF != 0u ? wt_unorm4h(w, BITS, LSB) : wt_unorm4(w, BITS, LSB);
}

#if !(WTYPE_F32 || WTYPE_F16)
float s1[NUM_ROWS][NV];
float sx[NV];
uvec4 wq[NUM_ROWS];     // the unit's quant words, per row

#if F16MATH
// K-quants keep a min term, so they need Sx; the others centre on their
// zero point (C = 1.5: q - 2^(B-1)) and drop it.
#if WTYPE_Q4_K || WTYPE_Q5_K
const bool SX_NEEDED = true;
const float16_t HC = float16_t(1.0);
#else
const bool SX_NEEDED = false;
const float16_t HC = float16_t(1.5);
#endif
f16vec2 h1[NUM_ROWS][NV];
#else
const bool SX_NEEDED = true;
#endif

void span_begin() {
    [[unroll]] for (uint v = 0; v < NV; v++) {
        sx[v] = 0.0;
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
            s1[r][v] = 0.0;
#if F16MATH
            h1[r][v] = f16vec2(0.0);
#endif
        }
    }
}

// S1 += unorm(word j of wq) . x and Sx += x; xi: x4 index of the four elements.
void span_word(uint j, uint xi, const int BITS, const int LSB) {
#if F16MATH
    // Halves of (w shifted & mask) | 1.0 are 1 + q/2^BITS for elements 0, 2 and 1, 3.
    uint m = ((1u << BITS) - 1u) << (10 - BITS);
    m |= m << 16;
    f16vec2 e02[NUM_ROWS], e13[NUM_ROWS];
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        e02[r] = unpackFloat2x16((wt_shift(wq[r][j], 10 - BITS - LSB) & m) | 0x3C003C00u) - HC;
        e13[r] = unpackFloat2x16((wt_shift(wq[r][j], 2 - BITS - LSB) & m) | 0x3C003C00u) - HC;
    }
    [[unroll]] for (uint v = 0; v < NV; v++) {
        vec4 xv = x4[xb[v] + xi];
        if (SX_NEEDED)
            sx[v] += (xv.x + xv.y) + (xv.z + xv.w);
        f16vec2 xa = f16vec2(xv.xz), xc = f16vec2(xv.yw);
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
            h1[r][v] = fma(e13[r], xc, fma(e02[r], xa, h1[r][v]));
    }
#else
    vec4 f[NUM_ROWS];
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        f[r] = unorm4(wq[r][j], BITS, LSB);
    [[unroll]] for (uint v = 0; v < NV; v++) {
        vec4 xv = x4[xb[v] + xi];
        sx[v] += (xv.x + xv.y) + (xv.z + xv.w);
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
            s1[r][v] += dot(f[r], xv);
    }
#endif
}

// The same over the four words of wq; xi: x4 index of the first.
void span_dot(uint xi, const int BITS, const int LSB) {
    [[unroll]] for (uint j = 0; j < 4u; j++)
        span_word(j, xi + j, BITS, LSB);
}

// acc += A S1 + B Sx per row (A, B: the span's folded scale and offset).
// F16MATH: S1 = sum of the centred products, S1 + C Sx the uncentred one.
void span_end(float A[NUM_ROWS], float B[NUM_ROWS]) {
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        [[unroll]] for (uint v = 0; v < NV; v++) {
#if F16MATH
            vec2 h = vec2(h1[r][v]);
            const float b = B[r] + A[r] * float(HC);
            acc[r][v] += A[r] * (h.x + h.y) + (SX_NEEDED ? b * sx[v] : 0.0);
#else
            acc[r][v] += A[r] * s1[r][v] + B[r] * sx[v];
#endif
        }
}

// Small non-negative integers (< 2^23) to float without a conversion instruction.
vec4 u2f(uvec4 i) {
    return uintBitsToFloat(i | 0x4B000000u) - 8388608.0;
}
#endif

#if DOT
// x as integers, once per workgroup into shared memory, so that a span of 16
// quants takes four or eight 4x8-bit dot products per row instead of 16
// fused multiply-adds plus the dequantisation. Each 16-column group of x
// gets x_k ~= s (256 h_k + l_k) (XDIGITS = 2: two signed-byte digits of a
// 16-bit integer, |x_k / s| <= XQ_MAX = 32639, so h stays a byte: error at
// most max|x| / 65278 per element, against 2^-11 relative for an f16 x) or
// x_k ~= s l_k (XDIGITS = 1, |l_k| <= 127: error up to max|x| / 254, as
// int8 activations elsewhere). Sums of 16 products fit 22 bits, so ints
// become floats with the exponent trick (two full-rate instructions, where a
// conversion instruction runs at a fraction of the rate). S, the group's
// sum of integers, makes a span's offset term exact for the x used.
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018], id = 4450)
int sdot4(uint a, uint b, spirv_literal int packed_4x8);

layout(constant_id = 9) const uint XG = 1;         // 16-column groups per vector: K / 16
layout(constant_id = 10) const uint XDIGITS = 2;
const float XQ_MAX = XDIGITS == 2u ? 32639.0 : 127.0;
const float MAGIC = 12582912.0;                     // 1.5 2^23: its ulp is 1, for |i| < 2^22
const int MAGIC_BITS = 0x4B400000;
shared uvec4 xq_h[XDIGITS == 2u ? NV * XG : 1u];
shared uvec4 xq_l[NV * XG];
shared vec2 xq_s[NV * XG];                          // (s, s S)

float i2f(int i) {
    return intBitsToFloat(i + MAGIC_BITS) - MAGIC;
}

// Byte 0 (pack_b0) or byte 1 (pack_b1) of four ints, as one word.
uint pack_b0(ivec4 b) {
    return (uint(b.x) & 0xFFu) | ((uint(b.y) & 0xFFu) << 8) | ((uint(b.z) & 0xFFu) << 16) | (uint(b.w) << 24);
}
uint pack_b1(ivec4 b) {
    return ((uint(b.x) >> 8) & 0xFFu) | (uint(b.y) & 0xFF00u) | ((uint(b.z) & 0xFF00u) << 8) |
           ((uint(b.w) & 0xFF00u) << 16);
}

void x_quantise(uint tid) {
    for (uint i = tid; i < NV * XG; i += BLOCK_SIZE) {
        const uint v = i / XG, g = i - v * XG;
        vec4 f[4];
        [[unroll]] for (uint j = 0; j < 4u; j++)
            f[j] = x4[xb[v] + 4u * g + j];
        const vec4 m = max(max(abs(f[0]), abs(f[1])), max(abs(f[2]), abs(f[3])));
        const float amax = max(max(m.x, m.y), max(m.z, m.w));
        const vec4 t4 = (f[0] + f[1]) + (f[2] + f[3]);
        const float inv = amax > 0.0 ? XQ_MAX / amax : 0.0;
        // A NaN or an infinity in x makes the group's products NaN, as float math would.
        float s = amax / XQ_MAX;
        if (isnan((t4.x + t4.y) + (t4.z + t4.w)) || isinf(amax))
            s = uintBitsToFloat(0x7FC00000u);
        uvec4 h, l;
        int sum = 0;
        [[unroll]] for (uint j = 0; j < 4u; j++) {
            // round(f inv) + MAGIC_BITS: its low 16 bits are the integer's.
            const ivec4 q = floatBitsToInt(fma(f[j], vec4(inv), vec4(MAGIC)));
            l[j] = pack_b0(q);
            if (XDIGITS == 2u) {
                h[j] = pack_b1(q + 128);
                sum += 256 * sdot4(h[j], 0x01010101u, 0);
            }
            sum += sdot4(l[j], 0x01010101u, 0);
        }
        if (XDIGITS == 2u)
            xq_h[i] = h;
        xq_l[i] = l;
        xq_s[i] = vec2(s, s * float(sum));
    }
    barrier();
}

// acc[r][v] += A[r] s S1 + B[r] s S over x group g, S1 = sum_k q[r]_k (256 h_k + l_k):
// q[r] holds each row's 16 quants as signed bytes.
void span_int(uint g, uvec4 q[NUM_ROWS], float A[NUM_ROWS], float B[NUM_ROWS]) {
    [[unroll]] for (uint v = 0; v < NV; v++) {
        const uint gi = v * XG + g;
        const uvec4 h = XDIGITS == 2u ? xq_h[gi] : uvec4(0u), l = xq_l[gi];
        const vec2 s = xq_s[gi];
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
            const int sl = (sdot4(q[r].x, l.x, 0) + sdot4(q[r].y, l.y, 0)) +
                           (sdot4(q[r].z, l.z, 0) + sdot4(q[r].w, l.w, 0));
            float s1 = i2f(sl);
            if (XDIGITS == 2u) {
                const int sh = (sdot4(q[r].x, h.x, 0) + sdot4(q[r].y, h.y, 0)) +
                               (sdot4(q[r].z, h.z, 0) + sdot4(q[r].w, h.w, 0));
                s1 = fma(i2f(sh), 256.0, s1);
            }
            acc[r][v] = fma(A[r] * s.x, s1, fma(B[r], s.y, acc[r][v]));
        }
    }
}
#endif

// Per type: Unit (one row's loaded data for one unit), UNIT_COLS,
// unit_load(row, u) (global loads only) and unit_math(u, d) (everything else).

#if WTYPE_F32
// Unit u: columns 4u .. 4u+3.
struct Unit { uvec4 q; };
const uint UNIT_COLS = 4;
Unit unit_load(uint row, uint u) {
    return Unit(wt_u4[row * (p.ncols >> 2) + u]);
}
void unit_math(uint u, Unit d[NUM_ROWS]) {
    [[unroll]] for (uint v = 0; v < NV; v++) {
        vec4 xv = x4[xb[v] + u];
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
            acc[r][v] += dot(uintBitsToFloat(d[r].q), xv);
    }
}

#elif WTYPE_F16
// Unit u: columns 8u .. 8u+7.
struct Unit { uvec4 q; };
const uint UNIT_COLS = 8;
Unit unit_load(uint row, uint u) {
    return Unit(wt_u4[row * (p.ncols >> 3) + u]);
}
void unit_math(uint u, Unit d[NUM_ROWS]) {
    vec4 wa[NUM_ROWS], wb[NUM_ROWS];
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        wa[r] = vec4(unpackHalf2x16(d[r].q.x), unpackHalf2x16(d[r].q.y));
        wb[r] = vec4(unpackHalf2x16(d[r].q.z), unpackHalf2x16(d[r].q.w));
    }
    [[unroll]] for (uint v = 0; v < NV; v++) {
        vec4 xa = x4[xb[v] + 2u * u], xc = x4[xb[v] + 2u * u + 1u];
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
            acc[r][v] += dot(wa[r], xa) + dot(wb[r], xc);
    }
}

#elif WTYPE_Q8_0
// Unit u: columns 16u .. 16u+15, half of block u/2 (WORD_UNITS: columns
// 4u .. 4u+3 of block u/8). Bytes are biased to unsigned (b + 128) so the
// 8-bit trick applies: sum(b x) = 256 S1 - 384 Sx.
struct Unit { uvec4 q; float d; };
const uint UNIT_COLS = WORD_UNITS != 0u ? 4u : 16u;
Unit unit_load(uint row, uint u) {
    Unit t;
    if (WORD_UNITS != 0u) {
        t.q = uvec4(wt_u[row * (p.ncols >> 2) + u], 0u, 0u, 0u);
        t.d = wt_d(row * (p.ncols >> 5) + (u >> 3));
    } else {
        t.q = wt_u4[row * (p.ncols >> 4) + u];
        t.d = wt_d(row * (p.ncols >> 5) + (u >> 1));
    }
    return t;
}
void unit_math(uint u, Unit d[NUM_ROWS]) {
    float A[NUM_ROWS], B[NUM_ROWS];
#if DOT
    // Wide units only: unit u is x group u.
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        wq[r] = d[r].q;
        A[r] = d[r].d;
        B[r] = 0.0;
    }
    span_int(u, wq, A, B);
    return;
#endif
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        wq[r] = d[r].q ^ uvec4(0x80808080u);
        A[r] = 256.0 * d[r].d;
        B[r] = -384.0 * d[r].d;
    }
    span_begin();
    if (WORD_UNITS != 0u)
        span_word(0, u, 8, 0);
    else
        span_dot(4u * u, 8, 0);
    span_end(A, B);
}

#elif WTYPE_Q4_0
// Unit u: block u (columns 32u ..): low nibbles are columns 0..15, high
// 16..31 (WORD_UNITS: word j = u % 4 of block b = u / 4, columns 32b + 4j ..
// and 32b + 16 + 4j ..); sum((q - 8) x) = 16 S1 - 24 Sx over the block.
struct Unit { uvec4 q; float d; };
const uint UNIT_COLS = WORD_UNITS != 0u ? 8u : 32u;
Unit unit_load(uint row, uint u) {
    Unit t;
    if (WORD_UNITS != 0u) {
        t.q = uvec4(wt_u[row * (p.ncols >> 3) + u], 0u, 0u, 0u);
        t.d = wt_d(row * (p.ncols >> 5) + (u >> 2));
    } else {
        t.q = wt_u4[row * (p.ncols >> 5) + u];
        t.d = wt_d(row * (p.ncols >> 5) + u);
    }
    return t;
}
void unit_math(uint u, Unit d[NUM_ROWS]) {
    float A[NUM_ROWS], B[NUM_ROWS];
#if DOT
    // Wide units only: low nibbles are x group 2u, high ones 2u + 1; value d (q - 8).
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        wq[r] = d[r].q & 0x0F0F0F0Fu;
        A[r] = d[r].d;
        B[r] = -8.0 * d[r].d;
    }
    span_int(2u * u, wq, A, B);
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        wq[r] = (d[r].q >> 4) & 0x0F0F0F0Fu;
    span_int(2u * u + 1u, wq, A, B);
    return;
#endif
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        wq[r] = d[r].q;
        A[r] = 16.0 * d[r].d;
        B[r] = -24.0 * d[r].d;
    }
    span_begin();
    if (WORD_UNITS != 0u) {
        const uint xi = 8u * (u >> 2) + (u & 3u);
        span_word(0, xi, 4, 0);
        span_word(0, xi + 4u, 4, 4);
    } else {
        span_dot(8u * u, 4, 0);
        span_dot(8u * u + 4u, 4, 4);
    }
    span_end(A, B);
}

#elif WTYPE_Q4_K || WTYPE_Q5_K
// Unit u: part pp = u % 8 of block u / 8: quant bytes 16 pp .. 16 pp + 15,
// i.e. chunk c = pp / 2 (64 columns), half h = pp % 2: columns
// 64c + 16h + i (low nibbles, sub-block 2c) and 64c + 32 + 16h + i (high
// nibbles, sub-block 2c + 1). Q5_K adds the fifth bit from qh bytes 16h + i.
#if WTYPE_Q4_K
const uint BLOCK_U4 = 9;
const int QBITS = 4;
struct Unit { uvec4 hdr; uvec4 q; };
#else
const uint BLOCK_U4 = 11;
const int QBITS = 5;
struct Unit { uvec4 hdr; uvec4 q; uvec4 qh; };
#endif
const uint UNIT_COLS = 32;
Unit unit_load(uint row, uint u) {
    const uint base = (row * (p.ncols >> 8) + (u >> 3)) * BLOCK_U4, pp = u & 7u;
    Unit t;
    t.hdr = wt_u4[base];
#if WTYPE_Q4_K
    t.q = wt_u4[base + 1u + pp];
#else
    t.qh = wt_u4[base + 1u + (pp & 1u)];
    t.q = wt_u4[base + 3u + pp];
#endif
    return t;
}
void unit_math(uint u, Unit d[NUM_ROWS]) {
    const uint bk = u >> 3, pp = u & 7u, c = pp >> 1, h = pp & 1u;
    const float F = float(1u << QBITS);
    float A0[NUM_ROWS], B0[NUM_ROWS], A1[NUM_ROWS], B1[NUM_ROWS];
#if DOT
    // Value d sc q - dmin m; the spans are x groups 16 bk + 4 c + h and two further.
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        vec2 dm = unpackHalf2x16(d[r].hdr.x);
        vec4 sm = u2f(wt_scale_min_k4(d[r].hdr, c));
        A0[r] = dm.x * sm.x;
        B0[r] = -dm.y * sm.z;
        A1[r] = dm.x * sm.y;
        B1[r] = -dm.y * sm.w;
    }
    const uint g = 16u * bk + 4u * c + h;
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
#if WTYPE_Q4_K
        wq[r] = d[r].q & 0x0F0F0F0Fu;
#else
        wq[r] = (d[r].q & 0x0F0F0F0Fu) | (((d[r].qh >> (2u * c)) & 0x01010101u) << 4);
#endif
    span_int(g, wq, A0, B0);
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
#if WTYPE_Q4_K
        wq[r] = (d[r].q >> 4) & 0x0F0F0F0Fu;
#else
        wq[r] = ((d[r].q >> 4) & 0x0F0F0F0Fu) | (((d[r].qh >> (2u * c + 1u)) & 0x01010101u) << 4);
#endif
    span_int(g + 2u, wq, A1, B1);
    return;
#endif
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        vec2 dm = unpackHalf2x16(d[r].hdr.x);
        vec4 sm = u2f(wt_scale_min_k4(d[r].hdr, c));
        float a0 = dm.x * sm.x, a1 = dm.x * sm.y;
        A0[r] = F * a0;
        B0[r] = -dm.y * sm.z - F * a0;
        A1[r] = F * a1;
        B1[r] = -dm.y * sm.w - F * a1;
    }
    const uint xi = 64u * bk + 16u * c + 4u * h;
    span_begin();
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
#if WTYPE_Q4_K
        wq[r] = d[r].q;
    span_dot(xi, 4, 0);
#else
        wq[r] = (d[r].q & 0x0F0F0F0Fu) | (((d[r].qh >> (2u * c)) & 0x01010101u) << 4);
    span_dot(xi, 5, 0);
#endif
    span_end(A0, B0);
    span_begin();
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
#if WTYPE_Q4_K
        wq[r] = d[r].q;
    span_dot(xi + 8u, 4, 4);
#else
        wq[r] = ((d[r].q >> 4) & 0x0F0F0F0Fu) | (((d[r].qh >> (2u * c + 1u)) & 0x01010101u) << 4);
    span_dot(xi + 8u, 5, 0);
#endif
    span_end(A1, B1);
}

#elif WTYPE_Q6_K
// Unit u: part pp = u % 8 of block u / 8: ql bytes 16 pp .. 16 pp + 15, i.e.
// half n = pp / 4, quarter P = pp % 4: columns 128n + 16P + i (low nibbles)
// and 128n + 64 + 16P + i (high nibbles); their two high bits are in qh
// bytes 32n + 16(P & 1) + i at bits 2(P >> 1) and 2(P >> 1) + 4; scales
// sc[8n + P] and sc[8n + P + 4]. value = d sc (q - 32): A = 64 a, B = -96 a.
struct Unit { uvec4 ql; uvec4 qh; uvec2 sc; float d; };
const uint UNIT_COLS = 32;
Unit unit_load(uint row, uint u) {
    const uint blk = row * (p.ncols >> 8) + (u >> 3), pp = u & 7u, n = pp >> 2, P = pp & 3u;
    const uint base = blk * 13u;
    Unit t;
    t.ql = wt_u4[base + pp];
    t.qh = wt_u4[base + 8u + 2u * n + (P & 1u)];
    t.sc = wt_u2[2u * (base + 12u) + n];
    t.d = wt_d(blk);
    return t;
}
void unit_math(uint u, Unit d[NUM_ROWS]) {
    const uint bk = u >> 3, pp = u & 7u, n = pp >> 2, P = pp & 3u;
    const uint s = 2u * (P >> 1);
    float A0[NUM_ROWS], B0[NUM_ROWS], A1[NUM_ROWS], B1[NUM_ROWS];
#if DOT
    // Value a (q - 32); the spans are x groups 16 bk + 8 n + P and four further.
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        A0[r] = d[r].d * i2f(wt_sbyte(d[r].sc.x, P));
        B0[r] = -32.0 * A0[r];
        A1[r] = d[r].d * i2f(wt_sbyte(d[r].sc.y, P));
        B1[r] = -32.0 * A1[r];
    }
    const uint g = 16u * bk + 8u * n + P;
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        wq[r] = (d[r].ql & 0x0F0F0F0Fu) | (((d[r].qh >> s) & 0x03030303u) << 4);
    span_int(g, wq, A0, B0);
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        wq[r] = ((d[r].ql >> 4) & 0x0F0F0F0Fu) | (((d[r].qh >> (s + 4u)) & 0x03030303u) << 4);
    span_int(g + 4u, wq, A1, B1);
    return;
#endif
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        float a0 = d[r].d * float(wt_sbyte(d[r].sc.x, P));
        float a1 = d[r].d * float(wt_sbyte(d[r].sc.y, P));
        A0[r] = 64.0 * a0;
        B0[r] = -96.0 * a0;
        A1[r] = 64.0 * a1;
        B1[r] = -96.0 * a1;
    }
    const uint xi = 64u * bk + 32u * n + 4u * P;
    span_begin();
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        wq[r] = (d[r].ql & 0x0F0F0F0Fu) | (((d[r].qh >> s) & 0x03030303u) << 4);
    span_dot(xi, 6, 0);
    span_end(A0, B0);
    span_begin();
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        wq[r] = ((d[r].ql >> 4) & 0x0F0F0F0Fu) | (((d[r].qh >> (s + 4u)) & 0x03030303u) << 4);
    span_dot(xi + 16u, 6, 0);
    span_end(A1, B1);
}
#endif

shared float red[NUM_ROWS * NV * BLOCK_SIZE];   // subgroups: one partial per subgroup; else a tree

// Output i = r * NV + v of row group rg from its total s.
void store(uint rg, uint i, float s) {
    uint r = i / NV, v = i % NV, row = rg * NUM_ROWS + r;
    if (row < p.nrows) {
        const uint i = v * p.y_stride + p.y_offset + row;
        const float val = p.accumulate != 0u ? s + y[i] : s;
        y[i] = val;
        if (p.norm != 0u)
            mv_norm_add(v, val);
    }
}

// Output i = r * NV + v of row group rg from the totals t of tuple r: with
// SwiGLU pairs silu(t.x) * t.y, silu written as swiglu.comp writes it.
void store_tuple(uint rg, uint i, vec4 t) {
    const uint H = NUM_ROWS / TUPLE;
    uint r = i / NV, v = i % NV, row = rg * H + r;
    if (row >= p.nrows)
        return;
#if QKV_ROPE
    store_qkv(row, v, t);
#else
    y[v * p.y_stride + p.y_offset + row] = t.x / (1.0 + exp(-t.x)) * t.y;
#endif
}

// Tuple totals from red, where row i's total is at red[i * BLOCK_SIZE].
vec4 red_tuple(uint i) {
    const uint H = NUM_ROWS / TUPLE;
    vec4 t = vec4(0.0);
    [[unroll]] for (uint k = 0; k < TUPLE; k++)
        t[k] = red[(i + k * H * NV) * BLOCK_SIZE];
    return t;
}

// Sums acc over the workgroup and stores row group rg. Uniform control flow.
void reduce_store(uint rg, uint tid) {
    const bool pair = TUPLES;
    const uint H = NUM_ROWS / TUPLE;
#if USE_SUBGROUP
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        [[unroll]] for (uint v = 0; v < NV; v++)
            acc[r][v] = subgroupAdd(acc[r][v]);
    if (gl_NumSubgroups == 1u) {
        if (tid == 0u && pair)
            [[unroll]] for (uint r = 0; r < H; r++)
                [[unroll]] for (uint v = 0; v < NV; v++) {
                    vec4 t = vec4(0.0);
                    [[unroll]] for (uint k = 0; k < TUPLE; k++)
                        t[k] = acc[r + k * H][v];
                    store_tuple(rg, r * NV + v, t);
                }
        else if (tid == 0u)
            [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
                [[unroll]] for (uint v = 0; v < NV; v++)
                    store(rg, r * NV + v, acc[r][v]);
        return;
    }
    if (subgroupElect())
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
            [[unroll]] for (uint v = 0; v < NV; v++)
                red[(r * NV + v) * BLOCK_SIZE + gl_SubgroupID] = acc[r][v];
    barrier();
    for (uint i = tid; i < NUM_ROWS * NV; i += BLOCK_SIZE) {
        float s = 0.0;
        for (uint g = 0; g < gl_NumSubgroups; g++)
            s += red[i * BLOCK_SIZE + g];
        if (pair)
            red[i * BLOCK_SIZE] = s;    // only this invocation reads row i's partials
        else
            store(rg, i, s);
    }
    barrier();      // red is rewritten by the next row group
    if (pair) {
        for (uint i = tid; i < H * NV; i += BLOCK_SIZE)
            store_tuple(rg, i, red_tuple(i));
        barrier();
    }
#else
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        [[unroll]] for (uint v = 0; v < NV; v++)
            red[(r * NV + v) * BLOCK_SIZE + tid] = acc[r][v];
    barrier();
    [[unroll]] for (uint w = BLOCK_SIZE / 2u; w > 0u; w >>= 1) {
        if (tid < w)
            for (uint i = 0; i < NUM_ROWS * NV; i++)
                red[i * BLOCK_SIZE + tid] += red[i * BLOCK_SIZE + tid + w];
        barrier();
    }
    if (pair)
        for (uint i = tid; i < H * NV; i += BLOCK_SIZE)
            store_tuple(rg, i, red_tuple(i));
    else
        for (uint i = tid; i < NUM_ROWS * NV; i += BLOCK_SIZE)
            store(rg, i, red[i * BLOCK_SIZE]);
    barrier();
#endif
}

void rows_of(uint rg, out uint rows[NUM_ROWS]) {
    if (TUPLES) {
        const uint H = NUM_ROWS / TUPLE;
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
            rows[r] = tuple_row(min(rg * H + r % H, p.nrows - 1u), r / H);
        return;
    }
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        rows[r] = min(rg * NUM_ROWS + r, p.nrows - 1u);
}

void acc_zero() {
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        [[unroll]] for (uint v = 0; v < NV; v++)
            acc[r][v] = 0.0;
}

// The loads of one iteration: units u0 + i BLOCK_SIZE (clamped, so unconditional).
void load_units(out Unit d[NUM_UNITS][NUM_ROWS], uint rows[NUM_ROWS], uint u0, uint U) {
    [[unroll]] for (uint i = 0; i < NUM_UNITS; i++) {
        const uint u = min(u0 + i * BLOCK_SIZE, U - 1u);
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
            d[i][r] = unit_load(rows[r], u);
    }
}

void math_units(Unit d[NUM_UNITS][NUM_ROWS], uint u0, uint U) {
    [[unroll]] for (uint i = 0; i < NUM_UNITS; i++)
        if (u0 + i * BLOCK_SIZE < U)
            unit_math(u0 + i * BLOCK_SIZE, d[i]);
}

// The row groups from rg on, n_rg in all, gl_NumWorkGroups apart.
void run(uint rg, uint n_rg, uint tid) {
    const uint n_groups = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
    const uint K = p.ncols;
    [[unroll]] for (uint v = 0; v < NV; v++)
        xb[v] = (v * p.x_stride) >> 2;

#if WTYPE_F32 || WTYPE_F16
    if ((K % UNIT_COLS) != 0u || (p.x_stride & 3u) != 0u) {
        // Rows not 16-byte aligned: element by element (odd shapes only).
        for (; rg < n_rg; rg += n_groups) {
            rows_of(rg, rr);
            acc_zero();
            for (uint k = tid; k < K; k += BLOCK_SIZE)
                [[unroll]] for (uint v = 0; v < NV; v++) {
                    float xv = x1[v * p.x_stride + k];
                    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
                        acc[r][v] += wt_get1(rr[r], k, K) * xv;
                }
            reduce_store(rg, tid);
        }
        return;
    }
#endif
    const uint U = K / UNIT_COLS;
    const uint STEP = NUM_UNITS * BLOCK_SIZE;
    Unit cur[NUM_UNITS][NUM_ROWS];

    if (PIPELINE == 0u) {
        // Each iteration: its loads, then its arithmetic.
        for (; rg < n_rg; rg += n_groups) {
            rows_of(rg, rr);
            acc_zero();
            for (uint u0 = tid; u0 < U; u0 += STEP) {
                load_units(cur, rr, u0, U);
                math_units(cur, u0, U);
            }
            reduce_store(rg, tid);
        }
        return;
    }

    // Software-pipelined: the next iteration's loads (possibly the next row
    // group's) are issued before this iteration's arithmetic, so every
    // invocation always has loads in flight. n_it iterations per row group
    // for every invocation (units past the row are skipped), so the
    // reductions stay in uniform control flow.
    const uint n_it = (U + STEP - 1u) / STEP;
    Unit nxt[NUM_UNITS][NUM_ROWS];
    uint rn[NUM_ROWS];
    uint it = 0u;
    rows_of(rg, rr);
    acc_zero();
    load_units(cur, rr, tid, U);
    for (;;) {
        uint it_n = it + 1u, rg_n = rg;
        if (it_n == n_it) {
            it_n = 0u;
            rg_n = rg + n_groups;
        }
        const bool more = rg_n < n_rg;
        if (more) {
            rows_of(rg_n, rn);
            load_units(nxt, rn, tid + it_n * STEP, U);
        }
        math_units(cur, tid + it * STEP, U);
        if (it_n == 0u) {
            reduce_store(rg, tid);
            acc_zero();
        }
        if (!more)
            break;
        rg = rg_n;
        it = it_n;
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
            rr[r] = rn[r];
            [[unroll]] for (uint i = 0; i < NUM_UNITS; i++)
                cur[i][r] = nxt[i][r];
        }
    }
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint group_rows = TUPLES ? NUM_ROWS / TUPLE : NUM_ROWS;
    const uint n_rg = (p.nrows + group_rows - 1u) / group_rows;
    const uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;

    if (wg >= n_rg)
        return;         // the whole workgroup: the 2D grid's overhang, which the norm does not count
    mv_norm_begin();
#if DOT
    [[unroll]] for (uint v = 0; v < NV; v++)
        xb[v] = (v * p.x_stride) >> 2;
    x_quantise(tid);
#endif
    run(wg, n_rg, tid);
    if (p.norm != 0u)
        mv_norm_finish(wg, tid);
}
