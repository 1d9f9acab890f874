/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/ctx-aarch64: the fiber context switch for the AArch64 AAPCS64. */

/*
 * A suspended context is a stack whose top (ctx->sp) holds, lowest first:
 *
 *	+0    x19 x20 x21 x22 x23 x24 x25 x26 x27 x28
 *	+80   x29 (frame pointer), x30 (return address)
 *	+96   d8 .. d15 (low halves of v8-v15, AAPCS64 6.1.2)
 *	+160  FPCR, 8 bytes unused (keeps sp 16-byte aligned)
 *
 * ctx.c builds the same 176-byte frame for a new context, with x30
 * pointing at ur__ctx_trampoline, the entry function in x19 and its
 * argument in x20.
 */

	.text

/* void ur__ctx_switch(struct ur__ctx *from (x0), struct ur__ctx *to (x1)) */
	.globl	ur__ctx_switch
	.hidden	ur__ctx_switch
	.type	ur__ctx_switch, %function
	.p2align 4
ur__ctx_switch:
	.cfi_startproc
	sub	sp, sp, #176
	.cfi_adjust_cfa_offset 176
	stp	x19, x20, [sp, #0]
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #80]
	.cfi_rel_offset x29, 80
	.cfi_rel_offset x30, 88
	stp	d8, d9, [sp, #96]
	stp	d10, d11, [sp, #112]
	stp	d12, d13, [sp, #128]
	stp	d14, d15, [sp, #144]
	/*
	 * FPCR (rounding mode, flush-to-zero) is per fiber, as MXCSR is on
	 * x86-64. Writing it can be slow on some cores, so only when it
	 * differs.
	 */
	mrs	x9, fpcr
	str	x9, [sp, #160]

	mov	x10, sp
	str	x10, [x0]
	ldr	x10, [x1]
	mov	sp, x10

	ldr	x10, [sp, #160]
	cmp	x9, x10
	b.eq	1f
	msr	fpcr, x10
1:
	ldp	x19, x20, [sp, #0]
	ldp	x21, x22, [sp, #16]
	ldp	x23, x24, [sp, #32]
	ldp	x25, x26, [sp, #48]
	ldp	x27, x28, [sp, #64]
	ldp	x29, x30, [sp, #80]
	ldp	d8, d9, [sp, #96]
	ldp	d10, d11, [sp, #112]
	ldp	d12, d13, [sp, #128]
	ldp	d14, d15, [sp, #144]
	add	sp, sp, #176
	.cfi_adjust_cfa_offset -176
	.cfi_restore x29
	.cfi_restore x30
	ret
	.cfi_endproc
	.size	ur__ctx_switch, .-ur__ctx_switch

/*
 * First code run on a new context: entry (x19) is called with arg (x20)
 * on a 16-byte aligned sp. entry must not return; if it does, trap. The
 * undefined return address ends unwinding at this frame.
 */
	.globl	ur__ctx_trampoline
	.hidden	ur__ctx_trampoline
	.type	ur__ctx_trampoline, %function
	.p2align 4
ur__ctx_trampoline:
	.cfi_startproc
	.cfi_undefined x30
	mov	x0, x20
	blr	x19
	brk	#0x3e8
	.cfi_endproc
	.size	ur__ctx_trampoline, .-ur__ctx_trampoline

	.section .note.GNU-stack,"",%progbits
