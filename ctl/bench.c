/* SPDX-License-Identifier: MIT */
/*
 * inferctl bench ops: every engine kernel at LLM-sized shapes on one device,
 * with GPU time from timestamp queries, achieved GB/s and GFLOP/s, and the
 * fraction of the device's measured copy bandwidth. It opens the device in
 * this process (like a standalone benchmark) and prints figures; it does not
 * pass or fail. *
 * inferctl bench MODEL: inferd measures a loaded model (BenchModel) and this
 * prints the figures as llama-bench does.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <systemd/sd-bus.h>

#include "bench.h"
#include "bus.h"
#include "engine.h"
#include "inferctl.h"
#include "macro.h"
#include "ops-attention.h"
#include "ops-basic.h"
#include "ops-matmul.h"
#include "ops-weights.h"
#include "output.h"
#include "quant.h"
#include "select.h"
#include "tensor.h"

static long arg_device = -1;
static const char *arg_filter;
static bool arg_quick;

/* bench MODEL; -1: the daemon's default. */
static int64_t arg_n_prompt = -1;
static int64_t arg_n_gen = -1;
static int64_t arg_repetitions = -1;

/* The first option given for each benchmark, to refuse it with the other. */
static const char *arg_ops_option, *arg_model_option;

static int parse_count(const char *s, const char *what, uint32_t min, int64_t *ret) {
        unsigned long long v;
        char *end;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || end == s || *end || !(*s >= '0' && *s <= '9') || v < min || v > UINT32_MAX)
                return ctl_error_errno(EINVAL, "invalid value '%s' for %s: expected a whole number from %" PRIu32
                                       " to %" PRIu32 ".", s, what, min, UINT32_MAX);
        *ret = (int64_t) v;
        return 0;
}

int bench_parse_option(Context *ctx, int opt, const char *arg) {
        char *end;
        switch (opt) {
        case ARG_BENCH_DEVICE:
                arg_ops_option = arg_ops_option ?: "--device";
                errno = 0;
                arg_device = strtol(arg, &end, 10);
                if (errno || *end || arg_device < 0)
                        return ctl_error_errno(EINVAL, "invalid --device=%s: expected a device index.", arg);
                return 0;
        case ARG_BENCH_FILTER:
                arg_ops_option = arg_ops_option ?: "--filter";
                arg_filter = arg;
                return 0;
        case ARG_BENCH_QUICK:
                arg_ops_option = arg_ops_option ?: "--quick";
                arg_quick = true;
                return 0;
        case 'p':
                arg_model_option = arg_model_option ?: "-p";
                return parse_count(arg, "-p/--n-prompt", 0, &arg_n_prompt);
        case 'n':
                arg_model_option = arg_model_option ?: "-n";
                return parse_count(arg, "-n/--n-gen", 0, &arg_n_gen);
        case 'r':
                arg_model_option = arg_model_option ?: "-r";
                return parse_count(arg, "-r/--repetitions", 1, &arg_repetitions);
        }
        return -EINVAL;
}

typedef struct Result {
        char kernel[32];
        char type[8];
        char shape[48];
        double ns;
        double bytes;
        double flops;
} Result;

typedef struct Bench {
        GpuDevice *dev;
        double copy_bps;
        Result *results;
        size_t n;
        bool json;
} Bench;

static bool wanted(const char *kernel, const char *type) {
        char both[64];
        if (!arg_filter)
                return true;
        snprintf(both, sizeof both, "%s_%s", kernel, type);
        return strstr(both, arg_filter) != NULL;
}

static int add_result(Bench *b, const char *kernel, const char *type, const char *shape, double ns, double bytes,
                      double flops) {
        Result *a = reallocarray(b->results, b->n + 1, sizeof(Result));
        if (!a)
                return -ENOMEM;
        b->results = a;
        Result *r = &b->results[b->n++];
        snprintf(r->kernel, sizeof r->kernel, "%s", kernel);
        snprintf(r->type, sizeof r->type, "%s", type);
        snprintf(r->shape, sizeof r->shape, "%s", shape);
        r->ns = ns;
        r->bytes = bytes;
        r->flops = flops;
        if (!b->json) {
                printf("%-14s %-5s %-24s %10.1f %9.1f %9.1f %6.1f%%\n", kernel, type, shape, ns / 1000.0,
                       bytes / ns, flops / ns, b->copy_bps > 0 ? 100.0 * (bytes / (ns * 1e-9)) / b->copy_bps : 0.0);
                fflush(stdout);
        }
        return 0;
}

/* ---- a generic timer for ops that take GpuBindings ---- */

