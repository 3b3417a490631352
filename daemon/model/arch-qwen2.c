/* SPDX-License-Identifier: MIT */
/*
 * Qwen2 and Qwen2.5: the llama block with biases on the q/k/v projections,
 * and RoPE in the NeoX arrangement (llama.cpp's LLAMA_ROPE_TYPE_NEOX: the
 * converter does not permute q/k, so dimension i pairs with i + n_rot/2).
 */
#include "model-arch.h"

const ModelArch model_arch_qwen2 = {
        .name = "qwen2",
        .rope_neox = true,
        .qkv_bias = true,
        .names = &model_tensor_names_llama,
};
