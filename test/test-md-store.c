/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * test/md-store: examples/maildir's store on real files under /tmp, per
 * engine: delivery, hard links, CRLF conversion at every split, names,
 * a full disk (a small tmpfs), tmp/ cleanup, fibers and threads at once.
 */
#include "t-helpers.h"

#include "maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
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

static void rm_rf(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static struct md_store *store_open(const char *root, bool no_fsync,
				   const char *host)
{
	struct md_store_opts o = {
		.root = root, .no_fsync = no_fsync, .hostname = host};
	struct md_store *st = NULL;
	const char *err = NULL;
	int ret = md_store_open(&o, &st, &err);

	if (ret < 0)
		fail_msg("md_store_open(%s): %s (%s)", root, strerror(-ret),
			 err != NULL ? err : "-");
	return st;
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL || t_loop_setup(state) < 0)
		return -1;
	f->tl = *state;
	snprintf(f->root, sizeof(f->root), "/tmp/md-store-XXXXXX");
	if (mkdtemp(f->root) == NULL)
		return -1;
	f->st = store_open(f->root, false, "mx.example");
	if (md_user_create(f->st, "alice", NULL) < 0 ||
	    md_user_create(f->st, "bob", NULL) < 0)
		return -1;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	md_store_close(&f->st);
	rm_rf(f->root);
	*state = f->tl;
	free(f);
	return t_loop_teardown(state);
}

/* Regular files and directories in path (not . and ..), -1 if none. */
static int count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static int count_sub(const char *root, const char *sub)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", root, sub);
	return count_dir(path);
}

/* The file's bytes (malloc'd, NUL added), its length in *len_out. */
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

/* Deliver text (raw) to user's folder; name_out gets the name. */
static int deliver(struct md_store *st, const char *text, size_t len,
		   const char *user, const char *folder, char *name_out)
{
	struct md_msg *m;
	int ret;

	assert_int_equal(md_msg_new(st, &m), 0);
	assert_int_equal(md_msg_write(m, text, len), 0);
	assert_int_equal(md_msg_finish(m), 0);
	ret = md_msg_deliver(m, user, folder, name_out, MD_NAME_MAX + 1);
	md_msg_free(&m);
	assert_null(m);
	return ret;
}

static void test_md_deliver_one(void **state)
{
	struct fx *f = *state;
	char name[MD_NAME_MAX + 1], path[512], want[64];
	struct md_msg *m;
	size_t len;
	char *got;

	assert_int_equal(md_msg_new(f->st, &m), 0);
	assert_int_equal(
		md_msg_write_crlf(m, "Subject: hi\r\n\r\nbody\r\n", 21), 0);
	assert_int_equal(md_msg_size(m), 18);
	/* Not finished yet: no delivery, nothing in new/. */
	assert_int_equal(md_msg_deliver(m, "alice", NULL, name, sizeof(name)),
			 -EINVAL);
	assert_int_equal(md_msg_finish(m), 0);
	assert_int_equal(md_msg_write(m, "x", 1), -EINVAL);
	assert_int_equal(md_msg_finish(m), -EINVAL);
	assert_int_equal(count_sub(f->root, "spool"), 1);
	assert_int_equal(md_msg_deliver(m, "alice", NULL, name, sizeof(name)),
			 0);
	md_msg_free(&m);
	md_msg_free(&m); /* NULL is accepted */

	snprintf(path, sizeof(path), "%s/users/alice/new/%s", f->root, name);
	got = slurp(path, &len);
	assert_int_equal(len, 18);
	assert_memory_equal(got, "Subject: hi\n\nbody\n", 18);
	free(got);
	/* Dovecot's size fields: S= as stored, W= with CRLF line ends. */
	snprintf(want, sizeof(want), ",S=18,W=21");
	assert_non_null(strstr(name, want));
	assert_non_null(strstr(name, ".mx.example,S="));
	assert_int_equal(count_sub(f->root, "users/alice/new"), 1);
	assert_int_equal(count_sub(f->root, "users/alice/tmp"), 0);
	assert_int_equal(count_sub(f->root, "users/alice/cur"), 0);
	assert_int_equal(count_sub(f->root, "spool"), 0);
}

