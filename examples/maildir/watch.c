/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/maildir/watch: who waits on which folder, and the two ways a
 * change reaches them (watch.h).
 *
 * One mutex guards everything: the folder table (key "user" or
 * "user/.folder" -> entry with its watchers) and the inotify table
 * (watch descriptor -> entry; two per entry, new/ and cur/). Watchers'
 * callbacks run under it, which is what lets md_watch_del() promise that
 * no callback runs after it returns. Both tables are chained hashes of a
 * fixed size: their chains stay short up to some 100,000 watched
 * folders, more than one process serves.
 *
 * The inotify descriptor is non-blocking and waited on with a poll op on
 * the hub's own loop (a thread: server/ has no way to run a job on a
 * worker's loop, and this one must outlive any connection); when it is
 * readable the thread reads every queued event at once with plain
 * read(2) calls until EAGAIN, then arms the poll again. A queue
 * overflow (IN_Q_OVERFLOW) wakes every watcher: something may have
 * changed anywhere.
 *
 * The events asked for are those that change what a folder lists:
 * IN_CREATE (a delivery's link or a copy), IN_MOVED_TO / IN_MOVED_FROM
 * (tmp/ to new/, new/ to cur/, a flag change in cur/), IN_DELETE (an
 * expunge). Not IN_MODIFY: Maildir never changes a file in place.
 */
#include "watch.h"

#include "maildir.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <ringprot/uring.h>

#define WATCH_BUCKETS 4096
#define WATCH_MASK                                                          \
	(IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ONLYDIR | \
	 IN_EXCL_UNLINK)
#define WATCH_KEY_MAX (2 * MD_NAME_MAX + 3)

/* An inotify watch descriptor's link to its entry. */
struct wd_link {
	struct wd_link *next;
	int wd; /* -1: none */
	struct md_watch_ent *ent;
};

struct md_watch_ent {
	struct md_watch_ent *next; /* in its key bucket */
	struct md_watch *watchers;
	struct wd_link wl[2]; /* new/, cur/ */
	char key[];
};

struct md_watch_hub {
	struct md_store *st;
	char *users; /* absolute path of <root>/users */
	pthread_mutex_t lock;
	struct md_watch_ent *by_key[WATCH_BUCKETS];
	struct wd_link *by_wd[WATCH_BUCKETS];
	struct md_watch_hub_stats stats;

	int ifd; /* inotify, -1: none */
	bool thread_started;
	pthread_t thread;
	pthread_cond_t ready;
	bool thread_ready;
	struct ur_loop *loop; /* the thread's, made and freed there */
	struct ur_op poll_op;
	bool stopping;	/* on the hub's loop only */
	bool loop_gone; /* the thread left its loop (lock) */
	int thread_err; /* lock */
};

static unsigned key_hash(const char *s)
{
	unsigned h = 2166136261u; /* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % WATCH_BUCKETS;
}

static unsigned wd_hash(int wd)
{
	return (unsigned)wd % WATCH_BUCKETS;
}

static int make_key(const char *user, const char *folder, char *key,
		    size_t size)
{
	if (!md_name_ok(user) || (folder != NULL && !md_name_ok(folder)))
		return -EINVAL;
	if (folder != NULL)
		(void)snprintf(key, size, "%s/.%s", user, folder);
	else
		(void)snprintf(key, size, "%s", user);
	return 0;
}

static struct md_watch_ent *ent_find(struct md_watch_hub *hub, const char *key)
{
	struct md_watch_ent *e = hub->by_key[key_hash(key)];

	while (e != NULL && strcmp(e->key, key) != 0)
		e = e->next;
	return e;
}

/* Wake every watcher of e. Lock held. */
static void ent_fire(struct md_watch_ent *e)
{
	for (struct md_watch *w = e->watchers; w != NULL; w = w->next)
		w->fn(w->arg);
}

/* -------------------------------------------------------------------- */
/* inotify */

static void wd_add(struct md_watch_hub *hub, struct md_watch_ent *e, int i,
		   const char *sub)
{
	char path[PATH_MAX];
	struct wd_link *l = &e->wl[i];
	int wd;

	l->wd = -1;
	l->ent = e;
	if (hub->ifd < 0)
		return;
	(void)snprintf(path, sizeof(path), "%s/%s/%s", hub->users, e->key, sub);
	wd = inotify_add_watch(hub->ifd, path, WATCH_MASK);
	if (wd < 0) {
		hub->stats.inotify_errors++;
		hub->stats.last_error = -errno;
		return;
	}
	l->wd = wd;
	l->next = hub->by_wd[wd_hash(wd)];
	hub->by_wd[wd_hash(wd)] = l;
	hub->stats.inotify_dirs++;
}

static void wd_del(struct md_watch_hub *hub, struct wd_link *l)
{
	if (l->wd < 0)
		return;
	for (struct wd_link **pp = &hub->by_wd[wd_hash(l->wd)]; *pp != NULL;
	     pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	}
	/* Its IN_IGNORED event finds no link and is dropped. */
	if (inotify_rm_watch(hub->ifd, l->wd) < 0) {
		/* already gone with its directory */
	}
	l->wd = -1;
	hub->stats.inotify_dirs--;
}

/* Read every queued event and wake whom they concern. Hub's thread. */
static void read_events(struct md_watch_hub *hub)
{
	char buf[16384]
		__attribute__((aligned(__alignof__(struct inotify_event))));

	for (;;) {
		ssize_t n = read(hub->ifd, buf, sizeof(buf));

		if (n <= 0)
			return; /* EAGAIN: all read; errors: next poll tells */
		pthread_mutex_lock(&hub->lock);
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const void *)p;

			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				for (unsigned b = 0; b < WATCH_BUCKETS; b++)
					for (struct md_watch_ent *e =
						     hub->by_key[b];
					     e != NULL; e = e->next)
						ent_fire(e);
				continue;
			}
			for (struct wd_link *l = hub->by_wd[wd_hash(ev->wd)];
			     l != NULL; l = l->next) {
				if (l->wd == ev->wd) {
					ent_fire(l->ent);
					break;
				}
			}
		}
		pthread_mutex_unlock(&hub->lock);
	}
}

