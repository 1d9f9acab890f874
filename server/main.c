/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * server/main: srv_main, a whole daemon from a table of services.
 *
 * The order of start-up is the one every step needs: command line and
 * config (--check-config stops after it), logging, the program's setup,
 * listeners bound (a port in use fails here, as root if we are), pidfile,
 * TLS context (key files are often root's), privilege drop, SASL (its
 * sasldb must be readable by the user we run as), threads, serve. Each
 * failure is one line on stderr naming what and why, and exit status 1
 * (2 for usage errors).
 *
 * SIGHUP re-reads the configuration (the same files and -o overrides):
 * a bad file is logged and the running configuration stays; a good one
 * swaps the TLS context (new handshakes see it, open connections keep
 * theirs) and the log level. Listeners, workers and limits are kept: a
 * change there is logged as needing a restart. Replaced configurations
 * stay allocated until exit (a handler may hold strings of them).
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <ringprot/srv-config.h>

#include "internal.h"
#include "metrics.h"
#include "sd.h"
#ifdef RINGPROT_HAVE_TLS
#include <openssl/ssl.h>

#include "tls.h"
#endif

#define MAX_OVERRIDES 64
#define MAX_CONFIGS   16

static const struct srv_cfg_key runtime_keys[] = {
	/* Workers and engine. */
	{"workers", SRV_CFG_INT, "0", NULL, 0, 1024, SRV_CFG_GLOBAL_ONLY,
	 "worker threads (0: one per CPU)"},
	{"engine", SRV_CFG_ENUM, "auto",
	 "auto|epoll|uring|defer|coop|plain|sqpoll", 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "kernel interface: io_uring (a ring mode) or epoll"},
	{"sqpoll_cpu", SRV_CFG_INT, "-1", NULL, -1, 4095, SRV_CFG_GLOBAL_ONLY,
	 "engine sqpoll: pin the poller thread to this CPU (-1: no)"},
	{"direct", SRV_CFG_BOOL, "no", NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "connections as direct descriptors (outside the fd table)"},
	{"direct_files", SRV_CFG_INT, "16384", NULL, 16, 1 << 20,
	 SRV_CFG_GLOBAL_ONLY, "direct descriptor table per worker"},
	{"napi_busy_poll", SRV_CFG_INT, "0", NULL, 0, 1000000,
	 SRV_CFG_GLOBAL_ONLY, "NAPI busy polling, microseconds"},
	{"max_conns", SRV_CFG_INT, "0", NULL, 0, 100000000,
	 SRV_CFG_GLOBAL_ONLY, "open connections in all (0: no limit)"},
	{"drain_timeout", SRV_CFG_MS, "10s", NULL, 0, 3600000,
	 SRV_CFG_GLOBAL_ONLY, "on stop: time connections get to finish"},
	/* Process. */
	{"pidfile", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "write the process id here"},
	{"user", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "run as this user after binding"},
	{"group", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "run as this group (default: the user's)"},
	{"chroot", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "chroot here before dropping privileges"},
	{"log_target", SRV_CFG_ENUM, "stderr", "stderr|syslog", 0, 0,
	 SRV_CFG_GLOBAL_ONLY, "where log lines go"},
	{"log_level", SRV_CFG_ENUM, "info", "err|warn|info|debug", 0, 0,
	 SRV_CFG_GLOBAL_ONLY, "lowest level logged"},
	{"syslog_facility", SRV_CFG_ENUM, "mail",
	 "mail|daemon|local0|local1|local2|local3|local4|local5|local6|local7",
	 0, 0, SRV_CFG_GLOBAL_ONLY, "syslog facility"},
	{"metrics_listen", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "serve GET /metrics (Prometheus text) on this address"},
	{"servername", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "this server's name (default: the host name)"},
	/* Listeners and limits, global or per service. */
	{"listen", SRV_CFG_LIST, NULL, NULL, 0, 0, 0,
	 "plaintext listen addresses (host:port, [v6]:port, *:port, "
	 "unix:/path, systemd:name)"},
	{"tls_listen", SRV_CFG_LIST, NULL, NULL, 0, 0, 0,
	 "implicit TLS listen addresses"},
	{"proxy_protocol", SRV_CFG_BOOL, "no", NULL, 0, 0, 0,
	 "a PROXY v1/v2 header starts every connection"},
	{"proxy_trusted", SRV_CFG_LIST, NULL, NULL, 0, 0, 0,
	 "sources allowed to send a PROXY header (default: all)"},
	{"backlog", SRV_CFG_INT, "1024", NULL, 1, 65535, 0,
	 "listen backlog"},
	{"unix_mode", SRV_CFG_STR, "0666", NULL, 0, 0, 0,
	 "Unix socket file mode (octal)"},
	{"unix_owner", SRV_CFG_STR, NULL, NULL, 0, 0, 0,
	 "Unix socket file owner"},
	{"unix_group", SRV_CFG_STR, NULL, NULL, 0, 0, 0,
	 "Unix socket file group"},
	{"service_max_conns", SRV_CFG_INT, "0", NULL, 0, 100000000, 0,
	 "open connections of the service (0: no limit)"},
	{"max_conns_per_ip", SRV_CFG_INT, "0", NULL, 0, 1000000, 0,
	 "open connections from one client address (0: no limit)"},
	{"idle_timeout", SRV_CFG_MS, NULL, NULL, 0, 0, 0,
	 "close a connection whose client says nothing this long"},
	{"write_timeout", SRV_CFG_MS, NULL, NULL, 0, 0, 0,
	 "close a connection whose client reads nothing this long"},
	{"tls_handshake_timeout", SRV_CFG_MS, "30s", NULL, 0, 0, 0,
	 "TLS handshake time limit"},
	{"proxy_timeout", SRV_CFG_MS, "5s", NULL, 0, 0, 0,
	 "PROXY header time limit"},
	/* TLS. */
	{"tls_cert_file", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "PEM certificate (and chain)"},
	{"tls_key_file", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "PEM private key (default: in tls_cert_file)"},
	{"tls_chain_file", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "extra chain certificates"},
	{"tls_ciphers", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "TLS 1.2 cipher list"},
	{"tls_ciphersuites", SRV_CFG_STR, NULL, NULL, 0, 0,
	 SRV_CFG_GLOBAL_ONLY, "TLS 1.3 cipher suites"},
	{"tls_min_version", SRV_CFG_ENUM, "TLSv1.2",
	 "TLSv1|TLSv1.1|TLSv1.2|TLSv1.3", 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "oldest protocol version"},
	{"tls_max_version", SRV_CFG_ENUM, NULL,
	 "TLSv1|TLSv1.1|TLSv1.2|TLSv1.3", 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "newest protocol version"},
	{"tls_client_ca_file", SRV_CFG_STR, NULL, NULL, 0, 0,
	 SRV_CFG_GLOBAL_ONLY, "CAs for client certificates"},
	{"tls_verify_client", SRV_CFG_ENUM, "none", "none|optional|require",
	 0, 0, SRV_CFG_GLOBAL_ONLY, "ask for client certificates"},
	{"tls_session_timeout", SRV_CFG_MS, "1h", NULL, 0, 86400000,
	 SRV_CFG_GLOBAL_ONLY, "TLS session lifetime"},
	/* SASL. */
	{"sasldb_path", SRV_CFG_STR, "/etc/sasldb2", NULL, 0, 0,
	 SRV_CFG_GLOBAL_ONLY, "the sasldb (pwcheck auxprop)"},
	{"sasl_pwcheck_method", SRV_CFG_ENUM, "auxprop", "auxprop|saslauthd",
	 0, 0, SRV_CFG_GLOBAL_ONLY, "how passwords are checked"},
	{"saslauthd_path", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "saslauthd's socket"},
	{"sasl_mech_list", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "mechanisms offered (default: every installed one)"},
	{"sasl_realm", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "realm of user names"},
	{"allowplaintext", SRV_CFG_BOOL, "no", NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "allow plaintext passwords without TLS (loopback is always "
	 "secure)"},
};