static void test_md_deliver_many_links(void **state)
{
	struct fx *f = *state;
	char na[MD_NAME_MAX + 1], nb[MD_NAME_MAX + 1], nc[MD_NAME_MAX + 1];
	char path[512];
	struct stat sa, sb, sc;
	struct md_msg *m;

	assert_int_equal(md_msg_new(f->st, &m), 0);
	assert_int_equal(md_msg_write(m, "To: all\n\nhello\n", 15), 0);
	assert_int_equal(md_msg_finish(m), 0);
	assert_int_equal(md_msg_deliver(m, "alice", NULL, na, sizeof(na)), 0);
	assert_int_equal(md_msg_deliver(m, "bob", NULL, nb, sizeof(nb)), 0);
	/* A folder is made on first delivery (Maildir++). */
	assert_int_equal(
		md_msg_deliver(m, "alice", "Lists.rust", nc, sizeof(nc)), 0);
	assert_string_not_equal(na, nb);
	assert_string_not_equal(na, nc);

	snprintf(path, sizeof(path), "%s/users/alice/new/%s", f->root, na);
	assert_int_equal(stat(path, &sa), 0);
	snprintf(path, sizeof(path), "%s/users/bob/new/%s", f->root, nb);
	assert_int_equal(stat(path, &sb), 0);
	snprintf(path, sizeof(path), "%s/users/alice/.Lists.rust/new/%s",
		 f->root, nc);
	assert_int_equal(stat(path, &sc), 0);
	assert_int_equal(sa.st_ino, sb.st_ino);
	assert_int_equal(sa.st_ino, sc.st_ino);
	assert_int_equal(sa.st_nlink, 4); /* three recipients and the spool */
	assert_int_equal(sa.st_size, 15);
	assert_int_equal(sa.st_mode & 0777, 0600);
	md_msg_free(&m);
	snprintf(path, sizeof(path), "%s/users/alice/new/%s", f->root, na);
	assert_int_equal(stat(path, &sa), 0);
	assert_int_equal(sa.st_nlink, 3);
	assert_int_equal(count_sub(f->root, "spool"), 0);
	assert_int_equal(count_sub(f->root, "users/alice/.Lists.rust/tmp"), 0);
	assert_int_equal(count_sub(f->root, "users/alice/.Lists.rust/cur"), 0);
	snprintf(path, sizeof(path), "%s/users/alice/.Lists.rust/maildirfolder",
		 f->root);
	assert_int_equal(stat(path, &sa), 0);
}

/* CR LF -> LF, by hand: the reference the store is held to. */
static size_t crlf_ref(const char *in, size_t n, char *out, size_t *vsize)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++)
		if (!(in[i] == '\r' && i + 1 < n && in[i + 1] == '\n'))
			out[o++] = in[i];
	*vsize = o;
	for (size_t i = 0; i < o; i++)
		if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r'))
			(*vsize)++;
	return o;
}

static void crlf_check(struct md_store *st, const char *root, const char *in,
		       size_t n, const size_t *cuts, size_t ncuts)
{
	char want[128], name[MD_NAME_MAX + 1], path[512], sizes[64];
	size_t wlen, vsize, len, at = 0;
	struct md_msg *m;
	char *got;

	wlen = crlf_ref(in, n, want, &vsize);
	assert_int_equal(md_msg_new(st, &m), 0);
	for (size_t i = 0; i <= ncuts; i++) {
		size_t end = i < ncuts ? cuts[i] : n;

		assert_int_equal(md_msg_write_crlf(m, in + at, end - at), 0);
		at = end;
	}
	assert_int_equal(md_msg_finish(m), 0);
	assert_int_equal(md_msg_size(m), wlen);
	assert_int_equal(md_msg_deliver(m, "alice", NULL, name, sizeof(name)),
			 0);
	md_msg_free(&m);
	snprintf(path, sizeof(path), "%s/users/alice/new/%s", root, name);
	got = slurp(path, &len);
	assert_int_equal(len, wlen);
	assert_memory_equal(got, want, wlen);
	free(got);
	snprintf(sizes, sizeof(sizes), ",S=%zu,W=%zu", wlen, vsize);
	assert_non_null(strstr(name, sizes));
	assert_int_equal(unlink(path), 0);
}

