#version 450
// Copies n floats, vec4 at a time: the device-memory bandwidth probe the
// benchmarks compare kernels against, and the runtime's own test kernel.

layout(local_size_x_id = 0) in;

layout(binding = 0, std430) readonly buffer Src { vec4 src[]; };
layout(binding = 1, std430) writeonly buffer Dst { vec4 dst[]; };

layout(push_constant) uniform Push { uint n4; } p;

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.n4; i += stride)
        dst[i] = src[i];
}
