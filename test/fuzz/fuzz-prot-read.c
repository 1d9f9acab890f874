/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/prot-read: read calls on map and callback streams vs a model. */
#include "fuzz-prot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <ringprot/prot.h>
#include <ringprot/uring.h>

/*
 * Input: two bytes give the length of the control part that follows; the
 * rest is the payload, read by a prot_readmap stream, by a prot_readcb
 * stream whose callback hands it over in chunks the control part picks,
 * and (when the ring is usable) by two fd streams: a SOCK_SEQPACKET
 * socket a writer fiber sends the same chunks to, one message each, so
 * every recv takes exactly one chunk into a provided buffer whatever the
 * timing; and a pipe holding the whole payload before the first read.
 * Both expose what one read took in windows of at most PROT_BUFSIZE
 * bytes, and after a failed socket refill push-back reaches at most 256
 * bytes back (prot.h's difference list).
 * Control: flags, the chunk sizes, then read calls with their arguments.
 *
 * Each stream has a model of spec 2.4 and 2.5 over the payload that
 * predicts every result, the public counters (cnt, can_unget, bytes_in),
 * the EOF flag, the error text and every call of the fatal hook (ungetc
 * misuse: with a hook that returns, the call fails and the stream keeps
 * the message as its error). Returned bytes are compared with the
 * payload at the model's position, so "every byte is the next byte of the
 * input" holds by construction of the model. Both streams must agree
 * where their rules coincide, and after the end every call must say EOF.
 */

#define MAX_CHUNKS   8
#define CHUNK_MAX    4500 /* above PROT_BUFSIZE: the callback must cap it */
#define FGETS_MAX    300
#define READ_MAX     5200
#define LOOK_MAX     24
#define CANARY	     0x5a
#define FLAG_EIO     0x01 /* the callback ends with EIO instead of EOF */
#define FLAG_BORROW  0x02 /* readbuf appends to a borrowed buf */
#define EX_SOFTWARE_ 70
#define SOCK_READ    16384 /* a provided buffer: one recv at most */
#define PIPE_READ    65536 /* one pipe read at most */
#define HIST	     256   /* push-back a failed socket refill keeps */
#define NSUT	     4

/* The callback stream's source: the payload in chunks, then EOF or EIO. */
struct feed {
	const uint8_t *d;
	size_t n, off;
	unsigned chunk[MAX_CHUNKS]; /* 0: fail once with EINTR */
	unsigned nchunk, next;
	bool end_eio;
	unsigned ends; /* calls that reported the end */
};

struct model {
	const uint8_t *d;
	size_t n;
	bool map;
	struct feed feed; /* callback stream: a twin of the real feed */
	size_t rcap;	  /* bytes one read may take: PROT_BUFSIZE or more */
	bool hist;	  /* socket: a failed refill keeps HIST bytes */
	size_t pos;	  /* next unread byte */
	size_t wend;	  /* end of the window: cnt = wend - pos */
	size_t rend;	  /* end of the region read: windows up to it */
	int can_unget;
	uint64_t bytes_in;
	bool eof;
	const char *err;   /* expected error text, NULL if none */
	unsigned fatals;   /* expected fatal-hook calls */
	const char *fatal; /* the last one's message */
};

/* A stream under test. */
struct sut {
	struct protstream *s;
	struct model m;
	struct feed feed;
	struct buf rb; /* prot_readbuf's target */
	size_t rb_ro;  /* borrowed bytes at its start */
	int fd[2];     /* fd streams: ours, the peer's (-1: none) */
	struct ur_fiber *writer;
};

enum op_kind {
	OP_GETC,
	OP_GETC_RUN,
	OP_UNGETC_LAST,
	OP_UNGETC_WRONG,
	OP_UNGETC_RUN,
	OP_PEEK,
	OP_LOOKAHEAD,
	OP_FGETS,
	OP_READ,
	OP_READBUF,
	OP_FILL,
};

struct op {
	enum op_kind kind;
	unsigned a, b;
	uint8_t str[LOOK_MAX];
};

