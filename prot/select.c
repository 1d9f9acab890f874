/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/select: protgroups and prot_select, waiting through the ring. */
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

/*
 * prot_select (spec 2.14) with these deliberate differences from Cyrus:
 *  - Readiness is prot__input_ready(): bytes in the window, held in the
 *    source region, or inside a layer (zlib, TLS) count, so a member with
 *    decodable input never sleeps (spec 6 item 12, 5.6 #64).
 *  - Due wait events of every member run inside prot_select, on the
 *    calling fiber, and the wait goes on afterwards; Cyrus never runs
 *    them here and reports the stream instead, which ends an IMAP IDLE
 *    loop and then blocks on that one stream (spec 4.1 hazard, 6 item 4).
 *    A member is reported ready at its read deadline, as in Cyrus, so
 *    the next read fails with "idle for too long"; every member whose
 *    deadline passed is reported, not only the earliest.
 *  - *extra_read_flag is always set. When some member is ready at once,
 *    the extra fd gets a zero-timeout poll(2) probe (plain fds; a direct
 *    descriptor reads as not ready there) and counts if readable; Cyrus
 *    leaves the flag stale and ignores the fd (spec 6 item 15).
 *  - A NULL group is an empty group (Cyrus crashes); with no member, no
 *    extra fd and no timeout nothing could end the wait: -1/EINVAL.
 *  - No FD_SETSIZE limit: one poll op per member, any fd number, direct
 *    descriptors included. Signals never interrupt the wait (no EINTR).
 * Members without an fd (map, callback streams) never wait on the ring
 * and are always reported ready, as prot__input_ready() says.
 * A callback run here must not free a member of the group being waited.
 */

/*
 * A group: members in insertion order, no duplicates. Deliberately not
 * Cyrus's layout; the type is opaque in prot.h.
 */
struct protgroup {
	size_t cap;
	size_t n;
	struct protstream **items;
};

/* The type, not an expression: bugprone-sizeof-expression stays quiet. */
#define ITEM_SIZE sizeof(struct protstream *)

struct protgroup *protgroup_new(size_t size)
{
	struct protgroup *g = calloc(1, sizeof(*g));

	if (g == NULL)
		return NULL;
	g->cap = size != 0 ? size : PROTGROUP_SIZE_DEFAULT;
	g->items = calloc(g->cap, ITEM_SIZE);
	if (g->items == NULL) {
		free(g);
		return NULL;
	}
	return g;
}

/* Cyrus copies the slots but leaves the count at 0 (spec 6 item 15). */
struct protgroup *protgroup_copy(struct protgroup *src)
{
	struct protgroup *g;

	if (src == NULL)
		return NULL;
	g = protgroup_new(src->cap);
	if (g == NULL)
		return NULL;
	memcpy(g->items, src->items, src->n * ITEM_SIZE);
	g->n = src->n;
	return g;
}

void protgroup_reset(struct protgroup *group)
{
	if (group == NULL)
		return;
	memset(group->items, 0, group->cap * ITEM_SIZE);
	group->n = 0;
}

void protgroup_free(struct protgroup *group)
{
	if (group == NULL)
		return;
	free(group->items);
	free(group);
}

static bool group_has(const struct protgroup *g, const struct protstream *s)
{
	for (size_t i = 0; i < g->n; i++)
		if (g->items[i] == s)
			return true;
	return false;
}

/* Out of memory leaves the group unchanged, errno ENOMEM (Cyrus exits). */
void protgroup_insert(struct protgroup *group, struct protstream *item)
{
	if (group == NULL || item == NULL || group_has(group, item))
		return;
	if (group->n == group->cap) {
		size_t cap = group->cap * 2;
		struct protstream **p;

		p = realloc(group->items, cap * ITEM_SIZE);
		if (p == NULL) {
			errno = ENOMEM;
			return;
		}
		memset(p + group->cap, 0, group->cap * ITEM_SIZE);
		group->items = p;
		group->cap = cap;
	}
	group->items[group->n++] = item;
}

/* An absent item is ignored (Cyrus syslogs; the library never logs). */
void protgroup_delete(struct protgroup *group, struct protstream *item)
{
	if (group == NULL)
		return;
	for (size_t i = 0; i < group->n; i++) {
		if (group->items[i] != item)
			continue;
		memmove(group->items + i, group->items + i + 1,
			(group->n - i - 1) * ITEM_SIZE);
		group->items[--group->n] = NULL;
		return;
	}
}

