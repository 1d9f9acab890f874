/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/lmtpd: an RFC 2033 LMTP server delivering into Maildir.
 *
 * Everything but the session is server/'s (srv_main): command line,
 * configuration, listeners (TCP or a Unix socket, as Postfix's lmtp:
 * transport likes), worker threads, TLS, SASL, limits, SIGTERM drain.
 * This file reads the program's own keys into one struct lmtp_config
 * that every session shares read-only, and opens the store.
 *
 *   ringprot-lmtpd                  127.0.0.1:2424, ./lmtpd-data
 *   ringprot-lmtpd -l unix:/run/lmtp.sock -o data_dir=/srv/mail
 *
 * A recipient is delivered when <data_dir>/users/<user>/ exists: make
 * it with `mkdir -p <data_dir>/users/alice/{tmp,new,cur}`.
 *
 * What a crash leaves in spool/ is removed at start-up (older than 36
 * hours, as Maildir asks), and a thread sweeps the spool and every tmp/
 * each lmtp_tmp_sweep (sweep.c says why a thread).
 *
 * SASL (AUTH) is off unless lmtp_auth is set: srv_main sets SASL up for
 * services whose table entry asks for it, so the setup hook flips that
 * entry before srv_main reads it (setup runs first).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <ringprot/server.h>
#include <ringprot/srv-config.h>

#include "lmtpd.h"

#define LMTPD_DEFAULT_LISTEN "127.0.0.1:2424"

static const struct srv_cfg_key lmtpd_keys[] = {
	{"data_dir", SRV_CFG_STR, "lmtpd-data", NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "the store: users/<user>/ are Maildirs, spool/ the copies being "
	 "received"},
	{"fsync", SRV_CFG_BOOL, "yes", NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "fsync each message and directory before its 250 (no: benchmarks "
	 "only, an acknowledged message can then be lost)"},
	{"max_message_size", SRV_CFG_SIZE, "50M", NULL, 0, 0, 0,
	 "largest message (SIZE), 0: no limit"},
	{"lmtp_max_recipients", SRV_CFG_INT, "1000", NULL, 1, 100000, 0,
	 "recipients per transaction (452 past it)"},
	{"lmtp_command_line_max", SRV_CFG_INT, "512", NULL, 512, 65536, 0,
	 "longest command line, CR LF included (RFC 5321: 512)"},
	{"lmtp_text_line_max", SRV_CFG_INT, "1000", NULL, 0, 1 << 24, 0,
	 "longest line of a message, CR LF included (RFC 5321: 1000), "
	 "0: no limit"},
	{"lmtp_max_errors", SRV_CFG_INT, "20", NULL, 1, 100000, 0,
	 "refused commands before the session is closed with 421"},
	{"lmtp_domain_mapping", SRV_CFG_ENUM, "none", "none|full", 0, 0, 0,
	 "user of a recipient: the local part (none) or local@domain (full)"},
	{"lmtp_detail_folders", SRV_CFG_BOOL, "yes", NULL, 0, 0, 0,
	 "user+detail delivers into the user's folder \"detail\""},
	{"lmtp_detail_delimiter", SRV_CFG_STR, "+", NULL, 0, 0, 0,
	 "the byte between user and detail"},
	{"lmtp_vrfy", SRV_CFG_BOOL, "yes", NULL, 0, 0, 0,
	 "answer VRFY with 252 (no: 502)"},
	{"lmtp_chunking", SRV_CFG_BOOL, "yes", NULL, 0, 0, 0,
	 "offer CHUNKING (BDAT, RFC 3030)"},
	{"lmtp_bare_lf", SRV_CFG_ENUM, "accept", "accept|refuse", 0, 0, 0,
	 "a line ending in LF without CR, in a command or DATA: accept (as "
	 "CR LF, \".\\n\" ends DATA too: Postfix's long-standing way) or "
	 "refuse (550 5.5.2 and close: no SMTP smuggling); a bare CR is always "
	 "data, never a line end, and BDAT chunks are taken as sent"},
	{"lmtp_tmp_sweep", SRV_CFG_MS, "1h", NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "how often spool/ and every tmp/ are swept of files older than 36 "
	 "hours (the spool is swept at start-up too), 0: never"},
	{"lmtp_auth", SRV_CFG_BOOL, "no", NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "offer AUTH through SASL (needs sasldb_path or saslauthd)"},
};

static struct srv_main_service lmtpd_services[] = {
	{.opts = {.name = "lmtp",
		  .handler = lmtp_session_run,
		  .idle_timeout_s = 300,
		  .write_timeout_s = 300},
	 .default_listen = LMTPD_DEFAULT_LISTEN},
};

static struct lmtp_config lmtpd_cfg;
static char lmtpd_hostname[256];

