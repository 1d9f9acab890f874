/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/imap-fmt: IMAP atoms, quoted strings and literals on a protstream. */
#include <ringprot/prot.h>

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/*
 * The rules are Cyrus's (spec 2.9), including its quirks:
 *
 * - A quoted string holds at most MAXQSTRING - 1 = 1023 bytes and never
 *   uses backslash escapes: any byte that would need one (", \) sends the
 *   string out as a literal, and so does %, which Cyrus's old formatter
 *   could not pass through.
 * - The C-string atom test accepts up to 1023 bytes, the counted one
 *   (printamap) only up to 1022: Cyrus's imparse_isnatom counts one past
 *   the end before comparing with 1024. Clients see this, so we keep it.
 * - We exclude 0x1F from atoms, as RFC 3501 (CTL) and Cyrus since
 *   2feaad18dd do; Cyrus 3.6 still sent it raw.
 * - The NIL test is case-sensitive: "nil" goes out as an atom.
 *
 * Every byte is classified once, through a table built at compile time;
 * each string is scanned once and then written with one prot_write (plus
 * a putc per quote), never through printf.
 */

#define MAXQSTRING 1024

/* The atom test only admits counted strings shorter than this. */
#define MAXNATOM 1022

enum {
	CLS_QCHAR = 1, /* allowed inside "..." */
	CLS_ATOM = 2,  /* allowed in an atom (always also a QCHAR) */
};

#define FMT_IS_Q(c)                                                            \
	((c) != 0 && (c) < 0x80 && (c) != '\r' && (c) != '\n' && (c) != '"' && \
	 (c) != '%' && (c) != '\\')
#define FMT_IS_A(c)                                                \
	(FMT_IS_Q(c) && (c) > 0x1f && (c) != 0x7f && (c) != ' ' && \
	 (c) != '{' && (c) != '(' && (c) != ')' && (c) != '*')
#define FMT_CLS(c) \
	((FMT_IS_Q(c) ? CLS_QCHAR : 0) | (FMT_IS_A(c) ? CLS_ATOM : 0))
#define FMT_ROW4(b) \
	FMT_CLS((b) + 0), FMT_CLS((b) + 1), FMT_CLS((b) + 2), FMT_CLS((b) + 3)
#define FMT_ROW16(b)                                             \
	FMT_ROW4((b) + 0), FMT_ROW4((b) + 4), FMT_ROW4((b) + 8), \
		FMT_ROW4((b) + 12)

static const unsigned char fmt_cls[256] = {
	FMT_ROW16(0x00), FMT_ROW16(0x10), FMT_ROW16(0x20), FMT_ROW16(0x30),
	FMT_ROW16(0x40), FMT_ROW16(0x50), FMT_ROW16(0x60), FMT_ROW16(0x70),
	FMT_ROW16(0x80), FMT_ROW16(0x90), FMT_ROW16(0xa0), FMT_ROW16(0xb0),
	FMT_ROW16(0xc0), FMT_ROW16(0xd0), FMT_ROW16(0xe0), FMT_ROW16(0xf0),
};

/* The classes every one of the n bytes has: 0 as soon as one has none. */
static unsigned scan_map(const char *p, size_t n)
{
	const unsigned char *u = (const unsigned char *)p;
	unsigned cls = CLS_QCHAR | CLS_ATOM;

	for (size_t i = 0; i < n && cls != 0; i++)
		cls &= fmt_cls[u[i]];
	return cls;
}

/*
 * Scan a C string up to its NUL or MAXQSTRING bytes, whichever comes
 * first, stopping early at a byte that is not even a QCHAR. Returns the
 * bytes scanned; *cls_out gets the classes they all share, and *end_out
 * whether the NUL was reached (so the length is known).
 */
