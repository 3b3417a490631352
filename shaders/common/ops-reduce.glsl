// Workgroup-wide reductions for the row kernels (rmsnorm, softmax, argmax):
// one workgroup owns a row and every invocation needs the result.
//
// The includer declares, before including this file:
//   layout(constant_id = 0) const uint BLOCK = ...;   (a power of two)
//   layout(local_size_x_id = 0) in;
// and compiles with -DUSE_SUBGROUP=1 or 0.
//
// USE_SUBGROUP=1 reduces within each subgroup first and combines the
// per-subgroup partials through shared memory; it relies on nothing but the
// gl_Subgroup* built-ins, so it is correct for any subgroup size the driver
// picks (8 on lavapipe, 32 on NVIDIA, 32 or 64 on AMD, 8..32 on Intel), even
// one that varies between pipelines. USE_SUBGROUP=0 is a shared-memory tree,
// for devices without subgroup arithmetic (and for testing that path).
//
// Every function is called by all invocations of the workgroup (uniform
// control flow: they contain barriers), and ends with a barrier so the
// shared scratch may be reused by the next call.

#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

// Sized by the workgroup: an upper bound on the number of subgroups too.
shared float red_f[BLOCK];
#ifdef REDUCE_ARGMAX
shared uint red_u[BLOCK];
#endif

float wg_sum(float v) {
#if USE_SUBGROUP
    v = subgroupAdd(v);
    if (subgroupElect())
        red_f[gl_SubgroupID] = v;
    barrier();
    // Every subgroup sums the partials itself: no broadcast round needed.
    float t = 0.0;
    for (uint i = gl_SubgroupInvocationID; i < gl_NumSubgroups; i += gl_SubgroupSize)
        t += red_f[i];
    t = subgroupAdd(t);
    barrier();
    return t;
#else
    const uint tid = gl_LocalInvocationID.x;
    red_f[tid] = v;
    barrier();
    for (uint s = BLOCK / 2; s > 0; s >>= 1) {
        if (tid < s)
            red_f[tid] += red_f[tid + s];
        barrier();
    }
    float t = red_f[0];
    barrier();
    return t;
#endif
}

float wg_max(float v) {
#if USE_SUBGROUP
    v = subgroupMax(v);
    if (subgroupElect())
        red_f[gl_SubgroupID] = v;
    barrier();
    float t = -1.0 / 0.0;
    for (uint i = gl_SubgroupInvocationID; i < gl_NumSubgroups; i += gl_SubgroupSize)
        t = max(t, red_f[i]);
    t = subgroupMax(t);
    barrier();
    return t;
#else
    const uint tid = gl_LocalInvocationID.x;
    red_f[tid] = v;
    barrier();
    for (uint s = BLOCK / 2; s > 0; s >>= 1) {
        if (tid < s)
            red_f[tid] = max(red_f[tid], red_f[tid + s]);
        barrier();
    }
    float t = red_f[0];
    barrier();
    return t;
#endif
}

#ifdef REDUCE_ARGMAX
// (value, index) pairs: the larger value wins, ties go to the lower index.
// An empty slot is (-inf, 0xffffffff), so a row of -inf still yields its
// first index.
bool am_better(float v, uint i, float bv, uint bi) {
    return v > bv || (v == bv && i < bi);
}

uint wg_argmax(float v, uint idx) {
#if USE_SUBGROUP
    float m = subgroupMax(v);
    uint c = subgroupMin(v == m ? idx : 0xffffffffu);
    if (subgroupElect()) {
        red_f[gl_SubgroupID] = m;
        red_u[gl_SubgroupID] = c;
    }
    barrier();
    float bv = -1.0 / 0.0;
    uint bi = 0xffffffffu;
    for (uint i = gl_SubgroupInvocationID; i < gl_NumSubgroups; i += gl_SubgroupSize)
        if (am_better(red_f[i], red_u[i], bv, bi)) {
            bv = red_f[i];
            bi = red_u[i];
        }
    m = subgroupMax(bv);
    c = subgroupMin(bv == m ? bi : 0xffffffffu);
    barrier();
    return c;
#else
    const uint tid = gl_LocalInvocationID.x;
    red_f[tid] = v;
    red_u[tid] = idx;
    barrier();
    for (uint s = BLOCK / 2; s > 0; s >>= 1) {
        if (tid < s && am_better(red_f[tid + s], red_u[tid + s], red_f[tid], red_u[tid])) {
            red_f[tid] = red_f[tid + s];
            red_u[tid] = red_u[tid + s];
        }
        barrier();
    }
    uint t = red_u[0];
    barrier();
    return t;
#endif
}
#endif
