/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "config.h"
#include "log.h"
#include "macro.h"

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

static void test_cluster_defaults(void **state) {
        Config *c = NULL;
        load_ok("", &c);
        assert_string_equal(c->listen, "0.0.0.0:7420");
        assert_null(c->advertise);
        assert_int_equal(c->probe_interval_usec, 1000000);
        assert_int_equal(c->probe_timeout_usec, 500000);
        assert_int_equal(c->indirect_probes, 4);
        assert_int_equal(c->suspect_timeout_usec, 4000000);
        assert_int_equal(c->remove_dead_after_usec, 600000000);
        config_free(c);
        /* An empty section changes nothing. */
        load_ok("[Cluster]\n", &c);
        assert_string_equal(c->listen, "0.0.0.0:7420");
        assert_int_equal(c->indirect_probes, 4);
        config_free(c);
}

static void test_cluster_values(void **state) {
        Config *c = NULL;
        load_ok("[Cluster]\n"
                "Listen=[::]:7500\n"
                "Advertise=node1.example:7500\n"
                "ProbeInterval=250ms\n"
                "ProbeTimeout=100ms\n"
                "IndirectProbes=0\n"
                "SuspectTimeout=2s\n"
                "RemoveDeadAfter=1h\n", &c);
        assert_string_equal(c->listen, "[::]:7500");
        assert_string_equal(c->advertise, "node1.example:7500");
        assert_int_equal(c->probe_interval_usec, 250000);
        assert_int_equal(c->probe_timeout_usec, 100000);
        assert_int_equal(c->indirect_probes, 0);
        assert_int_equal(c->suspect_timeout_usec, 2000000);
        assert_int_equal(c->remove_dead_after_usec, 3600000000ULL);
        config_free(c);

        /* ":PORT" listens on every address; the later of two values wins. */
        load_ok("[Cluster]\nListen=10.0.0.1:7420\nListen=:7421\nAdvertise=[fd00::1]:7421\nIndirectProbes=16\n", &c);
        assert_string_equal(c->listen, ":7421");
        assert_string_equal(c->advertise, "[fd00::1]:7421");
        assert_int_equal(c->indirect_probes, 16);
        config_free(c);

        /* The ends of each range are allowed. */
        load_ok("[Cluster]\nProbeInterval=10ms\nProbeTimeout=1ms\nSuspectTimeout=10ms\nRemoveDeadAfter=1s\n", &c);
        assert_int_equal(c->probe_interval_usec, 10000);
        assert_int_equal(c->probe_timeout_usec, 1000);
        assert_int_equal(c->suspect_timeout_usec, 10000);
        assert_int_equal(c->remove_dead_after_usec, 1000000);
        config_free(c);
        load_ok("[Cluster]\nProbeInterval=1min\nProbeTimeout=60s\nSuspectTimeout=1h\nRemoveDeadAfter=30d\n", &c);
        assert_int_equal(c->probe_interval_usec, 60000000);
        assert_int_equal(c->probe_timeout_usec, 60000000);
        assert_int_equal(c->suspect_timeout_usec, 3600000000ULL);
        assert_int_equal(c->remove_dead_after_usec, 30ULL * 24 * 3600 * 1000000);
        config_free(c);
}

