/* SPDX-License-Identifier: BSD-3-Clause */
/* test/loadgen-imap: bench/loadgen's IMAP session and response reader. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "imap.h"      /* bench/loadgen */
#include "t-loadgen.h" /* the worker double */

static const struct lg_mode t_mode = {.name = "imap-test"};
static struct lg_opts t_opts = {
	.mode = &t_mode, .user = "u\"1", .pass = "p\\w", .mailbox = "Big"};
static int t_check_ret; /* what the kind's check answers */

static int t_command(struct lg_conn *c, char *buf, size_t cap)
{
	(void)c;
	return snprintf(buf, cap, "NOOP") < (int)cap ? 0 : -ENOBUFS;
}

static int t_check(struct lg_conn *c)
{
	(void)c;
	return t_check_ret;
}

static const struct lg_imap_kind t_kind = {.command = t_command,
					   .check = t_check};

/* Feed s whole (step 0) or in pieces of step bytes. */
static int feed(struct lg_conn *c, const char *s, size_t step)
{
	size_t n = strlen(s);

	if (step == 0)
		return lg_imap_received(c, (const unsigned char *)s, n);
	for (size_t i = 0; i < n; i += step) {
		size_t k = n - i < step ? n - i : step;
		int ret = lg_imap_received(c, (const unsigned char *)s + i, k);

		if (ret < 0)
			return ret;
	}
	return 0;
}

/* A session through greeting, LOGIN and SELECT, sends completed. */
static void open_session(struct lg_conn *c, size_t step)
{
	t_lg_reset();
	t_check_ret = 0;
	memset(c, 0, sizeof(*c));
	assert_int_equal(lg_imap_conn_init(c, &t_kind), 0);
	assert_int_equal(lg_imap_connected(c), 0);
	assert_int_equal(feed(c, "* OK [CAPABILITY IMAP4rev1] hi\r\n", step),
			 0);
	assert_string_equal(t_lg.sent, "a LOGIN \"u\\\"1\" \"p\\\\w\"\r\n");
	assert_int_equal(lg_imap_sent(c), 0);
	assert_int_equal(
		feed(c, "* CAPABILITY IMAP4rev1\r\na OK done\r\n", step), 0);
	assert_non_null(strstr(t_lg.sent, "b SELECT \"Big\"\r\n"));
	assert_int_equal(lg_imap_sent(c), 0);
	assert_int_equal(t_lg.ready, 0);
	assert_int_equal(
		feed(c,
		     "* FLAGS (\\Seen)\r\n* 7 EXISTS\r\n"
		     "* OK [UIDVALIDITY 1] x\r\nb OK [READ-WRITE] ok\r\n",
		     step),
		0);
	assert_int_equal(t_lg.ready, 1);
	assert_int_equal(((struct lg_imap *)c->priv)->open_exists, 7);
	t_lg_reset();
}

static void test_open(void **state)
{
	struct lg_conn c;

	(void)state;
	for (size_t step = 0; step < 5; step++) {
		open_session(&c, step);
		lg_imap_conn_fini(&c);
	}
}

/* The tagged reply may come before the send's completion: the request
 * ends when both are in, whichever is last. */
static void test_reply_before_sent(void **state)
{
	struct lg_conn c;

	(void)state;
	open_session(&c, 0);
	assert_int_equal(lg_imap_request(&c), 0);
	assert_string_equal(t_lg.sent, "c NOOP\r\n");
	assert_int_equal(feed(&c, "* 8 EXISTS\r\nc OK NOOP done\r\n", 0), 0);
	assert_int_equal(t_lg.done, 0);
	assert_int_equal(lg_imap_sent(&c), 0);
	assert_int_equal(t_lg.done, 1);
	assert_int_equal(t_lg.errors, 0);
	/* And the other order. */
	assert_int_equal(lg_imap_request(&c), 0);
	assert_int_equal(lg_imap_sent(&c), 0);
	assert_int_equal(t_lg.done, 1);
	assert_int_equal(feed(&c, "c OK NOOP done\r\n", 0), 0);
	assert_int_equal(t_lg.done, 2);
	lg_imap_conn_fini(&c);
}

