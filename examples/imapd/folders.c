/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/imapd/folders: the commands on mailboxes by name (RFC 3501
 * 6.3): LIST (with LIST-EXTENDED's selection and return options,
 * RFC 5258, and SPECIAL-USE attributes, RFC 6154), LSUB, CREATE,
 * DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, STATUS (with SIZE, RFC 8438)
 * and APPEND (with MULTIAPPEND, RFC 3502, and APPENDUID, RFC 4315).
 *
 * Names travel as the client sent them (modified UTF-7), and are
 * stored as such (mailbox.h); with UTF8=ACCEPT enabled they are taken
 * and sent as UTF-8 (RFC 6855) and converted at the edge.
 *
 * APPEND reads the message straight from the stream into the store's
 * tmp/ file in pieces (the literal is never held whole in memory), and
 * only a complete, synced message is renamed into cur/: a client that
 * vanishes mid-literal leaves nothing (md_append_abort).
 */
#include "mbox-int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ringprot/prot.h>

#define APPEND_CHUNK	  16384
#define LIST_PATTERNS_MAX 32

/* -------------------------------------------------------------------- */
/* LIST, LSUB */

/*
 * Does name match pattern ('*' anything, '%' anything but the
 * separator)? INBOX matches case-insensitively as the name's first
 * level.
 */
static bool wild_match(const char *p, const char *n)
{
	for (;;) {
		switch (*p) {
		case '\0':
			return *n == '\0';
		case '*':
			for (;; n++) {
				if (wild_match(p + 1, n))
					return true;
				if (*n == '\0')
					return false;
			}
		case '%':
			for (;; n++) {
				if (wild_match(p + 1, n))
					return true;
				if (*n == '\0' || *n == '.')
					return false;
			}
		default:
			if (*p != *n)
				return false;
			p++;
			n++;
		}
	}
}

static bool name_match(const char *pattern, const char *name)
{
	/* "inbox" in any case names INBOX, in patterns too. */
	if (md_mbox_is_inbox(name) && strncasecmp(pattern, "INBOX", 5) == 0 &&
	    (pattern[5] == '\0' || pattern[5] == '*' || pattern[5] == '%'))
		return wild_match(pattern + 5, name + 5);
	return wild_match(pattern, name);
}

static bool subscribed(char **subs, size_t nsubs, const char *name)
{
	for (size_t i = 0; i < nsubs; i++)
		if (strcmp(subs[i], name) == 0 ||
		    (md_mbox_is_inbox(name) && md_mbox_is_inbox(subs[i])))
			return true;
	return false;
}

static void print_attrs(struct imap_sess *s, unsigned attrs, bool children)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {
		{MD_ATTR_NOSELECT, "\\Noselect"},
		{MD_ATTR_HASCHILDREN, "\\HasChildren"},
		{MD_ATTR_HASNOCHILDREN, "\\HasNoChildren"},
		{MD_ATTR_SUBSCRIBED, "\\Subscribed"},
		{MD_ATTR_SENT, "\\Sent"},
		{MD_ATTR_DRAFTS, "\\Drafts"},
		{MD_ATTR_TRASH, "\\Trash"},
		{MD_ATTR_JUNK, "\\Junk"},
	};
	bool first = true;

	(void)prot_putc('(', s->c->out);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!(attrs & names[i].bit))
			continue;
		if (!children && (names[i].bit & (MD_ATTR_HASCHILDREN |
						  MD_ATTR_HASNOCHILDREN)))
			continue;
		(void)prot_printf(s->c->out, "%s%s", first ? "" : " ",
				  names[i].name);
		first = false;
	}
	(void)prot_putc(')', s->c->out);
}

enum {
	SEL_SUBSCRIBED = 1u << 0,
	SEL_SPECIAL_USE = 1u << 1,
	RET_SUBSCRIBED = 1u << 2,
	RET_CHILDREN = 1u << 3,
	RET_SPECIAL_USE = 1u << 4,
	RET_STATUS = 1u << 5,
};

static int status_want(struct imap_sess *s, const struct imap_arg *list,
		       unsigned *want) RINGPROT_MUST_CHECK;
