/* SPDX-License-Identifier: BSD-3-Clause */
/* test/srv-sd: sd_notify, LISTEN_FDS, pidfiles and privilege drop. */
#include "t-helpers.h"

#include "sd.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

/*
 * Checks inside a forked child: cmocka's asserts would unwind into the
 * child's copy of the runner, so the child reports the failing line in
 * its exit status instead, and says why on stderr.
 */
#define CHILD_CHECK(cond)                                                     \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "child check failed: %s (line %d)\n", \
				#cond, __LINE__);                             \
			_exit(1);                                             \
		}                                                             \
	} while (0)

static void run_child(void (*fn)(void *), void *arg)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		fn(arg);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ------------------------------------------------------------------ */
/* sd_notify */

static int bind_dgram(struct sockaddr_un *sa, socklen_t len)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (void *)sa, len), 0);
	return fd;
}

static void expect_dgram(int fd, const char *want)
{
	char got[1024];
	ssize_t n = recv(fd, got, sizeof(got) - 1, MSG_DONTWAIT);

	assert_true(n >= 0);
	got[n] = '\0';
	assert_string_equal(got, want);
}

static void test_srv_sd_notify_path_and_abstract(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char name[64];
	socklen_t len;
	int fd;

	(void)state;
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(srv__sd_notify("READY=1"), 0);
	setenv("NOTIFY_SOCKET", "", 1);
	assert_int_equal(srv__sd_notify("READY=1"), 0);

	/* A socket path, as systemd uses. */
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/t-srv-sd-%d.sock",
		 (int)getpid());
	unlink(sa.sun_path);
	fd = bind_dgram(&sa, sizeof(sa));
	setenv("NOTIFY_SOCKET", sa.sun_path, 1);
	assert_int_equal(srv__sd_notify("READY=1"), 1);
	expect_dgram(fd, "READY=1");
	assert_int_equal(srv__sd_notifyf("STATUS=serving %d connections", 3),
			 1);
	expect_dgram(fd, "STATUS=serving 3 connections");
	assert_int_equal(srv__sd_notify("READY=1\nSTATUS=up\nMAINPID=1"), 1);
	expect_dgram(fd, "READY=1\nSTATUS=up\nMAINPID=1");
	assert_int_equal(srv__sd_notify(""), -EINVAL);
	close(fd);
	unlink(sa.sun_path);
	/* Nobody listening any more. */
	assert_int_equal(srv__sd_notify("WATCHDOG=1"), -ENOENT);

	/* An abstract name, spelled with '@'. */
	snprintf(name, sizeof(name), "t-srv-sd-abstract-%d", (int)getpid());
	memset(sa.sun_path, 0, sizeof(sa.sun_path));
	memcpy(sa.sun_path + 1, name, strlen(name));
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
			  strlen(name));
	fd = bind_dgram(&sa, len);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "@%s", name);
	setenv("NOTIFY_SOCKET", sa.sun_path, 1);
	assert_int_equal(srv__sd_notify("STOPPING=1"), 1);
	expect_dgram(fd, "STOPPING=1");
	close(fd);

	setenv("NOTIFY_SOCKET", "relative/path", 1);
	assert_int_equal(srv__sd_notify("READY=1"), -EINVAL);
	setenv("NOTIFY_SOCKET", "@", 1);
	assert_int_equal(srv__sd_notify("READY=1"), -EINVAL);
	setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
	assert_int_equal(srv__sd_notify("READY=1"), -EAFNOSUPPORT);
	unsetenv("NOTIFY_SOCKET");
}

