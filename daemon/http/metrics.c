/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdio.h>

#include "cluster.h"
#include "macro.h"
#include "manager.h"
#include "metrics.h"
#include "serve.h"
#include "utf8.h"
#include "vkdev.h"

#define LABELS_MAX 3
#define BUCKETS_MAX 20

/* Upper bounds, exact in microseconds and as Prometheus prints them. */
typedef struct Bound {
        uint64_t usec;
        const char *le;
} Bound;

/* A whole request: from a /v1/models answer in milliseconds to a long generation on a slow device. */
static const Bound duration_bounds[] = {
        { 5000, "0.005" }, { 10000, "0.01" }, { 25000, "0.025" }, { 50000, "0.05" }, { 100000, "0.1" },
        { 250000, "0.25" }, { 500000, "0.5" }, { 1000000, "1" }, { 2500000, "2.5" }, { 5000000, "5" },
        { 10000000, "10" }, { 20000000, "20" }, { 30000000, "30" }, { 60000000, "60" }, { 120000000, "120" },
};

/* The first token: a prefill, finer where interactive use notices (below a second), queueing above. */
static const Bound ttft_bounds[] = {
        { 5000, "0.005" }, { 10000, "0.01" }, { 25000, "0.025" }, { 50000, "0.05" }, { 75000, "0.075" },
        { 100000, "0.1" }, { 150000, "0.15" }, { 200000, "0.2" }, { 300000, "0.3" }, { 500000, "0.5" },
        { 750000, "0.75" }, { 1000000, "1" }, { 2500000, "2.5" }, { 5000000, "5" }, { 7500000, "7.5" },
        { 10000000, "10" }, { 20000000, "20" }, { 40000000, "40" }, { 80000000, "80" },
};

_Static_assert(ELEMENTSOF(duration_bounds) <= BUCKETS_MAX && ELEMENTSOF(ttft_bounds) <= BUCKETS_MAX, "BUCKETS_MAX");

typedef struct Series {
        char *values[LABELS_MAX];
        uint64_t value;                 /* a counter's value, a histogram's count */
        uint64_t sum_usec;              /* histograms: */
        uint64_t buckets[BUCKETS_MAX];  /* observations per bucket, not cumulative; above the last: +Inf only */
} Series;

typedef struct Family {
        const char *name;
        const char *help;
        const char *const *labels;      /* NULL-terminated */
        const Bound *bounds;            /* histograms; NULL for counters */
        size_t n_bounds;
        Series *series;
        size_t n, allocated;            /* n <= METRICS_SERIES_MAX + 1: the last may be the "other" one */
} Family;

enum {
        FAMILY_REQUESTS,
        FAMILY_DURATION,
        FAMILY_TTFT,
        FAMILY_PROMPT_TOKENS,
        FAMILY_GENERATION_TOKENS,
        _FAMILY_MAX,
};

struct Metrics {
        Family families[_FAMILY_MAX];
};

static const char *const labels_request[] = { "endpoint", "model", "status", NULL };
static const char *const labels_endpoint_model[] = { "endpoint", "model", NULL };
static const char *const labels_model[] = { "model", NULL };

int metrics_new(Metrics **ret) {
        Metrics *m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->families[FAMILY_REQUESTS] = (Family) {
                .name = "inferd_requests_total",
                .help = "HTTP API requests answered, by endpoint, model and status code.",
                .labels = labels_request,
        };
        m->families[FAMILY_DURATION] = (Family) {
                .name = "inferd_request_duration_seconds",
                .help = "Time from an HTTP API request to the end of its answer.",
                .labels = labels_endpoint_model,
                .bounds = duration_bounds,
                .n_bounds = ELEMENTSOF(duration_bounds),
        };
        m->families[FAMILY_TTFT] = (Family) {
                .name = "inferd_time_to_first_token_seconds",
                .help = "Time from an HTTP API request to its first generated token.",
                .labels = labels_model,
                .bounds = ttft_bounds,
                .n_bounds = ELEMENTSOF(ttft_bounds),
        };
        m->families[FAMILY_PROMPT_TOKENS] = (Family) {
                .name = "inferd_prompt_tokens_total",
                .help = "Prompt tokens processed for HTTP API requests.",
                .labels = labels_model,
        };
        m->families[FAMILY_GENERATION_TOKENS] = (Family) {
                .name = "inferd_generation_tokens_total",
                .help = "Tokens generated for HTTP API requests.",
                .labels = labels_model,
        };
        *ret = m;
        return 0;
}

Metrics *metrics_free(Metrics *m) {
        if (!m)
                return NULL;
        for (size_t f = 0; f < _FAMILY_MAX; f++) {
                for (size_t i = 0; i < m->families[f].n; i++)
                        for (size_t l = 0; l < LABELS_MAX; l++)
                                free(m->families[f].series[i].values[l]);
                free(m->families[f].series);
        }
        free(m);
        return NULL;
}

static size_t family_n_labels(const Family *f) {
        size_t n = 0;
        while (f->labels[n])
                n++;
        return n;
}

