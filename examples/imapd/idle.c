/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/imapd/idle: IDLE (RFC 2177) without a fiber.
 *
 * The command answers "+ idling" and returns IMAP_PARK: the session
 * returns srv_park(c, imap_idle_resume), its fiber ends, its command
 * pool is freed. The folder is watched (examples/maildir/watch.h:
 * in-process deliveries and inotify) for the time of the IDLE; a change
 * wakes the connection with srv_conn_notify, the resume syncs and tells
 * (EXISTS, EXPUNGE, FETCH FLAGS), and parks again. A wait event on the
 * input stream sends "* OK Still here" every imap_idle_keepalive (NAT
 * boxes drop silent connections) and ends an IDLE that passed
 * imap_idle_timeout with BYE (RFC 3501: a client re-issues IDLE within
 * 29 minutes). DONE (or anything else: BAD) ends it and the command loop
 * goes on, on the resume's fiber.
 */
#include "mbox-int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <ringprot/prot.h>

#include "watch.h"

/* -------------------------------------------------------------------- */
/* IDLE */

static void idle_wake(void *arg)
{
	if (srv_conn_notify(arg) < 0) {
		/* closed meanwhile: its close removes the watch */
	}
}

/* Keepalive and the IDLE limit (a wait event on c->in). */
static struct prot_waitevent *idle_tick(struct protstream *in,
					struct prot_waitevent *ev, void *rock)
{
	struct imap_sess *s = rock;
	struct imap_mbox *m = s->mbox;
	time_t now = time(NULL);
	time_t keep = (time_t)(s->cfg->idle_keepalive_ms / 1000);

	(void)in;
	if (m == NULL)
		return NULL;
	if (s->cfg->idle_max_ms != 0 &&
	    now - m->idle_start >= (time_t)(s->cfg->idle_max_ms / 1000)) {
		/* The resume sees idle_start reset and says BYE. */
		m->idle_start = 0;
		m->keepalive = NULL;
		return NULL;
	}
	(void)prot_puts(s->c->out, "* OK Still here\r\n");
	(void)prot_flush(s->c->out);
	ev->mark = now + (keep > 0 ? keep : 60);
	return ev;
}

static void idle_end(struct imap_sess *s, struct imap_mbox *m)
{
	imap__watch_stop(s, m);
	if (m->keepalive != NULL) {
		prot_removewaitevent(s->c->in, m->keepalive);
		m->keepalive = NULL;
	}
}

/*
 * A parked IDLE holds no descriptor of its mailbox and as little memory
 * as it can (mailbox.h: the handle drops its file names; the view its
 * spare room): 10,000 idlers are the point of parking.
 */
static void idle_park_mbox(struct imap_mbox *m)
{
	if (m->mb == NULL)
		return;
	md_mbox_release(m->mb);
	imap__mbox_trim(m);
}

int cmd_idle(struct imap_sess *s, const char *tag)
{
	struct imap_mbox *m = s->mbox;
	time_t keep = (time_t)(s->cfg->idle_keepalive_ms / 1000);
	int ret = imap__no_args(s);

	if (ret < 0)
		return ret;
	if (m == NULL) {
		/* IDLE in the authenticated state: nothing to watch, but
		 * the client may still wait; keep a record for the tag. */
		m = imap__mbox_new(s);
		if (m == NULL)
			return -ENOMEM;
		s->mbox = m;
		s->mbox_close = imap__mbox_free;
	}
	ret = imap_mbox_sync(s, true);
	if (ret < 0) {
		imap_tagged(s, tag, "NO", "%s", imap__mbox_err(ret));
		return 0;
	}
	(void)snprintf(m->idle_tag, sizeof(m->idle_tag), "%s", tag);
	m->idle_start = time(NULL);
	if (m->mb != NULL && s->cfg->watch != NULL) {
		const char *name = md_mbox_name(m->mb);
		const char *folder = md_mbox_is_inbox(name) ? NULL : name;

		ret = md_watch_add(s->cfg->watch, &m->watch, s->user, folder,
				   idle_wake, s->c);
		m->watching = ret == 0;
	}
	if (keep > 0 || s->cfg->idle_max_ms != 0)
		m->keepalive = prot_addwaitevent(
			s->c->in, m->idle_start + (keep > 0 ? keep : 60),
			idle_tick, s);
	(void)prot_puts(s->c->out, "+ idling\r\n");
	idle_park_mbox(m);
	return IMAP_PARK;
}

int imap_idle_resume(struct srv_conn *c, unsigned wake)
{
	struct imap_sess *s = c->data;
	struct imap_mbox *m = s->mbox;
	char line[64];
	int ret;

	if (wake & SRV_WAKE_SHUTDOWN) {
		idle_end(s, m);
		(void)prot_puts(c->out, "* BYE Server shutting down\r\n");
		return 0;
	}
	if (m->idle_start == 0) {
		idle_end(s, m);
		(void)prot_puts(c->out, "* BYE IDLE for too long\r\n");
		return 0;
	}
	if (m->mb != NULL && (wake & (SRV_WAKE_NOTIFY | SRV_WAKE_EVENT))) {
		(void)srv_conn_take_notify(c);
		s->uid = false;
		ret = imap__mbox_poll(s); /* stays released */
		if (ret < 0) {
			idle_end(s, m);
			(void)prot_printf(c->out, "* BYE Mailbox error\r\n");
			return 0;
		}
	}
	if (!(wake & SRV_WAKE_INPUT) && !prot_input_pending(c->in)) {
		idle_park_mbox(m);
		return srv_park(c, imap_idle_resume);
	}
	ret = imap_lex_line(&s->lx, line, sizeof(line));
	if (ret == -ENOTCONN || ret == -ETIMEDOUT || ret == -EIO ||
	    ret == -ECONNRESET) {
		idle_end(s, m);
		return 0;
	}
	idle_end(s, m);
	/* The mailbox's descriptors and names back (a listing), and what
	 * changed last told. */
	if (m->mb != NULL && imap_mbox_sync(s, true) < 0) {
		(void)prot_printf(c->out, "* BYE Mailbox error\r\n");
		return 0;
	}
	if (ret >= 0 && strcasecmp(line, "DONE") == 0)
		imap_tagged(s, m->idle_tag, "OK", "IDLE terminated");
	else
		imap_tagged(s, m->idle_tag, "BAD", "Expected DONE");
	if (m->mb == NULL)
		imap__mbox_free(s); /* the record IDLE made in the auth state */
	return imap_session_continue(s);
}
