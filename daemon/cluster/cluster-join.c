/* SPDX-License-Identifier: MIT */
/*
 * Joining a cluster, both halves.
 *
 * The joiner dials the node that issued its token with ALPN inferd-join/1
 * and no certificate, checks that node's CA against the fingerprint in the
 * token before it says anything, then sends a certificate request for a key
 * it made itself and a proof that it holds the token's secret, bound to this
 * TLS session (token.h). The issuer redeems the token (once), signs the
 * request and answers with the certificate, the CA and the member list; the
 * joiner stores them and starts membership from that list.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "cluster-internal.h"
#include "config.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "names.h"
#include "pki.h"
#include "time-util.h"
#include "tls.h"
#include "token.h"

#define JOIN_TIMEOUT_SEC 30

/* Forgets the join connection (it closes on its own); what it said is in hand already. */
static void join_detach(Cluster *c) {
        PeerConn *pc = TAKE_PTR(c->join_conn);
        if (!pc)
                return;
        ConnCtx *x = peer_conn_get_data(pc);
        if (x) {
                cluster_conn_forget(c, x);
                peer_conn_set_data(pc, NULL);
        }
        peer_conn_close(pc, "join finished");
}

/* Ends the client side once: the connection goes, and the caller hears r. */
static void join_finish(Cluster *c, int r, const char *error) {
        ClusterJoinDone done = c->join_done;
        void *userdata = c->join_userdata;

        join_detach(c);
        c->join_pki = pki_join_free(c->join_pki);
        explicit_bzero(c->join_secret, sizeof c->join_secret);
        if (c->join_timer)
                event_del(c->join_timer);
        c->join_done = NULL;
        c->join_userdata = NULL;
        if (r < 0 && c->state == CLUSTER_JOINING)
                c->state = CLUSTER_NONE;
        if (r < 0)
                log_warning("Joining the cluster failed: %s", error);
        if (done)
                done(c->manager, r, error, userdata);
}

void cluster_join_abort(Cluster *c, const char *reason) {
        if (c->join_done || c->join_conn)
                join_finish(c, -ECANCELED, reason);
}

static void on_join_timeout(evutil_socket_t fd, short what, void *userdata) {
        join_finish(userdata, -ETIMEDOUT, "The node did not answer the join request in time.");
}

void cluster_join_conn_closed(Cluster *c, PeerConn *pc, const char *reason) {
        char buf[512];
        if (c->join_conn != pc)
                return;
        snprintf(buf, sizeof buf, "The connection to the node failed: %s.", reason);
        c->join_conn = NULL; /* it is being freed */
        join_finish(c, -ECONNABORTED, buf);
}

void cluster_join_conn_established(Cluster *c, PeerConn *pc) {
        _cleanup_(frame_buffer_done) FrameBuffer b = {};
        SSL *ssl = peer_conn_ssl(pc);
        uint8_t exporter[TOKEN_EXPORTER_SIZE];
        char buf[512];
        size_t csr_size;
        int r;

        /* Nothing is sent before the node proves to hold a certificate of the token's CA. */
        r = tls_join_verify_server(ssl, c->join_fp, NULL);
        if (r < 0) {
                snprintf(buf, sizeof buf, "The node at %s is not a member of the cluster this token is for: %s",
                         peer_conn_remote(pc), pki_strerror(r));
                join_finish(c, r, buf);
                return;
        }
        const uint8_t *csr = pki_join_csr(c->join_pki, &csr_size);
        ProtoJoin j = {
                .csr = csr,
                .csr_size = csr_size,
                .name = c->manager->config->node_name,
                .addr = c->advertise,
        };
        memcpy(j.token_id, c->join_token_id, sizeof j.token_id);
        memcpy(j.node.bytes, c->manager->node_id.bytes, sizeof j.node.bytes);
        r = tls_join_exporter(ssl, exporter);
        if (r >= 0)
                r = token_proof(c->join_secret, exporter, csr, csr_size, j.proof);
        if (r >= 0)
                r = proto_pack_join(&b, &j);
        if (r >= 0)
                r = peer_conn_send(pc, &b);
        if (r < 0)
                join_finish(c, r, "Failed to send the join request.");
}