struct main_ctx {
	int argc;
	char **argv;
	const struct srv_main_opts *mo;
	const char *config_path;
	const char *overrides[MAX_OVERRIDES];
	unsigned noverrides;
	struct srv_config *cfg; /* current */
	struct srv_config *old[MAX_CONFIGS];
	unsigned nold;
	struct srv *s;
	struct srv_service *svcs[SRV__MAX_SERVICES];
	bool tls_on;
	bool pid_written; /* ours to remove at exit */
	/* The program's services and "metrics": config sections. */
	const char *svc_names[SRV__MAX_SERVICES + 1];
#ifdef RINGPROT_HAVE_TLS
	struct srv__tls *tls;
#endif
	char override_buf[MAX_OVERRIDES][512];
};

__attribute__((format(printf, 2, 3))) static void say(const struct main_ctx *m,
						      const char *fmt, ...)
{
	va_list ap;

	(void)fprintf(stderr, "%s: ", m->mo->prog);
	va_start(ap, fmt);
	(void)vfprintf(stderr, fmt, ap);
	va_end(ap);
	(void)fputc('\n', stderr);
}

static void usage(const struct main_ctx *m, FILE *out)
{
	const struct srv_main_opts *mo = m->mo;

	(void)fprintf(out, "usage: %s [options]\n", mo->prog);
	if (mo->summary != NULL)
		(void)fprintf(out, "%s\n", mo->summary);
	(void)fprintf(
		out,
		"  -C file         configuration file (key: value lines)\n"
		"  -o key=value    set an option (service.key=value for one "
		"service)\n"
		"  -l addr         listen address of the first service\n"
		"  -p pidfile      write the process id to pidfile\n"
		"  -e engine       auto, epoll, uring, defer, coop, plain, "
		"sqpoll\n"
		"  -w workers      worker threads (0: one per CPU)\n"
		"  -D              connections as direct descriptors\n"
		"  -n usecs        NAPI busy polling\n"
		"  --check-config  check the configuration, print it, exit\n"
		"  -h, --help      this text\n");
	for (size_t i = 0; i < mo->nflags; i++)
		(void)fprintf(out, "  -%c              %s\n",
			      mo->flags[i].opt, mo->flags[i].help);
	(void)fprintf(out, "Options (-o or the file; [service] sections):\n");
	for (size_t i = 0; i < sizeof(runtime_keys) / sizeof(runtime_keys[0]);
	     i++)
		(void)fprintf(out, "  %-22s %s\n", runtime_keys[i].name,
			      runtime_keys[i].help);
	for (size_t i = 0; i < mo->nkeys; i++)
		(void)fprintf(out, "  %-22s %s\n", mo->keys[i].name,
			      mo->keys[i].help != NULL ? mo->keys[i].help : "");
}