typedef int (*record_t)(GpuCmd *c, GpuDevice *d, void *u);

/*
 * Records copies of the op between two timestamps and returns GPU ns per op,
 * measured as every benchmark here is (gpu_bench_measure). A first recording
 * of one op sizes the measured one to about 20 ms of GPU time (quick: 5 ms).
 */
static int time_op(GpuDevice *d, record_t rec, void *u, double *ret_ns) {
        _cleanup_(gpu_cmd_freep) GpuCmd *c = NULL;
        uint32_t iters = 1;
        double ns = 0;
        int r;

        r = gpu_cmd_new(d, &c);
        if (r < 0)
                return r;
        for (int round = 0; round < 2; round++) {
                r = gpu_cmd_begin(c);
                if (r < 0)
                        return r;
                int t0 = gpu_cmd_timestamp(c);
                for (uint32_t i = 0; i < iters; i++) {
                        r = rec(c, d, u);
                        if (r < 0)
                                return r;
                        gpu_cmd_barrier(c);
                }
                int t1 = gpu_cmd_timestamp(c);
                r = gpu_bench_measure(c, t0, t1, iters, &ns);
                if (r < 0)
                        return r;
                if (round == 0)
                        iters = (uint32_t) MAX(1.0, MIN(200.0, (arg_quick ? 5e6 : 2e7) / MAX(ns, 1.0)));
        }
        *ret_ns = ns;
        return 0;
}

static GpuBinding bind(GpuBuffer *b) {
        return (GpuBinding) { .buffer = b };
}

/* ---- weight kernels ---- */

static const GgmlType weight_types[] = {
        GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};

static int bench_matvec(Bench *b) {
        static const uint32_t shapes[][2] = { { 4096, 4096 }, { 14336, 4096 }, { 4096, 14336 } };
        int r;

        for (size_t s = 0; s < ELEMENTSOF(shapes); s++)
                for (size_t t = 0; t < ELEMENTSOF(weight_types); t++) {
                        GgmlType type = weight_types[t];
                        uint32_t rows = shapes[s][0], cols = shapes[s][1];
                        char shape[48];
                        double ns;
                        if (!wanted("matvec", ggml_type_name(type)))
                                continue;
                        r = gpu_bench_matvec(b->dev, type, rows, cols, arg_quick ? 10 : 50, &ns);
                        if (r < 0) {
                                fprintf(stderr, "matvec %s %ux%u: %s\n", ggml_type_name(type), rows, cols, strerror(-r));
                                continue;
                        }
                        /* Which arithmetic the device's defaults gave quantised weights: integer dot products
                         * or floats (INFERD_GPU_INT_DOT). */
                        GpuMatvecParams mp;
                        gpu_matvec_default_params(b->dev, type, cols, 1, &mp);
                        snprintf(shape, sizeof shape, "%ux%u%s", rows, cols,
                                 mp.dequant == GPU_MATVEC_DEQUANT_DOT ? " int-dot" : "");
                        double bytes = (double) ggml_row_bytes(type, cols) * rows + 4.0 * (rows + cols);
                        r = add_result(b, "matvec", ggml_type_name(type), shape, ns, bytes, 2.0 * rows * cols);
                        if (r < 0)
                                return r;
                }
        return 0;
}

static int bench_matmul(Bench *b) {
        const uint32_t rows = 4096, cols = 4096, tokens = 512;
        int r;

        for (size_t t = 0; t < ELEMENTSOF(weight_types); t++) {
                GgmlType type = weight_types[t];
                char shape[48];
                double ns;
                if (!wanted("matmul", ggml_type_name(type)))
                        continue;
                r = gpu_bench_matmul(b->dev, type, rows, cols, tokens, arg_quick ? 1 : 3, &ns);
                if (r < 0) {
                        fprintf(stderr, "matmul %s: %s\n", ggml_type_name(type), strerror(-r));
                        continue;
                }
                snprintf(shape, sizeof shape, "%ux%u x%u", rows, cols, tokens);
                double bytes = (double) ggml_row_bytes(type, cols) * rows + 4.0 * tokens * (rows + cols);
                r = add_result(b, "matmul", ggml_type_name(type), shape, ns, bytes, 2.0 * rows * cols * tokens);
                if (r < 0)
                        return r;
        }
        return 0;
}

typedef struct GetRows {
        GpuTensor *w;
        GpuBuffer *ids, *out;
        uint32_t n_ids;
} GetRows;

static int rec_get_rows(GpuCmd *c, GpuDevice *d, void *u) {
        GetRows *g = u;
        return gpu_op_get_rows(c, d, g->w, bind(g->ids), bind(g->out), g->n_ids);
}

