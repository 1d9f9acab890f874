/* SPDX-License-Identifier: BSD-3-Clause */
/* server/sasl: Cyrus SASL server setup, the AUTHENTICATE exchange, and
 * the failed-authentication delay. */
#include "sasl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sasl/saslutil.h>

/*
 * Design: libsasl2 keeps process-global state (plugins, the options
 * callback), so init copies the settings into one static config that the
 * SASL_CB_GETOPT callback serves for the life of the process, and gives
 * libsasl2 real pthread mutexes first: its defaults are no-ops, and
 * plugins (DIGEST-MD5's reauth cache) share state between the worker
 * threads' conns.
 *
 * The exchange is protocol-neutral: base64 in both directions, the
 * framing left to the io callbacks. Conns are made without
 * SASL_SUCCESS_DATA, so libsasl2 turns a mechanism's final data (SCRAM's
 * server signature) into one more challenge answered by an empty line,
 * which IMAP and SMTP both allow.
 *
 * The failure table is a set-associative cache: an address hashes (with
 * a per-table random seed, so a client cannot aim at one bucket) to a
 * bucket of 8 entries; a bucket that is full drops its stalest entry.
 * Memory is fixed at creation and every operation is O(1).
 */

/* ---- process-wide setup --------------------------------------------- */

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static bool inited;

static struct {
	char *appname, *pwcheck, *sasldb, *saslauthd, *mechs, *realm;
	unsigned max_ssf;
} cfg;

static _Thread_local char init_err[512];

__attribute__((format(printf, 2, 3))) static int init_fail(int err,
							   const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(init_err, sizeof(init_err), fmt, ap);
	va_end(ap);
	return err;
}

static int getopt_cb(void *context, const char *plugin, const char *option,
		     const char **result, unsigned *len)
{
	const char *v = NULL;

	(void)context;
	(void)plugin;
	if (strcmp(option, "pwcheck_method") == 0)
		v = cfg.pwcheck;
	else if (strcmp(option, "auxprop_plugin") == 0 && cfg.sasldb != NULL)
		v = "sasldb";
	else if (strcmp(option, "sasldb_path") == 0)
		v = cfg.sasldb;
	else if (strcmp(option, "saslauthd_path") == 0)
		v = cfg.saslauthd;
	else if (strcmp(option, "mech_list") == 0)
		v = cfg.mechs;
	if (v == NULL)
		return SASL_FAIL; /* libsasl2 then asks its config file */
	*result = v;
	if (len != NULL)
		*len = (unsigned)strlen(v);
	return SASL_OK;
}

/* libsasl2 stores every callback as int (*)(void). */
#define SASL_FN(f) ((int (*)(void))(void (*)(void))(f))

static sasl_callback_t global_cbs[] = {
	{SASL_CB_GETOPT, SASL_FN(getopt_cb), NULL},
	{SASL_CB_LIST_END, NULL, NULL},
};

static void *mutex_alloc(void)
{
	pthread_mutex_t *m = malloc(sizeof(pthread_mutex_t));

	if (m != NULL && pthread_mutex_init(m, NULL) != 0) {
		free(m);
		m = NULL;
	}
	return m;
}

static int mutex_lock(void *m)
{
	return pthread_mutex_lock(m) == 0 ? SASL_OK : SASL_FAIL;
}

static int mutex_unlock(void *m)
{
	return pthread_mutex_unlock(m) == 0 ? SASL_OK : SASL_FAIL;
}

static void mutex_free(void *m)
{
	if (m == NULL)
		return;
	pthread_mutex_destroy(m);
	free(m);
}

static void cfg_clear(void)
{
	free(cfg.appname);
	free(cfg.pwcheck);
	free(cfg.sasldb);
	free(cfg.saslauthd);
	free(cfg.mechs);
	free(cfg.realm);
	memset(&cfg, 0, sizeof(cfg));
}

/* strdup of s, or NULL for NULL; *bad set if memory ran out. */
static char *dup_opt(const char *s, bool *bad)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*bad = true;
	return d;
}

