/* SPDX-License-Identifier: MIT */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#include "macro.h"
#include "openai.h"

#define INVALID_REQUEST "invalid_request_error"
/* OpenAI allows 4 stop strings; the daemon takes 16 (serve-dbus.c), and says so itself when there are more. */
#define STOP_MAX 64u
/* The daemon's limit on each (serve-dbus.c). */
#define STOP_BYTES_MAX 256u
#define MESSAGES_MAX 1024u

void openai_error_set(OpenAIError *e, int status, const char *type, const char *code, const char *param,
                      const char *fmt, ...) {
        va_list ap;

        e->status = status;
        e->type = type;
        e->code = code;
        snprintf(e->param, sizeof e->param, "%s", param ?: "");
        va_start(ap, fmt);
        vsnprintf(e->message, sizeof e->message, fmt, ap);
        va_end(ap);
}

void openai_request_done(OpenAIRequest *r) {
        job_request_done(&r->job);
        *r = (OpenAIRequest) {};
}

/* ---- reading ---- */

static const char *json_kind(const json_t *v) {
        switch (json_typeof(v)) {
        case JSON_OBJECT:
                return "an object";
        case JSON_ARRAY:
                return "an array";
        case JSON_STRING:
                return "a string";
        case JSON_INTEGER:
                return "an integer";
        case JSON_REAL:
                return "a number";
        case JSON_TRUE:
        case JSON_FALSE:
                return "a boolean";
        default:
                return "null";
        }
}

static int bad_type(OpenAIError *e, const char *param, const char *expected, const json_t *v) {
        openai_error_set(e, 400, INVALID_REQUEST, "invalid_type", param,
                         "Invalid type for '%s': expected %s, but got %s instead.", param, expected, json_kind(v));
        return -EINVAL;
}

static int bad_value(OpenAIError *e, const char *param, const char *fmt, ...) _printf_(3, 4);
static int bad_value(OpenAIError *e, const char *param, const char *fmt, ...) {
        char msg[sizeof e->message];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        openai_error_set(e, 400, INVALID_REQUEST, "invalid_value", param, "%s", msg);
        return -EINVAL;
}

static int unsupported(OpenAIError *e, const char *param, const char *what) {
        openai_error_set(e, 400, INVALID_REQUEST, "unsupported_parameter", param, "'%s' is not supported: %s.", param,
                         what);
        return -EINVAL;
}

/* A field that is absent or null counts as not given: 0. Otherwise 1, or -EINVAL. */
static int get_number(json_t *o, const char *key, double min, double max, double *ret, OpenAIError *e) {
        json_t *v = json_object_get(o, key);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_number(v))
                return bad_type(e, key, "a number", v);
        double d = json_number_value(v);
        if (!(d >= min && d <= max))
                return bad_value(e, key, "'%s' is %g; it must be between %g and %g.", key, d, min, max);
        *ret = d;
        return 1;
}

static int get_integer(json_t *o, const char *key, json_int_t min, json_int_t max, json_int_t *ret, OpenAIError *e) {
        json_t *v = json_object_get(o, key);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_integer(v))
                return bad_type(e, key, "an integer", v);
        json_int_t i = json_integer_value(v);
        if (i < min || i > max)
                return bad_value(e, key, "'%s' is %" JSON_INTEGER_FORMAT "; it must be between %" JSON_INTEGER_FORMAT
                                 " and %" JSON_INTEGER_FORMAT ".", key, i, min, max);
        *ret = i;
        return 1;
}

static int get_bool(json_t *o, const char *key, bool *ret, OpenAIError *e) {
        json_t *v = json_object_get(o, key);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_boolean(v))
                return bad_type(e, key, "a boolean", v);
        *ret = json_is_true(v);
        return 1;
}

static int dup_string(const char *s, char **ret) {
        char *c = strdup(s);
        if (!c)
                return -ENOMEM;
        free(*ret);
        *ret = c;
        return 0;
}

