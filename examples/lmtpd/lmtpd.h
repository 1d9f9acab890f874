/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/lmtpd: what main.c (configuration) and session.c share. */
#ifndef RINGPROT_LMTPD_H
#define RINGPROT_LMTPD_H

#include <stdbool.h>
#include <stdint.h>

#include <ringprot/server.h>

#include "maildir.h"
#include "parse.h"

/*
 * The daemon's settings, read once at start-up (main.c) and shared
 * read-only by every worker thread's sessions.
 */
struct lmtp_config {
	struct md_store *store;
	const char *hostname;	  /* in the greeting and LHLO reply */
	uint64_t max_size;	  /* SIZE: largest message, 0: none */
	unsigned cmd_max;	  /* longest command line, CR LF included */
	unsigned line_max;	  /* longest text line in DATA, 0: none */
	unsigned max_rcpts;	  /* recipients per transaction */
	unsigned max_errors;	  /* bad commands before 421 */
	struct lmtp_map_opts map; /* address -> user, folder */
	bool vrfy;		  /* VRFY: 252 (yes) or 502 (no) */
	bool starttls;		  /* STARTTLS offered (TLS set up) */
	bool auth;		  /* AUTH offered (SASL set up) */
	bool chunking;		  /* CHUNKING/BDAT offered */
};

/* The service's handler: one LMTP session on c (service data: the
 * struct lmtp_config). Returns 0 or -errno as a srv handler does. */
int lmtp_session_run(struct srv_conn *c) UR_MAY_YIELD;

#endif /* RINGPROT_LMTPD_H */
