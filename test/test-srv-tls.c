/* SPDX-License-Identifier: BSD-3-Clause */
/* test/srv-tls: the server TLS context against real handshakes. */
#include "t-helpers.h" /* stdarg, stddef, setjmp, cmocka: in that order */

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ringprot/prot-layer.h>
#include <ringprot/prot.h>

#include "tls.h"

/*
 * Every certificate is made at start-up in a temporary directory: two
 * self-signed server certificates by srv__tls_selfsigned ("one", "two"),
 * and in memory a CA with a client certificate, an untrusted CA with its
 * own client certificate, and a root -> intermediate -> leaf chain.
 * Each handshake runs pl_tls_accept (server) against pl_tls_connect
 * (client) in two fibers over a loopback TCP pair.
 */
static char dir[64];

static char *path(const char *name)
{
	static char bufs[64][128];
	static unsigned next;
	char *b = bufs[next++ % 64];

	snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
	return b;
}

struct pki {
	EVP_PKEY *ca_key, *cli_key, *evil_key, *int_key, *leaf_key;
	X509 *ca, *cli, *evil_ca, *evil_cli, *root, *inter, *leaf;
};
static struct pki pki;

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *e;

	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

static X509 *cert_new(const char *cn, EVP_PKEY *key, X509 *issuer,
		      EVP_PKEY *issuer_key, bool ca)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509_NAME *name;

	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	assert_int_equal(X509_set_pubkey(x, key), 1);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
				   (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer)
					       : name);
	if (issuer == NULL)
		issuer = x;
	add_ext(x, issuer, NID_basic_constraints,
		ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	add_ext(x, issuer, NID_key_usage,
		ca ? "critical,keyCertSign,cRLSign"
		   : "critical,digitalSignature,keyEncipherment");
	add_ext(x, issuer, NID_subject_key_identifier, "hash");
	if (!ca)
		add_ext(x, issuer, NID_subject_alt_name, "DNS:localhost");
	assert_true(X509_sign(x, issuer_key != NULL ? issuer_key : key,
			      EVP_sha256()) > 0);
	return x;
}

static void write_certs(const char *p, X509 *a, X509 *b)
{
	FILE *f = fopen(p, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, a), 1);
	if (b != NULL)
		assert_int_equal(PEM_write_X509(f, b), 1);
	assert_int_equal(fclose(f), 0);
}

static void write_key(const char *p, EVP_PKEY *k, const char *pass)
{
	FILE *f = fopen(p, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(
				 f, k, pass != NULL ? EVP_aes_256_cbc() : NULL,
				 NULL, 0, NULL, (void *)pass),
			 1);
	assert_int_equal(fclose(f), 0);
}

