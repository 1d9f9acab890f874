/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen: the IMAP client session the imap-* command modes share. */
#ifndef RINGPROT_BENCH_LOADGEN_IMAP_H
#define RINGPROT_BENCH_LOADGEN_IMAP_H

#include "loadgen.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * A session (imap.c) opens with the greeting, "a LOGIN -U -P" and
 * "b SELECT -M" (default INBOX), then is ready; each request is one
 * command, tag "c", sent whole, and is done when both its send has gone
 * out and its tagged reply has come in (the reply may be seen first).
 *
 * Responses are parsed as IMAP frames them: a response is a line, except
 * that a line ending in "{n}" CRLF goes on after n bytes of literal, which
 * are skipped by count (counted in lit_bytes, never scanned for CRLF).
 * Only the first LG_IMAP_LINE bytes of a response are kept: its tag and
 * status are all that is looked at. "* n EXISTS" is noted.
 *
 * A NO or BAD to a request is counted as an error (lg_request_error) and
 * the session goes on; the first such line is printed on stderr. A NO or
 * BAD to LOGIN or SELECT, a BYE, a continuation request or anything not
 * IMAP ends the connection as failed.
 *
 * A kind with a hold command (imap-idle) makes no requests: after SELECT
 * it sends that command, tag "c", and the connection is ready when the
 * server's continuation request ("+") comes; from then on it is held,
 * and any tagged reply (the server ended the command) or a second "+"
 * ends it as failed, as do a NO or BAD to the command itself.
 */

#define LG_IMAP_LINE 128

/* What a mode adds to the shared session. */
struct lg_imap_kind {
	/* The command of the next request, without tag and CRLF, into buf;
	 * -errno on failure. */
	int (*command)(struct lg_conn *c, char *buf, size_t cap);
	/* The reply was OK: 0 if it holds what the mode asked for, else
	 * -errno (counted as an error). NULL: any OK will do. */
	int (*check)(struct lg_conn *c);
	/* Non-NULL: the held command, with tag and CRLF (see above); the
	 * mode then has no request callback. Read by the kernel: static. */
	const char *hold;
	/* Each "* n EXISTS" while held, at its arrival. NULL: ignored. */
	void (*held_exists)(struct lg_conn *c, unsigned long n);
};

struct lg_imap {
	const struct lg_imap_kind *kind;
	int st; /* enum in imap.c */
	/* reader */
	unsigned len;	   /* bytes of head (capped at LG_IMAP_LINE) */
	bool cont;	   /* past a literal: the same response goes on */
	int brace;	   /* literal marker state at the line's end */
	uint64_t brace_n;  /* its count so far */
	uint64_t lit_left; /* literal bytes still to skip */
	char head[LG_IMAP_LINE];
	/* the running request */
	bool req; /* a request is running */
	bool req_sent, req_replied, req_failed;
	uint64_t lit_bytes;	   /* literal bytes in its reply */
	unsigned long exists;	   /* last "* n EXISTS" */
	bool saw_exists;	   /* since the command went out */
	unsigned long open_exists; /* n of the opening SELECT */
	uint64_t nreq;		   /* requests this connection has started */
	/* sending */
	bool sending;
	const char *queued;
	char cmd[LG_IMAP_LINE];
};

/* Mode callbacks: a mode's struct lg_mode points at these, and its
 * conn_init at one that calls lg_imap_conn_init with its kind. */
int lg_imap_init(const struct lg_opts *o);
int lg_imap_conn_init(struct lg_conn *c, const struct lg_imap_kind *kind);
void lg_imap_conn_fini(struct lg_conn *c);
int lg_imap_connected(struct lg_conn *c);
int lg_imap_request(struct lg_conn *c);
int lg_imap_sent(struct lg_conn *c);
int lg_imap_received(struct lg_conn *c, const unsigned char *data, size_t n);

#endif /* RINGPROT_BENCH_LOADGEN_IMAP_H */
