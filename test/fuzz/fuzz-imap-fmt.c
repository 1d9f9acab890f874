/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/imap-fmt: IMAP string output parsed back by a strict parser. */
#include "fuzz.h"

#include <stdbool.h>
#include <string.h>

#include <ringprot/prot.h>

/*
 * The input is a list of items: which call (printliteral, printstring,
 * printmap, printastring, printamap), NULL or not, isclient on or off,
 * and the bytes (taken raw from the input, or a short pattern repeated to
 * a length near the 1022/1023/1024 limits, with one byte changed). All go
 * into one prot_writebuf stream, separated by SP. The output is then
 * parsed by a strict IMAP parser written here (atom, quoted string with
 * no escapes, {N} or {N+} literal, NIL), which must give back exactly the
 * input (NULL as NIL) in the form spec 2.9 prescribes, with the return
 * values of spec 2.9.7. The rules are restated here from the spec, not
 * taken from prot/imap-fmt.c.
 */

#define MAXQUOTED 1023 /* MAXQSTRING - 1 */
#define MAXATOM	  1023 /* C-string atom test */
#define MAXNATOM  1022 /* counted atom test (Cyrus's off-by-one) */
#define LEN_MAX	  2100

enum call {
	C_LITERAL,
	C_STRING,
	C_MAP,
	C_ASTRING,
	C_AMAP,
};

enum form {
	F_NIL,
	F_ATOM,
	F_QUOTED,
	F_LITERAL,
};

#define K_NULL	    0x08
#define K_NOTCLIENT 0x10
#define K_PATTERN   0x20
#define K_TWEAK	    0x40
#define K_FLUSH	    0x80

struct item {
	enum call call;
	bool null, client;
	const uint8_t *p; /* never NULL; C strings: NUL-terminated */
	size_t n;	  /* counted: n; C string: strlen */
	uint8_t *own;	  /* p, when allocated here */
	enum form want;
	int want_ret;
};

/* Spec 2.9: QCHAR (NUL fails as well; C strings cannot hold one). */
static bool is_qchar(uint8_t c)
{
	return c != 0 && c < 0x80 && c != '\r' && c != '\n' && c != '"' &&
	       c != '%' && c != '\\';
}

/* Spec 2.9 atom bytes; 0x1F excluded as well (prot.h differences). */
static bool is_atomchar(uint8_t c)
{
	return is_qchar(c) && c > 0x1f && c != 0x7f && c != ' ' && c != '{' &&
	       c != '(' && c != ')' && c != '*';
}

static bool all_of(const uint8_t *p, size_t n, bool (*ok)(uint8_t))
{
	for (size_t i = 0; i < n; i++)
		if (!ok(p[i]))
			return false;
	return true;
}

static bool is_nil(const uint8_t *p, size_t n)
{
	return n == 3 && memcmp(p, "NIL", 3) == 0;
}

/* printstring / printmap: quoted if it may be, else a literal. */
static enum form string_form(const uint8_t *p, size_t n)
{
	return n <= MAXQUOTED && all_of(p, n, is_qchar) ? F_QUOTED : F_LITERAL;
}

/* Coverage hints: the limits of spec 2.9 and the bytes it singles out. */
static void hints(const struct item *it)
{
	bool atom, q, amap, astr, map, str;

	atom = all_of(it->p, it->n, is_atomchar);
	q = all_of(it->p, it->n, is_qchar);
	amap = it->call == C_AMAP;
	astr = it->call == C_ASTRING;
	map = it->call == C_MAP;
	str = it->call == C_STRING;

	HINT(amap && atom && it->n == MAXNATOM);
	HINT(amap && atom && it->n == MAXNATOM + 1);
	HINT(astr && atom && it->n == MAXATOM);
	HINT(astr && atom && it->n == MAXATOM + 1);
	HINT(map && q && it->n == MAXQUOTED);
	HINT(map && q && it->n == MAXQUOTED + 1);
	HINT(str && q && it->n == MAXQUOTED);
	HINT(str && q && it->n == MAXQUOTED + 1);
	HINT((amap || astr) && is_nil(it->p, it->n));
	HINT((amap || astr) && it->n == 3 && !is_nil(it->p, it->n) &&
	     (it->p[0] | 0x20) == 'n' && (it->p[1] | 0x20) == 'i' &&
	     (it->p[2] | 0x20) == 'l');
	HINT((amap || astr) && q && !atom);
	HINT(it->n == 1 && it->p[0] == 0x1f && (amap || astr));
	HINT(it->n == 1 && it->p[0] == 0x7f && (amap || astr));
	HINT(it->n > 0 && it->p[0] == '%' && (map || str));
	HINT(it->n > 0 && it->p[0] == ']' && (amap || astr));
	HINT(it->n > 0 && memchr(it->p, 0, it->n) != NULL && (map || amap));
	HINT(it->n == 0 && !it->null);
}

