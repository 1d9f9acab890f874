/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * test/srv-core: the runtime end to end over real loopback sockets:
 * handlers on worker threads, limits with backpressure and refusal,
 * park and resume by input, wait event and notification, drain on stop.
 * The test thread is a plain blocking client; the server runs in its
 * own threads (srv_run on a helper thread).
 */
#include "t-helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <ringprot/buf.h>
#include <ringprot/server.h>

struct fixture {
	struct srv *s;
	struct srv_service *svc;
	pthread_t runner;
	int run_ret;
	uint16_t port;
};

static void *runner(void *arg)
{
	struct fixture *fx = arg;

	fx->run_ret = srv_run(fx->s, NULL);
	return NULL;
}

static void fx_start(struct fixture *fx, const struct srv_opts *so_in,
		     const struct srv_service_opts *svo,
		     const struct srv_listen_opts *lo_in)
{
	struct srv_opts so = so_in != NULL ? *so_in : (struct srv_opts){0};
	struct srv_listen_opts lo =
		lo_in != NULL ? *lo_in :
				(struct srv_listen_opts){.addr = "127.0.0.1:0"};
	struct sockaddr_storage ss;
	socklen_t len;
	const char *err = NULL;

	memset(fx, 0, sizeof(*fx));
	if (so.workers == 0)
		so.workers = 2;
	so.loop.backend = t_backend;
	so.loop.mode = t_mode;
	assert_int_equal(srv_new(&so, &fx->s), 0);
	assert_int_equal(srv_service_add(fx->s, svo, &fx->svc), 0);
	if (srv_listen(fx->svc, &lo, &err) != 0)
		fail_msg("srv_listen: %s", err);
	assert_int_equal(srv_listen_addr(fx->svc, 0, &ss, &len), 0);
	if (ss.ss_family == AF_INET)
		fx->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	assert_int_equal(srv_start(fx->s), 0);
	assert_int_equal(pthread_create(&fx->runner, NULL, runner, fx), 0);
}

static void fx_stop(struct fixture *fx)
{
	srv_stop(fx->s);
	assert_int_equal(pthread_join(fx->runner, NULL), 0);
	assert_int_equal(fx->run_ret, 0);
	srv_free(&fx->s);
}





/*
 * A line service: "echo X" answers X, "park" parks the connection
 * (then answers "woke <reasons>" when resumed), "event" adds a wait
 * event 200 ms ahead before parking, "quit" ends.
 */
static atomic_int parked_conns;
static struct srv_conn *last_parked;
static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;

static int line_loop(struct srv_conn *c);

static struct prot_waitevent *on_event(struct protstream *s,
				       struct prot_waitevent *ev, void *rock)
{
	struct srv_conn *c = rock;

	prot_printf(c->out, "event ran\r\n");
	prot_removewaitevent(s, ev);
	return NULL;
}

static int resumed(struct srv_conn *c, unsigned wake)
{
	atomic_fetch_sub(&parked_conns, 1);
	prot_printf(c->out, "woke%s%s%s%s\r\n",
		    wake & SRV_WAKE_INPUT ? " input" : "",
		    wake & SRV_WAKE_EVENT ? " event" : "",
		    wake & SRV_WAKE_NOTIFY ? " notify" : "",
		    wake & SRV_WAKE_SHUTDOWN ? " shutdown" : "");
	if (wake & SRV_WAKE_SHUTDOWN)
		return 0;
	return line_loop(c);
}

static int line_loop(struct srv_conn *c)
{
	struct buf line = BUF_INITIALIZER;
	int ret;

	for (;;) {
		ret = srv_readline(c->in, &line, 64);
		if (ret == -EMSGSIZE) {
			prot_printf(c->out, "too long\r\n");
			continue;
		}
		if (ret < 0)
			break;
		if (strncmp(line.s, "echo ", 5) == 0) {
			prot_printf(c->out, "%s\r\n", line.s + 5);
		} else if (strcmp(line.s, "park") == 0 ||
			   strcmp(line.s, "event") == 0) {
			if (line.s[0] == 'e')
				assert_non_null(prot_addwaitevent(
					c->in, time(NULL), on_event, c));
			pthread_mutex_lock(&parked_lock);
			if (last_parked != NULL)
				srv_conn_unref(&last_parked);
			srv_conn_ref(c);
			last_parked = c;
			pthread_mutex_unlock(&parked_lock);
			prot_printf(c->out, "parking\r\n");
			atomic_fetch_add(&parked_conns, 1);
			free(line.s);
			return srv_park(c, resumed);
		} else if (strcmp(line.s, "whoami") == 0) {
			prot_printf(c->out, "%s %s\r\n", c->peer_ip,
				    c->secure ? "secure" : "plain");
		} else if (strcmp(line.s, "quit") == 0) {
			prot_printf(c->out, "bye\r\n");
			ret = 0;
			break;
		} else {
			prot_printf(c->out, "what?\r\n");
		}
	}
	free(line.s);
	return ret == -ENOTCONN ? 0 : ret;
}

