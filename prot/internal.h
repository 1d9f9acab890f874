/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/internal: what the protstream's files share; not installed. */
#ifndef RINGPROT_PROT_INTERNAL_H
#define RINGPROT_PROT_INTERNAL_H

#include <ringprot/prot.h>
#include <ringprot/uring.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

/*
 * Who owns what (one file per concept):
 *   prot.c      lifecycle, setters, status, the errno -> EOF conversion,
 *               getc/ungetc/read/fgets, putc/write/printf, telemetry
 *   fill.c      refill (spec 2.3), read sources, prot__input_ready()
 *   flush.c     flush engine, output queue, read-stream drain
 *   buf.c       struct buf growth
 *   waitevent.c wait events and prot__wait_input()   (wait-event helper)
 *   park.c      prot_release, prot_input_pending, prot_memory
 *   select.c    prot_select, protgroups               (select helper)
 *   imap-fmt.c  IMAP string output                    (fmt helper)
 *   layer*.c    TLS / SASL / DEFLATE                  (next session)
 */

/*
 * Branch hints for the exported fast paths, and the attribute that keeps
 * their slow paths out of line (own section, no frame in the caller).
 */
#define prot__likely(x) __builtin_expect(!!(x), 1)
#define PROT__COLD	__attribute__((noinline, cold))

/* prot_setdirectio(): speculative syscalls on (fill.c, flush.c). */
extern bool prot__directio;

/* How a stream reaches its bytes. */
enum prot__kind {
	PROT__K_SOCKET, /* fd is a socket (or a direct descriptor): recv/send */
	PROT__K_FILE,	/* fd is a pipe, file, tty...: read/writev */
	PROT__K_MAP,	/* prot_readmap() */
	PROT__K_CB,	/* prot_readcb() */
	PROT__K_BUF,	/* prot_writebuf() */
	PROT__K_NOFD,	/* prot_new(PROT_NO_FD, ...): every I/O fails EBADF */
};

/*
 * Layer seam. A stream carries a chain of layers per direction, applied
 * in Cyrus order: read = TLS -> SASL decode -> INFLATE (rlayers is the
 * TLS end), write = DEFLATE -> SASL encode -> TLS (wlayers is the DEFLATE
 * end). fill.c and flush.c call through this table; the layer files fill
 * it. decode/encode append their output to out and return 0 or -errno,
 * setting l->errtext for the stream's error text (NULL: strerror).
 * decode may also return PROT__LAYER_END: the layer's stream ended
 * cleanly (TLS close_notify) and what it appended is its last plaintext;
 * once that is consumed the stream reads nothing more and reports EOF.
 */
#define PROT__LAYER_END 1

struct prot__layer;
struct prot__layer_ops {
	const char *name;
	/* Chain position, read order: 0 TLS, 1 SASL, 2 DEFLATE. */
	int rank;
	/* Wire-side bytes in (in_len 0: produce what is pending). */
	int (*decode)(struct prot__layer *l, const unsigned char *in,
		      size_t in_len, struct buf *out);
	/* Can decode() produce output with no new input? */
	bool (*pending)(const struct prot__layer *l);
	/*
	 * The raw source ended (a read returned 0). 0: a clean end; -errno
	 * with errtext set: the layer was cut short (TLS: a partial record).
	 * NULL: always clean.
	 */
	int (*eof)(struct prot__layer *l);
	/*
	 * One plaintext chunk of at most the stream's maxplain bytes or,
	 * for the whole-buffer chunks of a large write when this layer is
	 * the first of the chain, of at most enc_chunk bytes.
	 */
	int (*encode)(struct prot__layer *l, const unsigned char *in,
		      size_t in_len, struct buf *out);
	/* 0: maxplain always (SASL packets, DEFLATE's sync flush points). */
	size_t enc_chunk;
	/*
	 * Largest raw input decode takes at once when this layer is the
	 * first of the read chain (0: PROT_BUFSIZE, a window at a time).
	 */
	size_t dec_chunk;
	/*
	 * prot_free is about to drop s: called for each layer of s after
	 * prot__wait_fini and BEFORE prot__flush_fini, so the buffer and the
	 * output queue are still as the application left them. Best effort,
	 * must not wait for the peer (one non-blocking op at most). NULL: none.
	 */
	void (*close)(struct prot__layer *l, struct protstream *s) UR_MAY_YIELD;
	void (*destroy)(struct prot__layer *l);
	/*
	 * prot_release(): give back what the layer can rebuild at its next
	 * decode/encode, keeping what the peer's next bytes depend on (the
	 * zlib dictionary). Best effort: a layer in the middle of something
	 * (a DEFLATE block half received) keeps its state. Never does I/O.
	 * NULL: nothing to give back.
	 */
	void (*release)(struct prot__layer *l);
	/*
	 * Heap bytes the layer holds now, for prot_memory(); state shared
	 * by the two streams of a connection (TLS) counts on the read
	 * stream only. NULL: the layer's small records only.
	 */
	size_t (*memory)(const struct prot__layer *l);
};
struct prot__layer {
	const struct prot__layer_ops *ops;
	struct prot__layer *next;
	void *state;
	size_t window; /* last read layer: bytes per exposed window (0: 4096) */
	/* Set by a failing op; owned by the layer, valid until destroy;
	 * NULL: strerror of the returned errno. */
	const char *errtext;
};