static void test_srv_sd_watchdog(void **state)
{
	char pid[32];
	uint64_t usec = 0;

	(void)state;
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	assert_int_equal(srv__sd_watchdog_usec(&usec), 0);
	setenv("WATCHDOG_USEC", "30000000", 1);
	assert_int_equal(srv__sd_watchdog_usec(&usec), 1);
	assert_int_equal(usec, 30000000);
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	assert_int_equal(srv__sd_watchdog_usec(&usec), 1);
	snprintf(pid, sizeof(pid), "%d", (int)getpid() + 1);
	setenv("WATCHDOG_PID", pid, 1);
	assert_int_equal(srv__sd_watchdog_usec(&usec), 0);
	setenv("WATCHDOG_PID", "x", 1);
	assert_int_equal(srv__sd_watchdog_usec(&usec), -EINVAL);
	unsetenv("WATCHDOG_PID");
	setenv("WATCHDOG_USEC", "0", 1);
	assert_int_equal(srv__sd_watchdog_usec(&usec), -EINVAL);
	setenv("WATCHDOG_USEC", "12s", 1);
	assert_int_equal(srv__sd_watchdog_usec(&usec), -EINVAL);
	unsetenv("WATCHDOG_USEC");
}

/* ------------------------------------------------------------------ */
/* LISTEN_FDS: in a child, whose fds 3.. we may replace. */

struct listen_case {
	const char *nfds;    /* LISTEN_FDS */
	const char *names;   /* LISTEN_FDNAMES or NULL */
	int pid_delta;	     /* LISTEN_PID = getpid() + this */
	int close_fd;	     /* close this fd after placing them, or 0 */
	int ret;	     /* expected result */
	size_t n;	     /* expected count */
	const char *want[3]; /* expected names */
};

/* Real listening sockets on fds 3, 4, 5, without FD_CLOEXEC. */
static void place_listeners(void)
{
	for (int fd = 3; fd < 6; fd++) {
		int s = socket(AF_INET, SOCK_STREAM, 0);

		CHILD_CHECK(s >= 0);
		CHILD_CHECK(listen(s, 1) == 0); /* an ephemeral port */
		if (s != fd) {
			CHILD_CHECK(dup2(s, fd) == fd);
			close(s);
		}
	}
}

static void listen_child(void *arg)
{
	const struct listen_case *c = arg;
	struct srv__sd_fd *fds = NULL;
	size_t n = 99;
	char pid[32];
	int ret, on = 0;
	socklen_t len = sizeof(on);

	/* Clear 3..63 (a loop's or the runner's fds) before placing ours. */
	for (int fd = 3; fd < 64; fd++)
		close(fd);
	place_listeners();
	if (c->close_fd)
		close(c->close_fd);
	snprintf(pid, sizeof(pid), "%d", (int)getpid() + c->pid_delta);
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", c->nfds, 1);
	if (c->names)
		setenv("LISTEN_FDNAMES", c->names, 1);
	else
		unsetenv("LISTEN_FDNAMES");
	ret = srv__sd_listen_fds(&fds, &n);
	if (ret != c->ret)
		fprintf(stderr, "srv__sd_listen_fds: %d, want %d\n", ret,
			c->ret);
	CHILD_CHECK(ret == c->ret);
	CHILD_CHECK(getenv("LISTEN_PID") == NULL);
	CHILD_CHECK(getenv("LISTEN_FDS") == NULL);
	CHILD_CHECK(getenv("LISTEN_FDNAMES") == NULL);
	if (ret < 0 || c->n == 0) {
		CHILD_CHECK(fds == NULL && n == 0);
		return;
	}
	CHILD_CHECK(n == c->n);
	for (size_t i = 0; i < n; i++) {
		CHILD_CHECK(fds[i].fd == 3 + (int)i);
		CHILD_CHECK(strcmp(fds[i].name, c->want[i]) == 0);
		CHILD_CHECK(fcntl(fds[i].fd, F_GETFD) & FD_CLOEXEC);
		CHILD_CHECK(getsockopt(fds[i].fd, SOL_SOCKET, SO_ACCEPTCONN,
				       &on, &len) == 0 &&
			    on == 1);
	}
	/* Not passed: left as it was. */
	if (n < 3)
		CHILD_CHECK((fcntl(5, F_GETFD) & FD_CLOEXEC) == 0);
	free(fds);
}

