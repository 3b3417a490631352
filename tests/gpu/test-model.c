/* SPDX-License-Identifier: MIT */
/*
 * The llama-family forward pass on the GPU (model*.c) against the plain-C
 * reference (tests/model/ref-forward.c) reading the same GGUF file.
 *
 *  - Synthetic models written here with gguf_writer, for every weight type
 *    (F32, F16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) and both architectures (llama
 *    with a separate output matrix, qwen2 with q/k/v biases, NeoX RoPE and
 *    the output tied to the embeddings): a 10-token prompt (matrix x matrix,
 *    prefill attention), a 3-token batch (matrix x vector on 3 vectors,
 *    prefill attention at an offset), single-token decode steps, and
 *    model_eval_greedy. Prompts split into chunks (n_batch) too.
 *  - Llama 3.1+ RoPE frequency factors (rope_freqs.weight) on both
 *    architectures, with factors that matter at these short positions: the
 *    same comparisons, and the reference without the factors must be far
 *    off (so a loader that ignored them fails). Broken factor tensors are
 *    load errors.
 *  - stories260K (a real trained model, F32, feed-forward 172): the GPU's
 *    greedy tokens for "Once upon a time" equal the reference's, token for
 *    token.
 *  - Sampling on the device: model_eval_top() with sampler_sample_top()
 *    (a Picker on the device) draws the same tokens as the whole row with
 *    sampler_sample() (a Picker on the host), also when the device's
 *    selection is refused as invalid midway (model_context_inject_fault())
 *    and the Picker goes on with whole rows.
 *  - Greedy decoding chained on the device (model_decode_greedy) gives the
 *    tokens single passes give; a Picker hands them out and rewinds when
 *    its caller goes another way.
 *  - A freed context comes back for the next one of its size and gives
 *    what a new one gives; one whose submission failed does not.
 *  - -ENOSPC past n_ctx; truncating and evaluating again gives the same
 *    logits.
 *
 * INFERD_TEST_VERBOSE=1 prints every comparison's error.
 *
 * Tolerance: max |gpu - ref| / max |ref| over the logits < 2e-3, and the same
 * top token unless the reference's two best are within that tolerance of
 * each other (a tie the GPU may break either way). Both sides use the same
 * dequantised weights and F16-rounded K/V, so what is left is F32 against
 * double accumulation (~1e-7 on stories260K, ~1e-5 on the synthetic models)
 * and K/V values that round to the other F16 neighbour because the two sides'
 * floats differ in the last bits near a rounding midpoint (one such flip in
 * layer 0 moves stories260K's logits by ~3e-4). packHalf2x16's rounding is
 * the implementation's choice: against a reference that truncates instead,
 * i.e. every cached value one F16 unit off, lavapipe measures up to 1e-3,
 * hence 2e-3. Mistakes are far above it: NORMAL RoPE pairs for qwen2 give
 * 0.2-0.4, leaving out the q/k/v biases 0.27, attending to one key too few
 * 0.04-0.24.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "gpu-test.h"
#include "model.h"
#include "model-internal.h"
#include "quant.h"
#include "picker.h"
#include "ref-forward.h"
#include "sampler.h"

#define LOGIT_TOL 2e-3

#ifndef TEST_MODELS_DIR
#define TEST_MODELS_DIR "."
#endif

static GpuTestCtx T;
static char tmpdir[] = "/tmp/inferd-test-model-XXXXXX";

typedef struct Spec {
        const char *arch;
        GgmlType type;
        uint32_t n_embd, n_ff, n_layer, n_head, n_head_kv, n_vocab;
        uint64_t seed;
        /* rope_freqs.weight: n_rope_freqs values of rope_freqs_type (F32 unless a test wants it broken),
         * or none when NULL. */
        const float *rope_freqs;
        uint32_t n_rope_freqs;
        GgmlType rope_freqs_type;
} Spec;

/* ---- synthetic models ------------------------------------------------------ */

static void add_tensor(GgufWriter *w, const char *name, GgmlType type, uint32_t cols, uint32_t rows, float scale,
                       float offset, uint64_t seed) {
        size_t n = (size_t) cols * rows;
        float *x = malloc(n * sizeof(float));
        uint64_t row_bytes = ggml_row_bytes(type, cols);
        uint8_t *q = malloc(row_bytes * rows);
        assert_non_null(x);
        assert_non_null(q);
        test_fill_random(x, n, seed);
        for (size_t i = 0; i < n; i++)
                x[i] = offset + scale * x[i];
        for (uint32_t r = 0; r < rows; r++)
                assert_int_equal(ggml_quantize_row(type, x + (size_t) r * cols, q + r * row_bytes, cols), 0);
        uint64_t ne[2] = { cols, rows };
        assert_int_equal(gguf_writer_add_tensor(w, name, type, rows > 1 ? 2 : 1, ne, q), 0);
        free(x);
        free(q);
}

/* A one-dimensional tensor of these n values. */
static void add_vector(GgufWriter *w, const char *name, GgmlType type, const float *x, uint32_t n) {
        uint8_t *q = malloc(ggml_row_bytes(type, n));
        uint64_t ne[1] = { n };
        assert_non_null(q);
        assert_int_equal(ggml_quantize_row(type, x, q, n), 0);
        assert_int_equal(gguf_writer_add_tensor(w, name, type, 1, ne, q), 0);
        free(q);
}

/* A SentencePiece-style vocabulary: <unk> <s> </s>, the 256 byte tokens, then words. */
static void add_vocab(GgufWriter *w, uint32_t n_vocab) {
        char **tokens = calloc(n_vocab, sizeof *tokens);
        float *scores = calloc(n_vocab, sizeof *scores);
        int32_t *types = calloc(n_vocab, sizeof *types);
        assert_true(tokens && scores && types);
        for (uint32_t i = 0; i < n_vocab; i++) {
                int r;
                if (i < 3) {
                        static const char *const special[] = { "<unk>", "<s>", "</s>" };
                        r = asprintf(&tokens[i], "%s", special[i]);
                        types[i] = i == 0 ? 2 : 3;
                } else if (i < 3 + 256) {
                        r = asprintf(&tokens[i], "<0x%02X>", i - 3);
                        types[i] = 6;
                } else {
                        r = asprintf(&tokens[i], "\xe2\x96\x81w%u", i);
                        types[i] = 1;
                        scores[i] = -(float) i;
                }
                assert_true(r > 0);
        }
        assert_int_equal(gguf_writer_add_string(w, "tokenizer.ggml.model", "llama"), 0);
        assert_int_equal(gguf_writer_add_array_string(w, "tokenizer.ggml.tokens", (const char *const *) tokens, n_vocab),
                         0);
        assert_int_equal(gguf_writer_add_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, n_vocab), 0);
        assert_int_equal(gguf_writer_add_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, n_vocab), 0);
        assert_int_equal(gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1), 0);
        assert_int_equal(gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2), 0);
        assert_int_equal(gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0), 0);
        for (uint32_t i = 0; i < n_vocab; i++)
                free(tokens[i]);
        free(tokens);
        free(scores);
        free(types);
}

