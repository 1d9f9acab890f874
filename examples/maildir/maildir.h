/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/maildir: the Maildir store lmtpd delivers into, imapd reads. */
#ifndef RINGPROT_EXAMPLES_MAILDIR_H
#define RINGPROT_EXAMPLES_MAILDIR_H

/*
 * Layout under the store's root (a data directory):
 *
 *   <root>/users/<user>/            the user's INBOX, a Maildir:
 *                       tmp/ new/ cur/
 *   <root>/users/<user>/.<Folder>/  a subfolder (Maildir++: "Sent",
 *                                   "Lists.rust" for a hierarchy)
 *   <root>/spool/                   one copy per message being received
 *
 * A user exists when <root>/users/<user>/ does (made by the operator,
 * the demo or md_user_create). User and folder names are checked before
 * any path is built (md_name_ok): no '/', no NUL, no control characters,
 * no leading '.', not "." or "..", at most MD_NAME_MAX bytes.
 *
 * Delivery (Maildir's rules, as Dovecot does them): the message is
 * written once to a spool file (unique name: time, pid, counter, host),
 * fsynced, then for each recipient hard-linked into the recipient's
 * new/ (it is complete and synced: the link makes it appear whole; when
 * the link fails with EXDEV it is copied into tmp/, synced, and renamed
 * into new/), and new/ is fsynced. Only then is md_msg_deliver's 0
 * returned, and only then may the caller acknowledge the recipient: an
 * acknowledged message is durable, and nothing half-written is ever
 * visible in new/ or cur/.
 * Every file operation goes through the ring (ur_openat, ur_write,
 * ur_fsync, ur_linkat, ur_renameat, ur_unlinkat, ur_mkdirat): calls
 * marked UR_MAY_YIELD park the calling fiber. Headers that differ per
 * recipient cannot be in a shared copy: the caller writes Return-Path
 * (and Delivered-To when there is a single recipient) into the spool
 * copy itself, before the body.
 *
 * Messages are stored with LF line ends, as Maildir readers expect; the
 * caller converts CRLF (md_msg_write_crlf does it while writing). With
 * save_crlf they are stored with CRLF line ends instead (both
 * md_msg_write and md_msg_write_crlf then put a CR before every LF that
 * has none).
 *
 * Errors: 0 or -errno. -ENOSPC, -EDQUOT, -EIO, -EFBIG from the
 * filesystem (the LMTP answer is 452/451 for that recipient), -ENOENT
 * for an unknown user (550), -EINVAL for a refused name.
 *
 * Threads: a store may be used from several worker threads at once
 * (file names stay unique: the counter is atomic).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ringprot/common.h>

#define MD_NAME_MAX 255

struct md_store;
struct md_msg;

struct md_store_opts {
	const char *root;      /* data directory (made if missing) */
	bool no_fsync;	       /* benchmarks only: no fsync at all */
	/*
	 * Store new messages (deliveries, APPEND) with CRLF line ends, as
	 * Dovecot's mail_save_crlf: every LF gets a CR before it, so S= and
	 * W= are equal and the file is the message's wire form (FETCH can
	 * send it from the file as it is). Readers tell the two kinds apart
	 * per file by S == W, so a store may hold both.
	 */
	bool save_crlf;
	const char *hostname;  /* in unique names; NULL: gethostname() */
};

/*
 * Open (and create if missing: root, users/, spool/) the store. Returns
 * 0; -errno with *errstr_out (static or owned by the store... or NULL)
 * naming the path that failed.
 */
int md_store_open(const struct md_store_opts *o, struct md_store **st_out,
		  const char **errstr_out) RINGPROT_MUST_CHECK;
void md_store_close(struct md_store **stp);

/* Is name acceptable as a user or folder name? */
bool md_name_ok(const char *name);

/* Does user exist? 1, 0, or -errno (-EINVAL: bad name). UR_MAY_YIELD. */
int md_user_exists(struct md_store *st, const char *user) RINGPROT_MUST_CHECK
	UR_MAY_YIELD;

/* Make user's INBOX (and folder, if not NULL) with tmp/ new/ cur/.
 * Returns 0 (also when they exist), -EINVAL, -errno. UR_MAY_YIELD. */
int md_user_create(struct md_store *st, const char *user,
		   const char *folder) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * A message being received: a new spool file. Writes are buffered
 * (64 KiB) and go out through the ring.
 */
int md_msg_new(struct md_store *st, struct md_msg **m_out) RINGPROT_MUST_CHECK
	UR_MAY_YIELD;
int md_msg_write(struct md_msg *m, const void *buf,
		 size_t len) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/* As md_msg_write, turning CR LF into LF (a CR at the end of buf is held
 * until the next call decides). */
int md_msg_write_crlf(struct md_msg *m, const void *buf,
		      size_t len) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/* Bytes written to the file so far (after CRLF conversion). */
uint64_t md_msg_size(const struct md_msg *m);
/* All written: flush and fsync the spool copy. Once per message. */
int md_msg_finish(struct md_msg *m) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * Deliver the finished message to user's folder (NULL: INBOX): link into
 * new/ (or copy into tmp/, rename into new/), fsync new/. The folder is
 * made if missing. 0 once it is durable in new/; -ENOENT (no such user),
 * -EINVAL, -ENOSPC/-EDQUOT/-EIO...: then nothing is left in new/ or
 * tmp/. name_out (may be NULL) gets the file's base name in new/
 * (MD_NAME_MAX + 1 bytes always hold it; a smaller buffer truncates).
 */
int md_msg_deliver(struct md_msg *m, const char *user, const char *folder,
		   char *name_out, size_t name_size) RINGPROT_MUST_CHECK
	UR_MAY_YIELD;

/* Drop the message: the spool file is unlinked (delivered copies stay).
 * Accepts NULL. UR_MAY_YIELD. */
void md_msg_free(struct md_msg **mp) UR_MAY_YIELD;

/*
 * Delivery notification (imapd's IDLE waits on it when lmtpd runs in the
 * same process): fn(user, folder, arg) after each durable delivery, on
 * the delivering thread. One listener; NULL removes it.
 */
typedef void md_notify_fn(const char *user, const char *folder, void *arg);
void md_store_on_delivery(struct md_store *st, md_notify_fn *fn, void *arg);

/*
 * Counters since md_store_open (all threads): durable deliveries, and
 * fsyncs of new/ directories actually issued. Concurrent deliveries into
 * one folder share an fsync (maildir.c), so under load dir_syncs grows
 * slower than deliveries.
 */
struct md_store_stats {
	uint64_t deliveries;
	uint64_t dir_syncs;
};
void md_store_stats(const struct md_store *st, struct md_store_stats *out);

/*
 * Remove files older than max_age_s (Maildir asks for 36 hours: 129600)
 * in user's tmp/ and its folders' tmp/, or with user NULL in the
 * spool. Returns how many, or -errno (-ENOENT: no such user).
 * UR_MAY_YIELD.
 */
int md_clean_tmp(struct md_store *st, const char *user,
		 uint64_t max_age_s) RINGPROT_MUST_CHECK UR_MAY_YIELD;

#endif /* RINGPROT_EXAMPLES_MAILDIR_H */
