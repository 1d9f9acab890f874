/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/md-names: examples/maildir's name, flag and uidlist parsers. */
#include "fuzz.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "mailbox.h" /* examples/maildir */

/*
 * The input is cut at LF into strings (a NUL inside ends the C string
 * early, as it would for a name the session hands over). Each string is
 * tried as:
 * - a mailbox name: accepted ones cannot leave the user's directory (no
 *   '/', no empty level, no leading '.', printable ASCII, bounded), INBOX
 *   only as the whole name, and '&' always a closed shift;
 * - a keyword: accepted ones are atoms;
 * - a file name: flags parsed, formatted and parsed again are the same;
 *   the base length and the size fields stay inside the string;
 * - a uidlist line, header and entry: UIDs are non-zero, the base is
 *   inside the line and has no '/', ':' or space.
 */

#define LINE_MAX_FUZZ 1024

static void check_name(const char *s)
{
	size_t n = strlen(s);

	if (md_mbox_name_check(s) < 0)
		return;
	HINT(strchr(s, '.') != NULL);
	HINT(strchr(s, '&') != NULL);
	if (md_mbox_is_inbox(s))
		return;
	FUZZ_CHECK(n > 0 && n <= MD_MBOX_NAME_MAX);
	FUZZ_CHECK(s[0] != '.' && s[n - 1] != '.');
	FUZZ_CHECK(strstr(s, "..") == NULL);
	FUZZ_CHECK(strncasecmp(s, "INBOX.", 6) != 0);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		FUZZ_CHECK(c >= 0x20 && c < 0x7f && c != '/');
		FUZZ_CHECK(c != '*' && c != '%');
		if (c == '&') {
			/* A shift closes with '-' before the end. */
			FUZZ_CHECK(strchr(s + i, '-') != NULL);
		}
	}
}

static void check_keyword(const char *s)
{
	if (!md_keyword_ok(s))
		return;
	FUZZ_CHECK(s[0] != '\0' && s[0] != '\\');
	FUZZ_CHECK(strlen(s) <= MD_KW_LEN_MAX);
	for (const char *p = s; *p != '\0'; p++)
		FUZZ_CHECK(*p > 0x20 && *p < 0x7f && *p != '(' && *p != ')');
}

static void check_fname(const char *s)
{
	char suf[64], again[LINE_MAX_FUZZ + 80];
	unsigned flags, flags2;
	uint32_t kw, kw2;
	uint64_t v;
	size_t blen = md_base_len(s), n;

	FUZZ_CHECK(blen <= strlen(s));
	md_flags_parse(s, &flags, &kw);
	FUZZ_CHECK((flags & ~(unsigned)MD_F_STORED) == 0);
	FUZZ_CHECK(kw < (1U << MD_KW_MAX));
	n = md_flags_format(flags, kw, suf, sizeof(suf));
	FUZZ_CHECK(n == strlen(suf) && n >= 3 && n <= 3 + 6 + MD_KW_MAX);
	(void)snprintf(again, sizeof(again), "%.*s%s", (int)blen, s, suf);
	md_flags_parse(again, &flags2, &kw2);
	FUZZ_CHECK(flags2 == flags && kw2 == kw);
	HINT(flags != 0 && kw != 0);
	if (md_name_field(s, 'W', &v) == 0)
		HINT(v > 0);
	if (md_name_field(s, 'S', &v) == 0)
		HINT(v == 0);
}

static void check_uidlist(const char *s)
{
	uint32_t a, b;
	int kind;

	if (md_uidlist_parse(s, 1, &a, &b) == 0) {
		FUZZ_CHECK(a > 0 && b > 0);
		HINT(true);
	}
	kind = md_uidlist_parse(s, 0, &a, &b);
	FUZZ_CHECK(kind == 1 || kind == -EINVAL);
	if (kind == 1) {
		const char *base = s + b;

		FUZZ_CHECK(a > 0);
		FUZZ_CHECK(b < strlen(s));
		FUZZ_CHECK(strpbrk(base, "/: \t") == NULL);
		FUZZ_CHECK(base[0] != '.');
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char line[LINE_MAX_FUZZ + 1];
	size_t i = 0;

	while (i < size) {
		const uint8_t *nl = memchr(data + i, '\n', size - i);
		size_t end = nl != NULL ? (size_t)(nl - data) : size;
		size_t len = end - i;

		if (len > LINE_MAX_FUZZ)
			len = LINE_MAX_FUZZ;
		memcpy(line, data + i, len);
		line[len] = '\0';
		check_name(line);
		check_keyword(line);
		check_fname(line);
		check_uidlist(line);
		i = end + 1;
	}
	return 0;
}
