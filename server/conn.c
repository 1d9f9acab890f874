/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * server/conn: a connection's life on its worker.
 *
 * Accepted -> record made, limits checked -> a detached fiber runs
 * conn_main: PROXY header (raw socket, before any stream reads ahead),
 * streams, implicit TLS, then the handler. Whatever the handler returns
 * ends in close() below, except SRV_PARK (park.c), which leaves the
 * record, its streams and a poll, and comes back here through
 * srv__conn_spawn(c, true) when woken.
 *
 * The record is reference counted (notifiers may hold it past the
 * close); everything else (streams, socket, arena, hooks) goes at
 * close, on the worker's thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <ringprot/buf.h>
#include <ringprot/prot-layer.h>

#include "internal.h"
#include "proxy.h"

/* Arena chunks: a header and the bytes handed out from it. */
struct chunk {
	struct chunk *next;
	size_t used, size;
	max_align_t data[];
};
#define CHUNK_MIN 1024

void srv__fmt_addr(const struct sockaddr_storage *a, char *ip, size_t n,
		   uint16_t *port_out)
{
	*port_out = 0;
	switch (a->ss_family) {
	case AF_INET: {
		const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;

		inet_ntop(AF_INET, &v4->sin_addr, ip, (socklen_t)n);
		*port_out = ntohs(v4->sin_port);
		return;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)a;

		/* An IPv4 client on a dual-stack socket reads as IPv4. */
		if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr))
			inet_ntop(AF_INET, &v6->sin6_addr.s6_addr[12], ip,
				  (socklen_t)n);
		else
			inet_ntop(AF_INET6, &v6->sin6_addr, ip, (socklen_t)n);
		*port_out = ntohs(v6->sin6_port);
		return;
	}
	case AF_UNIX:
		(void)snprintf(ip, n, "unix");
		return;
	default:
		(void)snprintf(ip, n, "unknown");
		return;
	}
}

socklen_t srv__salen(const struct sockaddr_storage *a)
{
	switch (a->ss_family) {
	case AF_INET:
		return sizeof(struct sockaddr_in);
	case AF_INET6:
		return sizeof(struct sockaddr_in6);
	case AF_UNIX:
		return sizeof(struct sockaddr_un);
	default:
		return 0;
	}
}

static bool is_loopback(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_UNIX)
		return true;
	if (a->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >>
			24) == 127;
	if (a->ss_family == AF_INET6) {
		const struct in6_addr *v6 =
			&((const struct sockaddr_in6 *)a)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(v6) ||
		       (IN6_IS_ADDR_V4MAPPED(v6) && v6->s6_addr[12] == 127);
	}
	return false;
}

static void set_peer(struct srv_conn *c, const struct sockaddr_storage *peer)
{
	c->peer = *peer;
	srv__fmt_addr(peer, c->peer_ip, sizeof(c->peer_ip), &c->peer_port);
	c->secure = c->tls || is_loopback(peer);
}

/* Is there room for one more connection of svc? */
bool srv__room(struct srv *s, struct srv_service *svc)
{
	if (s->o.max_conns != 0 && atomic_load(&s->open) >= s->o.max_conns)
		return false;
	if (svc->o.max_conns != 0 && atomic_load(&svc->open) >= svc->o.max_conns)
		return false;
	return true;
}

void *srv_conn_alloc(struct srv_conn *pub, size_t n)
{
	struct srv__conn *c = srv__conn_of(pub);
	struct chunk *ch = c->arena;
	size_t align = sizeof(max_align_t);
	size_t need = (n + align - 1) / align * align;
	void *p;

	if (n == 0 || need < n)
		return NULL;
	if (ch == NULL || ch->size - ch->used < need) {
		size_t size = need > CHUNK_MIN ? need : CHUNK_MIN;

		ch = calloc(1, sizeof(*ch) + size);
		if (ch == NULL)
			return NULL;
		ch->size = size;
		ch->next = c->arena;
		c->arena = ch;
	}
	p = (char *)ch->data + ch->used;
	ch->used += need;
	return p;
}

