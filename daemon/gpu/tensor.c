/* SPDX-License-Identifier: MIT */
/*
 * Weight upload: GGUF blocks are split into a QS region (quants, 16-byte
 * aligned per unit so kernels load uvec4) and a D region (f16 scales), or
 * kept verbatim where the file's blocks are already multiples of 16 bytes
 * (Q4_K, Q5_K). The repacking happens inside the staging-buffer callback,
 * so the host never holds a second copy of the tensor.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "tensor.h"

#define REGION_ALIGN 256u
/* Chunks stay below 2 GiB so kernels can address bytes with 32-bit offsets. */
#define CHUNK_MAX_BYTES (2ULL << 30)

/*
 * How one file block maps onto the device: its QS unit (qs_unit bytes taken
 * from offset qs_from of the block) and its scale (2 bytes at d_from), or no
 * D region (has_d false). Verbatim types have qs_unit == block_bytes.
 */
typedef struct Repack {
        uint32_t block_elems, block_bytes;
        uint32_t qs_unit, qs_from;
        bool has_d;
        uint32_t d_from;
} Repack;

static int repack_of(GgmlType type, Repack *ret) {
        switch (type) {
        case GGML_TYPE_F32:
                *ret = (Repack) { 1, 4, 4, 0, false, 0 };
                return 0;
        case GGML_TYPE_F16:
                *ret = (Repack) { 1, 2, 2, 0, false, 0 };
                return 0;
        case GGML_TYPE_Q8_0:
                *ret = (Repack) { QK8_0, sizeof(BlockQ8_0), QK8_0, offsetof(BlockQ8_0, qs), true, 0 };
                return 0;
        case GGML_TYPE_Q4_0:
                *ret = (Repack) { QK4_0, sizeof(BlockQ4_0), QK4_0 / 2, offsetof(BlockQ4_0, qs), true, 0 };
                return 0;
        case GGML_TYPE_Q4_K:
                *ret = (Repack) { QK_K, sizeof(BlockQ4_K), sizeof(BlockQ4_K), 0, false, 0 };
                return 0;
        case GGML_TYPE_Q5_K:
                *ret = (Repack) { QK_K, sizeof(BlockQ5_K), sizeof(BlockQ5_K), 0, false, 0 };
                return 0;
        case GGML_TYPE_Q6_K:
                *ret = (Repack) { QK_K, sizeof(BlockQ6_K), offsetof(BlockQ6_K, d), 0, true,
                                  offsetof(BlockQ6_K, d) };
                return 0;
        default:
                return -EINVAL;
        }
}

static uint64_t align_up(uint64_t v, uint64_t a) {
        return (v + a - 1) / a * a;
}

int gpu_tensor_row_layout(GgmlType type, uint32_t n_cols, uint64_t *ret_qs_bytes, uint64_t *ret_d_bytes) {
        Repack rp;
        int r;

        r = repack_of(type, &rp);
        if (r < 0)
                return r;
        if (n_cols == 0 || n_cols % rp.block_elems != 0)
                return -EINVAL;
        uint64_t nb = n_cols / rp.block_elems;
        if (ret_qs_bytes)
                *ret_qs_bytes = nb * rp.qs_unit;
        if (ret_d_bytes)
                *ret_d_bytes = rp.has_d ? nb * 2 : 0;
        return 0;
}

/* Chunk layout: QS at 0, D at the next 256-byte boundary, size padded to 256. */
static void chunk_layout(const Repack *rp, uint64_t blocks, uint64_t *ret_d_offset, uint64_t *ret_size) {
        uint64_t qs = blocks * rp->qs_unit;
        uint64_t d_offset = rp->has_d ? align_up(qs, REGION_ALIGN) : 0;
        uint64_t end = rp->has_d ? d_offset + blocks * 2 : qs;
        *ret_d_offset = d_offset;
        *ret_size = align_up(end, REGION_ALIGN);
}

