/* SPDX-License-Identifier: MIT */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include "address.h"
#include "api-keys.h"
#include "cluster.h"
#include "http.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "metrics.h"
#include "names.h"
#include "openai.h"
#include "serve.h"
#include "time-util.h"
#include "utf8.h"

/* OpenAI's default for /v1/completions; chat answers run to the end of the turn (MaxTokens=, the context). */
#define COMPLETIONS_DEFAULT_MAX_TOKENS 16
#define HEADERS_MAX (64u * 1024u)
/* 499: the client closed the connection before the answer was complete (nginx's code), for the metrics. */
#define STATUS_CLIENT_GONE 499

typedef struct HttpCall HttpCall;

struct HttpServer {
        Manager *manager;
        struct evhttp *evhttp;
        HttpCall *calls;                /* generations in flight */
};

/* One generation, from the request to the last byte of its answer. */
struct HttpCall {
        HttpCall *next, *prev;
        HttpServer *server;
        struct evhttp_request *req;     /* NULL once answered or the client is gone */
        struct event *hangup;           /* the client closed its end */
        Job *job;                       /* until finished() or detached */
        const char *endpoint;
        char id[48];
        char *model;
        bool stream, include_usage;
        OpenAIAnswer answer;            /* points into this */
        struct evbuffer *text;          /* !stream: the answer so far */
        uint32_t prompt_tokens, generated;
        uint64_t start_usec, first_token_usec;
};

/* ---- replies ---- */

static void send_text(struct evhttp_request *req, int status, const char *content_type, const char *text, size_t len) {
        struct evbuffer *b = evbuffer_new();
        if (!b || evbuffer_add(b, text, len) < 0 ||
            evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", content_type) < 0) {
                log_oom();
                evhttp_send_error(req, 500, NULL);
        } else
                evhttp_send_reply(req, status, NULL, b);
        if (b)
                evbuffer_free(b);
}

static int send_json(struct evhttp_request *req, int status, char *json) {
        _cleanup_free_ char *owned = json;
        if (!owned) {
                log_oom();
                evhttp_send_error(req, 500, NULL);
                return 500;
        }
        send_text(req, status, "application/json", owned, strlen(owned));
        return status;
}

static int send_error(struct evhttp_request *req, const OpenAIError *e) {
        if (e->status == 401)
                (void) evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
        if (e->status == 429)
                (void) evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        return send_json(req, e->status, openai_error_json(e));
}

static int send_oom(struct evhttp_request *req) {
        OpenAIError e;
        log_oom();
        openai_error_set(&e, 500, "server_error", NULL, NULL, "Out of memory.");
        return send_error(req, &e);
}

/* The daemon's verdict on a job it would not take, in HTTP terms. */
static void error_from_submit(const sd_bus_error *error, int r, OpenAIError *e) {
        const char *msg = error->message ?: strerror(-r);

        if (sd_bus_error_has_name(error, INFERD_ERROR_NOT_FOUND))
                openai_error_set(e, 404, "invalid_request_error", "model_not_found", "model", "%s", msg);
        else if (sd_bus_error_has_name(error, INFERD_ERROR_INVALID_ARGUMENT))
                openai_error_set(e, 400, "invalid_request_error", "invalid_value", NULL, "%s", msg);
        else if (sd_bus_error_has_name(error, INFERD_ERROR_BUSY))
                openai_error_set(e, 429, "rate_limit_error", "server_busy", NULL, "%s", msg);
        else
                openai_error_set(e, 500, "server_error", NULL, NULL, "%s", msg);
}

static void record(HttpServer *s, const char *endpoint, const char *model, int status, uint64_t start_usec,
                   uint64_t first_token_usec, uint32_t prompt_tokens, uint32_t generated) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        if (s->manager->metrics)
                metrics_request_done(s->manager->metrics, endpoint, model, status, now - start_usec,
                                     first_token_usec ? first_token_usec - start_usec : 0, prompt_tokens, generated);
}

/* ---- generations ---- */

static void call_unlink(HttpCall *c) {
        if (c->prev)
                c->prev->next = c->next;
        else if (c->server->calls == c)
                c->server->calls = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->next = c->prev = NULL;
}

