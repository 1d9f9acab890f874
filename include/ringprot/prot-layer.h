/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/: ring-native TLS, SASL and DEFLATE layers for protstreams. */
#ifndef RINGPROT_PROT_LAYER_H
#define RINGPROT_PROT_LAYER_H

/*
 * The pl_* face of the protstream layers. The Cyrus setters in prot.h
 * (prot_settls, prot_setsasl, prot_setcompress...) are thin wrappers over
 * the same code; this header adds what Cyrus did outside prot: the TLS
 * handshakes, run on the ring inside the calling fiber, and helpers that
 * make "send the reply, then switch" the only order.
 *
 * Conventions: every int function returns 0 (or a count) or -errno, never
 * EOF. A call that fails because the stream already has an error returns
 * -EIO. -ENOTSUP means the library behind the layer (OpenSSL, libsasl2,
 * zlib) was not in the build. Streams belong to the thread that uses
 * them; calls marked UR_MAY_YIELD park the calling fiber (outside any
 * fiber they drive the thread's loop).
 *
 * Layers stack in the Cyrus order whatever the order of the calls:
 * write = DEFLATE -> SASL encode -> TLS, read = TLS -> SASL -> INFLATE.
 * They must be pushed in protocol order (TLS, then SASL, then DEFLATE):
 * a layer pushed under one that is already on gets -EINVAL.
 *
 * Switching rules, for both the pl_* and the prot_* face:
 *  - Write stream: output already written is flushed in the old mode
 *    before the layer starts (the STARTTLS/AUTHENTICATE/COMPRESS reply).
 *  - Read stream, SASL and DEFLATE: input already buffered past the read
 *    position is fed into the new layer, never served as plaintext.
 *  - Read stream, TLS: buffered plaintext is discarded: whatever a client
 *    sent after STARTTLS and before the handshake was not protected and
 *    is never processed (RFC 3207 §4.2, RFC 2595 §3.1; CVE-2011-0411).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ringprot/common.h>
#include <ringprot/prot.h>

/* OpenSSL objects by struct tag (ssl.h is not needed to include this). */
struct ssl_ctx_st;     /* SSL_CTX */
struct ssl_session_st; /* SSL_SESSION */

/* Which layers this build has (PL_HAVE_* bits). */
#define PL_HAVE_TLS  0x1u
#define PL_HAVE_SASL 0x2u
#define PL_HAVE_ZLIB 0x4u
RINGPROT_API unsigned pl_features(void);

/*
 * ---------------------------------------------------------------------
 * DEFLATE (RFC 4978 COMPRESS=DEFLATE): raw deflate, window bits -15,
 * memory level 9. Every flush of the write stream ends in a sync flush
 * (the chunk ends 00 00 FF FF), so the peer can decode all that was
 * flushed. A chunk that does not shrink switches the stream to stored
 * blocks (level 0) for a while, then the level is tried again: data
 * that does not compress costs a copy, not a compressor.
 * ---------------------------------------------------------------------
 */

/* Default level (Cyrus: Z_DEFAULT_COMPRESSION, which is 6). */
#define PL_ZLIB_LEVEL_DEFAULT 6

/*
 * Start DEFLATE on s: a write stream compresses at level (0..9, or -1 for
 * the default), a read stream inflates (level ignored). Returns 0,
 * -EALREADY if s already compresses, -EINVAL for a bad level, a memory
 * stream or a stream with an error, -ENOMEM, -ENOTSUP, or the flush
 * error of a write stream. Sets s->zstrm to a non-NULL value (Cyrus code
 * tests it). May yield (the pre-flush).
 */
RINGPROT_API int pl_zlib_start(struct protstream *s,
			       int level) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * The COMPRESS switch: write the tagged OK to out first, then call this.
 * out is flushed (forced: the OK reaches the wire uncompressed), then
 * both streams compress; input already buffered on in is inflated.
 * Returns 0 or -errno as pl_zlib_start; on failure neither stream
 * compresses.
 */
RINGPROT_API int pl_zlib_activate(struct protstream *in, struct protstream *out,
				  int level) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * Change the level of a compressing write stream from its next flush on.
 * Returns 0, -EINVAL (bad level, not compressing, read stream).
 */
RINGPROT_API int pl_zlib_set_level(struct protstream *out,
				   int level) RINGPROT_MUST_CHECK;

/* Counters of a compressing stream. */
struct pl_zlib_stats {
	uint64_t plain;	 /* bytes before deflate / after inflate */
	uint64_t wire;	 /* bytes after deflate / before inflate */
	uint64_t chunks; /* flushed chunks (write) */
	uint64_t stored; /* chunks sent as stored blocks (write) */
};

/* Fill *st. Returns 0, or -EINVAL if s does not (de)compress. */
RINGPROT_API int pl_zlib_stats(const struct protstream *s,
			       struct pl_zlib_stats *st) RINGPROT_MUST_CHECK;

