/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-sendfile: prot_sendfile, zero-copy and through prot_write. */
#include "t-helpers.h" /* stdarg, stddef, setjmp, cmocka: in that order */

#include <ringprot/prot.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BIG (3 * 1024 * 1024 + 12345) /* three pipefuls and a bit */

static char pat(size_t i)
{
	return (char)('A' + (i * 13 + i / 4099) % 26);
}

/* An unlinked temporary file of len pattern bytes. */
static int pattern_file(size_t len)
{
	char path[] = "/tmp/prot-sendfile-XXXXXX";
	char *p = malloc(len);
	int fd = mkstemp(path);

	assert_non_null(p);
	assert_true(fd >= 0);
	unlink(path);
	for (size_t i = 0; i < len; i++)
		p[i] = pat(i);
	assert_int_equal(write(fd, p, len), (ssize_t)len);
	free(p);
	return fd;
}

/* A reader thread collecting everything until EOF, in small reads. */
struct sink {
	pthread_t th;
	int fd;
	char *got;
	size_t len, cap;
};

static void *sink_main(void *arg)
{
	struct sink *k = arg;

	for (;;) {
		ssize_t r;

		if (k->len == k->cap) {
			k->cap = k->cap ? 2 * k->cap : 65536;
			k->got = realloc(k->got, k->cap);
			if (k->got == NULL)
				return NULL;
		}
		r = read(k->fd, k->got + k->len,
			 k->cap - k->len < 7000 ? k->cap - k->len : 7000);
		if (r <= 0)
			return NULL;
		k->len += (size_t)r;
	}
}

static void sink_start(struct sink *k, int fd)
{
	memset(k, 0, sizeof(*k));
	k->fd = fd;
	assert_int_equal(pthread_create(&k->th, NULL, sink_main, k), 0);
}

/* "<" + the file's [off, off+len) + ">", as the peer must see it. */
static void check_framed(const struct sink *k, size_t off, size_t len)
{
	assert_int_equal(k->len, len + 2);
	assert_int_equal(k->got[0], '<');
	assert_int_equal(k->got[len + 1], '>');
	for (size_t i = 0; i < len; i++)
		if (k->got[1 + i] != pat(off + i))
			fail_msg("byte %zu differs", i);
}

/* Write "<", the range, ">" to a stream over sv[0]; the peer reads sv[1]. */
static void run_framed(int sv[2], struct protstream *s, int file, size_t off,
		       size_t len)
{
	struct sink k;

	sink_start(&k, sv[1]);
	assert_int_equal(prot_putc('<', s), 0);
	assert_int_equal(prot_sendfile(s, file, (off_t)off, len), 0);
	assert_int_equal(prot_putc('>', s), 0);
	assert_int_equal(prot_flush(s), 0);
	assert_int_equal(prot_bytes_out(s), len + 2);
	assert_int_equal(prot_free(s), 0);
	shutdown(sv[0], SHUT_WR);
	assert_int_equal(pthread_join(k.th, NULL), 0);
	check_framed(&k, off, len);
	free(k.got);
}

static void test_prot_sendfile_socket(void **state)
{
	int sv[2], file = pattern_file(BIG);

	(void)state;
	t_socketpair(sv);
	run_framed(sv, prot_new(sv[0], 1), file, 0, BIG);
	/* The file position is not the stream's business. */
	assert_int_equal(lseek(file, 0, SEEK_CUR), BIG);
	t_close_pair(sv);
	close(file);
}

static void test_prot_sendfile_range(void **state)
{
	int sv[2], file = pattern_file(BIG);

	(void)state;
	t_socketpair(sv);
	run_framed(sv, prot_new(sv[0], 1), file, 1234567, 100001);
	t_close_pair(sv);
	close(file);
}

/* A telemetry log needs the bytes: they go through prot_write. */
static void test_prot_sendfile_logged(void **state)
{
	char path[] = "/tmp/prot-sendfile-log-XXXXXX";
	int sv[2], file = pattern_file(BIG), log = mkstemp(path);
	struct protstream *s;

	(void)state;
	assert_true(log >= 0);
	unlink(path);
	t_socketpair(sv);
	s = prot_new(sv[0], 1);
	assert_int_equal(prot_setlog(s, log), 0);
	run_framed(sv, s, file, 5, 300000);
	/* The log holds the records of all 300002 bytes. */
	assert_true(lseek(log, 0, SEEK_END) > 300002);
	close(log);
	t_close_pair(sv);
	close(file);
}

/* The peer of a DEFLATE stream: its own thread, loop and read stream. */
struct zsink {
	pthread_t th;
	int fd;
	size_t want;
	struct sink k; /* got, len */
};

static void *zsink_main(void *arg)
{
	struct zsink *z = arg;
	struct protstream *in = prot_new(z->fd, 0);
	struct ur_loop *loop;

	z->k.got = malloc(z->want);
	if (in != NULL && z->k.got != NULL && prot_setcompress(in) == 0) {
		while (z->k.len < z->want) {
			size_t left = z->want - z->k.len;
			int n = prot_read(in, z->k.got + z->k.len,
					  left < 4096 ? (unsigned)left : 4096);

			if (n <= 0)
				break;
			z->k.len += (size_t)n;
		}
	}
	if (in != NULL)
		(void)prot_free(in);
	loop = ur_loop_current();
	ur_loop_free(&loop);
	return NULL;
}

