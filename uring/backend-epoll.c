/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * uring/backend-epoll: the readiness backend, for hosts that refuse
 * io_uring (container seccomp profiles, kernel.io_uring_disabled). Same
 * ops, same results, same completion order per fd.
 *
 * The one rule: an op tries its syscall at once (MSG_DONTWAIT, or
 * RWF_NOWAIT), and only an op that would block waits, in its fd's FIFO,
 * for readiness. Consequences:
 *  - Readiness is EPOLLONESHOT and re-armed (EPOLL_CTL_MOD, ADD if the
 *    set has forgotten the fd) whenever a first op starts waiting on an
 *    fd, batched once per turn. One epoll_ctl per wait, and never a stale
 *    registration: Cyrus-style callers close() their fds themselves, and
 *    a number the kernel hands out again is re-armed for the new file.
 *    (Level- or edge-triggered registrations kept for an fd's life would
 *    save that call but hang on such a reused number.)
 *  - A blocking face (no callback) whose syscall succeeds at once
 *    completes inside its start call, so the fiber goes on without a
 *    switch; a budget per turn makes it yield now and then, so a client
 *    that always has data cannot starve the others. Callbacks always run
 *    from the loop turn, never inside a start call.
 *  - File ops (regular files, openat, fsync, renameat, unlinkat, close)
 *    run inline on the loop's thread: epoll cannot wait for them, and
 *    a worker pool would reorder them against the caller's other ops for
 *    a gain that matters only on slow disks. The loop stalls meanwhile.
 *  - Provided buffers are a free stack: a buffer is taken only when the
 *    fd is readable, so an idle connection holds none, as on io_uring.
 *  - Timers: a heap per clock. CLOCK_MONOTONIC deadlines become the
 *    epoll_pwait2() timeout; CLOCK_REALTIME and CLOCK_BOOTTIME ones arm a
 *    timerfd each (TFD_TIMER_CANCEL_ON_SET: a clock step wakes the loop,
 *    which re-checks every realtime mark).
 *  - Direct descriptors are slots naming fds the loop holds: the
 *    process's fd limit counts them.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#define EVENTS_MAX  256
#define IMM_BUDGET  64 /* blocking ops completed inline per turn */
#define IOV_CHUNK   64

/* What an attempt returns when the op must wait for readiness. */
#define E_WAIT INT32_MIN

/* epoll data of the timerfds (fds use their own number). */
#define DATA_TIMERFD (1ULL << 40)

/* op->ur__bflags */
enum {
	B_WAITING = 1, /* in its fd's FIFO */
	B_HEAP = 2,    /* in a timer heap */
	B_DONE = 4,    /* in the done queue */
	B_CANCEL = 8,  /* multishot: end at the next completion */
	B_STREAM = 16, /* read/write: the fd has no file position */
	B_NOWAIT_NO = 32, /* the fd refuses RWF_NOWAIT: readiness first */
	B_DIRECT = 64,	  /* accept: install into the slot table */
	B_SPLICE_IN = 128, /* splice: waits for input (ur__fd is fd_in) */
};

/* One per fd number with ops waiting or armed. */
struct efd {
	struct ur_op *head, **tail; /* waiting ops, FIFO */
	uint32_t armed;		    /* events armed (0: none or fired) */
	bool dirty;		    /* on the dirty list */
	bool drained; /* the last recv came back short: the socket is empty */
	bool persistent; /* a direct descriptor's: edge-triggered for good */
	int next_dirty;
};

struct theap {
	struct ur_op **v;
	size_t n, cap;
	int tfd;	   /* timerfd (REALTIME, BOOTTIME), -1: none */
	uint64_t tfd_ns;   /* what it is armed for, 0: disarmed */
};

struct eloop {
	struct ur_loop base;
	int epfd;
	struct efd *fds;
	size_t nfds;
	int dirty; /* head of the dirty list, -1: empty */
	/* Completions not yet dispatched, FIFO through ur__next. */
	struct ur_op *done_head, **done_tail;
	unsigned imm_budget;
	struct theap heaps[3]; /* MONOTONIC, REALTIME, BOOTTIME */
	/* Direct descriptors: slot -> fd, -1 free. */
	int *slots;
	unsigned nslots;
	unsigned slot_hint; /* where the search for a free slot starts */
};

static struct eloop *E(struct ur_loop *loop)
{
	return ur_container_of(loop, struct eloop, base);
}

static const struct eloop *CE(const struct ur_loop *loop)
{
	return ur_container_of(loop, const struct eloop, base);
}

/*
 * ---------------------------------------------------------------------
 * Completion queue
 * ---------------------------------------------------------------------
 */

static void done_push(struct eloop *e, struct ur_op *op, int32_t res,
		      uint32_t flags)
{
	op->res = res;
	op->ur__flags = flags;
	op->ur__bflags |= B_DONE;
	op->ur__next = NULL;
	*e->done_tail = op;
	e->done_tail = &op->ur__next;
}

/* The op's syscall finished inside its start call. */
static void complete_now(struct eloop *e, struct ur_op *op, int32_t res)
{
	if (op->fn == NULL && op->ur__waiter == NULL && e->imm_budget > 0) {
		e->imm_budget--;
		ur__op_complete(&e->base, op, res, 0);
		return;
	}
	done_push(e, op, res, 0);
}

/*
 * ---------------------------------------------------------------------
 * File descriptors
 * ---------------------------------------------------------------------
 */

/* The fd an op names: a direct slot's fd, or the fd itself. */
static int real_fd(const struct eloop *e, int fd)
{
	if (!UR_IS_FIXED(fd))
		return fd;
	if (UR_SLOT(fd) >= e->nslots)
		return -1;
	return e->slots[UR_SLOT(fd)];
}

static struct efd *efd_get(struct eloop *e, int fd)
{
	if (fd < 0)
		return NULL;
	if ((size_t)fd >= e->nfds) {
		size_t n = e->nfds ? e->nfds : 64;
		struct efd *v;

		while (n <= (size_t)fd)
			n *= 2;
		v = realloc(e->fds, n * sizeof(*v));
		if (v == NULL)
			return NULL;
		for (size_t i = e->nfds; i < n; i++) {
			memset(&v[i], 0, sizeof(v[i]));
			v[i].next_dirty = -1;
		}
		/* A tail points into the array only while its FIFO is
		 * empty, and wait_on() resets it then. */
		e->fds = v;
		e->nfds = n;
	}
	return &e->fds[fd];
}

