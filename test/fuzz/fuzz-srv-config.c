/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/srv-config: the configuration parser on arbitrary file bytes. */
#include "fuzz.h"

#include <errno.h>
#include <stdbool.h>

#include <ringprot/srv-config.h>

/*
 * The input is a configuration file, loaded with a fixed schema that has
 * every type and flag. Then every key is read in every scope (global,
 * each service, an unknown service) with its own getter, and the typed
 * values must keep the schema's promises: ranges, defaults, enum indexes,
 * NULL-terminated lists. Then each input line (up to MAX_SETS) is tried
 * as an override. A failed load or set must leave the configuration
 * exactly as it was (same dump) and say where ("fuzz:" or "-o "). A
 * secret must never appear in a dump. ASan and LSan do the rest.
 */

#define MAX_SETS 32

static const struct srv_cfg_key keys[] = {
	{"name", SRV_CFG_STR, NULL, NULL, 0, 0, 0, NULL},
	{"password", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_SECRET, NULL},
	{"listen", SRV_CFG_STR, NULL, NULL, 0, 0, SRV_CFG_SERVICE_ONLY, NULL},
	{"workers", SRV_CFG_INT, "4", NULL, 1, 64, SRV_CFG_GLOBAL_ONLY, NULL},
	{"backlog", SRV_CFG_INT, NULL, NULL, 0, 0, 0, NULL},
	{"tls", SRV_CFG_BOOL, "no", NULL, 0, 0, 0, NULL},
	{"idle_timeout", SRV_CFG_MS, "30m", NULL, 1000, 86400000, 0, NULL},
	{"connect_timeout", SRV_CFG_MS, NULL, NULL, 0, 0, 0, NULL},
	{"max_literal", SRV_CFG_SIZE, "64k", NULL, 0, 1ll << 30, 0, NULL},
	{"buf_size", SRV_CFG_SIZE, NULL, NULL, 0, 0, 0, NULL},
	{"sasl_mechs", SRV_CFG_LIST, "PLAIN", NULL, 0, 0, 0, NULL},
	{"log_level", SRV_CFG_ENUM, "info", "debug|info|warn|error", 0, 0, 0,
	 NULL},
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const char *const choices[] = {"debug", "info", "warn", "error"};

/* The dump as a malloc'd string. */
static char *dump(const struct srv_config *cfg)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);

	FUZZ_CHECK(f != NULL);
	FUZZ_CHECK(srv_config_dump(cfg, f) == 0);
	FUZZ_CHECK(fclose(f) == 0);
	return s;
}

static void check_key(const struct srv_config *cfg, const char *svc,
		      const struct srv_cfg_key *k)
{
	const char *text = srv_config_str(cfg, svc, k->name);
	const char *const *w;
	size_t n;
	int64_t i;
	int e;

	HINT(srv_config_is_set(cfg, svc, k->name));
	FUZZ_CHECK(!srv_config_is_set(cfg, svc, k->name) || text != NULL);
	FUZZ_CHECK(k->def == NULL || text != NULL);
	switch (k->type) {
	case SRV_CFG_STR:
		break;
	case SRV_CFG_INT:
		i = srv_config_int(cfg, svc, k->name);
		FUZZ_CHECK(k->min == k->max || (i >= k->min && i <= k->max));
		break;
	case SRV_CFG_BOOL:
		(void)srv_config_bool(cfg, svc, k->name);
		break;
	case SRV_CFG_MS:
		i = (int64_t)srv_config_ms(cfg, svc, k->name);
		FUZZ_CHECK(i >= 0);
		FUZZ_CHECK(k->min == k->max || (i >= k->min && i <= k->max));
		FUZZ_CHECK(text != NULL || i == 0);
		break;
	case SRV_CFG_SIZE:
		i = (int64_t)srv_config_size(cfg, svc, k->name);
		FUZZ_CHECK(i >= 0);
		FUZZ_CHECK(k->min == k->max || (i >= k->min && i <= k->max));
		break;
	case SRV_CFG_LIST:
		n = srv_config_list(cfg, svc, k->name, &w);
		FUZZ_CHECK(w != NULL && w[n] == NULL);
		for (size_t j = 0; j < n; j++)
			FUZZ_CHECK(w[j][0] != '\0' &&
				   strpbrk(w[j], " \t,") == NULL);
		HINT(n > 3);
		break;
	case SRV_CFG_ENUM:
		e = srv_config_enum(cfg, svc, k->name);
		FUZZ_CHECK(e >= 0 && e < 4);
		FUZZ_CHECK(strcmp(text, choices[e]) == 0);
		break;
	}
}

static void check_all(const struct srv_config *cfg)
{
	const char *const *svcs;
	size_t n = srv_config_services(cfg, &svcs);
	char *d;

	FUZZ_CHECK(svcs[n] == NULL);
	HINT(n > 1);
	for (size_t i = 0; i < NKEYS; i++) {
		check_key(cfg, NULL, &keys[i]);
		check_key(cfg, "no-such-service", &keys[i]);
		for (size_t j = 0; j < n; j++)
			check_key(cfg, svcs[j], &keys[i]);
	}
	FUZZ_CHECK(srv_config_misuse(cfg) == NULL);
	d = dump(cfg);
	if (srv_config_is_set(cfg, NULL, "password"))
		FUZZ_CHECK(strstr(d, "\npassword: ********\n") != NULL);
	free(d);
}

/* Each line of the input as an override; a failure changes nothing. */
static void try_sets(struct srv_config *cfg, const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;

	for (int i = 0; i < MAX_SETS && p < end; i++) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		char *line = malloc(n + 1), *before = dump(cfg), *after;
		const char *err = NULL;

		FUZZ_CHECK(line != NULL);
		memcpy(line, p, n);
		line[n] = '\0';
		if (srv_config_set(cfg, line, &err) < 0) {
			FUZZ_CHECK(err != NULL && strncmp(err, "-o ", 3) == 0);
			after = dump(cfg);
			FUZZ_CHECK(strcmp(before, after) == 0);
			free(after);
		} else {
			HINT(true);
			FUZZ_CHECK(err == NULL);
		}
		free(before);
		free(line);
		p += n + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct srv_config *cfg;
	const char *err = NULL;
	char *before, *after;
	int ret;

	FUZZ_CHECK(srv_config_new(&cfg) == 0);
	FUZZ_CHECK(srv_config_add_keys(cfg, keys, NKEYS) == 0);
	before = dump(cfg);
	ret = srv_config_load_string(cfg, "fuzz", (const char *)data, size,
				     &err);
	if (ret < 0) {
		FUZZ_CHECK(ret == -EINVAL);
		FUZZ_CHECK(err != NULL && strncmp(err, "fuzz:", 5) == 0);
		after = dump(cfg);
		FUZZ_CHECK(strcmp(before, after) == 0);
		free(after);
	} else {
		FUZZ_CHECK(ret == 0 && err == NULL);
	}
	free(before);
	check_all(cfg);
	try_sets(cfg, data, size);
	check_all(cfg);
	/* A wrong getter is reported, not fatal. */
	FUZZ_CHECK(srv_config_int(cfg, NULL, "tls") == 0);
	FUZZ_CHECK(srv_config_misuse(cfg) != NULL);
	srv_config_free(&cfg);
	FUZZ_CHECK(cfg == NULL);
	return 0;
}