static int print_status(struct imap_sess *s, const char *name,
			unsigned want) UR_MAY_YIELD;

/* LIST's selection or return options; *status_out: RETURN (STATUS (x)). */
static int list_opts(struct imap_sess *s, const struct imap_arg *l,
		     bool ret_opts, unsigned *opts, unsigned *status_out)
{
	for (const struct imap_arg *o = l->child; o != NULL; o = o->next) {
		if (o->type != IMAP_ARG_ATOM)
			goto bad;
		if (ret_opts && imap_arg_is_atom(o, "STATUS") &&
		    o->next != NULL && o->next->type == IMAP_ARG_LIST) {
			o = o->next;
			if (status_want(s, o, status_out) < 0)
				return -EPROTO;
			*opts |= RET_STATUS;
			continue;
		}
		if (!ret_opts && imap_arg_is_atom(o, "SUBSCRIBED"))
			*opts |= SEL_SUBSCRIBED | RET_SUBSCRIBED;
		else if (!ret_opts && imap_arg_is_atom(o, "SPECIAL-USE"))
			*opts |= SEL_SPECIAL_USE;
		else if (!ret_opts && (imap_arg_is_atom(o, "REMOTE") ||
				       imap_arg_is_atom(o, "RECURSIVEMATCH")))
			continue; /* no remote mailboxes; matches as is */
		else if (ret_opts && imap_arg_is_atom(o, "SUBSCRIBED"))
			*opts |= RET_SUBSCRIBED;
		else if (ret_opts && imap_arg_is_atom(o, "CHILDREN"))
			*opts |= RET_CHILDREN;
		else if (ret_opts && imap_arg_is_atom(o, "SPECIAL-USE"))
			*opts |= RET_SPECIAL_USE;
		else
			goto bad;
	}
	return 0;
bad:
	s->lx.err = "Unknown LIST option";
	return -EPROTO;
}

/* The canonical pattern: reference and pattern joined (RFC 3501 6.3.8). */
static const char *join_pattern(struct imap_sess *s, const char *ref,
				const char *pat)
{
	size_t rl = strlen(ref), pl = strlen(pat);
	char *p;

	if (rl == 0 || pat[0] == '.')
		return pat;
	p = imap_pool_alloc(&s->pool, rl + pl + 1);
	if (p == NULL)
		return NULL;
	memcpy(p, ref, rl);
	memcpy(p + rl, pat, pl + 1);
	return p;
}

/* list-mailbox: an astring, or an atom with '%' and '*' in it. */
static bool pattern_arg(const struct imap_arg *a, const char **out)
{
	if (a->type == IMAP_ARG_ATOM) {
		*out = a->str;
		return true;
	}
	return imap_arg_astring(a, out);
}

