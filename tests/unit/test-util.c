/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "address.h"
#include "fileio.h"
#include "format.h"
#include "log.h"
#include "macro.h"
#include "nodeid.h"

static void test_format_bytes(void **state) {
        char b[FORMAT_BYTES_MAX];
        assert_string_equal(format_bytes(b, sizeof b, 0), "0B");
        assert_string_equal(format_bytes(b, sizeof b, 1023), "1023B");
        assert_string_equal(format_bytes(b, sizeof b, 1024), "1.0K");
        assert_string_equal(format_bytes(b, sizeof b, 1536ULL << 20), "1.5G");
        assert_string_equal(format_bytes(b, sizeof b, 80ULL << 30), "80.0G");
}

static void test_format_timespan(void **state) {
        char b[FORMAT_TIMESPAN_MAX];
        assert_string_equal(format_timespan(b, sizeof b, 500), "500us");
        assert_string_equal(format_timespan(b, sizeof b, 340000), "340ms");
        assert_string_equal(format_timespan(b, sizeof b, 61000000), "1min 1s");
        assert_string_equal(format_timespan(b, sizeof b, 90061000000ULL), "1d 1h 1min 1s");
}

static void test_parse_timespan(void **state) {
        uint64_t u;
        assert_int_equal(parse_timespan("5", &u), 0);
        assert_int_equal(u, 5000000);
        assert_int_equal(parse_timespan("300ms", &u), 0);
        assert_int_equal(u, 300000);
        assert_int_equal(parse_timespan("1min 30s", &u), 0);
        assert_int_equal(u, 90000000);
        assert_int_equal(parse_timespan("2h", &u), 0);
        assert_int_equal(u, 7200000000ULL);
        assert_int_equal(parse_timespan("", &u), -EINVAL);
        assert_int_equal(parse_timespan("5 parsecs", &u), -EINVAL);
        assert_int_equal(parse_timespan("-1s", &u), -EINVAL);
        assert_int_equal(parse_timespan("99999999999999999999d", &u), -ERANGE);
}

static void test_parse_size(void **state) {
        uint64_t u;
        assert_int_equal(parse_size("64M", &u), 0);
        assert_int_equal(u, 64ULL << 20);
        assert_int_equal(parse_size("2GiB", &u), 0);
        assert_int_equal(u, 2ULL << 30);
        assert_int_equal(parse_size("4096", &u), 0);
        assert_int_equal(u, 4096);
        assert_int_equal(parse_size("12 apples", &u), -EINVAL);
}

static void test_log_levels(void **state) {
        assert_int_equal(log_level_from_string("debug"), LOG_DEBUG);
        assert_int_equal(log_level_from_string("err"), LOG_ERR);
        assert_int_equal(log_level_from_string("error"), LOG_ERR);
        assert_int_equal(log_level_from_string("loud"), -EINVAL);
        assert_string_equal(log_level_to_string(LOG_WARNING), "warning");
        assert_int_equal(log_error_errno(ENOENT, "expected test message: %m"), -ENOENT);
        assert_int_equal(log_error_errno(-EIO, "expected test message"), -EIO);
}

static void test_files_and_node_id(void **state) {
        char dir[] = "/tmp/inferd-unit-XXXXXX";
        char path[256], *data = NULL;
        sd_id128_t a, b;
        size_t n;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/x/y/z", dir);
        assert_int_equal(mkdir_p(path, 0755), 0);
        assert_int_equal(mkdir_p(path, 0755), 0);
        snprintf(path, sizeof path, "%s/x/y/z/file", dir);
        assert_int_equal(write_file_atomic(path, "hello", 5, 0600), 0);
        assert_int_equal(read_full_file(path, 100, &data, &n), 0);
        assert_int_equal(n, 5);
        assert_string_equal(data, "hello");
        free(data);
        assert_int_equal(read_full_file(path, 3, &data, &n), -EFBIG);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);

        assert_int_equal(node_id_load_or_create(dir, &a), 0);
        assert_int_equal(node_id_load_or_create(dir, &b), 0);
        assert_true(sd_id128_equal(a, b));
        snprintf(path, sizeof path, "%s/node-id", dir);
        assert_int_equal(write_file_atomic(path, "0123", 4, 0644), 0);
        assert_int_equal(node_id_load_or_create(dir, &b), -EBADMSG);
        assert_int_equal(write_file_atomic(path, "00000000000000000000000000000000\n", 33, 0644), 0);
        assert_int_equal(node_id_load_or_create(dir, &b), -EBADMSG);

        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

static void address_ok(const char *s, uint16_t def, const char *host, uint16_t port) {
        char h[256];
        uint16_t p = 0;
        const char *why = NULL;
        if (address_parse(s, def, h, sizeof h, &p, &why) < 0)
                fail_msg("'%s' was refused: %s", s, why);
        assert_string_equal(h, host);
        assert_int_equal(p, port);
}

