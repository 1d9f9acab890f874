/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/layer: pushing and popping stream layers, and the Cyrus setters. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <ringprot/prot-layer.h>

/*
 * Chains are kept in the Cyrus order whatever the order of the calls, by
 * rank: the read chain runs TLS (0) -> SASL (1) -> DEFLATE (2) from its
 * head, the write chain the other way. A layer can only be pushed at the
 * plaintext end (a rank above every layer already on): that is the order
 * protocols switch in (STARTTLS, then AUTHENTICATE, then COMPRESS), and
 * it means bytes buffered at the switch are exactly the new layer's input.
 */
unsigned pl_features(void)
{
	unsigned f = 0;

#ifdef RINGPROT_HAVE_TLS
	f |= PL_HAVE_TLS;
#endif
#ifdef RINGPROT_HAVE_SASL
	f |= PL_HAVE_SASL;
#endif
#ifdef RINGPROT_HAVE_ZLIB
	f |= PL_HAVE_ZLIB;
#endif
	return f;
}

struct prot__layer *prot__layer_find(const struct protstream *s,
				     const char *name)
{
	const struct prot__stream *ps = prot__cof(s);

	for (struct prot__layer *l = s->write ? ps->wlayers : ps->rlayers;
	     l != NULL; l = l->next)
		if (strcmp(l->ops->name, name) == 0)
			return l;
	return NULL;
}

void prot__layer_remove(struct protstream *s, const char *name)
{
	struct prot__stream *ps = prot__of(s);
	struct prot__layer **lp = s->write ? &ps->wlayers : &ps->rlayers;

	for (; *lp != NULL; lp = &(*lp)->next) {
		struct prot__layer *l = *lp;

		if (strcmp(l->ops->name, name) != 0)
			continue;
		*lp = l->next;
		if (l->ops->destroy != NULL)
			l->ops->destroy(l);
		return;
	}
}

/*
 * Write side: what the application wrote before the switch leaves in the
 * old mode (Cyrus: a non-forced flush, spec 2.7.3), then the new layer
 * takes the DEFLATE end of the chain. A queue of a non-blocking stream
 * holds wire bytes already, so its order is kept.
 */
static int push_write(struct protstream *s, struct prot__layer *l)
{
	struct prot__stream *ps = prot__of(s);

	if (prot__flush_end(s) == EOF ||
	    (s->ptr != s->buf && prot_flush_internal(s, 0) == EOF))
		return prot__err(s);
	l->next = ps->wlayers;
	ps->wlayers = l;
	return 0;
}

/*
 * Read side: every byte received but not yet read by the application
 * arrived after the command that switches, so it belongs to the new
 * layer (spec 6 item 11; Cyrus serves it as plaintext, 5.7 #68). That is
 * the unread window, the decoded bytes not yet exposed and, when no layer
 * is on yet, the raw bytes held past the window. Under an existing layer
 * the raw bytes are that layer's input and stay where they are.
 */
static int gather_unread(struct prot__stream *ps, struct buf *b)
{
	struct protstream *s = &ps->pub;
	int ret = 0;

	if (s->cnt > 0)
		ret = prot__buf_append(b, s->ptr, s->cnt);
	if (ret == 0 && ps->dec_off < ps->dec.len)
		ret = prot__buf_append(b, ps->dec.s + ps->dec_off,
				       ps->dec.len - ps->dec_off);
	if (ret == 0 && ps->rlayers == NULL && ps->src_off < ps->src_len)
		ret = prot__buf_append(b, ps->src + ps->src_off,
				       ps->src_len - ps->src_off);
	return ret;
}

static int push_read(struct protstream *s, struct prot__layer *l,
		     bool discard, size_t *discarded_out)
{
	struct prot__stream *ps = prot__of(s);
	struct prot__layer **tail = &ps->rlayers;
	struct buf unread = {0};
	int ret;

	ret = gather_unread(ps, &unread);
	if (ret < 0) {
		prot__buf_release(&unread);
		return ret;
	}
	if (ps->rlayers == NULL) {
		prot__fill_discard(s); /* gives a held buffer back */
	} else {
		ps->dec.len = 0;
		ps->dec_off = 0;
		s->buf = s->ptr = NULL;
		s->cnt = 0;
		s->can_unget = 0;
	}
	while (*tail != NULL)
		tail = &(*tail)->next;
	l->next = NULL;
	*tail = l;
	if (discard) {
		if (discarded_out != NULL)
			*discarded_out = unread.len;
	} else if (unread.len > 0) {
		ret = l->ops->decode(l, (const unsigned char *)unread.s,
				     unread.len, &ps->dec);
		if (ret < 0)
			(void)prot__fail(s, ret, l->errtext);
		else
			ret = 0;
	}
	prot__buf_release(&unread);
	return ret;
}

