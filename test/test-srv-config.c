/* SPDX-License-Identifier: BSD-3-Clause */
/* test/srv-config: the configuration file, overrides, getters and dump. */
#include <ringprot/srv-config.h> /* first: it must need nothing before it */

#include "t-helpers.h" /* stdarg, stddef, setjmp, cmocka: in that order */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static const struct srv_cfg_key keys[] = {
	{"listen", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_SERVICE_ONLY,
	 "address"},
	{"servername", SRV_CFG_STR, "localhost", NULL, 0, 0, 0, NULL},
	{"tls_key_pass", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_SECRET, NULL},
	{"secret_port", SRV_CFG_INT, NULL, NULL, 0, 0, SRV_CFG_SECRET, NULL},
	{"workers", SRV_CFG_INT, "2", NULL, 1, 64, SRV_CFG_GLOBAL_ONLY, NULL},
	{"max_conns", SRV_CFG_INT, "1000", NULL, 0, 0, 0, NULL},
	{"offset", SRV_CFG_INT, NULL, NULL, -10, 10, 0, NULL},
	{"allowplaintext", SRV_CFG_BOOL, "no", NULL, 0, 0, 0, NULL},
	{"idle_timeout", SRV_CFG_MS, "30m", NULL, 1000, 86400000, 0, NULL},
	{"poll_interval", SRV_CFG_MS, NULL, NULL, 0, 0, 0, NULL},
	{"maxliteral", SRV_CFG_SIZE, "64k", NULL, 0, 1ll << 30, 0, NULL},
	{"buf_size", SRV_CFG_SIZE, NULL, NULL, 0, 0, 0, NULL},
	{"sasl_mechs", SRV_CFG_LIST, "PLAIN LOGIN", NULL, 0, 0, 0, NULL},
	{"log_level", SRV_CFG_ENUM, "info", "debug|info|warn|error", 0, 0, 0,
	 NULL},
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static int cfg_setup(void **state)
{
	struct srv_config *cfg;

	assert_int_equal(srv_config_new(&cfg), 0);
	assert_int_equal(srv_config_add_keys(cfg, keys, NKEYS), 0);
	*state = cfg;
	return 0;
}

static int cfg_teardown(void **state)
{
	struct srv_config *cfg = *state;

	srv_config_free(&cfg);
	assert_null(cfg);
	return 0;
}

static int load(struct srv_config *cfg, const char *text)
{
	const char *err = NULL;
	int ret =
		srv_config_load_string(cfg, "t.conf", text, strlen(text), &err);

	if (ret == 0)
		assert_null(err);
	return ret;
}

/* Loading text fails with -EINVAL and exactly want. */
static void expect_err(const char *text, const char *want)
{
	struct srv_config *cfg;
	const char *err = NULL;

	assert_int_equal(cfg_setup((void **)&cfg), 0);
	assert_int_equal(
		srv_config_load_string(cfg, "t.conf", text, strlen(text), &err),
		-EINVAL);
	assert_non_null(err);
	assert_string_equal(err, want);
	cfg_teardown((void **)&cfg);
}

static void expect_set_err(struct srv_config *cfg, const char *assignment,
			   const char *want)
{
	const char *err = NULL;

	assert_int_equal(srv_config_set(cfg, assignment, &err), -EINVAL);
	assert_non_null(err);
	assert_string_equal(err, want);
}

static char *dump_str(const struct srv_config *cfg)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);

	assert_non_null(f);
	assert_int_equal(srv_config_dump(cfg, f), 0);
	assert_int_equal(fclose(f), 0);
	return s;
}

static void test_srv_config_defaults(void **state)
{
	struct srv_config *cfg = *state;
	const char *const *w;

	assert_string_equal(srv_config_str(cfg, NULL, "servername"),
			    "localhost");
	assert_int_equal(srv_config_int(cfg, NULL, "workers"), 2);
	assert_int_equal(srv_config_int(cfg, "imap", "max_conns"), 1000);
	assert_false(srv_config_bool(cfg, NULL, "allowplaintext"));
	assert_int_equal(srv_config_ms(cfg, NULL, "idle_timeout"), 1800000);
	assert_int_equal(srv_config_size(cfg, NULL, "maxliteral"), 65536);
	assert_int_equal(srv_config_list(cfg, NULL, "sasl_mechs", &w), 2);
	assert_string_equal(w[0], "PLAIN");
	assert_string_equal(w[1], "LOGIN");
	assert_null(w[2]);
	assert_int_equal(srv_config_enum(cfg, NULL, "log_level"), 1);
	assert_string_equal(srv_config_str(cfg, NULL, "log_level"), "info");
	/* No default: the zero values, and not set. */
	assert_null(srv_config_str(cfg, NULL, "listen"));
	assert_null(srv_config_str(cfg, "imap", "listen"));
	assert_int_equal(srv_config_int(cfg, NULL, "offset"), 0);
	assert_int_equal(srv_config_ms(cfg, NULL, "poll_interval"), 0);
	assert_int_equal(srv_config_size(cfg, NULL, "buf_size"), 0);
	assert_false(srv_config_is_set(cfg, NULL, "workers"));
	assert_null(srv_config_misuse(cfg));
}

