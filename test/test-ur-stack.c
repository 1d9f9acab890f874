/* SPDX-License-Identifier: BSD-3-Clause */
/* test/ur-stack: fiber stacks: guards fault, pooling, RSS release, VMAs. */
#include "t-helpers.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "stack.h"

static size_t pg(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

/* Pages of [lo, lo + len) resident in memory, by mincore(2). */
static size_t resident_pages(void *lo, size_t len)
{
	size_t n = len / pg();
	unsigned char *vec = calloc(n, 1);
	size_t res = 0;

	assert_non_null(vec);
	assert_int_equal(mincore(lo, len, vec), 0);
	for (size_t i = 0; i < n; i++)
		res += vec[i] & 1;
	free(vec);
	return res;
}

static long maps_lines(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	long n = 0;
	int c;

	assert_non_null(f);
	while ((c = getc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

static void test_ur_stack_sizes(void **state)
{
	struct ur__stack_pool p;
	struct ur__stack *s;

	(void)state;
	ur__stack_pool_init(&p, 0, 4);
	assert_int_equal(p.stack_size, 64 * 1024);
	s = ur__stack_get(&p);
	assert_non_null(s);
	assert_int_equal(s->size, 64 * 1024);
	assert_true((uintptr_t)s->lo % pg() == 0);
	assert_true((char *)s->lo > (char *)s->map);
	assert_true((char *)s->lo + s->size == (char *)s->map + s->map_len);
	/* usable from the first to the last byte */
	((volatile char *)s->lo)[0] = 1;
	((volatile char *)s->lo)[s->size - 1] = 1;
	ur__stack_put(&p, s);
	ur__stack_pool_fini(&p);
	assert_int_equal(p.mapped, 0);

	ur__stack_pool_init(&p, 1, 0);
	assert_int_equal(p.stack_size, pg());
	ur__stack_pool_fini(&p);
	fprintf(stderr, "ur-stack: guards by %s\n",
		p.guard_madvise ? "MADV_GUARD_INSTALL" : "mprotect");
}

/* A child writes just below lo (and must die of SIGSEGV) or at lo. */
static int child_write(bool madv_guard, ptrdiff_t off)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct ur__stack_pool p;
		struct ur__stack *s;

		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		ur__stack_pool_init(&p, 0, 0);
		p.guard_madvise = p.guard_madvise && madv_guard;
		s = ur__stack_get(&p);
		if (s == NULL)
			_exit(2);
		((volatile char *)s->lo)[off] = 1;
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status))
		return WTERMSIG(status);
	return WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void test_ur_stack_guard_faults(void **state)
{
	(void)state;
	/* whichever guard the kernel gives us */
	assert_int_equal(child_write(true, 0), 0);
	assert_int_equal(child_write(true, -1), SIGSEGV);
	assert_int_equal(child_write(true, -(ptrdiff_t)pg()), SIGSEGV);
	/* and the mprotect fallback */
	assert_int_equal(child_write(false, 0), 0);
	assert_int_equal(child_write(false, -1), SIGSEGV);
}

static void test_ur_stack_pool_reuses(void **state)
{
	struct ur__stack_pool p;
	struct ur__stack *a, *b, *c, *d;

	(void)state;
	ur__stack_pool_init(&p, 0, 2);
	a = ur__stack_get(&p);
	assert_non_null(a);
	ur__stack_put(&p, a);
	assert_int_equal(p.cached, 1);
	b = ur__stack_get(&p);
	assert_ptr_equal(b, a);
	assert_int_equal(p.mapped, 1);
	assert_int_equal(p.cached, 0);

	c = ur__stack_get(&p);
	d = ur__stack_get(&p);
	assert_non_null(c);
	assert_non_null(d);
	assert_int_equal(p.mapped, 3);
	ur__stack_put(&p, b);
	ur__stack_put(&p, c);
	ur__stack_put(&p, d); /* over max_cached: unmapped */
	assert_int_equal(p.cached, 2);
	assert_int_equal(p.mapped, 2);
	/* LIFO: the last one cached comes back first */
	a = ur__stack_get(&p);
	assert_ptr_equal(a, c);
	ur__stack_put(&p, a);
	ur__stack_pool_fini(&p);
	assert_int_equal(p.mapped, 0);
	assert_int_equal(p.cached, 0);
}

static void test_ur_stack_dontneed_releases(void **state)
{
	struct ur__stack_pool p;
	struct ur__stack *s, *t;
	size_t npages;

	(void)state;
	ur__stack_pool_init(&p, 256 * 1024, 4);
	s = ur__stack_get(&p);
	assert_non_null(s);
	npages = s->size / pg();
	/* lazily committed: nothing resident before use */
	assert_int_equal(resident_pages(s->lo, s->size), 0);
	memset(s->lo, 0xa5, s->size);
	assert_int_equal(resident_pages(s->lo, s->size), npages);
	ur__stack_put(&p, s);
	/* all but the top page, which the next fiber needs at once */
	assert_int_equal(resident_pages(s->lo, s->size), 1);
	assert_int_equal(resident_pages((char *)s->lo + s->size - pg(), pg()),
			 1);
	/* the reused stack reads back zeroes below its top page */
	t = ur__stack_get(&p);
	assert_ptr_equal(t, s);
	for (size_t i = 0; i < t->size - pg(); i += 997)
		assert_int_equal(((unsigned char *)t->lo)[i], 0);
	ur__stack_put(&p, t);
	ur__stack_pool_fini(&p);
}

/*
 * 40,000 stacks: with mprotect guards that is 80,000 VMAs, past the
 * default vm.max_map_count of 65530. MADV_GUARD_INSTALL keeps each
 * stack one VMA, and adjacent stacks with equal flags even merge.
 */
static void test_ur_stack_many_within_map_count(void **state)
{
	enum {
		N = 40000
	};
	struct ur__stack_pool p;
	struct ur__stack **s;
	long before, after;

	(void)state;
	ur__stack_pool_init(&p, 0, 0);
	if (!p.guard_madvise) {
		fprintf(stderr, "ur-stack: no MADV_GUARD_INSTALL (kernel "
				"< 6.13): 40,000 stacks not attempted\n");
		return;
	}
	s = calloc(N, sizeof(*s));
	assert_non_null(s);
	before = maps_lines();
	for (int i = 0; i < N; i++) {
		s[i] = ur__stack_get(&p);
		assert_non_null(s[i]);
		/* touch the top page, as a fiber's first frame does */
		((volatile char *)s[i]->lo)[s[i]->size - 64] = 1;
	}
	after = maps_lines();
	fprintf(stderr, "ur-stack: %d stacks added %ld mappings\n", N,
		after - before);
	assert_int_equal(p.mapped, N);
	assert_true(after - before < N / 4);
	for (int i = 0; i < N; i++)
		ur__stack_put(&p, s[i]);
	assert_int_equal(p.mapped, 0);
	free(s);
	ur__stack_pool_fini(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ur_stack_sizes),
		cmocka_unit_test(test_ur_stack_guard_faults),
		cmocka_unit_test(test_ur_stack_pool_reuses),
		cmocka_unit_test(test_ur_stack_dontneed_releases),
		cmocka_unit_test(test_ur_stack_many_within_map_count),
	};

	return cmocka_run_group_tests_name("ur-stack", tests, NULL, NULL);
}
