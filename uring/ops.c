/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/ops: every op's callback face (_start) and blocking face. */
#include "internal.h"

#include <errno.h>
#include <string.h>

void ur_op_init(struct ur_op *op, ur_op_fn *fn, void *data)
{
	memset(op, 0, sizeof(*op));
	op->fn = fn;
	op->data = data;
}

bool ur_op_is_busy(const struct ur_op *op)
{
	return op->ur__state == UR_OP_INFLIGHT;
}

int ur_op_cancel(struct ur_op *op)
{
	if (op->ur__state != UR_OP_INFLIGHT)
		return -ENOENT;
	ur__submit_cancel(op->ur__loop, op);
	return 0;
}

void ur_op_nowake(struct ur_op *op)
{
	struct ur_loop *loop = op->ur__loop;

	if (op->ur__state == UR_OP_INFLIGHT && loop->mode == UR_MODE_DEFER &&
	    io_uring_sq_ready(&loop->ring) > 0 && !op->ur__nowake) {
		op->ur__nowake = 1;
		loop->nowake++;
	}
}

int ur_op_wait(struct ur_op *op)
{
	struct ur_loop *loop = op->ur__loop;
	struct ur_fiber *f;

	if (op->ur__state != UR_OP_INFLIGHT)
		return op->res;
	/*
	 * Whoever marked op ur_op_nowake() meant to wait for another op
	 * first; now op itself is awaited (the other one may have finished
	 * before op was even submitted), so its completion must wake the
	 * loop. Dropping every allowance at most costs an enter, never a
	 * stall.
	 */
	if (op->ur__nowake) {
		op->ur__nowake = 0;
		loop->nowake = 0;
	}
	f = ur__fiber_current(loop);
	if (f != NULL) {
		ur_assert(op->fn == NULL);
		/*
		 * A cancel of the fiber cancels op; we still wait for op's
		 * own CQE, because the kernel owns its buffer until then.
		 */
		while (op->ur__state == UR_OP_INFLIGHT) {
			op->ur__waiter = f;
			(void)ur__fiber_park_on(loop, op);
		}
		return op->res;
	}
	while (op->ur__state == UR_OP_INFLIGHT) {
		int ret = ur_loop_run_once(loop, -1);

		if (ret < 0)
			return ret;
	}
	return op->res;
}

/*
 * Scratch timespecs for SQEs that need one only until submission
 * (FEAT_SUBMIT_STABLE): valid until the next io_uring_enter.
 */
static struct __kernel_timespec *ts_scratch(struct ur_loop *loop, uint64_t ns)
{
	struct __kernel_timespec *ts;

	if (loop->ts_used == UR_TS_SCRATCH)
		ur__sq_flush(loop);
	ts = &loop->ts_scratch[loop->ts_used++];
	ts->tv_sec = (long long)(ns / 1000000000);
	ts->tv_nsec = (long long)(ns % 1000000000);
	return ts;
}

struct __kernel_timespec *ur__ts_scratch(struct ur_loop *loop, uint64_t ns)
{
	return ts_scratch(loop, ns);
}

static struct io_uring_sqe *begin_start(struct ur_loop *loop, struct ur_op *op)
{
	if (op->ur__state == UR_OP_INFLIGHT)
		return NULL;
	return ur__sqe_get(loop);
}

/* The loop for a blocking call, or NULL with *err (-ECANCELED...). */
static struct ur_loop *begin_blocking(int *err)
{
	struct ur_loop *loop = ur__loop_for_call(err);

	if (loop != NULL && loop->current != NULL &&
	    ur__fiber_cancelled(loop->current)) {
		*err = -ECANCELED;
		return NULL;
	}
	return loop;
}

/* A blocking face: start the op with a NULL callback, then wait for it. */
#define UR_BLOCK(start_call)                                  \
	do {                                                  \
		struct ur_op op;                              \
		int err_ = 0;                                 \
		struct ur_loop *loop = begin_blocking(&err_); \
		if (loop == NULL)                             \
			return err_;                          \
		ur_op_init(&op, NULL, NULL);                  \
		err_ = (start_call);                          \
		if (err_ < 0)                                 \
			return err_;                          \
		return ur_op_wait(&op);                       \
	} while (0)

#define UR_START(loop, op, sqe)                           \
	struct io_uring_sqe *sqe = begin_start(loop, op); \
	if (sqe == NULL)                                  \
	return -EBUSY

int ur_recv_start(struct ur_loop *loop, struct ur_op *op, int fd, void *buf,
		  size_t len, int flags)
{
	UR_START(loop, op, sqe);
	io_uring_prep_recv(sqe, fd, buf, len, flags);
	ur__sqe_set_fd(sqe, fd);
	ur__op_arm(loop, op, sqe);
	return 0;
}

int ur_send_start(struct ur_loop *loop, struct ur_op *op, int fd,
		  const void *buf, size_t len, int flags)
{
	UR_START(loop, op, sqe);
	io_uring_prep_send(sqe, fd, buf, len, flags);
	ur__sqe_set_fd(sqe, fd);
	ur__op_arm(loop, op, sqe);
	return 0;
}

