/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/: the Cyrus 3.x protstream API (lib/prot.h), over io_uring. */
#ifndef RINGPROT_PROT_H
#define RINGPROT_PROT_H

/*
 * Source compatible with Cyrus IMAP's lib/prot.h: the same functions,
 * macros, callback types and the public struct fields callers touch (see
 * the Cyrus prot spec, sections 0-2). The Cyrus conventions hold here:
 * int results are 0 or EOF, the reason is in prot_error(), "would block"
 * is EOF with errno == EAGAIN. Every call that may wait (UR_MAY_YIELD)
 * parks the calling fiber, or outside any fiber drives the thread's
 * ur_loop; so call them from a fiber or from plain code, never from a
 * ur_op or ur_timer completion callback. Streams belong to the thread
 * (loop) that uses them. The read/write stream mismatches Cyrus asserts
 * on go through the prot_setfatal() hook, then fail with EOF.
 *
 * Deliberate differences from Cyrus 3.x (each pinned by a test):
 *  - bytes_out counts every byte written (Cyrus undercounts prot_write).
 *  - Output calls on a stream with an error return EOF at once (Cyrus's
 *    prot_putc buffers and returns 0 until the buffer fills).
 *  - prot_printf writes the full formatted length, NULs included (the
 *    spec's Cyrus; Debian's Cyrus 3.6 stops at the first NUL).
 *  - IMAP output: 0x1F is not an atom byte (fixed upstream), and
 *    printmap/printamap return EOF if the closing quote cannot be written.
 *  - After a refill that fails on a socket stream, ungetc reaches back
 *    at most 256 bytes (less the unread ones) into the last window: its
 *    buffer went back to the ring while the stream waited. Cyrus keeps
 *    the whole last buffer. Unread bytes are never lost.
 *  - protgroup_copy() copies the members (Cyrus returns an empty group).
 *  - Signals (SIGHUP...) never end a session: there is no EINTR in a wait.
 *  - A wait event returned with a past mark fires at the next tick instead
 *    of killing the stream with "Invalid argument".
 *  - prot_ungetc() misuse calls the prot_setfatal() hook (Cyrus: fatal()
 *    and exit 70); without a hook it returns EOF and the stream takes the
 *    error text ("Can't unwind any more" or "Trying to unput wrong
 *    character") instead of ending the process.
 *  - Non-blocking write streams queue in memory, bounded (see
 *    prot_setqueuelimit), instead of a temporary spill file, and never
 *    change O_NONBLOCK on the fd (no fd flags change at all: the ring
 *    needs none). A queued write reaches the kernel at the loop's next
 *    turn (the next time any blocking call runs, in a plain program).
 *  - Read streams over sockets receive up to 16 KiB per syscall into the
 *    loop's shared provided buffers; the application still sees at most
 *    PROT_BUFSIZE bytes per refill (prot_read, telemetry records, ungetc
 *    allowance and timeout restarts all follow 4096-byte windows).
 *    Read streams over pipes (FIFOs) read up to 64 KiB per read into the
 *    stream's own buffer, with the same 4096-byte windows: a stream may
 *    take up to 64 KiB more from a pipe than it has handed out (Cyrus:
 *    4096).
 *  - prot_free also frees the stream's remaining wait events (Cyrus
 *    leaks them) and prot_rewind frees the old error text.
 *  - Layer switches never serve bytes across the switch as the wrong
 *    kind: input already buffered when prot_setcompress/prot_setsasl is
 *    called is re-fed into the new layer (Cyrus serves it as plaintext,
 *    spec 5.7 #68, or decodes from the buffer start); prot_settls
 *    discards buffered plaintext (STARTTLS injection, CVE-2011-0411).
 *  - prot_settls takes an SSL whose handshake is complete and moves it to
 *    the stream's own BIOs (ciphertext goes through the ring); renegotiation is
 *    refused; SSL errors give "TLS error: <reason>". When the last stream
 *    lets go of such an SSL it gets socket BIOs on its fds back, so the
 *    caller's own SSL_shutdown (Cyrus's tls_reset_servertls) reaches the
 *    peer as in Cyrus. A session from pl_tls_accept/pl_tls_connect sends
 *    close_notify itself when its write stream is freed (best effort,
 *    never after an error, the peer's EOF, or output left unsent).
 *  - Layers push in protocol order only (TLS, then SASL, then DEFLATE);
 *    out of order: EOF, errno EINVAL.
 *  - Without the library (OpenSSL, libsasl2, zlib) in the build, the
 *    setters fail: prot_settls and prot_setsasl with the stream error
 *    "... not supported in this build" (no plaintext leaves a stream the
 *    caller believes is protected), prot_setcompress with EOF, errno
 *    ENOTSUP, the stream still usable.
 *  - prot_select runs its members' due wait events (Cyrus never does).
 *  - prot_select always sets *extra_read_flag (Cyrus leaves it stale when
 *    a member is ready at once); the extra fd then gets a zero-timeout
 *    probe and counts in the result if readable.
 *  - prot_select reports every member past its read deadline (Cyrus: only
 *    the one with the earliest deadline); a NULL group is an empty group;
 *    no FD_SETSIZE limit.
 *  - A wait-event callback that returns NULL without removing its event
 *    has it removed (Cyrus keeps the node on the list).
 *  - After fork(), the child's streams run on a loop of the child's own.
 *    Streams opened before the fork are the parent's: the child must not
 *    use them; freeing one that has nothing in flight (no timeout, wait
 *    event or unfinished flush) is safe. Cyrus's services open their
 *    streams after fork.
 *
 * What a Cyrus program gets from this header (test/test-cyrus-api.c
 * compiles one against it and against Cyrus 3.6) differs in that it does
 * not include sasl/sasl.h, openssl/ssl.h, zlib.h or Cyrus's util.h
 * (include what you use; struct buf and BUF_INITIALIZER come from
 * ringprot/buf.h), and struct protstream has none of Cyrus's private
 * fields (big_buffer, bigbuf_*, zbuf, zbuf_size, zlevel, zflush,
 * fixedsize, dontblock_isset), which no Cyrus code outside lib/prot.c
 * uses.
 */

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>  /* EOF */
#include <stdlib.h> /* as Cyrus's prot.h: callers free() with it */
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>

