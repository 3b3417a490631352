/* SPDX-License-Identifier: MIT */
#include <ini.h>
#include <stdio.h>
#include <strings.h>

#include "address.h"
#include "config.h"
#include "log.h"
#include "macro.h"
#include "names.h"
#include "format.h"
#include "select.h"
#include "time-util.h"

/* inih hands us one key at a time; the first error wins and stops the parse. */
typedef struct ParseState {
        Config *config;
        const char *name;
        char *error;
} ParseState;

static bool node_name_valid(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > 63)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '-' || *p == '_' || *p == '.'))
                        return false;
        return true;
}

/* Keeps the first reason; inih reports the line as its return value. */
static int fail(ParseState *st, const char *fmt, const char *a, const char *b) {
        if (!st->error && asprintf(&st->error, fmt, a, b) < 0)
                st->error = NULL;
        return 0;
}

static int parse_u32(ParseState *st, const char *key, const char *value, uint32_t min, uint32_t max,
                     uint32_t *ret) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        if (errno || end == value || *end || value[0] == '-' || v < min || v > max) {
                char range[64];
                snprintf(range, sizeof range, " (expected %u to %u)", min, max);
                char kv[300];
                snprintf(kv, sizeof kv, "%s=%s", key, value);
                return fail(st, "%s is not a valid number%s", kv, range);
        }
        *ret = (uint32_t) v;
        return 1;
}

static int parse_bool(ParseState *st, const char *key, const char *value, bool *ret) {
        static const char *const yes[] = { "1", "yes", "true", "on" }, *const no[] = { "0", "no", "false", "off" };
        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(value, yes[i]) == 0 || strcasecmp(value, no[i]) == 0) {
                        *ret = strcasecmp(value, yes[i]) == 0;
                        return 1;
                }
        char kv[300];
        snprintf(kv, sizeof kv, "%s=%s", key, value);
        return fail(st, "%s is not a boolean (yes/no, true/false, on/off, 1/0)%s", kv, "");
}

static int handler(void *userdata, const char *section, const char *key, const char *value) {
        ParseState *st = userdata;
        Config *c = st->config;

        if (streq(section, "Daemon")) {
                if (streq(key, "NodeName")) {
                        if (!node_name_valid(value))
                                return fail(st, "NodeName=%s is not a valid name (1-63 characters of a-z, A-Z, 0-9, '-', '_', '.')%s", value, "");
                        char *s = strdup(value);
                        if (!s)
                                return fail(st, "out of memory%s%s", "", "");
                        free(c->node_name);
                        c->node_name = s;
                        return 1;
                }
                if (streq(key, "LogLevel")) {
                        int l = log_level_from_string(value);
                        if (l < 0)
                                return fail(st, "LogLevel=%s is not one of emerg, alert, crit, err, warning, notice, info, debug%s", value, "");
                        c->log_level = l;
                        return 1;
                }
                return fail(st, "unknown key '%s' in section [%s]", key, section);
        }

        if (streq(section, "Engine")) {
                if (streq(key, "Devices")) {
                        if (!gpu_devices_spec_valid(value))
                                return fail(st, "Devices=%s is not 'auto', 'all', 'none' or a list of device indices%s", value, "");
                        char *s = strdup(value);
                        if (!s)
                                return fail(st, "out of memory%s%s", "", "");
                        free(c->devices);
                        c->devices = s;
                        return 1;
                }
                if (streq(key, "MaxContext"))
                        return parse_u32(st, key, value, 16, 1u << 24, &c->max_context);
                return fail(st, "unknown key '%s' in section [%s]", key, section);
        }

        if (streq(section, "Limits")) {
                if (streq(key, "MaxJobs"))
                        return parse_u32(st, key, value, 1, 1000000, &c->max_jobs);
                if (streq(key, "MaxTokens"))
                        return parse_u32(st, key, value, 1, 1u << 24, &c->max_tokens);
                if (streq(key, "MaxPromptBytes")) {
                        uint64_t v;
                        if (parse_size(value, &v) < 0 || v < 16 || v > (1ULL << 30))
                                return fail(st, "MaxPromptBytes=%s is not a size between 16 and 1G%s", value, "");
                        c->max_prompt_bytes = v;
                        return 1;
                }
                return fail(st, "unknown key '%s' in section [%s]", key, section);
        }

        if (streq(section, "Cluster")) {
                const struct {
                        const char *key;
                        uint64_t *ret, min, max;
                } spans[] = {
                        { "ProbeInterval", &c->probe_interval_usec, 10 * USEC_PER_MSEC, 60 * USEC_PER_SEC },
                        { "ProbeTimeout", &c->probe_timeout_usec, 1 * USEC_PER_MSEC, 60 * USEC_PER_SEC },
                        { "SuspectTimeout", &c->suspect_timeout_usec, 10 * USEC_PER_MSEC, 3600 * USEC_PER_SEC },
                        { "RemoveDeadAfter", &c->remove_dead_after_usec, 1 * USEC_PER_SEC, 30 * 24 * 3600 * USEC_PER_SEC },
                };
                if (streq(key, "Listen") || streq(key, "Advertise")) {
                        char host[256];
                        uint16_t port;
                        if (address_parse(value, 0, host, sizeof host, &port, NULL) < 0 ||
                            (streq(key, "Advertise") && (!*host || streq(host, "0.0.0.0") || streq(host, "::"))))
                                return fail(st, "%s is not a valid address (HOST:PORT, [IPV6]:PORT%s)", key,
                                            streq(key, "Listen") ? " or :PORT" : "; not a wildcard");
                        char *v = strdup(value);
                        if (!v)
                                return fail(st, "out of memory%s%s", "", "");
                        char **field = streq(key, "Listen") ? &c->listen : &c->advertise;
                        free(*field);
                        *field = v;
                        return 1;
                }
                if (streq(key, "IndirectProbes"))
                        return parse_u32(st, key, value, 0, 16, &c->indirect_probes);
                for (size_t i = 0; i < ELEMENTSOF(spans); i++) {
                        if (!streq(key, spans[i].key))
                                continue;
                        uint64_t v;
                        if (parse_timespan(value, &v) < 0 || v < spans[i].min || v > spans[i].max) {
                                char kv[300];
                                snprintf(kv, sizeof kv, "%s=%s", key, value);
                                return fail(st, "%s is not a time span in range (e.g. 500ms, 2s, 1min)%s", kv, "");
                        }
                        *spans[i].ret = v;
                        return 1;
                }
                return fail(st, "unknown key '%s' in section [%s]", key, section);
        }

        if (streq(section, "HTTP")) {
                if (streq(key, "Listen")) {
                        char host[256];
                        uint16_t port;
                        char *v = NULL;
                        /* Empty: only sockets that systemd passes, if any. */
                        if (*value && (address_parse(value, 0, host, sizeof host, &port, NULL) < 0 || !*host))
                                return fail(st, "Listen=%s is not a valid address (HOST:PORT or [IPV6]:PORT)%s", value,
                                            "");
                        if (*value && !(v = strdup(value)))
                                return fail(st, "out of memory%s%s", "", "");
                        free(c->http_listen);
                        c->http_listen = v;
                        return 1;
                }
                if (streq(key, "MetricsAuth"))
                        return parse_bool(st, key, value, &c->http_metrics_auth);
                if (streq(key, "MaxBodyBytes")) {
                        uint64_t v;
                        if (parse_size(value, &v) < 0 || v < 1024 || v > (1ULL << 30))
                                return fail(st, "MaxBodyBytes=%s is not a size between 1K and 1G%s", value, "");
                        c->http_max_body_bytes = v;
                        return 1;
                }
                return fail(st, "unknown key '%s' in section [%s]", key, section);
        }

        return fail(st, "unknown section [%s] (key '%s')", section, key);
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;
        free(c->node_name);
        free(c->devices);
        free(c->listen);
        free(c->advertise);
        free(c->http_listen);
        free(c);
        return NULL;
}

