/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The messages of the cluster protocol, one struct each, and their encoding
 * into frames (frame.h). The wire names and fields are those of the cluster
 * spec; integers are unsigned unless said.
 *
 * proto_pack_X() appends one frame to a FrameBuffer: 0, -ENOMEM, or
 * -EMSGSIZE when the message would not fit in FRAME_MAX (the buffer is then
 * unchanged). The caller passes values within the limits below: what the
 * peer's decoder refuses closes the connection.
 *
 * proto_unpack_X() reads and validates every field of a parsed frame: types,
 * lengths and counts against the limits below, ranges, UTF-8 without NUL,
 * enumerations. It does not look at the frame's type: the caller dispatches
 * on proto_frame_type(). Unknown keys are ignored. On failure it returns
 * -errno as the frame_read_*() functions do, with a message naming the field
 * in *ret_error (if not NULL; free() it), and leaves *ret untouched.
 *
 * Ownership: unpacking allocates nothing of its own. Every pointer in an
 * unpacked struct (strings, binaries, arrays) points into the Frame, so the
 * struct is valid until frame_free(); copy what must outlive the frame.
 * When packing, the pointers are the caller's and are only read.
 */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "sampler.h"
#include "swim.h"

/* The numeric values are not on the wire (types travel as "t" strings); append anyway. */
typedef enum ProtoType {
        PROTO_HELLO,
        PROTO_SWIM,
        PROTO_JOIN,
        PROTO_JOIN_OK,
        PROTO_JOIN_ERR,
        PROTO_STATE_REQ,
        PROTO_STATE,
        PROTO_JOB,
        PROTO_JOB_STARTED,
        PROTO_PIECE,
        PROTO_JOB_END,
        PROTO_JOB_CANCEL,
        PROTO_LEAVE,
        _PROTO_TYPE_MAX,
        _PROTO_TYPE_INVALID = -EINVAL,
} ProtoType;

/* "hello", "join-ok", ...; NULL when out of range. */
const char *proto_type_to_string(ProtoType t);
/* _PROTO_TYPE_INVALID for a type this build does not know (a newer peer's: ignore or refuse it). */
ProtoType proto_type_from_string(const char *s);
/* The same for a frame's "t". */
ProtoType proto_frame_type(const Frame *f);

/* Limits, in bytes for strings and binaries, in elements for arrays. */
#define PROTO_NAME_MAX 255u                     /* names: nodes, clusters, models, devices; versions */
#define PROTO_ADDR_MAX (SWIM_ADDR_MAX - 1u)     /* "HOST:PORT" */
#define PROTO_TOKEN_ID_SIZE 8u
#define PROTO_PROOF_SIZE 32u
#define PROTO_DER_MAX (16u * 1024u)             /* a CSR or certificate */
#define PROTO_ERROR_MAX 1024u                   /* an error message */
#define PROTO_MEMBERS_MAX 4096u
#define PROTO_DEVICES_MAX 64u
#define PROTO_MODELS_MAX 1024u
#define PROTO_DISK_MODELS_MAX 1024u
#define PROTO_MESSAGES_MAX 1024u
#define PROTO_ROLE_MAX 32u
#define PROTO_STOP_MAX 16u                      /* stop strings, each 1..PROTO_STOP_BYTES_MAX */
#define PROTO_STOP_BYTES_MAX 256u
#define PROTO_TEMPLATE_MAX (64u * 1024u)
#define PROTO_RESUME_MAX 131072u                /* tokens of a job continued elsewhere */
#define PROTO_PIECE_TOKENS_MAX 4096u
#define PROTO_REASON_MAX 32u
/* Prompts, contents and piece texts are bounded by the frame alone. */

/* "hello": the first frame on a mesh connection, both ways. */
typedef struct ProtoHello {
        SwimId node;
        const char *name;               /* 1..PROTO_NAME_MAX */
        const char *addr;               /* 1..PROTO_ADDR_MAX */
        const char *cluster;            /* 1..PROTO_NAME_MAX */
        uint32_t incarnation;
        const char *version;            /* 0..PROTO_NAME_MAX */
} ProtoHello;