static uint32_t op_events(const struct ur_op *op)
{
	switch (op->ur__opcode) {
	case UR__SEND:
	case UR__SENDMSG:
	case UR__WRITE:
	case UR__WRITEV:
	case UR__CONNECT:
		return EPOLLOUT;
	case UR__SPLICE:
		return (op->ur__bflags & B_SPLICE_IN) ? EPOLLIN : EPOLLOUT;
	case UR__POLL: {
		uint32_t ev = 0;

		if (op->ur__arg & (POLLIN | POLLPRI | POLLRDHUP))
			ev |= EPOLLIN | (op->ur__arg & (POLLPRI | POLLRDHUP));
		if (op->ur__arg & POLLOUT)
			ev |= EPOLLOUT;
		return ev;
	}
	default:
		return EPOLLIN;
	}
}

static void mark_dirty(struct eloop *e, int fd)
{
	struct efd *f = &e->fds[fd];

	if (!f->dirty && !f->persistent) {
		f->dirty = true;
		f->next_dirty = e->dirty;
		e->dirty = fd;
	}
}

/* Put op at the tail of its fd's FIFO; the fd is re-armed before the
 * next epoll_wait. */
static void wait_on(struct eloop *e, struct efd *f, int fd, struct ur_op *op)
{
	op->ur__fd = fd;
	op->ur__bflags |= B_WAITING;
	op->ur__next = NULL;
	if (f->head == NULL)
		f->tail = &f->head;
	*f->tail = op;
	f->tail = &op->ur__next;
	mark_dirty(e, fd);
}

static void unlink_waiter(struct efd *f, struct ur_op *op)
{
	struct ur_op **pp;

	for (pp = &f->head; *pp != NULL; pp = &(*pp)->ur__next) {
		if (*pp == op) {
			*pp = op->ur__next;
			if (f->tail == &op->ur__next)
				f->tail = pp;
			break;
		}
	}
	op->ur__bflags &= (uint8_t)~B_WAITING;
}

/* Does an op already wait on f in op's direction (order must hold)? */
static bool fifo_busy(const struct efd *f, const struct ur_op *op)
{
	uint32_t ev = op_events(op);

	if (op->ur__opcode == UR__POLL)
		return false;
	for (const struct ur_op *o = f->head; o != NULL; o = o->ur__next)
		if (o->ur__opcode != UR__POLL && (op_events(o) & ev))
			return true;
	return false;
}

static int try_op(struct eloop *e, struct ur_op *op, uint32_t *flags_out);

/* Arm what the dirty fds' waiters need, one epoll_ctl each. */
static void flush_dirty(struct eloop *e)
{
	while (e->dirty >= 0) {
		int fd = e->dirty;
		struct efd *f = &e->fds[fd];
		struct epoll_event ev = {.data.u64 = (uint64_t)fd};
		uint32_t want = 0;

		e->dirty = f->next_dirty;
		f->dirty = false;
		f->next_dirty = -1;
		for (struct ur_op *o = f->head; o != NULL; o = o->ur__next)
			want |= op_events(o);
		if (want == 0)
			continue;
		ev.events = want | EPOLLONESHOT;
		if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 &&
		    (errno != ENOENT ||
		     epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)) {
			int err = -errno;
			struct ur_op *o;

			while ((o = f->head) != NULL) {
				uint32_t flags = 0;
				int ret = err;

				unlink_waiter(f, o);
				/*
				 * EPERM: a file with no poll (a device such
				 * as /dev/full), which never blocks: the
				 * plain call. EBADF (closed under us),
				 * ENOMEM: the error.
				 */
				if (err == -EPERM) {
					o->ur__bflags |= B_NOWAIT_NO;
					ret = try_op(e, o, &flags);
					if (ret == E_WAIT)
						ret = err;
					f = &e->fds[fd]; /* may have grown */
				}
				done_push(e, o, o->res > 0 && ret < 0 ? o->res :
									  ret,
					  flags);
			}
			continue;
		}
		f->armed = want;
	}
}

/*
 * ---------------------------------------------------------------------
 * Performing ops. Each returns the result, or E_WAIT to wait (op->res
 * then holds the bytes moved so far by an op that must move them all).
 * ---------------------------------------------------------------------
 */

static int errno_or(ssize_t ret)
{
	return ret < 0 ? -errno : (int)ret;
}

/* Regular files, block devices, directories: epoll cannot wait for
 * them, and they never block for long. Their ops run inline. */
static bool is_file(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) ||
				       S_ISBLK(st.st_mode) ||
				       S_ISDIR(st.st_mode));
}

/*
 * A read or write with RWF_NOWAIT failed with errno: B_INLINE (plain
 * calls from now on) where that is how it must go on, and whether to try
 * again at once (a file) or wait for readiness (errno EAGAIN then).
 */
static bool nowait_failed(struct ur_op *op)
{
	if (errno != EAGAIN && errno != EOPNOTSUPP)
		return false;
	if (is_file(op->ur__fd)) {
		op->ur__bflags |= B_NOWAIT_NO;
		return true;
	}
	if (errno == EOPNOTSUPP) {
		/* No RWF_NOWAIT here (a tty, a signalfd): the plain call
		 * once the fd is ready. */
		op->ur__bflags |= B_NOWAIT_NO;
		errno = EAGAIN;
	}
	return false;
}

/*
 * Bytes moved by an op that must move them all (MSG_WAITALL, writes to a
 * pipe); op->res counts them. Done when all went, at EOF, or at an error
 * (which reports the bytes moved before it, as io_uring does).
 */
static int all_or_wait(struct ur_op *op, ssize_t got, size_t want)
{
	if (got < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return E_WAIT;
		return op->res > 0 ? op->res : -errno;
	}
	op->res += (int32_t)got;
	if ((size_t)got == want || got == 0)
		return op->res;
	return E_WAIT;
}

