/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen/mode-imap-idle: IMAP sessions parked in IDLE. */
#include "loadgen.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/*
 * For memory per IDLE connection and for push latency (bench/imap-idle.sh):
 * each connection reads the greeting, logs in (-U, -P), selects INBOX and
 * enters IDLE; it counts as ready when the server's "+ " continuation
 * arrives, so the server has done all of its session work on every
 * connection before the measurement. Then the client is silent.
 *
 * While held, every "* n EXISTS" is printed at once as
 * "exists: conn=I n=N t_ns=T", T being CLOCK_MONOTONIC at its arrival,
 * so that a driver that delivers mail (and stamps its LMTP replies with
 * the same clock, e.g. Python's time.monotonic_ns) can compute the push
 * delay. Keepalives ("* OK ...") and other untagged data are ignored; a
 * BYE, a tagged reply (the server ended IDLE) or a close ends the
 * connection as failed.
 *
 * Responses are taken a line at a time, whatever the chunking: a line is
 * collected up to IDLE_LINE bytes (only its start matters to us; the rest
 * of a longer one is dropped) and looked at when its LF arrives. Literals
 * are not expected from LOGIN, SELECT or IDLE and are not followed.
 */

#define IDLE_LINE 128

enum idle_state {
	IDLE_GREETING,
	IDLE_LOGIN,
	IDLE_SELECT,
	IDLE_ENTER,
	IDLE_HOLD,
};

struct idle_conn {
	enum idle_state st;
	unsigned len;	     /* bytes in line (capped at IDLE_LINE) */
	bool sending;	     /* a send is in flight */
	const char *queued;  /* the next command, once that send is done */
	char line[IDLE_LINE];
};

/* Commands, shared by all connections: the kernel only reads them. */
static char *idle_login;
static const char idle_select[] = "b SELECT INBOX\r\n";
static const char idle_idle[] = "c IDLE\r\n";
static pthread_mutex_t idle_out_lock = PTHREAD_MUTEX_INITIALIZER;

/* An IMAP quoted string may not hold CR, LF or NUL; " and \ are escaped. */
static int quote(char *dst, size_t cap, const char *s)
{
	size_t j = 0;

	if (j + 1 >= cap)
		return -EINVAL;
	dst[j++] = '"';
	for (; *s != '\0'; s++) {
		if (*s == '\r' || *s == '\n')
			return -EINVAL;
		if (j + 3 >= cap)
			return -EINVAL;
		if (*s == '"' || *s == '\\')
			dst[j++] = '\\';
		dst[j++] = *s;
	}
	dst[j++] = '"';
	dst[j] = '\0';
	return (int)j;
}

static int idle_init(const struct lg_opts *o)
{
	char u[512], p[512];
	size_t cap;

	if (o->tls) {
		(void)fprintf(stderr, "loadgen: imap-idle is plaintext only\n");
		return -EINVAL;
	}
	if (o->user == NULL || o->pass == NULL) {
		(void)fprintf(stderr, "loadgen: imap-idle needs -U and -P\n");
		return -EINVAL;
	}
	if (quote(u, sizeof(u), o->user) < 0 ||
	    quote(p, sizeof(p), o->pass) < 0) {
		(void)fprintf(stderr, "loadgen: -U/-P too long or with CR/LF\n");
		return -EINVAL;
	}
	cap = strlen(u) + strlen(p) + 16;
	idle_login = malloc(cap);
	if (idle_login == NULL)
		return -ENOMEM;
	(void)snprintf(idle_login, cap, "a LOGIN %s %s\r\n", u, p);
	return 0;
}

static int idle_conn_init(struct lg_conn *c)
{
	struct idle_conn *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return -ENOMEM;
	c->priv = h;
	return 0;
}

static void idle_conn_fini(struct lg_conn *c)
{
	free(c->priv);
	c->priv = NULL;
}

/* The server speaks first: the greeting opens the session. */
static int idle_connected(struct lg_conn *c)
{
	(void)c;
	return 0;
}

/*
 * Send a command. The reply to the previous one may arrive before its
 * send's completion is seen; then this one waits for sent().
 */
static int idle_send(struct lg_conn *c, const char *cmd)
{
	struct idle_conn *h = c->priv;
	int ret;

	if (h->sending) {
		if (h->queued != NULL)
			return -EPROTO; /* replies ran ahead of two sends */
		h->queued = cmd;
		return 0;
	}
	ret = lg_conn_send(c, cmd, strlen(cmd));
	if (ret == 0)
		h->sending = true;
	return ret;
}

static int idle_sent(struct lg_conn *c)
{
	struct idle_conn *h = c->priv;
	const char *next = h->queued;

	h->sending = false;
	h->queued = NULL;
	return next != NULL ? idle_send(c, next) : 0;
}

static bool starts(const char *line, unsigned len, const char *p)
{
	size_t n = strlen(p);

	return len >= n && strncasecmp(line, p, n) == 0;
}

/* "* n EXISTS": n into *n. */
static bool is_exists(const char *line, unsigned len, unsigned long *n)
{
	unsigned i = 2;
	unsigned long v = 0;

	if (!starts(line, len, "* ") || i >= len ||
	    line[i] < '0' || line[i] > '9')
		return false;
	while (i < len && line[i] >= '0' && line[i] <= '9')
		v = v * 10 + (unsigned long)(line[i++] - '0');
	if (!starts(line + i, len - i, " EXISTS"))
		return false;
	*n = v;
	return true;
}

/* The reply to tagged command `tag`: 0 OK, 1 not that tag, <0 failed. */
static int tagged(const char *line, unsigned len, char tag)
{
	if (len < 2 || line[0] != tag || line[1] != ' ')
		return 1;
	return starts(line + 2, len - 2, "OK") ? 0 : -EACCES;
}

/* One whole line (CRLF stripped, possibly cut at IDLE_LINE). */
static int idle_line(struct lg_conn *c, const char *line, unsigned len)
{
	struct idle_conn *h = c->priv;
	unsigned long n;
	int ret;

	if (starts(line, len, "* BYE"))
		return -ECONNRESET;
	switch (h->st) {
	case IDLE_GREETING:
		if (!starts(line, len, "* OK"))
			return -EPROTO;
		h->st = IDLE_LOGIN;
		return idle_send(c, idle_login);
	case IDLE_LOGIN:
		ret = tagged(line, len, 'a');
		if (ret != 0)
			return ret < 0 ? ret : 0;
		h->st = IDLE_SELECT;
		return idle_send(c, idle_select);
	case IDLE_SELECT:
		ret = tagged(line, len, 'b');
		if (ret != 0)
			return ret < 0 ? ret : 0;
		h->st = IDLE_ENTER;
		return idle_send(c, idle_idle);
	case IDLE_ENTER:
		if (starts(line, len, "+")) {
			h->st = IDLE_HOLD;
			lg_conn_ready(c);
			return 0;
		}
		/* Untagged data before the continuation is allowed. */
		return line[0] == '*' ? 0 : -EPROTO;
	case IDLE_HOLD:
		if (is_exists(line, len, &n)) {
			uint64_t t = lg_now_ns();

			(void)pthread_mutex_lock(&idle_out_lock);
			printf("exists: conn=%u n=%lu t_ns=%" PRIu64 "\n",
			       c->index, n, t);
			(void)fflush(stdout);
			(void)pthread_mutex_unlock(&idle_out_lock);
			return 0;
		}
		/* Keepalives and other untagged data; a tagged reply
		 * means the server ended IDLE. */
		return line[0] == '*' ? 0 : -EPROTO;
	}
	return -EPROTO;
}

static int idle_received(struct lg_conn *c, const unsigned char *data, size_t n)
{
	struct idle_conn *h = c->priv;

	for (size_t i = 0; i < n; i++) {
		unsigned len;
		int ret;

		if (data[i] != '\n') {
			if (h->len < IDLE_LINE)
				h->line[h->len] = (char)data[i];
			if (h->len < IDLE_LINE + 1)
				h->len++;
			continue;
		}
		len = h->len < IDLE_LINE ? h->len : IDLE_LINE;
		if (len > 0 && h->len <= IDLE_LINE && h->line[len - 1] == '\r')
			len--;
		h->len = 0;
		if (len == 0)
			return -EPROTO;
		ret = idle_line(c, h->line, len);
		if (ret < 0)
			return ret;
	}
	return 0;
}

const struct lg_mode lg_mode_imap_idle = {
	.name = "imap-idle",
	.help = "IMAP: greeting, LOGIN -U -P, SELECT INBOX, IDLE; held once\n"
		"           \"+ \" arrives; prints \"exists: conn=I n=N t_ns=T\"\n"
		"           (CLOCK_MONOTONIC) for each * N EXISTS while held",
	.init = idle_init,
	.conn_init = idle_conn_init,
	.conn_fini = idle_conn_fini,
	.connected = idle_connected,
	.sent = idle_sent,
	.received = idle_received,
};
