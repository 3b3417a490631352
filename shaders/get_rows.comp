#version 450
// Embedding lookup: out[i][k] = dequant(W[ids[i]][k]) over one chunk of a
// GpuTensor (daemon/gpu/ops-weights.c). Ids outside the chunk are left to
// the other chunks' dispatches; ids past the whole tensor get zeros from the
// first chunk's. One workgroup per id (few, long-lived workgroups: cheap on
// CPU devices too); each invocation writes four columns per step.
// With p.norm, the workgroup also writes h[i] = RMSNorm(out[i]) * w (as
// rmsnorm.comp computes it): the first block's norm, one dispatch and one
// barrier fewer per pass. With p.copy_pos, the first chunk's dispatch also
// copies each id's int32 position from pos_in to pos_out: a pass's ids and
// positions come from host-visible memory, and this saves the copy (and
// its barrier) that would bring the positions to device memory first.

#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 0) const uint BLOCK_SIZE = 64;
layout(local_size_x_id = 0) in;

#include "weights.glsl"

layout(binding = 2, std430) readonly buffer Ids { uint ids[]; };
layout(binding = 3, std430) writeonly buffer Out { float o[]; };
layout(binding = 3, std430) writeonly buffer Out4 { vec4 o4[]; };
layout(binding = 4, std430) readonly buffer NormW { float norm_w[]; };
layout(binding = 5, std430) writeonly buffer NormOut { float h[]; };
layout(binding = 6, std430) readonly buffer PosIn { int pos_in[]; };
layout(binding = 7, std430) writeonly buffer PosOut { int pos_out[]; };

// Mirrored by GetRowsPush in daemon/gpu/ops-weights.c.
layout(push_constant) uniform Push {
    uint ncols;         // K
    uint row0;          // the chunk's first row
    uint nrows;         // rows of this chunk
    uint total_rows;    // rows of the tensor
    uint n_ids;
    uint out_stride;    // floats between rows of out
    uint zero_oob;      // 1 on the first chunk: write zeros for ids >= total_rows
    uint norm;          // 1: h as well, rows out_stride apart
    float eps;
    uint copy_pos;      // 1: pos_out[i] = pos_in[i] (the first chunk's dispatch)
} p;

// The norm's workgroup sum: ops-reduce.glsl's shared-memory tree.
const uint BLOCK = BLOCK_SIZE;
#define USE_SUBGROUP 0
#include "ops-reduce.glsl"

void main() {
    const uint i = gl_WorkGroupID.z * gl_NumWorkGroups.y + gl_WorkGroupID.y;
    if (i >= p.n_ids)
        return;
    if (p.copy_pos != 0u && gl_LocalInvocationID.x == 0u)
        pos_out[i] = pos_in[i];
    const uint id = ids[i];
    const bool mine = id >= p.row0 && id - p.row0 < p.nrows;
    const bool zero = p.zero_oob != 0u && id >= p.total_rows;
    if (!mine && !zero)
        return;
    const uint K = p.ncols;
    const uint base = i * p.out_stride;
    const bool aligned = (K & 3u) == 0u && (p.out_stride & 3u) == 0u;
    float ss = 0.0;
    for (uint k = 4u * gl_GlobalInvocationID.x; k < K; k += 4u * BLOCK_SIZE * gl_NumWorkGroups.x) {
        vec4 v = zero ? vec4(0) : wt_get4(id - p.row0, k, K);
        if (aligned) {
            o4[(base + k) >> 2] = v;
            ss += dot(v, v);
        } else {
            [[unroll]] for (uint j = 0; j < 4u; j++)
                if (k + j < K) {
                    o[base + k + j] = v[j];
                    ss += v[j] * v[j];
                }
        }
    }
    if (p.norm == 0u)
        return;
    // The row is this workgroup's alone (the grid's x is 1): its sum of
    // squares is a workgroup sum, and the second pass dequantises again
    // rather than read back what it wrote.
    const uint tid = gl_LocalInvocationID.x;
    const float scale = inversesqrt(wg_sum(ss) / float(K) + p.eps);
    for (uint k = 4u * tid; k < K; k += 4u * BLOCK_SIZE) {
        vec4 v = zero ? vec4(0) : wt_get4(id - p.row0, k, K);
        [[unroll]] for (uint j = 0; j < 4u; j++)
            if (k + j < K)
                h[base + k + j] = v[j] * scale * norm_w[k + j];
    }
}
