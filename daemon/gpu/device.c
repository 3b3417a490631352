/* SPDX-License-Identifier: MIT */
/*
 * GpuDevice: logical device, compute queue, memory types, the staging buffer
 * for synchronous transfers, the pipeline cache and the pipelines built from
 * the embedded shaders.
 */
#include <inttypes.h>
#include <stdio.h>

#include "engine.h"
#include "fileio.h"
#include "gpu-internal.h"
#include "log.h"
#include "macro.h"

#define STAGING_SIZE (64ULL << 20)

int gpu_vk_errno(VkResult res) {
        switch (res) {
        case VK_SUCCESS:
                return 0;
        case VK_ERROR_OUT_OF_HOST_MEMORY:
        case VK_ERROR_OUT_OF_DEVICE_MEMORY:
        case VK_ERROR_FRAGMENTED_POOL:
        case VK_ERROR_OUT_OF_POOL_MEMORY:
                return -ENOMEM;
        case VK_ERROR_DEVICE_LOST:
                return -ENODEV;
        case VK_TIMEOUT:
                return -ETIME;
        case VK_ERROR_FEATURE_NOT_PRESENT:
        case VK_ERROR_EXTENSION_NOT_PRESENT:
        case VK_ERROR_FORMAT_NOT_SUPPORTED:
                return -EOPNOTSUPP;
        case VK_ERROR_INITIALIZATION_FAILED:
        default:
                return -EIO;
        }
}

static bool has_ext(const VkExtensionProperties *e, uint32_t n, const char *name) {
        for (uint32_t i = 0; i < n; i++)
                if (streq(e[i].extensionName, name))
                        return true;
        return false;
}

static int find_memory_type(const VkPhysicalDeviceMemoryProperties *mp, VkMemoryPropertyFlags want,
                            VkMemoryPropertyFlags prefer) {
        int fallback = -1;
        for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
                VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
                if ((f & want) != want)
                        continue;
                if ((f & prefer) == prefer)
                        return (int) i;
                if (fallback < 0)
                        fallback = (int) i;
        }
        return fallback;
}

static void cache_path(const GpuDevice *d, char *buf, size_t len) {
        snprintf(buf, len, "%s/pipeline-cache-%04x-%04x.bin", d->cache_dir, d->info.vendor_id, d->info.device_id);
}

static void pipeline_cache_create(GpuDevice *d) {
        _cleanup_free_ char *data = NULL;
        size_t size = 0;
        char path[4096];

        if (d->cache_dir) {
                cache_path(d, path, sizeof path);
                /* The driver checks the header (vendor, device, cache UUID) and ignores a stale file. */
                if (read_full_file(path, 512ULL << 20, &data, &size) < 0)
                        size = 0;
        }
        VkPipelineCacheCreateInfo ci = {
                .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
                .initialDataSize = size,
                .pInitialData = size ? data : NULL,
        };
        if (vkCreatePipelineCache(d->dev, &ci, NULL, &d->pipeline_cache) != VK_SUCCESS) {
                ci.initialDataSize = 0;
                ci.pInitialData = NULL;
                if (vkCreatePipelineCache(d->dev, &ci, NULL, &d->pipeline_cache) != VK_SUCCESS)
                        d->pipeline_cache = VK_NULL_HANDLE;
        }
}

static void pipeline_cache_save(GpuDevice *d) {
        char path[4096];
        size_t size = 0;

        if (!d->cache_dir || !d->pipeline_cache || !d->pipelines_built)
                return;
        if (vkGetPipelineCacheData(d->dev, d->pipeline_cache, &size, NULL) != VK_SUCCESS || size == 0)
                return;
        _cleanup_free_ void *data = malloc(size);
        if (!data || vkGetPipelineCacheData(d->dev, d->pipeline_cache, &size, data) != VK_SUCCESS)
                return;
        cache_path(d, path, sizeof path);
        if (write_file_atomic(path, data, size, 0600) < 0)
                log_debug("Failed to save the pipeline cache to %s.", path);
}

