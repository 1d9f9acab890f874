/* SPDX-License-Identifier: BSD-3-Clause */
/* server/config: the imapd.conf-style configuration behind srv-config.h. */
#include <ringprot/srv-config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * Design. Every value is parsed once, when it is loaded, into a `struct
 * val` that holds its text and its typed form, in an arena freed with the
 * configuration: getters only look up and never parse, allocate or fail.
 * A key is a slot found through a small open-addressing hash; a slot
 * holds its default, its global value and a list of per-service values
 * (newest first, so an override shadows what it replaces).
 *
 * The one rule that settles partial failure: each load or set is a
 * transaction. It snapshots every slot's two value pointers, the service
 * count and the arena's fill mark; an error restores all three, so the
 * configuration reads exactly as before the call and the arena gives back
 * what the failed call took.
 *
 * Getters take a const configuration shared by many threads; the only
 * thing they write is the first misuse report, claimed once with an
 * atomic compare-exchange (the object was allocated writable, so casting
 * const away there is defined).
 *
 * Error messages quote at most QUOTE_MAX bytes of a value, cut on a UTF-8
 * boundary, and never a secret key's value.
 *
 * Size: about 1,500 lines, kept as one file because the line parser, the
 * typed value parsers, the store and the getters share the private slot
 * and value structs and nothing else; splitting would only move them into
 * an internal header for a single user.
 */

#define CHUNK_SIZE 4096
#define QUOTE_MAX  60
#define BLANKS	   " \t"

struct chunk {
	struct chunk *next;
	size_t used, cap;
	max_align_t data[];
};

struct mark {
	struct chunk *head;
	size_t used;
};

struct val {
	struct val *next; /* an older value of this key (service list) */
	const char *text;
	const char *origin; /* file name, or "-o" */
	unsigned line;	    /* 0 for an override */
	int svc;	    /* index into services, -1: global */
	bool override;
	union {
		int64_t i; /* INT, MS (ms), SIZE (bytes) */
		bool b;
		int e;
		struct {
			const char **w; /* NULL-terminated */
			size_t n;
		} list;
	} u;
};

struct slot {
	const struct srv_cfg_key *k;
	struct val *def, *global, *svc;
};

struct srv_config {
	struct slot *slots;
	size_t nslots;
	uint32_t *hash; /* slot index + 1; 0: empty */
	size_t hash_mask;
	const char **svcs; /* NULL-terminated */
	size_t nsvcs, svcs_cap;
	const char *const *known; /* srv_config_set_services, borrowed */
	size_t nknown;
	struct chunk *arena;
	bool frozen; /* something was loaded or set: no more keys */
	char *err;
	int misuse_state; /* 0 none, 1 being written, 2 ready */
	char misuse[96];
};

/* A transaction (see the design note). */
struct txn {
	struct val **saved; /* global, svc for each slot */
	size_t nslots, nsvcs;
	struct mark mark;
};

/* Where the lines being applied come from. */
struct src {
	struct srv_config *cfg;
	const char *origin; /* arena copy of the name, or "-o" */
	const char *shown;  /* "-o ASSIGNMENT" for overrides */
	unsigned line;
	int section; /* -1: global */
	bool override;
};

static const char oom_msg[] = "out of memory";
static const char *const no_words[] = {NULL};

/* ------------------------------------------------------------------ */
/* arena */

static void *arena_alloc(struct srv_config *cfg, size_t n)
{
	struct chunk *c = cfg->arena;
	size_t a = alignof(max_align_t), off;

	n = (n + a - 1) & ~(a - 1);
	if (c != NULL && c->cap - c->used >= n) {
		off = c->used;
		c->used += n;
		return (char *)c->data + off;
	}
	off = n > CHUNK_SIZE ? n : CHUNK_SIZE;
	c = malloc(sizeof(*c) + off);
	if (c == NULL)
		return NULL;
	c->next = cfg->arena;
	c->cap = off;
	c->used = n;
	cfg->arena = c;
	return c->data;
}

static char *arena_strndup(struct srv_config *cfg, const char *s, size_t n)
{
	char *p = arena_alloc(cfg, n + 1);

	if (p != NULL) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

static struct mark arena_mark(const struct srv_config *cfg)
{
	struct mark m = {cfg->arena, cfg->arena ? cfg->arena->used : 0};

	return m;
}

static void arena_rollback(struct srv_config *cfg, struct mark m)
{
	while (cfg->arena != m.head) {
		struct chunk *c = cfg->arena;

		cfg->arena = c->next;
		free(c);
	}
	if (m.head != NULL)
		m.head->used = m.used;
}

/* ------------------------------------------------------------------ */
/* errors */

static void clear_err(struct srv_config *cfg)
{
	if (cfg->err != oom_msg)
		free(cfg->err);
	cfg->err = NULL;
}

static int set_err(struct srv_config *cfg, int ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int set_err(struct srv_config *cfg, int ret, const char *fmt, ...)
{
	va_list ap;
	char *s;

	clear_err(cfg);
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0) {
		s = (char *)oom_msg;
		ret = -ENOMEM;
	}
	va_end(ap);
	cfg->err = s;
	return ret;
}

/* "where: message" for a line of src; returns -EINVAL. */
static int fail(const struct src *src, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int fail(const struct src *src, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (src->override)
		return set_err(src->cfg, -EINVAL, "%s: %s", src->shown, msg);
	return set_err(src->cfg, -EINVAL, "%s:%u: %s", src->origin, src->line,
		       msg);
}

/* s[0..n) as a quotable string: at most QUOTE_MAX bytes, then "...". */
struct quoted {
	char s[QUOTE_MAX + 4];
};

static struct quoted quote(const char *s, size_t n)
{
	struct quoted q;
	size_t cut = n;

	if (n > QUOTE_MAX) {
		cut = QUOTE_MAX;
		/* Back off UTF-8 continuation bytes: cut between characters. */
		while (cut > 0 && ((unsigned char)s[cut] & 0xc0) == 0x80)
			cut--;
	}
	memcpy(q.s, s, cut);
	if (cut < n)
		memcpy(q.s + cut, "...", 4);
	else
		q.s[cut] = '\0';
	return q;
}

/* ------------------------------------------------------------------ */
/* names */

static unsigned char lc(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static bool is_name_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static bool is_name(const char *s, size_t n)
{
	if (n == 0 || n > SRV_CONFIG_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_name_char((unsigned char)s[i]))
			return false;
	return true;
}

/* Does s[0..n) equal the lowercase name, regardless of case? */
static bool name_eq(const char *name, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (name[i] == '\0' ||
		    (unsigned char)name[i] != lc((unsigned char)s[i]))
			return false;
	return name[n] == '\0';
}

static uint32_t name_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (size_t i = 0; i < n; i++)
		h = (h ^ lc((unsigned char)s[i])) * 16777619u;
	return h;
}

static struct slot *find_slot(const struct srv_config *cfg, const char *s,
			      size_t n)
{
	if (cfg->hash == NULL)
		return NULL;
	for (size_t i = name_hash(s, n) & cfg->hash_mask;;
	     i = (i + 1) & cfg->hash_mask) {
		uint32_t v = cfg->hash[i];

		if (v == 0)
			return NULL;
		if (name_eq(cfg->slots[v - 1].k->name, s, n))
			return &cfg->slots[v - 1];
	}
}

static int find_svc(const struct srv_config *cfg, const char *s, size_t n)
{
	for (size_t i = 0; i < cfg->nsvcs; i++)
		if (name_eq(cfg->svcs[i], s, n))
			return (int)i;
	return -1;
}

/* The index of service s[0..n), added if new; -ENOMEM. */
static int intern_svc(struct srv_config *cfg, const char *s, size_t n)
{
	int i = find_svc(cfg, s, n);
	char *name;

	if (i >= 0)
		return i;
	if (cfg->nsvcs + 1 >= cfg->svcs_cap) {
		size_t cap = cfg->svcs_cap * 2;
		const char **p = realloc(cfg->svcs, cap * sizeof(*p));

		if (p == NULL)
			return -ENOMEM;
		cfg->svcs = p;
		cfg->svcs_cap = cap;
	}
	name = arena_strndup(cfg, s, n);
	if (name == NULL)
		return -ENOMEM;
	for (size_t j = 0; j < n; j++)
		name[j] = (char)lc((unsigned char)name[j]);
	cfg->svcs[cfg->nsvcs++] = name;
	cfg->svcs[cfg->nsvcs] = NULL;
	return (int)cfg->nsvcs - 1;
}

/* Optimal string alignment distance (a swap of neighbours costs 1). */
static size_t edit_distance(const char *a, size_t na, const char *b, size_t nb)
{
	size_t d[3][SRV_CONFIG_NAME_MAX + 1], *pp = d[0], *p = d[1], *c = d[2];
	size_t *t;

	for (size_t j = 0; j <= nb; j++)
		p[j] = j;
	for (size_t i = 1; i <= na; i++) {
		c[0] = i;
		for (size_t j = 1; j <= nb; j++) {
			size_t cost = lc((unsigned char)a[i - 1]) !=
				      (unsigned char)b[j - 1];
			size_t v = p[j] + 1;

			if (c[j - 1] + 1 < v)
				v = c[j - 1] + 1;
			if (p[j - 1] + cost < v)
				v = p[j - 1] + cost;
			if (i > 1 && j > 1 && cost &&
			    lc((unsigned char)a[i - 1]) ==
				    (unsigned char)b[j - 2] &&
			    lc((unsigned char)a[i - 2]) ==
				    (unsigned char)b[j - 1] &&
			    pp[j - 2] + 1 < v)
				v = pp[j - 2] + 1;
			c[j] = v;
		}
		t = pp;
		pp = p;
		p = c;
		c = t;
	}
	return p[nb];
}

/* The registered key nearest to s[0..n), if near enough to be a typo. */
static const char *nearest_key(const struct srv_config *cfg, const char *s,
			       size_t n)
{
	size_t best = n / 3 < 1 ? 1 : (n / 3 > 3 ? 3 : n / 3);
	const char *name = NULL;

	if (n > SRV_CONFIG_NAME_MAX)
		return NULL;
	for (size_t i = 0; i < cfg->nslots; i++) {
		const char *k = cfg->slots[i].k->name;
		size_t d = edit_distance(s, n, k, strlen(k));

		if (d <= best && (name == NULL || d < best)) {
			best = d;
			name = k;
		}
	}
	return name;
}

/* ------------------------------------------------------------------ */
/* values */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Digits at *p into *v (at most INT64_MAX); NULL or an error. */
static const char *parse_digits(const char **p, uint64_t *v)
{
	const char *s = *p;

	if (!is_digit(*s))
		return "expected a number";
	*v = 0;
	for (; is_digit(*s); s++) {
		uint64_t d = (uint64_t)(*s - '0');

		if (*v > ((uint64_t)INT64_MAX - d) / 10)
			return "too large";
		*v = *v * 10 + d;
	}
	*p = s;
	return NULL;
}

static const char *parse_int(const char *s, int64_t *out)
{
	bool neg = *s == '-';
	const char *why;
	uint64_t v;

	if (*s == '-' || *s == '+')
		s++;
	why = parse_digits(&s, &v);
	if (why != NULL)
		return why;
	if (*s != '\0')
		return "not a whole number";
	*out = neg ? -(int64_t)v : (int64_t)v;
	return NULL;
}

static const char *parse_bool(const char *s, bool *out)
{
	static const char *const words[] = {
		"no", "yes", "off", "on", "false", "true",
		"n",  "y",   "0",   "1",  "f",	   "t",
	};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		if (strcasecmp(s, words[i]) == 0) {
			*out = i % 2;
			return NULL;
		}
	}
	return "use yes/no, on/off, true/false or 1/0";
}

static const char *parse_ms(const char *s, int64_t *out)
{
	const char *p = s, *why;
	uint64_t total = 0, v, mult;

	why = parse_digits(&p, &v);
	if (why != NULL)
		return why;
	if (*p == '\0') {
		if (v > (uint64_t)INT64_MAX / 1000)
			return "too large";
		*out = (int64_t)(v * 1000); /* plain: seconds */
		return NULL;
	}
	for (;;) {
		switch (lc((unsigned char)*p)) {
		case 'm':
			mult = lc((unsigned char)p[1]) == 's' ? 1 : 60000;
			p += mult == 1;
			break;
		case 's':
			mult = 1000;
			break;
		case 'h':
			mult = 3600000;
			break;
		case 'd':
			mult = 86400000;
			break;
		case '\0':
			return "a number without a unit must stand alone";
		default:
			return "unknown unit (use ms, s, m, h, d)";
		}
		p++;
		if (v > (uint64_t)INT64_MAX / mult ||
		    total > (uint64_t)INT64_MAX - v * mult)
			return "too large";
		total += v * mult;
		if (*p == '\0')
			break;
		why = parse_digits(&p, &v);
		if (why != NULL)
			return "unknown unit (use ms, s, m, h, d)";
	}
	*out = (int64_t)total;
	return NULL;
}

static const char *parse_size(const char *s, int64_t *out)
{
	static const char units[] = "kmgt";
	const char *p = s, *why, *unit;
	unsigned shift = 0;
	uint64_t v;

	why = parse_digits(&p, &v);
	if (why != NULL)
		return why;
	p += strspn(p, BLANKS); /* "10 MB", as Cyrus allows */
	unit = *p != '\0' ? strchr(units, lc((unsigned char)*p)) : NULL;
	if (unit != NULL) {
		shift = 10 * (unsigned)(unit - units + 1);
		p++;
		if (lc((unsigned char)*p) == 'i')
			p++;
	}
	if (lc((unsigned char)*p) == 'b')
		p++;
	if (*p != '\0')
		return "unknown unit (use k, M, G, T)";
	if (v > (uint64_t)INT64_MAX >> shift)
		return "too large";
	*out = (int64_t)(v << shift);
	return NULL;
}

/* ENUM: the index of s in choices, its spelling through *at, *len. */
static int find_choice(const char *choices, const char *s, const char **at,
		       size_t *len)
{
	size_t n = strlen(s);
	int i = 0;

	for (const char *c = choices;; i++) {
		size_t cn = strcspn(c, "|");

		if (cn == n && strncasecmp(c, s, n) == 0) {
			*at = c;
			*len = cn;
			return i;
		}
		if (c[cn] == '\0')
			return -1;
		c += cn + 1;
	}
}

static int split_list(struct srv_config *cfg, const char *s, struct val *v)
{
	static const char seps[] = BLANKS ",";
	size_t n = 0, i = 0;
	const char *p;

	for (p = s + strspn(s, seps); *p; p += strspn(p, seps)) {
		p += strcspn(p, seps);
		n++;
	}
	v->u.list.w = arena_alloc(cfg, (n + 1) * sizeof(char *));
	if (v->u.list.w == NULL)
		return -ENOMEM;
	for (p = s + strspn(s, seps); *p; p += strspn(p, seps)) {
		size_t wn = strcspn(p, seps);

		v->u.list.w[i] = arena_strndup(cfg, p, wn);
		if (v->u.list.w[i++] == NULL)
			return -ENOMEM;
		p += wn;
	}
	v->u.list.w[n] = NULL;
	v->u.list.n = n;
	return 0;
}

static const char *type_noun(enum srv_cfg_type t)
{
	switch (t) {
	case SRV_CFG_INT:
		return "integer";
	case SRV_CFG_BOOL:
		return "boolean";
	case SRV_CFG_MS:
		return "duration";
	case SRV_CFG_SIZE:
		return "size";
	default:
		return "value";
	}
}

/* A number as it would be written for its type (ranges in messages). */
static void fmt_num(char *buf, size_t size, enum srv_cfg_type t, int64_t v)
{
	static const struct {
		int64_t div;
		const char *unit;
	} ms[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}},
	  sz[] = {{1ll << 40, "T"},
		  {1ll << 30, "G"},
		  {1ll << 20, "M"},
		  {1ll << 10, "k"}};

	for (size_t i = 0; t != SRV_CFG_INT && i < 4; i++) {
		int64_t div = t == SRV_CFG_MS ? ms[i].div : sz[i].div;

		if (v != 0 && v % div == 0) {
			(void)snprintf(
				buf, size, "%lld%s", (long long)(v / div),
				t == SRV_CFG_MS ? ms[i].unit : sz[i].unit);
			return;
		}
	}
	(void)snprintf(buf, size, "%lld%s", (long long)v,
		       t == SRV_CFG_MS ? "ms" : "");
}

/*
 * Parse text for k into a new val. Returns 0, -ENOMEM, or -EINVAL with
 * the reason in why (why_n bytes) unless it is NULL.
 */
static int make_val(struct srv_config *cfg, const struct srv_cfg_key *k,
		    const char *text, size_t n, struct val **out, char *why,
		    size_t why_n)
{
	struct val *v = arena_alloc(cfg, sizeof(*v));
	const char *err = NULL, *at;
	char lo[32], hi[32];
	size_t len;

	if (v == NULL)
		return -ENOMEM;
	memset(v, 0, sizeof(*v));
	v->text = arena_strndup(cfg, text, n);
	if (v->text == NULL)
		return -ENOMEM;
	switch (k->type) {
	case SRV_CFG_STR:
		break;
	case SRV_CFG_INT:
		err = parse_int(v->text, &v->u.i);
		break;
	case SRV_CFG_BOOL:
		err = parse_bool(v->text, &v->u.b);
		break;
	case SRV_CFG_MS:
		err = parse_ms(v->text, &v->u.i);
		break;
	case SRV_CFG_SIZE:
		err = parse_size(v->text, &v->u.i);
		break;
	case SRV_CFG_LIST:
		if (split_list(cfg, v->text, v) < 0)
			return -ENOMEM;
		break;
	case SRV_CFG_ENUM:
		v->u.e = find_choice(k->choices, v->text, &at, &len);
		if (v->u.e < 0) {
			(void)snprintf(why, why_n, "expected one of %s",
				       k->choices);
			return -EINVAL;
		}
		v->text = arena_strndup(cfg, at, len);
		if (v->text == NULL)
			return -ENOMEM;
		break;
	}
	if (err != NULL) {
		(void)snprintf(why, why_n, "%s", err);
		return -EINVAL;
	}
	if ((k->type == SRV_CFG_INT || k->type == SRV_CFG_MS ||
	     k->type == SRV_CFG_SIZE) &&
	    (k->min != 0 || k->max != 0) &&
	    (v->u.i < k->min || v->u.i > k->max)) {
		fmt_num(lo, sizeof(lo), k->type, k->min);
		fmt_num(hi, sizeof(hi), k->type, k->max);
		(void)snprintf(why, why_n, "out of range (%s to %s)", lo, hi);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/* ------------------------------------------------------------------ */
/* lifecycle and schema */

int srv_config_new(struct srv_config **cfg_out)
{
	struct srv_config *cfg = calloc(1, sizeof(*cfg));

	*cfg_out = NULL;
	if (cfg == NULL)
		return -ENOMEM;
	cfg->svcs_cap = 4;
	cfg->svcs = calloc(cfg->svcs_cap, sizeof(*cfg->svcs));
	if (cfg->svcs == NULL) {
		free(cfg);
		return -ENOMEM;
	}
	*cfg_out = cfg;
	return 0;
}

void srv_config_free(struct srv_config **cfgp)
{
	struct srv_config *cfg = *cfgp;

	if (cfg == NULL)
		return;
	arena_rollback(cfg, (struct mark){NULL, 0});
	clear_err(cfg);
	free(cfg->svcs);
	free(cfg->hash);
	free(cfg->slots);
	free(cfg);
	*cfgp = NULL;
}

static bool key_is_sane(const struct srv_cfg_key *k)
{
	bool ranged = k->type == SRV_CFG_INT || k->type == SRV_CFG_MS ||
		      k->type == SRV_CFG_SIZE;

	if (k->name == NULL || !is_name(k->name, strlen(k->name)))
		return false;
	for (const char *p = k->name; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			return false;
	if ((unsigned)k->type > SRV_CFG_ENUM)
		return false;
	if ((k->flags & ~(SRV_CFG_GLOBAL_ONLY | SRV_CFG_SERVICE_ONLY |
			  SRV_CFG_SECRET)) != 0 ||
	    (k->flags & SRV_CFG_GLOBAL_ONLY && k->flags & SRV_CFG_SERVICE_ONLY))
		return false;
	if (k->min > k->max || (!ranged && (k->min != 0 || k->max != 0)))
		return false;
	if (ranged && k->type != SRV_CFG_INT && k->min < 0)
		return false;
	if ((k->type == SRV_CFG_ENUM) != (k->choices != NULL))
		return false;
	if (k->choices != NULL &&
	    (k->choices[0] == '\0' || strstr(k->choices, "||") != NULL ||
	     k->choices[strlen(k->choices) - 1] == '|'))
		return false;
	return true;
}

static int rehash(struct srv_config *cfg, size_t nslots)
{
	size_t size = 16;
	uint32_t *h;

	while (size < nslots * 2)
		size *= 2;
	h = calloc(size, sizeof(*h));
	if (h == NULL)
		return -ENOMEM;
	free(cfg->hash);
	cfg->hash = h;
	cfg->hash_mask = size - 1;
	for (size_t i = 0; i < nslots; i++) {
		const char *name = cfg->slots[i].k->name;
		size_t j = name_hash(name, strlen(name)) & cfg->hash_mask;

		while (h[j] != 0)
			j = (j + 1) & cfg->hash_mask;
		h[j] = (uint32_t)(i + 1);
	}
	return 0;
}

int srv_config_set_services(struct srv_config *cfg,
			    const char *const *names, size_t n)
{
	if (cfg->frozen)
		return -EBUSY;
	cfg->known = names;
	cfg->nknown = n;
	return 0;
}

int srv_config_add_keys(struct srv_config *cfg, const struct srv_cfg_key *keys,
			size_t n)
{
	struct mark m = arena_mark(cfg);
	size_t old = cfg->nslots;
	struct slot *slots;
	char why[256];
	int ret;

	if (cfg->frozen)
		return -EBUSY;
	if (n > UINT32_MAX / 4 - old)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		const char *name = keys[i].name;

		if (!key_is_sane(&keys[i]))
			return -EINVAL;
		if (find_slot(cfg, name, strlen(name)) != NULL)
			return -EEXIST;
		for (size_t j = 0; j < i; j++)
			if (strcmp(keys[j].name, name) == 0)
				return -EEXIST;
	}
	slots = realloc(cfg->slots, (old + n + 1) * sizeof(*slots));
	if (slots == NULL)
		return -ENOMEM;
	cfg->slots = slots;
	for (size_t i = 0; i < n; i++) {
		struct slot *s = &slots[old + i];

		memset(s, 0, sizeof(*s));
		s->k = &keys[i];
		if (keys[i].def == NULL)
			continue;
		ret = make_val(cfg, s->k, keys[i].def, strlen(keys[i].def),
			       &s->def, why, sizeof(why));
		if (ret < 0)
			goto out_undo;
		s->def->origin = "default";
	}
	ret = rehash(cfg, old + n);
	if (ret < 0)
		goto out_undo;
	cfg->nslots = old + n;
	return 0;
out_undo:
	arena_rollback(cfg, m);
	return ret;
}

/* ------------------------------------------------------------------ */
/* applying lines */

static int txn_begin(struct srv_config *cfg, struct txn *t)
{
	t->nslots = cfg->nslots;
	t->saved = malloc((t->nslots * 2 + 1) * sizeof(struct val *));
	if (t->saved == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < t->nslots; i++) {
		t->saved[2 * i] = cfg->slots[i].global;
		t->saved[2 * i + 1] = cfg->slots[i].svc;
	}
	t->nsvcs = cfg->nsvcs;
	t->mark = arena_mark(cfg);
	return 0;
}

/* Commit if ret >= 0, else roll back; returns ret. */
static int txn_end(struct srv_config *cfg, struct txn *t, int ret)
{
	if (ret < 0) {
		for (size_t i = 0; i < t->nslots; i++) {
			cfg->slots[i].global = t->saved[2 * i];
			cfg->slots[i].svc = t->saved[2 * i + 1];
		}
		cfg->nsvcs = t->nsvcs;
		cfg->svcs[cfg->nsvcs] = NULL;
		arena_rollback(cfg, t->mark);
	} else {
		cfg->frozen = true;
	}
	free(t->saved);
	return ret;
}

static struct val **scope_head(struct slot *s, int svc, struct val **prev)
{
	struct val **pp = svc < 0 ? &s->global : &s->svc;

	*prev = NULL;
	for (struct val *v = *pp; v != NULL; v = v->next) {
		if (v->svc == svc) {
			*prev = v;
			break;
		}
	}
	return pp;
}

static int unknown_key(const struct src *src, const char *svc, size_t sn,
		       const char *key, size_t kn)
{
	struct quoted q = quote(key, kn);
	const char *near = nearest_key(src->cfg, key, kn);
	const char *dot = svc != NULL ? "." : "";

	if (svc == NULL) {
		sn = 0;
		svc = "";
	}
	if (near != NULL)
		return fail(src,
			    "unknown key '%.*s%s%s' (did you mean '%.*s%s%s'?)",
			    (int)sn, svc, dot, q.s, (int)sn, svc, dot, near);
	/* Cyrus spells a service's key "imap_key". */
	for (const char *u = memchr(key, '_', kn); svc[0] == '\0' && u != NULL;
	     u = memchr(u + 1, '_', kn - (size_t)(u + 1 - key))) {
		size_t rest = kn - (size_t)(u + 1 - key);

		if (find_slot(src->cfg, u + 1, rest) != NULL)
			return fail(
				src,
				"unknown key '%s' (did you mean '%.*s.%.*s'? services are prefixed with '.')",
				q.s, (int)(u - key), key, (int)rest, u + 1);
	}
	return fail(src, "unknown key '%.*s%s%s'", (int)sn, svc, dot, q.s);
}

/* With a list of known services, is s[0..n) one of them? */
static int check_known(const struct src *src, const char *s, size_t n)
{
	const struct srv_config *cfg = src->cfg;
	char list[200] = "";
	size_t off = 0;

	if (cfg->known == NULL)
		return 0;
	for (size_t i = 0; i < cfg->nknown; i++)
		if (name_eq(cfg->known[i], s, n))
			return 0;
	for (size_t i = 0; i < cfg->nknown && off < sizeof(list); i++)
		off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
					i > 0 ? ", " : "", cfg->known[i]);
	return fail(src, "no such service '%s' (services: %s)",
		    quote(s, n).s, list);
}

/*
 * Set key to value in src's scope (svc: a "svc." prefix or NULL for the
 * section's scope). The typed checks, then the scope rules.
 */
static int apply(const struct src *src, const char *svc, size_t sn,
		 const char *key, size_t kn, const char *value, size_t vn)
{
	struct srv_config *cfg = src->cfg;
	struct slot *s = find_slot(cfg, key, kn);
	struct val **head, *prev, *v;
	const char *name, *sname;
	int idx = src->section, ret;
	char why[256];

	if (s == NULL)
		return unknown_key(src, svc, sn, key, kn);
	name = s->k->name;
	if (svc != NULL) {
		idx = check_known(src, svc, sn);
		if (idx < 0)
			return idx;
		idx = intern_svc(cfg, svc, sn);
		if (idx < 0)
			return set_err(cfg, idx, "%s", oom_msg);
	}
	sname = idx < 0 ? "" : cfg->svcs[idx];
	if (idx >= 0 && s->k->flags & SRV_CFG_GLOBAL_ONLY)
		return fail(
			src,
			"'%s' is global-only: it cannot be set for service '%s'",
			name, sname);
	if (idx < 0 && s->k->flags & SRV_CFG_SERVICE_ONLY)
		return fail(
			src,
			"'%s' is per-service: set it in a [service] section or as service.%s",
			name, name);
	ret = make_val(cfg, s->k, value, vn, &v, why, sizeof(why));
	if (ret == -ENOMEM)
		return set_err(cfg, ret, "%s", oom_msg);
	if (ret < 0 && s->k->flags & SRV_CFG_SECRET)
		return fail(src, "bad %s for '%s%s%s': %s",
			    type_noun(s->k->type), sname, idx < 0 ? "" : ".",
			    name, why);
	if (ret < 0)
		return fail(src, "bad %s '%s' for '%s%s%s': %s",
			    type_noun(s->k->type), quote(value, vn).s, sname,
			    idx < 0 ? "" : ".", name, why);
	v->origin = src->origin;
	v->line = src->line;
	v->svc = idx;
	v->override = src->override;
	head = scope_head(s, idx, &prev);
	if (prev != NULL && !src->override) {
		if (prev->override)
			return 0; /* an override wins; the value was checked */
		return fail(src, "duplicate key '%s%s%s' (first set at %s:%u)",
			    sname, idx < 0 ? "" : ".", name, prev->origin,
			    prev->line);
	}
	v->next = idx < 0 ? NULL : *head;
	*head = v;
	return 0;
}

/* Keys and values: UTF-8 (RFC 3629: no overlongs, surrogates, > U+10FFFF)
 * and no control bytes but tab. */
static int check_text(const struct src *src, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;

	for (size_t i = 0; i < n;) {
		unsigned c = p[i], need, cp, min;

		if (c < 0x80) {
			if ((c < 0x20 && c != '\t') || c == 0x7f)
				return fail(src, "control character 0x%02x", c);
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1, cp = c & 0x1f, min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2, cp = c & 0x0f, min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return fail(src, "invalid UTF-8");
		}
		if (n - i <= need)
			return fail(src, "invalid UTF-8");
		for (unsigned j = 1; j <= need; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return fail(src, "invalid UTF-8");
			cp = cp << 6 | (p[i + j] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return fail(src, "invalid UTF-8");
		i += need + 1;
	}
	return 0;
}

/* "key" or "svc.key" in tok[0..n): split and check the names. */
static int split_key(const struct src *src, const char *tok, size_t n,
		     const char **svc, size_t *sn, size_t *koff)
{
	const char *dot = memchr(tok, '.', n);

	*svc = NULL;
	*sn = 0;
	*koff = 0;
	if (dot != NULL) {
		*svc = tok;
		*sn = (size_t)(dot - tok);
		*koff = *sn + 1;
		if (!is_name(tok, *sn))
			return fail(src, "invalid service name '%s'",
				    quote(tok, *sn).s);
	}
	if (!is_name(tok + *koff, n - *koff))
		return fail(src, "invalid key name '%s'", quote(tok, n).s);
	return 0;
}

static size_t trim(const char **s, size_t n)
{
	while (n > 0 && (**s == ' ' || **s == '\t')) {
		(*s)++;
		n--;
	}
	while (n > 0 && ((*s)[n - 1] == ' ' || (*s)[n - 1] == '\t'))
		n--;
	return n;
}

static int section_line(struct src *src, const char *s, size_t n)
{
	const char *name = s + 1;
	size_t nn;
	int idx;

	if (s[n - 1] != ']')
		return fail(src, "expected ']' at the end of a section header");
	nn = trim(&name, n - 2);
	if (nn == 0)
		return fail(src, "empty section name");
	if (!is_name(name, nn))
		return fail(src, "invalid service name '%s'",
			    quote(name, nn).s);
	idx = check_known(src, name, nn);
	if (idx < 0)
		return idx;
	idx = intern_svc(src->cfg, name, nn);
	if (idx < 0)
		return set_err(src->cfg, idx, "%s", oom_msg);
	src->section = idx;
	return 0;
}

/* One logical line of a file, without its newline. */
static int file_line(struct src *src, const char *s, size_t n)
{
	const char *colon, *key, *val, *svc;
	size_t kn, vn, sn, koff;
	int ret;

	n = trim(&s, n);
	if (n == 0 || s[0] == '#')
		return 0;
	ret = check_text(src, s, n);
	if (ret < 0)
		return ret;
	if (s[0] == '[')
		return section_line(src, s, n);
	if (s[0] == '@')
		return fail(src,
			    "directives such as '@include' are not supported");
	colon = memchr(s, ':', n);
	if (colon == NULL && memchr(s, '=', n) != NULL)
		return fail(
			src,
			"expected 'key: value' ('key=value' is for -o overrides)");
	if (colon == NULL)
		return fail(src, "expected 'key: value'");
	key = s;
	kn = trim(&key, (size_t)(colon - s));
	ret = split_key(src, key, kn, &svc, &sn, &koff);
	if (ret < 0)
		return ret;
	if (svc != NULL && src->section >= 0)
		return fail(src, "'%s' names a service inside [%s]",
			    quote(key, kn).s, src->cfg->svcs[src->section]);
	val = colon + 1;
	vn = trim(&val, n - (size_t)(val - s));
	if (vn == 0)
		return fail(src, "missing value for '%s'", quote(key, kn).s);
	return apply(src, svc, sn, key + koff, kn - koff, val, vn);
}

/* Split text into logical lines (CRLF, '\' continuations) for file_line. */
static int load_lines(struct src *src, const char *text, size_t len)
{
	char *buf = malloc(SRV_CONFIG_LINE_MAX + 1);
	size_t pos = 0, lineno = 0;
	int ret = 0;

	if (buf == NULL)
		return set_err(src->cfg, -ENOMEM, "%s", oom_msg);
	while (pos < len && ret == 0) {
		size_t used = 0, first = lineno + 1;
		bool more = true;

		while (more && pos < len) {
			const char *nl = memchr(text + pos, '\n', len - pos);
			size_t end = nl ? (size_t)(nl - text) : len, n;

			n = end - pos;
			src->line = (unsigned)++lineno;
			if (n > 0 && text[end - 1] == '\r')
				n--;
			more = n > 0 && text[pos + n - 1] == '\\';
			n -= more;
			if (n > SRV_CONFIG_LINE_MAX - used) {
				ret = fail(src,
					   "line too long (more than %d bytes)",
					   SRV_CONFIG_LINE_MAX);
				break;
			}
			if (memchr(text + pos, '\0', n) != NULL) {
				ret = fail(src, "NUL byte");
				break;
			}
			memcpy(buf + used, text + pos, n);
			used += n;
			pos = nl ? end + 1 : len;
		}
		if (ret == 0) {
			src->line = (unsigned)first;
			ret = file_line(src, buf, used);
		}
	}
	free(buf);
	return ret;
}

static void set_errstr(const struct srv_config *cfg, int ret,
		       const char **errstr_out)
{
	if (errstr_out != NULL)
		*errstr_out = ret < 0 ? cfg->err : NULL;
}

int srv_config_load_string(struct srv_config *cfg, const char *name,
			   const char *text, size_t len,
			   const char **errstr_out)
{
	struct src src = {.cfg = cfg, .section = -1};
	struct txn t;
	int ret;

	clear_err(cfg);
	if (name == NULL)
		name = "(string)";
	if (text == NULL && len > 0) {
		ret = set_err(cfg, -EINVAL, "%s: no text", name);
		goto out;
	}
	if (len > SRV_CONFIG_FILE_MAX) {
		ret = set_err(cfg, -EFBIG, "%s: too large (more than %u bytes)",
			      name, SRV_CONFIG_FILE_MAX);
		goto out;
	}
	ret = txn_begin(cfg, &t);
	if (ret < 0) {
		ret = set_err(cfg, ret, "%s", oom_msg);
		goto out;
	}
	src.origin = arena_strndup(cfg, name, strlen(name));
	if (src.origin == NULL)
		ret = set_err(cfg, -ENOMEM, "%s", oom_msg);
	else
		ret = load_lines(&src, text, len);
	ret = txn_end(cfg, &t, ret);
out:
	set_errstr(cfg, ret, errstr_out);
	return ret;
}

/* The whole file into *buf_out (malloc'd), at most SRV_CONFIG_FILE_MAX. */
static int read_file(int fd, char **buf_out, size_t *len_out)
{
	size_t len = 0, cap = 0;
	char *buf = NULL;

	for (;;) {
		ssize_t n;

		if (cap - len < 4096) {
			char *p;

			cap = cap ? cap * 2 : 16384;
			if (cap > SRV_CONFIG_FILE_MAX + 1)
				cap = SRV_CONFIG_FILE_MAX + 1;
			p = realloc(buf, cap);
			if (p == NULL) {
				free(buf);
				return -ENOMEM;
			}
			buf = p;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(buf);
			return -errno;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > SRV_CONFIG_FILE_MAX) {
			free(buf);
			return -EFBIG;
		}
	}
	*buf_out = buf;
	*len_out = len;
	return 0;
}

int srv_config_load(struct srv_config *cfg, const char *path,
		    const char **errstr_out)
{
	char *buf = NULL;
	size_t len = 0;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		goto out_err;
	}
	ret = read_file(fd, &buf, &len);
	if (close(fd) < 0) {
		/* Read-only and read to the end: nothing is lost. */
	}
	if (ret == -EFBIG) {
		ret = set_err(cfg, ret, "%s: too large (more than %u bytes)",
			      path, SRV_CONFIG_FILE_MAX);
		goto out;
	}
	if (ret < 0)
		goto out_err;
	ret = srv_config_load_string(cfg, path, buf, len, errstr_out);
	free(buf);
	return ret;
out_err:
	ret = set_err(cfg, ret, "%s: %s", path, strerror(-ret));
out:
	set_errstr(cfg, ret, errstr_out);
	return ret;
}

/* The key part of "[svc.]key", for the secret check before parsing. */
static const struct slot *slot_of(const struct srv_config *cfg, const char *tok,
				  size_t n)
{
	const char *dot = memchr(tok, '.', n);

	if (dot == NULL)
		return find_slot(cfg, tok, n);
	return find_slot(cfg, dot + 1, n - (size_t)(dot + 1 - tok));
}

/* An override's "[svc.]key" (kn bytes at key) and value (a C string). */
static int set_one(const struct src *src, const char *key, size_t kn,
		   const char *val)
{
	const char *svc;
	size_t vn, sn, koff;
	int ret = split_key(src, key, kn, &svc, &sn, &koff);

	if (ret < 0)
		return ret;
	vn = trim(&val, strlen(val));
	if (vn == 0)
		return fail(src, "missing value for '%s'", quote(key, kn).s);
	return apply(src, svc, sn, key + koff, kn - koff, val, vn);
}

int srv_config_set(struct srv_config *cfg, const char *assignment,
		   const char **errstr_out)
{
	struct src src = {
		.cfg = cfg, .section = -1, .override = true, .origin = "-o"};
	const struct slot *slot = NULL;
	const char *eq, *key;
	char *shown_buf;
	struct txn t;
	size_t kn = 0;
	int ret;

	clear_err(cfg);
	if (assignment == NULL) {
		ret = set_err(cfg, -EINVAL, "-o: no assignment");
		goto out;
	}
	eq = strchr(assignment, '=');
	key = assignment;
	if (eq != NULL) {
		kn = trim(&key, (size_t)(eq - assignment));
		slot = slot_of(cfg, key, kn);
	}
	if (slot != NULL && slot->k->flags & SRV_CFG_SECRET)
		ret = asprintf(&shown_buf, "-o %.*s=***",
			       (int)(eq - assignment), assignment);
	else
		ret = asprintf(&shown_buf, "-o %s", assignment);
	if (ret < 0) {
		ret = set_err(cfg, -ENOMEM, "%s", oom_msg);
		goto out;
	}
	src.shown = shown_buf;
	ret = txn_begin(cfg, &t);
	if (ret < 0) {
		ret = set_err(cfg, ret, "%s", oom_msg);
		goto out_shown;
	}
	ret = check_text(&src, assignment, strlen(assignment));
	if (ret == 0 && eq == NULL)
		ret = fail(&src, "expected key=value or service.key=value");
	else if (ret == 0)
		ret = set_one(&src, key, kn, eq + 1);
	ret = txn_end(cfg, &t, ret);
out_shown:
	free(shown_buf);
out:
	set_errstr(cfg, ret, errstr_out);
	return ret;
}

/* ------------------------------------------------------------------ */
/* getters */

static void misuse(const struct srv_config *ccfg, const char *getter,
		   const char *key)
{
	struct srv_config *cfg = (struct srv_config *)ccfg;
	int expected = 0;

	if (!__atomic_compare_exchange_n(&cfg->misuse_state, &expected, 1,
					 false, __ATOMIC_ACQUIRE,
					 __ATOMIC_RELAXED))
		return;
	(void)snprintf(cfg->misuse, sizeof(cfg->misuse), "%s(%s)", getter,
		       key != NULL ? key : "NULL");
	__atomic_store_n(&cfg->misuse_state, 2, __ATOMIC_RELEASE);
}

const char *srv_config_misuse(const struct srv_config *cfg)
{
	if (cfg == NULL ||
	    __atomic_load_n(&cfg->misuse_state, __ATOMIC_ACQUIRE) != 2)
		return NULL;
	return cfg->misuse;
}

/* The effective value; NULL if unset or misused (want -1: any type). */
static const struct val *lookup(const struct srv_config *cfg,
				const char *service, const char *key, int want,
				const char *getter)
{
	const struct slot *s;
	int idx = -1;

	if (cfg == NULL)
		return NULL;
	s = key != NULL ? find_slot(cfg, key, strlen(key)) : NULL;
	if (s == NULL || (want >= 0 && (int)s->k->type != want)) {
		misuse(cfg, getter, key);
		return NULL;
	}
	if (service != NULL)
		idx = find_svc(cfg, service, strlen(service));
	for (const struct val *v = idx >= 0 ? s->svc : NULL; v; v = v->next)
		if (v->svc == idx)
			return v;
	return s->global != NULL ? s->global : s->def;
}

const char *srv_config_str(const struct srv_config *cfg, const char *service,
			   const char *key)
{
	const struct val *v = lookup(cfg, service, key, -1, __func__);

	return v != NULL ? v->text : NULL;
}

int64_t srv_config_int(const struct srv_config *cfg, const char *service,
		       const char *key)
{
	const struct val *v = lookup(cfg, service, key, SRV_CFG_INT, __func__);

	return v != NULL ? v->u.i : 0;
}

bool srv_config_bool(const struct srv_config *cfg, const char *service,
		     const char *key)
{
	const struct val *v = lookup(cfg, service, key, SRV_CFG_BOOL, __func__);

	return v != NULL && v->u.b;
}

uint64_t srv_config_ms(const struct srv_config *cfg, const char *service,
		       const char *key)
{
	const struct val *v = lookup(cfg, service, key, SRV_CFG_MS, __func__);

	return v != NULL ? (uint64_t)v->u.i : 0;
}

uint64_t srv_config_size(const struct srv_config *cfg, const char *service,
			 const char *key)
{
	const struct val *v = lookup(cfg, service, key, SRV_CFG_SIZE, __func__);

	return v != NULL ? (uint64_t)v->u.i : 0;
}

size_t srv_config_list(const struct srv_config *cfg, const char *service,
		       const char *key, const char *const **words_out)
{
	const struct val *v = lookup(cfg, service, key, SRV_CFG_LIST, __func__);

	if (v == NULL) {
		*words_out = no_words;
		return 0;
	}
	*words_out = v->u.list.w;
	return v->u.list.n;
}

int srv_config_enum(const struct srv_config *cfg, const char *service,
		    const char *key)
{
	const struct val *v = lookup(cfg, service, key, SRV_CFG_ENUM, __func__);

	return v != NULL ? v->u.e : -1;
}

bool srv_config_is_set(const struct srv_config *cfg, const char *service,
		       const char *key)
{
	const struct val *v = lookup(cfg, service, key, -1, __func__);

	/* A default has neither a line nor the override mark. */
	return v != NULL && (v->line != 0 || v->override);
}

size_t srv_config_services(const struct srv_config *cfg,
			   const char *const **names_out)
{
	if (cfg == NULL) {
		*names_out = no_words;
		return 0;
	}
	*names_out = cfg->svcs;
	return cfg->nsvcs;
}

/* ------------------------------------------------------------------ */
/* dump */

static const char *dump_text(const struct slot *s, const struct val *v)
{
	return s->k->flags & SRV_CFG_SECRET ? "********" : v->text;
}

int srv_config_dump(const struct srv_config *cfg, FILE *out)
{
	bool bad = fprintf(out, "# effective configuration; "
				"'# key: value' lines are defaults\n") < 0;

	for (size_t i = 0; i < cfg->nslots; i++) {
		const struct slot *s = &cfg->slots[i];

		if (s->global != NULL)
			bad |= fprintf(out, "%s: %s\n", s->k->name,
				       dump_text(s, s->global)) < 0;
		else if (s->def != NULL)
			bad |= fprintf(out, "# %s: %s\n", s->k->name,
				       dump_text(s, s->def)) < 0;
		else
			bad |= fprintf(out, "# %s: (unset)\n", s->k->name) < 0;
	}
	for (size_t j = 0; j < cfg->nsvcs; j++) {
		bad |= fprintf(out, "\n[%s]\n", cfg->svcs[j]) < 0;
		for (size_t i = 0; i < cfg->nslots; i++) {
			const struct slot *s = &cfg->slots[i];

			for (const struct val *v = s->svc; v; v = v->next) {
				if (v->svc != (int)j)
					continue;
				bad |= fprintf(out, "%s: %s\n", s->k->name,
					       dump_text(s, v)) < 0;
				break;
			}
		}
	}
	if (fflush(out) != 0 || ferror(out))
		bad = true;
	return bad ? -EIO : 0;
}
