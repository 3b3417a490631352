/* SPDX-License-Identifier: MIT */
#include <stdio.h>

#include "log.h"
#include "macro.h"
#include "names.h"
#include "polkit.h"

#define UID_MAX_SENTINEL ((uid_t) -1)

typedef struct PolkitQuery PolkitQuery;
struct PolkitQuery {
        PolkitQuery *next;
        sd_bus_message *request;        /* the caller's method call, re-dispatched on answer */
        char *action;
        sd_bus_slot *slot;              /* pending CheckAuthorization; NULL once answered */
        int verdict;                    /* 1 allowed, or -errno */
        sd_bus_error error;
};

struct PolkitRegistry {
        bool use_polkit;
        PolkitQuery *queries;
};

static void query_free(PolkitQuery *q) {
        if (!q)
                return;
        sd_bus_slot_unref(q->slot);
        sd_bus_message_unref(q->request);
        sd_bus_error_free(&q->error);
        free(q->action);
        free(q);
}

int polkit_registry_new(bool use_polkit, PolkitRegistry **ret) {
        PolkitRegistry *r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->use_polkit = use_polkit;
        *ret = r;
        return 0;
}

PolkitRegistry *polkit_registry_free(PolkitRegistry *r) {
        if (!r)
                return NULL;
        while (r->queries) {
                PolkitQuery *q = r->queries;
                r->queries = q->next;
                query_free(q);
        }
        free(r);
        return NULL;
}

static void registry_unlink(PolkitRegistry *reg, PolkitQuery *q) {
        for (PolkitQuery **p = &reg->queries; *p; p = &(*p)->next)
                if (*p == q) {
                        *p = q->next;
                        return;
                }
}

static int check_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        PolkitQuery *q = userdata;
        const sd_bus_error *e;
        int authorized = 0, challenge = 0, r;

        q->slot = sd_bus_slot_unref(q->slot);

        e = sd_bus_message_get_error(reply);
        if (e) {
                log_warning("polkit could not be asked about %s: %s", q->action, e->message ?: e->name);
                q->verdict = sd_bus_error_setf(&q->error, INFERD_ERROR_ACCESS_DENIED,
                                               "Access denied: polkit is not available to authorize %s (%s).",
                                               q->action, e->message ?: e->name);
        } else {
                r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
                if (r >= 0)
                        r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
                if (r < 0)
                        q->verdict = sd_bus_error_setf(&q->error, INFERD_ERROR_ACCESS_DENIED,
                                                       "Access denied: unreadable answer from polkit.");
                else if (authorized)
                        q->verdict = 1;
                else if (challenge)
                        q->verdict = sd_bus_error_setf(&q->error, INFERD_ERROR_INTERACTIVE_AUTH,
                                                       "Authentication is required for %s; run the "
                                                       "command again allowing interactive authorization.",
                                                       q->action);
                else
                        q->verdict = sd_bus_error_setf(&q->error, INFERD_ERROR_ACCESS_DENIED,
                                                       "Access denied by polkit for %s.", q->action);
        }

        /* Run the original method handler again; it will find this verdict. */
        r = sd_bus_enqueue_for_read(sd_bus_message_get_bus(q->request), q->request);
        if (r < 0)
                log_error_errno(r, "Failed to re-dispatch a call after its polkit check: %m");
        return 1;
}

static int check_unix_user(PolkitRegistry *reg, sd_bus_message *call, uid_t *ret_uid, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t uid;
        int r;

        r = sd_bus_query_sender_creds(call, SD_BUS_CREDS_EUID, &creds);
        if (r >= 0)
                r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0)
                return sd_bus_error_setf(error, INFERD_ERROR_ACCESS_DENIED,
                                         "Access denied: cannot tell who the caller is.");
        *ret_uid = uid;
        return 0;
}

int bus_verify_polkit_async(PolkitRegistry *reg, sd_bus_message *call, const char *action,
                            sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *pk = NULL;
        PolkitQuery *q;
        uid_t uid = UID_MAX_SENTINEL;
        int r;

        /* A second dispatch of the same message: hand out the stored verdict. */
        for (q = reg->queries; q; q = q->next)
                if (q->request == call && streq(q->action, action)) {
                        if (q->slot)
                                return 0; /* still waiting; should not happen */
                        registry_unlink(reg, q);
                        r = q->verdict;
                        if (r < 0)
                                sd_bus_error_copy(error, &q->error);
                        query_free(q);
                        return r;
                }

        r = check_unix_user(reg, call, &uid, error);
        if (r < 0)
                return r;
        if (uid == 0 || (!reg->use_polkit && uid == geteuid()))
                return 1;
        if (!reg->use_polkit)
                return sd_bus_error_setf(error, INFERD_ERROR_ACCESS_DENIED,
                                         "Access denied: on a user bus only the user running "
                                         "inferd may make changes (%s).", action);

        q = calloc(1, sizeof *q);
        if (!q)
                return -ENOMEM;
        q->request = sd_bus_message_ref(call);
        q->action = strdup(action);
        if (!q->action) {
                query_free(q);
                return -ENOMEM;
        }

        sd_bus *bus = sd_bus_message_get_bus(call);
        r = sd_bus_message_new_method_call(bus, &pk, "org.freedesktop.PolicyKit1",
                                           "/org/freedesktop/PolicyKit1/Authority",
                                           "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization");
        if (r >= 0)
                r = sd_bus_message_append(pk, "(sa{sv})sa{ss}us", "system-bus-name", 1, "name", "s",
                                          sd_bus_message_get_sender(call), action, 0,
                                          (uint32_t) (sd_bus_message_get_allow_interactive_authorization(call) ? 1 : 0),
                                          "");
        if (r >= 0)
                r = sd_bus_call_async(bus, &q->slot, pk, check_reply, q, 25 * 1000000ULL);
        if (r < 0) {
                query_free(q);
                return sd_bus_error_setf(error, INFERD_ERROR_ACCESS_DENIED, "Access denied: failed to ask polkit: %s", strerror(-r));
        }
        q->next = reg->queries;
        reg->queries = q;
        return 0;
}
