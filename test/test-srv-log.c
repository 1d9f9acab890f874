/* SPDX-License-Identifier: BSD-3-Clause */
/* test/srv-log: logfmt lines, escaping, targets, threads, fail2ban. */
#include <ringprot/srv-log.h> /* first: it must need nothing before it */

#include "t-helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

struct logpipe {
	int fd[2];
};

static int pipe_setup(void **state)
{
	struct logpipe *p = calloc(1, sizeof(*p));
	struct srv_log_opts o = {.target = SRV_LOG_FD, .level = SRV_LOG_DEBUG};

	assert_non_null(p);
	assert_int_equal(pipe2(p->fd, O_CLOEXEC | O_NONBLOCK), 0);
	o.fd = p->fd[1];
	assert_int_equal(srv_log_open(&o), 0);
	*state = p;
	return 0;
}

static int pipe_teardown(void **state)
{
	struct logpipe *p = *state;

	srv_log_close();
	close(p->fd[0]);
	close(p->fd[1]);
	free(p);
	return 0;
}

/* Everything written so far, NUL-terminated (static storage). */
static const char *drain(struct logpipe *p)
{
	static char text[65536];
	ssize_t n = read(p->fd[0], text, sizeof(text) - 1);

	text[n > 0 ? n : 0] = '\0';
	return text;
}

/* The one line written so far, with its ts= field checked and cut. */
static const char *one_line(struct logpipe *p)
{
	const char *t = drain(p);
	const char *nl = strchr(t, '\n');

	assert_non_null(nl);
	assert_int_equal(nl[1], '\0');
	/* ts=YYYY-MM-DDTHH:MM:SS.mmmZ */
	assert_memory_equal(t, "ts=", 3);
	assert_int_equal(strlen(t), 3 + 24 + 1 + strlen(t + 28));
	assert_int_equal(t[7], '-');
	assert_int_equal(t[13], 'T');
	assert_int_equal(t[22], '.');
	assert_int_equal(t[26], 'Z');
	assert_int_equal(t[27], ' ');
	return t + 28;
}

static void test_srv_log_plain_line(void **state)
{
	struct logpipe *p = *state;

	srv_logkv(SRV_LOG_INFO, 17, "accept", "service", "imap", "tls", "no",
		  NULL);
	assert_string_equal(one_line(p),
			    "level=info event=accept conn=17 service=imap "
			    "tls=no\n");
	srv_logkv(SRV_LOG_ERR, 0, "boot", "skipped", NULL, "x", "1", NULL);
	assert_string_equal(one_line(p), "level=err event=boot x=1\n");
}

static void test_srv_log_escapes_values(void **state)
{
	struct logpipe *p = *state;

	srv_logkv(SRV_LOG_WARN, 3, "login", "user",
		  "bob\nts=1 level=err event=auth result=fail", "q",
		  "say \"hi\" \\o/", "eq", "a=b", "empty", "", "tab", "a\tb",
		  NULL);
	assert_string_equal(
		one_line(p),
		"level=warn event=login conn=3 "
		"user=\"bob\\nts=1 level=err event=auth result=fail\" "
		"q=\"say \\\"hi\\\" \\\\o/\" eq=\"a=b\" empty=\"\" "
		"tab=\"a\\tb\"\n");
	/* UTF-8 passes; bad UTF-8, C1 (NEL), DEL, ESC are spelled \x. */
	srv_logkv(SRV_LOG_INFO, 0, "u", "ok", "J\xc3\xbcrgen", "bad",
		  "a\xff\xc3(", "nel", "x\xc2\x85y", "ctl", "\x1b[2J\x7f", "cr",
		  "a\rb", NULL);
	assert_string_equal(one_line(p),
			    "level=info event=u ok=\"J\xc3\xbcrgen\" "
			    "bad=\"a\\xff\\xc3(\" nel=\"x\\xc2\\x85y\" "
			    "ctl=\"\\x1b[2J\\x7f\" cr=\"a\\rb\"\n");
}

