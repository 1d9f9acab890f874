/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-layers: TLS, SASL and DEFLATE stacked, switched mid-session. */
#include "t-helpers.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sasl/sasl.h>
#include <sasl/saslutil.h>

#include <ringprot/prot-layer.h>
#include <ringprot/prot.h>

extern char **environ;

/*
 * A whole IMAP-like session between two ring fibers of one loop, with
 * real OpenSSL and libsasl2 on both ends: STARTTLS, AUTHENTICATE
 * DIGEST-MD5 (integrity or confidentiality layer), COMPRESS DEFLATE,
 * then megabytes of random bytes each way, written and read in odd
 * sizes, through all three layers at once.
 */

#define REALM "ringprot.test"
#define USER  "bob"
#define PASS  "layers all the way down"

/* SASL: a sasldb made by saslpasswd2 in a temporary directory. */
static char tmpdir[64], sasldb_path[128], host[64];

static int getopt_cb(void *context, const char *plugin, const char *option,
		     const char **result, unsigned *len)
{
	(void)context;
	(void)plugin;
	if (strcmp(option, "sasldb_path") == 0)
		*result = sasldb_path;
	else if (strcmp(option, "pwcheck_method") == 0)
		*result = "auxprop";
	else if (strcmp(option, "auxprop_plugin") == 0)
		*result = "sasldb";
	else if (strcmp(option, "mech_list") == 0)
		*result = "DIGEST-MD5";
	else if (strcmp(option, "reauth_timeout") == 0)
		*result = "0";
	else
		return SASL_FAIL;
	if (len != NULL)
		*len = (unsigned)strlen(*result);
	return SASL_OK;
}

static int name_cb(void *context, int id, const char **result,
		   unsigned *len)
{
	(void)context;
	(void)id;
	*result = USER;
	if (len != NULL)
		*len = (unsigned)strlen(USER);
	return SASL_OK;
}

static int pass_cb(sasl_conn_t *conn, void *context, int id,
		   sasl_secret_t **psecret)
{
	static union {
		sasl_secret_t s;
		char space[sizeof(sasl_secret_t) + sizeof(PASS)];
	} secret;

	(void)conn;
	(void)context;
	(void)id;
	secret.s.len = strlen(PASS);
	memcpy(secret.s.data, PASS, sizeof(PASS));
	*psecret = &secret.s;
	return SASL_OK;
}

static int realm_cb(void *context, int id, const char **avail,
		    const char **result)
{
	(void)context;
	(void)id;
	(void)avail;
	*result = REALM;
	return SASL_OK;
}

/* libsasl2 stores every callback as int (*)(void). */
#define SASL_FN(f) ((int (*)(void))(void (*)(void))(f))

static sasl_callback_t global_cbs[] = {
	{SASL_CB_GETOPT, SASL_FN(getopt_cb), NULL},
	{SASL_CB_LIST_END, NULL, NULL},
};

static sasl_callback_t client_cbs[] = {
	{SASL_CB_USER, SASL_FN(name_cb), NULL},
	{SASL_CB_AUTHNAME, SASL_FN(name_cb), NULL},
	{SASL_CB_PASS, SASL_FN(pass_cb), NULL},
	{SASL_CB_GETREALM, SASL_FN(realm_cb), NULL},
	{SASL_CB_LIST_END, NULL, NULL},
};

static int make_sasldb(void)
{
	char *argv[] = {"saslpasswd2", "-p", "-c", "-f", sasldb_path,
			"-u",	       REALM, USER, NULL};
	posix_spawn_file_actions_t fa;
	const char *exe = access("/usr/sbin/saslpasswd2", X_OK) == 0
				  ? "/usr/sbin/saslpasswd2"
				  : "/usr/bin/saslpasswd2";
	int p[2], st;
	pid_t pid;

	if (pipe(p) < 0)
		return -1;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[0], 0);
	posix_spawn_file_actions_addclose(&fa, p[1]);
	if (posix_spawn(&pid, exe, &fa, NULL, argv, environ) != 0)
		return -1;
	posix_spawn_file_actions_destroy(&fa);
	close(p[0]);
	if (write(p[1], PASS, strlen(PASS)) != (ssize_t)strlen(PASS))
		return -1;
	close(p[1]);
	return waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
			       WEXITSTATUS(st) == 0
		       ? 0
		       : -1;
}

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
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN",
				   MBSTRING_ASC, (const unsigned char *)cn, -1,
				   -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(issuer != NULL ? issuer
								     : x));
	X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &v3,
				issuer == NULL ? NID_basic_constraints
					       : NID_subject_alt_name,
				issuer == NULL ? "critical,CA:TRUE"
					       : "DNS:localhost");
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256());
	return x;
}