static void test_srv_config_syntax(void **state)
{
	struct srv_config *cfg = *state;
	const char *const *w;

	assert_int_equal(load(cfg, "# a comment\n"
				   "\n"
				   "   \t\n"
				   "  # indented comment: workers: 9\n"
				   "  SERVERNAME :\t mail.example.org  \n"
				   "workers:3\r\n"
				   "tls_key_pass: 7 # not a comment\r\n"
				   "sasl_mechs: PLAIN \\\n"
				   "  SCRAM-SHA-256\n"
				   "log_level: WARN"),
			 0);
	assert_string_equal(srv_config_str(cfg, NULL, "servername"),
			    "mail.example.org");
	assert_int_equal(srv_config_int(cfg, NULL, "workers"), 3);
	/* As Cyrus: '#' starts a comment only at the start of a line. */
	assert_string_equal(srv_config_str(cfg, NULL, "tls_key_pass"),
			    "7 # not a comment");
	assert_int_equal(srv_config_list(cfg, NULL, "sasl_mechs", &w), 2);
	assert_string_equal(w[1], "SCRAM-SHA-256");
	assert_string_equal(srv_config_str(cfg, NULL, "sasl_mechs"),
			    "PLAIN   SCRAM-SHA-256");
	assert_int_equal(srv_config_enum(cfg, NULL, "log_level"), 2);
	assert_string_equal(srv_config_str(cfg, NULL, "log_level"), "warn");
	assert_true(srv_config_is_set(cfg, NULL, "workers"));
	assert_true(srv_config_is_set(cfg, NULL, "WORKERS"));
	assert_null(srv_config_misuse(cfg));
}

static void test_srv_config_scopes(void **state)
{
	struct srv_config *cfg = *state;
	const char *const *names;

	assert_int_equal(load(cfg, "max_conns: 10\n"
				   "imap.max_conns: 20\n"
				   "pop3.listen: 110\n"
				   "[lmtp]\n"
				   "listen: /run/lmtp.sock\n"
				   "idle_timeout: 5m\n"
				   "[IMAP]\n"
				   "listen: 143\n"
				   "[empty]\n"),
			 0);
	assert_int_equal(srv_config_services(cfg, &names), 4);
	assert_string_equal(names[0], "imap");
	assert_string_equal(names[1], "pop3");
	assert_string_equal(names[2], "lmtp");
	assert_string_equal(names[3], "empty");
	assert_null(names[4]);
	/* service, else global, else default */
	assert_int_equal(srv_config_int(cfg, "imap", "max_conns"), 20);
	assert_int_equal(srv_config_int(cfg, "Imap", "max_conns"), 20);
	assert_int_equal(srv_config_int(cfg, "lmtp", "max_conns"), 10);
	assert_int_equal(srv_config_int(cfg, NULL, "max_conns"), 10);
	assert_int_equal(srv_config_int(cfg, "nosuch", "max_conns"), 10);
	assert_int_equal(srv_config_ms(cfg, "lmtp", "idle_timeout"), 300000);
	assert_int_equal(srv_config_ms(cfg, "imap", "idle_timeout"), 1800000);
	assert_string_equal(srv_config_str(cfg, "imap", "listen"), "143");
	assert_string_equal(srv_config_str(cfg, "pop3", "listen"), "110");
	assert_string_equal(srv_config_str(cfg, "lmtp", "listen"),
			    "/run/lmtp.sock");
	assert_null(srv_config_str(cfg, "empty", "listen"));
	assert_null(srv_config_str(cfg, NULL, "listen"));
	/* is_set: the service's own value or a global one. */
	assert_true(srv_config_is_set(cfg, "lmtp", "max_conns"));
	assert_false(srv_config_is_set(cfg, "imap", "idle_timeout"));
	assert_true(srv_config_is_set(cfg, "lmtp", "idle_timeout"));
	assert_false(srv_config_is_set(cfg, NULL, "listen"));
	assert_true(srv_config_is_set(cfg, "imap", "listen"));
}

/* A section and a prefix are one scope: setting both is a duplicate. */
static void test_srv_config_duplicates(void **state)
{
	struct srv_config *cfg = *state;
	const char *err;

	expect_err("\n\nworkers: 4\nworkers: 5\n",
		   "t.conf:4: duplicate key 'workers' (first set at t.conf:3)");
	expect_err("imap.listen: a\n[imap]\nlisten: b\n",
		   "t.conf:3: duplicate key 'imap.listen' "
		   "(first set at t.conf:1)");
	expect_err("[imap]\nlisten: a\n[lmtp]\n[imap]\nLISTEN: b\n",
		   "t.conf:5: duplicate key 'imap.listen' "
		   "(first set at t.conf:2)");
	/* Several files: one namespace. */
	assert_int_equal(
		srv_config_load_string(cfg, "a.conf", "workers: 1\n", 11, &err),
		0);
	assert_int_equal(srv_config_load_string(cfg, "b.conf",
						"max_conns: 1\nworkers: 1\n",
						25, &err),
			 -EINVAL);
	assert_string_equal(err, "b.conf:2: duplicate key 'workers' "
				 "(first set at a.conf:1)");
	/* The failed file left nothing behind. */
	assert_int_equal(srv_config_int(cfg, NULL, "max_conns"), 1000);
	assert_int_equal(srv_config_int(cfg, NULL, "workers"), 1);
}

