#version 450
// Matrix x vector for CPU devices (lavapipe): y[v][row] = sum_k W[row][k] x[v][k],
// whole rows per invocation. llvmpipe runs a subgroup as SIMD lanes; what
// costs there is loads from storage buffers and subgroup operations, not the
// arithmetic (llvmpipe 22.3, one thread, Q8_0 4096 x 768: of mul_mv_rows with a
// row per lane and x shared by subgroupBroadcast, 2.6 ms, the weight loads
// took 0.7 and the broadcasts 1.4). So a lane takes NUM_ROWS rows (tid,
// tid + BLOCK_SIZE, ...), loads a step's x once for all of them and keeps
// its sums to itself: no reduction, no subgroup operation; 8 rows a lane
// made it 1.05 ms. On a GPU this layout reads rows ncols bytes apart in
// each load (uncoalesced): mul_mv is the kernel there.
// A step is 32 columns (F16, Q8_0, Q4_0) or 64 (K-quants: a pair of
// sub-blocks sharing their quant bytes); a K-quant block's header is loaded
// once per row for its four steps. Scales and offsets are folded per span as
// in mul_mv: sum((a q + c) x) = a 2^B S1 + (c - a 2^B) Sx (weights.glsl).
// Spec constants (ids as mul_mv's, the others unused): 0 BLOCK_SIZE, 3 NUM_ROWS, 4 NV.
// Bindings and push constants are mul_mv's (mv_common.glsl).
// One WTYPE_* define selects the weight type (not F32: mul_mv is at copy speed there).

#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 0) const uint BLOCK_SIZE = 8;
layout(local_size_x_id = 0) in;
layout(constant_id = 3) const uint NUM_ROWS = 4;
layout(constant_id = 4) const uint NV = 1;

#include "weights.glsl"

layout(binding = 2, std430) readonly buffer X4 { vec4 x4[]; };
#if NORM
layout(binding = 3, std430) coherent buffer Y { float y[]; };   // mv_norm.glsl reads it across workgroups
#else
layout(binding = 3, std430) buffer Y { float y[]; };
#endif

#include "mv_common.glsl"

// Only NORM=1 builds carry the norm epilogue, counting by invocation (see
// mv_norm.glsl), so the plain kernel keeps its code as it was.
#if NORM
#define MV_NORM_LANES
#include "mv_norm.glsl"
#endif

uint rows[NUM_ROWS];
float acc[NUM_ROWS][NV];

#if WTYPE_F16 || WTYPE_Q8_0 || WTYPE_Q4_0
const uint STEP_COLS = 32;
#else
const uint STEP_COLS = 64;
#endif
vec4 xv[STEP_COLS / 4u];

float hsum(vec4 a) {
    return (a.x + a.y) + (a.z + a.w);
}

// xv = the step's x of vector v; returns the sums of its 16-column spans.
vec4 load_x(uint v, uint step) {
    const uint xb = (v * p.x_stride >> 2) + step * (STEP_COLS / 4u);
    vec4 sx = vec4(0.0);
    [[unroll]] for (uint j = 0; j < STEP_COLS / 4u; j++) {
#if WTYPE_Q6_K
        // Spans k = j / 4 at columns 128n + 16h + 32k of the block (step_rows()).
        const uint g = step & 3u;
        xv[j] = x4[xb - 16u * g + 32u * (g >> 1) + 4u * (g & 1u) + 8u * (j >> 2) + (j & 3u)];
#else
        xv[j] = x4[xb + j];
#endif
        sx[j >> 2] += hsum(xv[j]);
    }
    return sx;
}

// S1 of four quant words against xv[j0 ..], their fields BITS wide from LSB.
float dot4(uvec4 q, uint j0, const int BITS, const int LSB) {
    vec4 s = vec4(0.0);
    [[unroll]] for (uint j = 0; j < 4u; j++)
        s += wt_unorm4(q[j], BITS, LSB) * xv[j0 + j];
    return hsum(s);
}

#if WTYPE_Q4_K
const uint KQ_BLOCK_U4 = 9;     // uvec4s per block
#elif WTYPE_Q5_K
const uint KQ_BLOCK_U4 = 11;
#endif
#if WTYPE_Q4_K || WTYPE_Q5_K || WTYPE_Q6_K
uvec4 hdr[NUM_ROWS];    // per row, the current block's header (Q6_K: its scales)
float dsc[NUM_ROWS];    // Q6_K: the block's d
#endif

