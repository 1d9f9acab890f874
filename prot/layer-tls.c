/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/layer-tls: the TLS record layer over OpenSSL memory BIOs. */
#include "layer-tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <ringprot/prot-layer.h>

/*
 * Design. One SSL per connection, shared by the read and the write
 * stream through a small state record hung on the SSL (ex_data), with
 * two memory BIOs: the read stream's refill puts ciphertext from the
 * ring into rbio and takes plaintext out with SSL_read; a flush puts
 * plaintext in with SSL_write and sends what wbio holds. OpenSSL never
 * sees the socket, so nothing it does can block the thread, and reads
 * have the stream's timeouts and wait events like any other (spec 6
 * item 8: Cyrus's SSL_read blocks with no timeout on a partial record).
 *
 * Records the read side makes OpenSSL write (the answer to a KeyUpdate,
 * alerts) leave at once when the write stream is idle
 * (prot__tls_ctl_push), and otherwise lead its next flush: the read side
 * never cuts into a flush in progress on another fiber, and never waits
 * for the peer.
 *
 * Memory: a drained memory BIO gives its buffer back
 * (prot__tls_bio_release), and OpenSSL's record buffers go when empty
 * (SSL_MODE_RELEASE_BUFFERS), so an idle connection holds no I/O buffer
 * in this layer.
 *
 * Ending: the write layer sends close_notify as the write stream ends
 * (close_write), best effort; an SSL the caller owns (prot_settls) gets
 * its socket BIOs back instead, for Cyrus's own tls_reset_servertls
 * (give_back).
 *
 * kTLS: see layer-tls-ktls.c.
 */

#define FREED_UNDER "SSL freed under the stream"

static int ex_index = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void state_free(struct tls_state *t)
{
	prot__buf_release(&t->held);
	prot__buf_release(&t->ctl);
	free(t);
}

/* SSL_free ran: the SSL and its BIOs are gone. */
static void ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
		    long argl, void *argp)
{
	struct tls_state *t = ptr;

	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (t == NULL)
		return;
	t->ssl = NULL;
	t->rbio = t->wbio = NULL;
	if (t->layers == 0)
		state_free(t);
}

static void ex_init(void)
{
	ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, ex_free);
}

static int ex_idx(void)
{
	(void)pthread_once(&ex_once, ex_init);
	return ex_index;
}

/*
 * Errors. SSL_get_error and the ERR queue become an errno for the single
 * EOF conversion and a text for prot_error (spec 6 item 22: Cyrus shows
 * strerror(errno), often "Success").
 */
static int classify(unsigned long e)
{
	if (ERR_GET_LIB(e) != ERR_LIB_SSL)
		return -EPROTO;
	switch (ERR_GET_REASON(e)) {
	case SSL_R_DECRYPTION_FAILED:
	case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC:
	case SSL_R_SSLV3_ALERT_BAD_RECORD_MAC:
		return -EBADMSG;
	case SSL_R_UNEXPECTED_EOF_WHILE_READING:
		return -ECONNRESET;
	default:
		return -EPROTO;
	}
}

int prot__tls_err(struct tls_state *t, int sslerr, const char *what)
{
	unsigned long e = ERR_peek_error();
	const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
	const char *detail = "";
	int err;

	switch (sslerr) {
	case SSL_ERROR_ZERO_RETURN:
		err = -ECONNRESET;
		reason = "session closed by the peer";
		break;
	case SSL_ERROR_SYSCALL:
		err = -ECONNRESET;
		if (reason == NULL)
			reason = "unexpected eof";
		break;
	case SSL_ERROR_SSL:
		err = classify(e);
		break;
	default:
		err = -EPROTO;
		break;
	}
	if (t->ssl != NULL && ERR_GET_LIB(e) == ERR_LIB_SSL &&
	    ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED)
		detail = X509_verify_cert_error_string(
			SSL_get_verify_result(t->ssl));
	t->failed = true;
	snprintf(t->err, sizeof(t->err), "%s: %s%s%s%s", what,
		 reason != NULL ? reason : "protocol error",
		 *detail != '\0' ? " (" : "", detail,
		 *detail != '\0' ? ")" : "");
	ERR_clear_error();
	return err;
}

