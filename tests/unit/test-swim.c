/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "swim.h"

#define SEC 1000000ULL
#define MSEC 1000ULL
#define NODES_MAX 16u

/* ---- a small network in one process: a fake clock, per-link loss, fixed latency ---- */

typedef struct Event {
        uint64_t time;
        unsigned observer;              /* the node whose callback fired */
        SwimUpdate member;
        SwimState old_state;
        bool is_new, meta;
} Event;

typedef struct InFlight {
        uint64_t time;
        unsigned from, to;
        SwimMsg msg;
} InFlight;

typedef struct Net Net;

typedef struct Node {
        Net *net;
        unsigned index;
        Swim *swim;
        SwimId id;
        char addr[32];
        bool up;
} Node;

struct Net {
        Node nodes[NODES_MAX];
        unsigned n;
        uint64_t now, latency;
        bool broken[NODES_MAX][NODES_MAX];      /* [from][to]: every message dropped */
        InFlight *flight;
        size_t n_flight, flight_size;
        Event *events;
        size_t n_events, events_size;
        unsigned sent[NODES_MAX][_SWIM_MSG_MAX];
        unsigned sent_to[NODES_MAX][NODES_MAX];
        uint64_t trace;                         /* hash of every message sent, in order */
};

static SwimId make_id(unsigned i) {
        SwimId id;
        for (unsigned b = 0; b < sizeof id.bytes; b++)
                id.bytes[b] = (uint8_t) (0x5a ^ (b * 37));
        id.bytes[0] = (uint8_t) (i + 1);
        return id;
}

static int node_of(const Net *net, const SwimId *id) {
        for (unsigned i = 0; i < net->n; i++)
                if (memcmp(&net->nodes[i].id, id, sizeof *id) == 0)
                        return (int) i;
        return -1;
}

static void trace_bytes(Net *net, const void *p, size_t n) {
        const uint8_t *b = p;
        for (size_t i = 0; i < n; i++)
                net->trace = (net->trace ^ b[i]) * UINT64_C(0x100000001b3);
}

static void on_send(void *userdata, const SwimId *to, const char *to_addr, const SwimMsg *msg) {
        Node *node = userdata;
        Net *net = node->net;
        int dst = node_of(net, to);
        InFlight *f;

        assert_non_null(to_addr);
        assert_true(msg->n_updates >= 1 && msg->n_updates <= SWIM_MAX_UPDATES);
        /* Every message starts with the sender's own entry. */
        assert_memory_equal(&msg->updates[0].id, &node->id, sizeof node->id);
        net->sent[node->index][msg->type]++;
        trace_bytes(net, &net->now, sizeof net->now);
        trace_bytes(net, &node->index, sizeof node->index);
        trace_bytes(net, &msg->type, sizeof msg->type);
        trace_bytes(net, &msg->seq, sizeof msg->seq);
        trace_bytes(net, to, sizeof *to);
        if (dst < 0)
                return;
        net->sent_to[node->index][dst]++;
        if (net->broken[node->index][dst])
                return;
        if (net->n_flight == net->flight_size) {
                net->flight_size = net->flight_size ? net->flight_size * 2 : 64;
                net->flight = realloc(net->flight, net->flight_size * sizeof *net->flight);
                assert_non_null(net->flight);
        }
        f = &net->flight[net->n_flight++];
        *f = (InFlight) {
                .time = net->now + net->latency,
                .from = node->index,
                .to = (unsigned) dst,
                .msg = *msg,
        };
}

static void record(Node *node, const SwimUpdate *member, SwimState old_state, bool is_new, bool meta) {
        Net *net = node->net;

        if (net->n_events == net->events_size) {
                net->events_size = net->events_size ? net->events_size * 2 : 64;
                net->events = realloc(net->events, net->events_size * sizeof *net->events);
                assert_non_null(net->events);
        }
        net->events[net->n_events++] = (Event) {
                .time = net->now,
                .observer = node->index,
                .member = *member,
                .old_state = old_state,
                .is_new = is_new,
                .meta = meta,
        };
}

static void on_member_changed(void *userdata, const SwimUpdate *member, SwimState old_state, bool is_new) {
        Node *node = userdata;

        /* Callbacks may look, not touch. */
        assert_non_null(swim_find(node->swim, &member->id));
        record(node, member, old_state, is_new, false);
}

static void on_meta_changed(void *userdata, const SwimId *id, uint64_t meta_gen) {
        Node *node = userdata;
        SwimUpdate u = { .id = *id, .meta_gen = meta_gen };
        record(node, &u, SWIM_ALIVE, false, true);
}

static const SwimCallbacks callbacks = {
        .send = on_send,
        .member_changed = on_member_changed,
        .meta_changed = on_meta_changed,
};

static SwimConfig test_config(void) {
        SwimConfig c;
        swim_config_default(&c);
        c.dead_reap_usec = 20 * SEC;
        return c;
}

static void node_start(Net *net, unsigned i, const SwimConfig *config, uint32_t incarnation) {
        Node *node = &net->nodes[i];

        *node = (Node) {
                .net = net,
                .index = i,
                .id = make_id(i),
                .up = true,
        };
        snprintf(node->addr, sizeof node->addr, "[fd00::%u]:7420", i + 1);
        assert_int_equal(swim_new(config, &node->id, node->addr, incarnation, 1000 + i, &callbacks, node,
                                  &node->swim), 0);
}

static SwimUpdate node_update(const Net *net, unsigned i) {
        SwimUpdate u = {
                .id = net->nodes[i].id,
                .state = SWIM_ALIVE,
        };
        strcpy(u.addr, net->nodes[i].addr);
        return u;
}

