/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-write: the write side of the protstream, spec 5.2 and 5.7. */
#include "t-helpers.h" /* stdarg, stddef, setjmp, cmocka: in that order */

#include <ringprot/prot.h>

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <wchar.h>
#include <stdint.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* A reader thread collecting everything until EOF (or a byte count). */
struct sink {
	pthread_t th;
	int fd;
	size_t want; /* stop after this many bytes (0: until EOF) */
	int delay_ms;
	size_t chunk; /* read at most this much at a time (0: any) */
	int pause_ms; /* sleep after each read */
	char *got;
	size_t len, cap;
};

static void *sink_main(void *arg)
{
	struct sink *k = arg;

	if (k->delay_ms > 0)
		usleep((useconds_t)k->delay_ms * 1000);
	for (;;) {
		ssize_t r;

		if (k->len == k->cap) {
			k->cap = k->cap ? 2 * k->cap : 65536;
			k->got = realloc(k->got, k->cap);
			if (k->got == NULL)
				return NULL;
		}
		r = read(k->fd, k->got + k->len,
			 k->chunk > 0 && k->chunk < k->cap - k->len
				 ? k->chunk
				 : k->cap - k->len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		k->len += (size_t)r;
		if (k->pause_ms > 0)
			usleep((useconds_t)k->pause_ms * 1000);
		if (k->want > 0 && k->len >= k->want)
			break;
	}
	return NULL;
}

static void sink_start(struct sink *k, int fd, size_t want, int delay_ms)
{
	memset(k, 0, sizeof(*k));
	k->fd = fd;
	k->want = want;
	k->delay_ms = delay_ms;
	assert_int_equal(pthread_create(&k->th, NULL, sink_main, k), 0);
}

/* A slow reader: chunk bytes at a time, pause_ms between reads. */
static void sink_start_slow(struct sink *k, int fd, size_t want, size_t chunk,
			    int pause_ms)
{
	memset(k, 0, sizeof(*k));
	k->fd = fd;
	k->want = want;
	k->chunk = chunk;
	k->pause_ms = pause_ms;
	assert_int_equal(pthread_create(&k->th, NULL, sink_main, k), 0);
}

static void sink_join(struct sink *k)
{
	assert_int_equal(pthread_join(k->th, NULL), 0);
}

/* W(x): what a stream over a socketpair delivers after x and a flush. */
struct wpair {
	int sv[2];
	struct protstream *s;
};

static void wpair_open(struct wpair *w)
{
	t_socketpair(w->sv);
	w->s = prot_new(w->sv[0], 1);
	assert_non_null(w->s);
}

static size_t wpair_take(struct wpair *w, char *out, size_t cap)
{
	size_t n = 0;
	ssize_t r;

	assert_int_equal(prot_flush(w->s), 0);
	while ((r = recv(w->sv[1], out + n, cap - n, MSG_DONTWAIT)) > 0)
		n += (size_t)r;
	return n;
}

static void wpair_close(struct wpair *w)
{
	prot_free(w->s);
	close(w->sv[0]);
	close(w->sv[1]);
}

/* 5.2 #24, #25, #26 */
static void test_prot_write_printf(void **state)
{
	static const char want[] =
		"s -1 4000000000 -5 6 -7 8 9 ff Z %  3.14|ab |";
	struct wpair w;
	char got[256];

	(void)state;
	wpair_open(&w);
	assert_int_equal(
		prot_printf(
			w.s,
			"%s %d %u %ld %lu %lld %llu %zu %x %c %% %5.2f|%-3s|",
			"s", -1, 4000000000u, -5L, 6UL, -7LL, 8ULL, (size_t)9,
			255, 'Z', 3.14159, "ab"),
		0);
	assert_int_equal(wpair_take(&w, got, sizeof(got)), sizeof(want) - 1);
	assert_memory_equal(got, want, sizeof(want) - 1);

	assert_int_equal(prot_printf(w.s, "a%cb", 0), 0);
	assert_int_equal(wpair_take(&w, got, sizeof(got)), 3);
	assert_memory_equal(got, "a\0b", 3);

	assert_int_equal(prot_data_boundary(w.s), 0); /* a no-op, as Cyrus */
	assert_int_equal(prot_printf(w.s, "%s", ""), 0);
	assert_int_equal(wpair_take(&w, got, sizeof(got)), 0);
	assert_int_equal(prot_puts(w.s, "hello"), 0);
	assert_int_equal(wpair_take(&w, got, sizeof(got)), 5);
	assert_memory_equal(got, "hello", 5);
	assert_int_equal(prot_putc('x', w.s), 0);
	assert_int_equal(wpair_take(&w, got, sizeof(got)), 1);
	assert_int_equal(got[0], 'x');
	assert_int_equal(prot_write(w.s, "zzz", 0), 0);
	assert_int_equal(wpair_take(&w, got, sizeof(got)), 0);
	wpair_close(&w);
}

/* printf results longer than the free space, and longer than a buffer. */
static void test_prot_write_printf_long(void **state)
{
	static char big[10000], got[20000];
	struct wpair w;
	struct sink k;

	(void)state;
	memset(big, 'q', sizeof(big) - 1);
	wpair_open(&w);
	sink_start(&k, w.sv[1], 4000 + sizeof(big) - 1 + 2, 0);
	assert_int_equal(prot_printf(w.s, "%4000d", 7), 0);
	assert_int_equal(prot_printf(w.s, "%s\r\n", big), 0);
	assert_int_equal(prot_flush(w.s), 0);
	sink_join(&k);
	assert_int_equal(k.len, 4000 + sizeof(big) - 1 + 2);
	snprintf(got, sizeof(got), "%4000d%s\r\n", 7, big);
	assert_memory_equal(k.got, got, k.len);
	assert_int_equal(prot_bytes_out(w.s), k.len);
	free(k.got);
	wpair_close(&w);
}

/*
 * prot_printf's own fast formatter and vsnprintf give the same bytes:
 * every conversion it takes, the ones it leaves to vsnprintf, and results
 * that end just below, at and past the free space.
 */
#define CHECK_PRINTF(...)                                             \
	do {                                                          \
		char want_[6000];                                     \
		int n_ = snprintf(want_, sizeof(want_), __VA_ARGS__); \
                                                                      \
		b.len = 0;                                            \
		assert_int_equal(prot_printf(s, __VA_ARGS__), 0);     \
		assert_int_equal(prot_flush(s), 0);                   \
		assert_int_equal(b.len, (size_t)n_);                  \
		assert_memory_equal(b.s, want_, (size_t)n_);          \
	} while (0)

static void test_prot_write_printf_fast(void **state)
{
	static char big[5000];
	const char *volatile null = NULL;
	struct buf b = {0};
	struct protstream *s = prot_writebuf(&b);
	char pre[PROT_BUFSIZE];

	(void)state;
	memset(big, 'b', sizeof(big) - 1);
	CHECK_PRINTF("%d|%d|%i|%d", INT_MIN, INT_MAX, -1, 0);
	CHECK_PRINTF("%u|%u|%x|%x", UINT_MAX, 0u, 0u, 0xdeadbeefu);
	CHECK_PRINTF("%ld|%ld|%lu|%lx", LONG_MIN, LONG_MAX, ULONG_MAX, 255UL);
	CHECK_PRINTF("%lld|%llu|%llx|%lli", LLONG_MIN, ULLONG_MAX, 1ULL, -7LL);
	CHECK_PRINTF("%zu|%zd|%zx|%zi", SIZE_MAX, (ssize_t)-5, (size_t)16,
		     (ssize_t)3);
	CHECK_PRINTF("%s|%s|%.*s|%.*s", "abc", "", 2, "abcdef", -1, "neg");
	CHECK_PRINTF("%.*s|%.*s|", 10, "ab", 0, "xyz");
	CHECK_PRINTF("%c%c%c|%%|100%% %s", 'A', 0, 0xe9, "x");
	CHECK_PRINTF("* %u EXISTS\r\n", 12345u);
	CHECK_PRINTF("%s", big);
	/* Left to vsnprintf. */
	CHECK_PRINTF("%s|%.*s|%.*s", null, 3, null, 6, null);
	CHECK_PRINTF("%5d|%-3s|%02X|%+d|%#x|%hd|%hhu|%.3d|%5.2f|%p", 7, "ab",
		     10, 3, 255, (short)-2, (unsigned char)200, 5, 3.14159,
		     (void *)&b);
	CHECK_PRINTF("%lc|%ls|%jd|%td", (wint_t)'w', L"wide", (intmax_t)-9,
		     (ptrdiff_t)4);
	/* Results that end around the free space. */
	memset(pre, 'p', sizeof(pre));
	for (unsigned k = PROT_BUFSIZE - 12; k < PROT_BUFSIZE; k++) {
		char want[PROT_BUFSIZE + 32];
		int n = snprintf(want, sizeof(want), "%.*s%s %d\r\n", (int)k,
				 pre, "abc", 12345);

		b.len = 0;
		assert_int_equal(prot_write(s, pre, k), 0);
		assert_int_equal(prot_printf(s, "%s %d\r\n", "abc", 12345), 0);
		assert_int_equal(prot_flush(s), 0);
		assert_int_equal(b.len, (size_t)n);
		assert_memory_equal(b.s, want, (size_t)n);
	}
	prot_free(s);
	free(b.s);
}

/* 5.2 #27: the 4096th byte triggers a 4096-byte write. */
static void test_prot_write_autoflush(void **state)
{
	char path[] = "/tmp/prot-write-XXXXXX";
	static char data[4096];
	struct protstream *s;
	struct stat st;
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	memset(data, 'd', sizeof(data));
	s = prot_new(fd, 1);
	assert_int_equal(prot_write(s, data, 4095), 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 0);
	assert_int_equal(s->cnt, 1);
	assert_int_equal(prot_write(s, data, 1), 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 4096);
	assert_int_equal(s->cnt, 4096);
	prot_free(s);
	close(fd);
}

/* 5.2 #28 and 5.1 #23's writebuf half. */
static void test_prot_write_writebuf(void **state)
{
	struct buf b = {0};
	struct protstream *s = prot_writebuf(&b);

	(void)state;
	assert_true(s->isclient);
	for (int i = 0; i < 5000; i++)
		assert_int_equal(prot_putc('.', s), 0);
	assert_int_equal(b.len, 4096);
	assert_int_equal(prot_flush(s), 0);
	assert_int_equal(b.len, 5000);
	for (size_t i = 0; i < b.len; i++)
		assert_int_equal(b.s[i], '.');
	/* A large write lands whole, in order. */
	b.len = 0;
	{
		static char data[20000];

		for (size_t i = 0; i < sizeof(data); i++)
			data[i] = (char)i;
		assert_int_equal(prot_write(s, data, sizeof(data)), 0);
		assert_int_equal(prot_flush(s), 0);
		assert_int_equal(b.len, sizeof(data));
		assert_memory_equal(b.s, data, sizeof(data));
	}
	prot_free(s);
	free(b.s);
}

/* 5.2 #30: a write error is sticky. */
static void test_prot_write_error_sticky(void **state)
{
	struct wpair w;

	(void)state;
	wpair_open(&w);
	close(w.sv[1]);
	w.sv[1] = -1;
	assert_int_equal(prot_puts(w.s, "x"), 0);
	assert_int_equal(prot_flush(w.s), EOF);
	assert_string_equal(prot_error(w.s), "Broken pipe");
	assert_int_equal(prot_printf(w.s, "%d", 1), EOF);
	assert_int_equal(prot_write(w.s, "abc", 3), EOF);
	assert_int_equal(prot_putc('a', w.s), EOF);
	assert_int_equal(prot_flush(w.s), EOF);
	prot_free(w.s);
	close(w.sv[0]);
}

/*
 * A large blocking write goes out in few sends and whole, and telemetry
 * still shows one record per 4096-byte chunk, as Cyrus writes them.
 */
static void test_prot_write_big_gather(void **state)
{
	enum {
		N = 1 << 20
	};
	char path[] = "/tmp/prot-wlog-XXXXXX";
	char *data = malloc(N + 100), *log;
	struct protstream *s;
	struct sink k;
	struct stat st;
	int sv[2], lfd = mkstemp(path);
	size_t records = 0;

	(void)state;
	assert_true(lfd >= 0);
	unlink(path);
	for (size_t i = 0; i < N + 100; i++)
		data[i] = (char)(i % 251);
	t_socketpair(sv);
	s = prot_new(sv[0], 1);
	prot_setlog(s, lfd);
	sink_start(&k, sv[1], N + 100, 0);
	assert_int_equal(prot_write(s, data, 100), 0);
	assert_int_equal(prot_write(s, data + 100, N), 0);
	assert_int_equal(prot_flush(s), 0);
	sink_join(&k);
	assert_int_equal(k.len, N + 100);
	assert_memory_equal(k.got, data, N + 100);
	assert_int_equal(prot_bytes_out(s), N + 100);
	/* Each record is ">T>" + up to 4096 bytes. */
	assert_int_equal(fstat(lfd, &st), 0);
	log = malloc((size_t)st.st_size);
	assert_int_equal(pread(lfd, log, (size_t)st.st_size, 0), st.st_size);
	for (size_t off = 0, data_off = 0; off < (size_t)st.st_size;) {
		char *end;
		size_t n;

		assert_int_equal(log[off], '>');
		(void)strtol(log + off + 1, &end, 10);
		assert_int_equal(*end, '>');
		off = (size_t)(end - log) + 1;
		n = N + 100 - data_off < 4096 ? N + 100 - data_off : 4096;
		assert_memory_equal(log + off, data + data_off, n);
		off += n;
		data_off += n;
		records++;
	}
	assert_int_equal(records, (N + 100 + 4095) / 4096);
	free(log);
	free(k.got);
	free(data);
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
	close(lfd);
}

/*
 * prot_setdirectio(1): a flush first tries a non-blocking send(2); the
 * bytes, their order, the counters and the telemetry stay the same, and
 * what the socket cannot take goes through the ring (1 MiB against a
 * reader that drains slowly).
 */
static void test_prot_write_directio(void **state)
{
	prot_setdirectio(1);
	test_prot_write_big_gather(state);
	test_prot_write_printf(state);
	prot_setdirectio(0);
}

static void small_sndbuf(int fd)
{
	int v = 4096;

	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)),
			 0);
}

