/* SPDX-License-Identifier: BSD-3-Clause */
/* test/cyrus-api: a program written against Cyrus 3.6's lib/prot.h. */
#include <ringprot/prot.h> /* first: it compiles alone, as Cyrus's does */

/*
 * Cyrus's prot.h pulls these in itself; a Cyrus program may include them
 * after ours (test-headers.c includes them before). With them, the struct
 * fields are checked against the real sasl_conn_t, SSL and z_stream.
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

#include "t-helpers.h" /* stdarg, stddef, setjmp, cmocka: in that order */

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/*
 * Everything below is written the way Cyrus code uses lib/prot.h: only
 * names that header exposes, with the types it gives them. The ringprot
 * deviations this file runs into are under #ifdef RINGPROT_PROT_H, with
 * Cyrus's value in the #else branch.
 */

#define SAME_TYPE(x, T) __builtin_types_compatible_p(__typeof__(x), T)

/* ------------------------------------------------------------------ */
/* Names and types (Cyrus 3.6.5+ as Debian 12 ships it: uint64_t      */
/* counters).                                                         */

#if !defined(PROT_BUFSIZE) || !defined(PROT_NO_FD) ||                    \
	!defined(PROT_EOF_STRING) || !defined(PROTGROUP_SIZE_DEFAULT) || \
	!defined(prot_BLOCK) || !defined(prot_NONBLOCK) ||               \
	!defined(prot_IS_BLOCKING) || !defined(prot_IS_EOF) ||           \
	!defined(prot_IS_ERROR) || !defined(prot_bytes_in) ||            \
	!defined(prot_bytes_out) || !defined(prot_peek)
#error "a macro of Cyrus 3.6's lib/prot.h is missing"
#endif

_Static_assert(PROT_BUFSIZE == 4096, "PROT_BUFSIZE");
_Static_assert(PROT_NO_FD == -1, "PROT_NO_FD");
_Static_assert(PROTGROUP_SIZE_DEFAULT == 32, "PROTGROUP_SIZE_DEFAULT");
_Static_assert(sizeof(PROT_EOF_STRING) == sizeof("end of file reached"),
	       "PROT_EOF_STRING");

/* The callback types. */
_Static_assert(SAME_TYPE((prot_readcallback_t *)0,
			 void (*)(struct protstream *, void *)),
	       "prot_readcallback_t");
_Static_assert(SAME_TYPE((prot_fillcallback_t *)0,
			 ssize_t (*)(unsigned char *, size_t, void *)),
	       "prot_fillcallback_t");
_Static_assert(SAME_TYPE((prot_waiteventcallback_t *)0,
			 struct prot_waitevent *(*)(struct protstream *,
						    struct prot_waitevent *,
						    void *)),
	       "prot_waiteventcallback_t");

/*
 * Every function of Cyrus 3.6's lib/prot.h with its exact prototype (the
 * getc/putc macros do not hide the functions: &prot_getc is the real
 * one). Each is checked at compile time and linked (the table below).
 */
#define CYRUS_FUNCTIONS(X)                                                     \
	X(prot_flush_internal, int (*)(struct protstream *, int))              \
	X(prot_getc, int (*)(struct protstream *))                             \
	X(prot_ungetc, int (*)(int, struct protstream *))                      \
	X(prot_putc, int (*)(int, struct protstream *))                        \
	X(prot_new, struct protstream *(*)(int, int))                          \
	X(prot_writebuf, struct protstream *(*)(struct buf *))                 \
	X(prot_readmap, struct protstream *(*)(const char *, uint32_t))        \
	X(prot_readcb, struct protstream *(*)(prot_fillcallback_t *, void *))  \
	X(prot_free, int (*)(struct protstream *))                             \
	X(prot_setlog, int (*)(struct protstream *, int))                      \
	X(prot_setsasl, int (*)(struct protstream *, sasl_conn_t *))           \
	X(prot_unsetsasl, void (*)(struct protstream *))                       \
	X(prot_settls, int (*)(struct protstream *, SSL *))                    \
	X(prot_setisclient, int (*)(struct protstream *, int))                 \
	X(prot_setcompress, int (*)(struct protstream *))                      \
	X(prot_unsetcompress, void (*)(struct protstream *))                   \
	X(prot_data_boundary, int (*)(struct protstream *))                    \
	X(prot_settimeout, int (*)(struct protstream *, int))                  \
	X(prot_resettimeout, int (*)(struct protstream *))                     \
	X(prot_setflushonread,                                                 \
	  int (*)(struct protstream *, struct protstream *))                   \
	X(prot_setreadcallback,                                                \
	  int (*)(struct protstream *, prot_readcallback_t *, void *))         \
	X(prot_addwaitevent,                                                   \
	  struct prot_waitevent *(*)(struct protstream *, time_t,              \
				     prot_waiteventcallback_t *, void *))      \
	X(prot_removewaitevent,                                                \
	  void (*)(struct protstream *, struct prot_waitevent *))              \
	X(prot_error, const char *(*)(struct protstream *))                    \
	X(prot_rewind, int (*)(struct protstream *))                           \
	X(prot_fill, int (*)(struct protstream *))                             \
	X(prot_flush, int (*)(struct protstream *))                            \
	X(prot_write, int (*)(struct protstream *, const char *, unsigned))    \
	X(prot_puts, int (*)(struct protstream *, const char *))               \
	X(prot_vprintf, int (*)(struct protstream *, const char *, va_list))   \
	X(prot_printf, int (*)(struct protstream *, const char *, ...))        \
	X(prot_printliteral,                                                   \
	  int (*)(struct protstream *, const char *, size_t))                  \
	X(prot_printstring, int (*)(struct protstream *, const char *))        \
	X(prot_printmap, int (*)(struct protstream *, const char *, size_t))   \
	X(prot_printamap, int (*)(struct protstream *, const char *, size_t))  \
	X(prot_printastring, int (*)(struct protstream *, const char *))       \
	X(prot_read, int (*)(struct protstream *, char *, unsigned))           \
	X(prot_readbuf, int (*)(struct protstream *, struct buf *, unsigned))  \
	X(prot_fgets, char *(*)(char *, unsigned, struct protstream *))        \
	X(prot_select, int (*)(struct protgroup *, int, struct protgroup **,   \
			       int *, struct timeval *))                       \
	X(protgroup_new, struct protgroup *(*)(size_t))                        \
	X(protgroup_copy, struct protgroup *(*)(struct protgroup *))           \
	X(protgroup_reset, void (*)(struct protgroup *))                       \
	X(protgroup_free, void (*)(struct protgroup *))                        \
	X(protgroup_insert, void (*)(struct protgroup *, struct protstream *)) \
	X(protgroup_delete, void (*)(struct protgroup *, struct protstream *)) \
	X(protgroup_getelement,                                                \
	  struct protstream *(*)(struct protgroup *, size_t))                  \
	X(prot_lookahead,                                                      \
	  size_t (*)(struct protstream *, const char *, size_t, int *))        \
	X(prot_putbuf, int (*)(struct protstream *, const struct buf *))

