/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-fmt: IMAP string output, the rows of spec section 5.1. */
#include "t-helpers.h" /* stdarg, stddef, setjmp, cmocka: in that order */

#include <ringprot/prot.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Every row runs on three fresh sinks, W(x) = the bytes that reach the
 * sink after x and prot_flush: a socketpair stream as prot_new makes it
 * (isclient 0), the same with isclient set, and a prot_writebuf stream
 * (isclient 1 by construction). Expected bytes are written for isclient
 * 0, as in the spec; for the other sinks a literal header gains its '+'.
 */

enum fmt_fn {
	F_STR,	/* prot_printstring(in) */
	F_MAP,	/* prot_printmap(in, n) */
	F_ASTR, /* prot_printastring(in) */
	F_AMAP, /* prot_printamap(in, n) */
	F_LIT,	/* prot_printliteral(in, n) */
};

struct fmt_row {
	const char *name; /* spec row */
	enum fmt_fn fn;
	const char *in; /* NULL: pass NULL */
	size_t n;	/* counted variants */
	const char *out;
	size_t out_len;
	int ret;
};

/* sizeof keeps embedded NULs in both the input and the expected bytes. */
#define ROW(name, fn, in, out, ret)                                     \
	{                                                               \
		name, fn, in, sizeof(in) - 1, out, sizeof(out) - 1, ret \
	}
#define ROWN(name, fn, in, n, out, ret)                    \
	{                                                  \
		name, fn, in, n, out, sizeof(out) - 1, ret \
	}

enum sink_kind {
	SINK_SOCK,
	SINK_SOCK_CLIENT,
	SINK_WBUF,
	SINK_COUNT,
};

static const char *const sink_names[SINK_COUNT] = {"socket", "socket+isclient",
						   "writebuf"};

struct sink {
	enum sink_kind kind;
	int sv[2];
	struct buf b;
	struct protstream *s;
};

static void sink_open(struct sink *k, enum sink_kind kind)
{
	memset(k, 0, sizeof(*k));
	k->kind = kind;
	k->sv[0] = k->sv[1] = -1;
	if (kind == SINK_WBUF) {
		k->s = prot_writebuf(&k->b);
	} else {
		t_socketpair(k->sv);
		k->s = prot_new(k->sv[0], 1);
		assert_non_null(k->s);
		assert_int_equal(
			prot_setisclient(k->s, kind == SINK_SOCK_CLIENT), 0);
	}
	assert_non_null(k->s);
}

/* Flush, then everything the sink received so far (malloc'd, *len_out). */
static char *sink_collect(struct sink *k, size_t *len_out)
{
	size_t cap = 4096, len = 0;
	char *p = malloc(cap);

	assert_non_null(p);
	assert_int_equal(prot_flush(k->s), 0);
	if (k->kind == SINK_WBUF) {
		p = realloc(p, k->b.len + 1);
		assert_non_null(p);
		if (k->b.len > 0)
			memcpy(p, k->b.s, k->b.len);
		len = k->b.len;
		k->b.len = 0;
	} else {
		for (;;) {
			ssize_t n;

			if (cap - len < 4096) {
				cap *= 2;
				p = realloc(p, cap);
				assert_non_null(p);
			}
			n = recv(k->sv[1], p + len, cap - len, MSG_DONTWAIT);
			if (n < 0 && errno == EAGAIN)
				break;
			assert_true(n > 0);
			len += (size_t)n;
		}
	}
	*len_out = len;
	return p;
}

static void sink_close(struct sink *k)
{
	assert_int_equal(prot_free(k->s), 0);
	if (k->sv[0] >= 0) {
		close(k->sv[0]);
		close(k->sv[1]);
	}
	free(k->b.s);
}

static int call_fn(struct protstream *s, enum fmt_fn fn, const char *in,
		   size_t n)
{
	switch (fn) {
	case F_STR:
		return prot_printstring(s, in);
	case F_MAP:
		return prot_printmap(s, in, n);
	case F_ASTR:
		return prot_printastring(s, in);
	case F_AMAP:
		return prot_printamap(s, in, n);
	case F_LIT:
		return prot_printliteral(s, in, n);
	}
	fail_msg("bad fn %d", (int)fn);
	return EOF;
}

/*
 * The spec's isclient-0 bytes as a stream with the given isclient sends
 * them: "{N}\r\n" becomes "{N+}\r\n". Returns a malloc'd copy.
 */
