/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/imapd: an IMAP4rev1 (RFC 3501) and IMAP4rev2 (RFC 9051)
 * server reading the Maildir store lmtpd delivers into.
 *
 * Everything but the session is server/'s (srv_main): command line,
 * configuration, listeners, workers, TLS, SASL, limits, SIGTERM drain.
 * This file reads the program's own keys into one struct imap_config
 * that every session shares read-only, and opens the store.
 *
 *   ringprot-imapd                  127.0.0.1:1143, ./imapd-data
 *   ringprot-imapd -o tls_cert_file=cert.pem \
 *       -o imaps.tls_listen=127.0.0.1:1993 -o sasldb_path=./sasldb
 *
 * Two services: "imap" (plaintext with STARTTLS, default 127.0.0.1:1143)
 * and "imaps" (implicit TLS, RFC 8314: no listener unless
 * imaps.tls_listen is set, which needs tls_cert_file). Set listeners per
 * service (imap.listen, imaps.tls_listen): a global listen applies to
 * both. The program's own keys are global: both services share one
 * struct imap_config.
 *
 * A third service, "lmtp", delivers into the same store in the same
 * process when lmtp.listen is set (no listener otherwise): the demo mail
 * server runs that way, and IDLE then hears of a delivery from the store
 * itself, with no kernel round trip. Its keys are lmtpd's (lmtp_*).
 * Changes made by other processes (a separate ringprot-lmtpd, another
 * imapd) reach IDLE through inotify (examples/maildir/watch.c).
 *
 * Users log in through SASL (LOGIN and AUTHENTICATE): sasldb by
 * default. With no sasldb at sasldb_path the server still starts, and
 * every login is answered NO [UNAVAILABLE], so that a first run with no
 * configuration file works.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ringprot/prot-layer.h>
#include <ringprot/server.h>
#include <ringprot/srv-config.h>

#include "imapd.h"
#include "lmtpd.h"
#include "watch.h"

#define IMAPD_DEFAULT_LISTEN "127.0.0.1:1143"

static const struct srv_cfg_key imapd_keys[] = {
	{"data_dir", SRV_CFG_STR, "imapd-data", NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "the store: users/<user>/ are Maildirs (lmtpd's data_dir)"},
	{"fsync", SRV_CFG_BOOL, "yes", NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "fsync what is written to the store (no: benchmarks only)"},
	{"mail_save_crlf", SRV_CFG_BOOL, "no", NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "store new messages with CRLF line ends (Dovecot's mail_save_crlf): "
	 "imapd then sends whole messages from the file without a copy"},
	{"imap_max_line", SRV_CFG_INT, "65536", NULL, 1024, 1 << 24,
	 SRV_CFG_GLOBAL_ONLY,
	 "longest command line, literals read into memory included"},
	{"imap_max_literal", SRV_CFG_SIZE, "50M", NULL, 0, 0,
	 SRV_CFG_GLOBAL_ONLY,
	 "largest APPEND literal (APPENDLIMIT); larger ones are refused "
	 "before they are sent"},
	{"imap_literal_plus", SRV_CFG_BOOL, "no", NULL, 0, 0,
	 SRV_CFG_GLOBAL_ONLY,
	 "offer LITERAL+ (non-synchronizing literals up to "
	 "imap_max_literal); no: LITERAL- (up to 4096 bytes)"},
	{"imap_max_errors", SRV_CFG_INT, "20", NULL, 1, 100000,
	 SRV_CFG_GLOBAL_ONLY,
	 "BAD replies before the session is closed with BYE"},
	{"imap_idle_keepalive", SRV_CFG_MS, "2m", NULL, 0, 0,
	 SRV_CFG_GLOBAL_ONLY,
	 "during IDLE, \"* OK Still here\" this often (NAT boxes), 0: never"},
	{"imap_idle_timeout", SRV_CFG_MS, "30m", NULL, 0, 0,
	 SRV_CFG_GLOBAL_ONLY,
	 "IDLE ends after this (RFC 3501: at least 30 minutes)"},
	{"imap_compress", SRV_CFG_BOOL, "yes", NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "offer COMPRESS=DEFLATE (RFC 4978)"},
	{"imap_utf8_accept", SRV_CFG_BOOL, "no", NULL, 0, 0,
	 SRV_CFG_GLOBAL_ONLY, "offer UTF8=ACCEPT (RFC 6855)"},
};

