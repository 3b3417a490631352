/* SPDX-License-Identifier: MIT */
/*
 * Verbs that use a loaded model: run MODEL PROMPT, chat MODEL, tokenize MODEL
 * TEXT. None needs authorization.
 *
 * run and chat start a job (Generate, Chat) and follow it: inferd sends the
 * job's Piece signals to us alone, then one Finished. The matches for them
 * are installed before the call, not after the reply: a signal may come right
 * behind the reply, and sd-bus runs a match only on messages read after its
 * AddMatch completed (even those still in its read queue are skipped). The
 * job's path and the daemon's unique name come with the reply, and a signal
 * counts only if it comes from that name for that path, so that nobody else
 * on the bus can speak for the job. Nothing is dispatched before the reply is
 * in, so the filter is always known when a signal is looked at. If the daemon
 * leaves the bus (NameOwnerChanged), the job is over.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "bus.h"
#include "inferctl.h"
#include "macro.h"
#include "time-util.h"

/* After Ctrl-C, how long to wait for the daemon to confirm the cancellation. */
#define CANCEL_WAIT_USEC (3ULL * 1000000ULL)

/* Sampling options, as the user gave them; unset ones are left to the daemon's defaults. */
static int64_t arg_max_tokens = -1;
static double arg_temperature = NAN;
static int64_t arg_top_k = -1;
static double arg_top_p = NAN;
static double arg_min_p = NAN;
static double arg_repeat_penalty = NAN;
static int64_t arg_repeat_last_n = -1;
static bool arg_seed_set;
static uint64_t arg_seed;
static const char **arg_stop;   /* point into argv */
static size_t arg_n_stop;
static const char *arg_system;
static const char *arg_template;

/* tokenize */
static bool arg_parse_special;
static bool arg_add_special;

static void free_stop(void) {
        free(arg_stop);
        arg_stop = NULL;
        arg_n_stop = 0;
}

/* A whole number in [min, max], all of s: no sign, no spaces, no suffix. */
static int parse_unsigned(const char *s, const char *what, uint64_t min, uint64_t max, uint64_t *ret) {
        unsigned long long v;
        char *end;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || end == s || *end || !(*s >= '0' && *s <= '9') || v < min || v > max)
                return ctl_error_errno(EINVAL, "invalid %s=%s: expected a whole number from %" PRIu64 " to %" PRIu64 ".",
                                       what, s, min, max);
        *ret = v;
        return 0;
}

/* A finite number in [min, max] (max may be INFINITY); min_open excludes min itself. */
static int parse_number(const char *s, const char *what, double min, bool min_open, double max, double *ret) {
        char range[64];
        double v;
        char *end;

        errno = 0;
        v = strtod(s, &end);
        if (errno || end == s || *end || !isfinite(v) || v < min || (min_open && v == min) || v > max) {
                if (isinf(max))
                        snprintf(range, sizeof range, "%s %g", min_open ? "above" : "of at least", min);
                else
                        snprintf(range, sizeof range, "from %g to %g", min, max);
                return ctl_error_errno(EINVAL, "invalid %s=%s: expected a number %s.", what, s, range);
        }
        *ret = v;
        return 0;
}

