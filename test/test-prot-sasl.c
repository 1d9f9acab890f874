/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-sasl: SASL layers with the real libsasl2 client and server. */
#include "t-helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sasl/sasl.h>
#include <sasl/saslutil.h>

#include <ringprot/prot-layer.h>
#include <ringprot/prot.h>

extern char **environ;

/*
 * A sasldb in a temporary directory, made by saslpasswd2 (sasl2-bin), and
 * the server reading it through the sasldb auxprop plugin: the same path
 * a Cyrus daemon takes.
 */
#define REALM "ringprot.test"
#define USER  "alice"
#define PASS  "correct horse"

static char tmpdir[64];
static char sasldb_path[128];

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
		*result = "DIGEST-MD5 PLAIN SCRAM-SHA-1";
	else if (strcmp(option, "reauth_timeout") == 0)
		*result = "0"; /* each test authenticates afresh */
	else
		return SASL_FAIL;
	if (len != NULL)
		*len = (unsigned)strlen(*result);
	return SASL_OK;
}

/* libsasl2 stores every callback as int (*)(void). */
#define SASL_FN(f) ((int (*)(void))(void (*)(void))(f))

static sasl_callback_t server_cbs[] = {
	{SASL_CB_GETOPT, SASL_FN(getopt_cb), NULL},
	{SASL_CB_LIST_END, NULL, NULL},
};

static int simple_cb(void *context, int id, const char **result,
		     unsigned *len)
{
	(void)context;
	if (id != SASL_CB_USER && id != SASL_CB_AUTHNAME)
		return SASL_FAIL;
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

static int realm_cb(void *context, int id, const char **availrealms,
		    const char **result)
{
	(void)context;
	(void)id;
	(void)availrealms;
	*result = REALM;
	return SASL_OK;
}

static sasl_callback_t client_cbs[] = {
	{SASL_CB_USER, SASL_FN(simple_cb), NULL},
	{SASL_CB_AUTHNAME, SASL_FN(simple_cb), NULL},
	{SASL_CB_PASS, SASL_FN(pass_cb), NULL},
	{SASL_CB_GETREALM, SASL_FN(realm_cb), NULL},
	{SASL_CB_LIST_END, NULL, NULL},
};

/* saslpasswd2 -p -c -f <db> -u REALM USER, the password on stdin. */
static int make_sasldb(void)
{
	char *argv[] = {"saslpasswd2", "-p", "-c", "-f", sasldb_path,
			"-u",	       REALM, USER, NULL};
	static const char *const paths[] = {"/usr/sbin/saslpasswd2",
					    "/usr/bin/saslpasswd2"};
	posix_spawn_file_actions_t fa;
	int p[2], st;
	pid_t pid;
	const char *exe = NULL;

	for (int i = 0; i < 2; i++)
		if (access(paths[i], X_OK) == 0)
			exe = paths[i];
	if (exe == NULL || pipe(p) < 0)
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
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
	    WEXITSTATUS(st) != 0)
		return -1;
	return 0;
}

static void cleanup_sasldb(void)
{
	char path[160];

	unlink(sasldb_path);
	snprintf(path, sizeof(path), "%s-lock", sasldb_path);
	unlink(path);
	rmdir(tmpdir);
}

/*
 * One end of an AUTHENTICATE exchange (IMAP style, base64 lines) over
 * protstreams, then pl_sasl_activate, then its script.
 */
struct end {
	struct protstream *in, *out;
	sasl_conn_t *conn;
	const char *mech;
	unsigned min_ssf, max_ssf, maxbuf;
	bool pipeline;	    /* client: send a protected command early */
	int ret;
	int (*script)(struct end *);
	int sret;
	void *arg;
	int fd;
};

static int put_b64(struct protstream *out, const char *prefix,
		   const char *data, unsigned len)
{
	char b64[8192];
	unsigned n = 0;

	if (sasl_encode64(data, len, b64, sizeof(b64), &n) != SASL_OK)
		return -1;
	prot_printf(out, "%s%.*s\r\n", prefix, (int)n, b64);
	return 0;
}

