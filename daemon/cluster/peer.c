/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "address.h"
#include "config.h"
#include "log.h"
#include "macro.h"
#include "peer.h"
#include "tls.h"

/* A handshake or a silent half-open peer must not hold a slot for long. */
#define HANDSHAKE_TIMEOUT_SEC 10
#define WRITE_TIMEOUT_SEC 30
/* A peer that stops reading gets this much queued, then the connection is dropped. */
#define OUTPUT_MAX (64u << 20)

struct PeerConn {
        struct event_base *base;
        struct bufferevent *bev;
        SSL *ssl;
        struct event *deferred;         /* runs closed() outside the caller's stack */
        PeerCallbacks cb;
        void *userdata;
        void *data;
        char remote[80];
        char *close_reason;
        bool outbound;
        bool established;
        bool closing;                   /* close_after_flush: waiting for the output to drain */
        bool dead;                      /* closed() is due; nothing else happens */
        bool protocol_error;            /* closed for what the peer sent */
};

bool peer_conn_protocol_error(const PeerConn *c) {
        return c->protocol_error;
}

SSL *peer_conn_ssl(PeerConn *c) {
        return c->ssl;
}

const char *peer_conn_remote(const PeerConn *c) {
        return c->remote;
}

bool peer_conn_outbound(const PeerConn *c) {
        return c->outbound;
}

void *peer_conn_get_data(const PeerConn *c) {
        return c->data;
}

void peer_conn_set_data(PeerConn *c, void *data) {
        c->data = data;
}

void peer_conn_set_read_timeout(PeerConn *c, unsigned sec) {
        struct timeval r = { .tv_sec = sec }, w = { .tv_sec = WRITE_TIMEOUT_SEC };
        if (c->bev)
                bufferevent_set_timeouts(c->bev, sec ? &r : NULL, &w);
}

void peer_conn_free(PeerConn *c) {
        if (!c)
                return;
        if (c->bev)
                bufferevent_free(c->bev); /* frees the SSL and the socket too */
        else if (c->ssl)
                SSL_free(c->ssl);
        if (c->deferred)
                event_free(c->deferred);
        free(c->close_reason);
        free(c);
}

static void on_deferred_close(evutil_socket_t fd, short what, void *userdata) {
        PeerConn *c = userdata;
        if (c->cb.closed)
                c->cb.closed(c, c->close_reason ? c->close_reason : "closed", c->userdata);
        peer_conn_free(c);
}

void peer_conn_close(PeerConn *c, const char *reason) {
        if (c->dead)
                return;
        c->dead = true;
        c->close_reason = strdup(reason ? reason : "closed");
        if (c->bev)
                bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        event_active(c->deferred, EV_TIMEOUT, 0);
}

static void on_write(struct bufferevent *bev, void *userdata) {
        PeerConn *c = userdata;
        if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
                peer_conn_close(c, c->close_reason);
}

void peer_conn_close_after_flush(PeerConn *c, const char *reason) {
        if (c->dead || c->closing)
                return;
        free(c->close_reason);
        c->close_reason = strdup(reason ? reason : "closed");
        c->closing = true;
        bufferevent_disable(c->bev, EV_READ);
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
                peer_conn_close(c, c->close_reason);
}

int peer_conn_send(PeerConn *c, const FrameBuffer *frame) {
        if (c->dead || c->closing)
                return -ENOTCONN;
        struct evbuffer *out = bufferevent_get_output(c->bev);
        if (evbuffer_get_length(out) + frame->len > OUTPUT_MAX) {
                peer_conn_close(c, "the peer is not reading (output queue full)");
                return -ENOBUFS;
        }
        if (evbuffer_add(out, frame->data, frame->len) < 0)
                return -ENOMEM;
        return 0;
}

static void on_read(struct bufferevent *bev, void *userdata) {
        PeerConn *c = userdata;
        struct evbuffer *in = bufferevent_get_input(bev);

        /* Frames until one is incomplete; each is handed over whole. */
        while (!c->dead && !c->closing) {
                size_t avail = evbuffer_get_length(in);
                uint8_t hdr[FRAME_HEADER_SIZE];
                if (avail < sizeof hdr)
                        return;
                evbuffer_copyout(in, hdr, sizeof hdr);
                uint32_t n = (uint32_t) hdr[0] << 24 | (uint32_t) hdr[1] << 16 | (uint32_t) hdr[2] << 8 | hdr[3];
                size_t want = sizeof hdr + (size_t) n;
                if (n == 0 || n > FRAME_MAX) {
                        char why[128];
                        snprintf(why, sizeof why, "frame of %u bytes (the limit is %u)", n, (unsigned) FRAME_MAX);
                        c->protocol_error = true;
                        peer_conn_close(c, why);
                        return;
                }
                if (avail < want)
                        return;
                const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t) want);
                if (!p) {
                        peer_conn_close(c, "out of memory");
                        return;
                }
                Frame *f = NULL;
                _cleanup_free_ char *why = NULL;
                size_t used = 0;
                int r = frame_parse(p, want, &used, &f, &why);
                (void) evbuffer_drain(in, want);
                if (r <= 0) {
                        char reason[300];
                        snprintf(reason, sizeof reason, "malformed frame: %s", why ? why : strerror(r < 0 ? -r : EPROTO));
                        c->protocol_error = true;
                        peer_conn_close(c, reason);
                        return;
                }
                c->cb.frame(c, f, c->userdata);
        }
}