struct protstream *protgroup_getelement(struct protgroup *group, size_t element)
{
	if (group == NULL || element >= group->n)
		return NULL;
	return group->items[element];
}

/*
 * One prot_select call. Heap storage, never the fiber's stack: the poll
 * ops stay the kernel's until their CQEs, and a cancelled fiber leaves
 * the block to its last completion to free (abandoned).
 */
struct sel_member {
	struct protstream *s;
	struct ur_op op;
	bool polled;
	bool ready;
};

struct sel {
	struct ur_loop *loop;
	struct ur_fiber *fiber; /* NULL: outside any fiber */
	struct ur_waiter w;	/* parks fiber, or drives the loop */
	bool abandoned;
	bool waited;	  /* the polls went out */
	unsigned pending; /* poll ops in flight */
	struct ur_timer timer;
	uint64_t until_ns; /* the caller's timeout, CLOCK_MONOTONIC; 0 none */
	int extra_fd;
	bool extra_polled;
	struct ur_op extra_op;
	size_t n;
	struct sel_member m[];
};

static void sel_wake(struct sel *sl)
{
	ur_waiter_wake(&sl->w);
}

static void sel_op_done(struct ur_op *op)
{
	struct sel *sl = op->data;

	sl->pending--;
	if (sl->abandoned) {
		if (sl->pending == 0)
			free(sl);
		return;
	}
	sel_wake(sl);
}

static void sel_timer_fired(struct ur_timer *t, void *arg)
{
	(void)t;
	sel_wake(arg);
}

static int sel_poll(struct sel *sl, struct ur_op *op, int fd)
{
	int ret;

	ur_op_init(op, sel_op_done, sl);
	ret = ur_poll_start(sl->loop, op, fd, POLLIN);
	if (ret == 0)
		sl->pending++;
	return ret;
}

/* One poll op per member with an fd, and one for the extra fd. */
static int sel_submit(struct sel *sl)
{
	int ret;

	sl->waited = true;
	for (size_t i = 0; i < sl->n; i++) {
		struct sel_member *m = &sl->m[i];

		if (m->s->fd < 0)
			continue;
		ret = sel_poll(sl, &m->op, m->s->fd);
		if (ret < 0)
			return ret;
		m->polled = true;
	}
	if (sl->extra_fd >= 0) {
		ret = sel_poll(sl, &sl->extra_op, sl->extra_fd);
		if (ret < 0)
			return ret;
		sl->extra_polled = true;
	}
	return 0;
}

/* A completed poll: any revents is readable (as select counts HUP). */
static bool poll_says_ready(const struct ur_op *op)
{
	return !ur_op_is_busy(op) && op->res != -ECANCELED && op->res != 0;
}

static bool read_deadline_passed(const struct protstream *s, uint64_t now)
{
	uint64_t d = prot__cof(s)->deadline_ns;

	return !s->dontblock && d != 0 && now >= d;
}

/* Mark ready members; returns how many. */
static size_t sel_scan(struct sel *sl)
{
	uint64_t now = ur_now_ns(CLOCK_MONOTONIC);
	size_t nready = 0;

	for (size_t i = 0; i < sl->n; i++) {
		struct sel_member *m = &sl->m[i];

		m->ready = prot__input_ready(m->s) || m->s->fd < 0 ||
			   read_deadline_passed(m->s, now) ||
			   (m->polled && poll_says_ready(&m->op));
		if (m->ready)
			nready++;
	}
	return nready;
}

/*
 * The earliest time to wake: the caller's timeout and each blocking
 * member's deadline (read deadline or event mark; non-blocking members
 * are ignored, as in Cyrus). *due: some member's event mark has passed;
 * the caller runs events again, and if that mark still cannot run (a
 * callback of that stream is itself in prot_select) only the member's
 * read deadline counts, or the wait would spin. Returns 0 for none.
 */
