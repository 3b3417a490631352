#version 450
// Matrix x matrix for CPU devices (lavapipe): Y[t][y_col0 + r] = sum_k W[r][k] X[t][k].
//
// llvmpipe runs a workgroup's invocations as SIMD lanes, and it turns every
// load from a storage buffer or shared memory into a loop over the lanes,
// one scalar load (per vector component) at a time; arithmetic on the lanes
// is a single vector instruction. mul_mm's shared-memory tiles therefore
// cost it about as many such loops as multiply-adds (about 11 GFLOP/s on two
// cores). Here a lane keeps everything in registers instead: NUM_ROWS weight
// rows (tid, tid + BLOCK_SIZE, ...) times NT tokens of accumulators. Per
// 32-column step it loads and dequantises its rows once (wide loads: a
// Q8_0 step is two uvec4 and a scale) and then, token by token, loads x once
// for all of its rows. No shared memory, no barriers, no subgroup operations.
// On a GPU these per-lane rows would be uncoalesced: mul_mm is the kernel there.
//
// The grid is (token blocks, row groups): consecutive workgroups take the
// same rows for the next tokens, so their weights are still in the cache.
// Needs K % 32 == 0 (every quantised type; F32/F16 otherwise use mul_mm).
// Spec constants: 0 BLOCK_SIZE (lanes), 3 NUM_ROWS, 4 NT (tokens per workgroup).
// Bindings and push constants are mul_mm's. One WTYPE_* define selects the type.

#extension GL_EXT_control_flow_attributes : require
#extension GL_ARB_gpu_shader_int64 : require

layout(constant_id = 0) const uint BLOCK_SIZE = 8;
layout(local_size_x_id = 0) in;
layout(constant_id = 3) const uint NUM_ROWS = 8;
layout(constant_id = 4) const uint NT = 8;

#include "weights.glsl"

// 32-byte loads: each is one loop over the lanes, like a 16-byte one.
layout(binding = 2, std430) readonly buffer X8 { u64vec4 x8[]; };
layout(binding = 3, std430) writeonly buffer Y { float y[]; };

// Mirrored by MatmulPush in daemon/gpu/ops-matmul.c.
layout(push_constant) uniform Push {
    uint K;
    uint n_rows;
    uint n_tokens;
    uint y_stride;
    uint y_col0;
} p;

vec4 w[NUM_ROWS][8];    // the step's 32 weights of each row, dequantised

