/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/imapd/parse: the IMAP command lexer (RFC 3501 section 9) on a
 * protstream, and the per-command pool it fills.
 *
 * One rule makes every limit hold: a byte is counted against line_max
 * when it is read (lx->len), literals read into memory included, and
 * every token goes into the pool, so a command costs at most line_max
 * bytes of reading before BAD and at most the pool's size in memory. A
 * literal is refused from its announced size alone, before its "+ go
 * ahead" (synchronizing: the client never sends it) or, for {n+} over
 * nonsync_max, with the connection to be closed (its bytes are already
 * on the way and re-synchronizing would mean reading them all).
 *
 * Tokens are written straight into the pool's free tail and committed
 * when complete: nothing else allocates while a token is read.
 */
#include "parse.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include <ringprot/prot.h>

#define POOL_ALIGN 16

void imap_pool_init(struct imap_pool *p, void *base, size_t size)
{
	p->base = base;
	p->size = size;
	p->used = 0;
}

void imap_pool_reset(struct imap_pool *p)
{
	p->used = 0;
}

void *imap_pool_alloc(struct imap_pool *p, size_t n)
{
	size_t at = (p->used + POOL_ALIGN - 1) & ~(size_t)(POOL_ALIGN - 1);
	void *ret;

	if (at > p->size || n > p->size - at)
		return NULL;
	ret = p->base + at;
	p->used = at + n;
	memset(ret, 0, n);
	return ret;
}

bool imap_arg_is_atom(const struct imap_arg *a, const char *word)
{
	return a != NULL && a->type == IMAP_ARG_ATOM &&
	       strcasecmp(a->str, word) == 0;
}

/* ATOM-CHAR (RFC 3501 section 9): no atom-specials. */
static bool atom_char(int c)
{
	return c > 0x20 && c < 0x7f && strchr("(){%*\"\\]", c) == NULL;
}

/* ASTRING-CHAR: ATOM-CHAR or resp-specials. */
static bool astring_char(int c)
{
	return atom_char(c) || c == ']';
}

bool imap_arg_astring(const struct imap_arg *a, const char **s_out)
{
	if (a == NULL)
		return false;
	switch (a->type) {
	case IMAP_ARG_ATOM:
		for (const char *p = a->str; *p != '\0'; p++)
			if (!astring_char((unsigned char)*p))
				return false;
		break;
	case IMAP_ARG_STRING:
		break;
	case IMAP_ARG_LITERAL:
		if (strlen(a->str) != a->len)
			return false;
		break;
	default:
		return false;
	}
	*s_out = a->str;
	return true;
}

bool imap_arg_nstring(const struct imap_arg *a, const char **s_out)
{
	if (imap_arg_is_atom(a, "NIL")) {
		*s_out = NULL;
		return true;
	}
	if (a == NULL || a->type == IMAP_ARG_ATOM)
		return false;
	return imap_arg_astring(a, s_out);
}

/*
 * ---------------------------------------------------------------------
 * Reading.
 * ---------------------------------------------------------------------
 */

static int fail(struct imap_lex *lx, int err, const char *why)
{
	lx->err = why;
	return err;
}

/* The error of a stream that returned EOF. */
static int stream_end(struct imap_lex *lx)
{
	if (prot_IS_ERROR(lx->in)) {
		int e = prot_errno(lx->in);

		return fail(lx, e < 0 ? e : -EIO, "Read error");
	}
	return fail(lx, -ENOTCONN, "Connection closed");
}

/* The next byte, counted; or -errno. */
static int next(struct imap_lex *lx)
{
	int c = prot_getc(lx->in);

	if (c == EOF)
		return stream_end(lx);
	lx->len++;
	if (c == '\n')
		lx->eol = true;
	return c;
}

/* Put back the byte next() returned. */
static void back(struct imap_lex *lx, int c)
{
	(void)prot_ungetc(c, lx->in);
	lx->len--;
	if (c == '\n')
		lx->eol = false;
}

static int peek(struct imap_lex *lx)
{
	int c = next(lx);

	if (c >= 0)
		back(lx, c);
	return c;
}

static bool too_long(const struct imap_lex *lx)
{
	return lx->len > lx->line_max;
}

