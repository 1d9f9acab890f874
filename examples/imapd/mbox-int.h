/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/imapd: what mbox.c, store.c and idle.c share (internal). */
#ifndef RINGPROT_IMAPD_MBOX_INT_H
#define RINGPROT_IMAPD_MBOX_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "mbox.h"
#include "watch.h"

/* The selected mailbox (s->mbox), or the record IDLE makes without one. */
struct imap_mbox {
	struct md_mbox *mb; /* NULL: IDLE in the authenticated state */
	bool readonly;
	uint32_t *view; /* UIDs by sequence number - 1 */
	uint32_t n, cap;
	bool view_in_store; /* parked: view dropped, the store's list has it */
	uint32_t *pend;	    /* vanished, not yet told */
	uint32_t npend, cappend;
	uint32_t recent_told;
	uint32_t *saved; /* SEARCHRES "$": UIDs, ascending (RFC 5182) */
	uint32_t nsaved;
	/* IDLE (idle.c) */
	struct md_watch watch;
	bool watching;
	char idle_tag[IMAP_TAG_MAX + 1];
	time_t idle_start; /* 0: the IDLE limit passed */
	struct prot_waitevent *keepalive;
};

/* UIDs collected by imap__collect_uid (an imap_each_fn). */
struct uid_list {
	uint32_t *v;
	uint32_t n, cap;
};

/* The session's mailbox record, zeroed (not yet s->mbox); NULL: no
 * memory. Freed with the connection; imap__mbox_free() empties it. */
struct imap_mbox *imap__mbox_new(struct imap_sess *s);
/* s->mbox when a mailbox is selected, else NULL. */
struct imap_mbox *imap__mbox_of(const struct imap_sess *s);
/* Sequence number of uid in the view, 0 if absent. */
uint32_t imap__view_seq(const struct imap_mbox *m, uint32_t uid);
/* Grow *a to hold need entries: 0 or -ENOMEM. */
int imap__grow(uint32_t **a, uint32_t *cap, uint32_t need);
/* MD_F_* of IMAP_FLAG_* bits. */
unsigned imap__md_flags(unsigned imap);
/* "* seq FETCH ([UID n ]FLAGS (...))". */
void imap__print_fetch_flags(struct imap_sess *s, uint32_t seq,
			     const struct md_msg_info *mi, bool with_uid);
/* "* n EXPUNGE" for each of uids in the view (highest first), removed. */
void imap__tell_expunges(struct imap_sess *s, struct imap_mbox *m,
			 const uint32_t *uids, uint32_t n);
/* imap_mbox_sync (expunges told) for a released (parked) handle that
 * stays released (md_mbox_poll). */
int imap__mbox_poll(struct imap_sess *s) UR_MAY_YIELD;
/* Before parking: give back what the view's arrays hold beyond their
 * contents, all of the view if the store's list has the same UIDs. */
void imap__mbox_trim(struct imap_mbox *m);
/* Stop IDLE's folder watch if on. */
void imap__watch_stop(struct imap_sess *s, struct imap_mbox *m);
/* Close and free s->mbox (s->mbox_close). */
void imap__mbox_free(struct imap_sess *s) UR_MAY_YIELD;
/* The NO text for a store error (-errno) on a mailbox. */
const char *imap__mbox_err(int err);
/* No arguments may follow: 0, or -EPROTO / the lexer's error. */
int imap__no_args(struct imap_sess *s) UR_MAY_YIELD;
/* imap_each_fn appending mi->uid to the struct uid_list arg. */
int imap__collect_uid(struct imap_sess *s, uint32_t seq,
		      const struct md_msg_info *mi, void *arg);
/* A sequence set argument: 0, -EPROTO (s->lx.err), -ENOMEM. */
int imap__set_arg(struct imap_sess *s, const struct imap_arg *a,
		  struct imap_seqset *set);

#endif /* RINGPROT_IMAPD_MBOX_INT_H */
