/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * server/server: the server object, its worker threads and its stop.
 *
 * One worker thread per CPU, each with its own loop, its own accepts on
 * every listener (its own SO_REUSEPORT socket for TCP) and the
 * connections it accepted, for their whole life: nothing is shared
 * between workers but atomics (counters, the open total, the per-IP
 * table under its lock) and the posts that carry a stop, a resume of
 * accepting or a notification to the worker that owns the target.
 *
 * Stop, the one rule: a worker stops when it has asked for it (posted
 * stop) and nothing of its own is left: no accept in flight and no
 * connection open. Parked connections are woken with SRV_WAKE_SHUTDOWN
 * at once; running ones get drain_ms, then their fibers are cancelled.
 * srv_run's thread handles the signals and waits for every worker.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifdef RINGPROT_HAVE_TLS
#include <openssl/ssl.h>
#endif

#include "internal.h"
#include "sd.h"

#define DRAIN_DEFAULT_MS   10000
#define DIRECT_DEFAULT	   16384
/* Longest wait of a worker's loop turn: it re-checks its stop condition. */
#define TURN_NS		   (100ll * 1000 * 1000)

int srv_new(const struct srv_opts *o, struct srv **s_out)
{
	struct srv *s = calloc(1, sizeof(*s));
	long ncpu;

	if (s == NULL)
		return -ENOMEM;
	if (o != NULL)
		s->o = *o;
	if (s->o.drain_ms == 0)
		s->o.drain_ms = DRAIN_DEFAULT_MS;
	if (s->o.direct && s->o.direct_files == 0)
		s->o.direct_files = DIRECT_DEFAULT;
	s->nworkers = s->o.workers;
	if (s->nworkers == 0) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		s->nworkers = ncpu > 0 ? (unsigned)ncpu : 1;
	}
	s->workers = calloc(s->nworkers, sizeof(*s->workers));
	if (s->workers == NULL) {
		free(s);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < s->nworkers; i++) {
		s->workers[i].srv = s;
		s->workers[i].idx = i;
		ur_list_init(&s->workers[i].conns);
		pthread_rwlock_init(&s->workers[i].life, NULL);
	}
	atomic_init(&s->next_id, 1);
	pthread_mutex_init(&s->tls_lock, NULL);
	*s_out = s;
	return 0;
}

int srv_service_add(struct srv *s, const struct srv_service_opts *o,
		    struct srv_service **svc_out)
{
	struct srv_service *svc;

	if (o == NULL || o->name == NULL || o->name[0] == '\0' ||
	    o->handler == NULL || s->started)
		return -EINVAL;
	for (unsigned i = 0; i < s->nservices; i++)
		if (strcmp(s->services[i]->name, o->name) == 0)
			return -EEXIST;
	if (s->nservices == SRV__MAX_SERVICES)
		return -ENOSPC;
	svc = calloc(1, sizeof(*svc));
	if (svc == NULL)
		return -ENOMEM;
	svc->srv = s;
	svc->o = *o;
	svc->name = strdup(o->name);
	svc->busy_reply = o->busy_reply != NULL ? strdup(o->busy_reply) : NULL;
	svc->sasl_service =
		o->sasl_service != NULL ? strdup(o->sasl_service) : NULL;
	if (svc->name == NULL || (o->busy_reply != NULL && !svc->busy_reply) ||
	    (o->sasl_service != NULL && !svc->sasl_service)) {
		free(svc->name);
		free(svc->busy_reply);
		free(svc->sasl_service);
		free(svc);
		return -ENOMEM;
	}
	svc->o.name = svc->name;
	svc->idx = s->nservices;
	svc->o.busy_reply = svc->busy_reply;
	svc->o.sasl_service = svc->sasl_service;
	if (svc->o.tls_timeout_ms == 0)
		svc->o.tls_timeout_ms = 30000;
	if (svc->o.proxy_timeout_ms == 0)
		svc->o.proxy_timeout_ms = 5000;
	s->services[s->nservices++] = svc;
	if (svc_out != NULL)
		*svc_out = svc;
	return 0;
}

struct srv_service *srv_service_find(const struct srv *s, const char *name)
{
	for (unsigned i = 0; i < s->nservices; i++)
		if (strcmp(s->services[i]->name, name) == 0)
			return s->services[i];
	return NULL;
}

