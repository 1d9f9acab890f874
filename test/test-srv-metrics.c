/* SPDX-License-Identifier: BSD-3-Clause */
/* test/srv-metrics: lock-free shards, Prometheus text, the /metrics GET. */
#include "t-helpers.h"

#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <ringprot/prot.h>
#include <ringprot/srv-log.h>

static const char *const services[] = {"imap", "we\"ird\\x\n"};

static struct srv__metrics *metrics_new2(void)
{
	struct srv__metrics *m = NULL;

	assert_int_equal(srv__metrics_new(2, services, 2, &m), 0);
	assert_non_null(m);
	return m;
}

static char *render(const struct srv__metrics *m)
{
	struct buf b = BUF_INITIALIZER;

	assert_int_equal(srv__metrics_render(m, &b), 0);
	assert_non_null(b.s);
	assert_int_equal(strlen(b.s), b.len);
	return b.s;
}

static void assert_has(const char *text, const char *line)
{
	if (text == NULL || strstr(text, line) == NULL) {
		fputs(text ? text : "(no text)\n", stderr);
		fail_msg("missing \"%s\" in the text above", line);
	}
}

/* ------------------------------------------------------------------ */
/* Shards. */

#define BUMPS 200000

struct bumper {
	struct srv__metrics *m;
	unsigned w;
	atomic_int *renders; /* start once the reader has rendered */
};

static void *bumper_main(void *arg)
{
	struct bumper *b = arg;
	struct srv__metrics_shard *s = srv__metrics_shard(b->m, b->w);

	while (atomic_load(b->renders) == 0)
		sched_yield();
	for (int i = 0; i < BUMPS; i++) {
		srv__metric_inc(s, 0, SRV__M_ACCEPTS);
		srv__metric_add(s, 1, SRV__M_BYTES_IN, 10);
		srv__metric_worker_add(s, SRV__M_RING_ENOBUFS, 1);
	}
	return NULL;
}

struct reader {
	struct srv__metrics *m;
	atomic_int stop;
	atomic_int renders;
	int regressions; /* a counter that went backwards */
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	int64_t last = 0, now;

	while (!atomic_load(&r->stop)) {
		struct buf b = BUF_INITIALIZER;

		if (srv__metrics_render(r->m, &b) == 0)
			atomic_fetch_add(&r->renders, 1);
		free(b.s);
		now = srv__metrics_total(r->m, 0, SRV__M_ACCEPTS);
		if (now < last)
			r->regressions++;
		last = now;
	}
	return NULL;
}

