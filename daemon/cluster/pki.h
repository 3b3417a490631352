/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The cluster's identities: a CA per cluster and a certificate per node, all
 * EC P-256, kept as PEM files in the cluster directory (STATE_DIR/cluster,
 * mode 0700; the functions here take that directory, not the state dir):
 *
 *     ca.key     the CA's key: only on the node that ran 'inferctl cluster init' (0600)
 *     ca.crt     the CA certificate, CN "inferd cluster CA <name>", 10 years
 *     node.key   this node's key (0600)
 *     node.crt   this node's certificate, CN = node id in 32 lowercase hex digits, 5 years
 *     tokens     join tokens this node issued (token.h, 0600)
 *
 * Every file is replaced atomically (temporary file, fsync, rename).
 *
 * Errors are negative errno values. Those that mean "refused" rather than
 * "broken" are distinct so the caller can tell the user (or a joining node,
 * in "join-err") what went wrong; pki_strerror() turns any of them into a
 * sentence:
 *
 *     -EBADMSG          join token text malformed (truncated, garbage)
 *     -EPROTONOSUPPORT  join token of another format version
 *     -ESRCH            join token unknown here (never issued here, or expired and pruned)
 *     -EKEYREVOKED      join token already used
 *     -EKEYEXPIRED      join token expired
 *     -EKEYREJECTED     join proof wrong (wrong secret, or a proof made on another TLS session)
 *     -EBADR            certificate request unreadable, not P-256, or its self-signature is bad
 *     -EBADE            certificate request for another node id than the joiner claims
 *     -ENOKEY           this node does not hold the CA key (tokens and signing need it)
 *     -EXDEV            the peer's CA is not the one the join token names (another cluster)
 *     -EPROTO           the peer presented no valid node certificate of that CA
 *     -ENOTUNIQ         the issued certificate is not for our node id and key
 *     -EEXIST           this node is already a member of a cluster
 *     -EUCLEAN          a file in the cluster directory is corrupt
 *     -ETOOMANYREFS     too many join tokens outstanding (token.h TOKENS_MAX)
 *
 * Anything else (-ENOMEM, -EIO for an OpenSSL failure, file errors) is fatal.
 */

#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PKI_NODE_ID_SIZE 16
#define PKI_FINGERPRINT_SIZE 32                         /* SHA-256 of the CA certificate's DER */
#define PKI_FINGERPRINT_HEX_MAX (PKI_FINGERPRINT_SIZE * 2 + 1)
#define PKI_CSR_MAX (16U * 1024U)                       /* "join" csr field, per the protocol */
#define PKI_CERT_MAX (16U * 1024U)

#define PKI_CA_KEY "ca.key"
#define PKI_CA_CRT "ca.crt"
#define PKI_NODE_KEY "node.key"
#define PKI_NODE_CRT "node.crt"

/* A sentence for any error the cluster identity functions return (pki, token, tls). */
const char *pki_strerror(int error);

typedef enum PkiStatus {
        PKI_STATUS_NONE,        /* not a member (a half-finished init or join counts as none) */
        PKI_STATUS_MEMBER,      /* ca.crt, node.crt and node.key */
        PKI_STATUS_CA,          /* a member that also holds ca.key: it can issue tokens */
} PkiStatus;

/* What the directory holds; a missing directory is PKI_STATUS_NONE. Returns a PkiStatus or -errno. */
int pki_status(const char *dir);

/*
 * 'cluster init': makes the directory (0700), a CA for cluster_name (UTF-8,
 * 1..255 bytes) and this node's key and certificate. -EEXIST when the
 * directory already holds a membership.
 */
int pki_init(const char *dir, const char *cluster_name, const uint8_t node_id[PKI_NODE_ID_SIZE]);

/* 'cluster leave': removes the directory and everything in it. Missing is fine. */
int pki_remove(const char *dir);

/* SHA-256 of the certificate's DER encoding. */
int pki_fingerprint(X509 *cert, uint8_t ret[PKI_FINGERPRINT_SIZE]);
/* The fingerprint of dir's ca.crt. */
int pki_ca_fingerprint(const char *dir, uint8_t ret[PKI_FINGERPRINT_SIZE]);
/* 64 lowercase hex digits; returns buf. */
char *pki_fingerprint_hex(const uint8_t fp[PKI_FINGERPRINT_SIZE], char buf[PKI_FINGERPRINT_HEX_MAX]);

/* Lowercase hex of n bytes into buf (2n+1 bytes); returns buf. */
char *pki_hex(const uint8_t *p, size_t n, char *buf);
/* Exactly 2n lowercase or uppercase hex digits in s[0..len) into ret[n]; -EINVAL otherwise. */
int pki_unhex(const char *s, size_t len, uint8_t *ret, size_t n);

/*
 * For this module's callers that use OpenSSL: logs OpenSSL's error queue at
 * debug level under what, clears it (so it cannot be mistaken later for the
 * reason a TLS connection failed) and returns error.
 */
int pki_openssl_error(int error, const char *what);

/* Whether leaf (with untrusted intermediates, may be NULL) chains to ca and nothing else: 0 or -EPROTO. */
int pki_verify_cert(X509 *ca, X509 *leaf, STACK_OF(X509) *untrusted);

/* The CA certificate's DER, for "join-ok". The caller frees *ret with free(). */
int pki_ca_der(const char *dir, uint8_t **ret, size_t *ret_size);

/* PEM files of the directory, for tls.c. The caller owns what it gets. */
int pki_load_cert(const char *dir, const char *name, X509 **ret);
int pki_load_key(const char *dir, const char *name, EVP_PKEY **ret);

/* The node id in a certificate's CN (exactly one CN, 32 lowercase hex digits); -EPROTO otherwise. */
int pki_cert_node_id(X509 *cert, uint8_t ret[PKI_NODE_ID_SIZE]);

/*
 * The server's half of a join, after token_redeem() accepted the token:
 * checks the request (DER, at most PKI_CSR_MAX, one P-256 key, valid
 * self-signature, CN = node_id, the id the joiner claims) and signs it with
 * the CA. Returns the certificate's DER in *ret (free() it). -ENOKEY without
 * ca.key, -EBADR or -EBADE for a request that is refused.
 */
int pki_sign_csr(const char *dir, const void *csr, size_t csr_size, const uint8_t node_id[PKI_NODE_ID_SIZE],
                 uint8_t **ret, size_t *ret_size);

/*
 * The joiner's half. pki_join_new() makes a key and a certificate request for
 * node_id, both kept in memory until pki_join_finish() checks what the
 * server sent back ("join-ok": the CA's DER must have the token's
 * fingerprint, the certificate must be signed by it, for node_id and our
 * key) and stores ca.crt, node.key and node.crt in dir (made 0700 if
 * missing). Nothing is written before that, so a failed join leaves nothing
 * behind.
 */
typedef struct PkiJoin PkiJoin;

int pki_join_new(const uint8_t node_id[PKI_NODE_ID_SIZE], PkiJoin **ret);
PkiJoin *pki_join_free(PkiJoin *j);
static inline void pki_join_freep(PkiJoin **j) {
        if (*j)
                pki_join_free(*j);
}
/* The request's DER, owned by j: the "join" frame's csr field, and what the proof covers. */
const uint8_t *pki_join_csr(const PkiJoin *j, size_t *ret_size);
int pki_join_finish(PkiJoin *j, const char *dir, const uint8_t ca_fingerprint[PKI_FINGERPRINT_SIZE],
                    const void *cert, size_t cert_size, const void *ca, size_t ca_size);