static HttpCall *call_free(HttpCall *c) {
        if (!c)
                return NULL;
        call_unlink(c);
        if (c->hangup)
                event_free(c->hangup);
        if (c->text)
                evbuffer_free(c->text);
        free(c->model);
        free(c);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(HttpCall *, call_free);

/* Before the last reply: once it is out, evhttp may free the request and its connection at any time, so
 * nothing of ours may point at them. */
static struct evhttp_request *call_take_request(HttpCall *c) {
        struct evhttp_request *req = TAKE_PTR(c->req);
        struct evhttp_connection *evcon = req ? evhttp_request_get_connection(req) : NULL;

        if (evcon)
                evhttp_connection_set_closecb(evcon, NULL, NULL);
        if (c->hangup) {
                event_free(c->hangup);
                c->hangup = NULL;
        }
        return req;
}

/* The answer is out, or nobody is left to read it: count it and let go. */
static void call_end(HttpCall *c, int status) {
        record(c->server, c->endpoint, c->model, status, c->start_usec, c->first_token_usec, c->prompt_tokens,
               c->generated);
        call_free(c);
}

static void send_event(struct evhttp_request *req, const char *data) {
        struct evbuffer *b = evbuffer_new();
        if (!b || evbuffer_add_printf(b, "data: %s\n\n", data) < 0)
                log_oom();
        else
                evhttp_send_reply_chunk(req, b);
        if (b)
                evbuffer_free(b);
}

static void on_job_started(Job *j, void *userdata) {
        HttpCall *c = userdata;
        c->prompt_tokens = j->n_prompt >= j->n_resume ? j->n_prompt - j->n_resume : 0;
}

static void on_job_piece(Job *j, const char *text, const int32_t *tokens, size_t n_tokens, void *userdata) {
        HttpCall *c = userdata;

        c->generated += (uint32_t) n_tokens;
        if (!c->first_token_usec)
                c->first_token_usec = now_usec(CLOCK_MONOTONIC);
        /* The worker sends whole characters; a peer might not. */
        if (!utf8_is_valid(text))
                text = "\xef\xbf\xbd";
        if (!*text)
                return;
        if (!c->stream) {
                if (evbuffer_add(c->text, text, strlen(text)) < 0)
                        log_oom();
                return;
        }
        _cleanup_free_ char *chunk = openai_chunk_json(&c->answer, false, text, NULL, c->include_usage);
        if (chunk)
                send_event(c->req, chunk);
        else
                log_oom();
}

static void on_job_finished(Job *j, void *userdata) {
        HttpCall *c = userdata;
        const char *reason = j->finish_reason ?: "error";
        bool ok = streq(reason, "stop") || streq(reason, "length");
        OpenAIUsage usage = {
                .prompt_tokens = j->n_prompt >= j->n_resume ? j->n_prompt - j->n_resume : 0,
                .completion_tokens = j->generated,
        };
        OpenAIError e = {};
        int status = 200;

        c->job = NULL;
        c->prompt_tokens = usage.prompt_tokens;
        c->generated = usage.completion_tokens;
        if (!ok) {
                /* Cancelled by someone else: the model was unloaded, or the daemon is stopping. */
                if (streq(reason, "cancelled"))
                        openai_error_set(&e, 503, "server_error", "cancelled", NULL,
                                         "The generation was cancelled on the server.");
                else if (j->rejected)
                        /* Refused by the member that has the model, as this node would have refused it. */
                        openai_error_set(&e, 400, "invalid_request_error", "invalid_value", NULL, "%s",
                                         j->error ?: "invalid request");
                else
                        openai_error_set(&e, 500, "server_error", NULL, NULL, "The generation failed: %s",
                                         j->error ?: "unknown error");
                status = e.status;
        }

        struct evhttp_request *req = call_take_request(c);
        if (!c->stream) {
                if (ok && evbuffer_add(c->text, "", 1) >= 0) {
                        const char *text = (const char *) evbuffer_pullup(c->text, -1);
                        status = send_json(req, 200, openai_completion_json(&c->answer, text, reason, &usage));
                } else if (ok)
                        status = send_oom(req);
                else
                        (void) send_error(req, &e);
                call_end(c, status);
                return;
        }

        /* Headers went out with 200 long ago: a failure is told in the stream, as OpenAI does. */
        _cleanup_free_ char *last = ok ? openai_chunk_json(&c->answer, false, NULL, reason, c->include_usage)
                                       : openai_error_json(&e);
        _cleanup_free_ char *use = ok && c->include_usage ? openai_usage_chunk_json(&c->answer, &usage) : NULL;
        if (last)
                send_event(req, last);
        if (use)
                send_event(req, use);
        send_event(req, "[DONE]");
        evhttp_send_reply_end(req);
        call_end(c, status);
}

static const JobSink call_sink = {
        .started = on_job_started,
        .piece = on_job_piece,
        .finished = on_job_finished,
};

/* The client went away first: its job stops, and its request goes. */
static void call_client_gone(HttpCall *c, bool from_evhttp) {
        if (c->job) {
                log_debug("HTTP client of %s went away, cancelling job %u.", c->id, c->job->id);
                serve_job_detach(c->job);
                c->job = NULL;
        }
        /* Before evhttp closes the socket the watcher on it must be gone. */
        struct evhttp_request *req = call_take_request(c);
        struct evhttp_connection *evcon = evhttp_request_get_connection(req);
        if (!evcon)
                /* evhttp dropped a request it was not done with: it is ours to free. */
                evhttp_request_free(req);
        else if (!from_evhttp)
                /* The request goes with its connection; inside evhttp's own teardown that happens anyway. */
                evhttp_connection_free(evcon);
        call_end(c, STATUS_CLIENT_GONE);
}

static void on_connection_close(struct evhttp_connection *evcon, void *userdata) {
        call_client_gone(userdata, true);
}

/* EV_CLOSED: evhttp reads nothing while a request is being answered, so without this a client that
 * leaves before the first byte of the answer would go unnoticed until the job ends. A client that only
 * half-closes counts as gone. */
static void on_hangup(evutil_socket_t fd, short what, void *userdata) {
        call_client_gone(userdata, false);
}

static void make_id(char *buf, size_t size, const char *prefix) {
        static uint64_t counter;
        uint8_t r[12];

        if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t) sizeof r) {
                uint64_t t = now_usec(CLOCK_REALTIME) ^ (++counter << 40);
                memset(r, 0, sizeof r);
                memcpy(r, &t, sizeof t);
        }
        int k = snprintf(buf, size, "%s-", prefix);
        for (size_t i = 0; i < sizeof r && k + 2 < (int) size; i++)
                k += snprintf(buf + k, size - (size_t) k, "%02x", r[i]);
}

