/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * test/imap-parse: examples/imapd's command lexer over a real socket
 * pair (the client's bytes on one end, the lexer's protstreams on the
 * other, "+ go ahead" read back from the client's end), and the pure
 * parsers of parse.h.
 */
#include "t-helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ringprot/prot.h>

#include "parse.h" /* examples/imapd */

#define POOL_SIZE 8192

struct fx {
	int sv[2];
	struct protstream *in, *out;
	struct imap_pool pool;
	char mem[POOL_SIZE];
	struct imap_lex lx;
};

static struct fx *fx_new(const char *client_bytes, size_t line_max)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->in = t_read_pair(f->sv);
	f->out = prot_new(f->sv[0], 1);
	assert_non_null(f->out);
	imap_pool_init(&f->pool, f->mem, sizeof(f->mem));
	f->lx.in = f->in;
	f->lx.out = f->out;
	f->lx.line_max = line_max;
	f->lx.literal_max = 1000;
	f->lx.nonsync_max = IMAP_NONSYNC_MAX;
	f->lx.pool = &f->pool;
	t_send_str(f->sv[1], client_bytes);
	imap_lex_begin(&f->lx);
	return f;
}

static void fx_free(struct fx *f)
{
	prot_free(f->in);
	prot_free(f->out);
	t_close_pair(f->sv);
	free(f);
}

/* What the server sent to the client (non-blocking: "" when nothing). */
static void client_got(struct fx *f, char *buf, size_t size)
{
	struct pollfd p = {.fd = f->sv[1], .events = POLLIN};
	ssize_t n = 0;

	(void)prot_flush(f->out);
	if (poll(&p, 1, 50) == 1)
		n = recv(f->sv[1], buf, size - 1, MSG_DONTWAIT);
	buf[n > 0 ? n : 0] = '\0';
}

static int lex_cmd(struct fx *f, char *tag, char *name, struct imap_arg **args)
{
	int ret = imap_lex_tag(&f->lx, tag);

	if (ret < 0)
		return ret;
	ret = imap_lex_name(&f->lx, name, 32);
	if (ret < 0)
		return ret;
	if (ret == 1) {
		*args = NULL;
		return 0;
	}
	return imap_lex_args(&f->lx, 0, args);
}

static void test_imap_lex_args_tree(void **state)
{
	struct fx *f = fx_new("a1 fetch 1:* (FLAGS BODY.PEEK[HEADER.FIELDS "
			      "(From To)]<0.100>) \"q\\\"s\" NIL ()\r\n",
			      1024);
	char tag[IMAP_TAG_MAX + 1], name[32];
	struct imap_arg *a;

	(void)state;
	assert_int_equal(lex_cmd(f, tag, name, &a), 5);
	assert_string_equal(tag, "a1");
	assert_string_equal(name, "FETCH");
	assert_true(f->lx.eol);
	assert_int_equal(a->type, IMAP_ARG_ATOM);
	assert_string_equal(a->str, "1:*");
	a = a->next;
	assert_int_equal(a->type, IMAP_ARG_LIST);
	assert_int_equal(a->count, 2);
	assert_string_equal(a->child->str, "FLAGS");
	assert_string_equal(a->child->next->str,
			    "BODY.PEEK[HEADER.FIELDS (From To)]<0.100>");
	a = a->next;
	assert_int_equal(a->type, IMAP_ARG_STRING);
	assert_string_equal(a->str, "q\"s");
	a = a->next;
	assert_true(imap_arg_is_atom(a, "nil"));
	a = a->next;
	assert_int_equal(a->type, IMAP_ARG_LIST);
	assert_int_equal(a->count, 0);
	assert_null(a->next);
	fx_free(f);
}

