#version 450
// Matrix x vector: y[v][row0 + r] = sum_k W[r][k] x[v][k] for NV vectors
// (batch-1 decode and small batches), over one chunk of a GpuTensor
// (daemon/gpu/ops-weights.c). Memory-bound, so the design is about bytes:
//   - a workgroup takes NUM_ROWS rows; each invocation walks "units" of the
//     row, u = tid, tid + BLOCK_SIZE, ...: one 16-byte load of quants per
//     row per unit, consecutive invocations on consecutive 16-byte words
//     (coalesced), every weight byte read once for all NV vectors;
//   - x is read once per unit (vec4 loads, L1-resident) and reused for the
//     NUM_ROWS rows;
//   - quants become floats with exponent bit tricks (wt_unorm4 in f32, or
//     wt_unorm4h through f16: DEQ_HALF), no int->float conversions, and the
//     block's scale and offset are folded in once per 16-element span:
//     sum((a q + c) x) = a 2^B S1 + (c - a 2^B) Sx;
//   - two units per loop iteration, so each invocation has 2 x NUM_ROWS loads
//     in flight;
//   - subgroupAdd reduction (USE_SUBGROUP=1) or a shared-memory tree.
// Spec constants: 0 BLOCK_SIZE (a power of two), 3 NUM_ROWS, 4 NV,
// 5 DEQ_HALF. One WTYPE_* define selects the weight type.

#extension GL_EXT_control_flow_attributes : require
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

layout(constant_id = 0) const uint BLOCK_SIZE = 128;
layout(local_size_x_id = 0) in;
layout(constant_id = 3) const uint NUM_ROWS = 2;
layout(constant_id = 4) const uint NV = 1;
layout(constant_id = 5) const uint DEQ_HALF = 1;  // quants to floats via f16 (wt_unorm4h) or f32 (wt_unorm4)

#include "weights.glsl"

layout(binding = 2, std430) readonly buffer X4 { vec4 x4[]; };
layout(binding = 2, std430) readonly buffer X1 { float x1[]; };
layout(binding = 3, std430) writeonly buffer Y { float y[]; };

// Mirrored by MulMvPush in daemon/gpu/ops-weights.c.
layout(push_constant) uniform Push {
    uint ncols;         // K
    uint nrows;         // rows of this chunk
    uint x_stride;      // floats between the vectors of x
    uint y_stride;      // floats between the vectors of y
    uint y_offset;      // where this chunk's rows start in each y vector
} p;

float acc[NUM_ROWS][NV];
uint rr[NUM_ROWS];      // rows (clamped: a partial last group recomputes the last row, never stores it)
uint xb[NV];            // x4 index of each vector

#if !(WTYPE_F32 || WTYPE_F16)
float s1[NUM_ROWS][NV];
float sx[NV];
uvec4 wq[NUM_ROWS];     // the unit's 16 bytes of quants, per row

void span_begin() {
    [[unroll]] for (uint v = 0; v < NV; v++) {
        sx[v] = 0.0;
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
            s1[r][v] = 0.0;
    }
}

// S1 += unorm(quants) . x and Sx += x over four words; xi: x4 index of the first.
void span_dot(uint xi, const int BITS, const int LSB) {
    [[unroll]] for (uint j = 0; j < 4u; j++) {
        vec4 f[NUM_ROWS];
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
            f[r] = DEQ_HALF != 0u ? wt_unorm4h(wq[r][j], BITS, LSB) : wt_unorm4(wq[r][j], BITS, LSB);
        [[unroll]] for (uint v = 0; v < NV; v++) {
            vec4 xv = x4[xb[v] + xi + j];
            sx[v] += (xv.x + xv.y) + (xv.z + xv.w);
            [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
                s1[r][v] += dot(f[r], xv);
        }
    }
}

// acc += A S1 + B Sx per row (A, B: the span's folded scale and offset).
void span_end(float A[NUM_ROWS], float B[NUM_ROWS]) {
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        [[unroll]] for (uint v = 0; v < NV; v++)
            acc[r][v] += A[r] * s1[r][v] + B[r] * sx[v];
}
#endif

#if WTYPE_F32
// Unit u: columns 4u .. 4u+3.
void unit(uint u) {
    const uint U = p.ncols >> 2;
    vec4 w[NUM_ROWS];
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        w[r] = uintBitsToFloat(wt_u4[rr[r] * U + u]);
    [[unroll]] for (uint v = 0; v < NV; v++) {
        vec4 xv = x4[xb[v] + u];
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
            acc[r][v] += dot(w[r], xv);
    }
}
const uint UNIT_COLS = 4;

#elif WTYPE_F16
// Unit u: columns 8u .. 8u+7.
void unit(uint u) {
    const uint U = p.ncols >> 3;
    vec4 wa[NUM_ROWS], wb[NUM_ROWS];
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        uvec4 q = wt_u4[rr[r] * U + u];
        wa[r] = vec4(unpackHalf2x16(q.x), unpackHalf2x16(q.y));
        wb[r] = vec4(unpackHalf2x16(q.z), unpackHalf2x16(q.w));
    }
    [[unroll]] for (uint v = 0; v < NV; v++) {
        vec4 xa = x4[xb[v] + 2u * u], xc = x4[xb[v] + 2u * u + 1u];
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
            acc[r][v] += dot(wa[r], xa) + dot(wb[r], xc);
    }
}
const uint UNIT_COLS = 8;

