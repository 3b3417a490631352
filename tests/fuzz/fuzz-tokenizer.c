/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the tokenizers: any bytes encode with and without special-token
 * parsing, every id is in range, decoding (whole and streamed) gives the same
 * valid UTF-8, and byte-level BPE gives valid UTF-8 input back unchanged.
 *
 * The vocabularies come from $INFERD_SHARED_DIR/testdata/tokenizer, loaded
 * once; without them every input is a no-op.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "macro.h"
#include "tokenizer.h"
#include "unicode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const vocab_names[] = {
        "ggml-vocab-llama-spm.gguf",
        "ggml-vocab-gpt-2.gguf",
        "ggml-vocab-llama-bpe.gguf",
        "ggml-vocab-qwen2.gguf",
};
static Tokenizer *vocabs[ELEMENTSOF(vocab_names)];

static void load_vocabs(void) {
        static bool loaded;
        const char *dir = getenv("INFERD_SHARED_DIR");

        if (loaded)
                return;
        loaded = true;
        if (!dir) {
                fprintf(stderr, "INFERD_SHARED_DIR is not set: nothing to fuzz\n");
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(vocab_names); i++) {
                _cleanup_(gguf_freep) GgufFile *f = NULL;
                char path[4096];
                char *why = NULL;

                snprintf(path, sizeof path, "%s/testdata/tokenizer/%s", dir, vocab_names[i]);
                if (gguf_open(path, NULL, &f, &why) < 0 || tokenizer_new_from_gguf(f, &vocabs[i], &why) < 0)
                        fprintf(stderr, "%s: %s: skipping\n", path, why ? why : "cannot load");
                free(why);
        }
}

static bool utf8_valid(const char *s, size_t n) {
        for (size_t i = 0; i < n;) {
                uint32_t cp;
                int k = utf8_decode((const uint8_t *) s + i, n - i, &cp);
                if (k <= 0)
                        return false;
                i += (size_t) k;
        }
        return true;
}

static void check(const Tokenizer *t, const uint8_t *data, size_t size, bool parse_special) {
        bool bpe = strcmp(tokenizer_model_name(t), "gpt2") == 0;
        _cleanup_(tokenizer_decoder_freep) TokenDecoder *d = NULL;
        _cleanup_free_ int32_t *ids = NULL;
        _cleanup_free_ char *whole = NULL, *streamed = NULL;
        size_t n, whole_len, streamed_len = 0;

        if (tokenizer_encode(t, (const char *) data, size, !parse_special, parse_special, &ids, &n) < 0)
                abort();
        for (size_t i = 0; i < n; i++)
                if (ids[i] < 0 || (uint32_t) ids[i] >= tokenizer_n_vocab(t))
                        abort();

        if (tokenizer_decode(t, ids, n, 0, &whole, &whole_len) < 0 || !utf8_valid(whole, whole_len))
                abort();

        /* Byte-level BPE loses nothing: valid UTF-8 comes back as it went in. */
        if (bpe && !parse_special && utf8_valid((const char *) data, size) &&
            (whole_len != size || memcmp(whole, data, size) != 0))
                abort();

        if (tokenizer_decoder_new(t, 0, &d) < 0)
                abort();
        streamed = malloc(whole_len + 1);
        if (!streamed)
                abort();
        for (size_t i = 0; i <= n; i++) {
                _cleanup_free_ char *s = NULL;
                size_t len;
                if ((i < n ? tokenizer_decode_push(d, ids[i], &s, &len) : tokenizer_decode_flush(d, &s, &len)) < 0)
                        abort();
                if (!utf8_valid(s, len) || streamed_len + len > whole_len)
                        abort();
                memcpy(streamed + streamed_len, s, len);
                streamed_len += len;
        }
        if (streamed_len != whole_len || memcmp(streamed, whole, whole_len) != 0)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        load_vocabs();
        for (size_t i = 0; i < ELEMENTSOF(vocabs); i++) {
                if (!vocabs[i])
                        continue;
                check(vocabs[i], data, size, false);
                check(vocabs[i], data, size, true);
        }
        return 0;
}
