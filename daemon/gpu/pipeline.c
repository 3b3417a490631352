/* SPDX-License-Identifier: MIT */
#include "gpu-internal.h"
#include "log.h"
#include "macro.h"

static void pipeline_free(GpuDevice *d, GpuPipeline *p) {
        if (!p)
                return;
        if (p->pipeline)
                vkDestroyPipeline(d->dev, p->pipeline, NULL);
        if (p->layout)
                vkDestroyPipelineLayout(d->dev, p->layout, NULL);
        if (p->set_layout)
                vkDestroyDescriptorSetLayout(d->dev, p->set_layout, NULL);
        free(p);
}

void gpu_pipelines_free(GpuDevice *d) {
        while (d->pipelines) {
                GpuPipeline *p = d->pipelines;
                d->pipelines = p->next;
                pipeline_free(d, p);
        }
}

static bool spec_equal(const GpuSpec *a, const GpuSpec *b) {
        return a->n == b->n && a->required_subgroup_size == b->required_subgroup_size &&
               memcmp(a->v, b->v, sizeof(uint32_t) * a->n) == 0;
}

static int pipeline_build(GpuDevice *d, GpuShaderId id, const GpuSpec *spec, GpuPipeline **ret) {
        const GpuShaderInfo *info = &gpu_shader_table[id];
        VkDescriptorSetLayoutBinding bindings[16];
        VkShaderModule module = VK_NULL_HANDLE;
        GpuPipeline *p;
        VkResult res;

        if (info->n_bindings > ELEMENTSOF(bindings) || info->push_size > d->caps.max_push_constants ||
            spec->n > GPU_SPEC_MAX)
                return -EINVAL;

        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->id = id;
        p->spec = *spec;
        p->n_bindings = info->n_bindings;
        p->push_size = info->push_size;

        for (uint32_t i = 0; i < info->n_bindings; i++)
                bindings[i] = (VkDescriptorSetLayoutBinding) {
                        .binding = i,
                        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                        .descriptorCount = 1,
                        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
                };
        VkDescriptorSetLayoutCreateInfo dsl = {
                .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                .bindingCount = info->n_bindings,
                .pBindings = bindings,
        };
        res = vkCreateDescriptorSetLayout(d->dev, &dsl, NULL, &p->set_layout);
        if (res != VK_SUCCESS)
                goto error;

        VkPushConstantRange pcr = {
                .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
                .offset = 0,
                .size = info->push_size,
        };
        VkPipelineLayoutCreateInfo plci = {
                .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                .setLayoutCount = 1,
                .pSetLayouts = &p->set_layout,
                .pushConstantRangeCount = info->push_size ? 1 : 0,
                .pPushConstantRanges = &pcr,
        };
        res = vkCreatePipelineLayout(d->dev, &plci, NULL, &p->layout);
        if (res != VK_SUCCESS)
                goto error;

        VkShaderModuleCreateInfo smci = {
                .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                .codeSize = info->size,
                .pCode = info->code,
        };
        res = vkCreateShaderModule(d->dev, &smci, NULL, &module);
        if (res != VK_SUCCESS)
                goto error;

        VkSpecializationMapEntry entries[GPU_SPEC_MAX];
        for (uint32_t i = 0; i < spec->n; i++)
                entries[i] = (VkSpecializationMapEntry) {
                        .constantID = i,
                        .offset = i * sizeof(uint32_t),
                        .size = sizeof(uint32_t),
                };
        VkSpecializationInfo si = {
                .mapEntryCount = spec->n,
                .pMapEntries = entries,
                .dataSize = spec->n * sizeof(uint32_t),
                .pData = spec->v,
        };
        VkPipelineShaderStageRequiredSubgroupSizeCreateInfoEXT rss = {
                .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO_EXT,
                .requiredSubgroupSize = spec->required_subgroup_size,
        };
        bool sized = spec->required_subgroup_size && d->subgroup_size_control;
        VkComputePipelineCreateInfo cpci = {
                .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
                .stage = {
                        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                        .pNext = sized ? &rss : NULL,
                        .flags = sized ? VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT_EXT : 0,
                        .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                        .module = module,
                        .pName = "main",
                        .pSpecializationInfo = spec->n ? &si : NULL,
                },
                .layout = p->layout,
        };
        res = vkCreateComputePipelines(d->dev, d->pipeline_cache, 1, &cpci, NULL, &p->pipeline);
        vkDestroyShaderModule(d->dev, module, NULL);
        if (res != VK_SUCCESS) {
                p->pipeline = VK_NULL_HANDLE;
                goto error;
        }
        d->pipelines_built = true;
        *ret = p;
        return 0;

error:
        log_debug("Failed to build pipeline %s: VkResult %d", info->name, res);
        pipeline_free(d, p);
        return gpu_vk_errno(res);
}

int gpu_pipeline_get(GpuDevice *d, GpuShaderId id, const GpuSpec *spec, GpuPipeline **ret) {
        static const GpuSpec none = {};
        GpuPipeline *p;
        int r;

        if ((unsigned) id >= GPU_SHADER__COUNT)
                return -EINVAL;
        if (!spec)
                spec = &none;
        for (p = d->pipelines; p; p = p->next)
                if (p->id == id && spec_equal(&p->spec, spec)) {
                        *ret = p;
                        return 0;
                }
        r = pipeline_build(d, id, spec, &p);
        if (r < 0)
                return r;
        p->next = d->pipelines;
        d->pipelines = p;
        *ret = p;
        return 0;
}

const char *gpu_pipeline_name(const GpuPipeline *p) {
        return gpu_shader_table[p->id].name;
}
