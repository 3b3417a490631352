/* SPDX-License-Identifier: MIT */
/*
 * "inferctl cluster COMMAND": init, token, join, leave and members, one verb
 * with its own small table of commands. Changing the cluster goes through
 * polkit (org.inferd.infer1.manage-cluster); listing the members is open to
 * everyone. Arguments whose shape inferctl can check (the address, the
 * token, --ttl) are checked here, so a typo is a usage error and not a
 * round trip to a peer.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "address.h"
#include "bus.h"
#include "format.h"
#include "inferctl.h"
#include "macro.h"
#include "names.h"
#include "time-util.h"

/* Joining fetches a certificate from a peer and learns the members: seconds, but over a slow link. */
#define JOIN_TIMEOUT_USEC (2ULL * 60ULL * USEC_PER_SEC)

#define CLUSTER_ADDRESS_MAX 63          /* bytes, as the wire protocol carries it */
#define TOKEN_TTL_DEFAULT_USEC (3600ULL * USEC_PER_SEC)
#define TOKEN_TTL_MAX_USEC (7ULL * 24ULL * 3600ULL * USEC_PER_SEC)
#define TOKEN_PREFIX "inferd-join-"

static const char *arg_name = "";       /* "": the daemon's default name */
static uint64_t arg_ttl_usec = TOKEN_TTL_DEFAULT_USEC;

/* The first option given that belongs to one command only, to refuse it with the others. */
static const char *arg_name_option, *arg_ttl_option;

int cluster_parse_option(Context *ctx, int opt, const char *arg) {
        uint64_t usec;

        switch (opt) {
        case ARG_CLUSTER_NAME:
                /* The daemon checks the characters; an empty name would mean the default. */
                if (!*arg)
                        return ctl_error_errno(EINVAL, "invalid --name=: expected a name.");
                arg_name = arg;
                arg_name_option = "--name";
                return 0;
        case ARG_CLUSTER_TTL:
                if (parse_timespan(arg, &usec) < 0 || usec < USEC_PER_SEC || usec > TOKEN_TTL_MAX_USEC)
                        return ctl_error_errno(EINVAL, "invalid --ttl=%s: expected a time span from 1s to 7d, "
                                               "like '30min' or '2h'.", arg);
                arg_ttl_usec = usec;
                arg_ttl_option = "--ttl";
                return 0;
        }
        return -EINVAL;
}

/*
 * ADDRESS in the daemon's grammar (address.h), normalised to HOST:PORT or
 * [IPV6]:PORT with the default port where none is given. Only the shape is
 * checked here; the daemon resolves the name and connects. Prints why and
 * returns -EINVAL.
 */
static int address_normalize(const char *s, char **ret) {
        char host[256], buf[CLUSTER_ADDRESS_MAX + 1];
        const char *why = NULL;
        uint16_t port;

        if (address_parse(s, INFERD_CLUSTER_PORT, host, sizeof host, &port, &why) < 0)
                return ctl_error_errno(EINVAL, "invalid address '%s': %s.", s, why);
        if (!host[0])
                return ctl_error_errno(EINVAL, "invalid address '%s': expected a host before the port.", s);
        if (address_format(host, port, buf, sizeof buf) < 0)
                return ctl_error_errno(EINVAL, "invalid address '%s': longer than %d bytes with the port.", s,
                                       CLUSTER_ADDRESS_MAX);
        *ret = strdup(buf);
        return *ret ? 0 : ctl_oom();
}

/* base64url, and the dots between the token's parts. */
static bool token_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
               c == '.';
}

/* The daemon checks the token itself; this only catches a paste of the wrong thing, or of half of it. */
static int token_check(const char *s) {
        const char *rest = startswith(s, TOKEN_PREFIX);

        if (!rest || !*rest)
                return ctl_error_errno(EINVAL, "invalid token: expected the text 'inferctl cluster token' prints, "
                                       "starting with '" TOKEN_PREFIX "'.");
        for (const char *p = rest; *p; p++)
                if (!token_char(*p))
                        return ctl_error_errno(EINVAL, "invalid token: '%c' cannot be part of it (was it cut or "
                                               "wrapped when copied?).", *p);
        return 0;
}

/* The Manager's cluster properties; strings point into the GetAll reply. */
typedef struct ClusterInfo {
        const char *name;
        const char *state;
        const char *address;
        const char *fingerprint;
} ClusterInfo;