int prot__tls_set_err(struct tls_state *t, int err, const char *what,
		      const char *why)
{
	snprintf(t->err, sizeof(t->err), "%s: %s", what,
		 why != NULL ? why : strerror(-err));
	return err;
}

/*
 * Memory. A memory BIO's buffer only grows (BUF_MEM_grow_clean): after
 * the handshake's 17 KiB read, or any burst, it would keep its peak for
 * the life of the connection, and idle connections are what a mail
 * server mostly holds. A BIO that has been drained gives its buffer
 * back at once; the next write allocates again (one malloc per record
 * batch, small next to the cipher work).
 */
static size_t bio_held(BIO *b)
{
	BUF_MEM *bm = NULL;

	if (b == NULL || BIO_get_mem_ptr(b, &bm) <= 0 || bm == NULL)
		return 0;
	return bm->max;
}

void prot__tls_bio_release(BIO *b)
{
	BUF_MEM *bm;

	if (b == NULL || BIO_ctrl_pending(b) != 0 || bio_held(b) == 0)
		return;
	bm = BUF_MEM_new();
	if (bm != NULL && BIO_set_mem_buf(b, bm, BIO_CLOSE) <= 0)
		BUF_MEM_free(bm); /* not taken: the old buffer stays */
}

/* Move everything wbio holds to the end of out. */
static int drain_wbio(struct tls_state *t, struct buf *out)
{
	size_t n = t->wbio != NULL ? BIO_ctrl_pending(t->wbio) : 0;
	int ret;

	if (n == 0)
		return 0;
	ret = prot__buf_reserve(out, n);
	if (ret < 0)
		return ret;
	if (BIO_read(t->wbio, out->s + out->len, (int)n) != (int)n)
		return -EIO;
	out->len += n;
	prot__tls_bio_release(t->wbio);
	return 0;
}

/*
 * A reader's send of ctl is in flight: whoever sends next waits for it
 * (it completes within a loop turn: MSG_DONTWAIT), then sends what it
 * left first. Wire order is the order OpenSSL wrote the records in.
 */
static int ctl_wait(struct tls_state *t)
{
	while (t->ctl_busy) {
		int ret = ur_nop();

		if (ret < 0)
			return ret;
	}
	return 0;
}

/* The wire bytes due next: what ctl still holds, then wbio's. */
int prot__tls_take_wire(struct tls_state *t, struct buf *out)
{
	int ret = ctl_wait(t);

	if (ret == 0 && t->ctl.len > 0) {
		ret = prot__buf_append(out, t->ctl.s, t->ctl.len);
		if (ret == 0)
			prot__buf_release(&t->ctl);
	}
	return ret < 0 ? ret : drain_wbio(t, out);
}

/* Can a record go to out's socket now without passing anything queued? */
bool prot__tls_out_idle(const struct tls_state *t)
{
	const struct protstream *out = t->out;

	return out != NULL && out->error == NULL &&
	       prot__cof(out)->kind == PROT__K_SOCKET && !prot__has_output(out);
}

/*
 * Records OpenSSL made while reading: the answer to a KeyUpdate with
 * update_requested (OpenSSL 3.0 only schedules it for the next write:
 * SSL_do_handshake sends a scheduled one) and alerts. They go now with
 * one non-blocking send when the write stream is idle. prot__has_output
 * is true from a flush's encode until its send has finished, so this
 * never cuts into another fiber's flush; a flush that starts while this
 * send is in flight waits for it in prot__tls_take_wire. What the
 * socket does not take stays in ctl and leads the next flush: a peer
 * that never reads cannot hold up the read path.
 */
