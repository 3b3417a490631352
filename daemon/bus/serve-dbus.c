/* SPDX-License-Identifier: MIT */
/*
 * Models and jobs on D-Bus: the Manager's LoadModel, UnloadModel,
 * ListModels, Generate, Chat, Tokenize and BenchModel, and the Model and Job
 * objects. All on the loop thread; the work itself runs on the device
 * workers (serve/serve.c).
 */
#include <assert.h>
#include <libgen.h>
#include <stdio.h>
#include <sys/stat.h>

#include "chat.h"
#include "cluster.h"
#include "route.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "names.h"
#include "polkit.h"
#include "serve-dbus.h"
#include "serve-internal.h"
#include "time-util.h"
#include "tokenizer.h"
#include "utf8.h"

#define MODEL_PATH_PREFIX INFERD_OBJECT_PATH "/model"
#define JOB_PATH_PREFIX INFERD_OBJECT_PATH "/job"
#define JOB_IFACE "org.inferd.infer1.Job"
#define MODEL_IFACE "org.inferd.infer1.Model"
/* A finished job's object stays this long for its caller to read. */
#define JOB_LINGER_USEC (300ULL * 1000000ULL)

const char *job_state_to_string(JobState s) {
        static const char *const names[] = {
                [JOB_QUEUED] = "queued", [JOB_RUNNING] = "running", [JOB_DONE] = "done",
                [JOB_FAILED] = "failed", [JOB_CANCELLED] = "cancelled",
        };
        return names[s];
}

Served *served_find(Manager *m, const char *name) {
        for (Served *s = m->served; s; s = s->next)
                if (streq(s->name, name))
                        return s;
        return NULL;
}

static void served_free(Served *s) {
        if (!s)
                return;
        model_free(s->model);
        sd_bus_message_unref(s->pending);
        free(s->name);
        free(s->path);
        free(s->object_path);
        free(s);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Served *, served_free);

static void served_unlink(Manager *m, Served *s) {
        for (Served **p = &m->served; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        return;
                }
}

static Job *job_find(Manager *m, uint32_t id) {
        for (Job *j = m->jobs; j; j = j->next)
                if (j->id == id)
                        return j;
        return NULL;
}

static void job_free(Job *j) {
        if (!j)
                return;
        sd_bus_slot_unref(j->owner_watch);
        sd_bus_message_unref(j->pending);
        free(j->prompt);
        strv_free(j->stop);
        free(j->model);
        if (j->remote) {
                job_request_done(&j->remote->req);
                free(j->remote->tokens);
                free(j->remote->tried);
                free(j->remote);
        }
        free(j->object_path);
        free(j->owner);
        free(j->error);
        free(j);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Job *, job_free);

bool job_ended(const Job *j) {
        return j->state == JOB_DONE || j->state == JOB_FAILED || j->state == JOB_CANCELLED;
}

/* Ended jobs kept for their callers at most: a caller that stays connected
 * and starts job after job must not make the daemon grow without bound. */
#define JOBS_ENDED_MAX 256u

void jobs_gc(Manager *m) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        unsigned kept = 0;
        /* Newest first: past the limit, the oldest ended jobs go. */
        for (Job **p = &m->jobs; *p;) {
                Job *j = *p;
                bool ended = job_ended(j) && j->worker_done;
                if (ended && (now - j->ended_usec > JOB_LINGER_USEC || !j->owner || kept >= JOBS_ENDED_MAX)) {
                        *p = j->next;
                        job_free(j);
                        continue;
                }
                if (ended)
                        kept++;
                p = &j->next;
        }
}

static void job_end(Job *j, const char *reason, const char *error, uint64_t prompt_usec, uint64_t generate_usec);

/* ---- errors ---- */

static int invalid(sd_bus_error *error, const char *fmt, ...) _printf_(2, 3);
static int invalid(sd_bus_error *error, const char *fmt, ...) {
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        return sd_bus_error_set(error, INFERD_ERROR_INVALID_ARGUMENT, buf);
}

static int not_found(sd_bus_error *error, const char *name) {
        return sd_bus_error_setf(error, INFERD_ERROR_NOT_FOUND,
                                 "No model named '%s' is loaded (see 'inferctl models').", name);
}

/* ---- options: an a{sv} read into the destinations a table names ---- */

typedef enum BusOptType {
        OPT_U32,
        OPT_I32,
        OPT_U64,
        OPT_BOOL,
        OPT_FLOAT,      /* sent as d */
        OPT_STRV,       /* as, malloc'ed */
        OPT_STRING,     /* s, strdup'ed */
} BusOptType;

typedef struct BusOption {
        const char *name;
        BusOptType type;
        void *dest;
        bool *seen;     /* if not NULL, set when the option is given */
} BusOption;

static int read_one_option(sd_bus_message *msg, const BusOption *o) {
        int b, r;
        double d;
        const char *str;

        switch (o->type) {
        case OPT_U32:
                return sd_bus_message_read(msg, "v", "u", o->dest);
        case OPT_I32:
                return sd_bus_message_read(msg, "v", "i", o->dest);
        case OPT_U64:
                return sd_bus_message_read(msg, "v", "t", o->dest);
        case OPT_BOOL:
                r = sd_bus_message_read(msg, "v", "b", &b);
                if (r >= 0)
                        *(bool *) o->dest = b;
                return r;
        case OPT_FLOAT:
                r = sd_bus_message_read(msg, "v", "d", &d);
                if (r >= 0)
                        *(float *) o->dest = (float) d;
                return r;
        case OPT_STRV:
                r = sd_bus_message_enter_container(msg, 'v', "as");
                if (r >= 0) {
                        strv_free(*(char ***) o->dest);
                        *(char ***) o->dest = NULL;
                        r = sd_bus_message_read_strv(msg, o->dest);
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(msg);
                return r;
        case OPT_STRING:
                r = sd_bus_message_read(msg, "v", "s", &str);
                if (r >= 0) {
                        free(*(char **) o->dest);
                        if (!(*(char **) o->dest = strdup(str)))
                                return -ENOMEM;
                }
                return r;
        }
        return -EINVAL;
}

/* Unknown keys and wrong types are InvalidArgument errors that name the key. */
static int read_option_dict(sd_bus_message *msg, const BusOption *opts, size_t n, sd_bus_error *error) {
        const char *key;
        int r;

        r = sd_bus_message_enter_container(msg, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(msg, 'e', "sv")) > 0) {
                const BusOption *o = NULL;
                r = sd_bus_message_read(msg, "s", &key);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n && !o; i++)
                        if (streq(opts[i].name, key))
                                o = &opts[i];
                if (!o) {
                        char known[512] = "";
                        for (size_t i = 0; i < n; i++)
                                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                                         opts[i].name);
                        return invalid(error, "Unknown option '%s' (known: %s).", key, known);
                }
                r = read_one_option(msg, o);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return invalid(error, "Option '%s' has the wrong type (see org.inferd.infer1.Manager.xml).", key);
                if (o->seen)
                        *o->seen = true;
                r = sd_bus_message_exit_container(msg);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(msg);
}

