/* SPDX-License-Identifier: MIT */
/*
 * /metrics as a scraper reads it: every rendering is parsed back with a
 * strict reader of the text exposition format (0.0.4) and checked as
 * Prometheus would (HELP and TYPE before a family's samples, families in one
 * piece, well-formed labels and values, histograms cumulative up to +Inf =
 * _count), then for the numbers the requests should have given.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "macro.h"
#include "manager.h"
#include "metrics.h"
#include "serve.h"

#define LABELS_MAX 8
#define FAMILIES_MAX 64

typedef struct Sample {
        char *name;
        char *label_names[LABELS_MAX];
        char *label_values[LABELS_MAX];
        size_t n_labels;
        double value;
} Sample;

typedef struct Family {
        char *name;
        char *type;
        bool help;
        bool done;                      /* its samples ended: one more would be out of place */
} Family;

typedef struct Exposition {
        Sample *samples;
        size_t n;
        Family families[FAMILIES_MAX];
        size_t n_families;
        Family *current;                /* of the last sample */
} Exposition;

static void exposition_done(Exposition *e) {
        for (size_t i = 0; i < e->n; i++) {
                free(e->samples[i].name);
                for (size_t l = 0; l < e->samples[i].n_labels; l++) {
                        free(e->samples[i].label_names[l]);
                        free(e->samples[i].label_values[l]);
                }
        }
        free(e->samples);
        for (size_t i = 0; i < e->n_families; i++) {
                free(e->families[i].name);
                free(e->families[i].type);
        }
        *e = (Exposition) {};
}

static bool name_start(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static bool name_char(char c) {
        return name_start(c) || (c >= '0' && c <= '9');
}

/* A metric or label name at *p; advances past it. */
static char *read_name(const char **p, bool label) {
        const char *s = *p;
        size_t n = 0;

        if (!name_start(s[0]) || (label && s[0] == ':'))
                fail_msg("expected a name at '%.40s'", s);
        while (name_char(s[n]) && !(label && s[n] == ':'))
                n++;
        *p = s + n;
        return strndup(s, n);
}

static Family *family_find(Exposition *e, const char *name) {
        for (size_t i = 0; i < e->n_families; i++)
                if (streq(e->families[i].name, name))
                        return &e->families[i];
        return NULL;
}

static Family *family_get(Exposition *e, const char *name) {
        Family *f = family_find(e, name);
        if (f)
                return f;
        assert_true(e->n_families < FAMILIES_MAX);
        f = &e->families[e->n_families++];
        *f = (Family) { .name = strdup(name) };
        return f;
}

/* The family a sample belongs to: a histogram's _bucket, _sum and _count are its own. */
static Family *sample_family(Exposition *e, const char *name) {
        static const char *const suffixes[] = { "_bucket", "_sum", "_count" };
        Family *f = family_find(e, name);

        if (f)
                return f;
        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                size_t n = strlen(name), k = strlen(suffixes[i]);
                if (n > k && streq(name + n - k, suffixes[i])) {
                        _cleanup_free_ char *base = strndup(name, n - k);
                        f = family_find(e, base);
                        if (f && streq_ptr(f->type, "histogram"))
                                return f;
                }
        }
        fail_msg("sample %s has no # TYPE line before it", name);
        return NULL;
}

static void parse_sample(Exposition *e, const char *line) {
        const char *p = line;
        Sample s = {};
        char *end;

        s.name = read_name(&p, false);
        if (*p == '{') {
                p++;
                while (*p != '}') {
                        char *v = malloc(strlen(p) + 1), *o = v;

                        assert_true(s.n_labels < LABELS_MAX);
                        s.label_names[s.n_labels] = read_name(&p, true);
                        if (p[0] != '=' || p[1] != '"')
                                fail_msg("expected =\" after a label name in: %s", line);
                        p += 2;
                        for (; *p != '"'; p++) {
                                if (*p == 0)
                                        fail_msg("unterminated label value in: %s", line);
                                if (*p != '\\') {
                                        *o++ = *p;
                                        continue;
                                }
                                p++;
                                if (*p == 'n')
                                        *o++ = '\n';
                                else if (*p == '\\' || *p == '"')
                                        *o++ = *p;
                                else
                                        fail_msg("invalid escape \\%c in: %s", *p, line);
                        }
                        *o = 0;
                        s.label_values[s.n_labels++] = v;
                        p++;
                        for (size_t l = 0; l + 1 < s.n_labels; l++)
                                if (streq(s.label_names[l], s.label_names[s.n_labels - 1]))
                                        fail_msg("label %s twice in: %s", s.label_names[l], line);
                        if (*p == ',')
                                p++;
                        else if (*p != '}')
                                fail_msg("expected , or } in: %s", line);
                }
                p++;
        }
        if (*p++ != ' ')
                fail_msg("expected one space before the value in: %s", line);
        if (streq(p, "+Inf"))
                s.value = INFINITY;
        else {
                s.value = strtod(p, &end);
                if (end == p || *end != 0 || isnan(s.value))
                        fail_msg("invalid value in: %s", line);
        }

        Family *f = sample_family(e, s.name);
        if (!f->help)
                fail_msg("sample %s before its # HELP line", s.name);
        if (e->current && e->current != f)
                e->current->done = true;
        if (f->done)
                fail_msg("the samples of %s are not all together", f->name);
        e->current = f;

        Sample *a = reallocarray(e->samples, e->n + 1, sizeof *a);
        assert_non_null(a);
        e->samples = a;
        e->samples[e->n++] = s;
}

