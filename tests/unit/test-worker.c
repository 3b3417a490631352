/* SPDX-License-Identifier: MIT */
/* Worker threads hand their results back to the event loop, in order. */
#include <event2/event.h>
#include <event2/thread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#include <cmocka.h>

#include "worker.h"

static struct event_base *base;
static int delivered[64], n_delivered, dropped;

static void deliver(void *msg) {
        delivered[n_delivered++] = (int) (intptr_t) msg;
        if (n_delivered == 20)
                event_base_loopbreak(base);
}

static void run(Worker *w, void *userdata) {
        int first = (int) (intptr_t) userdata;
        for (int i = 0; i < 5; i++)
                assert_int_equal(worker_post(w, deliver, (void *) (intptr_t) (first + i)), 0);
}

static void drop(void *userdata) {
        dropped++;
}

static void block(Worker *w, void *userdata) {
        usleep(200000);
}

static void test_tasks_and_messages_in_order(void **state) {
        Worker *w = NULL;
        assert_int_equal(worker_new(base, "test", &w), 0);
        for (int t = 0; t < 4; t++)
                assert_int_equal(worker_queue(w, run, drop, (void *) (intptr_t) (t * 5)), 0);
        struct timeval limit = { .tv_sec = 10 };
        event_base_loopexit(base, &limit);
        event_base_dispatch(base);
        assert_int_equal(n_delivered, 20);
        for (int i = 0; i < 20; i++)
                assert_int_equal(delivered[i], i);
        worker_free(w);
        assert_int_equal(dropped, 0);
}

static void test_free_drops_queued_tasks(void **state) {
        Worker *w = NULL;
        dropped = 0;
        assert_int_equal(worker_new(base, "test", &w), 0);
        assert_int_equal(worker_queue(w, block, drop, NULL), 0);
        for (int i = 0; i < 3; i++)
                assert_int_equal(worker_queue(w, run, drop, NULL), 0);
        usleep(50000); /* the first task is running */
        assert_true(worker_queue_length(w) >= 2);
        worker_free(w);
        assert_true(dropped >= 2);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_tasks_and_messages_in_order),
                cmocka_unit_test(test_free_drops_queued_tasks),
        };
        evthread_use_pthreads();
        base = event_base_new();
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        event_base_free(base);
        return r;
}