static void add_key_u32(GgufWriter *w, const char *arch, const char *key, uint32_t v) {
        char k[128];
        snprintf(k, sizeof k, "%s.%s", arch, key);
        assert_int_equal(gguf_writer_add_u32(w, k, v), 0);
}

static void add_key_f32(GgufWriter *w, const char *arch, const char *key, float v) {
        char k[128];
        snprintf(k, sizeof k, "%s.%s", arch, key);
        assert_int_equal(gguf_writer_add_f32(w, k, v), 0);
}

/*
 * Weights uniform in +-sqrt(3 / K): unit-variance outputs for unit-variance
 * inputs, so activations stay O(1) through the layers as in a trained model.
 */
static void write_model(const char *path, const Spec *s) {
        GgufWriter *w = NULL;
        bool qwen = strcmp(s->arch, "qwen2") == 0;
        uint32_t kv_dim = s->n_embd / s->n_head * s->n_head_kv;
        float se = sqrtf(3.0f / s->n_embd), sf = sqrtf(3.0f / s->n_ff);
        uint64_t seed = s->seed * 1000;
        char name[128];

        assert_int_equal(gguf_writer_new(&w), 0);
        assert_int_equal(gguf_writer_add_string(w, "general.architecture", s->arch), 0);
        assert_int_equal(gguf_writer_add_string(w, "general.name", "synthetic"), 0);
        add_key_u32(w, s->arch, "context_length", 256);
        add_key_u32(w, s->arch, "embedding_length", s->n_embd);
        add_key_u32(w, s->arch, "block_count", s->n_layer);
        add_key_u32(w, s->arch, "feed_forward_length", s->n_ff);
        add_key_u32(w, s->arch, "attention.head_count", s->n_head);
        add_key_u32(w, s->arch, "attention.head_count_kv", s->n_head_kv);
        add_key_f32(w, s->arch, "attention.layer_norm_rms_epsilon", qwen ? 1e-6f : 1e-5f);
        add_key_f32(w, s->arch, "rope.freq_base", qwen ? 1000000.0f : 10000.0f);
        add_vocab(w, s->n_vocab);

        if (s->rope_freqs)
                add_vector(w, "rope_freqs.weight", s->rope_freqs_type, s->rope_freqs, s->n_rope_freqs);
        add_tensor(w, "token_embd.weight", s->type, s->n_embd, s->n_vocab, 1.0f, 0, seed++);
        add_tensor(w, "output_norm.weight", GGML_TYPE_F32, s->n_embd, 1, 0.2f, 1.0f, seed++);
        if (!qwen)
                add_tensor(w, "output.weight", s->type, s->n_embd, s->n_vocab, se, 0, seed++);
        for (uint32_t il = 0; il < s->n_layer; il++) {
                struct {
                        const char *what;
                        uint32_t cols, rows;
                        GgmlType type;
                        float scale, offset;
                } ts[] = {
                        { "attn_norm.weight", s->n_embd, 1, GGML_TYPE_F32, 0.2f, 1.0f },
                        { "attn_q.weight", s->n_embd, s->n_embd, s->type, se, 0 },
                        { "attn_k.weight", s->n_embd, kv_dim, s->type, se, 0 },
                        { "attn_v.weight", s->n_embd, kv_dim, s->type, se, 0 },
                        { "attn_output.weight", s->n_embd, s->n_embd, s->type, se, 0 },
                        { "ffn_norm.weight", s->n_embd, 1, GGML_TYPE_F32, 0.2f, 1.0f },
                        { "ffn_gate.weight", s->n_embd, s->n_ff, s->type, se, 0 },
                        { "ffn_up.weight", s->n_embd, s->n_ff, s->type, se, 0 },
                        { "ffn_down.weight", s->n_ff, s->n_embd, s->type, sf, 0 },
                        { "attn_q.bias", s->n_embd, 1, GGML_TYPE_F32, 0.5f, 0 },
                        { "attn_k.bias", kv_dim, 1, GGML_TYPE_F32, 0.5f, 0 },
                        { "attn_v.bias", kv_dim, 1, GGML_TYPE_F32, 0.5f, 0 },
                };
                for (size_t i = 0; i < ELEMENTSOF(ts); i++) {
                        if (!qwen && strstr(ts[i].what, ".bias"))
                                continue;
                        snprintf(name, sizeof name, "blk.%u.%s", il, ts[i].what);
                        add_tensor(w, name, ts[i].type, ts[i].cols, ts[i].rows, ts[i].scale, ts[i].offset, seed++);
                }
        }
        assert_int_equal(gguf_writer_write_file(w, path), 0);
        gguf_writer_free(w);
}

/* ---- comparisons ------------------------------------------------------------- */

static void compare_logits(const char *what, const float *gpu, const float *ref, uint32_t n) {
        double max_ref = 0, max_diff = 0;
        for (uint32_t i = 0; i < n; i++) {
                assert_true(isfinite(gpu[i]));
                max_ref = MAX(max_ref, fabs((double) ref[i]));
                max_diff = MAX(max_diff, fabs((double) gpu[i] - ref[i]));
        }
        double rel = max_diff / MAX(max_ref, 1e-30);
        uint32_t tg = ref_argmax(gpu, n), tr = ref_argmax(ref, n);
        if (getenv("INFERD_TEST_VERBOSE") || !(rel < LOGIT_TOL) || tg != tr)
                fprintf(stderr, "# %s: max |diff| / max |logit| = %.3g (max |logit| %.3g), top %u (gpu) %u (ref)\n",
                        what, rel, max_ref, tg, tr);
        assert_true(rel < LOGIT_TOL);
        if (tg != tr)
                assert_true(ref[tr] - ref[tg] < LOGIT_TOL * max_ref);
}

static char *model_path(const char *name) {
        char *p = NULL;
        assert_true(asprintf(&p, "%s/%s", tmpdir, name) > 0);
        return p;
}

static Model *load(const char *path, const ModelOptions *opts) {
        Model *m = NULL;
        char *err = NULL;
        int r = model_load(T.dev, path, opts, &m, &err);
        if (r < 0)
                fprintf(stderr, "# model_load: %s (%s)\n", strerror(-r), strna(err));
        assert_int_equal(r, 0);
        free(err);
        return m;
}

static RefModel *ref_load(const char *path, uint32_t n_ctx) {
        RefModel *rm = NULL;
        char *err = NULL;
        int r = ref_model_load(path, n_ctx, &rm, &err);
        if (r < 0)
                fprintf(stderr, "# ref_model_load: %s (%s)\n", strerror(-r), strna(err));
        assert_int_equal(r, 0);
        free(err);
        return rm;
}

