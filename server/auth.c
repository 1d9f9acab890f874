/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * server/auth: SASL on a connection (built with libsasl2).
 *
 * A connection's sasl_conn_t is made at its first use, with the
 * Cyrus-style "ip;port" strings of the (real, after PROXY) client and
 * local address, and disposed of when the connection closes (after its
 * streams, which may hold a SASL security layer borrowing it). Before
 * each use it is told what the connection is now: after STARTTLS the
 * TLS SSF becomes SASL's external SSF, and plaintext mechanisms are
 * offered only on a secure connection (TLS, loopback, Unix socket) or
 * where the server allows plaintext.
 *
 * Every authentication ends in one log line of the fixed fail2ban shape
 * and a counter; a failure is answered only after the delay the
 * server's table gives the client's address, so guessing from one
 * address slows down without holding a thread.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include <openssl/ssl.h>
#include <sasl/sasl.h>

#include "internal.h"
#include "sasl.h"

struct auth_state {
	sasl_conn_t *conn;
	bool external; /* the TLS SSF has been given */
	char user[256];
};

int srv_set_sasl(struct srv *s, const struct srv_sasl_opts *o,
		 const char **errstr_out)
{
	struct srv__sasl_opts so = {
		.appname = o->appname,
		.pwcheck_method = o->pwcheck_method,
		.sasldb_path = o->sasldb_path,
		.saslauthd_path = o->saslauthd_path,
		.mech_list = o->mech_list,
		.user_realm = o->realm,
	};
	int ret;

	if (s->started || s->sasl_ready)
		return -EALREADY;
	ret = srv__sasl_init(&so, errstr_out);
	if (ret < 0 && ret != -EALREADY)
		return ret;
	ret = srv__authfail_new(0, 0, &s->authfail);
	if (ret < 0)
		return ret;
	(void)snprintf(s->fqdn, sizeof(s->fqdn), "%s",
		       o->fqdn != NULL ? o->fqdn : "localhost");
	s->allowplaintext = o->allowplaintext;
	s->sasl_ready = true;
	return 0;
}

void srv__sasl_fini(struct srv *s)
{
	srv__authfail_free(&s->authfail);
}

static void auth_dispose(void *arg)
{
	struct auth_state *a = arg;

	sasl_dispose(&a->conn);
}

/* The connection's SASL state, made on first use and kept current. */
static int auth_get(struct srv__conn *c, struct auth_state **out)
{
	struct srv_conn *pub = &c->pub;
	struct srv *s = c->w->srv;
	struct auth_state *a = c->auth;
	int ret;

	if (!s->sasl_ready)
		return -ENOTSUP;
	if (a == NULL) {
		a = srv_conn_alloc(pub, sizeof(*a));
		if (a == NULL)
			return -ENOMEM;
		ret = srv_conn_on_close(pub, auth_dispose, a);
		if (ret < 0)
			return ret;
		c->auth = a;
	}
	if (a->conn == NULL) {
		a->external = false;
		ret = srv__sasl_conn_new(pub->service->sasl_service != NULL ?
						 pub->service->sasl_service :
						 pub->service->name,
					 s->fqdn,
					 (const struct sockaddr *)&pub->local,
					 (const struct sockaddr *)&pub->peer,
					 &a->conn);
		if (ret < 0)
			return ret;
	}
	if (pub->tls && !a->external && pub->in->tls_conn != NULL) {
		int bits = SSL_get_cipher_bits(pub->in->tls_conn, NULL);

		ret = srv__sasl_set_external(a->conn,
					     bits > 0 ? (unsigned)bits : 0,
					     NULL);
		if (ret < 0)
			return ret;
		a->external = true;
	}
	ret = srv__sasl_set_plaintext_ok(a->conn,
					 pub->secure || s->allowplaintext);
	if (ret < 0)
		return ret;
	*out = a;
	return 0;
}

int srv_conn_sasl_mechs(struct srv_conn *pub, const char **list_out)
{
	struct auth_state *a;
	int ret = auth_get(srv__conn_of(pub), &a);

	if (ret < 0)
		return ret;
	return srv__sasl_mechs(a->conn, list_out);
}