static bool would_block(ssize_t n)
{
	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* A socket op's result: E_WAIT waits, unless the caller asked for
 * MSG_DONTWAIT, who gets it as io_uring gives it. */
static int sock_result(ssize_t n, int flags)
{
	if (would_block(n))
		return (flags & MSG_DONTWAIT) ? -EAGAIN : E_WAIT;
	return errno_or(n);
}

/* recv and send: buffer op->ur__p, length op->ur__q, flags op->ur__arg. */
static int do_recv(struct ur_op *op)
{
	int flags = (int)op->ur__arg;
	size_t len = (size_t)op->ur__q - (size_t)op->res;
	ssize_t n = recv(op->ur__fd, (char *)op->ur__p + op->res, len,
			 flags | MSG_DONTWAIT);

	if (flags & MSG_WAITALL)
		return all_or_wait(op, n, len);
	return sock_result(n, flags);
}

static int do_send(struct ur_op *op)
{
	int flags = (int)op->ur__arg;
	size_t len = (size_t)op->ur__q - (size_t)op->res;
	ssize_t n = send(op->ur__fd, (char *)op->ur__p + op->res, len,
			 flags | MSG_DONTWAIT | MSG_NOSIGNAL);

	if (flags & MSG_WAITALL)
		return all_or_wait(op, n, len);
	return sock_result(n, flags);
}

/* iov minus its first skip bytes, at most IOV_CHUNK entries, into out. */
static size_t iov_skip(const struct iovec *iov, size_t cnt, size_t skip,
		       struct iovec *out, size_t *total)
{
	size_t n = 0;

	*total = 0;
	for (size_t i = 0; i < cnt && n < IOV_CHUNK; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		out[n].iov_base = (char *)iov[i].iov_base + skip;
		out[n].iov_len = iov[i].iov_len - skip;
		*total += out[n].iov_len;
		skip = 0;
		n++;
	}
	return n;
}

/*
 * sendmsg (op->ur__p a msghdr) and writev to a pipe or socket (iov
 * op->ur__p, count op->ur__q): with MSG_WAITALL, and always for writev
 * (a blocking write), everything; else what goes at once.
 */
static int do_vec(struct ur_op *op)
{
	bool is_msg = op->ur__opcode == UR__SENDMSG;
	const struct msghdr *msg = op->ur__p;
	const struct iovec *src = is_msg ? msg->msg_iov : op->ur__p;
	size_t cnt = is_msg ? msg->msg_iovlen : (size_t)op->ur__q;
	bool all = !is_msg || (op->ur__arg & MSG_WAITALL);
	struct iovec iov[IOV_CHUNK];
	size_t total, niov;
	ssize_t n;

	for (;;) {
		niov = iov_skip(src, cnt, (size_t)op->res, iov, &total);
		if (niov == 0)
			return op->res;
		if (is_msg) {
			struct msghdr m = *msg;

			m.msg_iov = iov;
			m.msg_iovlen = niov;
			n = sendmsg(op->ur__fd, &m,
				    (int)op->ur__arg | MSG_DONTWAIT |
					    MSG_NOSIGNAL);
		} else if (op->ur__bflags & B_NOWAIT_NO) {
			n = writev(op->ur__fd, iov, (int)niov);
		} else {
			n = pwritev2(op->ur__fd, iov, (int)niov, -1, RWF_NOWAIT);
		}
		if (n < 0 && !is_msg && !(op->ur__bflags & B_NOWAIT_NO) &&
		    nowait_failed(op))
			continue; /* a file: the plain call now */
		if (n < 0) {
			if (op->res == 0 && is_msg)
				return sock_result(n, (int)op->ur__arg);
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return E_WAIT;
			return op->res > 0 ? op->res : -errno;
		}
		op->res += (int32_t)n;
		if (!all)
			return op->res;
		if ((size_t)n < total)
			return E_WAIT;
	}
}

/*
 * read and write: buffer op->ur__p, length op->ur__arg, offset op->ur__q
 * (-1, or B_STREAM: the file position). RWF_NOWAIT first; a regular file
 * that would block (or refuses RWF_NOWAIT) is done inline, anything else
 * waits for readiness. io_uring ignores the offset of a pipe: so do we.
 */
static int64_t rw_off(const struct ur_op *op)
{
	return (op->ur__bflags & B_STREAM) ? -1 : (int64_t)op->ur__q;
}

static ssize_t rw_inline(const struct ur_op *op, void *buf, size_t len,
			 bool wr)
{
	int64_t off = rw_off(op);

	if (wr)
		return off < 0 ? write(op->ur__fd, buf, len) :
				 pwrite(op->ur__fd, buf, len, off);
	return off < 0 ? read(op->ur__fd, buf, len) :
			 pread(op->ur__fd, buf, len, off);
}

/* One attempt: bytes, or -1 with errno (EAGAIN: wait for readiness). */
static ssize_t rw_once(struct ur_op *op, void *buf, size_t len, bool wr)
{
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	ssize_t n;

	if (op->ur__bflags & B_NOWAIT_NO)
		return rw_inline(op, buf, len, wr);
	n = wr ? pwritev2(op->ur__fd, &iov, 1, rw_off(op), RWF_NOWAIT) :
		 preadv2(op->ur__fd, &iov, 1, rw_off(op), RWF_NOWAIT);
	if (n >= 0)
		return n;
	if (errno == ESPIPE && rw_off(op) >= 0) {
		op->ur__bflags |= B_STREAM;
		return rw_once(op, buf, len, wr);
	}
	if (nowait_failed(op))
		return rw_inline(op, buf, len, wr);
	return -1;
}

static int do_read(struct ur_op *op, void *buf, size_t len)
{
	ssize_t n = rw_once(op, buf, len, false);

	return would_block(n) ? E_WAIT : errno_or(n);
}

static int do_write(struct ur_op *op)
{
	size_t len = op->ur__arg - (size_t)op->res;
	ssize_t n = rw_once(op, (char *)op->ur__p + op->res, len, true);

	if (n >= 0 && !(op->ur__bflags & B_STREAM))
		return (int)n; /* a file at an offset: what went is all */
	return all_or_wait(op, n, len);
}

/* A socket accept and connect wait on must not block the loop. */
static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return fl;
}

static int slot_install(struct eloop *e, int fd);

static int do_accept(struct eloop *e, struct ur_op *op)
{
	int fd = accept4(op->ur__fd, op->ur__opcode == UR__ACCEPT ?
					      op->ur__p :
					      NULL,
			 op->ur__opcode == UR__ACCEPT ?
				 (socklen_t *)(uintptr_t)op->ur__q :
				 NULL,
			 /* a loop-held fd (direct) must not leak into exec */
			 (int)op->ur__arg |
				 ((op->ur__opcode == UR__ACCEPT_MULTI &&
				   op->ur__q) ||
						  (op->ur__bflags & B_DIRECT) ?
					  SOCK_CLOEXEC :
					  0));
	int slot;

	if (fd < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return E_WAIT;
		return -errno;
	}

	if (op->ur__opcode == UR__ACCEPT ? !(op->ur__bflags & B_DIRECT) :
					   op->ur__q == 0)
		return fd;
	slot = slot_install(e, fd);
	if (slot < 0)
		close(fd);
	return slot;
}

static int do_connect_done(struct ur_op *op)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(op->ur__fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -errno;
	return -err;
}

static unsigned poll_now(int fd, unsigned mask)
{
	struct pollfd p = {.fd = fd, .events = (short)mask};

	if (poll(&p, 1, 0) <= 0)
		return 0;
	return (unsigned)(uint16_t)p.revents;
}

