/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * test/srv-auth: SASL on a runtime connection, end to end: a line
 * service authenticates over a real loopback socket against a sasldb
 * made by saslpasswd2, with PLAIN (initial response and challenge),
 * LOGIN-style plaintext checks, cancellation, and the failure delay
 * that grows per client address.
 */
#include "t-helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ringprot/buf.h>
#include <ringprot/server.h>

#define REALM "test"
#define USER  "alice"
#define PASS  "s3cret pass"

static char dir[64], sasldb[128];

static int make_sasldb(void)
{
	int p[2], st;
	pid_t pid;

	snprintf(dir, sizeof(dir), "/tmp/ringprot-srv-auth-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(sasldb, sizeof(sasldb), "%s/sasldb2", dir);
	if (access("/usr/sbin/saslpasswd2", X_OK) != 0 || pipe(p) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		dup2(p[0], 0);
		close(p[1]);
		execl("/usr/sbin/saslpasswd2", "saslpasswd2", "-c", "-p", "-f",
		      sasldb, "-u", REALM, USER, (char *)NULL);
		_exit(127);
	}
	close(p[0]);
	if (write(p[1], PASS, strlen(PASS)) < 0)
		st = -1;
	close(p[1]);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/* The service: "AUTH mech [initial]" or "LOGIN user pass" per line. */
static int send_challenge(struct srv_conn *c, const char *b64)
{
	if (prot_printf(c->out, "+ %s\r\n", b64) == EOF ||
	    prot_flush(c->out) == EOF)
		return prot_errno(c->out);
	return 0;
}

static ssize_t read_response(struct srv_conn *c, char *buf, size_t size)
{
	struct buf line = BUF_INITIALIZER;
	int n = srv_readline(c->in, &line, size - 1);

	if (n >= 0)
		memcpy(buf, line.s, (size_t)n + 1);
	free(line.s);
	return n;
}

static const struct srv_sasl_io io = {send_challenge, read_response};

static int auth_handler(struct srv_conn *c)
{
	struct buf line = BUF_INITIALIZER;
	const char *mechs = NULL, *user = NULL;
	int ret;

	ret = srv_conn_sasl_mechs(c, &mechs);
	prot_printf(c->out, "* %d %s\r\n", ret, ret >= 0 ? mechs : "");
	while ((ret = srv_readline(c->in, &line, 1000)) >= 0) {
		char *sp = strchr(line.s, ' '), *arg = NULL, *arg2 = NULL;

		if (sp != NULL) {
			*sp = '\0';
			arg = sp + 1;
			sp = strchr(arg, ' ');
			if (sp != NULL) {
				*sp = '\0';
				arg2 = sp + 1;
			}
		}
		if (strcmp(line.s, "AUTH") == 0 && arg != NULL)
			ret = srv_conn_authenticate(c, arg, arg2, &io, &user);
		else if (strcmp(line.s, "LOGIN") == 0 && arg2 != NULL)
			ret = srv_conn_login(c, arg, arg2, &user);
		else
			ret = -EINVAL;
		if (ret == 0)
			prot_printf(c->out, "OK %s\r\n", user);
		else
			prot_printf(c->out, "NO %d\r\n", ret);
	}
	free(line.s);
	return 0;
}

struct fixture {
	struct srv *s;
	pthread_t runner;
	uint16_t port;
};

static void *runner(void *arg)
{
	struct fixture *fx = arg;

	assert_int_equal(srv_run(fx->s, NULL), 0);
	return NULL;
}

static void fx_start(struct fixture *fx)
{
	struct srv_opts so = {.workers = 1};
	struct srv_service_opts svo = {.name = "auth",
				       .handler = auth_handler};
	struct srv_listen_opts lo = {.addr = "127.0.0.1:0"};
	struct srv_sasl_opts sa = {.sasldb_path = sasldb, .realm = REALM};
	struct srv_service *svc;
	struct sockaddr_storage ss;
	socklen_t len;
	const char *err = NULL;

	so.loop.backend = t_backend;
	so.loop.mode = t_mode;
	assert_int_equal(srv_new(&so, &fx->s), 0);
	assert_int_equal(srv_service_add(fx->s, &svo, &svc), 0);
	assert_int_equal(srv_listen(svc, &lo, &err), 0);
	assert_int_equal(srv_listen_addr(svc, 0, &ss, &len), 0);
	fx->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (srv_set_sasl(fx->s, &sa, &err) != 0)
		fail_msg("srv_set_sasl: %s", err);
	assert_int_equal(srv_start(fx->s), 0);
	assert_int_equal(pthread_create(&fx->runner, NULL, runner, fx), 0);
}

static void fx_stop(struct fixture *fx)
{
	srv_stop(fx->s);
	assert_int_equal(pthread_join(fx->runner, NULL), 0);
	srv_free(&fx->s);
}




/* base64 of "\0user\0pass" for PLAIN. */
static void plain_b64(const char *user, const char *pass, char *out)
{
	unsigned char raw[256];
	size_t ul = strlen(user), pl = strlen(pass);

	raw[0] = '\0';
	memcpy(raw + 1, user, ul);
	raw[1 + ul] = '\0';
	memcpy(raw + 2 + ul, pass, pl);
	EVP_EncodeBlock((unsigned char *)out, raw, (int)(2 + ul + pl));
}

static void test_srv_auth_plain(void **state)
{
	struct fixture fx;
	char buf[512], b64[512], cmd[600];
	int fd;

	(void)state;
	fx_start(&fx);
	fd = t_tcp_client(fx.port);
	t_recv_line(fd, buf, sizeof(buf));
	/* Loopback is secure: PLAIN is offered. */
	assert_non_null(strstr(buf, "PLAIN"));

	plain_b64(USER, PASS, b64);
	snprintf(cmd, sizeof(cmd), "AUTH PLAIN %s\r\n", b64);
	t_send_str(fd, cmd);
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)),
			    "OK " USER "@" REALM);

	/* Without an initial response (on a fresh connection: a success
	 * ends SASL on a connection): an empty challenge first. */
	close(fd);
	fd = t_tcp_client(fx.port);
	t_recv_line(fd, buf, sizeof(buf));
	t_send_str(fd, "AUTH PLAIN\r\n");
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "+ ");
	snprintf(cmd, sizeof(cmd), "%s\r\n", b64);
	t_send_str(fd, cmd);
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)),
			    "OK " USER "@" REALM);

	/* "*" cancels. */
	close(fd);
	fd = t_tcp_client(fx.port);
	t_recv_line(fd, buf, sizeof(buf));
	t_send_str(fd, "AUTH PLAIN\r\n*\r\n");
	t_recv_line(fd, buf, sizeof(buf));
	snprintf(cmd, sizeof(cmd), "NO %d", -ECANCELED);
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), cmd);

	/* Plaintext check. */
	t_send_str(fd, "LOGIN " USER " wrong\r\n");
	snprintf(cmd, sizeof(cmd), "NO %d", -EACCES);
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), cmd);
	close(fd);
	fx_stop(&fx);
}