// Once per block of WT_BLOCK columns (K-quants), before its steps.
void block_begin(uint b) {
#if WTYPE_Q4_K || WTYPE_Q5_K
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        hdr[r] = wt_u4[(rows[r] * (p.ncols >> 8) + b) * KQ_BLOCK_U4];
#elif WTYPE_Q6_K
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        const uint blk = rows[r] * (p.ncols >> 8) + b;
        hdr[r] = wt_u4[blk * 13u + 12u];
        dsc[r] = wt_d(blk);
    }
#endif
}

// acc[.][v] += the step's dot products; sx: load_x()'s span sums.
void step_rows(uint step, uint v, vec4 sx) {
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
#if WTYPE_F16
        const uint e = rows[r] * (p.ncols >> 3) + 4u * step;
        vec4 s = vec4(0.0);
        [[unroll]] for (uint j = 0; j < 4u; j++) {
            const uvec4 q = wt_u4[e + j];
            s += vec4(unpackHalf2x16(q.x), unpackHalf2x16(q.y)) * xv[2u * j];
            s += vec4(unpackHalf2x16(q.z), unpackHalf2x16(q.w)) * xv[2u * j + 1u];
        }
        acc[r][v] += hsum(s);
#elif WTYPE_Q8_0
        // Bytes biased to unsigned (b + 128): sum(b x) = 256 S1 - 384 Sx.
        const uint blk = rows[r] * (p.ncols >> 5) + step;
        const float s1 = dot4(wt_u4[2u * blk] ^ uvec4(0x80808080u), 0, 8, 0) +
                         dot4(wt_u4[2u * blk + 1u] ^ uvec4(0x80808080u), 4, 8, 0);
        acc[r][v] += wt_d(blk) * (256.0 * s1 - 384.0 * hsum(sx));
#elif WTYPE_Q4_0
        // Low nibbles are columns 0..15, high 16..31: sum((q - 8) x) = 16 S1 - 24 Sx.
        const uint blk = rows[r] * (p.ncols >> 5) + step;
        const uvec4 q = wt_u4[blk];
        acc[r][v] += wt_d(blk) * (16.0 * (dot4(q, 0, 4, 0) + dot4(q, 4, 4, 4)) - 24.0 * hsum(sx));
#elif WTYPE_Q4_K || WTYPE_Q5_K
        // Chunk c (64 columns) of the block: quant parts 2c and 2c + 1 hold
        // sub-block 2c in their low nibbles, 2c + 1 in their high ones.
        // value = d sc q - dmin m: a 2^B (S1 - Sx) - dmin m Sx per sub-block.
        const uint c = step & 3u;
        const uint base = (rows[r] * (p.ncols >> 8) + (step >> 2)) * KQ_BLOCK_U4;
        const vec2 dm = unpackHalf2x16(hdr[r].x);
        const vec4 sm = vec4(wt_scale_min_k4(hdr[r], c));
#if WTYPE_Q4_K
        const uvec4 q0 = wt_u4[base + 1u + 2u * c], q1 = wt_u4[base + 2u + 2u * c];
        const float lo = dot4(q0, 0, 4, 0) + dot4(q1, 4, 4, 0);
        const float hi = dot4(q0, 8, 4, 4) + dot4(q1, 12, 4, 4);
        const float F = 16.0;
#else
        // The fifth bits: qh bytes i (part 2c) and 16 + i (part 2c + 1), bits 2c and 2c + 1.
        const uvec4 q0 = wt_u4[base + 3u + 2u * c], q1 = wt_u4[base + 4u + 2u * c];
        const uvec4 h0 = wt_u4[base + 1u] >> (2u * c), h1 = wt_u4[base + 2u] >> (2u * c);
        const uvec4 M = uvec4(0x0F0F0F0Fu), H = uvec4(0x01010101u);
        const float lo = dot4((q0 & M) | ((h0 & H) << 4), 0, 5, 0) + dot4((q1 & M) | ((h1 & H) << 4), 4, 5, 0);
        const float hi = dot4(((q0 >> 4) & M) | (((h0 >> 1) & H) << 4), 8, 5, 0) +
                         dot4(((q1 >> 4) & M) | (((h1 >> 1) & H) << 4), 12, 5, 0);
        const float F = 32.0;
#endif
        const float sxlo = sx.x + sx.y, sxhi = sx.z + sx.w;
        acc[r][v] += F * dm.x * (sm.x * (lo - sxlo) + sm.y * (hi - sxhi)) - dm.y * (sm.z * sxlo + sm.w * sxhi);
#elif WTYPE_Q6_K
        // Step g = 2n + h of the block: ql parts 4n + h and 4n + h + 2 and qh
        // part 2n + h give 16-column spans k at 128n + 16h + 32k (low
        // nibbles, then high) with qh bits 2k and scales 8n + h + 2k.
        // value = d sc (q - 32): d sc (64 S1 - 96 Sx) per span.
        const uint g = step & 3u, n = g >> 1, h = g & 1u;
        const uint base = (rows[r] * (p.ncols >> 8) + (step >> 2)) * 13u;
        const uvec4 qa = wt_u4[base + 4u * n + h], qb = wt_u4[base + 4u * n + h + 2u];
        const uvec4 qh = wt_u4[base + 8u + 2u * n + h];
        const uvec4 M = uvec4(0x0F0F0F0Fu), H = uvec4(0x03030303u);
        const vec4 s1 = vec4(dot4((qa & M) | ((qh & H) << 4), 0, 6, 0),
                             dot4((qb & M) | (((qh >> 2) & H) << 4), 4, 6, 0),
                             dot4(((qa >> 4) & M) | (((qh >> 4) & H) << 4), 8, 6, 0),
                             dot4(((qb >> 4) & M) | (((qh >> 6) & H) << 4), 12, 6, 0));
        const uint w0 = hdr[r][2u * n], w1 = hdr[r][2u * n + 1u];
        const vec4 sc = vec4(wt_sbyte(w0, h), wt_sbyte(w0, h + 2u), wt_sbyte(w1, h), wt_sbyte(w1, h + 2u));
        acc[r][v] += dsc[r] * dot(sc, 64.0 * s1 - 96.0 * sx);
#endif
    }
}

