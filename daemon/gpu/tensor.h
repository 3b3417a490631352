/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Weight matrices on the device (GpuTensor): the layout every weight-reading
 * kernel (matrix x vector, matrix x matrix, row lookup) agrees on.
 *
 * A weight matrix W has n_rows rows (output features) of n_cols (K)
 * elements; y[r] = sum_k W[r][k] * x[k]. Host data is in the GGUF file
 * layout (quant.h); on the device it is repacked so that every load is
 * aligned and coalesced:
 *   F32   float[n_rows][K]
 *   F16   f16[n_rows][K]                        (read as uint32 pairs)
 *   Q8_0  QS = int8[n_rows][K], D = f16[n_rows][K/32]
 *   Q4_0  QS = uint8[n_rows][K/2] (GGUF nibble order), D = f16[n_rows][K/32]
 *   Q4_K  GGUF blocks verbatim (144 bytes = 9 x 16)
 *   Q5_K  GGUF blocks verbatim (176 bytes = 11 x 16)
 *   Q6_K  QS = first 208 bytes of each block (ql, qh, scales), D = f16[n_rows][K/256]
 * Each region starts at a 256-byte aligned offset of its chunk's buffer.
 *
 * A tensor larger than one buffer (caps.max_storage_buffer_range,
 * caps.max_allocation, and 2 GiB so that 32-bit byte offsets never wrap in
 * a kernel) is split by rows into chunks; each chunk is a self-contained
 * tensor of rows [row0, row0 + n_rows) in its own buffer. Kernels run once
 * per chunk.
 *
 * K must be a multiple of the type's block size (32 for Q8_0/Q4_0, 256 for
 * the K-quants, any K for F32/F16); otherwise upload fails with -EINVAL.
 */

#include <stdint.h>

#include "engine.h"
#include "quant.h"

typedef struct GpuTensorChunk {
        GpuBuffer *buffer;
        uint32_t row0, n_rows;
        uint64_t qs_offset;     /* always 0 */
        uint64_t d_offset;      /* the D region (Q8_0, Q4_0, Q6_K); 0 for the other types */
} GpuTensorChunk;

typedef struct GpuTensor {
        GgmlType type;
        uint32_t n_cols, n_rows;
        uint32_t n_chunks;
        GpuTensorChunk *chunks;
        uint64_t device_bytes;  /* sum of the chunk buffers' sizes */
} GpuTensor;

/*
 * Uploads n_rows x n_cols elements of `type` in file layout (row r at
 * r * ggml_row_bytes(type, n_cols)), repacking on the fly through the
 * staging buffer: no full extra host copy. The caller keeps `data`.
 * -EINVAL for unsupported types or a bad K, -ENOMEM / -EFBIG from the
 * allocator; *ret is untouched on failure.
 */
int gpu_tensor_upload(GpuDevice *d, GgmlType type, uint32_t n_cols, uint32_t n_rows, const void *data,
                      GpuTensor **ret);

/* The same with at most max_rows_per_chunk rows per chunk (tests of the split path); 0 = automatic. */
int gpu_tensor_upload_split(GpuDevice *d, GgmlType type, uint32_t n_cols, uint32_t n_rows, const void *data,
                            uint32_t max_rows_per_chunk, GpuTensor **ret);

/*
 * One tensor from several row ranges stacked in order: part p is
 * part_rows[p] rows in file layout at parts[p], or, when parts[p] is NULL,
 * that many zero rows (padding that keeps a later part's outputs at an
 * aligned offset). Fuses projections that read the same input (q|k|v,
 * gate|up) into one matrix without a host copy. max_rows_per_chunk as for
 * gpu_tensor_upload_split (0 = automatic). -EINVAL for no rows at all.
 */
int gpu_tensor_upload_rows(GpuDevice *d, GgmlType type, uint32_t n_cols, uint32_t n_parts, const void *const parts[],
                           const uint32_t part_rows[], uint32_t max_rows_per_chunk, GpuTensor **ret);

GpuTensor *gpu_tensor_free(GpuTensor *t);
static inline void gpu_tensor_freep(GpuTensor **t) {
        if (*t)
                gpu_tensor_free(*t);
}

/*
 * The device layout's numbers, for kernels' host code and tests:
 * bytes of the QS and D regions of one row (D 0 for types without one).
 */
int gpu_tensor_row_layout(GgmlType type, uint32_t n_cols, uint64_t *ret_qs_bytes, uint64_t *ret_d_bytes);