/* Push-back kept across a wait on a socket stream (see hist below). */
#define PROT__HIST 256

/*
 * What only a read stream has, allocated after its struct prot__stream
 * (the flexible r[] there).
 */
struct prot__rtail {
	struct ur_op rop; /* the read op (never on a fiber stack) */
	/*
	 * The tail of a provided-buffer window, kept when that buffer goes
	 * back before a wait: a refill that ends in EOF, an error or EAGAIN
	 * leaves the window as it was (Cyrus): up to PROT__HIST unread and
	 * consumed bytes survive, without holding a buffer while idle.
	 */
	unsigned char hist[PROT__HIST];
};

/* Bytes per bulk read (fill.c). */
#define PROT__BULK_READ 65536

/* flush.c's send op record; outlives the stream while the kernel owns it. */
struct prot__sender;

/* One block of queued wire bytes of a non-blocking write stream. */
struct prot__qblock {
	struct prot__qblock *next;
	size_t off; /* bytes already sent */
	size_t len; /* bytes held */
	size_t cap;
	unsigned char data[];
};

/*
 * The whole stream: the public Cyrus struct first, private state after.
 * prot_new() and friends allocate this; struct protstream * converts
 * with prot__of().
 */
struct prot__stream {
	struct protstream pub;
	enum prot__kind kind;

	/*
	 * Read side (fill.c). The exposed window (pub.buf/ptr/cnt) is at most
	 * PROT_BUFSIZE bytes of the current source region src[0..src_len),
	 * of which src_off bytes have been exposed so far. The region is a
	 * provided buffer (bid >= 0, from br), rbuf, the readmap memory, or
	 * the decoded layer output dec.
	 */
	const unsigned char *src;
	size_t src_len, src_off;
	struct ur_bufring *br; /* the loop's shared ring, referenced */
	int bid;	       /* provided buffer held, -1: none */
	int keep_bid; /* buffer kept for a window after a failed refill */
	/* fill.c: how a file reads (FR_* there), 0 until the first read. */
	uint8_t file_read;
	/* FR_AHEAD: where the file position stands after the exposed window. */
	off_t ahead_pos;
	unsigned char *rbuf; /* own PROT_BUFSIZE buffer, lazily */
	/*
	 * Unread input kept by prot_release() (park.c: fill.c's
	 * prot__fill_release): the window, the push-back before it and the
	 * rest of the source region, copied out of the buffers that went
	 * back. While src == park it is the held region; after a failed
	 * refill of a window of more than PROT__HIST bytes it is kept as
	 * keep_bid is, until a refill succeeds. park_size: its length.
	 */
	unsigned char *park;
	size_t park_size;
	struct buf dec; /* layer output not yet exposed */
	size_t dec_off;
	/* dec, set aside for a window a decode would overwrite (fill.c) */
	struct buf dec_keep;
	/*
	 * Read timing. deadline_ns is the read deadline on CLOCK_MONOTONIC
	 * (0: none), kept equal to pub.timeout_mark by prot.c and fill.c:
	 * set by prot_settimeout/prot_resettimeout and restarted at every
	 * refill (spec 2.11). Read by waitevent.c and select.c.
	 */
	uint64_t deadline_ns;
	uint64_t nettime_ns; /* prot_nettime() */
	bool nettime_on;     /* prot_nettime() was called: keep time */