static int get_line(struct protstream *in, char *line, size_t size)
{
	size_t n;

	if (prot_fgets(line, (unsigned)size, in) == NULL)
		return -1;
	n = strlen(line);
	if (n < 2 || strcmp(line + n - 2, "\r\n") != 0)
		return -2;
	line[n - 2] = '\0';
	return 0;
}

static void set_props(sasl_conn_t *conn, const struct end *e)
{
	sasl_security_properties_t sp = {0};

	sp.min_ssf = e->min_ssf;
	sp.max_ssf = e->max_ssf;
	sp.maxbufsize = e->maxbuf != 0 ? e->maxbuf : 65536;
	assert_int_equal(sasl_setprop(conn, SASL_SEC_PROPS, &sp), SASL_OK);
}

static int server_auth(struct end *e)
{
	char line[8192], dec[8192];
	const char *out = NULL;
	unsigned outlen = 0, declen = 0;
	int r;

	if (get_line(e->in, line, sizeof(line)) < 0 ||
	    strncmp(line, "a AUTHENTICATE ", 15) != 0)
		return -1;
	r = sasl_server_start(e->conn, line + 15, NULL, 0, &out, &outlen);
	while (r == SASL_CONTINUE) {
		if (put_b64(e->out, "+ ", out, outlen) < 0 ||
		    prot_flush(e->out) != 0 ||
		    get_line(e->in, line, sizeof(line)) < 0)
			return -2;
		if (sasl_decode64(line, (unsigned)strlen(line), dec,
				  sizeof(dec), &declen) != SASL_OK)
			return -3;
		r = sasl_server_step(e->conn, dec, declen, &out, &outlen);
	}
	if (r != SASL_OK) {
		prot_printf(e->out, "a NO %s\r\n", sasl_errdetail(e->conn));
		prot_flush(e->out);
		return -4;
	}
	if (outlen > 0) {
		/* Success data (SCRAM): one more round, empty answer. */
		if (put_b64(e->out, "+ ", out, outlen) < 0 ||
		    prot_flush(e->out) != 0 ||
		    get_line(e->in, line, sizeof(line)) < 0)
			return -5;
	}
	/* Reply first, then the layer: RFC 9051 6.2.2, spec 2.15. */
	prot_printf(e->out, "a OK authenticated\r\n");
	return pl_sasl_activate(e->in, e->out, e->conn);
}

static int client_auth(struct end *e)
{
	char line[8192], dec[8192];
	const char *out = NULL, *mech = NULL;
	unsigned outlen = 0, declen = 0;
	bool first;
	int r;

	r = sasl_client_start(e->conn, e->mech, NULL, &out, &outlen, &mech);
	if (r != SASL_OK && r != SASL_CONTINUE)
		return -1;
	first = out != NULL; /* client-first: answer the empty challenge */
	prot_printf(e->out, "a AUTHENTICATE %s\r\n", e->mech);
	if (prot_flush(e->out) != 0)
		return -2;
	for (;;) {
		if (get_line(e->in, line, sizeof(line)) < 0)
			return -3;
		if (strncmp(line, "a OK", 4) == 0)
			break;
		if (strncmp(line, "+ ", 2) != 0)
			return -4;
		if (first) {
			first = false;
			if (put_b64(e->out, "", out, outlen) < 0 ||
			    prot_flush(e->out) != 0)
				return -10;
			continue;
		}
		if (sasl_decode64(line + 2, (unsigned)strlen(line + 2), dec,
				  sizeof(dec), &declen) != SASL_OK)
			return -5;
		r = sasl_client_step(e->conn, dec, declen, NULL, &out,
				     &outlen);
		if (r != SASL_OK && r != SASL_CONTINUE)
			return -6;
		if (put_b64(e->out, "", out, outlen) < 0)
			return -7;
		if (r == SASL_OK && e->pipeline) {
			/*
			 * The client knows it is in (rspauth checked): it
			 * sends its next command protected at once, in the
			 * same packet as its last response.
			 */
			const char *enc;
			unsigned enclen;

			if (sasl_encode(e->conn, "b NOOP\r\n", 8, &enc,
					&enclen) != SASL_OK ||
			    prot_write(e->out, enc, enclen) != 0)
				return -8;
		}
		if (prot_flush(e->out) != 0)
			return -9;
	}
	return pl_sasl_activate(e->in, e->out, e->conn);
}

