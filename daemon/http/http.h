/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The OpenAI-compatible HTTP API: an evhttp server on the Manager's loop.
 *
 *   GET  /v1/models, /v1/models/NAME   models ready here or on any live member of the cluster
 *   POST /v1/completions               a prompt
 *   POST /v1/chat/completions          a conversation
 *   GET  /health                       open to all
 *   GET  /metrics                      Prometheus text; needs a key when MetricsAuth=yes
 *
 * /v1/ needs "Authorization: Bearer KEY" with a key api_keys_check() accepts. Generations go through
 * serve_submit_job(), so the cluster routes them; with "stream": true they come back as server-sent
 * events as they are made. A client that goes away cancels its job. The JSON is openai.c's.
 *
 * It listens on the sockets systemd passes (inferd.socket), or else on [HTTP] Listen=.
 */

typedef struct Manager Manager;
typedef struct HttpServer HttpServer;

/* Listens; -errno (logged) when it cannot. With Listen= empty and no sockets passed, *ret is NULL. */
int http_server_new(Manager *m, HttpServer **ret);
/* Clients' jobs are cancelled, their connections closed. */
HttpServer *http_server_free(HttpServer *s);
static inline void http_server_freep(HttpServer **s) {
        if (*s)
                http_server_free(*s);
}
