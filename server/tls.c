/* SPDX-License-Identifier: BSD-3-Clause */
/* server/tls: the server's TLS context, built from config, reloadable. */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/bn.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ringprot/prot-layer.h>

/*
 * Design: a context is immutable once built. Reload builds a whole new
 * SSL_CTX outside any lock, then swaps one pointer under a mutex; a
 * handshake takes its own reference under the same mutex (SSL_CTX_up_ref)
 * and every SSL holds one too, so the old context lives exactly as long
 * as its last handshake or connection. A failed build never touches the
 * current context. That is the one rule: nothing is ever changed in a
 * context another thread can see.
 *
 * Files are read by us (open + read into a memory BIO), not by OpenSSL's
 * file loaders: the errno of open(2) gives the exact first half of the
 * error line, the cert and key are parsed from what was read once, and a
 * key file is read into OpenSSL's secure memory BIO so that the copy is
 * wiped when freed. PEM passphrases are refused (no terminal prompts in
 * a daemon).
 */

/* Certificates, chains and keys are small; this bounds a wrong path. */
#define PEM_FILE_MAX ((size_t)1 << 20)

#define SESSION_TIMEOUT_DEFAULT 3600u
#define SESSION_TIMEOUT_MAX	86400u /* RFC 5077 §5.6, RFC 8446 §4.6.1 */
/* The server-side cache only serves TLS <= 1.2 clients without tickets. */
#define SESSION_CACHE_SIZE	4096
/* RFC 8446: IMAP/SMTP clients resume one connection at a time. */
#define TLS13_TICKETS		1

struct srv__tls {
	pthread_mutex_t lock; /* guards ctx (the pointer, not the context) */
	SSL_CTX *ctx;
};

static _Thread_local char errbuf[512];

/* Set errbuf from fmt and return err (a -errno). */
__attribute__((format(printf, 2, 3))) static int fail(int err, const char *fmt,
						      ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
	va_end(ap);
	return err;
}

/* OpenSSL's reason for the last error on this thread; clears the queue. */
static const char *ssl_reason(void)
{
	static _Thread_local char reason[160];
	unsigned long e = ERR_peek_last_error();
	const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;

	if (r != NULL)
		(void)snprintf(reason, sizeof(reason), "%s", r);
	else if (e != 0)
		(void)snprintf(reason, sizeof(reason), "error %lx", e);
	else
		(void)snprintf(reason, sizeof(reason), "unknown error");
	ERR_clear_error();
	return reason;
}

static int read_fd(int fd, BIO *bio, char *buf, size_t bufsize)
{
	size_t total = 0;

	for (;;) {
		ssize_t n = read(fd, buf, bufsize);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		total += (size_t)n;
		if (total > PEM_FILE_MAX)
			return -EFBIG;
		if (BIO_write(bio, buf, (int)n) != (int)n)
			return -ENOMEM;
	}
}

/*
 * Read path whole into a new memory BIO (secure memory if secret).
 * Returns 0, or -errno with errbuf set ("<setting> <path>: <reason>").
 */
static int load_file(const char *setting, const char *path, bool secret,
		     BIO **bio_out)
{
	char buf[4096];
	BIO *bio;
	int fd, ret;

	*bio_out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return fail(-errno, "%s %s: %s", setting, path,
			    strerror(errno));
	bio = BIO_new(secret ? BIO_s_secmem() : BIO_s_mem());
	if (bio == NULL) {
		close(fd);
		return fail(-ENOMEM, "%s %s: out of memory", setting, path);
	}
	ret = read_fd(fd, bio, buf, sizeof(buf));
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	if (ret < 0) {
		BIO_free(bio);
		if (ret == -EFBIG)
			return fail(ret, "%s %s: larger than %zu bytes",
				    setting, path, PEM_FILE_MAX);
		return fail(ret, "%s %s: %s", setting, path, strerror(-ret));
	}
	*bio_out = bio;
	return 0;
}

