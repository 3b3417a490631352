/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>

#include "macro.h"
#include "pki.h"
#include "tls.h"

/* Leaf and CA: nothing in between. */
#define VERIFY_DEPTH 0

DEFINE_TRIVIAL_CLEANUP_FUNC(SSL_CTX *, SSL_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, X509_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_STORE *, X509_STORE_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);

typedef enum Alpn {
        ALPN_NONE,
        ALPN_MESH,
        ALPN_JOIN,
} Alpn;

static bool alpn_is(const unsigned char *p, size_t len, const char *proto) {
        return len == strlen(proto) && memcmp(p, proto, len) == 0;
}

/*
 * Which of ours a client's ALPN list (wire format: length-prefixed names)
 * asks for, mesh first; *ret_at points at the chosen name's length byte.
 * The client-hello callback and the ALPN callback both use this, so the
 * protocol selected is always the one the certificate request was decided for.
 */
static Alpn alpn_choose(const unsigned char *list, size_t len, const unsigned char **ret_at) {
        const unsigned char *join = NULL;

        for (size_t i = 0; i < len;) {
                size_t n = list[i];
                if (n == 0 || i + 1 + n > len)
                        return ALPN_NONE;
                if (alpn_is(list + i + 1, n, TLS_ALPN_MESH)) {
                        *ret_at = list + i;
                        return ALPN_MESH;
                }
                if (alpn_is(list + i + 1, n, TLS_ALPN_JOIN) && !join)
                        join = list + i;
                i += 1 + n;
        }
        if (!join)
                return ALPN_NONE;
        *ret_at = join;
        return ALPN_JOIN;
}

static int client_hello_cb(SSL *ssl, int *al, void *userdata) {
        const unsigned char *ext = NULL, *at;
        size_t len = 0;
        Alpn a = ALPN_NONE;

        /* The extension body is a 2-byte length and the list. */
        if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext, &len) == 1 &&
            len >= 2 && (size_t) (ext[0] << 8 | ext[1]) == len - 2)
                a = alpn_choose(ext + 2, len - 2, &at);

        switch (a) {
        case ALPN_MESH:
                SSL_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
                return SSL_CLIENT_HELLO_SUCCESS;
        case ALPN_JOIN:
                /* The joiner has no certificate yet; it proves itself with the token instead. */
                SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
                return SSL_CLIENT_HELLO_SUCCESS;
        default:
                /* Without ALPN the ALPN callback would not even run: refuse here. */
                ERR_raise_data(ERR_LIB_SSL, SSL_R_NO_APPLICATION_PROTOCOL, "client offered neither %s nor %s",
                               TLS_ALPN_MESH, TLS_ALPN_JOIN);
                *al = SSL_AD_NO_APPLICATION_PROTOCOL;
                return SSL_CLIENT_HELLO_ERROR;
        }
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                          unsigned inlen, void *userdata) {
        const unsigned char *at;

        if (alpn_choose(in, inlen, &at) == ALPN_NONE)
                return SSL_TLSEXT_ERR_ALERT_FATAL;
        *out = at + 1;
        *outlen = at[0];
        return SSL_TLSEXT_ERR_OK;
}

static int ctx_new(bool server, SSL_CTX **ret) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
        if (!ctx)
                return pki_openssl_error(-ENOMEM, "SSL_CTX_new");
        if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
            SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1)
                return pki_openssl_error(-EIO, "SSL_CTX_set_min_proto_version");
        (void) SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        if (server && SSL_CTX_set_num_tickets(ctx, 0) != 1)
                return pki_openssl_error(-EIO, "SSL_CTX_set_num_tickets");
        *ret = TAKE_PTR(ctx);
        return 0;
}

