/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-tls: the TLS layer against real OpenSSL peers (no mocks). */
#include "t-helpers.h"

#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ringprot/prot-layer.h>
#include <ringprot/prot.h>

/*
 * A throwaway PKI made in memory at start-up: a CA, a server certificate
 * for "localhost" and a client certificate signed by it, and a second,
 * untrusted CA with its own server and client certificates.
 */
struct pki {
	EVP_PKEY *ca_key, *srv_key, *cli_key, *evil_key;
	X509 *ca, *srv, *cli, *evil_ca, *evil_srv, *evil_cli;
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

static void pki_make(void)
{
	pki.ca_key = EVP_EC_gen("P-256");
	pki.srv_key = EVP_EC_gen("P-256");
	pki.cli_key = EVP_EC_gen("P-256");
	pki.evil_key = EVP_EC_gen("P-256");
	pki.ca = cert_new("ringprot test CA", pki.ca_key, NULL, NULL, true);
	pki.srv = cert_new("localhost", pki.srv_key, pki.ca, pki.ca_key, false);
	pki.cli = cert_new("client", pki.cli_key, pki.ca, pki.ca_key, false);
	pki.evil_ca = cert_new("evil CA", pki.evil_key, NULL, NULL, true);
	pki.evil_srv = cert_new("localhost", pki.srv_key, pki.evil_ca,
				pki.evil_key, false);
	pki.evil_cli = cert_new("client", pki.cli_key, pki.evil_ca,
				pki.evil_key, false);
}

static void pki_free(void)
{
	EVP_PKEY_free(pki.ca_key);
	EVP_PKEY_free(pki.srv_key);
	EVP_PKEY_free(pki.cli_key);
	EVP_PKEY_free(pki.evil_key);
	X509_free(pki.ca);
	X509_free(pki.srv);
	X509_free(pki.cli);
	X509_free(pki.evil_ca);
	X509_free(pki.evil_srv);
	X509_free(pki.evil_cli);
}

static char sni_seen[64];

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	(void)alert;
	(void)arg;
	snprintf(sni_seen, sizeof(sni_seen), "%s", name != NULL ? name : "");
	return SSL_TLSEXT_ERR_OK;
}

/* version 0: any; client certificates: 0 none, 1 asked, 2 required. */
static SSL_CTX *server_ctx(int version, int client_certs)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_use_certificate(ctx, pki.srv), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, pki.srv_key), 1);
	if (version != 0) {
		SSL_CTX_set_min_proto_version(ctx, version);
		SSL_CTX_set_max_proto_version(ctx, version);
	}
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"rp", 2);
	SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
	if (client_certs > 0) {
		assert_int_equal(X509_STORE_add_cert(
					 SSL_CTX_get_cert_store(ctx), pki.ca),
				 1);
		SSL_CTX_set_verify(
			ctx,
			SSL_VERIFY_PEER |
				(client_certs > 1
					 ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
					 : 0),
			NULL);
	}
	return ctx;
}

/* trust: the CA the client believes; cert: its own, or NULL. */
static SSL_CTX *client_ctx(int version, X509 *trust, X509 *cert)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	assert_non_null(ctx);
	if (version != 0) {
		SSL_CTX_set_min_proto_version(ctx, version);
		SSL_CTX_set_max_proto_version(ctx, version);
	}
	if (trust != NULL) {
		assert_int_equal(
			X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), trust),
			1);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	if (cert != NULL) {
		assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
		assert_int_equal(SSL_CTX_use_PrivateKey(ctx, pki.cli_key), 1);
	}
	return ctx;
}