static char *expected_for(const char *out, size_t len, bool isclient,
			  size_t *len_out)
{
	char *e = malloc(len + 2);
	const char *close = NULL;

	assert_non_null(e);
	if (isclient && len > 0 && out[0] == '{')
		close = memchr(out, '}', len);
	if (close != NULL) {
		size_t h = (size_t)(close - out);

		memcpy(e, out, h);
		e[h] = '+';
		memcpy(e + h + 1, close, len - h);
		*len_out = len + 1;
	} else {
		memcpy(e, out, len);
		*len_out = len;
	}
	return e;
}

static void dump(const char *what, const char *p, size_t len)
{
	fprintf(stderr, "  %s (%zu bytes): ", what, len);
	for (size_t i = 0; i < len && i < 48; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c >= 0x20 && c < 0x7f && c != '\\')
			fputc(c, stderr);
		else
			fprintf(stderr, "\\x%02X", c);
	}
	fprintf(stderr, len > 48 ? "...\n" : "\n");
}

/* Run one row on every sink kind; fails the test with the row's name. */
static void check_row(const struct fmt_row *r)
{
	for (int kind = 0; kind < SINK_COUNT; kind++) {
		struct sink k;
		size_t got_len, want_len;
		char *got, *want;
		int ret;

		sink_open(&k, (enum sink_kind)kind);
		ret = call_fn(k.s, r->fn, r->in, r->n);
		got = sink_collect(&k, &got_len);
		want = expected_for(r->out, r->out_len, kind != SINK_SOCK,
				    &want_len);
		if (ret != r->ret || got_len != want_len ||
		    memcmp(got, want, want_len) != 0) {
			fprintf(stderr, "row %s on %s: returned %d, want %d\n",
				r->name, sink_names[kind], ret, r->ret);
			dump("got", got, got_len);
			dump("want", want, want_len);
			fail_msg("row %s on %s", r->name, sink_names[kind]);
		}
		free(got);
		free(want);
		sink_close(&k);
	}
}

static void check_rows(const struct fmt_row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++)
		check_row(&rows[i]);
}

#define CHECK_ROWS(rows) check_rows(rows, sizeof(rows) / sizeof(rows[0]))

static void test_fmt_printstring_rows(void **state)
{
	static const struct fmt_row rows[] = {
		{"1", F_STR, NULL, 0, "NIL", 3, 0},
		ROW("2", F_STR, "", "\"\"", 0),
		ROW("3", F_STR, "Hello", "\"Hello\"", 0),
		ROW("4", F_STR, "Hello World\tagain", "\"Hello World\tagain\"",
		    0),
		ROW("5", F_STR, "Good\rBye\nEarth", "{14}\r\nGood\rBye\nEarth",
		    0),
		ROW("6", F_STR, "Quot\"able", "{9}\r\nQuot\"able", 0),
		ROW("7", F_STR, "per%ent", "{7}\r\nper%ent", 0),
		ROW("8", F_STR, "slash\\dot", "{9}\r\nslash\\dot", 0),
		ROW("9", F_STR,
		    "Hi I'm \xD8l\xE5"
		    "f",
		    "{11}\r\nHi I'm \xD8l\xE5"
		    "f",
		    0),
		ROW("12a", F_STR,
		    "a\x01"
		    "b",
		    "\"a\x01"
		    "b\"",
		    0),
		ROW("12b", F_STR,
		    "a\x7F"
		    "b",
		    "\"a\x7F"
		    "b\"",
		    0),
		ROW("12c", F_STR, "NIL", "\"NIL\"", 0),
		ROW("23a", F_STR, "x\ry", "{3}\r\nx\ry", 0),
		ROW("23b", F_STR, "a\nb", "{3}\r\na\nb", 0),
	};

	(void)state;
	CHECK_ROWS(rows);
}

