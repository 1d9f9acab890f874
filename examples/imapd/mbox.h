/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/imapd/mbox: the selected mailbox as this client sees it. */
#ifndef RINGPROT_IMAPD_MBOX_H
#define RINGPROT_IMAPD_MBOX_H

/*
 * Sequence numbers are the client's: the view is the list of UIDs this
 * client has been told of (by EXISTS), in order, and a message removed
 * by someone else stays in it, as a ghost with no info, until the
 * session may send its EXPUNGE (RFC 3501 section 7.4.1: not during
 * FETCH, STORE, SEARCH; UID versions may). imap_mbox_sync() is the one
 * place that changes the view: every command of the selected state
 * calls it before its tagged reply, with expunge_ok as that command
 * allows.
 */

#include <stdbool.h>
#include <stdint.h>

#include "imapd.h"
#include "mailbox.h"

/* IMAP_PARK: a command's return that parks the session (IDLE). */
#define IMAP_PARK 1

/* Messages the client knows of (its last EXISTS). 0 when not selected. */
uint32_t imap_mbox_exists(const struct imap_sess *s);
/* The store handle of the selected mailbox. */
struct md_mbox *imap_mbox_md(const struct imap_sess *s);
/* UID of sequence number seq (1..exists). */
uint32_t imap_mbox_uid(const struct imap_sess *s, uint32_t seq);
/* The message at seq, or NULL for a ghost (expunged, not yet told). */
const struct md_msg_info *imap_mbox_info(const struct imap_sess *s,
					 uint32_t seq);

/*
 * fn(s, seq, mi, arg) for each message of set, ascending: set holds
 * sequence numbers, or UIDs when uid is true ('*' is the last message's
 * number or UID). Ghosts are skipped and counted in *ghosts_out (may be
 * NULL). mi is borrowed: valid until the next store call on the
 * mailbox. Returns 0 or the first negative fn returned.
 */
/*
 * Is the message at seq in set: sequence numbers, or UIDs when uid is
 * true; "$" is the saved search result (SEARCHRES) either way.
 */
bool imap_mbox_in_set(const struct imap_sess *s, const struct imap_seqset *set,
		      bool uid, uint32_t seq);
/*
 * Replace the saved search result ("$") with the n UIDs of uids
 * (ascending). 0 or -ENOMEM (the result is empty then).
 */
int imap_mbox_save_result(struct imap_sess *s, const uint32_t *uids,
			  uint32_t n) RINGPROT_MUST_CHECK;
typedef int imap_each_fn(struct imap_sess *s, uint32_t seq,
			 const struct md_msg_info *mi, void *arg);
int imap_mbox_each(struct imap_sess *s, const struct imap_seqset *set, bool uid,
		   imap_each_fn *fn, void *arg,
		   unsigned *ghosts_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * Sync with the store and tell the client: FETCH FLAGS for messages
 * others changed, EXPUNGE for those others removed (only when
 * expunge_ok; else they wait as ghosts), then EXISTS and RECENT for new
 * ones. 0 or -errno (the mailbox is unusable: the caller answers NO).
 */
int imap_mbox_sync(struct imap_sess *s,
		   bool expunge_ok) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/* Print "(\Seen \Flagged kw)" for mi (with \Recent when it has it). */
void imap_print_flags(struct imap_sess *s, const struct md_msg_info *mi);

/*
 * A mailbox name argument as stored (modified UTF-7): an astring, taken
 * as UTF-8 and converted when UTF8=ACCEPT is on and it has 8-bit bytes,
 * checked with imap_mutf7_valid. *name_out is in the pool. 0 or -EPROTO
 * (s->lx.err set).
 */
int imap_mbox_name_arg(struct imap_sess *s, const struct imap_arg *a,
		       const char **name_out) RINGPROT_MUST_CHECK;

/* A stored (mUTF-7) mailbox name on the wire: in UTF-8 when
 * imap_utf8_names(s), else as stored. */
void imap_print_name(struct imap_sess *s, const char *name);
/* Close the selected mailbox (no expunge), back to the authenticated
 * state. Safe when none is selected. */
void imap_mbox_unselect(struct imap_sess *s) UR_MAY_YIELD;

/*
 * IDLE (RFC 2177) parks the session: the command returns IMAP_PARK and
 * the session returns srv_park(c, imap_idle_resume). The resume answers
 * changes, keepalives, DONE and shutdown, and either parks again or goes
 * back to the command loop (imap_session_continue).
 */
int imap_idle_resume(struct srv_conn *c, unsigned wake) UR_MAY_YIELD;
/* The command loop, from a resume: runs until the session ends or parks. */
int imap_session_continue(struct imap_sess *s) UR_MAY_YIELD;

/* The commands of mbox.c. */
int cmd_select(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_examine(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_close(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_unselect(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_check(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_expunge(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_store(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_copy(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_move(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_idle(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
/* fetch.c, search.c */
int cmd_fetch(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_search(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
/* folders.c */
int cmd_list(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_lsub(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_create(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_delete(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_rename(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_subscribe(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_unsubscribe(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_status(struct imap_sess *s, const char *tag) UR_MAY_YIELD;
int cmd_append(struct imap_sess *s, const char *tag) UR_MAY_YIELD;

#endif /* RINGPROT_IMAPD_MBOX_H */