int srv_conn_on_close(struct srv_conn *pub, srv_cleanup_fn *fn, void *arg)
{
	struct srv__conn *c = srv__conn_of(pub);
	struct srv__hook *h = malloc(sizeof(*h));

	if (h == NULL)
		return -ENOMEM;
	h->fn = fn;
	h->arg = arg;
	h->next = c->hooks;
	c->hooks = h;
	return 0;
}

void srv_conn_ref(struct srv_conn *pub)
{
	atomic_fetch_add(&srv__conn_of(pub)->refs, 1);
}

void srv_conn_unref(struct srv_conn **cp)
{
	struct srv__conn *c;

	if (*cp == NULL)
		return;
	c = srv__conn_of(*cp);
	*cp = NULL;
	if (atomic_fetch_sub(&c->refs, 1) == 1)
		free(c);
}

/* The socket's close completed: the close's reference goes. */
static void close_done(struct ur_op *op)
{
	struct srv__conn *c = op->data;
	struct srv_conn *self = &c->pub;

	c->w->closing--;
	srv_conn_unref(&self);
}

/*
 * Close c on its worker (from its fiber): streams, socket, counters,
 * hooks, arena; the record goes with its last reference. The socket is
 * closed through a callback op, never a blocking call: a fiber the drain
 * cancelled still closes its socket (a direct descriptor has no other
 * way out of the table).
 */
static void conn_close(struct srv__conn *c)
{
	struct srv_conn *pub = &c->pub;
	struct srv__worker *w = c->w;
	struct srv *s = w->srv;
	struct srv_conn *self = pub;

	atomic_store(&c->closed, true);
	if (pub->in != NULL)
		srv__count(w, pub->service, SRV__M_BYTES_IN,
			   (int64_t)prot_bytes_in(pub->in));
	if (pub->out != NULL) {
		if (!prot_IS_ERROR(pub->out) && prot_flush(pub->out) == EOF) {
			/* the peer is gone: nothing more to tell it */
		}
		srv__count(w, pub->service, SRV__M_BYTES_OUT,
			   (int64_t)prot_bytes_out(pub->out));
		prot_free(pub->out);
		pub->out = NULL;
	}
	if (pub->in != NULL) {
		prot_free(pub->in);
		pub->in = NULL;
	}
	ur_op_init(&c->park_op, close_done, c);
	if (ur_close_start(w->loop, &c->park_op, pub->fd) == 0) {
		w->closing++;
		srv_conn_ref(pub); /* close_done's */
	} else if (!UR_IS_FIXED(pub->fd)) {
		close(pub->fd);
	}
	pub->fd = -1;
	srv__tlsctx_put(&c->tls_ctx);
	while (c->hooks != NULL) {
		struct srv__hook *h = c->hooks;

		c->hooks = h->next;
		h->fn(h->arg);
		free(h);
	}
	while (c->arena != NULL) {
		struct chunk *ch = c->arena;

		c->arena = ch->next;
		free(ch);
	}
	if (c->ip_counted)
		srv__ip_put(&c->pub.peer);
	c->state = SRV__CLOSED;
	ur_list_del(&c->link);
	srv__count(w, pub->service, SRV__M_CONNECTIONS_OPEN, -1);
	atomic_fetch_sub(&s->open, 1);
	atomic_fetch_sub(&pub->service->open, 1);
	srv__conn_released(w);
	srv_conn_unref(&self);
}

