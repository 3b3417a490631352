/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <sys/file.h>

#include "fileio.h"
#include "log.h"
#include "macro.h"
#include "token.h"

#define TOKENS_FILE "tokens"
#define TOKENS_FILE_MAX (1024U * 1024U)
#define TOKEN_PAYLOAD_SIZE (PKI_FINGERPRINT_SIZE + TOKEN_ID_SIZE + TOKEN_SECRET_SIZE)
#define TOKEN_BODY_LEN (TOKEN_PAYLOAD_SIZE / 3 * 4)     /* 72 bytes: 96 characters, no padding needed */
#define PROOF_LABEL "inferd join v1"
#define TOKENS_HEADER "# inferd join tokens: id secret expiry (CLOCK_REALTIME usec); a used token's secret is '-'\n"
#define TOKEN_LINE_MAX (2 * TOKEN_ID_SIZE + 1 + 2 * TOKEN_SECRET_SIZE + 1 + 20 + 1)

_Static_assert(TOKEN_PAYLOAD_SIZE % 3 == 0, "the token body has no padding");
_Static_assert(sizeof TOKEN_PREFIX - 1 + TOKEN_BODY_LEN + 1 == TOKEN_TEXT_MAX, "TOKEN_TEXT_MAX");

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

typedef struct TokenEntry {
        uint8_t id[TOKEN_ID_SIZE];
        uint8_t secret[TOKEN_SECRET_SIZE];
        bool used;
        uint64_t expiry;
} TokenEntry;

typedef struct TokenList {
        TokenEntry *entries;
        size_t n;
} TokenList;

static void token_list_done(TokenList *l) {
        if (l->entries)
                OPENSSL_cleanse(l->entries, l->n * sizeof *l->entries);
        free(l->entries);
        *l = (TokenList) {};
}

static void cleanse_bufp(char **p) {
        if (*p) {
                OPENSSL_cleanse(*p, strlen(*p));
                free(*p);
        }
}

void token_clear(JoinToken *t) {
        OPENSSL_cleanse(t, sizeof *t);
}

char *token_format(const JoinToken *t, char buf[TOKEN_TEXT_MAX]) {
        uint8_t p[TOKEN_PAYLOAD_SIZE];
        char *o = stpcpy(buf, TOKEN_PREFIX);

        memcpy(p, t->ca_fingerprint, PKI_FINGERPRINT_SIZE);
        memcpy(p + PKI_FINGERPRINT_SIZE, t->id, TOKEN_ID_SIZE);
        memcpy(p + PKI_FINGERPRINT_SIZE + TOKEN_ID_SIZE, t->secret, TOKEN_SECRET_SIZE);
        for (size_t i = 0; i < sizeof p; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16 | (uint32_t) p[i + 1] << 8 | p[i + 2];
                *o++ = b64url[v >> 18 & 63];
                *o++ = b64url[v >> 12 & 63];
                *o++ = b64url[v >> 6 & 63];
                *o++ = b64url[v & 63];
        }
        *o = 0;
        OPENSSL_cleanse(p, sizeof p);
        return buf;
}

static int b64url_value(char c) {
        const char *p = c ? strchr(b64url, c) : NULL;
        return p ? (int) (p - b64url) : -1;
}

int token_parse(const char *text, JoinToken *ret) {
        uint8_t p[TOKEN_PAYLOAD_SIZE];
        const char *s, *e;

        s = text + strspn(text, " \t\r\n");
        e = s + strlen(s);
        while (e > s && strchr(" \t\r\n", e[-1]))
                e--;

        const char *v = startswith(s, "inferd-join-");
        if (!v)
                return -EBADMSG;
        /* "inferd-join-2.…" is a token, only not one this version reads. */
        size_t digits = strspn(v, "0123456789");
        if (digits > 0 && v[digits] == '.' && !startswith(v, "1."))
                return -EPROTONOSUPPORT;
        const char *body = startswith(s, TOKEN_PREFIX);
        if (!body || (size_t) (e - body) != TOKEN_BODY_LEN)
                return -EBADMSG;

        for (size_t i = 0, o = 0; i < TOKEN_BODY_LEN; i += 4, o += 3) {
                uint32_t x = 0;
                for (size_t k = 0; k < 4; k++) {
                        int d = b64url_value(body[i + k]);
                        if (d < 0) {
                                OPENSSL_cleanse(p, sizeof p);
                                return -EBADMSG;
                        }
                        x = x << 6 | (uint32_t) d;
                }
                p[o] = (uint8_t) (x >> 16);
                p[o + 1] = (uint8_t) (x >> 8);
                p[o + 2] = (uint8_t) x;
        }
        memcpy(ret->ca_fingerprint, p, PKI_FINGERPRINT_SIZE);
        memcpy(ret->id, p + PKI_FINGERPRINT_SIZE, TOKEN_ID_SIZE);
        memcpy(ret->secret, p + PKI_FINGERPRINT_SIZE + TOKEN_ID_SIZE, TOKEN_SECRET_SIZE);
        OPENSSL_cleanse(p, sizeof p);
        return 0;
}

