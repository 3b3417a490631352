/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Reads a whole (small) file, NUL-terminated; fails with -EFBIG beyond max_size. */
int read_full_file(const char *path, size_t max_size, char **ret_data, size_t *ret_size);

/* Writes via a temporary file and rename(), so readers see old or new, never half. */
int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode);

/* mkdir -p with the given mode for the directories it creates. */
int mkdir_p(const char *path, mode_t mode);
