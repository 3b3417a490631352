/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Network addresses as inferd takes them, in inferd.conf (Listen=,
 * Advertise=) and on the command line (inferctl cluster join): HOST:PORT or
 * [IPV6]:PORT, HOST a name or an IPv4 address, empty for "every address".
 * Where a default port applies, also HOST alone, [IPV6] alone and a bare
 * IPv6 address (two colons or more, no brackets). One grammar for the daemon
 * and inferctl, so a command that inferctl accepts is one the daemon takes.
 */

#include <stddef.h>
#include <stdint.h>

/*
 * Splits s into host (no brackets; host_size bytes with the NUL) and port.
 * default_port 0: the port is required. Returns 0, or -EINVAL with
 * *ret_reason (if given) saying what is wrong, as a phrase to follow
 * "invalid address 'S': "; the outputs are left alone then.
 */
int address_parse(const char *s, uint16_t default_port, char *host, size_t host_size, uint16_t *ret_port,
                  const char **ret_reason);

/* host and port as address_parse() reads them back: brackets around IPv6. -ENOBUFS if it does not fit. */
int address_format(const char *host, uint16_t port, char *buf, size_t size);