/* Evaluates tokens on both and compares the last token's logits. */
static void step(ModelContext *c, RefModel *rm, const int32_t *tokens, uint32_t n, const char *what) {
        uint32_t n_vocab = ref_model_n_vocab(rm);
        float *lg = malloc(n_vocab * sizeof(float)), *lr = malloc(n_vocab * sizeof(float));
        assert_true(lg && lr);
        assert_int_equal(model_eval(c, tokens, n, lg), 0);
        assert_int_equal(ref_model_eval(rm, tokens, n, lr), 0);
        assert_int_equal(model_context_pos(c), ref_model_pos(rm));
        compare_logits(what, lg, lr, n_vocab);
        free(lg);
        free(lr);
}

static void run_synthetic(const Spec *s, const ModelOptions *opts, uint32_t n_prompt) {
        char file[64], what[96];
        snprintf(file, sizeof file, "%s-%s-%" PRIu64 "%s.gguf", s->arch, ggml_type_name(s->type), s->seed,
                 s->rope_freqs ? "-freqs" : "");
        char *path = model_path(file);
        uint64_t rs = s->seed * 77 + 5;
        const uint32_t n_ctx = 64;
        int32_t tokens[64];

        write_model(path, s);
        Model *m = load(path, opts);
        const ModelHParams *hp = model_hparams(m);
        assert_string_equal(hp->arch, s->arch);
        assert_int_equal(hp->n_vocab, s->n_vocab);
        assert_int_equal(hp->n_embd, s->n_embd);
        assert_int_equal(hp->head_dim, s->n_embd / s->n_head);
        assert_int_equal(hp->rope_neox, strcmp(s->arch, "qwen2") == 0);
        assert_int_equal(hp->tied_output, strcmp(s->arch, "qwen2") == 0);
        assert_int_equal(hp->rope_freqs, s->rope_freqs != NULL);
        assert_non_null(model_tokenizer(m));
        RefModel *rm = ref_load(path, n_ctx);
        ModelContext *c = NULL;
        assert_int_equal(model_context_new(m, n_ctx, &c), 0);
        assert_int_equal(model_context_n_ctx(c), n_ctx);

        for (size_t i = 0; i < ELEMENTSOF(tokens); i++)
                tokens[i] = (int32_t) (test_rand_u64(&rs) % s->n_vocab);
        uint32_t n_vocab = s->n_vocab;
        float *lg = malloc(n_vocab * sizeof(float)), *lr = malloc(n_vocab * sizeof(float));
        assert_true(lg && lr);

        /* The prompt, then a few tokens at once, then decode. */
        const char *fq = s->rope_freqs ? " rope_freqs" : "";
        snprintf(what, sizeof what, "%s %s%s prompt", s->arch, ggml_type_name(s->type), fq);
        step(c, rm, tokens, n_prompt, what);
        snprintf(what, sizeof what, "%s %s%s batch of 3", s->arch, ggml_type_name(s->type), fq);
        step(c, rm, tokens + n_prompt, 3, what);
        uint32_t pos = n_prompt + 3;
        for (uint32_t i = 0; i < 3; i++, pos++) {
                snprintf(what, sizeof what, "%s %s%s decode %u", s->arch, ggml_type_name(s->type), fq, pos);
                step(c, rm, tokens + pos, 1, what);
        }

        /* Greedy on the device: the argmax of the logits the reference computes for the same token. */
        int32_t next = -1;
        assert_int_equal(model_eval_greedy(c, tokens + pos, 1, &next), 0);
        assert_int_equal(ref_model_eval(rm, tokens + pos, 1, lr), 0);
        uint32_t top = ref_argmax(lr, n_vocab);
        if ((uint32_t) next != top) {
                float mx = 0;
                for (uint32_t i = 0; i < n_vocab; i++)
                        mx = MAX(mx, fabsf(lr[i]));
                assert_true(next >= 0 && (uint32_t) next < n_vocab);
                assert_true(lr[top] - lr[next] < LOGIT_TOL * mx);
        }

        free(lg);
        free(lr);
        model_context_free(c);
        ref_model_free(rm);
        model_free(m);
        unlink(path);
        free(path);
}

static const GgmlType all_types[] = {
        GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};

static void test_synthetic(const char *arch) {
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++) {
                Spec s = {
                        .arch = arch,
                        .type = all_types[i],
                        .n_embd = 256,
                        .n_ff = 512,
                        .n_layer = 2,
                        .n_head = 4,
                        .n_head_kv = 2,
                        .n_vocab = 300,
                        .seed = i + 1,
                };
                run_synthetic(&s, NULL, 10);
        }
}

static void test_llama(void **state) {
        test_synthetic("llama");
}

static void test_qwen2(void **state) {
        test_synthetic("qwen2");
}

/* Prompts longer than n_batch run in chunks; 30 = 12 + 12 + 6 takes both kernels. */
static void test_chunks(void **state) {
        for (size_t a = 0; a < 2; a++) {
                Spec s = {
                        .arch = a ? "qwen2" : "llama",
                        .type = GGML_TYPE_Q8_0,
                        .n_embd = 128,
                        .n_ff = 320,
                        .n_layer = 2,
                        .n_head = 8,
                        .n_head_kv = 2,
                        .n_vocab = 280,
                        .seed = 40 + a,
                };
                ModelOptions opts = { .n_batch = 12 };
                run_synthetic(&s, &opts, 30);
        }
}

/*
 * Fused projections whose parts do not end on 64-float boundaries: q (96)
 * is padded to 128 before k, a gap of 32 that is not whole heads of 24 (so
 * q and k are rotated apart), k (48) to 64 before v, gate (224) to 256
 * before up. Then the unfused path (INFERD_MODEL_NO_FUSE=1, what files with
 * mixed q/k/v types take), with the same tolerances.
 */
static void test_fused_padding(void **state) {
        for (size_t a = 0; a < 2; a++) {
                Spec s = {
                        .arch = a ? "qwen2" : "llama",
                        .type = GGML_TYPE_Q8_0,
                        .n_embd = 96,
                        .n_ff = 224,
                        .n_layer = 2,
                        .n_head = 4,
                        .n_head_kv = 2,
                        .n_vocab = 270,
                        .seed = 50 + a,
                };
                ModelOptions opts = { .n_batch = 12 };
                run_synthetic(&s, &opts, 30);
        }
        assert_int_equal(setenv("INFERD_MODEL_NO_FUSE", "1", 1), 0);
        for (size_t a = 0; a < 2; a++) {
                Spec s = {
                        .arch = a ? "qwen2" : "llama",
                        .type = a ? GGML_TYPE_Q4_K : GGML_TYPE_Q8_0,
                        .n_embd = 256,
                        .n_ff = 512,
                        .n_layer = 2,
                        .n_head = 4,
                        .n_head_kv = 2,
                        .n_vocab = 300,
                        .seed = 60 + a,
                };
                ModelOptions opts = { .n_batch = 12 };
                run_synthetic(&s, &opts, 30);
        }
        assert_int_equal(unsetenv("INFERD_MODEL_NO_FUSE"), 0);
}

