/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/maildir: a user's folders: LIST, CREATE, DELETE, RENAME,
 * subscriptions and STATUS.
 *
 * A folder is the directory <user>/.<name>; a parent that has no
 * directory of its own is a \Noselect name that exists because of its
 * children (Maildir++ has no directory nesting). That makes RFC 3501's
 * DELETE of a folder with children simple: its directory goes, its
 * children stay, and the name shows as \Noselect.
 *
 * DELETE renames the directory to "..del.<unique>" first (never a
 * folder name: names do not start with '.'), so that it disappears in
 * one step, then removes what is inside. RENAME of a folder with
 * children renames each directory: a crash midway leaves some under
 * each name, none lost. Directory listings are plain readdir.
 */
#include "mailbox.h"
#include "maildir.h"
#include "mbox-internal.h"
#include "md-internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ringprot/uring.h>

#define SUBS_FILE "subscriptions"
#define SUBS_LOCK "ringprot-subscriptions.lock"
#define DIR_MAX	  (MD_MBOX_NAME_MAX + 2)

struct names {
	struct md_folder_info *v;
	size_t n, cap;
};

static int names_push(struct names *nv, const char *name, size_t len,
		      unsigned attrs)
{
	if (nv->n == nv->cap) {
		size_t cap = nv->cap ? nv->cap * 2 : 32;
		struct md_folder_info *v = realloc(nv->v, cap * sizeof(*v));

		if (v == NULL)
			return -ENOMEM;
		nv->v = v;
		nv->cap = cap;
	}
	nv->v[nv->n].name = strndup(name, len);
	if (nv->v[nv->n].name == NULL)
		return -ENOMEM;
	nv->v[nv->n].attrs = attrs;
	nv->n++;
	return 0;
}

void md_folder_list_free(struct md_folder_info **listp, size_t n)
{
	struct md_folder_info *v = *listp;

	if (v == NULL)
		return;
	*listp = NULL;
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

/* Is de (in fd) a folder directory ".<name>"? */
static bool is_folder(int fd, const struct dirent *de)
{
	struct stat sb;

	if (de->d_name[0] != '.' || md_mbox_name_check(de->d_name + 1) < 0 ||
	    md_mbox_is_inbox(de->d_name + 1))
		return false;
	if (de->d_type == DT_DIR)
		return true;
	return de->d_type == DT_UNKNOWN &&
	       fstatat(fd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
	       S_ISDIR(sb.st_mode);
}

/* Each folder of the user's directory, and each of its parents as a
 * \Noselect candidate (deduplicated later). */
static int read_folders(struct md_store *st, const char *user, struct names *nv)
{
	struct dirent *de;
	DIR *dir;
	int fd, ret = 0;

	fd = mb__user_open(st, user);
	if (fd < 0)
		return fd;
	ret = mb__fdopendir(fd, &dir);
	if (ret < 0)
		return ret;
	while (ret == 0 && (de = readdir(dir)) != NULL) {
		const char *name = de->d_name + 1, *dot;

		if (!is_folder(fd, de))
			continue;
		ret = names_push(nv, name, strlen(name), 0);
		for (dot = strchr(name, '.'); ret == 0 && dot != NULL;
		     dot = strchr(dot + 1, '.'))
			ret = names_push(nv, name, (size_t)(dot - name),
					 MD_ATTR_NOSELECT);
	}
	closedir(dir);
	return ret;
}

/* By name; of equal names the existing folder (no \Noselect) first. */
static int info_cmp(const void *x, const void *y)
{
	const struct md_folder_info *a = x, *b = y;
	int c = strcmp(a->name, b->name);

	return c != 0 ? c : (int)a->attrs - (int)b->attrs;
}

static unsigned special_use(const char *name)
{
	static const struct {
		const char *name;
		unsigned attr;
	} su[] = {
		{"Sent", MD_ATTR_SENT},
		{"Drafts", MD_ATTR_DRAFTS},
		{"Trash", MD_ATTR_TRASH},
		{"Junk", MD_ATTR_JUNK},
	};

	for (size_t i = 0; i < sizeof(su) / sizeof(su[0]); i++)
		if (strcmp(name, su[i].name) == 0)
			return su[i].attr;
	return 0;
}

static bool in_strv(char **v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], name) == 0)
			return true;
	return false;
}

