/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/imapd/mime: MIME structure, ENVELOPE, BODYSTRUCTURE, sections. */
#include "mime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * One file, longer than STYLE.md §6 asks: the parse, the RFC 5322 lexer
 * and the writers share the same few scanning helpers, and the task gave
 * this unit exactly mime.{c,h}. The natural split, if it grows, is
 * address/date parsing (RFC 5322) apart from MIME structure.
 *
 * The parse records only offsets: every value is re-read from the buffer
 * when it is written, so a parse costs one pass per nesting level and no
 * allocation, and the writers build IMAP strings directly in the output
 * buffer (the raw bytes are appended, then quoted or turned into a
 * literal in place; see str_end).
 */

#define ABSENT SIZE_MAX

static int lc(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* a[0..an) equals the C string b, ASCII case-insensitive. */
static bool ieq(const char *a, size_t an, const char *b)
{
	size_t bn = strlen(b);

	if (an != bn)
		return false;
	for (size_t i = 0; i < an; i++)
		if (lc((unsigned char)a[i]) != lc((unsigned char)b[i]))
			return false;
	return true;
}

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* Index just past the LF ending the line at p, or end. */
static size_t line_end(const char *b, size_t p, size_t end)
{
	const char *lf = memchr(b + p, '\n', end - p);

	return lf != NULL ? (size_t)(lf - b) + 1 : end;
}

static bool is_blank_line(const char *b, size_t p, size_t e)
{
	return (e == p + 1 && b[p] == '\n') ||
	       (e == p + 2 && b[p] == '\r' && b[p + 1] == '\n');
}

/* End of the header starting at p: just past its blank line, or end. */
static size_t header_end(const char *b, size_t p, size_t end)
{
	while (p < end) {
		size_t e = line_end(b, p, end);

		if (is_blank_line(b, p, e))
			return e;
		p = e;
	}
	return end;
}

/* The header without its blank line. */
static size_t header_fields_end(const char *b, size_t off, size_t len)
{
	size_t e = off + len;

	if (e > off && b[e - 1] == '\n') {
		size_t s = e - 1;

		if (s > off && b[s - 1] == '\r')
			s--;
		if (s == off || b[s - 1] == '\n')
			return s;
	}
	return e;
}

uint64_t imap_mime_crlf_len(const char *base, size_t off, size_t len)
{
	uint64_t n = len;
	size_t p = off, end = off + len;

	while (p < end) {
		const char *lf = memchr(base + p, '\n', end - p);

		if (lf == NULL)
			break;
		p = (size_t)(lf - base);
		if (p == 0 || base[p - 1] != '\r')
			n++;
		p++;
	}
	return n;
}

static size_t count_lf(const char *b, size_t off, size_t len)
{
	size_t n = 0, p = off, end = off + len;
	const char *lf;

	while (p < end && (lf = memchr(b + p, '\n', end - p)) != NULL) {
		n++;
		p = (size_t)(lf - b) + 1;
	}
	return n;
}

/* ---- header fields ---- */

struct field {
	size_t start, name_len; /* the name at start */
	size_t val, val_end;	/* the value, folded, without the line end */
	size_t end;		/* past the field's last LF */
};

/*
 * The next field of a header in [*pos, hend). Lines that are no field (no
 * colon, or stray continuation lines) are skipped, as Dovecot does.
 */
static bool field_next(const char *b, size_t *pos, size_t hend, struct field *f)
{
	size_t p = *pos;

	while (p < hend) {
		size_t e = line_end(b, p, hend), fe = e, n;
		const char *colon;

		if (is_blank_line(b, p, e))
			break;
		while (fe < hend && is_wsp(b[fe]))
			fe = line_end(b, fe, hend);
		colon = memchr(b + p, ':', e - p);
		if (is_wsp(b[p]) || colon == NULL || colon == b + p) {
			p = fe;
			continue;
		}
		n = (size_t)(colon - (b + p));
		while (n > 0 && is_wsp(b[p + n - 1]))
			n--;
		f->start = p;
		f->name_len = n;
		f->val = (size_t)(colon - b) + 1;
		f->end = fe;
		f->val_end = fe;
		if (f->val_end > f->val && b[f->val_end - 1] == '\n')
			f->val_end--;
		if (f->val_end > f->val && b[f->val_end - 1] == '\r')
			f->val_end--;
		*pos = fe;
		return true;
	}
	*pos = hend;
	return false;
}

static bool field_is(const char *b, const struct field *f, const char *name)
{
	return ieq(b + f->start, f->name_len, name);
}

static void span_set(const char *b, struct imap_mime_span *s,
		     const struct field *f, const char *name)
{
	if (s->off == ABSENT && field_is(b, f, name)) {
		s->off = f->val;
		s->len = f->val_end - f->val;
	}
}

/* ---- RFC 5322 / 2045 lexing ---- */

/* Skip whitespace, line breaks and (nested) comments. */
static void skip_cfws(const char *b, size_t *pos, size_t end)
{
	size_t p = *pos;

	while (p < end) {
		char c = b[p];

		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			p++;
		} else if (c == '(') {
			unsigned depth = 0;

			for (; p < end; p++) {
				if (b[p] == '\\' && p + 1 < end)
					p++;
				else if (b[p] == '(')
					depth++;
				else if (b[p] == ')' && --depth == 0)
					break;
			}
			if (p < end)
				p++;
		} else {
			break;
		}
	}
	*pos = p;
}