static void test_fmt_printmap_rows(void **state)
{
	static const struct fmt_row rows[] = {
		{"13-1", F_MAP, NULL, 0, "NIL", 3, 0},
		ROW("13-2", F_MAP, "", "\"\"", 2),
		ROW("13-3", F_MAP, "Hello", "\"Hello\"", 2),
		ROW("13-4", F_MAP, "Hello World\tagain",
		    "\"Hello World\tagain\"", 2),
		ROW("13-5", F_MAP, "Good\rBye\nEarth",
		    "{14}\r\nGood\rBye\nEarth", 0),
		ROW("13-6", F_MAP, "Quot\"able", "{9}\r\nQuot\"able", 0),
		ROW("13-7", F_MAP, "per%ent", "{7}\r\nper%ent", 0),
		ROW("13-8", F_MAP, "slash\\dot", "{9}\r\nslash\\dot", 0),
		ROW("13-9", F_MAP,
		    "Hi I'm \xD8l\xE5"
		    "f",
		    "{11}\r\nHi I'm \xD8l\xE5"
		    "f",
		    0),
		ROWN("14", F_MAP, "Hello", 3, "\"Hel\"", 2),
		ROW("15a", F_MAP, "a\0b", "{3}\r\na\0b", 0),
		ROW("15b", F_MAP, "NIL", "\"NIL\"", 2),
		ROW("15c", F_MAP, "\0", "{1}\r\n\0", 0),
	};

	(void)state;
	CHECK_ROWS(rows);
}

static void test_fmt_printastring_rows(void **state)
{
	static const struct fmt_row rows[] = {
		ROW("17 foo", F_ASTR, "foo", "foo", 0),
		ROW("17 NIL", F_ASTR, "NIL", "\"NIL\"", 0),
		ROW("17 nil", F_ASTR, "nil", "nil", 0),
		ROW("17 Nil", F_ASTR, "Nil", "Nil", 0),
		ROW("17 NILE", F_ASTR, "NILE", "NILE", 0),
		ROW("17 empty", F_ASTR, "", "\"\"", 0),
		{"17 NULL", F_ASTR, NULL, 0, "NIL", 3, 0},
		ROW("17 a b", F_ASTR, "a b", "\"a b\"", 0),
		ROW("17 foo*", F_ASTR, "foo*", "\"foo*\"", 0),
		ROW("17 a%b", F_ASTR, "a%b", "{3}\r\na%b", 0),
		ROW("17 a\\b", F_ASTR, "a\\b", "{3}\r\na\\b", 0),
		ROW("17 a\"b", F_ASTR, "a\"b", "{3}\r\na\"b", 0),
		ROW("17 INBOX.x]", F_ASTR, "INBOX.x]", "INBOX.x]", 0),
		ROW("17 a{b", F_ASTR, "a{b", "\"a{b\"", 0),
		ROW("17 a(b", F_ASTR, "a(b", "\"a(b\"", 0),
		ROW("17 a)b", F_ASTR, "a)b", "\"a)b\"", 0),
		ROW("17 punct", F_ASTR, "a+b:c/d.e-f_g", "a+b:c/d.e-f_g", 0),
		ROW("17 utf8", F_ASTR, "caf\xC3\xA9", "{5}\r\ncaf\xC3\xA9", 0),
		ROW("17 tab", F_ASTR, "a\tb", "\"a\tb\"", 0),
		ROW("17 del", F_ASTR,
		    "a\x7F"
		    "b",
		    "\"a\x7F"
		    "b\"",
		    0),
		ROW("17 cr", F_ASTR, "a\rb", "{3}\r\na\rb", 0),
	};

	(void)state;
	CHECK_ROWS(rows);
}

static void test_fmt_printamap_rows(void **state)
{
	static const struct fmt_row rows[] = {
		ROW("19 foo", F_AMAP, "foo", "foo", 0),
		ROW("19 NIL", F_AMAP, "NIL", "\"NIL\"", 2),
		ROWN("19 NILx", F_AMAP, "NILx", 3, "\"NIL\"", 2),
		ROW("19 nil", F_AMAP, "nil", "nil", 0),
		ROWN("19 Hello/2", F_AMAP, "Hello", 2, "He", 0),
		ROW("19 empty", F_AMAP, "", "\"\"", 2),
		{"19 NULL", F_AMAP, NULL, 0, "NIL", 3, 0},
		ROW("19 a b", F_AMAP, "a b", "\"a b\"", 2),
		ROW("19 a\\0b", F_AMAP, "a\0b", "{3}\r\na\0b", 0),
		ROW("19 \\0ab", F_AMAP, "\0ab", "{3}\r\n\0ab", 0),
		ROW("19 a\\rb", F_AMAP, "a\rb", "{3}\r\na\rb", 0),
		ROW("19 a%b", F_AMAP, "a%b", "{3}\r\na%b", 0),
		ROW("19 NI", F_AMAP, "NI", "NI", 0),
		ROW("19 NILE", F_AMAP, "NILE", "NILE", 0),
		ROW("19 x]", F_AMAP, "INBOX.x]", "INBOX.x]", 0),
	};

	(void)state;
	CHECK_ROWS(rows);
}

