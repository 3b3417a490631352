/* SPDX-License-Identifier: MIT */
/*
 * inferctl: the command line of inferd, a thin client of its D-Bus API.
 *
 * One table drives both dispatch and --help, as in wireguard-tools' wg.c: a
 * new verb is one entry here plus its function in the file of its group.
 * Options are read in two passes: the global ones up to the verb, then the
 * verb's arguments, where the global options are accepted too (so
 * "inferctl status --json" works) along with the verb's own.
 */
#include "build-config.h"

#include <assert.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format.h"
#include "inferctl.h"
#include "macro.h"

/* sd-bus's own default; also what the bus gives a call before it gives up. */
#define DEFAULT_TIMEOUT_USEC (25ULL * 1000000ULL)

static int verb_help(Context *ctx, int argc, char *argv[]);

/* The first verb is what "inferctl" alone runs. */
static const Verb verbs[] = {
        {
                .name = "status",
                .run = verb_status,
                .summary = "Show the node, its memory and its devices (default)",
                .description = "Show the node's name and ID, inferd's version and uptime, the host's\n"
                               "and the daemon's memory, and the memory used and free on each device.",
        },
        {
                .name = "devices",
                .run = verb_devices,
                .summary = "List the Vulkan devices inferd found",
                .description = "List the Vulkan devices inferd found at start-up, with their driver,\n"
                               "Vulkan version, device-local memory, subgroup size, and whether they\n"
                               "do 16-bit float and 8-bit integer arithmetic.",
        },
        {
                .name = "version",
                .run = verb_version,
                .summary = "Show the versions of inferctl and inferd",
                .description = "Show the version of inferctl, then the version of the running inferd.\n"
                               "The first is printed even when inferd cannot be reached.",
        },
        {
                .name = "models",
                .run = verb_models,
                .summary = "List the models inferd has loaded",
                .description = "List the models loaded on this node: their name, architecture, number of\n"
                               "parameters, quantization, file size, the device they run on and the\n"
                               "memory they take there, their context length, and whether they are\n"
                               "still loading or ready.",
        },
        {
                .name = "load",
                .args = "PATH",
                .min_args = 1,
                .max_args = 1,
                .run = verb_load,
                .summary = "Load a GGUF model file",
                .description = "Load the GGUF file at PATH onto a device and keep it there, under NAME\n"
                               "(default: the file's name without .gguf). PATH is made absolute here, as\n"
                               "inferd reads it from another directory. Waits until the model is ready,\n"
                               "up to 10 minutes (or $INFERD_TIMEOUT_SEC). Needs authorization (polkit\n"
                               "action org.inferd.infer1.load-model).",
                .options = (const struct option[]) {
                        { "name", required_argument, NULL, ARG_LOAD_NAME },
                        { "device", required_argument, NULL, ARG_LOAD_DEVICE },
                        { "context", required_argument, NULL, ARG_LOAD_CONTEXT },
                        {}
                },
                .options_help = "     --name=NAME         Name of the model (default: the file's base name)\n"
                                "     --device=N          Device index (default: the one with the most free memory)\n"
                                "     --context=N         Largest context a job may use, in tokens\n"
                                "                         (default: the model's, capped by the configuration)\n",
                .parse_option = load_parse_option,
        },
        {
                .name = "unload",
                .args = "NAME",
                .min_args = 1,
                .max_args = 1,
                .run = verb_unload,
                .summary = "Unload a model",
                .description = "Unload the model NAME and free its memory. Needs authorization (polkit\n"
                               "action org.inferd.infer1.unload-model).",
        },
        {
                .name = "run",
                .args = "MODEL PROMPT",
                .min_args = 2,
                .max_args = 2,
                .run = verb_run,
                .summary = "Generate text from a prompt",
                .description = "Generate text that continues PROMPT with the loaded model MODEL, and print\n"
                               "it as it comes. Ctrl-C stops the generation. With --json, print one object\n"
                               "at the end: the text, the token ids, the token counts, why it stopped and\n"
                               "the timings.",
                .options = (const struct option[]) {
                        SAMPLING_OPTIONS,
                        {}
                },
                .options_help = SAMPLING_OPTIONS_HELP,
                .parse_option = run_parse_option,
        },
        {
                .name = "chat",
                .args = "MODEL",
                .min_args = 1,
                .max_args = 1,
                .run = verb_chat,
                .summary = "Chat with a model",
                .description = "Read lines from standard input, one user message each, and print the\n"
                               "model's replies as they come. The whole conversation goes to the model\n"
                               "each turn, in its chat template. Empty lines are skipped; \"/exit\" or the\n"
                               "end of the input ends the chat. Ctrl-C stops a reply. With --json, print\n"
                               "one object per reply, as 'inferctl run --json' does.",
                .options = (const struct option[]) {
                        SAMPLING_OPTIONS,
                        { "system", required_argument, NULL, ARG_SYSTEM },
                        { "template", required_argument, NULL, ARG_TEMPLATE },
                        {}
                },
                .options_help = SAMPLING_OPTIONS_HELP
                                "     --system=TEXT       A system message to start the conversation with\n"
                                "     --template=NAME     Chat template: llama2, llama3, chatml, mistral or zephyr\n"
                                "                         (default: the one the model names)\n",
                .parse_option = run_parse_option,
        },
        {
                .name = "tokenize",
                .args = "MODEL TEXT",
                .min_args = 2,
                .max_args = 2,
                .run = verb_tokenize,
                .summary = "Show the tokens of a text",
                .description = "Split TEXT into the tokens of MODEL's vocabulary and print one line per\n"
                               "token: its id, a tab, and its text, with control characters escaped as\n"
                               "in C.",
                .options = (const struct option[]) {
                        { "special", no_argument, NULL, ARG_SPECIAL },
                        { "add-special", no_argument, NULL, ARG_ADD_SPECIAL },
                        {}
                },
                .options_help = "     --special           Read special tokens in TEXT (\"<s>\") as such\n"
                                "     --add-special       Add the tokens the model adds to a prompt (BOS)\n",
                .parse_option = tokenize_parse_option,
        },
        {
                .name = "reload",
                .run = verb_reload,
                .summary = "Reload inferd's configuration",
                .description = "Make inferd read its configuration file again. If the file is invalid,\n"
                               "inferd keeps the configuration it has and the error is printed.\n"
                               "Needs authorization (polkit action org.inferd.infer1.reload).",
        },
        {
                .name = "log-level",
                .args = "[LEVEL]",
                .min_args = 0,
                .max_args = 1,
                .run = verb_log_level,
                .summary = "Show or set inferd's log level",
                .description = "Without LEVEL, show inferd's log level. With LEVEL (emerg, alert, crit,\n"
                               "err, warning, notice, info or debug), set it until the next reload or\n"
                               "restart. Setting it needs authorization (polkit action\n"
                               "org.inferd.infer1.set-log-level).",
        },
        {
                .name = "bench",
                .args = "ops|MODEL",
                .min_args = 1,
                .max_args = 1,
                .run = verb_bench,
                .summary = "Measure the engine's kernels, or a model",
                .description = "'bench ops' runs every engine kernel (matrix x vector and matrix x matrix for\n"
                               "each weight type, embedding lookup, RMSNorm, RoPE, softmax, SwiGLU, add, mul,\n"
                               "argmax, top-k, attention prefill and decode) at LLM-sized shapes on one\n"
                               "Vulkan device, in this process, and prints GPU time, GB/s, GFLOP/s and the\n"
                               "fraction of the device's measured copy bandwidth.\n"
                               "\n"
                               "'bench MODEL' has inferd measure the loaded model MODEL as llama-bench does:\n"
                               "prompt processing (ppN) and generation (tgN) in tokens per second, the mean\n"
                               "and standard deviation over the repetitions.\n"
                               "\n"
                               "A benchmark: it prints figures only.",
                .options = (const struct option[]) {
                        { "device", required_argument, NULL, ARG_BENCH_DEVICE },
                        { "filter", required_argument, NULL, ARG_BENCH_FILTER },
                        { "quick", no_argument, NULL, ARG_BENCH_QUICK },
                        { "n-prompt", required_argument, NULL, 'p' },
                        { "n-gen", required_argument, NULL, 'n' },
                        { "repetitions", required_argument, NULL, 'r' },
                        {}
                },
                .short_options = "p:n:r:",
                .options_help = "     --device=N          Device index (ops; default: the first one Devices=auto picks)\n"
                                "     --filter=TEXT       Only kernels whose KERNEL_TYPE contains TEXT (ops)\n"
                                "     --quick             Fewer iterations (ops)\n"
                                "  -p --n-prompt=N        Prompt tokens to process (MODEL; default 512, 0: skip)\n"
                                "  -n --n-gen=N           Tokens to generate (MODEL; default 128, 0: skip)\n"
                                "  -r --repetitions=N     Runs of each test (MODEL; default 3)\n",
                .parse_option = bench_parse_option,
        },
        {
                .name = "cluster",
                .args = "[COMMAND]",
                .min_args = 0,
                .max_args = 3,
                .run = verb_cluster,
                .summary = "Form, join or leave a cluster; list its members",
                .description = "Manage the cluster this node is in. The nodes of a cluster share what they\n"
                               "serve: a request for a model that a peer has loaded is answered there.\n"
                               "\n"
                               "Commands:\n"
                               "  members             List the members with their state, address, round-trip\n"
                               "                      time, when they were last heard from, devices, models\n"
                               "                      and load (the default)\n"
                               "  init                Start a new cluster with this node as its first member\n"
                               "  token               Print a token that lets a node join this cluster; only\n"
                               "                      the token goes to standard output, its expiry to stderr\n"
                               "  join ADDRESS TOKEN  Join the cluster of the node at ADDRESS (HOST, HOST:PORT,\n"
                               "                      IPV6 or [IPV6]:PORT; the port defaults to 7420) with a\n"
                               "                      TOKEN made there by 'inferctl cluster token'\n"
                               "  leave               Leave the cluster\n"
                               "\n"
                               "init, token, join and leave need authorization (polkit action\n"
                               "org.inferd.infer1.manage-cluster). join waits up to 2 minutes.",
                .options = (const struct option[]) {
                        { "name", required_argument, NULL, ARG_CLUSTER_NAME },
                        { "ttl", required_argument, NULL, ARG_CLUSTER_TTL },
                        {}
                },
                .options_help = "     --name=NAME         Name of the new cluster (init; default: inferd)\n"
                                "     --ttl=SPAN          Validity of the token (token; default 1h, at most 7d)\n",
                .parse_option = cluster_parse_option,
        },
        {
                .name = "apikey",
                .args = "[COMMAND]",
                .min_args = 0,
                .max_args = 2,
                .run = verb_apikey,
                .summary = "Create, list or revoke keys for the HTTP API",
                .description = "Manage the keys that clients of inferd's HTTP API send, as\n"
                               "'Authorization: Bearer KEY'. inferd keeps only a hash of each key.\n"
                               "\n"
                               "Commands:\n"
                               "  list                List the keys: their ID, name and when they were made\n"
                               "                      (the default)\n"
                               "  create NAME         Make a key named NAME (1 to 64 printable ASCII\n"
                               "                      characters) and print it: only the key goes to standard\n"
                               "                      output, its ID to stderr. It is not shown again.\n"
                               "  revoke ID           Withdraw the key with this ID at once\n"
                               "\n"
                               "All three need authorization (polkit action\n"
                               "org.inferd.infer1.manage-api-keys).",
        },
        {
                .name = "help",
                .args = "[COMMAND]",
                .min_args = 0,
                .max_args = 1,
                .run = verb_help,
                .summary = "Show this help, or a command's",
        },
};

