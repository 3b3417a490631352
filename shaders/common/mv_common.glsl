// What the matrix x vector kernels (mul_mv.comp, mul_mv_rows.comp) share:
// their push constants and the row tuples of their epilogues. Needs, before
// the include, the y buffer (mv_qkv.glsl stores into it).

// Mirrored by MulMvPush and MulMvQkvPush in daemon/gpu/ops-weights.h.
layout(push_constant) uniform Push {
    uint ncols;         // K
    uint nrows;         // rows of this chunk
    uint x_stride;      // floats between the vectors of x
    uint y_stride;      // floats between the vectors of y
    uint y_offset;      // where this chunk's rows start in each y vector
    uint accumulate;    // y += W x: a residual add folded in, one dispatch and barrier fewer
    uint pair_offset;   // 0, or SwiGLU pairs: y[v][i] = silu(row i . x) * (row i + pair_offset . x)
    uint norm;          // 1: RMSNorm of the finished y into h (mv_norm.glsl)
    uint norm_groups;
    uint norm_base;
    float norm_eps;
#if QKV_ROPE
    uint k_row;         // mv_qkv.glsl
    uint v_row;
    uint n_q;
    uint n_kv;
    uint head_dim;
    uint n_rot;
    uint n_ctx;
    float theta_scale;
    float freq_scale;
    uint has_factors;
    uint has_bias;
    uint neox;
#endif
} p;

// Row tuples, whose TUPLE totals make one output: SwiGLU's gate and up
// rows (pairs, p.pair_offset apart), or with QKV_ROPE the quads of
// mv_qkv.glsl. A row group is then NUM_ROWS / TUPLE tuples: their first
// rows, then their second rows, and so on (mul_mv_rows: a lane's rows are
// its tuples' first rows, then their second rows).
#if QKV_ROPE
#include "mv_qkv.glsl"
#define TUPLES true
const uint TUPLE = 4;
uint tuple_row(uint P, uint k) {
    return qkv_row(P, k);
}
#else
#define TUPLES (p.pair_offset != 0u)
const uint TUPLE = 2;
uint tuple_row(uint P, uint k) {
    return P + k * p.pair_offset;
}
#endif