static void test_srv_log_keys_and_event_sanitized(void **state)
{
	struct logpipe *p = *state;
	struct srv_logline l;
	static const char nul_value[] = {'a', '\0', 'b'};

	srv_logkv(SRV_LOG_INFO, 0, "two words", "bad key=x", "1", "", "2",
		  "ok_key.v-1", "3", NULL);
	assert_string_equal(one_line(p), "level=info event=\"two words\" "
					 "bad_key_x=1 _=2 ok_key.v-1=3\n");
	assert_true(srv_logline_begin(&l, SRV_LOG_INFO, 0, "mem"));
	srv_logline_mem(&l, "v", nul_value, sizeof(nul_value));
	srv_logline_i64(&l, "neg", -42);
	srv_logline_u64(&l, "big", UINT64_MAX);
	srv_logline_fmt(&l, "f", "%d%%, %s", 50, "done");
	srv_logline_end(&l);
	assert_string_equal(one_line(p),
			    "level=info event=mem v=\"a\\x00b\" neg=-42 "
			    "big=18446744073709551615 f=\"50%, done\"\n");
}

static void test_srv_log_threshold(void **state)
{
	struct logpipe *p = *state;
	struct srv_logline l;

	srv_log_set_level(SRV_LOG_WARN);
	assert_false(srv_log_enabled(SRV_LOG_INFO));
	assert_true(srv_log_enabled(SRV_LOG_WARN));
	assert_true(srv_log_enabled(SRV_LOG_ERR));
	srv_logkv(SRV_LOG_INFO, 0, "hidden", NULL);
	srv_logkv(SRV_LOG_DEBUG, 0, "hidden", NULL);
	assert_false(srv_logline_begin(&l, SRV_LOG_INFO, 0, "x"));
	assert_false(srv_logline_begin(&l, (enum srv_log_level)5, 0, "x"));
	srv_logkv(SRV_LOG_ERR, 0, "shown", NULL);
	assert_string_equal(one_line(p), "level=err event=shown\n");
	srv_log_set_level(SRV_LOG_DEBUG);
	srv_logkv(SRV_LOG_DEBUG, 0, "dbg", NULL);
	assert_string_equal(one_line(p), "level=debug event=dbg\n");

	assert_int_equal(srv_log_level_parse("warning"), SRV_LOG_WARN);
	assert_int_equal(srv_log_level_parse("DEBUG"), SRV_LOG_DEBUG);
	assert_int_equal(srv_log_level_parse("loud"), -EINVAL);
	assert_string_equal(srv_log_level_name(SRV_LOG_ERR), "err");
}

/* A value too long for a line is cut between escapes, never inside. */
static void test_srv_log_truncates(void **state)
{
	struct logpipe *p = *state;
	char *big = malloc(5000);
	const char *t, *end;

	assert_non_null(big);
	for (int i = 0; i < 4999; i++)
		big[i] = i % 3 == 0 ? '"' : 'x';
	big[4999] = '\0';
	srv_logkv(SRV_LOG_INFO, 9, "big", "v", big, "after", "1", NULL);
	t = drain(p);
	end = strchr(t, '\n');
	assert_non_null(end);
	assert_true((size_t)(end - t) + 1 <= SRV_LOG_LINE_MAX);
	assert_null(strstr(t, "after="));
	assert_non_null(strstr(t, "...\" truncated=1\n"));
	/* Before the "...": whole escapes only (\" pairs, x's). */
	for (const char *c = strstr(t, "v=\"") + 3; c < end - 16; c++) {
		if (*c == '\\') {
			assert_int_equal(c[1], '"');
			c++;
		} else {
			assert_int_equal(*c, 'x');
		}
	}
	/* A long bare value is quoted once cut. */
	memset(big, 'y', 4999);
	srv_logkv(SRV_LOG_INFO, 0, "big", "v", big, NULL);
	t = drain(p);
	assert_non_null(strstr(t, "v=\"yyy"));
	assert_non_null(strstr(t, "yyy...\" truncated=1\n"));
	free(big);
}

