/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdarg.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>

#include "api-keys.h"
#include "fileio.h"
#include "log.h"
#include "macro.h"
#include "pki.h"
#include "time-util.h"

#define API_KEYS_FILE "api-keys"
#define API_KEYS_FILE_MAX (1024U * 1024U)
#define API_KEYS_HEADER "# inferd API keys: id sha256(key) created (CLOCK_REALTIME usec) name; see 'inferctl apikey'\n"
#define HASH_SIZE 32
#define HASH_HEX_LEN (2 * HASH_SIZE)
#define LINE_MAX_LEN (2 * API_KEY_ID_SIZE + 1 + HASH_HEX_LEN + 1 + 20 + 1 + API_KEY_NAME_MAX + 1)

_Static_assert(API_KEY_TEXT_MAX == sizeof API_KEY_PREFIX + (API_KEY_SECRET_SIZE * 4 + 2) / 3,
               "API_KEY_TEXT_MAX: the prefix, the base64url of the secret without padding, the NUL");

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* What the file was when it was last read: any difference means it must be read again. */
typedef struct FileId {
        bool exists;
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtim, ctim;
} FileId;

struct ApiKeys {
        char *path;
        ApiKeyInfo *info;
        uint8_t (*hash)[HASH_SIZE];     /* SHA-256 of each key's text, parallel to info */
        size_t n;

        bool loaded;                    /* info/hash/error describe the file as file says */
        FileId file;
        int error_code;                 /* 0, or why the file accepts no key (with error) */
        char *error;
};

static void file_id_from_stat(FileId *f, const struct stat *st) {
        *f = (FileId) {
                .exists = true,
                .dev = st->st_dev,
                .ino = st->st_ino,
                .size = st->st_size,
                .mtim = st->st_mtim,
                .ctim = st->st_ctim,
        };
}

static bool file_id_equal(const FileId *a, const FileId *b) {
        if (a->exists != b->exists)
                return false;
        return !a->exists ||
               (a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtim.tv_sec == b->mtim.tv_sec &&
                a->mtim.tv_nsec == b->mtim.tv_nsec && a->ctim.tv_sec == b->ctim.tv_sec &&
                a->ctim.tv_nsec == b->ctim.tv_nsec);
}

static int file_id_get(const char *path, FileId *ret) {
        struct stat st;

        if (stat(path, &st) < 0) {
                if (errno != ENOENT)
                        return negative_errno();
                *ret = (FileId) {};
                return 0;
        }
        file_id_from_stat(ret, &st);
        return 0;
}

static void keys_clear(ApiKeys *k) {
        if (k->hash)
                OPENSSL_cleanse(k->hash, k->n * sizeof *k->hash);
        free(k->hash);
        free(k->info);
        k->hash = NULL;
        k->info = NULL;
        k->n = 0;
}

int api_keys_new(const char *state_dir, ApiKeys **ret) {
        _cleanup_(api_keys_freep) ApiKeys *k = NULL;

        k = calloc(1, sizeof *k);
        if (!k)
                return -ENOMEM;
        if (asprintf(&k->path, "%s/" API_KEYS_FILE, state_dir) < 0) {
                k->path = NULL;
                return -ENOMEM;
        }
        *ret = TAKE_PTR(k);
        return 0;
}

ApiKeys *api_keys_free(ApiKeys *k) {
        if (!k)
                return NULL;
        keys_clear(k);
        free(k->error);
        free(k->path);
        free(k);
        return NULL;
}

bool api_keys_name_valid(const char *name) {
        size_t n = strlen(name);

        if (n == 0 || n > API_KEY_NAME_MAX || name[0] == ' ' || name[n - 1] == ' ')
                return false;
        for (size_t i = 0; i < n; i++)
                if (name[i] < 0x20 || name[i] > 0x7e)
                        return false;
        return true;
}

bool api_keys_id_valid(const char *id) {
        return strlen(id) == 2 * API_KEY_ID_SIZE && strspn(id, "0123456789abcdefABCDEF") == 2 * API_KEY_ID_SIZE;
}

/* A fast hash is right here: the keys are 256 random bits, not passwords, so there is nothing to stretch. */
static int hash_key(const char *key, size_t len, uint8_t ret[HASH_SIZE]) {
        unsigned n = 0;

        if (EVP_Digest(key, len, ret, &n, EVP_sha256(), NULL) != 1 || n != HASH_SIZE)
                return -EIO;
        return 0;
}

/* Sets *ret_error (if given) to the sentence; returns error. */
static int fail(char **ret_error, int error, const char *fmt, ...) _printf_(3, 4);
static int fail(char **ret_error, int error, const char *fmt, ...) {
        va_list ap;

        if (!ret_error)
                return error;
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
        return error;
}

