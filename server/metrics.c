/* SPDX-License-Identifier: BSD-3-Clause */
/* server/metrics: per-worker counters, Prometheus text, the /metrics GET. */
#include "metrics.h"

/*
 * Design: a shard per worker, each written by its worker alone, so a bump
 * is a plain relaxed load and store of an atomic in memory no other core
 * writes (each shard's rows are their own cache lines). Every reader
 * (render, dump, totals) only loads: there is no lock anywhere and no
 * reader can stall a worker. Ring statistics are published into the
 * shard by the worker itself (srv__metrics_publish_ring), so rendering
 * never touches a loop.
 *
 * The HTTP side is deliberately tiny: one request head, read a byte at a
 * time through the stream (buffered, so no syscall per byte), bounded in
 * every dimension, answered once with Connection: close. It trusts
 * nothing from the client: a bad byte anywhere in the head is a 400.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ringprot/prot.h>
#include <ringprot/srv-log.h>
#include <ringprot/uring.h>

struct srv__metrics {
	unsigned nworkers;
	unsigned nservices; /* rows per shard, at least 1 */
	bool labelled;	    /* rows carry service names */
	char **services;
	struct srv__metrics_shard *shards;
};

struct desc {
	const char *name; /* after ringprot_, before any _total */
	const char *help;
	bool gauge;
};

static const struct desc svc_desc[SRV__M_SVC_COUNT] = {
	[SRV__M_CONNECTIONS_OPEN] = {"connections_open",
				     "Connections open now.", true},
	[SRV__M_CONNECTIONS_PARKED] = {"connections_parked",
				       "Connections parked without a fiber.",
				       true},
	[SRV__M_CONNECTIONS] = {"connections",
				"Connections served since the start.", false},
	[SRV__M_ACCEPTS] = {"accepts", "Connections accepted.", false},
	[SRV__M_ACCEPT_ERRORS] = {"accept_errors", "Accepts that failed.",
				  false},
	[SRV__M_REFUSED_LIMIT] = {"refused_limit",
				  "Connections refused by a limit.", false},
	[SRV__M_BYTES_IN] = {"bytes_in", "Bytes received from clients.", false},
	[SRV__M_BYTES_OUT] = {"bytes_out", "Bytes sent to clients.", false},
	[SRV__M_ERRORS] = {"errors", "Connections ended by an error.", false},
	[SRV__M_TIMEOUTS] = {"timeouts", "Connections ended by a timeout.",
			     false},
	[SRV__M_TLS_HANDSHAKES] = {"tls_handshakes",
				   "TLS handshakes completed.", false},
	[SRV__M_TLS_FAILURES] = {"tls_failures", "TLS handshakes failed.",
				 false},
	[SRV__M_AUTH_SUCCESS] = {"auth_success", "Authentications accepted.",
				 false},
	[SRV__M_AUTH_FAILURE] = {"auth_failure", "Authentications refused.",
				 false},
	[SRV__M_PROXY_ERRORS] = {"proxy_errors",
				 "Connections with a bad PROXY header.", false},
};

static const struct desc worker_desc[SRV__M_WORKER_COUNT] = {
	[SRV__M_RING_ENTERS] = {"ring_enters",
				"Kernel enters (io_uring_enter or epoll).",
				false},
	[SRV__M_RING_SUBMITS] = {"ring_submits", "Enters that submitted.",
				 false},
	[SRV__M_RING_CQES] = {"ring_cqes", "Completions dispatched.", false},
	[SRV__M_RING_SQ_FULL] = {"ring_sq_full",
				 "Times the submission queue was full.", false},
	[SRV__M_RING_CQ_OVERFLOW] = {"ring_cq_overflow",
				     "Times the kernel held completions back.",
				     false},
	[SRV__M_RING_ENOBUFS] = {"ring_enobufs",
				 "Receives that found no provided buffer.",
				 false},
	[SRV__M_RING_OPS_INFLIGHT] = {"ring_ops_inflight",
				      "Operations in flight.", true},
	[SRV__M_FIBERS_LIVE] = {"fibers_live", "Fibers alive.", true},
	[SRV__M_STACKS_MAPPED] = {"fiber_stacks_mapped",
				  "Fiber stacks mapped, pooled or in use.",
				  true},
};