static int end_fiber(void *arg)
{
	struct end *e = arg;
	bool server = e->mech == NULL;

	e->ret = server ? server_auth(e) : client_auth(e);
	e->sret = e->ret == 0 && e->script != NULL ? e->script(e) : 0;
	return 0;
}

/*
 * Host names per connection pair: DIGEST-MD5 clients cache the last
 * nonce per host and would try a fast reauthentication otherwise.
 */
static char host[64];

static void end_open(struct end *e, int fd, bool server, const char *mech)
{
	static unsigned pairs;

	if (server)
		snprintf(host, sizeof(host), "h%u.%s", ++pairs, REALM);
	memset(e, 0, sizeof(*e));
	e->fd = fd;
	e->in = prot_new(fd, 0);
	e->out = prot_new(fd, 1);
	e->mech = server ? NULL : mech;
	if (server)
		assert_int_equal(sasl_server_new("imap", host, REALM,
						 NULL, NULL, NULL, SASL_SUCCESS_DATA, &e->conn),
				 SASL_OK);
	else
		assert_int_equal(sasl_client_new("imap", host, NULL,
						 NULL, client_cbs, 0, &e->conn),
				 SASL_OK);
}

static void end_close(struct end *e)
{
	prot_free(e->in);
	prot_free(e->out);
	sasl_dispose(&e->conn);
}

static void run_ends(struct ur_loop *loop, struct end *srv, struct end *cli)
{
	struct ur_fiber *a, *b;

	set_props(srv->conn, srv);
	set_props(cli->conn, cli);
	assert_int_equal(ur_fiber_spawn(loop, end_fiber, srv, NULL, &a), 0);
	assert_int_equal(ur_fiber_spawn(loop, end_fiber, cli, NULL, &b), 0);
	assert_int_equal(ur_fiber_join(a, NULL), 0);
	assert_int_equal(ur_fiber_join(b, NULL), 0);
}

static unsigned char pattern(size_t i, unsigned seed)
{
	return (unsigned char)((i * 197 + seed * 7 + (i >> 11)) & 0xff);
}

#define BULK (1u << 20)

/*
 * Both directions at once: this fiber writes BULK bytes in odd pieces
 * while a second fiber reads BULK bytes from the peer and checks them.
 */
struct half {
	struct protstream *s;
	unsigned seed;
	int ret;
};

static int write_half(void *arg)
{
	static const size_t sizes[] = {1, 4095, 4096, 4097, 17, 60000, 333,
				       8191};
	struct half *h = arg;
	unsigned char *b = malloc(BULK);
	size_t off = 0;
	int i = 0;

	for (size_t k = 0; k < BULK; k++)
		b[k] = pattern(k, h->seed);
	h->ret = 0;
	while (off < BULK && h->ret == 0) {
		size_t k = sizes[i++ % 8];

		if (k > BULK - off)
			k = BULK - off;
		if (prot_write(h->s, (char *)b + off, (unsigned)k) != 0)
			h->ret = -1;
		off += k;
		if (i % 5 == 0 && prot_flush(h->s) != 0)
			h->ret = -2;
	}
	if (h->ret == 0 && prot_flush(h->s) != 0)
		h->ret = -3;
	free(b);
	return 0;
}

static int read_half(void *arg)
{
	struct half *h = arg;
	char buf[3000];
	size_t got = 0;
	int n;

	h->ret = 0;
	while (got < BULK && (n = prot_read(h->s, buf, sizeof(buf))) > 0) {
		for (int k = 0; k < n; k++)
			if ((unsigned char)buf[k] != pattern(got + (size_t)k,
							     h->seed))
				h->ret = -1;
		got += (size_t)n;
	}
	if (got != BULK)
		h->ret = -2;
	return 0;
}

