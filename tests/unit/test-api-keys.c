/* SPDX-License-Identifier: MIT */
/*
 * The HTTP API's keys against a real file in a temporary state directory:
 * what api_keys_create() writes, what api_keys_check() accepts, and that a
 * change made by someone else (another ApiKeys on the same directory, as
 * the D-Bus side is to the HTTP side, or an editor) counts at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <cmocka.h>
#include <openssl/evp.h>

#include "api-keys.h"
#include "fileio.h"
#include "macro.h"

static char dir[64];
static char path[96];

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
        (void) remove(p);
        return 0;
}

/* Every test starts from an empty state directory. */
static int setup(void **state) {
        snprintf(dir, sizeof dir, "/tmp/test-api-keys-XXXXXX");
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/api-keys", dir);
        return 0;
}

static int teardown(void **state) {
        (void) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return 0;
}

static char *bearer(const char *key) {
        static char buf[256];
        snprintf(buf, sizeof buf, "Bearer %s", key);
        return buf;
}

static void sha256_hex(const char *s, char hex[65]) {
        unsigned char md[32];
        unsigned n = 0;
        assert_int_equal(EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL), 1);
        for (unsigned i = 0; i < 32; i++)
                sprintf(hex + 2 * i, "%02x", md[i]);
}

static void write_file(const char *text) {
        /* A new inode each time, as an editor that saves atomically makes: never mistaken for the old file. */
        assert_int_equal(write_file_atomic(path, text, strlen(text), 0600), 0);
}

static void test_create_check_revoke(void **state) {
        _cleanup_(api_keys_freep) ApiKeys *k = NULL;
        _cleanup_free_ char *why = NULL;
        char id[API_KEY_ID_MAX], key[API_KEY_TEXT_MAX], id2[API_KEY_ID_MAX], key2[API_KEY_TEXT_MAX];
        const ApiKeyInfo *list;
        size_t n;

        assert_int_equal(api_keys_new(dir, &k), 0);
        /* No file: no key, and an empty list. */
        assert_int_equal(api_keys_list(k, &list, &n, NULL), 0);
        assert_int_equal(n, 0);

        assert_int_equal(api_keys_create(k, "laptop", id, key, NULL), 0);
        assert_int_equal(strlen(id), 16);
        assert_int_equal(strspn(id, "0123456789abcdef"), 16);
        assert_int_equal(strlen(key), strlen(API_KEY_PREFIX) + 43);
        assert_non_null(startswith(key, API_KEY_PREFIX));
        assert_int_equal(strspn(key + strlen(API_KEY_PREFIX),
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 43);
        assert_int_equal(api_keys_check(k, bearer(key)), 1);

        assert_int_equal(api_keys_create(k, "CI runner #2", id2, key2, NULL), 0);
        assert_string_not_equal(id, id2);
        assert_string_not_equal(key, key2);
        assert_int_equal(api_keys_check(k, bearer(key)), 1);
        assert_int_equal(api_keys_check(k, bearer(key2)), 1);

        assert_int_equal(api_keys_list(k, &list, &n, NULL), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0].id, id);
        assert_string_equal(list[0].name, "laptop");
        assert_string_equal(list[1].name, "CI runner #2");
        assert_true(list[0].created_usec > 1600000000ULL * 1000000ULL);
        assert_true(list[1].created_usec >= list[0].created_usec);

        /* A key with one character changed is another key. */
        key[20] = key[20] == 'A' ? 'B' : 'A';
        assert_int_equal(api_keys_check(k, bearer(key)), 0);
        key[20] = key[20] == 'A' ? 'B' : 'A';

        /* Revoked: gone at once; the other stays. An ID in capitals is the same ID. */
        for (char *p = id; *p; p++)
                if (*p >= 'a' && *p <= 'f')
                        *p = (char) (*p - 'a' + 'A');
        assert_int_equal(api_keys_revoke(k, id, NULL), 0);
        assert_int_equal(api_keys_check(k, bearer(key)), 0);
        assert_int_equal(api_keys_check(k, bearer(key2)), 1);
        assert_int_equal(api_keys_revoke(k, id, &why), -ENOENT);
        assert_non_null(strstr(why, "No API key has the ID"));
        free(TAKE_PTR(why));
        assert_int_equal(api_keys_revoke(k, "nothex", &why), -EINVAL);
        assert_non_null(strstr(why, "16 hex digits"));
        assert_int_equal(api_keys_list(k, &list, &n, NULL), 0);
        assert_int_equal(n, 1);
        assert_string_equal(list[0].id, id2);

        /* What the file says survives the object: a new one reads it. */
        k = api_keys_free(k);
        assert_int_equal(api_keys_new(dir, &k), 0);
        assert_int_equal(api_keys_check(k, bearer(key2)), 1);
        assert_int_equal(api_keys_check(k, bearer(key)), 0);
}

