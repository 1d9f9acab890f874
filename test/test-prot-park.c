/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-park: streams released while idle, resumed byte for byte. */
#include "t-helpers.h"
#include "t-sasl.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <zlib.h>

#include <ringprot/prot-layer.h>
#include <ringprot/prot.h>

/*
 * A connection is two stream pairs over one socketpair, both ends on the
 * test's loop: the server's (sin, sout), which parks, and the client's
 * (cin, cout). Layers are real (OpenSSL, libsasl2 DIGEST-MD5 with its
 * confidentiality layer, zlib). Heap figures come from
 * glibc's mallinfo2 (in-use chunks plus mmapped ones); under ASan its
 * allocator is not glibc's, the figures stay 0 and the checks on them
 * hold trivially, while those on prot_memory() still bite.
 */

enum {
	C_PLAIN = 0,
	C_TLS = 1,
	C_ZLIB = 2,
	C_SASL = 4
};

struct conn {
	int sv[2];
	struct protstream *sin, *sout, *cin, *cout;
	SSL_CTX *sctx, *cctx;
	sasl_conn_t *sconn, *cconn;
};

static size_t heap_used(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

/* TLS: a self-signed server certificate, made once. */
static EVP_PKEY *srv_key;
static X509 *srv_cert;

static void pki_make(void)
{
	X509_NAME *name;

	srv_key = EVP_EC_gen("P-256");
	srv_cert = X509_new();
	assert_non_null(srv_key);
	assert_non_null(srv_cert);
	X509_set_version(srv_cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(srv_cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(srv_cert), -3600);
	X509_gmtime_adj(X509_getm_notAfter(srv_cert), 86400);
	X509_set_pubkey(srv_cert, srv_key);
	name = X509_get_subject_name(srv_cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
				   (const unsigned char *)"localhost", -1, -1,
				   0);
	X509_set_issuer_name(srv_cert, name);
	assert_true(X509_sign(srv_cert, srv_key, EVP_sha256()) > 0);
}

struct hs {
	struct protstream *in, *out;
	SSL_CTX *ctx;
	bool server;
	int ret;
};

static int hs_fiber(void *arg)
{
	struct hs *h = arg;

	h->ret = h->server ? pl_tls_accept(h->in, h->out, h->ctx, 10000, NULL)
			   : pl_tls_connect(h->in, h->out, h->ctx, NULL, 10000,
					    NULL);
	return 0;
}

struct auth {
	struct protstream *in, *out;
	sasl_conn_t *conn;
	bool server;
	int ret;
};

static int auth_fiber(void *arg)
{
	struct auth *a = arg;

	a->ret = a->server ? t_sasl_server_auth(a->in, a->out, a->conn, "a")
			   : t_sasl_client_auth(a->in, a->out, a->conn, "a",
						"DIGEST-MD5", NULL);
	return 0;
}

/* AUTHENTICATE DIGEST-MD5 with a confidentiality layer (SSF > 1). */
static void conn_sasl(struct ur_loop *loop, struct conn *c)
{
	const char *host = t_sasl_next_host();
	struct auth s = {c->sin, c->sout, NULL, true, -1};
	struct auth k = {c->cin, c->cout, NULL, false, -1};
	struct ur_fiber *fs, *fk;

	t_sasl_server_new(host, &c->sconn);
	t_sasl_client_new(host, &c->cconn);
	t_sasl_set_props(c->sconn, 2, 256, 0);
	t_sasl_set_props(c->cconn, 2, 256, 0);
	s.conn = c->sconn;
	k.conn = c->cconn;
	assert_int_equal(ur_fiber_spawn(loop, auth_fiber, &s, NULL, &fs), 0);
	assert_int_equal(ur_fiber_spawn(loop, auth_fiber, &k, NULL, &fk), 0);
	assert_int_equal(ur_fiber_join(fs, NULL), 0);
	assert_int_equal(ur_fiber_join(fk, NULL), 0);
	assert_int_equal(s.ret, 0);
	assert_int_equal(k.ret, 0);
	assert_true(c->sout->saslssf > 1);
}

static void conn_open(struct ur_loop *loop, struct conn *c, int layers)
{
	memset(c, 0, sizeof(*c));
	t_socketpair(c->sv);
	c->sin = prot_new(c->sv[0], 0);
	c->sout = prot_new(c->sv[0], 1);
	c->cin = prot_new(c->sv[1], 0);
	c->cout = prot_new(c->sv[1], 1);
	assert_non_null(c->sin);
	assert_non_null(c->sout);
	assert_non_null(c->cin);
	assert_non_null(c->cout);
	if (layers & C_TLS) {
		struct hs s = {c->sin, c->sout, NULL, true, -1};
		struct hs k = {c->cin, c->cout, NULL, false, -1};
		struct ur_fiber *fs, *fk;

		c->sctx = SSL_CTX_new(TLS_server_method());
		c->cctx = SSL_CTX_new(TLS_client_method());
		assert_non_null(c->sctx);
		assert_non_null(c->cctx);
		assert_int_equal(SSL_CTX_use_certificate(c->sctx, srv_cert), 1);
		assert_int_equal(SSL_CTX_use_PrivateKey(c->sctx, srv_key), 1);
		s.ctx = c->sctx;
		k.ctx = c->cctx;
		assert_int_equal(ur_fiber_spawn(loop, hs_fiber, &s, NULL, &fs),
				 0);
		assert_int_equal(ur_fiber_spawn(loop, hs_fiber, &k, NULL, &fk),
				 0);
		assert_int_equal(ur_fiber_join(fs, NULL), 0);
		assert_int_equal(ur_fiber_join(fk, NULL), 0);
		assert_int_equal(s.ret, 0);
		assert_int_equal(k.ret, 0);
	}
	if (layers & C_SASL)
		conn_sasl(loop, c);
	if (layers & C_ZLIB) {
		assert_int_equal(pl_zlib_activate(c->sin, c->sout, -1), 0);
		assert_int_equal(pl_zlib_activate(c->cin, c->cout, -1), 0);
	}
}

static void conn_close(struct conn *c)
{
	assert_int_equal(prot_free(c->sin), 0);
	assert_int_equal(prot_free(c->sout), 0);
	assert_int_equal(prot_free(c->cin), 0);
	assert_int_equal(prot_free(c->cout), 0);
	t_close_pair(c->sv);
	SSL_CTX_free(c->sctx);
	SSL_CTX_free(c->cctx);
	if (c->sconn != NULL)
		sasl_dispose(&c->sconn);
	if (c->cconn != NULL)
		sasl_dispose(&c->cconn);
}

/* Read exactly n bytes (fails the test on EOF). */
static void read_exact(struct protstream *in, unsigned char *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		int k = prot_read(in, (char *)p + got, (unsigned)(n - got));

		if (k <= 0)
			fail_msg("read %zu of %zu bytes: %s", got, n,
				 prot_error(in) != NULL ? prot_error(in) : "?");
		got += (size_t)k;
	}
}

static void expect_line(struct protstream *in, const char *want)
{
	char line[512];

	assert_non_null(prot_fgets(line, sizeof(line), in));
	assert_string_equal(line, want);
}

/* Text-like bytes (compress 3:1 or so), deterministic per seed. */
static void fill_text(unsigned char *p, size_t n, uint64_t seed)
{
	static const char *const words[] = {"FETCH ",	 "BODY[] ",
					    "* 12 ",	 "EXISTS\r\n",
					    "Subject: ", "hello ",
					    "world ",	 "ring ",
					    "deflate ",	 "0123456789 "};
	uint64_t st = seed | 1;

	for (size_t i = 0; i < n;) {
		const char *w;
		size_t k;

		st ^= st << 13;
		st ^= st >> 7;
		st ^= st << 17;
		w = words[(st >> 33) % 10];
		k = strlen(w);
		if (k > n - i)
			k = n - i;
		memcpy(p + i, w, k);
		i += k;
	}
}

static void release_ok(struct protstream *s)
{
	assert_int_equal(prot_release(s), 0);
	assert_int_equal(prot_release(s), 0); /* idempotent */
}

/*
 * Plaintext: every write path gets its buffer back after a release (the
 * inline and the real prot_putc, prot_write, prot_puts, prot_printf short
 * and long, the IMAP formatters), in order, byte for byte.
 */
static void test_prot_park_write_paths(void **state)
{
	static const char want[] = "ab" /* putc inline, putc call */
				   "write;"
				   "puts;"
				   "printf 42 x;"
				   "\"quoted\"";
	struct ur_loop *loop = t_loop_of(state);
	char big[6000], got[sizeof(want) + sizeof(big)];
	size_t base;
	struct conn c;

	conn_open(loop, &c, C_PLAIN);
	assert_int_equal(prot_puts(c.sout, "x"), 0);
	assert_int_equal(prot_release(c.sout), -EBUSY); /* buffered */
	assert_non_null(c.sout->buf);
	assert_int_equal(prot_flush(c.sout), 0);
	base = prot_memory(c.sout);
	release_ok(c.sout);
	assert_null(c.sout->buf);
	assert_true(prot_memory(c.sout) + PROT_BUFSIZE <= base);
	assert_true(prot_memory(c.sout) < 600);
	read_exact(c.cin, (unsigned char *)got, 1);
	assert_int_equal(got[0], 'x');

	assert_int_equal(prot_putc('a', c.sout), 0);
	assert_int_equal(prot_flush(c.sout), 0);
	release_ok(c.sout);
	assert_int_equal((prot_putc)('b', c.sout), 0);
	assert_int_equal(prot_flush(c.sout), 0);
	release_ok(c.sout);
	assert_int_equal(prot_write(c.sout, "write;", 6), 0);
	release_ok(c.cin); /* a read stream, between the two */
	assert_int_equal(prot_flush(c.sout), 0);
	release_ok(c.sout);
	assert_int_equal(prot_puts(c.sout, "puts;"), 0);
	assert_int_equal(prot_flush(c.sout), 0);
	release_ok(c.sout);
	assert_int_equal(prot_printf(c.sout, "printf %d %c;", 42, 'x'), 0);
	assert_int_equal(prot_flush(c.sout), 0);
	release_ok(c.sout);
	assert_int_equal(prot_printstring(c.sout, "quoted"), 0);
	assert_int_equal(prot_flush(c.sout), 0);
	release_ok(c.sout);
	/* Longer than the buffer: through the printf scratch. */
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(prot_printf(c.sout, "%s", big), 0);
	assert_int_equal(prot_flush(c.sout), 0);
	release_ok(c.sout);
	assert_true(prot_memory(c.sout) < 600); /* the scratch went too */
	read_exact(c.cin, (unsigned char *)got, strlen(want) + strlen(big));
	assert_memory_equal(got, want, strlen(want));
	assert_memory_equal(got + strlen(want), big, strlen(big));
	assert_int_equal(prot_bytes_out(c.sout),
			 1 + strlen(want) + strlen(big));
	/* A write larger than the buffer right after a release. */
	release_ok(c.sout);
	assert_int_equal(prot_write(c.sout, big, (unsigned)strlen(big)), 0);
	assert_int_equal(prot_flush(c.sout), 0);
	read_exact(c.cin, (unsigned char *)got, strlen(big));
	assert_memory_equal(got, big, strlen(big));
	conn_close(&c);
}

/* prot_writebuf streams park too. */
static void test_prot_park_writebuf(void **state)
{
	struct buf b = BUF_INITIALIZER;
	struct protstream *s = prot_writebuf(&b);

	(void)state;
	assert_non_null(s);
	assert_int_equal(prot_puts(s, "one "), 0);
	assert_int_equal(prot_flush(s), 0);
	release_ok(s);
	assert_int_equal(prot_printf(s, "two %d", 2), 0);
	assert_int_equal(prot_flush(s), 0);
	assert_int_equal(b.len, 9);
	assert_memory_equal(b.s, "one two 2", 9);
	assert_int_equal(prot_free(s), 0);
	free(b.s);
}

/*
 * Read side: a line read, the rest of the input kept across the release
 * (small: in the struct; large: one copy of its size), push-back kept,
 * then read byte for byte.
 */
static void test_prot_park_read_partial(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	unsigned char *data = malloc(10000), *got = malloc(10000);
	size_t idle;
	struct conn c;

	assert_non_null(data);
	assert_non_null(got);
	conn_open(loop, &c, C_PLAIN);
	/* Small: the rest of the window fits the history. */
	assert_int_equal(prot_puts(c.cout, "line1\r\nline2\r\nrest"), 0);
	assert_int_equal(prot_flush(c.cout), 0);
	expect_line(c.sin, "line1\r\n");
	assert_true(prot_input_pending(c.sin));
	release_ok(c.sin);
	idle = prot_memory(c.sin);
	assert_true(prot_input_pending(c.sin));
	assert_int_equal(prot_ungetc('\n', c.sin), '\n'); /* still there */
	assert_int_equal(prot_getc(c.sin), '\n');
	expect_line(c.sin, "line2\r\n");
	assert_int_equal(prot_getc(c.sin), 'r');
	release_ok(c.sin);
	assert_int_equal(prot_read(c.sin, (char *)got, 10), 3);
	assert_memory_equal(got, "est", 3);
	assert_false(prot_input_pending(c.sin));
	release_ok(c.sin);
	assert_int_equal(prot_memory(c.sin), idle);

	/* Large: 10000 bytes in one provided buffer, 100 read. */
	fill_text(data, 10000, 7);
	assert_int_equal(prot_write(c.cout, (char *)data, 10000), 0);
	assert_int_equal(prot_flush(c.cout), 0);
	read_exact(c.sin, got, 100);
	release_ok(c.sin);
	assert_true(prot_input_pending(c.sin));
	/* The unread 9900 (and the push-back) are all it holds. */
	assert_true(prot_memory(c.sin) >= idle + 9900);
	assert_true(prot_memory(c.sin) <= idle + 9900 + 256);
	assert_int_equal(prot_ungetc(data[99], c.sin), data[99]);
	read_exact(c.sin, got + 99, 9901);
	assert_memory_equal(got, data, 10000);
	assert_false(prot_input_pending(c.sin));
	release_ok(c.sin);
	assert_int_equal(prot_memory(c.sin), idle);
	assert_int_equal(prot_bytes_in(c.sin), 18 + 10000);
	conn_close(&c);
	free(data);
	free(got);
}

/* What an idle plaintext connection costs parked (the target: 1.5 KiB). */
static void test_prot_park_memory_plain(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	size_t h0 = 0, h1 = 0, h2 = 0, m0 = 0, m1 = 0;
	struct conn c;

	for (int round = 0; round < 2; round++) { /* the first warms up */
		conn_open(loop, &c, C_PLAIN);
		h0 = heap_used();
		prot_free(c.sin);
		prot_free(c.sout);
		h0 = h0 - heap_used(); /* the pair, fresh */
		c.sin = prot_new(c.sv[0], 0);
		c.sout = prot_new(c.sv[0], 1);
		assert_int_equal(prot_puts(c.cout, "a NOOP\r\n"), 0);
		assert_int_equal(prot_flush(c.cout), 0);
		expect_line(c.sin, "a NOOP\r\n");
		assert_int_equal(
			prot_printf(c.sout, "%s OK %s\r\n", "a", "done"), 0);
		assert_int_equal(prot_flush(c.sout), 0);
		expect_line(c.cin, "a OK done\r\n");
		m0 = prot_memory(c.sin) + prot_memory(c.sout);
		h1 = heap_used();
		release_ok(c.sin);
		release_ok(c.sout);
		m1 = prot_memory(c.sin) + prot_memory(c.sout);
		h1 -= heap_used(); /* what the release gave back */
		h2 = heap_used();
		prot_free(c.sin);
		prot_free(c.sout);
		h2 -= heap_used(); /* what the parked pair held */
		c.sin = prot_new(c.sv[0], 0);
		c.sout = prot_new(c.sv[0], 1);
		conn_close(&c);
	}
	fprintf(stderr,
		"plaintext pair: prot_memory %zu B active, %zu B parked; heap: "
		"fresh %zu B, release gave back %zu B, parked %zu B\n",
		m0, m1, h0, h1, h2);
	assert_true(m1 < 1536);
	assert_true(h2 < 1536);
	assert_true(m0 >= m1 + PROT_BUFSIZE);
}

/* -EBUSY: output pending or in flight, a read in flight, a callback. */
struct getc_job {
	struct protstream *s;
	int c;
};

static int getc_fiber(void *arg)
{
	struct getc_job *j = arg;

	j->c = prot_getc(j->s);
	return 0;
}

static void turns(struct ur_loop *loop, int n)
{
	for (int i = 0; i < n; i++)
		assert_true(ur_loop_run_once(loop, 0) >= 0);
}

static void test_prot_park_busy(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	size_t n = 4u << 20, got = 0;
	unsigned char *big = calloc(1, n), *back = malloc(65536);
	struct getc_job j;
	struct ur_fiber *f;
	int sz = 4096;
	struct conn c;

	assert_non_null(big);
	assert_non_null(back);
	assert_int_equal(prot_release(NULL), -EINVAL);
	conn_open(loop, &c, C_PLAIN);
	/* A read in flight: a fiber waits in prot_getc. */
	j.s = c.sin;
	j.c = 0;
	assert_int_equal(ur_fiber_spawn(loop, getc_fiber, &j, NULL, &f), 0);
	turns(loop, 3);
	assert_int_equal(prot_release(c.sin), -EBUSY);
	assert_int_equal(write(c.sv[1], "q", 1), 1);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(j.c, 'q');
	release_ok(c.sin);

	/* A non-blocking stream's queue the peer has not taken yet. */
	assert_int_equal(
		setsockopt(c.sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);
	prot_NONBLOCK(c.sout);
	assert_int_equal(prot_write(c.sout, (char *)big, (unsigned)n), 0);
	assert_true(prot_queued(c.sout) > 0);
	assert_int_equal(prot_release(c.sout), -EBUSY);
	assert_non_null(c.sout->buf);
	while (got < n) {
		int k = prot_read(c.cin, (char *)back, 65536);

		assert_true(k > 0);
		got += (size_t)k;
	}
	turns(loop, 3);
	assert_int_equal(prot_queued(c.sout), 0);
	release_ok(c.sout);
	assert_null(c.sout->buf);
	conn_close(&c);
	free(big);
	free(back);
}

/*
 * Wait events of a parked stream: the timers a wait armed are stopped by
 * the release (none stays in the kernel), the caller learns the next mark
 * and runs the due callbacks itself; the next wait arms them again.
 */
struct evrec {
	struct protstream *out;
	int ran;
	int release_ret;
};

static struct prot_waitevent *ev_cb(struct protstream *s,
				    struct prot_waitevent *ev, void *rock)
{
	struct evrec *r = rock;

	r->ran++;
	r->release_ret = prot_release(s);
	if (prot_printf(r->out, "* event %d\r\n", r->ran) != 0 ||
	    prot_flush(r->out) != 0)
		r->ran = -100;
	prot_removewaitevent(s, ev);
	return NULL;
}

static uint64_t armed(struct ur_loop *loop)
{
	struct ur_loop_stats st;

	ur_loop_stats(loop, &st);
	return st.timers_armed;
}

static void test_prot_park_waitevents(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct evrec r = {0};
	struct prot_waitevent *e1, *e2;
	struct ur_loop_stats st;
	struct getc_job j;
	struct ur_fiber *f;
	uint64_t now_ms, m1, m2;
	size_t with_wait;
	struct conn c;

	conn_open(loop, &c, C_PLAIN);
	r.out = c.sout;
	now_ms = ur_now_ns(CLOCK_REALTIME) / 1000000;
	m1 = now_ms + 100000;
	m2 = now_ms + 200000;
	assert_int_equal(prot_settimeout(c.sin, 60), 0);
	assert_int_equal(prot_waitevent_next_ms(c.sin), 0);
	e2 = prot_addwaitevent_ms(c.sin, m2, ev_cb, &r);
	e1 = prot_addwaitevent_ms(c.sin, m1, ev_cb, &r);
	assert_non_null(e1);
	assert_non_null(e2);
	assert_int_equal(prot_waitevent_next_ms(c.sin), m1);
	assert_int_equal(armed(loop), 0); /* nothing armed before a wait */

	/* A wait arms both events and the read deadline. */
	j.s = c.sin;
	assert_int_equal(ur_fiber_spawn(loop, getc_fiber, &j, NULL, &f), 0);
	turns(loop, 3);
	assert_int_equal(armed(loop), 3);
	assert_int_equal(write(c.sv[1], "1", 1), 1);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(j.c, '1');
	assert_int_equal(armed(loop), 3); /* left armed for the next wait */

	release_ok(c.sin);
	release_ok(c.sout);
	assert_int_equal(armed(loop), 0);
	for (int i = 0; i < 100; i++) { /* the removes complete */
		ur_loop_stats(loop, &st);
		if (st.ops_inflight == 0)
			break;
		turns(loop, 1);
	}
	assert_int_equal(st.ops_inflight, 0);
	with_wait = prot_memory(c.sin); /* the struct, the events */
	assert_true(prot_read_deadline_ns(c.sin) >
		    ur_now_ns(CLOCK_MONOTONIC) + 50000000000ULL);
	assert_int_equal(prot_read_deadline_ns(c.sout), 0);

	/* Nothing due yet; then e1 moved into the past runs, alone. */
	assert_int_equal(prot_waitevent_run_due(c.sin), 0);
	assert_int_equal(prot_setwaitevent_ms(c.sin, e1, now_ms - 5), 0);
	assert_int_equal(prot_waitevent_next_ms(c.sin), now_ms - 5);
	assert_int_equal(prot_waitevent_run_due(c.sin), 1);
	assert_int_equal(r.ran, 1);
	assert_int_equal(r.release_ret, -EBUSY); /* inside its callback */
	expect_line(c.cin, "* event 1\r\n"); /* written by a released sout */
	assert_int_equal(prot_waitevent_next_ms(c.sin), m2);
	assert_int_equal(prot_waitevent_run_due(c.sin), 0);
	assert_int_equal(armed(loop), 0);

	/* The next wait arms what is left again. */
	assert_int_equal(ur_fiber_spawn(loop, getc_fiber, &j, NULL, &f), 0);
	turns(loop, 3);
	assert_int_equal(armed(loop), 2);
	assert_int_equal(write(c.sv[1], "2", 1), 1);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(j.c, '2');

	/* Without events the release frees the wait state as well. */
	prot_removewaitevent(c.sin, e2);
	assert_int_equal(prot_waitevent_next_ms(c.sin), 0);
	release_ok(c.sin);
	assert_int_equal(armed(loop), 0);
	assert_true(prot_memory(c.sin) < with_wait);
	conn_close(&c);
}

/*
 * The layered cases: a session, a park of all four streams while the
 * client sends, a resume that reads the rest through a second release
 * with input pending, byte for byte both ways. Returns the server pair's
 * prot_memory parked.
 */
#define TEXT 8192

static size_t park_session(struct ur_loop *loop, struct conn *c, int layers,
			   const char *what)
{
	unsigned char *t = malloc(TEXT), *got = malloc(TEXT);
	struct pl_zlib_stats z0, z1;
	size_t m0, m1, m2, h0, h1;

	(void)loop;
	assert_non_null(t);
	assert_non_null(got);
	fill_text(t, TEXT, 11);
	/* Before: the text once each way (zlib: the history to keep). */
	assert_int_equal(prot_write(c->cout, (char *)t, TEXT), 0);
	assert_int_equal(prot_puts(c->cout, "a IDLE\r\n"), 0);
	assert_int_equal(prot_flush(c->cout), 0);
	read_exact(c->sin, got, TEXT);
	assert_memory_equal(got, t, TEXT);
	expect_line(c->sin, "a IDLE\r\n");
	assert_int_equal(prot_write(c->sout, (char *)t, TEXT), 0);
	assert_int_equal(prot_puts(c->sout, "+ idling\r\n"), 0);
	assert_int_equal(prot_flush(c->sout), 0);
	read_exact(c->cin, got, TEXT);
	assert_memory_equal(got, t, TEXT);
	expect_line(c->cin, "+ idling\r\n");

	/* Park both ends. */
	assert_false(prot_input_pending(c->sin));
	m0 = prot_memory(c->sin) + prot_memory(c->sout);
	h0 = heap_used();
	release_ok(c->sin);
	release_ok(c->sout);
	h0 -= heap_used();
	release_ok(c->cin);
	release_ok(c->cout);
	m1 = prot_memory(c->sin) + prot_memory(c->sout);

	/* While parked: the client sends the text again and DONE. */
	if (layers & C_ZLIB)
		assert_int_equal(pl_zlib_stats(c->cout, &z0), 0);
	assert_int_equal(prot_write(c->cout, (char *)t, TEXT), 0);
	assert_int_equal(prot_puts(c->cout, "DONE\r\n"), 0);
	assert_int_equal(prot_flush(c->cout), 0);
	if (layers & C_ZLIB) {
		/* The second copy refers back across the park: tiny. */
		assert_int_equal(pl_zlib_stats(c->cout, &z1), 0);
		assert_true(z1.wire - z0.wire < TEXT / 20);
	}
	assert_false(prot_input_pending(c->sin)); /* in the kernel only */

	/* Resume: part of it, a second park with input held, the rest. */
	read_exact(c->sin, got, 100);
	assert_true(prot_input_pending(c->sin));
	h1 = heap_used();
	release_ok(c->sin);
	h1 -= heap_used();
	m2 = prot_memory(c->sin) + prot_memory(c->sout);
	assert_true(prot_input_pending(c->sin));
	read_exact(c->sin, got + 100, TEXT - 100);
	assert_memory_equal(got, t, TEXT);
	expect_line(c->sin, "DONE\r\n");
	assert_false(prot_input_pending(c->sin));
	/* The answer, through a released write stream. */
	assert_int_equal(prot_write(c->sout, (char *)t, TEXT), 0);
	assert_int_equal(prot_printf(c->sout, "a OK %s\r\n", "IDLE done"), 0);
	assert_int_equal(prot_flush(c->sout), 0);
	read_exact(c->cin, got, TEXT);
	assert_memory_equal(got, t, TEXT);
	expect_line(c->cin, "a OK IDLE done\r\n");
	fprintf(stderr,
		"%s pair: prot_memory %zu B active, %zu B parked, %zu B "
		"parked with %d B unread; heap given back by the release %zu "
		"B (by the release with input unread: %zd B)\n",
		what, m0, m1, m2, TEXT - 100 + 6, h0, (ssize_t)h1);
	free(t);
	free(got);
	return m1;
}

static void test_prot_park_tls(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct pl_tls_info info;
	size_t parked, h0, h1;
	struct conn c;

	conn_open(loop, &c, C_TLS);
	parked = park_session(loop, &c, C_TLS, "TLS");
	assert_int_equal(pl_tls_info(c.sin, &info), 0);
	assert_int_equal(info.held, 0);
	/* 2 structs (1.4 KiB), the layer records, the SSL estimate. */
	assert_true(parked < 16 * 1024);
	/* What the parked server pair really holds, SSL included. */
	release_ok(c.sin);
	release_ok(c.sout);
	h0 = heap_used();
	prot_free(c.sin);
	prot_free(c.sout);
	h1 = h0 - heap_used();
	fprintf(stderr,
		"TLS pair parked: prot_memory %zu B, heap freed with it %zu B\n",
		parked, h1);
	if (h1 > 0) /* glibc's allocator: the estimate is about right */
		assert_true(parked > h1 / 2 && parked < h1 * 2);
	c.sin = prot_new(c.sv[0], 0);
	c.sout = prot_new(c.sv[0], 1);
	conn_close(&c);
}

static void test_prot_park_deflate(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	size_t parked;
	struct conn c;

	conn_open(loop, &c, C_ZLIB);
	parked = park_session(loop, &c, C_ZLIB, "DEFLATE");
	/* Structs, zlib records and two histories of at most 32 KiB. */
	assert_true(parked < 2 * 1024 + 2 * 32768 + 1024);
	conn_close(&c);
}

static void test_prot_park_tls_deflate(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	size_t parked;
	struct conn c;

	conn_open(loop, &c, C_TLS | C_ZLIB);
	parked = park_session(loop, &c, C_TLS | C_ZLIB, "TLS+DEFLATE");
	assert_true(parked < 16 * 1024 + 2 * 32768 + 1024);
	conn_close(&c);
}

/*
 * SASL: the layer has nothing to give back (libsasl2 keeps its buffers in
 * the sasl_conn_t), but the streams do; the write buffer comes back with
 * the layer's smaller size (maxplain). And all three layers stacked.
 */
static void test_prot_park_sasl(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	size_t parked;
	struct conn c;

	conn_open(loop, &c, C_SASL);
	parked = park_session(loop, &c, C_SASL, "SASL");
	assert_true(parked < 2048);
	release_ok(c.sout);
	assert_int_equal(prot_putc('x', c.sout), 0);
	assert_int_equal(c.sout->cnt + 1, (unsigned)c.sout->maxplain);
	assert_int_equal(prot_flush(c.sout), 0);
	assert_int_equal(prot_getc(c.cin), 'x');
	conn_close(&c);
}

static void test_prot_park_all_layers(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	size_t parked;
	struct conn c;

	conn_open(loop, &c, C_TLS | C_SASL | C_ZLIB);
	parked = park_session(loop, &c, C_TLS | C_SASL | C_ZLIB,
			      "TLS+SASL+DEFLATE");
	assert_true(parked < 16 * 1024 + 2 * 32768 + 2048);
	conn_close(&c);
}

/*
 * A DEFLATE block cut in half by the network: the inflate state cannot
 * go (it holds the half), the release keeps it, and the block completes
 * after the park.
 */
static void test_prot_park_deflate_mid_block(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	unsigned char t[3000], wire[4096], got[3000];
	z_stream z = {0};
	size_t wlen, m, k = 0;
	struct conn c;
	int n;

	conn_open(loop, &c, C_PLAIN);
	assert_int_equal(pl_zlib_start(c.sin, -1), 0);
	fill_text(t, sizeof(t), 5);
	assert_int_equal(
		deflateInit2(&z, 6, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY),
		Z_OK);
	z.next_in = t;
	z.avail_in = sizeof(t);
	z.next_out = wire;
	z.avail_out = sizeof(wire);
	assert_int_equal(deflate(&z, Z_SYNC_FLUSH), Z_OK);
	wlen = sizeof(wire) - z.avail_out;
	deflateEnd(&z);
	assert_int_equal(write(c.sv[1], wire, wlen / 2), (ssize_t)(wlen / 2));
	/* Take what the first half decodes to, without waiting. */
	prot_NONBLOCK(c.sin);
	while ((n = prot_read(c.sin, (char *)got + k,
			      (unsigned)(sizeof(got) - k))) > 0)
		k += (size_t)n;
	assert_int_equal(errno, EAGAIN);
	assert_true(k < sizeof(t));
	prot_BLOCK(c.sin);
	m = prot_memory(c.sin);
	release_ok(c.sin);
	/* The inflate state stays (about 40 KiB with its window). */
	assert_true(prot_memory(c.sin) > 32768);
	assert_true(prot_memory(c.sin) <= m);
	assert_int_equal(write(c.sv[1], wire + wlen / 2, wlen - wlen / 2),
			 (ssize_t)(wlen - wlen / 2));
	read_exact(c.sin, got + k, sizeof(t) - k);
	assert_memory_equal(got, t, sizeof(t));
	/* Now at a block boundary: the state goes, the history stays. */
	release_ok(c.sin);
	assert_true(prot_memory(c.sin) < m);
	assert_true(prot_memory(c.sin) < 4096 + sizeof(t));
	conn_close(&c);
}

/*
 * TLS: two records arrive in one read; after the first line the second
 * is pending (decrypted already), across a release. A close_notify that
 * came with a record makes the read after it end at once: pending too.
 */
static void test_prot_park_tls_pending(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct conn c;

	conn_open(loop, &c, C_TLS);
	assert_int_equal(prot_puts(c.cout, "first\r\n"), 0);
	assert_int_equal(prot_flush(c.cout), 0);
	assert_int_equal(prot_puts(c.cout, "second\r\n"), 0);
	assert_int_equal(prot_flush(c.cout), 0);
	assert_false(prot_input_pending(c.sin)); /* both in the kernel */
	expect_line(c.sin, "first\r\n");
	assert_true(prot_input_pending(c.sin));
	release_ok(c.sin);
	assert_true(prot_input_pending(c.sin));
	expect_line(c.sin, "second\r\n");
	assert_false(prot_input_pending(c.sin));
	release_ok(c.sin);

	assert_int_equal(prot_puts(c.cout, "third\r\n"), 0);
	assert_int_equal(prot_flush(c.cout), 0);
	assert_int_equal(prot_free(c.cout), 0); /* sends close_notify */
	c.cout = NULL;
	assert_false(prot_input_pending(c.sin));
	expect_line(c.sin, "third\r\n");
	assert_true(prot_input_pending(c.sin)); /* the clean end */
	release_ok(c.sin);
	assert_true(prot_input_pending(c.sin));
	assert_int_equal(prot_getc(c.sin), EOF);
	assert_true(prot_IS_EOF(c.sin));
	assert_true(prot_input_pending(c.sin));
	conn_close(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
		T(test_prot_park_write_paths),
		T(test_prot_park_writebuf),
		T(test_prot_park_read_partial),
		T(test_prot_park_memory_plain),
		T(test_prot_park_busy),
		T(test_prot_park_waitevents),
		T(test_prot_park_tls),
		T(test_prot_park_deflate),
		T(test_prot_park_tls_deflate),
		T(test_prot_park_sasl),
		T(test_prot_park_all_layers),
		T(test_prot_park_deflate_mid_block),
		T(test_prot_park_tls_pending),
#undef T
	};
	int failed;

	signal(SIGPIPE, SIG_IGN);
	if ((pl_features() & (PL_HAVE_TLS | PL_HAVE_ZLIB)) !=
	    (PL_HAVE_TLS | PL_HAVE_ZLIB)) {
		fprintf(stderr, "no TLS or DEFLATE layer in this build\n");
		return 77;
	}
	t_require_loop();
	if (t_sasl_init("park") < 0)
		return 1;
	pki_make();
	failed = t_run_groups("prot-park", tests,
			      sizeof(tests) / sizeof(tests[0]));
	X509_free(srv_cert);
	EVP_PKEY_free(srv_key);
	t_sasl_fini();
	return failed;
}