static SSL_CTX *tls_ctx(bool server)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method()
					  : TLS_client_method());

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

static int get_line(struct protstream *in, char *line, size_t size)
{
	size_t n;

	if (prot_fgets(line, (unsigned)size, in) == NULL)
		return -1;
	n = strlen(line);
	if (n < 2 || strcmp(line + n - 2, "\r\n") != 0)
		return -1;
	line[n - 2] = '\0';
	return 0;
}

static int put_b64(struct protstream *out, const char *prefix,
		   const char *data, unsigned len)
{
	char b64[4096];
	unsigned n;

	if (sasl_encode64(data, len, b64, sizeof(b64), &n) != SASL_OK)
		return -1;
	return prot_printf(out, "%s%.*s\r\n", prefix, (int)n, b64) == 0 &&
			       prot_flush(out) == 0
		       ? 0
		       : -1;
}

static int server_sasl(struct end *e)
{
	char line[4096], dec[4096];
	const char *out = NULL;
	unsigned outlen = 0, declen = 0;
	int r;

	if (get_line(e->in, line, sizeof(line)) < 0 ||
	    strcmp(line, "b AUTHENTICATE DIGEST-MD5") != 0)
		return -1;
	r = sasl_server_start(e->conn, "DIGEST-MD5", NULL, 0, &out, &outlen);
	while (r == SASL_CONTINUE) {
		if (put_b64(e->out, "+ ", out, outlen) < 0 ||
		    get_line(e->in, line, sizeof(line)) < 0 ||
		    sasl_decode64(line, (unsigned)strlen(line), dec,
				  sizeof(dec), &declen) != SASL_OK)
			return -2;
		r = sasl_server_step(e->conn, dec, declen, &out, &outlen);
	}
	if (r != SASL_OK)
		return -3;
	if (outlen > 0 && (put_b64(e->out, "+ ", out, outlen) < 0 ||
			   get_line(e->in, line, sizeof(line)) < 0))
		return -4;
	prot_printf(e->out, "b OK authenticated\r\n");
	return pl_sasl_activate(e->in, e->out, e->conn);
}

static int client_sasl(struct end *e)
{
	char line[4096], dec[4096];
	const char *out = NULL, *mech = NULL;
	unsigned outlen = 0, declen = 0;
	int r;

	r = sasl_client_start(e->conn, "DIGEST-MD5", NULL, &out, &outlen,
			      &mech);
	if (r != SASL_CONTINUE ||
	    prot_printf(e->out, "b AUTHENTICATE DIGEST-MD5\r\n") != 0 ||
	    prot_flush(e->out) != 0)
		return -1;
	for (;;) {
		if (get_line(e->in, line, sizeof(line)) < 0)
			return -2;
		if (strcmp(line, "b OK authenticated") == 0)
			break;
		if (strncmp(line, "+ ", 2) != 0 ||
		    sasl_decode64(line + 2, (unsigned)strlen(line + 2), dec,
				  sizeof(dec), &declen) != SASL_OK)
			return -3;
		r = sasl_client_step(e->conn, dec, declen, NULL, &out,
				     &outlen);
		if ((r != SASL_OK && r != SASL_CONTINUE) ||
		    put_b64(e->out, "", out, outlen) < 0)
			return -4;
	}
	return pl_sasl_activate(e->in, e->out, e->conn);
}

/* xorshift: random bytes that do not compress. */
static unsigned char rnd_at(uint64_t *st)
{
	*st ^= *st << 13;
	*st ^= *st >> 7;
	*st ^= *st << 17;
	return (unsigned char)(*st >> 32);
}

#define BULK (4u << 20)

