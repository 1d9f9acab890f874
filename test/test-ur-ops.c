/* SPDX-License-Identifier: BSD-3-Clause */
/* test/ur-ops: each op's blocking and callback faces, cancel, direct fds. */
#include "t-helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_ur_ops_send_recv(void **state)
{
	int sv[2];
	char buf[16];

	(void)state;
	t_socketpair(sv);
	assert_int_equal(ur_send(sv[0], "ping", 4, 0), 4);
	assert_int_equal(ur_recv(sv[1], buf, sizeof(buf), 0), 4);
	assert_memory_equal(buf, "ping", 4);
	close(sv[0]);
	assert_int_equal(ur_recv(sv[1], buf, sizeof(buf), 0), 0); /* EOF */
	assert_int_equal(ur_close(sv[1]), 0);
	assert_int_equal(ur_close(sv[1]), -EBADF);
}

static void test_ur_ops_sendmsg_writev(void **state)
{
	int sv[2];
	char buf[32];
	struct iovec iov[3] = {
		{.iov_base = "one ", .iov_len = 4},
		{.iov_base = "two ", .iov_len = 4},
		{.iov_base = "three", .iov_len = 5},
	};
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 3};

	(void)state;
	t_socketpair(sv);
	assert_int_equal(ur_sendmsg(sv[0], &msg, 0), 13);
	assert_int_equal(ur_writev(sv[0], iov, 2, -1), 8);
	assert_int_equal(ur_recv(sv[1], buf, 21, MSG_WAITALL), 21);
	assert_memory_equal(buf, "one two threeone two ", 21);
	close(sv[0]);
	close(sv[1]);
}

static void test_ur_ops_files(void **state)
{
	char dir[] = "/tmp/ur-ops-XXXXXX";
	char a[64], b[64], buf[16];
	struct stat st;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(a, sizeof(a), "%s/a", dir);
	snprintf(b, sizeof(b), "%s/b", dir);
	fd = ur_openat(AT_FDCWD, a, O_CREAT | O_RDWR | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ur_write(fd, "data", 4, 0), 4);
	assert_int_equal(ur_fsync(fd, 0), 0);
	assert_int_equal(ur_read(fd, buf, sizeof(buf), 0), 4);
	assert_memory_equal(buf, "data", 4);
	assert_int_equal(ur_close(fd), 0);
	assert_int_equal(ur_renameat(AT_FDCWD, a, AT_FDCWD, b, 0), 0);
	assert_int_equal(stat(a, &st), -1);
	assert_int_equal(stat(b, &st), 0);
	assert_int_equal(ur_openat(AT_FDCWD, a, O_RDONLY, 0), -ENOENT);
	/* A hard link and a directory, as a Maildir delivery makes. */
	snprintf(a, sizeof(a), "%s/d", dir);
	assert_int_equal(ur_mkdirat(AT_FDCWD, a, 0700), 0);
	assert_int_equal(stat(a, &st), 0);
	assert_true(S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
	assert_int_equal(ur_mkdirat(AT_FDCWD, a, 0700), -EEXIST);
	snprintf(a, sizeof(a), "%s/d/link", dir);
	assert_int_equal(ur_linkat(AT_FDCWD, b, AT_FDCWD, a, 0), 0);
	assert_int_equal(stat(a, &st), 0);
	assert_int_equal(st.st_nlink, 2);
	assert_int_equal(ur_linkat(AT_FDCWD, b, AT_FDCWD, a, 0), -EEXIST);
	assert_int_equal(ur_unlinkat(AT_FDCWD, a, 0), 0);
	snprintf(a, sizeof(a), "%s/d", dir);
	assert_int_equal(ur_unlinkat(AT_FDCWD, a, AT_REMOVEDIR), 0);
	assert_int_equal(ur_unlinkat(AT_FDCWD, b, 0), 0);
	assert_int_equal(ur_unlinkat(AT_FDCWD, dir, AT_REMOVEDIR), 0);
}

static void test_ur_ops_poll(void **state)
{
	int sv[2];

	(void)state;
	t_socketpair(sv);
	assert_true(ur_poll(sv[0], POLLOUT) & POLLOUT);
	assert_int_equal(write(sv[1], "x", 1), 1);
	assert_true(ur_poll(sv[0], POLLIN) & POLLIN);
	close(sv[0]);
	close(sv[1]);
}

static void test_ur_ops_accept_connect(void **state)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct ur_op op;
	int lfd, cfd, sfd;
	char buf[4];

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	/* Accept in flight (callback face) while the blocking connect runs. */
	ur_op_init(&op, NULL, NULL);
	assert_int_equal(ur_accept_start(loop, &op, lfd, NULL, NULL, 0), 0);
	assert_int_equal(ur_connect(cfd, (struct sockaddr *)&a, sizeof(a)), 0);
	sfd = ur_op_wait(&op);
	assert_true(sfd >= 0);
	assert_int_equal(ur_send(cfd, "abc", 3, 0), 3);
	assert_int_equal(ur_recv(sfd, buf, 3, MSG_WAITALL), 3);
	assert_int_equal(ur_close(sfd), 0);
	assert_int_equal(ur_close(cfd), 0);
	assert_int_equal(ur_close(lfd), 0);
}