enum {
        ARG_VERSION = 0x100,
        ARG_BUS,
        ARG_JSON,
};
static_assert(ARG_JSON < VERB_OPTION_BASE, "global options collide with verb options");

static const struct option global_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, ARG_VERSION },
        { "bus", required_argument, NULL, ARG_BUS },
        { "json", optional_argument, NULL, ARG_JSON },
        {}
};

static const char global_options_help[] =
        "  -h --help              Show this help\n"
        "     --version           Show inferctl's version\n"
        "     --bus=system|session\n"
        "                         Talk to inferd on this bus (default: system,\n"
        "                         or $INFERD_BUS)\n"
        "     --json[=pretty|short]\n"
        "                         Print JSON instead of text (pretty on a terminal)\n";

static const Verb *verb_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(verbs[i].name, name))
                        return verbs + i;
        return NULL;
}

static void help(void) {
        int w = 0;

        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                w = MAX(w, (int) (strlen(verbs[i].name) + (verbs[i].args ? 1 + strlen(verbs[i].args) : 0)));

        printf("Usage: inferctl [OPTIONS] [COMMAND] [ARGS...]\n"
               "\n"
               "Query and control inferd, the inference daemon, over D-Bus.\n"
               "\n"
               "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                const Verb *v = verbs + i;
                int n = printf("  %s%s%s", v->name, v->args ? " " : "", v->args ?: "");
                printf("%*s  %s\n", MAX(w + 2 - n, 0), "", v->summary);
        }
        printf("\n"
               "Options:\n"
               "%s"
               "\n"
               "Run 'inferctl COMMAND --help' for a command's help. See inferctl(1).\n",
               global_options_help);
}

