/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/prot: stream lifecycle, settings, status, byte I/O and telemetry. */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/major.h> /* MEM_MAJOR */

/* The real functions behind prot.h's inline fast paths are defined here. */
#undef prot_getc
#undef prot_putc

/* EX_SOFTWARE, as Cyrus passes to fatal() for ungetc misuse. */
#define PROT_EX_SOFTWARE 70

static prot_fatal_fn *fatal_hook;

prot_fatal_fn *prot_setfatal(prot_fatal_fn *fn)
{
	prot_fatal_fn *old = fatal_hook;

	fatal_hook = fn;
	return old;
}

/*
 * The single errno -> EOF + text conversion of the Cyrus face. The first
 * error sticks, as in Cyrus; later ones only set errno.
 */
int prot__fail(struct protstream *s, int err, const char *text)
{
	struct prot__stream *ps = prot__of(s);

	if (err >= 0)
		err = -EIO;
	if (s->error == NULL) {
		const char *t = text != NULL ? text : strerror(-err);

		s->error = strdup(t);
		ps->error_static = false;
		if (s->error == NULL) {
			/* Still an error, even without memory for its text. */
			s->error = (char *)"Cannot allocate memory";
			ps->error_static = true;
		}
	}
	ps->err = err;
	errno = -err;
	return EOF;
}

int prot__err(struct protstream *s)
{
	int err = prot__of(s)->err;

	return err < 0 ? err : -EIO;
}

int prot_errno(const struct protstream *s)
{
	if (s->error == NULL)
		return 0;
	return prot__err((struct protstream *)s);
}

int prot__fatal(struct protstream *s, const char *msg)
{
	if (fatal_hook != NULL)
		fatal_hook(msg, PROT_EX_SOFTWARE);
	/* The error is sticky: no buffered byte may come out after it. */
	if (!s->write)
		s->cnt = 0;
	return prot__fail(s, -EINVAL, msg);
}

static void clear_error(struct protstream *s)
{
	struct prot__stream *ps = prot__of(s);

	if (!ps->error_static)
		free(s->error);
	s->error = NULL;
	ps->error_static = false;
	ps->err = 0;
}

/*
 * Telemetry (spec 2.10): dir, decimal epoch seconds, dir, then the bytes
 * raw. One writev per record keeps the two streams' records whole when
 * they share the log fd. A plain syscall, not a ring op: it is a debug
 * aid, must stay in order with the other stream's records, and must not
 * park a non-blocking stream. Errors other than EINTR are ignored.
 */
void prot__log(struct protstream *s, char dir, const void *p, size_t n)
{
	char hdr[32];
	struct iovec iov[2];
	int h, cnt = 2;

	if (s->logfd == PROT_NO_FD)
		return;
	h = snprintf(hdr, sizeof(hdr), "%c%lld%c", dir, (long long)time(NULL),
		     dir);
	iov[0].iov_base = hdr;
	iov[0].iov_len = (size_t)h;
	iov[1].iov_base = (void *)(uintptr_t)p;
	iov[1].iov_len = n;
	while (cnt > 0) {
		ssize_t w = writev(s->logfd, iov + 2 - cnt, cnt);
		size_t left;

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		left = (size_t)w;
		while (cnt > 0 && left >= iov[2 - cnt].iov_len) {
			left -= iov[2 - cnt].iov_len;
			cnt--;
		}
		if (cnt > 0) {
			iov[2 - cnt].iov_base =
				(char *)iov[2 - cnt].iov_base + left;
			iov[2 - cnt].iov_len -= left;
		}
	}
}

void prot__touch_timeout(struct protstream *s)
{
	struct prot__stream *ps = prot__of(s);

	if (s->read_timeout <= 0) {
		ps->deadline_ns = 0;
		return;
	}
	s->timeout_mark = time(NULL) + s->read_timeout;
	ps->deadline_ns = ur_now_ns(CLOCK_MONOTONIC) +
			  (uint64_t)s->read_timeout * 1000000000ULL;
}

