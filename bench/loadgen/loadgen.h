/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen: the load generator's workers, modes and histogram. */
#ifndef RINGPROT_BENCH_LOADGEN_H
#define RINGPROT_BENCH_LOADGEN_H

/*
 * One io_uring per worker thread drives that worker's share of the
 * connections. What happens on a connection is a mode: a small state
 * machine that reacts to "connected", "sent" and "received" and calls
 * back into the worker to queue its I/O. echo, idle and hold exist today;
 * LMTP and IMAP sessions are meant to be further modes (a session opens
 * with a greeting and a login in connected(), then request() runs one
 * transaction).
 *
 * Contracts between the two sides:
 *  - From connect on, the worker keeps one multishot recv armed per
 *    connection, with buffers from the worker's provided-buffer ring, and
 *    hands every chunk to received(); the chunk is valid only during the
 *    call. No recv SQE per request, no receive buffer per connection (an
 *    idle connection holds none), as in the servers we measure.
 *  - A connection has at most one send in flight. The worker finishes
 *    short sends itself; the mode sees one sent() per lg_conn_send().
 *  - EOF, errors and -errno returned by a mode callback end the
 *    connection: it is counted as failed and never used again.
 *  - The worker calls request() only on a connection that is ready and
 *    not busy, and only while the phase runs; the mode ends the request
 *    with lg_request_done(), which may call request() again at once.
 *  - Closed loop (default): a connection starts its next request as soon
 *    as the last one is done. Open loop (-r rate): the worker starts
 *    requests on a fixed schedule instead (worker.c), and a request's
 *    latency runs from the time it was due, not from when it went out.
 *    Modes need not know which loop drives them.
 * Everything runs on the worker's thread.
 */

#include <liburing.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct lg_conn;
struct lg_worker;

/*
 * Latency histogram, log-linear: exact below 32 ns, then 32 buckets per
 * power of two, so a reported value is within 1/32 (3.2%) of the real one.
 */
#define LG_HIST_SUB_BITS 5
#define LG_HIST_SUB	 (1u << LG_HIST_SUB_BITS)
#define LG_HIST_BUCKETS	 ((64 - LG_HIST_SUB_BITS + 1) * LG_HIST_SUB)

struct lg_hist {
	uint64_t count;
	uint64_t sum_ns;
	uint64_t max_ns;
	uint64_t bucket[LG_HIST_BUCKETS];
};

void lg_hist_reset(struct lg_hist *h);
void lg_hist_add(struct lg_hist *h, uint64_t ns);
void lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src);
/* The value at quantile q (0..1): its bucket's midpoint, at most max. */
uint64_t lg_hist_quantile(const struct lg_hist *h, double q);

typedef int lg_conn_fn(struct lg_conn *c);
typedef int lg_recv_fn(struct lg_conn *c, const unsigned char *data, size_t n);
struct lg_opts;
typedef int lg_mode_init_fn(const struct lg_opts *o);

/* A mode: one kind of session. NULL callbacks do nothing. */
struct lg_mode {
	const char *name;
	const char *help;
	/* Once, before any worker starts: check options, shared data. */
	lg_mode_init_fn *init;
	/* Per connection: allocate c->priv. fini frees it. */
	lg_conn_fn *conn_init;
	void (*conn_fini)(struct lg_conn *c);
	/* TCP is up: open the session, then call lg_conn_ready(). */
	lg_conn_fn *connected;
	/* Start one request (NULL: the mode makes none, as idle). */
	lg_conn_fn *request;
	/* All of the last lg_conn_send() went out. */
	lg_conn_fn *sent;
	/* n > 0 bytes arrived; data is valid during the call only. */
	lg_recv_fn *received;
};

extern const struct lg_mode lg_mode_echo;
extern const struct lg_mode lg_mode_idle;
extern const struct lg_mode lg_mode_hold;
extern const struct lg_mode lg_mode_imap_idle;
extern const struct lg_mode lg_mode_imap_noop;
extern const struct lg_mode lg_mode_imap_fetch;
extern const struct lg_mode lg_mode_imap_select;

/*
 * TLS client sessions over the worker's I/O (tls.c), for modes that
 * offer -T: OpenSSL runs on memory BIOs, the ring moves the records.
 * Records come in through lg_tls_feed(), go out through lg_tls_flush()
 * (at most one send in flight: call it again from sent()).
 */
struct lg_tls;
int lg_tls_global_init(void);
int lg_tls_new(struct lg_tls **t_out);
void lg_tls_free(struct lg_tls *t);
/* Handshake step: 1 done, 0 wants more input, -errno failed. */
int lg_tls_handshake(struct lg_tls *t);
/* Encrypt buf into the outgoing records. */
int lg_tls_write(struct lg_tls *t, const void *buf, size_t len);
/* Records received from the peer. */
int lg_tls_feed(struct lg_tls *t, const unsigned char *data, size_t n);
/* Decrypted bytes into buf: > 0 bytes, 0 none yet, -errno failed (a
 * close_notify from the peer is -ECONNRESET). */
int lg_tls_read(struct lg_tls *t, void *buf, size_t len);
/* Send what is pending, unless a send is in flight. */
int lg_tls_flush(struct lg_tls *t, struct lg_conn *c);
/* The last send went out: its buffer is free again. */
void lg_tls_sent(struct lg_tls *t);