/*
 * 5.7 #65: a non-blocking stream with no reader takes 1 MiB at once and
 * queues it; a forced flush with a reader delivers every byte in order.
 */
static void test_prot_write_nonblocking_queue(void **state)
{
	enum {
		N = 1 << 20
	};
	char *data = malloc(N);
	struct protstream *s;
	struct sink k;
	uint64_t t0;
	int sv[2];

	(void)state;
	for (size_t i = 0; i < N; i++)
		data[i] = (char)(i * 13 + (i >> 12));
	t_socketpair(sv);
	small_sndbuf(sv[0]);
	s = prot_new(sv[0], 1);
	prot_NONBLOCK(s);
	t0 = t_now_ms();
	assert_int_equal(prot_write(s, data, N), 0);
	assert_true(t_now_ms() - t0 < 5000); /* would hang: nobody reads yet */
	assert_true(prot_queued(s) > 0);
	assert_null(prot_error(s));
	sink_start(&k, sv[1], N, 0);
	assert_int_equal(prot_flush(s), 0);
	assert_int_equal(prot_queued(s), 0);
	sink_join(&k);
	assert_int_equal(k.len, N);
	assert_memory_equal(k.got, data, N);
	assert_false(prot_IS_BLOCKING(s) != 0);
	free(k.got);
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
	free(data);
}