	/* Wait-event state: owned, allocated and freed by waitevent.c. */
	void *wait;

	/* Write side (flush.c). */
	struct prot__qblock *q_head, *q_tail;
	size_t q_bytes; /* unsent bytes in the queue */
	size_t q_limit;
	unsigned wtimeout_ms;	  /* write timeout (flush.c), 0: none */
	struct prot__sender *snd; /* send op and its iovecs, lazily */
	/*
	 * fd is a memory character device (/dev/null, /dev/zero, /dev/full,
	 * /dev/urandom...), whose writes never wait: flush.c writes to it
	 * with writev(2) before the ring (write_dev()). Set by prot_new.
	 */
	bool mem_dev;
	struct buf enc; /* encoded output scratch (layers) */

	/* Layers. */
	struct prot__layer *rlayers, *wlayers;
	bool layer_end; /* a read layer returned PROT__LAYER_END */
	/*
	 * fill.c's bulk reads under a layer that decodes whole reads (TLS):
	 * after a read that filled its buffer, the next is a non-blocking
	 * recv of PROT__BULK_READ bytes into rbuf, made that large
	 * (rbuf_bulk); one that finds less, or nothing, ends the run
	 * (bulk_on) and the buffer goes: an idle stream holds none.
	 */
	bool bulk_on, rbuf_bulk;

	/* printf scratch. */
	char *fmt;
	size_t fmt_size;

	bool error_static; /* pub.error is a string literal (no memory) */
	int err;	   /* -errno prot__fail() last turned into EOF */

	/*
	 * Read streams only: a write stream is allocated without it (336
	 * bytes less per connection). Never touched on a write stream.
	 */
	struct prot__rtail r[];
};

static inline struct prot__stream *prot__of(struct protstream *s)
{
	return (struct prot__stream *)s;
}

static inline const struct prot__stream *prot__cof(const struct protstream *s)
{
	return (const struct prot__stream *)s;
}

/* Ask the kernel to cancel op; one that is not in flight needs nothing. */
static inline void prot__cancel(struct ur_op *op)
{
	if (ur_op_cancel(op) < 0) {
		/* -ENOENT: completed; else refused: it ends by itself */
	}
}

/*
 * Cancel op and wait for its final completion, whose result nobody
 * wants (the caller is failing or tearing down): the kernel owns op's
 * buffer until then.
 */
static inline void prot__cancel_wait(struct ur_op *op)
{
	prot__cancel(op);
	if (ur_op_wait(op) < 0) {
		/* -ECANCELED, or the error that ended it */
	}
}

/*
 * prot.c
 */

/*
 * The one place an errno becomes Cyrus's EOF plus error text: sets the
 * sticky error to text, or to strerror(-err) when text is NULL (an error
 * already set is kept), sets errno to -err and returns EOF.
 * Texts used: "idle for too long" (-ETIMEDOUT from a read wait),
 * "output queue full" (-ENOBUFS from the write queue bound).
 */
int prot__fail(struct protstream *s, int err, const char *text);

/* Programming errors (ungetc misuse): the fatal hook, then prot__fail. */
int prot__fatal(struct protstream *s, const char *msg);

/*
 * For layer code that calls a prot_* function: the -errno behind the EOF
 * it just returned, as prot__fail() recorded it on s (the global errno
 * may have changed since), or -EIO if that call failed without one
 * because s already was at its end.
 */
int prot__err(struct protstream *s);

/* Telemetry record: dir '<' (input) or '>' (output), then n bytes. */
void prot__log(struct protstream *s, char dir, const void *p, size_t n);

/* Restart the read window: timeout_mark and deadline_ns = now + timeout. */
void prot__touch_timeout(struct protstream *s);

/*
 * Around a raw read or write, for prot_nettime(). Clock reads cost about
 * 25 ns each here, so a stream nobody has asked about takes none: start
 * returns 0 and end then adds nothing.
 */
static inline uint64_t prot__net_start(const struct prot__stream *ps)
{
	return ps->nettime_on ? ur_now_ns(CLOCK_MONOTONIC) : 0;
}