/* n nodes that know each other, as after joining. */
static Net *net_new(unsigned n, const SwimConfig *config) {
        Net *net = calloc(1, sizeof *net);
        SwimUpdate all[NODES_MAX];

        assert_non_null(net);
        assert_true(n <= NODES_MAX);
        net->n = n;
        net->latency = 5 * MSEC;
        for (unsigned i = 0; i < n; i++)
                node_start(net, i, config, 0);
        for (unsigned i = 0; i < n; i++)
                all[i] = node_update(net, i);
        for (unsigned i = 0; i < n; i++)
                assert_int_equal(swim_merge(net->nodes[i].swim, all, n, 0), (int) n - 1);
        net->n_events = 0;
        return net;
}

static void net_free(Net *net) {
        for (unsigned i = 0; i < net->n; i++)
                swim_free(net->nodes[i].swim);
        free(net->flight);
        free(net->events);
        free(net);
}

static void net_run(Net *net, uint64_t until) {
        for (;;) {
                uint64_t t = UINT64_MAX;
                size_t best = SIZE_MAX;

                for (size_t i = 0; i < net->n_flight; i++)
                        if (net->flight[i].time < t) {
                                t = net->flight[i].time;
                                best = i;
                        }
                for (unsigned i = 0; i < net->n; i++)
                        if (net->nodes[i].up)
                                t = MIN(t, MAX(swim_next_deadline(net->nodes[i].swim), net->now));
                if (t > until)
                        break;
                net->now = t;
                if (best != SIZE_MAX && net->flight[best].time == t) {
                        InFlight f = net->flight[best];
                        /* Keep the order of the rest: equal times are delivered first sent, first. */
                        memmove(&net->flight[best], &net->flight[best + 1],
                                (net->n_flight - best - 1) * sizeof *net->flight);
                        net->n_flight--;
                        if (net->nodes[f.to].up)
                                swim_receive(net->nodes[f.to].swim, &net->nodes[f.from].id, &f.msg, net->now);
                        continue;
                }
                for (unsigned i = 0; i < net->n; i++)
                        if (net->nodes[i].up && swim_next_deadline(net->nodes[i].swim) <= net->now)
                                swim_tick(net->nodes[i].swim, net->now);
        }
        net->now = until;
}

static void isolate(Net *net, unsigned i, bool broken) {
        for (unsigned j = 0; j < net->n; j++) {
                net->broken[i][j] = broken;
                net->broken[j][i] = broken;
        }
}

/* The first event at or after `since` where observer (any if -1) saw subject enter state; UINT64_MAX if none. */
static uint64_t first_event(const Net *net, int observer, unsigned subject, SwimState state, uint64_t since) {
        for (size_t i = 0; i < net->n_events; i++) {
                const Event *e = &net->events[i];
                if (e->meta || e->time < since || e->member.state != state ||
                    memcmp(&e->member.id, &net->nodes[subject].id, sizeof(SwimId)) != 0)
                        continue;
                if (observer < 0 || e->observer == (unsigned) observer)
                        return e->time;
        }
        return UINT64_MAX;
}

static unsigned count_events(const Net *net, unsigned subject, SwimState state) {
        unsigned n = 0;
        for (size_t i = 0; i < net->n_events; i++)
                n += !net->events[i].meta && net->events[i].member.state == state &&
                        net->events[i].observer != subject &&
                        memcmp(&net->events[i].member.id, &net->nodes[subject].id, sizeof(SwimId)) == 0;
        return n;
}

static SwimState state_at(const Net *net, unsigned observer, unsigned subject) {
        const SwimUpdate *u = swim_find(net->nodes[observer].swim, &net->nodes[subject].id);
        assert_non_null(u);
        return u->state;
}

/* ---- one Swim, driven by hand ---- */

typedef struct Solo {
        Swim *swim;
        SwimId self;
        Event events[64];
        size_t n_events;
        SwimMsg sent[64];
        SwimId sent_to[64];
        size_t n_sent;
} Solo;

static void solo_send(void *userdata, const SwimId *to, const char *to_addr, const SwimMsg *msg) {
        Solo *s = userdata;
        if (s->n_sent < ELEMENTSOF(s->sent)) {
                s->sent_to[s->n_sent] = *to;
                s->sent[s->n_sent++] = *msg;
        }
}

static void solo_changed(void *userdata, const SwimUpdate *member, SwimState old_state, bool is_new) {
        Solo *s = userdata;
        if (s->n_events < ELEMENTSOF(s->events))
                s->events[s->n_events++] = (Event) { .member = *member, .old_state = old_state, .is_new = is_new };
}

static void solo_meta(void *userdata, const SwimId *id, uint64_t meta_gen) {
        Solo *s = userdata;
        if (s->n_events < ELEMENTSOF(s->events))
                s->events[s->n_events++] = (Event) { .member = { .id = *id, .meta_gen = meta_gen }, .meta = true };
}

static const SwimCallbacks solo_callbacks = {
        .send = solo_send,
        .member_changed = solo_changed,
        .meta_changed = solo_meta,
};

static void solo_init(Solo *s, uint32_t incarnation) {
        SwimConfig c = test_config();
        *s = (Solo) { .self = make_id(0) };
        assert_int_equal(swim_new(&c, &s->self, "127.0.0.1:7420", incarnation, 7, &solo_callbacks, s, &s->swim), 0);
}

static SwimUpdate upd(unsigned i, uint32_t incarnation, SwimState state) {
        SwimUpdate u = {
                .id = make_id(i),
                .incarnation = incarnation,
                .state = state,
        };
        snprintf(u.addr, sizeof u.addr, "10.0.0.%u:7420", i);
        return u;
}

