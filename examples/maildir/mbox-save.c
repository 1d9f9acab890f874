/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/maildir: putting messages into a mailbox: COPY and MOVE (hard
 * links or renames under fresh names; a copy of the data, with its
 * mtime, when the target is on another filesystem) and APPEND (a new
 * file).
 *
 * Order, for every path: the file gets its final name in the target's
 * cur/ by one atomic link or rename of a complete (and for APPEND,
 * synced) file; cur/ is fsynced; only then are UIDs assigned, under the
 * target's uidlist lock. A sync elsewhere may see the file before that
 * and give it a UID first: mb__assign_bases() then reports that UID, so
 * COPYUID and APPENDUID always name the UIDs the file really has. When
 * assignment fails, what was linked is unlinked again (a move is renamed
 * back): the target shows nothing of a failed command.
 */
#include "mailbox.h"
#include "maildir.h"
#include "mbox-internal.h"
#include "md-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ringprot/uring.h>

#define SAVE_BUF   ((size_t)64 * 1024)
#define UNIQ_MAX   200
#define SAVE_NAME  (UNIQ_MAX + 64)
#define SAVE_TRIES 3

/* -------------------------------------------------------------------- */
/* COPY, MOVE */

/* The target's keyword bits for the source's (a keyword that does not
 * fit in the target, 26 defined there, is dropped). */
static uint32_t map_keywords(struct md_mbox *src, struct md_mbox *dst,
			     uint32_t kw)
{
	uint32_t out = 0;

	for (unsigned i = 0; i < MD_KW_MAX; i++) {
		const char *name = md_mbox_keyword(src, i);
		int k;

		if (!(kw & (1U << i)) || name == NULL)
			continue;
		k = md_mbox_keyword_index(dst, name);
		if (k >= 0)
			out |= 1U << k;
	}
	return out;
}

/* A fresh base for msgs[i] in the target: "<uniq>,S=<bytes>,W=<crlf>". */
static int new_base(struct md_mbox *mb, size_t i, char *out, size_t size)
{
	const struct md_msg_info *m = &mb->msgs[i];
	char uniq[UNIQ_MAX];
	uint64_t s;

	if (md_name_field(strchr(m->path, '/') + 1, 'S', &s) < 0) {
		struct stat sb;

		if (fstatat(mb->dfd, m->path, &sb, 0) < 0)
			return -errno;
		s = (uint64_t)sb.st_size;
	}
	md__uniq_name(mb->st, uniq, sizeof(uniq));
	(void)snprintf(out, size, "%s,S=%llu,W=%llu", uniq,
		       (unsigned long long)s, (unsigned long long)m->size);
	return 0;
}

/* Write all of buf at off. */
static int pwrite_all(int fd, const char *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = ur_write(fd, buf + done, len - done,
				     (int64_t)(off + done));

		if (n <= 0)
			return n < 0 ? (int)n : -EIO;
		done += (size_t)n;
	}
	return 0;
}

/* Copy sfd's data and mtime (the INTERNALDATE) into the new file fd. */
static int copy_fd(const struct md_store *st, int sfd, int fd)
{
	struct timespec ts[2];
	uint64_t off = 0;
	struct stat sb;
	char *buf;
	int ret = 0;

	buf = malloc(SAVE_BUF);
	if (buf == NULL)
		return -ENOMEM;
	for (;;) {
		ssize_t n = ur_read(sfd, buf, SAVE_BUF, (int64_t)off);

		if (n <= 0) {
			ret = (int)n;
			break;
		}
		ret = pwrite_all(fd, buf, (size_t)n, off);
		if (ret < 0)
			break;
		off += (uint64_t)n;
	}
	free(buf);
	if (ret == 0 && fstat(sfd, &sb) < 0)
		ret = -errno;
	if (ret == 0) {
		ts[0] = sb.st_atim;
		ts[1] = sb.st_mtim;
		if (futimens(fd, ts) < 0)
			ret = -errno;
	}
	if (ret == 0 && !md__no_fsync(st))
		ret = ur_fsync(fd, UR_FSYNC_DATASYNC);
	return ret;
}

