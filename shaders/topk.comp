#version 450
#extension GL_EXT_control_flow_attributes : require
// Top-k of one row (gpu_op_topk_split()): the candidates for temperature
// sampling, chosen on the device so that the host reads a few KB instead of
// a row of 128k-256k logits. The same dispatch copies the few logits the
// host needs besides (gather: the repetition-penalty tokens).
//
// Order. Every entry gets a unique 64-bit key, larger is better:
//   hi = the float's bits made order-preserving as an unsigned integer,
//        after +inf -> FLT_MAX and -0 -> +0; 0 for NaN and -inf, which are
//        never selected (every other value maps above 0)
//   lo = ~index, so that of equal values the lower index ranks first.
// That is the host sampler's order (sanitised value descending, then index
// ascending), so the best k keys are exactly its best k entries, ties at
// the k-th value included.
//
// Selection is a radix select on the keys, 8 bits a pass from the top: a
// 256-bin histogram (shared atomics) of the entries that match the bytes
// chosen so far, a suffix scan over the bins, and the bin that holds the
// k-th best key gives the next byte. Entries in higher bins are in; once
// the chosen bin holds exactly as many entries as are still wanted, all of
// it is in and the select stops. Keys are unique, so that happens by the
// 8th pass at the latest (random logits need 2 to 4). The result is a
// threshold, the chosen bytes with zeros below: the best k are the entries
// whose key is at or above it. Each invocation keeps the entries of its
// first CACHED rounds in registers, loaded together before the first pass
// (one memory latency instead of one per round, and none in later passes):
// all of a segment's, and the merge's unless k is large. Rounds past those
// are read again in every pass.
//
// The row is split as in argmax.comp: workgroup g selects the best k of
// columns [g seg, (g + 1) seg), appends them to a list in the scratch (its
// place taken with an atomic add, so the list has no gaps) and counts
// itself done on an atomic counter; the last one to arrive runs the same
// select over the list (the best k of the row are among the best k of
// each segment), writes out, gathers, and resets both counters. The
// scratch is coherent, with memoryBarrierBuffer() between the list stores
// and the count and after it, as in mv_norm.glsl.
//
// The suffix scan over the bins is two-level, 16 groups of 16 bins, rather
// than a Hillis-Steele tree: 2 barriers a pass instead of 9, and the group
// sums that every invocation reads are the same words (broadcasts).
//
// k and the gather list are read from a buffer, not push constants, so that
// a recorded command buffer runs with the values of each submission.

// One histogram bin per invocation. Vulkan only promises 128 invocations;
// gpu_op_topk_split() refuses devices with fewer than 256.
const uint NB = 256u;
layout(local_size_x = 256) in;
// The scan's groups of bins: NGRP of GRP.
const uint GRP = 16u, NGRP = NB / GRP;
// Rounds of entries kept in registers: a whole segment (TOPK_SPLIT_COLS in ops-basic.c is NB x
// CACHED), and the merge of 32 segments' best 128.
const uint CACHED = 16u;

// GPU_TOPK_MAX, GPU_TOPK_OUT_GATHER (ops-basic.h).
const uint KMAX = 256u;
const uint OUT_GATHER = 1u + 2u * KMAX;
// Scratch words: the counter of workgroups done, the counter of list entries, then the list.
const uint DONE = 0u, FILL = 1u, LIST = 2u;
const uint QNAN = 0x7fc00000u;

// x as bits: nothing is computed on the values, and the host gets them back
// unchanged, NaN payloads included.
layout(binding = 0, std430) readonly buffer X { uint x[]; };
layout(binding = 1, std430) readonly buffer P { uint k; uint n_gather; uint gather[KMAX]; } prm;
// [0] m, [1 + 2i] bits and [2 + 2i] index of candidate i, [OUT_GATHER + j] the gathered values.
layout(binding = 2, std430) writeonly buffer O { uint o[]; };
// [DONE], [FILL], then from LIST (bits, index) pairs: up to KMAX per workgroup.
layout(binding = 3, std430) coherent buffer S { uint part[]; };

