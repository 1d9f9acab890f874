/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/imap-mime: examples/imapd's MIME parser on arbitrary bytes. */
#include "fuzz.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "mime.h" /* examples/imapd */

/*
 * The input is a stored message. Checks:
 *
 * - Every part's header and body lie inside the buffer, the body right
 *   after the header, children inside their parent's body, in order.
 * - ENVELOPE of every message part and BODYSTRUCTURE/BODY are one
 *   balanced parenthesised list of atoms, quoted strings (only \" and \\
 *   escaped, no CR/LF/NUL/8-bit) and literals whose {n} is exact.
 * - The CRLF size of the whole is its bytes plus its bare LFs, counted
 *   here independently; a section's bytes as written number its size and
 *   every LF in them follows a CR; a partial is the same slice of the
 *   whole section.
 * - BINARY, SEARCH and Date parsing answer within their contract.
 */

static struct imap_mime_msg msg;

/* One IMAP value list: returns the end, or 0 on a syntax error. */
static size_t check_list(const char *s, size_t n)
{
	size_t p = 0;
	int depth = 0;
	bool sep = true; /* at the start, after "(" or " " */

	while (p < n) {
		char c = s[p];

		FUZZ_CHECK(c != ')' || !sep); /* no "()", no " )" */

		if (c == '(') {
			depth++;
			p++;
		} else if (c == ')') {
			FUZZ_CHECK(depth > 0);
			depth--;
			p++;
		} else if (c == ' ') {
			/* One space between values, none after "(". */
			FUZZ_CHECK(!sep);
			sep = true;
			p++;
			continue;
		} else if (c == '"') {
			for (p++; p < n && s[p] != '"'; p++) {
				unsigned char u = (unsigned char)s[p];

				FUZZ_CHECK(u != '\r' && u != '\n' && u != 0 &&
					   u < 0x80);
				if (u == '\\') {
					p++;
					FUZZ_CHECK(p < n && (s[p] == '"' ||
							     s[p] == '\\'));
				}
			}
			FUZZ_CHECK(p < n);
			p++;
		} else if (c == '{') {
			size_t len = 0;

			for (p++; p < n && s[p] >= '0' && s[p] <= '9'; p++)
				len = len * 10 + (size_t)(s[p] - '0');
			FUZZ_CHECK(p + 3 <= n && s[p] == '}' &&
				   s[p + 1] == '\r' && s[p + 2] == '\n');
			p += 3;
			FUZZ_CHECK(len <= n - p);
			FUZZ_CHECK(memchr(s + p, '\0', len) == NULL);
			p += len;
		} else {
			/* An atom: NIL or a number. */
			size_t st = p;

			while (p < n && s[p] != ' ' && s[p] != ')' &&
			       s[p] != '(')
				p++;
			FUZZ_CHECK(p - st > 0);
			if (!(p - st == 3 && memcmp(s + st, "NIL", 3) == 0))
				for (size_t i = st; i < p; i++)
					FUZZ_CHECK(s[i] >= '0' && s[i] <= '9');
		}
		sep = c == '(';
		if (depth == 0)
			break;
	}
	FUZZ_CHECK(depth == 0);
	return p;
}

static void check_value(const struct buf *b)
{
	FUZZ_CHECK(b->len > 0 && b->s[0] == '(');
	FUZZ_CHECK(check_list(b->s, b->len) == b->len);
}

static void check_parts(const uint8_t *data, size_t size)
{
	FUZZ_CHECK(msg.nparts >= 1 && msg.nparts <= IMAP_MIME_MAX_PARTS);
	FUZZ_CHECK(msg.base == (const char *)data && msg.len == size);
	for (unsigned i = 0; i < msg.nparts; i++) {
		const struct imap_mime_part *p = &msg.part[i];

		FUZZ_CHECK(p->hdr_off <= size &&
			   p->hdr_len <= size - p->hdr_off);
		FUZZ_CHECK(p->body_off == p->hdr_off + p->hdr_len);
		FUZZ_CHECK(p->body_len <= size - p->body_off);
		FUZZ_CHECK(p->depth <= IMAP_MIME_MAX_DEPTH);
		if (i == 0) {
			FUZZ_CHECK(p->hdr_off == 0 &&
				   p->body_off + p->body_len == size);
			continue;
		}
		const struct imap_mime_part *up = &msg.part[p->parent];

		FUZZ_CHECK(p->parent >= 0 && (unsigned)p->parent < i);
		FUZZ_CHECK(up->kind != IMAP_MIME_LEAF);
		FUZZ_CHECK(p->hdr_off >= up->body_off &&
			   p->body_off + p->body_len <=
				   up->body_off + up->body_len);
		if (p->next >= 0)
			FUZZ_CHECK(msg.part[p->next].hdr_off >=
				   p->body_off + p->body_len);
		HINT(p->depth > 3);
	}
	HINT(msg.truncated);
}

static int collect_fn(void *arg, const char *p, size_t n)
{
	obuf_add(arg, p, n);
	return 0;
}

