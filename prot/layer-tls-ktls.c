/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/layer-tls-ktls: kTLS transmit offload and its run-time probe. */
#include "layer-tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/tls.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <ringprot/prot-layer.h>

/*
 * kTLS. The kernel module is probed at run time (pl_ktls_available:
 * TCP_ULP "tls" on a loopback connection; ENOENT on this VM). With
 * SSL_OP_ENABLE_KTLS on the ctx, pl_tls_accept/connect put a filter BIO
 * over wbio that answers OpenSSL's kTLS controls (prot__tls_ktls_attach).
 * OpenSSL 3.0.19 as a TLS 1.3 server sends BIO_CTRL_FLUSH, then
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
 * offloaded direction (prot__tls_ctl_push does not trigger one then).
 */

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
	return t->ctl.len > 0 || t->wq.len > 0;
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
		return prot__tls_wire_send(t->hs_wire, t->hs_out, p, n);
	if (t->hs_wire != NULL)
		ret = prot__tls_wire_sendmsg(t->hs_wire, t->kfd, &msg);
	else
		ret = ur_sendmsg(t->kfd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
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
			  : prot__tls_out_idle(t)))
		ret = prot__tls_take_wire(t, &b);
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
		(void)prot__tls_set_err(t, ret, "TLS error",
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
			return prot__tls_wire_flush(t->hs_wire, t, t->hs_out) ==
			       0;
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
void prot__tls_ktls_attach(struct tls_state *t, const struct protstream *out)
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
