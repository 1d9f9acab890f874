/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen/mode-idle: open connections and hold them, silent. */
#include "loadgen.h"

#include <errno.h>

/*
 * For memory per idle connection: the client says nothing. One recv per
 * connection stays posted so that a server closing a connection (or
 * sending anything) is noticed and reported; all of them share one byte
 * of buffer, since nothing is expected to land there.
 */

static unsigned char idle_sink;

static int idle_connected(struct lg_conn *c)
{
	int ret = lg_conn_recv(c, &idle_sink, 1);

	if (ret < 0)
		return ret;
	lg_conn_ready(c);
	return 0;
}

static int idle_received(struct lg_conn *c, size_t n)
{
	(void)c;
	(void)n;
	return -EPROTO; /* the server spoke first */
}

const struct lg_mode lg_mode_idle = {
	.name = "idle",
	.help = "open -c connections and hold them for -d seconds",
	.connected = idle_connected,
	.received = idle_received,
};
