/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen/worker: one ring, its connections, and the modes' I/O. */
#include "loadgen.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/*
 * A worker is a plain completion loop: submit and wait in one
 * io_uring_enter, with a 50 ms timeout so that deadlines are seen even
 * when nothing completes, then handle every CQE of the batch. The
 * user_data of an SQE is the connection's address with the operation in
 * its two low bits (struct lg_conn is at least 4-aligned).
 *
 * The ring takes SINGLE_ISSUER | DEFER_TASKRUN when the kernel has them
 * (completions run only when we wait: fewer interruptions of the loop,
 * as in the fast servers), else COOP_TASKRUN, else plain.
 *
 * Receiving is one multishot recv per connection over a ring of provided
 * buffers, so a request costs one SQE (its send) and the client stays
 * cheap next to the server it measures. Each buffer goes back to the
 * ring as soon as its chunk has been handled. A multishot the kernel
 * ends (-ENOBUFS when all buffers are out, or anything without
 * IORING_CQE_F_MORE) is re-armed at once: the buffers of this batch are
 * back before the next submit.
 *
 * At most -W connections per worker are connecting or opening (their
 * session's first exchange, as hold's line) at once, so a server sees a
 * bounded number of busy connections while the others are already idle.
 *
 * Direct descriptors (-D): each worker registers a sparse file table of
 * one slot per connection. A socket is still made, set up and bound as
 * an fd (socket, setsockopt and bind have no io_uring form on every
 * kernel), then installed in its slot and closed at once: the fd table
 * holds at most one of them at a time, so a worker may hold as many
 * connections as its ring's table (up to RLIMIT_NOFILE slots each).
 * Every operation then names the slot with IOSQE_FIXED_FILE. SO_LINGER 0
 * is set before the socket leaves the fd table, since the ring's exit
 * closes it.
 *
 * Open loop (-r): the worker walks its schedule of slots (loadgen.h) in
 * due order. One IORING_OP_TIMEOUT with an absolute CLOCK_MONOTONIC
 * deadline, the next slot's, wakes the loop; every slot due by then
 * starts its request if its connection is free. A connection still
 * waiting for its last reply when its slot comes starts the overdue
 * request the moment that reply is in, and several in a row if it has
 * fallen further behind. Either way the latency counts from the slot's
 * due time, so a server that stalls is charged for every request it
 * delayed, not just the one it was serving (no coordinated omission).
 * Two kinds of lateness are told apart: "backlogged" requests were due
 * while their connection was busy (the server's doing), and for the
 * others the gap between due and sent is the client's own lag, kept in
 * its own histogram so that a loadgen that cannot keep up shows.
 *
 * Sleeping until the next slot costs a wake-up per request at low rates
 * (two with the reply's), which on a VM is several microseconds and
 * tens of them late. With -B the worker polls instead while a phase
 * runs: it submits and reaps without waiting (the kernel still runs its
 * deferred completions on each enter) and needs no timer, at the price
 * of a whole CPU.
 */

#define LG_SQ_ENTRIES 1024
#define LG_CQ_MAX     65536
#define LG_TICK_NS    (50ll * 1000 * 1000)
#define LG_BUFS_MAX   32768		 /* a buffer ring's limit */
#define LG_BUFS_BYTES ((size_t)64 << 20) /* per worker, at most */
#define LG_BUF_GROUP  0

enum {
	OP_CONNECT = 0,
	OP_SEND = 1,
	OP_RECV = 2,
	OP_TIMER = 3, /* with no connection: the open loop's timer */
	OP_MASK = 3,
};

uint64_t lg_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct io_uring_sqe *get_sqe(struct lg_worker *w)
{
	struct io_uring_sqe *sqe;

	while ((sqe = io_uring_get_sqe(&w->ring)) == NULL) {
		int ret = io_uring_submit(&w->ring);

		if (ret < 0 && ret != -EINTR && ret != -EAGAIN &&
		    ret != -EBUSY) {
			(void)fprintf(stderr, "loadgen: io_uring_submit: %s\n",
				      strerror(-ret));
			exit(1);
		}
	}
	return sqe;
}

/* The SQE names c's socket: its fd, or its slot in the ring's table. */
static void set_file(struct io_uring_sqe *sqe, const struct lg_conn *c)
{
	if (c->w->o->direct)
		sqe->flags |= IOSQE_FIXED_FILE;
}

static void set_data(struct io_uring_sqe *sqe, struct lg_conn *c, int op)
{
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | (uint64_t)op);
}

static void conn_fail(struct lg_conn *c, int err, const char *what)
{
	struct lg_worker *w = c->w;

	if (c->state == LG_CONN_DEAD)
		return;
	if (c->state == LG_CONN_CONNECTING)
		w->connecting--;
	else if (c->state == LG_CONN_OPENING)
		w->opening--;
	else if (c->state == LG_CONN_BUSY)
		w->busy--;
	if (c->state == LG_CONN_READY || c->state == LG_CONN_BUSY)
		w->ready--;
	c->state = LG_CONN_DEAD;
	w->dead++;
	if (w->first_err == 0) {
		w->first_err = err;
		w->first_err_what = what;
	}
	/*
	 * In-flight ops hold their own file reference: a send fails or
	 * finishes and is ignored, but the multishot recv would keep the
	 * socket open for good, so cancel it (its CQEs are ignored too).
	 */
	if (c->recv_armed) {
		struct io_uring_sqe *sqe = get_sqe(w);

		io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)c | OP_RECV,
				       0);
		io_uring_sqe_set_data64(sqe, 0);
		c->recv_armed = false;
	}
	if (c->fd >= 0 && w->o->direct) {
		struct io_uring_sqe *sqe = get_sqe(w);

		io_uring_prep_close_direct(sqe, (unsigned)c->fd);
		io_uring_sqe_set_data64(sqe, 0);
	} else if (c->fd >= 0) {
		close(c->fd);
	}
	c->fd = -1;
}

