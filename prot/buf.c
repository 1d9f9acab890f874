/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/buf: growing Cyrus-layout struct buf for the *buf calls. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * Cyrus keeps one spare byte so buf_cstring() can NUL-terminate in place;
 * we keep that habit so a buf we grew can be handed to Cyrus-style code.
 * A buf with alloc == 0 but s != NULL borrows its bytes (buf_init_ro):
 * the first growth copies them into memory we own.
 */
int prot__buf_reserve(struct buf *b, size_t n)
{
	size_t need, cap;
	char *p;

	if (n > SIZE_MAX - b->len - 1)
		return -ENOMEM;
	need = b->len + n + 1;
	if (b->alloc >= need)
		return 0;
	cap = b->alloc > 0 ? b->alloc : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (b->alloc == 0) {
		p = malloc(cap);
		if (p == NULL)
			return -ENOMEM;
		if (b->len > 0)
			memcpy(p, b->s, b->len);
	} else {
		p = realloc(b->s, cap);
		if (p == NULL)
			return -ENOMEM;
	}
	b->s = p;
	b->alloc = cap;
	return 0;
}

int prot__buf_append(struct buf *b, const void *p, size_t n)
{
	int ret;

	if (n == 0)
		return 0;
	ret = prot__buf_reserve(b, n);
	if (ret < 0)
		return ret;
	memcpy(b->s + b->len, p, n);
	b->len += n;
	b->s[b->len] = '\0';
	return 0;
}

void prot__buf_release(struct buf *b)
{
	if (b->alloc > 0)
		free(b->s);
	b->s = NULL;
	b->len = 0;
	b->alloc = 0;
}
