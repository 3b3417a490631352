/* SPDX-License-Identifier: MIT */

/*
 * Runs N SWIM members (daemon/cluster/swim.c) in one process over a simulated
 * network: every message is lost with probability --loss, or delivered after
 * a uniform 1..20 ms. Members start knowing each other (as after a join),
 * --kills of them stop at known times spread over the first 60% of the run,
 * --joins newcomers join through a random member's snapshot. Everything is
 * driven by one event heap in simulated time and one seed, so a run is
 * deterministic.
 *
 * Measures: kill -> first SUSPECT, kill -> first DEAD, kill -> DEAD at every
 * live member; join -> known by every live member; false suspicions and
 * false deaths of live members, how long a false suspicion lasted at one
 * member, whether each refutation reached every member within 20 s;
 * messages per member per second.
 *
 * --check SECONDS exits 1 unless every kill reached every live member as DEAD
 * within SECONDS, no live member was declared DEAD and every join completed.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "macro.h"
#include "swim.h"

#define USEC_PER_SEC 1000000ULL
#define LATENCY_MIN_USEC 1000
#define LATENCY_MAX_USEC 20000
#define WARMUP_USEC (10 * USEC_PER_SEC)
/* A refutation should have reached everyone this long after it was made. */
#define AUDIT_USEC (20 * USEC_PER_SEC)

typedef enum EventKind {
        EV_TIMER,
        EV_DELIVER,
        EV_KILL,
        EV_JOIN,
        EV_AUDIT,
} EventKind;

typedef struct Event {
        uint64_t time, order;
        EventKind kind;
        uint32_t node, from;
        SwimMsg *msg;
} Event;

typedef struct Sim Sim;

typedef struct Node {
        Sim *sim;
        uint32_t index;
        Swim *swim;
        SwimId id;
        char addr[32];
        bool running;
        uint64_t start_usec;
        uint64_t scheduled;             /* the timer in the heap; UINT64_MAX: none */
        int kill;                       /* index in Sim.kills, -1 */
        int join;                       /* index in Sim.joins, -1 */
} Node;

typedef struct Kill {
        uint32_t node;
        uint64_t at, first_suspect, first_dead, all_dead;
        uint8_t *marked;                /* per observer: has it DEAD */
        uint32_t n_marked, n_observers;
} Kill;

typedef struct Join {
        uint32_t node;
        uint64_t at, all_known;
        uint8_t *knows;
        uint32_t n_known, n_observers;
} Join;

/* (observer, subject) -> when the observer began suspecting a live subject. */
typedef struct SuspectEntry {
        uint64_t key;                   /* observer * n + subject + 1; 0: empty */
        uint64_t since;
} SuspectEntry;

struct Sim {
        SwimConfig config;
        uint32_t n, n_total;
        double loss;
        uint64_t seconds, seed, rng;
        Node *nodes;
        Event *heap;
        size_t n_heap, heap_size;
        uint64_t order, now;
        SwimMsg **pool;
        size_t n_pool, pool_size;
        bool quiet;

        Kill *kills;
        size_t n_kills;
        Join *joins;
        size_t n_joins;
        uint32_t n_running;

        SuspectEntry *suspects;
        size_t suspects_mask, n_suspects;
        uint32_t *suspected_inc;        /* per subject: highest incarnation counted as a false suspicion, +1 */
        uint8_t *falsely_dead;

        uint64_t messages, updates_sent, lost;
        uint64_t false_suspicions, false_suspect_marks, false_deaths, false_dead_members, refutations;
        uint64_t longest_false_suspicion;
        uint64_t audits, audits_missed, audit_misses;
        uint64_t member_usec;           /* sum of the time members ran */
};