/* Queue the override a b c (concatenated; b and c may be NULL). */
static int add_override(struct main_ctx *m, const char *a, const char *b,
			const char *c)
{
	char *slot;

	if (m->noverrides == MAX_OVERRIDES) {
		say(m, "too many -o options");
		return -E2BIG;
	}
	slot = m->override_buf[m->noverrides];
	(void)snprintf(slot, sizeof(m->override_buf[0]), "%s%s%s", a,
		       b != NULL ? b : "", c != NULL ? c : "");
	m->overrides[m->noverrides++] = slot;
	return 0;
}

/* Build a configuration from the file and the overrides. */
static int config_build(struct main_ctx *m, struct srv_config **out,
			bool quiet_log)
{
	const struct srv_main_opts *mo = m->mo;
	struct srv_config *cfg;
	const char *err = NULL;
	int ret = srv_config_new(&cfg);

	if (ret < 0)
		return ret;
	ret = srv_config_add_keys(cfg, runtime_keys,
				  sizeof(runtime_keys) / sizeof(runtime_keys[0]));
	if (ret == 0 && mo->nkeys > 0)
		ret = srv_config_add_keys(cfg, mo->keys, mo->nkeys);
	if (ret == 0)
		ret = srv_config_set_services(cfg, m->svc_names,
					      mo->nservices + 1);
	if (ret < 0) {
		say(m, "program keys: %s", strerror(-ret));
		goto fail;
	}
	if (m->config_path != NULL) {
		ret = srv_config_load(cfg, m->config_path, &err);
		if (ret < 0)
			goto fail_err;
	}
	for (unsigned i = 0; i < m->noverrides; i++) {
		ret = srv_config_set(cfg, m->overrides[i], &err);
		if (ret < 0)
			goto fail_err;
	}
	*out = cfg;
	return 0;
fail_err:
	if (quiet_log)
		srv_logkv(SRV_LOG_ERR, 0, "config", "error", err, NULL);
	else
		say(m, "%s", err);
fail:
	srv_config_free(&cfg);
	return ret;
}