static void test_srv_log_addr(void **state)
{
	struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(143)};
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6,
				  .sin6_port = htons(993)};
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	char buf[SRV_LOG_ADDR_MAX];
	socklen_t ulen;

	(void)state;
	inet_pton(AF_INET, "192.0.2.1", &s4.sin_addr);
	srv_log_addr(buf, sizeof(buf), (void *)&s4, sizeof(s4), true);
	assert_string_equal(buf, "192.0.2.1:143");
	srv_log_addr(buf, sizeof(buf), (void *)&s4, sizeof(s4), false);
	assert_string_equal(buf, "192.0.2.1");
	inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
	srv_log_addr(buf, sizeof(buf), (void *)&s6, sizeof(s6), true);
	assert_string_equal(buf, "[2001:db8::1]:993");
	srv_log_addr(buf, sizeof(buf), (void *)&s6, sizeof(s6), false);
	assert_string_equal(buf, "2001:db8::1");
	inet_pton(AF_INET6, "::ffff:198.51.100.3", &s6.sin6_addr);
	srv_log_addr(buf, sizeof(buf), (void *)&s6, sizeof(s6), true);
	assert_string_equal(buf, "198.51.100.3:993");
	strcpy(un.sun_path, "/run/imap.sock");
	ulen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 15);
	srv_log_addr(buf, sizeof(buf), (void *)&un, ulen, true);
	assert_string_equal(buf, "unix:/run/imap.sock");
	srv_log_addr(buf, sizeof(buf), (void *)&un, ulen, false);
	assert_string_equal(buf, "unix");
	memcpy(un.sun_path, "\0abs", 4);
	ulen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 4);
	srv_log_addr(buf, sizeof(buf), (void *)&un, ulen, true);
	assert_string_equal(buf, "unix:@abs");
	srv_log_addr(buf, sizeof(buf), (void *)&un, sizeof(sa_family_t), true);
	assert_string_equal(buf, "unix:");
	srv_log_addr(buf, sizeof(buf), NULL, 0, true);
	assert_string_equal(buf, "unknown");
	/* Cut output is still terminated; the needed length comes back. */
	assert_int_equal(srv_log_addr(buf, 4, (void *)&s4, sizeof(s4), true),
			 13);
	assert_string_equal(buf, "192");
}

static void test_srv_log_auth_shape(void **state)
{
	struct logpipe *p = *state;
	struct sockaddr_in s4 = {.sin_family = AF_INET};

	inet_pton(AF_INET, "192.0.2.7", &s4.sin_addr);
	srv_log_auth(17, false, "imap", (void *)&s4, sizeof(s4),
		     "bob ip=6.6.6.6", "PLAIN", "bad password");
	assert_string_equal(
		one_line(p),
		"level=warn event=auth conn=17 result=fail "
		"service=imap ip=192.0.2.7 user=\"bob "
		"ip=6.6.6.6\" mech=PLAIN reason=\"bad password\"\n");
	srv_log_auth(18, true, "imap", (void *)&s4, sizeof(s4), "bob", NULL,
		     NULL);
	assert_string_equal(one_line(p),
			    "level=info event=auth conn=18 result=ok "
			    "service=imap ip=192.0.2.7 user=bob\n");
}

/* Lines from several threads arrive whole, never interleaved. */
#define NTHREADS 4
#define NLINES	 3000

struct writer {
	int id;
	char pad[300];
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	char seq[16];

	for (int i = 0; i < NLINES; i++) {
		snprintf(seq, sizeof(seq), "%d", i);
		srv_logkv(SRV_LOG_INFO, (uint64_t)w->id, "tick", "seq", seq,
			  "pad", w->pad, NULL);
	}
	return NULL;
}

struct collector {
	int fd;
	char *text;
	size_t len, cap;
};

static void *collector_main(void *arg)
{
	struct collector *c = arg;
	ssize_t n;

	for (;;) {
		if (c->cap - c->len < 65536) {
			c->cap = c->cap * 2 + 65536;
			c->text = realloc(c->text, c->cap);
			if (c->text == NULL)
				return NULL;
		}
		n = read(c->fd, c->text + c->len, c->cap - c->len - 1);
		if (n <= 0)
			break;
		c->len += (size_t)n;
	}
	c->text[c->len] = '\0';
	return NULL;
}

