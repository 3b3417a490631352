/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/uio.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "log.h"

static int max_level = LOG_INFO;
static bool use_journal;
static const char *ident = "inferd";

static const char *const level_names[] = {
        [LOG_EMERG] = "emerg",     [LOG_ALERT] = "alert",   [LOG_CRIT] = "crit",
        [LOG_ERR] = "err",         [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info",       [LOG_DEBUG] = "debug",
};

/* Like systemd: stderr is the journal when JOURNAL_STREAM names its device and inode. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

void log_setup(const char *identifier) {
        if (identifier)
                ident = identifier;
        use_journal = stderr_is_journal();
}

bool log_to_journal(void) {
        return use_journal;
}

void log_set_max_level(int level) {
        if (level >= LOG_EMERG && level <= LOG_DEBUG)
                max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

int log_level_from_string(const char *s) {
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (streq(s, level_names[i]))
                        return (int) i;
        if (streq(s, "error"))
                return LOG_ERR;
        if (streq(s, "warn"))
                return LOG_WARNING;
        return -EINVAL;
}

const char *log_level_to_string(int level) {
        if (level < 0 || (size_t) level >= ELEMENTSOF(level_names))
                return NULL;
        return level_names[level];
}

static void log_to_journal_send(int level, int error, const char *file, int line, const char *func,
                                const char *const *fields, const char *msg) {
        char prio[32], code_file[512], code_line[32], code_func[256], errno_field[32], syslog_id[128];
        _cleanup_free_ char *message = NULL;
        struct iovec iov[64];
        size_t n = 0;

        if (asprintf(&message, "MESSAGE=%s", msg) < 0)
                return;
        snprintf(prio, sizeof prio, "PRIORITY=%d", level);
        snprintf(code_file, sizeof code_file, "CODE_FILE=%s", file);
        snprintf(code_line, sizeof code_line, "CODE_LINE=%d", line);
        snprintf(code_func, sizeof code_func, "CODE_FUNC=%s", func);
        snprintf(syslog_id, sizeof syslog_id, "SYSLOG_IDENTIFIER=%s", ident);

#define ADD(s) iov[n++] = (struct iovec) { .iov_base = (void *) (s), .iov_len = strlen(s) }
        ADD(message);
        ADD(prio);
        ADD(code_file);
        ADD(code_line);
        ADD(code_func);
        ADD(syslog_id);
        if (error != 0) {
                snprintf(errno_field, sizeof errno_field, "ERRNO=%d", error);
                ADD(errno_field);
        }
        /* Fields come as key, value pairs, or as ready "KEY=value" strings (MESSAGE_ID). */
        _cleanup_strv_free_ char **owned = calloc(48, sizeof(char *));
        size_t n_owned = 0;
        for (size_t i = 0; owned && fields && fields[i] && n < ELEMENTSOF(iov) && n_owned < 47; i++) {
                if (strchr(fields[i], '=')) {
                        ADD(fields[i]);
                        continue;
                }
                if (!fields[i + 1])
                        break;
                char *kv;
                if (asprintf(&kv, "%s=%s", fields[i], fields[i + 1]) < 0)
                        break;
                owned[n_owned++] = kv;
                ADD(kv);
                i++;
        }
#undef ADD
        (void) sd_journal_sendv(iov, (int) n);
}

int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *const *fields, const char *format, ...) {
        char buf[2048];
        va_list ap;

        if (error < 0)
                error = -error;
        if (level > max_level)
                return -error;

        int saved = errno;
        errno = error;
        va_start(ap, format);
        (void) vsnprintf(buf, sizeof buf, format, ap);
        va_end(ap);

        if (use_journal)
                log_to_journal_send(level, error, file, line, func, fields, buf);
        else
                fprintf(stderr, "%s\n", buf);

        errno = saved;
        return -error;
}