/*
 * Llama 3's rule for the factors (llama.cpp's converter; low_freq_factor 1, high_freq_factor 4): pairs
 * whose wavelength is under orig/4 positions keep theirs, those over orig are slowed down by factor,
 * those between by a blend. A small original context makes them matter at the positions tested here.
 */
static void llama3_factors(float *f, uint32_t n_rot, double base, double factor, double orig) {
        for (uint32_t i = 0; i < n_rot / 2; i++) {
                double wavelen = 2 * M_PI / pow(base, -2.0 * i / n_rot);
                double smooth = (orig / wavelen - 1) / (4 - 1);
                if (wavelen < orig / 4)
                        f[i] = 1;
                else if (wavelen > orig)
                        f[i] = (float) factor;
                else
                        f[i] = (float) (1 / ((1 - smooth) / factor + smooth));
        }
}

/* Logits of the first n_prompt tokens of run_synthetic's sequence, by the reference. */
static void ref_prompt_logits(const Spec *s, const char *path, uint32_t n_prompt, float *logits) {
        uint64_t rs = s->seed * 77 + 5;
        int32_t tokens[64];

        assert_true(n_prompt <= ELEMENTSOF(tokens));
        for (uint32_t i = 0; i < n_prompt; i++)
                tokens[i] = (int32_t) (test_rand_u64(&rs) % s->n_vocab);
        RefModel *rm = ref_load(path, 64);
        assert_int_equal(ref_model_eval(rm, tokens, n_prompt, logits), 0);
        ref_model_free(rm);
}

/*
 * rope_freqs.weight (Llama 3.1+): the GPU with the factors against the reference with them, llama
 * (NORMAL pairs, Llama 3's rule) and qwen2 (NeoX pairs, random factors in [0.5, 8]), fused and not.
 * And the factors must matter: the reference without them is far outside the tolerance, so a
 * loader that dropped them would fail.
 */
static void test_rope_freqs(void **state) {
        float f[32];
        for (size_t a = 0; a < 2; a++) {
                Spec s = {
                        .arch = a ? "qwen2" : "llama",
                        .type = GGML_TYPE_Q8_0,
                        .n_embd = 256,
                        .n_ff = 512,
                        .n_layer = 2,
                        .n_head = 4,
                        .n_head_kv = 2,
                        .n_vocab = 300,
                        .seed = 70 + a,
                        .rope_freqs = f,
                        .n_rope_freqs = 32,             /* head size 64, all rotated */
                };
                if (a) {
                        uint64_t rs = 123;
                        for (uint32_t i = 0; i < 32; i++)
                                f[i] = exp2f(2.0f * test_rand_f(&rs) + 1.0f);
                } else
                        llama3_factors(f, 64, 10000.0, 8.0, 32.0);
                ModelOptions opts = { .n_batch = 12 };
                run_synthetic(&s, &opts, 30);
                assert_int_equal(setenv("INFERD_MODEL_NO_FUSE", "1", 1), 0);
                run_synthetic(&s, &opts, 10);
                assert_int_equal(unsetenv("INFERD_MODEL_NO_FUSE"), 0);

                char *with = model_path("freqs.gguf"), *without = model_path("no-freqs.gguf");
                float *lw = malloc(s.n_vocab * sizeof(float)), *lo = malloc(s.n_vocab * sizeof(float));
                assert_true(lw && lo);
                write_model(with, &s);
                Spec plain = s;
                plain.rope_freqs = NULL;
                write_model(without, &plain);
                ref_prompt_logits(&s, with, 30, lw);
                ref_prompt_logits(&plain, without, 30, lo);
                double max_ref = 0, max_diff = 0;
                for (uint32_t i = 0; i < s.n_vocab; i++) {
                        max_ref = MAX(max_ref, fabs((double) lw[i]));
                        max_diff = MAX(max_diff, fabs((double) lw[i] - lo[i]));
                }
                fprintf(stderr, "# %s: without rope_freqs the logits move by %.3g of the largest\n", s.arch,
                        max_diff / max_ref);
                assert_true(max_diff / max_ref > 20 * LOGIT_TOL);
                free(lw);
                free(lo);
                unlink(with);
                unlink(without);
                free(with);
                free(without);
        }
}

/* A small llama whose rope_freqs.weight (16 pairs) is broken as given: -EBADMSG naming it and the fault. */
static void check_bad_rope_freqs(const float *f, uint32_t n, GgmlType type, const char *why) {
        Spec s = {
                .arch = "llama",
                .type = GGML_TYPE_F32,
                .n_embd = 64,
                .n_ff = 128,
                .n_layer = 1,
                .n_head = 2,
                .n_head_kv = 2,
                .n_vocab = 270,
                .seed = 80,
                .rope_freqs = f,
                .n_rope_freqs = n,
                .rope_freqs_type = type,
        };
        char *path = model_path("bad-freqs.gguf");
        Model *m = NULL;
        char *err = NULL;

        write_model(path, &s);
        assert_int_equal(model_load(T.dev, path, NULL, &m, &err), -EBADMSG);
        assert_null(m);
        assert_non_null(err);
        if (getenv("INFERD_TEST_VERBOSE"))
                fprintf(stderr, "# %s\n", err);
        assert_non_null(strstr(err, "rope_freqs.weight"));
        assert_non_null(strstr(err, why));
        free(err);
        unlink(path);
        free(path);
}

static void test_load_errors(void **state) {
        Model *m = NULL;
        char *err = NULL;

        assert_int_equal(model_load(T.dev, "/nonexistent/model.gguf", NULL, &m, &err), -ENOENT);
        assert_non_null(err);
        assert_null(m);
        free(err);
        err = NULL;

        /* An architecture we do not run. */
        char *path = model_path("gpt2.gguf");
        GgufWriter *w = NULL;
        assert_int_equal(gguf_writer_new(&w), 0);
        assert_int_equal(gguf_writer_add_string(w, "general.architecture", "gpt2"), 0);
        assert_int_equal(gguf_writer_write_file(w, path), 0);
        gguf_writer_free(w);
        assert_int_equal(model_load(T.dev, path, NULL, &m, &err), -EOPNOTSUPP);
        assert_non_null(err);
        assert_non_null(strstr(err, "gpt2"));
        free(err);
        unlink(path);
        free(path);

        /* RoPE frequency factors: one per rotated pair, F32, finite and positive. */
        float f[17];
        for (size_t i = 0; i < ELEMENTSOF(f); i++)
                f[i] = 1.0f + (float) i;
        check_bad_rope_freqs(f, 15, GGML_TYPE_F32, "15 elements, expected 16");
        check_bad_rope_freqs(f, 17, GGML_TYPE_F32, "17 elements, expected 16");
        check_bad_rope_freqs(f, 16, GGML_TYPE_F16, "type F16, expected F32");
        f[3] = 0;
        check_bad_rope_freqs(f, 16, GGML_TYPE_F32, "factor 0 for pair 3");
        f[3] = -2;
        check_bad_rope_freqs(f, 16, GGML_TYPE_F32, "factor -2 for pair 3");
        f[3] = NAN;
        check_bad_rope_freqs(f, 16, GGML_TYPE_F32, "for pair 3");
        f[3] = INFINITY;
        check_bad_rope_freqs(f, 16, GGML_TYPE_F32, "factor inf for pair 3");
}

