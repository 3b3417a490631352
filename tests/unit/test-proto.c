/* SPDX-License-Identifier: MIT */
/*
 * The cluster wire format: every message survives a round trip; a frame
 * arriving in pieces waits for the rest; and every malformed frame or field
 * is refused with a reason that names it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>
#include <math.h>
#include <msgpack.h>

#include "frame.h"
#include "macro.h"
#include "proto.h"

#define ID_A_BYTES { { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 } }
static const SwimId ID_A = ID_A_BYTES;
static const SwimId ID_B = { { 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
                               0x00 } };

/* ---- helpers -------------------------------------------------------------- */

/* The one frame in b, which must parse. */
static Frame *parse_ok(const FrameBuffer *b) {
        Frame *f = NULL;
        char *why = NULL;
        size_t used = 0;

        int r = frame_parse(b->data, b->len, &used, &f, &why);
        if (r != 1)
                fprintf(stderr, "frame_parse: %d %s\n", r, strna(why));
        assert_int_equal(r, 1);
        assert_null(why);
        assert_int_equal(used, b->len);
        return f;
}

/* The error frame_parse() gives for b; *ret_why (if not NULL) gets its reason. */
static int parse_fail(const uint8_t *p, size_t n, char **ret_why) {
        Frame *f = NULL;
        char *why = NULL;
        size_t used = 12345;

        int r = frame_parse(p, n, &used, &f, &why);
        assert_true(r < 0);
        assert_null(f);
        assert_int_equal(used, 12345);
        assert_non_null(why);
        if (ret_why)
                *ret_why = why;
        else
                free(why);
        return r;
}

static void assert_reason(char *why, const char *expected) {
        if (!strstr(why, expected))
                fail_msg("reason '%s' does not contain '%s'", why, expected);
        free(why);
}

/* b becomes the frame with body (a msgpack object written with msgpack-c, right or wrong). */
static void frame_from_body(FrameBuffer *b, const msgpack_sbuffer *body) {
        frame_buffer_done(b);
        b->data = malloc(FRAME_HEADER_SIZE + body->size);
        assert_non_null(b->data);
        b->len = b->allocated = FRAME_HEADER_SIZE + body->size;
        b->data[0] = (uint8_t) (body->size >> 24);
        b->data[1] = (uint8_t) (body->size >> 16);
        b->data[2] = (uint8_t) (body->size >> 8);
        b->data[3] = (uint8_t) body->size;
        memcpy(b->data + FRAME_HEADER_SIZE, body->data, body->size);
}

static void pack_str(msgpack_packer *pk, const char *s) {
        msgpack_pack_str(pk, strlen(s));
        msgpack_pack_str_body(pk, s, strlen(s));
}

/* The error unpacking b as what unpack() decodes, with its reason checked. */
static int unpack_fail(const FrameBuffer *b, int (*unpack)(const Frame *f, char **why), const char *reason) {
        Frame *f = parse_ok(b);
        char *why = NULL;
        int r = unpack(f, &why);
        assert_true(r < 0);
        assert_non_null(why);
        assert_reason(why, reason);
        frame_free(f);
        return r;
}

static int unpack_hello(const Frame *f, char **why) {
        ProtoHello h;
        return proto_unpack_hello(f, &h, why);
}

static int unpack_swim(const Frame *f, char **why) {
        SwimMsg m;
        return proto_unpack_swim(f, &m, why);
}

static int unpack_job(const Frame *f, char **why) {
        ProtoJob j;
        return proto_unpack_job(f, &j, why);
}

static int unpack_piece(const Frame *f, char **why) {
        ProtoPiece p;
        return proto_unpack_piece(f, &p, why);
}

static const ProtoHello HELLO = {
        .node = ID_A_BYTES,
        .name = "node-a",
        .addr = "[::1]:7420",
        .cluster = "lab",
        .incarnation = 7,
        .version = "0.1.0",
};

typedef void (*WriteValue)(FrameWriter *w);

/* A hello whose field key is written by value instead, or left out when value is NULL. */
static void hello_with(FrameBuffer *b, const char *key, WriteValue value) {
        static const char *const keys[] = { "node", "name", "addr", "cluster", "incarnation", "version" };
        FrameWriter w;

        frame_begin(&w, b, "hello", value ? 6 : 5);
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                if (streq(keys[i], key)) {
                        if (value) {
                                frame_write_key(&w, key);
                                value(&w);
                        }
                        continue;
                }
                frame_write_key(&w, keys[i]);
                if (streq(keys[i], "node"))
                        frame_write_bin(&w, HELLO.node.bytes, 16);
                else if (streq(keys[i], "incarnation"))
                        frame_write_u64(&w, HELLO.incarnation);
                else if (streq(keys[i], "name"))
                        frame_write_str(&w, HELLO.name);
                else if (streq(keys[i], "addr"))
                        frame_write_str(&w, HELLO.addr);
                else if (streq(keys[i], "cluster"))
                        frame_write_str(&w, HELLO.cluster);
                else
                        frame_write_str(&w, HELLO.version);
        }
        assert_int_equal(frame_end(&w), 0);
}

static SwimUpdate update(const SwimId *id, const char *addr, uint32_t inc, SwimState state, uint64_t gen) {
        SwimUpdate u = { .id = *id, .incarnation = inc, .state = state, .meta_gen = gen };
        snprintf(u.addr, sizeof u.addr, "%s", addr);
        return u;
}

static void assert_update_equal(const SwimUpdate *a, const SwimUpdate *b) {
        assert_memory_equal(a->id.bytes, b->id.bytes, 16);
        assert_string_equal(a->addr, b->addr);
        assert_int_equal(a->incarnation, b->incarnation);
        assert_int_equal(a->state, b->state);
        assert_int_equal(a->meta_gen, b->meta_gen);
}

static ProtoJob job_template(void) {
        ProtoJob j = {
                .job = 42,
                .model = "qwen2.5-0.5b",
                .prompt = "Once upon a time",
                .options = { .max_tokens = 128 },
        };
        sampler_params_default(&j.options.sampler);
        return j;
}

/* ---- round trips ---------------------------------------------------------- */

static void test_hello(void **state) {
        FrameBuffer b = {};
        ProtoHello h;

        assert_int_equal(proto_pack_hello(&b, &HELLO), 0);
        Frame *f = parse_ok(&b);
        assert_int_equal(frame_version(f), FRAME_VERSION);
        assert_string_equal(frame_type(f), "hello");
        assert_int_equal(proto_frame_type(f), PROTO_HELLO);
        assert_int_equal(proto_unpack_hello(f, &h, NULL), 0);
        assert_memory_equal(h.node.bytes, ID_A.bytes, 16);
        assert_string_equal(h.name, "node-a");
        assert_string_equal(h.addr, "[::1]:7420");
        assert_string_equal(h.cluster, "lab");
        assert_int_equal(h.incarnation, 7);
        assert_string_equal(h.version, "0.1.0");
        frame_free(f);
        frame_buffer_done(&b);
}

