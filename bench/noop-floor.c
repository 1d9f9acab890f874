/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/noop-floor: the least IMAP a NOOP round trip can cost a server. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * The floor column of bench/imap-cmds.sh's NOOP scenario: what one NOOP
 * round trip on loopback costs a server that does nothing but the
 * socket work. One thread, level-triggered epoll, plain read() and
 * write(), no mailbox and no authentication: every tagged command gets
 * "TAG OK", SELECT its "* 1 EXISTS" first, LOGOUT a "* BYE". Per
 * readiness event it reads once, answers every whole line it holds with
 * one write(), and goes back to epoll_wait, so that at 16 busy
 * connections a NOOP costs a read, a write and a share of an
 * epoll_wait: what is left of ringprot-imapd's figure above this one is
 * the cost of its runtime and of being an IMAP server.
 *
 * Enough for bench/loadgen -m imap-noop (greeting "* OK", LOGIN, SELECT,
 * then NOOPs). A line longer than the buffer gets "* BYE" and a close.
 * SIGTERM ends it (the default action: nothing to flush or save).
 */

#define NF_BUF_SIZE   4096
#define NF_OUT_SIZE   (4 * NF_BUF_SIZE)
#define NF_MAX_EVENTS 256

static const char nf_greeting[] = "* OK noop-floor ready\r\n";

struct nf_conn {
	int fd;
	bool closing;		 /* LOGOUT or a bad line: close once sent */
	size_t in_len;		 /* bytes in in[] */
	size_t out_off, out_len; /* pending output: out[out_off, out_len) */
	char in[NF_BUF_SIZE];
	char out[NF_OUT_SIZE];
};

/* The listener's tag in the epoll set (connections carry their conn). */
static char tag_listener;

static void usage(void)
{
	(void)fprintf(stderr,
		      "usage: noop-floor [-l addr:port]\n"
		      "  -l addr:port  IPv4 listen address (default "
		      "127.0.0.1:0, an ephemeral port)\n"
		      "Prints \"listening on addr:port\", then serves until "
		      "SIGTERM.\n");
}

/* "a.b.c.d:port" into sin; returns 0 or -EINVAL. */
static int parse_addr(const char *spec, struct sockaddr_in *sin)
{
	const char *colon = strrchr(spec, ':');
	char host[INET_ADDRSTRLEN];
	char *end;
	unsigned long port;

	if (colon == NULL || (size_t)(colon - spec) >= sizeof(host))
		return -EINVAL;
	memcpy(host, spec, (size_t)(colon - spec));
	host[colon - spec] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || port > 65535 || errno != 0)
		return -EINVAL;
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &sin->sin_addr) == 1 ? 0 : -EINVAL;
}

/* A non-blocking listener on sin, its address printed; fd or -errno. */
static int open_listener(struct sockaddr_in *sin)
{
	socklen_t len = sizeof(*sin);
	char host[INET_ADDRSTRLEN];
	int fd, one = 1, err;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)sin, sizeof(*sin)) < 0 ||
	    listen(fd, SOMAXCONN) < 0 ||
	    getsockname(fd, (struct sockaddr *)sin, &len) < 0)
		goto out_close;
	if (inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host)) == NULL)
		goto out_close;
	/* bench/lib.sh reads this line for the port. */
	printf("listening on %s:%u\n", host, (unsigned)ntohs(sin->sin_port));
	if (fflush(stdout) != 0)
		goto out_close;
	return fd;
out_close:
	err = errno != 0 ? errno : EIO;
	close(fd);
	return -err;
}

static int ep_set(int epfd, int op, int fd, uint32_t events, void *ptr)
{
	struct epoll_event ev = {.events = events, .data.ptr = ptr};

	return epoll_ctl(epfd, op, fd, &ev) < 0 ? -errno : 0;
}

/* Append s (n bytes) to c's output; -ENOBUFS if it does not fit. */
static int put(struct nf_conn *c, const char *s, size_t n)
{
	if (n > sizeof(c->out) - c->out_len)
		return -ENOBUFS;
	memcpy(c->out + c->out_len, s, n);
	c->out_len += n;
	return 0;
}

/* Does the command word at p (n bytes, up to a space or the end) equal w? */
static bool word_is(const char *p, size_t n, const char *w)
{
	size_t wn = strlen(w);

	return (n == wn || (n > wn && p[wn] == ' ')) &&
	       strncasecmp(p, w, wn) == 0;
}

/*
 * Answer one line (n bytes, LF and any CR stripped): "TAG OK", after the
 * untagged lines SELECT and LOGOUT need. A line with no tag is answered
 * "* BAD". Returns 0 or -ENOBUFS (the output buffer is full).
 */
static int answer(struct nf_conn *c, const char *line, size_t n)
{
	const char *sp = memchr(line, ' ', n);
	const char *cmd, *done = " OK done\r\n";
	int ret = 0;

	if (sp == NULL || sp == line)
		return put(c, "* BAD no tag\r\n", 14);
	cmd = sp + 1;
	if (word_is(cmd, n - (size_t)(cmd - line), "SELECT")) {
		ret = put(c, "* 1 EXISTS\r\n", 12);
	} else if (word_is(cmd, n - (size_t)(cmd - line), "LOGOUT")) {
		ret = put(c, "* BYE\r\n", 7);
		c->closing = true;
	}
	if (ret == 0)
		ret = put(c, line, (size_t)(sp - line));
	if (ret == 0)
		ret = put(c, done, strlen(done));
	return ret;
}

