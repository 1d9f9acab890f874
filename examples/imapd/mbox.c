/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/imapd/mbox: the selected state. SELECT/EXAMINE open a
 * mailbox of the store (examples/maildir/mailbox.h) and start the
 * client's view (mbox.h says what a view is); CLOSE, UNSELECT, CHECK
 * and EXPUNGE work on it here, STORE, COPY and MOVE in store.c, IDLE in
 * idle.c.
 *
 * The view is an array of UIDs, ascending, one per sequence number.
 * Removals by others arrive from md_mbox_sync() as "vanished" UIDs; they
 * wait in pend[] until a command that may send EXPUNGE syncs, then each
 * is told ("* n EXPUNGE", highest first so that no number shifts under
 * the next) and leaves the view. New messages are appended (UIDs only
 * grow) and told with EXISTS. Flag changes by others are told as FETCH
 * FLAGS for the messages still in the view.
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

struct imap_mbox *imap__mbox_of(const struct imap_sess *s)
{
	return s->state == IMAP_STATE_SELECTED ? s->mbox : NULL;
}

uint32_t imap_mbox_exists(const struct imap_sess *s)
{
	const struct imap_mbox *m = imap__mbox_of(s);

	return m != NULL ? m->n : 0;
}

struct md_mbox *imap_mbox_md(const struct imap_sess *s)
{
	const struct imap_mbox *m = imap__mbox_of(s);

	return m != NULL ? m->mb : NULL;
}

uint32_t imap_mbox_uid(const struct imap_sess *s, uint32_t seq)
{
	const struct imap_mbox *m = imap__mbox_of(s);

	return m != NULL && seq >= 1 && seq <= m->n ? m->view[seq - 1] : 0;
}

const struct md_msg_info *imap_mbox_info(const struct imap_sess *s,
					 uint32_t seq)
{
	const struct imap_mbox *m = imap__mbox_of(s);
	const struct md_msg_info *msgs;
	size_t n;
	long i;

	if (m == NULL || seq < 1 || seq > m->n)
		return NULL;
	i = md_mbox_find(m->mb, m->view[seq - 1]);
	if (i < 0)
		return NULL;
	msgs = md_mbox_msgs(m->mb, &n);
	return &msgs[i];
}