static void test_srv_config_line_errors(void **state)
{
	static const struct {
		const char *text, *err;
	} cases[] = {
		{"workers 4\n", "t.conf:1: expected 'key: value'"},
		{"\nworkers = 4\n", "t.conf:2: expected 'key: value' "
				    "('key=value' is for -o overrides)"},
		{"workers:\n", "t.conf:1: missing value for 'workers'"},
		{"workers:  \t \n", "t.conf:1: missing value for 'workers'"},
		{"frobnicate: 1\n", "t.conf:1: unknown key 'frobnicate'"},
		{"wrokers: 4\n", "t.conf:1: unknown key 'wrokers' "
				 "(did you mean 'workers'?)"},
		{"max_con: 4\n", "t.conf:1: unknown key 'max_con' "
				 "(did you mean 'max_conns'?)"},
		{"imap.listne: x\n", "t.conf:1: unknown key 'imap.listne' "
				     "(did you mean 'imap.listen'?)"},
		{"imap_listen: x\n",
		 "t.conf:1: unknown key 'imap_listen' (did you mean "
		 "'imap.listen'? services are prefixed with '.')"},
		{"work ers: 1\n", "t.conf:1: invalid key name 'work ers'"},
		{"a.b.c: 1\n", "t.conf:1: invalid key name 'a.b.c'"},
		{".listen: 1\n", "t.conf:1: invalid service name ''"},
		{"im ap.listen: 1\n", "t.conf:1: invalid service name 'im ap'"},
		{"@include: /etc/other.conf\n",
		 "t.conf:1: directives such as '@include' are not supported"},
		{"[imap\n", "t.conf:1: expected ']' at the end of a section "
			    "header"},
		{"[imap] # x\n", "t.conf:1: expected ']' at the end of a "
				 "section header"},
		{"[ \t]\n", "t.conf:1: empty section name"},
		{"[im ap]\n", "t.conf:1: invalid service name 'im ap'"},
		{"[imap]\nlmtp.listen: x\n",
		 "t.conf:2: 'lmtp.listen' names a service inside [imap]"},
		{"[imap]\nworkers: 3\n",
		 "t.conf:2: 'workers' is global-only: it cannot be set for "
		 "service 'imap'"},
		{"imap.workers: 3\n",
		 "t.conf:1: 'workers' is global-only: it cannot be set for "
		 "service 'imap'"},
		{"listen: 143\n",
		 "t.conf:1: 'listen' is per-service: set it in a [service] "
		 "section or as service.listen"},
		/* the option's first line, for a continued one */
		{"servername: a \\\nb\nwrokers: 1 \\\n 2\n",
		 "t.conf:3: unknown key 'wrokers' (did you mean 'workers'?)"},
		{"name\x01: x\n", "t.conf:1: control character 0x01"},
		{"servername: a\rb\n", "t.conf:1: control character 0x0d"},
		{"servername: a\x7f\n", "t.conf:1: control character 0x7f"},
		{"servername: caf\xc3\n", "t.conf:1: invalid UTF-8"},
		{"servername: \xc3(x\n", "t.conf:1: invalid UTF-8"},
		{"servername: \xc0\xaf\n", "t.conf:1: invalid UTF-8"},
		{"servername: \xed\xa0\x80\n", "t.conf:1: invalid UTF-8"},
		{"servername: \xf4\x90\x80\x80\n", "t.conf:1: invalid UTF-8"},
		{"servername: \xff\n", "t.conf:1: invalid UTF-8"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		print_message("case %zu\n", i);
		expect_err(cases[i].text, cases[i].err);
	}
}

static void test_srv_config_value_errors(void **state)
{
	static const struct {
		const char *text, *err;
	} cases[] = {
		{"workers: many\n", "t.conf:1: bad integer 'many' for "
				    "'workers': expected a number"},
		{"workers: 4x\n", "t.conf:1: bad integer '4x' for 'workers': "
				  "not a whole number"},
		{"workers: 0x10\n", "t.conf:1: bad integer '0x10' for "
				    "'workers': not a whole number"},
		{"workers: 65\n", "t.conf:1: bad integer '65' for 'workers': "
				  "out of range (1 to 64)"},
		{"offset: -11\n", "t.conf:1: bad integer '-11' for 'offset': "
				  "out of range (-10 to 10)"},
		{"max_conns: 9223372036854775808\n",
		 "t.conf:1: bad integer '9223372036854775808' for "
		 "'max_conns': too large"},
		{"allowplaintext: maybe\n",
		 "t.conf:1: bad boolean 'maybe' for 'allowplaintext': use "
		 "yes/no, on/off, true/false or 1/0"},
		{"allowplaintext: yess\n",
		 "t.conf:1: bad boolean 'yess' for 'allowplaintext': use "
		 "yes/no, on/off, true/false or 1/0"},
		{"idle_timeout: 5x\n", "t.conf:1: bad duration '5x' for "
				       "'idle_timeout': unknown unit (use "
				       "ms, s, m, h, d)"},
		{"idle_timeout: 5 m\n", "t.conf:1: bad duration '5 m' for "
					"'idle_timeout': unknown unit (use "
					"ms, s, m, h, d)"},
		{"idle_timeout: 1h30\n",
		 "t.conf:1: bad duration '1h30' for 'idle_timeout': a number "
		 "without a unit must stand alone"},
		{"idle_timeout: -5s\n", "t.conf:1: bad duration '-5s' for "
					"'idle_timeout': expected a number"},
		{"idle_timeout: 500ms\n",
		 "t.conf:1: bad duration '500ms' for 'idle_timeout': out of "
		 "range (1s to 1d)"},
		{"idle_timeout: 1d1ms\n",
		 "t.conf:1: bad duration '1d1ms' for 'idle_timeout': out of "
		 "range (1s to 1d)"},
		{"poll_interval: 9223372036854776s\n",
		 "t.conf:1: bad duration '9223372036854776s' for "
		 "'poll_interval': too large"},
		{"poll_interval: 9223372036854776\n",
		 "t.conf:1: bad duration '9223372036854776' for "
		 "'poll_interval': too large"},
		{"poll_interval: 106751991168d\n",
		 "t.conf:1: bad duration '106751991168d' for "
		 "'poll_interval': too large"},
		{"poll_interval: 106751991167d25975808ms\n",
		 "t.conf:1: bad duration '106751991167d25975808ms' for "
		 "'poll_interval': too large"},
		{"maxliteral: 2G\n", "t.conf:1: bad size '2G' for "
				     "'maxliteral': out of range (0 to 1G)"},
		{"buf_size: 10Q\n", "t.conf:1: bad size '10Q' for "
				    "'buf_size': unknown unit (use k, M, G, "
				    "T)"},
		{"buf_size: 10iB\n", "t.conf:1: bad size '10iB' for "
				     "'buf_size': unknown unit (use k, M, "
				     "G, T)"},
		{"buf_size: k\n", "t.conf:1: bad size 'k' for 'buf_size': "
				  "expected a number"},
		{"buf_size: 8388608T\n", "t.conf:1: bad size '8388608T' for "
					 "'buf_size': too large"},
		{"buf_size: 9223372036854775808\n",
		 "t.conf:1: bad size '9223372036854775808' for 'buf_size': "
		 "too large"},
		{"log_level: loud\n",
		 "t.conf:1: bad value 'loud' for 'log_level': expected one of "
		 "debug|info|warn|error"},
		{"[imap]\nlog_level: loud\n",
		 "t.conf:2: bad value 'loud' for 'imap.log_level': expected "
		 "one of debug|info|warn|error"},
		/* A secret's value is not repeated. */
		{"secret_port: hunter2\n", "t.conf:1: bad integer for "
					   "'secret_port': expected a number"},
		/* Long values are cut in messages (on a UTF-8 boundary). */
		{"workers: 12345678901234567890123456789012345678901234567890"
		 "123456789\xc3\xa9xyz\n",
		 "t.conf:1: bad integer '1234567890123456789012345678901234567"
		 "8901234567890123456789...' for 'workers': too large"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		print_message("case %zu\n", i);
		expect_err(cases[i].text, cases[i].err);
	}
}

static void test_srv_config_durations(void **state)
{
	static const struct {
		const char *text;
		uint64_t ms;
	} cases[] = {
		{"100ms", 100},
		{"30s", 30000},
		{"5m", 300000},
		{"5M", 300000},
		{"2h", 7200000},
		{"1d", 86400000},
		{"90", 90000},
		{"0", 0},
		{"0s", 0},
		{"1h30m", 5400000},
		{"1m30s500ms", 90500},
		{"9223372036854775807ms", INT64_MAX},
		{"106751991167d25975807ms", INT64_MAX},
		{"9223372036854775s", 9223372036854775000ull},
	};
	struct srv_config *cfg = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char line[128];

		srv_config_free(&cfg);
		assert_int_equal(cfg_setup((void **)&cfg), 0);
		(void)snprintf(line, sizeof(line), "poll_interval: %s\n",
			       cases[i].text);
		assert_int_equal(load(cfg, line), 0);
		assert_int_equal(srv_config_ms(cfg, NULL, "poll_interval"),
				 cases[i].ms);
		assert_string_equal(srv_config_str(cfg, NULL, "poll_interval"),
				    cases[i].text);
	}
	*state = cfg;
}

static void test_srv_config_sizes(void **state)
{
	static const struct {
		const char *text;
		uint64_t bytes;
	} cases[] = {
		{"7", 7},
		{"512b", 512},
		{"64k", 65536},
		{"64K", 65536},
		{"1KiB", 1024},
		{"10M", 10ull << 20},
		{"10 MB", 10ull << 20},
		{"1G", 1ull << 30},
		{"2T", 2ull << 40},
		{"8388607T", 8388607ull << 40},
		{"9223372036854775807", INT64_MAX},
	};
	struct srv_config *cfg = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char line[128];

		srv_config_free(&cfg);
		assert_int_equal(cfg_setup((void **)&cfg), 0);
		(void)snprintf(line, sizeof(line), "buf_size: %s\n",
			       cases[i].text);
		assert_int_equal(load(cfg, line), 0);
		assert_int_equal(srv_config_size(cfg, NULL, "buf_size"),
				 cases[i].bytes);
	}
	*state = cfg;
}

