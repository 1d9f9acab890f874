/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/flush: the flush engine, gathered sends and the output queue. */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/*
 * Blocking flushes send the queue, the buffer and (for a large prot_write)
 * the caller's own bytes in one gathered sendmsg/writev, continued after
 * short sends. Non-blocking streams never park: what they flush is copied
 * to an in-memory queue of blocks, bounded by q_limit, which one
 * background send op drains. The op and its iovecs live in a separate
 * record so that prot_free never waits: if the kernel still owns queued
 * blocks, the record takes them and frees them when the cancel completes.
 */
#define QBLOCK_SIZE 65536
#define SND_IOV	    64

#define WRITE_TIMED_OUT "write timed out"

struct prot__sender {
	struct ur_op op;
	struct prot__stream *ps;      /* NULL once orphaned by prot_free */
	struct prot__qblock *orphans; /* blocks the kernel may still read */
	struct ur_waiter *waiter;     /* a forced flush waiting for op */
	bool busy;
	bool polling; /* op is a POLLOUT wait (O_NONBLOCK fd), not a send */
	struct iovec iov[SND_IOV];
	struct msghdr msg;

	/*
	 * Write timeout: a blocking send's own op (so the deadline can cancel
	 * it) and one lazy deadline for both ops. Armed only while an op
	 * waits for the peer; pushing it later costs no SQE.
	 */
	struct ur_op bop;
	struct ur_deadline wdl;
	bool wdl_on;	/* wdl initialised */
	bool timed_out; /* the deadline cancelled op or bop */

	/*
	 * prot__flush_begin(): bop sends begun_len wire bytes (the buffer's
	 * first begun_plain bytes, or their encoding in enc) until
	 * prot__flush_end().
	 */
	size_t begun_len, begun_plain;
};

/*
 * enc counts too: a large write's whole chunks go to a layer straight
 * from the caller (prot__write_big), so while their records are sent
 * the buffer may be empty; enc holds them until the send has finished.
 */
bool prot__has_output(const struct protstream *s)
{
	const struct prot__stream *ps = prot__cof(s);

	return s->write &&
	       (s->ptr != s->buf || ps->q_bytes > 0 || ps->enc.len > 0);
}

size_t prot_queued(const struct protstream *s)
{
	return s->write ? prot__cof(s)->q_bytes : 0;
}

bool prot__directio;

void prot_setdirectio(int on)
{
	prot__directio = on != 0;
}

int prot_setwritetimeout_ms(struct protstream *s, unsigned ms)
{
	if (!s->write) {
		errno = EINVAL;
		return EOF;
	}
	prot__of(s)->wtimeout_ms = ms;
	return 0;
}

int prot_setwritetimeout(struct protstream *s, int seconds)
{
	if (seconds < 0 || seconds > INT_MAX / 1000) {
		errno = EINVAL;
		return EOF;
	}
	return prot_setwritetimeout_ms(s, (unsigned)seconds * 1000U);
}

int prot_setqueuelimit(struct protstream *s, size_t bytes)
{
	if (!s->write || bytes < PROT_BUFSIZE) {
		errno = EINVAL;
		return EOF;
	}
	prot__of(s)->q_limit = bytes;
	return 0;
}

static void qblocks_free(struct prot__qblock *b)
{
	while (b != NULL) {
		struct prot__qblock *next = b->next;

		free(b);
		b = next;
	}
}

/*
 * Drop the queue. While the send op is in flight the kernel may still
 * read its blocks: cancel it instead, and sender_done() clears the queue
 * once the op has completed (the stream has an error by then).
 */
static void queue_clear(struct prot__stream *ps)
{
	if (ps->snd != NULL && ps->snd->busy) {
		prot__cancel(&ps->snd->op);
		return;
	}
	qblocks_free(ps->q_head);
	ps->q_head = NULL;
	ps->q_tail = NULL;
	ps->q_bytes = 0;
}