/* RFC 2045 token characters (8-bit bytes let through, leniently). */
static bool is_tchar(char ch)
{
	unsigned char c = (unsigned char)ch;

	return c > 0x20 && c != 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

static size_t token(const char *b, size_t *pos, size_t end)
{
	size_t p = *pos;

	while (p < end && is_tchar(b[p]))
		p++;
	end = p - *pos;
	*pos = p;
	return end;
}

/* Past a quoted string starting at p (b[p] == '"'); end if unclosed. */
static size_t quoted_end(const char *b, size_t p, size_t end)
{
	for (p++; p < end; p++) {
		if (b[p] == '\\' && p + 1 < end)
			p++;
		else if (b[p] == '"')
			return p + 1;
	}
	return end;
}

struct ctype {
	size_t type, type_len, sub, sub_len;
	size_t params; /* where the parameters start */
};

static bool ctype_parse(const char *b, const struct imap_mime_span *s,
			struct ctype *ct)
{
	size_t p = s->off, end = s->off + s->len;

	if (s->off == ABSENT)
		return false;
	skip_cfws(b, &p, end);
	ct->type = p;
	ct->type_len = token(b, &p, end);
	skip_cfws(b, &p, end);
	ct->sub = p;
	ct->sub_len = 0;
	if (p < end && b[p] == '/') {
		p++;
		skip_cfws(b, &p, end);
		ct->sub = p;
		ct->sub_len = token(b, &p, end);
	}
	ct->params = p;
	return ct->type_len > 0;
}

struct param {
	size_t name, name_len;
	size_t val, val_len; /* a quoted value: between the quotes */
	bool quoted;
};

/* The next "; name=value" in [*pos, end); junk is skipped. */
static bool param_next(const char *b, size_t *pos, size_t end, struct param *pr)
{
	size_t p = *pos;

	for (;;) {
		const char *semi;

		skip_cfws(b, &p, end);
		if (p < end && b[p] == ';') {
			p++;
			skip_cfws(b, &p, end);
			pr->name = p;
			pr->name_len = token(b, &p, end);
			skip_cfws(b, &p, end);
			if (pr->name_len > 0 && p < end && b[p] == '=') {
				p++;
				skip_cfws(b, &p, end);
				break;
			}
		}
		if (p >= end)
			goto out_none;
		if (b[p] == ';')
			continue;
		semi = memchr(b + p, ';', end - p);
		if (semi == NULL)
			goto out_none;
		p = (size_t)(semi - b);
	}
	pr->quoted = p < end && b[p] == '"';
	if (pr->quoted) {
		size_t q = quoted_end(b, p, end);

		pr->val = p + 1;
		pr->val_len = q - p - 1;
		if (q <= end && b[q - 1] == '"' && q - 1 > p)
			pr->val_len--;
		p = q;
	} else {
		pr->val = p;
		while (p < end && b[p] != ';' && !is_wsp(b[p]) &&
		       b[p] != '\r' && b[p] != '\n' && b[p] != '(')
			p++;
		pr->val_len = p - pr->val;
	}
	*pos = p;
	return true;
out_none:
	*pos = end;
	return false;
}

/* Value of parameter name in s (a Content-Type or -Disposition). */
static bool param_find(const char *b, size_t params, size_t end,
		       const char *name, struct param *out)
{
	while (param_next(b, &params, end, out))
		if (ieq(b + out->name, out->name_len, name))
			return true;
	return false;
}

/* ---- the parse ---- */

static int part_parse(struct imap_mime_msg *m, int parent, size_t off,
		      size_t end, unsigned depth, bool in_digest);

/* RFC 2046 §5.1.1: "--" boundary, then only whitespace, or "--". */
static int boundary_line(const char *b, size_t p, size_t e, const char *bd,
			 size_t bn)
{
	if (e - p < bn + 2 || b[p] != '-' || b[p + 1] != '-' ||
	    memcmp(b + p + 2, bd, bn) != 0)
		return 0;
	p += bn + 2;
	if (e - p >= 2 && b[p] == '-' && b[p + 1] == '-')
		return 2;
	for (; p < e; p++)
		if (!is_wsp(b[p]) && b[p] != '\r' && b[p] != '\n')
			return 0;
	return 1;
}

/* The line break before a boundary line belongs to the boundary. */
static size_t part_end_before(const char *b, size_t start, size_t line)
{
	size_t e = line;

	if (e > start && b[e - 1] == '\n')
		e--;
	if (e > start && b[e - 1] == '\r')
		e--;
	return e;
}

static void multipart_split(struct imap_mime_msg *m, int idx, const char *bd,
			    size_t bn, bool digest)
{
	struct imap_mime_part *mp = &m->part[idx];
	const char *b = m->base;
	size_t p = mp->body_off, end = mp->body_off + mp->body_len;
	size_t start = ABSENT;
	int last = -1;

	while (p < end) {
		size_t e = line_end(b, p, end);
		int kind = b[p] == '-' ? boundary_line(b, p, e, bd, bn) : 0;
		int c;

		if (kind == 0) {
			p = e;
			continue;
		}
		if (start != ABSENT) {
			c = part_parse(m, idx, start,
				       part_end_before(b, start, p),
				       mp->depth + 1, digest);
			if (c < 0)
				return;
			if (last < 0)
				mp->child = c;
			else
				m->part[last].next = c;
			last = c;
		}
		if (kind == 2)
			return; /* the epilogue follows: no part */
		start = e;
		p = e;
	}
	if (start != ABSENT) {
		/* No close delimiter: the last part runs to the end. */
		int c = part_parse(m, idx, start, end, mp->depth + 1, digest);

		if (c < 0)
			return;
		if (last < 0)
			mp->child = c;
		else
			m->part[last].next = c;
	}
}

static void part_fields(struct imap_mime_msg *m, struct imap_mime_part *p)
{
	const char *b = m->base;
	struct imap_mime_span *s[] = {&p->ctype, &p->cte,   &p->cid,  &p->cdesc,
				      &p->cdisp, &p->clang, &p->cloc, &p->cmd5};
	static const char *const names[] = {
		"Content-Type",	       "Content-Transfer-Encoding",
		"Content-ID",	       "Content-Description",
		"Content-Disposition", "Content-Language",
		"Content-Location",    "Content-MD5",
	};
	size_t pos = p->hdr_off, hend = p->hdr_off + p->hdr_len;
	struct field f;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		s[i]->off = ABSENT, s[i]->len = 0;
	while (field_next(b, &pos, hend, &f)) {
		if (f.name_len < 8 || !ieq(b + f.start, 8, "Content-"))
			continue;
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			span_set(b, s[i], &f, names[i]);
	}
}

/*
 * Recursive, as are the writers (body, body_leaf, body_multipart) and
 * multipart_split: the depth is bounded by IMAP_MIME_MAX_DEPTH, and so is
 * the stack (a few hundred bytes a level).
 */
static int part_parse(struct imap_mime_msg *m, int parent, size_t off,
		      size_t end, unsigned depth, bool in_digest)
{
	const char *b = m->base;
	struct imap_mime_part *p;
	struct ctype ct = {0};
	struct param bd = {0};
	int idx;

	if (m->nparts >= IMAP_MIME_MAX_PARTS) {
		m->truncated = true;
		return -1;
	}
	idx = (int)m->nparts++;
	p = &m->part[idx];
	p->hdr_off = off;
	p->body_off = header_end(b, off, end);
	p->hdr_len = p->body_off - off;
	p->body_len = end - p->body_off;
	p->parent = parent;
	p->child = -1;
	p->next = -1;
	p->depth = depth;
	p->in_digest = in_digest;
	p->kind = IMAP_MIME_LEAF;
	part_fields(m, p);

	if (ctype_parse(b, &p->ctype, &ct)) {
		/*
		 * Without a usable boundary a multipart has no parts (Dovecot
		 * writes it so too). An encoded message/rfc822 (RFC 2046
		 * forbids it) is parsed as it stands, as Dovecot does: the
		 * type stays true, the envelope comes out empty.
		 */
		if (ieq(b + ct.type, ct.type_len, "multipart"))
			p->kind = IMAP_MIME_MULTIPART;
		else if (ieq(b + ct.type, ct.type_len, "message") &&
			 (ieq(b + ct.sub, ct.sub_len, "rfc822") ||
			  ieq(b + ct.sub, ct.sub_len, "global")))
			p->kind = IMAP_MIME_MESSAGE;
	} else if (in_digest) {
		p->kind = IMAP_MIME_MESSAGE;
	}
	if (p->kind != IMAP_MIME_LEAF && depth >= IMAP_MIME_MAX_DEPTH) {
		m->truncated = true;
		p->kind = IMAP_MIME_LEAF;
	}

	if (p->kind == IMAP_MIME_MULTIPART &&
	    param_find(b, ct.params, p->ctype.off + p->ctype.len, "boundary",
		       &bd) &&
	    bd.val_len > 0 && bd.val_len <= 200) {
		/* A quoted boundary may hold escapes: unescape it first. */
		char bnd[200];
		size_t bn = 0;

		for (size_t i = 0; i < bd.val_len; i++) {
			char c = b[bd.val + i];

			if (bd.quoted && c == '\\' && i + 1 < bd.val_len)
				c = b[bd.val + ++i];
			bnd[bn++] = c;
		}
		multipart_split(m, idx, bnd, bn,
				ieq(b + ct.sub, ct.sub_len, "digest"));
	} else if (p->kind == IMAP_MIME_MESSAGE) {
		int c = part_parse(m, idx, p->body_off, end, depth + 1, false);

		if (c < 0)
			m->part[idx].kind = IMAP_MIME_LEAF;
		else
			m->part[idx].child = c;
	}
	return idx;
}

void imap_mime_parse(struct imap_mime_msg *m, const char *base, size_t len)
{
	m->base = base;
	m->len = len;
	m->nparts = 0;
	m->truncated = false;
	(void)part_parse(m, -1, 0, len, 0, false);
}

/* ---- output: struct buf with a sticky error ---- */

struct out {
	struct buf *b;
	int err;
};

static bool out_room(struct out *o, size_t n)
{
	struct buf *b = o->b;
	size_t need, cap;
	char *p;

	if (o->err != 0)
		return false;
	if (n > SIZE_MAX / 2 - b->len) {
		o->err = -ENOMEM;
		return false;
	}
	need = b->len + n + 1;
	if (b->alloc >= need)
		return true;
	cap = b->alloc > 0 ? b->alloc : 256;
	while (cap < need)
		cap *= 2;
	if (b->alloc == 0) {
		p = malloc(cap);
		if (p != NULL && b->len > 0)
			memcpy(p, b->s, b->len);
	} else {
		p = realloc(b->s, cap);
	}
	if (p == NULL) {
		o->err = -ENOMEM;
		return false;
	}
	b->s = p;
	b->alloc = cap;
	return true;
}

static void out_add(struct out *o, const char *p, size_t n)
{
	if (n == 0 || !out_room(o, n))
		return;
	memcpy(o->b->s + o->b->len, p, n);
	o->b->len += n;
}

static void out_s(struct out *o, const char *s)
{
	out_add(o, s, strlen(s));
}

static void out_c(struct out *o, char c)
{
	out_add(o, &c, 1);
}

static void out_u64(struct out *o, uint64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), " %llu", (unsigned long long)v);

	out_add(o, num, (size_t)n);
}

/* Raw string bytes: line breaks (unfolding) and NULs dropped. */
static void out_text(struct out *o, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t j = i;

		while (j < n && p[j] != '\r' && p[j] != '\n' && p[j] != '\0')
			j++;
		out_add(o, p + i, j - i);
		i = j + 1;
	}
}

/* The content of a quoted string (between the quotes), unescaped. */
static void out_unquote(struct out *o, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\\' && i + 1 < n)
			i++;
		if (p[i] != '\r' && p[i] != '\n' && p[i] != '\0')
			out_c(o, p[i]);
	}
}

static size_t str_begin(struct out *o)
{
	return o->b->len;
}

/*
 * Turn the bytes appended since start into an IMAP string: quoted when
 * they are short 7-bit text, with " and \\ escaped; a literal otherwise.
 * Text meant for people (subject, display names) goes out as a literal
 * rather than escaped, as Dovecot and Cyrus send it.
 */
