/* SPDX-License-Identifier: MIT */
#include "build-config.h"
#include <syslog.h>

#include "api-keys-dbus.h"
#include "config.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "names.h"
#include "polkit.h"
#include "cluster-dbus.h"
#include "serve-dbus.h"
#include "sysinfo.h"

static int property_get_version(sd_bus *bus, const char *path, const char *iface, const char *prop,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", PACKAGE_VERSION);
}

static int property_get_node_id(sd_bus *bus, const char *path, const char *iface, const char *prop,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        return sd_bus_message_append(reply, "s", SD_ID128_TO_STRING(m->node_id));
}

static int property_get_node_name(sd_bus *bus, const char *path, const char *iface, const char *prop,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        return sd_bus_message_append(reply, "s", m->config->node_name);
}

static int property_get_log_level(sd_bus *bus, const char *path, const char *iface, const char *prop,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", log_level_to_string(log_get_max_level()));
}

static int property_get_active_devices(sd_bus *bus, const char *path, const char *iface, const char *prop,
                                       sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "u");
        if (r < 0)
                return r;
        for (size_t i = 0; m->engines && i < gpu_instance_n_devices(m->gpu); i++)
                if (m->engines[i]) {
                        r = sd_bus_message_append(reply, "u", (uint32_t) i);
                        if (r < 0)
                                return r;
                }
        return sd_bus_message_close_container(reply);
}