/* A synchronizing literal: "+ go ahead" once, then its bytes. */
static void test_imap_lex_literal_sync(void **state)
{
	struct fx *f = fx_new("t LOGIN {5}\r\nal ce {2}\r\n\"x\r\n", 1024);
	char tag[IMAP_TAG_MAX + 1], name[32], got[256];
	struct imap_arg *a;
	const char *s;

	(void)state;
	assert_int_equal(lex_cmd(f, tag, name, &a), 2);
	assert_int_equal(a->type, IMAP_ARG_LITERAL);
	assert_true(imap_arg_astring(a, &s));
	assert_string_equal(s, "al ce");
	assert_string_equal(a->next->str, "\"x");
	client_got(f, got, sizeof(got));
	assert_string_equal(got, "+ go ahead\r\n+ go ahead\r\n");
	fx_free(f);
}

/* A literal over the limit: refused from its size, no "+", line over. */
static void test_imap_lex_literal_refused(void **state)
{
	struct fx *f =
		fx_new("t APPEND INBOX {2147483648}\r\nt2 NOOP\r\n", 1024);
	char tag[IMAP_TAG_MAX + 1], name[32], got[64];
	struct imap_arg *a;

	(void)state;
	assert_int_equal(imap_lex_tag(&f->lx, tag), 0);
	assert_int_equal(imap_lex_name(&f->lx, name, sizeof(name)), 0);
	assert_int_equal(imap_lex_args(&f->lx, IMAP_LEX_LITERAL_SIZE, &a),
			 -EFBIG);
	assert_true(f->lx.eol);
	assert_non_null(strstr(f->lx.err, "TOOBIG"));
	assert_int_equal(imap_lex_skip_line(&f->lx), 0);
	client_got(f, got, sizeof(got));
	assert_string_equal(got, "");
	/* The next command is read as one. */
	imap_lex_begin(&f->lx);
	assert_int_equal(lex_cmd(f, tag, name, &a), 0);
	assert_string_equal(tag, "t2");
	assert_string_equal(name, "NOOP");
	fx_free(f);
}

/* APPEND's literal left for the caller, then the line goes on. */
static void test_imap_lex_literal_size(void **state)
{
	struct fx *f = fx_new("t APPEND INBOX (\\Seen) {4+}\r\nabcd\r\n", 1024);
	char tag[IMAP_TAG_MAX + 1], name[32], got[64], body[4];
	struct imap_arg *a;

	(void)state;
	assert_int_equal(imap_lex_tag(&f->lx, tag), 0);
	assert_int_equal(imap_lex_name(&f->lx, name, sizeof(name)), 0);
	assert_int_equal(imap_lex_args(&f->lx, IMAP_LEX_LITERAL_SIZE, &a), 3);
	a = a->next->next;
	assert_int_equal(a->type, IMAP_ARG_LITERAL_SIZE);
	assert_int_equal(a->len, 4);
	assert_true(a->nonsync);
	assert_int_equal(prot_read(f->in, body, 4), 4);
	assert_memory_equal(body, "abcd", 4);
	assert_int_equal(imap_lex_args(&f->lx, IMAP_LEX_LITERAL_SIZE, &a), 0);
	assert_true(f->lx.eol);
	client_got(f, got, sizeof(got));
	assert_string_equal(got, ""); /* {n+}: no continuation */
	fx_free(f);
}

/* literal8 "~{n}" (RFC 3516) for APPEND; "~x" stays an atom. */
static void test_imap_lex_literal8(void **state)
{
	struct fx *f = fx_new("t APPEND ~box ~{3}\r\na~b\r\n"
			      "u APPEND ~{2} x\r\n",
			      1024);
	char tag[IMAP_TAG_MAX + 1], name[32], got[64], body[3];
	struct imap_arg *a;

	(void)state;
	assert_int_equal(imap_lex_tag(&f->lx, tag), 0);
	assert_int_equal(imap_lex_name(&f->lx, name, sizeof(name)), 0);
	assert_int_equal(imap_lex_args(&f->lx, IMAP_LEX_LITERAL_SIZE, &a), 2);
	assert_int_equal(a->type, IMAP_ARG_ATOM);
	assert_string_equal(a->str, "~box");
	assert_false(a->binary);
	a = a->next;
	assert_int_equal(a->type, IMAP_ARG_LITERAL_SIZE);
	assert_int_equal(a->len, 3);
	assert_true(a->binary);
	assert_false(a->nonsync);
	client_got(f, got, sizeof(got));
	assert_string_equal(got, "+ go ahead\r\n");
	assert_int_equal(prot_read(f->in, body, 3), 3);
	assert_memory_equal(body, "a~b", 3);
	assert_int_equal(imap_lex_args(&f->lx, IMAP_LEX_LITERAL_SIZE, &a), 0);
	/* inside a list, or without LITERAL_SIZE, "~{" is no literal */
	assert_int_equal(imap_lex_tag(&f->lx, tag), 0);
	assert_int_equal(imap_lex_name(&f->lx, name, sizeof(name)), 0);
	assert_true(imap_lex_args(&f->lx, 0, &a) < 0);
	fx_free(f);
}

