/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/maildir: change notification for folders (imapd's IDLE). */
#ifndef RINGPROT_EXAMPLES_MAILDIR_WATCH_H
#define RINGPROT_EXAMPLES_MAILDIR_WATCH_H

/*
 * A watch asks "tell me when this folder changes": a message delivered
 * into new/, a file linked, renamed (flags) or removed (expunged) in
 * cur/. Two sources feed the same watchers:
 *
 *  - in-process: md_store_on_delivery() of the store, when lmtpd runs in
 *    the same process (the demo): the watcher hears of a delivery right
 *    after it is durable, with no kernel round trip;
 *  - inotify, read through the ring by the hub's own thread: changes made
 *    by other processes (a separate lmtpd, another imapd, an operator).
 *
 * Both may report one change: watchers must take a call as "look again",
 * not as "one message" (imapd wakes the connection with
 * srv_conn_notify, which coalesces). A folder is watched through inotify
 * only while at least one watcher wants it (two watches: new/, cur/), so
 * 10,000 idle sessions on 10,000 mailboxes cost 20,000 inotify watches
 * (fs.inotify.max_user_watches: the hub reports -ENOSPC when it is too
 * low, and that watcher still gets in-process deliveries).
 *
 * Threads: watches are added and removed from any thread; fn runs on the
 * delivering thread or the hub's thread, under the hub's lock, so after
 * md_watch_del() returns fn is not running and will not run for that
 * watch. fn must not call md_watch_* (it would deadlock) and should be
 * short (srv_conn_notify is).
 */

#include <stdbool.h>

#include <ringprot/common.h>

struct md_store;
struct md_watch_hub;
struct md_watch_ent;

typedef void md_watch_fn(void *arg);

/* Caller storage, valid from md_watch_add() until md_watch_del(). */
struct md_watch {
	/* private */
	struct md_watch *prev, *next;
	struct md_watch_ent *ent;
	md_watch_fn *fn;
	void *arg;
};

/*
 * A hub for store st, whose root directory is root (the path given to
 * md_store_open; made absolute here). It takes the store's delivery
 * notification (md_store_on_delivery) and, with inotify (false: none,
 * in-process only), starts a thread with its own ring that polls the
 * inotify descriptor. Returns 0 or -errno.
 */
int md_watch_hub_new(struct md_store *st, const char *root, bool inotify,
		     struct md_watch_hub **hub_out) RINGPROT_MUST_CHECK;
/* Stop the thread, drop the store's notification. Watches must be gone. */
void md_watch_hub_free(struct md_watch_hub **hubp);

/*
 * Watch user's folder (NULL: INBOX; a Maildir++ name as in the store,
 * "Sent" or "Lists.rust"): fn(arg) on each change from now on. Returns
 * 0, or -EINVAL (bad name) / -ENOMEM with nothing added. When inotify
 * refuses the folder (out of watches, folder missing) the watch is
 * still added, for in-process deliveries, and the refusal is counted in
 * md_watch_hub_stats().
 */
int md_watch_add(struct md_watch_hub *hub, struct md_watch *w, const char *user,
		 const char *folder, md_watch_fn *fn,
		 void *arg) RINGPROT_MUST_CHECK;
/* Stop watching; w may be reused. Accepts a watch never added (zeroed). */
void md_watch_del(struct md_watch_hub *hub, struct md_watch *w);

struct md_watch_hub_stats {
	unsigned folders;	 /* folders with a watcher */
	unsigned inotify_dirs;	 /* directories watched through inotify */
	unsigned inotify_errors; /* inotify_add_watch refusals */
	int last_error;		 /* the last refusal's -errno, 0: none */
};
void md_watch_hub_stats(struct md_watch_hub *hub,
			struct md_watch_hub_stats *out);

#endif /* RINGPROT_EXAMPLES_MAILDIR_WATCH_H */