/*
 * ---------------------------------------------------------------------
 * TLS: OpenSSL over BIOs of the stream's own (prot/layer-tls.c): the
 * ring moves the ciphertext like any other bytes, SSL_read decodes
 * straight from the bytes a read brought and SSL_write's records go
 * straight into the send buffer; OpenSSL never touches the fd. One SSL
 * serves both streams of a connection.
 *
 * prot_settls (the Cyrus face) borrows an SSL whose handshake the caller
 * ran on the fd: the streams move it to their own BIOs and never send
 * close_notify for it. When the last of them lets go (prot_free,
 * prot_settls NULL), an SSL that came with socket BIOs gets socket BIOs
 * on the same fds back (BIO_NOCLOSE), so that the caller's own ending,
 * Cyrus's tls_reset_servertls (SSL_shutdown on the fd, or the fast
 * shutdown that only marks the session), works as in Cyrus. Records
 * still unsent then are sent first (one non-blocking send); if the
 * socket does not take them all, the SSL is set to quiet shutdown (a
 * close_notify after a lost record would not decrypt). An SSL that came
 * with other BIOs keeps the stream's BIOs.
 * ---------------------------------------------------------------------
 */

/*
 * Server handshake on the connection of in (read) and out (write),
 * implicit TLS or STARTTLS: write the STARTTLS reply to out first.
 * out is flushed (forced), plaintext buffered on in is discarded (see
 * pl_tls_info.discarded), then a new SSL from ctx runs SSL_accept over
 * the ring, within timeout_ms (<= 0: no limit) for the whole handshake.
 * SNI, ALPN, client certificates and session resumption are whatever
 * ctx is set up for (pl_tls_ctx_set_alpn helps with ALPN).
 *
 * On success both streams speak TLS, in->tls_conn and out->tls_conn
 * point at the SSL, which the streams own: it is freed with the last of
 * the two (prot_free). Use it for SSL_get0_alpn_selected, peer
 * certificates and the like while the streams live.
 * Refused before anything is sent or read, streams untouched: -EINVAL
 * (in is not a read stream, out not a write stream, a memory stream, or
 * SASL/DEFLATE already on), -EALREADY (TLS already on), -EIO (a stream
 * already has an error).
 * A handshake that fails returns -ETIMEDOUT (deadline), -ECONNRESET (peer
 * closed or reset), -EPROTO (handshake failure, version or cipher
 * mismatch, bad or missing certificate, ...), -ENOMEM, -ECANCELED (fiber
 * cancelled), or the ring's -errno; both streams then carry the error
 * (prot_error) and refuse further I/O: the connection must be closed.
 * *errstr_out (may be NULL) is set to a text for the log, e.g. "TLS
 * handshake failed: certificate verify failed", owned by in (valid until
 * prot_free(in)), or NULL on success.
 *
 * Records OpenSSL writes while reading (the answer to a TLS 1.3
 * KeyUpdate the peer requested, an alert) leave at once, with one
 * non-blocking send, when out is idle (nothing buffered or queued, no
 * flush under way, a socket); otherwise, and for what the socket does
 * not take, they lead the next flush of out. Reading never waits for
 * the peer to take them.
 *
 * Ending: prot_free(out) (or prot_settls(out, NULL)) sends close_notify,
 * best effort, with one non-blocking send, never waiting for the peer,
 * and only if the session is sound: not after pl_tls_shutdown (or
 * another close_notify), a TLS error, a write error, the peer's end of
 * file without close_notify (pl_tls_info.peer_end), output the
 * application left unflushed or, on a non-blocking stream, queued and
 * unsent (a close_notify would make that loss look like a clean end), or
 * on a pipe. The fd must still be open (Cyrus order: prot_free, then
 * close). To wait for the peer's close_notify as well, use
 * pl_tls_shutdown first.
 */