static int bulk_script(struct end *e)
{
	struct half w = {.s = e->out, .seed = e->mech == NULL ? 1u : 2u};
	struct half r = {.s = e->in, .seed = e->mech == NULL ? 2u : 1u};
	struct ur_fiber *f;

	if (ur_fiber_spawn(NULL, write_half, &w, NULL, &f) != 0)
		return -1;
	read_half(&r);
	if (ur_fiber_join(f, NULL) != 0)
		return -2;
	return w.ret != 0 ? -10 + w.ret : r.ret != 0 ? -20 + r.ret : 0;
}

static void bulk_case(struct ur_loop *loop, unsigned min_ssf,
		      unsigned max_ssf, int *ssf_out)
{
	struct end srv, cli;
	int sv[2];

	t_socketpair(sv);
	end_open(&srv, sv[0], true, NULL);
	end_open(&cli, sv[1], false, "DIGEST-MD5");
	srv.min_ssf = cli.min_ssf = min_ssf;
	srv.max_ssf = cli.max_ssf = max_ssf;
	srv.script = bulk_script;
	cli.script = bulk_script;
	run_ends(loop, &srv, &cli);
	assert_int_equal(srv.ret, 0);
	assert_int_equal(cli.ret, 0);
	assert_int_equal(srv.sret, 0);
	assert_int_equal(cli.sret, 0);
	assert_ptr_equal(srv.in->conn, srv.conn);
	assert_ptr_equal(srv.out->conn, srv.conn);
	assert_int_equal(srv.in->saslssf, srv.out->saslssf);
	assert_int_equal(cli.in->saslssf, srv.in->saslssf);
	*ssf_out = srv.in->saslssf;
	end_close(&srv);
	end_close(&cli);
	close(sv[0]);
	close(sv[1]);
}

/* DIGEST-MD5 auth-int: integrity layer (SSF 1), a megabyte each way. */
static void test_prot_sasl_digest_auth_int(void **state)
{
	struct t_loop *tl = *state;
	int ssf = -1;

	bulk_case(tl->loop, 1, 1, &ssf);
	assert_int_equal(ssf, 1);
}

/* DIGEST-MD5 auth-conf: confidentiality layer (SSF above 1). */
static void test_prot_sasl_digest_auth_conf(void **state)
{
	struct t_loop *tl = *state;
	int ssf = -1;

	bulk_case(tl->loop, 2, 256, &ssf);
	assert_true(ssf > 1);
}

/* PLAIN and SCRAM-SHA-1 have no layer: SSF 0, nothing encoded. */
static int plain_script(struct end *e)
{
	char line[64];

	if (e->mech == NULL)
		return prot_fgets(line, sizeof(line), e->in) != NULL &&
				       strcmp(line, "b NOOP\r\n") == 0
			       ? 0
			       : -1;
	return prot_puts(e->out, "b NOOP\r\n") == 0 &&
			       prot_flush(e->out) == 0
		       ? 0
		       : -1;
}

static void test_prot_sasl_mechanisms_without_layer(void **state)
{
	struct t_loop *tl = *state;
	static const char *const mechs[] = {"PLAIN", "SCRAM-SHA-1"};

	for (int i = 0; i < 2; i++) {
		struct end srv, cli;
		int sv[2];

		t_socketpair(sv);
		end_open(&srv, sv[0], true, NULL);
		end_open(&cli, sv[1], false, mechs[i]);
		srv.script = plain_script;
		cli.script = plain_script;
		run_ends(tl->loop, &srv, &cli);
		assert_int_equal(srv.ret, 0);
		assert_int_equal(cli.ret, 0);
		assert_int_equal(srv.sret, 0);
		assert_int_equal(cli.sret, 0);
		assert_int_equal(srv.in->saslssf, 0);
		assert_int_equal(srv.out->saslssf, 0);
		assert_ptr_equal(srv.out->conn, srv.conn);
		assert_int_equal(srv.out->maxplain, PROT_BUFSIZE);
		/* Nothing encoded: the wire carries the bytes as they are. */
		assert_int_equal(prot_puts(cli.out, "raw\r\n"), 0);
		assert_int_equal(prot_flush(cli.out), 0);
		{
			char got[8] = {0};

			assert_int_equal(read(sv[0], got, 5), 5);
			assert_string_equal(got, "raw\r\n");
		}
		end_close(&srv);
		end_close(&cli);
		close(sv[0]);
		close(sv[1]);
	}
}

