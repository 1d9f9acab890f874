/* SPDX-License-Identifier: BSD-3-Clause */
/* server/sd: sd_notify, socket activation, pidfile and privilege drop. */
#include "sd.h"

/*
 * Design: the systemd protocols are small and stable (sd_notify(3),
 * sd_listen_fds(3)), so they are spoken here directly rather than linking
 * libsystemd: a datagram with "KEY=VALUE" lines, and a few environment
 * variables. Everything reads the environment fresh on each call and
 * keeps no state, so a forked child sees what its parent left.
 *
 * The privilege drop follows the one order that cannot leave a process
 * half-privileged: look names up and set supplementary groups while
 * /etc/passwd and /etc/group are still reachable, chroot while still
 * root, drop the group before the user (after setuid, setgid is no longer
 * allowed), and finally prove that setuid(0) fails.
 */

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

/* A decimal number with nothing else; false if malformed or > max. */
static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (s == NULL || *s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return false;
		if (v > (max - (uint64_t)(*s - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return true;
}

int srv__sd_notify(const char *state)
{
	const char *e = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t n, slen;
	ssize_t w;
	int fd, ret = 1;

	if (e == NULL || *e == '\0')
		return 0;
	if (state == NULL || *state == '\0')
		return -EINVAL;
	if (strncmp(e, "vsock:", 6) == 0)
		return -EAFNOSUPPORT;
	if (e[0] != '/' && e[0] != '@')
		return -EINVAL;
	n = strlen(e);
	if (n >= sizeof(sa.sun_path) || (e[0] == '@' && n < 2))
		return -EINVAL;
	memcpy(sa.sun_path, e, n);
	if (e[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract: length counts, no NUL */
	slen = strlen(state);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	do {
		w = sendto(fd, state, slen, MSG_NOSIGNAL,
			   (struct sockaddr *)&sa,
			   (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
				       n + (e[0] == '/')));
	} while (w < 0 && errno == EINTR);
	if (w < 0)
		ret = -errno;
	else if ((size_t)w != slen)
		ret = -EMSGSIZE;
	close(fd);
	return ret;
}

int srv__sd_notifyf(const char *fmt, ...)
{
	char state[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(state, sizeof(state), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(state))
		return -EINVAL;
	return srv__sd_notify(state);
}

int srv__sd_watchdog_usec(uint64_t *usec_out)
{
	const char *us = getenv("WATCHDOG_USEC");
	const char *ps = getenv("WATCHDOG_PID");
	uint64_t usec, pid;

	if (us == NULL)
		return 0;
	if (!parse_u64(us, UINT64_MAX - 1, &usec) || usec == 0)
		return -EINVAL;
	if (ps != NULL) {
		if (!parse_u64(ps, INT_MAX, &pid) || pid == 0)
			return -EINVAL;
		if ((pid_t)pid != getpid())
			return 0;
	}
	*usec_out = usec;
	return 1;
}

static void unset_listen_env(void)
{
	/* unsetenv fails only for a bad name: these are fine. */
	if (unsetenv("LISTEN_PID") < 0 || unsetenv("LISTEN_FDS") < 0 ||
	    unsetenv("LISTEN_FDNAMES") < 0) {
		/* nothing left to undo */
	}
}

/* One block: the array, then the names string it points into. */
static int build_fds(unsigned n, const char *names, struct srv__sd_fd **fds_out)
{
	size_t nlen = names ? strlen(names) + 1 : sizeof("unknown");
	struct srv__sd_fd *fds;
	unsigned count = 1;
	char *s;

	if (names != NULL) {
		for (const char *p = names; *p != '\0'; p++)
			count += *p == ':';
		if (count != n)
			return -EINVAL;
	}
	fds = malloc(sizeof(*fds) * n + nlen);
	if (fds == NULL)
		return -ENOMEM;
	s = (char *)(fds + n);
	memcpy(s, names ? names : "unknown", nlen);
	for (unsigned i = 0; i < n; i++) {
		fds[i].fd = 3 + (int)i;
		fds[i].name = s;
		if (names != NULL) {
			s = strchrnul(s, ':');
			if (*s == ':')
				*s++ = '\0';
		}
	}
	*fds_out = fds;
	return 0;
}

static int listen_fds(struct srv__sd_fd **fds_out, size_t *n_out)
{
	const char *ps = getenv("LISTEN_PID");
	const char *ns = getenv("LISTEN_FDS");
	uint64_t pid, n;
	int flags, ret;

	if (ps == NULL || ns == NULL)
		return 0;
	if (!parse_u64(ps, INT_MAX, &pid) || pid == 0)
		return -EINVAL;
	if ((pid_t)pid != getpid())
		return 0;
	if (!parse_u64(ns, INT_MAX - 3, &n))
		return -EINVAL;
	if (n == 0)
		return 0;
	for (int fd = 3; fd < 3 + (int)n; fd++) {
		flags = fcntl(fd, F_GETFD);
		if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
			return -errno;
	}
	ret = build_fds((unsigned)n, getenv("LISTEN_FDNAMES"), fds_out);
	if (ret < 0)
		return ret;
	*n_out = (size_t)n;
	return 0;
}

int srv__sd_listen_fds(struct srv__sd_fd **fds_out, size_t *n_out)
{
	int ret;

	*fds_out = NULL;
	*n_out = 0;
	ret = listen_fds(fds_out, n_out);
	unset_listen_env();
	return ret;
}

/* ------------------------------------------------------------------ */
/* Pidfile. */

/* The pid in path: >0, 0 if none can be read from it, or -errno. */
static long pidfile_read(const char *path)
{
	char text[32];
	uint64_t pid;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n < 0)
		return 0;
	text[n] = '\0';
	text[strcspn(text, "\n")] = '\0';
	if (!parse_u64(text, INT_MAX, &pid))
		return 0;
	return (long)pid;
}

static int write_tmp(const char *tmp)
{
	char text[24];
	int fd, n, ret = 0;

	n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  0644);
	if (fd < 0)
		return -errno;
	if (write(fd, text, (size_t)n) != n)
		ret = errno ? -errno : -EIO;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	return ret;
}

/* 1: a live process (pid in *holder), 0: stale (removed), or -errno. */
static int check_stale(const char *path, pid_t *holder)
{
	long pid = pidfile_read(path);

	if (pid == -ENOENT)
		return 0; /* gone meanwhile: just retry */
	if (pid < 0)
		return (int)pid;
	if (pid > 0 && pid != (long)getpid() &&
	    (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
		*holder = (pid_t)pid;
		return 1;
	}
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int srv__pidfile_write(const char *path, pid_t *holder_out)
{
	char tmp[PATH_MAX];
	pid_t holder = 0;
	int ret, n;

	n = snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -ENAMETOOLONG;
	if (unlink(tmp) < 0 && errno != ENOENT)
		return -errno;
	ret = write_tmp(tmp);
	if (ret < 0)
		goto out_unlink;
	for (int attempt = 0; attempt < 2; attempt++) {
		if (link(tmp, path) == 0) {
			ret = 0;
			goto out_unlink;
		}
		ret = -errno;
		if (ret != -EEXIST)
			goto out_unlink;
		ret = check_stale(path, &holder);
		if (ret < 0)
			goto out_unlink;
		if (ret == 1) {
			ret = -EEXIST;
			if (holder_out != NULL)
				*holder_out = holder;
			goto out_unlink;
		}
		ret = -EEXIST; /* a second loss: someone else won */
	}
out_unlink:
	if (unlink(tmp) < 0) {
		/* a leftover temp file is harmless; the result stands */
	}
	return ret;
}

int srv__pidfile_remove(const char *path)
{
	long pid = pidfile_read(path);

	if (pid < 0)
		return (int)pid;
	if (pid != (long)getpid())
		return -EEXIST;
	if (unlink(path) < 0)
		return -errno;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Privileges. */

struct ids {
	uid_t uid;
	gid_t gid;
	char name[256];
};

static int lookup(const char *user, const char *group, struct ids *ids,
		  const char **errstr)
{
	struct passwd pw, *pwr = NULL;
	struct group gr, *grr = NULL;
	char buf[16384];
	int e;

	e = getpwnam_r(user, &pw, buf, sizeof(buf), &pwr);
	if (pwr == NULL) {
		*errstr = "no such user";
		return e ? -e : -ENOENT;
	}
	ids->uid = pw.pw_uid;
	ids->gid = pw.pw_gid;
	snprintf(ids->name, sizeof(ids->name), "%s", pw.pw_name);
	if (group == NULL)
		return 0;
	e = getgrnam_r(group, &gr, buf, sizeof(buf), &grr);
	if (grr == NULL) {
		*errstr = "no such group";
		return e ? -e : -ENOENT;
	}
	ids->gid = gr.gr_gid;
	return 0;
}

static int do_chroot(const char *dir, const char **errstr)
{
	if (chroot(dir) < 0) {
		*errstr = "chroot failed";
		return -errno;
	}
	if (chdir("/") < 0) {
		*errstr = "chdir to the new root failed";
		return -errno;
	}
	return 0;
}

static int become(const struct ids *ids, const char **errstr)
{
	if (setresgid(ids->gid, ids->gid, ids->gid) < 0) {
		*errstr = "setresgid failed";
		return -errno;
	}
	if (setresuid(ids->uid, ids->uid, ids->uid) < 0) {
		*errstr = "setresuid failed";
		return -errno;
	}
	if (getuid() != ids->uid || geteuid() != ids->uid ||
	    getgid() != ids->gid || getegid() != ids->gid) {
		*errstr = "ids did not change";
		return -EPERM;
	}
	if (ids->uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
		*errstr = "root could be regained";
		return -EPERM;
	}
	return 0;
}

int srv__drop_privileges(const char *user, const char *group,
			 const char *chroot_dir, const char **errstr_out)
{
	const char *dummy;
	const char **errstr = errstr_out ? errstr_out : &dummy;
	struct ids ids;
	int ret;

	*errstr = NULL;
	if (user == NULL && group != NULL) {
		*errstr = "a group needs a user";
		return -EINVAL;
	}
	if (user != NULL) {
		ret = lookup(user, group, &ids, errstr);
		if (ret < 0)
			return ret;
		if (geteuid() != 0) {
			if (chroot_dir == NULL && getuid() == ids.uid &&
			    geteuid() == ids.uid && getgid() == ids.gid)
				return 0;
			*errstr = "not running as root";
			return -EPERM;
		}
		if (initgroups(ids.name, ids.gid) < 0) {
			*errstr = "initgroups failed";
			return -errno;
		}
	}
	if (chroot_dir != NULL) {
		ret = do_chroot(chroot_dir, errstr);
		if (ret < 0)
			return ret;
	}
	if (user == NULL)
		return 0;
	return become(&ids, errstr);
}