static void test_fmt_printliteral_rows(void **state)
{
	static const struct fmt_row rows[] = {
		ROW("22 abc", F_LIT, "abc", "{3}\r\nabc", 0),
		ROW("22 empty", F_LIT, "", "{0}\r\n", 0),
		ROW("22 a\\0b", F_LIT, "a\0b", "{3}\r\na\0b", 0),
		ROW("22 atom", F_LIT, "NIL", "{3}\r\nNIL", 0),
		ROWN("22 prefix", F_LIT, "abcdef", 2, "{2}\r\nab", 0),
	};

	(void)state;
	CHECK_ROWS(rows);
}

/* n copies of c, NUL-terminated (malloc'd). */
static char *repeat(char c, size_t n)
{
	char *p = malloc(n + 1);

	assert_non_null(p);
	memset(p, c, n);
	p[n] = '\0';
	return p;
}

/* The three encodings of an n-byte input, as the spec writes them. */
static char *as_quoted(const char *in, size_t n, size_t *len_out)
{
	char *p = malloc(n + 2);

	assert_non_null(p);
	p[0] = '"';
	memcpy(p + 1, in, n);
	p[n + 1] = '"';
	*len_out = n + 2;
	return p;
}

static char *as_literal(const char *in, size_t n, size_t *len_out)
{
	char *p = malloc(n + 32);
	int h;

	assert_non_null(p);
	h = snprintf(p, 32, "{%zu}\r\n", n);
	memcpy(p + h, in, n);
	*len_out = (size_t)h + n;
	return p;
}

static char *as_raw(const char *in, size_t n, size_t *len_out)
{
	char *p = malloc(n + 1);

	assert_non_null(p);
	memcpy(p, in, n);
	*len_out = n;
	return p;
}

enum enc {
	ENC_RAW,
	ENC_QUOTED,
	ENC_LITERAL
};

static void check_generated(const char *name, enum fmt_fn fn, const char *in,
			    size_t n, enum enc enc, int ret)
{
	struct fmt_row r = {name, fn, in, n, NULL, 0, ret};
	char *out;

	if (enc == ENC_RAW)
		out = as_raw(in, n, &r.out_len);
	else if (enc == ENC_QUOTED)
		out = as_quoted(in, n, &r.out_len);
	else
		out = as_literal(in, n, &r.out_len);
	r.out = out;
	check_row(&r);
	free(out);
}

/* Rows 10, 11, 16, 18, 20: the 1022/1023/1024 boundaries. */
static void test_fmt_length_limits(void **state)
{
	char *a1022 = repeat('a', 1022), *a1023 = repeat('a', 1023);
	char *a1024 = repeat('a', 1024), *blah = malloc(2501);
	char *sp1023 = repeat('a', 1023);

	(void)state;
	assert_non_null(blah);
	for (int i = 0; i < 500; i++)
		memcpy(blah + 5 * i, "blah ", 5);
	blah[2500] = '\0';
	sp1023[500] = ' ';

	check_generated("10", F_STR, blah, 2500, ENC_LITERAL, 0);
	check_generated("10 map", F_MAP, blah, 2500, ENC_LITERAL, 0);
	check_generated("11 1023", F_STR, a1023, 1023, ENC_QUOTED, 0);
	check_generated("11 1024", F_STR, a1024, 1024, ENC_LITERAL, 0);
	check_generated("16 1023", F_MAP, a1023, 1023, ENC_QUOTED, 2);
	check_generated("16 1024", F_MAP, a1024, 1024, ENC_LITERAL, 0);
	check_generated("18 1023", F_ASTR, a1023, 1023, ENC_RAW, 0);
	check_generated("18 1024", F_ASTR, a1024, 1024, ENC_LITERAL, 0);
	check_generated("18 1023 sp", F_ASTR, sp1023, 1023, ENC_QUOTED, 0);
	check_generated("20 1022", F_AMAP, a1022, 1022, ENC_RAW, 0);
	check_generated("20 1023", F_AMAP, a1023, 1023, ENC_QUOTED, 2);
	check_generated("20 1024", F_AMAP, a1024, 1024, ENC_LITERAL, 0);
	check_generated("20 1023 of 1024", F_AMAP, a1024, 1023, ENC_QUOTED, 2);
	free(a1022);
	free(a1023);
	free(a1024);
	free(blah);
	free(sp1023);
}