/*
 * Provided buffers: a FIFO of free ids, in the kernel's order: buffers
 * given back go to the tail, one a recv took but found nothing for goes
 * back to the head (the kernel does not consume it then).
 */
static bool pbuf_take(struct ur_bufring *br, unsigned *bid)
{
	uint16_t *q = br->be;

	if (br->be_count == 0)
		return false;
	*bid = q[br->be_head++ & br->mask];
	br->be_count--;
	return true;
}

static void pbuf_unget(struct ur_bufring *br, unsigned bid)
{
	uint16_t *q = br->be;

	q[--br->be_head & br->mask] = (uint16_t)bid;
	br->be_count++;
}

static void e_pbuf_put(struct ur_bufring *br, unsigned bid)
{
	uint16_t *q = br->be;

	q[(br->be_head + br->be_count++) & br->mask] = (uint16_t)bid;
}

/* recv (or read) into a provided buffer; flags out for the completion. */
static int do_pbuf(struct eloop *e, struct ur_op *op, uint32_t *flags_out)
{
	struct ur_bufring *br = op->ur__p;
	unsigned bid;
	ssize_t n;

	(void)e;
	if (br == NULL || br->be == NULL)
		return -ENOBUFS; /* freed under the op: as the kernel says */
	/* Like the kernel: no buffer when the op is tried is -ENOBUFS
	 * (a POLL_FIRST recv is tried once the fd is readable). */
	if (!pbuf_take(br, &bid))
		return -ENOBUFS;
	if (op->ur__opcode == UR__READ_PBUF)
		n = rw_once(op, ur_bufring_buf(br, bid), br->buf_size, false);
	else
		n = recv(op->ur__fd, ur_bufring_buf(br, bid), br->buf_size,
			 (int)op->ur__arg | MSG_DONTWAIT);
	if (n <= 0) {
		int err = n < 0 ? errno : 0;

		if (err == EWOULDBLOCK)
			err = EAGAIN;
		/* As on 6.18: a read that fails or ends takes its buffer
		 * (the app gives it back, to the tail); a recv never does. */
		if (op->ur__opcode == UR__READ_PBUF && err != EAGAIN)
			e_pbuf_put(br, bid);
		else
			pbuf_unget(br, bid);
		if (err == EAGAIN && !((int)op->ur__arg & MSG_DONTWAIT))
			return E_WAIT;
		return -err;
	}
	*flags_out = UR__F_BUFFER | ((uint32_t)bid << UR__F_BUFFER_SHIFT);
	return (int)n;
}

/* O_NONBLOCK on fd for one call: the old flags, or -1 if none changed. */
static int nonblock_on(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || (fl & O_NONBLOCK))
		return -1;
	return fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0 ? fl : -1;
}

static void nonblock_off(int fd, int fl)
{
	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl);
}

/*
 * splice: operands in op->ur__p, length op->ur__q, flags op->ur__arg.
 * SPLICE_F_NONBLOCK only covers the pipe end: a socket end follows its
 * own O_NONBLOCK (splice_to_socket, tcp_splice_read), so an fd the
 * application left blocking gets it for the call, as connect_now() does.
 * Which end to wait on is chosen while the op is not yet in a FIFO: an
 * empty pipe or socket at the input, else room at the output.
 */
static int do_splice(struct eloop *e, struct ur_op *op)
{
	const struct ur__splice *sp = op->ur__p;
	int in = real_fd(e, sp->fd_in), out = real_fd(e, sp->fd_out);
	loff_t oin = sp->off_in, oout = sp->off_out;
	int fl_in, fl_out, err, wfd;
	ssize_t n;

	if (in < 0 || out < 0)
		return -EBADF;
	fl_in = nonblock_on(in);
	fl_out = nonblock_on(out);
	n = splice(in, oin >= 0 ? &oin : NULL, out, oout >= 0 ? &oout : NULL,
		   (size_t)op->ur__q, op->ur__arg | SPLICE_F_NONBLOCK);
	err = errno;
	nonblock_off(out, fl_out);
	nonblock_off(in, fl_in);
	if (n >= 0)
		return (int)n;
	if (err != EAGAIN)
		return -err;
	if (op->ur__bflags & B_WAITING)
		return E_WAIT;
	wfd = out;
	op->ur__bflags &= (uint8_t)~B_SPLICE_IN;
	if (!is_file(in) && !(poll_now(in, POLLIN) & (POLLIN | POLLHUP))) {
		wfd = in;
		op->ur__bflags |= B_SPLICE_IN;
	}
	if (efd_get(e, wfd) == NULL)
		return -ENOMEM;
	op->ur__fd = wfd;
	return E_WAIT;
}

/*
 * Try op once. Returns its result or E_WAIT; *flags_out gets the
 * completion's flags (a buffer, MORE).
 */
static int try_op(struct eloop *e, struct ur_op *op, uint32_t *flags_out)
{
	*flags_out = 0;
	switch (op->ur__opcode) {
	case UR__RECV:
		return do_recv(op);
	case UR__SEND:
		return do_send(op);
	case UR__SENDMSG:
	case UR__WRITEV:
		return do_vec(op);
	case UR__READ:
		return do_read(op, op->ur__p, op->ur__arg);
	case UR__WRITE:
		return do_write(op);
	case UR__SPLICE:
		return do_splice(e, op);
	case UR__ACCEPT:
		return do_accept(e, op);
	case UR__ACCEPT_MULTI: {
		int ret = do_accept(e, op);

		if (ret >= 0 && !(op->ur__bflags & B_CANCEL))
			*flags_out = UR__F_MORE;
		return ret;
	}
	case UR__CONNECT:
		return do_connect_done(op);
	case UR__POLL: {
		unsigned got = poll_now(op->ur__fd, op->ur__arg | POLLERR |
							    POLLHUP);

		if (got & POLLNVAL)
			return -EBADF;
		return got != 0 ? (int)got : E_WAIT;
	}
	case UR__RECV_PBUF:
	case UR__READ_PBUF:
		return do_pbuf(e, op, flags_out);
	case UR__RECV_MULTI: {
		int ret = do_pbuf(e, op, flags_out);

		if (ret > 0 && !(op->ur__bflags & B_CANCEL))
			*flags_out |= UR__F_MORE;
		return ret;
	}
	default:
		return -EINVAL;
	}
}

/*
 * ---------------------------------------------------------------------
 * Timers: a binary heap per clock, index in op->ur__fd, deadline in
 * op->ur__q.
 * ---------------------------------------------------------------------
 */

