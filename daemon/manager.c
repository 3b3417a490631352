/* SPDX-License-Identifier: MIT */
#include "build-config.h"
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include "api-keys.h"
#include "cluster.h"
#include "fileio.h"
#include "http.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "metrics.h"
#include "names.h"
#include "nodeid.h"
#include "select.h"
#include "serve.h"
#include "sysinfo.h"

static void notify_status(const char *fmt, ...) _printf_(1, 2);
static void notify_status(const char *fmt, ...) {
        _cleanup_free_ char *s = NULL;
        va_list ap;
        va_start(ap, fmt);
        int k = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (k >= 0)
                (void) sd_notifyf(false, "STATUS=%s", s);
}

int manager_set_log_level(Manager *m, int level) {
        log_set_max_level(level);
        log_info("Log level set to %s.", log_level_to_string(level));
        return 0;
}

int manager_reload(Manager *m, char **ret_error) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *why = NULL;
        int r;

        (void) sd_notify(false, "RELOADING=1\nSTATUS=Reloading configuration...");
        r = config_load(m->config_path, !m->config_explicit, &c, &why);
        if (r < 0) {
                log_error("Configuration not reloaded, keeping the old one: %s", why ? why : strerror(-r));
                (void) sd_notify(false, "READY=1");
                notify_status("Running; last reload failed: %s", why ? why : strerror(-r));
                if (ret_error)
                        *ret_error = TAKE_PTR(why);
                return -EINVAL;
        }

        if (!streq_ptr(c->devices, m->config->devices))
                log_notice("Devices= changed from '%s' to '%s'; that takes effect when inferd restarts.",
                           m->config->devices, c->devices);
        if (!streq_ptr(c->http_listen, m->config->http_listen))
                log_notice("[HTTP] Listen= changed from '%s' to '%s'; that takes effect when inferd restarts.",
                           m->config->http_listen ?: "", c->http_listen ?: "");
        config_free(m->config);
        m->config = TAKE_PTR(c);
        log_set_max_level(m->config->log_level);
        log_fields(LOG_INFO, 0, LOG_FIELDS(INFERD_MESSAGE_RELOADED), "Reloaded configuration from %s.",
                   m->config_path);
        (void) sd_notify(false, "READY=1");
        notify_status("Running as node %s.", m->config->node_name);
        return 0;
}

static void on_signal(evutil_socket_t sig, short what, void *userdata) {
        Manager *m = userdata;

        if (sig == SIGHUP) {
                (void) manager_reload(m, NULL);
                (void) sd_bus_emit_properties_changed(m->bus, INFERD_OBJECT_PATH, INFERD_MANAGER_IFACE,
                                                      "NodeName", "LogLevel", NULL);
                bus_loop_kick(m->bus_loop);
                return;
        }
        log_fields(LOG_INFO, 0, LOG_FIELDS(INFERD_MESSAGE_STOPPING), "Received SIG%s, stopping.",
                   sig == SIGTERM ? "TERM" : "INT");
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Shutting down...");
        event_base_loopbreak(m->event);
}

static void on_watchdog(evutil_socket_t fd, short what, void *userdata) {
        (void) sd_notify(false, "WATCHDOG=1");
}

static void on_bus_disconnect(void *userdata) {
        Manager *m = userdata;
        m->exit_status = -ECONNRESET;
        event_base_loopbreak(m->event);
}

/* Opens the devices Devices= selects; a device that fails to open is logged and skipped. */
static int manager_open_engines(Manager *m) {
        size_t n = gpu_instance_n_devices(m->gpu);
        long missing = -1;
        int r;

        if (n == 0)
                return 0;
        _cleanup_free_ bool *selected = calloc(n, sizeof(bool));
        m->engines = calloc(n, sizeof(GpuDevice *));
        if (!selected || !m->engines)
                return log_oom();
        r = gpu_select_devices(m->gpu, m->config->devices, selected, &missing);
        if (r < 0)
                return log_error_errno(r, "Invalid Devices=%s.", m->config->devices);
        if (missing >= 0)
                log_warning("Devices= names device %ld, which this host does not have; ignoring it.", missing);
        for (size_t i = 0; i < n; i++) {
                if (!selected[i])
                        continue;
                const GpuDeviceInfo *d = gpu_instance_device(m->gpu, i);
                r = gpu_device_new(m->gpu, i, m->state_dir, &m->engines[i]);
                if (r < 0)
                        log_warning_errno(r, "Failed to open device %zu (%s), not using it: %m", i, d->name);
                else
                        log_info("Using device %zu (%s) for inference.", i, d->name);
        }
        return 0;
}

