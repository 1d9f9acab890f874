/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/layer-tls-hs: TLS handshakes and shutdown on the ring, ALPN. */
#include "layer-tls.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <ringprot/prot-layer.h>

/* Bytes per ring read during a handshake (a full record and a bit). */
#define HS_BUF 17408

/*
 * Handshake I/O: the ciphertext goes straight between the socket and
 * the BIOs, with one deadline for the whole handshake that each wait
 * gives to ur_op_wait_until(). The op and the buffer live on the heap,
 * never on a fiber stack.
 */
struct wire {
	struct ur_op op;
	struct ur_loop *loop;
	uint64_t deadline_ns; /* CLOCK_MONOTONIC; 0: none */
	unsigned char buf[HS_BUF];
};

static int wire_init(struct wire *w, int timeout_ms)
{
	int ret = ur_loop_get(&w->loop);

	if (ret < 0)
		return ret;
	ur_op_init(&w->op, NULL, NULL);
	if (timeout_ms > 0)
		w->deadline_ns = ur_now_ns(CLOCK_MONOTONIC) +
				 (uint64_t)timeout_ms * 1000000ULL;
	return 0;
}

/* The deadline passed: start no more I/O. */
static bool wire_expired(const struct wire *w)
{
	return w->deadline_ns != 0 &&
	       ur_now_ns(CLOCK_MONOTONIC) >= w->deadline_ns;
}

/* Wait for op; a cancel by the deadline reads as -ETIMEDOUT. */
static int wire_wait(struct wire *w)
{
	if (w->deadline_ns == 0)
		return ur_op_wait(&w->op);
	return ur_op_wait_until(&w->op, CLOCK_MONOTONIC, w->deadline_ns);
}

/* One read of ciphertext: > 0 bytes, 0 at EOF, -errno. */
static int wire_recv(struct wire *w, const struct protstream *in)
{
	bool sock = prot__cof(in)->kind == PROT__K_SOCKET;
	int ret;

	for (;;) {
		if (wire_expired(w))
			return -ETIMEDOUT;
		ur_op_init(&w->op, NULL, NULL);
		ret = sock ? ur_recv_start(w->loop, &w->op, in->fd, w->buf,
					   sizeof(w->buf), 0)
			   : ur_read_start(w->loop, &w->op, in->fd, w->buf,
					   sizeof(w->buf), -1);
		if (ret < 0)
			return ret;
		ret = wire_wait(w);
		if (ret == -EINTR)
			continue;
		if (ret != -EAGAIN)
			return ret;
		/* An fd the application made O_NONBLOCK. */
		ur_op_init(&w->op, NULL, NULL);
		ret = ur_poll_start(w->loop, &w->op, in->fd, POLLIN);
		if (ret < 0)
			return ret;
		ret = wire_wait(w);
		if (ret < 0 && ret != -EINTR)
			return ret;
	}
}

int prot__tls_wire_send(struct wire *w, const struct protstream *out,
			const unsigned char *p, size_t n)
{
	bool sock = prot__cof(out)->kind == PROT__K_SOCKET;
	int ret;

	while (n > 0) {
		if (wire_expired(w))
			return -ETIMEDOUT;
		ur_op_init(&w->op, NULL, NULL);
		ret = sock ? ur_send_start(w->loop, &w->op, out->fd, p, n,
					   MSG_NOSIGNAL)
			   : ur_write_start(w->loop, &w->op, out->fd, p, n, -1);
		if (ret < 0)
			return ret;
		ret = wire_wait(w);
		if (ret == -EAGAIN) {
			ur_op_init(&w->op, NULL, NULL);
			ret = ur_poll_start(w->loop, &w->op, out->fd, POLLOUT);
			if (ret < 0)
				return ret;
			ret = wire_wait(w);
		}
		if (ret == -EINTR || ret == -EAGAIN)
			continue;
		if (ret < 0)
			return ret;
		if (ret == 0)
			return -EIO;
		p += ret;
		n -= (size_t)ret;
	}
	return 0;
}

int prot__tls_wire_sendmsg(struct wire *w, int fd, struct msghdr *msg)
{
	int ret;

	ur_op_init(&w->op, NULL, NULL);
	ret = ur_sendmsg_start(w->loop, &w->op, fd, msg, MSG_NOSIGNAL);
	return ret < 0 ? ret : wire_wait(w);
}

/* Send what OpenSSL wrote (wq). */
int prot__tls_wire_flush(struct wire *w, struct tls_state *t,
			 const struct protstream *out)
{
	struct buf b = {0};
	int ret = prot__tls_take_wire(t, &b);

	if (ret == 0 && b.len > 0)
		ret = prot__tls_wire_send(w, out, (unsigned char *)b.s, b.len);
	prot__buf_release(&b);
	return ret;
}

