/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen/mode-idle: open connections and hold them, silent. */
#include "loadgen.h"

#include <errno.h>

/*
 * For memory per idle connection: the client says nothing. The worker's
 * recv stays armed, so a server that closes a connection (or sends
 * anything) is noticed and reported.
 */

static int idle_received(struct lg_conn *c, const unsigned char *data, size_t n)
{
	(void)c;
	(void)data;
	(void)n;
	return -EPROTO; /* the server spoke first */
}

const struct lg_mode lg_mode_idle = {
	.name = "idle",
	.help = "open -c connections and hold them for -d seconds",
	.received = idle_received,
};