static void test_md_crlf_splits(void **state)
{
	static const char in[] = "a\r\nb\rc\r\r\nd\n\r\n\r\r\n\n\rend\r";
	struct fx *f = *state;
	struct md_store *st = store_open(f->root, true, NULL);
	size_t n = sizeof(in) - 1, cuts[3];

	/* Every split point, every pair of them (empty writes included). */
	for (size_t i = 0; i <= n; i++) {
		cuts[0] = i;
		crlf_check(st, f->root, in, n, cuts, 1);
		for (size_t j = i; j <= n; j += 3) {
			cuts[1] = j;
			crlf_check(st, f->root, in, n, cuts, 2);
		}
	}
	/* One byte at a time. */
	{
		size_t one[sizeof(in)];

		for (size_t i = 0; i < n; i++)
			one[i] = i + 1;
		crlf_check(st, f->root, in, n, one, n - 1);
	}
	/* A held CR, then a raw write: the CR is kept. */
	{
		char name[MD_NAME_MAX + 1], path[512];
		struct md_msg *m;
		size_t len;
		char *got;

		assert_int_equal(md_msg_new(st, &m), 0);
		assert_int_equal(md_msg_write_crlf(m, "x\r", 2), 0);
		assert_int_equal(md_msg_write(m, "\ny", 2), 0);
		assert_int_equal(md_msg_finish(m), 0);
		assert_int_equal(
			md_msg_deliver(m, "alice", NULL, name, sizeof(name)),
			0);
		md_msg_free(&m);
		snprintf(path, sizeof(path), "%s/users/alice/new/%s", f->root,
			 name);
		got = slurp(path, &len);
		assert_int_equal(len, 4);
		assert_memory_equal(got, "x\r\ny", 4);
		free(got);
	}
	md_store_close(&st);
}

/* A large write goes out as is, around the buffer: content intact. */
static void test_md_large_writes(void **state)
{
	struct fx *f = *state;
	size_t big = 3 * 1024 * 1024 + 17, total = 0, len;
	char *data = malloc(big), *got;
	char name[MD_NAME_MAX + 1], path[512];
	struct md_msg *m;

	assert_non_null(data);
	for (size_t i = 0; i < big; i++)
		data[i] = (char)('a' + (i * 7) % 23);
	assert_int_equal(md_msg_new(f->st, &m), 0);
	/* Small, huge, buffer-filling, small: every path of the buffer. */
	assert_int_equal(md_msg_write(m, data, 10), 0);
	assert_int_equal(md_msg_write(m, data + 10, 2000000), 0);
	total = 2000010;
	while (total < big) {
		size_t k = big - total < 60000 ? big - total : 60000;

		assert_int_equal(md_msg_write(m, data + total, k), 0);
		total += k;
		assert_int_equal(md_msg_size(m), total);
	}
	assert_int_equal(md_msg_finish(m), 0);
	assert_int_equal(md_msg_deliver(m, "bob", NULL, name, sizeof(name)), 0);
	md_msg_free(&m);
	snprintf(path, sizeof(path), "%s/users/bob/new/%s", f->root, name);
	got = slurp(path, &len);
	assert_int_equal(len, big);
	assert_memory_equal(got, data, big);
	free(got);
	free(data);
}

static void test_md_unknown_user(void **state)
{
	struct fx *f = *state;
	char path[512];

	assert_int_equal(md_user_exists(f->st, "alice"), 1);
	assert_int_equal(md_user_exists(f->st, "carol"), 0);
	assert_int_equal(deliver(f->st, "x\n", 2, "carol", NULL, NULL),
			 -ENOENT);
	assert_int_equal(deliver(f->st, "x\n", 2, "carol", "Sent", NULL),
			 -ENOENT);
	assert_int_equal(count_sub(f->root, "users"), 2);
	/* A file is not a user. */
	snprintf(path, sizeof(path), "%s/users/file", f->root);
	close(open(path, O_CREAT | O_WRONLY, 0600));
	assert_int_equal(md_user_exists(f->st, "file"), 0);
	assert_int_equal(deliver(f->st, "x\n", 2, "file", NULL, NULL), -ENOENT);
	/* The operator's bare directory is a user: delivery completes it. */
	snprintf(path, sizeof(path), "%s/users/dave", f->root);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(md_user_exists(f->st, "dave"), 1);
	assert_int_equal(deliver(f->st, "x\n", 2, "dave", NULL, NULL), 0);
	assert_int_equal(count_sub(f->root, "users/dave/new"), 1);
	assert_int_equal(count_sub(f->root, "users/dave/cur"), 0);
	assert_int_equal(count_sub(f->root, "spool"), 0);
}

