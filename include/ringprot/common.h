/* SPDX-License-Identifier: BSD-3-Clause */
/* Shared macros of the public headers: visibility and annotations. */
#ifndef RINGPROT_COMMON_H
#define RINGPROT_COMMON_H

/* Symbols are hidden by default; the public API carries RINGPROT_API. */
#define RINGPROT_API __attribute__((visibility("default")))

/* Functions returning -errno: a dropped result is a bug. */
#define RINGPROT_MUST_CHECK __attribute__((warn_unused_result))

/* Marks functions that may suspend the calling fiber (grep for it). */
#define UR_MAY_YIELD

#endif /* RINGPROT_COMMON_H */
