/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/echo: the smallest complete server on the ringprot engine. */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ringprot/uring.h>

#define ECHO_DEFAULT_LISTEN "127.0.0.1:7777"
/* Per-connection buffer, on the heap: fiber stacks stay small. */
#define ECHO_BUF_SIZE	    (32 * 1024)
/* -D: the direct descriptor table (the most connections then). */
#define ECHO_DIRECT_FILES 16384
/* Pause before re-arming accept after an error (EMFILE...): no spin. */
#define ECHO_REARM_DELAY_NS (50ull * 1000 * 1000)
/* Longest wait of one loop turn while draining. */
#define ECHO_TURN_NS	    (10ll * 1000 * 1000)
/* How long shutdown waits for cancelled connections to unwind. */
#define ECHO_DRAIN_NS	    (2ull * 1000 * 1000 * 1000)

struct echo_conn;

struct echo_server {
	struct ur_loop *loop;
	int lfd;
	struct ur_op accept_op;
	struct ur_timer rearm;
	struct ur_signal *sig;
	int stop_signo;
	bool stopping;
	bool direct; /* connections are direct descriptors (-D) */
	struct echo_conn *conns; /* live connections, for shutdown */
	uint64_t accepted;
	uint64_t bytes;
	uint64_t errors;
};

struct echo_conn {
	struct echo_server *srv;
	struct ur_fiber *fiber;
	int fd;
	struct echo_conn *prev, *next;
	/* One is received into while the other may still be sent from. */
	unsigned char buf[2][ECHO_BUF_SIZE / 2];
};

/* Report on stderr, prefixed with the program name. */
__attribute__((format(printf, 1, 2))) static void echo_err(const char *fmt, ...)
{
	va_list ap;

	(void)fputs("echo: ", stderr);
	va_start(ap, fmt);
	(void)vfprintf(stderr, fmt, ap);
	va_end(ap);
	(void)fputc('\n', stderr);
}

static void usage(FILE *out)
{
	(void)fprintf(
		out,
		"usage: ringprot-echo [-l addr:port] [-p pidfile] [-e engine]\n"
		"                     [-n usecs] [-D]\n"
		"  -l addr:port  listen address (default " ECHO_DEFAULT_LISTEN
		"; port 0: ephemeral;\n"
		"                IPv6 as [addr]:port)\n"
		"  -p pidfile    write the process id to pidfile\n"
		"  -e engine     auto (default: io_uring, else epoll), epoll,\n"
		"                or an io_uring mode: defer, coop, plain,\n"
		"                sqpoll, sqpoll@CPU (poller pinned to CPU)\n"
		"  -n usecs      NAPI busy polling for up to usecs\n"
		"  -D            connections as direct descriptors (io_uring:\n"
		"                outside the process fd table; epoll: fds the\n"
		"                loop holds, registered once)\n");
}

/* A decimal unsigned 32-bit number: 0 or -EINVAL. */
static int parse_u32(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > UINT32_MAX)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

/* Fill opts from an -e argument; -EINVAL for an unknown engine. */
static int parse_engine(const char *s, struct ur_loop_opts *opts)
{
	static const struct {
		const char *name;
		enum ur_backend backend;
		enum ur_mode mode;
	} engines[] = {
		{"auto", UR_BACKEND_AUTO, UR_MODE_AUTO},
		{"epoll", UR_BACKEND_EPOLL, UR_MODE_AUTO},
		{"uring", UR_BACKEND_URING, UR_MODE_AUTO},
		{"defer", UR_BACKEND_URING, UR_MODE_DEFER},
		{"coop", UR_BACKEND_URING, UR_MODE_COOP},
		{"plain", UR_BACKEND_URING, UR_MODE_PLAIN},
		{"sqpoll", UR_BACKEND_URING, UR_MODE_SQPOLL},
	};
	const char *at = strchr(s, '@');
	size_t len = at != NULL ? (size_t)(at - s) : strlen(s);

	for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++) {
		if (strlen(engines[i].name) != len ||
		    strncmp(s, engines[i].name, len) != 0)
			continue;
		opts->backend = engines[i].backend;
		opts->mode = engines[i].mode;
		if (at == NULL)
			return 0;
		if (opts->mode != UR_MODE_SQPOLL)
			return -EINVAL;
		opts->sqpoll_pin = true;
		return parse_u32(at + 1, &opts->sqpoll_cpu);
	}
	return -EINVAL;
}