static uint64_t sel_wake_at(const struct sel *sl, uint64_t now,
			    uint64_t *member_out, bool *due)
{
	uint64_t best = sl->until_ns;
	uint64_t member = 0;

	*due = false;
	for (size_t i = 0; i < sl->n; i++) {
		const struct protstream *s = sl->m[i].s;
		uint64_t d;

		if (s->dontblock)
			continue;
		d = prot__wait_next_deadline(s);
		if (d != 0 && d <= now) {
			*due = true;
			d = prot__cof(s)->deadline_ns;
		}
		if (d != 0 && (member == 0 || d < member))
			member = d;
	}
	if (member != 0 && (best == 0 || member < best))
		best = member;
	*member_out = member;
	return best;
}

/*
 * Spec 2.14 step 3: when a member's deadline comes before the caller's
 * timeout, the caller's timeval is overwritten with the sleep, in whole
 * seconds (rounded up, so a 1 s read timeout reads {1, 0} as in Cyrus).
 */
static void overwrite_timeout(struct timeval *tv, uint64_t now, uint64_t member,
			      uint64_t until)
{
	uint64_t sleep;

	if (tv == NULL || member == 0 || (until != 0 && member >= until))
		return;
	sleep = member > now ? member - now : 0;
	tv->tv_sec = (time_t)((sleep + 999999999ULL) / 1000000000ULL);
	tv->tv_usec = 0;
}

static int sel_sleep(struct sel *sl)
{
	return ur_waiter_wait(&sl->w);
}

/* Run members' due events; true if a callback ran. */
static bool sel_run_events(struct sel *sl)
{
	bool ran = false;

	for (size_t i = 0; i < sl->n; i++)
		if (prot__wait_run_due(sl->m[i].s))
			ran = true;
	return ran;
}

static int sel_arm_and_sleep(struct sel *sl, uint64_t wake)
{
	int ret;

	if (wake != 0) {
		ret = ur_timer_start_abs(&sl->timer, CLOCK_MONOTONIC, wake,
					 sel_timer_fired, sl);
		if (ret < 0)
			return ret;
	}
	return sel_sleep(sl);
}

/* One loop turn that does not wait: polls of ready fds complete in it. */
static int sel_turn(struct sel *sl)
{
	int ret;

	if (sl->fiber != NULL)
		return ur_fiber_yield();
	ret = ur_loop_run_once(sl->loop, 0);
	return ret < 0 ? ret : 0;
}

static bool sel_any_ready(struct sel *sl)
{
	size_t n = sel_scan(sl);

	return n > 0 || (sl->extra_polled && poll_says_ready(&sl->extra_op));
}

/*
 * Wait until a member or the extra fd is ready, or the caller's timeout
 * passes. A timeout that has passed (or {0, 0}) still lets the polls go
 * out for one turn, as select(2) polls once. Every iteration sleeps or
 * gives the loop a turn, so events that keep coming due cannot starve
 * the polls or the timeout. Returns 0 or -errno (the fiber was
 * cancelled, the loop failed).
 */
static int sel_wait(struct sel *sl, struct timeval *tv)
{
	bool turned = false;

	for (;;) {
		uint64_t now, wake, member;
		bool due;
		int ret;

		ur_waiter_init(&sl->w, sl->loop); /* checked below */
		(void)sel_run_events(sl);
		if (sel_any_ready(sl))
			return 0;
		now = ur_now_ns(CLOCK_MONOTONIC);
		wake = sel_wake_at(sl, now, &member, &due);
		if (!sl->waited) {
			overwrite_timeout(tv, now, member, sl->until_ns);
			ret = sel_submit(sl);
			if (ret < 0)
				return ret;
		}
		if (sl->until_ns != 0 && now >= sl->until_ns) {
			if (turned)
				return 0;
			turned = true;
			ret = sel_turn(sl);
		} else if (due && sel_run_events(sl)) {
			ret = sel_turn(sl); /* came due meanwhile: ran it */
		} else {
			ret = sel_arm_and_sleep(sl, wake);
		}
		if (ret < 0)
			return ret;
	}
}

/*
 * Cancel what is still in flight and reap it. If the fiber is cancelled
 * meanwhile, the last completion frees the block: returns false, and sl
 * must not be touched again.
 */
static void cancel_busy(struct ur_op *op)
{
	/* -ENOENT: completed meanwhile; else refused: it ends by itself. */
	int ret = ur_op_is_busy(op) ? ur_op_cancel(op) : 0;

	(void)ret;
}