static const enum op_kind op_table[16] = {
	OP_GETC,	OP_GETC,	 OP_GETC_RUN,	OP_GETC_RUN,
	OP_UNGETC_LAST, OP_UNGETC_WRONG, OP_UNGETC_RUN, OP_PEEK,
	OP_LOOKAHEAD,	OP_LOOKAHEAD,	 OP_FGETS,	OP_FGETS,
	OP_READ,	OP_READ,	 OP_READBUF,	OP_FILL,
};

static unsigned hook_calls;
static const char *hook_msg;
static int hook_code;

static void fatal_hook(const char *msg, int code)
{
	hook_calls++;
	hook_msg = msg;
	hook_code = code;
}

/*
 * What the callback returns next: a count with the bytes at *at_out, 0
 * at the end, or -1 with errno (EINTR, or EIO at the end).
 */
static ssize_t feed_take(struct feed *f, size_t len, size_t *at_out)
{
	size_t want;

	if (f->off == f->n) {
		f->ends++;
		if (f->end_eio) {
			errno = EIO;
			return -1;
		}
		return 0;
	}
	want = f->chunk[f->next++ % f->nchunk];
	HINT(want > len);
	if (want == 0) {
		errno = EINTR;
		return -1;
	}
	if (want > len)
		want = len;
	if (want > f->n - f->off)
		want = f->n - f->off;
	*at_out = f->off;
	f->off += want;
	return (ssize_t)want;
}

static ssize_t feed_cb(unsigned char *buf, size_t len, void *rock)
{
	struct feed *f = rock;
	size_t at = 0;
	ssize_t k;

	FUZZ_CHECK(len == PROT_BUFSIZE); /* spec 2.2: always 4096 */
	FUZZ_CHECK(f->ends == 0);	 /* never asked again after the end */
	k = feed_take(f, len, &at);
	if (k > 0) {
		memcpy(buf, f->d + at, (size_t)k);
		/* Hostile: junk past the count must never be served. */
		memset(buf + k, 0xa5, len - (size_t)k);
	}
	return k;
}

/*
 * A failed socket refill: the window's buffer went back to the ring, and
 * only its unread bytes and as many consumed ones as fit in HIST with
 * them are still there to push back; more unread bytes keep the buffer.
 */
static void m_hist(struct model *m)
{
	size_t c = m->wend - m->pos;
	size_t k = m->can_unget > 0 ? (size_t)m->can_unget : 0;

	HINT(c > HIST);
	if (c > HIST)
		return;
	HINT(k > HIST - c);
	if (k > HIST - c)
		k = HIST - c;
	m->can_unget = (int)k;
}

/*
 * The model (spec 2.3 steps 1 and 7, 2.4, 2.5, 2.19): a refill either
 * exposes the next window (the rest of the region read last, else the
 * next chunk read) or leaves everything as it was.
 */
static int m_fill(struct model *m)
{
	size_t at = 0;
	ssize_t k;

	if (m->map) {
		m->eof = true;
		return EOF;
	}
	if (m->eof || m->err != NULL)
		return EOF;
	if (m->wend < m->rend) {
		/* The next window of the region, unread bytes dropped. */
		HINT(m->hist);
		HINT(!m->hist);
		HINT(!m->hist && m->rend - m->wend > PROT_BUFSIZE);
		at = m->wend;
		k = (ssize_t)(m->rend - at);
	} else {
		do {
			errno = 0;
			k = feed_take(&m->feed, m->rcap, &at);
		} while (k < 0 && errno == EINTR);
		if (k <= 0 && m->hist)
			m_hist(m);
		if (k == 0) {
			m->eof = true;
			return EOF;
		}
		if (k < 0) {
			m->err = strerror(EIO);
			return EOF;
		}
		m->rend = at + (size_t)k;
	}
	m->pos = at; /* unread bytes of the old window are dropped */
	m->wend = at + ((size_t)k < PROT_BUFSIZE ? (size_t)k : PROT_BUFSIZE);
	m->can_unget = 1;
	m->bytes_in++;
	return m->d[m->pos++];
}

static int m_getc(struct model *m)
{
	if (m->pos < m->wend) {
		m->can_unget++;
		m->bytes_in++;
		return m->d[m->pos++];
	}
	return m_fill(m);
}