/* A user removed while its folder is cached, then made again. */
static void test_md_user_removed(void **state)
{
	struct fx *f = *state;
	char path[512];

	assert_int_equal(deliver(f->st, "1\n", 2, "bob", NULL, NULL), 0);
	snprintf(path, sizeof(path), "%s/users/bob", f->root);
	rm_rf(path);
	assert_int_equal(md_user_exists(f->st, "bob") == 1, false);
	assert_int_equal(deliver(f->st, "2\n", 2, "bob", NULL, NULL), -ENOENT);
	assert_int_equal(md_user_create(f->st, "bob", "Sent"), 0);
	assert_int_equal(md_user_exists(f->st, "bob"), 1);
	assert_int_equal(deliver(f->st, "3\n", 2, "bob", NULL, NULL), 0);
	assert_int_equal(deliver(f->st, "4\n", 2, "bob", "Sent", NULL), 0);
	assert_int_equal(count_sub(f->root, "users/bob/new"), 1);
	assert_int_equal(count_sub(f->root, "users/bob/.Sent/new"), 1);
}

static void test_md_bad_names(void **state)
{
	struct fx *f = *state;
	char longname[301], max[MD_NAME_MAX + 1];
	const char *bad[] = {"../x",  "a/b",   ".hidden", "",
			     ".",     "..",    "/abs",	  "a\nb",
			     "a\x01", "a\x7f", "tab\t",	  longname};
	struct md_msg *m;

	memset(longname, 'x', 300);
	longname[300] = '\0';
	memset(max, 'y', MD_NAME_MAX);
	max[MD_NAME_MAX] = '\0';
	assert_true(md_name_ok(max));
	max[MD_NAME_MAX - 1] = '\0';
	assert_true(md_name_ok(max));
	assert_true(md_name_ok("Lists.rust"));
	assert_true(md_name_ok("j\xc3\xb6rg"));
	assert_false(md_name_ok(NULL));
	/* A NUL ends a C name: "a\0/.." is "a", and "\0x" is empty. */
	assert_false(md_name_ok("\0x"));
	assert_true(md_name_ok("a\0/.."));

	assert_int_equal(md_msg_new(f->st, &m), 0);
	assert_int_equal(md_msg_write(m, "x\n", 2), 0);
	assert_int_equal(md_msg_finish(m), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_false(md_name_ok(bad[i]));
		assert_int_equal(md_msg_deliver(m, bad[i], NULL, NULL, 0),
				 -EINVAL);
		assert_int_equal(md_msg_deliver(m, "alice", bad[i], NULL, 0),
				 -EINVAL);
		assert_int_equal(md_user_exists(f->st, bad[i]), -EINVAL);
		assert_int_equal(md_user_create(f->st, bad[i], NULL), -EINVAL);
		assert_int_equal(md_user_create(f->st, "alice", bad[i]),
				 -EINVAL);
		assert_int_equal(md_clean_tmp(f->st, bad[i], 1), -EINVAL);
	}
	assert_int_equal(md_msg_deliver(m, NULL, NULL, NULL, 0), -EINVAL);
	md_msg_free(&m);
	assert_int_equal(count_sub(f->root, "users"), 2);
	assert_int_equal(count_sub(f->root, "users/alice"), 3);
	assert_int_equal(count_sub(f->root, "users/alice/new"), 0);
	assert_int_equal(count_sub(f->root, "spool"), 0);
	assert_int_equal(count_sub(f->root, "x"), -1); /* users/../x */
}

static void test_md_unique_names(void **state)
{
	enum {
		N = 300
	};
	struct fx *f = *state;
	struct md_store *st = store_open(f->root, true, "mx/a:b,c\\d");
	static char names[N][MD_NAME_MAX + 1];
	unsigned long long secs, q, last_q = 0;
	unsigned long usec;
	long pid;
	int used;

	for (int i = 0; i < N; i++) {
		assert_int_equal(deliver(st, "u\n", 2, "alice", NULL, names[i]),
				 0);
		assert_int_equal(sscanf(names[i], "%llu.M%6luP%ldQ%llu.%n",
					&secs, &usec, &pid, &q, &used),
				 4);
		assert_int_equal(pid, getpid());
		assert_true(usec < 1000000);
		assert_true(q > last_q); /* one counter, in order */
		last_q = q;
		assert_string_equal(names[i] + used,
				    "mx\\057a\\072b\\054c\\134d,S=2,W=3");
		for (int j = 0; j < i; j++)
			assert_string_not_equal(names[i], names[j]);
	}
	assert_int_equal(count_sub(f->root, "users/alice/new"), N);
	md_store_close(&st);
}

