/* SPDX-License-Identifier: BSD-3-Clause */
/* test/ur-bufring: provided buffer rings: recv, exhaustion, multishot. */
#include "t-helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MS 1000000LL

/* Byte k of stream s: a pattern that shows loss, duplication and order. */
static unsigned char pat(unsigned s, size_t k)
{
	return (unsigned char)((k * 7 + k / 251 + s * 13) % 251);
}

static void run_turns(struct ur_loop *loop, int turns)
{
	for (int i = 0; i < turns; i++)
		assert_true(ur_loop_run_once(loop, 5 * MS) >= 0);
}

static void test_ur_bufring_new_free(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_bufring *br = NULL;
	unsigned char *b0, *b1;

	assert_int_equal(ur_bufring_new(loop, 0, 64, &br), -EINVAL);
	assert_int_equal(ur_bufring_new(loop, 32769, 64, &br), -EINVAL);
	assert_int_equal(ur_bufring_new(loop, 4, 0, &br), -EINVAL);
	assert_null(br);
	assert_int_equal(ur_bufring_new(loop, 5, 100, &br), 0);
	assert_int_equal(ur_bufring_available(br), 8); /* power of two */
	assert_int_equal(ur_bufring_buf_size(br), 100);
	b0 = ur_bufring_buf(br, 0);
	b1 = ur_bufring_buf(br, 1);
	assert_true(b1 - b0 >= 100);
	memset(b0, 0xaa, 100); /* the memory is ours to use */
	memset(ur_bufring_buf(br, 7), 0x55, 100);
	assert_int_equal(ur_bufring_free(&br), 0);
	assert_null(br);
	assert_int_equal(ur_bufring_free(&br), 0); /* NULL is fine */

	/* The largest ring, and two rings on one loop at once. */
	struct ur_bufring *big, *other;

	assert_int_equal(ur_bufring_new(loop, 32768, 16, &big), 0);
	assert_int_equal(ur_bufring_available(big), 32768);
	assert_int_equal(ur_bufring_new(loop, 2, 16, &other), 0);
	assert_int_equal(ur_bufring_free(&big), 0);
	assert_int_equal(ur_bufring_free(&other), 0);
}

static void test_ur_bufring_recv_outside_fiber(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_bufring *br;
	unsigned bid = 99;
	int sv[2];

	t_socketpair(sv);
	assert_int_equal(ur_bufring_new(loop, 4, 64, &br), 0);
	assert_int_equal(write(sv[0], "hello", 5), 5);
	assert_int_equal(ur_recv_pbuf(sv[1], br, &bid, 0), 5);
	assert_true(bid < 4);
	assert_memory_equal(ur_bufring_buf(br, bid), "hello", 5);
	assert_int_equal(ur_bufring_available(br), 3);
	ur_bufring_put(br, bid);
	assert_int_equal(ur_bufring_available(br), 4);

	/* A read bigger than a buffer comes in buffer-sized pieces. */
	char big[150];

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)pat(1, i);
	assert_int_equal(write(sv[0], big, sizeof(big)), sizeof(big));
	for (size_t got = 0; got < sizeof(big);) {
		ssize_t n = ur_recv_pbuf(sv[1], br, &bid, 0);

		assert_true(n > 0 && n <= 64);
		assert_memory_equal(ur_bufring_buf(br, bid), big + got,
				    (size_t)n);
		got += (size_t)n;
		ur_bufring_put(br, bid);
	}
	close(sv[0]);
	assert_int_equal(ur_recv_pbuf(sv[1], br, &bid, 0), 0); /* EOF */
	assert_int_equal(ur_bufring_available(br), 4);
	assert_int_equal(ur_bufring_free(&br), 0);
	close(sv[1]);
}

/* Outside a fiber an empty ring is reported, not waited for. */
static void test_ur_bufring_enobufs_outside_fiber(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_bufring *br;
	struct ur_op op;
	unsigned bid[2], spare = 99;
	int sv[2];

	t_socketpair(sv);
	assert_int_equal(ur_bufring_new(loop, 2, 8, &br), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(write(sv[0], "x", 1), 1);
		assert_int_equal(ur_recv_pbuf(sv[1], br, &bid[i], 0), 1);
	}
	assert_int_equal(ur_bufring_available(br), 0);
	assert_int_equal(write(sv[0], "y", 1), 1);
	assert_int_equal(ur_recv_pbuf(sv[1], br, &spare, 0), -ENOBUFS);
	/* A multishot recv is refused on an empty ring. */
	ur_op_init(&op, NULL, NULL);
	assert_int_equal(ur_recv_multishot_start(loop, &op, sv[1], br, 0),
			 -ENOBUFS);
	assert_false(ur_op_is_busy(&op));
	assert_int_equal(ur_bufring_free(&br), -EBUSY);
	ur_bufring_put(br, bid[1]);
	assert_int_equal(ur_recv_pbuf(sv[1], br, &bid[1], 0), 1);
	assert_int_equal(*(char *)ur_bufring_buf(br, bid[1]), 'y');
	ur_bufring_put(br, bid[0]);
	ur_bufring_put(br, bid[1]);
	assert_int_equal(ur_bufring_free(&br), 0);
	close(sv[0]);
	close(sv[1]);
}

