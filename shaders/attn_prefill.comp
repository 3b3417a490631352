#version 450
#extension GL_EXT_control_flow_attributes : enable
// Causal attention for a batch of query rows (prefill), flash-attention
// style. A workgroup takes BR query rows of one kv head, where a row is a
// (token, query head of that kv group) pair: packing the group's heads into
// the rows lets every K/V tile loaded into shared memory serve all of them.
// It walks the keys in blocks of BC with a running max and sum (online
// softmax), so memory does not grow with the sequence.
//
// T = WG / BR invocations share a row. Per key block:
//   1. the block's K and V go to shared memory, 16 bytes (8 F16) a load;
//   2. each invocation scores BC / T keys of its row against Q in shared;
//   3. each invocation reads its row's BC scores back, so the row max and
//      the exponentials need no cross-invocation reduction (a few redundant
//      exp2 per invocation instead of a reduction and its barriers), and
//      accumulates P V into the 8-column chunks of the output it owns.
// All shared traffic is 16 bytes wide: the inner loops are bound by FMAs,
// not by shared-memory instructions. With no reduction there is no subgroup
// variant of this kernel.

#define ATTN_PREFILL
#include "attn_common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 3) const uint D = 128;     // head_dim, a multiple of 8
layout(constant_id = 4) const uint BR = 16;     // query rows per workgroup
layout(constant_id = 5) const uint BC = 32;     // keys per block, a multiple of 4 and of T

const uint D4 = D / 8;                  // 8-element chunks of a row (a uvec4 of F16 pairs)
const uint T = WG / BR;                 // invocations per query row
const uint KPT = BC / T;                // keys scored per invocation
const uint NPT = (D4 + T - 1) / T;      // output chunks per invocation
// Row strides padded by 16 bytes: the T invocations of a row read T
// different key rows at the same column, which would otherwise share banks.
const uint QSS = 2 * D4 + 1;            // vec4
const uint KSS = D4 + 1;                // uvec4
const uint SSS = BC / 4 + 1;            // vec4

layout(binding = 0, std430) readonly buffer Qb { float q[]; };
layout(binding = 1, std430) readonly buffer Kb { uvec4 k_cache[]; };
layout(binding = 2, std430) readonly buffer Vb { uvec4 v_cache[]; };
layout(binding = 3, std430) writeonly buffer Ob { vec4 out4[]; };

shared vec4 Qs[BR * QSS];
shared uvec4 Ks[BC * KSS];
shared uvec4 Vs[BC * D4];
shared vec4 Ss[BR * SSS];

vec4 lo4(uvec4 w) { return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y)); }
vec4 hi4(uvec4 w) { return vec4(unpackHalf2x16(w.z), unpackHalf2x16(w.w)); }

void main() {
    const uint tid = gl_LocalInvocationIndex;
    // Later tiles see more keys: start them first so they do not finish last.
    const uint tile = gl_NumWorkGroups.x - 1 - gl_WorkGroupID.x;
    const uint g = gl_WorkGroupID.y;
    const uint G = p.n_group;
    const uint R = p.n_tokens * G;
    const uint r0 = tile * BR;

    const float qscale = p.scale * LOG2E;
    for (uint i = tid; i < BR * 2 * D4; i += WG) {
        uint r = i / (2 * D4), c = i % (2 * D4), row = r0 + r;
        vec4 qv = vec4(0);
        if (row < R) {
            uint base = (row / G) * p.q_stride + (g * G + row % G) * D + 4 * c;
            qv = vec4(q[base], q[base + 1], q[base + 2], q[base + 3]) * qscale;
        }
        Qs[r * QSS + c] = qv;
    }

    const uint r = tid / T, l = tid % T;
    const uint row = r0 + r;
    const uint t = min(row / G, p.n_tokens - 1);
    const uint lim = p.pos0 + t;                        // last key this row sees
    const uint kv_end = p.pos0 + min((r0 + BR - 1) / G, p.n_tokens - 1) + 1;
    const uint kv_base = g * p.n_ctx * D4;

    float m = NEG_INIT, lsum = 0;
    vec4 o[2 * NPT];
    [[unroll]] for (uint i = 0; i < 2 * NPT; i++)
        o[i] = vec4(0);

    for (uint kb = 0; kb < kv_end; kb += BC) {
        barrier();      // Qs is written; the last block's Ks/Vs/Ss are consumed
        // A fixed trip count, so the loads can all be issued before the stores.
        [[unroll]] for (uint it = 0; it < (BC * D4 + WG - 1) / WG; it++) {
            uint i = tid + it * WG;
            if (i >= BC * D4)
                break;
            uint j = i / D4, c = i % D4;
            // Past kv_end: zeros, never the cache (which may hold anything there).
            uvec4 kw = uvec4(0), vw = uvec4(0);
            if (kb + j < kv_end) {
                uint a = kv_base + (kb + j) * D4 + c;
                kw = k_cache[a];
                vw = v_cache[a];
            }
            Ks[j * KSS + c] = kw;
            Vs[j * D4 + c] = vw;
        }
        barrier();

        float s[KPT];
        [[unroll]] for (uint i = 0; i < KPT; i++)
            s[i] = 0;
        for (uint c = 0; c < D4; c++) {
            vec4 qa = Qs[r * QSS + 2 * c], qb = Qs[r * QSS + 2 * c + 1];
            [[unroll]] for (uint i = 0; i < KPT; i++) {
                uvec4 kw = Ks[(l + i * T) * KSS + c];
                s[i] += dot(qa, lo4(kw)) + dot(qb, hi4(kw));
            }
        }
        // Keys past the row's diagonal get exp2(NEG_MASK - m) = 0 below.
        [[unroll]] for (uint i = 0; i < KPT; i++) {
            uint j = l + i * T;
            Ss[r * SSS + j / 4][j % 4] = kb + j <= lim ? s[i] : NEG_MASK;
        }
        barrier();

        // Groups of 4 keys up to the row's diagonal; the masked rest of the last group weighs 0.
        const uint nj4 = lim >= kb ? (min(BC, lim - kb + 1) + 3) / 4 : 0;
        float mx = m;
        for (uint j4 = 0; j4 < nj4; j4++) {
            vec4 s4 = Ss[r * SSS + j4];
            mx = max(mx, max(max(s4.x, s4.y), max(s4.z, s4.w)));
        }
        const float alpha = exp2(m - mx);
        m = mx;
        lsum *= alpha;
        [[unroll]] for (uint i = 0; i < 2 * NPT; i++)
            o[i] *= alpha;
        for (uint j4 = 0; j4 < nj4; j4++) {
            vec4 p4 = exp2(Ss[r * SSS + j4] - m);
            lsum += p4.x + p4.y + p4.z + p4.w;
            [[unroll]] for (uint u = 0; u < 4; u++) {
                uint j = 4 * j4 + u;
                [[unroll]] for (uint i = 0; i < NPT; i++) {
                    uint c = l + i * T;
                    if (c < D4) {
                        uvec4 vw = Vs[j * D4 + c];
                        o[2 * i] += p4[u] * lo4(vw);
                        o[2 * i + 1] += p4[u] * hi4(vw);
                    }
                }
            }
        }
    }

    if (row < R) {
        const uint ob = (t * p.n_head + g * G + row % G) * 2 * D4;
        const float inv = 1.0 / lsum;
        [[unroll]] for (uint i = 0; i < NPT; i++) {
            uint c = l + i * T;
            if (c < D4) {
                out4[ob + 2 * c] = o[2 * i] * inv;
                out4[ob + 2 * c + 1] = o[2 * i + 1] * inv;
            }
        }
    }
}
