/* SPDX-License-Identifier: MIT */
/*
 * The work that runs on a device's worker thread: loading and freeing a
 * model, running a job (prefill, then sample and decode token by token),
 * and benchmarks. What the loop must know comes back as messages.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "macro.h"
#include "manager.h"
#include "picker.h"
#include "serve-internal.h"
#include "time-util.h"
#include "tokenizer.h"

/* ---- loading ---- */

typedef struct LoadTask {
        Served *served;
        GpuDevice *device;
        ModelOptions opts;
        char *path;
        /* results */
        Model *model;
        int r;
        char *error;
} LoadTask;

static void load_task_free(LoadTask *t) {
        if (!t)
                return;
        model_free(t->model);
        free(t->path);
        free(t->error);
        free(t);
}

static void load_deliver(void *msg) {
        LoadTask *t = msg;
        served_load_finished(t->served, t->r, TAKE_PTR(t->model), t->error);
        load_task_free(t);
}

/*
 * A job's context: what it needs rounded up to a power of two (at least
 * 256, at most the model's cap), so that the next job of about its size
 * gets the model's spare context, passes recorded and all, instead of a
 * new one (model_context_free()). At most twice the memory it needs.
 */
static uint32_t context_size(uint32_t cap, uint32_t need) {
        uint32_t n = 256;

        while (n < need && n < UINT32_MAX / 2)
                n *= 2;
        return cap ? MIN(n, cap) : n;
}

/* Generate's default max_tokens (serve-dbus.c): the context most jobs get. */
#define TYPICAL_JOB_TOKENS 256u

static void load_run(Worker *w, void *userdata) {
        LoadTask *t = userdata;
        t->r = model_load(t->device, t->path, &t->opts, &t->model, &t->error);
        if (t->r >= 0) {
                /* The first job should not wait for pipelines and recordings; a model that cannot do
                 * this will say so to that job. Its cap is what served_load_finished() makes it. */
                uint32_t cap = t->opts.max_ctx, n_train = model_hparams(t->model)->n_ctx_train;
                if (n_train > 0 && (cap == 0 || n_train < cap))
                        cap = n_train;
                int r = model_warm_up(t->model, context_size(cap, TYPICAL_JOB_TOKENS + 1));
                if (r < 0)
                        log_warning_errno(r, "Warming up %s failed, continuing: %m", t->path);
        }
        if (worker_post(w, load_deliver, t) < 0)
                load_task_free(t); /* out of memory: the loop never hears of it */
}

static void load_drop(void *userdata) {
        LoadTask *t = userdata;
        t->r = -ECANCELED;
        load_deliver(t);
}

int serve_queue_load(Served *s, Worker *w, GpuDevice *dev) {
        LoadTask *t = calloc(1, sizeof *t);
        if (!t)
                return -ENOMEM;
        t->served = s;
        t->device = dev;
        t->opts.max_ctx = s->max_ctx;
        t->path = strdup(s->path);
        if (!t->path) {
                free(t);
                return -ENOMEM;
        }
        int r = worker_queue(w, load_run, load_drop, t);
        if (r < 0)
                load_task_free(t);
        return r;
}

/* ---- unloading: after the jobs queued before it ---- */

static void unload_deliver(void *msg) {
        served_unload_finished(msg);
}

static void unload_run(Worker *w, void *userdata) {
        Served *s = userdata;
        model_free(s->model);
        s->model = NULL;
        (void) worker_post(w, unload_deliver, s);
}

int serve_queue_unload(Served *s, Worker *w) {
        return worker_queue(w, unload_run, unload_deliver, s);
}

/* ---- jobs ---- */

typedef enum JobEvent {
        JOB_EVENT_STARTED,
        JOB_EVENT_PIECE,
        JOB_EVENT_DONE,
} JobEvent;

typedef struct JobMsg {
        Job *job;
        JobEvent event;
        char *text;
        int32_t *tokens;
        size_t n_tokens;
        const char *finish_reason;
        char *error;
        uint64_t prompt_usec, generate_usec;
} JobMsg;

static void job_deliver(void *msg) {
        JobMsg *m = msg;
        switch (m->event) {
        case JOB_EVENT_STARTED:
                job_started(m->job, m->n_tokens);
                break;
        case JOB_EVENT_PIECE:
                job_piece(m->job, m->text, m->tokens, m->n_tokens);
                break;
        case JOB_EVENT_DONE:
                job_finished(m->job, m->finish_reason, m->error, m->prompt_usec, m->generate_usec);
                break;
        }
        free(m->text);
        free(m->tokens);
        free(m->error);
        free(m);
}