/* Fibers: an echo over provided buffers. */
struct echo {
	int fd;
	struct ur_bufring *br;
	size_t bytes;
};

static int echo_fiber(void *arg)
{
	struct echo *e = arg;
	unsigned bid;
	ssize_t n;

	while ((n = ur_recv_pbuf(e->fd, e->br, &bid, 0)) > 0) {
		ssize_t w = ur_send(e->fd, ur_bufring_buf(e->br, bid),
				    (size_t)n, MSG_WAITALL);

		ur_bufring_put(e->br, bid);
		if (w != n)
			return -EIO;
		e->bytes += (size_t)n;
	}
	return (int)n;
}

static void test_ur_bufring_recv_fibers(void **state)
{
	enum {
		N = 6
	};
	struct ur_loop *loop = t_loop_of(state);
	struct ur_bufring *br;
	struct ur_fiber *f[N];
	struct echo e[N];
	int sv[N][2];
	char out[32], in[32];

	assert_int_equal(ur_bufring_new(loop, 8, 32, &br), 0);
	for (int i = 0; i < N; i++) {
		t_socketpair(sv[i]);
		e[i] = (struct echo){.fd = sv[i][1], .br = br};
		assert_int_equal(
			ur_fiber_spawn(loop, echo_fiber, &e[i], NULL, &f[i]),
			0);
	}
	for (int round = 0; round < 20; round++) {
		for (int i = 0; i < N; i++) {
			int len =
				snprintf(out, sizeof(out), "r%d s%d", round, i);

			assert_int_equal(write(sv[i][0], out, (size_t)len),
					 len);
		}
		for (int i = 0; i < N; i++) {
			int len =
				snprintf(out, sizeof(out), "r%d s%d", round, i);

			assert_int_equal(
				ur_recv(sv[i][0], in, (size_t)len, MSG_WAITALL),
				len);
			assert_memory_equal(in, out, (size_t)len);
		}
	}
	for (int i = 0; i < N; i++) {
		int ret = -1;

		shutdown(sv[i][0], SHUT_WR);
		assert_int_equal(ur_fiber_join(f[i], &ret), 0);
		assert_int_equal(ret, 0);
		close(sv[i][0]);
		close(sv[i][1]);
	}
	assert_int_equal(ur_bufring_available(br), 8);
	assert_int_equal(ur_bufring_free(&br), 0);
}

/* Callback face: one-shot recv, re-armed from its own callback. */
struct cb_ctx {
	struct ur_bufring *br;
	struct ur_loop *loop;
	int fd;
	char got[256];
	size_t len;
	unsigned avail_in_cb; /* available count seen with the buffer held */
	int done;
	int err;
};

static void cb_recv(struct ur_op *op)
{
	struct cb_ctx *c = op->data;
	unsigned bid = 0;

	if (op->res <= 0) {
		assert_false(ur_op_buffer(op, &bid));
		c->err = op->res;
		c->done = 1;
		return;
	}
	assert_true(ur_op_buffer(op, &bid));
	c->avail_in_cb = ur_bufring_available(c->br);
	assert_true(c->len + (size_t)op->res <= sizeof(c->got));
	memcpy(c->got + c->len, ur_bufring_buf(c->br, bid), (size_t)op->res);
	c->len += (size_t)op->res;
	ur_bufring_put(c->br, bid);
	assert_int_equal(ur_recv_pbuf_start(c->loop, op, c->fd, c->br, 0), 0);
}

static void test_ur_bufring_recv_callback(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct cb_ctx c = {.loop = loop};
	struct ur_op op;
	int sv[2];

	t_socketpair(sv);
	assert_int_equal(ur_bufring_new(loop, 4, 16, &c.br), 0);
	c.fd = sv[1];
	ur_op_init(&op, cb_recv, &c);
	assert_int_equal(ur_recv_pbuf_start(loop, &op, sv[1], c.br, 0), 0);
	assert_int_equal(ur_recv_pbuf_start(loop, &op, sv[1], c.br, 0), -EBUSY);
	run_turns(loop, 3);
	/* Parked in the kernel without data: no buffer taken. */
	assert_int_equal(ur_bufring_available(c.br), 4);
	assert_int_equal(write(sv[0], "callback", 8), 8);
	for (int i = 0; i < 50 && c.len < 8; i++)
		run_turns(loop, 1);
	assert_int_equal(c.len, 8);
	assert_memory_equal(c.got, "callback", 8);
	/* While the callback held the buffer the ring had one fewer. */
	assert_int_equal(c.avail_in_cb, 3);
	assert_int_equal(write(sv[0], "-and-more-than-one-buffer", 25), 25);
	close(sv[0]);
	t_loop_run_until(loop, &c.done, 2000);
	assert_int_equal(c.err, 0);
	assert_int_equal(c.len, 33);
	assert_memory_equal(c.got, "callback-and-more-than-one-buffer", 33);
	assert_int_equal(ur_bufring_available(c.br), 4);
	assert_int_equal(ur_bufring_free(&c.br), 0);
	close(sv[1]);
}

