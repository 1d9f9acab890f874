/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/lmtpd/sweep: removing what deliveries left behind in the
 * spool and in tmp/ (Maildir: files older than 36 hours).
 *
 * Who leaves what: every delivery's copy lives in spool/ until
 * md_msg_free() unlinks it, so a crash (kill -9, power loss) leaves the
 * copies of the messages in flight there, one directory for the whole
 * store. A user's tmp/ only gets a file when a delivery copies across
 * filesystems (maildir.c's copy_in), so leftovers there are rare, and
 * they are spread over every user.
 *
 * Hence two paces:
 *  - lmtp_sweep_spool(): the spool, once at start-up, before serving
 *    (one directory: cheap, and where every crash leaves its files);
 *  - the sweep thread: the spool and every user's tmp/ (its folders'
 *    too) every lmtp_tmp_sweep (1 hour by default). Walking every user
 *    at start-up would delay serving by a read of every tmp/ of a large
 *    store for files that, by Maildir's 36-hour rule, are hardly ever
 *    due; nothing in delivery needs tmp/ empty (names are unique), so a
 *    sweep off the delivery path, once an hour, is soon enough.
 *
 * Why a thread of its own: a handler cannot own a timer beyond its
 * connection, and server/ has no hook to run a periodic job on a
 * worker's loop (nor access to the control thread's loop in srv_run).
 * The sweep is a maintenance path anyway (readdir and fstatat are plain
 * syscalls in md_clean_tmp), so it runs on its own thread with its own
 * loop (the ring ops of md_clean_tmp drive it outside any fiber),
 * every signal blocked (srv_run's thread takes them), sleeping on a
 * condition variable that lmtp_sweep_stop() signals.
 */
#include "lmtpd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ringprot/uring.h>

/* Maildir: "a file in tmp/ that was not accessed in 36 hours". */
#define SWEEP_MAX_AGE_S 129600

struct sweep {
	struct md_store *store;
	int users_fd; /* <data_dir>/users, opened before any chroot */
	uint64_t interval_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	bool stop;
	bool running;
};

static struct sweep sweep = {.users_fd = -1};

int lmtp_sweep_spool(struct md_store *st)
{
	return md_clean_tmp(st, NULL, SWEEP_MAX_AGE_S);
}

/* The spool, then every user's tmp/ (and their folders'). */
static void sweep_all(struct sweep *sw)
{
	struct dirent *de;
	DIR *dir;
	int fd, ret;

	ret = lmtp_sweep_spool(sw->store);
	if (ret < 0)
		(void)fprintf(stderr, "ringprot-lmtpd: spool cleanup: %s\n",
			      strerror(-ret));
	fd = openat(sw->users_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return;
	}
	while ((de = readdir(dir)) != NULL) {
		bool stop;

		pthread_mutex_lock(&sw->lock);
		stop = sw->stop;
		pthread_mutex_unlock(&sw->lock);
		if (stop)
			break;
		if (!md_name_ok(de->d_name))
			continue; /* ".", "..", or not a user's */
		ret = md_clean_tmp(sw->store, de->d_name, SWEEP_MAX_AGE_S);
		if (ret < 0 && ret != -ENOENT)
			(void)fprintf(stderr,
				      "ringprot-lmtpd: tmp/ cleanup of %s: "
				      "%s\n",
				      de->d_name, strerror(-ret));
	}
	closedir(dir);
}

static void *sweep_main(void *arg)
{
	struct sweep *sw = arg;
	struct ur_loop *loop = NULL;
	struct timespec due;

	if (ur_loop_new(NULL, &loop) < 0) {
		(void)fprintf(stderr, "ringprot-lmtpd: tmp/ sweep: no loop, "
				      "no sweeps\n");
		return NULL;
	}
	pthread_mutex_lock(&sw->lock);
	while (!sw->stop) {
		clock_gettime(CLOCK_MONOTONIC, &due);
		due.tv_sec += (time_t)(sw->interval_ms / 1000);
		due.tv_nsec += (long)(sw->interval_ms % 1000) * 1000000L;
		if (due.tv_nsec >= 1000000000L) {
			due.tv_sec++;
			due.tv_nsec -= 1000000000L;
		}
		while (!sw->stop && pthread_cond_timedwait(&sw->cond, &sw->lock,
							   &due) != ETIMEDOUT) {
			/* woken early (stop, or spuriously): look again */
		}
		if (sw->stop)
			break;
		pthread_mutex_unlock(&sw->lock);
		sweep_all(sw);
		pthread_mutex_lock(&sw->lock);
	}
	pthread_mutex_unlock(&sw->lock);
	ur_loop_free(&loop);
	return NULL;
}

int lmtp_sweep_init(struct md_store *st, const char *data_dir,
		    uint64_t interval_ms)
{
	char path[4096];
	int n;

	sweep.store = st;
	sweep.interval_ms = interval_ms;
	if (interval_ms == 0)
		return 0;
	n = snprintf(path, sizeof(path), "%s/users", data_dir);
	if (n < 0 || (size_t)n >= sizeof(path))
		return -ENAMETOOLONG;
	sweep.users_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return sweep.users_fd < 0 ? -errno : 0;
}

int lmtp_sweep_start(void)
{
	pthread_condattr_t ca;
	sigset_t all, old;
	int ret;

	if (sweep.users_fd < 0)
		return 0; /* lmtp_tmp_sweep=0 */
	sweep.stop = false;
	ret = -pthread_condattr_init(&ca);
	if (ret < 0)
		return ret;
	ret = -pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (ret == 0)
		ret = -pthread_cond_init(&sweep.cond, &ca);
	pthread_condattr_destroy(&ca);
	if (ret < 0)
		return ret;
	ret = -pthread_mutex_init(&sweep.lock, NULL);
	if (ret < 0) {
		pthread_cond_destroy(&sweep.cond);
		return ret;
	}
	/* Signals are srv_run's: the thread inherits a full mask. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&sweep.thread, NULL, sweep_main, &sweep);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret < 0) {
		pthread_mutex_destroy(&sweep.lock);
		pthread_cond_destroy(&sweep.cond);
		return ret;
	}
	sweep.running = true;
	return 0;
}

void lmtp_sweep_stop(void)
{
	if (sweep.running) {
		pthread_mutex_lock(&sweep.lock);
		sweep.stop = true;
		pthread_cond_signal(&sweep.cond);
		pthread_mutex_unlock(&sweep.lock);
		pthread_join(sweep.thread, NULL);
		sweep.running = false;
		pthread_mutex_destroy(&sweep.lock);
		pthread_cond_destroy(&sweep.cond);
	}
	if (sweep.users_fd >= 0) {
		close(sweep.users_fd);
		sweep.users_fd = -1;
	}
}
