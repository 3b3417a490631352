/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "macro.h"
#include "sampler.h"

#define QWEN2_VOCAB 151936u

/* The test's own random numbers, for logits: fixed, so every run sees the same rows. */
static uint64_t test_rng = 1;

static uint64_t test_next(void) {
        uint64_t z = (test_rng += UINT64_C(0x9e3779b97f4a7c15));
        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

static double test_uniform(void) {
        return (double) (test_next() >> 11) * 0x1.0p-53;
}

/* Roughly what a model's logits look like: a bell around 0 and a few tokens
 * well above it. */
static void random_logits(float *l, uint32_t n) {
        for (uint32_t i = 0; i < n; i++) {
                double g = test_uniform() + test_uniform() + test_uniform() + test_uniform() - 2.0;
                l[i] = (float) (g * 3.0);
        }
        for (uint32_t i = 0; i < 8 && i < n; i++)
                l[test_next() % n] = (float) (10.0 + 8.0 * test_uniform());
}

static SamplerParams params_plain(float temperature, uint64_t seed) {
        SamplerParams p;
        sampler_params_default(&p);
        p.temperature = temperature;
        p.top_k = 0;
        p.top_p = 1.0f;
        p.min_p = 0.0f;
        p.seed = seed;
        return p;
}

static int32_t argmax_ref(const float *l, uint32_t n) {
        int32_t best = -1;
        for (uint32_t i = 0; i < n; i++) {
                if (isnan(l[i]))
                        continue;
                if (best < 0 || l[i] > l[best])
                        best = (int32_t) i;
        }
        return best < 0 ? 0 : best;
}

static void test_defaults(void **state) {
        SamplerParams p;
        sampler_params_default(&p);
        assert_true(p.temperature == 0.8f);
        assert_int_equal(p.top_k, 40);
        assert_true(p.top_p == 0.95f);
        assert_true(p.min_p == 0.05f);
        assert_true(p.repeat_penalty == 1.0f);
        assert_int_equal(p.repeat_last_n, 64);
        assert_true(p.seed == SAMPLER_SEED_RANDOM);
        assert_int_equal(sampler_params_validate(&p, NULL), 0);
}

static void invalid(void (*set)(SamplerParams *p), const char *expect) {
        SamplerParams p;
        char *why = NULL;

        sampler_params_default(&p);
        set(&p);
        assert_int_equal(sampler_params_validate(&p, &why), -EINVAL);
        assert_non_null(why);
        if (!strstr(why, expect))
                fail_msg("error '%s' does not contain '%s'", why, expect);
        free(why);
        assert_null(sampler_new(&p, 100));
}

static void set_temp_neg(SamplerParams *p) { p->temperature = -0.1f; }
static void set_temp_big(SamplerParams *p) { p->temperature = 100.5f; }
static void set_temp_nan(SamplerParams *p) { p->temperature = NAN; }
static void set_top_k_neg(SamplerParams *p) { p->top_k = -1; }
static void set_top_p_zero(SamplerParams *p) { p->top_p = 0.0f; }
static void set_top_p_big(SamplerParams *p) { p->top_p = 1.01f; }
static void set_min_p_neg(SamplerParams *p) { p->min_p = -0.01f; }
static void set_min_p_big(SamplerParams *p) { p->min_p = 2.0f; }
static void set_penalty_zero(SamplerParams *p) { p->repeat_penalty = 0.0f; }
static void set_penalty_big(SamplerParams *p) { p->repeat_penalty = 10.5f; }
static void set_penalty_inf(SamplerParams *p) { p->repeat_penalty = INFINITY; }
static void set_last_n_big(SamplerParams *p) { p->repeat_last_n = SAMPLER_REPEAT_LAST_N_MAX + 1; }

static void test_validate(void **state) {
        invalid(set_temp_neg, "temperature=-0.1 is out of range: expected 0 (greedy) to 100");
        invalid(set_temp_big, "temperature=100.5 is out of range");
        invalid(set_temp_nan, "temperature=nan is out of range");
        invalid(set_top_k_neg, "top_k=-1 is out of range: expected 0 (off) or more");
        invalid(set_top_p_zero, "top_p=0 is out of range: expected above 0, at most 1 (off)");
        invalid(set_top_p_big, "top_p=1.01 is out of range");
        invalid(set_min_p_neg, "min_p=-0.01 is out of range: expected 0 (off) to 1");
        invalid(set_min_p_big, "min_p=2 is out of range");
        invalid(set_penalty_zero, "repeat_penalty=0 is out of range: expected above 0, at most 10 (1: off)");
        invalid(set_penalty_big, "repeat_penalty=10.5 is out of range");
        invalid(set_penalty_inf, "repeat_penalty=inf is out of range");
        invalid(set_last_n_big, "repeat_last_n=131073 is out of range: expected 0 (off) to 131072");

        /* The edges of every range are fine. */
        SamplerParams p;
        sampler_params_default(&p);
        p.temperature = 0.0f;
        p.top_k = 0;
        p.top_p = 1.0f;
        p.min_p = 1.0f;
        p.repeat_penalty = 10.0f;
        p.repeat_last_n = SAMPLER_REPEAT_LAST_N_MAX;
        assert_int_equal(sampler_params_validate(&p, NULL), 0);
        p.temperature = 100.0f;
        p.min_p = 0.0f;
        p.top_p = 1e-9f;
        p.repeat_penalty = 1e-3f;
        p.repeat_last_n = 0;
        assert_int_equal(sampler_params_validate(&p, NULL), 0);

        /* And sampler_new() wants a vocabulary. */
        sampler_params_default(&p);
        assert_null(sampler_new(&p, 0));
        assert_null(sampler_new(&p, (uint32_t) INT32_MAX + 1));
}

static void test_greedy(void **state) {
        SamplerParams p = params_plain(0.0f, 1);
        _cleanup_(sampler_freep) Sampler *s = sampler_new(&p, 6);
        assert_non_null(s);

        float a[6] = { 0.5f, -1.0f, 3.0f, 2.9f, 3.0f, -INFINITY };
        assert_int_equal(sampler_sample(s, a), 2);      /* tie with 4: the lower id */

        float b[6] = { -5.0f, -4.0f, -3.0f, -2.0f, -1.0f, -0.5f };
        assert_int_equal(sampler_sample(s, b), 5);

        /* Greedy ignores top-k, top-p, min-p: it is always the argmax. */
        sampler_params_default(&p);
        p.temperature = 0.0f;
        p.seed = 7;
        _cleanup_(sampler_freep) Sampler *s2 = sampler_new(&p, QWEN2_VOCAB);
        _cleanup_free_ float *l = malloc(QWEN2_VOCAB * sizeof(float));
        assert_non_null(s2);
        assert_non_null(l);
        for (int i = 0; i < 5; i++) {
                random_logits(l, QWEN2_VOCAB);
                int32_t want = argmax_ref(l, QWEN2_VOCAB);
                assert_int_equal(sampler_sample(s2, l), want);
        }
}

/* top_k = 1, or a top_p so small that one token covers it, leave only the argmax;
 * min_p = 1 leaves the argmax and its ties. */
static void test_truncation_to_one_is_greedy(void **state) {
        const uint32_t n = 5000;
        _cleanup_free_ float *l = malloc(n * sizeof(float));
        _cleanup_free_ float *copy = malloc(n * sizeof(float));
        assert_non_null(l);
        assert_non_null(copy);

        SamplerParams k1 = params_plain(1.5f, 11);
        k1.top_k = 1;
        SamplerParams p_tiny = params_plain(1.5f, 12);
        p_tiny.top_p = 1e-6f;
        SamplerParams min_p1 = params_plain(1.5f, 13);
        min_p1.min_p = 1.0f;
        _cleanup_(sampler_freep) Sampler *a = sampler_new(&k1, n);
        _cleanup_(sampler_freep) Sampler *b = sampler_new(&p_tiny, n);
        _cleanup_(sampler_freep) Sampler *c = sampler_new(&min_p1, n);
        assert_non_null(a);
        assert_non_null(b);
        assert_non_null(c);

        for (int i = 0; i < 200; i++) {
                random_logits(l, n);
                if (i % 3 == 0)
                        l[test_next() % n] = l[argmax_ref(l, n)];       /* a tie for the top */
                int32_t want = argmax_ref(l, n);

                memcpy(copy, l, n * sizeof(float));
                assert_int_equal(sampler_sample(a, copy), want);
                memcpy(copy, l, n * sizeof(float));
                assert_int_equal(sampler_sample(b, copy), want);
                /* min_p = 1 keeps every token as likely as the best: ties. */
                memcpy(copy, l, n * sizeof(float));
                int32_t t = sampler_sample(c, copy);
                assert_true(l[t] == l[want]);
        }
}

static void sample_sequence(uint64_t seed, const SamplerParams *base, int32_t *out, size_t count) {
        SamplerParams p = *base;
        p.seed = seed;
        const uint32_t n = 2000;
        _cleanup_(sampler_freep) Sampler *s = sampler_new(&p, n);
        _cleanup_free_ float *l = malloc(n * sizeof(float));
        assert_non_null(s);
        assert_non_null(l);

        uint64_t saved = test_rng;
        test_rng = 99;          /* the same rows for every seed */
        for (size_t i = 0; i < count; i++) {
                random_logits(l, n);
                out[i] = sampler_sample(s, l);
        }
        test_rng = saved;
}

static void test_seed(void **state) {
        SamplerParams p;
        int32_t a[300], b[300], c[300];

        sampler_params_default(&p);
        p.temperature = 2.0f;   /* flat enough that the draws matter */
        sample_sequence(1234, &p, a, ELEMENTSOF(a));
        sample_sequence(1234, &p, b, ELEMENTSOF(b));
        sample_sequence(1235, &p, c, ELEMENTSOF(c));
        assert_memory_equal(a, b, sizeof(a));

        size_t differ = 0;
        for (size_t i = 0; i < ELEMENTSOF(a); i++)
                differ += a[i] != c[i];
        if (differ < 30)
                fail_msg("seeds 1234 and 1235 gave %zu different tokens out of %zu", differ, ELEMENTSOF(a));

        /* A random seed is drawn, reported, and never the sentinel. */
        p.seed = SAMPLER_SEED_RANDOM;
        _cleanup_(sampler_freep) Sampler *r1 = sampler_new(&p, 10);
        _cleanup_(sampler_freep) Sampler *r2 = sampler_new(&p, 10);
        assert_non_null(r1);
        assert_non_null(r2);
        assert_true(sampler_seed(r1) != SAMPLER_SEED_RANDOM);
        assert_true(sampler_seed(r1) != sampler_seed(r2));

        /* Replaying with the reported seed gives the same tokens. */
        int32_t d[50], e[50];
        sample_sequence(sampler_seed(r1), &p, d, ELEMENTSOF(d));
        sample_sequence(sampler_seed(r1), &p, e, ELEMENTSOF(e));
        assert_memory_equal(d, e, sizeof(d));
}

static void test_reset_replays(void **state) {
        SamplerParams p = params_plain(1.0f, 77);
        p.repeat_penalty = 1.3f;
        const uint32_t n = 64;
        _cleanup_(sampler_freep) Sampler *s = sampler_new(&p, n);
        float l[64], copy[64];
        int32_t first[100], again[100];
        assert_non_null(s);

        for (uint32_t i = 0; i < n; i++)
                l[i] = (float) (i % 7) * 0.1f;
        for (size_t i = 0; i < ELEMENTSOF(first); i++) {
                memcpy(copy, l, sizeof(l));
                first[i] = sampler_sample(s, copy);
                sampler_accept(s, first[i]);
        }
        sampler_reset(s);
        for (size_t i = 0; i < ELEMENTSOF(again); i++) {
                memcpy(copy, l, sizeof(l));
                again[i] = sampler_sample(s, copy);
                sampler_accept(s, again[i]);
        }
        assert_memory_equal(first, again, sizeof(first));
}

/*
 * Pins the exact stream: the same seed and logits must give these tokens on
 * every machine and compiler. If this fails on a new platform, the sampler
 * is not reproducible there (FMA contraction, x87, a changed PRNG or exp()).
 */
static void golden_run(uint32_t n, int32_t top_k, float top_p, const int32_t golden[static 24]) {
        SamplerParams p;
        sampler_params_default(&p);
        p.seed = 42;
        p.temperature = 1.3f;
        p.top_k = top_k;
        p.top_p = top_p;
        p.repeat_penalty = 1.1f;
        _cleanup_(sampler_freep) Sampler *s = sampler_new(&p, n);
        _cleanup_free_ float *l = malloc(n * sizeof(float));
        int32_t got[24];
        assert_non_null(s);
        assert_non_null(l);

        for (size_t t = 0; t < ELEMENTSOF(got); t++) {
                for (uint32_t i = 0; i < n; i++)
                        l[i] = (float) ((i * 37 + t * 11) % 101) / 16.0f - (float) (i % 13) / 4.0f;
                got[t] = sampler_sample(s, l);
                sampler_accept(s, got[t]);
        }
        if (memcmp(got, golden, sizeof(got)) != 0) {
                for (size_t t = 0; t < ELEMENTSOF(got); t++)
                        print_message("%d, ", got[t]);
                print_message("\n");
                fail_msg("the token stream for seed 42, n=%u top_k=%d top_p=%g changed", n, top_k, (double) top_p);
        }
}

static void test_golden_sequence(void **state) {
        /* top-p by bins and weighted quickselect, min-p, penalty */
        golden_run(1000, 0, 0.95f, (const int32_t[24]) {
                81, 379, 676, 924, 989, 768, 716, 849, 756, 573, 676, 288,
                807, 312, 705, 871, 612, 846, 707, 704, 81, 182, 430, 598,
        });
        /* top-k by heap, survivors sorted */
        golden_run(1000, 40, 0.95f, (const int32_t[24]) {
                221, 158, 859, 976, 509, 768, 208, 871, 767, 172, 835, 690,
                299, 703, 640, 574, 650, 276, 445, 832, 286, 949, 886, 910,
        });
        /* top-k by quickselect, survivors sorted, no top-p */
        golden_run(3000, 1500, 1.0f, (const int32_t[24]) {
                715, 2314, 2783, 902, 1327, 470, 2591, 669, 2421, 2915, 226, 1042,
                2412, 1694, 1437, 2051, 1043, 655, 1274, 1048, 1053, 2393, 326, 2067,
        });
}

/*
 * The probabilities sampler_candidates() reports: softmax(logits / T) to
 * 1e-13 relative (our exp() against libm's), and bit for bit the same on
 * every machine: the FNV-1a hash of their bits is pinned. A mismatch means
 * this platform rounds differently (FMA contraction, x87), and its draws
 * would differ from everyone else's now and then.
 */
static void test_probabilities(void **state) {
        static const uint64_t golden = UINT64_C(0xc9b24933b960a3c6);
        /* Enough values that a rounding difference shows somewhere: with 64,
         * FMA contraction of the exp() polynomial went unnoticed. */
        enum { n = 4096 };
        static float l[n], copy[n];
        static int32_t ids[n];
        static double probs[n], ref[n];
        double total = 0.0, sum = 0.0, max = -INFINITY;

        for (uint32_t i = 0; i < n; i++) {
                l[i] = (float) ((i * UINT32_C(2654435761)) % 100003u) / 4000.0f - 12.5f;
                max = MAX(max, (double) l[i]);
        }
        for (uint32_t i = 0; i < n; i++) {
                ref[i] = exp(((double) l[i] - max) / (double) 0.7f);
                total += ref[i];
        }

        SamplerParams p = params_plain(0.7f, 1);
        _cleanup_(sampler_freep) Sampler *s = sampler_new(&p, n);
        assert_non_null(s);
        memcpy(copy, l, sizeof(l));
        assert_int_equal(sampler_candidates(s, copy, ids, probs), n);

        uint64_t h = UINT64_C(0xcbf29ce484222325);
        for (uint32_t i = 0; i < n; i++) {
                assert_int_equal(ids[i], i);
                double want = ref[i] / total;
                if (fabs(probs[i] - want) > 1e-13 * want)
                        fail_msg("token %u: probability %.17g, softmax %.17g", i, probs[i], want);
                sum += probs[i];

                uint64_t bits;
                memcpy(&bits, &probs[i], sizeof(bits));
                for (int b = 0; b < 64; b += 8) {
                        h ^= (bits >> b) & 0xff;
                        h *= UINT64_C(0x100000001b3);
                }
        }
        assert_true(fabs(sum - 1.0) < 1e-12);
        if (h != golden)
                fail_msg("probability bits changed: hash 0x%016" PRIx64, h);

        /* Greedy: the argmax, certain. */
        SamplerParams g = params_plain(0.0f, 1);
        _cleanup_(sampler_freep) Sampler *sg = sampler_new(&g, n);
        assert_non_null(sg);
        memcpy(copy, l, sizeof(l));
        assert_int_equal(sampler_candidates(sg, copy, ids, probs), 1);
        assert_true(l[ids[0]] == (float) max);
        assert_true(probs[0] == 1.0);
}

/*
 * Draws 20000 tokens from a small vocabulary and compares the counts with
 * softmax(logits / T), renormalised over what top-k/top-p/min-p keep, by
 * Pearson's chi-square. The bound is the 0.999 quantile for the degrees of
 * freedom (kept - 1): a correct sampler fails it one time in a thousand
 * seeds, and the seeds here are fixed, so it passes or fails every time.
 */
static double chi_square(const SamplerParams *p, const float *logits, uint32_t n, const bool *kept,
                         unsigned draws) {
        _cleanup_(sampler_freep) Sampler *s = sampler_new(p, n);
        unsigned counts[16] = {};
        double expect[16] = {}, total = 0.0, max = -INFINITY, chi2 = 0.0;
        float copy[16];

        assert_non_null(s);
        assert_true(n <= 16);
        for (uint32_t i = 0; i < n; i++)
                if (kept[i] && logits[i] > max)
                        max = logits[i];
        for (uint32_t i = 0; i < n; i++) {
                expect[i] = kept[i] ? exp((logits[i] - max) / p->temperature) : 0.0;
                total += expect[i];
        }
        for (unsigned d = 0; d < draws; d++) {
                memcpy(copy, logits, n * sizeof(float));
                int32_t t = sampler_sample(s, copy);
                assert_true(t >= 0 && (uint32_t) t < n);
                counts[t]++;
        }
        for (uint32_t i = 0; i < n; i++) {
                if (!kept[i]) {
                        if (counts[i] != 0)
                                fail_msg("token %u, filtered out, was drawn %u times", i, counts[i]);
                        continue;
                }
                double e = expect[i] / total * draws;
                chi2 += (counts[i] - e) * (counts[i] - e) / e;
        }
        return chi2;
}

static void test_distribution(void **state) {
        static const float logits[8] = { 1.0f, 0.5f, 2.0f, -0.5f, 1.5f, 0.0f, 0.8f, -1.0f };
        /* Probabilities at T=1: 0.126 0.076 0.342 0.028 0.207 0.046 0.103 0.017 */
        bool all[8] = { true, true, true, true, true, true, true, true };
        double chi2;

        /* Plain softmax, three temperatures: 7 degrees of freedom, bound 24.32. */
        static const float temps[] = { 0.7f, 1.0f, 2.5f };
        for (size_t i = 0; i < ELEMENTSOF(temps); i++) {
                SamplerParams p = params_plain(temps[i], 1000 + i);
                chi2 = chi_square(&p, logits, 8, all, 20000);
                print_message("# T=%.1f: chi2 = %.2f (7 dof, bound 24.32)\n", (double) temps[i], chi2);
                assert_true(chi2 < 24.32);
        }

        /* top_k = 4: tokens 2, 4, 0, 6; 3 degrees of freedom, bound 16.27. */
        SamplerParams k = params_plain(1.5f, 2000);
        k.top_k = 4;
        bool top4[8] = { true, false, true, false, true, false, true, false };
        chi2 = chi_square(&k, logits, 8, top4, 20000);
        print_message("# top_k=4: chi2 = %.2f (3 dof, bound 16.27)\n", chi2);
        assert_true(chi2 < 16.27);

        /* top_p = 0.6 at T=1 (before the temperature): 0.342 + 0.207 = 0.549
         * is short, + 0.126 reaches it: tokens 2, 4, 0. 2 dof, bound 13.82. */
        SamplerParams tp = params_plain(0.9f, 3000);
        tp.top_p = 0.6f;
        bool top3[8] = { true, false, true, false, true, false, false, false };
        chi2 = chi_square(&tp, logits, 8, top3, 20000);
        print_message("# top_p=0.6: chi2 = %.2f (2 dof, bound 13.82)\n", chi2);
        assert_true(chi2 < 13.82);

        /* min_p = 0.25: p >= 0.25 * 0.342 = 0.0855 keeps 2, 4, 0, 6. */
        SamplerParams mp = params_plain(1.2f, 4000);
        mp.min_p = 0.25f;
        chi2 = chi_square(&mp, logits, 8, top4, 20000);
        print_message("# min_p=0.25: chi2 = %.2f (3 dof, bound 16.27)\n", chi2);
        assert_true(chi2 < 16.27);
}

static void test_min_p(void **state) {
        /* Weights relative to the best: 1, e^-1 = 0.37, e^-2 = 0.14, e^-3 = 0.05. */
        static const float logits[5] = { 0.0f, -1.0f, -2.0f, -3.0f, -1.0f };
        int32_t ids[5];
        float copy[5];

        SamplerParams p = params_plain(1.0f, 5);
        p.min_p = 0.1f;
        _cleanup_(sampler_freep) Sampler *s = sampler_new(&p, 5);
        assert_non_null(s);
        memcpy(copy, logits, sizeof(copy));
        assert_int_equal(sampler_candidates(s, copy, ids, NULL), 4);
        assert_int_equal(ids[0], 0);
        assert_int_equal(ids[1], 1);
        assert_int_equal(ids[2], 2);
        assert_int_equal(ids[3], 4);
        for (int i = 0; i < 2000; i++) {
                memcpy(copy, logits, sizeof(copy));
                assert_int_not_equal(sampler_sample(s, copy), 3);
        }

        p.min_p = 0.3f;
        _cleanup_(sampler_freep) Sampler *s2 = sampler_new(&p, 5);
        assert_non_null(s2);
        memcpy(copy, logits, sizeof(copy));
        assert_int_equal(sampler_candidates(s2, copy, ids, NULL), 3);
        assert_int_equal(ids[0], 0);
        assert_int_equal(ids[1], 1);
        assert_int_equal(ids[2], 4);

        /* min_p applies after top-k: the best of the survivors is the reference. */
        p.min_p = 0.0f;
        p.top_k = 2;
        _cleanup_(sampler_freep) Sampler *s3 = sampler_new(&p, 5);
        assert_non_null(s3);
        memcpy(copy, logits, sizeof(copy));
        assert_int_equal(sampler_candidates(s3, copy, ids, NULL), 2);
        assert_int_equal(ids[0], 0);
        assert_int_equal(ids[1], 1);       /* 1 and 4 tie: the lower id */
}

static void test_repetition_penalty(void **state) {
        SamplerParams p = params_plain(0.0f, 1);
        p.repeat_penalty = 1.1f;
        p.repeat_last_n = 3;
        _cleanup_(sampler_freep) Sampler *s = sampler_new(&p, 8);
        assert_non_null(s);

        /* Positive logits are divided: 2.0 / 1.1 = 1.82 < 1.9. */
        float a[8] = { 2.0f, 1.9f, 0, 0, 0, 0, 0, 0 };
        assert_int_equal(sampler_sample(s, a), 0);
        sampler_accept(s, 0);
        float b[8] = { 2.0f, 1.9f, 0, 0, 0, 0, 0, 0 };
        assert_int_equal(sampler_sample(s, b), 1);
        assert_true(b[0] == 2.0f / 1.1f);       /* the row is penalised in place */

        /* Negative ones multiplied: -1.0 * 1.1 = -1.1 < -1.05. */
        sampler_reset(s);
        sampler_accept(s, 0);
        float c[8] = { -1.0f, -1.05f, -9, -9, -9, -9, -9, -9 };
        assert_int_equal(sampler_sample(s, c), 1);

        /* Each distinct token once, however often it repeats: 2.0 / 1.1 = 1.82
         * beats 1.7, 2.0 / 1.21 = 1.65 would not. */
        sampler_reset(s);
        sampler_accept(s, 0);
        sampler_accept(s, 0);
        sampler_accept(s, 0);
        float d[8] = { 2.0f, 1.7f, 0, 0, 0, 0, 0, 0 };
        assert_int_equal(sampler_sample(s, d), 0);

        /* Only the last repeat_last_n tokens count: 0 has left the window. */
        sampler_reset(s);
        sampler_accept(s, 0);
        sampler_accept(s, 5);
        sampler_accept(s, 6);
        sampler_accept(s, 7);
        float e[8] = { 2.0f, 1.9f, 0, 0, 0, 0, 0, 0 };
        assert_int_equal(sampler_sample(s, e), 0);

        /* Out-of-range ids are ignored, reset forgets. */
        sampler_accept(s, -1);
        sampler_accept(s, 8);
        sampler_accept(s, 0);
        sampler_reset(s);
        float f[8] = { 2.0f, 1.9f, 0, 0, 0, 0, 0, 0 };
        assert_int_equal(sampler_sample(s, f), 0);

        /* A penalty below 1 favours repeats. */
        p.repeat_penalty = 0.5f;
        _cleanup_(sampler_freep) Sampler *s2 = sampler_new(&p, 8);
        assert_non_null(s2);
        sampler_accept(s2, 3);
        float g[8] = { 2.0f, 1.9f, 0, 1.5f, 0, 0, 0, 0 };
        assert_int_equal(sampler_sample(s2, g), 3);

        /* And it applies when sampling, not only greedily. */
        SamplerParams q = params_plain(1.0f, 3);
        q.top_k = 1;
        q.repeat_penalty = 1.1f;
        _cleanup_(sampler_freep) Sampler *s3 = sampler_new(&q, 8);
        assert_non_null(s3);
        sampler_accept(s3, 0);
        float h[8] = { 2.0f, 1.9f, 0, 0, 0, 0, 0, 0 };
        assert_int_equal(sampler_sample(s3, h), 1);
}

static void test_nonfinite(void **state) {
        SamplerParams greedy = params_plain(0.0f, 1);
        SamplerParams hot = params_plain(1.0f, 2);
        _cleanup_(sampler_freep) Sampler *g = sampler_new(&greedy, 4);
        _cleanup_(sampler_freep) Sampler *h = sampler_new(&hot, 4);
        assert_non_null(g);
        assert_non_null(h);

        /* NaN is never picked. */
        float a[4] = { NAN, 1.0f, 2.0f, NAN };
        assert_int_equal(sampler_sample(g, a), 2);
        for (int i = 0; i < 1000; i++) {
                float b[4] = { NAN, 1.0f, 1.5f, NAN };
                int32_t t = sampler_sample(h, b);
                assert_true(t == 1 || t == 2);
        }

        /* Nothing finite: token 0, sampled or greedy. */
        float c[4] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY };
        assert_int_equal(sampler_sample(g, c), 0);
        float d[4] = { NAN, NAN, -INFINITY, NAN };
        assert_int_equal(sampler_sample(h, d), 0);
        float d2[4] = { NAN, NAN, NAN, NAN };
        assert_int_equal(sampler_sample(g, d2), 0);

        /* +inf tokens share the mass; greedy takes the first. */
        float e[4] = { 0.0f, INFINITY, 50.0f, INFINITY };
        assert_int_equal(sampler_sample(g, e), 1);
        unsigned counts[4] = {};
        for (int i = 0; i < 4000; i++) {
                float f[4] = { 0.0f, INFINITY, 50.0f, INFINITY };
                counts[sampler_sample(h, f)]++;
        }
        assert_int_equal(counts[0] + counts[2], 0);
        assert_in_range(counts[1], 1800, 2200);

        /* One random number per draw, whatever the row: a degenerate row does
         * not shift what comes after. */
        SamplerParams p = params_plain(1.0f, 9);
        _cleanup_(sampler_freep) Sampler *x = sampler_new(&p, 4);
        _cleanup_(sampler_freep) Sampler *y = sampler_new(&p, 4);
        assert_non_null(x);
        assert_non_null(y);
        float dead[4] = { -INFINITY, NAN, -INFINITY, -INFINITY };
        float one[4] = { -INFINITY, 3.0f, -INFINITY, -INFINITY };
        (void) sampler_sample(x, dead);
        (void) sampler_sample(y, one);
        for (int i = 0; i < 50; i++) {
                float r1[4] = { 0.1f, 0.2f, 0.3f, 0.4f }, r2[4] = { 0.1f, 0.2f, 0.3f, 0.4f };
                assert_int_equal(sampler_sample(x, r1), sampler_sample(y, r2));
        }
}

