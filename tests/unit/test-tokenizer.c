/* SPDX-License-Identifier: MIT */
/*
 * Tokenizers: llama.cpp's test vectors for four vocabularies (SentencePiece,
 * GPT-2, Llama 3, Qwen2) from $INFERD_SHARED_DIR/testdata/tokenizer, the
 * pre-tokenizer regexes on hand-picked edge cases, streaming decoding across
 * split characters, special tokens, and hostile vocabulary metadata.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fileio.h"
#include "gguf.h"
#include "macro.h"
#include "tokenizer-internal.h"
#include "tokenizer.h"
#include "unicode.h"

enum { VOCAB_SPM, VOCAB_GPT2, VOCAB_LLAMA3, VOCAB_QWEN2, N_VOCABS };
static const char *const vocab_names[N_VOCABS] = {
        "ggml-vocab-llama-spm.gguf",
        "ggml-vocab-gpt-2.gguf",
        "ggml-vocab-llama-bpe.gguf",
        "ggml-vocab-qwen2.gguf",
};
static Tokenizer *vocabs[N_VOCABS];
static char tmpdir[] = "/tmp/test-tokenizer-XXXXXX";

static int setup(void **state) {
        return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
        char cmd[128];
        for (size_t i = 0; i < N_VOCABS; i++)
                vocabs[i] = tokenizer_free(vocabs[i]);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        return system(cmd) == 0 ? 0 : -1;
}

/* $INFERD_SHARED_DIR/rel, or NULL (with a message) when it is not there. */
static const char *shared_path(const char *rel) {
        static char buf[4096];
        const char *d = getenv("INFERD_SHARED_DIR");
        struct stat st;

        if (!d || stat(d, &st) < 0 || !S_ISDIR(st.st_mode)) {
                print_message("INFERD_SHARED_DIR is not set or not a directory: skipping (needs %s)\n", rel);
                return NULL;
        }
        snprintf(buf, sizeof buf, "%s/%s", d, rel);
        if (access(buf, R_OK) < 0) {
                print_message("%s is missing: skipping\n", buf);
                return NULL;
        }
        return buf;
}

static Tokenizer *load_path(const char *path) {
        _cleanup_(gguf_freep) GgufFile *f = NULL;
        _cleanup_free_ char *why = NULL;
        Tokenizer *t = NULL;

        if (gguf_open(path, NULL, &f, &why) < 0)
                fail_msg("%s: %s", path, strna(why));
        if (tokenizer_new_from_gguf(f, &t, &why) < 0)
                fail_msg("%s: %s", path, strna(why));
        return t;
}

/* The vocabulary, loaded once; skips the test when the file is missing. */
static const Tokenizer *vocab(int v) {
        if (!vocabs[v]) {
                char rel[256];
                snprintf(rel, sizeof rel, "testdata/tokenizer/%s", vocab_names[v]);
                const char *path = shared_path(rel);
                if (!path)
                        skip();
                vocabs[v] = load_path(path);
        }
        return vocabs[v];
}

static void encode(const Tokenizer *t, const char *s, size_t n, bool add_special, bool parse_special, int32_t **ids,
                   size_t *n_ids) {
        assert_int_equal(tokenizer_encode(t, s, n, add_special, parse_special, ids, n_ids), 0);
}

static char *decode(const Tokenizer *t, const int32_t *ids, size_t n, unsigned flags, size_t *len) {
        char *s = NULL;
        assert_int_equal(tokenizer_decode(t, ids, n, flags, &s, len), 0);
        assert_non_null(s);
        return s;
}

