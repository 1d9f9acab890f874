/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-read: the read side of the protstream, spec 5.3 and 5.4. */
#include "t-helpers.h" /* stdarg, stddef, setjmp, cmocka: in that order */

#include <ringprot/prot.h>

#include <liburing.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * A peer thread: writes each step's bytes after its delay, one write per
 * step (or one byte per write), then optionally closes its end.
 */
struct step {
	int delay_ms;
	const char *p;
	size_t n;
};

struct peer {
	pthread_t th;
	int fd;
	const struct step *steps;
	size_t nsteps;
	bool bytewise;
	bool close_at_end;
};

static void *peer_main(void *arg)
{
	struct peer *pr = arg;

	for (size_t i = 0; i < pr->nsteps; i++) {
		const struct step *st = &pr->steps[i];

		if (st->delay_ms > 0)
			usleep((useconds_t)st->delay_ms * 1000);
		for (size_t off = 0; off < st->n;) {
			size_t k = pr->bytewise ? 1 : st->n - off;
			ssize_t w = write(pr->fd, st->p + off, k);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return NULL;
			off += (size_t)w;
			if (pr->bytewise)
				usleep(50);
		}
	}
	if (pr->close_at_end)
		close(pr->fd);
	return NULL;
}

static void peer_start(struct peer *pr, int fd, const struct step *steps,
		       size_t nsteps, bool close_at_end)
{
	pr->fd = fd;
	pr->steps = steps;
	pr->nsteps = nsteps;
	pr->close_at_end = close_at_end;
	assert_int_equal(pthread_create(&pr->th, NULL, peer_main, pr), 0);
}

static void peer_join(struct peer *pr)
{
	assert_int_equal(pthread_join(pr->th, NULL), 0);
}

static void write_all(int fd, const void *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		assert_true(w > 0);
		p = (const char *)p + w;
		n -= (size_t)w;
	}
}

/*
 * Fatal hook: record the call and return, so prot_ungetc fails with EOF.
 */
static char fatal_msg[128];
static int fatal_code;

static void record_fatal(const char *msg, int code)
{
	snprintf(fatal_msg, sizeof(fatal_msg), "%s", msg);
	fatal_code = code;
}

/* 5.3 #31 */
static void test_prot_read_map_getc_eof(void **state)
{
	struct protstream *s = prot_readmap("abc", 3);

	(void)state;
	assert_int_equal(prot_getc(s), 'a');
	assert_int_equal(prot_getc(s), 'b');
	assert_int_equal(prot_getc(s), 'c');
	assert_int_equal(prot_getc(s), EOF);
	assert_string_equal(prot_error(s), PROT_EOF_STRING);
	assert_true(prot_IS_EOF(s));
	assert_false(prot_IS_ERROR(s));
	assert_int_equal(prot_bytes_in(s), 3);
	assert_int_equal(prot_getc(s), EOF);
	assert_int_equal(prot_ungetc(EOF, s), EOF);
	prot_free(s);
	assert_string_equal(prot_error(NULL),
			    "bad protstream passed to prot_error");
}

/* 5.3 #32, #33 */
static void test_prot_read_map_ungetc_all(void **state)
{
	struct protstream *s = prot_readmap("abc", 3);

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_int_not_equal(prot_getc(s), EOF);
	assert_int_equal(prot_ungetc('c', s), 'c');
	assert_int_equal(prot_ungetc('b', s), 'b');
	assert_int_equal(prot_ungetc('a', s), 'a');
	assert_int_equal(prot_getc(s), 'a');
	assert_int_equal(prot_bytes_in(s), 1);
	prot_free(s);

	s = prot_readmap("xyz", 3);
	assert_int_equal(prot_peek(s), 'x');
	assert_int_equal(prot_peek(s), 'x');
	assert_int_equal(prot_getc(s), 'x');
	assert_int_equal(prot_bytes_in(s), 1);
	prot_free(s);
}

static ssize_t two_chunks(unsigned char *buf, size_t len, void *rock)
{
	int *calls = rock;

	assert_int_equal(len, PROT_BUFSIZE);
	switch ((*calls)++) {
	case 0:
		buf[0] = 'p';
		return 1;
	case 1:
		memcpy(buf, "qr", 2);
		return 2;
	default:
		return 0;
	}
}

/*
 * 5.3 #34, with the fix of spec 6.13: misuse never exits the process.
 * Without a hook the call fails and the stream carries the message; with
 * a hook, the hook sees Cyrus's message and EX_SOFTWARE first.
 */
