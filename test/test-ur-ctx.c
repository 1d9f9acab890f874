/* SPDX-License-Identifier: BSD-3-Clause */
/* test/ur-ctx: the bare switch: ping-pong, registers, FP modes, stacks. */
#include "t-helpers.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif
#ifdef RINGPROT_HAVE_VALGRIND
#include <valgrind/valgrind.h>
#endif

#include "ctx.h"
#include "stack.h"

/*
 * t_regs_switch(from, to, seed): load seed+1, seed+2, ... into every
 * callee-saved register, switch, and on return give back a non-zero mask
 * if any of them changed. Both sides run it with different seeds, so each
 * switch must restore the other side's values exactly. t_sp_at_entry()
 * returns the stack pointer as the callee sees it on entry.
 */
long t_regs_switch(struct ur__ctx *from, struct ur__ctx *to, long seed);
unsigned long t_sp_at_entry(void);

#if defined(__x86_64__)
#define T_HAVE_REGS_ASM 1
#define T_SP_ENTRY_MOD	8 /* rsp % 16 after the call pushed the return */
__asm__(".text\n"
	".globl t_regs_switch\n"
	".type t_regs_switch, @function\n"
	"t_regs_switch:\n"
	"	pushq %rbx\n"
	"	pushq %rbp\n"
	"	pushq %r12\n"
	"	pushq %r13\n"
	"	pushq %r14\n"
	"	pushq %r15\n"
	"	pushq %rdx\n" /* seed, keeps rsp 16-aligned for the call */
	"	leaq 1(%rdx), %rbx\n"
	"	leaq 2(%rdx), %rbp\n"
	"	leaq 3(%rdx), %r12\n"
	"	leaq 4(%rdx), %r13\n"
	"	leaq 5(%rdx), %r14\n"
	"	leaq 6(%rdx), %r15\n"
	"	call ur__ctx_switch@PLT\n"
	"	popq %rdx\n"
	"	xorl %eax, %eax\n"
	"	leaq 1(%rdx), %rcx\n"
	"	xorq %rbx, %rcx\n"
	"	orq %rcx, %rax\n"
	"	leaq 2(%rdx), %rcx\n"
	"	xorq %rbp, %rcx\n"
	"	orq %rcx, %rax\n"
	"	leaq 3(%rdx), %rcx\n"
	"	xorq %r12, %rcx\n"
	"	orq %rcx, %rax\n"
	"	leaq 4(%rdx), %rcx\n"
	"	xorq %r13, %rcx\n"
	"	orq %rcx, %rax\n"
	"	leaq 5(%rdx), %rcx\n"
	"	xorq %r14, %rcx\n"
	"	orq %rcx, %rax\n"
	"	leaq 6(%rdx), %rcx\n"
	"	xorq %r15, %rcx\n"
	"	orq %rcx, %rax\n"
	"	popq %r15\n"
	"	popq %r14\n"
	"	popq %r13\n"
	"	popq %r12\n"
	"	popq %rbp\n"
	"	popq %rbx\n"
	"	ret\n"
	".size t_regs_switch, .-t_regs_switch\n"
	".globl t_sp_at_entry\n"
	".type t_sp_at_entry, @function\n"
	"t_sp_at_entry:\n"
	"	movq %rsp, %rax\n"
	"	ret\n"
	".size t_sp_at_entry, .-t_sp_at_entry\n");
