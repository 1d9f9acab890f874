/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/lmtpd/config: the LMTP service's own configuration keys and
 * how they become a struct lmtp_config. Shared by ringprot-lmtpd and by
 * ringprot-imapd, which can serve LMTP in the same process (the demo
 * mail server): both list lmtp_cfg_keys among their keys and call
 * lmtp_config_read in their setup hook.
 */
#include "lmtpd.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <ringprot/srv-config.h>

const struct srv_cfg_key lmtp_cfg_keys[] = {
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
const size_t lmtp_cfg_nkeys = sizeof(lmtp_cfg_keys) / sizeof(lmtp_cfg_keys[0]);

static char lmtp_hostname[256];

int lmtp_config_read(const struct srv_config *cfg, const char *svc,
		     struct md_store *store, struct lmtp_config *lc)
{
	const char *delim, *name;

	name = srv_config_str(cfg, NULL, "servername");
	if (name == NULL &&
	    gethostname(lmtp_hostname, sizeof(lmtp_hostname) - 1) == 0)
		name = lmtp_hostname;
	lc->store = store;
	lc->hostname = name != NULL ? name : "localhost";
	lc->max_size = srv_config_size(cfg, svc, "max_message_size");
	lc->max_rcpts =
		(unsigned)srv_config_int(cfg, svc, "lmtp_max_recipients");
	lc->cmd_max =
		(unsigned)srv_config_int(cfg, svc, "lmtp_command_line_max");
	lc->line_max = (unsigned)srv_config_int(cfg, svc, "lmtp_text_line_max");
	lc->max_errors = (unsigned)srv_config_int(cfg, svc, "lmtp_max_errors");
	lc->map.domain = srv_config_enum(cfg, svc, "lmtp_domain_mapping") == 1;
	delim = srv_config_str(cfg, svc, "lmtp_detail_delimiter");
	if (srv_config_bool(cfg, svc, "lmtp_detail_folders")) {
		if (strlen(delim) != 1 || delim[0] == '@' || delim[0] == '.') {
			(void)fprintf(stderr,
				      "lmtp_detail_delimiter must be one byte, "
				      "not '@' or '.'\n");
			return -EINVAL;
		}
		lc->map.detail_delim = delim[0];
	}
	lc->vrfy = srv_config_bool(cfg, svc, "lmtp_vrfy");
	lc->chunking = srv_config_bool(cfg, svc, "lmtp_chunking");
	lc->bare_lf_refuse = srv_config_enum(cfg, svc, "lmtp_bare_lf") == 1;
	lc->auth = srv_config_bool(cfg, NULL, "lmtp_auth");
	lc->starttls = srv_config_str(cfg, NULL, "tls_cert_file") != NULL;
	return 0;
}
