#version 450
// Stores this batch's K and V rows (F32 [n_tokens][n_head_kv][head_dim]) into
// the F16 caches ([n_head_kv][n_ctx][head_dim]), one F16 pair per invocation:
// packed 32-bit writes, no 16-bit storage needed.
//
// POS_BUFFER=0: token t goes to position pos0 + t (push constant).
// POS_BUFFER=1: token t goes to position pos[t] (int32, the buffer RoPE
// reads), so one recording serves every position; a position outside
// [0, n_ctx) is skipped rather than written out of bounds.

#define KV_STORE
#include "attn_common.glsl"

layout(local_size_x_id = 0) in;

layout(binding = 0, std430) readonly buffer Kn { float k_new[]; };
layout(binding = 1, std430) readonly buffer Vn { float v_new[]; };
layout(binding = 2, std430) writeonly buffer Kc { uint k_cache[]; };
layout(binding = 3, std430) writeonly buffer Vc { uint v_cache[]; };
#if POS_BUFFER
layout(binding = 4, std430) readonly buffer Pos { int pos[]; };
#endif

void main() {
    const uint per_token = p.n_head_kv * p.half_dim;
    const uint total = p.n_tokens * per_token;
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < total; i += stride) {
        uint t = i / per_token, rem = i % per_token;
        uint g = rem / p.half_dim, pp = rem % p.half_dim;
        uint src = t * p.src_stride + 2 * rem;
#if POS_BUFFER
        const uint at = uint(pos[t]);   // negative: huge, skipped below
        if (at >= p.n_ctx)
            continue;
#else
        const uint at = p.pos0 + t;
#endif
        uint dst = (g * p.n_ctx + at) * p.half_dim + pp;
        k_cache[dst] = packHalf2x16(vec2(k_new[src], k_new[src + 1]));
        v_cache[dst] = packHalf2x16(vec2(v_new[src], v_new[src + 1]));
    }
}