static bool merge1(Solo *s, SwimUpdate u) {
        return swim_merge(s->swim, &u, 1, 0) == 1;
}

static void expect(Solo *s, unsigned i, uint32_t incarnation, SwimState state) {
        SwimId id = make_id(i);
        const SwimUpdate *u = swim_find(s->swim, &id);
        assert_non_null(u);
        assert_int_equal(u->incarnation, incarnation);
        assert_int_equal(u->state, state);
}

static void test_new_and_config(void **state) {
        SwimConfig c;
        SwimId id = make_id(0), null = {};
        Swim *s = NULL;

        swim_config_default(&c);
        assert_true(c.probe_interval_usec == 1 * SEC);
        assert_true(c.probe_timeout_usec == 500 * MSEC);
        assert_true(c.suspect_timeout_usec == 4 * SEC);
        assert_true(c.dead_reap_usec == 60 * SEC);
        assert_int_equal(c.indirect_probes, 4);
        assert_int_equal(c.retransmit_mult, 8);

        assert_int_equal(swim_new(&c, &null, "a:1", 0, 1, NULL, NULL, &s), -EINVAL);
        assert_int_equal(swim_new(&c, &id, NULL, 0, 1, NULL, NULL, &s), -EINVAL);
        char long_addr[SWIM_ADDR_MAX + 1];
        memset(long_addr, 'a', SWIM_ADDR_MAX);
        long_addr[SWIM_ADDR_MAX] = 0;
        assert_int_equal(swim_new(&c, &id, long_addr, 0, 1, NULL, NULL, &s), -EINVAL);
        SwimConfig bad = c;
        bad.probe_timeout_usec = bad.probe_interval_usec;
        assert_int_equal(swim_new(&bad, &id, "a:1", 0, 1, NULL, NULL, &s), -EINVAL);
        bad = c;
        bad.probe_interval_usec = 0;
        assert_int_equal(swim_new(&bad, &id, "a:1", 0, 1, NULL, NULL, &s), -EINVAL);
        assert_null(s);

        assert_int_equal(swim_new(&c, &id, "[::1]:7420", 42, 1, NULL, NULL, &s), 0);
        assert_int_equal(swim_incarnation(s), 42);
        assert_int_equal(swim_n_members(s), 1);
        const SwimUpdate *self = swim_find(s, &id);
        assert_non_null(self);
        assert_string_equal(self->addr, "[::1]:7420");
        assert_int_equal(self->state, SWIM_ALIVE);
        assert_string_equal(swim_state_to_string(SWIM_SUSPECT), "suspect");
        assert_null(swim_state_to_string(_SWIM_STATE_MAX));
        assert_null(swim_free(s));
        assert_null(swim_free(NULL));
}

static void test_precedence(void **state) {
        Solo s;

        solo_init(&s, 0);
        /* Learned from ALIVE, reported as new. */
        assert_true(merge1(&s, upd(1, 1, SWIM_ALIVE)));
        assert_int_equal(s.n_events, 1);
        assert_true(s.events[0].is_new);
        expect(&s, 1, 1, SWIM_ALIVE);

        assert_false(merge1(&s, upd(1, 0, SWIM_SUSPECT)));      /* older life */
        assert_false(merge1(&s, upd(1, 0, SWIM_DEAD)));
        assert_false(merge1(&s, upd(1, 1, SWIM_ALIVE)));        /* nothing new */
        expect(&s, 1, 1, SWIM_ALIVE);
        assert_true(merge1(&s, upd(1, 1, SWIM_SUSPECT)));       /* SUSPECT i beats ALIVE i */
        expect(&s, 1, 1, SWIM_SUSPECT);
        assert_int_equal(s.events[s.n_events - 1].old_state, SWIM_ALIVE);
        assert_false(merge1(&s, upd(1, 1, SWIM_ALIVE)));        /* only the member refutes, with i + 1 */
        assert_true(merge1(&s, upd(1, 2, SWIM_ALIVE)));
        expect(&s, 1, 2, SWIM_ALIVE);
        assert_true(merge1(&s, upd(1, 2, SWIM_DEAD)));          /* DEAD i beats ALIVE i */
        expect(&s, 1, 2, SWIM_DEAD);
        assert_false(merge1(&s, upd(1, 2, SWIM_ALIVE)));
        assert_false(merge1(&s, upd(1, 2, SWIM_SUSPECT)));
        assert_true(merge1(&s, upd(1, 2, SWIM_LEFT)));          /* its own word beats DEAD */
        assert_false(merge1(&s, upd(1, 2, SWIM_DEAD)));
        expect(&s, 1, 2, SWIM_LEFT);

        /* A new life comes back, with a new address; the same life keeps the address. */
        SwimUpdate back = upd(1, 3, SWIM_ALIVE);
        strcpy(back.addr, "10.9.9.9:1");
        assert_true(merge1(&s, back));
        expect(&s, 1, 3, SWIM_ALIVE);
        SwimId id1 = make_id(1);
        assert_string_equal(swim_find(s.swim, &id1)->addr, "10.9.9.9:1");
        SwimUpdate moved = upd(1, 3, SWIM_SUSPECT);
        strcpy(moved.addr, "10.6.6.6:1");
        assert_true(merge1(&s, moved));
        assert_string_equal(swim_find(s.swim, &id1)->addr, "10.9.9.9:1");

        /* Learned from SUSPECT or DEAD too: a DEAD entry keeps a stale ALIVE of the same life out. */
        assert_true(merge1(&s, upd(2, 5, SWIM_DEAD)));
        expect(&s, 2, 5, SWIM_DEAD);
        assert_true(s.events[s.n_events - 1].is_new);
        assert_false(merge1(&s, upd(2, 5, SWIM_ALIVE)));
        assert_true(merge1(&s, upd(3, 0, SWIM_SUSPECT)));
        expect(&s, 3, 0, SWIM_SUSPECT);

        /* meta_gen merges by max, whatever the precedence says, and is reported. */
        size_t before = s.n_events;
        SwimUpdate m = upd(1, 0, SWIM_ALIVE);
        m.meta_gen = 7;
        assert_true(merge1(&s, m));
        expect(&s, 1, 3, SWIM_SUSPECT);
        assert_true(swim_find(s.swim, &id1)->meta_gen == 7);
        assert_int_equal(s.n_events, before + 1);
        assert_true(s.events[before].meta);
        assert_true(s.events[before].member.meta_gen == 7);
        m.meta_gen = 6;
        assert_false(merge1(&s, m));
        assert_true(swim_find(s.swim, &id1)->meta_gen == 7);

        /* A merge is not gossiped: the next message carries only our own entry. */
        s.n_sent = 0;
        swim_tick(s.swim, 1 * SEC);
        swim_tick(s.swim, swim_next_deadline(s.swim));
        assert_true(s.n_sent >= 1);
        assert_int_equal(s.sent[0].type, SWIM_PING);
        for (size_t i = 0; i < s.sent[0].n_updates; i++) {
                SwimId to = s.sent_to[0];
                /* Own entry, and the recipient's if it is suspected (buddy system). */
                assert_true(memcmp(&s.sent[0].updates[i].id, &s.self, sizeof s.self) == 0 ||
                            memcmp(&s.sent[0].updates[i].id, &to, sizeof to) == 0);
        }
        swim_free(s.swim);
}

