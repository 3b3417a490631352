#version 450
// Matrix x matrix on tensor cores (VK_NV_cooperative_matrix): the same
// product and bindings as mul_mm.comp, Y[t][y_col0 + r] = sum_k W[r][k] X[t][k],
// with W and X rounded to f16 in shared memory and F32 accumulation.
//
// Only for devices with caps.coopmat_nv (NVIDIA, subgroups of 32); every
// other device, and INFERD_GPU_NO_COOPMAT=1, runs mul_mm.comp. Kept apart
// from the plain kernel on purpose: CI's lavapipe cannot run it.
//
// A workgroup is four subgroups in a 2 x 2 grid computing a BM (weight rows)
// x BN (tokens) tile; each subgroup holds (BM / 2 / CM_M) x (BN / 2 / CM_N)
// accumulator matrices of CM_M x CM_N. K advances 32 at a time (one quant
// block or K-quant sub-block), dequantised by the same loads as the plain
// kernel (mm_dequant.glsl), packed to f16 and stored 16 bytes at a time.
// The matrix shape (CM_M x CM_N x CM_K) is a specialization constant so the
// host can pick one the driver lists (16 x 8 x 16 by default).

#extension GL_EXT_control_flow_attributes : enable
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_NV_cooperative_matrix : require

layout(local_size_x_id = 0) in;        // 4 subgroups of 32: the host passes 128

layout(constant_id = 3) const uint BM = 128;
layout(constant_id = 4) const uint BN = 128;
layout(constant_id = 5) const uint CM_M = 16;
layout(constant_id = 6) const uint CM_N = 8;
layout(constant_id = 7) const uint CM_K = 16;

#include "mm_dequant.glsl"

layout(binding = 2, std430) readonly buffer X { float x[]; };
layout(binding = 2, std430) readonly buffer X4 { vec4 x4[]; };
layout(binding = 3, std430) writeonly buffer Y { float y[]; };

// Mirrored by MatmulPush in daemon/gpu/ops-matmul.c (same block as mul_mm.comp).
layout(push_constant) uniform Push {
    uint K;
    uint n_rows;
    uint n_tokens;
    uint y_stride;
    uint y_col0;
} p;

const uint BK = 32;
// Tile rows in uvec4 (8 halves): 32 halves of data plus 8 of padding, so a
// row is 80 bytes (a multiple of the 16 bytes the loads want) and the rows
// of a matrix load fall in different banks.
const uint ROW4 = (BK + 8) / 8;
const uint WTM = BM / 2, WTN = BN / 2;  // one subgroup's part of the tile
const uint CR = WTM / CM_M, CC = WTN / CM_N;

shared uvec4 wt[BM * ROW4];
shared uvec4 xt[BN * ROW4];
// Per subgroup: one accumulator on its way out, [token][row].
shared float ct[4 * CM_M * CM_N];

uvec4 pack8(vec4 a, vec4 b) {
    return uvec4(packHalf2x16(a.xy), packHalf2x16(a.zw), packHalf2x16(b.xy), packHalf2x16(b.zw));
}

vec4 load_x4(uint t, uint k, uint K) {
    if ((K & 3u) == 0)
        return k < K ? x4[(t * K + k) >> 2] : vec4(0);
    vec4 v = vec4(0);
    for (uint e = 0; e < 4; e++)
        if (k + e < K)
            v[e] = x[t * K + k + e];
    return v;
}

void main() {
    const uint lid = gl_LocalInvocationID.x;
    const uint n_inv = gl_WorkGroupSize.x;
    const uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    const uint sg_r = sg & 1u, sg_c = sg >> 1;
    const uint m0 = gl_WorkGroupID.x * BM, n0 = gl_WorkGroupID.y * BN;
    const uint K = p.K;

    fcoopmatNV<32, gl_ScopeSubgroup, CM_M, CM_N> acc[CR * CC];
    [[unroll]] for (uint i = 0; i < CR * CC; i++)
        acc[i] = fcoopmatNV<32, gl_ScopeSubgroup, CM_M, CM_N>(0.0);

    for (uint k0 = 0; k0 < K; k0 += BK) {
        // Four 8-element items per row: neighbouring invocations take
        // neighbouring items of one row.
        for (uint it = lid; it < BM * 4; it += n_inv) {
            uint rr = it >> 2, h = it & 3u;
            uint r = m0 + rr;
            uvec4 v = uvec4(0);
            if (r < p.n_rows)
                v = pack8(mm_load_w4(r, k0, 2 * h, K), mm_load_w4(r, k0, 2 * h + 1, K));
            wt[rr * ROW4 + h] = v;
        }
        for (uint it = lid; it < BN * 4; it += n_inv) {
            uint tt = it >> 2, h = it & 3u;
            uint t = n0 + tt, k = k0 + 8 * h;
            uvec4 v = uvec4(0);
            if (t < p.n_tokens)
                v = pack8(load_x4(t, k, K), load_x4(t, k + 4, K));
            xt[tt * ROW4 + h] = v;
        }
        barrier();

        [[unroll]] for (uint kk = 0; kk < BK; kk += CM_K) {
            fcoopmatNV<16, gl_ScopeSubgroup, CM_M, CM_K> ma[CR];
            [[unroll]] for (uint i = 0; i < CR; i++)
                coopMatLoadNV(ma[i], wt, (sg_r * WTM + i * CM_M) * ROW4 + kk / 8, ROW4, false);
            [[unroll]] for (uint j = 0; j < CC; j++) {
                // B = X^T (K x tokens): element (k, t) is at xt[t][k], i.e. column major.
                fcoopmatNV<16, gl_ScopeSubgroup, CM_K, CM_N> mb;
                coopMatLoadNV(mb, xt, (sg_c * WTN + j * CM_N) * ROW4 + kk / 8, ROW4, true);
                [[unroll]] for (uint i = 0; i < CR; i++)
                    acc[i * CC + j] = coopMatMulAddNV(ma[i], mb, acc[i * CC + j]);
            }
        }
        barrier();
    }

    // Out through shared memory: bounds checks per element (partial tiles,
    // chunk rows) and Y's arbitrary stride and column offset.
    const uint cbase = sg * CM_M * CM_N;
    [[unroll]] for (uint i = 0; i < CR; i++) {
        [[unroll]] for (uint j = 0; j < CC; j++) {
            coopMatStoreNV(acc[i * CC + j], ct, cbase, CM_M, true);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < CM_M * CM_N; e += gl_SubgroupSize) {
                uint r = m0 + sg_r * WTM + i * CM_M + e % CM_M;
                uint t = n0 + sg_c * WTN + j * CM_N + e / CM_M;
                if (r < p.n_rows && t < p.n_tokens)
                    y[t * p.y_stride + p.y_col0 + r] = ct[cbase + e];
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
    }
}
