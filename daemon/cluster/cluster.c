/* SPDX-License-Identifier: MIT */
/*
 * The cluster as this node sees it. Connections: every node dials each
 * member it has something to say to and sends only on that connection;
 * what it receives arrives on the connections others dialled. So a pair of
 * nodes has at most two connections, nobody has to decide which one wins,
 * and a dialler always knows whom it reached (its certificate). The first
 * frame on a connection is "hello", the dialler's name and address.
 */
#include "address.h"
#include "build-config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <event2/dns.h>
#include <event2/listener.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cluster-internal.h"
#include "fileio.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "pki.h"
#include "route.h"
#include "serve.h"
#include "time-util.h"
#include "tls.h"
#include "utf8.h"
#include "vkdev.h"

/* Refuse more than this many connections in, so a flood cannot use up the fds. */
#define INBOUND_MAX 1024
#define STATE_PERIOD_USEC (1 * USEC_PER_SEC)
#define JOINS_MAX 16
#define JOIN_REQUEST_TIMEOUT_SEC 10

const char *cluster_state_to_string(ClusterState s) {
        static const char *const names[] = {
                [CLUSTER_NONE] = "none",
                [CLUSTER_JOINING] = "joining",
                [CLUSTER_ACTIVE] = "active",
                [CLUSTER_LEAVING] = "leaving",
        };
        return names[s];
}

ClusterState cluster_state(const Cluster *c) {
        return c ? c->state : CLUSTER_NONE;
}

const char *cluster_name(const Cluster *c) {
        return c->state == CLUSTER_NONE || !c->name ? "" : c->name;
}

const char *cluster_address(const Cluster *c) {
        return c->state == CLUSTER_NONE ? "" : c->advertise;
}

const char *cluster_fingerprint(const Cluster *c) {
        return c->state == CLUSTER_NONE ? "" : c->fingerprint;
}

static uint64_t now_mono(void) {
        return now_usec(CLOCK_MONOTONIC);
}

/* ---- members ---- */

static void member_free(Member *mb) {
        if (!mb)
                return;
        if (mb->out) {
                ConnCtx *x = peer_conn_get_data(mb->out);
                if (x)
                        x->member = NULL;
                peer_conn_close(mb->out, "member forgotten");
        }
        frame_free(mb->meta.frame);
        free(mb);
}

Member *cluster_member(Cluster *c, const SwimId *id) {
        for (size_t i = 0; i < c->n_members; i++)
                if (memcmp(&c->members[i]->id, id, sizeof *id) == 0)
                        return c->members[i];
        return NULL;
}

static Member *member_get(Cluster *c, const SwimId *id, const char *addr) {
        Member *mb = cluster_member(c, id);
        if (mb) {
                if (addr && *addr && !streq(mb->addr, addr))
                        snprintf(mb->addr, sizeof mb->addr, "%s", addr);
                return mb;
        }
        Member **a = reallocarray(c->members, c->n_members + 1, sizeof *a);
        if (!a)
                return NULL;
        c->members = a;
        mb = calloc(1, sizeof *mb);
        if (!mb)
                return NULL;
        mb->id = *id;
        snprintf(mb->addr, sizeof mb->addr, "%s", addr ? addr : "");
        c->members[c->n_members++] = mb;
        return mb;
}

size_t cluster_members(Cluster *c, Member ***ret) {
        *ret = c->members;
        return c->n_members;
}

const SwimUpdate *cluster_member_swim(Cluster *c, const Member *mb) {
        return c->swim ? swim_find(c->swim, &mb->id) : NULL;
}

bool cluster_member_usable(Cluster *c, const Member *mb) {
        const SwimUpdate *u = cluster_member_swim(c, mb);
        return u && (u->state == SWIM_ALIVE || u->state == SWIM_SUSPECT);
}

void cluster_member_rtt(Cluster *c, const Member *mb, uint64_t *ret_rtt_usec, uint64_t *ret_last_heard_realtime) {
        SwimMemberInfo info;
        *ret_rtt_usec = 0;
        *ret_last_heard_realtime = 0;
        if (!c->swim || swim_member_info(c->swim, &mb->id, &info) < 0)
                return;
        *ret_rtt_usec = info.rtt_usec;
        if (info.last_heard_usec) {
                /* SWIM keeps monotonic times; users want wall-clock ones. */
                uint64_t mono = now_mono(), real = now_usec(CLOCK_REALTIME);
                uint64_t ago = mono > info.last_heard_usec ? mono - info.last_heard_usec : 0;
                *ret_last_heard_realtime = real > ago ? real - ago : 0;
        }
}

/* Drops members SWIM has forgotten (reaped after RemoveDeadAfter=). */
static void members_prune(Cluster *c) {
        size_t k = 0;
        for (size_t i = 0; i < c->n_members; i++) {
                Member *mb = c->members[i];
                if (!mb->self && c->swim && !swim_find(c->swim, &mb->id)) {
                        route_member_gone(c, mb);
                        member_free(mb);
                        continue;
                }
                c->members[k++] = mb;
        }
        c->n_members = k;
}

/* ---- connections ---- */

static void conn_closed(PeerConn *pc, const char *reason, void *userdata);
static void conn_established(PeerConn *pc, void *userdata);
static void conn_frame(PeerConn *pc, Frame *f, void *userdata);

static const PeerCallbacks conn_callbacks = {
        .established = conn_established,
        .frame = conn_frame,
        .closed = conn_closed,
};

static ConnCtx *conn_ctx_new(Cluster *c, PeerConn *pc) {
        ConnCtx *x = calloc(1, sizeof *x);
        if (!x)
                return NULL;
        x->cluster = c;
        x->conn = pc;
        x->next = c->conns;
        if (c->conns)
                c->conns->prev = x;
        c->conns = x;
        return x;
}

