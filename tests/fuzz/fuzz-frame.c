/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the cluster wire format as a connection sees it: the input is a
 * byte stream, split into frames until one is incomplete or malformed (an
 * error ends the stream, as it closes a connection). Every frame goes through
 * every message decoder, not only its own, so each decoder's validation sees
 * all shapes of input. What a decoder accepts is packed again, and that frame
 * must parse, decode and pack to the very same bytes: accepted messages are
 * exactly representable.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "macro.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Keeps the reads from being optimised away. */
static volatile uint8_t sink;

static void touch_str(const char *s) {
        if (!s)
                return;
        size_t n = strlen(s);
        sink ^= (uint8_t) n ^ (n > 0 ? (uint8_t) s[n - 1] : 0);
}

static void touch(const void *p, size_t n) {
        if (n > 0)
                sink ^= ((const uint8_t *) p)[0] ^ ((const uint8_t *) p)[n - 1];
}

static void touch_strv(char **l) {
        for (char **s = l; s && *s; s++)
                touch_str(*s);
}

static void touch_update(const SwimUpdate *u) {
        if ((unsigned) u->state >= _SWIM_STATE_MAX || strnlen(u->addr, SWIM_ADDR_MAX) >= SWIM_ADDR_MAX)
                abort();
        touch(u, sizeof *u);
}

/* A decoded message packed again, frame_parse()d and decoded: the bytes must not change. */
#define CHECK_REPACK(type, pack, unpack, msg)                                                   \
        do {                                                                                    \
                FrameBuffer b1 = {}, b2 = {};                                                   \
                Frame *f2 = NULL;                                                               \
                type again;                                                                     \
                size_t used;                                                                    \
                int _r = pack(&b1, msg);                                                        \
                if (_r == -EMSGSIZE || _r == -ENOMEM) {                                         \
                        /* float32 written back as float64 can outgrow a frame at the limit */ \
                        frame_buffer_done(&b1);                                                 \
                        break;                                                                  \
                }                                                                               \
                if (_r < 0)                                                                     \
                        abort();                                                                \
                if (frame_parse(b1.data, b1.len, &used, &f2, NULL) != 1 || used != b1.len)      \
                        abort();                                                                \
                if (unpack(f2, &again, NULL) < 0)                                               \
                        abort();                                                                \
                if (pack(&b2, &again) < 0 || b1.len != b2.len || memcmp(b1.data, b2.data, b1.len)) \
                        abort();                                                                \
                frame_free(f2);                                                                 \
                frame_buffer_done(&b1);                                                         \
                frame_buffer_done(&b2);                                                         \
        } while (0)

static void check_error(int r, char *why) {
        /* every refusal says why, except running out of memory */
        if (r >= 0 || (!why && r != -ENOMEM))
                abort();
        free(why);
}

