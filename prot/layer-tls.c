/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/layer-tls: TLS over OpenSSL memory BIOs, handshakes on the ring. */
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/tls.h>
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
 * alerts) leave at once when the write stream is idle (ctl_push), and
 * otherwise lead its next flush: the read side never cuts into a flush
 * in progress on another fiber, and never waits for the peer.
 *
 * Memory: a drained memory BIO gives its buffer back (bio_release), and
 * OpenSSL's record buffers go when empty (SSL_MODE_RELEASE_BUFFERS), so
 * an idle connection holds no I/O buffer in this layer.
 *
 * Ending: the write layer sends close_notify as it goes (close_write),
 * best effort; an SSL the caller owns (prot_settls) gets its socket BIOs
 * back instead, for Cyrus's own tls_reset_servertls (give_back).
 *
 * kTLS. The kernel module is probed at run time (pl_ktls_available:
 * TCP_ULP "tls" on a loopback connection; ENOENT on this VM). With
 * SSL_OP_ENABLE_KTLS on the ctx, pl_tls_accept/connect put a filter BIO
 * over wbio that answers OpenSSL's kTLS controls (ktls_attach). OpenSSL
 * 3.0.19 as a TLS 1.3 server sends BIO_CTRL_FLUSH, then
 * BIO_CTRL_SET_KTLS with the transmit keys, once, and never offers
 * receive keys (seen with a BIO callback). Then:
 *  - the flush sends the flight at once (a TLS 1.3 server gets its
 *    application keys while its flight is still in wbio), and the keys
 *    are declined whenever anything is unsent: after TLS_TX every byte
 *    on the socket is plaintext to the kernel;
 *  - setsockopt(TCP_ULP, "tls"), then SOL_TLS TLS_TX with the keys'
 *    length taken from their cipher_type (<linux/tls.h>), not from
 *    OpenSSL's private struct; any failure returns 0 and OpenSSL goes on
 *    in userspace (pl_tls_info.ktls_error says why: here -ENOENT);
 *  - from then on SSL_write hands plaintext to the BIO and the flush
 *    engine sends it as it is; a control record (ticket, alert,
 *    close_notify) goes at once in a sendmsg with a TLS_SET_RECORD_TYPE
 *    cmsg after everything before it (ktls_record), or fails the session
 *    if an earlier flush may still be unsent;
 *  - receive keys are declined: fill.c reads with a plain recv, which
 *    fails with EIO on a non-data record under TLS_RX (recvmsg with a
 *    TLS_GET_RECORD_TYPE cmsg would be needed there).
 * Untested here (no module): everything after a successful TLS_TX,
 * including what OpenSSL 3.0 does with a TLS 1.3 KeyUpdate on an
 * offloaded direction (ctl_push does not trigger one then).
 */

/* Bytes per ring read during a handshake (a full record and a bit). */
#define HS_BUF 17408

#define FREED_UNDER "SSL freed under the stream"

struct tls_state {
	SSL *ssl;  /* NULL once SSL_free ran (the owner freed it) */
	BIO *rbio; /* ciphertext in (owned by ssl) */
	BIO *wbio; /* ciphertext out (owned by ssl) */
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
	bool ktls_tx;	 /* the kernel encrypts what we send (kTLS) */
	int kfd;	 /* the socket kTLS may use, -1: none (no kTLS BIO) */
	int krec_type;	 /* kTLS: the next write is a record of this type */
	int ktls_err;	 /* -errno of the last kTLS setup that failed */
	struct wire *hs_wire; /* the handshake's I/O, while it runs */
	const struct protstream *hs_out; /* its write stream */
	uint64_t discarded;
	struct buf held; /* plaintext decoded at handshake end */
	struct buf ctl;	 /* records taken from wbio and not yet sent */
	char err[256];
};

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

static int tls_err(struct tls_state *t, int sslerr, const char *what)
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

