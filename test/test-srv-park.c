/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * test/srv-park: thousands of parked connections through the runtime,
 * each woken by input, by a wait event and by a notification, in
 * plaintext, over implicit TLS, and over TLS with DEFLATE on top.
 *
 * The server runs in its own threads (two workers, srv_run on a helper
 * thread); the test thread is the client side: plain blocking sockets
 * with a receive timeout, OpenSSL's blocking client, zlib raw deflate.
 * Connections are made in batches (the listen backlog is 1024: a SYN
 * into a full queue is dropped and retried a second later), then every
 * phase writes to all of them before reading all the answers, so the
 * wakes of a phase overlap on the workers.
 *
 * Sizes: 10,000 plaintext connections on io_uring, where the server's
 * sockets are direct descriptors (srv_opts.direct) and take no fd; 9,000
 * on epoll, where both sides' sockets count against the 20,000-fd cap of
 * the process. TLS: 1,000 connections, TLS+DEFLATE: 500 (each handshake
 * runs on the test thread one at a time, and ten thousand of them under
 * ASan would take minutes).
 *
 * Every byte is checked (each connection's echo payload is its own); at
 * the end srv_stats must show no connection open or parked, and under
 * ASan nothing may leak.
 *
 * The service's protocol, one command per line:
 *   "hi N"       first line: registers the connection as number N
 *                (a reference in table[N], for srv_conn_notify), answers
 *                "ok N", parks
 *   "echo X"     answers X
 *   "event"      adds a wait event one second ahead, answers "armed"
 *                (the event writes "ev" when it runs)
 *   "COMPRESS"   answers "OK" and starts DEFLATE both ways
 * Every resume first writes "woke W" (W the wake reasons), serves the
 * lines that came, and parks again once no input is buffered.
 */
#include "t-helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <zlib.h>

#include <ringprot/buf.h>
#include <ringprot/prot-layer.h>
#include <ringprot/server.h>

#define BATCH 256
#define N_TLS 1000
#define N_TLS_Z 500

/*
 * ---------------------------------------------------------------------
 * The server side.
 * ---------------------------------------------------------------------
 */
static struct srv_conn **table;
static size_t table_n;
static atomic_uint bad_lines; /* protocol errors seen by the service */

static int resume(struct srv_conn *c, unsigned wake);

static struct prot_waitevent *on_event(struct protstream *s,
				       struct prot_waitevent *ev, void *rock)
{
	struct srv_conn *c = rock;

	prot_printf(c->out, "ev\n");
	prot_removewaitevent(s, ev);
	return NULL;
}

/* Serve the lines that came, then park once nothing more is buffered. */
static int serve(struct srv_conn *c)
{
	struct buf line = BUF_INITIALIZER;
	int ret;

	for (;;) {
		ret = srv_readline(c->in, &line, 512);
		if (ret < 0)
			break;
		if (strncmp(line.s, "echo ", 5) == 0) {
			prot_printf(c->out, "%s\n", line.s + 5);
		} else if (strcmp(line.s, "event") == 0) {
			if (prot_addwaitevent(c->in, time(NULL) + 1, on_event,
					      c) == NULL) {
				ret = -ENOMEM;
				break;
			}
			prot_printf(c->out, "armed\n");
		} else if (strcmp(line.s, "COMPRESS") == 0) {
			prot_printf(c->out, "OK\n");
			ret = pl_zlib_activate(c->in, c->out, -1);
			if (ret < 0)
				break;
		} else {
			atomic_fetch_add(&bad_lines, 1);
			prot_printf(c->out, "what?\n");
		}
		if (!prot_input_pending(c->in)) {
			free(line.s);
			return srv_park(c, resume);
		}
	}
	free(line.s);
	return ret == -ENOTCONN ? 0 : ret;
}

static int resume(struct srv_conn *c, unsigned wake)
{
	if (wake & SRV_WAKE_SHUTDOWN)
		return 0;
	prot_printf(c->out, "woke %u\n", wake);
	if (wake & SRV_WAKE_INPUT)
		return serve(c);
	return srv_park(c, resume);
}

static int handler(struct srv_conn *c)
{
	struct buf line = BUF_INITIALIZER;
	unsigned long n;
	char *end;
	int ret;

	ret = srv_readline(c->in, &line, 64);
	if (ret < 0 || strncmp(line.s, "hi ", 3) != 0) {
		atomic_fetch_add(&bad_lines, 1);
		free(line.s);
		return ret < 0 ? ret : -EPROTO;
	}
	n = strtoul(line.s + 3, &end, 10);
	if (*end != '\0' || n >= table_n || table[n] != NULL) {
		atomic_fetch_add(&bad_lines, 1);
		free(line.s);
		return -EPROTO;
	}
	free(line.s);
	srv_conn_ref(c);
	table[n] = c; /* read by the test thread after it saw "ok N" */
	prot_printf(c->out, "ok %lu\n", n);
	return srv_park(c, resume);
}

static const struct srv_service_opts service = {
	.name = "park",
	.handler = handler,
};

struct fixture {
	struct srv *s;
	struct srv_service *svc;
	pthread_t runner;
	int run_ret;
	uint16_t port, tls_port;
	SSL_CTX *cctx; /* the clients' */
};

static EVP_PKEY *srv_key;
static X509 *srv_cert;

static void pki_make(void)
{
	X509_NAME *name;

	if (srv_cert != NULL)
		return;
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

static void *runner(void *arg)
{
	struct fixture *fx = arg;

	fx->run_ret = srv_run(fx->s, NULL);
	return NULL;
}

static uint16_t port_of(struct srv_service *svc, unsigned i)
{
	struct sockaddr_storage ss;
	socklen_t len;

	assert_int_equal(srv_listen_addr(svc, i, &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void fx_start(struct fixture *fx, size_t n)
{
	struct srv_opts so = {.workers = 2};
	struct srv_listen_opts lo = {.addr = "127.0.0.1:0"};
	SSL_CTX *sctx;
	const char *err = NULL;

	memset(fx, 0, sizeof(*fx));
	table_n = n;
	table = calloc(n, sizeof(*table));
	assert_non_null(table);
	atomic_store(&bad_lines, 0);
	pki_make();

	/* Direct descriptors keep the server's sockets out of the fd
	 * table on io_uring. */
	so.direct = !t_epoll();
	so.loop.backend = t_backend;
	so.loop.mode = t_mode;
	assert_int_equal(srv_new(&so, &fx->s), 0);
	assert_int_equal(srv_service_add(fx->s, &service, &fx->svc), 0);
	if (srv_listen(fx->svc, &lo, &err) != 0)
		fail_msg("srv_listen: %s", err);
	lo.tls = true;
	if (srv_listen(fx->svc, &lo, &err) != 0)
		fail_msg("srv_listen tls: %s", err);
	fx->port = port_of(fx->svc, 0);
	fx->tls_port = port_of(fx->svc, 1);

	sctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(sctx);
	assert_int_equal(SSL_CTX_use_certificate(sctx, srv_cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(sctx, srv_key), 1);
	assert_int_equal(srv_set_tls_ctx(fx->s, sctx), 0);
	SSL_CTX_free(sctx); /* the server holds its own reference */

	fx->cctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(fx->cctx);
	assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(fx->cctx),
					     srv_cert),
			 1);
	SSL_CTX_set_verify(fx->cctx, SSL_VERIFY_PEER, NULL);

	assert_int_equal(srv_start(fx->s), 0);
	assert_int_equal(pthread_create(&fx->runner, NULL, runner, fx), 0);
}

static void fx_stop(struct fixture *fx)
{
	struct srv_stats st;

	srv_stats(fx->s, &st);
	srv_stop(fx->s);
	assert_int_equal(pthread_join(fx->runner, NULL), 0);
	assert_int_equal(fx->run_ret, 0);
	for (size_t i = 0; i < table_n; i++)
		if (table[i] != NULL)
			srv_conn_unref(&table[i]);
	free(table);
	table = NULL;
	table_n = 0;
	srv_free(&fx->s);
	SSL_CTX_free(fx->cctx);
}

/*
 * ---------------------------------------------------------------------
 * The client side: one blocking socket each, optionally TLS, optionally
 * DEFLATE inside the TLS.
 * ---------------------------------------------------------------------
 */
struct cl {
	int fd;
	SSL *ssl;
	bool z;
	z_stream zi, zo;
	size_t len;	    /* decoded bytes waiting in in[] */
	char in[512];	    /* decoded input */
	unsigned char raw[512]; /* compressed input (zi reads from it) */
};

static void raw_write(struct cl *k, const void *p, size_t n)
{
	const char *b = p;

	while (n > 0) {
		ssize_t w;

		if (k->ssl != NULL) {
			int r = SSL_write(k->ssl, b, (int)n);

			if (r <= 0)
				fail_msg("SSL_write: %d", SSL_get_error(k->ssl, r));
			w = r;
		} else {
			w = send(k->fd, b, n, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				fail_msg("send: %s", strerror(errno));
		}
		b += w;
		n -= (size_t)w;
	}
}

/* Bytes from the wire: > 0, or 0 at the end. Fails on a timeout. */
static size_t raw_read(struct cl *k, void *p, size_t n)
{
	for (;;) {
		if (k->ssl != NULL) {
			int r = SSL_read(k->ssl, p, (int)n);

			if (r > 0)
				return (size_t)r;
			if (SSL_get_error(k->ssl, r) == SSL_ERROR_ZERO_RETURN)
				return 0;
			fail_msg("SSL_read: error %d, errno %s",
				 SSL_get_error(k->ssl, r), strerror(errno));
		} else {
			ssize_t r = recv(k->fd, p, n, 0);

			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				fail_msg("recv: %s", strerror(errno));
			return (size_t)r;
		}
	}
}

static void cl_send(struct cl *k, const char *s)
{
	unsigned char out[1024];

	if (!k->z) {
		raw_write(k, s, strlen(s));
		return;
	}
	k->zo.next_in = (unsigned char *)s;
	k->zo.avail_in = (unsigned)strlen(s);
	do {
		k->zo.next_out = out;
		k->zo.avail_out = sizeof(out);
		assert_int_equal(deflate(&k->zo, Z_SYNC_FLUSH), Z_OK);
		raw_write(k, out, sizeof(out) - k->zo.avail_out);
	} while (k->zo.avail_out == 0);
}

/* More decoded input into k->in; false at the end of the stream. */
static bool cl_fill(struct cl *k)
{
	if (!k->z) {
		size_t n = raw_read(k, k->in + k->len, sizeof(k->in) - k->len);

		k->len += n;
		return n > 0;
	}
	for (;;) {
		size_t before = k->len;
		int r;

		if (k->zi.avail_in == 0) {
			size_t n = raw_read(k, k->raw, sizeof(k->raw));

			if (n == 0)
				return false;
			k->zi.next_in = k->raw;
			k->zi.avail_in = (unsigned)n;
		}
		k->zi.next_out = (unsigned char *)k->in + k->len;
		k->zi.avail_out = (unsigned)(sizeof(k->in) - k->len);
		r = inflate(&k->zi, Z_SYNC_FLUSH);
		if (r != Z_OK && r != Z_BUF_ERROR)
			fail_msg("inflate: %d", r);
		k->len = sizeof(k->in) - k->zi.avail_out;
		if (k->len > before)
			return true;
	}
}

/* The next bytes must be want. */
static void cl_expect(struct cl *k, size_t idx, const char *want)
{
	size_t n = strlen(want);

	assert_true(n <= sizeof(k->in));
	while (k->len < n)
		if (!cl_fill(k))
			fail_msg("connection %zu: end of stream, want %s", idx,
				 want);
	if (memcmp(k->in, want, n) != 0)
		fail_msg("connection %zu: got '%.*s', want '%s'", idx, (int)n,
			 k->in, want);
	memmove(k->in, k->in + n, k->len - n);
	k->len -= n;
}

static void cl_open(struct fixture *fx, struct cl *k, bool tls, bool z)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	struct timeval tv = {.tv_sec = 30};
	int one = 1;

	memset(k, 0, sizeof(*k));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons(tls ? fx->tls_port : fx->port);
	k->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(k->fd >= 0);
	assert_int_equal(connect(k->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(setsockopt(k->fd, SOL_SOCKET, SO_RCVTIMEO, &tv,
				    sizeof(tv)),
			 0);
	assert_int_equal(setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one,
				    sizeof(one)),
			 0);
	if (tls) {
		k->ssl = SSL_new(fx->cctx);
		assert_non_null(k->ssl);
		assert_int_equal(SSL_set_fd(k->ssl, k->fd), 1);
		if (SSL_connect(k->ssl) != 1)
			fail_msg("SSL_connect: %s",
				 ERR_reason_error_string(ERR_get_error()));
	}
	(void)z; /* DEFLATE starts later, by command */
}

static void cl_start_z(struct cl *k)
{
	/* A small window and memory level for the client's compressor
	 * (the server inflates any window); the full window to inflate. */
	assert_int_equal(deflateInit2(&k->zo, 6, Z_DEFLATED, -9, 1,
				      Z_DEFAULT_STRATEGY),
			 Z_OK);
	assert_int_equal(inflateInit2(&k->zi, -15), Z_OK);
	k->z = true;
}

/*
 * Orderly end: close_notify for TLS, then FIN. The parked connection
 * wakes to it ("woke 1"), reads the end and closes in turn: the end of
 * the stream here (for TLS, the server's close_notify), nothing more.
 */
static void cl_close(struct cl *k, size_t idx)
{
	char want[32];

	if (k->ssl != NULL)
		assert_true(SSL_shutdown(k->ssl) >= 0);
	assert_int_equal(shutdown(k->fd, SHUT_WR), 0);
	snprintf(want, sizeof(want), "woke %u\n", SRV_WAKE_INPUT);
	cl_expect(k, idx, want);
	if (cl_fill(k))
		fail_msg("connection %zu: %zu bytes after the end", idx,
			 k->len);
	if (k->ssl != NULL)
		SSL_free(k->ssl);
	if (k->z) {
		deflateEnd(&k->zo);
		inflateEnd(&k->zi);
	}
	close(k->fd);
}

/* Wait until n connections are parked (or fail after 30 s). */
static void wait_parked(struct fixture *fx, uint64_t n, const char *when)
{
	struct srv_stats st;

	for (int i = 0; i < 3000; i++) {
		srv_stats(fx->s, &st);
		if (st.conns_parked == n)
			return;
		usleep(10000);
	}
	fail_msg("%s: %llu of %llu connections parked", when,
		 (unsigned long long)st.conns_parked, (unsigned long long)n);
}

/* A payload of its own for connection i in round r: 1..300 bytes. */
static void payload(size_t i, unsigned r, char *out, size_t size)
{
	uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ (r + 1) * 0xbf58476d1ce4e5b9ull;
	size_t n = 1 + (size_t)(x % 300);
	static const char abc[] = "abcdefghijklmnopqrstuvwxyz"
				  "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,-";

	assert_true(n + 1 <= size);
	for (size_t j = 0; j < n; j++) {
		x ^= x >> 31;
		x *= 0x94d049bb133111ebull;
		out[j] = abc[(x >> 40) % (sizeof(abc) - 1)];
	}
	out[n] = '\0';
}

/*
 * n connections (TLS: tls; DEFLATE inside: z) through every kind of
 * wake; every byte checked, nothing open or parked at the end.
 */
static void run_park(size_t n, bool tls, bool z)
{
	struct fixture fx;
	struct srv_stats st;
	struct cl *k = calloc(n, sizeof(*k));
	char line[512], want[512], p[400];
	uint64_t t0 = t_now_ms();

	assert_non_null(k);
	fx_start(&fx, n);

	/* Connect in batches; each registers and parks. */
	for (size_t b = 0; b < n; b += BATCH) {
		size_t e = b + BATCH < n ? b + BATCH : n;

		for (size_t i = b; i < e; i++) {
			cl_open(&fx, &k[i], tls, z);
			snprintf(line, sizeof(line), "hi %zu\n", i);
			cl_send(&k[i], line);
		}
		for (size_t i = b; i < e; i++) {
			snprintf(want, sizeof(want), "ok %zu\n", i);
			cl_expect(&k[i], i, want);
		}
	}
	wait_parked(&fx, n, "after connecting");
	print_message("%zu connections parked (%s) in %llu ms\n", n,
		      z ? "TLS+DEFLATE" : tls ? "TLS" : "plain",
		      (unsigned long long)(t_now_ms() - t0));

	if (z) {
		for (size_t i = 0; i < n; i++)
			cl_send(&k[i], "COMPRESS\n");
		for (size_t i = 0; i < n; i++) {
			cl_expect(&k[i], i, "woke 1\nOK\n");
			cl_start_z(&k[i]);
		}
		wait_parked(&fx, n, "after COMPRESS");
	}

	/* Input wakes each, twice (the second time from a fresh park). */
	for (unsigned r = 0; r < 2; r++) {
		for (size_t i = 0; i < n; i++) {
			payload(i, r, p, sizeof(p));
			snprintf(line, sizeof(line), "echo %s\n", p);
			cl_send(&k[i], line);
		}
		for (size_t i = 0; i < n; i++) {
			payload(i, r, p, sizeof(p));
			snprintf(want, sizeof(want), "woke %u\n%s\n",
				 SRV_WAKE_INPUT, p);
			cl_expect(&k[i], i, want);
		}
		wait_parked(&fx, n, "after input");
	}

	/* A wait event wakes each: armed while running, due a second
	 * later while parked; the event writes first, then resume. */
	for (size_t i = 0; i < n; i++)
		cl_send(&k[i], "event\n");
	for (size_t i = 0; i < n; i++)
		cl_expect(&k[i], i, "woke 1\narmed\n");
	for (size_t i = 0; i < n; i++) {
		snprintf(want, sizeof(want), "ev\nwoke %u\n", SRV_WAKE_EVENT);
		cl_expect(&k[i], i, want);
	}
	wait_parked(&fx, n, "after the wait events");

	/* A notification from this thread wakes each. */
	for (size_t i = 0; i < n; i++) {
		assert_non_null(table[i]);
		assert_int_equal(srv_conn_notify(table[i]), 0);
	}
	for (size_t i = 0; i < n; i++) {
		snprintf(want, sizeof(want), "woke %u\n", SRV_WAKE_NOTIFY);
		cl_expect(&k[i], i, want);
	}
	wait_parked(&fx, n, "after the notifications");

	/* Input once more after all that: nothing was lost. */
	for (size_t i = 0; i < n; i++) {
		payload(i, 7, p, sizeof(p));
		snprintf(line, sizeof(line), "echo %s\n", p);
		cl_send(&k[i], line);
	}
	for (size_t i = 0; i < n; i++) {
		payload(i, 7, p, sizeof(p));
		snprintf(want, sizeof(want), "woke %u\n%s\n", SRV_WAKE_INPUT, p);
		cl_expect(&k[i], i, want);
	}

	/* The clients end; each parked connection wakes to its EOF. */
	for (size_t i = 0; i < n; i++)
		cl_close(&k[i], i);
	for (int i = 0; i < 500; i++) {
		srv_stats(fx.s, &st);
		if (st.conns_open == 0)
			break;
		usleep(10000);
	}
	assert_int_equal(st.conns_open, 0);
	assert_int_equal(st.conns_parked, 0);
	assert_int_equal(st.conns_total, n);
	assert_int_equal(st.tls_failures, 0);
	assert_int_equal(atomic_load(&bad_lines), 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(srv_conn_notify(table[i]), -ENOTCONN);
	fx_stop(&fx);
	free(k);
	print_message("%zu connections (%s) done in %llu ms\n", n,
		      z ? "TLS+DEFLATE" : tls ? "TLS" : "plain",
		      (unsigned long long)(t_now_ms() - t0));
}

static void test_srv_park_plain(void **state)
{
	(void)state;
	/* Both sides' sockets count on epoll: 2 x 9,000 under 20,000. */
	run_park(t_epoll() ? 9000 : 10000, false, false);
}

static void test_srv_park_tls(void **state)
{
	(void)state;
	run_park(N_TLS, true, false);
}

static void test_srv_park_tls_deflate(void **state)
{
	(void)state;
	run_park(N_TLS_Z, true, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_srv_park_plain),
		cmocka_unit_test(test_srv_park_tls),
		cmocka_unit_test(test_srv_park_tls_deflate),
	};
	int ret;

	t_require_loop();
	ret = t_run_groups("srv-park", tests, sizeof(tests) / sizeof(tests[0]));
	X509_free(srv_cert);
	EVP_PKEY_free(srv_key);
	return ret;
}