static int handle_generate(HttpServer *s, struct evhttp_request *req, bool chat, const char *endpoint) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(openai_request_done) OpenAIRequest q = {};
        _cleanup_(call_freep) HttpCall *c = NULL;
        Manager *m = s->manager;
        OpenAIError e;
        int r;

        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);
        if (len > m->config->http_max_body_bytes) {
                openai_error_set(&e, 413, "invalid_request_error", "request_too_large", NULL,
                                 "The request body is %zu bytes; this server takes at most %" PRIu64
                                 " (MaxBodyBytes=).", len, m->config->http_max_body_bytes);
                return send_error(req, &e);
        }
        const char *body = len > 0 ? (const char *) evbuffer_pullup(in, -1) : "";
        if (!body)
                return send_oom(req);
        r = openai_parse_request(body, len, chat, chat ? m->config->max_tokens : COMPLETIONS_DEFAULT_MAX_TOKENS, &q,
                                 &e);
        if (r == -ENOMEM)
                return send_oom(req);
        if (r < 0)
                return send_error(req, &e);

        c = calloc(1, sizeof *c);
        if (!c || !(c->model = strdup(q.job.model)) || !(c->text = evbuffer_new()))
                return send_oom(req);
        c->server = s;
        c->req = req;
        c->endpoint = endpoint;
        c->stream = q.stream;
        c->include_usage = q.stream && q.include_usage;
        c->start_usec = now_usec(CLOCK_MONOTONIC);
        make_id(c->id, sizeof c->id, chat ? "chatcmpl" : "cmpl");
        c->answer = (OpenAIAnswer) {
                .id = c->id,
                .model = c->model,
                .created = now_usec(CLOCK_REALTIME) / USEC_PER_SEC,
                .chat = chat,
        };
        struct evhttp_connection *evcon = evhttp_request_get_connection(req);
        c->hangup = event_new(evhttp_connection_get_base(evcon),
                              bufferevent_getfd(evhttp_connection_get_bufferevent(evcon)), EV_CLOSED, on_hangup, c);
        if (!c->hangup || event_add(c->hangup, NULL) < 0)
                return send_oom(req);

        r = serve_submit_job(m, &q.job, &call_sink, c, &c->job, &error);
        if (r < 0) {
                error_from_submit(&error, r, &e);
                return send_error(req, &e);
        }
        evhttp_connection_set_closecb(evcon, on_connection_close, c);
        c->next = s->calls;
        if (s->calls)
                s->calls->prev = c;
        s->calls = c;

        if (c->stream) {
                struct evkeyvalq *h = evhttp_request_get_output_headers(req);
                (void) evhttp_add_header(h, "Content-Type", "text/event-stream");
                (void) evhttp_add_header(h, "Cache-Control", "no-cache");
                evhttp_send_reply_start(req, 200, NULL);
                if (chat) {
                        _cleanup_free_ char *first = openai_chunk_json(&c->answer, true, NULL, NULL, c->include_usage);
                        if (first)
                                send_event(req, first);
                }
        }
        TAKE_PTR(c);
        return 0;
}