static void test_srv_config_ints_bools(void **state)
{
	static const char *const yes[] = {"yes", "on", "true", "1",
					  "y",	 "t",  "YES",  "On"};
	static const char *const no[] = {"no", "off", "false", "0",
					 "n",  "f",   "NO",    "False"};
	struct srv_config *cfg = *state;
	char line[64];

	assert_int_equal(load(cfg, "offset: -10\nmax_conns: "
				   "9223372036854775807\nworkers: +64\n"),
			 0);
	assert_int_equal(srv_config_int(cfg, NULL, "offset"), -10);
	assert_int_equal(srv_config_int(cfg, NULL, "max_conns"), INT64_MAX);
	assert_int_equal(srv_config_int(cfg, NULL, "workers"), 64);
	for (size_t i = 0; i < 8; i++) {
		srv_config_free(&cfg);
		assert_int_equal(cfg_setup((void **)&cfg), 0);
		(void)snprintf(line, sizeof(line),
			       "allowplaintext: %s\n"
			       "imap.allowplaintext: %s\n",
			       yes[i], no[i]);
		assert_int_equal(load(cfg, line), 0);
		assert_true(srv_config_bool(cfg, NULL, "allowplaintext"));
		assert_false(srv_config_bool(cfg, "imap", "allowplaintext"));
	}
	*state = cfg;
}

static void test_srv_config_lists_enums(void **state)
{
	struct srv_config *cfg = *state;
	const char *const *w;

	assert_int_equal(load(cfg, "sasl_mechs: a b,c ,, d\t e,\n"
				   "imap.sasl_mechs: ,\n"
				   "log_level: Error\n"
				   "imap.log_level: debug\n"),
			 0);
	assert_int_equal(srv_config_list(cfg, NULL, "sasl_mechs", &w), 5);
	assert_string_equal(w[0], "a");
	assert_string_equal(w[1], "b");
	assert_string_equal(w[2], "c");
	assert_string_equal(w[3], "d");
	assert_string_equal(w[4], "e");
	assert_null(w[5]);
	assert_int_equal(srv_config_list(cfg, "imap", "sasl_mechs", &w), 0);
	assert_null(w[0]);
	assert_int_equal(srv_config_enum(cfg, NULL, "log_level"), 3);
	assert_string_equal(srv_config_str(cfg, NULL, "log_level"), "error");
	assert_int_equal(srv_config_enum(cfg, "imap", "log_level"), 0);
}

