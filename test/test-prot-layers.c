/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-layers: TLS, SASL and DEFLATE stacked, switched mid-session. */
#include "t-helpers.h"
#include "t-sasl.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ringprot/prot-layer.h>
#include <ringprot/prot.h>

/*
 * A whole IMAP-like session between two ring fibers of one loop, with
 * real OpenSSL and libsasl2 on both ends: STARTTLS, AUTHENTICATE
 * DIGEST-MD5 (integrity or confidentiality layer), COMPRESS DEFLATE,
 * then megabytes of random bytes each way, written and read in odd
 * sizes, through all three layers at once.
 */

/* TLS: a CA and a server certificate for "localhost", in memory. */
static EVP_PKEY *ca_key, *srv_key;
static X509 *ca_cert, *srv_cert;

static X509 *cert_new(const char *cn, EVP_PKEY *key, X509 *issuer,
		      EVP_PKEY *issuer_key)
{
	X509 *x = X509_new();
	X509V3_CTX v3;
	X509_EXTENSION *e;
	static long serial = 1;

	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(
		x, X509_get_subject_name(issuer != NULL ? issuer : x));
	X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(
		NULL, &v3,
		issuer == NULL ? NID_basic_constraints : NID_subject_alt_name,
		issuer == NULL ? "critical,CA:TRUE" : "DNS:localhost");
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256());
	return x;
}

static SSL_CTX *tls_ctx(bool server)
{
	SSL_CTX *ctx =
		SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	assert_non_null(ctx);
	if (server) {
		assert_int_equal(SSL_CTX_use_certificate(ctx, srv_cert), 1);
		assert_int_equal(SSL_CTX_use_PrivateKey(ctx, srv_key), 1);
	} else {
		X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca_cert);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	return ctx;
}

/* One end of the session. */
struct end {
	bool server;
	int fd;
	struct protstream *in, *out;
	SSL_CTX *ctx;
	sasl_conn_t *conn;
	unsigned min_ssf, max_ssf;
	int step; /* how far it got */
	int ret;
	size_t bytes;
	unsigned seed;
};

/* xorshift: random bytes that do not compress. */
static unsigned char rnd_at(uint64_t *st)
{
	*st ^= *st << 13;
	*st ^= *st >> 7;
	*st ^= *st << 17;
	return (unsigned char)(*st >> 32);
}

#define BULK (4u << 20)

static const unsigned odd_sizes[] = {1,	    7,	 4095, 4096, 4097,  13,
				     65537, 333, 9001, 2,    16385, 1000};

struct pump {
	struct end *e;
	int ret;
};

static int writer_fiber(void *arg)
{
	struct pump *p = arg;
	unsigned char *buf = malloc(65537);
	uint64_t st = p->e->seed;
	size_t off = 0;
	int i = 0;

	p->ret = buf == NULL ? -1 : 0;
	while (p->ret == 0 && off < BULK) {
		size_t k = odd_sizes[i++ % 12];

		if (k > BULK - off)
			k = BULK - off;
		for (size_t j = 0; j < k; j++)
			buf[j] = rnd_at(&st);
		if (prot_write(p->e->out, (char *)buf, (unsigned)k) != 0)
			p->ret = -2;
		if (i % 7 == 0 && prot_flush(p->e->out) != 0)
			p->ret = -3;
		off += k;
	}
	if (p->ret == 0 && prot_flush(p->e->out) != 0)
		p->ret = -4;
	free(buf);
	return 0;
}

/* Read the peer's BULK bytes in odd sizes and check every one. */
static int read_bulk(struct end *e, unsigned peer_seed)
{
	char *buf = malloc(65537);
	uint64_t st = peer_seed;
	size_t got = 0;
	int i = 0, ret = 0;

	while (ret == 0 && got < BULK) {
		unsigned want = odd_sizes[(i++ + 5) % 12];
		int n = prot_read(e->in, buf, want);

		if (n <= 0) {
			ret = -5;
			break;
		}
		for (int j = 0; j < n; j++)
			if ((unsigned char)buf[j] != rnd_at(&st))
				ret = -6;
		got += (size_t)n;
	}
	e->bytes = got;
	free(buf);
	return ret;
}

static int bulk(struct end *e, unsigned peer_seed)
{
	struct pump w = {.e = e};
	struct ur_fiber *f;
	int ret;

	if (ur_fiber_spawn(NULL, writer_fiber, &w, NULL, &f) != 0)
		return -1;
	ret = read_bulk(e, peer_seed);
	if (ur_fiber_join(f, NULL) != 0)
		return -7;
	return ret != 0 ? ret : w.ret;
}