static int parse_stop(json_t *o, JobRequest *req, OpenAIError *e) {
        json_t *v = json_object_get(o, "stop");
        size_t n;

        if (!v || json_is_null(v))
                return 0;
        if (json_is_string(v))
                n = 1;
        else if (json_is_array(v))
                n = json_array_size(v);
        else
                return bad_type(e, "stop", "a string or an array of strings", v);
        if (n > STOP_MAX)
                return bad_value(e, "stop", "'stop' has %zu strings; at most %u are allowed.", n, STOP_MAX);
        if (n == 0)
                return 0;
        _cleanup_strv_free_ char **l = calloc(n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_t *s = json_is_string(v) ? v : json_array_get(v, i);
                if (!json_is_string(s))
                        return bad_type(e, "stop", "a string or an array of strings", s);
                /* An empty one would end every job before its first token. */
                if (json_string_length(s) == 0 || json_string_length(s) > STOP_BYTES_MAX)
                        return bad_value(e, "stop", "'stop' strings must be 1 to %u bytes long.", STOP_BYTES_MAX);
                if (!(l[i] = strdup(json_string_value(s))))
                        return -ENOMEM;
        }
        req->stop = TAKE_PTR(l);
        return 0;
}

/* Fields that would change what comes back in ways inferd does not do: refused rather than ignored. */
static int refuse_unsupported(json_t *o, bool chat, OpenAIError *e) {
        json_t *v;

        v = json_object_get(o, "logprobs");
        if (v && !json_is_null(v) && !json_is_false(v) && !(json_is_integer(v) && json_integer_value(v) == 0))
                return unsupported(e, "logprobs", "inferd does not return log probabilities");
        v = json_object_get(o, "top_logprobs");
        if (v && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 0))
                return unsupported(e, "top_logprobs", "inferd does not return log probabilities");
        v = json_object_get(o, "logit_bias");
        if (v && !json_is_null(v) && !(json_is_object(v) && json_object_size(v) == 0))
                return unsupported(e, "logit_bias", "inferd does not bias tokens");
        if (!chat) {
                v = json_object_get(o, "echo");
                if (v && !json_is_null(v) && !json_is_false(v))
                        return unsupported(e, "echo", "the prompt is not repeated in the answer");
                v = json_object_get(o, "best_of");
                if (v && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 1))
                        return unsupported(e, "best_of", "inferd generates one candidate");
                v = json_object_get(o, "suffix");
                if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
                        return unsupported(e, "suffix", "inferd does not insert text");
                return 0;
        }
        static const char *const tools[] = { "tools", "functions" };
        for (size_t i = 0; i < ELEMENTSOF(tools); i++) {
                v = json_object_get(o, tools[i]);
                if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0))
                        return unsupported(e, tools[i], "inferd does not call tools");
        }
        v = json_object_get(o, "response_format");
        if (v && !json_is_null(v)) {
                json_t *t = json_is_object(v) ? json_object_get(v, "type") : NULL;
                if (!json_is_string(t))
                        return bad_type(e, "response_format", "an object with a 'type'", v);
                if (!streq(json_string_value(t), "text"))
                        return unsupported(e, "response_format", "only {\"type\": \"text\"} is");
        }
        return 0;
}

static int parse_prompt(json_t *o, JobRequest *req, OpenAIError *e) {
        json_t *v = json_object_get(o, "prompt");

        if (!v || json_is_null(v)) {
                openai_error_set(e, 400, INVALID_REQUEST, "missing_required_parameter", "prompt",
                                 "You must provide a 'prompt'.");
                return -EINVAL;
        }
        if (json_is_array(v)) {
                /* An array of prompts asks for one answer each: that is n > 1 in disguise. */
                if (json_array_size(v) != 1)
                        return bad_value(e, "prompt", "'prompt' is an array of %zu; inferd takes one prompt per "
                                                      "request.", json_array_size(v));
                v = json_array_get(v, 0);
        }
        if (!json_is_string(v))
                return bad_type(e, "prompt", "a string (token arrays are not supported)", v);
        return dup_string(json_string_value(v), &req->prompt);
}