layout(push_constant) uniform Push {
    uint n_cols;
    uint n_split;       // workgroups
    uint seg;           // columns per workgroup
    uint pad;
} p;

shared uint hist[2][NB];        // a pass's histogram and the next one's, cleared in advance
shared uint grp[NGRP];
shared uint pick_bin, pick_above;
shared uvec2 cand[KMAX];
shared uint n_cand;
shared uint list_at, list_n;
shared bool is_last;

// ---- the entries a select runs over ----
// src_n of them, NB a round: round r holds entry r * NB + tid for invocation tid. Entry i is
// x[src_c0 + i] for a segment, or the i-th of the scratch list for the merge (src_merge).
bool src_merge;
uint src_c0, src_n;

uint src_rounds() {
    return (src_n + NB - 1u) / NB;
}

// The entry as (bits, index), read from memory; false where there is none.
bool src_get(uint r, uint tid, out uvec2 e) {
    const uint i = r * NB + tid;
    if (i >= src_n)
        return false;
    if (src_merge)
        e = uvec2(part[LIST + 2u * i], part[LIST + 2u * i + 1u]);
    else
        e = uvec2(x[src_c0 + i], src_c0 + i);
    return true;
}

// Rounds 0 .. CACHED-1 of this invocation; NaN (never selected) where there is no entry.
uvec2 cache[CACHED];

void src_preload(uint tid) {
    [[unroll]] for (uint r = 0u; r < CACHED; r++) {
        uvec2 e;
        cache[r] = src_get(r, tid, e) ? e : uvec2(QNAN, 0u);
    }
}

// ---- keys ----
// The key of an entry (bits, index), as described at the top.
uvec2 key_of(uvec2 e) {
    uint u = e.x;
    if ((u & 0x7fffffffu) > 0x7f800000u || u == 0xff800000u)
        return uvec2(0u, ~e.y);                 // NaN, -inf
    if (u == 0x7f800000u)
        u = 0x7f7fffffu;                        // +inf ties with FLT_MAX
    if (u == 0x80000000u)
        u = 0u;                                 // -0 equals +0
    return uvec2((u & 0x80000000u) != 0u ? ~u : u | 0x80000000u, ~e.y);
}

bool key_ge(uvec2 a, uvec2 b) {
    return a.x > b.x || (a.x == b.x && a.y >= b.y);
}

// Selects every selectable entry: all keys but NaN's and -inf's are at least this.
const uvec2 ALL = uvec2(1u, 0u);

// One entry into the pass's histogram, if it matches the bytes chosen so far.
void count_entry(uvec2 e, uvec2 pfx, uvec2 mask, bool on_lo, uint shift, uint h) {
    const uvec2 key = key_of(e);
    if (key.x != 0u && (key & mask) == pfx)
        atomicAdd(hist[h][((on_lo ? key.y : key.x) >> shift) & 0xffu], 1u);
}

// One entry into cand, if its key is at or above thr.
void collect_entry(uvec2 e, uvec2 thr) {
    const uvec2 key = key_of(e);
    if (key.x == 0u || !key_ge(key, thr))
        return;
    const uint i = atomicAdd(n_cand, 1u);
    if (i < KMAX)   // always: thr admits at most k; but cand must not overflow whatever happens
        cand[i] = e;
}