/* Copy n bytes to the queue's tail. */
static int queue_append(struct prot__stream *ps, const void *p, size_t n)
{
	struct prot__qblock *b = ps->q_tail;
	size_t k;

	while (n > 0) {
		if (b == NULL || b->len == b->cap) {
			size_t cap = n > QBLOCK_SIZE ? n : QBLOCK_SIZE;

			b = malloc(sizeof(*b) + cap);
			if (b == NULL)
				return -ENOMEM;
			b->next = NULL;
			b->off = 0;
			b->len = 0;
			b->cap = cap;
			if (ps->q_tail != NULL)
				ps->q_tail->next = b;
			else
				ps->q_head = b;
			ps->q_tail = b;
		}
		k = b->cap - b->len < n ? b->cap - b->len : n;
		memcpy(b->data + b->len, p, k);
		b->len += k;
		ps->q_bytes += k;
		p = (const unsigned char *)p + k;
		n -= k;
	}
	return 0;
}

/* n bytes of the queue reached the kernel: free the finished blocks. */
static void queue_consume(struct prot__stream *ps, size_t n)
{
	while (n > 0 && ps->q_head != NULL) {
		struct prot__qblock *b = ps->q_head;
		size_t k = b->len - b->off < n ? b->len - b->off : n;

		b->off += k;
		ps->q_bytes -= k;
		n -= k;
		if (b->off < b->len)
			break;
		ps->q_head = b->next;
		if (ps->q_head == NULL)
			ps->q_tail = NULL;
		free(b);
	}
}

static int queue_iov(const struct prot__stream *ps, struct iovec *iov, int max)
{
	int n = 0;

	for (struct prot__qblock *b = ps->q_head; b != NULL && n < max;
	     b = b->next) {
		if (b->off == b->len)
			continue;
		iov[n].iov_base = b->data + b->off;
		iov[n].iov_len = b->len - b->off;
		n++;
	}
	return n;
}

static struct prot__sender *sender_get(struct prot__stream *ps)
{
	if (ps->snd == NULL) {
		ps->snd = calloc(1, sizeof(*ps->snd));
		if (ps->snd != NULL)
			ps->snd->ps = ps;
	}
	return ps->snd;
}

static int send_start(struct prot__stream *ps, struct ur_loop *loop,
		      struct ur_op *op, struct iovec *iov, int iovcnt,
		      struct msghdr *msg)
{
	if (ps->kind == PROT__K_SOCKET) {
		memset(msg, 0, sizeof(*msg));
		msg->msg_iov = iov;
		msg->msg_iovlen = (size_t)iovcnt;
		return ur_sendmsg_start(loop, op, ps->pub.fd, msg,
					MSG_NOSIGNAL);
	}
	return ur_writev_start(loop, op, ps->pub.fd, iov, iovcnt, -1);
}

static void sender_done(struct ur_op *op);

/* The write deadline passed: cancel whichever send still waits. */
static void wdl_fired(struct ur_timer *t, void *arg)
{
	struct prot__sender *snd = arg;

	(void)t;
	if (ur_op_is_busy(&snd->bop)) {
		snd->timed_out = true;
		prot__cancel(&snd->bop);
	}
	if (snd->busy) {
		snd->timed_out = true;
		prot__cancel(&snd->op);
	}
}

/* An op that waits for the peer starts now: (re)start the window. */
static int wdl_arm(struct prot__stream *ps, struct ur_loop *loop)
{
	struct prot__sender *snd = ps->snd;

	if (ps->wtimeout_ms == 0)
		return 0;
	if (!snd->wdl_on) {
		ur_deadline_init(&snd->wdl, loop, wdl_fired, snd);
		snd->wdl_on = true;
	}
	snd->timed_out = false;
	return ur_deadline_set(&snd->wdl,
			       ur_now_ns(CLOCK_MONOTONIC) +
				       (uint64_t)ps->wtimeout_ms * 1000000ULL);
}

/* Nothing waits for the peer any more. */
static void wdl_clear(struct prot__sender *snd)
{
	if (snd->wdl_on) {
		int ret = ur_deadline_set(&snd->wdl, 0);

		(void)ret; /* clearing takes no SQE: it cannot fail */
	}
}