/* "swim": SwimMsg itself (swim.h): kind, seq, target, updates. */

/* "join": a new node asks for a certificate; proof binds the token to this TLS session. */
typedef struct ProtoJoin {
        uint8_t token_id[PROTO_TOKEN_ID_SIZE];
        const uint8_t *csr;             /* DER, 1..PROTO_DER_MAX */
        size_t csr_size;
        uint8_t proof[PROTO_PROOF_SIZE];
        const char *name;               /* 1..PROTO_NAME_MAX */
        const char *addr;               /* 1..PROTO_ADDR_MAX */
        SwimId node;
} ProtoJoin;

/* "join-ok" */
typedef struct ProtoJoinOk {
        const uint8_t *cert;            /* DER, 1..PROTO_DER_MAX */
        size_t cert_size;
        const uint8_t *ca;              /* DER, 1..PROTO_DER_MAX */
        size_t ca_size;
        const char *cluster;            /* 1..PROTO_NAME_MAX */
        const SwimUpdate *members;      /* 0..PROTO_MEMBERS_MAX */
        size_t n_members;
} ProtoJoinOk;

/* "join-err" */
typedef struct ProtoJoinErr {
        const char *error;              /* 1..PROTO_ERROR_MAX */
} ProtoJoinErr;

typedef struct ProtoDevice {
        const char *name;               /* 1..PROTO_NAME_MAX */
        const char *type;               /* 1..PROTO_NAME_MAX: "discrete", "integrated", ... */
        uint64_t total_bytes;
        uint64_t free_bytes;
} ProtoDevice;

typedef enum ProtoModelState {
        PROTO_MODEL_READY,
        PROTO_MODEL_LOADING,
        _PROTO_MODEL_STATE_MAX,
        _PROTO_MODEL_STATE_INVALID = -EINVAL,
} ProtoModelState;

/* "ready", "loading" */
const char *proto_model_state_to_string(ProtoModelState s);
ProtoModelState proto_model_state_from_string(const char *s);

typedef struct ProtoModel {
        const char *name;               /* 1..PROTO_NAME_MAX */
        const char *arch;               /* 1..PROTO_NAME_MAX */
        uint64_t params;
        const char *quant;              /* 1..PROTO_NAME_MAX */
        uint64_t device_bytes;
        ProtoModelState state;
} ProtoModel;

/* "state": what a node offers; sent on "state-req" and when gen changes. */
typedef struct ProtoState {
        SwimId node;
        uint64_t gen;
        const char *name;               /* 1..PROTO_NAME_MAX */
        const char *version;            /* 0..PROTO_NAME_MAX */
        const char *addr;               /* 1..PROTO_ADDR_MAX */
        uint32_t queue;                 /* jobs queued or running */
        double tps;                     /* recent generated tokens/s, finite, >= 0 */
        double capacity;                /* finite, >= 0 */
        const ProtoDevice *devices;     /* 0..PROTO_DEVICES_MAX */
        size_t n_devices;
        const ProtoModel *models;       /* 0..PROTO_MODELS_MAX */
        size_t n_models;
        char **disk_models;             /* NULL-terminated, 0..PROTO_DISK_MODELS_MAX names; NULL: none */
} ProtoState;

typedef struct ProtoChatMessage {
        const char *role;               /* 1..PROTO_ROLE_MAX */
        const char *content;
} ProtoChatMessage;

typedef struct ProtoJobOptions {
        uint32_t max_tokens;
        SamplerParams sampler;          /* checked with sampler_params_validate() */
        char **stop;                    /* NULL-terminated, see PROTO_STOP_MAX; NULL: none */
        bool have_add_bos;              /* add_bos was given */
        bool add_bos;
        const char *chat_template;      /* "template", 1..PROTO_TEMPLATE_MAX; NULL: the model's */
} ProtoJobOptions;