static void address_bad(const char *s, uint16_t def, const char *reason) {
        char h[256] = "untouched";
        uint16_t p = 4242;
        const char *why = NULL;
        if (address_parse(s, def, h, sizeof h, &p, &why) != -EINVAL)
                fail_msg("'%s' was not refused with -EINVAL", s ? s : "(null)");
        /* Every refusal says why, as a phrase for "invalid address 'S': ". */
        assert_non_null(why);
        if (reason)
                assert_string_equal(why, reason);
        /* Output parameters are left alone on failure. */
        assert_string_equal(h, "untouched");
        assert_int_equal(p, 4242);
}

static void test_address_parse(void **state) {
        char small[4];
        uint16_t p;

        address_ok("1.2.3.4:7420", 0, "1.2.3.4", 7420);
        address_ok("[::1]:7420", 0, "::1", 7420);
        address_ok(":7420", 0, "", 7420);
        address_ok("host.example:1", 0, "host.example", 1);
        address_ok("node-2:65535", 0, "node-2", 65535);
        address_ok("[fe80::1%eth0]:7420", 0, "fe80::1%eth0", 7420);

        address_bad(NULL, 0, "empty");
        address_bad("", 0, NULL);
        address_bad("host", 0, NULL);
        address_bad("host:", 0, NULL);
        address_bad("host:0", 0, NULL);
        address_bad("host:65536", 0, NULL);
        address_bad("host:99999999999999999999", 0, NULL);
        address_bad("host:-1", 0, NULL);
        address_bad("host:+1", 0, NULL);
        address_bad("host:1x", 0, NULL);
        address_bad("host: 1", 0, NULL);
        address_bad("[::1]7420", 0, NULL);
        address_bad("[::1]", 0, NULL);
        address_bad("[::1:7420", 0, NULL);
        address_bad("[]:7420", 0, NULL);
        address_bad("a:b:c", 0, NULL);
        address_bad("::1:7420", 0, NULL);
        address_bad("ho st:1", 0, NULL);
        address_bad("host/x:1", 0, NULL);

        /* A host that does not fit the caller's buffer is refused, not cut. */
        assert_int_equal(address_parse("abc:1", 0, small, sizeof small, &p, NULL), 0);
        assert_string_equal(small, "abc");
        assert_int_equal(address_parse("abcd:1", 0, small, sizeof small, &p, NULL), -EINVAL);

        /* The reasons inferctl prints. */
        address_bad("host", 0, "expected HOST:PORT or [IPV6]:PORT");
        address_bad("host:0", 0, "the port must be a number from 1 to 65535");
        address_bad("[::1", 0, "no ']' after the IPv6 address");
        address_bad("[::1]x", 0, "expected ':PORT' after ']'");
        address_bad("[host]:1", 0, "expected an IPv6 address in the brackets, like [fd00::1]:7420");
        address_bad("ho st:1", 0, "a host name has only letters, digits, '-' and '.'");

        /* With a default port (join addresses): bare hosts and bare IPv6 addresses too. */
        address_ok("node-2", 7420, "node-2", 7420);
        address_ok("node-2:99", 7420, "node-2", 99);
        address_ok("10.0.0.1", 7420, "10.0.0.1", 7420);
        address_ok("[fd00::1]", 7420, "fd00::1", 7420);
        address_ok("[fd00::1]:99", 7420, "fd00::1", 99);
        address_ok("fd00::1", 7420, "fd00::1", 7420);
        address_ok("fe80::1%eth0", 7420, "fe80::1%eth0", 7420);
        address_bad("", 7420, "empty");
        address_bad(":", 7420, "the port must be a number from 1 to 65535");
        address_bad("host:", 7420, "the port must be a number from 1 to 65535");
        address_bad("fd00::1/64", 7420, "an IPv6 address has only hex digits, ':' and a '%' zone");
        address_bad("::1:7420", 0, "an IPv6 address with a port goes in brackets, like [fd00::1]:7420");
}

static void test_address_format(void **state) {
        char b[32];

        assert_int_equal(address_format("node-2", 7420, b, sizeof b), 0);
        assert_string_equal(b, "node-2:7420");
        assert_int_equal(address_format("fd00::1", 1, b, sizeof b), 0);
        assert_string_equal(b, "[fd00::1]:1");
        assert_int_equal(address_format("node-2", 7420, b, 11), -ENOBUFS);
        assert_int_equal(address_format("node-2", 7420, b, 12), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_format_bytes),
                cmocka_unit_test(test_address_parse),
                cmocka_unit_test(test_address_format),
                cmocka_unit_test(test_format_timespan),
                cmocka_unit_test(test_parse_timespan),
                cmocka_unit_test(test_parse_size),
                cmocka_unit_test(test_log_levels),
                cmocka_unit_test(test_files_and_node_id),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