static void post(Worker *w, Job *j, JobEvent e, char *text, int32_t *tokens, size_t n) {
        JobMsg *m = calloc(1, sizeof *m);
        if (!m) {
                free(text);
                free(tokens);
                return;
        }
        *m = (JobMsg) { .job = j, .event = e, .text = text, .tokens = tokens, .n_tokens = n };
        if (worker_post(w, job_deliver, m) < 0) {
                free(text);
                free(tokens);
                free(m);
        }
}

static void post_done(Worker *w, Job *j, const char *reason, int r, const char *error, uint64_t prompt_usec,
                      uint64_t generate_usec) {
        JobMsg *m = calloc(1, sizeof *m);
        if (!m)
                return; /* the job stays "running" until the caller leaves; nothing better to do */
        *m = (JobMsg) { .job = j, .event = JOB_EVENT_DONE, .finish_reason = reason,
                        .prompt_usec = prompt_usec, .generate_usec = generate_usec };
        if (r < 0 || error) {
                char buf[512];
                snprintf(buf, sizeof buf, "%s%s%s", error ? error : "", error && r < 0 ? ": " : "",
                         r < 0 ? strerror(-r) : "");
                m->error = strdup(buf);
        }
        if (worker_post(w, job_deliver, m) < 0) {
                free(m->error);
                free(m);
        }
}

/*
 * Stop strings: text is held back while its end could still be the start of
 * a stop string, so a client never sees part of one.
 */
typedef struct Emitter {
        Worker *w;
        Job *job;
        char *held;
        size_t n_held;
        int32_t *tokens;
        size_t n_tokens, a_tokens;
} Emitter;

static size_t stop_prefix_len(char *const *stop, const char *text, size_t n) {
        size_t best = 0;
        for (char *const *s = stop; s && *s; s++) {
                size_t l = strlen(*s);
                for (size_t k = MIN(l - 1, n); k > best; k--)
                        if (memcmp(text + n - k, *s, k) == 0) {
                                best = k;
                                break;
                        }
        }
        return best;
}

static void emit_flush(Emitter *e, size_t upto) {
        if (upto == 0 && e->n_tokens == 0)
                return;
        char *text = strndup(e->held, upto);
        int32_t *toks = e->n_tokens ? malloc(e->n_tokens * sizeof(int32_t)) : NULL;
        if (toks)
                memcpy(toks, e->tokens, e->n_tokens * sizeof(int32_t));
        post(e->w, e->job, JOB_EVENT_PIECE, text, toks, toks ? e->n_tokens : 0);
        memmove(e->held, e->held + upto, e->n_held - upto);
        e->n_held -= upto;
        e->n_tokens = 0;
}

/* Returns true when a stop string was found (text up to it is emitted). */
static bool emit(Emitter *e, int32_t token, const char *text, size_t len) {
        if (e->n_tokens == e->a_tokens) {
                size_t a = e->a_tokens ? e->a_tokens * 2 : 16;
                int32_t *p = realloc(e->tokens, a * sizeof(int32_t));
                if (!p)
                        return false;
                e->tokens = p;
                e->a_tokens = a;
        }
        e->tokens[e->n_tokens++] = token;
        char *h = realloc(e->held, e->n_held + len + 1);
        if (!h)
                return false;
        e->held = h;
        memcpy(e->held + e->n_held, text, len);
        e->n_held += len;
        e->held[e->n_held] = 0;

        for (char **s = e->job->stop; s && *s; s++) {
                char *hit = strstr(e->held, *s);
                if (hit) {
                        emit_flush(e, (size_t) (hit - e->held));
                        return true;
                }
        }
        size_t keep = stop_prefix_len(e->job->stop, e->held, e->n_held);
        emit_flush(e, e->n_held - keep);
        return false;
}

