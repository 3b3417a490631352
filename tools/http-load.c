/* SPDX-License-Identifier: MIT */
/*
 * inferd-http-load: a fixed number of HTTP/1.1 keep-alive connections, each sending
 * POST /v1/completions again as soon as its answer is in, for a number of seconds;
 * then requests/s, latency percentiles, errors, and the daemon's resident memory
 * before and after. Bounded: never more requests in flight than connections.
 *
 *     inferd-http-load --url http://127.0.0.1:8080 --key sk-inferd-... --model stories260K \
 *             [--connections 64] [--seconds 30] [--warmup 3] [--max-tokens 8] [--pid PID] [--json]
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct Load Load;

typedef struct Conn {
        Load *load;
        struct evhttp_connection *evcon;
        uint64_t sent_usec;
} Conn;

struct Load {
        struct event_base *base;
        const char *host, *path, *key;
        int port;
        char *body;
        Conn *conns;
        unsigned n_conns;
        uint64_t start_usec, measure_usec, end_usec;
        bool stopping;
        unsigned in_flight;
        /* The measured phase only. */
        uint64_t requests, errors, bad_status, failed;
        uint32_t *lat_usec;
        size_t n_lat, a_lat;
        long pid;
        long rss_kib[3];                /* before the warm-up, before the measured run, after it */
        long rss_max_kib;
};

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

static long rss_kib(long pid) {
        char path[64], line[256];
        long kib = -1;
        if (pid <= 0)
                return -1;
        snprintf(path, sizeof path, "/proc/%ld/status", pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof line, f))
                if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
                        break;
        fclose(f);
        return kib;
}

static void send_one(Conn *c);

static void on_response(struct evhttp_request *req, void *userdata) {
        Conn *c = userdata;
        Load *l = c->load;
        uint64_t now = now_usec();

        l->in_flight--;
        /* Answers that come in the measured window count, whenever they were asked for: with a queue in
         * the daemon, latency may be seconds. */
        if (now >= l->measure_usec && now <= l->end_usec) {
                l->requests++;
                int status = req ? evhttp_request_get_response_code(req) : 0;
                if (status != 200) {
                        l->errors++;
                        if (status == 0)
                                l->failed++;
                        else
                                l->bad_status++;
                } else {
                        if (l->n_lat == l->a_lat) {
                                size_t a = l->a_lat ? l->a_lat * 2 : 65536;
                                uint32_t *p = realloc(l->lat_usec, a * sizeof *p);
                                if (!p) {
                                        fprintf(stderr, "Out of memory.\n");
                                        exit(1);
                                }
                                l->lat_usec = p;
                                l->a_lat = a;
                        }
                        l->lat_usec[l->n_lat++] = (uint32_t) (now - c->sent_usec > UINT32_MAX ? UINT32_MAX
                                                                                              : now - c->sent_usec);
                }
        }
        if (now >= l->end_usec) {
                l->stopping = true;
                if (l->in_flight == 0)
                        event_base_loopexit(l->base, NULL);
                return;
        }
        send_one(c);
}

static void send_one(Conn *c) {
        Load *l = c->load;

        if (!c->evcon) {
                c->evcon = evhttp_connection_base_new(l->base, NULL, l->host, (unsigned short) l->port);
                if (!c->evcon) {
                        fprintf(stderr, "Cannot make a connection.\n");
                        exit(1);
                }
                evhttp_connection_set_timeout(c->evcon, 120);
        }
        struct evhttp_request *req = evhttp_request_new(on_response, c);
        if (!req) {
                fprintf(stderr, "Out of memory.\n");
                exit(1);
        }
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        char auth[512], host[300];
        snprintf(auth, sizeof auth, "Bearer %s", l->key);
        snprintf(host, sizeof host, "%s:%d", l->host, l->port);
        evhttp_add_header(h, "Host", host);
        evhttp_add_header(h, "Authorization", auth);
        evhttp_add_header(h, "Content-Type", "application/json");
        evbuffer_add(evhttp_request_get_output_buffer(req), l->body, strlen(l->body));
        c->sent_usec = now_usec();
        l->in_flight++;
        /* A connection that failed connects again for the next request. */
        if (evhttp_make_request(c->evcon, req, EVHTTP_REQ_POST, l->path) < 0) {
                fprintf(stderr, "Cannot send a request.\n");
                exit(1);
        }
}

