/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "worker.h"

typedef struct Task Task;
struct Task {
        Task *next;
        worker_run_t run;
        void (*drop)(void *);
        void *userdata;
};

typedef struct Msg Msg;
struct Msg {
        Msg *next;
        worker_deliver_t deliver;
        void *msg;
};

struct Worker {
        char *name;
        pthread_t thread;
        bool started;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        Task *tasks, **tasks_tail;
        unsigned n_tasks;
        bool stopping;
        Msg *msgs, **msgs_tail;
        struct event *wake;             /* activated from the worker: drain msgs on the loop */
};

static void wake_cb(evutil_socket_t fd, short what, void *userdata) {
        Worker *w = userdata;
        Msg *list;

        pthread_mutex_lock(&w->lock);
        list = w->msgs;
        w->msgs = NULL;
        w->msgs_tail = &w->msgs;
        pthread_mutex_unlock(&w->lock);

        while (list) {
                Msg *m = list;
                list = m->next;
                m->deliver(m->msg);
                free(m);
        }
}

static void *thread_main(void *userdata) {
        Worker *w = userdata;

        for (;;) {
                Task *t;
                pthread_mutex_lock(&w->lock);
                while (!w->tasks && !w->stopping)
                        pthread_cond_wait(&w->cond, &w->lock);
                if (w->stopping) {
                        pthread_mutex_unlock(&w->lock);
                        return NULL;
                }
                t = w->tasks;
                w->tasks = t->next;
                if (!w->tasks)
                        w->tasks_tail = &w->tasks;
                w->n_tasks--;
                pthread_mutex_unlock(&w->lock);

                t->run(w, t->userdata);
                free(t);
        }
}

int worker_new(struct event_base *base, const char *name, Worker **ret) {
        _cleanup_(worker_freep) Worker *w = NULL;

        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->name = strdup(name);
        if (!w->name)
                return -ENOMEM;
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->cond, NULL);
        w->tasks_tail = &w->tasks;
        w->msgs_tail = &w->msgs;
        w->wake = event_new(base, -1, 0, wake_cb, w);
        if (!w->wake)
                return -ENOMEM;
        int r = pthread_create(&w->thread, NULL, thread_main, w);
        if (r != 0)
                return -r;
        w->started = true;
        (void) pthread_setname_np(w->thread, w->name);
        *ret = TAKE_PTR(w);
        return 0;
}

Worker *worker_free(Worker *w) {
        if (!w)
                return NULL;
        if (w->started) {
                pthread_mutex_lock(&w->lock);
                w->stopping = true;
                pthread_cond_broadcast(&w->cond);
                pthread_mutex_unlock(&w->lock);
                pthread_join(w->thread, NULL);
        }
        /* Deliver what the last task posted, then drop what never ran. */
        if (w->wake)
                wake_cb(-1, 0, w);
        while (w->tasks) {
                Task *t = w->tasks;
                w->tasks = t->next;
                if (t->drop)
                        t->drop(t->userdata);
                free(t);
        }
        if (w->wake)
                event_free(w->wake);
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        free(w->name);
        free(w);
        return NULL;
}

int worker_queue(Worker *w, worker_run_t run, void (*drop)(void *), void *userdata) {
        Task *t = calloc(1, sizeof *t);
        if (!t)
                return -ENOMEM;
        t->run = run;
        t->drop = drop;
        t->userdata = userdata;
        pthread_mutex_lock(&w->lock);
        *w->tasks_tail = t;
        w->tasks_tail = &t->next;
        w->n_tasks++;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
        return 0;
}

unsigned worker_queue_length(Worker *w) {
        pthread_mutex_lock(&w->lock);
        unsigned n = w->n_tasks;
        pthread_mutex_unlock(&w->lock);
        return n;
}

int worker_post(Worker *w, worker_deliver_t deliver, void *msg) {
        Msg *m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->deliver = deliver;
        m->msg = msg;
        pthread_mutex_lock(&w->lock);
        *w->msgs_tail = m;
        w->msgs_tail = &m->next;
        pthread_mutex_unlock(&w->lock);
        event_active(w->wake, 0, 0);
        return 0;
}