static void test_hostile_input(void **state) {
        Solo s;
        SwimId from = make_id(9);
        SwimMsg msg = { .type = SWIM_PING, .seq = 1, .n_updates = 4 };

        solo_init(&s, 0);
        msg.updates[0] = upd(1, 0, SWIM_ALIVE);
        msg.updates[0].state = (SwimState) 7;
        msg.updates[1] = upd(2, 0, SWIM_ALIVE);
        msg.updates[1].state = (SwimState) -1;
        msg.updates[2] = upd(3, 0, SWIM_ALIVE);
        memset(msg.updates[2].addr, 'x', sizeof msg.updates[2].addr);     /* no NUL */
        msg.updates[3] = upd(4, UINT32_MAX, SWIM_ALIVE);                   /* cannot be outranked */
        swim_receive(s.swim, &from, &msg, 1 * SEC);
        assert_int_equal(swim_n_members(s.swim), 1);
        assert_int_equal(s.n_events, 0);
        /* The PING itself is still answered. */
        assert_int_equal(s.n_sent, 1);
        assert_int_equal(s.sent[0].type, SWIM_ACK);
        assert_memory_equal(&s.sent[0].target, &s.self, sizeof s.self);

        /* An all-zero id, an unknown type, a count beyond the array, messages from ourselves. */
        SwimMsg m2 = { .type = SWIM_PING, .n_updates = 1 };
        memset(&m2.updates[0], 0, sizeof m2.updates[0]);
        swim_receive(s.swim, &from, &m2, 1 * SEC);
        assert_int_equal(swim_n_members(s.swim), 1);
        s.n_sent = 0;
        m2.type = _SWIM_MSG_MAX;
        m2.updates[0] = upd(5, 0, SWIM_ALIVE);
        swim_receive(s.swim, &from, &m2, 1 * SEC);
        m2.type = (SwimMsgType) -3;
        swim_receive(s.swim, &from, &m2, 1 * SEC);
        m2.type = SWIM_ACK;
        swim_receive(s.swim, &s.self, &m2, 1 * SEC);
        swim_receive(s.swim, &from, NULL, 1 * SEC);
        assert_int_equal(swim_n_members(s.swim), 1);
        assert_int_equal(s.n_sent, 0);
        m2.type = SWIM_ACK;
        m2.n_updates = SIZE_MAX;
        for (unsigned i = 0; i < SWIM_MAX_UPDATES; i++)
                m2.updates[i] = upd(10 + i, 0, SWIM_ALIVE);
        swim_receive(s.swim, &from, &m2, 1 * SEC);
        assert_int_equal(swim_n_members(s.swim), 1 + SWIM_MAX_UPDATES);

        /* A PING meant for someone else gets no answer. */
        SwimMsg other = { .type = SWIM_PING, .seq = 5, .target = make_id(11), .n_updates = 0 };
        swim_receive(s.swim, &from, &other, 2 * SEC);
        assert_int_equal(s.n_sent, 0);

        /* Seeds: not self, not null, the address must fit. */
        SwimId null = {};
        assert_int_equal(swim_add_seed(s.swim, &s.self, "a:1"), -EINVAL);
        assert_int_equal(swim_add_seed(s.swim, &null, "a:1"), -EINVAL);
        assert_int_equal(swim_add_seed(s.swim, &from, NULL), -EINVAL);
        assert_int_equal(swim_merge(s.swim, NULL, 1, 0), -EINVAL);
        swim_free(s.swim);
}

