/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>

#include "time-util.h"

/* MemTotal and MemAvailable from /proc/meminfo, in bytes. */
int sysinfo_host_memory(uint64_t *ret_total, uint64_t *ret_available);

/* This process's resident set size in bytes. */
int sysinfo_self_rss(uint64_t *ret_rss);