static void print_escaped(const char *what, const char *s, size_t n) {
        char buf[4096];
        size_t k = 0;
        for (size_t i = 0; i < n && k + 8 < sizeof buf; i++) {
                uint8_t c = (uint8_t) s[i];
                if (c >= 0x20 && c != '\\' && c != '"' && c != 0x7f)
                        buf[k++] = (char) c;
                else
                        k += (size_t) snprintf(buf + k, sizeof buf - k, "\\x%02x", c);
        }
        buf[k] = 0;
        print_message("%s\"%s\"\n", what, buf);
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
        char buf[8192];
        size_t k = 0;
        for (size_t i = 0; i < n && k + 16 < sizeof buf; i++)
                k += (size_t) snprintf(buf + k, sizeof buf - k, " %" PRIi32, ids[i]);
        buf[k] = 0;
        print_message("%s[%s ]\n", what, buf);
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

/* ---- llama.cpp's test vectors -------------------------------------------- */

#define SEPARATOR "\n__ggml_vocab_test__\n"

typedef struct Cases {
        char *inp, *out;
        size_t n;
        const char *text[64];
        size_t text_len[64];
        const char *expected[64];       /* lines of .out, NUL-terminated */
} Cases;

static void cases_done(Cases *c) {
        free(c->inp);
        free(c->out);
}

static bool load_cases(int v, Cases *c) {
        char rel[256];
        const char *path;
        size_t size;

        *c = (Cases) {};
        snprintf(rel, sizeof rel, "testdata/tokenizer/%s.inp", vocab_names[v]);
        if (!(path = shared_path(rel)))
                return false;
        assert_int_equal(read_full_file(path, 1 << 20, &c->inp, &size), 0);
        snprintf(rel, sizeof rel, "testdata/tokenizer/%s.out", vocab_names[v]);
        if (!(path = shared_path(rel)))
                return false;
        assert_int_equal(read_full_file(path, 1 << 20, &c->out, &size), 0);

        /* Piece i is input i: everything up to its separator. */
        const char *p = c->inp;
        for (const char *sep; (sep = strstr(p, SEPARATOR)); p = sep + strlen(SEPARATOR)) {
                assert_true(c->n < ELEMENTSOF(c->text));
                c->text[c->n] = p;
                c->text_len[c->n] = (size_t) (sep - p);
                c->n++;
        }
        assert_string_equal(p, ""); /* nothing after the last separator */

        size_t lines = 0;
        for (char *line = c->out, *nl; line && *line; line = nl) {
                nl = strchr(line, '\n');
                if (nl)
                        *nl++ = 0;
                assert_true(lines < ELEMENTSOF(c->expected));
                c->expected[lines++] = line;
        }
        assert_int_equal(lines, c->n);
        return true;
}

static size_t parse_ids(const char *line, int32_t *ids, size_t max) {
        size_t n = 0;
        for (char *end; *line; line = end) {
                while (*line == ' ')
                        line++;
                if (!*line)
                        break;
                long v = strtol(line, &end, 10);
                assert_true(end != line && n < max);
                ids[n++] = (int32_t) v;
        }
        return n;
}

static void check_vectors(int v) {
        _cleanup_(cases_done) Cases c = {};
        const Tokenizer *t = vocab(v);
        size_t passed = 0;

        if (!load_cases(v, &c))
                skip();
        for (size_t i = 0; i < c.n; i++) {
                int32_t want[512];
                size_t n_want = parse_ids(c.expected[i], want, ELEMENTSOF(want));
                _cleanup_free_ int32_t *ids = NULL;
                size_t n;

                encode(t, c.text[i], c.text_len[i], false, false, &ids, &n);
                if (n == n_want && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0)) {
                        passed++;
                        continue;
                }
                print_message("%s: case %zu differs\n", vocab_names[v], i);
                print_escaped("  input:    ", c.text[i], c.text_len[i]);
                print_ids("  expected: ", want, n_want);
                print_ids("  got:      ", ids, n);
        }
        print_message("%s: %zu/%zu cases passed\n", vocab_names[v], passed, c.n);
        assert_int_equal(passed, c.n);
}

static void test_vectors_llama_spm(void **state) {
        check_vectors(VOCAB_SPM);
}

static void test_vectors_gpt2(void **state) {
        check_vectors(VOCAB_GPT2);
}

static void test_vectors_llama_bpe(void **state) {
        check_vectors(VOCAB_LLAMA3);
}

static void test_vectors_qwen2(void **state) {
        check_vectors(VOCAB_QWEN2);
}

/* decode(encode(text)) == text: exactly for byte-level BPE; for SentencePiece
 * with TOKENIZER_DECODE_STRIP_SPACE, which drops the space the encoder put in
 * front. */
static void test_round_trip(void **state) {
        for (int v = 0; v < N_VOCABS; v++) {
                _cleanup_(cases_done) Cases c = {};
                const Tokenizer *t = vocab(v);
                unsigned flags = v == VOCAB_SPM ? TOKENIZER_DECODE_STRIP_SPACE : 0;

                if (!load_cases(v, &c))
                        skip();
                for (size_t i = 0; i < c.n; i++) {
                        _cleanup_free_ int32_t *ids = NULL;
                        _cleanup_free_ char *s = NULL;
                        size_t n, len;

                        encode(t, c.text[i], c.text_len[i], true, false, &ids, &n);
                        s = decode(t, ids, n, flags, &len);
                        if (len != c.text_len[i] || memcmp(s, c.text[i], len) != 0) {
                                print_escaped("input:   ", c.text[i], c.text_len[i]);
                                print_escaped("decoded: ", s, len);
                                fail_msg("%s: case %zu does not survive encode + decode", vocab_names[v], i);
                        }
                }
        }
}

