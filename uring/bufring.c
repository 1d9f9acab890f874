/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * uring/bufring: provided buffer rings, so an idle recv holds no buffer.
 * The accounting is here; the backend publishes the buffers (a kernel
 * buffer ring, or a free stack the epoll backend takes from).
 */
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BUFRING_MAX 32768U
#define BUF_ALIGN   64U
#define BGID_SLOTS  (sizeof(((struct ur_loop *)0)->bgid_used) * 8)

/* A fiber waiting in ur_recv_pbuf() for a buffer to come back. */
struct pbuf_waiter {
	struct ur_list link;
	struct ur_fiber *f;
	bool woken; /* by ur_bufring_put(), which also unlinked us */
};

static struct ur_bufring *ring_by_bgid(const struct ur_loop *loop,
				       unsigned bgid)
{
	struct ur_bufring *br;

	for (br = loop->bufrings; br != NULL; br = br->next)
		if (br->bgid == bgid)
			return br;
	return NULL;
}

static bool bit_test(const uint64_t *map, unsigned i)
{
	return (map[i / 64] >> (i % 64)) & 1;
}

static void bit_flip(uint64_t *map, unsigned i)
{
	map[i / 64] ^= 1ULL << (i % 64);
}

/*
 * Called by the loop's dispatch for every CQE of an op armed with a buffer
 * group, before the op's callback or waiter: the buffer it carries leaves
 * the kernel's ring. The group id is cleared with the op's final CQE.
 */
void ur__bufring_cqe(struct ur_loop *loop, struct ur_op *op)
{
	struct ur_bufring *br = ring_by_bgid(loop, op->ur__bgid);
	unsigned bid;

	if (!ur_op_more(op))
		op->ur__bgid = 0;
	if (br == NULL || !ur_op_buffer(op, &bid))
		return;
	ur_assert(bid < br->nbufs && !bit_test(br->out, bid));
	ur_assert(br->avail > 0);
	bit_flip(br->out, bid);
	br->avail--;
}

/* Group 0 is never handed out: op->ur__bgid == 0 means "no group". */
static int bgid_alloc(struct ur_loop *loop)
{
	for (unsigned i = 1; i < BGID_SLOTS; i++) {
		if (!bit_test(loop->bgid_used, i)) {
			bit_flip(loop->bgid_used, i);
			return (int)i;
		}
	}
	return -ENOSPC;
}

static void bgid_release(struct ur_loop *loop, unsigned bgid)
{
	ur_assert(bit_test(loop->bgid_used, bgid));
	bit_flip(loop->bgid_used, bgid);
}

static size_t round_up(size_t n, size_t to)
{
	return (n + to - 1) / to * to;
}

static unsigned round_pow2(unsigned n)
{
	unsigned p = 1;

	while (p < n)
		p <<= 1;
	return p;
}

static void *map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static int bufring_map(struct ur_bufring *br)
{
	/* Pages of buffers are committed only when the kernel fills them. */
	br->bufs_len = (size_t)br->nbufs * br->stride;
	br->bufs = map_anon(br->bufs_len);
	if (br->bufs == NULL)
		return -ENOMEM;
	br->out = calloc((br->nbufs + 63) / 64, sizeof(*br->out));
	if (br->out == NULL) {
		munmap(br->bufs, br->bufs_len);
		return -ENOMEM;
	}
	return 0;
}

static void bufring_unmap(struct ur_bufring *br)
{
	free(br->out);
	munmap(br->bufs, br->bufs_len);
}

int ur_bufring_new(struct ur_loop *loop, unsigned nbufs, size_t buf_size,
		   struct ur_bufring **br_out)
{
	struct ur_bufring *br;
	int ret;

	if (loop == NULL || nbufs == 0 || nbufs > BUFRING_MAX ||
	    buf_size == 0 || buf_size > UINT32_MAX)
		return -EINVAL;
	if (!pthread_equal(loop->thread, pthread_self()))
		return -EINVAL; /* the loop's own list, no lock */
	br = calloc(1, sizeof(*br));
	if (br == NULL)
		return -ENOMEM;
	br->loop = loop;
	br->nbufs = round_pow2(nbufs);
	br->mask = br->nbufs - 1;
	br->buf_size = buf_size;
	br->stride = round_up(buf_size, BUF_ALIGN);
	ur_list_init(&br->waiters);
	ret = bufring_map(br);
	if (ret < 0)
		goto out_free;
	ret = bgid_alloc(loop);
	if (ret < 0)
		goto out_unmap;
	br->bgid = (uint16_t)ret;
	br->avail = br->nbufs;
	ret = loop->be->pbuf_init(br);
	if (ret < 0)
		goto out_bgid;
	br->next = loop->bufrings;
	loop->bufrings = br;
	*br_out = br;
	return 0;

out_bgid:
	bgid_release(loop, br->bgid);
out_unmap:
	bufring_unmap(br);
out_free:
	free(br);
	return ret;
}

/* Take br off its loop's list (ur__bufring_cqe's lookup). */
static void rings_unlink(struct ur_bufring *br)
{
	for (struct ur_bufring **pp = &br->loop->bufrings; *pp != NULL;
	     pp = &(*pp)->next) {
		if (*pp == br) {
			*pp = br->next;
			return;
		}
	}
}

