/* SPDX-License-Identifier: MIT */
/*
 * A client that stays on the bus: starts N jobs one after another on MODEL
 * (max_tokens 1), waits for each Finished, then prints how many job objects
 * the daemon still shows to it. Used by test_models.py.
 *
 *   jobs-client MODEL N
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

static int finished;

static int on_finished(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        finished++;
        return 0;
}

int main(int argc, char *argv[]) {
        sd_bus *bus = NULL;
        int r, n;

        if (argc != 3)
                return 2;
        n = atoi(argv[2]);
        r = sd_bus_open_user(&bus);
        if (r < 0)
                return fprintf(stderr, "bus: %s\n", strerror(-r)), 1;
        r = sd_bus_match_signal(bus, NULL, "org.inferd.infer1", NULL, "org.inferd.infer1.Job", "Finished",
                                on_finished, NULL);
        if (r < 0)
                return fprintf(stderr, "match: %s\n", strerror(-r)), 1;
        for (int i = 0; i < n; i++) {
                sd_bus_error e = SD_BUS_ERROR_NULL;
                sd_bus_message *reply = NULL;
                r = sd_bus_call_method(bus, "org.inferd.infer1", "/org/inferd/infer1", "org.inferd.infer1.Manager",
                                       "Generate", &e, &reply, "ssa{sv}", argv[1], "Once", 2, "max_tokens", "u", 1,
                                       "temperature", "d", 0.0);
                if (r < 0)
                        return fprintf(stderr, "Generate %d: %s\n", i, e.message ? e.message : strerror(-r)), 1;
                sd_bus_message_unref(reply);
                while (finished <= i) {
                        r = sd_bus_process(bus, NULL);
                        if (r < 0)
                                return fprintf(stderr, "process: %s\n", strerror(-r)), 1;
                        if (r == 0 && sd_bus_wait(bus, 10 * 1000000ULL) <= 0)
                                return fprintf(stderr, "no Finished for job %d\n", i), 1;
                }
        }
        /* Count the job objects the daemon shows under /org/inferd/infer1/job. */
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        const char *xml;
        r = sd_bus_call_method(bus, "org.inferd.infer1", "/org/inferd/infer1/job", "org.freedesktop.DBus.Introspectable",
                               "Introspect", &e, &reply, NULL);
        if (r < 0 || sd_bus_message_read(reply, "s", &xml) < 0)
                return fprintf(stderr, "Introspect: %s\n", e.message ? e.message : strerror(-r)), 1;
        int nodes = 0;
        for (const char *p = xml; (p = strstr(p, "<node name=")); p++)
                nodes++;
        printf("%d\n", nodes);
        sd_bus_message_unref(reply);
        sd_bus_flush_close_unref(bus);
        return 0;
}
