/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-regress: Cyrus prot bugs fixed here (spec section 6), pinned. */
#include "t-helpers.h" /* stdarg, stddef, setjmp, cmocka: in that order */

#include <ringprot/prot.h>

#include "../prot/internal.h" /* buffer ownership and the layer seam */

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void write_all(int fd, const void *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		assert_true(w > 0);
		p = (const char *)p + w;
		n -= (size_t)w;
	}
}

/*
 * Spec 2.21 / 5.2 #29: Cyrus counts 904, 0 and 14 here. We count every
 * byte the application writes (audit figures differ from Cyrus's).
 */
static void test_prot_regress_bytes_out(void **state)
{
	static char data[5000];
	struct buf b = {0};
	struct protstream *s;

	(void)state;
	s = prot_writebuf(&b);
	assert_int_equal(prot_write(s, data, 5000), 0);
	assert_int_equal(prot_bytes_out(s), 5000);
	prot_free(s);

	s = prot_writebuf(&b);
	assert_int_equal(prot_write(s, data, 4096), 0);
	assert_int_equal(prot_bytes_out(s), 4096);
	prot_free(s);

	s = prot_writebuf(&b);
	assert_int_equal(prot_write(s, data, 10), 0);
	assert_int_equal(prot_write(s, data, 4090), 0);
	assert_int_equal(prot_bytes_out(s), 4100);
	prot_free(s);

	s = prot_writebuf(&b);
	for (int i = 0; i < 5000; i++)
		assert_int_equal(prot_putc('.', s), 0);
	assert_int_equal(prot_bytes_out(s), 5000);
	assert_int_equal(prot_printf(s, "%d", 12345), 0);
	assert_int_equal(prot_bytes_out(s), 5005);
	prot_free(s);
	free(b.s);
}

/* Spec 5.6 #56 / 6.15: Cyrus's protgroup_copy returns an empty group. */
static void test_prot_regress_protgroup_copy(void **state)
{
	struct protstream *a = prot_readmap("a", 1), *b = prot_readmap("b", 1);
	struct protgroup *g = protgroup_new(1), *c;

	(void)state;
	protgroup_insert(g, a);
	protgroup_insert(g, b);
	c = protgroup_copy(g);
	assert_non_null(c);
	assert_ptr_equal(protgroup_getelement(c, 0), a);
	assert_ptr_equal(protgroup_getelement(c, 1), b);
	assert_null(protgroup_getelement(c, 2));
	protgroup_free(c);
	protgroup_free(g);
	prot_free(a);
	prot_free(b);
}

/*
 * Spec 2.22 / 5.4 #47 / 6.7: SIGHUP during a timed wait ended Cyrus's
 * session with "Interrupted system call". Here the wait goes on: the
 * byte that arrives later is returned, and a silent peer still times out
 * at the deadline, not at the signal.
 */
static volatile sig_atomic_t hups;

static void on_hup(int sig)
{
	(void)sig;
	hups++;
}

struct hupper {
	pthread_t th;
	pthread_t target;
	int fd; /* -1: send nothing */
};

static void *hupper_main(void *arg)
{
	struct hupper *h = arg;

	usleep(300 * 1000);
	pthread_kill(h->target, SIGHUP);
	usleep(300 * 1000);
	pthread_kill(h->target, SIGHUP);
	if (h->fd >= 0)
		write_all(h->fd, "k", 1);
	return NULL;
}

static void test_prot_regress_sighup_timed_wait(void **state)
{
	struct sigaction sa = {0}, old;
	struct hupper h = {0};
	struct protstream *s;
	uint64_t t0, dt;
	int sv[2];

	(void)state;
	sa.sa_handler = on_hup; /* no SA_RESTART: every wait sees EINTR */
	assert_int_equal(sigaction(SIGHUP, &sa, &old), 0);
	hups = 0;

	t_socketpair(sv);
	s = prot_new(sv[0], 0);
	assert_int_equal(prot_settimeout(s, 10), 0);
	h.target = pthread_self();
	h.fd = sv[1];
	assert_int_equal(pthread_create(&h.th, NULL, hupper_main, &h), 0);
	assert_int_equal(prot_getc(s), 'k');
	assert_null(prot_error(s));
	assert_int_equal(pthread_join(h.th, NULL), 0);
	assert_int_equal(hups, 2);
	prot_free(s);

	s = prot_new(sv[0], 0);
	assert_int_equal(prot_settimeout(s, 1), 0);
	h.fd = -1;
	t0 = t_now_ms();
	assert_int_equal(pthread_create(&h.th, NULL, hupper_main, &h), 0);
	assert_int_equal(prot_getc(s), EOF);
	dt = t_now_ms() - t0;
	assert_int_equal(pthread_join(h.th, NULL), 0);
	assert_string_equal(prot_error(s), "idle for too long");
	assert_true(dt >= 900);
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
	assert_int_equal(sigaction(SIGHUP, &old, NULL), 0);
}