#include <ringprot/buf.h>
#include <ringprot/common.h>

#define PROT_BUFSIZE	       4096
#define PROT_NO_FD	       -1
#define PROT_EOF_STRING	       "end of file reached"
#define PROTGROUP_SIZE_DEFAULT 32

/*
 * SASL and TLS objects are opaque here: prototypes use the struct tags
 * (sasl.h: typedef struct sasl_conn sasl_conn_t; OpenSSL: typedef struct
 * ssl_st SSL;), so no SASL or OpenSSL header is needed. The Cyrus typedef
 * names are provided when those headers are absent and the compiler
 * accepts a repeated identical typedef (C11), so including sasl.h or
 * ssl.h after this header stays valid.
 */
struct sasl_conn;
struct ssl_st;
struct z_stream_s;
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#if !defined(SASL_H)
typedef struct sasl_conn sasl_conn_t;
#endif
#if !defined(OPENSSL_TYPES_H) && !defined(HEADER_OPENSSL_TYPES_H) && \
	!defined(HEADER_SSL_H) && !defined(OPENSSL_SSL_H)
typedef struct ssl_st SSL;
#endif
#endif

struct protstream;
struct protgroup; /* opaque */
struct prot_waitevent;

/* Cyrus callback types (names kept for source compatibility). */
typedef void prot_readcallback_t(struct protstream *s, void *rock);
typedef ssize_t prot_fillcallback_t(unsigned char *buf, size_t len, void *rock);
typedef struct prot_waitevent *
prot_waiteventcallback_t(struct protstream *s, struct prot_waitevent *ev,
			 void *rock);

/*
 * The public part of a stream, with Cyrus's field names and meanings.
 * Callers may read these fields; the ones Cyrus code writes (userdata,
 * dontblock through the macros) may be written. Everything else lives in
 * private state after this struct (prot/internal.h).
 */
struct protstream {
	unsigned char *buf; /* the exposed buffer (window), may be NULL */
	unsigned buf_size;  /* PROT_BUFSIZE */
	unsigned char *ptr; /* read: next byte; write: next free byte */
	unsigned cnt;	    /* read: unread bytes; write: free space */

	int fd;	   /* PROT_NO_FD for map, callback and buf streams */
	int logfd; /* telemetry log, or PROT_NO_FD */

