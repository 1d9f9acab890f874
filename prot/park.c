/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/park: what the streams of a connection parked without a fiber keep. */
#include "internal.h"

#include <errno.h>
#include <string.h>

/*
 * An idle connection (IMAP IDLE, a pooled LMTP session) need not keep a
 * fiber: its handler returns and the server starts a new one when input
 * arrives, a wait event comes due or a notification wakes it. What stays
 * is the two streams; prot_release makes each of them as small as it can
 * be without losing a byte: only the struct (a write stream is allocated
 * without the read-only tail, internal.h) and what cannot be rebuilt
 * (unread input, the zlib history, the SSL). Everything else comes back
 * on first use, transparently: the write buffer at the next write
 * (prot__wbuf_get), the sender at the next send, read buffers at the
 * next refill, event timers at the next wait. Each side decides what
 * "idle" means for it (fill.c, flush.c, waitevent.c); layers give back
 * what they can (ops->release), best effort.
 */

static void layers_release(struct prot__layer *l)
{
	for (; l != NULL; l = l->next)
		if (l->ops->release != NULL)
			l->ops->release(l);
}

int prot_release(struct protstream *s)
{
	struct prot__stream *ps;
	int ret;

	if (s == NULL)
		return -EINVAL;
	ps = prot__of(s);
	/* Checks first: a refused release changes nothing. */
	if (prot__wait_busy(s))
		return -EBUSY;
	ret = s->write ? prot__flush_release(s) : prot__fill_release(s);
	if (ret < 0)
		return ret;
	layers_release(s->write ? ps->wlayers : ps->rlayers);
	prot__wait_release(s);
	return 0;
}

bool prot_input_pending(const struct protstream *s)
{
	if (s->write)
		return false;
	/* No fd: a read fails at once (EBADF), it never waits. */
	return prot__input_ready(s) || prot__cof(s)->kind == PROT__K_NOFD;
}

uint64_t prot_read_deadline_ns(const struct protstream *s)
{
	return s->write ? 0 : prot__cof(s)->deadline_ns;
}

size_t prot_memory(const struct protstream *s)
{
	const struct prot__stream *ps = prot__cof(s);
	size_t n = sizeof(*ps) + (s->write ? 0 : sizeof(ps->r[0]));

	n += s->write ? prot__flush_memory(s) : prot__fill_memory(s);
	n += prot__wait_memory(s);
	if (s->error != NULL && !ps->error_static)
		n += strlen(s->error) + 1;
	for (const struct prot__layer *l = s->write ? ps->wlayers : ps->rlayers;
	     l != NULL; l = l->next)
		n += l->ops->memory != NULL ? l->ops->memory(l) : sizeof(*l);
	return n;
}