/* LITERAL-: a {n+} over 4096 cannot be skipped: -E2BIG (close). */
static void test_imap_lex_nonsync_too_big(void **state)
{
	struct fx *f = fx_new("t LOGIN {5000+}\r\nxx", 100000);
	char tag[IMAP_TAG_MAX + 1], name[32];
	struct imap_arg *a;

	(void)state;
	assert_int_equal(lex_cmd(f, tag, name, &a), -E2BIG);
	fx_free(f);
}

/* A line over line_max: -EMSGSIZE, then skipped to its end. */
static void test_imap_lex_line_too_long(void **state)
{
	char *big = malloc(3000);
	char tag[IMAP_TAG_MAX + 1], name[32];
	struct imap_arg *a;
	struct fx *f;

	(void)state;
	assert_non_null(big);
	memcpy(big, "t NOOP ", 7);
	memset(big + 7, 'x', 2980);
	strcpy(big + 2987, "\r\nu NOOP\r\n");
	f = fx_new(big, 1024);
	assert_int_equal(lex_cmd(f, tag, name, &a), -EMSGSIZE);
	assert_int_equal(imap_lex_skip_line(&f->lx), 0);
	imap_lex_begin(&f->lx);
	assert_int_equal(lex_cmd(f, tag, name, &a), 0);
	assert_string_equal(tag, "u");
	fx_free(f);
	free(big);
}

/* Bytes outside tokens count too: a line of empty lists. */
static void test_imap_lex_empty_lists_too_long(void **state)
{
	char *big = malloc(4000);
	char tag[IMAP_TAG_MAX + 1], name[32];
	struct imap_arg *a;
	struct fx *f;
	size_t n = 4;

	(void)state;
	assert_non_null(big);
	memcpy(big, "t X ", 4);
	while (n < 360) {
		memcpy(big + n, "() ", 3);
		n += 3;
	}
	strcpy(big + n, "()\r\n");
	f = fx_new(big, 256);
	assert_int_equal(lex_cmd(f, tag, name, &a), -EMSGSIZE);
	assert_true(f->lx.len <= 256 + 3); /* "() " after the last check */
	fx_free(f);
	free(big);
}

/* Skipping a bad line drops the {n+} literal that ends it too. */
static void test_imap_lex_skip_nonsync(void **state)
{
	struct fx *f = fx_new("t ) {3+}\r\n)\r\n\r\nu NOOP\r\n", 1024);
	char tag[IMAP_TAG_MAX + 1], name[32];
	struct imap_arg *a;

	(void)state;
	assert_int_equal(lex_cmd(f, tag, name, &a), -EPROTO);
	assert_int_equal(imap_lex_skip_line(&f->lx), 0);
	imap_lex_begin(&f->lx);
	assert_int_equal(lex_cmd(f, tag, name, &a), 0);
	assert_string_equal(tag, "u");
	fx_free(f);
}

