#version 450
#extension GL_EXT_control_flow_attributes : enable
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#endif
// First half of flash-decoding: attention of one query row (n_tokens == 1)
// over a chunk of the cache. Workgroup (chunk, kv head g, head block hb)
// handles the chunk's keys for GB query heads of kv head g, so each K/V
// element read from memory serves GB heads, and writes per head the chunk's
// max m (log2 units), sum l and unnormalised output O to the scratch buffer
// for attn_combine.
//
// The chunk is walked in sub-blocks of WG keys, invocation i owning key i:
//   1. K of the sub-block is staged in shared memory (coalesced 16-byte
//      loads, DC4 8-element chunks of each key at a time to bound the tile
//      for large head_dim); invocation i scores its key against all GB
//      queries;
//   2. a workgroup max per head (subgroup or shared-tree reduction) updates
//      the running max; each invocation writes its key's probabilities;
//   3. invocations split as NSLICE slices x P_SPAN pairs accumulate P V,
//      reading V rows straight from memory (consecutive invocations read
//      consecutive pairs: coalesced).
// The running sum stays per invocation (its own keys) and is reduced once.
//
// POS_BUFFER=1 takes the query's position from an int32 buffer (the one
// RoPE reads) instead of the push constants, so one recording serves every
// position: n_kv = pos[0] + 1, and the chunk length follows from n_kv the way
// the host picks it for the push-constant path (whole sub-blocks, spread
// over the n_chunks workgroups the host dispatched for the largest n_kv).
// Chunks that start at or past n_kv hold no key: they write an empty partial
// (max NEG_INIT, sum 0, output 0) that attn_combine skips.

#define ATTN_DECODE
#include "attn_common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;     // keys per sub-block too; a power of two
layout(constant_id = 3) const uint D = 128;     // head_dim, a multiple of 8
layout(constant_id = 4) const uint GB = 4;      // query heads per workgroup

const uint D2 = D / 2;                          // F16 pairs of a row
const uint D4 = D / 8;                          // 8-element chunks of a row (a uvec4 of pairs)
const uint DC4 = D4 < 16 ? D4 : 16;             // chunks of each key staged per pass
const uint KSS = DC4 + 1;                       // padded: invocations read different keys' same column
const uint P_SPAN = D2 < WG ? D2 : WG;          // pairs covered by one slice
const uint NSLICE = WG / P_SPAN;                // slices splitting the keys in P V
const uint PPT = (D2 + P_SPAN - 1) / P_SPAN;    // pairs per invocation
const uint VB = 4;                              // V loads issued ahead of their use

#define RED_SLOTS GB
#define RED_WG WG
#include "attn_reduce.glsl"

layout(binding = 0, std430) readonly buffer Qb { float q[]; };
layout(binding = 1, std430) readonly buffer Kb { uvec4 k_cache[]; };
layout(binding = 2, std430) readonly buffer Vb { uint v_cache[]; };
// Scratch: O partials [n_head][n_chunks][D], then (m, l) pairs [n_head][n_chunks].
layout(binding = 3, std430) writeonly buffer Sb { float part[]; };
#if POS_BUFFER
layout(binding = 4, std430) readonly buffer Pos { int pos[]; };
#endif

shared vec4 qs[GB * 2 * D4];
shared uvec4 Ks[WG * KSS];
shared float Ps[GB * WG];
shared vec2 os[GB * WG];

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint chunk = gl_WorkGroupID.x;
    const uint G = p.n_group;
    const uint n_hb = (G + GB - 1) / GB;
    const uint g = gl_WorkGroupID.y / n_hb, hb = gl_WorkGroupID.y % n_hb;
    const uint h0 = g * G + hb * GB;                    // first query head here
    const uint nh = min(GB, G - hb * GB);               // valid heads in the block
#if POS_BUFFER
    // Clamped to [1, n_ctx]: a bad position must not make the kernel read past the cache.
    const uint n_kv = uint(clamp(pos[0], 0, int(p.n_ctx) - 1)) + 1;
    const uint clen = WG * ((((n_kv + WG - 1) / WG) + p.n_chunks - 1) / p.n_chunks);
#else
    const uint n_kv = p.n_kv, clen = p.chunk;
