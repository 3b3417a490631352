/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The Vulkan instance and what it finds: every physical device with the facts
 * a scheduler and an operator need. The engine (gpu/engine) builds on this.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct GpuDeviceInfo {
        uint32_t index;
        char name[256];
        const char *vendor;             /* "NVIDIA", "AMD", "Intel", "Mesa", ... */
        uint32_t vendor_id;
        uint32_t device_id;
        const char *type;               /* "discrete", "integrated", "virtual", "cpu", "other" */
        char driver[256];               /* VkPhysicalDeviceDriverProperties.driverName */
        char driver_info[256];          /* ... .driverInfo */
        char api_version[32];           /* "1.3.230" */
        uint64_t device_local_memory;   /* sum of device-local heaps, bytes */
        uint32_t subgroup_size;
        bool fp16;                      /* shaderFloat16 and 16-bit storage buffers */
        bool int8;                      /* shaderInt8 and 8-bit storage buffers */
        bool memory_budget;             /* VK_EXT_memory_budget available */
} GpuDeviceInfo;

typedef struct GpuInstance GpuInstance;

/* Fails with -ENODEV when no Vulkan driver is installed at all. */
int gpu_instance_new(GpuInstance **ret);
GpuInstance *gpu_instance_free(GpuInstance *g);
static inline void gpu_instance_freep(GpuInstance **g) { if (*g) gpu_instance_free(*g); }

size_t gpu_instance_n_devices(const GpuInstance *g);
const GpuDeviceInfo *gpu_instance_device(const GpuInstance *g, size_t index);

/* For the engine (gpu/device.c): the Vulkan handles behind an index. */
#include <vulkan/vulkan.h>
VkInstance gpu_instance_vk(const GpuInstance *g);
VkPhysicalDevice gpu_instance_physical(const GpuInstance *g, size_t index);
uint32_t gpu_instance_api_version(const GpuInstance *g, size_t index);

/* Device-local memory in use and still available, from VK_EXT_memory_budget
 * where the driver has it, else the heap size less what inferd itself holds. */
int gpu_device_memory_usage(const GpuInstance *g, size_t index, uint64_t *ret_used, uint64_t *ret_free);