/* Past the bound: "output queue full", EOF, and what went out is a prefix. */
static void test_prot_write_queue_bound(void **state)
{
	enum {
		N = 1 << 20
	};
	char *data = malloc(N);
	struct protstream *s;
	struct sink k;
	int sv[2], ret = 0;
	size_t sent = 0;

	(void)state;
	for (size_t i = 0; i < N; i++)
		data[i] = (char)(i % 253);
	t_socketpair(sv);
	small_sndbuf(sv[0]);
	s = prot_new(sv[0], 1);
	assert_int_equal(prot_setqueuelimit(s, 100), EOF);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(prot_setqueuelimit(s, 65536), 0);
	prot_NONBLOCK(s);
	for (sent = 0; sent < N && ret == 0; sent += 1000)
		ret = prot_write(s, data + sent, 1000);
	assert_int_equal(ret, EOF);
	assert_string_equal(prot_error(s), "output queue full");
	assert_int_equal(prot_write(s, "x", 1), EOF);
	assert_int_equal(prot_flush(s), EOF);
	prot_free(s);
	shutdown(sv[0], SHUT_WR);
	sink_start(&k, sv[1], 0, 0);
	sink_join(&k);
	assert_true(k.len < sent);
	assert_memory_equal(k.got, data, k.len);
	free(k.got);
	close(sv[0]);
	close(sv[1]);
	free(data);
}

