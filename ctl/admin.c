/* SPDX-License-Identifier: MIT */
/*
 * Verbs that change the running daemon: reload, log-level LEVEL. On the
 * system bus inferd asks polkit about them, so the connection allows
 * interactive authorization when someone at a terminal could answer.
 */
#include <stdio.h>

#include "bus.h"
#include "inferctl.h"
#include "macro.h"

int verb_reload(Context *ctx, int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = ctl_bus_open(ctx, true, &bus);
        if (r < 0)
                return r;
        /* A config that does not parse comes back as ConfigInvalid, with "PATH:LINE: reason". */
        return ctl_bus_call(bus, ctx, "Reload", NULL, NULL);
}

int verb_log_level(Context *ctx, int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_free_ char *level = NULL;
        int r;

        if (argc > 0) {
                r = ctl_bus_open(ctx, true, &bus);
                if (r < 0)
                        return r;
                /* The daemon checks the name (InvalidArgument): one list of levels, in util/log.c. */
                return ctl_bus_call(bus, ctx, "SetLogLevel", NULL, "s", argv[0]);
        }

        r = ctl_bus_open(ctx, false, &bus);
        if (r < 0)
                return r;
        r = ctl_bus_get_property_string(bus, ctx, "LogLevel", &level);
        if (r < 0)
                return r;

        if (ctx->json != JSON_OFF) {
                _cleanup_json_ json_t *v = json_pack("{s:s}", "log_level", level);
                if (!v)
                        return ctl_oom();
                return json_print(v, ctx->json);
        }
        printf("%s\n", level);
        return 0;
}