#elif defined(__aarch64__)
#define T_HAVE_REGS_ASM 1
#define T_SP_ENTRY_MOD	0
/* Checks x19-x28 and d8-d15 (x29/x30 are checked by returning at all). */
__asm__(".text\n"
	".globl t_regs_switch\n"
	".type t_regs_switch, %function\n"
	"t_regs_switch:\n"
	"	stp x29, x30, [sp, #-176]!\n"
	"	mov x29, sp\n"
	"	stp x19, x20, [sp, #16]\n"
	"	stp x21, x22, [sp, #32]\n"
	"	stp x23, x24, [sp, #48]\n"
	"	stp x25, x26, [sp, #64]\n"
	"	stp x27, x28, [sp, #80]\n"
	"	stp d8, d9, [sp, #96]\n"
	"	stp d10, d11, [sp, #112]\n"
	"	stp d12, d13, [sp, #128]\n"
	"	stp d14, d15, [sp, #144]\n"
	"	str x2, [sp, #160]\n"
	"	add x19, x2, #1\n"
	"	add x20, x2, #2\n"
	"	add x21, x2, #3\n"
	"	add x22, x2, #4\n"
	"	add x23, x2, #5\n"
	"	add x24, x2, #6\n"
	"	add x25, x2, #7\n"
	"	add x26, x2, #8\n"
	"	add x27, x2, #9\n"
	"	add x28, x2, #10\n"
	"	fmov d8, x19\n"
	"	fmov d9, x20\n"
	"	fmov d10, x21\n"
	"	fmov d11, x22\n"
	"	fmov d12, x23\n"
	"	fmov d13, x24\n"
	"	fmov d14, x25\n"
	"	fmov d15, x26\n"
	"	bl ur__ctx_switch\n"
	"	ldr x2, [sp, #160]\n"
	"	mov x0, #0\n"
	"	add x9, x2, #1\n"
	"	eor x9, x9, x19\n"
	"	orr x0, x0, x9\n"
	"	add x9, x2, #2\n"
	"	eor x9, x9, x20\n"
	"	orr x0, x0, x9\n"
	"	add x9, x2, #3\n"
	"	eor x9, x9, x21\n"
	"	orr x0, x0, x9\n"
	"	add x9, x2, #4\n"
	"	eor x9, x9, x22\n"
	"	orr x0, x0, x9\n"
	"	add x9, x2, #5\n"
	"	eor x9, x9, x23\n"
	"	orr x0, x0, x9\n"
	"	add x9, x2, #6\n"
	"	eor x9, x9, x24\n"
	"	orr x0, x0, x9\n"
	"	add x9, x2, #7\n"
	"	eor x9, x9, x25\n"
	"	orr x0, x0, x9\n"
	"	add x9, x2, #8\n"
	"	eor x9, x9, x26\n"
	"	orr x0, x0, x9\n"
	"	add x9, x2, #9\n"
	"	eor x9, x9, x27\n"
	"	orr x0, x0, x9\n"
	"	add x9, x2, #10\n"
	"	eor x9, x9, x28\n"
	"	orr x0, x0, x9\n"
	"	fmov x10, d8\n"
	"	add x9, x2, #1\n"
	"	eor x9, x9, x10\n"
	"	orr x0, x0, x9\n"
	"	fmov x10, d9\n"
	"	add x9, x2, #2\n"
	"	eor x9, x9, x10\n"
	"	orr x0, x0, x9\n"
	"	fmov x10, d10\n"
	"	add x9, x2, #3\n"
	"	eor x9, x9, x10\n"
	"	orr x0, x0, x9\n"
	"	fmov x10, d11\n"
	"	add x9, x2, #4\n"
	"	eor x9, x9, x10\n"
	"	orr x0, x0, x9\n"
	"	fmov x10, d12\n"
	"	add x9, x2, #5\n"
	"	eor x9, x9, x10\n"
	"	orr x0, x0, x9\n"
	"	fmov x10, d13\n"
	"	add x9, x2, #6\n"
	"	eor x9, x9, x10\n"
	"	orr x0, x0, x9\n"
	"	fmov x10, d14\n"
	"	add x9, x2, #7\n"
	"	eor x9, x9, x10\n"
	"	orr x0, x0, x9\n"
	"	fmov x10, d15\n"
	"	add x9, x2, #8\n"
	"	eor x9, x9, x10\n"
	"	orr x0, x0, x9\n"
	"	ldp x19, x20, [sp, #16]\n"
	"	ldp x21, x22, [sp, #32]\n"
	"	ldp x23, x24, [sp, #48]\n"
	"	ldp x25, x26, [sp, #64]\n"
	"	ldp x27, x28, [sp, #80]\n"
	"	ldp d8, d9, [sp, #96]\n"
	"	ldp d10, d11, [sp, #112]\n"
	"	ldp d12, d13, [sp, #128]\n"
	"	ldp d14, d15, [sp, #144]\n"
	"	ldp x29, x30, [sp], #176\n"
	"	ret\n"
	".size t_regs_switch, .-t_regs_switch\n"
	".globl t_sp_at_entry\n"
	".type t_sp_at_entry, %function\n"
	"t_sp_at_entry:\n"
	"	mov x0, sp\n"
	"	ret\n"
	".size t_sp_at_entry, .-t_sp_at_entry\n");
#else
#define T_HAVE_REGS_ASM 0
#endif

/* One coroutine on a pooled stack, switched to and from main. */
struct co {
	struct ur__stack_pool pool;
	struct ur__stack *stack;
	struct ur__ctx main_ctx;
	struct ur__ctx ctx;
	long n;
	long bad;
	char log[64];
	size_t log_len;
};

