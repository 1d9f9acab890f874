/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/imapd/search: SEARCH and UID SEARCH (RFC 3501 6.4.4), with
 * ESEARCH's RETURN (MIN MAX ALL COUNT) (RFC 4731) and SEARCHRES's SAVE
 * (RFC 5182: the result kept as "$", by UID, for later commands). Under
 * IMAP4rev2 every SEARCH is answered with ESEARCH (RFC 9051 6.4.4).
 *
 * The key tree (parse.h) is evaluated per message. Keys on the message
 * list (flags, sizes, internal dates, sequence and UID sets) cost no file
 * access; the first key that needs the content (HEADER, FROM..., BODY,
 * TEXT, SENT*) reads and parses the file once for that message. Text
 * keys match ASCII case-insensitively, after undoing base64 and
 * quoted-printable in bodies; charsets are not converted (mime.h).
 * Dates "disregard time and timezone" as RFC 3501 says: internal dates
 * by their UTC day, Date: headers by the day in their own zone.
 */
#include "mbox.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ringprot/prot.h>

#include "mime.h"

#define SEARCH_MAX_MSG ((size_t)1 << 30)

struct search_job {
	struct imap_sess *s;
	const struct imap_search *q;
	struct md_mbox *mb;
	/* the current message's content, read on first need */
	uint32_t seq;
	const struct md_msg_info *mi;
	char *data;
	size_t len;
	struct imap_mime_msg *mime;
	bool loaded;
	int err;
	/* results */
	uint32_t *hits;
	uint32_t n, cap;
};

static int64_t day_of(int64_t t)
{
	return t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
}

static const struct imap_mime_msg *content(struct search_job *j)
{
	int ret;

	if (j->loaded)
		return j->data != NULL ? j->mime : NULL;
	j->loaded = true;
	if (j->mime == NULL) {
		j->mime = malloc(sizeof(*j->mime));
		if (j->mime == NULL) {
			j->err = -ENOMEM;
			return NULL;
		}
	}
	ret = md_mbox_msg_read(j->mb, j->mi->uid, SEARCH_MAX_MSG, &j->data,
			       &j->len);
	if (ret < 0) {
		/* expunged meanwhile: matches nothing; errors stop */
		if (ret != -ENOENT)
			j->err = ret;
		j->data = NULL;
		return NULL;
	}
	imap_mime_parse(j->mime, j->data, j->len);
	return j->mime;
}

static unsigned md_flag(unsigned imap)
{
	switch (imap) {
	case IMAP_FLAG_SEEN:
		return MD_F_SEEN;
	case IMAP_FLAG_ANSWERED:
		return MD_F_ANSWERED;
	case IMAP_FLAG_FLAGGED:
		return MD_F_FLAGGED;
	case IMAP_FLAG_DELETED:
		return MD_F_DELETED;
	case IMAP_FLAG_DRAFT:
		return MD_F_DRAFT;
	case IMAP_FLAG_RECENT:
		return MD_F_RECENT;
	default:
		return 0;
	}
}

static bool has_keyword(struct search_job *j, const char *kw)
{
	for (unsigned k = 0; k < MD_KW_MAX; k++) {
		const char *name = md_mbox_keyword(j->mb, k);

		if (name != NULL && strcasecmp(name, kw) == 0)
			return (j->mi->keywords & (1U << k)) != 0;
	}
	return false;
}

static bool match(struct search_job *j, const struct imap_search_key *k);

static bool match_all(struct search_job *j, const struct imap_search_key *k)
{
	for (; k != NULL; k = k->next)
		if (!match(j, k))
			return false;
	return true;
}