static const unsigned odd_sizes[] = {1, 7, 4095, 4096, 4097, 13, 65537,
				     333, 9001, 2, 16385, 1000};

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
	if (get_line(e->in, line, sizeof(line)) < 0 ||
	    strcmp(line, "a STARTTLS") != 0)
		return -1;
	prot_printf(e->out, "a OK begin TLS\r\n");
	ret = pl_tls_accept(e->in, e->out, e->ctx, 10000, NULL);
	if (ret < 0)
		return ret;
	e->step = 2;
	ret = server_sasl(e);
	if (ret < 0)
		return ret;
	e->step = 3;
	if (get_line(e->in, line, sizeof(line)) < 0 ||
	    strcmp(line, "c COMPRESS DEFLATE") != 0)
		return -11;
	prot_printf(e->out, "c OK DEFLATE active\r\n");
	ret = pl_zlib_activate(e->in, e->out, -1);
	if (ret < 0)
		return ret;
	e->step = 4;
	/* The command the client pipelined, compressed, behind COMPRESS. */
	if (get_line(e->in, line, sizeof(line)) < 0 ||
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
	if (prot_flush(e->out) != 0 || get_line(e->in, line, sizeof(line)) ||
	    strcmp(line, "a OK begin TLS") != 0)
		return -1;
	ret = pl_tls_connect(e->in, e->out, e->ctx, &opts, 10000, NULL);
	if (ret < 0)
		return ret;
	e->step = 2;
	ret = client_sasl(e);
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
	if (get_line(e->in, line, sizeof(line)) < 0 ||
	    strcmp(line, "c OK DEFLATE active") != 0)
		return -12;
	if (pl_zlib_start(e->in, -1) != 0)
		return -13;
	e->step = 4;
	if (get_line(e->in, line, sizeof(line)) < 0 ||
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

static void end_open(struct end *e, int fd, bool server, unsigned ssf)
{
	sasl_security_properties_t sp = {.min_ssf = ssf,
					 .max_ssf = ssf > 1 ? 256 : ssf,
					 .maxbufsize = 65536};

	memset(e, 0, sizeof(*e));
	e->server = server;
	e->fd = fd;
	e->in = prot_new(fd, 0);
	e->out = prot_new(fd, 1);
	e->ctx = tls_ctx(server);
	e->seed = server ? 1 : 2;
	if (server)
		assert_int_equal(sasl_server_new("imap", host, REALM, NULL,
						 NULL, NULL, SASL_SUCCESS_DATA,
						 &e->conn),
				 SASL_OK);
	else
		assert_int_equal(sasl_client_new("imap", host, NULL, NULL,
						 client_cbs, 0, &e->conn),
				 SASL_OK);
	assert_int_equal(sasl_setprop(e->conn, SASL_SEC_PROPS, &sp), SASL_OK);
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
	static unsigned pairs;
	struct end srv, cli;
	struct ur_fiber *a, *b;
	struct pl_tls_info ti;
	struct pl_zlib_stats zs;
	int sv[2];

	snprintf(host, sizeof(host), "l%u.%s", ++pairs, REALM);
	t_tcp_pair(sv);
	end_open(&srv, sv[0], true, ssf);
	end_open(&cli, sv[1], false, ssf);
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
	assert_int_equal(sasl_server_new("imap", "localhost", REALM, NULL, NULL,
					 NULL, 0, &conn),
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
		fprintf(stderr, "not all three layers in this build: skipped\n");
		return 77;
	}
	t_require_ring_op(IORING_OP_SENDMSG);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/ringprot-layers-XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return 1;
	snprintf(sasldb_path, sizeof(sasldb_path), "%s/sasldb2", tmpdir);
	ca_key = EVP_EC_gen("P-256");
	srv_key = EVP_EC_gen("P-256");
	ca_cert = cert_new("layers CA", ca_key, NULL, NULL);
	srv_cert = cert_new("localhost", srv_key, ca_cert, ca_key);
	failed = make_sasldb() < 0 ||
		 sasl_server_init(global_cbs, "ringprot-test") != SASL_OK ||
		 sasl_client_init(global_cbs) != SASL_OK;
	if (!failed)
		failed = t_run_groups("prot-layers", tests,
				      sizeof(tests) / sizeof(tests[0]));
	sasl_done();
	unlink(sasldb_path);
	strcat(sasldb_path, "-lock");
	unlink(sasldb_path);
	rmdir(tmpdir);
	X509_free(ca_cert);
	X509_free(srv_cert);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(srv_key);
	return failed;
}
