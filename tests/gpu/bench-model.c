/* SPDX-License-Identifier: MIT */
/*
 * Prompt processing and generation speed of a GGUF model on one device, in
 * this process (no daemon), measured the way BenchModel does it:
 *
 *   build/tests/bench-model MODEL.gguf [-p 512] [-n 128] [-r 3] [--device N] [--json] [--profile] [--ctx N]
 *                           [--sample host|device]
 *
 * Also prints the decode roofline: generated tokens/s x bytes of weights read
 * per token, against the device's measured copy bandwidth. --profile adds
 * where a decode step's GPU time goes (model_profile_step(), timestamps
 * after every barrier), summed over the blocks, median of 5 steps. --ctx N
 * sizes the context as the daemon would with MaxContext=N (at most the
 * model's own), instead of just what the runs need: decode kernels are
 * recorded for any position, so their grids see the whole context.
 * --sample generates with llama.cpp's default sampler (temperature 0.8,
 * top-k 40, top-p 0.95, min-p 0.05) instead of greedily: "host" reads the
 * whole row of logits and samples it there (model_eval + sampler_sample),
 * "device" selects the candidates on the device (model_eval_top +
 * sampler_sample_top), as the daemon does on GPUs.
 */
#include <getopt.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "engine.h"
#include "macro.h"
#include "model.h"
#include "picker.h"
#include "sampler.h"
#include "time-util.h"

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

#define PROFILE_RUNS 5

/* Decode-step GPU time by kind of step, summed over the blocks: median of PROFILE_RUNS passes. */
static int profile(ModelContext *ctx, bool json) {
        static ModelProfileEntry e[PROFILE_RUNS][MODEL_PROFILE_MAX];
        const char *names[64];
        double per[64][PROFILE_RUNS] = {}, total[PROFILE_RUNS] = {};
        unsigned count[64] = {};
        size_t n_names = 0;
        int n = 0;

        for (int run = 0; run < PROFILE_RUNS; run++) {
                n = model_profile_step(ctx, 1, e[run], MODEL_PROFILE_MAX);
                if (n < 0)
                        return n;
                for (int i = 0; i < n; i++) {
                        size_t k;
                        for (k = 0; k < n_names && strcmp(names[k], e[run][i].name) != 0; k++)
                                ;
                        if (k == n_names) {
                                if (n_names == ELEMENTSOF(names))
                                        return -ENOBUFS;
                                names[n_names++] = e[run][i].name;
                        }
                        per[k][run] += e[run][i].ns;
                        total[run] += e[run][i].ns;
                        if (run == 0)
                                count[k]++;
                }
        }
        for (size_t k = 0; k < n_names; k++)
                qsort(per[k], PROFILE_RUNS, sizeof(double), cmp_double);
        qsort(total, PROFILE_RUNS, sizeof(double), cmp_double);
        double t = total[PROFILE_RUNS / 2];
        if (json) {
                printf("{\"profile_us\":%.1f,\"dispatch_steps\":%d,\"steps\":[", t / 1e3, n);
                for (size_t k = 0; k < n_names; k++)
                        printf("%s{\"name\":\"%s\",\"count\":%u,\"us\":%.1f}", k ? "," : "", names[k], count[k],
                               per[k][PROFILE_RUNS / 2] / 1e3);
                printf("]}\n");
                return 0;
        }
        printf("decode step: %.1f us of GPU time in %d steps between barriers\n", t / 1e3, n);
        for (size_t k = 0; k < n_names; k++)
                printf("  %-20s x%-4u %9.1f us  %5.1f%%  (%.1f us each)\n", names[k], count[k],
                       per[k][PROFILE_RUNS / 2] / 1e3, 100 * per[k][PROFILE_RUNS / 2] / t,
                       per[k][PROFILE_RUNS / 2] / 1e3 / count[k]);
        return 0;
}

typedef enum Sampling { SAMPLE_GREEDY, SAMPLE_HOST, SAMPLE_DEVICE } Sampling;
static const char *const sampling_name[] = { "greedy", "host", "device" };

