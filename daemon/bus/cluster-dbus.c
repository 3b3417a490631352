/* SPDX-License-Identifier: MIT */
/*
 * The cluster on D-Bus: ClusterInit, ClusterCreateToken, ClusterJoin,
 * ClusterLeave (polkit: org.inferd.infer1.manage-cluster), ClusterMembers and
 * the Cluster* properties of the Manager.
 */
#include <errno.h>
#include <string.h>

#include "cluster-dbus.h"
#include "cluster-internal.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "names.h"
#include "pki.h"
#include "polkit.h"

#define TOKEN_TTL_DEFAULT_USEC (3600ULL * 1000000ULL)
#define TOKEN_TTL_MAX_USEC (7ULL * 24 * 3600 * 1000000ULL)

static sd_bus_message *pending_join, *pending_leave;

static int cluster_error(sd_bus_error *error, int r, const char *msg) {
        const char *name = r == -EEXIST || r == -ENOTCONN || r == -EBUSY ? INFERD_ERROR_BUSY
                           : r == -EINVAL || r == -EBADMSG || r == -EPROTONOSUPPORT ? INFERD_ERROR_INVALID_ARGUMENT
                           : r == -EACCES ? INFERD_ERROR_ACCESS_DENIED
                           : r == -ENOKEY ? INFERD_ERROR_NOT_FOUND /* the CA key lives on another node */
                                          : INFERD_ERROR_INTERNAL;
        return sd_bus_error_setf(error, name, "%s", msg ? msg : strerror(-r));
}

static void emit_changed(Manager *m) {
        (void) sd_bus_emit_properties_changed(m->bus, INFERD_OBJECT_PATH, INFERD_MANAGER_IFACE, "ClusterName",
                                              "ClusterState", "ClusterAddress", "ClusterFingerprint", NULL);
        bus_loop_kick(m->bus_loop);
}

