/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/ctx-x86_64: the fiber context switch for the x86-64 System V ABI. */

/*
 * A suspended context is a stack whose top (ctx->sp) holds, lowest first:
 *
 *	+0   MXCSR (4 bytes), x87 control word (2 bytes), 2 bytes unused
 *	+8   r15, r14, r13, r12, rbx, rbp
 *	+56  return address
 *
 * ctx.c builds the same 64-byte frame for a new context, with the return
 * address pointing at ur__ctx_trampoline, the entry function in r12 and
 * its argument in r13. Everything else the ABI lets a callee clobber, so
 * the compiler has already saved what it needs around the call.
 */

	.text

/* void ur__ctx_switch(struct ur__ctx *from (rdi), struct ur__ctx *to (rsi)) */
	.globl	ur__ctx_switch
	.hidden	ur__ctx_switch
	.type	ur__ctx_switch, @function
	.p2align 4
ur__ctx_switch:
	.cfi_startproc
	pushq	%rbp
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbp, 0
	pushq	%rbx
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbx, 0
	pushq	%r12
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r12, 0
	pushq	%r13
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r13, 0
	pushq	%r14
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r14, 0
	pushq	%r15
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r15, 0
	subq	$8, %rsp
	.cfi_adjust_cfa_offset 8
	/* The FP control words are callee-saved too (SysV ABI 3.2.3). */
	stmxcsr	(%rsp)
	fnstcw	4(%rsp)

	movq	%rsp, (%rdi)
	movq	(%rsi), %rsp

	/* Same frame layout on the other stack: the CFI above still holds. */
	ldmxcsr	(%rsp)
	fldcw	4(%rsp)
	addq	$8, %rsp
	.cfi_adjust_cfa_offset -8
	popq	%r15
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r15
	popq	%r14
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r14
	popq	%r13
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r13
	popq	%r12
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r12
	popq	%rbx
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbx
	popq	%rbp
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbp
	ret
	.cfi_endproc
	.size	ur__ctx_switch, .-ur__ctx_switch

/*
 * First code run on a new context: entry (r12) is called with arg (r13).
 * The stack pointer is 16-byte aligned here, so entry sees the ABI's
 * rsp % 16 == 8 after the call pushes the return address. entry must not
 * return; if it does, trap. The undefined return address ends unwinding
 * (gdb, libunwind, ASan reports) at this frame.
 */
	.globl	ur__ctx_trampoline
	.hidden	ur__ctx_trampoline
	.type	ur__ctx_trampoline, @function
	.p2align 4
ur__ctx_trampoline:
	.cfi_startproc
	.cfi_undefined %rip
	movq	%r13, %rdi
	callq	*%r12
	ud2
	.cfi_endproc
	.size	ur__ctx_trampoline, .-ur__ctx_trampoline

	.section .note.GNU-stack,"",%progbits