static void test_prot_read_ungetc_misuse(void **state)
{
	struct protstream *s;
	int calls = 0;
	int c;

	(void)state;
	s = prot_readmap("abc", 3);
	assert_int_equal(prot_getc(s), 'a');
	assert_int_equal(prot_ungetc('z', s), EOF);
	assert_string_equal(prot_error(s), "Trying to unput wrong character");
	prot_free(s);

	s = prot_readmap("abc", 3);
	assert_int_equal(prot_ungetc('a', s), EOF);
	assert_string_equal(prot_error(s), "Can't unwind any more");
	prot_free(s);

	/* A byte from before the last refill can't be pushed back. */
	assert_null(prot_setfatal(record_fatal));
	s = prot_readcb(two_chunks, &calls);
	assert_int_equal(prot_getc(s), 'p');
	assert_int_equal(prot_getc(s), 'q');
	assert_int_equal(prot_ungetc('q', s), 'q');
	assert_int_equal(prot_ungetc('p', s), EOF);
	assert_string_equal(fatal_msg, "Can't unwind any more");
	assert_int_equal(fatal_code, 70);
	assert_string_equal(prot_error(s), "Can't unwind any more");
	prot_free(s);

	/* (char)0xE9 is not the byte getc returned (233). */
	fatal_msg[0] = '\0';
	s = prot_readmap("\xE9", 1);
	c = prot_getc(s);
	assert_int_equal(c, 0xE9);
	assert_int_equal(prot_ungetc((char)0xE9, s), EOF);
	assert_string_equal(fatal_msg, "Trying to unput wrong character");
	prot_free(s);
	assert_ptr_equal(prot_setfatal(NULL), record_fatal);
}

/*
 * prot.h's inline getc/putc fast paths and the exported functions agree:
 * a program may take their addresses or declare them itself.
 */
int prot_getc(struct protstream *s);
int prot_putc(int c, struct protstream *s);

static void test_prot_read_inline_and_real(void **state)
{
	int (*getc_fn)(struct protstream *) = prot_getc;
	int (*putc_fn)(int, struct protstream *) = &prot_putc;
	struct protstream *s = prot_readmap("ab", 2);
	struct buf out = {0};
	unsigned i;

	(void)state;
	assert_int_equal(prot_getc(s), 'a');
	assert_int_equal(getc_fn(s), 'b');
	assert_int_equal(s->can_unget, 2);
	assert_int_equal(prot_bytes_in(s), 2);
	assert_int_equal((prot_getc)(s), EOF);
	assert_int_equal(prot_getc(s), EOF);
	prot_free(s);

	s = prot_writebuf(&out);
	for (i = 0; i < PROT_BUFSIZE; i++)
		assert_int_equal(i % 2 ? prot_putc('x', s) : putc_fn('y', s),
				 0);
	/* The last free byte flushed, whichever path took it. */
	assert_int_equal(out.len, PROT_BUFSIZE);
	assert_int_equal(s->cnt, PROT_BUFSIZE);
	assert_int_equal(prot_bytes_out(s), PROT_BUFSIZE);
	assert_int_equal(prot_getc(s), EOF); /* wrong direction */
	assert_non_null(prot_error(s));
	assert_int_equal(prot_putc('z', s), EOF); /* the error sticks */
	assert_int_equal(putc_fn('z', s), EOF);
	prot_free(s);
	free(out.s);
}

/* 5.3 #35, #36, #37 */
static void test_prot_read_fgets(void **state)
{
	struct protstream *s = prot_readmap("line1\nline2", 11);
	char b[64];

	(void)state;
	assert_non_null(prot_fgets(b, sizeof(b), s));
	assert_string_equal(b, "line1\n");
	assert_non_null(prot_fgets(b, sizeof(b), s));
	assert_string_equal(b, "line2");
	assert_null(prot_fgets(b, sizeof(b), s));
	prot_free(s);

	s = prot_readmap("abc", 3);
	assert_null(prot_fgets(b, 1, s));
	assert_non_null(prot_fgets(b, 2, s));
	assert_string_equal(b, "a");
	assert_non_null(prot_fgets(b, 3, s));
	assert_string_equal(b, "bc");
	prot_free(s);

	s = prot_readmap("a\0b\n", 4);
	assert_ptr_equal(prot_fgets(b, sizeof(b), s), b);
	assert_int_equal(strlen(b), 1);
	assert_memory_equal(b, "a\0b\n", 5);
	assert_int_equal(prot_bytes_in(s), 4);
	prot_free(s);
}

/* 5.3 #38 */
static void test_prot_read_lookahead(void **state)
{
	static const struct {
		const char *in;
		int want;
		int sep;
	} rows[] = {
		{"NIL)", 3, ')'}, {"NIL", 2, -2}, {"NI", 1, -2},
		{"NOPE", 0, -2},  {"N", 0, -2},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct protstream *s =
			prot_readmap(rows[i].in, (uint32_t)strlen(rows[i].in));
		int sep = -2;

		assert_int_equal(prot_getc(s), 'N');
		assert_int_equal(prot_lookahead(s, "IL", 2, &sep),
				 rows[i].want);
		assert_int_equal(sep, rows[i].sep);
		prot_free(s);
	}
}