static void co_setup(struct co *c, size_t stack_size, ur__ctx_entry_fn *fn)
{
	memset(c, 0, sizeof(*c));
	ur__stack_pool_init(&c->pool, stack_size, 0);
	c->stack = ur__stack_get(&c->pool);
	assert_non_null(c->stack);
	assert_int_equal(
		ur__ctx_make(&c->ctx, c->stack->lo, c->stack->size, fn, c), 0);
}

static void co_teardown(struct co *c)
{
	ur__ctx_fini(&c->ctx);
	ur__stack_put(&c->pool, c->stack);
	ur__stack_pool_fini(&c->pool);
	assert_int_equal(c->pool.mapped, 0);
}

static void co_log(struct co *c, char ch)
{
	if (c->log_len < sizeof(c->log) - 1)
		c->log[c->log_len++] = ch;
}

static void pingpong_entry(void *arg)
{
	struct co *c = arg;

	for (;;) {
		co_log(c, 'c');
		c->n++;
		ur__ctx_switch(&c->ctx, &c->main_ctx);
	}
}

static void test_ur_ctx_ping_pong(void **state)
{
	struct co c;

	(void)state;
	co_setup(&c, 0, pingpong_entry);
	for (long i = 0; i < 100000; i++) {
		if (i < 5)
			co_log(&c, 'm');
		ur__ctx_switch(&c.main_ctx, &c.ctx);
		assert_int_equal(c.n, i + 1);
	}
	c.log[10] = '\0';
	assert_string_equal(c.log, "mcmcmcmcmc");
	co_teardown(&c);
	assert_non_null(ur__ctx_impl());
	fprintf(stderr, "ur-ctx: switch implementation %s\n", ur__ctx_impl());
}

/* Three contexts in a ring: each resumes the next, not its resumer. */
struct ring3 {
	struct ur__ctx main_ctx;
	struct ur__ctx ctx[3];
	char log[32];
	int len;
};

static struct ring3 *ring3_cur;

static void ring3_entry(void *arg)
{
	int id = (int)(intptr_t)arg;
	struct ring3 *r = ring3_cur;

	for (;;) {
		r->log[r->len++] = (char)('a' + id);
		if (id == 2)
			ur__ctx_switch(&r->ctx[2], &r->main_ctx);
		else
			ur__ctx_switch(&r->ctx[id], &r->ctx[id + 1]);
	}
}

static void test_ur_ctx_ring_of_three(void **state)
{
	struct ur__stack_pool pool;
	struct ur__stack *s[3];
	struct ring3 r;

	(void)state;
	memset(&r, 0, sizeof(r));
	ring3_cur = &r;
	ur__stack_pool_init(&pool, 0, 0);
	for (int i = 0; i < 3; i++) {
		s[i] = ur__stack_get(&pool);
		assert_non_null(s[i]);
		assert_int_equal(ur__ctx_make(&r.ctx[i], s[i]->lo, s[i]->size,
					      ring3_entry, (void *)(intptr_t)i),
				 0);
	}
	ur__ctx_switch(&r.main_ctx, &r.ctx[0]);
	ur__ctx_switch(&r.main_ctx, &r.ctx[0]);
	r.log[r.len] = '\0';
	assert_string_equal(r.log, "abcabc");
	for (int i = 0; i < 3; i++) {
		ur__ctx_fini(&r.ctx[i]);
		ur__stack_put(&pool, s[i]);
	}
	ur__stack_pool_fini(&pool);
}

#if T_HAVE_REGS_ASM
static void regs_entry(void *arg)
{
	struct co *c = arg;

	for (;;) {
		if (t_regs_switch(&c->ctx, &c->main_ctx,
				  0x5a5a5a5a00000000L + c->n * 16) != 0)
			c->bad++;
		c->n++;
	}
}

static void test_ur_ctx_callee_saved(void **state)
{
	struct co c;

	(void)state;
	co_setup(&c, 0, regs_entry);
	for (long i = 0; i < 1000; i++)
		assert_int_equal(t_regs_switch(&c.main_ctx, &c.ctx,
					       0x1234000000000000L + i * 32),
				 0);
	assert_int_equal(c.bad, 0);
	assert_true(c.n >= 999);
	co_teardown(&c);
}
#else
static void test_ur_ctx_callee_saved(void **state)
{
	(void)state;
	fprintf(stderr, "ur-ctx: no register check for this CPU\n");
}
#endif

/*
 * FP modes are per context: the coroutine runs with round-toward-zero
 * (and flush-to-zero) while main keeps round-to-nearest, across switches.
 */
#if defined(__x86_64__)
struct fpmode {
	unsigned mxcsr;
	unsigned short fcw;
};

static struct fpmode fp_get(void)
{
	struct fpmode m;

