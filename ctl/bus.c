/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "format.h"
#include "macro.h"
#include "names.h"
#include "time-util.h"

const char *ctl_bus_name(const Context *ctx) {
        return ctx->bus_kind == CTL_BUS_SESSION ? "session" : "system";
}

static const char *start_hint(const Context *ctx) {
        return ctx->bus_kind == CTL_BUS_SESSION ? "inferd --bus=session &" : "systemctl start inferd";
}

static bool error_has_prefix(const sd_bus_error *e, const char *prefix) {
        return e && e->name && strncmp(e->name, prefix, strlen(prefix)) == 0;
}

/* sd-bus returns these, with no error name, when the bus connection closes under a call. */
static bool connection_lost(int r) {
        return r == -ECONNRESET || r == -ENOTCONN || r == -EPIPE || r == -ESHUTDOWN;
}

static int log_connect_error(const Context *ctx, int r) {
        if (r == -ENOMEDIUM)
                /* sd_bus_open_user(): neither $DBUS_SESSION_BUS_ADDRESS nor $XDG_RUNTIME_DIR. */
                return ctl_error_errno(r, "inferd is not running on the session bus (there is no session bus: "
                                       "$DBUS_SESSION_BUS_ADDRESS and $XDG_RUNTIME_DIR are unset)");
        return ctl_error_errno(r, "inferd is not running on the %s bus (cannot connect to the bus: %m; "
                               "start it with: %s)", ctl_bus_name(ctx), start_hint(ctx));
}