/* 5.3 #39: a pipe holding 5000 bytes. */
static void test_prot_read_pipe_windows(void **state)
{
	static char data[5000], got[10000];
	struct protstream *s;
	struct buf b = {0};
	int p[2];

	(void)state;
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (char)('a' + i % 26);
	assert_int_equal(pipe(p), 0);
	write_all(p[1], data, sizeof(data));
	s = prot_new(p[0], 0);
	assert_int_equal(prot_read(s, got, sizeof(got)), 4096);
	assert_int_equal(prot_read(s, got + 4096, sizeof(got)), 904);
	assert_memory_equal(got, data, sizeof(data));
	assert_int_equal(prot_bytes_in(s), 5000);
	assert_int_equal(prot_read(s, got, 0), 0);
	close(p[1]);
	assert_int_equal(prot_read(s, got, sizeof(got)), 0);
	assert_string_equal(prot_error(s), PROT_EOF_STRING);
	assert_int_equal(prot_readbuf(s, &b, 100), 0);
	free(b.s);
	prot_free(s);
	close(p[0]);
}

static ssize_t words(unsigned char *buf, size_t len, void *rock)
{
	static const char *const parts[] = {"hel", "lo ", "world"};
	int *i = rock;
	size_t n;

	if (*i >= 3)
		return 0;
	n = strlen(parts[*i]);
	assert_true(n <= len);
	memcpy(buf, parts[(*i)++], n);
	return (ssize_t)n;
}

static ssize_t fails(unsigned char *buf, size_t len, void *rock)
{
	(void)buf;
	(void)len;
	(void)rock;
	errno = ECONNRESET;
	return -1;
}

/* 5.3 #40 */
static void test_prot_read_callback(void **state)
{
	struct protstream *s;
	struct buf b = {0};
	int i = 0;

	(void)state;
	s = prot_readcb(words, &i);
	while (prot_readbuf(s, &b, 100) > 0)
		;
	assert_int_equal(b.len, 11);
	assert_memory_equal(b.s, "hello world", 11);
	assert_int_equal(prot_getc(s), EOF);
	assert_string_equal(prot_error(s), PROT_EOF_STRING);
	free(b.s);
	prot_free(s);

	s = prot_readcb(fails, NULL);
	assert_int_equal(prot_getc(s), EOF);
	assert_string_equal(prot_error(s), "Connection reset by peer");
	assert_false(prot_IS_EOF(s));
	prot_free(s);
}

/* 5.3 #41, on a socket (provided buffers) and on a pipe. */
static void test_prot_read_peer_close(void **state)
{
	struct protstream *s;
	int sv[2], p[2];

	(void)state;
	t_socketpair(sv);
	write_all(sv[1], "z", 1);
	close(sv[1]);
	s = prot_new(sv[0], 0);
	assert_int_equal(prot_getc(s), 'z');
	assert_int_equal(prot_getc(s), EOF);
	assert_string_equal(prot_error(s), PROT_EOF_STRING);
	prot_free(s);
	close(sv[0]);

	assert_int_equal(pipe(p), 0);
	write_all(p[1], "z", 1);
	close(p[1]);
	s = prot_new(p[0], 0);
	assert_int_equal(prot_getc(s), 'z');
	assert_int_equal(prot_getc(s), EOF);
	assert_string_equal(prot_error(s), PROT_EOF_STRING);
	prot_free(s);
	close(p[0]);
}

/* 5.3 #42 */
static void test_prot_read_rewind(void **state)
{
	char path[] = "/tmp/prot-read-XXXXXX";
	struct protstream *s;
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	write_all(fd, "hello", 5);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	s = prot_new(fd, 0);
	for (int i = 0; i < 5; i++)
		assert_int_not_equal(prot_getc(s), EOF);
	assert_int_equal(prot_getc(s), EOF);
	assert_true(prot_IS_EOF(s));
	assert_int_equal(prot_rewind(s), 0);
	assert_false(prot_IS_EOF(s));
	assert_null(prot_error(s));
	assert_int_equal(prot_getc(s), 'h');
	assert_int_equal(prot_bytes_in(s), 1);
	prot_free(s);
	close(fd);

	s = prot_readmap("abc", 3);
	assert_int_equal(prot_rewind(s), EOF);
	assert_string_equal(prot_error(s), "Bad file descriptor");
	prot_free(s);
}

static struct prot_waitevent *count_event(struct protstream *s,
					  struct prot_waitevent *ev, void *rock)
{
	(*(int *)rock)++;
	prot_removewaitevent(s, ev);
	return NULL;
}