/*
 * In a fiber, a non-blocking write never parks: another fiber that only
 * yields does not get to run during the call.
 */
struct nb_fib {
	int fd;
	int ticks;
	bool stop;
	int ticks_during;
	int ret;
};

static int ticker(void *arg)
{
	struct nb_fib *nf = arg;

	while (!nf->stop) {
		nf->ticks++;
		if (ur_fiber_yield() < 0)
			break;
	}
	return 0;
}

static int nb_writer(void *arg)
{
	struct nb_fib *nf = arg;
	static char data[256 * 1024];
	struct protstream *s = prot_new(nf->fd, 1);
	int before;

	memset(data, 'n', sizeof(data));
	prot_NONBLOCK(s);
	nf->ret = ur_fiber_yield(); /* 0, asserted with the rest */
	before = nf->ticks;
	nf->ret |= prot_write(s, data, sizeof(data));
	nf->ret |= prot_flush_internal(s, 0);
	nf->ticks_during = nf->ticks - before;
	nf->ret |= prot_flush(s); /* forced: parks until all is sent */
	nf->stop = true;
	prot_free(s);
	return 0;
}

static void test_prot_write_nonblocking_never_parks(void **state)
{
	struct t_loop *tl = *state;
	struct nb_fib nf = {0};
	struct ur_fiber *a, *b;
	struct sink k;
	int sv[2];

	t_socketpair(sv);
	small_sndbuf(sv[0]);
	nf.fd = sv[0];
	sink_start(&k, sv[1], 256 * 1024, 50);
	assert_int_equal(ur_fiber_spawn(tl->loop, ticker, &nf, NULL, &a), 0);
	assert_int_equal(ur_fiber_spawn(tl->loop, nb_writer, &nf, NULL, &b), 0);
	assert_int_equal(ur_fiber_join(b, NULL), 0);
	assert_int_equal(ur_fiber_join(a, NULL), 0);
	sink_join(&k);
	assert_int_equal(nf.ret, 0);
	assert_int_equal(nf.ticks_during, 0);
	assert_int_equal(k.len, 256 * 1024);
	free(k.got);
	close(sv[0]);
	close(sv[1]);
}