static char *ssl_errors(struct bufferevent *bev, SSL *ssl) {
        char buf[512] = "", one[256];
        unsigned long e;

        while ((e = bufferevent_get_openssl_error(bev)) != 0) {
                const char *words = NULL;
                if (ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED && ssl)
                        words = tls_verify_string(SSL_get_verify_result(ssl));
                if (!words)
                        words = tls_error_string(e);
                if (!words) {
                        /* "error:0A000418:SSL routines::tlsv1 alert unknown ca": the words after the last colon. */
                        ERR_error_string_n(e, one, sizeof one);
                        words = strrchr(one, ':');
                        words = words && words[1] ? words + 1 : one;
                        /* A code without a string ("reason(1)") says nothing. */
                        if (startswith(words, "reason("))
                                continue;
                }
                if (strstr(buf, words))
                        continue;
                size_t l = strlen(buf);
                snprintf(buf + l, sizeof buf - l, "%s%s", l ? "; " : "", words);
        }
        return buf[0] ? strdup(buf) : NULL;
}

static void on_event(struct bufferevent *bev, short what, void *userdata) {
        PeerConn *c = userdata;

        if (what & BEV_EVENT_CONNECTED) {
                /* Past the handshake: idle connections are fine (membership probes them). */
                struct timeval w = { .tv_sec = WRITE_TIMEOUT_SEC };
                bufferevent_set_timeouts(bev, NULL, &w);
                int one = 1;
                evutil_socket_t fd = bufferevent_getfd(bev);
                if (fd >= 0)
                        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                c->established = true;
                if (c->cb.established)
                        c->cb.established(c, c->userdata);
                return;
        }

        _cleanup_free_ char *tls = ssl_errors(bev, c->ssl);
        char reason[600];
        if (what & BEV_EVENT_TIMEOUT)
                snprintf(reason, sizeof reason, "%s", !c->established ? "handshake timed out" :
                                                      (what & BEV_EVENT_READING) ? "read timed out" : "write timed out");
        else if (tls)
                snprintf(reason, sizeof reason, "%s", tls);
        else if (what & BEV_EVENT_EOF)
                snprintf(reason, sizeof reason, "%s", c->established ? "connection closed by the peer"
                                                                     : "closed by the peer during the handshake");
        else {
                int dns = bufferevent_socket_get_dns_error(bev);
                int err = EVUTIL_SOCKET_ERROR();
                snprintf(reason, sizeof reason, "%s", dns ? evutil_gai_strerror(dns) :
                                                      err ? evutil_socket_error_to_string(err) : "connection error");
        }
        peer_conn_close(c, reason);
}

static int conn_new(struct event_base *base, SSL_CTX *ctx, const char *remote, bool outbound, const PeerCallbacks *cb,
                    void *userdata, PeerConn **ret) {
        PeerConn *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->base = base;
        c->cb = *cb;
        c->userdata = userdata;
        c->outbound = outbound;
        snprintf(c->remote, sizeof c->remote, "%s", remote);
        c->deferred = event_new(base, -1, 0, on_deferred_close, c);
        c->ssl = SSL_new(ctx);
        if (!c->deferred || !c->ssl) {
                peer_conn_free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

static int conn_attach(PeerConn *c, int fd, enum bufferevent_ssl_state state) {
        c->bev = bufferevent_openssl_socket_new(c->base, fd, c->ssl, state,
                                                BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (!c->bev)
                return -ENOMEM;
        /* A peer that vanishes without close_notify is an ordinary EOF, not an error. */
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
        bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
        struct timeval t = { .tv_sec = HANDSHAKE_TIMEOUT_SEC };
        bufferevent_set_timeouts(c->bev, &t, &t);
        return bufferevent_enable(c->bev, EV_READ | EV_WRITE) < 0 ? -EIO : 0;
}

int peer_conn_connect(struct event_base *base, struct evdns_base *dns, SSL_CTX *ctx, const char *addr,
                      const PeerCallbacks *cb, void *userdata, PeerConn **ret) {
        char host[256];
        uint16_t port;
        PeerConn *c = NULL;
        int r;

        if (address_parse(addr, 0, host, sizeof host, &port, NULL) < 0 || !host[0])
                return -EINVAL;
        r = conn_new(base, ctx, addr, true, cb, userdata, &c);
        if (r < 0)
                return r;
        r = conn_attach(c, -1, BUFFEREVENT_SSL_CONNECTING);
        if (r >= 0 && bufferevent_socket_connect_hostname(c->bev, dns, AF_UNSPEC, host, port) < 0)
                r = -ECONNREFUSED;
        if (r < 0) {
                peer_conn_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

int peer_conn_accept(struct event_base *base, SSL_CTX *ctx, int fd, const char *remote,
                     const PeerCallbacks *cb, void *userdata, PeerConn **ret) {
        PeerConn *c = NULL;
        int r;

        r = conn_new(base, ctx, remote, false, cb, userdata, &c);
        if (r < 0) {
                close(fd);
                return r;
        }
        r = conn_attach(c, fd, BUFFEREVENT_SSL_ACCEPTING);
        if (r < 0) {
                if (!c->bev)
                        close(fd);
                peer_conn_free(c);
                return r;
        }
        *ret = c;
        return 0;
}