/*
 * A regular file in memory (memfd): 4096-byte windows at the file
 * position, EOF, rewind, and due wait events run before a refill of a
 * stream with a timeout.
 */
static void check_memfd(void **state)
{
	int fd = memfd_create("prot-read", MFD_CLOEXEC);
	char big[5000], got[5000];
	struct protstream *s;
	int ran = 0;

	(void)state;
	assert_true(fd >= 0);
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + i % 26);
	write_all(fd, big, sizeof(big));
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	s = prot_new(fd, 0);
	assert_int_equal(prot_settimeout(s, 30), 0);
	assert_non_null(
		prot_addwaitevent(s, time(NULL) - 1, count_event, &ran));
	assert_int_equal(prot_getc(s), 'a');
	assert_int_equal(ran, 1);
	got[0] = 'a';
	assert_int_equal(lseek(fd, 0, SEEK_CUR), PROT_BUFSIZE);
	assert_int_equal(prot_read(s, got + 1, sizeof(got)), PROT_BUFSIZE - 1);
	assert_int_equal(prot_read(s, got + PROT_BUFSIZE, sizeof(got)),
			 sizeof(big) - PROT_BUFSIZE);
	assert_memory_equal(got, big, sizeof(big));
	assert_int_equal(prot_getc(s), EOF);
	assert_true(prot_IS_EOF(s));
	assert_int_equal(prot_rewind(s), 0);
	assert_int_equal(prot_getc(s), 'a');
	assert_int_equal(prot_bytes_in(s), 1);
	prot_free(s);
	close(fd);
}

static void test_prot_read_memfd(void **state)
{
	check_memfd(state);
}

/*
 * A regular file is read ahead, but the file position is always where
 * Cyrus's 4 KiB reads would have left it: the end of the window exposed.
 * A position moved by hand is honoured at the next window. fd is a file
 * of len bytes of pattern(i), with len well past the read-ahead size.
 */
static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 7 % 251);
}

static void check_file_position(int fd, size_t len)
{
	struct protstream *s;
	unsigned char *got = malloc(len);
	size_t have = 0;
	ssize_t n;

	assert_non_null(got);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	s = prot_new(fd, 0);
	/* Window by window, as prot_getc sees them. */
	for (int w = 0; w < 70; w++) {
		int c = prot_getc(s);

		assert_int_equal(c, pattern(have));
		assert_int_equal(s->cnt, PROT_BUFSIZE - 1);
		have += PROT_BUFSIZE;
		assert_int_equal(lseek(fd, 0, SEEK_CUR), (off_t)have);
		s->ptr += s->cnt; /* consume the rest of the window */
		s->cnt = 0;
	}
	/* Moved by hand between windows: the next window starts there. */
	assert_int_equal(lseek(fd, 100003, SEEK_SET), 100003);
	assert_int_equal(prot_getc(s), pattern(100003));
	assert_int_equal(lseek(fd, 0, SEEK_CUR), 100003 + PROT_BUFSIZE);
	/* Moved back to the start within a window: the window stays. */
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(prot_getc(s), pattern(100004));
	s->ptr += s->cnt;
	s->cnt = 0;
	have = 0;
	while ((n = prot_read(s, (char *)got + have, len - have)) > 0)
		have += (size_t)n;
	assert_int_equal(have, len);
	for (size_t i = 0; i < len; i++)
		assert_int_equal(got[i], pattern(i));
	assert_int_equal(prot_getc(s), EOF);
	assert_true(prot_IS_EOF(s));
	assert_int_equal(lseek(fd, 0, SEEK_CUR), (off_t)len);
	prot_free(s);
	free(got);
}

static void fill_pattern(int fd, size_t len)
{
	unsigned char chunk[4096];

	for (size_t off = 0; off < len; off += sizeof(chunk)) {
		size_t n = len - off < sizeof(chunk) ? len - off : sizeof(chunk);

		for (size_t i = 0; i < n; i++)
			chunk[i] = pattern(off + i);
		write_all(fd, chunk, n);
	}
}

static void test_prot_read_file_position(void **state)
{
	char path[] = "/var/tmp/prot-read-XXXXXX";
	int fd = mkstemp(path);
	size_t len = 3 * 262144 + 1234;

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	fill_pattern(fd, len);
	check_file_position(fd, len);
	close(fd);

	fd = memfd_create("prot-read", MFD_CLOEXEC);
	assert_true(fd >= 0);
	fill_pattern(fd, len);
	check_file_position(fd, len);
	close(fd);
}

/*
 * Reads split at every byte boundary: for each k the peer sends the
 * first k bytes, pauses, then the rest; and once one byte per write.
 * Lines must come back whole, on sockets and on pipes.
 */
