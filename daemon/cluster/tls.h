/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * TLS between nodes: TLS 1.3 only, trusting the cluster's CA (dir/ca.crt)
 * and nothing else, never the system's store.
 *
 * ALPN picks what a connection is:
 *   "inferd/1"       the mesh: both sides present a node certificate signed
 *                    by the cluster CA, or the handshake fails.
 *   "inferd-join/1"  a node joining: the server presents its node
 *                    certificate and the CA's, the client none; the server
 *                    must serve only the join exchange on it
 *                    (tls_connection_is_join()).
 * The server decides per connection, in a client-hello callback, whether to
 * ask for a client certificate; a client that offers neither protocol (or
 * no ALPN at all) is refused with a no_application_protocol alert.
 *
 * In TLS 1.3 the client's handshake completes before the server has checked
 * the client's certificate: a client learns that it was refused from its
 * first read, as an alert. Nothing here logs; the tls_*_string() helpers say
 * why a handshake failed, for the caller's one log line.
 */

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pki.h"
#include "token.h"

#define TLS_ALPN_MESH "inferd/1"
#define TLS_ALPN_JOIN "inferd-join/1"
#define TLS_EXPORTER_LABEL "EXPORTER-inferd-join"
#define TLS_ERROR_MAX 256

/*
 * Mesh contexts from dir (ca.crt, node.crt, node.key). The server context
 * accepts both mesh and join connections; the client one offers "inferd/1"
 * (SSL_set_alpn_protos() on one SSL may say otherwise) and requires the
 * server's certificate to be signed by the CA. Tickets and the session cache
 * are off: connections are long-lived and every handshake is verified in
 * full. The caller owns *ret (SSL_CTX_free()).
 */
int tls_server_ctx_new(const char *dir, SSL_CTX **ret);
int tls_client_ctx_new(const char *dir, SSL_CTX **ret);

/*
 * The joiner's context: offers "inferd-join/1", sends no certificate and
 * does not verify the server during the handshake (it has no CA yet): call
 * tls_join_verify_server() once the handshake is done, before sending
 * anything.
 */
int tls_join_client_ctx_new(SSL_CTX **ret);

/* Whether the handshake settled on "inferd-join/1". */
bool tls_connection_is_join(const SSL *ssl);

/* The node id of a mesh peer, from its verified certificate's CN. -EPROTO if not a verified mesh connection. */
int tls_peer_node_id(const SSL *ssl, uint8_t ret[PKI_NODE_ID_SIZE]);

/*
 * Joiner: checks that the server's chain holds a certificate whose SHA-256
 * is ca_fingerprint and that the server's certificate is signed by it.
 * -EXDEV when no certificate has the fingerprint (another cluster), -EPROTO
 * when the server's certificate does not chain to it. On success *ret_ca (if
 * not NULL) is the CA, owned by the caller (X509_free()).
 */
int tls_join_verify_server(SSL *ssl, const uint8_t ca_fingerprint[PKI_FINGERPRINT_SIZE], X509 **ret_ca);

/* Both sides: the keying material the join proof covers (token.h). */
int tls_join_exporter(SSL *ssl, uint8_t ret[TOKEN_EXPORTER_SIZE]);

/*
 * Why a handshake failed, in words ("certificate not signed by this
 * cluster's CA", "peer sent no certificate"), or NULL when the value is none
 * of those this knows. tls_error_string() takes an OpenSSL error code (from
 * ERR_get_error() or bufferevent_get_openssl_error()); tls_verify_string()
 * the result of SSL_get_verify_result(), meaningful only when the error was
 * SSL_R_CERTIFICATE_VERIFY_FAILED (a join client never verifies, so its
 * result is never X509_V_OK).
 */
const char *tls_error_string(unsigned long error);
const char *tls_verify_string(long verify_result);

/*
 * The same in one call for a handshake run directly on ssl: drains this
 * thread's OpenSSL error queue and writes the best reason to buf; returns buf.
 */
char *tls_handshake_error(const SSL *ssl, char *buf, size_t size);
