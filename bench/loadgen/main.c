/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen: io_uring load generator for ringprot's benchmarks. */
#include "loadgen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/*
 * main.c parses options, splits the connections over the workers and
 * walks all of them through the same phases, with a barrier between
 * phases: connect, warm up, (gate), measure, (gate), close. Only the
 * measured phase is recorded. With -g the program prints "loadgen:
 * ready" and reads a line from stdin before measuring, and reads another
 * after its result line before closing: a script can then sample the
 * server (perf, /proc) around exactly the measured interval, with every
 * connection open and idle at both ends.
 *
 * With -D the connections are direct descriptors (worker.c): they live in
 * the workers' ring tables, not in the fd table, so one process can hold
 * more connections than RLIMIT_NOFILE as long as each worker's share fits
 * its table (at most RLIMIT_NOFILE slots per ring): use -t for more.
 *
 * With -r the requests follow a schedule (open loop, worker.c): the
 * report adds the rate asked and achieved, how many requests were due
 * while their connection still waited for a reply (the server fell
 * behind), how many were never sent by the deadline, and the client's own
 * lag from due to sent; past LG_LAG_LIMIT_NS at p99 the client, not the
 * server, is what limits the run, and the report says so.
 *
 * The last line is "result: key=value ..." for scripts.
 */

#define LG_MAX_THREADS	 64
#define LG_PORTS_PER_SRC 16384 /* of 32768-60999: leave room for others */
#define LG_FD_SLACK	 32
#define LG_LAG_LIMIT_NS	 (1000 * 1000) /* open loop: client lag, p99 */
#define LG_BEHIND_SHARE	 0.01 /* open loop: late or unsent requests */

static const struct lg_mode *const lg_modes[] = {
	&lg_mode_echo,	    &lg_mode_idle,	 &lg_mode_hold,
	&lg_mode_imap_idle, &lg_mode_imap_noop,	 &lg_mode_imap_fetch,
	&lg_mode_imap_select};

struct lg_main {
	struct lg_opts o;
	struct lg_worker *workers;
	pthread_barrier_t barrier;
	volatile bool abort; /* set by main between barriers */
	int src_addrs_opt;   /* -a, or -1 for automatic */
};

/* One per process: the workers read the phase flags from it. */
static struct lg_main lg = {
	.o = {.mode = &lg_mode_echo,
	      .conns = 1,
	      .threads = 1,
	      .size = 64,
	      .duration_s = 3,
	      .warmup_s = 0.5,
	      .window = 256},
	.src_addrs_opt = -1,
};

static void usage(FILE *out)
{
	(void)fprintf(
		out,
		"usage: loadgen [options] host:port\n"
		"  -m mode     echo (default), idle, hold, imap-idle, imap-noop,\n"
		"              imap-fetch or imap-select\n"
		"  -c conns    connections (default 1)\n"
		"  -s bytes    message size for echo, line size for hold\n"
		"              (default 64)\n"
		"  -d secs     measured duration, or hold time for idle (default 3)\n"
		"  -w secs     warm-up before measuring (default 0.5)\n"
		"  -t threads  worker threads, one ring each (default 1)\n"
		"  -a count    source addresses from -b on (default: one per %d\n"
		"              connections on 127/8, else the kernel's choice)\n"
		"  -b addr     first source address (default 127.0.0.1)\n"
		"  -W n        connects (and hold's lines) in flight per worker\n"
		"              (default 256)\n"
		"  -D          connections as direct descriptors, outside the\n"
		"              fd table (each worker's share: one ring table)\n"
		"  -g          gate: wait for a line on stdin before measuring\n"
		"              and before closing\n"
		"  -r rate     open loop: requests per second over all\n"
		"              connections, on a fixed schedule; latency counts\n"
		"              from when each request was due (default: closed)\n"
		"  -B          busy-poll the ring while running: no sleep and\n"
		"              no timer wake-ups, one whole CPU per thread\n"
		"  -T          TLS client (hold mode): handshake first\n"
		"  -U user     login name (imap-*)\n"
		"  -P pass     its password (imap-*)\n"
		"  -M mailbox  mailbox to select (imap-idle, -noop, -fetch,\n"
		"              -select; default INBOX)\n",
		LG_PORTS_PER_SRC);
	for (size_t i = 0; i < sizeof(lg_modes) / sizeof(lg_modes[0]); i++)
		(void)fprintf(out, "mode %s: %s\n", lg_modes[i]->name,
			      lg_modes[i]->help);
}

