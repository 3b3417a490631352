/* SPDX-License-Identifier: MIT */
/*
 * Command recording. Descriptor sets come from pools owned by the GpuCmd and
 * reset when recording starts again, so a recorded forward pass can be
 * submitted any number of times without touching the host side.
 */
#include "gpu-internal.h"
#include "log.h"
#include "macro.h"

#define SETS_PER_POOL 256
#define MAX_POOLS 64
#define MAX_TIMESTAMPS 1024

struct GpuCmd {
        GpuDevice *device;
        VkCommandPool pool;
        VkCommandBuffer cb;
        VkFence fence;
        VkDescriptorPool desc_pools[MAX_POOLS];
        uint32_t n_desc_pools;
        uint32_t sets_in_pool;          /* sets taken from the last pool */
        VkQueryPool queries;
        uint32_t n_timestamps;
        bool recording;
        bool recorded;
        int error;                      /* first recording error, reported by submit */
};

static int new_desc_pool(GpuCmd *c) {
        VkDescriptorPoolSize size = {
                .type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                .descriptorCount = SETS_PER_POOL * 8,
        };
        VkDescriptorPoolCreateInfo ci = {
                .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                .maxSets = SETS_PER_POOL,
                .poolSizeCount = 1,
                .pPoolSizes = &size,
        };
        if (c->n_desc_pools >= MAX_POOLS)
                return -ENOSPC;
        VkResult res = vkCreateDescriptorPool(c->device->dev, &ci, NULL, &c->desc_pools[c->n_desc_pools]);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        c->n_desc_pools++;
        c->sets_in_pool = 0;
        return 0;
}

uint64_t gpu_binding_bytes(GpuBinding b) {
        if (!b.buffer || b.offset >= b.buffer->size)
                return 0;
        uint64_t avail = b.buffer->size - b.offset;
        return b.range ? MIN(b.range, avail) : avail;
}