/* Parses text completely, failing the test at the first line that is not well-formed. */
static void parse(const char *text, Exposition *ret) {
        _cleanup_free_ char *copy = strdup(text);
        char *line, *next;

        *ret = (Exposition) {};
        assert_true(strlen(text) == 0 || text[strlen(text) - 1] == '\n');
        for (line = copy; *line; line = next) {
                next = strchr(line, '\n');
                assert_non_null(next);
                *next++ = 0;

                if (line[0] == 0)
                        fail_msg("an empty line");
                if (startswith(line, "# HELP ")) {
                        const char *p = line + 7;
                        _cleanup_free_ char *name = read_name(&p, false);
                        Family *f = family_get(ret, name);
                        if (*p != ' ' || !p[1])
                                fail_msg("# HELP without text: %s", line);
                        if (f->help)
                                fail_msg("# HELP twice for %s", name);
                        f->help = true;
                } else if (startswith(line, "# TYPE ")) {
                        const char *p = line + 7;
                        _cleanup_free_ char *name = read_name(&p, false);
                        Family *f = family_get(ret, name);
                        if (*p++ != ' ' || !(streq(p, "counter") || streq(p, "gauge") || streq(p, "histogram")))
                                fail_msg("invalid # TYPE line: %s", line);
                        if (f->type)
                                fail_msg("# TYPE twice for %s", name);
                        f->type = strdup(p);
                } else if (line[0] == '#')
                        fail_msg("unexpected comment: %s", line);
                else
                        parse_sample(ret, line);
        }
        for (size_t i = 0; i < ret->n_families; i++)
                if (!ret->families[i].help || !ret->families[i].type)
                        fail_msg("%s lacks # HELP or # TYPE", ret->families[i].name);
}

static const char *sample_label(const Sample *s, const char *name) {
        for (size_t l = 0; l < s->n_labels; l++)
                if (streq(s->label_names[l], name))
                        return s->label_values[l];
        return NULL;
}

/* Whether s has exactly the labels of the NULL-terminated name/value list. */
static bool sample_matches(const Sample *s, const char *name, const char *const *labels) {
        size_t n = 0;

        if (!streq(s->name, name))
                return false;
        for (; labels[2 * n]; n++)
                if (!streq_ptr(sample_label(s, labels[2 * n]), labels[2 * n + 1]))
                        return false;
        return n == s->n_labels;
}

#define LABELS(...) ((const char *const[]) { __VA_ARGS__, NULL })

static double value_of(const Exposition *e, const char *name, const char *const *labels) {
        for (size_t i = 0; i < e->n; i++)
                if (sample_matches(&e->samples[i], name, labels))
                        return e->samples[i].value;
        fail_msg("no sample %s with the labels asked for", name);
        return NAN;
}

static size_t count_samples(const Exposition *e, const char *name) {
        size_t n = 0;
        for (size_t i = 0; i < e->n; i++)
                n += streq(e->samples[i].name, name);
        return n;
}

static bool same_labels_but_le(const Sample *a, const Sample *b) {
        size_t n = 0;
        for (size_t l = 0; l < a->n_labels; l++) {
                if (streq(a->label_names[l], "le"))
                        continue;
                if (!streq_ptr(sample_label(b, a->label_names[l]), a->label_values[l]))
                        return false;
                n++;
        }
        return n + (sample_label(b, "le") ? 1 : 0) == b->n_labels;
}

