/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-zlib: the COMPRESS=DEFLATE layer, with Python's zlib as peer. */
#include "t-helpers.h"

#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <ringprot/prot-layer.h>
#include <ringprot/prot.h>

extern char **environ;

static const unsigned char sync_marker[4] = {0x00, 0x00, 0xff, 0xff};

/* A deterministic byte generator (xorshift), for payloads. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint8_t rnd8(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint8_t)(rng_state >> 24);
}

static void fill_random(unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = rnd8();
}

/* Text-like bytes that compress (about 3:1 or better). */
static void fill_text(unsigned char *p, size_t n)
{
	static const char *const words[] = {"FETCH ",	 "BODY[] ",
					    "* 12 ",	 "EXISTS\r\n",
					    "Subject: ", "hello ",
					    "world ",	 "ringprot ",
					    "deflate ",	 "0123456789 "};

	for (size_t i = 0; i < n;) {
		const char *w = words[rnd8() % 10];
		size_t k = strlen(w);

		if (k > n - i)
			k = n - i;
		memcpy(p + i, w, k);
		i += k;
	}
}

/* Read what the socket holds now (at least one byte, waiting briefly). */
static size_t read_avail(int fd, unsigned char *buf, size_t cap)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	size_t got = 0;
	ssize_t n;

	while (got < cap && poll(&pfd, 1, got == 0 ? 2000 : 50) > 0) {
		n = read(fd, buf + got, cap - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

/* Raw-inflate everything in wire (an independent zlib stream). */
static size_t raw_inflate(z_stream *z, const unsigned char *wire, size_t n,
			  unsigned char *out, size_t cap)
{
	int zret;

	z->next_in = (Bytef *)(uintptr_t)wire;
	z->avail_in = (uInt)n;
	z->next_out = out;
	z->avail_out = (uInt)cap;
	zret = inflate(z, Z_SYNC_FLUSH);
	assert_true(zret == Z_OK || zret == Z_BUF_ERROR);
	assert_int_equal(z->avail_in, 0);
	return cap - z->avail_out;
}

static size_t raw_deflate(z_stream *z, const void *in, size_t n,
			  unsigned char *out, size_t cap)
{
	z->next_in = (Bytef *)(uintptr_t)in;
	z->avail_in = (uInt)n;
	z->next_out = out;
	z->avail_out = (uInt)cap;
	assert_int_equal(deflate(z, Z_SYNC_FLUSH), Z_OK);
	assert_int_equal(z->avail_in, 0);
	assert_true(z->avail_out > 0);
	return cap - z->avail_out;
}

/* A pair for round trips: out on sv[0] writes to in on sv[1]. */
static void zpair_open(int sv[2], struct protstream **in_out,
		       struct protstream **out_out)
{
	t_socketpair(sv);
	*out_out = prot_new(sv[0], 1);
	*in_out = prot_new(sv[1], 0);
}

static void zpair_close(int sv[2], struct protstream *in,
			struct protstream *out)
{
	prot_free(in);
	prot_free(out);
	close(sv[0]);
	close(sv[1]);
}

/*
 * Spec 5.7 #66: output before prot_setcompress leaves in plaintext, the
 * rest is raw DEFLATE, and every flush ends with the sync marker.
 */
static void test_prot_zlib_wire_format(void **state)
{
	static const char *const lines[] = {"hello hello hello hello\r\n",
					    "* 1 EXISTS\r\n",
					    "a001 OK done\r\n"};
	unsigned char wire[4096], plain[4096];
	struct protstream *out;
	z_stream z = {0};
	size_t n, k;
	int sv[2];

	(void)state;
	t_socketpair(sv);
	out = prot_new(sv[0], 1);
	assert_non_null(out);
	assert_int_equal(prot_printf(out, "plain\r\n"), 0);
	assert_null(out->zstrm);
	assert_int_equal(prot_setcompress(out), 0);
	assert_non_null(out->zstrm);
	/* The switch flushed the plaintext, and only that. */
	n = read_avail(sv[1], wire, sizeof(wire));
	assert_int_equal(n, 7);
	assert_memory_equal(wire, "plain\r\n", 7);

	assert_int_equal(inflateInit2(&z, -15), Z_OK);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(prot_puts(out, lines[i]), 0);
		assert_int_equal(prot_flush(out), 0);
		n = read_avail(sv[1], wire, sizeof(wire));
		assert_true(n > 4);
		assert_memory_equal(wire + n - 4, sync_marker, 4);
		k = raw_inflate(&z, wire, n, plain, sizeof(plain));
		assert_int_equal(k, strlen(lines[i]));
		assert_memory_equal(plain, lines[i], k);
	}
	/* An empty flush sends nothing, not even a marker. */
	assert_int_equal(prot_flush(out), 0);
	assert_int_equal(recv(sv[1], wire, 1, MSG_DONTWAIT), -1);
	inflateEnd(&z);

	/* Off again: plaintext, s->zstrm cleared (Cyrus code tests it). */
	prot_unsetcompress(out);
	assert_null(out->zstrm);
	assert_int_equal(prot_puts(out, "bye\r\n"), 0);
	assert_int_equal(prot_flush(out), 0);
	n = read_avail(sv[1], wire, sizeof(wire));
	assert_int_equal(n, 5);
	assert_memory_equal(wire, "bye\r\n", 5);
	prot_free(out);
	close(sv[0]);
	close(sv[1]);
}

/* Spec 5.7 #67: 200 000 'A's, windows of at most 4102 bytes, then EOF. */
static void test_prot_zlib_round_trip_windows(void **state)
{
	static char big[200000];
	static char got[8192];
	struct protstream *in, *out;
	size_t total = 0;
	int sv[2], n, first = 0;

	(void)state;
	zpair_open(sv, &in, &out);
	assert_int_equal(prot_setcompress(out), 0);
	assert_int_equal(prot_setcompress(in), 0);
	memset(big, 'A', sizeof(big));
	assert_int_equal(prot_write(out, big, sizeof(big)), 0);
	assert_int_equal(prot_flush(out), 0);
	shutdown(sv[0], SHUT_WR);
	while ((n = prot_read(in, got, sizeof(got))) > 0) {
		if (first == 0)
			first = n;
		assert_true(n <= 4102);
		for (int i = 0; i < n; i++)
			assert_int_equal(got[i], 'A');
		total += (size_t)n;
	}
	assert_int_equal(first, 4102);
	assert_int_equal(total, sizeof(big));
	assert_true(prot_IS_EOF(in));
	assert_string_equal(prot_error(in), PROT_EOF_STRING);
	zpair_close(sv, in, out);
}

/*
 * Spec 5.7 #68, fixed (6 item 11): a plaintext command and compressed
 * bytes in one read before the reader's switch. After the switch the
 * application reads the decompressed text, never the raw DEFLATE bytes.
 */
static void test_prot_zlib_refeeds_buffered_input(void **state)
{
	static const char cmd[] = "a COMPRESS DEFLATE\r\n";
	static const char after[] = "b NOOP\r\nc LOGOUT\r\n";
	unsigned char wire[512];
	char line[128];
	struct protstream *in;
	z_stream z = {0};
	size_t n;
	int sv[2];

	(void)state;
	t_socketpair(sv);
	in = prot_new(sv[0], 0);
	assert_int_equal(
		deflateInit2(&z, 6, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY),
		Z_OK);
	memcpy(wire, cmd, sizeof(cmd) - 1);
	n = sizeof(cmd) - 1;
	n += raw_deflate(&z, after, sizeof(after) - 1, wire + n,
			 sizeof(wire) - n);
	deflateEnd(&z);
	assert_int_equal(write(sv[1], wire, n), (ssize_t)n);

	assert_non_null(prot_fgets(line, sizeof(line), in));
	assert_string_equal(line, cmd);
	assert_true(in->cnt > 0); /* the compressed bytes are buffered */
	assert_int_equal(prot_setcompress(in), 0);
	assert_non_null(prot_fgets(line, sizeof(line), in));
	assert_string_equal(line, "b NOOP\r\n");
	assert_non_null(prot_fgets(line, sizeof(line), in));
	assert_string_equal(line, "c LOGOUT\r\n");
	prot_free(in);
	close(sv[0]);
	close(sv[1]);
}

/*
 * Spec 5.6 #64, fixed: while zlib (or the decoded buffer) still holds
 * plaintext, prot_select reports the stream at once, every time, until
 * all 200 000 bytes are read.
 */
static void test_prot_zlib_select_sees_inflate(void **state)
{
	static char big[200000];
	static char got[PROT_BUFSIZE * 2];
	struct protstream *in, *out;
	struct protgroup *g, *ready;
	size_t total = 0;
	int sv[2], n;

	(void)state;
	zpair_open(sv, &in, &out);
	assert_int_equal(prot_setcompress(out), 0);
	assert_int_equal(prot_setcompress(in), 0);
	memset(big, 'z', sizeof(big));
	assert_int_equal(prot_write(out, big, sizeof(big)), 0);
	assert_int_equal(prot_flush(out), 0);
	g = protgroup_new(1);
	protgroup_insert(g, in);
	while (total < sizeof(big)) {
		struct timeval tv = {2, 0};
		uint64_t t0 = t_now_ms();

		ready = NULL;
		assert_int_equal(prot_select(g, -1, &ready, NULL, &tv), 1);
		assert_true(t_now_ms() - t0 < 1000);
		assert_ptr_equal(protgroup_getelement(ready, 0), in);
		protgroup_free(ready);
		n = prot_read(in, got, sizeof(got));
		assert_true(n > 0);
		total += (size_t)n;
	}
	assert_int_equal(total, sizeof(big));
	protgroup_free(g);
	zpair_close(sv, in, out);
}

/* Fiber bodies: a writer of a buffer in odd pieces and a reader. */
struct xfer {
	struct protstream *s;
	unsigned char *data;
	size_t len;
	size_t got;
	int flush_every; /* write calls per flush */
	int fd_to_close; /* after writing: shutdown(SHUT_WR), -1: none */
};

static int writer_fiber(void *arg)
{
	static const unsigned sizes[] = {1,  7,	    4095, 4096, 4097,
					 13, 65536, 333,  9000, 2};
	struct xfer *x = arg;
	size_t off = 0;
	int i = 0;

	while (off < x->len) {
		size_t k = sizes[i % 10];

		if (k > x->len - off)
			k = x->len - off;
		if (prot_write(x->s, (const char *)x->data + off,
			       (unsigned)k) != 0)
			return -1;
		off += k;
		if (++i % x->flush_every == 0 && prot_flush(x->s) != 0)
			return -1;
	}
	if (prot_flush(x->s) != 0)
		return -1;
	if (x->fd_to_close >= 0)
		shutdown(x->fd_to_close, SHUT_WR);
	return 0;
}

static int reader_fiber(void *arg)
{
	struct xfer *x = arg;
	int n;

	while ((n = prot_read(x->s, (char *)x->data + x->got,
			      x->len - x->got > 5000
				      ? 5000
				      : (unsigned)(x->len - x->got + 1))) > 0) {
		x->got += (size_t)n;
		if (x->got > x->len)
			return -1;
	}
	return prot_IS_EOF(x->s) && prot_error(x->s) != NULL &&
			       strcmp(prot_error(x->s), PROT_EOF_STRING) == 0
		       ? 0
		       : -2;
}

static void run_pair(struct ur_loop *loop, ur_fiber_fn *a, void *aa,
		     ur_fiber_fn *b, void *ba)
{
	struct ur_fiber *fa, *fb;
	int ra = -9, rb = -9;

	assert_int_equal(ur_fiber_spawn(loop, a, aa, NULL, &fa), 0);
	assert_int_equal(ur_fiber_spawn(loop, b, ba, NULL, &fb), 0);
	assert_int_equal(ur_fiber_join(fa, &ra), 0);
	assert_int_equal(ur_fiber_join(fb, &rb), 0);
	assert_int_equal(ra, 0);
	assert_int_equal(rb, 0);
}

/*
 * Data that does not compress (random bytes) goes out as stored blocks
 * after the first miss; text after it is compressed again. Both round
 * trip exactly through two fibers of one loop.
 */
static void test_prot_zlib_incompressible(void **state)
{
	struct t_loop *tl = *state;
	const size_t half = 1 << 20;
	unsigned char *data = malloc(2 * half), *back = malloc(2 * half + 1);
	struct xfer w = {0}, r = {0};
	struct pl_zlib_stats st, rst;
	struct protstream *in, *out;
	int sv[2];

	fill_random(data, half);
	fill_text(data + half, half);
	zpair_open(sv, &in, &out);
	assert_int_equal(pl_zlib_start(out, 9), 0);
	assert_int_equal(pl_zlib_start(in, 0), 0);
	w = (struct xfer){.s = out,
			  .data = data,
			  .len = 2 * half,
			  .flush_every = 3,
			  .fd_to_close = sv[0]};
	r = (struct xfer){.s = in, .data = back, .len = 2 * half};
	run_pair(tl->loop, writer_fiber, &w, reader_fiber, &r);
	assert_int_equal(r.got, 2 * half);
	assert_memory_equal(back, data, 2 * half);

	assert_int_equal(pl_zlib_stats(out, &st), 0);
	assert_int_equal(st.plain, 2 * half);
	assert_true(st.chunks > 100);
	/* Most random chunks were stored, and the text shrank well. */
	assert_true(st.stored > st.chunks / 4);
	assert_true(st.wire < half + half / 2);
	assert_int_equal(pl_zlib_stats(in, &rst), 0);
	assert_int_equal(rst.plain, 2 * half);
	assert_int_equal(rst.wire, st.wire);
	zpair_close(sv, in, out);
	free(data);
	free(back);
}

/*
 * A bulk write through a layer grows the encoded scratch to a batch of
 * records (about 256 KiB); once the flush has sent it, the stream holds
 * none of it, so an idle connection after a large FETCH costs no more
 * than before it. Measured with mallinfo2 (glibc's heap; under ASan its
 * allocator is not counted there and the check holds trivially).
 */
static void test_prot_zlib_bulk_leaves_no_scratch(void **state)
{
	struct t_loop *tl = *state;
	const size_t len = 1 << 20;
	unsigned char *data = malloc(len), *back = malloc(len + 1);
	struct xfer w, r;
	struct protstream *in, *out;
	size_t before, after;
	int sv[2];

	fill_random(data, len);
	zpair_open(sv, &in, &out);
	assert_int_equal(pl_zlib_start(out, 1), 0);
	assert_int_equal(pl_zlib_start(in, 0), 0);
	before = mallinfo2().uordblks;
	w = (struct xfer){.s = out,
			  .data = data,
			  .len = len,
			  .flush_every = 1000,
			  .fd_to_close = sv[0]};
	r = (struct xfer){.s = in, .data = back, .len = len};
	run_pair(tl->loop, writer_fiber, &w, reader_fiber, &r);
	assert_int_equal(r.got, len);
	after = mallinfo2().uordblks;
	/* The reader's 64 KiB inflate window and zlib's state stay. */
	assert_true(after < before + 160 * 1024);
	zpair_close(sv, in, out);
	free(data);
	free(back);
}

/* Levels: configurable, checked, changeable between flushes. */
static void test_prot_zlib_levels(void **state)
{
	static unsigned char text[64 * 1024];
	struct pl_zlib_stats st;
	struct protstream *out, *map;
	size_t wire[3];
	int sv[2];
	const int levels[3] = {0, 1, 9};

	(void)state;
	fill_text(text, sizeof(text));
	for (int i = 0; i < 3; i++) {
		t_socketpair(sv);
		out = prot_new(sv[0], 1);
		assert_int_equal(pl_zlib_start(out, levels[i]), 0);
		assert_int_equal(pl_zlib_start(out, 5), -EALREADY);
		assert_int_equal(prot_write(out, (char *)text, 32768), 0);
		assert_int_equal(prot_flush(out), 0);
		assert_int_equal(pl_zlib_stats(out, &st), 0);
		wire[i] = st.wire;
		prot_free(out);
		close(sv[0]);
		close(sv[1]);
	}
	assert_true(wire[0] > 32768); /* stored */
	assert_true(wire[1] < 32768 / 2);
	assert_true(wire[2] <= wire[1]);

	t_socketpair(sv);
	out = prot_new(sv[0], 1);
	assert_int_equal(pl_zlib_start(out, 10), -EINVAL);
	assert_int_equal(pl_zlib_start(out, -2), -EINVAL);
	assert_int_equal(pl_zlib_set_level(out, 1), -EINVAL); /* not on */
	assert_int_equal(pl_zlib_start(out, 0), 0);
	assert_int_equal(prot_write(out, (char *)text, 8192), 0);
	assert_int_equal(prot_flush(out), 0);
	assert_int_equal(pl_zlib_stats(out, &st), 0);
	wire[0] = st.wire;
	assert_true(wire[0] > 8192);
	assert_int_equal(pl_zlib_set_level(out, 9), 0);
	assert_int_equal(pl_zlib_set_level(out, 11), -EINVAL);
	assert_int_equal(prot_write(out, (char *)text + 8192, 8192), 0);
	assert_int_equal(prot_flush(out), 0);
	assert_int_equal(pl_zlib_stats(out, &st), 0);
	assert_true(st.wire - wire[0] < 8192 / 2);
	prot_free(out);
	close(sv[0]);
	close(sv[1]);

	/* No layers on memory streams. */
	map = prot_readmap("abc", 3);
	assert_int_equal(pl_zlib_start(map, -1), -EINVAL);
	assert_int_equal(prot_setcompress(map), EOF);
	assert_int_equal(errno, EINVAL);
	assert_null(map->zstrm);
	prot_free(map);
}

/* Garbage and a premature final block: clear error text and EOF. */
static void test_prot_zlib_corrupt_input(void **state)
{
	static const unsigned char junk[] = {0xff, 0xff, 0xff, 0xff,
					     0x12, 0x34, 0x56, 0x78};
	unsigned char wire[256];
	struct protstream *in;
	z_stream z = {0};
	size_t n;
	int sv[2];

	(void)state;
	t_socketpair(sv);
	in = prot_new(sv[0], 0);
	assert_int_equal(prot_setcompress(in), 0);
	assert_int_equal(write(sv[1], junk, sizeof(junk)), sizeof(junk));
	assert_int_equal(prot_getc(in), EOF);
	assert_non_null(prot_error(in));
	assert_memory_equal(prot_error(in), "Error decompressing data", 24);
	assert_int_equal(errno, EBADMSG);
	assert_int_equal(prot_getc(in), EOF); /* sticky */
	prot_free(in);
	close(sv[0]);
	close(sv[1]);

	/* A final block (Z_FINISH) and more bytes after it. */
	t_socketpair(sv);
	in = prot_new(sv[0], 0);
	assert_int_equal(prot_setcompress(in), 0);
	assert_int_equal(
		deflateInit2(&z, 6, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY),
		Z_OK);
	z.next_in = (Bytef *)"last\n";
	z.avail_in = 5;
	z.next_out = wire;
	z.avail_out = sizeof(wire);
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	n = sizeof(wire) - z.avail_out;
	deflateEnd(&z);
	wire[n++] = 'X';
	assert_int_equal(write(sv[1], wire, n), (ssize_t)n);
	for (const char *p = "last\n"; *p != '\0'; p++)
		assert_int_equal(prot_getc(in), *p);
	assert_int_equal(prot_getc(in), EOF);
	assert_non_null(strstr(prot_error(in), "after the final block"));
	prot_free(in);
	close(sv[0]);
	close(sv[1]);
}

/*
 * One recv holds two raw windows: a stored block of 4091 bytes, then
 * DEFLATE data that inflates to more bytes, then garbage. The second
 * decode fails after some output, and the window it fails over (restored
 * as Cyrus does) must still be the first block's bytes: the decode may
 * neither write over it nor move it (realloc past 32 KiB: a use after
 * free under ASan).
 */
static void test_prot_zlib_error_keeps_window(void **state)
{
	static const size_t more[] = {10000, 40000};
	static unsigned char wire[16384], text[40000];

	(void)state;
	memset(text, 'B', sizeof(text));
	for (size_t t = 0; t < sizeof(more) / sizeof(more[0]); t++) {
		struct protstream *in;
		z_stream z = {0};
		size_t n = 0;
		int sv[2];

		wire[n++] = 0x00; /* stored, not final: LEN 4091, NLEN */
		wire[n++] = 0xfb;
		wire[n++] = 0x0f;
		wire[n++] = 0x04;
		wire[n++] = 0xf0;
		memset(wire + n, 'A', 4091);
		n += 4091;
		assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -15, 9,
					      Z_DEFAULT_STRATEGY),
				 Z_OK);
		n += raw_deflate(&z, text, more[t], wire + n,
				 sizeof(wire) - n - 1);
		deflateEnd(&z);
		wire[n++] = 0x07; /* a final block of the reserved type */
		t_socketpair(sv);
		assert_int_equal(write(sv[1], wire, n), (ssize_t)n);
		in = prot_new(sv[0], 0);
		assert_int_equal(prot_setcompress(in), 0);
		for (int i = 0; i < 4091; i++)
			assert_int_equal(prot_getc(in), 'A');
		assert_int_equal(prot_getc(in), EOF);
		assert_memory_equal(prot_error(in), "Error decompressing data",
				    24);
		assert_int_equal(prot_ungetc('A', in), 'A');
		assert_int_equal(prot_getc(in), 'A');
		prot_free(in);
		close(sv[0]);
		close(sv[1]);
	}
}

