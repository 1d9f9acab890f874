/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen/mode-imap-noop: closed-loop IMAP NOOP round trips. */
#include "imap.h"

#include <errno.h>
#include <stdio.h>

/*
 * The cheapest command a server answers: per request one "c NOOP" and
 * its tagged OK (after whatever untagged updates the server sends).
 * What a NOOP costs the server is its per-command overhead: reading,
 * parsing, a mailbox check, writing the reply, and the wake-ups.
 */

static int noop_command(struct lg_conn *c, char *buf, size_t cap)
{
	(void)c;
	return snprintf(buf, cap, "NOOP") < (int)cap ? 0 : -ENOBUFS;
}

static const struct lg_imap_kind noop_kind = {.command = noop_command};

static int noop_conn_init(struct lg_conn *c)
{
	return lg_imap_conn_init(c, &noop_kind);
}

const struct lg_mode lg_mode_imap_noop = {
	.name = "imap-noop",
	.help = "IMAP: greeting, LOGIN -U -P, SELECT -M (INBOX); then\n"
		"           closed-loop \"c NOOP\" round trips",
	.init = lg_imap_init,
	.conn_init = noop_conn_init,
	.conn_fini = lg_imap_conn_fini,
	.connected = lg_imap_connected,
	.request = lg_imap_request,
	.sent = lg_imap_sent,
	.received = lg_imap_received,
};