/*
 * Every series of every histogram: buckets in increasing le, counts that
 * never decrease, the last one +Inf and equal to _count, and a _sum.
 * Returns the sum of the _count of histogram name.
 */
static double check_histograms(const Exposition *e, const char *name) {
        double total = 0;

        for (size_t fi = 0; fi < e->n_families; fi++) {
                const Family *f = &e->families[fi];
                _cleanup_free_ char *bucket = NULL, *count = NULL, *sum = NULL;

                if (!streq(f->type, "histogram"))
                        continue;
                assert_true(asprintf(&bucket, "%s_bucket", f->name) > 0);
                assert_true(asprintf(&count, "%s_count", f->name) > 0);
                assert_true(asprintf(&sum, "%s_sum", f->name) > 0);

                for (size_t i = 0; i < e->n; i++) {
                        const Sample *c = &e->samples[i];
                        double prev_le = -INFINITY, prev = 0;
                        bool inf = false, have_sum = false;

                        if (!streq(c->name, count))
                                continue;
                        for (size_t j = 0; j < e->n; j++) {
                                const Sample *b = &e->samples[j];
                                if (streq(b->name, sum) && same_labels_but_le(b, c))
                                        have_sum = true;
                                if (!streq(b->name, bucket) || !same_labels_but_le(c, b))
                                        continue;
                                const char *le = sample_label(b, "le");
                                assert_non_null(le);
                                double l = streq(le, "+Inf") ? INFINITY : strtod(le, NULL);
                                if (!(l > prev_le))
                                        fail_msg("%s: le=%s after le=%g", bucket, le, prev_le);
                                if (b->value < prev)
                                        fail_msg("%s: le=%s has %g, less than the bucket before", bucket, le,
                                                 b->value);
                                prev_le = l;
                                prev = b->value;
                                inf = isinf(l);
                        }
                        if (!inf)
                                fail_msg("%s: no le=\"+Inf\" bucket", bucket);
                        if (prev != c->value)
                                fail_msg("%s: +Inf bucket %g but _count %g", f->name, prev, c->value);
                        if (!have_sum)
                                fail_msg("%s: no _sum", f->name);
                        if (streq(f->name, name))
                                total += c->value;
                }
        }
        return total;
}

static void render(Metrics *m, Manager *mgr, Exposition *ret, char **ret_text) {
        _cleanup_free_ char *text = NULL;
        size_t len = 0;

        assert_int_equal(metrics_render(m, mgr, &text, &len), 0);
        assert_int_equal(len, strlen(text));
        parse(text, ret);
        if (ret_text)
                *ret_text = TAKE_PTR(text);
}

static const char *const own_families[] = {
        "inferd_requests_total", "inferd_request_duration_seconds", "inferd_time_to_first_token_seconds",
        "inferd_prompt_tokens_total", "inferd_generation_tokens_total",
};

static void test_empty(void **state) {
        _cleanup_(metrics_freep) Metrics *m = NULL;
        _cleanup_(exposition_done) Exposition e = {};

        assert_int_equal(metrics_new(&m), 0);
        render(m, NULL, &e, NULL);
        assert_int_equal(e.n, 0);
        /* The families are announced before anything was counted, so a dashboard finds them. */
        for (size_t i = 0; i < ELEMENTSOF(own_families); i++)
                assert_non_null(family_find(&e, own_families[i]));
        assert_string_equal(family_find(&e, "inferd_request_duration_seconds")->type, "histogram");
        assert_string_equal(family_find(&e, "inferd_requests_total")->type, "counter");
}

