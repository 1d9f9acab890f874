/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/echo: the smallest complete server on the ringprot runtime.
 *
 * Everything but the handler is server/'s: listeners, worker threads,
 * one fiber per connection, limits, SIGTERM drain. The handler reads
 * what comes and writes it back; c->in flushes c->out before it waits
 * for more (prot_setflushonread), so a burst of input costs one send.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <ringprot/server.h>

#define ECHO_DEFAULT_LISTEN "127.0.0.1:7777"
/* -D: the direct descriptor table of each worker. */
#define ECHO_DIRECT_FILES 16384

static atomic_uint_fast64_t echoed;

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
		"                     [-w workers] [-n usecs] [-D] [-P]\n"
		"  -l addr:port  listen address (default " ECHO_DEFAULT_LISTEN
		"; port 0: ephemeral;\n"
		"                IPv6 as [addr]:port; unix:/path; systemd:name)\n"
		"  -p pidfile    write the process id to pidfile\n"
		"  -e engine     auto (default: io_uring, else epoll), epoll,\n"
		"                or an io_uring mode: defer, coop, plain,\n"
		"                sqpoll, sqpoll@CPU (poller pinned to CPU)\n"
		"  -w workers    worker threads (default 1; 0: one per CPU)\n"
		"  -n usecs      NAPI busy polling for up to usecs\n"
		"  -D            connections as direct descriptors (io_uring:\n"
		"                outside the process fd table; epoll: fds the\n"
		"                loop holds, registered once)\n"
		"  -P            park idle connections: no fiber, no buffer\n"
		"                while a client sends nothing\n");
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

/* -P: park a connection whenever it has no input buffered. */
static bool park_idle;

static int echo_resume(struct srv_conn *c, unsigned wake);

/*
 * The service: every byte back, until the client is done. With -P, a
 * connection that has nothing more to read parks (no fiber, no buffer)
 * and comes back in echo_resume when bytes arrive.
 */
static int echo_serve(struct srv_conn *c)
{
	char buf[4096];
	int n;

	while ((n = prot_read(c->in, buf, sizeof(buf))) > 0) {
		if (prot_write(c->out, buf, (unsigned)n) == EOF)
			return prot_errno(c->out);
		atomic_fetch_add_explicit(&echoed, (uint64_t)n,
					  memory_order_relaxed);
		if (park_idle && !prot_input_pending(c->in))
			return srv_park(c, echo_resume);
	}
	if (prot_IS_ERROR(c->in))
		return prot_errno(c->in);
	return 0;
}

static int echo_resume(struct srv_conn *c, unsigned wake)
{
	if (wake & SRV_WAKE_SHUTDOWN)
		return 0;
	return echo_serve(c);
}

static int echo_handler(struct srv_conn *c)
{
	if (park_idle)
		return srv_park(c, echo_resume);
	return echo_serve(c);
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

static void print_listening(struct srv *s, struct srv_service *svc)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char ip[SRV_IP_MAX];

	for (unsigned i = 0; srv_listen_addr(svc, i, &ss, &len) == 0; i++) {
		if (ss.ss_family == AF_INET6) {
			const struct sockaddr_in6 *a = (void *)&ss;

			(void)inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
			printf("listening on [%s]:%u (%s)\n", ip,
			       ntohs(a->sin6_port), srv_engine(s));
		} else if (ss.ss_family == AF_INET) {
			const struct sockaddr_in *a = (void *)&ss;

			(void)inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
			printf("listening on %s:%u (%s)\n", ip,
			       ntohs(a->sin_port), srv_engine(s));
		} else {
			printf("listening on %s (%s)\n",
			       ((const struct sockaddr_un *)&ss)->sun_path,
			       srv_engine(s));
		}
	}
	(void)fflush(stdout);
}

int main(int argc, char **argv)
{
	struct srv_opts so = {.workers = 1};
	struct srv_service_opts svo = {.name = "echo",
				       .handler = echo_handler};
	struct srv_listen_opts lo = {.addr = ECHO_DEFAULT_LISTEN};
	struct srv_service *svc;
	struct srv_stats st;
	struct srv *s = NULL;
	const char *pidfile = NULL, *errstr = NULL;
	unsigned napi_us = 0;
	int opt, ret;

	while ((opt = getopt(argc, argv, "l:p:e:w:n:DPh")) != -1) {
		switch (opt) {
		case 'l':
			lo.addr = optarg;
			break;
		case 'p':
			pidfile = optarg;
			break;
		case 'e':
			if (parse_engine(optarg, &so.loop) < 0) {
				echo_err("unknown engine: %s", optarg);
				usage(stderr);
				return 2;
			}
			break;
		case 'w':
			if (parse_u32(optarg, &so.workers) < 0) {
				echo_err("-w wants a number: %s", optarg);
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
			so.direct = true;
			so.direct_files = ECHO_DIRECT_FILES;
			break;
		case 'P':
			park_idle = true;
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
	so.napi_us = napi_us;
	ret = srv_new(&so, &s);
	if (ret == 0)
		ret = srv_service_add(s, &svo, &svc);
	if (ret < 0) {
		echo_err("cannot set up: %s", strerror(-ret));
		srv_free(&s);
		return 1;
	}
	ret = srv_listen(svc, &lo, &errstr);
	if (ret < 0) {
		echo_err("cannot listen on %s",
			 errstr != NULL ? errstr : strerror(-ret));
		srv_free(&s);
		return 1;
	}
	ret = srv_start(s);
	if (ret < 0) {
		echo_err("cannot start: %s", strerror(-ret));
		srv_free(&s);
		return 1;
	}
	if (pidfile != NULL && (ret = write_pidfile(pidfile)) < 0) {
		echo_err("pidfile %s: %s", pidfile, strerror(-ret));
		pidfile = NULL;
		srv_stop(s);
	} else {
		print_listening(s, svc);
	}
	if (srv_run(s, NULL) < 0)
		ret = -EIO;
	srv_stats(s, &st);
	srv_free(&s);
	if (pidfile != NULL)
		unlink(pidfile);
	printf("echo: stopped: %llu connections, %llu bytes echoed, "
	       "%llu errors\n",
	       (unsigned long long)st.conns_total,
	       (unsigned long long)atomic_load(&echoed),
	       (unsigned long long)st.accept_errors);
	return ret < 0 ? 1 : 0;
}