/*
 * Lifecycle.
 */

/*
 * A write stream is allocated without the read-only tail (r[0]: rop and
 * hist, internal.h), which nothing touches on a write stream.
 */
static struct protstream *stream_new(enum prot__kind kind, int fd, int write)
{
	struct prot__stream *ps =
		calloc(1, sizeof(*ps) + (write ? 0 : sizeof(ps->r[0])));
	struct protstream *s;

	if (ps == NULL)
		return NULL;
	s = &ps->pub;
	ps->kind = kind;
	ps->bid = -1;
	ps->keep_bid = -1;
	ps->q_limit = PROT_QUEUE_LIMIT_DEFAULT;
	if (!write)
		ur_op_init(&ps->r->rop, NULL, NULL);
	s->fd = fd;
	s->logfd = PROT_NO_FD;
	s->buf_size = PROT_BUFSIZE;
	s->maxplain = PROT_BUFSIZE;
	s->write = write != 0;
	if (s->write) {
		s->buf = malloc(PROT_BUFSIZE);
		if (s->buf == NULL) {
			free(ps);
			return NULL;
		}
		s->ptr = s->buf;
		s->cnt = (unsigned)s->maxplain;
	}
	return s;
}

/* The stream kind of fd; *mem_dev_out: a memory device (MEM_MAJOR). */
static enum prot__kind fd_kind(int fd, bool *mem_dev_out)
{
	struct stat st;

	*mem_dev_out = false;
	if (fd < 0)
		return PROT__K_NOFD;
	if (UR_IS_FIXED(fd))
		return PROT__K_SOCKET; /* direct descriptors are connections */
	if (fstat(fd, &st) < 0)
		return PROT__K_FILE;
	if (S_ISSOCK(st.st_mode))
		return PROT__K_SOCKET;
	*mem_dev_out = S_ISCHR(st.st_mode) && major(st.st_rdev) == MEM_MAJOR;
	return PROT__K_FILE;
}

struct protstream *prot_new(int fd, int write)
{
	bool mem_dev;
	enum prot__kind kind = fd_kind(fd, &mem_dev);
	struct protstream *s = stream_new(kind, fd, write);

	if (s != NULL)
		prot__of(s)->mem_dev = mem_dev;
	return s;
}

struct protstream *prot_writebuf(struct buf *buf)
{
	struct protstream *s = stream_new(PROT__K_BUF, PROT_NO_FD, 1);

	if (s == NULL)
		return NULL;
	s->writetobuf = buf;
	s->isclient = 1;
	return s;
}

struct protstream *prot_readmap(const char *base, uint32_t len)
{
	struct protstream *s = stream_new(PROT__K_MAP, PROT_NO_FD, 0);
	struct prot__stream *ps;

	if (s == NULL)
		return NULL;
	/* The whole map is one window; it is never refilled. */
	ps = prot__of(s);
	ps->src = (const unsigned char *)base;
	ps->src_len = len;
	ps->src_off = len;
	/*
	 * buf stays NULL, as in Cyrus: a caller that sets it (Cyrus's
	 * http_h2.c does s->buf = s->ptr to hand over a copy it made) has
	 * prot_free free it.
	 */
	s->ptr = (unsigned char *)(uintptr_t)base;
	s->cnt = len;
	return s;
}

struct protstream *prot_readcb(prot_fillcallback_t *proc, void *rock)
{
	struct protstream *s = stream_new(PROT__K_CB, PROT_NO_FD, 0);

	if (s == NULL)
		return NULL;
	s->fillcallback_proc = proc;
	s->fillcallback_rock = rock;
	return s;
}

static void layers_destroy(struct prot__layer **lp)
{
	while (*lp != NULL) {
		struct prot__layer *l = *lp;

		*lp = l->next;
		if (l->ops->destroy != NULL)
			l->ops->destroy(l);
	}
}