void *srv_service_data(const struct srv_service *svc)
{
	return svc->o.data;
}

const char *srv_service_name(const struct srv_service *svc)
{
	return svc->name;
}

unsigned srv_workers(const struct srv *s)
{
	return s->nworkers;
}

const char *srv_engine(const struct srv *s)
{
	static const char *const uring_names[] = {
		[UR_MODE_AUTO] = "io_uring",
		[UR_MODE_DEFER] = "io_uring defer-taskrun",
		[UR_MODE_COOP] = "io_uring coop-taskrun",
		[UR_MODE_PLAIN] = "io_uring plain",
		[UR_MODE_SQPOLL] = "io_uring sqpoll",
	};
	enum ur_mode m;

	if (s->workers[0].backend == UR_BACKEND_AUTO)
		return "none"; /* not started */
	if (s->workers[0].backend != UR_BACKEND_URING)
		return "epoll";
	m = s->workers[0].mode;
	return m <= UR_MODE_SQPOLL ? uring_names[m] : "io_uring";
}

/*
 * TLS context: one reference held by the server, one per connection
 * that uses it.
 */
int srv_set_tls_ctx(struct srv *s, struct ssl_ctx_st *ctx)
{
#ifdef RINGPROT_HAVE_TLS
	struct ssl_ctx_st *old;

	if (ctx != NULL && SSL_CTX_up_ref(ctx) != 1)
		return -ENOMEM;
	pthread_mutex_lock(&s->tls_lock);
	old = s->tls_ctx;
	s->tls_ctx = ctx;
	pthread_mutex_unlock(&s->tls_lock);
	SSL_CTX_free(old);
	return 0;
#else
	return ctx == NULL ? 0 : -ENOTSUP;
#endif
}

struct ssl_ctx_st *srv__tlsctx_get(struct srv *s)
{
	struct ssl_ctx_st *ctx = NULL;

#ifdef RINGPROT_HAVE_TLS
	pthread_mutex_lock(&s->tls_lock);
	ctx = s->tls_ctx;
	if (ctx != NULL && SSL_CTX_up_ref(ctx) != 1)
		ctx = NULL;
	pthread_mutex_unlock(&s->tls_lock);
#else
	(void)s;
#endif
	return ctx;
}

void srv__tlsctx_put(struct ssl_ctx_st **ctxp)
{
#ifdef RINGPROT_HAVE_TLS
	SSL_CTX_free(*ctxp);
#endif
	*ctxp = NULL;
}

/*
 * Workers.
 */

/*
 * Post fn(arg) to w's loop from any thread; -ESHUTDOWN once w's loop is
 * gone (or not yet made), -ENOMEM.
 */
int srv__worker_post(struct srv__worker *w, ur_post_fn *fn, void *arg)
{
	int ret = -ESHUTDOWN;

	pthread_rwlock_rdlock(&w->life);
	if (w->alive)
		ret = ur_loop_post(w->loop, fn, arg);
	pthread_rwlock_unlock(&w->life);
	return ret;
}

/* Every connection: drain deadline passed, cancel their fibers. */
static void drain_over(struct ur_timer *t, void *arg)
{
	struct srv__worker *w = arg;
	struct ur_list *pos;

	(void)t;
	w->draining_over = true;
	ur_list_for_each(pos, &w->conns)
	{
		struct srv__conn *c = ur_container_of(pos, struct srv__conn,
						      link);

		if (c->fiber != NULL && ur_fiber_cancel(c->fiber) < 0) {
			/* it has returned, or wakes when its op ends */
		}
	}
}

/* Posted by srv_stop(): stop accepting, wake the parked, arm the drain. */
static void worker_stop(void *arg)
{
	struct srv__worker *w = arg;
	struct ur_list *pos, *tmp;

	if (w->stopping)
		return;
	w->stopping = true;
	srv__acceptors_stop(w);
	ur_list_for_each_safe(pos, tmp, &w->conns)
	{
		struct srv__conn *c = ur_container_of(pos, struct srv__conn,
						      link);

		if (c->state == SRV__PARKED)
			srv__unpark(c, SRV_WAKE_SHUTDOWN);
	}
	ur_timer_init(&w->drain, w->loop);
	if (ur_timer_start(&w->drain,
			   (uint64_t)w->srv->o.drain_ms * 1000000ull,
			   drain_over, w) < 0)
		drain_over(&w->drain, w); /* no timer: no grace either */
}