static int log_setup(struct main_ctx *m, const struct srv_config *cfg)
{
	static const int facilities[] = {LOG_MAIL,   LOG_DAEMON, LOG_LOCAL0,
					 LOG_LOCAL1, LOG_LOCAL2, LOG_LOCAL3,
					 LOG_LOCAL4, LOG_LOCAL5, LOG_LOCAL6,
					 LOG_LOCAL7};
	static const enum srv_log_level levels[] = {
		SRV_LOG_ERR, SRV_LOG_WARN, SRV_LOG_INFO, SRV_LOG_DEBUG};
	struct srv_log_opts lo = {
		.target = srv_config_enum(cfg, NULL, "log_target") == 1 ?
				  SRV_LOG_SYSLOG :
				  SRV_LOG_STDERR,
		.level = levels[srv_config_enum(cfg, NULL, "log_level")],
		.facility = facilities[srv_config_enum(cfg, NULL,
						       "syslog_facility")],
		.ident = m->mo->prog,
	};
	int ret = srv_log_open(&lo);

	if (ret < 0)
		say(m, "log: %s", strerror(-ret));
	return ret;
}

#ifdef RINGPROT_HAVE_TLS
static void tls_opts_of(const struct srv_config *cfg, struct srv__tls_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->cert_file = srv_config_str(cfg, NULL, "tls_cert_file");
	o->key_file = srv_config_str(cfg, NULL, "tls_key_file");
	o->chain_file = srv_config_str(cfg, NULL, "tls_chain_file");
	o->ciphers = srv_config_str(cfg, NULL, "tls_ciphers");
	o->ciphersuites = srv_config_str(cfg, NULL, "tls_ciphersuites");
	o->min_version = srv_config_str(cfg, NULL, "tls_min_version");
	o->max_version = srv_config_str(cfg, NULL, "tls_max_version");
	o->client_ca_file = srv_config_str(cfg, NULL, "tls_client_ca_file");
	o->verify_client = srv_config_enum(cfg, NULL, "tls_verify_client");
	o->session_timeout_s =
		(unsigned)(srv_config_ms(cfg, NULL, "tls_session_timeout") /
			   1000);
}

static int tls_setup(struct main_ctx *m)
{
	struct srv__tls_opts o;
	const char *err = NULL;
	SSL_CTX *ctx;
	int ret;

	tls_opts_of(m->cfg, &o);
	if (o.cert_file == NULL)
		return 0;
	ret = srv__tls_new(&o, &m->tls, &err);
	if (ret < 0) {
		say(m, "%s", err != NULL ? err : strerror(-ret));
		return ret;
	}
	ctx = srv__tls_ctx_ref(m->tls);
	ret = srv_set_tls_ctx(m->s, ctx);
	SSL_CTX_free(ctx);
	m->tls_on = ret == 0;
	return ret;
}
#endif

/* The listeners of one service: plaintext, then implicit TLS. */
static int listen_service(struct main_ctx *m, const struct srv_main_service *ms,
			  struct srv_service *svc)
{
	const struct srv_config *cfg = m->cfg;
	const char *name = ms->opts.name;
	const char *const *words, *const *trusted = NULL;
	struct srv_listen_opts lo = {0};
	char trust[1024] = "";
	size_t n;
	int ret;