/* End a test's connection: both streams, the socket pair, the contexts. */
static void tls_done(struct protstream *in, struct protstream *out, int sv[2],
		     SSL_CTX *sctx, SSL_CTX *cctx)
{
	prot_free(in);
	prot_free(out);
	t_close_pair(sv);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

/*
 * Ring against ring: each end runs pl_tls_accept or pl_tls_connect and
 * then its script, in two fibers of one loop.
 */
struct side {
	struct protstream *in, *out;
	SSL_CTX *ctx;
	const struct pl_tls_client_opts *opts;
	bool server;
	int timeout_ms;
	int ret;
	const char *errstr;
	int (*script)(struct side *);
	int sret;
	void *arg;
};

static int side_fiber(void *arg)
{
	struct side *s = arg;

	s->ret = s->server ? pl_tls_accept(s->in, s->out, s->ctx, s->timeout_ms,
					   &s->errstr)
			   : pl_tls_connect(s->in, s->out, s->ctx, s->opts,
					    s->timeout_ms, &s->errstr);
	s->sret = s->ret == 0 && s->script != NULL ? s->script(s) : 0;
	return 0;
}

static void side_open(struct side *s, int fd, bool server, SSL_CTX *ctx)
{
	memset(s, 0, sizeof(*s));
	s->in = prot_new(fd, 0);
	s->out = prot_new(fd, 1);
	assert_non_null(s->in);
	assert_non_null(s->out);
	s->server = server;
	s->ctx = ctx;
	s->timeout_ms = 10000;
}

static void side_close(struct side *s)
{
	prot_free(s->in);
	prot_free(s->out);
}

static void run_sides(struct ur_loop *loop, struct side *a, struct side *b)
{
	struct ur_fiber *fa, *fb;

	assert_int_equal(ur_fiber_spawn(loop, side_fiber, a, NULL, &fa), 0);
	assert_int_equal(ur_fiber_spawn(loop, side_fiber, b, NULL, &fb), 0);
	assert_int_equal(ur_fiber_join(fa, NULL), 0);
	assert_int_equal(ur_fiber_join(fb, NULL), 0);
}

static int expect_line(struct protstream *in, const char *want)
{
	char line[256];

	if (prot_fgets(line, sizeof(line), in) == NULL)
		return -1;
	return strcmp(line, want) == 0 ? 0 : -2;
}

static int say(struct protstream *out, const char *text)
{
	return prot_puts(out, text) == 0 && prot_flush(out) == 0 ? 0 : -3;
}

static int greet_server(struct side *s)
{
	int ret = say(s->out, "* OK ready\r\n");

	if (ret == 0)
		ret = expect_line(s->in, "a NOOP\r\n");
	if (ret == 0)
		ret = say(s->out, "a OK done\r\n");
	return ret;
}

static int greet_client(struct side *s)
{
	int ret = expect_line(s->in, "* OK ready\r\n");

	if (ret == 0)
		ret = say(s->out, "a NOOP\r\n");
	if (ret == 0)
		ret = expect_line(s->in, "a OK done\r\n");
	return ret;
}

/* TLS 1.3 and 1.2 between two ring ends, with SNI, ALPN, name check. */
static void test_prot_tls_handshake_versions(void **state)
{
	struct t_loop *tl = *state;
	static const int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
	static const char *const names[] = {"TLSv1.3", "TLSv1.2"};
	struct pl_tls_client_opts opts = {
		.server_name = "localhost",
		.verify_name = true,
		.alpn = (const unsigned char *)"\x04imap",
		.alpn_len = 5,
	};

	for (int v = 0; v < 2; v++) {
		SSL_CTX *sctx = server_ctx(versions[v], 0);
		SSL_CTX *cctx = client_ctx(0, pki.ca, NULL);
		struct pl_tls_info si, ci;
		struct side srv, cli;
		const unsigned char *alpn;
		unsigned alpn_len;
		int sv[2];

		assert_int_equal(
			pl_tls_ctx_set_alpn(
				sctx, (const unsigned char *)"\x02h2\x04imap",
				8),
			0);
		sni_seen[0] = '\0';
		t_tcp_pair(sv);
		side_open(&srv, sv[0], true, sctx);
		side_open(&cli, sv[1], false, cctx);
		srv.script = greet_server;
		cli.script = greet_client;
		cli.opts = &opts;
		run_sides(tl->loop, &srv, &cli);
		assert_int_equal(srv.ret, 0);
		assert_int_equal(cli.ret, 0);
		assert_null(srv.errstr);
		assert_int_equal(srv.sret, 0);
		assert_int_equal(cli.sret, 0);
		assert_string_equal(sni_seen, "localhost");
		assert_int_equal(pl_tls_info(srv.in, &si), 0);
		assert_int_equal(pl_tls_info(cli.out, &ci), 0);
		assert_string_equal(si.version, names[v]);
		assert_string_equal(ci.version, names[v]);
		assert_false(si.resumed);
		assert_int_equal(si.discarded, 0);
		assert_ptr_equal(srv.in->tls_conn, srv.out->tls_conn);
		SSL_get0_alpn_selected(srv.in->tls_conn, &alpn, &alpn_len);
		assert_int_equal(alpn_len, 4);
		assert_memory_equal(alpn, "imap", 4);
		SSL_get0_alpn_selected(cli.in->tls_conn, &alpn, &alpn_len);
		assert_int_equal(alpn_len, 4);
		assert_memory_equal(alpn, "imap", 4);
		side_close(&srv);
		side_close(&cli);
		close(sv[0]);
		close(sv[1]);
		SSL_CTX_free(sctx);
		SSL_CTX_free(cctx);
	}
}

/*
 * An independent peer: OpenSSL on a plain blocking socket in a thread,
 * with its own socket BIO (no ring, no memory BIO).
 */
struct tpeer {
	pthread_t th;
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	int (*fn)(struct tpeer *);
	int ret;
	unsigned long err; /* first ERR code seen by the peer */
	void *arg;
};

static void *tpeer_main(void *arg)
{
	struct tpeer *p = arg;

	p->ret = p->fn(p);
	if (p->ssl != NULL)
		SSL_free(p->ssl);
	ERR_clear_error();
	return NULL;
}

static void tpeer_start(struct tpeer *p, int fd, SSL_CTX *ctx,
			int (*fn)(struct tpeer *), void *arg)
{
	struct timeval tv = {10, 0};

	memset(p, 0, sizeof(*p));
	p->fd = fd;
	p->ctx = ctx;
	p->fn = fn;
	p->arg = arg;
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(pthread_create(&p->th, NULL, tpeer_main, p), 0);
}

static int tpeer_join(struct tpeer *p)
{
	assert_int_equal(pthread_join(p->th, NULL), 0);
	return p->ret;
}

static int tp_connect(struct tpeer *p)
{
	p->ssl = SSL_new(p->ctx);
	if (p->ssl == NULL || SSL_set_fd(p->ssl, p->fd) != 1)
		return -1;
	SSL_set_tlsext_host_name(p->ssl, "localhost");
	if (SSL_connect(p->ssl) != 1) {
		p->err = ERR_peek_error();
		return -2;
	}
	return 0;
}

static int tp_read_exact(SSL *ssl, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		int r = SSL_read(ssl, (char *)buf + got, (int)(n - got));

		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static int tp_write_all(SSL *ssl, const void *buf, size_t n)
{
	return SSL_write(ssl, buf, (int)n) == (int)n ? 0 : -1;
}

static unsigned char pattern(size_t i, unsigned seed)
{
	return (unsigned char)((i * 131 + seed + (i >> 9)) & 0xff);
}

#define BULK (1u << 20)

/* The peer sends BULK bytes in odd pieces, then reads BULK back. */
static int tp_bulk_client(struct tpeer *p)
{
	static const size_t sizes[] = {1, 4095, 17000, 3, 4096, 65536, 777};
	unsigned char *b = malloc(BULK);
	size_t off = 0;
	int ret = tp_connect(p), i = 0;

	if (ret < 0 || b == NULL)
		goto out;
	for (size_t k = 0; k < BULK; k++)
		b[k] = pattern(k, 1);
	while (off < BULK && ret == 0) {
		size_t k = sizes[i++ % 7];

		if (k > BULK - off)
			k = BULK - off;
		ret = tp_write_all(p->ssl, b + off, k);
		off += k;
	}
	if (ret == 0)
		ret = tp_read_exact(p->ssl, b, BULK);
	for (size_t k = 0; ret == 0 && k < BULK; k++)
		if (b[k] != pattern(k, 2))
			ret = -5;
	if (ret == 0 && SSL_shutdown(p->ssl) < 0)
		ret = -6;
out:
	free(b);
	return ret;
}

/* Our server (outside any fiber: blocking calls drive the loop). */
static void test_prot_tls_interop_socket_bio_peer(void **state)
{
	SSL_CTX *sctx = server_ctx(0, 0), *cctx = client_ctx(0, pki.ca, NULL);
	unsigned char *b = malloc(BULK);
	struct protstream *in, *out;
	const char *why = "unset";
	struct tpeer p;
	size_t got = 0;
	int sv[2], n;

	(void)state;
	t_tcp_pair(sv);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	tpeer_start(&p, sv[1], cctx, tp_bulk_client, NULL);
	assert_int_equal(pl_tls_accept(in, out, sctx, 10000, &why), 0);
	assert_null(why);
	while (got < BULK &&
	       (n = prot_read(in, (char *)b + got, (unsigned)(BULK - got))) > 0)
		got += (size_t)n;
	assert_int_equal(got, BULK);
	for (size_t k = 0; k < BULK; k++)
		if (b[k] != pattern(k, 1))
			fail_msg("byte %zu differs", k);
	for (size_t k = 0; k < BULK; k++)
		b[k] = pattern(k, 2);
	assert_int_equal(prot_write(out, (char *)b, BULK), 0);
	assert_int_equal(prot_flush(out), 0);
	/* The peer's close_notify: a clean end of file. */
	assert_int_equal(prot_getc(in), EOF);
	assert_string_equal(prot_error(in), PROT_EOF_STRING);
	assert_int_equal(tpeer_join(&p), 0);
	{
		struct pl_tls_info info;

		assert_int_equal(pl_tls_info(in, &info), 0);
		assert_int_equal(info.peer_end, PL_TLS_PEER_CLOSE_NOTIFY);
		/* Idle after 1 MiB each way: no buffer kept. */
		assert_int_equal(info.held, 0);
	}
	prot_free(in);
	prot_free(out);
	close(sv[0]);
	close(sv[1]);
	free(b);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

/* The peer is a plain OpenSSL server; ours is the client. */
static int tp_echo_server(struct tpeer *p)
{
	char buf[4096];
	int r;

	p->ssl = SSL_new(p->ctx);
	if (p->ssl == NULL || SSL_set_fd(p->ssl, p->fd) != 1)
		return -1;
	if (SSL_accept(p->ssl) != 1) {
		p->err = ERR_peek_error();
		return -2;
	}
	while ((r = SSL_read(p->ssl, buf, sizeof(buf))) > 0)
		if (tp_write_all(p->ssl, buf, (size_t)r) < 0)
			return -3;
	if (SSL_get_error(p->ssl, r) != SSL_ERROR_ZERO_RETURN)
		return -4;
	return SSL_shutdown(p->ssl) == 1 ? 0 : -5; /* our close_notify */
}

static void test_prot_tls_interop_client(void **state)
{
	SSL_CTX *sctx = server_ctx(0, 0), *cctx = client_ctx(0, pki.ca, NULL);
	struct pl_tls_client_opts opts = {.server_name = "localhost",
					  .verify_name = true};
	struct protstream *in, *out;
	char line[64];
	struct tpeer p;
	int sv[2];

	(void)state;
	t_tcp_pair(sv);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	tpeer_start(&p, sv[1], sctx, tp_echo_server, NULL);
	assert_int_equal(pl_tls_connect(in, out, cctx, &opts, 10000, NULL), 0);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(prot_printf(out, "line %d\r\n", i), 0);
		assert_int_equal(prot_flush(out), 0);
		assert_non_null(prot_fgets(line, sizeof(line), in));
		assert_int_equal(atoi(line + 5), i);
	}
	assert_int_equal(pl_tls_shutdown(in, out, 5000), 0);
	assert_int_equal(tpeer_join(&p), 0);
	tls_done(in, out, sv, sctx, cctx);
}

/*
 * STARTTLS command injection (CVE-2011-0411 class): bytes the client
 * pipelined after STARTTLS, before the handshake, are plaintext an
 * attacker could have inserted. They must never be read as a command
 * sent inside TLS.
 */
static const char inject_cmd[] = "a STARTTLS\r\n";
static const char inject_evil[] = "b LOGIN victim secret\r\n";

static int tp_starttls_client(struct tpeer *p)
{
	char c, buf[64];
	size_t n = 0;
	char wire[sizeof(inject_cmd) + sizeof(inject_evil)];

	/* One send: command and injection arrive in the same read. */
	snprintf(wire, sizeof(wire), "%s%s", inject_cmd, inject_evil);
	if (send(p->fd, wire, strlen(wire), 0) != (ssize_t)strlen(wire))
		return -1;
	while (n < sizeof(buf) - 1 && recv(p->fd, &c, 1, 0) == 1) {
		buf[n++] = c;
		if (c == '\n')
			break;
	}
	buf[n] = '\0';
	if (strcmp(buf, "a OK begin TLS\r\n") != 0)
		return -2;
	if (tp_connect(p) < 0)
		return -3;
	if (tp_write_all(p->ssl, "c NOOP\r\n", 8) < 0)
		return -4;
	if (tp_read_exact(p->ssl, buf, 6) < 0 || memcmp(buf, "c OK\r\n", 6))
		return -5;
	SSL_shutdown(p->ssl);
	return 0;
}

static void starttls_case(bool cyrus_style)
{
	SSL_CTX *sctx = server_ctx(0, 0), *cctx = client_ctx(0, pki.ca, NULL);
	struct protstream *in, *out;
	struct pl_tls_info info;
	char line[64];
	struct tpeer p;
	SSL *ssl = NULL;
	int sv[2];

	t_tcp_pair(sv);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	tpeer_start(&p, sv[1], cctx, tp_starttls_client, NULL);
	assert_non_null(prot_fgets(line, sizeof(line), in));
	assert_string_equal(line, inject_cmd);
	assert_int_equal(in->cnt, strlen(inject_evil)); /* buffered */
	assert_int_equal(prot_printf(out, "a OK begin TLS\r\n"), 0);
	if (cyrus_style) {
		/* Cyrus: tls_start_servertls on the fd, then prot_settls. */
		assert_int_equal(prot_flush(out), 0);
		ssl = SSL_new(sctx);
		assert_int_equal(SSL_set_fd(ssl, sv[0]), 1);
		assert_int_equal(SSL_accept(ssl), 1);
		assert_int_equal(prot_settls(in, ssl), 0);
		assert_int_equal(prot_settls(out, ssl), 0);
		assert_ptr_equal(in->tls_conn, ssl);
	} else {
		assert_int_equal(pl_tls_accept(in, out, sctx, 10000, NULL), 0);
	}
	assert_int_equal(pl_tls_info(in, &info), 0);
	assert_int_equal(info.discarded, strlen(inject_evil));
	/* The next command is the one sent inside TLS. */
	assert_non_null(prot_fgets(line, sizeof(line), in));
	assert_string_equal(line, "c NOOP\r\n");
	assert_int_equal(prot_printf(out, "c OK\r\n"), 0);
	assert_int_equal(prot_flush(out), 0);
	assert_int_equal(tpeer_join(&p), 0);
	prot_free(in);
	prot_free(out);
	SSL_free(ssl); /* Cyrus order: streams first, then the SSL */
	close(sv[0]);
	close(sv[1]);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

static void test_prot_tls_starttls_drops_injection(void **state)
{
	(void)state;
	starttls_case(false);
	starttls_case(true);
}

/* Client certificates: required and missing, trusted, untrusted. */
static void test_prot_tls_client_certificates(void **state)
{
	struct t_loop *tl = *state;
	X509 *certs[3] = {NULL, pki.cli, pki.evil_cli};
	const char *want[3] = {"peer did not return a certificate", NULL,
			       "certificate verify failed"};

	for (int i = 0; i < 3; i++) {
		SSL_CTX *sctx = server_ctx(0, 2);
		SSL_CTX *cctx = client_ctx(0, pki.ca, certs[i]);
		struct side srv, cli;
		int sv[2];

		t_socketpair(sv);
		side_open(&srv, sv[0], true, sctx);
		side_open(&cli, sv[1], false, cctx);
		srv.script = greet_server;
		cli.script = greet_client;
		run_sides(tl->loop, &srv, &cli);
		if (want[i] == NULL) {
			X509 *peer;

			assert_int_equal(srv.ret, 0);
			assert_int_equal(srv.sret, 0);
			assert_int_equal(cli.sret, 0);
			peer = SSL_get1_peer_certificate(srv.in->tls_conn);
			assert_non_null(peer);
			assert_int_equal(X509_cmp(peer, pki.cli), 0);
			X509_free(peer);
		} else {
			assert_int_equal(srv.ret, -EPROTO);
			assert_non_null(srv.errstr);
			if (strstr(srv.errstr, want[i]) == NULL)
				fail_msg("errstr \"%s\"", srv.errstr);
			assert_string_equal(prot_error(srv.in), srv.errstr);
			assert_string_equal(prot_error(srv.out), srv.errstr);
			assert_int_equal(prot_puts(srv.out, "x"), EOF);
			assert_null(srv.in->tls_conn);
			/* The client learns of it, at the latest by reading. */
			assert_true(cli.ret < 0 || cli.sret < 0);
		}
		side_close(&srv);
		side_close(&cli);
		close(sv[0]);
		close(sv[1]);
		SSL_CTX_free(sctx);
		SSL_CTX_free(cctx);
	}
}

/* The client refuses an untrusted server and a wrong name. */
static void test_prot_tls_server_verification(void **state)
{
	struct t_loop *tl = *state;
	struct pl_tls_client_opts wrong = {.server_name = "imap.example",
					   .verify_name = true};
	struct pl_tls_client_opts right = {.server_name = "localhost",
					   .verify_name = true};

	for (int i = 0; i < 2; i++) {
		SSL_CTX *sctx = server_ctx(0, 0);
		SSL_CTX *cctx =
			client_ctx(0, i == 0 ? pki.evil_ca : pki.ca, NULL);
		struct side srv, cli;
		int sv[2];

		t_socketpair(sv);
		side_open(&srv, sv[0], true, sctx);
		side_open(&cli, sv[1], false, cctx);
		cli.opts = i == 0 ? &right : &wrong;
		run_sides(tl->loop, &srv, &cli);
		assert_int_equal(cli.ret, -EPROTO);
		assert_non_null(
			strstr(cli.errstr, "certificate verify failed"));
		if (i == 1)
			assert_non_null(
				strstr(cli.errstr, "hostname mismatch"));
		assert_true(srv.ret < 0); /* the alert reached the server */
		side_close(&srv);
		side_close(&cli);
		close(sv[0]);
		close(sv[1]);
		SSL_CTX_free(sctx);
		SSL_CTX_free(cctx);
	}
}

/* Session resumption, TLS 1.3 (tickets) and 1.2 (session ids). */
static int keep_session(struct side *s)
{
	int ret = greet_client(s);

	if (ret == 0)
		*(SSL_SESSION **)s->arg = SSL_get1_session(s->in->tls_conn);
	return ret;
}

static void test_prot_tls_resumption(void **state)
{
	struct t_loop *tl = *state;
	static const int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};

	for (int v = 0; v < 2; v++) {
		SSL_CTX *sctx = server_ctx(versions[v], 0);
		SSL_CTX *cctx = client_ctx(0, pki.ca, NULL);
		struct pl_tls_client_opts opts = {.server_name = "localhost"};
		SSL_SESSION *sess = NULL;

		for (int round = 0; round < 2; round++) {
			struct pl_tls_info si, ci;
			struct side srv, cli;
			int sv[2];

			t_socketpair(sv);
			side_open(&srv, sv[0], true, sctx);
			side_open(&cli, sv[1], false, cctx);
			srv.script = greet_server;
			cli.script = round == 0 ? keep_session : greet_client;
			cli.arg = &sess;
			opts.session = round == 1 ? sess : NULL;
			cli.opts = &opts;
			run_sides(tl->loop, &srv, &cli);
			assert_int_equal(srv.ret, 0);
			assert_int_equal(cli.ret, 0);
			assert_int_equal(srv.sret, 0);
			assert_int_equal(cli.sret, 0);
			assert_int_equal(pl_tls_info(srv.in, &si), 0);
			assert_int_equal(pl_tls_info(cli.in, &ci), 0);
			assert_int_equal(si.resumed, round == 1);
			assert_int_equal(ci.resumed, round == 1);
			if (round == 0)
				assert_non_null(sess);
			side_close(&srv);
			side_close(&cli);
			close(sv[0]);
			close(sv[1]);
		}
		SSL_SESSION_free(sess);
		SSL_CTX_free(sctx);
		SSL_CTX_free(cctx);
	}
}

/* A silent peer, a non-TLS peer, a peer that hangs up. */
static void test_prot_tls_handshake_failures(void **state)
{
	SSL_CTX *sctx = server_ctx(0, 0);
	struct protstream *in, *out;
	const char *why;
	uint64_t t0, dt;
	int sv[2];

	(void)state;
	for (int i = 0; i < 3; i++) {
		t_socketpair(sv);
		in = prot_new(sv[0], 0);
		out = prot_new(sv[0], 1);
		if (i == 1)
			assert_int_equal(
				write(sv[1], "GET / HTTP/1.0\r\n\r\n", 18), 18);
		if (i == 2)
			shutdown(sv[1], SHUT_WR);
		t0 = t_now_ms();
		why = NULL;
		switch (i) {
		case 0:
			assert_int_equal(
				pl_tls_accept(in, out, sctx, 300, &why),
				-ETIMEDOUT);
			dt = t_now_ms() - t0;
			assert_true(dt >= 280 && dt < 3000);
			assert_string_equal(why,
					    "TLS handshake failed: timed out");
			break;
		case 1:
			assert_int_equal(
				pl_tls_accept(in, out, sctx, 5000, &why),
				-EPROTO);
			assert_non_null(strstr(why, "TLS handshake failed: "));
			break;
		default:
			assert_int_equal(
				pl_tls_accept(in, out, sctx, 5000, &why),
				-ECONNRESET);
			assert_string_equal(why, "TLS handshake failed: "
						 "connection closed by peer");
			break;
		}
		assert_string_equal(prot_error(in), why);
		assert_int_equal(prot_getc(in), EOF);
		assert_int_equal(prot_puts(out, "plaintext"), EOF);
		assert_int_equal(pl_tls_accept(in, out, sctx, 300, NULL), -EIO);
		prot_free(in);
		prot_free(out);
		close(sv[0]);
		close(sv[1]);
	}
	SSL_CTX_free(sctx);
}

/*
 * A hand-driven client over memory BIOs and a blocking socket, so the
 * test can send records that are corrupt, cut short or well formed.
 */
struct mpeer {
	SSL *ssl;
	BIO *r, *w;
	int fd;
};

static void mp_flush(struct mpeer *m)
{
	char buf[16384];
	int n;

	while ((n = BIO_read(m->w, buf, sizeof(buf))) > 0)
		assert_int_equal(send(m->fd, buf, (size_t)n, MSG_NOSIGNAL), n);
}

static void mp_open(struct mpeer *m, int fd, SSL_CTX *ctx)
{
	m->fd = fd;
	m->ssl = SSL_new(ctx);
	m->r = BIO_new(BIO_s_mem());
	m->w = BIO_new(BIO_s_mem());
	SSL_set_bio(m->ssl, m->r, m->w);
	SSL_set_connect_state(m->ssl);
}

/* Run the client handshake; the server side runs in another fiber. */
static int mp_handshake_fiber(void *arg)
{
	struct mpeer *m = arg;
	char buf[16384];

	for (;;) {
		int r = SSL_do_handshake(m->ssl);
		ssize_t n;

		mp_flush(m);
		if (r == 1)
			return 0;
		if (SSL_get_error(m->ssl, r) != SSL_ERROR_WANT_READ)
			return -1;
		n = ur_recv(m->fd, buf, sizeof(buf), 0);
		if (n <= 0)
			return -2;
		BIO_write(m->r, buf, (int)n);
	}
}

/* One application record of text, as wire bytes in *out. */
static size_t mp_record(struct mpeer *m, const char *text, unsigned char *out,
			size_t cap)
{
	int n;

	assert_int_equal(SSL_write(m->ssl, text, (int)strlen(text)),
			 (int)strlen(text));
	n = BIO_read(m->w, out, (int)cap);
	assert_true(n > 5);
	return (size_t)n;
}

struct acc {
	struct protstream *in, *out;
	SSL_CTX *ctx;
	int ret;
};

static int accept_fiber(void *arg)
{
	struct acc *a = arg;

	a->ret = pl_tls_accept(a->in, a->out, a->ctx, 10000, NULL);
	return 0;
}

static void mp_connect(struct ur_loop *loop, struct mpeer *m, struct acc *a,
		       int sv[2], SSL_CTX *sctx, SSL_CTX *cctx)
{
	struct ur_fiber *f1, *f2;
	int r1 = -9;

	t_socketpair(sv);
	a->in = prot_new(sv[0], 0);
	a->out = prot_new(sv[0], 1);
	a->ctx = sctx;
	a->ret = -9;
	mp_open(m, sv[1], cctx);
	assert_int_equal(ur_fiber_spawn(loop, accept_fiber, a, NULL, &f1), 0);
	assert_int_equal(ur_fiber_spawn(loop, mp_handshake_fiber, m, NULL, &f2),
			 0);
	assert_int_equal(ur_fiber_join(f1, NULL), 0);
	assert_int_equal(ur_fiber_join(f2, &r1), 0);
	assert_int_equal(a->ret, 0);
	assert_int_equal(r1, 0);
}

static void mp_close(struct mpeer *m, struct acc *a, int sv[2])
{
	SSL_free(m->ssl);
	prot_free(a->in);
	prot_free(a->out);
	close(sv[0]);
	close(sv[1]);
}

/*
 * Corrupt, truncated and cleanly ended records: a clear error text and
 * EOF, or a plain EOF; never a crash, never a wait for more.
 */
static void test_prot_tls_bad_records(void **state)
{
	struct t_loop *tl = *state;
	SSL_CTX *sctx = server_ctx(0, 0), *cctx = client_ctx(0, NULL, NULL);
	unsigned char rec[512];
	struct mpeer m;
	struct acc a;
	size_t n;
	int sv[2];

	/* 1: a flipped ciphertext byte. */
	mp_connect(tl->loop, &m, &a, sv, sctx, cctx);
	n = mp_record(&m, "hello\r\n", rec, sizeof(rec));
	rec[n / 2] ^= 0x40;
	assert_int_equal(send(sv[1], rec, n, 0), (ssize_t)n);
	assert_int_equal(prot_getc(a.in), EOF);
	assert_int_equal(errno, EBADMSG);
	assert_string_equal(prot_error(a.in),
			    "TLS error: decryption failed or bad record mac");
	assert_int_equal(prot_getc(a.in), EOF);
	mp_close(&m, &a, sv);

	/* 2: half a record, then the connection closes. */
	mp_connect(tl->loop, &m, &a, sv, sctx, cctx);
	n = mp_record(&m, "hello\r\n", rec, sizeof(rec));
	assert_int_equal(send(sv[1], rec, n / 2, 0), (ssize_t)(n / 2));
	shutdown(sv[1], SHUT_WR);
	assert_int_equal(prot_getc(a.in), EOF);
	assert_int_equal(errno, ECONNRESET);
	assert_string_equal(prot_error(a.in),
			    "TLS error: unexpected eof while reading");
	mp_close(&m, &a, sv);

	/* 3: whole records, then a close without close_notify: EOF. */
	mp_connect(tl->loop, &m, &a, sv, sctx, cctx);
	n = mp_record(&m, "hello\r\n", rec, sizeof(rec));
	assert_int_equal(send(sv[1], rec, n, 0), (ssize_t)n);
	shutdown(sv[1], SHUT_WR);
	for (const char *p = "hello\r\n"; *p != '\0'; p++)
		assert_int_equal(prot_getc(a.in), *p);
	assert_int_equal(prot_getc(a.in), EOF);
	assert_string_equal(prot_error(a.in), PROT_EOF_STRING);
	mp_close(&m, &a, sv);

	/*
	 * 4: close_notify with the TCP connection left open: EOF at once
	 * (the read timeout would say "idle for too long" otherwise).
	 */
	mp_connect(tl->loop, &m, &a, sv, sctx, cctx);
	n = mp_record(&m, "bye\r\n", rec, sizeof(rec));
	assert_int_equal(send(sv[1], rec, n, 0), (ssize_t)n);
	assert_int_equal(SSL_shutdown(m.ssl), 0);
	mp_flush(&m);
	assert_int_equal(prot_settimeout(a.in, 3), 0);
	for (const char *p = "bye\r\n"; *p != '\0'; p++)
		assert_int_equal(prot_getc(a.in), *p);
	{
		uint64_t t0 = t_now_ms();

		assert_int_equal(prot_getc(a.in), EOF);
		assert_true(t_now_ms() - t0 < 1000);
	}
	assert_string_equal(prot_error(a.in), PROT_EOF_STRING);
	assert_true(prot_IS_EOF(a.in));
	mp_close(&m, &a, sv);

	/* 5: an alert record from the peer (fatal). */
	mp_connect(tl->loop, &m, &a, sv, sctx, cctx);
	{
		static const unsigned char junk[] = {
			0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5};

		assert_int_equal(send(sv[1], junk, sizeof(junk), 0),
				 (ssize_t)sizeof(junk));
	}
	assert_int_equal(prot_getc(a.in), EOF);
	assert_non_null(prot_error(a.in));
	assert_memory_equal(prot_error(a.in), "TLS error: ", 11);
	mp_close(&m, &a, sv);

	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

/*
 * Renegotiation is refused: a TLS 1.2 client that asks for it gets the
 * no_renegotiation alert at once, with no output from the server (the
 * alert is made while reading: it leaves without waiting for a flush),
 * and fails; the server never renegotiates.
 */
static int tp_renegotiating_client(struct tpeer *p)
{
	int r;

	if (tp_connect(p) < 0)
		return -1;
	if (tp_write_all(p->ssl, "hello\n", 6) < 0)
		return -2;
	if (SSL_renegotiate(p->ssl) != 1)
		return -3;
	r = SSL_do_handshake(p->ssl);
	if (r == 1)
		return -4; /* renegotiated: must not happen */
	p->err = ERR_peek_error();
	return 0;
}

struct reneg {
	struct protstream *in, *out;
	int got_eof;
};

static int reneg_reader(void *arg)
{
	struct reneg *r = arg;

	if (expect_line(r->in, "hello\n") != 0)
		return -1;
	/* The ClientHello arrives; no plaintext comes after it. */
	r->got_eof = prot_getc(r->in) == EOF;
	return 0;
}

static void test_prot_tls_renegotiation_refused(void **state)
{
	struct t_loop *tl = *state;
	SSL_CTX *sctx = server_ctx(TLS1_2_VERSION, 0);
	SSL_CTX *cctx = client_ctx(0, pki.ca, NULL);
	struct reneg r = {0};
	struct ur_fiber *f1;
	struct tpeer p;
	int sv[2], ret1 = -9;

	t_tcp_pair(sv);
	r.in = prot_new(sv[0], 0);
	r.out = prot_new(sv[0], 1);
	tpeer_start(&p, sv[1], cctx, tp_renegotiating_client, NULL);
	assert_int_equal(pl_tls_accept(r.in, r.out, sctx, 10000, NULL), 0);
	assert_int_equal(prot_settimeout(r.in, 5), 0);
	assert_int_equal(ur_fiber_spawn(tl->loop, reneg_reader, &r, NULL, &f1),
			 0);
	/* The client fails on the alert and answers with its own. */
	assert_int_equal(ur_fiber_join(f1, &ret1), 0);
	assert_int_equal(tpeer_join(&p), 0);
	assert_int_equal(ERR_GET_REASON(p.err), SSL_R_NO_RENEGOTIATION);
	assert_int_equal(ret1, 0);
	assert_true(r.got_eof);
	/* The client's fatal alert: never plaintext, never a time-out. */
	assert_non_null(prot_error(r.in));
	assert_memory_equal(prot_error(r.in), "TLS error: ", 11);
	tls_done(r.in, r.out, sv, sctx, cctx);
}

/* close_notify both ways with pl_tls_shutdown. */
static int shutdown_server(struct side *s)
{
	int ret = say(s->out, "* BYE\r\n");

	if (ret == 0)
		ret = pl_tls_shutdown(s->in, s->out, 5000);
	if (ret == 0 && prot_puts(s->out, "late\r\n") == 0 &&
	    prot_flush(s->out) != EOF)
		ret = -10; /* output after close_notify must fail */
	if (ret == 0 &&
	    strcmp(prot_error(s->out),
		   "TLS error: session closed (close_notify sent)") != 0)
		ret = -11;
	return ret;
}

static int shutdown_client(struct side *s)
{
	uint64_t t0;
	int ret = expect_line(s->in, "* BYE\r\n");

	/* EOF at once: the server still holds the TCP connection open. */
	t0 = t_now_ms();
	if (ret == 0 && prot_getc(s->in) != EOF)
		ret = -12;
	if (ret == 0 && (t_now_ms() - t0 > 1000 ||
			 strcmp(prot_error(s->in), PROT_EOF_STRING) != 0))
		ret = -13;
	if (ret == 0)
		ret = pl_tls_shutdown(s->in, s->out, 5000);
	return ret;
}

static void test_prot_tls_close_notify(void **state)
{
	struct t_loop *tl = *state;
	SSL_CTX *sctx = server_ctx(0, 0), *cctx = client_ctx(0, pki.ca, NULL);
	struct side srv, cli;
	int sv[2];

	t_tcp_pair(sv);
	side_open(&srv, sv[0], true, sctx);
	side_open(&cli, sv[1], false, cctx);
	srv.script = shutdown_server;
	cli.script = shutdown_client;
	run_sides(tl->loop, &srv, &cli);
	assert_int_equal(srv.ret, 0);
	assert_int_equal(cli.ret, 0);
	assert_int_equal(srv.sret, 0);
	assert_int_equal(cli.sret, 0);
	assert_int_equal(pl_tls_shutdown(NULL, srv.in, 100), -ENOTCONN);
	side_close(&srv);
	side_close(&cli);
	close(sv[0]);
	close(sv[1]);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

/*
 * close_notify from prot_free, seen by an OpenSSL socket-BIO client.
 * How the server ends:
 */
enum close_how {
	CLOSE_FREE,	 /* prot_free only: close_notify, best effort */
	CLOSE_SHUTDOWN,	 /* pl_tls_shutdown, then prot_free: one only */
	CLOSE_UNFLUSHED, /* output left unflushed: no close_notify */
	CLOSE_PEER_GONE, /* the peer ended without close_notify: none */
	CLOSE_CYRUS,	 /* prot_settls; the caller's SSL_shutdown sends it */
	CLOSE_NB_SENT,	 /* non-blocking stream, its queue sent: close_notify */
	CLOSE_NB_QUEUED, /* non-blocking stream, output still queued: none */
};

struct closecase {
	enum close_how how;
	int ssl_err; /* what the peer's SSL_read said after "* BYE" */
	int go[2];   /* CLOSE_NB_QUEUED: the peer reads on once told to */
};

/*
 * The client: a command, the reply, then the end as the server made
 * it. After a close_notify the raw connection must carry nothing more
 * (exactly one close_notify) up to the server's close.
 */
static int tp_close_client(struct tpeer *p)
{
	struct closecase *c = p->arg;
	char buf[64];
	int r;

	if (tp_connect(p) < 0)
		return -1;
	if (tp_write_all(p->ssl, "a LOGOUT\r\n", 10) < 0)
		return -2;
	if (tp_read_exact(p->ssl, buf, 7) < 0 || memcmp(buf, "* BYE\r\n", 7))
		return -3;
	if (c->how == CLOSE_PEER_GONE) {
		/* A truncated close: FIN, no close_notify; we still read. */
		shutdown(p->fd, SHUT_WR);
		return recv(p->fd, buf, sizeof(buf), 0) == 0 ? 0 : -4;
	}
	if (c->how == CLOSE_NB_QUEUED) {
		/* Not reading until the server is gone: its queue stays. */
		if (read(c->go[0], buf, 1) != 1)
			return -8;
		while ((r = SSL_read(p->ssl, buf, sizeof(buf))) > 0)
			;
		c->ssl_err = SSL_get_error(p->ssl, r);
		return 0;
	}
	r = SSL_read(p->ssl, buf, sizeof(buf));
	if (r > 0)
		return -5;
	c->ssl_err = SSL_get_error(p->ssl, r);
	if (c->ssl_err != SSL_ERROR_ZERO_RETURN)
		return 0;
	if (c->how == CLOSE_CYRUS && SSL_shutdown(p->ssl) != 1)
		return -6; /* our answer, for the caller's second call */
	return recv(p->fd, buf, sizeof(buf), 0) == 0 ? 0 : -7;
}

/*
 * "* BYE" through the queue of a non-blocking stream, and the loop run
 * until the queue is empty; with fill, more than a small socket buffer
 * takes follows it while the peer does not read, so some stays queued.
 */
static void nb_bye(struct ur_loop *loop, struct protstream *out, bool fill)
{
	static char junk[4 << 20];
	int v = 4096;
	uint64_t end = t_now_ms() + (fill ? 200 : 10000);

	assert_int_equal(
		setsockopt(out->fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)), 0);
	prot_NONBLOCK(out);
	assert_int_equal(prot_puts(out, "* BYE\r\n"), 0);
	assert_int_equal(prot_flush_internal(out, 0), 0);
	if (fill)
		assert_int_equal(prot_write(out, junk, sizeof(junk)), 0);
	while (t_now_ms() < end && (fill || prot_queued(out) > 0))
		assert_true(ur_loop_run_once(loop, 10 * 1000 * 1000) >= 0);
	assert_null(prot_error(out));
	if (fill)
		assert_true(prot_queued(out) > 0);
	else
		assert_int_equal(prot_queued(out), 0);
}

/*
 * Free out first and ask in, which holds the session still, whether
 * close_notify went; then run the loop, so that the cancelled send of a
 * dropped queue is reaped: until then it holds the socket open.
 */
static void nb_free(struct ur_loop *loop, struct protstream *in,
		    struct protstream *out, bool sent)
{
	struct pl_tls_info info;

	prot_free(out);
	assert_int_equal(pl_tls_info(in, &info), 0);
	assert_int_equal(info.close_sent, sent);
	prot_free(in);
	for (int i = 0; i < 5; i++)
		assert_true(ur_loop_run_once(loop, 10 * 1000 * 1000) >= 0);
}

static void close_case(struct ur_loop *loop, enum close_how how)
{
	SSL_CTX *sctx = server_ctx(0, 0), *cctx = client_ctx(0, pki.ca, NULL);
	struct closecase c = {.how = how, .ssl_err = -1};
	bool nb = how == CLOSE_NB_SENT || how == CLOSE_NB_QUEUED;
	bool lost = how == CLOSE_UNFLUSHED || how == CLOSE_NB_QUEUED;
	struct protstream *in, *out;
	struct pl_tls_info info;
	struct tpeer p;
	SSL *ssl = NULL;
	int sv[2];

	t_tcp_pair(sv);
	assert_int_equal(pipe(c.go), 0);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	tpeer_start(&p, sv[1], cctx, tp_close_client, &c);
	if (how == CLOSE_CYRUS) {
		ssl = SSL_new(sctx);
		assert_int_equal(SSL_set_fd(ssl, sv[0]), 1);
		assert_int_equal(SSL_accept(ssl), 1);
		assert_int_equal(prot_settls(in, ssl), 0);
		assert_int_equal(prot_settls(out, ssl), 0);
	} else {
		assert_int_equal(pl_tls_accept(in, out, sctx, 10000, NULL), 0);
	}
	assert_int_equal(expect_line(in, "a LOGOUT\r\n"), 0);
	if (nb)
		nb_bye(loop, out, how == CLOSE_NB_QUEUED);
	else
		assert_int_equal(say(out, "* BYE\r\n"), 0);
	assert_int_equal(pl_tls_info(out, &info), 0);
	assert_false(info.close_sent);
	assert_int_equal(info.peer_end, PL_TLS_PEER_OPEN);
	switch (how) {
	case CLOSE_SHUTDOWN:
		assert_int_equal(pl_tls_shutdown(NULL, out, 1000), 0);
		assert_int_equal(pl_tls_info(in, &info), 0);
		assert_true(info.close_sent);
		break;
	case CLOSE_UNFLUSHED:
		assert_int_equal(prot_puts(out, "* lost\r\n"), 0);
		break;
	case CLOSE_PEER_GONE:
		/* Distinct from a clean end, though both read as EOF. */
		assert_int_equal(prot_getc(in), EOF);
		assert_string_equal(prot_error(in), PROT_EOF_STRING);
		assert_int_equal(pl_tls_info(in, &info), 0);
		assert_int_equal(info.peer_end, PL_TLS_PEER_EOF);
		break;
	default:
		break;
	}
	if (nb) {
		nb_free(loop, in, out, how == CLOSE_NB_SENT);
	} else {
		prot_free(in);
		prot_free(out);
	}
	if (how == CLOSE_CYRUS) {
		/* Cyrus's tls_reset_servertls, on the fd again. */
		int r = SSL_shutdown(ssl);

		if (r == 0)
			r = SSL_shutdown(ssl);
		assert_int_equal(r, 1);
		SSL_free(ssl);
	}
	assert_int_equal(write(c.go[1], "g", 1), 1);
	close(sv[0]);
	assert_int_equal(tpeer_join(&p), 0);
	if (how != CLOSE_PEER_GONE)
		assert_int_equal(c.ssl_err,
				 lost ? SSL_ERROR_SSL : SSL_ERROR_ZERO_RETURN);
	close(c.go[0]);
	close(c.go[1]);
	close(sv[1]);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

static void test_prot_tls_close_notify_on_free(void **state)
{
	struct ur_loop *loop = t_loop_of(state);

	close_case(loop, CLOSE_FREE);
	close_case(loop, CLOSE_SHUTDOWN);
	close_case(loop, CLOSE_UNFLUSHED);
	close_case(loop, CLOSE_PEER_GONE);
	close_case(loop, CLOSE_CYRUS);
}

/*
 * A non-blocking write stream: close_notify goes out once all it flushed
 * has been sent, and not while some of it is still queued (prot_free
 * drops the queue: a close_notify after it would hide the loss).
 */
static void test_prot_tls_close_notify_nonblocking(void **state)
{
	struct ur_loop *loop = t_loop_of(state);

	close_case(loop, CLOSE_NB_SENT);
	close_case(loop, CLOSE_NB_QUEUED);
}

/*
 * TLS 1.3 KeyUpdate with update_requested: our answer leaves while the
 * server is only reading (OpenSSL alone would hold it until the next
 * write), and output after it is in the new keys.
 */
static void ku_msg_cb(int write_p, int version, int content_type,
		      const void *buf, size_t len, SSL *ssl, void *arg)
{
	(void)version;
	(void)ssl;
	if (!write_p && content_type == SSL3_RT_HANDSHAKE && len > 0 &&
	    *(const unsigned char *)buf == SSL3_MT_KEY_UPDATE)
		(*(int *)arg)++;
}

static int tp_key_update_client(struct tpeer *p)
{
	struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
	int seen = 0, r;
	char buf[16];

	if (tp_connect(p) < 0)
		return -1;
	SSL_set_msg_callback(p->ssl, ku_msg_cb);
	SSL_set_msg_callback_arg(p->ssl, &seen);
	SSL_clear_mode(p->ssl, SSL_MODE_AUTO_RETRY);
	if (SSL_key_update(p->ssl, SSL_KEY_UPDATE_REQUESTED) != 1)
		return -2;
	if (tp_write_all(p->ssl, "ping\n", 5) < 0)
		return -3;
	/* Tickets, then the server's KeyUpdate; no application data. */
	while (seen == 0) {
		if (poll(&pfd, 1, 3000) != 1)
			return -4; /* it did not come without a write */
		r = SSL_read(p->ssl, buf, sizeof(buf));
		if (r > 0)
			return -5;
		if (SSL_get_error(p->ssl, r) != SSL_ERROR_WANT_READ)
			return -6;
	}
	SSL_set_mode(p->ssl, SSL_MODE_AUTO_RETRY);
	if (tp_write_all(p->ssl, "next\n", 5) < 0)
		return -7;
	if (tp_read_exact(p->ssl, buf, 5) < 0 || memcmp(buf, "pong\n", 5))
		return -8;
	return seen == 1 ? 0 : -9;
}

static void test_prot_tls_key_update_answered(void **state)
{
	SSL_CTX *sctx = server_ctx(TLS1_3_VERSION, 0);
	SSL_CTX *cctx = client_ctx(0, pki.ca, NULL);
	struct protstream *in, *out;
	struct pl_tls_info info;
	struct tpeer p;
	int sv[2];

	(void)state;
	t_tcp_pair(sv);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	tpeer_start(&p, sv[1], cctx, tp_key_update_client, NULL);
	assert_int_equal(pl_tls_accept(in, out, sctx, 10000, NULL), 0);
	assert_int_equal(prot_settimeout(in, 10), 0);
	assert_int_equal(expect_line(in, "ping\n"), 0);
	/* Only reading: the client sees our KeyUpdate meanwhile. */
	assert_int_equal(expect_line(in, "next\n"), 0);
	assert_int_equal(say(out, "pong\n"), 0);
	assert_int_equal(tpeer_join(&p), 0);
	assert_int_equal(pl_tls_info(in, &info), 0);
	assert_int_equal(info.held, 0);
	tls_done(in, out, sv, sctx, cctx);
}

/*
 * KeyUpdate answers while another fiber streams output: the answer
 * either leaves at once (the writer between flushes; its next flush
 * waits for that send) or with the writer's next flush (a flush under
 * way), never inside another record. The peer decrypts every byte, so
 * any misordering shows as a bad record MAC.
 */
#define KU_ROUNDS 16
#define KU_BULK	  (KU_ROUNDS * 65536)

static int tp_key_update_bulk_client(struct tpeer *p)
{
	unsigned char *b = malloc(65536);
	int seen = 0, ret = tp_connect(p);

	if (b == NULL)
		ret = -1;
	if (ret == 0) {
		SSL_set_msg_callback(p->ssl, ku_msg_cb);
		SSL_set_msg_callback_arg(p->ssl, &seen);
	}
	for (int i = 0; ret == 0 && i < KU_ROUNDS; i++) {
		if (SSL_key_update(p->ssl, SSL_KEY_UPDATE_REQUESTED) != 1 ||
		    tp_write_all(p->ssl, "ping\n", 5) < 0)
			ret = -2;
		if (ret == 0 && tp_read_exact(p->ssl, b, 65536) < 0)
			ret = -3;
		for (size_t k = 0; ret == 0 && k < 65536; k++)
			if (b[k] != pattern((size_t)i * 65536 + k, 4))
				ret = -4;
	}
	if (ret == 0 && tp_write_all(p->ssl, "done\n", 5) < 0)
		ret = -5;
	if (ret == 0 && seen < 1)
		ret = -6; /* answers seen by the peer: at least one */
	free(b);
	return ret;
}

struct ku_bulk {
	struct protstream *in, *out;
	int pings;
};

static int ku_writer(void *arg)
{
	struct ku_bulk *k = arg;
	unsigned char *b = malloc(16384);
	int ret = b != NULL ? 0 : -1;

	for (size_t off = 0; ret == 0 && off < KU_BULK; off += 16384) {
		for (size_t j = 0; j < 16384; j++)
			b[j] = pattern(off + j, 4);
		if (prot_write(k->out, (char *)b, 16384) != 0 ||
		    prot_flush(k->out) != 0)
			ret = -2;
	}
	free(b);
	return ret;
}

static int ku_reader(void *arg)
{
	struct ku_bulk *k = arg;
	char line[16];

	while (prot_fgets(line, sizeof(line), k->in) != NULL) {
		if (strcmp(line, "done\n") == 0)
			return 0;
		if (strcmp(line, "ping\n") != 0)
			return -1;
		k->pings++;
	}
	return -2;
}

static void test_prot_tls_key_update_during_output(void **state)
{
	struct t_loop *tl = *state;
	SSL_CTX *sctx = server_ctx(TLS1_3_VERSION, 0);
	SSL_CTX *cctx = client_ctx(0, pki.ca, NULL);
	struct ku_bulk k = {0};
	struct ur_fiber *fw, *fr;
	int sv[2], rw = -9, rr = -9, buf = 16384;
	struct tpeer p;

	t_tcp_pair(sv);
	/* Small socket buffers: the writer's flushes wait for the peer. */
	(void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	(void)setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	k.in = prot_new(sv[0], 0);
	k.out = prot_new(sv[0], 1);
	tpeer_start(&p, sv[1], cctx, tp_key_update_bulk_client, NULL);
	assert_int_equal(pl_tls_accept(k.in, k.out, sctx, 10000, NULL), 0);
	assert_int_equal(prot_settimeout(k.in, 10), 0);
	assert_int_equal(ur_fiber_spawn(tl->loop, ku_writer, &k, NULL, &fw), 0);
	assert_int_equal(ur_fiber_spawn(tl->loop, ku_reader, &k, NULL, &fr), 0);
	assert_int_equal(ur_fiber_join(fw, &rw), 0);
	assert_int_equal(ur_fiber_join(fr, &rr), 0);
	assert_int_equal(tpeer_join(&p), 0);
	assert_int_equal(rw, 0);
	assert_int_equal(rr, 0);
	assert_int_equal(k.pings, KU_ROUNDS);
	tls_done(k.in, k.out, sv, sctx, cctx);
}

/*
 * The socket cannot take our KeyUpdate answer at once (its buffer is
 * full while the stream itself holds nothing): the answer stays with
 * the layer (pl_tls_info.held), the read goes on, and the next flush
 * sends it first. The hand-driven client decrypts the reply only if the
 * answer came, and came before it.
 */
static void test_prot_tls_key_update_socket_full(void **state)
{
	struct t_loop *tl = *state;
	SSL_CTX *sctx = server_ctx(TLS1_3_VERSION, 0);
	SSL_CTX *cctx = client_ctx(0, NULL, NULL);
	static unsigned char junk[65536], rec[512];
	struct pl_tls_info info;
	size_t filled = 0, n;
	struct mpeer m;
	struct acc a;
	char buf[64];
	int sv[2], seen = 0, r;
	ssize_t k;

	mp_connect(tl->loop, &m, &a, sv, sctx, cctx);
	SSL_set_msg_callback(m.ssl, ku_msg_cb);
	SSL_set_msg_callback_arg(m.ssl, &seen);
	/* The tickets first (they came with the handshake), then fill the
	 * server's direction with bytes the client will skip. */
	while ((k = recv(sv[1], rec, sizeof(rec), MSG_DONTWAIT)) > 0)
		assert_int_equal(BIO_write(m.r, rec, (int)k), (int)k);
	while ((k = send(sv[0], junk, sizeof(junk), MSG_DONTWAIT)) > 0)
		filled += (size_t)k;
	assert_true(filled > 0);
	assert_int_equal(SSL_key_update(m.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
	n = mp_record(&m, "ping\n", rec, sizeof(rec));
	assert_int_equal(send(sv[1], rec, n, 0), (ssize_t)n);
	assert_int_equal(expect_line(a.in, "ping\n"), 0);
	assert_int_equal(pl_tls_info(a.in, &info), 0);
	assert_true(info.held > 0); /* the answer, waiting */
	while (filled > 0) {
		k = recv(sv[1], junk,
			 filled < sizeof(junk) ? filled : sizeof(junk), 0);
		assert_true(k > 0);
		filled -= (size_t)k;
	}
	assert_int_equal(say(a.out, "pong\n"), 0);
	assert_int_equal(pl_tls_info(a.in, &info), 0);
	assert_int_equal(info.held, 0);
	/* Tickets, our KeyUpdate, then "pong" in the new keys. */
	for (r = 0; r <= 0;) {
		k = recv(sv[1], rec, sizeof(rec), 0);
		assert_true(k > 0);
		assert_int_equal(BIO_write(m.r, rec, (int)k), (int)k);
		r = SSL_read(m.ssl, buf, sizeof(buf));
		if (r <= 0)
			assert_int_equal(SSL_get_error(m.ssl, r),
					 SSL_ERROR_WANT_READ);
	}
	assert_int_equal(r, 5);
	assert_memory_equal(buf, "pong\n", 5);
	assert_int_equal(seen, 1);
	mp_close(&m, &a, sv);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

/*
 * Bulk on the wire. Our writes: 64 KiB written as four 16 KiB
 * prot_writes leave as four full records (16384 bytes of plaintext each,
 * not 4 KiB ones), seen in the peer's record headers. Our reads: with
 * plenty of ciphertext queued, the read stream reads 64 KiB at a time
 * (printed: its peak memory), and once the input runs dry the bulk
 * buffer is gone again.
 */
struct rec_count {
	int full, app;
};

static void rec_cb(int write_p, int version, int content_type, const void *buf,
		   size_t len, SSL *ssl, void *arg)
{
	struct rec_count *rc = arg;
	const unsigned char *h = buf;

	(void)version;
	(void)ssl;
	/* Received record headers; TLS 1.3 data: inner length + type + tag */
	if (write_p || content_type != SSL3_RT_HEADER || len < 5 || h[0] != 23)
		return;
	rc->app++;
	if (((size_t)h[3] << 8 | h[4]) >= 16384 + 1 + 16)
		rc->full++;
}

static int tp_records_client(struct tpeer *p)
{
	struct rec_count *rc = p->arg;
	unsigned char *b = malloc(BULK);
	int ret = tp_connect(p);

	if (b == NULL)
		ret = -1;
	if (ret == 0) {
		SSL_set_msg_callback(p->ssl, rec_cb);
		SSL_set_msg_callback_arg(p->ssl, rc);
		ret = tp_read_exact(p->ssl, b, 65536);
	}
	for (size_t k = 0; ret == 0 && k < 65536; k++)
		if (b[k] != pattern(k, 5))
			ret = -2;
	for (size_t k = 0; ret == 0 && k < BULK; k++)
		b[k] = pattern(k, 6);
	if (ret == 0)
		ret = tp_write_all(p->ssl, b, BULK);
	/* The server measures its idle read stream, then says "." to end. */
	if (ret == 0 && (tp_read_exact(p->ssl, b, 1) < 0 || b[0] != '.'))
		ret = -3;
	if (ret == 0 && SSL_shutdown(p->ssl) < 0)
		ret = -4;
	free(b);
	return ret;
}

static void test_prot_tls_bulk_records_and_reads(void **state)
{
	SSL_CTX *sctx = server_ctx(TLS1_3_VERSION, 0);
	SSL_CTX *cctx = client_ctx(0, pki.ca, NULL);
	unsigned char *b = malloc(BULK);
	struct protstream *in, *out;
	struct rec_count rc = {0};
	size_t got = 0, peak = 0, idle;
	struct tpeer p;
	int sv[2], queued = 0, n;

	(void)state;
	assert_non_null(b);
	t_tcp_pair(sv);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	tpeer_start(&p, sv[1], cctx, tp_records_client, &rc);
	assert_int_equal(pl_tls_accept(in, out, sctx, 10000, NULL), 0);
	for (size_t k = 0; k < 65536; k++)
		b[k] = pattern(k, 5);
	for (size_t off = 0; off < 65536; off += 16384)
		assert_int_equal(prot_write(out, (char *)b + off, 16384), 0);
	assert_int_equal(prot_flush(out), 0);
	/* Let the peer queue a good part of its 1 MiB before we read. */
	for (int i = 0; i < 500 && queued < 96 * 1024; i++) {
		usleep(10000);
		assert_int_equal(ioctl(sv[0], FIONREAD, &queued), 0);
	}
	while (got < BULK && (n = prot_read(in, (char *)b + got,
					    (unsigned)(BULK - got))) > 0) {
		got += (size_t)n;
		if (prot_memory(in) > peak)
			peak = prot_memory(in);
	}
	assert_int_equal(got, BULK);
	for (size_t k = 0; k < BULK; k++)
		assert_int_equal(b[k], pattern(k, 6));
	/* Dry: a non-blocking read finds nothing, as a wait would. */
	prot_NONBLOCK(in);
	errno = 0;
	assert_int_equal(prot_getc(in), EOF);
	assert_int_equal(errno, EAGAIN);
	prot_BLOCK(in);
	idle = prot_memory(in);
	assert_int_equal(say(out, "."), 0);
	assert_int_equal(prot_getc(in), EOF); /* close_notify */
	assert_int_equal(tpeer_join(&p), 0);
	fprintf(stderr,
		"records: %d of %d full; read stream: peak %zu B (queued %d B "
		"before reading), idle %zu B\n",
		rc.full, rc.app, peak, queued, idle);
	assert_int_equal(rc.full, 4);
	/* No 64 KiB bulk buffer (nor 16 KiB of anything) once dry. */
	assert_true(idle < 16384);
	free(b);
	tls_done(in, out, sv, sctx, cctx);
}

/*
 * Memory an idle connection keeps: after the handshake and after a bulk
 * transfer, the layer holds no buffer (pl_tls_info.held), and once the
 * stream waits again the whole connection (mallinfo2) is back within a
 * few KiB of where the handshake left it.
 */
struct idle_peer {
	int rounds;
};

static int tp_idle_client(struct tpeer *p)
{
	unsigned char *b = malloc(256 * 1024), hello[6];
	int ret = tp_connect(p);

	for (size_t k = 0; b != NULL && k < 256 * 1024; k++)
		b[k] = pattern(k, 3);
	if (b == NULL)
		ret = -1;
	if (ret == 0 && (tp_read_exact(p->ssl, hello, 6) < 0 ||
			 memcmp(hello, "* OK\r\n", 6) != 0))
		ret = -4;
	/* Small, then 256 KiB in one write, then small: echoed back. */
	for (int i = 0; ret == 0 && i < 3; i++) {
		size_t n = i == 1 ? 256 * 1024 : 10;

		ret = tp_write_all(p->ssl, b, n);
		if (ret == 0)
			ret = tp_read_exact(p->ssl, b, n);
		for (size_t k = 0; ret == 0 && k < n; k++)
			if (b[k] != pattern(k, 3))
				ret = -2;
	}
	/* The server measures its idle state, then says "." to end. */
	if (ret == 0 &&
	    (tp_read_exact(p->ssl, hello, 1) < 0 || hello[0] != '.'))
		ret = -5;
	if (ret == 0 && SSL_shutdown(p->ssl) < 0)
		ret = -3;
	free(b);
	return ret;
}

static size_t heap_used(void)
{
	return mallinfo2().uordblks;
}

static void test_prot_tls_idle_memory(void **state)
{
	SSL_CTX *sctx = server_ctx(0, 0), *cctx = client_ctx(0, pki.ca, NULL);
	unsigned char *b = malloc(256 * 1024);
	struct protstream *in, *out;
	struct pl_tls_info info;
	size_t heap[4];
	struct tpeer p;
	int sv[2];

	(void)state;
	assert_non_null(b);
	t_tcp_pair(sv);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	tpeer_start(&p, sv[1], cctx, tp_idle_client, NULL);
	assert_int_equal(pl_tls_accept(in, out, sctx, 10000, NULL), 0);
	assert_int_equal(pl_tls_info(in, &info), 0);
	assert_int_equal(info.held, 0); /* the handshake's 17 KiB read */
	assert_int_equal(say(out, "* OK\r\n"), 0);
	assert_int_equal(prot_settimeout(in, 10), 0);
	heap[0] = heap_used();
	for (int i = 0; i < 3; i++) {
		size_t n = i == 1 ? 256 * 1024 : 10, got = 0;
		int k;

		while (got < n && (k = prot_read(in, (char *)b + got,
						 (unsigned)(n - got))) > 0)
			got += (size_t)k;
		assert_int_equal(got, n);
		assert_int_equal(prot_write(out, (char *)b, (unsigned)n), 0);
		assert_int_equal(prot_flush(out), 0);
		assert_int_equal(pl_tls_info(in, &info), 0);
		assert_int_equal(info.held, 0);
		heap[1 + (i == 2)] = heap_used();
	}
	/* Idle: a non-blocking read that finds nothing, as a wait would. */
	prot_NONBLOCK(in);
	errno = 0;
	assert_int_equal(prot_getc(in), EOF);
	assert_int_equal(errno, EAGAIN);
	heap[3] = heap_used();
	prot_BLOCK(in);
	/* Idle costs the connection no read buffer (glibc's count: ASan's
	 * allocator is not in it, and there this holds trivially). */
	assert_true(heap[3] < heap[0] + 24 * 1024);
	assert_int_equal(say(out, "."), 0);
	fprintf(stderr,
		"idle TLS connection: layer holds %zu B; heap after handshake "
		"%zu B, after 256 KiB echo %zu B, after a 10 B echo %zu B, "
		"idle %zu B\n",
		info.held, heap[0], heap[1], heap[2], heap[3]);
	assert_int_equal(prot_getc(in), EOF); /* close_notify */
	assert_int_equal(tpeer_join(&p), 0);
	prot_free(in);
	prot_free(out);
	close(sv[0]);
	close(sv[1]);
	free(b);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

/*
 * Spec 5.7 #70: plaintext already decrypted (OpenSSL's buffer or ours)
 * makes prot_select report the stream without waiting.
 */
static int big_record_client(struct side *s)
{
	static char text[10000];

	memset(text, 'q', sizeof(text));
	if (prot_write(s->out, text, sizeof(text)) != 0 ||
	    prot_flush(s->out) != 0)
		return -1;
	return expect_line(s->in, "done\r\n");
}

static int select_server(struct side *s)
{
	struct protgroup *g = protgroup_new(1), *ready = NULL;
	char buf[512];
	size_t total = 0;
	int ret = 0, n;

	protgroup_insert(g, s->in);
	while (ret == 0 && total < 10000) {
		struct timeval tv = {2, 0};
		uint64_t t0 = t_now_ms();

		ready = NULL;
		if (prot_select(g, -1, &ready, NULL, &tv) != 1)
			ret = -1;
		protgroup_free(ready);
		/* After the first bytes the rest is local: no wait at all. */
		if (ret == 0 && total > 0 && t_now_ms() - t0 > 100)
			ret = -2;
		n = prot_read(s->in, buf, sizeof(buf));
		if (n <= 0)
			ret = -3;
		total += n > 0 ? (size_t)n : 0;
	}
	protgroup_free(g);
	return ret == 0 ? say(s->out, "done\r\n") : ret;
}

static void test_prot_tls_select_sees_decrypted(void **state)
{
	struct t_loop *tl = *state;
	SSL_CTX *sctx = server_ctx(0, 0), *cctx = client_ctx(0, pki.ca, NULL);
	struct side srv, cli;
	int sv[2];

	t_socketpair(sv);
	side_open(&srv, sv[0], true, sctx);
	side_open(&cli, sv[1], false, cctx);
	srv.script = select_server;
	cli.script = big_record_client;
	run_sides(tl->loop, &srv, &cli);
	assert_int_equal(srv.sret, 0);
	assert_int_equal(cli.sret, 0);
	side_close(&srv);
	side_close(&cli);
	close(sv[0]);
	close(sv[1]);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

/* prot_settls: the Cyrus contract and its misuses. */
static void test_prot_tls_settls_contract(void **state)
{
	SSL_CTX *sctx = server_ctx(0, 0);
	struct protstream *s;
	SSL *ssl;
	int sv[2];

	(void)state;
	t_socketpair(sv);
	/* NULL on a stream without TLS: nothing to do. */
	s = prot_new(sv[0], 1);
	assert_int_equal(prot_settls(s, NULL), 0);
	assert_null(s->tls_conn);
	/* A handshake that has not run: refused, and the stream is dead. */
	ssl = SSL_new(sctx);
	assert_int_equal(prot_settls(s, ssl), EOF);
	assert_string_equal(prot_error(s), "TLS handshake not complete");
	assert_int_equal(prot_puts(s, "plaintext"), EOF);
	assert_null(s->tls_conn);
	prot_free(s);
	SSL_free(ssl);
	/* Not on memory streams. */
	s = prot_readmap("abc", 3);
	assert_int_equal(pl_tls_accept(s, s, sctx, 100, NULL), -EINVAL);
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
	SSL_CTX_free(sctx);
}

/*
 * Cyrus path over memory BIOs the caller set up: prot_settls moves the
 * SSL to its own BIOs (taking the bytes the caller's BIO held), and an
 * owner that frees the SSL before the streams gets errors, not a crash.
 */
static void test_prot_tls_ssl_freed_first(void **state)
{
	struct t_loop *tl = *state;
	SSL_CTX *sctx = server_ctx(0, 0), *cctx = client_ctx(0, NULL, NULL);
	struct protstream *in, *out;
	struct ur_fiber *f1, *f2;
	unsigned char rec[256];
	struct mpeer srv, cli;
	int sv[2], r1 = -9, r2 = -9;
	size_t n;

	t_socketpair(sv);
	mp_open(&srv, sv[0], sctx);
	SSL_set_accept_state(srv.ssl);
	mp_open(&cli, sv[1], cctx);
	assert_int_equal(
		ur_fiber_spawn(tl->loop, mp_handshake_fiber, &srv, NULL, &f1),
		0);
	assert_int_equal(
		ur_fiber_spawn(tl->loop, mp_handshake_fiber, &cli, NULL, &f2),
		0);
	assert_int_equal(ur_fiber_join(f1, &r1), 0);
	assert_int_equal(ur_fiber_join(f2, &r2), 0);
	assert_int_equal(r1, 0);
	assert_int_equal(r2, 0);
	/* A record already in the caller's BIO must not be lost. */
	n = mp_record(&cli, "first\r\n", rec, sizeof(rec));
	assert_int_equal(BIO_write(srv.r, rec, (int)n), (int)n);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	assert_int_equal(prot_settls(in, srv.ssl), 0);
	assert_int_equal(prot_settls(out, srv.ssl), 0);
	assert_int_equal(prot_settls(out, srv.ssl), 0); /* same: no-op */
	assert_int_equal(expect_line(in, "first\r\n"), 0);
	n = mp_record(&cli, "second\r\n", rec, sizeof(rec));
	assert_int_equal(send(sv[1], rec, n, 0), (ssize_t)n);
	assert_int_equal(expect_line(in, "second\r\n"), 0);
	/* The owner frees it under the streams. */
	SSL_free(srv.ssl);
	assert_int_equal(prot_puts(out, "late\r\n"), 0);
	assert_int_equal(prot_flush(out), EOF);
	assert_string_equal(prot_error(out),
			    "TLS error: SSL freed under the stream");
	n = mp_record(&cli, "third\r\n", rec, sizeof(rec));
	assert_int_equal(send(sv[1], rec, n, 0), (ssize_t)n);
	assert_int_equal(prot_getc(in), EOF);
	assert_string_equal(prot_error(in),
			    "TLS error: SSL freed under the stream");
	prot_free(in);
	prot_free(out);
	SSL_free(cli.ssl);
	close(sv[0]);
	close(sv[1]);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

/* The kTLS probe agrees with the kernel, and the layer says which path. */
static void test_prot_tls_ktls_probe(void **state)
{
	struct t_loop *tl = *state;
	SSL_CTX *sctx = server_ctx(0, 0), *cctx = client_ctx(0, pki.ca, NULL);
	struct pl_tls_info info;
	struct side srv, cli;
	int sv[2], ret;
	bool direct;

	t_tcp_pair(sv);
	ret = setsockopt(sv[0], IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls"));
	direct = ret == 0;
	close(sv[0]);
	close(sv[1]);
	if (!direct)
		assert_int_equal(errno, ENOENT);
	assert_int_equal(pl_ktls_available(), direct);
	assert_int_equal(pl_ktls_available(), direct);
	fprintf(stderr, "kTLS: %s\n", direct ? "available" : "not here");

	/*
	 * Asking OpenSSL for kTLS: it offers the transmit keys to our BIO,
	 * which tries the kernel; without the module the setsockopt fails
	 * and records stay in userspace, the session unharmed (all a
	 * machine without the module can show).
	 */
	SSL_CTX_set_options(sctx, SSL_OP_ENABLE_KTLS);
	SSL_CTX_set_options(cctx, SSL_OP_ENABLE_KTLS);
	t_tcp_pair(sv);
	side_open(&srv, sv[0], true, sctx);
	side_open(&cli, sv[1], false, cctx);
	srv.script = greet_server;
	cli.script = greet_client;
	run_sides(tl->loop, &srv, &cli);
	assert_int_equal(srv.ret, 0);
	assert_int_equal(cli.ret, 0);
	assert_int_equal(srv.sret, 0);
	assert_int_equal(cli.sret, 0);
	assert_int_equal(pl_tls_info(srv.out, &info), 0);
	assert_int_equal(info.ktls_tx, direct);
	assert_false(info.ktls_rx); /* receive keys are always declined */
	if (!direct)
		assert_int_equal(info.ktls_error, -ENOENT);
	assert_int_equal(pl_tls_info(cli.out, &info), 0);
	fprintf(stderr, "kTLS client: tx %d, error %d\n", info.ktls_tx,
		info.ktls_error);
	/* More traffic and a clean close_notify both ways after it. */
	assert_int_equal(say(srv.out, "* after\r\n"), 0);
	assert_int_equal(expect_line(cli.in, "* after\r\n"), 0);
	assert_int_equal(say(cli.out, "a LOGOUT\r\n"), 0);
	assert_int_equal(expect_line(srv.in, "a LOGOUT\r\n"), 0);
	side_close(&srv); /* close_notify */
	assert_int_equal(prot_getc(cli.in), EOF);
	assert_int_equal(pl_tls_info(cli.in, &info), 0);
	assert_int_equal(info.peer_end, PL_TLS_PEER_CLOSE_NOTIFY);
	side_close(&cli);
	close(sv[0]);
	close(sv[1]);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
		T(test_prot_tls_handshake_versions),
		T(test_prot_tls_interop_socket_bio_peer),
		T(test_prot_tls_interop_client),
		T(test_prot_tls_starttls_drops_injection),
		T(test_prot_tls_client_certificates),
		T(test_prot_tls_server_verification),
		T(test_prot_tls_resumption),
		T(test_prot_tls_handshake_failures),
		T(test_prot_tls_bad_records),
		T(test_prot_tls_renegotiation_refused),
		T(test_prot_tls_close_notify),
		T(test_prot_tls_close_notify_on_free),
		T(test_prot_tls_close_notify_nonblocking),
		T(test_prot_tls_key_update_answered),
		T(test_prot_tls_key_update_during_output),
		T(test_prot_tls_key_update_socket_full),
		T(test_prot_tls_bulk_records_and_reads),
		T(test_prot_tls_idle_memory),
		T(test_prot_tls_select_sees_decrypted),
		T(test_prot_tls_settls_contract),
		T(test_prot_tls_ssl_freed_first),
		T(test_prot_tls_ktls_probe),
#undef T
	};
	int failed;

	signal(SIGPIPE, SIG_IGN);
	if (!(pl_features() & PL_HAVE_TLS)) {
		fprintf(stderr, "no TLS layer in this build: skipped\n");
		return 77;
	}
	t_require_loop();
	pki_make();
	failed = t_run_groups("prot-tls", tests,
			      sizeof(tests) / sizeof(tests[0]));
	pki_free();
	return failed;
}