#define CHECK_PROTOTYPE(name, type)              \
	_Static_assert(SAME_TYPE(&(name), type), \
		       #name ": not the Cyrus 3.6 prototype");
CYRUS_FUNCTIONS(CHECK_PROTOTYPE)

struct api_fn {
	const char *name;
	void (*fn)(void);
};

/* The types were checked above; the table only makes the linker look. */
#define API_ENTRY(name, type) {#name, (void (*)(void))(name)},
static const struct api_fn cyrus_api[] = {CYRUS_FUNCTIONS(API_ENTRY)};

/*
 * The public struct fields with Cyrus's types (all of Cyrus's fields but
 * the private ones no caller uses: see prot.h). Spec section 0 lists the
 * ones Cyrus callers touch; test_cyrus_api_fresh_fields reads them all.
 */
#ifdef HAVE_ZLIB_H
#define Z_STREAM_PTR z_stream *
#else
#define Z_STREAM_PTR struct z_stream_s *
#endif

#define CYRUS_FIELDS(X)                             \
	X(buf, unsigned char *)                     \
	X(buf_size, unsigned)                       \
	X(ptr, unsigned char *)                     \
	X(cnt, unsigned)                            \
	X(fd, int)                                  \
	X(logfd, int)                               \
	X(conn, sasl_conn_t *)                      \
	X(saslssf, int)                             \
	X(maxplain, int)                            \
	X(tls_conn, SSL *)                          \
	X(zstrm, Z_STREAM_PTR)                      \
	X(fillcallback_proc, prot_fillcallback_t *) \
	X(fillcallback_rock, void *)                \
	X(eof, int)                                 \
	X(boundary, int)                            \
	X(error, char *)                            \
	X(write, int)                               \
	X(dontblock, int)                           \
	X(read_timeout, int)                        \
	X(timeout_mark, time_t)                     \
	X(flushonread, struct protstream *)         \
	X(writetobuf, struct buf *)                 \
	X(can_unget, int)                           \
	X(bytes_in, uint64_t)                       \
	X(bytes_out, uint64_t)                      \
	X(isclient, int)                            \
	X(readcallback_proc, prot_readcallback_t *) \
	X(readcallback_rock, void *)                \
	X(waitevent, struct prot_waitevent *)       \
	X(userdata, void *)

#define CHECK_FIELD(field, type)                                         \
	_Static_assert(SAME_TYPE(((struct protstream *)0)->field, type), \
		       "protstream." #field ": not Cyrus's type");
CYRUS_FIELDS(CHECK_FIELD)

_Static_assert(SAME_TYPE(((struct prot_waitevent *)0)->mark, time_t),
	       "prot_waitevent.mark");
_Static_assert(SAME_TYPE(((struct prot_waitevent *)0)->proc,
			 prot_waiteventcallback_t *),
	       "prot_waitevent.proc");
_Static_assert(SAME_TYPE(((struct prot_waitevent *)0)->rock, void *),
	       "prot_waitevent.rock");
_Static_assert(SAME_TYPE(((struct prot_waitevent *)0)->next,
			 struct prot_waitevent *),
	       "prot_waitevent.next");

/* struct buf, from Cyrus's util.h. */
_Static_assert(SAME_TYPE(((struct buf *)0)->s, char *), "buf.s");
_Static_assert(SAME_TYPE(((struct buf *)0)->len, size_t), "buf.len");
_Static_assert(SAME_TYPE(((struct buf *)0)->alloc, size_t), "buf.alloc");
_Static_assert(SAME_TYPE(((struct buf *)0)->flags, unsigned), "buf.flags");

/* The macros evaluate to what Cyrus's do. */
_Static_assert(SAME_TYPE(prot_bytes_in((struct protstream *)0), uint64_t),
	       "prot_bytes_in()");
_Static_assert(SAME_TYPE(prot_bytes_out((struct protstream *)0), uint64_t),
	       "prot_bytes_out()");
_Static_assert(SAME_TYPE(prot_peek((struct protstream *)0), int),
	       "prot_peek()");

/*
 * Old Cyrus code repeats the prototypes it uses. Behind our inline getc
 * and putc macros these declare the inline helpers again, which C allows.
 */
extern int prot_getc(struct protstream *s);
extern int prot_putc(int c, struct protstream *s);
extern int prot_ungetc(int c, struct protstream *s);
extern int prot_printf(struct protstream *, const char *, ...);

static void test_cyrus_api_constants(void **state)
{
	(void)state;
	assert_string_equal(PROT_EOF_STRING, "end of file reached");
	assert_int_equal(PROT_BUFSIZE, 4096);
	assert_int_equal(PROT_NO_FD, -1);
	assert_int_equal(PROTGROUP_SIZE_DEFAULT, 32);
}

static void test_cyrus_api_functions_linked(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cyrus_api) / sizeof(cyrus_api[0]); i++)
		assert_non_null(cyrus_api[i].fn);
	assert_int_equal(sizeof(cyrus_api) / sizeof(cyrus_api[0]), 49);
}

