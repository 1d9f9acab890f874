/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen/tls: TLS client sessions on memory BIOs over the ring. */
#include "loadgen.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/*
 * OpenSSL never touches a socket here: each session reads the records
 * the worker's multishot recv hands in (lg_tls_feed() into a memory BIO)
 * and writes its records into another memory BIO, which lg_tls_flush()
 * empties into one lg_conn_send() at a time. So a TLS connection costs
 * the ring the same SQEs as a plaintext one, and the workers' loops need
 * not know about TLS at all: the mode drives the handshake and the
 * records from its connected(), received() and sent() callbacks.
 *
 * One SSL_CTX serves every worker (OpenSSL's contexts are thread-safe
 * once set up). It verifies nothing: the benchmarks talk to their own
 * self-signed server, and what is measured is the handshake's cost, not
 * the trust chain. The client keeps no session cache, so every
 * connection makes a full handshake. SSL_MODE_RELEASE_BUFFERS lets an
 * idle session drop its record buffers, which keeps the client small
 * next to 100,000 held connections.
 *
 * Built without OpenSSL (meson's tls option off), every function fails
 * with -EOPNOTSUPP and -T says so.
 */

#ifdef LG_HAVE_TLS

#include <openssl/err.h>
#include <openssl/ssl.h>

struct lg_tls {
	SSL *ssl;
	BIO *rbio; /* records in; owned by ssl */
	BIO *wbio; /* records out; owned by ssl */
	unsigned char *out; /* in flight, until lg_tls_sent() */
};

static SSL_CTX *lg_ssl_ctx;

/* The first OpenSSL failure, once: enough to tell why a run fails. */
static void tls_error(const char *what)
{
	static int said;
	unsigned long e = ERR_get_error();
	char msg[256];

	if (__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED) != 0)
		return;
	ERR_error_string_n(e, msg, sizeof(msg));
	(void)fprintf(stderr, "loadgen: tls: %s: %s\n", what,
		      e != 0 ? msg : "failed");
}

int lg_tls_global_init(void)
{
	lg_ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (lg_ssl_ctx == NULL) {
		tls_error("SSL_CTX_new");
		return -ENOMEM;
	}
	SSL_CTX_set_verify(lg_ssl_ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(lg_ssl_ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_mode(lg_ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_min_proto_version(lg_ssl_ctx, TLS1_2_VERSION) != 1) {
		tls_error("SSL_CTX_set_min_proto_version");
		return -EINVAL;
	}
	return 0;
}

int lg_tls_new(struct lg_tls **t_out)
{
	struct lg_tls *t = calloc(1, sizeof(*t));

	*t_out = NULL;
	if (t == NULL)
		return -ENOMEM;
	t->ssl = SSL_new(lg_ssl_ctx);
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
		BIO_free(t->rbio);
		BIO_free(t->wbio);
		SSL_free(t->ssl);
		free(t);
		tls_error("SSL_new");
		return -ENOMEM;
	}
	/* An empty BIO means "not yet", not end of file. */
	BIO_set_mem_eof_return(t->rbio, -1);
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	SSL_set_connect_state(t->ssl);
	*t_out = t;
	return 0;
}

void lg_tls_free(struct lg_tls *t)
{
	if (t == NULL)
		return;
	SSL_free(t->ssl); /* and both BIOs */
	free(t->out);
	free(t);
}

/* What an SSL call's failure means: 0 wants more input, else -errno. */
static int tls_result(struct lg_tls *t, int ret, const char *what)
{
	switch (SSL_get_error(t->ssl, ret)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE: /* a memory BIO takes all: not seen */
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		return -ECONNRESET; /* close_notify */
	default:
		tls_error(what);
		return -EPROTO;
	}
}

int lg_tls_handshake(struct lg_tls *t)
{
	int ret;

	ERR_clear_error();
	ret = SSL_do_handshake(t->ssl);
	if (ret == 1)
		return 1;
	return tls_result(t, ret, "handshake");
}

int lg_tls_write(struct lg_tls *t, const void *buf, size_t len)
{
	int ret;

	if (len > (size_t)0x7fffffff)
		return -EMSGSIZE;
	ERR_clear_error();
	ret = SSL_write(t->ssl, buf, (int)len);
	if (ret == (int)len)
		return 0;
	ret = tls_result(t, ret, "SSL_write");
	return ret < 0 ? ret : -EPROTO; /* a memory BIO never blocks */
}

int lg_tls_feed(struct lg_tls *t, const unsigned char *data, size_t n)
{
	if (n > (size_t)0x7fffffff)
		return -EMSGSIZE;
	if (BIO_write(t->rbio, data, (int)n) != (int)n)
		return -ENOMEM;
	return 0;
}

int lg_tls_read(struct lg_tls *t, void *buf, size_t len)
{
	int ret;

	if (len > (size_t)0x7fffffff)
		len = 0x7fffffff;
	ERR_clear_error();
	ret = SSL_read(t->ssl, buf, (int)len);
	if (ret > 0)
		return ret;
	return tls_result(t, ret, "SSL_read");
}

int lg_tls_flush(struct lg_tls *t, struct lg_conn *c)
{
	size_t n;
	int ret;

	if (t->out != NULL)
		return 0; /* lg_tls_sent() calls us back */
	n = BIO_ctrl_pending(t->wbio);
	if (n == 0)
		return 0;
	t->out = malloc(n);
	if (t->out == NULL)
		return -ENOMEM;
	if (BIO_read(t->wbio, t->out, (int)n) != (int)n)
		return -EIO;
	ret = lg_conn_send(c, t->out, n);
	if (ret < 0) {
		free(t->out);
		t->out = NULL;
	}
	return ret;
}

void lg_tls_sent(struct lg_tls *t)
{
	free(t->out);
	t->out = NULL;
}

#else /* !LG_HAVE_TLS */

int lg_tls_global_init(void)
{
	(void)fprintf(stderr, "loadgen: built without OpenSSL: no -T\n");
	return -EOPNOTSUPP;
}

int lg_tls_new(struct lg_tls **t_out)
{
	*t_out = NULL;
	return -EOPNOTSUPP;
}

void lg_tls_free(struct lg_tls *t)
{
	(void)t;
}

int lg_tls_handshake(struct lg_tls *t)
{
	(void)t;
	return -EOPNOTSUPP;
}

int lg_tls_write(struct lg_tls *t, const void *buf, size_t len)
{
	(void)t;
	(void)buf;
	(void)len;
	return -EOPNOTSUPP;
}

int lg_tls_feed(struct lg_tls *t, const unsigned char *data, size_t n)
{
	(void)t;
	(void)data;
	(void)n;
	return -EOPNOTSUPP;
}

int lg_tls_read(struct lg_tls *t, void *buf, size_t len)
{
	(void)t;
	(void)buf;
	(void)len;
	return -EOPNOTSUPP;
}

int lg_tls_flush(struct lg_tls *t, struct lg_conn *c)
{
	(void)t;
	(void)c;
	return -EOPNOTSUPP;
}

void lg_tls_sent(struct lg_tls *t)
{
	(void)t;
}

#endif /* LG_HAVE_TLS */