static void poll_done(struct ur_op *op)
{
	struct md_watch_hub *hub = op->data;

	if (hub->stopping) {
		ur_loop_stop(hub->loop);
		return;
	}
	if (op->res >= 0)
		read_events(hub);
	if (ur_poll_start(hub->loop, &hub->poll_op, hub->ifd, POLLIN) < 0) {
		/* no more events: in-process deliveries still arrive */
		ur_loop_stop(hub->loop);
	}
}

/* Posted by md_watch_hub_free: runs on the hub's loop. */
static void stop_post(void *arg)
{
	struct md_watch_hub *hub = arg;

	hub->stopping = true;
	if (ur_op_cancel(&hub->poll_op) < 0)
		ur_loop_stop(hub->loop); /* not in flight */
}

/*
 * The hub's thread: its loop is made here (a ring belongs to the thread
 * that submits to it), then md_watch_hub_new() hears how that went.
 */
static void *hub_thread(void *arg)
{
	struct md_watch_hub *hub = arg;
	struct ur_loop_opts lo = {0};
	int ret;

	ret = ur_loop_new(&lo, &hub->loop);
	if (ret == 0) {
		ur_op_init(&hub->poll_op, poll_done, hub);
		ret = ur_poll_start(hub->loop, &hub->poll_op, hub->ifd, POLLIN);
	}
	pthread_mutex_lock(&hub->lock);
	hub->thread_err = ret;
	hub->thread_ready = true;
	pthread_cond_signal(&hub->ready);
	pthread_mutex_unlock(&hub->lock);
	if (ret == 0)
		ret = ur_loop_run(hub->loop);
	pthread_mutex_lock(&hub->lock);
	hub->loop_gone = true; /* nothing may be posted to it now */
	if (ret < 0)
		hub->thread_err = ret;
	pthread_mutex_unlock(&hub->lock);
	ur_loop_free(&hub->loop);
	return NULL;
}

/* -------------------------------------------------------------------- */
/* In-process deliveries (md_store_on_delivery) */

static void on_delivery(const char *user, const char *folder, void *arg)
{
	struct md_watch_hub *hub = arg;
	char key[WATCH_KEY_MAX];
	struct md_watch_ent *e;

	if (make_key(user, folder, key, sizeof(key)) < 0)
		return;
	pthread_mutex_lock(&hub->lock);
	e = ent_find(hub, key);
	if (e != NULL)
		ent_fire(e);
	pthread_mutex_unlock(&hub->lock);
}

/* -------------------------------------------------------------------- */
/* Hub */