/* One line, "ID HASH CREATED NAME"; -EUCLEAN with the reason in *ret_why (a static string). */
static int parse_line(const char *line, ApiKeyInfo *info, uint8_t hash[HASH_SIZE], const char **ret_why) {
        uint8_t id[API_KEY_ID_SIZE];
        const char *p = line, *end;
        unsigned long long created;
        size_t n;

        n = strcspn(p, " ");
        if (pki_unhex(p, n, id, sizeof id) < 0) {
                *ret_why = "the ID is not 16 hex digits";
                return -EUCLEAN;
        }
        pki_hex(id, sizeof id, info->id);
        p += n;

        if (*p++ != ' ' || (n = strcspn(p, " ")) != HASH_HEX_LEN || pki_unhex(p, n, hash, HASH_SIZE) < 0) {
                *ret_why = "the key's SHA-256 is not 64 hex digits after the ID";
                return -EUCLEAN;
        }
        p += n;

        if (*p++ != ' ' || !(*p >= '0' && *p <= '9')) {
                *ret_why = "the creation time is not a number after the SHA-256";
                return -EUCLEAN;
        }
        errno = 0;
        created = strtoull(p, (char **) &end, 10);
        if (errno != 0 || (*end != ' ' && *end != 0)) {
                *ret_why = "the creation time is not a number after the SHA-256";
                return -EUCLEAN;
        }
        if (*end == 0) {
                *ret_why = "the name is missing after the creation time";
                return -EUCLEAN;
        }
        info->created_usec = created;

        p = end + 1;
        if (!api_keys_name_valid(p)) {
                *ret_why = "the name is not 1 to 64 printable ASCII characters after the creation time";
                return -EUCLEAN;
        }
        strcpy(info->name, p);
        return 0;
}

/* The lines of data (which it changes) into k; on failure k->error says which line and why. */
static int keys_parse(ApiKeys *k, char *data) {
        char *line, *next;
        unsigned nr = 0;

        /* Line by line, empty lines included, so the numbers in messages are right. */
        for (line = data; line; line = next) {
                const char *why = NULL;

                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                nr++;
                if (line[0] == '#' || line[0] == 0)
                        continue;
                if (k->n >= API_KEYS_MAX)
                        return fail(&k->error, -EUCLEAN, "%s:%u: more than %u keys.", k->path, nr, API_KEYS_MAX);

                ApiKeyInfo *info = reallocarray(k->info, k->n + 1, sizeof *k->info);
                if (!info)
                        return fail(&k->error, -ENOMEM, "Out of memory.");
                k->info = info;
                uint8_t (*hash)[HASH_SIZE] = reallocarray(k->hash, k->n + 1, sizeof *k->hash);
                if (!hash)
                        return fail(&k->error, -ENOMEM, "Out of memory.");
                k->hash = hash;

                if (parse_line(line, &k->info[k->n], k->hash[k->n], &why) < 0)
                        return fail(&k->error, -EUCLEAN, "%s:%u: %s; expected 'ID SHA256 CREATED NAME'. Fix or "
                                    "remove the line.", k->path, nr, why);
                for (size_t i = 0; i < k->n; i++)
                        if (streq(k->info[i].id, k->info[k->n].id))
                                return fail(&k->error, -EUCLEAN, "%s:%u: the ID %s is there twice.", k->path, nr,
                                            k->info[i].id);
                k->n++;
        }
        return 0;
}

/* Reads the file into k, failing closed: on any error k has no keys, and k->error says why. */
static int keys_load(ApiKeys *k) {
        _cleanup_free_ char *data = NULL;
        int r;

        keys_clear(k);
        free(k->error);
        k->error = NULL;
        k->error_code = 0;

        r = read_full_file(k->path, API_KEYS_FILE_MAX, &data, NULL);
        if (r == -ENOENT)
                return 0;
        if (r == -EFBIG)
                r = fail(&k->error, -EUCLEAN, "%s is larger than %u bytes, more than %u keys take.", k->path,
                         API_KEYS_FILE_MAX, API_KEYS_MAX);
        else if (r < 0)
                r = fail(&k->error, r, "Failed to read %s: %s.", k->path, strerror(-r));
        else
                r = keys_parse(k, data);
        if (r < 0) {
                keys_clear(k);
                k->error_code = r;
        }
        return r;
}