/* ---- pre-tokenizers -------------------------------------------------------- */

static void check_split(PreTokenizer pre, const char *text, const char *const *want) {
        _cleanup_free_ size_t *lens = NULL;
        size_t n, off = 0, i;

        assert_int_equal(bpe_pre_tokenize(pre, text, strlen(text), &lens, &n), 0);
        for (i = 0; i < n; i++) {
                if (!want[i] || strlen(want[i]) != lens[i] || memcmp(want[i], text + off, lens[i]) != 0)
                        break;
                off += lens[i];
        }
        if (i == n && !want[n])
                return;
        print_escaped("text: ", text, strlen(text));
        off = 0;
        for (size_t j = 0; j < n; j++) {
                print_escaped("  got: ", text + off, lens[j]);
                off += lens[j];
        }
        for (size_t j = 0; want[j]; j++)
                print_escaped("  want: ", want[j], strlen(want[j]));
        fail();
}

#define SPLIT(pre, text, ...) check_split(pre, text, (const char *const[]) { __VA_ARGS__, NULL })

static void test_pre_tokenizers(void **state) {
        /* \s+(?!\S): a run of spaces gives its last one to the next word */
        SPLIT(PRE_TOKENIZER_GPT2, "a   b", "a", "  ", " b");
        SPLIT(PRE_TOKENIZER_GPT2, "a   ", "a", "   ");
        SPLIT(PRE_TOKENIZER_GPT2, " ", " ");
        SPLIT(PRE_TOKENIZER_GPT2, "\n\n x", "\n\n", " x");
        SPLIT(PRE_TOKENIZER_GPT2, "  3", " ", " 3");
        SPLIT(PRE_TOKENIZER_GPT2, "it's 'S' we'll ''s", "it", "'s", " '", "S", "'", " we", "'ll", " ''", "s");
        SPLIT(PRE_TOKENIZER_GPT2, "x12 ab!! ?", "x", "12", " ab", "!!", " ?");
        /* U+200B ZERO WIDTH SPACE is not \s */
        SPLIT(PRE_TOKENIZER_GPT2, "caf\xc3\xa9\xe2\x80\x8b" "1", "caf\xc3\xa9", "\xe2\x80\x8b", "1");

        /* llama3: case-insensitive contractions, a leading non-letter joins
         * letters, numbers in threes, punctuation takes trailing newlines */
        SPLIT(PRE_TOKENIZER_LLAMA3, "I'M 'Ve", "I", "'M", " '", "Ve");
        SPLIT(PRE_TOKENIZER_LLAMA3, "1234567", "123", "456", "7");
        SPLIT(PRE_TOKENIZER_LLAMA3, "$hello\tworld", "$hello", "\tworld");
        SPLIT(PRE_TOKENIZER_LLAMA3, "x.\n\ny", "x", ".\n\n", "y");
        SPLIT(PRE_TOKENIZER_LLAMA3, "a \n \n  b", "a", " \n \n", " ", " b");
        SPLIT(PRE_TOKENIZER_LLAMA3, "a\r\n", "a", "\r\n");
        SPLIT(PRE_TOKENIZER_LLAMA3, "x \n3", "x", " \n", "3");
        SPLIT(PRE_TOKENIZER_QWEN2, "1234 ab", "1", "2", "3", "4", " ab");

        /* ill-formed UTF-8 is a symbol and keeps its bytes */
        SPLIT(PRE_TOKENIZER_GPT2, "a\xff\xfe b\xe2\x82", "a", "\xff\xfe", " b", "\xe2\x82");

        /* llama.cpp's four-regex fallback */
        SPLIT(PRE_TOKENIZER_DEFAULT, "a+b, 12345", "a", "+", "b", ",", " ", "123", "45");
}

/* ---- streaming decode ------------------------------------------------------ */

/* Pushes ids one at a time: every chunk must be valid UTF-8 and the whole the
 * same as tokenizer_decode(). Returns how many pushes had to hold bytes back. */