static void check_section(const char *spec, uint64_t from, uint64_t count)
{
	struct imap_mime_section s;
	struct obuf all = {0}, part = {0};
	int ret = imap_mime_section_find(&msg, spec, strlen(spec), &s);

	FUZZ_CHECK(ret == 0 || ret == -ENOENT || ret == -EINVAL);
	if (ret < 0)
		return;
	FUZZ_CHECK(s.off <= msg.len && s.len <= msg.len - s.off);
	FUZZ_CHECK(imap_mime_section_write(&msg, &s, 0, UINT64_MAX, collect_fn,
					   &all) == 0);
	FUZZ_CHECK(all.len == s.size);
	for (size_t i = 0; i < all.len; i++)
		if (all.p[i] == '\n')
			FUZZ_CHECK(i > 0 && all.p[i - 1] == '\r');
	FUZZ_CHECK(imap_mime_section_write(&msg, &s, from, count, collect_fn,
					   &part) == 0);
	if (from >= all.len) {
		FUZZ_CHECK(part.len == 0);
	} else {
		size_t want = all.len - (size_t)from;

		if (count < want)
			want = (size_t)count;
		FUZZ_CHECK(part.len == want);
		FUZZ_CHECK(want == 0 ||
			   memcmp(part.p, all.p + from, want) == 0);
	}
	HINT(s.fields != NULL && s.size > 2);
	free(all.p);
	free(part.p);
}

static void check_output(void)
{
	struct buf b = BUF_INITIALIZER;

	for (int ext = 0; ext < 2; ext++) {
		FUZZ_CHECK(imap_mime_bodystructure(&msg, 0, ext, &b) == 0);
		check_value(&b);
		b.len = 0;
	}
	for (unsigned i = 0; i < msg.nparts; i++) {
		bool is_msg = i == 0 || msg.part[msg.part[i].parent].kind ==
						IMAP_MIME_MESSAGE;
		int ret = imap_mime_envelope(&msg, (int)i, &b);

		FUZZ_CHECK(is_msg ? ret == 0 : ret == -EINVAL);
		if (ret == 0)
			check_value(&b);
		b.len = 0;
	}
	free(b.s);
}

/*
 * BINARY of every part, with and without its header: it answers or finds
 * an unknown encoding, its size is what it writes, and a window of it is
 * the same slice of the whole.
 */
static void check_binary_part(int idx, bool hdr)
{
	struct obuf o = {0}, w = {0};
	uint64_t size = 0, size2 = 1, from, want;
	int ret = imap_mime_binary_write(&msg, idx, hdr, 0, UINT64_MAX,
					 collect_fn, &o, &size);

	FUZZ_CHECK(ret == 0 || ret == -EPROTONOSUPPORT);
	FUZZ_CHECK(imap_mime_binary_size(&msg, idx, hdr, &size2) == ret);
	if (ret == 0) {
		FUZZ_CHECK(size == o.len && size2 == size);
		from = o.len / 3;
		want = o.len - from < 7 ? o.len - from : 7;
		FUZZ_CHECK(imap_mime_binary_write(&msg, idx, hdr, from, 7,
						  collect_fn, &w, NULL) == 0);
		FUZZ_CHECK(w.len == want);
		FUZZ_CHECK(want == 0 || memcmp(w.p, o.p + from, want) == 0);
	}
	free(o.p);
	free(w.p);
}

static void check_binary(void)
{
	for (unsigned i = 0; i < msg.nparts; i++) {
		check_binary_part((int)i, false);
		check_binary_part((int)i, true);
	}
	FUZZ_CHECK(imap_mime_binary_write(&msg, (int)msg.nparts, false, 0,
					  UINT64_MAX, collect_fn, NULL,
					  NULL) == -EINVAL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const specs[] = {
		"",
		"HEADER",
		"TEXT",
		"HEADER.FIELDS (From Subject \"To\")",
		"HEADER.FIELDS.NOT (Content-Type)",
		"1",
		"1.MIME",
		"1.1",
		"1.2",
		"2",
		"2.MIME",
		"2.HEADER",
		"2.TEXT",
		"2.1",
		"2.1.MIME",
		"2.2.1",
		"1.2.HEADER.FIELDS (subject)",
		"3",
		"3.1",
	};
	uint64_t bare = 0;
	time_t t;
	int ret;
	char needle[8];
	size_t nn = size < sizeof(needle) ? size : sizeof(needle);

	imap_mime_parse(&msg, (const char *)data, size);
	check_parts(data, size);

	for (size_t i = 0; i < size; i++)
		if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r'))
			bare++;
	FUZZ_CHECK(imap_mime_crlf_len((const char *)data, 0, size) ==
		   size + bare);

	check_output();
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++)
		check_section(specs[i], size % 7, (size / 7) % 40);
	check_binary();

	/* A needle from the middle of the input: at most 8 bytes. */
	if (nn > 0)
		memcpy(needle, data + (size - nn) / 2, nn);
	ret = imap_mime_header_search(&msg, 0, "Subject", needle, nn);
	FUZZ_CHECK(ret == 0 || ret == 1);
	ret = imap_mime_header_search(&msg, 0, NULL, needle, nn);
	FUZZ_CHECK(ret == 0 || ret == 1);
	ret = imap_mime_body_search(&msg, needle, nn);
	FUZZ_CHECK(ret == 0 || ret == 1);
	ret = imap_mime_date(&msg, 0, &t, NULL);
	FUZZ_CHECK(ret == 0 || ret == -EINVAL || ret == -ENOENT);
	return 0;
}