/*
 * Answer every whole line in c->in and keep the partial one. A line
 * that fills the buffer without an LF ends the session. Stops early,
 * keeping the rest, if the output buffer fills.
 */
static void answer_lines(struct nf_conn *c)
{
	size_t start = 0;
	char *lf;

	while ((lf = memchr(c->in + start, '\n', c->in_len - start)) != NULL) {
		size_t n = (size_t)(lf - (c->in + start));

		if (n > 0 && c->in[start + n - 1] == '\r')
			n--;
		if (answer(c, c->in + start, n) < 0)
			break;
		start = (size_t)(lf - c->in) + 1;
		if (c->closing)
			break;
	}
	memmove(c->in, c->in + start, c->in_len - start);
	c->in_len -= start;
	if (c->in_len == sizeof(c->in) &&
	    put(c, "* BYE line too long\r\n", 21) == 0)
		c->closing = true;
}

/*
 * Write the pending output. Returns 1 when it is all out, 0 if the
 * socket is full (the rest waits for EPOLLOUT), or -errno.
 */
static int flush_out(int epfd, struct nf_conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = write(c->fd, c->out + c->out_off,
				  c->out_len - c->out_off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return ep_set(epfd, EPOLL_CTL_MOD, c->fd, EPOLLOUT, c);
		if (n < 0)
			return -errno;
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	return 1;
}

/*
 * Answer the whole lines in c->in and write the replies, again while
 * lines are left over from a full output buffer. Returns 0 when all is
 * answered and out, or output waits for EPOLLOUT; -ECONNABORTED once a
 * closing session's last reply is out; or -errno.
 */
static int serve_lines(int epfd, struct nf_conn *c)
{
	for (;;) {
		int ret;

		answer_lines(c);
		if (c->out_len == 0)
			return 0;
		ret = flush_out(epfd, c);
		if (ret <= 0)
			return ret;
		if (c->closing)
			return -ECONNABORTED;
		if (memchr(c->in, '\n', c->in_len) == NULL)
			return 0;
	}
}

/*
 * One readiness event. While output is pending only EPOLLOUT is watched
 * (no more input is read before the replies to the last are out), and
 * input is watched again once it drains.
 */
static int conn_event(int epfd, struct nf_conn *c, uint32_t ev)
{
	ssize_t n;
	int ret;

	if ((ev & EPOLLOUT) != 0) {
		ret = flush_out(epfd, c);
		if (ret <= 0)
			return ret;
		if (c->closing)
			return -ECONNABORTED;
		ret = ep_set(epfd, EPOLL_CTL_MOD, c->fd, EPOLLIN, c);
		return ret < 0 ? ret : serve_lines(epfd, c);
	}
	n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -errno;
	if (n == 0)
		return -ECONNABORTED;
	c->in_len += (size_t)n;
	return serve_lines(epfd, c);
}

static void accept_all(int epfd, int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct nf_conn *c;

		if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
			continue;
		if (fd < 0)
			return; /* EAGAIN; EMFILE: again on the next wake-up */
		c = malloc(sizeof(*c));
		if (c == NULL) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->closing = false;
		c->in_len = 0;
		c->out_off = c->out_len = 0;
		/* The greeting goes out on the first EPOLLOUT. */
		if (put(c, nf_greeting, sizeof(nf_greeting) - 1) < 0 ||
		    ep_set(epfd, EPOLL_CTL_ADD, fd, EPOLLOUT, c) < 0) {
			close(fd);
			free(c);
		}
	}
}

int main(int argc, char **argv)
{
	struct epoll_event evs[NF_MAX_EVENTS];
	struct sockaddr_in sin;
	const char *spec = "127.0.0.1:0";
	int opt, lfd, epfd;

	while ((opt = getopt(argc, argv, "l:")) != -1) {
		if (opt != 'l')
			goto out_usage;
		spec = optarg;
	}
	if (optind != argc || parse_addr(spec, &sin) < 0)
		goto out_usage;
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		return 1;
	lfd = open_listener(&sin);
	if (lfd < 0) {
		(void)fprintf(stderr, "noop-floor: cannot listen on %s: %s\n",
			      spec, strerror(-lfd));
		return 1;
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0 ||
	    ep_set(epfd, EPOLL_CTL_ADD, lfd, EPOLLIN, &tag_listener) < 0) {
		(void)fprintf(stderr, "noop-floor: epoll: %s\n",
			      strerror(errno));
		return 1;
	}
	for (;;) {
		int n = epoll_wait(epfd, evs, NF_MAX_EVENTS, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			(void)fprintf(stderr, "noop-floor: epoll_wait: %s\n",
				      strerror(errno));
			return 1;
		}
		for (int i = 0; i < n; i++) {
			struct nf_conn *c = evs[i].data.ptr;

			if (evs[i].data.ptr == &tag_listener) {
				accept_all(epfd, lfd);
			} else if (conn_event(epfd, c, evs[i].events) < 0) {
				close(c->fd); /* leaves the epoll set too */
				free(c);
			}
		}
	}
out_usage:
	usage();
	return 2;
}