/* Spec 2.20 / 6.14: prot_rewind freed nothing; ASan's leak check pins it. */
static void test_prot_regress_rewind_no_leak(void **state)
{
	char path[] = "/tmp/prot-rw-XXXXXX";
	struct protstream *s;
	int fd = mkstemp(path), wfd;

	(void)state;
	assert_true(fd >= 0);
	write_all(fd, "abc", 3);
	wfd = open(path, O_WRONLY);
	unlink(path);
	assert_true(wfd >= 0);
	/* Reading a write-only fd fails: a heap-allocated error text. */
	s = prot_new(wfd, 0);
	assert_int_equal(prot_getc(s), EOF);
	assert_string_equal(prot_error(s), "Bad file descriptor");
	assert_int_equal(prot_rewind(s), 0);
	assert_null(prot_error(s));
	prot_free(s);
	close(wfd);
	close(fd);
}

/*
 * Spec 6.13: ungetc misuse must not end the process from library code.
 * A Cyrus-style fatal() hook still gets the exact Cyrus behaviour.
 */
static void cyrus_fatal(const char *msg, int code)
{
	fprintf(stderr, "%s\n", msg);
	_exit(code);
}

static void test_prot_regress_ungetc_fatal_hook(void **state)
{
	struct protstream *s;
	int status;
	pid_t pid;

	(void)state;
	s = prot_readmap("ab", 2);
	assert_int_equal(prot_ungetc('a', s), EOF); /* no hook: returns */
	prot_free(s);

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		(void)prot_setfatal(cyrus_fatal);
		s = prot_readmap("ab", 2);
		(void)prot_getc(s);
		(void)prot_ungetc('b', s);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 70);
}

/*
 * DESIGN "an idle connection holds no read buffer": a socket stream
 * receives into the loop's provided buffers, keeps one only while its
 * bytes are unread, and holds none once it waits for more.
 */
static void test_prot_regress_idle_holds_no_buffer(void **state)
{
	static char data[10000], got[10000];
	struct protstream *s;
	struct prot__stream *ps;
	int sv[2];

	(void)state;
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (char)i;
	t_socketpair(sv);
	write_all(sv[1], data, sizeof(data));
	s = prot_new(sv[0], 0);
	ps = prot__of(s);
	assert_int_equal(prot_read(s, got, sizeof(got)), 4096);
	assert_true(ps->bid >= 0); /* one recv took all 10000 bytes */
	assert_null(ps->rbuf);	   /* and no private buffer exists */
	assert_int_equal(prot_read(s, got + 4096, sizeof(got)), 4096);
	assert_int_equal(prot_read(s, got + 8192, sizeof(got)), 1808);
	assert_memory_equal(got, data, sizeof(data));
	prot_NONBLOCK(s);
	assert_int_equal(prot_getc(s), EOF);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(ps->bid, -1);
	assert_null(ps->rbuf);
	assert_int_equal(s->cnt, 0);
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
}

/*
 * prot_fill called directly on a window with many unread bytes, and the
 * refill fails: those bytes must not be lost (the provided buffer stays
 * held until a later refill succeeds, then goes back).
 */
static void test_prot_regress_fill_keeps_unread(void **state)
{
	static char data[1000];
	struct protstream *s;
	struct prot__stream *ps;
	int sv[2];

	(void)state;
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (char)('A' + i % 26);
	t_socketpair(sv);
	write_all(sv[1], data, sizeof(data));
	s = prot_new(sv[0], 0);
	ps = prot__of(s);
	assert_int_equal(prot_getc(s), 'A');
	prot_NONBLOCK(s);
	assert_int_equal(prot_fill(s), EOF);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(s->cnt, 999);
	assert_true(ps->keep_bid >= 0);
	assert_int_equal(prot_getc(s), 'B');
	write_all(sv[1], "z", 1);
	while (s->cnt > 0)
		(void)prot_getc(s);
	assert_int_equal(prot_getc(s), 'z');
	assert_int_equal(ps->keep_bid, -1);
	prot_free(s);
	close(sv[0]);
	close(sv[1]);
}