	m.mxcsr = _mm_getcsr() & 0xffc0; /* control bits, not the flags */
	__asm__ volatile("fnstcw %0" : "=m"(m.fcw));
	return m;
}

static void fp_set_odd(void)
{
	unsigned short fcw = 0x0e7f; /* round toward zero */

	_mm_setcsr((_mm_getcsr() & ~0x6000u) | 0x6000u | 0x8000u);
	__asm__ volatile("fldcw %0" : : "m"(fcw));
}

static bool fp_is_odd(struct fpmode m)
{
	return (m.mxcsr & 0xe000) == 0xe000 && (m.fcw & 0x0c00) == 0x0c00;
}

static bool fp_is_default(struct fpmode m)
{
	return (m.mxcsr & 0xe000) == 0 && (m.fcw & 0x0c00) == 0;
}
#define T_HAVE_FP 1
#elif defined(__aarch64__)
struct fpmode {
	unsigned long fpcr;
};

static struct fpmode fp_get(void)
{
	struct fpmode m;

	__asm__ volatile("mrs %0, fpcr" : "=r"(m.fpcr));
	return m;
}

static void fp_set_odd(void)
{
	unsigned long v;

	__asm__ volatile("mrs %0, fpcr" : "=r"(v));
	v |= 3ul << 22 | 1ul << 24; /* RMode toward zero, FZ */
	__asm__ volatile("msr fpcr, %0" : : "r"(v));
}

static bool fp_is_odd(struct fpmode m)
{
	return ((m.fpcr >> 22) & 3) == 3 && (m.fpcr >> 24 & 1) == 1;
}

static bool fp_is_default(struct fpmode m)
{
	return ((m.fpcr >> 22) & 3) == 0 && (m.fpcr >> 24 & 1) == 0;
}
#define T_HAVE_FP 1
#else
#define T_HAVE_FP 0
#endif

#if T_HAVE_FP
static void fp_entry(void *arg)
{
	struct co *c = arg;

	if (!fp_is_default(fp_get()))
		c->bad++; /* a new context starts with its creator's modes */
	fp_set_odd();
	for (;;) {
		ur__ctx_switch(&c->ctx, &c->main_ctx);
		if (!fp_is_odd(fp_get()))
			c->bad++;
		c->n++;
	}
}

static void test_ur_ctx_fp_control(void **state)
{
	struct co c;

	(void)state;
#ifdef RINGPROT_HAVE_VALGRIND
	if (RUNNING_ON_VALGRIND) {
		/* it emulates round-to-nearest only, whatever MXCSR says */
		fprintf(stderr,
			"ur-ctx: FP modes not checked under valgrind\n");
		return;
	}
#endif
	assert_true(fp_is_default(fp_get()));
	co_setup(&c, 0, fp_entry);
	for (int i = 0; i < 10; i++) {
		ur__ctx_switch(&c.main_ctx, &c.ctx);
		assert_true(fp_is_default(fp_get()));
	}
	assert_int_equal(c.bad, 0);
	assert_int_equal(c.n, 9);
	co_teardown(&c);
}
#else
static void test_ur_ctx_fp_control(void **state)
{
	(void)state;
	fprintf(stderr, "ur-ctx: no FP mode check for this CPU\n");
}
#endif

/* Recurse until the frames come within 8 KiB of the stack's low end. */
static const char *deep_floor;

__attribute__((noinline)) static long deep(long depth, long *max_depth)
{
	volatile char pad[200];
	long r;

	memset((char *)pad, (int)(depth & 0x7f), sizeof(pad));
	/* the frame, not pad: ASan may keep pad on a fake stack */
	if ((const char *)__builtin_frame_address(0) <= deep_floor) {
		*max_depth = depth;
		return pad[depth % 200];
	}
	r = deep(depth + 1, max_depth);
	return r + pad[(depth * 7) % 200];
}

static void deep_entry(void *arg)
{
	struct co *c = arg;
	long want = 0;
	long got;

	for (;;) {
		long max = 0;

		got = deep(0, &max);
		c->n = max;
		/* recompute the expected sum in plain C */
		want = max & 0x7f;
		for (long d = max - 1; d >= 0; d--)
			want += d & 0x7f;
		c->bad = got != want;
		ur__ctx_switch(&c->ctx, &c->main_ctx);
	}
}

