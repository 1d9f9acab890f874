/* SPDX-License-Identifier: BSD-3-Clause */
/* test/t-loadgen: a worker double for bench/loadgen's modes. */
#include "t-loadgen.h"

#include <string.h>

struct t_lg t_lg;

void t_lg_reset(void)
{
	memset(&t_lg, 0, sizeof(t_lg));
}

int lg_conn_send(struct lg_conn *c, const void *buf, size_t len)
{
	size_t room = T_LG_SENT - t_lg.sent_len;

	(void)c;
	memcpy(t_lg.sent + t_lg.sent_len, buf, len < room ? len : room);
	t_lg.sent_len += len < room ? len : room;
	t_lg.sent[t_lg.sent_len] = '\0';
	t_lg.sends++;
	return 0;
}

void lg_conn_ready(struct lg_conn *c)
{
	c->state = LG_CONN_READY;
	t_lg.ready++;
}

int lg_request_done(struct lg_conn *c)
{
	c->state = LG_CONN_READY;
	t_lg.done++;
	return 0;
}

void lg_request_error(struct lg_conn *c)
{
	(void)c;
	t_lg.errors++;
}

void lg_request_bytes(struct lg_conn *c, uint64_t n)
{
	(void)c;
	t_lg.bytes += n;
}
