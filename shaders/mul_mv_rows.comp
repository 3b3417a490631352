#version 450
// Matrix x vector for CPU devices (lavapipe), Q8_0: y[v][row] = sum_k W[row][k] x[v][k],
// whole rows per invocation. llvmpipe runs a subgroup as SIMD lanes; what
// costs there is loads from storage buffers and subgroup operations, not the
// arithmetic (llvmpipe 22.3, one thread, 4096 x 768: of mul_mv_rows with a
// row per lane and x shared by subgroupBroadcast, 2.6 ms, the weight loads
// took 0.7 and the broadcasts 1.4). So a lane takes NUM_ROWS rows (tid,
// tid + BLOCK_SIZE, ...), loads a block's x once for all of them and keeps
// its sums to itself: no reduction, no subgroup operation; 8 rows a lane
// made it 1.05 ms. On a GPU this layout reads rows ncols bytes apart in
// each load (uncoalesced): mul_mv is the kernel there.
// Spec constants (ids as mul_mv's, the others unused): 0 BLOCK_SIZE, 3 NUM_ROWS, 4 NV.
// Bindings and push constants are mul_mv's (MulMvPush in daemon/gpu/ops-weights.c).

#extension GL_EXT_control_flow_attributes : require

#define WTYPE_Q8_0 1

layout(constant_id = 0) const uint BLOCK_SIZE = 8;
layout(local_size_x_id = 0) in;
layout(constant_id = 3) const uint NUM_ROWS = 4;
layout(constant_id = 4) const uint NV = 1;

#include "weights.glsl"

layout(binding = 2, std430) readonly buffer X4 { vec4 x4[]; };
layout(binding = 3, std430) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint ncols;         // K
    uint nrows;         // rows of this chunk
    uint x_stride;      // floats between the vectors of x
    uint y_stride;      // floats between the vectors of y
    uint y_offset;      // where this chunk's rows start in each y vector
} p;

void main() {
    const uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint row0 = wg * BLOCK_SIZE * NUM_ROWS + gl_LocalInvocationID.x;
    const uint nb = p.ncols >> 5;
    uint rows[NUM_ROWS];
    float acc[NUM_ROWS][NV];
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        // A partial last group recomputes the last row and never stores it.
        rows[r] = min(row0 + r * BLOCK_SIZE, p.nrows - 1u);
        [[unroll]] for (uint v = 0; v < NV; v++)
            acc[r][v] = 0.0;
    }

    // Per block: bytes biased to unsigned (b + 128) become 1 + u/256 (wt_unorm4),
    // so sum(b x) = 256 S1 - 384 Sx with S1 their dot product with x.
    for (uint b = 0; b < nb; b++) {
        [[unroll]] for (uint v = 0; v < NV; v++) {
            const uint xb = (v * p.x_stride >> 2) + 8u * b;
            vec4 xv[8];
            vec4 sx = vec4(0.0);
            [[unroll]] for (uint j = 0; j < 8u; j++) {
                xv[j] = x4[xb + j];
                sx += xv[j];
            }
            const float sxs = (sx.x + sx.y) + (sx.z + sx.w);
            [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
                const uint blk = rows[r] * nb + b;
                const uvec4 qa = wt_u4[2u * blk] ^ uvec4(0x80808080u);
                const uvec4 qb = wt_u4[2u * blk + 1u] ^ uvec4(0x80808080u);
                vec4 s1 = vec4(0.0);
                [[unroll]] for (uint j = 0; j < 4u; j++) {
                    s1 += wt_unorm4(qa[j], 8, 0) * xv[j];
                    s1 += wt_unorm4(qb[j], 8, 0) * xv[4u + j];
                }
                acc[r][v] += wt_d(blk) * (256.0 * ((s1.x + s1.y) + (s1.z + s1.w)) - 384.0 * sxs);
            }
        }
    }
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        if (row0 + r * BLOCK_SIZE < p.nrows)
            [[unroll]] for (uint v = 0; v < NV; v++)
                y[v * p.y_stride + p.y_offset + row0 + r * BLOCK_SIZE] = acc[r][v];
}