/* content: a string, null (an assistant turn that only called tools: empty), or text parts. */
static int message_content(json_t *c, size_t i, char **ret, OpenAIError *e) {
        char param[64];

        snprintf(param, sizeof param, "messages[%zu].content", i);
        if (!c || json_is_null(c))
                return dup_string("", ret);
        if (json_is_string(c))
                return dup_string(json_string_value(c), ret);
        if (!json_is_array(c))
                return bad_type(e, param, "a string or an array of content parts", c);

        size_t total = 0, k;
        json_t *part;
        json_array_foreach(c, k, part) {
                json_t *type = json_is_object(part) ? json_object_get(part, "type") : NULL;
                json_t *text = json_is_object(part) ? json_object_get(part, "text") : NULL;
                if (!json_is_string(type))
                        return bad_type(e, param, "an array of content parts with a 'type'", part);
                if (!streq(json_string_value(type), "text"))
                        return unsupported(e, param, "only text content parts are");
                if (!json_is_string(text))
                        return bad_type(e, param, "text parts with a string 'text'", text ?: part);
                total += json_string_length(text);
        }
        char *s = malloc(total + 1), *p = s;
        if (!s)
                return -ENOMEM;
        json_array_foreach(c, k, part) {
                json_t *text = json_object_get(part, "text");
                memcpy(p, json_string_value(text), json_string_length(text));
                p += json_string_length(text);
        }
        *p = 0;
        free(*ret);
        *ret = s;
        return 0;
}

static int parse_messages(json_t *o, JobRequest *req, OpenAIError *e) {
        json_t *v = json_object_get(o, "messages"), *m;
        size_t i;
        int r;

        if (!v || json_is_null(v)) {
                openai_error_set(e, 400, INVALID_REQUEST, "missing_required_parameter", "messages",
                                 "You must provide 'messages'.");
                return -EINVAL;
        }
        if (!json_is_array(v))
                return bad_type(e, "messages", "an array", v);
        size_t n = json_array_size(v);
        if (n == 0)
                return bad_value(e, "messages", "'messages' is empty; it needs at least one message.");
        if (n > MESSAGES_MAX)
                return bad_value(e, "messages", "'messages' has %zu messages; at most %u are allowed.", n,
                                 MESSAGES_MAX);
        req->roles = calloc(n, sizeof(char *));
        req->contents = calloc(n, sizeof(char *));
        if (!req->roles || !req->contents)
                return -ENOMEM;
        json_array_foreach(v, i, m) {
                char param[64];
                snprintf(param, sizeof param, "messages[%zu]", i);
                if (!json_is_object(m))
                        return bad_type(e, param, "an object", m);
                /* Counted first: job_request_done() frees what is set. */
                req->n_messages = i + 1;
                json_t *role = json_object_get(m, "role");
                snprintf(param, sizeof param, "messages[%zu].role", i);
                if (!json_is_string(role))
                        return bad_type(e, param, "a string", role ?: json_null());
                const char *rs = json_string_value(role);
                /* The newer name of the system role. */
                if (streq(rs, "developer"))
                        rs = "system";
                if (!streq(rs, "system") && !streq(rs, "user") && !streq(rs, "assistant"))
                        return bad_value(e, param, "'%s' is %s; inferd takes system, developer, user and assistant "
                                                   "messages.", param,
                                         streq(rs, "tool") || streq(rs, "function") ? "a tool message"
                                                                                     : "not a known role");
                r = dup_string(rs, &req->roles[i]);
                if (r >= 0)
                        r = message_content(json_object_get(m, "content"), i, &req->contents[i], e);
                if (r < 0)
                        return r;
        }
        return 0;
}