/* Spec 2.9.1-2.9.5 and 2.9.7. */
static void expect(struct item *it)
{
	size_t max_atom = it->call == C_AMAP ? MAXNATOM : MAXATOM;

	it->want_ret = 0;
	if (it->call == C_LITERAL) {
		it->want = F_LITERAL;
		return;
	}
	if (it->null) {
		it->want = F_NIL;
		return;
	}
	it->want = string_form(it->p, it->n);
	if ((it->call == C_ASTRING || it->call == C_AMAP) && it->n > 0 &&
	    it->n <= max_atom && all_of(it->p, it->n, is_atomchar) &&
	    !is_nil(it->p, it->n))
		it->want = F_ATOM;
	if ((it->call == C_MAP || it->call == C_AMAP) && it->want == F_QUOTED)
		it->want_ret = 2;
}

static int call_fmt(struct protstream *s, const struct item *it)
{
	const char *p = it->null ? NULL : (const char *)it->p;

	switch (it->call) {
	case C_LITERAL:
		return prot_printliteral(s, p, it->n);
	case C_STRING:
		return prot_printstring(s, p);
	case C_MAP:
		return prot_printmap(s, p, it->n);
	case C_ASTRING:
		return prot_printastring(s, p);
	case C_AMAP:
		return prot_printamap(s, p, it->n);
	}
	return -100;
}

static size_t item_len(struct fuzz_in *in)
{
	unsigned v = fuzz_u16(in);

	if ((v & 0xc000) == 0xc000)
		return 1020 + v % 6; /* around the limits */
	if (v & 0x8000)
		return (v & 0x3fff) % (LEN_MAX + 1);
	return v % 40;
}

/* Read one item's description and bytes from the input. */
static void parse_item(struct fuzz_in *in, struct item *it)
{
	unsigned k = fuzz_u8(in), plen, at = 0;
	uint8_t pat[8], tweak = 0;
	size_t n = item_len(in);
	bool cstr;

	memset(it, 0, sizeof(*it));
	it->call = (enum call)(k % 5);
	it->null = (k & K_NULL) != 0;
	it->client = !(k & K_NOTCLIENT);
	cstr = it->call == C_STRING || it->call == C_ASTRING;
	if (it->null && it->call == C_LITERAL)
		n = 0; /* NULL with size 0 writes {0} */
	if (k & K_PATTERN) {
		plen = fuzz_u8(in) % 8 + 1;
		for (unsigned i = 0; i < plen; i++)
			pat[i] = (uint8_t)fuzz_u8(in);
		if (k & K_TWEAK) {
			at = fuzz_u16(in);
			tweak = (uint8_t)fuzz_u8(in);
		}
		it->own = malloc(n + 1);
		FUZZ_CHECK(it->own != NULL);
		for (size_t i = 0; i < n; i++)
			it->own[i] = pat[i % plen];
		if ((k & K_TWEAK) && n > 0)
			it->own[at % n] = tweak;
	} else {
		if (n > in->n)
			n = in->n;
		/* Counted calls read the input in place: ASan sees overruns. */
		if (cstr || n == 0) {
			it->own = malloc(n + 1);
			FUZZ_CHECK(it->own != NULL);
			memcpy(it->own, in->p, n);
		}
		it->p = in->p;
		in->p += n;
		in->n -= n;
	}
	if (it->own != NULL) {
		it->own[n] = '\0';
		it->p = it->own;
	}
	it->n = cstr ? strlen((const char *)it->p) : n;
	HINT(cstr && it->n < n); /* a NUL cut the C string short */
	if (!it->null)
		hints(it);
	expect(it);
}