static void test_cluster_errors(void **state) {
        /* Addresses: the key, on its line, and why. */
        static const char *const bad_listen[] = {
                "", "host", "host:0", "host:65536", "[::1]7420", "a:b:c", "host:-1", "ho st:1", "[]:7420",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad_listen); i++) {
                char text[128];
                snprintf(text, sizeof text, "[Cluster]\n\nListen=%s\n", bad_listen[i]);
                load_fails(text, "test.conf:3: Listen");
                load_fails(text, "not a valid address");
                snprintf(text, sizeof text, "[Cluster]\nAdvertise=%s\n", bad_listen[i]);
                load_fails(text, "test.conf:2: Advertise");
        }
        /* Peers cannot reach a wildcard: fine to listen on, not to advertise. */
        load_fails("[Cluster]\nAdvertise=:7420\n", "test.conf:2: Advertise");
        load_fails("[Cluster]\nAdvertise=0.0.0.0:7420\n", "not a wildcard");
        load_fails("[Cluster]\nAdvertise=[::]:7420\n", "test.conf:2: Advertise");

        /* Time spans: not one, zero, or out of range. */
        load_fails("[Cluster]\nProbeInterval=often\n", "test.conf:2: ProbeInterval=often is not a time span");
        load_fails("[Cluster]\nProbeInterval=0\n", "test.conf:2: ProbeInterval=0");
        load_fails("[Cluster]\nProbeInterval=9ms\n", "test.conf:2: ProbeInterval=9ms");
        load_fails("[Cluster]\nProbeInterval=61s\n", "test.conf:2: ProbeInterval=61s");
        load_fails("[Cluster]\nProbeTimeout=500us\n", "test.conf:2: ProbeTimeout=500us");
        load_fails("[Cluster]\nProbeTimeout=2min\n", "test.conf:2: ProbeTimeout=2min");
        load_fails("[Cluster]\nSuspectTimeout=-1s\n", "test.conf:2: SuspectTimeout=-1s");
        load_fails("[Cluster]\nSuspectTimeout=2h\n", "test.conf:2: SuspectTimeout=2h");
        load_fails("[Cluster]\nRemoveDeadAfter=500ms\n", "test.conf:2: RemoveDeadAfter=500ms");
        load_fails("[Cluster]\nRemoveDeadAfter=31d\n", "test.conf:2: RemoveDeadAfter=31d");
        load_fails("[Cluster]\nRemoveDeadAfter=\n", "test.conf:2: RemoveDeadAfter=");

        /* Counts. */
        load_fails("[Cluster]\nIndirectProbes=17\n",
                   "test.conf:2: IndirectProbes=17 is not a valid number (expected 0 to 16)");
        load_fails("[Cluster]\nIndirectProbes=-1\n", "test.conf:2: IndirectProbes=-1");
        load_fails("[Cluster]\nIndirectProbes=three\n", "test.conf:2: IndirectProbes=three");

        /* Keys of other sections are not cluster keys, and the section name is case-sensitive. */
        load_fails("[Cluster]\nPort=7420\n", "test.conf:2: unknown key 'Port' in section [Cluster]");
        load_fails("[Cluster]\nNodeName=x\n", "test.conf:2: unknown key 'NodeName' in section [Cluster]");
        load_fails("[cluster]\nListen=:7420\n", "test.conf:2: unknown section [cluster]");
}

static void test_http(void **state) {
        Config *c = NULL;
        load_ok("", &c);
        assert_string_equal(c->http_listen, "127.0.0.1:8080");
        assert_false(c->http_metrics_auth);
        assert_int_equal(c->http_max_body_bytes, 4 << 20);
        config_free(c);
        load_ok("[HTTP]\nListen=[::1]:9000\nMetricsAuth=yes\nMaxBodyBytes=64K\n", &c);
        assert_string_equal(c->http_listen, "[::1]:9000");
        assert_true(c->http_metrics_auth);
        assert_int_equal(c->http_max_body_bytes, 64 << 10);
        config_free(c);
        /* Empty: no listener of its own (socket activation only); the last value wins. */
        load_ok("[HTTP]\nListen=0.0.0.0:80\nListen=\nMetricsAuth=off\n", &c);
        assert_null(c->http_listen);
        assert_false(c->http_metrics_auth);
        config_free(c);
        load_ok("[HTTP]\nMetricsAuth=TRUE\n", &c);
        assert_true(c->http_metrics_auth);
        config_free(c);
        load_fails("[HTTP]\nListen=8080\n", "test.conf:2: Listen=8080 is not a valid address");
        load_fails("[HTTP]\nListen=:8080\n", "test.conf:2: Listen=:8080 is not a valid address");
        load_fails("[HTTP]\nListen=127.0.0.1:0\n", "test.conf:2: Listen=127.0.0.1:0");
        load_fails("[HTTP]\nListen=127.0.0.1:65536\n", "test.conf:2: Listen=127.0.0.1:65536");
        load_fails("[HTTP]\nMetricsAuth=maybe\n", "test.conf:2: MetricsAuth=maybe is not a boolean");
        load_fails("[HTTP]\nMetricsAuth=\n", "test.conf:2: MetricsAuth= is not a boolean");
        load_fails("[HTTP]\nMaxBodyBytes=100\n", "test.conf:2: MaxBodyBytes=100 is not a size between 1K and 1G");
        load_fails("[HTTP]\nMaxBodyBytes=2G\n", "test.conf:2: MaxBodyBytes=2G");
        load_fails("[HTTP]\nMaxBodyBytes=big\n", "test.conf:2: MaxBodyBytes=big");
        load_fails("[HTTP]\nPort=8080\n", "test.conf:2: unknown key 'Port' in section [HTTP]");
        /* The cluster's Listen= is its own. */
        load_ok("[Cluster]\nListen=0.0.0.0:7000\n[HTTP]\nListen=127.0.0.1:7001\n", &c);
        assert_string_equal(c->listen, "0.0.0.0:7000");
        assert_string_equal(c->http_listen, "127.0.0.1:7001");
        config_free(c);
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
                cmocka_unit_test(test_cluster_defaults),
                cmocka_unit_test(test_cluster_values),
                cmocka_unit_test(test_cluster_errors),
                cmocka_unit_test(test_http),
                cmocka_unit_test(test_first_error_wins),
                cmocka_unit_test(test_missing_file),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
