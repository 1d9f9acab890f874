/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/layer-tls: what the TLS layer's files share; not installed. */
#ifndef RINGPROT_PROT_LAYER_TLS_H
#define RINGPROT_PROT_LAYER_TLS_H

#include "internal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <openssl/ssl.h>

/*
 * The TLS layer, one concern a file (built only with the tls feature):
 *   layer-tls.c       the record layer: per-SSL state, errors, our
 *                     BIOs, decode/encode, control records, close_notify,
 *                     prot_settls, pl_tls_info
 *   layer-tls-hs.c    handshakes and shutdown on the ring (struct wire:
 *                     the handshake's I/O and deadline), SNI, ALPN and
 *                     resumption options, server ALPN on the SSL_CTX
 *   layer-tls-ktls.c  kTLS transmit: the filter BIO over wbio, the probe
 */

/* The handshake's I/O: one op, one deadline, one buffer (layer-tls-hs.c). */
struct wire;

/*
 * One per SSL, shared by its read and write layers, hung on the SSL
 * (ex_data): freed with the last layer, or by SSL_free if that comes
 * first (ssl is then NULL).
 */
struct tls_state {
	SSL *ssl;  /* NULL once SSL_free ran (the owner freed it) */
	BIO *rbio; /* ciphertext in (ours, owned by ssl; see layer-tls.c) */
	BIO *wbio; /* ciphertext out (ours, owned by ssl) */
	struct protstream *out; /* the write stream, while its layer is on */
	unsigned layers;	/* read and write layers using this record */
	int rfd, wfd;	 /* the caller's socket BIOs' fds (prot_settls), -1 */
	bool owned;	 /* made by pl_tls_accept/connect: freed with us */
	bool read_end;	 /* close_notify received */
	bool peer_eof;	 /* the raw input ended without close_notify */
	bool sent_close; /* close_notify sent */
	bool failed;	 /* a TLS error: the session must not be resumed */
	bool ctl_busy;	 /* a reader is sending ctl (its send in flight) */
	bool in_encode;	 /* inside tls_encode's SSL_write */
	bool rin_eof;	 /* rbio: the raw input ended (tls_eof) */
	bool wnomem;	 /* wbio: a write found no memory */
	bool ktls_tx;	 /* the kernel encrypts what we send (kTLS) */
	int kfd;	 /* the socket kTLS may use, -1: none (no kTLS BIO) */
	int krec_type;	 /* kTLS: the next write is a record of this type */
	int ktls_err;	 /* -errno of the last kTLS setup that failed */
	int rerr;	 /* a record error held back behind the plaintext that
			  * came before it, reported by the next decode */
	struct wire *hs_wire; /* the handshake's I/O, while it runs */
	const struct protstream *hs_out; /* its write stream */
	uint64_t discarded;
	struct buf held; /* plaintext decoded at handshake end */
	struct buf ctl;	 /* records taken from wq and not yet sent */
	/* rbio's input: rq from rq_off on, then rin[0..rin_len) */
	struct buf rq; /* ciphertext kept between decodes */
	size_t rq_off;
	const unsigned char *rin; /* lent by the decode under way */
	size_t rin_len;
	/* wbio's output: wdst while tls_encode runs, else wq */
	struct buf *wdst;
	struct buf wq; /* records written outside tls_encode, unsent */
	char err[256];
};

/*
 * layer-tls.c
 */

/*
 * The state of ssl, made on first use (owned: by pl_tls_accept/connect,
 * freed with the streams); moves ssl to our BIOs. Returns 0 or -ENOMEM.
 */
int prot__tls_state_get(SSL *ssl, bool owned,
			struct tls_state **t_out) RINGPROT_MUST_CHECK;
/* Push t's layer on s; a read stream drops buffered plaintext. */
int prot__tls_attach(struct protstream *s,
		     struct tls_state *t) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * An OpenSSL failure (SSL_get_error's sslerr and the ERR queue) as
 * -errno, with the text "what: reason" in t->err; marks t failed.
 */
int prot__tls_err(struct tls_state *t, int sslerr, const char *what);
/* Set t->err to "what: why" (why NULL: strerror(-err)); returns err. */
int prot__tls_set_err(struct tls_state *t, int err, const char *what,
		      const char *why);

/* Give the buffers of rq and wq back if they are drained. */
void prot__tls_bufs_release(struct tls_state *t);
/* Ciphertext read outside a decode (handshake) for rbio. 0 or -ENOMEM. */
int prot__tls_rq_add(struct tls_state *t, const void *p,
		     size_t n) RINGPROT_MUST_CHECK;
/* Append the wire bytes due next (unsent ctl, then wq) to out. */
int prot__tls_take_wire(struct tls_state *t,
			struct buf *out) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/* Can a record go to the write stream's socket now, passing nothing? */
bool prot__tls_out_idle(const struct tls_state *t);
/* Send the records reading made OpenSSL write, if out is idle. */
void prot__tls_ctl_push(struct tls_state *t) UR_MAY_YIELD;

/*
 * layer-tls-hs.c: the handshake's I/O, under its deadline (-ETIMEDOUT).
 */

/* Send p[0..n) on out's fd, all of it. Returns 0 or -errno. */
int prot__tls_wire_send(struct wire *w, const struct protstream *out,
			const unsigned char *p,
			size_t n) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/* One sendmsg on fd. Returns the bytes sent or -errno. */
int prot__tls_wire_sendmsg(struct wire *w, int fd,
			   struct msghdr *msg) RINGPROT_MUST_CHECK UR_MAY_YIELD;
/* Send what OpenSSL wrote (prot__tls_take_wire). Returns 0 or -errno. */
int prot__tls_wire_flush(struct wire *w, struct tls_state *t,
			 const struct protstream *out) UR_MAY_YIELD;

/*
 * layer-tls-ktls.c
 */

/*
 * Put the kTLS filter BIO over t's wbio if the SSL asks for kTLS and out
 * is a socket with a real fd; otherwise nothing changes.
 */
void prot__tls_ktls_attach(struct tls_state *t, const struct protstream *out);

#endif /* RINGPROT_PROT_LAYER_TLS_H */
