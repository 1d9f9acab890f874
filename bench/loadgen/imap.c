/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen/imap: the IMAP session under the imap-* command modes. */
#include "imap.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/*
 * See imap.h. The reader is a byte loop over each received chunk except
 * for literals, which are skipped in one step: a FETCH of a large message
 * costs the client one memcpy-free pass per chunk, not a scan.
 *
 * The literal marker is recognised at the end of a line only: "{", one
 * or more digits, "}", CR, LF. brace walks 0 (none) -> 1 (in digits) ->
 * 2 (after "}") -> 3 (after CR); any other byte puts it back to 0, so
 * a "{" inside a quoted string followed by more text is no marker. (A
 * quoted string ending in "{5}" right before the CRLF would be taken for
 * one; no server sends that in reply to our commands.)
 */

enum imap_st {
	IMAP_GREETING,
	IMAP_LOGIN,
	IMAP_SELECT,
	IMAP_READY,
	IMAP_ENTER, /* the hold command sent, its "+" awaited */
	IMAP_HELD,
};

/* Literal counts above this are not IMAP we can be sent here. */
#define IMAP_LIT_MAX ((uint64_t)1 << 40)

static char *imap_login;
static char *imap_select;
static pthread_mutex_t imap_err_lock = PTHREAD_MUTEX_INITIALIZER;
static bool imap_err_shown;

/* An IMAP quoted string may not hold CR, LF or NUL; " and \ are escaped. */
static int quote(char *dst, size_t cap, const char *s)
{
	size_t j = 0;

	if (cap < 3)
		return -EINVAL;
	dst[j++] = '"';
	for (; *s != '\0'; s++) {
		if (*s == '\r' || *s == '\n' || j + 4 >= cap)
			return -EINVAL;
		if (*s == '"' || *s == '\\')
			dst[j++] = '\\';
		dst[j++] = *s;
	}
	dst[j++] = '"';
	dst[j] = '\0';
	return (int)j;
}

int lg_imap_init(const struct lg_opts *o)
{
	char u[256], p[256], m[256];
	size_t cap;

	if (o->tls) {
		(void)fprintf(stderr, "loadgen: %s is plaintext only\n",
			      o->mode->name);
		return -EINVAL;
	}
	if (o->user == NULL || o->pass == NULL) {
		(void)fprintf(stderr, "loadgen: %s needs -U and -P\n",
			      o->mode->name);
		return -EINVAL;
	}
	if (quote(u, sizeof(u), o->user) < 0 ||
	    quote(p, sizeof(p), o->pass) < 0 ||
	    quote(m, sizeof(m), o->mailbox != NULL ? o->mailbox : "INBOX") <
		    0) {
		(void)fprintf(stderr,
			      "loadgen: -U/-P/-M too long or with CR/LF\n");
		return -EINVAL;
	}
	cap = strlen(u) + strlen(p) + 16;
	imap_login = malloc(cap);
	if (imap_login == NULL)
		return -ENOMEM;
	(void)snprintf(imap_login, cap, "a LOGIN %s %s\r\n", u, p);
	cap = strlen(m) + 16;
	imap_select = malloc(cap);
	if (imap_select == NULL)
		return -ENOMEM;
	(void)snprintf(imap_select, cap, "b SELECT %s\r\n", m);
	return 0;
}

int lg_imap_conn_init(struct lg_conn *c, const struct lg_imap_kind *kind)
{
	struct lg_imap *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return -ENOMEM;
	s->kind = kind;
	c->priv = s;
	return 0;
}

void lg_imap_conn_fini(struct lg_conn *c)
{
	free(c->priv);
	c->priv = NULL;
}

/* The server speaks first: the greeting opens the session. */
int lg_imap_connected(struct lg_conn *c)
{
	(void)c;
	return 0;
}

/*
 * Send cmd (NUL-terminated, valid until sent). While opening, the reply
 * to the previous command may be seen before its send's completion; then
 * this one waits for sent().
 */
static int send_cmd(struct lg_conn *c, const char *cmd)
{
	struct lg_imap *s = c->priv;
	int ret;

	if (s->sending) {
		if (s->queued != NULL)
			return -EPROTO; /* replies ran ahead of two sends */
		s->queued = cmd;
		return 0;
	}
	ret = lg_conn_send(c, cmd, strlen(cmd));
	if (ret == 0)
		s->sending = true;
	return ret;
}

int lg_imap_request(struct lg_conn *c)
{
	struct lg_imap *s = c->priv;
	size_t cap = sizeof(s->cmd) - 4; /* "c " and CRLF */
	int ret;

	memcpy(s->cmd, "c ", 2);
	ret = s->kind->command(c, s->cmd + 2, cap);
	if (ret < 0)
		return ret;
	s->nreq++;
	(void)strcat(s->cmd, "\r\n");
	s->req = true;
	s->req_sent = false;
	s->req_replied = false;
	s->req_failed = false;
	s->lit_bytes = 0;
	s->saw_exists = false;
	return send_cmd(c, s->cmd);
}

/* Both halves of the request are in: count it and start the next. */
static int request_end(struct lg_conn *c)
{
	struct lg_imap *s = c->priv;

	s->req = false;
	lg_request_bytes(c, s->lit_bytes);
	if (!s->req_failed && s->kind->check != NULL && s->kind->check(c) < 0)
		s->req_failed = true;
	if (s->req_failed)
		lg_request_error(c);
	return lg_request_done(c);
}

