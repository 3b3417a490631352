#version 450
// Second half of flash-decoding: merges the per-chunk partial results of
// attn_decode for one query head per workgroup. Chunk c holds its max m_c
// (log2 units), its sum l_c and its unnormalised output O_c; the answer is
// sum_c 2^(m_c - M) O_c / sum_c 2^(m_c - M) l_c with M = max_c m_c.
// A chunk with no key (sum 0: attn_decode reading the position from a
// buffer dispatches chunks past the last key) gets weight 0 and its partials
// are not read, so nothing it holds can turn into a NaN. Chunk 0 always has
// a key, so M is finite and L > 0.
// The chunk weights go through shared memory (n_chunks <= MAXC); no
// reduction here is worth a subgroup: every invocation scans the <= MAXC
// maxima in shared memory itself.

#define ATTN_COMBINE
#include "attn_common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
layout(constant_id = 3) const uint MAXC = 256; // GPU_ATTN_MAX_SPLITS

// Scratch: O partials [n_head][n_chunks][head_dim], then (m, l) pairs [n_head][n_chunks].
layout(binding = 0, std430) readonly buffer Part { float part[]; };
layout(binding = 1, std430) writeonly buffer Out { float dst[]; };

shared float w[MAXC];

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint h = gl_WorkGroupID.x;
    const uint n = p.n_chunks, D = p.head_dim;
    const uint ml = p.n_head * n * D + h * n * 2;

    for (uint c = tid; c < n; c += WG)
        w[c] = part[ml + 2 * c];
    barrier();
    float M = NEG_INIT;
    for (uint c = 0; c < n; c++)
        M = max(M, w[c]);
    barrier();
    for (uint c = tid; c < n; c += WG)
        w[c] = part[ml + 2 * c + 1] > 0.0 ? exp2(w[c] - M) : 0.0;
    barrier();
    float L = 0;
    for (uint c = 0; c < n; c++)
        if (w[c] > 0.0)
            L += w[c] * part[ml + 2 * c + 1];
    const float inv = 1.0 / L;
    for (uint d = tid; d < D; d += WG) {
        float acc = 0;
        for (uint c = 0; c < n; c++)
            if (w[c] > 0.0)
                acc += w[c] * part[(h * n + c) * D + d];
        dst[h * D + d] = acc * inv;
    }
}