static int cfg_copy(const struct srv__sasl_opts *o)
{
	bool bad = false;

	cfg.appname =
		dup_opt(o->appname != NULL ? o->appname : "ringprot", &bad);
	cfg.pwcheck = dup_opt(o->pwcheck_method != NULL ? o->pwcheck_method
							: "auxprop",
			      &bad);
	cfg.sasldb = dup_opt(o->sasldb_path, &bad);
	cfg.saslauthd = dup_opt(o->saslauthd_path, &bad);
	cfg.mechs = dup_opt(o->mech_list, &bad);
	cfg.realm = dup_opt(o->user_realm, &bad);
	cfg.max_ssf = o->max_ssf;
	if (bad) {
		cfg_clear();
		return init_fail(-ENOMEM, "sasl: out of memory");
	}
	return 0;
}

/* The sasldb must exist and be readable by us now (after privileges). */
static int check_sasldb(const char *path)
{
	struct stat st;
	int fd, ret = 0;

	if (path == NULL || path[0] == '\0')
		return init_fail(-EINVAL, "sasldb_path: not set (needed by "
					  "pwcheck_method auxprop)");
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return init_fail(-errno, "sasldb_path %s: %s", path,
				 strerror(errno));
	if (fstat(fd, &st) < 0)
		ret = init_fail(-errno, "sasldb_path %s: %s", path,
				strerror(errno));
	else if (!S_ISREG(st.st_mode))
		ret = init_fail(-EINVAL, "sasldb_path %s: not a regular file",
				path);
	else if (st.st_size == 0)
		ret = init_fail(-EINVAL,
				"sasldb_path %s: empty file, not a "
				"sasldb (make it with saslpasswd2)",
				path);
	close(fd);
	return ret;
}

static int check_saslauthd(const char *path)
{
	struct stat st;

	if (path == NULL)
		return 0; /* libsasl2's compiled-in default */
	if (stat(path, &st) < 0)
		return init_fail(-errno, "saslauthd_path %s: %s", path,
				 strerror(errno));
	if (!S_ISSOCK(st.st_mode))
		return init_fail(-ENOTSOCK,
				 "saslauthd_path %s: not a socket "
				 "(is saslauthd running?)",
				 path);
	return 0;
}

static int check_opts(const struct srv__sasl_opts *o)
{
	const char *pw = o->pwcheck_method;

	if (pw == NULL || strcmp(pw, "auxprop") == 0)
		return check_sasldb(o->sasldb_path);
	if (strcmp(pw, "saslauthd") == 0)
		return check_saslauthd(o->saslauthd_path);
	return init_fail(-EINVAL,
			 "sasl_pwcheck_method \"%s\": not auxprop "
			 "or saslauthd",
			 pw);
}

static int init_locked(const struct srv__sasl_opts *o)
{
	int r, ret;

	if (inited)
		return init_fail(-EALREADY, "sasl: already initialised");
	ret = check_opts(o);
	if (ret < 0)
		return ret;
	ret = cfg_copy(o);
	if (ret < 0)
		return ret;
	sasl_set_mutex(mutex_alloc, mutex_lock, mutex_unlock, mutex_free);
	r = sasl_server_init(global_cbs, cfg.appname);
	if (r != SASL_OK) {
		ret = init_fail(r == SASL_NOMEM ? -ENOMEM : -EIO,
				"sasl_server_init: %s",
				sasl_errstring(r, NULL, NULL));
		cfg_clear();
		return ret;
	}
	inited = true;
	return 0;
}

int srv__sasl_init(const struct srv__sasl_opts *o, const char **errstr_out)
{
	int ret;

	pthread_mutex_lock(&init_lock);
	ret = init_locked(o);
	pthread_mutex_unlock(&init_lock);
	if (errstr_out != NULL)
		*errstr_out = ret < 0 ? init_err : NULL;
	return ret;
}