#elif WTYPE_Q8_0
// Unit u: columns 16u .. 16u+15, half of block u/2. Bytes are biased to
// unsigned (b + 128) so the 8-bit trick applies: sum(b x) = 256 S1 - 384 Sx.
void unit(uint u) {
    const uint U = p.ncols >> 4;
    float A[NUM_ROWS], B[NUM_ROWS];
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        wq[r] = wt_u4[rr[r] * U + u] ^ uvec4(0x80808080u);
        float d = wt_d(rr[r] * (U >> 1) + (u >> 1));
        A[r] = 256.0 * d;
        B[r] = -384.0 * d;
    }
    span_begin();
    span_dot(4u * u, 8, 0);
    span_end(A, B);
}
const uint UNIT_COLS = 16;

#elif WTYPE_Q4_0
// Unit u: block u (columns 32u ..): low nibbles are columns 0..15, high 16..31;
// sum((q - 8) x) = 16 S1 - 24 Sx over the whole block.
void unit(uint u) {
    const uint U = p.ncols >> 5;
    float A[NUM_ROWS], B[NUM_ROWS];
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        wq[r] = wt_u4[rr[r] * U + u];
        float d = wt_d(rr[r] * U + u);
        A[r] = 16.0 * d;
        B[r] = -24.0 * d;
    }
    span_begin();
    span_dot(8u * u, 4, 0);
    span_dot(8u * u + 4u, 4, 4);
    span_end(A, B);
}
const uint UNIT_COLS = 32;

#elif WTYPE_Q4_K || WTYPE_Q5_K
// Unit u: part pp = u % 8 of block u / 8: quant bytes 16 pp .. 16 pp + 15,
// i.e. chunk c = pp / 2 (64 columns), half h = pp % 2: columns
// 64c + 16h + i (low nibbles, sub-block 2c) and 64c + 32 + 16h + i (high
// nibbles, sub-block 2c + 1). Q5_K adds the fifth bit from qh bytes 16h + i.
#if WTYPE_Q4_K
const uint BLOCK_U4 = 9;
const int QBITS = 4;
#else
const uint BLOCK_U4 = 11;
const int QBITS = 5;
#endif
void unit(uint u) {
    const uint nb = p.ncols >> 8;
    const uint bk = u >> 3, pp = u & 7u, c = pp >> 1, h = pp & 1u;
    const float F = float(1u << QBITS);
    float A0[NUM_ROWS], B0[NUM_ROWS], A1[NUM_ROWS], B1[NUM_ROWS];
    uvec4 q[NUM_ROWS];
#if WTYPE_Q5_K
    uvec4 qh[NUM_ROWS];
#endif
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        uint base = (rr[r] * nb + bk) * BLOCK_U4;
        uvec4 hdr = wt_u4[base];
#if WTYPE_Q4_K
        q[r] = wt_u4[base + 1u + pp];
#else
        qh[r] = wt_u4[base + 1u + h];
        q[r] = wt_u4[base + 3u + pp];
#endif
        vec2 dm = unpackHalf2x16(hdr.x);
        uvec4 sm = wt_scale_min_k4(hdr, c);
        float a0 = dm.x * float(sm.x), a1 = dm.x * float(sm.y);
        A0[r] = F * a0;
        B0[r] = -dm.y * float(sm.z) - F * a0;
        A1[r] = F * a1;
        B1[r] = -dm.y * float(sm.w) - F * a1;
    }
    const uint xi = 64u * bk + 16u * c + 4u * h;
    span_begin();
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
#if WTYPE_Q4_K
        wq[r] = q[r];
    span_dot(xi, 4, 0);
#else
        wq[r] = (q[r] & 0x0F0F0F0Fu) | (((qh[r] >> (2u * c)) & 0x01010101u) << 4);
    span_dot(xi, 5, 0);
#endif
    span_end(A0, B0);
    span_begin();
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
#if WTYPE_Q4_K
        wq[r] = q[r];
    span_dot(xi + 8u, 4, 4);
#else
        wq[r] = ((q[r] >> 4) & 0x0F0F0F0Fu) | (((qh[r] >> (2u * c + 1u)) & 0x01010101u) << 4);
    span_dot(xi + 8u, 5, 0);
