/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/bench-idle: memory per idle connection parked in ur_recv_pbuf(). */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <ringprot/uring.h>

/*
 * The process may hold 20,000 fds and a ring's registered file table
 * about as many direct descriptors (io_uring refuses a table larger than
 * RLIMIT_NOFILE). Both ends of every socketpair therefore live as direct
 * descriptors: the server end in its thread's table, the peer end in the
 * next thread's table, and the real fds are closed at once. One thread,
 * one loop, one table; enough threads that no table passes BENCH_TABLE.
 */
#define BENCH_SLOTS	 19990 /* registered table size per loop */
#define BENCH_TABLE	 19000 /* entries we plan to use per table */
#define BENCH_BATCH	 256   /* socketpairs handed over per round */
#define BENCH_MAX_THR	 64
#define BENCH_BUFS	 1024 /* provided buffers per loop */
#define BENCH_BUF_SIZE	 4096
#define BENCH_STACK	 (64 * 1024)
#define BENCH_TARGET	 8192.0 /* bytes per parked fiber */
#define BENCH_TIMEOUT_MS 120000

struct bench_run;
struct bench_thread;

struct bench_conn {
	struct bench_thread *t;
	int fd;	     /* UR_FIXED(slot) of the server end */
	int res;     /* what ur_recv_pbuf() returned */
	uint8_t got; /* the byte it received */
};

struct bench_thread {
	struct bench_run *run;
	unsigned id;
	pthread_t tid;
	struct ur_loop *loop;
	struct ur_bufring *br;
	enum ur_mode mode;
	unsigned nconn; /* connections whose server end is here */
	struct bench_conn *conns;
	unsigned npeer; /* peer ends here: those of the previous thread */
	int *peer;	/* their UR_FIXED slots */
	struct ur_op *send_ops;
	int handoff[BENCH_BATCH]; /* real peer fds for the next thread */
	unsigned done;		  /* fibers that returned */
	unsigned sent;		  /* wake-up sends completed */
	unsigned send_errs;
	unsigned parked; /* recvs in flight when measured */
	unsigned avail;	 /* bufring count when measured */
	unsigned avail_end;
	double wake_ms;
	int err;
	const char *why;
};

struct bench_run {
	unsigned n;
	unsigned nthreads;
	unsigned rounds;
	pthread_barrier_t bar;
	struct bench_thread t[BENCH_MAX_THR];
};

static const uint8_t bench_byte = 'w';

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A "Key:   123 kB" line of a /proc file, in bytes; -1 if missing. */
static long long proc_kb(const char *path, const char *key)
{
	size_t klen = strlen(key);
	char line[256];
	long long v = -1;
	FILE *f = fopen(path, "r");

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
			v = strtoll(line + klen + 1, NULL, 10) * 1024;
			break;
		}
	}
	fclose(f);
	return v;
}

static long long count_maps(void)
{
	char line[512];
	long long n = 0;
	FILE *f = fopen("/proc/self/maps", "r");

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		n++;
	fclose(f);
	return n;
}

struct bench_mem {
	long long rss, pte, slab, maps;
};

static void mem_sample(struct bench_mem *m)
{
	m->rss = proc_kb("/proc/self/status", "VmRSS");
	m->pte = proc_kb("/proc/self/status", "VmPTE");
	m->slab = proc_kb("/proc/meminfo", "Slab");
	m->maps = count_maps();
}

static void fail(struct bench_thread *t, const char *why, int err)
{
	if (t->err == 0) {
		t->err = err;
		t->why = why;
	}
}

static void sync_all(struct bench_thread *t)
{
	(void)pthread_barrier_wait(&t->run->bar);
}

/* Each connection's fiber: wait for one byte, with no buffer held. */
static int idle_fiber(void *arg)
{
	struct bench_conn *c = arg;
	struct bench_thread *t = c->t;
	unsigned bid;
	ssize_t n = ur_recv_pbuf(c->fd, t->br, &bid, 0);

	c->res = (int)n;
	if (n > 0) {
		c->got = *(const uint8_t *)ur_bufring_buf(t->br, bid);
		ur_bufring_put(t->br, bid);
	}
	t->done++;
	return 0;
}

static void send_done(struct ur_op *op)
{
	struct bench_thread *t = op->data;

	if (op->res != 1)
		t->send_errs++;
	t->sent++;
}

static int install(struct bench_thread *t, int fd, int *slot_out)
{
	int d = ur_fd_to_direct(t->loop, fd);

	close(fd);
	if (d < 0)
		return d;
	*slot_out = d;
	return 0;
}

/*
 * Round r: make this thread's socketpairs [r*B, r*B+B), keep the server
 * ends, hand the peers to the next thread; then take in the previous
 * thread's peers. Real fds never exceed B per thread at a time.
 */