static const char script[] = "a1 NOOP\r\nb2 LOGIN user pass\r\nc3 LOGOUT\r\n";

static void read_script(struct protstream *s)
{
	char line[64];
	struct buf all = {0};

	while (prot_fgets(line, sizeof(line), s) != NULL) {
		size_t n = strlen(line);

		all.s = realloc(all.s, all.len + n + 1);
		assert_non_null(all.s);
		memcpy(all.s + all.len, line, n + 1);
		all.len += n;
	}
	assert_string_equal(prot_error(s), PROT_EOF_STRING);
	assert_int_equal(all.len, sizeof(script) - 1);
	assert_memory_equal(all.s, script, sizeof(script) - 1);
	assert_int_equal(prot_bytes_in(s), sizeof(script) - 1);
	free(all.s);
}

static void split_once(bool sock, size_t k, bool bytewise)
{
	struct step steps[2] = {
		{0, script, k},
		{2, script + k, sizeof(script) - 1 - k},
	};
	struct peer pr = {.bytewise = bytewise};
	struct protstream *s;
	int sv[2];

	if (sock)
		t_socketpair(sv);
	else
		assert_int_equal(pipe(sv), 0);
	s = prot_new(sv[0], 0);
	peer_start(&pr, sv[1], steps, 2, true);
	read_script(s);
	peer_join(&pr);
	prot_free(s);
	close(sv[0]);
}

static void test_prot_read_split_everywhere(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(script); k++) {
		split_once(true, k, false);
		split_once(false, k, false);
	}
	split_once(true, 0, true);
	split_once(false, 0, true);
}

/*
 * A large transfer on a socket: the application never sees more than
 * 4096 bytes per refill, every byte arrives in order, and the ungetc
 * allowance stops at the refill boundary.
 */
static void test_prot_read_socket_bulk(void **state)
{
	enum {
		N = 300000
	};
	char *data = malloc(N), *got = malloc(N);
	struct step st = {0, data, N};
	struct peer pr = {0};
	struct protstream *s;
	size_t have = 0;
	int sv[2], n;

	(void)state;
	for (size_t i = 0; i < N; i++)
		data[i] = (char)(i * 7 + i / 251);
	t_socketpair(sv);
	s = prot_new(sv[0], 0);
	peer_start(&pr, sv[1], &st, 1, true);
	while ((n = prot_read(s, got + have, N)) > 0) {
		assert_true(n <= PROT_BUFSIZE);
		have += (size_t)n;
		assert_true(have <= N);
	}
	assert_int_equal(have, N);
	assert_memory_equal(got, data, N);
	assert_int_equal(prot_bytes_in(s), N);
	assert_string_equal(prot_error(s), PROT_EOF_STRING);
	peer_join(&pr);
	prot_free(s);
	close(sv[0]);

	/* Push-back stops at the window boundary, even inside one recv. */
	t_socketpair(sv);
	write_all(sv[1], data, 10000);
	s = prot_new(sv[0], 0);
	assert_int_equal(prot_read(s, got, 4096), 4096);
	assert_int_equal(prot_getc(s), (unsigned char)data[4096]);
	assert_int_equal(prot_ungetc((unsigned char)data[4096], s),
			 (unsigned char)data[4096]);
	assert_int_equal(prot_getc(s), (unsigned char)data[4096]);
	assert_int_equal(prot_ungetc((unsigned char)data[4096], s),
			 (unsigned char)data[4096]);
	assert_int_equal(prot_ungetc((unsigned char)data[4095], s), EOF);
	assert_string_equal(prot_error(s), "Can't unwind any more");
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
	free(data);
	free(got);
}

/* 5.4 #43: a silent peer. */
static void test_prot_read_timeout_idle(void **state)
{
	struct protstream *s;
	uint64_t t0, dt;
	int sv[2];

	(void)state;
	t_socketpair(sv);
	s = prot_new(sv[0], 0);
	assert_int_equal(prot_settimeout(s, 1), 0);
	t0 = t_now_ms();
	assert_int_equal(prot_getc(s), EOF);
	dt = t_now_ms() - t0;
	assert_true(dt >= 900 && dt < 2500);
	assert_string_equal(prot_error(s), "idle for too long");
	assert_false(prot_IS_EOF(s));
	write_all(sv[1], "late", 4);
	assert_int_equal(prot_getc(s), EOF);
	assert_string_equal(prot_error(s), "idle for too long");
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
}