int run_parse_option(Context *ctx, int opt, const char *arg) {
        uint64_t u;
        int r;

        switch (opt) {
        case ARG_MAX_TOKENS:
                r = parse_unsigned(arg, "--max-tokens", 1, UINT32_MAX, &u);
                arg_max_tokens = (int64_t) u;
                return r;
        case ARG_TEMP:
                return parse_number(arg, "--temp", 0, false, INFINITY, &arg_temperature);
        case ARG_TOP_K:
                r = parse_unsigned(arg, "--top-k", 0, INT32_MAX, &u);
                arg_top_k = (int64_t) u;
                return r;
        case ARG_TOP_P:
                return parse_number(arg, "--top-p", 0, false, 1, &arg_top_p);
        case ARG_MIN_P:
                return parse_number(arg, "--min-p", 0, false, 1, &arg_min_p);
        case ARG_REPEAT_PENALTY:
                return parse_number(arg, "--repeat-penalty", 0, true, INFINITY, &arg_repeat_penalty);
        case ARG_REPEAT_LAST_N:
                r = parse_unsigned(arg, "--repeat-last-n", 0, UINT32_MAX, &u);
                arg_repeat_last_n = (int64_t) u;
                return r;
        case ARG_SEED:
                r = parse_unsigned(arg, "--seed", 0, UINT64_MAX, &arg_seed);
                arg_seed_set = r >= 0;
                return r;
        case ARG_STOP: {
                const char **a;

                if (!*arg)
                        return ctl_error_errno(EINVAL, "invalid --stop=: expected a text to stop at.");
                if (!utf8_is_valid(arg))
                        return ctl_error_errno(EINVAL, "invalid --stop: the text is not valid UTF-8.");
                a = reallocarray(arg_stop, arg_n_stop + 1, sizeof(char *));
                if (!a)
                        return ctl_oom();
                arg_stop = a;
                arg_stop[arg_n_stop++] = arg;
                return 0;
        }
        case ARG_SYSTEM:
                if (!utf8_is_valid(arg))
                        return ctl_error_errno(EINVAL, "invalid --system: the text is not valid UTF-8.");
                arg_system = arg;
                return 0;
        case ARG_TEMPLATE:
                /* The daemon knows its templates (InvalidArgument), so the list lives in one place. */
                if (!*arg || !utf8_is_valid(arg))
                        return ctl_error_errno(EINVAL, "invalid --template=%s: expected a template name.", arg);
                arg_template = arg;
                return 0;
        }
        return -EINVAL;
}

int tokenize_parse_option(Context *ctx, int opt, const char *arg) {
        switch (opt) {
        case ARG_SPECIAL:
                arg_parse_special = true;
                return 0;
        case ARG_ADD_SPECIAL:
                arg_add_special = true;
                return 0;
        }
        return -EINVAL;
}

/* The options dictionary of Generate and Chat, from the arguments. */
static int append_options(sd_bus_message *m, bool chat) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg_max_tokens >= 0)
                r = sd_bus_message_append(m, "{sv}", "max_tokens", "u", (uint32_t) arg_max_tokens);
        if (r >= 0 && !isnan(arg_temperature))
                r = sd_bus_message_append(m, "{sv}", "temperature", "d", arg_temperature);
        if (r >= 0 && arg_top_k >= 0)
                r = sd_bus_message_append(m, "{sv}", "top_k", "i", (int32_t) arg_top_k);
        if (r >= 0 && !isnan(arg_top_p))
                r = sd_bus_message_append(m, "{sv}", "top_p", "d", arg_top_p);
        if (r >= 0 && !isnan(arg_min_p))
                r = sd_bus_message_append(m, "{sv}", "min_p", "d", arg_min_p);
        if (r >= 0 && !isnan(arg_repeat_penalty))
                r = sd_bus_message_append(m, "{sv}", "repeat_penalty", "d", arg_repeat_penalty);
        if (r >= 0 && arg_repeat_last_n >= 0)
                r = sd_bus_message_append(m, "{sv}", "repeat_last_n", "u", (uint32_t) arg_repeat_last_n);
        if (r >= 0 && arg_seed_set)
                r = sd_bus_message_append(m, "{sv}", "seed", "t", arg_seed);
        if (r >= 0 && arg_n_stop > 0) {
                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", "stop");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'v', "as");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'a', "s");
                for (size_t i = 0; r >= 0 && i < arg_n_stop; i++)
                        r = sd_bus_message_append(m, "s", arg_stop[i]);
                for (int i = 0; r >= 0 && i < 3; i++)
                        r = sd_bus_message_close_container(m);
        }
        if (r >= 0 && chat && arg_template)
                r = sd_bus_message_append(m, "{sv}", "template", "s", arg_template);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

/* ---- following a job ---- */

typedef struct Job {
        char *path;
        char *daemon;                   /* the daemon's unique name */
        sd_bus_slot *signals_slot;
        sd_bus_slot *owner_slot;        /* NameOwnerChanged of org.inferd.infer1 */
        bool print;                     /* stream the text to stdout as it comes */

        char *text;                     /* all pieces so far, NUL-terminated */
        size_t n_text;
        int32_t *tokens;
        size_t n_tokens;

        bool finished;
        bool daemon_gone;
        int parse_error;                /* a signal that did not have the promised arguments */
        char *finish_reason;
        char *error;
        uint32_t prompt_tokens;
        uint32_t generated_tokens;
        uint64_t prompt_usec;
        uint64_t generate_usec;
} Job;

