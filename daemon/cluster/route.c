/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster-internal.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "pki.h"
#include "route.h"
#include "serve.h"
#include "time-util.h"

/* A member that took a job but never said it started is given this long. */
#define START_TIMEOUT_USEC (30 * USEC_PER_SEC)

static bool tried(const RemoteJob *r, const SwimId *id) {
        for (size_t i = 0; i < r->n_tried; i++)
                if (memcmp(r->tried[i], id->bytes, 16) == 0)
                        return true;
        return false;
}

static bool member_has_model(const Member *mb, const char *model) {
        if (!mb->meta.frame)
                return false;
        for (size_t i = 0; i < mb->meta.st.n_models; i++)
                if (streq(mb->meta.st.models[i].name, model) && mb->meta.st.models[i].state == PROTO_MODEL_READY)
                        return true;
        return false;
}

/* Outstanding work per capacity: queued and running jobs (theirs, or ours sent since they last said) + this one. */
static double member_score(const Member *mb) {
        double queue = MAX((double) mb->meta.st.queue, (double) mb->routed);
        return (queue + 1.0) / MAX(mb->meta.st.capacity, 1e-3);
}

static int pick(Cluster *c, const char *model, bool here, const RemoteJob *exclude, Member **ret) {
        Member *best = NULL;
        double best_score = 0;

        *ret = NULL;
        if (!c || c->state != CLUSTER_ACTIVE)
                return here ? 0 : -ENOENT;
        if (here)
                best_score = (serve_jobs_active(c->manager) + 1.0) / cluster_capacity(c);
        for (size_t i = 0; i < c->n_members; i++) {
                Member *mb = c->members[i];
                const SwimUpdate *u = cluster_member_swim(c, mb);
                /* Only members believed alive: a suspect one is likely the next to fail over from. */
                if (mb->self || !u || u->state != SWIM_ALIVE || !member_has_model(mb, model))
                        continue;
                if (exclude && tried(exclude, &mb->id))
                        continue;
                double score = member_score(mb);
                /* Ties stay here: no network hop. */
                if ((!best && !here) || score < best_score) {
                        best = mb;
                        best_score = score;
                }
        }
        if (!best)
                return here ? 0 : -ENOENT;
        *ret = best;
        return 1;
}

int route_pick(Cluster *c, const char *model, bool here, Member **ret) {
        return pick(c, model, here, NULL, ret);
}

static void set_node(RemoteJob *r, Member *mb) {
        memcpy(r->node, mb->id.bytes, sizeof r->node);
        if (mb->meta.frame)
                snprintf(r->node_name, sizeof r->node_name, "%s", mb->meta.st.name);
        else
                pki_hex(mb->id.bytes, 16, r->node_name);
}

int route_send(Cluster *c, Job *j, Member *mb) {
        _cleanup_(frame_buffer_done) FrameBuffer b = {};
        _cleanup_free_ ProtoChatMessage *msgs = NULL;
        RemoteJob *r = j->remote;
        const JobRequest *q = &r->req;
        int k;

        if (q->chat) {
                msgs = calloc(MAX(q->n_messages, 1u), sizeof *msgs);
                if (!msgs)
                        return -ENOMEM;
                for (size_t i = 0; i < q->n_messages; i++)
                        msgs[i] = (ProtoChatMessage) { .role = q->roles[i], .content = q->contents[i] };
        }
        ProtoJob pj = {
                .job = j->id,
                .model = q->model,
                .chat = q->chat,
                .prompt = q->prompt,
                .messages = msgs,
                .n_messages = q->n_messages,
                .options = {
                        /* What is left of the budget after what was delivered. */
                        .max_tokens = q->max_tokens > r->n_tokens ? q->max_tokens - (uint32_t) r->n_tokens : 1,
                        .sampler = q->sampling,
                        .stop = q->stop,
                        .have_add_bos = q->have_add_bos,
                        .add_bos = q->add_bos,
                        .chat_template = q->template_name,
                },
                .resume = r->tokens,
                .n_resume = r->n_tokens,
                .resume_bytes = r->text_bytes,
        };
        k = proto_pack_job(&b, &pj);
        if (k < 0)
                return k;
        k = cluster_send(c, mb, &b);
        if (k < 0)
                return k;
        set_node(r, mb);
        r->started = false;
        r->sent_usec = now_usec(CLOCK_MONOTONIC);
        mb->routed++;
        log_debug("Job %u (model '%s') goes to member %s at %s.", j->id, j->model, r->node_name, mb->addr);
        return 0;
}

