/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/sendfile: a file range written to a stream without a user copy. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

/*
 * The socket cannot take file pages from a regular file directly through
 * the ring (no sendfile op), so the range goes file -> pipe -> socket
 * with two splices per pipeful: the pipe's pages are the page cache's,
 * referenced, never copied. The pipe is made per call: four syscalls
 * against a range worth the trouble (the caller sends small ones
 * through the buffer) buy no memory held while idle and no pipe shared
 * by two fibers of a thread, where an interrupted splice would leave
 * one's bytes in front of the other's. 1 MiB is the default
 * pipe-max-size; a refusal leaves the 64 KiB default, which only costs
 * more splices.
 */
#define PIPE_SIZE  (1024 * 1024)
#define READ_CHUNK 65536 /* the fallback's reads */

static bool zero_copy(const struct protstream *s)
{
	const struct prot__stream *ps = prot__cof(s);

	return ps->kind == PROT__K_SOCKET && ps->wlayers == NULL &&
	       s->logfd == PROT_NO_FD;
}

/* The write timeout's deadline for a wait that starts now, 0: none. */
static uint64_t wdeadline(const struct prot__stream *ps)
{
	if (ps->wtimeout_ms == 0)
		return 0;
	return ur_now_ns(CLOCK_MONOTONIC) +
	       (uint64_t)ps->wtimeout_ms * 1000000ULL;
}

/* Empty the pipe's n bytes into the socket. */
static int drain_pipe(struct prot__stream *ps, int pfd, size_t n, bool more)
{
	while (n > 0) {
		ssize_t w = ur_splice_until(pfd, -1, ps->pub.fd, -1, n,
					    more ? SPLICE_F_MORE : 0,
					    wdeadline(ps));

		if (w <= 0)
			return w < 0 ? (int)w : -EIO;
		n -= (size_t)w;
		ps->pub.bytes_out += (uint64_t)w;
	}
	return 0;
}

/*
 * Returns 0, -errno, or NO_SPLICE when the first splice from the file
 * was refused (a filesystem without splice_read, a kernel without the
 * ring op): nothing has been sent, so the bytes can still be copied.
 */
#define NO_SPLICE 2

static bool refused(int err)
{
	return err == -EINVAL || err == -EOPNOTSUPP || err == -ENOSYS;
}

static int splice_range(struct prot__stream *ps, int fd, off_t off, size_t len)
{
	bool first = true;
	int pp[2], ret = 0;

	if (pipe2(pp, O_CLOEXEC) < 0)
		return -errno;
	if (fcntl(pp[1], F_SETPIPE_SZ, PIPE_SIZE) < 0) {
		/* EPERM above pipe-max-size: the default size works */
	}
	while (len > 0) {
		ssize_t in = ur_splice(fd, off, pp[1], -1, len, 0);

		if (in <= 0) {
			ret = in < 0 ? (int)in : -EIO; /* the file is short */
			if (first && refused(ret))
				ret = NO_SPLICE;
			break;
		}
		first = false;
		off += in;
		len -= (size_t)in;
		ret = drain_pipe(ps, pp[0], (size_t)in, len > 0);
		if (ret < 0)
			break;
	}
	close(pp[0]);
	close(pp[1]);
	return ret;
}

/* Layers or a log: the bytes must pass through prot_write. */
static int copy_range(struct protstream *s, int fd, off_t off, size_t len)
{
	char *buf = malloc(len < READ_CHUNK ? len : READ_CHUNK);
	int ret = 0;

	if (buf == NULL)
		return -ENOMEM;
	while (len > 0) {
		ssize_t n = ur_read(fd, buf,
				    len < READ_CHUNK ? len : READ_CHUNK, off);

		if (n <= 0) {
			ret = n < 0 ? (int)n : -EIO;
			break;
		}
		if (prot_write(s, buf, (unsigned)n) == EOF) {
			ret = 1; /* the stream has its error already */
			break;
		}
		off += n;
		len -= (size_t)n;
	}
	free(buf);
	return ret;
}

int prot_sendfile(struct protstream *s, int fd, off_t off, size_t len)
{
	struct prot__stream *ps = prot__of(s);
	int ret;

	if (!s->write || off < 0) {
		errno = EINVAL;
		return EOF;
	}
	if (s->error != NULL || s->eof)
		return prot__fail(s, -EIO, NULL);
	if (len == 0)
		return 0;
	if (!zero_copy(s)) {
		ret = copy_range(s, fd, off, len);
		if (ret == 0)
			return prot_flush(s);
	} else {
		if (prot_flush(s) == EOF)
			return EOF;
		ret = splice_range(ps, fd, off, len);
		if (ret == NO_SPLICE)
			ret = copy_range(s, fd, off, len);
		if (ret == 0)
			return prot_flush(s);
	}
	if (ret == 1)
		return EOF; /* copy_range: prot_write failed the stream */
	return prot__fail(s, ret, ret == -ETIMEDOUT ? "write timed out" : NULL);
}