static void conn_ctx_unlink(Cluster *c, ConnCtx *x) {
        if (x->prev)
                x->prev->next = x->next;
        else
                c->conns = x->next;
        if (x->next)
                x->next->prev = x->prev;
}

static bool refusal_should_log(Cluster *c, const char *remote, const char *reason) {
        char host[80];
        uint64_t now = now_mono();
        size_t oldest = 0;

        /* The host without the port (a retrying client gets a new port every time) and the reason. */
        snprintf(host, sizeof host, "%s", remote);
        char *colon = strrchr(host, ':');
        if (colon)
                snprintf(colon, sizeof host - (size_t) (colon - host), " %.60s", reason);
        for (size_t i = 0; i < ELEMENTSOF(c->refused); i++) {
                if (streq(c->refused[i].host, host)) {
                        if (now - c->refused[i].usec < 60 * USEC_PER_SEC)
                                return false;
                        c->refused[i].usec = now;
                        return true;
                }
                if (c->refused[i].usec < c->refused[oldest].usec)
                        oldest = i;
        }
        snprintf(c->refused[oldest].host, sizeof c->refused[oldest].host, "%s", host);
        c->refused[oldest].usec = now;
        return true;
}

static void conn_closed(PeerConn *pc, const char *reason, void *userdata) {
        Cluster *c = userdata;
        ConnCtx *x = peer_conn_get_data(pc);
        char hex[33];

        if (!x)
                return;
        conn_ctx_unlink(c, x);
        if (peer_conn_protocol_error(pc))
                log_fields(LOG_WARNING, 0, LOG_FIELDS(INFERD_MESSAGE_PEER_REFUSED, "PEER", peer_conn_remote(pc)),
                           "Dropped the connection from %s: %s", peer_conn_remote(pc), reason);
        if (x->join_client) {
                cluster_join_conn_closed(c, pc, reason);
        } else if (x->member) {
                Member *mb = x->member;
                mb->out = NULL;
                if (!x->established_at) {
                        mb->connect_failed_usec = now_mono();
                        log_debug("Cannot reach member %s at %s: %s", member_id_hex(&mb->id, hex), mb->addr, reason);
                } else
                        log_debug("Connection to member %s closed: %s", member_id_hex(&mb->id, hex), reason);
                if (c->swim && x->established_at) {
                        swim_peer_closed(c->swim, &mb->id, now_mono());
                        cluster_rearm(c);
                }
                route_member_unreachable(c, mb);
        } else if ((!x->established_at || !x->have_peer) && !peer_conn_outbound(pc) && !x->join_server) {
                /* Someone without this cluster's certificate, or not speaking TLS at all. A host that keeps
                 * trying is logged once a minute, not at every attempt. */
                if (refusal_should_log(c, peer_conn_remote(pc), reason))
                        log_fields(LOG_WARNING, 0, LOG_FIELDS(INFERD_MESSAGE_PEER_REFUSED, "PEER", peer_conn_remote(pc)),
                                   "Refused a connection from %s: %s", peer_conn_remote(pc), reason);
        }
        else if (x->have_peer && !c->leaving_quietly)
                log_debug("Connection from member %s (%s) closed: %s", member_id_hex(&x->peer, hex), peer_conn_remote(pc),
                          reason);
        free(x);
}

static void conn_established(PeerConn *pc, void *userdata) {
        Cluster *c = userdata;
        ConnCtx *x = peer_conn_get_data(pc);
        SSL *ssl = peer_conn_ssl(pc);
        char hex[33], hex2[33];
        SwimId id;

        x->established_at = now_mono();
        if (x->join_client) {
                cluster_join_conn_established(c, pc);
                return;
        }
        if (!peer_conn_outbound(pc) && tls_connection_is_join(ssl)) {
                if (c->state != CLUSTER_ACTIVE) {
                        peer_conn_close(pc, "not accepting joins now");
                        return;
                }
                /* Unauthenticated: one request, soon, and only a few at a time. */
                size_t n = 0;
                for (ConnCtx *y = c->conns; y; y = y->next)
                        n += y->join_server;
                if (n >= JOINS_MAX) {
                        peer_conn_close(pc, "too many joins at once");
                        return;
                }
                x->join_server = true;
                peer_conn_set_read_timeout(pc, JOIN_REQUEST_TIMEOUT_SEC);
                return;
        }
        if (tls_peer_node_id(ssl, id.bytes) < 0) {
                peer_conn_close(pc, "no verified node certificate");
                return;
        }
        x->peer = id;
        x->have_peer = true;
        if (x->member && memcmp(&x->member->id, &id, sizeof id) != 0) {
                log_warning("Member at %s presented the certificate of node %s, not of %s; dropping it.",
                            peer_conn_remote(pc), member_id_hex(&id, hex), member_id_hex(&x->member->id, hex2));
                peer_conn_close(pc, "certificate of another node");
        }
}