/* The one place where a failed call becomes the line the user reads. */
static int log_call_error(const Context *ctx, const char *method, int r, const sd_bus_error *e,
                          uint64_t elapsed_usec) {
        char ts[FORMAT_TIMESPAN_MAX];

        if (sd_bus_error_has_name(e, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
            sd_bus_error_has_name(e, SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                return ctl_error_errno(r, "inferd is not running on the %s bus (start it with: %s)",
                                       ctl_bus_name(ctx), start_hint(ctx));

        /* Bus activation through systemd (inferd.service) was tried and failed. */
        if (error_has_prefix(e, "org.freedesktop.DBus.Error.Spawn.") ||
            error_has_prefix(e, "org.freedesktop.systemd1."))
                return ctl_error_errno(r, "inferd is not running on the %s bus and could not be started (%s)",
                                       ctl_bus_name(ctx), e->message ?: e->name);

        /*
         * NoReply is both sd-bus's own timeout and the bus telling us the
         * daemon went away with our call pending; only the clock tells them
         * apart. Allow a little slack, the timer starts inside sd_bus_call().
         */
        if (sd_bus_error_has_name(e, SD_BUS_ERROR_NO_REPLY) ||
            sd_bus_error_has_name(e, SD_BUS_ERROR_TIMEOUT)) {
                if (elapsed_usec + 10000 >= ctx->timeout_usec)
                        return ctl_error_errno(r, "inferd did not answer %s within %s "
                                               "(set $INFERD_TIMEOUT_SEC to wait longer)", method,
                                               format_timespan(ts, sizeof ts, ctx->timeout_usec));
                return ctl_error_errno(r, "inferd stopped before answering (%s)", e->message ?: e->name);
        }

        if (sd_bus_error_has_name(e, SD_BUS_ERROR_DISCONNECTED) ||
            (!sd_bus_error_is_set(e) && connection_lost(r)))
                return ctl_error_errno(r, "inferd stopped before answering (lost the connection to the %s bus)",
                                       ctl_bus_name(ctx));

        /* Errors from the daemon (org.inferd.infer1.Error.*) carry a sentence meant for the user. */
        if (sd_bus_error_is_set(e))
                return ctl_error_errno(r, "%s", e->message ?: e->name);

        return ctl_error_errno(r, "Failed to call %s: %m", method);
}

int ctl_bus_open(const Context *ctx, bool interactive, sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const char *unique;
        int r;

        r = ctx->bus_kind == CTL_BUS_SESSION ? sd_bus_open_user(&bus) : sd_bus_open_system(&bus);
        if (r < 0)
                return log_connect_error(ctx, r);

        r = sd_bus_set_method_call_timeout(bus, ctx->timeout_usec);
        if (r < 0)
                return ctl_error_errno(r, "Failed to set the method call timeout: %m");

        /* Without a terminal nobody could answer a password prompt, so do not ask for one. */
        if (interactive) {
                r = sd_bus_set_allow_interactive_authorization(bus, isatty(STDIN_FILENO) > 0);
                if (r < 0)
                        return ctl_error_errno(r, "Failed to allow interactive authorization: %m");
        }

        /*
         * Wait for the bus to accept us (Hello), so that a bus refusing us is
         * reported as such and not as inferd dying in our first call.
         */
        r = sd_bus_get_unique_name(bus, &unique);
        if (r < 0)
                return ctl_error_errno(r, "the %s bus refused the connection (%m)", ctl_bus_name(ctx));

        *ret = TAKE_PTR(bus);
        return 0;
}

int ctl_bus_new_call(sd_bus *bus, const char *path, const char *iface, const char *method, sd_bus_message **ret) {
        int r;

        r = sd_bus_message_new_method_call(bus, ret, INFERD_BUS_NAME, path, iface, method);
        if (r < 0)
                return ctl_error_errno(r, "Failed to create a call to %s: %m", method);
        return 0;
}

int ctl_bus_send(sd_bus *bus, const Context *ctx, sd_bus_message *m, sd_bus_message **ret_reply) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        const char *method = sd_bus_message_get_member(m);
        uint64_t start;
        int r;

        start = now_usec(CLOCK_MONOTONIC);
        r = sd_bus_call(bus, m, 0, &error, &reply);
        if (r < 0)
                return log_call_error(ctx, method, r, &error, now_usec(CLOCK_MONOTONIC) - start);

        if (ret_reply)
                *ret_reply = TAKE_PTR(reply);
        return 0;
}

static int call_va(sd_bus *bus, const Context *ctx, const char *path, const char *iface, const char *method,
                   sd_bus_message **ret_reply, const char *types, va_list ap) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = ctl_bus_new_call(bus, path, iface, method, &m);
        if (r < 0)
                return r;
        if (types) {
                r = sd_bus_message_appendv(m, types, ap);
                if (r < 0)
                        return ctl_error_errno(r, "Failed to append the arguments of %s: %m", method);
        }
        return ctl_bus_send(bus, ctx, m, ret_reply);
}

int ctl_bus_call(sd_bus *bus, const Context *ctx, const char *method, sd_bus_message **ret_reply,
                 const char *types, ...) {
        va_list ap;
        int r;

        va_start(ap, types);
        r = call_va(bus, ctx, INFERD_OBJECT_PATH, INFERD_MANAGER_IFACE, method, ret_reply, types, ap);
        va_end(ap);
        return r;
}

static int call_properties(sd_bus *bus, const Context *ctx, const char *path, const char *method,
                           sd_bus_message **ret_reply, const char *types, ...) {
        va_list ap;
        int r;

        va_start(ap, types);
        r = call_va(bus, ctx, path, "org.freedesktop.DBus.Properties", method, ret_reply, types, ap);
        va_end(ap);
        return r;
}

static const CtlProperty *property_find(const CtlProperty *map, const char *name) {
        for (; map->name; map++)
                if (streq(map->name, name))
                        return map;
        return NULL;
}

int ctl_bus_get_properties(sd_bus *bus, const Context *ctx, const CtlProperty *map, void *userdata,
                           sd_bus_message **ret_reply) {
        return ctl_bus_get_object_properties(bus, ctx, INFERD_OBJECT_PATH, INFERD_MANAGER_IFACE, map, userdata,
                                             ret_reply);
}

int ctl_bus_get_object_properties(sd_bus *bus, const Context *ctx, const char *path, const char *iface,
                                  const CtlProperty *map, void *userdata, sd_bus_message **ret_reply) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = call_properties(bus, ctx, path, "GetAll", &reply, "s", iface);
        if (r < 0)
                return r;

        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return ctl_bus_log_parse_error(r, "GetAll");
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                const CtlProperty *p;
                const char *name, *contents;

                r = sd_bus_message_read(reply, "s", &name);
                if (r < 0)
                        return ctl_bus_log_parse_error(r, "GetAll");

                p = property_find(map, name);
                r = sd_bus_message_peek_type(reply, NULL, &contents);
                if (r < 0)
                        return ctl_bus_log_parse_error(r, "GetAll");
                if (p && streq(contents, p->type))
                        r = sd_bus_message_read(reply, "v", p->type, (uint8_t *) userdata + p->offset);
                else
                        r = sd_bus_message_skip(reply, "v");
                if (r < 0)
                        return ctl_bus_log_parse_error(r, "GetAll");

                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return ctl_bus_log_parse_error(r, "GetAll");
        }
        if (r < 0)
                return ctl_bus_log_parse_error(r, "GetAll");
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return ctl_bus_log_parse_error(r, "GetAll");

        *ret_reply = TAKE_PTR(reply);
        return 0;
}

int ctl_bus_get_property_string(sd_bus *bus, const Context *ctx, const char *name, char **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *s;
        char *copy;
        int r;

        r = call_properties(bus, ctx, INFERD_OBJECT_PATH, "Get", &reply, "ss", INFERD_MANAGER_IFACE, name);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "v", "s", &s);
        if (r < 0)
                return ctl_bus_log_parse_error(r, "Get");

        copy = strdup(s);
        if (!copy)
                return ctl_oom();
        *ret = copy;
        return 0;
}

int ctl_bus_log_parse_error(int r, const char *method) {
        return ctl_error_errno(r, "Failed to parse the reply to %s: %m (is inferd the same version as inferctl?)",
                               method);
}
