/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The keys the HTTP API accepts. A key's text is
 *
 *     "sk-inferd-" base64url-without-padding(32 random bytes)
 *
 * and is shown once, when it is made (CreateApiKey, 'inferctl apikey
 * create'). inferd keeps only its SHA-256, in STATE_DIR/api-keys (0600,
 * rewritten atomically), one key a line:
 *
 *     ID(16 hex) SHA256-HEX(64) CREATED(CLOCK_REALTIME usec) NAME
 *
 * where NAME is the rest of the line. Lines starting with '#' are comments.
 * The file is the only truth: api_keys_check() stats it on every call and
 * reads it again when its inode, size or times changed, so a key revoked or
 * made by another path (D-Bus, an editor) counts at once, without a reload.
 * A file that cannot be read or parsed accepts no key at all (and says why
 * once, in the log, and to create/revoke/list callers).
 *
 * Everything runs on the event loop's thread.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define API_KEY_PREFIX "sk-inferd-"
#define API_KEY_SECRET_SIZE 32
#define API_KEY_TEXT_MAX (sizeof API_KEY_PREFIX + 43)   /* 43 base64url characters, and the NUL */
#define API_KEY_ID_SIZE 8
#define API_KEY_ID_MAX (2 * API_KEY_ID_SIZE + 1)
#define API_KEY_NAME_MAX 64                             /* bytes of printable ASCII */
#define API_KEYS_MAX 1024

typedef struct ApiKeys ApiKeys;

typedef struct ApiKeyInfo {
        char id[API_KEY_ID_MAX];
        char name[API_KEY_NAME_MAX + 1];
        uint64_t created_usec;                          /* CLOCK_REALTIME */
} ApiKeyInfo;

/* Remembers where the file is; it is first read on first use. -ENOMEM only. */
int api_keys_new(const char *state_dir, ApiKeys **ret);
ApiKeys *api_keys_free(ApiKeys *k);
static inline void api_keys_freep(ApiKeys **k) {
        if (*k)
                api_keys_free(*k);
}

/*
 * 1 when the Authorization header value ("Bearer sk-inferd-...") names a key
 * that exists now, 0 otherwise (NULL, another scheme, a malformed or unknown
 * key, an unreadable file). The scheme is case-insensitive and may be followed
 * by spaces or tabs, as RFC 9110 allows. The presented key's hash is compared
 * with every stored one in constant time. Reloads the file when it changed.
 */
int api_keys_check(ApiKeys *k, const char *authorization_header);

/* A name is 1 to API_KEY_NAME_MAX printable ASCII characters, not starting or ending with a space. */
bool api_keys_name_valid(const char *name);
/* 16 hex digits. */
bool api_keys_id_valid(const char *id);

/*
 * A new key named name: writes the file, then returns its id and text (wipe
 * ret_key after use). On failure *ret_error, if given, says why in a
 * sentence (free() it): -EINVAL an invalid name, -ETOOMANYREFS already
 * API_KEYS_MAX keys, -EUCLEAN the file is malformed (which line, and how), or
 * another -errno from reading or writing it.
 */
int api_keys_create(ApiKeys *k, const char *name, char ret_id[API_KEY_ID_MAX], char ret_key[API_KEY_TEXT_MAX],
                    char **ret_error);

/* Removes the key with id from the file; -ENOENT when there is none. Errors as for api_keys_create(). */
int api_keys_revoke(ApiKeys *k, const char *id, char **ret_error);

/*
 * The keys as the file has them now, in its order (oldest first), in
 * *ret (ret_n entries); valid until the next call on k. Errors as for
 * api_keys_create().
 */
int api_keys_list(ApiKeys *k, const ApiKeyInfo **ret, size_t *ret_n, char **ret_error);
