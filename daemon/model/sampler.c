/* SPDX-License-Identifier: MIT */

/*
 * Reproducible draws need every a * b + c rounded twice, as written: GCC
 * fuses them into one FMA where the target has it (aarch64, x86-64-v3), which
 * changes the last bits and so, now and then, a token. Set before any include,
 * so that every function in this file, inline ones from headers too, is
 * compiled the same way (mixed flags would block inlining).
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <assert.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "macro.h"
#include "sampler.h"

#if FLT_EVAL_METHOD != 0 && FLT_EVAL_METHOD != 16
/* x87 keeps intermediates in 80 bits: still deterministic on one machine, but
 * not the same tokens as everywhere else. (16: only _Float16 is widened.) */
#warning "FLT_EVAL_METHOD != 0: sampling will not match other machines bit for bit"
#endif

/* Below this many candidates a range is sorted outright. */
#define SMALL_RANGE 16

/* Up to this top_k a heap selects the candidates in the same pass that
 * sanitises the row; above, quickselect on all of them. */
#define HEAP_MAX_K 1024

typedef struct Candidate {
        double w;                       /* exp(logit - max logit), when computed */
        float logit;
        int32_t id;
} Candidate;

struct Sampler {
        SamplerParams params;           /* seed resolved */
        uint32_t n_vocab;
        uint64_t rng[4];                /* xoshiro256** state */

        int32_t *history;               /* ring of params.repeat_last_n tokens, NULL if no penalty */
        uint32_t history_len;           /* valid entries */
        uint32_t history_next;          /* slot for the next token */
        int32_t *pen_ids;               /* the window's distinct tokens, ascending (collect_penalised()) */
        uint32_t n_pen;
        bool pen_current;               /* pen_ids is the window's as it is now */

        Candidate *cand;                /* n_vocab */
};

void sampler_params_default(SamplerParams *p) {
        assert(p);
        *p = (SamplerParams) {
                .temperature = 0.8f,
                .top_k = 40,
                .top_p = 0.95f,
                .min_p = 0.05f,
                .repeat_penalty = 1.0f,
                .repeat_last_n = 64,
                .seed = SAMPLER_SEED_RANDOM,
        };
}

_printf_(2, 3)
static int invalid(char **ret_error, const char *format, ...) {
        if (ret_error) {
                va_list ap;
                char *m;

                va_start(ap, format);
                if (vasprintf(&m, format, ap) < 0)
                        m = NULL;
                va_end(ap);
                *ret_error = m;
        }
        return -EINVAL;
}

int sampler_params_validate(const SamplerParams *p, char **ret_error) {
        assert(p);

        /* Written as !(in range) so that NaN fails too. */
        if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
                return invalid(ret_error, "temperature=%g is out of range: expected 0 (greedy) to 100",
                               (double) p->temperature);
        if (p->top_k < 0)
                return invalid(ret_error, "top_k=%" PRIi32 " is out of range: expected 0 (off) or more",
                               p->top_k);
        if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
                return invalid(ret_error, "top_p=%g is out of range: expected above 0, at most 1 (off)",
                               (double) p->top_p);
        if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
                return invalid(ret_error, "min_p=%g is out of range: expected 0 (off) to 1",
                               (double) p->min_p);
        if (!(p->repeat_penalty > 0.0f && p->repeat_penalty <= 10.0f))
                return invalid(ret_error,
                               "repeat_penalty=%g is out of range: expected above 0, at most 10 (1: off)",
                               (double) p->repeat_penalty);
        if (p->repeat_last_n > SAMPLER_REPEAT_LAST_N_MAX)
                return invalid(ret_error, "repeat_last_n=%" PRIu32 " is out of range: expected 0 (off) to %u",
                               p->repeat_last_n, SAMPLER_REPEAT_LAST_N_MAX);
        return 0;
}

/* ---- random numbers: the same stream on every machine ---- */

