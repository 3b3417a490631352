/* SPDX-License-Identifier: MIT */
/* The OpenAI JSON without sockets: requests read into a JobRequest, every bad input refused with the right
 * error, and the answers, chunks and errors as clients read them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>

#include "macro.h"
#include "openai.h"

static void parse_ok(const char *body, bool chat, OpenAIRequest *q) {
        OpenAIError e = {};
        int r = openai_parse_request(body, strlen(body), chat, 77, q, &e);
        if (r < 0)
                fail_msg("%s was refused (%d): %d %s [%s]", body, r, e.status, e.message, e.param);
}

/* 400, and the error names param (NULL: none) and mentions needle. */
static void parse_fails(const char *body, bool chat, const char *param, const char *code, const char *needle) {
        OpenAIRequest q = {};
        OpenAIError e = {};
        if (openai_parse_request(body, strlen(body), chat, 77, &q, &e) != -EINVAL)
                fail_msg("%s was accepted", body);
        assert_null(q.job.model);
        assert_int_equal(e.status, 400);
        assert_string_equal(e.type, "invalid_request_error");
        if (!streq(e.param, param ?: ""))
                fail_msg("%s: param '%s', expected '%s' (%s)", body, e.param, param ?: "", e.message);
        if (code && !streq_ptr(e.code, code))
                fail_msg("%s: code '%s', expected '%s' (%s)", body, strna(e.code), code, e.message);
        if (needle && !strstr(e.message, needle))
                fail_msg("%s: message '%s' does not mention '%s'", body, e.message, needle);
}

static void test_completion_request(void **state) {
        OpenAIRequest q = {};

        parse_ok("{\"model\":\"m\",\"prompt\":\"Once upon a time\",\"max_tokens\":8,\"temperature\":0.5,"
                 "\"top_p\":0.9,\"stop\":\"\\n\",\"seed\":42,\"n\":1,\"stream\":true,"
                 "\"stream_options\":{\"include_usage\":true},\"user\":\"u\",\"presence_penalty\":0,"
                 "\"logprobs\":null,\"echo\":false,\"best_of\":1,\"unknown_field\":[1,2]}", false, &q);
        assert_string_equal(q.job.model, "m");
        assert_false(q.job.chat);
        assert_string_equal(q.job.prompt, "Once upon a time");
        assert_int_equal(q.job.max_tokens, 8);
        assert_true(fabsf(q.job.sampling.temperature - 0.5f) < 1e-6f);
        assert_true(fabsf(q.job.sampling.top_p - 0.9f) < 1e-6f);
        assert_non_null(q.job.stop);
        assert_string_equal(q.job.stop[0], "\n");
        assert_null(q.job.stop[1]);
        assert_int_equal(q.job.sampling.seed, 42);
        assert_true(q.stream);
        assert_true(q.include_usage);
        openai_request_done(&q);

        /* Defaults: the caller's max_tokens, the sampler's own defaults, no stream. */
        SamplerParams d;
        sampler_params_default(&d);
        parse_ok("{\"model\":\"m\",\"prompt\":[\"one\"],\"stop\":[\"a\",\"bc\"],\"stream\":null,\"n\":null}", false, &q);
        assert_string_equal(q.job.prompt, "one");
        assert_int_equal(q.job.max_tokens, 77);
        assert_true(q.job.sampling.temperature == d.temperature);
        assert_int_equal(q.job.sampling.seed, d.seed);
        assert_string_equal(q.job.stop[0], "a");
        assert_string_equal(q.job.stop[1], "bc");
        assert_null(q.job.stop[2]);
        assert_false(q.stream);
        assert_false(q.include_usage);
        openai_request_done(&q);

        /* llama.cpp's extensions; a negative seed is the sampler's "random" (-1) */
        parse_ok("{\"model\":\"m\",\"prompt\":\"\",\"top_k\":5,\"min_p\":0.1,\"repeat_penalty\":1.1,\"seed\":-1,"
                 "\"temperature\":2,\"stop\":[]}", false, &q);
        assert_int_equal(q.job.sampling.top_k, 5);
        assert_true(fabsf(q.job.sampling.min_p - 0.1f) < 1e-6f);
        assert_int_equal(q.job.sampling.seed, UINT64_MAX);
        assert_null(q.job.stop);
        openai_request_done(&q);

        /* top_p 0: only the most likely token. */
        parse_ok("{\"model\":\"m\",\"prompt\":\"x\",\"top_p\":0}", false, &q);
        assert_true(q.job.sampling.temperature == 0.0f);
        assert_true(q.job.sampling.top_p == 1.0f);
        openai_request_done(&q);
}