int prot_free(struct protstream *s)
{
	struct prot__stream *ps;

	if (s == NULL)
		return 0;
	ps = prot__of(s);
	prot__wait_fini(s);
	if (s->write)
		(void)prot__flush_end(s); /* a flush-on-read send under way */
	/* Layers end first, while unsent output still shows (TLS). */
	for (struct prot__layer *l = s->write ? ps->wlayers : ps->rlayers;
	     l != NULL; l = l->next)
		if (l->ops->close != NULL)
			l->ops->close(l, s);
	if (s->write)
		prot__flush_fini(s);
	else
		prot__fill_fini(s);
	layers_destroy(&ps->rlayers);
	layers_destroy(&ps->wlayers);
	prot__buf_release(&ps->dec);
	prot__buf_release(&ps->enc);
	if (s->write || ps->kind == PROT__K_MAP)
		free(s->buf);
	clear_error(s);
	free(ps->fmt);
	free(ps);
	return 0;
}

/*
 * Configuration.
 */

int prot_setlog(struct protstream *s, int fd)
{
	s->logfd = fd;
	return 0;
}

int prot_setisclient(struct protstream *s, int val)
{
	s->isclient = val != 0;
	return 0;
}

int prot_data_boundary(struct protstream *s)
{
	(void)s;
	return 0;
}

int prot_settimeout(struct protstream *s, int timeout)
{
	if (s->write)
		return prot__fatal(s, "prot_settimeout on a write stream");
	s->read_timeout = timeout > 0 ? timeout : 0;
	prot__touch_timeout(s);
	return 0;
}

int prot_resettimeout(struct protstream *s)
{
	if (s->write)
		return prot__fatal(s, "prot_resettimeout on a write stream");
	prot__touch_timeout(s);
	return 0;
}

int prot_setflushonread(struct protstream *s, struct protstream *flushs)
{
	if (s->write || (flushs != NULL && !flushs->write))
		return prot__fatal(s, "prot_setflushonread: wrong directions");
	s->flushonread = flushs;
	return 0;
}

int prot_setreadcallback(struct protstream *s, prot_readcallback_t *proc,
			 void *rock)
{
	if (s->write)
		return prot__fatal(s, "prot_setreadcallback on a write stream");
	s->readcallback_proc = proc;
	s->readcallback_rock = rock;
	return 0;
}

uint64_t prot_nettime(const struct protstream *s)
{
	/* Streams are never const objects: the const is the API's. */
	((struct prot__stream *)s)->nettime_on = true;
	return prot__cof(s)->nettime_ns;
}

/*
 * Status.
 */

const char *prot_error(struct protstream *s)
{
	if (s == NULL)
		return "bad protstream passed to prot_error";
	if (s->error != NULL)
		return s->error;
	if (s->eof)
		return PROT_EOF_STRING;
	return NULL;
}

/*
 * Only a stream over a seekable fd can rewind; map and callback streams
 * fail with EBADF as Cyrus's lseek(-1) does. The old error text is freed
 * (Cyrus leaks it).
 */
int prot_rewind(struct protstream *s)
{
	int fd = prot__of(s)->kind == PROT__K_FILE ||
				 prot__of(s)->kind == PROT__K_SOCKET
			 ? s->fd
			 : -1;

	if (s->write)
		return prot__fatal(s, "prot_rewind on a write stream");
	if (fd < 0 || UR_IS_FIXED(fd))
		return prot__fail(s, -EBADF, NULL);
	if (lseek(fd, 0, SEEK_SET) < 0)
		return prot__fail(s, -errno, NULL);
	prot__fill_discard(s);
	clear_error(s);
	s->eof = 0;
	s->can_unget = 0;
	s->bytes_in = 0;
	return 0;
}

/*
 * Reading.
 */

/*
 * prot_getc's refill and misuse paths, out of line: the exported
 * prot_getc (what a Cyrus binary calls; prot.h's inline only helps code
 * compiled against our header) then takes a byte with no stack frame and
 * one predicted branch pair. Measured in bench-prot's getc-map.
 */