static void job_run(Worker *w, void *userdata) {
        Job *j = userdata;
        Model *model = j->served->model;
        const Tokenizer *tok = model_tokenizer(model);
        _cleanup_(model_context_freep) ModelContext *ctx = NULL;
        _cleanup_(sampler_freep) Sampler *sampler = NULL;
        _cleanup_(tokenizer_decoder_freep) TokenDecoder *dec = NULL;
        _cleanup_(picker_freep) Picker *picker = NULL;
        int32_t token;
        Emitter e = { .w = w, .job = j };
        const char *reason = "length";
        uint64_t t0, t1, t2;
        int r;

        if (atomic_load(&j->cancel)) {
                post_done(w, j, "cancelled", 0, NULL, 0, 0);
                return;
        }
        post(w, j, JOB_EVENT_STARTED, NULL, NULL, j->n_prompt);

        uint32_t n_vocab = model_hparams(model)->n_vocab;
        r = model_context_new(model, context_size(j->served->max_ctx, j->n_prompt + j->max_tokens), &ctx);
        if (r < 0) {
                post_done(w, j, "error", r, "Failed to set up the sequence", 0, 0);
                return;
        }
        sampler = sampler_new(&j->sampling, n_vocab);
        /* Generated text continues the prompt: its leading spaces are real (no STRIP_SPACE). */
        if (!sampler || picker_new(ctx, sampler, model_samples_on_device(model), &picker) < 0 ||
            tokenizer_decoder_new(tok, 0, &dec) < 0) {
                post_done(w, j, "error", -ENOMEM, NULL, 0, 0);
                return;
        }
        for (uint32_t i = 0; i < j->n_prompt; i++)
                sampler_accept(sampler, j->prompt[i]);
        if (j->n_resume > 0) {
                /* Continuing a job another member began: its tokens end the prompt. Their text past what the
                 * client has (held back for a stop string) is held here again, and the decoder is left where
                 * it was (an incomplete character stays incomplete). */
                for (uint32_t i = j->n_prompt - j->n_resume; i < j->n_prompt; i++) {
                        char *text = NULL;
                        size_t len = 0;
                        if (tokenizer_decode_push(dec, j->prompt[i], &text, &len) >= 0 && len > 0) {
                                char *h = realloc(e.held, e.n_held + len + 1);
                                if (h) {
                                        e.held = h;
                                        memcpy(e.held + e.n_held, text, len);
                                        e.n_held += len;
                                        e.held[e.n_held] = 0;
                                }
                        }
                        free(text);
                }
                size_t skip = (size_t) MIN((uint64_t) e.n_held, j->resume_bytes);
                memmove(e.held, e.held + skip, e.n_held - skip);
                e.n_held -= skip;
                if (e.held)
                        e.held[e.n_held] = 0;
        }

        t0 = now_usec(CLOCK_MONOTONIC);
        r = picker_next(picker, j->prompt, j->n_prompt, j->max_tokens - 1, &token);
        t1 = now_usec(CLOCK_MONOTONIC);
        if (r < 0) {
                post_done(w, j, "error", r, "The prompt could not be processed", t1 - t0, 0);
                goto out;
        }

        for (uint32_t n = 0; n < j->max_tokens; n++) {
                if (atomic_load(&j->cancel)) {
                        reason = "cancelled";
                        break;
                }
                sampler_accept(sampler, token);
                if (tokenizer_is_eog(tok, token)) {
                        reason = "stop";
                        break;
                }
                char *text = NULL;
                size_t len = 0;
                r = tokenizer_decode_push(dec, token, &text, &len);
                if (r < 0) {
                        post_done(w, j, "error", r, "Failed to decode a token", t1 - t0,
                                  now_usec(CLOCK_MONOTONIC) - t1);
                        goto out;
                }
                bool stopped = emit(&e, token, text ? text : "", len);
                free(text);
                if (stopped) {
                        reason = "stop";
                        break;
                }
                if (n + 1 == j->max_tokens)
                        break;
                r = picker_next(picker, &token, 1, j->max_tokens - n - 2, &token);
                if (r < 0) {
                        post_done(w, j, "error", r, "Generation failed", t1 - t0, now_usec(CLOCK_MONOTONIC) - t1);
                        goto out;
                }
        }
        if (strcmp(reason, "stop") != 0) {
                /* What the decoder still holds (an incomplete character) and held-back text go out now. */
                char *text = NULL;
                size_t len = 0;
                if (tokenizer_decode_flush(dec, &text, &len) >= 0 && len > 0) {
                        char *h = realloc(e.held, e.n_held + len + 1);
                        if (h) {
                                e.held = h;
                                memcpy(e.held + e.n_held, text, len);
                                e.n_held += len;
                        }
                }
                free(text);
                emit_flush(&e, e.n_held);
        } else
                emit_flush(&e, 0);
        t2 = now_usec(CLOCK_MONOTONIC);
        post_done(w, j, reason, 0, NULL, t1 - t0, t2 - t1);
out:
        free(e.held);
        free(e.tokens);
}