static int notified;
static char notified_what[128];

static void on_delivery(const char *user, const char *folder, void *arg)
{
	notified += *(int *)arg;
	snprintf(notified_what, sizeof(notified_what), "%s/%s", user,
		 folder != NULL ? folder : "INBOX");
}

static void test_md_notify(void **state)
{
	struct fx *f = *state;
	int one = 1;

	notified = 0;
	md_store_on_delivery(f->st, on_delivery, &one);
	assert_int_equal(deliver(f->st, "n\n", 2, "alice", NULL, NULL), 0);
	assert_int_equal(notified, 1);
	assert_string_equal(notified_what, "alice/INBOX");
	assert_int_equal(deliver(f->st, "n\n", 2, "bob", "Trash", NULL), 0);
	assert_int_equal(notified, 2);
	assert_string_equal(notified_what, "bob/Trash");
	/* Failed deliveries say nothing. */
	assert_int_equal(deliver(f->st, "n\n", 2, "nobody", NULL, NULL),
			 -ENOENT);
	assert_int_equal(deliver(f->st, "n\n", 2, "../bob", NULL, NULL),
			 -EINVAL);
	assert_int_equal(notified, 2);
	md_store_on_delivery(f->st, NULL, NULL);
	assert_int_equal(deliver(f->st, "n\n", 2, "alice", NULL, NULL), 0);
	assert_int_equal(notified, 2);
}

static uint64_t cqes_of(struct ur_loop *loop)
{
	struct ur_loop_stats s;

	ur_loop_stats(loop, &s);
	return s.cqes;
}

/* no_fsync skips exactly the two syncs: the spool's and new/'s. */
static void test_md_no_fsync(void **state)
{
	struct fx *f = *state;
	struct md_store *fast = store_open(f->root, true, NULL);
	uint64_t a, b, c;

	/* Warm both caches: the same ops from here on, syncs aside. */
	assert_int_equal(deliver(f->st, "w\n", 2, "alice", NULL, NULL), 0);
	assert_int_equal(deliver(fast, "w\n", 2, "alice", NULL, NULL), 0);
	a = cqes_of(f->tl->loop);
	assert_int_equal(deliver(f->st, "d\n", 2, "alice", NULL, NULL), 0);
	b = cqes_of(f->tl->loop);
	assert_int_equal(deliver(fast, "d\n", 2, "alice", NULL, NULL), 0);
	c = cqes_of(f->tl->loop);
	if (b - a == 0)
		print_message("this engine counts no file-op completions\n");
	else
		assert_int_equal((b - a) - (c - b), 2);
	assert_int_equal(count_sub(f->root, "users/alice/new"), 4);
	md_store_close(&fast);
}

static void age_file(const char *path, time_t age)
{
	struct timespec ts[2];
	int fd = open(path, O_CREAT | O_WRONLY, 0600);

	assert_true(fd >= 0);
	close(fd);
	if (age == 0)
		return;
	clock_gettime(CLOCK_REALTIME, &ts[0]);
	ts[0].tv_sec -= age;
	ts[1] = ts[0];
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void test_md_clean_tmp(void **state)
{
	static const struct {
		const char *path;
		time_t age;
	} files[] = {
		{"users/alice/tmp/old", 200000},
		{"users/alice/tmp/fresh", 0},
		{"users/alice/tmp/recent", 3600},
		{"users/alice/.Sent/tmp/old", 130000},
		{"users/alice/new/old-but-delivered", 300000},
		{"users/bob/tmp/old", 200000},
		{"spool/old", 200000},
		{"spool/fresh", 0},
	};
	struct fx *f = *state;
	char path[512];

	assert_int_equal(md_user_create(f->st, "alice", "Sent"), 0);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", f->root, files[i].path);
		age_file(path, files[i].age);
	}
	/* A user's tmp/ and its folders', never the spool's. */
	assert_int_equal(md_clean_tmp(f->st, "alice", 129600), 2);
	assert_int_equal(md_clean_tmp(f->st, "alice", 129600), 0);
	assert_int_equal(count_sub(f->root, "users/alice/tmp"), 2);
	assert_int_equal(count_sub(f->root, "users/alice/.Sent/tmp"), 0);
	assert_int_equal(count_sub(f->root, "users/alice/new"), 1);
	assert_int_equal(count_sub(f->root, "users/bob/tmp"), 1);
	assert_int_equal(count_sub(f->root, "spool"), 2);
	/* The spool alone, and a shorter age. */
	snprintf(path, sizeof(path), "%s/spool/old2", f->root);
	age_file(path, 200000);
	assert_int_equal(md_clean_tmp(f->st, NULL, 129600), 2);
	assert_int_equal(count_sub(f->root, "spool"), 1);
	assert_int_equal(md_clean_tmp(f->st, "bob", 60), 1);
	assert_int_equal(md_clean_tmp(f->st, "alice", 60), 1);
	assert_int_equal(count_sub(f->root, "users/alice/tmp"), 1);
	assert_int_equal(md_clean_tmp(f->st, "nobody", 60), -ENOENT);
}