void srv__sasl_done(void)
{
	pthread_mutex_lock(&init_lock);
	if (inited) {
		sasl_done();
		cfg_clear();
		inited = false;
	}
	pthread_mutex_unlock(&init_lock);
}

/* ---- conns ----------------------------------------------------------- */

int srv__sasl_ipport(const struct sockaddr *sa, char *buf, size_t size)
{
	char host[INET6_ADDRSTRLEN];
	unsigned port;
	int n;

	if (sa == NULL)
		return -EAFNOSUPPORT;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)sa;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		port = ntohs(sin->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)sa;

		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
			inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], host,
				  sizeof(host));
		else
			inet_ntop(AF_INET6, &sin6->sin6_addr, host,
				  sizeof(host));
		port = ntohs(sin6->sin6_port);
	} else {
		return -EAFNOSUPPORT;
	}
	n = snprintf(buf, size, "%s;%u", host, port);
	return n < 0 || (size_t)n >= size ? -ENOSPC : 0;
}

/* The "ip;port" string of sa, or NULL for none (NULL, AF_UNIX). */
static int ipport_or_null(const struct sockaddr *sa, char *buf, size_t size,
			  const char **s_out)
{
	*s_out = NULL;
	if (sa == NULL || sa->sa_family == AF_UNIX)
		return 0;
	if (srv__sasl_ipport(sa, buf, size) < 0)
		return -EINVAL;
	*s_out = buf;
	return 0;
}

int srv__sasl_conn_new(const char *service, const char *server_fqdn,
		       const struct sockaddr *local,
		       const struct sockaddr *remote, sasl_conn_t **out)
{
	char lbuf[64], rbuf[64];
	const char *ls, *rs;
	sasl_conn_t *conn;
	int r, ret;

	*out = NULL;
	if (!inited || service == NULL || server_fqdn == NULL ||
	    ipport_or_null(local, lbuf, sizeof(lbuf), &ls) < 0 ||
	    ipport_or_null(remote, rbuf, sizeof(rbuf), &rs) < 0)
		return -EINVAL;
	r = sasl_server_new(service, server_fqdn, cfg.realm, ls, rs, NULL, 0,
			    &conn);
	if (r != SASL_OK)
		return r == SASL_NOMEM	    ? -ENOMEM
		       : r == SASL_BADPARAM ? -EINVAL
					    : -EIO;
	ret = srv__sasl_set_plaintext_ok(conn, false);
	if (ret < 0) {
		sasl_dispose(&conn);
		return ret;
	}
	*out = conn;
	return 0;
}

int srv__sasl_set_external(sasl_conn_t *conn, unsigned ssf, const char *authid)
{
	sasl_ssf_t s = ssf;

	if (sasl_setprop(conn, SASL_SSF_EXTERNAL, &s) != SASL_OK ||
	    sasl_setprop(conn, SASL_AUTH_EXTERNAL, authid) != SASL_OK)
		return -EINVAL;
	return 0;
}

/* Cyrus imapd's mysasl_secprops: anonymous never, plaintext if ok. */
int srv__sasl_set_plaintext_ok(sasl_conn_t *conn, bool ok)
{
	sasl_security_properties_t sp = {
		.min_ssf = 0,
		.max_ssf = cfg.max_ssf,
		.maxbufsize = 65536,
		.security_flags =
			SASL_SEC_NOANONYMOUS | (ok ? 0 : SASL_SEC_NOPLAINTEXT),
	};

	return sasl_setprop(conn, SASL_SEC_PROPS, &sp) == SASL_OK ? 0 : -EINVAL;
}

int srv__sasl_mechs(sasl_conn_t *conn, const char **list_out)
{
	const char *res = NULL;
	unsigned len = 0;
	int count = 0, r;

	*list_out = "";
	r = sasl_listmech(conn, NULL, "", " ", "", &res, &len, &count);
	if (r == SASL_NOMECH)
		return 0;
	if (r != SASL_OK || res == NULL)
		return r == SASL_NOMEM ? -ENOMEM : -EINVAL;
	*list_out = res;
	return count;
}