int srv__metrics_new(unsigned nworkers, const char *const *services,
		     unsigned nservices, struct srv__metrics **m_out)
{
	struct srv__metrics *m;
	size_t row_bytes;

	if (nworkers == 0 || (nservices > 0 && services == NULL))
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	m->nworkers = nworkers;
	m->labelled = nservices > 0;
	m->nservices = nservices > 0 ? nservices : 1;
	m->shards = aligned_alloc(64, sizeof(*m->shards) * nworkers);
	m->services = calloc(m->nservices, sizeof(*m->services));
	if (m->shards == NULL || m->services == NULL)
		goto out_free;
	memset(m->shards, 0, sizeof(*m->shards) * nworkers);
	for (unsigned i = 0; i < nservices; i++) {
		m->services[i] = strdup(services[i] ? services[i] : "");
		if (m->services[i] == NULL)
			goto out_free;
	}
	/* Each shard's rows on cache lines of their own. */
	row_bytes = sizeof(_Atomic uint64_t) * SRV__M_SVC_COUNT * m->nservices;
	row_bytes = (row_bytes + 63) & ~(size_t)63;
	for (unsigned w = 0; w < nworkers; w++) {
		m->shards[w].nservices = m->nservices;
		m->shards[w].svc = aligned_alloc(64, row_bytes);
		if (m->shards[w].svc == NULL)
			goto out_free;
		for (size_t i = 0; i < SRV__M_SVC_COUNT * m->nservices; i++)
			atomic_init(&m->shards[w].svc[i], 0);
		for (size_t i = 0; i < SRV__M_WORKER_COUNT; i++)
			atomic_init(&m->shards[w].worker[i], 0);
	}
	*m_out = m;
	return 0;

out_free:
	srv__metrics_free(&m);
	return -ENOMEM;
}

void srv__metrics_free(struct srv__metrics **mp)
{
	struct srv__metrics *m = *mp;

	if (m == NULL)
		return;
	*mp = NULL;
	if (m->shards != NULL) {
		for (unsigned w = 0; w < m->nworkers; w++)
			free(m->shards[w].svc);
	}
	if (m->services != NULL) {
		for (unsigned i = 0; i < m->nservices; i++)
			free(m->services[i]);
	}
	free(m->services);
	free(m->shards);
	free(m);
}

struct srv__metrics_shard *srv__metrics_shard(struct srv__metrics *m,
					      unsigned w)
{
	return w < m->nworkers ? &m->shards[w] : NULL;
}

static void set_worker(struct srv__metrics_shard *s, enum srv__mworker id,
		       uint64_t v)
{
	atomic_store_explicit(&s->worker[id], v, memory_order_relaxed);
}

void srv__metrics_publish_ring(struct srv__metrics_shard *s,
			       const struct ur_loop_stats *st)
{
	set_worker(s, SRV__M_RING_ENTERS, st->enters);
	set_worker(s, SRV__M_RING_SUBMITS, st->submits);
	set_worker(s, SRV__M_RING_CQES, st->cqes);
	set_worker(s, SRV__M_RING_SQ_FULL, st->sq_full);
	set_worker(s, SRV__M_RING_CQ_OVERFLOW, st->cq_overflow);
	set_worker(s, SRV__M_RING_OPS_INFLIGHT, st->ops_inflight);
	set_worker(s, SRV__M_FIBERS_LIVE, st->fibers_live);
	set_worker(s, SRV__M_STACKS_MAPPED, st->stacks_mapped);
	set_worker(s, SRV__M_RING_ENOBUFS, st->enobufs);
}

