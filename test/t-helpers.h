/* SPDX-License-Identifier: BSD-3-Clause */
/* test/t-helpers: shared setup for the cmocka unit tests. */
#ifndef RINGPROT_T_HELPERS_H
#define RINGPROT_T_HELPERS_H

/* cmocka needs these first, in this order. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ringprot/uring.h>

struct protstream;

/*
 * The engine the current group runs under (see t_run_groups()): the
 * backend, and for io_uring the ring mode (UR_MODE_AUTO on epoll).
 */
extern enum ur_backend t_backend;
extern enum ur_mode t_mode;

/* Does the current group run on the epoll backend? */
static inline bool t_epoll(void)
{
	return t_backend == UR_BACKEND_EPOLL;
}

/*
 * Skip the running test on epoll: for tests of io_uring itself (SQ full,
 * CQ overflow, DEFER_TASKRUN allowances, enter counts). why says which.
 */
#define t_skip_on_epoll(why)                                               \
	do {                                                               \
		if (t_epoll()) {                                           \
			print_message("skipped on epoll: %s\n", why);     \
			skip();                                            \
		}                                                          \
	} while (0)

struct t_loop {
	struct ur_loop *loop;
};

/*
 * cmocka setup/teardown: a fresh loop on t_backend in t_mode, bound to
 * the thread.
 * The teardown fails the test if an op, timer or fiber is still live and
 * names the file and line that created it.
 */
int t_loop_setup(void **state);
int t_loop_teardown(void **state);

/* Run turns until *flag becomes non-zero or timeout_ms passes; returns
 * the flag's final value. */
int t_loop_run_until(struct ur_loop *loop, const int *flag, int timeout_ms);

/* AF_UNIX stream socketpair, fails the test on error. */
void t_socketpair(int sv[2]);
/* A protstream reading sv[0] of a fresh socketpair; closing both ends. */
struct protstream *t_read_pair(int sv[2]);
void t_close_pair(int sv[2]);
/* Connected TCP pair over 127.0.0.1 (ephemeral port). */
void t_tcp_pair(int sv[2]);

/*
 * A blocking client of a server on 127.0.0.1:port (receives time out
 * after 20 s), for tests of servers running on other threads.
 */
int t_tcp_client(uint16_t port);
/* Send all of s (fails the test otherwise). */
void t_send_str(int fd, const char *s);
/* Read up to LF (retrying EINTR); the line without CR LF in buf, "" at
 * end of input or on a timeout. */
char *t_recv_line(int fd, char *buf, size_t size);
/* Does the peer close (EOF or reset) within ms, with no byte first? */
bool t_closed_within(int fd, int ms);

/* Exit 77 (meson: skipped) if no loop can be made on any backend. */
void t_require_loop(void);

/*
 * Run the group once per engine the kernel accepts (io_uring in DEFER,
 * COOP and PLAIN mode, then epoll), setting t_backend and t_mode for
 * each, or only the one RINGPROT_TEST_MODE names (defer, coop, plain,
 * epoll). On epoll, RINGPROT_BACKEND=epoll is set too, so loops made
 * with default options (ur_loop_get()) run there as well. Returns the
 * summed failure count.
 */
int t_run_groups(const char *name, const struct CMUnitTest *tests, size_t n);

/* Milliseconds on CLOCK_MONOTONIC, and on CLOCK_REALTIME (wall clock). */
uint64_t t_now_ms(void);
uint64_t t_realtime_ms(void);

/* The loop of a test set up by t_loop_setup(). */
static inline struct ur_loop *t_loop_of(void **state)
{
	return ((struct t_loop *)*state)->loop;
}

#endif /* RINGPROT_T_HELPERS_H */
