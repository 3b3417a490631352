#version 450
// RoPE and kv_store in one dispatch, for decode: rotates q in place (as
// rope.comp with out = x) and stores k, rotated, and v as F16 pairs into the
// caches at position pos[t] (as kv_store.comp with POS_BUFFER=1; a position
// outside [0, n_ctx) is not stored). The rotated k is only ever read from
// the cache, so it is not written back. One dispatch and barrier fewer per
// layer than rope then kv_store, which on lavapipe costs about as much as
// the work itself.
//
// One invocation per F16 pair of the token: q pairs (rotated pair j, as in
// rope.comp), then k and v pairs (elements 2i, 2i + 1 of a head, as in
// kv_store.comp). ROPE_NEOX=1 rotates pairs (i, i + n_rot/2), so an
// invocation computes each of its two k elements from its own rotated pair.

#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 0) const uint BLOCK = 256;
layout(local_size_x_id = 0) in;

layout(binding = 0, std430) buffer Q { float q[]; };
layout(binding = 1, std430) readonly buffer P { int pos[]; };
layout(binding = 2, std430) readonly buffer Kn { float k_new[]; };
layout(binding = 3, std430) readonly buffer Vn { float v_new[]; };
layout(binding = 4, std430) writeonly buffer Kc { uint k_cache[]; };
layout(binding = 5, std430) writeonly buffer Vc { uint v_cache[]; };
// As rope.comp's: read only with has_factors.
layout(binding = 6, std430) readonly buffer F { float inv_factor[]; };

// Mirrored by GpuRopeKvStorePush in daemon/gpu/ops-attention.h.
layout(push_constant) uniform Push {
    uint n_tokens;
    uint n_head;
    uint n_head_kv;
    uint head_dim;
    uint n_rot;
    uint q_stride;      // floats from one token to the next in q
    uint kv_stride;     // ... in k_new and v_new
    uint n_ctx;
    float theta_scale;
    float freq_scale;
    uint has_factors;   // inv_factor holds the Llama 3.1+ frequency factors, inverted
} p;

#include "rope.glsl"

// cos and sin of rotated pair j's angle. A branch rather than ?: (which may
// become a select that loads anyway): without factors the buffer bound at 6
// may be shorter than n_rot/2 floats.
vec2 pair_cs(float fpos, uint j) {
    float f = 1.0;
    if (p.has_factors != 0u)
        f = inv_factor[j];
    return rope_cs(fpos, p.theta_scale, j, f);
}

// Element e of a k head (kb: its first float) after rotation, for ROPE_NEOX.
float k_neox(uint kb, uint e, float fpos) {
    const uint half_rot = p.n_rot / 2u;
    if (e >= p.n_rot)
        return k_new[kb + e];
    const uint j = e < half_rot ? e : e - half_rot;
    const vec2 cs = pair_cs(fpos, j);
    const float x0 = k_new[kb + j], x1 = k_new[kb + j + half_rot];
    return e < half_rot ? x0 * cs.x - x1 * cs.y : x0 * cs.y + x1 * cs.x;
}

void main() {
    const uint half_dim = p.head_dim / 2u;
    const uint half_rot = p.n_rot / 2u;
    const uint q_slots = p.n_head * half_dim, kv_slots = p.n_head_kv * half_dim;
    for (uint t = gl_WorkGroupID.y; t < p.n_tokens; t += gl_NumWorkGroups.y) {
        const precise float fpos = float(pos[t]) * p.freq_scale;
        const uint at = uint(pos[t]);   // negative: huge, not stored
        for (uint s = gl_GlobalInvocationID.x; s < q_slots + 2u * kv_slots; s += gl_NumWorkGroups.x * BLOCK) {
            if (s < q_slots) {
                const uint h = s / half_dim, j = s - h * half_dim;
                if (j >= half_rot)
                    continue;   // in place: the pass-through dims are already there
#if ROPE_NEOX
                const uint i0 = j, i1 = j + half_rot;
#else
                const uint i0 = 2u * j, i1 = 2u * j + 1u;
#endif
                const uint b = t * p.q_stride + h * p.head_dim;
                const vec2 cs = pair_cs(fpos, j);
                const float x0 = q[b + i0], x1 = q[b + i1];
                q[b + i0] = x0 * cs.x - x1 * cs.y;
                q[b + i1] = x0 * cs.y + x1 * cs.x;
                continue;
            }
            if (at >= p.n_ctx)
                continue;
            const bool is_v = s >= q_slots + kv_slots;
            const uint rem = s - q_slots - (is_v ? kv_slots : 0u);
            const uint g = rem / half_dim, pp = rem - g * half_dim;
            const uint dst = (g * p.n_ctx + at) * half_dim + pp;
            const uint src = t * p.kv_stride + 2u * rem;
            if (is_v) {
                v_cache[dst] = packHalf2x16(vec2(v_new[src], v_new[src + 1u]));
                continue;
            }
#if ROPE_NEOX
            const uint kb = t * p.kv_stride + g * p.head_dim;
            k_cache[dst] = packHalf2x16(vec2(k_neox(kb, 2u * pp, fpos), k_neox(kb, 2u * pp + 1u, fpos)));
#else
            vec2 kv = vec2(k_new[src], k_new[src + 1u]);
            if (pp < half_rot) {
                const vec2 cs = pair_cs(fpos, pp);
                kv = vec2(kv.x * cs.x - kv.y * cs.y, kv.x * cs.y + kv.y * cs.x);
            }
            k_cache[dst] = packHalf2x16(kv);
#endif
        }
    }
}
