/* SPDX-License-Identifier: MIT */
#pragma once

/* The Manager's model and job methods (in the Manager vtable) and the Model
 * and Job objects. */

#include <systemd/sd-bus.h>

typedef struct Manager Manager;

int method_load_model(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_unload_model(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_list_models(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_generate(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_chat(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_tokenize(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_bench_model(sd_bus_message *msg, void *userdata, sd_bus_error *error);

/* Registers the Model and Job objects. */
int serve_bus_register(Manager *m);
