/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/: struct buf with the layout of Cyrus's util.h, for the *buf calls. */
#ifndef RINGPROT_BUF_H
#define RINGPROT_BUF_H

#include <stddef.h>

/*
 * Cyrus's growable byte buffer (lib/util.h): s points at len bytes, with
 * room for alloc. alloc == 0 with s != NULL means "borrowed": the bytes are
 * copied into a fresh allocation before the first append. Our *buf calls
 * only append (prot_writebuf, prot_readbuf); the memory they allocate is
 * from malloc/realloc, so the caller releases it with free(b->s).
 *
 * A program that already includes Cyrus's util.h (INCLUDED_UTIL_H; Cyrus
 * 3.6) or buf.h (INCLUDED_BUF_H; later Cyrus) keeps that definition, which
 * has the same layout. Include it first in that case; defining the struct
 * twice is an error in C.
 */
#if !defined(INCLUDED_UTIL_H) && !defined(INCLUDED_BUF_H) && \
	!defined(RINGPROT_HAVE_STRUCT_BUF)
#define RINGPROT_HAVE_STRUCT_BUF 1
struct buf {
	char *s;
	size_t len;
	size_t alloc;
	unsigned flags;
};
#endif

/* An empty buffer, as Cyrus spells it: struct buf b = BUF_INITIALIZER; */
#ifndef BUF_INITIALIZER
#define BUF_INITIALIZER       \
	{                     \
		NULL, 0, 0, 0 \
	}
#endif

#endif /* RINGPROT_BUF_H */