/* 5.4 #44: the window runs from the last refill (kept from Cyrus). */
static void test_prot_read_timeout_from_refill(void **state)
{
	struct protstream *s;
	uint64_t t0;
	int sv[2];

	(void)state;
	t_socketpair(sv);
	write_all(sv[1], "x", 1);
	s = prot_new(sv[0], 0);
	assert_int_equal(prot_settimeout(s, 1), 0);
	assert_int_equal(prot_getc(s), 'x');
	usleep(1300 * 1000);
	t0 = t_now_ms();
	assert_int_equal(prot_getc(s), EOF);
	assert_true(t_now_ms() - t0 < 800); /* vs a new 1 s window */
	assert_string_equal(prot_error(s), "idle for too long");
	prot_free(s);

	/* But input that is already there gets through a passed deadline. */
	s = prot_new(sv[0], 0);
	assert_int_equal(prot_settimeout(s, 1), 0);
	usleep(1300 * 1000);
	write_all(sv[1], "y", 1);
	assert_int_equal(prot_getc(s), 'y');
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
}

/* 5.4 #45 and #46 */
static void test_prot_read_nonblocking(void **state)
{
	struct protstream *s;
	int sv[2], p[2];

	(void)state;
	t_socketpair(sv);
	s = prot_new(sv[0], 0);
	prot_NONBLOCK(s);
	assert_false(prot_IS_BLOCKING(s));
	errno = 0;
	assert_int_equal(prot_getc(s), EOF);
	assert_int_equal(errno, EAGAIN);
	assert_null(prot_error(s));
	write_all(sv[1], "hi", 2);
	assert_int_equal(prot_getc(s), 'h');
	assert_int_equal(prot_getc(s), 'i');
	close(sv[1]);
	assert_int_equal(prot_getc(s), EOF);
	assert_string_equal(prot_error(s), PROT_EOF_STRING);
	prot_free(s);
	close(sv[0]);

	/* The same over a pipe (a read op cancelled after one turn). */
	assert_int_equal(pipe(p), 0);
	s = prot_new(p[0], 0);
	prot_NONBLOCK(s);
	errno = 0;
	assert_int_equal(prot_getc(s), EOF);
	assert_int_equal(errno, EAGAIN);
	assert_null(prot_error(s));
	write_all(p[1], "q", 1);
	assert_int_equal(prot_getc(s), 'q');
	prot_free(s);
	close(p[0]);
	close(p[1]);

	/* #46: prot_flush on a read stream throws pending input away. */
	t_socketpair(sv);
	write_all(sv[1], "abc", 3);
	s = prot_new(sv[0], 0);
	assert_int_equal(prot_getc(s), 'a');
	write_all(sv[1], "more bytes", 10);
	assert_int_equal(prot_flush(s), 0);
	assert_true(prot_IS_BLOCKING(s));
	prot_NONBLOCK(s);
	errno = 0;
	assert_int_equal(prot_getc(s), EOF);
	assert_int_equal(errno, EAGAIN);
	assert_null(prot_error(s));
	assert_int_equal(prot_ungetc('x', s), EOF); /* allowance is 0 */
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
}

/*
 * 5.5 #54: flush-on-read. Input readable: the partner is not flushed.
 * Not readable: the one-shot callback runs and the partner's bytes reach
 * the peer before the read waits.
 */
static int cb_calls;

static void count_cb(struct protstream *s, void *rock)
{
	(void)s;
	(void)rock;
	cb_calls++;
}

struct echo_peer {
	pthread_t th;
	int fd;
	char got[16];
};

/* Waits for the 7 pending bytes, then answers with input. */
static void *echo_main(void *arg)
{
	struct echo_peer *ep = arg;
	size_t have = 0;

	while (have < 7) {
		ssize_t r = read(ep->fd, ep->got + have, 7 - have);

		if (r <= 0)
			return NULL;
		have += (size_t)r;
	}
	write_all(ep->fd, "in", 2);
	return NULL;
}

static void test_prot_read_flushonread(void **state)
{
	struct protstream *in, *out;
	struct echo_peer ep = {0};
	char tmp[16];
	int sv[2];

	(void)state;
	t_socketpair(sv);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	assert_int_equal(prot_setflushonread(in, out), 0);
	assert_int_equal(prot_setreadcallback(in, count_cb, NULL), 0);
	cb_calls = 0;

	/* Readable input: nothing flushed, no callback. */
	write_all(sv[1], "r", 1);
	assert_int_equal(prot_puts(out, "pending"), 0);
	assert_int_equal(prot_getc(in), 'r');
	assert_int_equal(recv(sv[1], tmp, sizeof(tmp), MSG_DONTWAIT), -1);
	assert_int_equal(cb_calls, 0);

	/* Nothing readable: callback once, then the partner is flushed. */
	ep.fd = sv[1];
	assert_int_equal(pthread_create(&ep.th, NULL, echo_main, &ep), 0);
	assert_int_equal(prot_getc(in), 'i');
	assert_int_equal(pthread_join(ep.th, NULL), 0);
	assert_memory_equal(ep.got, "pending", 7);
	assert_int_equal(cb_calls, 1);
	assert_int_equal(prot_getc(in), 'n');

	/* One-shot: a later blocking read does not run it again. */
	write_all(sv[1], "z", 1);
	assert_int_equal(prot_getc(in), 'z');
	assert_int_equal(cb_calls, 1);
	prot_free(in);
	prot_free(out);
	close(sv[0]);
	close(sv[1]);
}