static void str_end_as(struct out *o, size_t start, bool human)
{
	size_t n, esc = 0;
	bool lit;
	char *s;

	if (o->err != 0)
		return;
	n = o->b->len - start;
	lit = n >= 1024;
	s = o->b->s + start;
	for (size_t i = 0; i < n && !lit; i++) {
		unsigned char c = (unsigned char)s[i];

		lit = c >= 0x80 || c == '\r' || c == '\n' || c == '\0' ||
		      (human && (c == '"' || c == '\\'));
		esc += c == '"' || c == '\\';
	}
	if (lit) {
		char pre[32];
		int k = snprintf(pre, sizeof(pre), "{%zu}\r\n", n);

		if (!out_room(o, (size_t)k))
			return;
		s = o->b->s + start;
		memmove(s + k, s, n);
		memcpy(s, pre, (size_t)k);
		o->b->len += (size_t)k;
		return;
	}
	if (!out_room(o, esc + 2))
		return;
	s = o->b->s + start;
	s[n + esc + 1] = '"';
	for (size_t i = n, j = n + esc; i > 0; i--, j--) {
		s[j] = s[i - 1];
		if (s[i - 1] == '"' || s[i - 1] == '\\')
			s[--j] = '\\';
	}
	s[0] = '"';
	o->b->len += esc + 2;
}

static void str_end(struct out *o, size_t start)
{
	str_end_as(o, start, false);
}

/* A header value, unfolded, surrounding whitespace trimmed, or NIL. */
static void out_nvalue_as(struct out *o, const char *b,
			  const struct imap_mime_span *s, bool human)
{
	size_t p, e, st;

	if (s->off == ABSENT) {
		out_s(o, "NIL");
		return;
	}
	/*
	 * Dovecot's rule: blanks after the colon go, the rest stays as
	 * unfolded (a value starting on the next line keeps that line's
	 * blank; trailing blanks stay). Text for people is trimmed.
	 */
	p = s->off;
	e = s->off + s->len;
	while (p < e &&
	       (is_wsp(b[p]) || (human && (b[p] == '\r' || b[p] == '\n'))))
		p++;
	while (human && e > p &&
	       (is_wsp(b[e - 1]) || b[e - 1] == '\r' || b[e - 1] == '\n'))
		e--;
	st = str_begin(o);
	out_text(o, b + p, e - p);
	str_end_as(o, st, human);
}

static void out_nvalue(struct out *o, const char *b,
		       const struct imap_mime_span *s)
{
	out_nvalue_as(o, b, s, false);
}

/* ---- addresses (RFC 5322 §3.4, with obsolete forms) ---- */

enum tok_kind {
	TK_END,
	TK_WORD,    /* atom (dots included) */
	TK_QUOTED,  /* quoted string, quotes included */
	TK_DLIT,    /* [domain literal] */
	TK_SPECIAL, /* one of < > @ , ; : and stray others */
};

struct tok {
	enum tok_kind kind;
	size_t off, len;
	char c;
};

struct lex {
	const char *b;
	size_t p, end;
	size_t cmt, cmt_len; /* the last comment seen: a fallback name */
};

static void lex_cfws(struct lex *lx)
{
	for (;;) {
		size_t p = lx->p;

		while (p < lx->end && (is_wsp(lx->b[p]) || lx->b[p] == '\r' ||
				       lx->b[p] == '\n'))
			p++;
		lx->p = p;
		if (p >= lx->end || lx->b[p] != '(')
			return;
		skip_cfws(lx->b, &lx->p, lx->end);
		lx->cmt = p + 1;
		lx->cmt_len = lx->p - p - 1;
		if (lx->cmt_len > 0 && lx->b[lx->p - 1] == ')')
			lx->cmt_len--;
	}
}

static bool is_atext(char c)
{
	return (unsigned char)c > 0x20 && c != 0x7f &&
	       strchr("()<>@,;:\\\"[]", c) == NULL;
}

static void lex_next(struct lex *lx, struct tok *t)
{
	const char *b = lx->b;
	size_t p;

	lex_cfws(lx);
	p = lx->p;
	t->off = p;
	t->c = 0;
	if (p >= lx->end) {
		t->kind = TK_END;
		t->len = 0;
		return;
	}
	if (b[p] == '"') {
		t->kind = TK_QUOTED;
		p = quoted_end(b, p, lx->end);
	} else if (b[p] == '[') {
		const char *rb = memchr(b + p, ']', lx->end - p);

		t->kind = TK_DLIT;
		p = rb != NULL ? (size_t)(rb - b) + 1 : lx->end;
	} else if (is_atext(b[p])) {
		t->kind = TK_WORD;
		while (p < lx->end && is_atext(b[p]))
			p++;
	} else {
		t->kind = TK_SPECIAL;
		t->c = b[p++];
	}
	t->len = p - t->off;
	lx->p = p;
}

static bool tok_is(const struct tok *t, char c)
{
	return t->kind == TK_SPECIAL && t->c == c;
}

static bool tok_word(const struct tok *t)
{
	return t->kind == TK_WORD || t->kind == TK_QUOTED;
}

/* Does the quoted string b[off..off+len) end with its closing quote? */
static bool quoted_closed(const char *b, size_t off, size_t len)
{
	for (size_t p = off + 1; p < off + len; p++) {
		if (b[p] == '\\')
			p++;
		else if (b[p] == '"')
			return p == off + len - 1;
	}
	return false;
}

/* A display name: words joined by one space, quoted strings unquoted. */
struct words {
	size_t off[16], len[16];
	bool quoted[16];
	unsigned n;
};

static void out_words(struct out *o, const char *b, const struct words *w)
{
	size_t st = str_begin(o);

	for (unsigned i = 0; i < w->n; i++) {
		if (i > 0)
			out_c(o, ' ');
		if (w->quoted[i])
			out_unquote(
				o, b + w->off[i] + 1,
				w->len[i] - 1 -
					quoted_closed(b, w->off[i], w->len[i]));
		else
			out_text(o, b + w->off[i], w->len[i]);
	}
	str_end_as(o, st, true);
}

/* Local part or domain: tokens as written, CFWS dropped; or fallback. */
static void out_joined(struct out *o, const char *b, const struct words *w,
		       const char *fallback)
{
	size_t st = str_begin(o);

	/*
	 * Quoted local parts lose their quotes, as in Dovecot; an unclosed
	 * one is no local part (MISSING_MAILBOX, as Dovecot answers too).
	 */
	for (unsigned i = 0; i < w->n; i++)
		if (w->quoted[i] && quoted_closed(b, w->off[i], w->len[i]))
			out_unquote(o, b + w->off[i] + 1, w->len[i] - 2);
		else if (!w->quoted[i])
			out_text(o, b + w->off[i], w->len[i]);
	if (o->b->len == st)
		out_s(o, fallback);
	str_end(o, st);
}

static void words_add(struct words *w, const struct tok *t)
{
	if (w->n < 16) {
		w->off[w->n] = t->off;
		w->len[w->n] = t->len;
		w->quoted[w->n] = t->kind == TK_QUOTED;
		w->n++;
	} else if (!w->quoted[15] && t->kind != TK_QUOTED) {
		/* Long phrases: the tail stays as one raw run. */
		w->len[15] = t->off + t->len - w->off[15];
	}
}

/* Collect words, dots and domain literals up to the next special. */
/*
 * Collect words (and, for domains, domain literals) up to the next
 * special; a domain is one word: what follows it is junk to skip, as
 * Dovecot skips it ("a@b c" is a@b).
 */
static void lex_words(struct lex *lx, struct words *w, struct tok *t, bool dom)
{
	w->n = 0;
	for (;;) {
		lex_next(lx, t);
		if ((tok_word(t) || (dom && t->kind == TK_DLIT)) &&
		    !(dom && w->n == 1))
			words_add(w, t);
		else
			return;
	}
}

static void out_mailbox(struct out *o, const struct lex *lx,
			const struct words *name, size_t cmt, size_t cmt_len,
			const struct words *route, const struct words *local,
			const struct words *domain, bool broken)
{
	const char *b = lx->b;

	out_c(o, '(');
	if (name->n > 0) {
		size_t st = o->b->len;

		out_words(o, b, name);
		/* An empty name ("" <a@b>) is no name, as in Dovecot. */
		if (o->err == 0 && o->b->len == st + 2 && o->b->s[st] == '"') {
			o->b->len = st;
			out_s(o, "NIL");
		}
	} else if (cmt != ABSENT && cmt_len > 0) {
		size_t st = str_begin(o);

		out_unquote(o, b + cmt, cmt_len); /* \x escapes too */
		str_end_as(o, st, true);
	} else {
		out_s(o, "NIL");
	}
	out_c(o, ' ');
	if (route != NULL && route->n > 0) {
		size_t st = str_begin(o);

		out_text(o, b + route->off[0],
			 route->off[route->n - 1] + route->len[route->n - 1] -
				 route->off[0]);
		str_end(o, st);
	} else {
		out_s(o, "NIL");
	}
	out_c(o, ' ');
	out_joined(o, b, local, "MISSING_MAILBOX");
	out_c(o, ' ');
	/* An unclosed "<": Dovecot's SYNTAX_ERROR for the host. */
	if (broken)
		out_s(o, "\"SYNTAX_ERROR\"");
	else
		out_joined(o, b, domain, "MISSING_DOMAIN");
	out_c(o, ')');
}

/*
 * The route of an angle address ("@a,@b:"), then local@domain up to ">".
 * Route text is kept as one span from its first "@" to before ":".
 */