static void test_imap_lex_bad_input(void **state)
{
	static const struct {
		const char *in;
		int err;
	} cases[] = {
		{"\r\n", -ENODATA},
		{"t+ NOOP\r\n", -EPROTO},
		{"t X (a\r\n", -EPROTO},
		{"t X a)\r\n", -EPROTO},
		{"t X \"abc\r\n", -EPROTO},
		{"t X \"a\\b\"\r\n", -EPROTO},
		{"t X \"\xc3\xa9\"\r\n", -EILSEQ},
		{"t X a  b\r\n", -EPROTO},
		{"t X {12x}\r\n", -EPROTO},
		{"t X ((((((((((((((((((((a))))))))))))))))))))\r\n", -ELOOP},
		{"t X a\"b\r\n", -EPROTO},
		{"t X BODY[TEXT\r\n", -EPROTO},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fx *f = fx_new(cases[i].in, 1024);
		char tag[IMAP_TAG_MAX + 1], name[32];
		struct imap_arg *a;
		int ret = lex_cmd(f, tag, name, &a);

		if (ret != cases[i].err)
			fail_msg("case %zu %s: %d, want %d", i, cases[i].in,
				 ret, cases[i].err);
		assert_non_null(f->lx.err);
		fx_free(f);
	}
}

/* UTF8=ACCEPT lets 8-bit bytes into quoted strings. */
static void test_imap_lex_utf8(void **state)
{
	struct fx *f = fx_new("t X \"\xc3\xa9\"\r\n", 1024);
	char tag[IMAP_TAG_MAX + 1], name[32];
	struct imap_arg *a;

	(void)state;
	f->lx.utf8 = true;
	assert_int_equal(lex_cmd(f, tag, name, &a), 1);
	assert_string_equal(a->str, "\xc3\xa9");
	fx_free(f);
}

/* The pool runs out before memory does. */
static void test_imap_lex_pool_full(void **state)
{
	char *big = malloc(20000);
	char tag[IMAP_TAG_MAX + 1], name[32];
	struct imap_arg *a;
	struct fx *f;
	size_t n = 6;

	(void)state;
	assert_non_null(big);
	memcpy(big, "t X a", 5);
	while (n < 19000) {
		memcpy(big + n - 1, " a", 2);
		n += 2;
	}
	strcpy(big + n - 1, "\r\n");
	f = fx_new(big, 100000);
	assert_int_equal(lex_cmd(f, tag, name, &a), -ENOMEM);
	fx_free(f);
	free(big);
}

/*
 * ---------------------------------------------------------------------
 * Pure parsers.
 * ---------------------------------------------------------------------
 */

static void test_imap_seqset(void **state)
{
	static char mem[4096];
	struct imap_pool pool;
	struct imap_seqset set;
	const char *err = NULL;

	(void)state;
	imap_pool_init(&pool, mem, sizeof(mem));
	assert_int_equal(
		imap_seqset_parse("7,1:3,5,4,20:10,30:*", &pool, &set, &err),
		0);
	assert_int_equal(set.n, 3); /* merged: 1:5, 7, 10:20 */
	assert_int_equal(set.nstar, 1);
	assert_true(imap_seqset_contains(&set, 4, 100));
	assert_true(imap_seqset_contains(&set, 15, 100));
	assert_false(imap_seqset_contains(&set, 6, 100));
	assert_true(imap_seqset_contains(&set, 7, 100));
	assert_false(imap_seqset_contains(&set, 25, 100));
	assert_true(imap_seqset_contains(&set, 31, 100));
	/* 30:* with max 25 is 25:30. */
	assert_true(imap_seqset_contains(&set, 25, 25));
	assert_int_equal(imap_seqset_parse("*", &pool, &set, &err), 0);
	assert_true(imap_seqset_contains(&set, 9, 9));
	assert_false(imap_seqset_contains(&set, 8, 9));
	assert_false(imap_seqset_contains(&set, 1, 0));
	assert_int_equal(imap_seqset_parse("4294967295", &pool, &set, &err), 0);
	assert_true(imap_seqset_contains(&set, UINT32_MAX, 1));
	assert_int_equal(imap_seqset_parse("$", &pool, &set, &err), 0);
	assert_true(set.dollar);
	static const char *const bad_sets[] = {
		"",	      "0", "1:", ":1", "1,,2", "1:2:3",
		"4294967296", "a", "1,", "01", "$,1",  "-1",
	};
	for (size_t i = 0; i < sizeof(bad_sets) / sizeof(bad_sets[0]); i++)
		if (imap_seqset_parse(bad_sets[i], &pool, &set, &err) !=
		    -EPROTO)
			fail_msg("accepted %s", bad_sets[i]);
}

