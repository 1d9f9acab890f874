/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * test/md-mbox: examples/maildir's mailboxes on real files under /tmp,
 * per engine: UIDs and their persistence, two handles on one mailbox,
 * UID assignment from several processes, flags and keywords in names,
 * copy/move/append, folders, names, a lock left by a dead process.
 */
#include "t-helpers.h"

#include "mailbox.h"
#include "maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct fx {
	struct t_loop *tl;
	char root[64];
	struct md_store *st;
	int fds; /* open at setup: teardown finds as many (no leak) */
};

static int count_fds(void)
{
	struct dirent *de;
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

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

static struct md_store *store_open(const char *root)
{
	struct md_store_opts o = {.root = root, .hostname = "mx.example"};
	struct md_store *st = NULL;
	const char *err = NULL;
	int ret = md_store_open(&o, &st, &err);

	if (ret < 0)
		fail_msg("md_store_open(%s): %s", root, strerror(-ret));
	return st;
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL || t_loop_setup(state) < 0)
		return -1;
	f->tl = *state;
	snprintf(f->root, sizeof(f->root), "/tmp/md-mbox-XXXXXX");
	if (mkdtemp(f->root) == NULL)
		return -1;
	f->fds = count_fds();
	f->st = store_open(f->root);
	if (md_user_create(f->st, "alice", NULL) < 0)
		return -1;
	md_mbox_lock_timeout_ms = 10000;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	char far[128];

	md_store_close(&f->st);
	md_mbox_thread_done(); /* the inotify instance of the syncs */
	assert_int_equal(count_fds(), f->fds);
	/* test_md_mbox_copy_exdev's mount, if it failed before umount. */
	snprintf(far, sizeof(far), "%s/users/alice/.Far", f->root);
	umount2(far, MNT_DETACH);
	nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
	*state = f->tl;
	free(f);
	return t_loop_teardown(state);
}

static int count_dir(const char *root, const char *sub)
{
	char path[256];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "%s/%s", root, sub);
	d = opendir(path);
	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Is there an entry of root/sub whose name starts with prefix? */
static bool has_prefix(const char *root, const char *sub, const char *prefix)
{
	char path[256];
	struct dirent *de;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof(path), "%s/%s", root, sub);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		found |= strncmp(de->d_name, prefix, strlen(prefix)) == 0;
	closedir(d);
	return found;
}

/* The file's bytes (malloc'd, NUL added). */
static char *slurp(const char *path, size_t *len_out)
{
	struct stat sb;
	char *buf;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || fstat(fd, &sb) < 0)
		fail_msg("open %s: %s", path, strerror(errno));
	buf = malloc((size_t)sb.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(read(fd, buf, (size_t)sb.st_size), sb.st_size);
	buf[sb.st_size] = '\0';
	close(fd);
	*len_out = (size_t)sb.st_size;
	return buf;
}

/* Deliver text into alice's folder (NULL: INBOX) through lmtpd's path. */
static void deliver(struct md_store *st, const char *folder, const char *text)
{
	struct md_msg *m;

	assert_int_equal(md_msg_new(st, &m), 0);
	assert_int_equal(md_msg_write(m, text, strlen(text)), 0);
	assert_int_equal(md_msg_finish(m), 0);
	assert_int_equal(md_msg_deliver(m, "alice", folder, NULL, 0), 0);
	md_msg_free(&m);
}

static struct md_mbox *open_mb(struct fx *f, const char *name, bool ro)
{
	struct md_mbox *mb = NULL;
	int ret = md_mbox_open(f->st, "alice", name, ro, &mb);

	if (ret < 0)
		fail_msg("md_mbox_open(%s): %s", name, strerror(-ret));
	return mb;
}

static void test_md_mbox_uids_persist(void **state)
{
	struct fx *f = *state;
	const struct md_msg_info *m;
	struct md_mbox_changes ch;
	struct md_mbox *mb;
	uint32_t uv;
	size_t n;

	deliver(f->st, NULL, "Subject: 1\n\none\n");
	deliver(f->st, NULL, "Subject: 2\n\ntwo\n");
	deliver(f->st, NULL, "Subject: 3\n\nthree\n");
	mb = open_mb(f, "inbox", false);
	m = md_mbox_msgs(mb, &n);
	assert_int_equal(n, 3);
	for (uint32_t i = 0; i < 3; i++) {
		assert_int_equal(m[i].uid, i + 1);
		assert_int_equal(m[i].flags, MD_F_RECENT);
		assert_non_null(strstr(m[i].path, ":2,"));
		assert_memory_equal(m[i].path, "cur/", 4);
	}
	assert_int_equal(m[0].size, 19); /* CRLF: 16 bytes + 3 LFs */
	assert_int_equal(md_mbox_uidnext(mb), 4);
	uv = md_mbox_uidvalidity(mb);
	assert_true(uv > 1000000000U);
	assert_int_equal(count_dir(f->root, "users/alice/new"), 0);
	assert_int_equal(count_dir(f->root, "users/alice/cur"), 3);
	/* Nothing changed: nothing reported. */
	assert_int_equal(md_mbox_sync(mb, &ch), 0);
	assert_int_equal(ch.n_added + ch.n_vanished + ch.n_flagged, 0);
	md_mbox_close(&mb);
	assert_null(mb);

	/* Reopened: the same UIDs, nobody's \Recent any more. */
	deliver(f->st, NULL, "Subject: 4\n\nfour\n");
	mb = open_mb(f, "INBOX", false);
	m = md_mbox_msgs(mb, &n);
	assert_int_equal(n, 4);
	assert_int_equal(md_mbox_uidvalidity(mb), uv);
	assert_int_equal(m[0].flags, 0);
	assert_int_equal(m[3].uid, 4);
	assert_int_equal(m[3].flags, MD_F_RECENT);
	deliver(f->st, NULL, "Subject: 5\n\nfive\n");
	assert_int_equal(md_mbox_sync(mb, &ch), 0);
	assert_int_equal(ch.n_added, 1);
	assert_int_equal(ch.added[0], 5);
	md_mbox_close(&mb);
}

/* A lost or torn uidlist: a new UIDVALIDITY, fresh UIDs for all. */
static void test_md_mbox_uidlist_lost(void **state)
{
	struct fx *f = *state;
	const struct md_msg_info *m;
	struct md_mbox *mb;
	char path[256];
	uint32_t uv;
	size_t n;
	FILE *fp;

	deliver(f->st, NULL, "a\n");
	deliver(f->st, NULL, "b\n");
	mb = open_mb(f, "INBOX", false);
	uv = md_mbox_uidvalidity(mb);
	md_mbox_close(&mb);
	snprintf(path, sizeof(path), "%s/users/alice/ringprot-uidlist",
		 f->root);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs("ringprot-uidlist 1 7", fp); /* no LF: torn */
	fclose(fp);
	mb = open_mb(f, "INBOX", false);
	assert_true(md_mbox_uidvalidity(mb) > uv);
	m = md_mbox_msgs(mb, &n);
	assert_int_equal(n, 2);
	assert_int_equal(m[1].uid, 2);
	md_mbox_close(&mb);

	/* Deleted and made again at once: never the same UIDVALIDITY. */
	assert_int_equal(md_folder_create(f->st, "alice", "T"), 0);
	mb = open_mb(f, "T", false);
	uv = md_mbox_uidvalidity(mb);
	md_mbox_close(&mb);
	assert_int_equal(md_folder_delete(f->st, "alice", "T"), 0);
	assert_false(has_prefix(f->root, "users/alice", "..del"));
	assert_false(has_prefix(f->root, "users/alice", ".T"));
	assert_int_equal(md_folder_create(f->st, "alice", "T"), 0);
	mb = open_mb(f, "T", false);
	assert_int_not_equal(md_mbox_uidvalidity(mb), uv);
	md_mbox_close(&mb);
}

static ino_t uidlist_ino(const char *root, char *path, size_t size)
{
	struct stat sb;

	snprintf(path, size, "%s/users/alice/ringprot-uidlist", root);
	assert_int_equal(stat(path, &sb), 0);
	return sb.st_ino;
}

