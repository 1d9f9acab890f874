/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/lmtpd/session: one LMTP session (RFC 2033), written in the
 * blocking Cyrus style on c->in and c->out.
 *
 * PIPELINING costs nothing here: replies are printed into c->out and
 * c->in flushes c->out before it waits for more input (the runtime sets
 * prot_setflushonread), so a batch of pipelined commands is answered by
 * one send, and a lone command by one send as well.
 *
 * The one rule of delivery: a recipient's 250 after the final dot is
 * printed only after md_msg_deliver() returned 0 for it, that is after
 * the message is durable in its new/ (maildir.h). Everything before
 * that lives in a spool file that md_msg_free() unlinks, so a client
 * that vanishes mid-DATA, a message refused at its end, or a failed
 * write leaves nothing visible.
 *
 * Bare LF (a line ending in LF alone) is read as CR LF by default, in
 * commands and in DATA (where ".\n" ends the message too), as Postfix
 * long did. With lmtp_bare_lf=refuse a bare LF ends the session with
 * 550 5.5.2: once a client's line ends are in doubt, so is where its
 * message ends and its next command begins (SMTP smuggling), so
 * nothing after it is read as a command. In DATA the body is still read
 * to the end the reader sees, so that every recipient gets its 550
 * before the close; nothing of it is delivered. A bare CR is never a
 * line end: in DATA it is data and is stored as such; in a command it
 * is a byte of the line (and the parser refuses it). BDAT chunks are
 * counted bytes, not lines: they are taken as sent in either mode.
 *
 * Over-long command lines are read to their end and dropped (500); in
 * DATA, faults (NUL, a line over the limit, too many bytes) are noted
 * and the body is read to its final dot without storing more, so that
 * the session stays in step with a pipelining client, and each
 * recipient gets the refusal.
 */
#include "lmtpd.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ringprot/prot.h>

/* Unstuffed DATA is written to the store in pieces of this size. */
#define DATA_CHUNK 16384

struct rcpt {
	char user[LMTP_USER_MAX + 1];
	char folder[LMTP_USER_MAX + 1];
	char addr[LMTP_PATH_MAX + 1];
};

struct sess {
	struct srv_conn *c;
	const struct lmtp_config *cfg;
	char *line; /* cfg->cmd_max + 1 bytes */
	unsigned errors;
	bool lhlo;
	bool authed;
	/* The transaction. */
	bool mail;
	char from[LMTP_PATH_MAX + 1];
	enum lmtp_body body;
	struct rcpt *rcpts; /* heap: freed when the handler returns */
	unsigned nrcpt, cap;
	/* BDAT (RFC 3030): the message its chunks go to, and its faults
	 * (nul; size in bdat_faults.size). */
	bool bdat; /* a BDAT came in this transaction */
	struct md_msg *bdat_msg;
	struct lmtp_dot bdat_faults;
	int bdat_err;
};

static void reply(struct sess *s, const char *text)
{
	if (prot_printf(s->c->out, "%s\r\n", text) == EOF) {
		/* A write error is sticky: the next read ends the session. */
	}
}