/*
 * Exhaustion: 4 buffers, 8 fibers receiving streams at once. Each fiber
 * first holds its buffer until the test opens the gate, so exactly 4 get
 * one and 4 wait on ENOBUFS; then every byte must arrive, in order.
 */
enum {
	EX_SOCKS = 8,
	EX_BUFS = 4,
	EX_BUFSZ = 512,
	EX_BYTES = 96 * 1024
};

struct ex {
	struct ex_shared *sh;
	unsigned id;
	int fd;
	size_t pos;
	bool bad;
	struct ur_fiber *f;
};

struct ex_shared {
	struct ur_bufring *br;
	bool gate;
	int holding;
	int finished;
	struct ur_fiber *holder[EX_SOCKS];
};

static int ex_reader(void *arg)
{
	struct ex *r = arg;
	struct ex_shared *sh = r->sh;
	unsigned bid;
	ssize_t n;
	int y = 0;

	while ((n = ur_recv_pbuf(r->fd, sh->br, &bid, 0)) > 0) {
		const unsigned char *b = ur_bufring_buf(sh->br, bid);

		for (ssize_t i = 0; i < n; i++)
			if (b[i] != pat(r->id, r->pos + (size_t)i))
				r->bad = true;
		r->pos += (size_t)n;
		if (!sh->gate) {
			sh->holder[sh->holding++] = ur_fiber_self();
			while (!sh->gate)
				if (ur_fiber_park() < 0)
					return -ECANCELED;
		} else if (r->pos % 3 == 0) {
			/* Hold the buffer across a loop turn now and then. */
			y = ur_fiber_yield();
		}
		ur_bufring_put(sh->br, bid);
		if (y != 0)
			return y;
	}
	sh->finished++;
	return (int)n;
}

static int ex_writer(void *arg)
{
	struct ex *w = arg;
	unsigned char chunk[1000];

	for (size_t off = 0; off < EX_BYTES;) {
		size_t len = EX_BYTES - off < sizeof(chunk) ? EX_BYTES - off
							    : sizeof(chunk);
		ssize_t n;

		for (size_t i = 0; i < len; i++)
			chunk[i] = pat(w->id, off + i);
		n = ur_send(w->fd, chunk, len, MSG_WAITALL);
		if (n != (ssize_t)len)
			return n < 0 ? (int)n : -EIO;
		off += len;
	}
	return shutdown(w->fd, SHUT_WR) == 0 ? 0 : -errno;
}

static void test_ur_bufring_exhaustion_recovery(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ex_shared sh = {0};
	struct ex rd[EX_SOCKS], wr[EX_SOCKS];
	int sv[EX_SOCKS][2];
	int got = 0;

	assert_int_equal(ur_bufring_new(loop, EX_BUFS, EX_BUFSZ, &sh.br), 0);
	for (unsigned i = 0; i < EX_SOCKS; i++) {
		t_socketpair(sv[i]);
		rd[i] = (struct ex){.sh = &sh, .id = i, .fd = sv[i][1]};
		wr[i] = (struct ex){.sh = &sh, .id = i, .fd = sv[i][0]};
		assert_int_equal(
			ur_fiber_spawn(loop, ex_reader, &rd[i], NULL, &rd[i].f),
			0);
		assert_int_equal(
			ur_fiber_spawn(loop, ex_writer, &wr[i], NULL, &wr[i].f),
			0);
	}
	/* Every socket has data, the ring has 4 buffers: 4 holders. */
	for (int i = 0; i < 400 && sh.holding < EX_BUFS; i++)
		run_turns(loop, 1);
	run_turns(loop, 20);
	assert_int_equal(sh.holding, EX_BUFS);
	assert_int_equal(ur_bufring_available(sh.br), 0);
	for (unsigned i = 0; i < EX_SOCKS; i++)
		got += rd[i].pos > 0;
	assert_int_equal(got, EX_BUFS); /* the others wait, none failed */
	assert_int_equal(sh.finished, 0);

	sh.gate = true;
	for (int i = 0; i < sh.holding; i++)
		ur_fiber_wake(sh.holder[i]);
	for (uint64_t end = t_now_ms() + 20000;
	     sh.finished < EX_SOCKS && t_now_ms() < end;)
		run_turns(loop, 1);
	for (unsigned i = 0; i < EX_SOCKS; i++) {
		int rr = -1, wret = -1;

		assert_int_equal(ur_fiber_join(rd[i].f, &rr), 0);
		assert_int_equal(ur_fiber_join(wr[i].f, &wret), 0);
		assert_int_equal(rr, 0);
		assert_int_equal(wret, 0);
		assert_int_equal(rd[i].pos, EX_BYTES);
		assert_false(rd[i].bad);
		close(sv[i][0]);
		close(sv[i][1]);
	}
	assert_int_equal(ur_bufring_available(sh.br), EX_BUFS);
	assert_int_equal(ur_bufring_free(&sh.br), 0);
}

/* Multishot: one arm streams many messages, re-armed only on ENOBUFS. */
struct ms_ctx {
	struct ur_loop *loop;
	struct ur_bufring *br;
	int fd;
	size_t pos;
	unsigned cqes;
	unsigned arms;
	unsigned max_out; /* most buffers seen out of the ring at once */
	bool bad;
	int done;
	int err;
};

