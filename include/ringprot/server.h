/* SPDX-License-Identifier: BSD-3-Clause */
/* server/: the runtime that turns a handler into a daemon. */
#ifndef RINGPROT_SERVER_H
#define RINGPROT_SERVER_H

/*
 * A service author writes one function, int handler(struct srv_conn *c),
 * in the blocking style of Cyrus daemons on c->in and c->out; the runtime
 * listens, accepts, runs each connection as a fiber on one of its worker
 * threads (one loop each), enforces limits, speaks PROXY protocol and
 * implicit TLS before the handler runs, parks idle connections without a
 * fiber, drains on SIGTERM and closes what the handler leaves open.
 *
 * Conventions: every int function returns 0 (or a count) or -errno.
 * Calls marked UR_MAY_YIELD park the calling fiber. A connection belongs
 * to one worker thread for its whole life: call srv_conn_* functions on
 * that thread (from its fiber), except those marked thread-safe.
 *
 * Lifecycle of a server:
 *   srv_new -> srv_service_add (one per protocol) -> srv_listen (one or
 *   more per service) -> srv_start (threads up, accepting) -> srv_run
 *   (signals on the calling thread until stopped) -> srv_free.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include <ringprot/common.h>
#include <ringprot/prot.h>
#include <ringprot/uring.h>

struct srv;
struct srv_service;

/*
 * ---------------------------------------------------------------------
 * Connections.
 * ---------------------------------------------------------------------
 */

/* The address text of a peer: "192.0.2.1", "2001:db8::1", "unix". */
#define SRV_IP_MAX 46

/*
 * What a handler sees of its connection. Fields are read-only for the
 * handler except data. The runtime keeps private state after this
 * struct.
 */
struct srv_conn {
	struct protstream *in;	/* read stream on the connection */
	struct protstream *out; /* write stream on the connection */
	uint64_t id;		/* unique in the process, from 1; in logs */
	int fd;			/* the socket; UR_FIXED(slot) if direct */
	unsigned worker;	/* index of the worker thread serving it */
	struct srv_service *service;
	/*
	 * The client and the address it reached. Behind a trusted proxy
	 * (PROXY protocol) these are the original client's, and proxied
	 * is set. A Unix socket peer has family AF_UNIX and peer_ip "unix".
	 */
	struct sockaddr_storage peer, local;
	char peer_ip[SRV_IP_MAX];
	uint16_t peer_port;
	bool proxied;
	bool tls;    /* TLS is on (implicit, or after srv_conn_starttls) */
	bool secure; /* TLS, or a loopback or Unix socket peer */
	void *data;  /* free for the handler */
};

/*
 * The handler: serves one connection. Returning 0 closes it normally,
 * -errno closes it and logs the error, srv_park()'s result parks it.
 * On return the runtime flushes c->out (best effort, bounded by the
 * write timeout), frees the streams and closes the socket.
 */
typedef int srv_handler_fn(struct srv_conn *c);

/*
 * Allocate n bytes that live until the connection is closed (freed in
 * one go then). Returns NULL when out of memory. Zeroed.
 */
RINGPROT_API void *srv_conn_alloc(struct srv_conn *c, size_t n);

/* Run fn(arg) when c is closed, after the streams are freed, newest
 * first. Returns 0 or -ENOMEM. */
typedef void srv_cleanup_fn(void *arg);
RINGPROT_API int srv_conn_on_close(struct srv_conn *c, srv_cleanup_fn *fn,
				   void *arg) RINGPROT_MUST_CHECK;

/*
 * Read one line of at most max bytes (LF included) into *line (reset
 * first; the bytes are a C string without the CR LF or LF). Returns the
 * line's length; -EMSGSIZE when the line is longer than max (the rest
 * of it is read and dropped, so the next call starts on the next line;
 * *line then holds the first max bytes); -ENOTCONN at end of input (a
 * last line without LF is returned first); -ETIMEDOUT when the read
 * timeout passed; -EIO (or the stream's -errno) on error; -ENOMEM.
 * UR_MAY_YIELD.
 */