/* A callback stream that delivers one compressed byte per read. */
struct trickle {
	const unsigned char *p;
	size_t n, off;
};

static ssize_t trickle_cb(unsigned char *buf, size_t len, void *rock)
{
	struct trickle *t = rock;

	(void)len;
	if (t->off == t->n)
		return 0;
	buf[0] = t->p[t->off++];
	return 1;
}

static void test_prot_zlib_one_byte_reads(void **state)
{
	static unsigned char text[20000], wire[40000], back[20001];
	struct trickle t = {0};
	struct protstream *in;
	z_stream z = {0};
	size_t got = 0;
	int n;

	(void)state;
	fill_text(text, sizeof(text));
	assert_int_equal(
		deflateInit2(&z, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY),
		Z_OK);
	t.n = raw_deflate(&z, text, 7777, wire, sizeof(wire));
	t.n += raw_deflate(&z, text + 7777, sizeof(text) - 7777, wire + t.n,
			   sizeof(wire) - t.n);
	deflateEnd(&z);
	t.p = wire;
	in = prot_readcb(trickle_cb, &t);
	assert_int_equal(prot_setcompress(in), 0);
	while ((n = prot_read(in, (char *)back + got,
			      (unsigned)(sizeof(back) - got))) > 0)
		got += (size_t)n;
	assert_int_equal(got, sizeof(text));
	assert_memory_equal(back, text, sizeof(text));
	assert_true(prot_IS_EOF(in));
	prot_free(in);
}

