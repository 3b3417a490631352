/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define FORMAT_BYTES_MAX 16
#define FORMAT_TIMESPAN_MAX 64

/* "1.5G", "512.0M", "900B": binary units, as systemd prints them. */
char *format_bytes(char *buf, size_t len, uint64_t bytes);

/* "3d 4h 5min 6s", "1.2s", "340ms" from microseconds. */
char *format_timespan(char *buf, size_t len, uint64_t usec);

/* "5s", "1min", "300ms", "2h", plain numbers are seconds. -EINVAL, -ERANGE. */
int parse_timespan(const char *s, uint64_t *ret_usec);

/* "64M", "2G", plain numbers are bytes (binary multiples). -EINVAL, -ERANGE. */
int parse_size(const char *s, uint64_t *ret_bytes);
