/* SPDX-License-Identifier: MIT */
#pragma once

/* The D-Bus names that inferd and its clients agree on. Part of the API. */

#define INFERD_BUS_NAME        "org.inferd.infer1"
#define INFERD_OBJECT_PATH     "/org/inferd/infer1"
#define INFERD_MANAGER_IFACE   "org.inferd.infer1.Manager"
#define INFERD_ERROR_PREFIX    "org.inferd.infer1.Error."

/* The TCP port of the cluster, where an address names none ([Cluster] Listen=, 'cluster join'). */
#define INFERD_CLUSTER_PORT    7420

#define INFERD_ERROR_INVALID_ARGUMENT   INFERD_ERROR_PREFIX "InvalidArgument"
#define INFERD_ERROR_ACCESS_DENIED      INFERD_ERROR_PREFIX "AccessDenied"
#define INFERD_ERROR_INTERACTIVE_AUTH   INFERD_ERROR_PREFIX "InteractiveAuthorizationRequired"
#define INFERD_ERROR_CONFIG_INVALID     INFERD_ERROR_PREFIX "ConfigInvalid"
#define INFERD_ERROR_DEVICE             INFERD_ERROR_PREFIX "DeviceError"
#define INFERD_ERROR_NOT_FOUND          INFERD_ERROR_PREFIX "NotFound"
#define INFERD_ERROR_BUSY               INFERD_ERROR_PREFIX "Busy"
#define INFERD_ERROR_INTERNAL           INFERD_ERROR_PREFIX "Internal"

#define INFERD_POLKIT_ACTION_RELOAD         "org.inferd.infer1.reload"
#define INFERD_POLKIT_ACTION_SET_LOG_LEVEL  "org.inferd.infer1.set-log-level"
#define INFERD_POLKIT_ACTION_LOAD_MODEL     "org.inferd.infer1.load-model"
#define INFERD_POLKIT_ACTION_UNLOAD_MODEL   "org.inferd.infer1.unload-model"
#define INFERD_POLKIT_ACTION_MANAGE_CLUSTER "org.inferd.infer1.manage-cluster"
#define INFERD_POLKIT_ACTION_MANAGE_API_KEYS "org.inferd.infer1.manage-api-keys"