static int lmtpd_setup(struct srv *s, const struct srv_config *cfg, void *arg)
{
	struct lmtp_config *lc = &lmtpd_cfg;
	struct md_store_opts mo = {0};
	const char *delim, *err = NULL, *name;
	int ret;

	(void)s;
	(void)arg;
	name = srv_config_str(cfg, NULL, "servername");
	if (name == NULL &&
	    gethostname(lmtpd_hostname, sizeof(lmtpd_hostname) - 1) == 0)
		name = lmtpd_hostname;
	lc->hostname = name != NULL ? name : "localhost";
	lc->max_size = srv_config_size(cfg, "lmtp", "max_message_size");
	lc->max_rcpts =
		(unsigned)srv_config_int(cfg, "lmtp", "lmtp_max_recipients");
	lc->cmd_max =
		(unsigned)srv_config_int(cfg, "lmtp", "lmtp_command_line_max");
	lc->line_max =
		(unsigned)srv_config_int(cfg, "lmtp", "lmtp_text_line_max");
	lc->max_errors =
		(unsigned)srv_config_int(cfg, "lmtp", "lmtp_max_errors");
	lc->map.domain =
		srv_config_enum(cfg, "lmtp", "lmtp_domain_mapping") == 1;
	delim = srv_config_str(cfg, "lmtp", "lmtp_detail_delimiter");
	if (srv_config_bool(cfg, "lmtp", "lmtp_detail_folders")) {
		if (strlen(delim) != 1 || delim[0] == '@' || delim[0] == '.') {
			(void)fprintf(stderr,
				      "ringprot-lmtpd: lmtp_detail_delimiter "
				      "must be one byte, not '@' or '.'\n");
			return -EINVAL;
		}
		lc->map.detail_delim = delim[0];
	}
	lc->vrfy = srv_config_bool(cfg, "lmtp", "lmtp_vrfy");
	lc->chunking = srv_config_bool(cfg, "lmtp", "lmtp_chunking");
	lc->bare_lf_refuse = srv_config_enum(cfg, "lmtp", "lmtp_bare_lf") == 1;
	lc->auth = srv_config_bool(cfg, NULL, "lmtp_auth");
	lc->starttls = srv_config_str(cfg, NULL, "tls_cert_file") != NULL;
	lmtpd_services[0].sasl = lc->auth;

	mo.root = srv_config_str(cfg, NULL, "data_dir");
	mo.no_fsync = !srv_config_bool(cfg, NULL, "fsync");
	ret = md_store_open(&mo, &lc->store, &err);
	if (ret < 0) {
		(void)fprintf(stderr, "ringprot-lmtpd: store %s: %s\n",
			      err != NULL ? err : mo.root, strerror(-ret));
		return ret;
	}
	if (mo.no_fsync)
		(void)fprintf(stderr, "ringprot-lmtpd: fsync is off: an "
				      "acknowledged message may be lost in "
				      "a crash (benchmarks only)\n");
	/* What a crash left in the spool (sweep.c: users' tmp/ later). */
	ret = lmtp_sweep_spool(lc->store);
	if (ret < 0)
		(void)fprintf(stderr, "ringprot-lmtpd: spool cleanup: %s\n",
			      strerror(-ret));
	ret = lmtp_sweep_init(lc->store, mo.root,
			      srv_config_ms(cfg, NULL, "lmtp_tmp_sweep"));
	if (ret < 0) {
		(void)fprintf(stderr, "ringprot-lmtpd: %s/users: %s\n", mo.root,
			      strerror(-ret));
		md_store_close(&lc->store);
		return ret;
	}
	return 0;
}

/* "listening on 127.0.0.1:2424 (io_uring defer-taskrun)" per listener. */
static void lmtpd_started(struct srv *s, void *arg)
{
	struct srv_service *svc = srv_service_find(s, "lmtp");

	(void)arg;
	if (lmtp_sweep_start() < 0)
		(void)fprintf(stderr, "ringprot-lmtpd: no tmp/ sweep thread: "
				      "spool and tmp/ are cleaned at start-up "
				      "only\n");
	srv_print_listeners(s, svc, stdout);
}

static void lmtpd_stopped(struct srv *s, void *arg)
{
	struct srv_stats st;

	(void)arg;
	srv_stats(s, &st);
	printf("lmtpd: stopped: %llu connections\n",
	       (unsigned long long)st.conns_total);
	(void)fflush(stdout);
	lmtp_sweep_stop();
	md_store_close(&lmtpd_cfg.store);
}

int main(int argc, char **argv)
{
	static const struct srv_main_opts mo = {
		.prog = "ringprot-lmtpd",
		.summary = "LMTP (RFC 2033) into Maildir under data_dir "
			   "(default listen " LMTPD_DEFAULT_LISTEN
			   ", data_dir ./lmtpd-data). Example: "
			   "ringprot-lmtpd -l unix:/run/lmtp.sock "
			   "-o data_dir=/srv/mail",
		.services = lmtpd_services,
		.nservices = 1,
		.keys = lmtpd_keys,
		.nkeys = sizeof(lmtpd_keys) / sizeof(lmtpd_keys[0]),
		.setup = lmtpd_setup,
		.started = lmtpd_started,
		.stopped = lmtpd_stopped,
	};

	lmtpd_services[0].opts.data = &lmtpd_cfg;
	return srv_main(argc, argv, &mo);
}