static uint64_t splitmix64(uint64_t *x) {
        uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

static void rng_seed(uint64_t rng[static 4], uint64_t seed) {
        /* splitmix64 is a bijection of its counter: four consecutive outputs
         * are never all zero, the one state xoshiro must not start from. */
        uint64_t x = seed;
        for (size_t i = 0; i < 4; i++)
                rng[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) {
        return (x << k) | (x >> (64 - k));
}

/* xoshiro256** 1.0 (Blackman, Vigna). */
static uint64_t rng_next(uint64_t s[static 4]) {
        uint64_t result = rotl(s[1] * 5, 7) * 9;
        uint64_t t = s[1] << 17;

        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        return result;
}

/* Uniform in [0, 1): the top 53 bits, scaled exactly. */
static double rng_uniform(uint64_t s[static 4]) {
        return (double) (rng_next(s) >> 11) * 0x1.0p-53;
}

static uint64_t random_seed(const void *salt) {
        uint64_t seed;

        if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t) sizeof(seed)) {
                /* No entropy yet (early boot): a seed only needs to differ
                 * between requests, not to be secret. */
                struct timespec ts;
                (void) clock_gettime(CLOCK_MONOTONIC, &ts);
                uint64_t x = (uint64_t) ts.tv_sec * UINT64_C(1000000000) + (uint64_t) ts.tv_nsec;
                x ^= (uint64_t) (uintptr_t) salt;
                seed = splitmix64(&x);
        }
        /* Reported back to clients, who may send it again: it must not read as "random". */
        if (seed == SAMPLER_SEED_RANDOM)
                seed--;
        return seed;
}

/* 2^(j/32), correctly rounded. */
static const double exp2_table[32] = {
        0x1.0000000000000p+0, 0x1.059b0d3158574p+0, 0x1.0b5586cf9890fp+0, 0x1.11301d0125b51p+0,
        0x1.172b83c7d517bp+0, 0x1.1d4873168b9aap+0, 0x1.2387a6e756238p+0, 0x1.29e9df51fdee1p+0,
        0x1.306fe0a31b715p+0, 0x1.371a7373aa9cbp+0, 0x1.3dea64c123422p+0, 0x1.44e086061892dp+0,
        0x1.4bfdad5362a27p+0, 0x1.5342b569d4f82p+0, 0x1.5ab07dd485429p+0, 0x1.6247eb03a5585p+0,
        0x1.6a09e667f3bcdp+0, 0x1.71f75e8ec5f74p+0, 0x1.7a11473eb0187p+0, 0x1.82589994cce13p+0,
        0x1.8ace5422aa0dbp+0, 0x1.93737b0cdc5e5p+0, 0x1.9c49182a3f090p+0, 0x1.a5503b23e255dp+0,
        0x1.ae89f995ad3adp+0, 0x1.b7f76f2fb5e47p+0, 0x1.c199bdd85529cp+0, 0x1.cb720dcef9069p+0,
        0x1.d5818dcfba487p+0, 0x1.dfc97337b9b5fp+0, 0x1.ea4afa2a490dap+0, 0x1.f50765b6e4540p+0,
};

/*
 * exp(x) for x <= 0, the same bits on every machine, unlike libm's exp(),
 * whose last bit differs between implementations. x = (32m + j) ln2/32 + r
 * with |r| <= ln2/64 (ln2/32 split so that k * LN2_32_HI is exact), then
 * e^x = 2^m * 2^(j/32) * e^r, with e^r from a degree-5 Taylor polynomial
 * (relative error about 1e-15, plenty for probabilities) and 2^m put
 * together from its bits. Only IEEE-rounded +, -, * and exact conversions.
 * Below -700 the result is 0, which keeps 2^m a normal number; such weights
 * are below 1e-304 of the best token's. About 3 ns: it runs for every token
 * when top-k is off, so the table (half the polynomial) is worth it.
 */
