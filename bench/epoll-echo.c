/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/epoll-echo: a hand-written epoll echo server, the peer for echo. */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * What a careful epoll server does, so that the comparison with ringprot's
 * engines is fair: one thread, non-blocking sockets, a buffer per
 * connection of the same size as examples/echo, and no syscall that is
 * not needed:
 *
 *  - Level-triggered (default): one recv per readiness event, then a
 *    direct send. Only a short send registers EPOLLOUT, and while output
 *    is pending the connection waits for EPOLLOUT alone (reading more
 *    would need more buffer: that is the backpressure).
 *  - Edge-triggered (-e): recv until EAGAIN, since no new edge comes for
 *    data already queued. The same direct send; a short send adds
 *    EPOLLOUT to the interest set, and reading resumes once the pending
 *    output has gone out. EPOLLOUT is not left registered, or every ACK
 *    that frees send space would wake epoll_wait.
 *
 * The listener accepts until EAGAIN in both modes. SIGINT and SIGTERM come
 * through a signalfd in the same epoll set, and the program prints one
 * summary line in the format of ringprot-echo.
 */

#define EE_DEFAULT_LISTEN "127.0.0.1:7777"
#define EE_BUF_SIZE	  (32 * 1024) /* as examples/echo/echo.c */
#define EE_MAX_EVENTS	  512

struct ee_server {
	int epfd;
	int lfd;
	int sfd; /* signalfd */
	bool edge;
	int stop_signo;
	uint64_t accepted;
	uint64_t bytes;
	uint64_t errors;
};

struct ee_conn {
	int fd;
	bool want_out;	 /* EPOLLOUT is registered: a send was short */
	bool more_input; /* edge mode: stopped reading before EAGAIN */
	size_t off, len; /* pending output: buf[off, len) */
	unsigned char buf[EE_BUF_SIZE];
};

/* Tags for the two non-connection fds in the epoll set. */
static char tag_listener, tag_signal;

__attribute__((format(printf, 1, 2))) static void ee_err(const char *fmt, ...)
{
	va_list ap;

	(void)fputs("epoll-echo: ", stderr);
	va_start(ap, fmt);
	(void)vfprintf(stderr, fmt, ap);
	va_end(ap);
	(void)fputc('\n', stderr);
}

static void usage(FILE *out)
{
	(void)fprintf(
		out,
		"usage: epoll-echo [-e] [-l addr:port] [-p pidfile]\n"
		"  -e            edge-triggered (default: level)\n"
		"  -l addr:port  listen address (default " EE_DEFAULT_LISTEN
		"; port 0: ephemeral)\n"
		"  -p pidfile    write the process id to pidfile\n");
}

/* Split "host:port" or "[v6]:port" in place; returns 0 or -EINVAL. */
static int split_hostport(char *s, char **host_out, char **port_out)
{
	char *colon = strrchr(s, ':');
	char *end;
	unsigned long port;

	if (colon == NULL || colon[1] < '0' || colon[1] > '9')
		return -EINVAL;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (*end != '\0' || port > 65535 || errno != 0)
		return -EINVAL;
	*colon = '\0';
	*port_out = colon + 1;
	if (s[0] == '[') {
		size_t n = strlen(s);

		if (n < 3 || s[n - 1] != ']')
			return -EINVAL;
		s[n - 1] = '\0';
		s++;
	}
	*host_out = s;
	return 0;
}

/* A non-blocking listening socket on spec; returns it or -errno. */
static int listen_on(const char *spec, const char **errstr_out)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	char *copy = strdup(spec), *host, *port;
	int fd = -EINVAL, one = 1, gai;

	*errstr_out = "expected addr:port";
	if (copy == NULL)
		return -ENOMEM;
	if (split_hostport(copy, &host, &port) < 0)
		goto out_free;
	gai = getaddrinfo(host[0] != '\0' ? host : NULL, port, &hints, &ai);
	if (gai != 0) {
		*errstr_out = gai_strerror(gai);
		goto out_free;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0)
		goto out_errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
	    listen(fd, SOMAXCONN) < 0) {
		int err = errno;

		close(fd);
		errno = err;
		goto out_errno;
	}
	goto out_free;
