/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * What every inferctl verb gets: the parsed global options. inferctl.c owns
 * the verb table; each group of verbs lives in its own file (status.c,
 * admin.c) and exports its verb_*() functions here.
 */

#include <getopt.h>
#include <stdint.h>

#include "output.h"

/* Exit statuses, documented in inferctl(1). */
#define EXIT_USAGE 2

typedef enum CtlBusKind {
        CTL_BUS_SYSTEM,
        CTL_BUS_SESSION,
} CtlBusKind;

typedef struct Context {
        CtlBusKind bus_kind;
        JsonMode json;
        uint64_t timeout_usec;  /* for each method call; never infinite */
} Context;

/*
 * A verb gets its positional arguments only (options are parsed out, their
 * count checked against the table). It returns 0, a negative errno after
 * printing one line about it (exit status 1), or a positive exit status.
 */
typedef int (*verb_func_t)(Context *ctx, int argc, char *argv[]);

typedef struct Verb {
        const char *name;
        const char *args;               /* synopsis of the arguments: "[LEVEL]", or NULL */
        int min_args, max_args;
        verb_func_t run;
        const char *summary;            /* one line for "inferctl --help" */
        const char *description;        /* paragraph for "inferctl VERB --help", or NULL */

        /*
         * Options of this verb only, on top of the global ones. Their .val
         * must be >= VERB_OPTION_BASE; parse_option gets each one and returns
         * 0, or a negative errno after printing why (a usage error, exit 2).
         */
        const struct option *options;   /* terminated by {} like getopt_long's */
        const char *options_help;       /* lines for the verb's --help */
        int (*parse_option)(Context *ctx, int opt, const char *arg);
} Verb;

#define VERB_OPTION_BASE 0x200

/* status.c */
int verb_status(Context *ctx, int argc, char *argv[]);
int verb_devices(Context *ctx, int argc, char *argv[]);
int verb_version(Context *ctx, int argc, char *argv[]);

/* admin.c */
int verb_reload(Context *ctx, int argc, char *argv[]);

enum {
        ARG_BENCH_DEVICE = VERB_OPTION_BASE,
        ARG_BENCH_FILTER,
        ARG_BENCH_QUICK,
};
int verb_bench(Context *ctx, int argc, char *argv[]);
int bench_parse_option(Context *ctx, int opt, const char *arg);
int verb_log_level(Context *ctx, int argc, char *argv[]);
