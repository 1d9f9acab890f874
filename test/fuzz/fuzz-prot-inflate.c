/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/prot-inflate: the DEFLATE layer, arbitrary and round-trip input. */
#include "fuzz-prot.h"

#ifdef RINGPROT_HAVE_ZLIB
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>
#include <zlib.h>

#include <ringprot/prot-layer.h>
#include <ringprot/prot.h>
#include <ringprot/uring.h>

/*
 * Byte 0 picks the mode (bit 0) and its parameters.
 *
 * Arbitrary input (spec 2.17, read side): a prot_readcb stream hands out
 * the input in chunks; the first k bytes are read as plaintext, then
 * prot_setcompress, then everything is read. The plaintext must be the
 * input's, the rest exactly what zlib's own raw inflate makes of the
 * remaining bytes, at most 4102 bytes per prot_read; the stream must end
 * (no crash, hang or loop) in EOF, with an error text when zlib finds
 * the data corrupt or data follows a final block. Reads mix prot_read,
 * prot_getc and direct prot_fill calls, and the last byte read can still
 * be pushed back after the end, whatever decode failed.
 *
 * Round trip (write side): a write stream over a socketpair (the ring,
 * driven by the blocking calls; skipped when io_uring is refused) writes
 * a plaintext prefix, switches compression on, then the data in pieces
 * with flushes and level changes between them. Every flush ends in the
 * sync marker 00 00 FF FF; zlib's inflate gives the data back, and so
 * does our read layer on a callback stream.
 */

#define ZWINDOW	 4102  /* spec 2.2: the largest decompressed window */
#define READ_MAX 8192  /* above ZWINDOW: prot_read must cap it */
#define TRIP_MAX 65536 /* round-trip data, well inside socket buffers */
#define ZERR	 "Error decompressing data"

static const unsigned chunk_sizes[8] = {1, 2, 3, 7, 64, 500, 4096, 4096};
static const unsigned read_sizes[8] = {
	1, 3, 100, 4096, ZWINDOW, 5000, READ_MAX, 17,
};
static const uint8_t sync_marker[4] = {0x00, 0x00, 0xff, 0xff};

/* A callback source: the bytes in chunks of one size, then EOF. */
struct feed {
	const uint8_t *d;
	size_t n, off;
	unsigned chunk;
	bool ended;
};

static ssize_t feed_cb(unsigned char *buf, size_t len, void *rock)
{
	struct feed *f = rock;
	size_t k = f->n - f->off;

	FUZZ_CHECK(!f->ended); /* never asked again after the end */
	if (k == 0) {
		f->ended = true;
		return 0;
	}
	if (k > f->chunk)
		k = f->chunk;
	if (k > len)
		k = len;
	memcpy(buf, f->d + f->off, k);
	f->off += k;
	return (ssize_t)k;
}

/* Read k plaintext bytes, whatever the windows. */
static void read_plain(struct protstream *s, const uint8_t *want, size_t k)
{
	static char buf[256];
	size_t got = 0;

	while (got < k) {
		int r = prot_read(s, buf, (unsigned)(k - got));

		FUZZ_CHECK(r > 0 && memcmp(buf, want + got, (size_t)r) == 0);
		got += (size_t)r;
	}
}

/*
 * Read s to its end; every byte must match ref (of which a prefix only,
 * if partial). Now and then a direct prot_fill: it drops the window's
 * unread bytes, or fails and leaves them to be read (spec 2.3), and the
 * window a refill fails over still takes back the last byte read, even
 * when the failure is a decoding error after some output. Returns the
 * bytes read (bytes_in).
 */
