/* SPDX-License-Identifier: BSD-3-Clause */
/* server/: what the runtime's files share. */
#ifndef RINGPROT_SRV_INTERNAL_H
#define RINGPROT_SRV_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include <ringprot/server.h>
#include <ringprot/srv-log.h>

#include "metrics.h"

#include "../uring/list.h"

/* Simultaneous accepts a worker keeps armed per listener. */
#define SRV__ACCEPTS 4
#define SRV__MAX_LISTENERS 32
#define SRV__MAX_SERVICES 16

struct srv__worker;
struct srv__listener;

/* One accept in flight: its op and the peer address it fills. */
struct srv__accept {
	struct ur_op op;
	struct srv__acceptor *a;
	struct sockaddr_storage addr;
	socklen_t len;
};

/* A listener as one worker serves it. */
struct srv__acceptor {
	struct srv__listener *l;
	struct srv__worker *w;
	int fd; /* this worker's socket (its own with SO_REUSEPORT) */
	bool paused;
	struct ur_timer retry; /* re-arm after EMFILE and the like */
	struct srv__accept acc[SRV__ACCEPTS];
};

struct srv__listener {
	struct srv_service *svc;
	struct srv_listen_opts o; /* strings copied below */
	char *addr_text;	  /* o.addr, owned */
	char *trusted_text;	  /* o.proxy_trusted, owned */
	struct sockaddr_storage bound;
	socklen_t bound_len;
	bool per_worker; /* TCP: one SO_REUSEPORT socket per worker */
	bool unix_path;	 /* a socket file we made: unlinked at free */
	bool wildcard;	 /* bound to every address: ask each socket */
	int *fds;	 /* per_worker: one per worker, else fds[0] */
	unsigned nfds;
	atomic_uint unused; /* workers done accepting on a shared fd */
	void *trust; /* PROXY trusted sources (proxy.c), NULL: all */
};

struct srv_service {
	struct srv *srv;
	struct srv_service_opts o;
	char *name;
	char *sasl_service; /* NULL: name */
	char *busy_reply;
	unsigned idx;	  /* in srv.services[] and the metrics */
	atomic_uint open; /* connections of this service */
};

struct srv__worker {
	struct srv *srv;
	unsigned idx;
	pthread_t thread;
	bool thread_started;
	struct ur_loop *loop;
	enum ur_backend backend; /* the loop's, kept past its free */
	enum ur_mode mode;
	/* Posters from other threads hold it shared; the worker takes it
	 * to clear alive before its loop goes. */
	pthread_rwlock_t life;
	bool alive;
	struct ur_list conns; /* srv__conn.link, every open connection */
	unsigned closing;     /* socket closes in flight */
	struct srv__acceptor *acceptors;
	unsigned nacceptors;
	atomic_bool paused; /* some acceptor waits for room (backpressure) */
	bool go; /* srv_run is up: accept */
	bool listeners_closed; /* on stop, once its accepts are reaped */
	bool stopping;
	bool draining_over; /* drain deadline passed: fibers cancelled */
	struct ur_timer drain;
	int start_err;
	struct srv__metrics_shard *shard; /* this worker's counters */
};

enum srv__state {
	SRV__RUNNING,
	SRV__PARKED,
	SRV__WAKING, /* woken; the park poll is being cancelled */
	SRV__CLOSED,
};

/* A cleanup hook and arena chunks hang on these singly linked lists. */
struct srv__hook {
	struct srv__hook *next;
	srv_cleanup_fn *fn;
	void *arg;
};