/*
 * A message of one buffer with no address and no control data goes as a
 * plain send: the kernel then imports neither a msghdr nor an iovec (the
 * bytes on the wire, MSG_WAITALL and the result are the same).
 */
int ur_sendmsg_start(struct ur_loop *loop, struct ur_op *op, int fd,
		     const struct msghdr *msg, int flags)
{
	UR_START(loop, op, sqe);
	if (msg->msg_iovlen == 1 && msg->msg_name == NULL &&
	    msg->msg_controllen == 0 && msg->msg_iov[0].iov_len <= UINT32_MAX)
		io_uring_prep_send(sqe, fd, msg->msg_iov[0].iov_base,
				   msg->msg_iov[0].iov_len, flags);
	else
		io_uring_prep_sendmsg(sqe, fd, msg, (unsigned)flags);
	ur__sqe_set_fd(sqe, fd);
	ur__op_arm(loop, op, sqe);
	return 0;
}

int ur_writev_start(struct ur_loop *loop, struct ur_op *op, int fd,
		    const struct iovec *iov, int iovcnt, int64_t off)
{
	UR_START(loop, op, sqe);
	io_uring_prep_writev(sqe, fd, iov, (unsigned)iovcnt, (uint64_t)off);
	ur__sqe_set_fd(sqe, fd);
	ur__op_arm(loop, op, sqe);
	return 0;
}

int ur_read_start(struct ur_loop *loop, struct ur_op *op, int fd, void *buf,
		  size_t len, int64_t off)
{
	UR_START(loop, op, sqe);
	io_uring_prep_read(sqe, fd, buf, (unsigned)len, (uint64_t)off);
	ur__sqe_set_fd(sqe, fd);
	ur__op_arm(loop, op, sqe);
	return 0;
}

int ur_write_start(struct ur_loop *loop, struct ur_op *op, int fd,
		   const void *buf, size_t len, int64_t off)
{
	UR_START(loop, op, sqe);
	io_uring_prep_write(sqe, fd, buf, (unsigned)len, (uint64_t)off);
	ur__sqe_set_fd(sqe, fd);
	ur__op_arm(loop, op, sqe);
	return 0;
}

int ur_accept_start(struct ur_loop *loop, struct ur_op *op, int fd,
		    struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	UR_START(loop, op, sqe);
	io_uring_prep_accept(sqe, fd, addr, addrlen, flags);
	ur__sqe_set_fd(sqe, fd);
	ur__op_arm(loop, op, sqe);
	return 0;
}

int ur_accept_multishot_start(struct ur_loop *loop, struct ur_op *op, int fd,
			      bool direct)
{
	UR_START(loop, op, sqe);
	if (direct)
		io_uring_prep_multishot_accept_direct(sqe, fd, NULL, NULL,
						      SOCK_CLOEXEC);
	else
		io_uring_prep_multishot_accept(sqe, fd, NULL, NULL,
					       SOCK_CLOEXEC);
	ur__sqe_set_fd(sqe, fd);
	ur__op_arm(loop, op, sqe);
	return 0;
}

int ur_connect_start(struct ur_loop *loop, struct ur_op *op, int fd,
		     const struct sockaddr *addr, socklen_t addrlen)
{
	UR_START(loop, op, sqe);
	io_uring_prep_connect(sqe, fd, addr, addrlen);
	ur__sqe_set_fd(sqe, fd);
	ur__op_arm(loop, op, sqe);
	return 0;
}

int ur_close_start(struct ur_loop *loop, struct ur_op *op, int fd)
{
	UR_START(loop, op, sqe);
	if (UR_IS_FIXED(fd))
		io_uring_prep_close_direct(sqe, UR_SLOT(fd));
	else
		io_uring_prep_close(sqe, fd);
	ur__op_arm(loop, op, sqe);
	return 0;
}

int ur_poll_start(struct ur_loop *loop, struct ur_op *op, int fd,
		  unsigned poll_mask)
{
	UR_START(loop, op, sqe);
	io_uring_prep_poll_add(sqe, fd, poll_mask);
	ur__sqe_set_fd(sqe, fd);
	ur__op_arm(loop, op, sqe);
	return 0;
}

int ur_nop_start(struct ur_loop *loop, struct ur_op *op)
{
	UR_START(loop, op, sqe);
	io_uring_prep_nop(sqe);
	ur__op_arm(loop, op, sqe);
	return 0;
}

int ur_timeout_start(struct ur_loop *loop, struct ur_op *op, uint64_t delay_ns)
{
	UR_START(loop, op, sqe);
	io_uring_prep_timeout(sqe, ts_scratch(loop, delay_ns), 0, 0);
	ur__op_arm(loop, op, sqe);
	return 0;
}

static int openat_start(struct ur_loop *loop, struct ur_op *op, int dfd,
			const char *path, int flags, mode_t mode)
{
	UR_START(loop, op, sqe);
	io_uring_prep_openat(sqe, dfd, path, flags | O_CLOEXEC, mode);
	ur__op_arm(loop, op, sqe);
	return 0;
}