static inline double exp_det(double x) {
        static const double INV_LN2_32 = 0x1.71547652b82fep+5;    /* 32 / ln2 */
        static const double LN2_32_HI = 0x1.62e42feep-6;          /* ln2 / 32: 32 significant bits */
        static const double LN2_32_LO = 0x1.a39ef35793c76p-38;

        if (!(x > -700.0))
                return 0.0;
        assert(x <= 0.0);

        double t = x * INV_LN2_32;
        int k = (int) (t - 0.5);        /* t <= 0: truncation rounds to nearest */
        double kd = (double) k;
        double r = (x - kd * LN2_32_HI) - kd * LN2_32_LO;
        int j = k & 31;                 /* k mod 32, k being negative */
        int m = (k - j) / 32;           /* exact */

        double p = 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;

        union {
                uint64_t u;
                double d;
        } two_m = { .u = (uint64_t) (m + 1023) << 52 };
        return exp2_table[j] * p * two_m.d;
}

/* NaN counts as -inf, +inf as FLT_MAX. Checked after the penalty, which can
 * itself overflow. One comparison for the common, finite case. */
static inline float sanitize(float *l) {
        if (_unlikely_(!(*l < INFINITY)))
                *l = *l != *l ? -INFINITY : FLT_MAX;
        return *l;
}

/* ---- candidates: one total order, so that ties never depend on the algorithm ---- */