static int do_list(struct imap_sess *s, const char *tag, bool lsub)
{
	const char *pats[LIST_PATTERNS_MAX], *ref;
	struct md_folder_info *fl = NULL;
	char **subs = NULL;
	size_t nfl = 0, nsubs = 0;
	unsigned opts = lsub ? SEL_SUBSCRIBED : RET_CHILDREN;
	unsigned npats = 0, status = 0;
	struct imap_arg *a;
	int ret;

	ret = imap_args(s, &a);
	if (ret < 0)
		return ret;
	/* LIST-EXTENDED: LIST (sel) ref pats RETURN (ret) */
	if (!lsub && a != NULL && a->type == IMAP_ARG_LIST) {
		ret = list_opts(s, a, false, &opts, &status);
		if (ret < 0)
			return ret;
		a = a->next;
	}
	if (a == NULL || a->next == NULL || !imap_arg_astring(a, &ref)) {
		s->lx.err = "reference and pattern expected";
		return -EPROTO;
	}
	a = a->next;
	if (!lsub && a->type == IMAP_ARG_LIST) {
		for (const struct imap_arg *p = a->child; p != NULL;
		     p = p->next) {
			if (npats == LIST_PATTERNS_MAX ||
			    !pattern_arg(p, &pats[npats])) {
				s->lx.err = "bad pattern list";
				return -EPROTO;
			}
			npats++;
		}
	} else if (pattern_arg(a, &pats[0])) {
		npats = 1;
	} else {
		s->lx.err = "pattern expected";
		return -EPROTO;
	}
	a = a->next;
	if (!lsub && a != NULL && imap_arg_is_atom(a, "RETURN") &&
	    a->next != NULL && a->next->type == IMAP_ARG_LIST) {
		opts &= ~(unsigned)RET_CHILDREN;
		ret = list_opts(s, a->next, true, &opts, &status);
		if (ret < 0)
			return ret;
		opts |= RET_CHILDREN; /* we know them anyway: always sent */
		a = a->next->next;
	}
	if (a != NULL) {
		s->lx.err = "unexpected LIST arguments";
		return -EPROTO;
	}
	/* LIST "" "": the hierarchy delimiter and root. */
	if (npats == 1 && pats[0][0] == '\0') {
		imap_untagged(s, "%s (\\Noselect) \".\" \"\"",
			      lsub ? "LSUB" : "LIST");
		imap_tagged(s, tag, "OK", "%s completed",
			    lsub ? "LSUB" : "LIST");
		return 0;
	}
	for (unsigned i = 0; i < npats; i++) {
		pats[i] = join_pattern(s, ref, pats[i]);
		if (pats[i] == NULL)
			return -ENOMEM;
		/* Names are stored in mUTF-7 ('%' and '*' pass as is). */
		if (imap_utf8_names(s)) {
			size_t size = strlen(pats[i]) * 3 + 8;
			char *m = imap_pool_alloc(&s->pool, size);

			if (m == NULL ||
			    imap_utf8_to_mutf7(pats[i], m, size) < 0) {
				s->lx.err = "invalid UTF-8 in pattern";
				return -EPROTO;
			}
			pats[i] = m;
		}
	}
	ret = md_folder_list(s->cfg->store, s->user, &fl, &nfl);
	if (ret == 0 && (opts & (SEL_SUBSCRIBED | RET_SUBSCRIBED)))
		ret = md_subscriptions(s->cfg->store, s->user, &subs, &nsubs);
	if (ret < 0) {
		md_folder_list_free(&fl, nfl);
		imap_tagged(s, tag, "NO", "%s", imap__mbox_err(ret));
		return 0;
	}
	for (size_t i = 0; i < nfl; i++) {
		unsigned attrs = fl[i].attrs;
		bool hit = false;

		for (unsigned p = 0; p < npats && !hit; p++)
			hit = name_match(pats[p], fl[i].name);
		if (!hit)
			continue;
		if (subs != NULL && subscribed(subs, nsubs, fl[i].name))
			attrs |= MD_ATTR_SUBSCRIBED;
		if ((opts & SEL_SUBSCRIBED) && !(attrs & MD_ATTR_SUBSCRIBED))
			continue;
		if ((opts & SEL_SPECIAL_USE) &&
		    !(attrs & (MD_ATTR_SENT | MD_ATTR_DRAFTS | MD_ATTR_TRASH |
			       MD_ATTR_JUNK)))
			continue;
		if (!(opts & RET_SUBSCRIBED) || lsub)
			attrs &= ~(unsigned)MD_ATTR_SUBSCRIBED;
		(void)prot_printf(s->c->out, "* %s ", lsub ? "LSUB" : "LIST");
		print_attrs(s, attrs, !lsub);
		(void)prot_puts(s->c->out, " \".\" ");
		imap_print_name(s, fl[i].name);
		(void)prot_puts(s->c->out, "\r\n");
		/* RFC 5819: STATUS of each selectable one listed; a
		 * mailbox that vanished meanwhile just gets none. */
		if ((opts & RET_STATUS) && !(attrs & MD_ATTR_NOSELECT) &&
		    print_status(s, fl[i].name, status) < 0) {
			/* see above */
		}
	}
	md_folder_list_free(&fl, nfl);
	md_strv_free(&subs, nsubs);
	ret = imap_mbox_sync(s, true);
	imap_tagged(s, tag, ret < 0 ? "NO" : "OK", "%s completed",
		    lsub ? "LSUB" : "LIST");
	return 0;
}

int cmd_list(struct imap_sess *s, const char *tag)
{
	return do_list(s, tag, false);
}

