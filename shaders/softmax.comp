#version 450
// Softmax over rows: out[r] = softmax(scale * x[r]), max subtracted.
// One workgroup per row. Each invocation keeps a running (max, sum of exp)
// over its elements (online softmax), so x is read twice, not three times:
// once for the statistics, once to write the result. out may be x.

layout(constant_id = 0) const uint BLOCK = 256;
layout(local_size_x_id = 0) in;

#include "ops-reduce.glsl"

layout(binding = 0, std430) readonly buffer X { float x[]; };
layout(binding = 1, std430) writeonly buffer O { float o[]; };

layout(push_constant) uniform Push {
    uint n_rows;
    uint n_cols;
    float scale;
    uint pad;
} p;

const float NEG_INF = -1.0 / 0.0;

void main() {
    const uint tid = gl_LocalInvocationID.x;
    for (uint row = gl_WorkGroupID.x; row < p.n_rows; row += gl_NumWorkGroups.x) {
        const uint base = row * p.n_cols;
        float m = NEG_INF, s = 0.0;
        uint i = tid;
        // Four elements per step: four loads in flight, one rescale check.
        for (; i + 3u * BLOCK < p.n_cols; i += 4u * BLOCK) {
            const float v0 = p.scale * x[base + i], v1 = p.scale * x[base + i + BLOCK];
            const float v2 = p.scale * x[base + i + 2u * BLOCK], v3 = p.scale * x[base + i + 3u * BLOCK];
            const float mx = max(max(v0, v1), max(v2, v3));
            if (mx > m) {
                s *= exp(m - mx);           // exp(-inf) = 0 the first time
                m = mx;
            }
            if (m != NEG_INF)               // else all were -inf: exp(NaN)
                s += exp(v0 - m) + exp(v1 - m) + exp(v2 - m) + exp(v3 - m);
        }
        for (; i < p.n_cols; i += BLOCK) {
            const float v = p.scale * x[base + i];
            if (v > m) {
                s *= exp(m - v);
                m = v;
            }
            if (m != NEG_INF)
                s += exp(v - m);
        }
        const float gm = wg_max(m);
        // Rescale to the row maximum; an invocation that saw nothing (or only
        // -inf) contributes 0 and must not compute exp(-inf - -inf).
        s = m == NEG_INF ? 0.0 : s * exp(m - gm);
        const float inv = 1.0 / wg_sum(s);
        for (i = tid; i < p.n_cols; i += BLOCK)
            o[base + i] = exp(p.scale * x[base + i] - gm) * inv;
    }
}
