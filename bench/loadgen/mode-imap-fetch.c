/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen/mode-imap-fetch: a mix of FETCHes, closed loop. */
#include "imap.h"

#include <errno.h>
#include <stdio.h>

/*
 * The selected mailbox (-M) holds n messages: 1..n-1 small ones and
 * message n, the large one (bench/imap-cmds.sh fills it so); n comes
 * from the opening SELECT's "* n EXISTS". A connection's k-th request
 * is, by k mod 10:
 *   0-4  FETCH i (BODY.PEEK[HEADER])   the header of a small message
 *   5-8  FETCH i BODY.PEEK[]           a whole small message
 *   9    FETCH n BODY.PEEK[]           the large message
 * with i walking over the small ones (from a different start on each
 * connection). PEEK: no \Seen is set, so the mailbox stays as it was and
 * every run reads the same thing. The bytes of the literals are counted
 * (data_bytes in the result line); a reply with no literal counts as an
 * error.
 */

static int fetch_init(const struct lg_opts *o)
{
	return lg_imap_init(o);
}

static int fetch_command(struct lg_conn *c, char *buf, size_t cap)
{
	struct lg_imap *s = c->priv;
	unsigned long n = s->open_exists;
	unsigned long i;
	uint64_t k = s->nreq;
	int len;

	if (n < 2)
		return -ENOENT; /* no large message besides small ones */
	i = 1 + (unsigned long)((k + (uint64_t)c->index * 13) % (n - 1));
	if (k % 10 < 5)
		len = snprintf(buf, cap, "FETCH %lu (BODY.PEEK[HEADER])", i);
	else if (k % 10 < 9)
		len = snprintf(buf, cap, "FETCH %lu BODY.PEEK[]", i);
	else
		len = snprintf(buf, cap, "FETCH %lu BODY.PEEK[]", n);
	return len > 0 && len < (int)cap ? 0 : -ENOBUFS;
}

static int fetch_check(struct lg_conn *c)
{
	struct lg_imap *s = c->priv;

	return s->lit_bytes > 0 ? 0 : -ENODATA;
}

static const struct lg_imap_kind fetch_kind = {
	.command = fetch_command,
	.check = fetch_check,
};

static int fetch_conn_init(struct lg_conn *c)
{
	return lg_imap_conn_init(c, &fetch_kind);
}

const struct lg_mode lg_mode_imap_fetch = {
	.name = "imap-fetch",
	.help = "IMAP: LOGIN -U -P, SELECT -M (n messages: n-1 small, then\n"
		"           a large one); closed-loop FETCH mix, per 10: 5 headers,\n"
		"           4 small messages, 1 large (BODY.PEEK)",
	.init = fetch_init,
	.conn_init = fetch_conn_init,
	.conn_fini = lg_imap_conn_fini,
	.connected = lg_imap_connected,
	.request = lg_imap_request,
	.sent = lg_imap_sent,
	.received = lg_imap_received,
};