static void test_swim(void **state) {
        FrameBuffer b = {};
        SwimMsg m = { .type = SWIM_PING_REQ, .seq = UINT32_MAX, .target = ID_B, .n_updates = SWIM_MAX_UPDATES };
        SwimMsg out;

        for (size_t i = 0; i < SWIM_MAX_UPDATES; i++) {
                SwimId id = ID_A;
                id.bytes[0] = (uint8_t) i;
                m.updates[i] = update(&id, i % 2 ? "10.0.0.1:7420" : "[fe80::1]:1", (uint32_t) i * 1000,
                                      (SwimState) (i % _SWIM_STATE_MAX), UINT64_MAX - i);
        }
        assert_int_equal(proto_pack_swim(&b, &m), 0);
        Frame *f = parse_ok(&b);
        assert_int_equal(proto_frame_type(f), PROTO_SWIM);
        assert_int_equal(proto_unpack_swim(f, &out, NULL), 0);
        assert_int_equal(out.type, SWIM_PING_REQ);
        assert_int_equal(out.seq, UINT32_MAX);
        assert_memory_equal(out.target.bytes, ID_B.bytes, 16);
        assert_int_equal(out.n_updates, SWIM_MAX_UPDATES);
        for (size_t i = 0; i < SWIM_MAX_UPDATES; i++)
                assert_update_equal(&out.updates[i], &m.updates[i]);
        frame_free(f);

        /* no updates: a plain ACK */
        frame_buffer_done(&b);
        m = (SwimMsg) { .type = SWIM_ACK, .seq = 3, .target = ID_A };
        assert_int_equal(proto_pack_swim(&b, &m), 0);
        f = parse_ok(&b);
        assert_int_equal(proto_unpack_swim(f, &out, NULL), 0);
        assert_int_equal(out.type, SWIM_ACK);
        assert_int_equal(out.n_updates, 0);
        frame_free(f);
        frame_buffer_done(&b);
}

static void test_join(void **state) {
        uint8_t csr[3000];
        for (size_t i = 0; i < sizeof csr; i++)
                csr[i] = (uint8_t) (i * 7);
        ProtoJoin j = { .token_id = { 1, 2, 3, 4, 5, 6, 7, 8 }, .csr = csr, .csr_size = sizeof csr, .name = "gpu-box",
                        .addr = "192.168.1.20:7420", .node = ID_B };
        memset(j.proof, 0xab, sizeof j.proof);
        FrameBuffer b = {};
        ProtoJoin out;

        assert_int_equal(proto_pack_join(&b, &j), 0);
        Frame *f = parse_ok(&b);
        assert_int_equal(proto_frame_type(f), PROTO_JOIN);
        assert_int_equal(proto_unpack_join(f, &out, NULL), 0);
        assert_memory_equal(out.token_id, j.token_id, sizeof j.token_id);
        assert_int_equal(out.csr_size, sizeof csr);
        assert_memory_equal(out.csr, csr, sizeof csr);
        assert_memory_equal(out.proof, j.proof, sizeof j.proof);
        assert_string_equal(out.name, "gpu-box");
        assert_string_equal(out.addr, "192.168.1.20:7420");
        assert_memory_equal(out.node.bytes, ID_B.bytes, 16);
        frame_free(f);
        frame_buffer_done(&b);
}

static void test_join_ok_err(void **state) {
        static const uint8_t cert[] = { 0x30, 0x82, 1, 2, 3 }, ca[] = { 0x30, 0x82, 9, 9 };
        size_t n = PROTO_MEMBERS_MAX;
        SwimUpdate *members = calloc(n, sizeof *members);
        FrameBuffer b = {};
        ProtoJoinOk ok, out;
        ProtoJoinErr err, err_out;

        assert_non_null(members);
        for (size_t i = 0; i < n; i++) {
                SwimId id = ID_A;
                id.bytes[14] = (uint8_t) (i >> 8);
                id.bytes[15] = (uint8_t) i;
                char addr[SWIM_ADDR_MAX];
                snprintf(addr, sizeof addr, "10.0.%zu.%zu:7420", i >> 8, i & 255);
                members[i] = update(&id, addr, (uint32_t) i, SWIM_ALIVE, i);
        }
        ok = (ProtoJoinOk) { .cert = cert, .cert_size = sizeof cert, .ca = ca, .ca_size = sizeof ca,
                             .cluster = "lab", .members = members, .n_members = n };
        assert_int_equal(proto_pack_join_ok(&b, &ok), 0);
        Frame *f = parse_ok(&b);
        assert_int_equal(proto_frame_type(f), PROTO_JOIN_OK);
        assert_int_equal(proto_unpack_join_ok(f, &out, NULL), 0);
        assert_int_equal(out.cert_size, sizeof cert);
        assert_memory_equal(out.cert, cert, sizeof cert);
        assert_int_equal(out.ca_size, sizeof ca);
        assert_memory_equal(out.ca, ca, sizeof ca);
        assert_string_equal(out.cluster, "lab");
        assert_int_equal(out.n_members, n);
        for (size_t i = 0; i < n; i++)
                assert_update_equal(&out.members[i], &members[i]);
        frame_free(f);
        frame_buffer_done(&b);

        /* one more member than allowed */
        members = realloc(members, (n + 1) * sizeof *members);
        assert_non_null(members);
        members[n] = members[0];
        ok.members = members;
        ok.n_members = n + 1;
        assert_int_equal(proto_pack_join_ok(&b, &ok), 0);
        f = parse_ok(&b);
        char *why = NULL;
        assert_int_equal(proto_unpack_join_ok(f, &out, &why), -EMSGSIZE);
        assert_reason(why, "'members' has 4097 elements");
        frame_free(f);
        frame_buffer_done(&b);
        free(members);

        err.error = "the join token has expired";
        assert_int_equal(proto_pack_join_err(&b, &err), 0);
        f = parse_ok(&b);
        assert_int_equal(proto_frame_type(f), PROTO_JOIN_ERR);
        assert_int_equal(proto_unpack_join_err(f, &err_out, NULL), 0);
        assert_string_equal(err_out.error, "the join token has expired");
        frame_free(f);
        frame_buffer_done(&b);
}