static void acc_cb(struct ur_op *op)
{
	int *n = op->data;

	if (op->res >= 0) {
		close(op->res);
		(*n)++;
	}
}

/* Multishot accept: one SQE, many connections. */
static void test_ur_ops_multishot_accept(void **state)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct ur_op op;
	int lfd, n = 0;
	int cfd[5];

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
	ur_op_init(&op, acc_cb, &n);
	assert_int_equal(ur_accept_multishot_start(loop, &op, lfd, false), 0);
	for (int i = 0; i < 5; i++) {
		cfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_int_equal(
			connect(cfd[i], (struct sockaddr *)&a, sizeof(a)), 0);
	}
	for (uint64_t end = t_now_ms() + 3000; n < 5 && t_now_ms() < end;)
		assert_true(ur_loop_run_once(loop, 10000000) >= 0);
	assert_int_equal(n, 5);
	assert_true(ur_op_is_busy(&op)); /* still armed */
	assert_int_equal(ur_op_cancel(&op), 0);
	while (ur_op_is_busy(&op))
		assert_true(ur_loop_run_once(loop, -1) >= 0);
	for (int i = 0; i < 5; i++)
		close(cfd[i]);
	close(lfd);
}

static void res_cb(struct ur_op *op)
{
	int *done = op->data;

	*done = 1;
}

/* Cancelling an in-flight recv: -ECANCELED, and no byte is lost. */
static void test_ur_ops_cancel_inflight_recv(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct ur_op op;
	int sv[2], done = 0;
	char buf[8];

	t_socketpair(sv);
	ur_op_init(&op, res_cb, &done);
	assert_int_equal(ur_recv_start(loop, &op, sv[0], buf, sizeof(buf), 0),
			 0);
	assert_int_equal(ur_recv_start(loop, &op, sv[0], buf, 1, 0), -EBUSY);
	assert_true(ur_loop_run_once(loop, 0) >= 0);
	assert_true(ur_op_is_busy(&op));
	assert_int_equal(ur_op_cancel(&op), 0);
	assert_int_equal(t_loop_run_until(loop, &done, 2000), 1);
	assert_int_equal(op.res, -ECANCELED);
	assert_int_equal(ur_op_cancel(&op), -ENOENT);
	assert_int_equal(write(sv[1], "after", 5), 5);
	assert_int_equal(ur_recv(sv[0], buf, sizeof(buf), 0), 5);
	close(sv[0]);
	close(sv[1]);
}