static void test_chat_request(void **state) {
        OpenAIRequest q = {};

        parse_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":\"Be brief.\"},"
                 "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hel\"},{\"type\":\"text\",\"text\":\"lo\"}],"
                 "\"name\":\"me\"},{\"role\":\"assistant\",\"content\":null},{\"role\":\"user\",\"content\":\"Again\"}],"
                 "\"max_completion_tokens\":12,\"tools\":[],\"response_format\":{\"type\":\"text\"}}", true, &q);
        assert_true(q.job.chat);
        assert_null(q.job.prompt);
        assert_int_equal(q.job.n_messages, 4);
        assert_string_equal(q.job.roles[0], "system");
        assert_string_equal(q.job.contents[0], "Be brief.");
        assert_string_equal(q.job.roles[1], "user");
        assert_string_equal(q.job.contents[1], "Hello");
        assert_string_equal(q.job.roles[2], "assistant");
        assert_string_equal(q.job.contents[2], "");
        assert_string_equal(q.job.contents[3], "Again");
        assert_int_equal(q.job.max_tokens, 12);
        openai_request_done(&q);

        parse_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":3}", true, &q);
        assert_int_equal(q.job.max_tokens, 3);
        openai_request_done(&q);
}

static void test_malformed_bodies(void **state) {
        parse_fails("", false, NULL, "invalid_json", "not valid JSON");
        parse_fails("{\"model\":", false, NULL, "invalid_json", "line 1");
        parse_fails("{\"model\":\"m\",}", false, NULL, "invalid_json", NULL);
        parse_fails("[1,2]", false, NULL, "invalid_json", "a JSON object, not an array");
        parse_fails("\"text\"", false, NULL, "invalid_json", NULL);
        parse_fails("{\"model\":\"m\",\"model\":\"n\",\"prompt\":\"x\"}", false, NULL, "invalid_json", "duplicate");
        parse_fails("{\"model\":\"m\",\"prompt\":\"\xff\xfe\"}", false, NULL, "invalid_json", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"a\\u0000b\"}", false, NULL, "invalid_json", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":99999999999999999999999}", false, NULL,
                    "invalid_json", NULL);
        /* A body with a NUL in it is cut there by nobody: the length counts. */
        OpenAIRequest q = {};
        OpenAIError e = {};
        static const char nul[] = "{\"model\":\"m\",\"prompt\":\"x\"}\0junk";
        assert_int_equal(openai_parse_request(nul, sizeof nul - 1, false, 1, &q, &e), -EINVAL);
        assert_int_equal(e.status, 400);
}

