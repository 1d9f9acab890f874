/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/layer-tls: the TLS record layer over OpenSSL, ciphertext in memory. */
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
 * two BIOs of our own (see "Ciphertext" below): the read stream's
 * refill lends OpenSSL the ciphertext the ring read and takes plaintext
 * out with SSL_read; a flush puts plaintext in with SSL_write, whose
 * records land in the flush's send buffer. OpenSSL never
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
 * Memory: the BIOs hold bytes only between decodes or flushes, and
 * give their buffers back once drained (prot__tls_bufs_release);
 * OpenSSL's record buffers go when empty (SSL_MODE_RELEASE_BUFFERS), so
 * an idle connection holds no I/O buffer in this layer.
 *
 * Ending: the write layer sends close_notify as the write stream ends
 * (close_write), best effort; an SSL the caller owns (prot_settls) gets
 * its socket BIOs back instead, for Cyrus's own tls_reset_servertls
 * (give_back).
 *
 * kTLS: see layer-tls-ktls.c.
 */

#define FREED_UNDER "SSL freed under the stream"

/* The largest plaintext of a record (RFC 8446 §5.1, RFC 5246 §6.2.1). */
#define TLS_MAX_PLAIN 16384

/*
 * Room for the records of n bytes of plaintext beyond the plaintext: a
 * header, a tag and padding per record, generous for every cipher (TLS
 * 1.3 needs 22 bytes, TLS 1.2 CBC up to 5 + 16 + 48 + 256).
 */
#define TLS_REC_ROOM(n) (((n) / TLS_MAX_PLAIN + 2) * 512)

static int ex_index = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void state_free(struct tls_state *t)
{
	prot__buf_release(&t->held);
	prot__buf_release(&t->ctl);
	prot__buf_release(&t->rq);
	prot__buf_release(&t->wq);
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
	/* SSL_free frees the BIOs after this, calling their ctrl (pop). */
	if (t->rbio != NULL)
		BIO_set_data(t->rbio, NULL);
	if (t->wbio != NULL)
		BIO_set_data(t->wbio, NULL);
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
 * The state goes while the SSL lives on (give_back, a failed
 * prot_settls): BIOs of ours still on it read an end of file and fail
 * writes from now on, rather than reach freed memory.
 */
static void state_detach(struct tls_state *t)
{
	SSL_set_ex_data(t->ssl, ex_idx(), NULL);
	if (t->rbio != NULL)
		BIO_set_data(t->rbio, NULL);
	if (t->wbio != NULL)
		BIO_set_data(t->wbio, NULL);
	state_free(t);
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
 * Ciphertext. A memory BIO costs a copy each way (ring buffer -> BIO ->
 * OpenSSL's record buffer in, record buffer -> BIO -> send buffer out),
 * and its buffer only grows, with a cleansing realloc at each step
 * (BUF_MEM_grow_clean). Our BIOs copy once, as a socket BIO does with
 * the kernel:
 *  - rbio reads from the bytes the current decode lends it (rin), after
 *    what rq still holds (the handshake's reads, a caller's BIO, what a
 *    decode that stopped early left); once both are empty it asks for
 *    more (retry), or, after tls_eof, reports the end (rin_eof);
 *  - wbio appends to wdst, the flush's send buffer, while tls_encode
 *    runs, and to wq otherwise (handshake flights, tickets, answers to
 *    a KeyUpdate, alerts, close_notify): prot__tls_take_wire sends wq
 *    first, so the wire order is the order OpenSSL wrote the records in.
 * rq and wq give their buffers back once drained: an idle connection,
 * and each connection after its handshake, holds neither.
 */
static BIO_METHOD *cmeth;
static pthread_once_t cmeth_once = PTHREAD_ONCE_INIT;

static size_t rbio_avail(const struct tls_state *t)
{
	return t->rq.len - t->rq_off + t->rin_len;
}

static int cbio_read(BIO *b, char *p, size_t n, size_t *done)
{
	struct tls_state *t = BIO_get_data(b);
	size_t k = 0;

	*done = 0;
	BIO_clear_retry_flags(b);
	if (t == NULL)
		return 0; /* detached (state_detach): an end of file */
	if (t->rq_off < t->rq.len) {
		k = t->rq.len - t->rq_off;
		k = k < n ? k : n;
		memcpy(p, t->rq.s + t->rq_off, k);
		t->rq_off += k;
		if (t->rq_off == t->rq.len) {
			prot__buf_release(&t->rq);
			t->rq_off = 0;
		}
	} else if (t->rin_len > 0) {
		k = t->rin_len < n ? t->rin_len : n;
		memcpy(p, t->rin, k);
		t->rin += k;
		t->rin_len -= k;
	}
	if (k == 0) {
		if (!t->rin_eof)
			BIO_set_retry_read(b);
		return 0;
	}
	*done = k;
	return 1;
}

static int cbio_write(BIO *b, const char *p, size_t n, size_t *done)
{
	struct tls_state *t = BIO_get_data(b);

	*done = 0;
	BIO_clear_retry_flags(b);
	if (t == NULL)
		return 0; /* detached: the write fails */
	if (prot__buf_append(t->wdst != NULL ? t->wdst : &t->wq, p, n) < 0) {
		t->wnomem = true;
		return 0;
	}
	*done = n;
	return 1;
}

static long cbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct tls_state *t = BIO_get_data(b);
	bool rd = t != NULL && b == t->rbio;

	(void)num;
	(void)ptr;
	switch (cmd) {
	case BIO_CTRL_PENDING:
		if (t == NULL)
			return 0;
		return rd ? (long)rbio_avail(t) : (long)t->wq.len;
	case BIO_CTRL_EOF: /* as a memory BIO: nothing left to read */
		return t == NULL || !rd || rbio_avail(t) == 0;
	case BIO_CTRL_FLUSH:
		return 1;
	default:
		return 0;
	}
}

static int cbio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void cmeth_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
				     "ringprot TLS");

	if (m == NULL || !BIO_meth_set_read_ex(m, cbio_read) ||
	    !BIO_meth_set_write_ex(m, cbio_write) ||
	    !BIO_meth_set_ctrl(m, cbio_ctrl) ||
	    !BIO_meth_set_create(m, cbio_create)) {
		BIO_meth_free(m);
		return;
	}
	cmeth = m;
}