/* prot_free with queued output in flight neither waits nor leaks. */
static void test_prot_write_free_with_queue(void **state)
{
	static char data[200000];
	struct protstream *s;
	int sv[2];

	(void)state;
	t_socketpair(sv);
	small_sndbuf(sv[0]);
	s = prot_new(sv[0], 1);
	prot_NONBLOCK(s);
	assert_int_equal(prot_write(s, data, sizeof(data)), 0);
	assert_true(prot_queued(s) > 0);
	prot_free(s); /* the teardown checks the cancelled op was reaped */
	close(sv[0]);
	close(sv[1]);
}

/*
 * A fiber cancelled in a forced flush that waits for the background send
 * (no reader): the flush fails, and the queued blocks the kernel may
 * still read stay alive until the cancelled op has been reaped (ASan).
 */
struct cancel_w {
	int fd;
	int flush_ret;
	char err[64];
};

static int cancel_writer(void *arg)
{
	struct cancel_w *cw = arg;
	static char data[300000];
	struct protstream *s = prot_new(cw->fd, 1);

	prot_NONBLOCK(s);
	(void)prot_write(s, data, sizeof(data));
	cw->flush_ret = prot_flush(s);
	snprintf(cw->err, sizeof(cw->err), "%s",
		 prot_error(s) ? prot_error(s) : "(none)");
	prot_free(s);
	return 0;
}