void prot__tls_ctl_push(struct tls_state *t)
{
	int type = t->ssl != NULL ? SSL_get_key_update_type(t->ssl)
				  : SSL_KEY_UPDATE_NONE;
	ssize_t n;

	if (type != SSL_KEY_UPDATE_NONE && !t->failed && !t->sent_close &&
	    !t->ktls_tx) {
		/* On failure it goes with the next write, as OpenSSL does. */
		ERR_clear_error();
		if (SSL_key_update(t->ssl, type) == 1)
			(void)SSL_do_handshake(t->ssl);
		ERR_clear_error();
	}
	if (t->ctl_busy || !prot__tls_out_idle(t) ||
	    drain_wbio(t, &t->ctl) < 0 || t->ctl.len == 0)
		return;
	t->ctl_busy = true;
	n = ur_send(t->out->fd, t->ctl.s, t->ctl.len,
		    MSG_DONTWAIT | MSG_NOSIGNAL);
	t->ctl_busy = false;
	if (n <= 0)
		return; /* EAGAIN, or an error the next flush reports */
	t->ctl.len -= (size_t)n;
	if (t->ctl.len == 0)
		prot__buf_release(&t->ctl);
	else
		memmove(t->ctl.s, t->ctl.s + n, t->ctl.len);
}

/*
 * SSL_read until OpenSSL needs more ciphertext. Returns 0, or
 * PROT__LAYER_END once close_notify arrived, or -errno. A record error
 * after plaintext of earlier records (one read can bring sound records
 * and a bad one; SSL_read serves them one by one, as Cyrus reads them)
 * is held back in t->rerr, with defer always: that plaintext was sent
 * by the peer and is delivered first, the error with the next decode.
 */
static int drain_ssl(struct tls_state *t, struct buf *out, bool defer)
{
	size_t start = out->len;

	for (;;) {
		size_t room;
		int n, ret;

		ret = prot__buf_reserve(out, 16384);
		if (ret < 0)
			return ret;
		room = out->alloc - out->len - 1;
		ERR_clear_error();
		n = SSL_read(t->ssl, out->s + out->len,
			     room > INT32_MAX ? INT32_MAX : (int)room);
		if (n > 0) {
			out->len += (size_t)n;
			continue;
		}
		switch (SSL_get_error(t->ssl, n)) {
		case SSL_ERROR_WANT_READ:
			return 0;
		case SSL_ERROR_ZERO_RETURN:
			t->read_end = true;
			return PROT__LAYER_END;
		default:
			ret = prot__tls_err(t, SSL_get_error(t->ssl, n),
					    "TLS error");
			if (!defer && out->len == start)
				return ret;
			t->rerr = ret;
			return 0;
		}
	}
}

static int tls_decode(struct prot__layer *l, const unsigned char *in,
		      size_t in_len, struct buf *out)
{
	struct tls_state *t = l->state;
	int ret;

	l->errtext = t->err;
	if (t->held.len > 0) {
		ret = prot__buf_append(out, t->held.s, t->held.len);
		if (ret < 0)
			return ret;
		prot__buf_release(&t->held);
		if (t->rerr != 0)
			return 0; /* the error comes with the next decode */
	}
	if (t->rerr != 0)
		return t->rerr;
	if (t->read_end)
		return PROT__LAYER_END; /* bytes after close_notify: ignored */
	if (t->ssl == NULL)
		return prot__tls_set_err(t, -EPIPE, "TLS error", FREED_UNDER);
	if (in_len > 0 && BIO_write(t->rbio, in, (int)in_len) != (int)in_len)
		return -ENOMEM;
	ret = drain_ssl(t, out, false);
	prot__tls_bio_release(t->rbio);
	prot__tls_ctl_push(t);
	return ret;
}

static bool tls_pending(const struct prot__layer *l)
{
	const struct tls_state *t = l->state;

	return t->held.len > 0 || t->rerr != 0 ||
	       (t->ssl != NULL && SSL_pending(t->ssl) > 0);
}

/*
 * The raw connection ended. After close_notify, or between records, it
 * is an end of file (many clients close without close_notify); inside a
 * record it is a truncation: an error.
 */