/* Failures from one address are answered later and later. */
static void test_srv_auth_delay(void **state)
{
	struct fixture fx;
	char buf[512], b64[512], cmd[600], want[32];
	uint64_t t0, took[4];
	int fd;

	(void)state;
	fx_start(&fx);
	fd = t_tcp_client(fx.port);
	t_recv_line(fd, buf, sizeof(buf));
	plain_b64(USER, "bad", b64);
	snprintf(cmd, sizeof(cmd), "AUTH PLAIN %s\r\n", b64);
	snprintf(want, sizeof(want), "NO %d", -EACCES);
	for (int i = 0; i < 4; i++) {
		t0 = t_now_ms();
		t_send_str(fd, cmd);
		assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), want);
		took[i] = t_now_ms() - t0;
	}
	/* 0, 0, then 500 and 1000 ms at least. */
	assert_true(took[2] >= 450);
	assert_true(took[3] >= 950);
	/* A success forgets the failures. */
	plain_b64(USER, PASS, b64);
	snprintf(cmd, sizeof(cmd), "AUTH PLAIN %s\r\n", b64);
	t_send_str(fd, cmd);
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)),
			    "OK " USER "@" REALM);
	close(fd);
	fx_stop(&fx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_srv_auth_plain),
		cmocka_unit_test(test_srv_auth_delay),
	};
	int ret;

	t_require_loop();
	if (make_sasldb() != 0) {
		fprintf(stderr, "no sasldb: saslpasswd2 (sasl2-bin) failed\n");
		return 77;
	}
	ret = t_run_groups("srv-auth", tests, sizeof(tests) / sizeof(tests[0]));
	unlink(sasldb);
	rmdir(dir);
	return ret;
}
