/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/maildir: what mailbox.c needs of the store's internals. */
#ifndef RINGPROT_EXAMPLES_MD_INTERNAL_H
#define RINGPROT_EXAMPLES_MD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <ringprot/common.h>

struct md_store;

/* The store's users/ directory (owned by the store: never close it). */
int md__users_fd(const struct md_store *st);
/* Was the store opened with no_fsync (benchmarks)? */
bool md__no_fsync(const struct md_store *st);
/* Was the store opened with save_crlf? */
bool md__save_crlf(const struct md_store *st);

/*
 * save_crlf's conversion: out(arg, ...) receives p[0..n) with a CR put
 * before every LF that has none; prev is the byte stored before p (0 at
 * the start). Returns 0 or the first error out returned.
 */
typedef int md__out_fn(void *arg, const char *p, size_t n);
int md__crlf_out(const char *p, size_t n, char prev, md__out_fn *out,
		 void *arg) RINGPROT_MUST_CHECK;

/* A fresh unique base name "time.M<usec>P<pid>Q<n>.<host>" (the same
 * counter as deliveries: unique across the process). size >= 200. */
void md__uniq_name(const struct md_store *st, char *out, size_t size);
/*
 * Drop user's folder (NULL: INBOX) from the delivery cache, so that the
 * next delivery opens it by name again: after a folder was renamed or
 * removed. Deliveries already holding it finish into the old directory.
 */
void md__folder_forget(struct md_store *st, const char *user,
		       const char *folder);

#endif /* RINGPROT_EXAMPLES_MD_INTERNAL_H */