/* "job": run a generation for the sender. */
typedef struct ProtoJob {
        uint32_t job;                   /* the sender's id for it */
        const char *model;              /* 1..PROTO_NAME_MAX */
        bool chat;
        const char *prompt;             /* !chat */
        const ProtoChatMessage *messages; /* chat: 1..PROTO_MESSAGES_MAX */
        size_t n_messages;
        ProtoJobOptions options;
        const int32_t *resume;          /* tokens already delivered, to continue from; 0..PROTO_RESUME_MAX, each >= 0 */
        size_t n_resume;
        uint64_t resume_bytes;          /* of the resumed tokens' text, how much the client already has */
} ProtoJob;

/* "job-started" */
typedef struct ProtoJobStarted {
        uint32_t job;
        uint32_t prompt_tokens;
} ProtoJobStarted;

/* "piece": generated text and the tokens it came from. */
typedef struct ProtoPiece {
        uint32_t job;
        const char *text;               /* possibly empty */
        const int32_t *tokens;          /* 0..PROTO_PIECE_TOKENS_MAX, each >= 0 */
        size_t n_tokens;
} ProtoPiece;

/* "job-end" */
typedef struct ProtoJobEnd {
        uint32_t job;
        const char *reason;             /* 1..PROTO_REASON_MAX: "stop", "length", "cancelled", "error" */
        const char *error;              /* 0..PROTO_ERROR_MAX; "" when none (NULL is packed as "") */
        uint32_t prompt_tokens;
        uint32_t generated;
        uint64_t prompt_usec;
        uint64_t generate_usec;
} ProtoJobEnd;

/* "job-cancel" */
typedef struct ProtoJobCancel {
        uint32_t job;
} ProtoJobCancel;

int proto_pack_hello(FrameBuffer *b, const ProtoHello *m);
int proto_pack_swim(FrameBuffer *b, const SwimMsg *m);
int proto_pack_join(FrameBuffer *b, const ProtoJoin *m);
int proto_pack_join_ok(FrameBuffer *b, const ProtoJoinOk *m);
int proto_pack_join_err(FrameBuffer *b, const ProtoJoinErr *m);
int proto_pack_state_req(FrameBuffer *b);
int proto_pack_state(FrameBuffer *b, const ProtoState *m);
int proto_pack_job(FrameBuffer *b, const ProtoJob *m);
int proto_pack_job_started(FrameBuffer *b, const ProtoJobStarted *m);
int proto_pack_piece(FrameBuffer *b, const ProtoPiece *m);
int proto_pack_job_end(FrameBuffer *b, const ProtoJobEnd *m);
int proto_pack_job_cancel(FrameBuffer *b, const ProtoJobCancel *m);
int proto_pack_leave(FrameBuffer *b);

int proto_unpack_hello(const Frame *f, ProtoHello *ret, char **ret_error);
int proto_unpack_swim(const Frame *f, SwimMsg *ret, char **ret_error);
int proto_unpack_join(const Frame *f, ProtoJoin *ret, char **ret_error);
int proto_unpack_join_ok(const Frame *f, ProtoJoinOk *ret, char **ret_error);
int proto_unpack_join_err(const Frame *f, ProtoJoinErr *ret, char **ret_error);
int proto_unpack_state(const Frame *f, ProtoState *ret, char **ret_error);
int proto_unpack_job(const Frame *f, ProtoJob *ret, char **ret_error);
int proto_unpack_job_started(const Frame *f, ProtoJobStarted *ret, char **ret_error);
int proto_unpack_piece(const Frame *f, ProtoPiece *ret, char **ret_error);
int proto_unpack_job_end(const Frame *f, ProtoJobEnd *ret, char **ret_error);
int proto_unpack_job_cancel(const Frame *f, ProtoJobCancel *ret, char **ret_error);
/* "state-req" and "leave" have no fields: the frame's type is the whole message. */