static void test_state(void **state) {
        ProtoDevice devices[] = {
                { .name = "NVIDIA GeForce RTX 4090", .type = "discrete", .total_bytes = 24ull << 30, .free_bytes = 3 },
                { .name = "llvmpipe", .type = "cpu", .total_bytes = 0, .free_bytes = 0 },
        };
        ProtoModel models[] = {
                { .name = "llama-3.2-1b", .arch = "llama", .params = 1235814400, .quant = "Q8_0",
                  .device_bytes = 1u << 30, .state = PROTO_MODEL_READY },
                { .name = "qwen2.5-7b", .arch = "qwen2", .params = 7, .quant = "Q4_0", .state = PROTO_MODEL_LOADING },
        };
        char *disk[] = { (char *) "llama-3.2-1b", (char *) "qwen2.5-7b", (char *) "ünïcödé", NULL };
        ProtoState s = { .node = ID_A, .gen = 99, .name = "node-a", .version = "", .addr = "a.example:7420",
                         .queue = 3, .tps = 123.5, .capacity = 0.25, .devices = devices, .n_devices = 2,
                         .models = models, .n_models = 2, .disk_models = disk };
        FrameBuffer b = {};
        ProtoState out;

        assert_int_equal(proto_pack_state(&b, &s), 0);
        Frame *f = parse_ok(&b);
        assert_int_equal(proto_frame_type(f), PROTO_STATE);
        assert_int_equal(proto_unpack_state(f, &out, NULL), 0);
        assert_memory_equal(out.node.bytes, ID_A.bytes, 16);
        assert_int_equal(out.gen, 99);
        assert_string_equal(out.name, "node-a");
        assert_string_equal(out.version, "");
        assert_string_equal(out.addr, "a.example:7420");
        assert_int_equal(out.queue, 3);
        assert_true(out.tps == 123.5);
        assert_true(out.capacity == 0.25);
        assert_int_equal(out.n_devices, 2);
        for (size_t i = 0; i < 2; i++) {
                assert_string_equal(out.devices[i].name, devices[i].name);
                assert_string_equal(out.devices[i].type, devices[i].type);
                assert_int_equal(out.devices[i].total_bytes, devices[i].total_bytes);
                assert_int_equal(out.devices[i].free_bytes, devices[i].free_bytes);
        }
        assert_int_equal(out.n_models, 2);
        for (size_t i = 0; i < 2; i++) {
                assert_string_equal(out.models[i].name, models[i].name);
                assert_string_equal(out.models[i].arch, models[i].arch);
                assert_int_equal(out.models[i].params, models[i].params);
                assert_string_equal(out.models[i].quant, models[i].quant);
                assert_int_equal(out.models[i].device_bytes, models[i].device_bytes);
                assert_int_equal(out.models[i].state, models[i].state);
        }
        assert_non_null(out.disk_models);
        for (size_t i = 0; i < 3; i++)
                assert_string_equal(out.disk_models[i], disk[i]);
        assert_null(out.disk_models[3]);
        frame_free(f);
        frame_buffer_done(&b);

        /* empty lists: NULL strv, no devices */
        s = (ProtoState) { .node = ID_B, .name = "n", .addr = "h:1" };
        assert_int_equal(proto_pack_state(&b, &s), 0);
        f = parse_ok(&b);
        assert_int_equal(proto_unpack_state(f, &out, NULL), 0);
        assert_int_equal(out.n_devices, 0);
        assert_int_equal(out.n_models, 0);
        assert_null(out.disk_models);
        frame_free(f);
        frame_buffer_done(&b);
}

static void test_job(void **state) {
        char *stop[] = { (char *) "\n\n", (char *) "User:", NULL };
        int32_t resume[] = { 0, 1, 128000, INT32_MAX };
        ProtoJob j = job_template(), out;
        FrameBuffer b = {};

        j.options.sampler = (SamplerParams) { .temperature = 0.7f, .top_k = 0, .top_p = 0.9f, .min_p = 0.0f,
                                              .repeat_penalty = 1.1f, .repeat_last_n = 256, .seed = UINT64_MAX };
        j.options.stop = stop;
        j.options.have_add_bos = true;
        j.options.add_bos = false;
        j.options.chat_template = "{{ messages }}";
        j.resume = resume;
        j.n_resume = ELEMENTSOF(resume);

        assert_int_equal(proto_pack_job(&b, &j), 0);
        Frame *f = parse_ok(&b);
        assert_int_equal(proto_frame_type(f), PROTO_JOB);
        assert_int_equal(proto_unpack_job(f, &out, NULL), 0);
        assert_int_equal(out.job, 42);
        assert_string_equal(out.model, "qwen2.5-0.5b");
        assert_false(out.chat);
        assert_string_equal(out.prompt, "Once upon a time");
        assert_null(out.messages);
        assert_int_equal(out.options.max_tokens, 128);
        assert_memory_equal(&out.options.sampler, &j.options.sampler, sizeof(SamplerParams));
        assert_string_equal(out.options.stop[0], "\n\n");
        assert_string_equal(out.options.stop[1], "User:");
        assert_null(out.options.stop[2]);
        assert_true(out.options.have_add_bos);
        assert_false(out.options.add_bos);
        assert_string_equal(out.options.chat_template, "{{ messages }}");
        assert_int_equal(out.n_resume, 4);
        assert_memory_equal(out.resume, resume, sizeof resume);
        frame_free(f);
        frame_buffer_done(&b);

        /* chat, no optional options, nothing to resume */
        ProtoChatMessage msgs[] = { { "system", "Be brief." }, { "user", "" }, { "assistant", "日本語" } };
        j = job_template();
        j.chat = true;
        j.prompt = NULL;
        j.messages = msgs;
        j.n_messages = ELEMENTSOF(msgs);
        assert_int_equal(proto_pack_job(&b, &j), 0);
        f = parse_ok(&b);
        assert_int_equal(proto_unpack_job(f, &out, NULL), 0);
        assert_true(out.chat);
        assert_null(out.prompt);
        assert_int_equal(out.n_messages, 3);
        for (size_t i = 0; i < 3; i++) {
                assert_string_equal(out.messages[i].role, msgs[i].role);
                assert_string_equal(out.messages[i].content, msgs[i].content);
        }
        assert_null(out.options.stop);
        assert_false(out.options.have_add_bos);
        assert_null(out.options.chat_template);
        assert_int_equal(out.n_resume, 0);
        assert_memory_equal(&out.options.sampler, &j.options.sampler, sizeof(SamplerParams));
        frame_free(f);
        frame_buffer_done(&b);
}

