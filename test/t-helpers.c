/* SPDX-License-Identifier: BSD-3-Clause */
/* test/t-helpers: loop setup per ring mode, socket pairs, leak checks. */
#include "t-helpers.h"

#include <ringprot/prot.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

enum ur_backend t_backend = UR_BACKEND_AUTO;
enum ur_mode t_mode = UR_MODE_AUTO;

int t_loop_setup(void **state)
{
	struct t_loop *tl = calloc(1, sizeof(*tl));
	struct ur_loop_opts o = {.backend = t_backend, .mode = t_mode};
	int ret;

	if (tl == NULL)
		return -1;
	ret = ur_loop_new(&o, &tl->loop);
	if (ret < 0) {
		fprintf(stderr, "ur_loop_new(%s, %s): %s\n",
			ur_backend_name(t_backend), ur_mode_name(t_mode),
			strerror(-ret));
		free(tl);
		return -1;
	}
	*state = tl;
	return 0;
}

/* At most this many live objects are named; the rest are counted. */
#define T_LIVE_NAMED 8

static void report_live(const char *what, const char *file, int line, void *arg)
{
	int *n = arg;

	if (*n < T_LIVE_NAMED)
		fprintf(stderr, "still live at teardown: %s created at %s:%d\n",
			what, file, line);
	(*n)++;
}

int t_loop_teardown(void **state)
{
	struct t_loop *tl = *state;
	struct ur_loop_stats st;
	int live = 0;

	/* Let fire-and-forget completions (cancels, removes) drain. */
	for (int i = 0; i < 100; i++) {
		ur_loop_stats(tl->loop, &st);
		if (st.ops_inflight == 0)
			break;
		if (ur_loop_run_once(tl->loop, 10 * 1000 * 1000) < 0)
			break;
	}
	ur_loop_stats(tl->loop, &st);
	ur_loop_foreach_live(tl->loop, report_live, &live);
	if (live > T_LIVE_NAMED)
		fprintf(stderr, "still live at teardown: %d more\n",
			live - T_LIVE_NAMED);
	if (st.ops_inflight != 0) {
		fprintf(stderr, "still live at teardown: %llu ops in flight\n",
			(unsigned long long)st.ops_inflight);
		live++;
	}
	ur_loop_free(&tl->loop);
	free(tl);
	*state = NULL;
	return live == 0 ? 0 : -1;
}

uint64_t t_now_ms(void)
{
	return ur_now_ns(CLOCK_MONOTONIC) / 1000000;
}

uint64_t t_realtime_ms(void)
{
	return ur_now_ns(CLOCK_REALTIME) / 1000000;
}

int t_loop_run_until(struct ur_loop *loop, const int *flag, int timeout_ms)
{
	uint64_t end = t_now_ms() + (uint64_t)timeout_ms;

	while (*flag == 0 && t_now_ms() < end) {
		if (ur_loop_run_once(loop, 10 * 1000 * 1000) < 0)
			break;
	}
	return *flag;
}

void t_socketpair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
			 0);
}

struct protstream *t_read_pair(int sv[2])
{
	struct protstream *s;

	t_socketpair(sv);
	s = prot_new(sv[0], 0);
	assert_non_null(s);
	return s;
}

void t_close_pair(int sv[2])
{
	close(sv[0]);
	close(sv[1]);
}

void t_tcp_pair(int sv[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	int one = 1;
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(lfd >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
	sv[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(sv[0] >= 0);
	assert_int_equal(connect(sv[0], (struct sockaddr *)&a, sizeof(a)), 0);
	sv[1] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(sv[1] >= 0);
	(void)setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	(void)setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	close(lfd);
}

void t_require_loop(void)
{
	struct ur_loop *loop;
	int ret = ur_loop_new(NULL, &loop);

	if (ret < 0) {
		fprintf(stderr, "no event loop (%s): skipped\n",
			strerror(-ret));
		exit(77);
	}
	ur_loop_free(&loop);
	ur_loop_bind(NULL);
}

/* An engine a group runs on. */
struct t_engine {
	const char *name;
	enum ur_backend backend;
	enum ur_mode mode;
};

static const struct t_engine t_engines[] = {
	{"defer", UR_BACKEND_URING, UR_MODE_DEFER},
	{"coop", UR_BACKEND_URING, UR_MODE_COOP},
	{"plain", UR_BACKEND_URING, UR_MODE_PLAIN},
	{"epoll", UR_BACKEND_EPOLL, UR_MODE_AUTO},
};
#define T_ENGINES (sizeof(t_engines) / sizeof(t_engines[0]))

/*
 * RINGPROT_TEST_MODE=defer|coop|plain|epoll (a prefix) runs one engine;
 * meson registers each ring test once per engine that way.
 */
static int engines_wanted(const struct t_engine **out)
{
	const char *want = getenv("RINGPROT_TEST_MODE");
	int n = 0;

	for (size_t i = 0; i < T_ENGINES; i++)
		if (want == NULL || *want == '\0' ||
		    strncasecmp(want, t_engines[i].name, strlen(want)) == 0)
			out[n++] = &t_engines[i];
	if (n == 0) {
		fprintf(stderr, "RINGPROT_TEST_MODE=%s: no such mode\n", want);
		exit(1);
	}
	return n;
}

int t_run_groups(const char *name, const struct CMUnitTest *tests, size_t n)
{
	const struct t_engine *engines[T_ENGINES];
	int nengines = engines_wanted(engines);
	int failed = 0;
	int ran = 0;

	for (int i = 0; i < nengines; i++) {
		const struct t_engine *en = engines[i];
		struct ur_loop_opts o = {.backend = en->backend,
					 .mode = en->mode};
		struct ur_loop *probe;
		char group[128];

		if (ur_loop_new(&o, &probe) < 0) {
			fprintf(stderr, "%s: engine %s refused by the kernel\n",
				name, en->name);
			continue;
		}
		ur_loop_free(&probe);
		ur_loop_bind(NULL);
		t_backend = en->backend;
		t_mode = en->mode;
		if (en->backend == UR_BACKEND_EPOLL)
			setenv("RINGPROT_BACKEND", "epoll", 1);
		else
			unsetenv("RINGPROT_BACKEND");
		snprintf(group, sizeof(group), "%s[%s]", name, en->name);
		failed += _cmocka_run_group_tests(group, tests, n, NULL, NULL);
		ran++;
	}
	if (ran == 0) {
		fprintf(stderr, "%s: no engine available: skipped\n", name);
		exit(77);
	}
	return failed;
}

int t_tcp_client(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons(port)};
	struct timeval tv = {.tv_sec = 20};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv,
				    sizeof(tv)),
			 0);
	return fd;
}

void t_send_str(int fd, const char *s)
{
	assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL),
			 (ssize_t)strlen(s));
}

char *t_recv_line(int fd, char *buf, size_t size)
{
	size_t n = 0;

	while (n + 1 < size) {
		ssize_t r = recv(fd, buf + n, 1, 0);

		/* A thread with a loop of its own can see EINTR. */
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || buf[n] == '\n')
			break;
		n++;
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	return buf;
}

bool t_closed_within(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char c;
	int n;

	while ((n = poll(&p, 1, ms)) < 0 && errno == EINTR)
		;
	if (n != 1)
		return false;
	return recv(fd, &c, 1, 0) <= 0;
}
