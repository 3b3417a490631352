/* SPDX-License-Identifier: MIT */
/*
 * Tuning aid for the matrix x vector kernels (not a test): GPU time and
 * bandwidth per weight type at one shape, with the default parameters and,
 * with --sweep, a grid of pipeline x block_size x num_rows x num_units x
 * max_groups (x dequant, and unit size for Q8_0/Q4_0), and for the quantised
 * types on devices with integer dot products block_size x num_rows x
 * group_loops x int_digits of that path, as a fraction of the
 * device's measured copy bandwidth. Each line is one setting; a sweep ends
 * with the best setting per type and shape.
 *
 *   bench-weights [--sweep] [--nv=N] [--rows=R] [--cols=K] [--iter=N]
 *                 [--block=N] [--num-rows=N] [--dequant=f32|f16|h16|dot]
 *                 [--num-units=N] [--units=wide|word|row] [--groups=N]
 *                 [--pipeline=on|off] [--loops=N] [--digits=1|2] [TYPE...]
 *
 * Without --sweep, quantised types on a device with integer dot products
 * also run both arithmetics' defaults (dq f16 / dot), whichever the device's
 * default is. Fixed knobs (--block= ...) pin that knob in a sweep too. Defaults: 4096
 * rows x 14336 columns and 14336 x 4096, one vector, all weight types.
 * Device: $INFERD_TEST_DEVICE (default 0).
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

typedef struct Best {
        double pct;
        char line[200];
} Best;

/* Times one setting; returns the percentage of the copy bandwidth (0 on failure). */
static double run(GpuDevice *dev, const GpuTensor *w, uint32_t nv, uint32_t iter, const GpuMatvecParams *mp,
                  double copy_bps, Best *best) {
        GpuMatvecParams eff;
        GgmlType t = w->type;
        char desc[120], line[200];
        double ns;
        int r;

        gpu_matvec_default_params(dev, t, w->n_cols, nv, &eff);
        if (mp && mp->block_size)
                eff.block_size = mp->block_size;
        if (mp && mp->num_rows)
                eff.num_rows = mp->num_rows;
        if (mp && mp->dequant)
                eff.dequant = mp->dequant;
        if (mp && mp->num_units)
                eff.num_units = mp->num_units;
        if (mp && mp->units)
                eff.units = mp->units;
        if (mp && mp->max_groups)
                eff.max_groups = mp->max_groups;
        if (mp && mp->pipeline)
                eff.pipeline = mp->pipeline;
        if (mp && mp->group_loops)
                eff.group_loops = mp->group_loops;
        if (mp && mp->int_digits)
                eff.int_digits = mp->int_digits;
        bool quant = t != GGML_TYPE_F32 && t != GGML_TYPE_F16;
        if (quant && eff.dequant == GPU_MATVEC_DEQUANT_DOT && !(mp && mp->units))
                eff.units = GPU_MATVEC_UNITS_WIDE;      /* what gpu_op_matvec_params() takes */
        bool has_word = t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0;
        snprintf(desc, sizeof desc, "%-5s %5ux%-5u nv %u pl %d bs %3u r %2u nu %u g %5d l %u dq %s %s",
                 ggml_type_name(t), w->n_rows, w->n_cols, nv, eff.pipeline == GPU_MATVEC_PIPELINE_ON,
                 eff.block_size, eff.num_rows, eff.num_units,
                 eff.max_groups == UINT32_MAX ? -1 : (int) eff.max_groups, eff.group_loops,
                 !quant ? "-  " : eff.dequant == GPU_MATVEC_DEQUANT_F32 ? "f32"
                         : eff.dequant == GPU_MATVEC_DEQUANT_F16 ? "f16"
                         : eff.dequant == GPU_MATVEC_DEQUANT_F16MATH ? "h16"
                         : eff.int_digits == 1 ? "d8 " : "dot",
                 eff.units == GPU_MATVEC_UNITS_ROW ? "row " : !has_word ? "-   "
                         : eff.units == GPU_MATVEC_UNITS_WORD ? "word" : "wide");
        r = gpu_bench_matvec_tensor(dev, w, nv, iter, mp, &ns);
        if (r < 0) {
                printf("%s: %s\n", desc, strerror(-r));
                return 0;
        }
        double bytes = (double) ggml_row_bytes(t, w->n_cols) * w->n_rows + 4.0 * nv * ((double) w->n_rows + w->n_cols);
        double gbs = bytes / ns, pct = 100.0 * gbs * 1e9 / copy_bps;
        snprintf(line, sizeof line, "%s: %7.1f us %7.1f GB/s %5.1f%%%s", desc, ns / 1e3, gbs, pct,
                 mp ? "" : "  (default)");
        printf("%s\n", line);
        fflush(stdout);
        if (best && pct > best->pct) {
                best->pct = pct;
                memcpy(best->line, line, sizeof line);
        }
        return pct;
}

