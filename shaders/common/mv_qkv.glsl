// The Q/K/V epilogue of the fused q | k | v projection (QKV_ROPE=1 builds of
// mul_mv.comp and mul_mv_rows.comp; GpuMatvecQkv in daemon/gpu/ops-weights.h):
// what the bias add, RoPE and the KV-cache store did after it, in the
// projection's own dispatch. The kernel works on quads of rows, chosen so
// that each holds both RoPE partners of its rotated elements and whole
// F16 pairs of the caches:
//   - normal ordering, and every pass-through or v quad: elements
//     4u .. 4u + 3 of a head, pairs (4u, 4u + 1) and (4u + 2, 4u + 3);
//   - NeoX, the first n_rot / 4 quads of a q or k head: elements 2u, 2u + 1,
//     2u + n_rot/2, 2u + 1 + n_rot/2, rotated as (2u, 2u + n_rot/2) and
//     (2u + 1, 2u + 1 + n_rot/2), stored as (2u, 2u + 1) and the other two.
// q is rotated and stored into y; k rotated and v as they are go to the
// caches at the vector's position (a position outside [0, n_ctx) is not
// stored), as rope_kv_store.comp does, with the same float operations.
//
// Needs, before the include: the y buffer and push constants y_stride,
// y_offset, k_row, v_row, n_q, n_kv, head_dim, n_rot, n_ctx, theta_scale,
// freq_scale, has_factors, has_bias, neox.

layout(binding = 7, std430) readonly buffer QkvPos { int qkv_pos[]; };
layout(binding = 8, std430) writeonly buffer QkvKc { uint qkv_kc[]; };
layout(binding = 9, std430) writeonly buffer QkvVc { uint qkv_vc[]; };
layout(binding = 10, std430) readonly buffer QkvF { float qkv_inv_factor[]; };     // read only with has_factors
layout(binding = 11, std430) readonly buffer QkvB { float qkv_bias[]; };           // read only with has_bias

#include "rope.glsl"

// Quad P's section (0 q, 1 k, 2 v), the first row of its head, and its
// element offsets in the head; rotated: whether its elements are RoPE's
// NeoX pairs (0, 2) and (1, 3) rather than (0, 1) and (2, 3).
void qkv_quad(uint P, out uint sec, out uint head_row, out uvec4 e, out bool neox_pairs) {
    const uint nq = p.n_q / 4u, nk = p.n_kv / 4u, per_head = p.head_dim / 4u;
    uint U = P, base = 0u;
    sec = 0u;
    if (P >= nq + nk) {
        sec = 2u;
        U = P - nq - nk;
        base = p.v_row;
    } else if (P >= nq) {
        sec = 1u;
        U = P - nq;
        base = p.k_row;
    }
    const uint u = U % per_head;
    head_row = base + (U / per_head) * p.head_dim;
    neox_pairs = p.neox != 0u && sec < 2u && u < p.n_rot / 4u;
    if (neox_pairs)
        e = uvec4(2u * u, 2u * u + 1u, 2u * u + p.n_rot / 2u, 2u * u + 1u + p.n_rot / 2u);
    else if (p.neox != 0u && sec < 2u)
        e = uvec4(p.n_rot + 4u * (u - p.n_rot / 4u)) + uvec4(0u, 1u, 2u, 3u);
    else
        e = uvec4(4u * u) + uvec4(0u, 1u, 2u, 3u);
}

// Row k of quad P.
uint qkv_row(uint P, uint k) {
    uint sec, head_row;
    uvec4 e;
    bool np;
    qkv_quad(P, sec, head_row, e, np);
    return head_row + e[k];
}

// (x0, x1) rotated as RoPE pair j at position fpos.
vec2 qkv_rotate(float x0, float x1, uint j, float fpos) {
    float f = 1.0;
    if (p.has_factors != 0u)    // a branch, not a select: the buffer may be a stand-in
        f = qkv_inv_factor[j];
    const vec2 cs = rope_cs(fpos, p.theta_scale, j, f);
    return vec2(x0 * cs.x - x1 * cs.y, x0 * cs.y + x1 * cs.x);
}

// Quad P of vector v from its four rows' totals a.
void store_qkv(uint P, uint v, vec4 a) {
    uint sec, head_row;
    uvec4 e;
    bool neox_pairs;
    qkv_quad(P, sec, head_row, e, neox_pairs);
    const int ipos = qkv_pos[v];
    if (p.has_bias != 0u)
        [[unroll]] for (uint k = 0; k < 4u; k++)
            a[k] += qkv_bias[head_row + e[k]];
    if (sec < 2u) {
        const precise float fpos = float(ipos) * p.freq_scale;
        if (neox_pairs) {
            const vec2 r0 = qkv_rotate(a.x, a.z, e.x, fpos), r1 = qkv_rotate(a.y, a.w, e.y, fpos);
            a = vec4(r0.x, r1.x, r0.y, r1.y);
        } else if (p.neox == 0u) {
            if (e.x / 2u < p.n_rot / 2u)
                a.xy = qkv_rotate(a.x, a.y, e.x / 2u, fpos);
            if (e.z / 2u < p.n_rot / 2u)
                a.zw = qkv_rotate(a.z, a.w, e.z / 2u, fpos);
        }
        if (sec == 0u) {
            const uint i = v * p.y_stride + p.y_offset + head_row;
            [[unroll]] for (uint k = 0; k < 4u; k++)
                y[i + e[k]] = a[k];
            return;
        }
    }
    const uint at = uint(ipos);         // negative: huge, not stored
    if (at >= p.n_ctx)
        return;
    const uint half_dim = p.head_dim / 2u;
    const uint g = (head_row - (sec == 1u ? p.k_row : p.v_row)) / p.head_dim;
    const uint dst = (g * p.n_ctx + at) * half_dim;
    const uint w0 = packHalf2x16(a.xy), w1 = packHalf2x16(a.zw);
    if (sec == 1u) {
        qkv_kc[dst + e.x / 2u] = w0;
        qkv_kc[dst + e.z / 2u] = w1;
    } else {
        qkv_vc[dst + e.x / 2u] = w0;
        qkv_vc[dst + e.z / 2u] = w1;
    }
}