static void worker_resume_accepting(void *arg)
{
	struct srv__worker *w = arg;

	if (!w->stopping && w->go)
		srv__acceptors_resume(w);
}

/* Posted by srv_run once it handles the signals: start accepting. */
static void worker_go(void *arg)
{
	struct srv__worker *w = arg;

	w->go = true;
	worker_resume_accepting(w);
}

static void worker_check(void *arg)
{
	srv__acceptors_check(arg);
}

/* A connection filled a limit: every worker pauses what it must. */
void srv__limit_reached(struct srv__worker *self)
{
	struct srv *s = self->srv;

	for (unsigned i = 0; i < s->nworkers; i++) {
		struct srv__worker *w = &s->workers[i];

		if (w == self)
			srv__acceptors_check(w);
		else if (srv__worker_post(w, worker_check, w) < 0) {
			/* it pauses at its next accept instead */
		}
	}
}

void srv__conn_released(struct srv__worker *self)
{
	struct srv *s = self->srv;

	/* Wake workers that stopped accepting for want of room. */
	for (unsigned i = 0; i < s->nworkers; i++) {
		struct srv__worker *w = &s->workers[i];

		if (!atomic_load_explicit(&w->paused, memory_order_acquire))
			continue;
		if (w == self) {
			worker_resume_accepting(w);
		} else if (srv__worker_post(w, worker_resume_accepting, w) <
			   0) {
			/* that worker re-checks at its next turn */
		}
	}
}

/* Posted to srv_run's loop by a worker that has ended: look again. */
static void worker_done(void *arg)
{
	struct srv *s = arg;

	if (atomic_load(&s->workers_done) == s->nworkers && s->ctl != NULL)
		ur_loop_stop(s->ctl);
}

static void *worker_main(void *arg)
{
	struct srv__worker *w = arg;
	struct srv *s = w->srv;
	struct ur_loop_opts lo = s->o.loop;
	struct ur_loop_stats st;
	int ret;

	if (s->o.direct)
		lo.direct_files = s->o.direct_files;
	ret = ur_loop_new(&lo, &w->loop);
	if (ret == 0 && s->o.napi_us != 0 &&
	    ur_loop_napi(w->loop, s->o.napi_us, false) < 0 && w->idx == 0)
		srv_logkv(SRV_LOG_WARN, 0, "napi", "error",
			  "NAPI busy polling refused; going on without", NULL);
	if (ret == 0)
		ret = srv__acceptors_start(w);
	w->start_err = ret;
	if (w->loop != NULL) {
		w->backend = ur_loop_backend(w->loop);
		w->mode = ur_loop_mode(w->loop);
		pthread_rwlock_wrlock(&w->life);
		w->alive = true;
		pthread_rwlock_unlock(&w->life);
	}
	/* srv_start waits for this store (the loop is ready for posts). */
	atomic_store(&w->paused, false);
	if (w->loop == NULL) {
		atomic_fetch_add(&s->workers_done, 1);
		return NULL;
	}
	for (;;) {
		/* A stop whose post was lost (no memory) is seen here. */
		if (!w->stopping && atomic_load(&s->stopping))
			worker_stop(w);
		if (w->stopping && srv__acceptors_idle(w))
			srv__listeners_close(w);
		if (w->stopping && ur_list_empty(&w->conns) &&
		    w->closing == 0 && srv__acceptors_idle(w))
			break;
		if (w->paused && w->go && !w->stopping)
			srv__acceptors_resume(w); /* a missed post */
		ret = ur_loop_run_once(w->loop, TURN_NS);
		ur_loop_stats(w->loop, &st);
		srv__metrics_publish_ring(w->shard, &st);
		if (ret < 0 && ret != -EINTR && ret != -ETIME) {
			srv_logkv(SRV_LOG_ERR, 0, "worker", "error",
				  strerror(-ret), NULL);
			break;
		}
	}
	if (ur_timer_is_armed(&w->drain) && ur_timer_stop(&w->drain) < 0) {
		/* the loop is freed next: its timeouts go with it */
	}
	pthread_rwlock_wrlock(&w->life);
	w->alive = false;
	pthread_rwlock_unlock(&w->life);
	ur_loop_free(&w->loop);
	atomic_fetch_add(&s->workers_done, 1);
	if (s->ctl != NULL && ur_loop_post(s->ctl, worker_done, s) < 0) {
		/* srv_run re-checks workers_done at every turn */
	}
	return NULL;
}