/* Mount a tmpfs of size bytes on path: false (test skipped) if refused. */
static bool small_fs(const char *path, const char *size)
{
	char opt[32];

	snprintf(opt, sizeof(opt), "size=%s", size);
	if (mount("tmpfs", path, "tmpfs", 0, opt) == 0)
		return true;
	print_message("mount tmpfs on %s: %s\n", path, strerror(errno));
	return false;
}

/* Write 256 KiB in 4 KiB pieces: the first error, or finish's. */
static int write_big(struct md_msg *m)
{
	static char chunk[4096];
	int ret = 0;

	memset(chunk, 'z', sizeof(chunk));
	for (int i = 0; i < 64 && ret == 0; i++)
		ret = md_msg_write(m, chunk, sizeof(chunk));
	if (ret == 0)
		ret = md_msg_finish(m);
	return ret;
}

/* The spool's filesystem fills up: the error, and nothing left over. */
static void test_md_disk_full_spool(void **state)
{
	struct fx *f = *state;
	struct md_store *st;
	struct md_msg *m;
	char dir[128];
	int ret;

	snprintf(dir, sizeof(dir), "%s/small", f->root);
	assert_int_equal(mkdir(dir, 0700), 0);
	if (!small_fs(dir, "64k")) {
		struct rlimit old, lim;

		/* Unprivileged: a file size limit gives -EFBIG instead. */
		assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
		lim = old;
		lim.rlim_cur = 64 * 1024;
		if (signal(SIGXFSZ, SIG_IGN) == SIG_ERR ||
		    setrlimit(RLIMIT_FSIZE, &lim) < 0) {
			print_message("neither tmpfs nor RLIMIT_FSIZE\n");
			skip();
		}
		assert_int_equal(md_msg_new(f->st, &m), 0);
		ret = write_big(m);
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
		assert_int_equal(ret, -EFBIG);
		md_msg_free(&m);
		assert_int_equal(count_sub(f->root, "spool"), 0);
		return;
	}
	st = store_open(dir, false, NULL);
	assert_int_equal(md_user_create(st, "alice", NULL), 0);
	assert_int_equal(md_msg_new(st, &m), 0);
	ret = write_big(m);
	assert_int_equal(ret, -ENOSPC);
	/* The error sticks; nothing can be delivered. */
	assert_int_equal(md_msg_write(m, "x", 1), -ENOSPC);
	assert_int_equal(md_msg_finish(m), -ENOSPC);
	assert_int_equal(md_msg_deliver(m, "alice", NULL, NULL, 0), -EINVAL);
	md_msg_free(&m);
	assert_int_equal(count_sub(dir, "spool"), 0);
	assert_int_equal(count_sub(dir, "users/alice/tmp"), 0);
	assert_int_equal(count_sub(dir, "users/alice/new"), 0);
	/* Room again: deliveries work. */
	assert_int_equal(deliver(st, "ok\n", 3, "alice", NULL, NULL), 0);
	md_store_close(&st);
	assert_int_equal(umount2(dir, MNT_DETACH), 0);
}

/*
 * The user's folder is on another filesystem: linkat fails with EXDEV,
 * the message is copied through tmp/. Once with room, once without.
 */
