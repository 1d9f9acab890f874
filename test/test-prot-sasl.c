/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-sasl: SASL layers with the real libsasl2 client and server. */
#include "t-helpers.h"
#include "t-sasl.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ringprot/prot-layer.h>
#include <ringprot/prot.h>

/*
 * One end of an AUTHENTICATE exchange (t-sasl) over protstreams, then
 * pl_sasl_activate, then its script.
 */
struct end {
	struct protstream *in, *out;
	sasl_conn_t *conn;
	const char *mech;
	unsigned min_ssf, max_ssf, maxbuf;
	bool pipeline; /* client: send a protected command early */
	int ret;
	int (*script)(struct end *);
	int sret;
	void *arg;
	int fd;
};

static int end_fiber(void *arg)
{
	struct end *e = arg;

	if (e->mech == NULL)
		e->ret = t_sasl_server_auth(e->in, e->out, e->conn, "a");
	else
		e->ret =
			t_sasl_client_auth(e->in, e->out, e->conn, "a", e->mech,
					   e->pipeline ? "b NOOP\r\n" : NULL);
	e->sret = e->ret == 0 && e->script != NULL ? e->script(e) : 0;
	return 0;
}

static void end_open(struct end *e, int fd, bool server, const char *mech)
{
	static const char *host;

	if (server)
		host = t_sasl_next_host();
	memset(e, 0, sizeof(*e));
	e->fd = fd;
	e->in = prot_new(fd, 0);
	e->out = prot_new(fd, 1);
	e->mech = server ? NULL : mech;
	if (server)
		t_sasl_server_new(host, &e->conn);
	else
		t_sasl_client_new(host, &e->conn);
}

static void end_close(struct end *e)
{
	prot_free(e->in);
	prot_free(e->out);
	sasl_dispose(&e->conn);
}

/*
 * A server and a client end on a fresh socketpair (server on sv[0]),
 * the client authenticating with mech; both want SSF min_ssf..max_ssf.
 */
static void ends_open(struct end *srv, struct end *cli, int sv[2],
		      const char *mech, unsigned min_ssf, unsigned max_ssf)
{
	t_socketpair(sv);
	end_open(srv, sv[0], true, NULL);
	end_open(cli, sv[1], false, mech);
	srv->min_ssf = cli->min_ssf = min_ssf;
	srv->max_ssf = cli->max_ssf = max_ssf;
}

static void ends_close(struct end *srv, struct end *cli, int sv[2])
{
	end_close(srv);
	end_close(cli);
	close(sv[0]);
	close(sv[1]);
}

static void run_ends(struct ur_loop *loop, struct end *srv, struct end *cli)
{
	struct ur_fiber *a, *b;

	t_sasl_set_props(srv->conn, srv->min_ssf, srv->max_ssf, srv->maxbuf);
	t_sasl_set_props(cli->conn, cli->min_ssf, cli->max_ssf, cli->maxbuf);
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
	static const size_t sizes[] = {1,  4095,  4096, 4097,
				       17, 60000, 333,	8191};
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
			if ((unsigned char)buf[k] !=
			    pattern(got + (size_t)k, h->seed))
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

static void bulk_case(struct ur_loop *loop, unsigned min_ssf, unsigned max_ssf,
		      int *ssf_out)
{
	struct end srv, cli;
	int sv[2];

	ends_open(&srv, &cli, sv, "DIGEST-MD5", min_ssf, max_ssf);
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
	ends_close(&srv, &cli, sv);
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
	return prot_puts(e->out, "b NOOP\r\n") == 0 && prot_flush(e->out) == 0
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

		ends_open(&srv, &cli, sv, mechs[i], 0, 0);
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
		ends_close(&srv, &cli, sv);
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
		size_t len = (size_t)raw[off] << 24 |
			     (size_t)raw[off + 1] << 16 |
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

	ends_open(&srv, &cli, sv, "DIGEST-MD5", 1, 1);
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
	ends_close(&srv, &cli, sv);
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

	ends_open(&srv, &cli, sv, "DIGEST-MD5", 1, 256);
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
	ends_close(&srv, &cli, sv);
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
		if (ur_sleep_until(CLOCK_MONOTONIC,
				   ur_now_ns(CLOCK_MONOTONIC) + 100000) < 0)
			return -1;
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

	ends_open(&srv, &cli, sv, "DIGEST-MD5", 1, 1);
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
	assert_int_equal(ur_fiber_spawn(tl->loop, trickle_fiber, &tr, NULL, &f),
			 0);
	for (size_t i = 0; i < sizeof(text); i++)
		assert_int_equal(prot_getc(srv.in), (unsigned char)text[i]);
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(ret, 0);

	/* A flipped byte: the integrity check fails. */
	{
		const char *enc;
		unsigned enclen;

		assert_int_equal(
			sasl_encode(cli.conn, "x\r\n", 3, &enc, &enclen),
			SASL_OK);
		memcpy(wire, enc, enclen);
		wire[5] ^= 1;
		assert_int_equal(write(sv[1], wire, enclen), (ssize_t)enclen);
	}
	assert_int_equal(prot_getc(srv.in), EOF);
	assert_int_equal(errno, EBADMSG);
	assert_non_null(prot_error(srv.in));
	assert_memory_equal(prot_error(srv.in), "decoding error: ", 16);
	ends_close(&srv, &cli, sv);
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

	ends_open(&srv, &cli, sv, "DIGEST-MD5", 1, 1);
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
	ends_close(&srv, &cli, sv);
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
	t_require_loop();
	if (t_sasl_init("sasl") < 0)
		return 1;
	failed = t_run_groups("prot-sasl", tests,
			      sizeof(tests) / sizeof(tests[0]));
	t_sasl_fini();
	return failed;
}