static Member *running_member(Cluster *c, const Job *j) {
        return j->remote ? cluster_member(c, (const SwimId *) j->remote->node) : NULL;
}

static void release(Cluster *c, Job *j) {
        Member *mb = running_member(c, j);
        if (mb && mb->routed > 0)
                mb->routed--;
}

void route_cancel(Cluster *c, Job *j) {
        _cleanup_(frame_buffer_done) FrameBuffer b = {};
        Member *mb = running_member(c, j);
        ProtoJobCancel m = { .job = j->id };

        release(c, j);
        if (mb && proto_pack_job_cancel(&b, &m) >= 0)
                (void) cluster_send(c, mb, &b);
}

/* The member running j failed it: on to the next, from where it was. */
static void failover(Cluster *c, Job *j, const char *why) {
        RemoteJob *r = j->remote;
        Member *next = NULL;
        char msg[512];

        release(c, j);
        uint8_t(*t)[16] = reallocarray(r->tried, r->n_tried + 1, sizeof *t);
        if (t) {
                r->tried = t;
                memcpy(r->tried[r->n_tried++], r->node, 16);
        }
        Served *s = served_find(c->manager, j->model);
        bool here = s && s->model && !s->unloading;
        for (;;) {
                int k = pick(c, j->model, here, r, &next);
                if (k == 0) {
                        _cleanup_free_ char *err = NULL;
                        log_fields(LOG_NOTICE, 0, LOG_FIELDS(INFERD_MESSAGE_JOB_FAILOVER, "JOB", j->object_path),
                                   "Job %u continues on this node after %zu tokens: member %s %s.", j->id,
                                   r->n_tokens, r->node_name, why);
                        if (serve_job_move_here(j, &err) >= 0)
                                return;
                        here = false;
                        continue;
                }
                if (k < 0)
                        break;
                char from[64];
                snprintf(from, sizeof from, "%s", r->node_name);
                if (route_send(c, j, next) >= 0) {
                        log_fields(LOG_NOTICE, 0, LOG_FIELDS(INFERD_MESSAGE_JOB_FAILOVER, "JOB", j->object_path),
                                   "Job %u moves from member %s to %s after %zu tokens: %s.", j->id, from,
                                   r->node_name, r->n_tokens, why);
                        return;
                }
                t = reallocarray(r->tried, r->n_tried + 1, sizeof *t);
                if (!t)
                        break;
                r->tried = t;
                memcpy(r->tried[r->n_tried++], next->id.bytes, 16);
        }
        snprintf(msg, sizeof msg, "Member %s %s, and no other member can continue the job.", r->node_name, why);
        job_finished(j, "error", msg, 0, 0);
}

/* ---- the origin's side: what the serving member says ---- */

static Job *routed_job(Cluster *c, Member *from, uint32_t id) {
        Job *j = serve_job_find(c->manager, id);
        if (!j || !j->remote || job_ended(j) || memcmp(j->remote->node, from->id.bytes, 16) != 0)
                return NULL;
        return j;
}

/* A member talks about a job that is not (or no longer) its: make it stop. */
static void stale(Cluster *c, Member *from, uint32_t id) {
        _cleanup_(frame_buffer_done) FrameBuffer b = {};
        ProtoJobCancel m = { .job = id };
        if (proto_pack_job_cancel(&b, &m) >= 0)
                (void) cluster_send(c, from, &b);
}

static int on_piece(Cluster *c, Member *from, Frame *f, char **ret_error) {
        ProtoPiece p;
        int r = proto_unpack_piece(f, &p, ret_error);
        if (r < 0)
                return r;
        Job *j = routed_job(c, from, p.job);
        if (!j) {
                stale(c, from, p.job);
                return 0;
        }
        RemoteJob *rj = j->remote;
        if (rj->n_tokens + p.n_tokens > rj->a_tokens) {
                size_t a = MAX(rj->a_tokens * 2, rj->n_tokens + p.n_tokens + 64);
                int32_t *t = reallocarray(rj->tokens, a, sizeof *t);
                if (!t)
                        return -ENOMEM;
                rj->tokens = t;
                rj->a_tokens = a;
        }
        memcpy(rj->tokens + rj->n_tokens, p.tokens, p.n_tokens * sizeof(int32_t));
        rj->n_tokens += p.n_tokens;
        rj->text_bytes += strlen(p.text);
        rj->started = true;
        job_piece(j, p.text, p.tokens, p.n_tokens);
        return 0;
}