/* Parse a command's argument text through the real lexer. */
static struct imap_arg *args_of(struct fx **fp, const char *text)
{
	char line[2048], tag[IMAP_TAG_MAX + 1], name[32];
	struct imap_arg *a = NULL;
	int ret;

	(void)snprintf(line, sizeof(line), "t X %s\r\n", text);
	*fp = fx_new(line, 4096);
	ret = lex_cmd(*fp, tag, name, &a);
	if (ret < 0)
		fail_msg("lexing %s: %d %s", text, ret, (*fp)->lx.err);
	return a;
}

static void test_imap_fetch(void **state)
{
	struct imap_fetch fe;
	struct imap_section *sec;
	const char *err = NULL;
	struct fx *f;
	struct imap_arg *a;

	(void)state;
	a = args_of(&f, "FULL");
	assert_int_equal(imap_parse_fetch(a, &f->pool, &fe, &err), 0);
	assert_int_equal(fe.items, IMAP_FETCH_FLAGS | IMAP_FETCH_INTERNALDATE |
					   IMAP_FETCH_RFC822_SIZE |
					   IMAP_FETCH_ENVELOPE |
					   IMAP_FETCH_BODY);
	fx_free(f);

	a = args_of(&f, "(UID BODY.PEEK[1.2.MIME] body[HEADER.FIELDS.NOT "
			"(X-A Received)]<10.20> BINARY.SIZE[3] RFC822.HEADER)");
	assert_int_equal(imap_parse_fetch(a, &f->pool, &fe, &err), 0);
	assert_int_equal(fe.items, IMAP_FETCH_UID | IMAP_FETCH_RFC822_HEADER);
	assert_int_equal(fe.nsections, 3);
	assert_true(fe.sets_seen);
	sec = fe.sections;
	assert_true(sec->peek);
	assert_int_equal(sec->nparts, 2);
	assert_int_equal(sec->part[1], 2);
	assert_int_equal(sec->spec, IMAP_SECTION_MIME);
	sec = sec->next;
	assert_false(sec->peek);
	assert_int_equal(sec->spec, IMAP_SECTION_HEADER_FIELDS_NOT);
	assert_int_equal(sec->nfields, 2);
	assert_string_equal(sec->fields[1], "Received");
	assert_true(sec->partial);
	assert_int_equal(sec->off, 10);
	assert_int_equal(sec->len, 20);
	sec = sec->next;
	assert_int_equal(sec->kind, IMAP_BINARY_SIZE);
	assert_int_equal(sec->part[0], 3);
	fx_free(f);

	static const char *const bad[] = {
		"()",
		"(FLAGS ALL)",
		"BODY[MIME]",
		"BODY[1.]",
		"BODY[0]",
		"BODY[HEADER.FIELDS]",
		"BODY[HEADER.FIELDS ()]",
		"BODY[]<1>",
		"BODY[]<1.0>",
		"BINARY[TEXT]",
		"BINARY.SIZE[1]<0.1>",
		"FOO",
		"BODY[TEXT]x",
		"\"FLAGS\"",
		"BODY[1TEXT]",
		"BODY[1.2.]",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		a = args_of(&f, bad[i]);
		if (imap_parse_fetch(a, &f->pool, &fe, &err) != -EPROTO)
			fail_msg("accepted %s", bad[i]);
		assert_non_null(err);
		fx_free(f);
	}
}