static int parse_double(const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || *out < 0)
		return -EINVAL;
	return 0;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || *out > max)
		return -EINVAL;
	return 0;
}

/* host:port or [v6]:port, numeric or resolved, into o->dst. */
static int resolve(struct lg_opts *o, const char *spec)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV};
	struct addrinfo *ai;
	char *copy = strdup(spec), *host, *colon;
	int ret = -EINVAL;

	if (copy == NULL)
		return -ENOMEM;
	colon = strrchr(copy, ':');
	if (colon == NULL)
		goto out;
	*colon = '\0';
	host = copy;
	if (host[0] == '[' && colon > host + 1 && colon[-1] == ']') {
		colon[-1] = '\0';
		host++;
	}
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
		goto out;
	memcpy(&o->dst, ai->ai_addr, ai->ai_addrlen);
	o->dst_len = ai->ai_addrlen;
	freeaddrinfo(ai);
	ret = 0;
out:
	free(copy);
	return ret;
}

static int parse_args(struct lg_main *m, int argc, char **argv)
{
	struct lg_opts *o = &m->o;
	unsigned long v;
	int opt;

	while ((opt = getopt(argc, argv, "m:c:s:d:w:t:a:b:W:gDr:BTU:P:M:h")) != -1) {
		int bad = 0;

		switch (opt) {
		case 'm':
			o->mode = NULL;
			for (size_t i = 0;
			     i < sizeof(lg_modes) / sizeof(lg_modes[0]); i++)
				if (strcmp(optarg, lg_modes[i]->name) == 0)
					o->mode = lg_modes[i];
			bad = o->mode == NULL;
			break;
		case 'c':
			bad = parse_uint(optarg, 1000000, &v) < 0 || v == 0;
			o->conns = (unsigned)v;
			break;
		case 's':
			bad = parse_uint(optarg, 64ul << 20, &v) < 0;
			o->size = v;
			break;
		case 'd':
			bad = parse_double(optarg, &o->duration_s) < 0;
			break;
		case 'w':
			bad = parse_double(optarg, &o->warmup_s) < 0;
			break;
		case 't':
			bad = parse_uint(optarg, LG_MAX_THREADS, &v) < 0 ||
			      v == 0;
			o->threads = (unsigned)v;
			break;
		case 'a':
			bad = parse_uint(optarg, 65535, &v) < 0;
			m->src_addrs_opt = (int)v;
			break;
		case 'b':
			bad = inet_pton(AF_INET, optarg, &o->src_base) != 1;
			break;
		case 'W':
			bad = parse_uint(optarg, 65536, &v) < 0 || v == 0;
			o->window = (unsigned)v;
			break;
		case 'g':
			o->gate = true;
			break;
		case 'D':
			o->direct = true;
			break;
		case 'r':
			bad = parse_double(optarg, &o->rate) < 0 ||
			      !(o->rate > 0) || o->rate > 1e9;
			break;
		case 'B':
			o->busy_poll = true;
			break;
		case 'T':
			o->tls = true;
			break;
		case 'U':
			o->user = optarg;
			break;
		case 'P':
			o->pass = optarg;
			break;
		case 'M':
			o->mailbox = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			return -EINVAL;
		}
		if (bad) {
			(void)fprintf(stderr,
				      "loadgen: bad value for -%c: %s\n", opt,
				      optarg);
			return -EINVAL;
		}
	}
	if (optind + 1 != argc)
		return -EINVAL;
	if (o->tls && o->mode != &lg_mode_hold) {
		(void)fprintf(stderr, "loadgen: -T: only hold mode speaks TLS\n");
		return -EINVAL;
	}
	if (o->rate > 0 && o->mode->request == NULL) {
		(void)fprintf(stderr, "loadgen: -r: mode %s makes no requests\n",
			      o->mode->name);
		return -EINVAL;
	}
	o->target = argv[optind];
	if (resolve(o, o->target) < 0) {
		(void)fprintf(stderr, "loadgen: cannot resolve %s\n",
			      o->target);
		return -EINVAL;
	}
	return 0;
}

/*
 * Several source addresses only make sense towards loopback, where every
 * 127/8 address is local: each gives another 28,232 ephemeral ports.
 */
static void choose_sources(struct lg_main *m)
{
	struct lg_opts *o = &m->o;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&o->dst;
	bool loop4 = o->dst.ss_family == AF_INET &&
		     (ntohl(sin->sin_addr.s_addr) >> 24) == 127;

	if (m->src_addrs_opt >= 0)
		o->src_addrs = (unsigned)m->src_addrs_opt;
	else if (loop4 && o->conns > LG_PORTS_PER_SRC)
		o->src_addrs =
			(o->conns + LG_PORTS_PER_SRC - 1) / LG_PORTS_PER_SRC;
	else
		o->src_addrs = 0;
}