static PROT__COLD int getc_slow(struct protstream *s)
{
	if (s->write)
		return prot__fatal(s, "prot_getc on a write stream");
	return prot_fill(s);
}

int prot_getc(struct protstream *s)
{
	if (prot__likely(s->cnt > 0 && !s->write)) {
		s->cnt--;
		s->can_unget++;
		s->bytes_in++;
		return *s->ptr++;
	}
	return getc_slow(s);
}

int prot_ungetc(int c, struct protstream *s)
{
	if (c == EOF)
		return EOF;
	if (s->write)
		return prot__fatal(s, "prot_ungetc on a write stream");
	if (s->can_unget <= 0)
		return prot__fatal(s, "Can't unwind any more");
	/* Compared as Cyrus does: the unsigned byte against the int. */
	if ((int)s->ptr[-1] != c)
		return prot__fatal(s, "Trying to unput wrong character");
	s->ptr--;
	s->cnt++;
	s->can_unget--;
	s->bytes_in--;
	return c;
}

size_t prot_lookahead(struct protstream *s, const char *str, size_t len,
		      int *sep)
{
	if (prot_peek(s) == EOF)
		return 0;
	if (s->cnt <= len) {
		if (memcmp(str, s->ptr, s->cnt) != 0)
			return 0;
		return s->cnt;
	}
	if (memcmp(str, s->ptr, len) != 0)
		return 0;
	*sep = s->ptr[len];
	return len + 1;
}

int prot_read(struct protstream *s, char *buf, unsigned size)
{
	unsigned n = 0, k;
	int c;

	if (size == 0)
		return 0;
	if (s->cnt == 0 || s->write) {
		c = prot_fill(s);
		if (c == EOF)
			return 0;
		buf[n++] = (char)c;
		size--;
	}
	k = size < s->cnt ? size : s->cnt;
	memcpy(buf + n, s->ptr, k);
	s->ptr += k;
	s->cnt -= k;
	s->can_unget += (int)k;
	s->bytes_in += k;
	return (int)(n + k);
}

int prot_readbuf(struct protstream *s, struct buf *buf, unsigned size)
{
	int n;

	if (prot__buf_reserve(buf, size) < 0) {
		(void)prot__fail(s, -ENOMEM, NULL);
		return 0;
	}
	n = prot_read(s, buf->s + buf->len, size);
	buf->len += (size_t)n;
	buf->s[buf->len] = '\0';
	return n;
}

/*
 * Spec 2.5: the bytes prot_getc would return one at a time, up to size - 1
 * bytes or a '\n' (kept) or EOF, but taken from the window a run at a
 * time: memchr finds the end, one memcpy copies, and the counters move as
 * if each byte had gone through getc (can_unget and bytes_in per byte).
 * Only an empty window goes through prot_fill (or prot_getc's write-stream
 * check), exactly where the byte loop would have refilled.
 */
char *prot_fgets(char *buf, unsigned size, struct protstream *s)
{
	char *p = buf;
	unsigned left, n;
	const unsigned char *nl;
	int c;

	if (size < 2 || s->eof)
		return NULL;
	left = size - 1;
	while (left > 0) {
		if (s->cnt == 0 || s->write) {
			c = prot_getc(s);
			if (c == EOF)
				break;
			*p++ = (char)c;
			left--;
			if (c == '\n')
				break;
			continue;
		}
		n = left < s->cnt ? left : s->cnt;
		nl = memchr(s->ptr, '\n', n);
		if (nl != NULL)
			n = (unsigned)(nl - s->ptr) + 1;
		memcpy(p, s->ptr, n);
		p += n;
		left -= n;
		s->ptr += n;
		s->cnt -= n;
		s->can_unget += (int)n;
		s->bytes_in += n;
		if (nl != NULL)
			break;
	}
	if (p == buf)
		return NULL;
	*p = '\0';
	return buf;
}

/*
 * Writing. bytes_out counts every byte the application hands us (Cyrus
 * misses the bytes that fill the buffer in prot_write, spec 2.21).
 */