static void job_drop(void *userdata) {
        Job *j = userdata;
        job_finished(j, "cancelled", NULL, 0, 0);
}

/* ---- benchmark: prompt processing and generation, llama-bench style ---- */

static void mean_stddev(const double *v, uint32_t n, double *mean, double *sd) {
        double s = 0, q = 0;
        for (uint32_t i = 0; i < n; i++)
                s += v[i];
        *mean = s / n;
        for (uint32_t i = 0; i < n; i++)
                q += (v[i] - *mean) * (v[i] - *mean);
        *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
}

static void bench_run(Worker *w, void *userdata) {
        Job *j = userdata;
        Model *model = j->served->model;
        _cleanup_(model_context_freep) ModelContext *ctx = NULL;
        _cleanup_(sampler_freep) Sampler *sampler = NULL;
        _cleanup_(picker_freep) Picker *picker = NULL;
        _cleanup_free_ int32_t *tokens = NULL;
        _cleanup_free_ double *pp = NULL, *tg = NULL;
        uint32_t n_vocab = model_hparams(model)->n_vocab;
        int r;

        post(w, j, JOB_EVENT_STARTED, NULL, NULL, j->bench_prompt);
        tokens = calloc(MAX(j->bench_prompt, 1), sizeof(int32_t));
        pp = calloc(j->bench_reps, sizeof(double));
        tg = calloc(j->bench_reps, sizeof(double));
        if (!tokens || !pp || !tg) {
                post_done(w, j, "error", -ENOMEM, NULL, 0, 0);
                return;
        }
        /* Token ids do not change the work; a fixed pattern keeps runs comparable. */
        for (uint32_t i = 0; i < j->bench_prompt; i++)
                tokens[i] = (int32_t) ((i * 7919u + 13u) % n_vocab);
        r = model_context_new(model, j->bench_prompt + j->bench_gen + 1, &ctx);
        if (r < 0) {
                post_done(w, j, "error", r, "Failed to set up the sequence", 0, 0);
                return;
        }
        /* Greedy, decoded as a greedy job is (several tokens per submission). */
        SamplerParams sp;
        sampler_params_default(&sp);
        sp.temperature = 0.0f;
        sp.repeat_penalty = 1.0f;
        sampler = sampler_new(&sp, n_vocab);
        if (!sampler || picker_new(ctx, sampler, model_samples_on_device(model), &picker) < 0) {
                post_done(w, j, "error", -ENOMEM, NULL, 0, 0);
                return;
        }
        /* One unmeasured round warms up pipelines and caches. */
        for (uint32_t rep = 0; rep <= j->bench_reps; rep++) {
                int32_t t = 1;
                if (atomic_load(&j->cancel)) {
                        post_done(w, j, "cancelled", 0, NULL, 0, 0);
                        return;
                }
                r = model_context_truncate(ctx, 0);
                uint64_t t0 = now_usec(CLOCK_MONOTONIC);
                if (r >= 0 && j->bench_prompt > 0)
                        r = model_eval_greedy(ctx, tokens, j->bench_prompt, &t);
                uint64_t t1 = now_usec(CLOCK_MONOTONIC);
                /* Generation is measured on its own sequence, as llama-bench's tg test is. */
                if (r >= 0)
                        r = model_context_truncate(ctx, 0);
                t = 1;
                uint64_t t2 = now_usec(CLOCK_MONOTONIC);
                for (uint32_t i = 0; r >= 0 && i < j->bench_gen; i++)
                        r = picker_next(picker, &t, 1, j->bench_gen - i - 1, &t);
                uint64_t t3 = now_usec(CLOCK_MONOTONIC);
                if (r < 0) {
                        post_done(w, j, "error", r, "Benchmark failed", 0, 0);
                        return;
                }
                if (rep > 0) {
                        pp[rep - 1] = j->bench_prompt ? j->bench_prompt / ((t1 - t0) * 1e-6) : 0;
                        tg[rep - 1] = j->bench_gen ? j->bench_gen / ((t3 - t2) * 1e-6) : 0;
                }
        }
        mean_stddev(pp, j->bench_reps, &j->bench.pp_tps, &j->bench.pp_stddev);
        mean_stddev(tg, j->bench_reps, &j->bench.tg_tps, &j->bench.tg_stddev);
        post_done(w, j, "length", 0, NULL, 0, 0);
}

int serve_queue_job(Job *j, Worker *w) {
        return worker_queue(w, j->kind == JOB_BENCH ? bench_run : job_run, job_drop, j);
}