static void ms_cqe(struct ur_op *op)
{
	struct ms_ctx *m = op->data;
	unsigned bid;

	m->cqes++;
	if (ur_op_buffer(op, &bid)) {
		const unsigned char *b = ur_bufring_buf(m->br, bid);
		unsigned out = 8 - ur_bufring_available(m->br);

		assert_true(op->res > 0);
		if (out > m->max_out)
			m->max_out = out;
		for (int i = 0; i < op->res; i++)
			if (b[i] != pat(3, m->pos + (size_t)i))
				m->bad = true;
		m->pos += (size_t)op->res;
		ur_bufring_put(m->br, bid);
	}
	if (ur_op_more(op))
		return;
	if (op->res == -ENOBUFS) {
		/* Flow control: the buffers are back, arm again. */
		assert_int_equal(
			ur_recv_multishot_start(m->loop, op, m->fd, m->br, 0),
			0);
		m->arms++;
		return;
	}
	if (op->res > 0) {
		/* A final CQE with data (the kernel may end a multishot
		 * for its own reasons): keep going. */
		assert_int_equal(
			ur_recv_multishot_start(m->loop, op, m->fd, m->br, 0),
			0);
		m->arms++;
		return;
	}
	m->err = op->res;
	m->done = 1;
}

static void test_ur_bufring_multishot_stream(void **state)
{
	enum {
		MSGS = 300,
		MSG = 37
	};
	struct ur_loop *loop = t_loop_of(state);
	struct ms_ctx m = {.loop = loop};
	unsigned char msg[MSG], burst[8192];
	struct ur_op op;
	size_t off = 0;
	int sv[2];

	t_socketpair(sv);
	assert_int_equal(ur_bufring_new(loop, 8, 256, &m.br), 0);
	m.fd = sv[1];
	ur_op_init(&op, ms_cqe, &m);
	assert_int_equal(ur_recv_multishot_start(loop, &op, sv[1], m.br, 0), 0);
	m.arms = 1;
	run_turns(loop, 2);
	assert_int_equal(ur_bufring_available(m.br), 8); /* idle: none */
	for (int i = 0; i < MSGS; i++) {
		for (size_t k = 0; k < MSG; k++)
			msg[k] = pat(3, off + k);
		assert_int_equal(write(sv[0], msg, MSG), MSG);
		off += MSG;
		if (i % 10 == 0)
			run_turns(loop, 1);
	}
	for (int i = 0; i < 100 && m.pos < off; i++)
		run_turns(loop, 1);
	assert_int_equal(m.pos, off);
	/* Many messages came through few arms. */
	assert_true(m.cqes >= MSGS / 10);
	assert_true(m.arms < m.cqes / 4);

	/* A burst larger than the ring: ENOBUFS ends the multishot and the
	 * callback arms it again; nothing is lost. */
	for (size_t k = 0; k < sizeof(burst); k++)
		burst[k] = pat(3, off + k);
	assert_int_equal(write(sv[0], burst, sizeof(burst)), sizeof(burst));
	off += sizeof(burst);
	close(sv[0]);
	t_loop_run_until(loop, &m.done, 5000);
	assert_int_equal(m.done, 1);
	assert_int_equal(m.err, 0); /* clean EOF */
	assert_int_equal(m.pos, off);
	assert_false(m.bad);
	/* On epoll a multishot recv takes one buffer per step, after the
	 * previous one was dispatched (and put back here): no ENOBUFS. */
	if (!t_epoll())
		assert_true(m.arms >= 2);
	assert_true(m.max_out >= 1);
	assert_false(ur_op_is_busy(&op));
	assert_int_equal(ur_bufring_available(m.br), 8);
	assert_int_equal(ur_bufring_free(&m.br), 0);
	close(sv[1]);
}

/*
 * A completion can carry a buffer with an error or EOF; it must go back.
 * On 6.18 a recv never does that, but a read does, and ur_recv_pbuf()
 * reads what is not a socket. Buffers are taken in ring order, so the
 * id the next recv gets shows whether the kernel had taken one.
 */
static void test_ur_bufring_buffer_on_error_returned(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_bufring *br;
	unsigned bid = 99;
	int sv[2], pfd[2];
	int dfd;

	t_socketpair(sv);
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	dfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(ur_bufring_new(loop, 4, 64, &br), 0);

	/* A directory: the read takes buffer 0 and fails with EISDIR. */
	assert_int_equal(ur_recv_pbuf(dfd, br, &bid, 0), -EISDIR);
	assert_int_equal(bid, 99);
	assert_int_equal(ur_bufring_available(br), 4);
	assert_int_equal(write(sv[0], "a", 1), 1);
	assert_int_equal(ur_recv_pbuf(sv[1], br, &bid, 0), 1);
	assert_int_equal(bid, 1); /* 0 went back to the tail */
	ur_bufring_put(br, bid);

	/* A pipe: data, then EOF, which also comes with a buffer. */
	assert_int_equal(write(pfd[1], "pipe", 4), 4);
	assert_int_equal(ur_recv_pbuf(pfd[0], br, &bid, 0), 4);
	assert_int_equal(bid, 2);
	assert_memory_equal(ur_bufring_buf(br, bid), "pipe", 4);
	ur_bufring_put(br, bid);
	close(pfd[1]);
	assert_int_equal(ur_recv_pbuf(pfd[0], br, &bid, 0), 0);
	assert_int_equal(ur_bufring_available(br), 4);
	assert_int_equal(write(sv[0], "b", 1), 1);
	assert_int_equal(ur_recv_pbuf(sv[1], br, &bid, 0), 1);
	assert_int_equal(bid, 0); /* 3 was taken at EOF and returned */
	ur_bufring_put(br, bid);

	/* recv flags on a non-socket: the kernel's answer, no fallback. */
	assert_int_equal(ur_recv_pbuf(pfd[0], br, &bid, MSG_PEEK), -ENOTSOCK);
	assert_int_equal(ur_bufring_available(br), 4);
	assert_int_equal(ur_bufring_free(&br), 0);
	close(dfd);
	close(pfd[0]);
	close(sv[0]);
	close(sv[1]);
}

