/* SPDX-License-Identifier: BSD-3-Clause */
/* server/sasl: Cyrus SASL server setup, the AUTHENTICATE exchange, and
 * the failed-authentication delay. */
#ifndef RINGPROT_SRV_SASL_H
#define RINGPROT_SRV_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <sasl/sasl.h>

#include <ringprot/common.h>

struct sockaddr;

/*
 * Built only with libsasl2 in the build (server/meson.build). libsasl2
 * is process-global: srv__sasl_init once, early, before worker threads
 * create connections. Afterwards each connection has its own
 * sasl_conn_t (free with sasl_dispose), used by one thread at a time.
 * Nothing here logs; errors come back as -errno plus, where given, a
 * text (errstr_out) whose owner is stated per function.
 */

/* Process-wide settings; strings are copied. */
struct srv__sasl_opts {
	const char *appname;	    /* SASL config name; NULL: "ringprot" */
	const char *pwcheck_method; /* "auxprop" (NULL: the default) or
				     * "saslauthd" */
	const char *sasldb_path;    /* auxprop: the sasldb; required */
	const char *saslauthd_path; /* saslauthd: its mux socket; NULL:
				     * libsasl2's default */
	const char *mech_list;	    /* "PLAIN SCRAM-SHA-256 ..."; NULL: all
				     * the installed plugins */
	const char *user_realm;	    /* realm of unqualified user names
				     * (then user names come back as
				     * "user@realm"); NULL: the server's
				     * FQDN, names stay unqualified */
	unsigned max_ssf;	    /* largest security layer offered;
				     * 0: none (the runtime installs no
				     * SASL layer on the streams, so none
				     * may be negotiated: a client that
				     * chose DIGEST-MD5 auth-conf would
				     * then talk in a layer the server
				     * does not speak) */
};

/*
 * Check the settings (the sasldb is opened read-only now: a missing or
 * unreadable one is an error here, not a failed login later; a
 * saslauthd_path must be a socket) and run sasl_server_init. Returns 0,
 * -EALREADY (already done: nothing changed), -EINVAL (bad setting),
 * open(2)'s -errno for the sasldb, -ENOENT/-ENOTSOCK for saslauthd_path,
 * or -EIO (libsasl2 refused; its reason). *errstr_out (may be NULL) gets
 * one line ("sasldb_path /x: No such file or directory"), static or
 * thread-local: valid until the next srv__sasl_init on the thread; NULL
 * on success. After a failure it may be called again. Call once, from
 * the main thread, after any privilege drop (the check must see what the
 * workers will see), and before any other libsasl2 call in the process
 * (sasl_client_init included): it gives libsasl2 pthread mutexes, which
 * must be in place before a plugin allocates one.
 */
int srv__sasl_init(const struct srv__sasl_opts *o,
		   const char **errstr_out) RINGPROT_MUST_CHECK;

/*
 * sasl_done() if srv__sasl_init succeeded; then init may run again.
 * Every conn must be disposed of first. For tests and clean exits.
 */
void srv__sasl_done(void);

/*
 * A server conn for service ("imap", "lmtp", "smtp"...), as
 * sasl_server_new with Cyrus's "ip;port" strings made from local and
 * remote (IPv4 or IPv6; NULL or AF_UNIX: none) and the security
 * properties of srv__sasl_set_plaintext_ok(conn, false): plaintext
 * mechanisms hidden. Success data goes out as a last challenge (the
 * SMTP way, fine for IMAP too). Returns 0 with *out (sasl_dispose it),
 * -EINVAL (no init, bad arguments or address family), -ENOMEM, -EIO.
 * Any thread.
 */
int srv__sasl_conn_new(const char *service, const char *server_fqdn,
		       const struct sockaddr *local,
		       const struct sockaddr *remote,
		       sasl_conn_t **out) RINGPROT_MUST_CHECK;

/*
 * Cyrus's "ip;port" for sa: "192.0.2.1;143", "2001:db8::1;993" (IPv6
 * without brackets, a v4-mapped address as IPv4). Returns 0, -EAFNOSUPPORT
 * (not AF_INET/AF_INET6), -ENOSPC (size too small; 64 is enough).
 */
int srv__sasl_ipport(const struct sockaddr *sa, char *buf,
		     size_t size) RINGPROT_MUST_CHECK;

/*
 * After a TLS handshake: tell SASL the channel's strength (ssf, e.g.
 * SSL_get_cipher_bits) and the client certificate's identity (authid,
 * or NULL), for EXTERNAL and for min_ssf checks. Returns 0 or -EINVAL.
 */
int srv__sasl_set_external(sasl_conn_t *conn, unsigned ssf,
			   const char *authid) RINGPROT_MUST_CHECK;

/*
 * Offer plaintext mechanisms (PLAIN, LOGIN) or not. The caller passes
 * ok = TLS is on, or the config allows plaintext (Cyrus's
 * allowplaintext). Anonymous logins stay refused. Returns 0 or -EINVAL.
 */