static void test_member_cap(void **state) {
        Solo s;
        size_t n = SWIM_MEMBERS_MAX + 100;
        SwimUpdate *u = calloc(n, sizeof *u);

        assert_non_null(u);
        solo_init(&s, 0);
        for (size_t i = 0; i < n; i++) {
                u[i].state = SWIM_ALIVE;
                memcpy(u[i].id.bytes, &(uint64_t) { i + 1 }, 8);
                u[i].id.bytes[15] = 0xee;
                strcpy(u[i].addr, "10.1.1.1:1");
        }
        assert_int_equal(swim_merge(s.swim, u, n, 0), SWIM_MEMBERS_MAX - 1);
        assert_int_equal(swim_n_members(s.swim), SWIM_MEMBERS_MAX);
        assert_int_equal(swim_snapshot(s.swim, u, 1), SWIM_MEMBERS_MAX);
        assert_memory_equal(&u[0].id, &s.self, sizeof s.self);
        swim_free(s.swim);
        free(u);
}

static void test_refutation(void **state) {
        Solo s;
        SwimId from = make_id(1);
        SwimMsg msg = { .type = SWIM_PING, .seq = 9, .n_updates = 2 };

        solo_init(&s, 3);
        msg.updates[0] = upd(1, 0, SWIM_ALIVE);
        msg.updates[1] = (SwimUpdate) { .id = s.self, .incarnation = 3, .state = SWIM_SUSPECT };
        swim_receive(s.swim, &from, &msg, 1 * SEC);
        assert_int_equal(swim_incarnation(s.swim), 4);
        /* Reported for self, still ALIVE, and the ACK carries the refutation. */
        assert_int_equal(s.events[s.n_events - 1].member.state, SWIM_ALIVE);
        assert_int_equal(s.events[s.n_events - 1].member.incarnation, 4);
        assert_int_equal(s.n_sent, 1);
        assert_int_equal(s.sent[0].type, SWIM_ACK);
        assert_true(s.sent[0].seq == 9);
        assert_memory_equal(&s.sent[0].updates[0].id, &s.self, sizeof s.self);
        assert_int_equal(s.sent[0].updates[0].incarnation, 4);
        assert_int_equal(s.sent[0].updates[0].state, SWIM_ALIVE);

        /* A stale suspicion changes nothing; a death, or a life we forgot, goes one above. */
        msg.updates[1].incarnation = 3;
        swim_receive(s.swim, &from, &msg, 2 * SEC);
        assert_int_equal(swim_incarnation(s.swim), 4);
        msg.updates[1] = (SwimUpdate) { .id = s.self, .incarnation = 4, .state = SWIM_DEAD };
        swim_receive(s.swim, &from, &msg, 3 * SEC);
        assert_int_equal(swim_incarnation(s.swim), 5);
        msg.updates[1] = (SwimUpdate) { .id = s.self, .incarnation = 9, .state = SWIM_ALIVE, .meta_gen = 30 };
        s.n_events = 0;
        swim_receive(s.swim, &from, &msg, 4 * SEC);
        assert_int_equal(swim_incarnation(s.swim), 10);
        /* The cluster remembered a higher generation of our state: ours goes above it, and we are told. */
        assert_true(swim_find(s.swim, &s.self)->meta_gen == 31);
        assert_true(s.events[s.n_events - 1].meta);
        assert_true(s.events[s.n_events - 1].member.meta_gen == 31);

        /* After leaving, we stay LEFT however we are contradicted. */
        swim_leave(s.swim, 5 * SEC);
        assert_int_equal(swim_incarnation(s.swim), 11);
        assert_int_equal(swim_find(s.swim, &s.self)->state, SWIM_LEFT);
        msg.updates[1] = (SwimUpdate) { .id = s.self, .incarnation = 11, .state = SWIM_DEAD };
        swim_receive(s.swim, &from, &msg, 6 * SEC);
        assert_int_equal(swim_find(s.swim, &s.self)->state, SWIM_LEFT);
        msg.updates[1] = (SwimUpdate) { .id = s.self, .incarnation = 12, .state = SWIM_ALIVE };
        swim_receive(s.swim, &from, &msg, 7 * SEC);
        assert_int_equal(swim_find(s.swim, &s.self)->state, SWIM_LEFT);
        assert_int_equal(swim_incarnation(s.swim), 13);
        swim_free(s.swim);
}

static void test_relay(void **state) {
        Solo s;
        SwimId origin = make_id(1), target = make_id(2), stranger = make_id(3);
        SwimMsg req = { .type = SWIM_PING_REQ, .seq = 77, .target = target, .n_updates = 2 };

        solo_init(&s, 0);
        /* The request brings the origin's entry and the target's, so we can reach it. */
        req.updates[0] = upd(1, 0, SWIM_ALIVE);
        req.updates[1] = upd(2, 0, SWIM_ALIVE);
        swim_receive(s.swim, &origin, &req, 1 * SEC);
        assert_int_equal(s.n_sent, 1);
        assert_int_equal(s.sent[0].type, SWIM_PING);
        assert_memory_equal(&s.sent_to[0], &target, sizeof target);
        assert_memory_equal(&s.sent[0].target, &target, sizeof target);

        /* An ACK with another seq, or from someone else, is not the answer. */
        SwimMsg ack = { .type = SWIM_ACK, .seq = s.sent[0].seq + 1, .target = target };
        swim_receive(s.swim, &target, &ack, 1 * SEC + 5 * MSEC);
        ack.seq = s.sent[0].seq;
        swim_receive(s.swim, &stranger, &ack, 1 * SEC + 5 * MSEC);
        assert_int_equal(s.n_sent, 1);
        /* The answer goes back to the origin under its seq, naming the target. */
        swim_receive(s.swim, &target, &ack, 1 * SEC + 10 * MSEC);
        assert_int_equal(s.n_sent, 2);
        assert_int_equal(s.sent[1].type, SWIM_ACK);
        assert_true(s.sent[1].seq == 77);
        assert_memory_equal(&s.sent_to[1], &origin, sizeof origin);
        assert_memory_equal(&s.sent[1].target, &target, sizeof target);
        /* Once. */
        swim_receive(s.swim, &target, &ack, 1 * SEC + 11 * MSEC);
        assert_int_equal(s.n_sent, 2);

        /* A request about a member we do not know cannot be relayed; one about us is answered. */
        req.n_updates = 0;
        req.target = make_id(12);
        swim_receive(s.swim, &origin, &req, 2 * SEC);
        assert_int_equal(s.n_sent, 2);
        req.target = s.self;
        swim_receive(s.swim, &origin, &req, 2 * SEC);
        assert_int_equal(s.n_sent, 3);
        assert_int_equal(s.sent[2].type, SWIM_ACK);
        assert_memory_equal(&s.sent[2].target, &s.self, sizeof s.self);
        swim_free(s.swim);
}