void main() {
    // SwiGLU pairs: a lane's first H rows are gate rows, the next H their up rows.
    const bool pair = TUPLES;
    const uint H = pair ? NUM_ROWS / TUPLE : NUM_ROWS;
    const uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    // No early return for the 2D grid's overhang (its rows are clamped and
    // never stored): it would make llvmpipe mask every lane operation after
    // it. The norm counts those workgroups too.
    const uint row0 = wg * BLOCK_SIZE * H + gl_LocalInvocationID.x;
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++) {
        // A partial last group recomputes the last row and never stores it.
        const uint lr = min(row0 + (r % H) * BLOCK_SIZE, p.nrows - 1u);
        rows[r] = pair ? tuple_row(lr, r / H) : lr;
        [[unroll]] for (uint v = 0; v < NV; v++)
            acc[r][v] = 0.0;
    }

#if NORM
    mv_norm_begin();
#endif
    const uint n_steps = p.ncols / STEP_COLS;
    for (uint step = 0; step < n_steps; step++) {
        if ((step & (256u / STEP_COLS - 1u)) == 0u)
            block_begin(step * STEP_COLS / 256u);
        [[unroll]] for (uint v = 0; v < NV; v++)
            step_rows(step, v, load_x(v, step));
    }
    // Constant bounds and indices only: acc stays in registers.
    [[unroll]] for (uint r = 0; r < NUM_ROWS; r++)
        if (r < H && row0 + r * BLOCK_SIZE < p.nrows)
            [[unroll]] for (uint v = 0; v < NV; v++) {
                const uint i = v * p.y_stride + p.y_offset + row0 + r * BLOCK_SIZE;
                if (pair) {
                    vec4 t = vec4(0.0);
                    [[unroll]] for (uint k = 0; k < TUPLE; k++)
                        t[k] = acc[(r + k * (NUM_ROWS / TUPLE)) % NUM_ROWS][v];
#if QKV_ROPE
                    store_qkv(row0 + r * BLOCK_SIZE, v, t);
#else
                    y[i] = t.x / (1.0 + exp(-t.x)) * t.y;   // silu as swiglu.comp writes it
#endif
                } else {
                    const float val = p.accumulate != 0u ? acc[r][v] + y[i] : acc[r][v];
                    y[i] = val;
#if NORM
                    mv_norm_add(v, val);
#endif
                }
            }
#if NORM
    mv_norm_finish_lane(wg, gl_LocalInvocationID.x);
#endif
}