static uint64_t sim_rand(Sim *sim) {
        uint64_t z = (sim->rng += UINT64_C(0x9e3779b97f4a7c15));
        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

static double sim_uniform(Sim *sim) {
        return (double) (sim_rand(sim) >> 11) * 0x1.0p-53;
}

static uint64_t sim_below(Sim *sim, uint64_t n) {
        return (uint64_t) (((unsigned __int128) sim_rand(sim) * n) >> 64);
}

static void *xmalloc(size_t n) {
        void *p = calloc(1, n ? n : 1);
        if (!p) {
                fprintf(stderr, "Out of memory.\n");
                exit(EXIT_FAILURE);
        }
        return p;
}

/* Node i's id carries i in its first 4 bytes; the rest is random, like a real id. */
static SwimId node_id(Sim *sim, uint32_t i) {
        SwimId id;
        uint64_t a = sim_rand(sim), b = sim_rand(sim);
        memcpy(id.bytes, &a, 8);
        memcpy(id.bytes + 8, &b, 8);
        memcpy(id.bytes, &i, 4);
        return id;
}

static uint32_t id_node(const Sim *sim, const SwimId *id) {
        uint32_t i;
        memcpy(&i, id->bytes, 4);
        return i < sim->n_total && memcmp(&sim->nodes[i].id, id, sizeof *id) == 0 ? i : UINT32_MAX;
}

/* ---- the event heap, ordered by (time, order) ---- */

static bool event_before(const Event *a, const Event *b) {
        return a->time != b->time ? a->time < b->time : a->order < b->order;
}

static void heap_push(Sim *sim, Event e) {
        size_t i;

        if (sim->n_heap == sim->heap_size) {
                sim->heap_size = sim->heap_size ? sim->heap_size * 2 : 1024;
                sim->heap = realloc(sim->heap, sim->heap_size * sizeof *sim->heap);
                if (!sim->heap) {
                        fprintf(stderr, "Out of memory.\n");
                        exit(EXIT_FAILURE);
                }
        }
        e.order = sim->order++;
        for (i = sim->n_heap++; i > 0; i = (i - 1) / 2) {
                Event *parent = &sim->heap[(i - 1) / 2];
                if (!event_before(&e, parent))
                        break;
                sim->heap[i] = *parent;
        }
        sim->heap[i] = e;
}

static Event heap_pop(Sim *sim) {
        Event top = sim->heap[0], last = sim->heap[--sim->n_heap];
        size_t i = 0;

        for (;;) {
                size_t c = 2 * i + 1;
                if (c >= sim->n_heap)
                        break;
                if (c + 1 < sim->n_heap && event_before(&sim->heap[c + 1], &sim->heap[c]))
                        c++;
                if (!event_before(&sim->heap[c], &last))
                        break;
                sim->heap[i] = sim->heap[c];
                i = c;
        }
        if (sim->n_heap > 0)
                sim->heap[i] = last;
        return top;
}

static SwimMsg *msg_alloc(Sim *sim) {
        return sim->n_pool > 0 ? sim->pool[--sim->n_pool] : xmalloc(sizeof(SwimMsg));
}

static void msg_release(Sim *sim, SwimMsg *m) {
        if (sim->n_pool == sim->pool_size) {
                sim->pool_size = sim->pool_size ? sim->pool_size * 2 : 256;
                sim->pool = realloc(sim->pool, sim->pool_size * sizeof *sim->pool);
                if (!sim->pool) {
                        fprintf(stderr, "Out of memory.\n");
                        exit(EXIT_FAILURE);
                }
        }
        sim->pool[sim->n_pool++] = m;
}

static void schedule(Sim *sim, uint32_t i) {
        Node *node = &sim->nodes[i];
        uint64_t d;

        if (!node->running)
                return;
        d = MAX(swim_next_deadline(node->swim), sim->now);
        if (d == node->scheduled)
                return;
        node->scheduled = d;
        heap_push(sim, (Event) { .time = d, .kind = EV_TIMER, .node = i });
}

/* ---- what the members tell us ---- */

static void on_send(void *userdata, const SwimId *to, const char *to_addr, const SwimMsg *msg) {
        Node *node = userdata;
        Sim *sim = node->sim;
        uint32_t dst = id_node(sim, to);
        SwimMsg *copy;

        sim->messages++;
        sim->updates_sent += msg->n_updates;
        if (dst == UINT32_MAX)
                return;
        if (sim_uniform(sim) < sim->loss) {
                sim->lost++;
                return;
        }
        copy = msg_alloc(sim);
        *copy = *msg;
        heap_push(sim, (Event) {
                .time = sim->now + LATENCY_MIN_USEC + sim_below(sim, LATENCY_MAX_USEC - LATENCY_MIN_USEC + 1),
                .kind = EV_DELIVER,
                .node = dst,
                .from = node->index,
                .msg = copy,
        });
}

/* NULL when absent and !insert, or when the table is full. */
static SuspectEntry *suspect_find(Sim *sim, uint32_t observer, uint32_t subject, bool insert) {
        uint64_t key = (uint64_t) observer * sim->n_total + subject + 1;
        size_t i = (size_t) ((key * UINT64_C(0x9e3779b97f4a7c15)) >> 20) & sim->suspects_mask;

        while (sim->suspects[i].key != 0) {
                if (sim->suspects[i].key == key)
                        return &sim->suspects[i];
                i = (i + 1) & sim->suspects_mask;
        }
        if (!insert || sim->n_suspects * 4 > sim->suspects_mask * 3)
                return NULL;
        sim->n_suspects++;
        sim->suspects[i].key = key;
        return &sim->suspects[i];
}

static void kill_check_done(Sim *sim, Kill *k) {
        if (k->all_dead == 0 && k->n_marked >= k->n_observers)
                k->all_dead = sim->now;
}

static void join_check_done(Sim *sim, Join *j) {
        if (j->all_known == 0 && j->n_known >= j->n_observers)
                j->all_known = sim->now;
}

static bool observes(const Sim *sim, uint32_t observer, uint64_t since) {
        const Node *o = &sim->nodes[observer];
        return o->running && o->start_usec <= since;
}

static void on_member_changed(void *userdata, const SwimUpdate *member, SwimState old_state, bool is_new) {
        Node *node = userdata;
        Sim *sim = node->sim;
        uint32_t observer = node->index, subject = id_node(sim, &member->id);
        Node *s;

        if (sim->quiet || subject == UINT32_MAX)
                return;
        s = &sim->nodes[subject];
        if (subject == observer) {
                if (member->state == SWIM_ALIVE) {
                        sim->refutations++;
                        heap_push(sim, (Event) { .time = sim->now + AUDIT_USEC, .kind = EV_AUDIT, .node = subject,
                                                 .from = member->incarnation });
                }
                return;
        }

        if (s->join >= 0 && is_new) {
                Join *j = &sim->joins[s->join];
                if (observes(sim, observer, j->at) && !j->knows[observer]) {
                        j->knows[observer] = 1;
                        j->n_known++;
                        join_check_done(sim, j);
                }
        }

        if (s->kill >= 0 && sim->kills[s->kill].at <= sim->now) {
                Kill *k = &sim->kills[s->kill];
                if (member->state == SWIM_SUSPECT && k->first_suspect == 0)
                        k->first_suspect = sim->now;
                if (member->state == SWIM_DEAD) {
                        if (k->first_dead == 0)
                                k->first_dead = sim->now;
                        if (observes(sim, observer, k->at) && !k->marked[observer]) {
                                k->marked[observer] = 1;
                                k->n_marked++;
                                kill_check_done(sim, k);
                        }
                }
                return;
        }

        /* The subject is running: any suspicion is false. */
        if (member->state == SWIM_SUSPECT && (old_state != SWIM_SUSPECT || is_new)) {
                sim->false_suspect_marks++;
                if (sim->suspected_inc[subject] < member->incarnation + 1u) {
                        sim->suspected_inc[subject] = member->incarnation + 1u;
                        sim->false_suspicions++;
                }
                SuspectEntry *e = suspect_find(sim, observer, subject, true);
                if (e)
                        e->since = sim->now;
        } else if (old_state == SWIM_SUSPECT && !is_new) {
                SuspectEntry *e = suspect_find(sim, observer, subject, false);
                if (e && e->since != 0)
                        sim->longest_false_suspicion = MAX(sim->longest_false_suspicion, sim->now - e->since);
                if (e)
                        e->since = 0;
        }
        if (member->state == SWIM_DEAD) {
                sim->false_deaths++;
                if (!sim->falsely_dead[subject]) {
                        sim->falsely_dead[subject] = 1;
                        sim->false_dead_members++;
                }
        }
}

static const SwimCallbacks callbacks = {
        .send = on_send,
        .member_changed = on_member_changed,
};

/* ---- running ---- */

static void node_start(Sim *sim, uint32_t i) {
        Node *node = &sim->nodes[i];
        int r;

        r = swim_new(&sim->config, &node->id, node->addr, 0, sim->seed * 1000003 + i, &callbacks, node,
                     &node->swim);
        if (r < 0) {
                fprintf(stderr, "swim_new: %s\n", strerror(-r));
                exit(EXIT_FAILURE);
        }
        node->running = true;
        node->start_usec = sim->now;
        node->scheduled = UINT64_MAX;
        sim->n_running++;
}

static void node_kill(Sim *sim, uint32_t i) {
        Node *node = &sim->nodes[i];

        node->running = false;
        sim->n_running--;
        sim->member_usec += sim->now - node->start_usec;
        /* It observes nothing any more. */
        for (size_t k = 0; k < sim->n_kills; k++) {
                Kill *kl = &sim->kills[k];
                if (kl->node == i || kl->at > sim->now || !(node->start_usec <= kl->at))
                        continue;
                kl->n_observers--;
                if (kl->marked[i])
                        kl->n_marked--;
                kill_check_done(sim, kl);
        }
        for (size_t j = 0; j < sim->n_joins; j++) {
                Join *jn = &sim->joins[j];
                if (jn->node == i || jn->at > sim->now || !(node->start_usec <= jn->at))
                        continue;
                jn->n_observers--;
                if (jn->knows[i])
                        jn->n_known--;
                join_check_done(sim, jn);
        }
}

/* The running members but subject: those that should learn about it. */
static uint32_t count_observers(const Sim *sim, uint32_t subject) {
        uint32_t n = 0;
        for (uint32_t o = 0; o < sim->n_total; o++)
                n += o != subject && sim->nodes[o].running;
        return n;
}

static void node_join(Sim *sim, uint32_t i) {
        Join *j = &sim->joins[sim->nodes[i].join];
        uint32_t helper;
        SwimUpdate *snap;
        size_t n;

        /* A running member answers the join with its member list, and learns the newcomer. */
        do
                helper = (uint32_t) sim_below(sim, sim->n_total);
        while (!sim->nodes[helper].running);
        node_start(sim, i);
        j->n_observers = count_observers(sim, i);
        n = swim_snapshot(sim->nodes[helper].swim, NULL, 0);
        snap = xmalloc(n * sizeof *snap);
        swim_snapshot(sim->nodes[helper].swim, snap, n);
        (void) swim_merge(sim->nodes[i].swim, snap, n, sim->now);
        free(snap);

        snap = xmalloc(sizeof *snap);
        swim_snapshot(sim->nodes[i].swim, snap, 1);
        (void) swim_merge(sim->nodes[helper].swim, snap, 1, sim->now);
        free(snap);
        schedule(sim, i);
        schedule(sim, helper);
}

static void sim_setup(Sim *sim, size_t n_kills, size_t n_joins) {
        uint64_t end = sim->seconds * USEC_PER_SEC;
        uint64_t window_end = MAX(end * 6 / 10, WARMUP_USEC + 1);
        SwimUpdate *all;

        sim->n_total = sim->n + (uint32_t) n_joins;
        sim->nodes = xmalloc(sim->n_total * sizeof *sim->nodes);
        sim->suspected_inc = xmalloc(sim->n_total * sizeof *sim->suspected_inc);
        sim->falsely_dead = xmalloc(sim->n_total);
        sim->suspects_mask = (1u << 22) - 1;
        sim->suspects = xmalloc((sim->suspects_mask + 1) * sizeof *sim->suspects);
        for (uint32_t i = 0; i < sim->n_total; i++) {
                Node *node = &sim->nodes[i];
                node->id = node_id(sim, i);
                snprintf(node->addr, sizeof node->addr, "10.%u.%u.%u:7420", (i >> 16) & 255, (i >> 8) & 255, i & 255);
                node->sim = sim;
                node->index = i;
                node->kill = node->join = -1;
        }

        /* Everyone starts with everyone, as right after joining. */
        all = xmalloc(sim->n * sizeof *all);
        for (uint32_t i = 0; i < sim->n; i++)
                all[i] = (SwimUpdate) { .id = sim->nodes[i].id, .state = SWIM_ALIVE };
        for (uint32_t i = 0; i < sim->n; i++)
                snprintf(all[i].addr, sizeof all[i].addr, "%s", sim->nodes[i].addr);
        sim->quiet = true;
        for (uint32_t i = 0; i < sim->n; i++) {
                node_start(sim, i);
                (void) swim_merge(sim->nodes[i].swim, all, sim->n, 0);
                schedule(sim, i);
        }
        sim->quiet = false;
        free(all);

        /* Victims among the initial members, at even steps over the window. */
        n_kills = MIN(n_kills, (size_t) sim->n - 1);
        sim->kills = xmalloc(MAX(n_kills, 1u) * sizeof *sim->kills);
        for (size_t k = 0; k < n_kills; k++) {
                uint32_t v;
                do
                        v = (uint32_t) sim_below(sim, sim->n);
                while (sim->nodes[v].kill >= 0);
                sim->nodes[v].kill = (int) k;
                sim->kills[k] = (Kill) {
                        .node = v,
                        .at = WARMUP_USEC + (uint64_t) ((k + 0.5) * (double) (window_end - WARMUP_USEC) / n_kills),
                        .marked = xmalloc(sim->n_total),
                };
                heap_push(sim, (Event) { .time = sim->kills[k].at, .kind = EV_KILL, .node = v });
        }
        sim->n_kills = n_kills;

        sim->joins = xmalloc(MAX(n_joins, 1u) * sizeof *sim->joins);
        for (size_t j = 0; j < n_joins; j++) {
                uint32_t v = sim->n + (uint32_t) j;
                sim->nodes[v].join = (int) j;
                sim->joins[j] = (Join) {
                        .node = v,
                        .at = WARMUP_USEC + (uint64_t) ((j + 0.25) * (double) (window_end - WARMUP_USEC) / n_joins),
                        .knows = xmalloc(sim->n_total),
                };
                heap_push(sim, (Event) { .time = sim->joins[j].at, .kind = EV_JOIN, .node = v });
        }
        sim->n_joins = n_joins;
}

/* Did the subject's incarnation reach every member that was there when it was made? */
static void audit(Sim *sim, uint32_t subject, uint32_t incarnation) {
        uint64_t made = sim->now - AUDIT_USEC, missed = 0;

        if (!sim->nodes[subject].running)
                return;
        for (uint32_t o = 0; o < sim->n_total; o++) {
                const SwimUpdate *u;
                if (o == subject || !observes(sim, o, made))
                        continue;
                u = swim_find(sim->nodes[o].swim, &sim->nodes[subject].id);
                missed += !u || u->incarnation < incarnation;
        }
        sim->audits++;
        sim->audits_missed += missed > 0;
        sim->audit_misses += missed;
}

static void sim_run(Sim *sim) {
        uint64_t end = sim->seconds * USEC_PER_SEC;

        while (sim->n_heap > 0 && sim->heap[0].time <= end) {
                Event e = heap_pop(sim);
                Node *node = &sim->nodes[e.node];

                sim->now = e.time;
                switch (e.kind) {
                case EV_TIMER:
                        if (!node->running || node->scheduled != e.time)
                                break;
                        node->scheduled = UINT64_MAX;
                        swim_tick(node->swim, sim->now);
                        schedule(sim, e.node);
                        break;
                case EV_DELIVER:
                        if (node->running) {
                                swim_receive(node->swim, &sim->nodes[e.from].id, e.msg, sim->now);
                                schedule(sim, e.node);
                        }
                        msg_release(sim, e.msg);
                        break;
                case EV_KILL: {
                        Kill *k = &sim->kills[node->kill];
                        k->n_observers = count_observers(sim, e.node);
                        node_kill(sim, e.node);
                        break;
                }
                case EV_JOIN:
                        node_join(sim, e.node);
                        break;
                case EV_AUDIT:
                        audit(sim, e.node, e.from);
                        break;
                }
        }
        sim->now = end;
        for (uint32_t i = 0; i < sim->n_total; i++)
                if (sim->nodes[i].running)
                        sim->member_usec += end - sim->nodes[i].start_usec;
}

static void sim_done(Sim *sim) {
        for (uint32_t i = 0; i < sim->n_total; i++)
                swim_free(sim->nodes[i].swim);
        for (size_t k = 0; k < sim->n_kills; k++)
                free(sim->kills[k].marked);
        for (size_t j = 0; j < sim->n_joins; j++)
                free(sim->joins[j].knows);
        while (sim->n_heap > 0) {
                Event e = heap_pop(sim);
                free(e.msg);
        }
        for (size_t i = 0; i < sim->n_pool; i++)
                free(sim->pool[i]);
        free(sim->pool);
        free(sim->heap);
        free(sim->kills);
        free(sim->joins);
        free(sim->nodes);
        free(sim->suspects);
        free(sim->suspected_inc);
        free(sim->falsely_dead);
}

/* ---- figures ---- */

typedef struct Stats {
        size_t n, missing;
        double mean, p50, p99, max;
} Stats;

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return (x > y) - (x < y);
}