/* ---- loading and unloading ---- */

static int pick_device(Manager *m, uint32_t want, bool have_want, sd_bus_error *error, uint32_t *ret) {
        size_t n = gpu_instance_n_devices(m->gpu);
        uint64_t best_free = 0;
        bool found = false;

        if (have_want) {
                if (want >= n || !m->engines || !m->engines[want])
                        return invalid(error, "Device %u is not one this node runs models on (see 'inferctl devices').",
                                       want);
                *ret = want;
                return 0;
        }
        for (size_t i = 0; m->engines && i < n; i++) {
                uint64_t used = 0, free_ = 0;
                if (!m->engines[i])
                        continue;
                (void) gpu_device_memory_usage(m->gpu, i, &used, &free_);
                if (!found || free_ > best_free) {
                        best_free = free_;
                        *ret = (uint32_t) i;
                        found = true;
                }
        }
        if (!found)
                return sd_bus_error_set(error, INFERD_ERROR_DEVICE,
                                        "This node has no device to run models on (see Devices= in inferd.conf(5)).");
        return 0;
}

static bool model_name_valid(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > 128)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      strchr("-_.:+", *p)))
                        return false;
        return true;
}

int method_load_model(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *path, *name;
        uint32_t device = 0, context = 0;
        bool have_device = false;
        int r;

        r = sd_bus_message_read(msg, "ss", &path, &name);
        if (r < 0)
                return r;
        const BusOption opts[] = {
                { "device", OPT_U32, &device, &have_device },
                { "context", OPT_U32, &context },
        };
        r = read_option_dict(msg, opts, ELEMENTSOF(opts), error);
        if (r < 0)
                return r;

        if (path[0] != '/')
                return invalid(error, "The model path '%s' must be absolute.", path);
        _cleanup_free_ char *base = strdup(path), *derived = NULL;
        if (!base)
                return -ENOMEM;
        if (!*name) {
                const char *b = basename(base);
                derived = strdup(b);
                if (!derived)
                        return -ENOMEM;
                size_t l = strlen(derived);
                if (l > 5 && streq(derived + l - 5, ".gguf"))
                        derived[l - 5] = 0;
                name = derived;
        }
        if (!model_name_valid(name))
                return invalid(error, "Invalid model name '%s': use 1-128 letters, digits and '-_.:+'.", name);
        if (served_find(m, name))
                return sd_bus_error_setf(error, INFERD_ERROR_BUSY, "A model named '%s' is already loaded.", name);

        /* The caller may not be allowed to load: ask before touching the file. */
        r = bus_verify_polkit_async(m->polkit, msg, INFERD_POLKIT_ACTION_LOAD_MODEL, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        struct stat st;
        if (stat(path, &st) < 0)
                return sd_bus_error_setf(error, INFERD_ERROR_NOT_FOUND, "Cannot open the model file '%s': %s.", path,
                                         strerror(errno));
        if (!S_ISREG(st.st_mode))
                return invalid(error, "'%s' is not a regular file.", path);

        uint32_t dev = 0;
        r = pick_device(m, device, have_device, error, &dev);
        if (r < 0)
                return r;

        _cleanup_(served_freep) Served *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->manager = m;
        s->device = dev;
        s->max_ctx = context ? MIN(context, m->config->max_context) : m->config->max_context;
        s->name = strdup(name);
        s->path = strdup(path);
        if (!s->name || !s->path)
                return -ENOMEM;
        r = sd_bus_path_encode(MODEL_PATH_PREFIX, name, &s->object_path);
        if (r < 0)
                return r;
        r = serve_queue_load(s, m->workers[dev], m->engines[dev]);
        if (r < 0)
                return r;
        s->pending = sd_bus_message_ref(msg);
        s->next = m->served;
        m->served = TAKE_PTR(s);
        log_info("Loading model '%s' from %s on device %u.", name, path, dev);
        return 1; /* replied when loaded */
}

void served_load_finished(Served *s, int r, Model *model, const char *error) {
        Manager *m = s->manager;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = TAKE_PTR(s->pending);

        if (r < 0) {
                log_fields(LOG_ERR, r, LOG_FIELDS("MODEL", s->name), "Failed to load model '%s': %s", s->name,
                           error ? error : strerror(-r));
                if (call)
                        (void) sd_bus_reply_method_errorf(call, r == -ENOMEM ? INFERD_ERROR_DEVICE : INFERD_ERROR_INVALID_ARGUMENT,
                                                          "Failed to load '%s': %s", s->path,
                                                          error ? error : strerror(-r));
                served_unlink(m, s);
                served_free(s);
        } else {
                s->model = model;
                /* A job's context: the model's own, capped by the config (or LoadModel's "context"). */
                uint32_t n_ctx = model_hparams(model)->n_ctx_train;
                if (n_ctx > 0 && n_ctx < s->max_ctx)
                        s->max_ctx = n_ctx;
                const ModelInfo *info = model_info(model);
                log_fields(LOG_INFO, 0, LOG_FIELDS(INFERD_MESSAGE_MODEL_LOADED, "MODEL", s->name),
                           "Loaded model '%s' (%s, %s) on device %u, %.1f MiB of device memory.", s->name,
                           model_hparams(model)->arch, info->file_type, s->device, info->device_bytes / 1048576.0);
                if (call)
                        (void) sd_bus_reply_method_return(call, "o", s->object_path);
        }
        bus_loop_kick(m->bus_loop);
}

int method_unload_model(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *name;
        int r;

        r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        Served *s = served_find(m, name);
        if (!s)
                return not_found(error, name);
        r = bus_verify_polkit_async(m->polkit, msg, INFERD_POLKIT_ACTION_UNLOAD_MODEL, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (!s->model || s->unloading || s->pending)
                return sd_bus_error_setf(error, INFERD_ERROR_BUSY, "Model '%s' is still loading or unloading.", name);

        /* Running and queued jobs end first: the worker runs the free after them. */
        for (Job *j = m->jobs; j; j = j->next)
                if (j->served == s && !job_ended(j))
                        atomic_store(&j->cancel, true);
        r = serve_queue_unload(s, m->workers[s->device]);
        if (r < 0)
                return r;
        s->unloading = true;
        s->pending = sd_bus_message_ref(msg);
        return 1;
}

void served_unload_finished(Served *s) {
        Manager *m = s->manager;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = TAKE_PTR(s->pending);

        log_fields(LOG_INFO, 0, LOG_FIELDS("MODEL", s->name), "Unloaded model '%s'.", s->name);
        if (call)
                (void) sd_bus_reply_method_return(call, NULL);
        /* The worker ran its jobs before this, so they have all ended: their
         * objects go with the model they point to. */
        for (Job **p = &m->jobs; *p;) {
                Job *j = *p;
                if (j->served == s) {
                        assert(j->worker_done);
                        *p = j->next;
                        job_free(j);
                } else
                        p = &j->next;
        }
        served_unlink(m, s);
        served_free(s);
        bus_loop_kick(m->bus_loop);
}

static int append_model(sd_bus_message *reply, const Served *s) {
        const ModelInfo *info = s->model ? model_info(s->model) : NULL;
        const ModelHParams *hp = s->model ? model_hparams(s->model) : NULL;
        return sd_bus_message_append(reply, "(ssststutus)", s->name, s->path, hp ? hp->arch : "",
                                     info ? info->n_params : 0, info ? info->file_type : "",
                                     info ? info->file_size : 0, s->device, info ? info->device_bytes : 0,
                                     s->model ? s->max_ctx : 0, s->model ? "ready" : "loading");
}

int method_list_models(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ssststutus)");
        if (r < 0)
                return r;
        for (Served *s = m->served; s; s = s->next) {
                r = append_model(reply, s);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* ---- jobs ---- */

void serve_job_cancel(Job *j) {
        if (job_ended(j))
                return;
        atomic_store(&j->cancel, true);
        /* Elsewhere: tell that member; here and queued: the worker would only skip it later. Either way
         * the caller is not kept waiting. */
        if (j->remote) {
                route_cancel(j->manager->cluster, j);
                job_end(j, "cancelled", NULL, 0, 0);
        } else if (j->state == JOB_QUEUED)
                job_end(j, "cancelled", NULL, 0, 0);
}

static int job_owner_vanished(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Job *j = userdata;
        const char *name, *old, *new_owner;

        if (sd_bus_message_read(msg, "sss", &name, &old, &new_owner) < 0 || *new_owner)
                return 0;
        /* Nobody is left to read the stream: stop, and let the job go once it has ended. */
        atomic_store(&j->cancel, true);
        j->owner_watch = sd_bus_slot_unref(j->owner_watch);
        free(j->owner);
        j->owner = NULL;
        log_debug("Job %u: its caller left the bus, cancelling.", j->id);
        serve_job_cancel(j);
        jobs_gc(j->manager);
        return 0;
}

/* ---- requests: what Generate, Chat and a peer's "job" have in common ---- */

void job_request_done(JobRequest *r) {
        free(r->model);
        free(r->prompt);
        for (size_t i = 0; i < r->n_messages; i++) {
                free(r->roles[i]);
                free(r->contents[i]);
        }
        free(r->roles);
        free(r->contents);
        strv_free(r->stop);
        free(r->template_name);
        free(r->resume);
        *r = (JobRequest) {};
}

static int strdup_or_null(const char *s, char **ret) {
        *ret = NULL;
        return s && !(*ret = strdup(s)) ? -ENOMEM : 0;
}

int job_request_copy(const JobRequest *from, JobRequest *to) {
        _cleanup_(job_request_done) JobRequest c = *from;
        c.model = c.prompt = c.template_name = NULL;
        c.roles = c.contents = c.stop = NULL;
        c.resume = NULL;
        c.n_messages = 0;
        if (strdup_or_null(from->model, &c.model) < 0 || strdup_or_null(from->prompt, &c.prompt) < 0 ||
            strdup_or_null(from->template_name, &c.template_name) < 0)
                return -ENOMEM;
        if (from->stop && !(c.stop = strv_copy(from->stop)))
                return -ENOMEM;
        if (from->n_messages > 0) {
                c.roles = calloc(from->n_messages, sizeof(char *));
                c.contents = calloc(from->n_messages, sizeof(char *));
                if (!c.roles || !c.contents)
                        return -ENOMEM;
                for (; c.n_messages < from->n_messages; c.n_messages++)
                        if (!(c.roles[c.n_messages] = strdup(from->roles[c.n_messages])) ||
                            !(c.contents[c.n_messages] = strdup(from->contents[c.n_messages]))) {
                                c.n_messages++;
                                return -ENOMEM;
                        }
        }
        if (from->n_resume > 0) {
                c.resume = malloc(from->n_resume * sizeof(int32_t));
                if (!c.resume)
                        return -ENOMEM;
                memcpy(c.resume, from->resume, from->n_resume * sizeof(int32_t));
        }
        *to = c;
        c = (JobRequest) {};
        return 0;
}

void job_request_init(JobRequest *r) {
        *r = (JobRequest) { .max_tokens = 256 };
        sampler_params_default(&r->sampling);
}

/* Generate's and Chat's options into req. */
static int read_request_options(sd_bus_message *msg, JobRequest *req, sd_bus_error *error) {
        BusOption opts[] = {
                { "max_tokens", OPT_U32, &req->max_tokens },
                { "temperature", OPT_FLOAT, &req->sampling.temperature },
                { "top_k", OPT_I32, &req->sampling.top_k },
                { "top_p", OPT_FLOAT, &req->sampling.top_p },
                { "min_p", OPT_FLOAT, &req->sampling.min_p },
                { "repeat_penalty", OPT_FLOAT, &req->sampling.repeat_penalty },
                { "repeat_last_n", OPT_U32, &req->sampling.repeat_last_n },
                { "seed", OPT_U64, &req->sampling.seed },
                { "stop", OPT_STRV, &req->stop },
                /* Generate only, or Chat only: */
                req->chat ? (BusOption) { "template", OPT_STRING, &req->template_name }
                          : (BusOption) { "add_bos", OPT_BOOL, &req->add_bos, &req->have_add_bos },
        };
        return read_option_dict(msg, opts, ELEMENTSOF(opts), error);
}

/* The checks that need no model: the same for every node a request may go to. */
static int request_validate(Manager *m, const JobRequest *req, sd_bus_error *error) {
        const Config *c = m->config;
        _cleanup_free_ char *why = NULL;
        size_t n_stop = 0;

        if (sampler_params_validate(&req->sampling, &why) < 0)
                return invalid(error, "%s", why ? why : "Invalid sampling options.");
        if (req->max_tokens == 0)
                return invalid(error, "max_tokens must be at least 1.");
        if (req->max_tokens > c->max_tokens)
                return invalid(error, "max_tokens=%u is above this node's limit of %u (MaxTokens= in inferd.conf).",
                               req->max_tokens, c->max_tokens);
        for (char **s = req->stop; s && *s; s++, n_stop++)
                if (!**s || strlen(*s) > 256 || !utf8_is_valid(*s))
                        return invalid(error, "Stop strings must be 1 to 256 bytes of UTF-8.");
        if (n_stop > 16)
                return invalid(error, "At most 16 stop strings.");
        if (!req->chat && strlen(req->prompt) > c->max_prompt_bytes)
                return invalid(error, "The prompt is %zu bytes, above this node's limit of %" PRIu64 " (MaxPromptBytes=).",
                               strlen(req->prompt), c->max_prompt_bytes);
        size_t total = 0;
        for (size_t i = 0; i < req->n_messages; i++)
                total += strlen(req->contents[i]);
        if (total > c->max_prompt_bytes)
                return invalid(error, "The messages are %zu bytes, above this node's limit of %" PRIu64
                                      " (MaxPromptBytes=).", total, c->max_prompt_bytes);
        return 0;
}

/* Jobs not ended yet; with routed ones, those relayed for callers here but run on other members. */
static unsigned jobs_active(Manager *m, bool routed) {
        unsigned n = 0;
        for (Job *j = m->jobs; j; j = j->next)
                if (!job_ended(j) && (routed || !j->remote))
                        n++;
        return n;
}

unsigned serve_jobs_active(Manager *m) {
        return jobs_active(m, false);
}

Job *serve_job_find(Manager *m, uint32_t id) {
        return job_find(m, id);
}

/* A job with its id and caller (msg may be NULL: a peer's job has no bus caller). */
static int job_new(Manager *m, sd_bus_message *msg, const char *model, JobKind kind, Job **ret,
                   sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        int r;

        jobs_gc(m);
        if (jobs_active(m, true) >= m->config->max_jobs)
                return sd_bus_error_setf(error, INFERD_ERROR_BUSY,
                                         "This node already has %u jobs queued or running (MaxJobs=); try again later.",
                                         m->config->max_jobs);

        _cleanup_(job_freep) Job *j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        j->manager = m;
        j->kind = kind;
        j->id = ++m->last_job_id;
        j->max_tokens = 256;
        sampler_params_default(&j->sampling);
        atomic_init(&j->cancel, false);
        j->model = strdup(model);
        if (!j->model)
                return -ENOMEM;
        if (msg) {
                j->owner = strdup(sd_bus_message_get_sender(msg) ?: "");
                if (!j->owner)
                        return -ENOMEM;
                r = sd_bus_query_sender_creds(msg, SD_BUS_CREDS_EUID, &creds);
                if (r >= 0)
                        r = sd_bus_creds_get_euid(creds, &j->owner_uid);
                if (r < 0)
                        j->owner_uid = (uid_t) -1;
        } else
                j->owner_uid = (uid_t) -1;
        /* /org/inferd/infer1/job/N: plain digits are a valid path element. */
        if (asprintf(&j->object_path, JOB_PATH_PREFIX "/%u", j->id) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(j);
        return 0;
}

static int served_usable(Served *s, const char *model, sd_bus_error *error) {
        if (!s)
                return not_found(error, model);
        if (!s->model || s->unloading)
                return sd_bus_error_setf(error, INFERD_ERROR_BUSY, "Model '%s' is %s.", model,
                                         s->unloading ? "being unloaded" : "still loading");
        return 0;
}

/* Queues j (local: on its device's worker) and answers the caller with its path. */
static int job_start(Manager *m, sd_bus_message *msg, Job *j, sd_bus_error *error) {
        char match[512];
        int r;

        if (j->owner && *j->owner) {
                snprintf(match, sizeof match,
                         "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                         "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='%s'",
                         j->owner);
                r = sd_bus_add_match_async(m->bus, &j->owner_watch, match, job_owner_vanished, NULL, j);
                if (r < 0)
                        return r;
        }
        if (j->remote)
                j->worker_done = true; /* no worker will ever see it */
        else {
                r = serve_queue_job(j, m->workers[j->served->device]);
                if (r < 0)
                        return r;
                j->served->n_jobs++;
        }
        j->state = JOB_QUEUED;
        j->next = m->jobs;
        m->jobs = j;
        cluster_state_changed(m->cluster);
        if (j->kind == JOB_BENCH || !msg)
                return 0;
        return sd_bus_reply_method_return(msg, "o", j->object_path);
}

static int tokenize_into(const Served *s, Job *j, const char *text, bool add_special, bool parse_special,
                         sd_bus_error *error) {
        int32_t *ids = NULL;
        size_t n = 0;
        int r;

        r = tokenizer_encode(model_tokenizer(s->model), text, strlen(text), add_special, parse_special, &ids, &n);
        if (r < 0)
                return invalid(error, "The prompt could not be tokenized: %s.", strerror(-r));
        j->prompt = ids;
        j->n_prompt = (uint32_t) n;
        if (n == 0)
                return invalid(error, "The prompt is empty.");
        return 0;
}

/* The prompt in the model's own terms: chat template, tokens, resumed tokens, context limits. */
static int job_prepare_local(Job *j, Served *s, const JobRequest *req, sd_bus_error *error) {
        int r;

        j->served = s;
        j->max_tokens = req->max_tokens;
        j->sampling = req->sampling;
        if (req->stop && !(j->stop = strv_copy(req->stop)))
                return -ENOMEM;

        if (req->chat) {
                _cleanup_free_ ChatMessage *msgs = calloc(MAX(req->n_messages, 1u), sizeof *msgs);
                _cleanup_free_ char *why = NULL, *bos = NULL, *eos = NULL, *prompt = NULL;
                ChatTemplate t;
                if (!msgs)
                        return -ENOMEM;
                for (size_t i = 0; i < req->n_messages; i++)
                        msgs[i] = (ChatMessage) { .role = req->roles[i], .content = req->contents[i] };
                if (req->template_name) {
                        if (chat_template_from_name(req->template_name, &t) < 0)
                                return invalid(error, "Unknown chat template '%s' (known: llama2, llama3, chatml, "
                                                      "mistral, zephyr).", req->template_name);
                } else {
                        const char *jinja = NULL;
                        size_t len = 0;
                        _cleanup_free_ char *jz = NULL;
                        if (gguf_get_string(model_gguf(s->model), "tokenizer.chat_template", &jinja, &len) >= 0)
                                jz = strndup(jinja, len);
                        if (chat_template_detect(jz, model_hparams(s->model)->arch, &t) < 0)
                                return invalid(error, "Model '%s' has no chat template inferd knows; name one with "
                                                      "the 'template' option.", s->name);
                }
                const Tokenizer *tok = model_tokenizer(s->model);
                const char *text;
                size_t len = 0;
                if ((text = tokenizer_token_text(tok, tokenizer_bos(tok), &len)))
                        bos = strndup(text, len);
                if ((text = tokenizer_token_text(tok, tokenizer_eos(tok), &len)))
                        eos = strndup(text, len);
                r = chat_format(t, msgs, req->n_messages, true, bos, eos, &prompt, &why);
                if (r < 0)
                        return invalid(error, "%s", why ? why : "The messages cannot be formatted.");
                /* The template writes special tokens as text: they must be parsed as such. */
                r = tokenize_into(s, j, prompt, true, true, error);
        } else
                r = tokenize_into(s, j, req->prompt, req->have_add_bos ? req->add_bos : true, false, error);
        if (r < 0)
                return r;

        if (req->n_resume > 0) {
                uint32_t n_vocab = model_hparams(s->model)->n_vocab;
                for (size_t i = 0; i < req->n_resume; i++)
                        if (req->resume[i] < 0 || (uint32_t) req->resume[i] >= n_vocab)
                                return invalid(error, "Resumed token %d is not in the model's vocabulary.",
                                               req->resume[i]);
                int32_t *p = reallocarray(j->prompt, j->n_prompt + req->n_resume, sizeof(int32_t));
                if (!p)
                        return -ENOMEM;
                j->prompt = p;
                memcpy(p + j->n_prompt, req->resume, req->n_resume * sizeof(int32_t));
                j->n_prompt += (uint32_t) req->n_resume;
                j->n_resume = (uint32_t) req->n_resume;
                j->resume_bytes = req->resume_bytes;
        }
        if (j->n_prompt >= s->max_ctx)
                return invalid(error, "The prompt is %u tokens; the context of model '%s' holds %u.", j->n_prompt,
                               s->name, s->max_ctx);
        /* Generation stops when the context is full ("length"). */
        j->max_tokens = MIN(j->max_tokens, s->max_ctx - j->n_prompt);
        return 0;
}

/* Generate and Chat (msg), or an in-process client (sink): here, or on the member that route.c picks.
 * Takes req. */
static int submit(Manager *m, sd_bus_message *msg, JobRequest *req, const JobSink *sink, void *sink_data,
                  Job **ret_job, sd_bus_error *error) {
        _cleanup_(job_freep) Job *j = NULL;
        Member *target = NULL;
        int r;

        r = request_validate(m, req, error);
        if (r < 0)
                return r;
        Served *s = served_find(m, req->model);
        bool here = s && s->model && !s->unloading;
        r = route_pick(m->cluster, req->model, here, &target);
        if (r == -ENOENT && !s && cluster_state(m->cluster) == CLUSTER_ACTIVE)
                return sd_bus_error_setf(error, INFERD_ERROR_NOT_FOUND,
                                         "No member of the cluster has a model named '%s' ready (see 'inferctl "
                                         "cluster members').", req->model);
        if (r == -ENOENT)
                return served_usable(s, req->model, error); /* says why it cannot run here */
        if (r < 0)
                return r;
        r = job_new(m, msg, req->model, JOB_GENERATE, &j, error);
        if (r < 0)
                return r;
        j->sink = sink;
        j->sink_data = sink_data;
        if (!target) {
                r = job_prepare_local(j, s, req, error);
                if (r < 0)
                        return r;
        } else {
                j->remote = calloc(1, sizeof *j->remote);
                if (!j->remote)
                        return -ENOMEM;
                j->remote->req = *req;
                *req = (JobRequest) {};
                j->max_tokens = j->remote->req.max_tokens;
                r = route_send(m->cluster, j, target);
                if (r < 0)
                        return sd_bus_error_setf(error, INFERD_ERROR_BUSY, "Cannot reach the member serving '%s': %s.",
                                                 j->model, strerror(-r));
        }
        r = job_start(m, msg, j, error);
        if (r < 0)
                return r;
        if (ret_job)
                *ret_job = j;
        TAKE_PTR(j);
        return 1;
}

static int serve_submit(Manager *m, sd_bus_message *msg, JobRequest *req, sd_bus_error *error) {
        return submit(m, msg, req, NULL, NULL, NULL, error);
}

int serve_submit_job(Manager *m, JobRequest *req, const JobSink *sink, void *userdata, Job **ret_job,
                     sd_bus_error *error) {
        int r = submit(m, NULL, req, sink, userdata, ret_job, error);
        return r < 0 ? r : 0;
}

void serve_job_detach(Job *j) {
        j->sink = NULL;
        j->sink_data = NULL;
        serve_job_cancel(j);
}

int serve_submit_for_peer(Manager *m, JobRequest *req, const uint8_t origin[16], uint32_t origin_job,
                          char **ret_error) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(job_request_done) JobRequest owned = *req;
        _cleanup_(job_freep) Job *j = NULL;
        int r;

        *req = (JobRequest) {};
        r = request_validate(m, &owned, &error);
        if (r >= 0)
                r = served_usable(served_find(m, owned.model), owned.model, &error);
        if (r >= 0)
                r = job_new(m, NULL, owned.model, JOB_GENERATE, &j, &error);
        if (r >= 0) {
                j->from_peer = true;
                memcpy(j->origin, origin, sizeof j->origin);
                j->origin_job = origin_job;
                r = job_prepare_local(j, served_find(m, owned.model), &owned, &error);
        }
        if (r >= 0)
                r = job_start(m, NULL, j, &error);
        if (r < 0) {
                if (ret_error)
                        *ret_error = strdup(error.message ? error.message : strerror(-r));
                return r;
        }
        log_debug("Job %u runs model '%s' for another member (its job %u).", j->id, j->model, origin_job);
        TAKE_PTR(j);
        return 0;
}

int serve_job_move_here(Job *j, char **ret_error) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(job_request_done) JobRequest req = {};
        RemoteJob *rj = j->remote;
        Manager *m = j->manager;
        Served *s = served_find(m, j->model);
        int r;

        r = served_usable(s, j->model, &error);
        if (r >= 0)
                r = job_request_copy(&rj->req, &req);
        if (r >= 0 && rj->n_tokens > 0) {
                free(req.resume);
                req.resume = malloc(rj->n_tokens * sizeof(int32_t));
                if (!req.resume)
                        r = -ENOMEM;
                else {
                        memcpy(req.resume, rj->tokens, rj->n_tokens * sizeof(int32_t));
                        req.n_resume = rj->n_tokens;
                        req.resume_bytes = rj->text_bytes;
                        req.max_tokens = req.max_tokens > rj->n_tokens ? req.max_tokens - (uint32_t) rj->n_tokens : 1;
                }
        }
        uint32_t n_prompt = j->n_prompt;
        if (r >= 0)
                r = job_prepare_local(j, s, &req, &error);
        if (r >= 0)
                r = serve_queue_job(j, m->workers[s->device]);
        if (r < 0) {
                j->served = NULL;
                free(j->prompt);
                j->prompt = NULL;
                j->n_prompt = n_prompt;
                strv_free(j->stop);
                j->stop = NULL;
                if (ret_error)
                        *ret_error = strdup(error.message ?: strerror(-r));
                return r;
        }
        s->n_jobs++;
        j->worker_done = false;
        j->remote = NULL;
        job_request_done(&rj->req);
        free(rj->tokens);
        free(rj->tried);
        free(rj);
        return 0;
}

int method_generate(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(job_request_done) JobRequest req;
        Manager *m = userdata;
        const char *model, *prompt;
        int r;

        job_request_init(&req);
        r = sd_bus_message_read(msg, "ss", &model, &prompt);
        if (r < 0)
                return r;
        req.model = strdup(model);
        req.prompt = strdup(prompt);
        if (!req.model || !req.prompt)
                return -ENOMEM;
        r = read_request_options(msg, &req, error);
        if (r < 0)
                return r;
        return serve_submit(m, msg, &req, error);
}

int method_chat(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(job_request_done) JobRequest req;
        Manager *m = userdata;
        const char *model;
        size_t allocated = 0;
        int r;

        job_request_init(&req);
        req.chat = true;
        r = sd_bus_message_read(msg, "s", &model);
        if (r < 0)
                return r;
        if (!(req.model = strdup(model)))
                return -ENOMEM;
        r = sd_bus_message_enter_container(msg, 'a', "(ss)");
        if (r < 0)
                return r;
        for (;;) {
                const char *role, *content;
                r = sd_bus_message_read(msg, "(ss)", &role, &content);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (req.n_messages >= 1024)
                        return invalid(error, "Too many messages (at most 1024).");
                if (req.n_messages == allocated) {
                        allocated = allocated ? allocated * 2 : 8;
                        char **a = reallocarray(req.roles, allocated, sizeof *a);
                        if (!a)
                                return -ENOMEM;
                        req.roles = a;
                        a = reallocarray(req.contents, allocated, sizeof *a);
                        if (!a)
                                return -ENOMEM;
                        req.contents = a;
                }
                req.roles[req.n_messages] = strdup(role);
                req.contents[req.n_messages] = strdup(content);
                req.n_messages++;
                if (!req.roles[req.n_messages - 1] || !req.contents[req.n_messages - 1])
                        return -ENOMEM;
        }
        r = sd_bus_message_exit_container(msg);
        if (r < 0)
                return r;
        r = read_request_options(msg, &req, error);
        if (r < 0)
                return r;
        return serve_submit(m, msg, &req, error);
}

int method_tokenize(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        const char *model, *text;
        bool add_special = false, parse_special = false;
        _cleanup_free_ int32_t *ids = NULL;
        size_t n = 0;
        int r;

        r = sd_bus_message_read(msg, "ss", &model, &text);
        if (r < 0)
                return r;
        const BusOption opts[] = {
                { "add_special", OPT_BOOL, &add_special },
                { "parse_special", OPT_BOOL, &parse_special },
        };
        r = read_option_dict(msg, opts, ELEMENTSOF(opts), error);
        if (r < 0)
                return r;
        Served *s = served_find(m, model);
        if (!s)
                return not_found(error, model);
        if (!s->model)
                return sd_bus_error_setf(error, INFERD_ERROR_BUSY, "Model '%s' is still loading.", model);
        if (strlen(text) > m->config->max_prompt_bytes)
                return invalid(error, "The text is above this node's limit of %" PRIu64 " bytes (MaxPromptBytes=).",
                               m->config->max_prompt_bytes);
        const Tokenizer *tok = model_tokenizer(s->model);
        r = tokenizer_encode(tok, text, strlen(text), add_special, parse_special, &ids, &n);
        if (r < 0)
                return invalid(error, "The text could not be tokenized: %s.", strerror(-r));

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append_array(reply, 'i', ids, n * sizeof(int32_t));
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "s");
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                size_t len = 0;
                const char *piece = tokenizer_token_text(tok, ids[i], &len);
                _cleanup_free_ char *p = strndup(piece ? piece : "", piece ? len : 0);
                if (!p)
                        return -ENOMEM;
                /* D-Bus strings must be valid UTF-8; a byte piece may not be. */
                r = sd_bus_message_append(reply, "s", utf8_is_valid(p) ? p : "\xef\xbf\xbd");
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

int method_bench_model(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *model;
        _cleanup_(job_freep) Job *j = NULL;
        int r;

        r = sd_bus_message_read(msg, "s", &model);
        if (r < 0)
                return r;
        Served *s = served_find(m, model);
        r = served_usable(s, model, error);
        if (r < 0)
                return r;
        r = job_new(m, msg, model, JOB_BENCH, &j, error);
        if (r < 0)
                return r;
        j->served = s;
        j->bench_prompt = 512;
        j->bench_gen = 128;
        j->bench_reps = 3;
        const BusOption opts[] = {
                { "n_prompt", OPT_U32, &j->bench_prompt },
                { "n_gen", OPT_U32, &j->bench_gen },
                { "repetitions", OPT_U32, &j->bench_reps },
        };
        r = read_option_dict(msg, opts, ELEMENTSOF(opts), error);
        if (r < 0)
                return r;
        if (j->bench_reps == 0 || j->bench_reps > 100 || (j->bench_prompt == 0 && j->bench_gen == 0))
                return invalid(error, "repetitions must be 1-100, and n_prompt or n_gen above 0.");
        if ((uint64_t) j->bench_prompt + j->bench_gen + 1 > j->served->max_ctx)
                return invalid(error, "n_prompt + n_gen = %u does not fit the model's context of %u.",
                               j->bench_prompt + j->bench_gen, j->served->max_ctx);
        j->pending = sd_bus_message_ref(msg);
        r = job_start(m, msg, j, error);
        if (r < 0)
                return r;
        TAKE_PTR(j);
        return 1;
}

/* ---- what the workers report ---- */

static int send_to_owner(Job *j, sd_bus_message *sig) {
        int r = sd_bus_message_set_destination(sig, j->owner);
        if (r < 0)
                return r;
        return sd_bus_send(j->manager->bus, sig, NULL);
}

void job_started(Job *j, size_t n_prompt) {
        if (job_ended(j))
                return;
        j->state = JOB_RUNNING;
        if (j->remote && !j->n_prompt)
                j->n_prompt = (uint32_t) n_prompt; /* the first member's count: later ones include resumed tokens */
        if (j->from_peer)
                route_job_started(j->manager->cluster, j);
        if (j->sink && j->sink->started)
                j->sink->started(j, j->sink_data);
}

void job_piece(Job *j, const char *text, const int32_t *tokens, size_t n_tokens) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *sig = NULL;
        int r;

        if (job_ended(j))
                return;
        j->generated += (uint32_t) n_tokens;
        if (j->from_peer) {
                route_job_piece(j->manager->cluster, j, text, tokens, n_tokens);
                return;
        }
        if (j->sink) {
                if (j->sink->piece)
                        j->sink->piece(j, text, tokens, n_tokens, j->sink_data);
                return;
        }
        if (!j->owner)
                return;
        r = sd_bus_message_new_signal(j->manager->bus, &sig, j->object_path, JOB_IFACE, "Piece");
        if (r >= 0)
                r = sd_bus_message_append(sig, "s", utf8_is_valid(text) ? text : "\xef\xbf\xbd");
        if (r >= 0)
                r = sd_bus_message_append_array(sig, 'i', tokens, n_tokens * sizeof(int32_t));
        if (r >= 0)
                r = send_to_owner(j, sig);
        if (r < 0)
                log_debug_errno(r, "Job %u: failed to send a piece: %m", j->id);
        bus_loop_kick(j->manager->bus_loop);
}

static void bench_reply(Job *j, const char *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = TAKE_PTR(j->pending), *reply = NULL;
        if (!call)
                return;
        if (error || !streq(j->finish_reason, "length")) {
                (void) sd_bus_reply_method_errorf(call, INFERD_ERROR_DEVICE, "Benchmark failed: %s",
                                                  error ? error : j->finish_reason);
                return;
        }
        int r = sd_bus_message_new_method_return(call, &reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "a{sv}", 9, "pp_tokens_per_sec", "d", j->bench.pp_tps, "pp_stddev",
                                          "d", j->bench.pp_stddev, "tg_tokens_per_sec", "d", j->bench.tg_tps,
                                          "tg_stddev", "d", j->bench.tg_stddev, "n_prompt", "u", j->bench_prompt,
                                          "n_gen", "u", j->bench_gen, "repetitions", "u", j->bench_reps, "device",
                                          "s", gpu_instance_device(j->manager->gpu, j->served->device)->name,
                                          "model_bytes", "t", model_info(j->served->model)->device_bytes);
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to send benchmark results: %m");
}

/* The job is over for its caller: state, counts, the Finished signal (or the benchmark's reply). */
static void job_end(Job *j, const char *reason, const char *error, uint64_t prompt_usec, uint64_t generate_usec) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *sig = NULL;
        Manager *m = j->manager;
        int r;

        j->finish_reason = reason;
        j->state = streq(reason, "error") ? JOB_FAILED : streq(reason, "cancelled") ? JOB_CANCELLED : JOB_DONE;
        j->prompt_usec = prompt_usec;
        j->generate_usec = generate_usec;
        j->ended_usec = now_usec(CLOCK_MONOTONIC);
        if (error && !(j->error = strdup(error)))
                log_oom();
        if (j->served && j->served->n_jobs > 0)
                j->served->n_jobs--;
        if (error)
                log_fields(LOG_WARNING, 0, LOG_FIELDS("JOB", j->object_path, "MODEL", j->model), "Job %u failed: %s",
                           j->id, error);
        if (j->served && j->kind == JOB_GENERATE && j->generated > j->n_resume)
                cluster_note_speed(m->cluster, j->generated, generate_usec);
        cluster_state_changed(m->cluster);

        if (j->kind == JOB_BENCH)
                bench_reply(j, error);
        else if (j->from_peer) {
                log_debug("Job %u for another member (its job %u) ended: %s.", j->id, j->origin_job, reason);
                route_job_end(m->cluster, j);
        }
        else if (j->sink) {
                const JobSink *sink = TAKE_PTR(j->sink);
                if (sink->finished)
                        sink->finished(j, TAKE_PTR(j->sink_data));
        }
        else if (j->owner) {
                r = sd_bus_message_new_signal(m->bus, &sig, j->object_path, JOB_IFACE, "Finished");
                if (r >= 0)
                        r = sd_bus_message_append(sig, "suutts", reason, j->n_prompt, j->generated, prompt_usec,
                                                  generate_usec, j->error ? j->error : "");
                if (r >= 0)
                        r = send_to_owner(j, sig);
                if (r < 0)
                        log_debug_errno(r, "Job %u: failed to send Finished: %m", j->id);
        }
        if (!j->owner)
                j->owner_watch = sd_bus_slot_unref(j->owner_watch);
        bus_loop_kick(m->bus_loop);
}