struct srv__conn {
	struct srv_conn pub;
	struct srv__worker *w;
	struct srv__listener *l;
	struct ur_list link;
	struct ur_fiber *fiber; /* while a fiber runs for it */
	atomic_uint refs;
	atomic_uint notify; /* a notification not yet seen */
	atomic_bool closed; /* srv_conn_notify reads it from any thread */
	enum srv__state state;
	unsigned wake; /* SRV_WAKE_* gathered while parked */
	bool ip_counted;
	bool busy; /* refused by a limit: send busy_reply, close */
	srv_resume_fn *resume;
	struct ur_op park_op;	   /* the poll of a parked connection */
	struct ur_timer park_timer; /* its earliest wait event */
	struct srv__hook *hooks;
	void *arena;
	struct ssl_ctx_st *tls_ctx; /* the context this connection uses */
	void *auth;		    /* auth.c's state, in the arena */
};

static inline struct srv__conn *srv__conn_of(struct srv_conn *c)
{
	return (struct srv__conn *)c;
}

struct srv {
	struct srv_opts o;
	unsigned nworkers;
	struct srv__worker *workers;
	struct srv_service *services[SRV__MAX_SERVICES];
	unsigned nservices;
	struct srv__listener *listeners[SRV__MAX_LISTENERS];
	unsigned nlisteners;
	atomic_uint open;     /* every connection */
	atomic_uint_fast64_t next_id;
	atomic_bool stopping;
	atomic_uint workers_done;
	struct ur_loop *ctl; /* srv_run's loop, NULL outside srv_run */
	bool started;
	pthread_mutex_t tls_lock;
	struct ssl_ctx_st *tls_ctx;
	struct srv__metrics *metrics; /* made by srv_start */
	struct srv_config *const *main_cfg; /* srv_main's current one */
	/* SASL (auth.c, srv_set_sasl). */
	bool sasl_ready;
	bool allowplaintext;
	struct srv__authfail *authfail;
	char fqdn[256];
	char errbuf[256]; /* srv_listen's error text */
};

/* Count n (may be negative for a gauge) of id for svc on w's shard. */
static inline void srv__count(struct srv__worker *w,
			      const struct srv_service *svc, enum srv__msvc id,
			      int64_t n)
{
	srv__metric_add(w->shard, svc->idx, id, (uint64_t)n);
}


/* listener.c */
int srv__listener_open_all(struct srv *s) RINGPROT_MUST_CHECK;
void srv__listener_free(struct srv__listener **lp);
int srv__acceptors_start(struct srv__worker *w) RINGPROT_MUST_CHECK;
void srv__acceptors_stop(struct srv__worker *w);
bool srv__acceptors_idle(const struct srv__worker *w);
void srv__listeners_close(struct srv__worker *w);
void srv__acceptors_resume(struct srv__worker *w);
void srv__acceptors_check(struct srv__worker *w);
void srv__limit_reached(struct srv__worker *w);

/* conn.c */
void srv__conn_accepted(struct srv__acceptor *a, int fd,
			const struct sockaddr_storage *peer, socklen_t plen);
int srv__conn_spawn(struct srv__conn *c, bool resume) RINGPROT_MUST_CHECK;
bool srv__room(struct srv *s, struct srv_service *svc);
void srv__conn_released(struct srv__worker *w);
void srv__fmt_addr(const struct sockaddr_storage *a, char *ip, size_t n,
		   uint16_t *port_out);

socklen_t srv__salen(const struct sockaddr_storage *a);

/* auth.c (with libsasl2): free what srv_set_sasl made. */
void srv__sasl_fini(struct srv *s);

/* park.c */
int srv__park(struct srv__conn *c) RINGPROT_MUST_CHECK UR_MAY_YIELD;
void srv__unpark(struct srv__conn *c, unsigned wake);

/* limits.c: open connections per client address, process-wide. */
bool srv__ip_take(const struct sockaddr_storage *peer, unsigned max);
void srv__ip_put(const struct sockaddr_storage *peer);

/* server.c */
int srv__worker_post(struct srv__worker *w, ur_post_fn *fn,
		     void *arg) RINGPROT_MUST_CHECK;
struct ssl_ctx_st *srv__tlsctx_get(struct srv *s);
void srv__tlsctx_put(struct ssl_ctx_st **ctxp);

#endif /* RINGPROT_SRV_INTERNAL_H */
