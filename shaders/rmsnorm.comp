#version 450
// RMSNorm over rows: out[r][i] = x[r][i] / sqrt(mean(x[r]^2) + eps) * w[i].
// One workgroup per row (rows strided over the grid). HAS_WEIGHT=0 drops w.
// out may be x: every element is read, then written, by the same invocation.

layout(constant_id = 0) const uint BLOCK = 256;
layout(local_size_x_id = 0) in;

#include "ops-reduce.glsl"

layout(binding = 0, std430) readonly buffer X { float x[]; };
#if HAS_WEIGHT
layout(binding = 1, std430) readonly buffer W { float w[]; };
layout(binding = 2, std430) writeonly buffer O { float o[]; };
#else
layout(binding = 1, std430) writeonly buffer O { float o[]; };
#endif

layout(push_constant) uniform Push {
    uint n_rows;
    uint n_cols;
    float eps;
    uint pad;
} p;

void main() {
    const uint tid = gl_LocalInvocationID.x;
    for (uint row = gl_WorkGroupID.x; row < p.n_rows; row += gl_NumWorkGroups.x) {
        const uint base = row * p.n_cols;
        float ss = 0.0;
        uint i = tid;
        // Four independent loads per step keep more of them in flight: a
        // decode step normalises a single row, so latency is what counts.
        for (; i + 3u * BLOCK < p.n_cols; i += 4u * BLOCK) {
            const float a = x[base + i], b = x[base + i + BLOCK];
            const float c = x[base + i + 2u * BLOCK], d = x[base + i + 3u * BLOCK];
            ss += a * a + b * b + c * c + d * d;
        }
        for (; i < p.n_cols; i += BLOCK) {
            const float v = x[base + i];
            ss += v * v;
        }
        ss = wg_sum(ss);
        const float scale = inversesqrt(ss / float(p.n_cols) + p.eps);
        for (i = tid; i < p.n_cols; i += BLOCK) {
#if HAS_WEIGHT
            o[base + i] = x[base + i] * scale * w[i];
#else
            o[base + i] = x[base + i] * scale;
#endif
        }
    }
}