static void test_single_member(void **state) {
        Solo s;

        solo_init(&s, 0);
        assert_true(swim_next_deadline(s.swim) == 0);
        for (uint64_t t = 0; t < 10 * SEC;) {
                swim_tick(s.swim, t);
                uint64_t d = swim_next_deadline(s.swim);
                assert_true(d >= t && d <= t + 1 * SEC);
                t = MAX(d, t + 1);
        }
        assert_int_equal(s.n_sent, 0);
        SwimId nobody = make_id(5);
        swim_peer_closed(s.swim, &nobody, 10 * SEC);
        swim_leave(s.swim, 10 * SEC);
        assert_int_equal(s.n_sent, 0);
        swim_free(s.swim);
}

static void test_healthy_cluster(void **state) {
        SwimConfig c = test_config();
        Net *net = net_new(6, &c);

        net_run(net, 60 * SEC);
        for (unsigned i = 0; i < net->n; i++) {
                assert_int_equal(count_events(net, i, SWIM_SUSPECT), 0);
                assert_int_equal(swim_incarnation(net->nodes[i].swim), 0);
                /* One probe a second, no PING_REQ needed: ~60 PINGs and as many ACKs. */
                assert_in_range(net->sent[i][SWIM_PING], 55, 62);
                assert_int_equal(net->sent[i][SWIM_PING_REQ], 0);
                /* Round-robin: 12 PINGs to each of the 5 others, and 12 ACKs to their PINGs (+-1 for the
                 * first period's offset, +-1 across the shuffled rounds' boundaries). */
                for (unsigned j = 0; j < net->n; j++)
                        if (j != i)
                                assert_in_range(net->sent_to[i][j], 20, 28);
        }
        /* Round trips: 2 x 5 ms; heard from recently. */
        SwimMemberInfo info;
        assert_int_equal(swim_member_info(net->nodes[0].swim, &net->nodes[1].id, &info), 0);
        assert_false(info.self);
        assert_true(info.rtt_usec == 10 * MSEC);
        assert_true(info.last_heard_usec > 55 * SEC);
        size_t cursor = 0, n = 0, selves = 0;
        while (swim_member_next(net->nodes[0].swim, &cursor, &info)) {
                n++;
                selves += info.self;
        }
        assert_int_equal(n, 6);
        assert_int_equal(selves, 1);
        net_free(net);
}

static void test_indirect_probe(void **state) {
        SwimConfig c = test_config();
        Net *net = net_new(4, &c);

        /* 0 and 1 cannot talk to each other, but both can talk to 2 and 3. */
        net->broken[0][1] = net->broken[1][0] = true;
        net_run(net, 60 * SEC);
        assert_int_equal(count_events(net, 0, SWIM_SUSPECT), 0);
        assert_int_equal(count_events(net, 1, SWIM_SUSPECT), 0);
        assert_int_equal(state_at(net, 0, 1), SWIM_ALIVE);
        assert_int_equal(state_at(net, 1, 0), SWIM_ALIVE);
        assert_true(net->sent[0][SWIM_PING_REQ] > 0);
        assert_true(net->sent[1][SWIM_PING_REQ] > 0);
        /* The helpers answered for the broken link: ACKs came back through them. */
        assert_true(net->sent[2][SWIM_ACK] + net->sent[3][SWIM_ACK] > net->sent[0][SWIM_PING] / 2);
        assert_true(swim_incarnation(net->nodes[0].swim) == 0 && swim_incarnation(net->nodes[1].swim) == 0);
        net_free(net);
}

static void test_failure_timing(void **state) {
        SwimConfig c = test_config();
        Net *net = net_new(2, &c);
        uint64_t suspect, dead;

        net_run(net, 10 * SEC);
        net->nodes[1].up = false;
        net_run(net, 30 * SEC);
        /* Two failed probes in a row (one period each, the second right after the first), then SUSPECT ... */
        suspect = first_event(net, 0, 1, SWIM_SUSPECT, 0);
        assert_true(suspect > 11 * SEC && suspect <= 13 * SEC);
        /* ... for suspect_timeout (x1 below 10 members), then one unanswered PING of probe_timeout. */
        dead = first_event(net, 0, 1, SWIM_DEAD, 0);
        assert_true(dead == suspect + c.suspect_timeout_usec + c.probe_timeout_usec);
        assert_int_equal(state_at(net, 0, 1), SWIM_DEAD);
        /* Reaped dead_reap_usec later, silently. */
        size_t n_events = net->n_events;
        net_run(net, dead + c.dead_reap_usec - 1);
        assert_non_null(swim_find(net->nodes[0].swim, &net->nodes[1].id));
        net_run(net, dead + c.dead_reap_usec);
        assert_null(swim_find(net->nodes[0].swim, &net->nodes[1].id));
        assert_int_equal(swim_n_members(net->nodes[0].swim), 1);
        assert_int_equal(net->n_events, n_events);
        net_free(net);
}

