/* SPDX-License-Identifier: MIT */
/*
 * Verbs for the models a node holds: load PATH, unload NAME, models. Loading
 * and unloading change the daemon, so they may ask polkit interactively;
 * listing is open to everyone.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "format.h"
#include "inferctl.h"
#include "macro.h"
#include "time-util.h"

/* Reading gigabytes from a slow disk onto a device takes minutes, not seconds. */
#define LOAD_TIMEOUT_USEC (10ULL * 60ULL * 1000000ULL)

static const char *arg_name = "";       /* "": the daemon names it after the file */
static int64_t arg_device = -1;         /* -1: the daemon picks */
static int64_t arg_context = -1;        /* -1: the model's */

/* A decimal uint32_t, all of s; *what is "--device" for the message. */
static int parse_u32(const char *s, const char *what, uint32_t min, int64_t *ret) {
        unsigned long long v;
        char *end;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || end == s || *end || *s == '-' || *s == '+' || v > UINT32_MAX || v < min)
                return ctl_error_errno(EINVAL, "invalid %s=%s: expected a whole number from %" PRIu32
                                       " to %" PRIu32 ".", what, s, min, UINT32_MAX);
        *ret = (int64_t) v;
        return 0;
}

int load_parse_option(Context *ctx, int opt, const char *arg) {
        switch (opt) {
        case ARG_LOAD_NAME:
                /* The daemon checks the characters; an empty name would mean "from the file". */
                if (!*arg)
                        return ctl_error_errno(EINVAL, "invalid --name=: expected a name.");
                arg_name = arg;
                return 0;
        case ARG_LOAD_DEVICE:
                return parse_u32(arg, "--device", 0, &arg_device);
        case ARG_LOAD_CONTEXT:
                return parse_u32(arg, "--context", 1, &arg_context);
        }
        return -EINVAL;
}

/* What GetAll on a Model says; strings point into the reply. */
typedef struct ModelInfo {
        const char *name;
        const char *path;
        const char *architecture;
        uint64_t parameters;
        const char *quantization;
        uint64_t file_size;
        uint32_t device;
        uint64_t device_memory;
        uint32_t context_length;
        const char *state;
} ModelInfo;

static const CtlProperty model_info_map[] = {
        { "Name", "s", offsetof(ModelInfo, name) },
        { "Path", "s", offsetof(ModelInfo, path) },
        { "Architecture", "s", offsetof(ModelInfo, architecture) },
        { "Parameters", "t", offsetof(ModelInfo, parameters) },
        { "Quantization", "s", offsetof(ModelInfo, quantization) },
        { "FileSize", "t", offsetof(ModelInfo, file_size) },
        { "Device", "u", offsetof(ModelInfo, device) },
        { "DeviceMemory", "t", offsetof(ModelInfo, device_memory) },
        { "ContextLength", "u", offsetof(ModelInfo, context_length) },
        { "State", "s", offsetof(ModelInfo, state) },
        {}
};

static json_t *model_info_to_json(const ModelInfo *m) {
        return json_pack("{s:s?, s:s?, s:s?, s:I, s:s?, s:I, s:I, s:I, s:I, s:s?}",
                         "name", m->name,
                         "path", m->path,
                         "architecture", m->architecture,
                         "parameters", (json_int_t) m->parameters,
                         "quantization", m->quantization,
                         "file_size", (json_int_t) m->file_size,
                         "device", (json_int_t) m->device,
                         "device_memory", (json_int_t) m->device_memory,
                         "context_length", (json_int_t) m->context_length,
                         "state", m->state);
}

/*
 * LoadModel answers once the model is ready. Should a daemon answer while it
 * still loads (State "loading"), wait here until it is ready, or gone: then
 * the load failed, and the daemon's log says why. Reads the properties again
 * into *info and *props at the end.
 */
static int wait_ready(sd_bus *bus, const Context *ctx, const char *path, ModelInfo *info,
                      sd_bus_message **props) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + ctx->timeout_usec;
        int r;

        if (!info->state || !streq(info->state, "loading"))
                return 0;

        for (;;) {
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                const char *state;

                if (now_usec(CLOCK_MONOTONIC) > deadline)
                        return ctl_error_errno(ETIME, "inferd did not finish loading %s in time "
                                               "(set $INFERD_TIMEOUT_SEC to wait longer)", strna(info->name));
                (void) usleep(200 * 1000);

                r = sd_bus_get_property(bus, INFERD_BUS_NAME, path, INFERD_MODEL_IFACE, "State", &error, &m, "s");
                if (sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_OBJECT) ||
                    sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_INTERFACE))
                        return ctl_error_errno(EIO, "inferd failed to load %s (its log says why)", strna(info->name));
                if (r < 0)
                        return ctl_error_errno(r, "inferd stopped while loading %s (%s)", strna(info->name),
                                               error.message ?: strerror(-r));
                r = sd_bus_message_read(m, "s", &state);
                if (r < 0)
                        return ctl_bus_log_parse_error(r, "Get");
                if (!streq(state, "loading"))
                        break;
        }

        *info = (ModelInfo) {};
        *props = sd_bus_message_unref(*props);
        return ctl_bus_get_object_properties(bus, ctx, path, INFERD_MODEL_IFACE, model_info_map, info, props);
}