/* COMPRESS=DEFLATE: the bytes must pass through the layer (no splice). */
static void test_prot_sendfile_deflate(void **state)
{
	int sv[2], file = pattern_file(BIG);
	struct zsink z = {.want = 300002};
	struct protstream *s;

	(void)state;
	t_socketpair(sv);
	s = prot_new(sv[0], 1);
	if (prot_setcompress(s) == EOF) {
		(void)prot_free(s);
		t_close_pair(sv);
		close(file);
		print_message("no zlib in this build\n");
		skip();
	}
	z.fd = sv[1];
	assert_int_equal(pthread_create(&z.th, NULL, zsink_main, &z), 0);
	assert_int_equal(prot_putc('<', s), 0);
	assert_int_equal(prot_sendfile(s, file, 3, 300000), 0);
	assert_int_equal(prot_putc('>', s), 0);
	assert_int_equal(prot_flush(s), 0);
	assert_int_equal(pthread_join(z.th, NULL), 0);
	check_framed(&z.k, 3, 300000);
	free(z.k.got);
	assert_int_equal(prot_free(s), 0);
	t_close_pair(sv);
	close(file);
}

/* Over a pipe (not a socket): the copying path. */
static void test_prot_sendfile_pipe(void **state)
{
	int pp[2], file = pattern_file(BIG);

	(void)state;
	assert_int_equal(pipe2(pp, O_CLOEXEC), 0);
	{
		int sv[2] = {pp[1], pp[0]};
		struct sink k;
		struct protstream *s = prot_new(pp[1], 1);

		sink_start(&k, pp[0]);
		assert_int_equal(prot_putc('<', s), 0);
		assert_int_equal(prot_sendfile(s, file, 7, 200000), 0);
		assert_int_equal(prot_putc('>', s), 0);
		assert_int_equal(prot_flush(s), 0);
		assert_int_equal(prot_free(s), 0);
		close(sv[0]);
		assert_int_equal(pthread_join(k.th, NULL), 0);
		check_framed(&k, 7, 200000);
		free(k.got);
		close(pp[0]);
	}
	close(file);
}

/* The file ends before the range: the stream fails (the peer was promised
 * len bytes). */
static void test_prot_sendfile_short_file(void **state)
{
	int sv[2], file = pattern_file(1000);
	struct protstream *s;
	struct sink k;

	(void)state;
	t_socketpair(sv);
	sink_start(&k, sv[1]);
	s = prot_new(sv[0], 1);
	assert_int_equal(prot_sendfile(s, file, 500, 1000), EOF);
	assert_non_null(prot_error(s));
	assert_int_equal(errno, EIO);
	assert_int_equal(prot_sendfile(s, file, 0, 10), EOF);
	assert_int_equal(prot_free(s), 0);
	shutdown(sv[0], SHUT_WR);
	assert_int_equal(pthread_join(k.th, NULL), 0);
	assert_int_equal(k.len, 500); /* what the file had */
	free(k.got);
	t_close_pair(sv);
	close(file);
}

static void test_prot_sendfile_bad_args(void **state)
{
	int sv[2], file = pattern_file(10);
	struct protstream *r, *w;

	(void)state;
	t_socketpair(sv);
	r = prot_new(sv[0], 0);
	w = prot_new(sv[0], 1);
	errno = 0;
	assert_int_equal(prot_sendfile(r, file, 0, 10), EOF);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(prot_sendfile(w, file, -1, 10), EOF);
	assert_int_equal(errno, EINVAL);
	assert_null(prot_error(w));
	assert_int_equal(prot_sendfile(w, file, 0, 0), 0);
	assert_int_equal(prot_sendfile(w, -1, 0, 10), EOF);
	assert_non_null(prot_error(w));
	assert_int_equal(prot_free(r), 0);
	assert_int_equal(prot_free(w), 0);
	t_close_pair(sv);
	close(file);
}

/* A peer that stops reading: the write timeout ends the send. */
static void test_prot_sendfile_write_timeout(void **state)
{
	int sv[2], file = pattern_file(BIG);
	struct protstream *s;
	uint64_t t0;

	(void)state;
	t_socketpair(sv);
	s = prot_new(sv[0], 1);
	assert_int_equal(prot_setwritetimeout_ms(s, 100), 0);
	t0 = t_now_ms();
	assert_int_equal(prot_sendfile(s, file, 0, BIG), EOF);
	assert_int_equal(errno, ETIMEDOUT);
	assert_string_equal(prot_error(s), "write timed out");
	assert_true(t_now_ms() - t0 >= 99);
	assert_int_equal(prot_free(s), 0);
	t_close_pair(sv);
	close(file);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
	const struct CMUnitTest tests[] = {
		T(test_prot_sendfile_socket),
		T(test_prot_sendfile_range),
		T(test_prot_sendfile_logged),
		T(test_prot_sendfile_pipe),
		T(test_prot_sendfile_deflate),
		T(test_prot_sendfile_short_file),
		T(test_prot_sendfile_bad_args),
		T(test_prot_sendfile_write_timeout),
	};
#undef T

	t_require_loop();
	return t_run_groups("prot-sendfile", tests,
			    sizeof(tests) / sizeof(tests[0]));
}
