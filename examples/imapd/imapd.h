/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/imapd: what main.c, session.c and the command files share. */
#ifndef RINGPROT_IMAPD_H
#define RINGPROT_IMAPD_H

#include <stdbool.h>
#include <stdint.h>

#include <ringprot/server.h>

#include "maildir.h"
#include "parse.h"

/*
 * The daemon's settings, read once at start-up (main.c) and shared
 * read-only by every worker thread's sessions.
 */
struct md_watch_hub;

struct imap_config {
	struct md_store *store;
	struct md_watch_hub *watch; /* IDLE's change notification */
	size_t line_max;	    /* imap_max_line: command bytes */
	uint64_t literal_max;	    /* imap_max_literal: APPENDLIMIT */
	bool literal_plus;	    /* LITERAL+ (else LITERAL-: {n+} <= 4096) */
	unsigned max_errors;	    /* BAD replies before BYE */
	uint64_t idle_keepalive_ms; /* "* OK Still here" during IDLE */
	uint64_t idle_max_ms;	    /* IDLE ends after this (30 min) */
	bool starttls;		    /* TLS set up: STARTTLS offered */
	bool auth;		    /* SASL set up */
	bool compress;		    /* COMPRESS=DEFLATE offered */
	bool utf8_accept;	    /* ENABLE UTF8=ACCEPT allowed */
};

/* Session states (RFC 3501 section 3), as bits for a command's table. */
enum imap_state {
	IMAP_STATE_NOAUTH = 1u << 0,
	IMAP_STATE_AUTH = 1u << 1,
	IMAP_STATE_SELECTED = 1u << 2,
	IMAP_STATE_LOGOUT = 1u << 3,
};
#define IMAP_STATES_ANY \
	(IMAP_STATE_NOAUTH | IMAP_STATE_AUTH | IMAP_STATE_SELECTED)
#define IMAP_STATES_AUTHED (IMAP_STATE_AUTH | IMAP_STATE_SELECTED)

/* What ENABLE turned on (RFC 5161). */
#define IMAP_ENABLED_UTF8 1u /* UTF8=ACCEPT (RFC 6855) */
#define IMAP_ENABLED_REV2 2u /* IMAP4rev2 (RFC 9051) */

/*
 * One session. Commands may read every field and change those marked
 * so; session.c owns the rest.
 */
struct imap_sess {
	struct srv_conn *c;
	const struct imap_config *cfg;
	struct imap_lex lx;    /* the command being read (lx.pool) */
	struct imap_pool pool; /* reset at each command */
	unsigned state;	       /* IMAP_STATE_*: SELECT/CLOSE change it */
	const char *user;      /* logged-in user (owned by c), or NULL */
	bool uid;	       /* this command came as "UID <name>" */
	char tag[IMAP_TAG_MAX + 1];
	char name[32];	  /* this command's name, uppercase */
	unsigned errors;  /* BAD replies so far */
	unsigned enabled; /* IMAP_ENABLED_* */
	bool compressed;  /* COMPRESS DEFLATE is on */
	/*
	 * The selected mailbox, owned by the mailbox commands: set by
	 * SELECT/EXAMINE with mbox_close, which the session calls (with
	 * the session) when it ends; SELECT, CLOSE and UNSELECT call it
	 * themselves before they replace or drop the mailbox.
	 */
	void *mbox;
	void (*mbox_close)(struct imap_sess *s);
	void *mbox_rec; /* mbox.c: its record, reused (connection arena) */
};

/* Mailbox names go both ways in UTF-8 (UTF8=ACCEPT, or IMAP4rev2: RFC
 * 9051 5.1), else in modified UTF-7 as stored. */
static inline bool imap_utf8_names(const struct imap_sess *s)
{
	return (s->enabled & (IMAP_ENABLED_UTF8 | IMAP_ENABLED_REV2)) != 0;
}

/* IMAP4rev2 is on: no \Recent, no RECENT, SEARCH answered by ESEARCH. */
static inline bool imap_rev2(const struct imap_sess *s)
{
	return (s->enabled & IMAP_ENABLED_REV2) != 0;
}

/*
 * A command: one row of the table in session.c. fn runs after the name
 * (and its SP, if arguments follow: s->lx.eol tells). It reads its own
 * arguments (imap_args(), or imap_lex_args() for APPEND's literals),
 * sends what it has to say and its tagged reply, and returns 0 (or
 * IMAP_PARK (mbox.h: IDLE parks the session). A
 * negative return without a tagged reply: -EPROTO, -EMSGSIZE, -ENOMEM,
 * -ELOOP, -EILSEQ get "tag BAD <s->lx.err>", -EFBIG and -ENOENT
 * "tag NO <s->lx.err>", and the rest of the line is skipped; any other
 * -errno ends the session (connection errors).
 */
struct imap_cmd {
	const char *name;
	unsigned states; /* IMAP_STATE_* bits where it is valid */
	bool uid;	 /* also valid as "UID <name>" */
	int (*fn)(struct imap_sess *s, const char *tag);
};

/* The service's handler: one IMAP session on c (service data: the
 * struct imap_config). */
int imap_session_run(struct srv_conn *c) UR_MAY_YIELD;

/*
 * Replies (session.c). Output errors are sticky on the stream: the next
 * read ends the session, so these return nothing.
 * imap_tagged: "tag RESULT text\r\n" (RESULT "OK", "NO", "BAD").
 * imap_untagged: "* " fmt "\r\n".
 */
void imap_tagged(struct imap_sess *s, const char *tag, const char *result,
		 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void imap_untagged(struct imap_sess *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * The arguments of the running command up to the end of the line (see
 * imap_lex_args): count (0: none) or -errno, s->lx.err the reason.
 */
int imap_args(struct imap_sess *s,
	      struct imap_arg **first_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/* Print the capability list for s's state (no "* CAPABILITY", no CRLF). */
void imap_print_capability(struct imap_sess *s);

#endif /* RINGPROT_IMAPD_H */