static BIO *cbio_new(void)
{
	if (pthread_once(&cmeth_once, cmeth_init) != 0 || cmeth == NULL)
		return NULL;
	return BIO_new(cmeth);
}

/* Bytes the BIOs hold for I/O between decodes and flushes. */
static size_t bios_held(const struct tls_state *t)
{
	return t->rq.alloc + t->wq.alloc;
}

void prot__tls_bufs_release(struct tls_state *t)
{
	if (t->rq_off >= t->rq.len) {
		prot__buf_release(&t->rq);
		t->rq_off = 0;
	}
	if (t->wq.len == 0)
		prot__buf_release(&t->wq);
}

int prot__tls_rq_add(struct tls_state *t, const void *p, size_t n)
{
	return prot__buf_append(&t->rq, p, n);
}

/* Move everything wq holds to the end of out. */
static int drain_wq(struct tls_state *t, struct buf *out)
{
	int ret;

	if (t->wq.len == 0)
		return 0;
	if (out->len == 0 && out->alloc == 0) { /* hand the buffer over */
		*out = t->wq;
		t->wq = (struct buf){0};
		return 0;
	}
	ret = prot__buf_append(out, t->wq.s, t->wq.len);
	if (ret == 0)
		prot__buf_release(&t->wq);
	return ret;
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

/* The wire bytes due next: what ctl still holds, then wq's. */
int prot__tls_take_wire(struct tls_state *t, struct buf *out)
{
	int ret = ctl_wait(t);

	if (ret == 0 && t->ctl.len > 0) {
		ret = prot__buf_append(out, t->ctl.s, t->ctl.len);
		if (ret == 0)
			prot__buf_release(&t->ctl);
	}
	return ret < 0 ? ret : drain_wq(t, out);
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
	if (t->ctl_busy || !prot__tls_out_idle(t) || drain_wq(t, &t->ctl) < 0 ||
	    t->ctl.len == 0)
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
	int ret;

	/*
	 * Room for all of it at once (plaintext is never longer than its
	 * ciphertext; OpenSSL may hold a record in part): a 64 KiB read
	 * would otherwise grow out by doubling, copying 64 KiB more.
	 */
	ret = prot__buf_reserve(out, rbio_avail(t) + TLS_MAX_PLAIN);
	if (ret < 0)
		return ret;
	/* SSL_read leaves the queue as it was when it succeeds: once here. */
	ERR_clear_error();
	for (;;) {
		size_t room;
		int n;

		if (out->alloc - out->len - 1 < TLS_MAX_PLAIN / 4) {
			ret = prot__buf_reserve(out, TLS_MAX_PLAIN);
			if (ret < 0)
				return ret;
		}
		room = out->alloc - out->len - 1;
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
	/* Lent to rbio for this call only (see Ciphertext above). */
	t->rin = in;
	t->rin_len = in_len;
	ret = drain_ssl(t, out, false);
	/*
	 * What OpenSSL did not take: after close_notify it is ignored; after
	 * an error (one held back for the next decode included) the session
	 * is over; otherwise (no memory for the plaintext) it is kept.
	 */
	if (t->rin_len > 0 && !t->read_end && !t->failed &&
	    prot__buf_append(&t->rq, t->rin, t->rin_len) < 0 && ret == 0)
		ret = -ENOMEM;
	t->rin = NULL;
	t->rin_len = 0;
	prot__tls_bufs_release(t);
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
	    (rbio_avail(t) == 0 && !SSL_has_pending(t->ssl) &&
	     strcmp(SSL_rstate_string(t->ssl), "RB") != 0))
		return 0;
	t->rin_eof = true;
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
	/* Records due before these (wq, ctl) lead; then ours go to out. */
	n = prot__tls_take_wire(t, out);
	if (n == 0)
		n = prot__buf_reserve(out, in_len + TLS_REC_ROOM(in_len));
	if (n < 0)
		return prot__tls_set_err(t, n, "TLS error", NULL);
	ERR_clear_error();
	/*
	 * wbio takes everything: one call, never a retry, a record per 16
	 * KiB, encrypted in OpenSSL's record buffer and copied once, into
	 * out. Under kTLS the records go through the filter BIO and wq as
	 * before (ktls_record needs them apart from out).
	 */
	t->in_encode = true;
	t->wdst = t->kfd < 0 ? out : NULL;
	n = SSL_write(t->ssl, in, (int)in_len);
	t->wdst = NULL;
	t->in_encode = false;
	if (t->wnomem) {
		t->wnomem = false;
		t->failed = true;
		return prot__tls_set_err(t, -ENOMEM, "TLS error", NULL);
	}
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
	if (t->rfd == t->wfd) {
		ok = SSL_set_fd(ssl, t->rfd);
		if (ok) /* both of ours are freed */
			t->rbio = t->wbio = NULL;
	} else {
		ok = SSL_set_rfd(ssl, t->rfd);
		if (ok)
			t->rbio = NULL;
		ok = ok && SSL_set_wfd(ssl, t->wfd);
		if (ok)
			t->wbio = NULL;
	}
	if (!ok) /* still on our BIOs: nothing would reach the peer */
		SSL_set_quiet_shutdown(ssl, 1);
	state_detach(t);
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
	prot__tls_bufs_release(t);
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
	n += sizeof(*t) + bios_held(t) + t->held.alloc + t->ctl.alloc;
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
	/* Whole reads: a record may span them, and no plaintext is larger. */
	.dec_chunk = SIZE_MAX,
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
	.enc_chunk = TLS_MAX_PLAIN, /* one full record per chunk */
	.encode = tls_encode,
	.close = tls_close,
	.destroy = tls_destroy,
	.release = tls_release,
	.memory = tls_memory,
};

/*
 * The state of ssl, made on first use: our BIOs (see Ciphertext) replace
 * what the caller attached (a socket BIO after a Cyrus-style handshake
 * on the fd; with BIO_NOCLOSE, as SSL_set_fd makes it, the fd stays
 * open). Bytes a memory BIO of the caller still holds move over.
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
	r = cbio_new();
	w = cbio_new();
	if (t == NULL || r == NULL || w == NULL || ex_idx() < 0)
		goto out_free;
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
			if (prot__buf_append(i == 0 ? &t->rq : &t->wq, tmp,
					     (size_t)n) < 0)
				goto out_free;
	}
	if (!SSL_set_ex_data(ssl, ex_idx(), t))
		goto out_free;
	BIO_set_data(r, t);
	BIO_set_data(w, t);
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
	if (t != NULL)
		state_free(t);
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

	if (!s->write && t->ssl != NULL && rbio_avail(t) > 0) {
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
		/* Leave the SSL as it came: its socket BIOs back, if any. */
		if (t->rfd >= 0 && t->wfd >= 0)
			give_back(t);
		else
			state_detach(t);
	}
	return ret;
}

/*
 * Cyrus's prot_settls: ssl has finished its handshake (Cyrus runs it on
 * the fd first, tls_start_servertls); the stream moves it to its own BIOs
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
	info->held = bios_held(t) + t->held.alloc + t->ctl.alloc;
	return 0;
}