static int server_session(struct end *e)
{
	char line[256];
	int ret;

	e->step = 1;
	if (t_sasl_get_line(e->in, line, sizeof(line)) < 0 ||
	    strcmp(line, "a STARTTLS") != 0)
		return -1;
	prot_printf(e->out, "a OK begin TLS\r\n");
	ret = pl_tls_accept(e->in, e->out, e->ctx, 10000, NULL);
	if (ret < 0)
		return ret;
	e->step = 2;
	ret = t_sasl_server_auth(e->in, e->out, e->conn, "b");
	if (ret < 0)
		return ret;
	e->step = 3;
	if (t_sasl_get_line(e->in, line, sizeof(line)) < 0 ||
	    strcmp(line, "c COMPRESS DEFLATE") != 0)
		return -11;
	prot_printf(e->out, "c OK DEFLATE active\r\n");
	ret = pl_zlib_activate(e->in, e->out, -1);
	if (ret < 0)
		return ret;
	e->step = 4;
	/* The command the client pipelined, compressed, behind COMPRESS. */
	if (t_sasl_get_line(e->in, line, sizeof(line)) < 0 ||
	    strcmp(line, "d NOOP") != 0)
		return -12;
	prot_printf(e->out, "d OK\r\n");
	if (prot_flush(e->out) != 0)
		return -13;
	e->step = 5;
	return bulk(e, 2);
}

static int client_session(struct end *e)
{
	struct pl_tls_client_opts opts = {.server_name = "localhost",
					  .verify_name = true};
	char line[256];
	int ret;

	e->step = 1;
	prot_printf(e->out, "a STARTTLS\r\n");
	if (prot_flush(e->out) != 0 ||
	    t_sasl_get_line(e->in, line, sizeof(line)) ||
	    strcmp(line, "a OK begin TLS") != 0)
		return -1;
	ret = pl_tls_connect(e->in, e->out, e->ctx, &opts, 10000, NULL);
	if (ret < 0)
		return ret;
	e->step = 2;
	ret = t_sasl_client_auth(e->in, e->out, e->conn, "b", "DIGEST-MD5",
				 NULL);
	if (ret < 0)
		return ret;
	e->step = 3;
	/*
	 * Compress right behind the command, before the OK: the server has
	 * these bytes buffered when it switches and must inflate them.
	 */
	prot_printf(e->out, "c COMPRESS DEFLATE\r\n");
	if (prot_flush(e->out) != 0 || pl_zlib_start(e->out, -1) != 0 ||
	    prot_printf(e->out, "d NOOP\r\n") != 0 || prot_flush(e->out) != 0)
		return -11;
	if (t_sasl_get_line(e->in, line, sizeof(line)) < 0 ||
	    strcmp(line, "c OK DEFLATE active") != 0)
		return -12;
	if (pl_zlib_start(e->in, -1) != 0)
		return -13;
	e->step = 4;
	if (t_sasl_get_line(e->in, line, sizeof(line)) < 0 ||
	    strcmp(line, "d OK") != 0)
		return -14;
	e->step = 5;
	return bulk(e, 1);
}

static int end_fiber(void *arg)
{
	struct end *e = arg;

	e->ret = e->server ? server_session(e) : client_session(e);
	return 0;
}

static void end_open(struct end *e, int fd, bool server, const char *host,
		     unsigned ssf)
{
	memset(e, 0, sizeof(*e));
	e->server = server;
	e->fd = fd;
	e->in = prot_new(fd, 0);
	e->out = prot_new(fd, 1);
	e->ctx = tls_ctx(server);
	e->seed = server ? 1 : 2;
	if (server)
		t_sasl_server_new(host, &e->conn);
	else
		t_sasl_client_new(host, &e->conn);
	t_sasl_set_props(e->conn, ssf, ssf > 1 ? 256 : ssf, 65536);
}

static void end_close(struct end *e)
{
	prot_free(e->in);
	prot_free(e->out);
	sasl_dispose(&e->conn);
	SSL_CTX_free(e->ctx);
}