/*
 * Every byte value alone and inside an atom, through the four string
 * functions, against the classes of spec 2.9 written out here: QCHAR is
 * anything but bit 7, CR, LF, '"', '%', '\' (and NUL in the counted
 * forms); an atom byte is also above 0x1F, not 0x7F and none of
 * SP { ( ) *. 0x1F is no atom byte (RFC 3501 CTL; Cyrus 3.6 differed).
 */
static bool spec_qchar(unsigned char c)
{
	return c != 0 && c < 0x80 && c != '\r' && c != '\n' && c != '"' &&
	       c != '%' && c != '\\';
}

static bool spec_atomchar(unsigned char c)
{
	return spec_qchar(c) && c > 0x1f && c != 0x7f &&
	       strchr(" {()*", c) == NULL;
}

static void test_fmt_every_byte(void **state)
{
	(void)state;
	for (int v = 0; v < 256; v++) {
		unsigned char c = (unsigned char)v;
		char in[4] = {'x', (char)c, 'y', '\0'};
		enum enc e3 = spec_atomchar(c) ? ENC_RAW
			      : spec_qchar(c)  ? ENC_QUOTED
					       : ENC_LITERAL;
		int mret = spec_qchar(c) ? 2 : 0;
		char name[32];

		snprintf(name, sizeof(name), "byte 0x%02X", v);
		check_generated(name, F_MAP, in, 3,
				spec_qchar(c) ? ENC_QUOTED : ENC_LITERAL, mret);
		check_generated(name, F_AMAP, in, 3, e3,
				e3 == ENC_QUOTED ? 2 : 0);
		if (c == 0)
			continue;
		check_generated(name, F_STR, in, 3,
				spec_qchar(c) ? ENC_QUOTED : ENC_LITERAL, 0);
		check_generated(name, F_ASTR, in, 3, e3, 0);
	}
}

/*
 * Output that straddles the 4096-byte buffer: a prefix of k bytes, then
 * one call, for k around the point where the call's bytes fill it.
 */
static void test_fmt_across_buffer_boundary(void **state)
{
	static const struct {
		enum fmt_fn fn;
		const char *in;
		size_t n;
		const char *out;
		int ret;
	} calls[] = {
		{F_STR, "Hello", 5, "\"Hello\"", 0},
		{F_MAP, "Hello", 5, "\"Hello\"", 2},
		{F_AMAP, "a b", 3, "\"a b\"", 2},
		{F_ASTR, "atom", 4, "atom", 0},
		{F_LIT, "abc", 3, "{3}\r\nabc", 0},
		{F_AMAP, "", 0, "\"\"", 2},
	};
	char *prefix = repeat('p', PROT_BUFSIZE);

	(void)state;
	for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
		size_t olen = strlen(calls[i].out);

		for (size_t k = PROT_BUFSIZE - olen - 2; k <= PROT_BUFSIZE;
		     k++) {
			struct sink sk;
			size_t got_len;
			char *got;

			sink_open(&sk, SINK_SOCK);
			assert_int_equal(prot_write(sk.s, prefix, (unsigned)k),
					 0);
			assert_int_equal(call_fn(sk.s, calls[i].fn, calls[i].in,
						 calls[i].n),
					 calls[i].ret);
			got = sink_collect(&sk, &got_len);
			assert_int_equal(got_len, k + olen);
			assert_memory_equal(got, prefix, k);
			assert_memory_equal(got + k, calls[i].out, olen);
			assert_int_equal(prot_bytes_out(sk.s), k + olen);
			free(got);
			sink_close(&sk);
		}
	}
	free(prefix);
}

/* A socket stream whose peer is gone, after k bytes are buffered. */
static void open_broken(struct sink *k, size_t buffered)
{
	char *fill = repeat('f', buffered);

	sink_open(k, SINK_SOCK);
	close(k->sv[1]);
	k->sv[1] = -1;
	if (buffered > 0)
		assert_int_equal(prot_write(k->s, fill, (unsigned)buffered), 0);
	free(fill);
}

static void close_broken(struct sink *k)
{
	assert_int_equal(prot_free(k->s), 0);
	close(k->sv[0]);
}