/* Signals srv_run handles; blocked in every worker thread. */
static void run_sigset(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
}

int srv_start(struct srv *s)
{
	sigset_t set, old;
	int ret;

	if (s->started)
		return -EALREADY;
	ret = srv__listener_open_all(s);
	if (ret < 0)
		return ret;
	{
		const char *names[SRV__MAX_SERVICES];

		for (unsigned i = 0; i < s->nservices; i++)
			names[i] = s->services[i]->name;
		ret = srv__metrics_new(s->nworkers, names, s->nservices,
				       &s->metrics);
		if (ret < 0)
			return ret;
		for (unsigned i = 0; i < s->nworkers; i++)
			s->workers[i].shard = srv__metrics_shard(s->metrics, i);
	}
	/* A peer gone mid-send must be an error, never a signal. */
	signal(SIGPIPE, SIG_IGN);
	run_sigset(&set);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	s->started = true;
	for (unsigned i = 0; i < s->nworkers; i++) {
		struct srv__worker *w = &s->workers[i];

		atomic_store(&w->paused, true); /* until its loop is up */
		ret = pthread_create(&w->thread, NULL, worker_main, w);
		if (ret != 0) {
			ret = -ret;
			break;
		}
		w->thread_started = true;
		while (atomic_load(&w->paused))
			sched_yield();
		if (w->start_err < 0) {
			ret = w->start_err;
			break;
		}
	}
	if (ret < 0)
		srv_stop(s);
	return ret;
}

static void sd_say(const char *state)
{
	if (srv__sd_notify(state) < 0) {
		/* systemd gone or the socket full: nothing to do about it */
	}
}

void srv_stop(struct srv *s)
{
	if (atomic_exchange(&s->stopping, true))
		return;
	sd_say("STOPPING=1");
	for (unsigned i = 0; i < s->nworkers; i++) {
		if (srv__worker_post(&s->workers[i], worker_stop,
				     &s->workers[i]) < 0) {
			/* gone, or no memory: it sees s->stopping itself */
		}
	}
}

struct run_ctx {
	struct srv *s;
	const struct srv_run_hooks *hooks;
	struct ur_timer watchdog;
	uint64_t watchdog_ns; /* half systemd's WatchdogSec, 0: none */
};

/* systemd's watchdog: WATCHDOG=1 at half its interval while we run. */
static void watchdog_cb(struct ur_timer *t, void *arg)
{
	struct run_ctx *r = arg;

	if (srv__sd_notifyf("WATCHDOG=1\nSTATUS=%u connections open",
			    atomic_load(&r->s->open)) < 0) {
		/* as sd_say */
	}
	if (ur_timer_start(t, r->watchdog_ns, watchdog_cb, r) < 0) {
		/* a missed ping: systemd restarts us, as it should */
	}
}

static void on_signal(struct ur_signal *sig, int signo, void *arg)
{
	struct run_ctx *r = arg;

	(void)sig;
	switch (signo) {
	case SIGHUP:
		srv_logkv(SRV_LOG_INFO, 0, "signal", "signal", "HUP", "action",
			  "reload", NULL);
		sd_say("RELOADING=1");
		if (r->hooks != NULL && r->hooks->reload != NULL)
			r->hooks->reload(r->s, r->hooks->arg);
		sd_say("READY=1");
		break;
	case SIGUSR1:
		if (r->hooks != NULL && r->hooks->dump != NULL)
			r->hooks->dump(r->s, r->hooks->arg);
		break;
	default:
		srv_logkv(SRV_LOG_INFO, 0, "signal", "signal",
			  signo == SIGTERM ? "TERM" : "INT", "action", "stop",
			  NULL);
		srv_stop(r->s);
		break;
	}
}