/* New mail appends to the uidlist; a drop or a torn tail rewrites it. */
static void test_md_mbox_uidlist_append(void **state)
{
	struct fx *f = *state;
	const struct md_msg_info *m;
	struct md_mbox *mb;
	char path[256], *text;
	uint32_t *gone;
	size_t n, len;
	ino_t ino;
	FILE *fp;

	deliver(f->st, NULL, "a\n");
	mb = open_mb(f, "INBOX", false);
	ino = uidlist_ino(f->root, path, sizeof(path));
	deliver(f->st, NULL, "b\n");
	deliver(f->st, NULL, "c\n");
	assert_int_equal(md_mbox_sync(mb, NULL), 0);
	assert_int_equal(uidlist_ino(f->root, path, sizeof(path)), ino);
	assert_int_equal(md_mbox_uidnext(mb), 4);
	md_mbox_close(&mb);

	/* A torn append (a crash mid-write): the whole lines count. */
	fp = fopen(path, "a");
	assert_non_null(fp);
	fputs("9 torn.name", fp);
	fclose(fp);
	mb = open_mb(f, "INBOX", false);
	m = md_mbox_msgs(mb, &n);
	assert_int_equal(n, 3);
	assert_int_equal(m[2].uid, 3);
	deliver(f->st, NULL, "d\n");
	assert_int_equal(md_mbox_sync(mb, NULL), 0);
	assert_int_not_equal(uidlist_ino(f->root, path, sizeof(path)), ino);
	ino = uidlist_ino(f->root, path, sizeof(path));
	text = slurp(path, &len);
	assert_null(strstr(text, "torn"));
	assert_memory_equal(text, "ringprot-uidlist 1 ", 19);
	free(text);

	/* An expunge: rewritten, without the gone entry. */
	assert_int_equal(md_mbox_store(mb, 2, MD_F_DELETED, 0), 0);
	assert_int_equal(md_mbox_expunge(mb, NULL, 0, &gone, &n), 0);
	free(gone);
	assert_int_equal(md_mbox_sync(mb, NULL), 0);
	assert_int_not_equal(uidlist_ino(f->root, path, sizeof(path)), ino);
	text = slurp(path, &len);
	assert_null(strstr(text, "\n2 "));
	assert_non_null(strstr(text, "\n4 "));
	free(text);
	md_mbox_close(&mb);
}

static void test_md_mbox_two_handles(void **state)
{
	struct fx *f = *state;
	const struct md_msg_info *m;
	struct md_mbox_changes ch;
	struct md_mbox *a, *b;
	uint32_t *gone;
	size_t n, ngone;
	char *buf;
	int fd;

	for (int i = 0; i < 4; i++)
		deliver(f->st, NULL, "Subject: x\n\nbody\n");
	a = open_mb(f, "INBOX", false);
	b = open_mb(f, "INBOX", false);
	m = md_mbox_msgs(b, &n);
	assert_int_equal(n, 4);
	assert_int_equal(m[0].flags, 0); /* a claimed them: a's \Recent */

	assert_int_equal(md_mbox_store(a, 1, MD_F_SEEN, 0), 0);
	assert_int_equal(md_mbox_store(a, 3, MD_F_DELETED | MD_F_SEEN, 0), 0);
	assert_int_equal(md_mbox_sync(b, &ch), 0);
	assert_int_equal(ch.n_flagged, 2);
	assert_int_equal(ch.flagged[0], 1);
	assert_int_equal(ch.flagged[1], 3);
	m = md_mbox_msgs(b, &n);
	assert_int_equal(m[0].flags, MD_F_SEEN);

	/* b changes uid 2 under a's feet: a still finds it to read. */
	assert_int_equal(md_mbox_store(b, 2, MD_F_FLAGGED, 0), 0);
	assert_int_equal(md_mbox_msg_read(a, 2, 1024, &buf, &n), 0);
	assert_int_equal(n, 17);
	assert_memory_equal(buf, "Subject: x\n\nbody\n", 17);
	free(buf);
	assert_int_equal(md_mbox_msg_read(a, 2, 3, &buf, &n), -EFBIG);
	/* ... and to store on it. */
	assert_int_equal(md_mbox_store(a, 2, MD_F_ANSWERED, 0), 0);

	assert_int_equal(md_mbox_expunge(a, NULL, 0, &gone, &ngone), 0);
	assert_int_equal(ngone, 1);
	assert_int_equal(gone[0], 3);
	free(gone);
	md_mbox_msgs(a, &n);
	assert_int_equal(n, 3);
	assert_int_equal(md_mbox_sync(a, &ch), 0);
	assert_int_equal(ch.n_vanished, 0); /* told by expunge already */
	assert_int_equal(md_mbox_sync(b, &ch), 0);
	assert_int_equal(ch.n_vanished, 1);
	assert_int_equal(ch.vanished[0], 3);
	assert_int_equal(ch.n_flagged, 1);
	assert_int_equal(ch.flagged[0], 2);
	m = md_mbox_msgs(b, &n);
	assert_int_equal(n, 3);
	assert_int_equal(m[1].flags, MD_F_ANSWERED);
	assert_int_equal(md_mbox_msg_open(b, 3), -ENOENT);

	/* b takes \Deleted off uid 4 behind a's back: a keeps it. */
	assert_int_equal(md_mbox_store(a, 4, MD_F_DELETED, 0), 0);
	assert_int_equal(md_mbox_sync(b, NULL), 0);
	assert_int_equal(md_mbox_store(b, 4, MD_F_SEEN, 0), 0);
	assert_int_equal(md_mbox_expunge(a, NULL, 0, &gone, &ngone), 0);
	assert_int_equal(ngone, 0);
	assert_null(gone);
	fd = md_mbox_msg_open(b, 4);
	assert_true(fd >= 0);
	close(fd);

	/* +FLAGS from two stale handles: both flags stay. */
	assert_int_equal(md_mbox_store_op(a, 4, MD_STORE_ADD, MD_F_FLAGGED, 0),
			 0);
	assert_int_equal(md_mbox_store_op(b, 4, MD_STORE_ADD, MD_F_ANSWERED, 0),
			 0);
	m = md_mbox_msgs(b, &n);
	assert_int_equal(m[md_mbox_find(b, 4)].flags,
			 MD_F_SEEN | MD_F_FLAGGED | MD_F_ANSWERED);
	assert_int_equal(md_mbox_store_op(a, 4, MD_STORE_REMOVE,
					  MD_F_SEEN | MD_F_DRAFT, 0),
			 0);
	m = md_mbox_msgs(a, &n);
	assert_int_equal(m[md_mbox_find(a, 4)].flags,
			 MD_F_FLAGGED | MD_F_ANSWERED | MD_F_RECENT);
	assert_int_equal(md_mbox_store_op(a, 4, (enum md_store_op)7, 0, 0),
			 -EINVAL);

	/* UID EXPUNGE: only the listed \Deleted ones. */
	assert_int_equal(md_mbox_store(b, 1, MD_F_DELETED, 0), 0);
	assert_int_equal(md_mbox_store(b, 2, MD_F_DELETED, 0), 0);
	assert_int_equal(
		md_mbox_expunge(b, (uint32_t[]){2, 4}, 2, &gone, &ngone), 0);
	assert_int_equal(ngone, 1);
	assert_int_equal(gone[0], 2);
	free(gone);
	md_mbox_close(&a);
	md_mbox_close(&b);

	/* Read-only: no claims, no changes. */
	deliver(f->st, NULL, "Subject: y\n\n");
	a = open_mb(f, "INBOX", true);
	m = md_mbox_msgs(a, &n);
	assert_int_equal(n, 3);
	assert_memory_equal(m[2].path, "new/", 4);
	assert_int_equal(m[2].uid, 5);
	assert_int_equal(md_mbox_store(a, 1, 0, 0), -EROFS);
	assert_int_equal(md_mbox_expunge(a, NULL, 0, &gone, &ngone), -EROFS);
	md_mbox_close(&a);
	assert_int_equal(count_dir(f->root, "users/alice/new"), 1);
}

enum {
	PROCS = 3,
	PER_PROC = 15
};

/* A child process: delivers, syncs and changes flags, writing the
 * "uid base" pairs it saw. */
static void child_sync(const char *root, int idx)
{
	struct md_store *st = store_open(root);
	char path[128], text[64];
	FILE *out;

	snprintf(path, sizeof(path), "%s/obs-%d", root, idx);
	out = fopen(path, "w");
	if (out == NULL)
		_exit(2);
	for (int i = 0; i < PER_PROC; i++) {
		const struct md_msg_info *m;
		struct md_mbox *mb;
		struct md_msg *msg;
		size_t n;

		snprintf(text, sizeof(text), "From: %d\n\n%d\n", idx, i);
		if (md_msg_new(st, &msg) < 0 ||
		    md_msg_write(msg, text, strlen(text)) < 0 ||
		    md_msg_finish(msg) < 0 ||
		    md_msg_deliver(msg, "alice", NULL, NULL, 0) < 0)
			_exit(3);
		md_msg_free(&msg);
		if (md_mbox_open(st, "alice", "INBOX", i % 2 == 0, &mb) < 0)
			_exit(4);
		m = md_mbox_msgs(mb, &n);
		/* Renames in cur/ while others list it. */
		if (!md_mbox_readonly(mb) && n > 0 &&
		    md_mbox_store(mb, m[i % n].uid, m[i % n].flags ^ MD_F_SEEN,
				  0) < 0)
			_exit(5);
		for (size_t k = 0; k < n; k++)
			fprintf(out, "%u %.*s\n", m[k].uid,
				(int)md_base_len(strchr(m[k].path, '/') + 1),
				strchr(m[k].path, '/') + 1);
		md_mbox_close(&mb);
	}
	fclose(out);
	md_store_close(&st);
	_exit(0);
}