/* Row 30's rule for the string calls: on a dead stream, all give EOF. */
static void test_fmt_dead_stream_returns_eof(void **state)
{
	static const struct {
		enum fmt_fn fn;
		const char *in;
		size_t n;
	} calls[] = {
		{F_STR, NULL, 0},   {F_STR, "q", 1},	{F_STR, "a\rb", 3},
		{F_MAP, NULL, 0},   {F_MAP, "", 0},	{F_MAP, "q", 1},
		{F_MAP, "\r", 1},   {F_ASTR, NULL, 0},	{F_ASTR, "", 0},
		{F_ASTR, "a", 1},   {F_ASTR, "a b", 3}, {F_ASTR, "%", 1},
		{F_AMAP, NULL, 0},  {F_AMAP, "", 0},	{F_AMAP, "a", 1},
		{F_AMAP, "a b", 3}, {F_AMAP, "\0", 1},	{F_LIT, "abc", 3},
		{F_LIT, "", 0},
	};
	struct sink k;

	(void)state;
	open_broken(&k, 1);
	assert_int_equal(prot_flush(k.s), EOF);
	assert_non_null(prot_error(k.s));
	for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
		int r = call_fn(k.s, calls[i].fn, calls[i].in, calls[i].n);

		if (r != EOF)
			fail_msg("call %zu returned %d on a dead stream", i, r);
	}
	close_broken(&k);
}

/*
 * The closing quote is the byte that fills the buffer, and that flush
 * fails. Cyrus ignores the closing putc and returns 2 (spec 2.9.7); we
 * return EOF, so the failure is not lost. Same for printamap's "".
 */
static void test_fmt_closing_quote_failure_is_reported(void **state)
{
	struct sink k;

	(void)state;
	/* 1 + 5 + 1 bytes: the last one is byte 4096. */
	open_broken(&k, PROT_BUFSIZE - 7);
	assert_int_equal(prot_printmap(k.s, "Hello", 5), EOF);
	assert_non_null(prot_error(k.s));
	close_broken(&k);

	open_broken(&k, PROT_BUFSIZE - 7);
	assert_int_equal(prot_printamap(k.s, "a b c", 5), EOF);
	close_broken(&k);

	open_broken(&k, PROT_BUFSIZE - 2);
	assert_int_equal(prot_printamap(k.s, "", 0), EOF);
	close_broken(&k);

	/* One byte earlier, the quote does not fill the buffer: 2. */
	open_broken(&k, PROT_BUFSIZE - 8);
	assert_int_equal(prot_printmap(k.s, "Hello", 5), 2);
	close_broken(&k);
}

/* Row 23 on writebuf, plus a sequence: bytes accumulate in order. */
static void test_fmt_writebuf_sequence(void **state)
{
	static const char want[] = "{3+}\r\na\nb \"q\" atom NIL {1+}\r\n%"
				   " \"\" {2+}\r\n\0\1";
	struct buf b = {0};
	struct protstream *s = prot_writebuf(&b);

	(void)state;
	assert_non_null(s);
	assert_int_equal(prot_printstring(s, "a\nb"), 0);
	assert_int_equal(prot_putc(' ', s), 0);
	assert_int_equal(prot_printmap(s, "q", 1), 2);
	assert_int_equal(prot_putc(' ', s), 0);
	assert_int_equal(prot_printastring(s, "atom"), 0);
	assert_int_equal(prot_putc(' ', s), 0);
	assert_int_equal(prot_printstring(s, NULL), 0);
	assert_int_equal(prot_putc(' ', s), 0);
	assert_int_equal(prot_printastring(s, "%"), 0);
	assert_int_equal(prot_putc(' ', s), 0);
	assert_int_equal(prot_printamap(s, "", 0), 2);
	assert_int_equal(prot_putc(' ', s), 0);
	assert_int_equal(prot_printamap(s, "\0\1", 2), 0);
	assert_int_equal(prot_flush(s), 0);
	assert_int_equal(b.len, sizeof(want) - 1);
	assert_memory_equal(b.s, want, sizeof(want) - 1);
	assert_int_equal(prot_bytes_out(s), sizeof(want) - 1);
	assert_int_equal(prot_free(s), 0);
	free(b.s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
		T(test_fmt_printstring_rows),
		T(test_fmt_printmap_rows),
		T(test_fmt_printastring_rows),
		T(test_fmt_printamap_rows),
		T(test_fmt_printliteral_rows),
		T(test_fmt_length_limits),
		T(test_fmt_every_byte),
		T(test_fmt_across_buffer_boundary),
		T(test_fmt_dead_stream_returns_eof),
		T(test_fmt_closing_quote_failure_is_reported),
		T(test_fmt_writebuf_sequence),
#undef T
	};

	signal(SIGPIPE, SIG_IGN);
	return t_run_groups("prot-fmt", tests,
			    sizeof(tests) / sizeof(tests[0]));
}