static void angle_addr(struct out *o, struct lex *lx, const struct words *name,
		       size_t cmt, size_t cmt_len)
{
	struct words route = {.n = 0}, local, domain = {.n = 0};
	struct tok t;
	size_t save = lx->p;

	lex_next(lx, &t);
	if (tok_is(&t, '@')) {
		size_t r0 = t.off;
		const char *colon = memchr(lx->b + r0, ':', lx->end - r0);
		const char *gt = memchr(lx->b + r0, '>', lx->end - r0);

		if (colon != NULL && (gt == NULL || colon < gt)) {
			route.n = 1;
			route.off[0] = r0;
			route.len[0] = (size_t)(colon - lx->b) - r0;
			route.quoted[0] = false;
			lx->p = (size_t)(colon - lx->b) + 1;
			save = lx->p;
		}
	}
	lx->p = save;
	lex_words(lx, &local, &t, false);
	if (tok_is(&t, '@'))
		lex_words(lx, &domain, &t, true);
	/* An unclosed "<" ends at the next "," (Dovecot's reading). */
	while (t.kind != TK_END && !tok_is(&t, '>') && !tok_is(&t, ','))
		lex_next(lx, &t);
	if (tok_is(&t, ','))
		lx->p = t.off; /* the list's separator: leave it */
	/* "<>" too is an address: MISSING_MAILBOX, as in Dovecot. */
	out_mailbox(o, lx, name, cmt, cmt_len, &route, &local, &domain,
		    !tok_is(&t, '>'));
}

/* Skip to the "," or ";" that ends a broken item (not consuming it). */
static void skip_item(struct lex *lx, struct tok *t)
{
	while (t->kind != TK_END && !tok_is(t, ',') && !tok_is(t, ';')) {
		size_t before = lx->p;

		lex_next(lx, t);
		if (tok_is(t, ',') || tok_is(t, ';')) {
			lx->p = before;
			return;
		}
	}
}

/*
 * One address list. Returns the number of entries written (group
 * markers included); 0 means "NIL" was written.
 */
static unsigned addr_list(struct out *o, const char *b,
			  const struct imap_mime_span *s)
{
	struct lex lx = {b, s->off, s->off + s->len, ABSENT, 0};
	size_t start = o->b->len;
	unsigned count = 0;
	bool group = false;
	struct words name, domain;
	struct tok t;

	if (s->off == ABSENT)
		goto out_nil;
	out_c(o, '(');
	for (;;) {
		size_t before = o->b->len;

		lx.cmt = ABSENT;
		lex_words(&lx, &name, &t, false);
		if (tok_is(&t, '<')) {
			angle_addr(o, &lx, &name, lx.cmt, lx.cmt_len);
			lex_next(&lx, &t);
		} else if (tok_is(&t, ':') && !group) {
			out_s(o, "(NIL NIL ");
			out_words(o, b, &name);
			out_s(o, " NIL)");
			group = true;
			count++;
			continue;
		} else if (tok_is(&t, '@')) {
			struct words none = {.n = 0};

			lex_words(&lx, &domain, &t, true);
			out_mailbox(o, &lx, &none, lx.cmt, lx.cmt_len, NULL,
				    &name, &domain, false);
		} else if (name.n > 0) {
			struct words none = {.n = 0};

			/* A bare word: a mailbox without a domain. */
			out_mailbox(o, &lx, &none, lx.cmt, lx.cmt_len, NULL,
				    &name, &none, false);
		}
		if (o->b->len != before)
			count++;
		if (!tok_is(&t, ',') && !tok_is(&t, ';') && t.kind != TK_END) {
			skip_item(&lx, &t);
			lex_next(&lx, &t);
		}
		if (tok_is(&t, ';') && group) {
			out_s(o, "(NIL NIL NIL NIL)");
			group = false;
			count++;
		}
		if (t.kind == TK_END)
			break;
	}
	if (group) {
		out_s(o, "(NIL NIL NIL NIL)");
		count++;
	}
	if (count > 0) {
		out_c(o, ')');
		return count;
	}
	if (o->err == 0)
		o->b->len = start;
out_nil:
	out_s(o, "NIL");
	return 0;
}

/* ---- ENVELOPE ---- */

enum {
	ENV_DATE,
	ENV_SUBJECT,
	ENV_FROM,
	ENV_SENDER,
	ENV_REPLY_TO,
	ENV_TO,
	ENV_CC,
	ENV_BCC,
	ENV_IN_REPLY_TO,
	ENV_MESSAGE_ID,
	ENV_N,
};

static void envelope(struct out *o, const struct imap_mime_msg *m,
		     const struct imap_mime_part *p)
{
	static const char *const names[ENV_N] = {
		"Date", "Subject", "From", "Sender",	  "Reply-To",
		"To",	"Cc",	   "Bcc",  "In-Reply-To", "Message-ID",
	};
	struct imap_mime_span s[ENV_N];
	const char *b = m->base;
	size_t pos = p->hdr_off, hend = p->hdr_off + p->hdr_len;
	struct field f;

	for (int i = 0; i < ENV_N; i++)
		s[i].off = ABSENT, s[i].len = 0;
	while (field_next(b, &pos, hend, &f))
		for (int i = 0; i < ENV_N; i++)
			span_set(b, &s[i], &f, names[i]);

	out_c(o, '(');
	out_nvalue(o, b, &s[ENV_DATE]);
	out_c(o, ' ');
	out_nvalue_as(o, b, &s[ENV_SUBJECT], true);
	for (int i = ENV_FROM; i <= ENV_BCC; i++) {
		size_t before = o->b->len;

		out_c(o, ' ');
		/* RFC 3501 §7.4.2: absent or empty Sender/Reply-To: From. */
		if (addr_list(o, b, &s[i]) == 0 &&
		    (i == ENV_SENDER || i == ENV_REPLY_TO) && o->err == 0) {
			o->b->len = before;
			out_c(o, ' ');
			(void)addr_list(o, b, &s[ENV_FROM]);
		}
	}
	out_c(o, ' ');
	out_nvalue(o, b, &s[ENV_IN_REPLY_TO]);
	out_c(o, ' ');
	out_nvalue(o, b, &s[ENV_MESSAGE_ID]);
	out_c(o, ')');
}

int imap_mime_envelope(const struct imap_mime_msg *m, int idx, struct buf *out)
{
	struct out o = {out, 0};

	if (idx < 0 || (unsigned)idx >= m->nparts ||
	    (idx > 0 && m->part[m->part[idx].parent].kind != IMAP_MIME_MESSAGE))
		return -EINVAL;
	envelope(&o, m, &m->part[idx]);
	return o.err;
}

/* ---- BODYSTRUCTURE ---- */

/* "name*3*" or "name*3": the section number, or -1. */
static long param_section(const char *b, const struct param *pr,
			  size_t *base_len, bool *ext)
{
	const char *s = b + pr->name, *star;
	size_t n = pr->name_len;
	long v = 0;

	*ext = n > 0 && s[n - 1] == '*';
	if (*ext)
		n--;
	star = memchr(s, '*', n);
	if (star == NULL || star + 1 == s + n)
		return -1;
	*base_len = (size_t)(star - s);
	for (const char *d = star + 1; d < s + n; d++) {
		if (*d < '0' || *d > '9' || v > 1000)
			return -1;
		v = v * 10 + (*d - '0');
	}
	return v;
}

static void out_param_val(struct out *o, const char *b, const struct param *pr)
{
	if (pr->quoted)
		out_unquote(o, b + pr->val, pr->val_len);
	else
		out_text(o, b + pr->val, pr->val_len);
}

/*
 * RFC 2231 continuations (name*0, name*1 ...) are joined into one
 * parameter, called name* when any section is extended (charset'lang'
 * and %XX stay as written), as Dovecot does.
 */
static void out_param(struct out *o, const char *b, size_t params, size_t end,
		      const struct param *pr)
{
	size_t st, blen = 0, blen2;
	struct param q;
	bool ext, ext2, any_ext = false;
	long sec = param_section(b, pr, &blen, &ext);

	if (sec < 0) {
		st = str_begin(o);
		out_text(o, b + pr->name, pr->name_len);
		str_end(o, st);
		out_c(o, ' ');
		st = str_begin(o);
		out_param_val(o, b, pr);
		str_end(o, st);
		return;
	}
	/* Is any section extended? Then the joined name ends in '*'. */
	for (size_t p = params; param_next(b, &p, end, &q);)
		if (param_section(b, &q, &blen2, &ext2) >= 0 && blen2 == blen &&
		    memcmp(b + q.name, b + pr->name, blen) == 0)
			any_ext |= ext2;
	st = str_begin(o);
	out_text(o, b + pr->name, blen);
	if (any_ext)
		out_c(o, '*');
	str_end(o, st);
	out_c(o, ' ');
	st = str_begin(o);
	for (long want = 0; want <= 1000; want++) {
		bool found = false;

		for (size_t p = params; !found && param_next(b, &p, end, &q);) {
			if (param_section(b, &q, &blen2, &ext2) == want &&
			    blen2 == blen &&
			    memcmp(b + q.name, b + pr->name, blen) == 0) {
				out_param_val(o, b, &q);
				found = true;
			}
		}
		if (!found)
			break;
	}
	str_end(o, st);
}