/* Sends the reply, then drains the other socket, as a peer would. */
struct peer {
	int reply_fd, drain_fd;
};

static void *reply_then_drain(void *arg)
{
	struct peer *p = arg;
	char big[65536];

	usleep(50 * 1000);
	if (write(p->reply_fd, "reply", 5) != 5)
		abort();
	usleep(50 * 1000);
	while (recv(p->drain_fd, big, sizeof(big), MSG_DONTWAIT) > 0)
		;
	return NULL;
}

static void *write_later(void *arg)
{
	usleep(50 * 1000);
	if (write(*(int *)arg, "reply", 5) != 5)
		abort();
	return NULL;
}

/*
 * ur_op_nowake(): a send the kernel completes at submission does not end
 * the wait for the reply that follows it, so send and wait take one
 * io_uring_enter under DEFER_TASKRUN (two elsewhere); both complete. A
 * nowake op that cannot complete at once (a full socket) is still waited
 * for and reaped.
 */
static void test_ur_ops_nowake(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_loop_stats st0, st1;
	struct ur_op sop, rop, gop;
	pthread_t th;
	uint64_t t0;
	char buf[8], big[65536];
	int sv[2], out[2], v = 4096;
	struct peer pr;

	t_socketpair(sv);
	t_socketpair(out);
	pr.reply_fd = sv[1];
	pr.drain_fd = out[1];
	ur_op_init(&rop, NULL, NULL);
	assert_int_equal(ur_recv_start(loop, &rop, sv[0], buf, sizeof(buf), 0),
			 0);
	assert_true(ur_loop_run_once(loop, 0) >= 0); /* the recv waits */
	assert_int_equal(pthread_create(&th, NULL, write_later, &sv[1]), 0);
	ur_op_init(&sop, NULL, NULL);
	assert_int_equal(ur_send_start(loop, &sop, out[0], "cmd", 3, 0), 0);
	ur_op_nowake(&sop);
	ur_loop_stats(loop, &st0);
	assert_int_equal(ur_op_wait(&rop), 5);
	ur_loop_stats(loop, &st1);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_false(ur_op_is_busy(&sop));
	assert_int_equal(sop.res, 3);
	if (!t_epoll()) /* io_uring enters; on epoll the send ran inline */
		assert_int_equal(st1.enters - st0.enters,
				 ur_loop_mode(loop) == UR_MODE_DEFER ? 1 : 2);

	/*
	 * The send cannot complete at once (a full socket) and the reply
	 * comes first: the wait ends once both are done (the caller needs
	 * both, as the contract says).
	 */
	assert_int_equal(
		setsockopt(out[0], SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)), 0);
	memset(big, 'b', sizeof(big));
	while (send(out[0], big, sizeof(big), MSG_DONTWAIT) > 0)
		;
	ur_op_init(&rop, NULL, NULL);
	assert_int_equal(ur_recv_start(loop, &rop, sv[0], buf, sizeof(buf), 0),
			 0);
	ur_op_init(&sop, NULL, NULL);
	assert_int_equal(ur_send_start(loop, &sop, out[0], "cmd", 3, 0), 0);
	ur_op_nowake(&sop);
	assert_int_equal(pthread_create(&th, NULL, reply_then_drain, &pr), 0);
	assert_int_equal(ur_op_wait(&rop), 5);
	assert_int_equal(ur_op_wait(&sop), 3);
	assert_int_equal(pthread_join(th, NULL), 0);

	/*
	 * The reply was reaped before the nowake send was even started (a
	 * read callback's flush drove the loop): waiting for the send itself
	 * must wake on its completion alone, not sleep until some unrelated
	 * one (here a guard timeout 3 s out; without it, for ever).
	 */
	assert_int_equal(write(sv[1], "reply", 5), 5);
	ur_op_init(&rop, NULL, NULL);
	assert_int_equal(ur_recv_start(loop, &rop, sv[0], buf, sizeof(buf), 0),
			 0);
	assert_int_equal(ur_op_wait(&rop), 5);
	ur_op_init(&gop, NULL, NULL);
	assert_int_equal(ur_timeout_start(loop, &gop, 3000000000ULL), 0);
	assert_true(ur_loop_run_once(loop, 0) >= 0); /* the guard is armed */
	ur_op_init(&sop, NULL, NULL);
	assert_int_equal(ur_send_start(loop, &sop, sv[0], "cmd", 3, 0), 0);
	ur_op_nowake(&sop);
	assert_int_equal(ur_op_wait(&rop), 5); /* done: returns at once */
	t0 = t_now_ms();
	assert_int_equal(ur_op_wait(&sop), 3);
	assert_true(t_now_ms() - t0 < 1000);
	assert_int_equal(ur_op_cancel(&gop), 0);
	assert_int_equal(ur_op_wait(&gop), -ECANCELED);
	t_close_pair(sv);
	t_close_pair(out);
}

