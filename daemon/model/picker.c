/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "picker.h"
#include "time-util.h"

static_assert(SAMPLER_TOP_MAX == MODEL_TOP_MAX, "the sampler asks for what the model can hand over");

struct Picker {
        ModelContext *ctx;
        Sampler *sampler;
        bool on_device;
        float *logits;          /* n_vocab, for the whole row */
        ModelTop top;

        /* Decoded ahead: ahead[next..n_ahead) follow `last`, the token returned last, and are in the
         * context already (all but the final one). The caller's next token goes at resume_pos. */
        int32_t ahead[MODEL_CHAIN_MAX];
        uint32_t next, n_ahead;
        int32_t last;
        uint32_t resume_pos;
        double usec_per_token;  /* of greedy passes, measured; 0 until the first */
        uint32_t fixed_chain;   /* picker_fix_chain(), 0: by time */
};

/*
 * A chain hands its tokens out together: they reach a client in one burst.
 * Chains are as long as the model allows but take at most this long, so
 * text streams smoothly on slow devices too (where the round trip saved
 * hardly matters anyway).
 */
#define BURST_USEC 50000.0

int picker_new(ModelContext *ctx, Sampler *sampler, bool on_device, Picker **ret) {
        _cleanup_(picker_freep) Picker *p = NULL;

        assert(ctx);
        assert(sampler);
        assert(ret);

        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->ctx = ctx;
        p->sampler = sampler;
        p->on_device = on_device;
        p->logits = malloc(sizeof(float) * model_hparams(model_context_model(ctx))->n_vocab);
        if (!p->logits)
                return -ENOMEM;
        *ret = TAKE_PTR(p);
        return 0;
}

void picker_fix_chain(Picker *p, uint32_t len) {
        p->fixed_chain = MIN(len, MODEL_CHAIN_MAX);
}

Picker *picker_free(Picker *p) {
        if (!p)
                return NULL;
        free(p->logits);
        free(p);
        return NULL;
}

/* Greedy without a penalty: the device's argmax, several tokens per submission when the caller can
 * take them. */
static int next_greedy(Picker *p, const int32_t *tokens, uint32_t n, uint32_t max_more, int32_t *ret_token) {
        uint32_t pos = model_context_pos(p->ctx);
        uint32_t len = MIN(MIN(model_decode_chain(model_context_model(p->ctx)), max_more + 1),
                           model_context_n_ctx(p->ctx) - pos);
        int32_t out[MODEL_CHAIN_MAX];
        uint64_t t0;
        int r;

        if (n != 1)
                return model_eval_greedy(p->ctx, tokens, n, ret_token);
        /* One pass to measure first (the first chain of a length also records it, which the average
         * forgets soon). */
        if (p->fixed_chain > 0)
                len = MIN(len, p->fixed_chain);
        else
                len = MIN(len, p->usec_per_token > 0 ? (uint32_t) MAX(BURST_USEC / p->usec_per_token, 1.0) : 1u);

        t0 = now_usec(CLOCK_MONOTONIC);
        if (len <= 1) {
                r = model_eval_greedy(p->ctx, tokens, 1, out);
                if (r < 0)
                        return r;
                r = 1;
        } else {
                r = model_decode_greedy(p->ctx, tokens[0], len, out);
                if (r < 0)
                        return r;
        }
        double t = (double) (now_usec(CLOCK_MONOTONIC) - t0) / r;
        p->usec_per_token = p->usec_per_token > 0 ? 0.75 * p->usec_per_token + 0.25 * t : t;
        p->last = *ret_token = out[0];
        p->next = 0;
        p->n_ahead = (uint32_t) r - 1;
        memcpy(p->ahead, out + 1, p->n_ahead * sizeof(int32_t));
        p->resume_pos = pos + 1;
        return 0;
}

int picker_next(Picker *p, const int32_t *tokens, uint32_t n, uint32_t max_more, int32_t *ret_token) {
        const int32_t *ids;
        uint32_t n_ids, k;
        int r;

        assert(tokens);
        assert(ret_token);

        if (p->next < p->n_ahead) {
                if (n == 1 && tokens[0] == p->last) {
                        p->last = *ret_token = p->ahead[p->next++];
                        p->resume_pos++;
                        return 0;
                }
                /* The caller went another way: what was decoded past its token is not its sequence. */
                p->next = p->n_ahead = 0;
                r = model_context_truncate(p->ctx, p->resume_pos);
                if (r < 0)
                        return r;
        }

        k = sampler_top_request(p->sampler, &ids, &n_ids);
        if (k == 1 && n_ids == 0) {
                r = next_greedy(p, tokens, n, max_more, ret_token);
                if (r != -EIO)
                        return r;
                /* Nothing finite in the row: the sampler's answer for that, from the row itself. */
        } else if (k > 0 && p->on_device) {
                r = model_eval_top(p->ctx, tokens, n, k, ids, n_ids, &p->top);
                if (r >= 0) {
                        *ret_token = sampler_sample_top(p->sampler, p->top.logits, p->top.ids, p->top.m,
                                                        p->top.gathered);
                        return 0;
                }
                if (r != -EIO)
                        return r;
                /* The device's selection made no sense (the position is back where it was): this
                 * sequence samples from the whole row from now on, which costs the client nothing. */
                log_warning("The device's top-k candidates were invalid; sampling on the host instead.");
                p->on_device = false;
        }
        r = model_eval(p->ctx, tokens, n, p->logits);
        if (r < 0)
                return r;
        *ret_token = sampler_sample(p->sampler, p->logits);
        return 0;
}