static void test_wrong_fields(void **state) {
        parse_fails("{\"prompt\":\"x\"}", false, "model", "missing_required_parameter", "'model'");
        parse_fails("{\"model\":null,\"prompt\":\"x\"}", false, "model", "missing_required_parameter", NULL);
        parse_fails("{\"model\":3,\"prompt\":\"x\"}", false, "model", "invalid_type", "expected a string, but got an integer");
        parse_fails("{\"model\":\"\",\"prompt\":\"x\"}", false, "model", "invalid_value", "empty");
        parse_fails("{\"model\":\"m\"}", false, "prompt", "missing_required_parameter", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":{}}", false, "prompt", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":[1,2,3]}", false, "prompt", "invalid_value", "one prompt");
        parse_fails("{\"model\":\"m\",\"prompt\":[[1,2]]}", false, "prompt", "invalid_type", "token arrays");
        parse_fails("{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", false, "prompt", "invalid_value", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":[]}", false, "prompt", "invalid_value", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":\"8\"}", false, "max_tokens", "invalid_type",
                    "expected an integer, but got a string");
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":8.5}", false, "max_tokens", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":0}", false, "max_tokens", "invalid_value", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":-5}", false, "max_tokens", "invalid_value", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":4294967296}", false, "max_tokens", "invalid_value",
                    NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"temperature\":\"hot\"}", false, "temperature", "invalid_type",
                    NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"temperature\":2.5}", false, "temperature", "invalid_value",
                    "between 0 and 2");
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"temperature\":-0.1}", false, "temperature", "invalid_value",
                    NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"top_p\":1.5}", false, "top_p", "invalid_value", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"top_p\":true}", false, "top_p", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"min_p\":2}", false, "min_p", "invalid_value", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"repeat_penalty\":0}", false, "repeat_penalty", "invalid_value",
                    NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"top_k\":-1}", false, "top_k", "invalid_value", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"presence_penalty\":3}", false, "presence_penalty",
                    "invalid_value", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"frequency_penalty\":\"no\"}", false, "frequency_penalty",
                    "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"seed\":1.5}", false, "seed", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"seed\":\"1\"}", false, "seed", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"stop\":5}", false, "stop", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"stop\":[\"a\",5]}", false, "stop", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"stop\":{\"a\":1}}", false, "stop", "invalid_type", NULL);
        /* An empty stop string would end every job at once. */
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"stop\":[\"a\",\"\"]}", false, "stop", "invalid_value",
                    "1 to 256 bytes");
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"stop\":\"\"}", false, "stop", "invalid_value", NULL);
        char many[1024] = "{\"model\":\"m\",\"prompt\":\"x\",\"stop\":[";
        for (int i = 0; i < 65; i++)
                strcat(many, i ? ",\"s\"" : "\"s\"");
        strcat(many, "]}");
        parse_fails(many, false, "stop", "invalid_value", "at most 64");
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"n\":2}", false, "n", "invalid_value", "n=1");
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"n\":0}", false, "n", "invalid_value", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"n\":\"1\"}", false, "n", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"stream\":\"yes\"}", false, "stream", "invalid_type",
                    "expected a boolean");
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"stream\":1}", false, "stream", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"stream\":true,\"stream_options\":true}", false,
                    "stream_options", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"stream\":true,\"stream_options\":{\"include_usage\":1}}", false,
                    "stream_options.include_usage", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"user\":5}", false, "user", "invalid_type", NULL);
}

static void test_unsupported(void **state) {
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":2}", false, "logprobs", "unsupported_parameter",
                    "not supported");
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"echo\":true}", false, "echo", "unsupported_parameter", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"best_of\":3}", false, "best_of", "unsupported_parameter", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"suffix\":\"end\"}", false, "suffix", "unsupported_parameter",
                    NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\",\"logit_bias\":{\"5\":10}}", false, "logit_bias",
                    "unsupported_parameter", NULL);
        const char *msgs = "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]";
        char b[512];
        snprintf(b, sizeof b, "{\"model\":\"m\",%s,\"logprobs\":true}", msgs);
        parse_fails(b, true, "logprobs", "unsupported_parameter", NULL);
        snprintf(b, sizeof b, "{\"model\":\"m\",%s,\"top_logprobs\":3}", msgs);
        parse_fails(b, true, "top_logprobs", "unsupported_parameter", NULL);
        snprintf(b, sizeof b, "{\"model\":\"m\",%s,\"tools\":[{\"type\":\"function\"}]}", msgs);
        parse_fails(b, true, "tools", "unsupported_parameter", NULL);
        snprintf(b, sizeof b, "{\"model\":\"m\",%s,\"functions\":[{}]}", msgs);
        parse_fails(b, true, "functions", "unsupported_parameter", NULL);
        snprintf(b, sizeof b, "{\"model\":\"m\",%s,\"response_format\":{\"type\":\"json_object\"}}", msgs);
        parse_fails(b, true, "response_format", "unsupported_parameter", NULL);
        snprintf(b, sizeof b, "{\"model\":\"m\",%s,\"response_format\":\"json\"}", msgs);
        parse_fails(b, true, "response_format", "invalid_type", NULL);
}