/*
 * The layer seam (spec 2.3 step 2/8, 2.7.2): a toy read layer that
 * upper-cases and hands out its output in halves (so it holds pending
 * plaintext), and a write layer that wraps each flushed chunk in [ ].
 */
struct toy {
	char held[8192];
	size_t n;
};

static int toy_decode(struct prot__layer *l, const unsigned char *in,
		      size_t in_len, struct buf *out)
{
	struct toy *t = l->state;
	size_t give;

	for (size_t i = 0; i < in_len; i++)
		t->held[t->n++] = (char)toupper(in[i]);
	give = t->n > 1 ? t->n / 2 : t->n;
	if (prot__buf_append(out, t->held, give) < 0)
		return -ENOMEM;
	memmove(t->held, t->held + give, t->n - give);
	t->n -= give;
	return 0;
}

static bool toy_pending(const struct prot__layer *l)
{
	return ((const struct toy *)l->state)->n > 0;
}

static int toy_encode(struct prot__layer *l, const unsigned char *in,
		      size_t in_len, struct buf *out)
{
	(void)l;
	if (prot__buf_append(out, "[", 1) < 0 ||
	    prot__buf_append(out, in, in_len) < 0 ||
	    prot__buf_append(out, "]", 1) < 0)
		return -ENOMEM;
	return 0;
}

static const struct prot__layer_ops toy_ops = {
	.name = "toy",
	.decode = toy_decode,
	.pending = toy_pending,
	.encode = toy_encode,
};