static int fsync_start(struct ur_loop *loop, struct ur_op *op, int fd,
		       unsigned fsync_flags)
{
	UR_START(loop, op, sqe);
	io_uring_prep_fsync(sqe, fd, fsync_flags);
	ur__sqe_set_fd(sqe, fd);
	ur__op_arm(loop, op, sqe);
	return 0;
}

static int renameat_start(struct ur_loop *loop, struct ur_op *op, int olddfd,
			  const char *oldpath, int newdfd, const char *newpath,
			  unsigned flags)
{
	UR_START(loop, op, sqe);
	io_uring_prep_renameat(sqe, olddfd, oldpath, newdfd, newpath, flags);
	ur__op_arm(loop, op, sqe);
	return 0;
}

static int unlinkat_start(struct ur_loop *loop, struct ur_op *op, int dfd,
			  const char *path, int flags)
{
	UR_START(loop, op, sqe);
	io_uring_prep_unlinkat(sqe, dfd, path, flags);
	ur__op_arm(loop, op, sqe);
	return 0;
}

static int cancel_fd_start(struct ur_loop *loop, struct ur_op *op, int fd)
{
	unsigned flags = IORING_ASYNC_CANCEL_ALL;

	UR_START(loop, op, sqe);
	if (UR_IS_FIXED(fd)) {
		fd = (int)UR_SLOT(fd);
		flags |= IORING_ASYNC_CANCEL_FD_FIXED;
	}
	io_uring_prep_cancel_fd(sqe, fd, flags);
	ur__op_arm(loop, op, sqe);
	return 0;
}

static int files_update_start(struct ur_loop *loop, struct ur_op *op, int *fds)
{
	UR_START(loop, op, sqe);
	io_uring_prep_files_update(sqe, fds, 1, (int)IORING_FILE_INDEX_ALLOC);
	ur__op_arm(loop, op, sqe);
	return 0;
}

ssize_t ur_recv(int fd, void *buf, size_t len, int flags)
{
	UR_BLOCK(ur_recv_start(loop, &op, fd, buf, len, flags));
}

ssize_t ur_send(int fd, const void *buf, size_t len, int flags)
{
	UR_BLOCK(ur_send_start(loop, &op, fd, buf, len, flags));
}

ssize_t ur_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	UR_BLOCK(ur_sendmsg_start(loop, &op, fd, msg, flags));
}

ssize_t ur_writev(int fd, const struct iovec *iov, int iovcnt, int64_t off)
{
	UR_BLOCK(ur_writev_start(loop, &op, fd, iov, iovcnt, off));
}

ssize_t ur_read(int fd, void *buf, size_t len, int64_t off)
{
	UR_BLOCK(ur_read_start(loop, &op, fd, buf, len, off));
}

ssize_t ur_write(int fd, const void *buf, size_t len, int64_t off)
{
	UR_BLOCK(ur_write_start(loop, &op, fd, buf, len, off));
}

int ur_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	UR_BLOCK(ur_accept_start(loop, &op, fd, addr, addrlen, flags));
}

int ur_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
	UR_BLOCK(ur_connect_start(loop, &op, fd, addr, addrlen));
}

int ur_close(int fd)
{
	UR_BLOCK(ur_close_start(loop, &op, fd));
}

int ur_openat(int dfd, const char *path, int flags, mode_t mode)
{
	UR_BLOCK(openat_start(loop, &op, dfd, path, flags, mode));
}

int ur_fsync(int fd, unsigned fsync_flags)
{
	UR_BLOCK(fsync_start(loop, &op, fd, fsync_flags));
}

int ur_renameat(int olddfd, const char *oldpath, int newdfd,
		const char *newpath, unsigned flags)
{
	UR_BLOCK(renameat_start(loop, &op, olddfd, oldpath, newdfd, newpath,
				flags));
}

int ur_unlinkat(int dfd, const char *path, int flags)
{
	UR_BLOCK(unlinkat_start(loop, &op, dfd, path, flags));
}

int ur_poll(int fd, unsigned poll_mask)
{
	UR_BLOCK(ur_poll_start(loop, &op, fd, poll_mask));
}

int ur_nop(void)
{
	UR_BLOCK(ur_nop_start(loop, &op));
}

static int cancel_fd_blocking(int fd)
{
	UR_BLOCK(cancel_fd_start(loop, &op, fd));
}

int ur_cancel_fd(int fd)
{
	int ret = cancel_fd_blocking(fd);

	return ret == -ENOENT ? 0 : ret; /* nothing in flight: none cancelled */
}

int ur_fd_to_direct(struct ur_loop *loop, int fd)
{
	struct ur_op op;
	int fds[1] = {fd};
	int ret;

	if (loop->direct_files == 0)
		return -EINVAL;
	ur_op_init(&op, NULL, NULL);
	ret = files_update_start(loop, &op, fds);
	if (ret < 0)
		return ret;
	ret = ur_op_wait(&op);
	if (ret < 0)
		return ret;
	return UR_FIXED(fds[0]);
}
