/* SPDX-License-Identifier: MIT */
#pragma once

/* The Manager's cluster methods and properties (in its vtable). */

#include <systemd/sd-bus.h>

int method_cluster_init(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_cluster_create_token(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_cluster_join(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_cluster_leave(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_cluster_members(sd_bus_message *msg, void *userdata, sd_bus_error *error);

int property_get_cluster_name(sd_bus *bus, const char *path, const char *iface, const char *prop,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error);
int property_get_cluster_state(sd_bus *bus, const char *path, const char *iface, const char *prop,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error);
int property_get_cluster_address(sd_bus *bus, const char *path, const char *iface, const char *prop,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error);
int property_get_cluster_fingerprint(sd_bus *bus, const char *path, const char *iface, const char *prop,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error);