/*
 * No hard link possible (the target folder on another filesystem, or
 * one without links): copy into the target's tmp/, sync, rename to dst
 * ("cur/..."), sync cur/. -ENOENT: the source is gone (renamed).
 */
static int copy_data(struct md_mbox *mb, size_t i, struct md_mbox *t,
		     const char *dst)
{
	char tmp[SAVE_NAME + 64];
	int sfd, fd, ret;

	sfd = ur_openat(mb->dfd, mb->msgs[i].path, O_RDONLY | O_CLOEXEC, 0);
	if (sfd < 0)
		return sfd;
	(void)snprintf(tmp, sizeof(tmp), "tmp/%s", dst + 4);
	fd = ur_openat(t->dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
		       0600);
	if (fd < 0) {
		mb__close(sfd);
		return fd;
	}
	ret = copy_fd(t->st, sfd, fd);
	mb__close(fd);
	mb__close(sfd);
	if (ret == 0)
		ret = ur_renameat(t->dfd, tmp, t->dfd, dst, 0);
	if (ret == 0)
		return mb__sync_fd(t->st, t->cur_fd);
	if (ur_unlinkat(t->dfd, tmp, 0) < 0) {
		/* md_clean_tmp() takes it later */
	}
	return ret;
}

/* Link, or rename for a move, msgs[i] to dst in t; a copy of the data
 * where that cannot be done (then a move unlinks the source). */
static int place_file(struct md_mbox *mb, size_t i, struct md_mbox *t,
		      const char *dst, bool move)
{
	const char *src = mb->msgs[i].path;
	int ret;

	if (move) {
		ret = ur_renameat(mb->dfd, src, t->dfd, dst, RENAME_NOREPLACE);
		if (ret == -EINVAL)
			ret = ur_renameat(mb->dfd, src, t->dfd, dst, 0);
	} else {
		ret = ur_linkat(mb->dfd, src, t->dfd, dst, 0);
	}
	if (ret != -EXDEV && ret != -EPERM && ret != -EMLINK)
		return ret;
	ret = copy_data(mb, i, t, dst);
	if (ret == 0 && move) {
		ret = ur_unlinkat(mb->dfd, src, 0);
		if (ret < 0 && ur_unlinkat(t->dfd, dst, 0) < 0) {
			/* in both folders: a duplicate, never a loss */
		}
	}
	return ret;
}

/* Place msgs[i] at dst in t, finding it again if it was renamed
 * meanwhile. -ENOENT: expunged elsewhere. */
static int place(struct md_mbox *mb, size_t i, struct md_mbox *t,
		 const char *dst, bool move)
{
	int ret = -ENOENT;

	for (int k = 0; k < SAVE_TRIES && ret == -ENOENT; k++) {
		ret = place_file(mb, i, t, dst, move);
		if (ret == -ENOENT) {
			ret = mb__relocate(mb, i);
			if (ret < 0)
				return ret;
			ret = -ENOENT;
		}
	}
	return ret;
}

struct placed {
	size_t n;
	long *idx;     /* source message index */
	char **bases;  /* in the target */
	char **paths;  /* "cur/..." in the target */
	uint32_t *src; /* source UIDs */
};

static void placed_free(struct placed *p)
{
	for (size_t i = 0; i < p->n; i++) {
		free(p->bases[i]);
		free(p->paths[i]);
	}
	free(p->idx);
	free(p->bases);
	free(p->paths);
	free(p->src);
}

/* Undo: unlink the copies, or rename the moved files back. */
static void unplace(struct md_mbox *mb, struct md_mbox *t, struct placed *p,
		    bool move)
{
	for (size_t i = 0; i < p->n; i++) {
		int ret = move ? ur_renameat(t->dfd, p->paths[i], mb->dfd,
					     mb->msgs[p->idx[i]].path, 0)
			       : ur_unlinkat(t->dfd, p->paths[i], 0);

		if (ret < 0) {
			/* left in the target: the next sync shows it */
		}
	}
}