static int hub_start_thread(struct md_watch_hub *hub)
{
	sigset_t all, old;
	int ret;

	hub->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (hub->ifd < 0)
		return -errno;
	/* Signals are for the server's own thread, not this one. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&hub->thread, NULL, hub_thread, hub);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret < 0)
		return ret;
	hub->thread_started = true;
	pthread_mutex_lock(&hub->lock);
	while (!hub->thread_ready)
		pthread_cond_wait(&hub->ready, &hub->lock);
	ret = hub->thread_err;
	pthread_mutex_unlock(&hub->lock);
	return ret;
}

int md_watch_hub_new(struct md_store *st, const char *root, bool inotify,
		     struct md_watch_hub **hub_out)
{
	struct md_watch_hub *hub;
	char abs[PATH_MAX];
	size_t n;
	int ret;

	*hub_out = NULL;
	if (realpath(root, abs) == NULL)
		return -errno;
	hub = calloc(1, sizeof(*hub));
	if (hub == NULL)
		return -ENOMEM;
	hub->st = st;
	hub->ifd = -1;
	n = strlen(abs) + sizeof("/users");
	hub->users = malloc(n);
	if (hub->users == NULL) {
		free(hub);
		return -ENOMEM;
	}
	(void)snprintf(hub->users, n, "%s/users", abs);
	pthread_mutex_init(&hub->lock, NULL);
	pthread_cond_init(&hub->ready, NULL);
	if (inotify) {
		ret = hub_start_thread(hub);
		if (ret < 0) {
			md_watch_hub_free(&hub);
			return ret;
		}
	}
	md_store_on_delivery(st, on_delivery, hub);
	*hub_out = hub;
	return 0;
}

void md_watch_hub_free(struct md_watch_hub **hubp)
{
	struct md_watch_hub *hub = *hubp;

	if (hub == NULL)
		return;
	*hubp = NULL;
	md_store_on_delivery(hub->st, NULL, NULL);
	if (hub->thread_started) {
		pthread_mutex_lock(&hub->lock);
		if (!hub->loop_gone &&
		    ur_loop_post(hub->loop, stop_post, hub) < 0)
			ur_loop_stop(hub->loop);
		pthread_mutex_unlock(&hub->lock);
		pthread_join(hub->thread, NULL);
	}
	if (hub->ifd >= 0)
		close(hub->ifd);
	pthread_cond_destroy(&hub->ready);
	pthread_mutex_destroy(&hub->lock);
	free(hub->users);
	free(hub);
}

int md_watch_add(struct md_watch_hub *hub, struct md_watch *w, const char *user,
		 const char *folder, md_watch_fn *fn, void *arg)
{
	char key[WATCH_KEY_MAX];
	struct md_watch_ent *e;
	size_t klen;
	int ret;

	ret = make_key(user, folder, key, sizeof(key));
	if (ret < 0)
		return ret;
	w->fn = fn;
	w->arg = arg;
	w->prev = NULL;
	pthread_mutex_lock(&hub->lock);
	e = ent_find(hub, key);
	if (e == NULL) {
		klen = strlen(key) + 1;
		e = calloc(1, sizeof(*e) + klen);
		if (e == NULL) {
			pthread_mutex_unlock(&hub->lock);
			return -ENOMEM;
		}
		memcpy(e->key, key, klen);
		e->next = hub->by_key[key_hash(key)];
		hub->by_key[key_hash(key)] = e;
		hub->stats.folders++;
		wd_add(hub, e, 0, "new");
		wd_add(hub, e, 1, "cur");
	}
	w->ent = e;
	w->next = e->watchers;
	if (e->watchers != NULL)
		e->watchers->prev = w;
	e->watchers = w;
	pthread_mutex_unlock(&hub->lock);
	return 0;
}

void md_watch_del(struct md_watch_hub *hub, struct md_watch *w)
{
	struct md_watch_ent *e = w->ent;

	if (e == NULL)
		return;
	pthread_mutex_lock(&hub->lock);
	if (w->prev != NULL)
		w->prev->next = w->next;
	else
		e->watchers = w->next;
	if (w->next != NULL)
		w->next->prev = w->prev;
	w->ent = NULL;
	w->prev = w->next = NULL;
	if (e->watchers == NULL) {
		for (struct md_watch_ent **pp = &hub->by_key[key_hash(e->key)];
		     *pp != NULL; pp = &(*pp)->next) {
			if (*pp == e) {
				*pp = e->next;
				break;
			}
		}
		wd_del(hub, &e->wl[0]);
		wd_del(hub, &e->wl[1]);
		hub->stats.folders--;
		free(e);
	}
	pthread_mutex_unlock(&hub->lock);
}

void md_watch_hub_stats(struct md_watch_hub *hub,
			struct md_watch_hub_stats *out)
{
	pthread_mutex_lock(&hub->lock);
	*out = hub->stats;
	pthread_mutex_unlock(&hub->lock);
}