static int bench_get_rows(Bench *b) {
        static const GgmlType types[] = { GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K };
        const uint32_t vocab = 32000, dim = 4096, n_ids = 512;
        int r;

        for (size_t t = 0; t < ELEMENTSOF(types); t++) {
                GgmlType type = types[t];
                GetRows g = { .n_ids = n_ids };
                if (!wanted("get_rows", ggml_type_name(type)))
                        continue;
                uint64_t row = ggml_row_bytes(type, dim);
                _cleanup_free_ uint8_t *data = calloc(vocab, row);
                _cleanup_free_ uint32_t *ids = calloc(n_ids, sizeof(uint32_t));
                _cleanup_free_ float *one = malloc(dim * sizeof(float));
                if (!data || !ids || !one)
                        return -ENOMEM;
                for (uint32_t i = 0; i < dim; i++)
                        one[i] = (float) ((i * 37) % 101) / 101.0f - 0.5f;
                for (uint32_t v = 0; v < vocab; v++)
                        (void) ggml_quantize_row(type, one, data + v * row, dim);
                for (uint32_t i = 0; i < n_ids; i++)
                        ids[i] = (i * 7919u) % vocab;
                r = gpu_tensor_upload(b->dev, type, dim, vocab, data, &g.w);
                if (r >= 0)
                        r = gpu_buffer_new(b->dev, n_ids * sizeof(uint32_t), GPU_MEMORY_DEVICE, &g.ids);
                if (r >= 0)
                        r = gpu_buffer_write(g.ids, 0, ids, n_ids * sizeof(uint32_t));
                if (r >= 0)
                        r = gpu_buffer_new(b->dev, (uint64_t) n_ids * dim * 4, GPU_MEMORY_DEVICE, &g.out);
                double ns = 0;
                if (r >= 0)
                        r = time_op(b->dev, rec_get_rows, &g, &ns);
                if (r >= 0) {
                        char shape[48];
                        snprintf(shape, sizeof shape, "%u of %ux%u", n_ids, vocab, dim);
                        r = add_result(b, "get_rows", ggml_type_name(type), shape, ns,
                                       (double) n_ids * (row + 4.0 * dim), 0);
                } else
                        fprintf(stderr, "get_rows %s: %s\n", ggml_type_name(type), strerror(-r));
                gpu_tensor_free(g.w);
                gpu_buffer_free(g.ids);
                gpu_buffer_free(g.out);
                if (r == -ENOMEM)
                        return r;
        }
        return 0;
}

/* ---- activation kernels ---- */

typedef struct Act {
        GpuBuffer *a, *b, *out, *pos, *scratch, *params;
        uint32_t rows, cols;
        GpuRope rope;
} Act;

static int rec_rmsnorm(GpuCmd *c, GpuDevice *d, void *u) {
        Act *a = u;
        return gpu_op_rmsnorm(c, d, bind(a->a), (GpuBinding) { .buffer = a->b, .range = a->cols * 4ULL },
                              bind(a->out), a->rows, a->cols, 1e-5f);
}
static int rec_softmax(GpuCmd *c, GpuDevice *d, void *u) {
        Act *a = u;
        return gpu_op_softmax(c, d, bind(a->a), bind(a->out), a->rows, a->cols, 1.0f);
}
static int rec_swiglu(GpuCmd *c, GpuDevice *d, void *u) {
        Act *a = u;
        return gpu_op_swiglu(c, d, bind(a->a), bind(a->b), bind(a->out), a->rows, a->cols);
}
static int rec_add(GpuCmd *c, GpuDevice *d, void *u) {
        Act *a = u;
        return gpu_op_add(c, d, bind(a->a), bind(a->b), bind(a->out), a->rows, a->cols, false);
}
static int rec_mul(GpuCmd *c, GpuDevice *d, void *u) {
        Act *a = u;
        return gpu_op_mul(c, d, bind(a->a), bind(a->b), bind(a->out), a->rows, a->cols, false);
}
static int rec_argmax(GpuCmd *c, GpuDevice *d, void *u) {
        Act *a = u;
        return gpu_op_argmax(c, d, bind(a->a), bind(a->out), a->rows, a->cols);
}
static int rec_argmax_split(GpuCmd *c, GpuDevice *d, void *u) {
        Act *a = u;
        return gpu_op_argmax_split(c, d, bind(a->a), bind(a->out), bind(a->scratch), a->cols);
}
static int rec_topk(GpuCmd *c, GpuDevice *d, void *u) {
        Act *a = u;
        return gpu_op_topk_split(c, d, bind(a->a), bind(a->params), bind(a->out), bind(a->scratch), a->cols);
}
static int rec_rope(GpuCmd *c, GpuDevice *d, void *u) {
        Act *a = u;
        return gpu_op_rope(c, d, bind(a->a), bind(a->pos), bind(a->out), &a->rope);
}