int gpu_cmd_new(GpuDevice *d, GpuCmd **ret) {
        _cleanup_(gpu_cmd_freep) GpuCmd *c = NULL;
        VkResult res;
        int r;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->device = d;

        VkCommandPoolCreateInfo pci = {
                .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                .queueFamilyIndex = d->queue_family,
        };
        res = vkCreateCommandPool(d->dev, &pci, NULL, &c->pool);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        VkCommandBufferAllocateInfo cai = {
                .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                .commandPool = c->pool,
                .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                .commandBufferCount = 1,
        };
        res = vkAllocateCommandBuffers(d->dev, &cai, &c->cb);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        /* Signalled, so freeing a GpuCmd that was never submitted does not wait. */
        VkFenceCreateInfo fci = {
                .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO,
                .flags = VK_FENCE_CREATE_SIGNALED_BIT,
        };
        res = vkCreateFence(d->dev, &fci, NULL, &c->fence);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        r = new_desc_pool(c);
        if (r < 0)
                return r;
        if (d->caps.timestamps && d->timestamp_valid_bits > 0) {
                VkQueryPoolCreateInfo qci = {
                        .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                        .queryType = VK_QUERY_TYPE_TIMESTAMP,
                        .queryCount = MAX_TIMESTAMPS,
                };
                if (vkCreateQueryPool(d->dev, &qci, NULL, &c->queries) != VK_SUCCESS)
                        c->queries = VK_NULL_HANDLE;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

GpuCmd *gpu_cmd_free(GpuCmd *c) {
        if (!c)
                return NULL;
        VkDevice dev = c->device->dev;
        if (c->fence) {
                (void) vkWaitForFences(dev, 1, &c->fence, VK_TRUE, 10ULL * 1000000000ULL);
                vkDestroyFence(dev, c->fence, NULL);
        }
        if (c->queries)
                vkDestroyQueryPool(dev, c->queries, NULL);
        for (uint32_t i = 0; i < c->n_desc_pools; i++)
                vkDestroyDescriptorPool(dev, c->desc_pools[i], NULL);
        if (c->pool)
                vkDestroyCommandPool(dev, c->pool, NULL);
        free(c);
        return NULL;
}

int gpu_cmd_begin(GpuCmd *c) {
        VkDevice dev = c->device->dev;
        VkResult res;

        /* Keep the first pool, drop the rest: one forward pass fits in a few. */
        for (uint32_t i = 1; i < c->n_desc_pools; i++)
                vkDestroyDescriptorPool(dev, c->desc_pools[i], NULL);
        c->n_desc_pools = 1;
        c->sets_in_pool = 0;
        res = vkResetDescriptorPool(dev, c->desc_pools[0], 0);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        res = vkResetCommandBuffer(c->cb, 0);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        VkCommandBufferBeginInfo bi = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO };
        res = vkBeginCommandBuffer(c->cb, &bi);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        c->n_timestamps = 0;
        c->recording = true;
        c->recorded = false;
        c->error = 0;
        return 0;
}

static int alloc_set(GpuCmd *c, GpuPipeline *p, VkDescriptorSet *ret) {
        int r;

        if (c->sets_in_pool >= SETS_PER_POOL) {
                r = new_desc_pool(c);
                if (r < 0)
                        return r;
        }
        VkDescriptorSetAllocateInfo ai = {
                .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                .descriptorPool = c->desc_pools[c->n_desc_pools - 1],
                .descriptorSetCount = 1,
                .pSetLayouts = &p->set_layout,
        };
        VkResult res = vkAllocateDescriptorSets(c->device->dev, &ai, ret);
        if (res == VK_ERROR_OUT_OF_POOL_MEMORY || res == VK_ERROR_FRAGMENTED_POOL) {
                r = new_desc_pool(c);
                if (r < 0)
                        return r;
                ai.descriptorPool = c->desc_pools[c->n_desc_pools - 1];
                res = vkAllocateDescriptorSets(c->device->dev, &ai, ret);
        }
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        c->sets_in_pool++;
        return 0;
}

int gpu_cmd_dispatch(GpuCmd *c, GpuPipeline *p, const GpuBinding *bindings, uint32_t n_bindings,
                     const void *push, uint32_t push_size, uint32_t gx, uint32_t gy, uint32_t gz) {
        const GpuCaps *caps = &c->device->caps;
        VkDescriptorBufferInfo infos[16];
        VkWriteDescriptorSet writes[16];
        VkDescriptorSet set;
        int r;

        if (!c->recording || n_bindings != p->n_bindings || push_size != p->push_size || n_bindings > 16) {
                log_debug("Dispatch of %s does not match the shader: %u bindings (wants %u), %u push bytes (wants %u).",
                          gpu_pipeline_name(p), n_bindings, p->n_bindings, push_size, p->push_size);
                return c->error = -EINVAL;
        }
        if (gx == 0 || gy == 0 || gz == 0)
                return 0;
        if (gx > caps->max_workgroup_count[0] || gy > caps->max_workgroup_count[1] ||
            gz > caps->max_workgroup_count[2])
                return c->error = -E2BIG;

        r = alloc_set(c, p, &set);
        if (r < 0)
                return c->error = r;
        for (uint32_t i = 0; i < n_bindings; i++) {
                const GpuBinding *b = &bindings[i];
                if (!b->buffer || b->offset >= b->buffer->size ||
                    (b->offset % c->device->min_storage_offset_alignment) != 0)
                        return c->error = -EINVAL;
                infos[i] = (VkDescriptorBufferInfo) {
                        .buffer = b->buffer->buffer,
                        .offset = b->offset,
                        .range = b->range ? b->range : VK_WHOLE_SIZE,
                };
                writes[i] = (VkWriteDescriptorSet) {
                        .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                        .dstSet = set,
                        .dstBinding = i,
                        .descriptorCount = 1,
                        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                        .pBufferInfo = &infos[i],
                };
        }
        vkUpdateDescriptorSets(c->device->dev, n_bindings, writes, 0, NULL);
        vkCmdBindPipeline(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipeline);
        vkCmdBindDescriptorSets(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0, 1, &set, 0, NULL);
        if (push_size)
                vkCmdPushConstants(c->cb, p->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size, push);
        vkCmdDispatch(c->cb, gx, gy, gz);
        return 0;
}

void gpu_cmd_barrier(GpuCmd *c) {
        VkMemoryBarrier mb = {
                .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                                 VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        };
        VkPipelineStageFlags st = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
        vkCmdPipelineBarrier(c->cb, st, st, 0, 1, &mb, 0, NULL, 0, NULL);
}

void gpu_cmd_barrier_host(GpuCmd *c) {
        VkMemoryBarrier mb = {
                .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                .dstAccessMask = VK_ACCESS_HOST_READ_BIT,
        };
        vkCmdPipelineBarrier(c->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                             VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
}

void gpu_cmd_copy(GpuCmd *c, GpuBuffer *src, uint64_t src_offset, GpuBuffer *dst, uint64_t dst_offset,
                  uint64_t size) {
        VkBufferCopy region = { .srcOffset = src_offset, .dstOffset = dst_offset, .size = size };
        vkCmdCopyBuffer(c->cb, src->buffer, dst->buffer, 1, &region);
}

void gpu_cmd_fill(GpuCmd *c, GpuBuffer *dst, uint64_t offset, uint64_t size, uint32_t value) {
        vkCmdFillBuffer(c->cb, dst->buffer, offset, size, value);
}

int gpu_cmd_timestamp(GpuCmd *c) {
        if (!c->queries)
                return -EOPNOTSUPP;
        if (c->n_timestamps >= MAX_TIMESTAMPS)
                return -ENOSPC;
        /* Reset with the first one, so recordings without timestamps (replayed decode passes) carry no reset. */
        if (c->n_timestamps == 0)
                vkCmdResetQueryPool(c->cb, c->queries, 0, MAX_TIMESTAMPS);
        vkCmdWriteTimestamp(c->cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, c->queries, c->n_timestamps);
        return (int) c->n_timestamps++;
}

int gpu_cmd_submit(GpuCmd *c) {
        GpuDevice *d = c->device;
        VkResult res;

        if (c->recording) {
                c->recording = false;
                res = vkEndCommandBuffer(c->cb);
                if (res != VK_SUCCESS)
                        return gpu_vk_errno(res);
                c->recorded = true;
        }
        if (c->error < 0)
                return c->error;
        if (!c->recorded)
                return -EINVAL;
        VkSubmitInfo si = {
                .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                .commandBufferCount = 1,
                .pCommandBuffers = &c->cb,
        };
        res = vkResetFences(d->dev, 1, &c->fence);
        if (res == VK_SUCCESS)
                res = vkQueueSubmit(d->queue, 1, &si, c->fence);
        if (res == VK_SUCCESS)
                res = vkWaitForFences(d->dev, 1, &c->fence, VK_TRUE, 600ULL * 1000000000ULL);
        return gpu_vk_errno(res);
}

int gpu_cmd_elapsed_ns(GpuCmd *c, int from_slot, int to_slot, double *ret_ns) {
        uint64_t t[2];
        GpuDevice *d = c->device;

        if (!c->queries)
                return -EOPNOTSUPP;
        if (from_slot < 0 || to_slot < 0 || (uint32_t) from_slot >= c->n_timestamps ||
            (uint32_t) to_slot >= c->n_timestamps)
                return -EINVAL;
        VkResult res = vkGetQueryPoolResults(d->dev, c->queries, (uint32_t) from_slot, 1, sizeof t[0], &t[0],
                                             sizeof t[0], VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (res == VK_SUCCESS)
                res = vkGetQueryPoolResults(d->dev, c->queries, (uint32_t) to_slot, 1, sizeof t[1], &t[1],
                                            sizeof t[1], VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (res != VK_SUCCESS)
                return gpu_vk_errno(res);
        uint64_t mask = d->timestamp_valid_bits >= 64 ? UINT64_MAX : ((1ULL << d->timestamp_valid_bits) - 1);
        uint64_t delta = (t[1] - t[0]) & mask;
        *ret_ns = (double) delta * d->caps.timestamp_period_ns;
        return 0;
}