static int handle_completions(HttpServer *s, struct evhttp_request *req, const char *rest) {
        return handle_generate(s, req, false, "completions");
}

static int handle_chat(HttpServer *s, struct evhttp_request *req, const char *rest) {
        return handle_generate(s, req, true, "chat_completions");
}

/* ---- the rest ---- */

static bool names_has(const char *const *names, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (streq(names[i], name))
                        return true;
        return false;
}

/* Models ready here or on a live member, each once. The names point into the Manager: use them before the
 * loop runs again. */
static int ready_models(Manager *m, const char ***ret, size_t *ret_n) {
        _cleanup_free_ const char **names = NULL;
        size_t n = 0, a = 0;
        Member **members = NULL;
        size_t n_members = 0;

        for (Served *s = m->served; s; s = s->next)
                a++;
        if (m->cluster && cluster_state(m->cluster) == CLUSTER_ACTIVE) {
                n_members = cluster_members(m->cluster, &members);
                for (size_t i = 0; i < n_members; i++)
                        a += members[i]->meta.frame ? members[i]->meta.st.n_models : 0;
        }
        names = calloc(MAX(a, 1u), sizeof *names);
        if (!names)
                return -ENOMEM;
        for (Served *s = m->served; s; s = s->next)
                if (s->model && !s->unloading && !names_has(names, n, s->name))
                        names[n++] = s->name;
        for (size_t i = 0; i < n_members; i++) {
                Member *mb = members[i];
                const SwimUpdate *u = cluster_member_swim(m->cluster, mb);
                if (mb->self || !mb->meta.frame || !u || u->state != SWIM_ALIVE)
                        continue;
                for (size_t k = 0; k < mb->meta.st.n_models; k++) {
                        const ProtoModel *pm = &mb->meta.st.models[k];
                        if (pm->state == PROTO_MODEL_READY && !names_has(names, n, pm->name))
                                names[n++] = pm->name;
                }
        }
        *ret = TAKE_PTR(names);
        *ret_n = n;
        return 0;
}

static int handle_models(HttpServer *s, struct evhttp_request *req, const char *rest) {
        _cleanup_free_ const char **names = NULL;
        size_t n;
        uint64_t created = s->manager->start_realtime / USEC_PER_SEC;

        if (ready_models(s->manager, &names, &n) < 0)
                return send_oom(req);
        if (!rest)
                return send_json(req, 200, openai_models_json(names, n, created));

        _cleanup_free_ char *name = evhttp_uridecode(rest, 0, NULL);
        if (!name)
                return send_oom(req);
        if (!names_has(names, n, name)) {
                OpenAIError e;
                openai_error_set(&e, 404, "invalid_request_error", "model_not_found", "model",
                                 "The model '%.200s' does not exist or is not ready on any member.",
                                 utf8_is_valid(name) ? name : "?");
                return send_error(req, &e);
        }
        return send_json(req, 200, openai_model_json(name, created));
}