static struct theap *heap_of(struct eloop *e, clockid_t clock)
{
	switch (clock) {
	case CLOCK_REALTIME:
		return &e->heaps[1];
	case CLOCK_BOOTTIME:
		return &e->heaps[2];
	default:
		return &e->heaps[0];
	}
}

static void heap_set(struct theap *h, size_t i, struct ur_op *op)
{
	h->v[i] = op;
	op->ur__fd = (int32_t)i;
}

static void heap_up(struct theap *h, size_t i)
{
	struct ur_op *op = h->v[i];

	while (i > 0) {
		size_t p = (i - 1) / 2;

		if (h->v[p]->ur__q <= op->ur__q)
			break;
		heap_set(h, i, h->v[p]);
		i = p;
	}
	heap_set(h, i, op);
}

static void heap_down(struct theap *h, size_t i)
{
	struct ur_op *op = h->v[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->v[c + 1]->ur__q < h->v[c]->ur__q)
			c++;
		if (op->ur__q <= h->v[c]->ur__q)
			break;
		heap_set(h, i, h->v[c]);
		i = c;
	}
	heap_set(h, i, op);
}

static int heap_add(struct theap *h, struct ur_op *op)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		struct ur_op **v = realloc(h->v, cap * sizeof(*v));

		if (v == NULL)
			return -ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	op->ur__bflags |= B_HEAP;
	heap_set(h, h->n++, op);
	heap_up(h, h->n - 1);
	return 0;
}

static void heap_del(struct theap *h, struct ur_op *op)
{
	size_t i = (size_t)op->ur__fd;
	struct ur_op *last = h->v[--h->n];

	op->ur__bflags &= (uint8_t)~B_HEAP;
	if (i == h->n)
		return;
	heap_set(h, i, last);
	heap_down(h, i);
	heap_up(h, (size_t)last->ur__fd);
}

