/* SPDX-License-Identifier: MIT */

/*
 * SWIM (Das, Gupta, Motivala, 2002) with the refinements that tests/cluster-sim.c argued for. Figures:
 * 1000 members, 10% message loss, 1-20 ms latency, 120 s, 20 kills, seeds 1-3 summed, unless said.
 * "False deaths" are live members declared DEAD by someone.
 *
 * Probing. One member per period, round-robin over a shuffled list (every member is probed within two
 * rounds; a newcomer goes in at a random place). PING; no ACK after probe_timeout: PING_REQ to
 * indirect_probes random ALIVE members and a second PING of our own; nothing by the end of the period:
 * the probe failed. The member is probed again at once, in the next period, and suspected only if that
 * fails too. Textbook SWIM (3 helpers, suspect on the first failure, retransmit x4, 5 s) collapsed:
 * 2554 false suspicions filled the piggyback slots, refutations stopped getting through and 1630 live
 * members were declared dead. A live member's probe fails with P(direct) * P(all helpers), where
 * P(direct) is the loss of a PING or its ACK (0.19) and each helper's four messages all arrive with
 * 0.9^4; the second PING squares the first factor, the second probe squares the whole. Measured: 5
 * helpers: 312 false suspicions, 10 false deaths; + second PING: 47 and 4; + second probe (4 helpers):
 * no false suspicion at 10% loss, and with the rest below no false death up to 20% loss in 1200 s runs
 * of 5 to 1000 members. The price is one period (first SUSPECT 1.7 -> 2.7 s after a kill). 3 helpers
 * gave false deaths at 25% loss, 5 cost 14% more messages at 10% (4.9 -> 5.5 per member per second;
 * 2.0 at no loss, where no helper is needed).
 *
 * Suspicion. Gossiped; a suspect that hears of it refutes with incarnation + 1. It lasts
 * suspect_timeout * max(1, log10 n) (4 s: 12 s at 1000 members), then we PING the suspect once more
 * (see below) and declare it DEAD probe_timeout later. 4 s is memberlist's LAN value; 3 s (detection
 * 3 s sooner) gave 1 false death in 3 x 1200 s at 20 members and 25% loss, 4 s none. Lifeguard's
 * timeout, which starts long and shrinks as independent confirmations arrive, needs to know who
 * suspects: memberlist's suspect message names its sender, our wire update does not, and counting the
 * distinct members that relay a suspicion counts gossip, which spreads a false suspicion as fast as a
 * true one (1 s minimum, x6 maximum: 55 false deaths). So the timeout is fixed.
 *
 * Dissemination. Every message carries the sender's own entry first (as redis cluster's header does:
 * any message from a member corrects a stale view of it, and a newcomer is learned from its first
 * PING), then the recipient's entry if we think it SUSPECT or DEAD (Lifeguard's buddy system: it can
 * refute at once), then news, least sent and freshest first, each piggybacked retransmit_mult *
 * ceil(log10(n + 1)) times. memberlist uses x4 and repairs what gossip misses with a TCP push-pull every
 * 30 s; we have no such exchange, and at x4 9 of 250 refutations had not reached every member 20 s
 * later (5 helpers: 10 false deaths); x6: 0 of 262, but 6 misses at 25% loss; x8: none.
 * Updates from swim_merge() (a join's member list) are not gossiped: the cluster has them.
 *
 * The last PING. A refutation can still miss a member (20% loss, 100 members: 1 false death in
 * 4 x 1200 s at x8). When a suspicion times out we PING the suspect; the PING carries its suspicion and
 * the ACK its own entry, so a live member answers with its refutation. That case then had no false
 * death, nor any other run at the defaults up to 25% loss, for one PING per member per real failure
 * and detection probe_timeout later.
 *
 * Not done: Lifeguard's local health multiplier (slower probing while our own probes fail) and NACKs.
 * The simulation has no slow members, only lossy links, so it cannot show what they would buy, and
 * NACK needs a message type the wire does not have.
 *
 * Result, defaults, seed 1: kill -> first SUSPECT 2.7 s, first DEAD 15.2 s, DEAD everywhere 17.6 s
 * (mean; max 20.9 s), no false suspicion, 4.9 messages per member per second.
 *
 * Costs: choosing a message's updates scans the gossip queue (the members with news); deadlines are
 * rescanned only when one is due; lookups go through a hash table keyed with the seed.
 */

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "macro.h"
#include "swim.h"

#define POS_NONE UINT32_MAX
/* A member is suspected after this many failed probes in a row (see above). */
#define PROBES_TO_SUSPECT 2u
/* PING_REQs we relay at once; the oldest is dropped when a new one comes. */
#define RELAYS_MAX 64u
/* Refutation cannot go higher: a saturated incarnation is never accepted from the wire. */
#define INCARNATION_MAX (UINT32_MAX - 1)
/* PING_REQs per probe, whatever the config says. */
#define INDIRECT_MAX 16u

