/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/fill: the refill algorithm (spec 2.3) over ring reads. */
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * Buffers. Sockets receive into a provided-buffer ring shared by every
 * stream of the thread's loop: a stream takes a buffer only when bytes
 * arrive and gives it back when the application has consumed it and asks
 * for more, so a stream waiting for input holds no read buffer. Buffers
 * are 16 KiB, four Cyrus reads' worth; the application still sees at most
 * PROT_BUFSIZE bytes per refill (one "window"): prot_read returns <= 4096,
 * each window is logged as one telemetry record, restarts the read
 * timeout, runs due wait events and resets the ungetc allowance, exactly
 * as if Cyrus had read it with its own read(2). Only the syscall count
 * changes. When the ring is empty (-ENOBUFS) the read falls back to the
 * stream's own buffer of the same size: flow control, never an error.
 * So does the speculative probe of prot_setdirectio(1) (probe_recv()).
 * Whichever buffer the bytes land in, a failed refill keeps the same
 * PROT__HIST bytes of the last window (see src_release()).
 *
 * Regular files are read FILE_READ bytes at a time at the current file
 * position and exposed in PROT_BUFSIZE windows too, but the file position
 * is kept where Cyrus's 4 KiB reads would leave it: at the end of the
 * exposed window (one lseek(2) per window, see ahead_seek()), and a
 * position the application moved itself drops the bytes read ahead. One
 * ring read per 4 KiB would cost an io_uring_enter each, and for a file
 * kept in memory (tmpfs, memfd) a wakeup of an io-wq thread each: the
 * kernel cannot read such a file without blocking (13 ns a byte against
 * read(2)'s 1.7 in bench-prot). Ttys and other devices are read
 * PROT_BUFSIZE at a time into the stream's own buffer. Pipes have no
 * position to keep: they are read up to PIPE_READ bytes at a time (a
 * whole default pipe buffer, so a writer blocked on a full pipe refills
 * it in one go) and exposed in windows. Callback streams call the
 * callback.
 */
#define PBUF_SIZE 16384 /* the loop's shared ring's, by default */
#define PIPE_READ 65536
#define FILE_READ 262144

/* ps->file_read: how a PROT__K_FILE stream reads, decided at its first. */
enum {
	FR_UNKNOWN = 0,
	FR_RING,  /* ring reads of PROT_BUFSIZE at the file position */
	FR_PIPE,  /* ring reads of PIPE_READ */
	FR_AHEAD, /* ring reads of FILE_READ at the file position */
};

/* The loop's shared ring (uring/ owns it); NULL: read into rbuf. */
static struct ur_bufring *pbuf_ref(struct prot__stream *ps)
{
	struct ur_loop *loop;

	if (ps->br != NULL)
		return ps->br;
	if (ur_loop_get(&loop) < 0 || ur_loop_bufring(loop, &ps->br) < 0)
		return NULL;
	return ps->br;
}

static void pbuf_unref(struct prot__stream *ps)
{
	ur_loop_bufring_put(&ps->br);
}

static size_t rbuf_size(const struct prot__stream *ps)
{
	if (ps->rbuf_bulk)
		return PROT__BULK_READ;
	if (ps->kind == PROT__K_SOCKET)
		return PBUF_SIZE;
	if (ps->kind == PROT__K_FILE && ps->file_read == FR_PIPE)
		return PIPE_READ;
	if (ps->kind == PROT__K_FILE && ps->file_read == FR_AHEAD)
		return FILE_READ;
	return PROT_BUFSIZE;
}

/*
 * Bulk reads. A TLS record is 16 KiB and change, a provided buffer 16
 * KiB: a bulk transfer costs one ring read (and one wakeup) per record,
 * where OpenSSL's own loop, with two read(2) per record, still spends
 * less in the kernel. A layer that decodes whole reads (dec_chunk) gets
 * larger ones while the data keeps coming: a read that filled its
 * buffer is followed by a non-blocking recv of PROT__BULK_READ bytes
 * into a buffer of the stream's own, and so on while they come back
 * full. The first that finds less ends the run, one that finds nothing
 * (-EAGAIN) costs that recv and falls back to the usual read, which
 * waits holding no buffer; the bulk buffer (rbuf, made that large)
 * goes as the run ends. Only the layer sees these bytes (it decodes
 * them whole), so no window ever points into it. A stream with wait
 * events reads as before: its due events run before each read
 * (prot__wait_input), data there or not.
 */
static bool bulk_wanted(const struct prot__stream *ps)
{
	return ps->kind == PROT__K_SOCKET && ps->pub.waitevent == NULL &&
	       ps->rlayers != NULL &&
	       ps->rlayers->ops->dec_chunk >= PROT__BULK_READ;
}

static void bulk_end(struct prot__stream *ps)
{
	ps->bulk_on = false;
	if (!ps->rbuf_bulk)
		return;
	if (ps->src == ps->rbuf) { /* decoded whole: nothing unread */
		ps->src = NULL;
		ps->src_len = ps->src_off = 0;
	}
	free(ps->rbuf);
	ps->rbuf = NULL;
	ps->rbuf_bulk = false;
}

/*
 * One bulk read: > 0 with the region held, 0 at end of file, -EAGAIN
 * (nothing there, or no bulk buffer: the usual read), or another -errno.
 */
static int bulk_read(struct prot__stream *ps)
{
	uint64_t t0;
	ssize_t n;

	if (ps->rbuf != NULL && !ps->rbuf_bulk) {
		if (ps->src == ps->rbuf)
			return -EAGAIN; /* rbuf still holds input */
		free(ps->rbuf); /* the ENOBUFS fallback's: it comes back */
		ps->rbuf = NULL;
	}
	if (ps->rbuf == NULL) {
		ps->rbuf = malloc(PROT__BULK_READ);
		if (ps->rbuf == NULL) {
			ps->bulk_on = false;
			return -EAGAIN;
		}
		ps->rbuf_bulk = true;
	}
	t0 = prot__net_start(ps);
	do {
		n = ur_recv(ps->pub.fd, ps->rbuf, PROT__BULK_READ,
			    MSG_DONTWAIT);
	} while (n == -EINTR);
	prot__net_end(ps, t0);
	if (n <= 0) {
		bulk_end(ps);
		return (int)n;
	}
	ps->bulk_on = n == PROT__BULK_READ;
	ps->src = ps->rbuf;
	ps->src_len = (size_t)n;
	ps->src_off = 0;
	return (int)n;
}

static int rbuf_get(struct prot__stream *ps)
{
	if (ps->rbuf == NULL) {
		ps->rbuf = malloc(rbuf_size(ps));
		if (ps->rbuf == NULL)
			return -ENOMEM;
	}
	return 0;
}

/* The application's view of the buffer, restored after a failed refill. */
struct window {
	unsigned char *buf, *ptr;
	unsigned cnt;
	int can_unget;
};

static void window_save(const struct protstream *s, struct window *w)
{
	w->buf = s->buf;
	w->ptr = s->ptr;
	w->cnt = s->cnt;
	w->can_unget = s->can_unget;
}

static void window_restore(struct protstream *s, const struct window *w)
{
	s->buf = w->buf;
	s->ptr = w->ptr;
	s->cnt = w->cnt;
	s->can_unget = w->can_unget;
}

/*
 * Move the window's unread bytes (at most PROT__HIST) and as much of its
 * push-back as fits after them into hist, before its buffer goes.
 */
static void window_to_hist(struct prot__stream *ps, struct window *w)
{
	size_t c = w->cnt;
	size_t k = w->can_unget > 0 ? (size_t)w->can_unget : 0;

	if (k > PROT__HIST - c)
		k = PROT__HIST - c;
	if (k + c > 0) /* ptr may be NULL on an empty window */
		memmove(ps->r->hist, w->ptr - k, k + c);
	w->buf = ps->r->hist;
	w->ptr = ps->r->hist + k;
	w->can_unget = (int)k;
}

/*
 * Give back the held region. A window in a provided buffer moves to hist
 * first (its unread bytes, then its last consumed ones, PROT__HIST in
 * all), so *w stays valid for push-back whatever the wait brings; only a
 * window with more unread bytes than that (prot_fill called directly)
 * keeps its buffer, as keep_bid, until the next refill that succeeds.
 * A socket window in rbuf is treated the same way (rbuf survives a failed
 * read as it is, but a socket stream keeps the same bytes whichever
 * buffer it used: prot.h's difference list).
 */
static void park_free(struct prot__stream *ps)
{
	free(ps->park);
	ps->park = NULL;
	ps->park_size = 0;
}

static void src_release(struct prot__stream *ps, struct window *w)
{
	int wb = ps->bid >= 0 ? ps->bid : ps->keep_bid;
	bool held = wb >= 0 || ps->park != NULL ||
		    (ps->kind == PROT__K_SOCKET && ps->src != NULL &&
		     ps->src == ps->rbuf);

	if (ps->kind == PROT__K_MAP)
		return;
	ps->bid = -1;
	ps->keep_bid = -1;
	if (held && w != NULL && w->cnt > PROT__HIST) {
		/* -1 for rbuf: it stays as it is; so does park */
		ps->keep_bid = wb;
	} else if (held) {
		if (w != NULL)
			window_to_hist(ps, w);
		if (wb >= 0)
			ur_bufring_put(ps->br, (unsigned)wb);
		park_free(ps);
	}
	ps->src = NULL;
	ps->src_len = 0;
	ps->src_off = 0;
}

/* Is the window w (NULL: none) in the decode buffer? */
static bool window_in_dec(const struct prot__stream *ps, const struct window *w)
{
	const unsigned char *d = (const unsigned char *)ps->dec.s;

	return w != NULL && w->buf != NULL && ps->dec.alloc > 0 &&
	       w->buf >= d && w->buf < d + ps->dec.alloc;
}

/*
 * Before a read that may wait, with the read layers drained: the decode
 * buffer goes (TLS reserves 16 KiB in it per record, a bulk read leaves
 * 64 KiB), so an idle layered stream holds none; the next decode
 * allocates again, a cost far below the decoding's. The window the
 * application may still use (restored if the read fails) moves to hist
 * first, as src_release() does for a provided buffer; a window of more
 * than PROT__HIST unread bytes (a direct prot_fill) keeps the buffer.
 */
static void dec_release(struct prot__stream *ps, struct window *w)
{
	if (ps->dec.alloc == 0 || ps->dec_off < ps->dec.len)
		return;
	if (window_in_dec(ps, w)) {
		if (w->cnt > PROT__HIST)
			return;
		window_to_hist(ps, w);
	}
	prot__buf_release(&ps->dec);
	ps->dec_off = 0;
}

/*
 * Before a decode: it starts dec over (all of it was exposed), writing
 * from its start and growing it (realloc), so the window the application
 * may still use, restored if the refill fails (a decode error after some
 * output), must not stay in it. It moves to hist as in dec_release(); a
 * window with more unread bytes than that (prot_fill called directly)
 * keeps the whole buffer, as dec_keep, until a refill succeeds (a raw
 * read that does is not enough: its decode may fail).
 */
static void dec_protect(struct prot__stream *ps, struct window *w)
{
	if (!window_in_dec(ps, w))
		return;
	if (w->cnt <= PROT__HIST) {
		window_to_hist(ps, w);
		return;
	}
	prot__buf_release(&ps->dec_keep); /* w is not in it */
	ps->dec_keep = ps->dec;
	ps->dec = (struct buf){0};
	ps->dec_off = 0;
}

/* A refill succeeded: the old window's kept buffer can go. */
static void keep_release(struct prot__stream *ps)
{
	if (ps->keep_bid >= 0) {
		ur_bufring_put(ps->br, (unsigned)ps->keep_bid);
		ps->keep_bid = -1;
	}
	if (ps->park != NULL && ps->src != ps->park)
		park_free(ps);
}

void prot__fill_discard(struct protstream *s)
{
	struct prot__stream *ps = prot__of(s);

	if (ps->kind == PROT__K_MAP)
		s->ptr += s->cnt;
	else
		s->buf = s->ptr = NULL;
	src_release(ps, NULL);
	ps->dec.len = 0;
	ps->dec_off = 0;
	prot__buf_release(&ps->dec_keep);
	s->cnt = 0;
	s->can_unget = 0;
}

void prot__fill_fini(struct protstream *s)
{
	struct prot__stream *ps = prot__of(s);

	if (ur_op_is_busy(&ps->r->rop)) {
		/* Only a fiber cancelled mid-read can get here. */
		prot__cancel_wait(&ps->r->rop);
	}
	prot__fill_discard(s);
	pbuf_unref(ps);
	free(ps->rbuf);
	ps->rbuf = NULL;
	ps->rbuf_bulk = false;
}

/*
 * prot_release() of a read stream. Every buffer goes back; the unread
 * input stays, so that the next refill proceeds exactly as it would have
 * from the buffers that went: a window that fits hist with nothing after
 * it moves there (as before any wait); anything else is copied once into
 * park, an allocation of its exact size that becomes the held region:
 * the push-back before the window (at most PROT__HIST bytes), the
 * window, then the source bytes not yet exposed (raw, under read
 * layers). Decoded bytes not yet exposed shrink to their size in dec.
 */
static int region_to_park(struct prot__stream *ps, struct window *w,
			  size_t rest)
{
	size_t k = w->can_unget > 0 ? (size_t)w->can_unget : 0;
	size_t c = w->cnt;
	unsigned char *p;

	if (k > PROT__HIST)
		k = PROT__HIST;
	p = malloc(k + c + rest);
	if (p == NULL)
		return -ENOMEM;
	if (k + c > 0)
		memcpy(p, w->ptr - k, k + c);
	if (rest > 0)
		memcpy(p + k + c, ps->src + ps->src_off, rest);
	/* The old region (a provided buffer, rbuf, an older park) goes. */
	w->buf = p;
	w->ptr = p + k;
	w->can_unget = (int)k;
	ps->src = NULL;
	src_release(ps, NULL);
	ps->park = p;
	ps->park_size = k + c + rest;
	ps->src = p;
	ps->src_len = k + c + rest;
	ps->src_off = k + c;
	return 0;
}

/* Decoded bytes not yet exposed, moved to an allocation of their size. */
static void dec_shrink(struct prot__stream *ps)
{
	size_t n = ps->dec.len - ps->dec_off;
	char *p;

	if (n == 0) {
		prot__buf_release(&ps->dec);
		ps->dec_off = 0;
		return;
	}
	if (ps->dec.alloc <= n + 1)
		return;
	p = malloc(n + 1);
	if (p == NULL)
		return; /* it stays as it is: only memory */
	memcpy(p, ps->dec.s + ps->dec_off, n);
	p[n] = '\0';
	prot__buf_release(&ps->dec);
	ps->dec = (struct buf){.s = p, .len = n, .alloc = n + 1};
	ps->dec_off = 0;
}

int prot__fill_release(struct protstream *s)
{
	struct prot__stream *ps = prot__of(s);
	size_t rest = ps->src != NULL ? ps->src_len - ps->src_off : 0;
	struct window w;
	int ret;

	if (ur_op_is_busy(&ps->r->rop))
		return -EBUSY;
	if (ps->kind == PROT__K_MAP)
		return 0; /* the caller's memory: nothing is ours */
	window_save(s, &w);
	if (rest == 0 && w.cnt <= PROT__HIST) {
		window_to_hist(ps, &w);
		ps->src = NULL; /* not rbuf: src_release() must not keep it */
		src_release(ps, NULL);
	} else {
		ret = region_to_park(ps, &w, rest);
		if (ret < 0)
			return ret;
	}
	window_restore(s, &w);
	keep_release(ps);
	dec_shrink(ps);
	prot__buf_release(&ps->dec_keep);
	free(ps->rbuf);
	ps->rbuf = NULL;
	ps->rbuf_bulk = false;
	ps->bulk_on = false;
	return 0;
}

size_t prot__fill_memory(const struct protstream *s)
{
	const struct prot__stream *ps = prot__cof(s);
	size_t pbuf = ps->br != NULL ? ur_bufring_buf_size(ps->br) : 0;
	size_t n = ps->park_size + ps->dec.alloc + ps->dec_keep.alloc;

	if (ps->rbuf != NULL)
		n += rbuf_size(ps);
	if (ps->bid >= 0)
		n += pbuf;
	if (ps->keep_bid >= 0)
		n += pbuf;
	return n;
}

static bool layers_pending(const struct prot__stream *ps)
{
	for (const struct prot__layer *l = ps->rlayers; l != NULL; l = l->next)
		if (l->ops->pending != NULL && l->ops->pending(l))
			return true;
	return false;
}

bool prot__input_ready(const struct protstream *s)
{
	const struct prot__stream *ps = prot__cof(s);

	if (s->write)
		return false;
	if (s->cnt > 0 || s->eof || s->error != NULL || ps->layer_end)
		return true;
	/* A map or callback read never waits on the ring. */
	if (ps->kind == PROT__K_MAP || ps->kind == PROT__K_CB)
		return true;
	return ps->src_off < ps->src_len || ps->dec_off < ps->dec.len ||
	       layers_pending(ps);
}

/*
 * Run in through the read layers (TLS -> SASL -> INFLATE); plaintext
 * lands in dec. in_len 0 asks each layer for what it holds.
 */
static int decode(struct prot__stream *ps, const unsigned char *in,
		  size_t in_len, const char **why)
{
	struct buf tmp[2] = {{0}, {0}};
	const unsigned char *p = in;
	size_t n = in_len;
	int ret = 0, i = 0;

	if (ps->dec_off == ps->dec.len) {
		ps->dec.len = 0;
		ps->dec_off = 0;
	}
	for (struct prot__layer *l = ps->rlayers; l != NULL; l = l->next) {
		struct buf *out = l->next == NULL ? &ps->dec : &tmp[i];

		if (l->next != NULL)
			out->len = 0;
		ret = l->ops->decode(l, p, n, out);
		if (ret < 0) {
			*why = l->errtext;
			break;
		}
		if (ret == PROT__LAYER_END) {
			ps->layer_end = true;
			ret = 0;
		}
		p = (const unsigned char *)out->s;
		n = out->len;
		i ^= 1;
	}
	prot__buf_release(&tmp[0]);
	prot__buf_release(&tmp[1]);
	return ret;
}

static size_t dec_window(const struct prot__stream *ps)
{
	const struct prot__layer *l = ps->rlayers;

	while (l != NULL && l->next != NULL)
		l = l->next;
	return l != NULL && l->window > 0 ? l->window : PROT_BUFSIZE;
}

static void expose(struct protstream *s, const unsigned char *p, size_t n)
{
	s->buf = (unsigned char *)(uintptr_t)p;
	s->ptr = s->buf;
	s->cnt = (unsigned)n;
	prot__log(s, '<', p, n);
}

/*
 * The one-shot read callback and the flush-on-read partner (spec 2.12).
 * With begin, a forced flush only starts (prot__flush_begin): the wait
 * for input that follows submits it, and the caller ends it after.
 */
static void before_blocking(struct protstream *s, bool begin)
{
	prot_readcallback_t *proc = s->readcallback_proc;

	if (proc != NULL) {
		s->readcallback_proc = NULL;
		proc(s, s->readcallback_rock);
	}
	if (s->flushonread == NULL || !prot__has_output(s->flushonread))
		return;
	if (begin && !s->dontblock)
		(void)prot__flush_begin(s->flushonread);
	else
		(void)prot_flush_internal(s->flushonread, !s->dontblock);
}

static bool needs_probe(const struct protstream *s)
{
	return s->readcallback_proc != NULL ||
	       (s->flushonread != NULL && prot__has_output(s->flushonread));
}

/* Start one read into a provided buffer (sockets) or rbuf. */
static int read_start(struct prot__stream *ps, int flags, bool no_pbuf)
{
	struct protstream *s = &ps->pub;
	struct ur_bufring *br = NULL;
	struct ur_loop *loop;
	int ret;

	ret = ur_loop_get(&loop);
	if (ret < 0)
		return ret;
	ur_op_init(&ps->r->rop, NULL, NULL);
	if (ps->kind == PROT__K_SOCKET && !no_pbuf)
		br = pbuf_ref(ps);
	if (br != NULL)
		return ur_recv_pbuf_start(loop, &ps->r->rop, s->fd, br, flags);
	ret = rbuf_get(ps);
	if (ret < 0)
		return ret;
	if (ps->kind == PROT__K_SOCKET)
		return ur_recv_start(loop, &ps->r->rop, s->fd, ps->rbuf,
				     rbuf_size(ps), flags);
	return ur_read_start(loop, &ps->r->rop, s->fd, ps->rbuf, rbuf_size(ps),
			     -1);
}

/* Take the completed read's bytes as the held region. */
static void read_take(struct prot__stream *ps, int res)
{
	unsigned bid;

	if (ur_op_buffer(&ps->r->rop, &bid)) {
		if (res <= 0) {
			ur_bufring_put(ps->br, bid);
			return;
		}
		ps->bid = (int)bid;
		ps->src = ur_bufring_buf(ps->br, bid);
	} else {
		ps->src = ps->rbuf;
	}
	ps->src_len = res > 0 ? (size_t)res : 0;
	ps->src_off = 0;
}

/* Cancel the read after a failed wait; its bytes count if it won. */
static int read_abort(struct prot__stream *ps, int why)
{
	int res;

	if (ur_op_is_busy(&ps->r->rop))
		prot__cancel(&ps->r->rop);
	res = ur_op_wait(&ps->r->rop);
	if (res > 0)
		return res;
	read_take(ps, res); /* returns a buffer it may have taken */
	return why;
}

/* Wait for readiness of an fd the application made O_NONBLOCK. */
static int poll_in(struct prot__stream *ps, bool timed)
{
	struct ur_loop *loop;
	int ret = ur_loop_get(&loop);

	if (ret < 0)
		return ret;
	ur_op_init(&ps->r->rop, NULL, NULL);
	ret = ur_poll_start(loop, &ps->r->rop, ps->pub.fd, POLLIN);
	if (ret < 0)
		return ret;
	if (timed) {
		ret = prot__wait_input(&ps->pub, &ps->r->rop);
		if (ret < 0)
			return read_abort(ps, ret) > 0 ? 0 : ret;
	}
	ret = ur_op_wait(&ps->r->rop);
	return ret < 0 ? ret : 0;
}

/*
 * One raw read: > 0 with the region held, 0 at end of file, -EAGAIN when
 * a non-blocking read finds nothing, -ETIMEDOUT, or another -errno.
 * EINTR never ends a session: the read is simply issued again.
 */
static int raw_read(struct prot__stream *ps, int flags, bool timed,
		    bool started, bool *idle)
{
	struct protstream *s = &ps->pub;
	bool no_pbuf = false;
	uint64_t t0 = prot__net_start(ps);
	int ret;

	for (;; started = false) {
		if (!started) {
			ret = read_start(ps, flags, no_pbuf);
			if (ret < 0)
				break;
		}
		if (timed) {
			ret = prot__wait_input(s, &ps->r->rop);
			if (ret < 0) {
				*idle = ret == -ETIMEDOUT;
				ret = read_abort(ps, ret);
				if (ret < 0)
					break;
				*idle = false;
			}
		}
		ret = ur_op_wait(&ps->r->rop);
		if (ret == -ENOBUFS && !no_pbuf && ps->kind == PROT__K_SOCKET) {
			no_pbuf = true; /* ring empty: use our own buffer */
			continue;
		}
		if (ret == -EINTR)
			continue;
		if (ret == -EAGAIN && !s->dontblock &&
		    !(flags & MSG_DONTWAIT)) {
			/* Blocking stream over an O_NONBLOCK fd. */
			ret = poll_in(ps, timed);
			if (ret < 0) {
				*idle = ret == -ETIMEDOUT;
				break;
			}
			continue;
		}
		read_take(ps, ret);
		break;
	}
	prot__net_end(ps, t0);
	return ret;
}

/* Readiness without consuming, for files and pipes (no recv flags). */
static bool file_ready(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	return poll(&pfd, 1, 0) > 0;
}

/* How to read fd (FR_*). */
static uint8_t file_kind(int fd)
{
	struct stat st;

	if (UR_IS_FIXED(fd) || fstat(fd, &st) < 0)
		return FR_RING;
	if (S_ISFIFO(st.st_mode))
		return FR_PIPE;
	return S_ISREG(st.st_mode) ? FR_AHEAD : FR_RING;
}

/*
 * The readiness probe of a socket stream as one recv(2) with MSG_DONTWAIT
 * into rbuf (prot_setdirectio(1) only): bytes that are there end the read
 * at once, as a ring probe that completes in its loop turn would, and
 * -EAGAIN means "not ready". It replaces an io_uring_enter that only
 * submits the recv; the wait after the flush still goes through the ring.
 * Outside fibers only (-ENOSYS: take the ring probe): there the ring probe
 * lets the other fibers run, and a fiber's idle stream holds no buffer. A
 * direct descriptor has no fd for the syscall.
 */
static int probe_recv(struct prot__stream *ps)
{
	struct protstream *s = &ps->pub;
	uint64_t t0;
	ssize_t n;
	int ret;

	if (!prot__directio || UR_IS_FIXED(s->fd) || ur_fiber_self() != NULL)
		return -ENOSYS;
	ret = rbuf_get(ps);
	if (ret < 0)
		return ret;
	t0 = prot__net_start(ps);
	do {
		n = recv(s->fd, ps->rbuf, rbuf_size(ps), MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	prot__net_end(ps, t0);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	ps->src = ps->rbuf;
	ps->src_len = (size_t)n;
	ps->src_off = 0;
	return (int)n;
}

/*
 * The readiness probe as the read itself, given one loop turn: input
 * already there completes it (and then nothing is flushed: pipelining);
 * otherwise it stays armed while the callback and the flush run. Returns
 * 0 with *ready set, or -errno with the op reaped.
 */
static int ring_probe(struct prot__stream *ps, int flags, bool *ready)
{
	int ret = read_start(ps, flags, false);

	if (ret < 0)
		return ret;
	ret = ur_fiber_yield();
	if (ret < 0 && read_abort(ps, ret) <= 0)
		return ret; /* cancelled fiber, op reaped */
	/* A non-blocking probe that found nothing completes with EAGAIN. */
	*ready = !ur_op_is_busy(&ps->r->rop) && ps->r->rop.res != -EAGAIN;
	return 0;
}

/* Steps 4, 5 and 7 of spec 2.3 for an fd stream. */
static int read_fd(struct prot__stream *ps, bool *idle)
{
	struct protstream *s = &ps->pub;
	bool sock = ps->kind == PROT__K_SOCKET;
	bool ready = false, started = false;
	int flags = s->dontblock && sock ? MSG_DONTWAIT : 0;
	int ret;

	if (!sock && ps->file_read == FR_UNKNOWN)
		ps->file_read = file_kind(s->fd);
	if (ps->bulk_on && bulk_wanted(ps)) {
		/* Bytes there: no wait, so no flush-on-read (as a probe). */
		ret = bulk_read(ps);
		if (ret != -EAGAIN)
			return ret;
	} else if (ps->rbuf_bulk) {
		bulk_end(ps);
	}
	if (needs_probe(s)) {
		ret = sock ? probe_recv(ps) : -ENOSYS;
		if (ret != -ENOSYS && ret != -EAGAIN)
			return ret; /* bytes, end of file or an error */
		if (ret == -ENOSYS && sock) {
			ret = ring_probe(ps, flags, &ready);
			if (ret < 0)
				return ret;
			started = true;
		} else if (ret == -ENOSYS) {
			ready = file_ready(s->fd);
		}
		if (!ready)
			before_blocking(s, true);
	}
	ret = raw_read(ps, flags,
		       !ready && (s->read_timeout > 0 || s->dontblock), started,
		       idle);
	if (ret > 0 && bulk_wanted(ps))
		ps->bulk_on = (size_t)ret >=
			      (ps->bid >= 0 ? ur_bufring_buf_size(ps->br)
					    : rbuf_size(ps));
	if (s->flushonread != NULL)
		(void)prot__flush_end(s->flushonread);
	return ret;
}

static int read_cb(struct prot__stream *ps)
{
	struct protstream *s = &ps->pub;
	ssize_t n;
	int ret;

	/* No fd to probe: Cyrus's probe fails, which counts as "not ready". */
	if (needs_probe(s))
		before_blocking(s, false);
	ret = rbuf_get(ps);
	if (ret < 0)
		return ret;
	do {
		errno = 0;
		n = s->fillcallback_proc(ps->rbuf, PROT_BUFSIZE,
					 s->fillcallback_rock);
	} while (n < 0 && errno == EINTR);
	/* Cyrus's callback fails as read(2) does (-1, errno), or -EIO. */
	if (n < 0)
		return errno > 0 ? -errno : -EIO;
	if (n > PROT_BUFSIZE)
		n = PROT_BUFSIZE;
	ps->src = ps->rbuf;
	ps->src_len = (size_t)n;
	ps->src_off = 0;
	return (int)n;
}

/*
 * Turn a raw read's outcome into Cyrus's stream state. At the end of the
 * raw input each read layer says whether it ended cleanly (L3: a TLS
 * record cut short is an error, not an EOF).
 */
static int read_outcome(struct protstream *s, int ret, bool idle)
{
	if (ret > 0)
		return 0;
	if (ret == 0) {
		for (struct prot__layer *l = prot__of(s)->rlayers; l != NULL;
		     l = l->next) {
			int err = l->ops->eof != NULL ? l->ops->eof(l) : 0;

			if (err < 0)
				return prot__fail(s, err, l->errtext);
		}
		s->eof = 1;
		return EOF;
	}
	if (ret == -EAGAIN && s->dontblock) {
		errno = EAGAIN; /* would block: neither EOF nor an error */
		return EOF;
	}
	if (idle)
		return prot__fail(s, ret, "idle for too long");
	return prot__fail(s, ret, NULL);
}

/* Decode through the read layers; a failure takes the layer's text. */
static int decode_or_fail(struct protstream *s, const unsigned char *in,
			  size_t in_len)
{
	const char *why = NULL;
	int ret = decode(prot__of(s), in, in_len, &why);

	return ret < 0 ? prot__fail(s, ret, why) : 0;
}

/*
 * Step 2 of spec 2.3: plaintext a layer produced or can produce without
 * new input (no wait, no events, no timeout restart). Returns 1 with a
 * window exposed, 0 if there is none, EOF on a decoding error or after a
 * layer's clean end. w is the window the application left.
 */
static int layer_window(struct protstream *s, struct window *w)
{
	struct prot__stream *ps = prot__of(s);
	size_t n;

	for (;;) {
		if (ps->dec_off < ps->dec.len) {
			n = ps->dec.len - ps->dec_off;
			if (n > dec_window(ps))
				n = dec_window(ps);
			expose(s, (unsigned char *)ps->dec.s + ps->dec_off, n);
			ps->dec_off += n;
			return 1;
		}
		if (ps->layer_end) {
			s->eof = 1; /* a clean end, as a raw read of 0 */
			return EOF;
		}
		if (ps->rlayers == NULL || !layers_pending(ps))
			return 0;
		dec_protect(ps, w);
		if (decode_or_fail(s, NULL, 0) == EOF)
			return EOF;
		if (ps->dec.len == 0)
			return 0;
	}
}

/*
 * FR_AHEAD: put the file position at the end of the n-byte window about
 * to be exposed, where Cyrus's read of it would have left it. A fresh
 * read moved it to the end of the region; a later window moves it on by
 * n, and finding it elsewhere means the application moved it (lseek(2),
 * another stream on the fd): the rest of the region is dropped, the
 * position put back, and the next read starts there. Returns 1 to expose
 * the window, 0 if the region was dropped, -errno.
 */
static int ahead_seek(struct prot__stream *ps, size_t n, bool fresh)
{
	size_t rest = ps->src_len - ps->src_off - n;
	off_t pos;

	if (fresh && rest == 0)
		return 1;
	pos = lseek(ps->pub.fd, fresh ? -(off_t)rest : (off_t)n, SEEK_CUR);
	if (pos < 0)
		return -errno;
	if (!fresh && pos != ps->ahead_pos + (off_t)n) {
		if (lseek(ps->pub.fd, pos - (off_t)n, SEEK_SET) < 0)
			return -errno;
		ps->src_off = ps->src_len;
		return 0;
	}
	ps->ahead_pos = pos;
	return 1;
}

/*
 * Raw bytes per decode: a window, or as many as the first read layer
 * takes at once (TLS: the whole read, so that a record costs one decode
 * and not one per 4 KiB of it).
 */
static size_t raw_chunk(const struct prot__stream *ps)
{
	if (ps->rlayers != NULL && ps->rlayers->ops->dec_chunk > 0)
		return ps->rlayers->ops->dec_chunk;
	return PROT_BUFSIZE;
}

/*
 * One raw window (at most PROT_BUFSIZE bytes, see raw_chunk) of the
 * held region: exposed as it is, or fed to the read layers. Bytes left
 * in a large buffer are what Cyrus's next read would have returned at
 * once, so unless they were just read (fresh), due events run first
 * (spec 5.5 #52) and the read window restarts, as for a read. Returns 1
 * with a window exposed, 0 after feeding the layers, EOF on failure. w
 * is the window the application left.
 */
static int raw_window(struct protstream *s, struct window *w, bool fresh)
{
	struct prot__stream *ps = prot__of(s);
	const unsigned char *p = ps->src + ps->src_off;
	size_t n = ps->src_len - ps->src_off;
	int ret;

	if (!fresh) {
		if (s->waitevent != NULL &&
		    (s->read_timeout > 0 || s->dontblock)) {
			ret = prot__wait_input(s, NULL);
			if (ret < 0)
				return prot__fail(s, ret, NULL);
		}
		prot__touch_timeout(s);
	}
	if (n > raw_chunk(ps))
		n = raw_chunk(ps);
	if (ps->kind == PROT__K_FILE && ps->file_read == FR_AHEAD) {
		ret = ahead_seek(ps, n, fresh);
		if (ret <= 0)
			return ret < 0 ? prot__fail(s, ret, NULL) : 0;
	}
	ps->src_off += n;
	if (ps->rlayers == NULL) {
		expose(s, p, n);
		return 1;
	}
	dec_protect(ps, w);
	return decode_or_fail(s, p, n);
}

/*
 * Expose the next window of plaintext, reading if there is none. On EOF
 * the caller restores *w, the window as the application left it.
 */
static int next_window(struct protstream *s, struct window *w)
{
	struct prot__stream *ps = prot__of(s);
	bool fresh = false, idle = false;
	int ret;

	for (;;) {
		ret = layer_window(s, w);
		if (ret != 0)
			return ret == EOF ? EOF : 0;
		if (ps->src_off < ps->src_len) {
			ret = raw_window(s, w, fresh);
			if (ret != 0)
				return ret == EOF ? EOF : 0;
			fresh = false;
			continue;
		}
		src_release(ps, w);
		dec_release(ps, w);
		if (ps->kind == PROT__K_CB)
			ret = read_cb(ps);
		else if (ps->kind == PROT__K_NOFD)
			ret = -EBADF;
		else
			ret = read_fd(ps, &idle);
		if (read_outcome(s, ret, idle) == EOF)
			return EOF;
		keep_release(ps);
		prot__touch_timeout(s);
		fresh = true;
	}
}

/*
 * Spec 2.3. A refill that fails (EOF, error, would block) leaves the
 * window untouched, as Cyrus does: bytes consumed before it can still be
 * pushed back (from a provided buffer: the last PROT__HIST of them).
 */
int prot_fill(struct protstream *s)
{
	struct prot__stream *ps = prot__of(s);
	struct window w;

	errno = 0;
	if (s->write)
		return prot__fatal(s, "prot_fill on a write stream");
	if (ps->kind == PROT__K_MAP) {
		s->eof = 1;
		return EOF;
	}
	if (s->eof || s->error != NULL)
		return EOF;
	window_save(s, &w);
	s->cnt = 0;
	if (next_window(s, &w) == EOF) {
		window_restore(s, &w);
		return EOF;
	}
	/* Not at the read: a decode after it can still fail. */
	prot__buf_release(&ps->dec_keep);
	s->cnt--;
	s->can_unget = 1;
	s->bytes_in++;
	return *s->ptr++;
}