static bool match(struct search_job *j, const struct imap_search_key *k)
{
	const struct md_msg_info *mi = j->mi;
	const struct imap_mime_msg *m;
	time_t t;
	int zone, r;

	if (j->err != 0)
		return false;
	switch (k->op) {
	case IMAP_SK_ALL:
		return true;
	case IMAP_SK_AND:
		return match_all(j, k->child);
	case IMAP_SK_OR:
		return k->child != NULL &&
		       (match(j, k->child) ||
			(k->child->next != NULL && match(j, k->child->next)));
	case IMAP_SK_NOT:
		return k->child != NULL && !match(j, k->child);
	case IMAP_SK_FLAG:
		return (mi->flags & md_flag(k->flag)) != 0;
	case IMAP_SK_UNFLAG:
		return (mi->flags & md_flag(k->flag)) == 0;
	case IMAP_SK_NEW:
		return (mi->flags & MD_F_RECENT) && !(mi->flags & MD_F_SEEN);
	case IMAP_SK_OLD:
		return !(mi->flags & MD_F_RECENT);
	case IMAP_SK_KEYWORD:
		return has_keyword(j, k->str);
	case IMAP_SK_UNKEYWORD:
		return !has_keyword(j, k->str);
	case IMAP_SK_SEQSET:
		return imap_mbox_in_set(j->s, &k->set, false, j->seq);
	case IMAP_SK_UIDSET:
		return imap_mbox_in_set(j->s, &k->set, true, j->seq);
	case IMAP_SK_BEFORE:
	case IMAP_SK_ON:
	case IMAP_SK_SINCE: {
		int64_t d;

		r = md_mbox_msg_date(j->mb, mi->uid, &d);
		if (r < 0) {
			/* expunged meanwhile: matches nothing */
			if (r != -ENOENT)
				j->err = r;
			return false;
		}
		d = day_of(d);
		return k->op == IMAP_SK_BEFORE ? d < k->days
		       : k->op == IMAP_SK_ON   ? d == k->days
					       : d >= k->days;
	}
	case IMAP_SK_LARGER:
		return mi->size > k->size;
	case IMAP_SK_SMALLER:
		return mi->size < k->size;
	case IMAP_SK_SENTBEFORE:
	case IMAP_SK_SENTON:
	case IMAP_SK_SENTSINCE: {
		int64_t d;

		m = content(j);
		if (m == NULL || imap_mime_date(m, 0, &t, &zone) < 0)
			return false;
		d = day_of((int64_t)t + (int64_t)zone * 60);
		return k->op == IMAP_SK_SENTBEFORE ? d < k->days
		       : k->op == IMAP_SK_SENTON   ? d == k->days
						   : d >= k->days;
	}
	case IMAP_SK_HEADER:
		m = content(j);
		if (m == NULL)
			return false;
		r = imap_mime_header_search(m, 0, k->field, k->str,
					    strlen(k->str));
		if (r < 0)
			j->err = r;
		return r == 1;
	case IMAP_SK_BODY:
		m = content(j);
		if (m == NULL)
			return false;
		r = imap_mime_body_search(m, k->str, strlen(k->str));
		if (r < 0)
			j->err = r;
		return r == 1;
	case IMAP_SK_TEXT:
		m = content(j);
		if (m == NULL)
			return false;
		r = imap_mime_header_search(m, 0, NULL, k->str, strlen(k->str));
		if (r == 0)
			r = imap_mime_body_search(m, k->str, strlen(k->str));
		if (r < 0)
			j->err = r;
		return r == 1;
	}
	return false;
}

static int search_one(struct imap_sess *s, uint32_t seq,
		      const struct md_msg_info *mi, void *arg)
{
	struct search_job *j = arg;
	bool hit;

	j->seq = seq;
	j->mi = mi;
	j->loaded = false;
	hit = match(j, j->q->root);
	free(j->data);
	j->data = NULL;
	if (j->err != 0)
		return j->err;
	if (!hit)
		return 0;
	if (j->n == j->cap) {
		uint32_t ncap = j->cap != 0 ? j->cap * 2 : 256;
		uint32_t *p = realloc(j->hits, ncap * sizeof(*p));

		if (p == NULL)
			return -ENOMEM;
		j->hits = p;
		j->cap = ncap;
	}
	j->hits[j->n++] = s->uid ? mi->uid : seq;
	return 0;
}

/*
 * RETURN (SAVE ...): keep the result as UIDs. With MIN and/or MAX and
 * neither ALL nor COUNT, only those are kept (RFC 5182 2.1).
 */
static int save_result(struct imap_sess *s, const struct search_job *j,
		       unsigned r)
{
	uint32_t *u, n = 0;
	int ret;

	if (j->n == 0)
		return imap_mbox_save_result(s, NULL, 0);
	u = malloc(j->n * sizeof(*u));
	if (u == NULL) {
		ret = imap_mbox_save_result(s, NULL, 0);
		return ret < 0 ? ret : -ENOMEM;
	}
	if ((r & (IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX)) &&
	    !(r & (IMAP_SEARCH_RET_ALL | IMAP_SEARCH_RET_COUNT))) {
		if (r & IMAP_SEARCH_RET_MIN)
			u[n++] = j->hits[0];
		if ((r & IMAP_SEARCH_RET_MAX) && (n == 0 || j->n > 1))
			u[n++] = j->hits[j->n - 1];
	} else {
		memcpy(u, j->hits, j->n * sizeof(*u));
		n = j->n;
	}
	if (!s->uid)
		for (uint32_t i = 0; i < n; i++)
			u[i] = imap_mbox_uid(s, u[i]);
	ret = imap_mbox_save_result(s, u, n);
	free(u);
	return ret;
}

