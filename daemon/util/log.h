/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Logging to the journal (with structured fields) when stderr is connected to
 * it, to stderr otherwise. The log_*_errno() variants set errno for "%m" and
 * return -abs(error), so a handler can log and return in one statement:
 *
 *     return log_error_errno(r, "Failed to load '%s': %m", path);
 *
 * Extra journal fields go in a NULL-terminated key/value list:
 *
 *     log_fields(LOG_INFO, 0, LOG_FIELDS("MODEL", name), "Loaded %s", name);
 */

#include <stdbool.h>
#include <syslog.h>

#include "macro.h"

void log_setup(const char *identifier);
bool log_to_journal(void);
void log_set_max_level(int level);
int log_get_max_level(void);

/* "emerg" ... "debug", or -EINVAL. */
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);

int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *const *fields, const char *format, ...) _printf_(7, 8);

#define LOG_FIELDS(...) ((const char *const[]) { __VA_ARGS__, NULL })

#define log_full_errno(level, error, ...) \
        log_internal((level), (error), __FILE__, __LINE__, __func__, NULL, __VA_ARGS__)
#define log_fields(level, error, fields, ...) \
        log_internal((level), (error), __FILE__, __LINE__, __func__, (fields), __VA_ARGS__)

#define log_debug(...)   log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...)    log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...)  log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...)   log_full_errno(LOG_ERR, 0, __VA_ARGS__)

#define log_debug_errno(e, ...)   log_full_errno(LOG_DEBUG, (e), __VA_ARGS__)
#define log_info_errno(e, ...)    log_full_errno(LOG_INFO, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...)   log_full_errno(LOG_ERR, (e), __VA_ARGS__)

#define log_oom() log_error_errno(ENOMEM, "Out of memory.")

/* MESSAGE_ID= values for events an operator searches for (journalctl MESSAGE_ID=...). */
#define INFERD_MESSAGE_STARTED      "MESSAGE_ID=3f0c8e3e2a8f4d9c9f6b2a1d7c5e4b01"
#define INFERD_MESSAGE_STOPPING     "MESSAGE_ID=3f0c8e3e2a8f4d9c9f6b2a1d7c5e4b02"
#define INFERD_MESSAGE_RELOADED     "MESSAGE_ID=3f0c8e3e2a8f4d9c9f6b2a1d7c5e4b03"
#define INFERD_MESSAGE_DEVICE_FOUND "MESSAGE_ID=3f0c8e3e2a8f4d9c9f6b2a1d7c5e4b04"
#define INFERD_MESSAGE_MODEL_LOADED "MESSAGE_ID=3f0c8e3e2a8f4d9c9f6b2a1d7c5e4b05"
#define INFERD_MESSAGE_CLUSTER_ACTIVE "MESSAGE_ID=3f0c8e3e2a8f4d9c9f6b2a1d7c5e4b06"
#define INFERD_MESSAGE_MEMBER_STATE "MESSAGE_ID=3f0c8e3e2a8f4d9c9f6b2a1d7c5e4b07"
#define INFERD_MESSAGE_PEER_REFUSED "MESSAGE_ID=3f0c8e3e2a8f4d9c9f6b2a1d7c5e4b08"
#define INFERD_MESSAGE_JOB_FAILOVER "MESSAGE_ID=3f0c8e3e2a8f4d9c9f6b2a1d7c5e4b09"