static void stacked_case(struct ur_loop *loop, unsigned ssf)
{
	const char *host = t_sasl_next_host();
	struct end srv, cli;
	struct ur_fiber *a, *b;
	struct pl_tls_info ti;
	struct pl_zlib_stats zs;
	int sv[2];

	t_tcp_pair(sv);
	end_open(&srv, sv[0], true, host, ssf);
	end_open(&cli, sv[1], false, host, ssf);
	assert_int_equal(ur_fiber_spawn(loop, end_fiber, &srv, NULL, &a), 0);
	assert_int_equal(ur_fiber_spawn(loop, end_fiber, &cli, NULL, &b), 0);
	assert_int_equal(ur_fiber_join(a, NULL), 0);
	assert_int_equal(ur_fiber_join(b, NULL), 0);
	if (srv.ret != 0 || cli.ret != 0)
		fail_msg("server %d at step %d, client %d at step %d", srv.ret,
			 srv.step, cli.ret, cli.step);
	assert_int_equal(srv.bytes, BULK);
	assert_int_equal(cli.bytes, BULK);
	/* All three layers are on, in the Cyrus order. */
	assert_non_null(srv.in->tls_conn);
	assert_ptr_equal(srv.in->conn, srv.conn);
	assert_non_null(srv.in->zstrm);
	assert_non_null(srv.out->zstrm);
	assert_true(srv.in->saslssf >= (int)ssf);
	assert_int_equal(pl_tls_info(srv.in, &ti), 0);
	assert_int_equal(pl_zlib_stats(srv.out, &zs), 0);
	assert_true(zs.plain >= BULK);
	assert_true(zs.stored > 0); /* random data: stored blocks */
	/* No layer may be pushed under the others now. */
	assert_int_equal(pl_sasl_start(srv.out, cli.conn), -EALREADY);
	assert_int_equal(pl_tls_accept(srv.in, srv.out, srv.ctx, 100, NULL),
			 -EALREADY);
	end_close(&srv);
	end_close(&cli);
	close(sv[0]);
	close(sv[1]);
}

static void test_prot_layers_stacked_auth_int(void **state)
{
	stacked_case(((struct t_loop *)*state)->loop, 1);
}

static void test_prot_layers_stacked_auth_conf(void **state)
{
	stacked_case(((struct t_loop *)*state)->loop, 2);
}

/* Layers go on in protocol order only: TLS, SASL, DEFLATE. */
static void test_prot_layers_order(void **state)
{
	struct protstream *in, *out;
	SSL_CTX *ctx = tls_ctx(true);
	SSL *ssl = SSL_new(ctx);
	sasl_conn_t *conn;
	int sv[2];

	(void)state;
	t_socketpair(sv);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	assert_int_equal(pl_zlib_start(in, -1), 0);
	assert_int_equal(pl_zlib_start(out, -1), 0);
	assert_int_equal(pl_tls_accept(in, out, ctx, 100, NULL), -EINVAL);
	assert_null(prot_error(in)); /* refused before anything happened */
	assert_int_equal(sasl_server_new("imap", "localhost", T_SASL_REALM,
					 NULL, NULL, NULL, 0, &conn),
			 SASL_OK);
	/* An unauthenticated conn has SSF 0: nothing to push, no error. */
	assert_int_equal(pl_sasl_start(out, conn), 0);
	assert_int_equal(out->saslssf, 0);
	prot_unsetsasl(out);
	/* settls under DEFLATE: refused, and the stream is dead. */
	SSL_set_accept_state(ssl);
	assert_int_equal(prot_settls(out, ssl), EOF);
	prot_free(in);
	prot_free(out);
	SSL_free(ssl);
	sasl_dispose(&conn);
	SSL_CTX_free(ctx);
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
		T(test_prot_layers_stacked_auth_int),
		T(test_prot_layers_stacked_auth_conf),
		T(test_prot_layers_order),
#undef T
	};
	int failed;

	signal(SIGPIPE, SIG_IGN);
	if (pl_features() != (PL_HAVE_TLS | PL_HAVE_SASL | PL_HAVE_ZLIB)) {
		fprintf(stderr,
			"not all three layers in this build: skipped\n");
		return 77;
	}
	t_require_loop();
	if (t_sasl_init("layers") < 0)
		return 1;
	ca_key = EVP_EC_gen("P-256");
	srv_key = EVP_EC_gen("P-256");
	ca_cert = cert_new("layers CA", ca_key, NULL, NULL);
	srv_cert = cert_new("localhost", srv_key, ca_cert, ca_key);
	failed = t_run_groups("prot-layers", tests,
			      sizeof(tests) / sizeof(tests[0]));
	t_sasl_fini();
	X509_free(ca_cert);
	X509_free(srv_cert);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(srv_key);
	return failed;
}
