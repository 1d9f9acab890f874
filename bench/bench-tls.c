/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/bench-tls: TLS and DEFLATE layers against OpenSSL and zlib direct. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
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

#include <ringprot/prot-layer.h>
#include <ringprot/prot.h>
#include <ringprot/uring.h>

/*
 * Each case runs its two ends in two threads over a loopback TCP
 * connection, so both sides of a comparison get the same two cores:
 *  - ringprot: every thread has its own ring (ur_loop); the protstreams
 *    and the layers do the I/O, blocking calls drive the loop;
 *  - peer: OpenSSL on its own socket BIO in a plain blocking loop
 *    (SSL_read/SSL_write/SSL_accept), and for DEFLATE zlib called
 *    directly around plain read(2)/write(2), with the same chunking
 *    (one sync flush per 4096-byte chunk) as the layer.
 * Printed: wall-clock rate, CPU seconds of both threads, and the ratio
 * ringprot/peer (above 1.00: ringprot is faster). Never pass/fail.
 *
 * Usage: bench-tls [MiB for bulk cases (default 256)] [handshakes (400)]
 *                  [only cases whose name contains this word]
 */

#define CHUNK 16384 /* application write size, both sides */

static size_t bulk_bytes = (size_t)256 << 20;
static const char *only;
static unsigned handshakes = 400;

static EVP_PKEY *key;
static X509 *cert;
static SSL_CTX *sctx, *cctx;

static uint64_t clock_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "bench-tls: %s\n", what);
	exit(1);
}