static int set_alpn(SSL_CTX *ctx, const char *proto) {
        unsigned char wire[32];
        size_t n = strlen(proto);

        assert(n < sizeof wire);
        wire[0] = (unsigned char) n;
        memcpy(wire + 1, proto, n);
        /* 0 on success, unlike the rest of OpenSSL. */
        return SSL_CTX_set_alpn_protos(ctx, wire, (unsigned) n + 1) == 0 ? 0 : pki_openssl_error(-ENOMEM, "ALPN");
}

/* Our certificate (with the CA's after it, for joiners), key, and the CA as the only trust anchor. */
static int ctx_load(SSL_CTX *ctx, const char *dir) {
        _cleanup_(X509_freep) X509 *ca = NULL, *node = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(X509_STORE_freep) X509_STORE *store = NULL;
        int r;

        r = pki_load_cert(dir, PKI_CA_CRT, &ca);
        if (r < 0)
                return r;
        r = pki_load_cert(dir, PKI_NODE_CRT, &node);
        if (r < 0)
                return r;
        r = pki_load_key(dir, PKI_NODE_KEY, &key);
        if (r < 0)
                return r;

        if (SSL_CTX_use_certificate(ctx, node) != 1 ||
            SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1)
                return pki_openssl_error(-EUCLEAN, "node.crt and node.key");
        if (SSL_CTX_add1_chain_cert(ctx, ca) != 1)
                return pki_openssl_error(-ENOMEM, "SSL_CTX_add1_chain_cert");

        store = X509_STORE_new();
        if (!store || X509_STORE_add_cert(store, ca) != 1)
                return pki_openssl_error(-ENOMEM, "X509_STORE_add_cert");
        SSL_CTX_set_cert_store(ctx, TAKE_PTR(store));
        SSL_CTX_set_verify_depth(ctx, VERIFY_DEPTH);
        return 0;
}

int tls_server_ctx_new(const char *dir, SSL_CTX **ret) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *ctx = NULL;
        int r;

        r = ctx_new(true, &ctx);
        if (r < 0)
                return r;
        r = ctx_load(ctx, dir);
        if (r < 0)
                return r;
        /* The strict default; client_hello_cb() relaxes it for joiners only. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);
        *ret = TAKE_PTR(ctx);
        return 0;
}

int tls_client_ctx_new(const char *dir, SSL_CTX **ret) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *ctx = NULL;
        int r;

        r = ctx_new(false, &ctx);
        if (r < 0)
                return r;
        r = ctx_load(ctx, dir);
        if (r < 0)
                return r;
        r = set_alpn(ctx, TLS_ALPN_MESH);
        if (r < 0)
                return r;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        *ret = TAKE_PTR(ctx);
        return 0;
}

int tls_join_client_ctx_new(SSL_CTX **ret) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *ctx = NULL;
        int r;

        r = ctx_new(false, &ctx);
        if (r < 0)
                return r;
        r = set_alpn(ctx, TLS_ALPN_JOIN);
        if (r < 0)
                return r;
        /* Verified after the handshake against the token's fingerprint: there is no CA to trust yet. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        *ret = TAKE_PTR(ctx);
        return 0;
}

static bool alpn_selected(const SSL *ssl, const char *proto) {
        const unsigned char *p = NULL;
        unsigned len = 0;

        SSL_get0_alpn_selected(ssl, &p, &len);
        return p && alpn_is(p, len, proto);
}

bool tls_connection_is_join(const SSL *ssl) {
        return alpn_selected(ssl, TLS_ALPN_JOIN);
}

int tls_peer_node_id(const SSL *ssl, uint8_t ret[PKI_NODE_ID_SIZE]) {
        if (!SSL_is_init_finished(ssl) || !alpn_selected(ssl, TLS_ALPN_MESH))
                return -EPROTO;
        X509 *cert = SSL_get0_peer_certificate(ssl);
        if (!cert || SSL_get_verify_result(ssl) != X509_V_OK)
                return -EPROTO;
        return pki_cert_node_id(cert, ret);
}

int tls_join_verify_server(SSL *ssl, const uint8_t ca_fingerprint[PKI_FINGERPRINT_SIZE], X509 **ret_ca) {
        uint8_t fp[PKI_FINGERPRINT_SIZE];
        X509 *ca = NULL;
        int r;

        if (!SSL_is_init_finished(ssl) || !tls_connection_is_join(ssl))
                return -EPROTO;
        /* On the client side the chain starts with the server's own certificate. */
        X509 *leaf = SSL_get0_peer_certificate(ssl);
        STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
        if (!leaf || !chain)
                return -EPROTO;
        for (int i = 0; i < sk_X509_num(chain) && !ca; i++) {
                X509 *c = sk_X509_value(chain, i);
                r = pki_fingerprint(c, fp);
                if (r < 0)
                        return r;
                if (CRYPTO_memcmp(fp, ca_fingerprint, sizeof fp) == 0)
                        ca = c;
        }
        if (!ca)
                return -EXDEV;
        r = pki_verify_cert(ca, leaf, chain);
        if (r < 0)
                return r;
        if (ret_ca) {
                if (X509_up_ref(ca) != 1)
                        return pki_openssl_error(-EIO, "X509_up_ref");
                *ret_ca = ca;
        }
        return 0;
}