static void out_params(struct out *o, const char *b, size_t params, size_t end,
		       bool default_charset)
{
	struct param pr;
	size_t p, blen;
	bool first = true, charset = false, ext;

	/* Dovecot's order: plain parameters, then the joined RFC 2231 ones. */
	for (int pass = 0; pass < 2 && params != ABSENT; pass++) {
		for (p = params; param_next(b, &p, end, &pr);) {
			long sec = param_section(b, &pr, &blen, &ext);

			if (pass == 0 ? sec >= 0 : sec != 0)
				continue; /* later sections join section 0 */
			out_s(o, first ? "(" : " ");
			first = false;
			charset |= ieq(b + pr.name, pr.name_len, "charset");
			out_param(o, b, params, end, &pr);
		}
	}
	if (default_charset && !charset) {
		out_s(o, first ? "(" : " ");
		first = false;
		out_s(o, "\"charset\" \"us-ascii\"");
	}
	out_s(o, first ? "NIL" : ")");
}

static void out_token_or(struct out *o, const char *b, size_t p, size_t n,
			 const char *dflt)
{
	size_t st = str_begin(o);

	if (n > 0)
		out_text(o, b + p, n);
	else
		out_s(o, dflt);
	str_end(o, st);
}

static void out_disposition(struct out *o, const char *b,
			    const struct imap_mime_span *s)
{
	size_t p = s->off, end, n;

	if (s->off == ABSENT)
		goto out_nil;
	end = s->off + s->len;
	skip_cfws(b, &p, end);
	n = token(b, &p, end);
	if (n == 0)
		goto out_nil;
	out_c(o, '(');
	out_token_or(o, b, p - n, n, "");
	out_c(o, ' ');
	out_params(o, b, p, end, false);
	out_c(o, ')');
	return;
out_nil:
	out_s(o, "NIL");
}

static void out_language(struct out *o, const char *b,
			 const struct imap_mime_span *s)
{
	size_t p = s->off, end, n;
	bool first = true;

	if (s->off != ABSENT) {
		end = s->off + s->len;
		for (;;) {
			skip_cfws(b, &p, end);
			n = token(b, &p, end);
			if (n == 0)
				break;
			out_s(o, first ? "(" : " ");
			first = false;
			out_token_or(o, b, p - n, n, "");
			skip_cfws(b, &p, end);
			if (p >= end || b[p] != ',')
				break;
			p++;
		}
	}
	out_s(o, first ? "NIL" : ")");
}

static void out_ext_common(struct out *o, const char *b,
			   const struct imap_mime_part *p)
{
	out_c(o, ' ');
	out_disposition(o, b, &p->cdisp);
	out_c(o, ' ');
	out_language(o, b, &p->clang);
	out_c(o, ' ');
	out_nvalue(o, b, &p->cloc);
}

static void body(struct out *o, const struct imap_mime_msg *m, int idx,
		 bool ext);

static void body_multipart(struct out *o, const struct imap_mime_msg *m,
			   const struct imap_mime_part *p, bool ext)
{
	const char *b = m->base;
	struct ctype ct;

	(void)ctype_parse(b, &p->ctype, &ct);
	if (p->child < 0)
		out_s(o, ext ? "(\"text\" \"plain\" (\"charset\" \"us-ascii\") "
			       "NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)"
			     : "(\"text\" \"plain\" (\"charset\" \"us-ascii\") "
			       "NIL NIL \"7bit\" 0 0)");
	for (int c = p->child; c >= 0; c = m->part[c].next)
		body(o, m, c, ext);
	out_c(o, ' ');
	out_token_or(o, b, ct.sub, ct.sub_len, "x-unknown");
	if (!ext)
		return;
	out_c(o, ' ');
	out_params(o, b, ct.params, p->ctype.off + p->ctype.len, false);
	out_ext_common(o, b, p);
}

static void body_leaf(struct out *o, const struct imap_mime_msg *m,
		      const struct imap_mime_part *p, bool ext)
{
	const char *b = m->base;
	struct ctype ct;
	bool text = false, has = ctype_parse(b, &p->ctype, &ct), encap;
	size_t cte = 0, cte_n = 0;

	/*
	 * message/global is written as a basic body: the envelope form is
	 * RFC 9051's only, and IMAP4rev1 parsers (and Dovecot 2.3) expect
	 * none. Its sections (2.HEADER, 2.1) work all the same.
	 */
	encap = p->kind == IMAP_MIME_MESSAGE &&
		!(has && ieq(b + ct.sub, ct.sub_len, "global"));
	if (p->kind == IMAP_MIME_MESSAGE && !has) {
		out_s(o, "\"message\" \"rfc822\"");
	} else if (!has) {
		out_s(o, "\"text\" \"plain\"");
		text = true;
	} else if (p->kind == IMAP_MIME_LEAF &&
		   ieq(b + ct.type, ct.type_len, "message") &&
		   ieq(b + ct.sub, ct.sub_len, "rfc822")) {
		/* Opaque (too deep): no envelope to give. */
		out_s(o, "\"application\" \"octet-stream\"");
	} else {
		text = ieq(b + ct.type, ct.type_len, "text");
		out_token_or(o, b, ct.type, ct.type_len, "");
		out_c(o, ' ');
		out_token_or(o, b, ct.sub, ct.sub_len,
			     text ? "plain" : "unknown");
	}
	out_c(o, ' ');
	out_params(o, b, has ? ct.params : ABSENT,
		   has ? p->ctype.off + p->ctype.len : 0, text);
	out_c(o, ' ');
	out_nvalue(o, b, &p->cid);
	out_c(o, ' ');
	out_nvalue(o, b, &p->cdesc);
	out_c(o, ' ');
	if (p->cte.off != ABSENT) {
		cte = p->cte.off;
		skip_cfws(b, &cte, p->cte.off + p->cte.len);
		cte_n = token(b, &cte, p->cte.off + p->cte.len);
		cte -= cte_n;
	}
	out_token_or(o, b, cte, cte_n, "7bit");
	out_u64(o, imap_mime_crlf_len(b, p->body_off, p->body_len));
	if (encap) {
		out_c(o, ' ');
		envelope(o, m, &m->part[p->child]);
		out_c(o, ' ');
		body(o, m, p->child, ext);
	}
	if (text || encap)
		out_u64(o, count_lf(b, p->body_off, p->body_len));
	if (!ext)
		return;
	out_c(o, ' ');
	out_nvalue(o, b, &p->cmd5);
	out_ext_common(o, b, p);
}

static void body(struct out *o, const struct imap_mime_msg *m, int idx,
		 bool ext)
{
	const struct imap_mime_part *p = &m->part[idx];

	out_c(o, '(');
	if (p->kind == IMAP_MIME_MULTIPART)
		body_multipart(o, m, p, ext);
	else
		body_leaf(o, m, p, ext);
	out_c(o, ')');
}

int imap_mime_bodystructure(const struct imap_mime_msg *m, int idx,
			    bool extended, struct buf *out)
{
	struct out o = {out, 0};

	if (idx < 0 || (unsigned)idx >= m->nparts)
		return -EINVAL;
	body(&o, m, idx, extended);
	return o.err;
}

/* ---- sections ---- */

/* Does the "(name ...)" list hold field name b[off..off+n)? */
static bool flist_has(const char *l, size_t ln, const char *b, size_t off,
		      size_t n)
{
	size_t p = 0;

	while (p < ln) {
		size_t s, e;

		while (p < ln && (l[p] == ' ' || l[p] == '(' || l[p] == ')'))
			p++;
		if (p >= ln)
			break;
		if (l[p] == '"') {
			s = ++p;
			while (p < ln && l[p] != '"')
				p += l[p] == '\\' && p + 1 < ln ? 2 : 1;
			e = p < ln ? p : ln;
			p = e + 1;
		} else {
			s = p;
			while (p < ln && l[p] != ' ' && l[p] != ')')
				p++;
			e = p;
		}
		if (e - s == n) {
			size_t i = 0;

			while (i < n && lc((unsigned char)l[s + i]) ==
						lc((unsigned char)b[off + i]))
				i++;
			if (i == n)
				return true;
		}
	}
	return false;
}

/* A valid field list: "(" one or more astrings ")" and nothing after. */
static bool flist_valid(const char *l, size_t ln)
{
	size_t p = 1, names = 0;

	if (ln < 2 || l[0] != '(' || l[ln - 1] != ')')
		return false;
	while (p < ln - 1) {
		if (l[p] == ' ') {
			p++;
			continue;
		}
		if (l[p] == '"') {
			for (p++; p < ln - 1 && l[p] != '"'; p++)
				if (l[p] == '\\')
					p++;
			if (p >= ln - 1)
				return false;
			p++;
		} else {
			size_t s = p;

			while (p < ln - 1 && l[p] != ' ' && is_atext(l[p]) &&
			       l[p] != '(')
				p++;
			if (p == s)
				return false;
		}
		names++;
	}
	return names > 0;
}

/* The writer's partial window over the bytes as sent. */
struct win {
	uint64_t pos, from, to;
	imap_mime_write_fn *fn;
	void *arg;
	int ret;
};