int prot_putc(int c, struct protstream *s)
{
	if (!s->write)
		return prot__fatal(s, "prot_putc on a read stream");
	if (s->error != NULL || s->eof)
		return EOF;
	if (s->buf == NULL && prot__wbuf_get(s) == EOF)
		return EOF; /* released (prot_release) */
	*s->ptr++ = (unsigned char)c;
	s->cnt--;
	s->bytes_out++;
	if (s->cnt == 0)
		return prot_flush_internal(s, 0);
	return 0;
}

static int write_bytes(struct protstream *s, const void *p, size_t len)
{
	if (!s->write)
		return prot__fatal(s, "prot_write on a read stream");
	if (s->error != NULL || s->eof)
		return EOF;
	if (len == 0)
		return 0;
	if (s->buf == NULL && prot__wbuf_get(s) == EOF)
		return EOF; /* released (prot_release) */
	s->bytes_out += len;
	if (len < s->cnt) {
		memcpy(s->ptr, p, len);
		s->ptr += len;
		s->cnt -= (unsigned)len;
		return 0;
	}
	return prot__write_big(s, p, len);
}

/*
 * The exported prot_write copies a write that fits in the buffer saving no
 * register (gcc saved four for the inlined write_bytes()); the rest (flush,
 * errors, misuse) is write_bytes() out of line, as prot_getc does.
 * Measured in bench-prot's write-null.
 */
static __attribute__((noinline)) int write_slow(struct protstream *s,
						const char *buf, unsigned len)
{
	return write_bytes(s, buf, len);
}

int prot_write(struct protstream *s, const char *buf, unsigned len)
{
	if (prot__likely(s->write && s->error == NULL && !s->eof && len != 0 &&
			 len < s->cnt)) {
		unsigned char *dst = s->ptr;

		/* Counters first: nothing is live across the copy. */
		s->ptr += len;
		s->cnt -= len;
		s->bytes_out += len;
		memcpy(dst, buf, len);
		return 0;
	}
	return write_slow(s, buf, len);
}

int prot_putbuf(struct protstream *s, const struct buf *buf)
{
	return write_bytes(s, buf->s, buf->len);
}

int prot_puts(struct protstream *s, const char *str)
{
	return write_bytes(s, str, strlen(str));
}

/*
 * printf fast path (spec 6.20). The conversions Cyrus daemons use most
 * (spec 2.8: %s, %.*s, %c, %d, %i, %u, %x with no, l, ll or z length, and
 * %%) are formatted here, straight into the free space, without
 * vsnprintf's per-call stream setup (most of a short prot_printf's
 * cost). Anything else (a flag, a width, a NULL string, another
 * conversion) or a result that would not fit below room returns -1, and
 * the caller runs vsnprintf: the same bytes either way.
 */
static int fmt_int(char *out, size_t room, char c, int len, va_list *ap)
{
	char num[24], *q = num + sizeof(num);
	unsigned long long u;
	bool neg = false;
	size_t n;

	if (c == 'd' || c == 'i') {
		long long v = len == 'L'   ? va_arg(*ap, long long)
			      : len == 'l' ? va_arg(*ap, long)
			      : len == 'z' ? va_arg(*ap, ssize_t)
					   : va_arg(*ap, int);

		neg = v < 0;
		u = neg ? 0ULL - (unsigned long long)v : (unsigned long long)v;
	} else {
		u = len == 'L'	 ? va_arg(*ap, unsigned long long)
		    : len == 'l' ? va_arg(*ap, unsigned long)
		    : len == 'z' ? va_arg(*ap, size_t)
				 : va_arg(*ap, unsigned);
	}
	/* Constant divisors: the compiler multiplies instead of dividing. */
	if (c == 'x') {
		do {
			*--q = "0123456789abcdef"[u & 15];
			u >>= 4;
		} while (u != 0);
	} else {
		do {
			*--q = (char)('0' + u % 10);
			u /= 10;
		} while (u != 0);
	}
	if (neg)
		*--q = '-';
	n = (size_t)(num + sizeof(num) - q);
	if (n >= room)
		return -1;
	memcpy(out, q, n);
	return (int)n;
}

