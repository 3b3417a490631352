/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "fileio.h"
#include "macro.h"
#include "sysinfo.h"

static int meminfo_field(const char *text, const char *key, uint64_t *ret) {
        const char *p = strstr(text, key);
        uint64_t kb;
        if (!p || sscanf(p + strlen(key), " %" SCNu64 " kB", &kb) != 1)
                return -EBADMSG;
        *ret = kb * 1024;
        return 0;
}

int sysinfo_host_memory(uint64_t *ret_total, uint64_t *ret_available) {
        _cleanup_free_ char *text = NULL;
        int r;

        r = read_full_file("/proc/meminfo", 1 << 20, &text, NULL);
        if (r < 0)
                return r;
        r = meminfo_field(text, "MemTotal:", ret_total);
        if (r < 0)
                return r;
        return meminfo_field(text, "MemAvailable:", ret_available);
}

int sysinfo_self_rss(uint64_t *ret_rss) {
        _cleanup_free_ char *text = NULL;
        uint64_t size, resident;
        int r;

        r = read_full_file("/proc/self/statm", 4096, &text, NULL);
        if (r < 0)
                return r;
        if (sscanf(text, "%" SCNu64 " %" SCNu64, &size, &resident) != 2)
                return -EBADMSG;
        *ret_rss = resident * (uint64_t) sysconf(_SC_PAGESIZE);
        return 0;
}