typedef struct Member {
        SwimUpdate u;
        uint64_t state_usec;
        uint64_t deadline_usec;         /* SUSPECT: when it turns DEAD; DEAD/LEFT: when it is reaped */
        uint64_t last_heard_usec;
        uint64_t rtt_usec;
        uint64_t gossip_order;          /* higher: fresher news */
        uint32_t gossip_transmits;
        uint32_t probe_pos, gossip_pos, timed_pos;      /* POS_NONE: not in that list */
        bool verified;                  /* SUSPECT: the verification PING went out */
} Member;

typedef struct Relay {
        bool used;
        uint32_t seq;                   /* of our PING to the target */
        uint32_t origin_seq;
        SwimId origin, target;
        uint64_t expires_usec;
} Relay;

typedef struct Probe {
        bool active, indirect_sent;
        unsigned attempt;               /* failed probes of the same member just before this one */
        uint32_t seq, incarnation;
        SwimId target;
        uint64_t sent_usec, indirect_usec, end_usec;
} Probe;

struct Swim {
        SwimConfig config;
        SwimCallbacks cb;
        void *userdata;
        uint64_t rng[4];
        uint64_t hash_key[2];

        /* members[0] is self and never moves; the others move when one is reaped. */
        Member *members;
        size_t n_members, allocated;
        size_t n_live;                  /* neither DEAD nor LEFT, self included */
        uint32_t *table;                /* open addressing: index + 1, 0 = empty */
        size_t table_mask;

        uint32_t *probe_order;          /* every member but self, shuffled; [0, probe_cursor) done this round */
        size_t n_probe, probe_cursor;
        uint32_t *gossip;               /* members with news to piggyback (never self: it always goes) */
        size_t n_gossip;
        uint64_t gossip_counter;
        uint32_t *timed;                /* members with a deadline: SUSPECT, DEAD, LEFT */
        size_t n_timed;
        uint64_t timed_min;             /* at most the earliest deadline */

        bool started, left;
        uint64_t next_probe_usec;
        uint32_t next_seq;
        Probe probe;
        bool has_next;                  /* probe this one next, out of turn */
        SwimId next_target;
        unsigned next_attempt;
        Relay relays[RELAYS_MAX];
        size_t relay_next;
};

void swim_config_default(SwimConfig *ret) {
        *ret = (SwimConfig) {
                .probe_interval_usec = 1000000,
                .probe_timeout_usec = 500000,
                .suspect_timeout_usec = 4000000,
                .dead_reap_usec = 60000000,
                .indirect_probes = 4,
                .retransmit_mult = 8,
        };
}

const char *swim_state_to_string(SwimState state) {
        static const char *const names[_SWIM_STATE_MAX] = {
                [SWIM_ALIVE] = "alive",
                [SWIM_SUSPECT] = "suspect",
                [SWIM_DEAD] = "dead",
                [SWIM_LEFT] = "left",
        };
        return (unsigned) state < _SWIM_STATE_MAX ? names[state] : NULL;
}

