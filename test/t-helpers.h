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

/* The ring mode the current group runs under (see t_run_groups()). */
extern enum ur_mode t_mode;

struct t_loop {
	struct ur_loop *loop;
};

/*
 * cmocka setup/teardown: a fresh loop in t_mode, bound to the thread.
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

/* Exit 77 (meson: skipped) if io_uring or this opcode is unavailable. */
void t_require_ring_op(int opcode);

/*
 * Run the group once per ring mode the kernel accepts (DEFER, COOP,
 * PLAIN), setting t_mode for each, or only the one RINGPROT_TEST_MODE
 * names. Returns the summed failure count.
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