static void help_verb(const Verb *v) {
        printf("Usage: inferctl [OPTIONS] %s%s%s\n"
               "\n"
               "%s\n"
               "\n"
               "Options:\n"
               "%s%s",
               v->name, v->args ? " " : "", v->args ?: "",
               v->description ?: v->summary,
               v->options_help ?: "", global_options_help);
}

const SubCommand *subcommand_find(const char *verb, const SubCommand *table, size_t n, int argc, char *argv[]) {
        const char *name = argc > 0 ? argv[0] : table[0].name;

        for (size_t i = 0; i < n; i++) {
                if (!streq(table[i].name, name))
                        continue;
                if (argc > 0 && argc - 1 != table[i].n_args) {
                        (void) ctl_error_errno(EINVAL, "%s arguments for '%s %s'; see 'inferctl %s --help'.",
                                               argc - 1 < table[i].n_args ? "missing" : "too many", verb, name, verb);
                        return NULL;
                }
                return &table[i];
        }
        (void) ctl_error_errno(EINVAL, "unknown %s command '%s'; see 'inferctl %s --help'.", verb, name, verb);
        return NULL;
}

static int verb_help(Context *ctx, int argc, char *argv[]) {
        const Verb *v;

        if (argc == 0) {
                help();
                return 0;
        }
        v = verb_find(argv[0]);
        if (!v) {
                (void) ctl_error_errno(EINVAL, "unknown command '%s'; see 'inferctl --help'.", argv[0]);
                return EXIT_USAGE;
        }
        help_verb(v);
        return 0;
}

