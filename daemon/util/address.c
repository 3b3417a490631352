/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"

static bool host_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

static int invalid(const char **ret_reason, const char *reason) {
        if (ret_reason)
                *ret_reason = reason;
        return -EINVAL;
}

/* 1..65535 in decimal digits only, all of s. */
static int port_parse(const char *s, uint16_t *ret) {
        unsigned long p;
        char *end;

        if (!(*s >= '0' && *s <= '9'))
                return -EINVAL;
        errno = 0;
        p = strtoul(s, &end, 10);
        if (errno != 0 || *end != 0 || p == 0 || p > 65535)
                return -EINVAL;
        *ret = (uint16_t) p;
        return 0;
}

int address_parse(const char *s, uint16_t default_port, char *host, size_t host_size, uint16_t *ret_port,
                  const char **ret_reason) {
        const char *h = s, *port = NULL;
        bool ipv6 = false;
        size_t n;

        if (!s || !*s)
                return invalid(ret_reason, "empty");
        if (s[0] == '[') {
                const char *close = strchr(s, ']');
                if (!close)
                        return invalid(ret_reason, "no ']' after the IPv6 address");
                h = s + 1;
                n = (size_t) (close - h);
                if (n == 0 || !memchr(h, ':', n))
                        return invalid(ret_reason, "expected an IPv6 address in the brackets, like [fd00::1]:7420");
                ipv6 = true;
                if (close[1] == ':')
                        port = close + 2;
                else if (close[1] != 0)
                        return invalid(ret_reason, "expected ':PORT' after ']'");
        } else {
                const char *colon = strchr(s, ':');
                if (colon && strchr(colon + 1, ':')) {
                        /* A bare IPv6 address: its last group could not be told from a port. */
                        if (default_port == 0)
                                return invalid(ret_reason, "an IPv6 address with a port goes in brackets, "
                                                           "like [fd00::1]:7420");
                        ipv6 = true;
                        n = strlen(s);
                } else {
                        n = colon ? (size_t) (colon - s) : strlen(s);
                        if (colon)
                                port = colon + 1;
                }
        }
        for (size_t i = 0; i < n; i++)
                if (!host_char(h[i]) && !(ipv6 && (h[i] == ':' || h[i] == '%')))
                        return invalid(ret_reason, ipv6 ? "an IPv6 address has only hex digits, ':' and a '%' zone"
                                                        : "a host name has only letters, digits, '-' and '.'");

        uint16_t p = default_port;
        if (port && port_parse(port, &p) < 0)
                return invalid(ret_reason, "the port must be a number from 1 to 65535");
        if (!port && default_port == 0)
                return invalid(ret_reason, "expected HOST:PORT or [IPV6]:PORT");
        if (!port && n == 0)
                return invalid(ret_reason, "expected HOST, HOST:PORT or [IPV6]:PORT");
        if (n >= host_size)
                return invalid(ret_reason, "the host name is too long");
        memcpy(host, h, n);
        host[n] = 0;
        *ret_port = p;
        return 0;
}

int address_format(const char *host, uint16_t port, char *buf, size_t size) {
        int n = snprintf(buf, size, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, (unsigned) port);
        return n < 0 || (size_t) n >= size ? -ENOBUFS : 0;
}