static int bench_activations(Bench *b) {
        static const struct {
                const char *kernel;
                record_t rec;
                uint32_t rows, cols;
                double reads, writes, flops_per_elem;   /* per element, in units of the row data */
                const char *shape_note;                 /* parameters beyond the shape */
        } ops[] = {
                { "rmsnorm", rec_rmsnorm, 512, 4096, 1, 1, 4 },
                { "rope", rec_rope, 512, 4096, 1, 1, 6 },
                { "softmax", rec_softmax, 512, 32000, 2, 1, 5 },
                { "swiglu", rec_swiglu, 512, 14336, 2, 1, 6 },
                { "add", rec_add, 512, 4096, 2, 1, 1 },
                { "mul", rec_mul, 512, 4096, 2, 1, 1 },
                { "argmax", rec_argmax, 1, 128256, 1, 0, 1 },
                { "argmax", rec_argmax, 64, 128256, 1, 0, 1 },
                { "argmax_split", rec_argmax_split, 1, 128256, 1, 0, 1 },
                { "topk", rec_topk, 1, 128256, 1, 0, 1, " k104 g64" },
        };
        int r;

        for (size_t i = 0; i < ELEMENTSOF(ops); i++) {
                Act a = { .rows = ops[i].rows, .cols = ops[i].cols };
                uint64_t n = (uint64_t) a.rows * a.cols;
                double ns = 0;
                if (!wanted(ops[i].kernel, "F32"))
                        continue;
                r = gpu_bench_buffer_random(b->dev, n, 1, &a.a);
                if (r >= 0)
                        r = gpu_bench_buffer_random(b->dev, n, 2, &a.b);
                if (r >= 0)
                        r = gpu_buffer_new(b->dev, n * 4, GPU_MEMORY_DEVICE, &a.out);
                if (r >= 0 && ops[i].rec == rec_rope) {
                        _cleanup_free_ int32_t *pos = calloc(a.rows, sizeof(int32_t));
                        if (!pos)
                                r = -ENOMEM;
                        for (uint32_t t = 0; pos && t < a.rows; t++)
                                pos[t] = (int32_t) t;
                        if (r >= 0)
                                r = gpu_buffer_new(b->dev, a.rows * 4ULL, GPU_MEMORY_DEVICE, &a.pos);
                        if (r >= 0)
                                r = gpu_buffer_write(a.pos, 0, pos, a.rows * 4ULL);
                        a.rope = (GpuRope) { .n_tokens = a.rows, .n_heads = 32, .head_dim = 128, .n_rot = 128,
                                             .mode = GPU_ROPE_NORMAL, .freq_base = 500000.0f, .freq_scale = 1.0f };
                }
                if (r >= 0 && ops[i].rec == rec_argmax_split) {
                        /* Its counter starts at zero; every run leaves it so. */
                        uint64_t size = gpu_argmax_scratch_size(a.cols);
                        r = gpu_buffer_new(b->dev, size, GPU_MEMORY_DEVICE, &a.scratch);
                        if (r >= 0)
                                r = gpu_buffer_fill(a.scratch, 0, size, 0);
                }
                if (r >= 0 && ops[i].rec == rec_topk) {
                        /* As temperature sampling runs it: top_k 104, 64 penalised tokens. */
                        uint64_t size = gpu_topk_scratch_size(a.cols);
                        r = gpu_buffer_new(b->dev, size, GPU_MEMORY_DEVICE, &a.scratch);
                        if (r >= 0)
                                r = gpu_buffer_fill(a.scratch, 0, size, 0);
                        if (r >= 0)
                                r = gpu_buffer_new(b->dev, sizeof(GpuTopkParams), GPU_MEMORY_HOST, &a.params);
                        if (r >= 0) {
                                GpuTopkParams *p = gpu_buffer_map(a.params);
                                *p = (GpuTopkParams) { .k = 104, .n_gather = 64 };
                                for (uint32_t j = 0; j < p->n_gather; j++)
                                        p->gather[j] = (j * 7919u) % a.cols;
                        }
                }
                if (r >= 0)
                        r = time_op(b->dev, ops[i].rec, &a, &ns);
                if (r >= 0) {
                        char shape[48];
                        snprintf(shape, sizeof shape, "%ux%u%s", a.rows, a.cols, ops[i].shape_note ?: "");
                        r = add_result(b, ops[i].kernel, "F32", shape, ns,
                                       4.0 * n * (ops[i].reads + ops[i].writes) + (ops[i].writes == 0 ? 4.0 * a.rows : 0),
                                       ops[i].flops_per_elem * n);
                } else
                        fprintf(stderr, "%s: %s\n", ops[i].kernel, strerror(-r));
                gpu_buffer_free(a.a);
                gpu_buffer_free(a.b);
                gpu_buffer_free(a.out);
                gpu_buffer_free(a.pos);
                gpu_buffer_free(a.scratch);
                gpu_buffer_free(a.params);
                if (r == -ENOMEM)
                        return r;
        }
        return 0;
}