bool srv_conn_plaintext_ok(const struct srv_conn *pub)
{
	const struct srv__conn *c = (const struct srv__conn *)pub;

	return pub->secure || c->w->srv->allowplaintext;
}

struct io_rock {
	struct srv_conn *c;
	const struct srv_sasl_io *io;
};

static int send_cb(void *rock, const char *b64)
{
	struct io_rock *r = rock;

	return r->io->send_challenge(r->c, b64);
}

static ssize_t read_cb(void *rock, char *buf, size_t size)
{
	struct io_rock *r = rock;

	return r->io->read_response(r->c, buf, size);
}

/*
 * After a success: a SASL connection that set up no security layer
 * (SSF 0: the runtime installs none) is of no further use, and libsasl2
 * keeps kilobytes in it (mechanism state, properties). Free it now, not
 * at the close: an IMAP session idles for hours after its login.
 */
static void auth_done(struct auth_state *a)
{
	const void *ssf = NULL;

	if (sasl_getprop(a->conn, SASL_SSF, &ssf) == SASL_OK && ssf != NULL &&
	    *(const sasl_ssf_t *)ssf == 0)
		sasl_dispose(&a->conn);
}

/* Log, count and, for a failure, delay the answer. */
static void auth_outcome(struct srv__conn *c, bool ok, const char *user,
			 const char *mech, const char *why)
{
	struct srv_conn *pub = &c->pub;
	struct srv *s = c->w->srv;
	uint64_t delay_ms;

	srv_log_auth(pub->id, ok, pub->service->name,
		     (const struct sockaddr *)&pub->peer,
		     srv__salen(&pub->peer), user, mech, why);
	srv__count(c->w, pub->service,
		   ok ? SRV__M_AUTH_SUCCESS : SRV__M_AUTH_FAILURE, 1);
	delay_ms = ok ? 0 : srv__authfail_delay_ms(s->authfail, pub->peer_ip);
	srv__authfail_record(s->authfail, pub->peer_ip, ok);
	if (delay_ms != 0 &&
	    ur_sleep_until(CLOCK_MONOTONIC, ur_now_ns(CLOCK_MONOTONIC) +
						    delay_ms * 1000000ull) < 0) {
		/* cancelled: the answer goes out (or not) at once */
	}
}

int srv_conn_authenticate(struct srv_conn *pub, const char *mech,
			  const char *initial, const struct srv_sasl_io *io,
			  const char **user_out)
{
	struct srv__conn *c = srv__conn_of(pub);
	struct io_rock rock = {.c = pub, .io = io};
	struct srv__sasl_io sio = {.send_challenge = send_cb,
				   .read_response = read_cb,
				   .rock = &rock};
	struct auth_state *a;
	const char *user = NULL, *why = NULL;
	int ret = auth_get(c, &a);

	if (ret < 0)
		return ret;
	ret = srv__sasl_auth(a->conn, mech, initial, &sio, &user, &why);
	if (ret == 0) {
		(void)snprintf(a->user, sizeof(a->user), "%s", user);
		auth_done(a);
		auth_outcome(c, true, a->user, mech, NULL);
		*user_out = a->user;
		return 0;
	}
	if (ret == -EACCES || ret == -EPROTO || ret == -ECANCELED)
		auth_outcome(c, false, NULL, mech,
			     ret == -ECANCELED ? "cancelled" : why);
	return ret;
}

int srv_conn_login(struct srv_conn *pub, const char *user, const char *pass,
		   const char **user_out)
{
	struct srv__conn *c = srv__conn_of(pub);
	struct auth_state *a;
	int ret = auth_get(c, &a);

	if (ret < 0)
		return ret;
	if (!srv_conn_plaintext_ok(pub))
		return -EPERM;
	ret = sasl_checkpass(a->conn, user, (unsigned)strlen(user), pass,
			     (unsigned)strlen(pass));
	if (ret != SASL_OK) {
		auth_outcome(c, false, user, "LOGIN",
			     sasl_errstring(ret, NULL, NULL));
		return ret == SASL_NOMEM ? -ENOMEM : -EACCES;
	}
	(void)snprintf(a->user, sizeof(a->user), "%s", user);
	auth_done(a);
	auth_outcome(c, true, a->user, "LOGIN", NULL);
	*user_out = a->user;
	return 0;
}