int prot__layer_push(struct protstream *s, struct prot__layer *l,
		     bool discard, size_t *discarded_out)
{
	struct prot__stream *ps = prot__of(s);
	int rank = l->ops->rank;

	if (discarded_out != NULL)
		*discarded_out = 0;
	if (ps->kind == PROT__K_MAP || ps->kind == PROT__K_BUF)
		return -EINVAL;
	if (s->error != NULL)
		return -EIO;
	for (struct prot__layer *x = s->write ? ps->wlayers : ps->rlayers;
	     x != NULL; x = x->next) {
		int xr = x->ops->rank;

		if (xr == rank)
			return -EALREADY;
		if (xr > rank)
			return -EINVAL;
	}
	if (s->write)
		return push_write(s, l);
	return push_read(s, l, discard, discarded_out);
}

/*
 * The Cyrus setters (prot_settls is in layer-tls.c). A TLS or SASL setter that fails leaves the stream
 * with an error: a caller that ignores the result (Cyrus's prot_settls
 * cannot fail) must not go on in plaintext it believes is protected.
 * prot_setcompress failing is harmless (the daemon answers NO), so it
 * only returns EOF with errno set, as Cyrus does.
 */
int prot_setsasl(struct protstream *s, struct sasl_conn *conn)
{
	int ret = pl_sasl_start(s, conn);

	if (ret == -ENOTSUP)
		return prot__fail(s, ret,
				  "SASL security layer not supported in this "
				  "build");
	if (ret < 0)
		return prot__fail(s, ret, NULL);
	return 0;
}

void prot_unsetsasl(struct protstream *s)
{
	pl_sasl_stop(s);
}

int prot_setcompress(struct protstream *s)
{
	int ret = pl_zlib_start(s, -1);

	if (ret < 0) {
		errno = -ret;
		return EOF;
	}
	return 0;
}

void prot_unsetcompress(struct protstream *s)
{
	prot__layer_remove(s, "deflate");
	s->zstrm = NULL;
}

/*
 * What a build without a library offers: the same calls, failing with
 * -ENOTSUP, so callers need no #ifdef of their own.
 */
#ifndef RINGPROT_HAVE_ZLIB
int pl_zlib_start(struct protstream *s, int level)
{
	(void)s;
	(void)level;
	return -ENOTSUP;
}

int pl_zlib_activate(struct protstream *in, struct protstream *out,
		     int level)
{
	(void)in;
	(void)out;
	(void)level;
	return -ENOTSUP;
}

int pl_zlib_set_level(struct protstream *out, int level)
{
	(void)out;
	(void)level;
	return -ENOTSUP;
}

int pl_zlib_stats(const struct protstream *s, struct pl_zlib_stats *st)
{
	(void)s;
	(void)st;
	return -ENOTSUP;
}
#endif

#ifndef RINGPROT_HAVE_SASL
int pl_sasl_start(struct protstream *s, struct sasl_conn *conn)
{
	(void)s;
	(void)conn;
	return -ENOTSUP;
}

int pl_sasl_activate(struct protstream *in, struct protstream *out,
		     struct sasl_conn *conn)
{
	(void)in;
	(void)out;
	(void)conn;
	return -ENOTSUP;
}

void pl_sasl_stop(struct protstream *s)
{
	s->conn = NULL;
	s->saslssf = 0;
	s->maxplain = PROT_BUFSIZE;
}
#endif

#ifndef RINGPROT_HAVE_TLS
int prot_settls(struct protstream *s, struct ssl_st *tlsconn)
{
	if (tlsconn == NULL)
		return 0;
	return prot__fail(s, -ENOTSUP, "TLS not supported in this build");
}

int pl_tls_accept(struct protstream *in, struct protstream *out,
		  struct ssl_ctx_st *ctx, int timeout_ms,
		  const char **errstr_out)
{
	(void)in;
	(void)out;
	(void)ctx;
	(void)timeout_ms;
	if (errstr_out != NULL)
		*errstr_out = "TLS not supported in this build";
	return -ENOTSUP;
}

int pl_tls_connect(struct protstream *in, struct protstream *out,
		   struct ssl_ctx_st *ctx,
		   const struct pl_tls_client_opts *opts, int timeout_ms,
		   const char **errstr_out)
{
	(void)opts;
	return pl_tls_accept(in, out, ctx, timeout_ms, errstr_out);
}

int pl_tls_shutdown(struct protstream *in, struct protstream *out,
		    int timeout_ms)
{
	(void)in;
	(void)out;
	(void)timeout_ms;
	return -ENOTSUP;
}

int pl_tls_info(const struct protstream *s, struct pl_tls_info *info)
{
	(void)s;
	(void)info;
	return -ENOTSUP;
}

int pl_tls_ctx_set_alpn(struct ssl_ctx_st *ctx, const unsigned char *protos,
			unsigned len)
{
	(void)ctx;
	(void)protos;
	(void)len;
	return -ENOTSUP;
}

bool pl_ktls_available(void)
{
	return false;
}
#endif