#define MAX_SETTINGS 1024

/* The integer dot product path's grid (quantised types, devices with the feature). */
static size_t sweep_grid_dot(const GpuDevice *dev, const GpuMatvecParams *fixed, GpuMatvecParams *grid, size_t n) {
        const GpuCaps *caps = gpu_device_caps(dev);
        static const uint32_t blocks[] = { 32, 64, 128, 256 }, nrows[] = { 4, 8, 16 }, loops[] = { 1, 2, 4 },
                              digits[] = { 2, 1 };

        if (fixed->dequant && fixed->dequant != GPU_MATVEC_DEQUANT_DOT)
                return n;
        for (size_t b = 0; b < ELEMENTSOF(blocks); b++)
                for (size_t r = 0; r < ELEMENTSOF(nrows); r++)
                        for (size_t l = 0; l < ELEMENTSOF(loops); l++)
                                for (size_t dg = 0; dg < ELEMENTSOF(digits); dg++) {
                                        GpuMatvecParams mp = {
                                                fixed->block_size ?: blocks[b],
                                                fixed->num_rows ?: nrows[r],
                                                GPU_MATVEC_DEQUANT_DOT,
                                                fixed->num_units ?: 1,
                                                GPU_MATVEC_UNITS_WIDE,
                                                fixed->max_groups,
                                                fixed->pipeline ?: GPU_MATVEC_PIPELINE_OFF,
                                                .group_loops = fixed->group_loops ?: loops[l],
                                                .int_digits = fixed->int_digits ?: digits[dg],
                                        };
                                        if ((fixed->block_size && b > 0) || (fixed->num_rows && r > 0) ||
                                            (fixed->group_loops && l > 0) || (fixed->int_digits && dg > 0))
                                                continue;
                                        if (mp.block_size < caps->subgroup_size ||
                                            mp.block_size > caps->max_workgroup_invocations || n >= MAX_SETTINGS)
                                                continue;
                                        grid[n++] = mp;
                                }
        return n;
}

