/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/maildir: the file plumbing of mailboxes: opening a user's
 * folder by name, the cross-process lock, small files read whole and
 * replaced atomically.
 *
 * The lock is an OFD lock (fcntl F_OFD_SETLK) on a lock file that is
 * never removed: it belongs to the open file description, so two
 * handles in one process exclude each other (a POSIX lock would not),
 * and the kernel drops it when its holder dies, so a leftover file
 * blocks nobody. It is only ever tried without blocking: a fiber must
 * not stall its worker thread, so it sleeps on the ring between tries
 * (1, 2, 4 ... 32 ms) until md_mbox_lock_timeout_ms.
 *
 * Sleeping between tries is right against another process, but most
 * contention is within this one: the IDLE sessions of a mailbox, all
 * woken by one delivery, sync at once. So the lock is first taken in
 * the process, a queue per lock file (by device and inode) whose
 * releaser hands it to the next waiter at once (a post to the waiter's
 * loop); only its holder then tries the OFD lock. Ten idlers of one
 * mailbox were told of a delivery 1, 3, 7, 15, 31, 63 ... 190 ms after
 * it with sleeps alone.
 */
#include "mailbox.h"
#include "maildir.h"
#include "mbox-internal.h"
#include "md-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ringprot/uring.h>

unsigned md_mbox_lock_timeout_ms = 10000;

/* A fiber (or a loop outside fibers) waiting for an in-process lock. */
struct lk_wait {
	struct lk_wait *next;
	struct ur_waiter w;
	struct ur_loop *loop;
	bool granted;	/* the lock is ours: the releaser posted a wake */
	bool abandoned; /* the waiter left: the post frees this */
};

/* A lock file held in this process, and who waits for it. */
struct lk_ent {
	struct lk_ent *next;
	dev_t dev;
	ino_t ino;
	struct lk_wait *head, **tail;
};

static pthread_mutex_t lk_mu = PTHREAD_MUTEX_INITIALIZER;
static struct lk_ent *lk_held;

static struct lk_ent **lk_find(dev_t dev, ino_t ino)
{
	struct lk_ent **pp = &lk_held;

	while (*pp != NULL && ((*pp)->dev != dev || (*pp)->ino != ino))
		pp = &(*pp)->next;
	return pp;
}

/* Posted to a waiter's loop: wake it (or free what it left). */
static void lk_grant(void *arg)
{
	struct lk_wait *w = arg;
	bool gone;

	pthread_mutex_lock(&lk_mu);
	gone = w->abandoned;
	pthread_mutex_unlock(&lk_mu);
	if (gone)
		free(w);
	else
		ur_waiter_wake(&w->w);
}

/* Take the in-process lock on (dev, ino): 0, or -ECANCELED, -ENOMEM. */
static int lk_take(dev_t dev, ino_t ino)
{
	struct lk_ent **pp, *e;
	struct lk_wait *w;
	int ret;

	pthread_mutex_lock(&lk_mu);
	pp = lk_find(dev, ino);
	if (*pp == NULL) {
		e = calloc(1, sizeof(*e));
		if (e == NULL) {
			pthread_mutex_unlock(&lk_mu);
			return -ENOMEM;
		}
		e->dev = dev;
		e->ino = ino;
		e->tail = &e->head;
		*pp = e;
		pthread_mutex_unlock(&lk_mu);
		return 0;
	}
	e = *pp;
	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		pthread_mutex_unlock(&lk_mu);
		return -ENOMEM;
	}
	w->loop = ur_loop_current();
	ur_waiter_init(&w->w, w->loop);
	*e->tail = w;
	e->tail = &w->next;
	pthread_mutex_unlock(&lk_mu);

	ret = ur_waiter_wait(&w->w);
	pthread_mutex_lock(&lk_mu);
	if (w->granted && ret < 0) {
		/* Handed over as we were cancelled: ours all the same;
		 * the wake still on its way frees the record. */
		w->abandoned = true;
		pthread_mutex_unlock(&lk_mu);
		return 0;
	}
	if (!w->granted) {
		struct lk_wait **wp = &e->head;

		while (*wp != w)
			wp = &(*wp)->next;
		*wp = w->next;
		if (e->tail == &w->next)
			e->tail = wp;
	}
	pthread_mutex_unlock(&lk_mu);
	free(w);
	return ret < 0 ? ret : 0;
}

/* Give the in-process lock on (dev, ino) to the next waiter, or drop it. */
static void lk_give(dev_t dev, ino_t ino)
{
	struct lk_ent **pp, *e;
	struct lk_wait *w = NULL;

	pthread_mutex_lock(&lk_mu);
	pp = lk_find(dev, ino);
	e = *pp;
	if (e != NULL && e->head != NULL) {
		w = e->head;
		e->head = w->next;
		if (e->head == NULL)
			e->tail = &e->head;
		w->granted = true;
	} else if (e != NULL) {
		*pp = e->next;
		free(e);
	}
	pthread_mutex_unlock(&lk_mu);
	/* Only -ENOMEM can fail: try until the post is queued, or the
	 * waiter would wait for ever. */
	while (w != NULL && ur_loop_post(w->loop, lk_grant, w) < 0)
		sched_yield();
}

void mb__close(int fd)
{
	if (fd >= 0 && ur_close(fd) < 0) {
		/* the fd is released anyway */
	}
}

