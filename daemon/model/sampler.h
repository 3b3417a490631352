/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Picks the next token from a row of logits, the way llama.cpp's default
 * sampler chain does:
 *
 *     repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw
 *
 * top-p and min-p look at softmax(logits) *before* the temperature, as in
 * llama.cpp, so the set of candidates does not depend on the temperature.
 * Temperature 0 is greedy: the repetition penalty still applies, the other
 * filters cannot change an argmax and are skipped.
 *
 * Reproducibility: the same seed, parameters, history and logits give the
 * same tokens on every machine. The draw uses xoshiro256** seeded through
 * splitmix64 (no rand()), the probabilities come from our own exp() built
 * from IEEE +, -, *, / (the file is compiled without FMA contraction), and
 * every tie is broken by the lower token id. Each sampler_sample() with a
 * temperature above 0 consumes exactly one 64-bit random number, whatever
 * the logits, so a degenerate row does not shift the rest of the stream.
 *
 * With top-k on, the survivors are sorted (higher logit first, ties to the
 * lower id) before top-p, min-p and the draw, so the token depends only on
 * which tokens top-k kept: sampler_sample_top() can then work from the few
 * best logits a device selected and give the same tokens.
 *
 * Non-finite logits: NaN counts as -inf (never picked), +inf as FLT_MAX (the
 * +inf tokens share the probability mass). If no token is left (every logit
 * -inf or NaN) the result is token 0, so the caller always gets a valid id.
 *
 * Threads: a Sampler is used by one thread at a time; different Samplers are
 * independent.
 */

#include <stdint.h>
#include <stddef.h>

/* SamplerParams.seed: draw a seed when the sampler is created; sampler_seed() tells which. */
#define SAMPLER_SEED_RANDOM UINT64_MAX

/* The history is allocated up front; beyond a context's worth it stops making sense. */
#define SAMPLER_REPEAT_LAST_N_MAX 131072u

typedef struct SamplerParams {
        float temperature;              /* 0: greedy; 0..100 */
        int32_t top_k;                  /* 0: off */
        float top_p;                    /* 1: off; (0, 1] */
        float min_p;                    /* 0: off; [0, 1], relative to the most likely token */
        float repeat_penalty;           /* 1: off; (0, 10] */
        uint32_t repeat_last_n;         /* tokens of history the penalty looks at; 0: off */
        uint64_t seed;                  /* SAMPLER_SEED_RANDOM: a fresh one per sampler */
} SamplerParams;

typedef struct Sampler Sampler;

/* temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1.0 (off),
 * repeat_last_n 64, seed SAMPLER_SEED_RANDOM: llama.cpp's defaults. */
void sampler_params_default(SamplerParams *p);

/* 0, or -EINVAL and, if ret_error is not NULL, a message naming the first bad
 * field, its value and the allowed range (free() it). */
int sampler_params_validate(const SamplerParams *p, char **ret_error);

/* NULL if out of memory, if n_vocab is 0 or above INT32_MAX, or if the
 * parameters do not validate (check them with sampler_params_validate() first
 * to tell the client why). Buffers for n_vocab candidates are allocated here,
 * so sampling itself never allocates. */
Sampler *sampler_new(const SamplerParams *p, uint32_t n_vocab);
Sampler *sampler_free(Sampler *s);
static inline void sampler_freep(Sampler **s) {
        if (*s)
                sampler_free(*s);
}

/* The seed in use: the one asked for, or the one drawn for SAMPLER_SEED_RANDOM
 * (report it, so that a client can replay the request). */
uint64_t sampler_seed(const Sampler *s);

/* Picks a token from logits[n_vocab]. The row is modified in place (non-finite
 * values replaced, repetition penalty applied). Does not add the token to the
 * history: call sampler_accept() with what was actually emitted. */
int32_t sampler_sample(Sampler *s, float *logits);

/* Adds a token to the repetition history (prompt tokens too, if the caller
 * wants them penalised, as llama.cpp does). Ids outside [0, n_vocab) are
 * ignored. */
void sampler_accept(Sampler *s, int32_t token);

/*
 * Sampling from a device's best logits instead of the whole row, with the
 * same result and the same random stream as sampler_sample():
 *
 *     k = sampler_top_request(s, &ids, &n_ids);
 *     if (k > 0) { the device selects the k best logits of the row (higher
 *         first, ties to the lower id, NaN and -inf never, +inf as FLT_MAX)
 *         and copies the raw logits of ids[0..n_ids), the penalised tokens;
 *         token = sampler_sample_top(s, top_logits, top_ids, m, pen_logits); }
 *     else token = sampler_sample(s, whole_row);
 *
 * k is 0 when only the whole row will do: top-k off with a temperature, or
 * more than SAMPLER_TOP_MAX values needed. ids stays valid until the next
 * call on s. m: how many the device found, k or fewer when the row has fewer
 * selectable logits; in any order.
 */
#define SAMPLER_TOP_MAX 256u
uint32_t sampler_top_request(Sampler *s, const int32_t **ret_ids, uint32_t *ret_n_ids);
int32_t sampler_sample_top(Sampler *s, const float *top_logits, const int32_t *top_ids, uint32_t m,
                           const float *pen_logits);

/* Forgets the history and restarts the random stream from the seed: the same
 * logits then give the same tokens again. */
void sampler_reset(Sampler *s);

/* The candidates the next token is drawn from, without drawing: applies the
 * penalty (modifying logits like sampler_sample()), top-k, top-p and min-p,
 * writes the surviving ids in ascending order to ret_ids and, if ret_probs is
 * not NULL, their probabilities after the temperature to ret_probs (room for
 * n_vocab in each); returns how many (at least 1: greedy and a row with
 * nothing finite give the one token sampler_sample() would return, with 1.0).
 * The random stream is untouched. For tests, diagnostics and log-probs. */
size_t sampler_candidates(Sampler *s, float *logits, int32_t *ret_ids, double *ret_probs);