/* Higher logit first; equal logits: lower id first. */
static inline bool cand_better(const Candidate *a, const Candidate *b) {
        return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static inline void cand_swap(Candidate *a, Candidate *b) {
        Candidate t = *a;
        *a = *b;
        *b = t;
}

static int cand_compare(const void *a, const void *b) {
        return cand_better(a, b) ? -1 : cand_better(b, a) ? 1 : 0;
}

static void cand_sort(Candidate *c, size_t n) {
        if (n <= SMALL_RANGE) {
                for (size_t i = 1; i < n; i++)
                        for (size_t j = i; j > 0 && cand_better(&c[j], &c[j - 1]); j--)
                                cand_swap(&c[j], &c[j - 1]);
        } else
                qsort(c, n, sizeof(Candidate), cand_compare);
}

/*
 * Hoare partition around the median of the first, middle and last elements,
 * n > SMALL_RANGE. Returns p: c[0..p) better than c[p], c[p+1..n) worse. The
 * order is total (ids are unique), so there are no equal keys to go quadratic
 * on; the callers still bound the depth against crafted inputs.
 */
static size_t cand_partition(Candidate *c, size_t n) {
        size_t m = n / 2;

        if (cand_better(&c[m], &c[0]))
                cand_swap(&c[m], &c[0]);
        if (cand_better(&c[n - 1], &c[0]))
                cand_swap(&c[n - 1], &c[0]);
        if (cand_better(&c[n - 1], &c[m]))
                cand_swap(&c[n - 1], &c[m]);
        cand_swap(&c[m], &c[n - 1]);
        const Candidate pivot = c[n - 1];

        size_t i = 0, j = n - 2;
        for (;;) {
                while (cand_better(&c[i], &pivot))
                        i++;
                while (j > i && cand_better(&pivot, &c[j]))
                        j--;
                if (i >= j)
                        break;
                cand_swap(&c[i], &c[j]);
                i++;
                j--;
        }
        cand_swap(&c[i], &c[n - 1]);
        return i;
}

static unsigned depth_budget(size_t n) {
        unsigned d = 0;
        while (n > 1) {
                n >>= 1;
                d++;
        }
        return 2 * d + 8;
}

/* Moves the k best of c[0..n) to c[0..k), in no particular order (nth_element). */
static void select_best(Candidate *c, size_t n, size_t k) {
        size_t lo = 0, hi = n;          /* c[0..lo) are in, c[hi..n) are out */
        unsigned budget = depth_budget(n);

        assert(k > 0 && k < n);
        while (hi - lo > SMALL_RANGE) {
                if (budget-- == 0)
                        break;
                size_t p = lo + cand_partition(c + lo, hi - lo);
                if (p == k || p + 1 == k)
                        return;
                if (p < k)
                        lo = p + 1;
                else
                        hi = p;
        }
        cand_sort(c + lo, hi - lo);
}

/* The heap in heap_select() keeps its worst candidate at the root. */
static void heap_sift_down(Candidate *h, size_t n, size_t i) {
        for (;;) {
                size_t l = 2 * i + 1, r = l + 1, worst = i;
                if (l < n && cand_better(&h[worst], &h[l]))
                        worst = l;
                if (r < n && cand_better(&h[worst], &h[r]))
                        worst = r;
                if (worst == i)
                        return;
                cand_swap(&h[i], &h[worst]);
                i = worst;
        }
}

static void heap_sift_up(Candidate *h, size_t i) {
        while (i > 0) {
                size_t parent = (i - 1) / 2;
                if (!cand_better(&h[parent], &h[i]))
                        return;
                cand_swap(&h[parent], &h[i]);
                i = parent;
        }
}

/* Appends the finite logits[from..n_vocab) (after sanitize()) to c[n..) and
 * returns the new count; *max rises to the best of them. */
static size_t append_finite(Candidate *c, size_t n, float *logits, uint32_t from, uint32_t n_vocab, float *max) {
        for (uint32_t i = from; i < n_vocab; i++) {
                float l = sanitize(&logits[i]);
                if (l == -INFINITY)
                        continue;
                c[n++] = (Candidate) { .logit = l, .id = (int32_t) i };
                if (l > *max)
                        *max = l;
        }
        return n;
}

/*
 * top-k straight from the logits, sanitising them on the way: the k best
 * finite ones (all of them if fewer) go to the front of c, and their number
 * is returned. Tokens come in
 * id order, so a newcomer beats the root only with a strictly higher logit.
 * A random row replaces the root about k ln(n/k) times. A row that rises
 * with the id (sorted, adversarial) would replace it every time, at log k
 * each: after n/8 replacements the rest of the row is appended unfiltered
 * and quickselect finishes the job.
 */
static size_t heap_select(Candidate *c, float *logits, uint32_t n_vocab, size_t k) {
        size_t n = 0, budget = n_vocab / 8;
        uint32_t i;

        for (i = 0; i < n_vocab; i++) {
                float l = sanitize(&logits[i]);
                if (l == -INFINITY)
                        continue;
                if (n < k) {
                        c[n] = (Candidate) { .logit = l, .id = (int32_t) i };
                        heap_sift_up(c, n++);
                } else if (l > c[0].logit) {
                        if (budget-- == 0)
                                break;
                        c[0] = (Candidate) { .logit = l, .id = (int32_t) i };
                        heap_sift_down(c, n, 0);
                }
        }
        if (i == n_vocab)
                return n;

        float max = -INFINITY;
        n = append_finite(c, n, logits, i, n_vocab, &max);
        select_best(c, n, k);
        return k;
}

/*
 * top-p: moves the shortest run of best candidates whose weights add up to
 * at least target to the front and returns its length; their order is not
 * sorted. Only the part of the array that holds the boundary gets sorted,
 * instead of all of it: a weighted quickselect.
 */
static size_t select_mass(Candidate *c, size_t n, double target) {
        size_t lo = 0, hi = n;          /* c[0..lo) are in, with weight acc < target; c[hi..n) are out */
        double acc = 0.0;
        unsigned budget = depth_budget(n);

        while (hi - lo > SMALL_RANGE) {
                if (budget-- == 0)
                        break;
                size_t p = lo + cand_partition(c + lo, hi - lo);
                double m = 0.0;
                for (size_t i = lo; i < p; i++)
                        m += c[i].w;
                if (acc + m >= target)
                        hi = p;
                else if (acc + m + c[p].w >= target)
                        return p + 1;
                else {
                        acc += m + c[p].w;
                        lo = p + 1;
                }
        }

        cand_sort(c + lo, hi - lo);
        for (size_t i = lo; i < hi; i++) {
                acc += c[i].w;
                if (acc >= target)
                        return i + 1;
        }
        /* Rounding: a different summation order fell just short. Keep all. */
        return hi;
}

/*
 * top-p in two steps. While the weights are computed, their mass is added
 * up in bins one nat wide below the best logit (bin b: logit - max in
 * (-(b+1), -b]); every token of a bin is better than every token of the
 * next. The bins before the one where the mass reaches the target are kept
 * whole, that one goes through select_mass(), the rest is dropped: the
 * weighted quickselect sees a few tokens instead of the whole vocabulary.
 */
#define TOP_P_BINS 64

static inline size_t top_p_bin(double x) {
        return x > -(double) (TOP_P_BINS - 1) ? (size_t) -x : TOP_P_BINS - 1;
}

static size_t top_p(Candidate *c, size_t n, float max, const double bin_mass[static TOP_P_BINS], double target) {
        double before = 0.0;
        size_t bin = 0, in = 0, edge = 0;

        for (; bin < TOP_P_BINS - 1; bin++) {
                if (before + bin_mass[bin] >= target)
                        break;
                before += bin_mass[bin];
        }

        /* One pass, three ways: c[0..in) the bins before `bin`, c[in..in+edge)
         * that bin, then those after it, then c[i..n) not seen yet. */
        for (size_t i = 0; i < n; i++) {
                size_t b = top_p_bin((double) c[i].logit - (double) max);
                if (b > bin)
                        continue;
                cand_swap(&c[in + edge], &c[i]);
                if (b == bin)
                        edge++;
                else {
                        /* The edge bin's first element moves to its end. */
                        cand_swap(&c[in], &c[in + edge]);
                        in++;
                }
        }

        return in + select_mass(c + in, edge, target - before);
}

/* ---- the chain ---- */

static int int32_compare(const void *a, const void *b) {
        int32_t x = *(const int32_t *) a, y = *(const int32_t *) b;
        return (x > y) - (x < y);
}

/* llama.cpp's rule: a penalty above 1 makes a token less likely whatever its logit's sign. */
static inline float penalise(float l, float penalty) {
        return l > 0.0f ? l / penalty : l * penalty;
}

/* The distinct tokens of the window, ascending, into s->pen_ids: llama.cpp
 * penalises each once, however often it occurs there. */
static void collect_penalised(Sampler *s) {
        /* sampler_top_request() and then sampler_sample() want it for the same token. */
        if (s->pen_current)
                return;
        s->pen_current = true;
        s->n_pen = 0;
        if (!s->history || s->history_len == 0)
                return;
        memcpy(s->pen_ids, s->history, s->history_len * sizeof(int32_t));
        qsort(s->pen_ids, s->history_len, sizeof(int32_t), int32_compare);
        for (uint32_t i = 0; i < s->history_len; i++)
                if (s->n_pen == 0 || s->pen_ids[i] != s->pen_ids[s->n_pen - 1])
                        s->pen_ids[s->n_pen++] = s->pen_ids[i];
}

static void apply_penalty(Sampler *s, float *logits) {
        collect_penalised(s);
        for (uint32_t i = 0; i < s->n_pen; i++)
                logits[s->pen_ids[i]] = penalise(logits[s->pen_ids[i]], s->params.repeat_penalty);
}

/* Ties keep the lower id; nothing finite gives 0. */
static int32_t sanitize_argmax(float *logits, uint32_t n) {
        int32_t best = 0;
        float max = -INFINITY;

        for (uint32_t i = 0; i < n; i++) {
                float l = sanitize(&logits[i]);
                if (l > max) {
                        max = l;
                        best = (int32_t) i;
                }
        }
        return best;
}

/*
 * After top-k, the survivors sorted best first (the candidate order): top-p
 * keeps the shortest prefix whose weight reaches top_p of the total, min-p
 * the prefix whose weight is at least min_p of the best's. Both look at
 * softmax(logits) before the temperature; the best candidate always
 * survives (weight 1). Sorted first, so that the result depends only on the
 * set top-k selected: the device's candidates (sampler_sample_top()) and the
 * whole row then give the same tokens.
 */
static size_t filter_sorted(Sampler *s, size_t n) {
        const SamplerParams *p = &s->params;
        Candidate *c = s->cand;

        cand_sort(c, n);
        if (n <= 1 || (p->top_p >= 1.0f && p->min_p <= 0.0f))
                return n;

        const double max = (double) c[0].logit;
        double total = 0.0;
        for (size_t i = 0; i < n; i++) {
                c[i].w = exp_det((double) c[i].logit - max);
                total += c[i].w;
        }
        if (p->top_p < 1.0f) {
                /* The same additions in the same order as total: the last one reaches it. */
                const double target = (double) p->top_p * total;
                double acc = 0.0;
                for (size_t i = 0; i < n; i++) {
                        acc += c[i].w;
                        if (acc >= target) {
                                n = i + 1;
                                break;
                        }
                }
        }
        while (n > 1 && c[n - 1].w < (double) p->min_p)
                n--;
        return n;
}

/* Penalty, top-k, top-p, min-p: leaves the candidates in s->cand[0..n) and
 * returns n, 0 if no token has a finite logit. *ret_max: the best logit. */
static size_t run_filters(Sampler *s, float *logits, float *ret_max) {
        const SamplerParams *p = &s->params;
        Candidate *c = s->cand;
        size_t n = 0;
        float max = -INFINITY;

        apply_penalty(s, logits);

        if (p->top_k > 0) {
                if (p->top_k <= HEAP_MAX_K)
                        /* The common case, top_k = 40 or so: one pass, and for most
                         * tokens a single comparison with the worst of the k kept. */
                        n = heap_select(c, logits, s->n_vocab, (size_t) p->top_k);
                else {
                        n = append_finite(c, 0, logits, 0, s->n_vocab, &max);
                        if ((size_t) p->top_k < n) {
                                select_best(c, n, (size_t) p->top_k);
                                n = (size_t) p->top_k;
                        }
                }
                n = filter_sorted(s, n);
                *ret_max = n > 0 ? c[0].logit : -INFINITY;
                return n;
        }

        /* No top-k: the whole vocabulary stays in id order, and top-p finds
         * its cut without sorting it. */
        n = append_finite(c, 0, logits, 0, s->n_vocab, &max);
        *ret_max = max;
        if (n <= 1)
                return n;

        if (p->top_p < 1.0f || p->min_p > 0.0f) {
                double total = 0.0, bin_mass[TOP_P_BINS] = {};
                for (size_t i = 0; i < n; i++) {
                        double x = (double) c[i].logit - (double) max;
                        c[i].w = exp_det(x);
                        total += c[i].w;
                        bin_mass[top_p_bin(x)] += c[i].w;
                }

                if (p->top_p < 1.0f)
                        n = top_p(c, n, max, bin_mass, (double) p->top_p * total);

                if (p->min_p > 0.0f && n > 1) {
                        /* p_i >= min_p * p_max, and p_max is weight 1. */
                        size_t kept = 0;
                        for (size_t i = 0; i < n; i++)
                                if (c[i].w >= (double) p->min_p)
                                        c[kept++] = c[i];
                        n = kept;
                }
        }

        return n;
}

/* The draw's weights, exp((logit - max) / T), into c[].w; returns their sum,
 * added up in candidate order. */
static double weigh(Sampler *s, size_t n, float max) {
        /* A multiplication per token instead of a division: 1/T rounds once,
         * the same way everywhere. */
        const double inv_temperature = 1.0 / (double) s->params.temperature;
        Candidate *c = s->cand;
        double total = 0.0;

        for (size_t i = 0; i < n; i++) {
                c[i].w = exp_det(((double) c[i].logit - (double) max) * inv_temperature);
                total += c[i].w;
        }
        return total;
}

/* Draws from s->cand[0..n) with the uniform u; n == 0: the dead row's token 0. */
static int32_t draw(Sampler *s, size_t n, float max, double u) {
        Candidate *c = s->cand;

        if (n == 0)
                return 0;
        if (n == 1)
                return c[0].id;

        double total = weigh(s, n, max);

        /* Same additions in the same order as total: the running sum ends
         * exactly at total, and target < total unless u * total rounded up. */
        double target = u * total, acc = 0.0;
        for (size_t i = 0; i < n; i++) {
                acc += c[i].w;
                if (target < acc)
                        return c[i].id;
        }
        for (size_t i = n; i > 0; i--)
                if (c[i - 1].w > 0.0)
                        return c[i - 1].id;
        return c[0].id;         /* not reached: the best candidate weighs 1 */
}

int32_t sampler_sample(Sampler *s, float *logits) {
        assert(s);
        assert(logits);

        if (s->params.temperature == 0.0f) {
                apply_penalty(s, logits);
                return sanitize_argmax(logits, s->n_vocab);
        }

        float max;
        size_t n = run_filters(s, logits, &max);
        /* Drawn before looking at n: one number per call, whatever the row. */
        double u = rng_uniform(s->rng);
        return draw(s, n, max, u);
}

uint32_t sampler_top_request(Sampler *s, const int32_t **ret_ids, uint32_t *ret_n_ids) {
        assert(s);
        assert(ret_ids);
        assert(ret_n_ids);

        collect_penalised(s);
        *ret_ids = s->pen_ids;
        *ret_n_ids = s->n_pen;

        /* Greedy needs the best token of the penalised row, the others top-k's. */
        uint64_t k = s->params.temperature == 0.0f ? 1 : (uint64_t) s->params.top_k;
        if (k == 0 || k + s->n_pen > SAMPLER_TOP_MAX)
                return 0;
        /*
         * A token outside the window is beaten after the penalty by fewer
         * than k others if it is one of the top k: by fewer than k outside
         * the window, and at most by every token of the window. So the
         * k + n_pen best of the raw row hold every such token, and the
         * window's own logits are asked for separately.
         */
        return (uint32_t) k + s->n_pen;
}

static bool is_penalised(const Sampler *s, int32_t id) {
        uint32_t lo = 0, hi = s->n_pen;

        while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                if (s->pen_ids[mid] == id)
                        return true;
                if (s->pen_ids[mid] < id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return false;
}

int32_t sampler_sample_top(Sampler *s, const float *top_logits, const int32_t *top_ids, uint32_t m,
                           const float *pen_logits) {
        const SamplerParams *p = &s->params;
        Candidate *c = s->cand;
        size_t n = 0;

        assert(s);
        assert(m == 0 || (top_logits && top_ids));
        assert(s->n_pen == 0 || pen_logits);

        /* The window's tokens with the penalty, the rest as they are: every
         * token the whole row's top-k could hold, each once. */
        /* n stays below n_vocab even if the ids repeat, which they should not. */
        for (uint32_t i = 0; i < m && n + s->n_pen < s->n_vocab; i++) {
                float l = top_logits[i];
                if (top_ids[i] < 0 || (uint32_t) top_ids[i] >= s->n_vocab || is_penalised(s, top_ids[i]) ||
                    sanitize(&l) == -INFINITY)
                        continue;
                c[n++] = (Candidate) { .logit = l, .id = top_ids[i] };
        }
        for (uint32_t i = 0; i < s->n_pen; i++) {
                float l = penalise(pen_logits[i], p->repeat_penalty);
                if (sanitize(&l) != -INFINITY)
                        c[n++] = (Candidate) { .logit = l, .id = s->pen_ids[i] };
        }

        if (p->temperature == 0.0f) {
                size_t best = 0;
                for (size_t i = 1; i < n; i++)
                        if (cand_better(&c[i], &c[best]))
                                best = i;
                return n > 0 ? c[best].id : 0;
        }

        /* top-k of those is top-k of the row; the rest is sampler_sample()'s. */
        if (p->top_k > 0 && (size_t) p->top_k < n) {
                select_best(c, n, (size_t) p->top_k);
                n = (size_t) p->top_k;
        }
        n = filter_sorted(s, n);
        double u = rng_uniform(s->rng);
        return draw(s, n, n > 0 ? c[0].logit : -INFINITY, u);
}

static int cand_compare_id(const void *a, const void *b) {
        const Candidate *x = a, *y = b;
        return (x->id > y->id) - (x->id < y->id);
}

size_t sampler_candidates(Sampler *s, float *logits, int32_t *ret_ids, double *ret_probs) {
        assert(s);
        assert(logits);
        assert(ret_ids);

        if (s->params.temperature == 0.0f) {
                apply_penalty(s, logits);
                ret_ids[0] = sanitize_argmax(logits, s->n_vocab);
                if (ret_probs)
                        ret_probs[0] = 1.0;
                return 1;
        }

        float max;
        size_t n = run_filters(s, logits, &max);
        if (n == 0) {
                /* What sampler_sample() returns for a dead row. */
                ret_ids[0] = 0;
                if (ret_probs)
                        ret_probs[0] = 1.0;
                return 1;
        }

        double total = weigh(s, n, max);
        qsort(s->cand, n, sizeof(Candidate), cand_compare_id);
        for (size_t i = 0; i < n; i++) {
                ret_ids[i] = s->cand[i].id;
                if (ret_probs)
                        ret_probs[i] = s->cand[i].w / total;
        }
        return n;
}

void sampler_accept(Sampler *s, int32_t token) {
        assert(s);

        if (!s->history || token < 0 || (uint32_t) token >= s->n_vocab)
                return;
        s->history[s->history_next] = token;
        s->history_next = (s->history_next + 1) % s->params.repeat_last_n;
        s->pen_current = false;
        if (s->history_len < s->params.repeat_last_n)
                s->history_len++;
}

void sampler_reset(Sampler *s) {
        assert(s);

        s->history_len = 0;
        s->history_next = 0;
        s->pen_current = false;
        rng_seed(s->rng, s->params.seed);
}

uint64_t sampler_seed(const Sampler *s) {
        assert(s);
        return s->params.seed;
}

Sampler *sampler_new(const SamplerParams *p, uint32_t n_vocab) {
        _cleanup_(sampler_freep) Sampler *s = NULL;

        assert(p);

        if (n_vocab == 0 || n_vocab > INT32_MAX)
                return NULL;
        if (sampler_params_validate(p, NULL) < 0)
                return NULL;

        s = calloc(1, sizeof(Sampler));
        if (!s)
                return NULL;
        s->params = *p;
        s->n_vocab = n_vocab;

        s->cand = malloc((size_t) n_vocab * sizeof(Candidate));
        if (!s->cand)
                return NULL;

        if (p->repeat_penalty != 1.0f && p->repeat_last_n > 0) {
                s->history = malloc(p->repeat_last_n * sizeof(int32_t));
                s->pen_ids = malloc(p->repeat_last_n * sizeof(int32_t));
                if (!s->history || !s->pen_ids)
                        return NULL;
        }

        if (s->params.seed == SAMPLER_SEED_RANDOM)
                s->params.seed = random_seed(s);
        sampler_reset(s);

        return TAKE_PTR(s);
}

Sampler *sampler_free(Sampler *s) {
        if (!s)
                return NULL;
        free(s->cand);
        free(s->history);
        free(s->pen_ids);
        free(s);
        return NULL;
}
