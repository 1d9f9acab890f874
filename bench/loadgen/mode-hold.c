/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen/mode-hold: one line each, echoed, then silence. */
#include "loadgen.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * For memory per parked connection (bench/park-mem.sh): each connection
 * sends one line of -s bytes (LF included) as it opens and waits for all
 * of it to come back before it counts as ready, so that the server has
 * read, answered and gone idle on every connection before the
 * measurement; then it says nothing more. -s 0 sends nothing (as idle).
 * With -W the server sees at most that many such exchanges per loadgen
 * worker at once. Like idle, anything the server sends after the echo,
 * or a close, ends the connection as failed.
 *
 * With -T the connection is TLS (tls.c): the handshake comes first, then
 * the line and its echo go as records, and only then is the connection
 * held. A server may still send records that carry no data (TLS 1.3
 * session tickets) after that; only application data, a close_notify or
 * a broken record end it. The session, with OpenSSL's state, stays with
 * the connection until it closes.
 */

struct hold_conn {
	size_t got; /* bytes of the echo so far */
	bool sent;
	bool done; /* the echo is complete: the server must now be silent */
	struct lg_tls *tls; /* -T: the session, from connected() on */
	bool handshaken;
};

/* Shared by all connections: the kernel only reads it. */
static unsigned char *hold_line;
static size_t hold_size;
static bool hold_tls;

static int hold_init(const struct lg_opts *o)
{
	hold_tls = o->tls;
	if (hold_tls) {
		int ret = lg_tls_global_init();

		if (ret < 0)
			return ret;
	}
	hold_size = o->size;
	if (hold_size == 0)
		return 0;
	hold_line = malloc(hold_size);
	if (hold_line == NULL)
		return -ENOMEM;
	for (size_t i = 0; i + 1 < hold_size; i++)
		hold_line[i] = (unsigned char)('a' + i % 26);
	hold_line[hold_size - 1] = '\n';
	return 0;
}

static int hold_conn_init(struct lg_conn *c)
{
	struct hold_conn *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return -ENOMEM;
	c->priv = h;
	return 0;
}

static void hold_conn_fini(struct lg_conn *c)
{
	struct hold_conn *h = c->priv;

	if (h != NULL)
		lg_tls_free(h->tls);
	free(h);
	c->priv = NULL;
}

/* Both the send and the whole echo are done: the connection is held. */
static void hold_maybe_ready(struct lg_conn *c)
{
	struct hold_conn *h = c->priv;

	if (h->sent && h->got == hold_size) {
		h->done = true;
		lg_conn_ready(c);
	}
}

static int hold_connected(struct lg_conn *c)
{
	struct hold_conn *h = c->priv;
	int ret;

	if (hold_tls) {
		ret = lg_tls_new(&h->tls);
		if (ret < 0)
			return ret;
		ret = lg_tls_handshake(h->tls); /* the ClientHello */
		if (ret < 0)
			return ret;
		return lg_tls_flush(h->tls, c);
	}
	if (hold_size == 0) {
		h->done = true;
		lg_conn_ready(c);
		return 0;
	}
	return lg_conn_send(c, hold_line, hold_size);
}

static int hold_sent(struct lg_conn *c)
{
	struct hold_conn *h = c->priv;

	if (hold_tls) {
		/* The line went out with or after the handshake's last
		 * flight; its echo is what counts. */
		lg_tls_sent(h->tls);
		return lg_tls_flush(h->tls, c);
	}
	h->sent = true;
	hold_maybe_ready(c);
	return 0;
}

/* Plaintext bytes of the echo: they must be the line's next ones. */
static int hold_echo(struct lg_conn *c, const unsigned char *data, size_t n)
{
	struct hold_conn *h = c->priv;

	if (h->done)
		return -EPROTO; /* the server spoke unasked */
	if (n > hold_size - h->got ||
	    memcmp(data, hold_line + h->got, n) != 0)
		return -EBADMSG;
	h->got += n;
	hold_maybe_ready(c);
	return 0;
}

/*
 * -T: records in. Until the handshake is done they feed it; when it is,
 * the line goes out (or, with -s 0, the connection is held at once).
 * Then whatever application data the records carry is the echo.
 */
static int hold_received_tls(struct lg_conn *c, const unsigned char *data,
			     size_t n)
{
	struct hold_conn *h = c->priv;
	unsigned char buf[4096];
	int ret;

	ret = lg_tls_feed(h->tls, data, n);
	if (ret < 0)
		return ret;
	if (!h->handshaken) {
		ret = lg_tls_handshake(h->tls);
		if (ret < 0)
			return ret;
		if (ret == 1) {
			h->handshaken = true;
			h->sent = true;
			if (hold_size > 0)
				ret = lg_tls_write(h->tls, hold_line,
						   hold_size);
			else
				hold_maybe_ready(c);
			if (ret < 0)
				return ret;
		}
	}
	while (h->handshaken) {
		ret = lg_tls_read(h->tls, buf, sizeof(buf));
		if (ret <= 0)
			break;
		ret = hold_echo(c, buf, (size_t)ret);
		if (ret < 0)
			return ret;
	}
	if (ret < 0)
		return ret;
	return lg_tls_flush(h->tls, c);
}

static int hold_received(struct lg_conn *c, const unsigned char *data, size_t n)
{
	if (hold_tls)
		return hold_received_tls(c, data, n);
	return hold_echo(c, data, n);
}

const struct lg_mode lg_mode_hold = {
	.name = "hold",
	.help = "open -c connections, each echoes one -s byte line (0: none),\n"
		"           then hold them silent for -d seconds; -T: over TLS",
	.init = hold_init,
	.conn_init = hold_conn_init,
	.conn_fini = hold_conn_fini,
	.connected = hold_connected,
	.sent = hold_sent,
	.received = hold_received,
};