/*
 * Split "host:port" or "[v6]:port" in place, with a decimal port of at
 * most 65535; returns 0 or -EINVAL.
 */
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

/* Bind and listen on spec; returns the socket or -errno. */
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
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
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

/*
 * Print "listening on addr:port (engine)" with the port the kernel chose
 * and the engine the loop runs on (io_uring, or the epoll fallback).
 */
static int print_listening(int fd, const struct ur_loop *loop)
{
	char engine[64];
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[NI_MAXHOST], port[NI_MAXSERV];

	memset(&ss, 0, sizeof(ss));
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	if (getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port,
			sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		return -EINVAL;
	if (ur_loop_backend(loop) == UR_BACKEND_URING)
		snprintf(engine, sizeof(engine), "%s %s",
			 ur_backend_name(ur_loop_backend(loop)),
			 ur_mode_name(ur_loop_mode(loop)));
	else
		snprintf(engine, sizeof(engine), "%s",
			 ur_backend_name(ur_loop_backend(loop)));
	if (ss.ss_family == AF_INET6)
		printf("listening on [%s]:%s (%s)\n", host, port, engine);
	else
		printf("listening on %s:%s (%s)\n", host, port, engine);
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

/* Send all of buf, continuing short sends. Returns 0 or -errno. */
static int send_all(int fd, const unsigned char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = ur_send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EPIPE;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static void close_done(struct ur_op *op)
{
	free(op);
}

/*
 * Close fd where the caller cannot block (a callback, a cancelled
 * fiber). A direct descriptor can only be closed through the loop.
 */
static void close_nowait(struct echo_server *srv, int fd)
{
	struct ur_op *op;

	if (!UR_IS_FIXED(fd)) {
		close(fd);
		return;
	}
	op = malloc(sizeof(*op));
	if (op != NULL) {
		ur_op_init(op, close_done, NULL);
		if (ur_close_start(srv->loop, op, fd) == 0)
			return;
		free(op);
	}
	srv->errors++; /* the slot stays taken until the loop is freed */
}

static void conn_unlink(struct echo_conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->srv->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
}

/* The connection's fiber: recv -> send until EOF or an error. */
/*
 * Wait for the send of buf[0..len) started on op, and send what it left.
 * Returns 0 or -errno.
 */
static int send_finish(struct echo_conn *c, struct ur_op *op,
		       const unsigned char *buf, size_t len)
{
	int n = ur_op_wait(op);

	if (n < 0)
		return n;
	if (n == 0)
		return -EPIPE;
	return send_all(c->fd, buf + n, len - (size_t)n);
}

/*
 * The connection's fiber: recv -> send until EOF or an error. A reply's
 * send is started, not waited for: it goes to the kernel with the wait
 * for the next request (ur_op_nowake), so on io_uring with DEFER_TASKRUN
 * a request costs one io_uring_enter, not two. The next recv fills the
 * other buffer; the send is finished (and a short one completed) before
 * its buffer is used again, so bytes go out in order.
 */
static int conn_run(void *arg)
{
	struct echo_conn *c = arg;
	struct echo_server *srv = c->srv;
	struct ur_op sop;
	size_t pending = 0; /* bytes of buf[cur ^ 1] the send in sop has */
	unsigned cur = 0;
	int ret;

	ur_op_init(&sop, NULL, NULL);
	for (;;) {
		ssize_t n = ur_recv(c->fd, c->buf[cur], sizeof(c->buf[cur]), 0);

		if (pending > 0) {
			ret = send_finish(c, &sop, c->buf[cur ^ 1], pending);
			pending = 0;
			if (ret < 0)
				break;
		}
		if (n <= 0) {
			ret = (int)n;
			break;
		}
		ret = ur_send_start(srv->loop, &sop, c->fd, c->buf[cur],
				    (size_t)n, MSG_NOSIGNAL);
		if (ret < 0)
			break;
		ur_op_nowake(&sop);
		pending = (size_t)n;
		srv->bytes += (uint64_t)n;
		cur ^= 1;
	}
	/* The kernel owns the buffer until the send's own completion. */
	if (ur_op_is_busy(&sop) && ur_op_wait(&sop) < 0 && ret >= 0)
		ret = -EPIPE;
	/* A peer resetting, or shutdown cancelling us, is no server error. */
	if (ret < 0 && ret != -ECONNRESET && ret != -EPIPE && ret != -ECANCELED)
		srv->errors++;
	/* A cancelled fiber's blocking calls return at once. */
	if (ur_fiber_is_cancelled(ur_fiber_self()))
		close_nowait(srv, c->fd);
	else if (ur_close(c->fd) < 0)
		srv->errors++;
	conn_unlink(c);
	free(c);
	return 0;
}

static void conn_start(struct echo_server *srv, int fd)
{
	struct echo_conn *c = malloc(sizeof(*c));

	if (c == NULL)
		goto out_close;
	c->srv = srv;
	c->fd = fd;
	if (ur_fiber_spawn(srv->loop, conn_run, c, NULL, &c->fiber) < 0)
		goto out_free;
	/* Linked before the fiber first runs (at the next turn). */
	c->prev = NULL;
	c->next = srv->conns;
	if (srv->conns != NULL)
		srv->conns->prev = c;
	srv->conns = c;
	ur_fiber_detach(c->fiber);
	return;
out_free:
	free(c);
out_close:
	srv->errors++;
	close_nowait(srv, fd);
}

static int accept_arm(struct echo_server *srv)
{
	return ur_accept_multishot_start(srv->loop, &srv->accept_op, srv->lfd,
					 srv->direct);
}

static void on_rearm(struct ur_timer *t, void *arg)
{
	struct echo_server *srv = arg;

	(void)t;
	if (!srv->stopping && accept_arm(srv) < 0) {
		echo_err("cannot re-arm accept, stopping");
		ur_loop_stop(srv->loop);
	}
}

static void on_accept(struct ur_op *op)
{
	struct echo_server *srv = op->data;

	if (op->res >= 0) {
		int fd = srv->direct ? UR_FIXED(op->res) : op->res;

		if (srv->stopping) {
			close_nowait(srv, fd);
		} else {
			srv->accepted++;
			conn_start(srv, fd);
		}
	}
	if (ur_op_more(op) || srv->stopping)
		return;
	/* The multishot ended: re-arm now, or after a pause on error. */
	if (op->res >= 0) {
		on_rearm(&srv->rearm, srv);
		return;
	}
	srv->errors++;
	if (ur_timer_start(&srv->rearm, ECHO_REARM_DELAY_NS, on_rearm, srv) < 0)
		ur_loop_stop(srv->loop);
}

/* SIGINT/SIGTERM: stop accepting, close the listener, end the loop. */
static void on_signal(struct ur_signal *sig, int signo, void *arg)
{
	struct echo_server *srv = arg;

	(void)sig;
	if (srv->stopping)
		return;
	srv->stopping = true;
	srv->stop_signo = signo;
	if (ur_timer_is_armed(&srv->rearm) && ur_timer_stop(&srv->rearm) < 0)
		srv->errors++;
	/* In-flight ops hold their own file reference: cancel, then close. */
	if (ur_op_is_busy(&srv->accept_op) && ur_op_cancel(&srv->accept_op) < 0)
		srv->errors++;
	close(srv->lfd);
	srv->lfd = -1;
	ur_loop_stop(srv->loop);
}

/*
 * After the loop stopped: cancel the connections still open and turn the
 * loop until their fibers have unwound. Returns 0, or -ETIMEDOUT if some
 * fiber did not finish in time.
 */
static int drain(struct echo_server *srv)
{
	uint64_t until = ur_now_ns(CLOCK_MONOTONIC) + ECHO_DRAIN_NS;
	struct ur_loop_stats st;
	int ret;

	for (struct echo_conn *c = srv->conns; c != NULL; c = c->next)
		if (ur_fiber_cancel(c->fiber) < 0) {
			/* -ESRCH: it has returned; else it ends late */
		}
	for (;;) {
		ur_loop_stats(srv->loop, &st);
		if (st.fibers_live == 0)
			return 0;
		if (ur_now_ns(CLOCK_MONOTONIC) >= until)
			return -ETIMEDOUT;
		ret = ur_loop_run_once(srv->loop, ECHO_TURN_NS);
		if (ret < 0)
			return ret;
	}
}

static int serve(struct echo_server *srv)
{
	sigset_t set;
	int ret;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	ret = ur_signal_start(srv->loop, &set, on_signal, srv, &srv->sig);
	if (ret < 0) {
		echo_err("ur_signal_start: %s", strerror(-ret));
		return ret;
	}
	ur_op_init(&srv->accept_op, on_accept, srv);
	ur_timer_init(&srv->rearm, srv->loop);
	ret = accept_arm(srv);
	if (ret < 0) {
		echo_err("multishot accept: %s", strerror(-ret));
		goto out_signal;
	}
	ret = print_listening(srv->lfd, srv->loop);
	if (ret < 0)
		goto out_signal;
	ret = ur_loop_run(srv->loop);
	if (ret < 0)
		echo_err("ur_loop_run: %s", strerror(-ret));
	if (drain(srv) < 0) {
		echo_err("connections did not close in time");
		ret = -ETIMEDOUT;
	}
out_signal:
	ur_signal_stop(&srv->sig);
	return ret;
}

int main(int argc, char **argv)
{
	struct echo_server srv = {.lfd = -1};
	struct ur_loop_opts opts = {0};
	const char *listen_spec = ECHO_DEFAULT_LISTEN, *pidfile = NULL;
	const char *errstr;
	unsigned napi_us = 0;
	int opt, ret;

	while ((opt = getopt(argc, argv, "l:p:e:n:Dh")) != -1) {
		switch (opt) {
		case 'l':
			listen_spec = optarg;
			break;
		case 'p':
			pidfile = optarg;
			break;
		case 'e':
			if (parse_engine(optarg, &opts) < 0) {
				echo_err("unknown engine: %s", optarg);
				usage(stderr);
				return 2;
			}
			break;
		case 'n':
			if (parse_u32(optarg, &napi_us) < 0) {
				echo_err("-n wants microseconds: %s", optarg);
				return 2;
			}
			break;
		case 'D':
			srv.direct = true;
			opts.direct_files = ECHO_DIRECT_FILES;
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
	/* Sends carry MSG_NOSIGNAL; this also covers anything else. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		echo_err("cannot ignore SIGPIPE: %s", strerror(errno));
		return 1;
	}

	srv.lfd = listen_on(listen_spec, &errstr);
	if (srv.lfd < 0) {
		echo_err("cannot listen on %s: %s", listen_spec, errstr);
		return 1;
	}
	ret = ur_loop_new(&opts, &srv.loop);
	if (ret < 0) {
		echo_err("no event loop: %s", strerror(-ret));
		close(srv.lfd);
		return 1;
	}
	if (napi_us > 0 && (ret = ur_loop_napi(srv.loop, napi_us, false)) < 0)
		echo_err("NAPI busy polling refused (going on without): %s",
			 strerror(-ret));
	if (pidfile != NULL && (ret = write_pidfile(pidfile)) < 0) {
		echo_err("pidfile %s: %s", pidfile, strerror(-ret));
		pidfile = NULL;
		goto out;
	}
	ret = serve(&srv);
out:
	if (srv.lfd >= 0)
		close(srv.lfd);
	ur_loop_free(&srv.loop);
	if (pidfile != NULL)
		unlink(pidfile);
	printf("echo: %s: %llu connections, %llu bytes echoed, %llu errors\n",
	       srv.stop_signo != 0 ? strsignal(srv.stop_signo) : "stopped",
	       (unsigned long long)srv.accepted, (unsigned long long)srv.bytes,
	       (unsigned long long)srv.errors);
	return ret < 0 ? 1 : 0;
}