static int uid_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int place_one(struct md_mbox *mb, size_t i, struct md_mbox *t, bool move,
		     struct placed *p)
{
	const struct md_msg_info *m = &mb->msgs[i];
	char base[SAVE_NAME], suf[48];
	uint32_t kw = map_keywords(mb, t, m->keywords);
	int ret;

	ret = new_base(mb, i, base, sizeof(base));
	if (ret < 0)
		return ret;
	(void)md_flags_format(m->flags & MD_F_STORED, kw, suf, sizeof(suf));
	p->bases[p->n] = strdup(base);
	if (p->bases[p->n] == NULL ||
	    asprintf(&p->paths[p->n], "cur/%s%s", base, suf) < 0) {
		free(p->bases[p->n]);
		return -ENOMEM;
	}
	ret = place(mb, i, t, p->paths[p->n], move);
	if (ret < 0) {
		free(p->bases[p->n]);
		free(p->paths[p->n]);
		return ret == -ENOENT ? 0 : ret; /* expunged: skipped */
	}
	p->idx[p->n] = (long)i;
	p->src[p->n] = m->uid;
	p->n++;
	return 0;
}

/* Place every selected message; then sync the directories. */
static int place_all(struct md_mbox *mb, const uint32_t *uids, size_t n,
		     struct md_mbox *t, bool move, struct placed *p)
{
	uint32_t *sorted;
	int ret = 0;

	sorted = malloc((n + 1) * sizeof(*sorted));
	p->idx = malloc((mb->n + 1) * sizeof(*p->idx));
	p->bases = calloc(mb->n + 1, sizeof(*p->bases));
	p->paths = calloc(mb->n + 1, sizeof(*p->paths));
	p->src = malloc((mb->n + 1) * sizeof(*p->src));
	if (sorted == NULL || p->idx == NULL || p->bases == NULL ||
	    p->paths == NULL || p->src == NULL) {
		free(sorted);
		return -ENOMEM;
	}
	if (n > 0)
		memcpy(sorted, uids, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), uid_cmp);
	for (size_t i = 0; i < mb->n && ret == 0; i++)
		if (bsearch(&mb->msgs[i].uid, sorted, n, sizeof(*sorted),
			    uid_cmp) != NULL)
			ret = place_one(mb, i, t, move, p);
	free(sorted);
	if (ret == 0 && p->n > 0)
		ret = mb__sync_fd(t->st, t->cur_fd);
	if (ret == 0 && p->n > 0 && move && t != mb)
		ret = mb__sync_fd(mb->st, mb->cur_fd);
	return ret;
}

int md_mbox_copy(struct md_mbox *mb, const uint32_t *uids, size_t n,
		 const char *dest, bool move, struct md_copy_result *r)
{
	struct placed p = {0};
	struct md_mbox *t;
	int ret;

	memset(r, 0, sizeof(*r));
	if (move && mb->ro)
		return -EROFS;
	ret = mb__mbox_new(mb->st, mb->user, dest, false, &t);
	if (ret < 0)
		return ret;
	ret = place_all(mb, uids, n, t, move, &p);
	if (ret == 0) {
		r->dst = malloc((p.n + 1) * sizeof(*r->dst));
		ret = r->dst == NULL ? -ENOMEM : 0;
	}
	if (ret == 0)
		ret = mb__assign_bases(t, p.bases, p.n, r->dst,
				       &r->uidvalidity);
	if (ret < 0) {
		unplace(mb, t, &p, move);
		free(r->dst);
		r->dst = NULL;
		goto out;
	}
	r->n = p.n;
	r->src = p.src;
	p.src = NULL;
	/* Moved: gone from this handle, from the highest index down. */
	for (size_t i = p.n; move && i > 0; i--)
		mb__msgs_drop(mb, (size_t)p.idx[i - 1]);
out:
	placed_free(&p);
	md_mbox_close(&t);
	return ret;
}