static void job_done(Job *j) {
        sd_bus_slot_unref(j->signals_slot);
        sd_bus_slot_unref(j->owner_slot);
        free(j->path);
        free(j->daemon);
        free(j->text);
        free(j->tokens);
        free(j->finish_reason);
        free(j->error);
        *j = (Job) {};
}

static int job_add_piece(Job *j, const char *text, const int32_t *tokens, size_t n_tokens) {
        size_t len = strlen(text);

        if (len > 0 || !j->text) {
                char *t = realloc(j->text, j->n_text + len + 1);
                if (!t)
                        return -ENOMEM;
                memcpy(t + j->n_text, text, len + 1);
                j->text = t;
                j->n_text += len;
        }
        if (n_tokens > 0) {
                int32_t *a = reallocarray(j->tokens, j->n_tokens + n_tokens, sizeof(int32_t));
                if (!a)
                        return -ENOMEM;
                memcpy(a + j->n_tokens, tokens, n_tokens * sizeof(int32_t));
                j->tokens = a;
                j->n_tokens += n_tokens;
        }
        return 0;
}

static int on_job_signal(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Job *j = userdata;
        int r;

        /* Before the reply, nothing is dispatched; another job's or another peer's signals do not count. */
        if (j->finished || !j->path || !streq_ptr(sd_bus_message_get_path(m), j->path) ||
            !streq_ptr(sd_bus_message_get_sender(m), j->daemon))
                return 0;

        if (sd_bus_message_is_signal(m, INFERD_JOB_IFACE, "Piece")) {
                const void *tokens;
                const char *text;
                size_t size = 0;

                r = sd_bus_message_read(m, "s", &text);
                if (r >= 0)
                        r = sd_bus_message_read_array(m, 'i', &tokens, &size);
                if (r < 0) {
                        j->parse_error = r;
                        return 0;
                }
                r = job_add_piece(j, text, tokens, size / sizeof(int32_t));
                if (r < 0) {
                        j->parse_error = r;
                        return 0;
                }
                if (j->print && *text) {
                        fputs(text, stdout);
                        fflush(stdout);
                }

        } else if (sd_bus_message_is_signal(m, INFERD_JOB_IFACE, "Finished")) {
                const char *reason, *error;

                r = sd_bus_message_read(m, "suutts", &reason, &j->prompt_tokens, &j->generated_tokens,
                                        &j->prompt_usec, &j->generate_usec, &error);
                if (r < 0) {
                        j->parse_error = r;
                        return 0;
                }
                j->finish_reason = strdup(reason);
                j->error = strdup(error);
                if (!j->finish_reason || !j->error) {
                        j->parse_error = -ENOMEM;
                        return 0;
                }
                j->finished = true;
        }
        return 0;
}

/*
 * The daemon that runs the job left the bus, or gave its name up: nobody will
 * finish the job. Changes before it took the name (activation, a restart
 * while we called) do not count.
 */
static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        const char *name, *old_owner, *new_owner;
        Job *j = userdata;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0)
                return 0;
        if (j->daemon && streq(old_owner, j->daemon))
                j->daemon_gone = true;
        return 0;
}

/*
 * Sends m (Generate or Chat) and sets up *j to follow the job it starts.
 * Prints why on failure.
 */
static int job_start(sd_bus *bus, const Context *ctx, sd_bus_message *m, bool print, Job *j) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *method = sd_bus_message_get_member(m), *path, *sender;
        int r;

        *j = (Job) { .print = print };

        /* Before the call: see the top of this file. on_job_signal() filters by path and sender. */
        r = sd_bus_add_match(bus, &j->signals_slot,
                             "type='signal',sender='" INFERD_BUS_NAME "',interface='" INFERD_JOB_IFACE "',"
                             "path_namespace='" INFERD_JOB_PATH_PREFIX "'",
                             on_job_signal, j);
        if (r < 0)
                return ctl_error_errno(r, "Failed to watch the job's signals: %m");
        r = sd_bus_add_match(bus, &j->owner_slot,
                             "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                             "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='" INFERD_BUS_NAME "'",
                             on_name_owner_changed, j);
        if (r < 0)
                return ctl_error_errno(r, "Failed to watch inferd on the bus: %m");

        r = ctl_bus_send(bus, ctx, m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return ctl_bus_log_parse_error(r, method);
        /* Never NULL on a bus; else the well-known name, which sd-bus matches less strictly. */
        sender = sd_bus_message_get_sender(reply) ?: INFERD_BUS_NAME;

        j->path = strdup(path);
        j->daemon = strdup(sender);
        if (!j->path || !j->daemon)
                return ctl_oom();
        return 0;
}

