/* SPDX-License-Identifier: MIT */
/*
 * Tuning aid for the matrix x vector kernels (not a test): GPU time and
 * bandwidth per weight type at one shape, with the default parameters and,
 * with --sweep, every block_size x num_rows (x dequant for quantised types)
 * combination, as a fraction of the device's measured copy bandwidth.
 *
 *   bench-weights [--sweep] [--nv=N] [--rows=R] [--cols=K] [--iter=N]
 *                 [--block=N] [--num-rows=N] [--dequant=f32|f16] [TYPE...]
 *
 * Defaults: 4096 rows x 14336 columns and 14336 x 4096, one vector, all
 * weight types. Device: $INFERD_TEST_DEVICE (default 0).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "gpu-test.h"
#include "ops-weights.h"
#include "quant.h"

static const GgmlType all_types[] = {
        GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};

static GgmlType type_by_name(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++)
                if (strcasecmp(ggml_type_name(all_types[i]), s) == 0)
                        return all_types[i];
        return GGML_TYPE__MAX;
}

static void run(GpuDevice *dev, GgmlType t, uint32_t rows, uint32_t cols, uint32_t nv, uint32_t iter,
                const GpuMatvecParams *mp, double copy_bps) {
        GpuMatvecParams eff;
        double ns;
        int r;

        gpu_matvec_default_params(dev, t, cols, nv, &eff);
        if (mp && mp->block_size)
                eff.block_size = mp->block_size;
        if (mp && mp->num_rows)
                eff.num_rows = mp->num_rows;
        if (mp && mp->dequant)
                eff.dequant = mp->dequant;
        const char *dq = t == GGML_TYPE_F32 || t == GGML_TYPE_F16 ? "-  "
                         : eff.dequant == GPU_MATVEC_DEQUANT_F32 ? "f32" : "f16";
        r = gpu_bench_matvec_params(dev, t, rows, cols, nv, iter, mp, &ns);
        if (r < 0) {
                printf("%-5s %6ux%-6u nv %u block %3u rows %2u dequant %s: %s\n", ggml_type_name(t), rows, cols,
                       nv, eff.block_size, eff.num_rows, dq, strerror(-r));
                return;
        }
        double bytes = (double) ggml_row_bytes(t, cols) * rows + 4.0 * nv * ((double) rows + cols);
        double gbs = bytes / ns;
        printf("%-5s %6ux%-6u nv %u block %3u rows %2u dequant %s: %9.1f us %8.1f GB/s %6.1f%%%s\n",
               ggml_type_name(t), rows, cols, nv, eff.block_size, eff.num_rows, dq, ns / 1e3, gbs,
               100.0 * gbs * 1e9 / copy_bps, mp ? "" : "  (default)");
        fflush(stdout);
}

int main(int argc, char **argv) {
        uint32_t rows = 0, cols = 0, nv = 1, iter = 20;
        bool sweep = false;
        GpuMatvecParams fixed = {};
        GgmlType types[ELEMENTSOF(all_types)];
        size_t n_types = 0;
        GpuTestCtx T;
        double copy_bps;
        int r;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--sweep") == 0)
                        sweep = true;
                else if (strncmp(argv[i], "--nv=", 5) == 0)
                        nv = (uint32_t) atoi(argv[i] + 5);
                else if (strncmp(argv[i], "--rows=", 7) == 0)
                        rows = (uint32_t) atoi(argv[i] + 7);
                else if (strncmp(argv[i], "--cols=", 7) == 0)
                        cols = (uint32_t) atoi(argv[i] + 7);
                else if (strncmp(argv[i], "--block=", 8) == 0)
                        fixed.block_size = (uint32_t) atoi(argv[i] + 8);
                else if (strncmp(argv[i], "--num-rows=", 11) == 0)
                        fixed.num_rows = (uint32_t) atoi(argv[i] + 11);
                else if (strcmp(argv[i], "--dequant=f32") == 0)
                        fixed.dequant = GPU_MATVEC_DEQUANT_F32;
                else if (strcmp(argv[i], "--dequant=f16") == 0)
                        fixed.dequant = GPU_MATVEC_DEQUANT_F16;
                else if (strncmp(argv[i], "--iter=", 7) == 0)
                        iter = (uint32_t) atoi(argv[i] + 7);
                else if (type_by_name(argv[i]) != GGML_TYPE__MAX && n_types < ELEMENTSOF(types))
                        types[n_types++] = type_by_name(argv[i]);
                else {
                        fprintf(stderr,
                                "usage: %s [--sweep] [--nv=N] [--rows=R] [--cols=K] [--iter=N]\n"
                                "       [--block=N] [--num-rows=N] [--dequant=f32|f16] [TYPE...]\n",
                                argv[0]);
                        return 2;
                }
        }
        if (n_types == 0) {
                memcpy(types, all_types, sizeof all_types);
                n_types = ELEMENTSOF(all_types);
        }

        gpu_test_open(&T);
        const GpuCaps *caps = gpu_device_caps(T.dev);
        r = gpu_bench_copy_bandwidth(T.dev, MIN(caps->max_storage_buffer_range / 2, 256ULL << 20), &copy_bps);
        if (r < 0) {
                fprintf(stderr, "copy bandwidth: %s\n", strerror(-r));
                return 1;
        }
        printf("# %s: subgroup %u%s, copy bandwidth %.1f GB/s\n", gpu_device_info(T.dev)->name, caps->subgroup_size,
               gpu_device_use_subgroup(T.dev) ? "" : " (not used)", copy_bps / 1e9);

        const uint32_t shapes[][2] = { { 4096, 14336 }, { 14336, 4096 } };
        for (size_t s = 0; s < ELEMENTSOF(shapes); s++) {
                uint32_t R = rows ? rows : shapes[s][0], C = cols ? cols : shapes[s][1];
                if (s > 0 && (rows || cols))
                        break;
                for (size_t i = 0; i < n_types; i++) {
                        bool has_fixed = fixed.block_size || fixed.num_rows || fixed.dequant;
                        run(T.dev, types[i], R, C, nv, iter, has_fixed ? &fixed : NULL, copy_bps);
                        if (!sweep)
                                continue;
                        static const uint32_t blocks[] = { 32, 64, 128, 256 }, nrows[] = { 1, 2, 4, 8 };
                        bool quant = types[i] != GGML_TYPE_F32 && types[i] != GGML_TYPE_F16;
                        for (int dq = GPU_MATVEC_DEQUANT_F32; dq <= (quant ? GPU_MATVEC_DEQUANT_F16 : 1); dq++)
                                for (size_t b = 0; b < ELEMENTSOF(blocks); b++)
                                        for (size_t n = 0; n < ELEMENTSOF(nrows); n++) {
                                                GpuMatvecParams mp = { blocks[b], nrows[n], (GpuMatvecDequant) dq };
                                                if (blocks[b] < caps->subgroup_size ||
                                                    blocks[b] > caps->max_workgroup_invocations)
                                                        continue;
                                                run(T.dev, types[i], R, C, nv, iter, &mp, copy_bps);
                                        }
                }
        }
        gpu_test_close(&T);
        return 0;
}