/* CR LF (or LF) now, having read c. 0 or -EPROTO. */
static int line_end(struct imap_lex *lx, int c)
{
	if (c < 0)
		return c;
	if (c == '\r') {
		c = next(lx);
		if (c < 0)
			return c;
	}
	if (c != '\n') {
		if (c >= 0)
			back(lx, c);
		return fail(lx, -EPROTO, "Expected end of line");
	}
	return 0;
}

void imap_lex_begin(struct imap_lex *lx)
{
	lx->len = 0;
	lx->eol = false;
	lx->err = NULL;
	if (lx->pool != NULL)
		imap_pool_reset(lx->pool);
}

int imap_lex_tag(struct imap_lex *lx, char *tag)
{
	size_t n = 0;
	int c;

	for (;;) {
		c = next(lx);
		if (c < 0)
			return c;
		if (c == ' ')
			break;
		if (c == '\r' || c == '\n') {
			int ret = line_end(lx, c);

			if (ret < 0)
				return ret;
			return fail(lx, n == 0 ? -ENODATA : -EPROTO,
				    n == 0 ? "Empty command line"
					   : "Missing command");
		}
		if (!astring_char(c) || c == '+')
			return fail(lx, -EPROTO, "Invalid tag");
		if (n == IMAP_TAG_MAX)
			return fail(lx, -EPROTO, "Tag too long");
		tag[n++] = (char)c;
	}
	tag[n] = '\0';
	if (n == 0)
		return fail(lx, -EPROTO, "Missing tag");
	return 0;
}

int imap_lex_name(struct imap_lex *lx, char *name, size_t size)
{
	size_t n = 0;
	int c;

	for (;;) {
		c = next(lx);
		if (c < 0)
			return c;
		if (c == ' ' || c == '\r' || c == '\n')
			break;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '.'))
			return fail(lx, -EPROTO, "Invalid command name");
		if (n + 1 >= size)
			return fail(lx, -EPROTO, "Unknown command");
		name[n++] = (char)(c >= 'a' && c <= 'z' ? c - 32 : c);
	}
	name[n] = '\0';
	if (n == 0) {
		if (c == ' ')
			return fail(lx, -EPROTO, "Missing command");
		back(lx, c);
		return fail(lx, -EPROTO, "Missing command");
	}
	if (c == ' ')
		return 0;
	c = line_end(lx, c);
	return c < 0 ? c : 1;
}

/*
 * ---------------------------------------------------------------------
 * Tokens into the pool.
 * ---------------------------------------------------------------------
 */

/* The pool's free tail, where a token is written as it is read. */
struct tok {
	char *p;
	size_t n, cap;
};

static int tok_open(struct imap_lex *lx, struct tok *t)
{
	struct imap_pool *p = lx->pool;

	t->p = p->base + p->used;
	t->n = 0;
	t->cap = p->size - p->used;
	if (t->cap == 0)
		return fail(lx, -ENOMEM, "Too many arguments");
	return 0;
}

static int tok_put(struct imap_lex *lx, struct tok *t, int c)
{
	if (t->n + 1 >= t->cap)
		return fail(lx, -ENOMEM, "Too many arguments");
	t->p[t->n++] = (char)c;
	return 0;
}

/* NUL-terminate and keep the token: it becomes arg->str. */
static void tok_commit(struct imap_lex *lx, struct tok *t, struct imap_arg *a)
{
	t->p[t->n] = '\0';
	a->str = t->p;
	a->len = t->n;
	lx->pool->used += t->n + 1;
}

/*
 * An atom. '[' opens a part where spaces, parentheses and quotes are
 * bytes of the atom up to ']' (BODY[HEADER.FIELDS (From To)]<0.100>),
 * as every server reads fetch attributes; '\' is allowed first (flags).
 */
/* An atom; lead (if not -1) is its first byte, already read. */
static int read_atom(struct imap_lex *lx, struct imap_arg *a, int lead)
{
	struct tok t;
	bool bracket = false;
	int c, ret;

	ret = tok_open(lx, &t);
	if (ret == 0 && lead >= 0)
		ret = tok_put(lx, &t, lead);
	if (ret < 0)
		return ret;
	for (;;) {
		c = next(lx);
		if (c < 0)
			return c;
		if (too_long(lx))
			return fail(lx, -EMSGSIZE, "Line too long");
		if (bracket) {
			if (c == '\r' || c == '\n' || c == 0 || c >= 0x80)
				return fail(lx, -EPROTO, "Missing ]");
			if (c == ']')
				bracket = false;
		} else if (c == '[') {
			bracket = true;
		} else if (!(astring_char(c) || c == '%' || c == '*' ||
			     (c == '\\' && t.n == 0))) {
			back(lx, c);
			break;
		}
		ret = tok_put(lx, &t, c);
		if (ret < 0)
			return ret;
	}
	if (t.n == 0)
		return fail(lx, -EPROTO,
			    c >= 0x80 ? "8-bit byte outside a string"
				      : "Unexpected character");
	a->type = IMAP_ARG_ATOM;
	tok_commit(lx, &t, a);
	return 0;
}