/* Reads the file again if it is not the one read last. 0, or why the file accepts no key (k->error). */
static int keys_refresh(ApiKeys *k) {
        _cleanup_free_ char *old_error = NULL;
        FileId now;
        int r;

        r = file_id_get(k->path, &now);
        if (r < 0) {
                keys_clear(k);
                k->loaded = false;      /* stat failing says nothing about the file: ask again next time */
                if (k->error_code == r)
                        return r;
                free(k->error);
                k->error = NULL;
                k->error_code = fail(&k->error, r, "Failed to look at %s: %s.", k->path, strerror(-r));
                log_error("%s Accepting no API key until this is fixed.", strna(k->error));
                return r;
        }
        if (k->loaded && file_id_equal(&now, &k->file))
                return k->error_code;

        old_error = k->error ? strdup(k->error) : NULL;
        r = keys_load(k);
        /* A read error may be passing; a file that does not parse is parsed again only once it changed. */
        k->loaded = r >= 0 || r == -EUCLEAN;
        k->file = now;
        if (r < 0 && !streq_ptr(old_error, k->error))
                log_error("%s Accepting no API key until this is fixed.", strna(k->error));
        else if (r >= 0 && old_error)
                log_notice("Read %zu API key(s) from %s; the problem with it is gone.", k->n, k->path);
        return r;
}

static int refresh_or_fail(ApiKeys *k, char **ret_error) {
        int r = keys_refresh(k);
        if (r < 0)
                return fail(ret_error, r, "%s", k->error ?: strerror(-r));
        return 0;
}

static int keys_write(ApiKeys *k) {
        _cleanup_free_ char *data = NULL;
        char hex[HASH_HEX_LEN + 1];
        size_t size = 0;
        int r;

        data = malloc(sizeof API_KEYS_HEADER + k->n * LINE_MAX_LEN);
        if (!data)
                return -ENOMEM;
        size += (size_t) sprintf(data, "%s", API_KEYS_HEADER);
        for (size_t i = 0; i < k->n; i++)
                size += (size_t) sprintf(data + size, "%s %s %" PRIu64 " %s\n", k->info[i].id,
                                         pki_hex(k->hash[i], HASH_SIZE, hex), k->info[i].created_usec,
                                         k->info[i].name);
        r = write_file_atomic(k->path, data, size, 0600);
        if (r < 0)
                return r;
        /* What we wrote is what we hold: no need to read it back. */
        if (file_id_get(k->path, &k->file) < 0)
                k->loaded = false;
        return 0;
}

static void base64url(const uint8_t *p, size_t n, char *o) {
        for (size_t i = 0; i < n; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16 | (i + 1 < n ? (uint32_t) p[i + 1] << 8 : 0) |
                             (i + 2 < n ? p[i + 2] : 0);
                *o++ = b64url[v >> 18 & 63];
                *o++ = b64url[v >> 12 & 63];
                if (i + 1 < n)
                        *o++ = b64url[v >> 6 & 63];
                if (i + 2 < n)
                        *o++ = b64url[v & 63];
        }
        *o = 0;
}

int api_keys_create(ApiKeys *k, const char *name, char ret_id[API_KEY_ID_MAX], char ret_key[API_KEY_TEXT_MAX],
                    char **ret_error) {
        uint8_t id[API_KEY_ID_SIZE], secret[API_KEY_SECRET_SIZE], hash[HASH_SIZE];
        char key[API_KEY_TEXT_MAX];
        ApiKeyInfo info = {};
        int r;

        if (!api_keys_name_valid(name))
                return fail(ret_error, -EINVAL, "Invalid API key name: expected 1 to %d printable ASCII "
                            "characters, not starting or ending with a space.", API_KEY_NAME_MAX);
        r = refresh_or_fail(k, ret_error);
        if (r < 0)
                return r;
        if (k->n >= API_KEYS_MAX)
                return fail(ret_error, -ETOOMANYREFS, "There are %u API keys already, the most there may be; "
                            "revoke one first.", API_KEYS_MAX);

        for (bool unique = false; !unique;) {
                if (RAND_bytes(id, sizeof id) != 1)
                        return fail(ret_error, -EIO, "Failed to get random bytes for the key's ID.");
                pki_hex(id, sizeof id, info.id);
                unique = true;
                for (size_t i = 0; i < k->n; i++)
                        if (streq(k->info[i].id, info.id))
                                unique = false;
        }
        if (RAND_bytes(secret, sizeof secret) != 1)
                return fail(ret_error, -EIO, "Failed to get random bytes for the key.");
        memcpy(key, API_KEY_PREFIX, sizeof API_KEY_PREFIX - 1);
        base64url(secret, sizeof secret, key + sizeof API_KEY_PREFIX - 1);
        OPENSSL_cleanse(secret, sizeof secret);
        r = hash_key(key, strlen(key), hash);
        if (r < 0) {
                OPENSSL_cleanse(key, sizeof key);
                return fail(ret_error, r, "Failed to hash the key.");
        }
        strcpy(info.name, name);
        info.created_usec = now_usec(CLOCK_REALTIME);

        ApiKeyInfo *ni = reallocarray(k->info, k->n + 1, sizeof *k->info);
        if (ni)
                k->info = ni;
        uint8_t (*nh)[HASH_SIZE] = ni ? reallocarray(k->hash, k->n + 1, sizeof *k->hash) : NULL;
        if (nh)
                k->hash = nh;
        if (!ni || !nh) {
                OPENSSL_cleanse(key, sizeof key);
                return fail(ret_error, -ENOMEM, "Out of memory.");
        }
        k->info[k->n] = info;
        memcpy(k->hash[k->n], hash, HASH_SIZE);
        k->n++;

        r = keys_write(k);
        if (r < 0) {
                k->n--;
                OPENSSL_cleanse(key, sizeof key);
                return fail(ret_error, r, "Failed to write %s: %s.", k->path, strerror(-r));
        }
        strcpy(ret_id, info.id);
        memcpy(ret_key, key, sizeof key);
        OPENSSL_cleanse(key, sizeof key);
        return 0;
}

