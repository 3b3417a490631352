/* SPDX-License-Identifier: MIT */
#pragma once

/* Between cluster.c (membership, connections), cluster-join.c and route.c. */

#include <event2/event.h>
#include <openssl/ssl.h>

#include "cluster.h"
#include "frame.h"
#include "peer.h"
#include "pki.h"
#include "proto.h"
#include "swim.h"

typedef struct PkiJoin PkiJoin;

/* What we know of one connection. */
typedef struct ConnCtx ConnCtx;
struct ConnCtx {
        ConnCtx *prev, *next;
        Cluster *cluster;
        PeerConn *conn;
        Member *member;                 /* outbound: whom we dialled */
        SwimId peer;                    /* inbound: from the verified certificate */
        bool have_peer;
        bool hello;                     /* inbound: "hello" received */
        bool join_server;               /* inbound join connection */
        bool join_client;               /* our connection to the node we join through */
        uint64_t established_at;
};

struct Cluster {
        Manager *manager;
        ClusterState state;
        char *dir;                      /* STATE/cluster */
        char *name;
        char *fingerprint;              /* CA, hex */
        char *advertise;

        SSL_CTX *server_ctx, *client_ctx;
        struct evconnlistener *listener;
        struct evdns_base *dns;         /* NULL: blocking lookups */
        ConnCtx *conns;                 /* every open connection */
        struct {
                char host[128];                  /* "HOST reason" */
                uint64_t usec;
        } refused[16];                  /* refusals logged lately */

        Swim *swim;
        SwimConfig swim_config;
        struct event *timer;            /* SWIM's next deadline */
        struct event *state_timer;      /* once a second: share our state, housekeeping */
        struct event *leave_timer;
        Member **members;               /* self included */
        size_t n_members;
        bool members_dirty;
        bool leaving_quietly;

        uint64_t meta_gen;
        FrameBuffer state_frame;        /* our current "state", ready to send */
        FrameBuffer state_digest;       /* the same with gen 0: tells whether anything changed */
        bool state_dirty;
        double tps;                     /* smoothed tokens/s of generations here */

        /* Joining (client side). */
        PeerConn *join_conn;
        PkiJoin *join_pki;
        uint8_t join_fp[32];
        uint8_t join_token_id[8];
        uint8_t join_secret[32];
        struct event *join_timer;
        ClusterJoinDone join_done;
        void *join_userdata;

};

/* A node id as logs and the bus show it: 32 lowercase hex digits. */
static inline char *member_id_hex(const SwimId *id, char buf[33]) {
        return pki_hex(id->bytes, sizeof id->bytes, buf);
}

int cluster_activate(Cluster *c, const SwimUpdate *members, size_t n_members);
int cluster_pick_advertise(Cluster *c, char **ret);
/* Dials addr with ctx (its protocol: mesh or join); the connection's ConnCtx is *ret's data. */
int cluster_connect(Cluster *c, SSL_CTX *ctx, const char *addr, Member *mb, PeerConn **ret);
/* Unlinks and frees a connection's context (the connection stays open). */
void cluster_conn_forget(Cluster *c, ConnCtx *x);
void cluster_rearm(Cluster *c);
void cluster_save_members(Cluster *c);
int cluster_write_name(Cluster *c, const char *name);
int cluster_disk_models(Cluster *c, char ***ret);
double cluster_capacity(const Cluster *c);
bool cluster_member_usable(Cluster *c, const Member *mb);
int cluster_errorf(char **ret_error, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* cluster-join.c */
void cluster_join_conn_established(Cluster *c, PeerConn *pc);
void cluster_join_conn_closed(Cluster *c, PeerConn *pc, const char *reason);
void cluster_join_client_frame(Cluster *c, PeerConn *pc, ProtoType t, Frame *f);
void cluster_join_server_frame(Cluster *c, PeerConn *pc, Frame *f);
void cluster_join_abort(Cluster *c, const char *reason);

/* Told to the bus side (bus/cluster-dbus.c) when a leave has finished. */
void cluster_left(Manager *m);