/* has_idp: the device lists VK_KHR_shader_integer_dot_product, whose properties may be asked for. */
static void probe_caps(GpuDevice *d, bool has_idp) {
        VkPhysicalDeviceShaderIntegerDotProductPropertiesKHR idp = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES_KHR,
        };
        VkPhysicalDeviceMaintenance3Properties m3 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES,
                .pNext = has_idp ? &idp : NULL,
        };
        VkPhysicalDeviceSubgroupProperties sg = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES,
                .pNext = &m3,
        };
        VkPhysicalDeviceProperties2 p2 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                .pNext = &sg,
        };
        vkGetPhysicalDeviceProperties2(d->phys, &p2);
        const VkPhysicalDeviceLimits *l = &p2.properties.limits;
        GpuCaps *c = &d->caps;

        c->subgroup_size = sg.subgroupSize;
        c->subgroup_arithmetic = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                                 (sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
        c->subgroup_shuffle = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                              (sg.supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
        c->max_storage_buffer_range = l->maxStorageBufferRange;
        c->max_workgroup_invocations = l->maxComputeWorkGroupInvocations;
        for (int i = 0; i < 3; i++)
                c->max_workgroup_count[i] = l->maxComputeWorkGroupCount[i];
        c->max_shared_memory = l->maxComputeSharedMemorySize;
        c->max_push_constants = l->maxPushConstantsSize;
        c->timestamp_period_ns = l->timestampPeriod;
        c->timestamps = l->timestampComputeAndGraphics && l->timestampPeriod > 0;
        c->device_local_bytes = d->info.device_local_memory;
        d->min_storage_offset_alignment = l->minStorageBufferOffsetAlignment;
        c->max_allocation = m3.maxMemoryAllocationSize ? m3.maxMemoryAllocationSize : (1ULL << 31);
        c->int_dot_fast = has_idp && idp.integerDotProduct4x8BitPackedSignedAccelerated;
}

/* Whether the driver lists an MxNxK subgroup shape with f16 A/B and f32 C/D. */
static bool coopmat_has_f16_shape(GpuInstance *inst, VkPhysicalDevice phys, uint32_t m, uint32_t n, uint32_t k) {
        PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV get = (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)
                vkGetInstanceProcAddr(gpu_instance_vk(inst), "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV");
        uint32_t count = 0;

        if (!get || get(phys, &count, NULL) != VK_SUCCESS || count == 0)
                return false;
        _cleanup_free_ VkCooperativeMatrixPropertiesNV *props = calloc(count, sizeof *props);
        if (!props)
                return false;
        for (uint32_t i = 0; i < count; i++)
                props[i].sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
        if (get(phys, &count, props) != VK_SUCCESS)
                return false;
        for (uint32_t i = 0; i < count; i++) {
                const VkCooperativeMatrixPropertiesNV *p = &props[i];
                if (p->MSize == m && p->NSize == n && p->KSize == k && p->AType == VK_COMPONENT_TYPE_FLOAT16_NV &&
                    p->BType == VK_COMPONENT_TYPE_FLOAT16_NV && p->CType == VK_COMPONENT_TYPE_FLOAT32_NV &&
                    p->DType == VK_COMPONENT_TYPE_FLOAT32_NV && p->scope == VK_SCOPE_SUBGROUP_NV)
                        return true;
        }
        return false;
}

int gpu_device_new(GpuInstance *inst, size_t index, const char *cache_dir, GpuDevice **ret) {
        _cleanup_(gpu_device_freep) GpuDevice *d = NULL;
        const GpuDeviceInfo *info = gpu_instance_device(inst, index);
        uint32_t n_ext = 0, n_fam = 0;
        VkResult res;
        int r;

        if (!info)
                return -ENODEV;
        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        d->info = *info;
        d->phys = gpu_instance_physical(inst, index);
        if (cache_dir) {
                d->cache_dir = strdup(cache_dir);
                if (!d->cache_dir)
                        return -ENOMEM;
        }

        /* A queue family that can compute; prefer one without graphics (async compute). */
        vkGetPhysicalDeviceQueueFamilyProperties(d->phys, &n_fam, NULL);
        _cleanup_free_ VkQueueFamilyProperties *fams = calloc(n_fam ?: 1, sizeof *fams);
        if (!fams)
                return -ENOMEM;
        vkGetPhysicalDeviceQueueFamilyProperties(d->phys, &n_fam, fams);
        int family = -1;
        for (uint32_t i = 0; i < n_fam; i++) {
                if (!(fams[i].queueFlags & VK_QUEUE_COMPUTE_BIT))
                        continue;
                if (family < 0 || !(fams[i].queueFlags & VK_QUEUE_GRAPHICS_BIT))
                        family = (int) i;
                if (!(fams[i].queueFlags & VK_QUEUE_GRAPHICS_BIT))
                        break;
        }
        if (family < 0)
                return log_debug_errno(EOPNOTSUPP, "Device %s has no compute queue.", info->name);
        d->queue_family = (uint32_t) family;
        d->timestamp_valid_bits = fams[family].timestampValidBits;

        vkEnumerateDeviceExtensionProperties(d->phys, NULL, &n_ext, NULL);
        _cleanup_free_ VkExtensionProperties *exts = calloc(n_ext ?: 1, sizeof *exts);
        if (!exts)
                return -ENOMEM;
        vkEnumerateDeviceExtensionProperties(d->phys, NULL, &n_ext, exts);

        bool has_idp = has_ext(exts, n_ext, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
        d->caps.fp16 = info->fp16;
        probe_caps(d, has_idp);
        const char *e = getenv("INFERD_GPU_NO_SUBGROUP");
        d->no_subgroup = e && *e && !streq(e, "0");

        /* Features: query what exists, then enable the ones the kernels use. */
        VkPhysicalDeviceCooperativeMatrixFeaturesNV coop = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV,
        };
        VkPhysicalDeviceSubgroupSizeControlFeaturesEXT sgc = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT,
        };
        VkPhysicalDeviceVulkan12Features f12 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        };
        VkPhysicalDeviceVulkan11Features f11 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                .pNext = &f12,
        };
        VkPhysicalDeviceFeatures2 f2 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                .pNext = &f11,
        };
        VkPhysicalDeviceShaderIntegerDotProductFeaturesKHR idp = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES_KHR,
        };
        bool has_sgc = has_ext(exts, n_ext, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
        bool has_coop = has_ext(exts, n_ext, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
        void **tail = &f12.pNext;
        if (has_idp) {
                *tail = &idp;
                tail = &idp.pNext;
        }
        if (has_sgc) {
                *tail = &sgc;
                tail = &sgc.pNext;
        }
        if (has_coop) {
                *tail = &coop;
                tail = &coop.pNext;
        }
        if (VK_API_VERSION_MINOR(gpu_instance_api_version(inst, index)) < 2)
                return log_debug_errno(EOPNOTSUPP, "Device %s supports only Vulkan %s; 1.2 is needed.",
                                       info->name, info->api_version);
        vkGetPhysicalDeviceFeatures2(d->phys, &f2);

        d->caps.storage16 = f11.storageBuffer16BitAccess;
        d->caps.storage8 = f12.storageBuffer8BitAccess;
        d->caps.fp16 = f12.shaderFloat16;
        d->caps.int8 = f12.shaderInt8;
        d->subgroup_size_control = has_sgc && sgc.subgroupSizeControl && sgc.computeFullSubgroups;
        /* glslang always compiles GL_NV_cooperative_matrix to the Vulkan
         * memory model (OpMemoryModel Logical Vulkan), which needs this feature. */
        d->caps.coopmat_nv = has_coop && coop.cooperativeMatrix && f12.vulkanMemoryModel && f12.shaderFloat16 &&
                             coopmat_has_f16_shape(inst, d->phys, 16, 8, 16);

        VkPhysicalDeviceVulkan12Features e12 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
                .shaderFloat16 = f12.shaderFloat16,
                .shaderInt8 = f12.shaderInt8,
                .storageBuffer8BitAccess = f12.storageBuffer8BitAccess,
                .uniformAndStorageBuffer8BitAccess = f12.uniformAndStorageBuffer8BitAccess,
                .hostQueryReset = f12.hostQueryReset,
                .vulkanMemoryModel = d->caps.coopmat_nv,
        };
        VkPhysicalDeviceVulkan11Features e11 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                .pNext = &e12,
                .storageBuffer16BitAccess = f11.storageBuffer16BitAccess,
                .uniformAndStorageBuffer16BitAccess = f11.uniformAndStorageBuffer16BitAccess,
        };
        VkPhysicalDeviceSubgroupSizeControlFeaturesEXT esgc = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT,
                .subgroupSizeControl = d->subgroup_size_control,
                .computeFullSubgroups = d->subgroup_size_control,
        };
        VkPhysicalDeviceCooperativeMatrixFeaturesNV ecoop = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV,
                .cooperativeMatrix = d->caps.coopmat_nv,
        };
        VkPhysicalDeviceFeatures2 e2 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                .pNext = &e11,
                .features = { .shaderInt16 = f2.features.shaderInt16, .shaderInt64 = f2.features.shaderInt64 },
        };
        const char *enable[5];
        uint32_t n_enable = 0;
        tail = &e12.pNext;
        if (d->subgroup_size_control) {
                enable[n_enable++] = VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;
                *tail = &esgc;
                tail = &esgc.pNext;
        }
        if (d->caps.coopmat_nv) {
                enable[n_enable++] = VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME;
                *tail = &ecoop;
                tail = &ecoop.pNext;
        }
        VkPhysicalDeviceShaderIntegerDotProductFeaturesKHR eidp = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES_KHR,
                .shaderIntegerDotProduct = true,
        };
        d->caps.int_dot = has_idp && idp.shaderIntegerDotProduct;
        if (d->caps.int_dot) {
                enable[n_enable++] = VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME;
                *tail = &eidp;
                tail = &eidp.pNext;
        }
        /* Integer dot products in the quantised matrix x vector kernel: by default where the
         * hardware has them (a CPU device emulates them), INFERD_GPU_INT_DOT=0/1 to choose. */
        e = getenv("INFERD_GPU_INT_DOT");
        if (e && *e)
                d->int_dot = d->caps.int_dot && !streq(e, "0");
        else
                d->int_dot = d->caps.int_dot && d->caps.int_dot_fast && !gpu_device_is_cpu(d);
        d->caps.shader_int16 = f2.features.shaderInt16;
        d->caps.shader_int64 = f2.features.shaderInt64;

        float prio = 1.0f;
        VkDeviceQueueCreateInfo qci = {
                .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                .queueFamilyIndex = d->queue_family,
                .queueCount = 1,
                .pQueuePriorities = &prio,
        };
        VkDeviceCreateInfo dci = {
                .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                .pNext = &e2,
                .queueCreateInfoCount = 1,
                .pQueueCreateInfos = &qci,
                .enabledExtensionCount = n_enable,
                .ppEnabledExtensionNames = enable,
        };
        res = vkCreateDevice(d->phys, &dci, NULL, &d->dev);
        if (res != VK_SUCCESS) {
                d->dev = VK_NULL_HANDLE;
                return log_debug_errno(gpu_vk_errno(res), "vkCreateDevice(%s) failed: VkResult %d", info->name, res);
        }
        vkGetDeviceQueue(d->dev, d->queue_family, 0, &d->queue);

        vkGetPhysicalDeviceMemoryProperties(d->phys, &d->memory);
        d->device_type = find_memory_type(&d->memory, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
        d->host_type = find_memory_type(&d->memory,
                                        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                        VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
        if (d->device_type < 0)
                d->device_type = d->host_type;
        if (d->host_type < 0)
                return log_debug_errno(EOPNOTSUPP, "Device %s has no host-visible memory.", info->name);

        pipeline_cache_create(d);

        VkCommandPoolCreateInfo pci = {
                .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                .queueFamilyIndex = d->queue_family,
        };
        res = vkCreateCommandPool(d->dev, &pci, NULL, &d->xfer_pool);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        VkCommandBufferAllocateInfo cai = {
                .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                .commandPool = d->xfer_pool,
                .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                .commandBufferCount = 1,
        };
        res = vkAllocateCommandBuffers(d->dev, &cai, &d->xfer_cmd);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        VkFenceCreateInfo fci = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
        res = vkCreateFence(d->dev, &fci, NULL, &d->xfer_fence);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);

        r = gpu_buffer_new(d, MIN(STAGING_SIZE, d->caps.max_allocation), GPU_MEMORY_HOST, &d->staging);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(d);
        return 0;
}