/* One parsed value: the form and its bytes (NULL for NIL). */
struct val {
	enum form form;
	const uint8_t *p;
	size_t n;
	bool plus;
};

/* A strict IMAP string/astring/nstring; returns the bytes consumed. */
static size_t parse_value(const uint8_t *b, size_t len, struct val *v)
{
	size_t i = 0, n = 0;

	FUZZ_CHECK(len > 0);
	if (b[0] == '"') {
		for (i = 1; i < len && b[i] != '"'; i++)
			FUZZ_CHECK(is_qchar(b[i]));
		FUZZ_CHECK(i < len); /* closed */
		v->form = F_QUOTED;
		v->p = b + 1;
		v->n = i - 1;
		FUZZ_CHECK(v->n <= MAXQUOTED);
		return i + 1;
	}
	if (b[0] == '{') {
		for (i = 1; i < len && b[i] >= '0' && b[i] <= '9'; i++) {
			FUZZ_CHECK(n <= len); /* no overflow */
			n = n * 10 + (size_t)(b[i] - '0');
		}
		FUZZ_CHECK(i > 1 && (b[1] != '0' || i == 2)); /* canonical */
		v->plus = i < len && b[i] == '+';
		i += v->plus;
		FUZZ_CHECK(len - i >= 3 && memcmp(b + i, "}\r\n", 3) == 0);
		i += 3;
		FUZZ_CHECK(len - i >= n);
		v->form = F_LITERAL;
		v->p = b + i;
		v->n = n;
		return i + n;
	}
	for (i = 0; i < len && b[i] != ' '; i++)
		FUZZ_CHECK(is_atomchar(b[i]));
	FUZZ_CHECK(i > 0);
	v->form = is_nil(b, i) ? F_NIL : F_ATOM;
	v->p = v->form == F_NIL ? NULL : b;
	v->n = i;
	return i;
}

static void check_item(const struct item *it, const struct val *v)
{
	FUZZ_CHECK(v->form == it->want);
	if (v->form == F_NIL)
		return;
	FUZZ_CHECK(v->n == it->n);
	FUZZ_CHECK(it->n == 0 || memcmp(v->p, it->p, it->n) == 0);
	if (v->form == F_LITERAL)
		FUZZ_CHECK(v->plus == it->client); /* LITERAL+ iff isclient */
}

static void free_items(struct item *items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(items[i].own);
	free(items);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = {data, size};
	struct buf out = {0};
	struct protstream *s = prot_writebuf(&out);
	struct item *items = NULL;
	size_t n = 0, cap = 0, off = 0;

	FUZZ_CHECK(s != NULL);
	FUZZ_CHECK(s->isclient); /* writebuf streams use {N+} (spec 2.9.6) */
	while (in.n > 0) {
		struct item *it;
		int ret;

		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			items = realloc(items, cap * sizeof(*items));
			FUZZ_CHECK(items != NULL);
		}
		it = &items[n++];
		parse_item(&in, it);
		FUZZ_CHECK(prot_setisclient(s, it->client) == 0);
		if (n > 1)
			FUZZ_CHECK(prot_putc(' ', s) == 0);
		ret = call_fmt(s, it);
		FUZZ_CHECK(ret == it->want_ret);
		if (in.n > 0 && (in.p[0] & K_FLUSH))
			FUZZ_CHECK(prot_flush(s) == 0);
		/* writebuf: every byte is in out or still buffered. */
		FUZZ_CHECK(out.len + (size_t)(s->ptr - s->buf) == s->bytes_out);
	}
	FUZZ_CHECK(prot_flush(s) == 0);
	FUZZ_CHECK(out.len == s->bytes_out);
	FUZZ_CHECK(prot_error(s) == NULL);
	for (size_t i = 0; i < n; i++) {
		struct val v = {0};

		if (i > 0) {
			FUZZ_CHECK(off < out.len && out.s[off] == ' ');
			off++;
		}
		off += parse_value((const uint8_t *)out.s + off, out.len - off,
				   &v);
		check_item(&items[i], &v);
	}
	FUZZ_CHECK(off == out.len); /* nothing left over */
	FUZZ_CHECK(prot_free(s) == 0);
	free(out.s);
	free_items(items, n);
	return 0;
}
