/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fileio.h"
#include "log.h"
#include "macro.h"
#include "pki.h"
#include "utf8.h"

#define CA_DAYS (10 * 365 + 3)
#define NODE_DAYS (5 * 365 + 2)
/* Certificates start an hour in the past: the clocks of the nodes of a cluster need not agree to the second. */
#define NOT_BEFORE_SKEW_SEC 3600
#define CN_MAX 64                       /* ub-common-name (RFC 5280); OpenSSL refuses longer */
#define CLUSTER_NAME_MAX 255
#define PEM_FILE_MAX (64U * 1024U)

DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, X509_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_REQ *, X509_REQ_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_NAME *, X509_NAME_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_EXTENSION *, X509_EXTENSION_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_STORE *, X509_STORE_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_STORE_CTX *, X509_STORE_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIGNUM *, BN_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_INTEGER *, ASN1_INTEGER_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir);

static void openssl_freep(void *p) {
        OPENSSL_free(*(void **) p);
}

struct PkiJoin {
        uint8_t node_id[PKI_NODE_ID_SIZE];
        EVP_PKEY *key;
        uint8_t *csr;                   /* OPENSSL_malloc()ed by i2d */
        size_t csr_size;
};

const char *pki_strerror(int error) {
        switch (abs(error)) {
        case EBADMSG:
                return "malformed join token: expected 'inferd-join-1.' followed by 96 base64url characters "
                       "(was it copied whole?)";
        case EPROTONOSUPPORT:
                return "join token of an unsupported format (this version reads 'inferd-join-1.' tokens)";
        case ESRCH:
                return "join token unknown to this node (issued by another node, or expired)";
        case EKEYREVOKED:
                return "join token already used";
        case EKEYEXPIRED:
                return "join token expired";
        case EKEYREJECTED:
                return "join proof does not match the token (wrong secret, or not made on this connection)";
        case EBADR:
                return "certificate request invalid (not DER, not an EC P-256 key, or a bad self-signature)";
        case EBADE:
                return "certificate request is for another node id than the joining node claims";
        case ENOKEY:
                return "this node does not hold the cluster CA; issue tokens on the node that ran "
                       "'inferctl cluster init'";
        case EXDEV:
                return "the peer's cluster CA does not match the join token's fingerprint "
                       "(a token of another cluster?)";
        case EPROTO:
                return "the peer presented no valid node certificate of the expected cluster CA";
        case ENOTUNIQ:
                return "the certificate issued is not for this node's id and key";
        case EEXIST:
                return "this node is already a member of a cluster; run 'inferctl cluster leave' first";
        case EUCLEAN:
                return "a file in the cluster directory is corrupt";
        case ETOOMANYREFS:
                return "too many join tokens outstanding; wait for some to be used or to expire";
        default:
                return strerror(abs(error));
        }
}

int pki_openssl_error(int error, const char *what) {
        unsigned long e;
        const char *file, *data;
        int line, flags;

        while ((e = ERR_get_error_all(&file, &line, NULL, &data, &flags)) != 0) {
                char buf[256];
                ERR_error_string_n(e, buf, sizeof buf);
                log_debug("%s: %s%s%s", what, buf, (flags & ERR_TXT_STRING) && data[0] ? ": " : "",
                          (flags & ERR_TXT_STRING) ? data : "");
        }
        return error;
}

char *pki_hex(const uint8_t *p, size_t n, char *buf) {
        static const char digits[] = "0123456789abcdef";
        for (size_t i = 0; i < n; i++) {
                buf[2 * i] = digits[p[i] >> 4];
                buf[2 * i + 1] = digits[p[i] & 15];
        }
        buf[2 * n] = 0;
        return buf;
}