int tls_join_exporter(SSL *ssl, uint8_t ret[TOKEN_EXPORTER_SIZE]) {
        if (!SSL_is_init_finished(ssl))
                return -EPROTO;
        /* No context: the label and the session are all it is bound to. */
        if (SSL_export_keying_material(ssl, ret, TOKEN_EXPORTER_SIZE, TLS_EXPORTER_LABEL,
                                       sizeof TLS_EXPORTER_LABEL - 1, NULL, 0, 0) != 1)
                return pki_openssl_error(-EIO, "SSL_export_keying_material");
        return 0;
}

const char *tls_verify_string(long v) {
        switch (v) {
        case X509_V_OK:
                return NULL;
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        case X509_V_ERR_CERT_CHAIN_TOO_LONG:
                return "certificate not signed by this cluster's CA";
        case X509_V_ERR_CERT_HAS_EXPIRED:
                return "certificate expired";
        case X509_V_ERR_CERT_NOT_YET_VALID:
                return "certificate not valid yet (are the nodes' clocks far apart?)";
        default:
                return X509_verify_cert_error_string(v);
        }
}

const char *tls_error_string(unsigned long e) {
        if (ERR_GET_LIB(e) != ERR_LIB_SSL)
                return NULL;
        switch (ERR_GET_REASON(e)) {
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
                return "peer sent no certificate";
        case SSL_R_NO_APPLICATION_PROTOCOL:
                return "peer offered no inferd protocol (ALPN " TLS_ALPN_MESH " or " TLS_ALPN_JOIN ")";
        case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
                return "peer requires a certificate of its cluster";
        case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
                return "peer refused our certificate (not signed by its cluster's CA)";
        case SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL:
                return "peer refused our protocol (ALPN)";
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
                return "peer does not speak TLS 1.3";
        case SSL_R_WRONG_VERSION_NUMBER:
        case SSL_R_PACKET_LENGTH_TOO_LONG:
                return "peer does not speak TLS";
        default:
                return NULL;
        }
}

char *tls_handshake_error(const SSL *ssl, char *buf, size_t size) {
        const char *reason = NULL, *fallback = NULL;
        unsigned long e;

        while ((e = ERR_get_error()) != 0) {
                const char *s = ERR_GET_LIB(e) == ERR_LIB_SSL &&
                                ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED ?
                                tls_verify_string(SSL_get_verify_result(ssl)) : tls_error_string(e);
                if (s && !reason)
                        reason = s;
                if (!fallback)
                        fallback = ERR_reason_error_string(e);
        }
        snprintf(buf, size, "%s", reason ?: fallback ?: "TLS handshake failed");
        return buf;
}