static int method_list_devices(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ussuusssstubb)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < gpu_instance_n_devices(m->gpu); i++) {
                const GpuDeviceInfo *d = gpu_instance_device(m->gpu, i);
                r = sd_bus_message_append(reply, "(ussuusssstubb)", d->index, d->name, d->vendor,
                                          d->vendor_id, d->device_id, d->type, d->driver, d->driver_info,
                                          d->api_version, d->device_local_memory, d->subgroup_size,
                                          (int) d->fp16, (int) d->int8);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_status(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        uint64_t total = 0, avail = 0, rss = 0;
        int r;

        r = sysinfo_host_memory(&total, &avail);
        if (r < 0)
                return sd_bus_error_setf(error, INFERD_ERROR_INTERNAL, "Failed to read host memory: %s", strerror(-r));
        r = sysinfo_self_rss(&rss);
        if (r < 0)
                return sd_bus_error_setf(error, INFERD_ERROR_INTERNAL, "Failed to read the daemon's memory: %s", strerror(-r));

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "tttt", total, avail, rss,
                                  now_usec(CLOCK_MONOTONIC) - m->start_monotonic);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(utt)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < gpu_instance_n_devices(m->gpu); i++) {
                uint64_t used = 0, free_ = 0;
                if (gpu_device_memory_usage(m->gpu, i, &used, &free_) < 0)
                        continue;
                r = sd_bus_message_append(reply, "(utt)", (uint32_t) i, used, free_);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_reload(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *why = NULL;
        Manager *m = userdata;
        int r;

        r = bus_verify_polkit_async(m->polkit, msg, INFERD_POLKIT_ACTION_RELOAD, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1; /* polkit will call us again */

        r = manager_reload(m, &why);
        if (r == -EINVAL)
                return sd_bus_error_setf(error, INFERD_ERROR_CONFIG_INVALID,
                                         "Configuration not reloaded: %s", strna(why));
        if (r < 0)
                return sd_bus_error_setf(error, INFERD_ERROR_INTERNAL, "Failed to reload: %s", strerror(-r));

        (void) sd_bus_emit_properties_changed(sd_bus_message_get_bus(msg), INFERD_OBJECT_PATH,
                                              INFERD_MANAGER_IFACE, "NodeName", "LogLevel", NULL);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_set_log_level(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *s;
        int r, level;

        r = sd_bus_message_read(msg, "s", &s);
        if (r < 0)
                return r;
        level = log_level_from_string(s);
        if (level < 0)
                return sd_bus_error_setf(error, INFERD_ERROR_INVALID_ARGUMENT,
                                         "Invalid log level '%s': expected one of emerg, alert, crit, "
                                         "err, warning, notice, info, debug.", s);

        r = bus_verify_polkit_async(m->polkit, msg, INFERD_POLKIT_ACTION_SET_LOG_LEVEL, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        (void) manager_set_log_level(m, level);
        (void) sd_bus_emit_properties_changed(sd_bus_message_get_bus(msg), INFERD_OBJECT_PATH,
                                              INFERD_MANAGER_IFACE, "LogLevel", NULL);
        return sd_bus_reply_method_return(msg, NULL);
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("NodeId", "s", property_get_node_id, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("NodeName", "s", property_get_node_name, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LogLevel", "s", property_get_log_level, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StartTimestamp", "t", NULL, offsetof(Manager, start_realtime),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ActiveDevices", "au", property_get_active_devices, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ClusterName", "s", property_get_cluster_name, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ClusterState", "s", property_get_cluster_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ClusterAddress", "s", property_get_cluster_address, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ClusterFingerprint", "s", property_get_cluster_fingerprint, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_NAMES("ListDevices", NULL, , "a(ussuusssstubb)", SD_BUS_PARAM(devices),
                                 method_list_devices, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("GetStatus", NULL, , "tttta(utt)",
                                 SD_BUS_PARAM(host_memory_total) SD_BUS_PARAM(host_memory_available)
                                 SD_BUS_PARAM(daemon_rss) SD_BUS_PARAM(uptime_usec) SD_BUS_PARAM(devices),
                                 method_get_status, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("LoadModel", "ssa{sv}", SD_BUS_PARAM(path) SD_BUS_PARAM(name) SD_BUS_PARAM(options),
                                 "o", SD_BUS_PARAM(model), method_load_model, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("UnloadModel", "s", SD_BUS_PARAM(name), NULL, , method_unload_model,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("ListModels", NULL, , "a(ssststutus)", SD_BUS_PARAM(models), method_list_models,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("Generate", "ssa{sv}", SD_BUS_PARAM(model) SD_BUS_PARAM(prompt) SD_BUS_PARAM(options),
                                 "o", SD_BUS_PARAM(job), method_generate, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("Chat", "sa(ss)a{sv}",
                                 SD_BUS_PARAM(model) SD_BUS_PARAM(messages) SD_BUS_PARAM(options), "o",
                                 SD_BUS_PARAM(job), method_chat, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("Tokenize", "ssa{sv}", SD_BUS_PARAM(model) SD_BUS_PARAM(text) SD_BUS_PARAM(options),
                                 "aias", SD_BUS_PARAM(tokens) SD_BUS_PARAM(pieces), method_tokenize,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("BenchModel", "sa{sv}", SD_BUS_PARAM(model) SD_BUS_PARAM(options), "a{sv}",
                                 SD_BUS_PARAM(results), method_bench_model, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("ClusterInit", "s", SD_BUS_PARAM(name), NULL, , method_cluster_init,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("ClusterCreateToken", "t", SD_BUS_PARAM(ttl_usec), "st",
                                 SD_BUS_PARAM(token) SD_BUS_PARAM(expires_realtime_usec), method_cluster_create_token,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("ClusterJoin", "ss", SD_BUS_PARAM(address) SD_BUS_PARAM(token), NULL, ,
                                 method_cluster_join, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("ClusterLeave", NULL, NULL, method_cluster_leave, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("ClusterMembers", NULL, , "aa{sv}", SD_BUS_PARAM(members), method_cluster_members,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("CreateApiKey", "s", SD_BUS_PARAM(name), "ss", SD_BUS_PARAM(id) SD_BUS_PARAM(key),
                                 method_create_api_key, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("ListApiKeys", NULL, , "a(sst)", SD_BUS_PARAM(keys), method_list_api_keys,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("RevokeApiKey", "s", SD_BUS_PARAM(id), NULL, , method_revoke_api_key,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Reload", NULL, NULL, method_reload, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("SetLogLevel", "s", SD_BUS_PARAM(level), NULL, , method_set_log_level,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static const sd_bus_error_map inferd_errors[] = {
        SD_BUS_ERROR_MAP(INFERD_ERROR_INVALID_ARGUMENT, EINVAL),
        SD_BUS_ERROR_MAP(INFERD_ERROR_ACCESS_DENIED, EACCES),
        SD_BUS_ERROR_MAP(INFERD_ERROR_INTERACTIVE_AUTH, EACCES),
        SD_BUS_ERROR_MAP(INFERD_ERROR_CONFIG_INVALID, EBADMSG),
        SD_BUS_ERROR_MAP(INFERD_ERROR_DEVICE, EIO),
        SD_BUS_ERROR_MAP(INFERD_ERROR_NOT_FOUND, ENOENT),
        SD_BUS_ERROR_MAP(INFERD_ERROR_BUSY, EBUSY),
        SD_BUS_ERROR_MAP_END,
};

int manager_bus_register(Manager *m) {
        int r;

        r = sd_bus_error_add_map(inferd_errors);
        if (r < 0)
                return r;
        r = sd_bus_add_object_vtable(m->bus, NULL, INFERD_OBJECT_PATH, INFERD_MANAGER_IFACE, manager_vtable, m);
        if (r < 0)
                return r;
        return serve_bus_register(m);
}