static size_t scan_cstr(const char *s, unsigned *cls_out, bool *end_out)
{
	const unsigned char *u = (const unsigned char *)s;
	unsigned cls = CLS_QCHAR | CLS_ATOM;
	size_t i;

	for (i = 0; i < MAXQSTRING && u[i] != '\0'; i++) {
		cls &= fmt_cls[u[i]];
		if (cls == 0)
			break;
	}
	*cls_out = cls;
	*end_out = i < MAXQSTRING && u[i] == '\0';
	return i;
}

/* prot_write for any size_t: prot_write takes an unsigned count. */
static int write_all(struct protstream *out, const char *p, size_t n)
{
	do {
		unsigned chunk = n > UINT_MAX ? UINT_MAX : (unsigned)n;

		if (prot_write(out, p, chunk) == EOF)
			return EOF;
		p += chunk;
		n -= chunk;
	} while (n > 0);
	return 0;
}

static int write_nil(struct protstream *out)
{
	return prot_write(out, "NIL", 3);
}

/*
 * `"` p `"`. Cyrus ignores a failing closing quote; we report it (the
 * stream is dead either way), so a caller's r < 0 check sees it.
 */
static int write_quoted(struct protstream *out, const char *p, size_t n)
{
	int r = prot_putc('"', out);

	if (n > 0 && write_all(out, p, n) == EOF)
		return EOF;
	if (prot_putc('"', out) == EOF || r == EOF)
		return EOF;
	return 0;
}

int prot_printliteral(struct protstream *out, const char *s, size_t size)
{
	char hdr[sizeof("{+}\r\n") + 20];
	char digits[20];
	size_t nd = 0, len = 0, v = size;

	do {
		digits[nd++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	hdr[len++] = '{';
	while (nd > 0)
		hdr[len++] = digits[--nd];
	if (out->isclient)
		hdr[len++] = '+';
	hdr[len++] = '}';
	hdr[len++] = '\r';
	hdr[len++] = '\n';
	if (prot_write(out, hdr, (unsigned)len) == EOF)
		return EOF;
	if (size == 0)
		return 0;
	return write_all(out, s, size);
}

int prot_printstring(struct protstream *out, const char *s)
{
	unsigned cls;
	bool end;
	size_t n;

	if (s == NULL)
		return write_nil(out);
	n = scan_cstr(s, &cls, &end);
	if (!end || !(cls & CLS_QCHAR))
		return prot_printliteral(out, s, n + strlen(s + n));
	return write_quoted(out, s, n);
}

int prot_printmap(struct protstream *out, const char *s, size_t n)
{
	if (s == NULL)
		return write_nil(out);
	if (n >= MAXQSTRING || !(scan_map(s, n) & CLS_QCHAR))
		return prot_printliteral(out, s, n);
	return write_quoted(out, s, n) == EOF ? EOF : 2;
}

int prot_printamap(struct protstream *out, const char *s, size_t n)
{
	unsigned cls;

	if (s == NULL)
		return write_nil(out);
	if (n >= MAXQSTRING)
		return prot_printliteral(out, s, n);
	cls = scan_map(s, n);
	if (n == 0 || !(cls & CLS_ATOM) || n > MAXNATOM ||
	    (n == 3 && memcmp(s, "NIL", 3) == 0)) {
		if (!(cls & CLS_QCHAR))
			return prot_printliteral(out, s, n);
		return write_quoted(out, s, n) == EOF ? EOF : 2;
	}
	return prot_write(out, s, (unsigned)n);
}

int prot_printastring(struct protstream *out, const char *s)
{
	unsigned cls;
	bool end;
	size_t n;

	if (s == NULL)
		return write_nil(out);
	n = scan_cstr(s, &cls, &end);
	if (!end || !(cls & CLS_QCHAR))
		return prot_printliteral(out, s, n + strlen(s + n));
	if (n > 0 && (cls & CLS_ATOM) && strcmp(s, "NIL") != 0)
		return prot_write(out, s, (unsigned)n);
	return write_quoted(out, s, n);
}
