/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/maildir: a selected mailbox: the uidlist, sync, flags,
 * keywords, and the message operations (read, store, expunge, copy,
 * move). Longer than most files: the operations all share the one
 * struct md_mbox and its invariants, and splitting them would spread
 * those over several files.
 *
 * One rule settles every race: a message is its file, found by its base
 * name (the name without ":2,flags"), and the uidlist is the only place
 * UIDs live. Whoever changes the uidlist holds its lock, reads it again
 * under the lock, and writes it back whole; nobody else writes it. A
 * file rename (flags), an unlink (expunge) or a link (copy) needs no
 * lock: each is atomic, and the next sync of every handle sees it.
 *
 * Sync lists new/ and cur/ before taking the lock and matches the list
 * against the uidlist read under the lock. An entry whose file was not
 * listed may have been added since, or renamed (a flag change elsewhere)
 * during the listing: readdir does not promise to see an entry renamed
 * while it runs. Before dropping any entry the listing is done again,
 * and again while the directories' mtimes keep moving (a few times at
 * most): only entries missing from a listing the directories stood
 * still for are dropped. A file that appears after the listing gets its
 * UID at the next sync (its directory's mtime moved).
 *
 * The cheap check: fstat of new/ and cur/ (open fds) and a stat of the
 * uidlist; a sync with the same mtimes (and uidlist inode) does nothing.
 * mtimes come from a coarse clock, so a stamp less than 2 s old is not
 * trusted: the next sync lists again. Cheaper still, while the handle is
 * open (not released) on one thread: an inotify watch of the folder
 * (notify.c), whose check is one read for all the thread's folders; the
 * stamps are compared only after an event.
 */
#include "mailbox.h"
#include "maildir.h"
#include "mbox-internal.h"
#include "md-internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ringprot/uring.h>

#define MB_READ_CHUNK ((size_t)64 * 1024)
#define MB_FNAME_MAX  256
#define MB_PATH_MAX   (MB_FNAME_MAX + 8)
#define MB_TRIES      3 /* store/open after another process's rename */

/* A file found in cur/ (or new/). */
struct ent {
	char *path;	   /* "cur/<fname>" or "new/<fname>"; NULL once
			    * msg_fill() took it */
	const char *fname; /* path + 4 */
	size_t blen;	   /* base length */
	long li;	   /* matching uidlist entry, -1 */
	uint32_t hash;	   /* of the base */
	bool in_new;
	/* Read from the name while it is at hand (a big listing's names
	 * are cold by the time msg_fill() looks). */
	bool has_w;
	unsigned flags;
	uint32_t keywords;
	uint64_t w_size;
};

/* Files by base name: a hash index (ents_index) over v[]. */
struct ents {
	struct ent *v;
	size_t n, cap;
	uint32_t *idx; /* icap slots: index in v + 1, 0 empty */
	size_t icap;
};

struct list_ent {
	uint32_t uid;
	char *base;
	long ei; /* matching struct ent, -1 */
};

struct uidlist {
	uint32_t uidvalidity, next;
	struct list_ent *v;
	size_t n, cap;
	uint64_t file_len; /* bytes in the file as read */
	size_t n_file;	   /* entries read from it (v[0..n_file)) */
	bool tidy;	   /* every line parsed, LF at the end: appendable */
	bool dropped;	   /* entries removed: the file must be rewritten */
};

/* -------------------------------------------------------------------- */
/* The uidlist (call with its lock held) */

static void uidlist_free(struct uidlist *ul)
{
	for (size_t i = 0; i < ul->n; i++)
		free(ul->v[i].base);
	free(ul->v);
	memset(ul, 0, sizeof(*ul));
}

static int uidlist_push(struct uidlist *ul, uint32_t uid, const char *base,
			size_t blen)
{
	struct list_ent *e;

	if (ul->n == ul->cap) {
		size_t cap = ul->cap ? ul->cap * 2 : 64;

		e = realloc(ul->v, cap * sizeof(*e));
		if (e == NULL)
			return -ENOMEM;
		ul->v = e;
		ul->cap = cap;
	}
	e = &ul->v[ul->n];
	e->base = strndup(base, blen);
	if (e->base == NULL)
		return -ENOMEM;
	e->uid = uid;
	e->ei = -1;
	ul->n++;
	return 0;
}

/* Lines: entries must ascend and stay below next; others are dropped
 * (their files get fresh UIDs: never two files with one UID). */
static int uidlist_parse(struct uidlist *ul, char *buf)
{
	char *line = buf, *nl;
	uint32_t a, b, last = 0;
	bool first = true;
	int ret;

	ul->tidy = true;
	for (; *line != '\0'; line = nl + 1) {
		nl = strchr(line, '\n');
		if (nl == NULL) {
			ul->tidy = false; /* a torn append: rewrite it */
			break;
		}
		*nl = '\0';
		if (first) {
			if (md_uidlist_parse(line, 1, &a, &b) < 0)
				return -EINVAL;
			ul->uidvalidity = a;
			ul->next = b;
			first = false;
			continue;
		}
		/* Appended entries may pass the header's next UID. */
		if (md_uidlist_parse(line, 0, &a, &b) != 1 || a <= last ||
		    a == UINT32_MAX) {
			ul->tidy = false;
			continue;
		}
		ret = uidlist_push(ul, a, line + b, strlen(line + b));
		if (ret < 0)
			return ret;
		last = a;
		if (a >= ul->next)
			ul->next = a + 1;
	}
	return first ? -EINVAL : 0;
}

/* The last UIDVALIDITY this process made. */
static atomic_uint_fast32_t last_uidvalidity;

/*
 * A fresh UIDVALIDITY: the time, as Dovecot and Cyrus make it, but
 * always above the last one this process made, so that a folder deleted
 * and made again (or a lost uidlist) within one second still gets a new
 * one (RFC 3501 2.3.1.1). Two processes within one second can still
 * meet: that needs a store-wide counter file (not done).
 */
static uint32_t new_uidvalidity(void)
{
	time_t now = time(NULL);
	uint32_t want = now > 0 ? (uint32_t)now : 1;
	uint_fast32_t last = atomic_load(&last_uidvalidity);

	do {
		if (want <= last)
			want = (uint32_t)last + 1;
	} while (!atomic_compare_exchange_weak(&last_uidvalidity, &last, want));
	return want;
}

/* *created_out: the file was missing or unreadable (write it back). */
static int uidlist_load(int dfd, struct uidlist *ul, bool *created_out)
{
	size_t len;
	char *buf;
	int ret;

	memset(ul, 0, sizeof(*ul));
	*created_out = false;
	ret = mb__read_file(dfd, MB_UIDLIST, MB_FILE_MAX, &buf, &len);
	if (ret == 0) {
		ret = uidlist_parse(ul, buf);
		ul->file_len = len;
		ul->n_file = ul->n;
		free(buf);
	}
	if (ret == -ENOENT || ret == -EINVAL) {
		/* Lost or corrupt: new UIDVALIDITY, clients start over. */
		uidlist_free(ul);
		ul->uidvalidity = new_uidvalidity();
		ul->next = 1;
		*created_out = true;
		ret = 0;
	}
	if (ret < 0)
		uidlist_free(ul);
	return ret;
}

static int uidlist_write(const struct md_store *st, int dfd,
			 const struct uidlist *ul)
{
	size_t cap = 64, len;
	char *buf, *p;
	int ret;

	for (size_t i = 0; i < ul->n; i++)
		cap += strlen(ul->v[i].base) + 12;
	buf = malloc(cap);
	if (buf == NULL)
		return -ENOMEM;
	p = buf;
	p += snprintf(p, 64, "ringprot-uidlist 1 %u %u\n", ul->uidvalidity,
		      ul->next);
	for (size_t i = 0; i < ul->n; i++)
		p += snprintf(p, cap - (size_t)(p - buf), "%u %s\n",
			      ul->v[i].uid, ul->v[i].base);
	len = (size_t)(p - buf);
	ret = mb__write_file(st, dfd, MB_UIDLIST, buf, len);
	free(buf);
	return ret;
}

/* Append the entries added since the load (v[n_file..n)) at the end. */
static int uidlist_append(const struct md_store *st, int dfd,
			  const struct uidlist *ul)
{
	size_t cap = 1, len = 0, done = 0;
	char *buf;
	int fd, ret = 0;

	for (size_t i = ul->n_file; i < ul->n; i++)
		cap += strlen(ul->v[i].base) + 12;
	buf = malloc(cap);
	if (buf == NULL)
		return -ENOMEM;
	for (size_t i = ul->n_file; i < ul->n; i++)
		len += (size_t)snprintf(buf + len, cap - len, "%u %s\n",
					ul->v[i].uid, ul->v[i].base);
	fd = ur_openat(dfd, MB_UIDLIST, O_WRONLY | O_CLOEXEC, 0);
	if (fd < 0) {
		free(buf);
		return fd;
	}
	while (ret == 0 && done < len) {
		ssize_t n = ur_write(fd, buf + done, len - done,
				     (int64_t)(ul->file_len + done));

		if (n <= 0)
			ret = n < 0 ? (int)n : -EIO;
		else
			done += (size_t)n;
	}
	if (ret == 0 && !md__no_fsync(st))
		ret = ur_fsync(fd, UR_FSYNC_DATASYNC);
	/* Half an append would be a torn line: take it back. */
	if (ret < 0 && ftruncate(fd, (off_t)ul->file_len) < 0) {
		/* the next load sees it torn and rewrites the file */
	}
	mb__close(fd);
	free(buf);
	return ret;
}

/*
 * Store the list under the lock: appended lines when entries were only
 * added to a tidy file (the common case: new mail; no rewrite of a long
 * list, one fdatasync), the whole file when any were dropped (expunges)
 * or it was missing or torn.
 */
static int uidlist_save(const struct md_store *st, int dfd, bool created,
			const struct uidlist *ul)
{
	if (created || ul->dropped || !ul->tidy)
		return uidlist_write(st, dfd, ul);
	if (ul->n > ul->n_file)
		return uidlist_append(st, dfd, ul);
	return 0;
}

int mb__uidlist_init(const struct md_store *st, int dfd)
{
	struct uidlist ul;
	bool created;
	int lfd, ret;

	ret = mb__lock(dfd, MB_UIDLIST_LOCK, &lfd);
	if (ret < 0)
		return ret;
	ret = uidlist_load(dfd, &ul, &created);
	if (ret == 0 && created)
		ret = uidlist_save(st, dfd, created, &ul);
	uidlist_free(&ul);
	mb__unlock(lfd);
	return ret;
}

int mb__assign_bases(struct md_mbox *mb, char *const *bases, size_t n,
		     uint32_t *uids_out, uint32_t *uidvalidity_out)
{
	struct uidlist ul;
	bool created, added;
	int lfd, ret;

	ret = mb__lock(mb->dfd, MB_UIDLIST_LOCK, &lfd);
	if (ret < 0)
		return ret;
	ret = uidlist_load(mb->dfd, &ul, &created);
	added = created;
	for (size_t i = 0; ret == 0 && i < n; i++) {
		size_t k = ul.n;

		/* Recent entries are last: look from the end. */
		while (k > 0 && strcmp(ul.v[k - 1].base, bases[i]) != 0)
			k--;
		if (k > 0) {
			uids_out[i] = ul.v[k - 1].uid;
			continue;
		}
		if (ul.next == UINT32_MAX) {
			ret = -EOVERFLOW;
			break;
		}
		uids_out[i] = ul.next;
		ret = uidlist_push(&ul, ul.next, bases[i], strlen(bases[i]));
		if (ret == 0)
			ul.next++;
		added = true;
	}
	if (ret == 0 && added)
		ret = uidlist_save(mb->st, mb->dfd, created, &ul);
	*uidvalidity_out = ul.uidvalidity;
	uidlist_free(&ul);
	mb__unlock(lfd);
	return ret;
}

/* -------------------------------------------------------------------- */
/* Keywords (the file is written under the uidlist lock) */

/*
 * The names live in MD_KW_MAX slots made with the first keyword: most
 * folders have none, and an idle handle should not carry 26 empty
 * pointers.
 */
static void kw_clear(struct md_mbox *mb)
{
	if (mb->kw != NULL)
		for (unsigned i = 0; i < MD_KW_MAX; i++)
			free(mb->kw[i]);
	free(mb->kw);
	mb->kw = NULL;
	mb->nkw = 0;
}

static int kw_slots(struct md_mbox *mb)
{
	if (mb->kw == NULL)
		mb->kw = calloc(MD_KW_MAX, sizeof(*mb->kw));
	return mb->kw != NULL ? 0 : -ENOMEM;
}

static int kw_load(struct md_mbox *mb)
{
	char *buf, *line, *nl;
	size_t len;
	int ret;

	ret = mb__read_file(mb->dfd, MB_KEYWORDS, MB_FILE_MAX, &buf, &len);
	if (ret == -ENOENT)
		return 0;
	if (ret < 0)
		return ret;
	kw_clear(mb);
	for (line = buf; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
		char *end;
		long i;

		*nl = '\0';
		i = strtol(line, &end, 10);
		if (end == line || *end != ' ' || i < 0 || i >= MD_KW_MAX ||
		    !md_keyword_ok(end + 1) ||
		    (mb->kw != NULL && mb->kw[i] != NULL))
			continue;
		ret = kw_slots(mb);
		if (ret < 0)
			break;
		mb->kw[i] = strdup(end + 1);
		if (mb->kw[i] == NULL) {
			ret = -ENOMEM;
			break;
		}
		if ((unsigned)i + 1 > mb->nkw)
			mb->nkw = (uint8_t)(i + 1);
	}
	free(buf);
	return ret;
}

static int kw_find(const struct md_mbox *mb, const char *kw)
{
	for (unsigned i = 0; i < mb->nkw; i++)
		if (mb->kw[i] != NULL && strcasecmp(mb->kw[i], kw) == 0)
			return (int)i;
	return -ENOENT; /* nkw 0 without slots */
}

static int kw_save(const struct md_mbox *mb)
{
	char buf[MD_KW_MAX * (MD_KW_LEN_MAX + 5)];
	size_t len = 0;

	for (unsigned i = 0; i < mb->nkw; i++)
		if (mb->kw[i] != NULL)
			len += (size_t)snprintf(buf + len, sizeof(buf) - len,
						"%u %s\n", i, mb->kw[i]);
	return mb__write_file(mb->st, mb->dfd, MB_KEYWORDS, buf, len);
}

int md_mbox_keyword_index(struct md_mbox *mb, const char *kw)
{
	int lfd, ret;

	if (!md_keyword_ok(kw))
		return -EINVAL;
	ret = kw_find(mb, kw);
	if (ret >= 0)
		return ret;
	ret = mb__lock(mb->dfd, MB_UIDLIST_LOCK, &lfd);
	if (ret < 0)
		return ret;
	ret = kw_load(mb);
	if (ret == 0)
		ret = kw_find(mb, kw);
	if (ret == -ENOENT) {
		ret = mb->nkw < MD_KW_MAX ? kw_slots(mb) : -ENOSPC;
		if (ret == 0) {
			ret = -ENOMEM;
			mb->kw[mb->nkw] = strdup(kw);
			if (mb->kw[mb->nkw] != NULL) {
				ret = (int)mb->nkw++;
				if (kw_save(mb) < 0) {
					free(mb->kw[--mb->nkw]);
					mb->kw[mb->nkw] = NULL;
					ret = -EIO;
				}
			}
		}
	}
	mb__unlock(lfd);
	return ret;
}

const char *md_mbox_keyword(const struct md_mbox *mb, unsigned i)
{
	return i < mb->nkw ? mb->kw[i] : NULL;
}

unsigned md_mbox_keyword_count(const struct md_mbox *mb)
{
	return mb->nkw;
}

/* -------------------------------------------------------------------- */
/* Listing new/ and cur/ */

static void ents_free(struct ents *ev)
{
	for (size_t i = 0; i < ev->n; i++)
		free(ev->v[i].path);
	free(ev->v);
	free(ev->idx);
	memset(ev, 0, sizeof(*ev));
}

/* A base name's hash: eight bytes at a time (names are ~40 bytes). */
static uint32_t base_hash(const char *s, size_t n)
{
	uint64_t h = n * 0x9e3779b97f4a7c15u, w;

	for (; n >= 8; s += 8, n -= 8) {
		memcpy(&w, s, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdu;
		h ^= h >> 32;
	}
	w = 0;
	memcpy(&w, s, n);
	h = (h ^ w) * 0xff51afd7ed558ccdu;
	return (uint32_t)(h ^ (h >> 33));
}

static int ents_push(struct ents *ev, const char *fname, bool in_new)
{
	struct ent *e;
	size_t len;

	if (ev->n == ev->cap) {
		size_t cap = ev->cap ? ev->cap * 2 : 64;

		e = realloc(ev->v, cap * sizeof(*e));
		if (e == NULL)
			return -ENOMEM;
		ev->v = e;
		ev->cap = cap;
	}
	e = &ev->v[ev->n];
	/* The path the message list keeps, made once (msg_fill takes it). */
	len = strlen(fname);
	e->path = malloc(len + 5);
	if (e->path == NULL)
		return -ENOMEM;
	memcpy(e->path, in_new ? "new/" : "cur/", 4);
	memcpy(e->path + 4, fname, len + 1);
	e->fname = e->path + 4;
	e->blen = md_base_len(fname);
	e->hash = base_hash(fname, e->blen);
	md_flags_parse(fname, &e->flags, &e->keywords);
	e->has_w = md_name_field(fname, 'W', &e->w_size) == 0;
	e->li = -1;
	e->in_new = in_new;
	ev->n++;
	return 0;
}

/* Call fn for each plausible message file name in dfd's sub. */
static int list_dir(int dfd, const char *sub,
		    int (*fn)(void *arg, const char *fname), void *arg)
{
	struct dirent *de;
	DIR *dir;
	int fd, ret = 0;

	fd = ur_openat(dfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	if (fd < 0)
		return fd;
	ret = mb__fdopendir(fd, &dir);
	if (ret < 0)
		return ret;
	while (ret == 0 && (de = readdir(dir)) != NULL) {
		if (de->d_name[0] == '.' || de->d_type == DT_DIR ||
		    md_base_len(de->d_name) == 0 ||
		    strlen(de->d_name) >= MB_FNAME_MAX - 40)
			continue;
		ret = fn(arg, de->d_name);
	}
	closedir(dir);
	return ret;
}

static int push_cur(void *arg, const char *fname)
{
	return ents_push(arg, fname, false);
}

static int push_new(void *arg, const char *fname)
{
	return ents_push(arg, fname, true);
}

static int base_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static int ent_cmp(const void *x, const void *y)
{
	const struct ent *a = x, *b = y;

	return base_cmp(a->fname, a->blen, b->fname, b->blen);
}

static bool ent_is(const struct ent *e, uint32_t hash, const char *base,
		   size_t blen)
{
	return e->hash == hash && e->blen == blen &&
	       memcmp(e->fname, base, blen) == 0;
}

/* The entry of base (after ents_index), or -1. */
static long ents_find(const struct ents *ev, const char *base, size_t blen)
{
	uint32_t hash = base_hash(base, blen);

	if (ev->icap == 0)
		return -1;
	for (size_t h = hash & (ev->icap - 1);; h = (h + 1) & (ev->icap - 1)) {
		uint32_t k = ev->idx[h];

		if (k == 0)
			return -1;
		if (ent_is(&ev->v[k - 1], hash, base, blen))
			return (long)k - 1;
	}
}

/*
 * Index the entries by base, one per base: a file seen in new/ and then
 * in cur/ (moved while listed) is the cur/ one. No sort: matching 10,000
 * names by hash costs less than ordering them.
 */
static int ents_index(struct ents *ev)
{
	size_t cap = 16, w = 0;
	uint32_t *t;

	while (cap < 2 * ev->n)
		cap *= 2;
	t = calloc(cap, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < ev->n; i++) {
		struct ent e = ev->v[i];

		for (size_t h = e.hash & (cap - 1);; h = (h + 1) & (cap - 1)) {
			struct ent *o;

			if (t[h] == 0) {
				ev->v[w++] = e; /* w <= i: compacts */
				t[h] = (uint32_t)w;
				break;
			}
			o = &ev->v[t[h] - 1];
			if (!ent_is(o, e.hash, e.fname, e.blen))
				continue;
			if (o->in_new && !e.in_new) {
				free(o->path);
				*o = e;
			} else {
				free(e.path);
			}
			break;
		}
	}
	ev->n = w;
	free(ev->idx);
	ev->idx = t;
	ev->icap = cap;
	return 0;
}

/*
 * new/ then cur/, indexed by base name. In that order: a file moves only
 * from new/ to cur/, so one moving while we list is seen in one of them
 * (cur/ first could miss it in both, and its UID would be dropped).
 * new/ is listed by every handle: a read-only one (or another process)
 * may have given a UID to a file still there.
 */
static int scan(struct md_mbox *mb, struct ents *ev)
{
	int ret;

	memset(ev, 0, sizeof(*ev));
	ret = list_dir(mb->dfd, "new", push_new, ev);
	if (ret == 0)
		ret = list_dir(mb->dfd, "cur", push_cur, ev);
	if (ret < 0) {
		ents_free(ev);
		return ret;
	}
	ret = ents_index(ev);
	if (ret < 0)
		ents_free(ev);
	return ret;
}

struct claim {
	struct md_mbox *mb;
	struct ents *claimed;
};

/* Move new/fname into cur/ with an empty flag part: ours if it works. */
static int claim_one(void *arg, const char *fname)
{
	struct claim *c = arg;
	char src[MB_PATH_MAX], dst[MB_PATH_MAX + 4];
	int ret;

	(void)snprintf(src, sizeof(src), "new/%s", fname);
	(void)snprintf(dst, sizeof(dst), "cur/%s%s", fname,
		       strchr(fname, ':') != NULL ? "" : ":2,");
	ret = ur_renameat(c->mb->dfd, src, c->mb->dfd, dst, 0);
	if (ret == -ENOENT)
		return 0; /* another session claimed it */
	if (ret < 0)
		return ret;
	return ents_push(c->claimed, fname, true);
}

/* Match each uidlist entry to a listed file (ev indexed). */
static size_t match(struct uidlist *ul, struct ents *ev)
{
	size_t missing = 0;

	for (size_t i = 0; i < ev->n; i++)
		ev->v[i].li = -1;
	for (size_t i = 0; i < ul->n; i++) {
		struct list_ent *le = &ul->v[i];
		long k = ents_find(ev, le->base, strlen(le->base));

		le->ei = k;
		if (k >= 0)
			ev->v[k].li = (long)i;
		else
			missing++;
	}
	return missing;
}

/* Unix seconds and microseconds of a unique name "sec.M<usec>...". */
static void name_time(const char *fname, uint64_t *sec, uint64_t *usec)
{
	char *end;

	*sec = strtoull(fname, &end, 10);
	*usec = 0;
	if (end[0] == '.' && end[1] == 'M')
		*usec = strtoull(end + 2, NULL, 10);
}

static int new_cmp(const void *x, const void *y)
{
	const struct ent *a = *(const struct ent *const *)x;
	const struct ent *b = *(const struct ent *const *)y;
	uint64_t as, au, bs, bu;

	name_time(a->fname, &as, &au);
	name_time(b->fname, &bs, &bu);
	if (as != bs)
		return as < bs ? -1 : 1;
	if (au != bu)
		return au < bu ? -1 : 1;
	return ent_cmp(a, b);
}

/*
 * Drop entries without a file, give UIDs to files without an entry (in
 * delivery order). Returns how many entries changed, or -errno.
 */
static int assign(struct uidlist *ul, struct ents *ev)
{
	struct ent **fresh;
	size_t nf = 0, w = 0;
	int changed = 0, ret = 0;

	for (size_t i = 0; i < ul->n; i++) {
		if (ul->v[i].ei < 0 || ev->v[ul->v[i].ei].li != (long)i) {
			free(ul->v[i].base);
			ul->dropped = true;
			changed++;
			continue;
		}
		ul->v[w] = ul->v[i];
		ev->v[ul->v[w].ei].li = (long)w;
		w++;
	}
	ul->n = w;
	fresh = malloc((ev->n + 1) * sizeof(struct ent *));
	if (fresh == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < ev->n; i++)
		if (ev->v[i].li < 0)
			fresh[nf++] = &ev->v[i];
	if (nf > 0)
		qsort(fresh, nf, sizeof(struct ent *), new_cmp);
	for (size_t i = 0; i < nf && ret == 0; i++) {
		struct ent *e = fresh[i];

		if (ul->next == UINT32_MAX) {
			ret = -EOVERFLOW; /* RFC 3501: a new UIDVALIDITY */
			break;
		}
		ret = uidlist_push(ul, ul->next, e->fname, e->blen);
		if (ret == 0) {
			ul->v[ul->n - 1].ei = e - ev->v;
			e->li = (long)(ul->n - 1);
			ul->next++;
			changed++;
		}
	}
	free(fresh);
	return ret < 0 ? ret : changed;
}

/* -------------------------------------------------------------------- */
/* Sync */

/* A stamp's time: nanoseconds (half a struct timespec). */
static uint64_t ts_ns(const struct timespec *t)
{
	return (uint64_t)t->tv_sec * 1000000000u + (uint64_t)t->tv_nsec;
}

/* Is t less than 2 s old (a change in the same clock tick could hide)? */
static bool ts_fresh(uint64_t t)
{
	return (time_t)(t / 1000000000u) + 2 >= time(NULL);
}

static int stamp_dirs(const struct md_mbox *mb, struct stamp *s)
{
	struct stat a, b;

	if (fstat(mb->new_fd, &a) < 0 || fstat(mb->cur_fd, &b) < 0)
		return -errno;
	s->new_m = ts_ns(&a.st_mtim);
	s->cur_m = ts_ns(&b.st_mtim);
	return 0;
}

static int stamp_list(const struct md_mbox *mb, struct stamp *s)
{
	struct stat sb;

	if (fstatat(mb->dfd, MB_UIDLIST, &sb, 0) < 0)
		return -errno;
	s->list_m = ts_ns(&sb.st_mtim);
	s->list_ino = sb.st_ino;
	return 0;
}

/* Size with CRLF line ends: the stored size plus its bare LFs. */
static int crlf_size(int dfd, const char *path, uint64_t *out)
{
	uint64_t off = 0, lf = 0;
	char last = '\n';
	char *buf;
	int fd, ret;

	fd = ur_openat(dfd, path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return fd;
	buf = malloc(MB_READ_CHUNK);
	if (buf == NULL) {
		mb__close(fd);
		return -ENOMEM;
	}
	for (;;) {
		ssize_t n = ur_read(fd, buf, MB_READ_CHUNK, (int64_t)off);

		if (n <= 0) {
			ret = n < 0 ? (int)n : 0;
			break;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n' && (i ? buf[i - 1] : last) != '\r')
				lf++;
		}
		last = buf[n - 1];
		off += (uint64_t)n;
	}
	free(buf);
	mb__close(fd);
	*out = off + lf;
	return ret;
}

long md_mbox_find(const struct md_mbox *mb, uint32_t uid)
{
	size_t lo = 0, hi = mb->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (mb->msgs[mid].uid == uid)
			return (long)mid;
		if (mb->msgs[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -ENOENT;
}

/* Fill m for file e (uid set); what an old entry knew is kept. */
static int msg_fill(struct md_mbox *mb, struct md_msg_info *m, struct ent *e,
		    const struct ents *claimed)
{
	long old = md_mbox_find(mb, m->uid);
	const char *p = e->path;
	char path[MB_PATH_MAX];
	struct stat sb;
	int ret;

	m->flags = e->flags;
	m->keywords = e->keywords;
	if (p == NULL) { /* taken by an earlier entry of the same file */
		(void)snprintf(path, sizeof(path), "%s/%s",
			       e->in_new ? "new" : "cur", e->fname);
		p = path;
	}
	/* A released handle's poll keeps no names: none are made. The
	 * listing's own copy is taken (p and e->fname stay valid in it). */
	if (!mb->released) {
		m->path = e->path != NULL ? e->path : strdup(path);
		if (m->path == NULL)
			return -ENOMEM;
		e->path = NULL;
	}
	if (ents_find(claimed, e->fname, e->blen) >= 0)
		m->flags |= MD_F_RECENT;
	if (old >= 0) {
		const struct md_msg_info *o = &mb->msgs[old];

		m->size = o->size;
		m->internal_date = o->internal_date;
		m->flags |= o->flags & MD_F_RECENT;
		return 0;
	}
	/*
	 * The date waits for md_mbox_msg_date: a stat per message made
	 * SELECT of a big mailbox cost a path walk per message, for a date
	 * few commands ask for. The size is in the name (W=) but for files
	 * from elsewhere, which are read (and stat'ed) once here.
	 */
	m->internal_date = MD_DATE_UNKNOWN;
	m->size = e->w_size;
	if (e->has_w)
		return 0;
	if (fstatat(mb->dfd, p, &sb, 0) < 0)
		return errno == ENOENT ? 0 : -errno; /* gone: next sync */
	m->internal_date = sb.st_mtim.tv_sec;
	ret = crlf_size(mb->dfd, p, &m->size);
	return ret == -ENOENT ? 0 : ret;
}

/* The paths of a list copied from another handle's share one block
 * (copy_peer): one allocation for 10,000 names, not 10,000. */
static bool in_arena(const char *arena, size_t len, const char *p)
{
	return arena != NULL && p >= arena && p < arena + len;
}

static void path_free(const struct md_mbox *mb, char *path)
{
	if (!in_arena(mb->arena, mb->arena_len, path))
		free(path);
}

/* A list and its paths (those outside arena), and arena. */
static void list_free(struct md_msg_info *v, size_t n, char *arena, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (!in_arena(arena, len, v[i].path))
			free(v[i].path);
	free(v);
	free(arena);
}

static void msgs_free(struct md_msg_info *v, size_t n)
{
	list_free(v, n, NULL, 0);
}

/* Drop the handle's list (before it gets another). */
static void mb_list_clear(struct md_mbox *mb)
{
	list_free(mb->msgs, mb->n, mb->arena, mb->arena_len);
	mb->msgs = NULL;
	mb->n = 0;
	mb->arena = NULL;
	mb->arena_len = 0;
}

/* Compare old and new lists into mb->chg (added, vanished, flagged). */
static int diff(struct md_mbox *mb, const struct md_msg_info *nv, size_t nn,
		struct md_mbox_changes *ch)
{
	size_t i = 0, k = 0, na = 0, nv_ = 0, nf = 0, cap = mb->n + nn + 1;
	uint32_t *add, *van, *flg;

	free(mb->chg);
	mb->chg = malloc(3 * cap * sizeof(uint32_t));
	if (mb->chg == NULL)
		return -ENOMEM;
	add = mb->chg;
	van = add + cap;
	flg = van + cap;
	while (i < mb->n || k < nn) {
		if (k == nn || (i < mb->n && mb->msgs[i].uid < nv[k].uid)) {
			van[nv_++] = mb->msgs[i++].uid;
		} else if (i == mb->n || nv[k].uid < mb->msgs[i].uid) {
			add[na++] = nv[k++].uid;
		} else {
			if (mb->msgs[i].flags != nv[k].flags ||
			    mb->msgs[i].keywords != nv[k].keywords)
				flg[nf++] = nv[k].uid;
			i++;
			k++;
		}
	}
	if (ch != NULL)
		*ch = (struct md_mbox_changes){add, na, van, nv_, flg, nf};
	return 0;
}

/* Have new/ or cur/ changed since s was taken? */
static bool dirs_moved(const struct md_mbox *mb, const struct stamp *s)
{
	struct stamp now;

	return stamp_dirs(mb, &now) < 0 || now.new_m != s->new_m ||
	       now.cur_m != s->cur_m;
}

/*
 * Entries without a listed file: listed before the lock (another process
 * may have added and assigned files since), or renamed while we listed
 * (a flag change: readdir may miss an entry renamed during the walk).
 * List again, and again while the directories keep changing (at most
 * MB_TRIES times): what is still missing when they stood still is gone.
 * s is re-stamped before each listing.
 */
static int rematch(struct md_mbox *mb, struct uidlist *ul, struct ents *ev,
		   struct stamp *s)
{
	size_t missing = match(ul, ev);
	int ret = 0;

	for (int t = 0; missing > 0 && t < MB_TRIES; t++) {
		if (t > 0 && !dirs_moved(mb, s))
			break;
		ents_free(ev);
		ret = stamp_dirs(mb, s);
		if (ret == 0)
			ret = scan(mb, ev);
		if (ret < 0)
			return ret;
		missing = match(ul, ev);
	}
	return 0;
}

/*
 * Without the lock: when every listed file already has its UID and every
 * UID its file (another session of a busy mailbox numbered them: IDLE
 * sessions woken by one delivery all sync at once), there is nothing to
 * write, and reading needs no lock: the uidlist is replaced by rename or
 * grown by appends, and a read that catches an append half done sees a
 * line without its LF (not tidy). Anything else (numbers to give, lines
 * to drop, a missing, corrupt or untidy file) returns -EAGAIN: do it
 * under the lock. The uidlist is stamped before it is read, so a change
 * made after the read still differs from the stamp.
 */
static int sync_list_unlocked(struct md_mbox *mb, struct ents *ev,
			      struct uidlist *ul, struct stamp *s)
{
	bool created;
	int ret;

	ret = stamp_list(mb, s);
	if (ret == 0)
		ret = uidlist_load(mb->dfd, ul, &created);
	if (ret < 0)
		return ret == -ENOENT ? -EAGAIN : ret;
	if (created || !ul->tidy) {
		ret = -EAGAIN;
		goto out_free;
	}
	ret = rematch(mb, ul, ev, s);
	if (ret == 0)
		ret = assign(ul, ev);
	if (ret != 0 || ul->dropped) {
		ret = ret == -ENOMEM ? ret : -EAGAIN;
		goto out_free;
	}
	return kw_load(mb);
out_free:
	uidlist_free(ul);
	memset(ul, 0, sizeof(*ul));
	return ret;
}

/* Lock, read the uidlist, match ev, assign, write back, read keywords. */
static int sync_list(struct md_mbox *mb, struct ents *ev, struct uidlist *ul,
		     struct stamp *s)
{
	bool created;
	int lfd, ret;

	ret = sync_list_unlocked(mb, ev, ul, s);
	if (ret != -EAGAIN)
		return ret;
	ret = mb__lock(mb->dfd, MB_UIDLIST_LOCK, &lfd);
	if (ret < 0)
		return ret;
	ret = uidlist_load(mb->dfd, ul, &created);
	if (ret < 0)
		goto out_unlock;
	ret = rematch(mb, ul, ev, s);
	if (ret < 0)
		goto out_unlock;
	ret = assign(ul, ev);
	if (ret > 0 || (ret == 0 && created))
		ret = uidlist_save(mb->st, mb->dfd, created, ul);
	if (ret == 0)
		ret = stamp_list(mb, s);
	if (ret == 0)
		ret = kw_load(mb);
out_unlock:
	mb__unlock(lfd);
	return ret;
}

static _Thread_local uint64_t listings;

uint64_t md_mbox_thread_listings(void)
{
	return listings;
}

static int sync_full(struct md_mbox *mb, struct md_mbox_changes *ch)
{
	struct ents ev = {0}, claimed = {0};
	struct md_msg_info *nv = NULL;
	struct uidlist ul = {0};
	struct claim c = {mb, &claimed};
	struct stamp s = {0};
	size_t nn = 0;
	int ret = 0;

	listings++;
	if (!mb->ro)
		ret = list_dir(mb->dfd, "new", claim_one, &c);
	if (ret == 0)
		ret = stamp_dirs(mb, &s);
	if (ret == 0)
		ret = scan(mb, &ev);
	if (ret < 0) {
		ents_free(&claimed);
		return ret;
	}
	ret = ents_index(&claimed);
	if (ret == 0)
		ret = sync_list(mb, &ev, &ul, &s);
	if (ret == 0 && ul.n > 0) {
		nv = calloc(ul.n, sizeof(*nv));
		ret = nv == NULL ? -ENOMEM : 0;
	}
	for (size_t i = 0; ret == 0 && i < ul.n; i++) {
		nv[nn].uid = ul.v[i].uid;
		ret = msg_fill(mb, &nv[nn], &ev.v[ul.v[i].ei], &claimed);
		nn++;
	}
	if (ret == 0)
		ret = diff(mb, nv, nn, ch);
	if (ret == 0) {
		mb_list_clear(mb);
		mb->msgs = nv;
		mb->n = nn;
		mb->uidvalidity = ul.uidvalidity;
		mb->uidnext = ul.next;
		mb->stamp = s;
		mb->stamped = !ts_fresh(s.new_m) && !ts_fresh(s.cur_m) &&
			      !ts_fresh(s.list_m);
	} else {
		msgs_free(nv, nn);
	}
	uidlist_free(&ul);
	ents_free(&ev);
	ents_free(&claimed);
	return ret;
}

/* Open the three directories again after md_mbox_release(). */
static int fds_open(struct md_mbox *mb)
{
	int dfd, nfd, cfd;

	if (mb->dfd >= 0)
		return 0;
	dfd = mb__folder_open(mb->st, mb->user, mb->name);
	if (dfd < 0)
		return dfd == -ENOTDIR ? -ENOENT : dfd;
	nfd = ur_openat(dfd, "new", O_RDONLY | O_DIRECTORY, 0);
	cfd = nfd < 0 ? nfd : ur_openat(dfd, "cur", O_RDONLY | O_DIRECTORY, 0);
	if (cfd < 0) {
		if (nfd >= 0)
			mb__close(nfd);
		mb__close(dfd);
		return cfd == -ENOTDIR ? -ENOENT : cfd;
	}
	mb->dfd = dfd;
	mb->new_fd = nfd;
	mb->cur_fd = cfd;
	return 0;
}

static void fds_close(struct md_mbox *mb)
{
	if (mb->dfd < 0)
		return;
	mb__close(mb->cur_fd);
	mb__close(mb->new_fd);
	mb__close(mb->dfd);
	mb->dfd = mb->new_fd = mb->cur_fd = -1;
}

static void paths_drop(struct md_mbox *mb)
{
	for (size_t i = 0; i < mb->n; i++) {
		path_free(mb, mb->msgs[i].path);
		mb->msgs[i].path = NULL;
	}
	free(mb->arena);
	mb->arena = NULL;
	mb->arena_len = 0;
}

/* Nothing changed since the last full sync (see the top). */
static bool unchanged(const struct md_mbox *mb)
{
	struct stamp s;

	return mb->stamped && stamp_dirs(mb, &s) == 0 &&
	       stamp_list(mb, &s) == 0 && s.new_m == mb->stamp.new_m &&
	       s.cur_m == mb->stamp.cur_m && s.list_m == mb->stamp.list_m &&
	       s.list_ino == mb->stamp.list_ino;
}

/* What a closed writable handle leaves its folder (see copy_peer). */
struct mb_snap {
	uint64_t gen; /* the folder's event count it was up to date at */
	struct stamp stamp;
	bool stamped;
	uint32_t uidvalidity, uidnext;
	struct md_msg_info *msgs;
	size_t n;
	char *arena;
	size_t arena_len;
};

void mb__snap_free(struct mb_snap *sn)
{
	if (sn == NULL)
		return;
	list_free(sn->msgs, sn->n, sn->arena, sn->arena_len);
	free(sn);
}

uint64_t mb__snap_gen(const struct mb_snap *sn)
{
	return sn->gen;
}

/* On close: leave the list to the folder for the next opener. */
static void stash(struct md_mbox *mb)
{
	struct mb_snap *sn;

	if (!mb->listed || mb->released || mb->ro ||
	    mb->note.seen == UINT64_MAX || !mb__note_live(&mb->note))
		return;
	sn = malloc(sizeof(*sn));
	if (sn == NULL)
		return;
	*sn = (struct mb_snap){.gen = mb->note.seen,
			       .stamp = mb->stamp,
			       .stamped = mb->stamped,
			       .uidvalidity = mb->uidvalidity,
			       .uidnext = mb->uidnext,
			       .msgs = mb->msgs,
			       .n = mb->n,
			       .arena = mb->arena,
			       .arena_len = mb->arena_len};
	if (!mb__note_stash(&mb->note, sn)) {
		free(sn);
		return;
	}
	mb->msgs = NULL;
	mb->n = 0;
	mb->arena = NULL;
	mb->arena_len = 0;
}

/* The stashed list, if it is up to date (the folder's count is gen). */
static bool take_stash(struct md_mbox *mb, uint64_t gen)
{
	struct mb_snap *sn = mb__note_take(&mb->note);

	if (sn == NULL)
		return false;
	if (sn->gen != gen || kw_load(mb) < 0) {
		mb__snap_free(sn);
		return false;
	}
	for (size_t i = 0; i < sn->n; i++)
		sn->msgs[i].flags &= ~(unsigned)MD_F_RECENT;
	mb_list_clear(mb);
	mb->msgs = sn->msgs;
	mb->n = sn->n;
	mb->arena = sn->arena;
	mb->arena_len = sn->arena_len;
	mb->uidvalidity = sn->uidvalidity;
	mb->uidnext = sn->uidnext;
	mb->stamp = sn->stamp;
	mb->stamped = sn->stamped;
	mb->listed = true;
	free(sn);
	return true;
}

/*
 * A handle's first list without listing the directories, when the
 * thread has it up to date (made when the folder's event count was what
 * it is now): the list a closed writable handle left (taken, no copy),
 * else a copy of an open handle's. SELECT of a folder other sessions of
 * the worker have open costs that, not a listing. \Recent is the
 * other's (its claims): none here, as no file waits in new/ (it would
 * be an event). A read-only handle lists new/ without claiming, so a
 * writable one copies only a writable one. Keywords are read again.
 */
static bool copy_peer(struct md_mbox *mb, uint64_t gen)
{
	const struct mb_note *pn = NULL;
	const struct md_mbox *h = NULL;
	struct md_msg_info *nv = NULL;
	size_t len = 0, off = 0;
	char *arena;

	if (mb->listed || gen == UINT64_MAX)
		return false;
	if (take_stash(mb, gen))
		return true;
	while ((pn = mb__note_peer(&mb->note, pn)) != NULL) {
		h = pn->owner;
		if (pn->seen == gen && h->listed && !h->released &&
		    (mb->ro || !h->ro))
			break;
	}
	if (pn == NULL)
		return false;
	/* All of h is read before anything yields (kw_load does): h may be
	 * closed or synced by its own fiber meanwhile. */
	for (size_t i = 0; i < h->n; i++)
		len += strlen(h->msgs[i].path) + 1;
	arena = malloc(len + 1);
	if (h->n > 0)
		nv = malloc(h->n * sizeof(*nv));
	if (arena == NULL || (h->n > 0 && nv == NULL)) {
		free(arena);
		free(nv);
		return false; /* a listing then */
	}
	for (size_t i = 0; i < h->n; i++) {
		nv[i] = h->msgs[i];
		nv[i].flags &= ~(unsigned)MD_F_RECENT;
		nv[i].path = arena + off;
		off = (size_t)(stpcpy(arena + off, h->msgs[i].path) - arena) +
		      1;
	}
	mb_list_clear(mb);
	mb->msgs = nv;
	mb->n = h->n;
	mb->arena = arena;
	mb->arena_len = len;
	mb->uidvalidity = h->uidvalidity;
	mb->uidnext = h->uidnext;
	mb->stamp = h->stamp;
	mb->stamped = h->stamped;
	h = NULL;
	if (kw_load(mb) < 0)
		return false; /* a listing replaces the copy */
	mb->listed = true;
	return true;
}

int md_mbox_sync(struct md_mbox *mb, struct md_mbox_changes *ch_out)
{
	bool was, quiet;
	uint64_t gen;
	int ret;

	if (ch_out != NULL)
		*ch_out = (struct md_mbox_changes){0};
	ret = fds_open(mb);
	if (ret < 0)
		return ret;
	/* Watched before the listing: a change during it is an event. */
	if (!mb->note.on &&
	    mb__note_add(&mb->note, mb->dfd, mb->new_fd, mb->cur_fd) < 0) {
		/* no watch (limits, no /proc): the stamps decide */
	}
	mb->note.owner = mb;
	quiet = mb__note_quiet(&mb->note, &gen);
	/* A released handle lost its paths: only a listing has them. */
	if (!mb->released && (quiet || unchanged(mb) || copy_peer(mb, gen))) {
		mb->note.seen = gen;
		return 0;
	}
	was = mb->released;
	mb->released = false; /* sync_full makes paths */
	ret = sync_full(mb, ch_out);
	if (ret == 0) {
		mb->listed = true;
		mb->note.seen = gen;
	} else if (was) {
		mb->released = true; /* the old list: no paths */
		mb__note_del(&mb->note);
		fds_close(mb);
	}
	return ret;
}

bool md_mbox_watched(const struct md_mbox *mb)
{
	return mb__note_live(&mb->note);
}

int md_mbox_poll(struct md_mbox *mb, struct md_mbox_changes *ch_out)
{
	int ret;

	if (!mb->released)
		return md_mbox_sync(mb, ch_out);
	if (ch_out != NULL)
		*ch_out = (struct md_mbox_changes){0};
	ret = fds_open(mb);
	if (ret < 0)
		return ret;
	if (!unchanged(mb))
		ret = sync_full(mb, ch_out); /* makes no paths (msg_fill) */
	fds_close(mb);
	return ret;
}

/* -------------------------------------------------------------------- */
/* Open, close, accessors */

int mb__mbox_new(struct md_store *st, const char *user, const char *name,
		 bool readonly, struct md_mbox **mb_out)
{
	size_t ulen = strlen(user), nlen = strlen(name);
	struct md_mbox *mb;
	int ret;

	/* One allocation with its two names: a parked IMAP session keeps
	 * thousands of these. */
	mb = calloc(1, sizeof(*mb) + ulen + nlen + 2);
	if (mb == NULL)
		return -ENOMEM;
	mb->st = st;
	mb->ro = readonly;
	mb->new_fd = mb->cur_fd = -1;
	memcpy(mb->user, user, ulen + 1);
	memcpy(mb->user + ulen + 1, name, nlen + 1);
	mb->name = mb->user + ulen + 1;
	mb->dfd = ret = mb__folder_open(st, user, name);
	if (ret >= 0)
		mb->new_fd = ret =
			ur_openat(mb->dfd, "new", O_RDONLY | O_DIRECTORY, 0);
	if (ret >= 0)
		mb->cur_fd = ret =
			ur_openat(mb->dfd, "cur", O_RDONLY | O_DIRECTORY, 0);
	if (ret < 0) {
		md_mbox_close(&mb);
		return ret == -ENOTDIR ? -ENOENT : ret;
	}
	*mb_out = mb;
	return 0;
}

int md_mbox_open(struct md_store *st, const char *user, const char *name,
		 bool readonly, struct md_mbox **mb_out)
{
	struct md_mbox *mb;
	int ret;

	*mb_out = NULL;
	ret = mb__mbox_new(st, user, name, readonly, &mb);
	if (ret < 0)
		return ret;
	ret = md_mbox_sync(mb, NULL);
	if (ret < 0) {
		md_mbox_close(&mb);
		return ret;
	}
	*mb_out = mb;
	return 0;
}

void md_mbox_close(struct md_mbox **mbp)
{
	struct md_mbox *mb = *mbp;

	if (mb == NULL)
		return;
	*mbp = NULL;
	stash(mb);
	mb__note_del(&mb->note);
	fds_close(mb);
	mb_list_clear(mb);
	kw_clear(mb);
	free(mb->chg);
	free(mb);
}

/*
 * A handle whose session waits (IMAP IDLE, parked) should hold no
 * descriptor (10,000 of them would take 30,000 of a process's 20,000)
 * and as little memory as can be: it keeps its list (UIDs, flags,
 * keywords, sizes, dates: what the next sync compares with) and change
 * stamp, and drops the file names, the bulk of it, which any listing
 * finds again. md_mbox_poll() keeps it so; md_mbox_sync() opens the
 * folder by name again (a folder renamed or removed meanwhile is
 * -ENOENT) and lists it (the names), comparing the new directories'
 * times with the old stamp.
 */
void md_mbox_release(struct md_mbox *mb)
{
	free(mb->chg); /* the last sync's changes: told by now */
	mb->chg = NULL;
	if (mb->released)
		return;
	paths_drop(mb);
	mb__note_del(&mb->note);
	fds_close(mb);
	mb->released = true;
}

const struct md_msg_info *md_mbox_msgs(const struct md_mbox *mb, size_t *n_out)
{
	*n_out = mb->n;
	return mb->msgs;
}

const char *md_mbox_name(const struct md_mbox *mb)
{
	return mb->name;
}

uint32_t md_mbox_uidvalidity(const struct md_mbox *mb)
{
	return mb->uidvalidity;
}

uint32_t md_mbox_uidnext(const struct md_mbox *mb)
{
	return mb->uidnext;
}

bool md_mbox_readonly(const struct md_mbox *mb)
{
	return mb->ro;
}

int md_mbox_watch_paths(const struct md_mbox *mb, char *new_out, char *cur_out,
			char *uidlist_out, size_t size)
{
	char link[32], dir[4096];
	ssize_t n;

	(void)snprintf(link, sizeof(link), "/proc/self/fd/%d", mb->dfd);
	n = readlink(link, dir, sizeof(dir) - 1);
	if (n < 0)
		return -errno;
	dir[n] = '\0';
	if ((size_t)n + sizeof(MB_UIDLIST) + 1 > size)
		return -ENAMETOOLONG;
	(void)snprintf(new_out, size, "%s/new", dir);
	(void)snprintf(cur_out, size, "%s/cur", dir);
	(void)snprintf(uidlist_out, size, "%s/%s", dir, MB_UIDLIST);
	return 0;
}

/* -------------------------------------------------------------------- */
/* Messages */

struct relocate {
	const char *base;
	size_t blen;
	char *found; /* "cur/<fname>" */
};

static int relocate_one(void *arg, const char *fname, const char *sub)
{
	struct relocate *r = arg;

	if (r->found != NULL || md_base_len(fname) != r->blen ||
	    memcmp(fname, r->base, r->blen) != 0)
		return 0;
	if (asprintf(&r->found, "%s/%s", sub, fname) < 0) {
		r->found = NULL;
		return -ENOMEM;
	}
	return 0;
}

static int relocate_cur(void *arg, const char *fname)
{
	return relocate_one(arg, fname, "cur");
}

static int relocate_new(void *arg, const char *fname)
{
	return relocate_one(arg, fname, "new");
}

/*
 * The file of msgs[i] was renamed by someone else: find it by its base
 * name and update the path (not the flags: the next sync reports them).
 * -ENOENT: it is gone (expunged elsewhere).
 */
int mb__relocate(struct md_mbox *mb, size_t i)
{
	struct md_msg_info *m = &mb->msgs[i];
	const char *fname = strchr(m->path, '/') + 1;
	struct relocate r = {fname, md_base_len(fname), NULL};
	char base[MB_FNAME_MAX];
	int ret;

	(void)snprintf(base, sizeof(base), "%.*s", (int)r.blen, fname);
	r.base = base;
	ret = list_dir(mb->dfd, "cur", relocate_cur, &r);
	if (ret == 0 && r.found == NULL)
		ret = list_dir(mb->dfd, "new", relocate_new, &r);
	if (ret < 0) {
		free(r.found);
		return ret;
	}
	if (r.found == NULL)
		return -ENOENT;
	path_free(mb, m->path);
	m->path = r.found;
	return 0;
}

int md_mbox_msg_open(struct md_mbox *mb, uint32_t uid)
{
	long i = md_mbox_find(mb, uid);
	int ret = -ENOENT;

	if (mb->released)
		return -EBADF; /* no paths */
	for (int t = 0; i >= 0 && t < MB_TRIES; t++) {
		ret = ur_openat(mb->dfd, mb->msgs[i].path, O_RDONLY | O_CLOEXEC,
				0);
		if (ret != -ENOENT)
			break;
		ret = mb__relocate(mb, (size_t)i);
		if (ret < 0)
			break;
		ret = -ENOENT;
	}
	return ret;
}

int md_mbox_msg_date(struct md_mbox *mb, uint32_t uid, int64_t *date_out)
{
	long i = md_mbox_find(mb, uid);
	struct stat sb;
	int ret = -ENOENT;

	if (i >= 0 && mb->msgs[i].internal_date != MD_DATE_UNKNOWN) {
		*date_out = mb->msgs[i].internal_date;
		return 0;
	}
	if (mb->released)
		return -EBADF; /* no paths */
	for (int t = 0; i >= 0 && t < MB_TRIES; t++) {
		if (fstatat(mb->dfd, mb->msgs[i].path, &sb, 0) == 0) {
			mb->msgs[i].internal_date = sb.st_mtim.tv_sec;
			*date_out = sb.st_mtim.tv_sec;
			return 0;
		}
		ret = -errno;
		if (ret != -ENOENT)
			break;
		ret = mb__relocate(mb, (size_t)i);
		if (ret < 0)
			break;
		ret = -ENOENT;
	}
	return ret;
}

bool md_msg_is_crlf(const struct md_msg_info *m)
{
	const char *slash = strchr(m->path, '/');
	const char *fname = slash != NULL ? slash + 1 : m->path;
	uint64_t s, w;

	return md_name_field(fname, 'S', &s) == 0 &&
	       md_name_field(fname, 'W', &w) == 0 && s == w;
}

/* CR LF to LF in place; returns the new length. */
static size_t drop_cr(char *buf, size_t len)
{
	char *end = buf + len, *dst, *cr;

	cr = memchr(buf, '\r', len);
	if (cr == NULL)
		return len;
	dst = cr;
	for (char *p = cr; p < end; p++)
		if (!(*p == '\r' && p + 1 < end && p[1] == '\n'))
			*dst++ = *p;
	return (size_t)(dst - buf);
}

int md_mbox_msg_read(struct md_mbox *mb, uint32_t uid, size_t max,
		     char **buf_out, size_t *len_out)
{
	struct stat sb;
	char *buf;
	int fd, ret;
	long i;

	fd = md_mbox_msg_open(mb, uid);
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
	*len_out = (size_t)sb.st_size;
	/* mime.c parses LF text: a CRLF file (mime.c's own conversion puts
	 * the CRs back) is read as if stored with LF. */
	i = md_mbox_find(mb, uid); /* opening may have moved the entry */
	if (i >= 0 && md_msg_is_crlf(&mb->msgs[i]))
		*len_out = drop_cr(buf, *len_out);
	buf[*len_out] = '\0';
	*buf_out = buf;
out_close:
	mb__close(fd);
	return ret;
}

/* The flags op makes of what the file name says now. */
static void apply_op(const char *fname, enum md_store_op op, unsigned *flags,
		     uint32_t *kw)
{
	unsigned cf;
	uint32_t ck;

	md_flags_parse(fname, &cf, &ck);
	if (op == MD_STORE_ADD) {
		*flags |= cf;
		*kw |= ck;
	} else if (op == MD_STORE_REMOVE) {
		*flags = cf & ~*flags;
		*kw = ck & ~*kw;
	}
}

/* Rename msgs[i] to carry flags and kw (after op on its current name),
 * following renames by others. */
static int store_rename(struct md_mbox *mb, size_t i, enum md_store_op op,
			unsigned flags, uint32_t kw, char *dst, size_t size)
{
	struct md_msg_info *m = &mb->msgs[i];
	int ret = -ENOENT;

	for (int t = 0; t < MB_TRIES && ret == -ENOENT; t++) {
		const char *fname = strchr(m->path, '/') + 1;
		unsigned nf = flags;
		uint32_t nk = kw;
		char suf[48];

		apply_op(fname, op, &nf, &nk);
		(void)md_flags_format(nf & MD_F_STORED, nk, suf, sizeof(suf));
		(void)snprintf(dst, size, "cur/%.*s%s", (int)md_base_len(fname),
			       fname, suf);
		if (strcmp(dst, m->path) == 0)
			return 0;
		ret = ur_renameat(mb->dfd, m->path, mb->dfd, dst, 0);
		if (ret == -ENOENT) {
			ret = mb__relocate(mb, i);
			if (ret == 0)
				ret = -ENOENT;
		}
	}
	return ret;
}

int md_mbox_store_op(struct md_mbox *mb, uint32_t uid, enum md_store_op op,
		     unsigned flags, uint32_t keywords)
{
	char dst[MB_PATH_MAX + 48];
	long i = md_mbox_find(mb, uid);
	struct md_msg_info *m;
	int ret;

	if (mb->ro)
		return -EROFS;
	if (mb->released)
		return -EBADF;
	if (i < 0)
		return -ENOENT;
	if (op != MD_STORE_SET && op != MD_STORE_ADD && op != MD_STORE_REMOVE)
		return -EINVAL;
	m = &mb->msgs[i];
	flags &= MD_F_STORED;
	keywords &= mb->nkw >= 32 ? UINT32_MAX : (1U << mb->nkw) - 1;
	ret = store_rename(mb, (size_t)i, op, flags, keywords, dst,
			   sizeof(dst));
	if (ret < 0)
		return ret;
	if (strcmp(dst, m->path) != 0) {
		char *p = strdup(dst);

		if (p == NULL)
			return -ENOMEM; /* renamed: the next sync sees it */
		path_free(mb, m->path);
		m->path = p;
	}
	md_flags_parse(m->path, &flags, &keywords);
	m->flags = flags | (m->flags & MD_F_RECENT);
	m->keywords = keywords;
	return 0;
}

int md_mbox_store(struct md_mbox *mb, uint32_t uid, unsigned flags,
		  uint32_t keywords)
{
	return md_mbox_store_op(mb, uid, MD_STORE_SET, flags, keywords);
}

static bool uid_in(const uint32_t *uids, size_t n, uint32_t uid)
{
	for (size_t i = 0; i < n; i++)
		if (uids[i] == uid)
			return true;
	return false;
}

/*
 * Unlink msgs[i]'s file, wherever it went: 0 (gone already is fine), 1
 * if another session took its \Deleted away meanwhile (kept: the next
 * sync reports the flags), or -errno.
 */
static int unlink_msg(struct md_mbox *mb, size_t i)
{
	int ret = -ENOENT;

	for (int t = 0; t < MB_TRIES && ret == -ENOENT; t++) {
		unsigned flags;
		uint32_t kw;

		ret = ur_unlinkat(mb->dfd, mb->msgs[i].path, 0);
		if (ret != -ENOENT)
			break;
		if (mb__relocate(mb, i) == -ENOENT)
			return 0;
		md_flags_parse(mb->msgs[i].path, &flags, &kw);
		if (!(flags & MD_F_DELETED))
			return 1;
	}
	return ret;
}

/* Remove msgs[i] from the list (its UID reported by the caller). */
void mb__msgs_drop(struct md_mbox *mb, size_t i)
{
	path_free(mb, mb->msgs[i].path);
	memmove(&mb->msgs[i], &mb->msgs[i + 1],
		(mb->n - i - 1) * sizeof(*mb->msgs));
	mb->n--;
}

int md_mbox_expunge(struct md_mbox *mb, const uint32_t *uids, size_t n,
		    uint32_t **out, size_t *n_out)
{
	uint32_t *v = NULL;
	size_t nv = 0;
	int ret = 0;

	*out = NULL;
	*n_out = 0;
	if (mb->ro)
		return -EROFS;
	if (mb->released)
		return -EBADF;
	for (size_t i = 0; i < mb->n;) {
		const struct md_msg_info *m = &mb->msgs[i];

		if (!(m->flags & MD_F_DELETED) ||
		    (uids != NULL && !uid_in(uids, n, m->uid))) {
			i++;
			continue;
		}
		if (v == NULL) {
			v = malloc(mb->n * sizeof(*v));
			if (v == NULL)
				return -ENOMEM;
		}
		ret = unlink_msg(mb, i);
		if (ret < 0)
			break;
		if (ret > 0) {
			ret = 0;
			i++;
			continue;
		}
		v[nv++] = m->uid;
		mb__msgs_drop(mb, i);
	}
	if (ret == 0 && nv > 0)
		ret = mb__sync_fd(mb->st, mb->cur_fd);
	/* What was unlinked is gone even on a later error: report it. */
	*out = v;
	*n_out = nv;
	if (nv == 0) {
		free(v);
		*out = NULL;
	}
	return ret;
}

void md_copy_result_fini(struct md_copy_result *r)
{
	free(r->src);
	free(r->dst);
	memset(r, 0, sizeof(*r));
}