static int m_fatal(struct model *m, const char *msg)
{
	m->fatals++;
	m->fatal = msg;
	if (m->err == NULL)
		m->err = msg;
	m->wend = m->pos; /* the window is emptied */
	return EOF;
}

static int m_ungetc(struct model *m, int c)
{
	if (c == EOF)
		return EOF;
	if (m->can_unget <= 0)
		return m_fatal(m, "Can't unwind any more");
	FUZZ_CHECK(m->pos > 0);
	if (c != m->d[m->pos - 1])
		return m_fatal(m, "Trying to unput wrong character");
	m->pos--;
	m->can_unget--;
	m->bytes_in--;
	return c;
}

static int m_lookahead(struct model *m, const uint8_t *str, size_t len,
		       int *sep)
{
	size_t cnt;

	if (m_ungetc(m, m_getc(m)) == EOF)
		return 0;
	cnt = m->wend - m->pos;
	if (cnt <= len)
		return memcmp(str, m->d + m->pos, cnt) == 0 ? (int)cnt : 0;
	if (memcmp(str, m->d + m->pos, len) != 0)
		return 0;
	*sep = m->d[m->pos + len];
	return (int)len + 1;
}

/* Returns the bytes copied (they are d[pos..]), or -1 for NULL. */
static long m_fgets(struct model *m, unsigned size)
{
	long k = 0;
	int c;

	if (size < 2 || m->eof)
		return -1;
	while (k < (long)size - 1) {
		c = m_getc(m);
		if (c == EOF)
			break;
		k++;
		if (c == '\n')
			break;
	}
	return k > 0 ? k : -1;
}

static unsigned m_read(struct model *m, unsigned size)
{
	unsigned n = 0, k;

	if (size == 0)
		return 0;
	if (m->pos == m->wend) {
		if (m_fill(m) == EOF)
			return 0;
		n = 1;
		size--;
	}
	k = size < m->wend - m->pos ? size : (unsigned)(m->wend - m->pos);
	m->pos += k;
	m->can_unget += (int)k;
	m->bytes_in += k;
	return n + k;
}

static void check_state(const struct sut *t)
{
	const struct protstream *s = t->s;
	const struct model *m = &t->m;
	const char *want = m->err != NULL ? m->err
			   : m->eof	  ? PROT_EOF_STRING
					  : NULL;
	const char *got = prot_error(t->s);

	FUZZ_CHECK(s->cnt == m->wend - m->pos);
	FUZZ_CHECK(s->can_unget == m->can_unget);
	FUZZ_CHECK(s->bytes_in == m->bytes_in);
	FUZZ_CHECK((s->eof != 0) == m->eof);
	FUZZ_CHECK(want == NULL ? got == NULL
				: got != NULL && strcmp(got, want) == 0);
	/* The unread window is the input that follows. */
	FUZZ_CHECK(s->cnt == 0 || memcmp(s->ptr, m->d + m->pos, s->cnt) == 0);
}

static int do_ungetc(struct sut *t, int c)
{
	int r = prot_ungetc(c, t->s);

	FUZZ_CHECK(r == m_ungetc(&t->m, c));
	return r;
}

/* The byte ungetc must refuse: never the last byte read, nor EOF. */
static int wrong_byte(const struct model *m, unsigned a, unsigned b)
{
	int last = m->pos > 0 ? m->d[m->pos - 1] : 0;

	switch (a % 4) {
	case 0:
		return (last + 1 + (int)(b % 255)) & 0xff;
	case 1:
		return last + 256;
	case 2:
		/* A signed char, as Cyrus callers get wrong (spec 2.4). */
		return last >= 0x80 ? last - 256 : -2 - (int)b;
	default:
		return EOF; /* a no-op, not a misuse */
	}
}