static void test_srv_sd_listen_fds(void **state)
{
	static const struct listen_case cases[] = {
		{"3", "imap:imaps:lmtp", 0, 0, 0, 3, {"imap", "imaps", "lmtp"}},
		{"2", NULL, 0, 0, 0, 2, {"unknown", "unknown"}},
		{"3", "imap::lmtp", 0, 0, 0, 3, {"imap", "", "lmtp"}},
		{"1", "imap", 0, 0, 0, 1, {"imap"}},
		{"0", NULL, 0, 0, 0, 0, {NULL}},
		{"3", "imap:imaps", 0, 0, -EINVAL, 0, {NULL}},
		{"2", "imap", 0, 0, -EINVAL, 0, {NULL}},
		{"2x", NULL, 0, 0, -EINVAL, 0, {NULL}},
		{"3", NULL, 0, 4, -EBADF, 0, {NULL}},
		{"3", "imap:imaps:lmtp", 1, 0, 0, 0, {NULL}},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_child(listen_child, (void *)&cases[i]);
}

/* Not activated at all: nothing, and a bad LISTEN_PID is malformed. */
static void test_srv_sd_listen_fds_unset(void **state)
{
	struct srv__sd_fd *fds = (void *)1;
	size_t n = 5;

	(void)state;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	assert_int_equal(srv__sd_listen_fds(&fds, &n), 0);
	assert_null(fds);
	assert_int_equal(n, 0);
	setenv("LISTEN_PID", "abc", 1);
	setenv("LISTEN_FDS", "1", 1);
	assert_int_equal(srv__sd_listen_fds(&fds, &n), -EINVAL);
	assert_null(getenv("LISTEN_PID"));
	assert_null(getenv("LISTEN_FDS"));
}

/* ------------------------------------------------------------------ */
/* Pidfile */

static void read_file(const char *path, char *out, size_t size)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, out, size - 1);
	close(fd);
	assert_true(n >= 0);
	out[n] = '\0';
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static void test_srv_sd_pidfile(void **state)
{
	char dir[] = "/tmp/t-srv-pid-XXXXXX", path[256], text[64], me[32];
	pid_t live, holder = 0;
	int status;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/imapd.pid", dir);
	snprintf(me, sizeof(me), "%d\n", (int)getpid());

	assert_int_equal(srv__pidfile_write(path, &holder), 0);
	read_file(path, text, sizeof(text));
	assert_string_equal(text, me);
	assert_int_equal(count_entries(dir), 1); /* no temp file left */
	/* Our own pid in it: ours to rewrite. */
	assert_int_equal(srv__pidfile_write(path, NULL), 0);

	/* A live process holds it: refused, file untouched. */
	live = fork();
	assert_true(live >= 0);
	if (live == 0) {
		pause();
		_exit(0);
	}
	snprintf(text, sizeof(text), "%d\n", (int)live);
	write_file(path, text);
	assert_int_equal(srv__pidfile_write(path, &holder), -EEXIST);
	assert_int_equal(holder, live);
	read_file(path, text, sizeof(text));
	assert_int_equal(atoi(text), live);
	assert_int_equal(srv__pidfile_remove(path), -EEXIST);
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(count_entries(dir), 1);
	kill(live, SIGKILL);
	assert_int_equal(waitpid(live, &status, 0), live);

	/* The holder is gone (reaped): stale, taken over. */
	assert_int_equal(srv__pidfile_write(path, &holder), 0);
	read_file(path, text, sizeof(text));
	assert_string_equal(text, me);

	/* Garbage or empty content: stale too. */
	write_file(path, "not a pid\n");
	assert_int_equal(srv__pidfile_write(path, NULL), 0);
	write_file(path, "");
	assert_int_equal(srv__pidfile_write(path, NULL), 0);
	read_file(path, text, sizeof(text));
	assert_string_equal(text, me);

	assert_int_equal(srv__pidfile_remove(path), 0);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(srv__pidfile_remove(path), -ENOENT);
	assert_int_equal(count_entries(dir), 0);

	snprintf(path, sizeof(path), "%s/no/such/dir.pid", dir);
	assert_int_equal(srv__pidfile_write(path, NULL), -ENOENT);
	assert_int_equal(rmdir(dir), 0);
}

/* ------------------------------------------------------------------ */
/* Privilege drop: as root, in a child. */

static void skip_unless_root(void)
{
	if (geteuid() != 0) {
		print_message("skipped: privilege drop needs root (euid %d)\n",
			      (int)geteuid());
		skip();
	}
}