/* The sweep's grid, with pinned knobs taking one value; returns the number of settings. */
static size_t sweep_grid(const GpuDevice *dev, GgmlType t, const GpuMatvecParams *fixed,
                         GpuMatvecParams grid[MAX_SETTINGS]) {
        const GpuCaps *caps = gpu_device_caps(dev);
        static const uint32_t blocks[] = { 32, 64, 128 }, nrows[] = { 2, 4 }, nunits[] = { 1, 2 },
                              groups[] = { UINT32_MAX, 1024, 512 };
        bool has_word = t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0;
        bool quant = t != GGML_TYPE_F32 && t != GGML_TYPE_F16;
        /* Packed f16 arithmetic where the device has it. */
        int dq_hi = quant && caps->fp16 ? GPU_MATVEC_DEQUANT_F16MATH : GPU_MATVEC_DEQUANT_F16;
        size_t n = 0;

        if (quant && caps->int_dot)
                n = sweep_grid_dot(dev, fixed, grid, n);
        if (fixed->dequant == GPU_MATVEC_DEQUANT_DOT)
                return n;

        for (int pl = GPU_MATVEC_PIPELINE_ON; pl >= GPU_MATVEC_PIPELINE_OFF; pl--)
                for (int un = GPU_MATVEC_UNITS_WIDE; un <= (has_word ? GPU_MATVEC_UNITS_WORD : 1); un++)
                        /* f32 dequantisation only for Q4_0: the K-quants and Q8_0 measured no better. */
                        for (int dq = dq_hi;
                             dq >= (t == GGML_TYPE_Q4_0 ? GPU_MATVEC_DEQUANT_F32 : 2); dq--)
                                for (size_t b = 0; b < ELEMENTSOF(blocks); b++)
                                        for (size_t r = 0; r < ELEMENTSOF(nrows); r++)
                                                for (size_t u = 0; u < ELEMENTSOF(nunits); u++)
                                                        for (size_t g = 0; g < ELEMENTSOF(groups); g++) {
                                                                GpuMatvecParams mp = {
                                                                        fixed->block_size ?: blocks[b],
                                                                        fixed->num_rows ?: nrows[r],
                                                                        fixed->dequant ?: (GpuMatvecDequant) dq,
                                                                        fixed->num_units ?: nunits[u],
                                                                        fixed->units ?: (GpuMatvecUnits) un,
                                                                        fixed->max_groups ?: groups[g],
                                                                        fixed->pipeline ?: (GpuMatvecPipeline) pl,
                                                                };
                                                                /* Pinned knobs repeat settings: only the first. */
                                                                if ((fixed->block_size && b > 0) ||
                                                                    (fixed->num_rows && r > 0) ||
                                                                    (fixed->num_units && u > 0) ||
                                                                    (fixed->max_groups && g > 0) ||
                                                                    (fixed->dequant && dq != dq_hi) ||
                                                                    (fixed->units && un != 1) ||
                                                                    (fixed->pipeline && pl != 2))
                                                                        continue;
                                                                if (mp.block_size < caps->subgroup_size ||
                                                                    mp.block_size > caps->max_workgroup_invocations ||
                                                                    n >= MAX_SETTINGS)
                                                                        continue;
                                                                grid[n++] = mp;
                                                        }
        return n;
}

static void sweep(GpuDevice *dev, const GpuTensor *w, uint32_t nv, uint32_t iter, const GpuMatvecParams *fixed,
                  double copy_bps, Best *best) {
        static GpuMatvecParams grid[MAX_SETTINGS];
        size_t n = sweep_grid(dev, w->type, fixed, grid);
        double ns;

        /* Build every pipeline first and then keep the GPU busy for a while: compiling between
         * timings leaves it idle, and its clocks (memory clock included) drop with the load. */
        for (size_t i = 0; i < n; i++)
                (void) gpu_bench_matvec_tensor(dev, w, nv, 1, &grid[i], &ns);
        (void) gpu_bench_matvec_tensor(dev, w, nv, 2000, NULL, &ns);
        for (size_t i = 0; i < n; i++)
                run(dev, w, nv, iter, &grid[i], copy_bps, best);
}

