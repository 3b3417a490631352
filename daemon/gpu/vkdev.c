/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <vulkan/vulkan.h>

#include "log.h"
#include "macro.h"
#include "vkdev.h"

struct GpuInstance {
        VkInstance instance;
        VkPhysicalDevice *physical;
        GpuDeviceInfo *info;
        size_t n;
};

static const char *vendor_name(uint32_t id) {
        switch (id) {
        case 0x1002: return "AMD";
        case 0x10DE: return "NVIDIA";
        case 0x8086: return "Intel";
        case 0x13B5: return "ARM";
        case 0x5143: return "Qualcomm";
        case 0x1010: return "ImgTec";
        case 0x106B: return "Apple";
        case 0x1AE0: return "Google";
        case 0x10005: return "Mesa";
        default: return "unknown";
        }
}

static const char *type_name(VkPhysicalDeviceType t) {
        switch (t) {
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
        case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
        case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
        default: return "other";
        }
}

static bool has_extension(VkPhysicalDevice pd, const char *name) {
        uint32_t n = 0;
        if (vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL) != VK_SUCCESS || n == 0)
                return false;
        _cleanup_free_ VkExtensionProperties *p = calloc(n, sizeof *p);
        if (!p || vkEnumerateDeviceExtensionProperties(pd, NULL, &n, p) != VK_SUCCESS)
                return false;
        for (uint32_t i = 0; i < n; i++)
                if (streq(p[i].extensionName, name))
                        return true;
        return false;
}