/* ---- the filters against a plain full-sort implementation ---- */

typedef struct RefCand {
        float logit;
        int32_t id;
} RefCand;

static int ref_compare(const void *a, const void *b) {
        const RefCand *x = a, *y = b;
        if (x->logit != y->logit)
                return x->logit > y->logit ? -1 : 1;
        return (x->id > y->id) - (x->id < y->id);
}

static int int32_compare(const void *a, const void *b) {
        int32_t x = *(const int32_t *) a, y = *(const int32_t *) b;
        return (x > y) - (x < y);
}

/* The finite logits (NaN as -inf, +inf as FLT_MAX) into c, best first, ties to the lower id; their count. */
static size_t ref_sorted(const float *logits, uint32_t n, RefCand *c) {
        size_t m = 0;

        for (uint32_t i = 0; i < n; i++) {
                float l = isnan(logits[i]) ? -INFINITY : logits[i] == INFINITY ? FLT_MAX : logits[i];
                if (l != -INFINITY)
                        c[m++] = (RefCand) { l, (int32_t) i };
        }
        qsort(c, m, sizeof(RefCand), ref_compare);
        return m;
}

static size_t reference_candidates(const float *logits, uint32_t n, const SamplerParams *p, int32_t *out) {
        _cleanup_free_ RefCand *c = malloc(n * sizeof(RefCand));
        _cleanup_free_ double *w = malloc(n * sizeof(double));
        assert_non_null(c);
        assert_non_null(w);
        size_t m = ref_sorted(logits, n, c);
        if (p->top_k > 0 && (size_t) p->top_k < m)
                m = (size_t) p->top_k;
        if (m > 1 && (p->top_p < 1.0f || p->min_p > 0.0f)) {
                double total = 0.0;
                for (size_t i = 0; i < m; i++) {
                        w[i] = exp((double) c[i].logit - (double) c[0].logit);
                        total += w[i];
                }
                if (p->top_p < 1.0f) {
                        double cum = 0.0;
                        for (size_t i = 0; i < m; i++) {
                                cum += w[i];
                                if (cum >= (double) p->top_p * total) {
                                        m = i + 1;
                                        break;
                                }
                        }
                }
                if (p->min_p > 0.0f) {
                        size_t keep = 0;
                        while (keep < m && w[keep] >= (double) p->min_p)
                                keep++;
                        m = keep;
                }
        }
        for (size_t i = 0; i < m; i++)
                out[i] = c[i].id;
        qsort(out, m, sizeof(int32_t), int32_compare);
        return m;
}