	lo.proxy = srv_config_bool(cfg, name, "proxy_protocol");
	if (srv_config_list(cfg, name, "proxy_trusted", &trusted) > 0) {
		size_t off = 0;

		for (size_t i = 0; trusted[i] != NULL && off < sizeof(trust);
		     i++)
			off += (size_t)snprintf(trust + off,
						sizeof(trust) - off, "%s ",
						trusted[i]);
		lo.proxy_trusted = trust;
	}
	lo.backlog = (unsigned)srv_config_int(cfg, name, "backlog");
	lo.unix_mode = (unsigned)strtoul(srv_config_str(cfg, name, "unix_mode"),
					 NULL, 8);
	lo.unix_owner = srv_config_str(cfg, name, "unix_owner");
	lo.unix_group = srv_config_str(cfg, name, "unix_group");
	for (int pass = 0; pass < 2; pass++) {
		const char *key = pass == 0 ? "listen" : "tls_listen";
		const char *def[2] = {ms->default_listen, NULL};

		n = srv_config_list(cfg, name, key, &words);
		if (n == 0 && pass == 0 && ms->default_listen != NULL) {
			words = def;
			n = 1;
		}
		if (pass == 1 && n > 0 && !m->tls_on) {
			say(m, "%s.tls_listen needs tls_cert_file", name);
			return -EINVAL;
		}
		lo.tls = pass == 1;
		for (size_t i = 0; i < n; i++) {
			const char *err = NULL;

			lo.addr = words[i];
			ret = srv_listen(svc, &lo, &err);
			if (ret < 0) {
				say(m, "%s: cannot listen on %s", name,
				    err != NULL ? err : strerror(-ret));
				return ret;
			}
		}
	}
	return 0;
}

/* The internal metrics service: one HTTP request per connection. */
static int metrics_handler(struct srv_conn *c)
{
	struct srv *s = srv_service_data(c->service);
	int ret = srv__metrics_http(c->in, c->out, srv__metrics_render_cb,
				    s->metrics);

	return ret < 0 && ret != -EPIPE ? ret : 0;
}

static int engine_of(const struct srv_config *cfg, struct ur_loop_opts *lo)
{
	static const struct {
		enum ur_backend backend;
		enum ur_mode mode;
	} engines[] = {
		{UR_BACKEND_AUTO, UR_MODE_AUTO},  {UR_BACKEND_EPOLL, UR_MODE_AUTO},
		{UR_BACKEND_URING, UR_MODE_AUTO}, {UR_BACKEND_URING, UR_MODE_DEFER},
		{UR_BACKEND_URING, UR_MODE_COOP}, {UR_BACKEND_URING, UR_MODE_PLAIN},
		{UR_BACKEND_URING, UR_MODE_SQPOLL},
	};
	int e = srv_config_enum(cfg, NULL, "engine");
	int64_t cpu = srv_config_int(cfg, NULL, "sqpoll_cpu");

	if (e < 0)
		e = 0;
	lo->backend = engines[e].backend;
	lo->mode = engines[e].mode;
	if (cpu >= 0 && lo->mode == UR_MODE_SQPOLL) {
		lo->sqpoll_pin = true;
		lo->sqpoll_cpu = (unsigned)cpu;
	}
	return 0;
}

static void service_opts_of(const struct srv_config *cfg,
			    const struct srv_main_service *ms,
			    struct srv_service_opts *o)
{
	const char *n = ms->opts.name;

	*o = ms->opts;
	if (srv_config_is_set(cfg, n, "service_max_conns"))
		o->max_conns = (unsigned)srv_config_int(cfg, n,
							"service_max_conns");
	if (srv_config_is_set(cfg, n, "max_conns_per_ip"))
		o->max_conns_per_ip = (unsigned)srv_config_int(
			cfg, n, "max_conns_per_ip");
	if (srv_config_is_set(cfg, n, "idle_timeout"))
		o->idle_timeout_s =
			(unsigned)((srv_config_ms(cfg, n, "idle_timeout") + 999) /
				   1000);
	if (srv_config_is_set(cfg, n, "write_timeout"))
		o->write_timeout_s =
			(unsigned)((srv_config_ms(cfg, n, "write_timeout") + 999) /
				   1000);
	o->tls_timeout_ms =
		(unsigned)srv_config_ms(cfg, n, "tls_handshake_timeout");
	o->proxy_timeout_ms = (unsigned)srv_config_ms(cfg, n, "proxy_timeout");
}

