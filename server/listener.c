/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * server/listener: listening sockets and the accepts each worker keeps
 * armed on them.
 *
 * TCP listeners get one SO_REUSEPORT socket per worker: the kernel
 * spreads connections over the workers, and no worker ever touches
 * another's accept queue. Unix sockets and sockets inherited from
 * systemd are one socket that every worker accepts on.
 *
 * Accept is single-shot, SRV__ACCEPTS of them armed per worker and
 * listener, each re-armed from its completion: a multishot accept
 * returns no peer address (one buffer would serve every completion),
 * and the runtime needs it before anything else (per-IP limits, logs),
 * which otherwise costs a getpeername(2) per connection, impossible on
 * a direct descriptor. The extra SQE per accept is batched with the
 * turn's other submissions.
 *
 * Backpressure: an acceptor whose completion finds no room (server or
 * service at max_conns, without a busy reply) does not re-arm; it is
 * paused, and the next close anywhere resumes it. Connections wait in
 * the kernel's backlog meanwhile: nothing accepted is ever dropped.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "sd.h"
#include "proxy.h"

#define BACKLOG_DEFAULT 1024
#define RETRY_NS	(50ull * 1000 * 1000)

/* "addr: why" (why NULL: the errno's text) into s->errbuf; ret. */
static int seterr(struct srv *s, const char **errstr_out, int ret,
		  const char *addr, const char *why)
{
	if (errstr_out != NULL) {
		(void)snprintf(s->errbuf, sizeof(s->errbuf), "%s: %s", addr,
			       why != NULL ? why : strerror(-ret));
		*errstr_out = s->errbuf;
	}
	return ret;
}

/*
 * Parse "host:port", "[v6]:port", "*:port" into a socket address (the
 * host resolved now). -EINVAL for a malformed address.
 */
static int parse_inet(const char *text, struct sockaddr_storage *ss,
		      socklen_t *len_out)
{
	char host[256];
	const char *colon, *port;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
	struct addrinfo *res = NULL;
	size_t hlen;
	char *end;
	unsigned long p;

	if (text[0] == '[') {
		colon = strchr(text, ']');
		if (colon == NULL || colon[1] != ':')
			return -EINVAL;
		hlen = (size_t)(colon - text - 1);
		port = colon + 2;
		text++;
		hints.ai_family = AF_INET6;
		hints.ai_flags |= AI_NUMERICHOST;
	} else {
		colon = strrchr(text, ':');
		if (colon == NULL)
			return -EINVAL;
		hlen = (size_t)(colon - text);
		port = colon + 1;
	}
	if (hlen >= sizeof(host) || *port == '\0')
		return -EINVAL;
	errno = 0;
	p = strtoul(port, &end, 10);
	if (*end != '\0' || p > 65535 || errno != 0 || *port < '0' ||
	    *port > '9')
		return -EINVAL;
	memcpy(host, text, hlen);
	host[hlen] = '\0';
	if (strcmp(host, "*") == 0 || hlen == 0) {
		/* Every address, IPv4 and IPv6 on one dual-stack socket. */
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;

		memset(ss, 0, sizeof(*ss));
		a6->sin6_family = AF_INET6;
		a6->sin6_addr = in6addr_any;
		a6->sin6_port = htons((uint16_t)p);
		*len_out = sizeof(*a6);
		return 0;
	}
	if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len_out = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/*
 * TCP_NODELAY on the listener: accepted sockets inherit it (Linux copies
 * the listener's TCP state into each child), so no connection pays a
 * setsockopt. A protstream sends whole responses at its flushes; Nagle
 * could only hold a small one back until the peer's delayed ACK (40 ms:
 * an IMAP IDLE "* n EXISTS" after "+ idling" waited that long).
 */
static int inet_socket(const struct sockaddr_storage *a, socklen_t alen,
		       unsigned backlog)
{
	int one = 1, zero = 0;
	int fd = socket(a->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
	    (a->ss_family == AF_INET6 &&
	     IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)a)->sin6_addr) &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) <
		     0) ||
	    bind(fd, (const struct sockaddr *)a, alen) < 0 ||
	    listen(fd, (int)backlog) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* A stale socket file (nobody listening) may be replaced. */
