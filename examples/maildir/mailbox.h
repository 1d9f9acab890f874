/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/maildir: the store's mailboxes, as an IMAP server sees them. */
#ifndef RINGPROT_EXAMPLES_MAILBOX_H
#define RINGPROT_EXAMPLES_MAILBOX_H

/*
 * Names. A mailbox name is the IMAP name as the client sent it (modified
 * UTF-7, stored as-is, as Dovecot does), "." the hierarchy separator:
 * "INBOX" (any case) is the user's Maildir itself, "A.B" the Maildir++
 * folder <user>/.A.B/. A name is refused (-EINVAL) unless: 1 to
 * MD_MBOX_NAME_MAX bytes of printable ASCII, no '/', '*', '%', no empty
 * level (no leading or trailing '.', no ".."), '&' only as a modified
 * UTF-7 shift of the right syntax ("&-" or "&<base64>-": whether it
 * decodes to valid UTF-16 is the session's check), no level below INBOX
 * ("INBOX.x": INBOX has no children here). Nothing built from a name can
 * leave the user's directory.
 *
 * Per folder (in its directory, beside tmp/ new/ cur/):
 *   ringprot-uidlist       "ringprot-uidlist 1 <uidvalidity> <next uid>"
 *                          then one "<uid> <base name>" line per message,
 *                          ascending (base: the file name without ":2,..")
 *   ringprot-uidlist.lock  an OFD lock (fcntl F_OFD_SETLK) on it guards
 *                          the two files below across processes
 *   ringprot-keywords      "<index> <keyword>" lines, index 0-25 = the
 *                          letters a-z in file names
 * New UIDs are appended to the uidlist (one fdatasync; the next UID is
 * then the greater of the header's and the last entry's plus one); when
 * entries are dropped, or the file was torn by a crash, it is rewritten
 * whole, as the keywords file always is: a temporary file, fsync,
 * rename, fsync of the directory. UIDVALIDITY is the creation time (seconds,
 * above any this process made before) and kept; UIDs are never reused (the next
 * UID only grows). A lost or torn uidlist is made again with a new
 * UIDVALIDITY (clients then resynchronise). The lock is taken
 * without blocking the thread (non-blocking attempts, ur_sleep_until in
 * between) and given up after md_mbox_lock_timeout_ms (-ETIMEDOUT). A
 * lock file left by a dead process holds no lock (the kernel drops OFD
 * locks with their last descriptor).
 *
 * Flags in file names: "<base>:2,<letters>", letters in ASCII order:
 * D \Draft, F \Flagged, P (passed: no IMAP flag, kept), R \Answered,
 * S \Seen, T \Deleted, then a-z the folder's keywords. Unknown letters
 * are dropped at the next rename.
 *
 * Errors: 0 or -errno. -EINVAL a refused name or argument, -ENOENT no
 * such user/mailbox/message, -EEXIST exists, -EPERM not allowed (INBOX
 * delete...), -EROFS a change through a read-only handle, -ETIMEDOUT the
 * lock, -ENOSPC no keyword left (26 per folder), -EFBIG over a cap, and
 * the filesystem's.
 *
 * I/O: file data and names go through the ring (ur_openat, ur_read,
 * ur_write, ur_fsync, ur_renameat, ur_linkat, ur_unlinkat, ur_mkdirat):
 * calls marked UR_MAY_YIELD park the calling fiber (or drive the
 * thread's loop outside a fiber). Directory listings (readdir), stat,
 * fcntl locks and futimens are plain syscalls: metadata of an open
 * inode or a directory read, short, never waiting on another process.
 *
 * Threads: a struct md_mbox is used by one fiber at a time. Any number of
 * handles, in any number of processes, may be open on one mailbox.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ringprot/common.h>

#define MD_MBOX_NAME_MAX 200 /* ".name" and our files stay < NAME_MAX */
#define MD_KW_MAX	 26
#define MD_KW_LEN_MAX	 64

struct md_store;
struct md_mbox;
struct md_append;