/* A literal is skipped by count: what it holds (here a CRLF and a line
 * that looks like our tagged OK) is never read as a response. */
static void test_literal(void **state)
{
	static const char reply[] =
		"* 1 FETCH (BODY[] {22}\r\nc OK fake\r\n{5}\r\nxxxxxx"
		" BODY[HEADER] {0}\r\n)\r\nc OK FETCH done\r\n";
	struct lg_conn c;

	(void)state;
	for (size_t step = 0; step < 24; step++) {
		open_session(&c, 0);
		assert_int_equal(lg_imap_request(&c), 0);
		assert_int_equal(lg_imap_sent(&c), 0);
		assert_int_equal(feed(&c, reply, step), 0);
		assert_int_equal(t_lg.done, 1);
		assert_int_equal(t_lg.bytes, 22);
		assert_int_equal(t_lg.errors, 0);
		lg_imap_conn_fini(&c);
	}
}

/* NO and BAD to a request are errors, and the session goes on; so is an
 * OK the mode's check refuses. */
static void test_no_bad(void **state)
{
	struct lg_conn c;

	(void)state;
	open_session(&c, 0);
	assert_int_equal(lg_imap_request(&c), 0);
	assert_int_equal(lg_imap_sent(&c), 0);
	assert_int_equal(feed(&c, "c NO [TRYCREATE] no\r\n", 0), 0);
	assert_int_equal(lg_imap_request(&c), 0);
	assert_int_equal(lg_imap_sent(&c), 0);
	assert_int_equal(feed(&c, "c BAD what\r\n", 0), 0);
	t_check_ret = -EBADMSG;
	assert_int_equal(lg_imap_request(&c), 0);
	assert_int_equal(lg_imap_sent(&c), 0);
	assert_int_equal(feed(&c, "c OK fine\r\n", 0), 0);
	assert_int_equal(t_lg.done, 3);
	assert_int_equal(t_lg.errors, 3);
	lg_imap_conn_fini(&c);
}

/* What ends a session: a refused LOGIN, BYE, a reply to nothing we
 * sent, a continuation request, a greeting that is not OK. */
static void test_fatal(void **state)
{
	struct lg_conn c;

	(void)state;
	t_lg_reset();
	memset(&c, 0, sizeof(c));
	assert_int_equal(lg_imap_conn_init(&c, &t_kind), 0);
	assert_int_equal(feed(&c, "* OK hi\r\n", 0), 0);
	assert_int_equal(lg_imap_sent(&c), 0);
	assert_int_equal(feed(&c, "a NO [AUTHENTICATIONFAILED] no\r\n", 0),
			 -EACCES);
	lg_imap_conn_fini(&c);

	memset(&c, 0, sizeof(c));
	assert_int_equal(lg_imap_conn_init(&c, &t_kind), 0);
	assert_int_equal(feed(&c, "* BYE busy\r\n", 0), -ECONNRESET);
	lg_imap_conn_fini(&c);

	memset(&c, 0, sizeof(c));
	assert_int_equal(lg_imap_conn_init(&c, &t_kind), 0);
	assert_int_equal(feed(&c, "HTTP/1.0 200 OK\r\n", 0), -EPROTO);
	lg_imap_conn_fini(&c);

	open_session(&c, 0);
	assert_int_equal(feed(&c, "c OK nothing asked\r\n", 0), -EPROTO);
	lg_imap_conn_fini(&c);

	open_session(&c, 0);
	assert_int_equal(lg_imap_request(&c), 0);
	assert_int_equal(feed(&c, "+ go on\r\n", 0), -EPROTO);
	lg_imap_conn_fini(&c);

	/* A literal no server could send. */
	open_session(&c, 0);
	assert_int_equal(lg_imap_request(&c), 0);
	assert_int_equal(feed(&c, "* 1 FETCH (BODY[] {99999999999999}\r\n", 0),
			 -EPROTO);
	lg_imap_conn_fini(&c);
}