/*
 * The peer's maximum: the server takes at most 1024-byte packets, so the
 * client's layer sends no packet longer than that, whatever is flushed.
 * The server reads the raw packets off its socket and decodes them with
 * its own sasl_decode.
 */
static int frames_client(struct end *e)
{
	static char text[50000];

	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = (char)pattern(i, 3);
	if (prot_write(e->out, text, 7) != 0 || prot_flush(e->out) != 0 ||
	    prot_write(e->out, text + 7, sizeof(text) - 7) != 0 ||
	    prot_flush(e->out) != 0)
		return -1;
	shutdown(e->fd, SHUT_WR);
	return 0;
}

static int frames_server(struct end *e)
{
	unsigned char *raw = malloc(200000);
	size_t n = 0, off = 0, plain = 0, frames = 0;
	ssize_t r;
	int ret = 0;

	while ((r = ur_recv(e->fd, raw + n, 200000 - n, 0)) > 0)
		n += (size_t)r;
	while (ret == 0 && off + 4 <= n) {
		size_t len = (size_t)raw[off] << 24 | (size_t)raw[off + 1] << 16 |
			     (size_t)raw[off + 2] << 8 | raw[off + 3];
		const char *dec;
		unsigned declen;

		if (len > 1024 || off + 4 + len > n)
			ret = -1;
		else if (sasl_decode(e->conn, (char *)raw + off, 4 + len, &dec,
				     &declen) != SASL_OK)
			ret = -2;
		for (unsigned k = 0; ret == 0 && k < declen; k++)
			if ((unsigned char)dec[k] != pattern(plain + k, 3))
				ret = -3;
		plain += declen;
		off += 4 + len;
		frames++;
	}
	if (ret == 0 && (off != n || plain != 50000 || frames < 49))
		ret = -4;
	free(raw);
	return ret;
}

static void test_prot_sasl_packets_within_peer_max(void **state)
{
	struct t_loop *tl = *state;
	struct end srv, cli;
	const void *v;
	int sv[2];

	t_socketpair(sv);
	end_open(&srv, sv[0], true, NULL);
	end_open(&cli, sv[1], false, "DIGEST-MD5");
	srv.min_ssf = cli.min_ssf = 1;
	srv.max_ssf = cli.max_ssf = 1;
	srv.maxbuf = 1024;
	srv.script = frames_server;
	cli.script = frames_client;
	run_ends(tl->loop, &srv, &cli);
	assert_int_equal(srv.ret, 0);
	assert_int_equal(cli.ret, 0);
	assert_int_equal(cli.sret, 0);
	assert_int_equal(srv.sret, 0);
	assert_int_equal(sasl_getprop(cli.conn, SASL_MAXOUTBUF, &v), SASL_OK);
	assert_true(*(const unsigned *)v < 1024);
	assert_int_equal(cli.out->maxplain, (int)*(const unsigned *)v);
	end_close(&srv);
	end_close(&cli);
	close(sv[0]);
	close(sv[1]);
}

/*
 * Reply, then switch; and a protected command the client sent in the
 * same packet as its last response is decoded by the new layer (spec 6
 * item 11), not read as plaintext.
 */