/* ESEARCH's ALL: a compact sequence set of the (ascending) hits. */
static void print_set(struct protstream *out, const uint32_t *v, uint32_t n)
{
	for (uint32_t i = 0; i < n;) {
		uint32_t e = i;

		while (e + 1 < n && v[e + 1] == v[e] + 1)
			e++;
		(void)prot_printf(out, "%s%" PRIu32, i ? "," : "", v[i]);
		if (e > i)
			(void)prot_printf(out, ":%" PRIu32, v[e]);
		i = e + 1;
	}
}

int cmd_search(struct imap_sess *s, const char *tag)
{
	struct protstream *out = s->c->out;
	struct search_job j = {0};
	struct imap_search q = {0};
	struct imap_seqset all;
	struct imap_arg *a;
	unsigned r;
	int ret;

	ret = imap_args(s, &a);
	if (ret < 0)
		return ret;
	ret = imap_parse_search(a, &s->pool, &q, &s->lx.err);
	if (ret == -ENOENT) {
		if ((q.ret & IMAP_SEARCH_RET_SAVE) &&
		    imap_mbox_save_result(s, NULL, 0) < 0) {
			/* emptying cannot fail */
		}
		/* s->lx.err carries the [BADCHARSET (...)] code. */
		imap_tagged(s, tag, "NO", "%s", s->lx.err);
		return 0;
	}
	if (ret < 0)
		return ret;
	j.s = s;
	j.q = &q;
	j.mb = imap_mbox_md(s);
	ret = imap_seqset_parse("1:*", &s->pool, &all, &s->lx.err);
	if (ret == 0)
		ret = imap_mbox_each(s, &all, false, search_one, &j, NULL);
	free(j.mime);
	r = q.ret != 0 ? q.ret : IMAP_SEARCH_RET_ALL;
	if (r & IMAP_SEARCH_RET_SAVE) {
		/* A failed SEARCH leaves "$" empty (RFC 5182 2.1). */
		int sr = ret == 0 ? save_result(s, &j, r)
				  : imap_mbox_save_result(s, NULL, 0);

		if (ret == 0)
			ret = sr;
	}
	if (ret == -ENOMEM || ret == -EIO) {
		free(j.hits);
		return ret;
	}
	if (ret < 0) {
		free(j.hits);
		imap_tagged(s, tag, "NO", "[SERVERBUG] SEARCH failed");
		return 0;
	}
	if ((q.esearch || imap_rev2(s)) && r != IMAP_SEARCH_RET_SAVE) {
		/* RETURN (SAVE) alone answers nothing but the tagged OK. */
		(void)prot_printf(out, "* ESEARCH (TAG \"%s\")%s", tag,
				  s->uid ? " UID" : "");
		if ((r & IMAP_SEARCH_RET_MIN) && j.n > 0)
			(void)prot_printf(out, " MIN %" PRIu32, j.hits[0]);
		if ((r & IMAP_SEARCH_RET_MAX) && j.n > 0)
			(void)prot_printf(out, " MAX %" PRIu32,
					  j.hits[j.n - 1]);
		if ((r & IMAP_SEARCH_RET_ALL) && j.n > 0) {
			(void)prot_puts(out, " ALL ");
			print_set(out, j.hits, j.n);
		}
		if (r & IMAP_SEARCH_RET_COUNT)
			(void)prot_printf(out, " COUNT %" PRIu32, j.n);
		(void)prot_puts(out, "\r\n");
	} else if (!q.esearch && !imap_rev2(s)) {
		(void)prot_puts(out, "* SEARCH");
		for (uint32_t i = 0; i < j.n; i++)
			(void)prot_printf(out, " %" PRIu32, j.hits[i]);
		(void)prot_puts(out, "\r\n");
	}
	free(j.hits);
	ret = imap_mbox_sync(s, s->uid);
	if (ret < 0)
		imap_tagged(s, tag, "NO", "[SERVERBUG] Mailbox error");
	else
		imap_tagged(s, tag, "OK", "SEARCH completed");
	return 0;
}