/* Idle connections parked in ur_recv_pbuf() hold no buffer. */
struct idle {
	int fd;
	struct ur_bufring *br;
	ssize_t got;
	unsigned bid;
	int have; /* the recv returned */
	int done;
	bool hold; /* keep the buffer until released */
};

static int idle_fiber(void *arg)
{
	struct idle *d = arg;

	d->got = ur_recv_pbuf(d->fd, d->br, &d->bid, 0);
	d->have = 1;
	while (d->got > 0 && d->hold)
		if (ur_fiber_park() < 0)
			break;
	if (d->got > 0)
		ur_bufring_put(d->br, d->bid);
	d->done = 1;
	return 0;
}

static void test_ur_bufring_idle_holds_no_buffer(void **state)
{
	enum {
		N = 32
	};
	struct ur_loop *loop = t_loop_of(state);
	struct ur_loop_stats st;
	struct ur_bufring *br;
	struct ur_fiber *f[N];
	struct idle d[N];
	int sv[N][2];

	assert_int_equal(ur_bufring_new(loop, 4, 64, &br), 0);
	for (int i = 0; i < N; i++) {
		t_socketpair(sv[i]);
		d[i] = (struct idle){.fd = sv[i][1], .br = br, .hold = true};
		assert_int_equal(
			ur_fiber_spawn(loop, idle_fiber, &d[i], NULL, &f[i]),
			0);
	}
	run_turns(loop, 10);
	ur_loop_stats(loop, &st);
	assert_int_equal(st.ops_inflight, N); /* all parked in the kernel */
	assert_int_equal(ur_bufring_available(br), 4);

	/* One wakes up with data and holds its buffer: one fewer. */
	assert_int_equal(write(sv[5][0], "z", 1), 1);
	t_loop_run_until(loop, &d[5].have, 2000);
	assert_int_equal(d[5].got, 1);
	assert_int_equal(ur_bufring_available(br), 3);
	d[5].hold = false;
	ur_fiber_wake(f[5]);
	t_loop_run_until(loop, &d[5].done, 2000);
	assert_int_equal(ur_bufring_available(br), 4);

	/* Cancel half of the idle ones, close the peers of the rest. */
	for (int i = 0; i < N; i++) {
		if (i == 5)
			continue;
		if (i % 2 == 0)
			assert_int_equal(ur_fiber_cancel(f[i]), 0);
		else
			close(sv[i][0]);
	}
	for (int i = 0; i < N; i++) {
		assert_int_equal(ur_fiber_join(f[i], NULL), 0);
		if (i == 5)
			continue;
		assert_int_equal(d[i].got, i % 2 == 0 ? -ECANCELED : 0);
	}
	assert_int_equal(ur_bufring_available(br), 4);
	assert_int_equal(ur_bufring_free(&br), 0);
	for (int i = 0; i < N; i++) {
		if (i % 2 == 0 || i == 5)
			close(sv[i][0]);
		close(sv[i][1]);
	}
}