/* 5.5 #55: telemetry on one log fd shared by both streams. */
static void test_prot_read_telemetry(void **state)
{
	char path[] = "/tmp/prot-log-XXXXXX";
	struct protstream *in, *out;
	char want[128], got[128];
	int sv[2], log = mkstemp(path);
	long t;
	ssize_t n;

	(void)state;
	assert_true(log >= 0);
	unlink(path);
	t_socketpair(sv);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	prot_setlog(in, log);
	prot_setlog(out, log);
	write_all(sv[1], "a1 NOOP\r\n", 9);
	t = (long)time(NULL);
	assert_non_null(prot_fgets(got, sizeof(got), in));
	assert_int_equal(prot_puts(out, "a1 OK done\r\n"), 0);
	assert_int_equal(prot_flush(out), 0);
	assert_int_equal(prot_flush(out), 0); /* empty: no record */
	n = pread(log, got, sizeof(got) - 1, 0);
	assert_true(n > 0);
	got[n] = '\0';
	snprintf(want, sizeof(want), "<%ld<a1 NOOP\r\n>%ld>a1 OK done\r\n", t,
		 t);
	if (strcmp(got, want) != 0) { /* the second may have turned */
		snprintf(want, sizeof(want),
			 "<%ld<a1 NOOP\r\n>%ld>a1 OK done\r\n", t, t + 1);
	}
	assert_string_equal(got, want);
	prot_free(in);
	prot_free(out);
	close(sv[0]);
	close(sv[1]);
	close(log);
}

/*
 * Several streams on one loop, each served by its own fiber: a writer
 * fiber and a reader fiber per socketpair, all interleaved by the loop.
 */
#define FIB_PAIRS 8
#define FIB_LINES 200

struct fib_pair {
	int sv[2];
	int lines_read;
};

static int fib_writer(void *arg)
{
	struct fib_pair *fp = arg;
	struct protstream *out = prot_new(fp->sv[1], 1);
	int ret = 0;

	for (int i = 0; i < FIB_LINES && ret == 0; i++)
		ret = prot_printf(out, "line %d of pair %d\r\n", i, fp->sv[1]);
	if (ret == 0)
		ret = prot_flush(out);
	prot_free(out);
	shutdown(fp->sv[1], SHUT_WR);
	return ret;
}

static int fib_reader(void *arg)
{
	struct fib_pair *fp = arg;
	struct protstream *in = prot_new(fp->sv[0], 0);
	char line[128], want[128];

	prot_settimeout(in, 10);
	while (prot_fgets(line, sizeof(line), in) != NULL) {
		snprintf(want, sizeof(want), "line %d of pair %d\r\n",
			 fp->lines_read, fp->sv[1]);
		if (strcmp(line, want) != 0)
			break;
		fp->lines_read++;
	}
	prot_free(in);
	return 0;
}

static void test_prot_read_fibers(void **state)
{
	struct t_loop *tl = *state;
	struct fib_pair fp[FIB_PAIRS];
	struct ur_fiber *f[2 * FIB_PAIRS];
	int ret;

	for (int i = 0; i < FIB_PAIRS; i++) {
		memset(&fp[i], 0, sizeof(fp[i]));
		t_socketpair(fp[i].sv);
		assert_int_equal(ur_fiber_spawn(tl->loop, fib_reader, &fp[i],
						NULL, &f[2 * i]),
				 0);
		assert_int_equal(ur_fiber_spawn(tl->loop, fib_writer, &fp[i],
						NULL, &f[2 * i + 1]),
				 0);
	}
	for (int i = 0; i < 2 * FIB_PAIRS; i++) {
		assert_int_equal(ur_fiber_join(f[i], &ret), 0);
		assert_int_equal(ret, 0);
	}
	for (int i = 0; i < FIB_PAIRS; i++) {
		assert_int_equal(fp[i].lines_read, FIB_LINES);
		close(fp[i].sv[0]);
		close(fp[i].sv[1]);
	}
}

/*
 * A refill that fails leaves the window as the application left it
 * (Cyrus): what was consumed before EOF, an error or EAGAIN can still
 * be pushed back, whatever kind of buffer held it.
 */
static ssize_t one_then_fail(unsigned char *buf, size_t len, void *rock)
{
	int *i = rock;

	(void)len;
	if ((*i)++ == 0) {
		memcpy(buf, "xy", 2);
		return 2;
	}
	errno = ETIMEDOUT;
	return -1;
}

