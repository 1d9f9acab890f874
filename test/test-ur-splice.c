/* SPDX-License-Identifier: BSD-3-Clause */
/* test/ur-splice: ur_splice between a file, a pipe and a socket. */
#include "t-helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BIG (1024 * 1024 + 777) /* more than a socket buffer holds */

/* A temporary file of len pattern bytes (unlinked: closing frees it). */
static int pattern_file(size_t len)
{
	char path[] = "/tmp/ur-splice-XXXXXX";
	char *p = malloc(len);
	int fd = mkstemp(path);

	assert_non_null(p);
	assert_true(fd >= 0);
	unlink(path);
	for (size_t i = 0; i < len; i++)
		p[i] = (char)('a' + (i * 7 + i / 4093) % 26);
	assert_int_equal(write(fd, p, len), (ssize_t)len);
	free(p);
	return fd;
}

struct sink {
	int fd;
	size_t want;
	char *got;
	size_t len;
};

/* Read everything the peer sends, with small reads, until EOF or want. */
static int sink_fn(void *arg)
{
	struct sink *s = arg;

	while (s->len < s->want) {
		ssize_t n = ur_recv(
			s->fd, s->got + s->len,
			s->want - s->len < 4096 ? s->want - s->len : 4096, 0);

		if (n <= 0)
			return n < 0 ? (int)n : 0;
		s->len += (size_t)n;
	}
	return 0;
}

struct pump {
	int file, pipe[2], sock;
	size_t len;
	int64_t moved;
};

/* file -> pipe -> socket in chunks of at most a pipe's size. */
static int pump_fn(void *arg)
{
	struct pump *p = arg;
	int64_t off = 0;

	while ((size_t)off < p->len) {
		ssize_t in = ur_splice(p->file, off, p->pipe[1], -1,
				       p->len - (size_t)off, SPLICE_F_MORE);

		if (in <= 0)
			return in < 0 ? (int)in : -EIO;
		off += in;
		while (in > 0) {
			ssize_t out = ur_splice(p->pipe[0], -1, p->sock, -1,
						(size_t)in, 0);

			if (out <= 0)
				return out < 0 ? (int)out : -EIO;
			in -= out;
			p->moved += out;
		}
	}
	return 0;
}

static void check_pattern(const char *got, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (got[i] != (char)('a' + (i * 7 + i / 4093) % 26))
			fail_msg("byte %zu differs", i);
}

static void test_ur_splice_file_to_socket(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct pump p = {.len = BIG};
	struct sink s = {.want = BIG};
	struct ur_fiber *fp, *fs;
	int sv[2], rp = -1, rs = -1;

	t_socketpair(sv);
	assert_int_equal(pipe2(p.pipe, O_CLOEXEC), 0);
	p.file = pattern_file(BIG);
	p.sock = sv[0];
	s.fd = sv[1];
	s.got = malloc(BIG);
	assert_non_null(s.got);
	assert_int_equal(ur_fiber_spawn(loop, pump_fn, &p, NULL, &fp), 0);
	assert_int_equal(ur_fiber_spawn(loop, sink_fn, &s, NULL, &fs), 0);
	assert_int_equal(ur_fiber_join(fp, &rp), 0);
	assert_int_equal(ur_fiber_join(fs, &rs), 0);
	assert_int_equal(rp, 0);
	assert_int_equal(rs, 0);
	assert_int_equal(p.moved, BIG);
	assert_int_equal(s.len, BIG);
	check_pattern(s.got, BIG);
	/* The socket is left as it was (epoll flips O_NONBLOCK per call). */
	assert_int_equal(fcntl(sv[0], F_GETFL) & O_NONBLOCK, 0);
	free(s.got);
	close(p.file);
	close(p.pipe[0]);
	close(p.pipe[1]);
	t_close_pair(sv);
}

struct feeder {
	int fd;
};

/* Write to the pipe only after the splice has had to wait for input. */
static int feed_fn(void *arg)
{
	struct feeder *fe = arg;
	int ret = ur_sleep_until(CLOCK_MONOTONIC,
				 ur_now_ns(CLOCK_MONOTONIC) + 20000000ULL);

	if (ret < 0)
		return ret;
	return (int)ur_write(fe->fd, "late", 4, -1);
}

static void test_ur_splice_waits_for_input(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct feeder fe;
	struct ur_fiber *f;
	int pp[2], sv[2], ret = -1;
	char buf[8];

	t_socketpair(sv);
	assert_int_equal(pipe2(pp, O_CLOEXEC), 0);
	fe.fd = pp[1];
	assert_int_equal(ur_fiber_spawn(loop, feed_fn, &fe, NULL, &f), 0);
	assert_int_equal(ur_splice(pp[0], -1, sv[0], -1, 100, 0), 4);
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(ret, 4);
	assert_int_equal(recv(sv[1], buf, sizeof(buf), 0), 4);
	assert_memory_equal(buf, "late", 4);
	close(pp[0]);
	close(pp[1]);
	t_close_pair(sv);
}

static void test_ur_splice_ends_and_errors(void **state)
{
	int file = pattern_file(100), pp[2], sv[2];
	char buf[16];

	(void)state;
	t_socketpair(sv);
	assert_int_equal(pipe2(pp, O_CLOEXEC), 0);
	/* At the file's end: 0. From an offset: those bytes only. */
	assert_int_equal(ur_splice(file, 100, pp[1], -1, 50, 0), 0);
	assert_int_equal(ur_splice(file, 90, pp[1], -1, 50, 0), 10);
	assert_int_equal(read(pp[0], buf, sizeof(buf)), 10);
	/* No pipe at either end. */
	assert_int_equal(ur_splice(file, 0, sv[0], -1, 10, 0), -EINVAL);
	/* A closed pipe's write end: EOF at the read end. */
	close(pp[1]);
	assert_int_equal(ur_splice(pp[0], -1, sv[0], -1, 10, 0), 0);
	assert_int_equal(ur_splice(-1, -1, sv[0], -1, 10, 0), -EBADF);
	close(pp[0]);
	close(file);
	t_close_pair(sv);
}

/* A peer that never reads: the splice gives up at its deadline. */
static void test_ur_splice_until_times_out(void **state)
{
	int file = pattern_file(BIG), pp[2], sv[2];
	int64_t off = 0;
	ssize_t n = 0;
	uint64_t t0;
	int tries;

	(void)state;
	t_socketpair(sv);
	assert_int_equal(pipe2(pp, O_CLOEXEC), 0);
	(void)fcntl(pp[1], F_SETPIPE_SZ, BIG);
	for (tries = 0; tries < 8; tries++) {
		if (n == 0) {
			n = ur_splice(file, off, pp[1], -1, 65536, 0);
			assert_true(n > 0);
			off += n;
		}
		t0 = t_now_ms();
		n = ur_splice_until(pp[0], -1, sv[0], -1, (size_t)n, 0,
				    ur_now_ns(CLOCK_MONOTONIC) + 30000000ULL);
		if (n == -ETIMEDOUT)
			break;
		assert_true(n > 0);
	}
	assert_int_equal(n, -ETIMEDOUT);
	assert_true(t_now_ms() - t0 >= 29);
	close(pp[0]);
	close(pp[1]);
	close(file);
	t_close_pair(sv);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
	const struct CMUnitTest tests[] = {
		T(test_ur_splice_file_to_socket),
		T(test_ur_splice_waits_for_input),
		T(test_ur_splice_ends_and_errors),
		T(test_ur_splice_until_times_out),
	};
#undef T

	t_require_loop();
	return t_run_groups("ur-splice", tests,
			    sizeof(tests) / sizeof(tests[0]));
}