static int do_lookahead(struct sut *t, const struct op *op)
{
	size_t len = op->a % (LOOK_MAX + 1), k;
	uint8_t str[LOOK_MAX];
	int sep = -7, msep = -7, r, e;

	memcpy(str, op->str, len);
	if (op->b % 4 != 0 && t->m.pos < t->m.n) {
		/* Mostly the input itself, so that matches happen. */
		k = t->m.n - t->m.pos < len ? t->m.n - t->m.pos : len;
		memcpy(str, t->m.d + t->m.pos, k);
		if (op->b % 4 == 3 && len > 0)
			str[(op->b >> 2) % len] ^= 0x20;
	}
	r = prot_lookahead(t->s, (const char *)str, len, &sep);
	e = m_lookahead(&t->m, str, len, &msep);
	FUZZ_CHECK(r == e);
	FUZZ_CHECK(sep == msep);
	k = t->m.wend - t->m.pos;
	HINT(e > 0 && k < len);
	HINT(e > 0 && k == len);
	HINT(e > 0 && k == len + 1);
	HINT(e > 0 && len == 0);
	HINT(e == 0 && k > 0 && len > 0);
	return r;
}

static int do_fgets(struct sut *t, unsigned size)
{
	char *buf = malloc(size + 16);
	size_t pos = t->m.pos, wend = t->m.wend;
	char *r;
	long e;

	FUZZ_CHECK(buf != NULL);
	memset(buf, CANARY, size + 16);
	r = prot_fgets(buf, size, t->s);
	e = m_fgets(&t->m, size);
	FUZZ_CHECK((r == NULL) == (e < 0));
	HINT(e < 0 && size >= 2 && t->m.pos < t->m.wend); /* EOF flag */
	HINT(e > 0 && (unsigned long)e == size - 1);
	HINT(e > 0 && buf[e - 1] == '\n' && (unsigned long)e < size - 1);
	HINT(e > 0 && !t->m.map && pos + (size_t)e > wend); /* refilled */
	if (e < 0)
		e = -1; /* nothing may be written, not even the NUL */
	else
		FUZZ_CHECK(r == buf &&
			   memcmp(buf, t->m.d + pos, (size_t)e) == 0 &&
			   buf[e] == '\0' && (unsigned long)e < size);
	for (size_t i = (size_t)(e + 1); i < size + 16; i++)
		FUZZ_CHECK(buf[i] == CANARY);
	free(buf);
	return (int)e;
}

static int do_read(struct sut *t, unsigned size)
{
	static char buf[READ_MAX];
	size_t pos = t->m.pos, cnt = t->m.wend - t->m.pos;
	int r = prot_read(t->s, buf, size);

	HINT(cnt > 0 && size == cnt);
	HINT(cnt > 0 && size > cnt);
	HINT(cnt == 0 && r > 1 && (unsigned)r < size);
	HINT(!t->m.map && r == PROT_BUFSIZE);
	FUZZ_CHECK(r >= 0 && (unsigned)r == m_read(&t->m, size));
	/* One window at most; a map is one window (spec 2.19). */
	FUZZ_CHECK(t->m.map || r <= PROT_BUFSIZE);
	FUZZ_CHECK(memcmp(buf, t->m.d + pos, (size_t)r) == 0);
	return r;
}

static int do_readbuf(struct sut *t, unsigned size)
{
	size_t len0 = t->rb.len, pos = t->m.pos;
	int r = prot_readbuf(t->s, &t->rb, size);

	FUZZ_CHECK(r >= 0 && (unsigned)r == m_read(&t->m, size));
	FUZZ_CHECK(t->rb.len == len0 + (size_t)r);
	FUZZ_CHECK(t->rb.alloc > t->rb.len && t->rb.s[t->rb.len] == '\0');
	FUZZ_CHECK(memcmp(t->rb.s + len0, t->m.d + pos, (size_t)r) == 0);
	FUZZ_CHECK(memcmp(t->rb.s, "borrowed", t->rb_ro) == 0);
	return r;
}

static unsigned read_size(unsigned a)
{
	return a & 0x8000 ? (a & 0x7fff) % (READ_MAX + 1) : a % 64;
}