static int line_handler(struct srv_conn *c)
{
	prot_printf(c->out, "hello %llu\r\n", (unsigned long long)c->id);
	return line_loop(c);
}

static const struct srv_service_opts line_service = {
	.name = "line",
	.handler = line_handler,
};

static void test_srv_echo_lines(void **state)
{
	struct fixture fx;
	char buf[256];
	int fds[16];

	(void)state;
	fx_start(&fx, NULL, &line_service, NULL);
	for (int i = 0; i < 16; i++) {
		fds[i] = t_tcp_client(fx.port);
		assert_int_equal(strncmp(t_recv_line(fds[i], buf, sizeof(buf)),
					 "hello ", 6),
				 0);
	}
	for (int i = 0; i < 16; i++) {
		char msg[64];

		snprintf(msg, sizeof(msg), "echo client %d\r\n", i);
		t_send_str(fds[i], msg);
	}
	for (int i = 0; i < 16; i++) {
		char want[64];

		snprintf(want, sizeof(want), "client %d", i);
		assert_string_equal(t_recv_line(fds[i], buf, sizeof(buf)), want);
	}
	t_send_str(fds[0], "whoami\r\n");
	assert_string_equal(t_recv_line(fds[0], buf, sizeof(buf)),
			    "127.0.0.1 secure");
	/* An over-long line is answered, and the next one still works. */
	memset(buf, 'x', 200);
	buf[200] = '\0';
	t_send_str(fds[1], buf);
	t_send_str(fds[1], "\r\necho after\r\n");
	assert_string_equal(t_recv_line(fds[1], buf, sizeof(buf)), "too long");
	assert_string_equal(t_recv_line(fds[1], buf, sizeof(buf)), "after");
	for (int i = 0; i < 16; i++) {
		t_send_str(fds[i], "quit\r\n");
		assert_string_equal(t_recv_line(fds[i], buf, sizeof(buf)),
				    "bye");
		assert_true(t_closed_within(fds[i], 5000));
		close(fds[i]);
	}
	fx_stop(&fx);
}

/* Wait (up to 2 s) until n connections are parked; fail otherwise. */
static void wait_parked(struct srv *s, uint64_t n)
{
	struct srv_stats st;

	for (int i = 0; i < 200; i++) {
		srv_stats(s, &st);
		if (st.conns_parked == n)
			return;
		usleep(10000);
	}
	assert_int_equal(st.conns_parked, n);
}

static void test_srv_park_resume(void **state)
{
	struct fixture fx;
	char buf[256];
	int fd;

	(void)state;
	fx_start(&fx, NULL, &line_service, NULL);
	fd = t_tcp_client(fx.port);
	t_recv_line(fd, buf, sizeof(buf));

	/* Input wakes it. */
	t_send_str(fd, "park\r\n");
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "parking");
	wait_parked(fx.s, 1);
	t_send_str(fd, "echo a\r\n");
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "woke input");
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "a");

	/* A notification wakes it. */
	t_send_str(fd, "park\r\n");
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "parking");
	wait_parked(fx.s, 1);
	pthread_mutex_lock(&parked_lock);
	assert_int_equal(srv_conn_notify(last_parked), 0);
	pthread_mutex_unlock(&parked_lock);
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "woke notify");

	/* A wait event wakes it: its callback runs, then resume. */
	t_send_str(fd, "event\r\n");
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "parking");
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "event ran");
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "woke event");

	/* Shutdown wakes the parked with SRV_WAKE_SHUTDOWN. */
	t_send_str(fd, "park\r\n");
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "parking");
	wait_parked(fx.s, 1);
	srv_stop(fx.s);
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)),
			    "woke shutdown");
	assert_true(t_closed_within(fd, 5000));
	close(fd);
	pthread_mutex_lock(&parked_lock);
	assert_int_equal(srv_conn_notify(last_parked), -ENOTCONN);
	srv_conn_unref(&last_parked);
	pthread_mutex_unlock(&parked_lock);
	fx_stop(&fx);
}