static void replyf(struct sess *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void replyf(struct sess *s, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = prot_vprintf(s->c->out, fmt, ap);
	va_end(ap);
	if (r == EOF || prot_puts(s->c->out, "\r\n") == EOF) {
		/* As in reply(). */
	}
}

static void txn_reset(struct sess *s)
{
	md_msg_free(&s->bdat_msg); /* unlinks a spool copy never delivered */
	s->bdat = false;
	s->bdat_err = 0;
	lmtp_dot_init(&s->bdat_faults, 0);
	s->mail = false;
	s->from[0] = '\0';
	s->body = LMTP_BODY_7BIT;
	s->nrcpt = 0;
}

/*
 * Read one command line into s->line (CR LF dropped). Returns its
 * length; -EMSGSIZE (read to its end, dropped); -EILSEQ (it held a NUL
 * byte); -EBADMSG (it ended in a bare LF and lmtp_bare_lf=refuse);
 * -ENOTCONN at the end of input; the stream's -errno.
 */
static int read_line(struct sess *s, char *buf, size_t max)
{
	struct protstream *in = s->c->in;
	size_t n = 0;
	bool over = false, nul = false;
	int ch;

	while ((ch = prot_getc(in)) != EOF && ch != '\n') {
		if (ch == '\0')
			nul = true;
		if (n < max)
			buf[n++] = (char)ch;
		else
			over = true;
	}
	if (ch == EOF) {
		if (prot_IS_ERROR(in))
			return prot_errno(in);
		return -ENOTCONN; /* a last line without LF is dropped */
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	else if (s->cfg->bare_lf_refuse)
		return -EBADMSG; /* over-long or not: the line end decides */
	buf[n] = '\0';
	if (over)
		return -EMSGSIZE;
	if (nul)
		return -EILSEQ;
	return (int)n;
}

/* The reply for a store error of a recipient (RFC 3463 codes). */
static const char *store_error(int err)
{
	switch (err) {
	case -ENOSPC:
	case -EDQUOT:
		return "452 4.3.1 Insufficient system storage";
	case -EFBIG:
		return "552 5.3.4 Message too big for the mailbox";
	case -ENOENT:
		return "550 5.1.1 User unknown";
	case -EINVAL:
		return "550 5.1.3 Bad recipient address";
	default:
		return "451 4.3.0 Local error in processing";
	}
}

static void do_lhlo(struct sess *s)
{
	const struct lmtp_config *cfg = s->cfg;
	struct protstream *out = s->c->out;
	const char *mechs = NULL;

	txn_reset(s);
	s->lhlo = true;
	if (prot_printf(out, "250-%s\r\n", cfg->hostname) == EOF)
		return;
	if (cfg->starttls && !s->c->tls)
		(void)prot_puts(out, "250-STARTTLS\r\n");
	if (cfg->auth && !s->authed && srv_conn_sasl_mechs(s->c, &mechs) > 0)
		(void)prot_printf(out, "250-AUTH %s\r\n", mechs);
	if (cfg->max_size != 0)
		(void)prot_printf(out, "250-SIZE %" PRIu64 "\r\n",
				  cfg->max_size);
	else
		(void)prot_puts(out, "250-SIZE\r\n");
	if (cfg->chunking)
		(void)prot_puts(out, "250-CHUNKING\r\n");
	(void)prot_puts(out, "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
			     "250 PIPELINING\r\n");
}

static void do_mail(struct sess *s, const struct lmtp_cmd *cmd)
{
	if (!s->lhlo) {
		reply(s, "503 5.5.1 Send LHLO first");
		return;
	}
	if (s->mail) {
		reply(s, "503 5.5.1 Nested MAIL command");
		return;
	}
	if (cmd->body == LMTP_BODY_BINARYMIME) {
		reply(s, "504 5.5.4 BINARYMIME is not offered");
		return;
	}
	if (cmd->has_size && s->cfg->max_size != 0 &&
	    cmd->size > s->cfg->max_size) {
		reply(s, "552 5.3.4 Message size exceeds fixed maximum "
			 "message size");
		return;
	}
	s->mail = true;
	memcpy(s->from, cmd->path, sizeof(s->from));
	s->body = cmd->body;
	reply(s, "250 2.1.0 Sender ok");
}

static int add_rcpt(struct sess *s, struct rcpt **r_out)
{
	if (s->nrcpt == s->cap) {
		unsigned cap = s->cap ? s->cap * 2 : 8;
		struct rcpt *n;

		if (cap > s->cfg->max_rcpts)
			cap = s->cfg->max_rcpts;
		n = realloc(s->rcpts, cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		s->rcpts = n;
		s->cap = cap;
	}
	*r_out = &s->rcpts[s->nrcpt];
	return 0;
}

static void do_rcpt(struct sess *s, const struct lmtp_cmd *cmd)
{
	struct rcpt *r;
	int ret;

	if (!s->mail) {
		reply(s, "503 5.5.1 Need MAIL command");
		return;
	}
	if (s->nrcpt >= s->cfg->max_rcpts) {
		reply(s, "452 4.5.3 Too many recipients");
		return;
	}
	if (add_rcpt(s, &r) < 0) {
		reply(s, "451 4.3.0 Out of memory");
		return;
	}
	if (lmtp_rcpt_map(cmd->path, &s->cfg->map, r->user, r->folder) < 0) {
		reply(s, "550 5.1.3 Bad recipient address syntax");
		return;
	}
	ret = md_user_exists(s->cfg->store, r->user);
	if (ret == 0) {
		replyf(s, "550 5.1.1 <%s> User unknown", cmd->path);
		return;
	}
	if (ret < 0) {
		reply(s, ret == -EINVAL ? "550 5.1.3 Bad recipient address"
					: "451 4.3.0 Cannot check recipient");
		return;
	}
	memcpy(r->addr, cmd->path, sizeof(r->addr));
	s->nrcpt++;
	reply(s, "250 2.1.5 Recipient ok");
}

/* Return-Path always, Delivered-To for a single recipient (maildir.h:
 * headers that differ per recipient cannot be in the shared copy). */
static int write_headers(struct sess *s, struct md_msg *m)
{
	char hdr[2 * LMTP_PATH_MAX + 64];
	int n;

	if (s->nrcpt == 1)
		n = snprintf(hdr, sizeof(hdr),
			     "Return-Path: <%s>\r\nDelivered-To: %s\r\n",
			     s->from, s->rcpts[0].addr);
	else
		n = snprintf(hdr, sizeof(hdr), "Return-Path: <%s>\r\n",
			     s->from);
	if (n < 0 || (size_t)n >= sizeof(hdr))
		return -EOVERFLOW;
	return md_msg_write_crlf(m, hdr, (size_t)n);
}

/*
 * The body up to its final dot, through the DATA reader, into m (while
 * *err is 0 and no fault was seen). Returns 0 when the final dot was
 * read, or the stream's -errno / -ENOTCONN (the client is gone).
 */
static int read_body(struct sess *s, struct md_msg *m, struct lmtp_dot *d,
		     int *err)
{
	struct protstream *in = s->c->in;
	uint8_t *out = malloc(DATA_CHUNK);
	uint64_t max = s->cfg->max_size;
	int ret = 0;

	if (out == NULL) {
		*err = -ENOMEM;
		return -ENOMEM;
	}
	while (!d->done) {
		size_t used, olen;
		int ch = prot_getc(in);

		if (ch == EOF) {
			ret = prot_IS_ERROR(in) ? prot_errno(in) : -ENOTCONN;
			break;
		}
		/*
		 * Feed what the stream holds (read-only use of its window)
		 * and then consume exactly what the reader took: bytes after
		 * the final dot are the next pipelined command's.
		 */
		(void)prot_ungetc(ch, in);
		used = lmtp_dot_feed(d, in->ptr, in->cnt, out, DATA_CHUNK,
				     &olen);
		for (size_t left = used; left > 0;) {
			char skip[512];
			int n = prot_read(in, skip,
					  left < sizeof(skip) ? (unsigned)left
							      : sizeof(skip));

			if (n <= 0)
				break; /* cannot happen: the bytes are there */
			left -= (size_t)n;
		}
		if (max != 0 && d->size > max)
			*err = -EFBIG;
		if (d->bare_lf && s->cfg->bare_lf_refuse)
			olen = 0; /* refused at the end: store no more */
		if (*err == 0 && !d->nul && !d->long_line && olen > 0)
			*err = md_msg_write_crlf(m, out, olen);
	}
	free(out);
	return ret;
}

#define E_BARE_LF "550 5.5.2 Bare <LF> received, closing connection"

/* One reply per accepted recipient, after the final dot. */
static void deliver_all(struct sess *s, struct md_msg *m,
			const struct lmtp_dot *d, int err)
{
	char why[64];
	const char *fail = NULL;

	if (d->bare_lf && s->cfg->bare_lf_refuse)
		fail = E_BARE_LF;
	else if (err == -EFBIG)
		fail = "552 5.3.4 Message size exceeds fixed maximum "
		       "message size";
	else if (d->nul)
		fail = "554 5.6.0 Message contains NUL bytes";
	else if (d->long_line) {
		(void)snprintf(why, sizeof(why),
			       "554 5.6.0 Line longer than %u bytes",
			       s->cfg->line_max);
		fail = why;
	} else if (err < 0)
		fail = store_error(err);
	else if ((err = md_msg_finish(m)) < 0)
		fail = store_error(err);
	for (unsigned i = 0; i < s->nrcpt; i++) {
		const struct rcpt *r = &s->rcpts[i];
		int ret;

		if (fail != NULL) {
			replyf(s, "%s", fail);
			continue;
		}
		ret = md_msg_deliver(m, r->user,
				     r->folder[0] != '\0' ? r->folder : NULL,
				     NULL, 0);
		if (ret == 0)
			replyf(s, "250 2.0.0 <%s> Delivered", r->addr);
		else
			replyf(s, "%s", store_error(ret));
	}
}

/* DATA. Returns 0, 1 (a refused bare LF: close), or -errno when the
 * session must end. */
static int do_data(struct sess *s)
{
	struct md_msg *m = NULL;
	struct lmtp_dot d;
	int ret, err = 0;

	if (!s->mail) {
		reply(s, "503 5.5.1 Need MAIL command");
		return 0;
	}
	if (s->nrcpt == 0) {
		reply(s, "503 5.5.1 No valid recipients");
		return 0;
	}
	if (s->bdat) {
		reply(s, "503 5.5.1 DATA after BDAT");
		return 0;
	}
	ret = md_msg_new(s->cfg->store, &m);
	if (ret == 0)
		ret = write_headers(s, m);
	if (ret < 0) {
		md_msg_free(&m);
		reply(s, store_error(ret == -ENOENT ? -EIO : ret));
		return 0;
	}
	reply(s, "354 Start mail input; end with <CRLF>.<CRLF>");
	lmtp_dot_init(&d, s->cfg->line_max);
	ret = read_body(s, m, &d, &err);
	if (ret < 0) {
		md_msg_free(&m); /* gone mid-DATA: nothing was delivered */
		return ret;
	}
	deliver_all(s, m, &d, err);
	md_msg_free(&m);
	txn_reset(s);
	return d.bare_lf && s->cfg->bare_lf_refuse ? 1 : 0;
}

/*
 * BDAT size [LAST] (RFC 3030). The chunk's bytes are read whatever the
 * answer (the client sends them without waiting), into the message
 * while no fault was seen; LAST delivers as the final dot does.
 * Returns 0, or -errno when the session must end.
 */
static int do_bdat(struct sess *s, const struct lmtp_cmd *cmd)
{
	struct protstream *in = s->c->in;
	uint64_t left = cmd->chunk, max = s->cfg->max_size;
	bool ok = s->mail && s->nrcpt > 0 && s->cfg->chunking;
	char buf[4096];

	if (ok && !s->bdat) {
		s->bdat = true;
		s->bdat_err = md_msg_new(s->cfg->store, &s->bdat_msg);
		if (s->bdat_err == 0)
			s->bdat_err = write_headers(s, s->bdat_msg);
	}
	while (left > 0) {
		unsigned want =
			left < sizeof(buf) ? (unsigned)left : sizeof(buf);
		int n = prot_read(in, buf, want);

		if (n <= 0)
			return prot_IS_ERROR(in) ? prot_errno(in) : -ENOTCONN;
		left -= (uint64_t)n;
		if (!ok)
			continue;
		s->bdat_faults.size += (uint64_t)n;
		if (memchr(buf, '\0', (size_t)n) != NULL)
			s->bdat_faults.nul = true;
		if (max != 0 && s->bdat_faults.size > max)
			s->bdat_err = -EFBIG;
		if (s->bdat_err == 0 && !s->bdat_faults.nul)
			s->bdat_err =
				md_msg_write_crlf(s->bdat_msg, buf, (size_t)n);
	}
	if (!s->cfg->chunking) {
		reply(s, "502 5.5.1 CHUNKING not offered");
		return 0;
	}
	if (!ok) {
		reply(s, s->mail ? "503 5.5.1 No valid recipients"
				 : "503 5.5.1 Need MAIL command");
		return 0;
	}
	if (!cmd->last) {
		replyf(s, "250 2.0.0 %" PRIu64 " octets received", cmd->chunk);
		return 0;
	}
	deliver_all(s, s->bdat_msg, &s->bdat_faults, s->bdat_err);
	txn_reset(s);
	return 0;
}

static int send_challenge(struct srv_conn *c, const char *b64)
{
	if (prot_printf(c->out, "334 %s\r\n", b64) == EOF ||
	    prot_flush(c->out) == EOF)
		return prot_errno(c->out) < 0 ? prot_errno(c->out) : -EIO;
	return 0;
}

static ssize_t read_response(struct srv_conn *c, char *buf, size_t size)
{
	struct sess *s = c->data;
	int n = read_line(s, buf, size - 1);

	return n == -EILSEQ ? -EPROTO : n;
}

static const struct srv_sasl_io sasl_io = {
	.send_challenge = send_challenge,
	.read_response = read_response,
};

/* AUTH mech [initial-response] (RFC 4954). -errno ends the session. */
static int do_auth(struct sess *s, const struct lmtp_cmd *cmd)
{
	char mech[64];
	const char *initial = NULL, *user = NULL;
	const char *sp = strchr(cmd->arg, ' ');
	size_t n = sp != NULL ? (size_t)(sp - cmd->arg) : strlen(cmd->arg);
	int ret;

	if (!s->cfg->auth) {
		reply(s, "502 5.5.1 AUTH not available");
		return 0;
	}
	if (!s->lhlo || s->authed || s->mail) {
		reply(s, "503 5.5.1 AUTH not allowed now");
		return 0;
	}
	if (n >= sizeof(mech)) {
		reply(s, "504 5.5.4 Unrecognized authentication type");
		return 0;
	}
	memcpy(mech, cmd->arg, n);
	mech[n] = '\0';
	if (sp != NULL)
		initial = sp + 1;
	ret = srv_conn_authenticate(s->c, mech, initial, &sasl_io, &user);
	switch (ret) {
	case 0:
		s->authed = true;
		reply(s, "235 2.7.0 Authentication successful");
		return 0;
	case -EACCES:
		reply(s, "535 5.7.8 Authentication credentials invalid");
		return 0;
	case -ECANCELED:
		reply(s, "501 5.0.0 Authentication cancelled");
		return 0;
	case -EPROTO:
		reply(s, "501 5.5.2 Cannot decode response");
		return 0;
	case -ENOPROTOOPT:
		reply(s, "504 5.5.4 Unrecognized authentication type");
		return 0;
	case -EMSGSIZE:
		reply(s, "500 5.5.6 Authentication exchange line too long");
		return 0;
	case -ENOTSUP:
		reply(s, "454 4.7.0 Temporary authentication failure");
		return 0;
	default:
		return ret; /* the connection failed */
	}
}

/* STARTTLS (RFC 3207). -errno ends the session. */
static int do_starttls(struct sess *s)
{
	int ret;

	if (!s->cfg->starttls) {
		reply(s, "502 5.5.1 STARTTLS not available");
		return 0;
	}
	if (s->c->tls) {
		reply(s, "503 5.5.1 TLS already active");
		return 0;
	}
	/* Plaintext pipelined after STARTTLS must not be read as if it
	 * came over TLS (the STARTTLS command injection of 2011). */
	if (prot_input_pending(s->c->in)) {
		reply(s, "501 5.5.4 Nothing may follow STARTTLS");
		return -EPROTO;
	}
	reply(s, "220 2.0.0 Ready to start TLS");
	if (prot_flush(s->c->out) == EOF)
		return prot_errno(s->c->out);
	ret = srv_conn_starttls(s->c);
	if (ret < 0)
		return ret;
	s->lhlo = false; /* RFC 3207 §4.2: forget what came before */
	s->authed = false;
	txn_reset(s);
	return 0;
}

/* One parsed command. -errno (or 1 for QUIT) ends the session. */
static int dispatch(struct sess *s, const struct lmtp_cmd *cmd)
{
	switch (cmd->verb) {
	case LMTP_LHLO:
		do_lhlo(s);
		return 0;
	case LMTP_HELO:
		reply(s, "500 5.5.1 This is LMTP: use LHLO");
		return 0;
	case LMTP_MAIL:
		do_mail(s, cmd);
		return 0;
	case LMTP_RCPT:
		do_rcpt(s, cmd);
		return 0;
	case LMTP_DATA:
		return do_data(s);
	case LMTP_BDAT:
		return do_bdat(s, cmd);
	case LMTP_RSET:
		txn_reset(s);
		reply(s, "250 2.0.0 Ok");
		return 0;
	case LMTP_NOOP:
		reply(s, "250 2.0.0 Ok");
		return 0;
	case LMTP_QUIT:
		reply(s, "221 2.0.0 Bye");
		return 1;
	case LMTP_VRFY:
		reply(s, s->cfg->vrfy ? "252 2.5.2 Cannot VRFY user, but "
					"will accept message and attempt "
					"delivery"
				      : "502 5.5.1 VRFY disabled");
		return 0;
	case LMTP_STARTTLS:
		return do_starttls(s);
	case LMTP_AUTH:
		return do_auth(s, cmd);
	case LMTP_HELP:
		reply(s, "214 2.0.0 See RFC 2033");
		return 0;
	default:
		reply(s, "502 5.5.1 Command not implemented");
		return 0;
	}
}

/* A refused line: counted; past the limit the session ends (421). */
static int refuse(struct sess *s, const char *text)
{
	reply(s, text);
	if (++s->errors > s->cfg->max_errors) {
		reply(s, "421 4.7.0 Too many errors, closing connection");
		return 1;
	}
	return 0;
}

/* Commands until QUIT, the end of input or an error. */
static int serve(struct sess *s)
{
	const struct lmtp_config *cfg = s->cfg;
	int ret = 0;

	while (ret == 0) {
		struct lmtp_cmd cmd;
		int n = read_line(s, s->line, cfg->cmd_max - 2);

		if (n == -EMSGSIZE) {
			ret = refuse(s, "500 5.5.2 Line too long");
		} else if (n == -EILSEQ) {
			ret = refuse(s, "500 5.5.2 NUL byte in command");
		} else if (n == -EBADMSG) {
			reply(s, E_BARE_LF);
			return 0;
		} else if (n == -ETIMEDOUT) {
			reply(s, "421 4.4.2 Idle timeout, closing connection");
			return 0;
		} else if (n == -ENOTCONN) {
			return 0;
		} else if (n < 0) {
			return n;
		} else if (lmtp_cmd_parse(s->line, (size_t)n, &cmd) < 0) {
			ret = refuse(s, cmd.error);
		} else {
			ret = dispatch(s, &cmd);
		}
	}
	return ret < 0 ? ret : 0;
}

int lmtp_session_run(struct srv_conn *c)
{
	const struct lmtp_config *cfg = srv_service_data(c->service);
	struct sess *s = srv_conn_alloc(c, sizeof(*s));
	int ret;

	if (s == NULL || (s->line = srv_conn_alloc(c, cfg->cmd_max)) == NULL)
		return -ENOMEM;
	s->c = c;
	s->cfg = cfg;
	c->data = s;
	replyf(s, "220 %s LMTP ringprot-lmtpd ready", cfg->hostname);
	ret = serve(s);
	txn_reset(s);
	free(s->rcpts);
	return ret;
}
