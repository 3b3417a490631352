/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Authorization of changing D-Bus calls.
 *
 * On the system bus the sender is checked with polkit, asked over D-Bus
 * (org.freedesktop.PolicyKit1.Authority.CheckAuthorization) without blocking
 * the loop: the first call starts the query and returns 0, the handler returns
 * 1 ("reply comes later"); when polkit answers, the original message is queued
 * again with sd_bus_enqueue_for_read() and the handler runs a second time,
 * now getting the stored verdict. Root is always allowed.
 *
 * On a user bus there is no polkit: only the daemon's own user (and root)
 * may change things.
 */

#include <stdbool.h>
#include <systemd/sd-bus.h>

typedef struct PolkitRegistry PolkitRegistry;

int polkit_registry_new(bool use_polkit, PolkitRegistry **ret);
PolkitRegistry *polkit_registry_free(PolkitRegistry *r);
static inline void polkit_registry_freep(PolkitRegistry **r) {
        if (*r)
                polkit_registry_free(*r);
}

/*
 * Returns 1 when the sender of call may perform action, 0 when the answer is
 * pending (return 1 from the method handler and do nothing else), or a
 * negative errno with error set (AccessDenied, InteractiveAuthorizationRequired).
 */
int bus_verify_polkit_async(PolkitRegistry *reg, sd_bus_message *call, const char *action,
                            sd_bus_error *error);