int cmd_lsub(struct imap_sess *s, const char *tag)
{
	return do_list(s, tag, true);
}

/* -------------------------------------------------------------------- */
/* CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE */

/* One mailbox name argument (and nothing else). */
static int one_name(struct imap_sess *s, const char **name)
{
	struct imap_arg *a;
	int ret = imap_args(s, &a);

	if (ret < 0)
		return ret;
	if (ret != 1) {
		s->lx.err = "one mailbox name expected";
		return -EPROTO;
	}
	return imap_mbox_name_arg(s, a, name);
}

static void reply(struct imap_sess *s, const char *tag, int ret,
		  const char *what)
{
	if (ret < 0)
		imap_tagged(s, tag, "NO", "%s", imap__mbox_err(ret));
	else
		imap_tagged(s, tag, "OK", "%s completed", what);
}

int cmd_create(struct imap_sess *s, const char *tag)
{
	const char *name;
	char *n;
	size_t len;
	int ret = one_name(s, &name);

	if (ret < 0)
		return ret;
	/* "Foo." asks for a name under which others will be made. */
	len = strlen(name);
	n = imap_pool_alloc(&s->pool, len + 1);
	if (n == NULL)
		return -ENOMEM;
	memcpy(n, name, len + 1);
	if (len > 1 && n[len - 1] == '.')
		n[len - 1] = '\0';
	ret = md_mbox_is_inbox(n) ? -EEXIST
				  : md_folder_create(s->cfg->store, s->user, n);
	reply(s, tag, ret, "CREATE");
	return 0;
}

int cmd_delete(struct imap_sess *s, const char *tag)
{
	const char *name;
	int ret = one_name(s, &name);

	if (ret < 0)
		return ret;
	ret = md_folder_delete(s->cfg->store, s->user, name);
	reply(s, tag, ret, "DELETE");
	return 0;
}

int cmd_rename(struct imap_sess *s, const char *tag)
{
	const char *from, *to;
	struct imap_arg *a;
	int ret = imap_args(s, &a);

	if (ret < 0)
		return ret;
	if (ret != 2) {
		s->lx.err = "RENAME takes two mailbox names";
		return -EPROTO;
	}
	ret = imap_mbox_name_arg(s, a, &from);
	if (ret == 0)
		ret = imap_mbox_name_arg(s, a->next, &to);
	if (ret < 0)
		return ret;
	ret = md_folder_rename(s->cfg->store, s->user, from, to);
	reply(s, tag, ret, "RENAME");
	return 0;
}

static int do_subscribe(struct imap_sess *s, const char *tag, bool on)
{
	const char *name;
	int ret = one_name(s, &name);

	if (ret < 0)
		return ret;
	ret = md_subscribe(s->cfg->store, s->user, name, on);
	reply(s, tag, ret, on ? "SUBSCRIBE" : "UNSUBSCRIBE");
	return 0;
}

int cmd_subscribe(struct imap_sess *s, const char *tag)
{
	return do_subscribe(s, tag, true);
}

int cmd_unsubscribe(struct imap_sess *s, const char *tag)
{
	return do_subscribe(s, tag, false);
}

/* -------------------------------------------------------------------- */
/* STATUS (and LIST's RETURN (STATUS ...), RFC 5819) */

static const char *const status_items[] = {"MESSAGES",	  "RECENT", "UIDNEXT",
					   "UIDVALIDITY", "UNSEEN", "SIZE",
					   "DELETED"};
#define N_STATUS_ITEMS (sizeof(status_items) / sizeof(status_items[0]))

/* The items of a STATUS list as bits of status_items: 0 or -EPROTO. */
static int status_want(struct imap_sess *s, const struct imap_arg *list,
		       unsigned *want)
{
	*want = 0;
	for (const struct imap_arg *i = list->child; i != NULL; i = i->next) {
		size_t k = 0;

		while (k < N_STATUS_ITEMS &&
		       !imap_arg_is_atom(i, status_items[k]))
			k++;
		if (k == N_STATUS_ITEMS) {
			s->lx.err = "Unknown STATUS item";
			return -EPROTO;
		}
		*want |= 1u << k;
	}
	if (*want == 0) {
		s->lx.err = "STATUS needs at least one item";
		return -EPROTO;
	}
	return 0;
}