/* Every observation of a UID names the same file. */
static void check_obs(const char *root, char **by_uid, size_t max)
{
	char path[128], base[300];
	unsigned uid;

	for (int p = 0; p < PROCS; p++) {
		FILE *in;

		snprintf(path, sizeof(path), "%s/obs-%d", root, p);
		in = fopen(path, "r");
		assert_non_null(in);
		while (fscanf(in, "%u %299s", &uid, base) == 2) {
			assert_true(uid > 0 && uid < max);
			if (by_uid[uid] == NULL)
				by_uid[uid] = strdup(base);
			else
				assert_string_equal(by_uid[uid], base);
		}
		fclose(in);
	}
}

static void test_md_mbox_processes(void **state)
{
	struct fx *f = *state;
	enum {
		MAX = PROCS * PER_PROC + 2
	};
	char *by_uid[MAX] = {0};
	const struct md_msg_info *m;
	struct md_mbox *mb;
	pid_t pid[PROCS];
	size_t n;

	for (int p = 0; p < PROCS; p++) {
		pid[p] = fork();
		assert_true(pid[p] >= 0);
		if (pid[p] == 0)
			child_sync(f->root, p);
	}
	for (int p = 0; p < PROCS; p++) {
		int status;

		assert_int_equal(waitpid(pid[p], &status, 0), pid[p]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	check_obs(f->root, by_uid, MAX);
	mb = open_mb(f, "INBOX", false);
	m = md_mbox_msgs(mb, &n);
	assert_int_equal(n, PROCS * PER_PROC);
	for (size_t k = 0; k < n; k++) {
		const char *fname = strchr(m[k].path, '/') + 1;

		assert_int_equal(m[k].uid, k + 1); /* none lost or reused */
		assert_non_null(by_uid[m[k].uid]);
		assert_int_equal(strlen(by_uid[m[k].uid]), md_base_len(fname));
		assert_memory_equal(by_uid[m[k].uid], fname,
				    md_base_len(fname));
	}
	md_mbox_close(&mb);
	for (size_t i = 0; i < MAX; i++)
		free(by_uid[i]);
}

static void test_md_mbox_flags_names(void **state)
{
	struct fx *f = *state;
	const struct md_msg_info *m;
	struct md_mbox *mb;
	char suf[64], path[512];
	unsigned flags;
	uint32_t kw;
	size_t n;

	for (unsigned fl = 0; fl <= MD_F_STORED; fl++) {
		uint32_t kws[] = {0, 1, 0x2000001, 0x3ffffff};

		for (size_t k = 0; k < 4; k++) {
			char name[128];

			md_flags_format(fl, kws[k], suf, sizeof(suf));
			snprintf(name, sizeof(name), "123.M4P5Q6.host%s", suf);
			md_flags_parse(name, &flags, &kw);
			assert_int_equal(flags, fl);
			assert_int_equal(kw, kws[k]);
		}
	}
	md_flags_format(MD_F_SEEN | MD_F_DRAFT | MD_F_DELETED, 5, suf,
			sizeof(suf));
	assert_string_equal(suf, ":2,DSTac"); /* ASCII order */
	md_flags_parse("x:2,SxXD", &flags, &kw);
	assert_int_equal(flags, MD_F_SEEN | MD_F_DRAFT);
	assert_int_equal(kw, 1U << ('x' - 'a'));

	deliver(f->st, NULL, "a\n");
	mb = open_mb(f, "INBOX", false);
	assert_int_equal(
		md_mbox_store(mb, 1, MD_F_ANSWERED | MD_F_FLAGGED | MD_F_PASSED,
			      0),
		0);
	m = md_mbox_msgs(mb, &n);
	assert_non_null(strstr(m[0].path, ":2,FPR"));
	snprintf(path, sizeof(path), "%s/users/alice/%s", f->root, m[0].path);
	assert_int_equal(access(path, F_OK), 0);
	md_mbox_close(&mb);
	mb = open_mb(f, "INBOX", true);
	m = md_mbox_msgs(mb, &n);
	assert_int_equal(m[0].flags,
			 MD_F_ANSWERED | MD_F_FLAGGED | MD_F_PASSED);
	md_mbox_close(&mb);
}

static void test_md_mbox_keywords(void **state)
{
	struct fx *f = *state;
	const struct md_msg_info *m;
	struct md_mbox_changes ch;
	struct md_mbox *a, *b;
	char kw[16];
	size_t n;

	deliver(f->st, NULL, "a\n");
	a = open_mb(f, "INBOX", false);
	b = open_mb(f, "INBOX", false);
	assert_int_equal(md_mbox_keyword_index(a, "$Junk"), 0);
	assert_int_equal(md_mbox_keyword_index(a, "Work"), 1);
	assert_int_equal(md_mbox_keyword_index(a, "work"), 1);
	assert_int_equal(md_mbox_keyword_index(a, "\\Seen"), -EINVAL);
	assert_int_equal(md_mbox_keyword_index(a, "a b"), -EINVAL);
	assert_int_equal(md_mbox_store(a, 1, MD_F_SEEN, 1U << 1), 0);
	m = md_mbox_msgs(a, &n);
	assert_non_null(strstr(m[0].path, ":2,Sb"));
	/* The other handle learns the names with the change. */
	assert_int_equal(md_mbox_sync(b, &ch), 0);
	assert_int_equal(ch.n_flagged, 1);
	m = md_mbox_msgs(b, &n);
	assert_int_equal(m[0].keywords, 1U << 1);
	assert_string_equal(md_mbox_keyword(b, 1), "Work");
	assert_int_equal(md_mbox_keyword_count(b), 2);
	/* b defines the third one; a's next definition sees it. */
	assert_int_equal(md_mbox_keyword_index(b, "Home"), 2);
	assert_int_equal(md_mbox_keyword_index(a, "Later"), 3);
	for (int i = 4; i < MD_KW_MAX; i++) {
		snprintf(kw, sizeof(kw), "k%d", i);
		assert_int_equal(md_mbox_keyword_index(a, kw), i);
	}
	assert_int_equal(md_mbox_keyword_index(a, "one-too-many"), -ENOSPC);
	md_mbox_close(&a);
	md_mbox_close(&b);
}

static void test_md_mbox_copy_move_append(void **state)
{
	struct fx *f = *state;
	const char *kws[] = {"Work"};
	struct md_copy_result r;
	const struct md_msg_info *m;
	struct md_append *ap;
	struct md_mbox *in, *ar;
	uint32_t uv, uid;
	struct stat sb;
	char path[512], *buf;
	int64_t date;
	size_t n;

	assert_int_equal(md_folder_create(f->st, "alice", "Archive"), 0);
	/* APPEND: CRLF in, LF stored, date and flags kept. */
	assert_int_equal(md_append_begin(f->st, "alice", "Archive", &ap), 0);
	assert_int_equal(md_append_write(ap, "Subject: a\r", 11), 0);
	assert_int_equal(md_append_write(ap, "\n\r\nbody\r\n", 9), 0);
	assert_int_equal(
		md_append_commit(&ap, MD_F_SEEN, kws, 1, 1000000000, &uv, &uid),
		0);
	assert_null(ap);
	assert_int_equal(uid, 1);
	ar = open_mb(f, "Archive", false);
	assert_int_equal(md_mbox_uidvalidity(ar), uv);
	m = md_mbox_msgs(ar, &n);
	assert_int_equal(n, 1);
	assert_int_equal(m[0].flags, MD_F_SEEN);
	assert_int_equal(m[0].keywords, 1);
	assert_int_equal(m[0].size, 20);
	/* the date is read at the first ask, then kept */
	assert_true(m[0].internal_date == MD_DATE_UNKNOWN);
	assert_int_equal(md_mbox_msg_date(ar, 1, &date), 0);
	assert_int_equal(date, 1000000000);
	assert_int_equal(m[0].internal_date, 1000000000);
	assert_string_equal(md_mbox_keyword(ar, 0), "Work");
	assert_int_equal(md_mbox_msg_read(ar, 1, 100, &buf, &n), 0);
	assert_int_equal(n, 17);
	assert_memory_equal(buf, "Subject: a\n\nbody\n", 17);
	free(buf);
	snprintf(path, sizeof(path), "%s/users/alice/.Archive/%s", f->root,
		 m[0].path);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mtime, 1000000000);

	/* An aborted APPEND leaves nothing. */
	assert_int_equal(md_append_begin(f->st, "alice", "Archive", &ap), 0);
	assert_int_equal(md_append_write(ap, "half", 4), 0);
	md_append_abort(&ap);
	assert_int_equal(count_dir(f->root, "users/alice/.Archive/tmp"), 0);
	assert_int_equal(md_append_begin(f->st, "alice", "Nope", &ap), -ENOENT);

	/* COPY: new UIDs in the target, flags and keywords carried. */
	deliver(f->st, NULL, "one\n");
	deliver(f->st, NULL, "two\n");
	deliver(f->st, NULL, "three\n");
	in = open_mb(f, "INBOX", false);
	assert_int_equal(md_mbox_keyword_index(in, "Other"), 0);
	assert_int_equal(md_mbox_keyword_index(in, "Work"), 1);
	assert_int_equal(md_mbox_store(in, 2, MD_F_FLAGGED, 3), 0);
	assert_int_equal(md_mbox_copy(in, (uint32_t[]){3, 2, 9}, 3, "Archive",
				      false, &r),
			 0);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.uidvalidity, uv);
	assert_int_equal(r.src[0], 2);
	assert_int_equal(r.src[1], 3);
	assert_int_equal(r.dst[0], 2);
	assert_int_equal(r.dst[1], 3);
	md_copy_result_fini(&r);
	assert_int_equal(md_mbox_sync(ar, NULL), 0);
	m = md_mbox_msgs(ar, &n);
	assert_int_equal(n, 3);
	assert_int_equal(m[1].flags, MD_F_FLAGGED);
	assert_string_equal(md_mbox_keyword(ar, m[1].keywords & 1 ? 0 : 1),
			    "Work");
	assert_int_equal(__builtin_popcount(m[1].keywords), 2);
	md_mbox_msgs(in, &n);
	assert_int_equal(n, 3);

	/* MOVE: gone from the source, reported as such. */
	assert_int_equal(
		md_mbox_copy(in, (uint32_t[]){1, 3}, 2, "Archive", true, &r),
		0);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.src[0], 1);
	assert_int_equal(r.dst[0], 4);
	assert_int_equal(r.dst[1], 5);
	md_copy_result_fini(&r);
	m = md_mbox_msgs(in, &n);
	assert_int_equal(n, 1);
	assert_int_equal(m[0].uid, 2);
	assert_int_equal(count_dir(f->root, "users/alice/cur"), 1);
	assert_int_equal(
		md_mbox_copy(in, (uint32_t[]){2}, 1, "Nope", false, &r),
		-ENOENT);
	md_mbox_close(&in);
	in = open_mb(f, "INBOX", true);
	assert_int_equal(
		md_mbox_copy(in, (uint32_t[]){2}, 1, "Archive", true, &r),
		-EROFS);
	md_mbox_close(&in);
	assert_int_equal(md_mbox_sync(ar, NULL), 0);
	md_mbox_msgs(ar, &n);
	assert_int_equal(n, 5);
	md_mbox_close(&ar);
}