static void test_filters_match_reference(void **state) {
        static const int32_t top_ks[] = { 0, 1, 2, 5, 40, 1000, 200000 };
        static const float top_ps[] = { 1.0f, 0.3f, 0.9f, 0.95f, 0.999f };
        static const float min_ps[] = { 0.0f, 0.05f, 0.2f };
        static const uint32_t sizes[] = { 3, 17, 100, 4096, QWEN2_VOCAB };
        _cleanup_free_ float *l = malloc(QWEN2_VOCAB * sizeof(float));
        _cleanup_free_ float *copy = malloc(QWEN2_VOCAB * sizeof(float));
        _cleanup_free_ int32_t *got = malloc(QWEN2_VOCAB * sizeof(int32_t));
        _cleanup_free_ int32_t *want = malloc(QWEN2_VOCAB * sizeof(int32_t));
        unsigned cases = 0;

        assert_non_null(l);
        assert_non_null(copy);
        assert_non_null(got);
        assert_non_null(want);

        for (size_t si = 0; si < ELEMENTSOF(sizes); si++) {
                uint32_t n = sizes[si];
                unsigned rows = n > 10000 ? 2 : 12;
                for (unsigned row = 0; row < rows; row++) {
                        random_logits(l, n);
                        switch (row % 4) {
                        case 1: /* coarse values: many ties */
                                for (uint32_t i = 0; i < n; i++)
                                        l[i] = roundf(l[i]);
                                break;
                        case 2: /* sorted, the classic quickselect trap */
                                for (uint32_t i = 0; i < n; i++)
                                        l[i] = (float) i / (float) n * 10.0f;
                                break;
                        case 3: /* holes */
                                for (uint32_t i = 0; i < n; i += 3)
                                        l[i] = (i % 2) ? NAN : -INFINITY;
                                break;
                        }
                        for (size_t a = 0; a < ELEMENTSOF(top_ks); a++)
                                for (size_t b = 0; b < ELEMENTSOF(top_ps); b++)
                                        for (size_t c = 0; c < ELEMENTSOF(min_ps); c++) {
                                                if (n > 10000 && (b + c) % 2 == 1)
                                                        continue;       /* keep the big rows quick */
                                                SamplerParams p = params_plain(1.0f, 1);
                                                p.top_k = top_ks[a];
                                                p.top_p = top_ps[b];
                                                p.min_p = min_ps[c];
                                                _cleanup_(sampler_freep) Sampler *s = sampler_new(&p, n);
                                                assert_non_null(s);
                                                memcpy(copy, l, n * sizeof(float));
                                                size_t ng = sampler_candidates(s, copy, got, NULL);
                                                size_t nw = reference_candidates(l, n, &p, want);
                                                if (ng != nw || memcmp(got, want, ng * sizeof(int32_t)) != 0)
                                                        fail_msg("n=%u row=%u top_k=%d top_p=%g min_p=%g: "
                                                                 "%zu candidates, reference %zu",
                                                                 n, row, p.top_k, (double) p.top_p,
                                                                 (double) p.min_p, ng, nw);
                                                cases++;
                                        }
                }
        }
        print_message("# %u filter cases match the reference\n", cases);
}