static int handle_health(HttpServer *s, struct evhttp_request *req, const char *rest) {
        static const char ok[] = "{\"status\":\"ok\"}";
        send_text(req, 200, "application/json", ok, sizeof ok - 1);
        return 200;
}

static int handle_metrics(HttpServer *s, struct evhttp_request *req, const char *rest) {
        _cleanup_free_ char *text = NULL;
        size_t len = 0;

        if (!s->manager->metrics || metrics_render(s->manager->metrics, s->manager, &text, &len) < 0)
                return send_oom(req);
        send_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
        return 200;
}

typedef enum RouteAuth {
        AUTH_NONE,
        AUTH_KEY,
        AUTH_METRICS,                   /* a key when MetricsAuth=yes */
} RouteAuth;

typedef struct Route {
        const char *path;
        bool prefix;                    /* path/NAME, NAME passed on */
        bool post;                      /* POST, else GET (and HEAD) */
        const char *endpoint;           /* the metrics label */
        RouteAuth auth;
        int (*handle)(HttpServer *s, struct evhttp_request *req, const char *rest);
} Route;

static const Route routes[] = {
        { "/v1/models", false, false, "models", AUTH_KEY, handle_models },
        { "/v1/models/", true, false, "models", AUTH_KEY, handle_models },
        { "/v1/completions", false, true, "completions", AUTH_KEY, handle_completions },
        { "/v1/chat/completions", false, true, "chat_completions", AUTH_KEY, handle_chat },
        { "/health", false, false, "health", AUTH_NONE, handle_health },
        { "/metrics", false, false, "metrics", AUTH_METRICS, handle_metrics },
};

static const Route *route_find(const char *path, const char **ret_rest) {
        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                size_t l = strlen(routes[i].path);
                if (routes[i].prefix ? strncmp(path, routes[i].path, l) == 0 && path[l] : streq(path, routes[i].path)) {
                        *ret_rest = routes[i].prefix ? path + l : NULL;
                        return &routes[i];
                }
        }
        return NULL;
}

static int authorize(HttpServer *s, struct evhttp_request *req) {
        const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
        OpenAIError e;

        if (s->manager->api_keys && api_keys_check(s->manager->api_keys, auth) > 0)
                return 0;
        if (!auth)
                openai_error_set(&e, 401, "invalid_request_error", "invalid_api_key", NULL,
                                 "You didn't provide an API key. Send it in an Authorization header "
                                 "(Authorization: Bearer KEY); 'inferctl apikey create NAME' makes one.");
        else
                openai_error_set(&e, 401, "invalid_request_error", "invalid_api_key", NULL,
                                 "Incorrect API key provided.");
        return send_error(req, &e);
}

/* The status sent, or 0 for a generation under way. */
static int dispatch(HttpServer *s, struct evhttp_request *req, const char *path, const Route *r, const char *rest) {
        enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
        OpenAIError e;
        int status;

        if (!r) {
                openai_error_set(&e, 404, "invalid_request_error", "not_found", NULL, "Unknown request URL: %.200s",
                                 utf8_is_valid(path) ? path : "?");
                return send_error(req, &e);
        }
        if (r->auth == AUTH_KEY || (r->auth == AUTH_METRICS && s->manager->config->http_metrics_auth)) {
                status = authorize(s, req);
                if (status != 0)
                        return status;
        }
        if (r->post ? cmd != EVHTTP_REQ_POST : cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
                (void) evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", r->post ? "POST" : "GET, HEAD");
                openai_error_set(&e, 405, "invalid_request_error", "method_not_allowed", NULL,
                                 "%s takes %s requests.", r->path, r->post ? "POST" : "GET");
                return send_error(req, &e);
        }
        return r->handle(s, req, rest);
}

