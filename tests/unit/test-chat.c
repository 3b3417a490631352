/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "macro.h"

/* The conversation every template is checked with. */
static const ChatMessage conversation[] = {
        { "system", "You are a pirate." },
        { "user", "Hello!" },
        { "assistant", "Ahoy, matey." },
        { "user", "Where is the treasure?" },
};

static void format_ok(ChatTemplate t, const ChatMessage *m, size_t n, bool gen, const char *bos, const char *eos,
                      const char *expect) {
        char *prompt = NULL, *why = NULL;
        int r = chat_format(t, m, n, gen, bos, eos, &prompt, &why);
        if (r < 0)
                fail_msg("%s: unexpected error %d: %s", chat_template_name(t), r, why ? why : "(none)");
        assert_null(why);
        assert_non_null(prompt);
        if (!streq(prompt, expect))
                fail_msg("%s:\n got      '%s'\n expected '%s'", chat_template_name(t), prompt, expect);
        free(prompt);
}

static void format_fails(ChatTemplate t, const ChatMessage *m, size_t n, int error, const char *expect) {
        char *prompt = NULL, *why = NULL;
        assert_int_equal(chat_format(t, m, n, true, NULL, NULL, &prompt, &why), error);
        assert_null(prompt);
        assert_non_null(why);
        if (!strstr(why, expect))
                fail_msg("error '%s' does not contain '%s'", why, expect);
        free(why);
}

static void test_llama2(void **state) {
        /* The official Llama-2-chat template, rendered by transformers (and the
         * example in Meta's model card), without the leading BOS. */
        format_ok(CHAT_TEMPLATE_LLAMA2, conversation, 4, true, NULL, NULL,
                  "[INST] <<SYS>>\nYou are a pirate.\n<</SYS>>\n\nHello! [/INST] Ahoy, matey. </s>"
                  "<s>[INST] Where is the treasure? [/INST]");
        /* No system message; no generation prompt either way. */
        format_ok(CHAT_TEMPLATE_LLAMA2, conversation + 1, 1, false, NULL, NULL, "[INST] Hello! [/INST]");
        format_ok(CHAT_TEMPLATE_LLAMA2, conversation + 1, 1, true, NULL, NULL, "[INST] Hello! [/INST]");
        /* content.strip(): every message's own white space, Unicode's too
         * (U+00A0, U+3000), but the system block and the first user message
         * are one string, so the system text keeps its spaces. */
        static const ChatMessage spaced[] = {
                { "system", " sys \n" },
                { "user", "\n hi \xc2\xa0" },
                { "assistant", "\t yo \xe3\x80\x80" },
                { "user", "  next  " },
        };
        format_ok(CHAT_TEMPLATE_LLAMA2, spaced, 4, true, "<BOS>", "<EOS>",
                  "[INST] <<SYS>>\n sys \n\n<</SYS>>\n\n\n hi [/INST] yo <EOS><BOS>[INST] next [/INST]");
        /* An empty first user message: the strip takes the blank line after <</SYS>>. */
        static const ChatMessage empty_user[] = { { "system", "S" }, { "user", "" } };
        format_ok(CHAT_TEMPLATE_LLAMA2, empty_user, 2, true, NULL, NULL, "[INST] <<SYS>>\nS\n<</SYS>> [/INST]");
}