static int parse_bus_kind(const char *s, CtlBusKind *ret) {
        if (streq(s, "system"))
                *ret = CTL_BUS_SYSTEM;
        else if (streq(s, "session") || streq(s, "user"))
                *ret = CTL_BUS_SESSION;
        else
                return -EINVAL;
        return 0;
}

/* Options override the environment, so this runs first. */
static int parse_environment(Context *ctx) {
        const char *e;
        int r;

        e = getenv("INFERD_BUS");
        if (e && *e && parse_bus_kind(e, &ctx->bus_kind) < 0)
                return ctl_error_errno(EINVAL, "invalid $INFERD_BUS=%s: expected 'system' or 'session'.", e);

        /* For scripts on slow machines; a call always has a limit, so 0 is refused. */
        e = getenv("INFERD_TIMEOUT_SEC");
        if (e && *e) {
                uint64_t usec;

                r = parse_timespan(e, &usec);
                if (r < 0 || usec == 0)
                        return ctl_error_errno(EINVAL, "invalid $INFERD_TIMEOUT_SEC=%s: expected a positive "
                                               "number of seconds, or a time span like '2min'.", e);
                ctx->timeout_usec = usec;
                ctx->timeout_set = true;
        }
        return 0;
}

/* A verb's own option: a long one past ours, or a letter it lists in short_options. */
static bool is_verb_option(const Verb *v, int c) {
        if (c >= VERB_OPTION_BASE)
                return true;
        return c > ' ' && c < 0x7f && c != ':' && v->short_options && strchr(v->short_options, c);
}

/*
 * With verb == NULL, reads global options up to the first non-option (the
 * verb); otherwise reads a verb's arguments, where options may come anywhere.
 * Returns 1 to go on with the arguments from *ret_optind, 0 when it printed
 * help or the version, or a negative errno after printing a usage error.
 */