static void test_job_events(void **state) {
        int32_t tokens[] = { 5, 6, 7 };
        ProtoJobStarted st = { .job = 1, .prompt_tokens = 512 }, st_out;
        ProtoPiece p = { .job = 1, .text = "Hello, wörld", .tokens = tokens, .n_tokens = 3 }, p_out;
        ProtoJobEnd e = { .job = 1, .reason = "stop", .error = NULL, .prompt_tokens = 512, .generated = 3,
                          .prompt_usec = 1000, .generate_usec = UINT64_MAX }, e_out;
        ProtoJobCancel c = { .job = UINT32_MAX }, c_out;
        FrameBuffer b = {};
        size_t off = 0;

        /* one stream of frames, as a connection carries them */
        assert_int_equal(proto_pack_job_started(&b, &st), 0);
        assert_int_equal(proto_pack_piece(&b, &p), 0);
        assert_int_equal(proto_pack_job_end(&b, &e), 0);
        assert_int_equal(proto_pack_job_cancel(&b, &c), 0);
        assert_int_equal(proto_pack_state_req(&b), 0);
        assert_int_equal(proto_pack_leave(&b), 0);

        static const ProtoType expected[] = { PROTO_JOB_STARTED, PROTO_PIECE, PROTO_JOB_END, PROTO_JOB_CANCEL,
                                              PROTO_STATE_REQ, PROTO_LEAVE };
        for (size_t i = 0; i < ELEMENTSOF(expected); i++) {
                Frame *f = NULL;
                size_t used;
                assert_int_equal(frame_parse(b.data + off, b.len - off, &used, &f, NULL), 1);
                off += used;
                assert_int_equal(proto_frame_type(f), expected[i]);
                switch (expected[i]) {
                case PROTO_JOB_STARTED:
                        assert_int_equal(proto_unpack_job_started(f, &st_out, NULL), 0);
                        assert_int_equal(st_out.job, 1);
                        assert_int_equal(st_out.prompt_tokens, 512);
                        break;
                case PROTO_PIECE:
                        assert_int_equal(proto_unpack_piece(f, &p_out, NULL), 0);
                        assert_int_equal(p_out.job, 1);
                        assert_string_equal(p_out.text, "Hello, wörld");
                        assert_int_equal(p_out.n_tokens, 3);
                        assert_memory_equal(p_out.tokens, tokens, sizeof tokens);
                        break;
                case PROTO_JOB_END:
                        assert_int_equal(proto_unpack_job_end(f, &e_out, NULL), 0);
                        assert_string_equal(e_out.reason, "stop");
                        assert_string_equal(e_out.error, "");
                        assert_int_equal(e_out.prompt_tokens, 512);
                        assert_int_equal(e_out.generated, 3);
                        assert_int_equal(e_out.prompt_usec, 1000);
                        assert_int_equal(e_out.generate_usec, UINT64_MAX);
                        break;
                case PROTO_JOB_CANCEL:
                        assert_int_equal(proto_unpack_job_cancel(f, &c_out, NULL), 0);
                        assert_int_equal(c_out.job, UINT32_MAX);
                        break;
                default:
                        /* no fields, only v and t */
                        break;
                }
                frame_free(f);
        }
        assert_int_equal(off, b.len);
        frame_buffer_done(&b);
}

static void test_types(void **state) {
        for (ProtoType t = 0; t < _PROTO_TYPE_MAX; t++) {
                assert_non_null(proto_type_to_string(t));
                assert_int_equal(proto_type_from_string(proto_type_to_string(t)), t);
        }
        assert_int_equal(proto_type_from_string("gossip"), _PROTO_TYPE_INVALID);
        assert_int_equal(proto_type_from_string(NULL), _PROTO_TYPE_INVALID);
        assert_null(proto_type_to_string(_PROTO_TYPE_MAX));
        assert_int_equal(proto_model_state_from_string("loading"), PROTO_MODEL_LOADING);
        assert_int_equal(proto_model_state_from_string("gone"), _PROTO_MODEL_STATE_INVALID);
}

/* ---- framing -------------------------------------------------------------- */

static void test_partial(void **state) {
        ProtoJob j = job_template();
        FrameBuffer b = {};

        assert_int_equal(proto_pack_hello(&b, &HELLO), 0);
        size_t first = b.len;
        assert_int_equal(proto_pack_job(&b, &j), 0);

        /* every prefix of a frame: wait for more, touching nothing */
        for (size_t n = 0; n < first; n++) {
                Frame *f = NULL;
                char *why = NULL;
                size_t used = 777;
                assert_int_equal(frame_parse(b.data, n, &used, &f, &why), 0);
                assert_null(f);
                assert_null(why);
                assert_int_equal(used, 777);
        }
        /* and with more than one frame there, the first */
        for (size_t n = first; n <= b.len; n++) {
                Frame *f = NULL;
                size_t used;
                assert_int_equal(frame_parse(b.data, n, &used, &f, NULL), 1);
                assert_int_equal(used, first);
                assert_string_equal(frame_type(f), "hello");
                frame_free(f);
        }
        frame_buffer_done(&b);
}

static void test_bad_length(void **state) {
        static const uint8_t big[] = { 0x00, 0x89, 0x54, 0x40 };       /* 9000000, and nothing after it */
        static const uint8_t just_over[] = { 0x00, 0x40, 0x00, 0x01 };
        static const uint8_t zero[] = { 0, 0, 0, 0, 0x80 };
        char *why;

        assert_int_equal(parse_fail(big, sizeof big, &why), -EMSGSIZE);
        assert_reason(why, "frame of 9000000 bytes exceeds the 4 MiB limit");
        assert_int_equal(parse_fail(just_over, sizeof just_over, NULL), -EMSGSIZE);
        assert_int_equal(parse_fail(zero, sizeof zero, &why), -EBADMSG);
        assert_reason(why, "frame of 0 bytes");
}

static void test_not_a_map(void **state) {
        msgpack_sbuffer body;
        msgpack_packer pk;
        FrameBuffer b = {};
        char *why;

        msgpack_sbuffer_init(&body);
        msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 2);
        pack_str(&pk, "v");
        msgpack_pack_int(&pk, 1);
        frame_from_body(&b, &body);
        assert_int_equal(parse_fail(b.data, b.len, &why), -EBADMSG);
        assert_reason(why, "frame is not a msgpack map");

        /* a map followed by something else in the same frame */
        msgpack_sbuffer_clear(&body);
        msgpack_pack_map(&pk, 2);
        pack_str(&pk, "v");
        msgpack_pack_int(&pk, 1);
        pack_str(&pk, "t");
        pack_str(&pk, "leave");
        msgpack_pack_nil(&pk);
        frame_from_body(&b, &body);
        assert_int_equal(parse_fail(b.data, b.len, &why), -EBADMSG);
        assert_reason(why, "1 trailing bytes after the msgpack object");

        /* a map that ends before its entries */
        msgpack_sbuffer_clear(&body);
        msgpack_pack_map(&pk, 3);
        pack_str(&pk, "v");
        msgpack_pack_int(&pk, 1);
        frame_from_body(&b, &body);
        assert_int_equal(parse_fail(b.data, b.len, &why), -EBADMSG);
        assert_reason(why, "frame ends inside its msgpack object");

        /* a byte msgpack never uses */
        static const uint8_t reserved[] = { 0, 0, 0, 4, 0x81, 0xa1, 'x', 0xc1 };
        assert_int_equal(parse_fail(reserved, sizeof reserved, &why), -EBADMSG);
        assert_reason(why, "not valid msgpack (byte 0xc1");

        /* a 5-byte array header claiming 4 billion elements is refused before anything is allocated */
        static const uint8_t huge[] = { 0, 0, 0, 9, 0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0 };
        assert_int_equal(parse_fail(huge, sizeof huge, &why), -EBADMSG);
        assert_reason(why, "frame ends inside its msgpack object");

        msgpack_sbuffer_destroy(&body);
        frame_buffer_done(&b);
}

