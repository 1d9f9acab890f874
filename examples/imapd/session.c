/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/imapd/session: one IMAP4rev1 session (RFC 3501), written in
 * the blocking Cyrus style on c->in and c->out, and the commands of any
 * state and of the not-authenticated state. A client that sends ENABLE
 * IMAP4rev2 gets RFC 9051's behaviour from then on (imap_rev2(s): no
 * \Recent, ESEARCH answers, UTF-8 names, LIST at SELECT, CLOSED); the
 * extensions IMAP4rev2 includes are offered to both.
 *
 * How a later file adds commands (mailbox state: SELECT, FETCH...):
 *
 *  1. Write int cmd_fetch(struct imap_sess *s, const char *tag) in its
 *     own file and declare it in imapd.h. It reads its arguments with
 *     imap_args(s, &first) (or imap_lex_args(&s->lx,
 *     IMAP_LEX_LITERAL_SIZE, &first) for APPEND, which then reads the
 *     literal's bytes from s->c->in itself), checks them with the
 *     parsers of parse.h, using s->pool for anything per command
 *     (reset before each one), and answers.
 *  2. Add a row to cmds[] below: name, the states where it is valid
 *     (IMAP_STATE_* bits), whether "UID <name>" is valid too (s->uid
 *     says which form came).
 *
 *  A command may use: s->c (streams, peer), s->cfg (settings, the
 *  store), s->user (after login), s->state (SELECT sets
 *  IMAP_STATE_SELECTED, CLOSE/UNSELECT set IMAP_STATE_AUTH), s->mbox and
 *  s->mbox_close (the selected mailbox: the session calls mbox_close
 *  when it ends; SELECT, CLOSE and UNSELECT call it themselves before
 *  they replace or drop it), s->enabled (ENABLE), s->pool and
 *  s->lx.utf8. Untagged responses: imap_untagged(s, "%u EXISTS", n),
 *  or prot_printf/prot_write/prot_printliteral on s->c->out for
 *  literals and big data; the tagged reply last: imap_tagged(s, tag,
 *  "OK", "FETCH completed"). On a syntax error return -EPROTO with
 *  s->lx.err set (the parsers' err_out can point there): the session
 *  answers BAD and skips the rest of the line. Output is buffered and
 *  flushed when the session next waits for input.
 *
 *  A command that parks the connection (IDLE) returns IMAP_PARK: the
 *  loop frees the command pool and returns srv_park(c, resume); the
 *  session (c->data, in the connection's arena) is kept, and resume
 *  finishes the command and goes on with imap_session_continue().
 *
 * Errors: each BAD counts; past imap_max_errors the session ends with
 * BYE. An over-long line is read to its end and answered BAD (RFC 3501
 * lets a server close instead; staying costs nothing but the read). A
 * {n+} literal over its limit cannot be skipped without reading it, so
 * it ends the session after the BAD.
 *
 * STARTTLS: bytes the client sent after the STARTTLS line, before the
 * handshake, are plaintext an attacker may have injected
 * (CVE-2011-0411): prot_settls discards them and they are never read
 * as commands; the session logs them.
 */
#include "imapd.h"
#include "mbox.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#include <ringprot/prot-layer.h>
#include <ringprot/prot.h>
#include <ringprot/srv-log.h>

/* AUTHENTICATE responses: a line of base64 (SASL's own limit is 64k). */
#define SASL_LINE_MAX 16384

void imap_tagged(struct imap_sess *s, const char *tag, const char *result,
		 const char *fmt, ...)
{
	va_list ap;

	if (strcmp(result, "BAD") == 0)
		s->errors++;
	if (prot_printf(s->c->out, "%s %s ", tag, result) == EOF)
		return;
	va_start(ap, fmt);
	(void)prot_vprintf(s->c->out, fmt, ap);
	va_end(ap);
	(void)prot_puts(s->c->out, "\r\n");
}

void imap_untagged(struct imap_sess *s, const char *fmt, ...)
{
	va_list ap;

	if (prot_puts(s->c->out, "* ") == EOF)
		return;
	va_start(ap, fmt);
	(void)prot_vprintf(s->c->out, fmt, ap);
	va_end(ap);
	(void)prot_puts(s->c->out, "\r\n");
}

int imap_args(struct imap_sess *s, struct imap_arg **first_out)
{
	*first_out = NULL;
	if (s->lx.eol)
		return 0;
	return imap_lex_args(&s->lx, 0, first_out);
}

/* No arguments allowed: 0, or -EPROTO (the line is skipped later). */
static int no_args(struct imap_sess *s)
{
	if (s->lx.eol)
		return 0;
	s->lx.err = "Unexpected arguments";
	return -EPROTO;
}

void imap_print_capability(struct imap_sess *s)
{
	const struct imap_config *cfg = s->cfg;
	struct protstream *out = s->c->out;
	const char *mechs = NULL;

	(void)prot_printf(out,
			  "IMAP4rev1 IMAP4rev2 %s SASL-IR ID ENABLE IDLE "
			  "NAMESPACE UIDPLUS UNSELECT MOVE CHILDREN "
			  "SPECIAL-USE LIST-EXTENDED LIST-STATUS ESEARCH "
			  "SEARCHRES BINARY MULTIAPPEND STATUS=SIZE "
			  "APPENDLIMIT=%" PRIu64,
			  cfg->literal_plus ? "LITERAL+" : "LITERAL-",
			  cfg->literal_max);
	if (cfg->utf8_accept)
		(void)prot_puts(out, " UTF8=ACCEPT");
	if (cfg->compress && !s->compressed && s->state != IMAP_STATE_NOAUTH)
		(void)prot_puts(out, " COMPRESS=DEFLATE");
	if (s->state != IMAP_STATE_NOAUTH)
		return;
	if (cfg->starttls && !s->c->tls)
		(void)prot_puts(out, " STARTTLS");
	if (cfg->auth && srv_conn_sasl_mechs(s->c, &mechs) > 0) {
		const char *p = mechs;

		while (*p != '\0') {
			size_t n = strcspn(p, " ");

			if (n > 0)
				(void)prot_printf(out, " AUTH=%.*s", (int)n, p);
			p += n;
			p += *p == ' ';
		}
	}
	if (!srv_conn_plaintext_ok(s->c))
		(void)prot_puts(out, " LOGINDISABLED");
}

/*
 * ---------------------------------------------------------------------
 * Any state.
 * ---------------------------------------------------------------------
 */

static int cmd_capability(struct imap_sess *s, const char *tag)
{
	int ret = no_args(s);

	if (ret < 0)
		return ret;
	(void)prot_puts(s->c->out, "* CAPABILITY ");
	imap_print_capability(s);
	(void)prot_puts(s->c->out, "\r\n");
	imap_tagged(s, tag, "OK", "CAPABILITY completed");
	return 0;
}

/* NOOP (and CHECK) is how a client polls: tell what changed. */
static int cmd_noop(struct imap_sess *s, const char *tag)
{
	int ret = no_args(s);

	if (ret < 0)
		return ret;
	if (imap_mbox_sync(s, true) < 0)
		imap_tagged(s, tag, "NO", "[SERVERBUG] Mailbox error");
	else
		imap_tagged(s, tag, "OK", "NOOP completed");
	return 0;
}

static int cmd_logout(struct imap_sess *s, const char *tag)
{
	int ret = no_args(s);

	if (ret < 0)
		return ret;
	imap_untagged(s, "BYE ringprot IMAP logging out");
	imap_tagged(s, tag, "OK", "LOGOUT completed");
	s->state = IMAP_STATE_LOGOUT;
	return 0;
}

/* RFC 2971: ID NIL, or ID (field value ...), at most 30 pairs. */
static int cmd_id(struct imap_sess *s, const char *tag)
{
	struct imap_arg *a;
	const char *v;
	unsigned n = 0;
	int ret = imap_args(s, &a);

	if (ret < 0)
		return ret;
	if (ret != 1 ||
	    (!imap_arg_is_atom(a, "NIL") && a->type != IMAP_ARG_LIST)) {
		s->lx.err = "ID takes NIL or a list";
		return -EPROTO;
	}
	for (const struct imap_arg *f = a->child; f != NULL; f = f->next) {
		/* Fields are strings, values nstrings (RFC 2971). */
		bool ok = n % 2 == 0 ? f->type != IMAP_ARG_ATOM &&
					       imap_arg_astring(f, &v)
				     : imap_arg_nstring(f, &v);

		if (!ok) {
			s->lx.err = "Invalid ID field";
			return -EPROTO;
		}
		n++;
	}
	if (n % 2 != 0 || n > 60) {
		s->lx.err = "Invalid ID list";
		return -EPROTO;
	}
	imap_untagged(s, "ID (\"name\" \"ringprot\" \"vendor\" \"ringprot\")");
	imap_tagged(s, tag, "OK", "ID completed");
	return 0;
}

/*
 * ---------------------------------------------------------------------
 * Not authenticated.
 * ---------------------------------------------------------------------
 */

static int cmd_starttls(struct imap_sess *s, const char *tag)
{
	struct srv_conn *c = s->c;
	int ret = no_args(s);

	if (ret < 0)
		return ret;
	if (!s->cfg->starttls || c->tls) {
		imap_tagged(s, tag, "BAD",
			    c->tls ? "TLS is already active"
				   : "TLS is not available");
		return 0;
	}
	if (prot_input_pending(c->in))
		srv_logkv(SRV_LOG_WARN, c->id, "starttls", "ip", c->peer_ip,
			  "error",
			  "plaintext pipelined after STARTTLS: discarded",
			  NULL);
	imap_tagged(s, tag, "OK", "Begin TLS negotiation now");
	if (prot_flush(c->out) == EOF)
		return -EIO;
	ret = srv_conn_starttls(c);
	if (ret < 0)
		return ret == -ENOTCONN ? ret : -ECONNABORTED;
	return 0;
}

/* After a successful login: the user's store, made on first login. */
/*
 * A user logs in: the store must have them (lmtpd delivers only to
 * existing users; a login for one it lacks makes the INBOX). Sent,
 * Drafts, Trash and Junk (SPECIAL-USE) are made and subscribed when
 * missing, as Dovecot's "auto = subscribe" does: clients expect them.
 */
static int logged_in(struct imap_sess *s, const char *tag, const char *user)
{
	static const char *const folders[] = {"Sent", "Drafts", "Trash",
					      "Junk"};
	int ret = md_user_exists(s->cfg->store, user);

	if (ret == 0)
		ret = md_user_create(s->cfg->store, user, NULL);
	for (size_t i = 0; ret >= 0 && i < 4; i++) {
		ret = md_folder_create(s->cfg->store, user, folders[i]);
		if (ret == 0)
			ret = md_subscribe(s->cfg->store, user, folders[i],
					   true);
		else if (ret == -EEXIST)
			ret = 0;
	}
	if (ret < 0) {
		srv_logkv(SRV_LOG_ERR, s->c->id, "login", "user", user, "error",
			  strerror(-ret), NULL);
		imap_tagged(s, tag, "NO",
			    "[UNAVAILABLE] Mail store of %s not "
			    "available",
			    ret == -EINVAL ? "this user name" : "this user");
		return 0;
	}
	s->user = user;
	s->state = IMAP_STATE_AUTH;
	(void)prot_printf(s->c->out, "%s OK [CAPABILITY ", tag);
	imap_print_capability(s);
	(void)prot_puts(s->c->out, "] Logged in\r\n");
	return 0;
}

/* The reply to a failed LOGIN/AUTHENTICATE; connection errors: -errno. */
static int auth_failed(struct imap_sess *s, const char *tag, int err)
{
	switch (err) {
	case -EACCES:
		imap_tagged(s, tag, "NO",
			    "[AUTHENTICATIONFAILED] "
			    "Authentication failed");
		return 0;
	case -EPERM:
		imap_tagged(s, tag, "NO",
			    "[PRIVACYREQUIRED] LOGINDISABLED: "
			    "use STARTTLS first");
		return 0;
	case -ECANCELED:
		imap_tagged(s, tag, "BAD", "Authentication cancelled");
		return 0;
	case -EPROTO:
		imap_tagged(s, tag, "BAD", "Invalid base64 or response");
		return 0;
	case -EMSGSIZE:
		imap_tagged(s, tag, "BAD", "Response too long");
		return 0;
	case -ENOPROTOOPT:
		imap_tagged(s, tag, "NO",
			    "Unsupported authentication mechanism");
		return 0;
	case -ENOTSUP:
		imap_tagged(s, tag, "NO",
			    "[UNAVAILABLE] Authentication is not "
			    "available");
		return 0;
	default:
		return err;
	}
}

static int cmd_login(struct imap_sess *s, const char *tag)
{
	struct imap_arg *a;
	const char *user, *pass, *who = NULL;
	int ret = imap_args(s, &a);

	if (ret < 0)
		return ret;
	if (ret != 2 || !imap_arg_astring(a, &user) ||
	    !imap_arg_astring(a->next, &pass)) {
		s->lx.err = "LOGIN takes a user and a password";
		return -EPROTO;
	}
	ret = srv_conn_login(s->c, user, pass, &who);
	if (ret < 0)
		return auth_failed(s, tag, ret);
	return logged_in(s, tag, who);
}

static int sasl_send(struct srv_conn *c, const char *b64)
{
	if (prot_printf(c->out, "+ %s\r\n", b64) == EOF ||
	    prot_flush(c->out) == EOF)
		return -EIO;
	return 0;
}

static ssize_t sasl_read(struct srv_conn *c, char *buf, size_t size)
{
	struct imap_sess *s = c->data;

	return imap_lex_line(&s->lx, buf, size);
}

static int cmd_authenticate(struct imap_sess *s, const char *tag)
{
	static const struct srv_sasl_io io = {sasl_send, sasl_read};
	const char *mech, *initial = NULL, *who = NULL;
	struct imap_arg *a;
	int ret = imap_args(s, &a);

	if (ret < 0)
		return ret;
	if (ret < 1 || ret > 2 || a->type != IMAP_ARG_ATOM ||
	    (ret == 2 && a->next->type != IMAP_ARG_ATOM)) {
		s->lx.err = "AUTHENTICATE takes a mechanism and an optional "
			    "initial response";
		return -EPROTO;
	}
	mech = a->str;
	if (ret == 2)
		initial = a->next->str; /* RFC 4959: "=" is empty */
	ret = srv_conn_authenticate(s->c, mech, initial, &io, &who);
	if (ret < 0)
		return auth_failed(s, tag, ret);
	return logged_in(s, tag, who);
}

/*
 * ---------------------------------------------------------------------
 * Authenticated.
 * ---------------------------------------------------------------------
 */

/*
 * RFC 5161. IMAP4rev2 (RFC 9051) turns off \Recent and RECENT, answers
 * every SEARCH with ESEARCH, and takes and gives mailbox names in UTF-8
 * (which is what UTF8=ACCEPT does to names too).
 */
static int cmd_enable(struct imap_sess *s, const char *tag)
{
	static const struct {
		const char *name;
		unsigned bit;
	} known[] = {
		{"UTF8=ACCEPT", IMAP_ENABLED_UTF8},
		{"IMAP4rev2", IMAP_ENABLED_REV2},
	};
	unsigned now = 0;
	struct imap_arg *a;
	int ret = imap_args(s, &a);

	if (ret < 0)
		return ret;
	if (ret == 0) {
		s->lx.err = "ENABLE takes capability names";
		return -EPROTO;
	}
	for (; a != NULL; a = a->next) {
		if (a->type != IMAP_ARG_ATOM) {
			s->lx.err = "Invalid capability name";
			return -EPROTO;
		}
		/* Only what is advertised may be enabled (RFC 5161 3.1);
		 * unknown names are ignored. */
		for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			if (strcasecmp(a->str, known[i].name) == 0 &&
			    (known[i].bit != IMAP_ENABLED_UTF8 ||
			     s->cfg->utf8_accept))
				now |= known[i].bit;
	}
	now &= ~s->enabled; /* ENABLED lists only what this one turned on */
	s->enabled |= now;
	if (s->enabled & (IMAP_ENABLED_UTF8 | IMAP_ENABLED_REV2))
		s->lx.utf8 = true;
	(void)prot_puts(s->c->out, "* ENABLED");
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (now & known[i].bit)
			(void)prot_printf(s->c->out, " %s", known[i].name);
	(void)prot_puts(s->c->out, "\r\n");
	imap_tagged(s, tag, "OK", "ENABLE completed");
	return 0;
}

/* One personal namespace, "." as the separator (Maildir++). */
static int cmd_namespace(struct imap_sess *s, const char *tag)
{
	int ret = no_args(s);

	if (ret < 0)
		return ret;
	imap_untagged(s, "NAMESPACE ((\"\" \".\")) NIL NIL");
	imap_tagged(s, tag, "OK", "NAMESPACE completed");
	return 0;
}

/* RFC 4978. */
static int cmd_compress(struct imap_sess *s, const char *tag)
{
	struct imap_arg *a;
	int ret = imap_args(s, &a);

	if (ret < 0)
		return ret;
	if (ret != 1 || !imap_arg_is_atom(a, "DEFLATE")) {
		s->lx.err = "COMPRESS takes DEFLATE";
		return -EPROTO;
	}
	if (!s->cfg->compress) {
		imap_tagged(s, tag, "NO", "Compression is not available");
		return 0;
	}
	if (s->compressed) {
		imap_tagged(s, tag, "NO", "[COMPRESSIONACTIVE] DEFLATE active");
		return 0;
	}
	imap_tagged(s, tag, "OK", "DEFLATE active");
	ret = pl_zlib_activate(s->c->in, s->c->out, PL_ZLIB_LEVEL_DEFAULT);
	if (ret < 0)
		return ret == -ENOTCONN ? ret : -ECONNABORTED;
	s->compressed = true;
	return 0;
}

/*
 * The commands. Mailbox commands add their rows here (see the top).
 */
static const struct imap_cmd cmds[] = {
	{"CAPABILITY", IMAP_STATES_ANY, false, cmd_capability},
	{"NOOP", IMAP_STATES_ANY, false, cmd_noop},
	{"LOGOUT", IMAP_STATES_ANY, false, cmd_logout},
	{"ID", IMAP_STATES_ANY, false, cmd_id},
	{"STARTTLS", IMAP_STATE_NOAUTH, false, cmd_starttls},
	{"LOGIN", IMAP_STATE_NOAUTH, false, cmd_login},
	{"AUTHENTICATE", IMAP_STATE_NOAUTH, false, cmd_authenticate},
	{"ENABLE", IMAP_STATE_AUTH, false, cmd_enable},
	{"NAMESPACE", IMAP_STATES_AUTHED, false, cmd_namespace},
	{"COMPRESS", IMAP_STATES_AUTHED, false, cmd_compress},
	/* folders.c */
	{"LIST", IMAP_STATES_AUTHED, false, cmd_list},
	{"LSUB", IMAP_STATES_AUTHED, false, cmd_lsub},
	{"CREATE", IMAP_STATES_AUTHED, false, cmd_create},
	{"DELETE", IMAP_STATES_AUTHED, false, cmd_delete},
	{"RENAME", IMAP_STATES_AUTHED, false, cmd_rename},
	{"SUBSCRIBE", IMAP_STATES_AUTHED, false, cmd_subscribe},
	{"UNSUBSCRIBE", IMAP_STATES_AUTHED, false, cmd_unsubscribe},
	{"STATUS", IMAP_STATES_AUTHED, false, cmd_status},
	{"APPEND", IMAP_STATES_AUTHED, false, cmd_append},
	/* mbox.c, fetch.c, search.c */
	{"SELECT", IMAP_STATES_AUTHED, false, cmd_select},
	{"EXAMINE", IMAP_STATES_AUTHED, false, cmd_examine},
	{"IDLE", IMAP_STATES_AUTHED, false, cmd_idle},
	{"CHECK", IMAP_STATE_SELECTED, false, cmd_check},
	{"CLOSE", IMAP_STATE_SELECTED, false, cmd_close},
	{"UNSELECT", IMAP_STATE_SELECTED, false, cmd_unselect},
	{"EXPUNGE", IMAP_STATE_SELECTED, true, cmd_expunge},
	{"FETCH", IMAP_STATE_SELECTED, true, cmd_fetch},
	{"STORE", IMAP_STATE_SELECTED, true, cmd_store},
	{"SEARCH", IMAP_STATE_SELECTED, true, cmd_search},
	{"COPY", IMAP_STATE_SELECTED, true, cmd_copy},
	{"MOVE", IMAP_STATE_SELECTED, true, cmd_move},
};

static const struct imap_cmd *cmd_find(const char *name, bool uid)
{
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(cmds[i].name, name) == 0 && (!uid || cmds[i].uid))
			return &cmds[i];
	return NULL;
}

/* Errors a BAD (or NO) answers; the others end the session. */
static bool recoverable(int err)
{
	switch (err) {
	case -EPROTO:
	case -EMSGSIZE:
	case -EFBIG:
	case -ENOMEM:
	case -ELOOP:
	case -EILSEQ:
	case -ENOENT:
		return true;
	default:
		return false;
	}
}

/*
 * Answer a refused command and skip what is left of its line. 0, or
 * -errno to end the session.
 */
static int refuse(struct imap_sess *s, const char *tag, int err)
{
	const char *why = s->lx.err != NULL ? s->lx.err : "Syntax error";
	int ret;

	if (err == -E2BIG) {
		imap_tagged(s, tag, "BAD", "%s", why);
		imap_untagged(s, "BYE Literal too big");
		return err;
	}
	if (!recoverable(err))
		return err;
	ret = imap_lex_skip_line(&s->lx);
	if (err == -EFBIG || err == -ENOENT)
		imap_tagged(s, tag, "NO", "%s", why);
	else
		imap_tagged(s, tag, "BAD", "%s", why);
	if (ret == -E2BIG)
		imap_untagged(s, "BYE Literal too big");
	if (ret < 0)
		return ret;
	if (s->errors >= s->cfg->max_errors) {
		imap_untagged(s, "BYE Too many errors");
		return -EPROTO;
	}
	return 0;
}

/* Read and run one command. 0, or -errno to end the session. */
static int one_command(struct imap_sess *s)
{
	const struct imap_cmd *cmd;
	int ret, end;

	imap_lex_begin(&s->lx);
	s->uid = false;
	ret = imap_lex_tag(&s->lx, s->tag);
	if (ret == -ENODATA)
		return 0; /* an empty line: nothing to answer */
	if (ret < 0)
		return refuse(s, "*", ret);
	end = imap_lex_name(&s->lx, s->name, sizeof(s->name));
	if (end < 0)
		return refuse(s, s->tag, end);
	if (strcmp(s->name, "UID") == 0) {
		if (end == 1) {
			s->lx.err = "Missing command after UID";
			return refuse(s, s->tag, -EPROTO);
		}
		s->uid = true;
		end = imap_lex_name(&s->lx, s->name, sizeof(s->name));
		if (end < 0)
			return refuse(s, s->tag, end);
	}
	cmd = cmd_find(s->name, s->uid);
	if (cmd == NULL) {
		s->lx.err = "Unknown command";
		return refuse(s, s->tag, -EPROTO);
	}
	if (!(cmd->states & s->state)) {
		s->lx.err = s->state == IMAP_STATE_NOAUTH
				    ? "Log in first"
				    : "Command not valid in this state";
		return refuse(s, s->tag, -EPROTO);
	}
	ret = cmd->fn(s, s->tag);
	if (ret < 0)
		return refuse(s, s->tag, ret);
	return ret; /* 0, or IMAP_PARK */
}

static void sess_end(struct imap_sess *s, int err)
{
	if (s->mbox_close != NULL)
		s->mbox_close(s);
	if (err == -ETIMEDOUT)
		imap_untagged(s, "BYE Autologout; idle for too long");
	else if (err == -ESHUTDOWN)
		imap_untagged(s, "BYE Server shutting down");
}

/*
 * The pool's memory is mapped, not malloc'd: it is given back at every
 * park, and from the heap (past glibc's dynamic mmap threshold) each of
 * these ~135 KB blocks left a hole whose touched pages, and the small
 * allocations that settle in it, stayed resident for every idler
 * (~100 bytes per parked session at 10,000, measured). Unmapped, only
 * the pages a command touched were ever there.
 */
static void pool_drop(struct imap_pool *p)
{
	if (p->base != NULL && munmap(p->base, p->size) < 0) {
		/* only with a bad address: ours */
	}
	*p = (struct imap_pool){0};
}

/*
 * The command loop. The pool (per-command memory, as large as the
 * longest command line) exists only while the session has a fiber: it
 * is freed before the session parks (IDLE), so that a waiting client
 * costs its small session record and the runtime's parked state, not
 * a line buffer.
 */
int imap_session_continue(struct imap_sess *s)
{
	struct srv_conn *c = s->c;
	int ret = 0;

	if (s->pool.base == NULL) {
		size_t size = s->cfg->line_max * 2 + 4096;
		void *base = mmap(NULL, size, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (base == MAP_FAILED)
			return -ENOMEM;
		imap_pool_init(&s->pool, base, size);
	}
	while (s->state != IMAP_STATE_LOGOUT) {
		ret = one_command(s);
		if (ret < 0)
			break;
		if (ret == IMAP_PARK) {
			pool_drop(&s->pool);
			return srv_park(c, imap_idle_resume);
		}
	}
	sess_end(s, ret);
	pool_drop(&s->pool);
	/* A client gone or a protocol end is a normal close. */
	if (ret == -ENOTCONN || ret == -EPROTO || ret == -E2BIG ||
	    ret == -ETIMEDOUT || ret == -ECONNRESET || ret == -EPIPE)
		return 0;
	return ret;
}

/* The session record lives as long as the connection: closing it closes
 * the mailbox (a session parked in IDLE ends without a fiber). */
static void sess_closed(void *arg)
{
	struct imap_sess *s = arg;

	if (s->mbox_close != NULL)
		s->mbox_close(s);
	pool_drop(&s->pool);
}

int imap_session_run(struct srv_conn *c)
{
	const struct imap_config *cfg = srv_service_data(c->service);
	struct imap_sess *s = srv_conn_alloc(c, sizeof(*s));

	if (s == NULL || srv_conn_on_close(c, sess_closed, s) < 0)
		return -ENOMEM;
	s->c = c;
	s->cfg = cfg;
	s->state = IMAP_STATE_NOAUTH;
	c->data = s;
	s->lx.in = c->in;
	s->lx.out = c->out;
	s->lx.line_max = cfg->line_max;
	s->lx.literal_max = cfg->literal_max;
	s->lx.nonsync_max =
		cfg->literal_plus ? cfg->literal_max : IMAP_NONSYNC_MAX;
	s->lx.pool = &s->pool;

	(void)prot_puts(c->out, "* OK [CAPABILITY ");
	imap_print_capability(s);
	(void)prot_puts(c->out, "] ringprot IMAP ready\r\n");
	return imap_session_continue(s);
}
