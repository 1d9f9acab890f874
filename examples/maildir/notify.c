/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/maildir: the cheap check of a selected mailbox, by inotify.
 *
 * Without it, md_mbox_sync() of an unchanged folder stats new/, cur/ and
 * the uidlist: three syscalls for every IMAP command (a NOOP is mostly
 * those and its round trip). With it, the folder's three directories are
 * watched by an inotify instance of the calling thread, and the check is
 * one read(2) of that instance, which finds nothing when nothing changed
 * in any folder the thread watches.
 *
 * Why the read misses nothing the stats would see: inotify queues an
 * event inside the syscall that makes the change (rename into new/ or
 * cur/, link, unlink, the uidlist replaced or appended to), before that
 * syscall returns. So a read that drains the queue comes after every
 * event of a change finished before the read began: a change another
 * process finished before the client sent its command is seen by the
 * command's sync, on any backend and however the command's bytes were
 * read. Each event counts for its folder (gen); a handle remembers the
 * count its last sync began at, and the check is "same count". No
 * mtime is compared, so a change in the same clock tick as the last
 * listing is seen too (the stamps' 2 s distrust is not needed here).
 *
 * When in doubt the handle falls back to the stamps: a queue overflow
 * (IN_Q_OVERFLOW) counts for every folder, a watch the kernel drops
 * (IN_IGNORED) or a directory removed (IN_DELETE_SELF) ends the
 * folder's watch for good, a
 * failed read counts for every folder, and a thread without an instance
 * (out of fs.inotify.max_user_instances, no /proc) watches nothing.
 *
 * Threads: one instance per thread (a thread-local table, freed when
 * the thread ends). A handle's watch belongs to the thread that made it,
 * where it must be closed or released (as a session's handle is: a
 * connection stays on its loop); on another thread the handle just uses
 * the stamps. The folder lists its handles, so that a handle opened on a
 * folder another handle of the thread has up to date copies that list
 * (mailbox.c) instead of listing the directories. Events from our own
 * changes count as well: the next sync then compares stamps, as without
 * a watch.
 */
#include "mailbox.h"
#include "mbox-internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

/* What changes a stamp: an entry of new/ or cur/ added, removed or
 * renamed; in the folder's own directory, the uidlist replaced (rename)
 * or written in place (an append). */
#define NOTE_DIR_MASK                                          \
	(IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | \
	 IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
#define NOTE_TOP_MASK (NOTE_DIR_MASK | IN_MODIFY)

/* A watched folder; refs == 0: a free slot. */
struct note_folder {
	int wd[3];	       /* folder, new/, cur/; -1 once dropped */
	struct mb_note *notes; /* the handles (refs of them) */
	struct mb_snap *snap;  /* the last closed one's list */
	uint32_t refs;
	uint32_t next_free; /* refs == 0: the next free slot */
	bool broken;	    /* a watch dropped or refused: stamps only */
	uint64_t gen;
};

/* wd -> slot, open addressing with linear probing; wd < 0: empty. */
struct note_map_ent {
	int wd;
	uint32_t slot;
};

struct note_thread {
	int fd;
	uint64_t id;
	struct note_folder *f;
	uint32_t nf, capf;
	uint32_t free_head; /* a free slot below nf, or UINT32_MAX */
	struct note_map_ent *map;
	uint32_t mapn, mapcap; /* mapcap: a power of two */
};

static _Thread_local struct note_thread *note_tl;
static _Thread_local bool note_failed; /* no instance: do not retry */
static atomic_uint_fast64_t note_ids;
static pthread_key_t note_key;
static pthread_once_t note_once = PTHREAD_ONCE_INIT;

static void note_thread_free(void *arg)
{
	struct note_thread *t = arg;

	if (t == NULL)
		return;
	(void)close(t->fd);
	for (uint32_t i = 0; i < t->nf; i++)
		mb__snap_free(t->f[i].snap);
	free(t->f);
	free(t->map);
	free(t);
	note_tl = NULL;
}

void md_mbox_thread_done(void)
{
	struct note_thread *t = note_tl;

	if (t == NULL)
		return;
	(void)pthread_setspecific(note_key, NULL);
	note_thread_free(t);
}

static void note_key_make(void)
{
	if (pthread_key_create(&note_key, note_thread_free) != 0)
		note_key = (pthread_key_t)-1;
}

/* This thread's instance, made on first use; NULL if it cannot be. */
static struct note_thread *note_thread(void)
{
	struct note_thread *t;

	if (note_tl != NULL || note_failed)
		return note_tl;
	note_failed = true; /* until it works */
	if (pthread_once(&note_once, note_key_make) != 0 ||
	    note_key == (pthread_key_t)-1)
		return NULL;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	t->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (t->fd < 0 || pthread_setspecific(note_key, t) != 0) {
		if (t->fd >= 0)
			(void)close(t->fd);
		free(t);
		return NULL;
	}
	t->id = atomic_fetch_add(&note_ids, 1) + 1;
	t->free_head = UINT32_MAX;
	note_tl = t;
	note_failed = false;
	return t;
}

/* ---- the wd map ---- */

static uint32_t map_hash(int wd, uint32_t cap)
{
	return ((uint32_t)wd * 2654435761u) & (cap - 1);
}

static long map_find(const struct note_thread *t, int wd)
{
	if (t->mapcap == 0)
		return -1;
	for (uint32_t i = map_hash(wd, t->mapcap);;
	     i = (i + 1) & (t->mapcap - 1)) {
		if (t->map[i].wd < 0)
			return -1;
		if (t->map[i].wd == wd)
			return (long)i;
	}
}

static void map_put_raw(struct note_map_ent *map, uint32_t cap, int wd,
			uint32_t slot)
{
	uint32_t i = map_hash(wd, cap);

	while (map[i].wd >= 0)
		i = (i + 1) & (cap - 1);
	map[i] = (struct note_map_ent){wd, slot};
}

static int map_put(struct note_thread *t, int wd, uint32_t slot)
{
	if ((t->mapn + 1) * 2 > t->mapcap) {
		uint32_t cap = t->mapcap ? t->mapcap * 2 : 64;
		struct note_map_ent *m = malloc(cap * sizeof(*m));

		if (m == NULL)
			return -ENOMEM;
		for (uint32_t i = 0; i < cap; i++)
			m[i].wd = -1;
		for (uint32_t i = 0; i < t->mapcap; i++)
			if (t->map[i].wd >= 0)
				map_put_raw(m, cap, t->map[i].wd,
					    t->map[i].slot);
		free(t->map);
		t->map = m;
		t->mapcap = cap;
	}
	map_put_raw(t->map, t->mapcap, wd, slot);
	t->mapn++;
	return 0;
}

/* Remove wd, shifting back the entries its removal would cut off. */
static void map_del(struct note_thread *t, int wd)
{
	long at = map_find(t, wd);
	uint32_t mask = t->mapcap - 1, i, j;

	if (at < 0)
		return;
	i = (uint32_t)at;
	t->mapn--;
	for (j = (i + 1) & mask; t->map[j].wd >= 0; j = (j + 1) & mask) {
		uint32_t home = map_hash(t->map[j].wd, t->mapcap);

		/* Keep j where it is if its home lies cyclically in (i, j]. */
		if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
			continue;
		t->map[i] = t->map[j];
		i = j;
	}
	t->map[i].wd = -1;
}

/* ---- folders ---- */

static void folder_unwatch(struct note_thread *t, struct note_folder *f)
{
	for (int k = 0; k < 3; k++) {
		if (f->wd[k] < 0)
			continue;
		map_del(t, f->wd[k]);
		(void)inotify_rm_watch(t->fd, f->wd[k]);
		f->wd[k] = -1;
	}
}

/* A slot for a folder: a freed one first (a list, not a scan: a worker
 * of 10,000 sessions adds and drops folders at every IDLE and DONE). */
static long slot_new(struct note_thread *t)
{
	if (t->free_head != UINT32_MAX) {
		uint32_t i = t->free_head;

		t->free_head = t->f[i].next_free;
		return (long)i;
	}
	if (t->nf == t->capf) {
		uint32_t cap = t->capf ? t->capf * 2 : 16;
		struct note_folder *f = realloc(t->f, cap * sizeof(*f));

		if (f == NULL)
			return -ENOMEM;
		t->f = f;
		t->capf = cap;
	}
	return (long)t->nf++;
}

static void slot_free(struct note_thread *t, uint32_t slot)
{
	t->f[slot].refs = 0;
	t->f[slot].next_free = t->free_head;
	t->free_head = slot;
}

static int watch_fd(struct note_thread *t, int fd, uint32_t mask)
{
	char path[32];
	int wd;

	(void)snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	wd = inotify_add_watch(t->fd, path, mask);
	return wd < 0 ? -errno : wd;
}

/* Watch fd for slot's folder f as its wd[k]. */
static int folder_watch(struct note_thread *t, uint32_t slot, int k, int fd,
			uint32_t mask)
{
	int wd = watch_fd(t, fd, mask), ret;

	if (wd < 0)
		return wd;
	if (map_find(t, wd) >= 0)
		return -EEXIST; /* another folder's directory: not ours */
	ret = map_put(t, wd, slot);
	if (ret < 0) {
		(void)inotify_rm_watch(t->fd, wd);
		return ret;
	}
	t->f[slot].wd[k] = wd;
	return 0;
}

int mb__note_add(struct mb_note *n, int dfd, int new_fd, int cur_fd)
{
	struct note_thread *t = note_thread();
	long slot, at;
	int wd, ret;

	*n = (struct mb_note){0};
	if (t == NULL)
		return -ENOSYS;
	/* new/ first: a folder this thread watches already has it. */
	wd = watch_fd(t, new_fd, NOTE_DIR_MASK);
	if (wd < 0)
		return wd;
	at = map_find(t, wd);
	if (at >= 0) {
		slot = t->map[at].slot;
		t->f[slot].refs++;
	} else {
		slot = slot_new(t);
		if (slot < 0) {
			(void)inotify_rm_watch(t->fd, wd);
			return (int)slot;
		}
		t->f[slot] =
			(struct note_folder){.wd = {-1, -1, -1}, .refs = 1};
		ret = map_put(t, wd, (uint32_t)slot);
		if (ret < 0)
			(void)inotify_rm_watch(t->fd, wd);
		else
			t->f[slot].wd[1] = wd;
		if (ret == 0)
			ret = folder_watch(t, (uint32_t)slot, 0, dfd,
					   NOTE_TOP_MASK);
		if (ret == 0)
			ret = folder_watch(t, (uint32_t)slot, 2, cur_fd,
					   NOTE_DIR_MASK);
		if (ret < 0) {
			folder_unwatch(t, &t->f[slot]);
			slot_free(t, (uint32_t)slot);
			return ret;
		}
	}
	n->thread = t->id;
	n->slot = (uint32_t)slot;
	n->on = true;
	n->seen = UINT64_MAX; /* no sync yet */
	n->next = t->f[slot].notes;
	if (n->next != NULL)
		n->next->prev = n;
	t->f[slot].notes = n;
	return 0;
}

void mb__note_del(struct mb_note *n)
{
	struct note_thread *t = note_tl;
	struct note_folder *f;

	if (!n->on)
		return;
	n->on = false;
	if (t == NULL || t->id != n->thread)
		return; /* another thread's: its exit frees it */
	f = &t->f[n->slot];
	if (n->prev != NULL)
		n->prev->next = n->next;
	else
		f->notes = n->next;
	if (n->next != NULL)
		n->next->prev = n->prev;
	n->prev = n->next = NULL;
	if (f->refs == 1) {
		folder_unwatch(t, f);
		mb__snap_free(f->snap);
		f->snap = NULL;
		slot_free(t, n->slot);
	} else {
		f->refs--;
	}
}

bool mb__note_stash(struct mb_note *n, struct mb_snap *sn)
{
	struct note_folder *f;

	if (!mb__note_live(n))
		return false;
	f = &note_tl->f[n->slot];
	/* Kept only for another opener, and only if not older. */
	if (f->refs < 2 ||
	    (f->snap != NULL && mb__snap_gen(f->snap) > mb__snap_gen(sn)))
		return false;
	mb__snap_free(f->snap);
	f->snap = sn;
	return true;
}

struct mb_snap *mb__note_take(struct mb_note *n)
{
	struct mb_snap *sn;

	if (!mb__note_live(n))
		return NULL;
	sn = note_tl->f[n->slot].snap;
	note_tl->f[n->slot].snap = NULL;
	return sn;
}

struct mb_note *mb__note_peer(const struct mb_note *n,
			      const struct mb_note *prev)
{
	struct mb_note *p;

	if (!mb__note_live(n))
		return NULL;
	p = prev != NULL ? prev->next : note_tl->f[n->slot].notes;
	if (p == n)
		p = p->next;
	return p;
}

static void count_all(struct note_thread *t)
{
	for (uint32_t i = 0; i < t->nf; i++)
		t->f[i].gen++;
}

static void note_event(struct note_thread *t, const struct inotify_event *ev)
{
	struct note_folder *f;
	long at;

	if (ev->mask & IN_Q_OVERFLOW) {
		count_all(t);
		return;
	}
	at = map_find(t, ev->wd);
	if (at < 0)
		return; /* a watch removed: its IN_IGNORED */
	f = &t->f[t->map[at].slot];
	f->gen++;
	/* Removed (the watch goes when the last descriptor does): the
	 * folder is watched no more. */
	if (ev->mask & IN_DELETE_SELF)
		f->broken = true;
	if (ev->mask & IN_IGNORED) {
		for (int k = 0; k < 3; k++)
			if (f->wd[k] == ev->wd)
				f->wd[k] = -1;
		map_del(t, ev->wd);
		f->broken = true;
	}
}

/* Read every queued event. */
static void note_drain(struct note_thread *t)
{
	enum {
		BIG = sizeof(struct inotify_event) + NAME_MAX + 1
	};
	char buf[4 * BIG];

	for (;;) {
		ssize_t len = read(t->fd, buf, sizeof(buf));

		if (len < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				count_all(t); /* cannot tell: all changed */
			return;
		}
		/* Events are read as copies: the buffer's bytes need not be
		 * aligned for struct inotify_event (the names are not read). */
		for (ssize_t i = 0;
		     i + (ssize_t)sizeof(struct inotify_event) <= len;) {
			struct inotify_event ev;

			memcpy(&ev, buf + i, sizeof(ev));
			note_event(t, &ev);
			i += (ssize_t)sizeof(ev) + ev.len;
		}
		/* Room for the largest event was left: the queue was empty
		 * when the read ended, no need for the read that says so. */
		if (sizeof(buf) - (size_t)len >= BIG)
			return;
	}
}

bool mb__note_quiet(struct mb_note *n, uint64_t *gen_out)
{
	struct note_thread *t = note_tl;
	const struct note_folder *f;

	*gen_out = UINT64_MAX;
	if (!n->on || t == NULL || t->id != n->thread)
		return false;
	note_drain(t);
	f = &t->f[n->slot];
	if (f->broken)
		return false;
	*gen_out = f->gen;
	return n->seen == f->gen;
}

bool mb__note_live(const struct mb_note *n)
{
	const struct note_thread *t = note_tl;

	return n->on && t != NULL && t->id == n->thread &&
	       !t->f[n->slot].broken;
}
