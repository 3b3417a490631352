/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The daemon's one context: the event loop and everything attached to it.
 * main.c parses the command line, manager.c owns start-up, reload and
 * shutdown, bus/manager-dbus.c exposes it on D-Bus.
 */

#include <event2/event.h>
#include <stdbool.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-id128.h>

#include "bus-loop.h"
#include "config.h"
#include "engine.h"
#include "polkit.h"
#include "vkdev.h"

typedef enum BusKind {
        BUS_KIND_SYSTEM,
        BUS_KIND_SESSION,
} BusKind;

typedef struct ManagerOptions {
        BusKind bus_kind;
        const char *config_path;
        bool config_explicit;           /* given on the command line: missing is an error */
        const char *state_dir;
} ManagerOptions;

typedef struct Manager {
        struct event_base *event;
        sd_bus *bus;
        BusLoop *bus_loop;
        PolkitRegistry *polkit;
        BusKind bus_kind;

        char *config_path;
        bool config_explicit;
        char *state_dir;
        Config *config;
        sd_id128_t node_id;

        GpuInstance *gpu;
        GpuDevice **engines;            /* per instance device: opened if Devices= selects it, else NULL */
        struct Worker **workers;        /* per engine device: runs its models (serve/) */
        struct Served *served;          /* loaded and loading models */
        struct Job *jobs;               /* queued, running and recently ended jobs */
        uint32_t last_job_id;
        struct Cluster *cluster;        /* this node's place in the cluster (cluster/) */
        struct HttpServer *http;        /* the OpenAI-compatible HTTP API (http/) */
        struct ApiKeys *api_keys;       /* keys the HTTP API accepts (http/api-keys) */
        struct Metrics *metrics;        /* counters and histograms for /metrics (http/metrics) */

        uint64_t start_monotonic;
        uint64_t start_realtime;

        struct event *sig_term, *sig_int, *sig_hup, *watchdog;
        uint64_t watchdog_usec;
        int exit_status;
} Manager;

int manager_new(const ManagerOptions *o, Manager **ret);
Manager *manager_free(Manager *m);
static inline void manager_freep(Manager **m) {
        if (*m)
                manager_free(*m);
}

/* Connects to the bus, takes the name, tells systemd we are ready, runs the loop. */
int manager_run(Manager *m);

/* Re-reads the config; on error keeps the old one and returns -EINVAL with
 * "PATH:LINE: reason" in *ret_error. */
int manager_reload(Manager *m, char **ret_error);

int manager_set_log_level(Manager *m, int level);

/* Exported on the bus by bus/manager-dbus.c. */
int manager_bus_register(Manager *m);