#define MISSING 0xdeadU

/* COPY and MOVE into a folder on another filesystem: data copied. */
static void test_md_mbox_copy_exdev(void **state)
{
	struct fx *f = *state;
	const struct md_msg_info *m;
	struct md_copy_result r;
	struct md_mbox *in, *far;
	char dir[128], *buf;
	int64_t date, date2;
	struct stat sb;
	size_t n;

	snprintf(dir, sizeof(dir), "%s/users/alice/.Far", f->root);
	assert_int_equal(mkdir(dir, 0700), 0);
	if (mount("tmpfs", dir, "tmpfs", 0, "size=1m") < 0) {
		print_message("mount tmpfs on %s: %s\n", dir, strerror(errno));
		skip();
	}
	assert_int_equal(md_user_create(f->st, "alice", "Far"), 0);
	deliver(f->st, NULL, "Subject: far\n\naway\n");
	deliver(f->st, NULL, "Subject: moved\n\n");
	in = open_mb(f, "INBOX", false);
	assert_int_equal(md_mbox_store(in, 1, MD_F_SEEN, 0), 0);
	assert_int_equal(md_mbox_copy(in, (uint32_t[]){1}, 1, "Far", false, &r),
			 0);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.dst[0], 1);
	md_copy_result_fini(&r);
	assert_int_equal(md_mbox_copy(in, (uint32_t[]){2}, 1, "Far", true, &r),
			 0);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.dst[0], 2);
	md_copy_result_fini(&r);
	md_mbox_msgs(in, &n);
	assert_int_equal(n, 1);
	assert_int_equal(count_dir(f->root, "users/alice/cur"), 1);

	far = open_mb(f, "Far", false);
	m = md_mbox_msgs(far, &n);
	assert_int_equal(n, 2);
	assert_int_equal(m[0].flags, MD_F_SEEN);
	assert_int_equal(m[0].size, 22);
	assert_int_equal(md_mbox_msg_date(far, 1, &date), 0);
	assert_int_equal(
		md_mbox_msg_date(in, md_mbox_msgs(in, &n)[0].uid, &date2), 0);
	assert_int_equal(date, date2);
	assert_int_equal(md_mbox_msg_read(far, 1, 100, &buf, &n), 0);
	assert_int_equal(n, 19);
	assert_memory_equal(buf, "Subject: far\n\naway\n", 19);
	free(buf);
	snprintf(dir, sizeof(dir), "%s/users/alice/.Far/%s", f->root,
		 m[0].path);
	assert_int_equal(stat(dir, &sb), 0);
	assert_int_equal(sb.st_nlink, 1);
	assert_int_equal(count_dir(f->root, "users/alice/.Far/tmp"), 0);
	md_mbox_close(&far);
	md_mbox_close(&in);
	snprintf(dir, sizeof(dir), "%s/users/alice/.Far", f->root);
	assert_int_equal(umount2(dir, MNT_DETACH), 0);
}

/* The attributes of the entry named name in the list, or MISSING. */
static unsigned attrs_of(const struct md_folder_info *v, size_t n,
			 const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].name, name) == 0)
			return v[i].attrs;
	return MISSING;
}

