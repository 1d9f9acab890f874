/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * test/md-watch: examples/maildir's change notification, per engine.
 * In-process deliveries reach the folder's watchers and no one else;
 * changes made behind the store's back (plain syscalls, as another
 * process would) arrive through inotify on the hub's thread; a removed
 * watch hears nothing more; bad names are refused; a folder inotify
 * cannot watch still gets in-process deliveries.
 */
#include "t-helpers.h"

#include "maildir.h"
#include "watch.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct fx {
	struct t_loop *tl;
	char root[64];
	struct md_store *st;
};

static int rm_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct md_store_opts o = {.hostname = "mx.example"};
	const char *err = NULL;

	if (f == NULL || t_loop_setup(state) < 0)
		return -1;
	f->tl = *state;
	snprintf(f->root, sizeof(f->root), "/tmp/md-watch-XXXXXX");
	if (mkdtemp(f->root) == NULL)
		return -1;
	o.root = f->root;
	if (md_store_open(&o, &f->st, &err) < 0 ||
	    md_user_create(f->st, "alice", NULL) < 0 ||
	    md_user_create(f->st, "alice", "Sent") < 0 ||
	    md_user_create(f->st, "bob", NULL) < 0)
		return -1;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	md_store_close(&f->st);
	nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	*state = f->tl;
	free(f);
	return t_loop_teardown(state);
}

static void count_fn(void *arg)
{
	atomic_fetch_add((atomic_int *)arg, 1);
}

static void deliver(struct md_store *st, const char *user, const char *folder)
{
	struct md_msg *m;

	assert_int_equal(md_msg_new(st, &m), 0);
	assert_int_equal(md_msg_write(m, "Subject: x\n\nhi\n", 15), 0);
	assert_int_equal(md_msg_finish(m), 0);
	assert_int_equal(md_msg_deliver(m, user, folder, NULL, 0), 0);
	md_msg_free(&m);
}

/* Wait (at most 3 s) until *n reaches want; its value then. */
static int wait_count(atomic_int *n, int want)
{
	struct timespec ts = {0, 5 * 1000 * 1000};

	for (int i = 0; i < 600 && atomic_load(n) < want; i++)
		nanosleep(&ts, NULL);
	return atomic_load(n);
}

static void test_watch_in_process(void **state)
{
	struct fx *f = *state;
	struct md_watch_hub *hub;
	struct md_watch wa = {0}, ws = {0};
	atomic_int na = 0, ns = 0;

	assert_int_equal(md_watch_hub_new(f->st, f->root, false, &hub), 0);
	assert_int_equal(md_watch_add(hub, &wa, "alice", NULL, count_fn, &na),
			 0);
	assert_int_equal(md_watch_add(hub, &ws, "alice", "Sent", count_fn, &ns),
			 0);
	deliver(f->st, "alice", NULL);
	assert_int_equal(atomic_load(&na), 1); /* at once, on this thread */
	assert_int_equal(atomic_load(&ns), 0);
	deliver(f->st, "bob", NULL);
	deliver(f->st, "alice", "Sent");
	assert_int_equal(atomic_load(&na), 1);
	assert_int_equal(atomic_load(&ns), 1);
	md_watch_del(hub, &wa);
	deliver(f->st, "alice", NULL);
	assert_int_equal(atomic_load(&na), 1);
	md_watch_del(hub, &wa); /* twice: harmless */
	md_watch_del(hub, &ws);
	md_watch_hub_free(&hub);
	assert_null(hub);
	/* The store no longer calls the freed hub. */
	deliver(f->st, "alice", NULL);
}

