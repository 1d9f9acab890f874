/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/loadgen-imap: bench/loadgen's IMAP response reader. */
#include "fuzz.h"

#include <errno.h>

#include "imap.h"      /* bench/loadgen */
#include "t-loadgen.h" /* the worker double */

/*
 * The first byte cuts the rest into pieces (1 to 256 bytes); the pieces
 * are server output to a session that is opened (greeting, LOGIN,
 * SELECT answered) and has one request running with its send complete.
 * The reader may refuse the input (-errno), never crash; whatever it
 * took, it never counts more literal bytes than it was given, nor more
 * finished requests than were started; after a refusal it is not fed
 * again, as the worker drops the connection.
 */

static const struct lg_mode f_mode = {.name = "imap-fuzz"};
static const struct lg_opts f_opts = {
	.mode = &f_mode, .user = "u", .pass = "p"};
static int f_init = 1;

static int f_command(struct lg_conn *c, char *buf, size_t cap)
{
	(void)c;
	return snprintf(buf, cap, "NOOP") < (int)cap ? 0 : -ENOBUFS;
}

static const struct lg_imap_kind f_kind = {.command = f_command};

static int feed(struct lg_conn *c, const char *s)
{
	return lg_imap_received(c, (const unsigned char *)s, strlen(s));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lg_conn c = {0};
	size_t step, requests = 1;
	int ret = 0;

	if (f_init) {
		FUZZ_CHECK(lg_imap_init(&f_opts) == 0);
		f_init = 0;
	}
	if (size < 1)
		return 0;
	step = (size_t)data[0] + 1;
	data++;
	size--;
	t_lg_reset();
	FUZZ_CHECK(lg_imap_conn_init(&c, &f_kind) == 0);
	FUZZ_CHECK(feed(&c, "* OK hi\r\n") == 0 && lg_imap_sent(&c) == 0);
	FUZZ_CHECK(feed(&c, "a OK in\r\n") == 0 && lg_imap_sent(&c) == 0);
	FUZZ_CHECK(feed(&c, "* 3 EXISTS\r\nb OK sel\r\n") == 0);
	FUZZ_CHECK(t_lg.ready == 1);
	FUZZ_CHECK(lg_imap_request(&c) == 0 && lg_imap_sent(&c) == 0);
	for (size_t i = 0; i < size && ret == 0; i += step) {
		size_t k = size - i < step ? size - i : step;
		unsigned done = t_lg.done;

		ret = lg_imap_received(&c, data + i, k);
		FUZZ_CHECK(ret == 0 || ret == -EPROTO || ret == -ECONNRESET);
		/* A request that ended: start the next, as the worker does. */
		if (ret == 0 && t_lg.done > done) {
			HINT(1);
			requests++;
			FUZZ_CHECK(lg_imap_request(&c) == 0 &&
				   lg_imap_sent(&c) == 0);
		}
	}
	FUZZ_CHECK(t_lg.bytes <= size);
	FUZZ_CHECK(t_lg.done <= requests);
	FUZZ_CHECK(t_lg.errors <= t_lg.done);
	lg_imap_conn_fini(&c);
	return 0;
}
