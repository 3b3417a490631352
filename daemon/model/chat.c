/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "macro.h"
#include "utf8.h"

static const char *const template_names[_CHAT_TEMPLATE_MAX] = {
        [CHAT_TEMPLATE_LLAMA2] = "llama2",
        [CHAT_TEMPLATE_LLAMA3] = "llama3",
        [CHAT_TEMPLATE_CHATML] = "chatml",
        [CHAT_TEMPLATE_MISTRAL] = "mistral",
        [CHAT_TEMPLATE_ZEPHYR] = "zephyr",
};

const char *chat_template_name(ChatTemplate t) {
        if ((unsigned) t >= _CHAT_TEMPLATE_MAX)
                return NULL;
        return template_names[t];
}

int chat_template_from_name(const char *name, ChatTemplate *ret) {
        assert(ret);

        if (!name)
                return -EINVAL;
        for (size_t i = 0; i < _CHAT_TEMPLATE_MAX; i++)
                if (streq(name, template_names[i])) {
                        *ret = (ChatTemplate) i;
                        return 0;
                }
        return -EINVAL;
}

const char *const *chat_template_stop_strings(ChatTemplate t) {
        static const char *const llama2[] = { "</s>", NULL };
        static const char *const llama3[] = { "<|eot_id|>", "<|end_of_text|>", NULL };
        static const char *const chatml[] = { "<|im_end|>", "<|endoftext|>", NULL };
        static const char *const none[] = { NULL };

        switch (t) {
        case CHAT_TEMPLATE_LLAMA2:
        case CHAT_TEMPLATE_MISTRAL:
        case CHAT_TEMPLATE_ZEPHYR:
                return llama2;
        case CHAT_TEMPLATE_LLAMA3:
                return llama3;
        case CHAT_TEMPLATE_CHATML:
                return chatml;
        default:
                return none;
        }
}

int chat_template_detect(const char *jinja, const char *arch, ChatTemplate *ret) {
#define HAS(s) (strstr(jinja, (s)) != NULL)
        assert(ret);

        if (jinja && *jinja) {
                /* Checked in llama.cpp's order: ChatML first, because fine-tunes
                 * of every family (Hermes on Llama 3, say) use it and may keep
                 * their base model's tokens around. */
                if (HAS("<|im_start|>")) {
                        *ret = CHAT_TEMPLATE_CHATML;
                        return 0;
                }
                if (HAS("[INST]")) {
                        if (HAS("<<SYS>>")) {
                                *ret = CHAT_TEMPLATE_LLAMA2;
                                return 0;
                        }
                        /* Mistral's later templates differ in a space here and
                         * there: v1 (" [INST]"), v3 ("[/INST]" without the
                         * space before it, tools), v7 ("[SYSTEM_PROMPT]"). Close
                         * is not the same tokens: leave those to an explicit
                         * choice. */
                        if (HAS(" [/INST]") && !HAS(" [INST]") && !HAS("[AVAILABLE_TOOLS]") &&
                            !HAS("[SYSTEM_PROMPT]")) {
                                *ret = CHAT_TEMPLATE_MISTRAL;
                                return 0;
                        }
                        return -EOPNOTSUPP;
                }
                if (HAS("<|user|>")) {
                        /* Phi-3 ("<|end|>") and GLM ("[gMASK]") share the tag,
                         * not the format. */
                        if (HAS("<|end|>") || HAS("[gMASK]"))
                                return -EOPNOTSUPP;
                        *ret = CHAT_TEMPLATE_ZEPHYR;
                        return 0;
                }
                if (HAS("<|start_header_id|>") && HAS("<|end_header_id|>")) {
                        *ret = CHAT_TEMPLATE_LLAMA3;
                        return 0;
                }
                return -EOPNOTSUPP;
        }
#undef HAS

        if (!arch)
                return -ENOENT;
        if (streq(arch, "qwen2") || streq(arch, "qwen2moe") || streq(arch, "qwen3") || streq(arch, "qwen3moe")) {
                *ret = CHAT_TEMPLATE_CHATML;
                return 0;
        }
        /* Llama 2 conversions predate tokenizer.chat_template; Llama 3 ones
         * all have it. A Mistral file without one gets Llama 2's format, which
         * is the same for a first turn without a system message. */
        if (streq(arch, "llama")) {
                *ret = CHAT_TEMPLATE_LLAMA2;
                return 0;
        }
        return -ENOENT;
}