static void test_ur_ops_cancel_fd(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct ur_op op[3];
	int sv[2], done = 0;
	char buf[3][4];

	t_socketpair(sv);
	for (int i = 0; i < 3; i++) {
		ur_op_init(&op[i], res_cb, &done);
		assert_int_equal(
			ur_recv_start(loop, &op[i], sv[0], buf[i], 4, 0), 0);
	}
	assert_true(ur_loop_run_once(loop, 0) >= 0);
	assert_int_equal(ur_cancel_fd(sv[0]), 3);
	for (int i = 0; i < 3; i++) {
		assert_false(ur_op_is_busy(&op[i]));
		assert_int_equal(op[i].res, -ECANCELED);
	}
	assert_int_equal(ur_cancel_fd(sv[0]), 0);
	close(sv[0]);
	close(sv[1]);
}

/*
 * epoll: ur_close() of an fd an op waits on ends that op with
 * -ECANCELED; epoll forgets a closed file, so it would wait for ever.
 * (io_uring's op holds its own reference and goes on waiting.)
 */
static void test_ur_ops_close_ends_waiters(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_op op;
	char buf[4];
	int sv[2];

	if (!t_epoll())
		skip();
	t_socketpair(sv);
	ur_op_init(&op, NULL, NULL);
	assert_int_equal(ur_recv_start(loop, &op, sv[0], buf, sizeof(buf), 0),
			 0);
	assert_true(ur_loop_run_once(loop, 0) >= 0);
	assert_true(ur_op_is_busy(&op));
	assert_int_equal(ur_close(sv[0]), 0);
	assert_int_equal(ur_op_wait(&op), -ECANCELED);
	close(sv[1]);
}

static void test_ur_ops_timeout_op(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct ur_op op;
	uint64_t t0 = t_now_ms();

	ur_op_init(&op, NULL, NULL);
	assert_int_equal(ur_timeout_start(loop, &op, 20 * 1000000ULL), 0);
	assert_int_equal(ur_op_wait(&op), -ETIME);
	assert_true(t_now_ms() - t0 >= 19);
}

