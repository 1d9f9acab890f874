/* SPDX-License-Identifier: BSD-3-Clause */
/* test/srv-sasl: SASL setup and exchange against libsasl2 and sasldb. */
#include "t-helpers.h" /* stdarg, stddef, setjmp, cmocka: in that order */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sasl/sasl.h>
#include <sasl/saslutil.h>

#include <ringprot/prot.h>

#include "sasl.h"

/*
 * A sasldb made at start-up by saslpasswd2 (sasl2-bin) with one user in
 * REALM; the server side is server/sasl.c, the client side libsasl2's
 * own client (sasl_client_new/start/step), both in this process. The
 * io callbacks either hand the challenge straight to the client (most
 * tests) or carry it over a socket pair between two fibers.
 */
#define REALM "ringprot.test"
#define USER  "alice"
#define UPN   USER "@" REALM /* what SASL_USERNAME says with user_realm */
#define PASS  "correct horse"

extern char **environ;

static char dir[64];
static char sasldb[128];

static char *path(const char *name)
{
	static char bufs[16][128];
	static unsigned next;
	char *b = bufs[next++ % 16];

	snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
	return b;
}

/* Run argv with text on its stdin; its exit status, or -1. */
static int run(char *const argv[], const char *text)
{
	posix_spawn_file_actions_t fa;
	int p[2], st;
	pid_t pid;

	if (pipe(p) < 0)
		return -1;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[0], 0);
	posix_spawn_file_actions_addclose(&fa, p[1]);
	if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		return -1;
	}
	posix_spawn_file_actions_destroy(&fa);
	close(p[0]);
	if (write(p[1], text, strlen(text)) != (ssize_t)strlen(text))
		st = -1;
	close(p[1]);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static int make_files(void)
{
	char *argv[] = {"/usr/sbin/saslpasswd2",
			"-c",
			"-p",
			"-f",
			sasldb,
			"-u",
			REALM,
			USER,
			NULL};
	FILE *f;

	snprintf(dir, sizeof(dir), "/tmp/ringprot-srv-sasl-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(sasldb, sizeof(sasldb), "%s/sasldb2", dir);
	if (access(argv[0], X_OK) != 0) {
		fprintf(stderr, "no %s (package sasl2-bin)\n", argv[0]);
		return -1;
	}
	if (run(argv, PASS) != 0) {
		fprintf(stderr, "saslpasswd2 failed\n");
		return -1;
	}
	f = fopen(path("empty"), "w");
	if (f == NULL || fclose(f) != 0)
		return -1;
	f = fopen(path("plain"), "w");
	if (f == NULL || fputs("x\n", f) < 0 || fclose(f) != 0)
		return -1;
	return mkdir(path("adir"), 0700);
}

static void remove_files(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

/* ---- the client side -------------------------------------------------- */

struct client {
	sasl_conn_t *conn;
	const char *pass;
	union {
		sasl_secret_t s;
		char space[sizeof(sasl_secret_t) + 64];
	} secret;
	sasl_callback_t cbs[5];
	/* client_start's output, for a server that asks without one */
	char first[2048];
	bool have_first;
	char challenge[SRV_SASL_LINE_MAX + 1]; /* the last one, base64 */
	unsigned challenges;
	int client_ret; /* last sasl_client_step */
	bool started;	/* auth() ran on it */
	/* Hostile turns: answer response number `at` (1-based) with text,
	 * or return err from read_response. */
	unsigned at;
	const char *text;
	ssize_t err;
};

#define SASL_FN(f) ((int (*)(void))(void (*)(void))(f))

static int name_cb(void *context, int id, const char **result, unsigned *len)
{
	(void)context;
	*result = id == SASL_CB_USER ? "" : USER;
	if (len != NULL)
		*len = (unsigned)strlen(*result);
	return SASL_OK;
}

static int pass_cb(sasl_conn_t *conn, void *context, int id,
		   sasl_secret_t **psecret)
{
	struct client *c = context;

	(void)conn;
	(void)id;
	c->secret.s.len = strlen(c->pass);
	memcpy(c->secret.s.data, c->pass, strlen(c->pass) + 1);
	*psecret = &c->secret.s;
	return SASL_OK;
}

static int realm_cb(void *context, int id, const char **availrealms,
		    const char **result)
{
	(void)context;
	(void)id;
	(void)availrealms;
	*result = REALM;
	return SASL_OK;
}

/*
 * A fresh host per pair: DIGEST-MD5 clients cache the last nonce per
 * host, and its server checks the digest-uri against its own name.
 */
static const char *next_host(void)
{
	static char host[64];
	static unsigned n;

	snprintf(host, sizeof(host), "h%u.%s", ++n, REALM);
	return host;
}

static void client_new(struct client *c, const char *host, const char *pass)
{
	memset(c, 0, sizeof(*c));
	c->pass = pass;
	c->cbs[0] = (sasl_callback_t){SASL_CB_USER, SASL_FN(name_cb), c};
	c->cbs[1] = (sasl_callback_t){SASL_CB_AUTHNAME, SASL_FN(name_cb), c};
	c->cbs[2] = (sasl_callback_t){SASL_CB_PASS, SASL_FN(pass_cb), c};
	c->cbs[3] = (sasl_callback_t){SASL_CB_GETREALM, SASL_FN(realm_cb), c};
	c->cbs[4] = (sasl_callback_t){SASL_CB_LIST_END, NULL, NULL};
	assert_int_equal(
		sasl_client_new("imap", host, NULL, NULL, c->cbs, 0, &c->conn),
		SASL_OK);
}

static void client_free(struct client *c)
{
	sasl_dispose(&c->conn);
}

/* client_start: the base64 initial response ("=" if empty), or NULL. */
static const char *client_start(struct client *c, const char *mech)
{
	static char b64[2048];
	const char *out = NULL, *chosen = NULL;
	unsigned outlen = 0, n = 0;
	int r = sasl_client_start(c->conn, mech, NULL, &out, &outlen, &chosen);

	assert_true(r == SASL_OK || r == SASL_CONTINUE);
	if (out == NULL)
		return NULL;
	assert_int_equal(sasl_encode64(out, outlen, b64, sizeof(b64), &n),
			 SASL_OK);
	memcpy(c->first, b64, n + 1);
	c->have_first = true;
	return n == 0 ? "=" : b64;
}

static int cli_send(void *rock, const char *b64)
{
	struct client *c = rock;

	snprintf(c->challenge, sizeof(c->challenge), "%s", b64);
	c->challenges++;
	return 0;
}

/* The client's answer to the last challenge, as a protocol line. */
static ssize_t cli_read(void *rock, char *buf, size_t size)
{
	struct client *c = rock;
	char dec[SRV_SASL_LINE_MAX];
	const char *out = NULL;
	unsigned declen = 0, outlen = 0, n = 0;

	if (c->at == c->challenges) {
		if (c->err != 0)
			return c->err;
		snprintf(buf, size, "%s", c->text);
		return (ssize_t)strlen(buf);
	}
	if (c->have_first) {
		/* Client-first mechanism, asked with an empty challenge. */
		c->have_first = false;
		snprintf(buf, size, "%s", c->first);
		return (ssize_t)strlen(buf);
	}
	assert_int_equal(sasl_decode64(c->challenge,
				       (unsigned)strlen(c->challenge), dec,
				       sizeof(dec), &declen),
			 SASL_OK);
	c->client_ret =
		sasl_client_step(c->conn, dec, declen, NULL, &out, &outlen);
	if (c->client_ret != SASL_OK && c->client_ret != SASL_CONTINUE)
		return (ssize_t)snprintf(buf, size, "*");
	assert_int_equal(sasl_encode64(out != NULL ? out : "", outlen, buf,
				       (unsigned)size, &n),
			 SASL_OK);
	return n;
}

struct pair {
	char host[64];
	sasl_conn_t *srv;
	struct client cli;
	struct srv__sasl_io io;
};

static void pair_new(struct pair *p, const char *pass, bool plaintext_ok)
{
	snprintf(p->host, sizeof(p->host), "%s", next_host());
	assert_int_equal(
		srv__sasl_conn_new("imap", p->host, NULL, NULL, &p->srv), 0);
	assert_int_equal(srv__sasl_set_plaintext_ok(p->srv, plaintext_ok), 0);
	client_new(&p->cli, p->host, pass);
	p->io = (struct srv__sasl_io){cli_send, cli_read, &p->cli};
}

static void pair_free(struct pair *p)
{
	sasl_dispose(&p->srv);
	client_free(&p->cli);
}

/* One whole exchange: the client's initial response if ir. */
static int auth(struct pair *p, const char *mech, bool ir,
		const char **user_out, const char **err_out)
{
	struct client *c = &p->cli;
	const char *initial;

	if (c->started) {
		/* A fresh client conn: libsasl2 leaks a restarted one's
		 * mechanism state. The hostile turns carry over. */
		unsigned at = c->at;
		const char *text = c->text, *pass = c->pass;
		ssize_t err = c->err;

		client_free(c);
		client_new(c, p->host, pass);
		c->at = at;
		c->text = text;
		c->err = err;
	}
	c->started = true;
	initial = client_start(c, mech);

	if (!ir)
		initial = NULL;
	else
		p->cli.have_first = false;
	return srv__sasl_auth(p->srv, mech, initial, &p->io, user_out, err_out);
}

/* ---- tests ------------------------------------------------------------ */

/* In a child that drops to nobody: the sasldb is unreadable for it. */
static void check_unreadable(void)
{
	struct srv__sasl_opts o = {.sasldb_path = sasldb};
	struct passwd *pw = getpwnam("nobody");
	const char *err = NULL;
	char want[256];
	int st, ret;
	pid_t pid;

	assert_int_equal(chmod(sasldb, 0600), 0);
	if (geteuid() != 0) {
		assert_int_equal(chmod(sasldb, 0), 0);
		ret = srv__sasl_init(&o, &err);
		assert_int_equal(chmod(sasldb, 0600), 0);
		assert_int_equal(ret, -EACCES);
		return;
	}
	assert_non_null(pw);
	assert_int_equal(chmod(dir, 0755), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
			_exit(2);
		ret = srv__sasl_init(&o, &err);
		snprintf(want, sizeof(want),
			 "sasldb_path %s: Permission denied", sasldb);
		_exit(ret == -EACCES && err != NULL && strcmp(err, want) == 0
			      ? 0
			      : 1);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_srv_sasl_init(void **state)
{
	const struct {
		struct srv__sasl_opts o;
		int ret;
		const char *msg;
	} cases[] = {
		{{.sasldb_path = NULL},
		 -EINVAL,
		 "sasldb_path: not set (needed by pwcheck_method auxprop)"},
		{{.sasldb_path = path("missing")}, -ENOENT, NULL},
		{{.sasldb_path = path("adir")}, -EINVAL, NULL},
		{{.sasldb_path = path("empty")}, -EINVAL, NULL},
		{{.pwcheck_method = "pam"},
		 -EINVAL,
		 "sasl_pwcheck_method \"pam\": not auxprop or saslauthd"},
		{{.pwcheck_method = "saslauthd",
		  .saslauthd_path = path("nomux")},
		 -ENOENT,
		 NULL},
		{{.pwcheck_method = "saslauthd",
		  .saslauthd_path = path("plain")},
		 -ENOTSOCK,
		 NULL},
	};
	char want[7][256];
	struct srv__sasl_opts good = {
		.appname = "ringprot-test",
		.sasldb_path = sasldb,
		.user_realm = REALM,
		.mech_list = "SCRAM-SHA-256 SCRAM-SHA-1 DIGEST-MD5 CRAM-MD5 "
			     "PLAIN LOGIN ANONYMOUS",
	};
	const char *err = NULL;

	(void)state;
	snprintf(want[1], sizeof(want[1]),
		 "sasldb_path %s: No such file or directory", path("missing"));
	snprintf(want[2], sizeof(want[2]), "sasldb_path %s: not a regular file",
		 path("adir"));
	snprintf(want[3], sizeof(want[3]),
		 "sasldb_path %s: empty file, not a sasldb (make it with "
		 "saslpasswd2)",
		 path("empty"));
	snprintf(want[5], sizeof(want[5]),
		 "saslauthd_path %s: No such file or directory", path("nomux"));
	snprintf(want[6], sizeof(want[6]),
		 "saslauthd_path %s: not a socket (is saslauthd running?)",
		 path("plain"));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int ret = srv__sasl_init(&cases[i].o, &err);

		print_message("case %zu: %d %s\n", i, ret, err);
		assert_int_equal(ret, cases[i].ret);
		assert_string_equal(err, cases[i].msg != NULL ? cases[i].msg
							      : want[i]);
	}
	check_unreadable();

	/* No init yet: no conns. */
	{
		sasl_conn_t *c = (void *)1;

		assert_int_equal(
			srv__sasl_conn_new("imap", "h", NULL, NULL, &c),
			-EINVAL);
		assert_null(c);
	}
	assert_int_equal(srv__sasl_init(&good, &err), 0);
	assert_null(err);
	assert_int_equal(srv__sasl_init(&good, &err), -EALREADY);
	assert_non_null(err);
	/* The client side, after the server set libsasl2's mutexes. */
	assert_int_equal(sasl_client_init(NULL), SASL_OK);
}

static void test_srv_sasl_ipport(void **state)
{
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_port = htons(143)};
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6,
				    .sin6_port = htons(993)};
	struct sockaddr_in6 mapped = {.sin6_family = AF_INET6,
				      .sin6_port = htons(25)};
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	const void *v = NULL;
	sasl_conn_t *c;
	char buf[64];

	(void)state;
	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr);
	inet_pton(AF_INET6, "::ffff:192.0.2.7", &mapped.sin6_addr);
	assert_int_equal(srv__sasl_ipport((void *)&sin, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "127.0.0.1;143");
	assert_int_equal(srv__sasl_ipport((void *)&sin6, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "2001:db8::1;993");
	assert_int_equal(srv__sasl_ipport((void *)&mapped, buf, sizeof(buf)),
			 0);
	assert_string_equal(buf, "192.0.2.7;25");
	assert_int_equal(srv__sasl_ipport((void *)&sun, buf, sizeof(buf)),
			 -EAFNOSUPPORT);
	assert_int_equal(srv__sasl_ipport((void *)&sin, buf, 8), -ENOSPC);

	/* libsasl2 takes them (it parses them back) and reports them. */
	assert_int_equal(srv__sasl_conn_new("imap", "h", (void *)&sin,
					    (void *)&sin6, &c),
			 0);
	assert_int_equal(sasl_getprop(c, SASL_IPLOCALPORT, &v), SASL_OK);
	assert_string_equal(v, "127.0.0.1;143");
	assert_int_equal(sasl_getprop(c, SASL_IPREMOTEPORT, &v), SASL_OK);
	assert_string_equal(v, "2001:db8::1;993");
	sasl_dispose(&c);
	/* AF_UNIX: no addresses. */
	assert_int_equal(
		srv__sasl_conn_new("lmtp", "h", (void *)&sun, (void *)&sun, &c),
		0);
	v = "x";
	assert_true(sasl_getprop(c, SASL_IPREMOTEPORT, &v) != SASL_OK ||
		    v == NULL);
	sasl_dispose(&c);
	assert_int_equal(srv__sasl_conn_new(NULL, "h", NULL, NULL, &c),
			 -EINVAL);
}

static bool has_mech(const char *list, const char *mech)
{
	size_t n = strlen(mech);

	for (const char *p = list; (p = strstr(p, mech)) != NULL; p += n)
		if ((p == list || p[-1] == ' ') &&
		    (p[n] == ' ' || p[n] == '\0'))
			return true;
	return false;
}

static void test_srv_sasl_plaintext(void **state)
{
	const char *list, *user, *err;
	struct pair p;
	int n;

	(void)state;
	pair_new(&p, PASS, false);
	n = srv__sasl_mechs(p.srv, &list);
	print_message("without TLS: %s\n", list);
	assert_true(n >= 3);
	assert_false(has_mech(list, "PLAIN"));
	assert_false(has_mech(list, "LOGIN"));
	assert_false(has_mech(list, "ANONYMOUS"));
	assert_true(has_mech(list, "DIGEST-MD5"));
	assert_true(has_mech(list, "SCRAM-SHA-1"));
	/* Hidden means refused too, not only unlisted. */
	assert_int_equal(auth(&p, "PLAIN", true, &user, &err), -ENOPROTOOPT);
	assert_non_null(err);
	assert_null(user);

	/* allowplaintext: PLAIN shows, anonymous still does not. */
	assert_int_equal(srv__sasl_set_plaintext_ok(p.srv, true), 0);
	assert_true(srv__sasl_mechs(p.srv, &list) > n);
	assert_true(has_mech(list, "PLAIN"));
	assert_true(has_mech(list, "LOGIN"));
	assert_false(has_mech(list, "ANONYMOUS"));
	pair_free(&p);

	/* After TLS (an external layer), plaintext is fine by itself. */
	pair_new(&p, PASS, false);
	assert_int_equal(srv__sasl_set_external(p.srv, 256, NULL), 0);
	assert_true(srv__sasl_mechs(p.srv, &list) > n);
	assert_true(has_mech(list, "PLAIN"));
	assert_int_equal(auth(&p, "PLAIN", true, &user, &err), 0);
	assert_string_equal(user, UPN);
	pair_free(&p);
}

static void test_srv_sasl_mechanisms(void **state)
{
	static const char *const mechs[] = {"PLAIN",	     "LOGIN",
					    "SCRAM-SHA-256", "SCRAM-SHA-1",
					    "DIGEST-MD5",    "CRAM-MD5"};
	const char *list = NULL;
	struct pair p;

	(void)state;
	pair_new(&p, PASS, true);
	assert_true(srv__sasl_mechs(p.srv, &list) > 0);
	print_message("offered: %s\n", list);
	pair_free(&p);
	for (size_t i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++) {
		for (int ir = 0; ir < 2; ir++) {
			const char *user = NULL, *err = NULL;
			int ret;

			/* libsasl2-modules ships SCRAM-SHA-256 (2.1.28). */
			pair_new(&p, PASS, true);
			assert_true(srv__sasl_mechs(p.srv, &list) > 0);
			if (!has_mech(list, mechs[i]))
				fail_msg("%s not offered: %s", mechs[i], list);
			ret = auth(&p, mechs[i], ir, &user, &err);
			print_message("%s ir=%d: %d %s (%u challenges)\n",
				      mechs[i], ir, ret, err ? err : "",
				      p.cli.challenges);
			assert_int_equal(ret, 0);
			assert_null(err);
			assert_string_equal(user, UPN);
			pair_free(&p);

			pair_new(&p, "wrong horse", true);
			ret = auth(&p, mechs[i], ir, &user, &err);
			print_message("%s wrong: %d %s\n", mechs[i], ret, err);
			assert_int_equal(ret, -EACCES);
			assert_null(user);
			assert_non_null(err);
			pair_free(&p);
		}
	}
}

static void test_srv_sasl_exchange_errors(void **state)
{
	char *longline = malloc(SRV_SASL_LINE_MAX + 8);
	const char *user, *err;
	struct pair p;

	(void)state;
	assert_non_null(longline);
	memset(longline, 'A', SRV_SASL_LINE_MAX + 4);
	longline[SRV_SASL_LINE_MAX + 4] = '\0';
	pair_new(&p, PASS, true);

	/* "*" at the first challenge cancels (DIGEST-MD5: server first). */
	p.cli.at = 1;
	p.cli.text = "*";
	assert_int_equal(auth(&p, "DIGEST-MD5", false, &user, &err),
			 -ECANCELED);
	assert_string_equal(err, "authentication cancelled by the client");
	assert_null(user);

	/* Bad base64 in a response, and in an initial response. */
	p.cli.text = "not base64!";
	assert_int_equal(auth(&p, "DIGEST-MD5", false, &user, &err), -EPROTO);
	assert_string_equal(err, "bad base64 in a response");
	assert_int_equal(
		srv__sasl_auth(p.srv, "PLAIN", "@@@", &p.io, &user, &err),
		-EPROTO);
	assert_string_equal(err, "bad base64 in the initial response");

	/* Too long: the io says so, or the line is longer than we take. */
	p.cli.err = -EMSGSIZE;
	assert_int_equal(auth(&p, "DIGEST-MD5", false, &user, &err), -EMSGSIZE);
	assert_string_equal(err, "authentication response too long");
	assert_int_equal(
		srv__sasl_auth(p.srv, "PLAIN", longline, &p.io, &user, &err),
		-EMSGSIZE);
	/* The connection went away: the io's error, as it is. */
	p.cli.err = -ECONNRESET;
	assert_int_equal(auth(&p, "DIGEST-MD5", false, &user, &err),
			 -ECONNRESET);

	/* Empty initial response ("="): PLAIN finds it malformed. */
	p.cli.at = 0;
	p.cli.err = 0;
	assert_int_equal(
		srv__sasl_auth(p.srv, "PLAIN", "=", &p.io, &user, &err),
		-EPROTO);
	assert_non_null(err);
	/* Unknown or absurd mechanism names. */
	assert_int_equal(
		srv__sasl_auth(p.srv, "NO-SUCH-MECH", NULL, &p.io, &user, &err),
		-ENOPROTOOPT);
	assert_non_null(err);
	assert_int_equal(srv__sasl_auth(p.srv, "AVERYLONGMECHANISMNAMEXX", NULL,
					&p.io, &user, &err),
			 -ENOPROTOOPT);
	assert_int_equal(srv__sasl_auth(p.srv, "", NULL, &p.io, &user, &err),
			 -ENOPROTOOPT);
	pair_free(&p);

	/* A fresh exchange on the same conn after a failure succeeds. */
	pair_new(&p, PASS, true);
	p.cli.at = 1;
	p.cli.text = "*";
	assert_int_equal(auth(&p, "SCRAM-SHA-1", false, &user, &err),
			 -ECANCELED);
	client_free(&p.cli);
	client_new(&p.cli, p.host, PASS);
	assert_int_equal(auth(&p, "SCRAM-SHA-1", false, &user, &err), 0);
	assert_string_equal(user, UPN);
	pair_free(&p);
	free(longline);
}

/* ---- over a socket, in fibers ------------------------------------------ */

struct wire {
	struct protstream *in, *out;
};

static int imap_send(void *rock, const char *b64)
{
	struct wire *w = rock;

	return prot_printf(w->out, "+ %s\r\n", b64) == 0 &&
			       prot_flush(w->out) == 0
		       ? 0
		       : -EIO;
}

static ssize_t imap_read(void *rock, char *buf, size_t size)
{
	struct wire *w = rock;
	size_t n;

	if (prot_fgets(buf, (unsigned)size, w->in) == NULL)
		return -ECONNRESET;
	n = strlen(buf);
	if (n < 2 || strcmp(buf + n - 2, "\r\n") != 0)
		return -EMSGSIZE;
	buf[n - 2] = '\0';
	return (ssize_t)(n - 2);
}

struct side {
	struct wire w;
	sasl_conn_t *srv;
	struct client cli;
	const char *mech;
	int ret;
	char user[64];
};

static int server_side(void *arg)
{
	struct side *s = arg;
	struct srv__sasl_io io = {imap_send, imap_read, &s->w};
	const char *user = NULL, *err = NULL;

	s->ret = srv__sasl_auth(s->srv, s->mech, NULL, &io, &user, &err);
	if (s->ret == 0) {
		snprintf(s->user, sizeof(s->user), "%s", user);
		if (prot_printf(s->w.out, "a OK\r\n") != 0 ||
		    prot_flush(s->w.out) != 0)
			s->ret = -EIO;
	}
	return 0;
}

/* The client end: answer "+ " lines until "a OK". */
static int client_side(void *arg)
{
	struct side *s = arg;
	char line[4096];
	ssize_t n;

	s->cli.have_first = client_start(&s->cli, s->mech) != NULL;
	for (;;) {
		n = imap_read(&s->w, line, sizeof(line));
		if (n < 0 || strcmp(line, "a OK") == 0)
			break;
		if (strncmp(line, "+ ", 2) != 0)
			break;
		assert_int_equal(cli_send(&s->cli, line + 2), 0);
		n = cli_read(&s->cli, line, sizeof(line));
		if (prot_printf(s->w.out, "%s\r\n", line) != 0 ||
		    prot_flush(s->w.out) != 0)
			break;
	}
	s->ret = n >= 0 && strcmp(line, "a OK") == 0 ? 0 : -1;
	return 0;
}

static void test_srv_sasl_over_socket(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	static const char *const mechs[] = {"SCRAM-SHA-256", "DIGEST-MD5",
					    "PLAIN"};

	for (size_t i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++) {
		struct side srv = {.mech = mechs[i]}, cli = {.mech = mechs[i]};
		const char *host = next_host();
		struct ur_fiber *fs, *fc;
		int sv[2];

		t_socketpair(sv);
		srv.w.in = prot_new(sv[0], 0);
		srv.w.out = prot_new(sv[0], 1);
		cli.w.in = prot_new(sv[1], 0);
		cli.w.out = prot_new(sv[1], 1);
		assert_int_equal(
			srv__sasl_conn_new("imap", host, NULL, NULL, &srv.srv),
			0);
		assert_int_equal(srv__sasl_set_plaintext_ok(srv.srv, true), 0);
		client_new(&cli.cli, host, PASS);
		assert_int_equal(
			ur_fiber_spawn(loop, server_side, &srv, NULL, &fs), 0);
		assert_int_equal(
			ur_fiber_spawn(loop, client_side, &cli, NULL, &fc), 0);
		assert_int_equal(ur_fiber_join(fs, NULL), 0);
		assert_int_equal(ur_fiber_join(fc, NULL), 0);
		assert_int_equal(srv.ret, 0);
		assert_int_equal(cli.ret, 0);
		assert_string_equal(srv.user, UPN);
		sasl_dispose(&srv.srv);
		client_free(&cli.cli);
		prot_free(srv.w.in);
		prot_free(srv.w.out);
		prot_free(cli.w.in);
		prot_free(cli.w.out);
		t_close_pair(sv);
	}
}

/* ---- the failed-authentication delay ----------------------------------- */

static uint64_t fake_now;

static uint64_t fake_clock(void *arg)
{
	(void)arg;
	return fake_now;
}

static struct srv__authfail *af_new(unsigned max, uint64_t decay)
{
	struct srv__authfail *t = NULL;

	assert_int_equal(srv__authfail_new(max, decay, &t), 0);
	fake_now = 1000000;
	srv__authfail_set_clock(t, fake_clock, NULL);
	return t;
}

static void test_srv_authfail_growth(void **state)
{
	static const uint64_t want[] = {0,    0,    500,   1000,  2000,
					4000, 8000, 15000, 15000, 15000};
	struct srv__authfail *t = af_new(0, 60000);

	(void)state;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_int_equal(srv__authfail_delay_ms(t, "192.0.2.1"),
				 want[i]);
		srv__authfail_record(t, "192.0.2.1", false);
	}
	assert_int_equal(srv__authfail_total(t), 10);
	/* Another address is not slowed by the first one's failures. */
	assert_int_equal(srv__authfail_delay_ms(t, "192.0.2.2"), 0);
	assert_int_equal(srv__authfail_delay_ms(t, "2001:db8::1"), 0);
	assert_int_equal(srv__authfail_size(t), 1);
	/* Success forgets them all. */
	srv__authfail_record(t, "192.0.2.1", true);
	assert_int_equal(srv__authfail_delay_ms(t, "192.0.2.1"), 0);
	assert_int_equal(srv__authfail_size(t), 0);
	srv__authfail_record(t, "192.0.2.1", false);
	assert_int_equal(srv__authfail_delay_ms(t, "192.0.2.1"), 0);
	srv__authfail_record(t, "192.0.2.1", false);
	assert_int_equal(srv__authfail_delay_ms(t, "192.0.2.1"), 500);
	assert_int_equal(srv__authfail_total(t), 12);
	/* NULL and "" are ignored. */
	srv__authfail_record(t, NULL, false);
	srv__authfail_record(t, "", false);
	assert_int_equal(srv__authfail_delay_ms(t, NULL), 0);
	assert_int_equal(srv__authfail_total(t), 12);
	srv__authfail_free(&t);
	assert_null(t);
	srv__authfail_free(&t);
}

static void test_srv_authfail_decay(void **state)
{
	struct srv__authfail *t = af_new(0, 1000);

	(void)state;
	for (int i = 0; i < 5; i++)
		srv__authfail_record(t, "198.51.100.9", false);
	assert_int_equal(srv__authfail_delay_ms(t, "198.51.100.9"), 4000);
	fake_now += 999; /* not a whole period yet */
	assert_int_equal(srv__authfail_delay_ms(t, "198.51.100.9"), 4000);
	fake_now += 1; /* one forgotten */
	assert_int_equal(srv__authfail_delay_ms(t, "198.51.100.9"), 2000);
	fake_now += 2000; /* two more: 2 left */
	assert_int_equal(srv__authfail_delay_ms(t, "198.51.100.9"), 500);
	fake_now += 1000; /* 1 left */
	assert_int_equal(srv__authfail_delay_ms(t, "198.51.100.9"), 0);
	/* A failure now counts from what is left (1), not from 5. */
	srv__authfail_record(t, "198.51.100.9", false);
	assert_int_equal(srv__authfail_delay_ms(t, "198.51.100.9"), 500);
	assert_int_equal(srv__authfail_size(t), 1);
	fake_now += 10000; /* all gone: the entry goes too */
	assert_int_equal(srv__authfail_delay_ms(t, "198.51.100.9"), 0);
	assert_int_equal(srv__authfail_size(t), 0);
	srv__authfail_free(&t);

	/* The real clock: a short period passes in a real sleep. */
	assert_int_equal(srv__authfail_new(16, 50, &t), 0);
	for (int i = 0; i < 3; i++)
		srv__authfail_record(t, "203.0.113.5", false);
	assert_int_equal(srv__authfail_delay_ms(t, "203.0.113.5"), 1000);
	nanosleep(&(struct timespec){0, 120 * 1000 * 1000}, NULL);
	assert_true(srv__authfail_delay_ms(t, "203.0.113.5") <= 500);
	srv__authfail_free(&t);
}

static void test_srv_authfail_bound(void **state)
{
	struct srv__authfail *t = af_new(64, 60000);
	char ip[32];

	(void)state;
	for (int i = 0; i < 1000; i++) {
		snprintf(ip, sizeof(ip), "10.0.%d.%d", i / 256, i % 256);
		srv__authfail_record(t, ip, false);
		srv__authfail_record(t, ip, false);
		fake_now++;
	}
	assert_true(srv__authfail_size(t) <= 64);
	assert_true(srv__authfail_size(t) >= 32);
	assert_int_equal(srv__authfail_total(t), 2000);
	/* The newest address is still there; most old ones made room. */
	assert_int_equal(srv__authfail_delay_ms(t, ip), 500);
	{
		unsigned kept = 0;

		for (int i = 0; i < 500; i++) {
			snprintf(ip, sizeof(ip), "10.0.%d.%d", i / 256,
				 i % 256);
			kept += srv__authfail_delay_ms(t, ip) != 0;
		}
		assert_true(kept < 32);
	}
	/* A long key is cut, not refused, and still counts. */
	memset(ip, 'x', sizeof(ip) - 1);
	ip[sizeof(ip) - 1] = '\0';
	srv__authfail_record(t, ip, false);
	srv__authfail_record(t, ip, false);
	assert_int_equal(srv__authfail_delay_ms(t, ip), 500);
	srv__authfail_free(&t);
	assert_int_equal(srv__authfail_new(1u << 25, 0, &t), -EINVAL);
}

struct hammer {
	struct srv__authfail *t;
	int id;
};

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;
	char ip[32];

	for (int i = 0; i < 20000; i++) {
		snprintf(ip, sizeof(ip), "192.0.2.%d", (i + h->id) % 300);
		srv__authfail_record(h->t, ip, i % 7 == 0);
		(void)srv__authfail_delay_ms(h->t, ip);
	}
	return NULL;
}

