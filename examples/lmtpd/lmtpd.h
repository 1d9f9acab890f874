/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/lmtpd: what main.c (configuration) and session.c share. */
#ifndef RINGPROT_LMTPD_H
#define RINGPROT_LMTPD_H

#include <stdbool.h>
#include <stdint.h>

#include <ringprot/server.h>
#include <ringprot/srv-config.h>

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
	bool bare_lf_refuse;	  /* a bare LF line end: 550, close */
};

/*
 * Configuration (config.c): the LMTP keys, for a program's key table,
 * and their values for service svc read into lc (store: the opened
 * store). 0, or -EINVAL after printing why.
 */
extern const struct srv_cfg_key lmtp_cfg_keys[];
extern const size_t lmtp_cfg_nkeys;
int lmtp_config_read(const struct srv_config *cfg, const char *svc,
		     struct md_store *store,
		     struct lmtp_config *lc) RINGPROT_MUST_CHECK;

/* The service's handler: one LMTP session on c (service data: the
 * struct lmtp_config). Returns 0 or -errno as a srv handler does. */
int lmtp_session_run(struct srv_conn *c) UR_MAY_YIELD;

/*
 * Cleanup of what deliveries leave behind (sweep.c): spool and tmp/
 * files older than Maildir's 36 hours.
 * lmtp_sweep_spool: the spool, now (start-up). Count or -errno.
 * lmtp_sweep_init: note the store and open <data_dir>/users (before any
 * chroot); interval_ms 0: no periodic sweep. 0 or -errno.
 * lmtp_sweep_start: the sweep thread (the spool and every user's tmp/
 * each interval). 0 or -errno.
 * lmtp_sweep_stop: stop and join it, close what init opened.
 */
int lmtp_sweep_spool(struct md_store *st) RINGPROT_MUST_CHECK UR_MAY_YIELD;
int lmtp_sweep_init(struct md_store *st, const char *data_dir,
		    uint64_t interval_ms) RINGPROT_MUST_CHECK;
int lmtp_sweep_start(void) RINGPROT_MUST_CHECK;
void lmtp_sweep_stop(void);

#endif /* RINGPROT_LMTPD_H */