/* What a label value may be: anything short and UTF-8 (a client's model name included), else "other". */
static const char *label_value(const char *s) {
        if (!s)
                return "";
        if (strlen(s) > METRICS_LABEL_MAX || !utf8_is_valid(s))
                return METRICS_OTHER;
        return s;
}

static Series *family_find(Family *f, const char *const *values, size_t n_labels) {
        for (size_t i = 0; i < f->n; i++) {
                size_t l = 0;
                while (l < n_labels && streq(f->series[i].values[l], values[l]))
                        l++;
                if (l == n_labels)
                        return &f->series[i];
        }
        return NULL;
}

/* The series for these label values, made if new; past the limit, the "other" one. NULL without memory. */
static Series *family_series(Family *f, const char *const *values) {
        static const char *const others[LABELS_MAX] = { METRICS_OTHER, METRICS_OTHER, METRICS_OTHER };
        size_t n_labels = family_n_labels(f);
        Series *s;

        s = family_find(f, values, n_labels);
        if (s)
                return s;
        if (f->n >= METRICS_SERIES_MAX) {
                values = others;
                s = family_find(f, values, n_labels);
                if (s)
                        return s;
        }

        if (f->n == f->allocated) {
                size_t a = MIN(MAX(f->allocated * 2, (size_t) 8), (size_t) METRICS_SERIES_MAX + 1);
                Series *p = reallocarray(f->series, a, sizeof *p);
                if (!p)
                        return NULL;
                f->series = p;
                f->allocated = a;
        }
        s = &f->series[f->n];
        *s = (Series) {};
        for (size_t l = 0; l < n_labels; l++) {
                s->values[l] = strdup(values[l]);
                if (!s->values[l]) {
                        for (size_t k = 0; k < l; k++)
                                free(s->values[k]);
                        return NULL;
                }
        }
        f->n++;
        return s;
}

static void series_observe(const Family *f, Series *s, uint64_t usec) {
        size_t i = 0;

        while (i < f->n_bounds && usec > f->bounds[i].usec)
                i++;
        if (i < f->n_bounds)
                s->buckets[i]++;
        s->value++;
        s->sum_usec += usec;
}

void metrics_request_done(Metrics *m, const char *endpoint, const char *model, int status, uint64_t duration_usec,
                          uint64_t ttft_usec, uint32_t prompt_tokens, uint32_t generated_tokens) {
        char status_text[16];
        Series *s;

        if (!m)
                return;
        endpoint = label_value(endpoint);
        model = label_value(model);
        if (status >= 100 && status <= 999)
                snprintf(status_text, sizeof status_text, "%d", status);
        else
                snprintf(status_text, sizeof status_text, "%s", METRICS_OTHER);

        /* Out of memory, an observation is lost; the request it describes was answered all the same. */
        s = family_series(&m->families[FAMILY_REQUESTS], (const char *const[]) { endpoint, model, status_text });
        if (s)
                s->value++;
        s = family_series(&m->families[FAMILY_DURATION], (const char *const[]) { endpoint, model });
        if (s)
                series_observe(&m->families[FAMILY_DURATION], s, duration_usec);
        if (ttft_usec > 0) {
                s = family_series(&m->families[FAMILY_TTFT], (const char *const[]) { model });
                if (s)
                        series_observe(&m->families[FAMILY_TTFT], s, ttft_usec);
        }
        if (prompt_tokens > 0) {
                s = family_series(&m->families[FAMILY_PROMPT_TOKENS], (const char *const[]) { model });
                if (s)
                        s->value += prompt_tokens;
        }
        if (generated_tokens > 0) {
                s = family_series(&m->families[FAMILY_GENERATION_TOKENS], (const char *const[]) { model });
                if (s)
                        s->value += generated_tokens;
        }
}

