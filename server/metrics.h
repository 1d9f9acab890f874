/* SPDX-License-Identifier: BSD-3-Clause */
/* server/metrics: live counters per worker, Prometheus text, SIGUSR1 dump. */
#ifndef RINGPROT_SRV_METRICS_H
#define RINGPROT_SRV_METRICS_H

/*
 * Each worker thread owns one shard and is its only writer: a bump is a
 * relaxed load and store of its own atomic (no lock, no read-modify-write
 * across cores). Readers (render, dump) only load atomics and sum shards,
 * from any thread, at any time; a total may lag a bump by a moment but
 * never tears.
 *
 * Two kinds of series:
 *  - service series (connections, bytes, auth...): one value per service
 *    per worker, rendered summed over workers as
 *    ringprot_accepts_total{service="imap"};
 *  - worker series (ring statistics, ENOBUFS): one value per worker,
 *    rendered as ringprot_ring_enters_total{worker="0"}.
 * Counters only grow and are rendered with a _total suffix; gauges are
 * signed (a gauge may go up on one worker and down on another; the sum is
 * right).
 */

#include <stdatomic.h>
#include <stdint.h>

#include <ringprot/buf.h>
#include <ringprot/common.h>

struct protstream;
struct ur_loop_stats;

enum srv__msvc {
	SRV__M_CONNECTIONS_OPEN,   /* gauge */
	SRV__M_CONNECTIONS_PARKED, /* gauge */
	SRV__M_CONNECTIONS,	   /* counter: connections served */
	SRV__M_ACCEPTS,
	SRV__M_ACCEPT_ERRORS,
	SRV__M_REFUSED_LIMIT,
	SRV__M_BYTES_IN,
	SRV__M_BYTES_OUT,
	SRV__M_ERRORS,
	SRV__M_TIMEOUTS,
	SRV__M_TLS_HANDSHAKES,
	SRV__M_TLS_FAILURES,
	SRV__M_AUTH_SUCCESS,
	SRV__M_AUTH_FAILURE,
	SRV__M_PROXY_ERRORS,
	SRV__M_SVC_COUNT,
};

enum srv__mworker {
	SRV__M_RING_ENTERS,
	SRV__M_RING_SUBMITS,
	SRV__M_RING_CQES,
	SRV__M_RING_SQ_FULL,
	SRV__M_RING_CQ_OVERFLOW,
	SRV__M_RING_ENOBUFS,	  /* provided-buffer ops that found none */
	SRV__M_RING_OPS_INFLIGHT, /* gauge */
	SRV__M_FIBERS_LIVE,	  /* gauge */
	SRV__M_STACKS_MAPPED,	  /* gauge */
	SRV__M_WORKER_COUNT,
};

/* One worker's values. Private fields: use the inline calls below. */
struct srv__metrics_shard {
	_Atomic uint64_t *svc; /* [nservices][SRV__M_SVC_COUNT] */
	_Atomic uint64_t worker[SRV__M_WORKER_COUNT];
	unsigned nservices;
} __attribute__((aligned(64)));

struct srv__metrics;

/*
 * nworkers shards, each with a row for each of the nservices service
 * names (copied; label values, escaped on render). nservices 0: one row
 * with no service label. Returns 0, -EINVAL (nworkers 0), -ENOMEM.
 */
int srv__metrics_new(unsigned nworkers, const char *const *services,
		     unsigned nservices,
		     struct srv__metrics **m_out) RINGPROT_MUST_CHECK;
/* After every worker stopped bumping; accepts NULL, clears *m. */
void srv__metrics_free(struct srv__metrics **m);

/* Worker w's shard, for that worker's thread only; NULL if w >= nworkers. */
struct srv__metrics_shard *srv__metrics_shard(struct srv__metrics *m,
					      unsigned w);

/* Add n to service svc's series id (svc < nservices, or 0). */
static inline void srv__metric_add(struct srv__metrics_shard *s, unsigned svc,
				   enum srv__msvc id, uint64_t n)
{
	_Atomic uint64_t *v = &s->svc[(size_t)svc * SRV__M_SVC_COUNT + id];

	/* Single writer: no locked read-modify-write. */
	atomic_store_explicit(v,
			      atomic_load_explicit(v, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline void srv__metric_inc(struct srv__metrics_shard *s, unsigned svc,
				   enum srv__msvc id)
{
	srv__metric_add(s, svc, id, 1);
}

/* Gauges only: wraps below zero in this shard; the sum is right. */
static inline void srv__metric_dec(struct srv__metrics_shard *s, unsigned svc,
				   enum srv__msvc id)
{
	srv__metric_add(s, svc, id, (uint64_t)-1);
}

static inline void srv__metric_worker_add(struct srv__metrics_shard *s,
					  enum srv__mworker id, uint64_t n)
{
	_Atomic uint64_t *v = &s->worker[id];

	atomic_store_explicit(v,
			      atomic_load_explicit(v, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

/*
 * Publish the worker's loop statistics (ur_loop_stats() on its own loop,
 * e.g. from a periodic timer or a posted request): the ring counters and
 * gauges are set, ENOBUFS is left alone.
 */
void srv__metrics_publish_ring(struct srv__metrics_shard *s,
			       const struct ur_loop_stats *st);

/* Sum of one service series over workers (svc -1: over services too). */
int64_t srv__metrics_total(const struct srv__metrics *m, int svc,
			   enum srv__msvc id);
/* Sum of one worker series over workers. */
int64_t srv__metrics_worker_total(const struct srv__metrics *m,
				  enum srv__mworker id);

/*
 * Append the Prometheus text exposition (format 0.0.4) of every series to
 * out (grown with realloc; the caller frees out->s). Reads only atomics:
 * any thread, any time. Returns 0, or -ENOMEM (out keeps what it had).
 */
int srv__metrics_render(const struct srv__metrics *m,
			struct buf *out) RINGPROT_MUST_CHECK;

/* SIGUSR1: one logfmt line (event=metrics) of the totals, at info. */
void srv__metrics_log(const struct srv__metrics *m);

/*
 * The /metrics HTTP endpoint, one request per connection, run on the
 * connection's fiber over its two streams (the read timeout is in's).
 * Reads one HTTP/1.0 or 1.1 request head (request line at most 1024
 * bytes, header lines at most 4096, at most 64 of them), answers and
 * flushes, always with Connection: close:
 *   GET or HEAD /metrics (a query string is ignored): 200, text/plain;
 *     version=0.0.4; charset=utf-8, Content-Length, the body from render;
 *   another path: 404; /metrics with another method: 405 (Allow);
 *   a malformed or oversized head, or another HTTP version: 400;
 *   render failing: 500.
 * The caller closes the connection after (a shutdown(SHUT_WR) first lets
 * the client read the answer before any unread input resets it).
 * Returns the status sent, or -EPIPE if the request ended (EOF, timeout,
 * stream error) before its head was complete and nothing was sent, or
 * -EIO if writing the answer failed.
 */
/*
 * Appends the exposition to out (an empty buf) in malloc'd memory, which
 * srv__metrics_http frees; returns 0 or -errno (the client gets a 500).
 */
typedef int srv__metrics_render_fn(struct buf *out, void *rock);
int srv__metrics_http(struct protstream *in, struct protstream *out,
		      srv__metrics_render_fn *render,
		      void *rock) UR_MAY_YIELD RINGPROT_MUST_CHECK;

/* A srv__metrics_render_fn over a struct srv__metrics (the rock). */
int srv__metrics_render_cb(struct buf *out, void *rock) RINGPROT_MUST_CHECK;

#endif /* RINGPROT_SRV_METRICS_H */