/* Sort, drop duplicates, and set the child and special-use flags. */
static void finish_list(struct names *nv, char **subs, size_t nsubs)
{
	size_t w = 0;

	qsort(nv->v + 1, nv->n - 1, sizeof(*nv->v), info_cmp);
	for (size_t i = 1; i < nv->n; i++) {
		if (w > 0 && strcmp(nv->v[w].name, nv->v[i].name) == 0) {
			free(nv->v[i].name);
			continue;
		}
		nv->v[++w] = nv->v[i];
	}
	nv->n = w + 1;
	for (size_t i = 0; i < nv->n; i++) {
		struct md_folder_info *f = &nv->v[i];
		size_t len = strlen(f->name);
		bool kids = false;

		/* Names with f's as a prefix follow it in sorted order. */
		for (size_t j = i + 1;
		     i > 0 && j < nv->n && !kids &&
		     strncmp(nv->v[j].name, f->name, len) == 0;
		     j++)
			kids = nv->v[j].name[len] == '.';
		f->attrs |= kids ? MD_ATTR_HASCHILDREN : MD_ATTR_HASNOCHILDREN;
		if (!(f->attrs & MD_ATTR_NOSELECT))
			f->attrs |= special_use(f->name);
		if (in_strv(subs, nsubs, f->name))
			f->attrs |= MD_ATTR_SUBSCRIBED;
	}
}

int md_folder_list(struct md_store *st, const char *user,
		   struct md_folder_info **list_out, size_t *n_out)
{
	struct names nv = {0};
	char **subs = NULL;
	size_t nsubs = 0;
	int ret;

	*list_out = NULL;
	*n_out = 0;
	ret = names_push(&nv, "INBOX", 5, 0);
	if (ret == 0)
		ret = read_folders(st, user, &nv);
	if (ret == 0)
		ret = md_subscriptions(st, user, &subs, &nsubs);
	if (ret < 0) {
		md_folder_list_free(&nv.v, nv.n);
		return ret;
	}
	finish_list(&nv, subs, nsubs);
	md_strv_free(&subs, nsubs);
	*list_out = nv.v;
	*n_out = nv.n;
	return 0;
}

/* -------------------------------------------------------------------- */
/* CREATE */

static int dir_exists(int ufd, const char *name)
{
	char dir[DIR_MAX];
	struct stat sb;

	mb__dir_name(name, dir, sizeof(dir));
	if (fstatat(ufd, dir, &sb, AT_SYMLINK_NOFOLLOW) == 0)
		return S_ISDIR(sb.st_mode) ? 1 : -EEXIST;
	return errno == ENOENT ? 0 : -errno;
}

/* Make name's missing parents (each a real, empty folder). */
static int make_parents(struct md_store *st, const char *user, const char *name)
{
	char prefix[MD_MBOX_NAME_MAX + 1];
	int ret = 0;

	for (const char *dot = strchr(name, '.'); ret == 0 && dot != NULL;
	     dot = strchr(dot + 1, '.')) {
		(void)snprintf(prefix, sizeof(prefix), "%.*s",
			       (int)(dot - name), name);
		ret = md_user_create(st, user, prefix);
	}
	return ret;
}

static int create_leaf(struct md_store *st, const char *user, const char *name)
{
	int fd, ret;

	ret = md_user_create(st, user, name);
	if (ret < 0)
		return ret;
	fd = mb__folder_open(st, user, name);
	if (fd < 0)
		return fd;
	ret = mb__uidlist_init(st, fd);
	mb__close(fd);
	return ret;
}

int md_folder_create(struct md_store *st, const char *user, const char *name)
{
	int ufd, ret;

	if (md_mbox_name_check(name) < 0)
		return -EINVAL;
	ufd = mb__user_open(st, user);
	if (ufd < 0)
		return ufd;
	ret = md_mbox_is_inbox(name) ? 1 : dir_exists(ufd, name);
	mb__close(ufd);
	if (ret != 0)
		return ret < 0 ? ret : -EEXIST;
	ret = make_parents(st, user, name);
	return ret < 0 ? ret : create_leaf(st, user, name);
}

/* -------------------------------------------------------------------- */
/* DELETE */

/*
 * Unlink what is in dfd's path, then remove path. A subdirectory is
 * handed to sub (NULL: it stays, and so does path: -ENOTEMPTY). A folder
 * is its directory plus tmp/ new/ cur/: rm_folder() goes two levels
 * down and no further; anything deeper was not made by us.
 */
