#version 450
#extension GL_EXT_control_flow_attributes : enable
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#endif
// Flash-decoding in one dispatch: attention of one query row (n_tokens == 1)
// over the cache split into chunks. Workgroup (chunk, kv head g, head block
// hb) handles the chunk's keys for GB query heads of kv head g, so each K/V
// element read from memory serves GB heads, and writes per head the chunk's
// max m (log2 units), sum l and unnormalised output O to the scratch buffer.
// The last workgroup of (g, hb) to finish merges the chunks into the output
// rows (merge() below), so no second dispatch and no barrier between the two
// halves: at small batch a decode step is bound by dispatches and barriers.
// When only chunk 0 holds keys, its workgroup writes the output rows itself.
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
// Which workgroup is last: the "threadfence reduction" pattern. Each of the
// n_used workgroups of (g, hb) whose chunk holds keys writes its partials
// to the coherent scratch, makes them available (memoryBarrierBuffer, then
// barrier so every invocation's are), and bumps the counter of its (g, hb)
// once; the one that reads n_used - 1 saw every other workgroup's
// increment, hence (after its own memoryBarrierBuffer) their partials. It
// also puts the counter back to 0, because a decode recording is replayed
// for every token and every layer shares the scratch: the counters start
// each dispatch at zero, which the host guarantees once by zeroing them
// when it creates the scratch. Nothing waits on another workgroup, so this
// holds whatever order or concurrency the device runs workgroups in.
//
// POS_BUFFER=1 takes the query's position from an int32 buffer (the one
// RoPE reads) instead of the push constants, so one recording serves every
// position: n_kv = pos[0] + 1, and the chunk length follows from n_kv the way
// the host picks it for the push-constant path (whole sub-blocks, spread
// over the n_chunks workgroups the host dispatched for the largest n_kv).
// Chunks that start at or past n_kv hold no key: their workgroups return at
// once, neither writing nor counting, and the merge reads only the n_used
// chunks below n_kv (every workgroup computes the same n_used).

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
const uint DPT = (D + WG - 1) / WG;             // output columns per invocation in the merge

#define RED_SLOTS GB
#define RED_WG WG
#include "attn_reduce.glsl"

layout(binding = 0, std430) readonly buffer Qb { float q[]; };
layout(binding = 1, std430) readonly buffer Kb { uvec4 k_cache[]; };
layout(binding = 2, std430) readonly buffer Vb { uint v_cache[]; };
// Scratch, in 32-bit words: the completion counters [n_head] (one per (kv
// head, head block) in use, at most n_head), then the partials as float bits:
// O [n_head][n_chunks][D], then (m, l) pairs [n_head][n_chunks]. Coherent:
// the merging workgroup reads what the others wrote in this dispatch.
layout(binding = 3, std430) coherent buffer Sb { uint sc[]; };
layout(binding = 4, std430) writeonly buffer Ob { float dst[]; };
#if POS_BUFFER
layout(binding = 5, std430) readonly buffer Pos { int pos[]; };
#endif

shared vec4 qs[GB * 2 * D4];
shared uvec4 Ks[WG * KSS];
shared float Ps[GB * WG];
shared vec2 os[GB * WG];
shared bool last_sh;

// Where head's partials for chunk c start in sc[], and its (m, l) pair.
uint o_index(uint head, uint c) { return p.n_head + (head * p.n_chunks + c) * D; }
uint ml_index(uint head, uint c) { return p.n_head + p.n_head * p.n_chunks * D + (head * p.n_chunks + c) * 2; }

// Attention of the GB heads h0.. (nh of them valid) over keys k0..k1-1 of kv
// head g: the partials of chunk `chunk`, or when it is the only chunk with
// keys (single) the output.
void attend(uint chunk, uint g, uint h0, uint nh, uint k0, uint k1, bool single) {
    const uint tid = gl_LocalInvocationIndex;
    const uint kv_base = g * p.n_ctx * D2, kv_base4 = g * p.n_ctx * D4;

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
        [[unroll]] for (uint h = 0; h < GB; h++) {
            if (h >= nh)
                break;
            const uint head = h0 + h;
            // The only chunk: it holds every key (chunk 0 always has one), so l > 0.
            const float inv = single ? 1.0 / red_get_sum(h) : 1.0;
            [[unroll]] for (uint i = 0; i < PPT; i++) {
                uint pair = pb + i * P_SPAN;
                if (pair < D2) {
                    if (single) {
                        dst[head * D + 2 * pair] = o[h][i].x * inv;
                        dst[head * D + 2 * pair + 1] = o[h][i].y * inv;
                    } else {
                        uint a = o_index(head, chunk) + 2 * pair;
                        sc[a] = floatBitsToUint(o[h][i].x);
                        sc[a + 1] = floatBitsToUint(o[h][i].y);
                    }
                }
            }
            if (tid == 0 && !single) {
                sc[ml_index(head, chunk)] = floatBitsToUint(m[h]);
                sc[ml_index(head, chunk) + 1] = floatBitsToUint(red_get_sum(h));
            }
        }
    }
}