/*
 * pl_zlib_activate: the tagged OK written before the call reaches the
 * wire uncompressed, everything after is compressed, and a compressed
 * command the client pipelined right after COMPRESS is read as text.
 */
static void test_prot_zlib_activate_reply_then_switch(void **state)
{
	static const char cmd[] = "a COMPRESS DEFLATE\r\n";
	unsigned char wire[1024], plain[1024];
	struct protstream *in, *out;
	z_stream zc = {0}, zs = {0};
	char line[64];
	size_t n, k;
	int sv[2];

	(void)state;
	t_socketpair(sv);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	assert_int_equal(
		deflateInit2(&zc, 6, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY),
		Z_OK);
	assert_int_equal(inflateInit2(&zs, -15), Z_OK);
	memcpy(wire, cmd, sizeof(cmd) - 1);
	n = sizeof(cmd) - 1;
	n += raw_deflate(&zc, "b NOOP\r\n", 8, wire + n, sizeof(wire) - n);
	assert_int_equal(write(sv[1], wire, n), (ssize_t)n);

	assert_non_null(prot_fgets(line, sizeof(line), in));
	assert_string_equal(line, cmd);
	assert_int_equal(prot_printf(out, "a OK DEFLATE active\r\n"), 0);
	assert_int_equal(pl_zlib_activate(in, out, -1), 0);
	assert_int_equal(pl_zlib_activate(in, out, -1), -EALREADY);
	n = read_avail(sv[1], wire, sizeof(wire));
	assert_int_equal(n, 21);
	assert_memory_equal(wire, "a OK DEFLATE active\r\n", 21);

	assert_non_null(prot_fgets(line, sizeof(line), in));
	assert_string_equal(line, "b NOOP\r\n");
	assert_int_equal(prot_printf(out, "b OK\r\n"), 0);
	assert_int_equal(prot_flush(out), 0);
	n = read_avail(sv[1], wire, sizeof(wire));
	assert_memory_equal(wire + n - 4, sync_marker, 4);
	k = raw_inflate(&zs, wire, n, plain, sizeof(plain));
	assert_int_equal(k, 6);
	assert_memory_equal(plain, "b OK\r\n", 6);
	deflateEnd(&zc);
	inflateEnd(&zs);
	zpair_close(sv, in, out);
}