static bool connection_lost(int r) {
        return r == -ECONNRESET || r == -ENOTCONN || r == -EPIPE || r == -ESHUTDOWN;
}

/*
 * Processes the bus until the job finishes (0), the daemon goes (-ESRCH), a
 * signal arrives on sigfd (its number), or deadline (CLOCK_MONOTONIC, or
 * UINT64_MAX) passes (-ETIMEDOUT). Else a negative errno: the connection
 * broke (or a signal was not what the API promises: -EBADMSG and the like).
 */
static int read_signal(int sigfd) {
        struct signalfd_siginfo si;

        if (sigfd >= 0 && read(sigfd, &si, sizeof si) == (ssize_t) sizeof si)
                return (int) si.ssi_signo;
        return 0;
}

static int job_wait(sd_bus *bus, Job *j, int sigfd, uint64_t deadline) {
        for (unsigned n = 1;; n++) {
                struct pollfd p[2];
                uint64_t until, t, now;
                int r, events, timeout_ms = -1;

                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return r;
                if (j->parse_error < 0)
                        return j->parse_error;
                if (j->finished)
                        return 0;
                if (j->daemon_gone)
                        return -ESRCH;
                if (r > 0) {
                        /* A fast model may keep the queue full: Ctrl-C must not wait for a pause. */
                        if (n % 64 == 0 && (r = read_signal(sigfd)) > 0)
                                return r;
                        continue;
                }

                events = sd_bus_get_events(bus);
                if (events < 0)
                        return events;
                r = sd_bus_get_timeout(bus, &t);
                if (r < 0)
                        return r;
                until = MIN(deadline, t);
                now = now_usec(CLOCK_MONOTONIC);
                if (deadline != UINT64_MAX && now >= deadline)
                        return -ETIMEDOUT;
                if (until != UINT64_MAX)
                        timeout_ms = until > now ? (int) MIN((until - now + 999) / 1000, (uint64_t) INT_MAX) : 0;

                p[0] = (struct pollfd) { .fd = sd_bus_get_fd(bus), .events = (short) events };
                p[1] = (struct pollfd) { .fd = sigfd, .events = POLLIN };
                r = poll(p, sigfd >= 0 ? 2 : 1, timeout_ms);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (sigfd >= 0 && (p[1].revents & POLLIN) && (r = read_signal(sigfd)) > 0)
                        return r;
        }
}

/* Asks the daemon to stop the job; it answers with Finished("cancelled"). Errors do not matter here. */
static void job_cancel(sd_bus *bus, const Job *j) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

        if (sd_bus_message_new_method_call(bus, &m, j->daemon, j->path, INFERD_JOB_IFACE, "Cancel") < 0)
                return;
        (void) sd_bus_call(bus, m, CANCEL_WAIT_USEC, NULL, NULL);
}

/*
 * Follows the job until it ends. Returns 0 when Finished came (whatever its
 * reason), 128 + the signal when the user interrupted it (the job is then
 * cancelled), or a negative errno after printing why.
 */
static int job_follow(sd_bus *bus, const Context *ctx, Job *j, int sigfd) {
        int r;

        r = job_wait(bus, j, sigfd, UINT64_MAX);
        if (r > 0) {
                int sig = r;

                job_cancel(bus, j);
                /* A second Ctrl-C, or a daemon that does not answer, does not keep us. */
                (void) job_wait(bus, j, sigfd, now_usec(CLOCK_MONOTONIC) + CANCEL_WAIT_USEC);
                if (j->print)
                        putchar('\n');
                return 128 + sig;
        }
        if (r == 0)
                return 0;

        /* The error goes on a line of its own. */
        if (j->print && j->n_text > 0)
                putchar('\n');
        if (r == -ESRCH)
                return ctl_error_errno(r, "inferd stopped during the job");
        if (connection_lost(r))
                return ctl_error_errno(r, "inferd stopped during the job (lost the connection to the %s bus)",
                                       ctl_bus_name(ctx));
        if (r == j->parse_error && r != -ENOMEM)
                return ctl_error_errno(r, "Failed to read a signal of the job: %m (is inferd the same version as "
                                       "inferctl?)");
        return ctl_error_errno(r, "Failed to follow the job: %m");
}

