/* SPDX-License-Identifier: MIT */
/*
 * Verbs that only read: status, devices, version. None of them needs
 * authorization, so they never prompt.
 */
#include "build-config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "bus.h"
#include "format.h"
#include "inferctl.h"
#include "macro.h"
#include "names.h"

/* One element of ListDevices' a(ussuusssstubb); strings point into the reply. */
typedef struct DeviceInfo {
        uint32_t index;
        const char *name;
        const char *vendor;
        uint32_t vendor_id;
        uint32_t device_id;
        const char *type;
        const char *driver;
        const char *driver_info;
        const char *api_version;
        uint64_t device_local_memory;
        uint32_t subgroup_size;
        int fp16;
        int int8;
        bool active;            /* the engine runs models on it (ActiveDevices) */
} DeviceInfo;

/* Marks the devices in the ActiveDevices property; an older daemon without it marks none. */
static void mark_active(sd_bus *bus, DeviceInfo *devices, size_t n) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const uint32_t *a;
        size_t size = 0;

        if (sd_bus_get_property(bus, INFERD_BUS_NAME, INFERD_OBJECT_PATH, INFERD_MANAGER_IFACE, "ActiveDevices",
                                &error, &reply, "au") < 0)
                return;
        if (sd_bus_message_read_array(reply, 'u', (const void **) &a, &size) < 0)
                return;
        for (size_t k = 0; k < size / sizeof(uint32_t); k++)
                for (size_t i = 0; i < n; i++)
                        if (devices[i].index == a[k])
                                devices[i].active = true;
}

static int list_devices(sd_bus *bus, const Context *ctx, sd_bus_message **ret_reply, DeviceInfo **ret_devices,
                        size_t *ret_n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ DeviceInfo *devices = NULL;
        size_t n = 0;
        int r;

        r = ctl_bus_call(bus, ctx, "ListDevices", &reply, NULL);
        if (r < 0)
                return r;

        r = sd_bus_message_enter_container(reply, 'a', "(ussuusssstubb)");
        if (r < 0)
                return ctl_bus_log_parse_error(r, "ListDevices");
        for (;;) {
                DeviceInfo d = {};

                r = sd_bus_message_read(reply, "(ussuusssstubb)", &d.index, &d.name, &d.vendor, &d.vendor_id,
                                        &d.device_id, &d.type, &d.driver, &d.driver_info, &d.api_version,
                                        &d.device_local_memory, &d.subgroup_size, &d.fp16, &d.int8);
                if (r < 0)
                        return ctl_bus_log_parse_error(r, "ListDevices");
                if (r == 0)
                        break;

                DeviceInfo *a = reallocarray(devices, n + 1, sizeof(DeviceInfo));
                if (!a)
                        return ctl_oom();
                devices = a;
                devices[n++] = d;
        }
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return ctl_bus_log_parse_error(r, "ListDevices");

        mark_active(bus, devices, n);
        *ret_reply = TAKE_PTR(reply);
        *ret_devices = TAKE_PTR(devices);
        *ret_n = n;
        return 0;
}

static const DeviceInfo *device_find(const DeviceInfo *devices, size_t n, uint32_t index) {
        for (size_t i = 0; i < n; i++)
                if (devices[i].index == index)
                        return devices + i;
        return NULL;
}

/* The Manager properties status shows; strings point into the GetAll reply. */
typedef struct ManagerInfo {
        const char *version;
        const char *node_id;
        const char *node_name;
        uint64_t start_timestamp;       /* CLOCK_REALTIME, usec */
} ManagerInfo;

static const CtlProperty manager_info_map[] = {
        { "Version", "s", offsetof(ManagerInfo, version) },
        { "NodeId", "s", offsetof(ManagerInfo, node_id) },
        { "NodeName", "s", offsetof(ManagerInfo, node_name) },
        { "StartTimestamp", "t", offsetof(ManagerInfo, start_timestamp) },
        {}
};

/* One element of GetStatus' a(utt). */
typedef struct DeviceUsage {
        uint32_t index;
        uint64_t used;
        uint64_t free;
} DeviceUsage;

typedef struct StatusInfo {
        uint64_t host_memory_total;
        uint64_t host_memory_available;
        uint64_t daemon_rss;
        uint64_t uptime_usec;
        DeviceUsage *devices;
        size_t n_devices;
} StatusInfo;

static void status_info_done(StatusInfo *s) {
        free(s->devices);
}

