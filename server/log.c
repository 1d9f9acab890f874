/* SPDX-License-Identifier: BSD-3-Clause */
/* server/log: logfmt lines to stderr, an fd, or the syslog socket. */
#include <ringprot/srv-log.h>

/*
 * Design: a line is built in caller storage (struct srv_logline, on the
 * logging thread's stack) and leaves in one write(2) or sendto(2): no lock
 * and no shared buffer, so worker threads never interleave. Lines are
 * shorter than PIPE_BUF, so even a pipe to a log collector receives each
 * one whole. The only shared state is the target, set by srv_log_open()
 * while nothing else logs, and the threshold and drop count, which are
 * atomics any thread may touch.
 *
 * The syslog socket is a datagram socket that is never connected: each
 * line is sent to the path, so a syslog daemon that restarted (a new
 * socket inode) gets the next line without any reconnect logic.
 *
 * Escaping is what keeps a client from forging lines: every value goes
 * through put_value(), which quotes and escapes anything that could end
 * the line, start a new key, or confuse a terminal; a value cut for
 * length is cut between escapes, never inside one.
 */

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/uio.h>
#include <sys/un.h>

/* Room kept at the end of a line for " truncated=1\n". */
#define TAIL_RESERVE 16

static struct {
	enum srv_log_target target;
	int fd;
	int sock; /* syslog datagram socket, or -1 */
	int facility;
	struct sockaddr_un addr;
	socklen_t addrlen;
	char ident[64];
} log_cfg = {SRV_LOG_STDERR, 2, -1, LOG_DAEMON, {0}, 0, "ringprot"};

static atomic_int log_threshold = SRV_LOG_INFO;
static atomic_uint_fast64_t log_drops;

static bool level_valid(int level)
{
	return level == SRV_LOG_ERR || level == SRV_LOG_WARN ||
	       level == SRV_LOG_INFO || level == SRV_LOG_DEBUG;
}

const char *srv_log_level_name(enum srv_log_level level)
{
	switch (level) {
	case SRV_LOG_ERR:
		return "err";
	case SRV_LOG_WARN:
		return "warn";
	case SRV_LOG_INFO:
		return "info";
	case SRV_LOG_DEBUG:
		return "debug";
	}
	return NULL;
}

int srv_log_level_parse(const char *name)
{
	static const struct {
		const char *name;
		enum srv_log_level level;
	} names[] = {
		{"err", SRV_LOG_ERR},	{"error", SRV_LOG_ERR},
		{"warn", SRV_LOG_WARN}, {"warning", SRV_LOG_WARN},
		{"info", SRV_LOG_INFO}, {"debug", SRV_LOG_DEBUG},
	};

	if (name == NULL)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(name, names[i].name) == 0)
			return (int)names[i].level;
	}
	return -EINVAL;
}

static int open_syslog(const struct srv_log_opts *o, int *sock_out,
		       struct sockaddr_un *addr, socklen_t *addrlen_out)
{
	const char *path = o->syslog_path ? o->syslog_path : "/dev/log";
	size_t n = strlen(path);
	int sock;

	if (n == 0 || n >= sizeof(addr->sun_path))
		return -EINVAL;
	sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	memcpy(addr->sun_path, path, n);
	*addrlen_out = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	*sock_out = sock;
	return 0;
}

int srv_log_open(const struct srv_log_opts *o)
{
	int level = o->level ? (int)o->level : SRV_LOG_INFO;
	struct sockaddr_un addr;
	socklen_t addrlen = 0;
	int sock = -1, ret;

	if (!level_valid(level))
		return -EINVAL;
	switch (o->target) {
	case SRV_LOG_STDERR:
		break;
	case SRV_LOG_FD:
		if (o->fd < 0)
			return -EINVAL;
		break;
	case SRV_LOG_SYSLOG:
		if (o->facility & ~LOG_FACMASK)
			return -EINVAL;
		ret = open_syslog(o, &sock, &addr, &addrlen);
		if (ret < 0)
			return ret;
		break;
	default:
		return -EINVAL;
	}
	srv_log_close();
	log_cfg.target = o->target;
	log_cfg.fd = o->target == SRV_LOG_FD ? o->fd : 2;
	log_cfg.sock = sock;
	log_cfg.facility = o->facility ? o->facility : LOG_DAEMON;
	if (sock >= 0) {
		log_cfg.addr = addr;
		log_cfg.addrlen = addrlen;
	}
	snprintf(log_cfg.ident, sizeof(log_cfg.ident), "%s",
		 o->ident ? o->ident : "ringprot");
	atomic_store(&log_threshold, level);
	return 0;
}

