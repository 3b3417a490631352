/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

#include "vkdev.h"

/*
 * Which devices the engine uses, from the config's Devices=:
 *   auto  every discrete, integrated or virtual GPU; the CPU (lavapipe) only
 *         when there is no GPU at all (the default)
 *   all   every device, the CPU included
 *   none  no device (the node routes requests to its peers)
 *   0 2   these indices, as `inferctl devices` lists them
 */
bool gpu_devices_spec_valid(const char *spec);

/* Fills selected[i] for each of the instance's devices. Indices that do not
 * exist are reported in *ret_missing (the first one) and skipped. */
int gpu_select_devices(const GpuInstance *g, const char *spec, bool *selected, long *ret_missing);
