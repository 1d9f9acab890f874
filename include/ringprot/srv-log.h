/* SPDX-License-Identifier: BSD-3-Clause */
/* server/log: one key=value (logfmt) line per event, to stderr or syslog. */
#ifndef RINGPROT_SRV_LOG_H
#define RINGPROT_SRV_LOG_H

/*
 * Every line is one event: `level=... event=NAME [conn=ID] key=value...`,
 * the keys in the order the caller gives them. On stderr (or a chosen fd)
 * the line starts with `ts=2024-05-01T12:00:00.123Z` (UTC, milliseconds);
 * to syslog it goes as one datagram `<PRI>ident[pid]: level=...` to the
 * local syslog socket (journald and rsyslog stamp it themselves).
 *
 * Values are escaped, so no value can end a line or add a key: a value is
 * written bare when it is non-empty and made of printable bytes other
 * than space, '"', '=' and '\\'; otherwise it is quoted, with '"' and '\\'
 * backslash-escaped, \n \r \t spelled so, other control bytes, DEL, C1
 * controls and bytes that are not valid UTF-8 as \xHH. Keys are checked
 * too: bytes outside [A-Za-z0-9_.-] become '_'. A line is at most
 * SRV_LOG_LINE_MAX bytes: a value that does not fit is cut (its quoted
 * text ends in "...") and the line ends with `truncated=1`.
 *
 * Authentication lines have one fixed shape, for fail2ban (the filter is
 * examples/deploy/fail2ban/ringprot.conf): srv_log_auth() writes
 *
 *   level=warn event=auth [conn=ID] result=fail service=SVC ip=ADDR
 *     [user=NAME] [mech=MECH] [reason=TEXT]
 *
 * (one line; result=ok at level info on success). service and ip come
 * from the server and stand before every client-supplied value, so a user
 * name like `x ip=1.2.3.4` (quoted, after ip=) cannot name another host.
 * ADDR is the bare address: 192.0.2.1, 2001:db8::1, or `unix` for a Unix
 * socket peer.
 *
 * Threads: srv_log_open() and srv_log_close() run while no other thread
 * logs (before the workers start, after they stop). Every other call is
 * thread-safe: each line is built on the caller's stack and written with
 * one write(2) or send(2), so lines from worker threads never interleave.
 * Before srv_log_open() (and after srv_log_close()), lines go to stderr
 * at threshold SRV_LOG_INFO. Logging never fails the caller: a line that
 * cannot be written is counted (srv_log_dropped()) and dropped.
 */

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ringprot/common.h>

/* The longest line written, newline included. */
#define SRV_LOG_LINE_MAX 2048

/* The syslog severities of the same names. */
enum srv_log_level {
	SRV_LOG_ERR = 3,
	SRV_LOG_WARN = 4,
	SRV_LOG_INFO = 6,
	SRV_LOG_DEBUG = 7,
};

enum srv_log_target {
	SRV_LOG_STDERR = 0, /* fd 2, with ts= */
	SRV_LOG_FD,	    /* opts.fd (borrowed), with ts= */
	SRV_LOG_SYSLOG,	    /* datagrams to opts.syslog_path, no ts= */
};

/* Zero-initialised: stderr at SRV_LOG_INFO. */
struct srv_log_opts {
	enum srv_log_target target;
	/* Lines at this level or more severe are written; 0: SRV_LOG_INFO. */
	enum srv_log_level level;
	int fd;		   /* SRV_LOG_FD: where to write, not closed */
	int facility;	   /* syslog facility (LOG_MAIL...); 0: LOG_DAEMON */
	const char *ident; /* syslog tag; NULL: "ringprot" (copied) */
	const char *syslog_path; /* NULL: "/dev/log" (copied) */
};

/*
 * Switch logging to o's target. For syslog, opens an unbound datagram
 * socket (each line is sent to the path, so a restarted syslog daemon is
 * found again); the path need not exist yet. Returns 0, -EINVAL for a bad
 * level, target, fd, or a path too long for sun_path, or -errno from
 * socket(2). On failure the previous setting stays.
 */
RINGPROT_API int srv_log_open(const struct srv_log_opts *o) RINGPROT_MUST_CHECK;

/* Back to stderr at SRV_LOG_INFO; closes the syslog socket. */
RINGPROT_API void srv_log_close(void);

/* Change the threshold at any time, from any thread (a reload). */
RINGPROT_API void srv_log_set_level(enum srv_log_level level);

/* Would a line at level be written? Cheap: test it before costly work. */
RINGPROT_API bool srv_log_enabled(enum srv_log_level level);

