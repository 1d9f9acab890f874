/* SPDX-License-Identifier: BSD-3-Clause */
/* test/t-sasl: a libsasl2 fixture (sasldb, conns, AUTHENTICATE) for tests. */
#ifndef RINGPROT_T_SASL_H
#define RINGPROT_T_SASL_H

#include <stdbool.h>
#include <stddef.h>

#include <sasl/sasl.h>

#include <ringprot/common.h>
#include <ringprot/prot.h>

/*
 * Built only with the SASL layer (test/meson.build). One user, T_SASL_USER
 * in T_SASL_REALM, sits in a sasldb made by saslpasswd2 (sasl2-bin) in a
 * temporary directory; the server reads it through the sasldb auxprop
 * plugin, the same path a Cyrus daemon takes. The server offers
 * DIGEST-MD5, PLAIN and SCRAM-SHA-1. Everything here runs on one thread.
 */
#define T_SASL_REALM "ringprot.test"
#define T_SASL_USER  "alice"

/*
 * Make the temporary directory (/tmp/ringprot-<name>-XXXXXX) and its
 * sasldb, then sasl_server_init() and sasl_client_init(). Returns 0, or
 * -1 with the reason on stderr and nothing left behind. Call once, from
 * main(), before the tests run.
 */
int t_sasl_init(const char *name);

/* sasl_done(), then remove the sasldb, its lock file and the directory. */
void t_sasl_fini(void);

/*
 * A new host name for the next connection pair: DIGEST-MD5 clients cache
 * the last nonce per host and would try a fast reauthentication otherwise.
 * Returns a static buffer, valid until the next call.
 */
const char *t_sasl_next_host(void);

/*
 * A server (SASL_SUCCESS_DATA) or client conn for service "imap" on host;
 * fails the test on error. Free with sasl_dispose().
 */
void t_sasl_server_new(const char *host, sasl_conn_t **conn_out);
void t_sasl_client_new(const char *host, sasl_conn_t **conn_out);

/* SASL_SEC_PROPS; maxbuf 0 means 65536. Fails the test on error. */
void t_sasl_set_props(sasl_conn_t *conn, unsigned min_ssf, unsigned max_ssf,
		      unsigned maxbuf);

/*
 * Read one line and strip its CRLF, for the exchange below and the
 * commands around it. Returns 0, -1 on EOF or error, -2 if the line had
 * no CRLF (too long for size, or cut short). May yield.
 */
int t_sasl_get_line(struct protstream *in, char *line,
		    size_t size) UR_MAY_YIELD;

/*
 * The server end of an IMAP-style "<tag> AUTHENTICATE <mech>" exchange
 * (base64 lines): answers "<tag> OK authenticated" (or "<tag> NO ..."),
 * then pl_sasl_activate() on in and out: reply first, then the layer
 * (RFC 9051 6.2.2). Returns pl_sasl_activate()'s result, or a negative
 * step number if the exchange failed. Call from a fiber; it yields.
 */
int t_sasl_server_auth(struct protstream *in, struct protstream *out,
		       sasl_conn_t *conn, const char *tag) UR_MAY_YIELD;

/*
 * The client end: sends "<tag> AUTHENTICATE <mech>", answers the
 * challenges (client-first mechanisms answer the empty one), waits for
 * "<tag> OK authenticated", then pl_sasl_activate(). With pipeline not
 * NULL, the client sends that command encoded by the new layer in the
 * same packet as its last response. Returns as t_sasl_server_auth().
 * Call from a fiber; it yields.
 */
int t_sasl_client_auth(struct protstream *in, struct protstream *out,
		       sasl_conn_t *conn, const char *tag, const char *mech,
		       const char *pipeline) UR_MAY_YIELD;

#endif /* RINGPROT_T_SASL_H */