int verb_load(Context *ctx, int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL, *props = NULL;
        _cleanup_free_ char *path = NULL;
        const char *object;
        ModelInfo info = {};
        Context c = *ctx;
        char size[FORMAT_BYTES_MAX], params[FORMAT_PARAMS_MAX];
        int r;

        /* inferd runs in another directory, maybe as another user: send where the file really is. */
        path = realpath(argv[0], NULL);
        if (!path)
                return ctl_error_errno(errno, "cannot load '%s': %m", argv[0]);

        /* $INFERD_TIMEOUT_SEC, when set, is the limit; else one long enough for big files. */
        if (!c.timeout_set)
                c.timeout_usec = LOAD_TIMEOUT_USEC;

        r = ctl_bus_open(&c, true, &bus);
        if (r < 0)
                return r;

        r = ctl_bus_new_call(bus, INFERD_OBJECT_PATH, INFERD_MANAGER_IFACE, "LoadModel", &m);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "ss", path, arg_name);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg_device >= 0)
                r = sd_bus_message_append(m, "{sv}", "device", "u", (uint32_t) arg_device);
        if (r >= 0 && arg_context >= 0)
                r = sd_bus_message_append(m, "{sv}", "context", "u", (uint32_t) arg_context);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return ctl_error_errno(r, "Failed to append the arguments of LoadModel: %m");

        r = ctl_bus_send(bus, &c, m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "o", &object);
        if (r < 0)
                return ctl_bus_log_parse_error(r, "LoadModel");

        r = ctl_bus_get_object_properties(bus, &c, object, INFERD_MODEL_IFACE, model_info_map, &info, &props);
        if (r < 0)
                return r;
        r = wait_ready(bus, &c, object, &info, &props);
        if (r < 0)
                return r;

        if (ctx->json != JSON_OFF) {
                _cleanup_json_ json_t *v = model_info_to_json(&info);
                if (!v)
                        return ctl_oom();
                return json_print(v, ctx->json);
        }
        printf("Loaded %s (%s, %s params, %s, %s) on device %" PRIu32 ".\n", strna(info.name),
               strna(info.architecture), format_params(params, sizeof params, info.parameters),
               strna(info.quantization), format_bytes(size, sizeof size, info.file_size), info.device);
        return 0;
}

int verb_unload(Context *ctx, int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = ctl_bus_open(ctx, true, &bus);
        if (r < 0)
                return r;
        /* An unknown name is the daemon's NotFound, with a sentence that says so. */
        return ctl_bus_call(bus, ctx, "UnloadModel", NULL, "s", argv[0]);
}

static int list_models(sd_bus *bus, const Context *ctx, sd_bus_message **ret_reply, ModelInfo **ret_models,
                       size_t *ret_n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ ModelInfo *models = NULL;
        size_t n = 0;
        int r;

        r = ctl_bus_call(bus, ctx, "ListModels", &reply, NULL);
        if (r < 0)
                return r;

        r = sd_bus_message_enter_container(reply, 'a', "(ssststutus)");
        if (r < 0)
                return ctl_bus_log_parse_error(r, "ListModels");
        for (;;) {
                ModelInfo m = {};

                r = sd_bus_message_read(reply, "(ssststutus)", &m.name, &m.path, &m.architecture, &m.parameters,
                                        &m.quantization, &m.file_size, &m.device, &m.device_memory,
                                        &m.context_length, &m.state);
                if (r < 0)
                        return ctl_bus_log_parse_error(r, "ListModels");
                if (r == 0)
                        break;

                ModelInfo *a = reallocarray(models, n + 1, sizeof(ModelInfo));
                if (!a)
                        return ctl_oom();
                models = a;
                models[n++] = m;
        }
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return ctl_bus_log_parse_error(r, "ListModels");

        *ret_reply = TAKE_PTR(reply);
        *ret_models = TAKE_PTR(models);
        *ret_n = n;
        return 0;
}

static int print_models_json(const Context *ctx, const ModelInfo *models, size_t n) {
        _cleanup_json_ json_t *array = json_array();

        if (!array)
                return ctl_oom();
        for (size_t i = 0; i < n; i++)
                if (json_array_append_new(array, model_info_to_json(models + i)) < 0)
                        return ctl_oom();
        return json_print(array, ctx->json);
}

static int print_models_text(const ModelInfo *models, size_t n) {
        static const char *const headers[] = {
                "NAME", "ARCH", "PARAMS", "QUANT", "SIZE", "DEVICE", "MEMORY", "CONTEXT", "STATE",
        };
        _cleanup_(table_freep) Table *t = NULL;
        int r;

        if (n == 0) {
                printf("No models loaded.\n");
                return 0;
        }

        t = table_new(ELEMENTSOF(headers), headers);
        if (!t)
                return ctl_oom();
        for (size_t col = 2; col <= 7; col++)
                if (col != 3)
                        (void) table_set_align_right(t, col, true);

        for (size_t i = 0; i < n; i++) {
                const ModelInfo *m = models + i;
                char params[FORMAT_PARAMS_MAX], size[FORMAT_BYTES_MAX], memory[FORMAT_BYTES_MAX], device[16], context[16];

                snprintf(device, sizeof device, "%" PRIu32, m->device);
                snprintf(context, sizeof context, "%" PRIu32, m->context_length);
                r = table_add_row(t, (const char *const[]) {
                        m->name, m->architecture, format_params(params, sizeof params, m->parameters),
                        m->quantization, format_bytes(size, sizeof size, m->file_size), device,
                        format_bytes(memory, sizeof memory, m->device_memory), context, m->state,
                });
                if (r < 0)
                        return ctl_oom();
        }

        r = table_print(t, stdout);
        if (r < 0)
                return ctl_error_errno(r, "Failed to print the table: %m");
        return 0;
}

int verb_models(Context *ctx, int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ ModelInfo *models = NULL;
        size_t n = 0;
        int r;

        r = ctl_bus_open(ctx, false, &bus);
        if (r < 0)
                return r;
        r = list_models(bus, ctx, &reply, &models, &n);
        if (r < 0)
                return r;

        if (ctx->json != JSON_OFF)
                return print_models_json(ctx, models, n);
        return print_models_text(models, n);
}