/* Two workers bump their own shards while a third thread renders. */
static void test_srv_metrics_shards_sum(void **state)
{
	struct srv__metrics *m = metrics_new2();
	struct reader r = {.m = m};
	struct bumper b[2] = {{m, 0, &r.renders}, {m, 1, &r.renders}};
	pthread_t th[2], rd;

	(void)state;
	assert_null(srv__metrics_shard(m, 2));
	assert_int_equal(pthread_create(&rd, NULL, reader_main, &r), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(
			pthread_create(&th[i], NULL, bumper_main, &b[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	atomic_store(&r.stop, 1);
	assert_int_equal(pthread_join(rd, NULL), 0);
	assert_true(atomic_load(&r.renders) > 0);
	assert_int_equal(r.regressions, 0);
	assert_int_equal(srv__metrics_total(m, 0, SRV__M_ACCEPTS), 2 * BUMPS);
	assert_int_equal(srv__metrics_total(m, 1, SRV__M_ACCEPTS), 0);
	assert_int_equal(srv__metrics_total(m, -1, SRV__M_BYTES_IN),
			 20 * BUMPS);
	assert_int_equal(srv__metrics_worker_total(m, SRV__M_RING_ENOBUFS),
			 2 * BUMPS);
	srv__metrics_free(&m);
	assert_null(m);
	srv__metrics_free(&m);
}

static void test_srv_metrics_new_errors(void **state)
{
	struct srv__metrics *m = NULL;

	(void)state;
	assert_int_equal(srv__metrics_new(0, NULL, 0, &m), -EINVAL);
	assert_int_equal(srv__metrics_new(1, NULL, 2, &m), -EINVAL);
	assert_null(m);
}

/* ------------------------------------------------------------------ */
/* Rendering. */

static void test_srv_metrics_render_text(void **state)
{
	struct srv__metrics *m = metrics_new2();
	struct srv__metrics_shard *s0 = srv__metrics_shard(m, 0);
	struct srv__metrics_shard *s1 = srv__metrics_shard(m, 1);
	struct ur_loop_stats st;
	char line[128], *text;

	srv__metric_inc(s0, 0, SRV__M_ACCEPTS);
	srv__metric_inc(s1, 0, SRV__M_ACCEPTS);
	srv__metric_inc(s1, 1, SRV__M_AUTH_FAILURE);
	/* A gauge raised on one worker and lowered on the other. */
	srv__metric_inc(s0, 0, SRV__M_CONNECTIONS_OPEN);
	srv__metric_inc(s0, 0, SRV__M_CONNECTIONS_OPEN);
	srv__metric_dec(s1, 0, SRV__M_CONNECTIONS_OPEN);
	srv__metric_dec(s1, 1, SRV__M_CONNECTIONS_PARKED);
	/* A real loop's statistics, published by its worker. */
	ur_loop_stats(t_loop_of(state), &st);
	st.enters += 5; /* make sure it is not all zeros */
	srv__metrics_publish_ring(s1, &st);

	text = render(m);
	assert_has(text,
		   "# HELP ringprot_accepts_total Connections "
		   "accepted.\n# TYPE ringprot_accepts_total counter\n"
		   "ringprot_accepts_total{service=\"imap\"} 2\n"
		   "ringprot_accepts_total{service=\"we\\\"ird\\\\x\\n\"} "
		   "0\n");
	assert_has(text, "# TYPE ringprot_connections_open gauge\n"
			 "ringprot_connections_open{service=\"imap\"} 1\n");
	assert_has(text, "ringprot_connections_parked{service=\"we\\\"ird"
			 "\\\\x\\n\"} -1\n");
	assert_has(text, "ringprot_auth_failure_total{service=\"we\\\"ird"
			 "\\\\x\\n\"} 1\n");
	assert_has(text, "# TYPE ringprot_ring_enters_total counter\n"
			 "ringprot_ring_enters_total{worker=\"0\"} 0\n");
	snprintf(line, sizeof(line),
		 "ringprot_ring_enters_total{worker=\"1\"} %llu\n",
		 (unsigned long long)st.enters);
	assert_has(text, line);
	snprintf(line, sizeof(line),
		 "ringprot_fiber_stacks_mapped{worker=\"1\"} %llu\n",
		 (unsigned long long)st.stacks_mapped);
	assert_has(text, line);
	assert_has(text, "# TYPE ringprot_log_dropped_total counter\n");
	free(text);
	srv__metrics_free(&m);

	/* No services: series without a service label. */
	assert_int_equal(srv__metrics_new(1, NULL, 0, &m), 0);
	srv__metric_inc(srv__metrics_shard(m, 0), 0, SRV__M_TIMEOUTS);
	text = render(m);
	assert_has(text, "\nringprot_timeouts_total 1\n");
	free(text);
	srv__metrics_free(&m);
}

/* Rendering appends, and copies a borrowed buffer first. */
static void test_srv_metrics_render_appends(void **state)
{
	struct srv__metrics *m = metrics_new2();
	char borrowed[] = "# prefix\n";
	struct buf b = {borrowed, strlen(borrowed), 0, 0};

	(void)state;
	assert_int_equal(srv__metrics_render(m, &b), 0);
	assert_true(b.s != borrowed);
	assert_true(b.alloc > b.len);
	assert_memory_equal(b.s, "# prefix\n# HELP ", 16);
	assert_string_equal(borrowed, "# prefix\n");
	free(b.s);
	srv__metrics_free(&m);
}

static void test_srv_metrics_dump_line(void **state)
{
	struct srv__metrics *m = metrics_new2();
	struct srv_log_opts o = {.target = SRV_LOG_FD};
	char text[4096];
	ssize_t n;
	int fds[2];

	(void)state;
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	o.fd = fds[1];
	assert_int_equal(srv_log_open(&o), 0);
	srv__metric_add(srv__metrics_shard(m, 1), 1, SRV__M_BYTES_OUT, 7);
	srv__metric_add(srv__metrics_shard(m, 0), 0, SRV__M_BYTES_OUT, 5);
	srv__metrics_log(m);
	srv_log_close();
	close(fds[1]);
	n = read(fds[0], text, sizeof(text) - 1);
	close(fds[0]);
	assert_true(n > 0);
	text[n] = '\0';
	assert_non_null(strstr(text, " level=info event=metrics "
				     "connections_open=0 "));
	assert_non_null(strstr(text, " bytes_out_total=12 "));
	assert_non_null(strstr(text, " ring_enobufs_total=0 "));
	assert_null(strstr(text, "truncated"));
	assert_non_null(strchr(text, '\n'));
	assert_int_equal(strchr(text, '\n')[1], '\0');
	srv__metrics_free(&m);
}

/* ------------------------------------------------------------------ */
/* HTTP over raw sockets: the request is written whole first. */

struct http_res {
	int ret;
	char text[65536];
	size_t len;
};

static int render_fail(struct buf *out, void *rock)
{
	(void)out;
	(void)rock;
	return -ENOMEM;
}

static void http_raw(const char *req, size_t len, bool eof,
		     srv__metrics_render_fn *fn, void *rock, struct http_res *r)
{
	struct protstream *in, *out;
	ssize_t n;
	int sv[2];

	t_tcp_pair(sv);
	assert_int_equal(write(sv[1], req, len), (ssize_t)len);
	if (eof)
		assert_int_equal(shutdown(sv[1], SHUT_WR), 0);
	in = prot_new(sv[0], 0);
	out = prot_new(sv[0], 1);
	assert_non_null(in);
	assert_non_null(out);
	assert_int_equal(prot_settimeout(in, 2), 0);
	r->ret = srv__metrics_http(in, out, fn, rock);
	prot_free(in);
	prot_free(out);
	assert_int_equal(shutdown(sv[0], SHUT_WR), 0);
	r->len = 0;
	while ((n = read(sv[1], r->text + r->len,
			 sizeof(r->text) - 1 - r->len)) > 0)
		r->len += (size_t)n;
	r->text[r->len] = '\0';
	close(sv[0]);
	close(sv[1]);
}

static struct http_res res; /* large: off the stack */

static void expect_status(const char *req, int status)
{
	struct srv__metrics *m = metrics_new2();
	char want[32];

	http_raw(req, strlen(req), false, srv__metrics_render_cb, m, &res);
	if (res.ret != status)
		fail_msg("%s: status %d, want %d", req, res.ret, status);
	snprintf(want, sizeof(want), "HTTP/1.1 %d ", status);
	assert_memory_equal(res.text, want, strlen(want));
	assert_has(res.text, "\r\nConnection: close\r\n");
	srv__metrics_free(&m);
}

static void test_srv_metrics_http_statuses(void **state)
{
	char big[2048], many[64 * 8 + 128];

	(void)state;
	expect_status("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200);
	expect_status("\r\nGET /metrics?debug=1 HTTP/1.0\r\n\r\n", 200);
	expect_status("GET http://h:9/metrics HTTP/1.1\n\n", 200);
	expect_status("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404);
	expect_status("GET /metrics/x HTTP/1.1\r\n\r\n", 404);
	expect_status("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
		      405);
	assert_has(res.text, "\r\nAllow: GET, HEAD\r\n");
	expect_status("BLAH\r\n\r\n", 400);
	expect_status("GET /metrics HTTP/2.0\r\n\r\n", 400);
	expect_status("GET /metrics\r\n\r\n", 400);
	expect_status("GET  /metrics HTTP/1.1\r\n\r\n", 400);
	expect_status("GET metrics HTTP/1.1\r\n\r\n", 400);
	expect_status("GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n", 400);
	expect_status("GET /metrics HTTP/1.1\r\nA : b\r\n\r\n", 400);
	expect_status("GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400);
	expect_status("GET /metrics HTTP/1.1\r\nA: b\rc\r\n\r\n", 400);
	expect_status("GET /m\x01trics HTTP/1.1\r\n\r\n", 400);
	expect_status("G\xc3\xa9T /metrics HTTP/1.1\r\n\r\n", 400);

	/* Oversized request line and too many header lines. */
	memset(big, 'a', sizeof(big));
	memcpy(big, "GET /", 5);
	memcpy(big + sizeof(big) - 16, " HTTP/1.1\r\n\r\n", 14);
	big[sizeof(big) - 2] = '\0';
	expect_status(big, 400);
	strcpy(many, "GET /metrics HTTP/1.1\r\n");
	for (int i = 0; i < 65; i++)
		strcat(many, "X-A: b\r\n");
	strcat(many, "\r\n");
	expect_status(many, 400);
}

static void test_srv_metrics_http_nul_and_head(void **state)
{
	static const char nul[] = "GET /met\0rics HTTP/1.1\r\n\r\n";
	struct srv__metrics *m = metrics_new2();

	(void)state;
	http_raw(nul, sizeof(nul) - 1, false, srv__metrics_render_cb, m, &res);
	assert_int_equal(res.ret, 400);

	/* HEAD: the GET's headers, no body. */
	http_raw("HEAD /metrics HTTP/1.1\r\n\r\n", 26, false,
		 srv__metrics_render_cb, m, &res);
	assert_int_equal(res.ret, 200);
	assert_has(res.text, "Content-Type: text/plain; version=0.0.4; "
			     "charset=utf-8\r\n");
	assert_int_equal(strcmp(res.text + res.len - 4, "\r\n\r\n"), 0);
	assert_null(strstr(res.text, "# HELP"));

	/* The render callback failing: 500. */
	http_raw("GET /metrics HTTP/1.1\r\n\r\n", 25, false, render_fail, NULL,
		 &res);
	assert_int_equal(res.ret, 500);
	assert_memory_equal(res.text, "HTTP/1.1 500 ", 13);
	srv__metrics_free(&m);
}

/* An incomplete head: EOF or the read timeout, and no answer at all. */
static void test_srv_metrics_http_incomplete(void **state)
{
	struct srv__metrics *m = metrics_new2();
	uint64_t t0;

	(void)state;
	http_raw("", 0, true, srv__metrics_render_cb, m, &res);
	assert_int_equal(res.ret, -EPIPE);
	assert_int_equal(res.len, 0);
	http_raw("GET /metrics HTTP/1.1\r\nHost: x\r\n", 33, true,
		 srv__metrics_render_cb, m, &res);
	assert_int_equal(res.ret, -EPIPE);
	assert_int_equal(res.len, 0);
	/* A bad head cut short still gets its 400. */
	http_raw("BLAH\r\nHost: x\r\n", 15, true, srv__metrics_render_cb, m,
		 &res);
	assert_int_equal(res.ret, 400);
	/* No EOF: the stream's 2 s read timeout ends it. */
	t0 = t_now_ms();
	http_raw("GET /metrics HTTP/1.1\r\n", 23, false, srv__metrics_render_cb,
		 m, &res);
	assert_int_equal(res.ret, -EPIPE);
	assert_int_equal(res.len, 0);
	assert_true(t_now_ms() - t0 >= 1000);
	srv__metrics_free(&m);
}

/* ------------------------------------------------------------------ */
/* A real client (curl) and the reference parser (prometheus_client). */

static pid_t spawn(char *const argv[], const char *out_path)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		if (out_path != NULL) {
			int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC,
				      0644);

			if (fd < 0 || dup2(fd, 1) < 0)
				_exit(126);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static int wait_exit(pid_t pid)
{
	int status;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static char *slurp(const char *path)
{
	static char text[65536];
	ssize_t n;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	assert_true(n >= 0);
	text[n] = '\0';
	return text;
}

/* Serve one connection on lfd with srv__metrics_http; returns its result. */
static int serve_one(int lfd, struct srv__metrics *m)
{
	struct protstream *in, *out;
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC), ret;

	assert_true(fd >= 0);
	in = prot_new(fd, 0);
	out = prot_new(fd, 1);
	assert_non_null(in);
	assert_non_null(out);
	assert_int_equal(prot_settimeout(in, 10), 0);
	ret = srv__metrics_http(in, out, srv__metrics_render_cb, m);
	prot_free(in);
	prot_free(out);
	shutdown(fd, SHUT_WR);
	close(fd);
	return ret;
}

static void test_srv_metrics_http_curl_and_parser(void **state)
{
	const char *parser = getenv("T_PROM_PARSE");
	struct srv__metrics *m = metrics_new2();
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t slen = sizeof(sa);
	char url[64], dir[] = "/tmp/t-srv-prom-XXXXXX";
	char body[256], head[256], parsed[256];
	char *text, *cl;
	struct stat st;
	pid_t pid;
	int lfd;

	(void)state;
	if (parser == NULL)
		fail_msg("T_PROM_PARSE is not set (run through meson)");
	assert_non_null(mkdtemp(dir));
	snprintf(body, sizeof(body), "%s/body", dir);
	snprintf(head, sizeof(head), "%s/head", dir);
	snprintf(parsed, sizeof(parsed), "%s/parsed", dir);
	srv__metric_add(srv__metrics_shard(m, 0), 0, SRV__M_ACCEPTS, 41);
	srv__metric_inc(srv__metrics_shard(m, 1), 0, SRV__M_ACCEPTS);
	srv__metric_inc(srv__metrics_shard(m, 1), 1, SRV__M_CONNECTIONS_OPEN);

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (void *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (void *)&sa, &slen), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/metrics",
		 ntohs(sa.sin_port));

	{
		char *argv[] = {"curl", "-sS", "--max-time", "20", "-D",
				head,	"-o",  body,	     url,  NULL};

		pid = spawn(argv, NULL);
		assert_int_equal(serve_one(lfd, m), 200);
		assert_int_equal(wait_exit(pid), 0);
	}
	text = slurp(head);
	assert_memory_equal(text, "HTTP/1.1 200 OK\r\n", 17);
	assert_has(text, "\r\nContent-Type: text/plain; version=0.0.4; "
			 "charset=utf-8\r\n");
	cl = strstr(text, "\r\nContent-Length: ");
	assert_non_null(cl);
	assert_int_equal(stat(body, &st), 0);
	assert_int_equal(strtol(cl + 18, NULL, 10), st.st_size);

	{
		char *argv[] = {(char *)parser, body, NULL};

		pid = spawn(argv, parsed);
		assert_int_equal(wait_exit(pid), 0);
	}
	text = slurp(parsed);
	assert_has(text, "ringprot_accepts_total{service=\"imap\"} 42 "
			 "counter\n");
	assert_has(text, "ringprot_connections_open{service=\"we\\\"ird\\\\x"
			 "\\n\"} 1 gauge\n");
	assert_has(text, "ringprot_ring_cqes_total{worker=\"1\"} 0 counter\n");
	assert_has(text, "ringprot_log_dropped_total{} 0 counter\n");

	/* The parser is a real check: it refuses a broken exposition. */
	{
		int fd = open(body, O_WRONLY | O_APPEND);
		char *argv[] = {(char *)parser, body, NULL};

		assert_true(fd >= 0);
		assert_int_equal(write(fd, "ringprot_x{a=\"b} 1\n", 19), 19);
		close(fd);
		pid = spawn(argv, parsed);
		assert_int_equal(wait_exit(pid), 1);
	}

	/* curl's 404 and HEAD. */
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/other",
		 ntohs(sa.sin_port));
	{
		char *argv[] = {"curl", "-s", "--max-time",   "20", "-o",
				body,	"-w", "%{http_code}", url,  NULL};

		pid = spawn(argv, head);
		assert_int_equal(serve_one(lfd, m), 404);
		assert_int_equal(wait_exit(pid), 0);
		assert_string_equal(slurp(head), "404");
	}
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/metrics",
		 ntohs(sa.sin_port));
	{
		char *argv[] = {"curl", "-sS", "--max-time", "20",
				"-I",	url,   NULL};

		pid = spawn(argv, head);
		assert_int_equal(serve_one(lfd, m), 200);
		assert_int_equal(wait_exit(pid), 0);
		assert_has(slurp(head), "HTTP/1.1 200 OK\r\n");
	}
	close(lfd);
	srv__metrics_free(&m);
	snprintf(url, sizeof(url), "rm -rf %s", dir);
	assert_int_equal(system(url), 0);
}

int main(void)
{
#define T(x) cmocka_unit_test_setup_teardown(x, t_loop_setup, t_loop_teardown)
	const struct CMUnitTest tests[] = {
		T(test_srv_metrics_shards_sum),
		T(test_srv_metrics_new_errors),
		T(test_srv_metrics_render_text),
		T(test_srv_metrics_render_appends),
		T(test_srv_metrics_dump_line),
		T(test_srv_metrics_http_statuses),
		T(test_srv_metrics_http_nul_and_head),
		T(test_srv_metrics_http_incomplete),
		T(test_srv_metrics_http_curl_and_parser),
	};
#undef T

	t_require_loop();
	return t_run_groups("srv-metrics", tests,
			    sizeof(tests) / sizeof(tests[0]));
}
