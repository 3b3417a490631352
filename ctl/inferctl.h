/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * What every inferctl verb gets: the parsed global options. inferctl.c owns
 * the verb table; each group of verbs lives in its own file (status.c,
 * admin.c, models.c, run.c, bench.c, cluster.c, apikey.c) and exports its verb_*()
 * functions here.
 */

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "output.h"

/* Exit statuses, documented in inferctl(1). */
#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130    /* 128 + SIGINT, as shells report it */

typedef enum CtlBusKind {
        CTL_BUS_SYSTEM,
        CTL_BUS_SESSION,
} CtlBusKind;

typedef struct Context {
        CtlBusKind bus_kind;
        JsonMode json;
        uint64_t timeout_usec;  /* for each method call; never infinite */
        bool timeout_set;       /* from $INFERD_TIMEOUT_SEC, not the default */
} Context;

/* A verb made of commands ("cluster join ADDRESS TOKEN"): the first entry is what the verb alone runs. */
typedef struct SubCommand {
        const char *name;
        int n_args;
        int (*run)(Context *ctx, char *argv[]);
} SubCommand;

/* The entry argv[0] names (table[0] when argc is 0) with its arguments counted; NULL after a usage
 * error was printed. */
const SubCommand *subcommand_find(const char *verb, const SubCommand *table, size_t n, int argc, char *argv[]);

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
         * must be >= VERB_OPTION_BASE, or a letter of short_options (then
         * "-p 5" and the long option are the same); parse_option gets each
         * one and returns 0, or a negative errno after printing why (a
         * usage error, exit 2).
         */
        const struct option *options;   /* terminated by {} like getopt_long's */
        const char *short_options;      /* getopt's syntax: "p:n:r:", or NULL */
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
int verb_log_level(Context *ctx, int argc, char *argv[]);

/* models.c */
enum {
        ARG_LOAD_NAME = VERB_OPTION_BASE,
        ARG_LOAD_DEVICE,
        ARG_LOAD_CONTEXT,
};
int verb_load(Context *ctx, int argc, char *argv[]);
int load_parse_option(Context *ctx, int opt, const char *arg);
int verb_unload(Context *ctx, int argc, char *argv[]);
int verb_models(Context *ctx, int argc, char *argv[]);

/* run.c: run and chat share the sampling options. */
enum {
        ARG_MAX_TOKENS = VERB_OPTION_BASE,
        ARG_TEMP,
        ARG_TOP_K,
        ARG_TOP_P,
        ARG_MIN_P,
        ARG_REPEAT_PENALTY,
        ARG_REPEAT_LAST_N,
        ARG_SEED,
        ARG_STOP,
        ARG_SYSTEM,
        ARG_TEMPLATE,
        ARG_SPECIAL,
        ARG_ADD_SPECIAL,
};
#define SAMPLING_OPTIONS                                                        \
        { "max-tokens", required_argument, NULL, ARG_MAX_TOKENS },              \
        { "temp", required_argument, NULL, ARG_TEMP },                          \
        { "top-k", required_argument, NULL, ARG_TOP_K },                        \
        { "top-p", required_argument, NULL, ARG_TOP_P },                        \
        { "min-p", required_argument, NULL, ARG_MIN_P },                        \
        { "repeat-penalty", required_argument, NULL, ARG_REPEAT_PENALTY },      \
        { "repeat-last-n", required_argument, NULL, ARG_REPEAT_LAST_N },        \
        { "seed", required_argument, NULL, ARG_SEED },                          \
        { "stop", required_argument, NULL, ARG_STOP }
#define SAMPLING_OPTIONS_HELP                                                                   \
        "     --max-tokens=N      Generate at most N tokens (default 256)\n"                     \
        "     --temp=T            Temperature, 0 for greedy decoding (default 0.8)\n"            \
        "     --top-k=K           Sample from the K most likely tokens (0: all)\n"               \
        "     --top-p=P           Sample from the smallest set of probability >= P (0..1)\n"     \
        "     --min-p=P           Drop tokens less likely than P x the top one (0..1)\n"         \
        "     --repeat-penalty=R  Penalize recently generated tokens (1: off)\n"                 \
        "     --repeat-last-n=N   How many recent tokens the penalty looks at\n"                 \
        "     --seed=S            Seed of the sampler; a fixed one makes runs reproducible\n"    \
        "     --stop=TEXT         Stop when TEXT is generated (may be repeated)\n"
int verb_run(Context *ctx, int argc, char *argv[]);
int verb_chat(Context *ctx, int argc, char *argv[]);
int run_parse_option(Context *ctx, int opt, const char *arg);
int verb_tokenize(Context *ctx, int argc, char *argv[]);
int tokenize_parse_option(Context *ctx, int opt, const char *arg);

/* bench.c: "bench ops" in this process, "bench MODEL" in the daemon. */
enum {
        ARG_BENCH_DEVICE = VERB_OPTION_BASE,
        ARG_BENCH_FILTER,
        ARG_BENCH_QUICK,
};
int verb_bench(Context *ctx, int argc, char *argv[]);
int bench_parse_option(Context *ctx, int opt, const char *arg);

/* cluster.c: "cluster init|token|join|leave|members", one verb with its own commands. */
enum {
        ARG_CLUSTER_NAME = VERB_OPTION_BASE,
        ARG_CLUSTER_TTL,
};
int verb_cluster(Context *ctx, int argc, char *argv[]);
int cluster_parse_option(Context *ctx, int opt, const char *arg);

/* apikey.c: "apikey create|list|revoke", the keys of the HTTP API. */
int verb_apikey(Context *ctx, int argc, char *argv[]);