static int tls_eof(struct prot__layer *l)
{
	struct tls_state *t = l->state;
	unsigned char scratch[64];
	int n;

	l->errtext = t->err;
	if (t->rerr != 0)
		return t->rerr;
	if (!t->read_end)
		t->peer_eof = true;
	/*
	 * Between records: nothing unread, and OpenSSL holds no part of a
	 * record. SSL_has_pending misses a header read whole with none of
	 * its body yet: the record layer is then in "read body" ("RB").
	 */
	if (t->read_end || t->ssl == NULL ||
	    (BIO_ctrl_pending(t->rbio) == 0 && !SSL_has_pending(t->ssl) &&
	     strcmp(SSL_rstate_string(t->ssl), "RB") != 0))
		return 0;
	BIO_set_mem_eof_return(t->rbio, 0);
	ERR_clear_error();
	n = SSL_read(t->ssl, scratch, sizeof(scratch));
	if (n > 0)
		return prot__tls_set_err(t, -ECONNRESET, "TLS error",
					 "unexpected eof while reading");
	return prot__tls_err(t, SSL_get_error(t->ssl, n), "TLS error");
}

static int tls_encode(struct prot__layer *l, const unsigned char *in,
		      size_t in_len, struct buf *out)
{
	struct tls_state *t = l->state;
	int n;

	l->errtext = t->err;
	if (t->ssl == NULL)
		return prot__tls_set_err(t, -EPIPE, "TLS error", FREED_UNDER);
	if (t->sent_close)
		return prot__tls_set_err(t, -EPIPE, "TLS error",
					 "session closed (close_notify sent)");
	n = ctl_wait(t);
	if (n < 0)
		return prot__tls_set_err(t, n, "TLS error", NULL);
	ERR_clear_error();
	/* A memory BIO takes everything: one call, never a retry. */
	t->in_encode = true;
	n = SSL_write(t->ssl, in, (int)in_len);
	t->in_encode = false;
	if (n <= 0)
		return prot__tls_err(t, SSL_get_error(t->ssl, n), "TLS error");
	return prot__tls_take_wire(t, out);
}