/* Raw bytes of a socket until EOF, read on the ring from a fiber. */
struct drain {
	int fd;
	unsigned char *buf;
	size_t cap, n;
};

static int drain_fiber(void *arg)
{
	struct drain *d = arg;
	ssize_t r;

	while ((r = ur_recv(d->fd, d->buf + d->n, d->cap - d->n, 0)) > 0)
		d->n += (size_t)r;
	return r < 0 ? -1 : 0;
}

static int flush_fiber(void *arg)
{
	struct protstream *out = arg;
	int ret = prot_flush(out);

	shutdown(out->fd, SHUT_WR);
	return ret == 0 ? 0 : -1;
}

/* A non-blocking compressing writer keeps plaintext and DEFLATE in order. */
static void test_prot_zlib_nonblocking_order(void **state)
{
	struct t_loop *tl = *state;
	static unsigned char text[300000];
	unsigned char *plain = malloc(1 << 20);
	struct drain d = {.cap = 1 << 20};
	struct protstream *out;
	z_stream z = {0};
	size_t k;
	int sv[2], sz = 4096;

	t_socketpair(sv);
	d.buf = malloc(d.cap);
	d.fd = sv[1];
	assert_int_equal(
		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);
	fill_text(text, sizeof(text));
	out = prot_new(sv[0], 1);
	prot_NONBLOCK(out);
	assert_int_equal(prot_write(out, "pre\r\n", 5), 0);
	assert_int_equal(prot_write(out, (char *)text, 50000), 0);
	assert_int_equal(prot_setcompress(out), 0); /* queued, in order */
	assert_true(prot_queued(out) > 0);
	assert_int_equal(
		prot_write(out, (char *)text + 50000, sizeof(text) - 50000), 0);
	run_pair(tl->loop, flush_fiber, out, drain_fiber, &d);
	assert_true(d.n > 50005);
	assert_memory_equal(d.buf, "pre\r\n", 5);
	assert_memory_equal(d.buf + 5, text, 50000);
	assert_memory_equal(d.buf + d.n - 4, sync_marker, 4);
	assert_int_equal(inflateInit2(&z, -15), Z_OK);
	k = raw_inflate(&z, d.buf + 50005, d.n - 50005, plain, 1 << 20);
	inflateEnd(&z);
	assert_int_equal(k, sizeof(text) - 50000);
	assert_memory_equal(plain, text + 50000, k);
	prot_free(out);
	close(sv[0]);
	close(sv[1]);
	free(d.buf);
	free(plain);
}