/* A resume that always parks again, even when told to stop. */
static int stubborn_resume(struct srv_conn *c, unsigned wake)
{
	(void)wake;
	return srv_park(c, stubborn_resume);
}

static int stubborn_handler(struct srv_conn *c)
{
	prot_printf(c->out, "parking\r\n");
	return srv_park(c, stubborn_resume);
}

/* The stop closes it after its goodbye instead of spinning. */
static void test_srv_park_stubborn(void **state)
{
	struct srv_service_opts svo = {.name = "stubborn",
				       .handler = stubborn_handler};
	struct fixture fx;
	char buf[64];
	int fd;

	(void)state;
	fx_start(&fx, NULL, &svo, NULL);
	fd = t_tcp_client(fx.port);
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "parking");
	t_send_str(fd, "ignored\r\n"); /* input it never reads: no spin */
	usleep(100000);
	srv_stop(fx.s);
	assert_true(t_closed_within(fd, 5000));
	close(fd);
	fx_stop(&fx);
}

/* A parked connection still has its idle timeout. */
static void test_srv_park_idle_timeout(void **state)
{
	struct srv_service_opts svo = line_service;
	struct fixture fx;
	char buf[256];
	uint64_t t0;
	int fd;

	(void)state;
	svo.idle_timeout_s = 1;
	fx_start(&fx, NULL, &svo, NULL);
	fd = t_tcp_client(fx.port);
	t_recv_line(fd, buf, sizeof(buf));
	t_send_str(fd, "park\r\n");
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "parking");
	t0 = t_now_ms();
	/* Resumed at the deadline; its read fails: the server closes. */
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "woke input");
	assert_true(t_closed_within(fd, 5000));
	assert_true(t_now_ms() - t0 >= 500);
	close(fd);
	pthread_mutex_lock(&parked_lock);
	srv_conn_unref(&last_parked);
	pthread_mutex_unlock(&parked_lock);
	fx_stop(&fx);
}

/*
 * max_conns without a busy reply: client N+1 waits, then is served. One
 * worker: with several, an accept another worker armed before it heard
 * of the limit may still take (and serve) one more.
 */
static void test_srv_backpressure(void **state)
{
	struct srv_service_opts svo = line_service;
	struct srv_opts so = {.workers = 1};
	struct fixture fx;
	char buf[256];
	int a, b, c;

	(void)state;
	svo.max_conns = 2;
	fx_start(&fx, &so, &svo, NULL);
	a = t_tcp_client(fx.port);
	b = t_tcp_client(fx.port);
	t_recv_line(a, buf, sizeof(buf));
	t_recv_line(b, buf, sizeof(buf));
	c = t_tcp_client(fx.port); /* in the backlog */
	{
		struct pollfd p = {.fd = c, .events = POLLIN};

		assert_int_equal(poll(&p, 1, 300), 0); /* no greeting yet */
	}
	t_send_str(a, "quit\r\n");
	t_recv_line(a, buf, sizeof(buf));
	close(a);
	assert_int_equal(strncmp(t_recv_line(c, buf, sizeof(buf)), "hello", 5),
			 0);
	close(b);
	close(c);
	fx_stop(&fx);
}

/* Per-IP limit with a busy reply: the extra client is told and closed. */
static void test_srv_per_ip_refused(void **state)
{
	struct srv_service_opts svo = line_service;
	struct fixture fx;
	struct srv_stats st;
	char buf[256];
	int a, b;

	(void)state;
	svo.max_conns_per_ip = 1;
	svo.busy_reply = "busy\r\n";
	fx_start(&fx, NULL, &svo, NULL);
	a = t_tcp_client(fx.port);
	t_recv_line(a, buf, sizeof(buf));
	b = t_tcp_client(fx.port);
	assert_string_equal(t_recv_line(b, buf, sizeof(buf)), "busy");
	assert_true(t_closed_within(b, 5000));
	close(b);
	t_send_str(a, "echo still\r\n");
	assert_string_equal(t_recv_line(a, buf, sizeof(buf)), "still");
	close(a);
	srv_stats(fx.s, &st);
	assert_int_equal(st.refused, 1);
	fx_stop(&fx);
}

