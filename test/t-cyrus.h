/* SPDX-License-Identifier: BSD-3-Clause */
/* test/t-cyrus: Cyrus 3.6's prot_* from libcyrus.so.0, for diffs and bench. */
#ifndef RINGPROT_T_CYRUS_H
#define RINGPROT_T_CYRUS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Needs neither cmocka nor ringprot: bench/ compiles t-cyrus.c too. The
 * pointers are named cy_<x> for Cyrus's prot_<x> so that one body can be
 * written against either implementation (bench-prot's CASES macro).
 *
 * Linking t-cyrus.c also defines fatal(), which libcyrus calls and the
 * program must provide: it prints the message and _exit()s with the
 * code. The executable must export it (meson: export_dynamic: true).
 */

/* See above; also usable as a prot_setfatal() hook. */
__attribute__((visibility("default"))) void fatal(const char *s, int code);

/* Opaque here; test-prot-diff.c spells out Cyrus 3.6's layout. */
struct cy_protstream;
struct cy_buf;

typedef ssize_t cy_fill_fn(unsigned char *buf, size_t len, void *rock);

extern struct cy_protstream *(*cy_new)(int fd, int write);
extern struct cy_protstream *(*cy_writebuf)(struct cy_buf *b);
extern struct cy_protstream *(*cy_readmap)(const char *base, uint32_t len);
extern struct cy_protstream *(*cy_readcb)(cy_fill_fn *proc, void *rock);
extern int (*cy_free)(struct cy_protstream *s);
extern int (*cy_setlog)(struct cy_protstream *s, int fd);
extern int (*cy_setisclient)(struct cy_protstream *s, int val);
extern int (*cy_setflushonread)(struct cy_protstream *s,
				struct cy_protstream *flushs);
extern const char *(*cy_error)(struct cy_protstream *s);
extern int (*cy_flush)(struct cy_protstream *s);
extern int (*cy_write)(struct cy_protstream *s, const char *p, unsigned n);
extern int (*cy_putc)(int c, struct cy_protstream *s);
extern int (*cy_puts)(struct cy_protstream *s, const char *str);
extern int (*cy_printf)(struct cy_protstream *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
extern int (*cy_printliteral)(struct cy_protstream *s, const char *p, size_t n);
extern int (*cy_printstring)(struct cy_protstream *s, const char *p);
extern int (*cy_printmap)(struct cy_protstream *s, const char *p, size_t n);
extern int (*cy_printamap)(struct cy_protstream *s, const char *p, size_t n);
extern int (*cy_printastring)(struct cy_protstream *s, const char *p);
extern int (*cy_getc)(struct cy_protstream *s);
extern int (*cy_ungetc)(int c, struct cy_protstream *s);
extern int (*cy_fill)(struct cy_protstream *s);
extern char *(*cy_fgets)(char *buf, unsigned size, struct cy_protstream *s);
extern int (*cy_read)(struct cy_protstream *s, char *buf, unsigned size);
extern int (*cy_readbuf)(struct cy_protstream *s, struct cy_buf *b,
			 unsigned size);
extern size_t (*cy_lookahead)(struct cy_protstream *s, const char *str,
			      size_t len, int *sep);
/* From libcyrus_min.so.0. */
extern void (*cy_buf_free)(struct cy_buf *b);

/*
 * Load libcyrus_min.so.0 and libcyrus.so.0 and fill every pointer above,
 * or exit(77) (meson: skipped) naming prog and the reason: under ASan
 * (which refuses RTLD_DEEPBIND), or if a library or symbol is missing.
 * Call once, from main(), before any thread starts.
 */
void t_cyrus_load(const char *prog);

#endif /* RINGPROT_T_CYRUS_H */