#endif
    const uint k0 = chunk * clen, k1 = min(k0 + clen, n_kv);
    const uint kv_base = g * p.n_ctx * D2, kv_base4 = g * p.n_ctx * D4;

    if (k0 >= n_kv) {
        // The whole workgroup leaves here (k0 is uniform), before any barrier.
        const uint n = p.n_chunks;
        for (uint i = tid; i < nh * D; i += WG)
            part[((h0 + i / D) * n + chunk) * D + i % D] = 0.0;
        if (tid < nh) {
            const uint a = p.n_head * n * D + ((h0 + tid) * n + chunk) * 2;
            part[a] = NEG_INIT;
            part[a + 1] = 0.0;
        }
        return;
    }

    const float qscale = p.scale * LOG2E;
    for (uint i = tid; i < GB * 2 * D4; i += WG) {
        uint h = i / (2 * D4), c = i % (2 * D4);
        vec4 qv = vec4(0);
        if (h < nh) {
            uint base = (h0 + h) * D + 4 * c;
            qv = vec4(q[base], q[base + 1], q[base + 2], q[base + 3]) * qscale;
        }
        qs[i] = qv;
    }

    const uint sl = tid / P_SPAN, pb = tid % P_SPAN;
    const bool in_slice = sl < NSLICE;

    float m[GB], lp[GB];
    vec2 o[GB][PPT];
    [[unroll]] for (uint h = 0; h < GB; h++) {
        m[h] = NEG_INIT;
        lp[h] = 0;
        [[unroll]] for (uint i = 0; i < PPT; i++)
            o[h][i] = vec2(0);
    }

    for (uint kb = k0; kb < k1; kb += WG) {
        const bool valid = kb + tid < k1;
        float s[GB];
        [[unroll]] for (uint h = 0; h < GB; h++)
            s[h] = 0;
        for (uint dc = 0; dc < D4; dc += DC4) {
            barrier();  // qs written; Ks, Ps and red_sh of the last pass consumed
            // Past k1: zeros, never the cache (which may hold anything there).
            [[unroll]] for (uint it = 0; it < DC4; it++) {
                uint i = tid + it * WG;
                uint j = i / DC4, c = i % DC4;
                uvec4 kw = uvec4(0);
                if (kb + j < k1 && dc + c < D4)
                    kw = k_cache[kv_base4 + (kb + j) * D4 + dc + c];
                Ks[j * KSS + c] = kw;
            }
            barrier();
            const uint nc = min(DC4, D4 - dc);
            for (uint c = 0; c < nc; c++) {
                uvec4 kw = Ks[tid * KSS + c];
                vec4 klo = vec4(unpackHalf2x16(kw.x), unpackHalf2x16(kw.y));
                vec4 khi = vec4(unpackHalf2x16(kw.z), unpackHalf2x16(kw.w));
                [[unroll]] for (uint h = 0; h < GB; h++)
                    s[h] += dot(qs[h * 2 * D4 + 2 * (dc + c)], klo) + dot(qs[h * 2 * D4 + 2 * (dc + c) + 1], khi);
            }
        }

        [[unroll]] for (uint h = 0; h < GB; h++)
            red_put_max(h, valid ? s[h] : NEG_MASK);
        barrier();
        red_run_max();
        [[unroll]] for (uint h = 0; h < GB; h++) {
            float mn = max(m[h], red_get_max(h));
            float alpha = exp2(m[h] - mn);
            m[h] = mn;
            float pr = valid ? exp2(s[h] - mn) : 0.0;
            lp[h] = lp[h] * alpha + pr;
            Ps[h * WG + tid] = pr;
            [[unroll]] for (uint i = 0; i < PPT; i++)
                o[h][i] *= alpha;
        }
        barrier();

        const uint nj = min(WG, k1 - kb);
        if (in_slice) {
            for (uint j0 = sl; j0 < nj; j0 += NSLICE * VB) {
                uint vr[VB][PPT];
                [[unroll]] for (uint u = 0; u < VB; u++) {
                    uint j = j0 + u * NSLICE;
                    [[unroll]] for (uint i = 0; i < PPT; i++) {
                        uint pair = pb + i * P_SPAN;
                        vr[u][i] = j < nj && pair < D2 ? v_cache[kv_base + (kb + j) * D2 + pair] : 0u;
                    }
                }
                [[unroll]] for (uint u = 0; u < VB; u++) {
                    uint j = j0 + u * NSLICE;
                    if (j < nj) {
                        [[unroll]] for (uint i = 0; i < PPT; i++) {
                            vec2 vv = unpackHalf2x16(vr[u][i]);
                            [[unroll]] for (uint h = 0; h < GB; h++)
                                o[h][i] += Ps[h * WG + j] * vv;
                        }
                    }
                }
            }
        }
    }

    barrier();  // Ps and red_sh of the last sub-block consumed
    [[unroll]] for (uint h = 0; h < GB; h++)
        red_put_sum(h, lp[h]);
    barrier();
    red_run_sum();

    if (NSLICE > 1) {
        if (in_slice)
            [[unroll]] for (uint h = 0; h < GB; h++)
                os[(sl * GB + h) * P_SPAN + pb] = o[h][0];
        barrier();
        if (sl == 0)
            [[unroll]] for (uint h = 0; h < GB; h++)
                for (uint s2 = 1; s2 < NSLICE; s2++)
                    o[h][0] += os[(s2 * GB + h) * P_SPAN + pb];
    }

    if (sl == 0) {
        const uint n = p.n_chunks;
        const uint ml = p.n_head * n * D;
        [[unroll]] for (uint h = 0; h < GB; h++) {
            if (h >= nh)
                break;
            const uint head = h0 + h;
            [[unroll]] for (uint i = 0; i < PPT; i++) {
                uint pair = pb + i * P_SPAN;
                if (pair < D2) {
                    uint a = (head * n + chunk) * D + 2 * pair;
                    part[a] = o[h][i].x;
                    part[a + 1] = o[h][i].y;
                }
            }
            if (tid == 0) {
                part[ml + (head * n + chunk) * 2] = m[h];
                part[ml + (head * n + chunk) * 2 + 1] = red_get_sum(h);
            }
        }
    }
}