/* Start the background send of the queue head (if idle and non-empty). */
static void sender_kick(struct prot__stream *ps)
{
	struct prot__sender *snd = ps->snd;
	struct ur_loop *loop;
	int n, ret;

	if (snd == NULL || snd->busy)
		return;
	if (ps->q_bytes == 0 || ps->pub.error != NULL) {
		wdl_clear(snd);
		return;
	}
	ret = ur_loop_get(&loop);
	if (ret < 0)
		goto fail;
	/* Armed first: once the send is in flight, failing here would free
	 * queue blocks the kernel may be reading. */
	ret = wdl_arm(ps, loop);
	if (ret < 0)
		goto fail;
	n = queue_iov(ps, snd->iov, SND_IOV);
	ur_op_init(&snd->op, sender_done, snd);
	snd->polling = false;
	ret = send_start(ps, loop, &snd->op, snd->iov, n, &snd->msg);
	if (ret < 0)
		goto fail;
	snd->busy = true;
	return;
fail:
	(void)prot__fail(&ps->pub, ret, NULL);
	queue_clear(ps);
}

/* Wait for POLLOUT on an fd the application made O_NONBLOCK. */
static void sender_poll(struct prot__stream *ps)
{
	struct prot__sender *snd = ps->snd;
	struct ur_loop *loop;
	int ret = ur_loop_get(&loop);

	if (ret == 0) {
		ur_op_init(&snd->op, sender_done, snd);
		ret = ur_poll_start(loop, &snd->op, ps->pub.fd, POLLOUT);
	}
	if (ret == 0) {
		snd->polling = true;
		snd->busy = true;
		ret = wdl_arm(ps, loop);
	}
	if (ret < 0) {
		(void)prot__fail(&ps->pub, ret, NULL);
		queue_clear(ps);
	}
}

static void sender_done(struct ur_op *op)
{
	struct prot__sender *snd = op->data;
	struct prot__stream *ps = snd->ps;
	int res = op->res;

	snd->busy = false;
	if (ps == NULL) {
		/* The stream is gone; the kernel has let go of the blocks. */
		qblocks_free(snd->orphans);
		free(snd);
		return;
	}
	if (res == -ECANCELED && snd->timed_out)
		(void)prot__fail(&ps->pub, -ETIMEDOUT, WRITE_TIMED_OUT);
	if (snd->polling)
		res = res < 0 && res != -EINTR ? res : 0;
	if (res == -EAGAIN && ps->pub.error == NULL) {
		sender_poll(ps);
		return;
	}
	if (res < 0 && res != -EINTR && res != -ECANCELED)
		(void)prot__fail(&ps->pub, res, NULL);
	else if (res > 0)
		queue_consume(ps, (size_t)res);
	if (ps->pub.error != NULL)
		queue_clear(ps);
	if (snd->waiter != NULL) {
		/* A forced flush takes over: it gathers queue and buffer. */
		ur_waiter_wake(snd->waiter);
		return;
	}
	sender_kick(ps);
}

