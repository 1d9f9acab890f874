/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen/mode-echo: closed-loop echo, one message outstanding. */
#include "loadgen.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Each connection sends one message of size bytes, waits until all of it
 * has come back (checking the bytes), and sends the next. The reply may
 * complete before the send's CQE is seen: the request ends when both
 * have.
 */

struct echo_conn {
	size_t got;
	bool sent;
};

/* Shared by all connections: the kernel only reads it. */
static unsigned char *echo_msg;
static size_t echo_size;

static int echo_init(const struct lg_opts *o)
{
	if (o->size == 0) {
		(void)fprintf(stderr,
			      "loadgen: echo needs a size of 1 byte or more\n");
		return -EINVAL;
	}
	echo_size = o->size;
	echo_msg = malloc(echo_size);
	if (echo_msg == NULL)
		return -ENOMEM;
	/* Not all one byte value, so that a misplaced chunk shows. */
	for (size_t i = 0; i < echo_size; i++)
		echo_msg[i] = (unsigned char)('a' + i % 26);
	return 0;
}

static int echo_conn_init(struct lg_conn *c)
{
	struct echo_conn *e = malloc(sizeof(*e));

	if (e == NULL)
		return -ENOMEM;
	e->got = 0;
	e->sent = false;
	c->priv = e;
	return 0;
}

static void echo_conn_fini(struct lg_conn *c)
{
	free(c->priv);
	c->priv = NULL;
}

static int echo_request(struct lg_conn *c)
{
	struct echo_conn *e = c->priv;

	e->got = 0;
	e->sent = false;
	return lg_conn_send(c, echo_msg, echo_size);
}

static int echo_sent(struct lg_conn *c)
{
	struct echo_conn *e = c->priv;

	e->sent = true;
	if (e->got < echo_size)
		return 0;
	return lg_request_done(c);
}

static int echo_received(struct lg_conn *c, const unsigned char *data, size_t n)
{
	struct echo_conn *e = c->priv;

	/* More than was sent, or bytes out of place: a broken server. */
	if (n > echo_size - e->got || memcmp(data, echo_msg + e->got, n) != 0)
		return -EBADMSG;
	e->got += n;
	if (e->got < echo_size || !e->sent)
		return 0;
	return lg_request_done(c);
}

const struct lg_mode lg_mode_echo = {
	.name = "echo",
	.help = "closed loop: send -s bytes, wait for all of them back, repeat",
	.init = echo_init,
	.conn_init = echo_conn_init,
	.conn_fini = echo_conn_fini,
	.request = echo_request,
	.sent = echo_sent,
	.received = echo_received,
};
