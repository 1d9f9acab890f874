/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/stack: fiber stacks: lazily committed, guarded, pooled mappings. */
#include "stack.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"

#ifdef RINGPROT_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define STACK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STACK_ASAN 1
#endif
#endif
#ifndef STACK_ASAN
#define STACK_ASAN 0
#endif
#if STACK_ASAN
#include <sanitizer/asan_interface.h>
#endif

#define STACK_DEFAULT_SIZE ((size_t)64 * 1024)

/*
 * Guard below each stack. Larger than one page so that a frame with a
 * few KiB of locals cannot step over it; with MADV_GUARD_INSTALL it costs
 * no memory and no VMA, with mprotect one VMA whatever its length.
 */
#define STACK_GUARD_PAGES 4

/* How guards are made, probed once per process (the kernel won't change). */
enum {
	GUARD_UNKNOWN = 0,
	GUARD_MADVISE, /* 6.13+: PTE markers, the VMA stays whole */
	GUARD_MPROTECT,
};
static int guard_mode;

static size_t page_size(void)
{
	static size_t pg;
	size_t v = __atomic_load_n(&pg, __ATOMIC_RELAXED);

	if (v == 0) {
		long r = sysconf(_SC_PAGESIZE);

		v = r > 0 ? (size_t)r : 4096;
		__atomic_store_n(&pg, v, __ATOMIC_RELAXED);
	}
	return v;
}

/*
 * Try MADV_GUARD_INSTALL on a scratch mapping. Older kernels answer
 * EINVAL for the unknown advice; then every guard is an mprotect'ed
 * PROT_NONE range, which splits the stack's VMA in two. At the default
 * vm.max_map_count (65530) that caps a process near 30,000 stacks.
 */
static int probe_guard_mode(void)
{
	int mode = __atomic_load_n(&guard_mode, __ATOMIC_RELAXED);
	size_t pg = page_size();
	void *m;

	if (mode != GUARD_UNKNOWN)
		return mode;
	mode = GUARD_MPROTECT;
	m = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m != MAP_FAILED) {
		if (madvise(m, pg, MADV_GUARD_INSTALL) == 0)
			mode = GUARD_MADVISE;
		(void)munmap(m, 2 * pg);
	}
	__atomic_store_n(&guard_mode, mode, __ATOMIC_RELAXED);
	return mode;
}

void ur__stack_pool_init(struct ur__stack_pool *p, size_t stack_size,
			 unsigned max_cached)
{
	size_t pg = page_size();

	if (stack_size == 0)
		stack_size = STACK_DEFAULT_SIZE;
	p->stack_size = (stack_size + pg - 1) & ~(pg - 1);
	p->max_cached = max_cached;
	p->cached = 0;
	p->free = NULL;
	p->mapped = 0;
	p->guard_madvise = probe_guard_mode() == GUARD_MADVISE;
}

static void stack_unmap(struct ur__stack_pool *p, struct ur__stack *s)
{
#ifdef RINGPROT_HAVE_VALGRIND
	VALGRIND_STACK_DEREGISTER(s->vg_id);
#endif
#if STACK_ASAN
	/* Frames left poisoned here must not outlive the mapping. */
	ASAN_UNPOISON_MEMORY_REGION(s->lo, s->size);
#endif
	(void)munmap(s->map, s->map_len);
	free(s);
	p->mapped--;
}

void ur__stack_pool_fini(struct ur__stack_pool *p)
{
	struct ur__stack *s;

	while ((s = p->free) != NULL) {
		p->free = s->next;
		p->cached--;
		stack_unmap(p, s);
	}
}

static int guard_install(struct ur__stack_pool *p, void *map, size_t len)
{
	if (p->guard_madvise && madvise(map, len, MADV_GUARD_INSTALL) == 0)
		return 0;
	return mprotect(map, len, PROT_NONE) == 0 ? 0 : -errno;
}

static struct ur__stack *stack_map(struct ur__stack_pool *p)
{
	size_t guard = STACK_GUARD_PAGES * page_size();
	struct ur__stack *s = malloc(sizeof(*s));
	void *map;

	if (s == NULL)
		return NULL;
	s->map_len = guard + p->stack_size;
	/* NORESERVE: pages are committed only when the fiber touches them. */
	map = mmap(NULL, s->map_len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1,
		   0);
	if (map == MAP_FAILED)
		goto out_free;
	/*
	 * A huge page would commit 2 MiB across many small stacks. Advise
	 * the whole mapping, not just the stack, so that its VMA keeps one
	 * set of flags and can merge with the neighbouring stacks. Fails
	 * harmlessly without THP.
	 */
	(void)madvise(map, s->map_len, MADV_NOHUGEPAGE);
	if (guard_install(p, map, guard) < 0)
		goto out_unmap;
	s->map = map;
	s->lo = (char *)map + guard;
	s->size = p->stack_size;
	s->next = NULL;
	s->vg_id = 0;
#ifdef RINGPROT_HAVE_VALGRIND
	s->vg_id = VALGRIND_STACK_REGISTER(s->lo, (char *)s->lo + s->size);
#endif
	p->mapped++;
	return s;

out_unmap:
	(void)munmap(map, s->map_len);
out_free:
	free(s);
	return NULL;
}

struct ur__stack *ur__stack_get(struct ur__stack_pool *p)
{
	struct ur__stack *s = p->free;

	if (s == NULL)
		return stack_map(p);
	/* LIFO: the most recently used stack has the warmest page tables. */
	p->free = s->next;
	p->cached--;
	s->next = NULL;
#ifdef RINGPROT_HAVE_VALGRIND
	/*
	 * Memcheck marked the frames the last fiber popped as inaccessible,
	 * but the next one writes its first frame wherever its top lands.
	 * The pages are zero again (MADV_DONTNEED), as after mmap; new
	 * frames are still marked undefined as the stack pointer descends.
	 */
	VALGRIND_MAKE_MEM_DEFINED(s->lo, s->size);
#endif
	return s;
}

void ur__stack_put(struct ur__stack_pool *p, struct ur__stack *s)
{
	if (s == NULL)
		return;
	if (p->cached >= p->max_cached) {
		stack_unmap(p, s);
		return;
	}
	/*
	 * Give the touched pages back before caching, so RSS falls at once,
	 * all but the top page: every fiber's first frames land there, so
	 * dropping it would only cost the next user a page fault (half the
	 * price of a spawn). A cached stack thus keeps one page resident.
	 * The guard is not touched (its markers survive MADV_DONTNEED).
	 */
	if (s->size > page_size())
		(void)madvise(s->lo, s->size - page_size(), MADV_DONTNEED);
#if STACK_ASAN
	ASAN_UNPOISON_MEMORY_REGION(s->lo, s->size);
#endif
	s->next = p->free;
	p->free = s;
	p->cached++;
}