static void test_prot_write_fiber_cancel(void **state)
{
	struct t_loop *tl = *state;
	struct cancel_w cw = {0};
	struct ur_fiber *f;
	int sv[2];

	t_socketpair(sv);
	small_sndbuf(sv[0]);
	cw.fd = sv[0];
	assert_int_equal(ur_fiber_spawn(tl->loop, cancel_writer, &cw, NULL, &f),
			 0);
	for (int i = 0; i < 5; i++)
		assert_true(ur_loop_run_once(tl->loop, 1000 * 1000) >= 0);
	assert_int_equal(ur_fiber_cancel(f), 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(cw.flush_ret, EOF);
	assert_string_equal(cw.err, "Operation canceled");
	close(sv[0]);
	close(sv[1]);
}

/* A pipe write stream and a peer that closed it: EPIPE, no signal death. */
static void test_prot_write_pipe(void **state)
{
	struct protstream *s;
	char got[16];
	int p[2];

	(void)state;
	assert_int_equal(pipe(p), 0);
	s = prot_new(p[1], 1);
	assert_int_equal(prot_printf(s, "%s", "piped"), 0);
	assert_int_equal(prot_flush(s), 0);
	assert_int_equal(read(p[0], got, sizeof(got)), 5);
	assert_memory_equal(got, "piped", 5);
	close(p[0]);
	assert_int_equal(prot_puts(s, "x"), 0);
	assert_int_equal(prot_flush(s), EOF);
	assert_string_equal(prot_error(s), "Broken pipe");
	prot_free(s);
	close(p[1]);
}

/* Bytes flushed and io_uring_enter calls made by one 10000-byte flush. */
static void flush_counting(struct ur_loop *loop, struct protstream *s,
			   uint64_t *enters_out)
{
	static char data[10000];
	struct ur_loop_stats a, b;

	ur_loop_stats(loop, &a);
	assert_int_equal(prot_write(s, data, sizeof(data)), 0);
	assert_int_equal(prot_flush(s), 0);
	ur_loop_stats(loop, &b);
	assert_int_equal(s->bytes_out, sizeof(data));
	assert_int_equal(prot_queued(s), 0);
	*enters_out = b.enters - a.enters;
}

/*
 * A memory device never makes a write wait: a flush to /dev/null is a
 * plain writev(2), with no ring write and no io_uring_enter. A tty, a
 * character device that can wait, still writes through the ring.
 */
static void test_prot_write_mem_dev(void **state)
{
	struct t_loop *tl = *state;
	struct protstream *s;
	uint64_t enters;
	int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	int pt = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);

	assert_true(fd >= 0);
	s = prot_new(fd, 1);
	flush_counting(tl->loop, s, &enters);
	assert_int_equal(enters, 0);
	prot_free(s);
	close(fd);

	if (pt < 0 || grantpt(pt) < 0 || unlockpt(pt) < 0) {
		print_message("no pty here (%s): tty half not run\n",
			      strerror(errno));
		if (pt >= 0)
			close(pt);
		return;
	}
	fd = open(ptsname(pt), O_WRONLY | O_NOCTTY | O_CLOEXEC);
	assert_true(fd >= 0);
	s = prot_new(fd, 1);
	flush_counting(tl->loop, s, &enters);
	assert_true(enters > 0);
	prot_free(s);
	close(fd);
	close(pt);
}

/* /dev/full: the error of a memory device write is the ring's, sticky. */
static void test_prot_write_mem_dev_error(void **state)
{
	struct protstream *s;
	int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);

	(void)state;
	assert_true(fd >= 0);
	s = prot_new(fd, 1);
	assert_int_equal(prot_puts(s, "x"), 0);
	assert_int_equal(prot_flush(s), EOF);
	assert_string_equal(prot_error(s), "No space left on device");
	assert_int_equal(prot_write(s, "abc", 3), EOF);
	assert_int_equal(prot_flush(s), EOF);
	prot_free(s);
	close(fd);
}

/*
 * Spec 6.8, write timeout: a peer that stops reading. The blocking flush
 * gives up after the window ("write timed out", ETIMEDOUT) instead of
 * hanging for ever, and the error is sticky.
 */
static void test_prot_write_timeout_stalled_peer(void **state)
{
	static char data[1 << 20];
	struct protstream *s;
	uint64_t t0, took;
	int sv[2];

	(void)state;
	t_socketpair(sv);
	small_sndbuf(sv[0]);
	s = prot_new(sv[0], 1);
	assert_int_equal(prot_setwritetimeout_ms(s, 300), 0);
	t0 = t_now_ms();
	assert_int_equal(prot_write(s, data, sizeof(data)), EOF);
	took = t_now_ms() - t0;
	assert_int_equal(errno, ETIMEDOUT);
	assert_string_equal(prot_error(s), "write timed out");
	assert_in_range(took, 250, 10000);
	assert_int_equal(prot_write(s, "x", 1), EOF); /* sticky */
	assert_int_equal(prot_flush(s), EOF);
	assert_string_equal(prot_error(s), "write timed out");
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
}