static void write_text(const char *p, const char *text)
{
	FILE *f = fopen(p, "w");

	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

static int setup_files(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/ringprot-srv-tls-XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(
		srv__tls_selfsigned(path("one.pem"), path("one.key"), "one", 2),
		0);
	assert_int_equal(
		srv__tls_selfsigned(path("two.pem"), path("two.key"), "two", 2),
		0);
	pki.ca_key = EVP_EC_gen("P-256");
	pki.cli_key = EVP_EC_gen("P-256");
	pki.evil_key = EVP_EC_gen("P-256");
	pki.int_key = EVP_EC_gen("P-256");
	pki.leaf_key = EVP_EC_gen("P-256");
	pki.ca = cert_new("test CA", pki.ca_key, NULL, NULL, true);
	pki.cli = cert_new("client", pki.cli_key, pki.ca, pki.ca_key, false);
	pki.evil_ca = cert_new("evil CA", pki.evil_key, NULL, NULL, true);
	pki.evil_cli = cert_new("client", pki.cli_key, pki.evil_ca,
				pki.evil_key, false);
	pki.root = pki.ca;
	pki.inter = cert_new("intermediate", pki.int_key, pki.root, pki.ca_key,
			     true);
	pki.leaf =
		cert_new("leaf", pki.leaf_key, pki.inter, pki.int_key, false);
	write_certs(path("ca.pem"), pki.ca, NULL);
	write_certs(path("leaf.pem"), pki.leaf, NULL);
	write_certs(path("leaf-chain.pem"), pki.leaf, pki.inter);
	write_certs(path("inter.pem"), pki.inter, NULL);
	write_key(path("leaf.key"), pki.leaf_key, NULL);
	write_key(path("enc.key"), pki.leaf_key, "secret");
	write_text(path("garbage.pem"), "this is not PEM\n");
	write_text(path("badb64.pem"), "-----BEGIN CERTIFICATE-----\n"
				       "!!!!\n-----END CERTIFICATE-----\n");
	write_text(path("badkey.pem"), "-----BEGIN PRIVATE KEY-----\n"
				       "!!!!\n-----END PRIVATE KEY-----\n");
	assert_int_equal(mkdir(path("adir"), 0700), 0);
	return 0;
}

static int teardown_files(void **state)
{
	char cmd[128];

	(void)state;
	EVP_PKEY_free(pki.ca_key);
	EVP_PKEY_free(pki.cli_key);
	EVP_PKEY_free(pki.evil_key);
	EVP_PKEY_free(pki.int_key);
	EVP_PKEY_free(pki.leaf_key);
	X509_free(pki.ca);
	X509_free(pki.cli);
	X509_free(pki.evil_ca);
	X509_free(pki.evil_cli);
	X509_free(pki.inter);
	X509_free(pki.leaf);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return 0;
}

static X509 *read_cert(const char *p)
{
	FILE *f = fopen(p, "r");
	X509 *x;

	assert_non_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

/* ---- one handshake, two fibers --------------------------------------- */

struct hs {
	SSL_CTX *sctx, *cctx;
	int sret, cret;	  /* handshakes */
	int sdata, cdata; /* the line after it */
	const char *serr; /* points at serrbuf: in owned the original */
	char serrbuf[256];
	char version[16], cipher[64];
	char server_cn[64];   /* as the client saw it */
	char client_cn[64];   /* as the server saw it; "" if none */
	char alpn[16];	      /* as the client saw it; "" if none */
	SSL_SESSION *resume;  /* the client offers it (borrowed) */
	SSL_SESSION *session; /* the client's, after the line (owned) */
	bool want_session;    /* fill session */
	bool resumed;	      /* as the server saw it */
	struct protstream *sin, *sout, *cin, *cout;
};

static void cn_of(X509 *x, char *buf, size_t size)
{
	buf[0] = '\0';
	if (x != NULL)
		X509_NAME_get_text_by_NID(X509_get_subject_name(x),
					  NID_commonName, buf, (int)size);
}

static int server_fiber(void *arg)
{
	struct hs *h = arg;
	SSL *ssl;

	const char *err = NULL;

	h->sret = pl_tls_accept(h->sin, h->sout, h->sctx, 5000, &err);
	if (err != NULL) {
		snprintf(h->serrbuf, sizeof(h->serrbuf), "%s", err);
		h->serr = h->serrbuf;
	}
	if (h->sret < 0)
		return 0;
	ssl = h->sin->tls_conn;
	snprintf(h->version, sizeof(h->version), "%s", SSL_get_version(ssl));
	snprintf(h->cipher, sizeof(h->cipher), "%s", SSL_get_cipher(ssl));
	cn_of(SSL_get0_peer_certificate(ssl), h->client_cn,
	      sizeof(h->client_cn));
	h->resumed = SSL_session_reused(ssl) == 1;
	h->sdata = prot_puts(h->sout, "* OK hi\r\n") == 0 &&
				   prot_flush(h->sout) == 0
			   ? 0
			   : -1;
	return 0;
}

static int client_fiber(void *arg)
{
	struct hs *h = arg;
	struct pl_tls_client_opts o = {
		.server_name = "localhost",
		.alpn = (const unsigned char *)"\x02h2\x04imap",
		.alpn_len = 8,
		.session = h->resume,
	};
	const unsigned char *alpn;
	unsigned alpn_len;
	char line[64];

	h->cret = pl_tls_connect(h->cin, h->cout, h->cctx, &o, 5000, NULL);
	if (h->cret < 0)
		return 0;
	cn_of(SSL_get0_peer_certificate(h->cin->tls_conn), h->server_cn,
	      sizeof(h->server_cn));
	SSL_get0_alpn_selected(h->cin->tls_conn, &alpn, &alpn_len);
	snprintf(h->alpn, sizeof(h->alpn), "%.*s", (int)alpn_len,
		 alpn != NULL ? (const char *)alpn : "");
	h->cdata = prot_fgets(line, sizeof(line), h->cin) != NULL &&
				   strcmp(line, "* OK hi\r\n") == 0
			   ? 0
			   : -1;
	/* TLS 1.3: the ticket came with (before) that line. */
	if (h->want_session)
		h->session = SSL_get1_session(h->cin->tls_conn);
	return 0;
}

/* Handshake sctx against cctx (both borrowed); results in *h. */
static void handshake(struct ur_loop *loop, SSL_CTX *sctx, SSL_CTX *cctx,
		      struct hs *h)
{
	SSL_SESSION *resume = h->resume;
	bool want = h->want_session;
	struct ur_fiber *fs, *fc;

	SSL_SESSION_free(h->session); /* the last handshake's, unless kept */
	int sv[2];

	memset(h, 0, sizeof(*h));
	h->resume = resume;
	h->want_session = want;
	h->sdata = h->cdata = -1;
	h->sctx = sctx;
	h->cctx = cctx;
	t_tcp_pair(sv);
	h->sin = prot_new(sv[0], 0);
	h->sout = prot_new(sv[0], 1);
	h->cin = prot_new(sv[1], 0);
	h->cout = prot_new(sv[1], 1);
	assert_int_equal(ur_fiber_spawn(loop, server_fiber, h, NULL, &fs), 0);
	assert_int_equal(ur_fiber_spawn(loop, client_fiber, h, NULL, &fc), 0);
	assert_int_equal(ur_fiber_join(fs, NULL), 0);
	assert_int_equal(ur_fiber_join(fc, NULL), 0);
	prot_free(h->sin);
	prot_free(h->sout);
	prot_free(h->cin);
	prot_free(h->cout);
	close(sv[0]);
	close(sv[1]);
	ERR_clear_error();
}

/* Both ends done and a line went through. */
static void assert_ok(const struct hs *h)
{
	assert_int_equal(h->sret, 0);
	assert_int_equal(h->cret, 0);
	assert_int_equal(h->sdata, 0);
	assert_int_equal(h->cdata, 0);
}

static void assert_refused(const struct hs *h)
{
	assert_true(h->sret < 0 || h->cret < 0);
	assert_int_equal(h->sret, -EPROTO);
	assert_non_null(h->serr);
}

/* A client: versions 0 = any; trust a CA file or not; cert + key. */
static SSL_CTX *client_ctx(int min, int max, const char *trust, X509 *cert)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_set_min_proto_version(ctx, min), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max), 1);
	if (trust != NULL) {
		assert_int_equal(
			SSL_CTX_load_verify_locations(ctx, trust, NULL), 1);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	if (cert != NULL) {
		assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
		assert_int_equal(SSL_CTX_use_PrivateKey(ctx, pki.cli_key), 1);
	}
	return ctx;
}