void cluster_join_client_frame(Cluster *c, PeerConn *pc, ProtoType t, Frame *f) {
        _cleanup_free_ char *why = NULL;
        char buf[PROTO_ERROR_MAX + 128];
        int r;

        if (t == PROTO_JOIN_ERR) {
                ProtoJoinErr e;
                r = proto_unpack_join_err(f, &e, &why);
                snprintf(buf, sizeof buf, "Refused by %s: %s", peer_conn_remote(pc), r < 0 ? why : e.error);
                join_finish(c, -EACCES, buf);
                return;
        }
        if (t != PROTO_JOIN_OK) {
                join_finish(c, -EPROTO, "The node answered the join request with something else.");
                return;
        }
        ProtoJoinOk ok;
        r = proto_unpack_join_ok(f, &ok, &why);
        if (r < 0) {
                snprintf(buf, sizeof buf, "The node's answer is malformed: %s", why ? why : strerror(-r));
                join_finish(c, r, buf);
                return;
        }
        r = pki_join_finish(c->join_pki, c->dir, c->join_fp, ok.cert, ok.cert_size, ok.ca, ok.ca_size);
        if (r >= 0)
                r = cluster_write_name(c, ok.cluster);
        if (r < 0) {
                snprintf(buf, sizeof buf, "The certificate the node sent is not usable: %s", pki_strerror(r));
                (void) pki_remove(c->dir);
                join_finish(c, r, buf);
                return;
        }
        /* The join connection goes before membership starts its own connections. */
        join_detach(c);
        _cleanup_free_ SwimUpdate *members = NULL;
        size_t n = ok.n_members;
        if (n > 0 && !(members = calloc(n, sizeof *members))) {
                (void) pki_remove(c->dir);
                join_finish(c, -ENOMEM, "Out of memory.");
                return;
        }
        if (n > 0)
                memcpy(members, ok.members, n * sizeof *members);
        c->state = CLUSTER_NONE;
        r = cluster_activate(c, members, n);
        if (r < 0) {
                (void) pki_remove(c->dir);
                join_finish(c, r, "Joined, but membership could not start (see the journal).");
                return;
        }
        log_info("Joined cluster '%s' through %s.", c->name, peer_conn_remote(pc));
        join_finish(c, 0, NULL);
}

int cluster_join(Cluster *c, const char *address, const char *token, ClusterJoinDone done, void *userdata,
                 char **ret_error) {
        JoinToken t;
        char host[256], addr[300];
        uint16_t port;
        SSL_CTX *ctx = NULL;
        PeerConn *pc = NULL;
        int r;

        if (c->state != CLUSTER_NONE)
                return cluster_errorf(ret_error, -EEXIST, "This node is already %s a cluster.",
                                      c->state == CLUSTER_JOINING ? "joining" : "a member of");
        /* A bare host means the default port; the grammar is inferctl's (address.h). */
        const char *why = NULL;
        if (address_parse(address, INFERD_CLUSTER_PORT, host, sizeof host, &port, &why) < 0)
                return cluster_errorf(ret_error, -EINVAL, "Invalid address '%s': %s.", address, why);
        if (!host[0])
                return cluster_errorf(ret_error, -EINVAL, "'%s' names no host.", address);
        r = address_format(host, port, addr, sizeof addr);
        if (r < 0)
                return cluster_errorf(ret_error, -EINVAL, "Invalid address '%s': too long.", address);
        r = token_parse(token, &t);
        if (r < 0)
                return cluster_errorf(ret_error, r, "%s", pki_strerror(r));
        r = pki_join_new(c->manager->node_id.bytes, &c->join_pki);
        if (r < 0) {
                token_clear(&t);
                return cluster_errorf(ret_error, r, "Cannot make a key: %s", pki_strerror(r));
        }
        memcpy(c->join_fp, t.ca_fingerprint, sizeof c->join_fp);
        memcpy(c->join_token_id, t.id, sizeof c->join_token_id);
        memcpy(c->join_secret, t.secret, sizeof c->join_secret);
        token_clear(&t);

        /* Our address, for the members to reach us: known before we are a member. */
        free(c->advertise);
        c->advertise = NULL;
        r = cluster_pick_advertise(c, &c->advertise);
        if (r >= 0)
                r = tls_join_client_ctx_new(&ctx);
        if (r >= 0)
                r = cluster_connect(c, ctx, addr, NULL, &pc);
        SSL_CTX_free(ctx); /* the connection holds its own reference */
        if (r < 0) {
                c->join_pki = pki_join_free(c->join_pki);
                explicit_bzero(c->join_secret, sizeof c->join_secret);
                return cluster_errorf(ret_error, r, "Cannot connect to %s: %s", addr, strerror(-r));
        }
        ConnCtx *x = peer_conn_get_data(pc);
        x->join_client = true;
        c->join_conn = pc;
        c->join_done = done;
        c->join_userdata = userdata;
        c->state = CLUSTER_JOINING;
        if (!c->join_timer && !(c->join_timer = event_new(c->manager->event, -1, 0, on_join_timeout, c)))
                return -ENOMEM;
        struct timeval tv = { .tv_sec = JOIN_TIMEOUT_SEC };
        event_add(c->join_timer, &tv);
        log_info("Joining the cluster through %s.", addr);
        return 0;
}