/* ---- sampling from a device's best logits ---- */

/* What the device's top-k selection (gpu_op_topk_split) is specified to
 * return: the k best by value (NaN and -inf never, +inf as FLT_MAX, -0 as
 * +0), ties to the lower id, which is the reference's full sort above,
 * handed over in a shuffled order with the raw values. */
static uint32_t device_select(const float *row, uint32_t n, uint32_t k, float *top_l, int32_t *top_id) {
        _cleanup_free_ RefCand *c = malloc(n * sizeof(RefCand));

        assert_non_null(c);
        uint32_t m = (uint32_t) MIN(ref_sorted(row, n, c), (size_t) k);
        for (uint32_t i = m; i > 1; i--) {      /* Fisher-Yates */
                uint32_t j = (uint32_t) (test_next() % i);
                RefCand t = c[i - 1];
                c[i - 1] = c[j];
                c[j] = t;
        }
        for (uint32_t i = 0; i < m; i++) {
                top_id[i] = c[i].id;
                top_l[i] = row[c[i].id];
        }
        return m;
}

/* A row for step t: model-like, or one of the awkward kinds. */
static void awkward_row(float *l, uint32_t n, unsigned kind) {
        random_logits(l, n);
        switch (kind % 5) {
        case 1: /* coarse: ties across the k-th place */
                for (uint32_t i = 0; i < n; i++)
                        l[i] = roundf(l[i] / 2.0f);
                break;
        case 2: /* non-finite values and signed zeros */
                for (uint32_t i = 0; i < n; i += 7)
                        l[i] = (i / 7) % 4 == 0 ? NAN : (i / 7) % 4 == 1 ? -INFINITY : (i / 7) % 4 == 2 ? -0.0f : 0.0f;
                l[test_next() % n] = INFINITY;
                l[test_next() % n] = FLT_MAX;
                l[test_next() % n] = INFINITY;
                break;
        case 3: /* almost nothing finite */
                for (uint32_t i = 0; i < n; i++)
                        if (i % 97 != 5)
                                l[i] = i % 2 ? NAN : -INFINITY;
                break;
        case 4: /* flat */
                for (uint32_t i = 0; i < n; i++)
                        l[i] = 1.0f;
                break;
        }
}