static int handshake(struct wire *w, struct tls_state *t,
		     const struct protstream *in, const struct protstream *out)
{
	const char *what = "TLS handshake failed";
	int r, e, ret;

	for (;;) {
		ERR_clear_error();
		r = SSL_do_handshake(t->ssl);
		e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
		if (r != 1 && e != SSL_ERROR_WANT_READ) {
			/* Save the reason, then try to send the alert. */
			ret = prot__tls_err(t, e, what);
			(void)prot__tls_wire_flush(w, t, out);
			return ret;
		}
		ret = prot__tls_wire_flush(w, t, out);
		if (ret < 0)
			return prot__tls_set_err(t, ret, what,
						 ret == -ETIMEDOUT ? "timed out"
								   : NULL);
		if (r == 1)
			return 0;
		ret = wire_recv(w, in);
		if (ret == 0)
			ret = -ECONNRESET;
		if (ret < 0)
			return prot__tls_set_err(
				t, ret, what,
				ret == -ETIMEDOUT ? "timed out"
				: ret == -ECONNRESET
					? "connection closed by peer"
					: NULL);
		if (prot__tls_rq_add(t, w->buf, (size_t)ret) < 0)
			return prot__tls_set_err(t, -ENOMEM, what, NULL);
	}
}

/*
 * Both streams fail: the connection is unusable after a failed handshake
 * (RFC 3207 §4.1: the server must not go on in plaintext).
 */
static int hs_fail(struct protstream *in, struct protstream *out, int err,
		   const char *text, const char **errstr_out)
{
	(void)prot__fail(in, err, text);
	(void)prot__fail(out, err, text);
	if (errstr_out != NULL)
		*errstr_out = prot_error(in);
	return err;
}

static int hs_check(struct protstream *in, struct protstream *out)
{
	if (in->write || !out->write)
		return -EINVAL;
	if (in->error != NULL || out->error != NULL)
		return -EIO;
	if (prot__layer_find(in, "tls") != NULL ||
	    prot__layer_find(out, "tls") != NULL)
		return -EALREADY;
	if (prot__of(in)->rlayers != NULL || prot__of(out)->wlayers != NULL)
		return -EINVAL;
	/* Handshake bytes go straight to the fds: sockets, pipes only. */
	for (int i = 0; i < 2; i++) {
		enum prot__kind k = prot__of(i == 0 ? in : out)->kind;

		if (k != PROT__K_SOCKET && k != PROT__K_FILE)
			return -EINVAL;
	}
	return 0;
}

static int client_opts(SSL *ssl, const struct pl_tls_client_opts *o)
{
	if (o == NULL)
		return 0;
	if (o->server_name != NULL &&
	    !SSL_set_tlsext_host_name(ssl, o->server_name))
		return -EINVAL;
	if (o->verify_name &&
	    (o->server_name == NULL || !SSL_set1_host(ssl, o->server_name)))
		return -EINVAL;
	if (o->alpn != NULL && SSL_set_alpn_protos(ssl, o->alpn, o->alpn_len))
		return -EINVAL;
	if (o->session != NULL && !SSL_set_session(ssl, o->session))
		return -EINVAL;
	return 0;
}

/*
 * The handshake is done: both streams get their layer, the read side
 * dropping buffered plaintext; prot__tls_attach() decodes the records
 * that came with the last flight (a TLS 1.3 ticket, the first command of
 * an eager client) at once, so that readiness (prot_select) is exact.
 */
static int finish(struct protstream *in, struct protstream *out,
		  struct tls_state *t)
{
	int ret;

	ret = prot__tls_attach(in, t);
	if (ret == 0)
		ret = prot__tls_attach(out, t);
	if (ret < 0)
		return prot__tls_set_err(t, ret, "TLS setup failed", NULL);
	prot__tls_bufs_release(t);
	prot__tls_ctl_push(t); /* and gives the handshake's buffers back */
	return 0;
}

static int tls_start(struct protstream *in, struct protstream *out,
		     SSL_CTX *ctx, const struct pl_tls_client_opts *opts,
		     bool server, int timeout_ms, const char **errstr_out)
{
	struct tls_state *t;
	struct wire *w;
	SSL *ssl;
	int ret;

	if (errstr_out != NULL)
		*errstr_out = NULL;
	ret = hs_check(in, out);
	if (ret < 0)
		return ret;
	/* The STARTTLS reply (and all before it) goes out in plaintext. */
	if (prot_flush(out) == EOF)
		return hs_fail(in, out, prot__err(out), NULL, errstr_out);
	w = calloc(1, sizeof(*w));
	ssl = SSL_new(ctx);
	if (w == NULL || ssl == NULL) {
		free(w);
		SSL_free(ssl);
		return hs_fail(in, out, -ENOMEM, NULL, errstr_out);
	}
	ret = prot__tls_state_get(ssl, true, &t);
	if (ret < 0) {
		free(w);
		SSL_free(ssl);
		return hs_fail(in, out, ret, NULL, errstr_out);
	}
	if (server) {
		SSL_set_accept_state(ssl);
	} else {
		SSL_set_connect_state(ssl);
		ret = client_opts(ssl, opts);
	}
	prot__tls_ktls_attach(t, out);
	if (ret == 0)
		ret = wire_init(w, timeout_ms);
	t->hs_wire = w;
	t->hs_out = out;
	if (ret == 0)
		ret = handshake(w, t, in, out);
	else
		prot__tls_set_err(t, ret, "TLS setup failed", NULL);
	t->hs_wire = NULL;
	t->hs_out = NULL;
	free(w);
	if (ret == 0)
		ret = finish(in, out, t);
	if (ret < 0) {
		ret = hs_fail(in, out, ret, t->err, errstr_out);
		if (t->layers == 0)
			SSL_free(ssl);
	}
	return ret;
}

