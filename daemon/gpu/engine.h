/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The Vulkan compute runtime: one GpuDevice per physical device with a
 * compute queue, buffers, pipelines built from the SPIR-V embedded at build
 * time (shaders/), and command recording so a whole forward pass is one
 * submission.
 *
 * Ownership: a GpuDevice owns everything made from it; free buffers,
 * commands and tensors before the device. Pipelines are cached by the device
 * and freed with it. Nothing here logs above debug level; callers log.
 *
 * Threads: a GpuDevice and the objects made from it are used by one thread
 * at a time (the engine's worker for that device).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <vulkan/vulkan.h>

#include "shaders.h"  /* generated: enum GpuShaderId, gpu_shader_table[] */
#include "vkdev.h"

typedef struct GpuDevice GpuDevice;
typedef struct GpuBuffer GpuBuffer;
typedef struct GpuPipeline GpuPipeline;
typedef struct GpuCmd GpuCmd;

typedef struct GpuCaps {
        uint32_t subgroup_size;
        bool subgroup_arithmetic;       /* subgroupAdd/Max... usable in compute shaders */
        bool subgroup_shuffle;
        bool fp16;                      /* shaderFloat16 */
        bool storage16;                 /* 16-bit storage buffer access */
        bool storage8;                  /* 8-bit storage buffer access */
        bool int8;                      /* shaderInt8 */
        bool shader_int16;              /* shaderInt16 */
        bool shader_int64;              /* shaderInt64 */
        bool int_dot;                   /* shaderIntegerDotProduct (VK_KHR_shader_integer_dot_product) */
        bool int_dot_fast;              /* ... with 4x8-bit packed signed dot products in hardware */
        bool coopmat_nv;                /* VK_NV_cooperative_matrix with an f16xf16+f32 16x8x16 subgroup shape */
        uint64_t max_storage_buffer_range;
        uint64_t max_allocation;
        uint32_t max_workgroup_invocations;
        uint32_t max_workgroup_count[3];
        uint32_t max_shared_memory;
        uint32_t max_push_constants;
        bool timestamps;
        double timestamp_period_ns;
        uint64_t device_local_bytes;
} GpuCaps;

/*
 * Opens device `index` of `inst`. cache_dir, if not NULL, holds the pipeline
 * cache (pipeline-cache-<vendor>-<device>.bin), loaded now and saved on free.
 */
int gpu_device_new(GpuInstance *inst, size_t index, const char *cache_dir, GpuDevice **ret);
GpuDevice *gpu_device_free(GpuDevice *d);
static inline void gpu_device_freep(GpuDevice **d) {
        if (*d)
                gpu_device_free(*d);
}
const GpuCaps *gpu_device_caps(const GpuDevice *d);
const GpuDeviceInfo *gpu_device_info(const GpuDevice *d);
VkDevice gpu_device_vk(const GpuDevice *d);
/*
 * Whether kernels should take their subgroup-operation variants: the device
 * has subgroup arithmetic in compute shaders, and INFERD_GPU_NO_SUBGROUP=1 is
 * not set (the tests use it to run the shared-memory fallbacks too).
 */
bool gpu_device_use_subgroup(const GpuDevice *d);
/*
 * Whether the quantised matrix x vector kernels should use integer dot
 * products (GPU_MATVEC_DEQUANT_DOT): by default when the device has them in
 * hardware and is not a CPU; INFERD_GPU_INT_DOT=0/1 decides otherwise (1:
 * whenever the device has the feature at all, as lavapipe does, for tests).
 */
bool gpu_device_use_int_dot(const GpuDevice *d);
/*
 * Whether the device runs on the CPU (lavapipe, SwiftShader): kernels pick
 * their CPU variants, whose workgroups are SIMD loops where barriers and
 * shared memory cost more than arithmetic.
 */
bool gpu_device_is_cpu(const GpuDevice *d);
/* Bytes of device memory this GpuDevice has allocated now. */
uint64_t gpu_device_allocated(const GpuDevice *d);

/* ---- buffers ---------------------------------------------------------- */

typedef enum GpuMemory {
        GPU_MEMORY_DEVICE,      /* device-local; filled by upload/copies */
        GPU_MEMORY_HOST,        /* host-visible and coherent, mapped: staging and read-back */
} GpuMemory;

/*
 * A buffer of `size` bytes, at most caps.max_storage_buffer_range (bind it
 * whole) and caps.max_allocation. Larger tensors are split by the caller
 * (see GpuTensor in tensor.h). -EFBIG beyond the limits, -ENOMEM when the
 * device is out of memory.
 */
int gpu_buffer_new(GpuDevice *d, uint64_t size, GpuMemory mem, GpuBuffer **ret);
GpuBuffer *gpu_buffer_free(GpuBuffer *b);
static inline void gpu_buffer_freep(GpuBuffer **b) {
        if (*b)
                gpu_buffer_free(*b);
}
uint64_t gpu_buffer_size(const GpuBuffer *b);
/* The mapping of a GPU_MEMORY_HOST buffer, NULL for device memory. */
void *gpu_buffer_map(const GpuBuffer *b);
VkBuffer gpu_buffer_vk(const GpuBuffer *b);

/*
 * Synchronous copies between host memory and any buffer, through a staging
 * buffer the device keeps (chunked, so no full extra copy is ever made).
 * Used for weights and test data; hot paths record copies into a GpuCmd.
 */
int gpu_buffer_write(GpuBuffer *dst, uint64_t offset, const void *src, uint64_t size);
int gpu_buffer_read(GpuBuffer *src, uint64_t offset, void *dst, uint64_t size);
/* Sets size bytes at offset to copies of value, synchronously; offset and size multiples of 4. */
int gpu_buffer_fill(GpuBuffer *dst, uint64_t offset, uint64_t size, uint32_t value);

/*
 * Fills the staging buffer through a callback and copies it to dst, chunk by
 * chunk: fill(userdata, staging_ptr, dst_offset, len) writes len bytes that
 * belong at dst_offset. Lets uploads convert (repack, dequantise) on the fly.
 */
typedef int (*gpu_fill_t)(void *userdata, void *staging, uint64_t dst_offset, uint64_t len);
int gpu_buffer_write_with(GpuBuffer *dst, uint64_t offset, uint64_t size, gpu_fill_t fill, void *userdata);

/* ---- pipelines ---------------------------------------------------------- */

/*
 * Specialization constants: constant_id 0 is local_size_x, 1 local_size_y,
 * 2 local_size_z; ids 3.. are the shader's own (GPU_SPEC_MAX in all).
 * Unused entries are 0 and not set.
 */
#define GPU_SPEC_MAX 12
typedef struct GpuSpec {
        uint32_t v[GPU_SPEC_MAX];
        uint32_t n;                     /* how many of v[] to pass */
        uint32_t required_subgroup_size; /* 0: driver's choice */
} GpuSpec;

/*
 * The pipeline for shader `id` with the given constants, built once and
 * cached by the device. Binding count and push-constant size come from the
 * shader table; every binding is a storage buffer.
 */
int gpu_pipeline_get(GpuDevice *d, GpuShaderId id, const GpuSpec *spec, GpuPipeline **ret);
const char *gpu_pipeline_name(const GpuPipeline *p);

/* ---- commands ----------------------------------------------------------- */

typedef struct GpuBinding {
        GpuBuffer *buffer;
        uint64_t offset;        /* must respect minStorageBufferOffsetAlignment */
        uint64_t range;         /* 0: to the end of the buffer */
} GpuBinding;

/*
 * Bytes a binding makes visible (0 when it has no buffer or starts past its
 * end). Ops check what a dispatch will touch against it: without
 * robustBufferAccess an index past a binding is undefined behaviour.
 */
uint64_t gpu_binding_bytes(GpuBinding b);
static inline bool gpu_binding_covers(GpuBinding b, uint64_t bytes) {
        return b.buffer && gpu_binding_bytes(b) >= bytes && gpu_binding_bytes(b) > 0;
}

int gpu_cmd_new(GpuDevice *d, GpuCmd **ret);
GpuCmd *gpu_cmd_free(GpuCmd *c);
static inline void gpu_cmd_freep(GpuCmd **c) {
        if (*c)
                gpu_cmd_free(*c);
}

/* Starts recording, dropping what was recorded before. */
int gpu_cmd_begin(GpuCmd *c);

/*
 * Records a dispatch. n_bindings and push_size must match the shader (checked:
 * -EINVAL). Groups beyond the device limits: -E2BIG.
 */
int gpu_cmd_dispatch(GpuCmd *c, GpuPipeline *p, const GpuBinding *bindings, uint32_t n_bindings,
                     const void *push, uint32_t push_size, uint32_t gx, uint32_t gy, uint32_t gz);

/* Makes the writes of earlier dispatches/copies visible to later ones. */
void gpu_cmd_barrier(GpuCmd *c);

/*
 * Makes the writes of earlier dispatches/copies visible to host reads once
 * gpu_cmd_submit returns (the fence alone does not). A recording that ends
 * with a copy into a GPU_MEMORY_HOST buffer and this barrier lets the host
 * read the results from gpu_buffer_map() without a second submission.
 */
void gpu_cmd_barrier_host(GpuCmd *c);

void gpu_cmd_copy(GpuCmd *c, GpuBuffer *src, uint64_t src_offset, GpuBuffer *dst, uint64_t dst_offset,
                  uint64_t size);
void gpu_cmd_fill(GpuCmd *c, GpuBuffer *dst, uint64_t offset, uint64_t size, uint32_t value);

/* Writes a timestamp; returns its slot (>= 0) or -ENOSPC / -EOPNOTSUPP. */
int gpu_cmd_timestamp(GpuCmd *c);

/* Ends recording (if still recording), submits, waits. Re-submitting the
 * same recording replays it without re-recording. */
int gpu_cmd_submit(GpuCmd *c);

/* Nanoseconds between two timestamp slots of the last submission. */
int gpu_cmd_elapsed_ns(GpuCmd *c, int from_slot, int to_slot, double *ret_ns);