static void probe_device(VkPhysicalDevice pd, uint32_t index, GpuDeviceInfo *d) {
        VkPhysicalDeviceDriverProperties driver = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES,
        };
        VkPhysicalDeviceSubgroupProperties subgroup = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES,
                .pNext = &driver,
        };
        VkPhysicalDeviceProperties2 props = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                .pNext = &subgroup,
        };
        VkPhysicalDeviceProperties base;

        *d = (GpuDeviceInfo) { .index = index };

        vkGetPhysicalDeviceProperties(pd, &base);
        bool v12 = base.apiVersion >= VK_API_VERSION_1_2;
        if (!v12)
                subgroup.pNext = NULL; /* driver properties are core only from 1.2 */
        vkGetPhysicalDeviceProperties2(pd, &props);

        snprintf(d->name, sizeof d->name, "%s", base.deviceName);
        d->vendor_id = base.vendorID;
        d->device_id = base.deviceID;
        d->vendor = vendor_name(base.vendorID);
        d->type = type_name(base.deviceType);
        snprintf(d->api_version, sizeof d->api_version, "%u.%u.%u",
                 VK_API_VERSION_MAJOR(base.apiVersion), VK_API_VERSION_MINOR(base.apiVersion),
                 VK_API_VERSION_PATCH(base.apiVersion));
        if (v12) {
                snprintf(d->driver, sizeof d->driver, "%s", driver.driverName);
                snprintf(d->driver_info, sizeof d->driver_info, "%s", driver.driverInfo);
        }
        d->subgroup_size = subgroup.subgroupSize;

        if (v12) {
                VkPhysicalDeviceVulkan12Features f12 = {
                        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
                };
                VkPhysicalDeviceVulkan11Features f11 = {
                        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                        .pNext = &f12,
                };
                VkPhysicalDeviceFeatures2 f = {
                        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                        .pNext = &f11,
                };
                vkGetPhysicalDeviceFeatures2(pd, &f);
                d->fp16 = f12.shaderFloat16 && f11.storageBuffer16BitAccess;
                d->int8 = f12.shaderInt8 && f12.storageBuffer8BitAccess;
        }

        VkPhysicalDeviceMemoryProperties mem;
        vkGetPhysicalDeviceMemoryProperties(pd, &mem);
        for (uint32_t i = 0; i < mem.memoryHeapCount; i++)
                if (mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
                        d->device_local_memory += mem.memoryHeaps[i].size;

        d->memory_budget = has_extension(pd, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
}

int gpu_instance_new(GpuInstance **ret) {
        _cleanup_(gpu_instance_freep) GpuInstance *g = NULL;
        VkApplicationInfo app = {
                .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                .pApplicationName = "inferd",
                .pEngineName = "inferd",
                .apiVersion = VK_API_VERSION_1_2,
        };
        VkInstanceCreateInfo ci = {
                .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                .pApplicationInfo = &app,
        };
        VkResult res;
        uint32_t n = 0;

        g = calloc(1, sizeof *g);
        if (!g)
                return -ENOMEM;

        VkInstance instance = VK_NULL_HANDLE;
        res = vkCreateInstance(&ci, NULL, &instance);
        if (res == VK_ERROR_INCOMPATIBLE_DRIVER || res == VK_ERROR_INITIALIZATION_FAILED)
                return log_debug_errno(ENODEV, "vkCreateInstance: no usable Vulkan driver (VkResult %d)", res);
        if (res != VK_SUCCESS)
                return log_debug_errno(EIO, "vkCreateInstance failed: VkResult %d", res);
        g->instance = instance;

        res = vkEnumeratePhysicalDevices(g->instance, &n, NULL);
        if (res != VK_SUCCESS)
                return -EIO;
        if (n > 0) {
                g->physical = calloc(n, sizeof *g->physical);
                g->info = calloc(n, sizeof *g->info);
                if (!g->physical || !g->info)
                        return -ENOMEM;
                res = vkEnumeratePhysicalDevices(g->instance, &n, g->physical);
                if (res != VK_SUCCESS && res != VK_INCOMPLETE)
                        return -EIO;
        }
        g->n = n;
        for (uint32_t i = 0; i < n; i++)
                probe_device(g->physical[i], i, &g->info[i]);

        *ret = TAKE_PTR(g);
        return 0;
}

GpuInstance *gpu_instance_free(GpuInstance *g) {
        if (!g)
                return NULL;
        if (g->instance)
                vkDestroyInstance(g->instance, NULL);
        free(g->physical);
        free(g->info);
        free(g);
        return NULL;
}

size_t gpu_instance_n_devices(const GpuInstance *g) {
        return g ? g->n : 0;
}

const GpuDeviceInfo *gpu_instance_device(const GpuInstance *g, size_t index) {
        if (!g || index >= g->n)
                return NULL;
        return &g->info[index];
}

int gpu_device_memory_usage(const GpuInstance *g, size_t index, uint64_t *ret_used, uint64_t *ret_free) {
        VkPhysicalDeviceMemoryBudgetPropertiesEXT budget = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT,
        };
        VkPhysicalDeviceMemoryProperties2 mem = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
        };
        uint64_t used = 0, avail = 0;

        if (!g || index >= g->n)
                return -ENODEV;

        if (g->info[index].memory_budget)
                mem.pNext = &budget;
        vkGetPhysicalDeviceMemoryProperties2(g->physical[index], &mem);

        for (uint32_t i = 0; i < mem.memoryProperties.memoryHeapCount; i++) {
                const VkMemoryHeap *h = &mem.memoryProperties.memoryHeaps[i];
                if (!(h->flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT))
                        continue;
                if (g->info[index].memory_budget) {
                        uint64_t u = budget.heapUsage[i], b = MIN(budget.heapBudget[i], h->size);
                        used += u;
                        avail += b > u ? b - u : 0;
                } else
                        avail += h->size;
        }
        *ret_used = used;
        *ret_free = avail;
        return 0;
}

VkPhysicalDevice gpu_instance_physical(const GpuInstance *g, size_t index) {
        if (!g || index >= g->n)
                return VK_NULL_HANDLE;
        return g->physical[index];
}

uint32_t gpu_instance_api_version(const GpuInstance *g, size_t index) {
        VkPhysicalDeviceProperties p;
        if (!g || index >= g->n)
                return 0;
        vkGetPhysicalDeviceProperties(g->physical[index], &p);
        return p.apiVersion;
}

VkInstance gpu_instance_vk(const GpuInstance *g) {
        return g ? g->instance : VK_NULL_HANDLE;
}
