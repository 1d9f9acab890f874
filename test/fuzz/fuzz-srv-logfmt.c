/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/srv-logfmt: any key and value survive a logfmt round trip. */
#include "fuzz.h"

#include <stdbool.h>

#include <ringprot/srv-log.h>

/*
 * Input: one byte k, then k bytes of key (at most), the rest the value.
 * The line is built (not written) and read back by an independent logfmt
 * reader: every byte is printable ASCII or part of valid UTF-8, the fields
 * are exactly level, event, conn, the key, and the value decodes to the
 * input bytes (a prefix of them when the line says truncated=1). Keys
 * come back as the input with bytes outside [A-Za-z0-9_.-] turned to '_'.
 */

struct field {
	char key[80];
	char val[SRV_LOG_LINE_MAX];
	size_t vlen;
	bool cut; /* a quoted value ending in "..." */
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Read one ` key=value` field at *p; false at the end of the line. */
static bool next_field(const char **p, const char *end, struct field *f)
{
	const char *s = *p;
	size_t k = 0;

	if (s >= end)
		return false;
	FUZZ_CHECK(*s == ' ');
	for (s++; s < end && *s != '='; s++) {
		FUZZ_CHECK(k + 1 < sizeof(f->key));
		f->key[k++] = *s;
	}
	f->key[k] = '\0';
	FUZZ_CHECK(s < end);
	s++;
	f->vlen = 0;
	f->cut = false;
	if (s < end && *s == '"') {
		for (s++; s < end && *s != '"'; s++) {
			char c = *s;

			if (c == '\\') {
				FUZZ_CHECK(s + 1 < end);
				c = *++s;
				if (c == 'x') {
					FUZZ_CHECK(s + 2 < end);
					FUZZ_CHECK(hexval(s[1]) >= 0 &&
						   hexval(s[2]) >= 0);
					c = (char)(hexval(s[1]) * 16 +
						   hexval(s[2]));
					s += 2;
				} else {
					FUZZ_CHECK(c == '"' || c == '\\' ||
						   c == 'n' || c == 'r' ||
						   c == 't');
					c = c == 'n'   ? '\n'
					    : c == 'r' ? '\r'
					    : c == 't' ? '\t'
						       : c;
				}
			}
			f->val[f->vlen++] = c;
		}
		FUZZ_CHECK(s < end); /* the closing quote */
		s++;
		if (f->vlen >= 3 && memcmp(f->val + f->vlen - 3, "...", 3) == 0)
			f->cut = true;
	} else {
		for (; s < end && *s != ' '; s++) {
			FUZZ_CHECK(*s != '"' && *s != '=' && *s != '\\');
			f->val[f->vlen++] = *s;
		}
	}
	*p = s;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct srv_logline l;
	static struct field f;
	char key[256], want_key[256];
	const char *p, *end;
	size_t klen, vlen;
	const uint8_t *val;
	int nfields = 0;
	bool truncated = false, seen_key = false;

	if (size == 0)
		return 0;
	klen = data[0] < size - 1 ? data[0] : size - 1;
	memcpy(key, data + 1, klen);
	key[klen] = '\0'; /* a NUL inside ends the key, as for any C string */
	val = data + 1 + klen;
	vlen = size - 1 - klen;
	for (size_t i = 0; i <= strlen(key); i++) {
		char c = key[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '.' ||
			  c == '-' || c == '\0';

		want_key[i] = ok ? c : '_';
	}
	if (want_key[0] == '\0')
		strcpy(want_key, "_");
	want_key[62] = '\0'; /* put_key keeps at most 62 bytes */

	FUZZ_CHECK(srv_logline_begin(&l, SRV_LOG_ERR, 7, "fuzz"));
	srv_logline_mem(&l, key, val, vlen);
	FUZZ_CHECK(l.len <= sizeof(l.buf));

	for (size_t i = 0; i < l.len; i++) {
		unsigned char c = (unsigned char)l.buf[i];

		FUZZ_CHECK(c >= ' ' && c != 0x7f);
	}
	/* Skip ts= when present; stderr is the default target. */
	p = l.buf;
	end = l.buf + l.len;
	while (next_field(&p, end, &f)) {
		nfields++;
		if (nfields == 1 && strcmp(f.key, "ts") == 0) {
			nfields--;
			continue;
		}
		if (nfields == 1)
			FUZZ_CHECK(strcmp(f.key, "level") == 0 && f.vlen == 3 &&
				   memcmp(f.val, "err", 3) == 0);
		else if (nfields == 2)
			FUZZ_CHECK(strcmp(f.key, "event") == 0 && f.vlen == 4 &&
				   memcmp(f.val, "fuzz", 4) == 0);
		else if (nfields == 3)
			FUZZ_CHECK(strcmp(f.key, "conn") == 0 && f.vlen == 1);
		else if (nfields == 4) {
			FUZZ_CHECK(strcmp(f.key, want_key) == 0);
			seen_key = true;
			if (l.truncated) {
				FUZZ_CHECK(f.cut);
				f.vlen -= 3;
				FUZZ_CHECK(f.vlen <= vlen);
				truncated = true;
			} else {
				FUZZ_CHECK(f.vlen == vlen);
			}
			FUZZ_CHECK(memcmp(f.val, val, f.vlen) == 0);
		} else {
			FUZZ_CHECK(false);
		}
	}
	FUZZ_CHECK(seen_key || l.truncated);
	HINT(truncated);
	return 0;
}