static int on_job_end(Cluster *c, Member *from, Frame *f, char **ret_error) {
        ProtoJobEnd e;
        int r = proto_unpack_job_end(f, &e, ret_error);
        if (r < 0)
                return r;
        Job *j = routed_job(c, from, e.job);
        if (!j)
                return 0;
        if (streq(e.reason, "rejected")) {
                release(c, j);
                j->rejected = true;
                job_finished(j, "error", e.error, 0, 0);
                return 0;
        }
        if (streq(e.reason, "error")) {
                /* Not loaded there any more, out of memory, a device failure: someone else may manage. */
                char why[PROTO_ERROR_MAX + 32];
                snprintf(why, sizeof why, "failed it (%s)", e.error);
                failover(c, j, why);
                return 0;
        }
        release(c, j);
        static const char *const reasons[] = { "stop", "length", "cancelled" };
        const char *reason = "stop";
        for (size_t i = 0; i < ELEMENTSOF(reasons); i++)
                if (streq(e.reason, reasons[i]))
                        reason = reasons[i];
        job_finished(j, reason, NULL, e.prompt_usec, e.generate_usec);
        return 0;
}

/* ---- the serving side: jobs for other members ---- */

static int on_job(Cluster *c, Member *from, Frame *f, char **ret_error) {
        _cleanup_(job_request_done) JobRequest q = {};
        _cleanup_free_ char *err = NULL;
        ProtoJob pj;
        int r;

        r = proto_unpack_job(f, &pj, ret_error);
        if (r < 0)
                return r;
        q.model = strdup(pj.model);
        q.chat = pj.chat;
        q.max_tokens = pj.options.max_tokens;
        q.sampling = pj.options.sampler;
        q.add_bos = pj.options.add_bos;
        q.have_add_bos = pj.options.have_add_bos;
        q.resume_bytes = pj.resume_bytes;
        if (!q.model)
                return -ENOMEM;
        if (!pj.chat && !(q.prompt = strdup(pj.prompt)))
                return -ENOMEM;
        if (pj.options.chat_template && !(q.template_name = strdup(pj.options.chat_template)))
                return -ENOMEM;
        if (pj.options.stop && !(q.stop = strv_copy(pj.options.stop)))
                return -ENOMEM;
        if (pj.chat && pj.n_messages > 0) {
                q.roles = calloc(pj.n_messages, sizeof(char *));
                q.contents = calloc(pj.n_messages, sizeof(char *));
                if (!q.roles || !q.contents)
                        return -ENOMEM;
                for (; q.n_messages < pj.n_messages; q.n_messages++) {
                        q.roles[q.n_messages] = strdup(pj.messages[q.n_messages].role);
                        q.contents[q.n_messages] = strdup(pj.messages[q.n_messages].content);
                        if (!q.roles[q.n_messages] || !q.contents[q.n_messages]) {
                                q.n_messages++;
                                return -ENOMEM;
                        }
                }
        }
        if (pj.n_resume > 0) {
                q.resume = malloc(pj.n_resume * sizeof(int32_t));
                if (!q.resume)
                        return -ENOMEM;
                memcpy(q.resume, pj.resume, pj.n_resume * sizeof(int32_t));
                q.n_resume = pj.n_resume;
        }
        r = serve_submit_for_peer(c->manager, &q, from->id.bytes, pj.job, &err);
        if (r < 0) {
                _cleanup_(frame_buffer_done) FrameBuffer b = {};
                /* A request that is wrong for the model (too long for its context, say) would be refused by
                 * every member: "rejected" tells the origin not to try the others. */
                ProtoJobEnd e = { .job = pj.job, .reason = r == -EINVAL ? "rejected" : "error",
                                  .error = err ? err : strerror(-r) };
                if (proto_pack_job_end(&b, &e) >= 0)
                        (void) cluster_send(c, from, &b);
        }
        return 0;
}

static Job *job_for(Cluster *c, Member *from, uint32_t origin_job) {
        for (Job *j = c->manager->jobs; j; j = j->next)
                if (j->from_peer && j->origin_job == origin_job && memcmp(j->origin, from->id.bytes, 16) == 0)
                        return j;
        return NULL;
}