	struct sasl_conn *conn; /* SASL layer, NULL when off */
	int saslssf;
	int maxplain;		  /* largest plaintext chunk per flush (4096) */
	struct ssl_st *tls_conn;  /* TLS layer, NULL when off */
	struct z_stream_s *zstrm; /* non-NULL while (de)compression is on */

	prot_fillcallback_t *fillcallback_proc; /* prot_readcb() */
	void *fillcallback_rock;

	int eof; /* sticky until prot_rewind() */
	int boundary;
	char *error; /* sticky error text, NULL if none */

	int write;	     /* 1: write stream, 0: read stream */
	int dontblock;	     /* application asked for non-blocking mode */
	int read_timeout;    /* seconds, 0: none */
	time_t timeout_mark; /* wall-clock second the read times out */
	struct protstream *flushonread;
	struct buf *writetobuf; /* prot_writebuf() target */

	int can_unget; /* bytes ungetc may still push back */
	uint64_t bytes_in;
	uint64_t bytes_out;
	int isclient;

	prot_readcallback_t *readcallback_proc;
	void *readcallback_rock;
	struct prot_waitevent *waitevent; /* list head, insertion order */

	void *userdata; /* free for the application */
};

/*
 * A timed event on a read stream. The callback runs on the stream's own
 * fiber while it waits for input (so it may write and flush). It returns
 * ev with mark moved into the future to keep it, or NULL after calling
 * prot_removewaitevent(s, ev). Callers may also move mark by hand at any
 * time; the new mark is read before every wait. The node is allocated by
 * prot_addwaitevent() inside a larger private record: never allocate or
 * copy one yourself.
 */
struct prot_waitevent {
	time_t mark; /* wall-clock seconds (CLOCK_REALTIME) */
	prot_waiteventcallback_t *proc;
	void *rock;
	struct prot_waitevent *next;
};

/*
 * Cyrus declares prot_bytes_in() and prot_bytes_out() as functions as well
 * as macros (and never defines the functions); here they exist, so
 * (prot_bytes_in)(s) and &prot_bytes_in work too.
 */
static inline uint64_t prot_bytes_in(struct protstream *s)
{
	return s->bytes_in;
}

static inline uint64_t prot_bytes_out(struct protstream *s)
{
	return s->bytes_out;
}

/* Mode and status macros (as in Cyrus). */
#define prot_BLOCK(s)	    ((s)->dontblock = 0)
#define prot_NONBLOCK(s)    ((s)->dontblock = 1)
#define prot_IS_BLOCKING(s) ((s)->dontblock == 0)
#define prot_IS_EOF(s)	    ((s)->eof != 0)
#define prot_IS_ERROR(s)    ((s)->error != NULL)
#define prot_bytes_in(s)    ((s)->bytes_in)
#define prot_bytes_out(s)   ((s)->bytes_out)
/* The next byte, not consumed (may block and refill); EOF unchanged. */
#define prot_peek(s)	    prot_ungetc(prot_getc(s), (s))

/*
 * Lifecycle. Allocation failure returns NULL (Cyrus exits instead).
 * prot_new: a stream over fd (not owned: never closed by us). Sockets
 * are read through the loop's provided-buffer ring; pipes, files and
 * devices with ring reads at the current file position. A regular file is
 * read 256 KiB ahead, but its file position stays where Cyrus's 4 KiB
 * reads would leave it (the end of the window the application sees), and
 * moving it by hand drops what was read ahead.
 * prot_readmap: zero copy over base..base+len, which must outlive it.
 * prot_free: frees the stream, its buffers, queued output and remaining
 * wait events; cancels and waits for its in-flight ops (may yield). Does
 * not flush, close fd or the log fd, or free SSL/SASL objects. Returns 0.
 */
RINGPROT_API struct protstream *prot_new(int fd, int write);
RINGPROT_API struct protstream *prot_writebuf(struct buf *buf);
RINGPROT_API struct protstream *prot_readmap(const char *base, uint32_t len);
RINGPROT_API struct protstream *prot_readcb(prot_fillcallback_t *proc,
					    void *rock);
RINGPROT_API int prot_free(struct protstream *s) UR_MAY_YIELD;