static void on_reload(struct srv *s, void *arg)
{
	struct main_ctx *m = arg;
	struct srv_config *cfg;

	(void)s;
	if (config_build(m, &cfg, true) < 0)
		return; /* logged; the running configuration stays */
	if (m->nold == MAX_CONFIGS) {
		srv_logkv(SRV_LOG_ERR, 0, "config", "error",
			  "too many reloads: restart to reload again", NULL);
		srv_config_free(&cfg);
		return;
	}
	m->old[m->nold++] = m->cfg;
	m->cfg = cfg;
	(void)log_setup(m, cfg);
#ifdef RINGPROT_HAVE_TLS
	if (m->tls != NULL) {
		struct srv__tls_opts o;
		const char *err = NULL;
		SSL_CTX *ctx;

		tls_opts_of(cfg, &o);
		if (srv__tls_reload(m->tls, &o, &err) < 0) {
			srv_logkv(SRV_LOG_ERR, 0, "tls", "error", err,
				  "action", "kept the old certificate", NULL);
		} else {
			ctx = srv__tls_ctx_ref(m->tls);
			if (srv_set_tls_ctx(m->s, ctx) < 0)
				srv_logkv(SRV_LOG_ERR, 0, "tls", "error",
					  "out of memory", NULL);
			SSL_CTX_free(ctx);
			srv_logkv(SRV_LOG_INFO, 0, "tls", "action",
				  "certificate reloaded", NULL);
		}
	}
#endif
	srv_logkv(SRV_LOG_INFO, 0, "config", "action", "reloaded", "note",
		  "listeners, workers and limits change at restart", NULL);
}

static void on_dump(struct srv *s, void *arg)
{
	(void)arg;
	if (s->metrics != NULL)
		srv__metrics_log(s->metrics);
}

const struct srv_config *srv_main_config(const struct srv *s)
{
	return s->main_cfg != NULL ? *s->main_cfg : NULL;
}

/* One line per bound listener (ports chosen by the kernel included). */
static void log_listeners(const struct srv *s)
{
	for (unsigned k = 0; k < s->nservices; k++) {
		struct sockaddr_storage ss;
		socklen_t len;

		for (unsigned i = 0;
		     srv_listen_addr(s->services[k], i, &ss, &len) == 0; i++) {
			struct srv_logline l;

			if (!srv_logline_begin(&l, SRV_LOG_INFO, 0, "listen"))
				return;
			srv_logline_str(&l, "service", s->services[k]->name);
			srv_logline_addr(&l, "addr", (struct sockaddr *)&ss,
					 len, true);
			srv_logline_end(&l);
		}
	}
}

static int parse_cmdline(struct main_ctx *m, bool *check_out)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'C'},
		{"check-config", no_argument, NULL, 1},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const struct srv_main_opts *mo = m->mo;
	const char *first = mo->nservices > 0 ? mo->services[0].opts.name :
						"";
	char shorts[64] = "C:o:l:p:e:w:n:Dh";
	int opt;

	for (size_t i = 0; i < mo->nflags && strlen(shorts) + 2 < sizeof(shorts);
	     i++) {
		size_t len = strlen(shorts);

		shorts[len] = mo->flags[i].opt;
		shorts[len + 1] = '\0';
	}
	*check_out = false;
	while ((opt = getopt_long(m->argc, m->argv, shorts, longopts,
				  NULL)) != -1) {
		int ret = 0;

		switch (opt) {
		case 'C':
			m->config_path = optarg;
			break;
		case 'o':
			ret = add_override(m, optarg, NULL, NULL);
			break;
		case 'l':
			ret = add_override(m, first, ".listen=", optarg);
			break;
		case 'p':
			ret = add_override(m, "pidfile=", optarg, NULL);
			break;
		case 'e':
			ret = add_override(m, "engine=", optarg, NULL);
			break;
		case 'w':
			ret = add_override(m, "workers=", optarg, NULL);
			break;
		case 'n':
			ret = add_override(m, "napi_busy_poll=", optarg, NULL);
			break;
		case 'D':
			ret = add_override(m, "direct=yes", NULL, NULL);
			break;
		case 1:
			*check_out = true;
			break;
		case 'h':
			usage(m, stdout);
			return 1;
		default:
			for (size_t i = 0; i < mo->nflags; i++)
				if (opt == mo->flags[i].opt) {
					ret = add_override(
						m, mo->flags[i].assign, NULL,
						NULL);
					goto next;
				}
			usage(m, stderr);
			return -EINVAL;
		}
next:
		if (ret < 0)
			return ret;
	}
	if (optind != m->argc) {
		say(m, "unexpected argument: %s", m->argv[optind]);
		usage(m, stderr);
		return -EINVAL;
	}
	return 0;
}