static void win_put(struct win *w, const char *p, size_t n)
{
	uint64_t s = w->pos, e = w->pos + n;

	w->pos = e;
	if (w->ret != 0 || n == 0 || e <= w->from || s >= w->to)
		return;
	if (s < w->from) {
		p += w->from - s;
		s = w->from;
	}
	if (e > w->to)
		e = w->to;
	w->ret = w->fn(w->arg, p, (size_t)(e - s));
}

/* Stored bytes with each bare LF sent as CRLF. */
static void win_crlf(struct win *w, const char *b, size_t off, size_t len)
{
	size_t i = off, end = off + len;

	while (i < end && w->ret == 0 && w->pos < w->to) {
		const char *lf = memchr(b + i, '\n', end - i);
		size_t j;

		if (lf == NULL) {
			win_put(w, b + i, end - i);
			return;
		}
		j = (size_t)(lf - b);
		if (j == 0 || b[j - 1] != '\r') {
			win_put(w, b + i, j - i);
			win_put(w, "\r\n", 2);
		} else {
			win_put(w, b + i, j + 1 - i);
		}
		i = j + 1;
	}
}

static void win_fields(struct win *w, const struct imap_mime_msg *m,
		       const struct imap_mime_section *s)
{
	const char *b = m->base;
	size_t pos = s->off;
	struct field f;

	while (field_next(b, &pos, s->off + s->len, &f))
		if (flist_has(s->fields, s->fields_len, b, f.start,
			      f.name_len) != s->fields_not)
			win_crlf(w, b, f.start, f.end - f.start);
	/* RFC 3501 §6.4.5: the blank line ending the header is included. */
	win_put(w, "\r\n", 2);
}

static int count_fn(void *arg, const char *p, size_t n)
{
	(void)arg;
	(void)p;
	(void)n;
	return 0;
}

/* Parse "1.2.3" into the part it names; *pos past it (and its dot). */
static int section_part(const struct imap_mime_msg *m, const char *spec,
			size_t n, size_t *pos, int *idx_out, int *msg_out)
{
	size_t p = 0;
	int msg = 0, cur = 0, again = -1; /* again: a leaf named by "1" */

	while (p < n && spec[p] >= '1' && spec[p] <= '9') {
		unsigned long num = 0;
		const struct imap_mime_part *mp = &m->part[msg];

		while (p < n && spec[p] >= '0' && spec[p] <= '9' &&
		       num < 100000)
			num = num * 10 + (unsigned long)(spec[p++] - '0');
		if (p < n && spec[p] != '.')
			return -EINVAL;
		if (mp->kind == IMAP_MIME_MULTIPART) {
			cur = mp->child;
			while (cur >= 0 && --num > 0)
				cur = m->part[cur].next;
			if (cur < 0)
				return -ENOENT;
		} else if (num == 1 && msg != again) {
			cur = msg;
			if (m->part[cur].kind == IMAP_MIME_LEAF)
				again = cur;
		} else {
			return -ENOENT;
		}
		/*
		 * The next number indexes inside this part. In a leaf only 1
		 * is valid, once: "2.1" of a text part is part 2, "2.1.1"
		 * is nothing, and "1.1" of a single-part message nothing
		 * (Dovecot's reading).
		 */
		if (m->part[cur].kind == IMAP_MIME_MESSAGE)
			msg = m->part[cur].child;
		else
			msg = cur;
		if (p < n)
			p++; /* the dot */
	}
	*pos = p;
	*idx_out = cur;
	*msg_out = msg;
	return 0;
}

int imap_mime_section_find(const struct imap_mime_msg *m, const char *spec,
			   size_t n, struct imap_mime_section *out)
{
	const struct imap_mime_part *p, *enc;
	size_t pos = 0, rest;
	int idx, msg, ret;
	const char *t;

	ret = section_part(m, spec, n, &pos, &idx, &msg);
	if (ret < 0)
		return ret;
	if (pos > 0 && spec[pos - 1] == '.' && pos == n)
		return -EINVAL; /* "1." */
	p = &m->part[idx];
	t = spec + pos;
	rest = n - pos;
	memset(out, 0, sizeof(*out));
	out->part = idx;
	/* HEADER and TEXT of a part: of the message it encapsulates. */
	enc = pos == 0			     ? p
	      : p->kind == IMAP_MIME_MESSAGE ? &m->part[p->child]
					     : NULL;
	if (rest == 0) {
		out->off = pos == 0 ? 0 : p->body_off;
		out->len = pos == 0 ? m->len : p->body_len;
	} else if (pos > 0 && ieq(t, rest, "MIME")) {
		out->off = p->hdr_off;
		out->len = p->hdr_len;
	} else if (enc != NULL && ieq(t, rest, "HEADER")) {
		out->off = enc->hdr_off;
		out->len = enc->hdr_len;
	} else if (enc != NULL && ieq(t, rest, "TEXT")) {
		out->off = enc->body_off;
		out->len = enc->body_len;
	} else if (enc != NULL && rest > 14 && ieq(t, 14, "HEADER.FIELDS ")) {
		out->fields = t + 14;
		out->fields_len = rest - 14;
	} else if (enc != NULL && rest > 18 &&
		   ieq(t, 18, "HEADER.FIELDS.NOT ")) {
		out->fields = t + 18;
		out->fields_len = rest - 18;
		out->fields_not = true;
	} else {
		return pos > 0 && enc == NULL &&
				       (ieq(t, rest, "HEADER") ||
					ieq(t, rest, "TEXT"))
			       ? -ENOENT
			       : -EINVAL;
	}
	if (out->fields != NULL && enc != NULL) {
		if (!flist_valid(out->fields, out->fields_len))
			return -EINVAL;
		out->off = enc->hdr_off;
		out->len =
			header_fields_end(m->base, enc->hdr_off, enc->hdr_len) -
			enc->hdr_off;
		struct win w = {0, 0, UINT64_MAX, count_fn, NULL, 0};

		win_fields(&w, m, out);
		out->size = w.pos;
		return 0;
	}
	out->size = imap_mime_crlf_len(m->base, out->off, out->len);
	return 0;
}

static int section_emit(const struct imap_mime_msg *m,
			const struct imap_mime_section *s, struct win *w)
{
	if (s->fields != NULL)
		win_fields(w, m, s);
	else
		win_crlf(w, m->base, s->off, s->len);
	return w->ret;
}

int imap_mime_section_write(const struct imap_mime_msg *m,
			    const struct imap_mime_section *s, uint64_t from,
			    uint64_t count, imap_mime_write_fn *fn, void *arg)
{
	struct win w = {0, from, UINT64_MAX, fn, arg, 0};

	if (count < UINT64_MAX - from)
		w.to = from + count;
	return section_emit(m, s, &w);
}

int imap_mime_buf_append(void *arg, const char *p, size_t n)
{
	struct out o = {arg, 0};

	out_add(&o, p, n);
	return o.err;
}

/* ---- decoding (BINARY, SEARCH BODY) ---- */

enum cte {
	CTE_IDENTITY,
	CTE_BASE64,
	CTE_QP,
	CTE_UNKNOWN,
};

static enum cte part_cte(const char *b, const struct imap_mime_part *p)
{
	size_t s, e, n;

	if (p->cte.off == ABSENT)
		return CTE_IDENTITY;
	s = p->cte.off;
	e = p->cte.off + p->cte.len;
	skip_cfws(b, &s, e);
	n = token(b, &s, e);
	s -= n;
	if (n == 0 || ieq(b + s, n, "7bit") || ieq(b + s, n, "8bit") ||
	    ieq(b + s, n, "binary"))
		return CTE_IDENTITY;
	if (ieq(b + s, n, "base64"))
		return CTE_BASE64;
	if (ieq(b + s, n, "quoted-printable"))
		return CTE_QP;
	return CTE_UNKNOWN;
}

/* Decoded bytes gathered into small chunks for the window. */
struct dec {
	struct win *w;
	size_t n;
	char d[512];
};

static void dec_put(struct dec *d, char c)
{
	d->d[d->n++] = c;
	if (d->n == sizeof(d->d)) {
		win_put(d->w, d->d, d->n);
		d->n = 0;
	}
}

static void dec_flush(struct dec *d)
{
	win_put(d->w, d->d, d->n);
	d->n = 0;
}

static int b64_val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* RFC 2045 §6.8: characters outside the alphabet are ignored. */
static void win_base64(struct win *w, const char *b, size_t off, size_t len)
{
	struct dec d = {.w = w, .n = 0};
	uint32_t acc = 0;
	unsigned bits = 0;

	for (size_t i = off; i < off + len && w->ret == 0; i++) {
		int v = b64_val(b[i]);

		if (b[i] == '=') {
			/* Padding ends a quantum; a later block starts over. */
			acc = 0;
			bits = 0;
			continue;
		}
		if (v < 0)
			continue;
		acc = (acc << 6 | (uint32_t)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			dec_put(&d, (char)(acc >> bits & 0xff));
		}
	}
	dec_flush(&d);
}