static int refeed_server(struct end *e)
{
	char line[64];

	if (prot_fgets(line, sizeof(line), e->in) == NULL ||
	    strcmp(line, "b NOOP\r\n") != 0)
		return -1;
	prot_printf(e->out, "b OK\r\n");
	return prot_flush(e->out) == 0 ? 0 : -2;
}

static int refeed_client(struct end *e)
{
	char line[64];

	return prot_fgets(line, sizeof(line), e->in) != NULL &&
			       strcmp(line, "b OK\r\n") == 0
		       ? 0
		       : -1;
}

static void test_prot_sasl_reply_then_switch(void **state)
{
	struct t_loop *tl = *state;
	struct end srv, cli;
	int sv[2];

	t_socketpair(sv);
	end_open(&srv, sv[0], true, NULL);
	end_open(&cli, sv[1], false, "DIGEST-MD5");
	srv.min_ssf = cli.min_ssf = 1;
	srv.max_ssf = cli.max_ssf = 256;
	cli.pipeline = true;
	srv.script = refeed_server;
	cli.script = refeed_client;
	run_ends(tl->loop, &srv, &cli);
	/* The client read "a OK authenticated" in plaintext: it got in. */
	assert_int_equal(srv.ret, 0);
	assert_int_equal(cli.ret, 0);
	assert_int_equal(srv.sret, 0);
	assert_int_equal(cli.sret, 0);
	assert_int_equal(pl_sasl_activate(srv.in, srv.out, srv.conn),
			 -EALREADY);
	end_close(&srv);
	end_close(&cli);
	close(sv[0]);
	close(sv[1]);
}

/*
 * Packets that arrive a few bytes at a time are decoded across reads,
 * and a corrupt packet is a clear error.
 */
struct trickle {
	int fd;
	const unsigned char *p;
	size_t n;
};

static int trickle_fiber(void *arg)
{
	struct trickle *t = arg;
	size_t off = 0, k = 1;

	while (off < t->n) {
		size_t m = k < t->n - off ? k : t->n - off;

		if (ur_send(t->fd, t->p + off, m, MSG_NOSIGNAL) != (ssize_t)m)
			return -1;
		off += m;
		k = k % 7 + 1;
		(void)ur_sleep_until(CLOCK_MONOTONIC,
				     ur_now_ns(CLOCK_MONOTONIC) + 100000);
	}
	return 0;
}

static int idle_script(struct end *e)
{
	(void)e;
	return 0;
}

static void test_prot_sasl_partial_and_corrupt_packets(void **state)
{
	struct t_loop *tl = *state;
	static char text[3000];
	unsigned char wire[8192];
	struct trickle tr;
	struct end srv, cli;
	struct ur_fiber *f;
	size_t n = 0;
	int sv[2], ret = -9;

	t_socketpair(sv);
	end_open(&srv, sv[0], true, NULL);
	end_open(&cli, sv[1], false, "DIGEST-MD5");
	srv.min_ssf = cli.min_ssf = 1;
	srv.max_ssf = cli.max_ssf = 1;
	srv.script = idle_script;
	cli.script = idle_script;
	run_ends(tl->loop, &srv, &cli);
	assert_int_equal(srv.ret, 0);
	assert_int_equal(cli.ret, 0);
	/* Three packets by hand, sent 1 to 7 bytes at a time. */
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = (char)('a' + i % 26);
	for (int p = 0; p < 3; p++) {
		const char *enc;
		unsigned enclen;

		assert_int_equal(sasl_encode(cli.conn, text + p * 1000, 1000,
					     &enc, &enclen),
				 SASL_OK);
		memcpy(wire + n, enc, enclen);
		n += enclen;
	}
	tr = (struct trickle){.fd = sv[1], .p = wire, .n = n};
	assert_int_equal(ur_fiber_spawn(tl->loop, trickle_fiber, &tr, NULL,
					&f),
			 0);
	for (size_t i = 0; i < sizeof(text); i++)
		assert_int_equal(prot_getc(srv.in), (unsigned char)text[i]);
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(ret, 0);

	/* A flipped byte: the integrity check fails. */
	{
		const char *enc;
		unsigned enclen;

		assert_int_equal(sasl_encode(cli.conn, "x\r\n", 3, &enc,
					     &enclen),
				 SASL_OK);
		memcpy(wire, enc, enclen);
		wire[5] ^= 1;
		assert_int_equal(write(sv[1], wire, enclen), (ssize_t)enclen);
	}
	assert_int_equal(prot_getc(srv.in), EOF);
	assert_int_equal(errno, EBADMSG);
	assert_non_null(prot_error(srv.in));
	assert_memory_equal(prot_error(srv.in), "decoding error: ", 16);
	end_close(&srv);
	end_close(&cli);
	close(sv[0]);
	close(sv[1]);
}