int token_proof(const uint8_t secret[TOKEN_SECRET_SIZE], const uint8_t exporter[TOKEN_EXPORTER_SIZE],
                const void *csr, size_t csr_size, uint8_t ret[TOKEN_PROOF_SIZE]) {
        _cleanup_free_ uint8_t *msg = NULL;
        size_t n = sizeof PROOF_LABEL - 1 + TOKEN_EXPORTER_SIZE + csr_size, len = 0;

        msg = malloc(n);
        if (!msg)
                return -ENOMEM;
        memcpy(msg, PROOF_LABEL, sizeof PROOF_LABEL - 1);
        memcpy(msg + sizeof PROOF_LABEL - 1, exporter, TOKEN_EXPORTER_SIZE);
        if (csr_size > 0)
                memcpy(msg + sizeof PROOF_LABEL - 1 + TOKEN_EXPORTER_SIZE, csr, csr_size);
        if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, TOKEN_SECRET_SIZE, msg, n, ret,
                       TOKEN_PROOF_SIZE, &len) || len != TOKEN_PROOF_SIZE)
                return pki_openssl_error(-EIO, "EVP_Q_mac");
        return 0;
}

/* Issuing and redeeming are read-modify-write of one file: one at a time, across processes too. */
static int lock_dir(const char *dir, int *ret_fd) {
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        if (flock(fd, LOCK_EX) < 0)
                return negative_errno();
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static int parse_line(char *line, TokenEntry *ret) {
        char *id, *secret, *expiry, *end, *save = NULL;

        id = strtok_r(line, " ", &save);
        secret = strtok_r(NULL, " ", &save);
        expiry = strtok_r(NULL, " ", &save);
        if (!id || !secret || !expiry || strtok_r(NULL, " ", &save))
                return -EUCLEAN;
        if (pki_unhex(id, strlen(id), ret->id, TOKEN_ID_SIZE) < 0)
                return -EUCLEAN;
        ret->used = streq(secret, "-");
        if (!ret->used && pki_unhex(secret, strlen(secret), ret->secret, TOKEN_SECRET_SIZE) < 0)
                return -EUCLEAN;
        errno = 0;
        unsigned long long u = strtoull(expiry, &end, 10);
        if (errno != 0 || *end != 0 || end == expiry || expiry[0] == '-')
                return -EUCLEAN;
        ret->expiry = u;
        return 0;
}

static int read_tokens(const char *dir, TokenList *ret) {
        _cleanup_(cleanse_bufp) char *data = NULL;
        _cleanup_free_ char *path = NULL;
        TokenList l = {};
        char *line, *save = NULL;
        unsigned nr = 0;
        int r;

        if (asprintf(&path, "%s/" TOKENS_FILE, dir) < 0)
                return -ENOMEM;
        r = read_full_file(path, TOKENS_FILE_MAX, &data, NULL);
        if (r == -ENOENT) {
                *ret = l;
                return 0;
        }
        if (r < 0)
                return r;

        for (line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                nr++;
                if (line[0] == '#' || line[0] == 0)
                        continue;
                TokenEntry *e = reallocarray(l.entries, l.n + 1, sizeof *l.entries);
                if (!e) {
                        token_list_done(&l);
                        return -ENOMEM;
                }
                l.entries = e;
                r = parse_line(line, &l.entries[l.n]);
                if (r < 0) {
                        token_list_done(&l);
                        return log_debug_errno(r, "%s:%u: not 'ID SECRET EXPIRY'", path, nr);
                }
                l.n++;
        }
        *ret = l;
        return 0;
}

/* Writes what has not expired at now. */
static int write_tokens(const char *dir, const TokenList *l, uint64_t now) {
        _cleanup_(cleanse_bufp) char *data = NULL;
        _cleanup_free_ char *path = NULL;
        char hex[2 * TOKEN_SECRET_SIZE + 1];
        size_t size = 0;

        if (asprintf(&path, "%s/" TOKENS_FILE, dir) < 0)
                return -ENOMEM;
        data = malloc(sizeof TOKENS_HEADER + l->n * TOKEN_LINE_MAX);
        if (!data)
                return -ENOMEM;
        size += (size_t) sprintf(data, "%s", TOKENS_HEADER);
        for (size_t i = 0; i < l->n; i++) {
                const TokenEntry *e = &l->entries[i];
                if (e->expiry <= now)
                        continue;
                size += (size_t) sprintf(data + size, "%s ", pki_hex(e->id, TOKEN_ID_SIZE, hex));
                size += (size_t) sprintf(data + size, "%s %" PRIu64 "\n",
                                         e->used ? "-" : pki_hex(e->secret, TOKEN_SECRET_SIZE, hex), e->expiry);
        }
        OPENSSL_cleanse(hex, sizeof hex);
        return write_file_atomic(path, data, size, 0600);
}

static TokenEntry *find_token(const TokenList *l, const uint8_t id[TOKEN_ID_SIZE]) {
        for (size_t i = 0; i < l->n; i++)
                if (memcmp(l->entries[i].id, id, TOKEN_ID_SIZE) == 0)
                        return &l->entries[i];
        return NULL;
}

int token_issue(const char *dir, uint64_t now_usec, uint64_t ttl_usec, char buf[TOKEN_TEXT_MAX]) {
        _cleanup_(token_list_done) TokenList l = {};
        _cleanup_(token_clear) JoinToken t = {};
        _cleanup_close_ int lock = -EBADF;
        _cleanup_free_ char *key = NULL;
        size_t outstanding = 0;
        int r;

        if (ttl_usec == 0)
                return -EINVAL;
        if (ttl_usec > UINT64_MAX - now_usec)
                return -ERANGE;
        if (asprintf(&key, "%s/" PKI_CA_KEY, dir) < 0)
                return -ENOMEM;
        if (access(key, F_OK) < 0)
                return errno == ENOENT ? -ENOKEY : negative_errno();
        r = pki_ca_fingerprint(dir, t.ca_fingerprint);
        if (r < 0)
                return r;

        r = lock_dir(dir, &lock);
        if (r < 0)
                return r;
        r = read_tokens(dir, &l);
        if (r < 0)
                return r;
        for (size_t i = 0; i < l.n; i++)
                if (!l.entries[i].used && l.entries[i].expiry > now_usec)
                        outstanding++;
        if (outstanding >= TOKENS_MAX)
                return -ETOOMANYREFS;

        do {
                if (RAND_bytes(t.id, sizeof t.id) != 1)
                        return pki_openssl_error(-EIO, "RAND_bytes");
        } while (find_token(&l, t.id));
        if (RAND_bytes(t.secret, sizeof t.secret) != 1)
                return pki_openssl_error(-EIO, "RAND_bytes");

        TokenEntry *e = reallocarray(l.entries, l.n + 1, sizeof *l.entries);
        if (!e)
                return -ENOMEM;
        l.entries = e;
        e = &l.entries[l.n++];
        *e = (TokenEntry) { .expiry = now_usec + ttl_usec };
        memcpy(e->id, t.id, sizeof t.id);
        memcpy(e->secret, t.secret, sizeof t.secret);

        r = write_tokens(dir, &l, now_usec);
        if (r < 0)
                return r;
        token_format(&t, buf);
        return 0;
}

int token_redeem(const char *dir, const uint8_t id[TOKEN_ID_SIZE], const uint8_t proof[TOKEN_PROOF_SIZE],
                 const uint8_t exporter[TOKEN_EXPORTER_SIZE], const void *csr, size_t csr_size, uint64_t now_usec) {
        _cleanup_(token_list_done) TokenList l = {};
        _cleanup_close_ int lock = -EBADF;
        uint8_t secret[TOKEN_SECRET_SIZE], want[TOKEN_PROOF_SIZE];
        int r;

        r = lock_dir(dir, &lock);
        if (r < 0)
                return r;
        r = read_tokens(dir, &l);
        if (r < 0)
                return r;
        TokenEntry *e = find_token(&l, id);
        if (!e)
                return -ESRCH;
        if (e->expiry <= now_usec)
                return -EKEYEXPIRED;
        if (e->used)
                return -EKEYREVOKED;

        /* Consumed on disk before the proof is looked at: one try per token, right or wrong. */
        memcpy(secret, e->secret, sizeof secret);
        OPENSSL_cleanse(e->secret, sizeof e->secret);
        e->used = true;
        r = write_tokens(dir, &l, now_usec);
        if (r >= 0)
                r = token_proof(secret, exporter, csr, csr_size, want);
        OPENSSL_cleanse(secret, sizeof secret);
        if (r < 0)
                return r;
        if (CRYPTO_memcmp(want, proof, sizeof want) != 0)
                return -EKEYREJECTED;
        return 0;
}