static void test_failure_detection(void **state) {
        SwimConfig c = test_config();
        Net *net = net_new(8, &c);
        uint64_t kill = 20 * SEC;

        net_run(net, kill);
        net->nodes[5].up = false;
        /* Not yet reaped (dead_reap_usec is 20 s). */
        net_run(net, kill + 25 * SEC);
        for (unsigned i = 0; i < net->n; i++) {
                if (i == 5)
                        continue;
                uint64_t dead = first_event(net, (int) i, 5, SWIM_DEAD, 0);
                /* Every member probes every other within 2 x 7 periods, +2 for the retry, +4.5 s of suspicion
                 * and its last PING, +a few periods of gossip. */
                assert_true(dead > kill && dead < kill + 25 * SEC);
                assert_int_equal(state_at(net, i, 5), SWIM_DEAD);
        }
        for (unsigned i = 0; i < net->n; i++)
                if (i != 5)
                        assert_int_equal(count_events(net, i, SWIM_SUSPECT), 0);
        net_free(net);
}

static void test_false_suspicion_refuted(void **state) {
        SwimConfig c = test_config();
        Net *net = net_new(5, &c);

        net_run(net, 10 * SEC);
        /* 3 is cut off long enough to be suspected, and comes back before it is declared dead. */
        isolate(net, 3, true);
        uint64_t t = 10 * SEC;
        while (first_event(net, -1, 3, SWIM_SUSPECT, 0) == UINT64_MAX && t < 40 * SEC)
                net_run(net, t += 100 * MSEC);
        assert_true(t < 40 * SEC);
        isolate(net, 3, false);
        net_run(net, t + 30 * SEC);
        assert_int_equal(count_events(net, 3, SWIM_DEAD), 0);
        assert_true(swim_incarnation(net->nodes[3].swim) >= 1);
        for (unsigned i = 0; i < net->n; i++)
                if (i != 3) {
                        const SwimUpdate *u = swim_find(net->nodes[i].swim, &net->nodes[3].id);
                        assert_int_equal(u->state, SWIM_ALIVE);
                        assert_int_equal(u->incarnation, swim_incarnation(net->nodes[3].swim));
                }
        net_free(net);
}

static void run_until(Solo *s, uint64_t until) {
        while (swim_next_deadline(s->swim) < until)
                swim_tick(s->swim, swim_next_deadline(s->swim));
}

static void test_verification_ping(void **state) {
        Solo s;
        SwimId peer = make_id(1);
        bool found = false;
        uint32_t seq = 0;

        /* We hold a suspicion whose refutation never reached us. When it times out, one last PING asks the
         * member itself, carrying its suspicion, and its answer clears it. */
        solo_init(&s, 0);
        assert_true(merge1(&s, upd(1, 0, SWIM_SUSPECT)));
        run_until(&s, 4 * SEC);
        assert_true(swim_next_deadline(s.swim) == 4 * SEC);
        s.n_sent = 0;
        swim_tick(s.swim, 4 * SEC);
        for (size_t i = 0; i < s.n_sent; i++)
                for (size_t u = 0; u < s.sent[i].n_updates; u++)
                        if (s.sent[i].type == SWIM_PING && memcmp(&s.sent_to[i], &peer, sizeof peer) == 0 &&
                            memcmp(&s.sent[i].updates[u].id, &peer, sizeof peer) == 0 &&
                            s.sent[i].updates[u].state == SWIM_SUSPECT) {
                                found = true;
                                seq = s.sent[i].seq;
                        }
        assert_true(found);
        expect(&s, 1, 0, SWIM_SUSPECT);
        SwimMsg ack = { .type = SWIM_ACK, .seq = seq, .target = peer, .n_updates = 1 };
        ack.updates[0] = upd(1, 1, SWIM_ALIVE);
        swim_receive(s.swim, &peer, &ack, 4 * SEC + 20 * MSEC);
        expect(&s, 1, 1, SWIM_ALIVE);
        swim_free(s.swim);

        /* Unanswered, it turns DEAD probe_timeout later. */
        solo_init(&s, 0);
        assert_true(merge1(&s, upd(1, 0, SWIM_SUSPECT)));
        run_until(&s, 4 * SEC + 500 * MSEC);
        expect(&s, 1, 0, SWIM_SUSPECT);
        assert_true(swim_next_deadline(s.swim) == 4 * SEC + 500 * MSEC);
        swim_tick(s.swim, 4 * SEC + 500 * MSEC);
        expect(&s, 1, 0, SWIM_DEAD);
        assert_int_equal(s.events[s.n_events - 1].old_state, SWIM_SUSPECT);
        swim_free(s.swim);
}

static void test_leave(void **state) {
        SwimConfig c = test_config();
        Net *net = net_new(5, &c);

        net_run(net, 10 * SEC);
        swim_leave(net->nodes[4].swim, net->now);
        assert_int_equal(swim_find(net->nodes[4].swim, &net->nodes[4].id)->state, SWIM_LEFT);
        net_run(net, 13 * SEC);
        for (unsigned i = 0; i < 4; i++)
                assert_int_equal(state_at(net, i, 4), SWIM_LEFT);
        /* Gone for good: no suspicion, no death, and its probes no longer accuse anyone. */
        net->nodes[4].up = false;
        net_run(net, 30 * SEC);
        for (unsigned i = 0; i < 5; i++) {
                assert_int_equal(count_events(net, i, SWIM_SUSPECT), 0);
                assert_int_equal(count_events(net, i, SWIM_DEAD), 0);
        }
        /* Reaped after dead_reap_usec (20 s here). */
        net_run(net, 34 * SEC);
        for (unsigned i = 0; i < 4; i++) {
                assert_null(swim_find(net->nodes[i].swim, &net->nodes[4].id));
                assert_int_equal(swim_n_members(net->nodes[i].swim), 4);
        }
        net_free(net);
}