static void stats(const double *v, int n, double *mean, double *sd) {
        double s = 0, q = 0;
        for (int i = 0; i < n; i++)
                s += v[i];
        *mean = s / n;
        for (int i = 0; i < n; i++)
                q += (v[i] - *mean) * (v[i] - *mean);
        *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
}

int main(int argc, char *argv[]) {
        static const struct option opts[] = {
                { "device", required_argument, NULL, 'd' }, { "json", no_argument, NULL, 'j' },
                { "profile", no_argument, NULL, 'P' }, { "ctx", required_argument, NULL, 'c' },
                { "sample", required_argument, NULL, 's' }, {}
        };
        Sampling how = SAMPLE_GREEDY;
        unsigned n_prompt = 512, n_gen = 128, reps = 3, device = 0, n_ctx = 0;
        bool json = false, prof = false;
        int c, r;

        while ((c = getopt_long(argc, argv, "p:n:r:", opts, NULL)) >= 0)
                switch (c) {
                case 'p': n_prompt = (unsigned) atoi(optarg); break;
                case 'n': n_gen = (unsigned) atoi(optarg); break;
                case 'r': reps = (unsigned) MAX(1, atoi(optarg)); break;
                case 'd': device = (unsigned) atoi(optarg); break;
                case 'j': json = true; break;
                case 'P': prof = true; break;
                case 'c': n_ctx = (unsigned) atoi(optarg); break;
                case 's':
                        if (strcmp(optarg, "host") == 0)
                                how = SAMPLE_HOST;
                        else if (strcmp(optarg, "device") == 0)
                                how = SAMPLE_DEVICE;
                        else {
                                fprintf(stderr, "--sample: host or device, not %s\n", optarg);
                                return 2;
                        }
                        break;
                default: return 2;
                }
        if (optind >= argc) {
                fprintf(stderr, "usage: bench-model MODEL.gguf [-p N] [-n N] [-r N] [--device N] [--json] "
                        "[--profile] [--ctx N] [--sample host|device]\n");
                return 2;
        }

        _cleanup_(gpu_instance_freep) GpuInstance *inst = NULL;
        _cleanup_(gpu_device_freep) GpuDevice *dev = NULL;
        _cleanup_(model_freep) Model *m = NULL;
        _cleanup_(model_context_freep) ModelContext *ctx = NULL;
        _cleanup_free_ char *err = NULL;
        if (gpu_instance_new(&inst) < 0 || gpu_device_new(inst, device, NULL, &dev) < 0) {
                fprintf(stderr, "no device %u\n", device);
                return 1;
        }
        double copy_bps = 0;
        (void) gpu_bench_copy_bandwidth(dev, MIN(gpu_device_caps(dev)->max_storage_buffer_range / 2, 256ULL << 20),
                                        &copy_bps);
        /* The context: just what the runs need, or --ctx (the daemon sizes it from the model, up to
         * MaxContext=), which decode kernels sized for any position feel. */
        if (n_ctx < n_prompt + n_gen + 8)
                n_ctx = n_prompt + n_gen + 8;
        ModelOptions mo = { .max_ctx = n_ctx + 8 };
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        r = model_load(dev, argv[optind], &mo, &m, &err);
        if (r < 0) {
                fprintf(stderr, "load: %s\n", err ? err : strerror(-r));
                return 1;
        }
        double load_s = (now_usec(CLOCK_MONOTONIC) - t0) * 1e-6;
        /* As the daemon does: no more than the model's own context (unless the runs need more). */
        uint32_t n_train = model_hparams(m)->n_ctx_train;
        if (n_train && n_ctx > n_train)
                n_ctx = MAX(n_train, n_prompt + n_gen + 8);
        r = model_context_new(m, n_ctx, &ctx);
        if (r < 0) {
                fprintf(stderr, "context: %s\n", strerror(-r));
                return 1;
        }
        uint32_t n_vocab = model_hparams(m)->n_vocab;
        int32_t *tokens = calloc(MAX(n_prompt, 1), sizeof(int32_t));
        double *pp = calloc(reps, sizeof(double)), *tg = calloc(reps, sizeof(double));
        /* Greedy: the argmax on the device. Sampled: llama.cpp's defaults, the candidates selected where
         * --sample says. */
        SamplerParams sp;
        sampler_params_default(&sp);
        sp.seed = 1;
        if (how == SAMPLE_GREEDY)
                sp.temperature = 0.0f;
        Sampler *smp = sampler_new(&sp, n_vocab);
        Picker *pick = NULL;
        if (!tokens || !pp || !tg || !smp || picker_new(ctx, smp, how == SAMPLE_DEVICE, &pick) < 0) {
                fprintf(stderr, "out of memory\n");
                return 1;
        }
        for (unsigned i = 0; i < n_prompt; i++)
                tokens[i] = (int32_t) ((i * 7919u + 13u) % n_vocab);
        for (unsigned rep = 0; rep <= reps; rep++) {
                int32_t t = 1;
                uint64_t a, b;
                model_context_truncate(ctx, 0);
                a = now_usec(CLOCK_MONOTONIC);
                if (n_prompt && (r = model_eval_greedy(ctx, tokens, n_prompt, &t)) < 0)
                        break;
                b = now_usec(CLOCK_MONOTONIC);
                if (rep)
                        pp[rep - 1] = n_prompt ? n_prompt / ((b - a) * 1e-6) : 0;
                model_context_truncate(ctx, 0);
                t = 1;
                a = now_usec(CLOCK_MONOTONIC);
                for (unsigned i = 0; i < n_gen && r >= 0; i++)
                        r = picker_next(pick, &t, 1, n_gen - i - 1, &t);
                b = now_usec(CLOCK_MONOTONIC);
                if (rep)
                        tg[rep - 1] = n_gen ? n_gen / ((b - a) * 1e-6) : 0;
        }
        if (r < 0) {
                fprintf(stderr, "eval: %s\n", strerror(-r));
                return 1;
        }
        double ppm, pps, tgm, tgs;
        stats(pp, (int) reps, &ppm, &pps);
        stats(tg, (int) reps, &tgm, &tgs);
        const ModelInfo *info = model_info(m);
        /* Bytes read per generated token: every weight once (the output head included). */
        double roofline = copy_bps > 0 ? tgm * (double) info->device_bytes / copy_bps : 0;
        if (json)
                printf("{\"model\":\"%s\",\"device\":\"%s\",\"params\":%llu,\"type\":\"%s\",\"bytes\":%llu,"
                       "\"load_s\":%.2f,\"pp\":%u,\"pp_tps\":%.2f,\"pp_sd\":%.2f,\"tg\":%u,\"tg_tps\":%.2f,"
                       "\"tg_sd\":%.2f,\"sampling\":\"%s\",\"copy_gbs\":%.1f,\"tg_roofline_fraction\":%.3f}\n",
                       info->name, gpu_device_info(dev)->name, (unsigned long long) info->n_params, info->file_type,
                       (unsigned long long) info->device_bytes, load_s, n_prompt, ppm, pps, n_gen, tgm, tgs,
                       sampling_name[how], copy_bps / 1e9, roofline);
        else {
                printf("model %s (%s, %.2fB params, %.2f GB on device), %s, copy %.1f GB/s, load %.1f s\n",
                       info->name, info->file_type, info->n_params / 1e9, info->device_bytes / 1e9,
                       gpu_device_info(dev)->name, copy_bps / 1e9, load_s);
                printf("pp%u: %.2f ± %.2f t/s\ntg%u: %.2f ± %.2f t/s (%.0f%% of the bandwidth roofline), sampling: %s\n",
                       n_prompt, ppm, pps, n_gen, tgm, tgs, 100 * roofline, sampling_name[how]);
        }
        if (prof) {
                /* After the generation: a context as long as the benchmark's. */
                r = profile(ctx, json);
                if (r < 0)
                        fprintf(stderr, "profile: %s\n", strerror(-r));
        }
        free(tokens);
        free(pp);
        free(tg);
        picker_free(pick);
        sampler_free(smp);
        return r < 0;
}