/* ---- the exchange ---------------------------------------------------- */

/* Room for a decoded SRV_SASL_LINE_MAX line, plus a NUL. */
#define DEC_MAX (SRV_SASL_LINE_MAX / 4 * 3 + 4)

struct exch {
	char line[SRV_SASL_LINE_MAX + 1];
	char dec[DEC_MAX];
	unsigned declen;
};

static int sasl_err(int r)
{
	switch (r) {
	case SASL_NOMEM:
		return -ENOMEM;
	case SASL_BADPROT:
	case SASL_BADPARAM:
		return -EPROTO;
	case SASL_NOMECH:
	case SASL_TOOWEAK:
	case SASL_ENCRYPT:
		return -ENOPROTOOPT;
	default:
		return -EACCES;
	}
}

/* Base64 of data (len bytes) through io; encoded on the heap. */
static int send_b64(const struct srv__sasl_io *io, const char *data,
		    unsigned len)
{
	unsigned cap = (len + 2) / 3 * 4 + 1, n = 0;
	char *b64 = malloc(cap);
	int ret;

	if (b64 == NULL)
		return -ENOMEM;
	if (sasl_encode64(data != NULL ? data : "", len, b64, cap, &n) !=
	    SASL_OK) {
		free(b64);
		return -ENOMEM;
	}
	ret = io->send_challenge(io->rock, b64);
	free(b64);
	return ret;
}

/* Decode len bytes of base64 at s into x->dec. */
static int decode(struct exch *x, const char *s, size_t len)
{
	if (len > SRV_SASL_LINE_MAX)
		return -EMSGSIZE;
	if (sasl_decode64(s, (unsigned)len, x->dec, sizeof(x->dec),
			  &x->declen) != SASL_OK)
		return -EPROTO;
	return 0;
}

/* One client response into x->dec. */
static int read_response(const struct srv__sasl_io *io, struct exch *x)
{
	ssize_t n = io->read_response(io->rock, x->line, sizeof(x->line));

	if (n < 0)
		return (int)n;
	if ((size_t)n >= sizeof(x->line))
		return -EMSGSIZE;
	x->line[n] = '\0';
	if (n == 1 && x->line[0] == '*')
		return -ECANCELED; /* RFC 9051 §6.2.2, RFC 4954 §4 */
	return decode(x, x->line, (size_t)n);
}

static const char *errtext(int ret)
{
	switch (ret) {
	case -ECANCELED:
		return "authentication cancelled by the client";
	case -EMSGSIZE:
		return "authentication response too long";
	case -ENOMEM:
		return "out of memory";
	default:
		return NULL;
	}
}

static int exchange(sasl_conn_t *conn, const char *mech, const char *initial,
		    const struct srv__sasl_io *io, struct exch *x,
		    const char **why_out)
{
	const char *in = NULL, *out = NULL;
	unsigned inlen = 0, outlen = 0;
	int r, ret;

	*why_out = NULL;
	if (initial != NULL && strcmp(initial, "=") != 0) {
		ret = decode(x, initial, strlen(initial));
		if (ret < 0) {
			if (ret == -EPROTO)
				*why_out = "bad base64 in the initial response";
			return ret;
		}
		in = x->dec;
		inlen = x->declen;
	} else if (initial != NULL) {
		in = ""; /* "=": present and empty */
	}
	r = sasl_server_start(conn, mech, in, inlen, &out, &outlen);
	while (r == SASL_CONTINUE) {
		ret = send_b64(io, out, outlen);
		if (ret == 0)
			ret = read_response(io, x);
		if (ret == -EPROTO)
			*why_out = "bad base64 in a response";
		if (ret < 0)
			return ret;
		r = sasl_server_step(conn, x->dec, x->declen, &out, &outlen);
	}
	if (r != SASL_OK) {
		*why_out = sasl_errdetail(conn);
		return sasl_err(r);
	}
	return 0;
}