static const CtlProperty cluster_info_map[] = {
        { "ClusterName", "s", offsetof(ClusterInfo, name) },
        { "ClusterState", "s", offsetof(ClusterInfo, state) },
        { "ClusterAddress", "s", offsetof(ClusterInfo, address) },
        { "ClusterFingerprint", "s", offsetof(ClusterInfo, fingerprint) },
        {}
};

static int get_cluster_info(sd_bus *bus, const Context *ctx, ClusterInfo *ret, sd_bus_message **ret_props) {
        *ret = (ClusterInfo) {};
        return ctl_bus_get_properties(bus, ctx, cluster_info_map, ret, ret_props);
}

/* What init and join print with --json: the cluster this node is now in. */
static int print_cluster_info_json(const Context *ctx, const ClusterInfo *info) {
        _cleanup_json_ json_t *v = json_pack("{s:s?, s:s?, s:s?, s:s?}",
                                             "name", info->name,
                                             "state", info->state,
                                             "address", info->address,
                                             "fingerprint", info->fingerprint);
        if (!v)
                return ctl_oom();
        return json_print(v, ctx->json);
}

static int cluster_init(Context *ctx, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *props = NULL;
        ClusterInfo info;
        int r;

        r = ctl_bus_open(ctx, true, &bus);
        if (r < 0)
                return r;
        /* Already being in a cluster is the daemon's Busy, with a sentence that says which. */
        r = ctl_bus_call(bus, ctx, "ClusterInit", NULL, "s", arg_name);
        if (r < 0)
                return r;
        r = get_cluster_info(bus, ctx, &info, &props);
        if (r < 0)
                return r;

        if (ctx->json != JSON_OFF)
                return print_cluster_info_json(ctx, &info);
        printf("Created cluster %s, with this node as its first member, at %s.\n"
               "To add a node, run 'inferctl cluster token' here, then 'inferctl cluster join %s TOKEN' there.\n",
               strna(info.name), strna(info.address), info.address && *info.address ? info.address : "ADDRESS");
        return 0;
}

/* "2025-03-03T10:12:41Z": for scripts, in UTC. */
/*
 * Only the token goes to stdout, so that TOKEN=$(inferctl cluster token)
 * works; when it expires and how to use it go to stderr, always, so the
 * person running the command sees them either way. The token itself is
 * never repeated there: stderr may end up in a log.
 */
static int cluster_token(Context *ctx, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *address = NULL;
        char stamp[FORMAT_TIMESTAMP_MAX], iso[32], ttl[FORMAT_TIMESPAN_MAX];
        const char *token;
        uint64_t expires;
        int r;

        r = ctl_bus_open(ctx, true, &bus);
        if (r < 0)
                return r;
        r = ctl_bus_call(bus, ctx, "ClusterCreateToken", &reply, "t", arg_ttl_usec);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "st", &token, &expires);
        if (r < 0)
                return ctl_bus_log_parse_error(r, "ClusterCreateToken");

        if (ctx->json != JSON_OFF) {
                _cleanup_json_ json_t *v = json_pack("{s:s, s:s?, s:I}",
                                                     "token", token,
                                                     "expires", format_iso8601(iso, sizeof iso, expires),
                                                     "expires_realtime_usec", (json_int_t) expires);
                if (!v)
                        return ctl_oom();
                return json_print(v, ctx->json);
        }

        printf("%s\n", token);
        if (fflush(stdout) != 0)
                return ctl_error_errno(errno ?: EIO, "Failed to write the token: %m");

        /* Only for the hint: without it the token is still good. */
        (void) sd_bus_get_property_string(bus, INFERD_BUS_NAME, INFERD_OBJECT_PATH, INFERD_MANAGER_IFACE,
                                          "ClusterAddress", &error, &address);
        fprintf(stderr, "Valid until %s (%s). On the node to add, run: inferctl cluster join %s TOKEN\n",
                format_timestamp(stamp, sizeof stamp, expires) ?: "n/a",
                format_timespan(ttl, sizeof ttl, arg_ttl_usec),
                address && *address ? address : "ADDRESS");
        return 0;
}