static void conn_frame(PeerConn *pc, Frame *frame, void *userdata) {
        _cleanup_(frame_freep) Frame *f = frame;
        Cluster *c = userdata;
        ConnCtx *x = peer_conn_get_data(pc);
        _cleanup_free_ char *why = NULL;
        ProtoType t = proto_frame_type(f);
        char hex[33];
        int r = 0;

        if (!x)
                return;
        if (x->join_client) {
                cluster_join_client_frame(c, pc, t, f);
                return;
        }
        if (x->join_server) {
                if (t != PROTO_JOIN) {
                        peer_conn_close(pc, "a joining node may only send \"join\"");
                        return;
                }
                cluster_join_server_frame(c, pc, f);
                return;
        }
        if (peer_conn_outbound(pc)) {
                /* We only send on our own connections; a peer answering on one is confused. */
                peer_conn_close(pc, "unexpected frame on an outgoing connection");
                return;
        }
        if (!x->have_peer)
                return;
        if (!x->hello) {
                ProtoHello h;
                if (t != PROTO_HELLO) {
                        peer_conn_close(pc, "expected \"hello\" first");
                        return;
                }
                r = proto_unpack_hello(f, &h, &why);
                if (r < 0)
                        goto bad;
                if (memcmp(&h.node, &x->peer, sizeof h.node) != 0) {
                        peer_conn_close(pc, "\"hello\" names another node than its certificate");
                        return;
                }
                x->hello = true;
                if (c->swim && !swim_find(c->swim, &x->peer)) {
                        (void) swim_add_seed(c->swim, &x->peer, h.addr);
                        cluster_rearm(c);
                }
                Member *mb = member_get(c, &x->peer, swim_find(c->swim, &x->peer) ? NULL : h.addr);
                (void) mb;
                log_debug("Member %s (%s) connected from %s.", h.name, member_id_hex(&x->peer, hex), peer_conn_remote(pc));
                return;
        }
        if (c->state != CLUSTER_ACTIVE && c->state != CLUSTER_LEAVING)
                return;

        switch (t) {
        case PROTO_SWIM: {
                SwimMsg m;
                r = proto_unpack_swim(f, &m, &why);
                if (r < 0)
                        goto bad;
                swim_receive(c->swim, &x->peer, &m, now_mono());
                cluster_rearm(c);
                return;
        }
        case PROTO_STATE_REQ: {
                Member *mb = cluster_member(c, &x->peer);
                if (mb && c->state_frame.len > 0)
                        (void) cluster_send(c, mb, &c->state_frame);
                return;
        }
        case PROTO_STATE: {
                ProtoState st;
                r = proto_unpack_state(f, &st, &why);
                if (r < 0)
                        goto bad;
                if (memcmp(&st.node, &x->peer, sizeof st.node) != 0) {
                        peer_conn_close(pc, "\"state\" about another node");
                        return;
                }
                Member *mb = cluster_member(c, &x->peer);
                if (!mb || (mb->meta.frame && st.gen < mb->meta.st.gen))
                        return;
                frame_free(mb->meta.frame);
                mb->meta.frame = TAKE_PTR(f);
                mb->meta.st = st;
                mb->state_asked_usec = 0;
                return;
        }
        case PROTO_LEAVE: {
                const SwimUpdate *u = swim_find(c->swim, &x->peer);
                if (!u)
                        return;
                SwimUpdate left = *u;
                left.state = SWIM_LEFT;
                (void) swim_merge(c->swim, &left, 1, now_mono());
                cluster_rearm(c);
                return;
        }
        case PROTO_JOB:
        case PROTO_JOB_STARTED:
        case PROTO_PIECE:
        case PROTO_JOB_END:
        case PROTO_JOB_CANCEL: {
                Member *mb = cluster_member(c, &x->peer);
                if (!mb)
                        return;
                r = route_frame(c, mb, t, f, &why);
                if (r < 0)
                        goto bad;
                return;
        }
        case PROTO_HELLO:
        case PROTO_JOIN:
        case PROTO_JOIN_OK:
        case PROTO_JOIN_ERR:
                peer_conn_close(pc, "unexpected message");
                return;
        default:
                /* A newer peer's message: ignoring it is how the protocol grows. */
                log_debug("Ignoring a \"%s\" frame from %s.", frame_type(f), peer_conn_remote(pc));
                return;
        }
bad:
        log_fields(LOG_WARNING, 0, LOG_FIELDS(INFERD_MESSAGE_PEER_REFUSED, "PEER", peer_conn_remote(pc)),
                   "Dropped the connection from %s: bad \"%s\" frame: %s", peer_conn_remote(pc), frame_type(f),
                   why ? why : strerror(-r));
        peer_conn_close(pc, "bad frame");
}

void cluster_conn_forget(Cluster *c, ConnCtx *x) {
        conn_ctx_unlink(c, x);
        free(x);
}

int cluster_connect(Cluster *c, SSL_CTX *ctx, const char *addr, Member *mb, PeerConn **ret) {
        PeerConn *pc = NULL;
        int r = peer_conn_connect(c->manager->event, c->dns, ctx, addr, &conn_callbacks, c, &pc);
        if (r < 0)
                return r;
        ConnCtx *x = conn_ctx_new(c, pc);
        if (!x) {
                peer_conn_free(pc);
                return -ENOMEM;
        }
        x->member = mb;
        peer_conn_set_data(pc, x);
        *ret = pc;
        return 0;
}