static void test_srv_config_overrides(void **state)
{
	struct srv_config *cfg = *state;
	const char *err = (const char *)1;

	/* Set before the load: still wins over the file's value. */
	assert_int_equal(srv_config_set(cfg, "max_conns=5", &err), 0);
	assert_null(err);
	assert_int_equal(load(cfg, "max_conns: 10\n[imap]\nlisten: 143\n"
				   "idle_timeout: 1m\n"),
			 0);
	assert_int_equal(srv_config_int(cfg, NULL, "max_conns"), 5);
	assert_int_equal(
		srv_config_set(cfg, " imap.listen = [::1]:1143 ", &err), 0);
	assert_string_equal(srv_config_str(cfg, "imap", "listen"),
			    "[::1]:1143");
	/* A later override replaces an earlier one. */
	assert_int_equal(srv_config_set(cfg, "max_conns=6", &err), 0);
	assert_int_equal(srv_config_int(cfg, NULL, "max_conns"), 6);
	assert_int_equal(srv_config_set(cfg, "imap.listen=a=b", &err), 0);
	assert_string_equal(srv_config_str(cfg, "imap", "listen"), "a=b");
	/* A global override does not beat a service's own value. */
	assert_int_equal(srv_config_set(cfg, "idle_timeout=2m", &err), 0);
	assert_int_equal(srv_config_ms(cfg, "imap", "idle_timeout"), 60000);
	assert_int_equal(srv_config_ms(cfg, "lmtp", "idle_timeout"), 120000);
	/* A new service from the command line. */
	assert_int_equal(srv_config_set(cfg, "lmtp.listen=24", &err), 0);
	assert_string_equal(srv_config_str(cfg, "lmtp", "listen"), "24");

	expect_set_err(cfg, "wrokers=3",
		       "-o wrokers=3: unknown key 'wrokers' (did you mean "
		       "'workers'?)");
	expect_set_err(cfg, "workers",
		       "-o workers: expected key=value or service.key=value");
	expect_set_err(cfg, "workers: 3",
		       "-o workers: 3: expected key=value or "
		       "service.key=value");
	expect_set_err(
		cfg, "workers= ", "-o workers= : missing value for 'workers'");
	expect_set_err(cfg, "imap.listen=",
		       "-o imap.listen=: missing value for 'imap.listen'");
	expect_set_err(cfg, "imap.workers=3",
		       "-o imap.workers=3: 'workers' is global-only: it "
		       "cannot be set for service 'imap'");
	expect_set_err(cfg, "listen=1",
		       "-o listen=1: 'listen' is per-service: set it in a "
		       "[service] section or as service.listen");
	expect_set_err(cfg, "workers=100",
		       "-o workers=100: bad integer '100' for 'workers': out "
		       "of range (1 to 64)");
	expect_set_err(cfg, "secret_port=hunter2",
		       "-o secret_port=***: bad integer for 'secret_port': "
		       "expected a number");
	expect_set_err(cfg, "imap.secret_port = hunter2",
		       "-o imap.secret_port =***: bad integer for "
		       "'imap.secret_port': expected a number");
	expect_set_err(cfg, "servername=\x01",
		       "-o servername=\x01: control character 0x01");
	expect_set_err(cfg, "a b=1", "-o a b=1: invalid key name 'a b'");
	expect_set_err(cfg, NULL, "-o: no assignment");
	/* Failed sets changed nothing. */
	assert_int_equal(srv_config_int(cfg, NULL, "workers"), 2);
	assert_int_equal(srv_config_set(cfg, "tls_key_pass=s3cret", &err), 0);
	assert_string_equal(srv_config_str(cfg, NULL, "tls_key_pass"),
			    "s3cret");
}

/* A failed load leaves values and services exactly as they were. */
static void test_srv_config_atomic(void **state)
{
	struct srv_config *cfg = *state;
	const char *const *names;
	char *before, *after;

	assert_int_equal(load(cfg, "[imap]\nlisten: 1\n"), 0);
	before = dump_str(cfg);
	assert_int_equal(load(cfg, "max_conns: 3\n[lmtp]\nlisten: 2\n"
				   "imap.idle_timeout: 1m\n[pop]\nbad\n"),
			 -EINVAL);
	after = dump_str(cfg);
	assert_string_equal(before, after);
	assert_int_equal(srv_config_services(cfg, &names), 1);
	assert_null(names[1]);
	assert_int_equal(srv_config_int(cfg, "lmtp", "max_conns"), 1000);
	free(before);
	free(after);
	/* And a good load afterwards works. */
	assert_int_equal(load(cfg, "max_conns: 3\n"), 0);
	assert_int_equal(srv_config_int(cfg, "lmtp", "max_conns"), 3);
}

