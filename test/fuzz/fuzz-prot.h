/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz: what the targets that drive protstreams share. */
#ifndef RINGPROT_FUZZ_PROT_H
#define RINGPROT_FUZZ_PROT_H

#include "fuzz.h"

#include <sys/socket.h>
#include <unistd.h>

#ifdef RINGPROT_HAVE_ZLIB
#include <zlib.h>
#endif

#include <ringprot/prot.h>

/*
 * The thread's provided-buffer ring lives while a socket stream holds it,
 * as in a server, where some connection always does: one stream that has
 * read keeps it across inputs, or each input would map and fault in its
 * 4 MiB of buffers anew. (Static: reachable, so no leak report.)
 */
static inline void ring_keeper(void)
{
	static struct protstream *keep;
	static int sv[2];

	if (keep != NULL)
		return;
	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	FUZZ_CHECK(write(sv[1], "k", 1) == 1);
	keep = prot_new(sv[0], 0);
	FUZZ_CHECK(keep != NULL && prot_getc(keep) == 'k');
}

#ifdef RINGPROT_HAVE_ZLIB
/* How zlib's inflate leaves a raw DEFLATE byte string. */
enum zend {
	ZEND_OPEN,  /* all input used, no final block: more could follow */
	ZEND_FINAL, /* a final block ends exactly at the input's end */
	ZEND_TRAIL, /* bytes follow the final block */
	ZEND_ERROR, /* corrupt */
};

/* zlib's own raw inflate of p[0..n), appended to o: the reference. */
static inline enum zend ref_inflate(const uint8_t *p, size_t n, struct obuf *o)
{
	z_stream z = {0};
	enum zend st;
	int ret;

	FUZZ_CHECK(inflateInit2(&z, -15) == Z_OK);
	z.next_in = (Bytef *)(uintptr_t)p;
	z.avail_in = (uInt)n;
	for (;;) {
		obuf_room(o, 65536);
		z.next_out = o->p + o->len;
		z.avail_out = (uInt)(o->cap - o->len);
		ret = inflate(&z, Z_SYNC_FLUSH);
		o->len = (size_t)(z.next_out - o->p);
		if (ret == Z_STREAM_END) {
			st = z.avail_in > 0 ? ZEND_TRAIL : ZEND_FINAL;
			break;
		}
		if (ret != Z_OK && ret != Z_BUF_ERROR) {
			st = ZEND_ERROR;
			break;
		}
		if (z.avail_in == 0 && z.avail_out > 0) {
			st = ZEND_OPEN;
			break;
		}
	}
	(void)inflateEnd(&z);
	return st;
}
#endif

#endif /* RINGPROT_FUZZ_PROT_H */