/*
 * Raise the fd limit to its hard cap; fail early if conns cannot fit:
 * in the fd table, or with -D in each worker's ring table (which the
 * kernel caps at RLIMIT_NOFILE slots; a worker has one fd at a time).
 */
static int check_fds(const struct lg_opts *o)
{
	struct rlimit rl;
	unsigned per_worker = (o->conns + o->threads - 1) / o->threads;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (o->direct) {
		if ((rlim_t)per_worker <= rl.rlim_cur &&
		    (rlim_t)o->threads + LG_FD_SLACK <= rl.rlim_cur)
			return 0;
		(void)fprintf(stderr,
			      "loadgen: %u connections per worker do not fit a "
			      "ring's table of at most %llu; use more threads "
			      "(-t)\n",
			      per_worker, (unsigned long long)rl.rlim_cur);
		return -EMFILE;
	}
	if ((rlim_t)o->conns + LG_FD_SLACK > rl.rlim_cur) {
		(void)fprintf(
			stderr,
			"loadgen: %u connections need more fds than the limit "
			"%llu allows; run several loadgen processes\n",
			o->conns, (unsigned long long)rl.rlim_cur);
		return -EMFILE;
	}
	return 0;
}

static void wait_barrier(struct lg_main *m)
{
	(void)pthread_barrier_wait(&m->barrier);
}

static void worker_error(struct lg_worker *w, const char *what, int err)
{
	w->failed = true;
	(void)fprintf(stderr, "loadgen: worker %u: %s: %s\n", w->id, what,
		      strerror(-err));
}

/* The phases, in step with main() through the barrier. */
static void *worker_main(void *arg)
{
	struct lg_worker *w = arg;
	struct lg_main *m = &lg;
	int ret;

	ret = lg_worker_connect(w);
	if (ret < 0)
		worker_error(w, w->first_err_what ? w->first_err_what : "ring",
			     ret);
	wait_barrier(m); /* connected */
	if (!m->abort && m->o.warmup_s > 0 && m->o.mode->request != NULL) {
		ret = lg_worker_run(w, m->o.warmup_s, false);
		if (ret < 0)
			worker_error(w, "warm-up", ret);
	}
	wait_barrier(m); /* warm; main gates */
	wait_barrier(m); /* go */
	if (!m->abort) {
		if (m->o.mode->request != NULL)
			ret = lg_worker_run(w, m->o.duration_s, true);
		else
			ret = lg_worker_hold(w, m->o.duration_s);
		if (ret < 0)
			worker_error(w, "run", ret);
	}
	wait_barrier(m); /* measured; main reports and gates */
	wait_barrier(m); /* close */
	return NULL;
}

static void gate(const struct lg_main *m, const char *what)
{
	char line[64];

	if (!m->o.gate)
		return;
	printf("loadgen: %s\n", what);
	(void)fflush(stdout);
	/* A line or EOF: either means go on. */
	(void)fgets(line, sizeof(line), stdin);
}

static double cpu_secs(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
	       ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) /
		       1e6;
}

/*
 * Open loop: what was asked against what happened, and who fell behind.
 * Appends " key=value..." for the result line to kv.
 */