static void test_version_and_type(void **state) {
        msgpack_sbuffer body;
        msgpack_packer pk;
        FrameBuffer b = {};
        char *why;

        msgpack_sbuffer_init(&body);
        msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);

        /* no v */
        msgpack_pack_map(&pk, 1);
        pack_str(&pk, "t");
        pack_str(&pk, "leave");
        frame_from_body(&b, &body);
        assert_int_equal(parse_fail(b.data, b.len, &why), -EBADMSG);
        assert_reason(why, "frame has no protocol version");

        /* no t */
        msgpack_sbuffer_clear(&body);
        msgpack_pack_map(&pk, 1);
        pack_str(&pk, "v");
        msgpack_pack_int(&pk, 1);
        frame_from_body(&b, &body);
        assert_int_equal(parse_fail(b.data, b.len, &why), -EBADMSG);
        assert_reason(why, "frame has no message type");

        /* v of 0, negative, a string */
        for (int k = 0; k < 3; k++) {
                msgpack_sbuffer_clear(&body);
                msgpack_pack_map(&pk, 2);
                pack_str(&pk, "v");
                if (k == 0)
                        msgpack_pack_int(&pk, 0);
                else if (k == 1)
                        msgpack_pack_int(&pk, -1);
                else
                        pack_str(&pk, "1");
                pack_str(&pk, "t");
                pack_str(&pk, "leave");
                frame_from_body(&b, &body);
                assert_int_equal(parse_fail(b.data, b.len, &why), -EBADMSG);
                assert_reason(why, "protocol version is not an integer");
        }

        /* t empty, too long, not a string */
        for (int k = 0; k < 3; k++) {
                msgpack_sbuffer_clear(&body);
                msgpack_pack_map(&pk, 2);
                pack_str(&pk, "v");
                msgpack_pack_int(&pk, 1);
                pack_str(&pk, "t");
                if (k == 0)
                        pack_str(&pk, "");
                else if (k == 1)
                        pack_str(&pk, "a-message-type-longer-than-32-bytes");
                else
                        msgpack_pack_int(&pk, 3);
                frame_from_body(&b, &body);
                assert_int_equal(parse_fail(b.data, b.len, &why), -EBADMSG);
                assert_reason(why, "message type is not a string");
        }

        /* a newer peer: higher version, a type we do not know, fields we do not know */
        msgpack_sbuffer_clear(&body);
        msgpack_pack_map(&pk, 4);
        pack_str(&pk, "v");
        msgpack_pack_int(&pk, 7);
        pack_str(&pk, "t");
        pack_str(&pk, "gossip");
        pack_str(&pk, "job");
        msgpack_pack_int(&pk, 3);
        pack_str(&pk, "future");
        msgpack_pack_ext(&pk, 4, 42);
        msgpack_pack_ext_body(&pk, "abcd", 4);
        frame_from_body(&b, &body);
        Frame *f = parse_ok(&b);
        assert_int_equal(frame_version(f), 7);
        assert_string_equal(frame_type(f), "gossip");
        assert_int_equal(proto_frame_type(f), _PROTO_TYPE_INVALID);
        /* the fields of a known message read the same whatever "t" says */
        ProtoJobCancel c;
        assert_int_equal(proto_unpack_job_cancel(f, &c, NULL), 0);
        assert_int_equal(c.job, 3);
        frame_free(f);

        /* an empty key first: msgpack-c leaves its pointer NULL, the frame has "" */
        msgpack_sbuffer_clear(&body);
        msgpack_pack_map(&pk, 4);
        pack_str(&pk, "");
        msgpack_pack_bin(&pk, 0);
        pack_str(&pk, "v");
        msgpack_pack_int(&pk, 1);
        pack_str(&pk, "t");
        pack_str(&pk, "leave");
        pack_str(&pk, "empty");
        pack_str(&pk, "");
        frame_from_body(&b, &body);
        f = parse_ok(&b);
        const char *s = NULL;
        const uint8_t *bin = NULL;
        size_t n = 1;
        assert_int_equal(frame_read_str(frame_map_get(frame_root(f), "empty"), "empty", 0, 1, &s, NULL), 0);
        assert_string_equal(s, "");
        assert_int_equal(frame_read_bin(frame_map_get(frame_root(f), ""), "", 0, 1, &bin, &n, NULL), 0);
        assert_non_null(bin);
        assert_int_equal(n, 0);
        frame_free(f);

        /* duplicate keys, non-string keys, long keys */
        for (int k = 0; k < 3; k++) {
                msgpack_sbuffer_clear(&body);
                msgpack_pack_map(&pk, 3);
                pack_str(&pk, "v");
                msgpack_pack_int(&pk, 1);
                pack_str(&pk, "t");
                pack_str(&pk, "leave");
                if (k == 0)
                        pack_str(&pk, "v");
                else if (k == 1)
                        msgpack_pack_int(&pk, 1);
                else
                        pack_str(&pk, "a-key-that-is-longer-than-32-bytes");
                msgpack_pack_int(&pk, 2);
                frame_from_body(&b, &body);
                assert_true(parse_fail(b.data, b.len, &why) < 0);
                assert_reason(why, k == 0 ? "the key 'v' twice" : k == 1 ? "key that is not a string" :
                                                                            "map key of 34 bytes");
        }
        static const uint8_t empty_twice[] = { 0, 0, 0, 5, 0x82, 0xa0, 0xc0, 0xa0, 0xc0 };
        assert_int_equal(parse_fail(empty_twice, sizeof empty_twice, &why), -EBADMSG);
        assert_reason(why, "the key '' twice");

        msgpack_sbuffer_destroy(&body);
        frame_buffer_done(&b);
}

static void nest(FrameWriter *w, unsigned levels) {
        for (unsigned i = 0; i < levels; i++)
                frame_write_array(w, 1);
        frame_write_u64(w, 1);
}

