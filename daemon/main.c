/* SPDX-License-Identifier: MIT */
#include "build-config.h"
#include <getopt.h>
#include <stdio.h>

#include "log.h"
#include "macro.h"
#include "manager.h"

static void help(void) {
        printf("Usage: inferd [OPTIONS]\n"
               "\n"
               "The inferd inference daemon: runs models on this host's Vulkan devices\n"
               "and answers on D-Bus as %s.\n"
               "\n"
               "  -h --help             Show this help\n"
               "     --version          Show the version\n"
               "     --bus=system|session\n"
               "                        Which bus to own the name on (default: system)\n"
               "     --config=PATH      Configuration file (default: %s)\n"
               "     --state-dir=PATH   State directory (default: %s)\n"
               "\n"
               "See inferd(8) and inferd.conf(5).\n",
               "org.inferd.infer1", INFERD_CONF_FILE, INFERD_STATE_DIR);
}

int main(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_BUS, ARG_CONFIG, ARG_STATE_DIR };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "bus", required_argument, NULL, ARG_BUS },
                { "config", required_argument, NULL, ARG_CONFIG },
                { "state-dir", required_argument, NULL, ARG_STATE_DIR },
                {}
        };
        ManagerOptions o = {
                .bus_kind = BUS_KIND_SYSTEM,
                .config_path = INFERD_CONF_FILE,
                .state_dir = INFERD_STATE_DIR,
        };
        _cleanup_(manager_freep) Manager *m = NULL;
        int c, r;

        log_setup("inferd");

        /* systemd hands us STATE_DIRECTORY= when StateDirectory= is set. */
        const char *e = getenv("STATE_DIRECTORY");
        if (e && *e && !strchr(e, ':'))
                o.state_dir = e;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("inferd %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_BUS:
                        if (streq(optarg, "system"))
                                o.bus_kind = BUS_KIND_SYSTEM;
                        else if (streq(optarg, "session") || streq(optarg, "user"))
                                o.bus_kind = BUS_KIND_SESSION;
                        else {
                                log_error("Invalid --bus=%s: expected 'system' or 'session'.", optarg);
                                return 2;
                        }
                        break;
                case ARG_CONFIG:
                        o.config_path = optarg;
                        o.config_explicit = true;
                        break;
                case ARG_STATE_DIR:
                        o.state_dir = optarg;
                        break;
                default:
                        return 2;
                }
        if (optind < argc) {
                log_error("Unexpected argument '%s'. See inferd --help.", argv[optind]);
                return 2;
        }

        r = manager_new(&o, &m);
        if (r < 0)
                return 1;
        r = manager_run(m);
        return r < 0 ? 1 : 0;
}
