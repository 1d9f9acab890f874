/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/maildir: what mailbox.c and folder.c share. */
#ifndef RINGPROT_EXAMPLES_MBOX_INTERNAL_H
#define RINGPROT_EXAMPLES_MBOX_INTERNAL_H

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ringprot/common.h>

#include "mailbox.h"

struct md_store;

#define MB_UIDLIST	"ringprot-uidlist"
#define MB_UIDLIST_LOCK "ringprot-uidlist.lock"
#define MB_KEYWORDS	"ringprot-keywords"
#define MB_FILE_MAX	((size_t)64 << 20) /* uidlist, keywords, subs */

/* The user's directory: an fd, -ENOENT, -EINVAL (bad user name). */
int mb__user_open(struct md_store *st,
		  const char *user) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/* ".name" of a checked, non-INBOX name into out (MD_MBOX_NAME_MAX + 2). */
void mb__dir_name(const char *name, char *out, size_t size);
/* The folder's directory (INBOX: the user's): an fd, -ENOENT, -EINVAL. */
int mb__folder_open(struct md_store *st, const char *user,
		    const char *name) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/* Take the OFD write lock on dfd's lock file name (made if missing):
 * *fd_out holds it until mb__unlock(). -ETIMEDOUT, -errno. */
int mb__lock(int dfd, const char *name,
	     int *fd_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;
void mb__unlock(int fd) UR_MAY_YIELD;

/* A directory stream on fd (taken over: closed with the stream, or now
 * if none can be made): 0, or -errno with fd closed. */
int mb__fdopendir(int fd, DIR **dir_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/* The whole of a small file (NUL-terminated, malloc'd); -ENOENT, -EFBIG
 * over max. */
int mb__read_file(int dfd, const char *name, size_t max, char **buf_out,
		  size_t *len_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/* Read len bytes at off, all of them (-EIO if the file is shorter). */
int mb__read_all(int fd, char *buf, size_t len,
		 uint64_t off) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/* Replace dfd's name by buf atomically: name.tmp, fsync, rename, fsync
 * of dfd (not with no_fsync). Call with the file's lock held. */
int mb__write_file(const struct md_store *st, int dfd, const char *name,
		   const char *buf,
		   size_t len) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/* Make the folder's uidlist if it has none (a fresh UIDVALIDITY). */
int mb__uidlist_init(const struct md_store *st,
		     int dfd) RINGPROT_MUST_CHECK UR_MAY_YIELD;

#include <sys/types.h>
#include <time.h>

struct md_msg_info;

/* mtimes (ns) of new/, cur/ and the uidlist, and the uidlist's inode. */
struct stamp {
	uint64_t new_m, cur_m, list_m;
	ino_t list_ino;
};

/*
 * The inotify check of a folder (notify.c): a handle's watch in its
 * thread's instance.
 */
struct mb_note {
	uint64_t thread; /* the instance's thread (an id, not a pointer) */
	uint64_t seen;	 /* the folder's event count at the last sync */
	struct mb_note *prev, *next; /* the folder's other handles */
	struct md_mbox *owner;	     /* the handle it is part of */
	uint32_t slot;
	bool on;
};

/* Watch the folder of these three open directories for this thread:
 * 0, or -errno with n off (the handle uses its stamps). */
int mb__note_add(struct mb_note *n, int dfd, int new_fd,
		 int cur_fd) RINGPROT_MUST_CHECK;
/* Stop watching (a handle off, or another thread's: nothing). */
void mb__note_del(struct mb_note *n);
/*
 * Read the thread's events. True when nothing happened to n's folder
 * since n->seen was set; *gen_out: the count to set n->seen to once a
 * sync beginning now succeeds (UINT64_MAX: not watched).
 */
bool mb__note_quiet(struct mb_note *n, uint64_t *gen_out);
/* Is n a working watch of this thread? */
bool mb__note_live(const struct mb_note *n);
/* The handles watching n's folder on this thread but n, one after the
 * other (prev: NULL for the first); NULL at the end. */
struct mb_note *mb__note_peer(const struct mb_note *n,
			      const struct mb_note *prev);

/* A closed handle's list kept for the next opener (mailbox.c). */
struct mb_snap;
void mb__snap_free(struct mb_snap *sn);
uint64_t mb__snap_gen(const struct mb_snap *sn);
/* Keep sn on n's folder while other handles of the thread have it open
 * (then true: the folder owns sn); false: the caller keeps sn. */
bool mb__note_stash(struct mb_note *n, struct mb_snap *sn);
/* The list kept on n's folder, now the caller's (NULL: none). */
struct mb_snap *mb__note_take(struct mb_note *n);

/* A mailbox handle (mailbox.c), used by mbox-save.c too. */
struct md_mbox {
	struct md_store *st;
	const char *name; /* in user[], as opened: md_mbox_sync() opens it
			   * again after md_mbox_release() */
	int dfd, new_fd, cur_fd; /* -1 after md_mbox_release() */
	bool ro;
	bool stamped;
	bool released; /* md_mbox_release(): no descriptors, no paths */
	bool listed;   /* synced once (msgs is the folder's list) */
	uint8_t nkw;   /* keywords defined (slots up to the last) */
	struct stamp stamp;
	struct mb_note note;
	uint32_t uidvalidity, uidnext;
	struct md_msg_info *msgs;
	size_t n;
	char *arena; /* paths copied in one block (copy_peer) */
	size_t arena_len;
	char **kw;     /* MD_KW_MAX slots, made with the first keyword */
	uint32_t *chg; /* added, vanished, flagged of the last sync */
	char user[];   /* then its NUL, the name and its NUL */
};

/* A handle without the first sync (copy and append targets). */
int mb__mbox_new(struct md_store *st, const char *user, const char *name,
		 bool readonly,
		 struct md_mbox **mb_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/* Find msgs[i]'s file again after a rename elsewhere; -ENOENT gone. */
int mb__relocate(struct md_mbox *mb, size_t i) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/* Remove msgs[i] from the handle's list. */
void mb__msgs_drop(struct md_mbox *mb, size_t i);
/* fsync(fd) unless the store has no_fsync. */
int mb__sync_fd(const struct md_store *st,
		int fd) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/*
 * Give UIDs to the files with these base names, in this order, under
 * the lock (a base that has one already, from another process's sync,
 * keeps it): uids_out[i], and *uidvalidity_out.
 */
int mb__assign_bases(struct md_mbox *mb, char *const *bases, size_t n,
		     uint32_t *uids_out, uint32_t *uidvalidity_out)
	RINGPROT_MUST_CHECK UR_MAY_YIELD;

/* Close an fd through the ring, ignoring the result (close(2) frees it
 * in any case). */
void mb__close(int fd) UR_MAY_YIELD;

#endif /* RINGPROT_EXAMPLES_MBOX_INTERNAL_H */