static int hex_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)lc((unsigned char)c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/*
 * RFC 2045 §6.7: trailing whitespace on a line is dropped, a final "="
 * joins the next line, other line ends are CRLF; a broken "=" stays.
 */
static void win_qp(struct win *w, const char *b, size_t off, size_t len)
{
	struct dec d = {.w = w, .n = 0};
	size_t p = off, end = off + len;

	while (p < end && w->ret == 0) {
		size_t e = line_end(b, p, end), ce = e;
		bool lf = b[e - 1] == '\n', soft = false;

		if (lf)
			ce--;
		if (ce > p && b[ce - 1] == '\r')
			ce--;
		while (ce > p && is_wsp(b[ce - 1]))
			ce--;
		for (size_t q = p; q < ce; q++) {
			int hi, lo;

			if (b[q] != '=') {
				dec_put(&d, b[q]);
				continue;
			}
			if (q + 1 == ce) {
				soft = true;
				break;
			}
			hi = q + 2 < ce ? hex_val(b[q + 1]) : -1;
			lo = q + 2 < ce ? hex_val(b[q + 2]) : -1;
			if (q + 2 < ce && hi >= 0 && lo >= 0) {
				dec_put(&d, (char)(hi << 4 | lo));
				q += 2;
			} else {
				dec_put(&d, '=');
			}
		}
		if (lf && !soft) {
			dec_put(&d, '\r');
			dec_put(&d, '\n');
		}
		p = e;
	}
	dec_flush(&d);
}

/* Raw header bytes, unfolded: CR and LF left out. */
static void win_text(struct win *w, const char *b, size_t s, size_t e)
{
	while (s < e) {
		size_t j = s;

		while (j < e && b[j] != '\r' && b[j] != '\n')
			j++;
		win_put(w, b + s, j - s);
		s = j + 1;
	}
}

static int win_decoded(struct win *w, const struct imap_mime_msg *m,
		       const struct imap_mime_part *p)
{
	switch (part_cte(m->base, p)) {
	case CTE_IDENTITY:
		win_crlf(w, m->base, p->body_off, p->body_len);
		break;
	case CTE_BASE64:
		win_base64(w, m->base, p->body_off, p->body_len);
		break;
	case CTE_QP:
		win_qp(w, m->base, p->body_off, p->body_len);
		break;
	case CTE_UNKNOWN:
		return -EPROTONOSUPPORT;
	}
	return w->ret;
}

/*
 * The header of a part whose body goes out decoded: its
 * Content-Transfer-Encoding fields left out and "Content-Transfer-Encoding:
 * binary" put last, so that the header still describes the bytes after it
 * (Dovecot's BINARY does the same). Lines that are no field stay.
 */
static void win_binary_header(struct win *w, const char *b,
			      const struct imap_mime_part *p)
{
	static const char cte_binary[] =
		"Content-Transfer-Encoding: binary\r\n";
	size_t fend = header_fields_end(b, p->hdr_off, p->hdr_len);
	size_t pos = p->hdr_off, cur = p->hdr_off;
	struct field f;

	while (field_next(b, &pos, fend, &f)) {
		if (!ieq(b + f.start, f.name_len, "Content-Transfer-Encoding"))
			continue;
		win_crlf(w, b, cur, f.start - cur);
		cur = f.end;
	}
	win_crlf(w, b, cur, fend - cur);
	if (fend > cur && b[fend - 1] != '\n')
		win_put(w, "\r\n", 2); /* a header cut off mid-line */
	win_put(w, cte_binary, sizeof(cte_binary) - 1);
	win_crlf(w, b, fend, p->hdr_off + p->hdr_len - fend);
}

/*
 * Part idx as BINARY sends it: its header if hdr, then its body; a leaf's
 * body decoded, a multipart's or message's body as stored between its
 * children, each child in turn with its header. The recursion is as deep
 * as the parse (IMAP_MIME_MAX_DEPTH).
 */
static int win_binary(struct win *w, const struct imap_mime_msg *m, int idx,
		      bool hdr)
{
	const struct imap_mime_part *p = &m->part[idx];
	const char *b = m->base;
	size_t cur = p->body_off, end = p->body_off + p->body_len;
	enum cte cte = CTE_IDENTITY;

	if (p->kind == IMAP_MIME_LEAF) {
		cte = part_cte(b, p);
		if (cte == CTE_UNKNOWN)
			return -EPROTONOSUPPORT;
	}
	if (hdr && (cte == CTE_BASE64 || cte == CTE_QP))
		win_binary_header(w, b, p);
	else if (hdr)
		win_crlf(w, b, p->hdr_off, p->hdr_len);
	if (p->kind == IMAP_MIME_LEAF)
		return win_decoded(w, m, p);
	for (int c = p->child; c >= 0 && w->ret == 0; c = m->part[c].next) {
		const struct imap_mime_part *cp = &m->part[c];
		int ret;

		if (cp->hdr_off > cur)
			win_crlf(w, b, cur, cp->hdr_off - cur);
		ret = win_binary(w, m, c, true);
		if (ret != 0)
			return ret;
		if (cp->body_off + cp->body_len > cur)
			cur = cp->body_off + cp->body_len;
	}
	if (end > cur)
		win_crlf(w, b, cur, end - cur);
	return w->ret;
}

int imap_mime_binary_write(const struct imap_mime_msg *m, int idx, bool hdr,
			   uint64_t from, uint64_t count,
			   imap_mime_write_fn *fn, void *arg,
			   uint64_t *size_out)
{
	struct win w = {0, from, UINT64_MAX, fn, arg, 0};
	int ret;

	if (idx < 0 || (unsigned)idx >= m->nparts)
		return -EINVAL;
	if (count < UINT64_MAX - from)
		w.to = from + count;
	ret = win_binary(&w, m, idx, hdr);
	if (size_out != NULL)
		*size_out = w.pos;
	return ret;
}

int imap_mime_binary_size(const struct imap_mime_msg *m, int idx, bool hdr,
			  uint64_t *size_out)
{
	return imap_mime_binary_write(m, idx, hdr, 0, UINT64_MAX, count_fn,
				      NULL, size_out);
}

/* ---- SEARCH ---- */

/* Knuth-Morris-Pratt over a stream, ASCII case-insensitive. */
struct match {
	const char *nd;
	size_t n, k;
	unsigned short fail[IMAP_MIME_NEEDLE_MAX];
};

static void match_init(struct match *mt, const char *nd, size_t n)
{
	size_t k = 0;

	mt->nd = nd;
	mt->n = n;
	mt->k = 0;
	if (n > 0)
		mt->fail[0] = 0;
	for (size_t i = 1; i < n; i++) {
		while (k > 0 &&
		       lc((unsigned char)nd[i]) != lc((unsigned char)nd[k]))
			k = mt->fail[k - 1];
		if (lc((unsigned char)nd[i]) == lc((unsigned char)nd[k]))
			k++;
		mt->fail[i] = (unsigned short)k;
	}
}

static int match_fn(void *arg, const char *p, size_t len)
{
	struct match *mt = arg;
	size_t k = mt->k;

	if (mt->n == 0)
		return 1;
	for (size_t i = 0; i < len; i++) {
		int c = lc((unsigned char)p[i]);

		while (k > 0 && lc((unsigned char)mt->nd[k]) != c)
			k = mt->fail[k - 1];
		if (lc((unsigned char)mt->nd[k]) == c)
			k++;
		if (k == mt->n)
			return 1;
	}
	mt->k = k;
	return 0;
}

/*
 * RFC 2047 encoded word at p: "=?charset?Q|B?text?=". Returns its end (0:
 * none) with the encoding and the text range.
 */
static size_t ew_parse(const char *b, size_t p, size_t end, char *enc,
		       size_t *text, size_t *text_end)
{
	size_t q = p + 2;

	if (end - p < 8 || b[p] != '=' || b[p + 1] != '?')
		return 0;
	while (q < end && b[q] != '?' && is_tchar(b[q]))
		q++;
	if (q == p + 2 || end - q < 5 || b[q] != '?' || b[q + 2] != '?')
		return 0;
	*enc = (char)lc((unsigned char)b[q + 1]);
	if (*enc != 'q' && *enc != 'b')
		return 0;
	q += 3;
	*text = q;
	for (; q + 1 < end && !(b[q] == '?' && b[q + 1] == '='); q++)
		if (b[q] == ' ' || b[q] == '\t' || b[q] == '\r' || b[q] == '\n')
			return 0;
	if (q + 1 >= end)
		return 0;
	*text_end = q;
	return q + 2;
}

static void win_ew_q(struct win *w, const char *b, size_t s, size_t e)
{
	struct dec d = {.w = w, .n = 0};

	for (size_t i = s; i < e; i++) {
		int hi = i + 2 < e ? hex_val(b[i + 1]) : -1;
		int lo = i + 2 < e ? hex_val(b[i + 2]) : -1;

		if (b[i] == '_') {
			dec_put(&d, ' ');
		} else if (b[i] == '=' && hi >= 0 && lo >= 0) {
			dec_put(&d, (char)(hi << 4 | lo));
			i += 2;
		} else {
			dec_put(&d, b[i]);
		}
	}
	dec_flush(&d);
}

/*
 * A header value as SEARCH sees it: unfolded, encoded words decoded
 * (their bytes in their own charset, not converted), and the blanks
 * between two adjacent encoded words dropped (RFC 2047 §6.2).
 */
static void win_header_value(struct win *w, const char *b, size_t off,
			     size_t len)
{
	size_t i = off, end = off + len, run = off, ws = ABSENT;
	bool after_ew = false;

	while (i < end && w->ret == 0) {
		size_t ts, te, ee;
		char enc;

		if (b[i] == '=' && (ee = ew_parse(b, i, end, &enc, &ts, &te))) {
			if (!(after_ew && ws == run))
				win_text(w, b, run, i);
			if (enc == 'q')
				win_ew_q(w, b, ts, te);
			else
				win_base64(w, b, ts, te - ts);
			i = run = ee;
			ws = ee;
			after_ew = true;
			continue;
		}
		if (!is_wsp(b[i]) && b[i] != '\r' && b[i] != '\n') {
			after_ew = false;
			ws = ABSENT;
		}
		i++;
	}
	win_text(w, b, run, end);
}

int imap_mime_header_get(const struct imap_mime_msg *m, int idx,
			 const char *name, unsigned nth, size_t *off_out,
			 size_t *len_out)
{
	const struct imap_mime_part *p;
	size_t pos;
	struct field f;

	if (idx < 0 || (unsigned)idx >= m->nparts)
		return -ENOENT;
	p = &m->part[idx];
	pos = p->hdr_off;
	while (field_next(m->base, &pos, p->hdr_off + p->hdr_len, &f)) {
		if (field_is(m->base, &f, name) && nth-- == 0) {
			*off_out = f.val;
			*len_out = f.val_end - f.val;
			return 0;
		}
	}
	return -ENOENT;
}

int imap_mime_header_value(const struct imap_mime_msg *m, int idx,
			   const char *name, unsigned nth, struct buf *out)
{
	struct out o = {out, 0};
	size_t off, len, end;
	int ret = imap_mime_header_get(m, idx, name, nth, &off, &len);

	if (ret < 0)
		return ret;
	end = off + len;
	while (off < end && (is_wsp(m->base[off]) || m->base[off] == '\r' ||
			     m->base[off] == '\n'))
		off++;
	while (end > off && is_wsp(m->base[end - 1]))
		end--;
	out_text(&o, m->base + off, end - off);
	return o.err;
}

int imap_mime_header_search(const struct imap_mime_msg *m, int idx,
			    const char *name, const char *needle, size_t n)
{
	struct match mt;
	const struct imap_mime_part *p;
	size_t pos;
	struct field f;

	if (n > IMAP_MIME_NEEDLE_MAX)
		return -E2BIG;
	if (idx < 0 || (unsigned)idx >= m->nparts)
		return 0;
	match_init(&mt, needle, n);
	p = &m->part[idx];
	pos = p->hdr_off;
	while (field_next(m->base, &pos, p->hdr_off + p->hdr_len, &f)) {
		struct win w = {0, 0, UINT64_MAX, match_fn, &mt, 0};

		if (name != NULL && !field_is(m->base, &f, name))
			continue;
		if (n == 0)
			return 1;
		mt.k = 0;
		if (name == NULL) {
			/* TEXT: the field's name too. */
			win_text(&w, m->base, f.start, f.val);
		}
		win_header_value(&w, m->base, f.val, f.val_end - f.val);
		if (w.ret == 1)
			return 1;
	}
	return 0;
}

static bool is_text_part(const struct imap_mime_msg *m,
			 const struct imap_mime_part *p)
{
	struct ctype ct;

	if (p->kind != IMAP_MIME_LEAF)
		return false;
	if (!ctype_parse(m->base, &p->ctype, &ct))
		return !p->in_digest;
	return ieq(m->base + ct.type, ct.type_len, "text");
}

int imap_mime_body_search(const struct imap_mime_msg *m, const char *needle,
			  size_t n)
{
	struct match mt;

	if (n > IMAP_MIME_NEEDLE_MAX)
		return -E2BIG;
	match_init(&mt, needle, n);
	for (unsigned i = 0; i < m->nparts; i++) {
		const struct imap_mime_part *p = &m->part[i];
		struct win w = {0, 0, UINT64_MAX, match_fn, &mt, 0};

		if (!is_text_part(m, p))
			continue;
		mt.k = 0;
		if (part_cte(m->base, p) == CTE_UNKNOWN)
			win_crlf(&w, m->base, p->body_off, p->body_len);
		else
			(void)win_decoded(&w, m, p);
		if (w.ret == 1)
			return 1;
	}
	return 0;
}

/* ---- dates (RFC 5322 §3.3, §4.3) ---- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static long days_from_civil(long y, unsigned mon, unsigned d)
{
	long era;
	unsigned yoe, doy, doe;

	y -= mon <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (mon + (mon > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (long)doe - 719468;
}

static long date_num(const char *s, size_t *p, size_t n, unsigned maxd,
		     unsigned *digits)
{
	long v = 0;

	skip_cfws(s, p, n);
	*digits = 0;
	while (*p < n && s[*p] >= '0' && s[*p] <= '9' && *digits < maxd) {
		v = v * 10 + (s[(*p)++] - '0');
		(*digits)++;
	}
	return *digits > 0 ? v : -1;
}

static size_t date_alpha(const char *s, size_t *p, size_t n)
{
	size_t st;

	skip_cfws(s, p, n);
	st = *p;
	while (*p < n && ((s[*p] | 0x20) >= 'a' && (s[*p] | 0x20) <= 'z'))
		(*p)++;
	return *p - st;
}

static int date_zone(const char *s, size_t p, size_t n)
{
	static const struct {
		const char *name;
		int min;
	} zones[] = {
		{"UT", 0},	  {"GMT", 0},	    {"Z", 0},
		{"EST", -5 * 60}, {"EDT", -4 * 60}, {"CST", -6 * 60},
		{"CDT", -5 * 60}, {"MST", -7 * 60}, {"MDT", -6 * 60},
		{"PST", -8 * 60}, {"PDT", -7 * 60},
	};
	size_t a;

	skip_cfws(s, &p, n);
	if (p < n && (s[p] == '+' || s[p] == '-')) {
		int sign = s[p] == '-' ? -1 : 1, v = 0, k = 0;

		for (p++; p < n && k < 4 && s[p] >= '0' && s[p] <= '9'; k++)
			v = v * 10 + (s[p++] - '0');
		if (k != 4 || v % 100 >= 60)
			return 0;
		return sign * (v / 100 * 60 + v % 100);
	}
	a = p;
	if (date_alpha(s, &p, n) == 0)
		return 0;
	for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++)
		if (ieq(s + a, p - a, zones[i].name))
			return zones[i].min;
	return 0; /* unknown names count as +0000 (RFC 5322 §4.3) */
}