/* ---- attention ---- */

typedef struct Attn {
        GpuBuffer *q, *k, *v, *out, *scratch;
        GpuAttentionParams p;
} Attn;

static int rec_attention(GpuCmd *c, GpuDevice *d, void *u) {
        Attn *a = u;
        return gpu_op_attention(c, d, bind(a->q), bind(a->k), bind(a->v), bind(a->out),
                                a->scratch ? bind(a->scratch) : (GpuBinding) {}, &a->p);
}

static int bench_attention(Bench *b) {
        static const struct { const char *kernel; uint32_t n_tokens, pos0; } cases[] = {
                { "attn_prefill", 512, 0 },
                { "attn_decode", 1, 8191 },
                { "attn_decode", 1, 511 },      /* a short conversation: most chunks hold no key */
        };
        int r;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                Attn a = { .p = { .n_tokens = cases[i].n_tokens, .n_head = 32, .n_head_kv = 8, .head_dim = 128,
                                  .n_ctx = 8192, .pos0 = cases[i].pos0, .scale = 0.08838834764f } };
                const GpuAttentionParams *p = &a.p;
                uint64_t qbytes = 4ULL * p->n_tokens * p->n_head * p->head_dim;
                uint64_t cache = 2ULL * p->n_head_kv * p->n_ctx * p->head_dim;
                double ns = 0;
                if (!wanted(cases[i].kernel, "F16"))
                        continue;
                r = gpu_bench_buffer_random(b->dev, qbytes / 4, 3, &a.q);
                if (r >= 0)
                        r = gpu_buffer_new(b->dev, cache, GPU_MEMORY_DEVICE, &a.k);
                if (r >= 0)
                        r = gpu_buffer_new(b->dev, cache, GPU_MEMORY_DEVICE, &a.v);
                if (r >= 0)
                        r = gpu_buffer_new(b->dev, qbytes, GPU_MEMORY_DEVICE, &a.out);
                if (r >= 0 && p->n_tokens == 1)
                        r = gpu_attention_scratch_new(b->dev, p->n_head, p->head_dim, p->n_ctx, &a.scratch);
                if (r >= 0) {
                        /* Caches of small f16 values: 0x2c00 is 0.0625, so no overflow or NaN. */
                        _cleanup_(gpu_cmd_freep) GpuCmd *c = NULL;
                        r = gpu_cmd_new(b->dev, &c);
                        if (r >= 0)
                                r = gpu_cmd_begin(c);
                        if (r >= 0) {
                                gpu_cmd_fill(c, a.k, 0, cache, 0x2c002c00u);
                                gpu_cmd_fill(c, a.v, 0, cache, 0x2c00ac00u);
                                r = gpu_cmd_submit(c);
                        }
                }
                if (r >= 0)
                        r = time_op(b->dev, rec_attention, &a, &ns);
                if (r >= 0) {
                        char shape[48];
                        uint64_t n_kv = p->pos0 + p->n_tokens;
                        double pairs = p->n_tokens == 1 ? (double) n_kv
                                                         : (double) p->n_tokens * (p->n_tokens + 1) / 2.0 +
                                                                   (double) p->n_tokens * p->pos0;
                        snprintf(shape, sizeof shape, "%ut kv%" PRIu64 " h32/8 d128", p->n_tokens, n_kv);
                        double kv_bytes = 2.0 * 2.0 * p->n_head_kv * n_kv * p->head_dim;
                        r = add_result(b, cases[i].kernel, "F16", shape, ns, kv_bytes + 2.0 * qbytes,
                                       4.0 * p->n_head * p->head_dim * pairs);
                } else
                        fprintf(stderr, "%s: %s\n", cases[i].kernel, strerror(-r));
                gpu_buffer_free(a.q);
                gpu_buffer_free(a.k);
                gpu_buffer_free(a.v);
                gpu_buffer_free(a.out);
                gpu_buffer_free(a.scratch);
                if (r == -ENOMEM)
                        return r;
        }
        return 0;
}