static size_t check_stream(const Tokenizer *t, const int32_t *ids, size_t n, unsigned flags) {
        _cleanup_(tokenizer_decoder_freep) TokenDecoder *d = NULL;
        _cleanup_free_ char *whole = NULL, *all = NULL;
        size_t whole_len, all_len = 0, held = 0;

        whole = decode(t, ids, n, flags, &whole_len);
        all = malloc(whole_len + 1);
        assert_non_null(all);
        assert_int_equal(tokenizer_decoder_new(t, flags, &d), 0);
        for (size_t i = 0; i <= n; i++) {
                _cleanup_free_ char *s = NULL;
                const char *piece;
                size_t len, piece_len;

                if (i < n) {
                        assert_int_equal(tokenizer_decode_push(d, ids[i], &s, &len), 0);
                        assert_int_equal(tokenizer_token_piece(t, ids[i], false, &piece, &piece_len), 0);
                        if (!utf8_valid(piece, piece_len))
                                held++;
                } else
                        assert_int_equal(tokenizer_decode_flush(d, &s, &len), 0);
                assert_int_equal(strlen(s), len);
                if (!utf8_valid(s, len)) {
                        print_escaped("partial: ", s, len);
                        fail_msg("token %zu: the decoder returned a partial character", i);
                }
                assert_true(all_len + len <= whole_len);
                memcpy(all + all_len, s, len);
                all_len += len;
        }
        assert_int_equal(all_len, whole_len);
        assert_memory_equal(all, whole, whole_len);
        return held;
}

static void test_stream_spm_bytes(void **state) {
        const Tokenizer *t = vocab(VOCAB_SPM);
        /* Characters the Llama 2 vocabulary has no token for go out as
         * <0xNN> tokens, one byte each. */
        static const char text[] = "a\xf0\x9f\xa6\x99 b\xe1\x9e\x80 \xf0\x9f\x98\x81!";
        _cleanup_free_ int32_t *ids = NULL;
        _cleanup_free_ char *s = NULL;
        size_t n, len, n_byte_tokens = 0;

        encode(t, text, strlen(text), true, false, &ids, &n);
        for (size_t i = 0; i < n; i++)
                n_byte_tokens += tokenizer_token_type(t, ids[i]) == TOKEN_TYPE_BYTE;
        assert_true(n_byte_tokens >= 8);
        assert_true(check_stream(t, ids, n, TOKENIZER_DECODE_STRIP_SPACE) >= 8);
        s = decode(t, ids, n, TOKENIZER_DECODE_STRIP_SPACE, &len);
        assert_string_equal(s, text);

        /* Without the flag the encoder's space stays (a continuation). */
        free(s);
        s = decode(t, ids, n, 0, &len);
        assert_int_equal(s[0], ' ');
        assert_string_equal(s + 1, text);
}

static void test_stream_bpe_bytes(void **state) {
        static const char text[] = "\xf0\x9f\xa6\x99\xf0\x9f\xa6\x99 caf\xc3\xa9 \xe1\x9e\x80\xe1\x9e\xb6 "
                                   "\xe6\x88\x91\xe6\x83\xb3 \xf0\x9f\x98\x81";
        for (int v = VOCAB_GPT2; v < N_VOCABS; v++) {
                const Tokenizer *t = vocab(v);
                _cleanup_free_ int32_t *ids = NULL;
                _cleanup_free_ char *s = NULL;
                size_t n, len;

                encode(t, text, strlen(text), false, false, &ids, &n);
                size_t held = check_stream(t, ids, n, 0);
                if (v == VOCAB_GPT2) /* GPT-2 spells the emojis and Khmer in byte pieces */
                        assert_true(held >= 4);
                s = decode(t, ids, n, 0, &len);
                assert_string_equal(s, text);
        }
}

static void test_decoder_invalid(void **state) {
        const Tokenizer *t = vocab(VOCAB_SPM);
        int32_t e2 = tokenizer_find_token(t, "<0xE2>", 6), x96 = tokenizer_find_token(t, "<0x96>", 6),
                x81 = tokenizer_find_token(t, "<0x81>", 6), a = tokenizer_find_token(t, "a", 1);
        _cleanup_(tokenizer_decoder_freep) TokenDecoder *d = NULL;
        char *s;
        size_t len;

        assert_true(e2 >= 0 && x96 >= 0 && x81 >= 0 && a >= 0);
        assert_int_equal(tokenizer_decoder_new(t, 0, &d), 0);

        /* U+2581 in three byte tokens: nothing until the third */
        assert_int_equal(tokenizer_decode_push(d, e2, &s, &len), 0);
        assert_int_equal(len, 0);
        free(s);
        assert_int_equal(tokenizer_decode_push(d, x96, &s, &len), 0);
        assert_int_equal(len, 0);
        free(s);
        assert_int_equal(tokenizer_decode_push(d, x81, &s, &len), 0);
        assert_string_equal(s, "\xe2\x96\x81");
        free(s);

        /* A lead byte followed by a non-continuation: U+FFFD, then the letter */
        assert_int_equal(tokenizer_decode_push(d, e2, &s, &len), 0);
        assert_int_equal(len, 0);
        free(s);
        assert_int_equal(tokenizer_decode_push(d, a, &s, &len), 0);
        assert_string_equal(s, "\xef\xbf\xbd" "a");
        free(s);

        /* A stray continuation byte, and an incomplete tail at the flush */
        assert_int_equal(tokenizer_decode_push(d, x81, &s, &len), 0);
        assert_string_equal(s, "\xef\xbf\xbd");
        free(s);
        assert_int_equal(tokenizer_decode_push(d, e2, &s, &len), 0);
        assert_int_equal(len, 0);
        free(s);
        assert_int_equal(tokenizer_decode_flush(d, &s, &len), 0);
        assert_string_equal(s, "\xef\xbf\xbd");
        free(s);

        assert_int_equal(tokenizer_decode_push(d, -1, &s, &len), -EINVAL);
        assert_int_equal(tokenizer_decode_push(d, (int32_t) tokenizer_n_vocab(t), &s, &len), -EINVAL);
}

