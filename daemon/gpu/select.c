/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "select.h"

static bool is_gpu(const GpuDeviceInfo *d) {
        return streq(d->type, "discrete") || streq(d->type, "integrated") || streq(d->type, "virtual");
}

/* Calls f for each whitespace-separated word; stops at the first error. */
static int for_each_word(const char *spec, int (*f)(const char *w, size_t n, void *u), void *u) {
        const char *p = spec;
        while (*p) {
                while (isspace((unsigned char) *p))
                        p++;
                if (!*p)
                        break;
                const char *s = p;
                while (*p && !isspace((unsigned char) *p))
                        p++;
                int r = f(s, (size_t) (p - s), u);
                if (r < 0)
                        return r;
        }
        return 0;
}

static bool word_is(const char *w, size_t n, const char *lit) {
        return strlen(lit) == n && strncmp(w, lit, n) == 0;
}

static int check_word(const char *w, size_t n, void *u) {
        int *count = u;
        (*count)++;
        if (word_is(w, n, "auto") || word_is(w, n, "all") || word_is(w, n, "none")) {
                (*count) += 1000; /* keywords stand alone */
                return 0;
        }
        if (n > 4)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (!isdigit((unsigned char) w[i]))
                        return -EINVAL;
        return 0;
}

bool gpu_devices_spec_valid(const char *spec) {
        int count = 0;
        if (!spec || for_each_word(spec, check_word, &count) < 0)
                return false;
        return count == 1001 || (count >= 1 && count < 1000);
}

typedef struct Pick {
        bool *selected;
        size_t n;
        long missing;
} Pick;

static int pick_word(const char *w, size_t n, void *u) {
        Pick *p = u;
        long i = strtol(w, NULL, 10);
        if (i >= 0 && (size_t) i < p->n)
                p->selected[i] = true;
        else if (p->missing < 0)
                p->missing = i;
        return 0;
}

int gpu_select_devices(const GpuInstance *g, const char *spec, bool *selected, long *ret_missing) {
        size_t n = gpu_instance_n_devices(g);
        bool any_gpu = false;

        if (!spec)
                spec = "auto";
        if (!gpu_devices_spec_valid(spec))
                return -EINVAL;
        while (isspace((unsigned char) *spec))
                spec++;
        for (size_t i = 0; i < n; i++) {
                selected[i] = false;
                any_gpu = any_gpu || is_gpu(gpu_instance_device(g, i));
        }
        if (ret_missing)
                *ret_missing = -1;
        if (strncmp(spec, "auto", 4) == 0) {
                for (size_t i = 0; i < n; i++)
                        selected[i] = any_gpu ? is_gpu(gpu_instance_device(g, i)) : true;
                return 0;
        }
        if (strncmp(spec, "all", 3) == 0) {
                for (size_t i = 0; i < n; i++)
                        selected[i] = true;
                return 0;
        }
        if (strncmp(spec, "none", 4) == 0)
                return 0;
        Pick p = { .selected = selected, .n = n, .missing = -1 };
        (void) for_each_word(spec, pick_word, &p);
        if (ret_missing)
                *ret_missing = p.missing;
        return 0;
}