/* "* STATUS name (items)" of name: 0 or the store's -errno. */
static int print_status(struct imap_sess *s, const char *name, unsigned want)
{
	struct md_status st;
	bool first = true;
	int ret = md_folder_status(s->cfg->store, s->user, name, &st);

	if (ret < 0)
		return ret;
	(void)prot_puts(s->c->out, "* STATUS ");
	imap_print_name(s, name);
	(void)prot_puts(s->c->out, " (");
	for (unsigned k = 0; k < N_STATUS_ITEMS; k++) {
		const uint64_t v[N_STATUS_ITEMS] = {
			st.messages, st.recent, st.uidnext, st.uidvalidity,
			st.unseen,   st.size,	st.deleted};

		if (!(want & (1u << k)))
			continue;
		(void)prot_printf(s->c->out, "%s%s %" PRIu64, first ? "" : " ",
				  status_items[k], v[k]);
		first = false;
	}
	(void)prot_puts(s->c->out, ")\r\n");
	return 0;
}

int cmd_status(struct imap_sess *s, const char *tag)
{
	struct imap_arg *a;
	const char *name;
	unsigned want = 0;
	int ret;

	ret = imap_args(s, &a);
	if (ret < 0)
		return ret;
	if (ret != 2 || a->next->type != IMAP_ARG_LIST) {
		s->lx.err = "STATUS takes a mailbox and a list of items";
		return -EPROTO;
	}
	ret = imap_mbox_name_arg(s, a, &name);
	if (ret == 0)
		ret = status_want(s, a->next, &want);
	if (ret < 0)
		return ret;
	ret = print_status(s, name, want);
	if (ret < 0) {
		imap_tagged(s, tag, "NO", "%s", imap__mbox_err(ret));
		return 0;
	}
	ret = imap_mbox_sync(s, true);
	imap_tagged(s, tag, ret < 0 ? "NO" : "OK", "STATUS completed");
	return 0;
}

/* -------------------------------------------------------------------- */
/* APPEND */

/*
 * Read the literal's n bytes from the stream into ap (NULL: drop them).
 * 0, or -ENOTCONN when the client went away, -EILSEQ for a NUL byte, or
 * the store's error (the rest of the literal is still read, so the
 * session stays in step). A stored message never holds a NUL: FETCH
 * sends BODY[] in ordinary literals, which may not carry one (RFC 3501
 * CHAR8), so binary content is refused as RFC 3516 allows
 * (UNKNOWN-CTE) rather than stored and sent wrong later.
 */
static int take_literal(struct imap_sess *s, struct md_append *ap, uint64_t n)
{
	char buf[APPEND_CHUNK];
	int err = 0;

	while (n > 0) {
		int got =
			prot_read(s->c->in, buf,
				  n < sizeof(buf) ? (int)n : (int)sizeof(buf));

		if (got <= 0)
			return -ENOTCONN;
		n -= (uint64_t)got;
		if (err == 0 && memchr(buf, '\0', (size_t)got) != NULL)
			err = -EILSEQ;
		if (ap != NULL && err == 0)
			err = md_append_write(ap, buf, (size_t)got);
	}
	return err;
}

struct append_uids {
	uint32_t uidvalidity;
	uint32_t *v;
	size_t n;
};

/* One message: [flags] [date] literal. a: the arguments before it. */
static int append_one(struct imap_sess *s, const char *name, struct imap_arg *a,
		      struct append_uids *u, int *store_err)
{
	struct imap_flags fl = {0};
	const char **kw = NULL;
	struct md_append *ap = NULL;
	int64_t date = 0;
	int zone, ret;
	uint32_t uid, uv;