/* Over the kills (or joins) that got there; `missing` did not before the end. */
static Stats stats(const uint64_t *at, const uint64_t *when, size_t n) {
        Stats st = {};
        double *v = xmalloc(MAX(n, 1u) * sizeof *v);

        for (size_t i = 0; i < n; i++) {
                if (when[i] == 0)
                        st.missing++;
                else
                        v[st.n++] = (double) (when[i] - at[i]) / USEC_PER_SEC;
        }
        if (st.n > 0) {
                qsort(v, st.n, sizeof *v, cmp_double);
                for (size_t i = 0; i < st.n; i++)
                        st.mean += v[i] / (double) st.n;
                /* Nearest rank. */
                st.p50 = v[(size_t) ceil(0.50 * (double) st.n) - 1];
                st.p99 = v[(size_t) ceil(0.99 * (double) st.n) - 1];
                st.max = v[st.n - 1];
        }
        free(v);
        return st;
}

static void print_stats_row(const char *what, Stats st) {
        if (st.n == 0)
                printf("  %-26s %8s %8s %8s %8s %6zu missing\n", what, "-", "-", "-", "-", st.missing);
        else
                printf("  %-26s %7.2fs %7.2fs %7.2fs %7.2fs %6zu/%zu\n", what, st.mean, st.p50, st.p99, st.max, st.n,
                       st.n + st.missing);
}

