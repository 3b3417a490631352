/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * SWIM membership and failure detection, as a pure state machine: no
 * sockets, no clock, no randomness of its own. The caller passes the time
 * into every call, delivers received messages with swim_receive(), sends
 * what the send() callback hands it, and arms one timer for
 * swim_next_deadline() that calls swim_tick(). Random choices come from a
 * PRNG seeded by swim_new() (give it a random seed in the daemon, a fixed
 * one in tests): the same seed, inputs and times give the same outputs.
 *
 * Every period one member is probed, in a shuffled round-robin order: PING;
 * without an ACK after probe_timeout, PING_REQ to indirect_probes others
 * that ping it for us; still nothing at the end of the period: the probe
 * failed. Two failed probes in a row (the second one in the next period):
 * SUSPECT. A suspect that hears about it refutes with a higher incarnation;
 * otherwise the suspicion times out, a last PING goes unanswered and it is
 * DEAD. DEAD and LEFT members are forgotten dead_reap_usec later. Changes
 * travel piggybacked on the protocol messages (at most SWIM_MAX_UPDATES
 * each; the sender's own entry is always one of them). The design choices
 * are explained at the top of swim.c.
 *
 * Callbacks run from inside the call that caused them (swim_tick(),
 * swim_receive(), ...). They may use the const functions (swim_find(),
 * swim_member_next(), ...) but must not call the others on the same Swim.
 * Pointers they receive are valid for the call only.
 *
 * Ownership: the Swim copies everything it is given; messages handed to
 * send() belong to the Swim and must be copied or encoded during the call.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SWIM_ADDR_MAX 64
#define SWIM_MAX_UPDATES 16     /* piggybacked per message */
/* Members known at once, self included; news about more is dropped. */
#define SWIM_MEMBERS_MAX 65536u

typedef struct SwimId {
        uint8_t bytes[16];
} SwimId;

/* The numeric values are part of the protocol: only ever append. */
typedef enum SwimState {
        SWIM_ALIVE,
        SWIM_SUSPECT,
        SWIM_DEAD,
        SWIM_LEFT,
        _SWIM_STATE_MAX,
} SwimState;

typedef struct SwimUpdate {
        SwimId id;
        char addr[SWIM_ADDR_MAX];       /* NUL-terminated */
        uint32_t incarnation;
        SwimState state;
        uint64_t meta_gen;              /* generation of the member's shared state (see "state") */
} SwimUpdate;

/* The numeric values are part of the protocol: only ever append. */
typedef enum SwimMsgType {
        SWIM_PING,
        SWIM_ACK,
        SWIM_PING_REQ,
        _SWIM_MSG_MAX,
} SwimMsgType;

typedef struct SwimMsg {
        SwimMsgType type;
        uint32_t seq;
        SwimId target;          /* PING_REQ: the member to probe; ACK: the member that answered;
                                 * PING: the member it is meant for */
        size_t n_updates;
        SwimUpdate updates[SWIM_MAX_UPDATES];
} SwimMsg;

typedef struct SwimConfig {
        uint64_t probe_interval_usec;   /* one probe per period */
        uint64_t probe_timeout_usec;    /* PING without ACK for this long: ask others (< probe_interval) */
        uint64_t suspect_timeout_usec;  /* a suspicion lasts this times max(1, log10(members)) */
        uint64_t dead_reap_usec;        /* DEAD and LEFT members are forgotten after this */
        unsigned indirect_probes;       /* members asked to probe for us (PING_REQ); above 16 counts as 16 */
        unsigned retransmit_mult;       /* each update is piggybacked retransmit_mult * ceil(log10(n + 1))
                                         * times; 1..100 */
} SwimConfig;

/* 1 s, 500 ms, 4 s, 60 s, 4 indirect probes, retransmit x8: tuned with tests/cluster-sim.c (see swim.c). */
void swim_config_default(SwimConfig *ret);

typedef struct SwimCallbacks {
        /* Send msg to member `to`. to_addr is its address, "" when the member is not known (a PING from
         * a stranger): answer on the connection the PING came from. Losing a message is fine. */
        void (*send)(void *userdata, const SwimId *to, const char *to_addr, const SwimMsg *msg);
        /* A member was learned (is_new; old_state is then its state) or its state, incarnation or
         * address changed. Self is reported too when it refutes a suspicion or leaves. A member is
         * reported DEAD or LEFT once; it is forgotten silently dead_reap_usec later. */
        void (*member_changed)(void *userdata, const SwimUpdate *member, SwimState old_state, bool is_new);
        /* A member's meta_gen increased (also right after member_changed() for a new member whose
         * meta_gen is above 0): its shared state is worth fetching. For self, it means the cluster
         * remembered a higher generation from an earlier run, and self's went above it. */
        void (*meta_changed)(void *userdata, const SwimId *id, uint64_t meta_gen);
} SwimCallbacks;

typedef struct Swim Swim;

/* -EINVAL for a bad config (zero interval, probe_timeout not below the interval, ...), a null self id,
 * or an address that does not fit; -ENOMEM. The self entry starts ALIVE with the given incarnation
 * (persist the one swim_incarnation() reports, so that a restarted node outranks its old entries; one
 * that does not is bumped above them when it hears of them). callbacks, and each of them, may be NULL.
 * seed drives every random choice and keys the member table's hash: random in the daemon. */
int swim_new(const SwimConfig *config, const SwimId *self, const char *self_addr, uint32_t incarnation,
             uint64_t seed, const SwimCallbacks *callbacks, void *userdata, Swim **ret);
Swim *swim_free(Swim *s);
static inline void swim_freep(Swim **s) {
        if (*s)
                swim_free(*s);
}

/* Runs whatever is due at now_usec: probe rounds, indirect probes, suspicions, timeouts, reaping. */
void swim_tick(Swim *s, uint64_t now_usec);
/* When swim_tick() next has something to do (0 before the first tick: call it at once). */
uint64_t swim_next_deadline(const Swim *s);

/* A message from member `from` (authenticated by the transport). Invalid updates in it are dropped,
 * and so are messages of unknown type or from self. */
void swim_receive(Swim *s, const SwimId *from, const SwimMsg *msg, uint64_t now_usec);

/* Full state from another member (join, push-pull): applied with the usual precedence, reported
 * through the callbacks, but not gossiped on (the rest of the cluster has it). Returns how many
 * updates changed something; invalid ones are skipped. */
int swim_merge(Swim *s, const SwimUpdate *updates, size_t n, uint64_t now_usec);
/* Copies at most max members (self first) to out; returns how many there are, like snprintf(). */
size_t swim_snapshot(const Swim *s, SwimUpdate *out, size_t max);
/* A member to start from (from the configuration or a join): ALIVE at incarnation 0 unless known,
 * so it gets probed and learns about us from the PING. 0, or -EINVAL (self, null id, bad address),
 * -ENOSPC (SWIM_MEMBERS_MAX), -ENOMEM. */
int swim_add_seed(Swim *s, const SwimId *id, const char *addr);

/* Self becomes LEFT with a higher incarnation; a few members are told at once, the rest by gossip.
 * Keep ticking and receiving for a few periods so that it spreads. No one is suspected afterwards. */
void swim_leave(Swim *s, uint64_t now_usec);
/* Sets self's meta_gen (ignored unless above the current one); every message carries it. */
void swim_set_meta_gen(Swim *s, uint64_t meta_gen);
/* The transport lost its connection to a member. Not evidence of failure by itself (a restart, an
 * idle timeout), so the member is probed out of turn: now if no probe is in flight, else next. */
void swim_peer_closed(Swim *s, const SwimId *id, uint64_t now_usec);

/* NULL when unknown. Valid until the next non-const call. */
const SwimUpdate *swim_find(const Swim *s, const SwimId *id);
uint32_t swim_incarnation(const Swim *s);
/* Members known, self and DEAD/LEFT ones not yet reaped included. */
size_t swim_n_members(const Swim *s);

typedef struct SwimMemberInfo {
        SwimUpdate update;
        bool self;
        uint64_t state_usec;            /* when it was learned or its state last changed here */
        uint64_t last_heard_usec;       /* last message from it; 0: none */
        uint64_t rtt_usec;              /* smoothed PING -> ACK round trip; 0: no sample yet */
} SwimMemberInfo;

/* Iterates over the members: start with *cursor = 0; false at the end. The order is arbitrary and
 * only stable while the Swim does not change. */
bool swim_member_next(const Swim *s, size_t *cursor, SwimMemberInfo *ret);
/* 0, or -ENOENT when the member is not known. */
int swim_member_info(const Swim *s, const SwimId *id, SwimMemberInfo *ret);

const char *swim_state_to_string(SwimState state);