int mb__sync_fd(const struct md_store *st, int fd)
{
	return md__no_fsync(st) ? 0 : ur_fsync(fd, 0);
}

int mb__user_open(struct md_store *st, const char *user)
{
	int fd;

	if (!md_name_ok(user))
		return -EINVAL;
	fd = ur_openat(md__users_fd(st), user, O_RDONLY | O_DIRECTORY, 0);
	return fd == -ENOTDIR ? -ENOENT : fd;
}

void mb__dir_name(const char *name, char *out, size_t size)
{
	(void)snprintf(out, size, ".%s", name);
}

int mb__folder_open(struct md_store *st, const char *user, const char *name)
{
	char dir[MD_MBOX_NAME_MAX + 2];
	int ufd, fd;

	if (md_mbox_name_check(name) < 0)
		return -EINVAL;
	ufd = mb__user_open(st, user);
	if (ufd < 0 || md_mbox_is_inbox(name))
		return ufd;
	mb__dir_name(name, dir, sizeof(dir));
	/* Not through a symlink: LIST does not show those either. */
	fd = ur_openat(ufd, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
	mb__close(ufd);
	return fd == -ENOTDIR || fd == -ELOOP ? -ENOENT : fd;
}

static uint64_t ms_now(void)
{
	return ur_now_ns(CLOCK_MONOTONIC) / 1000000;
}

int mb__lock(int dfd, const char *name, int *fd_out)
{
	uint64_t deadline = ms_now() + md_mbox_lock_timeout_ms;
	struct stat sb;
	int fd, ret;

	fd = ur_openat(dfd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return fd;
	if (fstat(fd, &sb) < 0) {
		ret = -errno;
		mb__close(fd);
		return ret;
	}
	ret = lk_take(sb.st_dev, sb.st_ino);
	if (ret < 0) {
		mb__close(fd);
		return ret;
	}
	for (unsigned wait_ms = 1;; wait_ms = wait_ms < 32 ? wait_ms * 2 : 32) {
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};

		/* Never F_OFD_SETLKW: it would block the worker thread. */
		if (fcntl(fd, F_OFD_SETLK, &fl) == 0) {
			*fd_out = fd;
			return 0;
		}
		ret = -errno;
		if (ret != -EAGAIN && ret != -EACCES && ret != -EINTR)
			break;
		if (ms_now() >= deadline) {
			ret = -ETIMEDOUT;
			break;
		}
		ret = ur_sleep_until(CLOCK_MONOTONIC,
				     ur_now_ns(CLOCK_MONOTONIC) +
					     (uint64_t)wait_ms * 1000000);
		if (ret < 0)
			break;
	}
	lk_give(sb.st_dev, sb.st_ino);
	mb__close(fd);
	return ret;
}

void mb__unlock(int fd)
{
	struct stat sb;
	bool known = fstat(fd, &sb) == 0;

	/* The last close of the open file description drops the OFD lock;
	 * then the next waiter of this process may try it. */
	mb__close(fd);
	if (known)
		lk_give(sb.st_dev, sb.st_ino);
}

int mb__fdopendir(int fd, DIR **dir_out)
{
	int ret;

	*dir_out = fdopendir(fd);
	if (*dir_out != NULL)
		return 0;
	ret = -errno;
	mb__close(fd);
	return ret;
}

int mb__read_all(int fd, char *buf, size_t len, uint64_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n =
			ur_read(fd, buf + got, len - got, (int64_t)(off + got));

		if (n < 0)
			return (int)n;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (int)(got == len ? 0 : -EIO);
}

int mb__read_file(int dfd, const char *name, size_t max, char **buf_out,
		  size_t *len_out)
{
	struct stat sb;
	char *buf;
	int fd, ret;

	fd = ur_openat(dfd, name, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return fd;
	if (fstat(fd, &sb) < 0) {
		ret = -errno;
		goto out_close;
	}
	ret = -EFBIG;
	if ((uint64_t)sb.st_size > max)
		goto out_close;
	ret = -ENOMEM;
	buf = malloc((size_t)sb.st_size + 1);
	if (buf == NULL)
		goto out_close;
	ret = mb__read_all(fd, buf, (size_t)sb.st_size, 0);
	if (ret < 0) {
		free(buf);
		goto out_close;
	}
	buf[sb.st_size] = '\0';
	*buf_out = buf;
	*len_out = (size_t)sb.st_size;
out_close:
	mb__close(fd);
	return ret;
}

static int write_all(int fd, const char *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = ur_write(fd, buf + done, len - done, (int64_t)done);

		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

int mb__write_file(const struct md_store *st, int dfd, const char *name,
		   const char *buf, size_t len)
{
	char tmp[64];
	int fd, ret;

	(void)snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	fd = ur_openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		       0600);
	if (fd < 0)
		return fd;
	ret = write_all(fd, buf, len);
	if (ret == 0 && !md__no_fsync(st))
		ret = ur_fsync(fd, UR_FSYNC_DATASYNC);
	mb__close(fd);
	if (ret == 0)
		ret = ur_renameat(dfd, tmp, dfd, name, 0);
	if (ret == 0)
		return mb__sync_fd(st, dfd);
	if (ur_unlinkat(dfd, tmp, 0) < 0) {
		/* rewritten by the next writer (O_TRUNC) */
	}
	return ret;
}