/*
 * sampler_sample_top() on what the device would select gives the tokens
 * sampler_sample() gives on the whole row, step after step with the same
 * seed, for every filter, penalties above and below 1 (below 1 raises the
 * window's logits past tokens the device kept), greedy, and rows with ties,
 * NaN, infinities and nothing finite.
 */
static void test_top_matches_whole_row(void **state) {
        static const uint32_t sizes[] = { 3, 50, 1000, 32000 };
        static const struct {
                float temperature;
                int32_t top_k;
                float top_p, min_p, penalty;
                uint32_t last_n;
        } cases[] = {
                { 0.8f, 40, 0.95f, 0.05f, 1.0f, 64 },
                { 0.8f, 40, 0.95f, 0.05f, 1.3f, 64 },
                { 1.5f, 40, 1.0f, 0.0f, 0.6f, 64 },
                { 1.0f, 1, 1.0f, 0.0f, 1.1f, 16 },
                { 1.0f, 5, 0.5f, 0.2f, 2.0f, 8 },
                { 0.7f, 200, 0.99f, 0.0f, 1.1f, 32 },
                { 2.0f, 3, 0.9f, 0.0f, 1.0f, 0 },
                { 0.0f, 40, 0.95f, 0.05f, 1.0f, 64 },
                { 0.0f, 40, 1.0f, 0.0f, 1.5f, 64 },
                { 0.0f, 0, 1.0f, 0.0f, 0.5f, 32 },
        };
        _cleanup_free_ float *row = malloc(32000 * sizeof(float));
        _cleanup_free_ float *copy = malloc(32000 * sizeof(float));
        float top_l[SAMPLER_TOP_MAX], pen_l[SAMPLER_TOP_MAX];
        int32_t top_id[SAMPLER_TOP_MAX];
        unsigned steps = 0;

        assert_non_null(row);
        assert_non_null(copy);
        for (size_t si = 0; si < ELEMENTSOF(sizes); si++)
                for (size_t ci = 0; ci < ELEMENTSOF(cases); ci++) {
                        uint32_t n = sizes[si];
                        SamplerParams p;
                        sampler_params_default(&p);
                        p.seed = 1000 + ci;
                        p.temperature = cases[ci].temperature;
                        p.top_k = cases[ci].top_k;
                        p.top_p = cases[ci].top_p;
                        p.min_p = cases[ci].min_p;
                        p.repeat_penalty = cases[ci].penalty;
                        p.repeat_last_n = cases[ci].last_n;
                        _cleanup_(sampler_freep) Sampler *whole = sampler_new(&p, n);
                        _cleanup_(sampler_freep) Sampler *top = sampler_new(&p, n);
                        assert_non_null(whole);
                        assert_non_null(top);

                        /* A prompt, so the penalty has a window from the first step. */
                        for (uint32_t i = 0; i < 24; i++) {
                                int32_t t = (int32_t) (test_next() % n);
                                sampler_accept(whole, t);
                                sampler_accept(top, t);
                        }
                        for (unsigned t = 0; t < 40; t++) {
                                awkward_row(row, n, t);
                                memcpy(copy, row, n * sizeof(float));
                                int32_t want = sampler_sample(whole, copy);

                                const int32_t *ids;
                                uint32_t n_ids;
                                uint32_t k = sampler_top_request(top, &ids, &n_ids);
                                assert_true(n_ids <= cases[ci].last_n);
                                assert_int_equal(k, cases[ci].temperature == 0.0f ? 1 + n_ids :
                                                    (uint32_t) cases[ci].top_k + n_ids);
                                uint32_t m = device_select(row, n, k, top_l, top_id);
                                for (uint32_t i = 0; i < n_ids; i++)
                                        pen_l[i] = row[ids[i]];
                                int32_t got = sampler_sample_top(top, top_l, top_id, m, pen_l);
                                if (got != want)
                                        fail_msg("n=%u case %zu step %u: %d from the device's %u best, %d from the row",
                                                 n, ci, t, got, m, want);
                                sampler_accept(whole, want);
                                sampler_accept(top, got);
                                steps++;
                        }
                }
        print_message("# %u steps: the same tokens from the best logits as from the whole row\n", steps);

        /* Only the whole row will do: top-k off with a temperature, or too many logits asked for. */
        const int32_t *ids;
        uint32_t n_ids;
        SamplerParams p = params_plain(0.8f, 1);
        _cleanup_(sampler_freep) Sampler *off = sampler_new(&p, 1000);
        assert_non_null(off);
        assert_int_equal(sampler_top_request(off, &ids, &n_ids), 0);
        p.top_k = SAMPLER_TOP_MAX;
        p.repeat_penalty = 1.1f;
        _cleanup_(sampler_freep) Sampler *big = sampler_new(&p, 1000);
        assert_non_null(big);
        assert_int_equal(sampler_top_request(big, &ids, &n_ids), SAMPLER_TOP_MAX);
        sampler_accept(big, 7);
        assert_int_equal(sampler_top_request(big, &ids, &n_ids), 0);
        assert_int_equal(n_ids, 1);
        assert_int_equal(ids[0], 7);
}