static void test_prot_read_failed_refill_keeps_window(void **state)
{
	struct protstream *s;
	int sv[2], i = 0;

	(void)state;
	/* Socket (provided buffer, given back before the wait). */
	t_socketpair(sv);
	write_all(sv[1], "xy", 2);
	s = prot_new(sv[0], 0);
	prot_NONBLOCK(s);
	assert_int_equal(prot_getc(s), 'x');
	assert_int_equal(prot_getc(s), 'y');
	assert_int_equal(prot_getc(s), EOF);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(s->can_unget, 2);
	assert_int_equal(prot_ungetc('y', s), 'y');
	assert_int_equal(prot_getc(s), 'y');
	close(sv[1]);
	prot_BLOCK(s);
	assert_int_equal(prot_getc(s), EOF);
	assert_true(prot_IS_EOF(s));
	assert_int_equal(prot_ungetc('y', s), 'y');
	assert_int_equal(prot_ungetc('x', s), 'x');
	assert_int_equal(prot_getc(s), 'x'); /* cnt > 0: served from it */
	prot_free(s);
	close(sv[0]);

	/* Pipe (own buffer). */
	assert_int_equal(pipe(sv), 0);
	write_all(sv[1], "xy", 2);
	close(sv[1]);
	s = prot_new(sv[0], 0);
	assert_int_equal(prot_getc(s), 'x');
	assert_int_equal(prot_getc(s), 'y');
	assert_int_equal(prot_getc(s), EOF);
	assert_int_equal(prot_ungetc('y', s), 'y');
	assert_int_equal(prot_ungetc('x', s), 'x');
	prot_free(s);
	close(sv[0]);

	/* Callback failing with ETIMEDOUT: its strerror, not the idle text. */
	s = prot_readcb(one_then_fail, &i);
	assert_int_equal(prot_getc(s), 'x');
	assert_int_equal(prot_getc(s), 'y');
	assert_int_equal(prot_getc(s), EOF);
	assert_string_equal(prot_error(s), "Connection timed out");
	assert_int_equal(prot_ungetc('y', s), 'y');
	prot_free(s);

	/* Map: prot_fill marks EOF and leaves unread bytes readable. */
	s = prot_readmap("abc", 3);
	assert_int_equal(prot_fill(s), EOF);
	assert_true(prot_IS_EOF(s));
	assert_int_equal(s->cnt, 3);
	assert_int_equal(prot_getc(s), 'a');
	prot_free(s);

	/* After a misuse error, nothing buffered comes out any more. */
	s = prot_readmap("abc", 3);
	assert_int_equal(prot_getc(s), 'a');
	assert_int_equal(prot_ungetc('b', s), EOF);
	assert_int_equal(prot_getc(s), EOF);
	assert_string_equal(prot_error(s), "Trying to unput wrong character");
	prot_free(s);
}

/* Spec 2.23: time spent waiting on the network is accounted per stream. */
static void test_prot_read_nettime(void **state)
{
	static const struct step st = {200, "n", 1};
	struct peer pr = {0};
	struct protstream *s;
	uint64_t before;
	int sv[2];

	(void)state;
	t_socketpair(sv);
	s = prot_new(sv[0], 0);
	before = prot_nettime(s);
	peer_start(&pr, sv[1], &st, 1, false);
	assert_int_equal(prot_getc(s), 'n');
	peer_join(&pr);
	assert_true(prot_nettime(s) - before >= 150ULL * 1000 * 1000);
	assert_true(prot_nettime(s) - before < 5ULL * 1000 * 1000 * 1000);
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
		T(test_prot_read_map_getc_eof),
		T(test_prot_read_map_ungetc_all),
		T(test_prot_read_ungetc_misuse),
		T(test_prot_read_inline_and_real),
		T(test_prot_read_fgets),
		T(test_prot_read_lookahead),
		T(test_prot_read_pipe_windows),
		T(test_prot_read_callback),
		T(test_prot_read_peer_close),
		T(test_prot_read_rewind),
		T(test_prot_read_memfd),
		T(test_prot_read_file_position),
		T(test_prot_read_split_everywhere),
		T(test_prot_read_socket_bulk),
		T(test_prot_read_timeout_idle),
		T(test_prot_read_timeout_from_refill),
		T(test_prot_read_nonblocking),
		T(test_prot_read_flushonread),
		T(test_prot_read_telemetry),
		T(test_prot_read_fibers),
		T(test_prot_read_nettime),
		T(test_prot_read_failed_refill_keeps_window),
#undef T
	};

	t_require_loop();
	return t_run_groups("prot-read", tests,
			    sizeof(tests) / sizeof(tests[0]));
}