static int print_json(const Bench *b, JsonMode mode) {
        _cleanup_json_ json_t *root = NULL;
        json_t *arr = json_array();
        const GpuDeviceInfo *info = gpu_device_info(b->dev);

        if (!arr)
                return ctl_oom();
        for (size_t i = 0; i < b->n; i++) {
                const Result *r = &b->results[i];
                double s = r->ns * 1e-9;
                json_t *o = json_pack("{s:s, s:s, s:s, s:f, s:f, s:f, s:f}", "kernel", r->kernel, "type", r->type,
                                      "shape", r->shape, "time_us", r->ns / 1000.0, "gb_per_s", r->bytes / r->ns,
                                      "gflop_per_s", r->flops / r->ns,
                                      "bandwidth_fraction", b->copy_bps > 0 ? (r->bytes / s) / b->copy_bps : 0.0);
                if (!o || json_array_append_new(arr, o) < 0) {
                        json_decref(arr);
                        return ctl_oom();
                }
        }
        root = json_pack("{s:s, s:s, s:f, s:o}", "device", info->name, "driver", info->driver,
                         "copy_gb_per_s", b->copy_bps / 1e9, "results", arr);
        if (!root)
                return ctl_oom();
        return json_print(root, mode);
}

static int pick_default_device(GpuInstance *inst) {
        size_t n = gpu_instance_n_devices(inst);
        _cleanup_free_ bool *sel = calloc(n ?: 1, sizeof(bool));
        if (!sel)
                return -ENOMEM;
        if (gpu_select_devices(inst, "auto", sel, NULL) < 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (sel[i])
                        return (int) i;
        return -ENODEV;
}

/* ---- bench MODEL: the daemon measures, we print ---- */

/* As long as loading: measuring a big model on a slow device takes minutes. */
#define BENCH_MODEL_TIMEOUT_USEC (10ULL * 60ULL * 1000000ULL)

/* BenchModel's a{sv} as a JSON object. Values of other than basic types are left out. */
static int results_to_json(sd_bus_message *reply, json_t **ret) {
        _cleanup_json_ json_t *o = json_object();
        int r;

        if (!o)
                return -ENOMEM;
        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                union { double d; uint64_t t; int64_t x; uint32_t u; int32_t i; uint16_t q; int16_t n; uint8_t y;
                        int b; const char *s; } val;
                const char *key, *contents;
                json_t *v = NULL;

                r = sd_bus_message_read(reply, "s", &key);
                if (r < 0)
                        return r;
                r = sd_bus_message_peek_type(reply, NULL, &contents);
                if (r < 0)
                        return r;
                if (strlen(contents) == 1 && strchr("dtxuiqnybs", contents[0])) {
                        r = sd_bus_message_enter_container(reply, 'v', contents);
                        if (r >= 0)
                                r = sd_bus_message_read_basic(reply, contents[0], &val);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(reply);
                        if (r < 0)
                                return r;
                        switch (contents[0]) {
                        case 'd': v = json_real(val.d); break;
                        case 't': v = json_integer((json_int_t) val.t); break;
                        case 'x': v = json_integer(val.x); break;
                        case 'u': v = json_integer(val.u); break;
                        case 'i': v = json_integer(val.i); break;
                        case 'q': v = json_integer(val.q); break;
                        case 'n': v = json_integer(val.n); break;
                        case 'y': v = json_integer(val.y); break;
                        case 'b': v = json_boolean(val.b); break;
                        case 's': v = json_string(val.s); break;
                        }
                        if (!v || json_object_set_new(o, key, v) < 0)
                                return -ENOMEM;
                } else {
                        r = sd_bus_message_skip(reply, "v");
                        if (r < 0)
                                return r;
                }
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(o);
        return 0;
}

/* What bench MODEL shows of the model; strings point into the GetAll reply. */
typedef struct BenchModelInfo {
        const char *architecture;
        uint64_t parameters;
        const char *quantization;
        uint64_t file_size;
} BenchModelInfo;

static const CtlProperty bench_model_info_map[] = {
        { "Architecture", "s", offsetof(BenchModelInfo, architecture) },
        { "Parameters", "t", offsetof(BenchModelInfo, parameters) },
        { "Quantization", "s", offsetof(BenchModelInfo, quantization) },
        { "FileSize", "t", offsetof(BenchModelInfo, file_size) },
        {}
};

/* llama-bench's units: "1.13 MiB", "6.74 B". */
static char *format_size_2(char *buf, size_t len, uint64_t bytes) {
        if (bytes >= (1ULL << 30))
                snprintf(buf, len, "%.2f GiB", (double) bytes / (1ULL << 30));
        else if (bytes >= (1ULL << 20))
                snprintf(buf, len, "%.2f MiB", (double) bytes / (1ULL << 20));
        else
                snprintf(buf, len, "%.2f KiB", (double) bytes / (1ULL << 10));
        return buf;
}

static char *format_params_2(char *buf, size_t len, uint64_t n) {
        if (n >= 1000000000ULL)
                snprintf(buf, len, "%.2f B", (double) n / 1e9);
        else if (n >= 1000000ULL)
                snprintf(buf, len, "%.2f M", (double) n / 1e6);
        else if (n >= 1000ULL)
                snprintf(buf, len, "%.2f K", (double) n / 1e3);
        else
                snprintf(buf, len, "%" PRIu64, n);
        return buf;
}

static double json_number(const json_t *o, const char *key, double def) {
        json_t *v = json_object_get(o, key);
        return json_is_number(v) ? json_number_value(v) : def;
}

static int print_model_table(const char *name, const BenchModelInfo *info, const json_t *res) {
        static const char *const headers[] = { "model", "size", "params", "backend", "test", "t/s" };
        _cleanup_(table_freep) Table *t = NULL;
        char model[256], size[32], params[32], params_short[FORMAT_PARAMS_MAX], backend[256];
        const char *device = json_string_value(json_object_get(res, "device"));
        static const struct { const char *prefix, *count, *tps, *sd; int64_t def; } tests[] = {
                { "pp", "n_prompt", "pp_tokens_per_sec", "pp_stddev", 512 },
                { "tg", "n_gen", "tg_tokens_per_sec", "tg_stddev", 128 },
        };
        int r;

        t = table_new(ELEMENTSOF(headers), headers);
        if (!t)
                return ctl_oom();
        (void) table_set_align_right(t, 1, true);
        (void) table_set_align_right(t, 2, true);
        (void) table_set_align_right(t, 4, true);
        (void) table_set_align_right(t, 5, true);

        snprintf(model, sizeof model, "%s %s %s", info->architecture ?: name,
                 format_params(params_short, sizeof params_short, info->parameters), strna(info->quantization));
        format_size_2(size, sizeof size,
                      (uint64_t) json_number(res, "model_bytes", (double) info->file_size));
        format_params_2(params, sizeof params, info->parameters);
        snprintf(backend, sizeof backend, device ? "Vulkan: %s" : "Vulkan", device);

        for (size_t i = 0; i < ELEMENTSOF(tests); i++) {
                int64_t arg = i == 0 ? arg_n_prompt : arg_n_gen;
                double count = json_number(res, tests[i].count, (double) (arg >= 0 ? arg : tests[i].def));
                char test[32], tps[64];

                if (count <= 0 || !json_is_number(json_object_get(res, tests[i].tps)))
                        continue;
                snprintf(test, sizeof test, "%s%.0f", tests[i].prefix, count);
                snprintf(tps, sizeof tps, "%.2f ± %.2f", json_number(res, tests[i].tps, 0),
                         json_number(res, tests[i].sd, 0));
                r = table_add_row(t, (const char *const[]) { model, size, params, backend, test, tps });
                if (r < 0)
                        return ctl_oom();
        }

        r = table_print_markdown(t, stdout);
        if (r < 0)
                return ctl_error_errno(r, "Failed to print the table: %m");
        return 0;
}

static int bench_model(const Context *ctx, const char *name) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL, *props = NULL;
        _cleanup_json_ json_t *res = NULL;
        _cleanup_free_ char *path = NULL;
        BenchModelInfo info = {};
        Context c = *ctx;
        int r;

        if (arg_ops_option) {
                (void) ctl_error_errno(EINVAL, "option '%s' is for 'inferctl bench ops', not 'bench MODEL'.",
                                       arg_ops_option);
                return EXIT_USAGE;
        }
        if (arg_n_prompt == 0 && arg_n_gen == 0) {
                (void) ctl_error_errno(EINVAL, "nothing to measure: -p and -n are both 0.");
                return EXIT_USAGE;
        }
        if (!utf8_is_valid(name)) {
                (void) ctl_error_errno(EINVAL, "MODEL is not valid UTF-8.");
                return EXIT_USAGE;
        }

        /* $INFERD_TIMEOUT_SEC, when set, is the limit; else one long enough for big models. */
        if (!c.timeout_set)
                c.timeout_usec = BENCH_MODEL_TIMEOUT_USEC;
        r = ctl_bus_open(&c, false, &bus);
        if (r < 0)
                return r;

        r = ctl_bus_new_call(bus, INFERD_OBJECT_PATH, INFERD_MANAGER_IFACE, "BenchModel", &m);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", name);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg_n_prompt >= 0)
                r = sd_bus_message_append(m, "{sv}", "n_prompt", "u", (uint32_t) arg_n_prompt);
        if (r >= 0 && arg_n_gen >= 0)
                r = sd_bus_message_append(m, "{sv}", "n_gen", "u", (uint32_t) arg_n_gen);
        if (r >= 0 && arg_repetitions >= 0)
                r = sd_bus_message_append(m, "{sv}", "repetitions", "u", (uint32_t) arg_repetitions);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return ctl_error_errno(r, "Failed to append the arguments of BenchModel: %m");

        r = ctl_bus_send(bus, &c, m, &reply);
        if (r < 0)
                return r;
        r = results_to_json(reply, &res);
        if (r == -ENOMEM)
                return ctl_oom();
        if (r < 0)
                return ctl_bus_log_parse_error(r, "BenchModel");

        /* The model's object, for what the table shows of it. */
        r = sd_bus_path_encode(INFERD_MODEL_PATH_PREFIX, name, &path);
        if (r < 0)
                return ctl_oom();
        r = ctl_bus_get_object_properties(bus, &c, path, INFERD_MODEL_IFACE, bench_model_info_map, &info, &props);
        if (r < 0)
                return r;

        if (ctx->json != JSON_OFF) {
                _cleanup_json_ json_t *v = json_pack("{s:s, s:s?, s:I, s:s?, s:I, s:s}",
                                                     "model", name,
                                                     "architecture", info.architecture,
                                                     "parameters", (json_int_t) info.parameters,
                                                     "quantization", info.quantization,
                                                     "file_size", (json_int_t) info.file_size,
                                                     "backend", "Vulkan");
                if (!v || json_object_update(v, res) < 0)
                        return ctl_oom();
                return json_print(v, ctx->json);
        }
        return print_model_table(name, &info, res);
}

