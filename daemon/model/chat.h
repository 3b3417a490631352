/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Chat prompts: a conversation in, the text the model was trained on out,
 * byte for byte what the model's official Jinja template (tokenizer_config.json,
 * GGUF tokenizer.chat_template) renders, for the families below. We do not run
 * Jinja: the family is recognised from the template source, as llama.cpp's
 * llm_chat_detect_template() does, and formatted by hand.
 *
 * BOS: the prompt never starts with BOS. Encode it with add_special so that
 * the tokenizer prepends the BOS *id* (tokenizer.ggml.add_bos_token), instead
 * of relying on "<s>" as text being recognised. BOS and EOS that the templates
 * put *inside* the conversation (Llama 2's "</s><s>" between turns, Mistral's
 * and Zephyr's "</s>") are written as bos_text/eos_text, so encode the prompt
 * with special tokens recognised in the text.
 *
 * Formats, with the conversation
 *     system "S", user "U1", assistant "A1", user "U2"  and the generation prompt:
 *
 * CHAT_TEMPLATE_LLAMA2 (Llama-2-chat, CodeLlama-instruct):
 *     "[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST]"
 *   Contents are stripped of surrounding whitespace (Python's str.strip()); the
 *   system block and the first user message are stripped as one string, as in
 *   the template. User and assistant turns must alternate, starting with user.
 *   There is no generation prompt: a prompt that ends with a user turn ends
 *   where the answer starts.
 *
 * CHAT_TEMPLATE_LLAMA3 (Llama 3 instruct; 3.1+ render the same for plain chat,
 * without their optional "Cutting Knowledge Date" system header):
 *     "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
 *     "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
 *     "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
 *     "<|start_header_id|>user<|end_header_id|>\n\nU2<|eot_id|>"
 *     "<|start_header_id|>assistant<|end_header_id|>\n\n"
 *   Contents trimmed (Jinja's | trim). The BOS is "<|begin_of_text|>".
 *
 * CHAT_TEMPLATE_CHATML (Qwen, Hermes, many fine-tunes):
 *     "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
 *     "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n"
 *     "<|im_start|>assistant\n"
 *   Contents as they are. (Qwen's own templates add a default system message
 *   when there is none; plain ChatML, and this, do not.)
 *
 * CHAT_TEMPLATE_MISTRAL (Mistral-7B-Instruct v0.1/v0.2):
 *     "[INST] S\n\nU1 [/INST]A1</s>[INST] U2 [/INST]"
 *   The original template has no system role; the system message goes before
 *   the first user message, separated by a blank line, as Mistral's later
 *   templates do. Contents as they are; turns alternate as for Llama 2; no
 *   generation prompt.
 *
 * CHAT_TEMPLATE_ZEPHYR (zephyr-7b, StableLM-zephyr with eos_text "<|endoftext|>"):
 *     "<|system|>\nS</s>\n<|user|>\nU1</s>\n<|assistant|>\nA1</s>\n<|user|>\nU2</s>\n"
 *     "<|assistant|>\n"
 *
 * Every template: roles are "system", "user" or "assistant"; at most one
 * system message, and first; contents valid UTF-8 of at most CHAT_CONTENT_MAX
 * bytes; the whole prompt at most CHAT_PROMPT_MAX bytes.
 */

#include <stdbool.h>
#include <stddef.h>

/* Per message, and for the whole formatted prompt. */
#define CHAT_CONTENT_MAX (1024u * 1024u)
#define CHAT_PROMPT_MAX (16u * 1024u * 1024u)

typedef struct ChatMessage {
        const char *role;               /* "system", "user", "assistant" */
        const char *content;            /* UTF-8 */
} ChatMessage;

typedef enum ChatTemplate {
        CHAT_TEMPLATE_LLAMA2,
        CHAT_TEMPLATE_LLAMA3,
        CHAT_TEMPLATE_CHATML,
        CHAT_TEMPLATE_MISTRAL,
        CHAT_TEMPLATE_ZEPHYR,
        _CHAT_TEMPLATE_MAX,
} ChatTemplate;

/*
 * Recognises the family of a Jinja chat template by its distinctive markers,
 * in llama.cpp's order: "<|im_start|>" ChatML; "[INST]" with "<<SYS>>" Llama 2,
 * without it Mistral; "<|user|>" (not Phi-3's "<|end|>", not GLM's "[gMASK]")
 * Zephyr; "<|start_header_id|>" and "<|end_header_id|>" Llama 3.
 *
 * jinja NULL or "" (older GGUF conversions carry no template): falls back on
 * the architecture: "qwen2"/"qwen2moe"/"qwen3"/"qwen3moe" ChatML, "llama"
 * Llama 2 (Llama 3 and most Mistral files do carry their template).
 *
 * Returns 0, -EOPNOTSUPP for a template of another family (Mistral v3/v7 and
 * Tekken, Phi-3, Gemma, ...: format those with an explicit name, or not at
 * all, rather than guess), -ENOENT if there is no template and arch says
 * nothing. *ret is set on success only.
 */
int chat_template_detect(const char *jinja, const char *arch, ChatTemplate *ret);

/* "llama2", "llama3", "chatml", "mistral", "zephyr": 0 or -EINVAL. */
int chat_template_from_name(const char *name, ChatTemplate *ret);
const char *chat_template_name(ChatTemplate t);

/*
 * The text that ends an assistant turn, NULL-terminated: generation should stop
 * there, besides the model's EOS (and EOT) token, which always stops it. A hint
 * for runtimes that match text; the first entry is the template's own marker.
 */
const char *const *chat_template_stop_strings(ChatTemplate t);

/*
 * Formats msgs[0..n) as the template renders them, followed, if
 * add_generation_prompt, by the header of an assistant turn (where the
 * template has one). bos_text and eos_text are the model's BOS and EOS token
 * texts, NULL for "<s>" and "</s>".
 *
 * Returns 0 and the prompt in *ret_prompt (free() it); -EINVAL for a role,
 * order or content the template does not take, -E2BIG for a message or prompt
 * over the limits, -ENOMEM. On error, if ret_error is not NULL, a message that
 * names the message (by its index, from 0) and the problem (free() it; NULL
 * for -ENOMEM). *ret_prompt is set on success only, *ret_error on failure only.
 */
int chat_format(
                ChatTemplate t,
                const ChatMessage *msgs,
                size_t n,
                bool add_generation_prompt,
                const char *bos_text,
                const char *eos_text,
                char **ret_prompt,
                char **ret_error);