/* -------------------------------------------------------------------- */
/* APPEND */

struct md_append {
	struct md_mbox *t;
	int fd;
	int err; /* sticky */
	bool cr_held;
	bool crlf; /* the store's save_crlf: CRLF kept, bare LFs get a CR */
	char last; /* last byte stored: for counting bare LFs */
	char *buf;
	size_t len;
	uint64_t off;
	uint64_t bare_lf;
	char uniq[UNIQ_MAX];
	char tmp[UNIQ_MAX + 8];
};

int md_append_begin(struct md_store *st, const char *user, const char *name,
		    struct md_append **ap_out)
{
	struct md_append *ap;
	int ret;

	*ap_out = NULL;
	ap = calloc(1, sizeof(*ap));
	if (ap == NULL)
		return -ENOMEM;
	ap->fd = -1;
	ap->last = '\n';
	ap->crlf = md__save_crlf(st);
	ap->buf = malloc(SAVE_BUF);
	ret = ap->buf == NULL ? -ENOMEM : 0;
	if (ret == 0)
		ret = mb__mbox_new(st, user, name, false, &ap->t);
	if (ret == 0) {
		md__uniq_name(st, ap->uniq, sizeof(ap->uniq));
		(void)snprintf(ap->tmp, sizeof(ap->tmp), "tmp/%s", ap->uniq);
		ap->fd = ret = ur_openat(
			ap->t->dfd, ap->tmp,
			O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (ret < 0) {
		md_mbox_close(&ap->t);
		free(ap->buf);
		free(ap);
		return ret;
	}
	*ap_out = ap;
	return 0;
}

static int ap_flush(struct md_append *ap)
{
	size_t done = 0;

	while (done < ap->len) {
		ssize_t n = ur_write(ap->fd, ap->buf + done, ap->len - done,
				     (int64_t)ap->off);

		if (n <= 0)
			return n < 0 ? (int)n : -EIO;
		done += (size_t)n;
		ap->off += (uint64_t)n;
	}
	ap->len = 0;
	return 0;
}

/* Store p[0..n) (already LF): count bare LFs, buffer, flush when full. */
static int ap_out(struct md_append *ap, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] == '\n' && (i ? p[i - 1] : ap->last) != '\r')
			ap->bare_lf++;
	if (n > 0)
		ap->last = p[n - 1];
	while (n > 0) {
		size_t k = SAVE_BUF - ap->len < n ? SAVE_BUF - ap->len : n;
		int ret;

		memcpy(ap->buf + ap->len, p, k);
		ap->len += k;
		p += k;
		n -= k;
		if (ap->len == SAVE_BUF) {
			ret = ap_flush(ap);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* CR LF to LF; a CR ending a piece waits for the next one. */
static int ap_crlf(struct md_append *ap, const char *p, size_t len)
{
	const char *end = p + len, *seg = p, *cr;
	int ret;

	if (len == 0)
		return 0;
	if (ap->cr_held) {
		ap->cr_held = false;
		if (*p != '\n') {
			ret = ap_out(ap, "\r", 1);
			if (ret < 0)
				return ret;
		}
	}
	while ((cr = memchr(p, '\r', (size_t)(end - p))) != NULL) {
		if (cr + 1 == end) {
			ap->cr_held = true;
			return ap_out(ap, seg, (size_t)(cr - seg));
		}
		p = cr + 1;
		if (*p != '\n')
			continue;
		ret = ap_out(ap, seg, (size_t)(cr - seg));
		if (ret < 0)
			return ret;
		seg = p;
	}
	return ap_out(ap, seg, (size_t)(end - seg));
}

static int ap_out_fn(void *arg, const char *p, size_t n)
{
	return ap_out(arg, p, n);
}

int md_append_write(struct md_append *ap, const void *buf, size_t len)
{
	if (ap == NULL)
		return -EINVAL;
	if (ap->err == 0 && ap->crlf)
		ap->err = md__crlf_out(buf, len, ap->last, ap_out_fn, ap);
	else if (ap->err == 0)
		ap->err = ap_crlf(ap, buf, len);
	return ap->err;
}

void md_append_abort(struct md_append **app)
{
	struct md_append *ap = *app;

	if (ap == NULL)
		return;
	*app = NULL;
	mb__close(ap->fd);
	if (ur_unlinkat(ap->t->dfd, ap->tmp, 0) < 0) {
		/* md_clean_tmp() takes it later */
	}
	md_mbox_close(&ap->t);
	free(ap->buf);
	free(ap);
}

/* Everything to disk with its date; the tmp/ file closed. */
static int ap_finish(struct md_append *ap, int64_t date)
{
	struct timespec ts[2];
	int ret = ap->err;

	if (ret == 0 && ap->cr_held) {
		ap->cr_held = false;
		ret = ap_out(ap, "\r", 1);
	}
	if (ret == 0)
		ret = ap_flush(ap);
	if (ret == 0) {
		ts[0].tv_sec = ts[1].tv_sec = date > 0 ? date : time(NULL);
		ts[0].tv_nsec = ts[1].tv_nsec = 0;
		/* No ring op for it: a metadata update of an open inode. */
		if (futimens(ap->fd, ts) < 0)
			ret = -errno;
	}
	if (ret == 0 && !md__no_fsync(ap->t->st))
		ret = ur_fsync(ap->fd, UR_FSYNC_DATASYNC);
	mb__close(ap->fd);
	ap->fd = -1;
	return ret;
}

static uint32_t ap_keywords(struct md_append *ap, const char *const *kw,
			    size_t n, int *err)
{
	uint32_t bits = 0;

	for (size_t i = 0; i < n; i++) {
		int k = md_mbox_keyword_index(ap->t, kw[i]);

		if (k < 0) {
			*err = k;
			return 0;
		}
		bits |= 1U << k;
	}
	return bits;
}

int md_append_commit(struct md_append **app, unsigned flags,
		     const char *const *keywords, size_t n_keywords,
		     int64_t date, uint32_t *uidvalidity_out, uint32_t *uid_out)
{
	struct md_append *ap = *app;
	char base[SAVE_NAME], dst[SAVE_NAME + 64], suf[48], *bp = base;
	struct md_mbox *t;
	uint64_t vsize;
	uint32_t kw;
	int ret = 0;

	if (ap == NULL)
		return -EINVAL;
	t = ap->t;
	kw = ap_keywords(ap, keywords, n_keywords, &ret);
	if (ret == 0)
		ret = ap_finish(ap, date);
	if (ret < 0)
		goto out_abort;
	vsize = ap->off + ap->bare_lf;
	(void)snprintf(base, sizeof(base), "%s,S=%llu,W=%llu", ap->uniq,
		       (unsigned long long)ap->off, (unsigned long long)vsize);
	(void)md_flags_format(flags & MD_F_STORED, kw, suf, sizeof(suf));
	(void)snprintf(dst, sizeof(dst), "cur/%s%s", base, suf);
	ret = ur_renameat(t->dfd, ap->tmp, t->dfd, dst, RENAME_NOREPLACE);
	if (ret == -EINVAL)
		ret = ur_renameat(t->dfd, ap->tmp, t->dfd, dst, 0);
	if (ret < 0)
		goto out_abort;
	ret = mb__sync_fd(t->st, t->cur_fd);
	if (ret == 0)
		ret = mb__assign_bases(t, &bp, 1, uid_out, uidvalidity_out);
	if (ret < 0) {
		/* Visible for a moment, never acknowledged: take it back. */
		if (ur_unlinkat(t->dfd, dst, 0) < 0) {
			/* the next sync shows it: a message, not a loss */
		}
		goto out_abort;
	}
	*app = NULL;
	md_mbox_close(&ap->t);
	free(ap->buf);
	free(ap);
	return 0;

out_abort:
	md_append_abort(app);
	return ret;
}