static void test_llama3(void **state) {
        format_ok(CHAT_TEMPLATE_LLAMA3, conversation, 4, true, NULL, NULL,
                  "<|start_header_id|>system<|end_header_id|>\n\nYou are a pirate.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nAhoy, matey.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nWhere is the treasure?<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
        format_ok(CHAT_TEMPLATE_LLAMA3, conversation + 1, 1, false, NULL, NULL,
                  "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>");
        /* | trim */
        static const ChatMessage spaced[] = { { "user", "\n  Hi there \n\n" } };
        format_ok(CHAT_TEMPLATE_LLAMA3, spaced, 1, true, NULL, NULL,
                  "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
        /* Consecutive user messages are the caller's business here. */
        static const ChatMessage two_users[] = { { "user", "a" }, { "user", "b" } };
        format_ok(CHAT_TEMPLATE_LLAMA3, two_users, 2, false, NULL, NULL,
                  "<|start_header_id|>user<|end_header_id|>\n\na<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nb<|eot_id|>");
}

static void test_chatml(void **state) {
        format_ok(CHAT_TEMPLATE_CHATML, conversation, 4, true, NULL, NULL,
                  "<|im_start|>system\nYou are a pirate.<|im_end|>\n"
                  "<|im_start|>user\nHello!<|im_end|>\n"
                  "<|im_start|>assistant\nAhoy, matey.<|im_end|>\n"
                  "<|im_start|>user\nWhere is the treasure?<|im_end|>\n"
                  "<|im_start|>assistant\n");
        /* Contents untouched, white space included. */
        static const ChatMessage spaced[] = { { "user", " hi \n" } };
        format_ok(CHAT_TEMPLATE_CHATML, spaced, 1, false, NULL, NULL, "<|im_start|>user\n hi \n<|im_end|>\n");
        /* An assistant turn to continue (no generation prompt). */
        static const ChatMessage prefill[] = { { "user", "2+2?" }, { "assistant", "" } };
        format_ok(CHAT_TEMPLATE_CHATML, prefill, 2, false, NULL, NULL,
                  "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n");
}

static void test_mistral(void **state) {
        format_ok(CHAT_TEMPLATE_MISTRAL, conversation, 4, true, NULL, NULL,
                  "[INST] You are a pirate.\n\nHello! [/INST]Ahoy, matey.</s>[INST] Where is the treasure? [/INST]");
        /* The Mistral-7B-Instruct-v0.1 template's own output, without BOS. */
        format_ok(CHAT_TEMPLATE_MISTRAL, conversation + 1, 3, false, NULL, NULL,
                  "[INST] Hello! [/INST]Ahoy, matey.</s>[INST] Where is the treasure? [/INST]");
        format_ok(CHAT_TEMPLATE_MISTRAL, conversation + 1, 2, false, NULL, "<eos>",
                  "[INST] Hello! [/INST]Ahoy, matey.<eos>");
}

static void test_zephyr(void **state) {
        format_ok(CHAT_TEMPLATE_ZEPHYR, conversation, 4, true, NULL, NULL,
                  "<|system|>\nYou are a pirate.</s>\n"
                  "<|user|>\nHello!</s>\n"
                  "<|assistant|>\nAhoy, matey.</s>\n"
                  "<|user|>\nWhere is the treasure?</s>\n"
                  "<|assistant|>\n");
        /* StableLM-zephyr: the same with its own EOS. */
        format_ok(CHAT_TEMPLATE_ZEPHYR, conversation + 1, 1, false, NULL, "<|endoftext|>",
                  "<|user|>\nHello!<|endoftext|>\n");
}

static void test_invalid(void **state) {
        static const ChatMessage bad_role[] = { { "user", "hi" }, { "tool", "42" } };
        static const ChatMessage late_system[] = { { "user", "hi" }, { "system", "be nice" } };
        static const ChatMessage two_systems[] = { { "system", "a" }, { "system", "b" } };
        static const ChatMessage no_role[] = { { NULL, "x" } };
        static const ChatMessage no_content[] = { { "user", NULL } };
        static const ChatMessage bad_utf8[] = { { "user", "ok" }, { "assistant", "\xc3\x28" } };
        static const ChatMessage overlong[] = { { "user", "\xc0\xaf" } };
        static const ChatMessage surrogate[] = { { "user", "\xed\xa0\x80" } };
        static const ChatMessage bad_role_bytes[] = { { "\xff\xfe", "x" } };
        static const ChatMessage assistant_first[] = { { "assistant", "hello" }, { "user", "hi" } };
        static const ChatMessage two_users[] = { { "system", "s" }, { "user", "a" }, { "user", "b" } };
        static const ChatMessage only_system[] = { { "system", "s" } };

        for (ChatTemplate t = 0; t < _CHAT_TEMPLATE_MAX; t++) {
                format_fails(t, bad_role, 2, -EINVAL,
                             "messages[1] has role 'tool': expected system, user or assistant");
                format_fails(t, late_system, 2, -EINVAL,
                             "messages[1] is a system message: only the first message may be one");
                format_fails(t, two_systems, 2, -EINVAL, "messages[1] is a system message");
                format_fails(t, no_role, 1, -EINVAL, "messages[0] has no role");
                format_fails(t, no_content, 1, -EINVAL, "messages[0] (user) has no content");
                format_fails(t, bad_utf8, 2, -EINVAL, "messages[1] (assistant) is not valid UTF-8");
                format_fails(t, overlong, 1, -EINVAL, "messages[0] (user) is not valid UTF-8");
                format_fails(t, surrogate, 1, -EINVAL, "messages[0] (user) is not valid UTF-8");
                format_fails(t, bad_role_bytes, 1, -EINVAL, "messages[0] has an invalid role");
                format_fails(t, conversation, 0, -EINVAL, "The conversation has no messages");
        }

        /* Llama 2 and Mistral: strict alternation, as their templates raise. */
        format_fails(CHAT_TEMPLATE_LLAMA2, assistant_first, 2, -EINVAL,
                     "messages[0] (assistant) is out of turn: the llama2 template expects user there");
        format_fails(CHAT_TEMPLATE_MISTRAL, two_users, 3, -EINVAL,
                     "messages[2] (user) is out of turn: the mistral template expects assistant there; "
                     "user and assistant turns must alternate, starting with user");
        format_fails(CHAT_TEMPLATE_LLAMA2, only_system, 1, -EINVAL,
                     "The llama2 template needs a user message after the system message");
        /* The others take them. */
        char *prompt = NULL;
        assert_int_equal(chat_format(CHAT_TEMPLATE_CHATML, assistant_first, 2, true, NULL, NULL, &prompt, NULL), 0);
        free(prompt);
        assert_int_equal(chat_format(CHAT_TEMPLATE_ZEPHYR, only_system, 1, true, NULL, NULL, &prompt, NULL), 0);
        free(prompt);

        /* An unknown template value; ret_error may be NULL. */
        prompt = NULL;
        assert_int_equal(chat_format(_CHAT_TEMPLATE_MAX, conversation, 4, true, NULL, NULL, &prompt, NULL), -EINVAL);
        assert_null(prompt);
}

static void test_limits(void **state) {
        _cleanup_free_ char *big = malloc(CHAT_CONTENT_MAX + 2);
        assert_non_null(big);
        memset(big, 'a', CHAT_CONTENT_MAX);
        big[CHAT_CONTENT_MAX] = 0;

        /* Exactly at the limit is fine... */
        ChatMessage m[20] = { { "user", big } };
        char *prompt = NULL;
        assert_int_equal(chat_format(CHAT_TEMPLATE_CHATML, m, 1, true, NULL, NULL, &prompt, NULL), 0);
        assert_int_equal(strlen(prompt), CHAT_CONTENT_MAX + strlen("<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"));
        free(prompt);

        /* ... one byte more is not. */
        big[CHAT_CONTENT_MAX] = 'a';
        big[CHAT_CONTENT_MAX + 1] = 0;
        format_fails(CHAT_TEMPLATE_CHATML, m, 1, -E2BIG, "messages[0] (user) is longer than 1048576 bytes");

        /* Neither can the whole prompt grow without bound. */
        big[CHAT_CONTENT_MAX] = 0;
        for (size_t i = 0; i < ELEMENTSOF(m); i++)
                m[i] = (ChatMessage) { i % 2 ? "assistant" : "user", big };
        format_fails(CHAT_TEMPLATE_CHATML, m, ELEMENTSOF(m), -E2BIG,
                     "The formatted prompt is longer than 16777216 bytes");
        format_fails(CHAT_TEMPLATE_LLAMA2, m, ELEMENTSOF(m), -E2BIG,
                     "The formatted prompt is longer than 16777216 bytes");
}

/* ---- detection, from excerpts of the real templates ---- */

/* meta-llama/Llama-2-7b-chat-hf, tokenizer_config.json */
static const char llama2_jinja[] =
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
        "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}"
        "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
        "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

/* meta-llama/Meta-Llama-3-8B-Instruct */
static const char llama3_jinja[] =
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
        "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
        "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/* Qwen/Qwen2-7B-Instruct */
static const char qwen2_jinja[] =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* NousResearch/Hermes-2-Pro-Llama-3-8B: ChatML over Llama 3's vocabulary. */
static const char hermes_llama3_jinja[] =
        "{{bos_token}}{% for message in messages %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* mistralai/Mistral-7B-Instruct-v0.1 */
static const char mistral_jinja[] =
        "{{ bos_token }}{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

/* mistralai/Mistral-7B-Instruct-v0.3: tools, no space before [/INST] */
static const char mistral_v3_jinja[] =
        "{%- if messages[0][\"role\"] == \"system\" %}{%- set system_message = messages[0][\"content\"] %}"
        "{{- bos_token }}{%- for message in loop_messages %}"
        "{%- if tools is not none and (message == user_messages[-1]) %}{{- \"[AVAILABLE_TOOLS] [\" }}"
        "{%- if message[\"role\"] == \"user\" %}{{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}";

/* HuggingFaceH4/zephyr-7b-beta */
static const char zephyr_jinja[] =
        "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
        "{{ '<|user|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n"
        "{{ '<|system|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
        "{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n"
        "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

/* microsoft/Phi-3-mini-4k-instruct: same tags, another format */
static const char phi3_jinja[] =
        "{% for message in messages %}{% if message['role'] == 'system' %}"
        "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
        "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}";

/* google/gemma-2-9b-it */
static const char gemma_jinja[] =
        "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + role + '\\n' + "
        "message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";

static void detect(const char *jinja, const char *arch, int expect_r, ChatTemplate expect) {
        ChatTemplate t = _CHAT_TEMPLATE_MAX;
        int r = chat_template_detect(jinja, arch, &t);
        assert_int_equal(r, expect_r);
        if (r == 0)
                assert_string_equal(chat_template_name(t), chat_template_name(expect));
        else
                assert_int_equal(t, _CHAT_TEMPLATE_MAX);        /* untouched */
}

static void test_detect(void **state) {
        detect(llama2_jinja, "llama", 0, CHAT_TEMPLATE_LLAMA2);
        detect(llama3_jinja, "llama", 0, CHAT_TEMPLATE_LLAMA3);
        detect(qwen2_jinja, "qwen2", 0, CHAT_TEMPLATE_CHATML);
        detect(hermes_llama3_jinja, "llama", 0, CHAT_TEMPLATE_CHATML);
        detect(mistral_jinja, "llama", 0, CHAT_TEMPLATE_MISTRAL);
        detect(zephyr_jinja, "llama", 0, CHAT_TEMPLATE_ZEPHYR);

        /* Families we do not format exactly are not guessed, whatever the arch. */
        detect(mistral_v3_jinja, "llama", -EOPNOTSUPP, 0);
        detect(phi3_jinja, "phi3", -EOPNOTSUPP, 0);
        detect(gemma_jinja, "gemma2", -EOPNOTSUPP, 0);

        /* No template: the architecture decides, if it can. */
        detect(NULL, "qwen2", 0, CHAT_TEMPLATE_CHATML);
        detect("", "qwen3", 0, CHAT_TEMPLATE_CHATML);
        detect(NULL, "llama", 0, CHAT_TEMPLATE_LLAMA2);
        detect(NULL, "gemma2", -ENOENT, 0);
        detect(NULL, NULL, -ENOENT, 0);
}

static void test_names(void **state) {
        static const char *const names[] = { "llama2", "llama3", "chatml", "mistral", "zephyr" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                ChatTemplate t;
                assert_int_equal(chat_template_from_name(names[i], &t), 0);
                assert_string_equal(chat_template_name(t), names[i]);
                const char *const *stop = chat_template_stop_strings(t);
                assert_non_null(stop);
                assert_non_null(stop[0]);
        }
        ChatTemplate t = CHAT_TEMPLATE_LLAMA2;
        assert_int_equal(chat_template_from_name("ChatML", &t), -EINVAL);
        assert_int_equal(chat_template_from_name("", &t), -EINVAL);
        assert_int_equal(chat_template_from_name(NULL, &t), -EINVAL);
        assert_int_equal(t, CHAT_TEMPLATE_LLAMA2);
        assert_null(chat_template_name(_CHAT_TEMPLATE_MAX));

        assert_string_equal(chat_template_stop_strings(CHAT_TEMPLATE_LLAMA3)[0], "<|eot_id|>");
        assert_string_equal(chat_template_stop_strings(CHAT_TEMPLATE_CHATML)[0], "<|im_end|>");
        assert_string_equal(chat_template_stop_strings(CHAT_TEMPLATE_MISTRAL)[0], "</s>");
        assert_null(chat_template_stop_strings(_CHAT_TEMPLATE_MAX)[0]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_llama2),
                cmocka_unit_test(test_llama3),
                cmocka_unit_test(test_chatml),
                cmocka_unit_test(test_mistral),
                cmocka_unit_test(test_zephyr),
                cmocka_unit_test(test_invalid),
                cmocka_unit_test(test_limits),
                cmocka_unit_test(test_detect),
                cmocka_unit_test(test_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