/* ---- special tokens -------------------------------------------------------- */

static bool contains(const int32_t *ids, size_t n, int32_t id) {
        for (size_t i = 0; i < n; i++)
                if (ids[i] == id)
                        return true;
        return false;
}

static void test_special_qwen2(void **state) {
        const Tokenizer *t = vocab(VOCAB_QWEN2);
        static const char text[] = "<|im_start|>user\nhi<|im_end|>\n";
        _cleanup_free_ int32_t *ids = NULL, *plain = NULL, *user = NULL;
        _cleanup_free_ char *s = NULL;
        size_t n, n_plain, n_user, len;

        assert_int_equal(tokenizer_find_token(t, "<|im_start|>", 12), 151644);
        encode(t, text, strlen(text), false, true, &ids, &n);
        assert_true(n >= 4);
        assert_int_equal(ids[0], 151644);
        assert_int_equal(ids[n - 2], 151645);
        encode(t, "user\nhi", 7, false, false, &user, &n_user);
        assert_int_equal(n, n_user + 3);
        assert_memory_equal(ids + 1, user, n_user * sizeof *ids);

        /* Not parsed: ordinary text, and it survives the round trip. */
        encode(t, text, strlen(text), false, false, &plain, &n_plain);
        assert_false(contains(plain, n_plain, 151644));
        assert_false(contains(plain, n_plain, 151645));
        s = decode(t, plain, n_plain, 0, &len);
        assert_string_equal(s, text);

        /* Control tokens render as nothing unless asked for. */
        free(s);
        s = decode(t, ids, n, 0, &len);
        assert_string_equal(s, "user\nhi\n");
        free(s);
        s = decode(t, ids, n, TOKENIZER_DECODE_SPECIAL, &len);
        assert_string_equal(s, text);

        assert_true(tokenizer_is_eog(t, 151645));       /* <|im_end|> */
        assert_true(tokenizer_is_eog(t, 151643));       /* <|endoftext|>, EOS */
        assert_false(tokenizer_is_eog(t, 151644));
        assert_false(tokenizer_is_eog(t, 0));
        assert_false(tokenizer_is_eog(t, -1));
        assert_false(tokenizer_add_bos(t));
        assert_string_equal(tokenizer_pre_name(t), "qwen2");
}

static void test_special_llama3(void **state) {
        const Tokenizer *t = vocab(VOCAB_LLAMA3);
        static const char text[] = "<|begin_of_text|>Hello<|eot_id|>";
        _cleanup_free_ int32_t *ids = NULL, *bos = NULL, *plain = NULL;
        size_t n, n_bos, n_plain;

        encode(t, text, strlen(text), false, true, &ids, &n);
        assert_int_equal(n, 3);
        assert_int_equal(ids[0], 128000);
        assert_int_equal(ids[1], 9906); /* "Hello" */
        assert_int_equal(ids[2], 128009);

        /* add_special: llama-bpe adds BOS (llama.cpp's default for it) */
        assert_true(tokenizer_add_bos(t));
        encode(t, "Hello", 5, true, false, &bos, &n_bos);
        assert_int_equal(n_bos, 2);
        assert_int_equal(bos[0], 128000);
        assert_int_equal(bos[1], 9906);

        encode(t, text, strlen(text), false, false, &plain, &n_plain);
        assert_false(contains(plain, n_plain, 128000));

        assert_int_equal(tokenizer_bos(t), 128000);
        assert_int_equal(tokenizer_eos(t), 128001);
        assert_int_equal(tokenizer_eot(t), 128009);
        assert_true(tokenizer_is_eog(t, 128001));
        assert_true(tokenizer_is_eog(t, 128009));
        assert_false(tokenizer_is_eog(t, 128000));
}