static int cluster_join(Context *ctx, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *props = NULL;
        _cleanup_free_ char *address = NULL;
        ClusterInfo info;
        Context c = *ctx;
        int r;

        r = address_normalize(argv[0], &address);
        if (r < 0)
                return EXIT_USAGE;
        if (token_check(argv[1]) < 0)
                return EXIT_USAGE;

        /* $INFERD_TIMEOUT_SEC, when set, is the limit; else one that allows for a slow peer. */
        if (!c.timeout_set)
                c.timeout_usec = JOIN_TIMEOUT_USEC;

        r = ctl_bus_open(&c, true, &bus);
        if (r < 0)
                return r;
        /* A bad or expired token, or an unreachable peer, comes back with the daemon's sentence. */
        r = ctl_bus_call(bus, &c, "ClusterJoin", NULL, "ss", address, argv[1]);
        if (r < 0)
                return r;
        r = get_cluster_info(bus, &c, &info, &props);
        if (r < 0)
                return r;

        if (ctx->json != JSON_OFF)
                return print_cluster_info_json(ctx, &info);
        printf("Joined cluster %s, as %s.\n", strna(info.name), strna(info.address));
        return 0;
}

static int cluster_leave(Context *ctx, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = ctl_bus_open(ctx, true, &bus);
        if (r < 0)
                return r;
        return ctl_bus_call(bus, ctx, "ClusterLeave", NULL, NULL);
}

/* Names for the members of the structs in a member's dict, in their D-Bus order. */
static const struct {
        const char *key;
        const char *const *fields;
} struct_fields[] = {
        { "devices", (const char *const[]) { "name", "type", "total_bytes", "free_bytes", NULL } },
        { "models", (const char *const[]) { "name", "arch", "quant", "device_bytes", "state", NULL } },
};

static const char *const *struct_fields_find(const char *key) {
        for (size_t i = 0; i < ELEMENTSOF(struct_fields); i++)
                if (streq(struct_fields[i].key, key))
                        return struct_fields[i].fields;
        return NULL;
}

static int read_basic(sd_bus_message *m, char type, json_t **ret) {
        union { double d; uint64_t t; int64_t x; uint32_t u; int32_t i; uint16_t q; int16_t n; uint8_t y;
                int b; const char *s; } val;
        int r;

        r = sd_bus_message_read_basic(m, type, &val);
        if (r < 0)
                return r;
        switch (type) {
        case 'd': *ret = json_real(val.d); break;
        case 't': *ret = json_integer((json_int_t) val.t); break;
        case 'x': *ret = json_integer(val.x); break;
        case 'u': *ret = json_integer(val.u); break;
        case 'i': *ret = json_integer(val.i); break;
        case 'q': *ret = json_integer(val.q); break;
        case 'n': *ret = json_integer(val.n); break;
        case 'y': *ret = json_integer(val.y); break;
        case 'b': *ret = json_boolean(val.b); break;
        default: *ret = json_string(val.s); break;      /* s, o, g */
        }
        return *ret ? 0 : -ENOMEM;
}

/*
 * The next value of m as JSON: basic types as themselves, arrays as arrays,
 * structs as objects with the names in fields (or as arrays without them).
 * Anything else (a dict, a file descriptor) is skipped and *ret is NULL, so
 * a key a newer daemon adds does not break the listing.
 */
static int read_value(sd_bus_message *m, const char *const *fields, json_t **ret) {
        _cleanup_json_ json_t *v = NULL;
        const char *contents;
        char type;
        int r;

        *ret = NULL;
        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r <= 0)
                return r < 0 ? r : -EBADMSG;

        if (strchr("dtxuiqnybsog", type))
                return read_basic(m, type, ret);
        if ((type != 'a' && type != 'r' && type != 'v') || (type == 'a' && contents[0] == '{'))
                return sd_bus_message_skip(m, NULL);

        r = sd_bus_message_enter_container(m, type, contents);
        if (r < 0)
                return r;
        if (type == 'v')
                r = read_value(m, fields, &v);
        else {
                /* The names of a struct's members; one past those we know is left out. */
                const char *const *names = type == 'r' ? fields : NULL;

                v = names ? json_object() : json_array();
                if (!v)
                        return -ENOMEM;
                while ((r = sd_bus_message_at_end(m, false)) == 0) {
                        _cleanup_json_ json_t *e = NULL;
                        const char *key = names ? *names : NULL;

                        if (key)
                                names++;
                        r = read_value(m, type == 'a' ? fields : NULL, &e);
                        if (r < 0)
                                return r;
                        if (!e || (names && !key))
                                continue;
                        r = names ? json_object_set(v, key, e) : json_array_append(v, e);
                        if (r < 0)
                                return -ENOMEM;
                }
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(v);
        return 0;
}