/* The held kind (imap-idle): IDLE after SELECT, ready at its "+". */
static unsigned long t_held[4];
static unsigned t_nheld;

static void t_held_exists(struct lg_conn *c, unsigned long n)
{
	(void)c;
	if (t_nheld < 4)
		t_held[t_nheld] = n;
	t_nheld++;
}

static const struct lg_imap_kind t_hold_kind = {
	.hold = "c IDLE\r\n",
	.held_exists = t_held_exists,
};

/* Greeting, LOGIN and SELECT of a held session, fed in steps; the
 * SELECT's OK comes before its send completes, so IDLE waits for it. */
static void open_held(struct lg_conn *c, size_t step)
{
	t_lg_reset();
	t_nheld = 0;
	memset(c, 0, sizeof(*c));
	assert_int_equal(lg_imap_conn_init(c, &t_hold_kind), 0);
	assert_int_equal(feed(c, "* OK hi\r\n", step), 0);
	assert_int_equal(lg_imap_sent(c), 0);
	assert_int_equal(feed(c, "a OK in\r\n", step), 0);
	assert_int_equal(feed(c, "* 2 EXISTS\r\nb OK sel\r\n", step), 0);
	assert_null(strstr(t_lg.sent, "IDLE"));
	assert_int_equal(lg_imap_sent(c), 0);
	assert_non_null(strstr(t_lg.sent, "b SELECT \"Big\"\r\nc IDLE\r\n"));
	assert_int_equal(lg_imap_sent(c), 0);
	assert_int_equal(t_lg.ready, 0);
}

static void test_hold(void **state)
{
	struct lg_conn c;

	(void)state;
	for (size_t step = 0; step < 4; step++) {
		open_held(&c, step);
		assert_int_equal(feed(&c, "* 3 EXISTS\r\n+ idling\r\n", step),
				 0);
		assert_int_equal(t_lg.ready, 1);
		/* EXISTS before the "+" is the session's, not a push. */
		assert_int_equal(t_nheld, 0);
		assert_int_equal(feed(&c,
				      "* OK still here\r\n* 4 EXISTS\r\n"
				      "* 1 RECENT\r\n* 5 EXISTS\r\n",
				      step),
				 0);
		assert_int_equal(t_nheld, 2);
		assert_int_equal(t_held[0], 4);
		assert_int_equal(t_held[1], 5);
		assert_int_equal(t_lg.done + t_lg.errors, 0);
		/* The server ends IDLE: the connection fails. */
		assert_int_equal(feed(&c, "c OK IDLE terminated\r\n", step),
				 -EPROTO);
		lg_imap_conn_fini(&c);
	}
	open_held(&c, 0);
	assert_int_equal(feed(&c, "+ idling\r\n+ again\r\n", 0), -EPROTO);
	lg_imap_conn_fini(&c);
	open_held(&c, 0);
	assert_int_equal(feed(&c, "c NO [LIMIT] no idling\r\n", 0), -EACCES);
	lg_imap_conn_fini(&c);
	open_held(&c, 0);
	assert_int_equal(feed(&c, "c OK done without +\r\n", 0), -EPROTO);
	lg_imap_conn_fini(&c);
	open_held(&c, 0);
	assert_int_equal(feed(&c, "+ idling\r\n* BYE shutting down\r\n", 0),
			 -ECONNRESET);
	assert_int_equal(t_nheld, 0);
	lg_imap_conn_fini(&c);
}

int main(void)
{
	static const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open),
		cmocka_unit_test(test_reply_before_sent),
		cmocka_unit_test(test_literal),
		cmocka_unit_test(test_no_bad),
		cmocka_unit_test(test_fatal),
		cmocka_unit_test(test_hold),
	};

	if (lg_imap_init(&t_opts) < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
