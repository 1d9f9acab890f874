/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/imapd/store: STORE, COPY and MOVE on the selected mailbox
 * (RFC 3501 6.4.6-7, MOVE of RFC 6851, COPYUID of RFC 4315). STORE
 * collects the UIDs first and changes them one by one (each a rename in
 * cur/, mailbox.h), so a message another session removes meanwhile is
 * skipped, never an error; the FETCH FLAGS it answers are read back
 * from the store, not assumed.
 */
#include "mbox-int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <ringprot/prot.h>

/* -------------------------------------------------------------------- */
/* STORE */

enum store_mode {
	STORE_SET,
	STORE_ADD,
	STORE_DEL
};

struct store_job {
	enum store_mode mode;
	bool silent;
	unsigned md_flags;
	uint32_t kw; /* keyword bits */
	struct uid_list uids;
};

static int store_collect(struct imap_sess *s, uint32_t seq,
			 const struct md_msg_info *mi, void *arg)
{
	struct store_job *j = arg;

	return imap__collect_uid(s, seq, mi, &j->uids);
}

int cmd_store(struct imap_sess *s, const char *tag)
{
	struct imap_mbox *m = imap__mbox_of(s);
	struct store_job j = {0};
	struct imap_seqset set;
	struct imap_flags fl;
	struct imap_arg *a, *item, *flags;
	const char *it;
	size_t itlen;
	int ret;

	ret = imap_args(s, &a);
	if (ret < 0)
		return ret;
	if (ret < 3) {
		s->lx.err = "STORE takes a set, an item and flags";
		return -EPROTO;
	}
	ret = imap__set_arg(s, a, &set);
	if (ret < 0)
		return ret;
	item = a->next;
	flags = item->next;
	if (item->type != IMAP_ARG_ATOM) {
		s->lx.err = "STORE item expected";
		return -EPROTO;
	}
	it = item->str;
	if (*it == '+' || *it == '-') {
		j.mode = *it == '+' ? STORE_ADD : STORE_DEL;
		it++;
	}
	itlen = strlen(it);
	if (itlen >= 7 && strcasecmp(it + itlen - 7, ".SILENT") == 0) {
		j.silent = true;
		itlen -= 7;
	}
	if (itlen != 5 || strncasecmp(it, "FLAGS", 5) != 0) {
		s->lx.err = "STORE item must be [+-]FLAGS[.SILENT]";
		return -EPROTO;
	}
	/* "(\Seen)" or, after the item, flags without parentheses. */
	if (flags->type == IMAP_ARG_LIST && flags->next == NULL) {
		ret = imap_parse_flags(flags, false, &s->pool, &fl, &s->lx.err);
	} else {
		struct imap_arg list = {.type = IMAP_ARG_LIST, .child = flags};

		for (struct imap_arg *f = flags; f != NULL; f = f->next)
			list.count++;
		ret = imap_parse_flags(&list, true, &s->pool, &fl, &s->lx.err);
	}
	if (ret < 0)
		return ret;
	if (m->readonly) {
		imap_tagged(s, tag, "NO", "%s", imap__mbox_err(-EROFS));
		return 0;
	}
	j.md_flags = imap__md_flags(fl.sys);
	for (unsigned k = 0; k < fl.nkeywords; k++) {
		ret = md_mbox_keyword_index(m->mb, fl.keywords[k]);
		if (ret == -EINVAL) {
			s->lx.err = "invalid keyword";
			return -EPROTO;
		}
		if (ret < 0) {
			imap_tagged(s, tag, "NO", "%s",
				    ret == -ENOSPC ? "[LIMIT] Too many keywords"
						   : imap__mbox_err(ret));
			return 0;
		}
		j.kw |= 1U << ret;
	}
	ret = imap_mbox_each(s, &set, s->uid, store_collect, &j, NULL);
	for (uint32_t i = 0; ret == 0 && i < j.uids.n; i++) {
		static const enum md_store_op ops[] = {
			[STORE_SET] = MD_STORE_SET,
			[STORE_ADD] = MD_STORE_ADD,
			[STORE_DEL] = MD_STORE_REMOVE,
		};
		long k;

		/*
		 * +FLAGS and -FLAGS apply to the flags the file carries at
		 * the rename, not to this session's older view: two
		 * sessions adding different flags both keep theirs.
		 */
		ret = md_mbox_store_op(m->mb, j.uids.v[i], ops[j.mode],
				       j.md_flags, j.kw);
		if (ret == -ENOENT) {
			ret = 0; /* expunged elsewhere: skip */
			continue;
		}
		if (ret == 0 && !j.silent) {
			k = md_mbox_find(m->mb, j.uids.v[i]);
			if (k >= 0)
				imap__print_fetch_flags(
					s, imap__view_seq(m, j.uids.v[i]),
					&md_mbox_msgs(m->mb, &(size_t){0})[k],
					s->uid);
		}
	}
	free(j.uids.v);
	if (ret == -ENOMEM)
		return ret;
	if (ret == 0)
		ret = imap_mbox_sync(s, s->uid);
	if (ret < 0)
		imap_tagged(s, tag, "NO", "%s", imap__mbox_err(ret));
	else
		imap_tagged(s, tag, "OK", "STORE completed");
	return 0;
}