// ---- radix select ----
// The threshold of the best `want` (>= 1) entries of the source. Called by the whole workgroup
// (it holds barriers); returns in uniform control flow.
uvec2 radix_select(uint want, uint tid) {
    uvec2 pfx = uvec2(0u), mask = uvec2(0u);
    const uint rounds = src_rounds();

    hist[0][tid] = 0u;
    barrier();
    for (uint pass = 0u; pass < 8u; pass++) {
        const bool on_lo = pass >= 4u;
        const uint shift = 24u - 8u * (pass & 3u), h = pass & 1u;

        // Unrolled over the registers (a constant index keeps them registers), then memory.
        [[unroll]] for (uint r = 0u; r < CACHED; r++)
            count_entry(cache[r], pfx, mask, on_lo, shift, h);
        for (uint r = CACHED; r < rounds; r++) {
            uvec2 e;
            if (src_get(r, tid, e))
                count_entry(e, pfx, mask, on_lo, shift, h);
        }
        barrier();
        // Everyone is done with the previous pass, whose histogram the next one reuses.
        hist[h ^ 1u][tid] = 0u;
        if (tid < NGRP) {
            uint t = 0u;
            for (uint b = tid * GRP; b < tid * GRP + GRP; b++)
                t += hist[h][b];
            grp[tid] = t;
        }
        barrier();

        // The matching entries in all bins, and in the bins above this invocation's.
        const uint mine = tid / GRP;
        uint total = 0u, above = 0u;
        for (uint j = 0u; j < NGRP; j++) {
            const uint t = grp[j];
            total += t;
            above += j > mine ? t : 0u;
        }
        for (uint b = tid + 1u; b < mine * GRP + GRP; b++)
            above += hist[h][b];
        // Fewer selectable entries than wanted: all of them.
        if (pass == 0u && total <= want)
            return ALL;

        // The bin of the want-th best: fewer than want above it, at least want from it up.
        if (above < want && want <= above + hist[h][tid]) {
            pick_bin = tid;
            pick_above = above;
        }
        barrier();
        // pick_* and hist[h] are not written again before everyone has passed the next pass's
        // first barrier.
        const uint b = pick_bin;
        want -= pick_above;
        if (on_lo) {
            pfx.y |= b << shift;
            mask.y |= 0xffu << shift;
        } else {
            pfx.x |= b << shift;
            mask.x |= 0xffu << shift;
        }
        if (hist[h][b] == want)
            break;
    }
    return pfx;
}

// The source's entries with a key at or above thr into cand, in no particular order. Returns how
// many.
uint collect(uvec2 thr, uint tid) {
    if (tid == 0u)
        n_cand = 0u;
    barrier();
    const uint rounds = src_rounds();
    [[unroll]] for (uint r = 0u; r < CACHED; r++)
        collect_entry(cache[r], thr);
    for (uint r = CACHED; r < rounds; r++) {
        uvec2 e;
        if (src_get(r, tid, e))
            collect_entry(e, thr);
    }
    barrier();
    return min(n_cand, KMAX);
}

// The best k of the source into cand; returns how many (fewer where fewer are selectable).
uint select_best(uint k, uint tid) {
    src_preload(tid);
    // A source of at most k entries needs no select.
    return collect(src_n > k ? radix_select(k, tid) : ALL, tid);
}

void main() {
    const uint tid = gl_LocalInvocationID.x, g = gl_WorkGroupID.x;
    const uint k = clamp(prm.k, 1u, KMAX);

    // This workgroup's segment, appended to the list.
    src_merge = false;
    src_c0 = min(g * p.seg, p.n_cols);
    src_n = min(p.seg, p.n_cols - src_c0);
    const uint n = select_best(k, tid);
    if (tid == 0u)
        list_at = atomicAdd(part[FILL], n);
    barrier();
    if (tid < n) {
        part[LIST + 2u * (list_at + tid)] = cand[tid].x;
        part[LIST + 2u * (list_at + tid) + 1u] = cand[tid].y;
    }
    memoryBarrierBuffer();      // this invocation's list stores, before the count
    barrier();
    if (tid == 0u)
        is_last = atomicAdd(part[DONE], 1u) == p.n_split - 1u;
    barrier();
    if (!is_last)
        return;
    memoryBarrierBuffer();

    // The last one: the best k of the list.
    if (tid == 0u)
        list_n = part[FILL];
    barrier();
    src_merge = true;
    src_n = list_n;
    const uint m = select_best(k, tid);
    if (tid == 0u)
        o[0] = m;
    if (tid < m) {
        o[1u + 2u * tid] = cand[tid].x;
        o[2u + 2u * tid] = cand[tid].y;
    }
    if (tid < min(prm.n_gather, KMAX)) {
        const uint i = prm.gather[tid];
        o[OUT_GATHER + tid] = i < p.n_cols ? x[i] : QNAN;
    }
    if (tid == 0u) {
        atomicExchange(part[FILL], 0u);
        atomicExchange(part[DONE], 0u);
    }
}