static void test_requests(void **state) {
        _cleanup_(metrics_freep) Metrics *m = NULL;
        _cleanup_(exposition_done) Exposition e = {};
        const char *d = "inferd_request_duration_seconds_bucket";

        assert_int_equal(metrics_new(&m), 0);
        metrics_request_done(m, "completions", "m1", 200, 3000, 2000, 10, 5);
        metrics_request_done(m, "completions", "m1", 200, 200000, 0, 20, 0);
        metrics_request_done(m, "completions", "m1", 200, 150000000, 1000000, 30, 7);
        metrics_request_done(m, "completions", "m1", 200, 5000, 5000, 1, 1);     /* on a bound: le is <= */
        metrics_request_done(m, "chat_completions", "m1", 200, 1000000, 100000, 40, 9);
        metrics_request_done(m, "models", NULL, 200, 1000, 0, 0, 0);
        metrics_request_done(m, "completions", "nope", 404, 2000, 0, 0, 0);
        render(m, NULL, &e, NULL);

        assert_true(value_of(&e, "inferd_requests_total", LABELS("endpoint", "completions", "model", "m1",
                                                                  "status", "200")) == 4);
        assert_true(value_of(&e, "inferd_requests_total", LABELS("endpoint", "models", "model", "",
                                                                  "status", "200")) == 1);
        assert_true(value_of(&e, "inferd_requests_total", LABELS("endpoint", "completions", "model", "nope",
                                                                  "status", "404")) == 1);
        assert_int_equal(count_samples(&e, "inferd_requests_total"), 4);

        /* Every request is in the duration histogram once. */
        assert_true(check_histograms(&e, "inferd_request_duration_seconds") == 7);
        assert_true(value_of(&e, d, LABELS("endpoint", "completions", "model", "m1", "le", "0.005")) == 2);
        assert_true(value_of(&e, d, LABELS("endpoint", "completions", "model", "m1", "le", "0.25")) == 3);
        assert_true(value_of(&e, d, LABELS("endpoint", "completions", "model", "m1", "le", "120")) == 3);
        assert_true(value_of(&e, d, LABELS("endpoint", "completions", "model", "m1", "le", "+Inf")) == 4);
        assert_true(fabs(value_of(&e, "inferd_request_duration_seconds_sum",
                                  LABELS("endpoint", "completions", "model", "m1")) - 150.208) < 1e-9);
        assert_true(value_of(&e, "inferd_request_duration_seconds_count",
                             LABELS("endpoint", "models", "model", "")) == 1);

        /* Only requests that produced a token have a first-token time. */
        assert_true(check_histograms(&e, "inferd_time_to_first_token_seconds") == 4);
        assert_true(value_of(&e, "inferd_time_to_first_token_seconds_bucket", LABELS("model", "m1", "le", "0.005"))
                    == 2);
        assert_true(value_of(&e, "inferd_time_to_first_token_seconds_bucket", LABELS("model", "m1", "le", "0.1"))
                    == 3);
        assert_true(value_of(&e, "inferd_prompt_tokens_total", LABELS("model", "m1")) == 101);
        assert_true(value_of(&e, "inferd_generation_tokens_total", LABELS("model", "m1")) == 22);
        /* Zero tokens make no series. */
        assert_int_equal(count_samples(&e, "inferd_prompt_tokens_total"), 1);
}

static void test_label_escaping(void **state) {
        _cleanup_(metrics_freep) Metrics *m = NULL;
        _cleanup_(exposition_done) Exposition e = {};
        _cleanup_free_ char *text = NULL;
        const char *nasty = "a\"b\\c\nd} x=\"1\"";
        char longname[METRICS_LABEL_MAX + 2];

        assert_int_equal(metrics_new(&m), 0);
        metrics_request_done(m, "completions", nasty, 200, 1000, 1000, 1, 1);
        metrics_request_done(m, "completions", "\xff\xfe not UTF-8", 400, 1000, 0, 0, 0);
        memset(longname, 'x', sizeof longname - 1);
        longname[sizeof longname - 1] = 0;
        metrics_request_done(m, "completions", longname, 400, 1000, 0, 0, 0);
        longname[METRICS_LABEL_MAX] = 0;
        metrics_request_done(m, "completions", longname, 400, 1000, 0, 0, 0);
        metrics_request_done(m, "completions", "caf\xc3\xa9", 200, 1000, 0, 0, 0);
        render(m, NULL, &e, &text);

        assert_non_null(strstr(text, "model=\"a\\\"b\\\\c\\nd} x=\\\"1\\\"\""));
        assert_true(value_of(&e, "inferd_requests_total", LABELS("endpoint", "completions", "model", nasty,
                                                                  "status", "200")) == 1);
        assert_true(value_of(&e, "inferd_generation_tokens_total", LABELS("model", nasty)) == 1);
        /* Bytes that are not UTF-8, and a name too long to keep, are "other"; UTF-8 and the longest kept are kept. */
        assert_true(value_of(&e, "inferd_requests_total", LABELS("endpoint", "completions", "model", "other",
                                                                  "status", "400")) == 2);
        assert_true(value_of(&e, "inferd_requests_total", LABELS("endpoint", "completions", "model", longname,
                                                                  "status", "400")) == 1);
        assert_true(value_of(&e, "inferd_requests_total", LABELS("endpoint", "completions", "model", "caf\xc3\xa9",
                                                                  "status", "200")) == 1);
}