static int unhex_digit(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int pki_unhex(const char *s, size_t len, uint8_t *ret, size_t n) {
        uint8_t buf[256];

        if (len != 2 * n || n > sizeof buf)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                int hi = unhex_digit(s[2 * i]), lo = unhex_digit(s[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                buf[i] = (uint8_t) (hi << 4 | lo);
        }
        memcpy(ret, buf, n);
        OPENSSL_cleanse(buf, n);
        return 0;
}

static int path_join(const char *dir, const char *name, char **ret) {
        return asprintf(ret, "%s/%s", dir, name) < 0 ? -ENOMEM : 0;
}

static bool file_exists(const char *dir, const char *name) {
        _cleanup_free_ char *p = NULL;
        return path_join(dir, name, &p) >= 0 && access(p, F_OK) >= 0;
}

int pki_status(const char *dir) {
        if (!file_exists(dir, PKI_CA_CRT) || !file_exists(dir, PKI_NODE_CRT) || !file_exists(dir, PKI_NODE_KEY))
                return PKI_STATUS_NONE;
        return file_exists(dir, PKI_CA_KEY) ? PKI_STATUS_CA : PKI_STATUS_MEMBER;
}

/* The directory itself is 0700 even where it existed: it holds keys and the tokens' secrets. */
static int make_dir(const char *dir) {
        int r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        if (chmod(dir, 0700) < 0)
                return negative_errno();
        return 0;
}

static int write_pem(const char *dir, const char *name, X509 *cert, EVP_PKEY *key) {
        _cleanup_(BIO_freep) BIO *bio = NULL;
        _cleanup_free_ char *path = NULL;
        char *data;
        long size;
        int r;

        r = path_join(dir, name, &path);
        if (r < 0)
                return r;
        bio = BIO_new(BIO_s_mem());
        if (!bio)
                return -ENOMEM;
        /* PKCS#8, unencrypted: the file's mode and the directory's protect it. */
        r = cert ? PEM_write_bio_X509(bio, cert) : PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
        if (r != 1)
                return pki_openssl_error(-EIO, "PEM_write_bio");
        size = BIO_get_mem_data(bio, &data);
        if (size <= 0)
                return -EIO;
        /* The memory BIO clears key material when freed. */
        return write_file_atomic(path, data, (size_t) size, key ? 0600 : 0644);
}

static void cleanse_freep(char **p) {
        if (*p) {
                OPENSSL_cleanse(*p, strlen(*p));
                free(*p);
        }
}

static int load_pem(const char *dir, const char *name, X509 **ret_cert, EVP_PKEY **ret_key) {
        _cleanup_(cleanse_freep) char *data = NULL;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        _cleanup_free_ char *path = NULL;
        size_t size;
        int r;

        r = path_join(dir, name, &path);
        if (r < 0)
                return r;
        r = read_full_file(path, PEM_FILE_MAX, &data, &size);
        if (r < 0)
                return r;
        bio = BIO_new_mem_buf(data, (int) size);
        if (!bio)
                return -ENOMEM;
        if (ret_cert) {
                *ret_cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
                if (!*ret_cert)
                        return pki_openssl_error(-EUCLEAN, path);
        } else {
                *ret_key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
                if (!*ret_key)
                        return pki_openssl_error(-EUCLEAN, path);
        }
        return 0;
}

int pki_load_cert(const char *dir, const char *name, X509 **ret) {
        return load_pem(dir, name, ret, NULL);
}

int pki_load_key(const char *dir, const char *name, EVP_PKEY **ret) {
        return load_pem(dir, name, NULL, ret);
}

int pki_fingerprint(X509 *cert, uint8_t ret[PKI_FINGERPRINT_SIZE]) {
        unsigned n = 0;

        if (X509_digest(cert, EVP_sha256(), ret, &n) != 1 || n != PKI_FINGERPRINT_SIZE)
                return pki_openssl_error(-EIO, "X509_digest");
        return 0;
}

int pki_ca_fingerprint(const char *dir, uint8_t ret[PKI_FINGERPRINT_SIZE]) {
        _cleanup_(X509_freep) X509 *ca = NULL;
        int r;

        r = pki_load_cert(dir, PKI_CA_CRT, &ca);
        if (r < 0)
                return r;
        return pki_fingerprint(ca, ret);
}

char *pki_fingerprint_hex(const uint8_t fp[PKI_FINGERPRINT_SIZE], char buf[PKI_FINGERPRINT_HEX_MAX]) {
        return pki_hex(fp, PKI_FINGERPRINT_SIZE, buf);
}

static int cert_der(X509 *cert, uint8_t **ret, size_t *ret_size) {
        _cleanup_(openssl_freep) uint8_t *der = NULL;
        int n = i2d_X509(cert, &der);
        if (n <= 0)
                return pki_openssl_error(-EIO, "i2d_X509");
        uint8_t *copy = malloc((size_t) n);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, der, (size_t) n);
        *ret = copy;
        *ret_size = (size_t) n;
        return 0;
}

int pki_ca_der(const char *dir, uint8_t **ret, size_t *ret_size) {
        _cleanup_(X509_freep) X509 *ca = NULL;
        int r;

        r = pki_load_cert(dir, PKI_CA_CRT, &ca);
        if (r < 0)
                return r;
        return cert_der(ca, ret, ret_size);
}

/* A DER certificate, all of it and nothing after it. */
static X509 *parse_der(const void *der, size_t size) {
        const unsigned char *p = der;

        if (size == 0 || size > PKI_CERT_MAX)
                return NULL;
        X509 *cert = d2i_X509(NULL, &p, (long) size);
        if (cert && p != (const unsigned char *) der + size) {
                X509_free(cert);
                return NULL;
        }
        return cert;
}

static int make_key(EVP_PKEY **ret) {
        EVP_PKEY *key = EVP_EC_gen("P-256");
        if (!key)
                return pki_openssl_error(-EIO, "EVP_EC_gen");
        *ret = key;
        return 0;
}

static bool key_is_p256(EVP_PKEY *key) {
        char group[64];

        if (!EVP_PKEY_is_a(key, "EC"))
                return false;
        if (EVP_PKEY_get_group_name(key, group, sizeof group, NULL) != 1)
                return false;
        return OBJ_txt2nid(group) == NID_X9_62_prime256v1;
}

static int name_with_cn(const char *cn, X509_NAME **ret) {
        _cleanup_(X509_NAME_freep) X509_NAME *name = X509_NAME_new();
        if (!name)
                return -ENOMEM;
        if (X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, (const unsigned char *) cn, -1, -1,
                                       0) != 1)
                return pki_openssl_error(-EIO, "X509_NAME_add_entry_by_NID");
        *ret = TAKE_PTR(name);
        return 0;
}