int config_new_default(Config **ret) {
        _cleanup_(config_freep) Config *c = calloc(1, sizeof *c);
        char host[256] = "localhost";

        if (!c)
                return -ENOMEM;
        (void) gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = 0;
        c->node_name = strdup(host);
        if (!c->node_name)
                return -ENOMEM;
        c->log_level = LOG_INFO;
        c->max_context = 8192;
        c->max_jobs = 64;
        c->max_tokens = 4096;
        c->max_prompt_bytes = 1 << 20;
        c->devices = strdup("auto");
        if (!c->devices)
                return -ENOMEM;
        if (asprintf(&c->listen, "0.0.0.0:%u", INFERD_CLUSTER_PORT) < 0)
                return -ENOMEM;
        c->probe_interval_usec = 1 * USEC_PER_SEC;
        c->probe_timeout_usec = 500 * USEC_PER_MSEC;
        c->indirect_probes = 4;
        c->suspect_timeout_usec = 4 * USEC_PER_SEC;
        c->remove_dead_after_usec = 600 * USEC_PER_SEC;
        c->http_listen = strdup(HTTP_DEFAULT_LISTEN);
        if (!c->http_listen)
                return -ENOMEM;
        c->http_max_body_bytes = 4 << 20;
        *ret = TAKE_PTR(c);
        return 0;
}

static int finish(ParseState *st, int r, Config **c, Config **ret, char **ret_error) {
        if (r == -2)
                return -ENOMEM;
        if (r != 0) {
                char *msg = NULL;
                if (asprintf(&msg, "%s:%d: %s", st->name, r,
                             st->error ?: "syntax error (expected [Section] or Key=Value)") < 0)
                        msg = NULL;
                free(st->error);
                if (ret_error)
                        *ret_error = msg;
                else
                        free(msg);
                return -EINVAL;
        }
        *ret = TAKE_PTR(*c);
        return 0;
}

int config_load(const char *path, bool missing_ok, Config **ret, char **ret_error) {
        _cleanup_(config_freep) Config *c = NULL;
        ParseState st = { .name = path };
        int r;

        r = config_new_default(&c);
        if (r < 0)
                return r;
        st.config = c;

        FILE *f = fopen(path, "re");
        if (!f) {
                r = negative_errno();
                if (r == -ENOENT && missing_ok) {
                        *ret = TAKE_PTR(c);
                        return 0;
                }
                if (ret_error && asprintf(ret_error, "%s: %s", path, strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        r = ini_parse_file(f, handler, &st);
        fclose(f);
        return finish(&st, r, &c, ret, ret_error);
}

int config_load_string(const char *text, const char *name, Config **ret, char **ret_error) {
        _cleanup_(config_freep) Config *c = NULL;
        ParseState st = { .name = name };
        int r;

        r = config_new_default(&c);
        if (r < 0)
                return r;
        st.config = c;
        r = ini_parse_string(text, handler, &st);
        return finish(&st, r, &c, ret, ret_error);
}