struct lg_opts {
	const struct lg_mode *mode;
	struct sockaddr_storage dst;
	socklen_t dst_len;
	const char *target; /* as given */
	unsigned conns;
	unsigned threads;
	size_t size;		 /* message bytes (echo) */
	double duration_s;	 /* measured interval */
	double warmup_s;	 /* unmeasured run before it */
	unsigned src_addrs;	 /* 0: connect() picks the source */
	struct in_addr src_base; /* first source address */
	unsigned window;	 /* connects in flight per worker */
	bool gate;		 /* wait for stdin around the measurement */
	bool direct;		 /* connections as direct descriptors */
	double rate;		 /* open loop: requests/s in all; 0: closed */
	bool tls;		 /* TLS client (modes that support it) */
	bool busy_poll;		 /* poll the ring, never sleep, while running */
	const char *user;	 /* -U: login name (imap-idle) */
	const char *pass;	 /* -P: its password */
	const char *mailbox;	 /* -M: mailbox to select (imap-*) */
};

enum lg_conn_state {
	LG_CONN_NEW,
	LG_CONN_CONNECTING,
	LG_CONN_OPENING, /* connected, mode opening the session */
	LG_CONN_READY,
	LG_CONN_BUSY, /* a request is running */
	LG_CONN_DEAD,
};

struct lg_conn {
	struct lg_worker *w;
	void *priv; /* the mode's */
	int fd;		/* the socket, or its slot in the ring (direct) */
	unsigned index; /* over all workers */
	enum lg_conn_state state;
	bool send_busy;
	bool recv_armed; /* the multishot recv is live */
	const unsigned char *sbuf;
	size_t slen, soff;
	uint64_t t_start; /* request start, CLOCK_MONOTONIC ns; open
			   * loop: when the request was due */
	uint64_t next_j;  /* open loop: this connection's next request */
};

enum lg_phase {
	LG_PHASE_CONNECT,
	LG_PHASE_RUN,	/* requests are started */
	LG_PHASE_DRAIN, /* deadline passed: let running ones finish */
	LG_PHASE_HOLD,	/* no requests; connections stay open */
};

struct lg_worker {
	const struct lg_opts *o;
	unsigned id;
	struct io_uring ring; /* set up on the worker's thread */
	bool ring_live;
	struct io_uring_buf_ring *br; /* provided buffers, group 0 */
	unsigned char *bufs;
	unsigned nbufs;
	unsigned buf_size;
	uint64_t enobufs; /* recvs the kernel ended for want of buffers */
	bool failed;	  /* a phase returned an error */
	pthread_t thread;
	struct lg_conn *conns;
	unsigned nconns;
	unsigned next_connect; /* next conns[] index to open */
	unsigned connecting, opening, ready, busy, dead;
	enum lg_phase phase;
	bool record;
	uint64_t deadline_ns;
	struct lg_hist hist;
	uint64_t requests;
	uint64_t errors;     /* recorded requests the server refused */
	uint64_t data_bytes; /* recorded payload bytes (modes that count) */
	/*
	 * Open loop (-r). Slot k of the worker's schedule is request k / n
	 * of its connection k % n, due at t0 + (index + j * conns) * period:
	 * every connection once per conns * period, all of them spread
	 * evenly over it, within and across the workers.
	 */
	uint64_t sched_t0;
	double period_ns;      /* 1e9 / rate */
	uint64_t slot;	       /* next slot not yet looked at */
	bool timer_armed;      /* an IORING_OP_TIMEOUT is in flight */
	struct __kernel_timespec timer_ts;
	uint64_t sched;	       /* recorded: slots due before the deadline */
	uint64_t started;      /* recorded: requests started */
	uint64_t backlogged;   /* of those: due while their conn was busy */
	struct lg_hist lag;    /* recorded: due -> sent, conn free when due */
	int first_err; /* -errno of the first failed connection */
	const char *first_err_what;
};

uint64_t lg_now_ns(void);

/* Queue a send of buf[0, len); buf must stay valid until sent(). */
int lg_conn_send(struct lg_conn *c, const void *buf, size_t len);
/* The session is open: the connection may take requests. */
void lg_conn_ready(struct lg_conn *c);
/* The running request is complete; records its latency. Returns 0 or
 * what starting the next request returned. */
int lg_request_done(struct lg_conn *c);

/* The running request failed at the server (an IMAP NO or BAD): it still
 * counts as a request; the result line reports errors=. */
void lg_request_error(struct lg_conn *c);
/* Payload bytes the running request received (data_bytes=). */
void lg_request_bytes(struct lg_conn *c, uint64_t n);

/*
 * Worker lifecycle (worker.c); main.c sequences the phases. The ring is
 * created by lg_worker_connect(), on the thread that then drives it
 * (SINGLE_ISSUER ties a ring to its creator); fini may run elsewhere.
 */
int lg_worker_init(struct lg_worker *w, const struct lg_opts *o, unsigned id,
		   unsigned first, unsigned n);
void lg_worker_fini(struct lg_worker *w);
int lg_worker_connect(struct lg_worker *w);
int lg_worker_run(struct lg_worker *w, double secs, bool record);
int lg_worker_hold(struct lg_worker *w, double secs);

#endif /* RINGPROT_BENCH_LOADGEN_H */