	if (a != NULL && a->type == IMAP_ARG_LIST) {
		ret = imap_parse_flags(a, false, &s->pool, &fl, &s->lx.err);
		if (ret < 0)
			return ret;
		a = a->next;
	}
	if (a != NULL && (a->type == IMAP_ARG_STRING)) {
		if (imap_parse_datetime(a->str, &date, &zone) < 0) {
			s->lx.err = "Invalid date-time";
			return -EPROTO;
		}
		a = a->next;
	}
	if (a == NULL || a->type != IMAP_ARG_LITERAL_SIZE || a->next != NULL) {
		s->lx.err = "APPEND needs a literal message";
		return -EPROTO;
	}
	if (*store_err == 0) {
		*store_err = md_append_begin(s->cfg->store, s->user, name, &ap);
		if (*store_err < 0)
			ap = NULL;
	}
	ret = take_literal(s, ap, a->len);
	if (ret == -ENOTCONN) {
		md_append_abort(&ap);
		return ret;
	}
	if (ret < 0 && *store_err == 0)
		*store_err = ret;
	if (ap == NULL)
		return 0;
	if (*store_err < 0) {
		md_append_abort(&ap);
		return 0;
	}
	if (fl.nkeywords > 0)
		kw = fl.keywords;
	{
		unsigned md = 0;

		if (fl.sys & IMAP_FLAG_SEEN)
			md |= MD_F_SEEN;
		if (fl.sys & IMAP_FLAG_ANSWERED)
			md |= MD_F_ANSWERED;
		if (fl.sys & IMAP_FLAG_FLAGGED)
			md |= MD_F_FLAGGED;
		if (fl.sys & IMAP_FLAG_DELETED)
			md |= MD_F_DELETED;
		if (fl.sys & IMAP_FLAG_DRAFT)
			md |= MD_F_DRAFT;
		*store_err = md_append_commit(&ap, md, kw, fl.nkeywords, date,
					      &uv, &uid);
	}
	if (*store_err == 0) {
		uint32_t *p = realloc(u->v, (u->n + 1) * sizeof(*p));

		if (p == NULL)
			return -ENOMEM;
		u->v = p;
		u->v[u->n++] = uid;
		u->uidvalidity = uv;
	}
	return 0;
}

int cmd_append(struct imap_sess *s, const char *tag)
{
	struct append_uids u = {0};
	struct imap_arg *a;
	const char *name = NULL;
	int store_err = 0, ret;

	ret = imap_lex_args(&s->lx, IMAP_LEX_LITERAL_SIZE, &a);
	if (ret == -EFBIG) {
		imap_tagged(s, tag, "NO", "[TOOBIG] %s", s->lx.err);
		return 0;
	}
	if (ret < 0)
		return ret;
	if (a == NULL) {
		s->lx.err = "APPEND takes a mailbox and a message";
		return -EPROTO;
	}
	ret = imap_mbox_name_arg(s, a, &name);
	if (ret < 0)
		return ret;
	a = a->next;
	/* MULTIAPPEND: message after message until the line ends. */
	for (;;) {
		ret = append_one(s, name, a, &u, &store_err);
		if (ret < 0)
			break;
		ret = imap_lex_args(&s->lx, IMAP_LEX_LITERAL_SIZE, &a);
		if (ret == -EFBIG) {
			store_err = -EFBIG;
			ret = 0;
			break;
		}
		if (ret <= 0)
			break;
	}
	if (ret < 0) {
		free(u.v);
		return ret;
	}
	if (store_err < 0) {
		/* RFC 3502: all or nothing is not promised by Maildir; the
		 * ones appended stay (their UIDs are not reported). */
		free(u.v);
		imap_tagged(s, tag, "NO", "%s",
			    store_err == -ENOENT ? "[TRYCREATE] No such mailbox"
			    : store_err == -EILSEQ
				    ? "[UNKNOWN-CTE] NUL bytes cannot be stored"
				    : imap__mbox_err(store_err));
		return 0;
	}
	ret = imap_mbox_sync(s, true);
	(void)prot_printf(s->c->out, "%s OK [APPENDUID %" PRIu32 " ", tag,
			  u.uidvalidity);
	for (size_t i = 0; i < u.n; i++)
		(void)prot_printf(s->c->out, "%s%" PRIu32, i ? "," : "",
				  u.v[i]);
	(void)prot_puts(s->c->out, "] APPEND completed\r\n");
	free(u.v);
	return 0;
}