static void test_limits(void **state) {
        FrameBuffer b = {};
        FrameWriter w;
        char *why;

        /* the root map is level 1: 7 arrays inside it make 8 levels, fine; 8 make 9 */
        frame_begin(&w, &b, "leave", 1);
        frame_write_key(&w, "deep");
        nest(&w, FRAME_DEPTH_MAX - 1);
        assert_int_equal(frame_end(&w), 0);
        frame_free(parse_ok(&b));
        frame_buffer_done(&b);

        frame_begin(&w, &b, "leave", 1);
        frame_write_key(&w, "deep");
        nest(&w, FRAME_DEPTH_MAX);
        assert_int_equal(frame_end(&w), 0);
        assert_int_equal(parse_fail(b.data, b.len, &why), -EMSGSIZE);
        assert_reason(why, "deeper than 8 levels");
        frame_buffer_done(&b);

        /* nesting far beyond msgpack-c's own stack of 32 */
        frame_begin(&w, &b, "leave", 1);
        frame_write_key(&w, "deep");
        nest(&w, 100000);
        assert_int_equal(frame_end(&w), 0);
        assert_int_equal(parse_fail(b.data, b.len, NULL), -EMSGSIZE);
        frame_buffer_done(&b);

        /* too many values in one frame */
        frame_begin(&w, &b, "leave", 1);
        frame_write_key(&w, "many");
        frame_write_array(&w, FRAME_ELEMENTS_MAX);
        for (size_t i = 0; i < FRAME_ELEMENTS_MAX; i++)
                frame_write_u64(&w, 0);
        assert_int_equal(frame_end(&w), 0);
        assert_int_equal(parse_fail(b.data, b.len, &why), -EMSGSIZE);
        assert_reason(why, "more than 262144 values");
        frame_buffer_done(&b);

        /* a map with too many entries */
        frame_begin(&w, &b, "leave", FRAME_MAP_MAX - 1);
        for (unsigned i = 0; i < FRAME_MAP_MAX - 1; i++) {
                char key[16];
                snprintf(key, sizeof key, "k%u", i);
                frame_write_key(&w, key);
                frame_write_u64(&w, i);
        }
        assert_int_equal(frame_end(&w), 0);
        assert_int_equal(parse_fail(b.data, b.len, &why), -EMSGSIZE);
        assert_reason(why, "map of 33 entries");
        frame_buffer_done(&b);

        /* writing more than FRAME_MAX fails and leaves what was there */
        assert_int_equal(proto_pack_leave(&b), 0);
        size_t before = b.len;
        char *text = malloc(FRAME_MAX + 1);
        assert_non_null(text);
        memset(text, 'x', FRAME_MAX);
        text[FRAME_MAX] = 0;
        ProtoPiece p = { .job = 1, .text = text };
        assert_int_equal(proto_pack_piece(&b, &p), -EMSGSIZE);
        assert_int_equal(b.len, before);
        /* just under the limit is fine, and parses */
        text[FRAME_MAX - 64] = 0;
        assert_int_equal(proto_pack_piece(&b, &p), 0);
        assert_true(b.len - before <= FRAME_HEADER_SIZE + FRAME_MAX);
        Frame *f = NULL;
        size_t used;
        assert_int_equal(frame_parse(b.data + before, b.len - before, &used, &f, NULL), 1);
        ProtoPiece out;
        assert_int_equal(proto_unpack_piece(f, &out, NULL), 0);
        assert_int_equal(strlen(out.text), FRAME_MAX - 64);
        frame_free(f);
        free(text);
        frame_buffer_done(&b);
}

/* ---- field validation ----------------------------------------------------- */

static void write_int(FrameWriter *w) {
        frame_write_u64(w, 5);
}
static void write_bad_utf8(FrameWriter *w) {
        frame_write_str(w, "caf\xc3");
}
static void write_overlong(FrameWriter *w) {
        frame_write_str(w, "\xc0\xaf");
}
static void write_long_addr(FrameWriter *w) {
        frame_write_str(w, "a-host-name-that-is-far-too-long-for-an-address.example.com:7420");
}
static void write_short_id(FrameWriter *w) {
        frame_write_bin(w, "0123456789abcde", 15);
}
static void write_negative(FrameWriter *w) {
        frame_write_i64(w, -1);
}
static void write_big(FrameWriter *w) {
        frame_write_u64(w, (uint64_t) UINT32_MAX + 1);
}

static void test_hello_fields(void **state) {
        FrameBuffer b = {};

        hello_with(&b, "name", NULL);
        assert_int_equal(unpack_fail(&b, unpack_hello, "missing field 'name'"), -ENOENT);
        frame_buffer_done(&b);
        hello_with(&b, "name", write_int);
        assert_int_equal(unpack_fail(&b, unpack_hello, "field 'name' is an unsigned integer, expected a string"),
                         -EBADMSG);
        frame_buffer_done(&b);
        hello_with(&b, "cluster", write_bad_utf8);
        assert_int_equal(unpack_fail(&b, unpack_hello, "field 'cluster' is not valid UTF-8"), -EILSEQ);
        frame_buffer_done(&b);
        hello_with(&b, "version", write_overlong);
        assert_int_equal(unpack_fail(&b, unpack_hello, "field 'version' is not valid UTF-8"), -EILSEQ);
        frame_buffer_done(&b);
        hello_with(&b, "addr", write_long_addr);
        assert_int_equal(unpack_fail(&b, unpack_hello, "field 'addr' has 64 bytes, expected 1..63"), -EMSGSIZE);
        frame_buffer_done(&b);
        hello_with(&b, "node", write_short_id);
        assert_int_equal(unpack_fail(&b, unpack_hello, "field 'node' has 15 bytes, expected 16..16"), -EMSGSIZE);
        frame_buffer_done(&b);
        hello_with(&b, "incarnation", write_negative);
        assert_int_equal(unpack_fail(&b, unpack_hello, "field 'incarnation' is -1"), -ERANGE);
        frame_buffer_done(&b);
        hello_with(&b, "incarnation", write_big);
        assert_int_equal(unpack_fail(&b, unpack_hello, "field 'incarnation' is 4294967296, expected 0..4294967295"),
                         -ERANGE);
        frame_buffer_done(&b);

        /* an embedded NUL: a string msgpack-c writes with its length */
        msgpack_sbuffer body;
        msgpack_packer pk;
        msgpack_sbuffer_init(&body);
        msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 8);
        pack_str(&pk, "v");
        msgpack_pack_int(&pk, 1);
        pack_str(&pk, "t");
        pack_str(&pk, "hello");
        pack_str(&pk, "node");
        msgpack_pack_bin(&pk, 16);
        msgpack_pack_bin_body(&pk, ID_A.bytes, 16);
        pack_str(&pk, "name");
        msgpack_pack_str(&pk, 5);
        msgpack_pack_str_body(&pk, "ab\0cd", 5);
        pack_str(&pk, "addr");
        pack_str(&pk, "h:1");
        pack_str(&pk, "cluster");
        pack_str(&pk, "c");
        pack_str(&pk, "incarnation");
        msgpack_pack_int(&pk, 1);
        pack_str(&pk, "version");
        pack_str(&pk, "1");
        frame_from_body(&b, &body);
        assert_int_equal(unpack_fail(&b, unpack_hello, "field 'name' contains a NUL byte"), -EILSEQ);
        msgpack_sbuffer_destroy(&body);
        frame_buffer_done(&b);

        /* unknown keys, at any depth, are ignored */
        FrameWriter w;
        frame_begin(&w, &b, "hello", 8);
        frame_write_key(&w, "node");
        frame_write_bin(&w, ID_A.bytes, 16);
        frame_write_key(&w, "name");
        frame_write_str(&w, "n");
        frame_write_key(&w, "addr");
        frame_write_str(&w, "h:1");
        frame_write_key(&w, "zone");
        frame_write_map(&w, 1);
        frame_write_key(&w, "rack");
        frame_write_array(&w, 2);
        frame_write_double(&w, NAN);
        frame_write_bool(&w, true);
        frame_write_key(&w, "cluster");
        frame_write_str(&w, "c");
        frame_write_key(&w, "incarnation");
        frame_write_u64(&w, 1);
        frame_write_key(&w, "version");
        frame_write_str(&w, "1");
        frame_write_key(&w, "features");
        frame_write_bin(&w, "\0\1", 2);
        assert_int_equal(frame_end(&w), 0);
        Frame *f = parse_ok(&b);
        ProtoHello h;
        assert_int_equal(proto_unpack_hello(f, &h, NULL), 0);
        assert_string_equal(h.name, "n");
        frame_free(f);
        frame_buffer_done(&b);
}