static bool sel_reap(struct sel *sl)
{
	if (ur_timer_stop(&sl->timer) < 0) {
		/* -ENOENT: fired or never armed; disarmed either way */
	}
	for (size_t i = 0; i < sl->n; i++)
		cancel_busy(&sl->m[i].op);
	cancel_busy(&sl->extra_op);
	while (sl->pending > 0) {
		ur_waiter_init(&sl->w, sl->loop);
		if (sel_sleep(sl) < 0) {
			sl->abandoned = true;
			return false;
		}
	}
	return true;
}

/* Zero-timeout readability probe of a plain fd (never waits). */
static bool probe_readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int ret;

	if (fd < 0 || UR_IS_FIXED(fd))
		return false;
	do {
		ret = poll(&p, 1, 0);
	} while (ret < 0 && errno == EINTR);
	return ret > 0;
}

/* Ready members in group order, and the extra fd's state. */
static int sel_collect(struct sel *sl, struct protgroup **out,
		       int *extra_read_flag)
{
	struct protgroup *g = NULL;
	int count = 0;
	bool extra;

	sel_scan(sl);
	if (sl->extra_polled) {
		if (sl->extra_op.res < 0 && sl->extra_op.res != -ECANCELED) {
			/* A bad extra fd fails the call, as select(2) does. */
			errno = -sl->extra_op.res;
			return -1;
		}
		extra = poll_says_ready(&sl->extra_op);
	} else {
		extra = probe_readable(sl->extra_fd);
	}
	for (size_t i = 0; i < sl->n; i++) {
		if (!sl->m[i].ready)
			continue;
		if (g == NULL)
			g = protgroup_new(0);
		if (g == NULL) {
			errno = ENOMEM;
			return -1;
		}
		protgroup_insert(g, sl->m[i].s);
		count++;
	}
	if (extra_read_flag != NULL)
		*extra_read_flag = extra;
	*out = g;
	return count + (extra ? 1 : 0);
}

static struct sel *sel_new(struct protgroup *group, int extra_fd,
			   const struct timeval *timeout, int *err)
{
	size_t n = group != NULL ? group->n : 0;
	struct sel *sl;

	sl = calloc(1, sizeof(*sl) + n * sizeof(sl->m[0]));
	if (sl == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	*err = ur_loop_get(&sl->loop);
	if (*err < 0) {
		free(sl);
		return NULL;
	}
	sl->fiber = ur_fiber_self();
	ur_waiter_init(&sl->w, sl->loop);
	sl->extra_fd = extra_fd;
	sl->n = n;
	ur_op_init(&sl->extra_op, NULL, NULL);
	for (size_t i = 0; i < n; i++) {
		sl->m[i].s = group->items[i];
		ur_op_init(&sl->m[i].op, NULL, NULL);
	}
	ur_timer_init(&sl->timer, sl->loop);
	if (timeout != NULL)
		sl->until_ns = ur_now_ns(CLOCK_MONOTONIC) +
			       (uint64_t)timeout->tv_sec * 1000000000ULL +
			       (uint64_t)timeout->tv_usec * 1000ULL;
	return sl;
}

int prot_select(struct protgroup *readstreams, int extra_read_fd,
		struct protgroup **out, int *extra_read_flag,
		struct timeval *timeout)
{
	struct sel *sl;
	int err = 0;
	int ret;

	if (out == NULL ||
	    (timeout != NULL &&
	     (timeout->tv_sec < 0 || timeout->tv_usec < 0)) ||
	    ((readstreams == NULL || readstreams->n == 0) &&
	     extra_read_fd < 0 && timeout == NULL)) {
		errno = EINVAL;
		return -1;
	}
	sl = sel_new(readstreams, extra_read_fd, timeout, &err);
	if (sl == NULL) {
		errno = -err;
		return -1;
	}
	err = sel_wait(sl, timeout);
	if (!sel_reap(sl)) {
		errno = ECANCELED;
		return -1;
	}
	if (err < 0) {
		free(sl);
		errno = -err;
		return -1;
	}
	ret = sel_collect(sl, out, extra_read_flag);
	free(sl);
	return ret;
}