/* Did the last PEM read stop at the end of the data, not at an error? */
static bool pem_at_end(void)
{
	unsigned long e = ERR_peek_last_error();

	if (ERR_GET_LIB(e) == ERR_LIB_PEM &&
	    ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
		ERR_clear_error();
		return true;
	}
	return e == 0;
}

/* Never prompt: an encrypted key is a configuration error here. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* The certificate (first PEM certificate of path), then its chain. */
static int load_cert(SSL_CTX *ctx, const char *path)
{
	BIO *bio;
	X509 *x;
	int ret;

	ret = load_file("tls_cert_file", path, false, &bio);
	if (ret < 0)
		return ret;
	x = PEM_read_bio_X509_AUX(bio, NULL, no_passphrase, NULL);
	if (x == NULL) {
		BIO_free(bio);
		return fail(-EINVAL,
			    "tls_cert_file %s: no PEM certificate (%s)", path,
			    ssl_reason());
	}
	if (SSL_CTX_use_certificate(ctx, x) != 1) {
		X509_free(x);
		BIO_free(bio);
		return fail(-EINVAL, "tls_cert_file %s: %s", path,
			    ssl_reason());
	}
	X509_free(x);
	while ((x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL))) {
		if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
			X509_free(x);
			BIO_free(bio);
			return fail(-EINVAL, "tls_cert_file %s: chain: %s",
				    path, ssl_reason());
		}
	}
	BIO_free(bio);
	if (!pem_at_end())
		return fail(-EINVAL,
			    "tls_cert_file %s: bad chain certificate "
			    "(%s)",
			    path, ssl_reason());
	return 0;
}

/* Extra chain certificates: at least one. */
static int load_chain(SSL_CTX *ctx, const char *path)
{
	unsigned n = 0;
	BIO *bio;
	X509 *x;
	int ret;

	ret = load_file("tls_chain_file", path, false, &bio);
	if (ret < 0)
		return ret;
	while ((x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL))) {
		if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
			X509_free(x);
			BIO_free(bio);
			return fail(-EINVAL, "tls_chain_file %s: %s", path,
				    ssl_reason());
		}
		n++;
	}
	BIO_free(bio);
	if (!pem_at_end())
		return fail(-EINVAL,
			    "tls_chain_file %s: bad PEM certificate "
			    "(%s)",
			    path, ssl_reason());
	if (n == 0)
		return fail(-EINVAL,
			    "tls_chain_file %s: no PEM certificate "
			    "in the file",
			    path);
	return 0;
}

/*
 * Why PEM_read_bio_PrivateKey would find nothing in bio, in words for
 * the log; NULL to use OpenSSL's reason. Looks before the read: a memory
 * BIO's data pointer moves as it is read.
 */
static const char *key_problem(BIO *bio)
{
	char *data = NULL;
	long len = BIO_get_mem_data(bio, &data);

	if (len <= 0 || data == NULL)
		return "no PEM private key in the file";
	if (memmem(data, (size_t)len, "ENCRYPTED", 9) != NULL)
		return "encrypted, and passphrases are not supported";
	if (memmem(data, (size_t)len, "PRIVATE KEY-----", 16) == NULL)
		return "no PEM private key in the file";
	return NULL;
}

static int load_key(SSL_CTX *ctx, const char *setting, const char *path)
{
	X509 *cert = SSL_CTX_get0_certificate(ctx);
	const char *problem;
	EVP_PKEY *key;
	BIO *bio;
	int ret;

	ret = load_file(setting, path, true, &bio);
	if (ret < 0)
		return ret;
	problem = key_problem(bio);
	key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	if (key == NULL) {
		BIO_free(bio);
		if (problem != NULL) {
			ERR_clear_error();
			return fail(-EINVAL, "%s %s: %s", setting, path,
				    problem);
		}
		return fail(-EINVAL, "%s %s: bad PEM private key (%s)", setting,
			    path, ssl_reason());
	}
	BIO_free(bio);
	/* Checked first: SSL_CTX_use_PrivateKey is vague on a mismatch. */
	if (cert == NULL || X509_check_private_key(cert, key) != 1) {
		ERR_clear_error();
		EVP_PKEY_free(key);
		return fail(-EINVAL, "%s %s: key does not match certificate",
			    setting, path);
	}
	if (SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		EVP_PKEY_free(key);
		return fail(-EINVAL, "%s %s: %s", setting, path, ssl_reason());
	}
	EVP_PKEY_free(key);
	return 0;
}