/* One non-blocking send of b on out's socket: > 0 bytes sent, or -errno. */
static ssize_t send_now(int fd, const struct buf *b)
{
	return ur_send(fd, b->s, b->len, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/*
 * The write stream ends (prot_free: tls_close; prot_settls NULL:
 * tls_destroy): close_notify, as RFC 8446 §6.1 asks of each side before
 * it closes, when it is sound and cheap. Not for an SSL the caller owns
 * (Cyrus ends it itself, see give_back), not twice (the SSL is shared by
 * both streams, and pl_tls_shutdown may have sent it), not after a TLS
 * or write error or the peer's end of file without close_notify (it is
 * gone, or chose a truncated close; a reply would meet a reset), and
 * never over output the application left behind: unflushed bytes, or
 * the unsent queue of a non-blocking stream (a close_notify after them
 * would make their loss look like a clean end). Both callers run before
 * the queue is dropped, so prot__has_output tells. One non-blocking
 * send: a full socket buffer means no close_notify, never a wait.
 */
static void close_write(struct tls_state *t)
{
	struct protstream *out = t->out;
	struct buf b = {0};

	if (!t->owned || t->ssl == NULL || t->sent_close || t->failed ||
	    t->peer_eof || !prot__tls_out_idle(t))
		return;
	if (ctl_wait(t) < 0)
		return;
	ERR_clear_error();
	(void)SSL_shutdown(t->ssl); /* close_notify into wbio */
	ERR_clear_error();
	t->sent_close = true;
	if (prot__tls_take_wire(t, &b) == 0 && b.len > 0)
		(void)send_now(out->fd, &b);
	prot__buf_release(&b);
}

/*
 * The last stream let go of an SSL the caller owns (prot_settls). Cyrus
 * ends the session itself after prot_free (tls_reset_servertls:
 * SSL_shutdown on the fd, or TLS_FAST_SHUTDOWN), so the SSL gets socket
 * BIOs on its fds back, as it came, and our state goes. Records still
 * unsent go first; if the socket does not take them all, the session
 * ends quietly: a close_notify after a lost record would not decrypt.
 */
static void give_back(struct tls_state *t)
{
	SSL *ssl = t->ssl;
	struct buf b = {0};
	int ok;

	if (t->rfd < 0 || t->wfd < 0)
		return; /* other BIOs: ours stay until SSL_free */
	if (ctl_wait(t) < 0 || prot__tls_take_wire(t, &b) < 0 ||
	    (b.len > 0 && send_now(t->wfd, &b) != (ssize_t)b.len))
		SSL_set_quiet_shutdown(ssl, 1);
	prot__buf_release(&b);
	SSL_set_ex_data(ssl, ex_idx(), NULL);
	ok = t->rfd == t->wfd
		     ? SSL_set_fd(ssl, t->rfd)
		     : SSL_set_rfd(ssl, t->rfd) && SSL_set_wfd(ssl, t->wfd);
	if (!ok) /* still on memory BIOs: nothing would reach the peer */
		SSL_set_quiet_shutdown(ssl, 1);
	state_free(t);
}

/*
 * prot_free(out), before its queue goes. The stream is then done with:
 * once t->out is NULL nothing more goes to its socket (not the
 * close_notify tls_destroy would send once the queue is dropped, not a
 * reader's prot__tls_ctl_push while prot_free yields).
 */
static void tls_close(struct prot__layer *l, struct protstream *s)
{
	struct tls_state *t = l->state;

	(void)s;
	close_write(t);
	t->out = NULL;
}

static void tls_destroy(struct prot__layer *l)
{
	struct tls_state *t = l->state;

	if (l->ops->encode != NULL) {
		close_write(t);
		t->out = NULL;
	}
	free(l);
	if (--t->layers > 0)
		return;
	if (t->ssl == NULL) {
		state_free(t);
	} else if (!t->owned) {
		give_back(t);
	} else {
		/*
		 * OpenSSL forgets the session of an SSL freed before a
		 * shutdown. A connection that simply ended (most IMAP
		 * clients close without close_notify) keeps it resumable,
		 * as Cyrus's TLS_FAST_SHUTDOWN does; one that failed not.
		 */
		if (!t->failed)
			SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN |
							 SSL_RECEIVED_SHUTDOWN);
		SSL_free(t->ssl); /* ex_free() frees t */
	}
}

/*
 * Parking (prot_release). Between records the layer already holds no
 * I/O buffer (see Memory above): this only makes sure of it. OpenSSL's
 * record buffers are freed when empty (SSL_free_buffers, as
 * SSL_MODE_RELEASE_BUFFERS does after each record); a partial record,
 * undecrypted, stays where it is.
 */
static void tls_release(struct prot__layer *l)
{
	struct tls_state *t = l->state;

	if (t->ssl == NULL)
		return;
	prot__tls_bio_release(t->rbio);
	prot__tls_bio_release(t->wbio);
	if (SSL_free_buffers(t->ssl) != 1) {
		/* a record in progress: its buffer stays */
	}
}

/*
 * The SSL object of an idle server connection after a TLS 1.3 handshake
 * (P-256 certificate, no client certificate, buffers released): about
 * 8 KiB of heap with OpenSSL 3.0.19. test-prot-park measures it with
 * mallinfo2: freeing a parked server pair gives back 10.3 KiB, of which
 * 1.4 KiB are the two streams and 0.5 KiB this layer's records. An
 * estimate: OpenSSL gives no size of its own.
 */
#define TLS_SSL_ESTIMATE 8192

/*
 * OpenSSL's read buffer, which a record received in part keeps (it can
 * be released only when empty): a maximal record, its overhead, the
 * header, alignment.
 */
#define TLS_RBUF_ESTIMATE (16384 + 256 + 5 + 8)

/* The state and the SSL count once, on the read stream. */
static size_t tls_memory(const struct prot__layer *l)
{
	const struct tls_state *t = l->state;
	size_t n = sizeof(*l);

	if (l->ops->decode == NULL)
		return n;
	n += sizeof(*t) + bio_held(t->rbio) + bio_held(t->wbio) +
	     t->held.alloc + t->ctl.alloc;
	if (t->ssl == NULL)
		return n;
	/* A record in part: see tls_eof on SSL_has_pending and "RB". */
	if (SSL_has_pending(t->ssl) ||
	    strcmp(SSL_rstate_string(t->ssl), "RB") == 0)
		n += TLS_RBUF_ESTIMATE;
	return n + TLS_SSL_ESTIMATE;
}

static const struct prot__layer_ops tls_read_ops = {
	.name = "tls",
	.rank = 0,
	.decode = tls_decode,
	.pending = tls_pending,
	.destroy = tls_destroy,
	.eof = tls_eof,
	.release = tls_release,
	.memory = tls_memory,
};

static const struct prot__layer_ops tls_write_ops = {
	.name = "tls",
	.rank = 0,
	.encode = tls_encode,
	.close = tls_close,
	.destroy = tls_destroy,
	.release = tls_release,
	.memory = tls_memory,
};

/*
 * The state of ssl, made on first use: fresh memory BIOs replace what
 * the caller attached (a socket BIO after a Cyrus-style handshake on the
 * fd; with BIO_NOCLOSE, as SSL_set_fd makes it, the fd stays open).
 * Bytes a memory BIO of the caller still holds move over.
 */
int prot__tls_state_get(SSL *ssl, bool owned, struct tls_state **t_out)
{
	struct tls_state *t = SSL_get_ex_data(ssl, ex_idx());
	BIO *r, *w, *old;
	char tmp[4096];
	int n;

	if (t != NULL) {
		*t_out = t;
		return 0;
	}
	t = calloc(1, sizeof(*t));
	r = BIO_new(BIO_s_mem());
	w = BIO_new(BIO_s_mem());
	if (t == NULL || r == NULL || w == NULL || ex_idx() < 0)
		goto out_free;
	BIO_set_mem_eof_return(r, -1);
	BIO_set_mem_eof_return(w, -1);
	t->rfd = t->wfd = t->kfd = -1;
	for (int i = 0; i < 2; i++) {
		old = i == 0 ? SSL_get_rbio(ssl) : SSL_get_wbio(ssl);
		if (old != NULL && BIO_method_type(old) == BIO_TYPE_SOCKET)
			*(i == 0 ? &t->rfd : &t->wfd) = BIO_get_fd(old, NULL);
	}
	for (int i = 0; i < 2; i++) {
		old = i == 0 ? SSL_get_rbio(ssl) : SSL_get_wbio(ssl);
		if (old == NULL || BIO_method_type(old) != BIO_TYPE_MEM ||
		    (i == 1 && old == SSL_get_rbio(ssl)))
			continue;
		while ((n = BIO_read(old, tmp, sizeof(tmp))) > 0)
			if (BIO_write(i == 0 ? r : w, tmp, n) != n)
				goto out_free;
	}
	if (!SSL_set_ex_data(ssl, ex_idx(), t))
		goto out_free;
	SSL_set_bio(ssl, r, w);
	SSL_set_options(ssl, SSL_OP_NO_RENEGOTIATION);
	SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
	t->ssl = ssl;
	t->rbio = r;
	t->wbio = w;
	t->owned = owned;
	*t_out = t;
	return 0;
out_free:
	BIO_free(r);
	BIO_free(w);
	free(t);
	return -ENOMEM;
}

static int layer_new(struct tls_state *t, bool write,
		     struct prot__layer **l_out)
{
	struct prot__layer *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return -ENOMEM;
	l->ops = write ? &tls_write_ops : &tls_read_ops;
	l->state = t;
	l->errtext = t->err;
	t->layers++;
	*l_out = l;
	return 0;
}

/* Push the layer of t on s; a read stream drops buffered plaintext. */
int prot__tls_attach(struct protstream *s, struct tls_state *t)
{
	struct prot__layer *l;
	size_t dropped = 0;
	int ret;

	if (!s->write && t->rbio != NULL && BIO_ctrl_pending(t->rbio) > 0) {
		/*
		 * Records the caller's BIO held, or the last flight's. A
		 * bad one fails the first read (with its TLS text), not the
		 * handshake, which is complete: as when it comes later.
		 */
		ret = drain_ssl(t, &t->held, true);
		if (t->held.len == 0) /* a partial record: nothing to hold */
			prot__buf_release(&t->held);
		if (ret < 0)
			return ret;
	}
	ret = layer_new(t, s->write, &l);
	if (ret < 0)
		return ret;
	ret = prot__layer_push(s, l, true, &dropped);
	if (ret < 0) {
		tls_destroy(l);
		return ret;
	}
	t->discarded += dropped;
	if (s->write)
		t->out = s;
	s->tls_conn = t->ssl;
	return 0;
}

static int attach_ssl(struct protstream *s, SSL *ssl, const char **why_out)
{
	struct prot__layer *l = prot__layer_find(s, "tls");
	struct tls_state *t;
	int ret;

	*why_out = NULL;
	if (l != NULL) {
		if (((struct tls_state *)l->state)->ssl == ssl)
			return 0;
		*why_out = "TLS already active on this stream";
		return -EALREADY;
	}
	if (!SSL_is_init_finished(ssl)) {
		*why_out = "TLS handshake not complete";
		return -EINVAL;
	}
	ret = prot__tls_state_get(ssl, false, &t);
	if (ret < 0)
		return ret;
	ret = prot__tls_attach(s, t);
	if (ret == -EINVAL)
		*why_out = "TLS cannot go under a SASL or DEFLATE layer";
	if (ret < 0 && t->layers == 0) {
		/* Leave the SSL as it was, apart from the memory BIOs. */
		SSL_set_ex_data(ssl, ex_idx(), NULL);
		state_free(t);
	}
	return ret;
}

/*
 * Cyrus's prot_settls: ssl has finished its handshake (Cyrus runs it on
 * the fd first, tls_start_servertls); the stream moves it to memory BIOs
 * and drops buffered plaintext (STARTTLS injection). NULL removes the
 * layer (raw I/O again), as Cyrus's NULL does. A failure leaves the
 * stream with an error, so that a caller who ignores the result (Cyrus's
 * cannot fail) never sends plaintext it believes is protected.
 */
int prot_settls(struct protstream *s, struct ssl_st *tlsconn)
{
	const char *why = NULL;
	int ret;

	if (tlsconn == NULL) {
		prot__layer_remove(s, "tls");
		s->tls_conn = NULL;
		return 0;
	}
	ret = attach_ssl(s, tlsconn, &why);
	if (ret < 0)
		return prot__fail(s, ret, why);
	return 0;
}

int pl_tls_info(const struct protstream *s, struct pl_tls_info *info)
{
	const struct prot__layer *l = prot__layer_find(s, "tls");
	const struct tls_state *t = l != NULL ? l->state : NULL;

	if (t == NULL || t->ssl == NULL)
		return -ENOTCONN;
	memset(info, 0, sizeof(*info));
	info->version = SSL_get_version(t->ssl);
	info->cipher = SSL_get_cipher_name(t->ssl);
	info->resumed = SSL_session_reused(t->ssl) != 0;
	info->close_sent = t->sent_close;
	info->ktls_tx = t->ktls_tx;
	info->ktls_error = t->ktls_err;
	info->peer_end = t->read_end   ? PL_TLS_PEER_CLOSE_NOTIFY
			 : t->peer_eof ? PL_TLS_PEER_EOF
				       : PL_TLS_PEER_OPEN;
	info->discarded = t->discarded;
	info->held = bio_held(t->rbio) + bio_held(t->wbio) + t->held.alloc +
		     t->ctl.alloc;
	return 0;
}
