// Shared by the attention kernels: constants and the push-constant blocks,
// mirrored in C by daemon/gpu/ops-attention.h (static_assert on the sizes).
// A kernel defines which block it wants before including this file.

// Scores are kept in log2 units (q is pre-scaled by scale * log2(e)) so
// every exponential is an exp2.
const float LOG2E = 1.4426950408889634;
// The running max starts finite so exp2(m_old - m_new) is 0, never NaN,
// even while a row has seen no valid key yet; masked scores sit far below it
// so their exp2 is exactly 0.
const float NEG_INIT = -1.0e30;
const float NEG_MASK = -1.0e38;

#ifdef ATTN_PREFILL
layout(push_constant) uniform Push {
    uint n_tokens;
    uint n_group;   // n_head / n_head_kv
    uint n_head;
    uint n_ctx;
    uint pos0;
    uint q_stride;  // floats between tokens of q
    float scale;
} p;
#endif

#ifdef ATTN_DECODE
layout(push_constant) uniform Push {
    uint n_head;
    uint n_group;
    uint n_ctx;
    uint n_kv;
    uint chunk;     // keys per workgroup, a multiple of its size
    uint n_chunks;
    uint q_stride;
    float scale;
} p;
#endif

#ifdef KV_STORE
layout(push_constant) uniform Push {
    uint n_tokens;
    uint n_head_kv;
    uint half_dim;
    uint n_ctx;
    uint pos0;
    uint src_stride;
} p;
#endif