int pki_cert_node_id(X509 *cert, uint8_t ret[PKI_NODE_ID_SIZE]) {
        const X509_NAME *name = X509_get_subject_name(cert);
        uint8_t id[PKI_NODE_ID_SIZE];
        char hex[2 * PKI_NODE_ID_SIZE + 1];

        int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
        if (i < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, i) >= 0)
                return -EPROTO;
        const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
        if (ASN1_STRING_length(s) != 2 * PKI_NODE_ID_SIZE)
                return -EPROTO;
        if (pki_unhex((const char *) ASN1_STRING_get0_data(s), 2 * PKI_NODE_ID_SIZE, id, sizeof id) < 0)
                return -EPROTO;
        /* Only the canonical spelling: one id, one CN. */
        if (memcmp(pki_hex(id, sizeof id, hex), ASN1_STRING_get0_data(s), 2 * PKI_NODE_ID_SIZE) != 0)
                return -EPROTO;
        memcpy(ret, id, sizeof id);
        return 0;
}

static int node_name(const uint8_t node_id[PKI_NODE_ID_SIZE], X509_NAME **ret) {
        char hex[2 * PKI_NODE_ID_SIZE + 1];
        return name_with_cn(pki_hex(node_id, PKI_NODE_ID_SIZE, hex), ret);
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value) {
        _cleanup_(X509_EXTENSION_freep) X509_EXTENSION *ext = NULL;
        X509V3_CTX ctx = {};

        X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
        ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
        if (!ext || X509_add_ext(cert, ext, -1) != 1)
                return pki_openssl_error(-EIO, "X509_add_ext");
        return 0;
}