int lg_conn_send(struct lg_conn *c, const void *buf, size_t len)
{
	struct io_uring_sqe *sqe;

	if (c->send_busy)
		return -EBUSY;
	c->sbuf = buf;
	c->slen = len;
	c->soff = 0;
	c->send_busy = true;
	sqe = get_sqe(c->w);
	io_uring_prep_send(sqe, c->fd, buf, len, MSG_NOSIGNAL);
	set_file(sqe, c);
	set_data(sqe, c, OP_SEND);
	return 0;
}

static void arm_recv(struct lg_conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(c->w);

	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = LG_BUF_GROUP;
	set_file(sqe, c);
	set_data(sqe, c, OP_RECV);
	c->recv_armed = true;
}

static void recycle_buf(struct lg_worker *w, unsigned bid)
{
	io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * w->buf_size,
			      w->buf_size, (unsigned short)bid,
			      io_uring_buf_ring_mask(w->nbufs), 0);
	io_uring_buf_ring_advance(w->br, 1);
}

/* Latency of the request will count from t (now, or when it was due). */
static int request_start(struct lg_conn *c, uint64_t t)
{
	c->state = LG_CONN_BUSY;
	c->w->busy++;
	c->t_start = t;
	return c->w->o->mode->request(c);
}

/* Open loop: when c's next request is due. */
static uint64_t due_of(const struct lg_worker *w, const struct lg_conn *c)
{
	double k = (double)c->index + (double)c->next_j * (double)w->o->conns;

	return w->sched_t0 + (uint64_t)(k * w->period_ns);
}

/* Open loop: when slot k is due. */
static uint64_t slot_due(const struct lg_worker *w, uint64_t k)
{
	const struct lg_conn *c = &w->conns[k % w->nconns];
	double j = (double)(k / w->nconns);

	return w->sched_t0 +
	       (uint64_t)(((double)c->index + j * (double)w->o->conns) *
			  w->period_ns);
}

/* Open loop: start c's request that was due at due. */
static int open_start(struct lg_conn *c, uint64_t due, uint64_t now,
		      bool backlogged)
{
	struct lg_worker *w = c->w;

	c->next_j++;
	if (w->record) {
		w->started++;
		if (backlogged)
			w->backlogged++;
		else
			lg_hist_add(&w->lag, now > due ? now - due : 0);
	}
	return request_start(c, due);
}