int srv__sasl_auth(sasl_conn_t *conn, const char *mech, const char *initial,
		   const struct srv__sasl_io *io, const char **user_out,
		   const char **errstr_out)
{
	const void *user = NULL;
	const char *why = NULL;
	struct exch *x;
	int ret;

	*user_out = NULL;
	if (errstr_out != NULL)
		*errstr_out = NULL;
	if (mech == NULL || mech[0] == '\0' ||
	    strlen(mech) > SASL_MECHNAMEMAX) {
		if (errstr_out != NULL)
			*errstr_out = "no such mechanism";
		return -ENOPROTOOPT;
	}
	x = calloc(1, sizeof(*x)); /* off the fiber's stack */
	if (x == NULL)
		ret = -ENOMEM;
	else
		ret = exchange(conn, mech, initial, io, x, &why);
	if (x != NULL) {
		/* The lines held a password in PLAIN. */
		explicit_bzero(x, sizeof(*x));
		free(x);
	}
	if (ret == 0 && (sasl_getprop(conn, SASL_USERNAME, &user) != SASL_OK ||
			 user == NULL)) {
		why = "no user name after authentication";
		ret = -EACCES;
	}
	if (ret < 0) {
		if (errstr_out != NULL)
			*errstr_out = why != NULL ? why : errtext(ret);
		return ret;
	}
	*user_out = user;
	return 0;
}

/* ---- failed-authentication delay ------------------------------------- */

#define AF_WAYS		    8
#define AF_KEY_MAX	    64 /* an IPv6 address with a zone fits */
#define AF_DEFAULT_ENTRIES  4096u
#define AF_DEFAULT_DECAY_MS 60000u

struct af_entry {
	char ip[AF_KEY_MAX]; /* "" when free */
	uint32_t fails;
	uint64_t last_ms;
};

struct srv__authfail {
	pthread_mutex_t lock;
	struct af_entry *e; /* nsets * AF_WAYS */
	unsigned nsets, live;
	uint64_t decay_ms, total, seed;
	uint64_t (*now_ms)(void *arg);
	void *now_arg;
};