static int random_serial(X509 *cert) {
        _cleanup_(ASN1_INTEGER_freep) ASN1_INTEGER *serial = NULL;
        _cleanup_(BN_freep) BIGNUM *bn = BN_new();
        if (!bn)
                return -ENOMEM;
        /* 127 random bits: positive, at most 16 bytes, unique without a counter to keep. */
        if (BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1)
                return pki_openssl_error(-EIO, "BN_rand");
        serial = BN_to_ASN1_INTEGER(bn, NULL);
        if (!serial || X509_set_serialNumber(cert, serial) != 1)
                return pki_openssl_error(-EIO, "X509_set_serialNumber");
        return 0;
}

/* A certificate for subject's key; self-signed when issuer is NULL (then issuer_key is key). */
static int make_cert(X509_NAME *subject, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, bool ca, X509 **ret) {
        _cleanup_(X509_freep) X509 *cert = X509_new();
        long days = ca ? CA_DAYS : NODE_DAYS;
        int r;

        if (!cert)
                return -ENOMEM;
        if (X509_set_version(cert, X509_VERSION_3) != 1 ||
            X509_set_subject_name(cert, subject) != 1 ||
            X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : subject) != 1 ||
            X509_set_pubkey(cert, key) != 1 ||
            !X509_gmtime_adj(X509_getm_notBefore(cert), -NOT_BEFORE_SKEW_SEC) ||
            !X509_gmtime_adj(X509_getm_notAfter(cert), days * 24 * 3600))
                return pki_openssl_error(-EIO, "X509_set");
        r = random_serial(cert);
        if (r < 0)
                return r;

        r = add_ext(cert, issuer ? issuer : cert, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
        if (r >= 0)
                r = add_ext(cert, issuer ? issuer : cert, NID_key_usage,
                            ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
        if (r >= 0)
                r = add_ext(cert, issuer ? issuer : cert, NID_subject_key_identifier, "hash");
        if (r >= 0 && !ca)
                r = add_ext(cert, issuer, NID_ext_key_usage, "serverAuth,clientAuth");
        if (r >= 0 && !ca)
                r = add_ext(cert, issuer, NID_authority_key_identifier, "keyid:always");
        if (r < 0)
                return r;

        if (X509_sign(cert, issuer_key, EVP_sha256()) <= 0)
                return pki_openssl_error(-EIO, "X509_sign");
        *ret = TAKE_PTR(cert);
        return 0;
}

static int make_node_cert(const uint8_t node_id[PKI_NODE_ID_SIZE], EVP_PKEY *key, X509 *ca, EVP_PKEY *ca_key,
                          X509 **ret) {
        _cleanup_(X509_NAME_freep) X509_NAME *name = NULL;
        int r;

        r = node_name(node_id, &name);
        if (r < 0)
                return r;
        return make_cert(name, key, ca, ca_key, false, ret);
}

int pki_init(const char *dir, const char *cluster_name, const uint8_t node_id[PKI_NODE_ID_SIZE]) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *ca_key = NULL, *node_key = NULL;
        _cleanup_(X509_freep) X509 *ca = NULL, *node = NULL;
        _cleanup_(X509_NAME_freep) X509_NAME *ca_name = NULL;
        char cn[sizeof "inferd cluster CA " + CLUSTER_NAME_MAX];
        int r;

        size_t l = strlen(cluster_name);
        if (l == 0 || l > CLUSTER_NAME_MAX || !utf8_is_valid(cluster_name))
                return -EINVAL;
        r = pki_status(dir);
        if (r < 0)
                return r;
        if (r != PKI_STATUS_NONE)
                return -EEXIST;

        /* The name is only for people reading the certificate: cut it to the CN limit, at a character boundary. */
        snprintf(cn, sizeof cn, "inferd cluster CA %s", cluster_name);
        if (strlen(cn) > CN_MAX) {
                size_t n = CN_MAX;
                while (n > 0 && ((unsigned char) cn[n] & 0xC0) == 0x80)
                        n--;
                cn[n] = 0;
        }
        r = name_with_cn(cn, &ca_name);
        if (r < 0)
                return r;

        r = make_key(&ca_key);
        if (r < 0)
                return r;
        r = make_cert(ca_name, ca_key, NULL, ca_key, true, &ca);
        if (r < 0)
                return r;
        r = make_key(&node_key);
        if (r < 0)
                return r;
        r = make_node_cert(node_id, node_key, ca, ca_key, &node);
        if (r < 0)
                return r;

        r = make_dir(dir);
        if (r < 0)
                return r;
        /* node.crt last: until it is there, pki_status() says none and init may run again. */
        r = write_pem(dir, PKI_CA_KEY, NULL, ca_key);
        if (r >= 0)
                r = write_pem(dir, PKI_CA_CRT, ca, NULL);
        if (r >= 0)
                r = write_pem(dir, PKI_NODE_KEY, NULL, node_key);
        if (r >= 0)
                r = write_pem(dir, PKI_NODE_CRT, node, NULL);
        return r;
}