GpuDevice *gpu_device_free(GpuDevice *d) {
        if (!d)
                return NULL;
        if (d->dev) {
                (void) vkDeviceWaitIdle(d->dev);
                pipeline_cache_save(d);
                gpu_pipelines_free(d);
                gpu_buffer_free(d->staging);
                if (d->xfer_fence)
                        vkDestroyFence(d->dev, d->xfer_fence, NULL);
                if (d->xfer_pool)
                        vkDestroyCommandPool(d->dev, d->xfer_pool, NULL);
                if (d->pipeline_cache)
                        vkDestroyPipelineCache(d->dev, d->pipeline_cache, NULL);
                vkDestroyDevice(d->dev, NULL);
        }
        free(d->cache_dir);
        free(d);
        return NULL;
}

const GpuCaps *gpu_device_caps(const GpuDevice *d) {
        return &d->caps;
}

const GpuDeviceInfo *gpu_device_info(const GpuDevice *d) {
        return &d->info;
}

VkDevice gpu_device_vk(const GpuDevice *d) {
        return d->dev;
}

bool gpu_device_use_subgroup(const GpuDevice *d) {
        return d->caps.subgroup_arithmetic && !d->no_subgroup;
}

bool gpu_device_use_int_dot(const GpuDevice *d) {
        return d->int_dot;
}

bool gpu_device_is_cpu(const GpuDevice *d) {
        return d->info.type && streq(d->info.type, "cpu");
}

uint64_t gpu_device_allocated(const GpuDevice *d) {
        return d->allocated;
}
