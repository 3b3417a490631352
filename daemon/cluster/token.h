/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Join tokens: what 'inferctl cluster token' prints and 'inferctl cluster
 * join' takes. The text is
 *
 *     "inferd-join-1." base64url-without-padding(ca_fingerprint[32] || id[8] || secret[32])
 *
 * The fingerprint lets the joiner check it talks to the right cluster before
 * it sends anything; the id names the token in the issuer's tokens file; the
 * secret never crosses the wire: the joiner proves it holds it with
 *
 *     HMAC-SHA256(secret, "inferd join v1" || tls_exporter[32] || csr_der)
 *
 * where the exporter (tls_join_exporter()) ties the proof to the one TLS
 * session, so it cannot be relayed, and csr_der to the one request.
 *
 * The issuer keeps STATE_DIR/cluster/tokens (0600), one token a line:
 *
 *     ID(16 hex) SECRET(64 hex, or "-" once used) EXPIRY(CLOCK_REALTIME usec)
 *
 * A token is consumed on its first use, whatever the outcome: the secret is
 * erased before the proof is even checked, so a wrong proof cannot be
 * retried (no guessing online) and a right one cannot be replayed. The line
 * stays, without its secret, until the token's expiry so that a replay is
 * told "already used" rather than "unknown". Expired lines are pruned on
 * every write. Errors are those of pki.h (pki_strerror()).
 */

#include <stddef.h>
#include <stdint.h>

#include "pki.h"

#define TOKEN_PREFIX "inferd-join-1."
#define TOKEN_ID_SIZE 8
#define TOKEN_SECRET_SIZE 32
#define TOKEN_PROOF_SIZE 32
#define TOKEN_EXPORTER_SIZE 32
#define TOKEN_TEXT_MAX (sizeof TOKEN_PREFIX + 96)       /* including the NUL */
#define TOKENS_MAX 1024                                 /* outstanding (unused, unexpired) per issuer */

typedef struct JoinToken {
        uint8_t ca_fingerprint[PKI_FINGERPRINT_SIZE];
        uint8_t id[TOKEN_ID_SIZE];
        uint8_t secret[TOKEN_SECRET_SIZE];
} JoinToken;

/* Wipes the secret (and the rest). */
void token_clear(JoinToken *t);

/*
 * Parses a token's text; whitespace around it (a pasted newline) is ignored.
 * -EBADMSG for anything malformed (truncated, garbage), -EPROTONOSUPPORT
 * for "inferd-join-N." of another version.
 */
int token_parse(const char *text, JoinToken *ret);
/* The text of t in buf; returns buf. */
char *token_format(const JoinToken *t, char buf[TOKEN_TEXT_MAX]);

/*
 * 'cluster token': issues a token valid for ttl_usec from now_usec
 * (CLOCK_REALTIME, so it means the same after a reboot), records it in
 * dir/tokens and writes its text to buf. -ENOKEY where dir has no ca.key,
 * -ETOOMANYREFS beyond TOKENS_MAX outstanding.
 */
int token_issue(const char *dir, uint64_t now_usec, uint64_t ttl_usec, char buf[TOKEN_TEXT_MAX]);

/* The joiner's proof for csr on the connection whose exporter is given. */
int token_proof(const uint8_t secret[TOKEN_SECRET_SIZE], const uint8_t exporter[TOKEN_EXPORTER_SIZE],
                const void *csr, size_t csr_size, uint8_t ret[TOKEN_PROOF_SIZE]);

/*
 * The issuer's check of a "join": consumes token id (see above), then
 * compares proof with the one expected for exporter and csr in constant
 * time. -ESRCH unknown, -EKEYREVOKED already used, -EKEYEXPIRED expired,
 * -EKEYREJECTED wrong proof. On 0 the caller goes on with pki_sign_csr().
 */
int token_redeem(const char *dir, const uint8_t id[TOKEN_ID_SIZE], const uint8_t proof[TOKEN_PROOF_SIZE],
                 const uint8_t exporter[TOKEN_EXPORTER_SIZE], const void *csr, size_t csr_size, uint64_t now_usec);