static void test_srv_config_long_lines(void **state)
{
	struct srv_config *cfg = *state;
	size_t big = 1u << 20, n;
	char *text = malloc(big + 64);
	const char *err;

	if (text == NULL) {
		fail_msg("out of memory");
		return;
	}
	/* A 1 MiB line. */
	n = (size_t)sprintf(text, "workers: 1\nservername: ");
	memset(text + n, 'a', big);
	memcpy(text + n + big, "\n", 2);
	expect_err(text, "t.conf:2: line too long (more than 65536 bytes)");
	/* Exactly SRV_CONFIG_LINE_MAX is fine, one more is not. */
	n = (size_t)sprintf(text, "servername: ");
	memset(text + n, 'b', SRV_CONFIG_LINE_MAX - n);
	memcpy(text + SRV_CONFIG_LINE_MAX, "\r\n", 3);
	assert_int_equal(load(cfg, text), 0);
	assert_int_equal(strlen(srv_config_str(cfg, NULL, "servername")),
			 SRV_CONFIG_LINE_MAX - n);
	text[SRV_CONFIG_LINE_MAX] = 'b';
	memcpy(text + SRV_CONFIG_LINE_MAX + 1, "\n", 2);
	expect_err(text, "t.conf:1: line too long (more than 65536 bytes)");
	/* Continuations count together. */
	n = (size_t)sprintf(text, "max_conns: 1\\\n");
	memset(text + n, '0', SRV_CONFIG_LINE_MAX);
	memcpy(text + n + SRV_CONFIG_LINE_MAX, "\n", 2);
	expect_err(text, "t.conf:2: line too long (more than 65536 bytes)");
	/* Past SRV_CONFIG_FILE_MAX: refused before parsing. */
	assert_int_equal(srv_config_load_string(cfg, "big", text,
						SRV_CONFIG_FILE_MAX + 1u, &err),
			 -EFBIG);
	assert_string_equal(err, "big: too large (more than 16777216 bytes)");
	free(text);
}

static void test_srv_config_nul(void **state)
{
	static const char text[] = "workers: 1\n# c\0mment\nservername: x\n";
	static const char text2[] = "servername: a\0b\n";
	struct srv_config *cfg = *state;
	const char *err;

	assert_int_equal(srv_config_load_string(cfg, "n.conf", text,
						sizeof(text) - 1, &err),
			 -EINVAL);
	assert_string_equal(err, "n.conf:2: NUL byte");
	assert_int_equal(srv_config_load_string(cfg, "n.conf", text2,
						sizeof(text2) - 1, &err),
			 -EINVAL);
	assert_string_equal(err, "n.conf:1: NUL byte");
	assert_int_equal(srv_config_load_string(cfg, NULL, NULL, 1, &err),
			 -EINVAL);
	assert_string_equal(err, "(string): no text");
	assert_int_equal(srv_config_load_string(cfg, NULL, NULL, 0, &err), 0);
	assert_null(err);
	/* Without errstr_out. */
	assert_int_equal(srv_config_load_string(cfg, "n.conf", text2,
						sizeof(text2) - 1, NULL),
			 -EINVAL);
	assert_int_equal(srv_config_int(cfg, NULL, "workers"), 2);
	/* UTF-8 that is valid passes, in values and comments alike. */
	assert_int_equal(
		load(cfg, "# caf\xe9 (latin-1 in a comment)\n"
			  "servername: \xc3\xa9t\xc3\xa9 \xf0\x9f\x93\xac\n"),
		0);
	assert_string_equal(srv_config_str(cfg, NULL, "servername"),
			    "\xc3\xa9t\xc3\xa9 \xf0\x9f\x93\xac");
}

static void test_srv_config_misuse(void **state)
{
	struct srv_config *cfg = *state;
	const char *const *w = NULL;

	assert_null(srv_config_misuse(cfg));
	/* Unregistered keys: the zero value, reported once. */
	assert_int_equal(srv_config_int(cfg, NULL, "nosuch"), 0);
	assert_string_equal(srv_config_misuse(cfg), "srv_config_int(nosuch)");
	assert_null(srv_config_str(cfg, "imap", "nosuch"));
	assert_false(srv_config_bool(cfg, NULL, "nosuch"));
	assert_int_equal(srv_config_ms(cfg, NULL, "nosuch"), 0);
	assert_int_equal(srv_config_size(cfg, NULL, "nosuch"), 0);
	assert_int_equal(srv_config_list(cfg, NULL, "nosuch", &w), 0);
	assert_non_null(w);
	assert_null(w[0]);
	assert_int_equal(srv_config_enum(cfg, NULL, "nosuch"), -1);
	assert_false(srv_config_is_set(cfg, NULL, "nosuch"));
	assert_null(srv_config_str(cfg, NULL, NULL));
	assert_string_equal(srv_config_misuse(cfg), "srv_config_int(nosuch)");
	/* The wrong getter for a key with a non-zero default. */
	srv_config_free(&cfg);
	assert_int_equal(cfg_setup((void **)&cfg), 0);
	assert_int_equal(srv_config_int(cfg, NULL, "idle_timeout"), 0);
	assert_string_equal(srv_config_misuse(cfg),
			    "srv_config_int(idle_timeout)");
	assert_int_equal(srv_config_ms(cfg, NULL, "workers"), 0);
	assert_false(srv_config_bool(cfg, NULL, "log_level"));
	assert_int_equal(srv_config_enum(cfg, NULL, "allowplaintext"), -1);
	assert_int_equal(srv_config_list(cfg, NULL, "servername", &w), 0);
	/* str reads every type. */
	assert_string_equal(srv_config_str(cfg, NULL, "idle_timeout"), "30m");
	/* No configuration at all: still no crash. */
	assert_null(srv_config_str(NULL, NULL, "workers"));
	assert_int_equal(srv_config_int(NULL, NULL, "workers"), 0);
	assert_int_equal(srv_config_services(NULL, &w), 0);
	assert_null(srv_config_misuse(NULL));
	*state = cfg;
}