/* Configuration: all return 0 unless stated. */
RINGPROT_API int prot_setlog(struct protstream *s, int fd);
RINGPROT_API int prot_setisclient(struct protstream *s, int val);
/* Layers (prot/layer*.c); see the difference list at the top. */
RINGPROT_API int prot_settls(struct protstream *s, struct ssl_st *tlsconn);
RINGPROT_API int prot_setsasl(struct protstream *s, struct sasl_conn *conn);
RINGPROT_API void prot_unsetsasl(struct protstream *s);
RINGPROT_API int prot_setcompress(struct protstream *s);
RINGPROT_API void prot_unsetcompress(struct protstream *s);
RINGPROT_API int prot_data_boundary(struct protstream *s); /* no-op, 0 */
/* Read streams: timeout in seconds from now (0: off); restart window. */
RINGPROT_API int prot_settimeout(struct protstream *s, int timeout);
RINGPROT_API int prot_resettimeout(struct protstream *s);
/* Before s would wait for input, flush flushs (NULL clears). */
RINGPROT_API int prot_setflushonread(struct protstream *s,
				     struct protstream *flushs);
/* One-shot: proc(s, rock) runs the next time s would wait for input. */
RINGPROT_API int prot_setreadcallback(struct protstream *s,
				      prot_readcallback_t *proc, void *rock);

/*
 * Wait events (prot/waitevent.c). prot_addwaitevent appends an event due
 * at mark (wall-clock seconds) and returns it; with proc == NULL it adds
 * nothing and returns the current head (may be NULL), as Cyrus does.
 * prot_removewaitevent unlinks and frees ev (unknown handles are ignored);
 * it is safe inside any callback, for any event of the stream.
 * Callbacks must not free their own stream nor read from it.
 */
RINGPROT_API struct prot_waitevent *
prot_addwaitevent(struct protstream *s, time_t mark,
		  prot_waiteventcallback_t *proc, void *rock);
RINGPROT_API void prot_removewaitevent(struct protstream *s,
				       struct prot_waitevent *ev);

/* Status. */
RINGPROT_API const char *prot_error(struct protstream *s);
RINGPROT_API int prot_rewind(struct protstream *s);

/*
 * Reading (read streams). prot_fill refills an empty buffer (discarding
 * unread bytes, as in Cyrus) and returns the first new byte or EOF.
 * prot_read returns 1..size, or 0 for EOF, error, would-block or size 0;
 * at most one refill window (PROT_BUFSIZE bytes) per call.
 */
RINGPROT_API int prot_fill(struct protstream *s) UR_MAY_YIELD;
RINGPROT_API int prot_getc(struct protstream *s) UR_MAY_YIELD;
RINGPROT_API int prot_ungetc(int c, struct protstream *s);
RINGPROT_API size_t prot_lookahead(struct protstream *s, const char *str,
				   size_t len, int *sep) UR_MAY_YIELD;
RINGPROT_API int prot_read(struct protstream *s, char *buf,
			   unsigned size) UR_MAY_YIELD;
RINGPROT_API int prot_readbuf(struct protstream *s, struct buf *buf,
			      unsigned size) UR_MAY_YIELD;
RINGPROT_API char *prot_fgets(char *buf, unsigned size,
			      struct protstream *s) UR_MAY_YIELD;

/*
 * Writing (write streams). Data is buffered; a full buffer is flushed in
 * the stream's own mode. prot_flush is a forced (blocking) flush that
 * also waits until queued output has reached the kernel; on a read
 * stream it drains and discards pending input and returns 0.
 * prot_flush_internal(s, force): the flush engine (force: block whatever
 * dontblock says).
 */
RINGPROT_API int prot_flush(struct protstream *s) UR_MAY_YIELD;
RINGPROT_API int prot_flush_internal(struct protstream *s,
				     int force) UR_MAY_YIELD;
RINGPROT_API int prot_putc(int c, struct protstream *s) UR_MAY_YIELD;
RINGPROT_API int prot_write(struct protstream *s, const char *buf,
			    unsigned len) UR_MAY_YIELD;
RINGPROT_API int prot_putbuf(struct protstream *s,
			     const struct buf *buf) UR_MAY_YIELD;
RINGPROT_API int prot_puts(struct protstream *s, const char *str) UR_MAY_YIELD;
RINGPROT_API int prot_vprintf(struct protstream *s, const char *fmt,
			      va_list args)
	__attribute__((format(printf, 2, 0))) UR_MAY_YIELD;