int pl_tls_accept(struct protstream *in, struct protstream *out,
		  struct ssl_ctx_st *ctx, int timeout_ms,
		  const char **errstr_out)
{
	return tls_start(in, out, ctx, NULL, true, timeout_ms, errstr_out);
}

int pl_tls_connect(struct protstream *in, struct protstream *out,
		   struct ssl_ctx_st *ctx,
		   const struct pl_tls_client_opts *opts, int timeout_ms,
		   const char **errstr_out)
{
	return tls_start(in, out, ctx, opts, false, timeout_ms, errstr_out);
}

/* Read and drop application data until close_notify (or EOF, error). */
static int await_close(struct protstream *in, struct tls_state *t,
		       int timeout_ms)
{
	int old_timeout = in->read_timeout, old_block = in->dontblock;
	char *scratch = malloc(PROT_BUFSIZE);
	int ret;

	if (scratch == NULL)
		return -ENOMEM;
	in->dontblock = 0;
	(void)prot_settimeout(in,
			      timeout_ms > 0 ? (timeout_ms + 999) / 1000 : 0);
	while (prot_read(in, scratch, PROT_BUFSIZE) > 0)
		;
	if (t->read_end)
		ret = 0;
	else if (in->error == NULL)
		ret = -ECONNRESET; /* end of file without close_notify */
	else
		ret = prot__err(in);
	in->dontblock = old_block;
	(void)prot_settimeout(in, old_timeout);
	free(scratch);
	return ret;
}

int pl_tls_shutdown(struct protstream *in, struct protstream *out,
		    int timeout_ms)
{
	struct prot__layer *l;
	struct tls_state *t;
	struct wire *w;
	int ret;

	if (out == NULL || !out->write ||
	    (l = prot__layer_find(out, "tls")) == NULL)
		return -ENOTCONN;
	t = l->state;
	if (t->ssl == NULL)
		return -ENOTCONN;
	if (!t->sent_close) {
		if (prot_flush(out) == EOF)
			return prot__err(out);
		ERR_clear_error();
		(void)SSL_shutdown(t->ssl); /* close_notify into wbio */
		ERR_clear_error();
		t->sent_close = true;
		w = calloc(1, sizeof(*w));
		if (w == NULL)
			return -ENOMEM;
		ret = wire_init(w, timeout_ms);
		if (ret == 0)
			ret = prot__tls_wire_flush(w, t, out);
		free(w);
		if (ret < 0)
			return ret;
	}
	if (in == NULL || in->write || t->read_end)
		return 0;
	return await_close(in, t, timeout_ms);
}

/*
 * Server ALPN: the protocol list hangs on the SSL_CTX (ex_data) and is
 * freed with it.
 */
struct alpn {
	unsigned len;
	unsigned char protos[];
};

static int ctx_index = -1;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;

static void ctx_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
			long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

static void ctx_init(void)
{
	ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctx_ex_free);
}

static int alpn_select(SSL *ssl, const unsigned char **out,
		       unsigned char *outlen, const unsigned char *in,
		       unsigned int inlen, void *arg)
{
	const struct alpn *a = arg;
	unsigned char *sel;

	(void)ssl;
	if (SSL_select_next_proto(&sel, outlen, a->protos, a->len, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

int pl_tls_ctx_set_alpn(struct ssl_ctx_st *ctx, const unsigned char *protos,
			unsigned len)
{
	struct alpn *a, *old;

	if (ctx == NULL || protos == NULL || len == 0 || len > 65535)
		return -EINVAL;
	for (unsigned i = 0; i < len; i += 1u + protos[i])
		if (protos[i] == 0 || i + 1u + protos[i] > len)
			return -EINVAL;
	(void)pthread_once(&ctx_once, ctx_init);
	if (ctx_index < 0)
		return -ENOMEM;
	a = malloc(sizeof(*a) + len);
	if (a == NULL)
		return -ENOMEM;
	a->len = len;
	memcpy(a->protos, protos, len);
	old = SSL_CTX_get_ex_data(ctx, ctx_index);
	if (!SSL_CTX_set_ex_data(ctx, ctx_index, a)) {
		free(a);
		return -ENOMEM;
	}
	free(old);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, a);
	return 0;
}