int manager_new(const ManagerOptions *o, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        _cleanup_free_ char *why = NULL;
        int r;

        m = calloc(1, sizeof *m);
        if (!m)
                return log_oom();
        m->start_monotonic = now_usec(CLOCK_MONOTONIC);
        m->start_realtime = now_usec(CLOCK_REALTIME);
        m->bus_kind = o->bus_kind;
        m->config_explicit = o->config_explicit;
        m->config_path = strdup(o->config_path);
        m->state_dir = strdup(o->state_dir);
        if (!m->config_path || !m->state_dir)
                return log_oom();

        r = config_load(m->config_path, !m->config_explicit, &m->config, &why);
        if (r < 0)
                return log_error_errno(r, "Refusing to start, bad configuration: %s", why ? why : strerror(-r));
        log_set_max_level(m->config->log_level);

        r = mkdir_p(m->state_dir, 0755);
        if (r < 0)
                return log_error_errno(r, "Failed to create state directory %s: %m", m->state_dir);
        r = node_id_load_or_create(m->state_dir, &m->node_id);
        if (r < 0)
                return r;

        r = gpu_instance_new(&m->gpu);
        if (r == -ENODEV)
                log_warning("No Vulkan driver found: no devices to run models on. Install "
                            "mesa-vulkan-drivers (CPU) or your GPU's Vulkan driver.");
        else if (r < 0)
                log_warning_errno(r, "Failed to initialise Vulkan, continuing without devices: %m");
        for (size_t i = 0; i < gpu_instance_n_devices(m->gpu); i++) {
                const GpuDeviceInfo *d = gpu_instance_device(m->gpu, i);
                char dev[24];
                snprintf(dev, sizeof dev, "%zu", i);
                log_fields(LOG_INFO, 0, LOG_FIELDS(INFERD_MESSAGE_DEVICE_FOUND, "DEVICE", dev, "DEVICE_NAME", d->name),
                           "Device %zu: %s (%s, %s, Vulkan %s)", i, d->name, d->type, d->driver, d->api_version);
        }

        r = manager_open_engines(m);
        if (r < 0)
                return r;

        /* Workers activate events from their threads: the base needs locks from the start. */
        if (evthread_use_pthreads() < 0)
                return log_error_errno(EIO, "Failed to set up libevent for threads.");
        m->event = event_base_new();
        if (!m->event)
                return log_oom();

        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        if (m->sig_term)
                event_free(m->sig_term);
        if (m->sig_int)
                event_free(m->sig_int);
        if (m->sig_hup)
                event_free(m->sig_hup);
        if (m->watchdog)
                event_free(m->watchdog);
        /* HTTP clients' jobs are cancelled while the cluster can still tell the members running them. */
        m->http = http_server_free(m->http);
        /* Then the cluster: it ends the jobs it routed while the bus can still tell their callers. Jobs that
         * end while the workers stop (below) look at m->cluster: it must not dangle. */
        m->cluster = cluster_free(m->cluster);
        serve_done(m);
        bus_loop_free(m->bus_loop);
        polkit_registry_free(m->polkit);
        if (m->bus)
                sd_bus_flush_close_unref(m->bus);
        if (m->event)
                event_base_free(m->event);
        for (size_t i = 0; m->engines && i < gpu_instance_n_devices(m->gpu); i++)
                gpu_device_free(m->engines[i]);
        free(m->engines);
        gpu_instance_free(m->gpu);
        config_free(m->config);
        free(m->config_path);
        free(m->state_dir);
        /* Last: whatever is freed above (the HTTP server) may still count or check something on its way out. */
        api_keys_free(m->api_keys);
        metrics_free(m->metrics);
        free(m);
        return NULL;
}