/* splitmix64 seeds xoshiro256**; mix64 is its finalizer, a bijection used for hashing. */
static uint64_t mix64(uint64_t z) {
        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

static uint64_t splitmix64(uint64_t *x) {
        return mix64(*x += UINT64_C(0x9e3779b97f4a7c15));
}

static uint64_t rotl64(uint64_t x, int k) {
        return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(Swim *s) {
        uint64_t *r = s->rng;
        uint64_t result = rotl64(r[1] * 5, 7) * 9, t = r[1] << 17;

        r[2] ^= r[0];
        r[3] ^= r[1];
        r[1] ^= r[2];
        r[0] ^= r[3];
        r[2] ^= t;
        r[3] = rotl64(r[3], 45);
        return result;
}

/* Uniform in [0, n) (Lemire's multiply-shift; the bias is below 2^-32 for any n we use). */
static uint64_t rng_below(Swim *s, uint64_t n) {
        return (uint64_t) (((unsigned __int128) rng_next(s) * n) >> 64);
}

static bool id_eq(const SwimId *a, const SwimId *b) {
        return memcmp(a->bytes, b->bytes, sizeof a->bytes) == 0;
}

static bool id_is_null(const SwimId *id) {
        static const SwimId null = {};
        return id_eq(id, &null);
}

/* Keyed, so that a peer cannot pick ids that collide in our table. */
static uint64_t id_hash(const Swim *s, const SwimId *id) {
        uint64_t a, b;
        memcpy(&a, id->bytes, 8);
        memcpy(&b, id->bytes + 8, 8);
        return mix64(a ^ s->hash_key[0]) ^ mix64(rotl64(b, 29) ^ s->hash_key[1]);
}

static bool state_is_live(SwimState st) {
        return st == SWIM_ALIVE || st == SWIM_SUSPECT;
}

static bool addr_valid(const char *addr) {
        return addr && strnlen(addr, SWIM_ADDR_MAX) < SWIM_ADDR_MAX;
}

static bool update_valid(const SwimUpdate *u) {
        return (unsigned) u->state < _SWIM_STATE_MAX && memchr(u->addr, 0, sizeof u->addr) &&
                !id_is_null(&u->id) && u->incarnation <= INCARNATION_MAX;
}

/* SWIM's precedence: a higher incarnation wins; at the same one SUSPECT beats ALIVE, DEAD beats both,
 * LEFT (the member's own word) beats DEAD. */
static bool supersedes(uint32_t incarnation, SwimState state, const SwimUpdate *known) {
        if (incarnation != known->incarnation)
                return incarnation > known->incarnation;
        return state > known->state;
}

/* ---- the member table ---- */

static size_t table_slot(const Swim *s, const SwimId *id) {
        size_t i = id_hash(s, id) & s->table_mask;
        while (s->table[i] != 0 && !id_eq(&s->members[s->table[i] - 1].u.id, id))
                i = (i + 1) & s->table_mask;
        return i;
}

static Member *member_find(const Swim *s, const SwimId *id) {
        size_t i = table_slot(s, id);
        return s->table[i] ? &s->members[s->table[i] - 1] : NULL;
}

static uint32_t member_index(const Swim *s, const Member *m) {
        return (uint32_t) (m - s->members);
}

static void table_delete(Swim *s, const SwimId *id) {
        size_t i = table_slot(s, id), j = i;
        assert(s->table[i] != 0);
        /* Backward-shift deletion: no tombstones, so lookups stay short. */
        for (;;) {
                s->table[i] = 0;
                for (;;) {
                        j = (j + 1) & s->table_mask;
                        if (s->table[j] == 0)
                                return;
                        size_t home = id_hash(s, &s->members[s->table[j] - 1].u.id) & s->table_mask;
                        /* It moves into the hole unless its home lies cyclically in (i, j]. */
                        if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
                                break;
                }
                s->table[i] = s->table[j];
                i = j;
        }
}

static int grow(Swim *s) {
        size_t n = s->allocated * 2, table_size = n * 2;
        Member *m;
        uint32_t *p;

        assert(n <= SWIM_MEMBERS_MAX);
        m = reallocarray(s->members, n, sizeof *m);
        if (!m)
                return -ENOMEM;
        s->members = m;
        p = reallocarray(s->probe_order, n, sizeof *p);
        if (!p)
                return -ENOMEM;
        s->probe_order = p;
        p = reallocarray(s->gossip, n, sizeof *p);
        if (!p)
                return -ENOMEM;
        s->gossip = p;
        p = reallocarray(s->timed, n, sizeof *p);
        if (!p)
                return -ENOMEM;
        s->timed = p;
        p = calloc(table_size, sizeof *p);
        if (!p)
                return -ENOMEM;
        free(s->table);
        s->table = p;
        s->table_mask = table_size - 1;
        s->allocated = n;
        for (size_t i = 0; i < s->n_members; i++)
                s->table[table_slot(s, &s->members[i].u.id)] = (uint32_t) i + 1;
        return 0;
}

/* ---- the three lists: probe order, gossip queue, deadlines ---- */

static void probe_order_set(Swim *s, size_t pos, uint32_t idx) {
        s->probe_order[pos] = idx;
        s->members[idx].probe_pos = (uint32_t) pos;
}

static void probe_order_insert(Swim *s, uint32_t idx) {
        /* At a random place, as memberlist does, so a newcomer is not always probed last. */
        size_t n = s->n_probe++, k = rng_below(s, n + 1);
        if (k != n)
                probe_order_set(s, n, s->probe_order[k]);
        probe_order_set(s, k, idx);
}

static void probe_order_remove(Swim *s, uint32_t idx) {
        size_t pos = s->members[idx].probe_pos;

        /* Keep [0, cursor) the members already probed in this round. */
        if (pos < s->probe_cursor) {
                probe_order_set(s, pos, s->probe_order[s->probe_cursor - 1]);
                pos = --s->probe_cursor;
        }
        if (pos != s->n_probe - 1)
                probe_order_set(s, pos, s->probe_order[s->n_probe - 1]);
        s->n_probe--;
        s->members[idx].probe_pos = POS_NONE;
}

static void gossip_enqueue(Swim *s, uint32_t idx) {
        Member *m = &s->members[idx];

        if (idx == 0)
                return;
        if (m->gossip_pos == POS_NONE) {
                m->gossip_pos = (uint32_t) s->n_gossip;
                s->gossip[s->n_gossip++] = idx;
        }
        m->gossip_transmits = 0;
        m->gossip_order = ++s->gossip_counter;
}

static void gossip_remove(Swim *s, uint32_t idx) {
        size_t pos = s->members[idx].gossip_pos;
        uint32_t last = s->gossip[--s->n_gossip];
        s->gossip[pos] = last;
        s->members[last].gossip_pos = (uint32_t) pos;
        s->members[idx].gossip_pos = POS_NONE;
}

static void timed_update(Swim *s, uint32_t idx, uint64_t deadline) {
        Member *m = &s->members[idx];
        if (m->timed_pos == POS_NONE) {
                m->timed_pos = (uint32_t) s->n_timed;
                s->timed[s->n_timed++] = idx;
        }
        m->deadline_usec = deadline;
        s->timed_min = MIN(s->timed_min, deadline);
}

static void timed_remove(Swim *s, uint32_t idx) {
        size_t pos = s->members[idx].timed_pos;
        uint32_t last;

        if (pos == POS_NONE)
                return;
        last = s->timed[--s->n_timed];
        s->timed[pos] = last;
        s->members[last].timed_pos = (uint32_t) pos;
        s->members[idx].timed_pos = POS_NONE;
        /* timed_min may now be early: recomputed after the next tick, a harmless spurious wakeup. */
}

static void timed_recompute(Swim *s) {
        s->timed_min = UINT64_MAX;
        for (size_t i = 0; i < s->n_timed; i++)
                s->timed_min = MIN(s->timed_min, s->members[s->timed[i]].deadline_usec);
}

/* ---- members ---- */

static int member_add(Swim *s, const SwimUpdate *u, uint64_t now, uint32_t *ret_idx) {
        uint32_t idx;
        int r;

        if (s->n_members >= SWIM_MEMBERS_MAX)
                return -ENOSPC;
        if (s->n_members == s->allocated) {
                r = grow(s);
                if (r < 0)
                        return r;
        }
        idx = (uint32_t) s->n_members++;
        s->members[idx] = (Member) {
                .u = *u,
                .state_usec = now,
                .probe_pos = POS_NONE,
                .gossip_pos = POS_NONE,
                .timed_pos = POS_NONE,
        };
        s->table[table_slot(s, &u->id)] = idx + 1;
        if (idx != 0)
                probe_order_insert(s, idx);
        if (state_is_live(u->state))
                s->n_live++;
        *ret_idx = idx;
        return 0;
}

static void member_move(Swim *s, uint32_t from, uint32_t to) {
        Member *m = &s->members[to];

        *m = s->members[from];
        s->table[table_slot(s, &m->u.id)] = to + 1;
        if (m->probe_pos != POS_NONE)
                s->probe_order[m->probe_pos] = to;
        if (m->gossip_pos != POS_NONE)
                s->gossip[m->gossip_pos] = to;
        if (m->timed_pos != POS_NONE)
                s->timed[m->timed_pos] = to;
}

static void member_remove(Swim *s, uint32_t idx) {
        Member *m = &s->members[idx];
        uint32_t last = (uint32_t) s->n_members - 1;

        assert(idx != 0);
        table_delete(s, &m->u.id);
        if (m->probe_pos != POS_NONE)
                probe_order_remove(s, idx);
        if (m->gossip_pos != POS_NONE)
                gossip_remove(s, idx);
        timed_remove(s, idx);
        if (state_is_live(m->u.state))
                s->n_live--;
        if (idx != last)
                member_move(s, last, idx);
        s->n_members--;
}

/* suspect_timeout * max(1, log10 n): dissemination takes O(log n) periods. */
static uint64_t suspicion_timeout(const Swim *s) {
        double scale = MAX(1.0, log10((double) MAX(s->n_live, (size_t) 1)));
        return (uint64_t) ((double) s->config.suspect_timeout_usec * scale);
}

/* Moves a member to (incarnation, state), keeping the live count and the deadlines in step. */
static void member_set_state(Swim *s, uint32_t idx, uint32_t incarnation, SwimState state, uint64_t now) {
        Member *m = &s->members[idx];
        bool new_suspicion = state == SWIM_SUSPECT &&
                (m->u.state != SWIM_SUSPECT || m->u.incarnation != incarnation);

        if (state_is_live(m->u.state) != state_is_live(state)) {
                if (state_is_live(state))
                        s->n_live++;
                else
                        s->n_live--;
        }
        if (state != m->u.state)
                m->state_usec = now;
        m->u.incarnation = incarnation;
        m->u.state = state;

        if (state == SWIM_ALIVE || idx == 0)
                timed_remove(s, idx);
        else if (new_suspicion) {
                m->verified = false;
                timed_update(s, idx, now + suspicion_timeout(s));
        } else if (state != SWIM_SUSPECT)
                timed_update(s, idx, now + s->config.dead_reap_usec);
}

static void report_changed(Swim *s, uint32_t idx, SwimState old_state, bool is_new) {
        if (s->cb.member_changed)
                s->cb.member_changed(s->userdata, &s->members[idx].u, old_state, is_new);
}

static void report_meta(Swim *s, uint32_t idx) {
        if (s->cb.meta_changed)
                s->cb.meta_changed(s->userdata, &s->members[idx].u.id, s->members[idx].u.meta_gen);
}

/* Someone says something about us. If it outranks what we are (a suspicion, a death, an entry from an
 * earlier run), we go one incarnation above it and stay what we are: ALIVE, or LEFT. */
static bool apply_self(Swim *s, const SwimUpdate *u) {
        Member *self = &s->members[0];
        bool news = false;

        if (supersedes(u->incarnation, u->state, &self->u)) {
                self->u.incarnation = MIN(MAX(u->incarnation, self->u.incarnation), INCARNATION_MAX - 1) + 1;
                report_changed(s, 0, self->u.state, false);
                news = true;
        }
        /* Our shared state is news to them only if its generation is above what they remember. */
        if (u->meta_gen > self->u.meta_gen && u->meta_gen < UINT64_MAX) {
                self->u.meta_gen = u->meta_gen + 1;
                report_meta(s, 0);
                news = true;
        }
        return news;
}

/* Applies one update with SWIM's precedence; meta_gen merges by max. Returns whether it was news.
 * gossip: pass news on (not for a merge: the rest of the cluster has it). */
static bool apply_update(Swim *s, const SwimUpdate *u, uint64_t now, bool gossip) {
        Member *m;
        uint32_t idx;
        bool news = false, meta = false;

        if (!update_valid(u))
                return false;
        if (id_eq(&u->id, &s->members[0].u.id))
                return apply_self(s, u);

        m = member_find(s, &u->id);
        if (!m) {
                SwimUpdate alive = *u;

                /* Enter as ALIVE, then move to the state it comes in, so its deadlines start. */
                alive.state = SWIM_ALIVE;
                if (member_add(s, &alive, now, &idx) < 0)
                        return false;
                member_set_state(s, idx, u->incarnation, u->state, now);
                if (gossip)
                        gossip_enqueue(s, idx);
                report_changed(s, idx, u->state, true);
                if (u->meta_gen > 0)
                        report_meta(s, idx);
                return true;
        }
        idx = member_index(s, m);

        if (supersedes(u->incarnation, u->state, &m->u)) {
                SwimState old = m->u.state;

                /* A new life may come with a new address; the same one keeps the address we know. */
                if (u->incarnation > m->u.incarnation)
                        memcpy(m->u.addr, u->addr, sizeof m->u.addr);
                member_set_state(s, idx, u->incarnation, u->state, now);
                news = true;
                report_changed(s, idx, old, false);
        }
        if (u->meta_gen > m->u.meta_gen) {
                m->u.meta_gen = u->meta_gen;
                meta = true;
                report_meta(s, idx);
        }
        if ((news || meta) && gossip)
                gossip_enqueue(s, idx);
        return news || meta;
}

/* ---- sending ---- */

static unsigned retransmit_limit(const Swim *s) {
        unsigned digits = 1;    /* ceil(log10(n + 1)), at least 1 */

        for (size_t p = 10; p < s->n_live + 1; p *= 10)
                digits++;
        return s->config.retransmit_mult * digits;
}

static bool gossip_before(const Member *a, const Member *b) {
        if (a->gossip_transmits != b->gossip_transmits)
                return a->gossip_transmits < b->gossip_transmits;
        return a->gossip_order > b->gossip_order;
}

/* Fills msg's updates: our own entry (so any message from us refutes a stale view of us), `first` if
 * given (PING_REQ: the target, so that the helper can reach it), the recipient's entry if we think it
 * SUSPECT or DEAD (so that it can refute at once: Lifeguard's buddy system), then news, least sent
 * and freshest first. */
static void piggyback(Swim *s, SwimMsg *msg, const SwimId *to, const Member *first) {
        const Member *self = &s->members[0], *rcpt = member_find(s, to);
        uint32_t chosen[SWIM_MAX_UPDATES];
        size_t n = 0, n_chosen = 0, room;
        unsigned limit;

        msg->updates[n++] = self->u;
        if (first && first != self)
                msg->updates[n++] = first->u;
        if (rcpt && rcpt->u.state != SWIM_ALIVE && rcpt != first && rcpt != self)
                msg->updates[n++] = rcpt->u;
        room = SWIM_MAX_UPDATES - n;

        /* The best `room` by gossip_before(), by insertion into chosen[]. */
        for (size_t i = 0; i < s->n_gossip; i++) {
                const Member *m = &s->members[s->gossip[i]];
                size_t j;

                if (m == rcpt || m == first)
                        continue;
                if (n_chosen == room && !gossip_before(m, &s->members[chosen[n_chosen - 1]]))
                        continue;
                j = n_chosen < room ? n_chosen++ : n_chosen - 1;
                for (; j > 0 && gossip_before(m, &s->members[chosen[j - 1]]); j--)
                        chosen[j] = chosen[j - 1];
                chosen[j] = s->gossip[i];
        }

        limit = retransmit_limit(s);
        for (size_t i = 0; i < n_chosen; i++) {
                Member *m = &s->members[chosen[i]];
                msg->updates[n++] = m->u;
                if (++m->gossip_transmits >= limit)
                        gossip_remove(s, chosen[i]);
        }
        msg->n_updates = n;
}

static void send_msg(Swim *s, SwimMsgType type, uint32_t seq, const SwimId *to, const SwimId *target,
                     const Member *first) {
        const Member *m = member_find(s, to);
        SwimMsg msg = {
                .type = type,
                .seq = seq,
                .target = *target,
        };

        piggyback(s, &msg, to, first);
        if (s->cb.send)
                s->cb.send(s->userdata, to, m ? m->u.addr : "", &msg);
}

static void send_ping(Swim *s, const SwimId *to, uint32_t seq) {
        send_msg(s, SWIM_PING, seq, to, to, NULL);
}

/* Up to k members, uniformly among those ALIVE but self and `exclude` (reservoir sampling). */
static size_t pick_random(Swim *s, const SwimId *exclude, uint32_t *out, size_t k) {
        size_t seen = 0;

        for (size_t i = 1; i < s->n_members; i++) {
                const Member *m = &s->members[i];

                if (m->u.state != SWIM_ALIVE || (exclude && id_eq(&m->u.id, exclude)))
                        continue;
                if (seen < k)
                        out[seen] = (uint32_t) i;
                else {
                        uint64_t j = rng_below(s, seen + 1);
                        if (j < k)
                                out[j] = (uint32_t) i;
                }
                seen++;
        }
        return MIN(seen, k);
}

/* ---- probing ---- */

static bool probe_eligible(const Member *m) {
        return state_is_live(m->u.state);
}

static Member *probe_next_target(Swim *s, unsigned *ret_attempt) {
        *ret_attempt = 0;
        if (s->has_next) {
                Member *m = member_find(s, &s->next_target);

                s->has_next = false;
                if (m && m != &s->members[0] && probe_eligible(m)) {
                        *ret_attempt = s->next_attempt;
                        return m;
                }
        }
        for (size_t tries = 0; tries <= 2 * s->n_probe; tries++) {
                Member *m;

                if (s->probe_cursor >= s->n_probe) {
                        if (s->n_probe == 0)
                                return NULL;
                        for (size_t i = s->n_probe - 1; i > 0; i--) {
                                size_t j = rng_below(s, i + 1);
                                uint32_t t = s->probe_order[i];
                                probe_order_set(s, i, s->probe_order[j]);
                                probe_order_set(s, j, t);
                        }
                        s->probe_cursor = 0;
                }
                m = &s->members[s->probe_order[s->probe_cursor++]];
                if (probe_eligible(m))
                        return m;
        }
        return NULL;
}

static void probe_start(Swim *s, uint64_t now) {
        unsigned attempt;
        Member *m = probe_next_target(s, &attempt);

        if (!m)
                return;
        s->probe = (Probe) {
                .active = true,
                .attempt = attempt,
                .seq = s->next_seq++,
                .incarnation = m->u.incarnation,
                .target = m->u.id,
                .sent_usec = now,
                .indirect_usec = now + s->config.probe_timeout_usec,
                .end_usec = now + s->config.probe_interval_usec,
        };
        send_ping(s, &s->probe.target, s->probe.seq);
}

/* No ACK yet: k others ping it for us, and we ping it once more ourselves. */
static void probe_indirect(Swim *s) {
        uint32_t helpers[INDIRECT_MAX];
        Member *target = member_find(s, &s->probe.target);
        size_t n;

        s->probe.indirect_sent = true;
        if (!target)
                return;
        n = pick_random(s, &s->probe.target, helpers, MIN(s->config.indirect_probes, INDIRECT_MAX));
        for (size_t i = 0; i < n; i++) {
                SwimId to = s->members[helpers[i]].u.id;
                send_msg(s, SWIM_PING_REQ, s->probe.seq, &to, &s->probe.target, target);
        }
        send_ping(s, &s->probe.target, s->probe.seq);
}

static void probe_failed(Swim *s, uint64_t now) {
        Member *m = member_find(s, &s->probe.target);
        uint32_t idx;

        s->probe.active = false;
        /* Gone, refuted meanwhile, already suspected, or we are leaving: nothing to add. */
        if (!m || s->left || m->u.state != SWIM_ALIVE || m->u.incarnation != s->probe.incarnation)
                return;
        if (s->probe.attempt + 1 < PROBES_TO_SUSPECT) {
                s->has_next = true;
                s->next_target = m->u.id;
                s->next_attempt = s->probe.attempt + 1;
                return;
        }
        idx = member_index(s, m);
        member_set_state(s, idx, m->u.incarnation, SWIM_SUSPECT, now);
        gossip_enqueue(s, idx);
        report_changed(s, idx, SWIM_ALIVE, false);
}

static void timed_run(Swim *s, uint64_t now) {
        if (s->timed_min > now)
                return;
        /* Downwards: a removal swaps in an entry already looked at. */
        for (size_t i = s->n_timed; i-- > 0;) {
                uint32_t idx;
                Member *m;

                if (i >= s->n_timed)
                        continue;
                idx = s->timed[i];
                m = &s->members[idx];
                if (m->deadline_usec > now)
                        continue;
                if (m->u.state == SWIM_SUSPECT && !m->verified && !s->left) {
                        /* Last word before DEAD: the PING carries its suspicion, so a live member refutes in the
                         * ACK, which also reaches us if the refutation's gossip missed us. */
                        m->verified = true;
                        timed_update(s, idx, now + s->config.probe_timeout_usec);
                        send_ping(s, &m->u.id, s->next_seq++);
                } else if (m->u.state == SWIM_SUSPECT) {
                        member_set_state(s, idx, m->u.incarnation, SWIM_DEAD, now);
                        gossip_enqueue(s, idx);
                        report_changed(s, idx, SWIM_SUSPECT, false);
                } else
                        member_remove(s, idx);
        }
        timed_recompute(s);
}

void swim_tick(Swim *s, uint64_t now) {
        if (!s->started) {
                s->started = true;
                /* Spread the members' periods apart. */
                s->next_probe_usec = now + rng_below(s, s->config.probe_interval_usec);
        }
        timed_run(s, now);
        if (s->probe.active && !s->probe.indirect_sent && now >= s->probe.indirect_usec)
                probe_indirect(s);
        if (s->probe.active && now >= s->probe.end_usec)
                probe_failed(s, now);
        if (now >= s->next_probe_usec) {
                if (s->probe.active)
                        probe_failed(s, now);
                probe_start(s, now);
                s->next_probe_usec += s->config.probe_interval_usec;
                /* Late (a suspended machine, a stalled loop): no burst of probes to catch up. */
                if (s->next_probe_usec <= now)
                        s->next_probe_usec = now + s->config.probe_interval_usec;
        }
}

uint64_t swim_next_deadline(const Swim *s) {
        uint64_t d;

        if (!s->started)
                return 0;
        d = MIN(s->next_probe_usec, s->timed_min);
        if (s->probe.active) {
                if (!s->probe.indirect_sent)
                        d = MIN(d, s->probe.indirect_usec);
                d = MIN(d, s->probe.end_usec);
        }
        return d;
}

/* ---- receiving ---- */

static void relay_start(Swim *s, const SwimId *origin, uint32_t origin_seq, const SwimId *target, uint64_t now) {
        Relay *r = &s->relays[s->relay_next];

        s->relay_next = (s->relay_next + 1) % RELAYS_MAX;
        *r = (Relay) {
                .used = true,
                .seq = s->next_seq++,
                .origin_seq = origin_seq,
                .origin = *origin,
                .target = *target,
                .expires_usec = now + s->config.probe_interval_usec,
        };
        send_ping(s, target, r->seq);
}

static void handle_ack(Swim *s, const SwimId *from, const SwimMsg *msg, uint64_t now) {
        if (s->probe.active && msg->seq == s->probe.seq && id_eq(&msg->target, &s->probe.target)) {
                Member *m = member_find(s, &s->probe.target);

                /* Karn: no sample when the ACK may answer either of two PINGs, or came through a helper. */
                if (m && id_eq(from, &s->probe.target) && !s->probe.indirect_sent && now >= s->probe.sent_usec) {
                        uint64_t sample = MAX(now - s->probe.sent_usec, (uint64_t) 1);
                        m->rtt_usec = m->rtt_usec ? (7 * m->rtt_usec + sample) / 8 : sample;
                }
                s->probe.active = false;
                return;
        }
        for (size_t i = 0; i < RELAYS_MAX; i++) {
                Relay *r = &s->relays[i];

                if (!r->used || r->seq != msg->seq || !id_eq(&r->target, &msg->target) || !id_eq(from, &r->target))
                        continue;
                r->used = false;
                if (now <= r->expires_usec)
                        send_msg(s, SWIM_ACK, r->origin_seq, &r->origin, &r->target, NULL);
                return;
        }
        /* Late, or the answer to a verification PING: its updates were all that mattered. */
}

void swim_receive(Swim *s, const SwimId *from, const SwimMsg *msg, uint64_t now) {
        SwimId self = s->members[0].u.id;
        Member *m;

        if (!from || !msg || (unsigned) msg->type >= _SWIM_MSG_MAX || id_eq(from, &self) || id_is_null(from))
                return;
        for (size_t i = 0; i < MIN(msg->n_updates, (size_t) SWIM_MAX_UPDATES); i++)
                (void) apply_update(s, &msg->updates[i], now, true);
        m = member_find(s, from);
        if (m)
                m->last_heard_usec = now;

        switch (msg->type) {
        case SWIM_PING:
                /* Meant for whoever had our address before: silence is the right answer. */
                if (!id_is_null(&msg->target) && !id_eq(&msg->target, &self))
                        break;
                send_msg(s, SWIM_ACK, msg->seq, from, &self, NULL);
                break;
        case SWIM_PING_REQ:
                if (id_eq(&msg->target, &self))
                        send_msg(s, SWIM_ACK, msg->seq, from, &self, NULL);
                else if (!id_eq(&msg->target, from) && member_find(s, &msg->target))
                        relay_start(s, from, msg->seq, &msg->target, now);
                break;
        case SWIM_ACK:
                handle_ack(s, from, msg, now);
                break;
        default:
                break;
        }
}

/* ---- the rest of the API ---- */

int swim_merge(Swim *s, const SwimUpdate *updates, size_t n, uint64_t now) {
        int changed = 0;

        if (n > 0 && !updates)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                changed += apply_update(s, &updates[i], now, false);
        return changed;
}

size_t swim_snapshot(const Swim *s, SwimUpdate *out, size_t max) {
        for (size_t i = 0; i < MIN(max, s->n_members); i++)
                out[i] = s->members[i].u;
        return s->n_members;
}

int swim_add_seed(Swim *s, const SwimId *id, const char *addr) {
        SwimUpdate u = {
                .state = SWIM_ALIVE,
        };
        uint32_t idx;
        int r;

        if (!id || id_is_null(id) || id_eq(id, &s->members[0].u.id) || !addr_valid(addr))
                return -EINVAL;
        if (member_find(s, id))
                return 0;
        u.id = *id;
        strcpy(u.addr, addr);
        r = member_add(s, &u, 0, &idx);
        if (r < 0)
                return r;
        report_changed(s, idx, SWIM_ALIVE, true);
        return 0;
}

void swim_leave(Swim *s, uint64_t now) {
        Member *self = &s->members[0];
        uint32_t helpers[INDIRECT_MAX];
        size_t n;

        if (s->left)
                return;
        s->left = true;
        member_set_state(s, 0, MIN(self->u.incarnation + 1, INCARNATION_MAX), SWIM_LEFT, now);
        report_changed(s, 0, SWIM_ALIVE, false);
        /* Every message carries it from now on; these few start the gossip without waiting for a probe. */
        n = pick_random(s, NULL, helpers, MIN(MAX(s->config.indirect_probes, 1u), INDIRECT_MAX));
        for (size_t i = 0; i < n; i++)
                send_ping(s, &s->members[helpers[i]].u.id, s->next_seq++);
}

void swim_set_meta_gen(Swim *s, uint64_t meta_gen) {
        /* Every message carries self's entry, so nothing to queue. */
        s->members[0].u.meta_gen = MAX(s->members[0].u.meta_gen, meta_gen);
}

void swim_peer_closed(Swim *s, const SwimId *id, uint64_t now) {
        Member *m = id ? member_find(s, id) : NULL;

        if (!m || m == &s->members[0] || !probe_eligible(m))
                return;
        if (s->probe.active && id_eq(&s->probe.target, id))
                return;
        s->has_next = true;
        s->next_target = *id;
        s->next_attempt = 0;
        if (!s->probe.active && s->started && s->next_probe_usec > now)
                s->next_probe_usec = now;
}

const SwimUpdate *swim_find(const Swim *s, const SwimId *id) {
        const Member *m = id ? member_find(s, id) : NULL;
        return m ? &m->u : NULL;
}

uint32_t swim_incarnation(const Swim *s) {
        return s->members[0].u.incarnation;
}

size_t swim_n_members(const Swim *s) {
        return s->n_members;
}

static void member_info(const Swim *s, const Member *m, SwimMemberInfo *ret) {
        *ret = (SwimMemberInfo) {
                .update = m->u,
                .self = m == &s->members[0],
                .state_usec = m->state_usec,
                .last_heard_usec = m->last_heard_usec,
                .rtt_usec = m->rtt_usec,
        };
}

bool swim_member_next(const Swim *s, size_t *cursor, SwimMemberInfo *ret) {
        if (*cursor >= s->n_members)
                return false;
        member_info(s, &s->members[(*cursor)++], ret);
        return true;
}

int swim_member_info(const Swim *s, const SwimId *id, SwimMemberInfo *ret) {
        const Member *m = id ? member_find(s, id) : NULL;

        if (!m)
                return -ENOENT;
        member_info(s, m, ret);
        return 0;
}

Swim *swim_free(Swim *s) {
        if (!s)
                return NULL;
        free(s->members);
        free(s->table);
        free(s->probe_order);
        free(s->gossip);
        free(s->timed);
        free(s);
        return NULL;
}

int swim_new(const SwimConfig *config, const SwimId *self, const char *self_addr, uint32_t incarnation,
             uint64_t seed, const SwimCallbacks *callbacks, void *userdata, Swim **ret) {
        _cleanup_(swim_freep) Swim *s = NULL;
        SwimUpdate u = {
                .state = SWIM_ALIVE,
                .incarnation = MIN(incarnation, INCARNATION_MAX),
        };
        uint32_t idx;
        int r;

        if (!config || !self || !ret || id_is_null(self) || !addr_valid(self_addr))
                return -EINVAL;
        if (config->probe_interval_usec == 0 || config->probe_timeout_usec == 0 ||
            config->probe_timeout_usec >= config->probe_interval_usec || config->suspect_timeout_usec == 0 ||
            config->retransmit_mult == 0 || config->retransmit_mult > 100)
                return -EINVAL;

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->config = *config;
        if (callbacks)
                s->cb = *callbacks;
        s->userdata = userdata;
        for (size_t i = 0; i < ELEMENTSOF(s->rng); i++)
                s->rng[i] = splitmix64(&seed);
        s->hash_key[0] = splitmix64(&seed);
        s->hash_key[1] = splitmix64(&seed);
        s->next_seq = (uint32_t) rng_next(s);
        s->timed_min = UINT64_MAX;
        s->allocated = 8;
        s->members = calloc(s->allocated, sizeof *s->members);
        s->probe_order = calloc(s->allocated, sizeof *s->probe_order);
        s->gossip = calloc(s->allocated, sizeof *s->gossip);
        s->timed = calloc(s->allocated, sizeof *s->timed);
        s->table = calloc(s->allocated * 2, sizeof *s->table);
        if (!s->members || !s->probe_order || !s->gossip || !s->timed || !s->table)
                return -ENOMEM;
        s->table_mask = s->allocated * 2 - 1;

        u.id = *self;
        strcpy(u.addr, self_addr);
        r = member_add(s, &u, 0, &idx);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}