/* Message flags (bits of md_msg_info.flags). */
enum {
	MD_F_DRAFT = 1U << 0,	 /* D */
	MD_F_FLAGGED = 1U << 1,	 /* F */
	MD_F_PASSED = 1U << 2,	 /* P */
	MD_F_ANSWERED = 1U << 3, /* R */
	MD_F_SEEN = 1U << 4,	 /* S */
	MD_F_DELETED = 1U << 5,	 /* T */
	MD_F_STORED = 0x3fU,	 /* the ones in file names */
	MD_F_RECENT = 1U << 6,	 /* this handle's, never stored */
};

/* Folder attributes (md_folder_info.attrs). */
enum {
	MD_ATTR_NOSELECT = 1U << 0, /* a missing parent */
	MD_ATTR_HASCHILDREN = 1U << 1,
	MD_ATTR_HASNOCHILDREN = 1U << 2,
	MD_ATTR_SENT = 1U << 3, /* RFC 6154, by name */
	MD_ATTR_DRAFTS = 1U << 4,
	MD_ATTR_TRASH = 1U << 5,
	MD_ATTR_JUNK = 1U << 6,
	MD_ATTR_SUBSCRIBED = 1U << 7,
};

/* Lock timeout for every mailbox of the process (default 10,000 ms). */
extern unsigned md_mbox_lock_timeout_ms;

/* ---------------------------------------------------------------------
 * Names and flags (pure functions: no I/O, safe on any input)
 * --------------------------------------------------------------------- */

/* Is name "INBOX" in any case? */
bool md_mbox_is_inbox(const char *name);
/* 0 if name is acceptable (see above), -EINVAL if not. */
int md_mbox_name_check(const char *name) RINGPROT_MUST_CHECK;
/* Is kw a keyword we store (IMAP atom chars, not starting with '\',
 * 1 to MD_KW_LEN_MAX bytes)? */
bool md_keyword_ok(const char *kw);
/* Flags and keyword bits from a file name's ":2," part (none: 0, 0). */
void md_flags_parse(const char *fname, unsigned *flags_out, uint32_t *kw_out);
/* ":2,<letters>" for flags (MD_F_STORED bits) and kw into out (at least
 * 40 bytes). Returns its length. */
size_t md_flags_format(unsigned flags, uint32_t kw, char *out, size_t size);
/* Length of the base name: up to the first ':'. */
size_t md_base_len(const char *fname);
/* The ",<key>=<digits>" field of the base name (key 'S' or 'W'): 0, or
 * -ENOENT if absent or malformed. */
int md_name_field(const char *fname, char key,
		  uint64_t *val_out) RINGPROT_MUST_CHECK;
/* Parse one uidlist line (no LF): the header (kind 0: uidvalidity in
 * *a, next UID in *b) or an entry (kind 1: uid in *a, base at
 * line + *b, up to the end). Returns kind or -EINVAL. */
int md_uidlist_parse(const char *line, int want_header, uint32_t *a,
		     uint32_t *b) RINGPROT_MUST_CHECK;

/* ---------------------------------------------------------------------
 * Folders of a user
 * --------------------------------------------------------------------- */

struct md_folder_info {
	char *name;	/* IMAP name ("INBOX", "A.B") */
	unsigned attrs; /* MD_ATTR_* */
};

/*
 * Every folder of user, INBOX first then by name, each missing parent of
 * a folder as a \Noselect entry. *list_out is malloc'd: free it with
 * md_folder_list_free(). Returns 0, -ENOENT (no such user), -errno.
 */
int md_folder_list(struct md_store *st, const char *user,
		   struct md_folder_info **list_out,
		   size_t *n_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;
void md_folder_list_free(struct md_folder_info **listp, size_t n);

/* Create name and its missing parents, with a fresh UIDVALIDITY.
 * -EEXIST if it exists (INBOX always does). */
int md_folder_create(struct md_store *st, const char *user,
		     const char *name) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * Delete name and its messages. RFC 3501 6.3.4: a folder with children
 * loses its messages and becomes \Noselect (its children stay); a name
 * that is only a \Noselect parent is refused (-EPERM), as is INBOX. The
 * directory is first renamed out of sight (atomic), then removed.
 */
int md_folder_delete(struct md_store *st, const char *user,
		     const char *name) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * Rename from (with its children: "from.x" becomes "to.x") to to,
 * making to's missing parents. -EEXIST if to or one of the new
 * children's names exists, -EINVAL if to is below from. INBOX (RFC 3501
 * 6.3.5): to is created and INBOX's messages move into it; INBOX stays,
 * empty, and its UIDs are not reused. Not atomic across children: a
 * crash midway leaves some children under each name (none lost).
 */
