/* SPDX-License-Identifier: MIT */
/*
 * Every message is a map of named fields; lists of records (members,
 * devices, models, messages) are arrays of tuples, whose order is given in
 * the spec. A tuple longer than expected is accepted and its extra elements
 * ignored, as unknown keys are: a later version may append to it.
 */
#include <assert.h>
#include <errno.h>
#include <float.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "proto.h"

static const char *const proto_type_table[_PROTO_TYPE_MAX] = {
        [PROTO_HELLO] = "hello",
        [PROTO_SWIM] = "swim",
        [PROTO_JOIN] = "join",
        [PROTO_JOIN_OK] = "join-ok",
        [PROTO_JOIN_ERR] = "join-err",
        [PROTO_STATE_REQ] = "state-req",
        [PROTO_STATE] = "state",
        [PROTO_JOB] = "job",
        [PROTO_JOB_STARTED] = "job-started",
        [PROTO_PIECE] = "piece",
        [PROTO_JOB_END] = "job-end",
        [PROTO_JOB_CANCEL] = "job-cancel",
        [PROTO_LEAVE] = "leave",
};

const char *proto_type_to_string(ProtoType t) {
        return t >= 0 && t < _PROTO_TYPE_MAX ? proto_type_table[t] : NULL;
}

ProtoType proto_type_from_string(const char *s) {
        for (ProtoType t = 0; s && t < _PROTO_TYPE_MAX; t++)
                if (streq(proto_type_table[t], s))
                        return t;
        return _PROTO_TYPE_INVALID;
}

ProtoType proto_frame_type(const Frame *f) {
        return proto_type_from_string(frame_type(f));
}

static const char *const proto_model_state_table[_PROTO_MODEL_STATE_MAX] = {
        [PROTO_MODEL_READY] = "ready",
        [PROTO_MODEL_LOADING] = "loading",
};

const char *proto_model_state_to_string(ProtoModelState s) {
        return s >= 0 && s < _PROTO_MODEL_STATE_MAX ? proto_model_state_table[s] : NULL;
}

ProtoModelState proto_model_state_from_string(const char *s) {
        for (ProtoModelState t = 0; s && t < _PROTO_MODEL_STATE_MAX; t++)
                if (streq(proto_model_state_table[t], s))
                        return t;
        return _PROTO_MODEL_STATE_INVALID;
}

/* ---- shared pieces -------------------------------------------------------- */

/* Names of fields inside arrays, for messages: "members[3]" names an element, "members[3].addr" a
 * field of a tuple. Sized so that neither can be cut short. */
#define ELEM_MAX 40
#define WHAT_MAX 64

static const char *elemname(char buf[static ELEM_MAX], const char *what, size_t i) {
        snprintf(buf, ELEM_MAX, "%s[%zu]", what, i);
        return buf;
}

static const char *subname(char buf[static WHAT_MAX], const char *what, const char *field) {
        snprintf(buf, WHAT_MAX, "%s.%s", what, field);
        return buf;
}

static int read_id(const FrameValue *v, const char *what, SwimId *ret, char **ret_error) {
        return frame_read_bin_exact(v, what, ret->bytes, sizeof ret->bytes, ret_error);
}

static void write_id(FrameWriter *w, const SwimId *id) {
        frame_write_bin(w, id->bytes, sizeof id->bytes);
}

static int read_token_ids(const Frame *f, const FrameValue *v, const char *what, size_t max, const int32_t **ret,
                          size_t *ret_n, char **ret_error) {
        int32_t *ids = NULL;
        size_t n;
        int r;

        r = frame_read_array(v, what, 0, max, &n, ret_error);
        if (r < 0)
                return r;
        if (n > 0) {
                ids = frame_alloc(f, n, sizeof *ids);
                if (!ids)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                char name[ELEM_MAX];
                int64_t id;
                r = frame_read_i64(frame_array_at(v, i), elemname(name, what, i), 0, INT32_MAX, &id, ret_error);
                if (r < 0)
                        return r;
                ids[i] = (int32_t) id;
        }
        *ret = ids;
        *ret_n = n;
        return 0;
}

static void write_token_ids(FrameWriter *w, const int32_t *ids, size_t n) {
        frame_write_array(w, n);
        for (size_t i = 0; i < n; i++)
                frame_write_i64(w, ids[i]);
}

