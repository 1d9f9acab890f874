/* SPDX-License-Identifier: BSD-3-Clause */
/* test/headers: the public header compiles alone and its constants hold. */
#include <ringprot/uring.h> /* first: it must need nothing before it */

/*
 * A Cyrus program may include sasl.h, ssl.h and zlib.h before prot.h (here)
 * or after it (test-cyrus-api.c): either way the stream's fields take the
 * libraries' own types.
 */
#if __has_include(<sasl/sasl.h>)
#include <sasl/sasl.h>
#define HAVE_SASL_H 1
#endif
#if __has_include(<openssl/ssl.h>)
#include <openssl/ssl.h>
#define HAVE_SSL_H 1
#endif
#if __has_include(<zlib.h>)
#include <zlib.h>
#define HAVE_ZLIB_H 1
#endif
#include <ringprot/prot.h>

/* cmocka needs these first, in this order. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

static void test_headers_fixed_round_trip(void **state)
{
	static const unsigned slots[] = {
		0, 1, 2, 1023, 20000, 65535, UR_FIXED_BIT - 1};

	(void)state;
	for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
		int fd = UR_FIXED(slots[i]);

		assert_true(fd >= 0);
		assert_true(UR_IS_FIXED(fd));
		assert_int_equal(UR_SLOT(fd), slots[i]);
	}
}

static void test_headers_plain_fd_not_fixed(void **state)
{
	static const int fds[] = {0, 1, 2, 3, 1024, 20000, UR_FIXED_BIT - 1};

	(void)state;
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		assert_false(UR_IS_FIXED(fds[i]));
		assert_int_equal(UR_SLOT(fds[i]), (unsigned)fds[i]);
	}
	/* Negative values (-errno, -1 for "none") are never direct slots. */
	assert_false(UR_IS_FIXED(-1));
	assert_false(UR_IS_FIXED(-EBADF));
	assert_false(UR_IS_FIXED(-(int)UR_FIXED_BIT));
}

static void test_headers_zeroed_opts_mean_auto(void **state)
{
	struct ur_loop_opts o;

	(void)state;
	memset(&o, 0, sizeof(o));
	assert_int_equal(o.mode, UR_MODE_AUTO);
	assert_int_equal(UR_MODE_AUTO, 0);
	/* Best first: AUTO probes DEFER, then COOP, then PLAIN. */
	assert_true(UR_MODE_DEFER < UR_MODE_COOP);
	assert_true(UR_MODE_COOP < UR_MODE_PLAIN);
}

static void test_headers_mode_names(void **state)
{
	static const enum ur_mode modes[] = {UR_MODE_AUTO, UR_MODE_DEFER,
					     UR_MODE_COOP, UR_MODE_PLAIN};

	(void)state;
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		const char *name = ur_mode_name(modes[i]);

		assert_non_null(name);
		assert_true(name[0] != '\0');
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(name, ur_mode_name(modes[j]));
	}
}

#define FIELD_TYPE(field, T)          \
	__builtin_types_compatible_p( \
		__typeof__(((struct protstream *)0)->field), T)

static void test_headers_prot_after_library_headers(void **state)
{
	(void)state;
	assert_true(FIELD_TYPE(conn, sasl_conn_t *));
	assert_true(FIELD_TYPE(tls_conn, SSL *));
#ifdef HAVE_ZLIB_H
	assert_true(FIELD_TYPE(zstrm, z_stream *));
#endif
#ifdef HAVE_SASL_H
	assert_int_equal(SASL_OK, 0); /* the real sasl.h, not ours */
#endif
#ifdef HAVE_SSL_H
	assert_true(__builtin_types_compatible_p(SSL, struct ssl_st));
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_headers_fixed_round_trip),
		cmocka_unit_test(test_headers_plain_fd_not_fixed),
		cmocka_unit_test(test_headers_zeroed_opts_mean_auto),
		cmocka_unit_test(test_headers_mode_names),
		cmocka_unit_test(test_headers_prot_after_library_headers),
	};

	return cmocka_run_group_tests_name("headers", tests, NULL, NULL);
}
