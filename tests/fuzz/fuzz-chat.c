/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes chat templates: a model's Jinja template (from its GGUF file) and
 * messages (from D-Bus and HTTP clients). The input is NUL-separated: the
 * template text, the architecture, then role and content pairs. Any bytes
 * give a family or a clear refusal, and a prompt or an error that says
 * which message is wrong, never a crash; a prompt stays under the limit.
 * Every family formats the messages, not only the detected one.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MESSAGES 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *text = malloc(size + 1);
        const char *part[2 + 2 * MAX_MESSAGES];
        size_t n_parts = 0;
        ChatMessage msgs[MAX_MESSAGES];
        ChatTemplate t;

        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = 0;
        for (char *p = text; n_parts < ELEMENTSOF(part);) {
                part[n_parts++] = p;
                size_t len = strlen(p);
                if (p + len >= text + size)
                        break;
                p += len + 1;
        }

        int r = chat_template_detect(part[0], n_parts > 1 ? part[1] : NULL, &t);
        if (r < 0 && r != -EOPNOTSUPP && r != -ENOENT)
                abort();
        if (r == 0 && (unsigned) t >= _CHAT_TEMPLATE_MAX)
                abort();

        size_t n = n_parts > 2 ? (n_parts - 2) / 2 : 0;
        for (size_t i = 0; i < n; i++)
                msgs[i] = (ChatMessage) { .role = part[2 + 2 * i], .content = part[3 + 2 * i] };
        for (int f = 0; f < _CHAT_TEMPLATE_MAX; f++)
                for (int gen = 0; gen < 2; gen++) {
                        char *prompt = NULL, *why = NULL;
                        r = chat_format((ChatTemplate) f, msgs, n, gen, NULL, NULL, &prompt, &why);
                        if (r == 0) {
                                if (!prompt || strlen(prompt) > CHAT_PROMPT_MAX)
                                        abort();
                        } else if (r == -EINVAL || r == -E2BIG) {
                                if (!why || prompt)
                                        abort();        /* refused, with a reason */
                        } else if (r != -ENOMEM)
                                abort();
                        free(prompt);
                        free(why);
                }
        free(text);
        return 0;
}
