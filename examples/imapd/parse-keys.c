/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/imapd/parse-keys: the pure parsers of parse.h (sequence sets,
 * flags, dates, FETCH attributes, SEARCH keys, modified UTF-7) on the
 * argument tree the lexer built. No I/O, no heap: the pool only.
 */
#include "parse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int bad(const char **err_out, const char *why)
{
	*err_out = why;
	return -EPROTO;
}

/* A decimal number of at most max, all of s up to end. */
static bool parse_num(const char *s, const char *end, uint64_t max,
		      uint64_t *v_out)
{
	uint64_t v = 0;

	if (s == end)
		return false;
	for (; s < end; s++) {
		if (*s < '0' || *s > '9')
			return false;
		if (v > (max - (uint64_t)(*s - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*v_out = v;
	return true;
}

/*
 * ---------------------------------------------------------------------
 * Sequence sets.
 * ---------------------------------------------------------------------
 */

/* seq-number: nz-number or '*' (IMAP_STAR). */
static bool seq_number(const char *s, const char *end, uint32_t *v_out)
{
	uint64_t v;

	if (end - s == 1 && *s == '*') {
		*v_out = IMAP_STAR;
		return true;
	}
	if (*s == '0' || !parse_num(s, end, UINT32_MAX, &v))
		return false;
	*v_out = (uint32_t)v;
	return true;
}

static int range_cmp(const void *a, const void *b)
{
	const struct imap_range *x = a, *y = b;

	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

int imap_seqset_parse(const char *s, struct imap_pool *pool,
		      struct imap_seqset *set, const char **err_out)
{
	unsigned cap = 1, n = 0, nstar = 0, m;
	struct imap_range *r;

	memset(set, 0, sizeof(*set));
	if (strcmp(s, "$") == 0) {
		set->dollar = true;
		return 0;
	}
	for (const char *p = s; *p != '\0'; p++)
		cap += *p == ',';
	r = imap_pool_alloc(pool, cap * sizeof(*r));
	if (r == NULL)
		return bad(err_out, "Sequence set too long"), -ENOMEM;
	/* Star ranges fill the array from its end, the others its start. */
	for (const char *p = s;;) {
		const char *end = p + strcspn(p, ",");
		const char *colon = memchr(p, ':', (size_t)(end - p));
		uint32_t lo, hi;

		if (colon == NULL) {
			if (!seq_number(p, end, &lo))
				return bad(err_out, "Invalid sequence set");
			hi = lo;
		} else if (!seq_number(p, colon, &lo) ||
			   !seq_number(colon + 1, end, &hi)) {
			return bad(err_out, "Invalid sequence set");
		}
		if (lo == IMAP_STAR || hi == IMAP_STAR) {
			/* Kept as (number or '*', '*'). */
			r[cap - 1 - nstar].lo = lo == IMAP_STAR ? hi : lo;
			r[cap - 1 - nstar].hi = IMAP_STAR;
			nstar++;
		} else {
			r[n].lo = lo < hi ? lo : hi;
			r[n].hi = lo < hi ? hi : lo;
			n++;
		}
		if (*end == '\0')
			break;
		p = end + 1;
	}
	qsort(r, n, sizeof(*r), range_cmp);
	m = 0;
	for (unsigned i = 0; i < n; i++) {
		if (m > 0 &&
		    (r[m - 1].hi == UINT32_MAX || r[i].lo <= r[m - 1].hi + 1)) {
			if (r[i].hi > r[m - 1].hi)
				r[m - 1].hi = r[i].hi;
			continue;
		}
		r[m++] = r[i];
	}
	memmove(r + m, r + cap - nstar, nstar * sizeof(*r));
	set->r = r;
	set->n = m;
	set->nstar = nstar;
	return 0;
}

bool imap_seqset_contains(const struct imap_seqset *set, uint32_t v,
			  uint32_t max)
{
	unsigned lo = 0, hi = set->n;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (v < set->r[mid].lo)
			hi = mid;
		else if (v > set->r[mid].hi)
			lo = mid + 1;
		else
			return true;
	}
	/* RFC 3501 section 9: "*" is the largest number in use, and a
	 * range's ends may come in either order (5:* with max 3 is 3:5). */
	for (unsigned i = set->n; i < set->n + set->nstar; i++) {
		uint32_t a = set->r[i].lo == IMAP_STAR ? max : set->r[i].lo;
		uint32_t b = max;

		if (a > b) {
			uint32_t t = a;

			a = b;
			b = t;
		}
		if (v >= a && v <= b && max != 0)
			return true;
	}
	return false;
}

/*
 * ---------------------------------------------------------------------
 * Flags.
 * ---------------------------------------------------------------------
 */

unsigned imap_sysflag(const char *name)
{
	static const struct {
		const char *name;
		unsigned flag;
	} sys[] = {
		{"\\Seen", IMAP_FLAG_SEEN},
		{"\\Answered", IMAP_FLAG_ANSWERED},
		{"\\Flagged", IMAP_FLAG_FLAGGED},
		{"\\Deleted", IMAP_FLAG_DELETED},
		{"\\Draft", IMAP_FLAG_DRAFT},
		{"\\Recent", IMAP_FLAG_RECENT},
	};

	for (size_t i = 0; i < sizeof(sys) / sizeof(sys[0]); i++)
		if (strcasecmp(name, sys[i].name) == 0)
			return sys[i].flag;
	return 0;
}

/* A keyword: 1*ATOM-CHAR. */
static bool keyword_ok(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\][", c) != NULL)
			return false;
	}
	return true;
}

int imap_parse_flags(const struct imap_arg *a, bool bare_ok,
		     struct imap_pool *pool, struct imap_flags *out,
		     const char **err_out)
{
	const struct imap_arg *first, *f;
	unsigned n = 0;

	memset(out, 0, sizeof(*out));
	if (a == NULL)
		return bad(err_out, "Missing flags");
	if (a->type == IMAP_ARG_LIST)
		first = a->child;
	else if (bare_ok)
		first = a;
	else
		return bad(err_out, "Flags must be a list");
	for (f = first; f != NULL; f = f->next)
		n++;
	out->keywords = imap_pool_alloc(pool, (n + 1) * sizeof(char *));
	if (out->keywords == NULL)
		return bad(err_out, "Too many flags"), -ENOMEM;
	for (f = first; f != NULL; f = f->next) {
		unsigned sys;

		if (f->type != IMAP_ARG_ATOM)
			return bad(err_out, "Invalid flag");
		if (f->str[0] == '\\') {
			sys = imap_sysflag(f->str);
			if (sys == 0 || sys == IMAP_FLAG_RECENT)
				return bad(err_out, "Invalid system flag");
			out->sys |= sys;
			continue;
		}
		if (!keyword_ok(f->str))
			return bad(err_out, "Invalid keyword");
		out->keywords[out->nkeywords++] = f->str;
	}
	return 0;
}

/*
 * ---------------------------------------------------------------------
 * Dates.
 * ---------------------------------------------------------------------
 */

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static unsigned month_days(unsigned y, unsigned m)
{
	static const unsigned md[] = {31, 28, 31, 30, 31, 30,
				      31, 31, 30, 31, 30, 31};

	if (m == 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
		return 29;
	return md[m - 1];
}

/* "d-Mon-yyyy" at s; *end_out after it. */
static int date_text(const char *s, const char **end_out, int64_t *days_out)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	uint64_t d, y;
	const char *p = s;
	unsigned m;

	while (*p >= '0' && *p <= '9' && p - s < 2)
		p++;
	if (!parse_num(s, p, 31, &d) || d == 0 || *p != '-')
		return -EPROTO;
	p++;
	for (m = 0; m < 12; m++)
		if (strncasecmp(p, months + 3 * m, 3) == 0)
			break;
	if (m == 12 || p[3] != '-')
		return -EPROTO;
	p += 4;
	if (!parse_num(p, p + strnlen(p, 4), 9999, &y) || strnlen(p, 4) != 4)
		return -EPROTO;
	if (d > month_days((unsigned)y, m + 1))
		return -EPROTO;
	*end_out = p + 4;
	*days_out = days_from_civil((int64_t)y, m + 1, (unsigned)d);
	return 0;
}

int imap_parse_date(const char *s, int64_t *days_out)
{
	const char *end;

	if (date_text(s, &end, days_out) < 0 || *end != '\0')
		return -EPROTO;
	return 0;
}

int imap_parse_datetime(const char *s, int64_t *t_out, int *zone_min_out)
{
	uint64_t h, mi, sec, zh, zm;
	int64_t days;
	const char *p;
	int sign;

	if (*s == ' ')
		s++; /* date-day-fixed: SP DIGIT */
	if (date_text(s, &p, &days) < 0 || strlen(p) != 15)
		return -EPROTO;
	/* " hh:mm:ss +zzzz" */
	if (p[0] != ' ' || p[3] != ':' || p[6] != ':' || p[9] != ' ' ||
	    (p[10] != '+' && p[10] != '-'))
		return -EPROTO;
	if (!parse_num(p + 1, p + 3, 23, &h) ||
	    !parse_num(p + 4, p + 6, 59, &mi) ||
	    !parse_num(p + 7, p + 9, 60, &sec) ||
	    !parse_num(p + 11, p + 13, 99, &zh) ||
	    !parse_num(p + 13, p + 15, 59, &zm))
		return -EPROTO;
	sign = p[10] == '-' ? -1 : 1;
	*zone_min_out = sign * (int)(zh * 60 + zm);
	*t_out = days * 86400 + (int64_t)(h * 3600 + mi * 60 + sec) -
		 (int64_t)*zone_min_out * 60;
	return 0;
}

/*
 * ---------------------------------------------------------------------
 * FETCH.
 * ---------------------------------------------------------------------
 */

/* HEADER.FIELDS's " (name name)" at p, up to ']'. */
static int header_list(const char *p, const char **end_out,
		       struct imap_pool *pool, struct imap_section *sec,
		       const char **err_out)
{
	const char *q;
	unsigned n = 1;

	if (strncmp(p, " (", 2) != 0)
		return bad(err_out, "Missing header field list");
	p += 2;
	q = strchr(p, ')');
	if (q == NULL || q == p)
		return bad(err_out, "Invalid header field list");
	for (const char *t = p; t < q; t++)
		n += *t == ' ';
	sec->fields = imap_pool_alloc(pool, n * sizeof(char *));
	if (sec->fields == NULL)
		return bad(err_out, "Too many header fields"), -ENOMEM;
	while (p < q) {
		const char *e = memchr(p, ' ', (size_t)(q - p));
		char *name;

		if (e == NULL)
			e = q;
		if (e == p)
			return bad(err_out, "Invalid header field list");
		for (const char *t = p; t < e; t++)
			if ((unsigned char)*t <= 0x20 || *t == ':' ||
			    (unsigned char)*t >= 0x7f || *t == '"' ||
			    *t == '{' || *t == '(' || *t == '\\')
				return bad(err_out,
					   "Invalid header field name");
		name = imap_pool_alloc(pool, (size_t)(e - p) + 1);
		if (name == NULL)
			return bad(err_out, "Too many header fields"), -ENOMEM;
		memcpy(name, p, (size_t)(e - p));
		sec->fields[sec->nfields++] = name;
		p = e < q ? e + 1 : e;
	}
	*end_out = q + 1;
	return 0;
}

/* section-spec inside "[...]": p after '[', *end_out at ']'. */
static int section_spec(const char *p, const char **end_out,
			struct imap_pool *pool, struct imap_section *sec,
			const char **err_out)
{
	int ret;

	while (*p >= '1' && *p <= '9') {
		const char *e = p;
		uint64_t v;

		while (*e >= '0' && *e <= '9')
			e++;
		if (sec->nparts == IMAP_PART_MAX ||
		    !parse_num(p, e, UINT32_MAX, &v))
			return bad(err_out, "Invalid section part");
		sec->part[sec->nparts++] = (uint32_t)v;
		p = e;
		if (*p != '.')
			break;
		p++;
	}
	/* "1TEXT": a part number needs its '.' before a msgtext. */
	if (sec->nparts > 0 && *p != ']' && p[-1] != '.')
		return bad(err_out, "Invalid section");
	if (sec->kind != IMAP_BODY_SECTION || *p == ']') {
		if (*p != ']' || (sec->nparts > 0 && p[-1] == '.'))
			return bad(err_out, "Invalid section");
		*end_out = p;
		return 0;
	}
	if (strncasecmp(p, "HEADER.FIELDS.NOT", 17) == 0) {
		sec->spec = IMAP_SECTION_HEADER_FIELDS_NOT;
		ret = header_list(p + 17, &p, pool, sec, err_out);
	} else if (strncasecmp(p, "HEADER.FIELDS", 13) == 0) {
		sec->spec = IMAP_SECTION_HEADER_FIELDS;
		ret = header_list(p + 13, &p, pool, sec, err_out);
	} else if (strncasecmp(p, "HEADER", 6) == 0) {
		sec->spec = IMAP_SECTION_HEADER;
		p += 6;
		ret = 0;
	} else if (strncasecmp(p, "TEXT", 4) == 0) {
		sec->spec = IMAP_SECTION_TEXT;
		p += 4;
		ret = 0;
	} else if (strncasecmp(p, "MIME", 4) == 0 && sec->nparts > 0) {
		sec->spec = IMAP_SECTION_MIME;
		p += 4;
		ret = 0;
	} else {
		return bad(err_out, "Invalid section");
	}
	if (ret < 0)
		return ret;
	if (*p != ']')
		return bad(err_out, "Invalid section");
	*end_out = p;
	return 0;
}

/* "<off.len>" (RFC 3501: partial = "<" number "." nz-number ">"). */
static int partial(const char *p, struct imap_section *sec,
		   const char **err_out)
{
	const char *dot = strchr(p, '.'), *end = strchr(p, '>');
	uint64_t off, len;

	if (*p != '<' || dot == NULL || end == NULL || end[1] != '\0' ||
	    dot > end || !parse_num(p + 1, dot, UINT32_MAX, &off) ||
	    !parse_num(dot + 1, end, UINT32_MAX, &len) || len == 0)
		return bad(err_out, "Invalid partial");
	sec->partial = true;
	sec->off = (uint32_t)off;
	sec->len = (uint32_t)len;
	return 0;
}

static int fetch_section(const char *s, struct imap_pool *pool,
			 struct imap_fetch *out, const char **err_out)
{
	static const struct {
		const char *prefix;
		enum imap_section_kind kind;
		bool peek;
	} kinds[] = {
		{"BODY[", IMAP_BODY_SECTION, false},
		{"BODY.PEEK[", IMAP_BODY_SECTION, true},
		{"BINARY[", IMAP_BINARY, false},
		{"BINARY.PEEK[", IMAP_BINARY, true},
		{"BINARY.SIZE[", IMAP_BINARY_SIZE, true},
	};
	struct imap_section *sec, **tail;
	const char *p = NULL;
	int ret;

	sec = imap_pool_alloc(pool, sizeof(*sec));
	if (sec == NULL)
		return bad(err_out, "Too many sections"), -ENOMEM;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		size_t len = strlen(kinds[i].prefix);

		if (strncasecmp(s, kinds[i].prefix, len) == 0) {
			sec->kind = kinds[i].kind;
			sec->peek = kinds[i].peek;
			p = s + len;
			break;
		}
	}
	if (p == NULL)
		return bad(err_out, "Invalid fetch attribute");
	ret = section_spec(p, &p, pool, sec, err_out);
	if (ret < 0)
		return ret;
	p++; /* ']' */
	if (*p != '\0') {
		if (sec->kind == IMAP_BINARY_SIZE)
			return bad(err_out, "Invalid fetch attribute");
		ret = partial(p, sec, err_out);
		if (ret < 0)
			return ret;
	}
	sec->name = s;
	if (!sec->peek)
		out->sets_seen = true;
	for (tail = &out->sections; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = sec;
	out->nsections++;
	return 0;
}

static int fetch_att(const char *s, struct imap_pool *pool,
		     struct imap_fetch *out, const char **err_out)
{
	static const struct {
		const char *name;
		unsigned items;
	} atts[] = {
		{"FLAGS", IMAP_FETCH_FLAGS},
		{"UID", IMAP_FETCH_UID},
		{"INTERNALDATE", IMAP_FETCH_INTERNALDATE},
		{"RFC822.SIZE", IMAP_FETCH_RFC822_SIZE},
		{"RFC822.HEADER", IMAP_FETCH_RFC822_HEADER},
		{"RFC822.TEXT", IMAP_FETCH_RFC822_TEXT},
		{"RFC822", IMAP_FETCH_RFC822},
		{"ENVELOPE", IMAP_FETCH_ENVELOPE},
		{"BODYSTRUCTURE", IMAP_FETCH_BODYSTRUCTURE},
		{"BODY", IMAP_FETCH_BODY},
	};

	for (size_t i = 0; i < sizeof(atts) / sizeof(atts[0]); i++)
		if (strcasecmp(s, atts[i].name) == 0) {
			out->items |= atts[i].items;
			if (atts[i].items &
			    (IMAP_FETCH_RFC822 | IMAP_FETCH_RFC822_TEXT))
				out->sets_seen = true;
			return 0;
		}
	return fetch_section(s, pool, out, err_out);
}

int imap_parse_fetch(const struct imap_arg *a, struct imap_pool *pool,
		     struct imap_fetch *out, const char **err_out)
{
	static const unsigned fast = IMAP_FETCH_FLAGS |
				     IMAP_FETCH_INTERNALDATE |
				     IMAP_FETCH_RFC822_SIZE;
	int ret;

	memset(out, 0, sizeof(*out));
	if (a == NULL)
		return bad(err_out, "Missing fetch attributes");
	if (a->type == IMAP_ARG_ATOM) {
		if (strcasecmp(a->str, "FAST") == 0)
			out->items = fast;
		else if (strcasecmp(a->str, "ALL") == 0)
			out->items = fast | IMAP_FETCH_ENVELOPE;
		else if (strcasecmp(a->str, "FULL") == 0)
			out->items =
				fast | IMAP_FETCH_ENVELOPE | IMAP_FETCH_BODY;
		else
			return fetch_att(a->str, pool, out, err_out);
		return 0;
	}
	if (a->type != IMAP_ARG_LIST || a->child == NULL)
		return bad(err_out, "Invalid fetch attributes");
	for (const struct imap_arg *c = a->child; c != NULL; c = c->next) {
		if (c->type != IMAP_ARG_ATOM)
			return bad(err_out, "Invalid fetch attribute");
		ret = fetch_att(c->str, pool, out, err_out);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/*
 * ---------------------------------------------------------------------
 * SEARCH.
 * ---------------------------------------------------------------------
 */

struct sctx {
	struct imap_pool *pool;
	const char **err_out;
};

static int search_key(struct sctx *x, const struct imap_arg **cur,
		      unsigned depth, struct imap_search_key **key_out);

/* Keys up to the end of a list (a group or the top): an AND. */
static int search_and(struct sctx *x, const struct imap_arg *first,
		      unsigned depth, struct imap_search_key **key_out)
{
	struct imap_search_key *k, **tail;
	const struct imap_arg *cur = first;
	int ret;

	if (first == NULL)
		return bad(x->err_out, "Missing search key");
	k = imap_pool_alloc(x->pool, sizeof(*k));
	if (k == NULL)
		return bad(x->err_out, "Too many search keys"), -ENOMEM;
	k->op = IMAP_SK_AND;
	tail = &k->child;
	while (cur != NULL) {
		ret = search_key(x, &cur, depth, tail);
		if (ret < 0)
			return ret;
		tail = &(*tail)->next;
	}
	*key_out = k;
	return 0;
}

/* The string argument of a key. */
static int key_str(struct sctx *x, const struct imap_arg **cur,
		   const char **s_out)
{
	if (!imap_arg_astring(*cur, s_out))
		return bad(x->err_out, "Missing search string");
	*cur = (*cur)->next;
	return 0;
}

static int key_date(struct sctx *x, const struct imap_arg **cur,
		    struct imap_search_key *k)
{
	const char *s;

	if (key_str(x, cur, &s) < 0 || imap_parse_date(s, &k->days) < 0)
		return bad(x->err_out, "Invalid search date");
	return 0;
}

static int key_size(struct sctx *x, const struct imap_arg **cur,
		    struct imap_search_key *k)
{
	const struct imap_arg *a = *cur;

	if (a == NULL || a->type != IMAP_ARG_ATOM ||
	    !parse_num(a->str, a->str + a->len, INT64_MAX, &k->size))
		return bad(x->err_out, "Invalid search size");
	*cur = a->next;
	return 0;
}

static const struct skey {
	const char *name;
	enum imap_search_op op;
	unsigned flag;
	const char *field;
	char arg; /* 0 none, 's' string, 'd' date, 'n' size, 'k' keyword,
		     'h' header field and string, 'u' UID set */
} skeys[] = {
	{"ALL", IMAP_SK_ALL, 0, NULL, 0},
	{"ANSWERED", IMAP_SK_FLAG, IMAP_FLAG_ANSWERED, NULL, 0},
	{"DELETED", IMAP_SK_FLAG, IMAP_FLAG_DELETED, NULL, 0},
	{"DRAFT", IMAP_SK_FLAG, IMAP_FLAG_DRAFT, NULL, 0},
	{"FLAGGED", IMAP_SK_FLAG, IMAP_FLAG_FLAGGED, NULL, 0},
	{"RECENT", IMAP_SK_FLAG, IMAP_FLAG_RECENT, NULL, 0},
	{"SEEN", IMAP_SK_FLAG, IMAP_FLAG_SEEN, NULL, 0},
	{"UNANSWERED", IMAP_SK_UNFLAG, IMAP_FLAG_ANSWERED, NULL, 0},
	{"UNDELETED", IMAP_SK_UNFLAG, IMAP_FLAG_DELETED, NULL, 0},
	{"UNDRAFT", IMAP_SK_UNFLAG, IMAP_FLAG_DRAFT, NULL, 0},
	{"UNFLAGGED", IMAP_SK_UNFLAG, IMAP_FLAG_FLAGGED, NULL, 0},
	{"UNSEEN", IMAP_SK_UNFLAG, IMAP_FLAG_SEEN, NULL, 0},
	{"NEW", IMAP_SK_NEW, 0, NULL, 0},
	{"OLD", IMAP_SK_OLD, 0, NULL, 0},
	{"KEYWORD", IMAP_SK_KEYWORD, 0, NULL, 'k'},
	{"UNKEYWORD", IMAP_SK_UNKEYWORD, 0, NULL, 'k'},
	{"BEFORE", IMAP_SK_BEFORE, 0, NULL, 'd'},
	{"ON", IMAP_SK_ON, 0, NULL, 'd'},
	{"SINCE", IMAP_SK_SINCE, 0, NULL, 'd'},
	{"SENTBEFORE", IMAP_SK_SENTBEFORE, 0, NULL, 'd'},
	{"SENTON", IMAP_SK_SENTON, 0, NULL, 'd'},
	{"SENTSINCE", IMAP_SK_SENTSINCE, 0, NULL, 'd'},
	{"LARGER", IMAP_SK_LARGER, 0, NULL, 'n'},
	{"SMALLER", IMAP_SK_SMALLER, 0, NULL, 'n'},
	{"HEADER", IMAP_SK_HEADER, 0, NULL, 'h'},
	{"FROM", IMAP_SK_HEADER, 0, "From", 's'},
	{"TO", IMAP_SK_HEADER, 0, "To", 's'},
	{"CC", IMAP_SK_HEADER, 0, "Cc", 's'},
	{"BCC", IMAP_SK_HEADER, 0, "Bcc", 's'},
	{"SUBJECT", IMAP_SK_HEADER, 0, "Subject", 's'},
	{"BODY", IMAP_SK_BODY, 0, NULL, 's'},
	{"TEXT", IMAP_SK_TEXT, 0, NULL, 's'},
	{"UID", IMAP_SK_UIDSET, 0, NULL, 'u'},
};

static int key_arg(struct sctx *x, const struct skey *sk,
		   const struct imap_arg **cur, struct imap_search_key *k)
{
	const struct imap_arg *a = *cur;

	switch (sk->arg) {
	case 's':
		return key_str(x, cur, &k->str);
	case 'd':
		return key_date(x, cur, k);
	case 'n':
		return key_size(x, cur, k);
	case 'k':
		if (a == NULL || a->type != IMAP_ARG_ATOM ||
		    !keyword_ok(a->str))
			return bad(x->err_out, "Invalid keyword");
		k->str = a->str;
		*cur = a->next;
		return 0;
	case 'h':
		if (key_str(x, cur, &k->field) < 0)
			return -EPROTO;
		return key_str(x, cur, &k->str);
	case 'u':
		if (a == NULL || a->type != IMAP_ARG_ATOM)
			return bad(x->err_out, "Invalid UID set");
		*cur = a->next;
		return imap_seqset_parse(a->str, x->pool, &k->set, x->err_out);
	default:
		return 0;
	}
}

static int search_key(struct sctx *x, const struct imap_arg **cur,
		      unsigned depth, struct imap_search_key **key_out)
{
	const struct imap_arg *a = *cur;
	struct imap_search_key *k;
	int ret;

	if (depth >= IMAP_DEPTH_MAX)
		return bad(x->err_out, "Search keys too deeply nested"), -ELOOP;
	if (a == NULL)
		return bad(x->err_out, "Missing search key");
	*cur = a->next;
	if (a->type == IMAP_ARG_LIST)
		return search_and(x, a->child, depth + 1, key_out);
	if (a->type != IMAP_ARG_ATOM)
		return bad(x->err_out, "Invalid search key");
	k = imap_pool_alloc(x->pool, sizeof(*k));
	if (k == NULL)
		return bad(x->err_out, "Too many search keys"), -ENOMEM;
	*key_out = k;
	if (strcasecmp(a->str, "NOT") == 0 || strcasecmp(a->str, "OR") == 0) {
		k->op = a->str[0] == 'N' || a->str[0] == 'n' ? IMAP_SK_NOT
							     : IMAP_SK_OR;
		ret = search_key(x, cur, depth + 1, &k->child);
		if (ret == 0 && k->op == IMAP_SK_OR)
			ret = search_key(x, cur, depth + 1, &k->child->next);
		return ret;
	}
	for (size_t i = 0; i < sizeof(skeys) / sizeof(skeys[0]); i++)
		if (strcasecmp(a->str, skeys[i].name) == 0) {
			k->op = skeys[i].op;
			k->flag = skeys[i].flag;
			k->field = skeys[i].field;
			return key_arg(x, &skeys[i], cur, k);
		}
	if ((a->str[0] >= '1' && a->str[0] <= '9') || a->str[0] == '*' ||
	    a->str[0] == '$') {
		k->op = IMAP_SK_SEQSET;
		return imap_seqset_parse(a->str, x->pool, &k->set, x->err_out);
	}
	return bad(x->err_out, "Unknown search key");
}

static int search_return(struct sctx *x, const struct imap_arg *a,
			 struct imap_search *out)
{
	static const struct {
		const char *name;
		unsigned bit;
	} opts[] = {
		{"MIN", IMAP_SEARCH_RET_MIN},
		{"MAX", IMAP_SEARCH_RET_MAX},
		{"ALL", IMAP_SEARCH_RET_ALL},
		{"COUNT", IMAP_SEARCH_RET_COUNT},
		{"SAVE", IMAP_SEARCH_RET_SAVE},
	};

	if (a == NULL || a->type != IMAP_ARG_LIST)
		return bad(x->err_out, "Invalid RETURN options");
	out->esearch = true;
	for (const struct imap_arg *o = a->child; o != NULL; o = o->next) {
		size_t i;

		for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
			if (imap_arg_is_atom(o, opts[i].name))
				break;
		if (i == sizeof(opts) / sizeof(opts[0]))
			return bad(x->err_out, "Unknown RETURN option");
		out->ret |= opts[i].bit;
	}
	/* RFC 4731: RETURN () means RETURN (ALL). */
	if (out->ret == 0)
		out->ret = IMAP_SEARCH_RET_ALL;
	return 0;
}

int imap_parse_search(const struct imap_arg *first, struct imap_pool *pool,
		      struct imap_search *out, const char **err_out)
{
	struct sctx x = {pool, err_out};
	const struct imap_arg *a = first;
	const char *cs;
	int ret;

	memset(out, 0, sizeof(*out));
	if (imap_arg_is_atom(a, "RETURN")) {
		ret = search_return(&x, a->next, out);
		if (ret < 0)
			return ret;
		a = a->next->next;
	}
	if (imap_arg_is_atom(a, "CHARSET")) {
		if (!imap_arg_astring(a->next, &cs))
			return bad(err_out, "Missing charset");
		if (strcasecmp(cs, "UTF-8") == 0) {
			out->utf8 = true;
		} else if (strcasecmp(cs, "US-ASCII") != 0) {
			*err_out = "[BADCHARSET (US-ASCII UTF-8)] Unsupported "
				   "charset";
			return -ENOENT;
		}
		a = a->next->next;
	}
	return search_and(&x, a, 0, &out->root);
}

/*
 * ---------------------------------------------------------------------
 * Modified UTF-7 (RFC 3501 section 5.1.3).
 * ---------------------------------------------------------------------
 */

static int b64_value(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == ',')
		return 63;
	return -1;
}

static const char b64_chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/* Append code point cp as UTF-8 (out NULL: only validate). */
static int put_utf8(uint32_t cp, char *out, size_t size, size_t *n)
{
	char b[4];
	size_t len;

	if (cp < 0x80) {
		b[0] = (char)cp;
		len = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xc0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3f));
		len = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xe0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		len = 3;
	} else {
		b[0] = (char)(0xf0 | (cp >> 18));
		b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (char)(0x80 | (cp & 0x3f));
		len = 4;
	}
	if (out != NULL) {
		if (*n + len >= size)
			return -ENOSPC;
		memcpy(out + *n, b, len);
	}
	*n += len;
	return 0;
}

/* The base64 run after '&' up to its '-': *pp moves past the '-'. */
static int mutf7_run(const char **pp, char *out, size_t size, size_t *n)
{
	const char *p = *pp;
	uint32_t bits = 0, hi = 0;
	unsigned nbits = 0, units = 0;
	int v, ret;

	for (; *p != '-'; p++) {
		v = b64_value((unsigned char)*p);
		if (v < 0)
			return -EINVAL;
		bits = (bits << 6) | (uint32_t)v;
		nbits += 6;
		if (nbits < 16)
			continue;
		nbits -= 16;
		uint32_t u = (bits >> nbits) & 0xffff;

		units++;
		if (hi != 0) {
			if (u < 0xdc00 || u > 0xdfff)
				return -EINVAL;
			u = 0x10000 + ((hi - 0xd800) << 10) + (u - 0xdc00);
			hi = 0;
		} else if (u >= 0xd800 && u <= 0xdbff) {
			hi = u;
			continue;
		} else if (u >= 0xdc00 && u <= 0xdfff) {
			return -EINVAL;
		}
		/* Printable ASCII must not be encoded, nor NUL. */
		if (u < 0x80 && (u == 0 || (u >= 0x20 && u <= 0x7e)))
			return -EINVAL;
		ret = put_utf8(u, out, size, n);
		if (ret < 0)
			return ret;
	}
	/* Leftover bits: fewer than 6, all zero; a whole run, no dangling
	 * high surrogate. */
	if (units == 0 || hi != 0 || nbits >= 6 ||
	    (bits & ((1u << nbits) - 1)) != 0)
		return -EINVAL;
	*pp = p + 1;
	return 0;
}

int imap_mutf7_to_utf8(const char *in, char *out, size_t size)
{
	size_t n = 0;
	int ret;

	for (const char *p = in; *p != '\0';) {
		unsigned char c = (unsigned char)*p;

		if (c < 0x20 || c > 0x7e)
			return -EINVAL;
		if (c != '&') {
			ret = put_utf8(c, out, size, &n);
			p++;
		} else if (p[1] == '-') {
			ret = put_utf8('&', out, size, &n);
			p += 2;
		} else {
			p++;
			ret = mutf7_run(&p, out, size, &n);
		}
		if (ret < 0)
			return ret;
	}
	if (out != NULL) {
		if (n >= size)
			return -ENOSPC;
		out[n] = '\0';
	}
	return (int)n;
}

bool imap_mutf7_valid(const char *name)
{
	return imap_mutf7_to_utf8(name, NULL, 0) >= 0;
}

/* One code point of UTF-8 at *pp (strict: no overlong, no surrogate). */
static int get_utf8(const unsigned char **pp, uint32_t *cp_out)
{
	const unsigned char *p = *pp;
	uint32_t cp, min;
	unsigned len;

	if (p[0] < 0x80) {
		*cp_out = p[0];
		*pp = p + 1;
		return 0;
	}
	if ((p[0] & 0xe0) == 0xc0) {
		cp = p[0] & 0x1f;
		len = 2;
		min = 0x80;
	} else if ((p[0] & 0xf0) == 0xe0) {
		cp = p[0] & 0x0f;
		len = 3;
		min = 0x800;
	} else if ((p[0] & 0xf8) == 0xf0) {
		cp = p[0] & 0x07;
		len = 4;
		min = 0x10000;
	} else {
		return -EINVAL;
	}
	for (unsigned i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return -EINVAL;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -EINVAL;
	*cp_out = cp;
	*pp = p + len;
	return 0;
}

static int put_byte(char *out, size_t size, size_t *n, char c)
{
	if (*n + 1 >= size)
		return -ENOSPC;
	out[(*n)++] = c;
	return 0;
}

int imap_utf8_to_mutf7(const char *in, char *out, size_t size)
{
	const unsigned char *p = (const unsigned char *)in;
	uint32_t bits = 0;
	unsigned nbits = 0;
	bool shifted = false;
	size_t n = 0;
	int ret = 0;

	while (ret == 0) {
		uint32_t cp = 0;

		if (*p != '\0' && get_utf8(&p, &cp) < 0)
			return -EINVAL;
		if (shifted && (cp == 0 || (cp >= 0x20 && cp <= 0x7e))) {
			if (nbits > 0)
				ret = put_byte(out, size, &n,
					       b64_chars[(bits << (6 - nbits)) &
							 0x3f]);
			if (ret == 0)
				ret = put_byte(out, size, &n, '-');
			shifted = false;
			nbits = 0;
		}
		if (ret < 0 || cp == 0)
			break;
		if (cp >= 0x20 && cp <= 0x7e) {
			ret = put_byte(out, size, &n, (char)cp);
			if (ret == 0 && cp == '&')
				ret = put_byte(out, size, &n, '-');
			continue;
		}
		if (!shifted) {
			ret = put_byte(out, size, &n, '&');
			shifted = true;
		}
		uint32_t u[2];
		unsigned nu = 1;

		if (cp >= 0x10000) {
			u[0] = 0xd800 + ((cp - 0x10000) >> 10);
			u[1] = 0xdc00 + ((cp - 0x10000) & 0x3ff);
			nu = 2;
		} else {
			u[0] = cp;
		}
		for (unsigned i = 0; i < nu && ret == 0; i++) {
			bits = (bits << 16) | u[i];
			nbits += 16;
			while (nbits >= 6 && ret == 0) {
				nbits -= 6;
				ret = put_byte(
					out, size, &n,
					b64_chars[(bits >> nbits) & 0x3f]);
			}
		}
	}
	if (ret < 0)
		return ret;
	out[n] = '\0';
	return (int)n;
}