static void test_prot_regress_layer_seam(void **state)
{
	struct toy t = {0};
	struct prot__layer rl = {.ops = &toy_ops, .state = &t};
	struct prot__layer wl = {.ops = &toy_ops};
	struct protstream *in, *out;
	char got[64];
	int sv[2];
	ssize_t n;

	(void)state;
	t_socketpair(sv);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	prot__of(in)->rlayers = &rl;
	prot__of(out)->wlayers = &wl;
	write_all(sv[1], "hello world", 11);
	for (int i = 0; i < 11; i++)
		assert_int_equal(prot_getc(in), "HELLO WORLD"[i]);
	assert_true(prot__input_ready(in) == false);
	assert_int_equal(prot_puts(out, "abc"), 0);
	assert_int_equal(prot_flush(out), 0);
	n = recv(sv[1], got, sizeof(got), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(got, "[abc]", 5);
	prot__of(in)->rlayers = NULL;
	prot__of(out)->wlayers = NULL;
	prot_free(in);
	prot_free(out);
	close(sv[0]);
	close(sv[1]);
}

/*
 * An fd the application made O_NONBLOCK (Cyrus's TLS setup does, spec
 * 6.10): io_uring then answers EAGAIN instead of waiting; blocking
 * streams must still wait for input and push every byte out.
 */
struct late_io {
	pthread_t th;
	int fd;
	size_t got;
};

static void *late_main(void *arg)
{
	struct late_io *li = arg;
	char buf[65536];
	ssize_t r;

	usleep(200 * 1000);
	write_all(li->fd, "L", 1);
	while ((r = read(li->fd, buf, sizeof(buf))) > 0)
		li->got += (size_t)r;
	return NULL;
}

static void test_prot_regress_app_nonblock_fd(void **state)
{
	static char data[1 << 20];
	struct late_io li = {0};
	struct protstream *in, *out;
	int sv[2];

	(void)state;
	t_socketpair(sv);
	assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	li.fd = sv[1];
	assert_int_equal(pthread_create(&li.th, NULL, late_main, &li), 0);
	assert_int_equal(prot_getc(in), 'L');
	assert_int_equal(prot_write(out, data, sizeof(data)), 0);
	assert_int_equal(prot_flush(out), 0);
	shutdown(sv[0], SHUT_WR);
	assert_int_equal(pthread_join(li.th, NULL), 0);
	assert_int_equal(li.got, sizeof(data));
	prot_free(in);
	prot_free(out);
	close(sv[0]);
	close(sv[1]);
}

/* A read stream with no fd, and a write stream with no fd: EBADF. */
static void test_prot_regress_no_fd(void **state)
{
	struct protstream *s = prot_new(PROT_NO_FD, 0);

	(void)state;
	assert_int_equal(prot_getc(s), EOF);
	assert_string_equal(prot_error(s), "Bad file descriptor");
	prot_free(s);
	s = prot_new(PROT_NO_FD, 1);
	assert_int_equal(prot_puts(s, "x"), 0);
	assert_int_equal(prot_flush(s), EOF);
	assert_string_equal(prot_error(s), "Bad file descriptor");
	prot_free(s);
	assert_int_equal(prot_free(NULL), 0);
}

/*
 * fork() after the parent has read (its loop and shared buffer ring in
 * use): the child's own stream reads through a loop of its own, freeing
 * the parent's stream in the child disturbs nothing, and the parent's
 * stream reads on afterwards.
 */
static int forked_reader(struct protstream *parents, int fd, int wfd)
{
	struct protstream *c = prot_new(fd, 0);
	char line[16];

	if (write(wfd, "c1\n", 3) != 3)
		return 2;
	if (prot_fgets(line, sizeof(line), c) == NULL || strcmp(line, "c1\n"))
		return 3;
	prot_free(c);
	prot_free(parents);
	return 0;
}

static void test_prot_regress_fork_child(void **state)
{
	struct protstream *s;
	char line[16];
	int a[2], b[2], status;
	pid_t pid;

	(void)state;
	t_socketpair(a);
	t_socketpair(b);
	assert_int_equal(write(a[1], "p1\n", 3), 3);
	s = prot_new(a[0], 0);
	assert_non_null(prot_fgets(line, sizeof(line), s));
	assert_string_equal(line, "p1\n");
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(forked_reader(s, b[0], b[1]));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(write(a[1], "p2\n", 3), 3);
	assert_non_null(prot_fgets(line, sizeof(line), s));
	assert_string_equal(line, "p2\n");
	prot_free(s);
	t_close_pair(a);
	t_close_pair(b);
}

/*
 * DESIGN "a stream is never freed while it owns an in-flight op": a fiber
 * cancelled while it waits in prot_getc gets EOF with the errno text,
 * its recv has been reaped, and the stream frees cleanly.
 */
struct cancel_ctx {
	int fd;
	int c;
	char err[64];
};

static int cancel_reader(void *arg)
{
	struct cancel_ctx *cc = arg;
	struct protstream *s = prot_new(cc->fd, 0);

	prot_settimeout(s, 30);
	cc->c = prot_getc(s);
	snprintf(cc->err, sizeof(cc->err), "%s",
		 prot_error(s) ? prot_error(s) : "(none)");
	prot_free(s);
	return 0;
}

static void test_prot_regress_fiber_cancel(void **state)
{
	struct t_loop *tl = *state;
	struct cancel_ctx cc = {0};
	struct ur_fiber *f;
	int sv[2];

	t_socketpair(sv);
	cc.fd = sv[0];
	assert_int_equal(ur_fiber_spawn(tl->loop, cancel_reader, &cc, NULL, &f),
			 0);
	for (int i = 0; i < 5; i++)
		assert_true(ur_loop_run_once(tl->loop, 1000 * 1000) >= 0);
	assert_int_equal(ur_fiber_cancel(f), 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(cc.c, EOF);
	assert_string_equal(cc.err, "Operation canceled");
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
		T(test_prot_regress_bytes_out),
		T(test_prot_regress_protgroup_copy),
		T(test_prot_regress_sighup_timed_wait),
		T(test_prot_regress_rewind_no_leak),
		T(test_prot_regress_ungetc_fatal_hook),
		T(test_prot_regress_idle_holds_no_buffer),
		T(test_prot_regress_fill_keeps_unread),
		T(test_prot_regress_layer_seam),
		T(test_prot_regress_app_nonblock_fd),
		T(test_prot_regress_no_fd),
		T(test_prot_regress_fiber_cancel),
		T(test_prot_regress_fork_child),
#undef T
	};

	t_require_loop();
	return t_run_groups("prot-regress", tests,
			    sizeof(tests) / sizeof(tests[0]));
}