/* ------------------------------------------------------------------ */
/* Fresh streams: the public fields Cyrus sets.                       */

static ssize_t fill_nothing(unsigned char *buf, size_t len, void *rock)
{
	(void)buf;
	(void)len;
	(void)rock;
	return 0;
}

static void test_cyrus_api_fresh_fields(void **state)
{
	static const char text[] = "a1 NOOP\r\n";
	struct buf b = BUF_INITIALIZER;
	struct protstream *r, *w, *wb, *m, *cb;
	int sv[2], rock = 0;
	time_t t0, t1;

	(void)state;
	assert_null(b.s);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.alloc, 0);
	assert_int_equal(b.flags, 0);
	t_socketpair(sv);
	r = prot_new(sv[0], 0);
	w = prot_new(sv[0], 1);
	assert_non_null(r);
	assert_non_null(w);

	/* A read stream. */
	assert_int_equal(r->fd, sv[0]);
	assert_int_equal(r->logfd, PROT_NO_FD);
	assert_int_equal(r->write, 0);
	assert_int_equal(r->cnt, 0);
	assert_int_equal(r->buf_size, PROT_BUFSIZE);
	assert_int_equal(r->maxplain, PROT_BUFSIZE);
	assert_null(r->conn);
	assert_int_equal(r->saslssf, 0);
	assert_null(r->tls_conn);
	assert_null(r->zstrm);
	assert_null(r->fillcallback_proc);
	assert_null(r->fillcallback_rock);
	assert_int_equal(r->eof, 0);
	assert_int_equal(r->boundary, 0);
	assert_null(r->error);
	assert_int_equal(r->dontblock, 0);
	assert_int_equal(r->read_timeout, 0);
	assert_int_equal(r->timeout_mark, 0);
	assert_null(r->flushonread);
	assert_null(r->writetobuf);
	assert_int_equal(r->can_unget, 0);
	assert_int_equal(prot_bytes_in(r), 0);
	assert_int_equal(prot_bytes_out(r), 0);
	assert_int_equal(r->isclient, 0);
	assert_null(r->readcallback_proc);
	assert_null(r->readcallback_rock);
	assert_null(r->waitevent);
	assert_null(r->userdata);
	assert_null(prot_error(r));
	assert_false(prot_IS_EOF(r));
	assert_false(prot_IS_ERROR(r));
	assert_true(prot_IS_BLOCKING(r));

	/* A write stream: an empty buffer, all of it free. */
	assert_int_equal(w->write, 1);
	assert_non_null(w->buf);
	assert_ptr_equal(w->ptr, w->buf);
	assert_int_equal(w->cnt, PROT_BUFSIZE);
	assert_int_equal(w->maxplain, PROT_BUFSIZE);
	assert_int_equal(w->isclient, 0);

	/* Setters and mode macros write the fields callers read. */
	assert_int_equal(prot_setisclient(r, 1), 0);
	assert_int_equal(r->isclient, 1);
	assert_int_equal(prot_setlog(r, 2), 0);
	assert_int_equal(r->logfd, 2);
	assert_int_equal(prot_setlog(r, PROT_NO_FD), 0);
	assert_int_equal(prot_setflushonread(r, w), 0);
	assert_ptr_equal(r->flushonread, w);
	assert_int_equal(prot_setflushonread(r, NULL), 0);
	assert_null(r->flushonread);
	t0 = time(NULL);
	assert_int_equal(prot_settimeout(r, 30), 0);
	t1 = time(NULL);
	assert_int_equal(r->read_timeout, 30);
	assert_in_range(r->timeout_mark, t0 + 30, t1 + 30);
	assert_int_equal(prot_resettimeout(r), 0);
	assert_in_range(r->timeout_mark, t0 + 30, time(NULL) + 30);
	assert_int_equal(prot_settimeout(r, 0), 0);
	assert_int_equal(r->read_timeout, 0);
	prot_NONBLOCK(r);
	assert_int_equal(r->dontblock, 1);
	assert_false(prot_IS_BLOCKING(r));
	prot_BLOCK(r);
	assert_int_equal(r->dontblock, 0);
	r->userdata = &rock;
	assert_ptr_equal(r->userdata, &rock);
	assert_int_equal(prot_data_boundary(r), 0);

	/* The memory and callback streams. */
	wb = prot_writebuf(&b);
	assert_non_null(wb);
	assert_int_equal(wb->write, 1);
	assert_int_equal(wb->fd, PROT_NO_FD);
	assert_int_equal(wb->logfd, PROT_NO_FD);
	assert_int_equal(wb->isclient, 1);
	assert_ptr_equal(wb->writetobuf, &b);
	assert_int_equal(wb->cnt, PROT_BUFSIZE);
	m = prot_readmap(text, sizeof(text) - 1);
	assert_non_null(m);
	assert_int_equal(m->write, 0);
	assert_int_equal(m->fd, PROT_NO_FD);
	assert_ptr_equal(m->ptr, text);
	assert_int_equal(m->cnt, sizeof(text) - 1);
	assert_null(m->buf); /* the map stays the caller's */
	cb = prot_readcb(fill_nothing, &rock);
	assert_non_null(cb);
	assert_int_equal(cb->fd, PROT_NO_FD);
	assert_ptr_equal(cb->fillcallback_proc, fill_nothing);
	assert_ptr_equal(cb->fillcallback_rock, &rock);
	assert_int_equal(cb->cnt, 0);

	assert_int_equal(prot_free(cb), 0);
	assert_int_equal(prot_free(m), 0);
	assert_int_equal(prot_free(wb), 0);
	assert_null(b.s); /* nothing was written */
	assert_int_equal(prot_free(w), 0);
	assert_int_equal(prot_free(r), 0);
	t_close_pair(sv);
}

