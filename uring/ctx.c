/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/ctx: initial frames for the assembly switch, or a ucontext fallback. */
#include "ctx.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if !defined(RINGPROT_CTX_ASM)
#include <ucontext.h>
#endif

/* The 16-byte aligned end of [lo, lo + size), as the ABIs want it. */
static char *stack_top(void *lo, size_t size)
{
	char *end = (char *)lo + size;

	return end - ((uintptr_t)end & 15);
}

#if defined(RINGPROT_CTX_ASM) && defined(__x86_64__)

/* In ctx-x86_64.S: calls r12(r13) and traps if that returns. */
void ur__ctx_trampoline(void);

int ur__ctx_make(struct ur__ctx *ctx, void *stack_lo, size_t size,
		 ur__ctx_entry_fn *entry, void *arg)
{
	char *top = stack_top(stack_lo, size);
	uint64_t *frame;
	uint32_t mxcsr;
	uint16_t fcw;

	/*
	 * 16 bytes of zeroes above the frame stand for the caller of the
	 * trampoline; the frame ends 16-byte aligned, so after the switch's
	 * ret pops the trampoline address rsp % 16 == 0, as a call needs.
	 */
	top -= 16;
	memset(top, 0, 16);
	frame = (uint64_t *)(void *)(top - 64);

	/* A new fiber starts with its creator's FP modes, as a thread does. */
	__asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
	__asm__ volatile("fnstcw %0" : "=m"(fcw));
	frame[0] = (uint64_t)mxcsr | (uint64_t)fcw << 32;
	frame[1] = 0;			       /* r15 */
	frame[2] = 0;			       /* r14 */
	frame[3] = (uint64_t)(uintptr_t)arg;   /* r13 */
	frame[4] = (uint64_t)(uintptr_t)entry; /* r12 */
	frame[5] = 0;			       /* rbx */
	frame[6] = 0; /* rbp: ends frame-pointer walks */
	frame[7] = (uint64_t)(uintptr_t)ur__ctx_trampoline;
	ctx->sp = frame;
	ctx->uc = NULL;
	return 0;
}

void ur__ctx_fini(struct ur__ctx *ctx)
{
	ctx->sp = NULL;
}

const char *ur__ctx_impl(void)
{
	return "asm-x86_64";
}

#elif defined(RINGPROT_CTX_ASM) && defined(__aarch64__)

/* In ctx-aarch64.S: calls x19(x20) and traps if that returns. */
void ur__ctx_trampoline(void);

int ur__ctx_make(struct ur__ctx *ctx, void *stack_lo, size_t size,
		 ur__ctx_entry_fn *entry, void *arg)
{
	char *top = stack_top(stack_lo, size);
	uint64_t *frame;
	uint64_t fpcr;

	top -= 16;
	memset(top, 0, 16);
	frame = (uint64_t *)(void *)(top - 176);
	memset(frame, 0, 176);
	frame[0] = (uint64_t)(uintptr_t)entry; /* x19 */
	frame[1] = (uint64_t)(uintptr_t)arg;   /* x20 */
	frame[10] = 0;			       /* x29: ends frame walks */
	frame[11] = (uint64_t)(uintptr_t)ur__ctx_trampoline; /* x30 */
	__asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
	frame[20] = fpcr;
	ctx->sp = frame;
	ctx->uc = NULL;
	return 0;
}

void ur__ctx_fini(struct ur__ctx *ctx)
{
	ctx->sp = NULL;
}

const char *ur__ctx_impl(void)
{
	return "asm-aarch64";
}

#elif defined(RINGPROT_CTX_ASM)
#error "RINGPROT_CTX_ASM is set but there is no switch for this CPU"
#else

/*
 * The portable fallback: makecontext/swapcontext. It costs a
 * rt_sigprocmask syscall per switch, so it only serves CPUs without an
 * assembly switch.
 *
 * Nothing is allocated: a new context's ucontext_t sits at the top of its
 * own stack, above what makecontext hands the entry function, and a
 * suspended context's ucontext_t lives in the frame of the
 * ur__ctx_switch() call that suspended it (that frame stays alive until
 * the context is resumed). ctx->uc points at whichever is current.
 */
struct uc_start {
	ucontext_t uc;
	ur__ctx_entry_fn *entry;
	void *arg;
};

_Static_assert(_Alignof(struct uc_start) <= 16, "uc_start alignment");

/* makecontext passes int arguments only: the pointer comes in halves. */
static void uc_trampoline(unsigned hi, unsigned lo)
{
	struct uc_start *st =
		(struct uc_start *)(uintptr_t)((uint64_t)hi << 32 | lo);

	st->entry(st->arg);
	abort(); /* entry must never return */
}

int ur__ctx_make(struct ur__ctx *ctx, void *stack_lo, size_t size,
		 ur__ctx_entry_fn *entry, void *arg)
{
	char *top = stack_top(stack_lo, size);
	char *at = top - sizeof(struct uc_start);
	struct uc_start *st;
	uint64_t p;

	at -= (uintptr_t)at & 15; /* also covers _Alignof(struct uc_start) */
	if (at <= (char *)stack_lo + 1024)
		return -ENOMEM;
	st = (struct uc_start *)(void *)at;
	memset(st, 0, sizeof(*st));
	if (getcontext(&st->uc) < 0)
		return -errno;
	st->uc.uc_link = NULL;
	st->uc.uc_stack.ss_sp = stack_lo;
	st->uc.uc_stack.ss_size = (size_t)(at - (char *)stack_lo);
	st->entry = entry;
	st->arg = arg;
	p = (uint64_t)(uintptr_t)st;
	makecontext(&st->uc, (void (*)(void))uc_trampoline, 2,
		    (unsigned)(p >> 32), (unsigned)p);
	ctx->sp = NULL;
	ctx->uc = &st->uc;
	return 0;
}

void ur__ctx_switch(struct ur__ctx *from, struct ur__ctx *to)
{
	ucontext_t here;

	/* ASan's swapcontext interceptor reads uc_stack of the target. */
	here.uc_stack.ss_sp = NULL;
	here.uc_stack.ss_size = 0;
	from->uc = &here;
	if (swapcontext(&here, to->uc) < 0)
		abort();
}

void ur__ctx_fini(struct ur__ctx *ctx)
{
	ctx->sp = NULL;
	ctx->uc = NULL;
}

const char *ur__ctx_impl(void)
{
	return "ucontext";
}

#endif
