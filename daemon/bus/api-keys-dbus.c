/* SPDX-License-Identifier: MIT */
/*
 * The HTTP API's keys on D-Bus: CreateApiKey, ListApiKeys and RevokeApiKey,
 * all behind the polkit action org.inferd.infer1.manage-api-keys (listing
 * too: names and dates tell who has access). The key itself is in the reply
 * to CreateApiKey only; it is never logged.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <string.h>

#include "api-keys-dbus.h"
#include "api-keys.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "names.h"
#include "polkit.h"

static int api_keys_error(sd_bus_error *error, int r, const char *why) {
        const char *name = r == -EINVAL ? INFERD_ERROR_INVALID_ARGUMENT
                           : r == -ENOENT ? INFERD_ERROR_NOT_FOUND
                           : r == -ETOOMANYREFS ? INFERD_ERROR_BUSY
                                                : INFERD_ERROR_INTERNAL;
        return sd_bus_error_setf(error, name, "%s", why ?: strerror(-r));
}

/* For the log: who asked, as far as the bus knows. */
static uid_t sender_uid(sd_bus_message *msg) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t uid = (uid_t) -1;

        if (sd_bus_query_sender_creds(msg, SD_BUS_CREDS_EUID, &creds) >= 0)
                (void) sd_bus_creds_get_euid(creds, &uid);
        return uid;
}

int method_create_api_key(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *why = NULL;
        char id[API_KEY_ID_MAX], key[API_KEY_TEXT_MAX];
        Manager *m = userdata;
        const char *name;
        int r;

        r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        /* A name that cannot be one is refused before anyone is asked for a password. */
        if (!api_keys_name_valid(name))
                return sd_bus_error_setf(error, INFERD_ERROR_INVALID_ARGUMENT,
                                         "Invalid API key name: expected 1 to %d printable ASCII characters, not "
                                         "starting or ending with a space.", API_KEY_NAME_MAX);
        r = bus_verify_polkit_async(m->polkit, msg, INFERD_POLKIT_ACTION_MANAGE_API_KEYS, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (!m->api_keys)
                return sd_bus_error_setf(error, INFERD_ERROR_INTERNAL, "API keys are not available.");

        r = api_keys_create(m->api_keys, name, id, key, &why);
        if (r < 0)
                return api_keys_error(error, r, why);
        log_fields(LOG_INFO, 0, LOG_FIELDS("API_KEY_ID", id), "Created API key %s (%s) for UID %d.", id, name,
                   (int) sender_uid(msg));
        r = sd_bus_reply_method_return(msg, "ss", id, key);
        OPENSSL_cleanse(key, sizeof key);
        return r;
}

int method_list_api_keys(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *why = NULL;
        const ApiKeyInfo *keys;
        Manager *m = userdata;
        size_t n;
        int r;

        r = bus_verify_polkit_async(m->polkit, msg, INFERD_POLKIT_ACTION_MANAGE_API_KEYS, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (!m->api_keys)
                return sd_bus_error_setf(error, INFERD_ERROR_INTERNAL, "API keys are not available.");
        r = api_keys_list(m->api_keys, &keys, &n, &why);
        if (r < 0)
                return api_keys_error(error, r, why);

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sst)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                r = sd_bus_message_append(reply, "(sst)", keys[i].id, keys[i].name, keys[i].created_usec);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

int method_revoke_api_key(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *why = NULL;
        Manager *m = userdata;
        const char *id;
        int r;

        r = sd_bus_message_read(msg, "s", &id);
        if (r < 0)
                return r;
        if (!api_keys_id_valid(id))
                return sd_bus_error_setf(error, INFERD_ERROR_INVALID_ARGUMENT,
                                         "Invalid API key ID '%s': expected 16 hex digits, as ListApiKeys "
                                         "returns.", id);
        r = bus_verify_polkit_async(m->polkit, msg, INFERD_POLKIT_ACTION_MANAGE_API_KEYS, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (!m->api_keys)
                return sd_bus_error_setf(error, INFERD_ERROR_INTERNAL, "API keys are not available.");

        r = api_keys_revoke(m->api_keys, id, &why);
        if (r < 0)
                return api_keys_error(error, r, why);
        log_fields(LOG_INFO, 0, LOG_FIELDS("API_KEY_ID", id), "Revoked API key %s for UID %d.", id,
                   (int) sender_uid(msg));
        return sd_bus_reply_method_return(msg, NULL);
}