/*
 * Cyrus's http_h2.c hands a copy to a map stream with s->buf = s->ptr;
 * prot_free then frees it (LeakSanitizer would report it otherwise).
 */
static void test_cyrus_api_readmap_hands_over(void **state)
{
	static const char text[] = "a1 NOOP\r\n";
	char *copy = malloc(sizeof(text));
	struct protstream *m;

	(void)state;
	assert_non_null(copy);
	memcpy(copy, text, sizeof(text));
	m = prot_readmap(copy, sizeof(text) - 1);
	assert_non_null(m);
	m->buf = m->ptr;
	assert_int_equal(prot_getc(m), 'a');
	assert_int_equal(prot_free(m), 0);
}

/* ------------------------------------------------------------------ */
/* getc and putc: macro, parenthesised and pointer forms agree.       */

static void test_cyrus_api_getc_putc_forms(void **state)
{
	static const char text[] = "abcd";
	int (*getc_fn)(struct protstream *) = prot_getc;
	int (*putc_fn)(int, struct protstream *) = prot_putc;
	struct buf b = BUF_INITIALIZER;
	struct protstream *m = prot_readmap(text, 4);
	struct protstream *arr[1];
	struct protstream *w;
	const char *p = "xyzw";
	int i = 0;

	(void)state;
	assert_non_null(m);
	arr[0] = m;
	assert_int_equal(prot_getc(m), 'a');
	assert_int_equal((prot_getc)(m), 'b');
	assert_int_equal(getc_fn(m), 'c');
	assert_int_equal(prot_getc(arr[i++]), 'd'); /* s evaluated once */
	assert_int_equal(i, 1);
	assert_int_equal(prot_bytes_in(m), 4);
	assert_int_equal(m->can_unget, 4);
	assert_int_equal(prot_getc(m), EOF);
	assert_true(prot_IS_EOF(m));
	assert_string_equal(prot_error(m), PROT_EOF_STRING);
	/* A map stream can push back everything it handed out. */
	assert_int_equal(prot_ungetc('d', m), 'd');
	assert_int_equal(prot_ungetc('c', m), 'c');
	assert_int_equal(prot_ungetc(EOF, m), EOF);
	assert_int_equal(prot_peek(m), 'c');
	assert_int_equal(prot_bytes_in(m), 2);
	assert_int_equal(m->cnt, 2);
	assert_int_equal(prot_free(m), 0);

	w = prot_writebuf(&b);
	assert_non_null(w);
	assert_int_equal(prot_putc(*p++, w), 0); /* c evaluated once */
	assert_int_equal((prot_putc)(*p++, w), 0);
	assert_int_equal(putc_fn(*p++, w), 0);
	assert_int_equal(prot_putc(*p++, w), 0);
	assert_int_equal(prot_bytes_out(w), 4);
	assert_int_equal(w->cnt, PROT_BUFSIZE - 4);
	assert_int_equal(prot_flush(w), 0);
	assert_int_equal(b.len, 4);
	assert_memory_equal(b.s, "xyzw", 4);
#ifdef RINGPROT_PROT_H
	/* Declared by Cyrus too, but only defined here. */
	assert_int_equal((prot_bytes_out)(w), 4);
	assert_true(
		SAME_TYPE(&(prot_bytes_in), uint64_t(*)(struct protstream *)));
	assert_true(
		SAME_TYPE(&(prot_bytes_out), uint64_t(*)(struct protstream *)));
#endif
	assert_int_equal(prot_free(w), 0);
	free(b.s);
}

/* ------------------------------------------------------------------ */
/* In-memory streams and struct buf.                                  */

struct chunks {
	const char *p;
	size_t left;
	int calls;
};

/* Serves rock's text 3 bytes per call, then 0 (end of data). */
static ssize_t fill_3(unsigned char *buf, size_t len, void *rock)
{
	struct chunks *c = rock;
	size_t n = c->left < 3 ? c->left : 3;

	assert_int_equal(len, PROT_BUFSIZE);
	memcpy(buf, c->p, n);
	c->p += n;
	c->left -= n;
	c->calls++;
	return (ssize_t)n;
}

