/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * One TLS connection to or from another node, carrying frames (frame.h).
 *
 * The transport knows nothing of what the frames mean: it does the TLS
 * handshake (bufferevent_openssl), splits the byte stream into frames,
 * queues outgoing ones, enforces limits (handshake and idle timeouts, the
 * frame size, how much may wait unsent) and reports, once, why a connection
 * ended. The owner (cluster.c) decides what to do with each frame.
 */

#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"

typedef struct PeerConn PeerConn;

typedef struct PeerCallbacks {
        /* The handshake is done: SSL is verified per the context's rules. */
        void (*established)(PeerConn *c, void *userdata);
        /* A frame; the callee takes ownership of it. May close c. */
        void (*frame)(PeerConn *c, Frame *f, void *userdata);
        /* The connection is gone (reason is human-readable); c is freed right after. */
        void (*closed)(PeerConn *c, const char *reason, void *userdata);
} PeerCallbacks;

/* Dials addr ("HOST:PORT", "[V6]:PORT"); ctx says which protocol it offers (tls.h: mesh or join). Host
 * names are resolved with dns (asynchronously), or with a blocking getaddrinfo() when dns is NULL. */
int peer_conn_connect(struct event_base *base, struct evdns_base *dns, SSL_CTX *ctx, const char *addr,
                      const PeerCallbacks *cb, void *userdata, PeerConn **ret);
/* Takes an accepted socket (the connection owns it from now on, even on failure). */
int peer_conn_accept(struct event_base *base, SSL_CTX *ctx, int fd, const char *remote,
                     const PeerCallbacks *cb, void *userdata, PeerConn **ret);

/* Queues one frame built with frame.h. -ENOBUFS when the peer has stopped reading. */
int peer_conn_send(PeerConn *c, const FrameBuffer *frame);
/* Closes after what is queued has been written; closed() is called then. */
void peer_conn_close_after_flush(PeerConn *c, const char *reason);
/* Closes now; closed() is called from the loop, never from inside this call. */
void peer_conn_close(PeerConn *c, const char *reason);
/* Frees without calling closed() (shutdown of the owner). */
void peer_conn_free(PeerConn *c);

SSL *peer_conn_ssl(PeerConn *c);
const char *peer_conn_remote(const PeerConn *c);        /* "ADDR:PORT" as dialled or accepted */
bool peer_conn_outbound(const PeerConn *c);
/* Whether it was closed because the peer sent something malformed or oversized. */
bool peer_conn_protocol_error(const PeerConn *c);
/* Closes the connection when nothing arrives for sec seconds (0: never, the default once established). */
void peer_conn_set_read_timeout(PeerConn *c, unsigned sec);
void *peer_conn_get_data(const PeerConn *c);
void peer_conn_set_data(PeerConn *c, void *data);
