/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/lmtpd/parse: LMTP commands, addresses and the DATA reader. */
#ifndef RINGPROT_LMTPD_PARSE_H
#define RINGPROT_LMTPD_PARSE_H

/*
 * Pure functions on bytes: no I/O, no allocation, no ringprot. The
 * session (session.c) reads lines and bytes from the connection and
 * hands them here; the fuzz target (test/fuzz/fuzz-lmtp.c) does the
 * same with arbitrary input.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum lmtp_verb {
	LMTP_UNKNOWN,
	LMTP_LHLO,
	LMTP_HELO, /* HELO and EHLO: refused in LMTP (RFC 2033 §4.1) */
	LMTP_MAIL,
	LMTP_RCPT,
	LMTP_DATA,
	LMTP_BDAT,
	LMTP_RSET,
	LMTP_NOOP,
	LMTP_QUIT,
	LMTP_VRFY,
	LMTP_STARTTLS,
	LMTP_AUTH,
	LMTP_HELP,
};

enum lmtp_body {
	LMTP_BODY_7BIT,
	LMTP_BODY_8BITMIME,
	LMTP_BODY_BINARYMIME,
};

/* Longest forward or reverse path (RFC 5321 §4.5.3.1.3: 256 with <>). */
#define LMTP_PATH_MAX 256

/*
 * A parsed command. Pointers borrow the line given to lmtp_cmd_parse
 * (which writes NULs into it): valid while the line is.
 */
struct lmtp_cmd {
	enum lmtp_verb verb;
	const char *arg; /* the rest after the verb and one space, or "" */
	/* MAIL, RCPT: the path between < and > (may be ""). */
	char path[LMTP_PATH_MAX + 1];
	/* MAIL parameters. */
	bool has_size;
	uint64_t size;
	enum lmtp_body body;
	/* BDAT: chunk size and LAST. */
	uint64_t chunk;
	bool last;
	/* On a syntax error: the whole reply, "501 5.5.4 ...". */
	const char *error;
};

/*
 * Parse one command line (without CR LF, len bytes, NUL-terminated at
 * len; NUL bytes inside are the caller's to refuse first). Returns 0
 * with *cmd filled; -EPROTO with cmd->error set to the reply (a known
 * verb with bad arguments); -ENOSYS for an unknown verb (cmd->error set
 * too). Never reads past len.
 */
int lmtp_cmd_parse(char *line, size_t len, struct lmtp_cmd *cmd);

/*
 * Turning a recipient address into a store user and folder.
 * domain: keep "@domain" in the user name (lowercased), else drop it.
 * detail: with a delimiter, "user+detail" goes to folder "detail".
 */
struct lmtp_map_opts {
	bool domain;
	char detail_delim; /* '\0': no detail addressing */
};

#define LMTP_USER_MAX 255

/*
 * Map addr (a path from RCPT, without <>) to *user (lowercased) and
 * *folder ("" for INBOX). Returns 0, or -EINVAL for an address that
 * cannot name a mailbox: empty, quoted local part, source routes,
 * '/', '\\', control bytes or NUL, a leading '.', "." or "..", too long.
 */
int lmtp_rcpt_map(const char *addr, const struct lmtp_map_opts *o,
		  char user[LMTP_USER_MAX + 1], char folder[LMTP_USER_MAX + 1]);

/*
 * The DATA reader: dot-unstuffing over input cut anywhere (RFC 5321
 * §4.5.2). A line ends at LF (CR LF, or a bare LF, as Postfix accepts);
 * a bare CR is data. A line that starts with '.' loses that dot; a line
 * that is only "." (".\r\n" or ".\n") ends the message, and the line
 * end before it belongs to the message. The output keeps the line ends
 * as they came. Faults are noted, reading goes on to the end (so the
 * session stays in step with the client):
 *  - nul: a NUL byte (dropped from the output);
 *  - long_line: a line longer than line_max bytes counting its CR LF
 *    as on the wire (0: no limit);
 *  - bare_lf: an LF not right after a CR (the end line's included):
 *    the session refuses the message with lmtp_bare_lf=refuse, since
 *    then where the message ends is a guess (SMTP smuggling).
 */
struct lmtp_dot {
	unsigned state;	 /* private */
	bool cr;	 /* private: the last byte read was a CR */
	size_t line_len; /* bytes of the current line so far (wire) */
	size_t line_max;
	uint64_t size; /* bytes of output so far */
	bool done;     /* the end line was read */
	bool nul;
	bool long_line;
	bool bare_lf;
};

void lmtp_dot_init(struct lmtp_dot *d, size_t line_max);

/*
 * Feed len bytes of input. Writes unstuffed bytes to out (at most
 * out_size: always room for one byte at least, out_size >= 2) and sets
 * *out_len. Returns the input bytes consumed: fewer than len when the
 * end line was read (d->done, the rest is the next command's) or out is
 * full (call again with the rest).
 */
size_t lmtp_dot_feed(struct lmtp_dot *d, const uint8_t *in, size_t len,
		     uint8_t *out, size_t out_size, size_t *out_len);

#endif /* RINGPROT_LMTPD_PARSE_H */