/*
 * Interop with an independent implementation: Python's zlib (wbits -15)
 * as the peer over a socketpair. Python sends a payload of text and
 * random bytes, compressed at several levels with sync flushes at odd
 * sizes; we echo what we decode through our compressor; Python checks
 * that it inflates back to the payload, and that every chunk we flushed
 * ended with the sync marker, and exits 0.
 */
static const char py_peer[] =
	"import os, random, socket, sys, threading, zlib\n"
	"s = socket.socket(fileno=3)\n"
	"rng = random.Random(4978)\n"
	"parts = []\n"
	"for i in range(100):\n"
	"    n = rng.choice([1, 7, 100, 4095, 4096, 4097, 30000, 65536])\n"
	"    if i % 3 == 0:\n"
	"        parts.append(rng.randbytes(n))\n"
	"    else:\n"
	"        parts.append((b'* %d FETCH (UID %d) hello ' % (i, n) * n)[:n])\n"
	"payload = b''.join(parts)\n"
	"def send():\n"
	"    c = None\n"
	"    for i, p in enumerate(parts):\n"
	"        if i % 10 == 0:\n"
	"            lv = [1, 9, 0, 6][i // 10 % 4]\n"
	"            c = zlib.compressobj(lv, zlib.DEFLATED, -15, 8)\n"
	"        s.sendall(c.compress(p) + c.flush(zlib.Z_SYNC_FLUSH))\n"
	"    s.shutdown(socket.SHUT_WR)\n"
	"t = threading.Thread(target=send)\n"
	"t.start()\n"
	"d = zlib.decompressobj(-15)\n"
	"got = bytearray()\n"
	"raw = bytearray()\n"
	"while True:\n"
	"    b = s.recv(65536)\n"
	"    if not b:\n"
	"        break\n"
	"    raw += b\n"
	"    got += d.decompress(b)\n"
	"t.join()\n"
	"if not raw.endswith(b'\\x00\\x00\\xff\\xff'):\n"
	"    sys.exit(3)\n"
	"sys.exit(0 if bytes(got) == payload else 2)\n";