/* ---- the issuer's side ---- */

static void join_refuse(Cluster *c, PeerConn *pc, const char *what, const char *reason) {
        _cleanup_(frame_buffer_done) FrameBuffer b = {};
        ProtoJoinErr e = { .error = reason };
        log_fields(LOG_WARNING, 0, LOG_FIELDS(INFERD_MESSAGE_PEER_REFUSED, "PEER", peer_conn_remote(pc)),
                   "Refused %s from %s: %s", what, peer_conn_remote(pc), reason);
        if (proto_pack_join_err(&b, &e) >= 0)
                (void) peer_conn_send(pc, &b);
        peer_conn_close_after_flush(pc, "join refused");
}

void cluster_join_server_frame(Cluster *c, PeerConn *pc, Frame *f) {
        _cleanup_(frame_buffer_done) FrameBuffer b = {};
        _cleanup_free_ char *why = NULL;
        _cleanup_free_ uint8_t *cert = NULL, *ca = NULL;
        _cleanup_free_ SwimUpdate *members = NULL;
        uint8_t exporter[TOKEN_EXPORTER_SIZE];
        size_t cert_size = 0, ca_size = 0;
        char host[256], hex[33], what[400];
        uint16_t port;
        ProtoJoin j;
        int r;

        r = proto_unpack_join(f, &j, &why);
        if (r < 0) {
                join_refuse(c, pc, "a malformed join request", why ? why : strerror(-r));
                return;
        }
        snprintf(what, sizeof what, "the join request of node '%s' (%s)", j.name, member_id_hex(&j.node, hex));
        if (address_parse(j.addr, 0, host, sizeof host, &port, NULL) < 0 || !host[0]) {
                join_refuse(c, pc, what, "its address is not HOST:PORT");
                return;
        }
        if (memcmp(j.node.bytes, c->manager->node_id.bytes, sizeof j.node.bytes) == 0) {
                join_refuse(c, pc, what, "it has this node's own id");
                return;
        }
        r = tls_join_exporter(peer_conn_ssl(pc), exporter);
        if (r >= 0)
                r = token_redeem(c->dir, j.token_id, j.proof, exporter, j.csr, j.csr_size, now_usec(CLOCK_REALTIME));
        if (r >= 0)
                r = pki_sign_csr(c->dir, j.csr, j.csr_size, j.node.bytes, &cert, &cert_size);
        if (r >= 0)
                r = pki_ca_der(c->dir, &ca, &ca_size);
        if (r < 0) {
                join_refuse(c, pc, what, pki_strerror(r));
                return;
        }

        /* It is a member from now on; everyone else learns it by gossip. */
        r = swim_add_seed(c->swim, &j.node, j.addr);
        if (r < 0 && r != -EEXIST)
                log_debug_errno(r, "Failed to add the new member to membership: %m");
        cluster_rearm(c);
        size_t n = swim_snapshot(c->swim, NULL, 0);
        n = MIN(n, (size_t) PROTO_MEMBERS_MAX);
        members = calloc(MAX(n, 1u), sizeof *members);
        if (!members) {
                join_refuse(c, pc, what, "out of memory");
                return;
        }
        n = MIN(swim_snapshot(c->swim, members, n), n);
        ProtoJoinOk ok = {
                .cert = cert,
                .cert_size = cert_size,
                .ca = ca,
                .ca_size = ca_size,
                .cluster = c->name,
                .members = members,
                .n_members = n,
        };
        r = proto_pack_join_ok(&b, &ok);
        if (r >= 0)
                r = peer_conn_send(pc, &b);
        if (r < 0) {
                log_warning_errno(r, "Failed to answer %s: %m", what);
                peer_conn_close(pc, "failed to answer");
                return;
        }
        peer_conn_close_after_flush(pc, "joined");
        log_info("Node '%s' (%s) joined the cluster from %s, as %s.", j.name, hex, peer_conn_remote(pc), j.addr);
}
