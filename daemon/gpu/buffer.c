/* SPDX-License-Identifier: MIT */
#include "gpu-internal.h"
#include "log.h"
#include "macro.h"

int gpu_buffer_new(GpuDevice *d, uint64_t size, GpuMemory kind, GpuBuffer **ret) {
        _cleanup_(gpu_buffer_freep) GpuBuffer *b = NULL;
        VkMemoryRequirements req;
        VkResult res;

        if (size == 0)
                return -EINVAL;
        if (size > d->caps.max_storage_buffer_range || size > d->caps.max_allocation)
                return -EFBIG;

        b = calloc(1, sizeof *b);
        if (!b)
                return -ENOMEM;
        b->device = d;
        b->size = size;
        b->kind = kind;

        VkBufferCreateInfo bci = {
                .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                .size = size,
                .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                         VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
        };
        res = vkCreateBuffer(d->dev, &bci, NULL, &b->buffer);
        if (res != VK_SUCCESS) {
                b->buffer = VK_NULL_HANDLE;
                return gpu_vk_errno(res);
        }
        vkGetBufferMemoryRequirements(d->dev, b->buffer, &req);

        int type = kind == GPU_MEMORY_HOST ? d->host_type : d->device_type;
        if (!(req.memoryTypeBits & (1u << type))) {
                /* The preferred type cannot back this buffer: take any allowed one with the same must-haves. */
                VkMemoryPropertyFlags want = d->memory.memoryTypes[type].propertyFlags &
                                             (VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
                type = -1;
                for (uint32_t i = 0; i < d->memory.memoryTypeCount; i++)
                        if ((req.memoryTypeBits & (1u << i)) &&
                            (d->memory.memoryTypes[i].propertyFlags & want) == want) {
                                type = (int) i;
                                break;
                        }
                if (type < 0)
                        return -EOPNOTSUPP;
        }
        VkMemoryAllocateInfo mai = {
                .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                .allocationSize = req.size,
                .memoryTypeIndex = (uint32_t) type,
        };
        res = vkAllocateMemory(d->dev, &mai, NULL, &b->memory);
        if (res != VK_SUCCESS) {
                b->memory = VK_NULL_HANDLE;
                return gpu_vk_errno(res);
        }
        res = vkBindBufferMemory(d->dev, b->buffer, b->memory, 0);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        if (d->memory.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT &&
            kind == GPU_MEMORY_HOST) {
                res = vkMapMemory(d->dev, b->memory, 0, VK_WHOLE_SIZE, 0, &b->map);
                if (res != VK_SUCCESS) {
                        b->map = NULL;
                        return gpu_vk_errno(res);
                }
        }
        b->alloc_size = req.size;
        d->allocated += req.size;
        *ret = TAKE_PTR(b);
        return 0;
}

GpuBuffer *gpu_buffer_free(GpuBuffer *b) {
        if (!b)
                return NULL;
        VkDevice dev = b->device->dev;
        if (b->map)
                vkUnmapMemory(dev, b->memory);
        if (b->buffer)
                vkDestroyBuffer(dev, b->buffer, NULL);
        if (b->memory) {
                vkFreeMemory(dev, b->memory, NULL);
                b->device->allocated -= b->alloc_size;
        }
        free(b);
        return NULL;
}

uint64_t gpu_buffer_size(const GpuBuffer *b) {
        return b->size;
}

void *gpu_buffer_map(const GpuBuffer *b) {
        return b->map;
}

VkBuffer gpu_buffer_vk(const GpuBuffer *b) {
        return b->buffer;
}

/* Starts a recording on the transfer command buffer; xfer_submit() runs it and waits. */
static int xfer_begin(GpuDevice *d) {
        VkResult res;

        res = vkResetCommandBuffer(d->xfer_cmd, 0);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        VkCommandBufferBeginInfo bi = {
                .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
        };
        return gpu_vk_errno(vkBeginCommandBuffer(d->xfer_cmd, &bi));
}

static int xfer_submit(GpuDevice *d) {
        VkResult res;

        res = vkEndCommandBuffer(d->xfer_cmd);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        VkSubmitInfo si = {
                .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                .commandBufferCount = 1,
                .pCommandBuffers = &d->xfer_cmd,
        };
        res = vkResetFences(d->dev, 1, &d->xfer_fence);
        if (res == VK_SUCCESS)
                res = vkQueueSubmit(d->queue, 1, &si, d->xfer_fence);
        if (res == VK_SUCCESS)
                res = vkWaitForFences(d->dev, 1, &d->xfer_fence, VK_TRUE, 60ULL * 1000000000ULL);
        return gpu_vk_errno(res);
}

/* One copy on the transfer command buffer, waited for. */
static int xfer_copy(GpuDevice *d, GpuBuffer *src, uint64_t so, GpuBuffer *dst, uint64_t dof, uint64_t size) {
        int r;

        r = xfer_begin(d);
        if (r < 0)
                return r;
        VkBufferCopy region = { .srcOffset = so, .dstOffset = dof, .size = size };
        vkCmdCopyBuffer(d->xfer_cmd, src->buffer, dst->buffer, 1, &region);
        return xfer_submit(d);
}

static int check_range(const GpuBuffer *b, uint64_t offset, uint64_t size) {
        if (offset > b->size || size > b->size - offset)
                return -ERANGE;
        return 0;
}

typedef struct MemcpyFill {
        const uint8_t *src;
        uint64_t base;
} MemcpyFill;

static int memcpy_fill(void *userdata, void *staging, uint64_t dst_offset, uint64_t len) {
        MemcpyFill *m = userdata;
        memcpy(staging, m->src + (dst_offset - m->base), len);
        return 0;
}

int gpu_buffer_write_with(GpuBuffer *dst, uint64_t offset, uint64_t size, gpu_fill_t fill, void *userdata) {
        GpuDevice *d = dst->device;
        int r;

        r = check_range(dst, offset, size);
        if (r < 0)
                return r;
        if (dst->map) {
                /* Host-visible: write in place, still chunked so fill() sees bounded pieces. */
                for (uint64_t done = 0; done < size;) {
                        uint64_t n = MIN(size - done, d->staging->size);
                        r = fill(userdata, (uint8_t *) dst->map + offset + done, offset + done, n);
                        if (r < 0)
                                return r;
                        done += n;
                }
                return 0;
        }
        for (uint64_t done = 0; done < size;) {
                uint64_t n = MIN(size - done, d->staging->size);
                r = fill(userdata, d->staging->map, offset + done, n);
                if (r < 0)
                        return r;
                r = xfer_copy(d, d->staging, 0, dst, offset + done, n);
                if (r < 0)
                        return r;
                done += n;
        }
        return 0;
}

int gpu_buffer_write(GpuBuffer *dst, uint64_t offset, const void *src, uint64_t size) {
        MemcpyFill m = { .src = src, .base = offset };
        return gpu_buffer_write_with(dst, offset, size, memcpy_fill, &m);
}

int gpu_buffer_fill(GpuBuffer *dst, uint64_t offset, uint64_t size, uint32_t value) {
        GpuDevice *d = dst->device;
        int r;

        r = check_range(dst, offset, size);
        if (r < 0)
                return r;
        /* vkCmdFillBuffer's rules, kept for mapped buffers too so a caller's call works on either. */
        if (offset % 4 != 0 || size % 4 != 0)
                return -EINVAL;
        if (size == 0)
                return 0;
        if (dst->map) {
                uint32_t *w = (uint32_t *) ((uint8_t *) dst->map + offset);
                for (uint64_t i = 0; i < size / 4; i++)
                        w[i] = value;
                return 0;
        }
        r = xfer_begin(d);
        if (r < 0)
                return r;
        vkCmdFillBuffer(d->xfer_cmd, dst->buffer, offset, size, value);
        return xfer_submit(d);
}

int gpu_buffer_read(GpuBuffer *src, uint64_t offset, void *dst, uint64_t size) {
        GpuDevice *d = src->device;
        int r;

        r = check_range(src, offset, size);
        if (r < 0)
                return r;
        if (src->map) {
                memcpy(dst, (uint8_t *) src->map + offset, size);
                return 0;
        }
        for (uint64_t done = 0; done < size;) {
                uint64_t n = MIN(size - done, d->staging->size);
                r = xfer_copy(d, src, offset + done, d->staging, 0, n);
                if (r < 0)
                        return r;
                memcpy((uint8_t *) dst + done, d->staging->map, n);
                done += n;
        }
        return 0;
}
