/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * This node's place in the cluster: identity (cluster CA, node certificate),
 * the mesh of TLS connections to the other members, SWIM membership, and
 * what every member shares about itself (devices, models, load).
 *
 * Lives on the event loop's thread. The protocol pieces it drives have no
 * sockets in them: swim.c (membership), proto.c (messages), pki.c/token.c
 * (certificates and join tokens); peer.c is the transport. Requests that run
 * on another member are route.c's.
 */

#include <stdbool.h>
#include <stdint.h>

#include "proto.h"
#include "swim.h"

typedef struct Manager Manager;
typedef struct Cluster Cluster;
typedef struct PeerConn PeerConn;

typedef enum ClusterState {
        CLUSTER_NONE,
        CLUSTER_JOINING,
        CLUSTER_ACTIVE,
        CLUSTER_LEAVING,
} ClusterState;

/* What a member last told about itself: its last "state" frame, kept whole. */
typedef struct MemberMeta {
        Frame *frame;                   /* NULL: nothing heard yet */
        ProtoState st;                  /* points into frame */
} MemberMeta;

typedef struct Member {
        SwimId id;
        char addr[SWIM_ADDR_MAX];
        bool self;
        PeerConn *out;                  /* our connection to it: we send on it, it answers on its own */
        uint64_t connect_failed_usec;   /* don't redial a dead address every message */
        uint64_t state_asked_usec;
        MemberMeta meta;                /* gen 0: nothing heard yet */
        uint64_t meta_gen_known;        /* the newest generation gossip has told of */
        uint32_t routed;                /* our jobs running there now */
} Member;

typedef void (*ClusterJoinDone)(Manager *m, int r, const char *error, void *userdata);

int cluster_new(Manager *m, Cluster **ret);
Cluster *cluster_free(Cluster *c);
static inline void cluster_freep(Cluster **c) {
        if (*c)
                cluster_free(*c);
}

/* Picks up the identity in STATE/cluster, if any, and rejoins the members it knew. */
int cluster_start(Cluster *c);

int cluster_init(Cluster *c, const char *name, char **ret_error);
int cluster_create_token(Cluster *c, uint64_t ttl_usec, char **ret_token, uint64_t *ret_expires, char **ret_error);
/* Asynchronous: done() is called once, on success or failure. */
int cluster_join(Cluster *c, const char *address, const char *token, ClusterJoinDone done, void *userdata,
                 char **ret_error);
int cluster_leave(Cluster *c, char **ret_error);

ClusterState cluster_state(const Cluster *c);
const char *cluster_state_to_string(ClusterState s);
const char *cluster_name(const Cluster *c);
const char *cluster_address(const Cluster *c);
const char *cluster_fingerprint(const Cluster *c);

/* Members, self included; valid until the loop runs again. */
size_t cluster_members(Cluster *c, Member ***ret);
Member *cluster_member(Cluster *c, const SwimId *id);
const SwimUpdate *cluster_member_swim(Cluster *c, const Member *mb);
void cluster_member_rtt(Cluster *c, const Member *mb, uint64_t *ret_rtt_usec, uint64_t *ret_last_heard_realtime);

/* Sends a frame to a member over our connection to it, dialling if needed. */
int cluster_send(Cluster *c, Member *mb, const FrameBuffer *frame);

/* This node's state changed (models, jobs, speed): it is spread within a second. */
void cluster_state_changed(Cluster *c);
/* A generation finished here: feeds the node's tokens/s figure. */
void cluster_note_speed(Cluster *c, uint32_t tokens, uint64_t usec);