static inline void prot__net_end(struct prot__stream *ps, uint64_t t0)
{
	if (t0 != 0)
		ps->nettime_ns += ur_now_ns(CLOCK_MONOTONIC) - t0;
}

/* Append n bytes to b (buf.c). Returns 0 or -ENOMEM. */
int prot__buf_append(struct buf *b, const void *p,
		     size_t n) RINGPROT_MUST_CHECK;
/* Make room for n more bytes. Returns 0 or -ENOMEM. */
int prot__buf_reserve(struct buf *b, size_t n) RINGPROT_MUST_CHECK;
void prot__buf_release(struct buf *b);

/*
 * fill.c
 */

/*
 * Can a read on s return a byte without waiting: bytes in the window, in
 * the rest of the held source region, in decoded layer output, or inside
 * a layer (TLS record, zlib)? EOF and error count as ready too (a read
 * returns at once). Never does I/O. For prot_select.
 */
bool prot__input_ready(const struct protstream *s);

/*
 * prot_release() of a read stream: give back every buffer, keeping the
 * unread input (hist, or one exact-size copy, park). 0, -EBUSY with the
 * read op in flight, or -ENOMEM (nothing changed). Does not yield.
 */
int prot__fill_release(struct protstream *s) RINGPROT_MUST_CHECK;
/* Heap bytes the read side holds (buffers, held provided buffers). */
size_t prot__fill_memory(const struct protstream *s);

/* Drop the held source (give a provided buffer back) and the window. */
void prot__fill_discard(struct protstream *s);
/* Free the read side: discard, unreference the buffer ring, free rbuf. */
void prot__fill_fini(struct protstream *s) UR_MAY_YIELD;

/*
 * flush.c
 */

/*
 * prot_write's slow path (len >= free space, len > 0): fill the buffer,
 * flush in the stream's mode, and go on, sending whole buffers of a large
 * write in one gathered send where no layer needs per-chunk encoding.
 * Returns 0 or EOF.
 */
int prot__write_big(struct protstream *s, const unsigned char *p,
		    size_t len) UR_MAY_YIELD;

/*
 * Flush-on-read's forced flush in two halves (flush.c): begin starts the
 * send (or flushes at once where it cannot), end waits for it and takes
 * the bytes from the buffer. Between them the stream holds its output.
 */
int prot__flush_begin(struct protstream *s) UR_MAY_YIELD;
int prot__flush_end(struct protstream *s) UR_MAY_YIELD;

/* Does write stream s hold unsent output (buffer or queue)? */
bool prot__has_output(const struct protstream *s);
/* prot_flush on a read stream (spec 2.7.5). Returns 0. */
int prot__drain(struct protstream *s) UR_MAY_YIELD;
/* Cancel and reap the background send, free the queue. */
void prot__flush_fini(struct protstream *s) UR_MAY_YIELD;

/*
 * prot_release() of a write stream: free the buffer, the sender, the
 * printf and layer scratch. 0, or -EBUSY with output pending (buffered,
 * queued or in a send). Does not yield.
 */
int prot__flush_release(struct protstream *s) RINGPROT_MUST_CHECK;
/* A released write stream's buffer, again. 0, or EOF (ENOMEM, failed). */
int prot__wbuf_get(struct protstream *s);
/* Heap bytes the write side holds (buffer, sender, queue, scratch). */
size_t prot__flush_memory(const struct protstream *s);

/*
 * layer.c: the mechanics layer-tls.c, layer-sasl.c and layer-zlib.c
 * share. prot__layer_push puts l into s's chain at its rank (write
 * stream: pending output is flushed in the old mode first; read stream:
 * unread input is re-fed into l, or with discard dropped and its length
 * returned through *discarded_out). Returns 0 or -errno; on failure l is
 * not linked (the caller destroys it).
 */