static void on_tick(evutil_socket_t fd, short what, void *userdata) {
        Load *l = userdata;
        uint64_t now = now_usec();
        long rss = rss_kib(l->pid);

        if (l->rss_kib[1] < 0 && now >= l->measure_usec)
                l->rss_kib[1] = rss;
        if (now >= l->measure_usec && rss > l->rss_max_kib)
                l->rss_max_kib = rss;
        /* The end, should every connection be stuck in a request: timeouts end those. */
        if (now >= l->end_usec + 130 * 1000000ull)
                event_base_loopexit(l->base, NULL);
}

static int cmp_u32(const void *a, const void *b) {
        uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
        return x < y ? -1 : x > y;
}

static double percentile_ms(const uint32_t *v, size_t n, double p) {
        if (n == 0)
                return 0;
        size_t i = (size_t) (p * (double) (n - 1) + 0.5);
        return v[i] / 1000.0;
}

static int parse_url(const char *url, Load *l) {
        static char host[256];
        const char *p = url;
        if (strncmp(p, "http://", 7) == 0)
                p += 7;
        const char *colon = strrchr(p, ':');
        if (!colon || colon == p || (size_t) (colon - p) >= sizeof host)
                return -EINVAL;
        memcpy(host, p, (size_t) (colon - p));
        host[colon - p] = 0;
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (port <= 0 || port > 65535 || (*end && *end != '/'))
                return -EINVAL;
        l->host = host;
        l->port = (int) port;
        return 0;
}