/* One call (or run of calls); returns a result both streams can share. */
static int apply(struct sut *t, const struct op *op)
{
	unsigned fatals = t->m.fatals;
	int r = 0;

	hook_calls = 0;
	switch (op->kind) {
	case OP_GETC:
		HINT(t->m.err != NULL && t->m.pos < t->m.wend);
		HINT(t->m.eof && t->m.pos < t->m.wend);
		r = prot_getc(t->s);
		FUZZ_CHECK(r == m_getc(&t->m));
		break;
	case OP_GETC_RUN:
		for (unsigned i = 0; i < op->a; i++) {
			r = prot_getc(t->s);
			FUZZ_CHECK(r == m_getc(&t->m));
		}
		break;
	case OP_UNGETC_LAST:
		HINT(t->m.can_unget == 0 && t->m.pos > 0);
		HINT(t->m.can_unget == 1 && !t->m.map);
		HINT(t->m.can_unget > 0 && t->m.err != NULL);
		r = do_ungetc(t, t->m.pos > 0 ? t->m.d[t->m.pos - 1] : 'A');
		break;
	case OP_UNGETC_WRONG:
		r = do_ungetc(t, wrong_byte(&t->m, op->a, op->b));
		FUZZ_CHECK(r == EOF);
		break;
	case OP_UNGETC_RUN:
		/* Legal push-backs only: never past the allowance. */
		for (unsigned i = 0; i < op->a % 32 && t->m.can_unget > 0; i++)
			FUZZ_CHECK(do_ungetc(t, t->m.d[t->m.pos - 1]) != EOF);
		break;
	case OP_PEEK:
		r = prot_peek(t->s);
		FUZZ_CHECK(r == m_ungetc(&t->m, m_getc(&t->m)));
		break;
	case OP_LOOKAHEAD:
		r = do_lookahead(t, op);
		break;
	case OP_FGETS:
		r = do_fgets(t, op->a % (FGETS_MAX + 1));
		break;
	case OP_READ:
		r = do_read(t, read_size(op->a));
		break;
	case OP_READBUF:
		r = do_readbuf(t, read_size(op->a));
		break;
	case OP_FILL:
		HINT(t->m.pos < t->m.wend && !t->m.map);
		HINT(t->m.pos < t->m.wend && !t->m.map &&
		     t->m.feed.off == t->m.n);
		HINT(t->m.pos < t->m.wend && t->m.map);
		r = prot_fill(t->s);
		FUZZ_CHECK(r == m_fill(&t->m));
		break;
	}
	FUZZ_CHECK(hook_calls == t->m.fatals - fatals);
	FUZZ_CHECK(hook_calls == 0 || (strcmp(hook_msg, t->m.fatal) == 0 &&
				       hook_code == EX_SOFTWARE_));
	check_state(t);
	return r;
}

static void parse_op(struct fuzz_in *ctl, struct op *op)
{
	op->kind = op_table[fuzz_u8(ctl) % 16];
	op->a = 0;
	op->b = 0;
	switch (op->kind) {
	case OP_GETC_RUN:
	case OP_UNGETC_RUN:
		op->a = fuzz_u8(ctl);
		break;
	case OP_UNGETC_WRONG:
		op->a = fuzz_u8(ctl);
		op->b = fuzz_u8(ctl);
		break;
	case OP_LOOKAHEAD:
		op->a = fuzz_u8(ctl);
		op->b = fuzz_u8(ctl);
		for (unsigned i = 0; i < op->a % (LOOK_MAX + 1); i++)
			op->str[i] = (uint8_t)fuzz_u8(ctl);
		break;
	case OP_FGETS:
	case OP_READ:
	case OP_READBUF:
		op->a = fuzz_u16(ctl);
		break;
	default:
		break;
	}
}

enum sut_kind {
	S_MAP,
	S_CB,
	S_SOCK,
	S_PIPE,
};

/*
 * The socket's peer, a fiber on the same loop (it runs while a read
 * waits): one message per chunk of the feed, so each recv takes exactly
 * one (a zero-length message would read as the end: a 0 chunk sends
 * none), then the end.
 */
static int writer_main(void *arg)
{
	struct sut *t = arg;
	size_t at = 0;
	ssize_t k;

	for (;;) {
		errno = 0;
		k = feed_take(&t->feed, SOCK_READ, &at);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		/* Fails once the reader is gone (a misuse ended it early). */
		if (ur_send(t->fd[1], t->feed.d + at, (size_t)k,
			    MSG_NOSIGNAL) != k)
			break;
	}
	(void)shutdown(t->fd[1], SHUT_WR);
	return 0;
}