static uint64_t load(const _Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

/* Sums wrap like the per-shard values; gauges read back signed. */
static uint64_t svc_sum(const struct srv__metrics *m, unsigned svc,
			enum srv__msvc id)
{
	uint64_t sum = 0;

	for (unsigned w = 0; w < m->nworkers; w++)
		sum += load(
			&m->shards[w].svc[(size_t)svc * SRV__M_SVC_COUNT + id]);
	return sum;
}

int64_t srv__metrics_total(const struct srv__metrics *m, int svc,
			   enum srv__msvc id)
{
	uint64_t sum = 0;

	if (svc >= 0)
		return (int64_t)svc_sum(m, (unsigned)svc, id);
	for (unsigned i = 0; i < m->nservices; i++)
		sum += svc_sum(m, i, id);
	return (int64_t)sum;
}

int64_t srv__metrics_worker_total(const struct srv__metrics *m,
				  enum srv__mworker id)
{
	uint64_t sum = 0;

	for (unsigned w = 0; w < m->nworkers; w++)
		sum += load(&m->shards[w].worker[id]);
	return (int64_t)sum;
}

/* ------------------------------------------------------------------ */
/* Rendering into a struct buf (Cyrus layout: alloc 0 means borrowed). */

static int buf_reserve(struct buf *b, size_t more)
{
	size_t want = b->len + more + 1, cap;
	char *s;

	if (b->alloc >= want)
		return 0;
	cap = b->alloc > 256 ? b->alloc : 256;
	while (cap < want)
		cap *= 2;
	if (b->alloc == 0 && b->s != NULL) {
		s = malloc(cap);
		if (s != NULL)
			memcpy(s, b->s, b->len);
	} else {
		s = realloc(b->s, cap);
	}
	if (s == NULL)
		return -ENOMEM;
	b->s = s;
	b->alloc = cap;
	return 0;
}

static int buf_add(struct buf *b, const char *s, size_t n)
{
	if (buf_reserve(b, n) < 0)
		return -ENOMEM;
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
	return 0;
}

static int buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int buf_printf(struct buf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -EINVAL; /* our own formats are short */
	return buf_add(b, tmp, (size_t)n);
}

/* A label value: \\, \" and \n escaped (exposition format 0.0.4). */
static int buf_label(struct buf *b, const char *v)
{
	for (; *v != '\0'; v++) {
		const char *e = *v == '\\'   ? "\\\\"
				: *v == '"'  ? "\\\""
				: *v == '\n' ? "\\n"
					     : NULL;
		int ret = e ? buf_add(b, e, 2) : buf_add(b, v, 1);

		if (ret < 0)
			return ret;
	}
	return 0;
}

static int family_head(struct buf *b, const struct desc *d)
{
	const char *suffix = d->gauge ? "" : "_total";
	const char *type = d->gauge ? "gauge" : "counter";

	return buf_printf(b,
			  "# HELP ringprot_%s%s %s\n# TYPE ringprot_%s%s %s\n",
			  d->name, suffix, d->help, d->name, suffix, type);
}

static int sample(struct buf *b, const struct desc *d, const char *label,
		  const char *value, uint64_t v)
{
	int ret = buf_printf(b, "ringprot_%s%s", d->name,
			     d->gauge ? "" : "_total");

	if (ret == 0 && label != NULL) {
		ret = buf_printf(b, "{%s=\"", label);
		if (ret == 0)
			ret = buf_label(b, value);
		if (ret == 0)
			ret = buf_add(b, "\"}", 2);
	}
	if (ret < 0)
		return ret;
	if (d->gauge)
		return buf_printf(b, " %" PRId64 "\n", (int64_t)v);
	return buf_printf(b, " %" PRIu64 "\n", v);
}

static int render_all(const struct srv__metrics *m, struct buf *out)
{
	char wname[16];
	int ret;

	for (unsigned id = 0; id < SRV__M_SVC_COUNT; id++) {
		ret = family_head(out, &svc_desc[id]);
		for (unsigned i = 0; ret == 0 && i < m->nservices; i++)
			ret = sample(out, &svc_desc[id],
				     m->labelled ? "service" : NULL,
				     m->services[i], svc_sum(m, i, id));
		if (ret < 0)
			return ret;
	}
	for (unsigned id = 0; id < SRV__M_WORKER_COUNT; id++) {
		ret = family_head(out, &worker_desc[id]);
		for (unsigned w = 0; ret == 0 && w < m->nworkers; w++) {
			snprintf(wname, sizeof(wname), "%u", w);
			ret = sample(out, &worker_desc[id], "worker", wname,
				     load(&m->shards[w].worker[id]));
		}
		if (ret < 0)
			return ret;
	}
	return buf_printf(out,
			  "# HELP ringprot_log_dropped_total Log lines that "
			  "could not be written.\n"
			  "# TYPE ringprot_log_dropped_total counter\n"
			  "ringprot_log_dropped_total %" PRIu64 "\n",
			  srv_log_dropped());
}

int srv__metrics_render(const struct srv__metrics *m, struct buf *out)
{
	size_t had = out->len;
	int ret = render_all(m, out);

	if (ret < 0 && out->alloc > 0) {
		out->len = had;
		out->s[had] = '\0';
	}
	return ret;
}

int srv__metrics_render_cb(struct buf *out, void *rock)
{
	return srv__metrics_render(rock, out);
}

void srv__metrics_log(const struct srv__metrics *m)
{
	struct srv_logline l;
	char key[48];

	if (!srv_logline_begin(&l, SRV_LOG_INFO, 0, "metrics"))
		return;
	for (unsigned id = 0; id < SRV__M_SVC_COUNT; id++) {
		const struct desc *d = &svc_desc[id];

		snprintf(key, sizeof(key), "%s%s", d->name,
			 d->gauge ? "" : "_total");
		srv_logline_i64(&l, key, srv__metrics_total(m, -1, id));
	}
	for (unsigned id = 0; id < SRV__M_WORKER_COUNT; id++) {
		const struct desc *d = &worker_desc[id];

		snprintf(key, sizeof(key), "%s%s", d->name,
			 d->gauge ? "" : "_total");
		srv_logline_i64(&l, key, srv__metrics_worker_total(m, id));
	}
	srv_logline_end(&l);
}

/* ------------------------------------------------------------------ */
/* The HTTP endpoint. */

#define REQLINE_MAX 1024
#define HEADER_MAX  4096
#define HEADERS_MAX 64

enum line_res {
	LINE_OK,
	LINE_EOF,  /* EOF, timeout or error before the newline */
	LINE_LONG, /* over the bound: the rest is not read */
};

/*
 * One line into buf (without CR LF, NUL-terminated). *bad is set for
 * bytes no request head may hold (controls other than a final CR, DEL).
 */
static enum line_res read_line(struct protstream *in, char *buf, size_t max,
			       size_t *len_out, bool *bad)
{
	size_t n = 0;
	int c;

	for (;;) {
		c = prot_getc(in);
		if (c == EOF)
			return LINE_EOF;
		if (c == '\n')
			break;
		if (n + 1 >= max)
			return LINE_LONG;
		if ((c < ' ' && c != '\r' && c != '\t') || c == 0x7f)
			*bad = true;
		buf[n++] = (char)c;
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	/* A CR anywhere else is a bare CR: not allowed in a head. */
	if (memchr(buf, '\r', n) != NULL)
		*bad = true;
	buf[n] = '\0';
	*len_out = n;
	return LINE_OK;
}

static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

static size_t token_len(const char *s)
{
	size_t n = 0;

	while (is_tchar((unsigned char)s[n]))
		n++;
	return n;
}

struct request {
	int status; /* decided so far: 0 (not yet) or an error status */
	bool head;
	bool get;
	bool metrics_path;
};

/* RFC 9112 §3: method SP request-target SP HTTP-version. */
static void parse_request_line(char *line, struct request *r)
{
	size_t mlen = token_len(line);
	char *target, *version, *q;

	if (mlen == 0 || line[mlen] != ' ')
		goto bad;
	line[mlen] = '\0';
	target = line + mlen + 1;
	version = strchr(target, ' ');
	if (version == NULL || version == target)
		goto bad;
	*version++ = '\0';
	if (strcmp(version, "HTTP/1.1") != 0 &&
	    strcmp(version, "HTTP/1.0") != 0)
		goto bad;
	for (q = target; *q != '\0'; q++) {
		if (*q == ' ' || *q == '\t' || (unsigned char)*q >= 0x7f)
			goto bad;
	}
	/* Absolute form: only the path counts. */
	if (strncmp(target, "http://", 7) == 0) {
		target = strchr(target + 7, '/');
		if (target == NULL)
			target = "/";
	}
	if (target[0] != '/')
		goto bad;
	q = strchr(target, '?');
	if (q != NULL)
		*q = '\0';
	r->metrics_path = strcmp(target, "/metrics") == 0;
	r->get = strcmp(line, "GET") == 0;
	r->head = strcmp(line, "HEAD") == 0;
	return;
bad:
	r->status = 400;
}

/* RFC 9112 §5: field-name ":" OWS value; no obs-fold, no space before ':'. */
static bool header_ok(const char *line)
{
	size_t n = token_len(line);

	return n > 0 && line[n] == ':';
}

/*
 * Read the head. Returns 0 with r->status 0 (well formed) or an error
 * status, or -EPIPE if the head ended early with nothing decided.
 */
static int read_head(struct protstream *in, struct request *r, char *line)
{
	size_t len;
	bool bad = false;
	enum line_res res;
	int empty = 0, headers = 0;

	/* RFC 9112 §2.2: empty lines before the request line are ignored. */
	do {
		res = read_line(in, line, REQLINE_MAX, &len, &bad);
	} while (res == LINE_OK && len == 0 && !bad && ++empty < 4);
	if (res == LINE_EOF)
		return -EPIPE;
	if (res == LINE_LONG) {
		r->status = 400;
		return 0;
	}
	/* A bad line still has its head read, so none of it is left unread. */
	if (bad || len == 0)
		r->status = 400;
	else
		parse_request_line(line, r);
	bad = false;
	for (;;) {
		res = read_line(in, line, HEADER_MAX, &len, &bad);
		if (res == LINE_EOF)
			return r->status != 0 ? 0 : -EPIPE;
		if (res == LINE_LONG || bad || ++headers > HEADERS_MAX) {
			r->status = 400;
			return 0;
		}
		if (len == 0)
			return 0;
		if (!header_ok(line))
			r->status = 400;
	}
}

static const char *reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	default:
		return "Internal Server Error";
	}
}