static void report_open(struct lg_main *m, double rps, char *kv, size_t kvlen)
{
	const struct lg_opts *o = &m->o;
	static struct lg_hist lag; /* 15 KiB: off the stack */
	uint64_t sched = 0, started = 0, backlogged = 0, unsent;
	double lag_us[3], late_share;
	bool client, server;

	lg_hist_reset(&lag);
	for (unsigned i = 0; i < o->threads; i++) {
		lg_hist_merge(&lag, &m->workers[i].lag);
		sched += m->workers[i].sched;
		started += m->workers[i].started;
		backlogged += m->workers[i].backlogged;
	}
	unsent = sched > started ? sched - started : 0;
	lag_us[0] = (double)lg_hist_quantile(&lag, 0.50) / 1e3;
	lag_us[1] = (double)lg_hist_quantile(&lag, 0.99) / 1e3;
	lag_us[2] = (double)lag.max_ns / 1e3;
	late_share = sched > 0 ? (double)(backlogged + unsent) / (double)sched
			       : 0;
	client = lg_hist_quantile(&lag, 0.99) > LG_LAG_LIMIT_NS;
	server = late_share > LG_BEHIND_SHARE;
	printf("loadgen: open loop: asked %.0f req/s, achieved %.0f req/s "
	       "(%.1f%%); %llu due, %llu sent, %llu never sent\n",
	       o->rate, rps, o->rate > 0 ? 100.0 * rps / o->rate : 0,
	       (unsigned long long)sched, (unsigned long long)started,
	       (unsigned long long)unsent);
	printf("loadgen: %llu sent late behind a reply still awaited on their "
	       "connection; the others' send lag p50 %.1f us, p99 %.1f us, "
	       "max %.1f us\n",
	       (unsigned long long)backlogged, lag_us[0], lag_us[1], lag_us[2]);
	if (client)
		printf("loadgen: the client could not keep up: send lag p99 "
		       "over %.0f us; latencies hold its delay too\n",
		       LG_LAG_LIMIT_NS / 1e3);
	if (server)
		printf("loadgen: the server fell behind: %.1f%% of the "
		       "requests were sent late or never\n",
		       100.0 * late_share);
	if (!client && !server)
		printf("loadgen: kept up with the schedule\n");
	(void)snprintf(kv, kvlen,
		       " rate=%.1f due=%llu backlogged=%llu unsent=%llu "
		       "lag_p50_us=%.2f lag_p99_us=%.2f lag_max_us=%.2f "
		       "behind=%s",
		       o->rate, (unsigned long long)sched,
		       (unsigned long long)backlogged,
		       (unsigned long long)unsent, lag_us[0], lag_us[1],
		       lag_us[2],
		       client && server ? "both"
		       : client		? "client"
		       : server		? "server"
					: "none");
}

static void report(struct lg_main *m, double secs, double cpu)
{
	const struct lg_opts *o = &m->o;
	static struct lg_hist h; /* 15 KiB: off the stack */
	uint64_t requests = 0, enobufs = 0, errors = 0, data_bytes = 0;
	unsigned dead = 0, ready = 0;
	double rps, us[5];
	char open_kv[256] = "";

	lg_hist_reset(&h);
	for (unsigned i = 0; i < o->threads; i++) {
		lg_hist_merge(&h, &m->workers[i].hist);
		requests += m->workers[i].requests;
		dead += m->workers[i].dead;
		ready += m->workers[i].ready;
		enobufs += m->workers[i].enobufs;
		errors += m->workers[i].errors;
		data_bytes += m->workers[i].data_bytes;
	}
	rps = secs > 0 ? (double)requests / secs : 0;
	us[0] = (double)lg_hist_quantile(&h, 0.50) / 1e3;
	us[1] = (double)lg_hist_quantile(&h, 0.99) / 1e3;
	us[2] = (double)lg_hist_quantile(&h, 0.999) / 1e3;
	us[3] = (double)h.max_ns / 1e3;
	us[4] = h.count > 0 ? (double)h.sum_ns / (double)h.count / 1e3 : 0;
	if (o->mode->request != NULL) {
		printf("loadgen: %s %s, %u connections, %zu B, %.2f s: "
		       "%llu requests, %.0f req/s\n",
		       o->mode->name, o->target, o->conns, o->size, secs,
		       (unsigned long long)requests, rps);
		printf("loadgen: latency%s p50 %.1f us, p99 %.1f us, "
		       "p99.9 %.1f us, max %.1f us, mean %.1f us\n",
		       o->rate > 0 ? " from due time" : "", us[0], us[1],
		       us[2], us[3], us[4]);
		if (o->rate > 0)
			report_open(m, rps, open_kv, sizeof(open_kv));
	} else {
		printf("loadgen: %s %s: held %u connections for %.2f s\n",
		       o->mode->name, o->target, ready, secs);
	}
	for (unsigned i = 0; i < o->threads; i++) {
		const struct lg_worker *w = &m->workers[i];

		if (w->dead > 0)
			printf("loadgen: worker %u: %u connections failed, the "
			       "first in %s: %s\n",
			       i, w->dead, w->first_err_what,
			       strerror(-w->first_err));
	}
	if (errors > 0)
		printf("loadgen: %llu requests failed at the server (NO, BAD "
		       "or not what was asked)\n",
		       (unsigned long long)errors);
	if (enobufs > 0)
		printf("loadgen: %llu recvs ran out of buffers and were re-armed\n",
		       (unsigned long long)enobufs);
	printf("result: mode=%s conns=%u size=%zu threads=%u secs=%.4f "
	       "requests=%llu rps=%.1f p50_us=%.2f p99_us=%.2f p999_us=%.2f "
	       "max_us=%.2f mean_us=%.2f failed=%u cpu_pct=%.1f%s "
	       "errors=%llu data_bytes=%llu\n",
	       o->mode->name, o->conns, o->size, o->threads, secs,
	       (unsigned long long)requests, rps, us[0], us[1], us[2], us[3],
	       us[4], dead, secs > 0 ? 100.0 * cpu / secs : 0, open_kv,
	       (unsigned long long)errors, (unsigned long long)data_bytes);
	(void)fflush(stdout);
}