static void decode_all(const Frame *f) {
        char *why = NULL;
        int r;

        {
                ProtoHello m;
                r = proto_unpack_hello(f, &m, &why);
                if (r >= 0) {
                        touch_str(m.name);
                        touch_str(m.addr);
                        touch_str(m.cluster);
                        touch_str(m.version);
                        CHECK_REPACK(ProtoHello, proto_pack_hello, proto_unpack_hello, &m);
                } else
                        check_error(r, TAKE_PTR(why));
        }
        {
                SwimMsg m;
                r = proto_unpack_swim(f, &m, &why);
                if (r >= 0) {
                        if ((unsigned) m.type >= _SWIM_MSG_MAX || m.n_updates > SWIM_MAX_UPDATES)
                                abort();
                        for (size_t i = 0; i < m.n_updates; i++)
                                touch_update(&m.updates[i]);
                        CHECK_REPACK(SwimMsg, proto_pack_swim, proto_unpack_swim, &m);
                } else
                        check_error(r, TAKE_PTR(why));
        }
        {
                ProtoJoin m;
                r = proto_unpack_join(f, &m, &why);
                if (r >= 0) {
                        touch(m.csr, m.csr_size);
                        touch_str(m.name);
                        touch_str(m.addr);
                        CHECK_REPACK(ProtoJoin, proto_pack_join, proto_unpack_join, &m);
                } else
                        check_error(r, TAKE_PTR(why));
        }
        {
                ProtoJoinOk m;
                r = proto_unpack_join_ok(f, &m, &why);
                if (r >= 0) {
                        touch(m.cert, m.cert_size);
                        touch(m.ca, m.ca_size);
                        touch_str(m.cluster);
                        for (size_t i = 0; i < m.n_members; i++)
                                touch_update(&m.members[i]);
                        CHECK_REPACK(ProtoJoinOk, proto_pack_join_ok, proto_unpack_join_ok, &m);
                } else
                        check_error(r, TAKE_PTR(why));
        }
        {
                ProtoJoinErr m;
                r = proto_unpack_join_err(f, &m, &why);
                if (r >= 0) {
                        touch_str(m.error);
                        CHECK_REPACK(ProtoJoinErr, proto_pack_join_err, proto_unpack_join_err, &m);
                } else
                        check_error(r, TAKE_PTR(why));
        }
        {
                ProtoState m;
                r = proto_unpack_state(f, &m, &why);
                if (r >= 0) {
                        touch_str(m.name);
                        touch_str(m.version);
                        touch_str(m.addr);
                        for (size_t i = 0; i < m.n_devices; i++) {
                                touch_str(m.devices[i].name);
                                touch_str(m.devices[i].type);
                        }
                        for (size_t i = 0; i < m.n_models; i++) {
                                if (!proto_model_state_to_string(m.models[i].state))
                                        abort();
                                touch_str(m.models[i].name);
                                touch_str(m.models[i].arch);
                                touch_str(m.models[i].quant);
                        }
                        touch_strv(m.disk_models);
                        CHECK_REPACK(ProtoState, proto_pack_state, proto_unpack_state, &m);
                } else
                        check_error(r, TAKE_PTR(why));
        }
        {
                ProtoJob m;
                r = proto_unpack_job(f, &m, &why);
                if (r >= 0) {
                        if (sampler_params_validate(&m.options.sampler, NULL) < 0)
                                abort();
                        touch_str(m.model);
                        touch_str(m.prompt);
                        for (size_t i = 0; i < m.n_messages; i++) {
                                touch_str(m.messages[i].role);
                                touch_str(m.messages[i].content);
                        }
                        touch_strv(m.options.stop);
                        touch_str(m.options.chat_template);
                        for (size_t i = 0; i < m.n_resume; i++)
                                if (m.resume[i] < 0)
                                        abort();
                        CHECK_REPACK(ProtoJob, proto_pack_job, proto_unpack_job, &m);
                } else
                        check_error(r, TAKE_PTR(why));
        }
        {
                ProtoJobStarted m;
                r = proto_unpack_job_started(f, &m, &why);
                if (r >= 0)
                        CHECK_REPACK(ProtoJobStarted, proto_pack_job_started, proto_unpack_job_started, &m);
                else
                        check_error(r, TAKE_PTR(why));
        }
        {
                ProtoPiece m;
                r = proto_unpack_piece(f, &m, &why);
                if (r >= 0) {
                        touch_str(m.text);
                        touch(m.tokens, m.n_tokens * sizeof *m.tokens);
                        CHECK_REPACK(ProtoPiece, proto_pack_piece, proto_unpack_piece, &m);
                } else
                        check_error(r, TAKE_PTR(why));
        }
        {
                ProtoJobEnd m;
                r = proto_unpack_job_end(f, &m, &why);
                if (r >= 0) {
                        touch_str(m.reason);
                        touch_str(m.error);
                        CHECK_REPACK(ProtoJobEnd, proto_pack_job_end, proto_unpack_job_end, &m);
                } else
                        check_error(r, TAKE_PTR(why));
        }
        {
                ProtoJobCancel m;
                r = proto_unpack_job_cancel(f, &m, &why);
                if (r >= 0)
                        CHECK_REPACK(ProtoJobCancel, proto_pack_job_cancel, proto_unpack_job_cancel, &m);
                else
                        check_error(r, TAKE_PTR(why));
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        size_t off = 0;

        for (;;) {
                Frame *f = NULL;
                char *why = NULL;
                size_t used = 0;

                int r = frame_parse(data + off, size - off, &used, &f, &why);
                if (r == 0) {
                        if (f || why)
                                abort();
                        break;
                }
                if (r < 0) {
                        if (f)
                                abort();
                        check_error(r, why);
                        break;
                }
                if (!f || why || used <= FRAME_HEADER_SIZE || used > size - off || frame_version(f) < 1 ||
                    !frame_type(f) || strlen(frame_type(f)) > FRAME_TYPE_MAX)
                        abort();
                off += used;

                /* a type this build knows must name itself */
                ProtoType t = proto_frame_type(f);
                if (t >= 0 && strcmp(proto_type_to_string(t), frame_type(f)) != 0)
                        abort();
                decode_all(f);
                frame_free(f);
        }
        return 0;
}