static void print_stats_json(const char *name, Stats st, bool comma) {
        printf("\"%s\":{\"count\":%zu,\"missing\":%zu,\"mean\":%.3f,\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f}%s", name,
               st.n, st.missing, st.mean, st.p50, st.p99, st.max, comma ? "," : "");
}

typedef struct Report {
        Stats suspect, dead, all_dead, join;
        double messages_per_member_second, updates_per_message, lost_percent, wall;
} Report;

static void report_compute(const Sim *sim, Report *r) {
        size_t n = MAX(sim->n_kills, sim->n_joins);
        uint64_t *at = xmalloc(MAX(n, 1u) * sizeof *at), *when = xmalloc(MAX(n, 1u) * sizeof *when);

        for (size_t k = 0; k < sim->n_kills; k++) {
                at[k] = sim->kills[k].at;
                when[k] = sim->kills[k].first_suspect;
        }
        r->suspect = stats(at, when, sim->n_kills);
        for (size_t k = 0; k < sim->n_kills; k++)
                when[k] = sim->kills[k].first_dead;
        r->dead = stats(at, when, sim->n_kills);
        for (size_t k = 0; k < sim->n_kills; k++)
                when[k] = sim->kills[k].all_dead;
        r->all_dead = stats(at, when, sim->n_kills);
        for (size_t j = 0; j < sim->n_joins; j++) {
                at[j] = sim->joins[j].at;
                when[j] = sim->joins[j].all_known;
        }
        r->join = stats(at, when, sim->n_joins);
        free(at);
        free(when);

        r->messages_per_member_second = (double) sim->messages / ((double) sim->member_usec / USEC_PER_SEC);
        if (sim->messages > 0) {
                r->updates_per_message = (double) sim->updates_sent / (double) sim->messages;
                r->lost_percent = 100.0 * (double) sim->lost / (double) sim->messages;
        }
}

