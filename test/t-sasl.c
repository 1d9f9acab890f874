/* SPDX-License-Identifier: BSD-3-Clause */
/* test/t-sasl: sasldb in a temporary directory, conns, AUTHENTICATE. */
#include "t-sasl.h"

#include "t-helpers.h" /* stdarg, stddef, setjmp, cmocka: in that order */

#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sasl/saslutil.h>

#include <ringprot/prot-layer.h>

extern char **environ;

#define PASS "correct horse"

/* Lines and their base64 payloads: DIGEST-MD5 and SCRAM need far less. */
#define LINE_MAX_LEN 4096

static char tmpdir[64];
static char sasldb_path[128];
static char host[64];

static int getopt_cb(void *context, const char *plugin, const char *option,
		     const char **result, unsigned *len)
{
	(void)context;
	(void)plugin;
	if (strcmp(option, "sasldb_path") == 0)
		*result = sasldb_path;
	else if (strcmp(option, "pwcheck_method") == 0)
		*result = "auxprop";
	else if (strcmp(option, "auxprop_plugin") == 0)
		*result = "sasldb";
	else if (strcmp(option, "mech_list") == 0)
		*result = "DIGEST-MD5 PLAIN SCRAM-SHA-1";
	else if (strcmp(option, "reauth_timeout") == 0)
		*result = "0"; /* each test authenticates afresh */
	else
		return SASL_FAIL;
	if (len != NULL)
		*len = (unsigned)strlen(*result);
	return SASL_OK;
}

/* libsasl2 stores every callback as int (*)(void). */
#define SASL_FN(f) ((int (*)(void))(void (*)(void))(f))

static sasl_callback_t global_cbs[] = {
	{SASL_CB_GETOPT, SASL_FN(getopt_cb), NULL},
	{SASL_CB_LIST_END, NULL, NULL},
};

static int name_cb(void *context, int id, const char **result, unsigned *len)
{
	(void)context;
	if (id != SASL_CB_USER && id != SASL_CB_AUTHNAME)
		return SASL_FAIL;
	*result = T_SASL_USER;
	if (len != NULL)
		*len = (unsigned)strlen(T_SASL_USER);
	return SASL_OK;
}

static int pass_cb(sasl_conn_t *conn, void *context, int id,
		   sasl_secret_t **psecret)
{
	static union {
		sasl_secret_t s;
		char space[sizeof(sasl_secret_t) + sizeof(PASS)];
	} secret;

	(void)conn;
	(void)context;
	(void)id;
	secret.s.len = strlen(PASS);
	memcpy(secret.s.data, PASS, sizeof(PASS));
	*psecret = &secret.s;
	return SASL_OK;
}

static int realm_cb(void *context, int id, const char **availrealms,
		    const char **result)
{
	(void)context;
	(void)id;
	(void)availrealms;
	*result = T_SASL_REALM;
	return SASL_OK;
}

static sasl_callback_t client_cbs[] = {
	{SASL_CB_USER, SASL_FN(name_cb), NULL},
	{SASL_CB_AUTHNAME, SASL_FN(name_cb), NULL},
	{SASL_CB_PASS, SASL_FN(pass_cb), NULL},
	{SASL_CB_GETREALM, SASL_FN(realm_cb), NULL},
	{SASL_CB_LIST_END, NULL, NULL},
};

/* saslpasswd2 -p -c -f <db> -u REALM USER, the password on stdin. */
static int make_sasldb(void)
{
	char *argv[] = {"saslpasswd2", "-p",	    "-c",
			"-f",	       sasldb_path, "-u",
			T_SASL_REALM,  T_SASL_USER, NULL};
	static const char *const paths[] = {"/usr/sbin/saslpasswd2",
					    "/usr/bin/saslpasswd2"};
	posix_spawn_file_actions_t fa;
	int p[2], st;
	pid_t pid;
	const char *exe = NULL;

	for (int i = 0; i < 2; i++)
		if (access(paths[i], X_OK) == 0)
			exe = paths[i];
	if (exe == NULL || pipe(p) < 0)
		return -1;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[0], 0);
	posix_spawn_file_actions_addclose(&fa, p[1]);
	if (posix_spawn(&pid, exe, &fa, NULL, argv, environ) != 0)
		return -1;
	posix_spawn_file_actions_destroy(&fa);
	close(p[0]);
	if (write(p[1], PASS, strlen(PASS)) != (ssize_t)strlen(PASS))
		return -1;
	close(p[1]);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
	    WEXITSTATUS(st) != 0)
		return -1;
	return 0;
}

