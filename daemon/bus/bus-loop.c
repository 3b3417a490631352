/* SPDX-License-Identifier: MIT */
#include <poll.h>
#include <time.h>

#include "bus-loop.h"
#include "log.h"
#include "macro.h"
#include "time-util.h"

struct BusLoop {
        struct event_base *base;
        sd_bus *bus;
        struct event *io;
        struct event *timer;
        struct event *defer;
        bus_loop_disconnect_t on_disconnect;
        void *userdata;
        bool disconnected;
};

static void dispatch(BusLoop *l);

static void io_cb(evutil_socket_t fd, short what, void *userdata) {
        dispatch(userdata);
}

static void rearm(BusLoop *l) {
        int fd, events;
        uint64_t until;
        short what = 0;

        fd = sd_bus_get_fd(l->bus);
        events = sd_bus_get_events(l->bus);
        if (fd < 0 || events < 0) {
                (void) event_del(l->io);
                (void) event_del(l->timer);
                return;
        }
        if (events & POLLIN)
                what |= EV_READ;
        if (events & POLLOUT)
                what |= EV_WRITE;

        (void) event_del(l->io);
        if (event_assign(l->io, l->base, fd, what, io_cb, l) == 0)
                (void) event_add(l->io, NULL);

        (void) event_del(l->timer);
        if (sd_bus_get_timeout(l->bus, &until) >= 0 && until != UINT64_MAX) {
                uint64_t now = now_usec(CLOCK_MONOTONIC), d = until > now ? until - now : 0;
                struct timeval tv = { .tv_sec = (time_t) (d / 1000000ULL), .tv_usec = (suseconds_t) (d % 1000000ULL) };
                (void) event_add(l->timer, &tv);
        }
}

static void dispatch(BusLoop *l) {
        int r;

        if (l->disconnected)
                return;
        for (;;) {
                r = sd_bus_process(l->bus, NULL);
                if (r < 0) {
                        if (r == -ECONNRESET || r == -ENOTCONN || r == -EPIPE) {
                                log_error("Lost the connection to the message bus.");
                                l->disconnected = true;
                                (void) event_del(l->io);
                                (void) event_del(l->timer);
                                if (l->on_disconnect)
                                        l->on_disconnect(l->userdata);
                                return;
                        }
                        log_warning_errno(r, "Failed to process bus messages: %m");
                        break;
                }
                if (r == 0)
                        break;
        }
        rearm(l);
}

static void defer_cb(evutil_socket_t fd, short what, void *userdata) {
        dispatch(userdata);
}

int bus_loop_attach(struct event_base *base, sd_bus *bus, bus_loop_disconnect_t on_disconnect,
                    void *userdata, BusLoop **ret) {
        _cleanup_(bus_loop_freep) BusLoop *l = calloc(1, sizeof *l);

        if (!l)
                return -ENOMEM;
        l->base = base;
        l->bus = sd_bus_ref(bus);
        l->on_disconnect = on_disconnect;
        l->userdata = userdata;
        l->io = event_new(base, -1, 0, io_cb, l);
        l->timer = evtimer_new(base, io_cb, l);
        l->defer = event_new(base, -1, 0, defer_cb, l);
        if (!l->io || !l->timer || !l->defer)
                return -ENOMEM;

        rearm(l);
        bus_loop_kick(l); /* messages may already be queued */
        *ret = TAKE_PTR(l);
        return 0;
}

void bus_loop_kick(BusLoop *l) {
        if (l && !l->disconnected)
                event_active(l->defer, 0, 0);
}

BusLoop *bus_loop_free(BusLoop *l) {
        if (!l)
                return NULL;
        if (l->io)
                event_free(l->io);
        if (l->timer)
                event_free(l->timer);
        if (l->defer)
                event_free(l->defer);
        sd_bus_unref(l->bus);
        free(l);
        return NULL;
}
