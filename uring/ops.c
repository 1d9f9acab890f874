/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/ops: every op's callback face (_start) and blocking face. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
	return ur__submit_cancel(op->ur__loop, op);
}

void ur_op_nowake(struct ur_op *op)
{
	struct ur_loop *loop = op->ur__loop;

	if (op->ur__state == UR_OP_INFLIGHT && loop->be->nowake != NULL)
		loop->be->nowake(loop, op);
}

/*
 * Outside a fiber: turn the loop until op completes. A failing turn
 * (-ENOMEM from the kernel, say) must not end the wait while op is in
 * flight: its buffer, often the caller's stack, is the kernel's until
 * op's final completion. So op is cancelled and the turns go on, briefly;
 * the turn's error is returned once op has been reaped. Only a loop that
 * fails for a whole second is given up on, and then nothing can be
 * returned safely.
 */
#define WAIT_FAIL_TURNS 1000
#define WAIT_FAIL_NS	1000000LL

static int wait_outside_fiber(struct ur_loop *loop, struct ur_op *op)
{
	int err = 0, fails = 0;

	while (op->ur__state == UR_OP_INFLIGHT) {
		int ret = ur_loop_run_once(loop, err < 0 ? WAIT_FAIL_NS : -1);

		if (ret >= 0) {
			fails = 0;
			continue;
		}
		if (err == 0 && ur_op_cancel(op) < 0) {
			/* refused too: the op ends on its own */
		}
		err = ret;
		if (++fails == WAIT_FAIL_TURNS)
			ur__assert_fail("the loop fails while an op is the "
					"kernel's",
					__FILE__, __LINE__, strerror(-ret));
	}
	return err < 0 && op->res == -ECANCELED ? err : op->res;
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
		 * own completion, because the kernel owns its buffer until
		 * then.
		 */
		while (op->ur__state == UR_OP_INFLIGHT) {
			op->ur__waiter = f;
			if (ur__fiber_park_on(loop, op) < 0) {
				/* -ECANCELED: op was cancelled and reaped */
			}
		}
		return op->res;
	}
	return wait_outside_fiber(loop, op);
}

