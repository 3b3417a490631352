/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "config.h"
#include "log.h"

static void load_ok(const char *text, Config **ret) {
        char *why = NULL;
        int r = config_load_string(text, "test.conf", ret, &why);
        if (r < 0)
                fail_msg("unexpected error %d: %s", r, why ? why : "(none)");
        free(why);
}

static void load_fails(const char *text, const char *expect) {
        Config *c = NULL;
        char *why = NULL;
        assert_int_equal(config_load_string(text, "test.conf", &c, &why), -EINVAL);
        assert_null(c);
        assert_non_null(why);
        if (!strstr(why, expect))
                fail_msg("error '%s' does not contain '%s'", why, expect);
        free(why);
}

static void test_defaults(void **state) {
        Config *c = NULL;
        load_ok("", &c);
        assert_int_equal(c->log_level, LOG_INFO);
        assert_non_null(c->node_name);
        assert_true(strlen(c->node_name) > 0);
        config_free(c);
}

static void test_values(void **state) {
        Config *c = NULL;
        load_ok("# comment\n; other comment\n[Daemon]\nNodeName=gpu-box.1\nLogLevel=debug\n", &c);
        assert_string_equal(c->node_name, "gpu-box.1");
        assert_int_equal(c->log_level, LOG_DEBUG);
        config_free(c);
        load_ok("[Daemon]\nLogLevel = warning\n", &c);
        assert_int_equal(c->log_level, LOG_WARNING);
        config_free(c);
}

static void test_errors_name_file_and_line(void **state) {
        load_fails("[Daemon]\nNodeName=a b\n", "test.conf:2: NodeName=a b is not a valid name");
        load_fails("[Daemon]\n\n\nLogLevel=chatty\n", "test.conf:4: LogLevel=chatty");
        load_fails("[Daemon]\nColour=blue\n", "test.conf:2: unknown key 'Colour' in section [Daemon]");
        load_fails("Key=1\n", "test.conf:1: unknown section []");
        load_fails("[Daemon\nNodeName=x\n", "test.conf:1:");
        load_fails("[Daemon]\nNodeName\n", "test.conf:2: syntax error");
        load_fails("[Daemon]\nNodeName=\n", "test.conf:2: NodeName= is not a valid name");
        /* 64 characters: one over the limit */
        load_fails("[Daemon]\nNodeName=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", ":2:");
}

static void test_devices(void **state) {
        Config *c = NULL;
        load_ok("", &c);
        assert_string_equal(c->devices, "auto");
        config_free(c);
        load_ok("[Engine]\nDevices=0 2\n", &c);
        assert_string_equal(c->devices, "0 2");
        config_free(c);
        load_ok("[Engine]\nDevices=none\n", &c);
        config_free(c);
        load_fails("[Engine]\nDevices=gpu0\n", "test.conf:2: Devices=gpu0 is not");
        load_fails("[Engine]\nDevices=auto 1\n", "test.conf:2:");
        load_fails("[Engine]\nDevices=\n", "test.conf:2:");
        load_fails("[Engine]\nFast=yes\n", "test.conf:2: unknown key 'Fast' in section [Engine]");
}

static void test_limits(void **state) {
        Config *c = NULL;
        load_ok("", &c);
        assert_int_equal(c->max_context, 8192);
        assert_int_equal(c->max_jobs, 64);
        assert_int_equal(c->max_tokens, 4096);
        assert_int_equal(c->max_prompt_bytes, 1 << 20);
        config_free(c);
        load_ok("[Engine]\nMaxContext=2048\n[Limits]\nMaxJobs=3\nMaxTokens=100\nMaxPromptBytes=64K\n", &c);
        assert_int_equal(c->max_context, 2048);
        assert_int_equal(c->max_jobs, 3);
        assert_int_equal(c->max_tokens, 100);
        assert_int_equal(c->max_prompt_bytes, 64 << 10);
        config_free(c);
        load_fails("[Limits]\nMaxJobs=0\n", "test.conf:2: MaxJobs=0 is not a valid number (expected 1 to 1000000)");
        load_fails("[Limits]\nMaxJobs=-1\n", "test.conf:2: MaxJobs=-1");
        load_fails("[Limits]\nMaxTokens=lots\n", "test.conf:2: MaxTokens=lots");
        load_fails("[Engine]\nMaxContext=8\n", "test.conf:2: MaxContext=8");
        load_fails("[Limits]\nMaxPromptBytes=2T\n", "test.conf:2: MaxPromptBytes=2T");
}

static void test_first_error_wins(void **state) {
        load_fails("[Daemon]\nLogLevel=x\nNodeName=y z\n", "test.conf:2: LogLevel=x");
}

static void test_missing_file(void **state) {
        Config *c = NULL;
        char *why = NULL;
        assert_int_equal(config_load("/nonexistent/inferd.conf", true, &c, &why), 0);
        assert_non_null(c);
        config_free(c);
        c = NULL;
        assert_int_equal(config_load("/nonexistent/inferd.conf", false, &c, &why), -ENOENT);
        assert_null(c);
        assert_non_null(strstr(why, "/nonexistent/inferd.conf"));
        free(why);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_values),
                cmocka_unit_test(test_errors_name_file_and_line),
                cmocka_unit_test(test_devices),
                cmocka_unit_test(test_limits),
                cmocka_unit_test(test_first_error_wins),
                cmocka_unit_test(test_missing_file),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
