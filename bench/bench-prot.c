/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/bench-prot: our protstream against Cyrus 3.6's, same calls, one run. */
#include <ringprot/prot.h>
#include <ringprot/uring.h>

#include "t-cyrus.h" /* the Cyrus side, loaded from libcyrus.so.0 */

#include <errno.h>
#include <liburing.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * Usage: bench-prot [scale [case...]]   (scale 1 by default; 0.1 for a
 * quick run; cases by name, all by default). Files are made in $TMPDIR
 * (default /tmp); the table names the kernel. For instruction counts,
 * run one case under callgrind with --toggle-collect=<case>_ours (or _cy,
 * e.g. fgets_ours): every run of each side is counted. BENCH_PROT_ONLY=
 * ours (or cy) runs one side only (for strace -c); BENCH_PROT_STATS=1
 * prints the rr server's CPU time and our ring's enters per round trip;
 * BENCH_PROT_RR_CPUS=c,s places the rr client and server and the pipe
 * reader and feeder (rr_place_init(); "any" lets the scheduler decide);
 * BENCH_PROT_RUNS=n sets the runs per side (5 by default, odd, at most 15);
 * BENCH_PROT_RR_CONNS=n sets rr-conns' connections (64 by default).
 *
 * Each case runs the same code on both implementations: a macro expands
 * one body twice, once with prot_* and once with Cyrus's functions (from
 * Debian's libcyrus.so.0, called through dlsym pointers, as a Cyrus
 * daemon calls them through the PLT). Runs alternate ours/Cyrus; the
 * table shows the median time per operation and the ratio ours/Cyrus
 * (below 1: we are faster). Both sides must compute the same checksum,
 * or the row says so. Nothing here asserts on speed.
 */

static _Noreturn void die(const char *what)
{
	fprintf(stderr, "bench-prot: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* Inputs.                                                             */

static size_t getc_bytes, line_count, printf_count, astring_count, rr_count;
static size_t write_count;
static char *map_data;	  /* getc_bytes of text in memory, for prot_readmap */
static int data_fd = -1;  /* getc_bytes of text, in a file in $TMPDIR */
static int mem_fd = -1;	  /* the same in a memfd */
static int lines_fd = -1; /* line_count lines of 80 bytes, in $TMPDIR */
static int null_fd = -1;

/*
 * An unlinked file in $TMPDIR (default /tmp), or a memfd. They differ
 * for io_uring: shmem reads cannot be tried without blocking, so the
 * kernel hands each one to an io-wq thread (which the 256 KiB read-ahead
 * of a protstream over a regular file amortises).
 */
static int make_file(size_t len, bool lines, bool mem)
{
	const char *dir = getenv("TMPDIR");
	int fd;
	char block[8000];

	if (dir == NULL || *dir == '\0')
		dir = "/tmp";
	fd = mem ? memfd_create("bench-prot", MFD_CLOEXEC)
		 : open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		die(mem ? "memfd_create" : "O_TMPFILE in $TMPDIR");
	for (size_t i = 0; i < sizeof(block); i++)
		block[i] = (char)('a' + i % 26);
	if (lines) {
		for (size_t i = 79; i < sizeof(block); i += 80)
			block[i] = '\n';
	}
	for (size_t done = 0; done < len;) {
		size_t n =
			len - done < sizeof(block) ? len - done : sizeof(block);
		ssize_t r = write(fd, block, n);

		if (r <= 0)
			die("write");
		done += (size_t)r;
	}
	return fd;
}

static void rewind_fd(int fd)
{
	if (lseek(fd, 0, SEEK_SET) != 0)
		die("lseek");
}

static int rr_cpu_c = -1, rr_cpu_s = -1; /* see rr_place_init() */
static void pin(pthread_t th, int cpu);

/*
 * A child writes getc_bytes of text into a pipe; returns the read end.
 * The child runs where the rr server would, the reader where the client
 * would (rr_place_init()).
 */
static int pipe_feeder(pid_t *pid_out)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe2");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		char block[65536];

		if (rr_cpu_s >= 0)
			pin(pthread_self(), rr_cpu_s);
		close(p[0]);
		for (size_t i = 0; i < sizeof(block); i++)
			block[i] = (char)('a' + i % 26);
		for (size_t done = 0; done < getc_bytes;) {
			size_t n = getc_bytes - done < sizeof(block)
					   ? getc_bytes - done
					   : sizeof(block);
			ssize_t r = write(p[1], block, n);

			if (r <= 0)
				_exit(1);
			done += (size_t)r;
		}
		_exit(0);
	}
	close(p[1]);
	*pid_out = pid;
	return p[0];
}