int verb_bench(Context *ctx, int argc, char *argv[]) {
        _cleanup_(gpu_instance_freep) GpuInstance *inst = NULL;
        _cleanup_(gpu_device_freep) GpuDevice *dev = NULL;
        Bench b = { .json = ctx->json != JSON_OFF };
        int r, index;

        if (!streq(argv[0], "ops"))
                return bench_model(ctx, argv[0]);
        if (arg_model_option) {
                (void) ctl_error_errno(EINVAL, "option '%s' is for 'inferctl bench MODEL', not 'bench ops'.",
                                       arg_model_option);
                return EXIT_USAGE;
        }

        r = gpu_instance_new(&inst);
        if (r < 0 || gpu_instance_n_devices(inst) == 0)
                return ctl_error_errno(ENODEV, "no Vulkan device on this host (install mesa-vulkan-drivers or a GPU driver).");
        index = arg_device >= 0 ? (int) arg_device : pick_default_device(inst);
        if (index < 0 || (size_t) index >= gpu_instance_n_devices(inst))
                return ctl_error_errno(ENODEV, "no device %ld on this host; see 'inferctl devices'.", arg_device);
        r = gpu_device_new(inst, (size_t) index, NULL, &dev);
        if (r < 0)
                return ctl_error_errno(r, "Failed to open device %d: %m", index);
        b.dev = dev;

        r = gpu_bench_copy_bandwidth(dev, MIN(gpu_device_caps(dev)->max_storage_buffer_range / 2, 256ULL << 20),
                                     &b.copy_bps);
        if (r < 0)
                return ctl_error_errno(r, "Failed to measure the copy bandwidth: %m");
        if (!b.json) {
                printf("Device %d: %s (%s), copy bandwidth %.1f GB/s\n\n", index, gpu_device_info(dev)->name,
                       gpu_device_info(dev)->driver, b.copy_bps / 1e9);
                printf("%-14s %-5s %-24s %10s %9s %9s %7s\n", "KERNEL", "TYPE", "SHAPE", "TIME(us)", "GB/s", "GFLOP/s",
                       "OF-BW");
        }

        r = bench_matvec(&b);
        if (r >= 0)
                r = bench_matmul(&b);
        if (r >= 0)
                r = bench_get_rows(&b);
        if (r >= 0)
                r = bench_activations(&b);
        if (r >= 0)
                r = bench_attention(&b);
        if (r < 0) {
                free(b.results);
                return ctl_error_errno(r, "Benchmark failed: %m");
        }
        if (b.json)
                r = print_json(&b, ctx->json);
        free(b.results);
        return r;
}