static int answer(struct protstream *out, int status, bool head,
		  const char *ctype, const char *body, size_t len)
{
	if (prot_printf(out,
			"HTTP/1.1 %d %s\r\n"
			"Content-Type: %s\r\n"
			"Content-Length: %zu\r\n"
			"%s"
			"Connection: close\r\n\r\n",
			status, reason(status), ctype, len,
			status == 405 ? "Allow: GET, HEAD\r\n" : "") == EOF)
		return -EIO;
	if (!head && len > 0 && prot_write(out, body, (unsigned)len) == EOF)
		return -EIO;
	if (prot_flush(out) == EOF)
		return -EIO;
	return status;
}

int srv__metrics_http(struct protstream *in, struct protstream *out,
		      srv__metrics_render_fn *render, void *rock)
{
	static const char text[] = "text/plain; charset=utf-8";
	struct request r = {0};
	struct buf body = BUF_INITIALIZER;
	char *line;
	const char *msg;
	int ret;

	line = malloc(HEADER_MAX); /* off the fiber's stack */
	if (line == NULL)
		return -ENOMEM;
	ret = read_head(in, &r, line);
	free(line);
	if (ret < 0)
		return ret;
	if (r.status == 0 && !r.metrics_path)
		r.status = 404;
	else if (r.status == 0 && !r.get && !r.head)
		r.status = 405;
	if (r.status != 0) {
		msg = r.status == 400	? "bad request\n"
		      : r.status == 404 ? "not found: try /metrics\n"
					: "method not allowed\n";
		return answer(out, r.status, r.head, text, msg, strlen(msg));
	}
	if (render(&body, rock) < 0 || body.len > UINT32_MAX) {
		free(body.s);
		msg = "cannot render metrics\n";
		return answer(out, 500, r.head, text, msg, strlen(msg));
	}
	ret = answer(out, 200, r.head,
		     "text/plain; version=0.0.4; charset=utf-8", body.s,
		     body.len);
	free(body.s);
	return ret;
}