int prot__layer_push(struct protstream *s, struct prot__layer *l, bool discard,
		     size_t *discarded_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/* The layer of s whose ops->name is name, or NULL. */
struct prot__layer *prot__layer_find(const struct protstream *s,
				     const char *name);
/* Unlink and destroy the layer of s named name (if any). */
void prot__layer_remove(struct protstream *s, const char *name);

/*
 * waitevent.c: the wait contract between fill.c and the wait events.
 *
 * prot__wait_input(s, recv_op)
 *   fill.c calls this on a read stream s whose window is empty, when s has
 *   a read timeout (read_timeout > 0, deadline_ns != 0) or is non-blocking
 *   (dontblock), right before it would otherwise wait for input (Cyrus's
 *   rule, spec 2.13: a blocking stream without a timeout never runs its
 *   events in prot_fill). The recv/read op recv_op has been started on the
 * thread's loop with op->fn == NULL and op->data == NULL; this function may set
 *   op->fn and op->data before it first yields (no completion can be
 *   dispatched earlier), but must set both back to NULL before it returns
 *   (fill.c then uses ur_op_cancel/ur_op_wait, which require fn == NULL).
 *
 *   recv_op == NULL means input is already available (bytes left in a
 *   large provided buffer): run the due events once, as Cyrus does before
 *   each read (spec 2.13, 5.5 #52), and return 0 without waiting. fill.c
 *   makes this call only when s has events (and a timeout or dontblock).
 *
 *   Otherwise: run the due events (mark <= now) in list order, callbacks
 *   on this fiber (they may write and flush, add events, remove any event
 *   including themselves), then wait until the first of
 *     - recv_op completes: return 0 (result in recv_op->res, untouched);
 *     - an event comes due: run the due events, re-arm the kept ones, and
 *       go on waiting (marks moved by hand are re-read before every wait;
 *       a kept event whose mark is still <= now fires again at the next
 *       loop tick: clamped, never EINVAL);
 *     - deadline_ns passes (blocking stream): return -ETIMEDOUT, but only
 *       after recv_op has had at least one loop turn (a deadline that
 *       passed while the application was busy still lets input that is
 *       already there through, as Cyrus's zero-length select does). recv_op
 *       is still in flight: fill.c cancels it (ur_op_cancel + ur_op_wait)
 *       and gives back any provided buffer (and uses the bytes if the op
 *       won the race with the cancel);
 *     - non-blocking stream (dontblock): after the one pass of due events,
 *       recv_op gets one loop turn (fill.c starts socket recvs with
 *       MSG_DONTWAIT, so they complete within it); if it completed, return
 *       0, else -EAGAIN with recv_op in flight (fill.c cancels as above).
 *   Before parking, the read deadline is armed lazily (one timer per
 *   stream, pushed later without an SQE: spec 6 / DESIGN "read timeouts
 *   cost nothing per request"). Signals never interrupt the wait.
 *   A cancelled fiber returns -ECANCELED with recv_op in flight.
 *   Any other -errno: fill.c cancels recv_op and fails the stream.
 *   Works in a fiber (parks) and outside any fiber (drives the loop).
 */
int prot__wait_input(struct protstream *s,
		     struct ur_op *recv_op) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * Run the due wait events of s once (mark <= now, list order), on the
 * calling fiber, as prot_select does for its members. Returns true if
 * any callback ran. May yield (callbacks may write and flush).
 */
bool prot__wait_run_due(struct protstream *s) UR_MAY_YIELD;

/*
 * Called by prot_free() (read and write streams) before the stream's memory
 * goes: stop every event timer, free the remaining events (Cyrus leaks them)
 * and the wait state. Accepts a stream that never had events. May yield to
 * reap.
 */
void prot__wait_fini(struct protstream *s) UR_MAY_YIELD;

/*
 * Earliest deadline of s, in CLOCK_MONOTONIC ns (marks converted): the smallest
 * event mark and, with a read timeout, deadline_ns; 0 if none. For
 * prot_select (spec 2.14).
 */
uint64_t prot__wait_next_deadline(const struct protstream *s);

/* Is a dispatch or a wait of s under way (prot_release: -EBUSY)? */
bool prot__wait_busy(const struct protstream *s);
/*
 * prot_release(): stop every event timer and the read deadline's (no
 * kernel timeout stays armed), free the wait state if s has no event.
 * The caller checked prot__wait_busy(). Does not yield.
 */
void prot__wait_release(struct protstream *s);
/* Heap bytes of the wait state and the events. */
size_t prot__wait_memory(const struct protstream *s);

#endif /* RINGPROT_PROT_INTERNAL_H */