/*
 * Opening failed somewhere: how far the connections got, for a script
 * to quote (a server that refused some is worth more than "failed").
 */
static void report_open_failed(const struct lg_main *m)
{
	unsigned ready = 0, dead = 0;

	for (unsigned i = 0; i < m->o.threads; i++) {
		const struct lg_worker *w = &m->workers[i];

		ready += w->ready;
		dead += w->dead;
		if (w->dead > 0)
			printf("loadgen: worker %u: %u connections failed, the "
			       "first in %s: %s\n",
			       i, w->dead,
			       w->first_err_what ? w->first_err_what : "?",
			       strerror(-w->first_err));
	}
	printf("loadgen: open failed: %u of %u connections ready, %u "
	       "failed\n",
	       ready, m->o.conns, dead);
	(void)fflush(stdout);
}

static int start_workers(struct lg_main *m)
{
	struct lg_opts *o = &m->o;
	unsigned first = 0;
	int ret;

	m->workers = calloc(o->threads, sizeof(*m->workers));
	if (m->workers == NULL || o->threads == 0)
		return -ENOMEM;
	for (unsigned i = 0; i < o->threads; i++) {
		unsigned n = o->conns / o->threads +
			     (i < o->conns % o->threads ? 1 : 0);

		ret = lg_worker_init(&m->workers[i], o, i, first, n);
		if (ret < 0) {
			(void)fprintf(stderr, "loadgen: worker %u: %s\n", i,
				      strerror(-ret));
			return ret;
		}
		first += n;
	}
	for (unsigned i = 0; i < o->threads; i++) {
		ret = pthread_create(&m->workers[i].thread, NULL, worker_main,
				     &m->workers[i]);
		if (ret != 0) {
			(void)fprintf(stderr, "loadgen: pthread_create: %s\n",
				      strerror(ret));
			exit(1); /* earlier threads wait at a barrier */
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct lg_main *m = &lg;
	uint64_t t0, t1, tc;
	double cpu0;
	int ret;

	m->o.src_base.s_addr = htonl(INADDR_LOOPBACK);
	if (parse_args(m, argc, argv) < 0) {
		usage(stderr);
		return 2;
	}
	choose_sources(m);
	if (check_fds(&m->o) < 0)
		return 1;
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		return 1;
	if (m->o.mode->init != NULL && m->o.mode->init(&m->o) < 0)
		return 1;
	if (pthread_barrier_init(&m->barrier, NULL, m->o.threads + 1) != 0)
		return 1;
	tc = lg_now_ns();
	if (start_workers(m) < 0)
		return 1;

	wait_barrier(m); /* connected */
	for (unsigned i = 0; i < m->o.threads; i++)
		if (m->workers[i].dead > 0 || m->workers[i].failed)
			m->abort = true;
	if (m->abort)
		report_open_failed(m);
	if (!m->abort) {
		printf("loadgen: connected %u connections to %s in %.2f s "
		       "(%u source addresses, %u threads%s)\n",
		       m->o.conns, m->o.target,
		       (double)(lg_now_ns() - tc) / 1e9,
		       m->o.src_addrs > 0 ? m->o.src_addrs : 1, m->o.threads,
		       m->o.direct ? ", direct descriptors" : "");
		(void)fflush(stdout);
	}
	wait_barrier(m); /* warm */
	if (!m->abort)
		gate(m, "ready");
	cpu0 = cpu_secs();
	t0 = lg_now_ns();
	wait_barrier(m); /* go */
	wait_barrier(m); /* measured */
	t1 = lg_now_ns();
	if (!m->abort) {
		report(m, (double)(t1 - t0) / 1e9, cpu_secs() - cpu0);
		gate(m, "done");
	}
	wait_barrier(m); /* close */
	ret = m->abort ? 1 : 0;
	for (unsigned i = 0; i < m->o.threads; i++) {
		pthread_join(m->workers[i].thread, NULL);
		if (m->workers[i].dead > 0 || m->workers[i].failed)
			ret = 1;
		lg_worker_fini(&m->workers[i]);
	}
	free(m->workers);
	return ret;
}
