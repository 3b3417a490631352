/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * inferctl's side of the D-Bus API (dbus/org.inferd.infer1.Manager.xml).
 *
 * Every function here prints one line saying what went wrong and returns a
 * negative errno, so a verb just returns what it gets. The line is the same
 * for every verb: "inferd is not running ..." when nobody owns the name,
 * "inferd stopped before answering ..." when it dies during a call, "inferd
 * did not answer within ..." when the call times out, and the daemon's own
 * message for its errors (org.inferd.infer1.Error.*).
 */

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-bus.h>

#include "inferctl.h"
#include "names.h"

/* The objects below the Manager (dbus/org.inferd.infer1.{Model,Job}.xml). */
#ifndef INFERD_MODEL_IFACE
#define INFERD_MODEL_IFACE      "org.inferd.infer1.Model"
#endif
#ifndef INFERD_JOB_IFACE
#define INFERD_JOB_IFACE        "org.inferd.infer1.Job"
#endif
#ifndef INFERD_MODEL_PATH_PREFIX
#define INFERD_MODEL_PATH_PREFIX "/org/inferd/infer1/model"
#endif
#ifndef INFERD_JOB_PATH_PREFIX
#define INFERD_JOB_PATH_PREFIX  "/org/inferd/infer1/job"
#endif

/* "system" or "session", for messages. */
const char *ctl_bus_name(const Context *ctx);

/*
 * Connects to the bus ctx names and waits until the bus has accepted us.
 * interactive: the calls change the daemon and may need polkit; let polkit
 * ask for a password when stdin is a terminal (through the session's agent).
 */
int ctl_bus_open(const Context *ctx, bool interactive, sd_bus **ret);

/*
 * Calls method on inferd's Manager, with the input arguments described by
 * types (NULL for none), and waits at most ctx->timeout_usec. The reply is
 * returned in *ret_reply, if not NULL.
 */
int ctl_bus_call(sd_bus *bus, const Context *ctx, const char *method, sd_bus_message **ret_reply,
                 const char *types, ...);

/*
 * The same for calls whose arguments are built piece by piece (an a{sv} of
 * options): a new call to method of iface on path at inferd, then sending it.
 * ctl_bus_send() consumes nothing; the reply goes to *ret_reply, if not NULL.
 */
int ctl_bus_new_call(sd_bus *bus, const char *path, const char *iface, const char *method, sd_bus_message **ret);
int ctl_bus_send(sd_bus *bus, const Context *ctx, sd_bus_message *m, sd_bus_message **ret_reply);

/* Where GetAll puts a property: a basic D-Bus type, and the field's offset. */
typedef struct CtlProperty {
        const char *name;
        const char *type;       /* "s" -> const char *, "t" -> uint64_t, "u" -> uint32_t, "b" -> int */
        size_t offset;
} CtlProperty;

/*
 * Reads all Manager properties in one call and stores those listed in map
 * (terminated by {}) into userdata. Strings point into *ret_reply: keep it
 * while using them. Properties not in map, or of another type than expected,
 * are left alone, so a newer daemon does not break an older client.
 */
int ctl_bus_get_properties(sd_bus *bus, const Context *ctx, const CtlProperty *map, void *userdata,
                           sd_bus_message **ret_reply);

/* The same for another object of inferd's: a model's (INFERD_MODEL_IFACE), a job's. */
int ctl_bus_get_object_properties(sd_bus *bus, const Context *ctx, const char *path, const char *iface,
                                  const CtlProperty *map, void *userdata, sd_bus_message **ret_reply);

/* One string property of the Manager. */
int ctl_bus_get_property_string(sd_bus *bus, const Context *ctx, const char *name, char **ret);

/* For replies that do not have the signature the API promises. */
int ctl_bus_log_parse_error(int r, const char *method);