int openai_parse_request(const char *body, size_t len, bool chat, uint32_t default_max_tokens, OpenAIRequest *ret,
                         OpenAIError *e) {
        _cleanup_(openai_request_done) OpenAIRequest q = {};
        _cleanup_(json_decrefp) json_t *o = NULL;
        json_error_t jerr;
        json_int_t i;
        double d = 0;
        bool b;
        int r;

        /* jansson refuses invalid UTF-8 and, without JSON_ALLOW_NUL, "\u0000": every string is a C string. */
        o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!o) {
                openai_error_set(e, 400, INVALID_REQUEST, "invalid_json", NULL,
                                 "The request body is not valid JSON: %s (line %d, column %d).", jerr.text, jerr.line,
                                 jerr.column);
                return -EINVAL;
        }
        if (!json_is_object(o)) {
                openai_error_set(e, 400, INVALID_REQUEST, "invalid_json", NULL,
                                 "The request body must be a JSON object, not %s.", json_kind(o));
                return -EINVAL;
        }

        job_request_init(&q.job);
        q.job.chat = chat;
        q.job.max_tokens = default_max_tokens;

        json_t *model = json_object_get(o, "model");
        if (!model || json_is_null(model)) {
                openai_error_set(e, 400, INVALID_REQUEST, "missing_required_parameter", "model",
                                 "You must provide a 'model' (see GET /v1/models).");
                return -EINVAL;
        }
        if (!json_is_string(model))
                return bad_type(e, "model", "a string", model);
        if (json_string_length(model) == 0)
                return bad_value(e, "model", "'model' is empty.");
        if (dup_string(json_string_value(model), &q.job.model) < 0)
                return -ENOMEM;

        r = chat ? parse_messages(o, &q.job, e) : parse_prompt(o, &q.job, e);
        if (r < 0)
                return r;
        r = refuse_unsupported(o, chat, e);
        if (r < 0)
                return r;

        /* max_completion_tokens is the newer name in chat; either may be given. */
        const char *const max_keys[] = { "max_tokens", chat ? "max_completion_tokens" : NULL };
        for (size_t k = 0; k < ELEMENTSOF(max_keys) && max_keys[k]; k++) {
                r = get_integer(o, max_keys[k], 1, UINT32_MAX, &i, e);
                if (r < 0)
                        return r;
                if (r > 0)
                        q.job.max_tokens = (uint32_t) i;
        }
        r = get_integer(o, "n", 1, INT32_MAX, &i, e);
        if (r < 0)
                return r;
        if (r > 0 && i != 1)
                return bad_value(e, "n", "'n' is %" JSON_INTEGER_FORMAT "; inferd generates one choice per request "
                                         "(n=1).", i);

        /* OpenAI's ranges; the sampler's own are wider. */
        const struct {
                const char *key;
                double min, max;
                float *dest;
        } numbers[] = {
                { "temperature", 0, 2, &q.job.sampling.temperature },
                { "top_p", 0, 1, &q.job.sampling.top_p },
                { "min_p", 0, 1, &q.job.sampling.min_p },
                { "repeat_penalty", 0, 10, &q.job.sampling.repeat_penalty },
                { "presence_penalty", -2, 2, NULL },
                { "frequency_penalty", -2, 2, NULL },
        };
        for (size_t k = 0; k < ELEMENTSOF(numbers); k++) {
                r = get_number(o, numbers[k].key, numbers[k].min, numbers[k].max, &d, e);
                if (r < 0)
                        return r;
                if (r > 0 && numbers[k].dest)
                        *numbers[k].dest = (float) d;
        }
        /* top_p 0 means "only the most likely token" in OpenAI's terms; the sampler wants (0, 1]. */
        if (q.job.sampling.top_p <= 0.0f) {
                q.job.sampling.top_p = 1.0f;
                q.job.sampling.temperature = 0.0f;
        }
        if (q.job.sampling.repeat_penalty <= 0.0f)
                return bad_value(e, "repeat_penalty", "'repeat_penalty' must be above 0.");
        r = get_integer(o, "top_k", 0, INT32_MAX, &i, e);
        if (r < 0)
                return r;
        if (r > 0)
                q.job.sampling.top_k = (int32_t) i;
        /* Any 64-bit integer; -1 is the sampler's "random". */
        r = get_integer(o, "seed", INT64_MIN, INT64_MAX, &i, e);
        if (r < 0)
                return r;
        if (r > 0)
                q.job.sampling.seed = (uint64_t) i;

        r = parse_stop(o, &q.job, e);
        if (r < 0)
                return r;

        r = get_bool(o, "stream", &q.stream, e);
        if (r < 0)
                return r;
        json_t *so = json_object_get(o, "stream_options");
        if (so && !json_is_null(so)) {
                if (!json_is_object(so))
                        return bad_type(e, "stream_options", "an object", so);
                r = get_bool(so, "include_usage", &b, e);
                if (r < 0) {
                        snprintf(e->param, sizeof e->param, "stream_options.include_usage");
                        return r;
                }
                q.include_usage = r > 0 && b;
        }
        json_t *user = json_object_get(o, "user");
        if (user && !json_is_null(user) && !json_is_string(user))
                return bad_type(e, "user", "a string", user);

        *ret = q;
        q = (OpenAIRequest) {};
        return 0;
}

/* ---- writing ---- */

/* Every json_object_set_new() in one expression: a NULL value (out of memory) fails the set, and the
 * object is dropped. */
static char *dump(json_t *o) {
        if (!o)
                return NULL;
        char *s = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        return s;
}

static json_t *usage_object(const OpenAIUsage *u) {
        return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t) u->prompt_tokens, "completion_tokens",
                         (json_int_t) u->completion_tokens, "total_tokens",
                         (json_int_t) u->prompt_tokens + (json_int_t) u->completion_tokens);
}