int cluster_send(Cluster *c, Member *mb, const FrameBuffer *frame) {
        int r;

        if (mb->self || !c->client_ctx)
                return -EINVAL;
        if (!mb->out) {
                _cleanup_(frame_buffer_done) FrameBuffer hello = {};
                uint64_t now = now_mono();
                if (!mb->addr[0])
                        return -EHOSTUNREACH;
                /* A dead address is tried about twice a probe period, not per message. */
                if (mb->connect_failed_usec && now - mb->connect_failed_usec < c->swim_config.probe_interval_usec / 2)
                        return -EHOSTUNREACH;
                PeerConn *pc = NULL;
                r = cluster_connect(c, c->client_ctx, mb->addr, mb, &pc);
                if (r < 0) {
                        mb->connect_failed_usec = now;
                        return r;
                }
                mb->out = pc;
                /* Queued ahead of the handshake; goes out when it completes. */
                ProtoHello h = {
                        .name = c->manager->config->node_name,
                        .addr = c->advertise,
                        .cluster = c->name,
                        .incarnation = c->swim ? swim_incarnation(c->swim) : 0,
                        .version = PACKAGE_VERSION,
                };
                memcpy(h.node.bytes, c->manager->node_id.bytes, sizeof h.node.bytes);
                r = proto_pack_hello(&hello, &h);
                if (r >= 0)
                        r = peer_conn_send(pc, &hello);
                if (r < 0)
                        return r;
        }
        return peer_conn_send(mb->out, frame);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int socklen,
                      void *userdata) {
        Cluster *c = userdata;
        char remote[80] = "?";
        size_t n = 0;

        for (ConnCtx *x = c->conns; x; x = x->next)
                n++;
        if (sa->sa_family == AF_INET) {
                struct sockaddr_in *in = (struct sockaddr_in *) sa;
                char a[INET_ADDRSTRLEN];
                inet_ntop(AF_INET, &in->sin_addr, a, sizeof a);
                snprintf(remote, sizeof remote, "%s:%u", a, ntohs(in->sin_port));
        } else if (sa->sa_family == AF_INET6) {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) sa;
                char a[INET6_ADDRSTRLEN];
                inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof a);
                snprintf(remote, sizeof remote, "[%s]:%u", a, ntohs(in6->sin6_port));
        }
        if (n >= INBOUND_MAX) {
                log_warning("Refusing a connection from %s: %d connections open.", remote, INBOUND_MAX);
                evutil_closesocket(fd);
                return;
        }
        PeerConn *pc = NULL;
        if (peer_conn_accept(c->manager->event, c->server_ctx, fd, remote, &conn_callbacks, c, &pc) < 0)
                return;
        ConnCtx *x = conn_ctx_new(c, pc);
        if (!x) {
                peer_conn_free(pc);
                return;
        }
        peer_conn_set_data(pc, x);
}

static void on_accept_error(struct evconnlistener *l, void *userdata) {
        /* EMFILE and friends: logged, the listener keeps going. */
        log_warning_errno(errno, "Failed to accept a cluster connection: %m");
}

/* ---- SWIM glue ---- */

void cluster_rearm(Cluster *c) {
        if (!c->swim || !c->timer)
                return;
        uint64_t d = swim_next_deadline(c->swim), now = now_mono();
        uint64_t wait = d > now ? d - now : 0;
        struct timeval tv = { .tv_sec = (time_t) (wait / USEC_PER_SEC), .tv_usec = (suseconds_t) (wait % USEC_PER_SEC) };
        event_add(c->timer, &tv);
}

static void on_swim_timer(evutil_socket_t fd, short what, void *userdata) {
        Cluster *c = userdata;
        swim_tick(c->swim, now_mono());
        cluster_rearm(c);
}

static void swim_send(void *userdata, const SwimId *to, const char *to_addr, const SwimMsg *msg) {
        _cleanup_(frame_buffer_done) FrameBuffer b = {};
        Cluster *c = userdata;
        Member *mb = member_get(c, to, to_addr);
        if (!mb || proto_pack_swim(&b, msg) < 0)
                return;
        (void) cluster_send(c, mb, &b);
}

static void ask_state(Cluster *c, Member *mb) {
        _cleanup_(frame_buffer_done) FrameBuffer b = {};
        if (mb->self || proto_pack_state_req(&b) < 0)
                return;
        if (cluster_send(c, mb, &b) >= 0)
                mb->state_asked_usec = now_mono();
}

static void swim_member_changed(void *userdata, const SwimUpdate *u, SwimState old, bool is_new) {
        Cluster *c = userdata;
        char hex[33];
        Member *mb = member_get(c, &u->id, u->addr);
        if (!mb)
                return;
        c->members_dirty = true;
        if (mb->self)
                return;
        const char *name = mb->meta.frame ? mb->meta.st.name : member_id_hex(&u->id, hex);
        if (is_new)
                log_info("Member %s at %s joined (%s).", name, u->addr, swim_state_to_string(u->state));
        else if (old != u->state) {
                int level = u->state == SWIM_ALIVE ? LOG_INFO : u->state == SWIM_LEFT ? LOG_INFO : LOG_WARNING;
                log_fields(level, 0, LOG_FIELDS(INFERD_MESSAGE_MEMBER_STATE, "PEER", u->addr, "MEMBER_STATE",
                                                swim_state_to_string(u->state)),
                           "Member %s at %s is now %s (was %s).", name, u->addr, swim_state_to_string(u->state),
                           swim_state_to_string(old));
        }
        /* A member (back) among the living: what it offers is worth knowing at once. */
        if (u->state == SWIM_ALIVE && (is_new || old != SWIM_ALIVE) && !mb->meta.frame)
                ask_state(c, mb);
        if (u->state == SWIM_DEAD || u->state == SWIM_LEFT) {
                if (mb->out)
                        peer_conn_close(mb->out, u->state == SWIM_DEAD ? "member dead" : "member left");
                route_member_gone(c, mb);
        }
}

static void swim_meta_changed(void *userdata, const SwimId *id, uint64_t gen) {
        Cluster *c = userdata;
        Member *mb = member_get(c, id, NULL);
        if (!mb)
                return;
        if (mb->self) {
                /* An earlier run of ours got further: continue above it. */
                if (gen > c->meta_gen)
                        c->meta_gen = gen;
                return;
        }
        mb->meta_gen_known = MAX(mb->meta_gen_known, gen);
        if ((!mb->meta.frame || mb->meta.st.gen < gen) && !mb->state_asked_usec)
                ask_state(c, mb);
}

static const SwimCallbacks swim_callbacks = {
        .send = swim_send,
        .member_changed = swim_member_changed,
        .meta_changed = swim_meta_changed,
};

/* ---- what this node shares ---- */

