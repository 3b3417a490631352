#version 450
// Decode attention for CPU devices (lavapipe): the query row of one token
// over the F16 cache, one invocation per query head walking all the keys
// with a running max. llvmpipe runs a workgroup's invocations as SIMD lanes;
// attn_decode's shared-memory tiles and barriers make it run them as
// coroutines, which costs more there than the arithmetic (8192 keys, 32/8
// heads of 128: 65 ms). Here lanes are heads, and nothing is shared.
// Bindings and push constants are attn_decode's (the scratch is not used).

#extension GL_EXT_control_flow_attributes : enable

#define ATTN_DECODE
#include "attn_common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 8;
layout(constant_id = 3) const uint D = 128;     // head_dim, a multiple of 8

const uint D2 = D / 2;

layout(binding = 0, std430) readonly buffer Qb { float q[]; };
layout(binding = 1, std430) readonly buffer Kb { uint k_cache[]; };
layout(binding = 2, std430) readonly buffer Vb { uint v_cache[]; };
layout(binding = 4, std430) writeonly buffer Ob { float dst[]; };
#if POS_BUFFER
layout(binding = 5, std430) readonly buffer Pos { int pos[]; };
#endif

vec2 qv[D2];
vec2 o[D2];

void main() {
    // Lanes past the last head compute head n_head - 1 again and store nothing:
    // no early return, which would make llvmpipe mask every lane operation.
    const uint lane = gl_GlobalInvocationID.x;
    const uint h = min(lane, p.n_head - 1u);
    const uint g = h / p.n_group;
#if POS_BUFFER
    const uint n_kv = min(uint(pos[0]) + 1u, p.n_ctx);
#else
    const uint n_kv = p.n_kv;
#endif

    const float qscale = p.scale * LOG2E;
    [[unroll]] for (uint i = 0; i < D2; i++) {
        qv[i] = vec2(q[h * D + 2u * i], q[h * D + 2u * i + 1u]) * qscale;
        o[i] = vec2(0.0);
    }
    float m = NEG_INIT, l = 0.0;
    for (uint j = 0; j < n_kv; j++) {
        const uint base = (g * p.n_ctx + j) * D2;
        float s = 0.0;
        [[unroll]] for (uint i = 0; i < D2; i++)
            s += dot(qv[i], unpackHalf2x16(k_cache[base + i]));
        const float m_new = max(m, s);
        const float corr = exp2(m - m_new), pj = exp2(s - m_new);
        l = l * corr + pj;
        [[unroll]] for (uint i = 0; i < D2; i++)
            o[i] = o[i] * corr + pj * unpackHalf2x16(v_cache[base + i]);
        m = m_new;
    }
    if (lane < p.n_head) {
        const float inv = 1.0 / l;
        [[unroll]] for (uint i = 0; i < D2; i++) {
            dst[h * D + 2u * i] = o[i].x * inv;
            dst[h * D + 2u * i + 1u] = o[i].y * inv;
        }
    }
}