out_errno:
	fd = -errno;
	*errstr_out = strerror(errno);
out_free:
	if (ai != NULL)
		freeaddrinfo(ai);
	free(copy);
	return fd;
}

/* Print "listening on addr:port" with the port the kernel chose. */
static int print_listening(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[NI_MAXHOST], port[NI_MAXSERV];

	memset(&ss, 0, sizeof(ss));
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	if (getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port,
			sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		return -EINVAL;
	if (ss.ss_family == AF_INET6)
		printf("listening on [%s]:%s\n", host, port);
	else
		printf("listening on %s:%s\n", host, port);
	return fflush(stdout) == 0 ? 0 : -EIO;
}

static int write_pidfile(const char *path)
{
	FILE *f = fopen(path, "we");

	if (f == NULL)
		return -errno;
	if (fprintf(f, "%ld\n", (long)getpid()) < 0) {
		(void)fclose(f);
		return -EIO;
	}
	if (fclose(f) != 0)
		return -errno;
	return 0;
}

static int ep_ctl(struct ee_server *srv, int op, int fd, uint32_t events,
		  void *ptr)
{
	struct epoll_event ev = {.events = events, .data.ptr = ptr};

	if (srv->edge)
		ev.events |= EPOLLET;
	return epoll_ctl(srv->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

static void conn_close(struct ee_server *srv, struct ee_conn *c, int err)
{
	/* A peer resetting is no server error (as in ringprot-echo). */
	if (err < 0 && err != -ECONNRESET && err != -EPIPE)
		srv->errors++;
	close(c->fd); /* also leaves the epoll set: the fd has no dup */
	free(c);
}

/*
 * Change the interest set when output becomes pending or drains.
 * Level mode drops EPOLLIN while output is pending; edge mode keeps it,
 * since an edge would otherwise be lost (more_input remembers it).
 */
static int set_want_out(struct ee_server *srv, struct ee_conn *c, bool on)
{
	uint32_t ev;

	if (on)
		ev = srv->edge ? EPOLLIN | EPOLLOUT : EPOLLOUT;
	else
		ev = EPOLLIN;
	c->want_out = on;
	return ep_ctl(srv, EPOLL_CTL_MOD, c->fd, ev, c);
}

/*
 * Send buf[off, len) directly. Returns 1 if all of it went out, 0 if the
 * socket is full (the rest stays pending and EPOLLOUT is registered), or
 * -errno.
 */
static int flush_out(struct ee_server *srv, struct ee_conn *c)
{
	while (c->off < c->len) {
		ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off,
				 MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			if (!c->want_out)
				return set_want_out(srv, c, true);
			return 0;
		}
		c->off += (size_t)n;
	}
	c->off = c->len = 0;
	if (c->want_out) {
		int ret = set_want_out(srv, c, false);

		if (ret < 0)
			return ret;
	}
	return 1;
}

/*
 * Read and echo. Level mode reads once (epoll reports the socket again if
 * more is queued); edge mode reads until EAGAIN. Returns 0, or -errno,
 * or -ECONNABORTED for an orderly EOF (not counted as an error).
 */
static int conn_input(struct ee_server *srv, struct ee_conn *c)
{
	for (;;) {
		ssize_t n = recv(c->fd, c->buf, sizeof(c->buf), 0);
		int ret;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				c->more_input = false;
				return 0;
			}
			return -errno;
		}
		if (n == 0)
			return -ECONNABORTED;
		srv->bytes += (uint64_t)n;
		c->off = 0;
		c->len = (size_t)n;
		ret = flush_out(srv, c);
		if (ret <= 0) {
			/* Output pending: resume input once it drains. */
			c->more_input = srv->edge;
			return ret;
		}
		if (!srv->edge)
			return 0;
	}
}

static void conn_event(struct ee_server *srv, struct ee_conn *c, uint32_t ev)
{
	int ret = 0;

	if ((ev & EPOLLOUT) != 0 && c->want_out) {
		ret = flush_out(srv, c);
		if (ret < 0)
			goto out_close;
		if (ret == 0)
			return;
	}
	if (c->want_out) {
		/* Edge mode: an EPOLLIN edge while output is pending. */
		if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0)
			c->more_input = true;
		return;
	}
	/* Errors and hangups surface through recv. */
	if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 || c->more_input)
		ret = conn_input(srv, c);
	if (ret >= 0)
		return;