// The merge: chunk c holds its max m_c (log2 units), its sum l_c and its
// unnormalised output O_c; the answer is sum_c 2^(m_c - M) O_c /
// sum_c 2^(m_c - M) l_c with M = max_c m_c, over the n_used chunks that hold
// a key (the others wrote nothing: their slots hold whatever an earlier
// dispatch left). A chunk with keys has l_c >= 1 (its largest score
// contributes 2^0), so M is finite and L > 0; a chunk with l_c == 0 would
// still get weight 0 and its O not be read, so nothing in it turns into a
// NaN.
// Invocation i owns output columns i, i + WG, ... of every head (coalesced
// O reads) and finds M, the weights and L itself from the (m, l) pairs,
// which every invocation reads at the same address (broadcast loads): no
// shared memory and no barrier (on lavapipe one barrier here cost more
// than the rest of the merge), for a few exp2 per chunk on a GPU. The heads
// are the inner loop, so each step over the chunks issues GB independent
// loads: the chain of dependent steps is n_used long whatever GB is.
void merge(uint h0, uint nh, uint n_used) {
    const uint tid = gl_LocalInvocationIndex;
    if (tid >= D)
        return;     // no column here; no barrier follows

    float M[GB], L[GB], acc[GB][DPT];
    [[unroll]] for (uint h = 0; h < GB; h++) {
        M[h] = NEG_INIT;
        L[h] = 0;
        [[unroll]] for (uint i = 0; i < DPT; i++)
            acc[h][i] = 0;
    }
    for (uint c = 0; c < n_used; c++)
        [[unroll]] for (uint h = 0; h < GB; h++)
            if (h < nh)
                M[h] = max(M[h], uintBitsToFloat(sc[ml_index(h0 + h, c)]));
    for (uint c = 0; c < n_used; c++) {
        [[unroll]] for (uint h = 0; h < GB; h++) {
            if (h >= nh)
                break;
            const uint a = ml_index(h0 + h, c);
            const float l = uintBitsToFloat(sc[a + 1]);
            if (l > 0.0) {
                const float w = exp2(uintBitsToFloat(sc[a]) - M[h]);
                const uint base = o_index(h0 + h, c);
                L[h] += w * l;
                [[unroll]] for (uint i = 0; i < DPT; i++) {
                    const uint d = tid + i * WG;
                    if (d < D)
                        acc[h][i] += w * uintBitsToFloat(sc[base + d]);
                }
            }
        }
    }
    [[unroll]] for (uint h = 0; h < GB; h++) {
        if (h >= nh)
            break;
        const float inv = 1.0 / L[h];
        [[unroll]] for (uint i = 0; i < DPT; i++) {
            const uint d = tid + i * WG;
            if (d < D)
                dst[(h0 + h) * D + d] = acc[h][i] * inv;
        }
    }
}

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint chunk = gl_WorkGroupID.x;
    const uint G = p.n_group;
    const uint n_hb = (G + GB - 1) / GB;
    const uint slot = gl_WorkGroupID.y;                 // the counter of (g, hb)
    const uint g = slot / n_hb, hb = slot % n_hb;
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
    // Chunks holding a key; the workgroups past them have nothing to do.
    const uint n_used = min((n_kv + clen - 1) / clen, p.n_chunks);

    if (chunk >= n_used)
        return;
    attend(chunk, g, h0, nh, k0, k1, n_used == 1);
    if (n_used == 1)
        return;

    memoryBarrierBuffer();  // this invocation's partials, before the count
    barrier();              // every invocation's, before invocation 0 counts
    if (tid == 0) {
        const bool last = atomicAdd(sc[slot], 1u) == n_used - 1;
        if (last)
            atomicExchange(sc[slot], 0u);
        last_sh = last;
    }
    barrier();
    if (!last_sh)
        return;
    memoryBarrierBuffer();  // the others' partials, after seeing their counts
    merge(h0, nh, n_used);
}
