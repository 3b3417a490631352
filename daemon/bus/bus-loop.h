/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Drives an sd_bus connection from a libevent loop: the bus fd's events and
 * its timeout become libevent events, re-armed after every dispatch.
 */

#include <event2/event.h>
#include <systemd/sd-bus.h>

typedef struct BusLoop BusLoop;

/* Called once when the connection to the bus is lost. */
typedef void (*bus_loop_disconnect_t)(void *userdata);

int bus_loop_attach(struct event_base *base, sd_bus *bus, bus_loop_disconnect_t on_disconnect,
                    void *userdata, BusLoop **ret);
BusLoop *bus_loop_free(BusLoop *l);
static inline void bus_loop_freep(BusLoop **l) {
        if (*l)
                bus_loop_free(*l);
}

/* Schedules a dispatch on the next loop iteration; call after sending from
 * outside a bus callback so queued messages get written out. */
void bus_loop_kick(BusLoop *l);