/* -------------------------------------------------------------------- */
/* COPY, MOVE */

/* "1:3,7" for the ascending uids (at most n entries) into out. */
static void print_uid_set(struct protstream *out, const uint32_t *v, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t j = i;

		while (j + 1 < n && v[j + 1] == v[j] + 1)
			j++;
		if (i > 0)
			(void)prot_putc(',', out);
		if (j == i)
			(void)prot_printf(out, "%" PRIu32, v[i]);
		else
			(void)prot_printf(out, "%" PRIu32 ":%" PRIu32, v[i],
					  v[j]);
		i = j + 1;
	}
}

/* COPYUID's sets: the source set sorted, the targets in its order. */
static bool run_of(const uint32_t *src, const uint32_t *dst, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (src[i] != src[i - 1] + 1 || dst[i] != dst[i - 1] + 1)
			return false;
	return true;
}

static void print_copyuid(struct imap_sess *s, const struct md_copy_result *r)
{
	struct protstream *out = s->c->out;

	(void)prot_printf(out, "[COPYUID %" PRIu32 " ", r->uidvalidity);
	if (run_of(r->src, r->dst, r->n)) {
		print_uid_set(out, r->src, r->n);
		(void)prot_putc(' ', out);
		print_uid_set(out, r->dst, r->n);
	} else {
		/* Sets as lists, pairwise in order (RFC 4315). */
		for (size_t i = 0; i < r->n; i++)
			(void)prot_printf(out, "%s%" PRIu32, i ? "," : "",
					  r->src[i]);
		(void)prot_putc(' ', out);
		for (size_t i = 0; i < r->n; i++)
			(void)prot_printf(out, "%s%" PRIu32, i ? "," : "",
					  r->dst[i]);
	}
	(void)prot_putc(']', out);
}

static int do_copy(struct imap_sess *s, const char *tag, bool move)
{
	struct imap_mbox *m = imap__mbox_of(s);
	struct md_copy_result r = {0};
	struct uid_list l = {0};
	struct imap_seqset set;
	struct imap_arg *a;
	const char *dest;
	int ret;

	ret = imap_args(s, &a);
	if (ret < 0)
		return ret;
	if (ret != 2) {
		s->lx.err = "takes a set and a mailbox name";
		return -EPROTO;
	}
	ret = imap__set_arg(s, a, &set);
	if (ret == 0)
		ret = imap_mbox_name_arg(s, a->next, &dest);
	if (ret < 0)
		return ret;
	if (move && m->readonly) {
		imap_tagged(s, tag, "NO", "%s", imap__mbox_err(-EROFS));
		return 0;
	}
	ret = imap_mbox_each(s, &set, s->uid, imap__collect_uid, &l, NULL);
	if (ret == 0 && l.n > 0)
		ret = md_mbox_copy(m->mb, l.v, l.n, dest, move, &r);
	free(l.v);
	if (ret == -ENOMEM)
		return ret;
	if (ret < 0) {
		md_copy_result_fini(&r);
		if (ret == -ENOENT)
			imap_tagged(s, tag, "NO",
				    "[TRYCREATE] No such mailbox");
		else
			imap_tagged(s, tag, "NO", "%s", imap__mbox_err(ret));
		return 0;
	}
	if (move) {
		/* RFC 6851: COPYUID untagged, then the EXPUNGEs. */
		if (r.n > 0) {
			(void)prot_puts(s->c->out, "* OK ");
			print_copyuid(s, &r);
			(void)prot_puts(s->c->out, " Moved\r\n");
		}
		imap__tell_expunges(s, m, r.src, (uint32_t)r.n);
	}
	ret = imap_mbox_sync(s, move || s->uid);
	if (ret < 0) {
		md_copy_result_fini(&r);
		imap_tagged(s, tag, "NO", "%s", imap__mbox_err(ret));
		return 0;
	}
	(void)prot_printf(s->c->out, "%s OK ", tag);
	if (!move && r.n > 0) {
		print_copyuid(s, &r);
		(void)prot_putc(' ', s->c->out);
	}
	(void)prot_printf(s->c->out, "%s completed\r\n",
			  move ? "MOVE" : "COPY");
	md_copy_result_fini(&r);
	return 0;
}

int cmd_copy(struct imap_sess *s, const char *tag)
{
	return do_copy(s, tag, false);
}

int cmd_move(struct imap_sess *s, const char *tag)
{
	return do_copy(s, tag, true);
}