int main(int argc, char **argv) {
        uint32_t rows = 0, cols = 0, nv = 1, iter = 50;
        bool do_sweep = false;
        GpuMatvecParams fixed = {};
        GgmlType types[ELEMENTSOF(all_types)];
        size_t n_types = 0;
        GpuTestCtx T;
        double copy_bps;
        int r;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--sweep") == 0)
                        do_sweep = true;
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
                else if (strcmp(argv[i], "--dequant=h16") == 0)
                        fixed.dequant = GPU_MATVEC_DEQUANT_F16MATH;
                else if (strcmp(argv[i], "--dequant=dot") == 0)
                        fixed.dequant = GPU_MATVEC_DEQUANT_DOT;
                else if (strncmp(argv[i], "--loops=", 8) == 0)
                        fixed.group_loops = (uint32_t) atoi(argv[i] + 8);
                else if (strncmp(argv[i], "--digits=", 9) == 0)
                        fixed.int_digits = (uint32_t) atoi(argv[i] + 9);
                else if (strncmp(argv[i], "--num-units=", 12) == 0)
                        fixed.num_units = (uint32_t) atoi(argv[i] + 12);
                else if (strcmp(argv[i], "--units=wide") == 0)
                        fixed.units = GPU_MATVEC_UNITS_WIDE;
                else if (strcmp(argv[i], "--units=word") == 0)
                        fixed.units = GPU_MATVEC_UNITS_WORD;
                else if (strcmp(argv[i], "--units=row") == 0)
                        fixed.units = GPU_MATVEC_UNITS_ROW;
                else if (strncmp(argv[i], "--groups=", 9) == 0)
                        fixed.max_groups = (uint32_t) strtoul(argv[i] + 9, NULL, 10);
                else if (strcmp(argv[i], "--pipeline=on") == 0)
                        fixed.pipeline = GPU_MATVEC_PIPELINE_ON;
                else if (strcmp(argv[i], "--pipeline=off") == 0)
                        fixed.pipeline = GPU_MATVEC_PIPELINE_OFF;
                else if (strncmp(argv[i], "--iter=", 7) == 0)
                        iter = (uint32_t) atoi(argv[i] + 7);
                else if (type_by_name(argv[i]) != GGML_TYPE__MAX && n_types < ELEMENTSOF(types))
                        types[n_types++] = type_by_name(argv[i]);
                else {
                        fprintf(stderr,
                                "usage: %s [--sweep] [--nv=N] [--rows=R] [--cols=K] [--iter=N]\n"
                                "       [--block=N] [--num-rows=N] [--dequant=f32|f16|h16|dot]\n"
                                "       [--num-units=N] [--units=wide|word|row] [--groups=N] [--pipeline=on|off]\n"
                                "       [--loops=N] [--digits=1|2]\n"
                                "       [TYPE...]\n",
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
        printf("# %s: subgroup %u%s, integer dot products %s, copy bandwidth %.1f GB/s\n", gpu_device_info(T.dev)->name,
               caps->subgroup_size, gpu_device_use_subgroup(T.dev) ? "" : " (not used)",
               !caps->int_dot ? "no" : caps->int_dot_fast ? "in hardware" : "emulated", copy_bps / 1e9);

        const uint32_t shapes[][2] = { { 4096, 14336 }, { 14336, 4096 } };
        Best best[ELEMENTSOF(shapes)][ELEMENTSOF(all_types)] = {};
        bool has_fixed = fixed.block_size || fixed.num_rows || fixed.dequant || fixed.num_units || fixed.units ||
                         fixed.max_groups || fixed.pipeline || fixed.group_loops || fixed.int_digits;
        for (size_t i = 0; i < n_types; i++)
                for (size_t s = 0; s < ELEMENTSOF(shapes); s++) {
                        uint32_t R = rows ? rows : shapes[s][0], C = cols ? cols : shapes[s][1];
                        GpuTensor *w = NULL;
                        if (s > 0 && (rows || cols))
                                break;
                        r = gpu_bench_weights(T.dev, types[i], R, C, &w);
                        if (r < 0) {
                                printf("%s %ux%u: %s\n", ggml_type_name(types[i]), R, C, strerror(-r));
                                continue;
                        }
                        run(T.dev, w, nv, iter, NULL, copy_bps, &best[s][i]);
                        bool quant = types[i] != GGML_TYPE_F32 && types[i] != GGML_TYPE_F16;
                        if (!has_fixed && !do_sweep && quant && caps->int_dot) {
                                /* Both arithmetics' defaults, to compare on this device. */
                                static const GpuMatvecParams f16 = { .dequant = GPU_MATVEC_DEQUANT_F16 };
                                static const GpuMatvecParams dot = { .dequant = GPU_MATVEC_DEQUANT_DOT };
                                run(T.dev, w, nv, iter, &f16, copy_bps, &best[s][i]);
                                run(T.dev, w, nv, iter, &dot, copy_bps, &best[s][i]);
                        }
                        if (has_fixed && !do_sweep)
                                run(T.dev, w, nv, iter, &fixed, copy_bps, &best[s][i]);
                        if (do_sweep)
                                sweep(T.dev, w, nv, iter, &fixed, copy_bps, &best[s][i]);
                        gpu_tensor_free(w);
                }
        if (do_sweep) {
                printf("# best per type and shape\n");
                for (size_t s = 0; s < ELEMENTSOF(shapes); s++)
                        for (size_t i = 0; i < n_types; i++)
                                if (best[s][i].pct > 0)
                                        printf("%s\n", best[s][i].line);
        }
        gpu_test_close(&T);
        return 0;
}
