#version 450
// Matrix x matrix for prompt processing: Y[t][y_col0 + r] = sum_k W[r][k] X[t][k]
// for the rows r of one weight chunk and n_tokens rows t of X.
//
// Each workgroup computes a BM (weight rows) x BN (tokens) output tile. K is
// walked in 32-wide steps: the weights are dequantised into shared memory
// (one 32-wide step is one quant block or K-quant sub-block, so a load is a
// single aligned uint plus its scales) next to the matching X tile, then
// every invocation accumulates a TM x TN register micro-tile in F32 from
// vec4 reads of shared memory. Tile sizes are specialization constants the
// host picks from the device's shared memory and invocation limits.
//
// Invocation lid owns rows tm + i * (BM / TM) and tokens tn + j * (BN / TN)
// (tm = lid % (BM / TM)): neighbouring invocations read neighbouring
// shared-memory rows and write neighbouring Y columns, so the stores
// coalesce.

#extension GL_EXT_control_flow_attributes : enable

layout(local_size_x_id = 0) in;

layout(constant_id = 3) const uint BM = 64;
layout(constant_id = 4) const uint BN = 64;
layout(constant_id = 5) const uint TM = 4;
layout(constant_id = 6) const uint TN = 4;

#include "mm_dequant.glsl"

layout(binding = 2, std430) readonly buffer X { float x[]; };
layout(binding = 2, std430) readonly buffer X4 { vec4 x4[]; };
layout(binding = 3, std430) writeonly buffer Y { float y[]; };

// Mirrored by MatmulPush in daemon/gpu/ops-matmul.c.
layout(push_constant) uniform Push {
    uint K;             // columns of W and X
    uint n_rows;        // rows of this chunk
    uint n_tokens;
    uint y_stride;      // floats between token rows of Y (all rows of the tensor)
    uint y_col0;        // this chunk's first row, i.e. first column of Y
} p;

const uint BK = 32;
const uint BK4 = BK / 4;
// One vec4 of padding per tile row: rows then start 9 vec4 apart, so
// neighbouring invocations hit different banks on both the stores and the
// strided reads.
const uint STRIDE4 = BK4 + 1;
const uint WM = BM / TM;        // invocations along the rows of the tile
const uint WN = BN / TN;

shared vec4 ws[BM * STRIDE4];
shared vec4 xs[BN * STRIDE4];

void main() {
    const uint lid = gl_LocalInvocationID.x;
    const uint n_inv = gl_WorkGroupSize.x;
    const uint tm = lid % WM, tn = lid / WM;
    const uint m0 = gl_WorkGroupID.x * BM, n0 = gl_WorkGroupID.y * BN;
    const uint K = p.K;
    const bool x_vec = (K & 3u) == 0;

    float acc[TM * TN];
    [[unroll]] for (uint i = 0; i < TM * TN; i++)
        acc[i] = 0.0;

    for (uint k0 = 0; k0 < K; k0 += BK) {
        // Weights: eight 4-element items per row; neighbouring invocations
        // take neighbouring items of a row (contiguous in memory).
        for (uint it = lid; it < BM * BK4; it += n_inv) {
            uint rr = it / BK4, q = it % BK4;
            uint r = m0 + rr;
            ws[rr * STRIDE4 + q] = r < p.n_rows ? mm_load_w4(r, k0, q, K) : vec4(0);
        }
        for (uint it = lid; it < BN * BK4; it += n_inv) {
            uint tt = it / BK4, q = it % BK4;
            uint t = n0 + tt, k = k0 + 4 * q;
            vec4 v = vec4(0);
            if (t < p.n_tokens) {
                if (x_vec) {
                    if (k < K)
                        v = x4[(t * K + k) >> 2];
                } else {
                    for (uint e = 0; e < 4; e++)
                        if (k + e < K)
                            v[e] = x[t * K + k + e];
                }
            }
            xs[tt * STRIDE4 + q] = v;
        }
        barrier();

        // Per 4-wide slice of K: TN vec4 of X held, the TM vec4 of W streamed
        // through, so the live registers are the accumulators plus 4 (TN + 1).
        [[unroll]] for (uint q = 0; q < BK4; q++) {
            vec4 b[TN];
            [[unroll]] for (uint j = 0; j < TN; j++)
                b[j] = xs[(tn + j * WN) * STRIDE4 + q];
            [[unroll]] for (uint i = 0; i < TM; i++) {
                vec4 a = ws[(tm + i * WM) * STRIDE4 + q];
                [[unroll]] for (uint j = 0; j < TN; j++)
                    acc[j * TM + i] += dot(a, b[j]);
            }
        }
        barrier();
    }

    [[unroll]] for (uint j = 0; j < TN; j++) {
        uint t = n0 + tn + j * WN;
        if (t >= p.n_tokens)
            continue;
        [[unroll]] for (uint i = 0; i < TM; i++) {
            uint r = m0 + tm + i * WM;
            if (r < p.n_rows)
                y[t * p.y_stride + p.y_col0 + r] = acc[j * TM + i];
        }
    }
}