/* Client CAs: trusted for verification and named in CertificateRequest. */
static int load_client_ca(SSL_CTX *ctx, const char *path)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
	BIO *bio;
	X509 *x;
	int ret;

	if (names == NULL)
		return fail(-ENOMEM, "tls_client_ca_file: out of memory");
	ret = load_file("tls_client_ca_file", path, false, &bio);
	if (ret < 0) {
		sk_X509_NAME_free(names);
		return ret;
	}
	while ((x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL))) {
		X509_NAME *name = X509_NAME_dup(X509_get_subject_name(x));

		if (name == NULL || !sk_X509_NAME_push(names, name) ||
		    X509_STORE_add_cert(store, x) != 1) {
			X509_NAME_free(name);
			X509_free(x);
			ret = fail(-EINVAL, "tls_client_ca_file %s: %s", path,
				   ssl_reason());
			goto out_free;
		}
		X509_free(x);
	}
	if (!pem_at_end()) {
		ret = fail(-EINVAL,
			   "tls_client_ca_file %s: bad PEM "
			   "certificate (%s)",
			   path, ssl_reason());
		goto out_free;
	}
	if (sk_X509_NAME_num(names) == 0) {
		ret = fail(-EINVAL,
			   "tls_client_ca_file %s: no PEM certificate "
			   "in the file",
			   path);
		goto out_free;
	}
	SSL_CTX_set_client_CA_list(ctx, names); /* takes names */
	BIO_free(bio);
	return 0;
out_free:
	sk_X509_NAME_pop_free(names, X509_NAME_free);
	BIO_free(bio);
	return ret;
}

static const struct {
	const char *name;
	int version;
} versions[] = {
	{"TLSv1", TLS1_VERSION},
	{"TLSv1.1", TLS1_1_VERSION},
	{"TLSv1.2", TLS1_2_VERSION},
	{"TLSv1.3", TLS1_3_VERSION},
};

/* Version name to number; 0 for NULL (caller's default). */
static int parse_version(const char *setting, const char *s, int *v_out)
{
	*v_out = 0;
	if (s == NULL)
		return 0;
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
		if (strcmp(s, versions[i].name) == 0) {
			*v_out = versions[i].version;
			return 0;
		}
	return fail(-EINVAL,
		    "%s \"%s\": unknown TLS version (TLSv1, TLSv1.1, TLSv1.2, "
		    "TLSv1.3)",
		    setting, s);
}

static int set_versions(SSL_CTX *ctx, const struct srv__tls_opts *o)
{
	int min, max, ret;

	ret = parse_version("tls_min_version", o->min_version, &min);
	if (ret < 0)
		return ret;
	ret = parse_version("tls_max_version", o->max_version, &max);
	if (ret < 0)
		return ret;
	if (min == 0)
		min = TLS1_2_VERSION;
	if (max != 0 && max < min)
		return fail(-EINVAL,
			    "tls_max_version %s is older than tls_min_version "
			    "%s",
			    o->max_version,
			    o->min_version != NULL ? o->min_version
						   : "TLSv1.2");
	if (SSL_CTX_set_min_proto_version(ctx, min) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, max) != 1)
		return fail(-EINVAL, "tls_min_version: %s", ssl_reason());
	return 0;
}