static size_t read_all(struct protstream *s, const struct obuf *ref,
		       unsigned seed, bool partial)
{
	static char buf[READ_MAX];
	size_t got = 0, dropped = 0;
	unsigned i = 0;
	int r;

	for (;; i++) {
		unsigned size = read_sizes[(seed + i * (seed | 1)) % 8];

		if (i % 7 == 6) {
			size_t skip = s->cnt;

			r = prot_fill(s);
			if (r == EOF) {
				HINT(s->cnt > 0);
				continue;
			}
			HINT(skip > 0);
			got += skip;
			dropped += skip;
			FUZZ_CHECK(got < ref->len);
			buf[0] = (char)r;
			r = 1;
		} else if (i % 5 == 4) {
			/* A getc now and then: windows and counters line up. */
			r = prot_getc(s);
			if (r == EOF)
				break;
			buf[0] = (char)r;
			r = 1;
		} else {
			r = prot_read(s, buf, size);
			if (r == 0)
				break;
			FUZZ_CHECK(r > 0 && (unsigned)r <= size);
		}
		FUZZ_CHECK(r <= ZWINDOW);
		HINT(r == ZWINDOW);
		FUZZ_CHECK(got + (size_t)r <= ref->len);
		FUZZ_CHECK(memcmp(buf, ref->p + got, (size_t)r) == 0);
		got += (size_t)r;
	}
	if (!partial)
		FUZZ_CHECK(got == ref->len);
	if (s->can_unget > 0) {
		int last;

		FUZZ_CHECK(got > 0);
		last = ref->p[got - 1];

		HINT(!prot_IS_EOF(s));
		FUZZ_CHECK(prot_ungetc(last, s) == last);
		FUZZ_CHECK(prot_getc(s) == last);
	}
	/* The end is sticky. */
	FUZZ_CHECK(prot_getc(s) == EOF);
	FUZZ_CHECK(prot_read(s, buf, 10) == 0);
	FUZZ_CHECK(prot_error(s) != NULL);
	return got - dropped;
}

static void check_end(struct protstream *s, enum zend st)
{
	const char *err = prot_error(s);

	if (st == ZEND_ERROR || st == ZEND_TRAIL) {
		FUZZ_CHECK(strncmp(err, ZERR, strlen(ZERR)) == 0);
		FUZZ_CHECK(!prot_IS_EOF(s));
	} else {
		FUZZ_CHECK(strcmp(err, PROT_EOF_STRING) == 0);
		FUZZ_CHECK(prot_IS_EOF(s));
	}
}

static void fuzz_inflate(const uint8_t *data, size_t size)
{
	unsigned b1 = size > 1 ? data[1] : 0, b2 = size > 2 ? data[2] : 0;
	const uint8_t *p = data + (size > 3 ? 3 : size);
	size_t n = size > 3 ? size - 3 : 0;
	size_t k = b2 % 64 < n ? b2 % 64 : n, got;
	struct feed feed = {p, n, 0, chunk_sizes[b1 % 8], false};
	struct obuf ref = {0};
	struct protstream *s;
	enum zend st;
	bool set_ok;

	st = ref_inflate(p + k, n - k, &ref);
	s = prot_readcb(feed_cb, &feed);
	FUZZ_CHECK(s != NULL);
	read_plain(s, p, k);
	/* Unread bytes of the window are re-fed: they may be corrupt. */
	set_ok = prot_setcompress(s) == 0;
	FUZZ_CHECK(s->zstrm != NULL);
	FUZZ_CHECK(set_ok || st == ZEND_ERROR);
	HINT(!set_ok);
	HINT(k > 0 && set_ok && feed.off > k); /* bytes were re-fed */
	HINT(st == ZEND_TRAIL && feed.chunk == 1);
	HINT(ref.len > 65536); /* more than one decode call's cap */
	got = read_all(s, &ref, b1 >> 3, st == ZEND_ERROR);
	check_end(s, st);
	FUZZ_CHECK(s->bytes_in == k + got);
	FUZZ_CHECK(prot_free(s) == 0);
	free(ref.p);
}