/* Arm a clock's timerfd for its heap's earliest deadline. */
static void heap_arm_tfd(struct eloop *e, struct theap *h, clockid_t clock)
{
	struct itimerspec its = {{0, 0}, {0, 0}};
	uint64_t ns = h->n > 0 ? h->v[0]->ur__q : 0;

	if (ns == h->tfd_ns)
		return;
	if (h->tfd < 0) {
		struct epoll_event ev = {.events = EPOLLIN};

		if (ns == 0)
			return;
		h->tfd = ur__fd_off_stdio(
			timerfd_create(clock, TFD_CLOEXEC | TFD_NONBLOCK));
		if (h->tfd < 0)
			return; /* the heap is still checked every turn */
		ev.data.u64 = DATA_TIMERFD | (uint64_t)h->tfd;
		(void)epoll_ctl(e->epfd, EPOLL_CTL_ADD, h->tfd, &ev);
	}
	if (clock == CLOCK_REALTIME && ns != 0) /* the test seam, or 0 */
		ns -= (uint64_t)ur__realtime_skew_ns;
	its.it_value.tv_sec = (time_t)(ns / 1000000000);
	its.it_value.tv_nsec = (long)(ns % 1000000000);
	/* A deadline of 0 disarms; a past one fires at once. */
	if (ns != 0 && its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
		its.it_value.tv_nsec = 1;
	(void)timerfd_settime(h->tfd,
			      TFD_TIMER_ABSTIME |
				      (clock == CLOCK_REALTIME ?
					       TFD_TIMER_CANCEL_ON_SET :
					       0),
			      &its, NULL);
	h->tfd_ns = h->n > 0 ? h->v[0]->ur__q : 0;
}

/* Complete every timer that is due on each clock. */
static void timers_expire(struct eloop *e)
{
	static const clockid_t clocks[3] = {CLOCK_MONOTONIC, CLOCK_REALTIME,
					    CLOCK_BOOTTIME};

	for (int c = 0; c < 3; c++) {
		struct theap *h = &e->heaps[c];
		uint64_t now;

		if (h->n == 0)
			continue;
		now = ur_now_ns(clocks[c]);
		while (h->n > 0 && h->v[0]->ur__q <= now) {
			struct ur_op *op = h->v[0];

			heap_del(h, op);
			done_push(e, op, -ETIME, 0);
		}
	}
}

/*
 * ---------------------------------------------------------------------
 * Starting ops
 * ---------------------------------------------------------------------
 */

static int cancel_fd(struct eloop *e, int fd);

static int inline_file_op(struct eloop *e, const struct ur__req *r)
{
	int fd = real_fd(e, r->fd);

	switch (r->opcode) {
	case UR__OPENAT:
		return errno_or(openat(r->fd, r->buf, r->flags, (mode_t)r->len));
	case UR__FSYNC:
		return errno_or((r->uflags & 1U) ? fdatasync(fd) : fsync(fd));
	case UR__RENAMEAT:
		return errno_or(
			renameat2(r->fd, r->buf, r->fd2, r->buf2, r->uflags));
	case UR__UNLINKAT:
		return errno_or(unlinkat(r->fd, r->buf, r->flags));
	case UR__LINKAT:
		return errno_or(
			linkat(r->fd, r->buf, r->fd2, r->buf2, r->flags));
	case UR__MKDIRAT:
		return errno_or(mkdirat(r->fd, r->buf, (mode_t)r->len));
	case UR__CLOSE:
		if (UR_IS_FIXED(r->fd)) {
			if (fd < 0)
				return -EBADF;
			e->slots[UR_SLOT(r->fd)] = -1;
		}
		/*
		 * Ops still waiting on it would wait for ever: epoll forgets
		 * a closed file (io_uring's ops hold a reference instead).
		 * They end with -ECANCELED; the number starts afresh.
		 */
		if (fd >= 0 && (size_t)fd < e->nfds) {
			cancel_fd(e, fd); /* -ENOENT: none was waiting */
			e->fds[fd].drained = false;
			e->fds[fd].persistent = false; /* close() unregisters */
		}
		return errno_or(close(fd));
	case UR__FILES_UPDATE:
		if (fd < 0)
			return -EBADF;
		return slot_install(e, fcntl(fd, F_DUPFD_CLOEXEC, 3));
	default:
		return -EINVAL;
	}
}

/* Cancel one waiting op (or end a multishot one at its next step). */
static bool cancel_op(struct eloop *e, struct ur_op *op)
{
	if (op->ur__state != UR_OP_INFLIGHT || op->ur__loop != &e->base)
		return false;
	if (op->ur__bflags & B_WAITING) {
		unlink_waiter(&e->fds[op->ur__fd], op);
		done_push(e, op, op->res > 0 ? op->res : -ECANCELED, 0);
		return true;
	}
	if (op->ur__bflags & B_HEAP) {
		clockid_t clock = (clockid_t)op->ur__arg;

		heap_del(heap_of(e, clock), op);
		done_push(e, op, -ECANCELED, 0);
		return true;
	}
	/* A multishot op queued or being dispatched: it ends at its next
	 * step. */
	op->ur__bflags |= B_CANCEL;
	return true;
}

static int cancel_fd(struct eloop *e, int fd)
{
	struct efd *f;
	struct ur_op *o;
	int n = 0;

	if (fd < 0 || (size_t)fd >= e->nfds)
		return -ENOENT;
	f = &e->fds[fd];
	while ((o = f->head) != NULL) {
		unlink_waiter(f, o);
		done_push(e, o, o->res > 0 ? o->res : -ECANCELED, 0);
		n++;
	}
	return n > 0 ? n : -ENOENT;
}

static int start_timer(struct eloop *e, struct ur_op *op,
		       const struct ur__req *r)
{
	clockid_t clock = r->opcode == UR__TIMEOUT ? CLOCK_MONOTONIC :
						     (clockid_t)r->uflags;
	uint64_t at = r->opcode == UR__TIMEOUT ?
			      ur_now_ns(CLOCK_MONOTONIC) + r->ns :
			      r->ns;
	int ret;

	op->ur__arg = (uint32_t)clock;
	op->ur__q = at;
	ret = heap_add(heap_of(e, clock), op);
	if (ret < 0)
		return ret;
	return 0;
}

/* Requests about other ops: no op of their own. */
static int start_meta(struct eloop *e, const struct ur__req *r)
{
	struct ur_op *t = r->target;

	switch (r->opcode) {
	case UR__CANCEL:
	case UR__TIMER_REMOVE:
		(void)cancel_op(e, t);
		return 0;
	case UR__TIMER_UPDATE:
		if (t->ur__bflags & B_HEAP) {
			struct theap *h = heap_of(e, (clockid_t)t->ur__arg);
			size_t i = (size_t)t->ur__fd;

			t->ur__q = r->ns;
			heap_down(h, i);
			heap_up(h, (size_t)t->ur__fd);
		}
		return 0;
	default:
		return -EINVAL;
	}
}

/* Copy what an fd op needs later into op. */
static int load_op(struct eloop *e, struct ur_op *op, const struct ur__req *r)
{
	int fd = real_fd(e, r->fd);

	if (fd < 0)
		return -EBADF;
	op->ur__fd = fd;
	op->ur__p = r->buf;
	op->ur__q = r->len;
	op->ur__arg = (uint32_t)r->flags;
	switch (r->opcode) {
	case UR__READ:
	case UR__WRITE:
		/* io_uring takes 32-bit lengths too. */
		op->ur__arg = r->len > UINT32_MAX ? UINT32_MAX :
						    (uint32_t)r->len;
		op->ur__q = (uint64_t)r->off;
		if (r->off < 0)
			op->ur__bflags |= B_STREAM;
		break;
	case UR__ACCEPT:
		op->ur__q = (uint64_t)(uintptr_t)r->buf2;
		if (r->uflags & UR__REQ_DIRECT)
			op->ur__bflags |= B_DIRECT;
		__attribute__((fallthrough));
	case UR__ACCEPT_MULTI: {
		int ret = set_nonblock(fd);

		if (ret < 0)
			return ret;
		if (r->opcode == UR__ACCEPT_MULTI)
			op->ur__q = (r->uflags & UR__REQ_DIRECT) != 0;
		break;
	}
	case UR__POLL:
		op->ur__arg = r->uflags;
		break;
	case UR__READ_PBUF:
		op->ur__bflags |= B_STREAM; /* the file position */
		__attribute__((fallthrough));
	case UR__RECV_PBUF:
	case UR__RECV_MULTI:
		op->ur__p = r->br;
		op->ur__q = r->uflags;
		break;
	default:
		break;
	}
	return 0;
}

/* connect() in the background: the socket is made non-blocking for the
 * call only, then the op waits for writability. */
static int connect_now(struct ur_op *op, const struct ur__req *r)
{
	int fl = set_nonblock(op->ur__fd);
	int ret;

	if (fl < 0)
		return fl;
	ret = connect(op->ur__fd, r->buf, (socklen_t)r->len) < 0 ? -errno : 0;
	if (!(fl & O_NONBLOCK))
		(void)fcntl(op->ur__fd, F_SETFL, fl);
	return ret == -EINPROGRESS ? E_WAIT : ret;
}

/*
 * A recv that came back short has emptied the socket (almost always), so
 * the next recv on it waits for readiness at once instead of trying and
 * getting EAGAIN: one syscall less per request. Readiness clears it; if
 * data came meanwhile, re-arming (MOD) reports the fd ready at once. Not
 * for an edge-triggered (persistent) fd: a FIN that came with the last
 * data leaves it readable (EOF) with no edge to come.
 */
static bool recv_kind(const struct ur_op *op)
{
	return (op->ur__opcode == UR__RECV || op->ur__opcode == UR__RECV_PBUF) &&
	       !(op->ur__arg & (MSG_DONTWAIT | MSG_PEEK));
}

static void note_recv(struct efd *f, const struct ur_op *op, int ret)
{
	size_t want;

	if (!recv_kind(op) || ret < 0)
		return;
	want = op->ur__opcode == UR__RECV ?
		       (size_t)op->ur__q :
		       ((const struct ur_bufring *)op->ur__p)->buf_size;
	f->drained = (size_t)ret < want;
}

static int e_start(struct ur_loop *loop, struct ur_op *op,
		   const struct ur__req *r)
{
	struct eloop *e = E(loop);
	struct efd *f;
	uint32_t flags;
	int ret;

	if (op == NULL)
		return start_meta(e, r);
	switch (r->opcode) {
	case UR__NOP:
		ur__op_arm(loop, op, r->opcode);
		complete_now(e, op, 0);
		return 0;
	case UR__TIMEOUT:
	case UR__TIMER:
		ur__op_arm(loop, op, r->opcode);
		ret = start_timer(e, op, r);
		if (ret < 0) {
			op->ur__state = UR_OP_IDLE;
			loop->st.ops_inflight--;
		}
		return ret;
	case UR__CANCEL_FD:
		/* Queued after the completions of the ops it cancels: when
		 * it returns, they have completed. */
		ur__op_arm(loop, op, r->opcode);
		done_push(e, op, cancel_fd(e, real_fd(e, r->fd)), 0);
		return 0;
	case UR__OPENAT:
	case UR__FSYNC:
	case UR__RENAMEAT:
	case UR__UNLINKAT:
	case UR__LINKAT:
	case UR__MKDIRAT:
	case UR__CLOSE:
	case UR__FILES_UPDATE:
		ur__op_arm(loop, op, r->opcode);
		complete_now(e, op, inline_file_op(e, r));
		return 0;
	default:
		break;
	}
	ur__op_arm(loop, op, r->opcode);
	ret = load_op(e, op, r);
	if (ret < 0)
		goto refuse;
	f = efd_get(e, op->ur__fd);
	if (f == NULL) {
		ret = -ENOMEM;
		goto refuse;
	}
	flags = 0;
	if (fifo_busy(f, op))
		ret = E_WAIT;
	else if (r->opcode == UR__CONNECT)
		ret = connect_now(op, r);
	else if (r->opcode == UR__RECV_PBUF && (r->uflags & UR__REQ_POLL_FIRST))
		ret = E_WAIT; /* wait for data before taking a buffer */
	else if (f->drained && !f->persistent && recv_kind(op))
		ret = E_WAIT; /* re-arming (MOD) reports the fd if ready */
	else
		ret = try_op(e, op, &flags);
	f = &e->fds[op->ur__fd]; /* an accept may have grown the table */
	if (ret == E_WAIT) {
		wait_on(e, f, op->ur__fd, op);
		return 0;
	}
	note_recv(f, op, ret);
	if (r->opcode == UR__CONNECT || !(flags & (UR__F_MORE | UR__F_BUFFER)))
		complete_now(e, op, ret);
	else
		done_push(e, op, ret, flags);
	return 0;

refuse:
	/* Nothing was queued: the op is not in flight. */
	op->ur__state = UR_OP_IDLE;
	loop->st.ops_inflight--;
	return ret;
}

/*
 * ---------------------------------------------------------------------
 * The turn
 * ---------------------------------------------------------------------
 */

/* An fd is ready: run its waiters in order while they get somewhere. */
static void fd_ready(struct eloop *e, int fd, uint32_t events)
{
	struct efd *f;
	struct ur_op *op, *next;
	uint32_t blocked = 0; /* directions an op found not ready */

	if (fd < 0 || (size_t)fd >= e->nfds)
		return;
	f = &e->fds[fd];
	if (!f->persistent)
		f->armed = 0; /* EPOLLONESHOT */
	if (events & (EPOLLERR | EPOLLHUP))
		events |= EPOLLIN | EPOLLOUT;
	if (events & EPOLLIN)
		f->drained = false;
	for (op = f->head; op != NULL; op = next) {
		uint32_t want = op_events(op);
		uint32_t flags;
		int ret;

		next = op->ur__next;
		if (!(want & events) || (want & blocked & ~(uint32_t)EPOLLPRI))
			continue;
		if (op->ur__opcode == UR__POLL) {
			/* epoll's bits are poll's. */
			ret = (int)(events &
				    (op->ur__arg | POLLERR | POLLHUP | POLLNVAL));
			flags = 0;
			if (ret == 0)
				continue;
		} else {
			ret = try_op(e, op, &flags);
			f = &e->fds[fd]; /* an accept may have grown the table */
		}
		if (ret == E_WAIT) {
			blocked |= want;
			continue;
		}
		note_recv(f, op, ret);
		unlink_waiter(f, op);
		done_push(e, op, ret, flags);
	}
	if (f->head != NULL)
		mark_dirty(e, fd);
}

static void timerfd_ready(struct eloop *e, int tfd)
{
	uint64_t ticks;

	/* ECANCELED: the realtime clock was set; the heap check below
	 * sees where marks are now, and the re-arm undoes the cancel. */
	(void)read(tfd, &ticks, sizeof(ticks));
	for (int c = 0; c < 3; c++)
		if (e->heaps[c].tfd == tfd)
			e->heaps[c].tfd_ns = 0; /* re-arm */
}

static void e_clock_was_set(struct ur_loop *loop)
{
	E(loop)->heaps[1].tfd_ns = 0; /* re-armed, and re-checked, next wait */
}

/*
 * Dispatch what is done. A multishot op that stays armed steps again at
 * once (it would find its fd ready), and goes back to waiting when the
 * fd has nothing more. Only the ops queued when the call began run, so a
 * busy multishot op cannot keep the turn for ever.
 */
static unsigned e_dispatch_ready(struct ur_loop *loop)
{
	struct eloop *e = E(loop);
	struct ur_op *op = e->done_head;
	unsigned n = 0;

	e->done_head = NULL;
	e->done_tail = &e->done_head;
	while (op != NULL) {
		struct ur_op *next = op->ur__next;
		bool more = ur_op_more(op);
		uint32_t flags;
		int ret;

		op->ur__bflags &= (uint8_t)~B_DONE;
		ur__op_complete(loop, op, op->res, op->ur__flags);
		n++;
		if (more && op->ur__state == UR_OP_INFLIGHT) {
			if (op->ur__bflags & B_CANCEL) {
				done_push(e, op, -ECANCELED, 0);
			} else {
				op->res = 0;
				ret = try_op(e, op, &flags);
				if (ret == E_WAIT) {
					wait_on(e, &e->fds[op->ur__fd],
						op->ur__fd, op);
				} else {
					done_push(e, op, ret, flags);
				}
			}
		}
		op = next;
	}
	return n;
}

static bool e_has_ready(const struct ur_loop *loop)
{
	return CE(loop)->done_head != NULL;
}

static int e_wait(struct ur_loop *loop, int64_t timeout_ns)
{
	struct eloop *e = E(loop);
	struct epoll_event evs[EVENTS_MAX];
	struct timespec ts, *tsp = NULL;
	int n;

	e->imm_budget = IMM_BUDGET;
	flush_dirty(e);
	heap_arm_tfd(e, &e->heaps[1], CLOCK_REALTIME);
	heap_arm_tfd(e, &e->heaps[2], CLOCK_BOOTTIME);
	if (e->done_head != NULL)
		timeout_ns = 0;
	for (int c = 0; c < 3; c++) {
		static const clockid_t clocks[3] = {
			CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME};
		struct theap *h = &e->heaps[c];
		uint64_t now, at;
		int64_t left;

		/* MONOTONIC, and a clock whose timerfd could not be made. */
		if (h->n == 0 || (c > 0 && h->tfd >= 0))
			continue;
		now = ur_now_ns(clocks[c]);
		at = h->v[0]->ur__q;
		left = at > now ? (int64_t)(at - now) : 0;
		if (timeout_ns < 0 || left < timeout_ns)
			timeout_ns = left;
	}
	if (timeout_ns >= 0) {
		ts.tv_sec = (time_t)(timeout_ns / 1000000000);
		ts.tv_nsec = (long)(timeout_ns % 1000000000);
		tsp = &ts;
	}
	loop->st.enters++;
	n = epoll_pwait2(e->epfd, evs, EVENTS_MAX, tsp, NULL);
	if (n < 0) {
		if (errno != EINTR)
			return -errno;
		n = 0;
	}
	for (int i = 0; i < n; i++) {
		uint64_t d = evs[i].data.u64;

		if (d & DATA_TIMERFD)
			timerfd_ready(e, (int)(d & 0xffffffffU));
		else
			fd_ready(e, (int)d, evs[i].events);
	}
	timers_expire(e);
	return (int)e_dispatch_ready(loop);
}

/*
 * ---------------------------------------------------------------------
 * Setup, capabilities, buffers, teardown
 * ---------------------------------------------------------------------
 */

/*
 * A direct descriptor's fd is the loop's alone: nobody can close it
 * behind the loop's back, so its number is never reused under a stale
 * registration. It is registered edge-triggered once, for both
 * directions, and its waits cost no epoll_ctl (an fd that epoll refuses,
 * a regular file, goes the usual way). Edges that come while nothing
 * waits clear the drained mark, and every op tries its syscall before it
 * waits, so no readiness is lost between them.
 */
static void register_persistent(struct eloop *e, int fd)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
		.data.u64 = (uint64_t)fd,
	};
	struct efd *f = efd_get(e, fd);

	if (f == NULL)
		return;
	f->drained = false;
	f->persistent = epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
}

