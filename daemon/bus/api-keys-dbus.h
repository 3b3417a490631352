/* SPDX-License-Identifier: MIT */
#pragma once

/* The Manager's API key methods (in its vtable): CreateApiKey, ListApiKeys, RevokeApiKey. */

#include <systemd/sd-bus.h>

int method_create_api_key(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_list_api_keys(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_revoke_api_key(sd_bus_message *msg, void *userdata, sd_bus_error *error);