/* Take what the socket holds (prot_flush returns once it is there). */
static size_t drain(int fd, struct obuf *wire)
{
	size_t before = wire->len;
	ssize_t r;

	for (;;) {
		obuf_room(wire, 65536);
		r = recv(fd, wire->p + wire->len, wire->cap - wire->len,
			 MSG_DONTWAIT);
		if (r <= 0)
			break;
		wire->len += (size_t)r;
	}
	FUZZ_CHECK(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
	return wire->len - before;
}

static bool ends_in_marker(const struct obuf *wire, size_t start)
{
	return wire->len - start >= 4 &&
	       memcmp(wire->p + wire->len - 4, sync_marker, 4) == 0;
}

static unsigned xorshift(unsigned *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

/* Compress with our write layer; the wire goes to *wire. */
static void deflate_out(int sv[2], const uint8_t *d, size_t n, size_t pre,
			unsigned seed, int level, struct obuf *wire)
{
	struct protstream *out = prot_new(sv[0], 1);
	unsigned x = seed | 1;
	size_t off = pre, mark;
	bool dirty = false;

	FUZZ_CHECK(out != NULL);
	FUZZ_CHECK(prot_write(out, (const char *)d, (unsigned)pre) == 0);
	FUZZ_CHECK(prot_setcompress(out) == 0);
	/* What came before the switch left uncompressed, and all of it. */
	FUZZ_CHECK(drain(sv[1], wire) == pre);
	FUZZ_CHECK(pre == 0 || memcmp(wire->p, d, pre) == 0);
	FUZZ_CHECK(pl_zlib_set_level(out, level) == 0);
	mark = wire->len;
	while (off < n) {
		unsigned r = xorshift(&x);
		size_t piece = r & 0x100 ? r % 6000 : r % 300;

		if (piece > n - off)
			piece = n - off;
		HINT(piece > PROT_BUFSIZE);
		FUZZ_CHECK(prot_write(out, (const char *)d + off,
				      (unsigned)piece) == 0);
		off += piece;
		dirty |= piece > 0;
		if (r % 4 == 0) {
			FUZZ_CHECK(prot_flush(out) == 0);
			/* A flush ends in the sync marker; none: nothing. */
			FUZZ_CHECK((drain(sv[1], wire) > 0) == dirty);
			FUZZ_CHECK(!dirty || ends_in_marker(wire, mark));
			mark = wire->len;
			dirty = false;
		}
		if (r % 16 == 1) {
			level = (int)((r >> 8) % 11) - 1;
			HINT(level == 0);
			FUZZ_CHECK(pl_zlib_set_level(out, level) == 0);
		}
	}
	FUZZ_CHECK(prot_flush(out) == 0);
	(void)drain(sv[1], wire);
	FUZZ_CHECK(wire->len == mark || ends_in_marker(wire, mark));
	FUZZ_CHECK(out->bytes_out == n);
	FUZZ_CHECK(prot_error(out) == NULL);
	FUZZ_CHECK(prot_free(out) == 0);
}

static void fuzz_round_trip(const uint8_t *data, size_t size)
{
	static int ring = 0; /* 1: usable, -1: refused */
	unsigned b1 = size > 1 ? data[1] : 0, b2 = size > 2 ? data[2] : 0;
	const uint8_t *d = data + (size > 3 ? 3 : size);
	size_t n = size > 3 ? size - 3 : 0;
	size_t pre = b2 % 32 < n ? b2 % 32 : n;
	struct obuf wire = {0}, ref = {0}, plain = {0};
	struct feed feed = {0};
	struct protstream *in;
	struct ur_loop *loop;
	int sv[2];

	if (ring == 0)
		ring = ur_loop_get(&loop) == 0 ? 1 : -1;
	if (ring < 0)
		return;
	if (n > TRIP_MAX)
		n = TRIP_MAX;
	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	deflate_out(sv, d, n, pre, b1 * 2654435761u,
		    (int)(data[0] >> 1) % 11 - 1, &wire);
	FUZZ_CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);

	/* zlib reads it back: the data, and the stream is still open. */
	FUZZ_CHECK(ref_inflate(wire.p + pre, wire.len - pre, &ref) ==
		   ZEND_OPEN);
	FUZZ_CHECK(ref.len == n - pre);
	FUZZ_CHECK(ref.len == 0 || memcmp(ref.p, d + pre, ref.len) == 0);

	/* So does our read layer. */
	feed.d = wire.p;
	feed.n = wire.len;
	feed.chunk = chunk_sizes[b2 % 8];
	in = prot_readcb(feed_cb, &feed);
	FUZZ_CHECK(in != NULL);
	read_plain(in, d, pre);
	FUZZ_CHECK(prot_setcompress(in) == 0);
	obuf_add(&plain, d + pre, n - pre);
	(void)read_all(in, &plain, b1, false);
	check_end(in, ZEND_OPEN);
	FUZZ_CHECK(prot_free(in) == 0);
	free(plain.p);
	free(ref.p);
	free(wire.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		fuzz_round_trip(data, size);
	else
		fuzz_inflate(data, size);
	return 0;
}
#else
/* Without zlib in the build there is no DEFLATE layer to fuzz. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	(void)data;
	(void)size;
	return 0;
}
#endif