static void test_file_mode_and_contents(void **state) {
        _cleanup_(api_keys_freep) ApiKeys *k = NULL;
        _cleanup_free_ char *data = NULL;
        char id[API_KEY_ID_MAX], key[API_KEY_TEXT_MAX], hex[65], line[256];
        struct stat st;

        assert_int_equal(api_keys_new(dir, &k), 0);
        assert_int_equal(api_keys_create(k, "my key", id, key, NULL), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);

        assert_int_equal(read_full_file(path, 1 << 20, &data, NULL), 0);
        /* Neither the key nor its random part is there; its SHA-256 is, on the ID's line. */
        assert_null(strstr(data, key));
        assert_null(strstr(data, key + strlen(API_KEY_PREFIX)));
        sha256_hex(key, hex);
        snprintf(line, sizeof line, "\n%s %s ", id, hex);
        assert_non_null(strstr(data, line));
        assert_non_null(strstr(data, " my key\n"));
        assert_int_equal(data[0], '#');

        /* No temporary file left behind. */
        DIR *d = opendir(dir);
        struct dirent *de;
        int entries = 0;
        assert_non_null(d);
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        entries++;
        closedir(d);
        assert_int_equal(entries, 1);
}

static void test_reload_after_external_change(void **state) {
        _cleanup_(api_keys_freep) ApiKeys *http = NULL, *bus = NULL;
        char id[API_KEY_ID_MAX], key[API_KEY_TEXT_MAX], hex[65], text[512];
        const char *made_up = "sk-inferd-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

        assert_int_equal(api_keys_new(dir, &http), 0);
        assert_int_equal(api_keys_new(dir, &bus), 0);
        /* The HTTP side has looked at the (missing) file before the key exists. */
        assert_int_equal(api_keys_check(http, bearer(made_up)), 0);

        assert_int_equal(api_keys_create(bus, "made over D-Bus", id, key, NULL), 0);
        assert_int_equal(api_keys_check(http, bearer(key)), 1);
        assert_int_equal(api_keys_revoke(bus, id, NULL), 0);
        assert_int_equal(api_keys_check(http, bearer(key)), 0);

        /* An editor adds a line for a key of its own. */
        sha256_hex(made_up, hex);
        snprintf(text, sizeof text, "# written by hand\n\n0123456789abcdef %s 1700000000000000 by hand\n", hex);
        write_file(text);
        assert_int_equal(api_keys_check(http, bearer(made_up)), 1);
        assert_int_equal(api_keys_check(bus, bearer(made_up)), 1);

        /* and takes it away again; then deletes the file. */
        write_file("# nothing\n");
        assert_int_equal(api_keys_check(http, bearer(made_up)), 0);
        write_file(text);
        assert_int_equal(api_keys_check(http, bearer(made_up)), 1);
        assert_int_equal(unlink(path), 0);
        assert_int_equal(api_keys_check(http, bearer(made_up)), 0);

        /* Revoking what an editor added works too, and keeps the rest of the file. */
        write_file(text);
        assert_int_equal(api_keys_create(bus, "second", id, key, NULL), 0);
        assert_int_equal(api_keys_revoke(bus, "0123456789ABCDEF", NULL), 0);
        assert_int_equal(api_keys_check(http, bearer(made_up)), 0);
        assert_int_equal(api_keys_check(http, bearer(key)), 1);
}

/* The file as given must be refused with "api-keys:LINE:" and reason in the message, accepting no key. */
static void check_malformed(const char *text, unsigned line, const char *reason) {
        _cleanup_(api_keys_freep) ApiKeys *k = NULL;
        _cleanup_free_ char *why = NULL, *why2 = NULL, *where = NULL, *before = NULL, *after = NULL;
        char id[API_KEY_ID_MAX], key[API_KEY_TEXT_MAX];
        const ApiKeyInfo *list;
        size_t n;

        write_file(text);
        assert_int_equal(api_keys_new(dir, &k), 0);
        assert_int_equal(api_keys_list(k, &list, &n, &why), -EUCLEAN);
        assert_non_null(why);
        assert_true(asprintf(&where, "api-keys:%u: ", line) > 0);
        if (!strstr(why, where) || !strstr(why, reason))
                fail_msg("for %s expected '%s' and '%s' in: %s", text, where, reason, why);

        /* Nothing is written over a file that does not parse: the keys in it are not lost. */
        assert_int_equal(read_full_file(path, 1 << 20, &before, NULL), 0);
        assert_int_equal(api_keys_create(k, "new", id, key, &why2), -EUCLEAN);
        assert_string_equal(why, why2);
        assert_int_equal(read_full_file(path, 1 << 20, &after, NULL), 0);
        assert_string_equal(before, after);
}