struct echo {
	struct protstream *in, *out;
	size_t bytes;
};

static int echo_fiber(void *arg)
{
	struct echo *e = arg;
	char buf[7000];
	int n;

	while ((n = prot_read(e->in, buf, sizeof(buf))) > 0) {
		if (prot_write(e->out, buf, (unsigned)n) != 0)
			return -1;
		e->bytes += (size_t)n;
		if (e->bytes % 3 == 0 && prot_flush(e->out) != 0)
			return -1;
	}
	if (!prot_IS_EOF(e->in) || prot_flush(e->out) != 0)
		return -2;
	return 0;
}

static void test_prot_zlib_python_interop(void **state)
{
	struct t_loop *tl = *state;
	posix_spawn_file_actions_t fa;
	struct echo e = {0};
	struct ur_fiber *f;
	char *argv[] = {"python3", "-c", (char *)py_peer, NULL};
	int sv[2], st, ret = -9;
	pid_t pid;

	t_socketpair(sv);
	assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
	assert_int_equal(posix_spawn_file_actions_adddup2(&fa, sv[1], 3), 0);
	assert_int_equal(
		posix_spawnp(&pid, "python3", &fa, NULL, argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	close(sv[1]);
	e.in = prot_new(sv[0], 0);
	e.out = prot_new(sv[0], 1);
	assert_int_equal(pl_zlib_start(e.in, -1), 0);
	assert_int_equal(pl_zlib_start(e.out, -1), 0);
	assert_int_equal(ur_fiber_spawn(tl->loop, echo_fiber, &e, NULL, &f), 0);
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(ret, 0);
	shutdown(sv[0], SHUT_WR);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_true(e.bytes > 500000);
	prot_free(e.in);
	prot_free(e.out);
	close(sv[0]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
		T(test_prot_zlib_wire_format),
		T(test_prot_zlib_round_trip_windows),
		T(test_prot_zlib_refeeds_buffered_input),
		T(test_prot_zlib_select_sees_inflate),
		T(test_prot_zlib_incompressible),
		T(test_prot_zlib_bulk_leaves_no_scratch),
		T(test_prot_zlib_levels),
		T(test_prot_zlib_corrupt_input),
		T(test_prot_zlib_error_keeps_window),
		T(test_prot_zlib_one_byte_reads),
		T(test_prot_zlib_activate_reply_then_switch),
		T(test_prot_zlib_nonblocking_order),
		T(test_prot_zlib_python_interop),
#undef T
	};

	signal(SIGPIPE, SIG_IGN);
	if (!(pl_features() & PL_HAVE_ZLIB)) {
		fprintf(stderr, "no DEFLATE layer in this build: skipped\n");
		return 77;
	}
	t_require_loop();
	return t_run_groups("prot-zlib", tests,
			    sizeof(tests) / sizeof(tests[0]));
}