static void test_bad_messages(void **state) {
        parse_fails("{\"model\":\"m\"}", true, "messages", "missing_required_parameter", NULL);
        parse_fails("{\"model\":\"m\",\"prompt\":\"x\"}", true, "messages", "missing_required_parameter", NULL);
        parse_fails("{\"model\":\"m\",\"messages\":\"hi\"}", true, "messages", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"messages\":[]}", true, "messages", "invalid_value", "empty");
        parse_fails("{\"model\":\"m\",\"messages\":[\"hi\"]}", true, "messages[0]", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"messages\":[{\"content\":\"hi\"}]}", true, "messages[0].role", "invalid_type",
                    NULL);
        parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":7,\"content\":\"b\"}]}",
                    true, "messages[1].role", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"42\"}]}", true, "messages[0].role",
                    "invalid_value", "tool message");
        parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"wizard\",\"content\":\"42\"}]}", true,
                    "messages[0].role", "invalid_value", "not a known role");
        parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", true, "messages[0].content",
                    "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
                    "\"image_url\":{\"url\":\"x\"}}]}]}", true, "messages[0].content", "unsupported_parameter", NULL);
        parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", true,
                    "messages[0].content", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[\"text\"]}]}", true,
                    "messages[0].content", "invalid_type", NULL);
        parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":0}",
                    true, "max_completion_tokens", "invalid_value", NULL);
}

/* ---- answers ---- */

static json_t *load(char *text) {
        assert_non_null(text);
        json_error_t err;
        json_t *o = json_loads(text, 0, &err);
        if (!o)
                fail_msg("not JSON (%s): %s", err.text, text);
        free(text);
        return o;
}

static const char *str_at(json_t *o, const char *path) {
        json_t *v = o;
        char key[64];
        for (const char *p = path; v && *p;) {
                size_t l = strcspn(p, ".");
                snprintf(key, sizeof key, "%.*s", (int) l, p);
                v = key[0] >= '0' && key[0] <= '9' ? json_array_get(v, (size_t) atoi(key)) : json_object_get(v, key);
                p += l + (p[l] == '.');
        }
        if (!json_is_string(v))
                fail_msg("%s is not a string", path);
        return json_string_value(v);
}

static json_t *at(json_t *o, const char *a, const char *b) {
        json_t *v = json_object_get(o, a);
        return b ? json_object_get(v, b) : v;
}

static void test_completion_answers(void **state) {
        OpenAIAnswer a = { .id = "cmpl-1", .model = "m", .created = 1700000000, .chat = false };
        OpenAIUsage u = { .prompt_tokens = 5, .completion_tokens = 7 };
        json_t *o;

        o = load(openai_completion_json(&a, "Hello \"world\"", "length", &u));
        assert_string_equal(str_at(o, "id"), "cmpl-1");
        assert_string_equal(str_at(o, "object"), "text_completion");
        assert_string_equal(str_at(o, "model"), "m");
        assert_int_equal(json_integer_value(at(o, "created", NULL)), 1700000000);
        assert_string_equal(str_at(o, "choices.0.text"), "Hello \"world\"");
        assert_string_equal(str_at(o, "choices.0.finish_reason"), "length");
        assert_int_equal(json_integer_value(json_object_get(json_array_get(at(o, "choices", NULL), 0), "index")), 0);
        assert_int_equal(json_integer_value(at(o, "usage", "prompt_tokens")), 5);
        assert_int_equal(json_integer_value(at(o, "usage", "completion_tokens")), 7);
        assert_int_equal(json_integer_value(at(o, "usage", "total_tokens")), 12);
        json_decref(o);

        a.chat = true;
        a.id = "chatcmpl-2";
        o = load(openai_completion_json(&a, "Hi", "stop", &u));
        assert_string_equal(str_at(o, "object"), "chat.completion");
        assert_string_equal(str_at(o, "choices.0.message.role"), "assistant");
        assert_string_equal(str_at(o, "choices.0.message.content"), "Hi");
        assert_string_equal(str_at(o, "choices.0.finish_reason"), "stop");
        json_decref(o);
}