int md_folder_rename(struct md_store *st, const char *user, const char *from,
		     const char *to) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/* Subscriptions: the user's "subscriptions" file (one name a line, as
 * Courier and Dovecot keep it). Names need not exist. */
int md_subscribe(struct md_store *st, const char *user, const char *name,
		 bool on) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/* The subscribed names (malloc'd array of malloc'd strings): free with
 * md_strv_free(). */
int md_subscriptions(struct md_store *st, const char *user, char ***names_out,
		     size_t *n_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;
void md_strv_free(char ***vp, size_t n);

struct md_status {
	uint32_t messages;
	uint32_t recent; /* files still in new/: nobody's \Recent yet */
	uint32_t uidnext;
	uint32_t uidvalidity;
	uint32_t unseen;
	uint32_t deleted; /* with \Deleted (RFC 9051 STATUS DELETED) */
	uint64_t size;	  /* sum of the CRLF sizes (RFC 8438) */
};

/* STATUS of name: a read-only open and sync (two directory reads and
 * the uidlist; sizes from the W= of names). */
int md_folder_status(struct md_store *st, const char *user, const char *name,
		     struct md_status *out) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/* ---------------------------------------------------------------------
 * A selected mailbox
 * --------------------------------------------------------------------- */

/* md_msg_info.internal_date not read yet. */
#define MD_DATE_UNKNOWN INT64_MIN

struct md_msg_info {
	uint32_t uid;
	unsigned flags;	       /* MD_F_*, MD_F_RECENT included */
	uint32_t keywords;     /* bit i: md_mbox_keyword(mb, i) */
	uint64_t size;	       /* with CRLF line ends (RFC822.SIZE); 0 if
				* the file vanished before it was read */
	int64_t internal_date; /* the file's mtime (seconds), or
				* MD_DATE_UNKNOWN: md_mbox_msg_date */
	char *path;	       /* "cur/<file>" (or "new/<file>"), borrowed */
};

/* What one md_mbox_sync() found, borrowed until the next call on mb.
 * UIDs ascending in each array. */
struct md_mbox_changes {
	const uint32_t *added; /* new messages (EXISTS) */
	size_t n_added;
	const uint32_t *vanished; /* gone (EXPUNGE) */
	size_t n_vanished;
	const uint32_t *flagged; /* flags or keywords changed (FETCH) */
	size_t n_flagged;
};

/*
 * Open user's mailbox name and sync it once (no changes reported: the
 * caller reads md_mbox_msgs()). readonly (EXAMINE): new/ is not claimed, flags
 * and expunges are refused (-EROFS), UIDs are still assigned. Returns 0,
 * -ENOENT (no such mailbox, or a \Noselect one), -EINVAL, -ETIMEDOUT, -errno.
 */
int md_mbox_open(struct md_store *st, const char *user, const char *name,
		 bool readonly,
		 struct md_mbox **mb_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;
void md_mbox_close(struct md_mbox **mbp) UR_MAY_YIELD;

/*
 * Bring the message list up to date: claim new/ into cur/ ("...:2,",
 * \Recent for this handle only: the handle that moved a file owns its
 * \Recent), give UIDs to files without one (in delivery order: the
 * name's time, then the name), drop entries whose file is gone, read
 * flags from names. ch_out (may be NULL) tells what changed since the
 * last sync of this handle or its own md_mbox_store/expunge. When
 * nothing changed (mtimes of new/, cur/ and the uidlist, once they are
 * over 2 s old: coarse clocks), it costs 3 stats and no listing.
 * -ENOENT: the folder was deleted (a rename elsewhere is followed: the
 * handle holds the directory, not its name).
 */
int md_mbox_sync(struct md_mbox *mb, struct md_mbox_changes *ch_out)
	RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * Park the handle while its user waits (IMAP IDLE): its descriptors
 * (three directories) are closed and its messages' file names dropped;
 * it keeps the list (md_mbox_msgs(): UIDs, flags, keywords, sizes,
 * dates), what the next sync compares with. md_mbox_poll() tells what
 * changed and leaves it released; md_mbox_sync() opens the folder again
 * by the name it was opened with (renamed or removed meanwhile:
 * -ENOENT) and lists it, as a change would. On a released handle the
 * accessors work; message reads, stores and expunges fail (-EBADF);
 * md_mbox_copy() must not be called (sync first). Calling it again
 * frees the last sync's changes (md_mbox_poll's). UR_MAY_YIELD.
 */
void md_mbox_release(struct md_mbox *mb) UR_MAY_YIELD;
/*
 * md_mbox_sync() for a released handle that stays released: the same
 * changes, found with the descriptors opened for the time of the call
 * (3 stats when nothing changed), no file names kept. On a handle not
 * released it is md_mbox_sync().
 */
int md_mbox_poll(struct md_mbox *mb, struct md_mbox_changes *ch_out)
	RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * Is the handle's cheap check an inotify watch (one read per sync for
 * all of the thread's folders) rather than three stats? True from its
 * first sync until md_mbox_release(), on the thread that synced it,
 * where the thread could get an inotify instance and the watches.
 */
bool md_mbox_watched(const struct md_mbox *mb);
/*
 * Close the calling thread's inotify instance (one descriptor, made by
 * its first sync), as the thread's end does. Its handles must be closed
 * or released first; later syncs make a new one.
 */
void md_mbox_thread_done(void);
/* Full listings of folders made by this thread's syncs (a handle opened
 * while another of the thread is up to date copies its list instead):
 * for tests and benchmarks. */
uint64_t md_mbox_thread_listings(void);
/* The name the handle was opened with (borrowed, as long as mb). */
const char *md_mbox_name(const struct md_mbox *mb);
/* The messages by ascending UID, borrowed until the next call on mb. */
const struct md_msg_info *md_mbox_msgs(const struct md_mbox *mb, size_t *n_out);
/* Index of uid in md_mbox_msgs(), or -ENOENT. */
long md_mbox_find(const struct md_mbox *mb, uint32_t uid);
uint32_t md_mbox_uidvalidity(const struct md_mbox *mb);
uint32_t md_mbox_uidnext(const struct md_mbox *mb);
bool md_mbox_readonly(const struct md_mbox *mb);
/* Keyword i (0-25) or NULL; how many are defined. */
const char *md_mbox_keyword(const struct md_mbox *mb, unsigned i);
unsigned md_mbox_keyword_count(const struct md_mbox *mb);
/* The index of keyword kw, defined in the folder if missing. -EINVAL
 * (not md_keyword_ok), -ENOSPC (26 defined). */
int md_mbox_keyword_index(struct md_mbox *mb,
			  const char *kw) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * Paths to watch (inotify) for changes by others: the folder's new/ and
 * cur/ directories and its uidlist, absolute, into 3 buffers of size
 * bytes (PATH_MAX is enough). -ENAMETOOLONG, -errno.
 */
int md_mbox_watch_paths(const struct md_mbox *mb, char *new_out, char *cur_out,
			char *uidlist_out, size_t size) RINGPROT_MUST_CHECK;

/*
 * The INTERNALDATE of message uid (the file's mtime, seconds), read at
 * the first ask and kept: 0, -ENOENT (expunged meanwhile), -EBADF (a
 * released handle), -errno. A file renamed by another process is found
 * again.
 */
int md_mbox_msg_date(struct md_mbox *mb, uint32_t uid,
		     int64_t *date_out) RINGPROT_MUST_CHECK;

/* Open message uid for reading: an fd (O_RDONLY, the caller closes it)
 * or -ENOENT (expunged meanwhile). A file renamed by another process is
 * found again. */
int md_mbox_msg_open(struct md_mbox *mb,
		     uint32_t uid) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/*
 * Is the message stored with CRLF line ends (store option save_crlf)? Its
 * name says so: S= equals W= (every LF has its CR), and the file's bytes
 * are then the message as IMAP sends it. False for a name without both.
 */
bool md_msg_is_crlf(const struct md_msg_info *m);
/* The whole file with LF line ends in a malloc'd buffer (a CRLF file,
 * md_msg_is_crlf, loses the CR of each CR LF); -EFBIG if the file is
 * larger than max. */
int md_mbox_msg_read(struct md_mbox *mb, uint32_t uid, size_t max,
		     char **buf_out,
		     size_t *len_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * Set uid's flags (MD_F_STORED bits; MD_F_RECENT is kept as it was) and
 * keywords to exactly these: a rename within cur/. A file renamed by
 * another process meanwhile is found again and renamed from there.
 * Returns 0, -ENOENT (expunged elsewhere), -EROFS.
 */
int md_mbox_store(struct md_mbox *mb, uint32_t uid, unsigned flags,
		  uint32_t keywords) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/* STORE FLAGS, +FLAGS, -FLAGS. */
enum md_store_op {
	MD_STORE_SET,
	MD_STORE_ADD,
	MD_STORE_REMOVE,
};

/*
 * As md_mbox_store, with +FLAGS/-FLAGS applied to the flags the file's
 * name carries at the rename (not to this handle's possibly older
 * view): two sessions adding different flags at once both keep theirs.
 * md_mbox_msgs() then holds the result. -EINVAL: no such op.
 */
int md_mbox_store_op(struct md_mbox *mb, uint32_t uid, enum md_store_op op,
		     unsigned flags,
		     uint32_t keywords) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * Expunge the \Deleted messages (uids NULL), or those of uids[0..n) that
 * are \Deleted (UID EXPUNGE). A message whose \Deleted another session
 * took away meanwhile (its file renamed) is kept. *out gets the expunged UIDs,
 * ascending (malloc'd, the caller frees; NULL when none), *n_out their count;
 * they are no longer in md_mbox_msgs() and no sync reports them again.
 */
int md_mbox_expunge(struct md_mbox *mb, const uint32_t *uids, size_t n,
		    uint32_t **out,
		    size_t *n_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;

struct md_copy_result {
	uint32_t uidvalidity; /* the target's */
	size_t n;
	uint32_t *src; /* source UIDs, ascending (malloc'd) */
	uint32_t *dst; /* the target UIDs, in the same order */
};
void md_copy_result_fini(struct md_copy_result *r);

/*
 * Copy (hard links under new names into the target's cur/, same flags
 * and keywords, no \Recent) or move (renames: the source's messages are
 * then gone from md_mbox_msgs() as if expunged; r->src lists them) the
 * messages of uids[0..n) (absent ones skipped) into mailbox dest of the
 * same user, and give them UIDs there. A copy that fails midway removes
 * what it linked. -ENOENT no such target, -EROFS a move from a
 * read-only handle.
 */
int md_mbox_copy(struct md_mbox *mb, const uint32_t *uids, size_t n,
		 const char *dest, bool move,
		 struct md_copy_result *r) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * APPEND: begin writes into the target's tmp/; write takes the message
 * as the client sends it (CRLF line ends, turned into LF); commit sets
 * flags, keywords (names, defined in the folder if missing) and the
 * internal date (seconds; <= 0: now), syncs, renames into cur/ and
 * assigns the UID (*uidvalidity_out, *uid_out: APPENDUID). Nothing is
 * visible unless commit returns 0. abort (and a failed commit) removes
 * the tmp/ file and frees; commit frees too. Accepts NULL.
 */
int md_append_begin(struct md_store *st, const char *user, const char *name,
		    struct md_append **ap_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;
int md_append_write(struct md_append *ap, const void *buf,
		    size_t len) RINGPROT_MUST_CHECK UR_MAY_YIELD;
int md_append_commit(struct md_append **app, unsigned flags,
		     const char *const *keywords, size_t n_keywords,
		     int64_t date, uint32_t *uidvalidity_out,
		     uint32_t *uid_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;
void md_append_abort(struct md_append **app) UR_MAY_YIELD;

#endif /* RINGPROT_EXAMPLES_MAILBOX_H */
