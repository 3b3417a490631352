/* SPDX-License-Identifier: MIT */
/* The architectures model_load() knows: add a line here for each arch-*.c. */
#include <string.h>

#include "macro.h"
#include "model-arch.h"

static const ModelArch *const archs[] = {
        &model_arch_llama,
        &model_arch_qwen2,
};

const ModelArch *model_arch_find(const char *name, size_t len) {
        for (size_t i = 0; i < ELEMENTSOF(archs); i++)
                if (strlen(archs[i]->name) == len && memcmp(archs[i]->name, name, len) == 0)
                        return archs[i];
        return NULL;
}