static void test_imap_search(void **state)
{
	struct imap_search se;
	struct imap_search_key *k;
	const char *err = NULL;
	struct fx *f;
	struct imap_arg *a;

	(void)state;
	a = args_of(&f, "RETURN (MIN COUNT) CHARSET UTF-8 1:3 UNSEEN "
			"OR FROM \"bob\" (NOT SINCE 1-Feb-2024 LARGER 100) "
			"HEADER X-Spam yes UID 5:*");
	assert_int_equal(imap_parse_search(a, &f->pool, &se, &err), 0);
	assert_true(se.esearch);
	assert_int_equal(se.ret, IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_COUNT);
	assert_true(se.utf8);
	k = se.root->child;
	assert_int_equal(k->op, IMAP_SK_SEQSET);
	k = k->next;
	assert_int_equal(k->op, IMAP_SK_UNFLAG);
	assert_int_equal(k->flag, IMAP_FLAG_SEEN);
	k = k->next;
	assert_int_equal(k->op, IMAP_SK_OR);
	assert_int_equal(k->child->op, IMAP_SK_HEADER);
	assert_string_equal(k->child->field, "From");
	assert_string_equal(k->child->str, "bob");
	assert_int_equal(k->child->next->op, IMAP_SK_AND);
	assert_int_equal(k->child->next->child->op, IMAP_SK_NOT);
	assert_int_equal(k->child->next->child->child->op, IMAP_SK_SINCE);
	assert_int_equal(k->child->next->child->child->days, 19754);
	assert_int_equal(k->child->next->child->next->size, 100);
	k = k->next;
	assert_string_equal(k->field, "X-Spam");
	k = k->next;
	assert_int_equal(k->op, IMAP_SK_UIDSET);
	assert_null(k->next);
	fx_free(f);

	a = args_of(&f, "CHARSET KOI8-R TEXT x");
	assert_int_equal(imap_parse_search(a, &f->pool, &se, &err), -ENOENT);
	assert_non_null(strstr(err, "BADCHARSET"));
	fx_free(f);

	a = args_of(&f, "RETURN () ALL");
	assert_int_equal(imap_parse_search(a, &f->pool, &se, &err), 0);
	assert_int_equal(se.ret, IMAP_SEARCH_RET_ALL);
	fx_free(f);

	static const char *const bad[] = {
		"FOO",
		"OR ALL",
		"NOT",
		"SINCE 31-Feb-2024",
		"LARGER x",
		"HEADER From",
		"()",
		"RETURN (BOGUS) ALL",
		"KEYWORD \\Seen",
		"UID x",
		"SINCE 1-Foo-2024",
		("NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT "
		 "NOT NOT ALL"),
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		a = args_of(&f, bad[i]);
		if (imap_parse_search(a, &f->pool, &se, &err) >= 0)
			fail_msg("accepted %s", bad[i]);
		fx_free(f);
	}
}

static void test_imap_flags(void **state)
{
	struct imap_flags fl;
	const char *err = NULL;
	struct fx *f;
	struct imap_arg *a;

	(void)state;
	a = args_of(&f, "(\\Seen \\deleted $Junk work)");
	assert_int_equal(imap_parse_flags(a, false, &f->pool, &fl, &err), 0);
	assert_int_equal(fl.sys, IMAP_FLAG_SEEN | IMAP_FLAG_DELETED);
	assert_int_equal(fl.nkeywords, 2);
	assert_string_equal(fl.keywords[0], "$Junk");
	fx_free(f);
	a = args_of(&f, "\\Answered \\Draft");
	assert_int_equal(imap_parse_flags(a, true, &f->pool, &fl, &err), 0);
	assert_int_equal(fl.sys, IMAP_FLAG_ANSWERED | IMAP_FLAG_DRAFT);
	assert_int_equal(imap_parse_flags(a, false, &f->pool, &fl, &err),
			 -EPROTO);
	fx_free(f);
	static const char *const bad[] = {"(\\Recent)", "(\\Bogus)", "(\"x\")",
					  "((a))", "(a]b)"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		a = args_of(&f, bad[i]);
		if (imap_parse_flags(a, false, &f->pool, &fl, &err) != -EPROTO)
			fail_msg("accepted %s", bad[i]);
		fx_free(f);
	}
}