static void test_watch_two_watchers(void **state)
{
	struct fx *f = *state;
	struct md_watch_hub *hub;
	struct md_watch w[3] = {0};
	atomic_int n[3] = {0};
	struct md_watch_hub_stats hs;

	assert_int_equal(md_watch_hub_new(f->st, f->root, true, &hub), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(md_watch_add(hub, &w[i], "alice", NULL,
					      count_fn, &n[i]),
				 0);
	md_watch_hub_stats(hub, &hs);
	assert_int_equal(hs.folders, 1);
	assert_int_equal(hs.inotify_dirs, 2);
	md_watch_del(hub, &w[1]); /* the middle one */
	deliver(f->st, "alice", NULL);
	assert_true(atomic_load(&n[0]) >= 1);
	assert_int_equal(atomic_load(&n[1]), 0);
	assert_true(atomic_load(&n[2]) >= 1);
	md_watch_del(hub, &w[0]);
	md_watch_del(hub, &w[2]);
	md_watch_hub_stats(hub, &hs);
	assert_int_equal(hs.folders, 0);
	assert_int_equal(hs.inotify_dirs, 0);
	md_watch_hub_free(&hub);
}

/* Changes another process would make: plain syscalls, no store. */
static void test_watch_inotify(void **state)
{
	struct fx *f = *state;
	struct md_watch_hub *hub;
	struct md_watch w = {0};
	atomic_int n = 0;
	char a[256], b[256];
	int fd, seen;

	assert_int_equal(md_watch_hub_new(f->st, f->root, true, &hub), 0);
	assert_int_equal(md_watch_add(hub, &w, "bob", NULL, count_fn, &n), 0);

	snprintf(a, sizeof(a), "%s/users/bob/new/1.M1P1Q1.x", f->root);
	fd = open(a, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	seen = wait_count(&n, 1);
	assert_true(seen >= 1);

	/* new/ to cur/ (a reader taking it), then a flag change. */
	snprintf(b, sizeof(b), "%s/users/bob/cur/1.M1P1Q1.x:2,", f->root);
	assert_int_equal(rename(a, b), 0);
	seen = wait_count(&n, seen + 1);
	snprintf(a, sizeof(a), "%s/users/bob/cur/1.M1P1Q1.x:2,S", f->root);
	assert_int_equal(rename(b, a), 0);
	seen = wait_count(&n, seen + 1);
	/* An expunge. */
	assert_int_equal(unlink(a), 0);
	assert_true(wait_count(&n, seen + 1) > seen);

	/* Gone: nothing more arrives. */
	md_watch_del(hub, &w);
	seen = atomic_load(&n);
	fd = open(a, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	usleep(100 * 1000);
	assert_int_equal(atomic_load(&n), seen);
	md_watch_hub_free(&hub);
}

static void test_watch_bad_and_missing(void **state)
{
	static const char *const bad[] = {"",	 ".",	    "..",  "../alice",
					  "a/b", ".hidden", "a\nb"};
	struct fx *f = *state;
	struct md_watch_hub *hub;
	struct md_watch w = {0};
	struct md_watch_hub_stats hs;
	atomic_int n = 0;

	assert_int_equal(md_watch_hub_new(f->st, f->root, true, &hub), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(
			md_watch_add(hub, &w, bad[i], NULL, count_fn, &n),
			-EINVAL);
		assert_int_equal(
			md_watch_add(hub, &w, "alice", bad[i], count_fn, &n),
			-EINVAL);
	}
	md_watch_del(hub, &w); /* never added */

	/* No such folder yet: inotify refuses, in-process still works. */
	assert_int_equal(md_watch_add(hub, &w, "alice", "Later", count_fn, &n),
			 0);
	md_watch_hub_stats(hub, &hs);
	assert_int_equal(hs.folders, 1);
	assert_int_equal(hs.inotify_dirs, 0);
	assert_int_equal(hs.inotify_errors, 2);
	assert_int_equal(hs.last_error, -ENOENT);
	deliver(f->st, "alice", "Later"); /* makes the folder */
	assert_true(atomic_load(&n) >= 1);
	md_watch_del(hub, &w);
	md_watch_hub_free(&hub);

	assert_int_equal(
		md_watch_hub_new(f->st, "/nonexistent/dir", true, &hub),
		-ENOENT);
	assert_null(hub);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
	const struct CMUnitTest tests[] = {
		T(test_watch_in_process),
		T(test_watch_two_watchers),
		T(test_watch_inotify),
		T(test_watch_bad_and_missing),
	};
#undef T

	t_require_loop();
	return t_run_groups("md-watch", tests,
			    sizeof(tests) / sizeof(tests[0]));
}