/* A fiber waiting for a buffer (ENOBUFS) can be cancelled. */
static void test_ur_bufring_cancel_while_waiting(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_bufring *br;
	struct ur_fiber *f;
	struct idle d;
	unsigned bid;
	int sv[2], tv[2];

	t_socketpair(sv);
	t_socketpair(tv);
	assert_int_equal(ur_bufring_new(loop, 1, 8, &br), 0);
	assert_int_equal(write(tv[0], "t", 1), 1);
	assert_int_equal(ur_recv_pbuf(tv[1], br, &bid, 0), 1); /* ring empty */
	assert_int_equal(write(sv[0], "s", 1), 1);
	d = (struct idle){.fd = sv[1], .br = br};
	assert_int_equal(ur_fiber_spawn(loop, idle_fiber, &d, NULL, &f), 0);
	run_turns(loop, 10);
	assert_int_equal(d.done, 0); /* waiting for a buffer */
	assert_int_equal(ur_bufring_free(&br), -EBUSY);
	assert_int_equal(ur_fiber_cancel(f), 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(d.got, -ECANCELED);
	ur_bufring_put(br, bid);
	/* The data is still there for the next reader. */
	assert_int_equal(ur_recv_pbuf(sv[1], br, &bid, 0), 1);
	assert_int_equal(*(char *)ur_bufring_buf(br, bid), 's');
	assert_int_equal(ur_bufring_free(&br), -EBUSY); /* one is out */
	ur_bufring_put(br, bid);
	assert_int_equal(ur_bufring_free(&br), 0);
	close(sv[0]);
	close(sv[1]);
	close(tv[0]);
	close(tv[1]);
}

/*
 * Wakeups are never stranded. Ring of one buffer, held by C. X's peer has
 * closed and B has data; both wait for a buffer, X first. When C puts, X
 * is woken but finds EOF and takes nothing: B must get the buffer.
 */
struct hold {
	int fd;
	struct ur_bufring *br;
	int got; /* recvs that returned data */
	int release;
	ssize_t last;
	int done;
};

/* Receive; hold the first buffer until release, then keep receiving. */
static int hold_fiber(void *arg)
{
	struct hold *h = arg;
	unsigned bid;

	while ((h->last = ur_recv_pbuf(h->fd, h->br, &bid, 0)) > 0) {
		h->got++;
		while (!h->release)
			if (ur_fiber_park() < 0)
				return -ECANCELED;
		ur_bufring_put(h->br, bid);
	}
	h->done = 1;
	return 0;
}

static void test_ur_bufring_unused_wakeup_passed_on(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_bufring *br;
	struct hold c, x, b;
	struct ur_fiber *fc, *fx, *fb;
	int cs[2], xs[2], bs[2];

	t_socketpair(cs);
	t_socketpair(xs);
	t_socketpair(bs);
	assert_int_equal(ur_bufring_new(loop, 1, 16, &br), 0);
	c = (struct hold){.fd = cs[1], .br = br};
	x = (struct hold){.fd = xs[1], .br = br, .release = 1};
	b = (struct hold){.fd = bs[1], .br = br, .release = 1};
	assert_int_equal(write(cs[0], "c", 1), 1);
	assert_int_equal(ur_fiber_spawn(loop, hold_fiber, &c, NULL, &fc), 0);
	t_loop_run_until(loop, &c.got, 2000);
	assert_int_equal(ur_bufring_available(br), 0);
	close(xs[0]);
	assert_int_equal(ur_fiber_spawn(loop, hold_fiber, &x, NULL, &fx), 0);
	run_turns(loop, 5);
	assert_int_equal(write(bs[0], "b", 1), 1);
	assert_int_equal(ur_fiber_spawn(loop, hold_fiber, &b, NULL, &fb), 0);
	run_turns(loop, 5);
	assert_int_equal(x.done + b.got, 0); /* both wait */

	/* C puts and goes back to an idle recv: it returns no more. */
	c.release = 1;
	ur_fiber_wake(fc);
	t_loop_run_until(loop, &b.got, 2000);
	assert_int_equal(x.done, 1);
	assert_int_equal(x.last, 0);
	assert_int_equal(b.got, 1);

	close(cs[0]);
	close(bs[0]);
	assert_int_equal(ur_fiber_join(fc, NULL), 0);
	assert_int_equal(ur_fiber_join(fx, NULL), 0);
	assert_int_equal(ur_fiber_join(fb, NULL), 0);
	assert_int_equal(ur_bufring_available(br), 1);
	assert_int_equal(ur_bufring_free(&br), 0);
	close(cs[1]);
	close(xs[1]);
	close(bs[1]);
}

/*
 * The count can be stale: the kernel may take a buffer before its CQE is
 * reaped. Without DEFER_TASKRUN the recv of C completes as task work when
 * our own write() returns, so A, started next, sees one buffer that is
 * gone and gets ENOBUFS without any data. A must then wait in the kernel,
 * not in line for a buffer it has no use for, or B (with data) would be
 * left waiting behind it. Under DEFER_TASKRUN A never sees that state and
 * the test checks the plain path.
 */
static void test_ur_bufring_idle_does_not_take_wakeup(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_bufring *br;
	struct hold c, a, b;
	struct ur_fiber *fc, *fa, *fb;
	int cs[2], as[2], bs[2];

	t_socketpair(cs);
	t_socketpair(as);
	t_socketpair(bs);
	assert_int_equal(ur_bufring_new(loop, 1, 16, &br), 0);
	c = (struct hold){.fd = cs[1], .br = br};
	a = (struct hold){.fd = as[1], .br = br, .release = 1};
	b = (struct hold){.fd = bs[1], .br = br, .release = 1};
	assert_int_equal(ur_fiber_spawn(loop, hold_fiber, &c, NULL, &fc), 0);
	run_turns(loop, 3); /* C waits in the kernel, no buffer taken */
	assert_int_equal(ur_bufring_available(br), 1);
	assert_int_equal(write(cs[0], "c", 1), 1);
	assert_int_equal(ur_fiber_spawn(loop, hold_fiber, &a, NULL, &fa), 0);
	run_turns(loop, 5);
	assert_int_equal(c.got, 1);
	assert_int_equal(ur_bufring_available(br), 0);
	assert_int_equal(write(bs[0], "b", 1), 1);
	assert_int_equal(ur_fiber_spawn(loop, hold_fiber, &b, NULL, &fb), 0);
	run_turns(loop, 5);
	assert_int_equal(a.got + b.got, 0);

	c.release = 1;
	ur_fiber_wake(fc);
	t_loop_run_until(loop, &b.got, 2000);
	assert_int_equal(b.got, 1);
	assert_int_equal(a.got, 0);

	close(cs[0]);
	close(as[0]);
	close(bs[0]);
	assert_int_equal(ur_fiber_join(fc, NULL), 0);
	assert_int_equal(ur_fiber_join(fa, NULL), 0);
	assert_int_equal(ur_fiber_join(fb, NULL), 0);
	assert_int_equal(ur_bufring_available(br), 1);
	assert_int_equal(ur_bufring_free(&br), 0);
	close(cs[1]);
	close(as[1]);
	close(bs[1]);
}

/*
 * A put that lands between the kernel's ENOBUFS and the fiber seeing it:
 * a NOP queued ahead of the recv completes first and its callback puts
 * the only buffer, with nobody in line yet. The recv must try again.
 */
struct put_later {
	struct ur_bufring *br;
	unsigned bid;
};

static void put_cb(struct ur_op *op)
{
	struct put_later *p = op->data;

	ur_bufring_put(p->br, p->bid);
}

static void test_ur_bufring_put_during_attempt(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct put_later pl;
	struct ur_op nop;
	struct ur_fiber *f;
	struct hold b;
	int hs[2], bs[2];

	t_socketpair(hs);
	t_socketpair(bs);
	assert_int_equal(ur_bufring_new(loop, 1, 16, &pl.br), 0);
	assert_int_equal(write(hs[0], "h", 1), 1);
	assert_int_equal(ur_recv_pbuf(hs[1], pl.br, &pl.bid, 0), 1);
	assert_int_equal(write(bs[0], "b", 1), 1);
	b = (struct hold){.fd = bs[1], .br = pl.br, .release = 1};
	ur_op_init(&nop, put_cb, &pl);
	assert_int_equal(ur_nop_start(loop, &nop), 0);
	assert_int_equal(ur_fiber_spawn(loop, hold_fiber, &b, NULL, &f), 0);
	t_loop_run_until(loop, &b.got, 2000);
	assert_int_equal(b.got, 1);
	close(bs[0]);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(ur_bufring_available(pl.br), 1);
	assert_int_equal(ur_bufring_free(&pl.br), 0);
	close(hs[0]);
	close(hs[1]);
	close(bs[1]);
}

/* Direct descriptors: one-shot and multishot with IOSQE_FIXED_FILE. */
static void test_ur_bufring_direct_descriptors(void **state)
{
	struct ur_loop_opts o = {.mode = t_mode, .direct_files = 8};
	struct ur_loop *loop;
	struct ur_bufring *br;
	struct ms_ctx m;
	struct ur_op op;
	unsigned bid;
	int sv[2], d0, d1;

	(void)state;
	assert_int_equal(ur_loop_new(&o, &loop), 0);
	ur_loop_bind(loop);
	t_socketpair(sv);
	d0 = ur_fd_to_direct(loop, sv[0]);
	d1 = ur_fd_to_direct(loop, sv[1]);
	assert_true(UR_IS_FIXED(d0) && UR_IS_FIXED(d1));
	close(sv[0]);
	close(sv[1]);
	assert_int_equal(ur_bufring_new(loop, 8, 256, &br), 0);
	assert_int_equal(ur_send(d0, "fixed", 5, 0), 5);
	assert_int_equal(ur_recv_pbuf(d1, br, &bid, 0), 5);
	assert_memory_equal(ur_bufring_buf(br, bid), "fixed", 5);
	ur_bufring_put(br, bid);

	m = (struct ms_ctx){.loop = loop, .br = br, .fd = d1};
	ur_op_init(&op, ms_cqe, &m);
	assert_int_equal(ur_recv_multishot_start(loop, &op, d1, br, 0), 0);
	for (size_t k = 0; k < 600; k += 100) {
		unsigned char b[100];

		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = pat(3, k + i);
		assert_int_equal(ur_send(d0, b, sizeof(b), 0), 100);
	}
	assert_int_equal(ur_close(d0), 0);
	t_loop_run_until(loop, &m.done, 2000);
	assert_int_equal(m.err, 0);
	assert_int_equal(m.pos, 600);
	assert_false(m.bad);
	assert_int_equal(ur_close(d1), 0);
	assert_int_equal(ur_bufring_available(br), 8);
	assert_int_equal(ur_bufring_free(&br), 0);
	ur_loop_free(&loop);
}

/*
 * A ring that outlives its loop (an owner leaked it): the loop's free
 * detaches it, a new loop never sees it, and freeing it later only
 * releases its memory.
 */
static void test_ur_bufring_outlives_loop(void **state)
{
	struct ur_loop_opts o = {.mode = t_mode};
	struct ur_loop *loop, *again;
	struct ur_bufring *br, *fresh;

	(void)state;
	assert_int_equal(ur_loop_new(&o, &loop), 0);
	assert_int_equal(ur_bufring_new(loop, 4, 64, &br), 0);
	assert_ptr_equal(ur_bufring_loop(br), loop);
	ur_loop_free(&loop);
	assert_null(ur_bufring_loop(br));
	assert_int_equal(ur_loop_new(&o, &again), 0);
	assert_int_equal(
		ur_recv_pbuf_start(again, &(struct ur_op){0}, 0, br, 0),
		-EINVAL);
	assert_int_equal(ur_bufring_new(again, 4, 64, &fresh), 0);
	assert_ptr_equal(ur_bufring_loop(fresh), again);
	assert_int_equal(ur_bufring_free(&fresh), 0);
	assert_int_equal(ur_bufring_free(&br), 0);
	assert_null(br);
	ur_loop_free(&again);
	ur_loop_bind(NULL);
}

/* The loop's shared ring: one ring, counted references, the loop's. */
static void test_ur_bufring_shared_refcount(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_bufring *a = NULL, *b = NULL, *c = NULL;
	unsigned bid;
	int sv[2];

	assert_int_equal(ur_loop_bufring(loop, &a), 0);
	assert_int_equal(ur_loop_bufring(loop, &b), 0);
	assert_ptr_equal(a, b);
	assert_ptr_equal(ur_bufring_loop(a), loop);
	assert_int_equal(ur_bufring_available(a), 256);
	assert_int_equal(ur_bufring_buf_size(a), 16384);
	/* Users may not free it under the others. */
	assert_int_equal(ur_bufring_free(&a), -EBUSY);
	t_socketpair(sv);
	assert_int_equal(send(sv[1], "abc", 3, 0), 3);
	assert_int_equal(ur_recv_pbuf(sv[0], a, &bid, 0), 3);
	assert_memory_equal(ur_bufring_buf(a, bid), "abc", 3);
	ur_bufring_put(a, bid);
	t_close_pair(sv);
	ur_loop_bufring_put(&b);
	assert_null(b);
	assert_int_equal(ur_loop_bufring(loop, &c), 0);
	assert_ptr_equal(a, c); /* still held by a: the same ring */
	ur_loop_bufring_put(&c);
	ur_loop_bufring_put(&a); /* the last one frees it */
	assert_null(a);
	ur_loop_bufring_put(&a); /* NULL is accepted */
	/* Made again on demand. */
	assert_int_equal(ur_loop_bufring(loop, &a), 0);
	assert_int_equal(ur_bufring_available(a), 256);
	ur_loop_bufring_put(&a);
}

static void test_ur_bufring_shared_freed_with_loop(void **state)
{
	struct ur_loop_opts o = {
		.mode = t_mode, .shared_bufs = 8, .shared_buf_size = 100};
	struct ur_loop *loop, *again;
	struct ur_bufring *br, *kept, *other;
	unsigned bid;
	int sv[2];

	(void)state;
	assert_int_equal(ur_loop_new(&o, &loop), 0);
	assert_int_equal(ur_loop_bufring(loop, &br), 0);
	assert_int_equal(ur_bufring_available(br), 8);
	assert_int_equal(ur_bufring_buf_size(br), 100);
	/* Held past the loop: detached, and its last put frees it. */
	ur_loop_free(&loop);
	assert_null(ur_bufring_loop(br));
	assert_int_equal(ur_loop_new(&o, &again), 0);
	assert_int_equal(ur_loop_bufring(again, &other), 0);
	assert_ptr_not_equal(other, br);
	assert_ptr_equal(ur_bufring_loop(other), again);
	ur_loop_bufring_put(&br);
	/*
	 * A last put while a buffer is still out: the loop keeps the ring
	 * (the same one comes back) and frees it with itself, which the
	 * ASan build's leak check sees.
	 */
	t_socketpair(sv);
	assert_int_equal(send(sv[1], "z", 1, 0), 1);
	assert_int_equal(ur_recv_pbuf(sv[0], other, &bid, 0), 1);
	kept = other;
	ur_loop_bufring_put(&other);
	assert_int_equal(ur_loop_bufring(again, &other), 0);
	assert_ptr_equal(other, kept);
	ur_loop_bufring_put(&other);
	ur_bufring_put(kept, bid);
	t_close_pair(sv);
	ur_loop_free(&again);
	ur_loop_bind(NULL);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
	const struct CMUnitTest tests[] = {
		T(test_ur_bufring_new_free),
		T(test_ur_bufring_recv_outside_fiber),
		T(test_ur_bufring_enobufs_outside_fiber),
		T(test_ur_bufring_recv_fibers),
		T(test_ur_bufring_recv_callback),
		T(test_ur_bufring_exhaustion_recovery),
		T(test_ur_bufring_multishot_stream),
		T(test_ur_bufring_buffer_on_error_returned),
		T(test_ur_bufring_idle_holds_no_buffer),
		T(test_ur_bufring_cancel_while_waiting),
		T(test_ur_bufring_unused_wakeup_passed_on),
		T(test_ur_bufring_idle_does_not_take_wakeup),
		T(test_ur_bufring_put_during_attempt),
		cmocka_unit_test(test_ur_bufring_direct_descriptors),
		cmocka_unit_test(test_ur_bufring_outlives_loop),
		T(test_ur_bufring_shared_refcount),
		cmocka_unit_test(test_ur_bufring_shared_freed_with_loop),
	};
#undef T

	t_require_loop();
	return t_run_groups("ur-bufring", tests,
			    sizeof(tests) / sizeof(tests[0])) != 0;
}
