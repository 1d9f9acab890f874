/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen/mode-imap-select: SELECT of one mailbox, repeated. */
#include "imap.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/*
 * Each request selects the -M mailbox again (RFC 9051 6.3.2: a SELECT
 * while one is selected closes it first, without expunging). What it
 * costs the server is opening a mailbox of its size: reading its index or
 * listing its files, then the untagged EXISTS, FLAGS, UIDVALIDITY... A
 * reply without "* n EXISTS", or with another n than the first SELECT
 * saw, counts as an error: the server did not select what we measure.
 */

#define SELECT_CMD_MAX 100

static char select_cmd[SELECT_CMD_MAX];

static int select_init(const struct lg_opts *o)
{
	const char *m = o->mailbox != NULL ? o->mailbox : "INBOX";

	/* lg_imap_init checks the name; a quoted one here is plain. */
	if (snprintf(select_cmd, sizeof(select_cmd), "SELECT \"%s\"", m) >=
		    (int)sizeof(select_cmd) ||
	    strpbrk(m, "\"\\") != NULL) {
		(void)fprintf(stderr, "loadgen: imap-select: -M too long or "
				      "with a quote or backslash\n");
		return -EINVAL;
	}
	return lg_imap_init(o);
}

static int select_command(struct lg_conn *c, char *buf, size_t cap)
{
	(void)c;
	return snprintf(buf, cap, "%s", select_cmd) < (int)cap ? 0 : -ENOBUFS;
}

static int select_check(struct lg_conn *c)
{
	struct lg_imap *s = c->priv;

	return s->saw_exists && s->exists == s->open_exists ? 0 : -EBADMSG;
}

static const struct lg_imap_kind select_kind = {
	.command = select_command,
	.check = select_check,
};

static int select_conn_init(struct lg_conn *c)
{
	return lg_imap_conn_init(c, &select_kind);
}

const struct lg_mode lg_mode_imap_select = {
	.name = "imap-select",
	.help = "IMAP: LOGIN -U -P, SELECT -M; then closed-loop SELECT -M\n"
		"           again and again (a reply without EXISTS: error)",
	.init = select_init,
	.conn_init = select_conn_init,
	.conn_fini = lg_imap_conn_fini,
	.connected = lg_imap_connected,
	.request = lg_imap_request,
	.sent = lg_imap_sent,
	.received = lg_imap_received,
};