/* ---- stories260K ------------------------------------------------------------ */

static char *stories_path(void) {
        const char *dir = getenv("INFERD_TEST_MODELS_DIR");
        char *p = NULL;
        assert_true(asprintf(&p, "%s/stories260K.gguf", dir ? dir : TEST_MODELS_DIR) > 0);
        if (access(p, R_OK) < 0) {
                fprintf(stderr, "# %s: not found, skipping\n", p);
                free(p);
                return NULL;
        }
        return p;
}

/* BOS + "Once upon a time", by the model's tokenizer. */
static uint32_t stories_prompt(const Model *m, int32_t *tokens, uint32_t max) {
        static const char text[] = "Once upon a time";
        int32_t *ids = NULL;
        size_t n = 0;

        assert_int_equal(tokenizer_encode(model_tokenizer(m), text, strlen(text), true, false, &ids, &n), 0);
        assert_true(n > 1 && n <= max);
        assert_int_equal(ids[0], 1);
        memcpy(tokens, ids, n * sizeof *ids);
        free(ids);
        return (uint32_t) n;
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define STORIES_GEN 30

/* out[0..n): greedy decoding from the context's position, prompt first, then one pass per token. */
static void greedy_run(ModelContext *c, const int32_t *prompt, uint32_t n_prompt, int32_t *out, uint32_t n) {
        assert_int_equal(model_eval_greedy(c, prompt, n_prompt, &out[0]), 0);
        for (uint32_t i = 1; i < n; i++)
                assert_int_equal(model_eval_greedy(c, &out[i - 1], 1, &out[i]), 0);
}

/*
 * model_profile_step(): one timestamped decode pass. Its steps are named,
 * the blocks' steps come once per block, the position does not move, and
 * greedy decoding after it is what it is without it (the pass only wrote
 * the cache at the position the next token overwrites).
 */
static void test_profile(void **state) {
        Spec s = { .arch = "llama", .type = GGML_TYPE_Q8_0, .n_embd = 128, .n_ff = 256, .n_layer = 3, .n_head = 4,
                   .n_head_kv = 2, .n_vocab = 300, .seed = 9 };
        char *path = model_path("llama-profile.gguf");
        write_model(path, &s);
        Model *m = load(path, NULL);
        ModelContext *c = NULL;
        static ModelProfileEntry e[MODEL_PROFILE_MAX];
        const int32_t prompt[] = { 1, 17, 42, 99 };
        int32_t want[6], got[6];

        assert_int_equal(model_context_new(m, 32, &c), 0);
        greedy_run(c, prompt, ELEMENTSOF(prompt), want, 6);

        assert_int_equal(model_context_truncate(c, 0), 0);
        assert_int_equal(model_eval_greedy(c, prompt, ELEMENTSOF(prompt), &got[0]), 0);
        int n = model_profile_step(c, got[0], e, MODEL_PROFILE_MAX);
        if (n == -EOPNOTSUPP) {
                fprintf(stderr, "# no timestamps on this device\n");
        } else {
                assert_true(n > 0);
                unsigned attention = 0;
                double total = 0;
                for (int i = 0; i < n; i++) {
                        assert_non_null(e[i].name);
                        assert_true(e[i].ns >= 0);
                        total += e[i].ns;
                        attention += strcmp(e[i].name, "attention") == 0;
                }
                fprintf(stderr, "# profile: %d steps, %.1f us\n", n, total / 1e3);
                assert_int_equal(attention, s.n_layer);
                assert_true(total > 0);
                /* Fewer entries than steps: the first ones. */
                assert_int_equal(model_profile_step(c, got[0], e, 2), 2);
        }
        assert_int_equal(model_context_pos(c), ELEMENTSOF(prompt));
        for (int i = 1; i < 6; i++)
                assert_int_equal(model_eval_greedy(c, &got[i - 1], 1, &got[i]), 0);
        assert_memory_equal(got, want, sizeof want);
        assert_int_equal(model_profile_step(c, -1, e, MODEL_PROFILE_MAX), -EINVAL);
        assert_int_equal(model_profile_step(c, 300, e, MODEL_PROFILE_MAX), -EINVAL);

        model_context_free(c);
        model_free(m);
        free(path);
}

/*
 * Sampling on the device (model_eval_top() + sampler_sample_top()) draws the
 * same tokens as the host's sampler on the whole row (model_eval() +
 * sampler_sample()) with the same seed: temperature with top-k/top-p/min-p,
 * repetition penalties above and below 1, and greedy with a penalty. The
 * vocabulary spans several of the top-k kernel's workgroups.
 */
static void test_device_sampling(void **state) {
        Spec s = { .arch = "llama", .type = GGML_TYPE_Q8_0, .n_embd = 64, .n_ff = 128, .n_layer = 2, .n_head = 4,
                   .n_head_kv = 2, .n_vocab = 5003, .seed = 21 };
        static const struct {
                float temperature, top_p, min_p, penalty;
                int32_t top_k;
        } cases[] = {
                { 0.9f, 0.95f, 0.05f, 1.0f, 40 },
                { 1.5f, 1.0f, 0.0f, 1.3f, 100 },
                { 1.0f, 0.9f, 0.0f, 0.7f, 20 },
                { 0.0f, 1.0f, 0.0f, 1.5f, 40 },
                { 2.0f, 1.0f, 0.0f, 1.1f, 1 },
        };
        char *path = model_path("llama-sampling.gguf");
        write_model(path, &s);
        Model *m = load(path, NULL);
        ModelContext *c = NULL;
        float *logits = malloc(s.n_vocab * sizeof(float));
        ModelTop *top = malloc(sizeof(ModelTop));
        const int32_t prompt[] = { 1, 400, 401, 402, 403, 404, 400, 401 };
        enum { N_GEN = 20 };

        assert_non_null(logits);
        assert_non_null(top);
        assert_int_equal(model_context_new(m, 64, &c), 0);
        for (size_t ci = 0; ci < ELEMENTSOF(cases); ci++) {
                SamplerParams p;
                sampler_params_default(&p);
                p.seed = 77 + ci;
                p.temperature = cases[ci].temperature;
                p.top_k = cases[ci].top_k;
                p.top_p = cases[ci].top_p;
                p.min_p = cases[ci].min_p;
                p.repeat_penalty = cases[ci].penalty;
                int32_t want[N_GEN], got[N_GEN];

                for (int pass = 0; pass < 3; pass++) {
                        Sampler *smp = sampler_new(&p, s.n_vocab);
                        Picker *pick = NULL;
                        int32_t *out = pass == 0 ? want : got, t = 0;
                        assert_non_null(smp);
                        /* The whole row on the host, then the candidates from the device, then the device
                         * until its selection is refused as invalid at the sixth token (the picker reads
                         * whole rows from there on). */
                        assert_int_equal(picker_new(c, smp, pass > 0, &pick), 0);
                        assert_int_equal(model_context_truncate(c, 0), 0);
                        for (size_t i = 0; i < ELEMENTSOF(prompt); i++)
                                sampler_accept(smp, prompt[i]);
                        for (int i = 0; i < N_GEN; i++) {
                                if (pass == 2 && i == 5) {
                                        const int32_t *ids;
                                        uint32_t n_ids;
                                        int k = sampler_top_request(smp, &ids, &n_ids);
                                        if (k > 1 || n_ids > 0)         /* not a greedy case's argmax */
                                                model_context_inject_fault(c, MODEL_FAULT_TOP);
                                }
                                if (pass == 1) {
                                        const int32_t *ids;
                                        uint32_t n_ids;
                                        assert_true(sampler_top_request(smp, &ids, &n_ids) > 0);
                                }
                                assert_int_equal(picker_next(pick, i == 0 ? prompt : &t,
                                                             i == 0 ? ELEMENTSOF(prompt) : 1, N_GEN - i - 1, &t),
                                                 0);
                                sampler_accept(smp, t);
                                out[i] = t;
                        }
                        assert_int_equal(c->faults, 0);        /* the refusal happened */
                        picker_free(pick);
                        sampler_free(smp);
                        if (pass > 0 && memcmp(want, got, sizeof want) != 0) {
                                for (int i = 0; i < N_GEN; i++)
                                        fprintf(stderr, "# %d: host %d, device %d\n", i, want[i], got[i]);
                                fail_msg("case %zu%s: the device's candidates drew other tokens than the whole row",
                                         ci, pass == 2 ? " (refused at the sixth)" : "");
                        }
                }
        }

        /* What the device hands over is the k best of the row, and the gathered values are the row's. */
        assert_int_equal(model_context_truncate(c, 0), 0);
        assert_int_equal(model_eval(c, prompt, ELEMENTSOF(prompt), logits), 0);
        assert_int_equal(model_context_truncate(c, 0), 0);
        const int32_t gather[] = { 5002, 0, 17 };
        assert_int_equal(model_eval_top(c, prompt, ELEMENTSOF(prompt), 256, gather, 3, top), 0);
        assert_int_equal(top->m, 256);
        float kth = INFINITY;
        for (uint32_t i = 0; i < top->m; i++) {
                assert_true(top->logits[i] == logits[top->ids[i]]);
                kth = fminf(kth, top->logits[i]);
        }
        unsigned above = 0;
        for (uint32_t i = 0; i < s.n_vocab; i++)
                above += logits[i] > kth;
        assert_true(above < 256);
        for (int i = 0; i < 3; i++)
                assert_true(top->gathered[i] == logits[gather[i]]);

        /* Bad requests change nothing. */
        const int32_t bad[] = { 5003 };
        uint32_t pos = model_context_pos(c);
        assert_int_equal(model_eval_top(c, prompt, 1, 0, NULL, 0, top), -EINVAL);
        assert_int_equal(model_eval_top(c, prompt, 1, MODEL_TOP_MAX + 1, NULL, 0, top), -EINVAL);
        assert_int_equal(model_eval_top(c, prompt, 1, 4, bad, 1, top), -EINVAL);
        assert_int_equal(model_eval_top(c, prompt, 1, 4, gather, MODEL_TOP_MAX + 1, top), -EINVAL);
        assert_int_equal(model_context_pos(c), pos);

        free(logits);
        free(top);
        model_context_free(c);
        model_free(m);
        free(path);
}

/*
 * Greedy decoding chained on the device (model_decode_greedy: each argmax
 * feeds the next pass in the same submission) gives the tokens one pass at
 * a time gives, in chains of any length, up to the end of the context. A
 * Picker hands chained tokens out one by one, and a caller that passes back
 * another token than it was given gets what a fresh sequence would give.
 */
static void test_decode_chain(void **state) {
        Spec s = { .arch = "qwen2", .type = GGML_TYPE_Q4_K, .n_embd = 256, .n_ff = 512, .n_layer = 2, .n_head = 4,
                   .n_head_kv = 2, .n_vocab = 700, .seed = 33 };
        char *path = model_path("qwen2-chain.gguf");
        write_model(path, &s);
        Model *m = load(path, NULL);
        ModelContext *c = NULL;
        const int32_t prompt[] = { 1, 300, 301, 302 };
        enum { N = 40, CTX = ELEMENTSOF(prompt) + N };
        int32_t want[N + 1], got[N + 1], t;

        assert_int_equal(model_context_new(m, CTX, &c), 0);
        greedy_run(c, prompt, ELEMENTSOF(prompt), want, N + 1);

        /* Chains of 1, 2, 16, 5, ...: the last one ends exactly at the end of the context. */
        static const uint32_t lens[] = { 1, 2, 16, 5, 7, 9 };
        assert_int_equal(model_context_truncate(c, 0), 0);
        assert_int_equal(model_eval_greedy(c, prompt, ELEMENTSOF(prompt), &got[0]), 0);
        uint32_t done = 0;
        for (size_t i = 0; i < ELEMENTSOF(lens); i++) {
                assert_int_equal(model_decode_greedy(c, got[done], lens[i], &got[done + 1]), (int) lens[i]);
                done += lens[i];
                assert_int_equal(model_context_pos(c), ELEMENTSOF(prompt) + done);
        }
        assert_int_equal(done, N);
        assert_memory_equal(got, want, sizeof want);
        assert_int_equal(model_decode_greedy(c, got[N], 1, &t), -ENOSPC);

        /* Bad requests change nothing. */
        assert_int_equal(model_context_truncate(c, CTX - 3), 0);
        assert_int_equal(model_decode_greedy(c, 5, 4, &t), -ENOSPC);
        assert_int_equal(model_context_pos(c), CTX - 3);
        assert_int_equal(model_context_truncate(c, 10), 0);
        assert_int_equal(model_decode_greedy(c, 5, 0, &t), -EINVAL);
        assert_int_equal(model_decode_greedy(c, 5, MODEL_CHAIN_MAX + 1, &t), -EINVAL);
        assert_int_equal(model_decode_greedy(c, 700, 2, &t), -EINVAL);
        assert_int_equal(model_decode_greedy(c, -1, 2, &t), -EINVAL);
        assert_int_equal(model_context_pos(c), 10);

        /* A greedy Picker chains, and gives the same tokens. */
        SamplerParams p;
        sampler_params_default(&p);
        p.temperature = 0.0f;
        Sampler *smp = sampler_new(&p, s.n_vocab);
        Picker *pick = NULL;
        assert_non_null(smp);
        assert_int_equal(picker_new(c, smp, true, &pick), 0);
        picker_fix_chain(pick, 8);
        assert_int_equal(model_context_truncate(c, 0), 0);
        assert_int_equal(picker_next(pick, prompt, ELEMENTSOF(prompt), N, &got[0]), 0);
        for (int i = 1; i <= 12; i++) {
                assert_int_equal(picker_next(pick, &got[i - 1], 1, N - i, &got[i]), 0);
                assert_int_equal(got[i], want[i]);
        }
        /* Ahead of the caller: a whole chain was decoded past the last token handed out. */
        assert_true(model_context_pos(c) > ELEMENTSOF(prompt) + 12);

        /* The caller puts another token where token 12 goes: the picker rewinds to that position (and
         * chains again from there), and the next token is what a fresh sequence gives. */
        const uint32_t at = ELEMENTSOF(prompt) + 12;
        int32_t other = (want[12] + 1) % (int32_t) s.n_vocab, next, fresh;
        assert_int_equal(picker_next(pick, &other, 1, N, &next), 0);
        assert_int_equal(model_context_pos(c), at + 8);
        ModelContext *c2 = NULL;
        int32_t seq[ELEMENTSOF(prompt) + 13];
        memcpy(seq, prompt, sizeof prompt);
        memcpy(seq + ELEMENTSOF(prompt), want, 12 * sizeof(int32_t));
        seq[at] = other;
        assert_int_equal(model_context_new(m, CTX, &c2), 0);
        assert_int_equal(model_eval_greedy(c2, seq, ELEMENTSOF(seq), &fresh), 0);
        assert_int_equal(next, fresh);

        picker_free(pick);
        sampler_free(smp);
        model_context_free(c2);
        model_context_free(c);
        model_free(m);
        free(path);
}

/*
 * model_warm_up() leaves a context for the next one of its size. A freed
 * context comes back for the next one of its size, with its passes
 * recorded, and gives what a new one gives: the same greedy tokens, single
 * and chained, from position 0. Another size gets a new context.
 */
static void test_context_reuse(void **state) {
        Spec s = { .arch = "llama", .type = GGML_TYPE_Q8_0, .n_embd = 64, .n_ff = 128, .n_layer = 2, .n_head = 4,
                   .n_head_kv = 2, .n_vocab = 400, .seed = 5 };
        char *path = model_path("llama-reuse.gguf");
        write_model(path, &s);
        Model *m = load(path, NULL);
        ModelContext *a = NULL, *b = NULL, *other = NULL;
        const int32_t prompt[] = { 1, 100, 200, 300 }, prompt2[] = { 1, 7, 8 };
        int32_t want[9], got[9], t;

        /* What a load does: a context of the size most jobs get, its passes recorded, kept. */
        assert_int_equal(model_warm_up(m, 3), 0);       /* too small to run anything: nothing to do */
        assert_int_equal(model_warm_up(m, 64), 0);
        assert_int_equal(model_context_new(m, 64, &a), 0);
        assert_int_equal(model_context_pos(a), 0);
        greedy_run(a, prompt2, ELEMENTSOF(prompt2), want, 9);
        /* Something else in it before it goes back: a longer sequence, a chain. */
        assert_int_equal(model_context_truncate(a, 0), 0);
        assert_int_equal(model_eval_greedy(a, prompt, ELEMENTSOF(prompt), &t), 0);
        assert_int_equal(model_decode_greedy(a, t, 8, got), 8);
        ModelContext *was = a;
        model_context_free(a);

        assert_int_equal(model_context_new(m, 64, &b), 0);
        assert_ptr_equal(b, was);
        assert_int_equal(model_context_pos(b), 0);
        assert_int_equal(model_eval_greedy(b, prompt2, ELEMENTSOF(prompt2), &got[0]), 0);
        assert_int_equal(model_decode_greedy(b, got[0], 8, &got[1]), 8);
        assert_memory_equal(got, want, sizeof want);

        /* Another size while b is out: a new context; b, freed, is the spare again. */
        assert_int_equal(model_context_new(m, 32, &other), 0);
        assert_ptr_not_equal(other, b);
        model_context_free(b);
        model_context_free(other);      /* replaces b as the spare */
        assert_int_equal(model_context_new(m, 32, &a), 0);
        assert_int_equal(model_context_n_ctx(a), 32);
        greedy_run(a, prompt2, ELEMENTSOF(prompt2), got, 9);
        assert_memory_equal(got, want, sizeof want);
        model_context_free(a);

        /* A context whose submission failed is not kept (the ops' counters may be left set): freeing it
         * leaves no spare, and the next context of its size is a new one that works. */
        assert_int_equal(model_context_new(m, 32, &a), 0);
        model_context_inject_fault(a, MODEL_FAULT_SUBMIT);
        assert_int_equal(model_eval_greedy(a, prompt2, ELEMENTSOF(prompt2), &t), -EIO);
        model_context_free(a);
        assert_null(m->spare);
        assert_int_equal(model_context_new(m, 32, &a), 0);
        greedy_run(a, prompt2, ELEMENTSOF(prompt2), got, 9);
        assert_memory_equal(got, want, sizeof want);
        model_context_free(a);
        assert_non_null(m->spare);

        model_free(m);          /* frees the spare */
        free(path);
}

/* INFERD_DECODE_CHAIN, read at load: 1 to MODEL_CHAIN_MAX, MODEL_CHAIN_DEFAULT when unset. */
static void test_decode_chain_env(void **state) {
        Spec s = { .arch = "llama", .type = GGML_TYPE_F16, .n_embd = 64, .n_ff = 128, .n_layer = 1, .n_head = 4,
                   .n_head_kv = 4, .n_vocab = 300, .seed = 6 };
        static const struct {
                const char *value;
                uint32_t chain;
        } cases[] = { { NULL, MODEL_CHAIN_DEFAULT }, { "3", 3 }, { "99", MODEL_CHAIN_MAX }, { "0", 1 }, { "1", 1 } };
        char *path = model_path("llama-chain-env.gguf");
        write_model(path, &s);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                if (cases[i].value)
                        assert_int_equal(setenv("INFERD_DECODE_CHAIN", cases[i].value, 1), 0);
                else
                        assert_int_equal(unsetenv("INFERD_DECODE_CHAIN"), 0);
                Model *m = load(path, NULL);
                assert_int_equal(model_decode_chain(m), cases[i].chain);
                model_free(m);
        }
        assert_int_equal(unsetenv("INFERD_DECODE_CHAIN"), 0);
        free(path);
}