/* The PROXY header, from the raw socket. 0, or -errno (close). */
static int read_proxy(struct srv__conn *c)
{
	struct srv_conn *pub = &c->pub;
	struct srv__proxy_hdr h;
	uint64_t deadline = ur_now_ns(CLOCK_MONOTONIC) +
			    (uint64_t)pub->service->o.proxy_timeout_ms *
				    1000000ull;
	int ret;

	if (c->l->trust != NULL &&
	    !srv__proxy_trusted(c->l->trust,
				(const struct sockaddr *)&pub->peer)) {
		srv_logkv(SRV_LOG_WARN, pub->id, "proxy", "ip", pub->peer_ip,
			  "error", "PROXY header from an untrusted source",
			  NULL);
		srv__count(c->w, pub->service, SRV__M_PROXY_ERRORS, 1);
		return -EPERM;
	}
	ret = srv__proxy_read(pub->fd, deadline, &h);
	if (ret < 0) {
		srv_logkv(SRV_LOG_WARN, pub->id, "proxy", "ip", pub->peer_ip,
			  "error",
			  ret == -EPROTO && h.error != NULL ? h.error :
							      strerror(-ret),
			  NULL);
		srv__count(c->w, pub->service, SRV__M_PROXY_ERRORS, 1);
		return ret;
	}
	if (h.family == AF_INET || h.family == AF_INET6) {
		pub->local = h.dst;
		pub->proxied = true;
		set_peer(pub, &h.src);
	}
	/* The per-IP limit counts the real client (accept left it out:
	 * every connection there came from the proxy). A LOCAL header
	 * (the proxy's health check) counts the proxy. */
	if (!srv__ip_take(&pub->peer, pub->service->o.max_conns_per_ip)) {
		srv_logkv(SRV_LOG_WARN, pub->id, "refused", "ip", pub->peer_ip,
			  "reason", "per_ip_limit", NULL);
		srv__count(c->w, pub->service, SRV__M_REFUSED_LIMIT, 1);
		return -EUSERS;
	}
	c->ip_counted = pub->service->o.max_conns_per_ip != 0;
	return 0;
}

static int do_tls(struct srv__conn *c)
{
	struct srv_conn *pub = &c->pub;
	const char *why = NULL;
	int ret;

	if (c->tls_ctx == NULL)
		c->tls_ctx = srv__tlsctx_get(c->w->srv);
	if (c->tls_ctx == NULL)
		return -ENOTSUP;
	ret = pl_tls_accept(pub->in, pub->out, c->tls_ctx,
			    (int)pub->service->o.tls_timeout_ms, &why);
	if (ret < 0) {
		srv__count(c->w, pub->service, SRV__M_TLS_FAILURES, 1);
		srv_logkv(SRV_LOG_WARN, pub->id, "tls", "ip", pub->peer_ip,
			  "error", why != NULL ? why : strerror(-ret), NULL);
		return ret;
	}
	pub->tls = true;
	pub->secure = true;
	srv__count(c->w, pub->service, SRV__M_TLS_HANDSHAKES, 1);
	return 0;
}

int srv_conn_starttls(struct srv_conn *pub)
{
	if (pub->tls)
		return -EALREADY;
	return do_tls(srv__conn_of(pub));
}