static void cleanup_sasldb(void)
{
	char path[160];

	unlink(sasldb_path);
	snprintf(path, sizeof(path), "%s-lock", sasldb_path);
	unlink(path);
	rmdir(tmpdir);
}

int t_sasl_init(const char *name)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/ringprot-%s-XXXXXX", name);
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return -1;
	}
	snprintf(sasldb_path, sizeof(sasldb_path), "%s/sasldb2", tmpdir);
	if (make_sasldb() < 0) {
		fprintf(stderr, "saslpasswd2 failed (sasl2-bin installed?)\n");
		cleanup_sasldb();
		return -1;
	}
	if (sasl_server_init(global_cbs, "ringprot-test") != SASL_OK ||
	    sasl_client_init(global_cbs) != SASL_OK) {
		fprintf(stderr, "sasl_server_init/sasl_client_init failed\n");
		cleanup_sasldb();
		return -1;
	}
	return 0;
}

void t_sasl_fini(void)
{
	sasl_done();
	cleanup_sasldb();
}

const char *t_sasl_next_host(void)
{
	static unsigned pairs;

	snprintf(host, sizeof(host), "h%u.%s", ++pairs, T_SASL_REALM);
	return host;
}

void t_sasl_server_new(const char *h, sasl_conn_t **conn_out)
{
	assert_int_equal(sasl_server_new("imap", h, T_SASL_REALM, NULL, NULL,
					 NULL, SASL_SUCCESS_DATA, conn_out),
			 SASL_OK);
}

void t_sasl_client_new(const char *h, sasl_conn_t **conn_out)
{
	assert_int_equal(
		sasl_client_new("imap", h, NULL, NULL, client_cbs, 0, conn_out),
		SASL_OK);
}

void t_sasl_set_props(sasl_conn_t *conn, unsigned min_ssf, unsigned max_ssf,
		      unsigned maxbuf)
{
	sasl_security_properties_t sp = {0};

	sp.min_ssf = min_ssf;
	sp.max_ssf = max_ssf;
	sp.maxbufsize = maxbuf != 0 ? maxbuf : 65536;
	assert_int_equal(sasl_setprop(conn, SASL_SEC_PROPS, &sp), SASL_OK);
}

int t_sasl_get_line(struct protstream *in, char *line, size_t size)
{
	size_t n;

	if (prot_fgets(line, (unsigned)size, in) == NULL)
		return -1;
	n = strlen(line);
	if (n < 2 || strcmp(line + n - 2, "\r\n") != 0)
		return -2;
	line[n - 2] = '\0';
	return 0;
}

/* One base64 line; the caller flushes. */
static int put_b64(struct protstream *out, const char *prefix, const char *data,
		   unsigned len)
{
	char b64[LINE_MAX_LEN];
	unsigned n = 0;

	if (sasl_encode64(data, len, b64, sizeof(b64), &n) != SASL_OK)
		return -1;
	return prot_printf(out, "%s%.*s\r\n", prefix, (int)n, b64) == 0 ? 0
									: -1;
}