int lg_imap_sent(struct lg_conn *c)
{
	struct lg_imap *s = c->priv;
	const char *next = s->queued;

	s->sending = false;
	s->queued = NULL;
	if (next != NULL)
		return send_cmd(c, next);
	if (s->req) {
		s->req_sent = true;
		if (s->req_replied)
			return request_end(c);
	}
	return 0;
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

	if (!starts(line, len, "* ") || i >= len || line[i] < '0' ||
	    line[i] > '9')
		return false;
	while (i < len && line[i] >= '0' && line[i] <= '9')
		v = v * 10 + (unsigned long)(line[i++] - '0');
	if (!starts(line + i, len - i, " EXISTS"))
		return false;
	*n = v;
	return true;
}

/* The tagged status of a line with tag `tag`: 0 OK, 1 not that tag, 2
 * NO or BAD, -EPROTO anything else. */
static int status(const char *line, unsigned len, char tag)
{
	if (len < 2 || line[0] != tag || line[1] != ' ')
		return 1;
	if (starts(line + 2, len - 2, "OK"))
		return 0;
	if (starts(line + 2, len - 2, "NO") || starts(line + 2, len - 2, "BAD"))
		return 2;
	return -EPROTO;
}

static void show_error(const struct lg_conn *c, const char *line, unsigned len)
{
	(void)pthread_mutex_lock(&imap_err_lock);
	if (!imap_err_shown)
		(void)fprintf(stderr,
			      "loadgen: connection %u: first failed reply "
			      "(more are only counted): %.*s\n",
			      c->index, (int)len, line);
	imap_err_shown = true;
	(void)pthread_mutex_unlock(&imap_err_lock);
}

/* One whole response: its first LG_IMAP_LINE bytes, CRLF stripped. */
static int response(struct lg_conn *c, const char *line, unsigned len)
{
	struct lg_imap *s = c->priv;
	unsigned long n;
	int ret;

	if (len == 0)
		return -EPROTO;
	if (starts(line, len, "* BYE"))
		return -ECONNRESET;
	if (s->st == IMAP_GREETING) {
		if (!starts(line, len, "* OK"))
			return -EPROTO;
		s->st = IMAP_LOGIN;
		return send_cmd(c, imap_login);
	}
	if (line[0] == '*') {
		if (is_exists(line, len, &n)) {
			s->exists = n;
			s->saw_exists = true;
			if (s->st == IMAP_HELD && s->kind->held_exists != NULL)
				s->kind->held_exists(c, n);
		}
		return 0;
	}
	if (line[0] == '+' && s->st == IMAP_ENTER) {
		s->st = IMAP_HELD;
		lg_conn_ready(c);
		return 0;
	}
	if (line[0] == '+')
		return -EPROTO; /* we never send a literal */
	switch (s->st) {
	case IMAP_LOGIN:
		ret = status(line, len, 'a');
		if (ret == 0) {
			s->st = IMAP_SELECT;
			return send_cmd(c, imap_select);
		}
		break;
	case IMAP_SELECT:
		ret = status(line, len, 'b');
		if (ret == 0 && s->kind->hold != NULL) {
			s->st = IMAP_ENTER;
			s->open_exists = s->exists;
			return send_cmd(c, s->kind->hold);
		}
		if (ret == 0) {
			s->st = IMAP_READY;
			s->open_exists = s->exists;
			lg_conn_ready(c);
			return 0;
		}
		break;
	case IMAP_ENTER:
		ret = status(line, len, 'c');
		break;
	case IMAP_HELD:
		return -EPROTO; /* the server ended the held command */
	default:
		ret = status(line, len, 'c');
		if (ret == 2) {
			show_error(c, line, len);
			s->req_failed = true;
			ret = 0;
		}
		if (ret == 0 && s->req && !s->req_replied) {
			s->req_replied = true;
			return s->req_sent ? request_end(c) : 0;
		}
		return -EPROTO; /* a reply to nothing we sent */
	}
	if (ret == 2) {
		show_error(c, line, len);
		return -EACCES;
	}
	return -EPROTO;
}

/* Track the literal marker over one byte of a line (see top). */
static void brace_step(struct lg_imap *s, unsigned char ch)
{
	if (ch == '{') {
		s->brace = 1;
		s->brace_n = 0;
	} else if (s->brace == 1 && ch >= '0' && ch <= '9') {
		/* Saturates: a count this large is refused at the LF. */
		if (s->brace_n < IMAP_LIT_MAX)
			s->brace_n = s->brace_n * 10 + (ch - '0');
	} else if (s->brace == 1 && ch == '}') {
		s->brace = 2;
	} else if (s->brace == 2 && ch == '\r') {
		s->brace = 3;
	} else {
		s->brace = 0;
	}
}

int lg_imap_received(struct lg_conn *c, const unsigned char *data, size_t n)
{
	struct lg_imap *s = c->priv;
	size_t i = 0;

	while (i < n) {
		unsigned char ch;
		unsigned len;
		int ret;

		if (s->lit_left > 0) {
			size_t k = n - i < s->lit_left ? n - i
						       : (size_t)s->lit_left;

			s->lit_left -= k;
			s->lit_bytes += k;
			i += k;
			continue;
		}
		ch = data[i++];
		if (ch != '\n') {
			if (s->len < LG_IMAP_LINE)
				s->head[s->len++] = (char)ch;
			brace_step(s, ch);
			continue;
		}
		if (s->brace == 3) {
			if (s->brace_n >= IMAP_LIT_MAX)
				return -EPROTO;
			/* The response goes on after brace_n bytes. */
			s->lit_left = s->brace_n;
			s->brace = 0;
			s->cont = true;
			continue;
		}
		len = s->len;
		/* A head cut short keeps its last byte; a whole one loses
		 * its CR. */
		if (!s->cont && len > 0 && len < LG_IMAP_LINE &&
		    s->head[len - 1] == '\r')
			len--;
		s->len = 0;
		s->cont = false;
		s->brace = 0;
		ret = response(c, s->head, len);
		if (ret < 0)
			return ret;
	}
	return 0;
}
