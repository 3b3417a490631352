/* SPDX-License-Identifier: MIT */
#pragma once

/* The engine's structures, shared by device.c, buffer.c, pipeline.c, cmd.c only. */

#include "engine.h"

struct GpuDevice {
        GpuDeviceInfo info;
        GpuCaps caps;
        VkPhysicalDevice phys;
        VkDevice dev;
        VkQueue queue;
        uint32_t queue_family;
        uint32_t timestamp_valid_bits;
        VkPhysicalDeviceMemoryProperties memory;
        int device_type;                /* memory type index for GPU_MEMORY_DEVICE */
        int host_type;                  /* ... for GPU_MEMORY_HOST */
        uint64_t min_storage_offset_alignment;
        bool subgroup_size_control;
        bool no_subgroup;               /* INFERD_GPU_NO_SUBGROUP=1: use the fallbacks */
        bool int_dot;                   /* gpu_device_use_int_dot() */
        uint64_t allocated;

        VkPipelineCache pipeline_cache;
        char *cache_dir;
        bool pipelines_built;
        GpuPipeline *pipelines;         /* built on first use, freed with the device */

        /* Synchronous transfers (gpu_buffer_write/read). */
        GpuBuffer *staging;
        VkCommandPool xfer_pool;
        VkCommandBuffer xfer_cmd;
        VkFence xfer_fence;
};

struct GpuBuffer {
        GpuDevice *device;
        VkBuffer buffer;
        VkDeviceMemory memory;
        uint64_t size;
        uint64_t alloc_size;
        GpuMemory kind;
        void *map;
};

struct GpuPipeline {
        GpuPipeline *next;
        GpuShaderId id;
        GpuSpec spec;
        uint32_t n_bindings;
        uint32_t push_size;
        VkDescriptorSetLayout set_layout;
        VkPipelineLayout layout;
        VkPipeline pipeline;
};

int gpu_vk_errno(VkResult res);
void gpu_pipelines_free(GpuDevice *d);