/* A single accept into a direct descriptor, with the peer's address. */
static void test_ur_ops_accept_direct(void **state)
{
	struct ur_loop_opts o = {.backend = t_backend, .mode = t_mode,
				 .direct_files = 4};
	struct sockaddr_in a = {.sin_family = AF_INET}, peer, me;
	socklen_t alen = sizeof(a), plen = sizeof(peer), mlen = sizeof(me);
	struct ur_loop *loop;
	struct ur_op op;
	int lfd, cfd, done = 0, d;
	char buf[8];

	(void)state;
	assert_int_equal(ur_loop_new(&o, &loop), 0);
	ur_loop_bind(loop);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
	ur_op_init(&op, res_cb, &done);
	assert_int_equal(ur_accept_direct_start(loop, &op, lfd,
						(struct sockaddr *)&peer,
						&plen),
			 0);
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(cfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(cfd, (struct sockaddr *)&me, &mlen), 0);
	for (uint64_t end = t_now_ms() + 3000; !done && t_now_ms() < end;)
		assert_true(ur_loop_run_once(loop, 10000000) >= 0);
	assert_true(done);
	assert_true(op.res >= 0);
	d = UR_FIXED(op.res);
	assert_int_equal(plen, sizeof(peer));
	assert_int_equal(peer.sin_port, me.sin_port);
	assert_int_equal(send(cfd, "hi", 2, 0), 2);
	assert_int_equal(ur_recv(d, buf, sizeof(buf), 0), 2);
	assert_memory_equal(buf, "hi", 2);
	assert_int_equal(ur_close(d), 0);
	close(cfd);
	close(lfd);
	ur_loop_free(&loop);
}

/* Direct descriptors: used through UR_FIXED(slot), closed by the ring. */
static void test_ur_ops_direct_descriptors(void **state)
{
	struct ur_loop_opts o = {.mode = t_mode, .direct_files = 16};
	struct ur_loop *loop;
	int sv[2], d0, d1;
	char buf[8];

	(void)state;
	assert_int_equal(ur_loop_new(&o, &loop), 0);
	ur_loop_bind(loop);
	t_socketpair(sv);
	d0 = ur_fd_to_direct(loop, sv[0]);
	d1 = ur_fd_to_direct(loop, sv[1]);
	assert_true(d0 >= 0 && UR_IS_FIXED(d0));
	assert_true(d1 >= 0 && UR_IS_FIXED(d1));
	assert_int_not_equal(d0, d1);
	close(sv[0]); /* the ring keeps its own reference */
	close(sv[1]);
	assert_int_equal(ur_send(d0, "direct", 6, 0), 6);
	assert_int_equal(ur_recv(d1, buf, sizeof(buf), 0), 6);
	assert_memory_equal(buf, "direct", 6);
	assert_int_equal(ur_close(d0), 0);
	assert_int_equal(ur_recv(d1, buf, sizeof(buf), 0), 0);
	assert_int_equal(ur_close(d1), 0);
	ur_loop_free(&loop);
}

static void test_ur_ops_direct_needs_table(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;

	assert_int_equal(ur_fd_to_direct(loop, 0), -EINVAL);
}

/* ur_op_wait_until(): recv on an idle socketpair, with and without data. */
#define DL_MS 1000000ULL

static void test_ur_ops_wait_until_fires(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_loop_stats st;
	struct ur_op op;
	char buf[16];
	uint64_t t0;
	int sv[2];

	t_socketpair(sv);
	ur_op_init(&op, NULL, NULL);
	assert_int_equal(ur_recv_start(loop, &op, sv[0], buf, sizeof(buf), 0),
			 0);
	t0 = t_now_ms();
	assert_int_equal(
		ur_op_wait_until(&op, CLOCK_MONOTONIC,
				 ur_now_ns(CLOCK_MONOTONIC) + 50 * DL_MS),
		-ETIMEDOUT);
	assert_true(t_now_ms() - t0 >= 49);
	assert_true(t_now_ms() - t0 < 2000);
	assert_false(ur_op_is_busy(&op));
	ur_loop_stats(loop, &st);
	assert_int_equal(st.timers_armed, 0);
	/* A deadline already passed cancels at once, arming nothing. */
	assert_int_equal(ur_recv_start(loop, &op, sv[0], buf, sizeof(buf), 0),
			 0);
	assert_int_equal(ur_op_wait_until(&op, CLOCK_REALTIME, 1), -ETIMEDOUT);
	assert_false(ur_op_is_busy(&op));
	/* A bad clock leaves the op alone. */
	assert_int_equal(ur_recv_start(loop, &op, sv[0], buf, sizeof(buf), 0),
			 0);
	assert_int_equal(ur_op_wait_until(&op, CLOCK_THREAD_CPUTIME_ID, 1),
			 -EINVAL);
	assert_true(ur_op_is_busy(&op));
	assert_int_equal(send(sv[1], "x", 1, 0), 1);
	assert_int_equal(ur_op_wait(&op), 1);
	t_close_pair(sv);
}

