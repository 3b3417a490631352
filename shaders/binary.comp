#version 450
// Element-wise out = a + b (OP_MUL=0) or a * b (OP_MUL=1) over rows, each
// operand with its own row stride in floats. b_stride 0 broadcasts one row of
// b over all rows of a (biases, norm weights). out may be a or b.

layout(constant_id = 0) const uint BLOCK = 256;
layout(local_size_x_id = 0) in;

layout(binding = 0, std430) readonly buffer A { float a[]; };
layout(binding = 1, std430) readonly buffer B { float b[]; };
layout(binding = 2, std430) writeonly buffer O { float o[]; };

layout(push_constant) uniform Push {
    uint n_rows;
    uint n_cols;
    uint a_stride;
    uint b_stride;
    uint o_stride;
} p;

void main() {
    for (uint r = gl_WorkGroupID.y; r < p.n_rows; r += gl_NumWorkGroups.y)
        for (uint i = gl_GlobalInvocationID.x; i < p.n_cols; i += gl_NumWorkGroups.x * BLOCK) {
            const float va = a[r * p.a_stride + i], vb = b[r * p.b_stride + i];
#if OP_MUL
            o[r * p.o_stride + i] = va * vb;
#else
            o[r * p.o_stride + i] = va + vb;
#endif
        }
}