/* A swim message with n updates; update `bad` gets state `state` and then `tuple_len` elements. */
static void swim_with(FrameBuffer *b, uint64_t kind, size_t n, size_t bad, uint64_t state, size_t tuple_len) {
        FrameWriter w;

        frame_begin(&w, b, "swim", 4);
        frame_write_key(&w, "kind");
        frame_write_u64(&w, kind);
        frame_write_key(&w, "seq");
        frame_write_u64(&w, 1);
        frame_write_key(&w, "target");
        frame_write_bin(&w, ID_A.bytes, 16);
        frame_write_key(&w, "updates");
        frame_write_array(&w, n);
        for (size_t i = 0; i < n; i++) {
                size_t len = i == bad ? tuple_len : 5;
                frame_write_array(&w, len);
                for (size_t k = 0; k < len; k++)
                        switch (k) {
                        case 0:
                                frame_write_bin(&w, ID_B.bytes, 16);
                                break;
                        case 1:
                                frame_write_str(&w, "h:1");
                                break;
                        case 3:
                                frame_write_u64(&w, i == bad ? state : SWIM_ALIVE);
                                break;
                        case 2:
                        case 4:
                                frame_write_u64(&w, k);
                                break;
                        default:
                                frame_write_str(&w, "later");
                        }
        }
        assert_int_equal(frame_end(&w), 0);
}

static void test_swim_fields(void **state) {
        FrameBuffer b = {};

        swim_with(&b, SWIM_PING, SWIM_MAX_UPDATES + 1, SIZE_MAX, 0, 5);
        assert_int_equal(unpack_fail(&b, unpack_swim, "field 'updates' has 17 elements, expected 0..16"), -EMSGSIZE);
        frame_buffer_done(&b);
        swim_with(&b, SWIM_PING, 3, 2, _SWIM_STATE_MAX, 5);
        assert_int_equal(unpack_fail(&b, unpack_swim, "field 'updates[2].state' is 4, expected 0..3"), -ERANGE);
        frame_buffer_done(&b);
        swim_with(&b, _SWIM_MSG_MAX, 0, SIZE_MAX, 0, 5);
        assert_int_equal(unpack_fail(&b, unpack_swim, "field 'kind' is 3, expected 0..2"), -ERANGE);
        frame_buffer_done(&b);
        swim_with(&b, SWIM_ACK, 2, 1, SWIM_DEAD, 4);
        assert_int_equal(unpack_fail(&b, unpack_swim, "field 'updates[1]' has 4 elements"), -EMSGSIZE);
        frame_buffer_done(&b);

        /* a longer tuple from a newer peer: the known part is read */
        swim_with(&b, SWIM_ACK, 2, 1, SWIM_LEFT, 7);
        Frame *f = parse_ok(&b);
        SwimMsg m;
        assert_int_equal(proto_unpack_swim(f, &m, NULL), 0);
        assert_int_equal(m.n_updates, 2);
        assert_int_equal(m.updates[1].state, SWIM_LEFT);
        frame_free(f);
        frame_buffer_done(&b);
}