/* Streams and the first steps before the handler. 0 or -errno. */
static int conn_setup(struct srv__conn *c)
{
	struct srv_conn *pub = &c->pub;
	const struct srv_service_opts *so = &pub->service->o;
	int ret;

	if (c->l->o.proxy) {
		ret = read_proxy(c);
		if (ret < 0)
			return ret;
	}
	pub->in = prot_new(pub->fd, 0);
	pub->out = prot_new(pub->fd, 1);
	if (pub->in == NULL || pub->out == NULL) {
		srv_logkv(SRV_LOG_ERR, pub->id, "close", "ip", pub->peer_ip,
			  "error", "no memory for its streams", NULL);
		return -ENOMEM;
	}
	prot_setflushonread(pub->in, pub->out);
	if (so->idle_timeout_s != 0 &&
	    prot_settimeout(pub->in, (int)so->idle_timeout_s) == EOF)
		return -EINVAL;
	if (so->write_timeout_s != 0 &&
	    prot_setwritetimeout(pub->out, (int)so->write_timeout_s) == EOF)
		return -EINVAL;
	if (c->busy)
		return 0;
	if (c->l->o.tls) {
		ret = do_tls(c);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* At debug level: who connected, as the handler sees it. */
static void log_connect(const struct srv__conn *c)
{
	const struct srv_conn *pub = &c->pub;
	struct srv_logline l;

	if (!srv_logline_begin(&l, SRV_LOG_DEBUG, pub->id, "connect"))
		return;
	srv_logline_str(&l, "service", pub->service->name);
	srv_logline_str(&l, "ip", pub->peer_ip);
	srv_logline_u64(&l, "port", pub->peer_port);
	srv_logline_u64(&l, "worker", pub->worker);
	if (pub->proxied)
		srv_logline_str(&l, "proxied", "yes");
	if (pub->tls)
		srv_logline_str(&l, "tls", "yes");
	srv_logline_end(&l);
}

static int conn_main(void *arg)
{
	struct srv__conn *c = arg;
	struct srv_conn *pub = &c->pub;
	int ret;

	if (c->state == SRV__RUNNING && pub->in == NULL) {
		/* First run: set up, then the handler. */
		ret = conn_setup(c);
		if (ret < 0) {
			/* Logged and counted where it failed (PROXY, TLS,
			 * per-IP limit): the close needs no second line. */
			conn_close(c);
			return 0;
		}
		if (c->busy) {
			/* A TLS client would take a plaintext refusal for
			 * garbage: it only sees the close. */
			if (pub->service->busy_reply != NULL && !c->l->o.tls &&
			    prot_puts(pub->out, pub->service->busy_reply) ==
				    EOF) {
				/* closing anyway */
			}
		} else {
			log_connect(c);
			ret = pub->service->o.handler(pub);
		}
	} else {
		/* Woken from a park: srv__park runs resume with the wake
		 * reasons gathered meanwhile. */
		c->state = SRV__RUNNING;
		srv__count(c->w, pub->service, SRV__M_CONNECTIONS_PARKED, -1);
		ret = SRV_PARK;
	}
	if (ret == SRV_PARK) {
		ret = srv__park(c);
		if (ret == SRV_PARK) {
			c->fiber = NULL;
			return 0; /* parked: the fiber ends, the record waits */
		}
	}
	if (ret == -ETIMEDOUT)
		srv__count(c->w, pub->service, SRV__M_TIMEOUTS, 1);
	else if (ret < 0 && ret != -ECANCELED && ret != -ENOTCONN)
		srv__count(c->w, pub->service, SRV__M_ERRORS, 1);
	if (ret < 0 && ret != -ECANCELED && ret != -ENOTCONN)
		srv_logkv(SRV_LOG_INFO, pub->id, "close", "ip", pub->peer_ip,
			  "error", strerror(-ret), NULL);
	conn_close(c);
	/* c may be gone: only the fiber's own state below. */
	return 0;
}

int srv__conn_spawn(struct srv__conn *c, bool resume)
{
	struct ur_fiber_opts fo = {.name = resume ? "srv-resume" : "srv-conn"};
	struct ur_fiber *f;
	int ret;

	(void)resume;
	ret = ur_fiber_spawn(c->w->loop, conn_main, c, &fo, &f);
	if (ret < 0)
		return ret;
	c->fiber = f;
	ur_fiber_detach(f);
	return 0;
}

void srv__conn_accepted(struct srv__acceptor *a, int fd,
			const struct sockaddr_storage *peer, socklen_t plen)
{
	struct srv__worker *w = a->w;
	struct srv *s = w->srv;
	struct srv_service *svc = a->l->svc;
	struct srv__conn *c;
	bool room = srv__room(s, svc);
	struct sockaddr_storage local;
	socklen_t llen = sizeof(local);

	if (!room && svc->busy_reply == NULL) {
		/* Raced another worker to the last slot: serve it anyway
		 * (never drop accepted work); the acceptor pauses. */
		room = true;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		srv_logkv(SRV_LOG_ERR, 0, "accept", "service", svc->name,
			  "error", "out of memory", NULL);
		srv__count(w, svc, SRV__M_ACCEPT_ERRORS, 1);
		if (ur_close(fd) < 0) {
			/* nothing else to do */
		}
		return;
	}
	atomic_init(&c->refs, 1);
	c->w = w;
	c->l = a->l;
	c->pub.fd = fd;
	c->pub.worker = w->idx;
	c->pub.service = svc;
	c->pub.id = atomic_fetch_add(&s->next_id, 1);
	c->state = SRV__RUNNING;
	ur_op_init(&c->park_op, NULL, c);
	ur_timer_init(&c->park_timer, w->loop);
	if (plen == 0 || peer->ss_family == AF_UNSPEC) {
		struct sockaddr_storage none = {.ss_family = AF_UNIX};

		set_peer(&c->pub, &none);
	} else {
		set_peer(&c->pub, peer);
	}
	/* The local address: the listener's, or the socket's own when the
	 * listener is a wildcard and the fd is a real one (a syscall only
	 * then). */
	c->pub.local = a->l->bound;
	if (a->l->wildcard && !UR_IS_FIXED(fd) &&
	    getsockname(fd, (struct sockaddr *)&local, &llen) == 0)
		c->pub.local = local;
	ur_list_add_tail(&w->conns, &c->link);
	srv__count(w, svc, SRV__M_CONNECTIONS_OPEN, 1);
	srv__count(w, svc, SRV__M_CONNECTIONS, 1);
	srv__count(w, svc, SRV__M_ACCEPTS, 1);
	atomic_fetch_add(&s->open, 1);
	atomic_fetch_add(&svc->open, 1);
	if (room && !srv__room(s, svc))
		srv__limit_reached(w); /* this one filled it */
	if (!room) {
		c->busy = true;
		srv__count(w, svc, SRV__M_REFUSED_LIMIT, 1);
		srv_logkv(SRV_LOG_WARN, c->pub.id, "refused", "service",
			  svc->name, "ip", c->pub.peer_ip, "reason", "max_conns",
			  NULL);
	} else if (!a->l->o.proxy &&
		   !srv__ip_take(&c->pub.peer, svc->o.max_conns_per_ip)) {
		c->busy = true;
		srv__count(w, svc, SRV__M_REFUSED_LIMIT, 1);
		srv_logkv(SRV_LOG_WARN, c->pub.id, "refused", "service",
			  svc->name, "ip", c->pub.peer_ip, "reason",
			  "per_ip_limit", NULL);
	} else {
		/* Behind a proxy the client is known after its header. */
		c->ip_counted = !a->l->o.proxy && svc->o.max_conns_per_ip != 0;
	}
	if (srv__conn_spawn(c, false) < 0) {
		srv_logkv(SRV_LOG_ERR, c->pub.id, "accept", "service",
			  svc->name, "error", "no fiber: out of memory", NULL);
		srv__count(w, svc, SRV__M_ACCEPT_ERRORS, 1);
		c->state = SRV__CLOSED;
		if (c->ip_counted)
			srv__ip_put(&c->pub.peer);
		ur_list_del(&c->link);
		srv__count(w, svc, SRV__M_CONNECTIONS_OPEN, -1);
		atomic_fetch_sub(&s->open, 1);
		atomic_fetch_sub(&svc->open, 1);
		if (ur_close(fd) < 0) {
			/* nothing else to do */
		}
		free(c);
	}
}

/*
 * Lines.
 */
/* Make room for one more byte and the NUL. 0 or -ENOMEM. */
static int line_room(struct buf *line)
{
	size_t want;
	char *p;

	if (line->len + 2 <= line->alloc)
		return 0;
	want = line->alloc < 128 ? 128 : line->alloc * 2;
	p = realloc(line->s, want);
	if (p == NULL)
		return -ENOMEM;
	line->s = p;
	line->alloc = want;
	return 0;
}

int srv_readline(struct protstream *in, struct buf *line, size_t max)
{
	size_t n = 0;
	bool over = false;
	int ch;

	if (line->alloc == 0)
		line->s = NULL; /* borrowed bytes are not ours to grow */
	line->len = 0;
	if (line_room(line) < 0)
		return -ENOMEM;
	for (;;) {
		ch = prot_getc(in);
		if (ch == EOF || ch == '\n')
			break;
		if (n >= max) {
			over = true;
			continue;
		}
		if (line_room(line) < 0)
			return -ENOMEM;
		line->s[line->len++] = (char)ch;
		n++;
	}
	if (line->len > 0 && line->s[line->len - 1] == '\r' && !over)
		line->len--;
	line->s[line->len] = '\0';
	if (ch == EOF) {
		if (prot_IS_ERROR(in))
			return prot_errno(in);
		if (n == 0 && !over)
			return -ENOTCONN;
	}
	if (over)
		return -EMSGSIZE;
	return (int)line->len;
}