static void test_special_spm(void **state) {
        const Tokenizer *t = vocab(VOCAB_SPM);
        _cleanup_free_ int32_t *ids = NULL, *plain = NULL;
        size_t n, n_plain;

        /* After a special token the text gets its own space prefix. */
        encode(t, "<s>Hello</s>", 12, false, true, &ids, &n);
        assert_int_equal(n, 3);
        assert_int_equal(ids[0], 1);
        assert_int_equal(ids[1], 15043); /* "▁Hello" */
        assert_int_equal(ids[2], 2);
        encode(t, "<s>Hello</s>", 12, false, false, &plain, &n_plain);
        assert_false(contains(plain, n_plain, 1));

        assert_true(tokenizer_is_eog(t, 2));
        assert_int_equal(tokenizer_unk(t), 0);
        assert_string_equal(tokenizer_model_name(t), "llama");
}

/* ---- real model --------------------------------------------------------- */

static void test_stories260k(void **state) {
        const char *path = shared_path("models/stories260K.gguf");
        _cleanup_(tokenizer_freep) Tokenizer *t = NULL;
        _cleanup_free_ int32_t *ids = NULL;
        _cleanup_free_ char *s = NULL;
        size_t n, len;

        if (!path)
                skip();
        t = load_path(path);
        assert_int_equal(tokenizer_n_vocab(t), 512);
        assert_int_equal(tokenizer_pad(t), -1); /* padding_token_id is UINT32_MAX: none */

        encode(t, "Once upon a time", 16, true, false, &ids, &n);
        print_ids("stories260K \"Once upon a time\": ", ids, n);
        assert_true(n >= 3 && n <= 10);
        assert_int_equal(ids[0], 1);
        for (size_t i = 1; i < n; i++) { /* whole pieces, no unknowns or bytes */
                assert_int_not_equal(ids[i], tokenizer_unk(t));
                assert_int_equal(tokenizer_token_type(t, ids[i]), TOKEN_TYPE_NORMAL);
        }
        s = decode(t, ids, n, TOKENIZER_DECODE_STRIP_SPACE, &len);
        assert_string_equal(s, "Once upon a time");
}

/* ---- hostile input -------------------------------------------------------- */

static void test_invalid_utf8(void **state) {
        static const char text[] = "\xff\xfe a\x80\xc3 \xe2\x96 <|im_\xf0\x9f end|> \xed\xa0\x80 \xc0\xaf\xf5";
        size_t len = sizeof text - 1;

        for (int v = 0; v < N_VOCABS; v++) {
                const Tokenizer *t = vocab(v);
                for (int ps = 0; ps < 2; ps++) {
                        _cleanup_free_ int32_t *ids = NULL;
                        _cleanup_free_ char *s = NULL, *raw = NULL;
                        size_t n, n_s, raw_len = 0;

                        encode(t, text, len, true, ps, &ids, &n);
                        assert_true(n > 0);
                        s = decode(t, ids, n, 0, &n_s);
                        assert_true(utf8_valid(s, n_s));

                        /* The pieces give back every byte (SPM: byte fallback;
                         * BPE: the bytes went through the byte alphabet). */
                        raw = malloc(len * 2 + 16);
                        assert_non_null(raw);
                        for (size_t i = 0; i < n; i++) {
                                const char *p;
                                size_t k;
                                assert_int_equal(tokenizer_token_piece(t, ids[i], false, &p, &k), 0);
                                assert_true(raw_len + k <= len * 2 + 16);
                                memcpy(raw + raw_len, p, k);
                                raw_len += k;
                        }
                        const char *r = raw;
                        if (v == VOCAB_SPM) { /* the space prefix */
                                assert_int_equal(raw[0], ' ');
                                r++, raw_len--;
                        }
                        assert_int_equal(raw_len, len);
                        assert_memory_equal(r, text, len);
                }
        }
}