static int build_state(Cluster *c, uint64_t gen, FrameBuffer *b) {
        Manager *m = c->manager;
        ProtoDevice devs[PROTO_DEVICES_MAX];
        size_t n_devs = 0, n_models = 0;
        _cleanup_free_ ProtoModel *models = NULL;
        _cleanup_strv_free_ char **disk = NULL;

        for (size_t i = 0; i < gpu_instance_n_devices(m->gpu) && n_devs < PROTO_DEVICES_MAX; i++) {
                if (!m->engines || !m->engines[i])
                        continue;
                const GpuDeviceInfo *d = gpu_instance_device(m->gpu, i);
                uint64_t used = 0, avail = 0;
                if (gpu_device_memory_usage(m->gpu, i, &used, &avail) < 0)
                        avail = d->device_local_memory;
                devs[n_devs++] = (ProtoDevice) {
                        .name = d->name,
                        .type = d->type,
                        .total_bytes = d->device_local_memory,
                        .free_bytes = avail,
                };
        }
        for (Served *s = m->served; s; s = s->next)
                n_models++;
        models = calloc(MAX(n_models, 1u), sizeof *models);
        if (!models)
                return -ENOMEM;
        n_models = 0;
        for (Served *s = m->served; s && n_models < PROTO_MODELS_MAX; s = s->next) {
                if (s->unloading)
                        continue;
                const ModelInfo *mi = s->model ? model_info(s->model) : NULL;
                const ModelHParams *hp = s->model ? model_hparams(s->model) : NULL;
                models[n_models++] = (ProtoModel) {
                        .name = s->name,
                        .arch = hp ? hp->arch : "unknown",
                        .params = mi ? mi->n_params : 0,
                        .quant = mi && mi->file_type && *mi->file_type ? mi->file_type : "unknown",
                        .device_bytes = mi ? mi->device_bytes : 0,
                        .state = s->model ? PROTO_MODEL_READY : PROTO_MODEL_LOADING,
                };
        }
        (void) cluster_disk_models(c, &disk);
        ProtoState st = {
                .gen = gen,
                .name = m->config->node_name,
                .version = PACKAGE_VERSION,
                .addr = c->advertise,
                .queue = serve_jobs_active(m),
                .tps = c->tps,
                .capacity = cluster_capacity(c),
                .devices = devs,
                .n_devices = n_devs,
                .models = models,
                .n_models = n_models,
                .disk_models = disk,
        };
        memcpy(st.node.bytes, m->node_id.bytes, sizeof st.node.bytes);
        return proto_pack_state(b, &st);
}

double cluster_capacity(const Cluster *c) {
        /* Tokens per second this node has shown; a node that has not run anything yet counts as 1. */
        return c->tps > 1.0 ? c->tps : 1.0;
}

void cluster_note_speed(Cluster *c, uint32_t tokens, uint64_t usec) {
        if (!c || tokens < 2 || usec == 0)
                return;
        double tps = (double) tokens * 1e6 / (double) usec;
        c->tps = c->tps > 0 ? 0.7 * c->tps + 0.3 * tps : tps;
        c->state_dirty = true;
}

void cluster_state_changed(Cluster *c) {
        if (c)
                c->state_dirty = true;
}

/* Publishes a new generation when what we share changed; at most once a period. */
static void publish_state(Cluster *c) {
        _cleanup_(frame_buffer_done) FrameBuffer probe = {}, b = {};

        if (build_state(c, 0, &probe) < 0)
                return;
        if (c->state_digest.len == probe.len && memcmp(c->state_digest.data, probe.data, probe.len) == 0)
                return;
        if (build_state(c, c->meta_gen + 1, &b) < 0)
                return;
        c->meta_gen++;
        frame_buffer_done(&c->state_digest);
        c->state_digest = probe;
        probe = (FrameBuffer) {};
        frame_buffer_done(&c->state_frame);
        c->state_frame = b;
        b = (FrameBuffer) {};
        swim_set_meta_gen(c->swim, c->meta_gen);

        /* Our own entry reads like everyone else's. */
        Member *self = cluster_member(c, (const SwimId *) c->manager->node_id.bytes);
        if (self) {
                Frame *f = NULL;
                size_t used;
                if (frame_parse(c->state_frame.data, c->state_frame.len, &used, &f, NULL) == 1) {
                        ProtoState st;
                        if (proto_unpack_state(f, &st, NULL) >= 0) {
                                frame_free(self->meta.frame);
                                self->meta.frame = f;
                                self->meta.st = st;
                                f = NULL;
                        }
                        frame_free(f);
                }
        }
}

static void on_state_timer(evutil_socket_t fd, short what, void *userdata) {
        Cluster *c = userdata;
        uint64_t now = now_mono();

        if (c->state != CLUSTER_ACTIVE)
                return;
        publish_state(c);
        members_prune(c);
        for (size_t i = 0; i < c->n_members; i++) {
                Member *mb = c->members[i];
                if (mb->self || !cluster_member_usable(c, mb))
                        continue;
                /* Ask again for news we heard of but never got (a lost answer). */
                bool stale = !mb->meta.frame || mb->meta.st.gen < mb->meta_gen_known;
                if (stale && (!mb->state_asked_usec || now - mb->state_asked_usec > 2 * STATE_PERIOD_USEC))
                        ask_state(c, mb);
        }
        if (c->members_dirty)
                cluster_save_members(c);
        route_tick(c);
}

/* ---- identity and lifecycle ---- */

int cluster_disk_models(Cluster *c, char ***ret) {
        _cleanup_free_ char *dir = NULL;
        _cleanup_strv_free_ char **l = NULL;
        size_t n = 0;

        *ret = NULL;
        if (asprintf(&dir, "%s/models", c->manager->state_dir) < 0)
                return -ENOMEM;
        DIR *d = opendir(dir);
        if (!d)
                return 0;
        struct dirent *de;
        while ((de = readdir(d)) && n < PROTO_DISK_MODELS_MAX) {
                size_t len = strlen(de->d_name);
                if (len <= 5 || len > PROTO_NAME_MAX || !streq(de->d_name + len - 5, ".gguf") ||
                    !utf8_is_valid(de->d_name))
                        continue;
                char **a = reallocarray(l, n + 2, sizeof *a);
                if (!a)
                        break;
                l = a;
                if (!(l[n] = strndup(de->d_name, len - 5)))
                        break;
                l[++n] = NULL;
        }
        closedir(d);
        *ret = TAKE_PTR(l);
        return 0;
}