/* Let the background send finish (a forced flush, spec 2.7.2 step 5). */
static int sender_wait(struct prot__stream *ps)
{
	struct prot__sender *snd = ps->snd;
	struct ur_waiter w;
	struct ur_loop *loop;
	int ret;

	if (snd == NULL || !snd->busy)
		return 0;
	ret = ur_loop_get(&loop);
	if (ret < 0)
		return ret;
	ur_waiter_init(&w, loop);
	while (snd->busy) {
		snd->waiter = &w;
		ret = ur_waiter_wait(&w);
		snd->waiter = NULL;
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* The caller's own bytes, sent after the queue without a copy. */
struct piece {
	const unsigned char *p;
	size_t n;
};

/* Gather the queue's blocks, then the pieces, into iov. */
static int gather(const struct prot__stream *ps, struct iovec *iov,
		  const struct piece *pc)
{
	int n = queue_iov(ps, iov, SND_IOV - 2);

	if (n == SND_IOV - 2 && ps->q_bytes > 0)
		return n; /* more blocks than fit: the pieces go next time */
	for (int i = 0; i < 2; i++) {
		if (pc[i].n > 0) {
			iov[n].iov_base = (void *)(uintptr_t)pc[i].p;
			iov[n++].iov_len = pc[i].n;
		}
	}
	return n;
}

/* w bytes went out: the queue first, then the pieces in order. */
static void sent(struct prot__stream *ps, struct piece *pc, size_t w)
{
	size_t k = w < ps->q_bytes ? w : ps->q_bytes;

	queue_consume(ps, k);
	w -= k;
	for (int i = 0; i < 2 && w > 0; i++) {
		k = w < pc[i].n ? w : pc[i].n;
		pc[i].p += k;
		pc[i].n -= k;
		w -= k;
	}
}

/*
 * A speculative send (uring notes, pitfall 29; Seastar does the same): a
 * socket with room in its send buffer takes the bytes at once, and a ring
 * send would cost a whole io_uring_enter to learn that. One non-blocking
 * send(2) or sendmsg(2) goes first; what it leaves (EAGAIN, a short send,
 * an error) goes through the ring as before, which reports any error
 * itself. A direct descriptor has no fd for the syscall.
 */
static void send_now(struct prot__stream *ps, struct piece *pc)
{
	struct prot__sender *snd = ps->snd;
	struct ur_fiber *f = ur_fiber_self();
	ssize_t w;
	int n;

	/* A cancelled fiber's ring send fails at once: keep that contract. */
	if (!prot__directio || ps->kind != PROT__K_SOCKET ||
	    UR_IS_FIXED(ps->pub.fd) || (f != NULL && ur_fiber_is_cancelled(f)))
		return;
	n = gather(ps, snd->iov, pc);
	if (n == 0)
		return;
	if (n == 1) { /* send(2) copies no msghdr in: about 90 ns less */
		w = send(ps->pub.fd, snd->iov[0].iov_base, snd->iov[0].iov_len,
			 MSG_NOSIGNAL | MSG_DONTWAIT);
	} else {
		memset(&snd->msg, 0, sizeof(snd->msg));
		snd->msg.msg_iov = snd->iov;
		snd->msg.msg_iovlen = (size_t)n;
		w = sendmsg(ps->pub.fd, &snd->msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	if (w > 0)
		sent(ps, pc, (size_t)w);
}

/*
 * A memory device (prot_new's mem_dev: /dev/null, /dev/zero, /dev/full,
 * /dev/urandom) completes every write at once and never sleeps, so a
 * ring write of one buys nothing and costs an io_uring_enter more than
 * writev(2) (bench-prot's write-null: a 4 KiB flush per 256 small
 * writes). Whatever writev(2) takes counts as sent; what it leaves (an
 * error such as /dev/full's ENOSPC, a short write, EINTR) goes through
 * the ring as before, which reports it itself: the results are the
 * ring's. Ttys and other devices, which can wait, never come here.
 */
static void write_dev(struct prot__stream *ps, struct piece *pc)
{
	struct prot__sender *snd = ps->snd;
	struct ur_fiber *f = ur_fiber_self();
	ssize_t w;
	int n;

	/* A cancelled fiber's ring write fails at once: keep that contract. */
	if (!ps->mem_dev || (f != NULL && ur_fiber_is_cancelled(f)))
		return;
	n = gather(ps, snd->iov, pc);
	if (n == 0)
		return;
	w = writev(ps->pub.fd, snd->iov, n);
	if (w > 0)
		sent(ps, pc, (size_t)w);
}

/*
 * One blocking send (or, op_poll, POLLOUT wait) of snd->iov[0..n) under
 * the write timeout: the op is the sender's own, so the deadline can
 * cancel it, and without MSG_WAITALL, so that every byte the peer takes
 * restarts the window.
 */
static ssize_t timed_send(struct prot__stream *ps, int n, bool op_poll)
{
	struct prot__sender *snd = ps->snd;
	struct ur_loop *loop;
	int fd = ps->pub.fd;
	int ret = ur_loop_get(&loop);

	if (ret < 0)
		return ret;
	ur_op_init(&snd->bop, NULL, NULL);
	if (op_poll)
		ret = ur_poll_start(loop, &snd->bop, fd, POLLOUT);
	else if (ps->kind == PROT__K_SOCKET)
		ret = ur_sendmsg_start(loop, &snd->bop, fd, &snd->msg,
				       MSG_NOSIGNAL);
	else
		ret = ur_writev_start(loop, &snd->bop, fd, snd->iov, n, -1);
	if (ret < 0)
		return ret;
	ret = wdl_arm(ps, loop);
	if (ret < 0) {
		prot__cancel_wait(&snd->bop);
		return ret;
	}
	ret = ur_op_wait(&snd->bop);
	wdl_clear(snd);
	if (ret == -ECANCELED && snd->timed_out)
		return -ETIMEDOUT;
	return ret;
}

/*
 * Blocking gathered send of the queue plus two more pieces, continued
 * after short sends. MSG_WAITALL lets the kernel continue them itself.
 */
static int send_all(struct prot__stream *ps, const void *p1, size_t n1,
		    const void *p2, size_t n2)
{
	struct prot__sender *snd = sender_get(ps);
	struct piece pc[2] = {{p1, n1}, {p2, n2}};
	bool timed = ps->wtimeout_ms > 0;
	ssize_t w;
	int n;

	if (snd == NULL)
		return -ENOMEM;
	send_now(ps, pc);
	write_dev(ps, pc);
	while ((n = gather(ps, snd->iov, pc)) > 0) {
		if (ps->kind == PROT__K_SOCKET) {
			memset(&snd->msg, 0, sizeof(snd->msg));
			snd->msg.msg_iov = snd->iov;
			snd->msg.msg_iovlen = (size_t)n;
		}
		if (timed)
			w = timed_send(ps, n, false);
		else if (ps->kind == PROT__K_SOCKET)
			w = ur_sendmsg(ps->pub.fd, &snd->msg,
				       MSG_NOSIGNAL | MSG_WAITALL);
		else
			w = ur_writev(ps->pub.fd, snd->iov, n, -1);
		if (w == -EAGAIN) { /* the application made the fd O_NONBLOCK */
			int r = timed ? (int)timed_send(ps, 0, true)
				      : ur_poll(ps->pub.fd, POLLOUT);

			if (r < 0)
				return r;
			continue;
		}
		if (w == -EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? (int)w : -EIO;
		sent(ps, pc, (size_t)w);
	}
	return 0;
}

/* Telemetry of one flush: one record per maxplain chunk, as Cyrus. */
static void log_out(struct protstream *s, const unsigned char *p, size_t n,
		    const unsigned char *x, size_t xn)
{
	size_t chunk = s->maxplain > 0 ? (size_t)s->maxplain : PROT_BUFSIZE;

	if (s->logfd == PROT_NO_FD)
		return;
	if (n > 0)
		prot__log(s, '>', p, n);
	for (size_t off = 0; off < xn; off += chunk)
		prot__log(s, '>', x + off, xn - off < chunk ? xn - off : chunk);
}

/* Run one plaintext chunk through the write layers into ps->enc. */
static int encode(struct prot__stream *ps, const unsigned char *p, size_t n,
		  const char **why)
{
	struct buf tmp[2] = {{0}, {0}};
	int ret = 0, i = 0;

	for (struct prot__layer *l = ps->wlayers; l != NULL; l = l->next) {
		struct buf *out = l->next == NULL ? &ps->enc : &tmp[i];

		if (l->next != NULL)
			out->len = 0;
		ret = l->ops->encode(l, p, n, out);
		if (ret < 0) {
			*why = l->errtext;
			break;
		}
		p = (const unsigned char *)out->s;
		n = out->len;
		i ^= 1;
	}
	prot__buf_release(&tmp[0]);
	prot__buf_release(&tmp[1]);
	return ret;
}

/* An empty buffer; a released stream (no buffer) keeps none. */
static void buf_reset(struct protstream *s)
{
	s->ptr = s->buf;
	s->cnt = s->buf != NULL ? (unsigned)s->maxplain : 0;
}

/*
 * The encoded output is sent (or copied to the queue) by the time a flush
 * returns: give the scratch back, so that an idle connection holds none.
 * A bulk write grows it to 256 KiB of records; malloc serves the next
 * flush from its free lists, a cost far below the encoding's.
 */
static void enc_release(struct prot__stream *ps)
{
	prot__buf_release(&ps->enc);
}

static int flush_fail(struct protstream *s, int err, const char *text)
{
	buf_reset(s);
	queue_clear(prot__of(s));
	enc_release(prot__of(s));
	return prot__fail(s, err, text);
}

/*
 * Non-blocking flush: copy to the queue, within its bound, and let the
 * background send take it; never parks. Wire order is queue order.
 */
static int queue_out(struct protstream *s, const unsigned char *p, size_t n,
		     const unsigned char *x, size_t xn)
{
	struct prot__stream *ps = prot__of(s);

	if (ps->q_bytes + n + xn > ps->q_limit)
		return flush_fail(s, -ENOBUFS, "output queue full");
	if (sender_get(ps) == NULL || queue_append(ps, p, n) < 0 ||
	    queue_append(ps, x, xn) < 0)
		return flush_fail(s, -ENOMEM, NULL);
	buf_reset(s);
	sender_kick(ps);
	return s->error != NULL ? EOF : 0;
}

/*
 * The flush engine. x/xn: whole maxplain chunks of a large prot_write to
 * send after the buffer without copying (without write layers) or to
 * encode in the first layer's enc_chunk pieces.
 */
static int flush_out(struct protstream *s, int force, const unsigned char *x,
		     size_t xn)
{
	struct prot__stream *ps = prot__of(s);
	const unsigned char *p;
	size_t n;
	uint64_t t0;
	int ret;

	if (prot__flush_end(s) == EOF)
		return EOF;
	p = s->buf;
	n = (size_t)(s->ptr - s->buf);
	if (s->eof || s->error != NULL) {
		s->ptr = s->buf;
		/* as Cyrus: the next putc flushes and fails */
		s->cnt = s->buf != NULL ? 1 : 0;
		return EOF;
	}
	if (ps->kind == PROT__K_BUF) {
		if (prot__buf_append(s->writetobuf, p, n) < 0 ||
		    prot__buf_append(s->writetobuf, x, xn) < 0)
			return flush_fail(s, -ENOMEM, NULL);
		buf_reset(s);
		return 0;
	}
	if (ps->kind == PROT__K_NOFD)
		return flush_fail(s, -EBADF, NULL);
	if (n == 0 && xn == 0 && ps->q_bytes == 0)
		return 0;
	log_out(s, p, n, x, xn);
	if ((n > 0 || xn > 0) && ps->wlayers != NULL) {
		size_t chunk = ps->wlayers->ops->enc_chunk > 0
				       ? ps->wlayers->ops->enc_chunk
				       : (size_t)s->maxplain;
		const char *why = NULL;

		ps->enc.len = 0;
		ret = n > 0 ? encode(ps, p, n, &why) : 0;
		for (size_t off = 0; ret == 0 && off < xn; off += chunk)
			ret = encode(ps, x + off,
				     xn - off < chunk ? xn - off : chunk, &why);
		if (ret < 0)
			return flush_fail(s, ret, why);
		p = (const unsigned char *)ps->enc.s;
		n = ps->enc.len;
		x = NULL;
		xn = 0;
	}
	if (!force && s->dontblock) {
		ret = queue_out(s, p, n, x, xn);
		enc_release(ps);
		return ret;
	}
	t0 = prot__net_start(ps);
	ret = sender_wait(ps);
	/* The background send may have failed meanwhile: its error stands. */
	if (ret == 0 && s->error == NULL)
		ret = send_all(ps, p, n, x, xn);
	prot__net_end(ps, t0);
	enc_release(ps);
	if (ret < 0 || s->error != NULL)
		return flush_fail(s, ret < 0 ? ret : prot__err(s),
				  ret == -ETIMEDOUT ? WRITE_TIMED_OUT : NULL);
	buf_reset(s);
	return 0;
}

/*
 * Flush-on-read (spec 2.3 step 4): the forced flush of the partner just
 * before its read stream waits. The send starts here, marked
 * ur_op_nowake(), and the read's own wait submits it: a send the socket
 * takes at once costs no io_uring_enter of its own (one enter fewer per
 * command than a flush that waits by itself). Nothing else changes: the
 * read completes only after prot__flush_end() has seen every byte go
 * (write, then read, as Cyrus), the bytes stay in the buffer (and enc)
 * meanwhile, so prot__has_output() holds, and whatever flushes, frees or
 * re-layers the stream ends the flush first. Plain socket streams
 * without a write timeout or a queue only; others flush at once.
 * Returns 0 or EOF as prot_flush.
 */
int prot__flush_begin(struct protstream *s)
{
	struct prot__stream *ps = prot__of(s);
	struct prot__sender *snd;
	const unsigned char *p = s->buf;
	size_t n = (size_t)(s->ptr - s->buf);
	struct ur_loop *loop;
	int ret;

	if (ps->kind != PROT__K_SOCKET || ps->wtimeout_ms > 0 ||
	    ps->q_bytes > 0 || prot__directio || n == 0 || s->eof ||
	    s->error != NULL || (ps->snd != NULL && ps->snd->begun_len > 0) ||
	    ur_loop_get(&loop) < 0 || (snd = sender_get(ps)) == NULL ||
	    snd->busy)
		return prot_flush_internal(s, 1);
	log_out(s, p, n, NULL, 0);
	if (ps->wlayers != NULL) {
		const char *why = NULL;

		ps->enc.len = 0;
		ret = encode(ps, p, n, &why);
		if (ret < 0) {
			enc_release(ps);
			return flush_fail(s, ret, why);
		}
		p = (const unsigned char *)ps->enc.s;
	}
	snd->iov[0].iov_base = (void *)(uintptr_t)p;
	snd->iov[0].iov_len = ps->wlayers != NULL ? ps->enc.len : n;
	memset(&snd->msg, 0, sizeof(snd->msg));
	snd->msg.msg_iov = snd->iov;
	snd->msg.msg_iovlen = 1;
	ur_op_init(&snd->bop, NULL, NULL);
	ret = ur_sendmsg_start(loop, &snd->bop, s->fd, &snd->msg,
			       MSG_NOSIGNAL | MSG_WAITALL);
	if (ret < 0) {
		enc_release(ps);
		return flush_fail(s, ret, NULL);
	}
	ur_op_nowake(&snd->bop);
	snd->begun_len = snd->iov[0].iov_len;
	snd->begun_plain = n;
	return 0;
}

/*
 * Finish prot__flush_begin()'s send: wait for it if it still runs (a
 * full socket), send what it left, then drop the sent bytes from the
 * buffer, keeping any written after them. Returns 0 or EOF.
 */
int prot__flush_end(struct protstream *s)
{
	struct prot__stream *ps = prot__of(s);
	struct prot__sender *snd = ps->snd;
	const unsigned char *p;
	size_t len, plain;
	uint64_t t0;
	int ret;

	if (snd == NULL || snd->begun_len == 0)
		return 0;
	len = snd->begun_len;
	plain = snd->begun_plain;
	snd->begun_len = 0;
	p = (const unsigned char *)snd->iov[0].iov_base;
	t0 = prot__net_start(ps);
	ret = ur_op_wait(&snd->bop);
	if (ret >= 0 && (size_t)ret < len) /* cut short: an error is next */
		ret = send_all(ps, p + ret, len - (size_t)ret, NULL, 0);
	else if (ret == -EAGAIN || ret == -EINTR) /* O_NONBLOCK fd */
		ret = send_all(ps, p, len, NULL, 0);
	else if (ret > 0)
		ret = 0;
	prot__net_end(ps, t0);
	enc_release(ps);
	if (ret < 0 || s->error != NULL)
		return flush_fail(s, ret < 0 ? ret : prot__err(s), NULL);
	memmove(s->buf, s->buf + plain, (size_t)(s->ptr - s->buf) - plain);
	s->ptr -= plain;
	s->cnt += (unsigned)plain;
	return 0;
}

int prot_flush_internal(struct protstream *s, int force)
{
	if (!s->write)
		return prot__fatal(s, "prot_flush_internal on a read stream");
	return flush_out(s, force, NULL, 0);
}

int prot_flush(struct protstream *s)
{
	if (!s->write)
		return prot__drain(s);
	return flush_out(s, 1, NULL, 0);
}

int prot__write_big(struct protstream *s, const unsigned char *p, size_t len)
{
	struct prot__stream *ps = prot__of(s);
	/*
	 * An empty buffer of a layered stream is not filled first: the
	 * whole chunks go straight to the layer, in chunks as large as it
	 * takes (TLS: a 16 KiB record each, not a 4 KiB one from the buffer
	 * and the rest after it).
	 */
	size_t k = ps->wlayers != NULL && s->ptr == s->buf ? 0 : s->cnt;
	size_t whole = 0;

	memcpy(s->ptr, p, k);
	s->ptr += k;
	s->cnt -= (unsigned)k;
	p += k;
	len -= k;
	/* Encoded output is held per flush: 64 maxplain chunks at most. */
	do {
		if (s->maxplain > 0)
			whole = len - len % (size_t)s->maxplain;
		if (ps->wlayers != NULL && whole > ((size_t)s->maxplain << 6))
			whole = (size_t)s->maxplain << 6;
		if (flush_out(s, 0, p, whole) == EOF)
			return EOF;
		p += whole;
		len -= whole;
	} while (whole > 0 && len >= (size_t)s->maxplain);
	while (len >= s->cnt) {
		k = s->cnt;
		memcpy(s->ptr, p, k);
		s->ptr += k;
		s->cnt = 0;
		p += k;
		len -= k;
		if (flush_out(s, 0, NULL, 0) == EOF)
			return EOF;
	}
	memcpy(s->ptr, p, len);
	s->ptr += len;
	s->cnt -= (unsigned)len;
	return 0;
}

/*
 * prot_flush on a read stream (spec 2.7.5): read in non-blocking mode
 * until nothing is left, then throw it all away. The ring's MSG_DONTWAIT
 * reads do what Cyrus's fcntl(O_NONBLOCK) did, without touching the fd's
 * flags (which the write stream on the same socket shares).
 */
int prot__drain(struct protstream *s)
{
	int dontblock = s->dontblock;

	s->dontblock = 1;
	while (prot_fill(s) != EOF)
		;
	s->dontblock = dontblock;
	prot__fill_discard(s);
	return 0;
}

void prot__flush_fini(struct protstream *s)
{
	struct prot__stream *ps = prot__of(s);
	struct prot__sender *snd;

	(void)prot__flush_end(s);
	snd = ps->snd;

	ps->snd = NULL;
	if (snd != NULL && snd->wdl_on)
		ur_deadline_fini(&snd->wdl);
	if (snd != NULL && snd->busy) {
		/* Hand the blocks the kernel may read to the op's record. */
		snd->ps = NULL;
		snd->orphans = ps->q_head;
		ps->q_head = NULL;
		prot__cancel(&snd->op);
	} else {
		free(snd);
	}
	queue_clear(ps);
}

/*
 * Parking (prot_release, park.c). What a write stream holds between
 * flushes is all rebuilt on demand: the buffer by prot__wbuf_get() at the
 * next write, the sender record by sender_get() at the next send, the
 * scratch buffers by their next use. So an idle stream can give all of
 * it back as long as no byte is pending: not in the buffer, not in the
 * queue, not in a send the kernel still owns (the background send, a
 * flush-on-read send begun), nor in a blocking send of another fiber.
 */
int prot__flush_release(struct protstream *s)
{
	struct prot__stream *ps = prot__of(s);
	struct prot__sender *snd = ps->snd;

	if (prot__has_output(s) ||
	    (snd != NULL &&
	     (snd->busy || snd->begun_len > 0 || ur_op_is_busy(&snd->bop))))
		return -EBUSY;
	if (snd != NULL) {
		if (snd->wdl_on)
			ur_deadline_fini(&snd->wdl); /* stops its timer */
		free(snd);
		ps->snd = NULL;
	}
	queue_clear(ps); /* empty: frees no block, resets the tail */
	free(s->buf);
	s->buf = s->ptr = NULL;
	s->cnt = 0;
	free(ps->fmt);
	ps->fmt = NULL;
	ps->fmt_size = 0;
	enc_release(ps);
	return 0;
}

/*
 * The buffer of a released write stream, back before the first byte is
 * written: every write path that would touch it (prot_putc, prot_write
 * and prot_putbuf/puts, prot_vprintf) comes here first when buf is NULL.
 */
int prot__wbuf_get(struct protstream *s)
{
	s->buf = malloc(PROT_BUFSIZE);
	if (s->buf == NULL)
		return prot__fail(s, -ENOMEM, NULL);
	buf_reset(s);
	return 0;
}

size_t prot__flush_memory(const struct protstream *s)
{
	const struct prot__stream *ps = prot__cof(s);
	size_t n = ps->fmt_size + ps->enc.alloc;

	if (s->buf != NULL)
		n += PROT_BUFSIZE;
	if (ps->snd != NULL)
		n += sizeof(*ps->snd);
	for (const struct prot__qblock *b = ps->q_head; b != NULL; b = b->next)
		n += sizeof(*b) + b->cap;
	return n;
}
