/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/prot-tls: peer records and garbage through TLS and DEFLATE. */
#include "fuzz-prot.h"

#ifdef RINGPROT_HAVE_TLS
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#ifdef RINGPROT_HAVE_ZLIB
#include <zlib.h>
#endif

#include <ringprot/prot-layer.h>
#include <ringprot/prot.h>
#include <ringprot/uring.h>

/*
 * A server stream pair (prot_new on one end of a socketpair) against a
 * hostile TLS client: an OpenSSL client over memory BIOs that a peer
 * fiber on the same loop drives by hand, so there is no thread and no
 * timing. The peer completes a real handshake with pl_tls_accept (TLS
 * 1.3 or 1.2), then sends a script the input writes: application
 * records made by its SSL, raw garbage, records with a flipped byte,
 * records cut short, KeyUpdate requests, close_notify, in messages the
 * input cuts (SOCK_SEQPACKET: each recv takes one message; SOCK_STREAM:
 * whatever the kernel coalesces), optionally glued to the client's
 * Finished (the plaintext then arrives with the handshake's last
 * flight), then the end of the connection.
 *
 * Our side reads with prot_getc, prot_fgets, prot_read and prot_ungetc
 * until EOF. Without corruption every plaintext byte sent before the end
 * (close_notify or the connection's end) arrives, in order, and the end
 * is a clean EOF. With corruption before close_notify the plaintext of
 * the records before it arrives byte-exact, nothing after it, and the
 * end is an error whose text says TLS. Afterwards nothing of the input
 * may live on: no op in flight, no fiber, no timer.
 *
 * DEFLATE mode (with zlib): prot_setcompress on the read stream before
 * the first read, over TLS or over the bare socket (the script's records
 * are then plain bytes), and the plaintext is the raw compressed stream.
 * The output must be what zlib's own raw inflate makes of it: all of it
 * and a clean EOF for a stream that is sound, a prefix of it and an
 * error for a corrupt one or one cut by TLS corruption.
 *
 * Input: byte 0 flags (F_*), byte 1 the read calls' seed, then the
 * script: one control byte per step (low 3 bits the kind, bit 3 ends
 * the message after it, the rest the step's size), its arguments, and
 * the step's data bytes from the input itself.
 */

#define F_TLS12	  0x01 /* TLS 1.2 instead of 1.3 */
#define F_SEQ	  0x02 /* SOCK_SEQPACKET: recv boundaries are messages */
#define F_GLUE	  0x04 /* the first message rides with the Finished */
#define F_ZLIB	  0x08 /* DEFLATE on the read stream */
#define F_BARE	  0x10 /* DEFLATE mode: no TLS at all */
#define F_NOTIMEO 0x20 /* no read timeout on our stream */

#define MSG_MAX	  16384 /* one provided buffer: a message is never cut */
#define SEG_MAX	  20000 /* one step's plaintext */
#define WIRE_MAX  (1u << 20)
#define READ_MAX  5000
#define FGETS_MAX 300

enum step {
	S_DATA,	     /* an application record (or more) of input bytes */
	S_DATA2,     /* the same: valid data is the common case */
	S_GARBAGE,   /* raw input bytes on the wire */
	S_FLIP,	     /* a record with one byte flipped */
	S_CUT,	     /* a record cut short */
	S_KEYUPDATE, /* KeyUpdate, update_requested (TLS 1.3) */
	S_CLOSE,     /* close_notify */
	S_EMPTY,     /* a message boundary only */
};

/*
 * Set up once: a self-signed P-256 certificate made in memory, a server
 * and a client context per version. Static: reachable, not a leak.
 */
static SSL_CTX *sctx[2], *cctx[2];

