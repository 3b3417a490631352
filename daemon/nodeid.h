/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-id128.h>

/*
 * The node's 128-bit identity: made once, kept in STATE_DIR/node-id as 32
 * lowercase hex digits, and the same for the life of the state directory. A
 * corrupt file is an error, never silently replaced: peers know us by it.
 */
int node_id_load_or_create(const char *state_dir, sd_id128_t *ret);
