#version 450
// Argmax per row: out[r] = index of the largest x[r][i], ties to the lowest
// index, +inf as FLT_MAX, NaN never. Greedy sampling over vocabularies of
// 128k-256k entries, usually a single row: a workgroup streams the row with
// vec4 loads (scalar only for the unaligned head and the tail), so many
// loads are in flight.
//
// One row can also be split (p.n_split > 1, gpu_op_argmax_split()): one
// workgroup streaming a 600 KB row takes ~20 us on a large GPU, latency
// more than bandwidth. Workgroup g then scans columns [g seg, (g + 1) seg),
// writes its (value, index) to the scratch and counts itself done on an
// atomic counter; the last to arrive merges the n_split results (the
// scratch is coherent, memoryBarrierBuffer() between the writes and the
// count and after it, as in mv_norm.glsl) and resets the counter.

layout(constant_id = 0) const uint BLOCK = 1024;
layout(local_size_x_id = 0) in;

#define REDUCE_ARGMAX
#include "ops-reduce.glsl"

// The same buffer seen as floats and as vec4: binding offsets are 256-byte
// aligned, so x4[k] is x[4k .. 4k+3].
layout(binding = 0, std430) readonly buffer X { float x[]; };
layout(binding = 0, std430) readonly buffer X4 { vec4 x4[]; };
layout(binding = 1, std430) writeonly buffer O { uint o[]; };
// Split rows: [0] the counter, then (value bits, index) per workgroup.
layout(binding = 2, std430) coherent buffer S { uint part[]; };

layout(push_constant) uniform Push {
    uint n_rows;
    uint n_cols;
    uint n_split;       // workgroups sharing row 0; 1: a workgroup per row
    uint seg;           // columns per workgroup when split, a multiple of 4
} p;

float bv;
uint bi;
shared bool is_last;

void take(float v, uint i) {
    // +inf counts as FLT_MAX, as in the host sampler (daemon/model/sampler.c):
    // the two paths must pick the same token.
    if (v == 1.0 / 0.0)
        v = 3.40282347e38;
    if (am_better(v, i, bv, bi)) {
        bv = v;
        bi = i;
    }
}

void take4(vec4 v, uint i) {
    take(v.x, i);
    take(v.y, i + 1u);
    take(v.z, i + 2u);
    take(v.w, i + 3u);
}

// This invocation's best of x[base + c0 .. base + c1), indices from base.
void scan(uint base, uint c0, uint c1, uint tid) {
    const uint s = base + c0, n = c1 - c0;
    // [s, s+head) scalar, then n4 vec4s, then the tail scalar.
    const uint head = min((4u - (s & 3u)) & 3u, n);
    const uint n4 = (n - head) / 4u;
    const uint tail = head + n4 * 4u;
    bv = -1.0 / 0.0;
    bi = 0xffffffffu;
    if (tid < head)
        take(x[s + tid], c0 + tid);
    const uint b4 = (s + head) / 4u;
    // Four vec4 loads issued before any is compared: one workgroup has to
    // keep enough bytes in flight to stream a 600 KB row quickly.
    uint k = tid;
    for (; k + 3u * BLOCK < n4; k += 4u * BLOCK) {
        vec4 v[4];
        for (uint u = 0u; u < 4u; u++)
            v[u] = x4[b4 + k + u * BLOCK];
        for (uint u = 0u; u < 4u; u++)
            take4(v[u], c0 + head + 4u * (k + u * BLOCK));
    }
    for (; k < n4; k += BLOCK)
        take4(x4[b4 + k], c0 + head + 4u * k);
    if (tail + tid < n)
        take(x[s + tail + tid], c0 + tail + tid);
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    if (p.n_split <= 1u) {
        for (uint row = gl_WorkGroupID.x; row < p.n_rows; row += gl_NumWorkGroups.x) {
            scan(row * p.n_cols, 0u, p.n_cols, tid);
            uint r = wg_argmax(bv, bi);
            if (tid == 0)
                o[row] = r;
        }
        return;
    }

    const uint g = gl_WorkGroupID.x;
    const uint c0 = min(g * p.seg, p.n_cols), c1 = min(c0 + p.seg, p.n_cols);
    scan(0u, c0, c1, tid);
    const uint r = wg_argmax(bv, bi);
    if (tid == 0u) {
        // An all-NaN segment keeps the empty slot (-inf, 0xffffffff).
        const float v = r != 0xffffffffu ? x[r] : -1.0 / 0.0;
        part[1u + 2u * g] = floatBitsToUint(v);
        part[2u + 2u * g] = r;
        memoryBarrierBuffer();
        is_last = atomicAdd(part[0], 1u) == p.n_split - 1u;
    }
    barrier();
    if (!is_last)
        return;
    memoryBarrierBuffer();
    bv = -1.0 / 0.0;
    bi = 0xffffffffu;
    for (uint i = tid; i < p.n_split; i += BLOCK)
        take(uintBitsToFloat(part[1u + 2u * i]), part[2u + 2u * i]);
    const uint best = wg_argmax(bv, bi);
    if (tid == 0u) {
        o[0] = best;
        atomicExchange(part[0], 0u);
    }
}