static void tls_setup(void)
{
	EVP_PKEY *key;
	X509 *x;
	X509_NAME *name;

	if (sctx[0] != NULL)
		return;
	key = EVP_EC_gen("P-256");
	x = X509_new();
	FUZZ_CHECK(key != NULL && x != NULL);
	FUZZ_CHECK(X509_set_version(x, 2) == 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 3650);
	FUZZ_CHECK(X509_set_pubkey(x, key) == 1);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
				   (const unsigned char *)"localhost", -1, -1,
				   0);
	FUZZ_CHECK(X509_set_issuer_name(x, name) == 1);
	FUZZ_CHECK(X509_sign(x, key, EVP_sha256()) > 0);
	for (int i = 0; i < 2; i++) {
		int v = i == 0 ? TLS1_3_VERSION : TLS1_2_VERSION;

		sctx[i] = SSL_CTX_new(TLS_server_method());
		cctx[i] = SSL_CTX_new(TLS_client_method());
		FUZZ_CHECK(sctx[i] != NULL && cctx[i] != NULL);
		FUZZ_CHECK(SSL_CTX_use_certificate(sctx[i], x) == 1);
		FUZZ_CHECK(SSL_CTX_use_PrivateKey(sctx[i], key) == 1);
		FUZZ_CHECK(SSL_CTX_set_min_proto_version(sctx[i], v) == 1);
		FUZZ_CHECK(SSL_CTX_set_max_proto_version(sctx[i], v) == 1);
		FUZZ_CHECK(SSL_CTX_set_min_proto_version(cctx[i], v) == 1);
		FUZZ_CHECK(SSL_CTX_set_max_proto_version(cctx[i], v) == 1);
		/* No tickets, no cache: every input does a full handshake. */
		(void)SSL_CTX_set_num_tickets(sctx[i], 0);
		(void)SSL_CTX_set_options(sctx[i], SSL_OP_NO_TICKET);
		(void)SSL_CTX_set_session_cache_mode(sctx[i],
						     SSL_SESS_CACHE_OFF);
		(void)SSL_CTX_set_session_cache_mode(cctx[i],
						     SSL_SESS_CACHE_OFF);
	}
	X509_free(x);
	EVP_PKEY_free(key);
}

/* The peer: a hand-driven client and the script it sends. */
struct peer {
	int fd;
	bool tls, tls12, seq, glue;
	SSL *ssl;
	BIO *r, *w;
	struct fuzz_in script;
	int hs_ret; /* 0, or < 0: the handshake failed on the peer's side */
	/* What the script makes. */
	struct obuf wire; /* every byte sent after the handshake */
	size_t cuts[512]; /* message ends in wire */
	unsigned ncuts;
	struct obuf plain_all; /* plaintext of every valid record sent */
	size_t plain_clean;    /* of it, what precedes the corruption */
	size_t plain_opt;      /* and after that, what may still arrive */
	bool corrupt;	       /* corruption before any close_notify */
	bool closed;	       /* close_notify before any corruption */
	bool shut;	       /* close_notify sent: SSL_write refuses */
	bool keyupdate;
};

static void bio_take(BIO *b, struct obuf *o)
{
	size_t n = BIO_ctrl_pending(b);

	if (n == 0)
		return;
	obuf_room(o, n);
	FUZZ_CHECK(BIO_read(b, o->p + o->len, (int)n) == (int)n);
	o->len += n;
}

static void cut(struct peer *p)
{
	size_t max = sizeof(p->cuts) / sizeof(p->cuts[0]);

	if (p->ncuts > 0 && p->cuts[p->ncuts - 1] == p->wire.len)
		return;
	/* Out of room: the last message grows (never a byte unsent). */
	HINT(p->ncuts == max);
	if (p->ncuts == max)
		p->cuts[max - 1] = p->wire.len;
	else
		p->cuts[p->ncuts++] = p->wire.len;
}

/* Plaintext bytes: the step's size from the input, then that many. */
static size_t take_data(struct fuzz_in *in, unsigned size_code,
			const uint8_t **d_out)
{
	size_t n;

	n = size_code < 12 ? size_code * 8 + fuzz_u8(in) % 8
			   : (size_code - 11) * 1000 + fuzz_u8(in) * 4;
	if (n > SEG_MAX)
		n = SEG_MAX;
	if (n > in->n)
		n = in->n;
	*d_out = in->p;
	in->p += n;
	in->n -= n;
	return n;
}

