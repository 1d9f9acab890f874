/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/imap-parse: examples/imapd's command lexer and parsers. */
#include "fuzz.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <ringprot/buf.h>
#include <ringprot/prot.h>

#include "parse.h" /* examples/imapd */

/*
 * The input after its first byte is a client's byte stream, read by the
 * lexer from a prot_readmap stream command after command, as the
 * session reads it (an error skips the rest of the line; -E2BIG and the
 * end of input stop). The first byte picks the limits (line_max 64 to
 * 4096, literal_max, LITERAL+ or LITERAL-, UTF8=ACCEPT) and whether
 * top-level literals are left for the caller (APPEND), who then reads
 * their bytes.
 *
 * Checked: a command's bytes never pass line_max by more than the
 * closing of its lists; the pool is never overrun; "+ go ahead" is the only
 * thing written, once per synchronizing literal accepted; and every
 * command's arguments go through every parser, whose results keep
 * their promises (sequence sets sorted and merged, fetch sections with
 * parts in range, mUTF-7 that re-encodes to the same text).
 */

#define POOL_SIZE 16384

static char pool_mem[POOL_SIZE];

static void check_seqset(const struct imap_seqset *set)
{
	for (unsigned i = 0; i < set->n; i++) {
		FUZZ_CHECK(set->r[i].lo != IMAP_STAR);
		FUZZ_CHECK(set->r[i].lo <= set->r[i].hi);
		if (i > 0)
			FUZZ_CHECK(set->r[i - 1].hi < set->r[i].lo - 1);
	}
	for (unsigned i = set->n; i < set->n + set->nstar; i++)
		FUZZ_CHECK(set->r[i].hi == IMAP_STAR);
	for (unsigned i = 0; i < set->n; i++) {
		FUZZ_CHECK(imap_seqset_contains(set, set->r[i].lo, 1));
		FUZZ_CHECK(imap_seqset_contains(set, set->r[i].hi, 1));
	}
	(void)imap_seqset_contains(set, 7, 5);
}

static void check_mutf7(const char *s)
{
	char u[512], m[1024], u2[512];
	int n = imap_mutf7_to_utf8(s, u, sizeof(u));

	HINT(n >= 0 && strchr(s, '&') != NULL);
	if (n < 0) {
		FUZZ_CHECK(n == -EINVAL || n == -ENOSPC);
		return;
	}
	FUZZ_CHECK(imap_mutf7_valid(s));
	FUZZ_CHECK((size_t)n == strlen(u));
	n = imap_utf8_to_mutf7(u, m, sizeof(m));
	FUZZ_CHECK(n >= 0);
	FUZZ_CHECK(imap_mutf7_valid(m));
	FUZZ_CHECK(imap_mutf7_to_utf8(m, u2, sizeof(u2)) >= 0);
	FUZZ_CHECK(strcmp(u, u2) == 0);
}

static void check_fetch(const struct imap_fetch *fe)
{
	unsigned n = 0;

	for (const struct imap_section *s = fe->sections; s; s = s->next) {
		n++;
		FUZZ_CHECK(s->nparts <= IMAP_PART_MAX);
		for (unsigned i = 0; i < s->nparts; i++)
			FUZZ_CHECK(s->part[i] > 0);
		FUZZ_CHECK(s->spec != IMAP_SECTION_MIME || s->nparts > 0);
		FUZZ_CHECK(!s->partial || s->len > 0);
		if (!s->peek)
			FUZZ_CHECK(fe->sets_seen);
	}
	FUZZ_CHECK(n == fe->nsections);
}

static unsigned search_depth(const struct imap_search_key *k)
{
	unsigned d = 0;

	for (const struct imap_search_key *c = k->child; c; c = c->next) {
		unsigned cd = search_depth(c);

		if (cd > d)
			d = cd;
	}
	return d + 1;
}

/* Every parser over the arguments of one command. */
static void parse_all(struct imap_arg *first, struct imap_pool *pool)
{
	const char *err = NULL, *s;
	struct imap_search se;
	struct imap_fetch fe;
	struct imap_flags fl;
	struct imap_seqset set;
	int64_t v;
	int zone;

	if (imap_parse_search(first, pool, &se, &err) == 0) {
		FUZZ_CHECK(se.root != NULL && se.root->op == IMAP_SK_AND);
		FUZZ_CHECK(search_depth(se.root) <= IMAP_DEPTH_MAX + 2);
	} else {
		FUZZ_CHECK(err != NULL);
	}
	for (struct imap_arg *a = first; a != NULL; a = a->next) {
		err = NULL;
		if (imap_parse_fetch(a, pool, &fe, &err) == 0)
			check_fetch(&fe);
		else
			FUZZ_CHECK(err != NULL);
		if (imap_parse_flags(a, true, pool, &fl, &err) == 0)
			FUZZ_CHECK((fl.sys & IMAP_FLAG_RECENT) == 0);
		if (a->type == IMAP_ARG_ATOM &&
		    imap_seqset_parse(a->str, pool, &set, &err) == 0)
			check_seqset(&set);
		if (imap_arg_astring(a, &s)) {
			FUZZ_CHECK(strlen(s) <= a->len);
			if (imap_parse_date(s, &v) == 0)
				FUZZ_CHECK(v > -800000 && v < 3000000);
			if (imap_parse_datetime(s, &v, &zone) == 0)
				FUZZ_CHECK(zone > -6000 && zone < 6000);
			check_mutf7(s);
		}
	}
}