static int parse_options(Context *ctx, const Verb *verb, int argc, char *argv[], int *ret_optind) {
        struct option options[ELEMENTSOF(global_options) + 32];
        const char *hint = verb ? verb->name : NULL;
        char optstring[32];
        size_t n = 0;
        int c, r;

        for (const struct option *o = global_options; o->name; o++)
                options[n++] = *o;
        for (const struct option *o = verb ? verb->options : NULL; o && o->name; o++) {
                assert(n < ELEMENTSOF(options) - 1);
                assert(verb->parse_option && is_verb_option(verb, o->val));
                options[n++] = *o;
        }
        options[n] = (struct option) {};

        /* A verb's short options come after ours; "h" stays --help, ':' must not be one. */
        assert(!verb || !verb->short_options || !strpbrk(verb->short_options, "h-+W"));
        r = snprintf(optstring, sizeof optstring, "%s:h%s", verb ? "" : "+",
                     verb && verb->short_options ? verb->short_options : "");
        assert(r > 0 && (size_t) r < sizeof optstring);

        /* Our own messages, with a hint; optind = 0 makes getopt start afresh for the second pass. */
        opterr = 0;
        optind = 0;
        while ((c = getopt_long(argc, argv, optstring, options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        if (verb)
                                help_verb(verb);
                        else
                                help();
                        return 0;

                case ARG_VERSION:
                        printf("inferctl %s\n", PACKAGE_VERSION);
                        return 0;

                case ARG_BUS:
                        if (parse_bus_kind(optarg, &ctx->bus_kind) < 0)
                                return ctl_error_errno(EINVAL, "invalid --bus=%s: expected 'system' or 'session'.",
                                                       optarg);
                        break;

                case ARG_JSON:
                        if (!optarg)
                                ctx->json = isatty(STDOUT_FILENO) > 0 ? JSON_PRETTY : JSON_SHORT;
                        else if (streq(optarg, "pretty"))
                                ctx->json = JSON_PRETTY;
                        else if (streq(optarg, "short"))
                                ctx->json = JSON_SHORT;
                        else
                                return ctl_error_errno(EINVAL, "invalid --json=%s: expected 'pretty' or 'short'.",
                                                       optarg);
                        break;

                case ':':
                        return ctl_error_errno(EINVAL, "option '%s' needs an argument; see 'inferctl%s%s --help'.",
                                               argv[optind - 1], hint ? " " : "", hint ?: "");

                case '?':
                        /* "--help=x": getopt says '?' for an argument to an option without one. */
                        if (strncmp(argv[optind - 1], "--", 2) == 0 && strchr(argv[optind - 1], '='))
                                for (const struct option *o = options; o->name; o++)
                                        if (o->has_arg == no_argument &&
                                            strncmp(argv[optind - 1] + 2, o->name, strlen(o->name)) == 0 &&
                                            argv[optind - 1][2 + strlen(o->name)] == '=')
                                                return ctl_error_errno(EINVAL, "option '--%s' takes no argument; "
                                                                       "see 'inferctl%s%s --help'.",
                                                                       o->name, hint ? " " : "", hint ?: "");
                        if (optopt > 0 && optopt < 0x100 && strncmp(argv[optind - 1], "--", 2) != 0)
                                return ctl_error_errno(EINVAL, "unknown option '-%c'; see 'inferctl%s%s --help'.",
                                                       optopt, hint ? " " : "", hint ?: "");
                        return ctl_error_errno(EINVAL, "unknown option '%s'; see 'inferctl%s%s --help'.",
                                               argv[optind - 1], hint ? " " : "", hint ?: "");

                default:
                        assert(verb && verb->parse_option && is_verb_option(verb, c));
                        r = verb->parse_option(ctx, c, optarg);
                        if (r < 0)
                                return r;
                }

        *ret_optind = optind;
        return 1;
}

int main(int argc, char *argv[]) {
        Context ctx = {
                .bus_kind = CTL_BUS_SYSTEM,
                .json = JSON_OFF,
                .timeout_usec = DEFAULT_TIMEOUT_USEC,
        };
        const Verb *verb = verbs;
        int r, n_args = 0, i;
        char **args = NULL;

        r = parse_environment(&ctx);
        if (r < 0)
                return EXIT_USAGE;
        r = parse_options(&ctx, NULL, argc, argv, &i);
        if (r <= 0)
                return r < 0 ? EXIT_USAGE : EXIT_SUCCESS;

        if (i < argc) {
                int j;

                verb = verb_find(argv[i]);
                if (!verb) {
                        (void) ctl_error_errno(EINVAL, "unknown command '%s'; see 'inferctl --help'.", argv[i]);
                        return EXIT_USAGE;
                }

                /* The verb's name is argv[0] of this pass; getopt skips it. */
                r = parse_options(&ctx, verb, argc - i, argv + i, &j);
                if (r <= 0)
                        return r < 0 ? EXIT_USAGE : EXIT_SUCCESS;
                args = argv + i + j;
                n_args = argc - i - j;
        }

        if (n_args < verb->min_args || n_args > verb->max_args) {
                (void) ctl_error_errno(EINVAL, "%s arguments for '%s'; see 'inferctl %s --help'.",
                                       n_args < verb->min_args ? "missing" : "too many", verb->name, verb->name);
                return EXIT_USAGE;
        }

        r = verb->run(&ctx, n_args, args);

        /* A full disk or a closed pipe must not look like success. */
        if (fflush(stdout) != 0 || ferror(stdout)) {
                (void) ctl_error_errno(errno ?: EIO, "Failed to write the output: %m");
                return EXIT_FAILURE;
        }
        if (r < 0)
                return EXIT_FAILURE;
        return r;
}