static int get_status(sd_bus *bus, const Context *ctx, StatusInfo *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ DeviceUsage *devices = NULL;
        StatusInfo s = {};
        size_t n = 0;
        int r;

        r = ctl_bus_call(bus, ctx, "GetStatus", &reply, NULL);
        if (r < 0)
                return r;

        r = sd_bus_message_read(reply, "tttt", &s.host_memory_total, &s.host_memory_available, &s.daemon_rss,
                                &s.uptime_usec);
        if (r < 0)
                return ctl_bus_log_parse_error(r, "GetStatus");
        r = sd_bus_message_enter_container(reply, 'a', "(utt)");
        if (r < 0)
                return ctl_bus_log_parse_error(r, "GetStatus");
        for (;;) {
                DeviceUsage u;

                r = sd_bus_message_read(reply, "(utt)", &u.index, &u.used, &u.free);
                if (r < 0)
                        return ctl_bus_log_parse_error(r, "GetStatus");
                if (r == 0)
                        break;

                DeviceUsage *a = reallocarray(devices, n + 1, sizeof(DeviceUsage));
                if (!a)
                        return ctl_oom();
                devices = a;
                devices[n++] = u;
        }
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return ctl_bus_log_parse_error(r, "GetStatus");

        s.devices = TAKE_PTR(devices);
        s.n_devices = n;
        *ret = s;
        return 0;
}

static int print_status_json(const Context *ctx, const ManagerInfo *info, const StatusInfo *s,
                             const DeviceInfo *devices, size_t n_devices) {
        _cleanup_json_ json_t *array = json_array(), *v = NULL;

        if (!array)
                return ctl_oom();
        for (size_t i = 0; i < s->n_devices; i++) {
                const DeviceInfo *d = device_find(devices, n_devices, s->devices[i].index);
                json_t *o = json_pack("{s:I, s:s?, s:I, s:I}",
                                      "index", (json_int_t) s->devices[i].index,
                                      "name", d ? d->name : NULL,
                                      "memory_used", (json_int_t) s->devices[i].used,
                                      "memory_free", (json_int_t) s->devices[i].free);
                if (!o || json_array_append_new(array, o) < 0)
                        return ctl_oom();
        }

        v = json_pack("{s:s?, s:s?, s:s?, s:I, s:I, s:I, s:I, s:O}",
                      "version", info->version,
                      "node_id", info->node_id,
                      "node_name", info->node_name,
                      "uptime_usec", (json_int_t) s->uptime_usec,
                      "host_memory_total", (json_int_t) s->host_memory_total,
                      "host_memory_available", (json_int_t) s->host_memory_available,
                      "daemon_rss", (json_int_t) s->daemon_rss,
                      "devices", array);
        if (!v)
                return ctl_oom();
        return json_print(v, ctx->json);
}

static void print_status_text(const ManagerInfo *info, const StatusInfo *s, const DeviceInfo *devices,
                              size_t n_devices) {
        char a[FORMAT_BYTES_MAX], b[FORMAT_BYTES_MAX], span[FORMAT_TIMESPAN_MAX], stamp[FORMAT_TIMESTAMP_MAX];
        int w = (int) strlen("Daemon memory");

        /* Keys are right-aligned, like hostnamectl's; "Device 10" may be the widest. */
        for (size_t i = 0; i < s->n_devices; i++)
                w = MAX(w, snprintf(NULL, 0, "Device %" PRIu32, s->devices[i].index));

        printf("%*s: %s\n", w, "Node name", strna(info->node_name));
        printf("%*s: %s\n", w, "Node ID", strna(info->node_id));
        printf("%*s: %s\n", w, "Version", strna(info->version));
        printf("%*s: %s", w, "Uptime", format_timespan(span, sizeof span, s->uptime_usec));
        if (format_timestamp(stamp, sizeof stamp, info->start_timestamp))
                printf(" (since %s)", stamp);
        putchar('\n');
        printf("%*s: %s total, %s available\n", w, "Host memory",
               format_bytes(a, sizeof a, s->host_memory_total),
               format_bytes(b, sizeof b, s->host_memory_available));
        printf("%*s: %s (RSS)\n", w, "Daemon memory", format_bytes(a, sizeof a, s->daemon_rss));

        if (s->n_devices == 0)
                printf("%*s: none\n", w, "Devices");
        for (size_t i = 0; i < s->n_devices; i++) {
                const DeviceInfo *d = device_find(devices, n_devices, s->devices[i].index);
                char key[32];

                snprintf(key, sizeof key, "Device %" PRIu32, s->devices[i].index);
                printf("%*s: used %s, free %s", w, key, format_bytes(a, sizeof a, s->devices[i].used),
                       format_bytes(b, sizeof b, s->devices[i].free));
                if (d)
                        printf(" (%s)", d->name);
                putchar('\n');
        }
}