/*
 * Open loop: start what is due by now, then arm the timer for the next
 * slot before the deadline, or for the deadline. A slot whose connection is busy is left to
 * lg_request_done(). A completion may already have started a slot's
 * request before the slot was looked at (both in one batch of CQEs); its
 * connection's next request is then not due yet, and the slot is done.
 */
static void pace(struct lg_worker *w, uint64_t now)
{
	struct io_uring_sqe *sqe;
	uint64_t due;

	if (w->nconns == 0)
		return;
	for (;;) {
		struct lg_conn *c = &w->conns[w->slot % w->nconns];
		int ret;

		due = slot_due(w, w->slot);
		if (due > now || due >= w->deadline_ns)
			break;
		w->slot++;
		if (w->record)
			w->sched++;
		if (c->state != LG_CONN_READY || due_of(w, c) > now)
			continue;
		ret = open_start(c, due_of(w, c), now, false);
		if (ret < 0)
			conn_fail(c, ret, "request");
	}
	if (w->timer_armed || w->o->busy_poll)
		return;
	/* After the last slot, wake at the deadline to end the phase. */
	if (due > w->deadline_ns)
		due = w->deadline_ns;
	w->timer_ts.tv_sec = (long long)(due / 1000000000ull);
	w->timer_ts.tv_nsec = (long long)(due % 1000000000ull);
	sqe = get_sqe(w);
	io_uring_prep_timeout(sqe, &w->timer_ts, 0, IORING_TIMEOUT_ABS);
	io_uring_sqe_set_data64(sqe, OP_TIMER);
	w->timer_armed = true;
}

void lg_conn_ready(struct lg_conn *c)
{
	struct lg_worker *w = c->w;
	int ret;

	if (c->state == LG_CONN_OPENING)
		w->opening--;
	c->state = LG_CONN_READY;
	w->ready++;
	if (w->phase != LG_PHASE_RUN || w->o->mode->request == NULL ||
	    w->o->rate > 0)
		return;
	ret = request_start(c, lg_now_ns());
	if (ret < 0)
		conn_fail(c, ret, "request");
}

void lg_request_error(struct lg_conn *c)
{
	if (c->w->record)
		c->w->errors++;
}

void lg_request_bytes(struct lg_conn *c, uint64_t n)
{
	if (c->w->record)
		c->w->data_bytes += n;
}

int lg_request_done(struct lg_conn *c)
{
	struct lg_worker *w = c->w;
	uint64_t now = lg_now_ns();

	if (w->record) {
		lg_hist_add(&w->hist, now - c->t_start);
		w->requests++;
	}
	c->state = LG_CONN_READY;
	w->busy--;
	if (w->phase != LG_PHASE_RUN)
		return 0;
	if (w->o->rate > 0) {
		uint64_t due = due_of(w, c);

		/* Overdue while this one ran: start it now, from its due
		 * time. Otherwise its slot will. */
		if (due > now || due >= w->deadline_ns)
			return 0;
		return open_start(c, due, now, true);
	}
	return request_start(c, now);
}

/*
 * Open conns[next_connect]: a socket with TCP_NODELAY (each message is
 * one write; Nagle would only add delay), bound to its source address if
 * there are several, moved to its slot if direct, then an async connect.
 */
/* Set up a new socket fd for c: options, source address. -errno. */
static int sock_setup(const struct lg_opts *o, const struct lg_conn *c, int fd)
{
	int one = 1;

	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		return -errno;
	if (o->src_addrs > 0) {
		struct sockaddr_in src = {.sin_family = AF_INET};
		uint32_t base = ntohl(o->src_base.s_addr);

		src.sin_addr.s_addr = htonl(base + c->index % o->src_addrs);
		/* The port is chosen at connect(), per 4-tuple. */
		if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
			       sizeof(one)) < 0 ||
		    bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0)
			return -errno;
	}
	if (o->direct) {
		struct linger lin = {.l_onoff = 1, .l_linger = 0};

		if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin)) <
		    0)
			return -errno;
	}
	return 0;
}