static bool unix_stale(const struct sockaddr_un *a)
{
	struct stat st;
	int fd, ret;

	if (lstat(a->sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
		return false;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	ret = connect(fd, (const struct sockaddr *)a, sizeof(*a));
	close(fd);
	return ret < 0 && errno == ECONNREFUSED;
}

static int unix_socket(struct srv__listener *l, const char *path,
		       const char **why_out)
{
	struct sockaddr_un *a = (struct sockaddr_un *)&l->bound;
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	int fd, err;

	if (strlen(path) >= sizeof(a->sun_path) || path[0] == '\0') {
		*why_out = "unix socket path empty or too long";
		return -EINVAL;
	}
	if (l->o.unix_owner != NULL) {
		struct passwd *pw = getpwnam(l->o.unix_owner);

		if (pw == NULL) {
			*why_out = "unix_owner: no such user";
			return -EINVAL;
		}
		uid = pw->pw_uid;
	}
	if (l->o.unix_group != NULL) {
		struct group *gr = getgrnam(l->o.unix_group);

		if (gr == NULL) {
			*why_out = "unix_group: no such group";
			return -EINVAL;
		}
		gid = gr->gr_gid;
	}
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	strcpy(a->sun_path, path);
	l->bound_len = sizeof(*a);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (unix_stale(a))
		(void)unlink(path);
	if (bind(fd, (struct sockaddr *)a, sizeof(*a)) < 0)
		goto fail;
	l->unix_path = true;
	if (chmod(path, l->o.unix_mode != 0 ? l->o.unix_mode : 0666) < 0 ||
	    ((uid != (uid_t)-1 || gid != (gid_t)-1) &&
	     chown(path, uid, gid) < 0) ||
	    listen(fd, (int)(l->o.backlog != 0 ? l->o.backlog :
						 BACKLOG_DEFAULT)) < 0)
		goto fail;
	return fd;
fail:
	err = -errno;
	close(fd);
	return err;
}

static struct srv__listener *listener_new(struct srv_service *svc,
					  const struct srv_listen_opts *o)
{
	struct srv__listener *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->svc = svc;
	l->o = *o;
	l->addr_text = strdup(o->addr);
	l->trusted_text = o->proxy_trusted != NULL ? strdup(o->proxy_trusted) :
						     NULL;
	if (l->addr_text == NULL ||
	    (o->proxy_trusted != NULL && l->trusted_text == NULL)) {
		free(l->addr_text);
		free(l->trusted_text);
		free(l);
		return NULL;
	}
	l->o.addr = l->addr_text;
	l->o.proxy_trusted = l->trusted_text;
	return l;
}

void srv__listener_free(struct srv__listener **lp)
{
	struct srv__listener *l = *lp;

	if (l == NULL)
		return;
	*lp = NULL;
	for (unsigned i = 0; i < l->nfds; i++)
		if (l->fds[i] >= 0)
			close(l->fds[i]);
	if (l->unix_path)
		(void)unlink(((struct sockaddr_un *)&l->bound)->sun_path);
	srv__proxy_trust_free((struct srv__proxy_trust **)&l->trust);
	free(l->fds);
	free(l->addr_text);
	free(l->trusted_text);
	free(l);
}

static int add_listener(struct srv *s, struct srv__listener *l)
{
	if (s->nlisteners == SRV__MAX_LISTENERS)
		return -ENOSPC;
	s->listeners[s->nlisteners++] = l;
	return 0;
}

/* Open l's sockets: per worker for TCP. */
static int listener_open(struct srv *s, struct srv__listener *l,
			 const char **why_out)
{
	unsigned backlog = l->o.backlog != 0 ? l->o.backlog : BACKLOG_DEFAULT;
	const char *addr = l->o.addr;
	int fd, ret;

	if (strncmp(addr, "unix:", 5) == 0) {
		l->fds = malloc(sizeof(int));
		if (l->fds == NULL)
			return -ENOMEM;
		fd = unix_socket(l, addr + 5, why_out);
		if (fd < 0)
			return fd;
		l->fds[0] = fd;
		l->nfds = 1;
		return 0;
	}
	ret = parse_inet(addr, &l->bound, &l->bound_len);
	if (ret < 0) {
		*why_out = "expected host:port, [v6addr]:port, *:port, "
			   "unix:/path or systemd:name";
		return ret;
	}
	l->per_worker = true;
	l->wildcard =
		(l->bound.ss_family == AF_INET &&
		 ((struct sockaddr_in *)&l->bound)->sin_addr.s_addr ==
			 htonl(INADDR_ANY)) ||
		(l->bound.ss_family == AF_INET6 &&
		 IN6_IS_ADDR_UNSPECIFIED(
			 &((struct sockaddr_in6 *)&l->bound)->sin6_addr));
	l->fds = malloc(s->nworkers * sizeof(int));
	if (l->fds == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < s->nworkers; i++) {
		fd = inet_socket(&l->bound, l->bound_len, backlog);
		if (fd < 0)
			return fd;
		l->fds[l->nfds++] = fd;
		if (i == 0) {
			/* Port 0: every worker binds the port the first got. */
			l->bound_len = sizeof(l->bound);
			if (getsockname(fd, (struct sockaddr *)&l->bound,
					&l->bound_len) < 0)
				return -errno;
		}
	}
	return 0;
}

/*
 * The sockets systemd passed (LISTEN_FDS), read once: the variables are
 * unset by the reading. taken marks those a listener has adopted.
 */
static struct srv__sd_fd *sd_fds;
static size_t sd_nfds;
static bool *sd_taken;
static int sd_err = 1; /* 1: not read yet */

static const struct srv__sd_fd *sd_passed(size_t *n_out)
{
	if (sd_err == 1) {
		sd_err = srv__sd_listen_fds(&sd_fds, &sd_nfds);
		if (sd_err >= 0) {
			sd_err = 0;
			sd_taken = calloc(sd_nfds + 1, sizeof(bool));
			if (sd_taken == NULL)
				sd_err = -ENOMEM;
		}
	}
	*n_out = sd_err == 0 ? sd_nfds : 0;
	return sd_fds;
}

/* "systemd:name": the passed fds with that name ("": every one). */
static int listen_systemd(struct srv_service *svc,
			  const struct srv_listen_opts *o, const char *name,
			  const char **errstr_out)
{
	struct srv *s = svc->srv;
	size_t n = 0, found = 0;
	const struct srv__sd_fd *fds = sd_passed(&n);
	int ret;

	for (size_t i = 0; i < n; i++) {
		struct srv__listener *l;

		if (sd_taken[i] || (name[0] != '\0' &&
				     strcmp(fds[i].name, name) != 0))
			continue;
		l = listener_new(svc, o);
		if (l == NULL)
			return -ENOMEM;
		l->fds = malloc(sizeof(int));
		if (l->fds == NULL) {
			srv__listener_free(&l);
			return -ENOMEM;
		}
		l->fds[0] = fds[i].fd;
		l->nfds = 1;
		l->wildcard = true; /* unknown: ask each socket */
		l->bound_len = sizeof(l->bound);
		if (getsockname(fds[i].fd, (struct sockaddr *)&l->bound,
				&l->bound_len) < 0)
			l->bound_len = 0;
		ret = add_listener(s, l);
		if (ret < 0) {
			l->nfds = 0; /* the fd stays systemd's entry */
			srv__listener_free(&l);
			return ret;
		}
		sd_taken[i] = true;
		found++;
	}
	if (found == 0)
		return seterr(s, errstr_out, sd_err < 0 ? sd_err : -ENOENT,
			      o->addr,
			      sd_err < 0 ? "LISTEN_FDS: bad socket activation "
					   "environment" :
					   "no socket passed by systemd with "
					   "that name");
	return 0;
}

int srv_listen(struct srv_service *svc, const struct srv_listen_opts *o,
	       const char **errstr_out)
{
	struct srv *s = svc->srv;
	struct srv__listener *l;
	const char *why = NULL;
	int ret;

	if (errstr_out != NULL)
		*errstr_out = NULL;
	if (o == NULL || o->addr == NULL || s->started)
		return -EINVAL;
	if (strncmp(o->addr, "systemd:", 8) == 0) {
		return listen_systemd(svc, o, o->addr + 8, errstr_out);
	}
	l = listener_new(svc, o);
	if (l == NULL)
		return -ENOMEM;
	if (o->proxy && o->proxy_trusted != NULL) {
		ret = srv__proxy_trust_parse(
			o->proxy_trusted, (struct srv__proxy_trust **)&l->trust,
			&why);
		if (ret < 0)
			goto fail;
	}
	ret = listener_open(s, l, &why);
	if (ret == 0)
		ret = add_listener(s, l);
	if (ret == 0)
		return 0;
fail:
	srv__listener_free(&l);
	return seterr(s, errstr_out, ret, o->addr, why);
}

int srv_listen_addr(const struct srv_service *svc, unsigned i,
		    struct sockaddr_storage *addr_out, socklen_t *len_out)
{
	const struct srv *s = svc->srv;

	for (unsigned k = 0; k < s->nlisteners; k++) {
		if (s->listeners[k]->svc != svc)
			continue;
		if (i-- == 0) {
			*addr_out = s->listeners[k]->bound;
			*len_out = s->listeners[k]->bound_len;
			return 0;
		}
	}
	return -ENOENT;
}

void srv_print_listeners(const struct srv *s, const struct srv_service *svc,
			 FILE *out)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char ip[SRV_IP_MAX];

	for (unsigned i = 0; srv_listen_addr(svc, i, &ss, &len) == 0; i++) {
		if (ss.ss_family == AF_INET6) {
			const struct sockaddr_in6 *a = (void *)&ss;

			(void)inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
			(void)fprintf(out, "listening on [%s]:%u (%s)\n", ip,
				      ntohs(a->sin6_port), srv_engine(s));
		} else if (ss.ss_family == AF_INET) {
			const struct sockaddr_in *a = (void *)&ss;

			(void)inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
			(void)fprintf(out, "listening on %s:%u (%s)\n", ip,
				      ntohs(a->sin_port), srv_engine(s));
		} else {
			(void)fprintf(out, "listening on %s (%s)\n",
				      ((const struct sockaddr_un *)&ss)->sun_path,
				      srv_engine(s));
		}
	}
	(void)fflush(out);
}

int srv__listener_open_all(struct srv *s)
{
	if (s->nlisteners == 0)
		return -EDESTADDRREQ;
	return 0;
}

/*
 * Accepting (worker thread).
 */

static void accept_cb(struct ur_op *op);

static int accept_arm(struct srv__accept *acc)
{
	struct srv__acceptor *a = acc->a;

	acc->len = sizeof(acc->addr);
	if (a->w->srv->o.direct)
		return ur_accept_direct_start(a->w->loop, &acc->op, a->fd,
					      (struct sockaddr *)&acc->addr,
					      &acc->len);
	return ur_accept_start(a->w->loop, &acc->op, a->fd,
			       (struct sockaddr *)&acc->addr, &acc->len,
			       SOCK_CLOEXEC);
}

static void retry_cb(struct ur_timer *t, void *arg)
{
	struct srv__acceptor *a = arg;

	(void)t;
	srv__acceptors_resume(a->w);
}

static void acceptor_pause(struct srv__acceptor *a)
{
	a->paused = true;
	atomic_store_explicit(&a->w->paused, true, memory_order_release);
}

static void accept_cb(struct ur_op *op)
{
	struct srv__accept *acc = ur_container_of(op, struct srv__accept, op);
	struct srv__acceptor *a = acc->a;
	struct srv__worker *w = a->w;
	struct srv *s = w->srv;
	int res = op->res;

	if (w->stopping) {
		if (res >= 0) /* raced the stop: serve it, it drains */
			srv__conn_accepted(a, s->o.direct ? UR_FIXED(res) : res,
					   &acc->addr, acc->len);
		return;
	}
	if (res >= 0) {
		srv__conn_accepted(a, s->o.direct ? UR_FIXED(res) : res,
				   &acc->addr, acc->len);
	} else if (res != -ECANCELED) {
		srv__count(w, a->l->svc, SRV__M_ACCEPT_ERRORS, 1);
		if (!a->paused) /* once per pause, not per armed accept */
			srv_logkv(SRV_LOG_WARN, 0, "accept", "service",
				  a->l->svc->name, "error", strerror(-res),
				  NULL);
		if (res == -EMFILE || res == -ENFILE || res == -ENOMEM ||
		    res == -ENOBUFS) {
			/* No descriptor: wait a moment rather than spin. */
			acceptor_pause(a);
			if (!ur_timer_is_armed(&a->retry) &&
			    ur_timer_start(&a->retry, RETRY_NS, retry_cb, a) <
				    0) {
				/* the worker's turn retries paused ones */
			}
			return;
		}
	}
	if (!srv__room(s, a->l->svc) && a->l->svc->busy_reply == NULL) {
		acceptor_pause(a);
		return;
	}
	if (accept_arm(acc) < 0)
		acceptor_pause(a);
}

int srv__acceptors_start(struct srv__worker *w)
{
	struct srv *s = w->srv;

	w->acceptors = calloc(s->nlisteners, sizeof(*w->acceptors));
	if (w->acceptors == NULL)
		return -ENOMEM;
	w->nacceptors = s->nlisteners;
	for (unsigned i = 0; i < s->nlisteners; i++) {
		struct srv__acceptor *a = &w->acceptors[i];
		struct srv__listener *l = s->listeners[i];

		a->l = l;
		a->w = w;
		a->fd = l->per_worker ? l->fds[w->idx] : l->fds[0];
		ur_timer_init(&a->retry, w->loop);
		for (unsigned k = 0; k < SRV__ACCEPTS; k++) {
			a->acc[k].a = a;
			ur_op_init(&a->acc[k].op, accept_cb, NULL);
		}
		/* Armed by srv__acceptors_resume() when srv_run says go. */
		a->paused = true;
	}
	return 0;
}

/* Re-arm the accepts of paused acceptors, if there is room now. */
void srv__acceptors_resume(struct srv__worker *w)
{
	struct srv *s = w->srv;
	bool still = false;

	atomic_store_explicit(&w->paused, false, memory_order_release);
	for (unsigned i = 0; i < w->nacceptors; i++) {
		struct srv__acceptor *a = &w->acceptors[i];

		if (!a->paused)
			continue;
		if (ur_timer_is_armed(&a->retry) ||
		    (!srv__room(s, a->l->svc) &&
		     a->l->svc->busy_reply == NULL)) {
			still = true;
			continue;
		}
		a->paused = false;
		for (unsigned k = 0; k < SRV__ACCEPTS; k++) {
			if (ur_op_is_busy(&a->acc[k].op))
				continue;
			if (accept_arm(&a->acc[k]) < 0) {
				a->paused = true;
				still = true;
			}
		}
	}
	if (still)
		atomic_store_explicit(&w->paused, true, memory_order_release);
}

/*
 * Pause the acceptors of w whose service (or the server) has no room,
 * cancelling the accepts they have armed: without this, each armed
 * accept would still take one connection past the limit. An accept that
 * completed before its cancel is served all the same.
 */
void srv__acceptors_check(struct srv__worker *w)
{
	struct srv *s = w->srv;

	if (w->stopping)
		return;
	for (unsigned i = 0; i < w->nacceptors; i++) {
		struct srv__acceptor *a = &w->acceptors[i];

		if (a->paused || srv__room(s, a->l->svc) ||
		    a->l->svc->busy_reply != NULL)
			continue;
		acceptor_pause(a);
		for (unsigned k = 0; k < SRV__ACCEPTS; k++)
			if (ur_op_is_busy(&a->acc[k].op) &&
			    ur_op_cancel(&a->acc[k].op) < 0) {
				/* it completes by itself and is served */
			}
	}
}

void srv__acceptors_stop(struct srv__worker *w)
{
	for (unsigned i = 0; i < w->nacceptors; i++) {
		struct srv__acceptor *a = &w->acceptors[i];

		if (ur_timer_is_armed(&a->retry) &&
		    ur_timer_stop(&a->retry) < 0) {
			/* disarmed all the same */
		}
		a->paused = false;
		for (unsigned k = 0; k < SRV__ACCEPTS; k++)
			if (ur_op_is_busy(&a->acc[k].op) &&
			    ur_op_cancel(&a->acc[k].op) < 0) {
				/* completes by itself; served as it drains */
			}
	}
	atomic_store(&w->paused, false);
}

/*
 * On stop, once w's accepts are reaped: close the listening sockets w
 * alone uses (its SO_REUSEPORT ones), and a shared one when the last
 * worker is done with it. New clients are then refused by the kernel
 * at once (a load balancer fails over) instead of waiting in a backlog
 * nobody serves; connections already accepted drain.
 */
void srv__listeners_close(struct srv__worker *w)
{
	struct srv *s = w->srv;

	if (w->listeners_closed)
		return;
	w->listeners_closed = true;
	for (unsigned i = 0; i < w->nacceptors; i++) {
		struct srv__listener *l = w->acceptors[i].l;
		int *fdp = l->per_worker ? &l->fds[w->idx] : &l->fds[0];

		if (!l->per_worker &&
		    atomic_fetch_add(&l->unused, 1) + 1 < s->nworkers)
			continue;
		if (*fdp >= 0) {
			close(*fdp);
			*fdp = -1;
		}
	}
}

bool srv__acceptors_idle(const struct srv__worker *w)
{
	for (unsigned i = 0; i < w->nacceptors; i++)
		for (unsigned k = 0; k < SRV__ACCEPTS; k++)
			if (ur_op_is_busy(&w->acceptors[i].acc[k].op))
				return false;
	return true;
}
