/* SPDX-License-Identifier: MIT */
#pragma once

/* Between serve.c (worker tasks) and bus/serve-dbus.c (the loop side). */

#include "serve.h"

/* Queue work on a device's worker. */
int serve_queue_load(Served *s, Worker *w, GpuDevice *dev);
int serve_queue_unload(Served *s, Worker *w);
int serve_queue_job(Job *j, Worker *w);

/* Called on the loop thread when a task reports. They take ownership of model/error. */
void served_load_finished(Served *s, int r, Model *model, const char *error);
void served_unload_finished(Served *s);
void job_started(Job *j, size_t n_prompt);
void job_piece(Job *j, const char *text, const int32_t *tokens, size_t n_tokens);
void job_finished(Job *j, const char *reason, const char *error, uint64_t prompt_usec, uint64_t generate_usec);