static void test_imap_dates(void **state)
{
	int64_t d, t;
	int zone;

	(void)state;
	assert_int_equal(imap_parse_date("1-Jan-1970", &d), 0);
	assert_int_equal(d, 0);
	assert_int_equal(imap_parse_date("29-feb-2000", &d), 0);
	assert_int_equal(d, 11016);
	assert_int_equal(imap_parse_date("29-Feb-1900", &d), -EPROTO);
	assert_int_equal(imap_parse_date("1-Jan-70", &d), -EPROTO);
	assert_int_equal(imap_parse_date("001-Jan-1970", &d), -EPROTO);
	assert_int_equal(imap_parse_date("1-Jan-1970x", &d), -EPROTO);
	assert_int_equal(
		imap_parse_datetime("17-Jul-1996 02:44:25 -0700", &t, &zone),
		0);
	assert_int_equal(t, 837596665);
	assert_int_equal(zone, -420);
	assert_int_equal(
		imap_parse_datetime(" 1-Jan-1970 00:00:00 +0100", &t, &zone),
		0);
	assert_int_equal(t, -3600);
	assert_int_equal(
		imap_parse_datetime("17-Jul-1996 24:00:00 +0000", &t, &zone),
		-EPROTO);
	assert_int_equal(imap_parse_datetime("17-Jul-1996 02:44:25", &t, &zone),
			 -EPROTO);
}

static void test_imap_mutf7(void **state)
{
	static const struct {
		const char *mutf7, *utf8;
	} ok[] = {
		{"INBOX", "INBOX"},
		{"&-", "&"},
		{"Entw&APw-rfe", "Entw\xc3\xbc"
				 "rfe"},
		{"&ZeVnLIqe-", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"},
		{"~peter/mail/&U,BTFw-/&ZeVnLIqe-",
		 "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
		 "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"},
		{"&2D3eAA-", "\xf0\x9f\x98\x80"},
	};
	static const char *const bad[] = {
		"&",	 "&Jjo",  "&Jjo!-",	 "&AGE-", "&2D0-",    "&3gA-",
		"&AAA-", "a\x01", "caf\xc3\xa9", "&Jj-",  "&U,BTF2-",
	};
	char buf[128];

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_true(imap_mutf7_valid(ok[i].mutf7));
		assert_int_equal(
			imap_mutf7_to_utf8(ok[i].mutf7, buf, sizeof(buf)),
			(int)strlen(ok[i].utf8));
		assert_string_equal(buf, ok[i].utf8);
		assert_int_equal(
			imap_utf8_to_mutf7(ok[i].utf8, buf, sizeof(buf)),
			(int)strlen(ok[i].mutf7));
		assert_string_equal(buf, ok[i].mutf7);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (imap_mutf7_valid(bad[i]))
			fail_msg("accepted %s", bad[i]);
	assert_int_equal(imap_utf8_to_mutf7("\xc0\x80", buf, sizeof(buf)),
			 -EINVAL);
	assert_int_equal(imap_utf8_to_mutf7("\xed\xa0\x80", buf, sizeof(buf)),
			 -EINVAL);
	assert_int_equal(imap_utf8_to_mutf7("\xe6\x97\xa5", buf, 4), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
		T(test_imap_lex_args_tree),
		T(test_imap_lex_literal_sync),
		T(test_imap_lex_literal_refused),
		T(test_imap_lex_literal_size),
		T(test_imap_lex_literal8),
		T(test_imap_lex_nonsync_too_big),
		T(test_imap_lex_line_too_long),
		T(test_imap_lex_empty_lists_too_long),
		T(test_imap_lex_skip_nonsync),
		T(test_imap_lex_bad_input),
		T(test_imap_lex_utf8),
		T(test_imap_lex_pool_full),
		T(test_imap_seqset),
		T(test_imap_fetch),
		T(test_imap_search),
		T(test_imap_flags),
		T(test_imap_dates),
		T(test_imap_mutf7),
#undef T
	};

	t_require_loop();
	return cmocka_run_group_tests_name("imap-parse", tests, NULL, NULL);
}