/* An array of strings as a strv in the frame's zone; NULL when empty. */
static int read_strv(const Frame *f, const FrameValue *v, const char *what, size_t max_n, size_t min_len,
                     size_t max_len, char ***ret, char **ret_error) {
        char **l = NULL;
        size_t n;
        int r;

        r = frame_read_array(v, what, 0, max_n, &n, ret_error);
        if (r < 0)
                return r;
        if (n > 0) {
                l = frame_alloc(f, n + 1, sizeof *l);
                if (!l)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                char name[ELEM_MAX];
                const char *s;
                r = frame_read_str(frame_array_at(v, i), elemname(name, what, i), min_len, max_len, &s, ret_error);
                if (r < 0)
                        return r;
                l[i] = (char *) s;      /* a copy in the zone: the frame's, not the input's */
        }
        if (l)
                l[n] = NULL;
        *ret = l;
        return 0;
}

static void write_strv(FrameWriter *w, char *const *l) {
        size_t n = 0;
        while (l && l[n])
                n++;
        frame_write_array(w, n);
        for (size_t i = 0; i < n; i++)
                frame_write_str(w, l[i]);
}

/* [id, addr, incarnation, state, meta_gen] */
#define UPDATE_FIELDS 5

static int read_update(const FrameValue *v, const char *what, SwimUpdate *ret, char **ret_error) {
        char name[WHAT_MAX];
        SwimUpdate u = {};
        const char *addr;
        uint64_t state;
        size_t n;
        int r;

        if ((r = frame_read_array(v, what, UPDATE_FIELDS, SIZE_MAX, &n, ret_error)) < 0 ||
            (r = read_id(frame_array_at(v, 0), subname(name, what, "id"), &u.id, ret_error)) < 0 ||
            (r = frame_read_str(frame_array_at(v, 1), subname(name, what, "addr"), 1, PROTO_ADDR_MAX, &addr,
                                ret_error)) < 0 ||
            (r = frame_read_u32(frame_array_at(v, 2), subname(name, what, "incarnation"), UINT32_MAX,
                                &u.incarnation, ret_error)) < 0 ||
            (r = frame_read_u64(frame_array_at(v, 3), subname(name, what, "state"), _SWIM_STATE_MAX - 1, &state,
                                ret_error)) < 0 ||
            (r = frame_read_u64(frame_array_at(v, 4), subname(name, what, "meta_gen"), UINT64_MAX, &u.meta_gen,
                                ret_error)) < 0)
                return r;
        strcpy(u.addr, addr);   /* checked to fit */
        u.state = (SwimState) state;
        *ret = u;
        return 0;
}

static void write_update(FrameWriter *w, const SwimUpdate *u) {
        frame_write_array(w, UPDATE_FIELDS);
        write_id(w, &u->id);
        frame_write_str(w, u->addr);
        frame_write_u64(w, u->incarnation);
        frame_write_u64(w, u->state);
        frame_write_u64(w, u->meta_gen);
}

/* ---- hello ---------------------------------------------------------------- */

int proto_pack_hello(FrameBuffer *b, const ProtoHello *m) {
        FrameWriter w;

        frame_begin(&w, b, proto_type_to_string(PROTO_HELLO), 6);
        frame_write_key(&w, "node");
        write_id(&w, &m->node);
        frame_write_key(&w, "name");
        frame_write_str(&w, m->name);
        frame_write_key(&w, "addr");
        frame_write_str(&w, m->addr);
        frame_write_key(&w, "cluster");
        frame_write_str(&w, m->cluster);
        frame_write_key(&w, "incarnation");
        frame_write_u64(&w, m->incarnation);
        frame_write_key(&w, "version");
        frame_write_str(&w, m->version);
        return frame_end(&w);
}

int proto_unpack_hello(const Frame *f, ProtoHello *ret, char **ret_error) {
        const FrameValue *root = frame_root(f);
        ProtoHello m = {};
        int r;

        if ((r = read_id(frame_map_get(root, "node"), "node", &m.node, ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "name"), "name", 1, PROTO_NAME_MAX, &m.name, ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "addr"), "addr", 1, PROTO_ADDR_MAX, &m.addr, ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "cluster"), "cluster", 1, PROTO_NAME_MAX, &m.cluster,
                                ret_error)) < 0 ||
            (r = frame_read_u32(frame_map_get(root, "incarnation"), "incarnation", UINT32_MAX, &m.incarnation,
                                ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "version"), "version", 0, PROTO_NAME_MAX, &m.version,
                                ret_error)) < 0)
                return r;
        *ret = m;
        return 0;
}

/* ---- swim ----------------------------------------------------------------- */

