/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/maildir: the store: unique names, the spool copy, delivery
 * into new/, the folder-descriptor cache, tmp/ cleanup.
 *
 * One rule settles durability: md_msg_deliver() returns 0 only after the
 * message's data (fdatasync of the spool copy, or of the tmp/ copy) and
 * its name in new/ (fsync of new/) are on disk. A file appears in new/
 * only by an atomic link or rename of a complete, synced file, so a
 * reader never sees half a message; every failure after that point
 * unlinks the name again.
 *
 * The spool copy is hard-linked straight into new/ (not into tmp/ and
 * then renamed): it is already complete and synced, linkat never
 * replaces an existing name (a collision is -EEXIST, not a lost
 * message), and it saves one metadata op per recipient. tmp/ is used
 * for what Maildir made it for, a copy being written: when the link
 * fails (EXDEV: the user's folder is on another filesystem; EPERM,
 * EMLINK: no hard links there) the message is copied into tmp/,
 * fdatasynced, then renamed into new/.
 *
 * Ops per single-recipient delivery, warm cache: openat, write(v),
 * fdatasync (spool); linkat, fsync (new/); unlinkat, close (spool). The
 * 64 KiB buffer only takes what fits: a write that would overflow it
 * goes out as one writev of the buffer plus the caller's bytes, so a
 * large md_msg_write() is never copied.
 *
 * Folder descriptors: each delivery needs its folder's directory (for
 * linkat) and new/ (for fsync). They are kept open in a cache shared by
 * every thread (a mutex, never held across a ring op), at most
 * MD_DIR_CACHE entries (two fds each: far below the runtime's fd cap),
 * least recently used evicted first, each entry reopened after
 * MD_DIR_TTL_S so an operator's rename of a user directory is followed
 * within that time. Entries are reference counted: one in use is only
 * unhooked from the cache, and closed by its last user. A cached folder
 * whose directory was removed makes linkat fail with ENOENT: the entry is
 * dropped and the delivery retried once with a fresh open.
 *
 * Grouped fsyncs of new/ (sync_new_dir): concurrent deliveries into
 * one folder each need new/ synced after their link, and one fsync that
 * starts after all their links covers them all. So a delivery that
 * finds an fsync of that new/ in flight on its thread queues and waits
 * for the next one; the leader, when its fsync is done, wakes the first
 * waiter to start the next fsync for every link made meanwhile (group
 * commit). Under load that is one directory fsync per batch of arrivals
 * instead of one per delivery (md_store_stats counts them). Groups are
 * per thread (a fiber's wake is then a plain waiter wake, and the
 * cancellation of a waiter cannot race another thread); with N workers
 * at most N fsyncs of one new/ run at once. The spool's fdatasyncs
 * cannot be shared (one per file), but the ring runs concurrent ones in
 * parallel and a journalling filesystem folds them into one commit.
 * Copies on the write path: lmtpd unstuffs DATA (dots, CR LF) in one
 * pass from the protstream's buffer into a 16 KiB chunk, which this
 * store appends to its 64 KiB buffer (one more memcpy, so that a small
 * message is one write), or writes from where it is with one writev
 * when it does not fit; further recipients get hard links, never
 * copies. Later: an O_TMPFILE spool
 * linked in through /proc/self/fd would save the spool's unlinkat and
 * leave nothing behind after a crash.
 *
 * Benchmark on a journalling ext4 (bench/lmtp.sh makes a fresh one): an
 * ext4 without a journal, as this machine's root is, checks every
 * recently deleted inode on each file creation (recently_deleted()),
 * which after many deletions costs more than all the rest of a
 * delivery.
 *
 * Directory listing (md_clean_tmp) has no ring op: it reads the
 * directory and stats with plain syscalls, and unlinks through the ring.
 * It is a maintenance path, not a delivery one. md_user_exists() fstats
 * a cached directory (an open inode: never blocks) to see it was not
 * removed.
 */
#include "maildir.h"
#include "md-internal.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ringprot/uring.h>

#define MD_BUF_SIZE   ((size_t)64 * 1024)
#define MD_DIR_CACHE  128
#define MD_DIR_TTL_S  30
#define MD_HOST_MAX   96  /* escaped host in names: keeps them < 255 */
#define MD_BASE_MAX   200 /* time.M.P.Q.host */
#define MD_UNIQ_MAX   (MD_NAME_MAX + 1)	    /* base plus ",S=...,W=..." */
#define MD_KEY_MAX    (2 * MD_NAME_MAX + 3) /* "user/.folder" */
#define MD_LINK_TRIES 3 /* fresh names after an (impossible) EEXIST */

/* A folder's open directories: the maildir itself and its new/. */
struct md_dir {
	struct md_dir *prev, *next; /* LRU, most recent first */
	int fd;
	int new_fd;
	unsigned refs;
	bool cached; /* hooked in the store's list */
	uint64_t opened_ns;
	char key[]; /* path under users/: "user" or "user/.folder" */
};

struct md_store {
	int root_fd;
	int users_fd;
	int spool_fd;
	bool no_fsync;
	bool save_crlf;
	char host[MD_HOST_MAX + 1]; /* escaped */
	pthread_mutex_t lock;	    /* dirs, notify */
	struct md_dir *head, *tail;
	unsigned ndirs;
	md_notify_fn *notify;
	void *notify_arg;
	atomic_uint_fast64_t deliveries;
	atomic_uint_fast64_t dir_syncs;
};

struct md_msg {
	struct md_store *st;
	int fd;
	int err; /* sticky: the first write error */
	bool finished;
	bool cr_held;	  /* md_msg_write_crlf: a CR ended the last call */
	char last;	  /* last byte stored, for bare-LF counting */
	char *buf;	  /* MD_BUF_SIZE, made at the first write */
	size_t len;	  /* bytes in buf */
	uint64_t off;	  /* bytes in the file */
	uint64_t bare_lf; /* LFs not after a CR: the CRLF size's extra */
	char name[MD_BASE_MAX]; /* in spool/ */
};

/* Unique across every store and thread of the process (with the pid). */
static atomic_uint_fast64_t md_counter;

/* Failure text of md_store_open: per thread, until its next call. */
static __thread char md_errbuf[PATH_MAX + 64];

bool md_name_ok(const char *name)
{
	size_t n;

	if (name == NULL || name[0] == '\0' || name[0] == '.')
		return false;
	for (n = 0; name[n] != '\0'; n++) {
		unsigned char c = (unsigned char)name[n];

		if (n >= MD_NAME_MAX || c == '/' || c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

/* Close a descriptor the ring may not be able to take (teardown). */
static void fd_close(int fd)
{
	if (fd >= 0 && ur_close(fd) < 0) {
		/* close(2) frees the fd even on error; nothing to undo */
	}
}

/*
 * Maildir asks for '/' and ':' in the host part to be written \057 and
 * \072; ',' (\054) and '\' (\134) are escaped too, so that ",S=" fields
 * parse and the escape stays reversible. Cut at MD_HOST_MAX.
 */
static void host_escape(const char *host, char *out, size_t size)
{
	size_t o = 0;

	for (; *host != '\0'; host++) {
		char c = *host;

		if (c == '/' || c == ':' || c == ',' || c == '\\' ||
		    (unsigned char)c < 0x20 || c == 0x7f) {
			if (o + 4 >= size)
				break;
			(void)snprintf(out + o, 5, "\\%03o", (unsigned char)c);
			o += 4;
		} else {
			if (o + 1 >= size)
				break;
			out[o++] = c;
		}
	}
	out[o] = '\0';
}

/* time.M<usec>P<pid>Q<counter>.<host>: at most about 160 bytes. */
static void uniq_name(const struct md_store *st, char *out, size_t size)
{
	struct timespec ts;
	uint64_t q = atomic_fetch_add_explicit(&md_counter, 1,
					       memory_order_relaxed) +
		     1;

	clock_gettime(CLOCK_REALTIME, &ts);
	(void)snprintf(out, size, "%lld.M%06ldP%ldQ%llu.%s",
		       (long long)ts.tv_sec, ts.tv_nsec / 1000, (long)getpid(),
		       (unsigned long long)q, st->host);
}

/* mkdirat where an existing directory is success. */
static int mkdir_ok(int dfd, const char *path)
{
	int ret = ur_mkdirat(dfd, path, 0700);

	return ret == -EEXIST ? 0 : ret;
}

static int open_dir(int dfd, const char *path)
{
	return ur_openat(dfd, path, O_RDONLY | O_DIRECTORY, 0);
}

static int sync_dir(const struct md_store *st, int fd)
{
	return st->no_fsync ? 0 : ur_fsync(fd, 0);
}

/*
 * Grouped syncs of a new/ directory (see the note at the top). One
 * group per directory descriptor with syncs pending on this thread; a
 * group lives while it has a leader or waiters, all of whom hold a
 * reference on the md_dir that owns the descriptor, so the number
 * cannot be reused under it. More distinct directories at once than
 * MD_SYNC_GROUPS sync alone, as before.
 */
#define MD_SYNC_GROUPS 16

struct md_sync_wait {
	struct md_sync_wait *next;
	struct ur_waiter w;
	uint64_t need; /* covered once an fsync started after link #need */
	int ret;
	bool done;
};

struct md_sync_group {
	int fd;		 /* -1: free */
	bool running;	 /* a leader's fsync is in flight */
	uint64_t linked; /* links noted: the last one's number */
	struct md_sync_wait *waiters;
};

static __thread struct md_sync_group md_groups[MD_SYNC_GROUPS];
static __thread bool md_groups_ready;

static struct md_sync_group *group_get(int fd)
{
	struct md_sync_group *free_g = NULL;

	if (!md_groups_ready) {
		for (int i = 0; i < MD_SYNC_GROUPS; i++)
			md_groups[i].fd = -1;
		md_groups_ready = true;
	}
	for (int i = 0; i < MD_SYNC_GROUPS; i++) {
		if (md_groups[i].fd == fd)
			return &md_groups[i];
		if (md_groups[i].fd < 0 && free_g == NULL)
			free_g = &md_groups[i];
	}
	if (free_g != NULL) {
		*free_g = (struct md_sync_group){.fd = fd};
	}
	return free_g;
}

static void group_unlink(struct md_sync_group *g, struct md_sync_wait *w)
{
	for (struct md_sync_wait **pp = &g->waiters; *pp != NULL;
	     pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			return;
		}
	}
}

/*
 * Sync new/ (fd) after this fiber's link into it. A fiber that finds an
 * fsync of the same new/ in flight on this thread waits for the next
 * one instead of starting its own: an fsync that starts after a link
 * covers it, the one in flight may not. The leader, once its fsync is
 * done, answers every waiter whose link came before it started, and
 * hands the lead to the first one left (that one starts the next fsync
 * for all the rest). On error nobody is answered with it but the
 * leader: each waiter syncs again (as leader in turn) and gets its own
 * result, so an error never reaches a delivery it did not concern.
 */
static int sync_new_dir(struct md_store *st, int fd)
{
	struct md_sync_group *g;
	struct md_sync_wait me;
	uint64_t upto;
	int ret;

	if (st->no_fsync)
		return 0;
	g = ur_fiber_self() != NULL ? group_get(fd) : NULL;
	if (g == NULL) {
		atomic_fetch_add_explicit(&st->dir_syncs, 1,
					  memory_order_relaxed);
		return ur_fsync(fd, 0);
	}
	me = (struct md_sync_wait){.need = ++g->linked};
	/* Woken to lead, another fiber may have taken the lead first. */
	while (g->running) {
		ur_waiter_init(&me.w, ur_loop_current());
		me.next = g->waiters;
		g->waiters = &me;
		ret = ur_waiter_wait(&me.w);
		if (me.done)
			return me.ret;
		group_unlink(g, &me);
		if (ret < 0) {
			/* Cancelled: a lead handed to us passes on. */
			if (!g->running && g->waiters != NULL)
				ur_waiter_wake(&g->waiters->w);
			else if (!g->running)
				g->fd = -1;
			return ret;
		}
	}
	g->running = true;
	upto = g->linked;
	atomic_fetch_add_explicit(&st->dir_syncs, 1, memory_order_relaxed);
	ret = ur_fsync(fd, 0);
	g->running = false;
	for (struct md_sync_wait **pp = &g->waiters; *pp != NULL;) {
		struct md_sync_wait *w = *pp;

		if (ret == 0 && w->need <= upto) {
			*pp = w->next;
			w->done = true;
			w->ret = 0;
			ur_waiter_wake(&w->w);
		} else {
			pp = &w->next;
		}
	}
	if (g->waiters != NULL)
		ur_waiter_wake(&g->waiters->w); /* the next leader */
	else
		g->fd = -1;
	return ret;
}

/* -------------------------------------------------------------------- */
/* Store */

static int open_fail(int ret, const char *root, const char *what,
		     const char **errstr_out)
{
	if (errstr_out != NULL) {
		(void)snprintf(md_errbuf, sizeof(md_errbuf), "%s%s%s", root,
			       what[0] != '\0' ? "/" : "", what);
		*errstr_out = md_errbuf;
	}
	return ret;
}

int md_store_open(const struct md_store_opts *o, struct md_store **st_out,
		  const char **errstr_out)
{
	struct md_store *st;
	char host[256];
	int ret;

	*st_out = NULL;
	if (errstr_out != NULL)
		*errstr_out = NULL;
	if (o == NULL || o->root == NULL || o->root[0] == '\0')
		return -EINVAL;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	st->root_fd = st->users_fd = st->spool_fd = -1;
	st->no_fsync = o->no_fsync;
	st->save_crlf = o->save_crlf;
	if (o->hostname != NULL) {
		(void)snprintf(host, sizeof(host), "%s", o->hostname);
	} else if (gethostname(host, sizeof(host)) < 0) {
		(void)snprintf(host, sizeof(host), "localhost");
	}
	host[sizeof(host) - 1] = '\0';
	host_escape(host, st->host, sizeof(st->host));

	ret = mkdir_ok(AT_FDCWD, o->root);
	if (ret == 0)
		ret = st->root_fd = open_dir(AT_FDCWD, o->root);
	if (ret < 0) {
		ret = open_fail(ret, o->root, "", errstr_out);
		goto out_free;
	}
	ret = mkdir_ok(st->root_fd, "users");
	if (ret == 0)
		ret = st->users_fd = open_dir(st->root_fd, "users");
	if (ret < 0) {
		ret = open_fail(ret, o->root, "users", errstr_out);
		goto out_free;
	}
	ret = mkdir_ok(st->root_fd, "spool");
	if (ret == 0)
		ret = st->spool_fd = open_dir(st->root_fd, "spool");
	if (ret < 0) {
		ret = open_fail(ret, o->root, "spool", errstr_out);
		goto out_free;
	}
	ret = -pthread_mutex_init(&st->lock, NULL);
	if (ret < 0)
		goto out_free;
	*st_out = st;
	return 0;

out_free:
	fd_close(st->spool_fd);
	fd_close(st->users_fd);
	fd_close(st->root_fd);
	free(st);
	return ret;
}

static void dir_close(struct md_dir *d)
{
	/* Plain close: may run on a thread without a loop (teardown). */
	close(d->new_fd);
	close(d->fd);
	free(d);
}

void md_store_close(struct md_store **stp)
{
	struct md_store *st = *stp;

	if (st == NULL)
		return;
	*stp = NULL;
	while (st->head != NULL) {
		struct md_dir *d = st->head;

		st->head = d->next;
		dir_close(d);
	}
	pthread_mutex_destroy(&st->lock);
	close(st->spool_fd);
	close(st->users_fd);
	close(st->root_fd);
	free(st);
}

void md_store_on_delivery(struct md_store *st, md_notify_fn *fn, void *arg)
{
	pthread_mutex_lock(&st->lock);
	st->notify = fn;
	st->notify_arg = arg;
	pthread_mutex_unlock(&st->lock);
}

/* -------------------------------------------------------------------- */
/* Folder cache */

static void lru_unhook(struct md_store *st, struct md_dir *d)
{
	if (d->prev != NULL)
		d->prev->next = d->next;
	else
		st->head = d->next;
	if (d->next != NULL)
		d->next->prev = d->prev;
	else
		st->tail = d->prev;
	d->prev = d->next = NULL;
	d->cached = false;
	st->ndirs--;
}

static void lru_push(struct md_store *st, struct md_dir *d)
{
	d->prev = NULL;
	d->next = st->head;
	if (st->head != NULL)
		st->head->prev = d;
	else
		st->tail = d;
	st->head = d;
	d->cached = true;
	st->ndirs++;
}

static struct md_dir *lru_find(struct md_store *st, const char *key)
{
	for (struct md_dir *d = st->head; d != NULL; d = d->next)
		if (strcmp(d->key, key) == 0)
			return d;
	return NULL;
}

/* Drop a reference: the last one of an unhooked entry closes it. */
static void dir_put(struct md_store *st, struct md_dir *d)
{
	bool last;

	pthread_mutex_lock(&st->lock);
	last = --d->refs == 0 && !d->cached;
	pthread_mutex_unlock(&st->lock);
	if (last) {
		fd_close(d->new_fd);
		fd_close(d->fd);
		free(d);
	}
}

/* Unhook d so that the next dir_get() opens the folder afresh. */
static void dir_forget(struct md_store *st, struct md_dir *d)
{
	pthread_mutex_lock(&st->lock);
	if (d->cached)
		lru_unhook(st, d);
	pthread_mutex_unlock(&st->lock);
}

/* Make tmp/ new/ cur/ in the maildir fd (existing ones are fine). */
static int make_subdirs(const struct md_store *st, int fd)
{
	static const char *const sub[] = {"tmp", "new", "cur"};
	int ret;

	for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
		ret = mkdir_ok(fd, sub[i]);
		if (ret < 0)
			return ret;
	}
	return sync_dir(st, fd);
}

/* Make user's folder .<folder> (Maildir++) with its marker file. */
static int make_folder(const struct md_store *st, int ufd, const char *path)
{
	int fd, ret;

	ret = mkdir_ok(ufd, path);
	if (ret < 0)
		return ret;
	fd = ret = open_dir(ufd, path);
	if (ret < 0)
		return ret;
	ret = ur_openat(fd, "maildirfolder", O_WRONLY | O_CREAT, 0600);
	if (ret >= 0) {
		fd_close(ret);
		ret = make_subdirs(st, fd);
	}
	fd_close(fd);
	return ret < 0 ? ret : sync_dir(st, ufd);
}

/*
 * Open the folder's directory and its new/, making the folder (and the
 * subdirectories) if create. -ENOENT: no such user.
 */
static int folder_open(struct md_store *st, const char *user,
		       const char *folder, bool create, int *fd_out,
		       int *new_out)
{
	char sub[MD_NAME_MAX + 2];
	int ufd, fd, nfd, ret;

	ufd = ret = open_dir(st->users_fd, user);
	if (ret < 0)
		return ret == -ENOTDIR ? -ENOENT : ret;
	fd = ufd;
	if (folder != NULL) {
		(void)snprintf(sub, sizeof(sub), ".%s", folder);
		fd = open_dir(ufd, sub);
		if (fd == -ENOENT && create) {
			ret = make_folder(st, ufd, sub);
			fd = ret < 0 ? ret : open_dir(ufd, sub);
		}
		fd_close(ufd);
		if (fd < 0)
			return fd;
	}
	nfd = open_dir(fd, "new");
	if (nfd == -ENOENT && create) {
		ret = make_subdirs(st, fd);
		nfd = ret < 0 ? ret : open_dir(fd, "new");
	}
	if (nfd < 0) {
		fd_close(fd);
		return nfd;
	}
	*fd_out = fd;
	*new_out = nfd;
	return 0;
}

/* A fresh cache hit (taking a reference), or NULL. Lock held. */
static struct md_dir *dir_lookup(struct md_store *st, const char *key,
				 uint64_t now, struct md_dir **stale_out)
{
	struct md_dir *d = lru_find(st, key);

	*stale_out = NULL;
	if (d == NULL)
		return NULL;
	if (now - d->opened_ns > (uint64_t)MD_DIR_TTL_S * 1000000000ULL) {
		lru_unhook(st, d);
		if (d->refs == 0)
			*stale_out = d;
		return NULL;
	}
	d->refs++;
	if (st->head != d) {
		lru_unhook(st, d);
		lru_push(st, d);
	}
	return d;
}

/* Make room: unhook the least recently used idle entry. Lock held. */
static struct md_dir *dir_evict(struct md_store *st)
{
	for (struct md_dir *d = st->tail; d != NULL; d = d->prev) {
		if (d->refs == 0) {
			lru_unhook(st, d);
			return d;
		}
	}
	return NULL;
}

static void dir_free_idle(struct md_dir *d)
{
	if (d != NULL) {
		fd_close(d->new_fd);
		fd_close(d->fd);
		free(d);
	}
}

/*
 * The folder's directories, from the cache or opened now (and cached if
 * there is room). *fresh_out: opened by this call. Release with
 * dir_put().
 */
static int dir_get(struct md_store *st, const char *user, const char *folder,
		   bool create, struct md_dir **d_out, bool *fresh_out)
{
	uint64_t now = ur_now_ns(CLOCK_MONOTONIC);
	struct md_dir *d, *other, *idle;
	char key[MD_KEY_MAX];
	size_t klen;
	int ret;

	if (folder != NULL)
		(void)snprintf(key, sizeof(key), "%s/.%s", user, folder);
	else
		(void)snprintf(key, sizeof(key), "%s", user);
	pthread_mutex_lock(&st->lock);
	other = dir_lookup(st, key, now, &idle);
	pthread_mutex_unlock(&st->lock);
	dir_free_idle(idle);
	if (other != NULL) {
		*d_out = other;
		*fresh_out = false;
		return 0;
	}

	klen = strlen(key) + 1;
	d = malloc(sizeof(*d) + klen);
	if (d == NULL)
		return -ENOMEM;
	memcpy(d->key, key, klen);
	ret = folder_open(st, user, folder, create, &d->fd, &d->new_fd);
	if (ret < 0) {
		free(d);
		return ret;
	}
	d->refs = 1;
	d->cached = false;
	d->opened_ns = now;
	d->prev = d->next = NULL;

	/*
	 * Another fiber or thread may have cached it meanwhile: then this
	 * one serves this delivery only, and its dir_put() closes it.
	 */
	idle = NULL;
	pthread_mutex_lock(&st->lock);
	other = lru_find(st, d->key);
	if (other == NULL) {
		if (st->ndirs >= MD_DIR_CACHE)
			idle = dir_evict(st);
		if (st->ndirs < MD_DIR_CACHE)
			lru_push(st, d);
	}
	pthread_mutex_unlock(&st->lock);
	dir_free_idle(idle);
	*d_out = d;
	*fresh_out = true;
	return 0;
}

/* -------------------------------------------------------------------- */
/* Users */

int md_user_exists(struct md_store *st, const char *user)
{
	struct md_dir *d;
	struct stat sb;
	bool live;
	int fd;

	if (!md_name_ok(user))
		return -EINVAL;
	/*
	 * A cached INBOX answers without a ring op, unless its directory
	 * was removed (no links left): an fstat of an open directory never
	 * blocks. Held under the lock, so the entry cannot be closed.
	 */
	pthread_mutex_lock(&st->lock);
	d = lru_find(st, user);
	live = d != NULL && fstat(d->fd, &sb) == 0 && sb.st_nlink > 0;
	pthread_mutex_unlock(&st->lock);
	if (live)
		return 1;
	fd = ur_openat(st->users_fd, user, O_RDONLY | O_DIRECTORY, 0);
	if (fd == -ENOENT || fd == -ENOTDIR)
		return 0;
	if (fd < 0)
		return fd;
	fd_close(fd);
	return 1;
}

int md_user_create(struct md_store *st, const char *user, const char *folder)
{
	struct md_dir *d;
	bool fresh;
	int ret;

	if (!md_name_ok(user) || (folder != NULL && !md_name_ok(folder)))
		return -EINVAL;
	ret = ur_mkdirat(st->users_fd, user, 0700);
	if (ret == 0)
		ret = sync_dir(st, st->users_fd);
	else if (ret == -EEXIST)
		ret = 0;
	if (ret < 0)
		return ret;
	ret = dir_get(st, user, NULL, true, &d, &fresh);
	if (ret < 0)
		return ret;
	dir_put(st, d);
	if (folder == NULL)
		return 0;
	ret = dir_get(st, user, folder, true, &d, &fresh);
	if (ret < 0)
		return ret;
	dir_put(st, d);
	return 0;
}

/* -------------------------------------------------------------------- */
/* Messages: the spool copy */

int md_msg_new(struct md_store *st, struct md_msg **m_out)
{
	struct md_msg *m;
	int fd = -EEXIST;

	*m_out = NULL;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	m->st = st;
	m->last = '\n';
	/* O_RDWR: a copy into another filesystem reads it back. */
	for (int i = 0; i < MD_LINK_TRIES && fd == -EEXIST; i++) {
		uniq_name(st, m->name, sizeof(m->name));
		fd = ur_openat(st->spool_fd, m->name, O_RDWR | O_CREAT | O_EXCL,
			       0600);
	}
	if (fd < 0) {
		free(m);
		return fd;
	}
	m->fd = fd;
	*m_out = m;
	return 0;
}

/* Count LFs not preceded by a CR (what a CRLF reader adds a byte for). */
static void count_lf(struct md_msg *m, const char *p, size_t n)
{
	const char *end = p + n, *lf;
	char prev = m->last;

	if (n == 0)
		return;
	while ((lf = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		if ((lf == p ? prev : lf[-1]) != '\r')
			m->bare_lf++;
		prev = '\n';
		p = lf + 1;
	}
	m->last = end[-1];
}

/* Write iov out at the file's end, all of it (short writes go on). */
static int write_all(struct md_msg *m, struct iovec *iov, int cnt)
{
	while (cnt > 0) {
		ssize_t n = ur_writev(m->fd, iov, cnt, (int64_t)m->off);

		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EIO;
		m->off += (uint64_t)n;
		while (cnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

static int msg_flush(struct md_msg *m)
{
	struct iovec iov = {m->buf, m->len};
	int ret;

	if (m->len == 0)
		return 0;
	ret = write_all(m, &iov, 1);
	if (ret == 0)
		m->len = 0;
	return ret;
}

/*
 * Append p: copied when it fits in the buffer, else written at once
 * together with what the buffer holds (one writev, no copy).
 */
static int msg_out(struct md_msg *m, const char *p, size_t n)
{
	struct iovec iov[2];
	int ret;

	if (n == 0)
		return 0;
	count_lf(m, p, n);
	if (m->len + n <= MD_BUF_SIZE) {
		if (m->buf == NULL) {
			m->buf = malloc(MD_BUF_SIZE);
			if (m->buf == NULL)
				return -ENOMEM;
		}
		memcpy(m->buf + m->len, p, n);
		m->len += n;
		return 0;
	}
	iov[0] = (struct iovec){m->buf, m->len};
	iov[1] = (struct iovec){(void *)p, n};
	ret = m->len == 0 ? write_all(m, iov + 1, 1) : write_all(m, iov, 2);
	if (ret == 0)
		m->len = 0;
	return ret;
}

static int msg_check(struct md_msg *m)
{
	if (m == NULL || m->finished)
		return -EINVAL;
	return m->err;
}

static int msg_out_fn(void *arg, const char *p, size_t n)
{
	return msg_out(arg, p, n);
}

int md_msg_write(struct md_msg *m, const void *buf, size_t len)
{
	int ret = msg_check(m);

	if (ret < 0)
		return ret;
	if (m->st->save_crlf) {
		ret = md__crlf_out(buf, len, m->last, msg_out_fn, m);
		if (ret < 0)
			m->err = ret;
		return ret;
	}
	if (m->cr_held) {
		m->cr_held = false;
		ret = msg_out(m, "\r", 1);
	}
	if (ret == 0)
		ret = msg_out(m, buf, len);
	if (ret < 0)
		m->err = ret;
	return ret;
}

static int crlf_out(struct md_msg *m, const char *p, size_t len)
{
	const char *end = p + len, *seg = p, *cr;
	int ret;

	if (len == 0)
		return 0;
	if (m->cr_held) {
		m->cr_held = false;
		if (*p != '\n') {
			ret = msg_out(m, "\r", 1);
			if (ret < 0)
				return ret;
		}
	}
	while ((cr = memchr(p, '\r', (size_t)(end - p))) != NULL) {
		if (cr + 1 == end) {
			m->cr_held = true;
			return msg_out(m, seg, (size_t)(cr - seg));
		}
		p = cr + 1;
		if (*p != '\n')
			continue;
		ret = msg_out(m, seg, (size_t)(cr - seg));
		if (ret < 0)
			return ret;
		seg = p; /* the LF starts the next run */
	}
	return msg_out(m, seg, (size_t)(end - seg));
}

int md_msg_write_crlf(struct md_msg *m, const void *buf, size_t len)
{
	int ret = msg_check(m);

	if (ret < 0)
		return ret;
	if (m->st->save_crlf)
		return md_msg_write(m, buf, len); /* CRLF kept */
	ret = crlf_out(m, buf, len);
	if (ret < 0)
		m->err = ret;
	return ret;
}

uint64_t md_msg_size(const struct md_msg *m)
{
	return m->off + m->len;
}

int md_msg_finish(struct md_msg *m)
{
	int ret = msg_check(m);

	if (ret < 0)
		return ret;
	if (m->cr_held) {
		m->cr_held = false;
		ret = msg_out(m, "\r", 1);
	}
	if (ret == 0)
		ret = msg_flush(m);
	if (ret == 0 && !m->st->no_fsync)
		ret = ur_fsync(m->fd, UR_FSYNC_DATASYNC);
	if (ret < 0) {
		m->err = ret;
		return ret;
	}
	free(m->buf);
	m->buf = NULL;
	m->finished = true;
	return 0;
}

void md_msg_free(struct md_msg **mp)
{
	struct md_msg *m = *mp;

	if (m == NULL)
		return;
	*mp = NULL;
	if (ur_unlinkat(m->st->spool_fd, m->name, 0) < 0) {
		/* left for md_clean_tmp(): it is not in any new/ */
	}
	fd_close(m->fd);
	free(m->buf);
	free(m);
}

/* -------------------------------------------------------------------- */
/* Delivery */

/*
 * The link failed across filesystems (or the target has no hard links):
 * copy the spool file into tmp/, sync it, rename it into new/. On any
 * error the tmp/ file is unlinked.
 */
static int copy_in(struct md_msg *m, struct md_dir *d, const char *tmp,
		   const char *dst)
{
	struct md_store *st = m->st;
	uint64_t off = 0, size = md_msg_size(m);
	char *buf;
	int fd, ret = 0;

	buf = malloc(MD_BUF_SIZE);
	if (buf == NULL)
		return -ENOMEM;
	fd = ur_openat(d->fd, tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		free(buf);
		return fd;
	}
	while (ret == 0 && off < size) {
		size_t want = size - off < MD_BUF_SIZE ? (size_t)(size - off)
						       : MD_BUF_SIZE;
		ssize_t n = ur_read(m->fd, buf, want, (int64_t)off);

		if (n <= 0) {
			ret = n < 0 ? (int)n : -EIO; /* the spool shrank */
			break;
		}
		for (ssize_t w = 0; w < n && ret == 0;) {
			ssize_t k = ur_write(fd, buf + w, (size_t)(n - w),
					     (int64_t)(off + (uint64_t)w));

			if (k <= 0)
				ret = k < 0 ? (int)k : -EIO;
			else
				w += k;
		}
		off += (uint64_t)n;
	}
	free(buf);
	if (ret == 0 && !st->no_fsync)
		ret = ur_fsync(fd, UR_FSYNC_DATASYNC);
	fd_close(fd);
	if (ret == 0) {
		ret = ur_renameat(d->fd, tmp, d->fd, dst, RENAME_NOREPLACE);
		/* No RENAME_NOREPLACE on this filesystem: names are unique. */
		if (ret == -EINVAL)
			ret = ur_renameat(d->fd, tmp, d->fd, dst, 0);
	}
	if (ret < 0 && ur_unlinkat(d->fd, tmp, 0) < 0) {
		/* md_clean_tmp() takes it later */
	}
	return ret;
}

/* Link (or copy) the message into d's new/ as name, then sync new/. */
static int deliver_to(struct md_msg *m, struct md_dir *d, char *name,
		      size_t name_size)
{
	char dst[MD_UNIQ_MAX + 8], tmp[MD_UNIQ_MAX + 8];
	uint64_t size = md_msg_size(m), vsize = size + m->bare_lf;
	int ret = -EEXIST;

	for (int i = 0; i < MD_LINK_TRIES && ret == -EEXIST; i++) {
		char u[MD_BASE_MAX];

		uniq_name(m->st, u, sizeof(u));
		(void)snprintf(name, name_size, "%s,S=%llu,W=%llu", u,
			       (unsigned long long)size,
			       (unsigned long long)vsize);
		(void)snprintf(dst, sizeof(dst), "new/%s", name);
		ret = ur_linkat(m->st->spool_fd, m->name, d->fd, dst, 0);
		if (ret == -EXDEV || ret == -EPERM || ret == -EMLINK) {
			(void)snprintf(tmp, sizeof(tmp), "tmp/%s", name);
			ret = copy_in(m, d, tmp, dst);
		}
	}
	if (ret < 0)
		return ret;
	ret = sync_new_dir(m->st, d->new_fd);
	if (ret < 0 && ur_unlinkat(d->fd, dst, 0) < 0) {
		/*
		 * Neither synced nor removed: the message may still show up;
		 * the caller's error makes the sender retry (a duplicate,
		 * never a loss).
		 */
	}
	return ret;
}

static void notify(struct md_store *st, const char *user, const char *folder)
{
	md_notify_fn *fn;
	void *arg;

	pthread_mutex_lock(&st->lock);
	fn = st->notify;
	arg = st->notify_arg;
	pthread_mutex_unlock(&st->lock);
	if (fn != NULL)
		fn(user, folder, arg);
}

int md_msg_deliver(struct md_msg *m, const char *user, const char *folder,
		   char *name_out, size_t name_size)
{
	char name[MD_UNIQ_MAX];
	struct md_dir *d;
	bool fresh;
	int ret;

	if (m == NULL || !m->finished || !md_name_ok(user) ||
	    (folder != NULL && !md_name_ok(folder)))
		return -EINVAL;
	for (;;) {
		ret = dir_get(m->st, user, folder, true, &d, &fresh);
		if (ret < 0)
			return ret;
		ret = deliver_to(m, d, name, sizeof(name));
		if (ret == -ENOENT && !fresh) {
			/* The cached folder was removed: look again, once. */
			dir_forget(m->st, d);
			dir_put(m->st, d);
			continue;
		}
		dir_put(m->st, d);
		break;
	}
	if (ret == -ENOENT)
		ret = -EIO; /* the folder was there: the spool file is not */
	if (ret < 0)
		return ret;
	if (name_out != NULL)
		(void)snprintf(name_out, name_size, "%s", name);
	atomic_fetch_add_explicit(&m->st->deliveries, 1, memory_order_relaxed);
	notify(m->st, user, folder);
	return 0;
}

void md_store_stats(const struct md_store *st, struct md_store_stats *out)
{
	out->deliveries = atomic_load_explicit(&st->deliveries,
					       memory_order_relaxed);
	out->dir_syncs =
		atomic_load_explicit(&st->dir_syncs, memory_order_relaxed);
}

/* -------------------------------------------------------------------- */
/* Cleanup */

/* Unlink the files in dfd's path older than cutoff. Count or -errno. */
static int clean_dir(int dfd, const char *path, time_t cutoff)
{
	struct dirent *de;
	DIR *dir;
	int fd, n = 0, ret = 0;

	fd = open_dir(dfd, path);
	if (fd < 0)
		return fd == -ENOENT ? 0 : fd;
	dir = fdopendir(fd);
	if (dir == NULL) {
		ret = -errno;
		fd_close(fd);
		return ret;
	}
	while ((de = readdir(dir)) != NULL) {
		struct stat sb;

		if (fstatat(fd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(sb.st_mode))
			continue; /* gone meanwhile, or not ours to remove */
		if (sb.st_atime >= cutoff || sb.st_mtime >= cutoff)
			continue;
		ret = ur_unlinkat(fd, de->d_name, 0);
		if (ret == 0)
			n++;
		else if (ret != -ENOENT)
			break;
		ret = 0;
	}
	closedir(dir);
	return ret < 0 ? ret : n;
}

/* clean_dir() of every folder's tmp/ under the user's directory. */
static int clean_user(struct md_store *st, const char *user, time_t cutoff)
{
	char path[MD_KEY_MAX + 8];
	struct dirent *de;
	DIR *dir;
	int fd, n, ret;

	fd = open_dir(st->users_fd, user);
	if (fd < 0)
		return fd == -ENOTDIR ? -ENOENT : fd;
	n = clean_dir(fd, "tmp", cutoff);
	dir = fdopendir(fd);
	if (dir == NULL) {
		ret = -errno;
		fd_close(fd);
		return ret;
	}
	while (n >= 0 && (de = readdir(dir)) != NULL) {
		if (de->d_name[0] != '.' || !md_name_ok(de->d_name + 1))
			continue;
		(void)snprintf(path, sizeof(path), "%s/tmp", de->d_name);
		ret = clean_dir(fd, path, cutoff);
		n = ret < 0 ? ret : n + ret;
	}
	closedir(dir);
	return n;
}

int md_clean_tmp(struct md_store *st, const char *user, uint64_t max_age_s)
{
	time_t now = time(NULL);
	time_t cutoff = max_age_s > (uint64_t)now ? 0 : now - (time_t)max_age_s;

	if (user == NULL)
		return clean_dir(st->spool_fd, ".", cutoff);
	if (!md_name_ok(user))
		return -EINVAL;
	return clean_user(st, user, cutoff);
}

/* -------------------------------------------------------------------- */
/* For mailbox.c (md-internal.h) */

int md__users_fd(const struct md_store *st)
{
	return st->users_fd;
}

bool md__no_fsync(const struct md_store *st)
{
	return st->no_fsync;
}

bool md__save_crlf(const struct md_store *st)
{
	return st->save_crlf;
}

int md__crlf_out(const char *p, size_t n, char prev, md__out_fn *out, void *arg)
{
	const char *start = p, *end = p + n, *seg = p, *lf;
	int ret;

	while ((lf = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		p = lf + 1;
		if ((lf > start ? lf[-1] : prev) == '\r')
			continue;
		ret = out(arg, seg, (size_t)(lf - seg));
		if (ret == 0)
			ret = out(arg, "\r", 1);
		if (ret < 0)
			return ret;
		seg = lf; /* the LF starts the next run */
	}
	return seg < end ? out(arg, seg, (size_t)(end - seg)) : 0;
}

void md__uniq_name(const struct md_store *st, char *out, size_t size)
{
	uniq_name(st, out, size);
}

void md__folder_forget(struct md_store *st, const char *user,
		       const char *folder)
{
	char key[MD_KEY_MAX];
	struct md_dir *d, *idle = NULL;

	if (folder != NULL)
		(void)snprintf(key, sizeof(key), "%s/.%s", user, folder);
	else
		(void)snprintf(key, sizeof(key), "%s", user);
	pthread_mutex_lock(&st->lock);
	d = lru_find(st, key);
	if (d != NULL) {
		lru_unhook(st, d);
		if (d->refs == 0)
			idle = d;
	}
	pthread_mutex_unlock(&st->lock);
	dir_free_idle(idle);
}
