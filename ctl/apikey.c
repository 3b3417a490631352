/* SPDX-License-Identifier: MIT */
/*
 * "inferctl apikey COMMAND": create, list and revoke the keys of the HTTP
 * API, one verb with its own small table of commands, like "cluster". All
 * three go through polkit (org.inferd.infer1.manage-api-keys). The shape of
 * a name or an ID is checked here too, so a typo is a usage error.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "inferctl.h"
#include "macro.h"
#include "time-util.h"

#define NAME_MAX_LEN 64         /* as the daemon's API_KEY_NAME_MAX */
#define ID_LEN 16

static int name_check(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > NAME_MAX_LEN)
                return ctl_error_errno(EINVAL, "invalid name: expected 1 to %d characters.", NAME_MAX_LEN);
        for (size_t i = 0; i < n; i++)
                if (s[i] < 0x20 || s[i] > 0x7e)
                        return ctl_error_errno(EINVAL, "invalid name: only printable ASCII characters may be part "
                                               "of it.");
        if (s[0] == ' ' || s[n - 1] == ' ')
                return ctl_error_errno(EINVAL, "invalid name: it may not start or end with a space.");
        return 0;
}

static int id_check(const char *s) {
        if (strlen(s) != ID_LEN || strspn(s, "0123456789abcdefABCDEF") != ID_LEN)
                return ctl_error_errno(EINVAL, "invalid ID '%s': expected the 16 hex digits that 'inferctl apikey "
                                       "list' shows.", s);
        return 0;
}

/* "2025-03-03T10:12:41Z": for scripts, in UTC. */
/*
 * Only the key goes to stdout, so that KEY=$(inferctl apikey create NAME)
 * works; its ID and what to do with it go to stderr. inferd keeps only a
 * hash: this is the one time the key can be seen.
 */
static int apikey_create(Context *ctx, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *id, *key;
        int r;

        if (name_check(argv[0]) < 0)
                return EXIT_USAGE;
        r = ctl_bus_open(ctx, true, &bus);
        if (r < 0)
                return r;
        r = ctl_bus_call(bus, ctx, "CreateApiKey", &reply, "s", argv[0]);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "ss", &id, &key);
        if (r < 0)
                return ctl_bus_log_parse_error(r, "CreateApiKey");

        if (ctx->json != JSON_OFF) {
                _cleanup_json_ json_t *v = json_pack("{s:s, s:s, s:s}", "id", id, "name", argv[0], "key", key);
                if (!v)
                        return ctl_oom();
                return json_print(v, ctx->json);
        }
        printf("%s\n", key);
        if (fflush(stdout) != 0)
                return ctl_error_errno(errno ?: EIO, "Failed to write the key: %m");
        fprintf(stderr, "Created API key %s (%s). It is not shown again: keep it now. Clients send it in the "
                "header 'Authorization: Bearer KEY'; 'inferctl apikey revoke %s' withdraws it.\n", id, argv[0], id);
        return 0;
}

typedef struct KeyInfo {
        const char *id;
        const char *name;
        uint64_t created;
} KeyInfo;

static int apikey_list(Context *ctx, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(table_freep) Table *t = NULL;
        _cleanup_json_ json_t *array = NULL;
        static const char *const headers[] = { "ID", "NAME", "CREATED" };
        KeyInfo k;
        int r;

        r = ctl_bus_open(ctx, true, &bus);
        if (r < 0)
                return r;
        r = ctl_bus_call(bus, ctx, "ListApiKeys", &reply, NULL);
        if (r < 0)
                return r;

        array = json_array();
        t = table_new(ELEMENTSOF(headers), headers);
        if (!array || !t)
                return ctl_oom();
        r = sd_bus_message_enter_container(reply, 'a', "(sst)");
        if (r < 0)
                return ctl_bus_log_parse_error(r, "ListApiKeys");
        while ((r = sd_bus_message_read(reply, "(sst)", &k.id, &k.name, &k.created)) > 0) {
                char stamp[FORMAT_TIMESTAMP_MAX], iso[32];

                if (ctx->json != JSON_OFF) {
                        json_t *o = json_pack("{s:s, s:s, s:s?, s:I}", "id", k.id, "name", k.name,
                                              "created", format_iso8601(iso, sizeof iso, k.created),
                                              "created_realtime_usec", (json_int_t) k.created);
                        if (!o || json_array_append_new(array, o) < 0)
                                return ctl_oom();
                } else if (table_add_row(t, (const char *const[]) {
                                   k.id, k.name, format_timestamp(stamp, sizeof stamp, k.created) }) < 0)
                        return ctl_oom();
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return ctl_bus_log_parse_error(r, "ListApiKeys");

        if (ctx->json != JSON_OFF)
                return json_print(array, ctx->json);
        if (table_n_rows(t) == 0) {
                printf("No API keys. Make one with 'inferctl apikey create NAME'.\n");
                return 0;
        }
        r = table_print(t, stdout);
        if (r < 0)
                return ctl_error_errno(r, "Failed to print the table: %m");
        return 0;
}

static int apikey_revoke(Context *ctx, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        if (id_check(argv[0]) < 0)
                return EXIT_USAGE;
        r = ctl_bus_open(ctx, true, &bus);
        if (r < 0)
                return r;
        /* An unknown ID is the daemon's NotFound, with a sentence that says so. */
        return ctl_bus_call(bus, ctx, "RevokeApiKey", NULL, "s", argv[0]);
}

static const SubCommand commands[] = {
        { "list", 0, apikey_list },     /* the first is what "inferctl apikey" alone runs */
        { "create", 1, apikey_create },
        { "revoke", 1, apikey_revoke },
};

int verb_apikey(Context *ctx, int argc, char *argv[]) {
        const SubCommand *c = subcommand_find("apikey", commands, ELEMENTSOF(commands), argc, argv);
        if (!c)
                return EXIT_USAGE;
        return c->run(ctx, argc > 0 ? argv + 1 : argv);
}