static json_t *answer_object(const OpenAIAnswer *a, const char *object) {
        return json_pack("{s:s, s:s, s:I, s:s}", "id", a->id, "object", object, "created", (json_int_t) a->created,
                         "model", a->model);
}

/* json_pack() takes "s?" for a string that may be NULL (null in the JSON). */
char *openai_completion_json(const OpenAIAnswer *a, const char *text, const char *finish_reason,
                             const OpenAIUsage *usage) {
        _cleanup_(json_decrefp) json_t *o = answer_object(a, a->chat ? "chat.completion" : "text_completion");
        json_t *choice;

        if (!o)
                return NULL;
        if (a->chat)
                choice = json_pack("{s:i, s:{s:s, s:s}, s:n, s:s?}", "index", 0, "message", "role", "assistant",
                                   "content", text, "logprobs", "finish_reason", finish_reason);
        else
                choice = json_pack("{s:s, s:i, s:n, s:s?}", "text", text, "index", 0, "logprobs", "finish_reason",
                                   finish_reason);
        if (json_object_set_new(o, "choices", json_pack("[o]", choice)) < 0 ||
            json_object_set_new(o, "usage", usage_object(usage)) < 0)
                return NULL;
        return dump(TAKE_PTR(o));
}

char *openai_chunk_json(const OpenAIAnswer *a, bool first, const char *text, const char *finish_reason,
                        bool include_usage) {
        _cleanup_(json_decrefp) json_t *o = answer_object(a, a->chat ? "chat.completion.chunk" : "text_completion");
        json_t *choice;

        if (!o)
                return NULL;
        if (a->chat) {
                /* The first chunk says who speaks; the last has an empty delta and the reason. */
                json_t *delta = json_object();
                if (!delta)
                        return NULL;
                if ((first && json_object_set_new(delta, "role", json_string("assistant")) < 0) ||
                    ((text || first) && json_object_set_new(delta, "content", json_string(text ?: "")) < 0)) {
                        json_decref(delta);
                        return NULL;
                }
                choice = json_pack("{s:i, s:o, s:n, s:s?}", "index", 0, "delta", delta, "logprobs", "finish_reason",
                                   finish_reason);
        } else
                choice = json_pack("{s:s, s:i, s:n, s:s?}", "text", text ?: "", "index", 0, "logprobs",
                                   "finish_reason", finish_reason);
        if (json_object_set_new(o, "choices", json_pack("[o]", choice)) < 0)
                return NULL;
        if (include_usage && json_object_set_new(o, "usage", json_null()) < 0)
                return NULL;
        return dump(TAKE_PTR(o));
}

char *openai_usage_chunk_json(const OpenAIAnswer *a, const OpenAIUsage *usage) {
        _cleanup_(json_decrefp) json_t *o = answer_object(a, a->chat ? "chat.completion.chunk" : "text_completion");

        if (!o || json_object_set_new(o, "choices", json_array()) < 0 ||
            json_object_set_new(o, "usage", usage_object(usage)) < 0)
                return NULL;
        return dump(TAKE_PTR(o));
}

char *openai_error_json(const OpenAIError *e) {
        /* Messages are ours, but may quote what the client sent: keep only valid UTF-8 (jansson checks). */
        json_t *msg = json_string(e->message);
        if (!msg)
                msg = json_string("The request failed.");
        return dump(json_pack("{s:{s:o, s:s, s:s?, s:s?}}", "error", "message", msg, "type", e->type, "param",
                              e->param[0] ? e->param : NULL, "code", e->code));
}

static json_t *model_object(const char *name, uint64_t created) {
        return json_pack("{s:s, s:s, s:I, s:s}", "id", name, "object", "model", "created", (json_int_t) created,
                         "owned_by", "inferd");
}

char *openai_models_json(const char *const *names, size_t n, uint64_t created) {
        json_t *data = json_array();

        for (size_t i = 0; data && i < n; i++)
                if (json_array_append_new(data, model_object(names[i], created)) < 0) {
                        json_decref(data);
                        return NULL;
                }
        return dump(json_pack("{s:s, s:o}", "object", "list", "data", data));
}

char *openai_model_json(const char *name, uint64_t created) {
        return dump(model_object(name, created));
}