/* The end of the valid plaintext the server may deliver. */
static void corrupt_here(struct peer *p)
{
	if (!p->corrupt && !p->closed) {
		p->corrupt = true;
		p->plain_clean = p->plain_all.len;
	}
}

static void valid_plain(struct peer *p, const uint8_t *d, size_t n)
{
	if (!p->corrupt && !p->closed)
		obuf_add(&p->plain_all, d, n);
}

/* One step of the script: its bytes go to the end of p->wire. */
static void script_step(struct peer *p)
{
	struct fuzz_in *in = &p->script;
	unsigned c = fuzz_u8(in), size = c >> 4;
	struct obuf rec = {0};
	const uint8_t *d;
	size_t n, at;
	bool first;

	switch ((enum step)(c & 7)) {
	case S_DATA:
	case S_DATA2:
		n = take_data(in, size, &d);
		if (n == 0)
			break;
		if (!p->tls) {
			obuf_add(&p->wire, d, n);
			valid_plain(p, d, n);
			break;
		}
		if (p->shut)
			break; /* SSL_write refuses after close_notify */
		FUZZ_CHECK(SSL_write(p->ssl, d, (int)n) == (int)n);
		bio_take(p->w, &p->wire);
		valid_plain(p, d, n);
		break;
	case S_GARBAGE:
		n = take_data(in, size, &d);
		HINT(n >= 5 && d[0] == 0x17 && d[1] == 3);
		obuf_add(&p->wire, d, n);
		if (n > 0 && p->tls)
			corrupt_here(p);
		else if (!p->tls)
			valid_plain(p, d, n);
		break;
	case S_FLIP:
	case S_CUT:
		at = fuzz_u16(in);
		n = take_data(in, size, &d);
		if (!p->tls) {
			obuf_add(&p->wire, d, n);
			valid_plain(p, d, n);
			break;
		}
		if (p->shut || n == 0)
			break;
		FUZZ_CHECK(SSL_write(p->ssl, d, (int)n) == (int)n);
		bio_take(p->w, &rec);
		FUZZ_CHECK(rec.len > 5);
		if ((c & 7) == S_FLIP) {
			unsigned mask = fuzz_u8(in) | 1;

			HINT(at % rec.len < 5); /* in the record header */
			rec.p[at % rec.len] ^= (uint8_t)mask;
		} else {
			rec.len = 1 + at % (rec.len - 1);
			HINT(rec.len < 5);
		}
		obuf_add(&p->wire, rec.p, rec.len);
		first = !p->corrupt && !p->closed;
		corrupt_here(p);
		/*
		 * The bytes that follow a cut record complete it; they
		 * make it sound if they are the missing ones, by chance (one
		 * byte cut: 1 in 256 handshakes, the keys are new each time),
		 * and its plaintext (of a record cut in its last: some of
		 * it) arrives.
		 */
		if ((c & 7) == S_CUT && first) {
			obuf_add(&p->plain_all, d, n);
			p->plain_opt = n;
		}
		break;
	case S_KEYUPDATE:
		if (!p->tls || p->tls12 || p->shut)
			break;
		FUZZ_CHECK(SSL_key_update(p->ssl, SSL_KEY_UPDATE_REQUESTED) ==
			   1);
		FUZZ_CHECK(SSL_do_handshake(p->ssl) == 1);
		bio_take(p->w, &p->wire);
		p->keyupdate = true;
		break;
	case S_CLOSE:
		if (!p->tls || p->shut)
			break;
		(void)SSL_shutdown(p->ssl);
		p->shut = true;
		bio_take(p->w, &p->wire);
		if (!p->corrupt)
			p->closed = true;
		break;
	case S_EMPTY:
		break;
	}
	free(rec.p);
	if (c & 8)
		cut(p);
}

/*
 * Send p[0..n) as messages of at most MSG_MAX bytes. A stream socket
 * whose buffer is full takes part of one: the rest follows.
 */