static void test_cyrus_api_memory_streams(void **state)
{
	static const char text[] = "NIL abc\r\nrest";
	static const char out[] = "x 5 y{2+}\r\nab \"q s\" NIL";
	struct chunks ch = {"one\ntwo", 7, 0};
	struct buf b = BUF_INITIALIZER, rb = BUF_INITIALIZER;
	struct protstream *w, *m, *cb;
	char line[64], tmp[64];
	int sep = -1;

	(void)state;
	/* writebuf: isclient literals, bytes reach b on a flush. */
	w = prot_writebuf(&b);
	assert_non_null(w);
	assert_int_equal(prot_printf(w, "%s %d %c", "x", 5, 'y'), 0);
	assert_int_equal(prot_printliteral(w, "ab", 2), 0);
	assert_int_equal(prot_putc(' ', w), 0);
	assert_int_equal(prot_printastring(w, "q s"), 0);
	assert_int_equal(prot_putc(' ', w), 0);
	assert_int_equal(prot_printastring(w, NULL), 0);
	assert_int_equal(b.len, 0);
	assert_int_equal(prot_flush(w), 0);
	assert_int_equal(b.len, sizeof(out) - 1);
	assert_memory_equal(b.s, out, sizeof(out) - 1);
	assert_int_equal(prot_bytes_out(w), sizeof(out) - 1);
	assert_int_equal(prot_free(w), 0);
	free(b.s);

	/* readmap: peek, lookahead, fgets, read, EOF. */
	m = prot_readmap(text, sizeof(text) - 1);
	assert_non_null(m);
	assert_int_equal(prot_peek(m), 'N');
	assert_int_equal(prot_lookahead(m, "NIL", 3, &sep), 4);
	assert_int_equal(sep, ' ');
	assert_int_equal(prot_lookahead(m, "NIX", 3, &sep), 0);
	assert_ptr_equal(prot_fgets(line, sizeof(line), m), line);
	assert_string_equal(line, "NIL abc\r\n");
	assert_int_equal(prot_read(m, tmp, sizeof(tmp)), 4);
	assert_memory_equal(tmp, "rest", 4);
	assert_int_equal(prot_read(m, tmp, sizeof(tmp)), 0);
	assert_true(prot_IS_EOF(m));
	assert_false(prot_IS_ERROR(m));
	assert_string_equal(prot_error(m), PROT_EOF_STRING);
	assert_null(prot_fgets(line, sizeof(line), m));
	assert_int_equal(prot_bytes_in(m), sizeof(text) - 1);
	assert_int_equal(prot_free(m), 0);

	/* readbuf appends to a struct buf. */
	m = prot_readmap("hello", 5);
	assert_non_null(m);
	assert_int_equal(prot_readbuf(m, &rb, 3), 3);
	assert_int_equal(rb.len, 3);
	assert_int_equal(prot_readbuf(m, &rb, 10), 2);
	assert_int_equal(rb.len, 5);
	assert_memory_equal(rb.s, "hello", 5);
	assert_int_equal(prot_free(m), 0);
	free(rb.s);

	/* readcb: one callback call per refill, 0 is the end. */
	cb = prot_readcb(fill_3, &ch);
	assert_non_null(cb);
	assert_ptr_equal(prot_fgets(line, sizeof(line), cb), line);
	assert_string_equal(line, "one\n");
	assert_ptr_equal(prot_fgets(line, sizeof(line), cb), line);
	assert_string_equal(line, "two");
	assert_null(prot_fgets(line, sizeof(line), cb));
	assert_true(prot_IS_EOF(cb));
	assert_int_equal(ch.calls, 4);
	assert_int_equal(prot_free(cb), 0);
}

/* ------------------------------------------------------------------ */
/* A session over a socketpair, as imapd and its client would run it.  */

struct session {
	int sv[2];
	struct protstream *sin, *sout; /* the server, on sv[0] */
	struct protstream *cin, *cout; /* the client, on sv[1] */
	int logfd;		       /* telemetry of sin and sout */
	/* What the callbacks see and do. */
	struct prot_waitevent *ev;
	const char *client_says; /* written and flushed by the next event */
	int ev_calls, rcb_calls;
};

static void session_open(struct session *x)
{
	memset(x, 0, sizeof(*x));
	t_socketpair(x->sv);
	x->sin = prot_new(x->sv[0], 0);
	x->sout = prot_new(x->sv[0], 1);
	x->cin = prot_new(x->sv[1], 0);
	x->cout = prot_new(x->sv[1], 1);
	assert_non_null(x->sin);
	assert_non_null(x->sout);
	assert_non_null(x->cin);
	assert_non_null(x->cout);
	/* imapd: its input flushes its output; both speak to a client. */
	assert_int_equal(prot_setflushonread(x->sin, x->sout), 0);
	assert_int_equal(prot_setisclient(x->sin, 1), 0);
	assert_int_equal(prot_setisclient(x->cout, 1), 0);
	x->logfd = memfd_create("cyrus-api", MFD_CLOEXEC);
	assert_true(x->logfd >= 0);
	assert_int_equal(prot_setlog(x->sin, x->logfd), 0);
	assert_int_equal(prot_setlog(x->sout, x->logfd), 0);
}

/* Reads exactly n bytes from s (blocking), as a client loop would. */
static void read_exactly(struct protstream *s, char *dst, size_t n)
{
	size_t got = 0;

	while (got < n) {
		int r = prot_read(s, dst + got, (unsigned)(n - got));

		assert_true(r > 0);
		got += (size_t)r;
	}
}

static void expect_line(struct protstream *s, const char *want)
{
	char line[256];

	assert_ptr_equal(prot_fgets(line, sizeof(line), s), line);
	assert_string_equal(line, want);
}

/* The telemetry file holds <T<in or >T>out records; T is epoch seconds. */
static void expect_log(int fd, const char *dir, const char *data, size_t n,
		       off_t *pos)
{
	char rec[8192], *p;
	ssize_t got = pread(fd, rec, sizeof(rec), *pos);
	time_t t;

	assert_true(got > 0);
	assert_int_equal(rec[0], dir[0]);
	t = (time_t)strtol(rec + 1, &p, 10);
	assert_in_range(t, time(NULL) - 60, time(NULL));
	assert_int_equal(*p, dir[0]);
	p++;
	assert_true((size_t)(got - (p - rec)) >= n);
	assert_memory_equal(p, data, n);
	*pos += (p - rec) + (off_t)n;
}

/* The client's LOGIN and APPEND, and the server's parse of them. */
static const char cmd1[] = "a1 LOGIN fred \"pass word\"\r\n"
			   "a2 APPEND INBOX {7+}\r\nHello\r\n\r\n";

