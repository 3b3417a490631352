/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Requests that run on another member.
 *
 * The node a client called (the origin) keeps the Job, its bus object and
 * its caller; the member that serves the model runs an ordinary local job
 * for it and streams "job-started", "piece" and "job-end" back. The origin
 * keeps the tokens delivered so far: if the serving member dies or becomes
 * unreachable, the same request goes to the next best member with those
 * tokens to resume from, so the client gets one complete answer.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "frame.h"
#include "proto.h"

typedef struct Job Job;

/*
 * Where a request for model should run: 0 here (only when here is true),
 * 1 with *ret the member that has the least outstanding work for its
 * capacity, -ENOENT when neither this node nor any usable member has it
 * ready. c may be NULL (not in a cluster).
 */
int route_pick(Cluster *c, const char *model, bool here, Member **ret);

/* Sends j's request to mb, with what was delivered so far to resume from. */
int route_send(Cluster *c, Job *j, Member *mb);
/* The caller cancelled j: tell the member running it. */
void route_cancel(Cluster *c, Job *j);

/* Job frames from member from. -EBADMSG and friends for a malformed frame. */
int route_frame(Cluster *c, Member *from, ProtoType t, Frame *f, char **ret_error);

/* A job run here for another member reports (serve-dbus.c calls these). */
void route_job_started(Cluster *c, Job *j);
void route_job_piece(Cluster *c, Job *j, const char *text, const int32_t *tokens, size_t n_tokens);
void route_job_end(Cluster *c, Job *j);

/* mb is dead, left or forgotten: its jobs move elsewhere, jobs run here for it stop. */
void route_member_gone(Cluster *c, Member *mb);
/* Our connection to mb broke: what we sent it may be lost, so its jobs move elsewhere. */
void route_member_unreachable(Cluster *c, Member *mb);
/* Once a second: jobs a member never started move on. */
void route_tick(Cluster *c);
/* Leaving the cluster or shutting down: routed jobs end with an error, jobs for others stop. */
void route_stop(Cluster *c);
