// RMSNorm of a residual matvec's output, in the matvec's own dispatch
// (mul_mv.comp, mul_mv_rows.comp; GpuMatvecNorm in daemon/gpu/ops-weights.h):
// with p.norm != 0, once y += W x is complete,
//   h[v][k] = y[v][k] / sqrt(mean(y[v]^2) + eps) * g[k]   (as rmsnorm.comp)
// which is the next projection's input: a dispatch and a barrier fewer per
// norm. Every workgroup adds up the squares of the values it stored
// (mv_norm_add), writes its sums to the scratch, and counts itself done on
// an atomic counter; the last one to arrive (all of y is written then)
// reads the sums and writes h, then resets the counter for the next use.
// The writes other workgroups made are visible to it because y and the
// scratch are coherent and each workgroup issues memoryBarrierBuffer()
// between its stores and its count (release) and the last one again after
// seeing the count (acquire).
//
// Two ways to count: by workgroup (mv_norm_finish: a reduction and a
// barrier, what a GPU kernel has anyway), or by invocation
// (mv_norm_finish_lane, with MV_NORM_LANES defined: no barrier, so that
// llvmpipe need not run the workgroup's invocations as coroutines, which
// costs a barrier-free kernel ~15%; the last invocation then normalises
// alone, a short serial loop on a CPU).
//
// Needs, before the include: BLOCK_SIZE, NV, the coherent Y buffer y and
// push constants norm, norm_groups (workgroups of all the op's dispatches),
// norm_base (this dispatch's first), norm_eps and y_stride (the row length).

layout(binding = 4, std430) readonly buffer NormW { float norm_w[]; };
layout(binding = 5, std430) writeonly buffer NormOut { float norm_out[]; };
// [0]: the counter; [1 + workgroup * NV + v]: sums of squares (float bits).
// With MV_NORM_LANES, a sum per invocation: [1 + (workgroup * BLOCK_SIZE + invocation) * NV + v].
layout(binding = 6, std430) coherent buffer NormSync { uint norm_sync[]; };

float norm_sq[NV];              // this invocation's sum of squares of what it stored, per vector

void mv_norm_begin() {
    [[unroll]] for (uint v = 0; v < NV; v++)
        norm_sq[v] = 0.0;
}

void mv_norm_add(uint v, float val) {
    norm_sq[v] += val * val;
}

#ifdef MV_NORM_LANES
// Called by every invocation of every workgroup of the op's dispatches; wg: its workgroup's index in
// this dispatch.
void mv_norm_finish_lane(uint wg, uint tid) {
    const uint me = (p.norm_base + wg) * BLOCK_SIZE + tid, n_lanes = p.norm_groups * BLOCK_SIZE;
    memoryBarrierBuffer();      // this invocation's stores of y, before its sums
    [[unroll]] for (uint v = 0; v < NV; v++)
        norm_sync[1u + me * NV + v] = floatBitsToUint(norm_sq[v]);
    memoryBarrierBuffer();      // ... and its sums before its count
    if (atomicAdd(norm_sync[0], 1u) != n_lanes - 1u)
        return;
    memoryBarrierBuffer();
    const uint n = p.y_stride;
    [[unroll]] for (uint v = 0; v < NV; v++) {
        float s = 0.0;
        for (uint l = 0; l < n_lanes; l++)
            s += uintBitsToFloat(norm_sync[1u + l * NV + v]);
        const float scale = inversesqrt(s / float(n) + p.norm_eps);
        for (uint k = 0; k < n; k++)
            norm_out[v * n + k] = y[v * n + k] * scale * norm_w[k];
    }
    atomicExchange(norm_sync[0], 0u);
}
#else
// The workgroup sums (wg_sum: subgroups where the kernel uses them, else a shared-memory tree).
const uint BLOCK = BLOCK_SIZE;
#include "ops-reduce.glsl"

shared bool norm_is_last;

// Called by every invocation of every workgroup that counts (uniform control flow), wg: its index
// in this dispatch.
void mv_norm_finish(uint wg, uint tid) {
    memoryBarrierBuffer();      // this invocation's stores of y, before the count
    float tot[NV];
    [[unroll]] for (uint v = 0; v < NV; v++)
        tot[v] = wg_sum(norm_sq[v]);
    if (tid == 0u) {
        [[unroll]] for (uint v = 0; v < NV; v++)
            norm_sync[1u + (p.norm_base + wg) * NV + v] = floatBitsToUint(tot[v]);
        memoryBarrierBuffer();
        norm_is_last = atomicAdd(norm_sync[0], 1u) == p.norm_groups - 1u;
    }
    barrier();
    if (!norm_is_last)
        return;
    memoryBarrierBuffer();
    const uint n = p.y_stride;
    [[unroll]] for (uint v = 0; v < NV; v++) {
        float s = 0.0;
        for (uint g = tid; g < p.norm_groups; g += BLOCK_SIZE)
            s += uintBitsToFloat(norm_sync[1u + g * NV + v]);
        const float scale = inversesqrt(wg_sum(s) / float(n) + p.norm_eps);
        for (uint k = tid; k < n; k += BLOCK_SIZE)
            norm_out[v * n + k] = y[v * n + k] * scale * norm_w[k];
    }
    if (tid == 0u)
        atomicExchange(norm_sync[0], 0u);
}
#endif