static void report_json(const Sim *sim, const Report *r) {
        const SwimConfig *cf = &sim->config;

        printf("{\"members\":%" PRIu32 ",\"loss\":%.4f,\"seconds\":%" PRIu64 ",\"kills\":%zu,\"joins\":%zu,"
               "\"seed\":%" PRIu64 ",",
               sim->n, sim->loss, sim->seconds, sim->n_kills, sim->n_joins, sim->seed);
        printf("\"config\":{\"probe_interval_usec\":%" PRIu64 ",\"probe_timeout_usec\":%" PRIu64
               ",\"suspect_timeout_usec\":%" PRIu64 ",\"dead_reap_usec\":%" PRIu64 ",\"indirect_probes\":%u,"
               "\"retransmit_mult\":%u},",
               cf->probe_interval_usec, cf->probe_timeout_usec, cf->suspect_timeout_usec, cf->dead_reap_usec,
               cf->indirect_probes, cf->retransmit_mult);
        print_stats_json("first_suspect", r->suspect, true);
        print_stats_json("first_dead", r->dead, true);
        print_stats_json("all_dead", r->all_dead, true);
        print_stats_json("join_known", r->join, true);
        printf("\"false_suspicions\":%" PRIu64 ",\"false_suspect_marks\":%" PRIu64 ",\"refutations\":%" PRIu64
               ",\"longest_false_suspicion\":%.3f,\"false_deaths\":%" PRIu64 ",\"false_dead_members\":%" PRIu64,
               sim->false_suspicions, sim->false_suspect_marks, sim->refutations,
               (double) sim->longest_false_suspicion / USEC_PER_SEC, sim->false_deaths, sim->false_dead_members);
        printf(",\"refutations_audited\":%" PRIu64 ",\"refutations_incomplete\":%" PRIu64
               ",\"refutation_misses\":%" PRIu64,
               sim->audits, sim->audits_missed, sim->audit_misses);
        printf(",\"messages\":%" PRIu64 ",\"messages_per_member_second\":%.3f,\"updates_per_message\":%.2f,"
               "\"wall_seconds\":%.2f}\n",
               sim->messages, r->messages_per_member_second, r->updates_per_message, r->wall);
}

