/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the OpenAI request parser with HTTP bodies: the first byte picks
 * /v1/completions or /v1/chat/completions, the rest is the body. Any bytes
 * give a request or a 400 error that names what is wrong, never a crash.
 * What is accepted must be something the engine takes (the sampler's ranges,
 * a model name, a prompt or messages, max_tokens above 0), and the answers
 * built from it (a completion and a stream chunk that echo the model name,
 * the error object) must be valid JSON whatever the names hold.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "openai.h"
#include "sampler.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must_be_json(char *text) {
        json_error_t e;
        json_t *v;

        if (!text)
                return;         /* out of memory */
        v = json_loads(text, 0, &e);
        if (!v)
                abort();
        json_decref(v);
        free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        OpenAIRequest q;
        OpenAIError err = {};

        if (size == 0)
                return 0;
        log_set_max_level(LOG_CRIT);
        const bool chat = data[0] & 1;
        int r = openai_parse_request((const char *) data + 1, size - 1, chat, 256, &q, &err);
        if (r == -ENOMEM)
                return 0;
        if (r < 0) {
                if (r != -EINVAL || err.status != 400 || err.message[0] == 0)
                        abort();        /* a client error, with a reason */
                must_be_json(openai_error_json(&err));
                return 0;
        }

        const JobRequest *j = &q.job;
        if (!j->model || j->chat != chat || j->max_tokens == 0 || sampler_params_validate(&j->sampling, NULL) < 0)
                abort();
        if (chat ? (!j->roles || !j->contents || j->n_messages == 0) : !j->prompt)
                abort();
        for (char **s = j->stop; s && *s; s++)
                if (**s == 0)
                        abort();        /* an empty stop string would end every job at once */

        OpenAIAnswer a = { .id = chat ? "chatcmpl-1" : "cmpl-1", .model = j->model, .created = 1, .chat = chat };
        OpenAIUsage u = { 1, 2 };
        must_be_json(openai_completion_json(&a, j->chat ? j->contents[0] : j->prompt, "stop", &u));
        must_be_json(openai_chunk_json(&a, true, j->model, NULL, q.include_usage));
        openai_request_done(&q);
        return 0;
}