static int slot_install(struct eloop *e, int fd)
{
	if (fd < 0)
		return -errno;
	for (unsigned n = 0; n < e->nslots; n++) {
		unsigned i = (e->slot_hint + n) % e->nslots;

		if (e->slots[i] < 0) {
			e->slots[i] = fd;
			e->slot_hint = i + 1;
			register_persistent(e, fd);
			return (int)i;
		}
	}
	close(fd);
	return -ENFILE;
}

static int e_init(struct ur_loop *loop, const struct ur_loop_opts *o)
{
	struct eloop *e = E(loop);

	e->dirty = -1;
	e->done_tail = &e->done_head;
	e->imm_budget = IMM_BUDGET;
	for (int c = 0; c < 3; c++)
		e->heaps[c].tfd = -1;
	if (o->direct_files > 0) {
		e->slots = malloc(o->direct_files * sizeof(*e->slots));
		if (e->slots == NULL)
			return -ENOMEM;
		for (unsigned i = 0; i < o->direct_files; i++)
			e->slots[i] = -1;
		e->nslots = o->direct_files;
	}
	e->epfd = ur__fd_off_stdio(epoll_create1(EPOLL_CLOEXEC));
	if (e->epfd < 0) {
		free(e->slots);
		return -errno;
	}
	return 0;
}

