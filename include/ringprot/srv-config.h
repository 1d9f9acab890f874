/* SPDX-License-Identifier: BSD-3-Clause */
/* server/config: typed `key: value` configuration with per-service scopes. */
#ifndef RINGPROT_SRV_CONFIG_H
#define RINGPROT_SRV_CONFIG_H

/*
 * The file format is Cyrus imapd.conf's, with service scopes added:
 *
 *	# a comment (a line whose first non-blank byte is '#')
 *	idle_timeout: 30m
 *	imap.listen: [::]:143		a service prefix: name.key
 *	[lmtp]				a section: keys below are lmtp's
 *	listen: /run/ringprot/lmtp.sock
 *	sasl_mechs: PLAIN, LOGIN \
 *	            SCRAM-SHA-256	a trailing '\' joins the next line
 *
 * As in Cyrus: one option per line, only ':' separates key and value
 * ("key = value" is an error; '=' is for srv_config_set()), keys are
 * case-insensitive ([A-Za-z0-9_-]), blanks around keys and values are
 * trimmed, an empty value is an error, a key set twice is an error, there
 * is no quoting and '#' starts a comment only at the start of a line.
 * Unlike Cyrus: unknown keys are errors, booleans are whole words, and a
 * service scope is "name." or a [name] section (Cyrus's "name_key" is
 * ambiguous with keys that contain '_'; the error for it suggests the
 * dotted form). A section lasts until the next one or the end of the
 * load; a dotted key inside a section is an error. "@include" is not
 * supported. Lines end in LF or CRLF; keys and values must be valid UTF-8
 * without control bytes (tab aside); a NUL byte anywhere is an error.
 *
 * A lookup of (service, key) returns the service's value, else the
 * global one, else the key's default. srv_config_set() overrides win over
 * file values of the same scope whatever the order of the calls, and a
 * later override replaces an earlier one.
 *
 * Lifetime and threads: build a configuration on one thread (new, add
 * keys, load, set), then share it read-only: every getter may be called
 * from any thread at once. A reload builds a new srv_config and swaps the
 * pointer; the old one is freed once no thread reads it.
 *
 * Errors: loads and sets return -errno and, through errstr_out, one
 * message owned by the configuration, valid until its next load, set or
 * free: "path:line: message" for file contents, "path: strerror" for the
 * file itself, "-o ASSIGNMENT: message" for overrides (a secret key's
 * value shows as "***"). A failed load or set leaves the configuration as
 * it was before the call.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <ringprot/common.h>

struct srv_config;

/* Longest logical line (continuations joined), excluding the newline. */
#define SRV_CONFIG_LINE_MAX 65536
/* Largest file or string srv_config_load*() accept. */
#define SRV_CONFIG_FILE_MAX (16u << 20)
/* Longest key or service name. */
#define SRV_CONFIG_NAME_MAX 64

enum srv_cfg_type {
	SRV_CFG_STR,
	SRV_CFG_INT,  /* decimal int64_t, optional sign */
	SRV_CFG_BOOL, /* yes/no on/off true/false y/n t/f 1/0, any case */
	/*
	 * Durations in milliseconds: "100ms", "30s", "5m", "2h", "1d" and
	 * sums of them ("1h30m"); a plain number is seconds.
	 */
	SRV_CFG_MS,
	/*
	 * Sizes in bytes: "64k", "10M", "1G", "2T" (powers of 1024; Cyrus's
	 * "KiB", "MB" spellings too); a plain number is bytes.
	 */
	SRV_CFG_SIZE,
	SRV_CFG_LIST, /* words separated by blanks and/or commas */
	SRV_CFG_ENUM, /* one of the '|'-separated `choices`, any case */
};

/* srv_cfg_key.flags */
#define SRV_CFG_GLOBAL_ONLY  0x1u /* may not be set for a service */
#define SRV_CFG_SERVICE_ONLY 0x2u /* may only be set for a service */
#define SRV_CFG_SECRET	     0x4u /* masked by dump and in errors */

/*
 * One key of the schema. name: lowercase [a-z0-9_-], at most
 * SRV_CONFIG_NAME_MAX bytes. def: the default as it would be written in
 * the file, or NULL (unset: getters give the zero value). min, max: the
 * inclusive range of INT (the number), MS (milliseconds) and SIZE
 * (bytes) values, defaults included; 0, 0 means none. choices: ENUM only,
 * "a|b|c". help: one line for --help style output (not used here).
 */
struct srv_cfg_key {
	const char *name;
	enum srv_cfg_type type;
	const char *def;
	const char *choices;
	int64_t min, max;
	unsigned flags;
	const char *help;
};

/* Returns 0 with a new empty configuration in *cfg_out, or -ENOMEM. */
RINGPROT_API int
srv_config_new(struct srv_config **cfg_out) RINGPROT_MUST_CHECK;

/* Free *cfg (NULL is fine) and set it to NULL. */
RINGPROT_API void srv_config_free(struct srv_config **cfg);