/* Advertise=, else Listen='s address, else the first address of an interface that is up and not loopback. */
int cluster_pick_advertise(Cluster *c, char **ret) {
        const Config *cfg = c->manager->config;
        char host[256];
        uint16_t port;

        if (cfg->advertise)
                return (*ret = strdup(cfg->advertise)) ? 0 : -ENOMEM;
        if (address_parse(cfg->listen, 0, host, sizeof host, &port, NULL) < 0)
                return -EINVAL;
        if (host[0] && !streq(host, "0.0.0.0") && !streq(host, "::"))
                return (*ret = strdup(cfg->listen)) ? 0 : -ENOMEM;

        struct ifaddrs *ifa = NULL;
        char best[INET6_ADDRSTRLEN] = "";
        bool v6 = false;
        if (getifaddrs(&ifa) == 0) {
                for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
                        if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK))
                                continue;
                        if (i->ifa_addr->sa_family == AF_INET) {
                                inet_ntop(AF_INET, &((struct sockaddr_in *) i->ifa_addr)->sin_addr, best, sizeof best);
                                v6 = false;
                                break;
                        }
                        if (i->ifa_addr->sa_family == AF_INET6 && !best[0]) {
                                struct in6_addr *a = &((struct sockaddr_in6 *) i->ifa_addr)->sin6_addr;
                                if (IN6_IS_ADDR_LINKLOCAL(a))
                                        continue;
                                inet_ntop(AF_INET6, a, best, sizeof best);
                                v6 = true;
                        }
                }
                freeifaddrs(ifa);
        }
        if (!best[0])
                snprintf(best, sizeof best, "127.0.0.1");
        return asprintf(ret, v6 ? "[%s]:%u" : "%s:%u", best, port) < 0 ? -ENOMEM : 0;
}

static int listen_start(Cluster *c) {
        const Config *cfg = c->manager->config;
        struct sockaddr_storage ss = {};
        int len = sizeof ss;
        char host[256], spec[300];
        uint16_t port;

        if (address_parse(cfg->listen, 0, host, sizeof host, &port, NULL) < 0)
                return -EINVAL;
        if (!host[0])
                snprintf(spec, sizeof spec, "0.0.0.0:%u", port);
        else
                snprintf(spec, sizeof spec, "%s", cfg->listen);
        if (evutil_parse_sockaddr_port(spec, (struct sockaddr *) &ss, &len) < 0)
                return log_error_errno(EINVAL, "Listen=%s is not a numeric address; use an IP address.", cfg->listen);
        c->listener = evconnlistener_new_bind(c->manager->event, on_accept, c,
                                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, -1,
                                              (struct sockaddr *) &ss, len);
        if (!c->listener)
                return log_error_errno(errno, "Failed to listen on %s for cluster peers: %m", cfg->listen);
        evconnlistener_set_error_cb(c->listener, on_accept_error);
        return 0;
}

static char *cluster_file(Cluster *c, const char *name) {
        char *p = NULL;
        if (asprintf(&p, "%s/%s", c->dir, name) < 0)
                return NULL;
        return p;
}

/* STATE/cluster/members: our incarnation and whom we knew, to find the cluster again after a restart. */
void cluster_save_members(Cluster *c) {
        _cleanup_free_ char *path = cluster_file(c, "members"), *text = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&text, &size);
        char hex[33];

        if (!path || !f) {
                if (f)
                        fclose(f);
                return;
        }
        fprintf(f, "incarnation %u\n", swim_incarnation(c->swim));
        size_t cursor = 0;
        SwimMemberInfo info;
        while (swim_member_next(c->swim, &cursor, &info))
                if (!info.self && (info.update.state == SWIM_ALIVE || info.update.state == SWIM_SUSPECT))
                        fprintf(f, "member %s %s\n", member_id_hex(&info.update.id, hex), info.update.addr);
        if (fclose(f) != 0)
                return;
        if (write_file_atomic(path, text, size, 0600) < 0)
                log_debug("Failed to save %s.", path);
        else
                c->members_dirty = false;
}

/* What cluster_save_members() wrote: the incarnation, and the members as seeds (the caller frees them). A
 * missing or unreadable file is an empty one: the node then starts from the join's list alone. */
static void load_members(Cluster *c, uint32_t *ret_incarnation, SwimUpdate **ret_seeds, size_t *ret_n) {
        _cleanup_free_ char *path = cluster_file(c, "members");
        SwimUpdate *seeds = NULL;
        size_t n = 0;
        char line[256];

        *ret_incarnation = 0;
        *ret_seeds = NULL;
        *ret_n = 0;
        FILE *f = path ? fopen(path, "re") : NULL;
        if (!f)
                return;
        while (fgets(line, sizeof line, f)) {
                char hex[64], addr[SWIM_ADDR_MAX + 8];
                unsigned inc;
                SwimId id;
                if (sscanf(line, "incarnation %u", &inc) == 1)
                        *ret_incarnation = inc;
                else if (sscanf(line, "member %63s %71s", hex, addr) == 2 && strlen(addr) < SWIM_ADDR_MAX &&
                         pki_unhex(hex, strlen(hex), id.bytes, sizeof id.bytes) >= 0) {
                        SwimUpdate *a = reallocarray(seeds, n + 1, sizeof *a);
                        if (!a)
                                break;
                        seeds = a;
                        seeds[n] = (SwimUpdate) { .id = id };
                        snprintf(seeds[n++].addr, sizeof seeds[0].addr, "%s", addr);
                }
        }
        fclose(f);
        *ret_seeds = seeds;
        *ret_n = n;
}