int srv_run(struct srv *s, const struct srv_run_hooks *hooks)
{
	struct run_ctx r = {.s = s, .hooks = hooks};
	struct ur_loop_opts lo = {.backend = s->o.loop.backend};
	struct ur_signal *sig = NULL;
	sigset_t set;
	int ret;

	if (!s->started)
		return -EINVAL;
	ret = ur_loop_new(&lo, &s->ctl);
	if (ret < 0)
		return ret;
	run_sigset(&set);
	ret = ur_signal_start(s->ctl, &set, on_signal, &r, &sig);
	/*
	 * Accepting starts only now: a connection must never be taken
	 * before this thread can stop the server (its loop and signalfd
	 * need fds the first connections could exhaust).
	 */
	for (unsigned i = 0; ret == 0 && i < s->nworkers; i++) {
		if (srv__worker_post(&s->workers[i], worker_go,
				     &s->workers[i]) < 0) {
			/* gone already, or no memory: nothing to start */
		}
	}
	if (ret == 0) {
		uint64_t usec = 0;

		sd_say("READY=1\nSTATUS=serving");
		ur_timer_init(&r.watchdog, s->ctl);
		if (srv__sd_watchdog_usec(&usec) > 0 && usec >= 2) {
			r.watchdog_ns = usec / 2 * 1000ull;
			watchdog_cb(&r.watchdog, &r);
		}
	}
	while (ret == 0 && atomic_load(&s->workers_done) < s->nworkers) {
		ret = ur_loop_run_once(s->ctl, TURN_NS);
		if (ret == -EINTR || ret > 0)
			ret = 0;
		/* A worker that ended on its own (its loop failed). */
		if (ret == 0 && atomic_load(&s->workers_done) > 0)
			srv_stop(s);
	}
	if (ret < 0)
		srv_stop(s);
	for (unsigned i = 0; i < s->nworkers; i++) {
		if (s->workers[i].thread_started) {
			pthread_join(s->workers[i].thread, NULL);
			s->workers[i].thread_started = false;
		}
	}
	if (ur_timer_is_armed(&r.watchdog) && ur_timer_stop(&r.watchdog) < 0) {
		/* the loop goes next, and its timeouts with it */
	}
	ur_signal_stop(&sig);
	ur_loop_free(&s->ctl);
	return ret < 0 ? ret : 0;
}

void srv_free(struct srv **sp)
{
	struct srv *s = *sp;

	if (s == NULL)
		return;
	*sp = NULL;
	for (unsigned i = 0; i < s->nworkers; i++) {
		if (s->workers[i].thread_started) {
			srv_stop(s);
			pthread_join(s->workers[i].thread, NULL);
		}
		free(s->workers[i].acceptors);
	}
	for (unsigned i = 0; i < s->nlisteners; i++)
		srv__listener_free(&s->listeners[i]);
	for (unsigned i = 0; i < s->nservices; i++) {
		free(s->services[i]->name);
		free(s->services[i]->sasl_service);
		free(s->services[i]->busy_reply);
		free(s->services[i]);
	}
	srv__tlsctx_put(&s->tls_ctx);
	srv__metrics_free(&s->metrics);
#ifdef RINGPROT_HAVE_SASL
	srv__sasl_fini(s);
#endif
	pthread_mutex_destroy(&s->tls_lock);
	for (unsigned i = 0; i < s->nworkers; i++)
		pthread_rwlock_destroy(&s->workers[i].life);
	free(s->workers);
	free(s);
}

void srv_stats(const struct srv *s, struct srv_stats *out)
{
	const struct srv__metrics *m = s->metrics;

	memset(out, 0, sizeof(*out));
	if (m == NULL)
		return; /* not started */
	out->conns_open = (uint64_t)srv__metrics_total(m, -1,
						       SRV__M_CONNECTIONS_OPEN);
	out->conns_parked = (uint64_t)srv__metrics_total(
		m, -1, SRV__M_CONNECTIONS_PARKED);
	out->conns_total = (uint64_t)srv__metrics_total(m, -1,
							SRV__M_CONNECTIONS);
	out->refused = (uint64_t)srv__metrics_total(m, -1,
						    SRV__M_REFUSED_LIMIT);
	out->accept_errors = (uint64_t)srv__metrics_total(
		m, -1, SRV__M_ACCEPT_ERRORS);
	out->proxy_errors = (uint64_t)srv__metrics_total(m, -1,
							 SRV__M_PROXY_ERRORS);
	out->tls_failures = (uint64_t)srv__metrics_total(m, -1,
							 SRV__M_TLS_FAILURES);
}