int ur__start(struct ur_loop *loop, struct ur_op *op, const struct ur__req *req)
{
	if (op != NULL && op->ur__state == UR_OP_INFLIGHT)
		return -EBUSY;
	return loop->be->start(loop, op, req);
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

/*
 * A blocking face: start the op (start_call names `loop` and `op`) with a
 * NULL callback, then wait for it.
 */
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

/* The blocking face of an op with no callback face of its own. */
static int block_on(const struct ur__req *req)
{
	UR_BLOCK(ur__start(loop, &op, req));
}

#define REQ(...) (&(const struct ur__req){__VA_ARGS__})

int ur_recv_start(struct ur_loop *loop, struct ur_op *op, int fd, void *buf,
		  size_t len, int flags)
{
	return ur__start(loop, op,
			 REQ(.opcode = UR__RECV, .fd = fd, .buf = buf,
			     .len = len, .flags = flags));
}

int ur_send_start(struct ur_loop *loop, struct ur_op *op, int fd,
		  const void *buf, size_t len, int flags)
{
	return ur__start(loop, op,
			 REQ(.opcode = UR__SEND, .fd = fd, .buf = (void *)buf,
			     .len = len, .flags = flags));
}

/*
 * A message of one buffer with no address and no control data goes as a
 * plain send: the kernel then imports neither a msghdr nor an iovec (the
 * bytes on the wire, MSG_WAITALL and the result are the same).
 */
int ur_sendmsg_start(struct ur_loop *loop, struct ur_op *op, int fd,
		     const struct msghdr *msg, int flags)
{
	if (msg->msg_iovlen == 1 && msg->msg_name == NULL &&
	    msg->msg_controllen == 0 && msg->msg_iov[0].iov_len <= UINT32_MAX)
		return ur_send_start(loop, op, fd, msg->msg_iov[0].iov_base,
				     msg->msg_iov[0].iov_len, flags);
	return ur__start(loop, op,
			 REQ(.opcode = UR__SENDMSG, .fd = fd,
			     .buf = (void *)msg, .flags = flags));
}

int ur_writev_start(struct ur_loop *loop, struct ur_op *op, int fd,
		    const struct iovec *iov, int iovcnt, int64_t off)
{
	if (iovcnt < 0)
		return -EINVAL;
	return ur__start(loop, op,
			 REQ(.opcode = UR__WRITEV, .fd = fd, .buf = (void *)iov,
			     .len = (size_t)iovcnt, .off = off));
}

int ur_read_start(struct ur_loop *loop, struct ur_op *op, int fd, void *buf,
		  size_t len, int64_t off)
{
	return ur__start(loop, op,
			 REQ(.opcode = UR__READ, .fd = fd, .buf = buf,
			     .len = len, .off = off));
}

int ur_write_start(struct ur_loop *loop, struct ur_op *op, int fd,
		   const void *buf, size_t len, int64_t off)
{
	return ur__start(loop, op,
			 REQ(.opcode = UR__WRITE, .fd = fd, .buf = (void *)buf,
			     .len = len, .off = off));
}

int ur_accept_start(struct ur_loop *loop, struct ur_op *op, int fd,
		    struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	return ur__start(loop, op,
			 REQ(.opcode = UR__ACCEPT, .fd = fd, .buf = addr,
			     .buf2 = addrlen, .flags = flags));
}

int ur_accept_direct_start(struct ur_loop *loop, struct ur_op *op, int fd,
			   struct sockaddr *addr, socklen_t *addrlen)
{
	return ur__start(loop, op,
			 REQ(.opcode = UR__ACCEPT, .fd = fd, .buf = addr,
			     .buf2 = addrlen, .uflags = UR__REQ_DIRECT));
}

int ur_accept_multishot_start(struct ur_loop *loop, struct ur_op *op, int fd,
			      bool direct)
{
	return ur__start(loop, op,
			 /* The kernel refuses SOCK_CLOEXEC for a direct
			  * descriptor (it has no fd to mark). */
			 REQ(.opcode = UR__ACCEPT_MULTI, .fd = fd,
			     .flags = direct ? 0 : SOCK_CLOEXEC,
			     .uflags = direct ? UR__REQ_DIRECT : 0));
}

int ur_connect_start(struct ur_loop *loop, struct ur_op *op, int fd,
		     const struct sockaddr *addr, socklen_t addrlen)
{
	return ur__start(loop, op,
			 REQ(.opcode = UR__CONNECT, .fd = fd,
			     .buf = (void *)addr, .len = addrlen));
}

int ur_close_start(struct ur_loop *loop, struct ur_op *op, int fd)
{
	return ur__start(loop, op, REQ(.opcode = UR__CLOSE, .fd = fd));
}

int ur_poll_start(struct ur_loop *loop, struct ur_op *op, int fd,
		  unsigned poll_mask)
{
	return ur__start(
		loop, op,
		REQ(.opcode = UR__POLL, .fd = fd, .uflags = poll_mask));
}

int ur_nop_start(struct ur_loop *loop, struct ur_op *op)
{
	return ur__start(loop, op, REQ(.opcode = UR__NOP));
}

int ur_timeout_start(struct ur_loop *loop, struct ur_op *op, uint64_t delay_ns)
{
	return ur__start(loop, op, REQ(.opcode = UR__TIMEOUT, .ns = delay_ns));
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
	return block_on(REQ(.opcode = UR__OPENAT, .fd = dfd,
			    .buf = (void *)path, .flags = flags | O_CLOEXEC,
			    .len = mode));
}

int ur_fsync(int fd, unsigned fsync_flags)
{
	return block_on(
		REQ(.opcode = UR__FSYNC, .fd = fd, .uflags = fsync_flags));
}

int ur_renameat(int olddfd, const char *oldpath, int newdfd,
		const char *newpath, unsigned flags)
{
	return block_on(REQ(.opcode = UR__RENAMEAT, .fd = olddfd,
			    .buf = (void *)oldpath, .fd2 = newdfd,
			    .buf2 = newpath, .uflags = flags));
}

int ur_unlinkat(int dfd, const char *path, int flags)
{
	return block_on(REQ(.opcode = UR__UNLINKAT, .fd = dfd,
			    .buf = (void *)path, .flags = flags));
}

int ur_linkat(int olddfd, const char *oldpath, int newdfd,
	      const char *newpath, int flags)
{
	return block_on(REQ(.opcode = UR__LINKAT, .fd = olddfd,
			    .buf = (void *)oldpath, .fd2 = newdfd,
			    .buf2 = newpath, .flags = flags));
}

int ur_mkdirat(int dfd, const char *path, mode_t mode)
{
	return block_on(REQ(.opcode = UR__MKDIRAT, .fd = dfd,
			    .buf = (void *)path, .len = mode));
}

int ur_poll(int fd, unsigned poll_mask)
{
	UR_BLOCK(ur_poll_start(loop, &op, fd, poll_mask));
}

#define ERESTARTSYS_ 512 /* include/linux/errno.h, not exported */

ssize_t ur_splice_until(int fd_in, int64_t off_in, int fd_out, int64_t off_out,
			size_t len, unsigned flags, uint64_t deadline_ns)
{
	const struct ur__splice sp = {
		.fd_in = fd_in,
		.fd_out = fd_out,
		.off_in = off_in,
		.off_out = off_out,
	};
	struct ur_op op;
	struct ur_loop *loop;
	int err = 0;

	loop = begin_blocking(&err);
	if (loop == NULL)
		return err;
	/* The SQE carries 32 bits of length and the CQE 31 of result. */
	if (len > INT_MAX)
		len = INT_MAX;
	ur_op_init(&op, NULL, NULL);
	err = ur__start(loop, &op,
			REQ(.opcode = UR__SPLICE, .fd = fd_out,
			    .buf = (void *)&sp, .len = len, .uflags = flags));
	if (err < 0)
		return err;
	if (deadline_ns == 0)
		err = ur_op_wait(&op);
	else
		err = ur_op_wait_until(&op, CLOCK_MONOTONIC, deadline_ns);
	/*
	 * io_uring runs a splice in a worker, and cancelling one blocked on
	 * a full socket interrupts it with a signal: the CQE then carries
	 * the kernel-internal -ERESTARTSYS (seen on 6.18) instead of
	 * -ECANCELED.
	 */
	if (err != -ERESTARTSYS_ && err != -EINTR)
		return err;
	if (deadline_ns != 0 && ur_now_ns(CLOCK_MONOTONIC) >= deadline_ns)
		return -ETIMEDOUT;
	return -ECANCELED;
}

ssize_t ur_splice(int fd_in, int64_t off_in, int fd_out, int64_t off_out,
		  size_t len, unsigned flags)
{
	return ur_splice_until(fd_in, off_in, fd_out, off_out, len, flags, 0);
}

int ur_nop(void)
{
	UR_BLOCK(ur_nop_start(loop, &op));
}

int ur_cancel_fd(int fd)
{
	int ret = block_on(REQ(.opcode = UR__CANCEL_FD, .fd = fd));

	return ret == -ENOENT ? 0 : ret; /* nothing in flight: none cancelled */
}

int ur_fd_to_direct(struct ur_loop *loop, int fd)
{
	struct ur_op op;
	int ret;

	if (loop->direct_files == 0)
		return -EINVAL;
	ur_op_init(&op, NULL, NULL);
	ret = ur__start(loop, &op, REQ(.opcode = UR__FILES_UPDATE, .fd = fd));
	if (ret < 0)
		return ret;
	ret = ur_op_wait(&op);
	if (ret < 0)
		return ret;
	return UR_FIXED(ret);
}