/* ~100 KB of mixed text must encode well under a second. */
static void test_performance(void **state) {
        _cleanup_(cases_done) Cases c = {};
        _cleanup_free_ char *big = NULL;
        size_t len = 0;

        if (!load_cases(VOCAB_GPT2, &c))
                skip();
        big = malloc(110 * 1024);
        assert_non_null(big);
        while (len < 100 * 1024) {
                for (size_t i = 0; i < c.n && len + c.text_len[i] + 1 < 110 * 1024; i++) {
                        memcpy(big + len, c.text[i], c.text_len[i]);
                        len += c.text_len[i];
                        big[len++] = ' ';
                }
        }
        for (int v = 0; v < N_VOCABS; v++) {
                const Tokenizer *t = vocab(v);
                _cleanup_free_ int32_t *ids = NULL;
                _cleanup_free_ char *s = NULL;
                struct timespec a, b;
                size_t n, n_s;

                clock_gettime(CLOCK_MONOTONIC, &a);
                encode(t, big, len, false, false, &ids, &n);
                clock_gettime(CLOCK_MONOTONIC, &b);
                double ms = (double) (b.tv_sec - a.tv_sec) * 1e3 + (double) (b.tv_nsec - a.tv_nsec) / 1e6;
                s = decode(t, ids, n, 0, &n_s);
                print_message("%s: %zu bytes -> %zu tokens in %.1f ms\n", vocab_names[v], len, n, ms);
                assert_true(ms < 1000);
        }
}

/* A small vocabulary file; each hostile case changes one thing. */
typedef struct Vocab {
        const char *model, *pre;
        const char *const *tokens;
        uint64_t n_tokens;
        const float *scores;
        uint64_t n_scores;
        const int32_t *types;
        uint64_t n_types;
        const char *const *merges;
        uint64_t n_merges;
        int64_t bos;                    /* -2: leave out */
        bool add_bos, set_add_bos;
} Vocab;

static int build(const Vocab *v, Tokenizer **ret, char **why) {
        _cleanup_(gguf_writer_freep) GgufWriter *w = NULL;
        _cleanup_(gguf_freep) GgufFile *f = NULL;
        char path[256];

        snprintf(path, sizeof path, "%s/vocab.gguf", tmpdir);
        assert_int_equal(gguf_writer_new(&w), 0);
        if (v->model)
                assert_int_equal(gguf_writer_add_string(w, "tokenizer.ggml.model", v->model), 0);
        if (v->pre)
                assert_int_equal(gguf_writer_add_string(w, "tokenizer.ggml.pre", v->pre), 0);
        if (v->tokens)
                assert_int_equal(gguf_writer_add_array_string(w, "tokenizer.ggml.tokens", v->tokens, v->n_tokens), 0);
        if (v->scores)
                assert_int_equal(gguf_writer_add_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, v->scores,
                                                       v->n_scores), 0);
        if (v->types)
                assert_int_equal(gguf_writer_add_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, v->types,
                                                       v->n_types), 0);
        if (v->merges)
                assert_int_equal(gguf_writer_add_array_string(w, "tokenizer.ggml.merges", v->merges, v->n_merges), 0);
        if (v->bos >= 0)
                assert_int_equal(gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t) v->bos), 0);
        if (v->set_add_bos)
                assert_int_equal(gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos), 0);
        assert_int_equal(gguf_writer_write_file(w, path), 0);
        if (gguf_open(path, NULL, &f, why) < 0)
                fail_msg("%s", strna(*why));
        *why = NULL;
        return tokenizer_new_from_gguf(f, ret, why);
}

static void expect_error(const Vocab *v, int error, const char *needle) {
        _cleanup_(tokenizer_freep) Tokenizer *t = NULL;
        _cleanup_free_ char *why = NULL;
        int r = build(v, &t, &why);
        if (r != error || !why || !strstr(why, needle))
                fail_msg("expected %d with \"%s\", got %d: %s", error, needle, r, strna(why));
        assert_null(t);
}