/* ---- a growing string; the first failure sticks, and is checked once at the end ---- */

typedef struct Buffer {
        char *data;
        size_t len;
        size_t cap;
        int error;                      /* 0, -ENOMEM or -E2BIG */
} Buffer;

static void buffer_add(Buffer *b, const char *s, size_t n) {
        if (b->error)
                return;
        if (n > CHAT_PROMPT_MAX - b->len) {
                b->error = -E2BIG;
                return;
        }
        if (b->len + n + 1 > b->cap) {
                size_t cap = MAX(b->cap * 2, b->len + n + 1);
                cap = MAX(cap, (size_t) 256);
                char *d = realloc(b->data, cap);
                if (!d) {
                        b->error = -ENOMEM;
                        return;
                }
                b->data = d;
                b->cap = cap;
        }
        memcpy(b->data + b->len, s, n);
        b->len += n;
        b->data[b->len] = 0;
}

static void buffer_puts(Buffer *b, const char *s) {
        buffer_add(b, s, strlen(s));
}

static void buffer_done(Buffer *b) {
        free(b->data);
        *b = (Buffer) {};
}

/*
 * Python's str.strip(), which is what Jinja's trim and the templates'
 * .strip() call: white space is every code point for which str.isspace() is
 * true, not only ASCII. s is valid UTF-8.
 */
static bool is_python_space(uint32_t c) {
        return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
               c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
               c == 0x202F || c == 0x205F || c == 0x3000;
}