static void test_srv_authfail_threads(void **state)
{
	struct srv__authfail *t = NULL;
	struct hammer h[3];
	pthread_t th[3];

	(void)state;
	assert_int_equal(srv__authfail_new(128, 0, &t), 0);
	for (int i = 0; i < 3; i++) {
		h[i] = (struct hammer){t, i * 13};
		assert_int_equal(
			pthread_create(&th[i], NULL, hammer_thread, &h[i]), 0);
	}
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	/* 20000 per thread, one in 7 a success. */
	assert_int_equal(srv__authfail_total(t), 3 * (20000 - 2858));
	assert_true(srv__authfail_size(t) <= 128);
	srv__authfail_free(&t);
}

static int group_teardown(void **state)
{
	(void)state;
	srv__sasl_done();
	remove_files();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
		T(test_srv_sasl_init),
		T(test_srv_sasl_ipport),
		T(test_srv_sasl_plaintext),
		T(test_srv_sasl_mechanisms),
		T(test_srv_sasl_exchange_errors),
		T(test_srv_sasl_over_socket),
		T(test_srv_authfail_growth),
		T(test_srv_authfail_decay),
		T(test_srv_authfail_bound),
		T(test_srv_authfail_threads),
#undef T
	};

	signal(SIGPIPE, SIG_IGN);
	t_require_loop();
	if (make_files() < 0) {
		remove_files();
		return 1;
	}
	return cmocka_run_group_tests_name("srv-sasl", tests, NULL,
					   group_teardown);
}