int imap_mime_date_parse(const char *s, size_t n, time_t *t_out, int *zone_out)
{
	static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	size_t p = 0, a;
	long day, year, hh = 0, mm = 0, ss = 0;
	unsigned mon = 0, dg;
	int zone;

	a = p;
	if (date_alpha(s, &p, n) > 0) {
		skip_cfws(s, &p, n);
		if (p < n && s[p] == ',')
			p++;
	} else {
		p = a;
	}
	day = date_num(s, &p, n, 2, &dg);
	a = p;
	if (date_alpha(s, &p, n) < 3)
		return -EINVAL;
	skip_cfws(s, &a, n);
	for (size_t i = 0; i < 12; i++)
		if (lc((unsigned char)s[a]) == months[i * 3] &&
		    lc((unsigned char)s[a + 1]) == months[i * 3 + 1] &&
		    lc((unsigned char)s[a + 2]) == months[i * 3 + 2])
			mon = (unsigned)i + 1;
	year = date_num(s, &p, n, 4, &dg);
	if (day < 1 || day > 31 || mon == 0 || year < 0)
		return -EINVAL;
	/* RFC 5322 §4.3: two digits below 50 are 20xx, three are 1900+. */
	if (dg == 2)
		year += year < 50 ? 2000 : 1900;
	else if (dg == 3)
		year += 1900;
	hh = date_num(s, &p, n, 2, &dg);
	if (hh >= 0) {
		skip_cfws(s, &p, n);
		if (p >= n || s[p] != ':')
			return -EINVAL;
		p++;
		mm = date_num(s, &p, n, 2, &dg);
		skip_cfws(s, &p, n);
		if (p < n && s[p] == ':') {
			p++;
			ss = date_num(s, &p, n, 2, &dg);
		}
		if (hh > 23 || mm < 0 || mm > 59 || ss < 0 || ss > 60)
			return -EINVAL;
	} else {
		hh = 0;
	}
	zone = date_zone(s, p, n);
	*t_out = (time_t)(days_from_civil(year, mon, (unsigned)day) * 86400 +
			  hh * 3600 + mm * 60 + ss - (long)zone * 60);
	if (zone_out != NULL)
		*zone_out = zone;
	return 0;
}

int imap_mime_date(const struct imap_mime_msg *m, int idx, time_t *t_out,
		   int *zone_out)
{
	size_t off, len;
	int ret = imap_mime_header_get(m, idx, "Date", 0, &off, &len);

	if (ret < 0)
		return ret;
	return imap_mime_date_parse(m->base + off, len, t_out, zone_out);
}
