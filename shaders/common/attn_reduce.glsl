// Reductions of RED_SLOTS values per invocation across the whole workgroup,
// all slots in one round of barriers. The including shader defines
// RED_SLOTS and RED_WG (the workgroup size, a power of two) as constants.
//
// Use:  red_put_max(slot, v) for every slot;  barrier();  red_run_max();
//       then red_get_max(slot) is the workgroup's result, in every invocation.
// A barrier must separate red_get_* from the next red_put_*.
//
// USE_SUBGROUP=1 reduces within each subgroup first and leaves one value per
// subgroup (gl_NumSubgroups of them, whatever the subgroup size); the
// fallback is a shared-memory tree.

shared float red_sh[RED_SLOTS * RED_WG];

#if USE_SUBGROUP

void red_put_max(uint slot, float v) {
    v = subgroupMax(v);
    if (subgroupElect())
        red_sh[slot * RED_WG + gl_SubgroupID] = v;
}
void red_put_sum(uint slot, float v) {
    v = subgroupAdd(v);
    if (subgroupElect())
        red_sh[slot * RED_WG + gl_SubgroupID] = v;
}
void red_run_max() {}
void red_run_sum() {}
float red_get_max(uint slot) {
    float r = red_sh[slot * RED_WG];
    for (uint i = 1; i < gl_NumSubgroups; i++)
        r = max(r, red_sh[slot * RED_WG + i]);
    return r;
}
float red_get_sum(uint slot) {
    float r = red_sh[slot * RED_WG];
    for (uint i = 1; i < gl_NumSubgroups; i++)
        r += red_sh[slot * RED_WG + i];
    return r;
}

#else

void red_put_max(uint slot, float v) { red_sh[slot * RED_WG + gl_LocalInvocationIndex] = v; }
void red_put_sum(uint slot, float v) { red_sh[slot * RED_WG + gl_LocalInvocationIndex] = v; }
void red_run_max() {
    const uint tid = gl_LocalInvocationIndex;
    for (uint s = RED_WG / 2; s > 0; s >>= 1) {
        if (tid < s)
            for (uint k = 0; k < RED_SLOTS; k++)
                red_sh[k * RED_WG + tid] = max(red_sh[k * RED_WG + tid], red_sh[k * RED_WG + tid + s]);
        barrier();
    }
}
void red_run_sum() {
    const uint tid = gl_LocalInvocationIndex;
    for (uint s = RED_WG / 2; s > 0; s >>= 1) {
        if (tid < s)
            for (uint k = 0; k < RED_SLOTS; k++)
                red_sh[k * RED_WG + tid] += red_sh[k * RED_WG + tid + s];
        barrier();
    }
}
float red_get_max(uint slot) { return red_sh[slot * RED_WG]; }
float red_get_sum(uint slot) { return red_sh[slot * RED_WG]; }

#endif