static void test_malformed_file(void **state) {
        _cleanup_(api_keys_freep) ApiKeys *k = NULL;
        const char *good_key = "sk-inferd-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
        char hex[65], good[256], text[1024];

        sha256_hex(good_key, hex);
        snprintf(good, sizeof good, "0123456789abcdef %s 1700000000000000 good\n", hex);

#define MALFORMED(line, reason, ...)                                    \
        do {                                                            \
                snprintf(text, sizeof text, __VA_ARGS__);               \
                check_malformed(text, line, reason);                    \
        } while (0)

        MALFORMED(2, "the ID is not 16 hex digits", "%s0123456789abcdeg %s 1 x\n", good, hex);
        MALFORMED(2, "the ID is not 16 hex digits", "%s0123456789abcde %s 1 x\n", good, hex);
        MALFORMED(3, "SHA-256 is not 64 hex digits", "# c\n%sfedcba9876543210 %.63s 1 x\n", good, hex);
        MALFORMED(1, "the ID is not 16 hex digits", "fedcba9876543210\t%s 1 x\n", hex);
        MALFORMED(1, "the creation time is not a number", "fedcba9876543210 %s -1 x\n", hex);
        MALFORMED(1, "the creation time is not a number", "fedcba9876543210 %s 99999999999999999999999 x\n", hex);
        MALFORMED(1, "the name is missing", "fedcba9876543210 %s 12\n", hex);
        MALFORMED(1, "the name is not 1 to 64", "fedcba9876543210 %s 12 \n", hex);
        MALFORMED(1, "the name is not 1 to 64", "fedcba9876543210 %s 12 %065d\n", hex, 0);
        MALFORMED(1, "the name is not 1 to 64", "fedcba9876543210 %s 12 bell\a\n", hex);
        MALFORMED(2, "the ID 0123456789abcdef is there twice", "%s%s", good, good);
        MALFORMED(1, "expected 'ID SHA256 CREATED NAME'", "garbage\n");

        /* While the file is malformed no key passes, not even one it lists; fixed, they do again. */
        write_file(good);
        assert_int_equal(api_keys_new(dir, &k), 0);
        assert_int_equal(api_keys_check(k, bearer(good_key)), 1);
        snprintf(text, sizeof text, "%sgarbage\n", good);
        write_file(text);
        assert_int_equal(api_keys_check(k, bearer(good_key)), 0);
        write_file(good);
        assert_int_equal(api_keys_check(k, bearer(good_key)), 1);
}

static void test_limits(void **state) {
        _cleanup_(api_keys_freep) ApiKeys *k = NULL;
        _cleanup_free_ char *why = NULL, *text = NULL;
        char id[API_KEY_ID_MAX], key[API_KEY_TEXT_MAX], hex[65];
        char name[API_KEY_NAME_MAX + 2];
        const ApiKeyInfo *list;
        size_t n, size = 0;
        FILE *f;

        assert_int_equal(api_keys_new(dir, &k), 0);

        /* Names: 1 to 64 printable ASCII characters, no space at either end. */
        memset(name, 'x', sizeof name);
        name[API_KEY_NAME_MAX] = 0;
        assert_int_equal(api_keys_create(k, name, id, key, NULL), 0);
        name[API_KEY_NAME_MAX] = 'x';
        name[API_KEY_NAME_MAX + 1] = 0;
        assert_int_equal(api_keys_create(k, name, id, key, &why), -EINVAL);
        assert_non_null(strstr(why, "1 to 64 printable ASCII characters"));
        assert_int_equal(api_keys_create(k, "", id, key, NULL), -EINVAL);
        assert_int_equal(api_keys_create(k, " lead", id, key, NULL), -EINVAL);
        assert_int_equal(api_keys_create(k, "trail ", id, key, NULL), -EINVAL);
        assert_int_equal(api_keys_create(k, "tab\there", id, key, NULL), -EINVAL);
        assert_int_equal(api_keys_create(k, "line\nbreak", id, key, NULL), -EINVAL);
        assert_int_equal(api_keys_create(k, "caf\xc3\xa9", id, key, NULL), -EINVAL);
        assert_int_equal(api_keys_create(k, "in ner", id, key, NULL), 0);
        assert_int_equal(api_keys_list(k, &list, &n, NULL), 0);
        assert_int_equal(n, 2);

        /* API_KEYS_MAX keys: a file of that many is read; one more key is refused with a reason. */
        f = open_memstream(&text, &size);
        assert_non_null(f);
        sha256_hex("not a key", hex);
        for (unsigned i = 0; i < API_KEYS_MAX; i++)
                fprintf(f, "%016x %s %u key %u\n", i, hex, i, i);
        assert_int_equal(fclose(f), 0);
        write_file(text);
        assert_int_equal(api_keys_list(k, &list, &n, NULL), 0);
        assert_int_equal(n, API_KEYS_MAX);
        free(TAKE_PTR(why));
        assert_int_equal(api_keys_create(k, "one too many", id, key, &why), -ETOOMANYREFS);
        assert_non_null(strstr(why, "revoke one first"));

        /* One line more than that is a malformed file. */
        f = fopen(path, "a");
        assert_non_null(f);
        fprintf(f, "%016x %s 1 extra\n", API_KEYS_MAX, hex);
        assert_int_equal(fclose(f), 0);
        free(TAKE_PTR(why));
        assert_int_equal(api_keys_list(k, &list, &n, &why), -EUCLEAN);
        assert_non_null(strstr(why, "more than 1024 keys"));
}