int proto_pack_swim(FrameBuffer *b, const SwimMsg *m) {
        FrameWriter w;

        assert(m->n_updates <= SWIM_MAX_UPDATES);
        frame_begin(&w, b, proto_type_to_string(PROTO_SWIM), 4);
        frame_write_key(&w, "kind");
        frame_write_u64(&w, m->type);
        frame_write_key(&w, "seq");
        frame_write_u64(&w, m->seq);
        frame_write_key(&w, "target");
        write_id(&w, &m->target);
        frame_write_key(&w, "updates");
        frame_write_array(&w, m->n_updates);
        for (size_t i = 0; i < m->n_updates; i++)
                write_update(&w, &m->updates[i]);
        return frame_end(&w);
}

int proto_unpack_swim(const Frame *f, SwimMsg *ret, char **ret_error) {
        const FrameValue *root = frame_root(f), *updates;
        SwimMsg m = {};
        uint64_t kind;
        int r;

        if ((r = frame_read_u64(frame_map_get(root, "kind"), "kind", _SWIM_MSG_MAX - 1, &kind, ret_error)) < 0 ||
            (r = frame_read_u32(frame_map_get(root, "seq"), "seq", UINT32_MAX, &m.seq, ret_error)) < 0 ||
            (r = read_id(frame_map_get(root, "target"), "target", &m.target, ret_error)) < 0)
                return r;
        m.type = (SwimMsgType) kind;

        updates = frame_map_get(root, "updates");
        r = frame_read_array(updates, "updates", 0, SWIM_MAX_UPDATES, &m.n_updates, ret_error);
        if (r < 0)
                return r;
        for (size_t i = 0; i < m.n_updates; i++) {
                char name[ELEM_MAX];
                r = read_update(frame_array_at(updates, i), elemname(name, "updates", i), &m.updates[i], ret_error);
                if (r < 0)
                        return r;
        }
        *ret = m;
        return 0;
}

/* ---- join, join-ok, join-err ---------------------------------------------- */

int proto_pack_join(FrameBuffer *b, const ProtoJoin *m) {
        FrameWriter w;

        frame_begin(&w, b, proto_type_to_string(PROTO_JOIN), 6);
        frame_write_key(&w, "token_id");
        frame_write_bin(&w, m->token_id, sizeof m->token_id);
        frame_write_key(&w, "csr");
        frame_write_bin(&w, m->csr, m->csr_size);
        frame_write_key(&w, "proof");
        frame_write_bin(&w, m->proof, sizeof m->proof);
        frame_write_key(&w, "name");
        frame_write_str(&w, m->name);
        frame_write_key(&w, "addr");
        frame_write_str(&w, m->addr);
        frame_write_key(&w, "node");
        write_id(&w, &m->node);
        return frame_end(&w);
}

int proto_unpack_join(const Frame *f, ProtoJoin *ret, char **ret_error) {
        const FrameValue *root = frame_root(f);
        ProtoJoin m = {};
        int r;

        if ((r = frame_read_bin_exact(frame_map_get(root, "token_id"), "token_id", m.token_id, sizeof m.token_id,
                                      ret_error)) < 0 ||
            (r = frame_read_bin(frame_map_get(root, "csr"), "csr", 1, PROTO_DER_MAX, &m.csr, &m.csr_size,
                                ret_error)) < 0 ||
            (r = frame_read_bin_exact(frame_map_get(root, "proof"), "proof", m.proof, sizeof m.proof,
                                      ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "name"), "name", 1, PROTO_NAME_MAX, &m.name, ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "addr"), "addr", 1, PROTO_ADDR_MAX, &m.addr, ret_error)) < 0 ||
            (r = read_id(frame_map_get(root, "node"), "node", &m.node, ret_error)) < 0)
                return r;
        *ret = m;
        return 0;
}

int proto_pack_join_ok(FrameBuffer *b, const ProtoJoinOk *m) {
        FrameWriter w;

        frame_begin(&w, b, proto_type_to_string(PROTO_JOIN_OK), 4);
        frame_write_key(&w, "cert");
        frame_write_bin(&w, m->cert, m->cert_size);
        frame_write_key(&w, "ca");
        frame_write_bin(&w, m->ca, m->ca_size);
        frame_write_key(&w, "cluster");
        frame_write_str(&w, m->cluster);
        frame_write_key(&w, "members");
        frame_write_array(&w, m->n_members);
        for (size_t i = 0; i < m->n_members; i++)
                write_update(&w, &m->members[i]);
        return frame_end(&w);
}

