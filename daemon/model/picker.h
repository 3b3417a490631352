/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The next token: runs tokens through the model and has the sampler pick
 * from what the pass hands back, the cheapest way that gives the sampler's
 * token. Greedy decoding without a penalty takes the argmax on the device
 * (model_eval_greedy). Otherwise, on_device: the pass selects the
 * candidates (model_eval_top, sampler_sample_top); not on_device, or when
 * the sampler needs the whole row (top-k off): the row comes back and the
 * sampler scans it (model_eval, sampler_sample). All paths give the same
 * token for the same seed; on_device only decides where the work happens.
 * If the device's selection is ever invalid (model_eval_top's -EIO), the
 * picker logs it and reads whole rows from then on.
 *
 * A Picker belongs to one sequence and one sampler and is used by one thread.
 */

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "sampler.h"

typedef struct Picker Picker;

/* ctx and sampler stay the caller's and must outlive the picker. -ENOMEM. */
int picker_new(ModelContext *ctx, Sampler *sampler, bool on_device, Picker **ret);
Picker *picker_free(Picker *p);
static inline void picker_freep(Picker **p) {
        if (*p)
                picker_free(*p);
}

/*
 * Evaluates tokens[0..n) at the context's position and picks the next token
 * (not added to the sampler's history). max_more: how many tokens the
 * caller may still ask for after this one (max_tokens left, say).
 *
 * Greedy decoding then runs several passes in one submission, each argmax
 * feeding the next pass on the device (model_decode_greedy(): up to
 * model_decode_chain() of them, as many as take about 50 ms, so that text
 * still streams on slow devices), and hands the tokens out one call at a
 * time while the caller passes back the token it was given. The context is
 * then ahead of the caller by the tokens not yet handed out; a caller that
 * passes something else is rewound to where its token goes, one that stops
 * loses only those passes. model_eval()'s errors.
 */
int picker_next(Picker *p, const int32_t *tokens, uint32_t n, uint32_t max_more, int32_t *ret_token);

/* Greedy chains of len passes (at most MODEL_CHAIN_MAX, still within max_more and the context)
 * instead of as many as take about 50 ms: for tests, which must not depend on timing. */
void picker_fix_chain(Picker *p, uint32_t len);