int pki_remove(const char *dir) {
        _cleanup_(closedirp) DIR *d = opendir(dir);
        struct dirent *de;

        if (!d)
                return errno == ENOENT ? 0 : negative_errno();
        errno = 0;
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
                        return negative_errno();
                errno = 0;
        }
        if (errno != 0)
                return negative_errno();
        if (rmdir(dir) < 0 && errno != ENOENT)
                return negative_errno();
        return 0;
}

int pki_verify_cert(X509 *ca, X509 *leaf, STACK_OF(X509) *untrusted) {
        _cleanup_(X509_STORE_CTX_freep) X509_STORE_CTX *ctx = NULL;
        _cleanup_(X509_STORE_freep) X509_STORE *store = X509_STORE_new();

        if (!store || X509_STORE_add_cert(store, ca) != 1)
                return pki_openssl_error(-ENOMEM, "X509_STORE_add_cert");
        ctx = X509_STORE_CTX_new();
        if (!ctx || X509_STORE_CTX_init(ctx, store, leaf, untrusted) != 1)
                return pki_openssl_error(-ENOMEM, "X509_STORE_CTX_init");
        if (X509_verify_cert(ctx) != 1) {
                log_debug("Certificate refused: %s",
                          X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
                return pki_openssl_error(-EPROTO, "X509_verify_cert");
        }
        return 0;
}

int pki_sign_csr(const char *dir, const void *csr, size_t csr_size, const uint8_t node_id[PKI_NODE_ID_SIZE],
                 uint8_t **ret, size_t *ret_size) {
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *ca_key = NULL;
        _cleanup_(X509_freep) X509 *ca = NULL, *cert = NULL;
        _cleanup_(X509_NAME_freep) X509_NAME *want = NULL;
        const unsigned char *p = csr;
        int r;

        r = pki_load_key(dir, PKI_CA_KEY, &ca_key);
        if (r == -ENOENT)
                return -ENOKEY;
        if (r < 0)
                return r;
        r = pki_load_cert(dir, PKI_CA_CRT, &ca);
        if (r < 0)
                return r;

        if (csr_size == 0 || csr_size > PKI_CSR_MAX)
                return -EBADR;
        req = d2i_X509_REQ(NULL, &p, (long) csr_size);
        if (!req || p != (const unsigned char *) csr + csr_size)
                return pki_openssl_error(-EBADR, "d2i_X509_REQ");
        EVP_PKEY *key = X509_REQ_get0_pubkey(req);
        if (!key || !key_is_p256(key))
                return pki_openssl_error(-EBADR, "X509_REQ_get0_pubkey");
        if (X509_REQ_verify(req, key) != 1)
                return pki_openssl_error(-EBADR, "X509_REQ_verify");

        /* The subject must be exactly what we would write: nothing else in the request is copied. */
        r = node_name(node_id, &want);
        if (r < 0)
                return r;
        if (X509_NAME_cmp(X509_REQ_get_subject_name(req), want) != 0)
                return -EBADE;

        r = make_cert(want, key, ca, ca_key, false, &cert);
        if (r < 0)
                return r;
        return cert_der(cert, ret, ret_size);
}

int pki_join_new(const uint8_t node_id[PKI_NODE_ID_SIZE], PkiJoin **ret) {
        _cleanup_(pki_join_freep) PkiJoin *j = NULL;
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        _cleanup_(X509_NAME_freep) X509_NAME *name = NULL;
        int r;

        j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        memcpy(j->node_id, node_id, PKI_NODE_ID_SIZE);
        r = make_key(&j->key);
        if (r < 0)
                return r;
        r = node_name(node_id, &name);
        if (r < 0)
                return r;

        req = X509_REQ_new();
        if (!req)
                return -ENOMEM;
        if (X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 ||
            X509_REQ_set_subject_name(req, name) != 1 ||
            X509_REQ_set_pubkey(req, j->key) != 1 ||
            X509_REQ_sign(req, j->key, EVP_sha256()) <= 0)
                return pki_openssl_error(-EIO, "X509_REQ_sign");
        int n = i2d_X509_REQ(req, &j->csr);
        if (n <= 0)
                return pki_openssl_error(-EIO, "i2d_X509_REQ");
        j->csr_size = (size_t) n;
        *ret = TAKE_PTR(j);
        return 0;
}

PkiJoin *pki_join_free(PkiJoin *j) {
        if (!j)
                return NULL;
        EVP_PKEY_free(j->key);
        OPENSSL_free(j->csr);
        free(j);
        return NULL;
}

const uint8_t *pki_join_csr(const PkiJoin *j, size_t *ret_size) {
        *ret_size = j->csr_size;
        return j->csr;
}

int pki_join_finish(PkiJoin *j, const char *dir, const uint8_t ca_fingerprint[PKI_FINGERPRINT_SIZE],
                    const void *cert_data, size_t cert_size, const void *ca_data, size_t ca_size) {
        _cleanup_(X509_freep) X509 *ca = NULL, *cert = NULL;
        uint8_t fp[PKI_FINGERPRINT_SIZE], id[PKI_NODE_ID_SIZE];
        int r;

        /* The fingerprint is of the bytes received, exactly as the token's issuer computed it over its DER. */
        ca = parse_der(ca_data, ca_size);
        if (!ca)
                return pki_openssl_error(-EXDEV, "d2i_X509 (CA)");
        if (EVP_Digest(ca_data, ca_size, fp, NULL, EVP_sha256(), NULL) != 1)
                return pki_openssl_error(-EIO, "EVP_Digest");
        if (CRYPTO_memcmp(fp, ca_fingerprint, sizeof fp) != 0)
                return -EXDEV;

        cert = parse_der(cert_data, cert_size);
        if (!cert)
                return pki_openssl_error(-EPROTO, "d2i_X509");
        r = pki_verify_cert(ca, cert, NULL);
        if (r < 0)
                return r;
        if (pki_cert_node_id(cert, id) < 0 || memcmp(id, j->node_id, sizeof id) != 0)
                return -ENOTUNIQ;
        if (EVP_PKEY_eq(X509_get0_pubkey(cert), j->key) != 1)
                return pki_openssl_error(-ENOTUNIQ, "EVP_PKEY_eq");

        r = pki_status(dir);
        if (r < 0)
                return r;
        if (r != PKI_STATUS_NONE)
                return -EEXIST;
        r = make_dir(dir);
        if (r < 0)
                return r;
        r = write_pem(dir, PKI_CA_CRT, ca, NULL);
        if (r >= 0)
                r = write_pem(dir, PKI_NODE_KEY, NULL, j->key);
        if (r >= 0)
                r = write_pem(dir, PKI_NODE_CRT, cert, NULL);
        return r;
}