static uint32_t utf8_decode(const unsigned char *s, size_t *ret_len) {
        if (s[0] < 0x80) {
                *ret_len = 1;
                return s[0];
        }
        if (s[0] < 0xE0) {
                *ret_len = 2;
                return (uint32_t) (s[0] & 0x1F) << 6 | (s[1] & 0x3F);
        }
        if (s[0] < 0xF0) {
                *ret_len = 3;
                return (uint32_t) (s[0] & 0x0F) << 12 | (uint32_t) (s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        }
        *ret_len = 4;
        return (uint32_t) (s[0] & 0x07) << 18 | (uint32_t) (s[1] & 0x3F) << 12 | (uint32_t) (s[2] & 0x3F) << 6 |
               (s[3] & 0x3F);
}

static void strip_span(const char *str, size_t len, size_t *ret_start, size_t *ret_end) {
        const unsigned char *s = (const unsigned char *) str;
        size_t start = 0, end = len, l;

        while (start < end && is_python_space(utf8_decode(s + start, &l)))
                start += l;
        while (end > start) {
                size_t b = end - 1;
                while (b > start && (s[b] & 0xC0) == 0x80)
                        b--;
                if (!is_python_space(utf8_decode(s + b, &l)))
                        break;
                end = b;
        }
        *ret_start = start;
        *ret_end = end;
}

static void buffer_add_stripped(Buffer *b, const char *s, size_t n) {
        size_t start, end;
        strip_span(s, n, &start, &end);
        buffer_add(b, s + start, end - start);
}

/* ---- validation ---- */

_printf_(2, 3)
static int fail(char **ret_error, const char *format, ...) {
        if (ret_error) {
                va_list ap;
                char *m;

                va_start(ap, format);
                if (vasprintf(&m, format, ap) < 0)
                        m = NULL;
                va_end(ap);
                *ret_error = m;
        }
        return -EINVAL;
}

static bool role_is(const ChatMessage *m, const char *role) {
        return streq(m->role, role);
}

static int validate(ChatTemplate t, const ChatMessage *msgs, size_t n, char **ret_error) {
        const char *name = chat_template_name(t);
        /* Llama 2 and Mistral raise_exception() unless the turns alternate. */
        bool alternate = t == CHAT_TEMPLATE_LLAMA2 || t == CHAT_TEMPLATE_MISTRAL;
        size_t first = 0;

        if (n == 0)
                return fail(ret_error, "The conversation has no messages");

        for (size_t i = 0; i < n; i++) {
                const ChatMessage *m = &msgs[i];

                if (!m->role)
                        return fail(ret_error, "messages[%zu] has no role", i);
                if (!role_is(m, "system") && !role_is(m, "user") && !role_is(m, "assistant")) {
                        /* Echo only what is safe to put in a D-Bus string. */
                        size_t l = strnlen(m->role, 33);
                        if (l <= 32 && utf8_is_valid_n(m->role, l))
                                return fail(ret_error,
                                            "messages[%zu] has role '%s': expected system, user or assistant",
                                            i, m->role);
                        return fail(ret_error, "messages[%zu] has an invalid role: expected system, user or assistant", i);
                }
                if (role_is(m, "system") && i > 0)
                        return fail(ret_error, "messages[%zu] is a system message: only the first message may be one", i);
                if (!m->content)
                        return fail(ret_error, "messages[%zu] (%s) has no content", i, m->role);

                size_t l = strnlen(m->content, (size_t) CHAT_CONTENT_MAX + 1);
                if (l > CHAT_CONTENT_MAX) {
                        (void) fail(ret_error, "messages[%zu] (%s) is longer than %u bytes", i, m->role,
                                    CHAT_CONTENT_MAX);
                        return -E2BIG;
                }
                if (!utf8_is_valid_n(m->content, l))
                        return fail(ret_error, "messages[%zu] (%s) is not valid UTF-8", i, m->role);
        }

        if (!alternate)
                return 0;

        if (role_is(&msgs[0], "system"))
                first = 1;
        if (first == n)
                return fail(ret_error, "The %s template needs a user message after the system message", name);
        for (size_t i = first; i < n; i++) {
                const char *want = (i - first) % 2 == 0 ? "user" : "assistant";
                if (!role_is(&msgs[i], want))
                        return fail(ret_error,
                                    "messages[%zu] (%s) is out of turn: the %s template expects %s there; "
                                    "user and assistant turns must alternate, starting with user",
                                    i, msgs[i].role, name, want);
        }
        return 0;
}

/* ---- the formats; see chat.h for each with an example ---- */

static int format_llama2(Buffer *b, const ChatMessage *msgs, size_t n, const char *bos, const char *eos) {
        const char *system = NULL;

        if (role_is(&msgs[0], "system")) {
                system = msgs[0].content;
                msgs++;
                n--;
        }

        for (size_t i = 0; i < n; i++) {
                const char *content = msgs[i].content;

                if (role_is(&msgs[i], "user")) {
                        if (i > 0)
                                buffer_puts(b, bos);
                        buffer_puts(b, "[INST] ");
                        if (i == 0 && system) {
                                /* The template strips '<<SYS>>\n' + system +
                                 * '\n<</SYS>>\n\n' + user as one string: only
                                 * the user's trailing space goes, and with an
                                 * empty user message the blank line too. */
                                Buffer joined = {};
                                buffer_puts(&joined, "<<SYS>>\n");
                                buffer_puts(&joined, system);
                                buffer_puts(&joined, "\n<</SYS>>\n\n");
                                buffer_puts(&joined, content);
                                if (joined.error) {
                                        int r = joined.error;
                                        buffer_done(&joined);
                                        return r;
                                }
                                buffer_add_stripped(b, joined.data, joined.len);
                                buffer_done(&joined);
                        } else
                                buffer_add_stripped(b, content, strlen(content));
                        buffer_puts(b, " [/INST]");
                } else {
                        buffer_puts(b, " ");
                        buffer_add_stripped(b, content, strlen(content));
                        buffer_puts(b, " ");
                        buffer_puts(b, eos);
                }
        }
        return 0;
}

static void format_llama3(Buffer *b, const ChatMessage *msgs, size_t n, bool add_generation_prompt) {
        for (size_t i = 0; i < n; i++) {
                buffer_puts(b, "<|start_header_id|>");
                buffer_puts(b, msgs[i].role);
                buffer_puts(b, "<|end_header_id|>\n\n");
                buffer_add_stripped(b, msgs[i].content, strlen(msgs[i].content));
                buffer_puts(b, "<|eot_id|>");
        }
        if (add_generation_prompt)
                buffer_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void format_chatml(Buffer *b, const ChatMessage *msgs, size_t n, bool add_generation_prompt) {
        for (size_t i = 0; i < n; i++) {
                buffer_puts(b, "<|im_start|>");
                buffer_puts(b, msgs[i].role);
                buffer_puts(b, "\n");
                buffer_puts(b, msgs[i].content);
                buffer_puts(b, "<|im_end|>\n");
        }
        if (add_generation_prompt)
                buffer_puts(b, "<|im_start|>assistant\n");
}

static void format_mistral(Buffer *b, const ChatMessage *msgs, size_t n, const char *eos) {
        const char *system = NULL;

        if (role_is(&msgs[0], "system")) {
                system = msgs[0].content;
                msgs++;
                n--;
        }

        for (size_t i = 0; i < n; i++) {
                if (role_is(&msgs[i], "user")) {
                        buffer_puts(b, "[INST] ");
                        if (i == 0 && system) {
                                buffer_puts(b, system);
                                buffer_puts(b, "\n\n");
                        }
                        buffer_puts(b, msgs[i].content);
                        buffer_puts(b, " [/INST]");
                } else {
                        buffer_puts(b, msgs[i].content);
                        buffer_puts(b, eos);
                }
        }
}

static void format_zephyr(Buffer *b, const ChatMessage *msgs, size_t n, bool add_generation_prompt,
                          const char *eos) {
        for (size_t i = 0; i < n; i++) {
                buffer_puts(b, "<|");
                buffer_puts(b, msgs[i].role);
                buffer_puts(b, "|>\n");
                buffer_puts(b, msgs[i].content);
                buffer_puts(b, eos);
                buffer_puts(b, "\n");
        }
        if (add_generation_prompt)
                buffer_puts(b, "<|assistant|>\n");
}

int chat_format(
                ChatTemplate t,
                const ChatMessage *msgs,
                size_t n,
                bool add_generation_prompt,
                const char *bos_text,
                const char *eos_text,
                char **ret_prompt,
                char **ret_error) {

        Buffer b = {};
        int r;

        assert(msgs || n == 0);
        assert(ret_prompt);

        if ((unsigned) t >= _CHAT_TEMPLATE_MAX)
                return fail(ret_error, "Unknown chat template %d", (int) t);

        r = validate(t, msgs, n, ret_error);
        if (r < 0)
                return r;

        const char *bos = bos_text ? bos_text : "<s>";
        const char *eos = eos_text ? eos_text : "</s>";

        switch (t) {
        case CHAT_TEMPLATE_LLAMA2:
                r = format_llama2(&b, msgs, n, bos, eos);
                if (r < 0 && !b.error)
                        b.error = r;
                break;
        case CHAT_TEMPLATE_LLAMA3:
                format_llama3(&b, msgs, n, add_generation_prompt);
                break;
        case CHAT_TEMPLATE_CHATML:
                format_chatml(&b, msgs, n, add_generation_prompt);
                break;
        case CHAT_TEMPLATE_MISTRAL:
                format_mistral(&b, msgs, n, eos);
                break;
        case CHAT_TEMPLATE_ZEPHYR:
                format_zephyr(&b, msgs, n, add_generation_prompt, eos);
                break;
        default:
                assert(false);
        }

        /* Allocates if nothing was written: an empty prompt (a lone empty
         * assistant message, say) is still a string. */
        buffer_add(&b, "", 0);

        if (b.error) {
                r = b.error;
                buffer_done(&b);
                if (r == -E2BIG)
                        (void) fail(ret_error, "The formatted prompt is longer than %u bytes", CHAT_PROMPT_MAX);
                else if (ret_error)
                        *ret_error = NULL;
                return r;
        }

        *ret_prompt = b.data;
        return 0;
}