int proto_unpack_join_ok(const Frame *f, ProtoJoinOk *ret, char **ret_error) {
        const FrameValue *root = frame_root(f), *members;
        SwimUpdate *l = NULL;
        ProtoJoinOk m = {};
        int r;

        if ((r = frame_read_bin(frame_map_get(root, "cert"), "cert", 1, PROTO_DER_MAX, &m.cert, &m.cert_size,
                                ret_error)) < 0 ||
            (r = frame_read_bin(frame_map_get(root, "ca"), "ca", 1, PROTO_DER_MAX, &m.ca, &m.ca_size,
                                ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "cluster"), "cluster", 1, PROTO_NAME_MAX, &m.cluster,
                                ret_error)) < 0)
                return r;

        members = frame_map_get(root, "members");
        r = frame_read_array(members, "members", 0, PROTO_MEMBERS_MAX, &m.n_members, ret_error);
        if (r < 0)
                return r;
        if (m.n_members > 0) {
                l = frame_alloc(f, m.n_members, sizeof *l);
                if (!l)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < m.n_members; i++) {
                char name[ELEM_MAX];
                r = read_update(frame_array_at(members, i), elemname(name, "members", i), &l[i], ret_error);
                if (r < 0)
                        return r;
        }
        m.members = l;
        *ret = m;
        return 0;
}

int proto_pack_join_err(FrameBuffer *b, const ProtoJoinErr *m) {
        FrameWriter w;

        frame_begin(&w, b, proto_type_to_string(PROTO_JOIN_ERR), 1);
        frame_write_key(&w, "error");
        frame_write_str(&w, m->error);
        return frame_end(&w);
}

int proto_unpack_join_err(const Frame *f, ProtoJoinErr *ret, char **ret_error) {
        ProtoJoinErr m = {};
        int r;

        r = frame_read_str(frame_map_get(frame_root(f), "error"), "error", 1, PROTO_ERROR_MAX, &m.error, ret_error);
        if (r < 0)
                return r;
        *ret = m;
        return 0;
}

/* ---- state-req, leave ----------------------------------------------------- */

int proto_pack_state_req(FrameBuffer *b) {
        FrameWriter w;

        frame_begin(&w, b, proto_type_to_string(PROTO_STATE_REQ), 0);
        return frame_end(&w);
}

int proto_pack_leave(FrameBuffer *b) {
        FrameWriter w;

        frame_begin(&w, b, proto_type_to_string(PROTO_LEAVE), 0);
        return frame_end(&w);
}

/* ---- state ---------------------------------------------------------------- */

/* [name, type, total_bytes, free_bytes] */
#define DEVICE_FIELDS 4
/* [name, arch, params, quant, device_bytes, state] */
#define MODEL_FIELDS 6

static int read_device(const FrameValue *v, const char *what, ProtoDevice *ret, char **ret_error) {
        char name[WHAT_MAX];
        ProtoDevice d = {};
        size_t n;
        int r;

        if ((r = frame_read_array(v, what, DEVICE_FIELDS, SIZE_MAX, &n, ret_error)) < 0 ||
            (r = frame_read_str(frame_array_at(v, 0), subname(name, what, "name"), 1, PROTO_NAME_MAX, &d.name,
                                ret_error)) < 0 ||
            (r = frame_read_str(frame_array_at(v, 1), subname(name, what, "type"), 1, PROTO_NAME_MAX, &d.type,
                                ret_error)) < 0 ||
            (r = frame_read_u64(frame_array_at(v, 2), subname(name, what, "total_bytes"), UINT64_MAX,
                                &d.total_bytes, ret_error)) < 0 ||
            (r = frame_read_u64(frame_array_at(v, 3), subname(name, what, "free_bytes"), UINT64_MAX, &d.free_bytes,
                                ret_error)) < 0)
                return r;
        *ret = d;
        return 0;
}

static int read_model(const FrameValue *v, const char *what, ProtoModel *ret, char **ret_error) {
        char name[WHAT_MAX];
        ProtoModel mo = {};
        const char *state;
        size_t n;
        int r;

        if ((r = frame_read_array(v, what, MODEL_FIELDS, SIZE_MAX, &n, ret_error)) < 0 ||
            (r = frame_read_str(frame_array_at(v, 0), subname(name, what, "name"), 1, PROTO_NAME_MAX, &mo.name,
                                ret_error)) < 0 ||
            (r = frame_read_str(frame_array_at(v, 1), subname(name, what, "arch"), 1, PROTO_NAME_MAX, &mo.arch,
                                ret_error)) < 0 ||
            (r = frame_read_u64(frame_array_at(v, 2), subname(name, what, "params"), UINT64_MAX, &mo.params,
                                ret_error)) < 0 ||
            (r = frame_read_str(frame_array_at(v, 3), subname(name, what, "quant"), 1, PROTO_NAME_MAX, &mo.quant,
                                ret_error)) < 0 ||
            (r = frame_read_u64(frame_array_at(v, 4), subname(name, what, "device_bytes"), UINT64_MAX,
                                &mo.device_bytes, ret_error)) < 0 ||
            (r = frame_read_str(frame_array_at(v, 5), subname(name, what, "state"), 1, PROTO_NAME_MAX, &state,
                                ret_error)) < 0)
                return r;
        mo.state = proto_model_state_from_string(state);
        if (mo.state < 0) {
                if (ret_error && asprintf(ret_error, "field '%s' is '%s', expected 'ready' or 'loading'",
                                          subname(name, what, "state"), state) < 0)
                        *ret_error = NULL;
                return -ERANGE;
        }
        *ret = mo;
        return 0;
}