static void test_srv_config_add_keys(void **state)
{
	static const struct srv_cfg_key more[] = {
		{"extra", SRV_CFG_INT, "5", NULL, 0, 0, 0, NULL},
	};
	static const struct srv_cfg_key dup[] = {
		{"new1", SRV_CFG_STR, NULL, NULL, 0, 0, 0, NULL},
		{"workers", SRV_CFG_STR, NULL, NULL, 0, 0, 0, NULL},
	};
	static const struct srv_cfg_key dup_self[] = {
		{"new1", SRV_CFG_STR, NULL, NULL, 0, 0, 0, NULL},
		{"new1", SRV_CFG_STR, NULL, NULL, 0, 0, 0, NULL},
	};
	static const struct srv_cfg_key bad[][1] = {
		{{"Upper", SRV_CFG_STR, NULL, NULL, 0, 0, 0, NULL}},
		{{"a.b", SRV_CFG_STR, NULL, NULL, 0, 0, 0, NULL}},
		{{"", SRV_CFG_STR, NULL, NULL, 0, 0, 0, NULL}},
		{{NULL, SRV_CFG_STR, NULL, NULL, 0, 0, 0, NULL}},
		{{"x", (enum srv_cfg_type)99, NULL, NULL, 0, 0, 0, NULL}},
		{{"x", SRV_CFG_INT, "abc", NULL, 0, 0, 0, NULL}},
		{{"x", SRV_CFG_INT, "0", NULL, 1, 5, 0, NULL}},
		{{"x", SRV_CFG_INT, NULL, NULL, 5, 1, 0, NULL}},
		{{"x", SRV_CFG_STR, NULL, NULL, 1, 5, 0, NULL}},
		{{"x", SRV_CFG_MS, NULL, NULL, -1, 5, 0, NULL}},
		{{"x", SRV_CFG_MS, "1x", NULL, 0, 0, 0, NULL}},
		{{"x", SRV_CFG_BOOL, "maybe", NULL, 0, 0, 0, NULL}},
		{{"x", SRV_CFG_ENUM, NULL, NULL, 0, 0, 0, NULL}},
		{{"x", SRV_CFG_ENUM, "c", "a|b", 0, 0, 0, NULL}},
		{{"x", SRV_CFG_ENUM, NULL, "a||b", 0, 0, 0, NULL}},
		{{"x", SRV_CFG_ENUM, NULL, "a|", 0, 0, 0, NULL}},
		{{"x", SRV_CFG_STR, NULL, "a|b", 0, 0, 0, NULL}},
		{{"x", SRV_CFG_STR, NULL, NULL, 0, 0, 0x80, NULL}},
		{{"x", SRV_CFG_STR, NULL, NULL, 0, 0,
		  SRV_CFG_GLOBAL_ONLY | SRV_CFG_SERVICE_ONLY, NULL}},
		{{"a_name_longer_than_sixty_four_bytes_is_refused_by_the_schema"
		  "_check",
		  SRV_CFG_STR, NULL, NULL, 0, 0, 0, NULL}},
	};
	struct srv_config *cfg = *state;
	const char *err;

	assert_int_equal(srv_config_add_keys(cfg, dup, 2), -EEXIST);
	assert_int_equal(srv_config_add_keys(cfg, dup_self, 2), -EEXIST);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("case %zu\n", i);
		assert_int_equal(srv_config_add_keys(cfg, bad[i], 1), -EINVAL);
	}
	/* Nothing of the failed calls was registered. */
	assert_int_equal(srv_config_load_string(cfg, "t", "new1: x", 7, &err),
			 -EINVAL);
	assert_string_equal(err, "t:1: unknown key 'new1'");
	assert_int_equal(srv_config_add_keys(cfg, more, 1), 0);
	assert_int_equal(srv_config_int(cfg, NULL, "extra"), 5);
	/* Once a load succeeded, the schema is closed. */
	assert_int_equal(load(cfg, "extra: 6\n"), 0);
	assert_int_equal(srv_config_add_keys(cfg, dup_self, 1), -EBUSY);
	/* Many keys: the hash grows. */
	srv_config_free(&cfg);
	assert_int_equal(srv_config_new(&cfg), 0);
	{
		static char names[300][8];
		static struct srv_cfg_key many[300];

		for (int i = 0; i < 300; i++) {
			(void)snprintf(names[i], sizeof(names[i]), "k%d", i);
			many[i] = (struct srv_cfg_key){
				names[i], SRV_CFG_INT, NULL, NULL,
				0,	  0,	       0,    NULL};
		}
		assert_int_equal(srv_config_add_keys(cfg, many, 150), 0);
		assert_int_equal(srv_config_add_keys(cfg, many + 150, 150), 0);
		assert_int_equal(load(cfg, "k0: 1\nk299: 299\nk150: 150\n"), 0);
		assert_int_equal(srv_config_int(cfg, NULL, "k299"), 299);
		assert_int_equal(srv_config_int(cfg, NULL, "k150"), 150);
		assert_int_equal(srv_config_int(cfg, NULL, "k7"), 0);
		assert_null(srv_config_misuse(cfg));
	}
	*state = cfg;
}

