#version 450
// Rotary position embedding on [n_tokens][n_heads][head_dim] (rows of
// x_stride / o_stride floats per token), positions from an int32 buffer.
// ROPE_NEOX=0 rotates pairs (2i, 2i+1) (llama), ROPE_NEOX=1 pairs
// (i, i + n_rot/2) (gpt-neox, qwen2); dims from n_rot up pass through.
// One invocation per pair; out may be x (then copy_rest is 0).
//
// The angle, with care for large positions (the rule the C reference
// follows exactly):
//   inv_freq = theta_scale^i by repeated squaring, theta_scale =
//              freq_base^(-2/n_rot) rounded to float on the host;
//   theta    = ((float(pos) * freq_scale) * inv_freq) * inv_factor[i],
//              the last factor only with has_factors: the Llama 3.1+
//              frequency factors (rope_freqs.weight, which llama.cpp
//              divides theta by) inverted and rounded to float on the host;
// only correctly rounded multiplications, so GPU and CPU agree on theta to
// the bit (exp2/pow on GPUs are allowed errors of several ulps, which at
// position 30000 is already a visible fraction of a radian). theta is then
// reduced to [-pi, pi] by Cody-Waite before sin/cos, whose accuracy Vulkan
// only bounds inside that range.

layout(constant_id = 0) const uint BLOCK = 256;
layout(local_size_x_id = 0) in;

layout(binding = 0, std430) readonly buffer X { float x[]; };
layout(binding = 1, std430) readonly buffer P { int pos[]; };
layout(binding = 2, std430) writeonly buffer O { float o[]; };
// n_rot/2 inverse frequency factors; read only with has_factors (otherwise
// some other buffer is bound here).
layout(binding = 3, std430) readonly buffer F { float inv_factor[]; };

layout(push_constant) uniform Push {
    uint n_tokens;
    uint n_heads;
    uint head_dim;
    uint n_rot;
    uint x_stride;
    uint o_stride;
    float theta_scale;
    float freq_scale;
    uint copy_rest;
    uint has_factors;
} p;

#include "rope.glsl"

// A branch, not ?: (which may become a select that loads anyway): without
// factors the buffer bound here may be shorter than n_rot/2 floats.
float pair_inv_factor(uint j) {
    if (p.has_factors == 0u)
        return 1.0;
    return inv_factor[j];
}

void main() {
    const uint half_dim = p.head_dim / 2u;
    const uint half_rot = p.n_rot / 2u;
    const uint n_slots = p.n_heads * half_dim;
    for (uint t = gl_WorkGroupID.y; t < p.n_tokens; t += gl_NumWorkGroups.y) {
        const precise float fpos = float(pos[t]) * p.freq_scale;
        for (uint s = gl_GlobalInvocationID.x; s < n_slots; s += gl_NumWorkGroups.x * BLOCK) {
            const uint h = s / half_dim;
            const uint j = s - h * half_dim;
            const uint xb = t * p.x_stride + h * p.head_dim;
            const uint ob = t * p.o_stride + h * p.head_dim;
            if (j < half_rot) {
#if ROPE_NEOX
                const uint i0 = j, i1 = j + half_rot;
#else
                const uint i0 = 2u * j, i1 = 2u * j + 1u;
#endif
                const float a = reduce_angle(rope_theta(fpos, p.theta_scale, j, pair_inv_factor(j)));
                const float c = cos(a), sn = sin(a);
                const float x0 = x[xb + i0], x1 = x[xb + i1];
                o[ob + i0] = x0 * c - x1 * sn;
                o[ob + i1] = x0 * sn + x1 * c;
            } else if (p.copy_rest != 0u) {
                o[ob + 2u * j] = x[xb + 2u * j];
                o[ob + 2u * j + 1u] = x[xb + 2u * j + 1u];
            }
        }
    }
}