static void test_meta_gen(void **state) {
        SwimConfig c = test_config();
        Net *net = net_new(6, &c);

        net_run(net, 5 * SEC);
        swim_set_meta_gen(net->nodes[2].swim, 17);
        swim_set_meta_gen(net->nodes[2].swim, 3);       /* lower: ignored */
        net_run(net, 15 * SEC);
        for (unsigned i = 0; i < net->n; i++) {
                assert_true(swim_find(net->nodes[i].swim, &net->nodes[2].id)->meta_gen == 17);
                if (i == 2)
                        continue;
                /* Reported once per member. */
                unsigned n = 0;
                for (size_t e = 0; e < net->n_events; e++)
                        n += net->events[e].meta && net->events[e].observer == i &&
                                memcmp(&net->events[e].member.id, &net->nodes[2].id, sizeof(SwimId)) == 0 &&
                                net->events[e].member.meta_gen == 17;
                assert_int_equal(n, 1);
        }
        net_free(net);
}

static void test_join(void **state) {
        SwimConfig c = test_config();
        Net *net = net_new(5, &c);
        SwimUpdate snap[NODES_MAX], self;
        size_t n;

        net_run(net, 10 * SEC);
        /* 5 joins through 0: it gets 0's member list, 0 learns it (the join-ok exchange). */
        net->n = 6;
        node_start(net, 5, &c, 0);
        n = swim_snapshot(net->nodes[0].swim, snap, ELEMENTSOF(snap));
        assert_int_equal(n, 5);
        assert_memory_equal(&snap[0].id, &net->nodes[0].id, sizeof(SwimId));
        assert_int_equal(swim_merge(net->nodes[5].swim, snap, n, net->now), 5);
        assert_int_equal(swim_snapshot(net->nodes[5].swim, &self, 1), 6);
        assert_int_equal(swim_merge(net->nodes[0].swim, &self, 1, net->now), 1);
        net_run(net, 20 * SEC);
        for (unsigned i = 0; i < 5; i++)
                assert_int_equal(state_at(net, i, 5), SWIM_ALIVE);
        assert_int_equal(swim_n_members(net->nodes[5].swim), 6);

        /* 6 knows only a seed; the others learn it from its messages and its gossip, and it learns them
         * as they talk to it. */
        net->n = 7;
        node_start(net, 6, &c, 0);
        assert_int_equal(swim_add_seed(net->nodes[6].swim, &net->nodes[3].id, net->nodes[3].addr), 0);
        assert_int_equal(swim_add_seed(net->nodes[6].swim, &net->nodes[3].id, net->nodes[3].addr), 0);
        net_run(net, 45 * SEC);
        for (unsigned i = 0; i < 7; i++) {
                assert_int_equal(swim_n_members(net->nodes[i].swim), 7);
                for (unsigned j = 0; j < 7; j++)
                        if (j != i)
                                assert_int_equal(state_at(net, i, j), SWIM_ALIVE);
        }
        for (unsigned i = 0; i < 7; i++)
                assert_int_equal(count_events(net, i, SWIM_SUSPECT), 0);
        net_free(net);
}

static void test_peer_closed(void **state) {
        SwimConfig c = test_config();
        Net *net = net_new(10, &c);

        net_run(net, 10 * SEC + 300 * MSEC);
        /* Transport says 7 went away: 0 probes it at once, out of turn (if no probe of its own is in flight,
         * which a 300 ms offset into the period makes likely but not certain: allow one period). */
        unsigned before = net->sent_to[0][7];
        net->nodes[7].up = false;
        swim_peer_closed(net->nodes[0].swim, &net->nodes[7].id, net->now);
        net_run(net, net->now + 1 * SEC);
        assert_true(net->sent_to[0][7] > before);
        /* And suspects it after the retry, well before its round-robin turn could come twice. */
        net_run(net, 14 * SEC);
        assert_true(first_event(net, 0, 7, SWIM_SUSPECT, 0) <= 13 * SEC + 300 * MSEC);
        net_free(net);
}

static void test_deterministic(void **state) {
        SwimConfig c = test_config();
        uint64_t traces[2];

        for (unsigned r = 0; r < 2; r++) {
                Net *net = net_new(7, &c);
                net->broken[1][2] = net->broken[4][0] = true;
                net_run(net, 10 * SEC);
                net->nodes[3].up = false;
                net_run(net, 40 * SEC);
                traces[r] = net->trace;
                net_free(net);
        }
        assert_true(traces[0] == traces[1]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_new_and_config),
                cmocka_unit_test(test_precedence),
                cmocka_unit_test(test_hostile_input),
                cmocka_unit_test(test_member_cap),
                cmocka_unit_test(test_refutation),
                cmocka_unit_test(test_relay),
                cmocka_unit_test(test_single_member),
                cmocka_unit_test(test_healthy_cluster),
                cmocka_unit_test(test_indirect_probe),
                cmocka_unit_test(test_failure_timing),
                cmocka_unit_test(test_failure_detection),
                cmocka_unit_test(test_false_suspicion_refuted),
                cmocka_unit_test(test_verification_ping),
                cmocka_unit_test(test_leave),
                cmocka_unit_test(test_meta_gen),
                cmocka_unit_test(test_join),
                cmocka_unit_test(test_peer_closed),
                cmocka_unit_test(test_deterministic),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
