/* SPDX-License-Identifier: BSD-3-Clause */
/* test/t-cyrus: dlopen Cyrus 3.6's libcyrus.so.0 beside our own prot_*. */
#include "t-cyrus.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cy_protstream *(*cy_new)(int fd, int write);
struct cy_protstream *(*cy_writebuf)(struct cy_buf *b);
struct cy_protstream *(*cy_readmap)(const char *base, uint32_t len);
struct cy_protstream *(*cy_readcb)(cy_fill_fn *proc, void *rock);
int (*cy_free)(struct cy_protstream *s);
int (*cy_setlog)(struct cy_protstream *s, int fd);
int (*cy_setisclient)(struct cy_protstream *s, int val);
int (*cy_setflushonread)(struct cy_protstream *s, struct cy_protstream *flushs);
const char *(*cy_error)(struct cy_protstream *s);
int (*cy_flush)(struct cy_protstream *s);
int (*cy_write)(struct cy_protstream *s, const char *p, unsigned n);
int (*cy_putc)(int c, struct cy_protstream *s);
int (*cy_puts)(struct cy_protstream *s, const char *str);
int (*cy_printf)(struct cy_protstream *s, const char *fmt, ...);
int (*cy_printliteral)(struct cy_protstream *s, const char *p, size_t n);
int (*cy_printstring)(struct cy_protstream *s, const char *p);
int (*cy_printmap)(struct cy_protstream *s, const char *p, size_t n);
int (*cy_printamap)(struct cy_protstream *s, const char *p, size_t n);
int (*cy_printastring)(struct cy_protstream *s, const char *p);
int (*cy_getc)(struct cy_protstream *s);
int (*cy_ungetc)(int c, struct cy_protstream *s);
int (*cy_fill)(struct cy_protstream *s);
char *(*cy_fgets)(char *buf, unsigned size, struct cy_protstream *s);
int (*cy_read)(struct cy_protstream *s, char *buf, unsigned size);
int (*cy_readbuf)(struct cy_protstream *s, struct cy_buf *b, unsigned size);
size_t (*cy_lookahead)(struct cy_protstream *s, const char *str, size_t len,
		       int *sep);
void (*cy_buf_free)(struct cy_buf *b);

/* libcyrus calls fatal(), which the program must provide. */
void fatal(const char *s, int code)
{
	fprintf(stderr, "fatal(%d): %s\n", code, s);
	fflush(stderr);
	_exit(code);
}

static __attribute__((noreturn)) void skip(const char *prog, const char *why,
					   const char *what)
{
	fprintf(stderr, "%s: %s (%s): skipped\n", prog, why, what);
	exit(77);
}

void t_cyrus_load(const char *prog)
{
	static const struct {
		const char *name;
		void *slot;
	} syms[] = {
		{"prot_new", &cy_new},
		{"prot_writebuf", &cy_writebuf},
		{"prot_readmap", &cy_readmap},
		{"prot_readcb", &cy_readcb},
		{"prot_free", &cy_free},
		{"prot_setlog", &cy_setlog},
		{"prot_setisclient", &cy_setisclient},
		{"prot_setflushonread", &cy_setflushonread},
		{"prot_error", &cy_error},
		{"prot_flush", &cy_flush},
		{"prot_write", &cy_write},
		{"prot_putc", &cy_putc},
		{"prot_puts", &cy_puts},
		{"prot_printf", &cy_printf},
		{"prot_printliteral", &cy_printliteral},
		{"prot_printstring", &cy_printstring},
		{"prot_printmap", &cy_printmap},
		{"prot_printamap", &cy_printamap},
		{"prot_printastring", &cy_printastring},
		{"prot_getc", &cy_getc},
		{"prot_ungetc", &cy_ungetc},
		{"prot_fill", &cy_fill},
		{"prot_fgets", &cy_fgets},
		{"prot_read", &cy_read},
		{"prot_readbuf", &cy_readbuf},
		{"prot_lookahead", &cy_lookahead},
	};
	void *lib, *min, *p;

#if defined(__SANITIZE_ADDRESS__)
	/*
	 * ASan refuses RTLD_DEEPBIND (google/sanitizers#611), and without
	 * it libcyrus's own calls would bind to our prot_* exports.
	 */
	skip(prog, "Cyrus cannot be loaded under ASan", "RTLD_DEEPBIND");
#endif

	/*
	 * libcyrus.so.0 uses libcyrus_min.so.0 without naming it as NEEDED,
	 * so that one must be global first. DEEPBIND makes both bind their
	 * own symbols before ours: this binary exports prot_* too.
	 */
	if ((min = dlopen("libcyrus_min.so.0",
			  RTLD_NOW | RTLD_GLOBAL | RTLD_DEEPBIND)) == NULL ||
	    (lib = dlopen("libcyrus.so.0",
			  RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND)) == NULL)
		skip(prog, "cannot load Cyrus", dlerror());
	p = dlsym(min, "buf_free");
	if (p == NULL)
		skip(prog, "no symbol in libcyrus_min", "buf_free");
	memcpy(&cy_buf_free, &p, sizeof(p));
	for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
		p = dlsym(lib, syms[i].name);
		if (p == NULL)
			skip(prog, "no symbol in libcyrus", syms[i].name);
		memcpy(syms[i].slot, &p, sizeof(p));
	}
}