int t_sasl_server_auth(struct protstream *in, struct protstream *out,
		       sasl_conn_t *conn, const char *tag)
{
	char line[LINE_MAX_LEN], dec[LINE_MAX_LEN], cmd[32];
	const char *data = NULL;
	unsigned datalen = 0, declen = 0;
	size_t cmdlen;
	int r;

	cmdlen = (size_t)snprintf(cmd, sizeof(cmd), "%s AUTHENTICATE ", tag);
	if (t_sasl_get_line(in, line, sizeof(line)) < 0 ||
	    strncmp(line, cmd, cmdlen) != 0)
		return -1;
	r = sasl_server_start(conn, line + cmdlen, NULL, 0, &data, &datalen);
	while (r == SASL_CONTINUE) {
		if (put_b64(out, "+ ", data, datalen) < 0 ||
		    prot_flush(out) != 0 ||
		    t_sasl_get_line(in, line, sizeof(line)) < 0)
			return -2;
		if (sasl_decode64(line, (unsigned)strlen(line), dec,
				  sizeof(dec), &declen) != SASL_OK)
			return -3;
		r = sasl_server_step(conn, dec, declen, &data, &datalen);
	}
	if (r != SASL_OK) {
		prot_printf(out, "%s NO %s\r\n", tag, sasl_errdetail(conn));
		prot_flush(out);
		return -4;
	}
	if (datalen > 0) {
		/* Success data (SCRAM): one more round, empty answer. */
		if (put_b64(out, "+ ", data, datalen) < 0 ||
		    prot_flush(out) != 0 ||
		    t_sasl_get_line(in, line, sizeof(line)) < 0)
			return -5;
	}
	/* Reply first, then the layer: RFC 9051 6.2.2, spec 2.15. */
	prot_printf(out, "%s OK authenticated\r\n", tag);
	return pl_sasl_activate(in, out, conn);
}

/*
 * The client knows it is in (rspauth checked): it sends its next command
 * protected at once, in the same packet as its last response.
 */
static int put_pipelined(struct protstream *out, sasl_conn_t *conn,
			 const char *cmd)
{
	const char *enc;
	unsigned enclen;

	if (sasl_encode(conn, cmd, (unsigned)strlen(cmd), &enc, &enclen) !=
		    SASL_OK ||
	    prot_write(out, enc, enclen) != 0)
		return -1;
	return 0;
}

int t_sasl_client_auth(struct protstream *in, struct protstream *out,
		       sasl_conn_t *conn, const char *tag, const char *mech,
		       const char *pipeline)
{
	char line[LINE_MAX_LEN], dec[LINE_MAX_LEN], ok[32];
	const char *data = NULL, *chosen = NULL;
	unsigned datalen = 0, declen = 0;
	bool first;
	int r;

	snprintf(ok, sizeof(ok), "%s OK authenticated", tag);
	r = sasl_client_start(conn, mech, NULL, &data, &datalen, &chosen);
	if (r != SASL_OK && r != SASL_CONTINUE)
		return -1;
	first = data != NULL; /* client-first: answer the empty challenge */
	prot_printf(out, "%s AUTHENTICATE %s\r\n", tag, mech);
	if (prot_flush(out) != 0)
		return -2;
	for (;;) {
		if (t_sasl_get_line(in, line, sizeof(line)) < 0)
			return -3;
		if (strcmp(line, ok) == 0)
			break;
		if (strncmp(line, "+ ", 2) != 0)
			return -4;
		if (first) {
			first = false;
			if (put_b64(out, "", data, datalen) < 0 ||
			    prot_flush(out) != 0)
				return -10;
			continue;
		}
		if (sasl_decode64(line + 2, (unsigned)strlen(line + 2), dec,
				  sizeof(dec), &declen) != SASL_OK)
			return -5;
		r = sasl_client_step(conn, dec, declen, NULL, &data, &datalen);
		if (r != SASL_OK && r != SASL_CONTINUE)
			return -6;
		if (put_b64(out, "", data, datalen) < 0)
			return -7;
		if (r == SASL_OK && pipeline != NULL &&
		    put_pipelined(out, conn, pipeline) < 0)
			return -8;
		if (prot_flush(out) != 0)
			return -9;
	}
	return pl_sasl_activate(in, out, conn);
}
