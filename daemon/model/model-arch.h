/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * What distinguishes one llama-family architecture from another: its GGUF
 * name, how RoPE pairs dimensions, which optional tensors it has. One small
 * file per architecture (arch-*.c) defines its table; model.c looks them up
 * by general.architecture and otherwise runs the same forward pass.
 *
 * Tensor names follow llama.cpp (gguf-py's MODEL_TENSOR names); "%u" is the
 * block number.
 */

#include <stdbool.h>
#include <stddef.h>

typedef struct ModelTensorNames {
        const char *token_embd;
        const char *output_norm;
        const char *output;             /* absent in the file: tied to token_embd */
        const char *attn_norm;
        const char *attn_q, *attn_k, *attn_v, *attn_output;
        const char *attn_q_bias, *attn_k_bias, *attn_v_bias;
        const char *ffn_norm;
        const char *ffn_gate, *ffn_up, *ffn_down;
        const char *rope_freqs;         /* optional: RoPE frequency factors, one per rotated pair (Llama 3.1+) */
} ModelTensorNames;

typedef struct ModelArch {
        const char *name;               /* general.architecture; also the metadata key prefix */
        bool rope_neox;                 /* RoPE pairs (i, i + n_rot/2) instead of (2i, 2i+1) */
        bool qkv_bias;                  /* q/k/v projections have biases (required when set) */
        const ModelTensorNames *names;
} ModelArch;

/* The llama.cpp names, shared by every architecture so far. */
extern const ModelTensorNames model_tensor_names_llama;

extern const ModelArch model_arch_llama;
extern const ModelArch model_arch_qwen2;

/* The table for general.architecture (len bytes, not NUL-terminated), or NULL. */
const ModelArch *model_arch_find(const char *name, size_t len);