static int start(struct main_ctx *m)
{
	const struct srv_main_opts *mo = m->mo;
	const struct srv_config *cfg = m->cfg;
	struct srv_opts so = {0};
	const char *pidfile, *user, *group, *root, *metrics_addr;
	bool want_sasl = false;
	int ret;

	so.workers = (unsigned)srv_config_int(cfg, NULL, "workers");
	so.max_conns = (unsigned)srv_config_int(cfg, NULL, "max_conns");
	so.drain_ms = (unsigned)srv_config_ms(cfg, NULL, "drain_timeout");
	so.direct = srv_config_bool(cfg, NULL, "direct");
	so.direct_files = (unsigned)srv_config_int(cfg, NULL, "direct_files");
	so.napi_us = (unsigned)srv_config_int(cfg, NULL, "napi_busy_poll");
	(void)engine_of(cfg, &so.loop);
	ret = srv_new(&so, &m->s);
	if (ret < 0) {
		say(m, "cannot set up: %s", strerror(-ret));
		return ret;
	}
	m->s->main_cfg = &m->cfg;
	if (mo->setup != NULL) {
		ret = mo->setup(m->s, cfg, mo->arg);
		if (ret < 0)
			return ret; /* the program said why */
	}
#ifdef RINGPROT_HAVE_TLS
	ret = tls_setup(m);
	if (ret < 0)
		return ret;
#endif
	for (size_t i = 0; i < mo->nservices; i++) {
		struct srv_service_opts o;

		service_opts_of(cfg, &mo->services[i], &o);
		ret = srv_service_add(m->s, &o, &m->svcs[i]);
		if (ret < 0) {
			say(m, "service %s: %s", o.name, strerror(-ret));
			return ret;
		}
		ret = listen_service(m, &mo->services[i], m->svcs[i]);
		if (ret < 0)
			return ret;
		want_sasl |= mo->services[i].sasl;
	}
	metrics_addr = srv_config_str(cfg, NULL, "metrics_listen");
	if (metrics_addr != NULL) {
		struct srv_service_opts o = {.name = "metrics",
					     .handler = metrics_handler,
					     .data = m->s,
					     .idle_timeout_s = 10};
		struct srv_listen_opts lo = {.addr = metrics_addr};
		struct srv_service *svc;
		const char *err = NULL;

		ret = srv_service_add(m->s, &o, &svc);
		if (ret == 0)
			ret = srv_listen(svc, &lo, &err);
		if (ret < 0) {
			say(m, "metrics: cannot listen on %s",
			    err != NULL ? err : strerror(-ret));
			return ret;
		}
	}
	pidfile = srv_config_str(cfg, NULL, "pidfile");
	if (pidfile != NULL) {
		pid_t holder = 0;

		ret = srv__pidfile_write(pidfile, &holder);
		if (ret < 0) {
			if (ret == -EEXIST)
				say(m, "pidfile %s: held by running process %ld",
				    pidfile, (long)holder);
			else
				say(m, "pidfile %s: %s", pidfile,
				    strerror(-ret));
			return ret;
		}
		m->pid_written = true;
	}
	user = srv_config_str(cfg, NULL, "user");
	group = srv_config_str(cfg, NULL, "group");
	root = srv_config_str(cfg, NULL, "chroot");
	if (user != NULL || group != NULL || root != NULL) {
		const char *err = NULL;

		ret = srv__drop_privileges(user, group, root, &err);
		if (ret < 0) {
			say(m, "cannot drop privileges: %s",
			    err != NULL ? err : strerror(-ret));
			return ret;
		}
	}
#ifdef RINGPROT_HAVE_SASL
	if (want_sasl) {
		char host[256];
		struct srv_sasl_opts sa = {
			.appname = mo->prog,
			.sasldb_path = srv_config_str(cfg, NULL, "sasldb_path"),
			.pwcheck_method =
				srv_config_str(cfg, NULL, "sasl_pwcheck_method"),
			.saslauthd_path =
				srv_config_str(cfg, NULL, "saslauthd_path"),
			.mech_list = srv_config_str(cfg, NULL, "sasl_mech_list"),
			.realm = srv_config_str(cfg, NULL, "sasl_realm"),
			.fqdn = srv_config_str(cfg, NULL, "servername"),
			.allowplaintext =
				srv_config_bool(cfg, NULL, "allowplaintext"),
		};
		const char *err = NULL;

		if (sa.fqdn == NULL && gethostname(host, sizeof(host)) == 0) {
			host[sizeof(host) - 1] = '\0';
			sa.fqdn = host;
		}
		ret = srv_set_sasl(m->s, &sa, &err);
		if (ret < 0) {
			say(m, "sasl: %s", err != NULL ? err : strerror(-ret));
			return ret;
		}
	}
#else
	if (want_sasl) {
		say(m, "this build has no SASL (libsasl2)");
		return -ENOTSUP;
	}
#endif
	ret = srv_start(m->s);
	if (ret < 0) {
		say(m, "cannot start: %s", strerror(-ret));
		return ret;
	}
	return 0;
}