int route_frame(Cluster *c, Member *from, ProtoType t, Frame *f, char **ret_error) {
        switch (t) {
        case PROTO_JOB:
                return on_job(c, from, f, ret_error);
        case PROTO_JOB_STARTED: {
                ProtoJobStarted s;
                int r = proto_unpack_job_started(f, &s, ret_error);
                if (r < 0)
                        return r;
                Job *j = routed_job(c, from, s.job);
                if (!j) {
                        stale(c, from, s.job);
                        return 0;
                }
                j->remote->started = true;
                job_started(j, s.prompt_tokens);
                return 0;
        }
        case PROTO_PIECE:
                return on_piece(c, from, f, ret_error);
        case PROTO_JOB_END:
                return on_job_end(c, from, f, ret_error);
        case PROTO_JOB_CANCEL: {
                ProtoJobCancel m;
                int r = proto_unpack_job_cancel(f, &m, ret_error);
                if (r < 0)
                        return r;
                Job *j = job_for(c, from, m.job);
                if (j)
                        serve_job_cancel(j);
                return 0;
        }
        default:
                return 0;
        }
}

static Member *origin_of(Cluster *c, const Job *j) {
        return c ? cluster_member(c, (const SwimId *) j->origin) : NULL;
}

static void to_origin(Cluster *c, Job *j, const FrameBuffer *b) {
        Member *mb = origin_of(c, j);
        /* Nobody to tell: the work is wasted, stop it. */
        if ((!mb || cluster_send(c, mb, b) < 0) && !atomic_exchange(&j->cancel, true))
                log_info("Job %u stops: the member that asked for it cannot be reached.", j->id);
}

void route_job_started(Cluster *c, Job *j) {
        _cleanup_(frame_buffer_done) FrameBuffer b = {};
        ProtoJobStarted m = { .job = j->origin_job, .prompt_tokens = j->n_prompt - j->n_resume };
        if (proto_pack_job_started(&b, &m) >= 0)
                to_origin(c, j, &b);
}

void route_job_piece(Cluster *c, Job *j, const char *text, const int32_t *tokens, size_t n_tokens) {
        _cleanup_(frame_buffer_done) FrameBuffer b = {};
        ProtoPiece m = { .job = j->origin_job, .text = text, .tokens = tokens, .n_tokens = n_tokens };
        if (proto_pack_piece(&b, &m) >= 0)
                to_origin(c, j, &b);
}

void route_job_end(Cluster *c, Job *j) {
        _cleanup_(frame_buffer_done) FrameBuffer b = {};
        ProtoJobEnd m = {
                .job = j->origin_job,
                .reason = j->finish_reason,
                .error = j->error,
                .prompt_tokens = j->n_prompt - j->n_resume,
                .generated = j->generated,
                .prompt_usec = j->prompt_usec,
                .generate_usec = j->generate_usec,
        };
        if (proto_pack_job_end(&b, &m) >= 0)
                to_origin(c, j, &b);
}

/* ---- members that fail ---- */

static void fail_jobs_on(Cluster *c, Member *mb, const char *why) {
        /* failover() may end jobs and free none (the list is only pruned by jobs_gc), so plain iteration is safe. */
        for (Job *j = c->manager->jobs; j; j = j->next)
                if (j->remote && !job_ended(j) && memcmp(j->remote->node, mb->id.bytes, 16) == 0)
                        failover(c, j, why);
}

void route_member_gone(Cluster *c, Member *mb) {
        const SwimUpdate *u = cluster_member_swim(c, mb);
        fail_jobs_on(c, mb, u && u->state == SWIM_LEFT ? "left the cluster" : "died");
        for (Job *j = c->manager->jobs; j; j = j->next)
                if (j->from_peer && !job_ended(j) && memcmp(j->origin, mb->id.bytes, 16) == 0) {
                        /* Nobody is left to read the answer. */
                        log_info("Job %u stops: the member that asked for it %s.", j->id,
                                 u && u->state == SWIM_LEFT ? "left the cluster" : "died");
                        serve_job_cancel(j);
                }
        mb->routed = 0;
}

void route_member_unreachable(Cluster *c, Member *mb) {
        fail_jobs_on(c, mb, "cannot be reached");
}

void route_tick(Cluster *c) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        for (Job *j = c->manager->jobs; j; j = j->next)
                if (j->remote && !job_ended(j) && !j->remote->started && now - j->remote->sent_usec > START_TIMEOUT_USEC)
                        failover(c, j, "did not start the job in time");
}

void route_stop(Cluster *c) {
        for (Job *j = c->manager->jobs; j; j = j->next) {
                if (job_ended(j))
                        continue;
                if (j->remote) {
                        route_cancel(c, j);
                        job_finished(j, "error", "This node left the cluster while the job ran on another member.",
                                     0, 0);
                } else if (j->from_peer)
                        atomic_store(&j->cancel, true);
        }
}
