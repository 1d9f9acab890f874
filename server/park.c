/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * server/park: idle connections without a fiber.
 *
 * A parked connection is its record, its two streams with their buffers
 * released, one poll (POLLIN) on the socket and one timer at the
 * earliest of c->in's wait events and read deadline (the idle timeout:
 * past it, resume sees SRV_WAKE_INPUT and its read fails at once with
 * "idle for too long"). The timer runs on CLOCK_REALTIME, the wait
 * events' clock; the read deadline is converted at park time. Four things wake
 * it: the poll, the timer, a notification (posted to the connection's worker)
 * and the server's stop. Each ORs its reason into c->wake and calls unpark.
 *
 * The one rule: a new fiber starts only once the poll op is back (its
 * completion reaped), because the op lives in the record and a resumed
 * handler may park again and re-arm it. So unpark stops the timer (a
 * timer stopped never fires afterwards), cancels the poll if it is in
 * flight and spawns from the poll's completion; if the poll has already
 * completed it spawns at once. State WAKING covers the gap.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define RESPAWN_NS (50ull * 1000 * 1000)

static void spawn_or_retry(struct srv__conn *c);

static void respawn_cb(struct ur_timer *t, void *arg)
{
	(void)t;
	spawn_or_retry(arg);
}

/* Start the resume fiber; without memory for one, try again shortly. */
static void spawn_or_retry(struct srv__conn *c)
{
	if (srv__conn_spawn(c, true) == 0)
		return;
	if (ur_timer_start(&c->park_timer, RESPAWN_NS, respawn_cb, c) < 0) {
		/* no timer either: the worker's drain will cancel nothing;
		 * leave it parked until its socket or a stop wakes it */
		c->state = SRV__PARKED;
	}
}

static void poll_cb(struct ur_op *op)
{
	struct srv__conn *c = op->data;

	if (op->res >= 0)
		c->wake |= SRV_WAKE_INPUT;
	else if (op->res != -ECANCELED)
		c->wake |= SRV_WAKE_INPUT; /* an error: the read will say */
	if (c->state == SRV__PARKED) {
		/* Woken by its socket: the timer must not fire later. */
		if (ur_timer_is_armed(&c->park_timer) &&
		    ur_timer_stop(&c->park_timer) < 0) {
			/* disarmed all the same */
		}
		c->state = SRV__WAKING;
	}
	if (c->state == SRV__WAKING)
		spawn_or_retry(c);
}

/* Due wait events and a passed read deadline are found by ready_now. */
static void timer_cb(struct ur_timer *t, void *arg)
{
	(void)t;
	srv__unpark(arg, 0);
}

void srv__unpark(struct srv__conn *c, unsigned wake)
{
	c->wake |= wake;
	if (c->state != SRV__PARKED)
		return;
	c->state = SRV__WAKING;
	if (ur_timer_is_armed(&c->park_timer) &&
	    ur_timer_stop(&c->park_timer) < 0) {
		/* disarmed all the same */
	}
	if (ur_op_is_busy(&c->park_op)) {
		if (ur_op_cancel(&c->park_op) < 0) {
			/* the poll ends by itself (input or hang-up) */
		}
		return; /* poll_cb spawns */
	}
	spawn_or_retry(c);
}

/* Why resume now rather than park: 0 if nothing is waiting. */
static unsigned ready_now(struct srv__conn *c)
{
	struct srv_conn *pub = &c->pub;
	unsigned wake = 0;
	uint64_t next_ms, idle_ns = prot_read_deadline_ns(pub->in);

	if (atomic_exchange(&c->notify, 0) != 0)
		wake |= SRV_WAKE_NOTIFY;
	if (c->w->stopping)
		wake |= SRV_WAKE_SHUTDOWN;
	if (prot_input_pending(pub->in) ||
	    (idle_ns != 0 && idle_ns <= ur_now_ns(CLOCK_MONOTONIC)))
		wake |= SRV_WAKE_INPUT; /* a read returns (or times out) */
	next_ms = prot_waitevent_next_ms(pub->in);
	if (next_ms != 0 && next_ms * 1000000ull <= ur_now_ns(CLOCK_REALTIME))
		wake |= SRV_WAKE_EVENT;
	return wake;
}

/*
 * From the connection's fiber: run resume while something is waiting,
 * else park for real (c->state becomes SRV__PARKED and the caller's
 * fiber must end). Returns the resume function's result, or SRV_PARK
 * when parked, or -errno (close).
 */
int srv__park(struct srv__conn *c)
{
	struct srv_conn *pub = &c->pub;
	uint64_t next_ns, idle_ns;
	unsigned wake, spins = 0;
	bool told_stop = false;
	int ret;

	for (;;) {
		if (c->resume == NULL)
			return -EINVAL; /* SRV_PARK returned without srv_park */
		wake = c->wake | ready_now(c);
		c->wake = 0;
		if (told_stop && (wake & SRV_WAKE_SHUTDOWN))
			return 0; /* parked again after its goodbye: close */
		if (wake & SRV_WAKE_EVENT) {
			if (prot_waitevent_run_due(pub->in) < 0)
				return prot_errno(pub->in);
		}
		if (wake != 0) {
			srv_resume_fn *fn = c->resume;

			/* A resume that parks again at once, over and over
			 * (input it does not read), must not starve the
			 * worker. */
			if (++spins % 64 == 0 && ur_fiber_yield() < 0)
				return -ECANCELED;
			told_stop |= (wake & SRV_WAKE_SHUTDOWN) != 0;
			c->resume = NULL;
			ret = fn(pub, wake);
			if (ret != SRV_PARK)
				return ret;
			continue;
		}
		/* Nothing waiting: flush, give the memory back, arm, end. */
		if (prot_flush(pub->out) == EOF)
			return prot_errno(pub->out);
		/*
		 * Came while flushing (the flush may yield): keep what
		 * ready_now found. It consumes a notification, so dropping
		 * its result here lost one that arrived during the send:
		 * an IDLE never woken by the delivery that followed its
		 * "+ idling" (seen under load, int-imapd-mail).
		 */
		wake = ready_now(c);
		if (wake != 0) {
			c->wake |= wake;
			continue;
		}
		if (prot_release(pub->in) < 0 || prot_release(pub->out) < 0) {
			/* still busy (a send in flight): park holding it */
		}
		ur_op_init(&c->park_op, poll_cb, c);
		ret = ur_poll_start(c->w->loop, &c->park_op, pub->fd, POLLIN);
		if (ret < 0)
			return ret;
		next_ns = prot_waitevent_next_ms(pub->in) * 1000000ull;
		idle_ns = prot_read_deadline_ns(pub->in);
		if (idle_ns != 0) {
			uint64_t now = ur_now_ns(CLOCK_MONOTONIC);
			uint64_t rt = ur_now_ns(CLOCK_REALTIME) +
				      (idle_ns > now ? idle_ns - now : 0);

			if (next_ns == 0 || rt < next_ns)
				next_ns = rt;
		}
		if (next_ns != 0 &&
		    ur_timer_start_abs(&c->park_timer, CLOCK_REALTIME, next_ns,
				       timer_cb, c) < 0) {
			/* the event runs at the next wake instead */
		}
		c->state = SRV__PARKED;
		srv__count(c->w, pub->service, SRV__M_CONNECTIONS_PARKED, 1);
		return SRV_PARK;
	}
}

int srv_park(struct srv_conn *pub, srv_resume_fn *resume)
{
	srv__conn_of(pub)->resume = resume;
	return SRV_PARK;
}

/* Posted to the connection's worker by srv_conn_notify. */
static void notify_post(void *arg)
{
	struct srv__conn *c = arg;
	struct srv_conn *self = &c->pub;

	if (c->state == SRV__PARKED && atomic_exchange(&c->notify, 0) != 0)
		srv__unpark(c, SRV_WAKE_NOTIFY);
	srv_conn_unref(&self);
}

int srv_conn_notify(struct srv_conn *pub)
{
	struct srv__conn *c = srv__conn_of(pub);
	int ret;

	if (atomic_load(&c->closed))
		return -ENOTCONN;
	if (atomic_exchange(&c->notify, 1) != 0)
		return 0; /* one is already on its way */
	srv_conn_ref(pub);
	ret = srv__worker_post(c->w, notify_post, c);
	if (ret < 0) {
		struct srv_conn *self = pub;

		srv_conn_unref(&self);
		return ret == -ESHUTDOWN ? -ENOTCONN : ret;
	}
	return 0;
}

bool srv_conn_take_notify(struct srv_conn *pub)
{
	return atomic_exchange(&srv__conn_of(pub)->notify, 0) != 0;
}
