#version 450
// SwiGLU: out[r][i] = silu(gate[r][i]) * up[r][i], silu(g) = g / (1 + exp(-g)).
// Rows of n_cols with a row stride per operand, so gate and up may be the two
// halves of one fused [gate | up] projection. out may be gate or up.

layout(constant_id = 0) const uint BLOCK = 256;
layout(local_size_x_id = 0) in;

layout(binding = 0, std430) readonly buffer G { float g[]; };
layout(binding = 1, std430) readonly buffer U { float u[]; };
layout(binding = 2, std430) writeonly buffer O { float o[]; };

layout(push_constant) uniform Push {
    uint n_rows;
    uint n_cols;
    uint g_stride;
    uint u_stride;
    uint o_stride;
} p;

void main() {
    for (uint r = gl_WorkGroupID.y; r < p.n_rows; r += gl_NumWorkGroups.y)
        for (uint i = gl_GlobalInvocationID.x; i < p.n_cols; i += gl_NumWorkGroups.x * BLOCK) {
            const float v = g[r * p.g_stride + i];
            // exp(-v) overflows to inf for v < -88: v / inf = -0, the right limit.
            o[r * p.o_stride + i] = v / (1.0 + exp(-v)) * u[r * p.u_stride + i];
        }
}
