/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/layer-sasl: SASL security layers (sasl_encode/sasl_decode). */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sasl/sasl.h>

#include <ringprot/prot-layer.h>

/*
 * Spec 2.15 with the fixes of 6 item 21: SASL_MAXOUTBUF is checked
 * before it is used; every sasl_encode call gets at most that many bytes
 * (the peer's limit), also when DEFLATE output of a chunk is longer than
 * the chunk; the write buffer (maxplain) is min(MAXOUTBUF, PROT_BUFSIZE),
 * as the buffer is PROT_BUFSIZE bytes. sasl_decode keeps partial packets
 * itself, so a read that ends mid-packet simply yields nothing yet.
 */

/* Bytes per sasl_decode call (Cyrus hands over one raw read). */
#define DECODE_STEP 4096

struct sl {
	sasl_conn_t *conn;
	unsigned maxout; /* plaintext bytes per sasl_encode call */
	char err[256];
};

static int sl_fail(struct prot__layer *l, const char *what, int r, int err)
{
	struct sl *sl = l->state;
	const char *detail = sasl_errdetail(sl->conn);

	snprintf(sl->err, sizeof(sl->err), "%s: %s; %s", what,
		 sasl_errstring(r, NULL, NULL),
		 detail != NULL && *detail != '\0' ? detail : "no detail");
	l->errtext = sl->err;
	return err;
}

static int sl_decode(struct prot__layer *l, const unsigned char *in,
		     size_t in_len, struct buf *out)
{
	struct sl *sl = l->state;

	while (in_len > 0) {
		unsigned k = in_len > DECODE_STEP ? DECODE_STEP
						  : (unsigned)in_len;
		const char *p = NULL;
		unsigned n = 0;
		int r, ret;

		r = sasl_decode(sl->conn, (const char *)in, k, &p, &n);
		if (r != SASL_OK)
			return sl_fail(l, "decoding error", r, -EBADMSG);
		ret = prot__buf_append(out, p, n);
		if (ret < 0)
			return ret;
		in += k;
		in_len -= k;
	}
	return 0;
}

static int sl_encode(struct prot__layer *l, const unsigned char *in,
		     size_t in_len, struct buf *out)
{
	struct sl *sl = l->state;

	while (in_len > 0) {
		unsigned k = in_len > sl->maxout ? sl->maxout
						 : (unsigned)in_len;
		const char *p = NULL;
		unsigned n = 0;
		int r, ret;

		r = sasl_encode(sl->conn, (const char *)in, k, &p, &n);
		if (r != SASL_OK)
			return sl_fail(l, "encoding error", r, -EIO);
		ret = prot__buf_append(out, p, n);
		if (ret < 0)
			return ret;
		in += k;
		in_len -= k;
	}
	return 0;
}

static void sl_destroy(struct prot__layer *l)
{
	free(l->state);
	free(l);
}

/*
 * prot_memory(): the layer's records. The sasl_conn_t is the caller's,
 * with libsasl2's buffers inside it (sasl_decode keeps partial packets
 * there), which nothing here can measure or give back: prot_release
 * has nothing to do in this layer.
 */
static size_t sl_memory(const struct prot__layer *l)
{
	return sizeof(*l) + sizeof(struct sl);
}

static const struct prot__layer_ops sasl_ops = {
	.name = "sasl",
	.rank = 1,
	.decode = sl_decode,
	.encode = sl_encode,
	.destroy = sl_destroy,
	.memory = sl_memory,
};

/* SSF and MAXOUTBUF of conn, each result checked before use. */
static int sasl_props(sasl_conn_t *conn, int *ssf_out, unsigned *maxout_out)
{
	const void *v = NULL;

	if (sasl_getprop(conn, SASL_SSF, &v) != SASL_OK || v == NULL)
		return -EINVAL;
	*ssf_out = *(const int *)v;
	v = NULL;
	if (sasl_getprop(conn, SASL_MAXOUTBUF, &v) != SASL_OK || v == NULL)
		return -EINVAL;
	*maxout_out = *(const unsigned *)v;
	if (*maxout_out == 0)
		*maxout_out = PROT_BUFSIZE; /* no limit given */
	return 0;
}

int pl_sasl_start(struct protstream *s, struct sasl_conn *conn)
{
	struct prot__layer *l;
	struct sl *sl;
	unsigned maxout;
	int ssf, ret;

	if (conn == NULL)
		return -EINVAL;
	if (s->conn != NULL)
		return s->conn == conn ? 0 : -EALREADY;
	ret = sasl_props(conn, &ssf, &maxout);
	if (ret < 0)
		return ret;
	if (ssf <= 0) {
		/* Authentication only: nothing to encode (spec 2.15). */
		s->conn = conn;
		s->saslssf = 0;
		return 0;
	}
	l = calloc(1, sizeof(*l));
	sl = calloc(1, sizeof(*sl));
	if (l == NULL || sl == NULL) {
		free(l);
		free(sl);
		return -ENOMEM;
	}
	sl->conn = conn;
	sl->maxout = maxout;
	l->ops = &sasl_ops;
	l->state = sl;
	ret = prot__layer_push(s, l, false, NULL);
	if (ret < 0 && prot__layer_find(s, "sasl") != l) {
		sl_destroy(l);
		return ret;
	}
	s->conn = conn;
	s->saslssf = ssf;
	if (s->write) {
		/* The pre-flush emptied the buffer: the new size applies now. */
		s->maxplain = maxout < PROT_BUFSIZE ? (int)maxout
						    : PROT_BUFSIZE;
		if (s->buf != NULL && s->ptr == s->buf)
			s->cnt = (unsigned)s->maxplain;
	}
	return ret;
}

int pl_sasl_activate(struct protstream *in, struct protstream *out,
		     struct sasl_conn *conn)
{
	int ret;

	if (in->write || !out->write || conn == NULL)
		return -EINVAL;
	if (in->conn != NULL || out->conn != NULL)
		return -EALREADY;
	if (in->error != NULL || out->error != NULL)
		return -EIO;
	/* The success reply leaves before the layer (RFC 4954 §4). */
	if (prot_flush(out) == EOF)
		return prot__err(out);
	ret = pl_sasl_start(out, conn);
	if (ret < 0)
		return ret;
	ret = pl_sasl_start(in, conn);
	if (ret < 0 && in->conn == NULL)
		pl_sasl_stop(out);
	return ret;
}

void pl_sasl_stop(struct protstream *s)
{
	prot__layer_remove(s, "sasl");
	s->conn = NULL;
	s->saslssf = 0;
	s->maxplain = PROT_BUFSIZE;
}