int verb_status(Context *ctx, int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *props = NULL, *devices_reply = NULL;
        _cleanup_(status_info_done) StatusInfo s = {};
        _cleanup_free_ DeviceInfo *devices = NULL;
        ManagerInfo info = {};
        size_t n_devices = 0;
        int r;

        r = ctl_bus_open(ctx, false, &bus);
        if (r < 0)
                return r;
        r = ctl_bus_get_properties(bus, ctx, manager_info_map, &info, &props);
        if (r < 0)
                return r;
        r = get_status(bus, ctx, &s);
        if (r < 0)
                return r;
        /* Only for the names: GetStatus reports devices by index. */
        r = list_devices(bus, ctx, &devices_reply, &devices, &n_devices);
        if (r < 0)
                return r;

        if (ctx->json != JSON_OFF)
                return print_status_json(ctx, &info, &s, devices, n_devices);
        print_status_text(&info, &s, devices, n_devices);
        return 0;
}

static int print_devices_json(const Context *ctx, const DeviceInfo *devices, size_t n) {
        _cleanup_json_ json_t *array = json_array();

        if (!array)
                return ctl_oom();
        for (size_t i = 0; i < n; i++) {
                const DeviceInfo *d = devices + i;
                json_t *o = json_pack("{s:I, s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:b, s:b, s:b}",
                                      "index", (json_int_t) d->index,
                                      "name", d->name,
                                      "vendor", d->vendor,
                                      "vendor_id", (json_int_t) d->vendor_id,
                                      "device_id", (json_int_t) d->device_id,
                                      "type", d->type,
                                      "driver", d->driver,
                                      "driver_info", d->driver_info,
                                      "api_version", d->api_version,
                                      "device_local_memory", (json_int_t) d->device_local_memory,
                                      "subgroup_size", (json_int_t) d->subgroup_size,
                                      "fp16", d->fp16,
                                      "int8", d->int8,
                                      "active", d->active);
                if (!o || json_array_append_new(array, o) < 0)
                        return ctl_oom();
        }
        return json_print(array, ctx->json);
}

static int print_devices_text(const DeviceInfo *devices, size_t n) {
        static const char *const headers[] = {
                "INDEX", "NAME", "VENDOR", "TYPE", "DRIVER", "API", "MEMORY", "SUBGROUP", "FP16", "INT8", "ACTIVE",
        };
        _cleanup_(table_freep) Table *t = NULL;
        int r;

        if (n == 0) {
                printf("No devices.\n");
                return 0;
        }

        t = table_new(ELEMENTSOF(headers), headers);
        if (!t)
                return ctl_oom();
        (void) table_set_align_right(t, 0, true);
        (void) table_set_align_right(t, 6, true);
        (void) table_set_align_right(t, 7, true);

        for (size_t i = 0; i < n; i++) {
                const DeviceInfo *d = devices + i;
                char index[16], memory[FORMAT_BYTES_MAX], subgroup[16];

                snprintf(index, sizeof index, "%" PRIu32, d->index);
                snprintf(subgroup, sizeof subgroup, "%" PRIu32, d->subgroup_size);
                r = table_add_row(t, (const char *const[]) {
                        index, d->name, d->vendor, d->type, d->driver, d->api_version,
                        format_bytes(memory, sizeof memory, d->device_local_memory), subgroup,
                        d->fp16 ? "yes" : "no", d->int8 ? "yes" : "no", d->active ? "yes" : "no",
                });
                if (r < 0)
                        return ctl_oom();
        }

        r = table_print(t, stdout);
        if (r < 0)
                return ctl_error_errno(r, "Failed to print the table: %m");
        return 0;
}

int verb_devices(Context *ctx, int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ DeviceInfo *devices = NULL;
        size_t n = 0;
        int r;

        r = ctl_bus_open(ctx, false, &bus);
        if (r < 0)
                return r;
        r = list_devices(bus, ctx, &reply, &devices, &n);
        if (r < 0)
                return r;

        if (ctx->json != JSON_OFF)
                return print_devices_json(ctx, devices, n);
        return print_devices_text(devices, n);
}

int verb_version(Context *ctx, int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_free_ char *daemon_version = NULL;
        int r;

        /* The client's version first: it is what one wants to know when the daemon is away. */
        if (ctx->json == JSON_OFF) {
                printf("inferctl %s\n", PACKAGE_VERSION);
                fflush(stdout);
        }

        r = ctl_bus_open(ctx, false, &bus);
        if (r >= 0)
                r = ctl_bus_get_property_string(bus, ctx, "Version", &daemon_version);

        if (ctx->json != JSON_OFF) {
                _cleanup_json_ json_t *v = json_pack("{s:s, s:s?}", "inferctl", PACKAGE_VERSION,
                                                     "inferd", daemon_version);
                if (!v)
                        return ctl_oom();
                int q = json_print(v, ctx->json);
                if (r >= 0)
                        r = q;
        } else if (r >= 0)
                printf("inferd %s\n", daemon_version);

        return r;
}