/* ------------------------------------------------------------------ */
/* The cases, each expanded for both implementations.                  */

struct rr_arg {
	int fd;
	bool onread; /* flush-on-read instead of a flush per response */
};

/*
 * Each function runs one case once and returns a checksum of what it
 * saw, for the cross-check. SFX names the copy, T is the stream type.
 */
#define CASES(SFX, T, NEW, FREE, GETC, FGETS, WRITE, PRINTF, ASTRING, FLUSH,   \
	      FLUSHONREAD, READMAP, GETC_FN, WRITE_FN)                         \
	static uint64_t getc_fd_##SFX(int fd)                                  \
	{                                                                      \
		T *s;                                                          \
		uint64_t sum = 0;                                              \
		int c;                                                         \
                                                                               \
		rewind_fd(fd);                                                 \
		s = NEW(fd, 0);                                                \
		while ((c = GETC(s)) != EOF)                                   \
			sum += (unsigned)c;                                    \
		FREE(s);                                                       \
		return sum;                                                    \
	}                                                                      \
                                                                               \
	static uint64_t getc_file_##SFX(void)                                  \
	{                                                                      \
		return getc_fd_##SFX(data_fd);                                 \
	}                                                                      \
                                                                               \
	static uint64_t getc_memfd_##SFX(void)                                 \
	{                                                                      \
		return getc_fd_##SFX(mem_fd);                                  \
	}                                                                      \
                                                                               \
	/*                                                                     \
	 * The exported getc through a pointer: what a Cyrus binary relinked   \
	 * against ours calls (prot.h's inline fast path is not used).         \
	 */                                                                    \
	static uint64_t getc_map_##SFX(void)                                   \
	{                                                                      \
		T *s = READMAP(map_data, (uint32_t)getc_bytes);                \
		int (*getc_fn)(T *) = GETC_FN;                                 \
		uint64_t sum = 0;                                              \
		int c;                                                         \
                                                                               \
		while ((c = getc_fn(s)) != EOF)                                \
			sum += (unsigned)c;                                    \
		FREE(s);                                                       \
		return sum;                                                    \
	}                                                                      \
                                                                               \
	static uint64_t getc_pipe_##SFX(void)                                  \
	{                                                                      \
		cpu_set_t saved;                                               \
		pid_t pid;                                                     \
		int fd;                                                        \
		T *s;                                                          \
		uint64_t sum = 0;                                              \
		int c;                                                         \
                                                                               \
		place_self(&saved);                                            \
		fd = pipe_feeder(&pid);                                        \
		s = NEW(fd, 0);                                                \
		while ((c = GETC(s)) != EOF)                                   \
			sum += (unsigned)c;                                    \
		FREE(s);                                                       \
		close(fd);                                                     \
		waitpid(pid, NULL, 0);                                         \
		place_restore(&saved);                                         \
		return sum;                                                    \
	}                                                                      \
                                                                               \
	static uint64_t fgets_##SFX(void)                                      \
	{                                                                      \
		char line[1024];                                               \
		uint64_t sum = 0;                                              \
		T *s;                                                          \
                                                                               \
		rewind_fd(lines_fd);                                           \
		s = NEW(lines_fd, 0);                                          \
		while (FGETS(line, sizeof(line), s) != NULL)                   \
			sum += (unsigned char)line[78];                        \
		FREE(s);                                                       \
		return sum;                                                    \
	}                                                                      \
                                                                               \
	static uint64_t printf_##SFX(void)                                     \
	{                                                                      \
		T *s = NEW(null_fd, 1);                                        \
		uint64_t bad = 0;                                              \
                                                                               \
		for (size_t i = 0; i < printf_count; i++)                      \
			bad += PRINTF(s, "* %u EXISTS\r\n", (unsigned)i) != 0; \
		bad += FLUSH(s) != 0;                                          \
		FREE(s);                                                       \
		return bad;                                                    \
	}                                                                      \
                                                                               \
	/*                                                                     \
	 * Small writes to a device that never blocks, a flush per 4 KiB;      \
	 * the write through a pointer, as getc_map_##SFX calls getc.          \
	 */                                                                    \
	static uint64_t write_null_##SFX(void)                                 \
	{                                                                      \
		static const char rec[16] = "* 1 FETCH (XY)\r\n";              \
		T *s = NEW(null_fd, 1);                                        \
		int (*write_fn)(T *, const char *, unsigned) = WRITE_FN;       \
		uint64_t bad = 0;                                              \
                                                                               \
		for (size_t i = 0; i < write_count; i++)                       \
			bad += write_fn(s, rec, sizeof(rec)) != 0;             \
		bad += FLUSH(s) != 0;                                          \
		FREE(s);                                                       \
		return bad;                                                    \
	}                                                                      \
                                                                               \
	static uint64_t astring_##SFX(void)                                    \
	{                                                                      \
		T *s = NEW(null_fd, 1);                                        \
		uint64_t bad = 0;                                              \
                                                                               \
		for (size_t i = 0; i < astring_count; i++) {                   \
			const char *a = astrings[i % N_ASTRINGS];              \
                                                                               \
			bad += ASTRING(s, a) < 0;                              \
			bad += WRITE(s, " ", 1) != 0;                          \
		}                                                              \
		bad += FLUSH(s) != 0;                                          \
		FREE(s);                                                       \
		return bad;                                                    \
	}                                                                      \
                                                                               \
	/* One connection's server: a NOOP reply to each request line. */      \
	static void rr_serve_##SFX(int fd, bool onread)                        \
	{                                                                      \
		T *in = NEW(fd, 0), *out = NEW(fd, 1);                         \
		char line[1024];                                               \
                                                                               \
		if (onread)                                                    \
			FLUSHONREAD(in, out);                                  \
		while (FGETS(line, sizeof(line), in) != NULL) {                \
			char *sp = strchr(line, ' ');                          \
                                                                               \
			if (sp != NULL)                                        \
				*sp = '\0';                                    \
			PRINTF(out, "%s OK NOOP completed\r\n", line);         \
			if (!onread)                                           \
				FLUSH(out);                                    \
		}                                                              \
		FREE(in);                                                      \
		FREE(out);                                                     \
	}                                                                      \
                                                                               \
	static void *rr_server_##SFX(void *arg)                                \
	{                                                                      \
		const struct rr_arg *ra = arg;                                 \
		struct ur_loop *loop;                                          \
                                                                               \
		rr_serve_##SFX(ra->fd, ra->onread);                            \
		loop = ur_loop_current();                                      \
		rr_stats(#SFX, loop);                                          \
		ur_loop_free(&loop);                                           \
		return NULL;                                                   \
	}                                                                      \
                                                                               \
	static uint64_t rr_##SFX(void)                                         \
	{                                                                      \
		return rr_run(rr_server_##SFX, false);                         \
	}                                                                      \
                                                                               \
	static uint64_t rr_onread_##SFX(void)                                  \
	{                                                                      \
		return rr_run(rr_server_##SFX, true);                          \
	}

/* Atoms, quoted strings, literals and NIL, as a LIST response has. */
static const char *const astrings[] = {
	"INBOX",       "Sent Items",  "Archive.2024",
	NULL,	       "caf\xc3\xa9", "a\"b",
	"Drafts",      "x",	      "",
	"Junk E-mail", "NIL",	      "Trash",
};
#define N_ASTRINGS (sizeof(astrings) / sizeof(astrings[0]))

/*
 * With BENCH_PROT_STATS set: the server thread's CPU time per round trip
 * (user + system, less disturbed by other load than the wall clock), and
 * for ours the ring's enters per round trip.
 */
static void rr_stats(const char *side, struct ur_loop *loop)
{
	struct ur_loop_stats st;
	struct rusage ru;
	double cpu;

	if (getenv("BENCH_PROT_STATS") == NULL ||
	    getrusage(RUSAGE_THREAD, &ru) < 0)
		return;
	cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
	      (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
	fprintf(stderr,
		"rr %-4s: server cpu %.0f ns/trip, %.2f+%.2f switches/trip",
		side, cpu / (double)rr_count,
		(double)ru.ru_nvcsw / (double)rr_count,
		(double)ru.ru_nivcsw / (double)rr_count);
	if (loop != NULL) {
		ur_loop_stats(loop, &st);
		fprintf(stderr, ", %.3f enters, %.3f submitting, %.3f cqes",
			(double)st.enters / (double)rr_count,
			(double)st.submits / (double)rr_count,
			(double)st.cqes / (double)rr_count);
	}
	fprintf(stderr, "\n");
}

/*
 * Where the cases with a peer run: the rr client (this thread) and
 * server, the getc-pipe reader (this thread) and feeder. By default both
 * are pinned to the CPU this program started on: a round trip then
 * measures the two implementations' syscalls and code, plus two context
 * switches, instead of the wakeup of an idle vCPU (uring notes 8: about
 * 45 us with millisecond tails on a 2-vCPU VM, which made the ratio
 * noise). BENCH_PROT_RR_CPUS=c,s pins this thread to CPU c and the peer
 * to s (c != s: the cross-CPU case); "any" leaves placement to the
 * scheduler. Both implementations always run under the same placement.
 */

static void rr_place_init(void)
{
	const char *env = getenv("BENCH_PROT_RR_CPUS");
	int cpu = sched_getcpu();

	if (env != NULL && strcmp(env, "any") == 0)
		return;
	if (env != NULL && sscanf(env, "%d,%d", &rr_cpu_c, &rr_cpu_s) == 2)
		return;
	rr_cpu_c = rr_cpu_s = cpu < 0 ? 0 : cpu;
}

static const char *rr_place_name(char *buf, size_t len)
{
	if (rr_cpu_c < 0)
		snprintf(buf, len, "any CPU");
	else if (rr_cpu_c == rr_cpu_s)
		snprintf(buf, len, "both on CPU %d", rr_cpu_c);
	else
		snprintf(buf, len, "client CPU %d, server CPU %d", rr_cpu_c,
			 rr_cpu_s);
	return buf;
}

static void pin(pthread_t th, int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (pthread_setaffinity_np(th, sizeof(set), &set) != 0)
		die("pthread_setaffinity_np");
}

/* Pin this thread; *saved_out gets its affinity for place_restore(). */
static void place_self(cpu_set_t *saved_out)
{
	if (pthread_getaffinity_np(pthread_self(), sizeof(*saved_out),
				   saved_out) != 0)
		die("pthread_getaffinity_np");
	if (rr_cpu_c >= 0)
		pin(pthread_self(), rr_cpu_c);
}

static void place_restore(const cpu_set_t *saved)
{
	if (pthread_setaffinity_np(pthread_self(), sizeof(*saved), saved) != 0)
		die("pthread_setaffinity_np");
}

/*
 * Request/response over a socketpair: the server thread runs the
 * implementation under test; this thread is the client, with plain
 * syscalls. The server flushes each response itself, or with onread
 * leaves it to flush-on-read (prot_setflushonread(in, out), as Cyrus's
 * imapd and lmtpd do). Returns the bytes the client received.
 */
static uint64_t rr_run(void *(*server)(void *), bool onread)
{
	int sv[2];
	pthread_t th;
	uint64_t got = 0;
	char req[64], resp[256];
	struct rr_arg ra;
	cpu_set_t saved;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair");
	ra.fd = sv[1];
	ra.onread = onread;
	if (pthread_create(&th, NULL, server, &ra) != 0)
		die("pthread_create");
	if (rr_cpu_s >= 0)
		pin(th, rr_cpu_s);
	place_self(&saved);
	for (size_t i = 0; i < rr_count; i++) {
		int n = snprintf(req, sizeof(req), "a%zu NOOP\r\n", i);
		size_t have = 0;

		if (write(sv[0], req, (size_t)n) != n)
			die("write");
		while (have < 2 || memcmp(resp + have - 2, "\r\n", 2) != 0) {
			ssize_t r =
				read(sv[0], resp + have, sizeof(resp) - have);

			if (r <= 0)
				die("read");
			have += (size_t)r;
		}
		got += have;
	}
	shutdown(sv[0], SHUT_WR);
	pthread_join(th, NULL);
	place_restore(&saved);
	close(sv[0]);
	close(sv[1]);
	return got;
}

/*
 * Ours through pointers the compiler cannot see through, as cy_getc and
 * cy_write are dlsym results: no inlining, no devirtualised call.
 */
static int (*volatile ours_getc_fn)(struct protstream *) = (prot_getc);
static int (*volatile ours_write_fn)(struct protstream *, const char *,
				     unsigned) = prot_write;

CASES(ours, struct protstream, prot_new, prot_free, prot_getc, prot_fgets,
      prot_write, prot_printf, prot_printastring, prot_flush,
      prot_setflushonread, prot_readmap, ours_getc_fn, ours_write_fn)
CASES(cy, struct cy_protstream, cy_new, cy_free, cy_getc, cy_fgets, cy_write,
      cy_printf, cy_printastring, cy_flush, cy_setflushonread, cy_readmap,
      cy_getc, cy_write)

/* ------------------------------------------------------------------ */
/* Many connections.                                                   */

/*
 * rr-conns: rr_conns socketpairs, one request outstanding on each, served
 * the way each implementation is meant to serve many clients: ours in
 * one thread, a fiber per connection on one ring; Cyrus a thread per
 * connection (its daemons fork a process per connection, which costs
 * more). The client is one epoll thread with plain syscalls; rr_count
 * round trips in all. Returns the bytes the client received.
 */
static size_t rr_conns = 64;

struct rr_conn {
	size_t have;
	char resp[256];
};

static void rr_send_req(int fd, size_t i)
{
	char req[64];
	int n = snprintf(req, sizeof(req), "a%zu NOOP\r\n", i);

	if (write(fd, req, (size_t)n) != n)
		die("write");
}

static uint64_t rr_many_client(const int *fds, size_t n)
{
	struct epoll_event evs[64];
	struct rr_conn *conns = calloc(n, sizeof(*conns));
	size_t sent = 0, done = 0;
	uint64_t got = 0;
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (conns == NULL || ep < 0)
		die("rr-conns client");
	for (size_t i = 0; i < n; i++) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i};

		if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0)
			die("epoll_ctl");
		if (sent < rr_count)
			rr_send_req(fds[i], sent++);
	}
	while (done < rr_count) {
		int k = epoll_wait(ep, evs, 64, -1);

		if (k < 0 && errno != EINTR)
			die("epoll_wait");
		for (int e = 0; e < k; e++) {
			size_t i = evs[e].data.u64;
			struct rr_conn *c = &conns[i];
			ssize_t r = read(fds[i], c->resp + c->have,
					 sizeof(c->resp) - c->have);

			if (r <= 0)
				die("read");
			c->have += (size_t)r;
			if (c->have < 2 ||
			    memcmp(c->resp + c->have - 2, "\r\n", 2) != 0)
				continue;
			got += c->have;
			c->have = 0;
			done++;
			if (sent < rr_count)
				rr_send_req(fds[i], sent++);
		}
	}
	close(ep);
	free(conns);
	return got;
}

struct rr_many {
	int *cfd, *sfd; /* client and server ends */
	size_t n;
};

static void rr_many_open(struct rr_many *m)
{
	m->n = rr_conns;
	m->cfd = calloc(m->n, sizeof(int));
	m->sfd = calloc(m->n, sizeof(int));
	if (m->cfd == NULL || m->sfd == NULL)
		die("calloc");
	for (size_t i = 0; i < m->n; i++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			die("socketpair");
		m->cfd[i] = sv[0];
		m->sfd[i] = sv[1];
	}
}

/* Run the client, then end every connection. */
static uint64_t rr_many_drive(struct rr_many *m)
{
	cpu_set_t saved;
	uint64_t got;

	place_self(&saved);
	got = rr_many_client(m->cfd, m->n);
	for (size_t i = 0; i < m->n; i++)
		shutdown(m->cfd[i], SHUT_WR);
	place_restore(&saved);
	return got;
}

static void rr_many_close(struct rr_many *m)
{
	for (size_t i = 0; i < m->n; i++) {
		close(m->cfd[i]);
		close(m->sfd[i]);
	}
	free(m->cfd);
	free(m->sfd);
}

static int rr_fiber_ours(void *arg)
{
	rr_serve_ours((int)(intptr_t)arg, false);
	return 0;
}

static void *rr_many_server_ours(void *arg)
{
	const struct rr_many *m = arg;
	struct ur_fiber **f = calloc(m->n, sizeof(*f));
	struct ur_loop *loop;

	if (f == NULL || ur_loop_get(&loop) < 0)
		die("rr-conns server");
	for (size_t i = 0; i < m->n; i++)
		if (ur_fiber_spawn(loop, rr_fiber_ours,
				   (void *)(intptr_t)m->sfd[i], NULL,
				   &f[i]) < 0)
			die("ur_fiber_spawn");
	for (size_t i = 0; i < m->n; i++)
		if (ur_fiber_join(f[i], NULL) < 0)
			die("ur_fiber_join");
	free(f);
	rr_stats("ours", loop);
	ur_loop_free(&loop);
	return NULL;
}

static uint64_t rr_conns_ours(void)
{
	struct rr_many m;
	pthread_t th;
	uint64_t got;

	rr_many_open(&m);
	if (pthread_create(&th, NULL, rr_many_server_ours, &m) != 0)
		die("pthread_create");
	if (rr_cpu_s >= 0)
		pin(th, rr_cpu_s);
	got = rr_many_drive(&m);
	pthread_join(th, NULL);
	rr_many_close(&m);
	return got;
}

static void *rr_thread_cy(void *arg)
{
	rr_serve_cy((int)(intptr_t)arg, false);
	return NULL;
}

static uint64_t rr_conns_cy(void)
{
	struct rr_many m;
	pthread_t *th;
	pthread_attr_t attr;
	uint64_t got;

	rr_many_open(&m);
	th = calloc(m.n, sizeof(*th));
	if (th == NULL || pthread_attr_init(&attr) != 0 ||
	    pthread_attr_setstacksize(&attr, 256 * 1024) != 0)
		die("rr-conns threads");
	for (size_t i = 0; i < m.n; i++) {
		if (pthread_create(&th[i], &attr, rr_thread_cy,
				   (void *)(intptr_t)m.sfd[i]) != 0)
			die("pthread_create");
		if (rr_cpu_s >= 0)
			pin(th[i], rr_cpu_s);
	}
	pthread_attr_destroy(&attr);
	got = rr_many_drive(&m);
	for (size_t i = 0; i < m.n; i++)
		pthread_join(th[i], NULL);
	free(th);
	rr_many_close(&m);
	return got;
}

/* ------------------------------------------------------------------ */
/* The kernel's floor for one connection.                              */

/*
 * rr-floor: the rr-socketpair exchange with no protstream on either
 * side, to show what the kernel paths cost. The "ours" column is raw
 * liburing as a lean io_uring server would use it (one recv into a
 * provided buffer, then one send, each submitted and waited for with
 * SINGLE_ISSUER + DEFER_TASKRUN); the "Cyrus" column is read(2) and
 * write(2). Both parse and format alike. ours/floor near 1 means the
 * protstream adds nothing; a floor above 1 is io_uring's own cost for
 * one connection.
 */
#define FLOOR_BUFS    16
#define FLOOR_BUF_LEN 16384
#define FLOOR_BGID    7

struct floor_io {
	struct io_uring ring;
	struct io_uring_buf_ring *br;
	char *bufs;
	int fd;
};

/* One response to each "tag ..." line found in buf[0..len). */
static size_t floor_reply(const char *buf, size_t len, char *resp, size_t cap)
{
	const char *sp = memchr(buf, ' ', len);
	int n = snprintf(resp, cap, "%.*s OK NOOP completed\r\n",
			 (int)(sp != NULL ? sp - buf : (ptrdiff_t)len), buf);

	return n < 0 ? 0 : (size_t)n;
}

static struct io_uring_sqe *floor_sqe(struct floor_io *io)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);

	if (sqe == NULL)
		die("io_uring_get_sqe");
	return sqe;
}