int srv_main(int argc, char **argv, const struct srv_main_opts *mo)
{
	struct main_ctx *m = calloc(1, sizeof(*m));
	struct srv_run_hooks hooks = {.reload = on_reload, .dump = on_dump};
	bool check = false;
	const char *pidfile;
	int ret, status = 1;

	if (m == NULL) {
		(void)fprintf(stderr, "%s: out of memory\n", mo->prog);
		return 1;
	}
	m->argc = argc;
	m->argv = argv;
	m->mo = mo;
	if (mo->nservices >= SRV__MAX_SERVICES) {
		(void)fprintf(stderr, "%s: too many services\n", mo->prog);
		free(m);
		return 1;
	}
	for (size_t i = 0; i < mo->nservices; i++)
		m->svc_names[i] = mo->services[i].opts.name;
	m->svc_names[mo->nservices] = "metrics";
	hooks.arg = m;
	ret = parse_cmdline(m, &check);
	if (ret != 0) {
		free(m);
		return ret > 0 ? 0 : 2;
	}
	ret = config_build(m, &m->cfg, false);
	if (ret < 0)
		goto out;
	if (check) {
		ret = srv_config_dump(m->cfg, stdout);
		status = ret < 0 ? 1 : 0;
		goto out;
	}
	ret = log_setup(m, m->cfg);
	if (ret < 0)
		goto out;
	ret = start(m);
	if (ret == 0 && mo->started != NULL)
		mo->started(m->s, mo->arg);
	if (ret == 0) {
		srv_logkv(SRV_LOG_INFO, 0, "start", "program", mo->prog,
			  "engine", srv_engine(m->s), NULL);
		log_listeners(m->s);
		ret = srv_run(m->s, &hooks);
		if (ret < 0)
			say(m, "%s", strerror(-ret));
	}
	status = ret < 0 ? 1 : 0;
	if (m->s != NULL && m->s->started && mo->stopped != NULL)
		mo->stopped(m->s, mo->arg);
	pidfile = srv_config_str(m->cfg, NULL, "pidfile");
	srv_free(&m->s);
	if (pidfile != NULL && m->pid_written &&
	    srv__pidfile_remove(pidfile) < 0) {
		/* it may be gone already (or not ours after a failure) */
	}
out:
#ifdef RINGPROT_HAVE_TLS
	srv__tls_free(&m->tls);
#endif
	srv_config_free(&m->cfg);
	for (unsigned i = 0; i < m->nold; i++)
		srv_config_free(&m->old[i]);
	free(m);
	return status;
}