/* Lines dropped since the start because a write or send failed. */
RINGPROT_API uint64_t srv_log_dropped(void);

/*
 * One line of string values: key, value pairs ended by a NULL key. A NULL
 * value writes nothing for its key. conn_id 0: no conn= field. event is
 * written as a value (escaped like any other).
 *   srv_logkv(SRV_LOG_INFO, 17, "starttls", "cipher", name, NULL);
 */
RINGPROT_API void srv_logkv(enum srv_log_level level, uint64_t conn_id,
			    const char *event, ...) __attribute__((sentinel));
RINGPROT_API void srv_vlogkv(enum srv_log_level level, uint64_t conn_id,
			     const char *event, va_list ap);

/*
 * A line built field by field, for numbers, addresses and formatted
 * values. Caller storage, typically on the stack (SRV_LOG_LINE_MAX bytes):
 *
 *   struct srv_logline l;
 *   if (srv_logline_begin(&l, SRV_LOG_INFO, c->id, "close")) {
 *           srv_logline_u64(&l, "bytes_in", in);
 *           srv_logline_addr(&l, "peer", sa, salen, true);
 *           srv_logline_end(&l);
 *   }
 *
 * begin returns false (and the line must not be used further) when level
 * is below the threshold; end writes the line. The adders never fail:
 * what does not fit is cut as described above. A line takes
 * SRV_LOG_LINE_MAX bytes of the caller's stack (srv_logline_fmt another
 * SRV_LOG_LINE_MAX while it runs): fine on a 64 KiB fiber stack, but it
 * is touched memory a parked connection's stack keeps.
 */
struct srv_logline {
	enum srv_log_level level;
	size_t len;
	bool truncated;
	char buf[SRV_LOG_LINE_MAX];
};

RINGPROT_API bool srv_logline_begin(struct srv_logline *l,
				    enum srv_log_level level, uint64_t conn_id,
				    const char *event);
RINGPROT_API void srv_logline_str(struct srv_logline *l, const char *key,
				  const char *value);
/* len bytes of value, which may hold NULs (written as \x00). */
RINGPROT_API void srv_logline_mem(struct srv_logline *l, const char *key,
				  const void *value, size_t len);
RINGPROT_API void srv_logline_u64(struct srv_logline *l, const char *key,
				  uint64_t value);
RINGPROT_API void srv_logline_i64(struct srv_logline *l, const char *key,
				  int64_t value);
/* The value formatted by fmt, then escaped as one value. */
RINGPROT_API void srv_logline_fmt(struct srv_logline *l, const char *key,
				  const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* A socket address as srv_log_addr() spells it. */
RINGPROT_API void srv_logline_addr(struct srv_logline *l, const char *key,
				   const struct sockaddr *sa, socklen_t salen,
				   bool with_port);
RINGPROT_API void srv_logline_end(struct srv_logline *l);

/*
 * Spell a socket address into buf (always NUL-terminated when size > 0):
 * with_port: 192.0.2.1:143, [2001:db8::1]:993, unix:/run/x.sock (unix:
 * for an unnamed socket, unix:@name for an abstract one); without:
 * 192.0.2.1, 2001:db8::1, unix. A v4-mapped v6 address is spelled as v4.
 * Other families: "af<N>". Returns the length it needed (as snprintf), so
 * a result >= size means it was cut. SRV_LOG_ADDR_MAX always fits an
 * IP address with port.
 */
#define SRV_LOG_ADDR_MAX 64
RINGPROT_API size_t srv_log_addr(char *buf, size_t size,
				 const struct sockaddr *sa, socklen_t salen,
				 bool with_port);

/*
 * The authentication line in the fixed shape above. ok: result=ok at
 * SRV_LOG_INFO, else result=fail at SRV_LOG_WARN. service: the service's
 * configured name. sa/salen: the client (after PROXY protocol, the real
 * client); NULL: ip=unknown. user, mech, reason: may be NULL (left out).
 */
RINGPROT_API void srv_log_auth(uint64_t conn_id, bool ok, const char *service,
			       const struct sockaddr *sa, socklen_t salen,
			       const char *user, const char *mech,
			       const char *reason);

/* "err", "warn", "info", "debug"; NULL for other values. */
RINGPROT_API const char *srv_log_level_name(enum srv_log_level level);
/* The level named so (the names above, plus "error", "warning"); -EINVAL. */
RINGPROT_API int srv_log_level_parse(const char *name) RINGPROT_MUST_CHECK;

#endif /* RINGPROT_SRV_LOG_H */