/* A handler that sleeps: stop waits for it up to drain_ms, then cancels
 * it (its blocking calls then fail: the client sees the close). */
static int slow_handler(struct srv_conn *c)
{
	int ret;

	prot_printf(c->out, "working\r\n");
	prot_flush(c->out);
	ret = ur_sleep_until(CLOCK_MONOTONIC,
			     ur_now_ns(CLOCK_MONOTONIC) + 300000000ull);
	prot_printf(c->out, ret == 0 ? "done\r\n" : "cancelled\r\n");
	return 0;
}

static void test_srv_drain(void **state)
{
	struct srv_service_opts svo = {.name = "slow",
				       .handler = slow_handler};
	struct srv_opts so = {.drain_ms = 2000};
	struct fixture fx;
	char buf[64];
	int fd;

	(void)state;
	fx_start(&fx, &so, &svo, NULL);
	fd = t_tcp_client(fx.port);
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "working");
	srv_stop(fx.s);
	/* In-flight work finishes: the client sees its answer. */
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "done");
	close(fd);
	fx_stop(&fx);

	/* A drain deadline shorter than the work cancels it. */
	so.drain_ms = 50;
	fx_start(&fx, &so, &svo, NULL);
	fd = t_tcp_client(fx.port);
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "working");
	srv_stop(fx.s);
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "");
	assert_true(t_closed_within(fd, 5000));
	close(fd);
	fx_stop(&fx);
}

/* A Unix socket listener with its mode; a bad address is refused. */
static void test_srv_unix_and_errors(void **state)
{
	struct srv_listen_opts lo = {.unix_mode = 0600};
	struct srv_service *svc;
	struct fixture fx;
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	struct stat st;
	const char *err = NULL;
	struct srv *s;
	char path[64], addr[80], buf[64];
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/t-srv-%d.sock", (int)getpid());
	snprintf(addr, sizeof(addr), "unix:%s", path);
	lo.addr = addr;
	fx_start(&fx, NULL, &line_service, &lo);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	strcpy(a.sun_path, path);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(strncmp(t_recv_line(fd, buf, sizeof(buf)), "hello", 5),
			 0);
	t_send_str(fd, "whoami\r\n");
	assert_string_equal(t_recv_line(fd, buf, sizeof(buf)), "unix secure");
	close(fd);
	fx_stop(&fx);
	assert_int_not_equal(stat(path, &st), 0); /* removed at free */

	assert_int_equal(srv_new(&(struct srv_opts){.workers = 1}, &s), 0);
	assert_int_equal(srv_service_add(s, &line_service, &svc), 0);
	assert_int_equal(srv_service_add(s, &line_service, NULL), -EEXIST);
	assert_int_equal(
		srv_listen(svc, &(struct srv_listen_opts){.addr = "nope"}, &err),
		-EINVAL);
	assert_non_null(strstr(err, "nope"));
	assert_int_equal(srv_listen(svc,
				    &(struct srv_listen_opts){
					    .addr = "127.0.0.1:99999"},
				    &err),
			 -EINVAL);
	assert_int_equal(srv_start(s), -EDESTADDRREQ);
	srv_free(&s);
}

/* A port in use is an error at srv_listen, naming the address. */
static void test_srv_port_in_use(void **state)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	struct srv_service *svc;
	const char *err = NULL;
	struct srv *s;
	char addr[64];
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	(void)state;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 1), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(a.sin_port));
	assert_int_equal(srv_new(&(struct srv_opts){.workers = 1}, &s), 0);
	assert_int_equal(srv_service_add(s, &line_service, &svc), 0);
	assert_int_equal(
		srv_listen(svc, &(struct srv_listen_opts){.addr = addr}, &err),
		-EADDRINUSE);
	assert_non_null(strstr(err, "in use"));
	srv_free(&s);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_srv_echo_lines),
		cmocka_unit_test(test_srv_park_resume),
		cmocka_unit_test(test_srv_park_idle_timeout),
		cmocka_unit_test(test_srv_park_stubborn),
		cmocka_unit_test(test_srv_backpressure),
		cmocka_unit_test(test_srv_per_ip_refused),
		cmocka_unit_test(test_srv_drain),
		cmocka_unit_test(test_srv_unix_and_errors),
		cmocka_unit_test(test_srv_port_in_use),
	};

	t_require_loop();
	return t_run_groups("srv-core", tests, sizeof(tests) / sizeof(tests[0]));
}