static void test_job_fields(void **state) {
        char stop_long[PROTO_STOP_BYTES_MAX + 2];
        char *stop17[PROTO_STOP_MAX + 2];
        char *stop_empty[] = { (char *) "", NULL };
        char *stop_big[] = { stop_long, NULL };
        ProtoJob j;
        FrameBuffer b = {};

        for (size_t i = 0; i <= PROTO_STOP_MAX; i++)
                stop17[i] = (char *) "x";
        stop17[PROTO_STOP_MAX + 1] = NULL;
        memset(stop_long, 's', PROTO_STOP_BYTES_MAX + 1);
        stop_long[PROTO_STOP_BYTES_MAX + 1] = 0;

        j = job_template();
        j.options.stop = stop17;
        assert_int_equal(proto_pack_job(&b, &j), 0);
        assert_int_equal(unpack_fail(&b, unpack_job, "field 'stop' has 17 elements, expected 0..16"), -EMSGSIZE);
        frame_buffer_done(&b);

        j.options.stop = stop_empty;
        assert_int_equal(proto_pack_job(&b, &j), 0);
        assert_int_equal(unpack_fail(&b, unpack_job, "field 'stop[0]' has 0 bytes, expected 1..256"), -EMSGSIZE);
        frame_buffer_done(&b);

        j.options.stop = stop_big;
        assert_int_equal(proto_pack_job(&b, &j), 0);
        assert_int_equal(unpack_fail(&b, unpack_job, "field 'stop[0]' has 257 bytes"), -EMSGSIZE);
        frame_buffer_done(&b);

        /* 256 bytes is fine */
        stop_long[PROTO_STOP_BYTES_MAX] = 0;
        assert_int_equal(proto_pack_job(&b, &j), 0);
        Frame *f = parse_ok(&b);
        ProtoJob out;
        assert_int_equal(proto_unpack_job(f, &out, NULL), 0);
        assert_int_equal(strlen(out.options.stop[0]), PROTO_STOP_BYTES_MAX);
        frame_free(f);
        frame_buffer_done(&b);

        /* sampler ranges, with the sampler's own words */
        j = job_template();
        j.options.sampler.temperature = 200;
        assert_int_equal(proto_pack_job(&b, &j), 0);
        assert_int_equal(unpack_fail(&b, unpack_job, "temperature=200 is out of range"), -ERANGE);
        frame_buffer_done(&b);
        j = job_template();
        j.options.sampler.top_k = -1;
        assert_int_equal(proto_pack_job(&b, &j), 0);
        assert_int_equal(unpack_fail(&b, unpack_job, "top_k=-1 is out of range"), -ERANGE);
        frame_buffer_done(&b);

        /* token ids are int32 and not negative */
        int32_t bad_tokens[] = { 1, -5 };
        j = job_template();
        j.resume = bad_tokens;
        j.n_resume = 2;
        assert_int_equal(proto_pack_job(&b, &j), 0);
        assert_int_equal(unpack_fail(&b, unpack_job, "field 'resume[1]' is -5, expected 0..2147483647"), -ERANGE);
        frame_buffer_done(&b);

        FrameWriter w;
        frame_begin(&w, &b, "piece", 3);
        frame_write_key(&w, "job");
        frame_write_u64(&w, 1);
        frame_write_key(&w, "text");
        frame_write_str(&w, "x");
        frame_write_key(&w, "tokens");
        frame_write_array(&w, 1);
        frame_write_u64(&w, (uint64_t) INT32_MAX + 1);
        assert_int_equal(frame_end(&w), 0);
        assert_int_equal(unpack_fail(&b, unpack_piece, "field 'tokens[0]' is 2147483648"), -ERANGE);
        frame_buffer_done(&b);

        /* chat needs messages, a prompt job a prompt */
        j = job_template();
        j.chat = true;
        assert_int_equal(proto_pack_job(&b, &j), 0);
        assert_int_equal(unpack_fail(&b, unpack_job, "field 'messages' has 0 elements, expected 1..1024"), -EMSGSIZE);
        frame_buffer_done(&b);

        frame_begin(&w, &b, "job", 5);
        frame_write_key(&w, "job");
        frame_write_u64(&w, 1);
        frame_write_key(&w, "model");
        frame_write_str(&w, "m");
        frame_write_key(&w, "chat");
        frame_write_bool(&w, false);
        frame_write_key(&w, "options");
        frame_write_map(&w, 0);
        frame_write_key(&w, "resume");
        frame_write_array(&w, 0);
        assert_int_equal(frame_end(&w), 0);
        assert_int_equal(unpack_fail(&b, unpack_job, "missing field 'prompt'"), -ENOENT);
        frame_buffer_done(&b);

        /* options is a map, its floats are floats */
        frame_begin(&w, &b, "job", 6);
        frame_write_key(&w, "job");
        frame_write_u64(&w, 1);
        frame_write_key(&w, "model");
        frame_write_str(&w, "m");
        frame_write_key(&w, "chat");
        frame_write_bool(&w, false);
        frame_write_key(&w, "prompt");
        frame_write_str(&w, "p");
        frame_write_key(&w, "options");
        frame_write_map(&w, 2);
        frame_write_key(&w, "max_tokens");
        frame_write_u64(&w, 1);
        frame_write_key(&w, "temperature");
        frame_write_u64(&w, 1);
        frame_write_key(&w, "resume");
        frame_write_array(&w, 0);
        assert_int_equal(frame_end(&w), 0);
        assert_int_equal(unpack_fail(&b, unpack_job, "field 'temperature' is an unsigned integer, expected a float"),
                         -EBADMSG);
        frame_buffer_done(&b);
}

static void test_readers(void **state) {
        FrameBuffer b = {};
        FrameWriter w;
        uint64_t u;
        int64_t i;
        double d;
        bool flag;
        char *why = NULL;

        frame_begin(&w, &b, "leave", 5);
        frame_write_key(&w, "neg");
        frame_write_i64(&w, INT64_MIN);
        frame_write_key(&w, "big");
        frame_write_u64(&w, UINT64_MAX);
        frame_write_key(&w, "nan");
        frame_write_double(&w, NAN);
        frame_write_key(&w, "inf");
        frame_write_double(&w, -INFINITY);
        frame_write_key(&w, "yes");
        frame_write_bool(&w, true);
        assert_int_equal(frame_end(&w), 0);
        Frame *f = parse_ok(&b);
        const FrameValue *root = frame_root(f);

        assert_int_equal(frame_read_i64(frame_map_get(root, "neg"), "neg", INT64_MIN, 0, &i, NULL), 0);
        assert_true(i == INT64_MIN);
        assert_int_equal(frame_read_i64(frame_map_get(root, "neg"), "neg", -5, 5, &i, NULL), -ERANGE);
        assert_int_equal(frame_read_i64(frame_map_get(root, "big"), "big", INT64_MIN, INT64_MAX, &i, NULL), -ERANGE);
        assert_int_equal(frame_read_u64(frame_map_get(root, "big"), "big", UINT64_MAX, &u, NULL), 0);
        assert_true(u == UINT64_MAX);
        assert_int_equal(frame_read_u64(frame_map_get(root, "neg"), "neg", UINT64_MAX, &u, NULL), -ERANGE);
        assert_int_equal(frame_read_double(frame_map_get(root, "nan"), "nan", -1e9, 1e9, &d, &why), -ERANGE);
        assert_reason(why, "field 'nan' is nan");
        assert_int_equal(frame_read_double(frame_map_get(root, "inf"), "inf", -INFINITY, INFINITY, &d, NULL), -ERANGE);
        assert_int_equal(frame_read_double(frame_map_get(root, "yes"), "yes", 0, 1, &d, NULL), -EBADMSG);
        assert_int_equal(frame_read_bool(frame_map_get(root, "yes"), "yes", &flag, NULL), 0);
        assert_true(flag);
        assert_int_equal(frame_read_bool(frame_map_get(root, "no"), "no", &flag, &why), -ENOENT);
        assert_reason(why, "missing field 'no'");
        assert_int_equal(frame_read_map(root, "root", NULL), 0);
        assert_int_equal(frame_read_map(frame_map_get(root, "yes"), "yes", NULL), -EBADMSG);
        assert_null(frame_map_get(frame_map_get(root, "yes"), "x"));
        assert_null(frame_array_at(root, 0));
        /* a failed read leaves the result alone */
        u = 17;
        assert_int_equal(frame_read_u64(frame_map_get(root, "yes"), "yes", 10, &u, NULL), -EBADMSG);
        assert_int_equal(u, 17);
        void *p = frame_alloc(f, SIZE_MAX / 2, 4);
        assert_null(p);
        p = frame_alloc(f, 100, sizeof(uint64_t));
        assert_non_null(p);
        assert_int_equal((uintptr_t) p % sizeof(uint64_t), 0);
        frame_free(f);
        frame_buffer_done(&b);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hello),
                cmocka_unit_test(test_swim),
                cmocka_unit_test(test_join),
                cmocka_unit_test(test_join_ok_err),
                cmocka_unit_test(test_state),
                cmocka_unit_test(test_job),
                cmocka_unit_test(test_job_events),
                cmocka_unit_test(test_types),
                cmocka_unit_test(test_partial),
                cmocka_unit_test(test_bad_length),
                cmocka_unit_test(test_not_a_map),
                cmocka_unit_test(test_version_and_type),
                cmocka_unit_test(test_limits),
                cmocka_unit_test(test_hello_fields),
                cmocka_unit_test(test_swim_fields),
                cmocka_unit_test(test_job_fields),
                cmocka_unit_test(test_readers),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