#endif
    span_end(A1, B1);
}
const uint UNIT_COLS = 32;

#elif WTYPE_Q6_K
// Unit u: part pp = u % 8 of block u / 8: ql bytes 16 pp .. 16 pp + 15, i.e.
// half n = pp / 4, quarter P = pp % 4: columns 128n + 16P + i (low nibbles)
// and 128n + 64 + 16P + i (high nibbles); their two high bits are in qh
// bytes 32n + 16(P & 1) + i at bits 2(P >> 1) and 2(P >> 1) + 4; scales
// sc[8n + P] and sc[8n + P + 4]. value = d sc (q - 32): A = 64 a, B = -96 a.
void unit(uint u) {
    const uint nb = p.ncols >> 8;
    const uint bk = u >> 3, pp = u & 7u, n = pp >> 2, P = pp & 3u;
    const uint s = 2u * (P >> 1);
    float A0[NUM_ROWS], B0[NUM_ROWS], A1[NUM_ROWS], B1[NUM_ROWS];
    uvec4 ql[NUM_ROWS], qh[NUM_ROWS];
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        uint blk = rr[r] * nb + bk;
        uint base = blk * 13u;
        ql[r] = wt_u4[base + pp];
        qh[r] = wt_u4[base + 8u + 2u * n + (P & 1u)];
        uvec4 sc = wt_u4[base + 12u];
        float d = wt_d(blk);
        float a0 = d * float(wt_sbyte(sc[2u * n], P));
        float a1 = d * float(wt_sbyte(sc[2u * n + 1u], P));
        A0[r] = 64.0 * a0;
        B0[r] = -96.0 * a0;
        A1[r] = 64.0 * a1;
        B1[r] = -96.0 * a1;
    }
    const uint xi = 64u * bk + 32u * n + 4u * P;
    span_begin();
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        wq[r] = (ql[r] & 0x0F0F0F0Fu) | (((qh[r] >> s) & 0x03030303u) << 4);
    span_dot(xi, 6, 0);
    span_end(A0, B0);
    span_begin();
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        wq[r] = ((ql[r] >> 4) & 0x0F0F0F0Fu) | (((qh[r] >> (s + 4u)) & 0x03030303u) << 4);
    span_dot(xi + 16u, 6, 0);
    span_end(A1, B1);
}
const uint UNIT_COLS = 32;
#endif

#if USE_SUBGROUP
shared float red[NUM_ROWS * NV * BLOCK_SIZE];   // per subgroup partials (only gl_NumSubgroups used)
#else
shared float red[NUM_ROWS * NV * BLOCK_SIZE];
#endif

void store(uint row0, uint i, float s) {
    uint r = i / NV, v = i % NV;
    if (row0 + r < p.nrows)
        y[v * p.y_stride + p.y_offset + row0 + r] = s;
}

void main() {
    const uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint row0 = group * NUM_ROWS;
    const uint tid = gl_LocalInvocationID.x;
    const uint K = p.ncols;

    if (row0 >= p.nrows)
        return;         // the whole workgroup: the 2D grid's overhang

    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        rr[r] = min(row0 + r, p.nrows - 1u);
        [[unroll]] for (uint v = 0; v < NV; v++)
            acc[r][v] = 0.0;
    }
    [[unroll]] for (uint v = 0; v < NV; v++)
        xb[v] = (v * p.x_stride) >> 2;

#if WTYPE_F32 || WTYPE_F16
    if ((K % UNIT_COLS) != 0u || (p.x_stride & 3u) != 0u) {
        // Rows not 16-byte aligned: element by element (odd shapes only).
        for (uint k = tid; k < K; k += BLOCK_SIZE)
            [[unroll]] for (uint v = 0; v < NV; v++) {
                float xv = x1[v * p.x_stride + k];
                [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
                    acc[r][v] += wt_get1(rr[r], k, K) * xv;
            }
    } else
#endif
    {
        const uint U = K / UNIT_COLS;
        uint u = tid;
        for (; u + BLOCK_SIZE < U; u += 2u * BLOCK_SIZE) {
            unit(u);
            unit(u + BLOCK_SIZE);
        }
        if (u < U)
            unit(u);
    }

#if USE_SUBGROUP
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        [[unroll]] for (uint v = 0; v < NV; v++)
            acc[r][v] = subgroupAdd(acc[r][v]);
    if (gl_NumSubgroups == 1u) {
        if (tid == 0u)
            [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
                [[unroll]] for (uint v = 0; v < NV; v++)
                    store(row0, r * NV + v, acc[r][v]);
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
        store(row0, i, s);
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
    for (uint i = tid; i < NUM_ROWS * NV; i += BLOCK_SIZE)
        store(row0, i, red[i * BLOCK_SIZE]);
#endif
}