// Columns 32 * step .. + 31 of row `row` into w[r].
void load_step(uint r, uint row, uint step) {
    const uint K = p.K;
#if WTYPE_F32
    const uint e = (row * K >> 2) + 8u * step;
    [[unroll]] for (uint j = 0; j < 8u; j++)
        w[r][j] = uintBitsToFloat(wt_u4[e + j]);
#elif WTYPE_F16
    const uint e = (row * K >> 3) + 4u * step;
    [[unroll]] for (uint j = 0; j < 4u; j++) {
        const uvec4 q = wt_u4[e + j];
        w[r][2u * j] = vec4(unpackHalf2x16(q.x), unpackHalf2x16(q.y));
        w[r][2u * j + 1u] = vec4(unpackHalf2x16(q.z), unpackHalf2x16(q.w));
    }
#elif WTYPE_Q8_0
    const uint blk = row * (K >> 5) + step;
    const float d = wt_d(blk);
    const uvec4 q0 = wt_u4[2u * blk], q1 = wt_u4[2u * blk + 1u];
    [[unroll]] for (uint j = 0; j < 4u; j++) {
        w[r][j] = d * wt_sbytes4(q0[j]);
        w[r][4u + j] = d * wt_sbytes4(q1[j]);
    }
#elif WTYPE_Q4_0
    // Low nibbles are columns 0..15, high ones 16..31.
    const uint blk = row * (K >> 5) + step;
    const float d = wt_d(blk);
    const uvec4 q = wt_u4[blk];
    [[unroll]] for (uint j = 0; j < 4u; j++) {
        w[r][j] = d * (wt_ubytes4(q[j] & 0x0F0F0F0Fu) - 8.0);
        w[r][4u + j] = d * (wt_ubytes4((q[j] >> 4) & 0x0F0F0F0Fu) - 8.0);
    }
#elif WTYPE_Q4_K || WTYPE_Q5_K
    // Sub-block s of the block: chunk c = s / 2 of 64 columns, whose quant
    // bytes hold sub-block 2c in their low nibbles and 2c + 1 in their high.
    const uint s = step & 7u, c = s >> 1, hi = s & 1u;
#if WTYPE_Q4_K
    const uint base = (row * (K >> 8) + (step >> 3)) * 9u;
    const uvec4 q0 = wt_u4[base + 1u + 2u * c], q1 = wt_u4[base + 2u + 2u * c];
#else
    const uint base = (row * (K >> 8) + (step >> 3)) * 11u;
    const uvec4 q0 = wt_u4[base + 3u + 2u * c], q1 = wt_u4[base + 4u + 2u * c];
    // The fifth bits: bit s of qh byte l (column l of the sub-block).
    const uvec4 h0 = ((wt_u4[base + 1u] >> s) & 0x01010101u) << 4;
    const uvec4 h1 = ((wt_u4[base + 2u] >> s) & 0x01010101u) << 4;
#endif
    const uvec4 hdr = wt_u4[base];
    const vec2 dm = unpackHalf2x16(hdr.x);
    const uvec4 sm = wt_scale_min_k4(hdr, c);
    const float d1 = dm.x * float(hi == 0u ? sm.x : sm.y);
    const float m1 = dm.y * float(hi == 0u ? sm.z : sm.w);
    const uint sh = 4u * hi;
    [[unroll]] for (uint j = 0; j < 4u; j++) {
        uint a = (q0[j] >> sh) & 0x0F0F0F0Fu, b = (q1[j] >> sh) & 0x0F0F0F0Fu;
#if WTYPE_Q5_K
        a |= h0[j];
        b |= h1[j];
#endif
        w[r][j] = d1 * wt_ubytes4(a) - m1;
        w[r][4u + j] = d1 * wt_ubytes4(b) - m1;
    }
#elif WTYPE_Q6_K
    // Sub-block s = 4n + qq (n: which 128 columns): ql bytes 64n + 32 (qq & 1)
    // + l, nibble qq >> 1; qh bytes 32n + l, bits 2qq; scales 8n + 2qq + l / 16.
    const uint s = step & 7u, n = s >> 2, qq = s & 3u;
    const uint blk = row * (K >> 8) + (step >> 3);
    const uint base = blk * 13u;
    const uvec4 l0 = wt_u4[base + 4u * n + 2u * (qq & 1u)], l1 = wt_u4[base + 4u * n + 2u * (qq & 1u) + 1u];
    const uvec4 h0 = wt_u4[base + 8u + 2u * n], h1 = wt_u4[base + 9u + 2u * n];
    const uint si = 8u * n + 2u * qq;
    const uint scw = wt_u4[base + 12u][si >> 2];
    const float d = wt_d(blk);
    const float d0 = d * float(wt_sbyte(scw, si & 3u)), d1 = d * float(wt_sbyte(scw, (si & 3u) + 1u));
    const uint lsh = 4u * (qq >> 1), hsh = 2u * qq;
    [[unroll]] for (uint j = 0; j < 4u; j++) {
        const uint a = ((l0[j] >> lsh) & 0x0F0F0F0Fu) | (((h0[j] >> hsh) & 0x03030303u) << 4);
        const uint b = ((l1[j] >> lsh) & 0x0F0F0F0Fu) | (((h1[j] >> hsh) & 0x03030303u) << 4);
        w[r][j] = d0 * (wt_ubytes4(a) - 32.0);
        w[r][4u + j] = d1 * (wt_ubytes4(b) - 32.0);
    }
#endif
}

void main() {
    const uint lid = gl_LocalInvocationID.x;
    const uint t0 = gl_WorkGroupID.x * NT;
    const uint row0 = gl_WorkGroupID.y * BLOCK_SIZE * NUM_ROWS + lid;
    const uint K = p.K;

    // A partial last group recomputes the last row or token and never
    // stores it: no early return, which would make llvmpipe mask every
    // lane operation after it.
    uint rows[NUM_ROWS];
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        rows[r] = min(row0 + r * BLOCK_SIZE, p.n_rows - 1u);
    uint xb[NT];
    [[unroll]] for (uint t = 0; t < NT; t++)
        xb[t] = min(t0 + t, p.n_tokens - 1u) * (K >> 3);

    float acc[NUM_ROWS][NT];
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        [[unroll]] for (uint t = 0; t < NT; t++)
            acc[r][t] = 0.0;

    const uint n_steps = K >> 5;
    for (uint step = 0; step < n_steps; step++) {
        [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
            load_step(r, rows[r], step);
        [[unroll]] for (uint t = 0; t < NT; t++) {
            vec4 xv[8];
            [[unroll]] for (uint j = 0; j < 4u; j++) {
                const u64vec4 q = x8[xb[t] + 4u * step + j];
                xv[2u * j] = vec4(uintBitsToFloat(unpackUint2x32(q.x)), uintBitsToFloat(unpackUint2x32(q.y)));
                xv[2u * j + 1u] = vec4(uintBitsToFloat(unpackUint2x32(q.z)), uintBitsToFloat(unpackUint2x32(q.w)));
            }
            [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
                vec4 s = w[r][0] * xv[0];
                [[unroll]] for (uint j = 1; j < 8u; j++)
                    s = fma(w[r][j], xv[j], s);
                acc[r][t] += (s.x + s.y) + (s.z + s.w);
            }
        }
    }

    [[unroll]] for (uint t = 0; t < NT; t++)
        if (t0 + t < p.n_tokens)
            [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
                if (row0 + r * BLOCK_SIZE < p.n_rows)
                    y[(t0 + t) * p.y_stride + p.y_col0 + row0 + r * BLOCK_SIZE] = acc[r][t];
}
