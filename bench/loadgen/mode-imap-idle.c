/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen/mode-imap-idle: IMAP sessions parked in IDLE. */
#include "imap.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>

/*
 * For memory per IDLE connection and for push latency (bench/imap-idle.sh):
 * each connection reads the greeting, logs in (-U, -P), selects -M
 * (INBOX) and enters IDLE; it counts as ready when the server's "+ "
 * continuation arrives, so the server has done all of its session work
 * on every connection before the measurement. Then the client is silent.
 * The session is imap.c's, held (imap.h): a BYE, a tagged reply (the
 * server ended IDLE) or a close ends the connection as failed.
 *
 * While held, every "* n EXISTS" is printed at once as
 * "exists: conn=I n=N t_ns=T", T being CLOCK_MONOTONIC at its arrival,
 * so that a driver that delivers mail (and stamps its LMTP replies with
 * the same clock, e.g. Python's time.monotonic_ns) can compute the push
 * delay. Keepalives ("* OK ...") and other untagged data are ignored.
 */

static pthread_mutex_t idle_out_lock = PTHREAD_MUTEX_INITIALIZER;

static void idle_exists(struct lg_conn *c, unsigned long n)
{
	uint64_t t = lg_now_ns();

	(void)pthread_mutex_lock(&idle_out_lock);
	printf("exists: conn=%u n=%lu t_ns=%" PRIu64 "\n", c->index, n, t);
	(void)fflush(stdout);
	(void)pthread_mutex_unlock(&idle_out_lock);
}

static const struct lg_imap_kind idle_kind = {
	.hold = "c IDLE\r\n",
	.held_exists = idle_exists,
};

static int idle_conn_init(struct lg_conn *c)
{
	return lg_imap_conn_init(c, &idle_kind);
}

const struct lg_mode lg_mode_imap_idle = {
	.name = "imap-idle",
	.help = "IMAP: greeting, LOGIN -U -P, SELECT -M (INBOX), IDLE; held\n"
		"           once \"+ \" arrives; prints \"exists: conn=I n=N "
		"t_ns=T\"\n"
		"           (CLOCK_MONOTONIC) for each * N EXISTS while held",
	.init = lg_imap_init,
	.conn_init = idle_conn_init,
	.conn_fini = lg_imap_conn_fini,
	.connected = lg_imap_connected,
	.sent = lg_imap_sent,
	.received = lg_imap_received,
};