static int manager_connect_bus(Manager *m) {
        int r;

        r = m->bus_kind == BUS_KIND_SYSTEM ? sd_bus_open_system(&m->bus) : sd_bus_open_user(&m->bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the %s bus: %m",
                                       m->bus_kind == BUS_KIND_SYSTEM ? "system" : "session");

        r = polkit_registry_new(m->bus_kind == BUS_KIND_SYSTEM, &m->polkit);
        if (r < 0)
                return log_oom();

        r = manager_bus_register(m);
        if (r < 0)
                return log_error_errno(r, "Failed to register D-Bus objects: %m");

        r = sd_bus_request_name(m->bus, INFERD_BUS_NAME, 0);
        if (r == -EEXIST)
                return log_error_errno(r, "Another inferd already owns %s on this bus.", INFERD_BUS_NAME);
        if (r < 0)
                return log_error_errno(r, "Failed to acquire bus name %s: %m", INFERD_BUS_NAME);

        r = bus_loop_attach(m->event, m->bus, on_bus_disconnect, m, &m->bus_loop);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");
        return 0;
}

static int manager_setup_signals(Manager *m) {
        /* libevent turns signals into loop events; nothing runs in signal context. */
        m->sig_term = evsignal_new(m->event, SIGTERM, on_signal, m);
        m->sig_int = evsignal_new(m->event, SIGINT, on_signal, m);
        m->sig_hup = evsignal_new(m->event, SIGHUP, on_signal, m);
        if (!m->sig_term || !m->sig_int || !m->sig_hup)
                return log_oom();
        if (evsignal_add(m->sig_term, NULL) < 0 || evsignal_add(m->sig_int, NULL) < 0 ||
            evsignal_add(m->sig_hup, NULL) < 0)
                return log_error_errno(EIO, "Failed to install signal handlers.");

        if (sd_watchdog_enabled(false, &m->watchdog_usec) > 0 && m->watchdog_usec > 0) {
                /* Ping at half the period, as sd_watchdog_enabled(3) recommends. */
                uint64_t half = m->watchdog_usec / 2;
                struct timeval tv = { .tv_sec = (time_t) (half / 1000000ULL),
                                      .tv_usec = (suseconds_t) (half % 1000000ULL) };
                m->watchdog = event_new(m->event, -1, EV_PERSIST, on_watchdog, m);
                if (!m->watchdog || event_add(m->watchdog, &tv) < 0)
                        return log_oom();
                log_debug("Watchdog enabled, pinging every %llu ms.", (unsigned long long) half / 1000);
        }
        return 0;
}

int manager_run(Manager *m) {
        int r;

        r = manager_setup_signals(m);
        if (r < 0)
                return r;
        r = serve_init(m);
        if (r < 0)
                return log_error_errno(r, "Failed to start the device workers: %m");
        r = cluster_new(m, &m->cluster);
        if (r < 0)
                return log_oom();
        /* Before the bus: the API key methods need them. The key file is read when first needed. */
        r = api_keys_new(m->state_dir, &m->api_keys);
        if (r < 0)
                return log_oom();
        r = metrics_new(&m->metrics);
        if (r < 0)
                return log_oom();
        r = manager_connect_bus(m);
        if (r < 0)
                return r;
        /* A node that was in a cluster rejoins it; failing that, it still serves locally. */
        r = cluster_start(m->cluster);
        if (r < 0)
                log_warning("Not taking part in the cluster: see the errors above.");
        /* Like the cluster, the HTTP API is one way in among others: the daemon runs without it. */
        r = http_server_new(m, &m->http);
        if (r < 0)
                log_warning("Not serving the HTTP API: see the errors above.");

        (void) sd_notify(false, "READY=1");
        notify_status("Running as node %s with %zu device(s).", m->config->node_name,
                      gpu_instance_n_devices(m->gpu));
        log_fields(LOG_INFO, 0, LOG_FIELDS(INFERD_MESSAGE_STARTED, "NODE_ID", SD_ID128_TO_STRING(m->node_id)),
                   "inferd %s started as node %s (%s) on the %s bus.", PACKAGE_VERSION, m->config->node_name,
                   SD_ID128_TO_STRING(m->node_id), m->bus_kind == BUS_KIND_SYSTEM ? "system" : "session");

        if (event_base_dispatch(m->event) < 0)
                return log_error_errno(EIO, "The event loop failed.");
        return m->exit_status;
}