int method_cluster_init(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *why = NULL;
        Manager *m = userdata;
        const char *name;
        int r;

        r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        r = bus_verify_polkit_async(m->polkit, msg, INFERD_POLKIT_ACTION_MANAGE_CLUSTER, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = cluster_init(m->cluster, name, &why);
        if (r < 0)
                return cluster_error(error, r, why);
        emit_changed(m);
        return sd_bus_reply_method_return(msg, NULL);
}

int method_cluster_create_token(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *why = NULL, *token = NULL;
        Manager *m = userdata;
        uint64_t ttl, expires = 0;
        int r;

        r = sd_bus_message_read(msg, "t", &ttl);
        if (r < 0)
                return r;
        if (ttl == 0)
                ttl = TOKEN_TTL_DEFAULT_USEC;
        if (ttl > TOKEN_TTL_MAX_USEC)
                return sd_bus_error_setf(error, INFERD_ERROR_INVALID_ARGUMENT,
                                         "A join token may be valid for at most 7 days.");
        r = bus_verify_polkit_async(m->polkit, msg, INFERD_POLKIT_ACTION_MANAGE_CLUSTER, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = cluster_create_token(m->cluster, ttl, &token, &expires, &why);
        if (r < 0)
                return cluster_error(error, r, why);
        r = sd_bus_reply_method_return(msg, "st", token, expires);
        explicit_bzero(token, strlen(token));
        return r;
}

static void join_done(Manager *m, int r, const char *error, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = TAKE_PTR(pending_join);
        if (call) {
                if (r < 0)
                        (void) sd_bus_reply_method_errorf(call, r == -EACCES ? INFERD_ERROR_ACCESS_DENIED
                                                                            : INFERD_ERROR_INTERNAL,
                                                          "%s", error ? error : strerror(-r));
                else
                        (void) sd_bus_reply_method_return(call, NULL);
        }
        emit_changed(m);
}

int method_cluster_join(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *why = NULL;
        Manager *m = userdata;
        const char *address, *token;
        int r;

        r = sd_bus_message_read(msg, "ss", &address, &token);
        if (r < 0)
                return r;
        r = bus_verify_polkit_async(m->polkit, msg, INFERD_POLKIT_ACTION_MANAGE_CLUSTER, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (pending_join)
                return sd_bus_error_setf(error, INFERD_ERROR_BUSY, "A join is already in progress.");
        r = cluster_join(m->cluster, address, token, join_done, NULL, &why);
        if (r < 0)
                return cluster_error(error, r, why);
        pending_join = sd_bus_message_ref(msg);
        emit_changed(m);
        return 1;
}

void cluster_left(Manager *m) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = TAKE_PTR(pending_leave);
        if (call)
                (void) sd_bus_reply_method_return(call, NULL);
        emit_changed(m);
}

int method_cluster_leave(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *why = NULL;
        Manager *m = userdata;
        int r;

        r = bus_verify_polkit_async(m->polkit, msg, INFERD_POLKIT_ACTION_MANAGE_CLUSTER, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (pending_leave)
                return sd_bus_error_setf(error, INFERD_ERROR_BUSY, "Already leaving the cluster.");
        r = cluster_leave(m->cluster, &why);
        if (r < 0)
                return cluster_error(error, r, why);
        pending_leave = sd_bus_message_ref(msg);
        emit_changed(m);
        return 1;
}

/* "key" => array of type: opens the dict entry, the variant and the array. */
static int open_entry(sd_bus_message *reply, const char *key, const char *type) {
        int r = sd_bus_message_open_container(reply, 'e', "sv");
        if (r >= 0)
                r = sd_bus_message_append(reply, "s", key);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'v', type);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', type + 1);
        return r;
}

static int close_entry(sd_bus_message *reply) {
        int r = 0;
        for (int i = 0; i < 3 && r >= 0; i++)
                r = sd_bus_message_close_container(reply);
        return r;
}

static int append_member(sd_bus_message *reply, Cluster *c, Member *mb) {
        const SwimUpdate *u = cluster_member_swim(c, mb);
        const ProtoState *st = mb->meta.frame ? &mb->meta.st : NULL;
        uint64_t rtt = 0, heard = 0;
        char hex[33];
        int r;

        cluster_member_rtt(c, mb, &rtt, &heard);
        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}",
                                  "node_id", "s", pki_hex(mb->id.bytes, 16, hex),
                                  "name", "s", st ? st->name : "",
                                  "address", "s", u ? u->addr : mb->addr,
                                  "state", "s", u ? swim_state_to_string(u->state) : "dead",
                                  "self", "b", (int) mb->self,
                                  "incarnation", "u", u ? u->incarnation : 0,
                                  "rtt_usec", "t", rtt,
                                  "last_heard_usec", "t", mb->self ? (uint64_t) 0 : heard,
                                  "version", "s", st ? st->version : "",
                                  "queue", "u", st ? st->queue : 0,
                                  "tokens_per_sec", "d", st ? st->tps : 0.0,
                                  "capacity", "d", st ? st->capacity : 0.0);
        if (r < 0)
                return r;

        r = open_entry(reply, "devices", "a(sstt)");
        for (size_t i = 0; r >= 0 && st && i < st->n_devices; i++)
                r = sd_bus_message_append(reply, "(sstt)", st->devices[i].name, st->devices[i].type,
                                          st->devices[i].total_bytes, st->devices[i].free_bytes);
        if (r >= 0)
                r = close_entry(reply);
        if (r >= 0)
                r = open_entry(reply, "models", "a(sssts)");
        for (size_t i = 0; r >= 0 && st && i < st->n_models; i++)
                r = sd_bus_message_append(reply, "(sssts)", st->models[i].name, st->models[i].arch,
                                          st->models[i].quant, st->models[i].device_bytes,
                                          proto_model_state_to_string(st->models[i].state));
        if (r >= 0)
                r = close_entry(reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'e', "sv");
        if (r >= 0)
                r = sd_bus_message_append(reply, "s", "disk_models");
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'v', "as");
        if (r >= 0)
                r = sd_bus_message_append_strv(reply, st ? st->disk_models : NULL);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        return r;
}

int method_cluster_members(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        Member **members;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "a{sv}");
        if (r < 0)
                return r;
        size_t n = cluster_state(m->cluster) == CLUSTER_NONE ? 0 : cluster_members(m->cluster, &members);
        for (size_t i = 0; i < n; i++) {
                r = append_member(reply, m->cluster, members[i]);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

#define CLUSTER_PROP(fn, expr)                                                                                 \
        int fn(sd_bus *bus, const char *path, const char *iface, const char *prop, sd_bus_message *reply,      \
               void *userdata, sd_bus_error *error) {                                                          \
                Manager *m = userdata;                                                                         \
                return sd_bus_message_append(reply, "s", expr);                                                \
        }
CLUSTER_PROP(property_get_cluster_name, cluster_name(m->cluster))
CLUSTER_PROP(property_get_cluster_state, cluster_state_to_string(cluster_state(m->cluster)))
CLUSTER_PROP(property_get_cluster_address, cluster_address(m->cluster))
CLUSTER_PROP(property_get_cluster_fingerprint, cluster_fingerprint(m->cluster))