static void test_chunks(void **state) {
        OpenAIAnswer a = { .id = "chatcmpl-3", .model = "m", .created = 1, .chat = true };
        OpenAIUsage u = { .prompt_tokens = 2, .completion_tokens = 3 };
        json_t *o, *delta;

        /* Chat: the role first, then content, then an empty delta with the reason. */
        o = load(openai_chunk_json(&a, true, NULL, NULL, false));
        assert_string_equal(str_at(o, "object"), "chat.completion.chunk");
        assert_string_equal(str_at(o, "choices.0.delta.role"), "assistant");
        assert_string_equal(str_at(o, "choices.0.delta.content"), "");
        assert_true(json_is_null(json_object_get(json_array_get(at(o, "choices", NULL), 0), "finish_reason")));
        assert_null(json_object_get(o, "usage"));
        json_decref(o);
        o = load(openai_chunk_json(&a, false, "lo", NULL, true));
        delta = json_object_get(json_array_get(at(o, "choices", NULL), 0), "delta");
        assert_int_equal(json_object_size(delta), 1);
        assert_string_equal(str_at(o, "choices.0.delta.content"), "lo");
        assert_true(json_is_null(json_object_get(o, "usage")));
        json_decref(o);
        o = load(openai_chunk_json(&a, false, NULL, "stop", true));
        delta = json_object_get(json_array_get(at(o, "choices", NULL), 0), "delta");
        assert_int_equal(json_object_size(delta), 0);
        assert_string_equal(str_at(o, "choices.0.finish_reason"), "stop");
        json_decref(o);
        o = load(openai_usage_chunk_json(&a, &u));
        assert_int_equal(json_array_size(at(o, "choices", NULL)), 0);
        assert_int_equal(json_integer_value(at(o, "usage", "total_tokens")), 5);
        json_decref(o);

        /* Completions: text in every chunk, "" in the last. */
        a.chat = false;
        o = load(openai_chunk_json(&a, false, "abc", NULL, false));
        assert_string_equal(str_at(o, "object"), "text_completion");
        assert_string_equal(str_at(o, "choices.0.text"), "abc");
        json_decref(o);
        o = load(openai_chunk_json(&a, false, NULL, "length", false));
        assert_string_equal(str_at(o, "choices.0.text"), "");
        assert_string_equal(str_at(o, "choices.0.finish_reason"), "length");
        json_decref(o);

        /* Text that is not UTF-8 cannot go into JSON: no answer rather than a broken one. */
        assert_null(openai_chunk_json(&a, false, "\xff", NULL, false));
}

static void test_errors_and_models(void **state) {
        OpenAIError e;
        json_t *o;

        openai_error_set(&e, 404, "invalid_request_error", "model_not_found", "model", "No model '%s'.", "x");
        assert_int_equal(e.status, 404);
        o = load(openai_error_json(&e));
        assert_string_equal(str_at(o, "error.message"), "No model 'x'.");
        assert_string_equal(str_at(o, "error.type"), "invalid_request_error");
        assert_string_equal(str_at(o, "error.param"), "model");
        assert_string_equal(str_at(o, "error.code"), "model_not_found");
        json_decref(o);
        openai_error_set(&e, 500, "server_error", NULL, NULL, "Out of memory.");
        o = load(openai_error_json(&e));
        assert_true(json_is_null(at(o, "error", "param")));
        assert_true(json_is_null(at(o, "error", "code")));
        json_decref(o);

        const char *names[] = { "a", "b/c" };
        o = load(openai_models_json(names, 2, 99));
        assert_string_equal(str_at(o, "object"), "list");
        assert_int_equal(json_array_size(at(o, "data", NULL)), 2);
        assert_string_equal(str_at(o, "data.1.id"), "b/c");
        assert_string_equal(str_at(o, "data.1.object"), "model");
        assert_string_equal(str_at(o, "data.0.owned_by"), "inferd");
        json_decref(o);
        o = load(openai_models_json(NULL, 0, 99));
        assert_int_equal(json_array_size(at(o, "data", NULL)), 0);
        json_decref(o);
        o = load(openai_model_json("a", 5));
        assert_string_equal(str_at(o, "id"), "a");
        assert_int_equal(json_integer_value(at(o, "created", NULL)), 5);
        json_decref(o);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_completion_request),
                cmocka_unit_test(test_chat_request),
                cmocka_unit_test(test_malformed_bodies),
                cmocka_unit_test(test_wrong_fields),
                cmocka_unit_test(test_unsupported),
                cmocka_unit_test(test_bad_messages),
                cmocka_unit_test(test_completion_answers),
                cmocka_unit_test(test_chunks),
                cmocka_unit_test(test_errors_and_models),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