static void tcp_pair(int sv[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &alen) < 0)
		die("listen");
	sv[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sv[0] < 0 || connect(sv[0], (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	sv[1] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (sv[1] < 0)
		die("accept");
	setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	close(lfd);
}

static void make_tls(void)
{
	X509_NAME *n;

	key = EVP_EC_gen("P-256");
	cert = X509_new();
	if (key == NULL || cert == NULL)
		die("key");
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(cert), -60);
	X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
	X509_set_pubkey(cert, key);
	n = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
				   (const unsigned char *)"localhost", -1, -1,
				   0);
	X509_set_issuer_name(cert, n);
	X509_sign(cert, key, EVP_sha256());
	sctx = SSL_CTX_new(TLS_server_method());
	cctx = SSL_CTX_new(TLS_client_method());
	if (sctx == NULL || cctx == NULL ||
	    SSL_CTX_use_certificate(sctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey(sctx, key) != 1)
		die("SSL_CTX");
	/* Full handshakes every time: no resumption in the handshake case. */
	SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(sctx, 0);
}

/* One case: a() and b() on the two ends, each in its own thread. */
struct end {
	int fd;
	int (*fn)(struct end *);
	bool ring; /* needs a ur_loop on its thread */
	int ret;
	uint64_t cpu_ns;
	struct ur_loop *loop;
};

static void *end_main(void *arg)
{
	struct end *e = arg;
	uint64_t c0;

	if (e->ring && ur_loop_new(NULL, &e->loop) < 0)
		die("ur_loop_new");
	c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	e->ret = e->fn(e);
	e->cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
	ur_loop_free(&e->loop);
	return NULL;
}

struct result {
	double wall_s, cpu_s;
};

static struct result run_case(int (*a)(struct end *), int (*b)(struct end *),
			      bool ring)
{
	struct end ea = {.fn = a, .ring = ring}, eb = {.fn = b, .ring = ring};
	pthread_t ta, tb;
	struct result r;
	uint64_t t0;
	int sv[2];

	tcp_pair(sv);
	ea.fd = sv[0];
	eb.fd = sv[1];
	t0 = clock_ns(CLOCK_MONOTONIC);
	if (pthread_create(&ta, NULL, end_main, &ea) != 0)
		die("pthread_create");
	if (pthread_create(&tb, NULL, end_main, &eb) != 0)
		die("pthread_create");
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	r.wall_s = (double)(clock_ns(CLOCK_MONOTONIC) - t0) / 1e9;
	r.cpu_s = (double)(ea.cpu_ns + eb.cpu_ns) / 1e9;
	close(sv[0]);
	close(sv[1]);
	if (ea.ret != 0 || eb.ret != 0) {
		fprintf(stderr, "case failed: %d %d\n", ea.ret, eb.ret);
		exit(1);
	}
	return r;
}

static unsigned char *payload; /* bulk_bytes of text-like data */
static unsigned char *noise;   /* bulk_bytes of random data */

/*
 * TLS throughput: a sends bulk_bytes, b reads them.
 */
static int ring_tls_send(struct end *e)
{
	struct protstream *in = prot_new(e->fd, 0), *out = prot_new(e->fd, 1);
	int ret = pl_tls_connect(in, out, cctx, NULL, 10000, NULL);

	for (size_t off = 0; ret == 0 && off < bulk_bytes; off += CHUNK)
		if (prot_write(out, (char *)payload + off, CHUNK) != 0)
			ret = -1;
	if (ret == 0 && prot_flush(out) != 0)
		ret = -2;
	if (ret == 0)
		ret = pl_tls_shutdown(in, out, 10000);
	prot_free(in);
	prot_free(out);
	return ret;
}

static int ring_tls_recv(struct end *e)
{
	struct protstream *in = prot_new(e->fd, 0), *out = prot_new(e->fd, 1);
	char *buf = malloc(CHUNK);
	size_t got = 0;
	int ret = pl_tls_accept(in, out, sctx, 10000, NULL), n;

	while (ret == 0 && (n = prot_read(in, buf, CHUNK)) > 0)
		got += (size_t)n;
	if (ret == 0 && got != bulk_bytes)
		ret = -3;
	if (ret == 0)
		ret = pl_tls_shutdown(NULL, out, 10000);
	free(buf);
	prot_free(in);
	prot_free(out);
	return ret;
}

static int ossl_tls_send(struct end *e)
{
	SSL *ssl = SSL_new(cctx);
	int ret = 0;

	SSL_set_fd(ssl, e->fd);
	if (SSL_connect(ssl) != 1)
		ret = -1;
	for (size_t off = 0; ret == 0 && off < bulk_bytes; off += CHUNK)
		if (SSL_write(ssl, payload + off, CHUNK) != CHUNK)
			ret = -2;
	if (ret == 0)
		SSL_shutdown(ssl);
	/* Wait for the peer's close_notify, as the ring side does. */
	if (ret == 0) {
		char c;

		(void)SSL_read(ssl, &c, 1);
	}
	SSL_free(ssl);
	return ret;
}

static int ossl_tls_recv(struct end *e)
{
	SSL *ssl = SSL_new(sctx);
	char *buf = malloc(CHUNK);
	size_t got = 0;
	int ret = 0, n;

	SSL_set_fd(ssl, e->fd);
	if (SSL_accept(ssl) != 1)
		ret = -1;
	while (ret == 0 && (n = SSL_read(ssl, buf, CHUNK)) > 0)
		got += (size_t)n;
	if (ret == 0 && got != bulk_bytes)
		ret = -3;
	if (ret == 0)
		SSL_shutdown(ssl);
	SSL_free(ssl);
	free(buf);
	return ret;
}

/*
 * Round trips: the client sends a 64-byte command, the server answers
 * with 64 bytes, RTRIPS times over one connection (an IMAP-like
 * request/response pattern: per-record costs, BIO buffer handling and
 * one flush per message show here, not in bulk).
 */
#define RTRIPS 20000
#define RTMSG  64

static int ring_rt(struct end *e, bool server)
{
	struct protstream *in = prot_new(e->fd, 0), *out = prot_new(e->fd, 1);
	char buf[RTMSG];
	int ret = server ? pl_tls_accept(in, out, sctx, 10000, NULL)
			 : pl_tls_connect(in, out, cctx, NULL, 10000, NULL);

	memset(buf, 'r', sizeof(buf));
	for (unsigned i = 0; ret == 0 && i < RTRIPS; i++) {
		if (!server &&
		    (prot_write(out, buf, RTMSG) != 0 || prot_flush(out) != 0))
			ret = -1;
		for (int got = 0, n; ret == 0 && got < RTMSG; got += n) {
			n = prot_read(in, buf + got, (unsigned)(RTMSG - got));
			if (n <= 0)
				ret = -2;
		}
		if (ret == 0 && server &&
		    (prot_write(out, buf, RTMSG) != 0 || prot_flush(out) != 0))
			ret = -3;
	}
	prot_free(in);
	prot_free(out);
	return ret;
}

static int ring_rt_server(struct end *e)
{
	return ring_rt(e, true);
}

static int ring_rt_client(struct end *e)
{
	return ring_rt(e, false);
}

static int ossl_rt(struct end *e, bool server)
{
	SSL *ssl = SSL_new(server ? sctx : cctx);
	char buf[RTMSG];
	int ret = 0;

	memset(buf, 'r', sizeof(buf));
	SSL_set_fd(ssl, e->fd);
	if ((server ? SSL_accept(ssl) : SSL_connect(ssl)) != 1)
		ret = -1;
	for (unsigned i = 0; ret == 0 && i < RTRIPS; i++) {
		if (!server && SSL_write(ssl, buf, RTMSG) != RTMSG)
			ret = -2;
		for (int got = 0, n; ret == 0 && got < RTMSG; got += n) {
			n = SSL_read(ssl, buf + got, RTMSG - got);
			if (n <= 0)
				ret = -3;
		}
		if (ret == 0 && server && SSL_write(ssl, buf, RTMSG) != RTMSG)
			ret = -4;
	}
	SSL_free(ssl);
	return ret;
}

static int ossl_rt_server(struct end *e)
{
	return ossl_rt(e, true);
}

static int ossl_rt_client(struct end *e)
{
	return ossl_rt(e, false);
}

/*
 * Handshake rate: handshakes full TLS 1.3 handshakes, one connection
 * each (a fresh loopback connection per handshake, made before the
 * clock starts), one byte each way to finish.
 */
static int hs_fds[2][4096];

static int ring_hs(struct end *e, bool server)
{
	int ret = 0;

	(void)e;
	for (unsigned i = 0; ret == 0 && i < handshakes; i++) {
		int fd = hs_fds[server ? 1 : 0][i];
		struct protstream *in = prot_new(fd, 0), *out = prot_new(fd, 1);

		ret = server ? pl_tls_accept(in, out, sctx, 10000, NULL)
			     : pl_tls_connect(in, out, cctx, NULL, 10000, NULL);
		if (ret == 0 && server &&
		    (prot_putc('x', out) != 0 || prot_flush(out) != 0))
			ret = -1;
		if (ret == 0 && !server && prot_getc(in) != 'x')
			ret = -2;
		prot_free(in);
		prot_free(out);
	}
	return ret;
}

static int ring_hs_server(struct end *e)
{
	return ring_hs(e, true);
}

static int ring_hs_client(struct end *e)
{
	return ring_hs(e, false);
}

static int ossl_hs(struct end *e, bool server)
{
	int ret = 0;

	(void)e;
	for (unsigned i = 0; ret == 0 && i < handshakes; i++) {
		SSL *ssl = SSL_new(server ? sctx : cctx);
		char c = 'x';

		SSL_set_fd(ssl, hs_fds[server ? 1 : 0][i]);
		if ((server ? SSL_accept(ssl) : SSL_connect(ssl)) != 1)
			ret = -1;
		if (ret == 0 && server && SSL_write(ssl, &c, 1) != 1)
			ret = -2;
		if (ret == 0 && !server && SSL_read(ssl, &c, 1) != 1)
			ret = -3;
		SSL_free(ssl);
	}
	return ret;
}

static int ossl_hs_server(struct end *e)
{
	return ossl_hs(e, true);
}

static int ossl_hs_client(struct end *e)
{
	return ossl_hs(e, false);
}

static void hs_open(void)
{
	for (unsigned i = 0; i < handshakes; i++) {
		int sv[2];

		tcp_pair(sv);
		hs_fds[0][i] = sv[0];
		hs_fds[1][i] = sv[1];
	}
}

static void hs_close(void)
{
	for (unsigned i = 0; i < handshakes; i++) {
		close(hs_fds[0][i]);
		close(hs_fds[1][i]);
	}
}

/*
 * DEFLATE throughput: a compresses src and sends, b inflates and counts.
 * The peer chunks as the layer does: 4096 bytes per deflate call with
 * Z_SYNC_FLUSH, at the same level 6, window bits -15, memory level 9.
 */
static const unsigned char *zsrc;

static int ring_z_send(struct end *e)
{
	struct protstream *out = prot_new(e->fd, 1);
	int ret = pl_zlib_start(out, -1);

	for (size_t off = 0; ret == 0 && off < bulk_bytes; off += CHUNK)
		if (prot_write(out, (const char *)zsrc + off, CHUNK) != 0)
			ret = -1;
	if (ret == 0 && prot_flush(out) != 0)
		ret = -2;
	shutdown(e->fd, SHUT_WR);
	prot_free(out);
	return ret;
}

static int ring_z_recv(struct end *e)
{
	struct protstream *in = prot_new(e->fd, 0);
	char *buf = malloc(CHUNK);
	size_t got = 0;
	int ret = pl_zlib_start(in, -1), n;

	while (ret == 0 && (n = prot_read(in, buf, CHUNK)) > 0)
		got += (size_t)n;
	free(buf);
	prot_free(in);
	return ret == 0 && got == bulk_bytes ? 0 : -3;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int zlib_send(struct end *e)
{
	unsigned char *out = malloc(2 * 4096 + 64);
	z_stream z = {0};
	int ret = 0;

	deflateInit2(&z, 6, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY);
	for (size_t off = 0; ret == 0 && off < bulk_bytes; off += 4096) {
		z.next_in = (Bytef *)(uintptr_t)(zsrc + off);
		z.avail_in = 4096;
		z.next_out = out;
		z.avail_out = 2 * 4096 + 64;
		if (deflate(&z, Z_SYNC_FLUSH) != Z_OK ||
		    write_all(e->fd, out, 2 * 4096 + 64 - z.avail_out) < 0)
			ret = -1;
	}
	deflateEnd(&z);
	shutdown(e->fd, SHUT_WR);
	free(out);
	return ret;
}

static int zlib_recv(struct end *e)
{
	unsigned char *in = malloc(4096), *out = malloc(65536);
	z_stream z = {0};
	size_t got = 0;
	ssize_t n;
	int ret = 0;

	inflateInit2(&z, -15);
	while (ret == 0 && (n = read(e->fd, in, 4096)) > 0) {
		z.next_in = in;
		z.avail_in = (uInt)n;
		do {
			z.next_out = out;
			z.avail_out = 65536;
			if (inflate(&z, Z_SYNC_FLUSH) == Z_DATA_ERROR)
				ret = -1;
			got += 65536 - z.avail_out;
		} while (ret == 0 && z.avail_out == 0);
	}
	inflateEnd(&z);
	free(in);
	free(out);
	return ret == 0 && got == bulk_bytes ? 0 : -3;
}

static void report(const char *name, double units, const char *unit,
		   struct result ring, struct result peer)
{
	printf("%-26s ringprot %9.1f %s/s (cpu %5.2f s)   peer %9.1f %s/s "
	       "(cpu %5.2f s)   ratio %.2f\n",
	       name, units / ring.wall_s, unit, ring.cpu_s, units / peer.wall_s,
	       unit, peer.cpu_s, peer.wall_s / ring.wall_s);
}

/* Best of three runs of each side, alternated. */
static void compare(const char *name, double units, const char *unit,
		    int (*ra)(struct end *), int (*rb)(struct end *),
		    int (*pa)(struct end *), int (*pb)(struct end *),
		    void (*before)(void), void (*after)(void))
{
	struct result best_r = {1e9, 0}, best_p = {1e9, 0}, r;

	if (only != NULL && strstr(name, only) == NULL)
		return;
	for (int i = 0; i < 3; i++) {
		if (before != NULL)
			before();
		r = run_case(ra, rb, true);
		if (after != NULL)
			after();
		if (r.wall_s < best_r.wall_s)
			best_r = r;
		if (before != NULL)
			before();
		r = run_case(pa, pb, false);
		if (after != NULL)
			after();
		if (r.wall_s < best_p.wall_s)
			best_p = r;
	}
	report(name, units, unit, best_r, best_p);
}

int main(int argc, char **argv)
{
	double mib;
	uint64_t st = 0x2545f4914f6cdd1dULL;

	if (argc > 1)
		bulk_bytes = (size_t)strtoul(argv[1], NULL, 10) << 20;
	if (argc > 2)
		handshakes = (unsigned)strtoul(argv[2], NULL, 10);
	if (argc > 3)
		only = argv[3];
	if (bulk_bytes == 0 || handshakes == 0 || handshakes > 4096)
		die("usage: bench-tls [MiB] [handshakes <= 4096]");
	bulk_bytes -= bulk_bytes % CHUNK;
	mib = (double)bulk_bytes / (1 << 20);
	payload = malloc(bulk_bytes);
	noise = malloc(bulk_bytes);
	if (payload == NULL || noise == NULL)
		die("memory");
	for (size_t i = 0; i < bulk_bytes; i++) {
		static const char text[] =
			"* 42 FETCH (UID 4711 FLAGS (\\Seen) "
			"BODY[] {1024}\r\nSubject: hello ";

		st ^= st << 13;
		st ^= st >> 7;
		st ^= st << 17;
		noise[i] = (unsigned char)(st >> 32);
		payload[i] =
			(st & 7) == 0
				? (unsigned char)('a' + (st >> 40) % 26)
				: (unsigned char)text[i % (sizeof(text) - 1)];
	}
	make_tls();
	printf("bench-tls: %.0f MiB per bulk case, %u handshakes, 2 threads "
	       "per case; kTLS %s\n",
	       mib, handshakes,
	       pl_ktls_available() ? "available (unused)" : "not available");
	compare("TLS 1.3 bulk (MiB)", mib, "MiB", ring_tls_send, ring_tls_recv,
		ossl_tls_send, ossl_tls_recv, NULL, NULL);
	compare("TLS 1.3 round trips", RTRIPS, "rt", ring_rt_client,
		ring_rt_server, ossl_rt_client, ossl_rt_server, NULL, NULL);
	compare("TLS 1.3 handshakes", handshakes, "hs", ring_hs_client,
		ring_hs_server, ossl_hs_client, ossl_hs_server, hs_open,
		hs_close);
	zsrc = payload;
	compare("DEFLATE text (MiB)", mib, "MiB", ring_z_send, ring_z_recv,
		zlib_send, zlib_recv, NULL, NULL);
	zsrc = noise;
	compare("DEFLATE random (MiB)", mib, "MiB", ring_z_send, ring_z_recv,
		zlib_send, zlib_recv, NULL, NULL);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	X509_free(cert);
	EVP_PKEY_free(key);
	free(payload);
	free(noise);
	return 0;
}