/* Self first, then by name and id: a stable order for eyes and for diff. */
static int member_compare(const void *a, const void *b) {
        json_t *x = *(json_t *const *) a, *y = *(json_t *const *) b;
        bool sx = json_is_true(json_object_get(x, "self")), sy = json_is_true(json_object_get(y, "self"));
        int c;

        if (sx != sy)
                return sx ? -1 : 1;
        c = strcmp(json_string_value(json_object_get(x, "name")) ?: "",
                   json_string_value(json_object_get(y, "name")) ?: "");
        if (c != 0)
                return c;
        return strcmp(json_string_value(json_object_get(x, "node_id")) ?: "",
                      json_string_value(json_object_get(y, "node_id")) ?: "");
}

/* ClusterMembers' aa{sv} as a JSON array of objects, sorted. */
static int list_members(sd_bus *bus, const Context *ctx, json_t **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_json_ json_t *members = json_array(), *sorted = json_array();
        _cleanup_free_ json_t **order = NULL;
        size_t n, i;
        json_t *o;
        int r;

        if (!members || !sorted)
                return ctl_oom();

        r = ctl_bus_call(bus, ctx, "ClusterMembers", &reply, NULL);
        if (r < 0)
                return r;

        r = sd_bus_message_enter_container(reply, 'a', "a{sv}");
        if (r < 0)
                return ctl_bus_log_parse_error(r, "ClusterMembers");
        while ((r = sd_bus_message_enter_container(reply, 'a', "{sv}")) > 0) {
                _cleanup_json_ json_t *member = json_object();

                if (!member)
                        return ctl_oom();
                while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                        _cleanup_json_ json_t *v = NULL;
                        const char *key;

                        r = sd_bus_message_read(reply, "s", &key);
                        if (r >= 0)
                                r = read_value(reply, struct_fields_find(key), &v);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(reply);
                        if (r == -ENOMEM)
                                return ctl_oom();
                        if (r < 0)
                                return ctl_bus_log_parse_error(r, "ClusterMembers");
                        if (v && json_object_set(member, key, v) < 0)
                                return ctl_oom();
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return ctl_bus_log_parse_error(r, "ClusterMembers");
                if (json_array_append(members, member) < 0)
                        return ctl_oom();
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return ctl_bus_log_parse_error(r, "ClusterMembers");

        n = json_array_size(members);
        order = calloc(n ?: 1, sizeof(json_t *));
        if (!order)
                return ctl_oom();
        json_array_foreach(members, i, o)
                order[i] = o;
        qsort(order, n, sizeof(json_t *), member_compare);
        for (i = 0; i < n; i++)
                if (json_array_append(sorted, order[i]) < 0)
                        return ctl_oom();

        *ret = TAKE_PTR(sorted);
        return 0;
}

static const char *member_string(json_t *o, const char *key) {
        return json_string_value(json_object_get(o, key));
}

static uint64_t member_uint(json_t *o, const char *key) {
        json_int_t v = json_integer_value(json_object_get(o, key));
        return (uint64_t) v;
}

/* "3s ago", "now", or NULL (printed "-") for never. */
static char *format_last_heard(char *buf, size_t len, uint64_t usec, uint64_t now) {
        char span[FORMAT_TIMESPAN_MAX];

        if (usec == 0)
                return NULL;
        if (usec + USEC_PER_SEC > now)
                snprintf(buf, len, "now");
        else
                snprintf(buf, len, "%s ago",
                         format_timespan(span, sizeof span, (now - usec) / USEC_PER_SEC * USEC_PER_SEC));
        return buf;
}

/* "1 (12.0G free)": how many devices, and the memory free on them together. */
static char *format_devices(char *buf, size_t len, json_t *devices) {
        char free[FORMAT_BYTES_MAX];
        uint64_t total = 0;
        size_t i;
        json_t *d;

        if (json_array_size(devices) == 0)
                return NULL;
        json_array_foreach(devices, i, d)
                total += member_uint(d, "free_bytes");
        snprintf(buf, len, "%zu (%s free)", json_array_size(devices), format_bytes(free, sizeof free, total));
        return buf;
}

/* "llama3, stories260K (loading)": the loaded models, by name. */
static char *format_models(json_t *models) {
        char *buf = NULL;
        size_t len = 0, i;
        json_t *m;
        FILE *f;

        if (json_array_size(models) == 0)
                return strdup("-");
        f = open_memstream(&buf, &len);
        if (!f)
                return NULL;
        json_array_foreach(models, i, m) {
                const char *state = member_string(m, "state");

                fprintf(f, "%s%s", i > 0 ? ", " : "", strna(member_string(m, "name")));
                if (state && !streq(state, "ready"))
                        fprintf(f, " (%s)", state);
        }
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

static int print_members_text(json_t *members) {
        static const char *const headers[] = {
                "NAME", "STATE", "ADDRESS", "RTT", "LAST HEARD", "DEVICES", "MODELS", "LOAD",
        };
        _cleanup_(table_freep) Table *t = NULL;
        uint64_t now = now_usec(CLOCK_REALTIME);
        size_t i;
        json_t *o;
        int r;

        t = table_new(ELEMENTSOF(headers), headers);
        if (!t)
                return ctl_oom();
        (void) table_set_align_right(t, 3, true);

        json_array_foreach(members, i, o) {
                char rtt[FORMAT_TIMESPAN_MAX], heard[FORMAT_TIMESPAN_MAX + 8], devices[64], load[64];
                _cleanup_free_ char *name = NULL, *models = NULL;
                uint64_t queue = member_uint(o, "queue");
                uint64_t rtt_usec = member_uint(o, "rtt_usec");
                bool gone;

                if (asprintf(&name, "%s%s", strna(member_string(o, "name")),
                             json_is_true(json_object_get(o, "self")) ? " (self)" : "") < 0)
                        return ctl_oom();
                models = format_models(json_object_get(o, "models"));
                if (!models)
                        return ctl_oom();
                snprintf(load, sizeof load, "%" PRIu64 " job%s, %.1f tok/s", queue, queue == 1 ? "" : "s",
                         json_number_value(json_object_get(o, "tokens_per_sec")));
                /* What a member that is gone last said about its load is no longer true. */
                gone = streq_ptr(member_string(o, "state"), "dead") || streq_ptr(member_string(o, "state"), "left");

                r = table_add_row(t, (const char *const[]) {
                        name, member_string(o, "state"), member_string(o, "address"),
                        rtt_usec > 0 ? format_timespan(rtt, sizeof rtt, rtt_usec) : NULL,
                        format_last_heard(heard, sizeof heard, member_uint(o, "last_heard_usec"), now),
                        format_devices(devices, sizeof devices, json_object_get(o, "devices")),
                        models, gone ? NULL : load,
                });
                if (r < 0)
                        return ctl_oom();
        }

        r = table_print(t, stdout);
        if (r < 0)
                return ctl_error_errno(r, "Failed to print the table: %m");
        return 0;
}

static int cluster_members(Context *ctx, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *props = NULL;
        _cleanup_json_ json_t *members = NULL;
        ClusterInfo info = {};
        int r;

        r = ctl_bus_open(ctx, false, &bus);
        if (r < 0)
                return r;

        /* Outside a cluster there is nothing to list; a daemon without the property is asked anyway. */
        r = ctl_bus_get_properties(bus, ctx, cluster_info_map, &info, &props);
        if (r < 0)
                return r;
        if (info.state && streq(info.state, "none")) {
                if (ctx->json != JSON_OFF) {
                        _cleanup_json_ json_t *empty = json_array();
                        if (!empty)
                                return ctl_oom();
                        return json_print(empty, ctx->json);
                }
                printf("This node is not in a cluster. Start one with 'inferctl cluster init', or join one with "
                       "'inferctl cluster join'.\n");
                return 0;
        }

        r = list_members(bus, ctx, &members);
        if (r < 0)
                return r;
        if (ctx->json != JSON_OFF)
                return json_print(members, ctx->json);
        return print_members_text(members);
}

static const SubCommand commands[] = {
        { "members", 0, cluster_members },      /* the first is what "inferctl cluster" alone runs */
        { "init", 0, cluster_init },
        { "token", 0, cluster_token },
        { "join", 2, cluster_join },
        { "leave", 0, cluster_leave },
};

int verb_cluster(Context *ctx, int argc, char *argv[]) {
        const SubCommand *c = subcommand_find("cluster", commands, ELEMENTSOF(commands), argc, argv);
        if (!c)
                return EXIT_USAGE;
        const char *name = c->name;
        if ((arg_name_option && !streq(name, "init")) || (arg_ttl_option && !streq(name, "token"))) {
                (void) ctl_error_errno(EINVAL, "option '%s' is for 'inferctl cluster %s', not 'cluster %s'.",
                                       arg_name_option && !streq(name, "init") ? arg_name_option : arg_ttl_option,
                                       arg_name_option && !streq(name, "init") ? "init" : "token", name);
                return EXIT_USAGE;
        }

        return c->run(ctx, argc > 0 ? argv + 1 : argv);
}