out_close:
	conn_close(srv, c, ret == -ECONNABORTED ? 0 : ret);
}

static void accept_all(struct ee_server *srv)
{
	for (;;) {
		int fd = accept4(srv->lfd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct ee_conn *c;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			/* EAGAIN ends the batch; EMFILE etc. are counted. */
			if (errno != EAGAIN)
				srv->errors++;
			return;
		}
		c = malloc(sizeof(*c));
		if (c == NULL) {
			srv->errors++;
			close(fd);
			continue;
		}
		c->fd = fd;
		c->want_out = false;
		c->more_input = false;
		c->off = c->len = 0;
		if (ep_ctl(srv, EPOLL_CTL_ADD, fd, EPOLLIN, c) < 0) {
			srv->errors++;
			close(fd);
			free(c);
			continue;
		}
		srv->accepted++;
	}
}

/* Run until a signal arrives; returns 0 or -errno. */
static int serve(struct ee_server *srv)
{
	struct epoll_event evs[EE_MAX_EVENTS];

	for (;;) {
		int n = epoll_wait(srv->epfd, evs, EE_MAX_EVENTS, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;

			if (p == &tag_listener) {
				accept_all(srv);
			} else if (p == &tag_signal) {
				struct signalfd_siginfo si;

				if (read(srv->sfd, &si, sizeof(si)) ==
				    (ssize_t)sizeof(si)) {
					srv->stop_signo = (int)si.ssi_signo;
					return 0;
				}
			} else {
				conn_event(srv, p, evs[i].events);
			}
		}
	}
}

/* Block SIGINT and SIGTERM and put a signalfd for them in the set. */
static int setup(struct ee_server *srv)
{
	sigset_t set;
	int ret;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	srv->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (srv->sfd < 0)
		return -errno;
	srv->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (srv->epfd < 0)
		return -errno;
	ret = ep_ctl(srv, EPOLL_CTL_ADD, srv->sfd, EPOLLIN, &tag_signal);
	if (ret < 0)
		return ret;
	return ep_ctl(srv, EPOLL_CTL_ADD, srv->lfd, EPOLLIN, &tag_listener);
}

int main(int argc, char **argv)
{
	struct ee_server srv = {.epfd = -1, .lfd = -1, .sfd = -1};
	const char *listen_spec = EE_DEFAULT_LISTEN, *pidfile = NULL;
	const char *errstr;
	int opt, ret;

	while ((opt = getopt(argc, argv, "el:p:h")) != -1) {
		switch (opt) {
		case 'e':
			srv.edge = true;
			break;
		case 'l':
			listen_spec = optarg;
			break;
		case 'p':
			pidfile = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		ee_err("cannot ignore SIGPIPE: %s", strerror(errno));
		return 1;
	}
	srv.lfd = listen_on(listen_spec, &errstr);
	if (srv.lfd < 0) {
		ee_err("cannot listen on %s: %s", listen_spec, errstr);
		return 1;
	}
	ret = setup(&srv);
	if (ret < 0) {
		ee_err("epoll setup: %s", strerror(-ret));
		goto out;
	}
	if (pidfile != NULL && (ret = write_pidfile(pidfile)) < 0) {
		ee_err("pidfile %s: %s", pidfile, strerror(-ret));
		pidfile = NULL;
		goto out;
	}
	ret = print_listening(srv.lfd);
	if (ret == 0)
		ret = serve(&srv);
	if (ret < 0)
		ee_err("%s", strerror(-ret));
out:
	/* Connections still open are closed by exit. */
	if (srv.lfd >= 0)
		close(srv.lfd);
	if (pidfile != NULL)
		unlink(pidfile);
	printf("echo: %s: %llu connections, %llu bytes echoed, %llu errors "
	       "(epoll, %s-triggered)\n",
	       srv.stop_signo != 0 ? strsignal(srv.stop_signo) : "stopped",
	       (unsigned long long)srv.accepted, (unsigned long long)srv.bytes,
	       (unsigned long long)srv.errors, srv.edge ? "edge" : "level");
	return ret < 0 ? 1 : 0;
}