static int connect_one(struct lg_worker *w)
{
	const struct lg_opts *o = w->o;
	struct lg_conn *c = &w->conns[w->next_connect];
	struct io_uring_sqe *sqe;
	int fd, ret;

	fd = socket(o->dst.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	ret = sock_setup(o, c, fd);
	if (o->direct) {
		/* Into slot next_connect; the fd goes either way. */
		if (ret == 0)
			ret = io_uring_register_files_update(
				&w->ring, w->next_connect, &fd, 1);
		close(fd);
		fd = ret < 0 ? -1 : (int)w->next_connect;
	}
	c->fd = fd;
	if (ret < 0)
		return ret;
	c->state = LG_CONN_CONNECTING;
	w->connecting++;
	w->next_connect++;
	sqe = get_sqe(w);
	io_uring_prep_connect(sqe, c->fd, (const struct sockaddr *)&o->dst,
			      o->dst_len);
	set_file(sqe, c);
	set_data(sqe, c, OP_CONNECT);
	return 0;
}

static void connect_more(struct lg_worker *w)
{
	while (w->next_connect < w->nconns &&
	       w->connecting + w->opening < w->o->window) {
		struct lg_conn *c = &w->conns[w->next_connect];
		int ret = connect_one(w);

		if (ret < 0) {
			/* Counted as one that failed to connect. */
			if (c->state != LG_CONN_CONNECTING) {
				c->state = LG_CONN_CONNECTING;
				w->connecting++;
				w->next_connect++;
			}
			conn_fail(c, ret, "socket");
		}
	}
}

static void on_connect(struct lg_conn *c, int res)
{
	const struct lg_mode *m = c->w->o->mode;
	int ret;

	if (res < 0) {
		conn_fail(c, res, "connect");
		return;
	}
	c->w->connecting--;
	c->w->opening++;
	c->state = LG_CONN_OPENING;
	arm_recv(c);
	if (m->connected == NULL) {
		lg_conn_ready(c);
		return;
	}
	ret = m->connected(c);
	if (ret < 0)
		conn_fail(c, ret, "session open");
}

static void on_send(struct lg_conn *c, int res)
{
	const struct lg_mode *m = c->w->o->mode;
	struct io_uring_sqe *sqe;
	int ret = 0;

	c->send_busy = false;
	if (res <= 0) {
		conn_fail(c, res == 0 ? -EPIPE : res, "send");
		return;
	}
	c->soff += (size_t)res;
	if (c->soff < c->slen) {
		c->send_busy = true;
		sqe = get_sqe(c->w);
		io_uring_prep_send(sqe, c->fd, c->sbuf + c->soff,
				   c->slen - c->soff, MSG_NOSIGNAL);
		set_file(sqe, c);
		set_data(sqe, c, OP_SEND);
		return;
	}
	if (m->sent != NULL)
		ret = m->sent(c);
	if (ret < 0)
		conn_fail(c, ret, "after send");
}

static void on_recv(struct lg_conn *c, int res, unsigned flags)
{
	struct lg_worker *w = c->w;
	int ret;

	if ((flags & IORING_CQE_F_MORE) == 0)
		c->recv_armed = false;
	if (res == -ENOBUFS) {
		w->enobufs++;
	} else if (res <= 0) {
		conn_fail(c, res == 0 ? -ECONNRESET : res, "recv");
		return;
	} else {
		const unsigned char *data =
			w->bufs + (size_t)(flags >> IORING_CQE_BUFFER_SHIFT) *
					  w->buf_size;

		ret = w->o->mode->received(c, data, (size_t)res);
		if (ret < 0) {
			conn_fail(c, ret, "after recv");
			return;
		}
	}
	if (!c->recv_armed && c->state != LG_CONN_DEAD)
		arm_recv(c);
}

static void dispatch(struct lg_worker *w, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	struct lg_conn *c = (struct lg_conn *)(uintptr_t)(ud & ~(uint64_t)3);

	if (ud == OP_TIMER) {
		w->timer_armed = false; /* -ETIME: the deadline came */
		return;
	}
	if (c != NULL && c->state != LG_CONN_DEAD) {
		switch (ud & OP_MASK) {
		case OP_CONNECT:
			on_connect(c, cqe->res);
			break;
		case OP_SEND:
			on_send(c, cqe->res);
			break;
		case OP_RECV:
			on_recv(c, cqe->res, cqe->flags);
			break;
		default:
			break;
		}
	}
	/* Even a dead connection's chunk must give its buffer back. */
	if ((cqe->flags & IORING_CQE_F_BUFFER) != 0)
		recycle_buf(w, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
}

static unsigned pow2_at_least(unsigned v)
{
	unsigned p = 1;

	while (p < v && p < LG_CQ_MAX)
		p <<= 1;
	return p;
}

static int ring_init(struct lg_worker *w)
{
	/* Every connection may have a send and a recv in flight. */
	unsigned cq = pow2_at_least(2 * w->nconns + w->o->window);
	static const unsigned flag_sets[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int ret = -EINVAL;

	if (cq < 2 * LG_SQ_ENTRIES)
		cq = 2 * LG_SQ_ENTRIES;
	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		struct io_uring_params p = {
			.flags = flag_sets[i] | IORING_SETUP_CQSIZE |
				 IORING_SETUP_SUBMIT_ALL,
			.cq_entries = cq,
		};

		ret = io_uring_queue_init_params(LG_SQ_ENTRIES, &w->ring, &p);
		if (ret == 0)
			return 0;
	}
	return ret;
}

/*
 * Buffers: as many as connections (each may have one chunk waiting in a
 * batch), a power of two, within the ring's limit and LG_BUFS_BYTES; of
 * the message size rounded up to a power of two, from 2 KiB to 64 KiB.
 */
static int bufs_init(struct lg_worker *w)
{
	struct io_uring_buf_reg reg = {.bgid = LG_BUF_GROUP};
	size_t size = w->o->size;
	int ret;

	w->buf_size = 2048;
	while (w->buf_size < size && w->buf_size < 65536)
		w->buf_size <<= 1;
	w->nbufs = pow2_at_least(w->nconns + 64);
	if (w->nbufs > LG_BUFS_MAX)
		w->nbufs = LG_BUFS_MAX;
	while (w->nbufs > 64 && (size_t)w->nbufs * w->buf_size > LG_BUFS_BYTES)
		w->nbufs >>= 1;
	w->br = mmap(NULL, w->nbufs * sizeof(struct io_uring_buf),
		     PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		     0);
	if (w->br == MAP_FAILED) {
		w->br = NULL;
		return -ENOMEM;
	}
	w->bufs = malloc((size_t)w->nbufs * w->buf_size);
	if (w->bufs == NULL)
		return -ENOMEM;
	reg.ring_addr = (uint64_t)(uintptr_t)w->br;
	reg.ring_entries = w->nbufs;
	ret = io_uring_register_buf_ring(&w->ring, &reg, 0);
	if (ret < 0)
		return ret;
	io_uring_buf_ring_init(w->br);
	for (unsigned i = 0; i < w->nbufs; i++)
		io_uring_buf_ring_add(w->br, w->bufs + (size_t)i * w->buf_size,
				      w->buf_size, (unsigned short)i,
				      io_uring_buf_ring_mask(w->nbufs), (int)i);
	io_uring_buf_ring_advance(w->br, (int)w->nbufs);
	return 0;
}

/*
 * One loop turn: submit, wait up to a tick (or, polling, not at all),
 * handle what completed.
 */
static int turn(struct lg_worker *w, bool poll)
{
	struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = LG_TICK_NS};
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int ret;

	if (poll)
		ret = io_uring_submit_and_get_events(&w->ring);
	else
		ret = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts,
						       NULL);
	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY)
		return ret;
	io_uring_for_each_cqe(&w->ring, head, cqe)
	{
		dispatch(w, cqe);
		n++;
	}
	io_uring_cq_advance(&w->ring, n);
	return 0;
}