static void drop_child(void *arg)
{
	const char *chroot_dir = arg;
	struct passwd *pw = getpwnam("nobody");
	const char *err = "unset";
	gid_t groups[64];
	int n;

	CHILD_CHECK(pw != NULL);
	CHILD_CHECK(srv__drop_privileges("nobody", NULL, chroot_dir, &err) ==
		    0);
	CHILD_CHECK(err == NULL);
	CHILD_CHECK(getuid() == pw->pw_uid && geteuid() == pw->pw_uid);
	CHILD_CHECK(getgid() == pw->pw_gid && getegid() == pw->pw_gid);
	/* Supplementary groups: only what nobody has (root's are gone). */
	n = getgroups(64, groups);
	CHILD_CHECK(n >= 0);
	for (int i = 0; i < n; i++)
		CHILD_CHECK(groups[i] != 0);
	CHILD_CHECK(setuid(0) == -1 && errno == EPERM);
	CHILD_CHECK(setgid(0) == -1);
	if (chroot_dir != NULL) {
		char cwd[64];

		CHILD_CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
		CHILD_CHECK(strcmp(cwd, "/") == 0);
		CHILD_CHECK(access("/marker", F_OK) == 0);
		CHILD_CHECK(access("/etc/passwd", F_OK) == -1);
	}
	/* Already nobody: the same drop is a no-op, anything else refused. */
	if (chroot_dir == NULL) {
		CHILD_CHECK(srv__drop_privileges("nobody", NULL, NULL, &err) ==
			    0);
		CHILD_CHECK(srv__drop_privileges("root", NULL, NULL, &err) ==
			    -EPERM);
		CHILD_CHECK(err != NULL && strstr(err, "root") != NULL);
	}
}

static void test_srv_sd_drop_privileges(void **state)
{
	char dir[] = "/tmp/t-srv-chroot-XXXXXX", marker[128];
	const char *err = NULL;

	(void)state;
	assert_int_equal(
		srv__drop_privileges("no-such-user-ringprot", NULL, NULL, &err),
		-ENOENT);
	assert_string_equal(err, "no such user");
	assert_int_equal(
		srv__drop_privileges("nobody", "no-such-group-rp", NULL, &err),
		-ENOENT);
	assert_string_equal(err, "no such group");
	assert_int_equal(srv__drop_privileges(NULL, "nogroup", NULL, &err),
			 -EINVAL);
	assert_int_equal(srv__drop_privileges(NULL, NULL, NULL, &err), 0);

	skip_unless_root();
	run_child(drop_child, NULL);
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chmod(dir, 0755), 0); /* nobody looks inside */
	snprintf(marker, sizeof(marker), "%s/marker", dir);
	write_file(marker, "x");
	run_child(drop_child, dir);
	assert_int_equal(unlink(marker), 0);
	assert_int_equal(rmdir(dir), 0);
}

/* A chroot to a directory that is not there stops before any drop. */
static void chroot_fail_child(void *arg)
{
	const char *err = NULL;

	(void)arg;
	CHILD_CHECK(srv__drop_privileges("nobody", NULL, "/nonexistent-rp",
					 &err) == -ENOENT);
	CHILD_CHECK(err != NULL && strcmp(err, "chroot failed") == 0);
	CHILD_CHECK(getuid() == 0);
}

static void test_srv_sd_drop_privileges_chroot_fails(void **state)
{
	(void)state;
	skip_unless_root();
	run_child(chroot_fail_child, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_srv_sd_notify_path_and_abstract),
		cmocka_unit_test(test_srv_sd_watchdog),
		cmocka_unit_test(test_srv_sd_listen_fds),
		cmocka_unit_test(test_srv_sd_listen_fds_unset),
		cmocka_unit_test(test_srv_sd_pidfile),
		cmocka_unit_test(test_srv_sd_drop_privileges),
		cmocka_unit_test(test_srv_sd_drop_privileges_chroot_fails),
	};

	return cmocka_run_group_tests_name("srv-sd", tests, NULL, NULL);
}