/* Does ctx hold at least one TLS 1.3 suite? */
static bool has_tls13_suite(SSL_CTX *ctx)
{
	STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(ctx);

	for (int i = 0; i < sk_SSL_CIPHER_num(sk); i++) {
		const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);

		if (strcmp(SSL_CIPHER_get_version(c), "TLSv1.3") == 0)
			return true;
	}
	return false;
}

static int set_ciphers(SSL_CTX *ctx, const struct srv__tls_opts *o)
{
	if (o->ciphers != NULL && SSL_CTX_set_cipher_list(ctx, o->ciphers) != 1)
		return fail(-EINVAL, "tls_ciphers \"%s\": %s", o->ciphers,
			    ssl_reason());
	if (o->ciphersuites == NULL)
		return 0;
	/* OpenSSL skips unknown suite names: a list of typos means none. */
	if (SSL_CTX_set_ciphersuites(ctx, o->ciphersuites) != 1 ||
	    (o->ciphersuites[0] != '\0' && !has_tls13_suite(ctx)))
		return fail(-EINVAL,
			    "tls_ciphersuites \"%s\": no TLS 1.3 "
			    "suite matches",
			    o->ciphersuites);
	return 0;
}

static int set_verify(SSL_CTX *ctx, const struct srv__tls_opts *o)
{
	int ret, mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;

	if (o->verify_client < 0 || o->verify_client > 2)
		return fail(-EINVAL, "tls_verify_client %d: not 0, 1 or 2",
			    o->verify_client);
	if (o->client_ca_file != NULL) {
		ret = load_client_ca(ctx, o->client_ca_file);
		if (ret < 0)
			return ret;
	}
	if (o->verify_client == 0)
		return 0;
	if (o->client_ca_file == NULL)
		return fail(-EINVAL,
			    "tls_verify_client %d: needs "
			    "tls_client_ca_file",
			    o->verify_client);
	if (o->verify_client == 2)
		mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
	SSL_CTX_set_verify(ctx, mode, NULL);
	return 0;
}

static int set_sessions(SSL_CTX *ctx, const struct srv__tls_opts *o)
{
	static const unsigned char sid_ctx[] = "ringprot";
	unsigned timeout = o->session_timeout_s;

	if (timeout > SESSION_TIMEOUT_MAX)
		return fail(-EINVAL,
			    "tls_session_timeout %u: more than %u "
			    "seconds",
			    timeout, SESSION_TIMEOUT_MAX);
	if (timeout == 0)
		timeout = SESSION_TIMEOUT_DEFAULT;
	/* Needed for resumption once client certificates are asked for. */
	if (SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1) !=
	    1)
		return fail(-ENOMEM, "tls: %s", ssl_reason());
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_sess_set_cache_size(ctx, SESSION_CACHE_SIZE);
	SSL_CTX_set_timeout(ctx, (long)timeout);
	if (SSL_CTX_set_num_tickets(ctx, TLS13_TICKETS) != 1)
		return fail(-ENOMEM, "tls: %s", ssl_reason());
	return 0;
}

static int set_files(SSL_CTX *ctx, const struct srv__tls_opts *o)
{
	int ret;

	if (o->cert_file == NULL || o->cert_file[0] == '\0')
		return fail(-EINVAL, "tls_cert_file: not set");
	ret = load_cert(ctx, o->cert_file);
	if (ret == 0 && o->chain_file != NULL)
		ret = load_chain(ctx, o->chain_file);
	if (ret == 0 && o->key_file != NULL)
		ret = load_key(ctx, "tls_key_file", o->key_file);
	else if (ret == 0)
		ret = load_key(ctx, "tls_cert_file", o->cert_file);
	return ret;
}

/*
 * Options: no compression (CRIME), no renegotiation at all (a client
 * could restart handshakes at will, and the ring layer refuses them
 * anyway), server cipher order only if asked.
 */
