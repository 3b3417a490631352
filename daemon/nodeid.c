/* SPDX-License-Identifier: MIT */
#include <stdio.h>

#include "fileio.h"
#include "log.h"
#include "macro.h"
#include "nodeid.h"

int node_id_load_or_create(const char *state_dir, sd_id128_t *ret) {
        _cleanup_free_ char *path = NULL, *data = NULL;
        char line[SD_ID128_STRING_MAX + 1];
        sd_id128_t id;
        int r;

        if (asprintf(&path, "%s/node-id", state_dir) < 0)
                return -ENOMEM;

        r = read_full_file(path, 4096, &data, NULL);
        if (r >= 0) {
                data[strcspn(data, "\n")] = 0;
                if (strlen(data) != 32 || sd_id128_from_string(data, &id) < 0 || sd_id128_is_null(id))
                        return log_error_errno(EBADMSG, "%s does not hold a node id (32 hex digits); "
                                               "remove it to make a new identity", path);
                *ret = id;
                return 0;
        }
        if (r != -ENOENT)
                return log_error_errno(r, "Failed to read %s: %m", path);

        r = sd_id128_randomize(&id);
        if (r < 0)
                return log_error_errno(r, "Failed to make a node id: %m");
        snprintf(line, sizeof line, "%s", sd_id128_to_string(id, (char[SD_ID128_STRING_MAX]) {}));
        strcat(line, "\n");
        r = write_file_atomic(path, line, strlen(line), 0644);
        if (r < 0)
                return log_error_errno(r, "Failed to write %s: %m", path);
        log_info("Created node id %s in %s", SD_ID128_TO_STRING(id), path);
        *ret = id;
        return 0;
}