/* A slow reader that keeps taking bytes never times out. */
static void test_prot_write_timeout_slow_reader(void **state)
{
	enum {
		N = 256 * 1024
	};
	static char data[N];
	struct protstream *s;
	struct sink k;
	int sv[2];

	(void)state;
	for (size_t i = 0; i < N; i++)
		data[i] = (char)('a' + i % 23);
	t_socketpair(sv);
	small_sndbuf(sv[0]);
	s = prot_new(sv[0], 1);
	assert_int_equal(prot_setwritetimeout_ms(s, 400), 0);
	/* About 1.6 s in all, far longer than the window. */
	sink_start_slow(&k, sv[1], N, 8192, 50);
	assert_int_equal(prot_write(s, data, N), 0);
	assert_int_equal(prot_flush(s), 0);
	assert_null(prot_error(s));
	sink_join(&k);
	assert_int_equal(k.len, N);
	assert_memory_equal(k.got, data, N);
	free(k.got);
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
}

/* The background send of a non-blocking stream's queue times out too. */
static void test_prot_write_timeout_nonblocking(void **state)
{
	static char data[1 << 20];
	struct t_loop *tl = *state;
	struct protstream *s;
	int sv[2];

	t_socketpair(sv);
	small_sndbuf(sv[0]);
	s = prot_new(sv[0], 1);
	prot_NONBLOCK(s);
	assert_int_equal(prot_setwritetimeout_ms(s, 200), 0);
	/* Queued at once (a forced prot_flush would block, and time out). */
	assert_int_equal(prot_write(s, data, sizeof(data)), 0);
	assert_true(prot_queued(s) > 0);
	for (uint64_t end = t_now_ms() + 10000;
	     prot_error(s) == NULL && t_now_ms() < end;)
		assert_true(ur_loop_run_once(tl->loop, 50 * 1000 * 1000) >= 0);
	assert_string_equal(prot_error(s), "write timed out");
	assert_int_equal(prot_queued(s), 0);
	assert_int_equal(prot_write(s, "x", 1), EOF);
	assert_int_equal(prot_flush(s), EOF);
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
}

/* A pipe nobody drains: the writev path has the same window. */
static void test_prot_write_timeout_pipe(void **state)
{
	static char data[1 << 20];
	struct protstream *s;
	int p[2];

	(void)state;
	assert_int_equal(pipe(p), 0);
	s = prot_new(p[1], 1);
	assert_int_equal(prot_setwritetimeout(s, 1), 0);
	assert_int_equal(prot_write(s, data, sizeof(data)), EOF);
	assert_string_equal(prot_error(s), "write timed out");
	prot_free(s);
	close(p[0]);
	close(p[1]);
}

/* Misuse: a read stream has no write timeout; negative is refused. */
static void test_prot_write_timeout_args(void **state)
{
	struct protstream *r = prot_new(0, 0);
	struct protstream *w = prot_new(1, 1);

	(void)state;
	errno = 0;
	assert_int_equal(prot_setwritetimeout(r, 5), EOF);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(prot_setwritetimeout(w, -1), EOF);
	assert_int_equal(prot_setwritetimeout(w, 0), 0);
	assert_int_equal(prot_setwritetimeout_ms(w, 1500), 0);
	prot_free(r);
	prot_free(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
		T(test_prot_write_printf),
		T(test_prot_write_printf_long),
		T(test_prot_write_printf_fast),
		T(test_prot_write_autoflush),
		T(test_prot_write_writebuf),
		T(test_prot_write_error_sticky),
		T(test_prot_write_big_gather),
		T(test_prot_write_directio),
		T(test_prot_write_nonblocking_queue),
		T(test_prot_write_queue_bound),
		T(test_prot_write_nonblocking_never_parks),
		T(test_prot_write_free_with_queue),
		T(test_prot_write_fiber_cancel),
		T(test_prot_write_pipe),
		T(test_prot_write_mem_dev),
		T(test_prot_write_mem_dev_error),
		T(test_prot_write_timeout_stalled_peer),
		T(test_prot_write_timeout_slow_reader),
		T(test_prot_write_timeout_nonblocking),
		T(test_prot_write_timeout_pipe),
		T(test_prot_write_timeout_args),
#undef T
	};

	/* Pipes to a closed reader raise SIGPIPE for plain writes. */
	signal(SIGPIPE, SIG_IGN);
	t_require_loop();
	return t_run_groups("prot-write", tests,
			    sizeof(tests) / sizeof(tests[0]));
}