static void test_ur_ctx_deep_recursion(void **state)
{
	struct co c;

	(void)state;
	co_setup(&c, 256 * 1024, deep_entry);
	deep_floor = (const char *)c.stack->lo + 8192;
	ur__ctx_switch(&c.main_ctx, &c.ctx);
	assert_int_equal(c.bad, 0);
	assert_true(c.n > 100);
	fprintf(stderr, "ur-ctx: recursed %ld frames into %zu KiB\n", c.n,
		c.stack->size / 1024);
	/* again, on the same stack, now with its pages present */
	ur__ctx_switch(&c.main_ctx, &c.ctx);
	assert_int_equal(c.bad, 0);
	co_teardown(&c);
}

/*
 * The ABI's alignment on entry to every function of the new context, and
 * aligned SSE/NEON locals and printf's varargs (movaps on x86-64) work.
 */
__attribute__((noinline)) static int aligned_work(struct co *c)
{
	_Alignas(16) volatile float v[4] = {1.5f, 2.5f, 3.5f, 4.5f};
	_Alignas(32) volatile double d[4] = {0.25, 0.5, 0.75, 1.0};
	char buf[64];
	int bad = 0;

#if T_HAVE_REGS_ASM
	if (t_sp_at_entry() % 16 != T_SP_ENTRY_MOD)
		bad |= 1;
#endif
	if ((uintptr_t)v % 16 != 0 || (uintptr_t)d % 32 != 0)
		bad |= 2;
#if defined(__x86_64__)
	{
		__m128 x = _mm_load_ps((const float *)v);

		x = _mm_add_ps(x, x);
		_mm_store_ps((float *)v, x);
		if (v[3] != 9.0f)
			bad |= 4;
	}
#endif
	snprintf(buf, sizeof(buf), "%.2f %.2f %g", (double)v[0], d[1],
		 (double)v[2] + d[3]);
	if (strcmp(buf, (v[0] == 3.0f) ? "3.00 0.50 8" : "1.50 0.50 4.5") != 0)
		bad |= 8;
	(void)c;
	return bad;
}

static void align_entry(void *arg)
{
	struct co *c = arg;

#if T_HAVE_REGS_ASM
	if (t_sp_at_entry() % 16 != T_SP_ENTRY_MOD)
		c->bad |= 16;
#endif
	for (;;) {
		c->bad |= aligned_work(c);
		c->n++;
		ur__ctx_switch(&c->ctx, &c->main_ctx);
	}
}

static void test_ur_ctx_alignment(void **state)
{
	struct co c;

	(void)state;
	co_setup(&c, 0, align_entry);
	for (int i = 0; i < 3; i++)
		ur__ctx_switch(&c.main_ctx, &c.ctx);
	assert_int_equal(c.bad, 0);
	assert_int_equal(c.n, 3);
	co_teardown(&c);

	/* odd stack sizes and bases are aligned down by ur__ctx_make */
	for (size_t skew = 8; skew < 64; skew += 8) {
		struct co c2;

		co_setup(&c2, 0, align_entry);
		assert_int_equal(ur__ctx_make(&c2.ctx, c2.stack->lo,
					      c2.stack->size - skew,
					      align_entry, &c2),
				 0);
		ur__ctx_switch(&c2.main_ctx, &c2.ctx);
		assert_int_equal(c2.bad, 0);
		co_teardown(&c2);
	}
}

static void returning_entry(void *arg)
{
	(void)arg;
}

/* An entry function that returns must trap, not run off the stack. */
static void test_ur_ctx_return_traps(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct co c;

		/* cmocka's handlers would catch the trap in the child */
		signal(SIGILL, SIG_DFL);
		signal(SIGTRAP, SIG_DFL);
		signal(SIGABRT, SIG_DFL);
		signal(SIGSEGV, SIG_DFL);
		memset(&c, 0, sizeof(c));
		ur__stack_pool_init(&c.pool, 0, 0);
		c.stack = ur__stack_get(&c.pool);
		if (c.stack == NULL ||
		    ur__ctx_make(&c.ctx, c.stack->lo, c.stack->size,
				 returning_entry, NULL) < 0)
			_exit(2);
		ur__ctx_switch(&c.main_ctx, &c.ctx);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_true(WTERMSIG(status) == SIGILL || WTERMSIG(status) == SIGTRAP ||
		    WTERMSIG(status) == SIGABRT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ur_ctx_ping_pong),
		cmocka_unit_test(test_ur_ctx_ring_of_three),
		cmocka_unit_test(test_ur_ctx_callee_saved),
		cmocka_unit_test(test_ur_ctx_fp_control),
		cmocka_unit_test(test_ur_ctx_deep_recursion),
		cmocka_unit_test(test_ur_ctx_alignment),
		cmocka_unit_test(test_ur_ctx_return_traps),
	};

	return cmocka_run_group_tests_name("ur-ctx", tests, NULL, NULL);
}