/* The whole payload into a pipe, then its end; false if it cannot hold it. */
static bool pipe_fill(struct sut *t)
{
	size_t off = 0;
	int cap;

	FUZZ_CHECK(pipe2(t->fd, O_CLOEXEC) == 0);
	cap = fcntl(t->fd[1], F_GETPIPE_SZ);
	if (cap < 0 || t->m.n > (size_t)cap || t->m.n > PIPE_READ) {
		FUZZ_CHECK(close(t->fd[0]) == 0 && close(t->fd[1]) == 0);
		return false;
	}
	while (off < t->m.n) {
		ssize_t k = write(t->fd[1], t->m.d + off, t->m.n - off);

		FUZZ_CHECK(k > 0);
		off += (size_t)k;
	}
	FUZZ_CHECK(close(t->fd[1]) == 0);
	t->fd[1] = -1;
	return true;
}

/* Returns false if this kind of stream cannot run the input. */
static bool sut_init(struct sut *t, enum sut_kind kind, const uint8_t *d,
		     size_t n, const struct feed *feed, unsigned flags)
{
	memset(t, 0, sizeof(*t));
	t->fd[0] = -1;
	t->fd[1] = -1;
	t->m.d = d;
	t->m.n = n;
	t->m.map = kind == S_MAP;
	t->m.feed = *feed;
	t->m.rcap = PROT_BUFSIZE;
	t->feed = *feed;
	switch (kind) {
	case S_MAP:
		t->s = prot_readmap((const char *)d, (uint32_t)n);
		t->m.wend = n;
		t->m.rend = n;
		break;
	case S_CB:
		t->s = prot_readcb(feed_cb, &t->feed);
		break;
	case S_SOCK:
		t->m.rcap = SOCK_READ;
		t->m.hist = true;
		t->m.feed.end_eio = false;
		t->feed.end_eio = false;
		FUZZ_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0,
				      t->fd) == 0);
		t->s = prot_new(t->fd[0], 0);
		FUZZ_CHECK(ur_fiber_spawn(NULL, writer_main, t, NULL,
					  &t->writer) == 0);
		break;
	case S_PIPE:
		/* One read takes it all: a region of many windows. */
		t->m.rcap = PIPE_READ;
		t->m.feed.end_eio = false;
		t->m.feed.nchunk = 1;
		t->m.feed.chunk[0] = PIPE_READ;
		if (!pipe_fill(t))
			return false;
		t->s = prot_new(t->fd[0], 0);
		break;
	}
	FUZZ_CHECK(t->s != NULL);
	if (flags & FLAG_BORROW) {
		/* A read-only buf (alloc 0): the first append copies it. */
		t->rb.s = (char *)"borrowed";
		t->rb.len = 8;
		t->rb_ro = 8;
	}
	check_state(t);
	return true;
}

static void sut_fini(struct sut *t)
{
	FUZZ_CHECK(prot_free(t->s) == 0);
	/* Closing our end stops a writer the reader left behind. */
	if (t->fd[0] >= 0)
		FUZZ_CHECK(close(t->fd[0]) == 0);
	if (t->writer != NULL)
		FUZZ_CHECK(ur_fiber_join(t->writer, NULL) == 0);
	if (t->fd[1] >= 0)
		FUZZ_CHECK(close(t->fd[1]) == 0);
	if (t->rb.alloc > 0)
		free(t->rb.s);
}