static int read_cluster_name(Cluster *c) {
        _cleanup_free_ char *path = cluster_file(c, "name"), *text = NULL;
        int r = path ? read_full_file(path, 4096, &text, NULL) : -ENOMEM;
        if (r < 0)
                return r;
        text[strcspn(text, "\n")] = 0;
        if (!*text || strlen(text) > PROTO_NAME_MAX || !utf8_is_valid(text))
                return -EUCLEAN;
        free(c->name);
        c->name = TAKE_PTR(text);
        return 0;
}

int cluster_write_name(Cluster *c, const char *name) {
        _cleanup_free_ char *path = cluster_file(c, "name"), *text = NULL;
        if (!path || asprintf(&text, "%s\n", name) < 0)
                return -ENOMEM;
        return write_file_atomic(path, text, strlen(text), 0600);
}

/* Stops everything the cluster runs; identity files stay. */
static void cluster_stop(Cluster *c) {
        route_stop(c);
        if (c->listener)
                evconnlistener_free(c->listener);
        c->listener = NULL;
        while (c->conns) {
                ConnCtx *x = c->conns;
                c->conns = x->next;
                peer_conn_free(x->conn);
                free(x);
        }
        for (size_t i = 0; i < c->n_members; i++) {
                c->members[i]->out = NULL; /* freed above */
                member_free(c->members[i]);
        }
        free(c->members);
        c->members = NULL;
        c->n_members = 0;
        c->swim = swim_free(c->swim);
        if (c->timer)
                event_del(c->timer);
        if (c->state_timer)
                event_del(c->state_timer);
        SSL_CTX_free(c->server_ctx);
        SSL_CTX_free(c->client_ctx);
        c->server_ctx = c->client_ctx = NULL;
        frame_buffer_done(&c->state_frame);
        frame_buffer_done(&c->state_digest);
        c->state = CLUSTER_NONE;
}

/* With an identity in place: listen, start SWIM, find the members. */
int cluster_activate(Cluster *c, const SwimUpdate *members, size_t n_members) {
        Manager *m = c->manager;
        uint8_t fp[PKI_FINGERPRINT_SIZE];
        char fphex[PKI_FINGERPRINT_HEX_MAX];
        uint32_t incarnation = 0;
        uint64_t seed;
        int r;

        r = read_cluster_name(c);
        if (r < 0)
                return log_error_errno(r, "Cluster identity in %s is incomplete (no name): %m", c->dir);
        r = pki_ca_fingerprint(c->dir, fp);
        if (r < 0)
                return log_error_errno(r, "Cannot read the cluster CA in %s: %s", c->dir, pki_strerror(r));
        free(c->fingerprint);
        c->fingerprint = strdup(pki_fingerprint_hex(fp, fphex));
        free(c->advertise);
        c->advertise = NULL;
        r = cluster_pick_advertise(c, &c->advertise);
        if (r < 0 || !c->fingerprint)
                return log_oom();
        r = tls_server_ctx_new(c->dir, &c->server_ctx);
        if (r >= 0)
                r = tls_client_ctx_new(c->dir, &c->client_ctx);
        if (r < 0) {
                cluster_stop(c);
                return log_error_errno(r, "Cannot set up TLS from %s: %s", c->dir, pki_strerror(r));
        }
        r = listen_start(c);
        if (r < 0) {
                cluster_stop(c);
                return r;
        }

        swim_config_default(&c->swim_config);
        c->swim_config.probe_interval_usec = m->config->probe_interval_usec;
        c->swim_config.probe_timeout_usec = MIN(m->config->probe_timeout_usec, m->config->probe_interval_usec * 9 / 10);
        c->swim_config.suspect_timeout_usec = m->config->suspect_timeout_usec;
        c->swim_config.dead_reap_usec = m->config->remove_dead_after_usec;
        c->swim_config.indirect_probes = m->config->indirect_probes;
        if (RAND_bytes((unsigned char *) &seed, sizeof seed) != 1)
                seed = now_usec(CLOCK_REALTIME) ^ (uint64_t) getpid();

        /* The previous run's incarnation + 1, so our ALIVE outranks whatever others remember of us. */
        _cleanup_free_ SwimUpdate *seeds = NULL;
        size_t n_seeds = 0;
        load_members(c, &incarnation, &seeds, &n_seeds);
        const SwimId *self = (const SwimId *) m->node_id.bytes;
        r = swim_new(&c->swim_config, self, c->advertise, incarnation + 1, seed, &swim_callbacks, c, &c->swim);
        if (r < 0) {
                cluster_stop(c);
                return log_error_errno(r, "Failed to start membership: %m");
        }
        Member *me = member_get(c, self, c->advertise);
        if (!me) {
                cluster_stop(c);
                return log_oom();
        }
        me->self = true;
        for (size_t i = 0; i < n_seeds; i++)
                (void) swim_add_seed(c->swim, &seeds[i].id, seeds[i].addr);
        if (n_members > 0)
                (void) swim_merge(c->swim, members, n_members, now_mono());
        c->state = CLUSTER_ACTIVE;
        c->state_dirty = true;
        publish_state(c);
        cluster_save_members(c);
        struct timeval tv = { .tv_sec = 1 };
        event_add(c->state_timer, &tv);
        swim_tick(c->swim, now_mono());
        cluster_rearm(c);
        log_fields(LOG_INFO, 0, LOG_FIELDS(INFERD_MESSAGE_CLUSTER_ACTIVE, "CLUSTER", c->name),
                   "Member of cluster '%s' (CA %.16s...) at %s, listening on %s.", c->name, c->fingerprint,
                   c->advertise, m->config->listen);
        return 0;
}