static void report_table(const Sim *sim, const Report *r) {
        const SwimConfig *cf = &sim->config;

        printf("cluster-sim: %" PRIu32 " members, %.1f%% loss, %u-%u ms latency, %" PRIu64 " s, %zu kills, "
               "%zu joins, seed %" PRIu64 "\n",
               sim->n, sim->loss * 100, LATENCY_MIN_USEC / 1000, LATENCY_MAX_USEC / 1000, sim->seconds,
               sim->n_kills, sim->n_joins, sim->seed);
        printf("config: probe every %.0f ms, timeout %.0f ms, %u indirect; suspicion %.1f s x log10(n); "
               "retransmit x%u; reap %.0f s\n\n",
               cf->probe_interval_usec / 1e3, cf->probe_timeout_usec / 1e3, cf->indirect_probes,
               cf->suspect_timeout_usec / 1e6, cf->retransmit_mult, cf->dead_reap_usec / 1e6);
        printf("  %-26s %8s %8s %8s %8s %8s\n", "kill ->", "mean", "p50", "p99", "max", "count");
        print_stats_row("first SUSPECT", r->suspect);
        print_stats_row("first DEAD", r->dead);
        print_stats_row("DEAD at every live member", r->all_dead);
        if (sim->n_joins > 0) {
                printf("  %-26s\n", "join ->");
                print_stats_row("known by every member", r->join);
        }
        printf("\n  false suspicions          %8" PRIu64 " (live members suspected; %" PRIu64
               " members took it up)\n", sim->false_suspicions, sim->false_suspect_marks);
        printf("  refutations               %8" PRIu64 " (%" PRIu64 " of %" PRIu64 " checked had not reached every "
               "member after %llu s)\n",
               sim->refutations, sim->audits_missed, sim->audits, AUDIT_USEC / USEC_PER_SEC);
        printf("  longest false suspicion   %7.2fs (at one member, until refuted)\n",
               (double) sim->longest_false_suspicion / USEC_PER_SEC);
        printf("  false deaths              %8" PRIu64 " (%" PRIu64 " live members declared DEAD)\n",
               sim->false_deaths, sim->false_dead_members);
        printf("  messages                  %8.2f per member per second (%.1f updates each, %.1f%% lost)\n",
               r->messages_per_member_second, r->updates_per_message, r->lost_percent);
        printf("  wall time                 %7.2fs\n", r->wall);
}