static void test_hostile_metadata(void **state) {
        static const char *const tokens[] = { "<unk>", "<s>", "</s>", "a", "b", "ab", "\xc4\xa0", "<|im_end|>" };
        static const float scores[] = { 0, 0, 0, -1, -2, -0.5f, -3, 0, 0 }; /* one spare for the long case */
        static const int32_t types[] = { 2, 3, 3, 1, 1, 1, 1, 3 };
        static const char *const merges[] = { "a b" };
        static const char *const merge_unknown[] = { "a b", "a zz" };
        static const char *const merge_nospace[] = { "ab" };
        const Vocab good_bpe = {
                .model = "gpt2", .pre = "gpt-2", .tokens = tokens, .n_tokens = 8, .types = types, .n_types = 8,
                .merges = merges, .n_merges = 1, .bos = 1,
        };
        const Vocab good_spm = {
                .model = "llama", .tokens = tokens, .n_tokens = 8, .scores = scores, .n_scores = 8, .types = types,
                .n_types = 8, .bos = -2,
        };
        _cleanup_(tokenizer_freep) Tokenizer *t = NULL;
        _cleanup_free_ char *why = NULL;
        _cleanup_free_ int32_t *ids = NULL;
        size_t n;
        Vocab v;

        /* The good ones load and work. */
        if (build(&good_bpe, &t, &why) < 0)
                fail_msg("%s", strna(why));
        encode(t, "ab a", 4, true, false, &ids, &n);
        assert_int_equal(n, 3); /* no BOS: gpt2 does not add one by default */
        assert_int_equal(ids[0], 5);
        assert_int_equal(ids[1], 6);
        assert_int_equal(ids[2], 3);
        assert_true(tokenizer_is_eog(t, 7)); /* <|im_end|> by its text */
        t = tokenizer_free(t);
        free(ids);
        ids = NULL;

        if (build(&good_spm, &t, &why) < 0)
                fail_msg("%s", strna(why));
        assert_int_equal(tokenizer_bos(t), 1); /* llama.cpp's SentencePiece defaults */
        assert_int_equal(tokenizer_eos(t), 2);
        encode(t, "ab", 2, true, false, &ids, &n);
        assert_true(n >= 2);
        assert_int_equal(ids[0], 1);
        t = tokenizer_free(t);

        /* gpt2 without a pre-tokenizer name is GPT-2's */
        v = good_bpe;
        v.pre = NULL;
        if (build(&v, &t, &why) < 0)
                fail_msg("%s", strna(why));
        assert_string_equal(tokenizer_pre_name(t), "gpt-2");
        t = tokenizer_free(t);

        v = good_bpe;
        v.model = "bert";
        expect_error(&v, -EOPNOTSUPP, "'bert'");
        v = good_bpe;
        v.model = NULL;
        expect_error(&v, -EBADMSG, "tokenizer.ggml.model is missing");
        v = good_bpe;
        v.pre = "chatglm-bpe";
        expect_error(&v, -EOPNOTSUPP, "'chatglm-bpe'");
        v = good_bpe;
        v.tokens = NULL;
        expect_error(&v, -EBADMSG, "tokenizer.ggml.tokens is missing");
        v = good_bpe;
        v.n_types = 7;
        expect_error(&v, -EBADMSG, "tokenizer.ggml.token_type has 7 entries but tokenizer.ggml.tokens has 8");
        v = good_spm;
        v.n_scores = 9;
        expect_error(&v, -EBADMSG, "tokenizer.ggml.scores has 9 entries");
        v = good_bpe;
        v.merges = merge_unknown;
        v.n_merges = 2;
        expect_error(&v, -EBADMSG, "merge 1 ('a zz') names 'zz', which is not a token");
        v = good_bpe;
        v.merges = merge_nospace;
        expect_error(&v, -EBADMSG, "not two tokens separated by a space");
        v = good_bpe;
        v.merges = NULL;
        expect_error(&v, -EBADMSG, "tokenizer.ggml.merges is missing");
        v = good_bpe;
        v.bos = 8;
        expect_error(&v, -EBADMSG, "tokenizer.ggml.bos_token_id is 8, out of range");
        v = good_bpe;
        v.bos = -2;
        v.set_add_bos = v.add_bos = true;
        expect_error(&v, -EBADMSG, "add_bos_token is set but there is no BOS token");

        static const int32_t bad_types[] = { 2, 3, 3, 1, 1, 1, 9, 3 };
        v = good_bpe;
        v.types = bad_types;
        expect_error(&v, -EBADMSG, "has type 9");
        static const int32_t bad_byte[] = { 2, 3, 3, 6, 1, 1, 1, 3 };
        v = good_spm;
        v.types = bad_byte;
        expect_error(&v, -EBADMSG, "is a byte token but not <0xNN>");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_pre_tokenizers),
                cmocka_unit_test(test_hostile_metadata),
                cmocka_unit_test(test_vectors_llama_spm),
                cmocka_unit_test(test_vectors_gpt2),
                cmocka_unit_test(test_vectors_llama_bpe),
                cmocka_unit_test(test_vectors_qwen2),
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_stream_spm_bytes),
                cmocka_unit_test(test_stream_bpe_bytes),
                cmocka_unit_test(test_decoder_invalid),
                cmocka_unit_test(test_special_qwen2),
                cmocka_unit_test(test_special_llama3),
                cmocka_unit_test(test_special_spm),
                cmocka_unit_test(test_stories260k),
                cmocka_unit_test(test_invalid_utf8),
                cmocka_unit_test(test_performance),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