void job_finished(Job *j, const char *reason, const char *error, uint64_t prompt_usec, uint64_t generate_usec) {
        j->worker_done = true;
        /* A job cancelled while queued has already ended for its caller. */
        if (!job_ended(j))
                job_end(j, reason, error, prompt_usec, generate_usec);
        jobs_gc(j->manager);
}

/* ---- Model and Job objects ---- */

static int model_object_find(sd_bus *bus, const char *path, const char *iface, void *userdata, void **ret_found,
                             sd_bus_error *error) {
        Manager *m = userdata;
        _cleanup_free_ char *name = NULL;
        if (sd_bus_path_decode(path, MODEL_PATH_PREFIX, &name) <= 0)
                return 0;
        Served *s = served_find(m, name);
        if (!s)
                return 0;
        *ret_found = s;
        return 1;
}

static int model_nodes(sd_bus *bus, const char *prefix, void *userdata, char ***ret, sd_bus_error *error) {
        Manager *m = userdata;
        size_t n = 0;
        for (Served *s = m->served; s; s = s->next)
                n++;
        _cleanup_strv_free_ char **l = calloc(n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        n = 0;
        for (Served *s = m->served; s; s = s->next)
                if (!(l[n++] = strdup(s->object_path)))
                        return -ENOMEM;
        *ret = TAKE_PTR(l);
        return 1;
}

#define MODEL_PROP(fn, type, expr)                                                                             \
        static int fn(sd_bus *bus, const char *path, const char *iface, const char *prop, sd_bus_message *reply, \
                      void *userdata, sd_bus_error *error) {                                                    \
                Served *s = userdata;                                                                          \
                const ModelInfo *info = s->model ? model_info(s->model) : NULL;                                 \
                const ModelHParams *hp = s->model ? model_hparams(s->model) : NULL;                             \
                (void) info;                                                                                   \
                (void) hp;                                                                                     \
                return sd_bus_message_append(reply, type, expr);                                               \
        }
MODEL_PROP(model_prop_name, "s", s->name)
MODEL_PROP(model_prop_path, "s", s->path)
MODEL_PROP(model_prop_arch, "s", hp ? hp->arch : "")
MODEL_PROP(model_prop_params, "t", info ? info->n_params : (uint64_t) 0)
MODEL_PROP(model_prop_quant, "s", info ? info->file_type : "")
MODEL_PROP(model_prop_file_size, "t", info ? info->file_size : (uint64_t) 0)
MODEL_PROP(model_prop_device, "u", s->device)
MODEL_PROP(model_prop_device_memory, "t", info ? info->device_bytes : (uint64_t) 0)
MODEL_PROP(model_prop_context, "u", s->model ? s->max_ctx : 0)
MODEL_PROP(model_prop_state, "s", s->model ? "ready" : "loading")

static const sd_bus_vtable model_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", model_prop_name, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Path", "s", model_prop_path, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Architecture", "s", model_prop_arch, 0, 0),
        SD_BUS_PROPERTY("Parameters", "t", model_prop_params, 0, 0),
        SD_BUS_PROPERTY("Quantization", "s", model_prop_quant, 0, 0),
        SD_BUS_PROPERTY("FileSize", "t", model_prop_file_size, 0, 0),
        SD_BUS_PROPERTY("Device", "u", model_prop_device, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DeviceMemory", "t", model_prop_device_memory, 0, 0),
        SD_BUS_PROPERTY("ContextLength", "u", model_prop_context, 0, 0),
        SD_BUS_PROPERTY("State", "s", model_prop_state, 0, 0),
        SD_BUS_VTABLE_END,
};

static int job_object_find(sd_bus *bus, const char *path, const char *iface, void *userdata, void **ret_found,
                           sd_bus_error *error) {
        Manager *m = userdata;
        const char *id = startswith(path, JOB_PATH_PREFIX "/");
        char *end;
        if (!id || !*id || *id < '0' || *id > '9')
                return 0;
        errno = 0;
        unsigned long v = strtoul(id, &end, 10);
        if (errno || *end || v > UINT32_MAX)
                return 0;
        Job *j = job_find(m, (uint32_t) v);
        if (!j || j->kind != JOB_GENERATE)
                return 0;
        *ret_found = j;
        return 1;
}

static int job_nodes(sd_bus *bus, const char *prefix, void *userdata, char ***ret, sd_bus_error *error) {
        Manager *m = userdata;
        size_t n = 0;
        for (Job *j = m->jobs; j; j = j->next)
                n++;
        _cleanup_strv_free_ char **l = calloc(n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        n = 0;
        for (Job *j = m->jobs; j; j = j->next)
                if (j->kind == JOB_GENERATE && !(l[n++] = strdup(j->object_path)))
                        return -ENOMEM;
        *ret = TAKE_PTR(l);
        return 1;
}

#define JOB_PROP(fn, type, expr)                                                                               \
        static int fn(sd_bus *bus, const char *path, const char *iface, const char *prop, sd_bus_message *reply, \
                      void *userdata, sd_bus_error *error) {                                                    \
                Job *j = userdata;                                                                             \
                return sd_bus_message_append(reply, type, expr);                                               \
        }
JOB_PROP(job_prop_id, "u", j->id)
JOB_PROP(job_prop_model, "s", j->model)
JOB_PROP(job_prop_node, "s", j->remote ? j->remote->node_name : "")
JOB_PROP(job_prop_state, "s", job_state_to_string(j->state))
JOB_PROP(job_prop_prompt_tokens, "u", j->n_prompt)
JOB_PROP(job_prop_generated, "u", j->generated)
JOB_PROP(job_prop_finish_reason, "s", j->finish_reason ? j->finish_reason : "")

static int method_job_cancel(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        Job *j = userdata;
        uid_t uid = (uid_t) -1;
        int r;

        r = sd_bus_query_sender_creds(msg, SD_BUS_CREDS_EUID, &creds);
        if (r >= 0)
                r = sd_bus_creds_get_euid(creds, &uid);
        const char *sender = sd_bus_message_get_sender(msg);
        if (!(uid == 0 || (j->owner && sender && streq(sender, j->owner)) ||
              (uid != (uid_t) -1 && uid == j->owner_uid)))
                return sd_bus_error_setf(error, INFERD_ERROR_ACCESS_DENIED,
                                         "Access denied: only the caller that started job %u may cancel it.", j->id);
        serve_job_cancel(j);
        return sd_bus_reply_method_return(msg, NULL);
}

static const sd_bus_vtable job_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "u", job_prop_id, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Model", "s", job_prop_model, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Node", "s", job_prop_node, 0, 0),
        SD_BUS_PROPERTY("State", "s", job_prop_state, 0, 0),
        SD_BUS_PROPERTY("PromptTokens", "u", job_prop_prompt_tokens, 0, 0),
        SD_BUS_PROPERTY("GeneratedTokens", "u", job_prop_generated, 0, 0),
        SD_BUS_PROPERTY("FinishReason", "s", job_prop_finish_reason, 0, 0),
        SD_BUS_METHOD("Cancel", NULL, NULL, method_job_cancel, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_NAMES("Piece", "sai", SD_BUS_PARAM(text) SD_BUS_PARAM(tokens), 0),
        SD_BUS_SIGNAL_WITH_NAMES("Finished", "suutts",
                                 SD_BUS_PARAM(finish_reason) SD_BUS_PARAM(prompt_tokens)
                                 SD_BUS_PARAM(generated_tokens) SD_BUS_PARAM(prompt_usec)
                                 SD_BUS_PARAM(generate_usec) SD_BUS_PARAM(error),
                                 0),
        SD_BUS_VTABLE_END,
};

int serve_bus_register(Manager *m) {
        int r;

        r = sd_bus_add_fallback_vtable(m->bus, NULL, MODEL_PATH_PREFIX, MODEL_IFACE, model_vtable, model_object_find, m);
        if (r < 0)
                return r;
        r = sd_bus_add_node_enumerator(m->bus, NULL, MODEL_PATH_PREFIX, model_nodes, m);
        if (r < 0)
                return r;
        r = sd_bus_add_fallback_vtable(m->bus, NULL, JOB_PATH_PREFIX, JOB_IFACE, job_vtable, job_object_find, m);
        if (r < 0)
                return r;
        return sd_bus_add_node_enumerator(m->bus, NULL, JOB_PATH_PREFIX, job_nodes, m);
}

int serve_init(Manager *m) {
        size_t n = gpu_instance_n_devices(m->gpu);
        int r;

        if (n == 0)
                return 0;
        m->workers = calloc(n, sizeof(Worker *));
        if (!m->workers)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                char name[32];
                if (!m->engines || !m->engines[i])
                        continue;
                /* Thread names are at most 15 bytes. */
                snprintf(name, sizeof name, "inferd-gpu%u", (unsigned) (i % 100000));
                r = worker_new(m->event, name, &m->workers[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

void serve_done(Manager *m) {
        /* Workers first: a running task finishes and reports before its model goes. */
        for (Job *j = m->jobs; j; j = j->next)
                atomic_store(&j->cancel, true);
        for (size_t i = 0; m->workers && i < gpu_instance_n_devices(m->gpu); i++)
                m->workers[i] = worker_free(m->workers[i]);
        free(m->workers);
        m->workers = NULL;
        while (m->jobs) {
                Job *j = m->jobs;
                m->jobs = j->next;
                job_free(j);
        }
        while (m->served) {
                Served *s = m->served;
                m->served = s->next;
                served_free(s);
        }
}
