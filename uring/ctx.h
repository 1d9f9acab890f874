/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/ctx: the bare machine context switch under fibers. */
#ifndef RINGPROT_UR_CTX_H
#define RINGPROT_UR_CTX_H

#include <stddef.h>

/*
 * A saved context. With the assembly switch (x86-64, aarch64) it is the
 * stack pointer of a suspended stack holding the callee-saved registers;
 * the ucontext fallback keeps a ucontext_t behind uc.
 */
struct ur__ctx {
	void *sp;
	void *uc;
};

typedef void ur__ctx_entry_fn(void *arg);

/*
 * Prepare ctx to run entry(arg) on the stack [stack_lo, stack_lo + size)
 * the first time it is switched to. entry must never return.
 * Returns 0 or -ENOMEM (fallback only).
 */
int ur__ctx_make(struct ur__ctx *ctx, void *stack_lo, size_t size,
		 ur__ctx_entry_fn *entry, void *arg);

/* Save the current context in from and resume to. */
void ur__ctx_switch(struct ur__ctx *from, struct ur__ctx *to);

/* Release what ur__ctx_make allocated (fallback only). */
void ur__ctx_fini(struct ur__ctx *ctx);

/* "asm-x86_64", "asm-aarch64" or "ucontext". */
const char *ur__ctx_impl(void);

#endif /* RINGPROT_UR_CTX_H */