int proto_pack_state(FrameBuffer *b, const ProtoState *m) {
        FrameWriter w;

        frame_begin(&w, b, proto_type_to_string(PROTO_STATE), 11);
        frame_write_key(&w, "node");
        write_id(&w, &m->node);
        frame_write_key(&w, "gen");
        frame_write_u64(&w, m->gen);
        frame_write_key(&w, "name");
        frame_write_str(&w, m->name);
        frame_write_key(&w, "version");
        frame_write_str(&w, m->version);
        frame_write_key(&w, "addr");
        frame_write_str(&w, m->addr);
        frame_write_key(&w, "queue");
        frame_write_u64(&w, m->queue);
        frame_write_key(&w, "tps");
        frame_write_double(&w, m->tps);
        frame_write_key(&w, "capacity");
        frame_write_double(&w, m->capacity);

        frame_write_key(&w, "devices");
        frame_write_array(&w, m->n_devices);
        for (size_t i = 0; i < m->n_devices; i++) {
                const ProtoDevice *d = &m->devices[i];
                frame_write_array(&w, DEVICE_FIELDS);
                frame_write_str(&w, d->name);
                frame_write_str(&w, d->type);
                frame_write_u64(&w, d->total_bytes);
                frame_write_u64(&w, d->free_bytes);
        }

        frame_write_key(&w, "models");
        frame_write_array(&w, m->n_models);
        for (size_t i = 0; i < m->n_models; i++) {
                const ProtoModel *mo = &m->models[i];
                frame_write_array(&w, MODEL_FIELDS);
                frame_write_str(&w, mo->name);
                frame_write_str(&w, mo->arch);
                frame_write_u64(&w, mo->params);
                frame_write_str(&w, mo->quant);
                frame_write_u64(&w, mo->device_bytes);
                frame_write_str(&w, proto_model_state_to_string(mo->state));
        }

        frame_write_key(&w, "disk_models");
        write_strv(&w, m->disk_models);
        return frame_end(&w);
}

int proto_unpack_state(const Frame *f, ProtoState *ret, char **ret_error) {
        const FrameValue *root = frame_root(f), *devices, *models;
        ProtoDevice *dl = NULL;
        ProtoModel *ml = NULL;
        ProtoState m = {};
        int r;

        if ((r = read_id(frame_map_get(root, "node"), "node", &m.node, ret_error)) < 0 ||
            (r = frame_read_u64(frame_map_get(root, "gen"), "gen", UINT64_MAX, &m.gen, ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "name"), "name", 1, PROTO_NAME_MAX, &m.name, ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "version"), "version", 0, PROTO_NAME_MAX, &m.version,
                                ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "addr"), "addr", 1, PROTO_ADDR_MAX, &m.addr, ret_error)) < 0 ||
            (r = frame_read_u32(frame_map_get(root, "queue"), "queue", UINT32_MAX, &m.queue, ret_error)) < 0 ||
            (r = frame_read_double(frame_map_get(root, "tps"), "tps", 0, DBL_MAX, &m.tps, ret_error)) < 0 ||
            (r = frame_read_double(frame_map_get(root, "capacity"), "capacity", 0, DBL_MAX, &m.capacity,
                                   ret_error)) < 0)
                return r;

        devices = frame_map_get(root, "devices");
        r = frame_read_array(devices, "devices", 0, PROTO_DEVICES_MAX, &m.n_devices, ret_error);
        if (r < 0)
                return r;
        if (m.n_devices > 0) {
                dl = frame_alloc(f, m.n_devices, sizeof *dl);
                if (!dl)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < m.n_devices; i++) {
                char name[ELEM_MAX];
                r = read_device(frame_array_at(devices, i), elemname(name, "devices", i), &dl[i], ret_error);
                if (r < 0)
                        return r;
        }
        m.devices = dl;

        models = frame_map_get(root, "models");
        r = frame_read_array(models, "models", 0, PROTO_MODELS_MAX, &m.n_models, ret_error);
        if (r < 0)
                return r;
        if (m.n_models > 0) {
                ml = frame_alloc(f, m.n_models, sizeof *ml);
                if (!ml)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < m.n_models; i++) {
                char name[ELEM_MAX];
                r = read_model(frame_array_at(models, i), elemname(name, "models", i), &ml[i], ret_error);
                if (r < 0)
                        return r;
        }
        m.models = ml;

        r = read_strv(f, frame_map_get(root, "disk_models"), "disk_models", PROTO_DISK_MODELS_MAX, 1, PROTO_NAME_MAX,
                      &m.disk_models, ret_error);
        if (r < 0)
                return r;
        *ret = m;
        return 0;
}