RINGPROT_API int
pl_tls_accept(struct protstream *in, struct protstream *out,
	      struct ssl_ctx_st *ctx, int timeout_ms,
	      const char **errstr_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/* Client side options; NULL or zeroed: none of them. */
struct pl_tls_client_opts {
	const char *server_name;   /* SNI; with verify_name also checked */
	bool verify_name;	   /* the certificate must match server_name
				    * (needs SSL_VERIFY_PEER on ctx) */
	const unsigned char *alpn; /* offer, wire format ("\x04imap") */
	unsigned alpn_len;
	struct ssl_session_st *session; /* resume it (borrowed) */
};

/*
 * Client handshake (SSL_connect) on in/out with a new SSL from ctx,
 * otherwise as pl_tls_accept. After it, SSL_session_reused(in->tls_conn)
 * says whether opts->session was resumed, and SSL_get1_session() gives
 * the session to keep for the next connection (with TLS 1.3 the ticket
 * arrives after the handshake: read some data first).
 */
RINGPROT_API int
pl_tls_connect(struct protstream *in, struct protstream *out,
	       struct ssl_ctx_st *ctx, const struct pl_tls_client_opts *opts,
	       int timeout_ms,
	       const char **errstr_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * Close the TLS session of out: flush out, send close_notify; out refuses
 * output afterwards. With in non-NULL, also wait up to timeout_ms (<= 0:
 * no limit) for the peer's close_notify, discarding the application data
 * that comes before it. Returns 0, -ETIMEDOUT, -ECONNRESET (the peer
 * closed without close_notify), -ENOTCONN (no TLS on out), or -errno.
 */
RINGPROT_API int
pl_tls_shutdown(struct protstream *in, struct protstream *out,
		int timeout_ms) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/* How the peer's side of the session has ended, as seen by reading. */
enum pl_tls_peer_end {
	PL_TLS_PEER_OPEN,	  /* no end seen yet */
	PL_TLS_PEER_CLOSE_NOTIFY, /* close_notify: a clean end */
	PL_TLS_PEER_EOF,	  /* the connection ended without close_notify
				   * (truncation; most IMAP clients do it, so
				   * between records it still reads as EOF) */
};

/* What a TLS stream knows about its session. */
struct pl_tls_info {
	const char *version;   /* "TLSv1.3"... static */
	const char *cipher;    /* OpenSSL cipher name, static */
	bool resumed;	       /* session resumption happened */
	bool ktls_tx, ktls_rx; /* the kernel carries the records (kTLS) */
	bool close_sent;       /* our close_notify has been sent */
	int ktls_error;	       /* -errno of the last kTLS setup that failed
				* (-ENOENT: no tls module), 0 */
	enum pl_tls_peer_end peer_end;
	uint64_t discarded; /* plaintext bytes dropped at the switch */
	size_t held;	    /* bytes of memory the layer holds for I/O
			     * (BIO buffers, records waiting to be sent,
			     * decoded plaintext); 0 on an idle stream.
			     * OpenSSL's own record buffers are released
			     * when empty (SSL_MODE_RELEASE_BUFFERS). */
};

/* Fill *info. Returns 0, or -ENOTCONN if s has no TLS layer. */
RINGPROT_API int pl_tls_info(const struct protstream *s,
			     struct pl_tls_info *info) RINGPROT_MUST_CHECK;

/*
 * Server ALPN: choose the first protocol of protos (wire format, in the
 * server's order of preference) that the client offers; a client that
 * offers ALPN but none of these gets a no_application_protocol alert.
 * protos is copied (kept with ctx). Returns 0, -EINVAL (malformed list)
 * or -ENOMEM.
 */
RINGPROT_API int pl_tls_ctx_set_alpn(struct ssl_ctx_st *ctx,
				     const unsigned char *protos,
				     unsigned len) RINGPROT_MUST_CHECK;

/*
 * Run-time kTLS probe: can this kernel take TLS records (setsockopt
 * TCP_ULP "tls" on a connected loopback TCP socket)? Cached after the
 * first call.
 *
 * kTLS is opt-in and transmit-only: with SSL_OP_ENABLE_KTLS on the ctx,
 * pl_tls_accept/pl_tls_connect on a socket with a real fd (not a direct
 * descriptor) hand the sending direction to the kernel when OpenSSL
 * offers its keys and the kernel takes them (TLS_TX): flushes then send
 * plaintext and the kernel makes the records. Receiving stays in
 * userspace. Anything that fails leaves the session in userspace, where
 * it always works; pl_tls_info says which (ktls_tx, ktls_error).
 * Untested where no tls module exists (the engaged path).
 */
RINGPROT_API bool pl_ktls_available(void);

/*
 * ---------------------------------------------------------------------
 * SASL security layers (Cyrus SASL). The layer is on when the negotiated
 * SSF is above 0; each flushed chunk becomes sasl_encode() packets of at
 * most the peer's maximum (SASL_MAXOUTBUF); input is decoded across
 * partial reads.
 * ---------------------------------------------------------------------
 */

/*
 * Put conn's security layer on s: sets s->conn, s->saslssf and, with an
 * SSF above 0, s->maxplain (min(SASL_MAXOUTBUF, PROT_BUFSIZE)) and the
 * layer. conn is borrowed: it must outlive the layer (pl_sasl_stop or
 * prot_free). Returns 0, -EALREADY (s already has a SASL layer), -EINVAL
 * (bad SASL state, out of order), -ENOMEM, -ENOTSUP, or a pre-flush
 * error.
 */
RINGPROT_API int pl_sasl_start(struct protstream *s, struct sasl_conn *conn)
	RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * The AUTHENTICATE switch: write the success reply to out first (RFC
 * 9051 §6.2.2, RFC 4954 §4), then call this: out is flushed in plaintext
 * (forced), then both streams get the layer; input already buffered on in
 * is decoded. Returns as pl_sasl_start; on failure neither stream has it.
 */
RINGPROT_API int
pl_sasl_activate(struct protstream *in, struct protstream *out,
		 struct sasl_conn *conn) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/* Remove the SASL layer of s (if any); as prot_unsetsasl. */
RINGPROT_API void pl_sasl_stop(struct protstream *s);

#endif /* RINGPROT_PROT_LAYER_H */