/* Finished says how it went: "stop" and "length" are success, the rest is told in one line. */
static int job_result(const Job *j) {
        if (streq(j->finish_reason, "error"))
                return ctl_error_errno(EIO, "%s", *j->error ? j->error : "the job failed (inferd's log says why)");
        if (streq(j->finish_reason, "cancelled"))
                return ctl_error_errno(ECANCELED, "the job was cancelled before it finished");
        return 0;
}

static double per_second(uint64_t n, uint64_t usec) {
        return usec > 0 ? (double) n * 1e6 / (double) usec : 0.0;
}

static int job_print_json(const Context *ctx, const Job *j) {
        _cleanup_json_ json_t *tokens = json_array(), *v = NULL;

        if (!tokens)
                return ctl_oom();
        for (size_t i = 0; i < j->n_tokens; i++)
                if (json_array_append_new(tokens, json_integer(j->tokens[i])) < 0)
                        return ctl_oom();

        v = json_pack("{s:s%, s:O, s:I, s:I, s:s, s:{s:f, s:f, s:f, s:f}}",
                      "text", j->text ?: "", j->n_text,
                      "tokens", tokens,
                      "prompt_tokens", (json_int_t) j->prompt_tokens,
                      "generated_tokens", (json_int_t) j->generated_tokens,
                      "finish_reason", j->finish_reason,
                      "timings",
                      "prompt_ms", (double) j->prompt_usec / 1000.0,
                      "generate_ms", (double) j->generate_usec / 1000.0,
                      "prompt_tokens_per_sec", per_second(j->prompt_tokens, j->prompt_usec),
                      "generate_tokens_per_sec", per_second(j->generated_tokens, j->generate_usec));
        if (!v)
                return ctl_oom();
        return json_print(v, ctx->json);
}

/*
 * SIGINT and SIGTERM while a job runs: blocked, and read from the returned
 * fd, so that the job can be cancelled before we go. Outside of jobs they
 * keep their default action.
 */