int cluster_new(Manager *m, Cluster **ret) {
        _cleanup_(cluster_freep) Cluster *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->manager = m;
        if (asprintf(&c->dir, "%s/cluster", m->state_dir) < 0)
                return -ENOMEM;
        /* Members may be named by host name: resolving must not stall the loop. Without a resolver
         * configuration, names fall back to a blocking lookup (addresses need none). */
        c->dns = evdns_base_new(m->event, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        if (!c->dns)
                log_debug("No DNS resolver configured; host names of members are looked up synchronously.");
        c->timer = event_new(m->event, -1, 0, on_swim_timer, c);
        c->state_timer = event_new(m->event, -1, EV_PERSIST, on_state_timer, c);
        if (!c->timer || !c->state_timer)
                return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

Cluster *cluster_free(Cluster *c) {
        if (!c)
                return NULL;
        cluster_join_abort(c, "shutting down");
        cluster_stop(c);
        if (c->timer)
                event_free(c->timer);
        if (c->state_timer)
                event_free(c->state_timer);
        if (c->leave_timer)
                event_free(c->leave_timer);
        if (c->dns)
                evdns_base_free(c->dns, 1);
        free(c->dir);
        free(c->name);
        free(c->fingerprint);
        free(c->advertise);
        free(c);
        return NULL;
}

int cluster_start(Cluster *c) {
        int st = pki_status(c->dir);
        if (st < 0)
                return log_error_errno(st, "Cannot read the cluster identity in %s: %s", c->dir, pki_strerror(st));
        if (st == PKI_STATUS_NONE)
                return 0;
        return cluster_activate(c, NULL, 0);
}

int cluster_init(Cluster *c, const char *name, char **ret_error) {
        int r;

        if (c->state != CLUSTER_NONE)
                return cluster_errorf(ret_error, -EEXIST, "This node is already %s cluster '%s'.",
                                      c->state == CLUSTER_JOINING ? "joining" : "a member of", cluster_name(c));
        if (!name || !*name)
                name = "inferd";
        if (strlen(name) > PROTO_NAME_MAX || !utf8_is_valid(name))
                return cluster_errorf(ret_error, -EINVAL, "The cluster name must be 1 to %u bytes of UTF-8.",
                                      PROTO_NAME_MAX);
        r = pki_init(c->dir, name, c->manager->node_id.bytes);
        if (r < 0)
                return cluster_errorf(ret_error, r, "Cannot create the cluster: %s", pki_strerror(r));
        r = cluster_write_name(c, name);
        if (r >= 0)
                r = cluster_activate(c, NULL, 0);
        if (r < 0) {
                (void) pki_remove(c->dir);
                return cluster_errorf(ret_error, r, "Cannot start the cluster: %s (see the journal)", strerror(-r));
        }
        log_info("Created cluster '%s'; this node holds its CA.", name);
        return 0;
}

int cluster_create_token(Cluster *c, uint64_t ttl_usec, char **ret_token, uint64_t *ret_expires, char **ret_error) {
        char buf[TOKEN_TEXT_MAX];
        uint64_t now = now_usec(CLOCK_REALTIME);
        int r;

        if (c->state != CLUSTER_ACTIVE)
                return cluster_errorf(ret_error, -ENOTCONN, "This node is not a member of a cluster; run "
                                                            "'inferctl cluster init' first.");
        r = token_issue(c->dir, now, ttl_usec, buf);
        if (r < 0)
                return cluster_errorf(ret_error, r, "%s", pki_strerror(r));
        *ret_token = strdup(buf);
        explicit_bzero(buf, sizeof buf);
        if (!*ret_token)
                return -ENOMEM;
        *ret_expires = now + ttl_usec;
        log_info("Issued a join token, valid until %" PRIu64 " (CLOCK_REALTIME usec).", *ret_expires);
        return 0;
}

static void on_leave_timer(evutil_socket_t fd, short what, void *userdata) {
        Cluster *c = userdata;
        int r;

        c->leaving_quietly = true;
        cluster_stop(c);
        c->leaving_quietly = false;
        r = pki_remove(c->dir);
        if (r < 0)
                log_warning_errno(r, "Left the cluster, but failed to remove %s: %m", c->dir);
        log_info("Left cluster '%s'.", c->name ? c->name : "");
        cluster_left(c->manager);
}

int cluster_leave(Cluster *c, char **ret_error) {
        _cleanup_(frame_buffer_done) FrameBuffer b = {};

        if (c->state != CLUSTER_ACTIVE)
                return cluster_errorf(ret_error, -ENOTCONN, "This node is not a member of a cluster.");
        c->state = CLUSTER_LEAVING;
        route_stop(c);
        swim_leave(c->swim, now_mono());
        cluster_rearm(c);
        /* Tell every member ourselves: gossip alone would take a few periods. */
        if (proto_pack_leave(&b) >= 0)
                for (size_t i = 0; i < c->n_members; i++)
                        if (!c->members[i]->self && cluster_member_usable(c, c->members[i]))
                                (void) cluster_send(c, c->members[i], &b);
        if (!c->leave_timer && !(c->leave_timer = event_new(c->manager->event, -1, 0, on_leave_timer, c)))
                return -ENOMEM;
        /* A moment for the frames to go out and the gossip to spread. */
        struct timeval tv = { .tv_sec = 0, .tv_usec = 500000 };
        event_add(c->leave_timer, &tv);
        return 0;
}

int cluster_errorf(char **ret_error, int r, const char *fmt, ...) {
        va_list ap;
        if (ret_error) {
                va_start(ap, fmt);
                if (vasprintf(ret_error, fmt, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return r < 0 ? r : -EINVAL;
}