void srv_log_close(void)
{
	if (log_cfg.sock >= 0)
		close(log_cfg.sock);
	log_cfg.sock = -1;
	log_cfg.target = SRV_LOG_STDERR;
	log_cfg.fd = 2;
	atomic_store(&log_threshold, SRV_LOG_INFO);
}

void srv_log_set_level(enum srv_log_level level)
{
	if (level_valid((int)level))
		atomic_store(&log_threshold, (int)level);
}

bool srv_log_enabled(enum srv_log_level level)
{
	return (int)level <=
	       atomic_load_explicit(&log_threshold, memory_order_relaxed);
}

uint64_t srv_log_dropped(void)
{
	return atomic_load(&log_drops);
}

/* ------------------------------------------------------------------ */
/* Building a line. */

static size_t room(const struct srv_logline *l)
{
	size_t end = sizeof(l->buf) - TAIL_RESERVE;

	return l->len < end ? end - l->len : 0;
}

/* Append raw bytes if they fit whole; false (line cut) if not. */
static bool put_raw(struct srv_logline *l, const char *s, size_t n)
{
	if (l->truncated || n > room(l)) {
		l->truncated = true;
		return false;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
	return true;
}

static void put_key(struct srv_logline *l, const char *key)
{
	char k[64];
	size_t n = 0;

	for (; key[n] != '\0' && n < sizeof(k) - 2; n++) {
		unsigned char c = (unsigned char)key[n];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '.' ||
			  c == '-';

		k[n + 1] = ok ? (char)c : '_';
	}
	k[0] = ' ';
	if (n == 0)
		k[++n] = '_';
	k[n + 1] = '=';
	put_raw(l, k, n + 2);
}

/* Length of a valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len, i;
	uint32_t cp;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong, surrogate, past U+10FFFF, or a C1 control (NEL...). */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff || cp < 0xa0)
		return 0;
	return len;
}

static bool needs_quotes(const unsigned char *v, size_t n)
{
	if (n == 0)
		return true;
	for (size_t i = 0; i < n; i++) {
		if (v[i] <= ' ' || v[i] == '"' || v[i] == '=' || v[i] == '\\' ||
		    v[i] >= 0x7f)
			return true;
	}
	return false;
}

/* The escaped spelling of the byte(s) at v into out; returns bytes used. */
static size_t escape_one(const unsigned char *v, size_t n, char out[5],
			 size_t *outlen)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char c = v[0];
	size_t u;

	if (c >= 0x80) {
		u = utf8_len(v, n);
		if (u > 0) {
			memcpy(out, v, u);
			*outlen = u;
			return u;
		}
	} else if (c >= ' ' && c != 0x7f) {
		if (c == '"' || c == '\\') {
			out[0] = '\\';
			out[1] = (char)c;
			*outlen = 2;
		} else {
			out[0] = (char)c;
			*outlen = 1;
		}
		return 1;
	} else if (c == '\n' || c == '\r' || c == '\t') {
		out[0] = '\\';
		out[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
		*outlen = 2;
		return 1;
	}
	out[0] = '\\';
	out[1] = 'x';
	out[2] = hex[c >> 4];
	out[3] = hex[c & 15];
	*outlen = 4;
	return 1;
}

static void put_value(struct srv_logline *l, const void *value, size_t n)
{
	const unsigned char *v = value;
	size_t i = 0, used, outlen;
	char esc[5];

	if (l->truncated)
		return;
	if (!needs_quotes(v, n)) {
		if (n <= room(l)) {
			put_raw(l, value, n);
			return;
		}
	}
	/* Quoted: keep room for the closing quote, or `..."` if cut. */
	if (room(l) < 5) {
		l->truncated = true;
		return;
	}
	l->buf[l->len++] = '"';
	while (i < n) {
		used = escape_one(v + i, n - i, esc, &outlen);
		if (outlen + 4 > room(l)) {
			memcpy(l->buf + l->len, "...", 3);
			l->len += 3;
			l->truncated = true;
			break;
		}
		memcpy(l->buf + l->len, esc, outlen);
		l->len += outlen;
		i += used;
	}
	l->buf[l->len++] = '"';
}