/*
 * NAPI busy polling for the epoll set (Linux 6.9): EPIOCSPARAMS, not in
 * Debian 12's headers.
 */
struct epoll_params_k {
	uint32_t busy_poll_usecs;
	uint16_t busy_poll_budget;
	uint8_t prefer_busy_poll;
	uint8_t pad;
};
#define EPIOCSPARAMS_K _IOW(0x8A, 0x01, struct epoll_params_k)

static int e_napi(struct ur_loop *loop, unsigned busy_poll_us, bool prefer)
{
	struct epoll_params_k p = {
		.busy_poll_usecs = busy_poll_us,
		.busy_poll_budget = 8, /* the kernel's busy-poll default */
		.prefer_busy_poll = prefer,
	};

	if (ioctl(E(loop)->epfd, EPIOCSPARAMS_K, &p) < 0)
		return errno == ENOTTY ? -EOPNOTSUPP : -errno;
	return 0;
}

static bool e_has(const struct ur_loop *loop, enum ur_cap cap)
{
	(void)loop;
	return cap == UR_CAP_DIRECT_FILES;
}

static int e_pbuf_init(struct ur_bufring *br)
{
	uint16_t *stack = malloc(br->nbufs * sizeof(*stack));

	if (stack == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < br->nbufs; i++)
		stack[i] = (uint16_t)i;
	br->be = stack;
	br->be_len = br->nbufs * sizeof(*stack);
	br->be_head = 0;
	br->be_count = br->nbufs;
	return 0;
}

static void e_pbuf_fini(struct ur_bufring *br)
{
	free(br->be);
	br->be = NULL;
	br->be_count = 0;
}

static void e_fini(struct ur_loop *loop)
{
	struct eloop *e = E(loop);

	/* Nothing is the kernel's here: waiting ops are simply dropped. */
	for (size_t i = 0; i < e->nfds; i++)
		for (struct ur_op *o = e->fds[i].head; o != NULL;
		     o = o->ur__next)
			o->ur__state = UR_OP_DONE;
	for (int c = 0; c < 3; c++) {
		for (size_t i = 0; i < e->heaps[c].n; i++)
			e->heaps[c].v[i]->ur__state = UR_OP_DONE;
		free(e->heaps[c].v);
		if (e->heaps[c].tfd >= 0)
			close(e->heaps[c].tfd);
	}
	for (struct ur_op *o = e->done_head; o != NULL; o = o->ur__next)
		o->ur__state = UR_OP_DONE;
	for (unsigned i = 0; i < e->nslots; i++)
		if (e->slots[i] >= 0)
			close(e->slots[i]);
	free(e->slots);
	free(e->fds);
	close(e->epfd);
}

static void e_forget(struct ur_loop *loop)
{
	struct eloop *e = E(loop);

	close(e->epfd);
	for (int c = 0; c < 3; c++)
		if (e->heaps[c].tfd >= 0)
			close(e->heaps[c].tfd);
	for (unsigned i = 0; i < e->nslots; i++)
		if (e->slots[i] >= 0)
			close(e->slots[i]);
}

const struct ur__backend ur__backend_epoll = {
	.name = "epoll",
	.id = UR_BACKEND_EPOLL,
	.loop_size = sizeof(struct eloop),
	.init = e_init,
	.fini = e_fini,
	.forget = e_forget,
	.start = e_start,
	.wait = e_wait,
	.dispatch_ready = e_dispatch_ready,
	.has_ready = e_has_ready,
	.has = e_has,
	.napi = e_napi,
	.clock_was_set = e_clock_was_set,
	.nowake = NULL,
	.post_wake = NULL,
	.pbuf_init = e_pbuf_init,
	.pbuf_fini = e_pbuf_fini,
	.pbuf_put = e_pbuf_put,
};