static void test_srv_config_dump(void **state)
{
	struct srv_config *cfg = *state;
	char *d;

	assert_int_equal(load(cfg, "workers: 4\n"
				   "tls_key_pass: hunter2\n"
				   "imap.secret_port: 993\n"
				   "[imap]\n"
				   "listen: [::]:143\n"
				   "max_conns: 10\n"
				   "[lmtp]\n"),
			 0);
	assert_int_equal(srv_config_set(cfg, "imap.max_conns=11", NULL), 0);
	d = dump_str(cfg);
	assert_string_equal(
		d,
		"# effective configuration; '# key: value' lines are defaults\n"
		"# listen: (unset)\n"
		"# servername: localhost\n"
		"tls_key_pass: ********\n"
		"# secret_port: (unset)\n"
		"workers: 4\n"
		"# max_conns: 1000\n"
		"# offset: (unset)\n"
		"# allowplaintext: no\n"
		"# idle_timeout: 30m\n"
		"# poll_interval: (unset)\n"
		"# maxliteral: 64k\n"
		"# buf_size: (unset)\n"
		"# sasl_mechs: PLAIN LOGIN\n"
		"# log_level: info\n"
		"\n"
		"[imap]\n"
		"listen: [::]:143\n"
		"secret_port: ********\n"
		"max_conns: 11\n"
		"\n"
		"[lmtp]\n");
	free(d);
	/* A write error is reported. */
	{
		FILE *f = fopen("/dev/full", "w");

		if (f != NULL) {
			assert_int_equal(srv_config_dump(cfg, f), -EIO);
			(void)fclose(f);
		}
	}
}

/* ------------------------------------------------------------------ */
/* files */

static char tmpdir[64];

static int files_setup(void **state)
{
	(void)snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-srv-config-XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	return cfg_setup(state);
}

static int files_teardown(void **state)
{
	char cmd[128];

	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		return -1;
	return cfg_teardown(state);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void test_srv_config_file(void **state)
{
	struct srv_config *cfg = *state;
	char path[128], want[256];
	const char *err;

	(void)snprintf(path, sizeof(path), "%s/imapd.conf", tmpdir);
	write_file(path, "workers: 8\r\n[imap]\r\nlisten: 143\r\n");
	assert_int_equal(srv_config_load(cfg, path, &err), 0);
	assert_null(err);
	assert_int_equal(srv_config_int(cfg, "imap", "workers"), 8);
	assert_string_equal(srv_config_str(cfg, "imap", "listen"), "143");
	/* Errors name the path. */
	(void)snprintf(path, sizeof(path), "%s/bad.conf", tmpdir);
	write_file(path, "# two\n\nlog_level: loud\n");
	assert_int_equal(srv_config_load(cfg, path, &err), -EINVAL);
	(void)snprintf(want, sizeof(want),
		       "%s:3: bad value 'loud' for 'log_level': expected one "
		       "of debug|info|warn|error",
		       path);
	assert_string_equal(err, want);
}

static void test_srv_config_missing_file(void **state)
{
	struct srv_config *cfg = *state;
	char path[128], want[256];
	const char *err;

	(void)snprintf(path, sizeof(path), "%s/nosuch.conf", tmpdir);
	assert_int_equal(srv_config_load(cfg, path, &err), -ENOENT);
	(void)snprintf(want, sizeof(want), "%s: No such file or directory",
		       path);
	assert_string_equal(err, want);
	/* A directory. */
	assert_int_equal(srv_config_load(cfg, tmpdir, &err), -EISDIR);
	(void)snprintf(want, sizeof(want), "%s: Is a directory", tmpdir);
	assert_string_equal(err, want);
}

/*
 * Capabilities are per thread: root drops CAP_DAC_OVERRIDE and
 * CAP_DAC_READ_SEARCH from this thread's effective set (they stay
 * permitted) for the open, and raises them again after.
 */
static int set_dac_caps(bool on, struct __user_cap_data_struct saved[2])
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];

	if (on)
		return (int)syscall(SYS_capset, &h, saved);
	if (syscall(SYS_capget, &h, saved) != 0)
		return -1;
	memcpy(d, saved, sizeof(d));
	d[0].effective &=
		~((1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH));
	return (int)syscall(SYS_capset, &h, d);
}

static void test_srv_config_unreadable_file(void **state)
{
	struct __user_cap_data_struct saved[2];
	struct srv_config *cfg = *state;
	char path[128], want[256];
	const char *err;
	int fd, ret;

	(void)snprintf(path, sizeof(path), "%s/secret.conf", tmpdir);
	write_file(path, "workers: 3\n");
	assert_int_equal(chmod(path, 0), 0);
	assert_int_equal(set_dac_caps(false, saved), 0);
	fd = open(path, O_RDONLY);
	if (fd >= 0) {
		close(fd);
		assert_int_equal(set_dac_caps(true, saved), 0);
		print_message("skipped: a mode 000 file stays readable here "
			      "(no way to drop the DAC capabilities)\n");
		skip();
	}
	ret = srv_config_load(cfg, path, &err);
	assert_int_equal(set_dac_caps(true, saved), 0);
	assert_int_equal(ret, -EACCES);
	(void)snprintf(want, sizeof(want), "%s: Permission denied", path);
	assert_string_equal(err, want);
	assert_int_equal(srv_config_int(cfg, NULL, "workers"), 2);
}

#define T(name) cmocka_unit_test_setup_teardown(name, cfg_setup, cfg_teardown)
#define TF(name) \
	cmocka_unit_test_setup_teardown(name, files_setup, files_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_srv_config_defaults),
		T(test_srv_config_syntax),
		T(test_srv_config_scopes),
		T(test_srv_config_duplicates),
		T(test_srv_config_line_errors),
		T(test_srv_config_value_errors),
		T(test_srv_config_durations),
		T(test_srv_config_sizes),
		T(test_srv_config_ints_bools),
		T(test_srv_config_lists_enums),
		T(test_srv_config_overrides),
		T(test_srv_config_atomic),
		T(test_srv_config_long_lines),
		T(test_srv_config_nul),
		T(test_srv_config_misuse),
		T(test_srv_config_add_keys),
		T(test_srv_config_dump),
		TF(test_srv_config_file),
		TF(test_srv_config_missing_file),
		TF(test_srv_config_unreadable_file),
	};

	return cmocka_run_group_tests_name("srv-config", tests, NULL, NULL);
}
