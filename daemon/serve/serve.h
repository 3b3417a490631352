/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Serving: the models this node has loaded and the jobs that run on them.
 *
 * Everything here lives on the event loop's thread, except what a task
 * does on a device's worker thread (loading weights, running a job): those
 * tasks touch only the Model/ModelContext and the job's immutable request,
 * read the job's cancel flag, and report through worker_post(). The loop
 * owns Served and Job; a Job is freed only after its task has reported that
 * it is done, so the worker never sees a dangling pointer.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <sys/types.h>

#include "model.h"
#include "sampler.h"
#include "worker.h"

typedef struct Manager Manager;

typedef struct Served Served;
struct Served {
        Served *next;
        Manager *manager;
        char *name;
        char *path;
        char *object_path;
        uint32_t device;
        uint32_t max_ctx;               /* cap for jobs' contexts (0: the model's) */
        Model *model;                   /* NULL while loading */
        bool unloading;
        unsigned n_jobs;                /* queued or running */
        sd_bus_message *pending;        /* the LoadModel or UnloadModel call awaiting its reply */
};

typedef enum JobState {
        JOB_QUEUED,
        JOB_RUNNING,
        JOB_DONE,
        JOB_FAILED,
        JOB_CANCELLED,
} JobState;

typedef enum JobKind {
        JOB_GENERATE,
        JOB_BENCH,
} JobKind;

typedef struct BenchResult {
        double pp_tps, pp_stddev, tg_tps, tg_stddev;
} BenchResult;

/* What a client asked for, as it asked: kept for jobs that run on another member, which may have to
 * be sent again elsewhere. */
typedef struct JobRequest {
        char *model;
        bool chat;
        char *prompt;                   /* !chat */
        char **roles, **contents;       /* chat: n_messages each */
        size_t n_messages;
        uint32_t max_tokens;
        SamplerParams sampling;
        char **stop;                    /* NULL-terminated, or NULL */
        bool add_bos, have_add_bos;
        char *template_name;            /* chat: NULL for the model's own */
        int32_t *resume;                /* tokens generated (and delivered) elsewhere already */
        size_t n_resume;
        uint64_t resume_bytes;          /* how much of their text the client has */
} JobRequest;

void job_request_done(JobRequest *r);
int job_request_copy(const JobRequest *from, JobRequest *to);

/* A job that runs on another member (cluster/route.c). */
typedef struct RemoteJob {
        uint8_t node[16];               /* the member running it now */
        char node_name[64];
        bool started;
        JobRequest req;
        int32_t *tokens;                /* delivered so far */
        size_t n_tokens, a_tokens;
        uint64_t text_bytes;            /* of text delivered so far */
        uint8_t (*tried)[16];           /* members that failed it */
        size_t n_tried;
        uint64_t sent_usec;             /* CLOCK_MONOTONIC, when the member was asked */
} RemoteJob;

typedef struct Job Job;

/* Where a job's output goes when its client lives in this process (HTTP) rather than on the bus or on
 * another member. Called on the loop; after finished() the job is not the sink's any more. */
typedef struct JobSink {
        void (*started)(Job *j, void *userdata);
        void (*piece)(Job *j, const char *text, const int32_t *tokens, size_t n_tokens, void *userdata);
        /* j->finish_reason, j->error, j->n_prompt, j->generated, j->prompt_usec, j->generate_usec */
        void (*finished)(Job *j, void *userdata);
} JobSink;

struct Job {
        Job *next;
        Manager *manager;
        Served *served;
        JobKind kind;
        uint32_t id;
        char *object_path;
        char *owner;                    /* unique bus name of the caller */
        uid_t owner_uid;
        sd_bus_slot *owner_watch;       /* NameOwnerChanged for owner */
        sd_bus_message *pending;        /* BenchModel: the call awaiting its reply */

        char *model;                    /* the model's name */
        const JobSink *sink;            /* an in-process client, or NULL */
        void *sink_data;
        RemoteJob *remote;              /* runs elsewhere: no served, no worker */
        bool from_peer;                 /* runs here for another member: no bus owner */
        uint8_t origin[16];             /* from_peer: that member */
        uint32_t origin_job;            /* from_peer: its id for the job */
        bool rejected;                  /* remote: the member refused the request itself (invalid for the model) */

        /* The request: set before queueing, read-only afterwards. */
        int32_t *prompt;                /* resume tokens, if any, at the end */
        uint32_t n_prompt;
        uint32_t n_resume;
        uint64_t resume_bytes;
        uint32_t max_tokens;
        SamplerParams sampling;
        char **stop;                    /* NULL-terminated */
        uint32_t bench_prompt, bench_gen, bench_reps;

        /* Written by the worker, read by the loop only after it said so. */
        atomic_bool cancel;
        BenchResult bench;

        /* Loop side. */
        JobState state;
        const char *finish_reason;      /* static string */
        char *error;
        uint32_t generated;
        uint64_t prompt_usec, generate_usec;
        uint64_t ended_usec;            /* CLOCK_MONOTONIC; finished jobs linger a while */
        bool worker_done;               /* the worker will not touch it again: it may be freed */
};

int serve_init(Manager *m);
void serve_done(Manager *m);

Served *served_find(Manager *m, const char *name);
/* Jobs queued or running here, for this node or for others. */
unsigned serve_jobs_active(Manager *m);
/* A job for another member, from its "job" frame; the request is taken. On failure *ret_error says why
 * (free() it) and nothing runs. */
int serve_submit_for_peer(Manager *m, JobRequest *req, const uint8_t origin[16], uint32_t origin_job,
                          char **ret_error);
Job *serve_job_find(Manager *m, uint32_t id);
/* Done, failed or cancelled: over for its caller (a worker may still be finishing it). */
bool job_ended(const Job *j);
/*
 * A generation for a client in this process (the HTTP API): here or on the member route.c picks, like
 * Generate and Chat. Takes req. On failure error says why (its name: INFERD_ERROR_*). The job is
 * reported through sink until finished(); *ret_job may be cancelled with serve_job_cancel() or, when
 * the client is gone, serve_job_detach().
 */
int serve_submit_job(Manager *m, JobRequest *req, const JobSink *sink, void *userdata, Job **ret_job,
                     sd_bus_error *error);
/* The client went away: the job is cancelled and its sink is never called again. */
void serve_job_detach(Job *j);
void job_request_init(JobRequest *r);

/* A routed job whose member failed continues on this node's model; *ret_error says why not. */
int serve_job_move_here(Job *j, char **ret_error);
/* Stops a job, wherever it runs; the caller hears "cancelled". */
void serve_job_cancel(Job *j);
/* For routed jobs: what the member running them reports. */
void job_started(Job *j, size_t n_prompt);
void job_piece(Job *j, const char *text, const int32_t *tokens, size_t n_tokens);
void job_finished(Job *j, const char *reason, const char *error, uint64_t prompt_usec, uint64_t generate_usec);
/* Frees jobs that ended long ago. */
void jobs_gc(Manager *m);
const char *job_state_to_string(JobState s);