RINGPROT_API int prot_printf(struct protstream *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3))) UR_MAY_YIELD;

/*
 * Inline fast paths of prot_getc and prot_putc: a byte taken from or put
 * into the current buffer costs no call. Everything else (refill, flush,
 * errors, wrong direction) goes to the real functions, which stay
 * exported: &prot_getc, (prot_getc)(s) and a program's own declaration
 * keep working. Same results and counters either way. Define
 * PROT_NO_INLINE before including this header to always call.
 */
static inline int prot__getc_inline(struct protstream *s)
{
	if (s->cnt > 0 && !s->write) {
		s->cnt--;
		s->can_unget++;
		s->bytes_in++;
		return *s->ptr++;
	}
	return (prot_getc)(s);
}

static inline int prot__putc_inline(int c, struct protstream *s)
{
	/* The last free byte needs prot_putc: it flushes. */
	if (s->cnt > 1 && s->write && s->error == NULL && !s->eof) {
		*s->ptr++ = (unsigned char)c;
		s->cnt--;
		s->bytes_out++;
		return 0;
	}
	return (prot_putc)(c, s);
}

#ifndef PROT_NO_INLINE
#define prot_getc(s)	prot__getc_inline(s)
#define prot_putc(c, s) prot__putc_inline(c, s)
#endif

/* IMAP string output (prot/imap-fmt.c); spec section 2.9. */
RINGPROT_API int prot_printliteral(struct protstream *out, const char *s,
				   size_t size) UR_MAY_YIELD;
RINGPROT_API int prot_printstring(struct protstream *out,
				  const char *s) UR_MAY_YIELD;
RINGPROT_API int prot_printmap(struct protstream *out, const char *s,
			       size_t n) UR_MAY_YIELD;
RINGPROT_API int prot_printamap(struct protstream *out, const char *s,
				size_t n) UR_MAY_YIELD;
RINGPROT_API int prot_printastring(struct protstream *out,
				   const char *s) UR_MAY_YIELD;

/*
 * Multiplexing (prot/select.c): wait until a member has input (buffered,
 * or readable, or held decoded inside a layer), the extra fd (-1: none)
 * is readable, a member's deadline passes, or timeout (NULL: none)
 * expires. Returns ready members (+1 for the extra fd), 0 on timeout,
 * -1 with errno on failure; *out is a new group of ready members or NULL.
 * *extra_read_flag is always set. Members' due wait events run inside the
 * call (on the calling fiber) and the wait goes on; a member is reported
 * at its read deadline. A caller timeval is overwritten with the member
 * deadline in whole seconds (rounded up) when that comes first, as Cyrus
 * does. With no member, no extra fd and no timeout: -1/EINVAL.
 */
RINGPROT_API int prot_select(struct protgroup *readstreams, int extra_read_fd,
			     struct protgroup **out, int *extra_read_flag,
			     struct timeval *timeout) UR_MAY_YIELD;
RINGPROT_API struct protgroup *protgroup_new(size_t size);
RINGPROT_API struct protgroup *protgroup_copy(struct protgroup *src);
RINGPROT_API void protgroup_reset(struct protgroup *group);
RINGPROT_API void protgroup_free(struct protgroup *group);
RINGPROT_API void protgroup_insert(struct protgroup *group,
				   struct protstream *item);
RINGPROT_API void protgroup_delete(struct protgroup *group,
				   struct protstream *item);
RINGPROT_API struct protstream *protgroup_getelement(struct protgroup *group,
						     size_t element);

/*
 * ---------------------------------------------------------------------
 * ringprot extensions (not in Cyrus).
 * ---------------------------------------------------------------------
 */

/*
 * A wait event due at mark_ms, milliseconds since the epoch on
 * CLOCK_REALTIME; ev->mark holds the same time in whole seconds. Same
 * contract as prot_addwaitevent otherwise.
 */
RINGPROT_API struct prot_waitevent *
prot_addwaitevent_ms(struct protstream *s, uint64_t mark_ms,
		     prot_waiteventcallback_t *proc, void *rock);

/* Move ev to mark_ms (epoch ms, CLOCK_REALTIME); ev->mark follows.
 * Returns 0, or EOF (errno ENOENT) if ev is not on s. */
RINGPROT_API int prot_setwaitevent_ms(struct protstream *s,
				      struct prot_waitevent *ev,
				      uint64_t mark_ms);