/* ---- job ------------------------------------------------------------------ */

static void write_options(FrameWriter *w, const ProtoJobOptions *o) {
        frame_write_map(w, 9 + o->have_add_bos + !!o->chat_template);
        frame_write_key(w, "max_tokens");
        frame_write_u64(w, o->max_tokens);
        frame_write_key(w, "temperature");
        frame_write_double(w, o->sampler.temperature);
        frame_write_key(w, "top_k");
        frame_write_i64(w, o->sampler.top_k);
        frame_write_key(w, "top_p");
        frame_write_double(w, o->sampler.top_p);
        frame_write_key(w, "min_p");
        frame_write_double(w, o->sampler.min_p);
        frame_write_key(w, "repeat_penalty");
        frame_write_double(w, o->sampler.repeat_penalty);
        frame_write_key(w, "repeat_last_n");
        frame_write_u64(w, o->sampler.repeat_last_n);
        frame_write_key(w, "seed");
        frame_write_u64(w, o->sampler.seed);
        frame_write_key(w, "stop");
        write_strv(w, o->stop);
        if (o->have_add_bos) {
                frame_write_key(w, "add_bos");
                frame_write_bool(w, o->add_bos);
        }
        if (o->chat_template) {
                frame_write_key(w, "template");
                frame_write_str(w, o->chat_template);
        }
}

/* A float of the sampler: read as double, in float's range so the conversion is defined. */
static int read_float(const FrameValue *map, const char *key, float *ret, char **ret_error) {
        double d;
        int r = frame_read_double(frame_map_get(map, key), key, -FLT_MAX, FLT_MAX, &d, ret_error);
        if (r < 0)
                return r;
        *ret = (float) d;
        return 0;
}

static int read_options(const Frame *f, const FrameValue *v, ProtoJobOptions *ret, char **ret_error) {
        ProtoJobOptions o = {};
        const FrameValue *x;
        int64_t top_k;
        int r;

        if ((r = frame_read_map(v, "options", ret_error)) < 0 ||
            (r = frame_read_u32(frame_map_get(v, "max_tokens"), "max_tokens", UINT32_MAX, &o.max_tokens,
                                ret_error)) < 0 ||
            (r = read_float(v, "temperature", &o.sampler.temperature, ret_error)) < 0 ||
            (r = frame_read_i64(frame_map_get(v, "top_k"), "top_k", INT32_MIN, INT32_MAX, &top_k, ret_error)) < 0 ||
            (r = read_float(v, "top_p", &o.sampler.top_p, ret_error)) < 0 ||
            (r = read_float(v, "min_p", &o.sampler.min_p, ret_error)) < 0 ||
            (r = read_float(v, "repeat_penalty", &o.sampler.repeat_penalty, ret_error)) < 0 ||
            (r = frame_read_u32(frame_map_get(v, "repeat_last_n"), "repeat_last_n", UINT32_MAX,
                                &o.sampler.repeat_last_n, ret_error)) < 0 ||
            (r = frame_read_u64(frame_map_get(v, "seed"), "seed", UINT64_MAX, &o.sampler.seed, ret_error)) < 0 ||
            (r = read_strv(f, frame_map_get(v, "stop"), "stop", PROTO_STOP_MAX, 1, PROTO_STOP_BYTES_MAX, &o.stop,
                           ret_error)) < 0)
                return r;
        o.sampler.top_k = (int32_t) top_k;
        if (sampler_params_validate(&o.sampler, ret_error) < 0)
                return -ERANGE;

        x = frame_map_get(v, "add_bos");
        if (x) {
                r = frame_read_bool(x, "add_bos", &o.add_bos, ret_error);
                if (r < 0)
                        return r;
                o.have_add_bos = true;
        }
        x = frame_map_get(v, "template");
        if (x) {
                r = frame_read_str(x, "template", 1, PROTO_TEMPLATE_MAX, &o.chat_template, ret_error);
                if (r < 0)
                        return r;
        }
        *ret = o;
        return 0;
}