/* srv__tls_new from o, or fail the test with its message. */
static struct srv__tls *tls_new(const struct srv__tls_opts *o)
{
	struct srv__tls *t = NULL;
	const char *err = NULL;
	int ret = srv__tls_new(o, &t, &err);

	if (ret < 0)
		fail_msg("srv__tls_new: %d %s", ret, err);
	assert_null(err);
	assert_non_null(t);
	return t;
}

/* Handshake with t's current context against cctx (freed here). */
static void hs_with(void **state, struct srv__tls *t, SSL_CTX *cctx,
		    struct hs *h)
{
	SSL_CTX *sctx = srv__tls_ctx_ref(t);

	handshake(t_loop_of(state), sctx, cctx, h);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

/* ---- tests ------------------------------------------------------------ */

static unsigned dir_entries(const char *d)
{
	DIR *dp = opendir(d);
	struct dirent *e;
	unsigned n = 0;

	assert_non_null(dp);
	while ((e = readdir(dp)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(dp);
	return n;
}

static void test_srv_tls_selfsigned_files(void **state)
{
	const char *cp = path("ss/c.pem"), *kp = path("ss/k.pem");
	struct stat st;
	char buf[512];
	GENERAL_NAMES *san;
	X509 *x;
	int n;

	(void)state;
	assert_int_equal(mkdir(path("ss"), 0755), 0);
	assert_int_equal(srv__tls_selfsigned(cp, kp, "mail.example", 3), 0);
	assert_int_equal(stat(kp, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(cp, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_int_equal(dir_entries(path("ss")), 2); /* no temporary left */

	x = read_cert(cp);
	cn_of(x, buf, sizeof(buf));
	assert_string_equal(buf, "mail.example");
	san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	assert_non_null(san);
	n = 0;
	for (int i = 0; i < sk_GENERAL_NAME_num(san); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(san, i);
		unsigned char *s = NULL;

		if (g->type == GEN_DNS || g->type == GEN_IPADD) {
			ASN1_STRING *a = g->type == GEN_DNS ? g->d.dNSName
							    : g->d.iPAddress;

			if (g->type == GEN_DNS)
				assert_true(ASN1_STRING_to_UTF8(&s, a) > 0);
			n += g->type == GEN_DNS &&
			     (strcmp((char *)s, "mail.example") == 0 ||
			      strcmp((char *)s, "localhost") == 0);
			n += g->type == GEN_IPADD && a->length == 4 &&
			     memcmp(a->data, "\x7f\0\0\1", 4) == 0;
			OPENSSL_free(s);
		}
	}
	GENERAL_NAMES_free(san);
	assert_int_equal(n, 3);
	assert_int_equal(X509_cmp_time(X509_get0_notAfter(x), NULL), 1);
	X509_free(x);

	/* Regenerated in place: the file is replaced (new key, new cert). */
	assert_int_equal(srv__tls_selfsigned(cp, kp, "mail.example", 3), 0);
	assert_int_equal(dir_entries(path("ss")), 2);
	/* One file for both: 0600, key and certificate, usable as is. */
	assert_int_equal(srv__tls_selfsigned(path("ss/both.pem"),
					     path("ss/both.pem"), "both", 1),
			 0);
	assert_int_equal(stat(path("ss/both.pem"), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	{
		struct srv__tls_opts o = {.cert_file = path("ss/both.pem")};
		struct srv__tls *t = tls_new(&o);

		srv__tls_free(&t);
		assert_null(t);
		srv__tls_free(&t); /* NULL is fine */
	}
	assert_int_equal(srv__tls_selfsigned(NULL, kp, "x", 1), -EINVAL);
	assert_int_equal(srv__tls_selfsigned(cp, kp, "", 1), -EINVAL);
	assert_int_equal(srv__tls_selfsigned(cp, kp, "x", 0), -EINVAL);
	assert_int_equal(
		srv__tls_selfsigned(path("nodir/c"), path("nodir/k"), "x", 1),
		-ENOENT);
}

/* Defaults: TLS 1.3, the client verifies the self-signed certificate. */
static void test_srv_tls_handshake(void **state)
{
	struct srv__tls_opts o = {.cert_file = path("one.pem"),
				  .key_file = path("one.key")};
	struct srv__tls *t = tls_new(&o);
	SSL_CTX *ctx = srv__tls_ctx_ref(t);
	struct hs h = {0};

	/* What the context promises, read back from OpenSSL. */
	assert_true(SSL_CTX_get_options(ctx) & SSL_OP_NO_COMPRESSION);
	assert_true(SSL_CTX_get_options(ctx) & SSL_OP_NO_RENEGOTIATION);
	assert_false(SSL_CTX_get_options(ctx) &
		     SSL_OP_CIPHER_SERVER_PREFERENCE);
	assert_true(SSL_CTX_get_mode(ctx) & SSL_MODE_RELEASE_BUFFERS);
	assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
	assert_int_equal(SSL_CTX_get_timeout(ctx), 3600);
	assert_int_equal(SSL_CTX_get_num_tickets(ctx), 1);
	assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_NONE);
	SSL_CTX_free(ctx);

	hs_with(state, t, client_ctx(0, 0, path("one.pem"), NULL), &h);
	assert_ok(&h);
	assert_string_equal(h.version, "TLSv1.3");
	assert_string_equal(h.server_cn, "one");
	assert_string_equal(h.client_cn, "");
	assert_string_equal(h.alpn, "");

	/* A client that trusts another certificate refuses this one. */
	hs_with(state, t, client_ctx(0, 0, path("two.pem"), NULL), &h);
	assert_true(h.cret < 0);
	srv__tls_free(&t);

	/* ALPN from the options: the server picks "imap" of h2 and imap. */
	o.alpn = (const unsigned char *)"\x04imap";
	o.alpn_len = 5;
	t = tls_new(&o);
	hs_with(state, t, client_ctx(0, 0, NULL, NULL), &h);
	assert_ok(&h);
	assert_string_equal(h.alpn, "imap");
	srv__tls_free(&t);
}

static void test_srv_tls_versions(void **state)
{
	struct srv__tls_opts o = {.cert_file = path("one.pem"),
				  .key_file = path("one.key"),
				  .min_version = "TLSv1.3"};
	struct srv__tls *t = tls_new(&o);
	struct hs h = {0};

	/* A TLS 1.2-only client is refused by a 1.3-minimum server. */
	hs_with(state, t, client_ctx(0, TLS1_2_VERSION, NULL, NULL), &h);
	assert_refused(&h);
	hs_with(state, t, client_ctx(0, 0, NULL, NULL), &h);
	assert_ok(&h);
	assert_string_equal(h.version, "TLSv1.3");
	srv__tls_free(&t);

	/* A 1.2-maximum server talks 1.2 and refuses a 1.3-only client. */
	o.min_version = NULL;
	o.max_version = "TLSv1.2";
	t = tls_new(&o);
	hs_with(state, t, client_ctx(0, 0, NULL, NULL), &h);
	assert_ok(&h);
	assert_string_equal(h.version, "TLSv1.2");
	hs_with(state, t, client_ctx(TLS1_3_VERSION, 0, NULL, NULL), &h);
	assert_refused(&h);
	srv__tls_free(&t);

	/* The default minimum is 1.2: a 1.1-only client is refused. */
	o.max_version = NULL;
	t = tls_new(&o);
	hs_with(state, t, client_ctx(TLS1_VERSION, TLS1_1_VERSION, NULL, NULL),
		&h);
	assert_true(h.sret < 0);
	srv__tls_free(&t);
}

static SSL_CTX *client_ciphers(const char *list, const char *suites)
{
	SSL_CTX *ctx = client_ctx(0, 0, NULL, NULL);

	if (list != NULL)
		assert_int_equal(SSL_CTX_set_cipher_list(ctx, list), 1);
	if (suites != NULL)
		assert_int_equal(SSL_CTX_set_ciphersuites(ctx, suites), 1);
	return ctx;
}

#define AES128 "ECDHE-ECDSA-AES128-GCM-SHA256"
#define AES256 "ECDHE-ECDSA-AES256-GCM-SHA384"
#define CHACHA "ECDHE-ECDSA-CHACHA20-POLY1305"

static void test_srv_tls_ciphers(void **state)
{
	struct srv__tls_opts o = {.cert_file = path("one.pem"),
				  .key_file = path("one.key"),
				  .max_version = "TLSv1.2",
				  .ciphers = AES256};
	struct srv__tls *t = tls_new(&o);
	struct hs h = {0};

	hs_with(state, t, client_ciphers(NULL, NULL), &h);
	assert_ok(&h);
	assert_string_equal(h.cipher, AES256);
	hs_with(state, t, client_ciphers(CHACHA, NULL), &h);
	assert_refused(&h);
	srv__tls_free(&t);

	/* Whose order wins: the client's, or the server's if preferred. */
	o.ciphers = AES128 ":" AES256;
	t = tls_new(&o);
	hs_with(state, t, client_ciphers(AES256 ":" AES128, NULL), &h);
	assert_ok(&h);
	assert_string_equal(h.cipher, AES256);
	srv__tls_free(&t);
	o.prefer_server_ciphers = true;
	t = tls_new(&o);
	hs_with(state, t, client_ciphers(AES256 ":" AES128, NULL), &h);
	assert_ok(&h);
	assert_string_equal(h.cipher, AES128);
	srv__tls_free(&t);

	/* TLS 1.3 suites. */
	o = (struct srv__tls_opts){.cert_file = path("one.pem"),
				   .key_file = path("one.key"),
				   .ciphersuites =
					   "TLS_CHACHA20_POLY1305_SHA256"};
	t = tls_new(&o);
	hs_with(state, t, client_ciphers(NULL, NULL), &h);
	assert_ok(&h);
	assert_string_equal(h.version, "TLSv1.3");
	assert_string_equal(h.cipher, "TLS_CHACHA20_POLY1305_SHA256");
	hs_with(state, t, client_ciphers(NULL, "TLS_AES_128_GCM_SHA256"), &h);
	assert_true(h.sret < 0 && h.cret < 0);
	srv__tls_free(&t);
}

static void test_srv_tls_client_certs(void **state)
{
	struct srv__tls_opts o = {.cert_file = path("one.pem"),
				  .key_file = path("one.key"),
				  .client_ca_file = path("ca.pem"),
				  .verify_client = 2};
	struct srv__tls *t = tls_new(&o);
	struct hs h = {0};

	/* Required: none is refused, a good one passes, a stranger's not. */
	hs_with(state, t, client_ctx(0, 0, NULL, NULL), &h);
	assert_int_equal(h.sret, -EPROTO);
	hs_with(state, t, client_ctx(0, 0, NULL, pki.cli), &h);
	assert_ok(&h);
	assert_string_equal(h.client_cn, "client");
	hs_with(state, t, client_ctx(0, 0, NULL, pki.evil_cli), &h);
	assert_int_equal(h.sret, -EPROTO);
	assert_non_null(strstr(h.serr, "certificate"));
	/* TLS 1.2 too (the certificate comes in the handshake proper). */
	hs_with(state, t, client_ctx(0, TLS1_2_VERSION, NULL, NULL), &h);
	assert_refused(&h);
	srv__tls_free(&t);

	/* Optional: none is fine, a good one is seen, a bad one refused. */
	o.verify_client = 1;
	t = tls_new(&o);
	hs_with(state, t, client_ctx(0, 0, NULL, NULL), &h);
	assert_ok(&h);
	assert_string_equal(h.client_cn, "");
	hs_with(state, t, client_ctx(0, 0, NULL, pki.cli), &h);
	assert_ok(&h);
	assert_string_equal(h.client_cn, "client");
	hs_with(state, t, client_ctx(0, 0, NULL, pki.evil_cli), &h);
	assert_int_equal(h.sret, -EPROTO);
	srv__tls_free(&t);

	/* None: a certificate is not even asked for. */
	o.verify_client = 0;
	t = tls_new(&o);
	hs_with(state, t, client_ctx(0, 0, NULL, pki.cli), &h);
	assert_ok(&h);
	assert_string_equal(h.client_cn, "");
	srv__tls_free(&t);
}

/* The chain reaches a client that trusts only the root. */
static void test_srv_tls_chain(void **state)
{
	struct srv__tls_opts o = {.cert_file = path("leaf.pem"),
				  .key_file = path("leaf.key")};
	struct srv__tls *t = tls_new(&o);
	struct hs h = {0};

	hs_with(state, t, client_ctx(0, 0, path("ca.pem"), NULL), &h);
	assert_true(h.cret < 0); /* no intermediate sent */
	srv__tls_free(&t);

	o.chain_file = path("inter.pem");
	t = tls_new(&o);
	hs_with(state, t, client_ctx(0, 0, path("ca.pem"), NULL), &h);
	assert_ok(&h);
	assert_string_equal(h.server_cn, "leaf");
	srv__tls_free(&t);

	o.chain_file = NULL;
	o.cert_file = path("leaf-chain.pem");
	t = tls_new(&o);
	hs_with(state, t, client_ctx(0, 0, path("ca.pem"), NULL), &h);
	assert_ok(&h);
	assert_string_equal(h.server_cn, "leaf");
	srv__tls_free(&t);
}

static void test_srv_tls_reload(void **state)
{
	struct srv__tls_opts one = {.cert_file = path("one.pem"),
				    .key_file = path("one.key")};
	struct srv__tls_opts two = {.cert_file = path("two.pem"),
				    .key_file = path("two.key")};
	struct srv__tls_opts bad = {.cert_file = path("missing.pem")};
	struct srv__tls *t = tls_new(&one);
	SSL_CTX *old = srv__tls_ctx_ref(t), *cctx;
	const char *err = "x";
	struct hs h = {0};

	assert_int_equal(srv__tls_reload(t, &two, &err), 0);
	assert_null(err);
	/* A handshake that took the old context before keeps it. */
	cctx = client_ctx(0, 0, NULL, NULL);
	handshake(t_loop_of(state), old, cctx, &h);
	assert_ok(&h);
	assert_string_equal(h.server_cn, "one");
	SSL_CTX_free(old);
	/* New handshakes see the new certificate. */
	hs_with(state, t, cctx, &h);
	assert_ok(&h);
	assert_string_equal(h.server_cn, "two");

	/* A failed reload keeps the current context and says why. */
	assert_int_equal(srv__tls_reload(t, &bad, &err), -ENOENT);
	assert_non_null(err);
	assert_non_null(strstr(err, "missing.pem: No such file"));
	hs_with(state, t, client_ctx(0, 0, NULL, NULL), &h);
	assert_ok(&h);
	assert_string_equal(h.server_cn, "two");
	srv__tls_free(&t);
}

/* Resumption: TLS 1.3 tickets and TLS 1.2; a reload starts afresh. */
static void test_srv_tls_resumption(void **state)
{
	static const char *const maxv[] = {NULL, "TLSv1.2"};

	for (int v = 0; v < 2; v++) {
		struct srv__tls_opts o = {.cert_file = path("one.pem"),
					  .key_file = path("one.key"),
					  .max_version = maxv[v]};
		struct srv__tls *t = tls_new(&o);
		SSL_SESSION *sess;
		struct hs h = {.want_session = true};

		hs_with(state, t, client_ctx(0, 0, NULL, NULL), &h);
		assert_ok(&h);
		assert_false(h.resumed);
		assert_non_null(h.session);
		sess = h.session;
		h.session = NULL;
		h.resume = sess;
		hs_with(state, t, client_ctx(0, 0, NULL, NULL), &h);
		assert_ok(&h);
		assert_true(h.resumed);
		/* New context, new ticket keys: a full handshake again. */
		assert_int_equal(srv__tls_reload(t, &o, NULL), 0);
		hs_with(state, t, client_ctx(0, 0, NULL, NULL), &h);
		assert_ok(&h);
		assert_false(h.resumed);
		SSL_SESSION_free(h.session);
		SSL_SESSION_free(sess);
		srv__tls_free(&t);
	}
}

/* An SSL made from the old context works after the reload. */
static void test_srv_tls_reload_live_ssl(void **state)
{
	struct srv__tls_opts one = {.cert_file = path("one.pem"),
				    .key_file = path("one.key")};
	struct srv__tls_opts two = {.cert_file = path("two.pem"),
				    .key_file = path("two.key")};
	struct srv__tls *t = tls_new(&one);
	SSL_CTX *sctx = srv__tls_ctx_ref(t);
	SSL_CTX *cctx = client_ctx(0, 0, NULL, NULL);
	SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
	BIO *sb, *cb;
	char buf[8];
	int sr = -1, cr = -1;

	(void)state;
	SSL_CTX_free(sctx); /* s holds its own reference */
	SSL_CTX_free(cctx);
	assert_non_null(s);
	assert_non_null(c);
	assert_int_equal(BIO_new_bio_pair(&sb, 0, &cb, 0), 1);
	SSL_set_bio(s, sb, sb);
	SSL_set_bio(c, cb, cb);
	SSL_set_accept_state(s);
	SSL_set_connect_state(c);
	/* Half a handshake, the reload (the old context's last user is s),
	 * then the rest. */
	assert_true(SSL_do_handshake(c) <= 0);
	assert_true(SSL_do_handshake(s) <= 0);
	assert_int_equal(srv__tls_reload(t, &two, NULL), 0);
	for (int i = 0; i < 10 && (sr != 1 || cr != 1); i++) {
		cr = SSL_do_handshake(c);
		sr = SSL_do_handshake(s);
	}
	assert_int_equal(sr, 1);
	assert_int_equal(cr, 1);
	assert_int_equal(SSL_write(s, "hello", 5), 5);
	assert_int_equal(SSL_read(c, buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "hello", 5);
	cn_of(SSL_get0_peer_certificate(c), buf, sizeof(buf));
	assert_string_equal(buf, "one");
	SSL_free(s);
	SSL_free(c);
	srv__tls_free(&t);
}

/* Threads take references while the main thread reloads (ASan, TSan). */
struct refs {
	struct srv__tls *t;
	int n;
};

static void *ref_thread(void *arg)
{
	struct refs *r = arg;

	for (int i = 0; i < r->n; i++) {
		SSL_CTX *ctx = srv__tls_ctx_ref(r->t);
		SSL *ssl = SSL_new(ctx);

		SSL_CTX_free(ctx);
		if (ssl == NULL)
			return (void *)1;
		SSL_free(ssl);
	}
	return NULL;
}

static void test_srv_tls_reload_threads(void **state)
{
	struct srv__tls_opts o[2] = {
		{.cert_file = path("one.pem"), .key_file = path("one.key")},
		{.cert_file = path("two.pem"), .key_file = path("two.key")},
	};
	struct refs r = {.t = tls_new(&o[0]), .n = 3000};
	pthread_t th[2];
	void *res;

	(void)state;
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, ref_thread, &r),
				 0);
	for (int i = 0; i < 40; i++)
		assert_int_equal(srv__tls_reload(r.t, &o[i % 2], NULL), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pthread_join(th[i], &res), 0);
		assert_null(res);
	}
	srv__tls_free(&r.t);
}

struct bad_case {
	struct srv__tls_opts o;
	int ret;
	const char *msg; /* the whole line; a trailing '*' matches a prefix */
};

static void test_srv_tls_errors(void **state)
{
	char m[40][256];
	const struct bad_case cases[] = {
		{{.cert_file = NULL}, -EINVAL, "tls_cert_file: not set"},
		{{.cert_file = path("missing.pem")}, -ENOENT, m[0]},
		{{.cert_file = path("adir")}, -EISDIR, m[1]},
		{{.cert_file = path("garbage.pem")}, -EINVAL, m[2]},
		{{.cert_file = path("badb64.pem")}, -EINVAL, m[3]},
		{{.cert_file = path("one.pem"), .key_file = path("nokey")},
		 -ENOENT,
		 m[4]},
		{{.cert_file = path("one.pem"), .key_file = path("two.key")},
		 -EINVAL,
		 m[5]},
		{{.cert_file = path("one.pem"),
		  .key_file = path("garbage.pem")},
		 -EINVAL,
		 m[6]},
		{{.cert_file = path("leaf.pem"), .key_file = path("enc.key")},
		 -EINVAL,
		 m[7]},
		{{.cert_file = path("one.pem")}, -EINVAL, m[8]},
		{{.cert_file = path("one.pem"),
		  .key_file = path("one.key"),
		  .min_version = "TLSv1.4"},
		 -EINVAL,
		 "tls_min_version \"TLSv1.4\": unknown TLS version (TLSv1, "
		 "TLSv1.1, TLSv1.2, TLSv1.3)"},
		{{.cert_file = path("one.pem"),
		  .key_file = path("one.key"),
		  .max_version = "tls1.2"},
		 -EINVAL,
		 "tls_max_version \"tls1.2\": unknown TLS version (TLSv1, "
		 "TLSv1.1, TLSv1.2, TLSv1.3)"},
		{{.cert_file = path("one.pem"),
		  .key_file = path("one.key"),
		  .min_version = "TLSv1.3",
		  .max_version = "TLSv1.2"},
		 -EINVAL,
		 "tls_max_version TLSv1.2 is older than tls_min_version "
		 "TLSv1.3"},
		{{.cert_file = path("one.pem"),
		  .key_file = path("one.key"),
		  .ciphers = "NO-SUCH-CIPHER"},
		 -EINVAL,
		 "tls_ciphers \"NO-SUCH-CIPHER\": no cipher match"},
		{{.cert_file = path("one.pem"),
		  .key_file = path("one.key"),
		  .ciphersuites = "TLS_NO_SUCH"},
		 -EINVAL,
		 "tls_ciphersuites \"TLS_NO_SUCH\": no TLS 1.3 suite "
		 "matches"},
		{{.cert_file = path("one.pem"),
		  .key_file = path("one.key"),
		  .verify_client = 2},
		 -EINVAL,
		 "tls_verify_client 2: needs tls_client_ca_file"},
		{{.cert_file = path("one.pem"),
		  .key_file = path("one.key"),
		  .verify_client = 3,
		  .client_ca_file = path("ca.pem")},
		 -EINVAL,
		 "tls_verify_client 3: not 0, 1 or 2"},
		{{.cert_file = path("one.pem"),
		  .key_file = path("one.key"),
		  .verify_client = 1,
		  .client_ca_file = path("noca.pem")},
		 -ENOENT,
		 m[9]},
		{{.cert_file = path("one.pem"),
		  .key_file = path("one.key"),
		  .verify_client = 1,
		  .client_ca_file = path("garbage.pem")},
		 -EINVAL,
		 m[10]},
		{{.cert_file = path("leaf.pem"),
		  .key_file = path("leaf.key"),
		  .chain_file = path("garbage.pem")},
		 -EINVAL,
		 m[11]},
		{{.cert_file = path("one.pem"),
		  .key_file = path("one.key"),
		  .session_timeout_s = 86401},
		 -EINVAL,
		 "tls_session_timeout 86401: more than 86400 seconds"},
		{{.cert_file = path("one.pem"), .key_file = path("badkey.pem")},
		 -EINVAL,
		 m[12]},
	};

	(void)state;
	snprintf(m[0], sizeof(m[0]),
		 "tls_cert_file %s: No such file or directory",
		 path("missing.pem"));
	snprintf(m[1], sizeof(m[1]), "tls_cert_file %s: Is a directory",
		 path("adir"));
	snprintf(m[2], sizeof(m[2]),
		 "tls_cert_file %s: no PEM certificate (no start line)",
		 path("garbage.pem"));
	snprintf(m[3], sizeof(m[3]), "tls_cert_file %s: no PEM certificate*",
		 path("badb64.pem"));
	snprintf(m[4], sizeof(m[4]),
		 "tls_key_file %s: No such file or directory", path("nokey"));
	snprintf(m[5], sizeof(m[5]),
		 "tls_key_file %s: key does not match certificate",
		 path("two.key"));
	snprintf(m[6], sizeof(m[6]),
		 "tls_key_file %s: no PEM private key in the file",
		 path("garbage.pem"));
	snprintf(m[7], sizeof(m[7]),
		 "tls_key_file %s: encrypted, and passphrases are not "
		 "supported",
		 path("enc.key"));
	snprintf(m[8], sizeof(m[8]),
		 "tls_cert_file %s: no PEM private key in the file",
		 path("one.pem"));
	snprintf(m[9], sizeof(m[9]),
		 "tls_client_ca_file %s: No such file or directory",
		 path("noca.pem"));
	snprintf(m[10], sizeof(m[10]),
		 "tls_client_ca_file %s: no PEM certificate in the file",
		 path("garbage.pem"));
	snprintf(m[11], sizeof(m[11]),
		 "tls_chain_file %s: no PEM certificate in the file",
		 path("garbage.pem"));

	snprintf(m[12], sizeof(m[12]), "tls_key_file %s: bad PEM private key*",
		 path("badkey.pem"));

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bad_case *c = &cases[i];
		struct srv__tls *t = (void *)1;
		const char *err = NULL;
		size_t n = strlen(c->msg);
		int ret = srv__tls_new(&c->o, &t, &err);

		print_message("case %zu: %d %s\n", i, ret, err);
		assert_int_equal(ret, c->ret);
		assert_null(t);
		assert_non_null(err);
		assert_null(strchr(err, '\n'));
		if (c->msg[n - 1] == '*')
			assert_memory_equal(err, c->msg, n - 1);
		else
			assert_string_equal(err, c->msg);
		assert_int_equal(ERR_peek_error(), 0); /* queue left clean */
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
		T(test_srv_tls_selfsigned_files),
		T(test_srv_tls_handshake),
		T(test_srv_tls_versions),
		T(test_srv_tls_ciphers),
		T(test_srv_tls_client_certs),
		T(test_srv_tls_chain),
		T(test_srv_tls_reload),
		T(test_srv_tls_resumption),
		T(test_srv_tls_reload_live_ssl),
		T(test_srv_tls_reload_threads),
		T(test_srv_tls_errors),
#undef T
	};

	signal(SIGPIPE, SIG_IGN);
	if (!(pl_features() & PL_HAVE_TLS)) {
		fprintf(stderr, "no TLS layer in this build: skipped\n");
		return 77;
	}
	t_require_loop();
	return cmocka_run_group_tests_name("srv-tls", tests, setup_files,
					   teardown_files);
}