static int ctx_build(const struct srv__tls_opts *o, SSL_CTX **ctx_out)
{
	uint64_t opts = SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION;
	SSL_CTX *ctx;
	int ret;

	*ctx_out = NULL;
	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
		return fail(-ENOMEM, "tls: SSL_CTX_new: %s", ssl_reason());
#ifdef SSL_OP_NO_CLIENT_RENEGOTIATION
	opts |= SSL_OP_NO_CLIENT_RENEGOTIATION; /* OpenSSL 3 */
#endif
	if (o->prefer_server_ciphers)
		opts |= SSL_OP_CIPHER_SERVER_PREFERENCE;
	SSL_CTX_set_options(ctx, opts);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	SSL_CTX_set_dh_auto(ctx, 1);
	ret = set_versions(ctx, o);
	if (ret == 0)
		ret = set_ciphers(ctx, o);
	if (ret == 0)
		ret = set_files(ctx, o);
	if (ret == 0)
		ret = set_verify(ctx, o);
	if (ret == 0)
		ret = set_sessions(ctx, o);
	if (ret == 0 && o->alpn != NULL) {
		ret = pl_tls_ctx_set_alpn(ctx, o->alpn, o->alpn_len);
		if (ret < 0)
			ret = fail(ret, "tls_alpn: %s", strerror(-ret));
	}
	if (ret < 0) {
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return ret;
	}
	*ctx_out = ctx;
	return 0;
}

int srv__tls_new(const struct srv__tls_opts *o, struct srv__tls **out,
		 const char **errstr_out)
{
	struct srv__tls *t;
	SSL_CTX *ctx;
	int ret;

	*out = NULL;
	if (errstr_out != NULL)
		*errstr_out = NULL;
	ret = ctx_build(o, &ctx);
	if (ret < 0)
		goto out_err;
	t = calloc(1, sizeof(*t));
	if (t == NULL) {
		SSL_CTX_free(ctx);
		ret = fail(-ENOMEM, "tls: out of memory");
		goto out_err;
	}
	ret = pthread_mutex_init(&t->lock, NULL);
	if (ret != 0) {
		free(t);
		SSL_CTX_free(ctx);
		ret = fail(-ret, "tls: %s", strerror(ret));
		goto out_err;
	}
	t->ctx = ctx;
	*out = t;
	return 0;
out_err:
	if (errstr_out != NULL)
		*errstr_out = errbuf;
	return ret;
}

SSL_CTX *srv__tls_ctx_ref(struct srv__tls *t)
{
	SSL_CTX *ctx;

	pthread_mutex_lock(&t->lock);
	ctx = t->ctx;
	SSL_CTX_up_ref(ctx); /* only fails on a broken OpenSSL build */
	pthread_mutex_unlock(&t->lock);
	return ctx;
}

int srv__tls_reload(struct srv__tls *t, const struct srv__tls_opts *o,
		    const char **errstr_out)
{
	SSL_CTX *ctx, *old;
	int ret;

	if (errstr_out != NULL)
		*errstr_out = NULL;
	ret = ctx_build(o, &ctx);
	if (ret < 0) {
		if (errstr_out != NULL)
			*errstr_out = errbuf;
		return ret;
	}
	pthread_mutex_lock(&t->lock);
	old = t->ctx;
	t->ctx = ctx;
	pthread_mutex_unlock(&t->lock);
	SSL_CTX_free(old); /* freed now only if nobody holds it */
	return 0;
}

void srv__tls_free(struct srv__tls **tp)
{
	struct srv__tls *t = *tp;

	if (t == NULL)
		return;
	*tp = NULL;
	SSL_CTX_free(t->ctx);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* ---- self-signed certificates ---------------------------------------- */

static int add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *e;
	int ok;

	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (e == NULL)
		return -EINVAL;
	ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok == 1 ? 0 : -ENOMEM;
}

