#version 450
// out[i] = scale * x[i] over n floats; out may be x.

layout(constant_id = 0) const uint BLOCK = 256;
layout(local_size_x_id = 0) in;

layout(binding = 0, std430) readonly buffer X { float x[]; };
layout(binding = 1, std430) writeonly buffer O { float o[]; };

layout(push_constant) uniform Push {
    uint n;
    float scale;
} p;

void main() {
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * BLOCK)
        o[i] = p.scale * x[i];
}