int srv__sasl_set_plaintext_ok(sasl_conn_t *conn, bool ok) RINGPROT_MUST_CHECK;

/*
 * The mechanisms conn offers now, space separated ("SCRAM-SHA-256
 * PLAIN"), for CAPABILITY and EHLO; "" if none. *list_out is owned by
 * conn, valid until the next call or sasl_dispose. Returns the number of
 * mechanisms, or -EINVAL/-ENOMEM.
 */
int srv__sasl_mechs(sasl_conn_t *conn,
		    const char **list_out) RINGPROT_MUST_CHECK;

/*
 * The protocol's side of an exchange. send_challenge writes one
 * challenge, b64 (base64, may be ""), framed as the protocol wants
 * (IMAP "+ b64\r\n", SMTP/LMTP "334 b64\r\n") and flushes; returns 0
 * or -errno. read_response reads one client line into buf without its
 * CRLF, NUL-terminated, and returns its length; -EMSGSIZE if the line
 * does not fit in size - 1 bytes (the rest of it already skipped), or
 * another -errno (connection closed, timeout). Both may yield.
 */
typedef int srv__sasl_send_fn(void *rock, const char *b64);
typedef ssize_t srv__sasl_read_fn(void *rock, char *buf, size_t size);

struct srv__sasl_io {
	srv__sasl_send_fn *send_challenge;
	srv__sasl_read_fn *read_response;
	void *rock;
};

/* Longest client line srv__sasl_auth takes (base64): GSSAPI fits. */
#define SRV_SASL_LINE_MAX 16384

/*
 * Run a whole authentication on conn with mechanism mech (as the client
 * named it). initial: the initial response in base64, "=" for an empty
 * one (RFC 4959), or NULL for none. Returns:
 *   0            authenticated: *user_out is the user name (owned by
 *                conn: valid until the next exchange or sasl_dispose)
 *   -ECANCELED   the client answered "*"
 *   -EPROTO      bad base64 from the client, or a response the
 *                mechanism refuses as malformed
 *   -EMSGSIZE    a response longer than SRV_SASL_LINE_MAX
 *   -ENOPROTOOPT no such mechanism, or not offered now (too weak,
 *                plaintext not allowed)
 *   -EACCES      authentication failed
 *   -ENOMEM, or an io callback's -errno (the connection is gone).
 * *errstr_out (may be NULL) is SASL's reason for -EPROTO, -ENOPROTOOPT
 * and -EACCES (owned by conn, as above), a static text for the others,
 * or NULL on success; it is for the log, not for the client (it can say
 * "user not found"). A fresh exchange may follow any failure. Call from
 * a fiber when the io callbacks yield.
 */
int srv__sasl_auth(sasl_conn_t *conn, const char *mech, const char *initial,
		   const struct srv__sasl_io *io, const char **user_out,
		   const char **errstr_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * ---------------------------------------------------------------------
 * The failed-authentication delay: a bounded, thread-safe table of
 * client addresses (strings, e.g. "192.0.2.1") with their recent
 * failures. The caller records each outcome and, after a failure, sleeps
 * srv__authfail_delay_ms before answering (ur_sleep_until in its fiber),
 * so guessing passwords from one address slows down without tying up a
 * thread.
 *
 * n recent failures give a delay of 0 for n <= 1, then 500 ms doubling
 * per failure (500, 1000, 2000...) up to 15 s. A failure is forgotten
 * every decay_ms after the last one (one per period); a success forgets
 * them all. When the table is full, the address seen least recently in
 * its bucket makes room (at most max_entries live).
 * ---------------------------------------------------------------------
 */
#define SRV_AUTHFAIL_BASE_MS 500u
#define SRV_AUTHFAIL_CAP_MS  15000u

struct srv__authfail;

/*
 * max_entries: 0 means 4096 (rounded up to a multiple of the bucket
 * size, 8); decay_ms: 0 means 60000. Returns 0 or -ENOMEM, -EINVAL.
 */
int srv__authfail_new(unsigned max_entries, uint64_t decay_ms,
		      struct srv__authfail **out) RINGPROT_MUST_CHECK;
void srv__authfail_free(struct srv__authfail **t);

/* The delay for ip's recent failures (see above); 0 if none or NULL. */
uint64_t srv__authfail_delay_ms(struct srv__authfail *t, const char *ip);

/* Record one outcome for ip (NULL: ignored). */
void srv__authfail_record(struct srv__authfail *t, const char *ip, bool ok);

/*
 * Failures recorded since creation, and addresses tracked now (one
 * whose failures have all decayed may count until its bucket is next
 * touched).
 */
uint64_t srv__authfail_total(struct srv__authfail *t);
unsigned srv__authfail_size(struct srv__authfail *t);

/*
 * For tests: read time from now_ms(arg) instead of CLOCK_MONOTONIC.
 * Call before any other use.
 */
void srv__authfail_set_clock(struct srv__authfail *t,
			     uint64_t (*now_ms)(void *arg), void *arg);

#endif /* RINGPROT_SRV_SASL_H */