static void test_md_exdev_copy(void **state)
{
	struct fx *f = *state;
	char carol[128], dave[128], name[MD_NAME_MAX + 1], path[512];
	static char body[200 * 1024];
	struct md_msg *m;
	struct stat sb;
	size_t len;
	char *got;

	snprintf(carol, sizeof(carol), "%s/users/carol", f->root);
	snprintf(dave, sizeof(dave), "%s/users/dave", f->root);
	assert_int_equal(mkdir(carol, 0700), 0);
	assert_int_equal(mkdir(dave, 0700), 0);
	if (!small_fs(carol, "1m"))
		skip();
	if (!small_fs(dave, "64k")) {
		assert_int_equal(umount2(carol, MNT_DETACH), 0);
		skip();
	}
	memset(body, 'q', sizeof(body));
	body[sizeof(body) - 1] = '\n';
	assert_int_equal(md_msg_new(f->st, &m), 0);
	assert_int_equal(md_msg_write(m, body, sizeof(body)), 0);
	assert_int_equal(md_msg_finish(m), 0);
	assert_int_equal(md_msg_deliver(m, "carol", NULL, name, sizeof(name)),
			 0);
	assert_int_equal(md_msg_deliver(m, "dave", NULL, NULL, 0), -ENOSPC);
	assert_int_equal(md_msg_deliver(m, "alice", NULL, NULL, 0), 0);
	md_msg_free(&m);

	snprintf(path, sizeof(path), "%s/new/%s", carol, name);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_nlink, 1); /* a copy, not a link */
	got = slurp(path, &len);
	assert_int_equal(len, sizeof(body));
	assert_memory_equal(got, body, sizeof(body));
	free(got);
	assert_int_equal(count_sub(carol, "tmp"), 0);
	assert_int_equal(count_sub(dave, "tmp"), 0);
	assert_int_equal(count_sub(dave, "new"), 0);
	assert_int_equal(count_sub(f->root, "spool"), 0);
	/* Close the store first: its cache holds the mounts' folders. */
	md_store_close(&f->st);
	assert_int_equal(umount2(carol, MNT_DETACH), 0);
	assert_int_equal(umount2(dave, MNT_DETACH), 0);
}

enum {
	FIB_N = 8,
	FIB_MSGS = 100
};

struct fib {
	struct md_store *st;
	int idx;
	int ret;
};

static int fib_run(void *arg)
{
	struct fib *fb = arg;
	char text[32];

	for (int i = fb->idx; i < FIB_MSGS; i += FIB_N) {
		struct md_msg *m;
		int ret, len = snprintf(text, sizeof(text), "id %d\n", i);

		ret = md_msg_new(fb->st, &m);
		if (ret == 0)
			ret = md_msg_write_crlf(m, text, (size_t)len);
		if (ret == 0)
			ret = md_msg_finish(m);
		if (ret == 0)
			ret = md_msg_deliver(m, "alice", NULL, NULL, 0);
		if (ret == 0)
			ret = md_msg_deliver(m, "bob", "Inbox2", NULL, 0);
		md_msg_free(&m);
		if (ret < 0)
			return fb->ret = ret;
	}
	return 0;
}

/* Each id 0..FIB_MSGS-1 exactly once in dir. */
static void check_ids(const char *dir)
{
	char seen[FIB_MSGS] = {0}, path[512];
	struct dirent *de;
	DIR *d = opendir(dir);
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		size_t len;
		char *got;
		int id;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		got = slurp(path, &len);
		assert_int_equal(sscanf(got, "id %d", &id), 1);
		assert_true(id >= 0 && id < FIB_MSGS);
		assert_int_equal(seen[id], 0);
		seen[id] = 1;
		free(got);
		n++;
	}
	closedir(d);
	assert_int_equal(n, FIB_MSGS);
}