static struct srv_main_service imapd_services[] = {
	{.opts = {.name = "imap",
		  .handler = imap_session_run,
		  .idle_timeout_s = 1800, /* RFC 3501 5.4: 30 minutes */
		  .write_timeout_s = 300,
		  .busy_reply = "* BYE Too many connections\r\n"},
	 .default_listen = IMAPD_DEFAULT_LISTEN,
	 .sasl = true},
	{.opts = {.name = "imaps",
		  .sasl_service = "imap",
		  .handler = imap_session_run,
		  .idle_timeout_s = 1800,
		  .write_timeout_s = 300,
		  .busy_reply = "* BYE Too many connections\r\n"},
	 .sasl = true},
	{.opts = {.name = "lmtp",
		  .handler = lmtp_session_run,
		  .idle_timeout_s = 300,
		  .write_timeout_s = 300}},
};
#define NSERVICES (sizeof(imapd_services) / sizeof(imapd_services[0]))
#define NKEYS	  (sizeof(imapd_keys) / sizeof(imapd_keys[0]))

static struct imap_config imapd_cfg;
static struct lmtp_config lmtp_cfg;

/* Can SASL be set up with this configuration (srv_main would fail)? */
static bool sasl_usable(const struct srv_config *cfg)
{
	const char *db = srv_config_str(cfg, NULL, "sasldb_path");

	if (srv_config_enum(cfg, NULL, "sasl_pwcheck_method") != 0)
		return true; /* saslauthd: checked per login */
	return db != NULL && access(db, R_OK) == 0;
}

static int imapd_setup(struct srv *s, const struct srv_config *cfg, void *arg)
{
	struct imap_config *ic = &imapd_cfg;
	struct md_store_opts mo = {0};
	const char *err = NULL;
	int ret;

	(void)s;
	(void)arg;
	ic->line_max = (size_t)srv_config_int(cfg, NULL, "imap_max_line");
	ic->literal_max = srv_config_size(cfg, NULL, "imap_max_literal");
	if (ic->literal_max == 0 || ic->literal_max > UINT32_MAX)
		ic->literal_max = UINT32_MAX; /* RFC 3501: number is 32-bit */
	ic->literal_plus = srv_config_bool(cfg, NULL, "imap_literal_plus");
	ic->max_errors = (unsigned)srv_config_int(cfg, NULL, "imap_max_errors");
	ic->idle_keepalive_ms = srv_config_ms(cfg, NULL, "imap_idle_keepalive");
	ic->idle_max_ms = srv_config_ms(cfg, NULL, "imap_idle_timeout");
	ic->compress = srv_config_bool(cfg, NULL, "imap_compress") &&
		       (pl_features() & PL_HAVE_ZLIB);
	ic->utf8_accept = srv_config_bool(cfg, NULL, "imap_utf8_accept");
	ic->starttls = srv_config_str(cfg, NULL, "tls_cert_file") != NULL &&
		       (pl_features() & PL_HAVE_TLS);
	ic->auth = (pl_features() & PL_HAVE_SASL) && sasl_usable(cfg);
	if (!ic->auth)
		(void)fprintf(stderr,
			      "ringprot-imapd: no SASL (no readable sasldb "
			      "at %s, or none in this build): every login "
			      "will be refused\n",
			      srv_config_str(cfg, NULL, "sasldb_path"));
	for (size_t i = 0; i < 2; i++)
		imapd_services[i].sasl = ic->auth;

	mo.root = srv_config_str(cfg, NULL, "data_dir");
	mo.no_fsync = !srv_config_bool(cfg, NULL, "fsync");
	mo.save_crlf = srv_config_bool(cfg, NULL, "mail_save_crlf");
	ret = md_store_open(&mo, &ic->store, &err);
	if (ret < 0) {
		(void)fprintf(stderr, "ringprot-imapd: store %s: %s\n",
			      err != NULL ? err : mo.root, strerror(-ret));
		return ret;
	}
	ret = lmtp_config_read(cfg, "lmtp", ic->store, &lmtp_cfg);
	if (ret == 0) {
		imapd_services[2].sasl = lmtp_cfg.auth;
		ret = md_watch_hub_new(ic->store, mo.root, true, &ic->watch);
		if (ret < 0)
			(void)fprintf(stderr,
				      "ringprot-imapd: change notification: "
				      "%s\n",
				      strerror(-ret));
	}
	/* What a crash left in spool/ and tmp/ (APPENDs, deliveries). */
	if (ret == 0 && lmtp_sweep_spool(ic->store) < 0)
		(void)fprintf(stderr, "ringprot-imapd: spool cleanup failed\n");
	if (ret == 0)
		ret = lmtp_sweep_init(ic->store, mo.root,
				      srv_config_ms(cfg, NULL,
						    "lmtp_tmp_sweep"));
	if (ret < 0) {
		md_watch_hub_free(&ic->watch);
		md_store_close(&ic->store);
	}
	return ret;
}

