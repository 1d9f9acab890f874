/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/stack: fiber stacks: lazily committed, guarded, pooled. */
#ifndef RINGPROT_UR_STACK_H
#define RINGPROT_UR_STACK_H

#include <stdbool.h>
#include <stddef.h>

struct ur__stack {
	void *lo;    /* lowest usable byte (just above the guard) */
	size_t size; /* usable bytes */
	void *map;   /* the whole mapping, guard included */
	size_t map_len;
	unsigned vg_id;		/* Valgrind stack id */
	struct ur__stack *next; /* pool link */
};

struct ur__stack_pool {
	size_t stack_size;   /* usable size, page multiple */
	unsigned max_cached; /* stacks kept for reuse */
	unsigned cached;
	struct ur__stack *free;
	unsigned long mapped; /* stacks mapped, in use or cached */
	bool guard_madvise;   /* MADV_GUARD_INSTALL worked (no extra VMA) */
};

/* stack_size is rounded up to pages; 0 means 64 KiB. */
void ur__stack_pool_init(struct ur__stack_pool *p, size_t stack_size,
			 unsigned max_cached);
/* Unmap every cached stack (stacks in use are the caller's problem). */
void ur__stack_pool_fini(struct ur__stack_pool *p);
/* A stack from the pool or a fresh mapping; NULL if none can be mapped. */
struct ur__stack *ur__stack_get(struct ur__stack_pool *p);
/* Back to the pool; all but the top page are given back (MADV_DONTNEED)
 * when cached, since every new fiber touches the top page first. */
void ur__stack_put(struct ur__stack_pool *p, struct ur__stack *s);

#endif /* RINGPROT_UR_STACK_H */