static void test_md_fibers(void **state)
{
	struct fx *f = *state;
	struct ur_fiber *fib[FIB_N];
	struct fib args[FIB_N];
	struct md_store_stats ss;
	char dir[256];

	for (int i = 0; i < FIB_N; i++) {
		args[i] = (struct fib){.st = f->st, .idx = i};
		assert_int_equal(ur_fiber_spawn(f->tl->loop, fib_run, &args[i],
						NULL, &fib[i]),
				 0);
	}
	for (int i = 0; i < FIB_N; i++) {
		int ret = -1;

		assert_int_equal(ur_fiber_join(fib[i], &ret), 0);
		assert_int_equal(ret, 0);
	}
	snprintf(dir, sizeof(dir), "%s/users/alice/new", f->root);
	check_ids(dir);
	snprintf(dir, sizeof(dir), "%s/users/bob/.Inbox2/new", f->root);
	check_ids(dir);
	assert_int_equal(count_sub(f->root, "spool"), 0);
	assert_int_equal(count_sub(f->root, "users/alice/tmp"), 0);

	/*
	 * FIB_N fibers deliver into the same two folders at once: on
	 * io_uring their fsyncs of new/ are in flight together, and those
	 * that find one running share the next instead of issuing their
	 * own. (epoll runs file ops inline: little or nothing overlaps.)
	 */
	md_store_stats(f->st, &ss);
	assert_int_equal(ss.deliveries, 2 * FIB_MSGS);
	assert_true(ss.dir_syncs <= ss.deliveries);
	if (!t_epoll())
		assert_true(ss.dir_syncs < ss.deliveries);
	print_message("%llu deliveries, %llu fsyncs of new/\n",
		      (unsigned long long)ss.deliveries,
		      (unsigned long long)ss.dir_syncs);
}

enum {
	THR_N = 4
};

struct thr {
	struct md_store *st;
	int idx;
	int ret;
};

/* A worker thread: its own loop, deliveries outside any fiber. */
static void *thr_run(void *arg)
{
	struct thr *t = arg;
	struct ur_loop_opts o = {.backend = t_backend, .mode = t_mode};
	struct ur_loop *loop;
	char text[32];

	t->ret = ur_loop_new(&o, &loop);
	for (int i = t->idx; t->ret == 0 && i < FIB_MSGS; i += THR_N) {
		struct md_msg *m;
		int len = snprintf(text, sizeof(text), "id %d\n", i);

		t->ret = md_msg_new(t->st, &m);
		if (t->ret == 0)
			t->ret = md_msg_write(m, text, (size_t)len);
		if (t->ret == 0)
			t->ret = md_msg_finish(m);
		if (t->ret == 0)
			t->ret = md_msg_deliver(m, "bob", NULL, NULL, 0);
		md_msg_free(&m);
	}
	ur_loop_free(&loop);
	return NULL;
}

static void test_md_threads(void **state)
{
	struct fx *f = *state;
	pthread_t th[THR_N];
	struct thr args[THR_N];
	char dir[256];

	for (int i = 0; i < THR_N; i++) {
		args[i] = (struct thr){.st = f->st, .idx = i};
		assert_int_equal(
			pthread_create(&th[i], NULL, thr_run, &args[i]), 0);
	}
	for (int i = 0; i < THR_N; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(args[i].ret, 0);
	}
	snprintf(dir, sizeof(dir), "%s/users/bob/new", f->root);
	check_ids(dir);
	assert_int_equal(count_sub(f->root, "spool"), 0);
}

static void test_md_open_errors(void **state)
{
	struct md_store_opts o = {.root = "/proc/self/nope/md"};
	struct md_store *st = (void *)1;
	const char *err = NULL;

	(void)state;
	assert_int_equal(md_store_open(&o, &st, &err), -ENOENT);
	assert_null(st);
	assert_non_null(err);
	assert_string_equal(err, "/proc/self/nope/md");
	o.root = NULL;
	assert_int_equal(md_store_open(&o, &st, &err), -EINVAL);
	md_store_close(&st);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
	const struct CMUnitTest tests[] = {
		T(test_md_deliver_one),
		T(test_md_deliver_many_links),
		T(test_md_crlf_splits),
		T(test_md_large_writes),
		T(test_md_unknown_user),
		T(test_md_user_removed),
		T(test_md_bad_names),
		T(test_md_unique_names),
		T(test_md_notify),
		T(test_md_no_fsync),
		T(test_md_clean_tmp),
		T(test_md_disk_full_spool),
		T(test_md_exdev_copy),
		T(test_md_fibers),
		T(test_md_threads),
		cmocka_unit_test_setup_teardown(test_md_open_errors,
						t_loop_setup, t_loop_teardown),
	};
#undef T

	t_require_loop();
	return t_run_groups("md-store", tests,
			    sizeof(tests) / sizeof(tests[0]));
}
