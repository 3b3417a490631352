/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * What /metrics shows, in the Prometheus text exposition format (0.0.4):
 *
 *   inferd_requests_total{endpoint,model,status}                counter
 *   inferd_request_duration_seconds{endpoint,model}             histogram
 *   inferd_time_to_first_token_seconds{model}                   histogram
 *   inferd_prompt_tokens_total{model}                           counter
 *   inferd_generation_tokens_total{model}                       counter
 * and, read from the Manager when rendering:
 *   inferd_queue_depth                                          gauge
 *   inferd_jobs_running{model}, inferd_jobs_queued{model}       gauge
 *   inferd_device_memory_used_bytes{device,name}                gauge
 *   inferd_device_memory_free_bytes{device,name}                gauge
 *   inferd_cluster_members{state}                               gauge (in a cluster only)
 *
 * Label values come from clients (a model name that does not exist), so
 * what is kept is bounded: each family keeps at most METRICS_SERIES_MAX label
 * sets, and what comes after lands in one series whose labels are all
 * "other"; a value that is not UTF-8 or longer than METRICS_LABEL_MAX bytes
 * is "other" as well. Memory stays the same whatever clients send.
 *
 * Everything runs on the event loop's thread.
 */

#include <stddef.h>
#include <stdint.h>

#define METRICS_SERIES_MAX 256
#define METRICS_LABEL_MAX 128
#define METRICS_OTHER "other"

typedef struct Manager Manager;
typedef struct Metrics Metrics;

int metrics_new(Metrics **ret);
Metrics *metrics_free(Metrics *m);
static inline void metrics_freep(Metrics **m) {
        if (*m)
                metrics_free(*m);
}

/*
 * One finished HTTP request. endpoint: "completions", "chat_completions",
 * "models", ...; model may be NULL (the label is then ""); ttft_usec 0 when
 * no token came (then the request is not in the first-token histogram).
 */
void metrics_request_done(Metrics *m, const char *endpoint, const char *model, int status, uint64_t duration_usec,
                          uint64_t ttft_usec, uint32_t prompt_tokens, uint32_t generated_tokens);

/*
 * The text exposition of everything, plus the gauges read now from mgr (none
 * when mgr is NULL). *ret_text is NUL-terminated (free() it). -ENOMEM.
 */
int metrics_render(Metrics *m, Manager *mgr, char **ret_text, size_t *ret_len);