static uint64_t mono_ms(void *arg)
{
	struct timespec ts;

	(void)arg;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int srv__authfail_new(unsigned max_entries, uint64_t decay_ms,
		      struct srv__authfail **out)
{
	struct srv__authfail *t;

	*out = NULL;
	if (max_entries == 0)
		max_entries = AF_DEFAULT_ENTRIES;
	if (max_entries > (1u << 24))
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	t->nsets = (max_entries + AF_WAYS - 1) / AF_WAYS;
	t->e = calloc((size_t)t->nsets * AF_WAYS, sizeof(*t->e));
	if (t->e == NULL || pthread_mutex_init(&t->lock, NULL) != 0) {
		free(t->e);
		free(t);
		return -ENOMEM;
	}
	t->decay_ms = decay_ms != 0 ? decay_ms : AF_DEFAULT_DECAY_MS;
	if (getrandom(&t->seed, sizeof(t->seed), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(t->seed))
		t->seed = mono_ms(NULL) ^ (uint64_t)(uintptr_t)t;
	t->now_ms = mono_ms;
	*out = t;
	return 0;
}

void srv__authfail_free(struct srv__authfail **tp)
{
	struct srv__authfail *t = *tp;

	if (t == NULL)
		return;
	*tp = NULL;
	pthread_mutex_destroy(&t->lock);
	free(t->e);
	free(t);
}

void srv__authfail_set_clock(struct srv__authfail *t,
			     uint64_t (*now_ms)(void *arg), void *arg)
{
	t->now_ms = now_ms;
	t->now_arg = arg;
}

/* FNV-1a over the key, started from the table's seed. */
static struct af_entry *af_set(struct srv__authfail *t, const char *key)
{
	uint64_t h = 0xcbf29ce484222325ull ^ t->seed;

	for (const unsigned char *p = (const void *)key; *p != '\0'; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	h ^= h >> 29; /* the low bits pick the set: mix the high ones in */
	return &t->e[(h % t->nsets) * AF_WAYS];
}

/* Failures still counted at now: one forgotten per decay period. */
static uint32_t af_fails(const struct srv__authfail *t,
			 const struct af_entry *e, uint64_t now)
{
	uint64_t gone = now > e->last_ms ? (now - e->last_ms) / t->decay_ms : 0;

	return gone >= e->fails ? 0 : e->fails - (uint32_t)gone;
}

static void af_drop(struct srv__authfail *t, struct af_entry *e)
{
	e->ip[0] = '\0';
	t->live--;
}

/* ip's entry in set, or NULL; drops entries fully decayed on the way. */
static struct af_entry *af_find(struct srv__authfail *t, struct af_entry *set,
				const char *key, uint64_t now)
{
	for (int i = 0; i < AF_WAYS; i++) {
		struct af_entry *e = &set[i];

		if (e->ip[0] == '\0')
			continue;
		if (af_fails(t, e, now) == 0) {
			af_drop(t, e);
			continue;
		}
		if (strcmp(e->ip, key) == 0)
			return e;
	}
	return NULL;
}

/* A free slot in set, the stalest entry making room if none. */
static struct af_entry *af_slot(struct srv__authfail *t, struct af_entry *set)
{
	struct af_entry *old = &set[0];

	for (int i = 0; i < AF_WAYS; i++) {
		if (set[i].ip[0] == '\0')
			return &set[i];
		if (set[i].last_ms < old->last_ms)
			old = &set[i];
	}
	af_drop(t, old);
	return old;
}

/* ip cut to the key size (a longer one is no address anyway). */
static void af_key(char key[AF_KEY_MAX], const char *ip)
{
	(void)snprintf(key, AF_KEY_MAX, "%s", ip);
}

uint64_t srv__authfail_delay_ms(struct srv__authfail *t, const char *ip)
{
	char key[AF_KEY_MAX];
	struct af_entry *e;
	uint32_t n = 0;
	uint64_t now;

	if (ip == NULL || ip[0] == '\0')
		return 0;
	af_key(key, ip);
	pthread_mutex_lock(&t->lock);
	now = t->now_ms(t->now_arg);
	e = af_find(t, af_set(t, key), key, now);
	if (e != NULL)
		n = af_fails(t, e, now);
	pthread_mutex_unlock(&t->lock);
	if (n <= 1)
		return 0;
	if (n - 2 >= 5) /* 500 << 5 is past the cap */
		return SRV_AUTHFAIL_CAP_MS;
	n = SRV_AUTHFAIL_BASE_MS << (n - 2);
	return n < SRV_AUTHFAIL_CAP_MS ? n : SRV_AUTHFAIL_CAP_MS;
}

void srv__authfail_record(struct srv__authfail *t, const char *ip, bool ok)
{
	char key[AF_KEY_MAX];
	struct af_entry *set, *e;
	uint64_t now;

	if (ip == NULL || ip[0] == '\0')
		return;
	af_key(key, ip);
	pthread_mutex_lock(&t->lock);
	now = t->now_ms(t->now_arg);
	set = af_set(t, key);
	e = af_find(t, set, key, now);
	if (ok) {
		if (e != NULL)
			af_drop(t, e);
		goto out;
	}
	t->total++;
	if (e != NULL) {
		uint32_t n = af_fails(t, e, now);

		e->fails = n < UINT32_MAX ? n + 1 : n;
	} else {
		e = af_slot(t, set);
		memcpy(e->ip, key, sizeof(key));
		e->fails = 1;
		t->live++;
	}
	e->last_ms = now;
out:
	pthread_mutex_unlock(&t->lock);
}

uint64_t srv__authfail_total(struct srv__authfail *t)
{
	uint64_t n;

	pthread_mutex_lock(&t->lock);
	n = t->total;
	pthread_mutex_unlock(&t->lock);
	return n;
}

unsigned srv__authfail_size(struct srv__authfail *t)
{
	unsigned n;

	pthread_mutex_lock(&t->lock);
	n = t->live;
	pthread_mutex_unlock(&t->lock);
	return n;
}