static void usage(FILE *f) {
        fprintf(f, "Usage: inferd-http-load --url http://HOST:PORT --key KEY --model NAME [OPTIONS]\n\n"
                   "POST /v1/completions over CONNECTIONS keep-alive connections, each sending the next\n"
                   "request when its answer is in, for SECONDS; report requests/s, latency, errors and\n"
                   "the daemon's RSS.\n\n"
                   "  --connections N   Connections, each with one request in flight (default 64)\n"
                   "  --seconds S       Measured duration (default 30)\n"
                   "  --warmup S        Load before measuring, not counted (default 3)\n"
                   "  --max-tokens N    max_tokens of each request (default 8)\n"
                   "  --prompt TEXT     The prompt (default \"Once upon a time\")\n"
                   "  --chat            POST /v1/chat/completions instead\n"
                   "  --pid PID         The daemon, whose VmRSS is reported\n"
                   "  --json            Print one JSON object\n");
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "url", required_argument, NULL, 'u' },
                { "key", required_argument, NULL, 'k' },
                { "model", required_argument, NULL, 'm' },
                { "connections", required_argument, NULL, 'c' },
                { "seconds", required_argument, NULL, 's' },
                { "warmup", required_argument, NULL, 'w' },
                { "max-tokens", required_argument, NULL, 'n' },
                { "prompt", required_argument, NULL, 'p' },
                { "chat", no_argument, NULL, 'C' },
                { "pid", required_argument, NULL, 'P' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        Load l = { .path = "/v1/completions", .n_conns = 64, .pid = -1, .rss_kib = { -1, -1, -1 } };
        const char *url = NULL, *model = NULL, *prompt = "Once upon a time";
        double seconds = 30, warmup = 3;
        unsigned max_tokens = 8;
        bool json = false, chat = false;
        int opt;

        while ((opt = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (opt) {
                case 'u': url = optarg; break;
                case 'k': l.key = optarg; break;
                case 'm': model = optarg; break;
                case 'c': l.n_conns = (unsigned) strtoul(optarg, NULL, 10); break;
                case 's': seconds = strtod(optarg, NULL); break;
                case 'w': warmup = strtod(optarg, NULL); break;
                case 'n': max_tokens = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'p': prompt = optarg; break;
                case 'C': chat = true; break;
                case 'P': l.pid = strtol(optarg, NULL, 10); break;
                case 'j': json = true; break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        if (!url || !l.key || !model || l.n_conns == 0 || l.n_conns > 10000 || !(seconds > 0) || !(warmup >= 0) ||
            parse_url(url, &l) < 0) {
                usage(stderr);
                return 2;
        }
        /* The model and prompt go into JSON as they are: keep them to characters that need no escaping. */
        for (const char *p = model; *p; p++)
                if (*p == '"' || *p == '\\' || (unsigned char) *p < 0x20)
                        return fprintf(stderr, "The model name needs escaping; use a plain one.\n"), 2;
        for (const char *p = prompt; *p; p++)
                if (*p == '"' || *p == '\\' || (unsigned char) *p < 0x20)
                        return fprintf(stderr, "The prompt needs escaping; use a plain one.\n"), 2;
        if (chat) {
                l.path = "/v1/chat/completions";
                if (asprintf(&l.body, "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],"
                                      "\"max_tokens\":%u}", model, prompt, max_tokens) < 0)
                        return 1;
        } else if (asprintf(&l.body, "{\"model\":\"%s\",\"prompt\":\"%s\",\"max_tokens\":%u}", model, prompt,
                            max_tokens) < 0)
                return 1;

        l.base = event_base_new();
        l.conns = calloc(l.n_conns, sizeof *l.conns);
        if (!l.base || !l.conns)
                return 1;
        l.rss_kib[0] = rss_kib(l.pid);
        l.start_usec = now_usec();
        l.measure_usec = l.start_usec + (uint64_t) (warmup * 1e6);
        l.end_usec = l.measure_usec + (uint64_t) (seconds * 1e6);
        struct event *tick = event_new(l.base, -1, EV_PERSIST, on_tick, &l);
        struct timeval tv = { .tv_sec = 0, .tv_usec = 250000 };
        event_add(tick, &tv);
        for (unsigned i = 0; i < l.n_conns; i++) {
                l.conns[i].load = &l;
                send_one(&l.conns[i]);
        }
        event_base_dispatch(l.base);
        l.rss_kib[2] = rss_kib(l.pid);
        if (l.rss_kib[2] > l.rss_max_kib)
                l.rss_max_kib = l.rss_kib[2];

        qsort(l.lat_usec, l.n_lat, sizeof *l.lat_usec, cmp_u32);
        double p50 = percentile_ms(l.lat_usec, l.n_lat, 0.50), p99 = percentile_ms(l.lat_usec, l.n_lat, 0.99);
        double max = l.n_lat ? l.lat_usec[l.n_lat - 1] / 1000.0 : 0, rps = (double) l.requests / seconds;
        if (json)
                printf("{\"connections\":%u,\"seconds\":%g,\"warmup_seconds\":%g,\"max_tokens\":%u,\"requests\":%" PRIu64
                       ",\"requests_per_sec\":%.1f,\"errors\":%" PRIu64 ",\"error_statuses\":%" PRIu64
                       ",\"failed_connections\":%" PRIu64 ",\"latency_ms\":{\"p50\":%.2f,\"p99\":%.2f,\"max\":%.2f},"
                       "\"rss_kib\":{\"initial\":%ld,\"start\":%ld,\"end\":%ld,\"max\":%ld}}\n",
                       l.n_conns, seconds, warmup, max_tokens, l.requests, rps, l.errors, l.bad_status, l.failed, p50,
                       p99, max, l.rss_kib[0], l.rss_kib[1], l.rss_kib[2], l.rss_max_kib);
        else {
                printf("%u connections, %g s (after %g s of warm-up), max_tokens %u\n", l.n_conns, seconds, warmup,
                       max_tokens);
                printf("requests:  %" PRIu64 " (%.1f/s)\n", l.requests, rps);
                printf("errors:    %" PRIu64 " (%" PRIu64 " error statuses, %" PRIu64 " failed connections)\n", l.errors,
                       l.bad_status, l.failed);
                printf("latency:   p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", p50, p99, max);
                if (l.pid > 0)
                        printf("daemon RSS: %.1f MiB before the warm-up, %.1f MiB at the start, %.1f MiB at the end "
                               "(%.1f MiB at most)\n", l.rss_kib[0] / 1024.0, l.rss_kib[1] / 1024.0,
                               l.rss_kib[2] / 1024.0, l.rss_max_kib / 1024.0);
        }
        for (unsigned i = 0; i < l.n_conns; i++)
                if (l.conns[i].evcon)
                        evhttp_connection_free(l.conns[i].evcon);
        event_free(tick);
        event_base_free(l.base);
        free(l.conns);
        free(l.lat_usec);
        free(l.body);
        return l.errors ? 1 : 0;
}