static void session_client_commands(struct session *x)
{
	assert_int_equal(prot_printf(x->cout, "a1 LOGIN "), 0);
	assert_int_equal(prot_printastring(x->cout, "fred"), 0);
	assert_int_equal(prot_putc(' ', x->cout), 0);
	assert_int_equal(prot_printastring(x->cout, "pass word"), 0);
	assert_int_equal(prot_puts(x->cout, "\r\n"), 0);
	assert_int_equal(prot_write(x->cout, "a2 APPEND INBOX ", 16), 0);
	assert_int_equal(prot_printliteral(x->cout, "Hello\r\n", 7), 0);
	assert_int_equal(prot_puts(x->cout, "\r\n"), 0);
	assert_int_equal(x->cout->cnt, PROT_BUFSIZE - (sizeof(cmd1) - 1));
	assert_int_equal(prot_flush(x->cout), 0);
	assert_int_equal(x->cout->cnt, PROT_BUFSIZE);
	assert_int_equal(prot_bytes_out(x->cout), sizeof(cmd1) - 1);
}

static void session_server_parses(struct session *x, off_t *logpos)
{
	struct buf b = BUF_INITIALIZER;
	char tmp[16];
	int sep = -1;

	assert_int_equal(prot_settimeout(x->sin, 3), 0);
	assert_int_equal(prot_getc(x->sin), 'a');
	assert_int_equal(x->sin->can_unget, 1);
	assert_int_equal(prot_bytes_in(x->sin), 1);
	assert_int_equal(x->sin->cnt, sizeof(cmd1) - 2);
	assert_int_equal(prot_ungetc('a', x->sin), 'a');
	assert_int_equal(x->sin->can_unget, 0);
	assert_int_equal(prot_bytes_in(x->sin), 0);
	assert_int_equal(prot_peek(x->sin), 'a');
	assert_int_equal(prot_lookahead(x->sin, "a1 LOGIN", 8, &sep), 9);
	assert_int_equal(sep, ' ');
	expect_line(x->sin, "a1 LOGIN fred \"pass word\"\r\n");
	assert_int_equal(prot_read(x->sin, tmp, 3), 3);
	assert_memory_equal(tmp, "a2 ", 3);
	assert_int_equal(prot_readbuf(x->sin, &b, 13), 13);
	assert_int_equal(b.len, 13);
	assert_memory_equal(b.s, "APPEND INBOX ", 13);
	free(b.s);
	expect_line(x->sin, "{7+}\r\n");
	assert_int_equal(prot_read(x->sin, tmp, 7), 7);
	assert_memory_equal(tmp, "Hello\r\n", 7);
	assert_int_equal(prot_getc(x->sin), '\r');
	assert_int_equal(prot_getc(x->sin), '\n');
	assert_int_equal(x->sin->cnt, 0);
	assert_int_equal(prot_bytes_in(x->sin), sizeof(cmd1) - 1);
	assert_false(prot_IS_EOF(x->sin));
	assert_null(prot_error(x->sin));
	/* The whole chunk went to the log as it arrived. */
	expect_log(x->logfd, "<", cmd1, sizeof(cmd1) - 1, logpos);
}

/* The server's answers: every IMAP string form. */
static const char reply1[] =
	"a1 OK [CAPABILITY IMAP4rev1] done\r\n"
	"* 1 FETCH (BODY[] {7}\r\nHello\r\n ENVELOPE (NIL \"NIL\" \"NIL\" nil "
	"\"\" \"a b\" atom \"\" {3}\r\na\0b {3}\r\n50% {3}\r\nx\"y))\r\n"
	"a2 OK APPEND completed\r\n";

static void session_server_replies(struct session *x, off_t *logpos)
{
	char done[] = "a2 OK APPEND completed\r\n";
	struct buf b = {done, sizeof(done) - 1, 0, 0};
	struct protstream *o = x->sout;
	uint64_t out0 = prot_bytes_out(o), in0 = prot_bytes_in(x->cin);
	char got[sizeof(reply1)];

	assert_int_equal(prot_printf(o, "a1 OK [CAPABILITY %s] %s\r\n",
				     "IMAP4rev1", "done"),
			 0);
	assert_int_equal(prot_printf(o, "* %d FETCH (BODY[] ", 1), 0);
	assert_int_equal(prot_printliteral(o, "Hello\r\n", 7), 0);
	assert_int_equal(prot_puts(o, " ENVELOPE ("), 0);
	assert_int_equal(prot_printstring(o, NULL), 0);
	assert_int_equal(prot_putc(' ', o), 0);
	assert_int_equal(prot_printstring(o, "NIL"), 0);
	assert_int_equal(prot_putc(' ', o), 0);
	assert_int_equal(prot_printastring(o, "NIL"), 0);
	assert_int_equal(prot_putc(' ', o), 0);
	assert_int_equal(prot_printastring(o, "nil"), 0);
	assert_int_equal(prot_putc(' ', o), 0);
	assert_int_equal(prot_printastring(o, ""), 0);
	assert_int_equal(prot_putc(' ', o), 0);
	assert_int_equal(prot_printmap(o, "a b", 3), 2);
	assert_int_equal(prot_putc(' ', o), 0);
	assert_int_equal(prot_printamap(o, "atom", 4), 0);
	assert_int_equal(prot_putc(' ', o), 0);
	assert_int_equal(prot_printamap(o, "", 0), 2);
	assert_int_equal(prot_putc(' ', o), 0);
	assert_int_equal(prot_printmap(o, "a\0b", 3), 0);
	assert_int_equal(prot_putc(' ', o), 0);
	assert_int_equal(prot_printstring(o, "50%"), 0);
	assert_int_equal(prot_putc(' ', o), 0);
	assert_int_equal(prot_printastring(o, "x\"y"), 0);
	assert_int_equal(prot_puts(o, "))\r\n"), 0);
	assert_int_equal(prot_putbuf(o, &b), 0);
	assert_int_equal(prot_bytes_out(o) - out0, sizeof(reply1) - 1);
	assert_int_equal(prot_flush(o), 0);
	expect_log(x->logfd, ">", reply1, sizeof(reply1) - 1, logpos);

	read_exactly(x->cin, got, sizeof(reply1) - 1);
	assert_memory_equal(got, reply1, sizeof(reply1) - 1);
	assert_int_equal(x->cin->cnt, 0);
	assert_int_equal(prot_bytes_in(x->cin) - in0, sizeof(reply1) - 1);
}