struct buf;
RINGPROT_API int srv_readline(struct protstream *in, struct buf *line,
			      size_t max) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * ---------------------------------------------------------------------
 * Parking: an idle connection without a fiber.
 *
 * return srv_park(c, resume) hands c back to the runtime: the handler's
 * fiber ends and its stack goes back to the pool. What remains is the
 * connection record, its two streams with their buffers released
 * (prot_release), one pending poll on the socket and one timer for the
 * earliest wait event of c->in. When input arrives, a wait event is
 * due, a notification comes (srv_conn_notify) or the server shuts down,
 * a fresh fiber runs the due wait events (the Cyrus contract: on the
 * stream's fiber, free to write and flush) and then resume(c, wake),
 * which returns as a handler does (and may park again).
 *
 * Before parking, c->out is flushed. If input is already buffered (in
 * the stream, or inside TLS or DEFLATE), a notification is pending or a
 * wait event is due, resume runs at once on the same fiber: no input
 * is ever stranded. Nothing of the streams' state is lost across a park
 * (layers, wait events, timeouts).
 * ---------------------------------------------------------------------
 */
enum srv_wake {
	SRV_WAKE_INPUT = 1,    /* bytes (or the end) arrived on c->in */
	SRV_WAKE_EVENT = 2,    /* wait events of c->in were due (they ran) */
	SRV_WAKE_NOTIFY = 4,   /* srv_conn_notify() */
	SRV_WAKE_SHUTDOWN = 8, /* the server is stopping: say goodbye */
};
typedef int srv_resume_fn(struct srv_conn *c, unsigned wake);

/* What srv_park() returns, for the handler to return. */
#define SRV_PARK 1

/* Mark c to park with resume when the handler returns; returns SRV_PARK. */
RINGPROT_API int srv_park(struct srv_conn *c, srv_resume_fn *resume);

/*
 * Thread-safe: wake c with SRV_WAKE_NOTIFY (parked), or make its next
 * park resume at once (running). Notifications coalesce. The caller must
 * hold a reference (srv_conn_ref) if c may close meanwhile. Returns 0,
 * -ENOTCONN if c is closed, -ENOMEM.
 */
RINGPROT_API int srv_conn_notify(struct srv_conn *c) RINGPROT_MUST_CHECK;

/*
 * Consume a pending notification of the running connection: true if one
 * came since the last park or take (a handler that waits in a read of
 * its own can poll it).
 */
RINGPROT_API bool srv_conn_take_notify(struct srv_conn *c);

/* References (thread-safe): keep c's record valid after it closes. */
RINGPROT_API void srv_conn_ref(struct srv_conn *c);
RINGPROT_API void srv_conn_unref(struct srv_conn **cp);

/*
 * ---------------------------------------------------------------------
 * TLS on a connection (needs a server with TLS set up: srv_set_tls_ctx).
 * ---------------------------------------------------------------------
 */

/*
 * STARTTLS: write the reply to c->out first, then call this. Runs the
 * handshake (pl_tls_accept) within the service's handshake timeout.
 * Returns 0; -ENOTSUP (no TLS configured), -EALREADY, or the handshake's
 * error (the connection must then be closed: return from the handler).
 */
RINGPROT_API int srv_conn_starttls(struct srv_conn *c) RINGPROT_MUST_CHECK
	UR_MAY_YIELD;

/*
 * ---------------------------------------------------------------------
 * Authentication through SASL (needs srv_set_sasl; built with libsasl2).
 * Plaintext mechanisms (and srv_conn_login) are offered only on a
 * secure connection (TLS, loopback, Unix socket) unless the server
 * allows plaintext. Every outcome is logged in the fixed fail2ban shape
 * (srv-log.h) and counted; a failure is answered only after a delay
 * that grows with the client address's recent failures.
 * ---------------------------------------------------------------------
 */

/*
 * The protocol's framing of an exchange: send_challenge writes one
 * challenge (base64, may be "") as the protocol wants it (IMAP
 * "+ b64\r\n", SMTP/LMTP "334 b64\r\n") and flushes, 0 or -errno;
 * read_response reads the client's line without CR LF into buf
 * (NUL-terminated) and returns its length, or -errno (-EMSGSIZE when it
 * does not fit). Both may yield.
 */
struct srv_sasl_io {
	int (*send_challenge)(struct srv_conn *c, const char *b64);
	ssize_t (*read_response)(struct srv_conn *c, char *buf, size_t size);
};

/*
 * The mechanisms c may use now, space separated (for CAPABILITY, EHLO):
 * *list_out is owned by c, valid until the next call. Returns their
 * count, -ENOTSUP (no SASL set up), -ENOMEM.
 */
RINGPROT_API int srv_conn_sasl_mechs(struct srv_conn *c,
				     const char **list_out) RINGPROT_MUST_CHECK;

/* May c use plaintext passwords (LOGIN, PLAIN) now? */
RINGPROT_API bool srv_conn_plaintext_ok(const struct srv_conn *c);

/*
 * Authenticate c with mechanism mech; initial is the client's initial
 * response in base64 ("=" for an empty one, RFC 4959) or NULL. Returns 0
 * with *user_out the user (owned by c, valid until it closes);
 * -EACCES (failed), -ECANCELED (the client sent "*"), -EPROTO (bad
 * base64 or a malformed response), -ENOPROTOOPT (mechanism unknown or
 * not allowed now), -EMSGSIZE, -ENOTSUP, or the io callbacks' -errno.
 * UR_MAY_YIELD (the exchange, the failure delay).
 */
RINGPROT_API int srv_conn_authenticate(struct srv_conn *c, const char *mech,
				       const char *initial,
				       const struct srv_sasl_io *io,
				       const char **user_out)
	RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * Check a plaintext password (IMAP LOGIN) through SASL's password
 * check: 0 with *user_out (owned by c), -EACCES, -EPERM (plaintext not
 * allowed on this connection: nothing is checked or logged), -ENOTSUP.
 * UR_MAY_YIELD (the failure delay).
 */
RINGPROT_API int srv_conn_login(struct srv_conn *c, const char *user,
				const char *pass, const char **user_out)
	RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * ---------------------------------------------------------------------
 * Services and listeners.
 * ---------------------------------------------------------------------
 */
struct srv_service_opts {
	const char *name; /* "imap", "lmtp": logs, config section; copied */
	/* The service name SASL sees (DIGEST-MD5's digest-uri, GSSAPI's
	 * principal, sasldb's entries per service): NULL for name; an
	 * implicit-TLS "imaps" service says "imap". Copied. */
	const char *sasl_service;
	srv_handler_fn *handler;
	void *data; /* srv_service_data() */
	/* Limits (0: none). */
	unsigned max_conns;	   /* open connections of this service */
	unsigned max_conns_per_ip; /* ... from one client address */
	/*
	 * What a client over a limit gets: with busy_reply set, its
	 * connection is accepted, sent busy_reply (e.g. "* BYE Too many
	 * connections\r\n") and closed; without, the service stops
	 * accepting while at max_conns (clients wait in the backlog) and
	 * a per-IP refusal is a plain close.
	 */
	const char *busy_reply;
	unsigned idle_timeout_s;   /* c->in read timeout (prot_settimeout) */
	unsigned write_timeout_s;  /* c->out write timeout */
	unsigned tls_timeout_ms;   /* handshake, 0: 30 s */
	unsigned proxy_timeout_ms; /* PROXY header, 0: 5 s */
};

/*
 * Add a service to s (before srv_start). Returns 0 with *svc_out set
 * (owned by s), -EINVAL (no name or handler), -EEXIST (name taken),
 * -ENOMEM.
 */
RINGPROT_API int srv_service_add(struct srv *s,
				 const struct srv_service_opts *o,
				 struct srv_service **svc_out) RINGPROT_MUST_CHECK;
RINGPROT_API void *srv_service_data(const struct srv_service *svc);
/* The service of s named name, or NULL. */
RINGPROT_API struct srv_service *srv_service_find(const struct srv *s,
						  const char *name);
RINGPROT_API const char *srv_service_name(const struct srv_service *svc);

struct srv_listen_opts {
	/*
	 * "127.0.0.1:143", "[::1]:143", "*:143" (every IPv4 and IPv6
	 * address), "localhost:143" (resolved at start), port 0 for an
	 * ephemeral port; "unix:/path/to/socket"; "systemd:name" (an fd
	 * passed by systemd socket activation with that FileDescriptorName;
	 * "systemd:" alone takes every passed fd without a name match).
	 */
	const char *addr;
	bool tls;   /* implicit TLS: handshake before the handler runs */
	bool proxy; /* a PROXY v1/v2 header comes first */
	/* Sources allowed to send one ("127.0.0.1 10.0.0.0/8 ::1"); NULL:
	 * every source (with proxy set). A header from another source, or
	 * a malformed one, closes the connection with a log line. */
	const char *proxy_trusted;
	unsigned backlog;	    /* 0: 1024 */
	unsigned unix_mode;	    /* unix: chmod, 0: 0666 */
	const char *unix_owner;	    /* unix: chown user, NULL: keep */
	const char *unix_group;	    /* unix: chown group, NULL: keep */
};

/*
 * Open a listener for svc (before srv_start): the socket is made, bound
 * and listening when this returns (so a port in use fails here). TCP
 * listeners get one SO_REUSEPORT socket per worker. Returns 0; -EINVAL
 * with *errstr_out (static or owned by s, valid until srv_free) saying
 * what is wrong with the address; -EADDRINUSE, -EACCES...
 */
RINGPROT_API int srv_listen(struct srv_service *svc,
			    const struct srv_listen_opts *o,
			    const char **errstr_out) RINGPROT_MUST_CHECK;

/*
 * The address a listener of svc is bound to (index i in the order of
 * srv_listen calls; a "systemd:" listen may add several), for logs and
 * tests with port 0. Returns 0, -ENOENT.
 */
RINGPROT_API int srv_listen_addr(const struct srv_service *svc, unsigned i,
				 struct sockaddr_storage *addr_out,
				 socklen_t *len_out) RINGPROT_MUST_CHECK;

/*
 * ---------------------------------------------------------------------
 * The server.
 * ---------------------------------------------------------------------
 */
struct srv_opts {
	unsigned workers;      /* worker threads, 0: the number of CPUs */
	unsigned max_conns;    /* all services together, 0: none */
	unsigned drain_ms;     /* stop: time connections get to finish,
				  0: 10 s */
	bool direct;	       /* connections as direct descriptors */
	unsigned direct_files; /* per worker, 0: 16384 (with direct) */
	unsigned napi_us;      /* NAPI busy polling (ur_loop_napi), 0: off */
	struct ur_loop_opts loop; /* each worker's loop */
};

RINGPROT_API int srv_new(const struct srv_opts *o,
			 struct srv **s_out) RINGPROT_MUST_CHECK;

/*
 * TLS: the SSL_CTX implicit-TLS listeners and srv_conn_starttls use.
 * s takes a reference (SSL_CTX_up_ref); thread-safe: a new context
 * replaces the old one for new handshakes, and connections keep the one
 * they started with. NULL turns TLS off.
 */
struct ssl_ctx_st;
RINGPROT_API int srv_set_tls_ctx(struct srv *s,
				 struct ssl_ctx_st *ctx) RINGPROT_MUST_CHECK;

/*
 * SASL for the server's connections (before srv_start): libsasl2 is set
 * up once per process (sasldb by default: its file is checked now, so a
 * missing or unreadable one is a start-up error with *errstr_out
 * saying why). Returns 0, -EALREADY, -ENOENT/-EACCES..., -ENOTSUP.
 */
struct srv_sasl_opts {
	const char *appname;	    /* SASL config name; NULL: "ringprot" */
	const char *sasldb_path;    /* auxprop's sasldb */
	const char *pwcheck_method; /* "auxprop" (NULL) or "saslauthd" */
	const char *saslauthd_path; /* saslauthd's socket; NULL: default */
	const char *mech_list;	    /* NULL: every installed mechanism */
	const char *realm;	    /* NULL: none */
	const char *fqdn;	    /* the server's name; NULL: "localhost" */
	bool allowplaintext;	    /* plaintext passwords without TLS */
};
RINGPROT_API int srv_set_sasl(struct srv *s, const struct srv_sasl_opts *o,
			      const char **errstr_out) RINGPROT_MUST_CHECK;

/*
 * Start the workers: each makes its loop (the listening sockets are
 * already open: clients may connect and wait in the backlog). Accepting
 * starts with srv_run. Returns 0, or -errno (a loop that cannot be
 * made: every worker is stopped again).
 */
RINGPROT_API int srv_start(struct srv *s) RINGPROT_MUST_CHECK;

/*
 * Hooks srv_run calls on the calling thread (NULL: defaults).
 */
struct srv_run_hooks {
	void (*reload)(struct srv *s, void *arg); /* SIGHUP */
	void (*dump)(struct srv *s, void *arg);	  /* SIGUSR1 */
	void *arg;
};

/*
 * Serve until srv_stop() or SIGTERM/SIGINT (which start a drain): the
 * workers start accepting, and the calling thread handles the signals (SIGHUP and SIGUSR1 call
 * the hooks) and waits for the workers. The signals are blocked in every
 * worker thread. Returns 0, or -errno from its own loop.
 */
RINGPROT_API int srv_run(struct srv *s,
			 const struct srv_run_hooks *hooks) RINGPROT_MUST_CHECK;

/*
 * Stop (thread-safe, from any thread or a handler): listeners close,
 * parked connections are woken with SRV_WAKE_SHUTDOWN, running ones get
 * drain_ms to finish, then their fibers are cancelled. srv_run returns
 * once every worker is done.
 */
RINGPROT_API void srv_stop(struct srv *s);

/*
 * ---------------------------------------------------------------------
 * srv_main: a whole daemon from a table of services. It reads the
 * command line (-C file, -o key=value, -l, -p, -e, -w, -D, -n,
 * --check-config, the program's own flags) and the configuration
 * (srv-config.h: the runtime's keys, listed by --help, plus the
 * program's), then sets up logging, the program (setup hook),
 * listeners, pidfile, TLS, privilege drop, SASL and the workers, and
 * serves until SIGTERM/SIGINT (drain); SIGHUP reloads the configuration
 * file and the certificate, SIGUSR1 logs the counters. With
 * metrics_listen set, GET /metrics serves them in Prometheus's text
 * format. Each start-up failure is one line on stderr and exit status
 * 1 (2: usage). Returns the exit status.
 * ---------------------------------------------------------------------
 */
struct srv_config;
struct srv_cfg_key;

struct srv_main_service {
	/* name, handler, data; limits and timeouts are defaults that the
	 * configuration overrides (service_max_conns, max_conns_per_ip,
	 * idle_timeout, write_timeout...). */
	struct srv_service_opts opts;
	const char *default_listen; /* when the configuration names none */
	bool sasl;		    /* uses srv_conn_authenticate/login */
};

/* A program flag: -opt sets assign ("key=value") as -o would. */
struct srv_main_flag {
	char opt;
	const char *assign;
	const char *help;
};

struct srv_main_opts {
	const char *prog;    /* for usage, errors, syslog */
	const char *summary; /* one line for --help */
	const struct srv_main_service *services;
	size_t nservices;
	const struct srv_cfg_key *keys; /* the program's own options */
	size_t nkeys;
	const struct srv_main_flag *flags;
	size_t nflags;
	/* After the configuration is read, before listening: 0, or -errno
	 * after printing why (start-up stops). */
	int (*setup)(struct srv *s, const struct srv_config *cfg, void *arg);
	/* Listening, about to serve (print how to reach the server). */
	void (*started)(struct srv *s, void *arg);
	/* Served and stopped, before the server is freed. */
	void (*stopped)(struct srv *s, void *arg);
	void *arg;
};

RINGPROT_API int srv_main(int argc, char **argv,
			  const struct srv_main_opts *mo);

/*
 * The configuration srv_main runs with now (replaced by a SIGHUP
 * reload; an old one stays valid until srv_main returns), or NULL for a
 * server not made by srv_main.
 */
RINGPROT_API const struct srv_config *srv_main_config(const struct srv *s);

/* Free s (after srv_run returned, or if never started). Accepts NULL. */
RINGPROT_API void srv_free(struct srv **sp);

/* Counters of the whole server (sums over workers). */
struct srv_stats {
	uint64_t conns_open;
	uint64_t conns_parked;
	uint64_t conns_total;
	uint64_t refused; /* limits */
	uint64_t accept_errors;
	uint64_t proxy_errors;
	uint64_t tls_failures;
};
RINGPROT_API void srv_stats(const struct srv *s, struct srv_stats *out);

/*
 * Print "listening on ADDR (engine)" for each listener of svc ("[v6]:port"
 * for IPv6, the path for a Unix socket), then flush out: what a program
 * tells its user (and a test reads) once srv_start has bound the ports.
 */
RINGPROT_API void srv_print_listeners(const struct srv *s,
				      const struct srv_service *svc, FILE *out);

/* Worker count. */
RINGPROT_API unsigned srv_workers(const struct srv *s);

/*
 * The engine the workers run on, as "io_uring defer-taskrun" or
 * "epoll" (after srv_start; "none" before). Static text.
 */
RINGPROT_API const char *srv_engine(const struct srv *s);

#endif /* RINGPROT_SERVER_H */
