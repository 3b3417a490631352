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

typedef struct Job Job;
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

        /* The request: set before queueing, read-only afterwards. */
        int32_t *prompt;
        uint32_t n_prompt;
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
/* Frees jobs that ended long ago. */
void jobs_gc(Manager *m);
const char *job_state_to_string(JobState s);
