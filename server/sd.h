/* SPDX-License-Identifier: BSD-3-Clause */
/* server/sd: systemd protocols without libsystemd, pidfile, privilege drop. */
#ifndef RINGPROT_SRV_SD_H
#define RINGPROT_SRV_SD_H

/*
 * The environment calls (srv__sd_listen_fds unsets variables) and the
 * privilege drop run at startup, on the main thread, before workers are
 * started: getenv/unsetenv and setuid are process-wide. srv__sd_notify()
 * may be called from any thread at any time.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <ringprot/common.h>

/*
 * Send state (e.g. "READY=1", "STATUS=serving 3 connections",
 * "WATCHDOG=1", "STOPPING=1", "RELOADING=1\nMONOTONIC_USEC=...") as one
 * datagram to $NOTIFY_SOCKET: a path, or an abstract name spelled with a
 * leading '@'. Returns 1 when sent, 0 when NOTIFY_SOCKET is unset or
 * empty (not under systemd: nothing to do), -EINVAL for a malformed
 * socket name or empty state, -EAFNOSUPPORT for a vsock address, or
 * -errno from socket(2)/sendto(2).
 */
int srv__sd_notify(const char *state) RINGPROT_MUST_CHECK;
/* The same with a printf-formatted state. */
int srv__sd_notifyf(const char *fmt, ...) RINGPROT_MUST_CHECK
	__attribute__((format(printf, 1, 2)));

/*
 * The watchdog interval systemd expects WATCHDOG=1 within: from
 * WATCHDOG_USEC, if WATCHDOG_PID is unset or is this process. Returns 1
 * with *usec_out set (send WATCHDOG=1 every half of it), 0 when there is
 * no watchdog for this process, -EINVAL if a variable is malformed.
 */
int srv__sd_watchdog_usec(uint64_t *usec_out) RINGPROT_MUST_CHECK;

/* A socket systemd passed (LISTEN_FDS), with its FileDescriptorName=. */
struct srv__sd_fd {
	int fd;
	const char *name; /* "unknown" when LISTEN_FDNAMES is unset */
};

/*
 * The sockets passed by socket activation, as sd_listen_fds(1) with
 * names: fds 3 .. 3+LISTEN_FDS-1 if LISTEN_PID is this process, each set
 * FD_CLOEXEC; names from LISTEN_FDNAMES (':'-separated, one per fd).
 * LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are unset in every case, so
 * children do not take them. Returns 0 with *fds_out an array of *n_out
 * entries (one allocation, names included: free(*fds_out)), or NULL and
 * 0 when not socket-activated (no variables, or another process's);
 * -EINVAL if a variable is malformed or the name count differs from the
 * fd count; -EBADF if a passed fd is not open; -ENOMEM.
 */
int srv__sd_listen_fds(struct srv__sd_fd **fds_out,
		       size_t *n_out) RINGPROT_MUST_CHECK;

/*
 * Write this process's pid to path, refusing to take over a pidfile that
 * a live process holds. The file appears whole (written to a temporary
 * file beside it, then link(2)ed into place, which fails if path exists).
 * An existing pidfile whose pid is not running (kill(pid, 0): ESRCH), or
 * that holds no pid, is stale: it is removed and the link retried once.
 * Returns 0; -EEXIST if a live process holds it (its pid in *holder_out
 * when holder_out is not NULL), or -errno from open/write/link. Two
 * starters racing over the same stale file can both win; a service
 * manager (systemd) that starts one instance does not race.
 */
int srv__pidfile_write(const char *path, pid_t *holder_out) RINGPROT_MUST_CHECK;

/*
 * Remove path if it holds this process's pid. Returns 0, -ENOENT if it is
 * gone, -EEXIST (left alone) if another pid is in it, or -errno.
 */
int srv__pidfile_remove(const char *path) RINGPROT_MUST_CHECK;

/*
 * Become user (and group: NULL means the user's primary group), after
 * chroot(chroot_dir) when chroot_dir is not NULL. The order: names are
 * looked up and supplementary groups set (initgroups) while /etc is still
 * visible, then chroot and chdir("/"), then setresgid, then setresuid;
 * then it checks that root cannot be regained. Any failure stops there
 * and returns -errno, with *errstr_out (static text) naming the step:
 * the caller must not go on serving. user NULL: no identity change (only
 * the chroot). Not root and user already the current user: 0. Returns 0,
 * -ENOENT (no such user/group), -EPERM (not root), or the step's -errno.
 */
int srv__drop_privileges(const char *user, const char *group,
			 const char *chroot_dir,
			 const char **errstr_out) RINGPROT_MUST_CHECK;

#endif /* RINGPROT_SRV_SD_H */