/* "+ go ahead\r\n" repeated, and nothing else. */
static unsigned count_go_aheads(const struct buf *out)
{
	static const char ga[] = "+ go ahead\r\n";
	size_t n = sizeof(ga) - 1;

	FUZZ_CHECK(out->len % n == 0);
	for (size_t i = 0; i < out->len; i += n)
		FUZZ_CHECK(memcmp(out->s + i, ga, n) == 0);
	return (unsigned)(out->len / n);
}

/* Synchronizing literals the lexer accepted (it sent "+" for each). */
static unsigned sync_literals(const struct imap_arg *a)
{
	unsigned n = 0;

	for (; a != NULL; a = a->next) {
		if ((a->type == IMAP_ARG_LITERAL ||
		     a->type == IMAP_ARG_LITERAL_SIZE) &&
		    !a->nonsync)
			n++;
		if (a->type == IMAP_ARG_LIST)
			n += sync_literals(a->child);
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf out = {0};
	struct protstream *in, *o;
	struct imap_pool pool;
	struct imap_lex lx = {0};
	unsigned ctl, accepted = 0;
	bool literal_size;

	if (size < 1)
		return 0;
	ctl = data[0];
	in = prot_readmap((const char *)data + 1, (uint32_t)(size - 1));
	o = prot_writebuf(&out);
	FUZZ_CHECK(in != NULL && o != NULL);
	imap_pool_init(&pool, pool_mem, sizeof(pool_mem));
	lx.in = in;
	lx.out = o;
	lx.line_max = 64u << (ctl & 7);
	lx.literal_max = (ctl & 8) ? 100 : 1u << 20;
	lx.nonsync_max = (ctl & 16) ? lx.literal_max : IMAP_NONSYNC_MAX;
	lx.utf8 = (ctl & 32) != 0;
	lx.pool = &pool;
	literal_size = (ctl & 64) != 0;
	for (;;) {
		char tag[IMAP_TAG_MAX + 1], name[32];
		struct imap_arg *first = NULL;
		int ret;

		imap_lex_begin(&lx);
		ret = imap_lex_tag(&lx, tag);
		if (ret == 0) {
			FUZZ_CHECK(strlen(tag) >= 1 &&
				   strlen(tag) <= IMAP_TAG_MAX);
			ret = imap_lex_name(&lx, name, sizeof(name));
		}
		if (ret == 0) {
			ret = imap_lex_args(
				&lx, literal_size ? IMAP_LEX_LITERAL_SIZE : 0,
				&first);
			while (ret > 0 && literal_size) {
				struct imap_arg *last = first;
				char junk[256];
				size_t left;

				while (last->next != NULL)
					last = last->next;
				if (last->type != IMAP_ARG_LITERAL_SIZE)
					break;
				HINT(true);
				FUZZ_CHECK(last->len <= lx.literal_max);
				accepted += !last->nonsync;
				for (left = last->len; left > 0;) {
					int got = prot_read(
						in, junk,
						left < sizeof(junk)
							? (int)left
							: (int)sizeof(junk));

					if (got <= 0)
						break;
					left -= (size_t)got;
				}
				if (left > 0) {
					ret = -ENOTCONN; /* cut short */
					lx.err = "input ended in a literal";
					break;
				}
				ret = imap_lex_args(&lx, IMAP_LEX_LITERAL_SIZE,
						    &first);
			}
		}
		FUZZ_CHECK(pool.used <= pool.size);
		if (ret >= 0) {
			FUZZ_CHECK(lx.eol || literal_size);
			/* Past line_max by at most the closing of lists (or
			 * a tag and a name alone). */
			FUZZ_CHECK(lx.len <= lx.line_max + IMAP_DEPTH_MAX + 4 ||
				   lx.len <= IMAP_TAG_MAX + 36);
			accepted += sync_literals(first);
			parse_all(first, &pool);
			FUZZ_CHECK(pool.used <= pool.size);
			continue;
		}
		FUZZ_CHECK(lx.err != NULL);
		HINT(ret == -EFBIG);
		HINT(ret == -EMSGSIZE);
		if (ret == -E2BIG || ret == -ENOTCONN)
			break;
		if (imap_lex_skip_line(&lx) < 0)
			break;
	}
	FUZZ_CHECK(prot_flush(o) == 0);
	/* Literals of a command that failed later still got their "+". */
	FUZZ_CHECK(count_go_aheads(&out) >= accepted);
	prot_free(in);
	prot_free(o);
	free(out.s);
	return 0;
}