static void test_ur_ops_wait_until_data_first(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_loop_stats st;
	struct ur_op op;
	char buf[16];
	uint64_t t0;
	int sv[2];

	t_socketpair(sv);
	ur_op_init(&op, NULL, NULL);
	assert_int_equal(ur_recv_start(loop, &op, sv[0], buf, sizeof(buf), 0),
			 0);
	assert_int_equal(send(sv[1], "hello", 5, 0), 5);
	t0 = t_now_ms();
	assert_int_equal(
		ur_op_wait_until(&op, CLOCK_MONOTONIC,
				 ur_now_ns(CLOCK_MONOTONIC) + 5000 * DL_MS),
		5);
	assert_true(t_now_ms() - t0 < 1000);
	assert_memory_equal(buf, "hello", 5);
	assert_false(ur_op_is_busy(&op));
	ur_loop_stats(loop, &st);
	assert_int_equal(st.timers_armed, 0); /* the timer was stopped */
	/* A completed op returns its result without a timer. */
	assert_int_equal(ur_op_wait_until(&op, CLOCK_MONOTONIC, 1), 5);
	t_close_pair(sv);
}

struct dl_fiber {
	int fd;
	int ret;
	uint64_t ms;
};

static int recv_with_deadline(void *arg)
{
	struct dl_fiber *d = arg;
	struct ur_loop *loop = ur_loop_current();
	struct ur_op op;
	char buf[16];
	uint64_t t0 = t_now_ms();
	int ret;

	ur_op_init(&op, NULL, NULL);
	ret = ur_recv_start(loop, &op, d->fd, buf, sizeof(buf), 0);
	if (ret < 0)
		return ret;
	d->ret = ur_op_wait_until(&op, CLOCK_BOOTTIME,
				  ur_now_ns(CLOCK_BOOTTIME) + 40 * DL_MS);
	d->ms = t_now_ms() - t0;
	return ur_op_is_busy(&op) ? -EBUSY : 0;
}

static void test_ur_ops_wait_until_in_fiber(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct dl_fiber d = {.ret = 1};
	struct ur_fiber *f;
	int sv[2], ret = -1;

	t_socketpair(sv);
	d.fd = sv[0];
	assert_int_equal(ur_fiber_spawn(loop, recv_with_deadline, &d, NULL, &f),
			 0);
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(ret, 0);
	assert_int_equal(d.ret, -ETIMEDOUT);
	assert_true(d.ms >= 39 && d.ms < 2000);
	t_close_pair(sv);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
	const struct CMUnitTest tests[] = {
		T(test_ur_ops_send_recv),
		T(test_ur_ops_sendmsg_writev),
		T(test_ur_ops_files),
		T(test_ur_ops_poll),
		T(test_ur_ops_accept_connect),
		T(test_ur_ops_multishot_accept),
		T(test_ur_ops_cancel_inflight_recv),
		T(test_ur_ops_nowake),
		T(test_ur_ops_cancel_fd),
		T(test_ur_ops_timeout_op),
		T(test_ur_ops_close_ends_waiters),
		cmocka_unit_test(test_ur_ops_direct_descriptors),
		cmocka_unit_test(test_ur_ops_accept_direct),
		T(test_ur_ops_direct_needs_table),
		T(test_ur_ops_wait_until_fires),
		T(test_ur_ops_wait_until_data_first),
		T(test_ur_ops_wait_until_in_fiber),
	};
#undef T

	t_require_loop();
	return t_run_groups("ur-ops", tests, sizeof(tests) / sizeof(tests[0]));
}