typedef struct Fill {
        const Repack *rp;
        const uint8_t *const *parts;    /* each part's first file block; NULL: zero rows */
        const uint64_t *part_block0;    /* part p holds blocks [part_block0[p], part_block0[p + 1]) */
        uint32_t n_parts;
        uint64_t block0;                /* the chunk's first block, counted over all parts */
        uint64_t blocks;
        uint64_t qs_bytes, d_offset, d_bytes;
} Fill;

/* Copies bytes [pos, pos + len) of a gathered region: unit i comes from src + i * stride + from. */
static void gather(uint8_t *dst, const uint8_t *src, uint32_t unit, uint32_t stride, uint32_t from, uint64_t pos,
                   uint64_t len) {
        if (unit == stride) {
                memcpy(dst, src + pos, len);
                return;
        }
        while (len > 0) {
                uint64_t i = pos / unit, o = pos % unit;
                uint64_t n = MIN(len, unit - o);
                memcpy(dst, src + i * stride + from + o, n);
                dst += n;
                pos += n;
                len -= n;
        }
}

/* gather() over the parts: each run of units that lies in one part is gathered from that part. */
static void gather_parts(const Fill *f, uint8_t *dst, uint32_t unit, uint32_t from, uint64_t pos, uint64_t len) {
        uint32_t p = 0;

        while (len > 0) {
                uint64_t block = f->block0 + pos / unit;
                while (p + 1 < f->n_parts && block >= f->part_block0[p + 1])
                        p++;
                /* Bytes left in this part, in the region's numbering. */
                uint64_t end = (f->part_block0[p + 1] - f->block0) * unit;
                uint64_t n = MIN(len, end - pos);
                uint64_t rel = pos + (f->block0 - f->part_block0[p]) * unit;
                if (f->parts[p])
                        gather(dst, f->parts[p], unit, f->rp->block_bytes, from, rel, n);
                else
                        memset(dst, 0, n);
                dst += n;
                pos += n;
                len -= n;
        }
}

static int fill_chunk(void *userdata, void *staging, uint64_t dst_offset, uint64_t len) {
        const Fill *f = userdata;
        uint8_t *out = staging;

        while (len > 0) {
                uint64_t n;
                if (dst_offset < f->qs_bytes) {
                        n = MIN(len, f->qs_bytes - dst_offset);
                        gather_parts(f, out, f->rp->qs_unit, f->rp->qs_from, dst_offset, n);
                } else if (f->d_bytes > 0 && dst_offset >= f->d_offset && dst_offset < f->d_offset + f->d_bytes) {
                        n = MIN(len, f->d_offset + f->d_bytes - dst_offset);
                        gather_parts(f, out, 2, f->rp->d_from, dst_offset - f->d_offset, n);
                } else {
                        /* Padding: up to the D region, or to the end. */
                        uint64_t next = f->d_bytes > 0 && dst_offset < f->d_offset ? f->d_offset : UINT64_MAX;
                        n = MIN(len, next - dst_offset);
                        memset(out, 0, n);
                }
                out += n;
                dst_offset += n;
                len -= n;
        }
        return 0;
}

GpuTensor *gpu_tensor_free(GpuTensor *t) {
        if (!t)
                return NULL;
        for (uint32_t i = 0; i < t->n_chunks; i++)
                gpu_buffer_free(t->chunks[i].buffer);
        free(t->chunks);
        free(t);
        return NULL;
}