/*
 * Register n keys. Borrows keys: the array and its strings must outlive
 * cfg. Returns 0; -EEXIST if a name is already registered (or twice in
 * keys); -EINVAL for a bad name, type, flag combination, range, choices
 * or a default that does not parse or is out of range; -EBUSY once a
 * load or set succeeded; -ENOMEM. On error nothing is registered.
 */
RINGPROT_API int srv_config_add_keys(struct srv_config *cfg,
				     const struct srv_cfg_key *keys,
				     size_t n) RINGPROT_MUST_CHECK;

/*
 * The services a program has (names borrowed: they must outlive cfg).
 * Once set, a [section] or service.key naming another service is an
 * error at its file:line. Before any load or set: -EBUSY after.
 */
RINGPROT_API int srv_config_set_services(struct srv_config *cfg,
					 const char *const *names,
					 size_t n) RINGPROT_MUST_CHECK;

/*
 * Read the file at path and apply it. May be called for several files:
 * a key set twice in one scope is an error across files too. Returns 0;
 * -EINVAL for bad contents ("path:line: message"); -EFBIG past
 * SRV_CONFIG_FILE_MAX; -ENOMEM; or the open/read error for the file
 * itself (-ENOENT, -EACCES, -EISDIR...) with "path: strerror". Blocks on
 * the file read: call it at startup or on a reload thread.
 */
RINGPROT_API int srv_config_load(struct srv_config *cfg, const char *path,
				 const char **errstr_out) RINGPROT_MUST_CHECK;

/*
 * As srv_config_load() for len bytes of text (NULs included, which are
 * errors), with name in place of the path in messages.
 */
RINGPROT_API int
srv_config_load_string(struct srv_config *cfg, const char *name,
		       const char *text, size_t len,
		       const char **errstr_out) RINGPROT_MUST_CHECK;

/*
 * Apply one command-line override, "key=value" or "service.key=value"
 * (blanks around key and value trimmed; the value may contain '=').
 * Returns 0, -EINVAL ("-o ASSIGNMENT: message") or -ENOMEM.
 */
RINGPROT_API int srv_config_set(struct srv_config *cfg, const char *assignment,
				const char **errstr_out) RINGPROT_MUST_CHECK;

/*
 * Getters: service NULL asks for the global scope. Names match without
 * regard to case. They never fail for a registered key of the right type;
 * an unregistered key or a getter of the wrong type is a programming
 * error: the zero value (NULL, 0, false, -1 for enum) comes back and
 * srv_config_misuse() reports it. Any thread, no locks, no yield.
 */

/* The effective value's text, for any type (ENUM: the choice as spelt
 * in `choices`); NULL if unset. Valid until cfg is freed. */
RINGPROT_API const char *srv_config_str(const struct srv_config *cfg,
					const char *service, const char *key);
RINGPROT_API int64_t srv_config_int(const struct srv_config *cfg,
				    const char *service, const char *key);
RINGPROT_API bool srv_config_bool(const struct srv_config *cfg,
				  const char *service, const char *key);
/* Milliseconds. */
RINGPROT_API uint64_t srv_config_ms(const struct srv_config *cfg,
				    const char *service, const char *key);
/* Bytes. */
RINGPROT_API uint64_t srv_config_size(const struct srv_config *cfg,
				      const char *service, const char *key);
/*
 * The words of a LIST value: returns their count and sets *words_out to
 * a NULL-terminated array of them (an empty one if unset), valid until
 * cfg is freed.
 */
RINGPROT_API size_t srv_config_list(const struct srv_config *cfg,
				    const char *service, const char *key,
				    const char *const **words_out);
/* The index of an ENUM value in its key's choices; -1 if unset. */
RINGPROT_API int srv_config_enum(const struct srv_config *cfg,
				 const char *service, const char *key);

/*
 * Was the key set by a file or an override, for this service or
 * globally (service NULL: globally)? A default does not count.
 */
RINGPROT_API bool srv_config_is_set(const struct srv_config *cfg,
				    const char *service, const char *key);

/*
 * The services named by sections, prefixes or overrides, in order of
 * first mention: returns their count and sets *names_out to a
 * NULL-terminated array, valid until the next load or set or free.
 */
RINGPROT_API size_t srv_config_services(const struct srv_config *cfg,
					const char *const **names_out);

/*
 * The first misuse of a getter (see above), as "getter(key)", or NULL.
 * The runtime checks it after startup and logs it: the library does not.
 */
RINGPROT_API const char *srv_config_misuse(const struct srv_config *cfg);

/*
 * Print the effective configuration to out in the file's syntax, for
 * --check-config: every key globally (a default as a "# key: value"
 * comment, an unset one as "# key: (unset)"), then one section per
 * service with the keys set for it. Values of SRV_CFG_SECRET keys print
 * as "********". Returns 0, or -EIO if writing to out failed.
 */
RINGPROT_API int srv_config_dump(const struct srv_config *cfg,
				 FILE *out) RINGPROT_MUST_CHECK;

#endif /* RINGPROT_SRV_CONFIG_H */