static void on_request(struct evhttp_request *req, void *userdata) {
        HttpServer *s = userdata;
        uint64_t start = now_usec(CLOCK_MONOTONIC);
        const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
        const char *path = (uri ? evhttp_uri_get_path(uri) : NULL) ?: "";
        const char *rest = NULL;

        /* A changed MaxBodyBytes= holds for connections made from now on; see http_server_new(). */
        evhttp_set_max_body_size(s->evhttp, (ev_ssize_t) (2 * s->manager->config->http_max_body_bytes));

        const Route *r = route_find(path, &rest);
        int status = dispatch(s, req, path, r, rest);
        if (status == 0)
                return; /* counted when it ends */
        log_debug("HTTP %s: %d", path, status);
        record(s, r ? r->endpoint : "other", NULL, status, start, 0, 0, 0);
}

/* ---- listening ---- */

static int accept_systemd_sockets(HttpServer *s, unsigned *ret_n) {
        _cleanup_strv_free_ char **names = NULL;
        unsigned n_ok = 0;
        int n;

        n = sd_listen_fds_with_names(true, &names);
        if (n < 0)
                return log_error_errno(n, "Failed to read the sockets systemd passed: %m");
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                const char *name = names && names[i] ? names[i] : "unknown";
                if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
                        log_warning("Ignoring socket %d (%s) from systemd: not a listening stream socket.", fd, name);
                        (void) close(fd);
                        continue;
                }
                if (evutil_make_socket_nonblocking(fd) < 0 || evutil_make_socket_closeonexec(fd) < 0 ||
                    !evhttp_accept_socket_with_handle(s->evhttp, fd)) {
                        int r = negative_errno();
                        (void) close(fd);
                        return log_error_errno(r, "Failed to serve HTTP on socket %d (%s) from systemd: %m", fd, name);
                }
                n_ok++;
        }
        *ret_n = n_ok;
        return 0;
}

int http_server_new(Manager *m, HttpServer **ret) {
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        unsigned n = 0;
        int r;

        s = calloc(1, sizeof *s);
        if (!s)
                return log_oom();
        s->manager = m;
        s->evhttp = evhttp_new(m->event);
        if (!s->evhttp)
                return log_oom();
        evhttp_set_gencb(s->evhttp, on_request, s);
        evhttp_set_allowed_methods(s->evhttp, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                                      EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
        evhttp_set_max_headers_size(s->evhttp, HEADERS_MAX);
        /* evhttp answers a body over its limit with a 413 of its own (HTML), before any callback of ours. So its
         * limit is twice MaxBodyBytes=: bodies in between are read, and refused with the API's error JSON;
         * larger ones are cut off unread. */
        evhttp_set_max_body_size(s->evhttp, (ev_ssize_t) (2 * m->config->http_max_body_bytes));

        r = accept_systemd_sockets(s, &n);
        if (r < 0)
                return r;
        if (n > 0)
                log_info("Serving the HTTP API on %u socket(s) from systemd.", n);
        else if (m->config->http_listen) {
                char host[256];
                uint16_t port;
                if (address_parse(m->config->http_listen, 0, host, sizeof host, &port, NULL) < 0 || !*host)
                        return log_error_errno(EINVAL, "Invalid [HTTP] Listen=%s.", m->config->http_listen);
                errno = 0;
                if (!evhttp_bind_socket_with_handle(s->evhttp, host, port))
                        return log_error_errno(errno ?: EADDRNOTAVAIL, "Failed to listen on %s for HTTP: %m",
                                               m->config->http_listen);
                log_info("Serving the HTTP API on %s.", m->config->http_listen);
        } else {
                log_info("Not serving the HTTP API: [HTTP] Listen= is empty and systemd passed no socket.");
                *ret = NULL;
                return 0;
        }
        *ret = TAKE_PTR(s);
        return 0;
}

HttpServer *http_server_free(HttpServer *s) {
        if (!s)
                return NULL;
        /* Their jobs stop; the connections close with the server, which frees the requests. */
        while (s->calls) {
                HttpCall *c = s->calls;
                if (c->job)
                        serve_job_detach(c->job);
                c->job = NULL;
                (void) call_take_request(c);
                call_free(c);
        }
        if (s->evhttp)
                evhttp_free(s->evhttp);
        free(s);
        return NULL;
}