static void setup_round(struct bench_thread *t, unsigned r)
{
	struct bench_run *run = t->run;
	struct bench_thread *prev =
		&run->t[(t->id + run->nthreads - 1) % run->nthreads];
	unsigned lo = r * BENCH_BATCH;
	int ret;

	for (unsigned k = lo; k < lo + BENCH_BATCH && k < t->nconn; k++) {
		int sv[2];

		t->handoff[k - lo] = -1;
		if (t->err != 0)
			continue;
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
			fail(t, "socketpair", -errno);
			continue;
		}
		t->conns[k].t = t;
		ret = install(t, sv[0], &t->conns[k].fd);
		if (ret < 0) {
			close(sv[1]);
			fail(t, "ur_fd_to_direct (server end)", ret);
			continue;
		}
		t->handoff[k - lo] = sv[1];
	}
	sync_all(t);
	for (unsigned k = lo; k < lo + BENCH_BATCH && k < prev->nconn; k++) {
		int fd = prev->handoff[k - lo];

		if (fd < 0)
			continue;
		ret = install(t, fd, &t->peer[k]);
		if (ret < 0)
			fail(t, "ur_fd_to_direct (peer end)", ret);
	}
	sync_all(t);
}

static int setup_loop(struct bench_thread *t)
{
	struct ur_loop_opts o = {
		.direct_files = BENCH_SLOTS,
		.stack_size = BENCH_STACK,
	};
	int ret = ur_loop_new(&o, &t->loop);

	if (ret < 0) {
		fail(t, "ur_loop_new", ret);
		return ret;
	}
	t->mode = ur_loop_mode(t->loop);
	ret = ur_bufring_new(t->loop, BENCH_BUFS, BENCH_BUF_SIZE, &t->br);
	if (ret < 0)
		fail(t, "ur_bufring_new", ret);
	return ret;
}

/* Spawn every fiber and turn the loop until each recv is in the kernel. */
static void park_all(struct bench_thread *t)
{
	struct ur_loop_stats st;
	uint64_t end = now_ms() + BENCH_TIMEOUT_MS;
	int ret;

	for (unsigned k = 0; k < t->nconn && t->err == 0; k++) {
		struct ur_fiber *f;

		ret = ur_fiber_spawn(t->loop, idle_fiber, &t->conns[k], NULL,
				     &f);

		if (ret < 0) {
			fail(t, "ur_fiber_spawn", ret);
			break;
		}
		ur_fiber_detach(f);
	}
	do {
		ret = ur_loop_run_once(t->loop, 0);
		if (ret < 0) {
			fail(t, "ur_loop_run_once", ret);
			break;
		}
		ur_loop_stats(t->loop, &st);
	} while (st.ops_inflight < t->nconn && now_ms() < end);
	ret = ur_loop_run_once(t->loop, 0); /* submit the last batch */
	if (ret < 0)
		fail(t, "ur_loop_run_once", ret);
	ur_loop_stats(t->loop, &st);
	t->parked = (unsigned)st.ops_inflight;
	t->avail = ur_bufring_available(t->br);
	if (t->parked != t->nconn || t->done != 0)
		fail(t, "not every fiber parked in the kernel", -EAGAIN);
}

/* Send one byte to each peer held here; run until our fibers are done. */
static void wake_all(struct bench_thread *t)
{
	uint64_t t0 = now_ms(), end = t0 + BENCH_TIMEOUT_MS;

	t->send_ops = calloc(t->npeer, sizeof(*t->send_ops));
	if (t->send_ops == NULL) {
		fail(t, "calloc", -ENOMEM);
		return;
	}
	for (unsigned k = 0; k < t->npeer; k++) {
		int ret;

		ur_op_init(&t->send_ops[k], send_done, t);
		ret = ur_send_start(t->loop, &t->send_ops[k], t->peer[k],
				    &bench_byte, 1, 0);
		if (ret < 0) {
			fail(t, "ur_send_start", ret);
			t->sent++;
		}
	}
	while ((t->done < t->nconn || t->sent < t->npeer) && now_ms() < end)
		if (ur_loop_run_once(t->loop, 1000000) < 0)
			break;
	t->wake_ms = (double)(now_ms() - t0);
	t->avail_end = ur_bufring_available(t->br);
	if (t->done < t->nconn || t->sent < t->npeer)
		fail(t, "wake-up did not complete in time", -ETIMEDOUT);
}

static void teardown(struct bench_thread *t)
{
	if (t->br != NULL && ur_bufring_free(&t->br) < 0)
		fail(t, "ur_bufring_free", -EBUSY);
	ur_loop_free(&t->loop);
	free(t->send_ops);
	t->send_ops = NULL;
}

