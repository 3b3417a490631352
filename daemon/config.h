/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * /etc/inferd/inferd.conf, an INI file read with inih. Every key is
 * documented in inferd.conf(5); unknown sections and keys are errors, so a
 * typo is caught at start instead of silently ignored.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Config {
        char *node_name;        /* [Daemon] NodeName=, default: the host name */
        int log_level;          /* [Daemon] LogLevel=, default: info */
        char *devices;          /* [Engine] Devices=, default: "auto" (see gpu/select.h) */
        uint32_t max_context;   /* [Engine] MaxContext=, default 8192: cap on a job's context */
        uint32_t max_jobs;      /* [Limits] MaxJobs=, default 64: queued or running on this node */
        uint32_t max_tokens;    /* [Limits] MaxTokens=, default 4096: max_tokens of one job */
        uint64_t max_prompt_bytes; /* [Limits] MaxPromptBytes=, default 1M */

        /* [Cluster]: see inferd.conf(5). */
        char *listen;                   /* Listen=, default "0.0.0.0:7420" */
        char *advertise;                /* Advertise=, default NULL: Listen='s address, or a host address */
        uint64_t probe_interval_usec;   /* ProbeInterval=, default 1s */
        uint64_t probe_timeout_usec;    /* ProbeTimeout=, default 500ms */
        uint32_t indirect_probes;       /* IndirectProbes=, default 4 */
        uint64_t suspect_timeout_usec;  /* SuspectTimeout=, default 4s */
        uint64_t remove_dead_after_usec; /* RemoveDeadAfter=, default 10min */

        /* [HTTP]: the OpenAI-compatible API, see inferd.conf(5). */
        char *http_listen;              /* Listen=, default "127.0.0.1:8080"; NULL: no listener of our own */
        bool http_metrics_auth;         /* MetricsAuth=, default no: /metrics needs an API key */
        uint64_t http_max_body_bytes;   /* MaxBodyBytes=, default 4M */
} Config;

#define HTTP_DEFAULT_LISTEN "127.0.0.1:8080"

Config *config_free(Config *c);
static inline void config_freep(Config **c) {
        if (*c)
                config_free(*c);
}

/* A config with every default filled in. */
int config_new_default(Config **ret);

/*
 * Loads path over the defaults. A missing file is fine when missing_ok (the
 * packaged default path); otherwise it is an error. On a parse error returns
 * -EINVAL and, in *ret_error, "PATH:LINE: reason".
 */
int config_load(const char *path, bool missing_ok, Config **ret, char **ret_error);

/* The same from a string, for tests and the fuzzer. */
int config_load_string(const char *text, const char *name, Config **ret, char **ret_error);
