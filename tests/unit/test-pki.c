/* SPDX-License-Identifier: MIT */
/*
 * The cluster's identities and TLS, with real handshakes: two SSL objects
 * joined by a BIO pair in memory, pumped until both are done.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <ftw.h>
#include <sys/stat.h>
#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "fileio.h"
#include "macro.h"
#include "pki.h"
#include "time-util.h"
#include "tls.h"
#include "token.h"

#define SEC 1000000ULL

/* Two clusters: A (a1 ran init, a2 joined it) and B (b1 ran init). */
static char base[] = "/tmp/test-pki-XXXXXX";
static char dir_a1[64], dir_a2[64], dir_b1[64];
static const uint8_t id_a1[16] = { 0xa1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
static const uint8_t id_a2[16] = { 0xa2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
static const uint8_t id_b1[16] = { 0xb1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
static const uint8_t id_new[16] = { 0xee, 0xee, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff };

static int mode_of(const char *dir, const char *name) {
        char p[256];
        struct stat st;
        snprintf(p, sizeof p, "%s%s%s", dir, name ? "/" : "", name ?: "");
        if (stat(p, &st) < 0)
                return -1;
        return (int) (st.st_mode & 07777);
}

/* A member of the cluster in ca_dir, through the same calls a real join makes (without the network). */
static void make_member(const char *ca_dir, const char *dir, const uint8_t id[16]) {
        _cleanup_(pki_join_freep) PkiJoin *j = NULL;
        _cleanup_free_ uint8_t *cert = NULL, *ca = NULL;
        size_t cert_size, ca_size, csr_size;
        uint8_t fp[PKI_FINGERPRINT_SIZE];

        assert_int_equal(pki_join_new(id, &j), 0);
        const uint8_t *csr = pki_join_csr(j, &csr_size);
        assert_int_equal(pki_sign_csr(ca_dir, csr, csr_size, id, &cert, &cert_size), 0);
        assert_int_equal(pki_ca_der(ca_dir, &ca, &ca_size), 0);
        assert_int_equal(pki_ca_fingerprint(ca_dir, fp), 0);
        assert_int_equal(pki_join_finish(j, dir, fp, cert, cert_size, ca, ca_size), 0);
}

static int group_setup(void **state) {
        assert_non_null(mkdtemp(base));
        snprintf(dir_a1, sizeof dir_a1, "%s/a1/cluster", base);
        snprintf(dir_a2, sizeof dir_a2, "%s/a2/cluster", base);
        snprintf(dir_b1, sizeof dir_b1, "%s/b1/cluster", base);
        assert_int_equal(pki_init(dir_a1, "alpha", id_a1), 0);
        assert_int_equal(pki_init(dir_b1, "beta", id_b1), 0);
        make_member(dir_a1, dir_a2, id_a2);
        return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) remove(path);
        return 0;
}

static int group_teardown(void **state) {
        (void) nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return 0;
}

/* One side of a connection: the SSL, whether its handshake finished, and why it failed. */
typedef struct Side {
        SSL *ssl;
        bool done, failed;
        char error[TLS_ERROR_MAX];
        bool saw_cert_request;
} Side;

typedef struct Conn {
        Side client, server;
} Conn;

static void msg_cb(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl, void *arg) {
        Side *s = arg;
        if (!write_p && content_type == SSL3_RT_HANDSHAKE && len > 0 &&
            ((const uint8_t *) buf)[0] == SSL3_MT_CERTIFICATE_REQUEST)
                s->saw_cert_request = true;
}

static void conn_init(Conn *c, SSL_CTX *client_ctx, SSL_CTX *server_ctx) {
        BIO *bc, *bs;

        *c = (Conn) {};
        c->client.ssl = SSL_new(client_ctx);
        c->server.ssl = SSL_new(server_ctx);
        assert_non_null(c->client.ssl);
        assert_non_null(c->server.ssl);
        assert_int_equal(BIO_new_bio_pair(&bc, 0, &bs, 0), 1);
        SSL_set_bio(c->client.ssl, bc, bc);
        SSL_set_bio(c->server.ssl, bs, bs);
        SSL_set_connect_state(c->client.ssl);
        SSL_set_accept_state(c->server.ssl);
        SSL_set_msg_callback(c->client.ssl, msg_cb);
        SSL_set_msg_callback_arg(c->client.ssl, &c->client);
}

static void conn_done(Conn *c) {
        SSL_free(c->client.ssl);
        SSL_free(c->server.ssl);
        assert_int_equal(ERR_peek_error(), 0);
}

static void step(Side *s) {
        if (s->done || s->failed)
                return;
        int r = SSL_do_handshake(s->ssl);
        if (r == 1) {
                s->done = true;
                return;
        }
        int e = SSL_get_error(s->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
        s->failed = true;
        tls_handshake_error(s->ssl, s->error, sizeof s->error);
}

/* Reads what the other side sent: data, or the alert that says it refused us. */
static int read_some(Side *s, char *buf, size_t size) {
        int r = SSL_read(s->ssl, buf, (int) size);
        if (r > 0)
                return r;
        int e = SSL_get_error(s->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
                return 0;
        s->failed = true;
        tls_handshake_error(s->ssl, s->error, sizeof s->error);
        return -1;
}

/*
 * Runs the handshake to its end on both sides. In TLS 1.3 the client is
 * done before the server has looked at its certificate, so each side then
 * also sends a byte and reads the other's: a refusal arrives as an alert.
 */
static void conn_run(Conn *c) {
        char b[16];

        for (int i = 0; i < 50; i++) {
                step(&c->client);
                step(&c->server);
        }
        assert_true(c->client.done || c->client.failed);
        assert_true(c->server.done || c->server.failed);
        if (c->server.done)
                assert_int_equal(SSL_write(c->server.ssl, "s", 1), 1);
        if (c->client.done)
                (void) SSL_write(c->client.ssl, "c", 1);
        for (int i = 0; i < 4; i++) {
                if (c->client.done && !c->client.failed)
                        (void) read_some(&c->client, b, sizeof b);
                if (c->server.done && !c->server.failed)
                        (void) read_some(&c->server, b, sizeof b);
        }
}

static bool conn_ok(const Conn *c) {
        return c->client.done && !c->client.failed && c->server.done && !c->server.failed;
}

static SSL_CTX *server_ctx(const char *dir) {
        SSL_CTX *ctx = NULL;
        assert_int_equal(tls_server_ctx_new(dir, &ctx), 0);
        return ctx;
}

static SSL_CTX *client_ctx(const char *dir) {
        SSL_CTX *ctx = NULL;
        assert_int_equal(tls_client_ctx_new(dir, &ctx), 0);
        return ctx;
}

static SSL_CTX *join_ctx(void) {
        SSL_CTX *ctx = NULL;
        assert_int_equal(tls_join_client_ctx_new(&ctx), 0);
        return ctx;
}

static void test_init_and_files(void **state) {
        uint8_t fp[PKI_FINGERPRINT_SIZE], id[16];
        char hex[PKI_FINGERPRINT_HEX_MAX], other[64];
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len;
        X509 *ca = NULL, *node = NULL;

        assert_int_equal(pki_status(dir_a1), PKI_STATUS_CA);
        assert_int_equal(pki_status(dir_a2), PKI_STATUS_MEMBER);
        assert_int_equal(pki_status(base), PKI_STATUS_NONE);
        assert_int_equal(pki_init(dir_a1, "again", id_a1), -EEXIST);
        assert_int_equal(pki_init(dir_a1, "", id_a1), -EINVAL);

        assert_int_equal(mode_of(dir_a1, NULL), 0700);
        assert_int_equal(mode_of(dir_a1, PKI_CA_KEY), 0600);
        assert_int_equal(mode_of(dir_a1, PKI_NODE_KEY), 0600);
        assert_int_equal(mode_of(dir_a2, NULL), 0700);
        assert_int_equal(mode_of(dir_a2, PKI_NODE_KEY), 0600);
        assert_int_equal(mode_of(dir_a2, PKI_CA_KEY), -1);

        /* The fingerprint is SHA-256 of the CA's DER, the same on every member. */
        assert_int_equal(pki_load_cert(dir_a1, PKI_CA_CRT, &ca), 0);
        assert_int_equal(X509_digest(ca, EVP_sha256(), md, &md_len), 1);
        assert_int_equal(pki_ca_fingerprint(dir_a1, fp), 0);
        assert_memory_equal(fp, md, 32);
        assert_int_equal(strlen(pki_fingerprint_hex(fp, hex)), 64);
        assert_int_equal(pki_ca_fingerprint(dir_a2, md), 0);
        assert_memory_equal(fp, md, 32);
        assert_int_equal(pki_ca_fingerprint(dir_b1, md), 0);
        assert_memory_not_equal(fp, md, 32);
        assert_int_equal(X509_check_ca(ca), 1);
        X509_NAME_oneline(X509_get_subject_name(ca), other, sizeof other);
        assert_string_equal(other, "/CN=inferd cluster CA alpha");

        /* The node certificate: CN = node id in hex, signed by the CA. */
        assert_int_equal(pki_load_cert(dir_a2, PKI_NODE_CRT, &node), 0);
        assert_int_equal(pki_cert_node_id(node, id), 0);
        assert_memory_equal(id, id_a2, 16);
        assert_int_equal(pki_verify_cert(ca, node, NULL), 0);
        X509_NAME_oneline(X509_get_subject_name(node), other, sizeof other);
        assert_string_equal(other, "/CN=a20102030405060708090a0b0c0d0e0f");
        X509_free(node);
        X509_free(ca);

        /* A long name is cut to the CN limit at a character boundary. */
        char d[128], name[256];
        snprintf(d, sizeof d, "%s/long/cluster", base);
        memset(name, 0, sizeof name);
        for (size_t i = 0; i + 2 < 200; i += 2)
                memcpy(name + i, "\xc3\xa9", 2);
        assert_int_equal(pki_init(d, name, id_new), 0);

        /* leave: everything goes, a second time is fine. */
        assert_int_equal(pki_remove(d), 0);
        assert_int_equal(mode_of(d, NULL), -1);
        assert_int_equal(pki_status(d), PKI_STATUS_NONE);
        assert_int_equal(pki_remove(d), 0);
}

static void test_mesh(void **state) {
        SSL_CTX *s1 = server_ctx(dir_a1), *c1 = client_ctx(dir_a1), *s2 = server_ctx(dir_a2), *c2 = client_ctx(dir_a2);
        uint8_t id[16];
        Conn c;

        /* a2 dials a1 and the other way round: each learns the other's id from its certificate. */
        conn_init(&c, c2, s1);
        conn_run(&c);
        assert_true(conn_ok(&c));
        assert_true(c.client.saw_cert_request);
        assert_false(tls_connection_is_join(c.server.ssl));
        assert_int_equal(tls_peer_node_id(c.server.ssl, id), 0);
        assert_memory_equal(id, id_a2, 16);
        assert_int_equal(tls_peer_node_id(c.client.ssl, id), 0);
        assert_memory_equal(id, id_a1, 16);
        assert_int_equal(SSL_version(c.client.ssl), TLS1_3_VERSION);
        conn_done(&c);

        conn_init(&c, c1, s2);
        conn_run(&c);
        assert_true(conn_ok(&c));
        assert_int_equal(tls_peer_node_id(c.server.ssl, id), 0);
        assert_memory_equal(id, id_a1, 16);
        assert_int_equal(tls_peer_node_id(c.client.ssl, id), 0);
        assert_memory_equal(id, id_a2, 16);
        conn_done(&c);

        SSL_CTX_free(s1);
        SSL_CTX_free(c1);
        SSL_CTX_free(s2);
        SSL_CTX_free(c2);
}

static void test_mesh_other_cluster(void **state) {
        SSL_CTX *sa = server_ctx(dir_a1), *ca = client_ctx(dir_a2), *sb = server_ctx(dir_b1), *cb = client_ctx(dir_b1);
        uint8_t id[16];
        Conn c;

        /* b1 as a client of a1: a1 refuses its certificate. b1 must not look at a1's first, or it refuses first. */
        conn_init(&c, cb, sa);
        SSL_set_verify(c.client.ssl, SSL_VERIFY_NONE, NULL);
        conn_run(&c);
        assert_true(c.server.failed);
        assert_string_equal(c.server.error, "certificate not signed by this cluster's CA");
        assert_true(c.client.failed);
        assert_string_equal(c.client.error, "peer refused our certificate (not signed by its cluster's CA)");
        assert_int_equal(tls_peer_node_id(c.server.ssl, id), -EPROTO);
        conn_done(&c);

        /* b1 as a server of a2: a2 refuses it. */
        conn_init(&c, ca, sb);
        conn_run(&c);
        assert_true(c.client.failed);
        assert_string_equal(c.client.error, "certificate not signed by this cluster's CA");
        assert_true(c.server.failed);
        assert_string_equal(c.server.error, "peer refused our certificate (not signed by its cluster's CA)");
        conn_done(&c);

        /* Both strict: the client refuses the server before it shows its own. */
        conn_init(&c, cb, sa);
        conn_run(&c);
        assert_true(c.client.failed);
        assert_string_equal(c.client.error, "certificate not signed by this cluster's CA");
        assert_true(c.server.failed);
        conn_done(&c);

        SSL_CTX_free(sa);
        SSL_CTX_free(ca);
        SSL_CTX_free(sb);
        SSL_CTX_free(cb);
}

static void test_mesh_without_cert(void **state) {
        SSL_CTX *s = server_ctx(dir_a1), *j = join_ctx();
        uint8_t id[16];
        Conn c;

        /* The join context has no certificate; asking for the mesh protocol with it is refused. */
        conn_init(&c, j, s);
        assert_int_equal(SSL_set_alpn_protos(c.client.ssl, (const unsigned char *) "\x08" TLS_ALPN_MESH, 9), 0);
        conn_run(&c);
        assert_true(c.client.saw_cert_request);
        assert_true(c.server.failed);
        assert_string_equal(c.server.error, "peer sent no certificate");
        assert_true(c.client.failed);
        assert_string_equal(c.client.error, "peer requires a certificate of its cluster");
        assert_int_equal(tls_peer_node_id(c.server.ssl, id), -EPROTO);
        conn_done(&c);

        SSL_CTX_free(s);
        SSL_CTX_free(j);
}

static void test_alpn_refused(void **state) {
        SSL_CTX *s = server_ctx(dir_a1), *plain = SSL_CTX_new(TLS_client_method()), *m = client_ctx(dir_a2);
        static const struct {
                const char *wire;
                size_t len;
        } offers[] = {
                { NULL, 0 },                                    /* no ALPN at all */
                { "\x08http/1.1", 9 },                          /* someone else's protocol */
                { "\x08inferd/2", 9 },
        };
        Conn c;

        assert_non_null(plain);
        SSL_CTX_set_verify(plain, SSL_VERIFY_NONE, NULL);
        for (size_t i = 0; i < ELEMENTSOF(offers); i++) {
                conn_init(&c, plain, s);
                if (offers[i].wire)
                        assert_int_equal(SSL_set_alpn_protos(c.client.ssl, (const unsigned char *) offers[i].wire,
                                                             (unsigned) offers[i].len), 0);
                conn_run(&c);
                assert_true(c.server.failed);
                assert_false(c.client.done);
                assert_string_equal(c.server.error, "peer offered no inferd protocol (ALPN inferd/1 or inferd-join/1)");
                assert_string_equal(c.client.error, "peer refused our protocol (ALPN)");
                conn_done(&c);
        }

        /* A member's certificate does not make up for a missing ALPN. */
        conn_init(&c, m, s);
        assert_int_equal(SSL_set_alpn_protos(c.client.ssl, (const unsigned char *) "", 0), 0);
        conn_run(&c);
        assert_true(c.server.failed);
        assert_string_equal(c.server.error, "peer offered no inferd protocol (ALPN inferd/1 or inferd-join/1)");
        conn_done(&c);

        SSL_CTX_free(s);
        SSL_CTX_free(plain);
        SSL_CTX_free(m);
}

static void test_join_handshake(void **state) {
        SSL_CTX *s = server_ctx(dir_a1), *j = join_ctx();
        uint8_t fp_a[PKI_FINGERPRINT_SIZE], fp_b[PKI_FINGERPRINT_SIZE], fp[PKI_FINGERPRINT_SIZE];
        uint8_t ex_c[TOKEN_EXPORTER_SIZE], ex_s[TOKEN_EXPORTER_SIZE], id[16];
        X509 *ca = NULL;
        Conn c, c2;

        assert_int_equal(pki_ca_fingerprint(dir_a1, fp_a), 0);
        assert_int_equal(pki_ca_fingerprint(dir_b1, fp_b), 0);

        conn_init(&c, j, s);
        conn_run(&c);
        assert_true(conn_ok(&c));
        /* The client-hello callback's SSL_set_verify(NONE) did stop the CertificateRequest. */
        assert_false(c.client.saw_cert_request);
        assert_null(SSL_get0_peer_certificate(c.server.ssl));
        assert_true(tls_connection_is_join(c.server.ssl));
        assert_true(tls_connection_is_join(c.client.ssl));
        assert_int_equal(tls_peer_node_id(c.server.ssl, id), -EPROTO);

        assert_int_equal(tls_join_verify_server(c.client.ssl, fp_a, &ca), 0);
        assert_int_equal(pki_fingerprint(ca, fp), 0);
        assert_memory_equal(fp, fp_a, sizeof fp);
        X509_free(ca);
        assert_int_equal(tls_join_verify_server(c.client.ssl, fp_b, NULL), -EXDEV);

        /* Both ends derive the same exporter; another connection gets another one. */
        assert_int_equal(tls_join_exporter(c.client.ssl, ex_c), 0);
        assert_int_equal(tls_join_exporter(c.server.ssl, ex_s), 0);
        assert_memory_equal(ex_c, ex_s, sizeof ex_c);
        conn_init(&c2, j, s);
        conn_run(&c2);
        assert_true(conn_ok(&c2));
        assert_int_equal(tls_join_exporter(c2.client.ssl, ex_s), 0);
        assert_memory_not_equal(ex_c, ex_s, sizeof ex_c);
        conn_done(&c2);
        conn_done(&c);

        /* A server of cluster B does not have A's CA in its chain. */
        SSL_CTX *sb = server_ctx(dir_b1);
        conn_init(&c, j, sb);
        conn_run(&c);
        assert_true(conn_ok(&c));
        assert_int_equal(tls_join_verify_server(c.client.ssl, fp_a, NULL), -EXDEV);
        conn_done(&c);

        SSL_CTX_free(sb);
        SSL_CTX_free(s);
        SSL_CTX_free(j);
}

/* The joiner's half up to its "join" frame: handshake, server check, proof. */
typedef struct Joining {
        Conn conn;
        JoinToken token;
        PkiJoin *join;
        const uint8_t *csr;
        size_t csr_size;
        uint8_t proof[TOKEN_PROOF_SIZE];
        uint8_t exporter_server[TOKEN_EXPORTER_SIZE];
} Joining;

static void joining_start(Joining *jn, const char *token_text, const uint8_t id[16], SSL_CTX *jctx, SSL_CTX *sctx) {
        uint8_t ex[TOKEN_EXPORTER_SIZE];

        *jn = (Joining) {};
        assert_int_equal(token_parse(token_text, &jn->token), 0);
        assert_int_equal(pki_join_new(id, &jn->join), 0);
        jn->csr = pki_join_csr(jn->join, &jn->csr_size);
        conn_init(&jn->conn, jctx, sctx);
        conn_run(&jn->conn);
        assert_true(conn_ok(&jn->conn));
        assert_int_equal(tls_join_verify_server(jn->conn.client.ssl, jn->token.ca_fingerprint, NULL), 0);
        assert_int_equal(tls_join_exporter(jn->conn.client.ssl, ex), 0);
        assert_int_equal(token_proof(jn->token.secret, ex, jn->csr, jn->csr_size, jn->proof), 0);
        assert_true(tls_connection_is_join(jn->conn.server.ssl));
        assert_int_equal(tls_join_exporter(jn->conn.server.ssl, jn->exporter_server), 0);
}

static void joining_done(Joining *jn) {
        conn_done(&jn->conn);
        pki_join_free(jn->join);
        token_clear(&jn->token);
}

static int redeem(const char *dir, Joining *jn, uint64_t now) {
        return token_redeem(dir, jn->token.id, jn->proof, jn->exporter_server, jn->csr, jn->csr_size, now);
}

static void test_join_flow(void **state) {
        SSL_CTX *s = server_ctx(dir_a1), *j = join_ctx();
        _cleanup_free_ uint8_t *cert = NULL, *ca = NULL;
        _cleanup_free_ char *tokens = NULL;
        char text[TOKEN_TEXT_MAX], d[128], hex[2 * TOKEN_SECRET_SIZE + 1];
        size_t cert_size, ca_size;
        uint64_t now = now_usec(CLOCK_REALTIME);
        uint8_t id[16];
        Joining jn;
        Conn c;

        snprintf(d, sizeof d, "%s/new/cluster", base);
        assert_int_equal(token_issue(dir_a1, now, 600 * SEC, text), 0);
        assert_non_null(startswith(text, "inferd-join-1."));
        assert_int_equal(strlen(text), 14 + 96);
        assert_int_equal(mode_of(dir_a1, "tokens"), 0600);

        joining_start(&jn, text, id_new, j, s);
        /* The server's half: the token, then the request; then "join-ok" back. */
        assert_int_equal(redeem(dir_a1, &jn, now + SEC), 0);
        assert_int_equal(pki_sign_csr(dir_a1, jn.csr, jn.csr_size, id_new, &cert, &cert_size), 0);
        assert_int_equal(pki_ca_der(dir_a1, &ca, &ca_size), 0);
        assert_int_equal(pki_status(d), PKI_STATUS_NONE);
        assert_int_equal(pki_join_finish(jn.join, d, jn.token.ca_fingerprint, cert, cert_size, ca, ca_size), 0);
        assert_int_equal(pki_status(d), PKI_STATUS_MEMBER);
        assert_int_equal(mode_of(d, NULL), 0700);
        assert_int_equal(mode_of(d, PKI_NODE_KEY), 0600);

        /* The used token's secret is gone from the file; a replay is told so. */
        snprintf(d, sizeof d, "%s/tokens", dir_a1);
        assert_int_equal(read_full_file(d, 1 << 20, &tokens, NULL), 0);
        snprintf(d, sizeof d, "%s/new/cluster", base);
        assert_null(strstr(tokens, pki_hex(jn.token.secret, TOKEN_SECRET_SIZE, hex)));
        assert_non_null(strstr(tokens, pki_hex(jn.token.id, TOKEN_ID_SIZE, hex)));
        assert_int_equal(redeem(dir_a1, &jn, now + 2 * SEC), -EKEYREVOKED);
        /* Joining twice is refused locally too. */
        assert_int_equal(pki_join_finish(jn.join, d, jn.token.ca_fingerprint, cert, cert_size, ca, ca_size), -EEXIST);
        joining_done(&jn);

        /* The new node is a member: mesh both ways with a1. */
        SSL_CTX *sn = server_ctx(d), *cn = client_ctx(d), *c1 = client_ctx(dir_a1);
        conn_init(&c, cn, s);
        conn_run(&c);
        assert_true(conn_ok(&c));
        assert_int_equal(tls_peer_node_id(c.server.ssl, id), 0);
        assert_memory_equal(id, id_new, 16);
        conn_done(&c);
        conn_init(&c, c1, sn);
        conn_run(&c);
        assert_true(conn_ok(&c));
        assert_int_equal(tls_peer_node_id(c.client.ssl, id), 0);
        assert_memory_equal(id, id_new, 16);
        conn_done(&c);

        SSL_CTX_free(sn);
        SSL_CTX_free(cn);
        SSL_CTX_free(c1);
        SSL_CTX_free(s);
        SSL_CTX_free(j);
        assert_int_equal(pki_remove(d), 0);
}

static void test_join_refused(void **state) {
        SSL_CTX *s = server_ctx(dir_a1), *j = join_ctx();
        _cleanup_free_ uint8_t *cert = NULL;
        char text[TOKEN_TEXT_MAX], text_b[TOKEN_TEXT_MAX];
        uint64_t now = now_usec(CLOCK_REALTIME);
        size_t cert_size;
        JoinToken t;
        Joining jn;
        Conn c;

        /* Forged: the right id with a wrong secret. The token is spent by the try. */
        assert_int_equal(token_issue(dir_a1, now, 600 * SEC, text), 0);
        joining_start(&jn, text, id_new, j, s);
        uint8_t good[TOKEN_PROOF_SIZE];
        memcpy(good, jn.proof, sizeof good);
        jn.token.secret[0] ^= 1;
        assert_int_equal(token_proof(jn.token.secret, jn.exporter_server, jn.csr, jn.csr_size, jn.proof), 0);
        assert_int_equal(redeem(dir_a1, &jn, now), -EKEYREJECTED);
        memcpy(jn.proof, good, sizeof good);
        assert_int_equal(redeem(dir_a1, &jn, now), -EKEYREVOKED);
        joining_done(&jn);

        /* A proof made on another connection (relayed) does not fit this one. */
        assert_int_equal(token_issue(dir_a1, now, 600 * SEC, text), 0);
        joining_start(&jn, text, id_new, j, s);
        conn_init(&c, j, s);
        conn_run(&c);
        assert_int_equal(tls_join_exporter(c.server.ssl, jn.exporter_server), 0);
        conn_done(&c);
        assert_int_equal(redeem(dir_a1, &jn, now), -EKEYREJECTED);
        joining_done(&jn);

        /* Expired; and once a later write pruned it, unknown. */
        assert_int_equal(token_issue(dir_a1, now, 60 * SEC, text), 0);
        joining_start(&jn, text, id_new, j, s);
        assert_int_equal(redeem(dir_a1, &jn, now + 61 * SEC), -EKEYEXPIRED);
        assert_int_equal(token_issue(dir_a1, now + 61 * SEC, 600 * SEC, text_b), 0);
        assert_int_equal(redeem(dir_a1, &jn, now + 62 * SEC), -ESRCH);
        joining_done(&jn);

        /* A token of cluster B: the joiner sees A's server is not B's, and A never issued it. */
        assert_int_equal(token_issue(dir_b1, now, 600 * SEC, text_b), 0);
        assert_int_equal(token_parse(text_b, &t), 0);
        conn_init(&c, j, s);
        conn_run(&c);
        assert_true(conn_ok(&c));
        assert_int_equal(tls_join_verify_server(c.client.ssl, t.ca_fingerprint, NULL), -EXDEV);
        conn_done(&c);
        uint8_t zero[32] = {};
        assert_int_equal(token_redeem(dir_a1, t.id, zero, zero, "x", 1, now), -ESRCH);
        token_clear(&t);

        /* The request names another node than the joiner claims: refused even with a valid token and proof. */
        assert_int_equal(token_issue(dir_a1, now, 600 * SEC, text), 0);
        joining_start(&jn, text, id_b1, j, s);
        assert_int_equal(redeem(dir_a1, &jn, now), 0);
        assert_int_equal(pki_sign_csr(dir_a1, jn.csr, jn.csr_size, id_new, &cert, &cert_size), -EBADE);
        joining_done(&jn);

        /* A request that is not one, or whose signature is broken. */
        _cleanup_(pki_join_freep) PkiJoin *pj = NULL;
        size_t csr_size;
        assert_int_equal(pki_join_new(id_new, &pj), 0);
        const uint8_t *csr = pki_join_csr(pj, &csr_size);
        uint8_t bad[4096];
        assert_true(csr_size <= sizeof bad);
        memcpy(bad, csr, csr_size);
        bad[csr_size - 3] ^= 0x40;
        assert_int_equal(pki_sign_csr(dir_a1, bad, csr_size, id_new, &cert, &cert_size), -EBADR);
        assert_int_equal(pki_sign_csr(dir_a1, "garbage", 7, id_new, &cert, &cert_size), -EBADR);
        assert_int_equal(pki_sign_csr(dir_a1, csr, csr_size - 1, id_new, &cert, &cert_size), -EBADR);
        memcpy(bad, csr, csr_size);
        bad[csr_size] = 0;
        assert_int_equal(pki_sign_csr(dir_a1, bad, csr_size + 1, id_new, &cert, &cert_size), -EBADR);
        assert_int_equal(pki_sign_csr(dir_a1, csr, PKI_CSR_MAX + 1, id_new, &cert, &cert_size), -EBADR);

        /* Only the CA's node issues tokens and signs. */
        assert_int_equal(token_issue(dir_a2, now, 600 * SEC, text), -ENOKEY);
        assert_int_equal(pki_sign_csr(dir_a2, csr, csr_size, id_new, &cert, &cert_size), -ENOKEY);
        assert_non_null(strstr(pki_strerror(-ENOKEY), "does not hold the cluster CA"));
        assert_int_equal(token_issue(dir_a1, now, 0, text), -EINVAL);

        SSL_CTX_free(s);
        SSL_CTX_free(j);
}

static void test_join_ok_checked(void **state) {
        _cleanup_free_ uint8_t *cert = NULL, *cert_b = NULL, *cert_other = NULL, *ca = NULL, *ca_b = NULL;
        _cleanup_(pki_join_freep) PkiJoin *pj = NULL, *other = NULL;
        size_t cert_size, cert_b_size, cert_other_size, ca_size, ca_b_size, csr_size, other_size;
        uint8_t fp[PKI_FINGERPRINT_SIZE];
        char d[128];

        snprintf(d, sizeof d, "%s/checked/cluster", base);
        assert_int_equal(pki_ca_fingerprint(dir_a1, fp), 0);
        assert_int_equal(pki_ca_der(dir_a1, &ca, &ca_size), 0);
        assert_int_equal(pki_ca_der(dir_b1, &ca_b, &ca_b_size), 0);
        assert_int_equal(pki_join_new(id_new, &pj), 0);
        assert_int_equal(pki_join_new(id_new, &other), 0);
        const uint8_t *csr = pki_join_csr(pj, &csr_size);
        const uint8_t *csr_other = pki_join_csr(other, &other_size);
        assert_int_equal(pki_sign_csr(dir_a1, csr, csr_size, id_new, &cert, &cert_size), 0);
        assert_int_equal(pki_sign_csr(dir_b1, csr, csr_size, id_new, &cert_b, &cert_b_size), 0);
        assert_int_equal(pki_sign_csr(dir_a1, csr_other, other_size, id_new, &cert_other, &cert_other_size), 0);

        /* A CA without the token's fingerprint; a certificate from another CA; one for another key. */
        assert_int_equal(pki_join_finish(pj, d, fp, cert_b, cert_b_size, ca_b, ca_b_size), -EXDEV);
        assert_int_equal(pki_join_finish(pj, d, fp, cert_b, cert_b_size, ca, ca_size), -EPROTO);
        assert_int_equal(pki_join_finish(pj, d, fp, cert_other, cert_other_size, ca, ca_size), -ENOTUNIQ);
        assert_int_equal(pki_join_finish(pj, d, fp, cert, cert_size, ca, ca_size - 1), -EXDEV);
        assert_int_equal(pki_join_finish(pj, d, fp, "junk", 4, ca, ca_size), -EPROTO);
        /* Nothing written by the failures. */
        assert_int_equal(mode_of(d, NULL), -1);
        assert_int_equal(pki_join_finish(pj, d, fp, cert, cert_size, ca, ca_size), 0);
        assert_int_equal(pki_remove(d), 0);
}

static void test_token_text(void **state) {
        JoinToken t = {}, u;
        char text[TOKEN_TEXT_MAX], buf[TOKEN_TEXT_MAX + 16];

        for (size_t i = 0; i < sizeof t.ca_fingerprint; i++)
                t.ca_fingerprint[i] = (uint8_t) (0xff - i);
        for (size_t i = 0; i < sizeof t.id; i++)
                t.id[i] = (uint8_t) (i * 37);
        memset(t.secret, 0xfb, sizeof t.secret);
        token_format(&t, text);
        assert_int_equal(strspn(text + 14, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 96);
        assert_int_equal(token_parse(text, &u), 0);
        assert_memory_equal(&t, &u, sizeof t);
        snprintf(buf, sizeof buf, "  %s\n", text);
        assert_int_equal(token_parse(buf, &u), 0);
        assert_memory_equal(&t, &u, sizeof t);

        /* Truncated, too long, a stray character, garbage, empty, another version. */
        snprintf(buf, sizeof buf, "%.*s", (int) strlen(text) - 1, text);
        assert_int_equal(token_parse(buf, &u), -EBADMSG);
        snprintf(buf, sizeof buf, "%sA", text);
        assert_int_equal(token_parse(buf, &u), -EBADMSG);
        snprintf(buf, sizeof buf, "%s", text);
        buf[40] = '+';
        assert_int_equal(token_parse(buf, &u), -EBADMSG);
        buf[40] = '=';
        assert_int_equal(token_parse(buf, &u), -EBADMSG);
        assert_int_equal(token_parse("hello world", &u), -EBADMSG);
        assert_int_equal(token_parse("", &u), -EBADMSG);
        assert_int_equal(token_parse("inferd-join-1.", &u), -EBADMSG);
        snprintf(buf, sizeof buf, "inferd-join-2.%s", text + 14);
        assert_int_equal(token_parse(buf, &u), -EPROTONOSUPPORT);
        assert_non_null(strstr(pki_strerror(-EBADMSG), "malformed join token"));
        assert_non_null(strstr(pki_strerror(-EPROTONOSUPPORT), "unsupported"));
}

static void test_errors_distinct(void **state) {
        static const int codes[] = { EBADMSG, EPROTONOSUPPORT, ESRCH, EKEYREVOKED, EKEYEXPIRED, EKEYREJECTED, EBADR,
                                     EBADE, ENOKEY, EXDEV, EPROTO, ENOTUNIQ, EEXIST, EUCLEAN, ETOOMANYREFS };

        for (size_t i = 0; i < ELEMENTSOF(codes); i++) {
                assert_string_not_equal(pki_strerror(-codes[i]), strerror(codes[i]));
                for (size_t k = 0; k < i; k++)
                        assert_string_not_equal(pki_strerror(-codes[i]), pki_strerror(-codes[k]));
        }
        assert_string_equal(pki_strerror(-ENOMEM), strerror(ENOMEM));
}

static void test_tokens_file(void **state) {
        _cleanup_free_ char *data = NULL;
        char text[TOKEN_TEXT_MAX], d[128], path[160];
        uint64_t now = now_usec(CLOCK_REALTIME);
        JoinToken t;
        uint8_t zero[32] = {};

        snprintf(d, sizeof d, "%s/tok/cluster", base);
        assert_int_equal(pki_init(d, "tok", id_new), 0);
        snprintf(path, sizeof path, "%s/tokens", d);

        /* A corrupt file is an error, not an empty list. */
        assert_int_equal(write_file_atomic(path, "0011 nonsense\n", 14, 0600), 0);
        assert_int_equal(token_issue(d, now, SEC, text), -EUCLEAN);
        assert_int_equal(unlink(path), 0);

        /* The outstanding limit; expired ones do not count and are pruned. */
        for (int i = 0; i < TOKENS_MAX; i++)
                assert_int_equal(token_issue(d, now, 10 * SEC, text), 0);
        assert_int_equal(token_issue(d, now, 10 * SEC, text), -ETOOMANYREFS);
        assert_int_equal(token_issue(d, now + 11 * SEC, 10 * SEC, text), 0);
        assert_int_equal(read_full_file(path, 1 << 20, &data, NULL), 0);
        assert_non_null(startswith(data, "#"));
        /* The header and one line. */
        assert_int_equal(strchr(strchr(data, '\n') + 1, '\n') - data + 1, (ptrdiff_t) strlen(data));
        assert_int_equal(token_parse(text, &t), 0);
        assert_int_equal(token_redeem(d, t.id, zero, zero, "x", 1, now + 12 * SEC), -EKEYREJECTED);
        token_clear(&t);
        assert_int_equal(mode_of(d, "tokens"), 0600);
        assert_int_equal(pki_remove(d), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_init_and_files),
                cmocka_unit_test(test_token_text),
                cmocka_unit_test(test_errors_distinct),
                cmocka_unit_test(test_mesh),
                cmocka_unit_test(test_mesh_other_cluster),
                cmocka_unit_test(test_mesh_without_cert),
                cmocka_unit_test(test_alpn_refused),
                cmocka_unit_test(test_join_handshake),
                cmocka_unit_test(test_join_flow),
                cmocka_unit_test(test_join_refused),
                cmocka_unit_test(test_join_ok_checked),
                cmocka_unit_test(test_tokens_file),
        };
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