/* --check: false, with the reasons on stderr, if the run broke a promise. */
static bool report_check(const Sim *sim, const Report *r, uint64_t bound_sec) {
        size_t late = 0;
        bool ok = true;

        for (size_t k = 0; k < sim->n_kills; k++)
                late += sim->kills[k].all_dead == 0 ||
                        sim->kills[k].all_dead - sim->kills[k].at > bound_sec * USEC_PER_SEC;
        if (late > 0) {
                fprintf(stderr, "FAIL: %zu of %zu kills not DEAD at every live member within %" PRIu64 " s\n", late,
                        sim->n_kills, bound_sec);
                ok = false;
        }
        if (sim->false_deaths > 0) {
                fprintf(stderr, "FAIL: %" PRIu64 " live members declared DEAD\n", sim->false_deaths);
                ok = false;
        }
        if (r->join.missing > 0) {
                fprintf(stderr, "FAIL: %zu joins not known everywhere\n", r->join.missing);
                ok = false;
        }
        return ok;
}

static void usage(const char *prog) {
        printf("%s [OPTIONS]\n"
               "  --members N       members at the start (1000)\n"
               "  --loss P          message loss probability (0.1)\n"
               "  --kills K         members stopped during the run (20)\n"
               "  --joins J         members joining during the run (0)\n"
               "  --seconds S       simulated seconds (120)\n"
               "  --seed X          (1)\n"
               "  --json            one JSON object instead of the table\n"
               "  --check SECONDS   exit 1 unless all kills are DEAD everywhere within SECONDS, every join\n"
               "                    completes and no live member is declared DEAD\n"
               "  --probe-interval MS, --probe-timeout MS, --suspect-timeout MS, --indirect K,\n"
               "  --retransmit-mult L\n"
               "                    override swim_config_default()\n",
               prog);
}