/* The setters' checks, and prot_unsetsasl. */
static void test_prot_sasl_setters(void **state)
{
	struct t_loop *tl = *state;
	struct protstream *s;
	struct end srv, cli;
	char got[16] = {0};
	int sv[2];

	t_socketpair(sv);
	s = prot_new(sv[0], 1);
	assert_int_equal(pl_sasl_start(s, NULL), -EINVAL);
	assert_int_equal(prot_setsasl(s, NULL), EOF);
	assert_non_null(prot_error(s)); /* never plaintext after a failure */
	assert_int_equal(prot_puts(s, "x"), EOF);
	prot_free(s);
	close(sv[0]);
	close(sv[1]);

	t_socketpair(sv);
	end_open(&srv, sv[0], true, NULL);
	end_open(&cli, sv[1], false, "DIGEST-MD5");
	srv.min_ssf = cli.min_ssf = 1;
	srv.max_ssf = cli.max_ssf = 1;
	srv.maxbuf = 2048;
	srv.script = idle_script;
	cli.script = idle_script;
	run_ends(tl->loop, &srv, &cli);
	assert_int_equal(cli.ret, 0);
	assert_true(cli.out->maxplain < 2048);
	assert_int_equal(prot_setsasl(cli.out, cli.conn), 0); /* same: ok */
	prot_unsetsasl(cli.out);
	assert_null(cli.out->conn);
	assert_int_equal(cli.out->saslssf, 0);
	assert_int_equal(cli.out->maxplain, PROT_BUFSIZE);
	assert_int_equal(prot_puts(cli.out, "plain\r\n"), 0);
	assert_int_equal(prot_flush(cli.out), 0);
	assert_int_equal(read(sv[0], got, 7), 7);
	assert_string_equal(got, "plain\r\n");
	end_close(&srv);
	end_close(&cli);
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
		T(test_prot_sasl_digest_auth_int),
		T(test_prot_sasl_digest_auth_conf),
		T(test_prot_sasl_mechanisms_without_layer),
		T(test_prot_sasl_packets_within_peer_max),
		T(test_prot_sasl_reply_then_switch),
		T(test_prot_sasl_partial_and_corrupt_packets),
		T(test_prot_sasl_setters),
#undef T
	};
	int failed;

	signal(SIGPIPE, SIG_IGN);
	if (!(pl_features() & PL_HAVE_SASL)) {
		fprintf(stderr, "no SASL layer in this build: skipped\n");
		return 77;
	}
	t_require_ring_op(IORING_OP_SENDMSG);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/ringprot-sasl-XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return 1;
	snprintf(sasldb_path, sizeof(sasldb_path), "%s/sasldb2", tmpdir);
	if (make_sasldb() < 0) {
		fprintf(stderr, "saslpasswd2 failed (sasl2-bin installed?)\n");
		cleanup_sasldb();
		return 1;
	}
	if (sasl_server_init(server_cbs, "ringprot-test") != SASL_OK ||
	    sasl_client_init(server_cbs) != SASL_OK) {
		cleanup_sasldb();
		return 1;
	}
	failed = t_run_groups("prot-sasl", tests,
			      sizeof(tests) / sizeof(tests[0]));
	sasl_done();
	cleanup_sasldb();
	return failed;
}
