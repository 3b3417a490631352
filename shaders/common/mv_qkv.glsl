// The Q/K/V epilogue of the fused q | k | v projection (QKV_ROPE=1 builds of
// mul_mv.comp and mul_mv_rows.comp; GpuMatvecQkv in daemon/gpu/ops-weights.h):
// what the bias add, RoPE and the KV-cache store did after it, in the
// projection's own dispatch. The kernel works on row pairs (2e, 2e + 1) of
// q, then k, then v: with RoPE's normal ordering these are the rotated
// pairs, and also the F16 pairs the caches hold, so both rows' totals are
// at hand in one invocation. q is rotated and stored into y; k rotated and
// v as they are go to the caches at the vector's position (a position
// outside [0, n_ctx) is not stored), as rope_kv_store.comp does, with the
// same float operations.
//
// Needs, before the include: the y buffer and push constants y_stride,
// y_offset, k_row, v_row, n_q, n_kv, head_dim, n_rot, n_ctx, theta_scale,
// freq_scale, has_factors, has_bias.

layout(binding = 7, std430) readonly buffer QkvPos { int qkv_pos[]; };
layout(binding = 8, std430) writeonly buffer QkvKc { uint qkv_kc[]; };
layout(binding = 9, std430) writeonly buffer QkvVc { uint qkv_vc[]; };
layout(binding = 10, std430) readonly buffer QkvF { float qkv_inv_factor[]; };     // read only with has_factors
layout(binding = 11, std430) readonly buffer QkvB { float qkv_bias[]; };           // read only with has_bias

#include "rope.glsl"

// The first row of pair P: q's pairs, then k's from k_row, then v's from v_row.
uint qkv_row(uint P) {
    const uint nq = p.n_q / 2u, nk = p.n_kv / 2u;
    if (P < nq)
        return 2u * P;
    if (P < nq + nk)
        return p.k_row + 2u * (P - nq);
    return p.v_row + 2u * (P - nq - nk);
}

// Pair P of vector v from its two rows' totals a and b.
void store_qkv(uint P, uint v, float a, float b) {
    const uint row = qkv_row(P);
    const uint nq = p.n_q / 2u, nk = p.n_kv / 2u, half_dim = p.head_dim / 2u;
    const int ipos = qkv_pos[v];
    if (p.has_bias != 0u) {
        a += qkv_bias[row];
        b += qkv_bias[row + 1u];
    }
    if (P < nq + nk) {
        const uint j = (P < nq ? P : P - nq) % half_dim;
        if (j < p.n_rot / 2u) {
            float f = 1.0;
            if (p.has_factors != 0u)    // a branch, not a select: the buffer may be a stand-in
                f = qkv_inv_factor[j];
            const precise float fpos = float(ipos) * p.freq_scale;
            const vec2 cs = rope_cs(fpos, p.theta_scale, j, f);
            const float ra = a * cs.x - b * cs.y, rb = a * cs.y + b * cs.x;
            a = ra;
            b = rb;
        }
        if (P < nq) {
            const uint i = v * p.y_stride + p.y_offset + row;
            y[i] = a;
            y[i + 1u] = b;
            return;
        }
    }
    const uint at = uint(ipos);         // negative: huge, not stored
    if (at >= p.n_ctx)
        return;
    const uint e = P - nq - (P < nq + nk ? 0u : nk);
    const uint dst = ((e / half_dim) * p.n_ctx + at) * half_dim + e % half_dim;
    if (P < nq + nk)
        qkv_kc[dst] = packHalf2x16(vec2(a, b));
    else
        qkv_vc[dst] = packHalf2x16(vec2(a, b));
}