/* A label value as the exposition format quotes it: backslash, double quote and line feed escaped. */
static void put_escaped(FILE *f, const char *s) {
        for (; *s; s++)
                switch (*s) {
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '"':
                        fputs("\\\"", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                default:
                        fputc(*s, f);
                }
}

static void put_header(FILE *f, const char *name, const char *type, const char *help) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* NAME{a="x",b="y"[,le="LE"]} without the value; no braces when there is no label at all. */
static void put_name(FILE *f, const char *name, const char *suffix, const char *const *labels,
                     char *const *values, const char *le) {
        bool first = true;

        fprintf(f, "%s%s", name, suffix);
        for (size_t l = 0; labels && labels[l]; l++) {
                fprintf(f, "%s%s=\"", first ? "{" : ",", labels[l]);
                put_escaped(f, values[l]);
                fputc('"', f);
                first = false;
        }
        if (le) {
                fprintf(f, "%sle=\"%s\"", first ? "{" : ",", le);
                first = false;
        }
        if (!first)
                fputc('}', f);
}

static void render_family(FILE *f, const Family *fam) {
        put_header(f, fam->name, fam->bounds ? "histogram" : "counter", fam->help);
        for (size_t i = 0; i < fam->n; i++) {
                const Series *s = &fam->series[i];
                uint64_t cumulative = 0;

                if (!fam->bounds) {
                        put_name(f, fam->name, "", fam->labels, s->values, NULL);
                        fprintf(f, " %" PRIu64 "\n", s->value);
                        continue;
                }
                for (size_t b = 0; b < fam->n_bounds; b++) {
                        cumulative += s->buckets[b];
                        put_name(f, fam->name, "_bucket", fam->labels, s->values, fam->bounds[b].le);
                        fprintf(f, " %" PRIu64 "\n", cumulative);
                }
                put_name(f, fam->name, "_bucket", fam->labels, s->values, "+Inf");
                fprintf(f, " %" PRIu64 "\n", s->value);
                put_name(f, fam->name, "_sum", fam->labels, s->values, NULL);
                fprintf(f, " %" PRIu64 ".%06" PRIu64 "\n", s->sum_usec / 1000000, s->sum_usec % 1000000);
                put_name(f, fam->name, "_count", fam->labels, s->values, NULL);
                fprintf(f, " %" PRIu64 "\n", s->value);
        }
}

static void put_gauge(FILE *f, const char *name, const char *const *labels, const char *const *values,
                      uint64_t value) {
        put_name(f, name, "", labels, (char *const *) values, NULL);
        fprintf(f, " %" PRIu64 "\n", value);
}

static void render_jobs(FILE *f, Manager *mgr) {
        static const char *const labels[] = { "model", NULL };

        put_header(f, "inferd_queue_depth", "gauge", "Jobs queued or running on this node, for it or for others.");
        put_gauge(f, "inferd_queue_depth", NULL, NULL, serve_jobs_active(mgr));

        for (int running = 1; running >= 0; running--) {
                const char *name = running ? "inferd_jobs_running" : "inferd_jobs_queued";

                put_header(f, name, "gauge", running ? "Jobs running on this node, by model."
                                                     : "Jobs waiting for their model's device, by model.");
                for (Served *s = mgr->served; s; s = s->next) {
                        uint64_t n = 0;
                        for (Job *j = mgr->jobs; j; j = j->next)
                                if (j->served == s && j->state == (running ? JOB_RUNNING : JOB_QUEUED))
                                        n++;
                        put_gauge(f, name, labels, (const char *const[]) { label_value(s->name) }, n);
                }
        }
}

static void render_devices(FILE *f, Manager *mgr) {
        static const char *const labels[] = { "device", "name", NULL };
        size_t n = gpu_instance_n_devices(mgr->gpu);

        for (int used = 1; used >= 0; used--) {
                const char *name = used ? "inferd_device_memory_used_bytes" : "inferd_device_memory_free_bytes";

                put_header(f, name, "gauge", used ? "Device memory in use, by this process and others."
                                                  : "Device memory still free.");
                for (size_t i = 0; i < n; i++) {
                        const GpuDeviceInfo *d = gpu_instance_device(mgr->gpu, i);
                        uint64_t u = 0, fr = 0;
                        char index[24];

                        if (!d || gpu_device_memory_usage(mgr->gpu, i, &u, &fr) < 0)
                                continue;
                        snprintf(index, sizeof index, "%zu", i);
                        put_gauge(f, name, labels, (const char *const[]) { index, label_value(d->name) },
                                  used ? u : fr);
                }
        }
}

static void render_cluster(FILE *f, Manager *mgr) {
        static const char *const labels[] = { "state", NULL };
        uint64_t count[_SWIM_STATE_MAX] = {};
        Member **members;
        size_t n;

        if (cluster_state(mgr->cluster) != CLUSTER_ACTIVE)
                return;
        n = cluster_members(mgr->cluster, &members);
        for (size_t i = 0; i < n; i++) {
                const SwimUpdate *u = cluster_member_swim(mgr->cluster, members[i]);
                count[u && (unsigned) u->state < _SWIM_STATE_MAX ? u->state : SWIM_DEAD]++;
        }
        put_header(f, "inferd_cluster_members", "gauge", "Members of this node's cluster, itself included, by state.");
        for (int s = 0; s < _SWIM_STATE_MAX; s++)
                put_gauge(f, "inferd_cluster_members", labels, (const char *const[]) { swim_state_to_string(s) },
                          count[s]);
}

int metrics_render(Metrics *m, Manager *mgr, char **ret_text, size_t *ret_len) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f;

        f = open_memstream(&buf, &len);
        if (!f)
                return -ENOMEM;
        for (size_t i = 0; i < _FAMILY_MAX; i++)
                render_family(f, &m->families[i]);
        if (mgr) {
                render_jobs(f, mgr);
                render_devices(f, mgr);
                render_cluster(f, mgr);
        }
        if (fflush(f) != 0 || ferror(f)) {
                fclose(f);
                free(buf);
                return -ENOMEM;
        }
        if (fclose(f) != 0) {
                free(buf);
                return -ENOMEM;
        }
        *ret_text = buf;
        if (ret_len)
                *ret_len = len;
        return 0;
}