static int rm_dir(int dfd, const char *path,
		  int (*sub)(int dfd, const char *path))
{
	struct dirent *de;
	DIR *dir;
	int fd, ret = 0;

	fd = ur_openat(dfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
	if (fd < 0)
		return fd;
	ret = mb__fdopendir(fd, &dir);
	if (ret < 0)
		return ret;
	while (ret == 0 && (de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		ret = ur_unlinkat(fd, de->d_name, 0);
		if (sub != NULL && (ret == -EISDIR || ret == -EPERM))
			ret = sub(fd, de->d_name);
		if (ret == -ENOENT)
			ret = 0;
	}
	closedir(dir);
	return ret < 0 ? ret : ur_unlinkat(dfd, path, AT_REMOVEDIR);
}

static int rm_files(int dfd, const char *path)
{
	return rm_dir(dfd, path, NULL);
}

static int rm_folder(int dfd, const char *path)
{
	return rm_dir(dfd, path, rm_files);
}

/* Does some folder ".name.x" exist? */
static int has_children(int ufd, const char *name)
{
	size_t len = strlen(name);
	struct dirent *de;
	DIR *dir;
	int fd, ret = 0;

	fd = ur_openat(ufd, ".", O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return fd;
	ret = mb__fdopendir(fd, &dir);
	if (ret < 0)
		return ret;
	while (ret == 0 && (de = readdir(dir)) != NULL)
		ret = de->d_name[0] == '.' &&
		      strncmp(de->d_name + 1, name, len) == 0 &&
		      de->d_name[len + 1] == '.' && is_folder(fd, de);
	closedir(dir);
	return ret;
}

int md_folder_delete(struct md_store *st, const char *user, const char *name)
{
	char dir[DIR_MAX], gone[256], uniq[200];
	int ufd, ret;

	if (md_mbox_name_check(name) < 0)
		return -EINVAL;
	if (md_mbox_is_inbox(name))
		return -EPERM;
	ufd = mb__user_open(st, user);
	if (ufd < 0)
		return ufd;
	mb__dir_name(name, dir, sizeof(dir));
	md__uniq_name(st, uniq, sizeof(uniq));
	(void)snprintf(gone, sizeof(gone), "..del.%.200s", uniq);
	ret = ur_renameat(ufd, dir, ufd, gone, 0);
	if (ret == -ENOENT) {
		/* RFC 3501 6.3.4: a \Noselect name with children: NO. */
		ret = has_children(ufd, name);
		ret = ret < 0 ? ret : ret > 0 ? -EPERM : -ENOENT;
	}
	if (ret == 0) {
		md__folder_forget(st, user, name);
		if (rm_folder(ufd, gone) < 0) {
			/* Out of sight already; the rest stays as garbage. */
		}
		ret = mb__sync_fd(st, ufd);
	}
	mb__close(ufd);
	return ret;
}

/* -------------------------------------------------------------------- */
/* RENAME */

/* Every folder to rename: from itself (if it has a directory), then
 * its children, as suffixes after from ("" for from itself). */
static int rename_set(int ufd, const char *from, struct names *nv)
{
	size_t len = strlen(from);
	struct dirent *de;
	DIR *dir;
	int fd, ret = 0;

	fd = ur_openat(ufd, ".", O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return fd;
	ret = mb__fdopendir(fd, &dir);
	if (ret < 0)
		return ret;
	while (ret == 0 && (de = readdir(dir)) != NULL) {
		const char *n = de->d_name + 1;

		if (!is_folder(fd, de) || strncmp(n, from, len) != 0 ||
		    (n[len] != '\0' && n[len] != '.'))
			continue;
		ret = names_push(nv, n + len, strlen(n + len), 0);
	}
	closedir(dir);
	return ret;
}

/* Check every new name is acceptable and free. */
static int rename_check(int ufd, const char *to, const struct names *nv)
{
	char name[MD_MBOX_NAME_MAX + 2];
	int ret;

	for (size_t i = 0; i < nv->n; i++) {
		if ((size_t)snprintf(name, sizeof(name), "%s%s", to,
				     nv->v[i].name) >= sizeof(name) ||
		    md_mbox_name_check(name) < 0)
			return -EINVAL;
		ret = dir_exists(ufd, name);
		if (ret != 0)
			return ret < 0 ? ret : -EEXIST;
	}
	return 0;
}

static int rename_dirs(struct md_store *st, const char *user, int ufd,
		       const char *from, const char *to, const struct names *nv)
{
	char a[DIR_MAX + 1], b[DIR_MAX + 1];
	int ret = 0;

	for (size_t i = 0; i < nv->n && ret == 0; i++) {
		(void)snprintf(a, sizeof(a), ".%s%s", from, nv->v[i].name);
		(void)snprintf(b, sizeof(b), ".%s%s", to, nv->v[i].name);
		ret = ur_renameat(ufd, a, ufd, b, RENAME_NOREPLACE);
		if (ret == -EINVAL)
			ret = ur_renameat(ufd, a, ufd, b, 0);
		md__folder_forget(st, user, a + 1);
	}
	return ret < 0 ? ret : mb__sync_fd(st, ufd);
}

/* RFC 3501 6.3.5: INBOX's messages move into a new folder to. */
static int rename_inbox(struct md_store *st, const char *user, const char *to);

int md_folder_rename(struct md_store *st, const char *user, const char *from,
		     const char *to)
{
	size_t flen = strlen(from);
	struct names nv = {0};
	int ufd, ret;

	if (md_mbox_name_check(from) < 0 || md_mbox_name_check(to) < 0)
		return -EINVAL;
	if (md_mbox_is_inbox(to) || strcmp(from, to) == 0)
		return -EEXIST;
	if (md_mbox_is_inbox(from))
		return rename_inbox(st, user, to);
	if (strncmp(to, from, flen) == 0 && to[flen] == '.')
		return -EINVAL;
	ufd = mb__user_open(st, user);
	if (ufd < 0)
		return ufd;
	ret = rename_set(ufd, from, &nv);
	if (ret == 0 && nv.n == 0)
		ret = -ENOENT;
	if (ret == 0)
		ret = rename_check(ufd, to, &nv);
	if (ret == 0)
		ret = make_parents(st, user, to);
	if (ret == 0)
		ret = rename_dirs(st, user, ufd, from, to, &nv);
	md_folder_list_free(&nv.v, nv.n);
	mb__close(ufd);
	return ret;
}

/* from's sub/fname to the same name in to (names are unique). */
static int move_one(int from, int to, const char *sub, const char *fname)
{
	char path[300];
	int ret;

	(void)snprintf(path, sizeof(path), "%s/%s", sub, fname);
	ret = ur_renameat(from, path, to, path, 0);
	return ret == -ENOENT ? 0 : ret; /* expunged meanwhile */
}

static int move_files(int from, int to, const char *sub)
{
	struct dirent *de;
	DIR *dir;
	int fd, ret = 0;

	fd = ur_openat(from, sub, O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return fd;
	ret = mb__fdopendir(fd, &dir);
	if (ret < 0)
		return ret;
	while (ret == 0 && (de = readdir(dir)) != NULL)
		if (de->d_name[0] != '.')
			ret = move_one(from, to, sub, de->d_name);
	closedir(dir);
	return ret;
}

/* The moved files' keyword letters mean INBOX's keywords: take them. */
static int copy_keywords(const struct md_store *st, int from, int to)
{
	size_t len;
	char *buf;
	int lfd, ret;

	ret = mb__read_file(from, MB_KEYWORDS, MB_FILE_MAX, &buf, &len);
	if (ret == -ENOENT)
		return 0;
	if (ret < 0)
		return ret;
	ret = mb__lock(to, MB_UIDLIST_LOCK, &lfd);
	if (ret == 0) {
		ret = mb__write_file(st, to, MB_KEYWORDS, buf, len);
		mb__unlock(lfd);
	}
	free(buf);
	return ret;
}

static int rename_inbox(struct md_store *st, const char *user, const char *to)
{
	int from, dst, ret;

	ret = md_folder_create(st, user, to);
	if (ret < 0)
		return ret;
	from = mb__folder_open(st, user, "INBOX");
	if (from < 0)
		return from;
	dst = ret = mb__folder_open(st, user, to);
	if (ret >= 0)
		ret = copy_keywords(st, from, dst);
	if (ret == 0)
		ret = move_files(from, dst, "new");
	if (ret == 0)
		ret = move_files(from, dst, "cur");
	if (ret == 0)
		ret = mb__sync_fd(st, dst);
	mb__close(dst);
	mb__close(from);
	return ret;
}

/* -------------------------------------------------------------------- */
/* Subscriptions */

void md_strv_free(char ***vp, size_t n)
{
	char **v = *vp;

	if (v == NULL)
		return;
	*vp = NULL;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static int subs_parse(char *buf, char ***out, size_t *n_out)
{
	size_t n = 0, cap = 1;
	char **v, *line, *nl;

	for (const char *p = buf; *p != '\0'; p++)
		cap += *p == '\n';
	v = calloc(cap, sizeof(*v));
	if (v == NULL)
		return -ENOMEM;
	for (line = buf; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
		*nl = '\0';
		if (md_mbox_name_check(line) < 0 || in_strv(v, n, line))
			continue;
		v[n] = strdup(line);
		if (v[n] == NULL) {
			md_strv_free(&v, n);
			return -ENOMEM;
		}
		n++;
	}
	*out = v;
	*n_out = n;
	return 0;
}

static int subs_read(int ufd, char ***out, size_t *n_out)
{
	size_t len;
	char *buf;
	int ret;

	ret = mb__read_file(ufd, SUBS_FILE, MB_FILE_MAX, &buf, &len);
	if (ret == -ENOENT) {
		buf = strdup("");
		ret = buf == NULL ? -ENOMEM : 0;
	}
	if (ret < 0)
		return ret;
	ret = subs_parse(buf, out, n_out);
	free(buf);
	return ret;
}

int md_subscriptions(struct md_store *st, const char *user, char ***names_out,
		     size_t *n_out)
{
	int ufd, ret;

	*names_out = NULL;
	*n_out = 0;
	ufd = mb__user_open(st, user);
	if (ufd < 0)
		return ufd;
	ret = subs_read(ufd, names_out, n_out);
	mb__close(ufd);
	return ret;
}

static int subs_write(const struct md_store *st, int ufd, char **v, size_t n)
{
	size_t len = 0, cap = 1;
	char *buf;
	int ret;

	for (size_t i = 0; i < n; i++)
		cap += strlen(v[i]) + 1;
	buf = malloc(cap);
	if (buf == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(buf + len, cap - len, "%s\n", v[i]);
	ret = mb__write_file(st, ufd, SUBS_FILE, buf, len);
	free(buf);
	return ret;
}

/* Add or remove name in v (which has room for one more). */
static int subs_edit(char **v, size_t *n, const char *name, bool on)
{
	for (size_t i = 0; i < *n; i++) {
		if (strcmp(v[i], name) != 0)
			continue;
		if (on)
			return 0;
		free(v[i]);
		v[i] = v[--*n];
		return 1;
	}
	if (!on)
		return 0;
	v[*n] = strdup(name);
	if (v[*n] == NULL)
		return -ENOMEM;
	++*n;
	return 1;
}

int md_subscribe(struct md_store *st, const char *user, const char *name,
		 bool on)
{
	char **v = NULL, **bigger;
	size_t n = 0;
	int ufd, lfd, ret;

	if (md_mbox_name_check(name) < 0)
		return -EINVAL;
	if (md_mbox_is_inbox(name))
		name = "INBOX";
	ufd = mb__user_open(st, user);
	if (ufd < 0)
		return ufd;
	ret = mb__lock(ufd, SUBS_LOCK, &lfd);
	if (ret < 0)
		goto out_close;
	ret = subs_read(ufd, &v, &n);
	if (ret == 0) {
		bigger = realloc(v, (n + 1) * sizeof(*v));
		ret = bigger == NULL ? -ENOMEM : 0;
		if (bigger != NULL)
			v = bigger;
	}
	if (ret == 0)
		ret = subs_edit(v, &n, name, on);
	if (ret > 0)
		ret = subs_write(st, ufd, v, n);
	md_strv_free(&v, n);
	mb__unlock(lfd);
out_close:
	mb__close(ufd);
	return ret;
}

/* -------------------------------------------------------------------- */
/* STATUS */

int md_folder_status(struct md_store *st, const char *user, const char *name,
		     struct md_status *out)
{
	const struct md_msg_info *m;
	struct md_mbox *mb;
	size_t n;
	int ret;

	memset(out, 0, sizeof(*out));
	ret = md_mbox_open(st, user, name, true, &mb);
	if (ret < 0)
		return ret;
	m = md_mbox_msgs(mb, &n);
	out->messages = (uint32_t)n;
	out->uidnext = md_mbox_uidnext(mb);
	out->uidvalidity = md_mbox_uidvalidity(mb);
	for (size_t i = 0; i < n; i++) {
		out->recent += strncmp(m[i].path, "new/", 4) == 0;
		out->unseen += !(m[i].flags & MD_F_SEEN);
		out->deleted += (m[i].flags & MD_F_DELETED) != 0;
		out->size += m[i].size;
	}
	md_mbox_close(&mb);
	return 0;
}