static void test_bounded(void **state) {
        _cleanup_(metrics_freep) Metrics *m = NULL;
        _cleanup_(exposition_done) Exposition e = {}, e2 = {};
        double total = 0;
        char model[32];
        size_t n;

        assert_int_equal(metrics_new(&m), 0);
        /* A client that makes up a model name per request. */
        for (int i = 0; i < 1000; i++) {
                snprintf(model, sizeof model, "made-up-%d", i);
                metrics_request_done(m, "completions", model, 404, 1000, 0, 0, 0);
        }
        metrics_request_done(m, "completions", "made-up-0", 404, 1000, 0, 0, 0);
        render(m, NULL, &e, NULL);

        n = count_samples(&e, "inferd_requests_total");
        assert_int_equal(n, METRICS_SERIES_MAX + 1);
        for (size_t i = 0; i < e.n; i++)
                if (streq(e.samples[i].name, "inferd_requests_total"))
                        total += e.samples[i].value;
        assert_true(total == 1001);     /* nothing lost, only lumped together */
        assert_true(value_of(&e, "inferd_requests_total", LABELS("endpoint", "completions", "model", "made-up-0",
                                                                  "status", "404")) == 2);
        assert_true(value_of(&e, "inferd_requests_total", LABELS("endpoint", "other", "model", "other",
                                                                  "status", "other")) == 1000 - METRICS_SERIES_MAX);
        assert_int_equal(count_samples(&e, "inferd_request_duration_seconds_count"), METRICS_SERIES_MAX + 1);
        assert_true(check_histograms(&e, "inferd_request_duration_seconds") == 1001);

        /* A thousand more names: not one series more. */
        for (int i = 1000; i < 2000; i++) {
                snprintf(model, sizeof model, "made-up-%d", i);
                metrics_request_done(m, "completions", model, 404, 1000, 1000, 1, 1);
        }
        render(m, NULL, &e2, NULL);
        assert_int_equal(count_samples(&e2, "inferd_requests_total"), METRICS_SERIES_MAX + 1);
        assert_int_equal(count_samples(&e2, "inferd_time_to_first_token_seconds_count"), METRICS_SERIES_MAX + 1);
        assert_int_equal(count_samples(&e2, "inferd_prompt_tokens_total"), METRICS_SERIES_MAX + 1);
        assert_true(check_histograms(&e2, "inferd_time_to_first_token_seconds") == 1000);
}

static void test_gauges(void **state) {
        _cleanup_(metrics_freep) Metrics *m = NULL;
        _cleanup_(exposition_done) Exposition e = {};
        Manager mgr = {};
        Served llama = { .name = (char *) "llama" }, qwen = { .name = (char *) "qwen" };
        RemoteJob remote = {};
        Job jobs[5] = {
                { .served = &llama, .state = JOB_RUNNING },
                { .served = &llama, .state = JOB_QUEUED },
                { .served = &llama, .state = JOB_QUEUED },
                { .served = &qwen, .state = JOB_DONE },
                { .remote = &remote, .state = JOB_RUNNING },    /* runs on another member */
        };

        llama.next = &qwen;
        mgr.served = &llama;
        for (size_t i = 0; i + 1 < ELEMENTSOF(jobs); i++)
                jobs[i].next = &jobs[i + 1];
        mgr.jobs = &jobs[0];

        assert_int_equal(metrics_new(&m), 0);
        metrics_request_done(m, "completions", "llama", 200, 1000, 1000, 1, 1);
        render(m, &mgr, &e, NULL);

        assert_true(value_of(&e, "inferd_queue_depth", LABELS(NULL)) == 3);
        assert_true(value_of(&e, "inferd_jobs_running", LABELS("model", "llama")) == 1);
        assert_true(value_of(&e, "inferd_jobs_queued", LABELS("model", "llama")) == 2);
        assert_true(value_of(&e, "inferd_jobs_running", LABELS("model", "qwen")) == 0);
        assert_true(value_of(&e, "inferd_jobs_queued", LABELS("model", "qwen")) == 0);
        assert_string_equal(family_find(&e, "inferd_queue_depth")->type, "gauge");
        /* No devices, no cluster: the device families are announced empty, the cluster's is left out. */
        assert_non_null(family_find(&e, "inferd_device_memory_used_bytes"));
        assert_int_equal(count_samples(&e, "inferd_device_memory_used_bytes"), 0);
        assert_null(family_find(&e, "inferd_cluster_members"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_empty),
                cmocka_unit_test(test_requests),
                cmocka_unit_test(test_label_escaping),
                cmocka_unit_test(test_bounded),
                cmocka_unit_test(test_gauges),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