static void test_srv_log_threads_do_not_interleave(void **state)
{
	struct srv_log_opts o = {.target = SRV_LOG_FD};
	struct writer w[NTHREADS];
	struct collector c = {0};
	pthread_t th[NTHREADS], col;
	int fds[2], next[NTHREADS + 1] = {0}, lines = 0;
	char *line, *save = NULL;

	(void)state;
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	c.fd = fds[0];
	o.fd = fds[1];
	assert_int_equal(srv_log_open(&o), 0);
	assert_int_equal(pthread_create(&col, NULL, collector_main, &c), 0);
	for (int i = 0; i < NTHREADS; i++) {
		w[i].id = i + 1;
		memset(w[i].pad, 'a' + i, sizeof(w[i].pad) - 1);
		w[i].pad[sizeof(w[i].pad) - 1] = '\0';
		assert_int_equal(
			pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	srv_log_close();
	close(fds[1]);
	assert_int_equal(pthread_join(col, NULL), 0);
	assert_non_null(c.text);
	for (line = strtok_r(c.text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save), lines++) {
		int id, seq, used = 0;
		char pad;

		assert_int_equal(sscanf(line + 28,
					"level=info event=tick conn=%d seq=%d "
					"pad=%c%n",
					&id, &seq, &pad, &used),
				 3);
		assert_true(id >= 1 && id <= NTHREADS);
		/* Each thread's lines in its own order, none lost. */
		assert_int_equal(seq, next[id]++);
		assert_int_equal(pad, 'a' + id - 1);
		assert_int_equal(strlen(line + 28 + used) + 1,
				 sizeof(w[0].pad) - 1);
	}
	assert_int_equal(lines, NTHREADS * NLINES);
	assert_int_equal(srv_log_dropped(), 0);
	free(c.text);
}

/* Syslog: one datagram per line, <PRI>ident[pid]: and no ts=. */
static void test_srv_log_syslog_datagrams(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct srv_log_opts o = {.target = SRV_LOG_SYSLOG,
				 .facility = LOG_MAIL,
				 .ident = "ringprot-imapd",
				 .syslog_path = sa.sun_path};
	char want[256], got[SRV_LOG_LINE_MAX + 128];
	uint64_t drops;
	ssize_t n;
	int sock;

	(void)state;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/t-srv-log-%d.sock",
		 (int)getpid());
	unlink(sa.sun_path);
	sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(sock >= 0);
	assert_int_equal(bind(sock, (void *)&sa, sizeof(sa)), 0);
	assert_int_equal(srv_log_open(&o), 0);
	srv_log_auth(5, false, "imap", NULL, 0, "a\nb", NULL, NULL);
	n = recv(sock, got, sizeof(got) - 1, MSG_DONTWAIT);
	assert_true(n > 0);
	got[n] = '\0';
	snprintf(want, sizeof(want),
		 "<%d>ringprot-imapd[%d]: level=warn event=auth conn=5 "
		 "result=fail service=imap ip=unknown user=\"a\\nb\"",
		 LOG_MAIL | LOG_WARNING, (int)getpid());
	assert_string_equal(got, want);
	/* A syslog daemon that is gone: the line is counted as dropped. */
	drops = srv_log_dropped();
	close(sock);
	unlink(sa.sun_path);
	srv_logkv(SRV_LOG_ERR, 0, "lost", NULL);
	assert_int_equal(srv_log_dropped(), drops + 1);
	srv_log_close();

	o.facility = 1; /* not a facility */
	assert_int_equal(srv_log_open(&o), -EINVAL);
	o.facility = 0;
	o.level = (enum srv_log_level)9;
	assert_int_equal(srv_log_open(&o), -EINVAL);
}

/*
 * The fail2ban filter in examples/deploy matches what srv_log_auth()
 * writes, and only that: fail2ban-regex itself reads real lines from this
 * logger, forged and hostile ones among them, and names the hosts.
 */
static void run_fail2ban(const char *log, const char *filter, char *out,
			 size_t size)
{
	int pfd[2], status;
	ssize_t n;
	size_t len = 0;
	pid_t pid;

	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pfd[1], 1);
		close(pfd[0]);
		execlp("fail2ban-regex", "fail2ban-regex", "-o", "ip", log,
		       filter, (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	while ((n = read(pfd[0], out + len, size - 1 - len)) > 0)
		len += (size_t)n;
	out[len] = '\0';
	close(pfd[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("fail2ban-regex failed (%d): %s", status, out);
}

static void test_srv_log_fail2ban_filter(void **state)
{
	const char *src = getenv("T_F2B_FILTER");
	char dir[] = "/tmp/t-srv-f2b-XXXXXX", path[512], filter[512];
	char out[4096];
	struct sockaddr_in s4 = {.sin_family = AF_INET};
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
	struct srv_log_opts o = {.target = SRV_LOG_FD};
	int fd;

	(void)state;
	if (src == NULL)
		fail_msg("T_F2B_FILTER is not set (run through meson)");
	assert_non_null(mkdtemp(dir));
	/* fail2ban reads common.conf from the filter's own directory. */
	snprintf(path, sizeof(path), "%s/filter.d", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/filter.d/common.conf", dir);
	assert_int_equal(symlink("/etc/fail2ban/filter.d/common.conf", path),
			 0);
	snprintf(filter, sizeof(filter), "%s/filter.d/ringprot.conf", dir);
	assert_int_equal(symlink(src, filter), 0);

	snprintf(path, sizeof(path), "%s/ringprot.log", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	o.fd = fd;
	assert_int_equal(srv_log_open(&o), 0);
	inet_pton(AF_INET, "192.0.2.7", &s4.sin_addr);
	srv_log_auth(1, false, "imap", (void *)&s4, sizeof(s4), "bob", "PLAIN",
		     "bad password");
	inet_pton(AF_INET6, "2001:db8::5", &s6.sin6_addr);
	srv_log_auth(0, false, "lmtp", (void *)&s6, sizeof(s6),
		     "x ip=198.51.100.1", NULL, NULL);
	/* Success, a forged auth line inside a value, no address. */
	inet_pton(AF_INET, "192.0.2.8", &s4.sin_addr);
	srv_log_auth(2, true, "imap", (void *)&s4, sizeof(s4), "bob", NULL,
		     NULL);
	srv_logkv(SRV_LOG_WARN, 3, "login", "user",
		  "a\nlevel=warn event=auth result=fail service=imap "
		  "ip=203.0.113.9",
		  NULL);
	srv_logkv(SRV_LOG_WARN, 4, "login", "user",
		  "\" level=warn event=auth result=fail service=imap "
		  "ip=203.0.113.10 ",
		  NULL);
	srv_log_auth(5, false, "imap", NULL, 0, "eve", NULL, NULL);
	srv_log_close();
	close(fd);

	run_fail2ban(path, filter, out, sizeof(out));
	assert_string_equal(out, "192.0.2.7\n2001:db8::5\n");

	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	assert_int_equal(system(path), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_srv_log_plain_line,
						pipe_setup, pipe_teardown),
		cmocka_unit_test_setup_teardown(test_srv_log_escapes_values,
						pipe_setup, pipe_teardown),
		cmocka_unit_test_setup_teardown(
			test_srv_log_keys_and_event_sanitized, pipe_setup,
			pipe_teardown),
		cmocka_unit_test_setup_teardown(test_srv_log_threshold,
						pipe_setup, pipe_teardown),
		cmocka_unit_test_setup_teardown(test_srv_log_truncates,
						pipe_setup, pipe_teardown),
		cmocka_unit_test(test_srv_log_addr),
		cmocka_unit_test_setup_teardown(test_srv_log_auth_shape,
						pipe_setup, pipe_teardown),
		cmocka_unit_test(test_srv_log_threads_do_not_interleave),
		cmocka_unit_test(test_srv_log_syslog_datagrams),
		cmocka_unit_test(test_srv_log_fail2ban_filter),
	};

	return cmocka_run_group_tests_name("srv-log", tests, NULL, NULL);
}