/* ---- speed on a Qwen2-sized vocabulary ---- */

static double now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

static double time_sampler(const SamplerParams *p, const float *rows, unsigned n_rows, unsigned reps) {
        _cleanup_(sampler_freep) Sampler *s = sampler_new(p, QWEN2_VOCAB);
        _cleanup_free_ float *copy = malloc(QWEN2_VOCAB * sizeof(float));
        double best = INFINITY;

        assert_non_null(s);
        assert_non_null(copy);
        for (unsigned r = 0; r < reps; r++) {
                const float *row = rows + (size_t) (r % n_rows) * QWEN2_VOCAB;
                memcpy(copy, row, QWEN2_VOCAB * sizeof(float));
                double t0 = now_ms();
                (void) sampler_sample(s, copy);
                double t = now_ms() - t0;
                if (t < best)
                        best = t;
        }
        return best;
}

static void test_speed(void **state) {
        const unsigned n_rows = 4;
        _cleanup_free_ float *rows = malloc((size_t) n_rows * QWEN2_VOCAB * sizeof(float));
        assert_non_null(rows);
        for (unsigned r = 0; r < n_rows; r++)
                random_logits(rows + (size_t) r * QWEN2_VOCAB, QWEN2_VOCAB);

        struct {
                const char *what;
                float temperature;
                int32_t top_k;
                float top_p, min_p, penalty;
        } cases[] = {
                { "greedy", 0.0f, 40, 0.95f, 0.05f, 1.0f },
                { "defaults (top_k=40 top_p=0.95 min_p=0.05)", 0.8f, 40, 0.95f, 0.05f, 1.0f },
                { "defaults + repeat_penalty 1.1 over 64", 0.8f, 40, 0.95f, 0.05f, 1.1f },
                { "top_k=0 top_p=0.95 min_p=0.05", 0.8f, 0, 0.95f, 0.05f, 1.0f },
                { "top_k=0 top_p=0.95 min_p=0", 0.8f, 0, 0.95f, 0.0f, 1.0f },
                { "top_k=0 top_p=1 min_p=0 (full softmax)", 0.8f, 0, 1.0f, 0.0f, 1.0f },
                { "top_k=1000 top_p=0.99", 1.0f, 1000, 0.99f, 0.0f, 1.0f },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                SamplerParams p;
                sampler_params_default(&p);
                p.seed = 5;
                p.temperature = cases[i].temperature;
                p.top_k = cases[i].top_k;
                p.top_p = cases[i].top_p;
                p.min_p = cases[i].min_p;
                p.repeat_penalty = cases[i].penalty;
                double ms = time_sampler(&p, rows, n_rows, 40);
                print_message("# %u tokens, %s: %.3f ms (best of 40)\n", QWEN2_VOCAB, cases[i].what, ms);
                /* Far above the ~2 ms goal: catches a quadratic path, not a slow machine. */
                assert_true(ms < 50.0);
        }

        /* Already sorted, all equal: where a naive quickselect goes quadratic. */
        for (uint32_t i = 0; i < QWEN2_VOCAB; i++)
                rows[i] = (float) i * 1e-4f;
        for (uint32_t i = 0; i < QWEN2_VOCAB; i++)
                rows[QWEN2_VOCAB + i] = 1.0f;
        SamplerParams p = params_plain(1.0f, 5);
        p.top_k = 40;
        p.top_p = 0.95f;
        double sorted = time_sampler(&p, rows, 1, 10);
        double equal = time_sampler(&p, rows + QWEN2_VOCAB, 1, 10);
        print_message("# %u tokens, sorted row: %.3f ms, all equal: %.3f ms\n", QWEN2_VOCAB, sorted, equal);
        assert_true(sorted < 50.0);
        assert_true(equal < 50.0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_validate),
                cmocka_unit_test(test_greedy),
                cmocka_unit_test(test_truncation_to_one_is_greedy),
                cmocka_unit_test(test_seed),
                cmocka_unit_test(test_reset_replays),
                cmocka_unit_test(test_golden_sequence),
                cmocka_unit_test(test_probabilities),
                cmocka_unit_test(test_distribution),
                cmocka_unit_test(test_min_p),
                cmocka_unit_test(test_repetition_penalty),
                cmocka_unit_test(test_nonfinite),
                cmocka_unit_test(test_filters_match_reference),
                cmocka_unit_test(test_top_matches_whole_row),
                cmocka_unit_test(test_speed),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