/* A quoted string, the opening '"' read. */
static int read_quoted(struct imap_lex *lx, struct imap_arg *a)
{
	struct tok t;
	int c, ret;

	ret = tok_open(lx, &t);
	if (ret < 0)
		return ret;
	for (;;) {
		c = next(lx);
		if (c < 0)
			return c;
		if (too_long(lx))
			return fail(lx, -EMSGSIZE, "Line too long");
		if (c == '"')
			break;
		if (c == '\r' || c == '\n') {
			back(lx, c);
			return fail(lx, -EPROTO, "Unterminated quoted string");
		}
		if (c == 0)
			return fail(lx, -EILSEQ, "NUL in quoted string");
		/* RFC 3501: QUOTED-CHAR is 7-bit; RFC 6855 lifts it. */
		if (c >= 0x80 && !lx->utf8)
			return fail(lx, -EILSEQ, "8-bit byte in quoted string");
		if (c == '\\') {
			c = next(lx);
			if (c < 0)
				return c;
			if (c != '\\' && c != '"') {
				back(lx, c);
				return fail(lx, -EPROTO,
					    "Invalid escape in quoted string");
			}
		}
		ret = tok_put(lx, &t, c);
		if (ret < 0)
			return ret;
	}
	a->type = IMAP_ARG_STRING;
	tok_commit(lx, &t, a);
	return 0;
}

/* "{n}" or "{n+}" and its CR LF, the '{' read. */
static int read_literal_size(struct imap_lex *lx, uint64_t *n_out,
			     bool *nonsync_out)
{
	uint64_t n = 0;
	unsigned digits = 0;
	int c;

	*nonsync_out = false;
	for (;;) {
		c = next(lx);
		if (c < 0)
			return c;
		if (c < '0' || c > '9')
			break;
		if (++digits > 19)
			return fail(lx, -EPROTO, "Invalid literal size");
		n = n * 10 + (unsigned)(c - '0');
	}
	if (digits == 0)
		return fail(lx, -EPROTO, "Invalid literal size");
	if (c == '+') {
		*nonsync_out = true;
		c = next(lx);
		if (c < 0)
			return c;
	}
	if (c != '}')
		return fail(lx, -EPROTO, "Invalid literal");
	c = next(lx);
	if (c < 0)
		return c;
	c = line_end(lx, c);
	if (c < 0)
		return fail(lx, -EPROTO, "Literal not at the end of a line");
	*n_out = n;
	/* The bytes after the literal continue the same command line. */
	lx->eol = false;
	if (*nonsync_out && n > lx->nonsync_max)
		return fail(lx, -E2BIG,
			    "[TOOBIG] Non-synchronizing literal "
			    "too big");
	return 0;
}

static int go_ahead(struct imap_lex *lx)
{
	if (lx->out == NULL)
		return 0;
	if (prot_puts(lx->out, "+ go ahead\r\n") == EOF ||
	    prot_flush(lx->out) == EOF)
		return fail(lx, -EIO, "Write error");
	return 0;
}

/* Refuse a synchronizing literal: the client sends none of it. */
static int refuse_literal(struct imap_lex *lx, const char *why)
{
	lx->eol = true;
	return fail(lx, -EFBIG, why);
}