static int signals_open(sigset_t *ret_mask) {
        int fd;

        sigemptyset(ret_mask);
        sigaddset(ret_mask, SIGINT);
        sigaddset(ret_mask, SIGTERM);
        fd = signalfd(-1, ret_mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (fd < 0)
                return ctl_error_errno(errno, "Failed to watch for Ctrl-C: %m");
        return fd;
}

static int check_utf8(const char *s, const char *what) {
        if (!utf8_is_valid(s)) {
                (void) ctl_error_errno(EINVAL, "%s is not valid UTF-8.", what);
                return EXIT_USAGE;
        }
        return 0;
}

int verb_run(Context *ctx, int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(job_done) Job j = {};
        _cleanup_close_ int sigfd = -1;
        sigset_t mask;
        int r;

        r = check_utf8(argv[0], "MODEL");
        if (r == 0)
                r = check_utf8(argv[1], "PROMPT");
        if (r != 0)
                goto finish;

        sigfd = signals_open(&mask);
        if (sigfd < 0) {
                r = sigfd;
                goto finish;
        }
        (void) sigprocmask(SIG_BLOCK, &mask, NULL);

        r = ctl_bus_open(ctx, false, &bus);
        if (r < 0)
                goto finish;
        r = ctl_bus_new_call(bus, INFERD_OBJECT_PATH, INFERD_MANAGER_IFACE, "Generate", &m);
        if (r < 0)
                goto finish;
        r = sd_bus_message_append(m, "ss", argv[0], argv[1]);
        if (r >= 0)
                r = append_options(m, false);
        if (r < 0) {
                r = ctl_error_errno(r, "Failed to append the arguments of Generate: %m");
                goto finish;
        }

        r = job_start(bus, ctx, m, ctx->json == JSON_OFF, &j);
        if (r < 0)
                goto finish;
        r = job_follow(bus, ctx, &j, sigfd);
        if (r != 0)
                goto finish;

        if (ctx->json == JSON_OFF)
                putchar('\n');
        r = job_result(&j);
        if (r >= 0 && ctx->json != JSON_OFF)
                r = job_print_json(ctx, &j);
finish:
        free_stop();
        return r;
}

/* The conversation so far: (role, content) pairs, as Chat takes them. */
typedef struct Conversation {
        const char **roles;     /* static strings */
        char **contents;
        size_t n;
} Conversation;

static void conversation_done(Conversation *c) {
        for (size_t i = 0; i < c->n; i++)
                free(c->contents[i]);
        free(c->roles);
        free(c->contents);
        *c = (Conversation) {};
}

/* Takes content, also on failure. */
static int conversation_add(Conversation *c, const char *role, char *content) {
        const char **r = reallocarray(c->roles, c->n + 1, sizeof(char *));
        if (r)
                c->roles = r;
        char **t = reallocarray(c->contents, c->n + 1, sizeof(char *));
        if (t)
                c->contents = t;
        if (!r || !t || !content) {
                free(content);
                return -ENOMEM;
        }
        c->roles[c->n] = role;
        c->contents[c->n++] = content;
        return 0;
}

/* One turn: sends the conversation, follows the reply. Returns as job_follow() does. */
static int chat_turn(sd_bus *bus, const Context *ctx, const char *model, const Conversation *c, int sigfd,
                     const sigset_t *mask, Job *j) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = ctl_bus_new_call(bus, INFERD_OBJECT_PATH, INFERD_MANAGER_IFACE, "Chat", &m);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", model);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(ss)");
        for (size_t i = 0; r >= 0 && i < c->n; i++)
                r = sd_bus_message_append(m, "(ss)", c->roles[i], c->contents[i]);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = append_options(m, true);
        if (r < 0)
                return ctl_error_errno(r, "Failed to append the arguments of Chat: %m");

        /* Ctrl-C stops the reply while one comes, and the chat while reading. */
        (void) sigprocmask(SIG_BLOCK, mask, NULL);
        r = job_start(bus, ctx, m, ctx->json == JSON_OFF, j);
        if (r >= 0)
                r = job_follow(bus, ctx, j, sigfd);
        (void) sigprocmask(SIG_UNBLOCK, mask, NULL);
        return r;
}

static bool is_blank(const char *s) {
        return s[strspn(s, " \t\r\n\v\f")] == 0;
}

int verb_chat(Context *ctx, int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(conversation_done) Conversation c = {};
        _cleanup_close_ int sigfd = -1;
        _cleanup_free_ char *line = NULL;
        size_t size = 0;
        sigset_t mask;
        bool tty = isatty(STDIN_FILENO) > 0;
        int r;

        r = check_utf8(argv[0], "MODEL");
        if (r != 0)
                goto finish;

        sigfd = signals_open(&mask);
        if (sigfd < 0) {
                r = sigfd;
                goto finish;
        }
        r = ctl_bus_open(ctx, false, &bus);
        if (r < 0)
                goto finish;

        if (arg_system) {
                r = conversation_add(&c, "system", strdup(arg_system));
                if (r < 0) {
                        r = ctl_oom();
                        goto finish;
                }
        }

        for (;;) {
                _cleanup_(job_done) Job j = {};
                ssize_t n;

                if (tty) {
                        fputs("> ", stdout);
                        fflush(stdout);
                }
                errno = 0;
                n = getline(&line, &size, stdin);
                if (n < 0) {
                        if (ferror(stdin)) {
                                r = ctl_error_errno(errno ?: EIO, "Failed to read standard input: %m");
                                goto finish;
                        }
                        if (tty)
                                putchar('\n');
                        break;
                }
                while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                        line[--n] = 0;
                if (streq(line, "/exit"))
                        break;
                if (is_blank(line))
                        continue;
                if ((size_t) n != strlen(line) || !utf8_is_valid(line)) {
                        r = ctl_error_errno(EINVAL, "the line is not valid UTF-8 text%s", tty ? "; try again." : ".");
                        if (tty)
                                continue;
                        goto finish;
                }

                r = conversation_add(&c, "user", strdup(line));
                if (r < 0) {
                        r = ctl_oom();
                        goto finish;
                }

                r = chat_turn(bus, ctx, argv[0], &c, sigfd, &mask, &j);
                if (r == 0) {
                        if (ctx->json == JSON_OFF)
                                putchar('\n');
                        r = job_result(&j);
                        if (r >= 0 && ctx->json != JSON_OFF)
                                r = job_print_json(ctx, &j);
                } else if (r > 0 && (!tty || r != 128 + SIGINT))
                        goto finish;

                /*
                 * At a terminal, Ctrl-C stops the reply only, and a turn that failed (a full
                 * context, say) is said and forgotten: the prompt comes back. A turn that gave
                 * nothing is as if it had not been sent.
                 */
                if (r < 0 || (r > 0 && j.n_text == 0)) {
                        if (!tty || sd_bus_is_open(bus) <= 0)
                                goto finish;
                        free(c.contents[--c.n]);
                        continue;
                }

                /* The reply, also a partial one, is part of the conversation now. */
                r = conversation_add(&c, "assistant", strdup(j.text ?: ""));
                if (r < 0) {
                        r = ctl_oom();
                        goto finish;
                }
        }
        r = 0;
finish:
        free_stop();
        return r;
}