/* "listening on 127.0.0.1:1143 (io_uring defer-taskrun)" per listener. */
static void imapd_started(struct srv *s, void *arg)
{
	(void)arg;
	if (lmtp_sweep_start() < 0)
		(void)fprintf(stderr, "ringprot-imapd: no tmp/ sweep thread: "
				      "spool and tmp/ are cleaned at start-up "
				      "only\n");
	for (size_t i = 0; i < NSERVICES; i++)
		srv_print_listeners(s,
				    srv_service_find(s,
						     imapd_services[i].opts.name),
				    stdout);
}

static void imapd_stopped(struct srv *s, void *arg)
{
	struct srv_stats st;

	(void)arg;
	srv_stats(s, &st);
	printf("imapd: stopped: %llu connections\n",
	       (unsigned long long)st.conns_total);
	(void)fflush(stdout);
	lmtp_sweep_stop();
	md_watch_hub_free(&imapd_cfg.watch);
	md_store_close(&imapd_cfg.store);
}

int main(int argc, char **argv)
{
	struct srv_cfg_key *keys =
		malloc((NKEYS + lmtp_cfg_nkeys) * sizeof(*keys));
	struct srv_main_opts mo = {
		.prog = "ringprot-imapd",
		.summary = "IMAP4rev1/IMAP4rev2 on the Maildir store under "
			   "data_dir (default listen " IMAPD_DEFAULT_LISTEN
			   ", data_dir ./imapd-data; implicit TLS: "
			   "-o imaps.tls_listen=ADDR)",
		.services = imapd_services,
		.nservices = NSERVICES,
		.keys = keys,
		.nkeys = NKEYS + lmtp_cfg_nkeys,
		.setup = imapd_setup,
		.started = imapd_started,
		.stopped = imapd_stopped,
	};

	int ret;

	if (keys == NULL)
		return 1;
	memcpy(keys, imapd_keys, sizeof(imapd_keys));
	memcpy(keys + NKEYS, lmtp_cfg_keys, lmtp_cfg_nkeys * sizeof(*keys));
	imapd_services[0].opts.data = &imapd_cfg;
	imapd_services[1].opts.data = &imapd_cfg;
	imapd_services[2].opts.data = &lmtp_cfg;
	ret = srv_main(argc, argv, &mo);
	free(keys);
	return ret;
}