/* A literal into the pool (counted against line_max). */
static int read_literal(struct imap_lex *lx, struct imap_arg *a)
{
	struct tok t;
	uint64_t n;
	bool nonsync;
	int ret;

	ret = read_literal_size(lx, &n, &nonsync);
	if (ret < 0)
		return ret;
	if (n >
	    lx->line_max - (lx->len < lx->line_max ? lx->len : lx->line_max)) {
		if (nonsync)
			return fail(lx, -E2BIG, "Literal too big");
		return refuse_literal(lx, "[TOOBIG] Literal too big");
	}
	ret = tok_open(lx, &t);
	if (ret < 0)
		return ret;
	if (n >= t.cap)
		return nonsync ? fail(lx, -E2BIG, "Literal too big")
			       : refuse_literal(lx, "Literal too big");
	if (!nonsync) {
		ret = go_ahead(lx);
		if (ret < 0)
			return ret;
	}
	while (t.n < n) {
		int got = prot_read(lx->in, t.p + t.n, (int)(n - t.n));

		if (got <= 0)
			return stream_end(lx);
		t.n += (size_t)got;
	}
	lx->len += (size_t)n;
	a->type = IMAP_ARG_LITERAL;
	a->nonsync = nonsync;
	tok_commit(lx, &t, a);
	return 0;
}

/* A literal left for the caller (APPEND's message). */
static int literal_size(struct imap_lex *lx, struct imap_arg *a)
{
	uint64_t n;
	bool nonsync;
	int ret;

	ret = read_literal_size(lx, &n, &nonsync);
	if (ret < 0)
		return ret;
	if (n > lx->literal_max) {
		if (nonsync)
			return fail(lx, -E2BIG, "[TOOBIG] Literal too big");
		return refuse_literal(lx, "[TOOBIG] Literal too big");
	}
	if (!nonsync) {
		ret = go_ahead(lx);
		if (ret < 0)
			return ret;
	}
	a->type = IMAP_ARG_LITERAL_SIZE;
	a->len = (size_t)n;
	a->nonsync = nonsync;
	a->str = "";
	return 0;
}

static int read_level(struct imap_lex *lx, unsigned flags, unsigned depth,
		      struct imap_arg **first_out, bool *stop_out);

/*
 * One argument into a, its first byte c read. 0, 1 when it is a literal
 * left unread (IMAP_LEX_LITERAL_SIZE: the call ends), or -errno.
 */
static int read_arg(struct imap_lex *lx, unsigned flags, unsigned depth, int c,
		    struct imap_arg *a, bool *stop_out)
{
	int ret;

	switch (c) {
	case '(':
		if (depth + 1 >= IMAP_DEPTH_MAX)
			return fail(lx, -ELOOP, "Too deeply nested");
		a->type = IMAP_ARG_LIST;
		a->str = "";
		ret = read_level(lx, 0, depth + 1, &a->child, stop_out);
		if (ret < 0)
			return ret;
		a->count = (unsigned)ret;
		return 0;
	case '"':
		return read_quoted(lx, a);
	case '{':
		if (depth > 0 || !(flags & IMAP_LEX_LITERAL_SIZE))
			return read_literal(lx, a);
		ret = literal_size(lx, a);
		return ret < 0 ? ret : 1;
	case '~':
		/* literal8 (RFC 3516 "~{n}"), for APPEND only; elsewhere
		 * '~' is an atom's byte ("~foo" is a mailbox name). */
		if (depth == 0 && (flags & IMAP_LEX_LITERAL_SIZE) &&
		    peek(lx) == '{') {
			(void)next(lx);
			ret = literal_size(lx, a);
			a->binary = true;
			return ret < 0 ? ret : 1;
		}
		return read_atom(lx, a, c);
	default:
		back(lx, c);
		return read_atom(lx, a, -1);
	}
}

/*
 * What follows an argument: 1 when another comes (SP read), 0 at the
 * end of the level (')' or the line's end read), or -errno.
 */
static int after_arg(struct imap_lex *lx, unsigned depth)
{
	int c = next(lx);

	if (c < 0)
		return c;
	if (c == ' ') {
		c = peek(lx);
		if (c < 0)
			return c;
		if (c == ' ' || c == '\r' || c == '\n' || c == ')')
			return fail(lx, -EPROTO, "Unexpected space");
		return 1;
	}
	if (c == ')' && depth > 0)
		return 0;
	if ((c == '\r' || c == '\n') && depth == 0)
		return line_end(lx, c);
	if (c == '\r' || c == '\n') {
		back(lx, c);
		return fail(lx, -EPROTO, "Missing )");
	}
	return fail(lx, -EPROTO, c == ')' ? "Unexpected )" : "Missing space");
}