static void test_authorization_header(void **state) {
        _cleanup_(api_keys_freep) ApiKeys *k = NULL;
        char id[API_KEY_ID_MAX], key[API_KEY_TEXT_MAX], h[512];

        assert_int_equal(api_keys_new(dir, &k), 0);
        assert_int_equal(api_keys_create(k, "headers", id, key, NULL), 0);

        /* The scheme in any case, then spaces or tabs, then the key; spaces around it are tolerated. */
        const char *good[] = {
                "Bearer %s", "bearer %s", "BEARER %s", "BeArEr %s", "Bearer  %s", "Bearer\t%s", "Bearer %s ",
                " Bearer %s", "Bearer %s\t",
        };
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                snprintf(h, sizeof h, good[i], key);
                if (api_keys_check(k, h) != 1)
                        fail_msg("refused: '%s'", h);
        }

        const char *bad[] = {
                "%s", "Bearer", "Bearer ", "Bearer%s", "Basic %s", "Token %s", "Bearer %s extra",
                "Bearer %s,", "Bearer \"%s\"", "Bearer Bearer %s", "Bearer x%s", "Bearer %sx", "Bearer %.52s",
                "Bearers %s", "Bearer\n%s", "Bearer\r\n%s",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                snprintf(h, sizeof h, bad[i], key);
                if (api_keys_check(k, h) != 0)
                        fail_msg("accepted: '%s'", h);
        }

        assert_int_equal(api_keys_check(k, NULL), 0);
        assert_int_equal(api_keys_check(k, ""), 0);
        assert_int_equal(api_keys_check(NULL, bearer(key)), 0);
        assert_int_equal(api_keys_check(k, "Bearer sk-inferd-"), 0);
        assert_int_equal(api_keys_check(k, "\xff\xfe\x01garbage"), 0);
        assert_int_equal(api_keys_check(k, "Bearer sk-inferd-\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
                                           "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
                                           "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), 0);
        /* The right length and alphabet, but no such key; and a base64 '+' or '/' is not base64url. */
        assert_int_equal(api_keys_check(k, "Bearer sk-inferd-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 0);
        snprintf(h, sizeof h, "Bearer %s", key);
        h[strlen(h) - 1] = '+';
        assert_int_equal(api_keys_check(k, h), 0);
        /* A key of the right shape under another prefix. */
        snprintf(h, sizeof h, "Bearer sk-other-%s", key + strlen(API_KEY_PREFIX));
        assert_int_equal(api_keys_check(k, h), 0);
}

/* An unreadable state directory: no key passes and the reason is an error, not a crash. */
static void test_unreadable(void **state) {
        _cleanup_(api_keys_freep) ApiKeys *k = NULL;
        _cleanup_free_ char *why = NULL;
        char id[API_KEY_ID_MAX], key[API_KEY_TEXT_MAX];
        const ApiKeyInfo *list;
        size_t n;

        /* A directory where the file should be: it can be stat()ed but not read. */
        assert_int_equal(mkdir(path, 0700), 0);
        assert_int_equal(api_keys_new(dir, &k), 0);
        assert_int_equal(api_keys_check(k, "Bearer sk-inferd-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 0);
        assert_true(api_keys_list(k, &list, &n, &why) < 0);
        assert_non_null(strstr(why, "Failed to read"));
        free(TAKE_PTR(why));
        assert_true(api_keys_create(k, "x", id, key, &why) < 0);
        assert_non_null(why);
        assert_int_equal(rmdir(path), 0);
        assert_int_equal(api_keys_create(k, "x", id, key, NULL), 0);
        assert_int_equal(api_keys_check(k, bearer(key)), 1);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_create_check_revoke, setup, teardown),
                cmocka_unit_test_setup_teardown(test_file_mode_and_contents, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reload_after_external_change, setup, teardown),
                cmocka_unit_test_setup_teardown(test_malformed_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
                cmocka_unit_test_setup_teardown(test_authorization_header, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unreadable, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