int lg_worker_connect(struct lg_worker *w)
{
	int err = ring_init(w);

	if (err < 0) {
		w->first_err_what = "io_uring_queue_init";
		return err;
	}
	w->ring_live = true;
	err = bufs_init(w);
	if (err < 0) {
		w->first_err_what = "provided buffers";
		return err;
	}
	if (w->o->direct && w->nconns > 0) {
		err = io_uring_register_files_sparse(&w->ring, w->nconns);
		if (err < 0) {
			w->first_err_what = "direct descriptor table";
			return err;
		}
	}
	w->phase = LG_PHASE_CONNECT;
	connect_more(w);
	while (w->ready + w->dead < w->nconns) {
		int ret = turn(w, false);

		if (ret < 0)
			return ret;
		connect_more(w);
	}
	return w->dead == 0 ? 0 : w->first_err;
}

/*
 * Run requests for secs; then stop starting new ones and wait for the
 * running ones to finish, so that nothing is in flight afterwards.
 */
int lg_worker_run(struct lg_worker *w, double secs, bool record)
{
	uint64_t now = lg_now_ns();

	w->deadline_ns = now + (uint64_t)(secs * 1e9);
	w->record = record;
	w->phase = LG_PHASE_RUN;
	if (w->o->rate > 0) {
		/* A new schedule from now; a timer left armed from the last
		 * phase has expired and only wakes the loop once. */
		w->sched_t0 = now;
		w->period_ns = 1e9 / w->o->rate;
		w->slot = 0;
		for (unsigned i = 0; i < w->nconns; i++)
			w->conns[i].next_j = 0;
		pace(w, now);
	}
	for (unsigned i = 0; i < w->nconns && w->o->rate <= 0; i++) {
		struct lg_conn *c = &w->conns[i];

		if (c->state == LG_CONN_READY && w->o->mode->request != NULL) {
			int ret = request_start(c, now);

			if (ret < 0)
				conn_fail(c, ret, "request");
		}
	}
	while (w->phase == LG_PHASE_RUN || w->busy > 0) {
		int ret = turn(w, w->o->busy_poll);

		if (ret < 0)
			return ret;
		now = lg_now_ns();
		if (w->phase == LG_PHASE_RUN && now >= w->deadline_ns)
			w->phase = LG_PHASE_DRAIN;
		if (w->phase == LG_PHASE_RUN && w->o->rate > 0)
			pace(w, now);
	}
	w->phase = LG_PHASE_HOLD;
	w->record = false;
	return 0;
}