static void test_stories_greedy(void **state) {
        char *path = stories_path();
        if (!path) {
                skip();
                return;
        }
        Model *m = load(path, NULL);
        const ModelHParams *hp = model_hparams(m);
        assert_int_equal(hp->n_embd, 64);
        assert_int_equal(hp->n_layer, 5);
        assert_int_equal(hp->n_ff, 172);
        assert_int_equal(hp->n_head_kv, 4);
        assert_int_equal(hp->n_vocab, 512);
        assert_int_equal(hp->n_ctx_train, 128);
        assert_true(fabsf(hp->rope_base - 10000.0f) < 1e-3f);
        RefModel *rm = ref_load(path, 128);
        ModelContext *c = NULL;
        assert_int_equal(model_context_new(m, 0, &c), 0);
        assert_int_equal(model_context_n_ctx(c), 128);

        int32_t prompt[16], gpu[STORIES_GEN], ref[STORIES_GEN];
        uint32_t n_prompt = stories_prompt(m, prompt, ELEMENTSOF(prompt));
        float *lg = malloc(512 * sizeof(float)), *lr = malloc(512 * sizeof(float));
        assert_true(lg && lr);

        /* The reference's greedy continuation. */
        assert_int_equal(ref_model_eval(rm, prompt, n_prompt, lr), 0);
        for (uint32_t i = 0; i < STORIES_GEN; i++) {
                ref[i] = (int32_t) ref_argmax(lr, 512);
                if (i + 1 < STORIES_GEN)
                        assert_int_equal(ref_model_eval(rm, &ref[i], 1, lr), 0);
        }

        /* The prompt's logits, then greedy decoding on the device. */
        assert_int_equal(model_eval(c, prompt, n_prompt - 1, NULL), 0);
        assert_int_equal(model_eval(c, prompt + n_prompt - 1, 1, lg), 0);
        ref_model_truncate(rm, 0);
        assert_int_equal(ref_model_eval(rm, prompt, n_prompt, lr), 0);
        compare_logits("stories260K prompt", lg, lr, 512);
        assert_int_equal(model_context_truncate(c, 0), 0);

        double t0 = now_s();
        assert_int_equal(model_eval_greedy(c, prompt, n_prompt, &gpu[0]), 0);
        double t1 = now_s();
        for (uint32_t i = 1; i < STORIES_GEN; i++)
                assert_int_equal(model_eval_greedy(c, &gpu[i - 1], 1, &gpu[i]), 0);
        double t2 = now_s();
        fprintf(stderr, "# stories260K: prompt of %u tokens %.1f ms, decode %.1f tokens/s\n", n_prompt,
                (t1 - t0) * 1e3, (STORIES_GEN - 1) / (t2 - t1));

        fprintf(stderr, "# greedy:");
        for (uint32_t i = 0; i < STORIES_GEN; i++)
                fprintf(stderr, " %d", gpu[i]);
        fprintf(stderr, "\n");
        /* What llama.cpp and llama2.c print for this model (see ../shared/models/README.md). */
        char *text = NULL;
        size_t len;
        assert_int_equal(tokenizer_decode(model_tokenizer(m), gpu, STORIES_GEN, 0, &text, &len), 0);
        fprintf(stderr, "# Once upon a time%s\n", text);
        assert_non_null(strstr(text, ", there was a little girl named Lily."));
        free(text);

        for (uint32_t i = 0; i < STORIES_GEN; i++) {
                if (gpu[i] != ref[i])
                        fprintf(stderr, "# token %u: gpu %d, reference %d\n", i, gpu[i], ref[i]);
                assert_int_equal(gpu[i], ref[i]);
        }

        /* The prompt and the first generated tokens as one batch: matrix x matrix with K = 172 (F32). */
        int32_t seq[16 + STORIES_GEN];
        uint32_t n_seq = n_prompt + 12;
        memcpy(seq, prompt, n_prompt * sizeof *seq);
        memcpy(seq + n_prompt, ref, 12 * sizeof *seq);
        assert_int_equal(model_context_truncate(c, 0), 0);
        ref_model_truncate(rm, 0);
        step(c, rm, seq, n_seq, "stories260K batch");

        free(lg);
        free(lr);
        model_context_free(c);
        ref_model_free(rm);
        model_free(m);
        free(path);
}

