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
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ringprot/server.h>
#include <ringprot/srv-config.h>

#include "lmtpd.h"

#define LMTPD_DEFAULT_LISTEN "127.0.0.1:2424"

/* The store's keys; the LMTP ones are lmtp_cfg_keys (config.c). */
static const struct srv_cfg_key lmtpd_store_keys[] = {
	{"data_dir", SRV_CFG_STR, "lmtpd-data", NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "the store: users/<user>/ are Maildirs, spool/ the copies being "
	 "received"},
	{"fsync", SRV_CFG_BOOL, "yes", NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "fsync each message and directory before its 250 (no: benchmarks "
	 "only, an acknowledged message can then be lost)"},
	{"mail_save_crlf", SRV_CFG_BOOL, "no", NULL, 0, 0, SRV_CFG_GLOBAL_ONLY,
	 "store new messages with CRLF line ends (Dovecot's mail_save_crlf): "
	 "imapd then sends whole messages from the file without a copy"},
};
#define NSTORE_KEYS (sizeof(lmtpd_store_keys) / sizeof(lmtpd_store_keys[0]))

static struct srv_main_service lmtpd_services[] = {
	{.opts = {.name = "lmtp",
		  .handler = lmtp_session_run,
		  .idle_timeout_s = 300,
		  .write_timeout_s = 300},
	 .default_listen = LMTPD_DEFAULT_LISTEN},
};

static struct lmtp_config lmtpd_cfg;

static int lmtpd_setup(struct srv *s, const struct srv_config *cfg, void *arg)
{
	struct lmtp_config *lc = &lmtpd_cfg;
	struct md_store_opts mo = {0};
	const char *err = NULL;
	int ret;

	(void)s;
	(void)arg;
	ret = lmtp_config_read(cfg, "lmtp", NULL, lc);
	if (ret < 0)
		return ret;
	lmtpd_services[0].sasl = lc->auth;

	mo.root = srv_config_str(cfg, NULL, "data_dir");
	mo.no_fsync = !srv_config_bool(cfg, NULL, "fsync");
	mo.save_crlf = srv_config_bool(cfg, NULL, "mail_save_crlf");
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
	struct srv_cfg_key *keys =
		malloc((NSTORE_KEYS + lmtp_cfg_nkeys) * sizeof(*keys));
	struct srv_main_opts mo = {
		.prog = "ringprot-lmtpd",
		.summary = "LMTP (RFC 2033) into Maildir under data_dir "
			   "(default listen " LMTPD_DEFAULT_LISTEN
			   ", data_dir ./lmtpd-data). Example: "
			   "ringprot-lmtpd -l unix:/run/lmtp.sock "
			   "-o data_dir=/srv/mail",
		.services = lmtpd_services,
		.nservices = 1,
		.keys = keys,
		.nkeys = NSTORE_KEYS + lmtp_cfg_nkeys,
		.setup = lmtpd_setup,
		.started = lmtpd_started,
		.stopped = lmtpd_stopped,
	};

	int ret;

	if (keys == NULL)
		return 1;
	memcpy(keys, lmtpd_store_keys, sizeof(lmtpd_store_keys));
	memcpy(keys + NSTORE_KEYS, lmtp_cfg_keys,
	       lmtp_cfg_nkeys * sizeof(keys[0]));
	lmtpd_services[0].opts.data = &lmtpd_cfg;
	ret = srv_main(argc, argv, &mo);
	free(keys);
	return ret;
}