/*
 * The loop is being freed with rings still made on it (their owner
 * leaked them past the loop): detach them, so that a later loop at the
 * same address never finds them, and ur_bufring_free() only frees the
 * memory (the ring fd and its registrations are gone).
 */
void ur__bufrings_fini(struct ur_loop *loop)
{
	struct ur_bufring *br = loop->bufrings, *next;

	for (; br != NULL; br = next) {
		next = br->next;
		loop->be->pbuf_fini(br);
		br->loop = NULL;
	}
	loop->bufrings = NULL;
	br = loop->shared_br;
	loop->shared_br = NULL;
	/* Held: its last put frees it. Free: now, unless a buffer is still
	 * out (-EBUSY, its user's bug), when its memory stays mapped. */
	if (br != NULL && br->shared_refs == 0 && ur_bufring_free(&br) < 0) {
		/* leaked rather than freed under a buffer in use */
	}
}

/*
 * The shared ring lives while streams hold it, as one made per stream
 * would, so an idle process maps no buffers; the loop owns it, so no
 * cache outside uring/ has to guess whether a loop at the same address
 * is the one it was made for.
 */
int ur_loop_bufring(struct ur_loop *loop, struct ur_bufring **br_out)
{
	int ret;

	if (!pthread_equal(loop->thread, pthread_self()))
		return -EINVAL;
	if (loop->shared_br == NULL) {
		if (loop->shared_err < 0)
			return loop->shared_err;
		ret = ur_bufring_new(loop, loop->shared_bufs,
				     loop->shared_buf_size, &loop->shared_br);
		if (ret < 0) {
			loop->shared_err = ret;
			return ret;
		}
		loop->shared_br->shared = true;
	}
	loop->shared_br->shared_refs++;
	*br_out = loop->shared_br;
	return 0;
}

void ur_loop_bufring_put(struct ur_bufring **brp)
{
	struct ur_bufring *br = *brp;
	struct ur_loop *loop;

	if (br == NULL)
		return;
	*brp = NULL;
	loop = br->loop;
	ur_assert(br->shared && br->shared_refs > 0);
	/* A forked child: the ring is the parent's (uring/loop.c). */
	if (loop != NULL && ur__loop_inherited(loop))
		return;
	if (--br->shared_refs > 0)
		return;
	if (loop != NULL)
		loop->shared_br = NULL;
	if (ur_bufring_free(&br) < 0 && loop != NULL)
		loop->shared_br = br; /* buffers still out: the loop frees it */
}

struct ur_loop *ur_bufring_loop(const struct ur_bufring *br)
{
	return br->loop;
}

int ur_bufring_free(struct ur_bufring **brp)
{
	struct ur_bufring *br = *brp;

	if (br == NULL)
		return 0;
	if (br->shared_refs > 0 || br->avail != br->nbufs || br->callers > 0 ||
	    !ur_list_empty(&br->waiters))
		return -EBUSY;
	if (br->loop == NULL) { /* detached by ur_loop_free() */
		bufring_unmap(br);
		free(br);
		*brp = NULL;
		return 0;
	}
	/*
	 * Ops still armed on the group but holding no buffer (callback
	 * faces) fail with -ENOBUFS once it is gone; the backend looks the
	 * group up by id each time it selects, so freeing the memory after
	 * the unpublish is safe.
	 */
	br->loop->be->pbuf_fini(br);
	rings_unlink(br);
	bgid_release(br->loop, br->bgid);
	bufring_unmap(br);
	free(br);
	*brp = NULL;
	return 0;
}

void *ur_bufring_buf(const struct ur_bufring *br, unsigned bid)
{
	ur_assert(bid < br->nbufs);
	return br->bufs + (size_t)bid * br->stride;
}

size_t ur_bufring_buf_size(const struct ur_bufring *br)
{
	return br->buf_size;
}

unsigned ur_bufring_available(const struct ur_bufring *br)
{
	return br->avail;
}

static void wake_one(struct ur_bufring *br)
{
	struct ur_list *n = ur_list_pop(&br->waiters);
	struct pbuf_waiter *w;

	if (n == NULL)
		return;
	w = ur_container_of(n, struct pbuf_waiter, link);
	w->woken = true;
	ur_fiber_wake(w->f);
}

void ur_bufring_put(struct ur_bufring *br, unsigned bid)
{
	/* A double put would hand one buffer to two recvs at once. */
	ur_assert(bid < br->nbufs && bit_test(br->out, bid));
	bit_flip(br->out, bid);
	br->avail++;
	br->loop->be->pbuf_put(br, bid);
	br->puts++;
	wake_one(br);
}

/* opcode: UR__RECV_PBUF, or UR__READ_PBUF for a non-socket. */
static int pbuf_start(struct ur_loop *loop, struct ur_op *op, int fd,
		      struct ur_bufring *br, uint8_t opcode, int flags,
		      bool poll_first)
{
	int ret;

	if (loop != br->loop)
		return -EINVAL;
	/*
	 * No data yet is the usual case on a retry after ENOBUFS: wait for
	 * data before taking a buffer.
	 */
	ret = ur__start(loop, op,
			&(const struct ur__req){
				.opcode = opcode,
				.fd = fd,
				.flags = flags,
				.br = br,
				.uflags = poll_first ? UR__REQ_POLL_FIRST : 0,
			});
	if (ret == 0)
		op->ur__bgid = br->bgid;
	return ret;
}