int proto_pack_job(FrameBuffer *b, const ProtoJob *m) {
        FrameWriter w;

        frame_begin(&w, b, proto_type_to_string(PROTO_JOB), 7);
        frame_write_key(&w, "job");
        frame_write_u64(&w, m->job);
        frame_write_key(&w, "model");
        frame_write_str(&w, m->model);
        frame_write_key(&w, "chat");
        frame_write_bool(&w, m->chat);
        if (m->chat) {
                frame_write_key(&w, "messages");
                frame_write_array(&w, m->n_messages);
                for (size_t i = 0; i < m->n_messages; i++) {
                        frame_write_array(&w, 2);
                        frame_write_str(&w, m->messages[i].role);
                        frame_write_str(&w, m->messages[i].content);
                }
        } else {
                frame_write_key(&w, "prompt");
                frame_write_str(&w, m->prompt);
        }
        frame_write_key(&w, "options");
        write_options(&w, &m->options);
        frame_write_key(&w, "resume");
        write_token_ids(&w, m->resume, m->n_resume);
        frame_write_key(&w, "resume_bytes");
        frame_write_u64(&w, m->resume_bytes);
        return frame_end(&w);
}

static int read_messages(const Frame *f, const FrameValue *v, const ProtoChatMessage **ret, size_t *ret_n,
                         char **ret_error) {
        ProtoChatMessage *l;
        size_t n;
        int r;

        r = frame_read_array(v, "messages", 1, PROTO_MESSAGES_MAX, &n, ret_error);
        if (r < 0)
                return r;
        l = frame_alloc(f, n, sizeof *l);
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const FrameValue *e = frame_array_at(v, i);
                char what[ELEM_MAX], name[WHAT_MAX];
                size_t k;

                elemname(what, "messages", i);
                if ((r = frame_read_array(e, what, 2, SIZE_MAX, &k, ret_error)) < 0 ||
                    (r = frame_read_str(frame_array_at(e, 0), subname(name, what, "role"), 1, PROTO_ROLE_MAX,
                                        &l[i].role, ret_error)) < 0 ||
                    (r = frame_read_str(frame_array_at(e, 1), subname(name, what, "content"), 0, FRAME_MAX,
                                        &l[i].content, ret_error)) < 0)
                        return r;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

int proto_unpack_job(const Frame *f, ProtoJob *ret, char **ret_error) {
        const FrameValue *root = frame_root(f);
        ProtoJob m = {};
        int r;

        if ((r = frame_read_u32(frame_map_get(root, "job"), "job", UINT32_MAX, &m.job, ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "model"), "model", 1, PROTO_NAME_MAX, &m.model, ret_error)) < 0 ||
            (r = frame_read_bool(frame_map_get(root, "chat"), "chat", &m.chat, ret_error)) < 0)
                return r;
        if (m.chat)
                r = read_messages(f, frame_map_get(root, "messages"), &m.messages, &m.n_messages, ret_error);
        else
                r = frame_read_str(frame_map_get(root, "prompt"), "prompt", 0, FRAME_MAX, &m.prompt, ret_error);
        if (r < 0)
                return r;
        if ((r = read_options(f, frame_map_get(root, "options"), &m.options, ret_error)) < 0 ||
            (r = read_token_ids(f, frame_map_get(root, "resume"), "resume", PROTO_RESUME_MAX, &m.resume, &m.n_resume,
                                ret_error)) < 0)
                return r;
        /* Optional: a job with nothing to resume may leave it out. */
        const FrameValue *rb = frame_map_get(root, "resume_bytes");
        if (rb && (r = frame_read_u64(rb, "resume_bytes", FRAME_MAX, &m.resume_bytes, ret_error)) < 0)
                return r;
        *ret = m;
        return 0;
}

/* ---- job-started, piece, job-end, job-cancel ------------------------------ */

int proto_pack_job_started(FrameBuffer *b, const ProtoJobStarted *m) {
        FrameWriter w;

        frame_begin(&w, b, proto_type_to_string(PROTO_JOB_STARTED), 2);
        frame_write_key(&w, "job");
        frame_write_u64(&w, m->job);
        frame_write_key(&w, "prompt_tokens");
        frame_write_u64(&w, m->prompt_tokens);
        return frame_end(&w);
}