bool srv_logline_begin(struct srv_logline *l, enum srv_log_level level,
		       uint64_t conn_id, const char *event)
{
	const char *name = srv_log_level_name(level);

	if (name == NULL || !srv_log_enabled(level))
		return false;
	l->level = level;
	l->len = 0;
	l->truncated = false;
	/*
	 * Keys start with a space (put_key); the first one's is dropped
	 * at the end. ts= stands first where we stamp lines ourselves.
	 */
	if (log_cfg.target != SRV_LOG_SYSLOG) {
		struct timespec ts;
		struct tm tm;
		char stamp[40];
		int n;

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = snprintf(stamp, sizeof(stamp),
			     " ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
			     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			     tm.tm_hour, tm.tm_min, tm.tm_sec,
			     (int)(ts.tv_nsec / 1000000));
		put_raw(l, stamp, (size_t)n);
	}
	put_key(l, "level");
	put_raw(l, name, strlen(name));
	srv_logline_str(l, "event", event ? event : "");
	if (conn_id != 0)
		srv_logline_u64(l, "conn", conn_id);
	return true;
}

void srv_logline_mem(struct srv_logline *l, const char *key, const void *value,
		     size_t len)
{
	put_key(l, key);
	put_value(l, value, len);
}

void srv_logline_str(struct srv_logline *l, const char *key, const char *value)
{
	if (value != NULL)
		srv_logline_mem(l, key, value, strlen(value));
}

void srv_logline_u64(struct srv_logline *l, const char *key, uint64_t value)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)value);

	put_key(l, key);
	put_raw(l, num, (size_t)n);
}

void srv_logline_i64(struct srv_logline *l, const char *key, int64_t value)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%lld", (long long)value);

	put_key(l, key);
	put_raw(l, num, (size_t)n);
}

void srv_logline_fmt(struct srv_logline *l, const char *key, const char *fmt,
		     ...)
{
	char text[SRV_LOG_LINE_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(text))
		n = (int)sizeof(text) - 1;
	srv_logline_mem(l, key, text, (size_t)n);
}

void srv_logline_addr(struct srv_logline *l, const char *key,
		      const struct sockaddr *sa, socklen_t salen,
		      bool with_port)
{
	char text[sizeof(struct sockaddr_un) + 8];
	size_t n = srv_log_addr(text, sizeof(text), sa, salen, with_port);

	if (n >= sizeof(text))
		n = sizeof(text) - 1;
	srv_logline_mem(l, key, text, n);
}

/* One datagram: the syslog header, then the line. */
static void emit_syslog(const struct srv_logline *l, const char *s, size_t n)
{
	char head[96];
	int h = snprintf(head, sizeof(head),
			 "<%d>%s[%ld]: ", log_cfg.facility | (int)l->level,
			 log_cfg.ident, (long)getpid());
	struct iovec iov[2] = {
		{.iov_base = head, .iov_len = (size_t)h},
		{.iov_base = (void *)s, .iov_len = n},
	};
	struct msghdr msg = {
		.msg_name = &log_cfg.addr,
		.msg_namelen = log_cfg.addrlen,
		.msg_iov = iov,
		.msg_iovlen = 2,
	};
	ssize_t w;

	do {
		w = sendmsg(log_cfg.sock, &msg, MSG_NOSIGNAL);
	} while (w < 0 && errno == EINTR);
	if (w != (ssize_t)(n + (size_t)h))
		atomic_fetch_add(&log_drops, 1);
}

static void emit_fd(const char *s, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(log_cfg.fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			atomic_fetch_add(&log_drops, 1);
			return;
		}
		s += w;
		n -= (size_t)w;
	}
}

void srv_logline_end(struct srv_logline *l)
{
	if (l->truncated) {
		/* TAIL_RESERVE keeps room for this. */
		memcpy(l->buf + l->len, " truncated=1", 12);
		l->len += 12;
	}
	/* The first key's leading space is not sent. */
	if (log_cfg.target == SRV_LOG_SYSLOG) {
		emit_syslog(l, l->buf + 1, l->len - 1);
	} else {
		l->buf[l->len++] = '\n';
		emit_fd(l->buf + 1, l->len - 1);
	}
}

