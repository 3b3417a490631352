/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The OpenAI API's JSON, in and out, with no sockets in it: a body of POST /v1/completions or
 * /v1/chat/completions read into a JobRequest, and the answers written: one completion, the chunks of a
 * stream, the model list and the error object. http.c moves these over the wire.
 *
 * Request fields taken: model, prompt (a string, or an array of one string) or messages (roles system,
 * developer (as system), user, assistant; content a string, null or an array of text parts), max_tokens
 * (max_completion_tokens for chat), temperature, top_p, stop (a string or an array of strings), seed, n (1
 * only), stream, stream_options.include_usage, and the llama.cpp extensions top_k, min_p and
 * repeat_penalty. Accepted and ignored: user, presence_penalty, frequency_penalty, an empty logit_bias.
 * Refused, as unsupported, when asked for: logprobs, top_logprobs, echo, best_of above 1, suffix, tools,
 * functions, non-text response formats, content that is not text. Other fields are ignored, as OpenAI's
 * own server does.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "serve.h"

typedef struct OpenAIError {
        int status;                     /* HTTP status */
        const char *type;               /* "invalid_request_error", ... (static) */
        const char *code;               /* static, or NULL */
        char param[64];                 /* the offending field, "" for none */
        char message[512];
} OpenAIError;

/* Fills e; the message is printf-formatted. */
void openai_error_set(OpenAIError *e, int status, const char *type, const char *code, const char *param,
                      const char *fmt, ...) _printf_(6, 7);

typedef struct OpenAIRequest {
        JobRequest job;                 /* model, prompt or messages, max_tokens, sampling, stop */
        bool stream;
        bool include_usage;             /* stream_options.include_usage */
} OpenAIRequest;

void openai_request_done(OpenAIRequest *r);

/*
 * Reads len bytes of JSON, a chat request if chat. max_tokens is default_max_tokens when the request
 * does not say. Returns 0 and fills *ret; -EINVAL with *err (status 400) for anything the client got
 * wrong; -ENOMEM. *ret is set on success only.
 */
int openai_parse_request(const char *body, size_t len, bool chat, uint32_t default_max_tokens, OpenAIRequest *ret,
                         OpenAIError *err);

/* What every answer to one request repeats. */
typedef struct OpenAIAnswer {
        const char *id;                 /* "cmpl-..." or "chatcmpl-..." */
        const char *model;
        uint64_t created;               /* Unix time, seconds */
        bool chat;
} OpenAIAnswer;

typedef struct OpenAIUsage {
        uint32_t prompt_tokens, completion_tokens;
} OpenAIUsage;

/*
 * The JSON texts (free() them; NULL when out of memory). finish_reason is "stop" or "length"; NULL in
 * a chunk that is not the last.
 */
char *openai_completion_json(const OpenAIAnswer *a, const char *text, const char *finish_reason,
                             const OpenAIUsage *usage);
/* A stream chunk. A chat stream's first chunk carries the role (first); with include_usage every chunk
 * has "usage": null, and openai_usage_chunk_json() is the last one before [DONE]. */
char *openai_chunk_json(const OpenAIAnswer *a, bool first, const char *text, const char *finish_reason,
                        bool include_usage);
char *openai_usage_chunk_json(const OpenAIAnswer *a, const OpenAIUsage *usage);
char *openai_error_json(const OpenAIError *e);
/* GET /v1/models: names, each once; created is the same for all. */
char *openai_models_json(const char *const *names, size_t n, uint64_t created);
char *openai_model_json(const char *name, uint64_t created);