int api_keys_revoke(ApiKeys *k, const char *id, char **ret_error) {
        ApiKeyInfo gone;
        uint8_t hash[HASH_SIZE];
        size_t i;
        int r;

        if (!api_keys_id_valid(id))
                return fail(ret_error, -EINVAL, "Invalid API key ID '%s': expected 16 hex digits, as 'inferctl "
                            "apikey list' shows.", id);
        r = refresh_or_fail(k, ret_error);
        if (r < 0)
                return r;
        for (i = 0; i < k->n; i++)
                if (strcasecmp(k->info[i].id, id) == 0)
                        break;
        if (i == k->n)
                return fail(ret_error, -ENOENT, "No API key has the ID %s.", id);

        gone = k->info[i];
        memcpy(hash, k->hash[i], HASH_SIZE);
        memmove(k->info + i, k->info + i + 1, (k->n - i - 1) * sizeof *k->info);
        memmove(k->hash + i, k->hash + i + 1, (k->n - i - 1) * sizeof *k->hash);
        k->n--;

        r = keys_write(k);
        if (r < 0) {
                /* Put it back where it was: the file still has it, and so must we. */
                memmove(k->info + i + 1, k->info + i, (k->n - i) * sizeof *k->info);
                memmove(k->hash + i + 1, k->hash + i, (k->n - i) * sizeof *k->hash);
                k->info[i] = gone;
                memcpy(k->hash[i], hash, HASH_SIZE);
                k->n++;
                return fail(ret_error, r, "Failed to write %s: %s.", k->path, strerror(-r));
        }
        return 0;
}

int api_keys_list(ApiKeys *k, const ApiKeyInfo **ret, size_t *ret_n, char **ret_error) {
        int r = refresh_or_fail(k, ret_error);
        if (r < 0)
                return r;
        *ret = k->info;
        *ret_n = k->n;
        return 0;
}

/* The key in an Authorization header value, and its length; NULL when it is not "Bearer KEY". */
static const char *bearer_key(const char *h, size_t *ret_len) {
        const char *p = h + strspn(h, " \t"), *key;
        size_t n;

        if (strncasecmp(p, "Bearer", 6) != 0)
                return NULL;
        p += 6;
        n = strspn(p, " \t");
        if (n == 0)
                return NULL;
        key = p + n;
        n = strcspn(key, " \t");
        if (key[n + strspn(key + n, " \t")] != 0)
                return NULL;
        if (n != API_KEY_TEXT_MAX - 1 || strncmp(key, API_KEY_PREFIX, sizeof API_KEY_PREFIX - 1) != 0)
                return NULL;
        for (size_t i = sizeof API_KEY_PREFIX - 1; i < n; i++)
                if (!strchr(b64url, key[i]))
                        return NULL;
        *ret_len = n;
        return key;
}

int api_keys_check(ApiKeys *k, const char *authorization_header) {
        uint8_t hash[HASH_SIZE];
        unsigned match = 0;
        const char *key;
        size_t len;

        if (!k || !authorization_header)
                return 0;
        key = bearer_key(authorization_header, &len);
        if (!key)
                return 0;
        if (keys_refresh(k) < 0 || k->n == 0)
                return 0;
        if (hash_key(key, len, hash) < 0)
                return 0;
        /* Every key, every byte: the time taken says how many keys there are, not which one came close. */
        for (size_t i = 0; i < k->n; i++)
                match |= CRYPTO_memcmp(hash, k->hash[i], HASH_SIZE) == 0;
        OPENSSL_cleanse(hash, sizeof hash);
        return match ? 1 : 0;
}