static int upload_parts(GpuDevice *d, GgmlType type, uint32_t n_cols, uint32_t n_parts, const void *const parts[],
                        const uint32_t part_rows[], uint32_t max_rows_per_chunk, GpuTensor **ret) {
        _cleanup_(gpu_tensor_freep) GpuTensor *t = NULL;
        _cleanup_free_ uint64_t *part_block0 = NULL;
        const GpuCaps *caps = gpu_device_caps(d);
        uint64_t total_rows = 0;
        Repack rp;
        int r;

        if (!ret || n_parts == 0 || !parts || !part_rows)
                return -EINVAL;
        r = repack_of(type, &rp);
        if (r < 0)
                return r;
        if (n_cols == 0 || n_cols % rp.block_elems != 0)
                return -EINVAL;
        uint64_t blocks_per_row = n_cols / rp.block_elems;

        part_block0 = malloc(((size_t) n_parts + 1) * sizeof *part_block0);
        if (!part_block0)
                return -ENOMEM;
        for (uint32_t p = 0; p < n_parts; p++) {
                part_block0[p] = total_rows * blocks_per_row;
                total_rows += part_rows[p];
        }
        part_block0[n_parts] = total_rows * blocks_per_row;
        if (total_rows == 0 || total_rows > UINT32_MAX)
                return -EINVAL;
        uint32_t n_rows = (uint32_t) total_rows;

        uint64_t dev_row_bytes = blocks_per_row * (rp.qs_unit + (rp.has_d ? 2 : 0));
        uint64_t limit = MIN(MIN(caps->max_storage_buffer_range, caps->max_allocation), CHUNK_MAX_BYTES);

        /* Rows per chunk: what fits with both regions' padding, then the caller's cap. */
        uint64_t slack = 2 * REGION_ALIGN;
        uint64_t rows_fit = limit > slack ? (limit - slack) / dev_row_bytes : 0;
        if (rows_fit == 0)
                return -EFBIG;
        uint32_t per_chunk = (uint32_t) MIN(rows_fit, (uint64_t) n_rows);
        if (max_rows_per_chunk > 0)
                per_chunk = MIN(per_chunk, max_rows_per_chunk);

        t = calloc(1, sizeof *t);
        if (!t)
                return -ENOMEM;
        t->type = type;
        t->n_cols = n_cols;
        t->n_rows = n_rows;
        uint32_t n_chunks = (n_rows + per_chunk - 1) / per_chunk;
        t->chunks = calloc(n_chunks, sizeof *t->chunks);
        if (!t->chunks)
                return -ENOMEM;

        for (uint32_t i = 0; i < n_chunks; i++) {
                GpuTensorChunk *c = &t->chunks[i];
                uint64_t size;

                c->row0 = i * per_chunk;
                c->n_rows = MIN(per_chunk, n_rows - c->row0);
                uint64_t blocks = (uint64_t) c->n_rows * blocks_per_row;
                chunk_layout(&rp, blocks, &c->d_offset, &size);
                c->qs_offset = 0;

                r = gpu_buffer_new(d, size, GPU_MEMORY_DEVICE, &c->buffer);
                if (r < 0)
                        return r;
                t->n_chunks++;
                t->device_bytes += size;

                Fill f = {
                        .rp = &rp,
                        .parts = (const uint8_t *const *) parts,
                        .part_block0 = part_block0,
                        .n_parts = n_parts,
                        .block0 = (uint64_t) c->row0 * blocks_per_row,
                        .blocks = blocks,
                        .qs_bytes = blocks * rp.qs_unit,
                        .d_offset = c->d_offset,
                        .d_bytes = rp.has_d ? blocks * 2 : 0,
                };
                r = gpu_buffer_write_with(c->buffer, 0, size, fill_chunk, &f);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(t);
        return 0;
}

int gpu_tensor_upload_split(GpuDevice *d, GgmlType type, uint32_t n_cols, uint32_t n_rows, const void *data,
                            uint32_t max_rows_per_chunk, GpuTensor **ret) {
        if (!data || n_rows == 0)
                return -EINVAL;
        return upload_parts(d, type, n_cols, 1, &data, &n_rows, max_rows_per_chunk, ret);
}

int gpu_tensor_upload(GpuDevice *d, GgmlType type, uint32_t n_cols, uint32_t n_rows, const void *data,
                      GpuTensor **ret) {
        return gpu_tensor_upload_split(d, type, n_cols, n_rows, data, 0, ret);
}

int gpu_tensor_upload_rows(GpuDevice *d, GgmlType type, uint32_t n_cols, uint32_t n_parts, const void *const parts[],
                           const uint32_t part_rows[], uint32_t max_rows_per_chunk, GpuTensor **ret) {
        return upload_parts(d, type, n_cols, n_parts, parts, part_rows, max_rows_per_chunk, ret);
}