/* Drain, then every read call must report the end (spec 2.6). */
static void check_end(struct sut *t)
{
	static const struct {
		enum op_kind kind;
		unsigned a;
		int want;
	} calls[] = {
		{OP_GETC, 0, EOF},
		{OP_GETC_RUN, 3, EOF},
		{OP_PEEK, 0, EOF},
		{OP_UNGETC_WRONG, 3, EOF},
		{OP_LOOKAHEAD, 5, 0},
		{OP_LOOKAHEAD, 0, 0},
		{OP_FGETS, 100, -1},
		{OP_FGETS, 1, -1},
		{OP_READ, 17, 0},
		{OP_READ, 0x8000 | READ_MAX, 0},
		{OP_READBUF, 0x8000 | 4096, 0},
		{OP_FILL, 0, EOF},
	};
	struct op op = {.kind = OP_READ, .a = 0x8000 | READ_MAX};
	const char *err;
	uint64_t in;

	while (apply(t, &op) > 0)
		;
	/* Without a misuse, the input's end was reached. */
	if (t->m.fatals == 0)
		FUZZ_CHECK(t->m.pos == t->m.n);
	err = prot_error(t->s);
	in = t->s->bytes_in;
	FUZZ_CHECK(err != NULL);
	FUZZ_CHECK(t->s->cnt == 0);
	for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
		op.kind = calls[i].kind;
		op.a = calls[i].a;
		op.b = 1;
		memset(op.str, 'x', sizeof(op.str));
		FUZZ_CHECK(apply(t, &op) == calls[i].want);
		FUZZ_CHECK(t->s->bytes_in == in);
		FUZZ_CHECK(strcmp(prot_error(t->s), err) == 0);
	}
	FUZZ_CHECK(prot_ungetc(EOF, t->s) == EOF);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ring = 0; /* 1: usable, -1: refused */
	struct fuzz_in ctl;
	struct feed feed = {0};
	struct sut t[NSUT];
	struct ur_loop *loop;
	prot_fatal_fn *old;
	unsigned flags, ns = 0;
	size_t len;
	bool nonzero = false;

	if (size < 2)
		return 0;
	if (ring == 0)
		ring = ur_loop_get(&loop) == 0 ? 1 : -1;
	if (ring > 0)
		ring_keeper();
	len = (data[0] | (size_t)data[1] << 8) % (size - 1);
	ctl.p = data + 2;
	ctl.n = len;
	feed.d = data + 2 + len;
	feed.n = size - 2 - len;
	flags = fuzz_u8(&ctl);
	feed.end_eio = flags & FLAG_EIO;
	feed.nchunk = fuzz_u8(&ctl) % MAX_CHUNKS + 1;
	for (unsigned i = 0; i < feed.nchunk; i++) {
		feed.chunk[i] = fuzz_u16(&ctl) % (CHUNK_MAX + 1);
		nonzero |= feed.chunk[i] != 0;
	}
	if (!nonzero)
		feed.chunk[0] = 1; /* EINTR forever would never return */

	old = prot_setfatal(fatal_hook);
	for (unsigned k = S_MAP; k <= S_PIPE; k++) {
		/* fd streams read through the ring: skipped without one. */
		if (k >= S_SOCK && ring < 0)
			break;
		if (sut_init(&t[ns], (enum sut_kind)k, feed.d, feed.n, &feed,
			     flags))
			ns++;
	}
	while (ctl.n > 0) {
		bool same[NSUT];
		int r[NSUT];
		struct op op;

		for (unsigned i = 1; i < ns; i++)
			same[i] = t[0].m.pos == t[i].m.pos &&
				  t[0].m.eof == t[i].m.eof;
		parse_op(&ctl, &op);
		for (unsigned i = 0; i < ns; i++)
			r[i] = apply(&t[i], &op);
		/*
		 * Where the rules do not depend on the chunking, the streams
		 * agree with the map: getc, peek and fgets from the same
		 * position and EOF flag, while neither has an error.
		 */
		for (unsigned i = 1; i < ns; i++)
			if (same[i] && t[0].m.err == NULL &&
			    t[i].m.err == NULL &&
			    (op.kind == OP_GETC || op.kind == OP_PEEK ||
			     op.kind == OP_FGETS || op.kind == OP_GETC_RUN))
				FUZZ_CHECK(r[i] == r[0]);
	}
	for (unsigned i = 0; i < ns; i++) {
		bool eio = !t[i].m.map && t[i].m.feed.end_eio;

		check_end(&t[i]);
		if (t[i].m.fatals == 0)
			FUZZ_CHECK(strcmp(prot_error(t[i].s),
					  eio ? strerror(EIO)
					      : PROT_EOF_STRING) == 0);
	}
	for (unsigned i = 0; i < ns; i++)
		sut_fini(&t[i]);
	(void)prot_setfatal(old);
	return 0;
}
