/* SPDX-License-Identifier: MIT */
/* Fuzzes the config parser: any bytes give a config or a clear error, never a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Config *c = NULL;
        char *why = NULL;
        char *text = malloc(size + 1);

        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = 0;
        log_set_max_level(LOG_CRIT);
        if (config_load_string(text, "fuzz.conf", &c, &why) < 0) {
                if (!why || strncmp(why, "fuzz.conf:", 10) != 0)
                        abort(); /* every parse error names file and line */
        }
        config_free(c);
        free(why);
        free(text);
        return 0;
}
