/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/lmtp: examples/lmtpd's command parser and DATA reader. */
#include "fuzz.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "parse.h" /* examples/lmtpd */

/*
 * The input is read two ways.
 *
 * As command lines (split at LF, CR LF trimmed, lines with NUL skipped
 * as the session refuses them before parsing): lmtp_cmd_parse answers
 * 0, or -EPROTO/-ENOSYS with a reply "[45]dd d.d.d text"; a parsed path
 * fits and has no control bytes; lmtp_rcpt_map, under each option set,
 * either refuses or gives a user and folder that cannot leave the store
 * (no '/', '\\', controls, leading '.', at most LMTP_USER_MAX bytes).
 *
 * As DATA: the first two bytes set the line limit, the next few the
 * pieces the rest is cut into (and the size of the output buffer).
 * The reader fed piece by piece must give what a plain line-by-line
 * reference gives for the whole: the same output, the same count of
 * consumed bytes (stopping right after the final dot), the same faults.
 */

#define LINE_MAX_FUZZ 2048

static void check_reply(const char *r)
{
	FUZZ_CHECK(r != NULL);
	FUZZ_CHECK(strlen(r) > 10);
	FUZZ_CHECK(r[0] == '4' || r[0] == '5');
	FUZZ_CHECK(r[3] == ' ' && r[5] == '.');
}

static void check_name(const char *s, bool may_be_empty)
{
	size_t n = strlen(s);

	FUZZ_CHECK(n <= LMTP_USER_MAX);
	if (n == 0) {
		FUZZ_CHECK(may_be_empty);
		return;
	}
	FUZZ_CHECK(s[0] != '.');
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		FUZZ_CHECK(ch > 0x20 && ch != 0x7f && ch != '/' && ch != '\\');
		FUZZ_CHECK(ch < 'A' || ch > 'Z'); /* lowercased */
	}
}

static void check_map(const char *path)
{
	static const struct lmtp_map_opts opts[] = {
		{false, '\0'},
		{true, '\0'},
		{false, '+'},
		{true, '-'},
	};
	char user[LMTP_USER_MAX + 1], folder[LMTP_USER_MAX + 1];

	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		int r = lmtp_rcpt_map(path, &opts[i], user, folder);

		FUZZ_CHECK(r == 0 || r == -EINVAL);
		if (r < 0)
			continue;
		HINT(folder[0] != '\0');
		check_name(user, false);
		/* Folder names keep their case: check all but case. */
		for (const char *p = folder; *p != '\0'; p++)
			FUZZ_CHECK((unsigned char)*p > 0x20 && *p != '/' &&
				   *p != '\\' && *p != 0x7f);
		FUZZ_CHECK(folder[0] != '.');
		FUZZ_CHECK(strlen(folder) <= LMTP_USER_MAX);
		FUZZ_CHECK(opts[i].domain || strchr(user, '@') == NULL);
	}
}

static void one_command(const uint8_t *p, size_t n)
{
	char line[LINE_MAX_FUZZ + 1];
	struct lmtp_cmd cmd;
	int r;

	if (n > 0 && p[n - 1] == '\r')
		n--;
	if (n > LINE_MAX_FUZZ || memchr(p, '\0', n) != NULL)
		return;
	memcpy(line, p, n);
	line[n] = '\0';
	r = lmtp_cmd_parse(line, n, &cmd);
	if (r == -EPROTO || r == -ENOSYS) {
		check_reply(cmd.error);
		FUZZ_CHECK((r == -ENOSYS) == (cmd.verb == LMTP_UNKNOWN));
		return;
	}
	FUZZ_CHECK(r == 0);
	FUZZ_CHECK(cmd.verb != LMTP_UNKNOWN);
	FUZZ_CHECK(cmd.arg != NULL);
	if (cmd.verb == LMTP_MAIL || cmd.verb == LMTP_RCPT) {
		size_t plen = strlen(cmd.path);

		FUZZ_CHECK(plen <= LMTP_PATH_MAX);
		for (size_t i = 0; i < plen; i++)
			FUZZ_CHECK((unsigned char)cmd.path[i] >= 0x20 &&
				   cmd.path[i] != 0x7f);
		HINT(cmd.has_size);
		HINT(cmd.body == LMTP_BODY_8BITMIME);
		if (cmd.verb == LMTP_RCPT)
			check_map(cmd.path);
	}
}