static int set_err(struct tls_state *t, int err, const char *what,
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

static void bio_release(BIO *b)
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
	bio_release(t->wbio);
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
static int take_wire(struct tls_state *t, struct buf *out)
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
static bool out_idle(const struct tls_state *t)
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
 * send is in flight waits for it in take_wire. What the socket does not
 * take stays in ctl and leads the next flush: a peer that never reads
 * cannot hold up the read path.
 */
static void ctl_push(struct tls_state *t)
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
	if (t->ctl_busy || !out_idle(t) || drain_wbio(t, &t->ctl) < 0 ||
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
 * PROT__LAYER_END once close_notify arrived, or -errno.
 */
static int drain_ssl(struct tls_state *t, struct buf *out)
{
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
			return tls_err(t, SSL_get_error(t->ssl, n),
				       "TLS error");
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
	}
	if (t->read_end)
		return PROT__LAYER_END; /* bytes after close_notify: ignored */
	if (t->ssl == NULL)
		return set_err(t, -EPIPE, "TLS error", FREED_UNDER);
	if (in_len > 0 && BIO_write(t->rbio, in, (int)in_len) != (int)in_len)
		return -ENOMEM;
	ret = drain_ssl(t, out);
	bio_release(t->rbio);
	ctl_push(t);
	return ret;
}

static bool tls_pending(const struct prot__layer *l)
{
	const struct tls_state *t = l->state;

	return t->held.len > 0 || (t->ssl != NULL && SSL_pending(t->ssl) > 0);
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
	if (!t->read_end)
		t->peer_eof = true;
	if (t->read_end || t->ssl == NULL ||
	    (BIO_ctrl_pending(t->rbio) == 0 && !SSL_has_pending(t->ssl)))
		return 0;
	BIO_set_mem_eof_return(t->rbio, 0);
	ERR_clear_error();
	n = SSL_read(t->ssl, scratch, sizeof(scratch));
	if (n > 0)
		return set_err(t, -ECONNRESET, "TLS error",
			       "unexpected eof while reading");
	return tls_err(t, SSL_get_error(t->ssl, n), "TLS error");
}

static int tls_encode(struct prot__layer *l, const unsigned char *in,
		      size_t in_len, struct buf *out)
{
	struct tls_state *t = l->state;
	int n;

	l->errtext = t->err;
	if (t->ssl == NULL)
		return set_err(t, -EPIPE, "TLS error", FREED_UNDER);
	if (t->sent_close)
		return set_err(t, -EPIPE, "TLS error",
			       "session closed (close_notify sent)");
	n = ctl_wait(t);
	if (n < 0)
		return set_err(t, n, "TLS error", NULL);
	ERR_clear_error();
	/* A memory BIO takes everything: one call, never a retry. */
	t->in_encode = true;
	n = SSL_write(t->ssl, in, (int)in_len);
	t->in_encode = false;
	if (n <= 0)
		return tls_err(t, SSL_get_error(t->ssl, n), "TLS error");
	return take_wire(t, out);
}

/* One non-blocking send of b on out's socket: > 0 bytes sent, or -errno. */
static ssize_t send_now(int fd, const struct buf *b)
{
	return ur_send(fd, b->s, b->len, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/*
 * The write layer goes (prot_free, prot_settls NULL): close_notify, as
 * RFC 8446 §6.1 asks of each side before it closes, when it is sound and
 * cheap. Not for an SSL the caller owns (Cyrus ends it itself, see
 * give_back), not twice (the SSL is shared by both streams, and
 * pl_tls_shutdown may have sent it), not after a TLS or write error or
 * the peer's end of file without close_notify (it is gone, or chose a
 * truncated close; a reply would meet a reset), and never over output
 * the application left behind: unflushed bytes, or the queue of a
 * non-blocking stream, which prot_free has dropped before the layers go
 * (refused whole until prot_free calls the layers before it drops the
 * queue). One non-blocking send: a full socket buffer means no
 * close_notify, never a wait.
 */
static void close_write(struct tls_state *t)
{
	struct protstream *out = t->out;
	struct buf b = {0};

	if (!t->owned || t->ssl == NULL || t->sent_close || t->failed ||
	    t->peer_eof || !out_idle(t) || out->dontblock)
		return;
	if (ctl_wait(t) < 0)
		return;
	ERR_clear_error();
	(void)SSL_shutdown(t->ssl); /* close_notify into wbio */
	ERR_clear_error();
	t->sent_close = true;
	if (take_wire(t, &b) == 0 && b.len > 0)
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
	if (ctl_wait(t) < 0 || take_wire(t, &b) < 0 ||
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

static const struct prot__layer_ops tls_read_ops = {
	.name = "tls",
	.rank = 0,
	.decode = tls_decode,
	.pending = tls_pending,
	.destroy = tls_destroy,
	.eof = tls_eof,
};

static const struct prot__layer_ops tls_write_ops = {
	.name = "tls",
	.rank = 0,
	.encode = tls_encode,
	.destroy = tls_destroy,
};

/*
 * The state of ssl, made on first use: fresh memory BIOs replace what
 * the caller attached (a socket BIO after a Cyrus-style handshake on the
 * fd; with BIO_NOCLOSE, as SSL_set_fd makes it, the fd stays open).
 * Bytes a memory BIO of the caller still holds move over.
 */
static int state_get(SSL *ssl, bool owned, struct tls_state **t_out)
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
static int attach(struct protstream *s, struct tls_state *t)
{
	struct prot__layer *l;
	size_t dropped = 0;
	int ret;

	if (!s->write && t->rbio != NULL && BIO_ctrl_pending(t->rbio) > 0) {
		/* Records the caller's BIO held, or the last flight's. */
		ret = drain_ssl(t, &t->held);
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
	ret = state_get(ssl, false, &t);
	if (ret < 0)
		return ret;
	ret = attach(s, t);
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

/*
 * Handshake I/O: the ciphertext goes straight between the socket and
 * the BIOs, with one deadline for the whole handshake. The op and the
 * buffer live on the heap, never on a fiber stack.
 */
struct wire {
	struct ur_op op;
	struct ur_timer timer;
	struct ur_loop *loop;
	bool timer_on;
	bool timed_out;
	unsigned char buf[HS_BUF];
};

static void wire_timeout(struct ur_timer *tm, void *arg)
{
	struct wire *w = arg;

	(void)tm;
	w->timed_out = true;
	if (ur_op_is_busy(&w->op))
		prot__cancel(&w->op);
}

static int wire_init(struct wire *w, int timeout_ms)
{
	int ret = ur_loop_get(&w->loop);

	if (ret < 0)
		return ret;
	ur_op_init(&w->op, NULL, NULL);
	if (timeout_ms <= 0)
		return 0;
	ur_timer_init(&w->timer, w->loop);
	ret = ur_timer_start(&w->timer, (uint64_t)timeout_ms * 1000000ULL,
			     wire_timeout, w);
	if (ret < 0)
		return ret;
	w->timer_on = true;
	return 0;
}

static void wire_fini(struct wire *w)
{
	if (w->timer_on)
		(void)ur_timer_stop(&w->timer);
	w->timer_on = false;
}

/* Wait for op; a cancel by the deadline reads as -ETIMEDOUT. */
static int wire_wait(struct wire *w)
{
	int res = ur_op_wait(&w->op);

	if (res == -ECANCELED && w->timed_out)
		return -ETIMEDOUT;
	return res;
}

/* One read of ciphertext: > 0 bytes, 0 at EOF, -errno. */
static int wire_recv(struct wire *w, const struct protstream *in)
{
	bool sock = prot__cof(in)->kind == PROT__K_SOCKET;
	int ret;

	for (;;) {
		if (w->timed_out)
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

static int wire_send(struct wire *w, const struct protstream *out,
		     const unsigned char *p, size_t n)
{
	bool sock = prot__cof(out)->kind == PROT__K_SOCKET;
	int ret;

	while (n > 0) {
		if (w->timed_out)
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

/* Send what OpenSSL wrote to wbio. */
static int wire_flush(struct wire *w, struct tls_state *t,
		      const struct protstream *out)
{
	struct buf b = {0};
	int ret = take_wire(t, &b);

	if (ret == 0 && b.len > 0)
		ret = wire_send(w, out, (unsigned char *)b.s, b.len);
	prot__buf_release(&b);
	return ret;
}

/*
 * kTLS transmit (SSL_OP_ENABLE_KTLS on the ctx; see the design note at
 * the top). A filter BIO over wbio answers OpenSSL's kTLS controls; the
 * numbers are OpenSSL's internal ones (include/internal/bio.h, listed in
 * a comment of <openssl/bio.h>).
 */
#ifndef SSL_OP_ENABLE_KTLS /* OpenSSL before 3.0: never asked for */
#define SSL_OP_ENABLE_KTLS     0
#define BIO_CTRL_GET_KTLS_SEND 73
#define BIO_CTRL_GET_KTLS_RECV 76
#endif
#define KTLS_SET	    72 /* BIO_CTRL_SET_KTLS: larg is_tx, parg keys */
#define KTLS_SEND_CTRL_MSG  74 /* the next write is a record of type larg */
#define KTLS_CLEAR_CTRL_MSG 75

static BIO_METHOD *kmeth;
static pthread_once_t kmeth_once = PTHREAD_ONCE_INIT;

static bool wire_pending(const struct tls_state *t)
{
	return t->ctl.len > 0 || BIO_ctrl_pending(t->wbio) > 0;
}

/* The kernel's size for the keys OpenSSL hands over. */
static socklen_t ktls_keys_len(const struct tls_crypto_info *ci)
{
	switch (ci->cipher_type) {
	case TLS_CIPHER_AES_GCM_128:
		return sizeof(struct tls12_crypto_info_aes_gcm_128);
	case TLS_CIPHER_AES_GCM_256:
		return sizeof(struct tls12_crypto_info_aes_gcm_256);
	case TLS_CIPHER_AES_CCM_128:
		return sizeof(struct tls12_crypto_info_aes_ccm_128);
	case TLS_CIPHER_CHACHA20_POLY1305:
		return sizeof(struct tls12_crypto_info_chacha20_poly1305);
	default:
		return 0;
	}
}

/*
 * OpenSSL offers keys. Only transmit keys, only during the handshake,
 * and only with nothing unsent: from TLS_TX on, every byte written to
 * the socket is plaintext to the kernel. Receive keys are declined: a
 * plain recv (fill.c) of a non-data record fails under TLS_RX. Any
 * failure returns 0 and OpenSSL goes on in userspace.
 */
static long ktls_start(struct tls_state *t, long is_tx,
		       const struct tls_crypto_info *ci)
{
	socklen_t len;

	if (!is_tx || ci == NULL || t->hs_wire == NULL || wire_pending(t))
		return 0;
	len = ktls_keys_len(ci);
	if (len == 0) {
		t->ktls_err = -EOPNOTSUPP;
		return 0;
	}
	if ((setsockopt(t->kfd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) <
		     0 &&
	     errno != EEXIST) ||
	    setsockopt(t->kfd, SOL_TLS, TLS_TX, ci, len) < 0) {
		t->ktls_err = -errno;
		return 0;
	}
	t->ktls_err = 0;
	t->ktls_tx = true;
	return 1;
}

/*
 * One send of p on the kTLS socket, as a record of type (0: data). In
 * the handshake it runs under the handshake's deadline; afterwards it
 * is one non-blocking send that must take it all.
 */
static int ktls_send(struct tls_state *t, const void *p, size_t n, int type)
{
	union {
		struct cmsghdr h;
		unsigned char b[CMSG_SPACE(1)];
	} c;
	struct iovec iov = {.iov_base = (void *)(uintptr_t)p, .iov_len = n};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	struct cmsghdr *cm;
	ssize_t ret;

	if (type != 0) {
		memset(&c, 0, sizeof(c));
		msg.msg_control = c.b;
		msg.msg_controllen = sizeof(c.b);
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_TLS;
		cm->cmsg_type = TLS_SET_RECORD_TYPE;
		cm->cmsg_len = CMSG_LEN(1);
		*CMSG_DATA(cm) = (unsigned char)type;
	}
	if (t->hs_wire != NULL && type == 0)
		return wire_send(t->hs_wire, t->hs_out, p, n);
	if (t->hs_wire != NULL) {
		ur_op_init(&t->hs_wire->op, NULL, NULL);
		ret = ur_sendmsg_start(t->hs_wire->loop, &t->hs_wire->op,
				       t->kfd, &msg, MSG_NOSIGNAL);
		if (ret == 0)
			ret = wire_wait(t->hs_wire);
	} else {
		ret = ur_sendmsg(t->kfd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	if (ret < 0)
		return (int)ret;
	return (size_t)ret == n ? 0 : -EAGAIN;
}

/*
 * A control record (ticket, alert, close_notify) under kTLS: after all
 * that OpenSSL wrote before it, with its type in a cmsg. It cannot join
 * the flush engine's queue (plain sends), so it goes now; if bytes of
 * an earlier flush may still be unsent (a flush under way, a queue, an
 * earlier chunk of this flush) it cannot keep its place, and the
 * session fails rather than send records out of order.
 */
static int ktls_record(struct tls_state *t, int type, const void *p, size_t n)
{
	const struct prot__stream *ps =
		t->out != NULL ? prot__cof(t->out) : NULL;
	struct buf b = {0};
	int ret = -EAGAIN;

	if (t->hs_wire != NULL ||
	    (t->in_encode ? ps != NULL && ps->enc.len == 0 && ps->q_bytes == 0
			  : out_idle(t)))
		ret = take_wire(t, &b);
	if (ret == 0 && b.len > 0)
		ret = ktls_send(t, b.s, b.len, 0);
	if (ret == 0)
		ret = ktls_send(t, p, n, type);
	prot__buf_release(&b);
	return ret;
}

static int kbio_write(BIO *b, const char *p, size_t n, size_t *done)
{
	struct tls_state *t = BIO_get_data(b);
	int type = t->krec_type, ret;

	*done = 0;
	BIO_clear_retry_flags(b);
	if (type == 0)
		return BIO_write_ex(BIO_next(b), p, n, done);
	t->krec_type = 0; /* one write, one record (as OpenSSL's socket BIO) */
	ret = ktls_record(t, type, p, n);
	if (ret < 0) {
		t->failed = true;
		(void)set_err(t, ret, "TLS error",
			      "control record not sent (kTLS)");
		return 0;
	}
	*done = n;
	return 1;
}

static long kbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct tls_state *t = BIO_get_data(b);

	switch (cmd) {
	case BIO_CTRL_GET_KTLS_SEND:
		return t->ktls_tx;
	case BIO_CTRL_GET_KTLS_RECV:
		return 0;
	case KTLS_SET:
		return ktls_start(t, num, ptr);
	case KTLS_SEND_CTRL_MSG:
		t->krec_type = (int)num;
		return 0;
	case KTLS_CLEAR_CTRL_MSG:
		t->krec_type = 0;
		return 0;
	case BIO_CTRL_FLUSH:
		/* Before keys change hands the flight must be on the wire. */
		if (t->hs_wire != NULL && wire_pending(t))
			return wire_flush(t->hs_wire, t, t->hs_out) == 0;
		return 1;
	default:
		return BIO_ctrl(BIO_next(b), cmd, num, ptr);
	}
}

static int kbio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void kmeth_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_FILTER,
				     "ringprot kTLS");

	if (m == NULL || !BIO_meth_set_write_ex(m, kbio_write) ||
	    !BIO_meth_set_ctrl(m, kbio_ctrl) ||
	    !BIO_meth_set_create(m, kbio_create)) {
		BIO_meth_free(m);
		return;
	}
	kmeth = m;
}

/*
 * Put the kTLS BIO over wbio when the application asked OpenSSL for
 * kTLS and the write stream is a socket with a real fd (a direct
 * descriptor has none for setsockopt). Without it nothing changes.
 */
static void ktls_attach(struct tls_state *t, const struct protstream *out)
{
	BIO *kb;

	if (!(SSL_get_options(t->ssl) & SSL_OP_ENABLE_KTLS) ||
	    prot__cof(out)->kind != PROT__K_SOCKET || UR_IS_FIXED(out->fd) ||
	    pthread_once(&kmeth_once, kmeth_init) != 0 || kmeth == NULL)
		return;
	kb = BIO_new(kmeth);
	if (kb == NULL || !BIO_up_ref(t->wbio)) {
		BIO_free(kb);
		return;
	}
	BIO_set_data(kb, t);
	BIO_push(kb, t->wbio);
	SSL_set0_wbio(t->ssl, kb); /* drops the reference taken above */
	t->kfd = out->fd;
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
			ret = tls_err(t, e, what);
			(void)wire_flush(w, t, out);
			return ret;
		}
		ret = wire_flush(w, t, out);
		if (ret < 0)
			return set_err(t, ret, what,
				       ret == -ETIMEDOUT ? "timed out" : NULL);
		if (r == 1)
			return 0;
		ret = wire_recv(w, in);
		if (ret == 0)
			ret = -ECONNRESET;
		if (ret < 0)
			return set_err(t, ret, what,
				       ret == -ETIMEDOUT ? "timed out"
				       : ret == -ECONNRESET
					       ? "connection closed by peer"
					       : NULL);
		if (BIO_write(t->rbio, w->buf, ret) != ret)
			return set_err(t, -ENOMEM, what, NULL);
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
 * dropping buffered plaintext; attach() decodes the records that came
 * with the last flight (a TLS 1.3 ticket, the first command of an eager
 * client) at once, so that readiness (prot_select) is exact.
 */
static int finish(struct protstream *in, struct protstream *out,
		  struct tls_state *t)
{
	int ret;

	ret = attach(in, t);
	if (ret == 0)
		ret = attach(out, t);
	if (ret < 0)
		return set_err(t, ret, "TLS setup failed", NULL);
	bio_release(t->rbio);
	ctl_push(t); /* and gives the handshake's buffers back */
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
		return hs_fail(in, out, -EIO, NULL, errstr_out);
	w = calloc(1, sizeof(*w));
	ssl = SSL_new(ctx);
	if (w == NULL || ssl == NULL) {
		free(w);
		SSL_free(ssl);
		return hs_fail(in, out, -ENOMEM, NULL, errstr_out);
	}
	ret = state_get(ssl, true, &t);
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
	ktls_attach(t, out);
	if (ret == 0)
		ret = wire_init(w, timeout_ms);
	t->hs_wire = w;
	t->hs_out = out;
	if (ret == 0)
		ret = handshake(w, t, in, out);
	else
		set_err(t, ret, "TLS setup failed", NULL);
	t->hs_wire = NULL;
	t->hs_out = NULL;
	wire_fini(w);
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
	ret = errno;
	if (t->read_end)
		ret = 0;
	else if (in->error == NULL)
		ret = -ECONNRESET; /* end of file without close_notify */
	else
		ret = ret > 0 ? -ret : -EIO;
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
			return errno > 0 ? -errno : -EIO;
		ERR_clear_error();
		(void)SSL_shutdown(t->ssl); /* close_notify into wbio */
		ERR_clear_error();
		t->sent_close = true;
		w = calloc(1, sizeof(*w));
		if (w == NULL)
			return -ENOMEM;
		ret = wire_init(w, timeout_ms);
		if (ret == 0)
			ret = wire_flush(w, t, out);
		wire_fini(w);
		free(w);
		if (ret < 0)
			return ret;
	}
	if (in == NULL || in->write || t->read_end)
		return 0;
	return await_close(in, t, timeout_ms);
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

/*
 * kTLS probe: a loopback TCP connection and setsockopt(TCP_ULP, "tls").
 * ENOENT means no tls module (this VM); success means the kernel could
 * carry records. Plain syscalls: it runs once per process.
 */
static bool ktls_ok;
static pthread_once_t ktls_once = PTHREAD_ONCE_INIT;

static void ktls_probe(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	int lfd, cfd = -1, sfd = -1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return;
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &alen) < 0)
		goto out;
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cfd < 0 || connect(cfd, (struct sockaddr *)&a, sizeof(a)) < 0)
		goto out;
	sfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	ktls_ok = setsockopt(cfd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) ==
		  0;
out:
	if (sfd >= 0)
		close(sfd);
	if (cfd >= 0)
		close(cfd);
	close(lfd);
}

bool pl_ktls_available(void)
{
	(void)pthread_once(&ktls_once, ktls_probe);
	return ktls_ok;
}
