/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>
#include <time.h>

/* The given clock (CLOCK_MONOTONIC, CLOCK_REALTIME) in microseconds. */
static inline uint64_t now_usec(clockid_t clock) {
        struct timespec ts;
        (void) clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

#define USEC_PER_MSEC 1000ULL
#define USEC_PER_SEC 1000000ULL