static struct io_uring_cqe *floor_wait(struct floor_io *io)
{
	struct io_uring_cqe *cqe;

	if (io_uring_submit_and_wait(&io->ring, 1) < 0 ||
	    io_uring_wait_cqe(&io->ring, &cqe) < 0)
		die("io_uring wait");
	return cqe;
}

static void floor_ring_init(struct floor_io *io)
{
	struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER |
					     IORING_SETUP_DEFER_TASKRUN};
	struct io_uring_buf_reg reg = {.ring_entries = FLOOR_BUFS,
				       .bgid = FLOOR_BGID};
	void *mem;

	if (io_uring_queue_init_params(64, &io->ring, &p) < 0)
		die("io_uring_queue_init_params");
	if (posix_memalign(&mem, 4096,
			   FLOOR_BUFS * sizeof(struct io_uring_buf)) != 0 ||
	    (io->bufs = malloc(FLOOR_BUFS * FLOOR_BUF_LEN)) == NULL)
		die("floor buffers");
	io->br = mem;
	io_uring_buf_ring_init(io->br);
	reg.ring_addr = (uintptr_t)mem;
	if (io_uring_register_buf_ring(&io->ring, &reg, 0) < 0)
		die("io_uring_register_buf_ring");
	for (int i = 0; i < FLOOR_BUFS; i++)
		io_uring_buf_ring_add(io->br, io->bufs + i * FLOOR_BUF_LEN,
				      FLOOR_BUF_LEN, (unsigned short)i,
				      io_uring_buf_ring_mask(FLOOR_BUFS), i);
	io_uring_buf_ring_advance(io->br, FLOOR_BUFS);
}