/* Control characters as C writes them, so that every token is one line. */
static void print_escaped(const char *s) {
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;

                switch (c) {
                case '\a': fputs("\\a", stdout); break;
                case '\b': fputs("\\b", stdout); break;
                case '\t': fputs("\\t", stdout); break;
                case '\n': fputs("\\n", stdout); break;
                case '\v': fputs("\\v", stdout); break;
                case '\f': fputs("\\f", stdout); break;
                case '\r': fputs("\\r", stdout); break;
                case '\\': fputs("\\\\", stdout); break;
                default:
                        if (c < 0x20 || c == 0x7f)
                                printf("\\x%02x", c);
                        else
                                putchar(c);
                }
        }
}

int verb_tokenize(Context *ctx, int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_strv_free_ char **pieces = NULL;
        const int32_t *tokens;
        size_t size = 0, n, n_pieces = 0;
        int r;

        r = check_utf8(argv[0], "MODEL");
        if (r == 0)
                r = check_utf8(argv[1], "TEXT");
        if (r != 0)
                return r;

        r = ctl_bus_open(ctx, false, &bus);
        if (r < 0)
                return r;
        r = ctl_bus_new_call(bus, INFERD_OBJECT_PATH, INFERD_MANAGER_IFACE, "Tokenize", &m);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "ss", argv[0], argv[1]);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg_add_special)
                r = sd_bus_message_append(m, "{sv}", "add_special", "b", 1);
        if (r >= 0 && arg_parse_special)
                r = sd_bus_message_append(m, "{sv}", "parse_special", "b", 1);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return ctl_error_errno(r, "Failed to append the arguments of Tokenize: %m");

        r = ctl_bus_send(bus, ctx, m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read_array(reply, 'i', (const void **) &tokens, &size);
        if (r >= 0)
                r = sd_bus_message_read_strv(reply, &pieces);
        if (r < 0)
                return ctl_bus_log_parse_error(r, "Tokenize");
        n = size / sizeof(int32_t);
        while (pieces && pieces[n_pieces])
                n_pieces++;
        if (n_pieces != n)
                return ctl_bus_log_parse_error(-EBADMSG, "Tokenize");

        if (ctx->json != JSON_OFF) {
                _cleanup_json_ json_t *ids = json_array(), *texts = json_array(), *v = NULL;

                if (!ids || !texts)
                        return ctl_oom();
                for (size_t i = 0; i < n; i++)
                        if (json_array_append_new(ids, json_integer(tokens[i])) < 0 ||
                            json_array_append_new(texts, json_string(pieces[i])) < 0)
                                return ctl_oom();
                v = json_pack("{s:O, s:O}", "tokens", ids, "pieces", texts);
                if (!v)
                        return ctl_oom();
                return json_print(v, ctx->json);
        }

        for (size_t i = 0; i < n; i++) {
                printf("%" PRId32 "\t", tokens[i]);
                print_escaped(pieces[i]);
                putchar('\n');
        }
        return 0;
}