/* Sequence number of uid in the view, 0 if absent. */
uint32_t imap__view_seq(const struct imap_mbox *m, uint32_t uid)
{
	uint32_t lo = 0, hi = m->n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (m->view[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < m->n && m->view[lo] == uid ? lo + 1 : 0;
}

int imap__grow(uint32_t **a, uint32_t *cap, uint32_t need)
{
	uint32_t ncap = *cap != 0 ? *cap : 64;
	uint32_t *p;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*a, (size_t)ncap * sizeof(**a));
	if (p == NULL)
		return -ENOMEM;
	*a = p;
	*cap = ncap;
	return 0;
}

/* -------------------------------------------------------------------- */
/* Flags */

static const struct {
	unsigned md;
	unsigned imap;
	const char *name;
} sysflags[] = {
	{MD_F_ANSWERED, IMAP_FLAG_ANSWERED, "\\Answered"},
	{MD_F_FLAGGED, IMAP_FLAG_FLAGGED, "\\Flagged"},
	{MD_F_DELETED, IMAP_FLAG_DELETED, "\\Deleted"},
	{MD_F_SEEN, IMAP_FLAG_SEEN, "\\Seen"},
	{MD_F_DRAFT, IMAP_FLAG_DRAFT, "\\Draft"},
};
#define NSYSFLAGS (sizeof(sysflags) / sizeof(sysflags[0]))

unsigned imap__md_flags(unsigned imap)
{
	unsigned md = 0;

	for (size_t i = 0; i < NSYSFLAGS; i++)
		if (imap & sysflags[i].imap)
			md |= sysflags[i].md;
	return md;
}

void imap_print_flags(struct imap_sess *s, const struct md_msg_info *mi)
{
	struct protstream *out = s->c->out;
	const struct imap_mbox *m = imap__mbox_of(s);
	bool first = true;

	(void)prot_putc('(', out);
	for (size_t i = 0; i < NSYSFLAGS; i++) {
		if (mi->flags & sysflags[i].md) {
			(void)prot_printf(out, "%s%s", first ? "" : " ",
					  sysflags[i].name);
			first = false;
		}
	}
	if ((mi->flags & MD_F_RECENT) && !imap_rev2(s)) {
		(void)prot_printf(out, "%s\\Recent", first ? "" : " ");
		first = false;
	}
	for (unsigned k = 0; m != NULL && k < MD_KW_MAX; k++) {
		const char *kw;

		if (!(mi->keywords & (1U << k)))
			continue;
		kw = md_mbox_keyword(m->mb, k);
		if (kw == NULL)
			continue;
		(void)prot_printf(out, "%s%s", first ? "" : " ", kw);
		first = false;
	}
	(void)prot_putc(')', out);
}

/* "FLAGS (...)" and "PERMANENTFLAGS (...)" lists of SELECT. */
static void print_flag_list(struct imap_sess *s, const struct imap_mbox *m,
			    bool permanent)
{
	struct protstream *out = s->c->out;

	(void)prot_puts(out, "(\\Answered \\Flagged \\Deleted \\Seen \\Draft");
	for (unsigned k = 0; k < md_mbox_keyword_count(m->mb); k++) {
		const char *kw = md_mbox_keyword(m->mb, k);

		if (kw != NULL)
			(void)prot_printf(out, " %s", kw);
	}
	if (permanent && md_mbox_keyword_count(m->mb) < MD_KW_MAX)
		(void)prot_puts(out, " \\*");
	(void)prot_putc(')', out);
}

void imap__print_fetch_flags(struct imap_sess *s, uint32_t seq,
			     const struct md_msg_info *mi, bool with_uid)
{
	(void)prot_printf(s->c->out, "* %" PRIu32 " FETCH (", seq);
	if (with_uid)
		(void)prot_printf(s->c->out, "UID %" PRIu32 " ", mi->uid);
	(void)prot_puts(s->c->out, "FLAGS ");
	imap_print_flags(s, mi);
	(void)prot_puts(s->c->out, ")\r\n");
}

/* -------------------------------------------------------------------- */
/* The view */

/* Tell and drop the pending removals, highest sequence number first. */
void imap__tell_expunges(struct imap_sess *s, struct imap_mbox *m,
			 const uint32_t *uids, uint32_t n)
{
	for (uint32_t i = n; i-- > 0;) {
		uint32_t seq = imap__view_seq(m, uids[i]);

		if (seq == 0)
			continue;
		imap_untagged(s, "%" PRIu32 " EXPUNGE", seq);
		memmove(&m->view[seq - 1], &m->view[seq],
			(size_t)(m->n - seq) * sizeof(m->view[0]));
		m->n--;
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static uint32_t count_recent(const struct imap_mbox *m)
{
	const struct md_msg_info *msgs;
	size_t n;
	uint32_t r = 0;

	msgs = md_mbox_msgs(m->mb, &n);
	for (size_t i = 0; i < n; i++)
		if (msgs[i].flags & MD_F_RECENT)
			r++;
	return r;
}

/*
 * Parked (IDLE), a session keeps as little as it can. A view whose
 * client was told everything (no pending expunge) holds the UIDs of the
 * store's list, which the handle keeps anyway: it is dropped then
 * (view_in_store, m->n kept) and made again from that list before the
 * store's next sync changes it. Otherwise it is cut to its size (grown
 * arrays are twice that, at least 64 entries).
 */
void imap__mbox_trim(struct imap_mbox *m)
{
	const struct md_msg_info *msgs;
	size_t n;
	uint32_t i = 0;

	if (m->npend == 0) {
		free(m->pend);
		m->pend = NULL;
		m->cappend = 0;
	}
	if (m->view_in_store)
		return;
	msgs = md_mbox_msgs(m->mb, &n);
	if (m->npend == 0 && n == m->n)
		while (i < m->n && m->view[i] == msgs[i].uid)
			i++;
	if (m->npend == 0 && n == m->n && i == m->n) {
		free(m->view);
		m->view = NULL;
		m->cap = 0;
		m->view_in_store = true;
	} else if (m->cap > m->n) {
		uint32_t *v = realloc(m->view, (size_t)m->n * sizeof(*v));

		if (v != NULL) { /* else keep the larger one */
			m->view = v;
			m->cap = m->n;
		}
	}
}

/* The view back from the store's list (see imap__mbox_trim). */
static int view_back(struct imap_mbox *m)
{
	const struct md_msg_info *msgs;
	size_t n;

	if (!m->view_in_store)
		return 0;
	msgs = md_mbox_msgs(m->mb, &n);
	if (n > 0) {
		m->view = malloc(n * sizeof(*m->view));
		if (m->view == NULL)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		m->view[i] = msgs[i].uid;
	m->n = m->cap = (uint32_t)n;
	m->view_in_store = false;
	return 0;
}

/* Tell the client what one sync of the store found. */
static int tell_changes(struct imap_sess *s, struct imap_mbox *m,
			const struct md_mbox_changes *ch, bool expunge_ok)
{
	uint32_t before;
	int ret;

	/* Flags others changed, for messages the client knows. */
	for (size_t i = 0; i < ch->n_flagged; i++) {
		uint32_t seq = imap__view_seq(m, ch->flagged[i]);
		long k = md_mbox_find(m->mb, ch->flagged[i]);

		if (seq != 0 && k >= 0)
			imap__print_fetch_flags(
				s, seq, &md_mbox_msgs(m->mb, &(size_t){0})[k],
				s->uid);
	}
	if (ch->n_vanished > 0) {
		ret = imap__grow(&m->pend, &m->cappend,
				 m->npend + (uint32_t)ch->n_vanished);
		if (ret < 0)
			return ret;
		memcpy(&m->pend[m->npend], ch->vanished,
		       ch->n_vanished * sizeof(uint32_t));
		m->npend += (uint32_t)ch->n_vanished;
		qsort(m->pend, m->npend, sizeof(uint32_t), cmp_u32);
	}
	if (expunge_ok && m->npend > 0) {
		imap__tell_expunges(s, m, m->pend, m->npend);
		m->npend = 0;
	}
	before = m->n;
	if (ch->n_added > 0) {
		ret = imap__grow(&m->view, &m->cap,
				 m->n + (uint32_t)ch->n_added);
		if (ret < 0)
			return ret;
		for (size_t i = 0; i < ch->n_added; i++) {
			uint32_t uid = ch->added[i];

			if (m->n > 0 && uid <= m->view[m->n - 1]) {
				/* Not expected (UIDs only imap__grow): keep the
				 * view sorted all the same. */
				if (imap__view_seq(m, uid) != 0)
					continue;
				m->view[m->n++] = uid;
				qsort(m->view, m->n, sizeof(uint32_t), cmp_u32);
				continue;
			}
			m->view[m->n++] = uid;
		}
	}
	/*
	 * RECENT goes with every EXISTS (as Dovecot sends it): a client
	 * that counted an expunged \Recent message may otherwise never
	 * hear the count change back.
	 */
	if (m->n != before || ch->n_added > 0) {
		m->recent_told = count_recent(m);
		imap_untagged(s, "%" PRIu32 " EXISTS", m->n);
		if (!imap_rev2(s))
			imap_untagged(s, "%" PRIu32 " RECENT", m->recent_told);
	}
	return 0;
}

static int uid_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

bool imap_mbox_in_set(const struct imap_sess *s, const struct imap_seqset *set,
		      bool uid, uint32_t seq)
{
	const struct imap_mbox *m = imap__mbox_of(s);
	uint32_t u;

	if (m == NULL || seq == 0 || seq > m->n)
		return false;
	u = m->view[seq - 1];
	if (set->dollar)
		return m->nsaved > 0 && bsearch(&u, m->saved, m->nsaved,
						sizeof(u), uid_cmp) != NULL;
	if (uid)
		return imap_seqset_contains(set, u, m->view[m->n - 1]);
	return imap_seqset_contains(set, seq, m->n);
}

int imap_mbox_save_result(struct imap_sess *s, const uint32_t *uids, uint32_t n)
{
	struct imap_mbox *m = imap__mbox_of(s);
	uint32_t *v = NULL;

	if (m == NULL)
		return 0;
	if (n > 0) {
		v = malloc(n * sizeof(*v));
		if (v == NULL)
			n = 0;
		else
			memcpy(v, uids, n * sizeof(*v));
	}
	free(m->saved);
	m->saved = v;
	m->nsaved = n;
	return v == NULL && n > 0 ? -ENOMEM : 0;
}

int imap_mbox_sync(struct imap_sess *s, bool expunge_ok)
{
	struct imap_mbox *m = imap__mbox_of(s);
	struct md_mbox_changes ch;
	int ret;

	if (m == NULL)
		return 0;
	ret = view_back(m);
	if (ret == 0)
		ret = md_mbox_sync(m->mb, &ch);
	if (ret < 0)
		return ret;
	return tell_changes(s, m, &ch, expunge_ok);
}

int imap__mbox_poll(struct imap_sess *s)
{
	struct imap_mbox *m = imap__mbox_of(s);
	struct md_mbox_changes ch;
	int ret;

	if (m == NULL)
		return 0;
	ret = view_back(m);
	if (ret == 0)
		ret = md_mbox_poll(m->mb, &ch);
	if (ret < 0)
		return ret;
	return tell_changes(s, m, &ch, true);
}

int imap_mbox_each(struct imap_sess *s, const struct imap_seqset *set, bool uid,
		   imap_each_fn *fn, void *arg, unsigned *ghosts_out)
{
	struct imap_mbox *m = imap__mbox_of(s);
	unsigned ghosts = 0;
	int ret = 0;

	if (ghosts_out != NULL)
		*ghosts_out = 0;
	if (m == NULL || m->n == 0)
		return 0;
	for (uint32_t seq = 1; seq <= m->n && ret == 0; seq++) {
		const struct md_msg_info *mi;

		if (!imap_mbox_in_set(s, set, uid, seq))
			continue;
		mi = imap_mbox_info(s, seq);
		if (mi == NULL) {
			ghosts++;
			continue;
		}
		ret = fn(s, seq, mi, arg);
	}
	if (ghosts_out != NULL)
		*ghosts_out = ghosts;
	return ret;
}

void imap_print_name(struct imap_sess *s, const char *name)
{
	if (imap_utf8_names(s)) {
		size_t size = strlen(name) * 4 + 8;
		char *u = imap_pool_alloc(&s->pool, size);

		if (u != NULL && imap_mutf7_to_utf8(name, u, size) >= 0) {
			(void)prot_printastring(s->c->out, u);
			return;
		}
	}
	(void)prot_printastring(s->c->out, name);
}

int imap_mbox_name_arg(struct imap_sess *s, const struct imap_arg *a,
		       const char **name_out)
{
	const char *name;

	if (!imap_arg_astring(a, &name)) {
		s->lx.err = "mailbox name expected";
		return -EPROTO;
	}
	/* In UTF-8 mode "&" is itself: every name is converted. */
	if (imap_utf8_names(s)) {
		size_t size = strlen(name) * 3 + 8;
		char *out = imap_pool_alloc(&s->pool, size);

		if (out == NULL || imap_utf8_to_mutf7(name, out, size) < 0) {
			s->lx.err = "invalid UTF-8 in mailbox name";
			return -EPROTO;
		}
		name = out;
	}
	if (!imap_mutf7_valid(name)) {
		s->lx.err = "mailbox name is not valid modified UTF-7";
		return -EPROTO;
	}
	*name_out = name;
	return 0;
}

/* -------------------------------------------------------------------- */
/* SELECT, EXAMINE, CLOSE, UNSELECT, CHECK */

void imap__watch_stop(struct imap_sess *s, struct imap_mbox *m)
{
	if (m->watching) {
		md_watch_del(s->cfg->watch, &m->watch);
		m->watching = false;
	}
}

/*
 * One record per session, made in the connection's arena at the first
 * SELECT (or IDLE) and reused by the next: connection-lifetime memory
 * without a malloc block (and its header) of its own, which a parked
 * IDLE would keep for hours.
 */
struct imap_mbox *imap__mbox_new(struct imap_sess *s)
{
	struct imap_mbox *m = s->mbox_rec;

	if (m == NULL) {
		m = srv_conn_alloc(s->c, sizeof(*m));
		if (m == NULL)
			return NULL;
		s->mbox_rec = m;
	}
	memset(m, 0, sizeof(*m));
	return m;
}

void imap__mbox_free(struct imap_sess *s)
{
	struct imap_mbox *m = s->mbox;

	if (m == NULL)
		return;
	imap__watch_stop(s, m);
	md_mbox_close(&m->mb);
	free(m->view);
	free(m->pend);
	free(m->saved);
	memset(m, 0, sizeof(*m)); /* the record stays: s->mbox_rec */
	s->mbox = NULL;
	s->mbox_close = NULL;
}

void imap_mbox_unselect(struct imap_sess *s)
{
	imap__mbox_free(s);
	if (s->state == IMAP_STATE_SELECTED)
		s->state = IMAP_STATE_AUTH;
}

/* The NO text for a store error on a mailbox. */
const char *imap__mbox_err(int err)
{
	switch (err) {
	case -ENOENT:
		return "[NONEXISTENT] No such mailbox";
	case -EEXIST:
		return "[ALREADYEXISTS] Mailbox already exists";
	case -EINVAL:
		return "[CANNOT] Invalid mailbox name";
	case -EPERM:
		return "[CANNOT] Not allowed on this mailbox";
	case -EROFS:
		return "[READ-ONLY] Mailbox is read-only";
	case -ETIMEDOUT:
		return "[INUSE] Mailbox is locked, try again";
	case -ENOSPC:
	case -EDQUOT:
		return "[OVERQUOTA] Out of space";
	case -EFBIG:
		return "[TOOBIG] Message too big";
	default:
		return "[SERVERBUG] Mailbox error";
	}
}

static int do_select(struct imap_sess *s, const char *tag, bool readonly)
{
	struct imap_arg *a;
	struct imap_mbox *m;
	const char *name;
	const struct md_msg_info *msgs;
	struct md_mbox *prev = NULL;
	size_t n;
	uint32_t unseen = 0;
	int ret;

	ret = imap_args(s, &a);
	if (ret < 0)
		return ret;
	if (ret != 1) {
		s->lx.err = "SELECT takes one mailbox name";
		return -EPROTO;
	}
	ret = imap_mbox_name_arg(s, a, &name);
	if (ret < 0)
		return ret;
	/* RFC 3501 6.3.1: a failed SELECT leaves no mailbox selected;
	 * IMAP4rev2 says so (RFC 9051 7.1: CLOSED). */
	if (imap__mbox_of(s) != NULL && imap_rev2(s))
		imap_untagged(s, "OK [CLOSED] Previous mailbox closed");
	/* The old handle stays open until the new one is: on the same
	 * folder, the new one takes its list instead of listing (mailbox.h,
	 * md_mbox_open: the thread's handles share). */
	if (s->mbox != NULL) {
		struct imap_mbox *old = s->mbox;

		prev = old->mb;
		old->mb = NULL;
	}
	imap_mbox_unselect(s);
	m = imap__mbox_new(s);
	if (m == NULL) {
		md_mbox_close(&prev);
		return -ENOMEM;
	}
	m->readonly = readonly;
	ret = md_mbox_open(s->cfg->store, s->user, name, readonly, &m->mb);
	md_mbox_close(&prev);
	if (ret < 0) {
		imap_tagged(s, tag, "NO", "%s", imap__mbox_err(ret));
		return 0;
	}
	msgs = md_mbox_msgs(m->mb, &n);
	ret = imap__grow(&m->view, &m->cap, (uint32_t)n);
	if (ret < 0) {
		md_mbox_close(&m->mb);
		return ret;
	}
	for (size_t i = 0; i < n; i++) {
		m->view[i] = msgs[i].uid;
		if (unseen == 0 && !(msgs[i].flags & MD_F_SEEN))
			unseen = (uint32_t)i + 1;
	}
	m->n = (uint32_t)n;
	s->mbox = m;
	s->mbox_close = imap__mbox_free;
	s->state = IMAP_STATE_SELECTED;
	m->recent_told = count_recent(m);

	(void)prot_puts(s->c->out, "* FLAGS ");
	print_flag_list(s, m, false);
	(void)prot_puts(s->c->out, "\r\n* OK [PERMANENTFLAGS ");
	if (readonly)
		(void)prot_puts(s->c->out, "()");
	else
		print_flag_list(s, m, true);
	(void)prot_puts(s->c->out, "] Flags permitted\r\n");
	imap_untagged(s, "%" PRIu32 " EXISTS", m->n);
	if (imap_rev2(s)) {
		/* RFC 9051 6.3.2: the name as the server has it. */
		(void)prot_puts(s->c->out, "* LIST () \".\" ");
		const char *have = md_mbox_name(m->mb);

		imap_print_name(s, md_mbox_is_inbox(have) ? "INBOX" : have);
		(void)prot_puts(s->c->out, "\r\n");
	} else {
		imap_untagged(s, "%" PRIu32 " RECENT", m->recent_told);
	}
	if (unseen != 0)
		imap_untagged(s, "OK [UNSEEN %" PRIu32 "] First unseen",
			      unseen);
	imap_untagged(s, "OK [UIDVALIDITY %" PRIu32 "] UIDs valid",
		      md_mbox_uidvalidity(m->mb));
	imap_untagged(s, "OK [UIDNEXT %" PRIu32 "] Predicted next UID",
		      md_mbox_uidnext(m->mb));
	imap_tagged(s, tag, "OK", "[%s] %s completed",
		    readonly ? "READ-ONLY" : "READ-WRITE",
		    readonly ? "EXAMINE" : "SELECT");
	return 0;
}

int cmd_select(struct imap_sess *s, const char *tag)
{
	return do_select(s, tag, false);
}

int cmd_examine(struct imap_sess *s, const char *tag)
{
	return do_select(s, tag, true);
}

int imap__no_args(struct imap_sess *s)
{
	struct imap_arg *a;
	int ret = imap_args(s, &a);

	if (ret > 0) {
		s->lx.err = "unexpected arguments";
		return -EPROTO;
	}
	return ret;
}

int cmd_close(struct imap_sess *s, const char *tag)
{
	struct imap_mbox *m = imap__mbox_of(s);
	uint32_t *gone = NULL;
	size_t ngone = 0;
	int ret = imap__no_args(s);

	if (ret < 0)
		return ret;
	/* RFC 3501 6.4.2: expunge silently, unless read-only. */
	if (m != NULL && !m->readonly &&
	    md_mbox_expunge(m->mb, NULL, 0, &gone, &ngone) < 0) {
		/* CLOSE still closes; the messages stay \Deleted */
	}
	free(gone);
	imap_mbox_unselect(s);
	imap_tagged(s, tag, "OK", "CLOSE completed");
	return 0;
}

int cmd_unselect(struct imap_sess *s, const char *tag)
{
	int ret = imap__no_args(s);

	if (ret < 0)
		return ret;
	imap_mbox_unselect(s);
	imap_tagged(s, tag, "OK", "UNSELECT completed");
	return 0;
}

int cmd_check(struct imap_sess *s, const char *tag)
{
	int ret = imap__no_args(s);

	if (ret < 0)
		return ret;
	ret = imap_mbox_sync(s, true);
	if (ret < 0)
		imap_tagged(s, tag, "NO", "%s", imap__mbox_err(ret));
	else
		imap_tagged(s, tag, "OK", "CHECK completed");
	return 0;
}

/* -------------------------------------------------------------------- */
/* EXPUNGE, UID EXPUNGE */

int imap__collect_uid(struct imap_sess *s, uint32_t seq,
		      const struct md_msg_info *mi, void *arg)
{
	struct uid_list *l = arg;

	(void)s;
	(void)seq;
	if (imap__grow(&l->v, &l->cap, l->n + 1) < 0)
		return -ENOMEM;
	l->v[l->n++] = mi->uid;
	return 0;
}

/* The sequence set argument a as a set (s->lx.err on error). */
int imap__set_arg(struct imap_sess *s, const struct imap_arg *a,
		  struct imap_seqset *set)
{
	if (a == NULL || a->type != IMAP_ARG_ATOM) {
		s->lx.err = "sequence set expected";
		return -EPROTO;
	}
	return imap_seqset_parse(a->str, &s->pool, set, &s->lx.err);
}

int cmd_expunge(struct imap_sess *s, const char *tag)
{
	struct imap_mbox *m = imap__mbox_of(s);
	struct uid_list l = {0};
	struct imap_seqset set;
	struct imap_arg *a;
	uint32_t *gone = NULL;
	size_t ngone = 0;
	int ret;

	ret = imap_args(s, &a);
	if (ret < 0)
		return ret;
	if (ret != (s->uid ? 1 : 0)) {
		s->lx.err = s->uid ? "UID EXPUNGE takes a UID set"
				   : "EXPUNGE takes no arguments";
		return -EPROTO;
	}
	if (s->uid) {
		ret = imap__set_arg(s, a, &set);
		if (ret < 0)
			return ret;
		ret = imap_mbox_each(s, &set, true, imap__collect_uid, &l,
				     NULL);
		if (ret < 0) {
			free(l.v);
			return ret;
		}
	}
	if (m->readonly) {
		free(l.v);
		imap_tagged(s, tag, "NO", "%s", imap__mbox_err(-EROFS));
		return 0;
	}
	if (!s->uid || l.n > 0)
		ret = md_mbox_expunge(m->mb, s->uid ? l.v : NULL, l.n, &gone,
				      &ngone);
	free(l.v);
	if (ret < 0) {
		imap_tagged(s, tag, "NO", "%s", imap__mbox_err(ret));
		return 0;
	}
	imap__tell_expunges(s, m, gone, (uint32_t)ngone);
	free(gone);
	ret = imap_mbox_sync(s, true);
	if (ret < 0)
		imap_tagged(s, tag, "NO", "%s", imap__mbox_err(ret));
	else
		imap_tagged(s, tag, "OK", "EXPUNGE completed");
	return 0;
}