static void *thread_main(void *arg)
{
	struct bench_thread *t = arg;

	(void)setup_loop(t);
	sync_all(t); /* every loop exists: peers may be handed over */
	for (unsigned r = 0; r < t->run->rounds; r++)
		setup_round(t, r);
	sync_all(t); /* A: sockets in place, main samples memory */
	sync_all(t); /* B */
	if (t->err == 0)
		park_all(t);
	sync_all(t); /* C: all parked, main samples memory */
	sync_all(t); /* D */
	if (t->err == 0)
		wake_all(t);
	sync_all(t); /* E: everyone woke theirs */
	teardown(t);
	return NULL;
}

static unsigned div_up(unsigned a, unsigned b)
{
	return (a + b - 1) / b;
}

static int run_alloc(struct bench_run *run)
{
	unsigned per = run->n / run->nthreads, extra = run->n % run->nthreads;
	unsigned maxc = 0;

	for (unsigned i = 0; i < run->nthreads; i++) {
		struct bench_thread *t = &run->t[i];

		t->run = run;
		t->id = i;
		t->nconn = per + (i < extra ? 1 : 0);
		if (t->nconn > maxc)
			maxc = t->nconn;
	}
	for (unsigned i = 0; i < run->nthreads; i++) {
		struct bench_thread *t = &run->t[i];
		struct bench_thread *prev =
			&run->t[(i + run->nthreads - 1) % run->nthreads];

		t->npeer = prev->nconn;
		t->conns = calloc(t->nconn, sizeof(*t->conns));
		t->peer = calloc(t->npeer, sizeof(*t->peer));
		if (t->conns == NULL || t->peer == NULL)
			return -ENOMEM;
	}
	run->rounds = div_up(maxc, BENCH_BATCH);
	return 0;
}

static void run_free(struct bench_run *run)
{
	for (unsigned i = 0; i < run->nthreads; i++) {
		free(run->t[i].conns);
		free(run->t[i].peer);
	}
}

/* Everything every thread saw, checked once they have all finished. */
struct bench_sum {
	unsigned parked, avail, bufs, avail_end, woken, bad, send_errs;
	double wake_ms;
	int err;
	const char *why;
	enum ur_mode mode;
};

static void run_sum(const struct bench_run *run, struct bench_sum *s)
{
	memset(s, 0, sizeof(*s));
	for (unsigned i = 0; i < run->nthreads; i++) {
		const struct bench_thread *t = &run->t[i];

		s->parked += t->parked;
		s->avail += t->avail;
		s->avail_end += t->avail_end;
		s->bufs += BENCH_BUFS;
		s->send_errs += t->send_errs;
		s->mode = t->mode;
		if (t->wake_ms > s->wake_ms)
			s->wake_ms = t->wake_ms;
		for (unsigned k = 0; k < t->nconn; k++) {
			const struct bench_conn *c = &t->conns[k];

			if (c->res == 1 && c->got == bench_byte)
				s->woken++;
			else if (t->err == 0)
				s->bad++;
		}
		if (t->err != 0 && s->err == 0) {
			s->err = t->err;
			s->why = t->why;
		}
	}
}

static double mib(long long b)
{
	return (double)b / (1024.0 * 1024.0);
}

static void print_row(const struct bench_run *run, const struct bench_sum *s,
		      const struct bench_mem *m0, const struct bench_mem *m1)
{
	double per = (double)(m1->rss - m0->rss) / (double)run->n;
	double pte = (double)(m1->pte - m0->pte) / (double)run->n;
	double slab = (double)(m1->slab - m0->slab) / (double)run->n;

	printf("%7u %5u %7u %9.1f %9.1f %9.2f %8.2f %8.2f %6lld "
	       "%5u/%-5u %7.0f %7u  %s\n",
	       run->n, run->nthreads, s->parked, mib(m0->rss), mib(m1->rss),
	       per / 1024.0, pte / 1024.0, slab / 1024.0, m1->maps - m0->maps,
	       s->avail, s->bufs, s->wake_ms, s->woken,
	       per <= BENCH_TARGET ? "ok" : "OVER");
}

