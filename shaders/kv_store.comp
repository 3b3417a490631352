#version 450
// Stores this batch's K and V rows (F32 [n_tokens][n_head_kv][head_dim]) into
// the F16 caches ([n_head_kv][n_ctx][head_dim]) at positions pos0.., one F16
// pair per invocation: packed 32-bit writes, no 16-bit storage needed.

#define KV_STORE
#include "attn_common.glsl"

layout(local_size_x_id = 0) in;

layout(binding = 0, std430) readonly buffer Kn { float k_new[]; };
layout(binding = 1, std430) readonly buffer Vn { float v_new[]; };
layout(binding = 2, std430) writeonly buffer Kc { uint k_cache[]; };
layout(binding = 3, std430) writeonly buffer Vc { uint v_cache[]; };

void main() {
    const uint per_token = p.n_head_kv * p.half_dim;
    const uint total = p.n_tokens * per_token;
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < total; i += stride) {
        uint t = i / per_token, rem = i % per_token;
        uint g = rem / p.half_dim, pp = rem % p.half_dim;
        uint src = t * p.src_stride + 2 * rem;
        uint dst = (g * p.n_ctx + p.pos0 + t) * p.half_dim + pp;
        k_cache[dst] = packHalf2x16(vec2(k_new[src], k_new[src + 1]));
        v_cache[dst] = packHalf2x16(vec2(v_new[src], v_new[src + 1]));
    }
}