static int send_msgs(int fd, const uint8_t *d, size_t n)
{
	while (n > 0) {
		size_t k = n < MSG_MAX ? n : MSG_MAX;
		ssize_t r = ur_send(fd, d, k, MSG_NOSIGNAL);

		/* Fails once our side is gone (it ended on an error). */
		if (r <= 0)
			return -1;
		HINT((size_t)r < k);
		d += r;
		n -= (size_t)r;
	}
	return 0;
}

/*
 * The peer fiber: the client handshake, then the script's messages and
 * the end of the connection. The client's last flight is held back
 * until the script is made, so that the first message can ride with it.
 */
static int peer_main(void *arg)
{
	struct peer *p = arg;
	struct obuf fin = {0};
	static uint8_t buf[17408];
	size_t start = 0;
	int ret = 0;

	while (p->tls) {
		int r = SSL_do_handshake(p->ssl);
		ssize_t n;

		if (r == 1) {
			bio_take(p->w, &fin); /* TLS 1.3: the Finished */
			break;
		}
		bio_take(p->w, &fin);
		ret = send_msgs(p->fd, fin.p, fin.len);
		fin.len = 0;
		if (ret < 0 ||
		    SSL_get_error(p->ssl, r) != SSL_ERROR_WANT_READ) {
			p->hs_ret = -1;
			goto out;
		}
		n = ur_recv(p->fd, buf, sizeof(buf), 0);
		if (n <= 0) {
			p->hs_ret = -2;
			goto out;
		}
		FUZZ_CHECK(BIO_write(p->r, buf, (int)n) == (int)n);
	}
	while (p->script.n > 0 && p->wire.len < WIRE_MAX)
		script_step(p);
	cut(p);
	if (fin.len > 0) {
		size_t first = p->glue && p->ncuts > 0 ? p->cuts[0] : 0;

		if (fin.len + first > MSG_MAX)
			first = 0;
		HINT(first > 0);
		obuf_add(&fin, p->wire.p, first);
		if (send_msgs(p->fd, fin.p, fin.len) < 0)
			goto out;
		start = first;
	}
	for (unsigned i = 0; i < p->ncuts; i++) {
		if (p->cuts[i] <= start)
			continue;
		if (send_msgs(p->fd, p->wire.p + start, p->cuts[i] - start) < 0)
			goto out;
		start = p->cuts[i];
	}
out:
	(void)shutdown(p->fd, SHUT_WR);
	free(fin.p);
	return 0;
}

struct acc {
	struct protstream *in, *out;
	SSL_CTX *ctx;
	int ret;
	const char *errstr;
};

static int accept_main(void *arg)
{
	struct acc *a = arg;

	a->ret = pl_tls_accept(a->in, a->out, a->ctx, 5000, &a->errstr);
	return 0;
}