/* ------------------------------------------------------------------ */

void srv_vlogkv(enum srv_log_level level, uint64_t conn_id, const char *event,
		va_list ap)
{
	struct srv_logline l;
	const char *key, *value;

	if (!srv_logline_begin(&l, level, conn_id, event))
		return;
	while ((key = va_arg(ap, const char *)) != NULL) {
		value = va_arg(ap, const char *);
		srv_logline_str(&l, key, value);
	}
	srv_logline_end(&l);
}

void srv_logkv(enum srv_log_level level, uint64_t conn_id, const char *event,
	       ...)
{
	va_list ap;

	va_start(ap, event);
	srv_vlogkv(level, conn_id, event, ap);
	va_end(ap);
}

static size_t addr_unix(char *buf, size_t size, const struct sockaddr_un *un,
			socklen_t salen, bool with_port)
{
	size_t off = offsetof(struct sockaddr_un, sun_path), n;

	if (!with_port)
		return (size_t)snprintf(buf, size, "unix");
	if (salen <= off || (un->sun_path[0] == '\0' && salen == off + 1))
		return (size_t)snprintf(buf, size, "unix:");
	n = salen - off;
	if (n > sizeof(un->sun_path))
		n = sizeof(un->sun_path);
	if (un->sun_path[0] == '\0')
		return (size_t)snprintf(buf, size, "unix:@%.*s", (int)(n - 1),
					un->sun_path + 1);
	return (size_t)snprintf(buf, size, "unix:%.*s",
				(int)strnlen(un->sun_path, n), un->sun_path);
}

size_t srv_log_addr(char *buf, size_t size, const struct sockaddr *sa,
		    socklen_t salen, bool with_port)
{
	char ip[INET6_ADDRSTRLEN];
	const struct sockaddr_in6 *s6;
	const struct sockaddr_in *s4;
	struct in_addr v4;

	if (sa == NULL || salen < (socklen_t)sizeof(sa_family_t))
		return (size_t)snprintf(buf, size, "unknown");
	switch (sa->sa_family) {
	case AF_INET:
		if (salen < (socklen_t)sizeof(*s4))
			break;
		s4 = (const struct sockaddr_in *)(const void *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		if (!with_port)
			return (size_t)snprintf(buf, size, "%s", ip);
		return (size_t)snprintf(buf, size, "%s:%u", ip,
					ntohs(s4->sin_port));
	case AF_INET6:
		if (salen < (socklen_t)sizeof(*s6))
			break;
		s6 = (const struct sockaddr_in6 *)(const void *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			memcpy(&v4, &s6->sin6_addr.s6_addr[12], 4);
			inet_ntop(AF_INET, &v4, ip, sizeof(ip));
			if (!with_port)
				return (size_t)snprintf(buf, size, "%s", ip);
			return (size_t)snprintf(buf, size, "%s:%u", ip,
						ntohs(s6->sin6_port));
		}
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		if (!with_port)
			return (size_t)snprintf(buf, size, "%s", ip);
		return (size_t)snprintf(buf, size, "[%s]:%u", ip,
					ntohs(s6->sin6_port));
	case AF_UNIX:
		return addr_unix(buf, size,
				 (const struct sockaddr_un *)(const void *)sa,
				 salen, with_port);
	default:
		break;
	}
	return (size_t)snprintf(buf, size, "af%d", (int)sa->sa_family);
}

void srv_log_auth(uint64_t conn_id, bool ok, const char *service,
		  const struct sockaddr *sa, socklen_t salen, const char *user,
		  const char *mech, const char *reason)
{
	struct srv_logline l;

	if (!srv_logline_begin(&l, ok ? SRV_LOG_INFO : SRV_LOG_WARN, conn_id,
			       "auth"))
		return;
	srv_logline_str(&l, "result", ok ? "ok" : "fail");
	srv_logline_str(&l, "service", service ? service : "unknown");
	srv_logline_addr(&l, "ip", sa, salen, false);
	srv_logline_str(&l, "user", user);
	srv_logline_str(&l, "mech", mech);
	srv_logline_str(&l, "reason", reason);
	srv_logline_end(&l);
}