static void *floor_server_ring(void *arg)
{
	const struct rr_arg *ra = arg;
	struct floor_io io = {.fd = ra->fd};
	char line[1024], resp[1100];
	size_t have = 0;

	floor_ring_init(&io);
	for (;;) {
		struct io_uring_sqe *sqe = floor_sqe(&io);
		struct io_uring_cqe *cqe;
		const char *data;
		unsigned bid;
		int r;

		io_uring_prep_recv(sqe, io.fd, NULL, FLOOR_BUF_LEN, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = FLOOR_BGID;
		cqe = floor_wait(&io);
		r = cqe->res;
		bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		io_uring_cqe_seen(&io.ring, cqe);
		if (r <= 0)
			break;
		data = io.bufs + bid * FLOOR_BUF_LEN;
		if (have + (size_t)r <= sizeof(line)) {
			memcpy(line + have, data, (size_t)r);
			have += (size_t)r;
		}
		io_uring_buf_ring_add(io.br, (void *)data, FLOOR_BUF_LEN,
				      (unsigned short)bid,
				      io_uring_buf_ring_mask(FLOOR_BUFS), 0);
		io_uring_buf_ring_advance(io.br, 1);
		if (have == 0 || line[have - 1] != '\n')
			continue;
		sqe = floor_sqe(&io);
		io_uring_prep_send(sqe, io.fd, resp,
				   floor_reply(line, have, resp, sizeof(resp)),
				   0);
		have = 0;
		cqe = floor_wait(&io);
		r = cqe->res;
		io_uring_cqe_seen(&io.ring, cqe);
		if (r < 0)
			break;
	}
	io_uring_queue_exit(&io.ring);
	free(io.br);
	free(io.bufs);
	return NULL;
}

static void *floor_server_sys(void *arg)
{
	const struct rr_arg *ra = arg;
	char line[1024], resp[1100];
	size_t have = 0;

	for (;;) {
		ssize_t r = read(ra->fd, line + have, sizeof(line) - have);
		size_t n;

		if (r <= 0)
			break;
		have += (size_t)r;
		if (line[have - 1] != '\n' && have < sizeof(line))
			continue;
		n = floor_reply(line, have, resp, sizeof(resp));
		have = 0;
		if (write(ra->fd, resp, n) != (ssize_t)n)
			break;
	}
	return NULL;
}

static uint64_t rr_floor_ring(void)
{
	return rr_run(floor_server_ring, false);
}

static uint64_t rr_floor_sys(void)
{
	return rr_run(floor_server_sys, false);
}

/* ------------------------------------------------------------------ */
/* Driver.                                                             */

struct bcase {
	const char *name;
	const char *unit;
	size_t *ops;
	uint64_t (*ours)(void);
	uint64_t (*cy)(void);
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

#define MAX_RUNS 15
static int runs = 5;

static void run_case(const struct bcase *bc)
{
	const char *only = getenv("BENCH_PROT_ONLY"); /* "ours" or "cy" */
	bool run_o = only == NULL || strcmp(only, "cy") != 0;
	bool run_c = only == NULL || strcmp(only, "ours") != 0;
	uint64_t t_o[MAX_RUNS] = {0}, t_c[MAX_RUNS] = {0}, sum_o = 0, sum_c = 0;
	double ns_o, ns_c;

	for (int r = 0; r < runs; r++) {
		uint64_t t0 = now_ns();

		if (run_o)
			sum_o = bc->ours();
		t_o[r] = now_ns() - t0;
		t0 = now_ns();
		if (run_c)
			sum_c = bc->cy();
		t_c[r] = now_ns() - t0;
	}
	qsort(t_o, (size_t)runs, sizeof(t_o[0]), cmp_u64);
	qsort(t_c, (size_t)runs, sizeof(t_c[0]), cmp_u64);
	ns_o = (double)t_o[runs / 2] / (double)*bc->ops;
	ns_c = (double)t_c[runs / 2] / (double)*bc->ops;
	printf("%-16s %-6s %10zu %12.2f %12.2f %8.3f  %s\n", bc->name, bc->unit,
	       *bc->ops, ns_o, ns_c, ns_o / ns_c,
	       sum_o == sum_c ? "same" : "RESULTS DIFFER");
	fflush(stdout);
}

/* Cases named after the scale on the command line, or all. */
static bool wanted(const char *name, int argc, char **argv)
{
	for (int a = 2; a < argc; a++)
		if (strcmp(argv[a], name) == 0)
			return true;
	return argc <= 2;
}

int main(int argc, char **argv)
{
	static const struct bcase cases[] = {
		{"getc-file", "byte", &getc_bytes, getc_file_ours,
		 getc_file_cy},
		{"getc-memfd", "byte", &getc_bytes, getc_memfd_ours,
		 getc_memfd_cy},
		{"getc-pipe", "byte", &getc_bytes, getc_pipe_ours,
		 getc_pipe_cy},
		{"getc-map", "byte", &getc_bytes, getc_map_ours, getc_map_cy},
		{"fgets-80", "line", &line_count, fgets_ours, fgets_cy},
		{"printf-exists", "call", &printf_count, printf_ours,
		 printf_cy},
		{"write-null", "call", &write_count, write_null_ours,
		 write_null_cy},
		{"printastring", "call", &astring_count, astring_ours,
		 astring_cy},
		{"rr-socketpair", "trip", &rr_count, rr_ours, rr_cy},
		{"rr-flushonread", "trip", &rr_count, rr_onread_ours,
		 rr_onread_cy},
		{"rr-conns", "trip", &rr_count, rr_conns_ours, rr_conns_cy},
	};
	static const struct bcase floor_case = {"rr-floor", "trip", &rr_count,
						rr_floor_ring, rr_floor_sys};
	double scale = argc > 1 ? strtod(argv[1], NULL) : 1.0;
	const char *env_runs = getenv("BENCH_PROT_RUNS");
	struct utsname u;
	char place[64];

	if (scale <= 0)
		scale = 1.0;
	if (env_runs != NULL)
		runs = atoi(env_runs);
	if (runs < 1 || runs > MAX_RUNS)
		runs = 5;
	runs |= 1; /* odd: the median is one run */
	signal(SIGPIPE, SIG_IGN);
	rr_place_init();
	t_cyrus_load("bench-prot");
	getc_bytes = (size_t)(64.0 * 1024 * 1024 * scale);
	line_count = (size_t)(800000 * scale);
	printf_count = (size_t)(4000000 * scale);
	astring_count = (size_t)(2000000 * scale);
	rr_count = (size_t)(50000 * scale);
	write_count = (size_t)(16000000 * scale);
	if (getenv("BENCH_PROT_RR_CONNS") != NULL)
		rr_conns = strtoul(getenv("BENCH_PROT_RR_CONNS"), NULL, 10);
	if (rr_conns < 1 || rr_conns > 4096)
		rr_conns = 64;
	data_fd = make_file(getc_bytes, false, false);
	mem_fd = make_file(getc_bytes, false, true);
	lines_fd = make_file(line_count * 80, true, false);
	map_data = malloc(getc_bytes);
	if (map_data == NULL)
		die("malloc");
	for (size_t i = 0; i < getc_bytes; i++)
		map_data[i] = (char)('a' + i % 26);
	null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (null_fd < 0)
		die("/dev/null");

	uname(&u);
	printf("bench-prot: ours vs Cyrus %s (libcyrus.so.0), %s %s, "
	       "%ld CPUs, scale %g, median of %d\n",
	       "3.6", u.sysname, u.release, sysconf(_SC_NPROCESSORS_ONLN),
	       scale, runs);
	printf("rr-* and getc-pipe placement: %s (BENCH_PROT_RR_CPUS); "
	       "rr-conns: %zu connections\n",
	       rr_place_name(place, sizeof(place)), rr_conns);
	printf("%-16s %-6s %10s %12s %12s %8s  %s\n", "case", "op", "ops",
	       "ours ns/op", "Cyrus ns/op", "ratio", "check");
	/* Ours twice: ring only (the default), then prot_setdirectio(1). */
	for (int direct = 0; direct <= 1; direct++) {
		prot_setdirectio(direct);
		printf("-- ours with prot_setdirectio(%d)%s\n", direct,
		       direct ? ": speculative send(2), probe recv(2)"
			      : ": every read and write through the ring");
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			if (wanted(cases[i].name, argc, argv))
				run_case(&cases[i]);
	}
	if (wanted(floor_case.name, argc, argv)) {
		printf("-- no protstream on either side: \"ours\" is raw "
		       "io_uring recv+send, \"Cyrus\" read(2)+write(2)\n");
		run_case(&floor_case);
	}
	close(data_fd);
	close(mem_fd);
	close(lines_fd);
	close(null_fd);
	free(map_data);
	return 0;
}