static unsigned xorshift(unsigned *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

/*
 * Read s to its end with a mix of calls; every byte must be the next of
 * want. Returns the bytes read.
 */
static size_t read_all(struct protstream *s, const struct obuf *want,
		       unsigned seed)
{
	static char buf[READ_MAX + 16];
	unsigned x = seed * 2654435761u | 1;
	size_t got = 0;

	for (;;) {
		unsigned r = xorshift(&x);
		uint64_t in0 = s->bytes_in;
		size_t k;
		int c;

		switch (r % 8) {
		case 0:
		case 1:
			c = prot_getc(s);
			if (c == EOF)
				goto end;
			FUZZ_CHECK(got < want->len && c == want->p[got]);
			got++;
			break;
		case 2:
			/* Push back the last byte read, and read it again. */
			if (s->can_unget <= 0 || got == 0)
				break;
			c = want->p[got - 1];
			FUZZ_CHECK(prot_ungetc(c, s) == c);
			FUZZ_CHECK(prot_getc(s) == c);
			break;
		case 3:
		case 4: {
			unsigned size = (r >> 8) % (FGETS_MAX + 1);
			char *l = prot_fgets(buf, size, s);

			k = (size_t)(s->bytes_in - in0);
			if (l == NULL) {
				FUZZ_CHECK(k == 0);
				if (size >= 2)
					goto end;
				break;
			}
			FUZZ_CHECK(k > 0 && k < size && buf[k] == '\0');
			FUZZ_CHECK(got + k <= want->len &&
				   memcmp(buf, want->p + got, k) == 0);
			/* A line ends at its newline, or where size or
			 * the end cut it. */
			FUZZ_CHECK(memchr(buf, '\n', k - 1) == NULL);
			got += k;
			break;
		}
		default: {
			unsigned size = (r >> 8) % (READ_MAX + 1);
			int n = prot_read(s, buf, size);

			if (n == 0 && size > 0)
				goto end;
			FUZZ_CHECK(n >= 0 && (unsigned)n <= size);
			FUZZ_CHECK(got + (size_t)n <= want->len &&
				   memcmp(buf, want->p + got, (size_t)n) == 0);
			got += (size_t)n;
			break;
		}
		}
	}
end:
	/* The end is sticky. */
	FUZZ_CHECK(prot_getc(s) == EOF);
	FUZZ_CHECK(prot_read(s, buf, 10) == 0);
	FUZZ_CHECK(prot_fgets(buf, 10, s) == NULL);
	FUZZ_CHECK(prot_error(s) != NULL);
	return got;
}

/*
 * Nothing of the input lives on in the loop: what cancels left in flight
 * drains within a few turns, and no fiber or timer stays.
 */
static void check_quiet(struct ur_loop *loop, const struct ur_loop_stats *st0)
{
	struct ur_loop_stats st;

	for (int i = 0; i < 100; i++) {
		ur_loop_stats(loop, &st);
		if (st.ops_inflight <= st0->ops_inflight)
			break;
		FUZZ_CHECK(ur_loop_run_once(loop, 10 * 1000 * 1000) >= 0);
	}
	ur_loop_stats(loop, &st);
	FUZZ_CHECK(st.ops_inflight == st0->ops_inflight);
	FUZZ_CHECK(st.fibers_live == st0->fibers_live);
	FUZZ_CHECK(st.timers_armed == st0->timers_armed);
}

static void run(const uint8_t *data, size_t size, struct ur_loop *loop)
{
	unsigned flags = data[0], seed = data[1];
	struct peer p = {0};
	struct acc a = {0};
	struct obuf want = {0};
	struct ur_fiber *pf = NULL, *af = NULL;
	struct ur_loop_stats st0;
	bool zlib = false, exact;
	const char *err;
	size_t got;
	int sv[2];

#ifdef RINGPROT_HAVE_ZLIB
	zlib = flags & F_ZLIB;
#endif
	p.tls = !(zlib && (flags & F_BARE));
	p.tls12 = flags & F_TLS12;
	p.seq = flags & F_SEQ;
	p.glue = (flags & F_GLUE) && !p.tls12;
	p.script.p = data + 2;
	p.script.n = size - 2;
	ur_loop_stats(loop, &st0);

	FUZZ_CHECK(socketpair(AF_UNIX,
			      (p.seq ? SOCK_SEQPACKET : SOCK_STREAM) |
				      SOCK_CLOEXEC,
			      0, sv) == 0);
	p.fd = sv[1];
	a.in = prot_new(sv[0], 0);
	a.out = prot_new(sv[0], 1);
	FUZZ_CHECK(a.in != NULL && a.out != NULL);
	if (!(flags & F_NOTIMEO))
		FUZZ_CHECK(prot_settimeout(a.in, 30) == 0);
	a.ret = 0;
	if (p.tls) {
		p.ssl = SSL_new(cctx[p.tls12]);
		p.r = BIO_new(BIO_s_mem());
		p.w = BIO_new(BIO_s_mem());
		FUZZ_CHECK(p.ssl != NULL && p.r != NULL && p.w != NULL);
		SSL_set_bio(p.ssl, p.r, p.w);
		SSL_set_connect_state(p.ssl);
		a.ctx = sctx[p.tls12];
		a.ret = -9;
		FUZZ_CHECK(ur_fiber_spawn(loop, accept_main, &a, NULL, &af) ==
			   0);
	}
	FUZZ_CHECK(ur_fiber_spawn(loop, peer_main, &p, NULL, &pf) == 0);
	if (af != NULL)
		FUZZ_CHECK(ur_fiber_join(af, NULL) == 0);
	/*
	 * The handshake itself is never what the input breaks: records that
	 * ride with the Finished, sound or not, are the read stream's.
	 */
	FUZZ_CHECK(p.hs_ret == 0);
	FUZZ_CHECK(a.ret == 0);
	if (zlib) {
#ifdef RINGPROT_HAVE_ZLIB
		bool set_ok = prot_setcompress(a.in) == 0;

		FUZZ_CHECK(set_ok);
#endif
	}
	/*
	 * The script is complete once the peer has sent its first message
	 * (it is made before anything after the handshake is sent); a read
	 * waits for it anyway.
	 */
	(void)prot_peek(a.in);
	if (zlib) {
#ifdef RINGPROT_HAVE_ZLIB
		const struct obuf *src = &p.plain_all;
		size_t n = p.corrupt ? p.plain_clean + p.plain_opt : src->len;
		enum zend st = ref_inflate(src->p, n, &want);

		/* Sound so far (an open stream is sound too). */
		exact = (st == ZEND_OPEN || st == ZEND_FINAL) && !p.corrupt;
#endif
	} else {
		obuf_add(&want, p.plain_all.p,
			 p.corrupt ? p.plain_clean + p.plain_opt
				   : p.plain_all.len);
		exact = true;
	}
	got = read_all(a.in, &want, seed);
	err = prot_error(a.in);
	if (getenv("FUZZ_VERBOSE") != NULL)
		(void)fprintf(stderr, "tls%s %s: got %zu of %zu, %s\n",
			      p.tls12 ? "1.2" : "1.3",
			      p.corrupt ? "corrupt" : "sound", got, want.len,
			      err);
	HINT(p.corrupt && got > 0);
	HINT(p.keyupdate && got > 0);
	HINT(p.closed && p.corrupt);
	if (!zlib) {
		if (p.corrupt) {
			FUZZ_CHECK(strncmp(err, "TLS error: ", 11) == 0);
			FUZZ_CHECK(!prot_IS_EOF(a.in));
		} else {
			FUZZ_CHECK(strcmp(err, PROT_EOF_STRING) == 0);
			FUZZ_CHECK(prot_IS_EOF(a.in));
		}
	}
	HINT(p.plain_opt > 0 && got == want.len);
	if (exact)
		FUZZ_CHECK(got == want.len ||
			   (p.plain_opt > 0 && got >= p.plain_clean));
	else
		FUZZ_CHECK(strcmp(err, PROT_EOF_STRING) != 0 || zlib);
	if (exact && zlib)
		FUZZ_CHECK(strcmp(err, PROT_EOF_STRING) == 0);

	FUZZ_CHECK(prot_free(a.in) == 0);
	(void)prot_free(a.out);
	/* Closing our end stops a peer still sending. */
	FUZZ_CHECK(close(sv[0]) == 0);
	FUZZ_CHECK(ur_fiber_join(pf, NULL) == 0);
	FUZZ_CHECK(close(sv[1]) == 0);
	SSL_free(p.ssl);
	check_quiet(loop, &st0);
	free(p.wire.p);
	free(p.plain_all.p);
	free(want.p);
	ERR_clear_error();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ring = 0; /* 1: usable, -1: refused */
	static struct ur_loop *loop;

	if (size < 2)
		return 0;
	if (ring == 0)
		ring = ur_loop_get(&loop) == 0 ? 1 : -1;
	if (ring < 0)
		return 0;
	ring_keeper();
	tls_setup();
	run(data, size, loop);
	return 0;
}
#else
/* Without OpenSSL in the build there is no TLS layer to fuzz. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	(void)data;
	(void)size;
	return 0;
}
#endif