static void commands(const uint8_t *data, size_t size)
{
	size_t start = 0;

	for (size_t i = 0; i <= size; i++)
		if (i == size || data[i] == '\n') {
			one_command(data + start, i - start);
			start = i + 1;
		}
}

struct ref {
	struct obuf out;
	size_t consumed;
	bool done, nul, long_line, bare_lf;
};

/* The DATA rules, line by line over the whole input. */
static void reference(const uint8_t *in, size_t len, size_t line_max,
		      struct ref *r)
{
	size_t pos = 0;

	memset(r, 0, sizeof(*r));
	while (pos < len) {
		const uint8_t *lf = memchr(in + pos, '\n', len - pos);
		size_t end = lf != NULL ? (size_t)(lf - in) + 1 : len;
		const uint8_t *l = in + pos;
		size_t n = end - pos;

		/* An LF whose byte before (on the wire) is not a CR. */
		if (lf != NULL && (end < 2 || in[end - 2] != '\r'))
			r->bare_lf = true;

		if (lf != NULL && ((n == 2 && l[0] == '.') ||
				   (n == 3 && l[0] == '.' && l[1] == '\r'))) {
			r->done = true;
			r->consumed = end;
			return;
		}
		if (lf != NULL && line_max != 0 && n > line_max)
			r->long_line = true;
		if (n > 0 && l[0] == '.') {
			l++;
			n--;
			/* An unfinished ".\r" waits for its next byte. */
			if (lf == NULL && n == 1 && l[0] == '\r')
				n = 0;
		}
		for (size_t i = 0; i < n; i++) {
			if (l[i] == '\0')
				r->nul = true;
			else
				obuf_add(&r->out, &l[i], 1);
		}
		pos = end;
	}
	r->consumed = len;
}

static void data_reader(const uint8_t *data, size_t size)
{
	struct fuzz_in ctl = {data, size < 8 ? size : 8};
	size_t line_max = fuzz_u16(&ctl) % 1100;
	unsigned cuts[4], out_size;
	const uint8_t *in;
	size_t len, pos = 0, total_out = 0, k = 0;
	struct lmtp_dot d;
	struct ref ref;
	struct obuf got = {0};
	uint8_t out[64];

	for (int i = 0; i < 4; i++)
		cuts[i] = 1 + fuzz_u8(&ctl) % 32;
	out_size = 2 + (unsigned)(fuzz_u8(&ctl) % (sizeof(out) - 1));
	in = data + (size < 8 ? size : 8);
	len = size - (size_t)(in - data);
	reference(in, len, line_max, &ref);
	lmtp_dot_init(&d, line_max);
	while (pos < len && !d.done) {
		size_t piece = cuts[k++ % 4], olen = 0, used;

		if (piece > len - pos)
			piece = len - pos;
		used = lmtp_dot_feed(&d, in + pos, piece, out, out_size, &olen);
		FUZZ_CHECK(used <= piece && olen <= out_size);
		FUZZ_CHECK(used > 0 || d.done);
		obuf_add(&got, out, olen);
		total_out += olen;
		pos += used;
	}
	HINT(d.done && pos < len);
	HINT(d.long_line);
	HINT(d.bare_lf);
	FUZZ_CHECK(d.done == ref.done);
	FUZZ_CHECK(pos == ref.consumed);
	FUZZ_CHECK(d.nul == ref.nul);
	FUZZ_CHECK(d.long_line == ref.long_line);
	FUZZ_CHECK(d.bare_lf == ref.bare_lf);
	FUZZ_CHECK(d.size == total_out);
	FUZZ_CHECK(got.len == ref.out.len);
	FUZZ_CHECK(got.len == 0 || memcmp(got.p, ref.out.p, got.len) == 0);
	free(got.p);
	free(ref.out.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	commands(data, size);
	data_reader(data, size);
	return 0;
}