/*
 * The arguments of one level: the top (ends at CR LF) or a list (ends
 * at ')'). Returns the count or -errno; *stop_out set when a top-level
 * literal was left unread.
 */
static int read_level(struct imap_lex *lx, unsigned flags, unsigned depth,
		      struct imap_arg **first_out, bool *stop_out)
{
	struct imap_arg **tail = first_out;
	int count = 0, c, ret;

	*first_out = NULL;
	c = peek(lx);
	if (c < 0)
		return c;
	if (depth > 0 && c == ')') {
		(void)next(lx);
		return 0;
	}
	if (depth == 0 && (c == '\r' || c == '\n'))
		return line_end(lx, next(lx));
	do {
		struct imap_arg *a = imap_pool_alloc(lx->pool, sizeof(*a));

		if (a == NULL)
			return fail(lx, -ENOMEM, "Too many arguments");
		/* "() () ..." has no token to count its bytes: count here. */
		if (too_long(lx))
			return fail(lx, -EMSGSIZE, "Line too long");
		c = next(lx);
		if (c < 0)
			return c;
		ret = read_arg(lx, flags, depth, c, a, stop_out);
		if (ret < 0)
			return ret;
		*tail = a;
		tail = &a->next;
		count++;
		if (ret == 1) {
			*stop_out = true;
			return count;
		}
		ret = after_arg(lx, depth);
		if (ret < 0)
			return ret;
	} while (ret == 1);
	return count;
}

int imap_lex_args(struct imap_lex *lx, unsigned flags,
		  struct imap_arg **first_out)
{
	bool stop = false;
	int c;

	*first_out = NULL;
	lx->eol = false;
	/* Resuming after a literal the caller read: " more" or CR LF. */
	if (flags & IMAP_LEX_LITERAL_SIZE) {
		c = peek(lx);
		if (c < 0)
			return c;
		if (c == ' ')
			(void)next(lx);
	}
	return read_level(lx, flags, 0, first_out, &stop);
}

int imap_lex_eol(struct imap_lex *lx)
{
	int c = next(lx);

	if (c < 0)
		return c;
	return line_end(lx, c);
}

/* Skip n bytes of a literal being sent anyway. */
static int skip_bytes(struct imap_lex *lx, uint64_t n)
{
	char junk[512];

	while (n > 0) {
		int got = prot_read(lx->in, junk,
				    n < sizeof(junk) ? (int)n
						     : (int)sizeof(junk));

		if (got <= 0)
			return stream_end(lx);
		n -= (uint64_t)got;
	}
	return 0;
}

int imap_lex_skip_line(struct imap_lex *lx)
{
	/* Where a "{n+}" at the end of the line is: 0 none, 1 digits,
	 * 2 '+', 3 '}', 4 CR. */
	unsigned st = 0;
	uint64_t n = 0;

	while (!lx->eol) {
		int c = prot_getc(lx->in);

		if (c == EOF)
			return stream_end(lx);
		if (c == '\n') {
			if (st == 3 || st == 4) {
				if (n > lx->nonsync_max)
					return fail(lx, -E2BIG,
						    "Literal too big");
				int ret = skip_bytes(lx, n);

				if (ret < 0)
					return ret;
				st = 0;
				continue;
			}
			lx->eol = true;
			break;
		}
		if (c == '{') {
			st = 1;
			n = 0;
		} else if (st == 1 && c >= '0' && c <= '9') {
			n = n < UINT64_MAX / 10 ? n * 10 + (unsigned)(c - '0')
						: UINT64_MAX;
		} else if (st == 1 && c == '+') {
			st = 2;
		} else if (st == 2 && c == '}') {
			st = 3;
		} else if (st == 3 && c == '\r') {
			st = 4;
		} else {
			st = 0;
		}
	}
	return 0;
}

int imap_lex_line(struct imap_lex *lx, char *buf, size_t size)
{
	size_t n = 0;
	bool over = false, nul = false;
	int c;

	for (;;) {
		c = prot_getc(lx->in);
		if (c == EOF)
			return stream_end(lx);
		if (c == '\n')
			break;
		if (c == 0)
			nul = true;
		if (n + 1 < size)
			buf[n++] = (char)c;
		else
			over = true;
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	if (over)
		return fail(lx, -EMSGSIZE, "Line too long");
	if (nul)
		return fail(lx, -EILSEQ, "NUL in line");
	return (int)n;
}