static int run_one(unsigned n, enum ur_mode *mode_out)
{
	struct bench_run *run = calloc(1, sizeof(*run));
	struct bench_mem m0, m1;
	struct bench_sum s;
	unsigned started = 0;
	int ret = 0;

	if (run == NULL)
		return -ENOMEM;
	run->n = n;
	run->nthreads = div_up(2 * n, BENCH_TABLE);
	if (run->nthreads < 2)
		run->nthreads = 2;
	if (run->nthreads > BENCH_MAX_THR) {
		printf("%7u: needs %u loops (tables of %d), more than %d\n", n,
		       run->nthreads, BENCH_TABLE, BENCH_MAX_THR);
		free(run);
		return -E2BIG;
	}
	if (run_alloc(run) < 0) {
		ret = -ENOMEM;
		goto out;
	}
	(void)pthread_barrier_init(&run->bar, NULL, run->nthreads + 1);
	for (; started < run->nthreads; started++) {
		if (pthread_create(&run->t[started].tid, NULL, thread_main,
				   &run->t[started]) != 0)
			break;
	}
	if (started < run->nthreads) {
		/* The barrier counts every thread: nothing can proceed. */
		printf("%7u: could only start %u of %u threads\n", n, started,
		       run->nthreads);
		exit(1);
	}
	(void)pthread_barrier_wait(&run->bar); /* loops made */
	for (unsigned r = 0; r < 2 * run->rounds; r++)
		(void)pthread_barrier_wait(&run->bar); /* setup_round() */
	(void)pthread_barrier_wait(&run->bar);	       /* A */
	mem_sample(&m0);
	(void)pthread_barrier_wait(&run->bar); /* B */
	(void)pthread_barrier_wait(&run->bar); /* C */
	mem_sample(&m1);
	(void)pthread_barrier_wait(&run->bar); /* D */
	(void)pthread_barrier_wait(&run->bar); /* E */
	for (unsigned i = 0; i < run->nthreads; i++)
		(void)pthread_join(run->t[i].tid, NULL);
	(void)pthread_barrier_destroy(&run->bar);

	run_sum(run, &s);
	print_row(run, &s, &m0, &m1);
	if (s.err != 0) {
		printf("        reached: %u of %u parked, %u woken; stopped at "
		       "%s: %s\n",
		       s.parked, n, s.woken, s.why, strerror(-s.err));
		ret = s.err;
	} else if (s.bad != 0 || s.send_errs != 0 || s.avail != s.bufs ||
		   s.avail_end != s.bufs) {
		printf("        FAILED: %u wrong results, %u send errors, "
		       "buffers held %u parked / %u after\n",
		       s.bad, s.send_errs, s.bufs - s.avail,
		       s.bufs - s.avail_end);
		ret = -EIO;
	}
	*mode_out = s.mode;
out:
	run_free(run);
	free(run);
	return ret;
}

int main(int argc, char **argv)
{
	static const unsigned defaults[] = {10000, 100000};
	unsigned list[16], nlist = 0;
	enum ur_mode mode = UR_MODE_AUTO;
	struct utsname u;
	int failed = 0;

	for (int i = 1; i < argc && nlist < 16; i++) {
		long v = strtol(argv[i], NULL, 10);

		if (v <= 0 || v > 1000000) {
			fprintf(stderr, "usage: %s [connections ...]\n",
				argv[0]);
			return 2;
		}
		list[nlist++] = (unsigned)v;
	}
	if (nlist == 0) {
		memcpy(list, defaults, sizeof(defaults));
		nlist = sizeof(defaults) / sizeof(defaults[0]);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	(void)uname(&u);
	printf("bench-idle: memory per idle connection, one fiber each "
	       "parked in ur_recv_pbuf()\n");
	printf("kernel %s, %ld CPUs; per loop: %d direct slots, %d x %d B "
	       "provided buffers, %d KiB fiber stacks (lazily committed)\n",
	       u.release, sysconf(_SC_NPROCESSORS_ONLN), BENCH_SLOTS,
	       BENCH_BUFS, BENCH_BUF_SIZE, BENCH_STACK / 1024);
	printf("RSS/fiber = VmRSS growth from spawning and parking the "
	       "fibers (stack pages + fiber record + op),\nsocket buffers "
	       "and io_uring requests are kernel memory: PTE = page tables, "
	       "slab = system-wide Slab (indicative)\n\n");
	printf("%7s %5s %7s %9s %9s %9s %8s %8s %6s %11s %7s %7s  %s\n",
	       "conns", "loops", "parked", "RSS0 MiB", "RSS1 MiB", "RSS/fib",
	       "PTE/fib", "slab/fib", "+VMAs", "bufs free", "wake ms", "woken",
	       "target");
	printf("%7s %5s %7s %9s %9s %9s %8s %8s %6s %11s %7s %7s\n", "", "", "",
	       "", "", "KiB", "KiB", "KiB", "", "avail/total", "", "");
	for (unsigned i = 0; i < nlist; i++)
		if (run_one(list[i], &mode) != 0)
			failed++;
	printf("\nring mode %s; target <= %.0f KiB RSS per parked fiber\n",
	       ur_mode_name(mode), BENCH_TARGET / 1024.0);
	return failed != 0;
}