static void test_md_mbox_folders(void **state)
{
	struct fx *f = *state;
	struct md_folder_info *v;
	struct md_mbox_changes ch;
	struct md_mbox *mb;
	struct md_status s;
	char **subs;
	size_t n;

	assert_int_equal(md_folder_create(f->st, "alice", "A.B.C"), 0);
	assert_int_equal(md_folder_create(f->st, "alice", "A.B.C"), -EEXIST);
	assert_int_equal(md_folder_create(f->st, "alice", "inbox"), -EEXIST);
	assert_int_equal(md_folder_create(f->st, "alice", "Sent"), 0);
	assert_int_equal(md_folder_create(f->st, "nobody", "X"), -ENOENT);
	deliver(f->st, "A", "in A\n");
	assert_int_equal(md_folder_list(f->st, "alice", &v, &n), 0);
	assert_int_equal(n, 5);
	assert_string_equal(v[0].name, "INBOX");
	assert_int_equal(attrs_of(v, n, "A.B"), MD_ATTR_HASCHILDREN);
	assert_int_equal(attrs_of(v, n, "A.B.C"), MD_ATTR_HASNOCHILDREN);
	assert_int_equal(attrs_of(v, n, "Sent"),
			 MD_ATTR_HASNOCHILDREN | MD_ATTR_SENT);
	md_folder_list_free(&v, n);

	/* DELETE with children: A's messages go, A becomes \Noselect. */
	assert_int_equal(md_folder_delete(f->st, "alice", "A"), 0);
	assert_int_equal(md_folder_list(f->st, "alice", &v, &n), 0);
	assert_int_equal(attrs_of(v, n, "A"),
			 MD_ATTR_NOSELECT | MD_ATTR_HASCHILDREN);
	md_folder_list_free(&v, n);
	assert_int_equal(md_folder_delete(f->st, "alice", "A"), -EPERM);
	assert_int_equal(md_folder_delete(f->st, "alice", "INBOX"), -EPERM);
	assert_int_equal(md_folder_delete(f->st, "alice", "Zz"), -ENOENT);
	assert_int_equal(md_folder_status(f->st, "alice", "A", &s), -ENOENT);

	/* An open handle follows a rename, and learns of a delete. */
	assert_int_equal(md_folder_create(f->st, "alice", "Sel"), 0);
	mb = open_mb(f, "Sel", false);
	assert_int_equal(md_folder_rename(f->st, "alice", "Sel", "Moved"), 0);
	deliver(f->st, "Moved", "x\n");
	assert_int_equal(md_mbox_sync(mb, &ch), 0);
	assert_int_equal(ch.n_added, 1);
	assert_int_equal(md_folder_delete(f->st, "alice", "Moved"), 0);
	assert_int_equal(md_mbox_sync(mb, &ch), -ENOENT);
	md_mbox_close(&mb);

	/* RENAME with children: A.B.C follows A.B; parents made. */
	assert_int_equal(md_folder_rename(f->st, "alice", "A.B", "Z.Y"), 0);
	assert_int_equal(md_folder_rename(f->st, "alice", "Z", "Z.Q"), -EINVAL);
	assert_int_equal(md_folder_rename(f->st, "alice", "Z.Y", "Sent"),
			 -EEXIST);
	assert_int_equal(md_folder_rename(f->st, "alice", "Q", "R"), -ENOENT);
	assert_int_equal(md_folder_list(f->st, "alice", &v, &n), 0);
	assert_int_equal(attrs_of(v, n, "Z.Y.C"), MD_ATTR_HASNOCHILDREN);
	assert_int_equal(attrs_of(v, n, "Z"), MD_ATTR_HASCHILDREN);
	assert_int_equal(attrs_of(v, n, "A.B.C"), MISSING);
	assert_int_equal(attrs_of(v, n, "A"), MISSING);
	md_folder_list_free(&v, n);

	/* RENAME INBOX: its messages move, it stays, UIDs not reused. */
	deliver(f->st, NULL, "m1\n");
	deliver(f->st, NULL, "m2\n");
	assert_int_equal(md_folder_status(f->st, "alice", "INBOX", &s), 0);
	assert_int_equal(s.messages, 2);
	assert_int_equal(s.recent, 2);
	assert_int_equal(s.unseen, 2);
	assert_int_equal(s.size, 8);
	assert_int_equal(s.uidnext, 3);
	assert_int_equal(md_folder_rename(f->st, "alice", "INBOX", "Old"), 0);
	assert_int_equal(md_folder_status(f->st, "alice", "Old", &s), 0);
	assert_int_equal(s.messages, 2);
	assert_int_equal(md_folder_status(f->st, "alice", "INBOX", &s), 0);
	assert_int_equal(s.messages, 0);
	assert_int_equal(s.uidnext, 3);

	/* Subscriptions. */
	assert_int_equal(md_subscribe(f->st, "alice", "inbox", true), 0);
	assert_int_equal(md_subscribe(f->st, "alice", "Gone", true), 0);
	assert_int_equal(md_subscribe(f->st, "alice", "Sent", true), 0);
	assert_int_equal(md_subscribe(f->st, "alice", "Sent", true), 0);
	assert_int_equal(md_subscribe(f->st, "alice", "Gone", false), 0);
	assert_int_equal(md_subscribe(f->st, "alice", "../x", true), -EINVAL);
	assert_int_equal(md_subscriptions(f->st, "alice", &subs, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(subs[0], "INBOX");
	assert_string_equal(subs[1], "Sent");
	md_strv_free(&subs, n);
	assert_int_equal(md_folder_list(f->st, "alice", &v, &n), 0);
	assert_true(v[0].attrs & MD_ATTR_SUBSCRIBED);
	assert_true(attrs_of(v, n, "Sent") & MD_ATTR_SUBSCRIBED);
	assert_false(attrs_of(v, n, "Old") & MD_ATTR_SUBSCRIBED);
	md_folder_list_free(&v, n);
}

static void test_md_mbox_bad_names(void **state)
{
	struct fx *f = *state;
	static const char *const bad[] = {
		"",    ".",	  "..",	       ".A",	"A.",	       "A..B",
		"A/B", "../x",	  "A\tB",      "A\x7f", "caf\xc3\xa9", "A*",
		"%",   "INBOX.x", "inbox.Sub", "&",	"&Jjo",	       "&Jjo!-",
		"x&",
	};
	static const char *const good[] = {
		"INBOX", "iNbOx", "A",		"A.B.C",   "Caf&AOk-",
		"&-",	 "A B",	  "Lists.rust", "INBOXES",
	};
	struct md_mbox *mb = (void *)1;
	char longname[MD_MBOX_NAME_MAX + 2], path[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (md_mbox_name_check(bad[i]) != -EINVAL)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_int_equal(md_folder_create(f->st, "alice", bad[i]),
				 -EINVAL);
		assert_int_equal(
			md_mbox_open(f->st, "alice", bad[i], false, &mb),
			-EINVAL);
		assert_null(mb);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (md_mbox_name_check(good[i]) != 0)
			fail_msg("refused \"%s\"", good[i]);
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(md_mbox_name_check(longname), -EINVAL);
	longname[MD_MBOX_NAME_MAX] = '\0';
	assert_int_equal(md_mbox_name_check(longname), 0);
	assert_int_equal(md_mbox_open(f->st, "../alice", "INBOX", false, &mb),
			 -EINVAL);
	assert_int_equal(md_mbox_open(f->st, "alice", "Nope", false, &mb),
			 -ENOENT);
	assert_int_equal(md_mbox_open(f->st, "bob", "INBOX", false, &mb),
			 -ENOENT);
	/* A folder that is a symlink (to another user's mail) is none. */
	snprintf(path, sizeof(path), "%s/users/alice/.Link", f->root);
	assert_int_equal(symlink("/tmp", path), 0);
	assert_int_equal(md_mbox_open(f->st, "alice", "Link", false, &mb),
			 -ENOENT);
	assert_int_equal(md_folder_rename(f->st, "alice", "INBOX", "A..B"),
			 -EINVAL);
}

/* A child that takes the uidlist lock, says so, then dies or waits. */
static pid_t lock_holder(const char *root, bool die)
{
	char path[128], c = 'x';
	int pfd[2];
	pid_t pid;

	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
		int fd;

		snprintf(path, sizeof(path),
			 "%s/users/alice/ringprot-uidlist.lock", root);
		fd = open(path, O_RDWR | O_CREAT, 0600);
		if (fd < 0 || fcntl(fd, F_OFD_SETLK, &fl) < 0)
			_exit(2);
		if (write(pfd[1], &c, 1) != 1)
			_exit(3);
		if (die)
			raise(SIGKILL);
		pause();
		_exit(0);
	}
	close(pfd[1]);
	assert_int_equal(read(pfd[0], &c, 1), 1);
	close(pfd[0]);
	return pid;
}

static void test_md_mbox_stale_lock(void **state)
{
	struct fx *f = *state;
	struct md_mbox *mb;
	uint64_t t0;
	int status;
	pid_t pid;

	deliver(f->st, NULL, "a\n");
	/* A dead holder's lock file holds nothing. */
	pid = lock_holder(f->root, true);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	mb = open_mb(f, "INBOX", false);
	md_mbox_close(&mb);

	/* A live holder: a clear error after the timeout, not a hang. */
	deliver(f->st, NULL, "b\n");
	pid = lock_holder(f->root, false);
	md_mbox_lock_timeout_ms = 200;
	t0 = t_now_ms();
	assert_int_equal(md_mbox_open(f->st, "alice", "INBOX", false, &mb),
			 -ETIMEDOUT);
	assert_true(t_now_ms() - t0 >= 200);
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	mb = open_mb(f, "INBOX", false);
	md_mbox_msgs(mb, &(size_t){0});
	md_mbox_close(&mb);
}

/* Set path's mtime (under alice's INBOX) to when. */
static void set_mtime(const char *root, const char *sub, time_t when)
{
	struct timespec ts[2] = {{when, 0}, {when, 0}};
	char path[256];

	snprintf(path, sizeof(path), "%s/users/alice/%s", root, sub);
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

/*
 * Without a watch (a released handle's md_mbox_poll) a sync with
 * nothing changed only compares stamps: a change that keeps every stamp
 * is not seen; one that moves a stamp is. A watched handle (an open one)
 * sees the change whatever the stamps say: inotify told of it.
 */
static void test_md_mbox_cheap_sync(void **state)
{
	struct fx *f = *state;
	time_t old = time(NULL) - 100;
	const struct md_msg_info *m;
	struct md_mbox_changes ch;
	struct md_mbox *a, *b;
	size_t n;

	deliver(f->st, NULL, "a\n");
	a = open_mb(f, "INBOX", false);
	b = open_mb(f, "INBOX", false);
	assert_true(md_mbox_watched(b));
	set_mtime(f->root, "new", old);
	set_mtime(f->root, "cur", old);
	set_mtime(f->root, "ringprot-uidlist", old);
	/* Stamps older than 2 s: trusted from now on. */
	assert_int_equal(md_mbox_sync(b, &ch), 0);
	assert_int_equal(ch.n_added + ch.n_flagged + ch.n_vanished, 0);

	/* Watched: seen although the stamps are those of before. */
	assert_int_equal(md_mbox_store(a, 1, MD_F_SEEN, 0), 0);
	set_mtime(f->root, "cur", old);
	assert_int_equal(md_mbox_sync(b, &ch), 0);
	assert_int_equal(ch.n_flagged, 1);
	m = md_mbox_msgs(b, &n);
	assert_int_equal(m[0].flags, MD_F_SEEN);
	assert_int_equal(md_mbox_sync(b, &ch), 0);
	assert_int_equal(ch.n_flagged, 0);

	/* Released: stamps only. */
	md_mbox_release(b);
	assert_false(md_mbox_watched(b));
	assert_int_equal(md_mbox_poll(b, &ch), 0); /* the stamps of now */
	set_mtime(f->root, "cur", old);
	assert_int_equal(md_mbox_poll(b, &ch), 0);
	assert_int_equal(md_mbox_store(a, 1, 0, MD_F_SEEN), 0);
	set_mtime(f->root, "cur", old);
	assert_int_equal(md_mbox_poll(b, &ch), 0);
	assert_int_equal(ch.n_flagged, 0); /* not looked at */
	m = md_mbox_msgs(b, &n);
	assert_int_equal(m[0].flags, MD_F_SEEN);
	set_mtime(f->root, "cur", old + 1);
	assert_int_equal(md_mbox_poll(b, &ch), 0);
	assert_int_equal(ch.n_flagged, 1);
	md_mbox_close(&a);
	md_mbox_close(&b);
}

/*
 * The watch of a folder is shared by the thread's handles of it, each
 * handle keeps its own "seen" count; a change made by another process,
 * in the same second and with the stamps put back, is seen by the sync
 * right after it; a folder removed under a handle is told as such.
 */
static void test_md_mbox_watch_shared(void **state)
{
	struct fx *f = *state;
	time_t old = time(NULL) - 100;
	struct md_mbox_changes ch;
	struct md_mbox *a, *b, *c;
	char src[512], dst[512];
	int fd, status, ret;
	pid_t pid;

	deliver(f->st, NULL, "a\n");
	assert_int_equal(md_folder_create(f->st, "alice", "Gone"), 0);
	a = open_mb(f, "INBOX", false);
	b = open_mb(f, "INBOX", true);
	c = open_mb(f, "Gone", false);
	assert_true(md_mbox_watched(a) && md_mbox_watched(b) &&
		    md_mbox_watched(c));
	set_mtime(f->root, "new", old);
	set_mtime(f->root, "cur", old);
	set_mtime(f->root, "ringprot-uidlist", old);
	assert_int_equal(md_mbox_sync(a, &ch), 0);
	assert_int_equal(md_mbox_sync(b, &ch), 0);

	/* Another process delivers, then puts new/'s mtime back. */
	snprintf(src, sizeof(src), "%s/users/alice/tmp/x", f->root);
	snprintf(dst, sizeof(dst), "%s/users/alice/new/1.x,S=2,W=3", f->root);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct timespec ts[2] = {{old, 0}, {old, 0}};
		char dir[512];

		fd = open(src, O_WRONLY | O_CREAT | O_EXCL, 0600);
		snprintf(dir, sizeof(dir), "%s/users/alice/new", f->root);
		_exit(fd < 0 || write(fd, "b\n", 2) != 2 || close(fd) < 0 ||
		      rename(src, dst) < 0 ||
		      utimensat(AT_FDCWD, dir, ts, 0) < 0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* Both handles see it, each once (b read-only: it gives the UID,
	 * a claims the file into cur/). */
	assert_int_equal(md_mbox_sync(b, &ch), 0);
	assert_int_equal(ch.n_added, 1);
	assert_int_equal(md_mbox_sync(a, &ch), 0);
	assert_int_equal(ch.n_added, 1);
	assert_int_equal(md_mbox_sync(a, &ch), 0);
	assert_int_equal(ch.n_added, 0);
	assert_int_equal(md_mbox_sync(b, &ch), 0);
	assert_int_equal(ch.n_added + ch.n_vanished, 0);
	assert_int_equal(count_dir(f->root, "users/alice/new"), 0);
	/* One handle closed: the other keeps the folder's watch. */
	md_mbox_close(&a);
	assert_true(md_mbox_watched(b));

	/* The folder removed under c, with a message: c's sync (as b
	 * watched) tells of the removal; no crash, nothing left. */
	deliver(f->st, "Gone", "c\n");
	assert_int_equal(md_mbox_sync(c, &ch), 0);
	assert_int_equal(ch.n_added, 1);
	assert_int_equal(md_folder_delete(f->st, "alice", "Gone"), 0);
	ret = md_mbox_sync(c, &ch);
	assert_true(ret == 0 || ret == -ENOENT);
	if (ret == 0)
		assert_int_equal(ch.n_vanished, 1);
	md_mbox_close(&c);
	md_mbox_close(&b);

	/* Every slot freed: a folder opened again reuses one and works. */
	for (int i = 0; i < 3; i++) {
		a = open_mb(f, "INBOX", false);
		assert_true(md_mbox_watched(a));
		deliver(f->st, NULL, "again\n");
		assert_int_equal(md_mbox_sync(a, &ch), 0);
		assert_int_equal(ch.n_added, 1);
		md_mbox_close(&a);
	}
}

/*
 * A handle opened on a folder another handle of the thread has up to
 * date copies its list (no listing): the same UIDs, flags, sizes and
 * paths, without the other's \Recent; a read-only source serves only
 * read-only handles; after a change nobody has synced, it lists.
 */
static void test_md_mbox_open_copies(void **state)
{
	struct fx *f = *state;
	const struct md_msg_info *ma, *mb_;
	struct md_mbox *a, *b, *c, *r;
	uint32_t *gone = NULL;
	size_t na, nb, ngone;
	uint64_t l0;

	deliver(f->st, NULL, "Subject: 1\n\none\n");
	deliver(f->st, NULL, "Subject: 2\n\ntwo\n");
	r = open_mb(f, "INBOX", true);
	l0 = md_mbox_thread_listings();
	a = open_mb(f, "INBOX", false); /* r is read-only: a lists */
	assert_int_equal(md_mbox_thread_listings(), l0 + 1);
	assert_int_equal(md_mbox_store(a, 2, MD_F_FLAGGED, 0), 0);
	assert_int_equal(md_mbox_sync(a, NULL), 0); /* up to date again */
	l0 = md_mbox_thread_listings();
	b = open_mb(f, "INBOX", false);
	assert_int_equal(md_mbox_thread_listings(), l0);
	ma = md_mbox_msgs(a, &na);
	mb_ = md_mbox_msgs(b, &nb);
	assert_int_equal(na, 2);
	assert_int_equal(nb, 2);
	for (size_t i = 0; i < na; i++) {
		assert_int_equal(mb_[i].uid, ma[i].uid);
		assert_int_equal(ma[i].flags & MD_F_RECENT, MD_F_RECENT);
		assert_int_equal(mb_[i].flags, ma[i].flags & ~MD_F_RECENT);
		assert_int_equal(mb_[i].size, ma[i].size);
		assert_string_equal(mb_[i].path, ma[i].path);
	}
	assert_int_equal(mb_[1].flags, MD_F_FLAGGED);
	assert_int_equal(md_mbox_uidnext(b), md_mbox_uidnext(a));
	assert_int_equal(md_mbox_uidvalidity(b), md_mbox_uidvalidity(a));
	/* Closed while others have the folder open: its list is left
	 * for the next opener, who takes it (a's \Recent dropped). */
	md_mbox_close(&a);
	c = open_mb(f, "INBOX", false);
	assert_int_equal(md_mbox_thread_listings(), l0);
	ma = md_mbox_msgs(b, &na);
	mb_ = md_mbox_msgs(c, &nb);
	assert_int_equal(nb, na);
	for (size_t i = 0; i < na; i++) {
		assert_int_equal(mb_[i].uid, ma[i].uid);
		assert_int_equal(mb_[i].flags, ma[i].flags);
		assert_string_equal(mb_[i].path, ma[i].path);
	}
	md_mbox_close(&c);
	/* A change no handle synced yet: the left list and b's are stale,
	 * the next open lists. */
	deliver(f->st, NULL, "Subject: 3\n\nthree\n");
	c = open_mb(f, "INBOX", false);
	assert_int_equal(md_mbox_thread_listings(), l0 + 1);
	mb_ = md_mbox_msgs(c, &nb);
	assert_int_equal(nb, 3);
	assert_int_equal(mb_[2].flags, MD_F_RECENT); /* c claimed it */
	md_mbox_close(&c);
	/* b's list was copied (its paths in one block): a flag change, an
	 * expunge, a release and a sync replace them one by one. */
	assert_int_equal(md_mbox_store(b, 1, MD_F_SEEN | MD_F_DELETED, 0), 0);
	assert_int_equal(md_mbox_expunge(b, NULL, 0, &gone, &ngone), 0);
	assert_int_equal(ngone, 1);
	free(gone);
	assert_int_equal(md_mbox_sync(b, NULL), 0);
	md_mbox_release(b);
	assert_int_equal(md_mbox_sync(b, NULL), 0);
	mb_ = md_mbox_msgs(b, &nb);
	assert_int_equal(nb, 2);
	md_mbox_close(&b);
	md_mbox_close(&r);
}

/*
 * A file from elsewhere, without S=/W= in its name: its size is read
 * from the file (with CRLF line ends) and its date from the file's
 * mtime, once, when it is listed; its flags from the name.
 */
static void test_md_mbox_foreign_file(void **state)
{
	struct fx *f = *state;
	struct timespec ts[2] = {{1700000000, 0}, {1700000000, 0}};
	const struct md_msg_info *m;
	struct md_mbox *mb;
	char path[512];
	int64_t date;
	size_t n;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/users/alice/cur/1.foreign:2,FS",
		 f->root);
	fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fputs("Subject: x\n\nab\n", fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
	mb = open_mb(f, "INBOX", false);
	m = md_mbox_msgs(mb, &n);
	assert_int_equal(n, 1);
	assert_int_equal(m[0].size, 18); /* 15 bytes, 3 LFs as CRLF */
	assert_int_equal(m[0].flags, MD_F_FLAGGED | MD_F_SEEN);
	assert_string_equal(m[0].path, "cur/1.foreign:2,FS");
	assert_int_equal(md_mbox_msg_date(mb, m[0].uid, &date), 0);
	assert_int_equal(date, 1700000000);
	md_mbox_close(&mb);
}

enum {
	FIB_N = 4,
	FIB_MSGS = 8
};

struct fib {
	struct md_store *st;
	int idx;
	int ticks; /* sleeper: turns while the other waits on the lock */
	const int *stop;
};

/* A session in a fiber: appends, then flags what it appended. */
static int fib_session(void *arg)
{
	struct fib *fb = arg;
	uint32_t uids[FIB_MSGS], uv;
	struct md_mbox *mb;
	int ret = 0;

	for (int i = 0; i < FIB_MSGS && ret == 0; i++) {
		struct md_append *ap;

		ret = md_append_begin(fb->st, "alice", "Shared", &ap);
		if (ret == 0)
			ret = md_append_write(ap, "Subject: f\r\n\r\nx\r\n",
					      18);
		if (ret == 0)
			ret = md_append_commit(&ap, 0, NULL, 0, 0, &uv,
					       &uids[i]);
		else
			md_append_abort(&ap);
	}
	if (ret == 0)
		ret = md_mbox_open(fb->st, "alice", "Shared", false, &mb);
	for (int i = 0; i < FIB_MSGS && ret == 0; i++)
		ret = md_mbox_store(mb, uids[i], MD_F_SEEN, 0);
	if (ret == 0)
		md_mbox_close(&mb);
	return ret;
}

static void test_md_mbox_fibers(void **state)
{
	struct fx *f = *state;
	struct ur_fiber *fib[FIB_N];
	struct fib args[FIB_N];
	const struct md_msg_info *m;
	struct md_mbox *mb;
	size_t n;

	assert_int_equal(md_folder_create(f->st, "alice", "Shared"), 0);
	for (int i = 0; i < FIB_N; i++) {
		args[i] = (struct fib){.st = f->st, .idx = i};
		assert_int_equal(ur_fiber_spawn(f->tl->loop, fib_session,
						&args[i], NULL, &fib[i]),
				 0);
	}
	for (int i = 0; i < FIB_N; i++) {
		int ret = -1;

		assert_int_equal(ur_fiber_join(fib[i], &ret), 0);
		assert_int_equal(ret, 0);
	}
	mb = open_mb(f, "Shared", true);
	m = md_mbox_msgs(mb, &n);
	assert_int_equal(n, FIB_N * FIB_MSGS);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(m[i].uid, i + 1);
		assert_int_equal(m[i].flags, MD_F_SEEN);
		assert_int_equal(m[i].size, 18);
	}
	md_mbox_close(&mb);
}

static int fib_open(void *arg)
{
	struct fib *fb = arg;
	struct md_mbox *mb = NULL;
	int ret = md_mbox_open(fb->st, "alice", "INBOX", false, &mb);

	md_mbox_close(&mb);
	return ret;
}

static int fib_tick(void *arg)
{
	struct fib *fb = arg;

	while (!*fb->stop) {
		int ret = ur_sleep_until(CLOCK_MONOTONIC,
					 ur_now_ns(CLOCK_MONOTONIC) + 10000000);

		if (ret < 0)
			return ret;
		fb->ticks++;
	}
	return 0;
}

/* A fiber waiting for a held lock leaves its thread to the others. */
static void test_md_mbox_lock_wait_yields(void **state)
{
	struct fx *f = *state;
	struct ur_fiber *opener, *ticker;
	struct fib a = {.st = f->st}, b = {.st = f->st};
	int stop = 0, ret = 0, status;
	pid_t pid;

	b.stop = &stop;
	deliver(f->st, NULL, "a\n");
	pid = lock_holder(f->root, false);
	md_mbox_lock_timeout_ms = 300;
	assert_int_equal(
		ur_fiber_spawn(f->tl->loop, fib_open, &a, NULL, &opener), 0);
	assert_int_equal(
		ur_fiber_spawn(f->tl->loop, fib_tick, &b, NULL, &ticker), 0);
	assert_int_equal(ur_fiber_join(opener, &ret), 0);
	assert_int_equal(ret, -ETIMEDOUT);
	stop = 1;
	assert_int_equal(ur_fiber_join(ticker, &ret), 0);
	assert_int_equal(ret, 0);
	assert_true(b.ticks >= 10); /* 300 ms of 10 ms sleeps */
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
}

static void test_md_mbox_watch_paths(void **state)
{
	struct fx *f = *state;
	char a[4096], b[4096], c[4096], want[256];
	struct md_mbox *mb = open_mb(f, "INBOX", false);

	assert_int_equal(md_mbox_watch_paths(mb, a, b, c, sizeof(a)), 0);
	snprintf(want, sizeof(want), "%s/users/alice/new", f->root);
	assert_string_equal(a, want);
	snprintf(want, sizeof(want), "%s/users/alice/cur", f->root);
	assert_string_equal(b, want);
	snprintf(want, sizeof(want), "%s/users/alice/ringprot-uidlist",
		 f->root);
	assert_string_equal(c, want);
	assert_int_equal(access(c, F_OK), 0);
	assert_int_equal(md_mbox_watch_paths(mb, a, b, c, 10), -ENAMETOOLONG);
	md_mbox_close(&mb);
}

/* A released handle holds no descriptor and picks up where it was. */
static void test_md_mbox_release(void **state)
{
	struct fx *f = *state;
	struct md_mbox_changes ch;
	struct md_mbox *mb;
	int before;

	assert_int_equal(md_folder_create(f->st, "alice", "Box"), 0);
	deliver(f->st, "Box", "Subject: one\n\nx\n");
	mb = open_mb(f, "Box", false);
	before = count_fds();
	md_mbox_release(mb);
	assert_int_equal(count_fds(), before - 3);
	md_mbox_release(mb); /* twice: nothing more */
	assert_int_equal(count_fds(), before - 3);
	deliver(f->st, "Box", "Subject: two\n\nx\n");
	assert_int_equal(md_mbox_poll(mb, &ch), 0); /* stays released */
	assert_int_equal(count_fds(), before - 3);
	assert_int_equal(ch.n_added, 1);
	assert_int_equal(ch.added[0], 2);
	assert_int_equal(md_mbox_msg_open(mb, 2), -EBADF);
	assert_int_equal(md_mbox_sync(mb, &ch), 0); /* reacquires */
	assert_int_equal(count_fds(), before);
	assert_int_equal(ch.n_added + ch.n_vanished + ch.n_flagged, 0);
	/* Renamed while released: the name is gone. */
	md_mbox_release(mb);
	assert_int_equal(md_folder_rename(f->st, "alice", "Box", "Other"), 0);
	before = count_fds(); /* the rename dropped the delivery cache's */
	assert_int_equal(md_mbox_poll(mb, &ch), -ENOENT);
	assert_int_equal(md_mbox_sync(mb, &ch), -ENOENT);
	assert_int_equal(count_fds(), before);
	md_mbox_close(&mb);
}

/* The file of msgs[i] of INBOX, as stored. */
static char *stored(struct fx *f, const struct md_msg_info *m, size_t *len)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/users/alice/%s", f->root, m->path);
	return slurp(path, len);
}

/*
 * save_crlf (issue 17): deliveries and APPENDs stored with CRLF (bare LFs
 * get a CR, S == W), read back as LF; a store with both kinds (the option
 * toggled) tells them apart per file.
 */
static void test_md_mbox_save_crlf(void **state)
{
	struct fx *f = *state;
	struct md_store_opts o = {
		.root = f->root, .hostname = "mx.example", .save_crlf = true};
	struct md_store *crlf = NULL;
	const struct md_msg_info *m;
	const char *err = NULL;
	struct md_append *ap;
	struct md_mbox *mb;
	struct md_msg *msg;
	uint32_t uv, uid;
	char *buf;
	size_t n;

	assert_int_equal(md_store_open(&o, &crlf, &err), 0);
	deliver(f->st, NULL, "Subject: lf\n\nold\n"); /* uid 1: LF */
	/* uid 2: lmtpd's way, its own header with LF, the data CRLF, a
	 * bare LF and a CR LF split across writes. */
	assert_int_equal(md_msg_new(crlf, &msg), 0);
	assert_int_equal(md_msg_write(msg, "Return-Path: <a@b>\n", 19), 0);
	assert_int_equal(
		md_msg_write_crlf(msg, "Subject: x\r\n\r\nbare\nsplit\r", 25),
		0);
	assert_int_equal(md_msg_write_crlf(msg, "\nend\r\n", 6), 0);
	assert_int_equal(md_msg_finish(msg), 0);
	assert_int_equal(md_msg_deliver(msg, "alice", NULL, NULL, 0), 0);
	md_msg_free(&msg);
	mb = open_mb(f, "INBOX", false); /* UIDs 1 and 2 */
	/* uid 3: APPEND, starting with a bare LF. */
	assert_int_equal(md_append_begin(crlf, "alice", "INBOX", &ap), 0);
	assert_int_equal(md_append_write(ap, "\nA\r", 3), 0);
	assert_int_equal(md_append_write(ap, "\nB\n", 3), 0);
	assert_int_equal(md_append_commit(&ap, 0, NULL, 0, 0, &uv, &uid), 0);
	assert_int_equal(uid, 3);
	assert_int_equal(md_mbox_sync(mb, NULL), 0);
	m = md_mbox_msgs(mb, &n);
	assert_int_equal(n, 3);
	assert_false(md_msg_is_crlf(&m[0]));
	assert_true(md_msg_is_crlf(&m[1]));
	assert_true(md_msg_is_crlf(&m[2]));
	buf = stored(f, &m[1], &n);
	assert_int_equal(n, m[1].size);
	assert_string_equal(buf, "Return-Path: <a@b>\r\nSubject: x\r\n\r\n"
				 "bare\r\nsplit\r\nend\r\n");
	free(buf);
	buf = stored(f, &m[2], &n);
	assert_string_equal(buf, "\r\nA\r\nB\r\n");
	assert_int_equal(n, m[2].size);
	free(buf);

	/* Read back with LF line ends, whichever way they are stored. */
	assert_int_equal(md_mbox_msg_read(mb, 1, 100, &buf, &n), 0);
	assert_string_equal(buf, "Subject: lf\n\nold\n");
	free(buf);
	assert_int_equal(md_mbox_msg_read(mb, 2, 100, &buf, &n), 0);
	assert_int_equal(n, strlen(buf));
	assert_string_equal(buf, "Return-Path: <a@b>\nSubject: x\n\nbare\n"
				 "split\nend\n");
	free(buf);
	assert_int_equal(md_mbox_msg_read(mb, 3, 100, &buf, &n), 0);
	assert_string_equal(buf, "\nA\nB\n");
	free(buf);
	md_mbox_close(&mb);
	md_store_close(&crlf);
}

/* The path of uid in mb, or NULL. */
static const char *path_of(const struct md_mbox *mb, uint32_t uid)
{
	const struct md_msg_info *m;
	long i = md_mbox_find(mb, uid);
	size_t n;

	m = md_mbox_msgs(mb, &n);
	return i >= 0 ? m[i].path : NULL;
}

/*
 * Released (IDLE), another handle delivers, expunges and changes flags
 * and keywords: each poll tells exactly what changed since the one
 * before, with flags, keywords, sizes and \Recent kept across; the sync
 * that takes the handle back tells nothing twice and finds every file.
 */
static void test_md_mbox_release_changes(void **state)
{
	struct fx *f = *state;
	const struct md_msg_info *m;
	struct md_mbox_changes ch;
	struct md_mbox *a, *b;
	uint32_t *gone;
	size_t n, ngone;
	char *buf;
	int kw, before;

	for (int i = 0; i < 4; i++)
		deliver(f->st, NULL, "Subject: x\n\nbody\n");
	a = open_mb(f, "INBOX", false); /* claims 1-4: a's \Recent */
	b = open_mb(f, "INBOX", false);
	kw = md_mbox_keyword_index(a, "$Work");
	assert_int_equal(kw, 0);
	assert_int_equal(md_mbox_store(a, 1, MD_F_SEEN, 1U << kw), 0);
	assert_int_equal(md_mbox_sync(b, &ch), 0);
	assert_int_equal(ch.n_flagged, 1);
	before = count_fds();
	md_mbox_release(a);
	assert_int_equal(count_fds(), before - 3);
	m = md_mbox_msgs(a, &n);
	assert_int_equal(n, 4);
	for (size_t i = 0; i < n; i++)
		assert_null(m[i].path); /* the names are dropped */
	assert_int_equal(m[0].flags, MD_F_SEEN | MD_F_RECENT);
	assert_int_equal(m[0].keywords, 1U << kw);
	assert_int_equal(m[1].size, 20); /* CRLF size kept */
	assert_string_equal(md_mbox_keyword(a, 0), "$Work");
	assert_int_equal(md_mbox_store(a, 2, MD_F_SEEN, 0), -EBADF);
	assert_int_equal(md_mbox_expunge(a, NULL, 0, &gone, &ngone), -EBADF);

	/* Nothing changed: nothing told. */
	assert_int_equal(md_mbox_poll(a, &ch), 0);
	assert_int_equal(ch.n_added + ch.n_vanished + ch.n_flagged, 0);

	/* b: uid 2 flagged, uid 3 expunged, a new message (5). */
	assert_int_equal(md_mbox_store(b, 2, MD_F_FLAGGED, 0), 0);
	assert_int_equal(md_mbox_store(b, 3, MD_F_DELETED, 0), 0);
	assert_int_equal(md_mbox_expunge(b, NULL, 0, &gone, &ngone), 0);
	assert_int_equal(ngone, 1);
	free(gone);
	deliver(f->st, NULL, "Subject: y\n\nbody\n");
	assert_int_equal(md_mbox_poll(a, &ch), 0);
	assert_int_equal(count_fds(), before - 3);
	assert_int_equal(ch.n_flagged, 1);
	assert_int_equal(ch.flagged[0], 2);
	assert_int_equal(ch.n_vanished, 1);
	assert_int_equal(ch.vanished[0], 3);
	assert_int_equal(ch.n_added, 1);
	assert_int_equal(ch.added[0], 5);
	m = md_mbox_msgs(a, &n);
	assert_int_equal(n, 4);
	assert_int_equal(m[1].flags, MD_F_FLAGGED | MD_F_RECENT);
	assert_int_equal(m[3].uid, 5);
	assert_int_equal(m[3].flags, MD_F_RECENT); /* a's poll claimed it */
	for (size_t i = 0; i < n; i++)
		assert_null(m[i].path);
	md_mbox_release(a); /* frees the poll's changes */

	/* b: a keyword off uid 1, uid 5 expunged; then a takes it back. */
	assert_int_equal(md_mbox_sync(b, NULL), 0);
	assert_int_equal(md_mbox_store(b, 1, MD_F_SEEN, 0), 0);
	assert_int_equal(md_mbox_store(b, 5, MD_F_DELETED, 0), 0);
	assert_int_equal(md_mbox_expunge(b, NULL, 0, &gone, &ngone), 0);
	assert_int_equal(ngone, 1);
	free(gone);
	assert_int_equal(md_mbox_sync(a, &ch), 0);
	assert_int_equal(count_fds(), before);
	assert_int_equal(ch.n_added, 0);
	assert_int_equal(ch.n_flagged, 1);
	assert_int_equal(ch.flagged[0], 1);
	assert_int_equal(ch.n_vanished, 1);
	assert_int_equal(ch.vanished[0], 5);
	m = md_mbox_msgs(a, &n);
	assert_int_equal(n, 3);
	assert_int_equal(m[0].flags, MD_F_SEEN | MD_F_RECENT);
	assert_int_equal(m[0].keywords, 0);
	for (size_t i = 0; i < n; i++)
		assert_memory_equal(m[i].path, "cur/", 4);
	assert_true(strstr(path_of(a, 2), ":2,F") != NULL);
	/* Every file found again: read, store, expunge work. */
	assert_int_equal(md_mbox_msg_read(a, 4, 1024, &buf, &n), 0);
	assert_int_equal(n, 17);
	free(buf);
	assert_int_equal(md_mbox_store(a, 4, MD_F_DELETED, 0), 0);
	assert_int_equal(md_mbox_expunge(a, NULL, 0, &gone, &ngone), 0);
	assert_int_equal(ngone, 1);
	assert_int_equal(gone[0], 4);
	free(gone);
	assert_int_equal(md_mbox_sync(a, &ch), 0);
	assert_int_equal(ch.n_added + ch.n_vanished + ch.n_flagged, 0);
	md_mbox_close(&a);
	md_mbox_close(&b);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
	const struct CMUnitTest tests[] = {
		T(test_md_mbox_uids_persist),
		T(test_md_mbox_two_handles),
		T(test_md_mbox_processes),
		T(test_md_mbox_flags_names),
		T(test_md_mbox_keywords),
		T(test_md_mbox_copy_move_append),
		T(test_md_mbox_folders),
		T(test_md_mbox_bad_names),
		T(test_md_mbox_stale_lock),
		T(test_md_mbox_watch_paths),
		T(test_md_mbox_fibers),
		T(test_md_mbox_lock_wait_yields),
		T(test_md_mbox_cheap_sync),
		T(test_md_mbox_watch_shared),
		T(test_md_mbox_open_copies),
		T(test_md_mbox_foreign_file),
		T(test_md_mbox_uidlist_lost),
		T(test_md_mbox_copy_exdev),
		T(test_md_mbox_uidlist_append),
		T(test_md_mbox_release),
		T(test_md_mbox_save_crlf),
		T(test_md_mbox_release_changes),
	};
#undef T

	t_require_loop();
	return t_run_groups("md-mbox", tests, sizeof(tests) / sizeof(tests[0]));
}
