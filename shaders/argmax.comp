#version 450
// Argmax per row: out[r] = index of the largest x[r][i], ties to the lowest
// index. Greedy sampling over vocabularies of 128k-256k entries, usually a
// single row: one large workgroup streams the row with vec4 loads (scalar
// only for the unaligned head and the tail), so many loads are in flight.

layout(constant_id = 0) const uint BLOCK = 1024;
layout(local_size_x_id = 0) in;

#define REDUCE_ARGMAX
#include "ops-reduce.glsl"

// The same buffer seen as floats and as vec4: binding offsets are 256-byte
// aligned, so x4[k] is x[4k .. 4k+3].
layout(binding = 0, std430) readonly buffer X { float x[]; };
layout(binding = 0, std430) readonly buffer X4 { vec4 x4[]; };
layout(binding = 1, std430) writeonly buffer O { uint o[]; };

layout(push_constant) uniform Push {
    uint n_rows;
    uint n_cols;
} p;

float bv;
uint bi;

void take(float v, uint i) {
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

void main() {
    const uint tid = gl_LocalInvocationID.x;
    for (uint row = gl_WorkGroupID.x; row < p.n_rows; row += gl_NumWorkGroups.x) {
        const uint base = row * p.n_cols;
        // [base, base+head) scalar, then n4 vec4s, then the tail scalar.
        const uint head = min((4u - (base & 3u)) & 3u, p.n_cols);
        const uint n4 = (p.n_cols - head) / 4u;
        const uint tail = head + n4 * 4u;
        bv = -1.0 / 0.0;
        bi = 0xffffffffu;
        if (tid < head)
            take(x[base + tid], tid);
        const uint b4 = (base + head) / 4u;
        // Four vec4 loads issued before any is compared: one workgroup has to
        // keep enough bytes in flight to stream a 600 KB row quickly.
        uint k = tid;
        for (; k + 3u * BLOCK < n4; k += 4u * BLOCK) {
            vec4 v[4];
            for (uint u = 0u; u < 4u; u++)
                v[u] = x4[b4 + k + u * BLOCK];
            for (uint u = 0u; u < 4u; u++)
                take4(v[u], head + 4u * (k + u * BLOCK));
        }
        for (; k < n4; k += BLOCK)
            take4(x4[b4 + k], head + 4u * k);
        if (tail + tid < p.n_cols)
            take(x[base + tail + tid], tail + tid);
        uint r = wg_argmax(bv, bi);
        if (tid == 0)
            o[row] = r;
    }
}