/*
 * Re-arm ev after its mark was moved by hand. Optional: marks are re-read
 * before every wait anyway; this only makes a pending wait notice a mark
 * that moved earlier. Returns 0, or EOF (errno ENOENT) if ev is not on s.
 */
RINGPROT_API int prot_rearmwaitevent(struct protstream *s,
				     struct prot_waitevent *ev);

/*
 * Bound on the bytes a non-blocking write stream may hold queued for the
 * background sender (default PROT_QUEUE_LIMIT_DEFAULT). A flush that would
 * pass it fails: EOF, error "output queue full", nothing sent out of
 * order. Returns 0, or EOF (errno EINVAL) on a read stream or for a bound
 * below PROT_BUFSIZE.
 */
#define PROT_QUEUE_LIMIT_DEFAULT ((size_t)16 << 20)
RINGPROT_API int prot_setqueuelimit(struct protstream *s, size_t bytes);

/*
 * ringprot extension (spec 6.8): a write timeout. Cyrus's flush blocks for
 * ever on a peer that stops reading. With a timeout set, every send that
 * waits for the peer (a blocking flush, or the background send of a
 * non-blocking stream's queue) fails when the peer takes no byte for that
 * long: the stream's error becomes "write timed out" (errno ETIMEDOUT),
 * the pending output is dropped and the flush returns EOF. A slow peer
 * that keeps taking bytes never times out. 0 (the default) turns it off.
 * Returns 0, or EOF (errno EINVAL) on a read stream.
 */
RINGPROT_API int prot_setwritetimeout(struct protstream *s, int seconds);
RINGPROT_API int prot_setwritetimeout_ms(struct protstream *s, unsigned ms);

/*
 * ringprot extension. Off by default: every protstream read and write is
 * an io_uring submission. On, the stream tries the plain syscall first
 * where the kernel completes it at once (Seastar's speculative syscalls,
 * uring notes pitfall 29): a blocking flush on a socket starts with one
 * non-blocking send(2)/sendmsg(2), and a read stream over a socket that
 * must flush its partner first probes with one non-blocking recv(2)
 * outside fibers. What would wait still goes through the ring, and no
 * semantics change: prot_flush returns only once every byte is written.
 * Process-wide. Measured in bench-prot, which runs both settings.
 */
RINGPROT_API void prot_setdirectio(int on);

/* Bytes accepted by a write stream but not yet handed to the kernel. */
RINGPROT_API size_t prot_queued(const struct protstream *s);

/*
 * ringprot extension (prot/sendfile.c): write len bytes of the file fd
 * from offset off, after what s holds. A write stream over a socket with
 * no write layer (TLS, SASL, DEFLATE) and no telemetry log sends the
 * range without a user-space copy (splice through a pipe made for the
 * call); any other stream reads the file in chunks into prot_write. Both
 * flush s first and block until every byte is out, whatever dontblock
 * says, under the write timeout (prot_setwritetimeout) per wait for the
 * peer. fd is borrowed (a regular file; its position is not moved) and
 * must hold the whole range: a shorter file fails the stream with EIO
 * (the peer has been promised len bytes). Counts the bytes in bytes_out.
 * Returns 0, or EOF with the stream's error set (errno as prot_write);
 * EOF with errno EINVAL, stream unchanged, on a read stream or off < 0.
 */
RINGPROT_API int prot_sendfile(struct protstream *s, int fd, off_t off,
			       size_t len) UR_MAY_YIELD;

/*
 * Network time (spec 2.23, Cyrus's cmdtime_netstart/netend): nanoseconds
 * this stream spent waiting in raw reads and writes, on CLOCK_MONOTONIC,
 * counted from the first prot_nettime() call on the stream (a stream
 * nobody times reads no clocks). Callers subtract two readings to time a
 * command.
 */
RINGPROT_API uint64_t prot_nettime(const struct protstream *s);