/* Runs while sin waits: the client speaks, the server queues a reply. */
static struct prot_waitevent *on_tick(struct protstream *s,
				      struct prot_waitevent *ev, void *rock)
{
	struct session *x = rock;

	assert_ptr_equal(s, x->sin);
	assert_ptr_equal(ev, x->ev);
	x->ev_calls++;
	assert_int_equal(prot_printf(x->sout, "* %d EXISTS\r\n", x->ev_calls),
			 0);
	if (x->client_says != NULL) {
		assert_int_equal(prot_puts(x->cout, x->client_says), 0);
		assert_int_equal(prot_flush(x->cout), 0);
		x->client_says = NULL;
	}
	prot_removewaitevent(s, ev);
	return NULL;
}

/* One-shot: runs when sin would block, before its output is flushed. */
static void on_block(struct protstream *s, void *rock)
{
	struct session *x = rock;

	assert_ptr_equal(s, x->sin);
	x->rcb_calls++;
	assert_int_equal(prot_puts(x->cout, "a3 NOOP\r\n"), 0);
	assert_int_equal(prot_flush(x->cout), 0);
}

static void session_events(struct session *x)
{
	struct prot_waitevent *ev;
	uint64_t t0, ms;
	time_t mark;

	/*
	 * sin would block with output pending: the read callback runs, the
	 * partner is flushed, then the due event runs before the wait. All
	 * at once: the input is there when sin waits.
	 */
	assert_int_equal(prot_printf(x->sout, "* 1 RECENT\r\n"), 0);
	assert_int_equal(prot_setreadcallback(x->sin, on_block, x), 0);
	assert_ptr_equal(x->sin->readcallback_proc, on_block);
	assert_ptr_equal(x->sin->readcallback_rock, x);
	x->ev = prot_addwaitevent(x->sin, time(NULL), on_tick, x);
	assert_non_null(x->ev);
	assert_ptr_equal(x->sin->waitevent, x->ev);
	t0 = t_now_ms();
	expect_line(x->sin, "a3 NOOP\r\n");
	ms = t_now_ms() - t0;
	assert_true(ms < 1000);
	assert_int_equal(x->rcb_calls, 1);
	assert_int_equal(x->ev_calls, 1);
	assert_null(x->sin->readcallback_proc);
	assert_null(x->sin->waitevent);
	/* RECENT left with the flush-on-read; EXISTS waits for a flush. */
	expect_line(x->cin, "* 1 RECENT\r\n");
	prot_NONBLOCK(x->cin);
	errno = 0;
	assert_int_equal(prot_getc(x->cin), EOF);
	assert_int_equal(errno, EAGAIN);
	assert_false(prot_IS_ERROR(x->cin));
	assert_false(prot_IS_EOF(x->cin));
	prot_BLOCK(x->cin);
	assert_int_equal(prot_flush(x->sout), 0);
	expect_line(x->cin, "* 1 EXISTS\r\n");

	/* An event re-armed by writing its mark (sync_checkpoint). */
	mark = time(NULL) + 3600;
	x->ev = prot_addwaitevent(x->sin, mark, on_tick, x);
	assert_non_null(x->ev);
	assert_int_equal(x->ev->mark, mark);
	assert_ptr_equal(x->ev->proc, on_tick);
	assert_ptr_equal(x->ev->rock, x);
	assert_null(x->ev->next);
	ev = prot_addwaitevent(x->sin, 0, NULL, NULL); /* adds nothing */
	assert_ptr_equal(ev, x->ev);
	assert_null(x->ev->next);
	x->ev->mark = time(NULL);
	x->client_says = "a4 NOOP\r\n";
	expect_line(x->sin, "a4 NOOP\r\n");
	assert_int_equal(x->ev_calls, 2);
	assert_null(x->sin->waitevent);
	assert_int_equal(prot_flush(x->sout), 0);
	expect_line(x->cin, "* 2 EXISTS\r\n");
}