static int fmt_fast(char *out, size_t room, const char *fmt, va_list *ap)
{
	size_t n = 0, k;
	const char *str;
	int prec, len;
	char c, ch;

	for (;;) {
		str = strchrnul(fmt, '%');
		k = (size_t)(str - fmt);
		if (k >= room - n)
			return -1;
		memcpy(out + n, fmt, k);
		n += k;
		if (*str == '\0')
			return (int)n;
		fmt = str + 1;
		prec = -2; /* none; -1: negative, as if none (C11 7.21.6.1) */
		if (fmt[0] == '.' && fmt[1] == '*') {
			prec = va_arg(*ap, int);
			prec = prec < 0 ? -1 : prec;
			fmt += 2;
		}
		len = 0;
		if (*fmt == 'l') {
			len = *++fmt == 'l' ? 'L' : 'l';
			fmt += len == 'L';
		} else if (*fmt == 'z') {
			len = 'z';
			fmt++;
		}
		c = *fmt++;
		if (prec != -2 && c != 's')
			return -1; /* %.*d and the like */
		if (c == 's' && len == 0) {
			str = va_arg(*ap, const char *);
			if (str == NULL)
				return -1; /* glibc's "(null)" rules */
			k = prec >= 0 ? strnlen(str, (size_t)prec)
				      : strlen(str);
		} else if (c == 'c' && len == 0) {
			ch = (char)va_arg(*ap, int);
			str = &ch;
			k = 1;
		} else if (c == '%' && len == 0) {
			str = "%";
			k = 1;
		} else if (c == 'd' || c == 'i' || c == 'u' || c == 'x') {
			int r = fmt_int(out + n, room - n, c, len, ap);

			if (r < 0)
				return -1;
			n += (size_t)r;
			continue;
		} else {
			return -1;
		}
		if (k >= room - n)
			return -1;
		memcpy(out + n, str, k);
		n += k;
	}
}

/*
 * Full C-library printf semantics (spec 2.8), embedded NULs included.
 * Short results are formatted straight into the free space (by fmt_fast,
 * else vsnprintf); the rest go through a per-stream scratch buffer and
 * prot_write's path.
 */
int prot_vprintf(struct protstream *s, const char *fmt, va_list args)
{
	struct prot__stream *ps = prot__of(s);
	va_list ap;
	int n;

	if (!s->write)
		return prot__fatal(s, "prot_printf on a read stream");
	if (s->error != NULL || s->eof)
		return EOF;
	if (s->buf == NULL && prot__wbuf_get(s) == EOF)
		return EOF; /* released (prot_release) */
	va_copy(ap, args);
	n = fmt_fast((char *)s->ptr, s->cnt, fmt, &ap);
	va_end(ap);
	if (n < 0) {
		va_copy(ap, args);
		n = vsnprintf((char *)s->ptr, s->cnt, fmt, ap);
		va_end(ap);
	}
	if (n < 0)
		return prot__fail(s, -EINVAL, NULL);
	if ((unsigned)n < s->cnt) {
		s->ptr += n;
		s->cnt -= (unsigned)n;
		s->bytes_out += (unsigned)n;
		return 0;
	}
	if ((size_t)n >= ps->fmt_size) {
		size_t want = (size_t)n + 1;
		char *p = realloc(ps->fmt, want);

		if (p == NULL)
			return prot__fail(s, -ENOMEM, NULL);
		ps->fmt = p;
		ps->fmt_size = want;
	}
	va_copy(ap, args);
	n = vsnprintf(ps->fmt, ps->fmt_size, fmt, ap);
	va_end(ap);
	if (n < 0)
		return prot__fail(s, -EINVAL, NULL);
	return write_bytes(s, ps->fmt, (size_t)n);
}

int prot_printf(struct protstream *s, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = prot_vprintf(s, fmt, ap);
	va_end(ap);
	return ret;
}