static int selfsigned_cert(EVP_PKEY *key, const char *cn, unsigned days,
			   X509 **x_out)
{
	unsigned char serial[16];
	char san[512];
	X509 *x = X509_new();
	X509_NAME *name;
	BIGNUM *bn = NULL;
	int ret = -ENOMEM;

	*x_out = NULL;
	if (x == NULL)
		return -ENOMEM;
	(void)snprintf(san, sizeof(san),
		       "DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1", cn);
	/* A random positive serial (RFC 5280 §4.1.2.2: at most 20 bytes). */
	if (RAND_bytes(serial, sizeof(serial)) != 1)
		goto out;
	serial[0] &= 0x7f;
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	name = X509_get_subject_name(x);
	if (bn == NULL || X509_set_version(x, 2) != 1 ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
	    X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL) ==
		    NULL ||
	    X509_set_pubkey(x, key) != 1 ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
				       (const unsigned char *)cn, -1, -1,
				       0) != 1 ||
	    X509_set_issuer_name(x, name) != 1)
		goto out;
	ret = add_ext(x, NID_basic_constraints, "critical,CA:FALSE");
	if (ret == 0)
		ret = add_ext(x, NID_key_usage, "critical,digitalSignature");
	if (ret == 0)
		ret = add_ext(x, NID_ext_key_usage, "serverAuth");
	if (ret == 0)
		ret = add_ext(x, NID_subject_key_identifier, "hash");
	if (ret == 0)
		ret = add_ext(x, NID_subject_alt_name, san);
	if (ret == 0 && X509_sign(x, key, EVP_sha256()) <= 0)
		ret = -ENOMEM;
out:
	BN_free(bn);
	if (ret < 0) {
		X509_free(x);
		return ret;
	}
	*x_out = x;
	return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Write the contents of bio to path.XXXXXX with mode, fsync, rename. */
static int write_atomic(const char *path, BIO *bio, mode_t mode)
{
	char tmp[PATH_MAX];
	char *data = NULL;
	long len = BIO_get_mem_data(bio, &data);
	int fd, ret;

	if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	if (len < 0 || (len > 0 && data == NULL))
		return -EIO;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = fchmod(fd, mode) < 0 ? -errno : 0;
	if (ret == 0)
		ret = write_all(fd, data, (size_t)len);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0)
		unlink(tmp);
	return ret;
}

int srv__tls_selfsigned(const char *cert_path, const char *key_path,
			const char *common_name, unsigned days)
{
	bool one_file;
	BIO *kbio = NULL, *cbio = NULL;
	EVP_PKEY *key;
	X509 *x = NULL;
	int ret;

	if (cert_path == NULL || key_path == NULL || common_name == NULL ||
	    cert_path[0] == '\0' || key_path[0] == '\0' ||
	    common_name[0] == '\0' || strlen(common_name) > 64 || days == 0 ||
	    days > 36500)
		return -EINVAL;
	one_file = strcmp(cert_path, key_path) == 0;
	key = EVP_EC_gen("P-256");
	if (key == NULL) {
		ERR_clear_error();
		return -ENOMEM;
	}
	ret = selfsigned_cert(key, common_name, days, &x);
	if (ret < 0)
		goto out;
	kbio = BIO_new(BIO_s_secmem());
	cbio = one_file ? kbio : BIO_new(BIO_s_mem());
	if (kbio == NULL || cbio == NULL ||
	    PEM_write_bio_PrivateKey(kbio, key, NULL, NULL, 0, NULL, NULL) !=
		    1 ||
	    PEM_write_bio_X509(cbio, x) != 1) {
		ret = -ENOMEM;
		goto out;
	}
	ret = write_atomic(key_path, kbio, 0600);
	if (ret == 0 && !one_file)
		ret = write_atomic(cert_path, cbio, 0644);
out:
	ERR_clear_error();
	if (cbio != kbio)
		BIO_free(cbio);
	BIO_free(kbio);
	X509_free(x);
	EVP_PKEY_free(key);
	return ret;
}
