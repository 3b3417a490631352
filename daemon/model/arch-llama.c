/* SPDX-License-Identifier: MIT */
/*
 * Llama (1, 2, 3), and everything llama.cpp converts to "llama" (Mistral,
 * TinyLlama, ...). GGUF files converted from Hugging Face checkpoints carry
 * attn_q/attn_k rows already permuted so that RoPE rotates adjacent pairs
 * (llama.cpp's LLAMA_ROPE_TYPE_NORM).
 */
#include "model-arch.h"

const ModelTensorNames model_tensor_names_llama = {
        .token_embd = "token_embd.weight",
        .output_norm = "output_norm.weight",
        .output = "output.weight",
        .attn_norm = "blk.%u.attn_norm.weight",
        .attn_q = "blk.%u.attn_q.weight",
        .attn_k = "blk.%u.attn_k.weight",
        .attn_v = "blk.%u.attn_v.weight",
        .attn_output = "blk.%u.attn_output.weight",
        .attn_q_bias = "blk.%u.attn_q.bias",
        .attn_k_bias = "blk.%u.attn_k.bias",
        .attn_v_bias = "blk.%u.attn_v.bias",
        .ffn_norm = "blk.%u.ffn_norm.weight",
        .ffn_gate = "blk.%u.ffn_gate.weight",
        .ffn_up = "blk.%u.ffn_up.weight",
        .ffn_down = "blk.%u.ffn_down.weight",
        .rope_freqs = "rope_freqs.weight",
};

const ModelArch model_arch_llama = {
        .name = "llama",
        .rope_neox = false,
        .qkv_bias = false,
        .names = &model_tensor_names_llama,
};