/*
 * Parking: a connection that waits with no fiber (an IMAP IDLE, a pooled
 * LMTP session) keeps its two streams, small. Wake-ups are the caller's
 * (readiness of the fd, prot_waitevent_next_ms, prot_read_deadline_ns);
 * any fiber of the stream's thread then goes on with the same streams.
 *
 * prot_release: give back every buffer an idle stream holds; what it
 * keeps is its struct (about 0.5 KiB for a write stream, 0.9 for a read
 * stream), its unread input (the window and what follows it, in the
 * struct's 256-byte history when that is all and fits, else in one
 * allocation of its size) and what its layers cannot rebuild (DEFLATE:
 * the last 32 KiB of plaintext each way, at most; TLS: the SSL; SASL:
 * the sasl_conn_t). Nothing else changes: every later call works as it
 * would have, each buffer coming back at its first use (a write that
 * cannot get its buffer fails as any write does: EOF, error text). Wait
 * events stay, but no timer of theirs or of the read timeout stays armed
 * until the stream waits again. Does not yield, does no I/O; idempotent.
 * Returns 0; -EBUSY (nothing changed) if a write stream holds output
 * (buffered, queued or being sent: prot_flush first), a read stream's
 * read is in flight (some fiber waits in it), or a wait event's callback
 * runs; -ENOMEM (nothing changed) if the unread input could not be
 * copied; -EINVAL if s is NULL. Map streams (prot_readmap) hold nothing
 * of their own: 0.
 */
RINGPROT_API int prot_release(struct protstream *s) RINGPROT_MUST_CHECK;

/*
 * Would a read of s return without waiting for its fd? True with unread
 * bytes in the window or held after it, plaintext decoded or decodable
 * inside a layer (records TLS has decrypted or received whole, zlib
 * output not yet taken), after a layer's clean end (TLS close_notify),
 * with EOF or an error recorded (the read reports it at once), and for
 * streams without an fd. Bytes still in the kernel's socket buffer do
 * not count: poll the fd for those. False on a write stream. No I/O.
 */
RINGPROT_API bool prot_input_pending(const struct protstream *s);

/*
 * The earliest mark of s's wait events, in milliseconds since the epoch
 * as ur_now_ns(CLOCK_REALTIME) reads it (rounded up: at that time the
 * event is due; 1 for a mark long past), or 0 if s has none. Marks moved
 * by hand count. For a caller that must wake a parked stream.
 */
RINGPROT_API uint64_t prot_waitevent_next_ms(const struct protstream *s);

/*
 * Run the wait events of s that are due now (mark <= now), once each in
 * list order, on the calling fiber, with the prot_addwaitevent contract
 * (a callback may write and flush, keep its event with a later mark or
 * remove it). Returns how many callbacks ran; 0 inside a callback of s.
 * May yield (through the callbacks).
 */
RINGPROT_API int prot_waitevent_run_due(struct protstream *s) UR_MAY_YIELD;

/*
 * The read deadline of s (prot_settimeout, restarted at each refill) on
 * CLOCK_MONOTONIC in ns, or 0 if none (write streams: 0). A read that
 * starts after it fails at once with "idle for too long" unless input is
 * there already.
 */
RINGPROT_API uint64_t prot_read_deadline_ns(const struct protstream *s);

/*
 * Heap bytes s holds now, as requested from malloc (allocator overhead
 * not included): the struct, its buffers, queued output, unread input,
 * error text, wait events, and its layers' state as far as known (zlib
 * exactly, as allocated; TLS: the layer's buffers plus an estimate of
 * the SSL object, counted on the read stream only; SASL: our records,
 * not libsasl2's). A provided buffer the stream holds counts (it is one
 * the loop's other streams cannot use). For tests and benchmarks.
 */
RINGPROT_API size_t prot_memory(const struct protstream *s);

/*
 * The -errno behind s's error (-ETIMEDOUT for "idle for too long" and
 * "write timed out", -ECONNRESET, -EPROTO for a layer failure...), -EIO
 * when the error has no errno (a misuse text), 0 when s has no error.
 */
RINGPROT_API int prot_errno(const struct protstream *s);

/*
 * Fatal hook for programming errors Cyrus reports through fatal(msg,
 * EX_SOFTWARE) (ungetc misuse). With a hook set, fn(msg, 70) is called
 * first (a Cyrus-style fatal() that exits gives Cyrus's behaviour); if
 * it returns, or with no hook (the default), the call fails: EOF and the
 * message becomes the stream's error. Process-wide; returns the old hook.
 */
typedef void prot_fatal_fn(const char *msg, int code);
RINGPROT_API prot_fatal_fn *prot_setfatal(prot_fatal_fn *fn);

#endif /* RINGPROT_PROT_H */