/* Keep the connections open for secs, noticing any that close. */
int lg_worker_hold(struct lg_worker *w, double secs)
{
	w->deadline_ns = lg_now_ns() + (uint64_t)(secs * 1e9);
	w->phase = LG_PHASE_HOLD;
	while (lg_now_ns() < w->deadline_ns) {
		int ret = turn(w, false);

		if (ret < 0)
			return ret;
	}
	return 0;
}

int lg_worker_init(struct lg_worker *w, const struct lg_opts *o, unsigned id,
		   unsigned first, unsigned n)
{
	int ret;

	memset(w, 0, sizeof(*w));
	w->o = o;
	w->id = id;
	w->nconns = n;
	w->conns = calloc(n > 0 ? n : 1, sizeof(*w->conns));
	if (w->conns == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		struct lg_conn *c = &w->conns[i];

		c->w = w;
		c->fd = -1;
		c->index = first + i;
		if (o->mode->conn_init != NULL) {
			ret = o->mode->conn_init(c);
			if (ret < 0)
				goto out_conns;
		}
	}
	return 0;
out_conns:
	for (unsigned i = 0; i < n; i++)
		if (o->mode->conn_fini != NULL)
			o->mode->conn_fini(&w->conns[i]);
	free(w->conns);
	w->conns = NULL;
	return ret;
}

/*
 * Tear down: the ring first, which cancels what is still in flight and so
 * releases the buffers (and closes direct descriptors), then the sockets.
 * They close with an RST (SO_LINGER 0): nothing is in flight by now, and
 * it leaves no TIME_WAIT to use up source ports over many runs.
 */
void lg_worker_fini(struct lg_worker *w)
{
	struct linger lin = {.l_onoff = 1, .l_linger = 0};

	if (w->conns == NULL)
		return;
	if (w->ring_live)
		io_uring_queue_exit(&w->ring);
	w->ring_live = false;
	if (w->br != NULL)
		munmap(w->br, w->nbufs * sizeof(struct io_uring_buf));
	w->br = NULL;
	free(w->bufs);
	w->bufs = NULL;
	for (unsigned i = 0; i < w->nconns; i++) {
		struct lg_conn *c = &w->conns[i];

		if (c->fd >= 0 && !w->o->direct) {
			(void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lin,
					 sizeof(lin));
			close(c->fd);
		}
		if (w->o->mode->conn_fini != NULL)
			w->o->mode->conn_fini(c);
	}
	free(w->conns);
	w->conns = NULL;
}
