/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "log.h"
#include "macro.h"
#include "picker.h"

static_assert(SAMPLER_TOP_MAX == MODEL_TOP_MAX, "the sampler asks for what the model can hand over");

struct Picker {
        ModelContext *ctx;
        Sampler *sampler;
        bool on_device;
        float *logits;          /* n_vocab, for the whole row */
        ModelTop top;
};

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

Picker *picker_free(Picker *p) {
        if (!p)
                return NULL;
        free(p->logits);
        free(p);
        return NULL;
}

int picker_next(Picker *p, const int32_t *tokens, uint32_t n, int32_t *ret_token) {
        const int32_t *ids;
        uint32_t n_ids, k = sampler_top_request(p->sampler, &ids, &n_ids);
        int r;

        assert(ret_token);

        if (k == 1 && n_ids == 0) {
                r = model_eval_greedy(p->ctx, tokens, n, ret_token);
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