int proto_unpack_job_started(const Frame *f, ProtoJobStarted *ret, char **ret_error) {
        const FrameValue *root = frame_root(f);
        ProtoJobStarted m = {};
        int r;

        if ((r = frame_read_u32(frame_map_get(root, "job"), "job", UINT32_MAX, &m.job, ret_error)) < 0 ||
            (r = frame_read_u32(frame_map_get(root, "prompt_tokens"), "prompt_tokens", UINT32_MAX, &m.prompt_tokens,
                                ret_error)) < 0)
                return r;
        *ret = m;
        return 0;
}

int proto_pack_piece(FrameBuffer *b, const ProtoPiece *m) {
        FrameWriter w;

        frame_begin(&w, b, proto_type_to_string(PROTO_PIECE), 3);
        frame_write_key(&w, "job");
        frame_write_u64(&w, m->job);
        frame_write_key(&w, "text");
        frame_write_str(&w, m->text);
        frame_write_key(&w, "tokens");
        write_token_ids(&w, m->tokens, m->n_tokens);
        return frame_end(&w);
}

int proto_unpack_piece(const Frame *f, ProtoPiece *ret, char **ret_error) {
        const FrameValue *root = frame_root(f);
        ProtoPiece m = {};
        int r;

        if ((r = frame_read_u32(frame_map_get(root, "job"), "job", UINT32_MAX, &m.job, ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "text"), "text", 0, FRAME_MAX, &m.text, ret_error)) < 0 ||
            (r = read_token_ids(f, frame_map_get(root, "tokens"), "tokens", PROTO_PIECE_TOKENS_MAX, &m.tokens,
                                &m.n_tokens, ret_error)) < 0)
                return r;
        *ret = m;
        return 0;
}

int proto_pack_job_end(FrameBuffer *b, const ProtoJobEnd *m) {
        FrameWriter w;

        frame_begin(&w, b, proto_type_to_string(PROTO_JOB_END), 7);
        frame_write_key(&w, "job");
        frame_write_u64(&w, m->job);
        frame_write_key(&w, "reason");
        frame_write_str(&w, m->reason);
        frame_write_key(&w, "error");
        frame_write_str(&w, m->error);
        frame_write_key(&w, "prompt_tokens");
        frame_write_u64(&w, m->prompt_tokens);
        frame_write_key(&w, "generated");
        frame_write_u64(&w, m->generated);
        frame_write_key(&w, "prompt_usec");
        frame_write_u64(&w, m->prompt_usec);
        frame_write_key(&w, "generate_usec");
        frame_write_u64(&w, m->generate_usec);
        return frame_end(&w);
}

int proto_unpack_job_end(const Frame *f, ProtoJobEnd *ret, char **ret_error) {
        const FrameValue *root = frame_root(f);
        ProtoJobEnd m = {};
        int r;

        if ((r = frame_read_u32(frame_map_get(root, "job"), "job", UINT32_MAX, &m.job, ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "reason"), "reason", 1, PROTO_REASON_MAX, &m.reason,
                                ret_error)) < 0 ||
            (r = frame_read_str(frame_map_get(root, "error"), "error", 0, PROTO_ERROR_MAX, &m.error, ret_error)) < 0 ||
            (r = frame_read_u32(frame_map_get(root, "prompt_tokens"), "prompt_tokens", UINT32_MAX, &m.prompt_tokens,
                                ret_error)) < 0 ||
            (r = frame_read_u32(frame_map_get(root, "generated"), "generated", UINT32_MAX, &m.generated,
                                ret_error)) < 0 ||
            (r = frame_read_u64(frame_map_get(root, "prompt_usec"), "prompt_usec", UINT64_MAX, &m.prompt_usec,
                                ret_error)) < 0 ||
            (r = frame_read_u64(frame_map_get(root, "generate_usec"), "generate_usec", UINT64_MAX, &m.generate_usec,
                                ret_error)) < 0)
                return r;
        *ret = m;
        return 0;
}

int proto_pack_job_cancel(FrameBuffer *b, const ProtoJobCancel *m) {
        FrameWriter w;

        frame_begin(&w, b, proto_type_to_string(PROTO_JOB_CANCEL), 1);
        frame_write_key(&w, "job");
        frame_write_u64(&w, m->job);
        return frame_end(&w);
}

int proto_unpack_job_cancel(const Frame *f, ProtoJobCancel *ret, char **ret_error) {
        ProtoJobCancel m = {};
        int r;

        r = frame_read_u32(frame_map_get(frame_root(f), "job"), "job", UINT32_MAX, &m.job, ret_error);
        if (r < 0)
                return r;
        *ret = m;
        return 0;
}