int ur_recv_pbuf_start(struct ur_loop *loop, struct ur_op *op, int fd,
		       struct ur_bufring *br, int flags)
{
	return pbuf_start(loop, op, fd, br, UR__RECV_PBUF, flags, false);
}

int ur_recv_multishot_start(struct ur_loop *loop, struct ur_op *op, int fd,
			    struct ur_bufring *br, int flags)
{
	/* The kernel fails a multishot recv at once on an empty ring,
	 * data or not (unlike a one-shot one with POLL_FIRST). */
	if (loop == br->loop && br->avail == 0 &&
	    op->ur__state != UR_OP_INFLIGHT)
		return -ENOBUFS;
	return pbuf_start(loop, op, fd, br, UR__RECV_MULTI, flags, false);
}

/* Park the calling fiber until ur_bufring_put() picks it: 0, -ECANCELED. */
static int wait_for_put(struct ur_bufring *br)
{
	struct pbuf_waiter w = {.f = ur_fiber_self()};
	int ret = 0;

	ur_list_add_tail(&br->waiters, &w.link);
	while (!w.woken) {
		ret = ur_fiber_park();
		if (ret < 0)
			break;
	}
	if (!w.woken)
		ur_list_del(&w.link);
	return ret;
}

/*
 * One attempt: start, wait, account. Returns the CQE result; a buffer
 * that came with a result we do not hand out (EOF, an error) goes back.
 */
static ssize_t pbuf_once(struct ur_bufring *br, int fd, uint8_t *opcode,
			 int flags, bool poll_first, unsigned *bid_out)
{
	struct ur_op op;
	unsigned bid;
	int ret;

	ur_op_init(&op, NULL, NULL);
	ret = pbuf_start(br->loop, &op, fd, br, *opcode, flags, poll_first);
	if (ret < 0)
		return ret;
	ret = ur_op_wait(&op);
	if (ur_op_buffer(&op, &bid)) {
		if (ret > 0) {
			*bid_out = bid;
			return ret;
		}
		ur_bufring_put(br, bid);
	}
	ur_assert(ret <= 0); /* data always comes in a buffer */
	/* Not a socket (a pipe, a tty): read() is recv() without flags. */
	if (ret == -ENOTSOCK && *opcode == UR__RECV_PBUF && flags == 0) {
		*opcode = UR__READ_PBUF;
		return pbuf_once(br, fd, opcode, flags, poll_first, bid_out);
	}
	return ret;
}

/*
 * -ENOBUFS is flow control. An attempt that took no buffer because none
 * was there says nothing about data, so the next one waits for data first
 * (POLL_FIRST, or a poll before a read): an idle connection then sits in
 * the kernel holding nothing. Only a connection with data waits here for
 * a put, so a woken waiter always has a use for the buffer.
 */
static ssize_t recv_pbuf(struct ur_bufring *br, int fd, unsigned *bid_out,
			 int flags)
{
	struct ur_fiber *self = ur__fiber_current(br->loop);
	uint8_t opcode = UR__RECV_PBUF;
	bool ready = false; /* data (or EOF) is known to be waiting */
	ssize_t ret;

	for (;;) {
		uint64_t puts = br->puts;
		bool pf = self != NULL && (ready || br->avail == 0);

		ret = pbuf_once(br, fd, &opcode, flags, pf, bid_out);
		if (ret != -ENOBUFS || self == NULL)
			break;
		if (ur__fiber_cancelled(self)) {
			ret = -ECANCELED;
			break;
		}
		if (opcode == UR__RECV_PBUF ? !pf : !ready) {
			ready = true;
			if (opcode == UR__READ_PBUF) {
				ret = ur_poll(fd, POLLIN);
				if (ret < 0)
					break;
			}
			continue;
		}
		ready = true;
		if (br->puts != puts)
			continue;
		if (wait_for_put(br) < 0) {
			ret = -ECANCELED;
			break;
		}
	}
	/*
	 * We may have been woken for a buffer we did not take (EOF, an
	 * error, a cancel): hand the wakeup on, or it would sit unused.
	 */
	if (br->avail > 0 && !ur_list_empty(&br->waiters))
		wake_one(br);
	return ret;
}

ssize_t ur_recv_pbuf(int fd, struct ur_bufring *br, unsigned *bid_out,
		     int flags)
{
	struct ur_loop *loop;
	ssize_t ret;
	int err = 0;

	loop = ur__loop_for_call(&err);
	if (loop == NULL)
		return err;
	if (loop != br->loop)
		return -EINVAL;
	if (ur__fiber_cancelled(ur__fiber_current(loop)))
		return -ECANCELED;
	br->callers++;
	ret = recv_pbuf(br, fd, bid_out, flags);
	br->callers--;
	return ret;
}