static int parse_u64(const char *s, uint64_t *ret) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || *end || s[0] == '-')
                return -EINVAL;
        *ret = v;
        return 0;
}

int main(int argc, char *argv[]) {
        enum {
                ARG_MEMBERS = 0x100, ARG_LOSS, ARG_KILLS, ARG_JOINS, ARG_SECONDS, ARG_SEED, ARG_JSON, ARG_CHECK,
                ARG_INTERVAL, ARG_TIMEOUT, ARG_SUSPECT, ARG_INDIRECT, ARG_RETRANSMIT,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "members", required_argument, NULL, ARG_MEMBERS },
                { "loss", required_argument, NULL, ARG_LOSS },
                { "kills", required_argument, NULL, ARG_KILLS },
                { "joins", required_argument, NULL, ARG_JOINS },
                { "seconds", required_argument, NULL, ARG_SECONDS },
                { "seed", required_argument, NULL, ARG_SEED },
                { "json", no_argument, NULL, ARG_JSON },
                { "check", required_argument, NULL, ARG_CHECK },
                { "probe-interval", required_argument, NULL, ARG_INTERVAL },
                { "probe-timeout", required_argument, NULL, ARG_TIMEOUT },
                { "suspect-timeout", required_argument, NULL, ARG_SUSPECT },
                { "indirect", required_argument, NULL, ARG_INDIRECT },
                { "retransmit-mult", required_argument, NULL, ARG_RETRANSMIT },
                {}
        };
        Sim sim = {
                .n = 1000,
                .loss = 0.1,
                .seconds = 120,
                .seed = 1,
        };
        uint64_t n_kills = 20, n_joins = 0, v, check = 0;
        Report rep = {};
        int ret = EXIT_SUCCESS;
        bool json = false;
        struct timespec t0, t1;
        int c;

        swim_config_default(&sim.config);
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                if (c == 'h') {
                        usage(argv[0]);
                        return EXIT_SUCCESS;
                }
                if (c == '?')
                        return EXIT_FAILURE;
                if (c == ARG_JSON) {
                        json = true;
                        continue;
                }
                if (c == ARG_LOSS) {
                        char *end;
                        sim.loss = strtod(optarg, &end);
                        if (*end || end == optarg || !(sim.loss >= 0.0 && sim.loss < 1.0)) {
                                fprintf(stderr, "--loss wants a probability in [0, 1): %s\n", optarg);
                                return EXIT_FAILURE;
                        }
                        continue;
                }
                if (parse_u64(optarg, &v) < 0) {
                        fprintf(stderr, "Not a number: %s\n", optarg);
                        return EXIT_FAILURE;
                }
                switch (c) {
                case ARG_MEMBERS: sim.n = (uint32_t) MIN(v, (uint64_t) SWIM_MEMBERS_MAX); break;
                case ARG_KILLS: n_kills = v; break;
                case ARG_JOINS: n_joins = MIN(v, (uint64_t) SWIM_MEMBERS_MAX); break;
                case ARG_SECONDS: sim.seconds = v; break;
                case ARG_SEED: sim.seed = v; break;
                case ARG_CHECK: check = v; break;
                case ARG_INTERVAL: sim.config.probe_interval_usec = v * 1000; break;
                case ARG_TIMEOUT: sim.config.probe_timeout_usec = v * 1000; break;
                case ARG_SUSPECT: sim.config.suspect_timeout_usec = v * 1000; break;
                case ARG_INDIRECT: sim.config.indirect_probes = (unsigned) v; break;
                case ARG_RETRANSMIT: sim.config.retransmit_mult = (unsigned) v; break;
                }
        }
        if (sim.n < 2 || sim.seconds == 0) {
                fprintf(stderr, "Need at least 2 members and 1 second.\n");
                return EXIT_FAILURE;
        }
        sim.rng = sim.seed;

        clock_gettime(CLOCK_MONOTONIC, &t0);
        sim_setup(&sim, n_kills, n_joins);
        sim_run(&sim);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        report_compute(&sim, &rep);
        rep.wall = (double) (t1.tv_sec - t0.tv_sec) + (double) (t1.tv_nsec - t0.tv_nsec) * 1e-9;
        if (json)
                report_json(&sim, &rep);
        else
                report_table(&sim, &rep);
        if (check > 0 && !report_check(&sim, &rep, check))
                ret = EXIT_FAILURE;

        sim_done(&sim);
        return ret;
}