/* ---- context limits ------------------------------------------------------------ */

static void test_context_full(void **state) {
        char *path = stories_path();
        if (!path) {
                skip();
                return;
        }
        Model *m = load(path, &(ModelOptions) { .max_ctx = 24 });
        ModelContext *c = NULL;
        int32_t tokens[32];
        uint64_t rs = 99;
        float *a = malloc(512 * sizeof(float)), *b = malloc(512 * sizeof(float));
        assert_true(a && b);

        assert_int_equal(model_context_new(m, 48, &c), -EINVAL);        /* above max_ctx */
        assert_int_equal(model_context_new(m, 0, &c), 0);
        assert_int_equal(model_context_n_ctx(c), 24);
        for (size_t i = 0; i < ELEMENTSOF(tokens); i++)
                tokens[i] = (int32_t) (test_rand_u64(&rs) % 512);

        int32_t bad = 512;
        assert_int_equal(model_eval(c, &bad, 1, a), -EINVAL);
        assert_int_equal(model_eval(c, tokens, 25, a), -ENOSPC);
        assert_int_equal(model_context_pos(c), 0);
        assert_int_equal(model_eval(c, tokens, 20, a), 0);
        assert_int_equal(model_eval(c, tokens + 20, 5, b), -ENOSPC);
        assert_int_equal(model_context_pos(c), 20);

        /* Forget positions 12.. and evaluate them again (a different batch shape): the same logits. */
        assert_int_equal(model_context_truncate(c, 12), 0);
        assert_int_equal(model_context_pos(c), 12);
        assert_int_equal(model_eval(c, tokens + 12, 8, b), 0);
        compare_logits("after truncate", b, a, 512);

        /* Fill the context exactly, then one more is refused. */
        assert_int_equal(model_eval(c, tokens + 20, 4, b), 0);
        assert_int_equal(model_context_pos(c), 24);
        assert_int_equal(model_eval(c, tokens, 1, b), -ENOSPC);
        int32_t t;
        assert_int_equal(model_eval_greedy(c, tokens, 1, &t), -ENOSPC);

        free(a);
        free(b);
        model_context_free(c);
        model_free(m);
        free(path);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_load_errors),
                cmocka_unit_test(test_llama),
                cmocka_unit_test(test_qwen2),
                cmocka_unit_test(test_chunks),
                cmocka_unit_test(test_fused_padding),
                cmocka_unit_test(test_rope_freqs),
                cmocka_unit_test(test_profile),
                cmocka_unit_test(test_device_sampling),
                cmocka_unit_test(test_decode_chain),
                cmocka_unit_test(test_context_reuse),
                cmocka_unit_test(test_decode_chain_env),
                cmocka_unit_test(test_stories_greedy),
                cmocka_unit_test(test_context_full),
        };
        gpu_test_open(&T);
        if (!mkdtemp(tmpdir)) {
                fprintf(stderr, "mkdtemp: %m\n");
                return 1;
        }
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        (void) rmdir(tmpdir);
        gpu_test_close(&T);
        return r;
}
