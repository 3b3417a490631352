/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * A worker thread per device. GPU work (loading weights, running a model)
 * blocks for milliseconds to minutes, so it never runs on the event loop:
 * the loop queues a task, the worker runs it, and whatever the task wants to
 * tell the loop (a generated piece, "done") comes back as a message that the
 * loop handles on its own thread, in order.
 *
 * Ownership: the Worker owns queued tasks until they run; a task's userdata
 * belongs to the task's functions. Messages are freed by the worker after
 * the loop handled them.
 */

#include <event2/event.h>
#include <stdbool.h>

typedef struct Worker Worker;

/* Runs on the worker thread. */
typedef void (*worker_run_t)(Worker *w, void *userdata);
/* Runs on the loop thread for each message a task posted. */
typedef void (*worker_deliver_t)(void *msg);

/* base must have been created after evthread_use_pthreads(): the worker
 * activates events on it from its own thread. */
int worker_new(struct event_base *base, const char *name, Worker **ret);
/* Stops after the running task returns; queued tasks are dropped through their `drop` callbacks. */
Worker *worker_free(Worker *w);
static inline void worker_freep(Worker **w) {
        if (*w)
                worker_free(*w);
}

/* Queues a task. drop(userdata), if not NULL, runs on the loop thread when the
 * task is discarded without running (worker shutting down). */
int worker_queue(Worker *w, worker_run_t run, void (*drop)(void *userdata), void *userdata);
unsigned worker_queue_length(Worker *w);

/* From the worker thread: hand msg to deliver() on the loop thread. */
int worker_post(Worker *w, worker_deliver_t deliver, void *msg);