static void session_select(struct session *x)
{
	struct protgroup *g = protgroup_new(0), *out, *copy;
	struct timeval tv = {0, 0};
	int p[2], flag = 42;
	char c;

	assert_non_null(g);
	protgroup_insert(g, x->sin);
	protgroup_insert(g, x->cin);
	protgroup_insert(g, x->sin); /* already there */
	assert_ptr_equal(protgroup_getelement(g, 0), x->sin);
	assert_ptr_equal(protgroup_getelement(g, 1), x->cin);
	assert_null(protgroup_getelement(g, 2));

	/* Nothing to read: a zero timeout polls. */
	out = (struct protgroup *)&flag;
	assert_int_equal(prot_select(g, -1, &out, &flag, &tv), 0);
	assert_null(out);
	assert_int_equal(flag, 0);

	/* The client's fd is readable. */
	assert_int_equal(prot_puts(x->sout, "* BYE\r\n"), 0);
	assert_int_equal(prot_flush(x->sout), 0);
	tv.tv_sec = 5;
	assert_int_equal(prot_select(g, -1, &out, &flag, &tv), 1);
	assert_non_null(out);
	assert_ptr_equal(protgroup_getelement(out, 0), x->cin);
	assert_null(protgroup_getelement(out, 1));
	assert_int_equal(flag, 0);
	protgroup_free(out);
	expect_line(x->cin, "* BYE\r\n");

	/* Only the extra fd is readable. */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	tv.tv_sec = 5;
	assert_int_equal(prot_select(g, p[0], &out, &flag, &tv), 1);
	assert_null(out);
	assert_int_equal(flag, 1);
	assert_int_equal(read(p[0], &c, 1), 1);

	/* A member with buffered bytes is ready at once. */
	assert_int_equal(prot_puts(x->cout, "a5 LOGOUT\r\n"), 0);
	assert_int_equal(prot_flush(x->cout), 0);
	assert_int_equal(prot_getc(x->sin), 'a');
	flag = 42;
	tv.tv_sec = 5;
	assert_int_equal(prot_select(g, p[0], &out, &flag, &tv), 1);
	assert_non_null(out);
	assert_ptr_equal(protgroup_getelement(out, 0), x->sin);
	assert_null(protgroup_getelement(out, 1));
	protgroup_free(out);
#ifdef RINGPROT_PROT_H
	assert_int_equal(flag, 0); /* always set (prot.h) */
#else
	assert_int_equal(flag, 42); /* left alone */
#endif
	close(p[0]);
	close(p[1]);

	/* Group upkeep. */
	copy = protgroup_copy(g);
	assert_non_null(copy);
	protgroup_free(copy);
	protgroup_delete(g, x->sin);
	assert_ptr_equal(protgroup_getelement(g, 0), x->cin);
	assert_null(protgroup_getelement(g, 1));
	protgroup_reset(g);
	assert_null(protgroup_getelement(g, 0));
	protgroup_free(g);
}

/* prot_flush on a read stream throws pending input away. */
static void session_drain(struct session *x)
{
	assert_int_equal(prot_puts(x->cout, "junk\r\n"), 0);
	assert_int_equal(prot_flush(x->cout), 0);
	assert_true(x->sin->cnt > 0); /* "5 LOGOUT\r\n" */
	assert_int_equal(prot_flush(x->sin), 0);
	assert_int_equal(x->sin->cnt, 0);
	assert_int_equal(x->sin->can_unget, 0);
	prot_NONBLOCK(x->sin);
	errno = 0;
	assert_int_equal(prot_getc(x->sin), EOF);
	assert_int_equal(errno, EAGAIN);
	assert_false(prot_IS_ERROR(x->sin));
	prot_BLOCK(x->sin);
}

/* The client goes away: a clean EOF, which imapd tells by its text. */
static void session_close(struct session *x)
{
	char tmp[8];

	assert_int_equal(prot_free(x->cout), 0);
	assert_int_equal(prot_free(x->cin), 0);
	close(x->sv[1]);
	assert_int_equal(prot_getc(x->sin), EOF);
	assert_true(prot_IS_EOF(x->sin));
	assert_false(prot_IS_ERROR(x->sin));
	assert_string_equal(prot_error(x->sin), PROT_EOF_STRING);
	assert_null(prot_fgets(tmp, sizeof(tmp), x->sin));
	assert_int_equal(prot_read(x->sin, tmp, sizeof(tmp)), 0);
	/* A socket cannot be rewound. */
	assert_int_equal(prot_rewind(x->sin), EOF);
	assert_string_equal(prot_error(x->sin), strerror(ESPIPE));
	assert_int_equal(prot_free(x->sin), 0);
	assert_int_equal(prot_free(x->sout), 0);
	close(x->sv[0]);
	close(x->logfd);
}

static void test_cyrus_api_session(void **state)
{
	struct session x;
	off_t logpos = 0;

	(void)state;
	session_open(&x);
	/* Greeting. */
	assert_int_equal(prot_printf(x.sout, "* OK %s ready\r\n", "ringprot"),
			 0);
	assert_int_equal(prot_flush(x.sout), 0);
	expect_log(x.logfd, ">", "* OK ringprot ready\r\n", 21, &logpos);
	expect_line(x.cin, "* OK ringprot ready\r\n");
	assert_int_equal(prot_bytes_in(x.cin), 21);

	session_client_commands(&x);
	session_server_parses(&x, &logpos);
	session_server_replies(&x, &logpos);
	session_events(&x);
	session_select(&x);
	session_drain(&x);
	session_close(&x);
}

/* A read timeout ends the session with Cyrus's text, for good. */
static void test_cyrus_api_idle_timeout(void **state)
{
	struct timespec a, b;
	struct protstream *in;
	long ms;
	int sv[2];

	(void)state;
	t_socketpair(sv);
	in = prot_new(sv[0], 0);
	assert_non_null(in);
	assert_int_equal(prot_settimeout(in, 1), 0);
	clock_gettime(CLOCK_MONOTONIC, &a);
	assert_int_equal(prot_getc(in), EOF);
	clock_gettime(CLOCK_MONOTONIC, &b);
	ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	assert_in_range(ms, 900, 5000);
	assert_true(prot_IS_ERROR(in));
	assert_false(prot_IS_EOF(in));
	assert_string_equal(prot_error(in), "idle for too long");
	/* Sticky: input arriving now is not read. */
	assert_int_equal(write(sv[1], "x", 1), 1);
	assert_int_equal(prot_getc(in), EOF);
	assert_string_equal(prot_error(in), "idle for too long");
	assert_int_equal(prot_free(in), 0);
	t_close_pair(sv);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cyrus_api_constants),
		cmocka_unit_test(test_cyrus_api_functions_linked),
		T(test_cyrus_api_fresh_fields),
		cmocka_unit_test(test_cyrus_api_readmap_hands_over),
		T(test_cyrus_api_getc_putc_forms),
		T(test_cyrus_api_memory_streams),
		T(test_cyrus_api_session),
		T(test_cyrus_api_idle_timeout),
	};

	t_require_loop();
	return t_run_groups("cyrus-api", tests,
			    sizeof(tests) / sizeof(tests[0])) != 0;
}
