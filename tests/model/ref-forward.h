/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * A plain-C forward pass of the llama family (llama, qwen2) for the tests to
 * compare the GPU with: it reads the same GGUF file, dequantises every weight
 * to float with ggml_dequantize_row(), and runs one token at a time in the
 * most direct way, accumulating dot products and norms in double. The KV
 * cache holds float values rounded to F16, as the GPU's F16 cache does, so
 * both sides attend to the same keys and values. RoPE angles are computed in
 * double and divided by the Llama 3.1+ frequency factors (rope_freqs.weight)
 * when the file has them, as llama.cpp defines them, rather than with the
 * GPU's float arithmetic.
 *
 * It parses the metadata itself rather than sharing model.c's code, so a
 * mistake there does not hide in both.
 */

#include <stdbool.h>
#include <stdint.h>

typedef struct RefModel RefModel;

/* Loads path with room for n_ctx positions. -errno; *ret_error (may be NULL) says why. */
int ref_model_load(const char *path, uint32_t n_ctx, RefModel **ret, char **ret_error);
RefModel *ref_model_free(RefModel *m);

uint32_t ref_model_n_vocab(const RefModel *m);
uint32_t ref_model_pos(const RefModel *m);
/* Forgets positions pos and later. */
void ref_model_truncate(RefModel *m, uint32_t pos);

/* Runs tokens at the current position; logits (if not NULL) get the last token's n_vocab logits. -ENOSPC, -EINVAL. */
int ref_model_eval(RefModel *m, const int32_t *tokens, uint32_t n_tokens, float *logits);

/* Index of the largest of n values (the lowest on ties). */
uint32_t ref_argmax(const float *x, uint32_t n);
