/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/imapd/parse: IMAP4rev1 (RFC 3501) command lexer and parsers. */
#ifndef RINGPROT_IMAPD_PARSE_H
#define RINGPROT_IMAPD_PARSE_H

/*
 * Two halves.
 *
 * The lexer reads one command from a protstream in the blocking Cyrus
 * style (prot_getc/prot_ungetc): the tag, the command name, then the
 * arguments as a tree of atoms, strings and parenthesized lists
 * (imap_lex_args), the way Dovecot's imap-parser does, so that each
 * command checks its own grammar on a tree and never on the wire. A
 * synchronizing literal gets its "+ go ahead" only after its size passed
 * the limit; a refused one is never read.
 *
 * The pure parsers take what the lexer made (or plain strings) and fill
 * a struct: sequence sets, fetch attributes, search keys, flag lists,
 * dates, mailbox names. They never read, write, log or allocate from
 * the heap.
 *
 * Memory: everything a command needs (argument nodes, their bytes,
 * search keys, ranges) comes from one struct imap_pool the session owns
 * and resets for each command: no allocation per command, and a hostile
 * command runs out of pool (-ENOMEM, answered BAD) long before memory.
 *
 * Errors: 0 (or a count) or -errno, and a short reason for the BAD (or
 * NO) reply in lex->err / *err_out, always a static string:
 *   -EPROTO    syntax error (BAD reason)
 *   -EMSGSIZE  the command line is longer than line_max (BAD)
 *   -EFBIG     a synchronizing literal over its limit, refused before any
 *              byte of it was read; the line is consumed (NO [TOOBIG])
 *   -E2BIG     a non-synchronizing literal over its limit: its bytes are
 *              on the way and cannot be skipped safely (BAD, close)
 *   -ENOMEM    the pool is full (too many arguments, keys, ranges)
 *   -ELOOP     nesting deeper than IMAP_DEPTH_MAX
 *   -EILSEQ    a byte the grammar refuses (NUL, 8-bit in a quoted string)
 *   -ENOENT    BADCHARSET (search) / not found
 *   -ENOTCONN  end of input; -ETIMEDOUT, -EIO: the stream's error
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ringprot/common.h>

struct protstream;

#define IMAP_TAG_MAX	 64   /* longer tags are refused (BAD) */
#define IMAP_DEPTH_MAX	 16   /* nested lists, search groups, NOT */
#define IMAP_NONSYNC_MAX 4096 /* RFC 7888 LITERAL-: the largest {n+} */
#define IMAP_PART_MAX	 32   /* part numbers in a section: 1.2.3 */
#define IMAP_STAR	 0    /* '*' in a sequence set (numbers are >0) */

/*
 * ---------------------------------------------------------------------
 * The per-command pool.
 * ---------------------------------------------------------------------
 */
struct imap_pool {
	char *base;
	size_t size, used;
};

/* Use size bytes at base (caller storage) as a pool, empty. */
void imap_pool_init(struct imap_pool *p, void *base, size_t size);
/* Forget everything allocated (start of each command). */
void imap_pool_reset(struct imap_pool *p);
/* n zeroed bytes aligned for any struct, or NULL when full. */
void *imap_pool_alloc(struct imap_pool *p, size_t n);

/*
 * ---------------------------------------------------------------------
 * Arguments: the tree imap_lex_args builds.
 * ---------------------------------------------------------------------
 */
enum imap_arg_type {
	IMAP_ARG_ATOM = 1,     /* atom, NIL, \Flag, 1:*, BODY[..]<..> */
	IMAP_ARG_STRING,       /* quoted string */
	IMAP_ARG_LITERAL,      /* literal read into memory */
	IMAP_ARG_LIST,	       /* ( ... ) */
	IMAP_ARG_LITERAL_SIZE, /* left unread: IMAP_LEX_LITERAL_SIZE */
};

struct imap_arg {
	enum imap_arg_type type;
	const char *str;	/* NUL-terminated (not LIST, LITERAL_SIZE) */
	size_t len;		/* bytes of str; LITERAL_SIZE: announced size */
	bool nonsync;		/* LITERAL, LITERAL_SIZE: {n+} */
	bool binary;		/* LITERAL_SIZE: literal8 ~{n} (RFC 3516) */
	unsigned count;		/* LIST: children */
	struct imap_arg *child; /* LIST: first child */
	struct imap_arg *next;	/* next sibling */
};

/* Is a an atom equal to word (ASCII case-insensitive)? */
bool imap_arg_is_atom(const struct imap_arg *a, const char *word);
/*
 * a as an astring (atom of ASTRING-CHARs, quoted string or literal):
 * true with *s_out (owned by the pool). A literal holding a NUL is
 * refused.
 */
bool imap_arg_astring(const struct imap_arg *a, const char **s_out);
/* nstring: as astring without atoms, or NIL (*s_out NULL). */
bool imap_arg_nstring(const struct imap_arg *a, const char **s_out);

/*
 * ---------------------------------------------------------------------
 * The lexer.
 * ---------------------------------------------------------------------
 */
struct imap_lex {
	/* Set by the caller. */
	struct protstream *in;
	struct protstream *out; /* "+ go ahead" for synchronizing literals */
	size_t line_max;	/* command bytes outside big literals */
	uint64_t literal_max;	/* IMAP_ARG_LITERAL_SIZE literals (APPEND) */
	uint64_t nonsync_max;	/* largest {n+}: IMAP_NONSYNC_MAX (LITERAL-) */
	bool utf8;		/* UTF8=ACCEPT: 8-bit in quoted strings */
	struct imap_pool *pool;
	/* State, read-only for the caller. */
	size_t len;	 /* bytes of this command so far */
	bool eol;	 /* the line's end was consumed */
	const char *err; /* reason of the last error */
};

/* Flags of imap_lex_args. */
#define IMAP_LEX_LITERAL_SIZE 1u /* stop at a top-level literal, unread */

/*
 * Start a command: counters reset, the pool emptied. Call before
 * imap_lex_tag.
 */
void imap_lex_begin(struct imap_lex *lx);

/*
 * The tag (1 to IMAP_TAG_MAX ASTRING-CHARs but '+') and the single SP
 * after it, into tag (IMAP_TAG_MAX + 1 bytes). An empty line gives
 * -ENODATA with eol set (nothing to answer); a bad tag -EPROTO (the
 * caller answers "* BAD" and skips the line). UR_MAY_YIELD.
 */
int imap_lex_tag(struct imap_lex *lx,
		 char *tag) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * The command name (an atom of letters, digits, '-', '.'; at most size-1
 * bytes, uppercased into name) and what ends it: 0 when a SP follows (it
 * is consumed: arguments come), 1 at the end of the line (consumed).
 * UR_MAY_YIELD.
 */
int imap_lex_name(struct imap_lex *lx, char *name,
		  size_t size) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * The arguments up to the end of the line (consumed: eol set), SP
 * separated, into a tree from the pool: *first_out the first (NULL when
 * none), the count returned. With IMAP_LEX_LITERAL_SIZE, a literal at
 * the top level is not read: it ends the call as the last argument,
 * IMAP_ARG_LITERAL_SIZE with its size (at most literal_max, else
 * -EFBIG / -E2BIG), "+ go ahead" already sent for a synchronizing one;
 * its bytes are next on lx->in for the caller, and after them a further
 * imap_lex_args (or imap_lex_eol) reads on. Literals elsewhere are read
 * into the pool and count against line_max. UR_MAY_YIELD.
 */
int imap_lex_args(struct imap_lex *lx, unsigned flags,
		  struct imap_arg **first_out) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/* The end of the line (CR LF or a bare LF), nothing before it: 0 or
 * -EPROTO. UR_MAY_YIELD. */
int imap_lex_eol(struct imap_lex *lx) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * After an error: read and drop the rest of the line, the bytes of a
 * {n+} literal that ends it included (at most nonsync_max, else -E2BIG:
 * close). Nothing to do when eol is set. 0 or -errno. UR_MAY_YIELD.
 */
int imap_lex_skip_line(struct imap_lex *lx) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * A raw line (AUTHENTICATE responses, IDLE's DONE) without CR LF into
 * buf (size bytes, NUL-terminated): its length, -EMSGSIZE (read to its
 * end and dropped), -EILSEQ (a NUL), -ENOTCONN, the stream's -errno.
 * UR_MAY_YIELD.
 */
int imap_lex_line(struct imap_lex *lx, char *buf,
		  size_t size) RINGPROT_MUST_CHECK UR_MAY_YIELD;

/*
 * ---------------------------------------------------------------------
 * Sequence sets: "1,3:5,7:*", "$" (RFC 5182).
 * ---------------------------------------------------------------------
 */
struct imap_range {
	uint32_t lo, hi; /* lo <= hi unless one is IMAP_STAR */
};

struct imap_seqset {
	struct imap_range *r; /* from the pool: sorted, merged, no '*' first */
	unsigned n;	      /* ranges without '*' */
	unsigned nstar;	      /* ranges with '*', after the n others */
	bool dollar;	      /* "$": the saved search result */
};

/* Parse s into set (ranges from pool). 0, -EPROTO (*err_out), -ENOMEM. */
int imap_seqset_parse(const char *s, struct imap_pool *pool,
		      struct imap_seqset *set,
		      const char **err_out) RINGPROT_MUST_CHECK;
/* Is v in set when '*' is max (the largest number in use)? */
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t v,
			  uint32_t max);

/*
 * ---------------------------------------------------------------------
 * Flags.
 * ---------------------------------------------------------------------
 */
enum {
	IMAP_FLAG_SEEN = 1u << 0,
	IMAP_FLAG_ANSWERED = 1u << 1,
	IMAP_FLAG_FLAGGED = 1u << 2,
	IMAP_FLAG_DELETED = 1u << 3,
	IMAP_FLAG_DRAFT = 1u << 4,
	IMAP_FLAG_RECENT = 1u << 5, /* refused by imap_parse_flags */
};

struct imap_flags {
	unsigned sys;	       /* IMAP_FLAG_* */
	const char **keywords; /* from the pool */
	unsigned nkeywords;
};

/*
 * A flag list "(\Seen $Junk)" or, when bare_ok, flags without
 * parentheses (STORE's form). \Recent and other unknown \flags are
 * refused. 0, -EPROTO, -ENOMEM.
 */
int imap_parse_flags(const struct imap_arg *a, bool bare_ok,
		     struct imap_pool *pool, struct imap_flags *out,
		     const char **err_out) RINGPROT_MUST_CHECK;
/* The IMAP_FLAG_* of "\Seen" ... (case-insensitive), 0 if none. */
unsigned imap_sysflag(const char *name);

/*
 * ---------------------------------------------------------------------
 * Dates.
 * ---------------------------------------------------------------------
 */
/* SEARCH's date "1-Feb-1994" (quoted or not): days since 1970-01-01.
 * 0 or -EPROTO. */
int imap_parse_date(const char *s, int64_t *days_out) RINGPROT_MUST_CHECK;
/* APPEND's date-time "17-Jul-1996 02:44:25 -0700": seconds since the
 * epoch (UTC) and the zone in minutes. 0 or -EPROTO. */
int imap_parse_datetime(const char *s, int64_t *t_out,
			int *zone_min_out) RINGPROT_MUST_CHECK;

/*
 * ---------------------------------------------------------------------
 * FETCH attributes.
 * ---------------------------------------------------------------------
 */
enum {
	IMAP_FETCH_FLAGS = 1u << 0,
	IMAP_FETCH_UID = 1u << 1,
	IMAP_FETCH_INTERNALDATE = 1u << 2,
	IMAP_FETCH_RFC822_SIZE = 1u << 3,
	IMAP_FETCH_ENVELOPE = 1u << 4,
	IMAP_FETCH_BODY = 1u << 5, /* BODY (no section) */
	IMAP_FETCH_BODYSTRUCTURE = 1u << 6,
	IMAP_FETCH_RFC822 = 1u << 7,	    /* = BODY[] and \Seen */
	IMAP_FETCH_RFC822_HEADER = 1u << 8, /* = BODY.PEEK[HEADER] */
	IMAP_FETCH_RFC822_TEXT = 1u << 9,   /* = BODY[TEXT] and \Seen */
};

enum imap_section_spec {
	IMAP_SECTION_ALL = 0, /* BODY[] or BODY[1.2] */
	IMAP_SECTION_HEADER,
	IMAP_SECTION_HEADER_FIELDS,
	IMAP_SECTION_HEADER_FIELDS_NOT,
	IMAP_SECTION_TEXT,
	IMAP_SECTION_MIME, /* needs a part number */
};

enum imap_section_kind {
	IMAP_BODY_SECTION = 0, /* BODY[...] */
	IMAP_BINARY,	       /* BINARY[...] (RFC 3516) */
	IMAP_BINARY_SIZE,      /* BINARY.SIZE[...] */
};

struct imap_section {
	enum imap_section_kind kind;
	bool peek;		      /* .PEEK: \Seen not set */
	uint32_t part[IMAP_PART_MAX]; /* 1.2.3 */
	unsigned nparts;
	enum imap_section_spec spec;
	const char **fields; /* HEADER.FIELDS: names, pool */
	unsigned nfields;
	bool partial; /* <off.len> */
	uint32_t off, len;
	const char *name; /* as the client wrote it (pool) */
	struct imap_section *next;
};

struct imap_fetch {
	unsigned items; /* IMAP_FETCH_* */
	struct imap_section *sections;
	unsigned nsections;
	bool sets_seen; /* a non-PEEK body part, RFC822, RFC822.TEXT */
};

/*
 * The attribute of FETCH: an atom (ALL, FAST, FULL, one attribute) or a
 * list of attributes. 0, -EPROTO, -ENOMEM.
 */
int imap_parse_fetch(const struct imap_arg *a, struct imap_pool *pool,
		     struct imap_fetch *out,
		     const char **err_out) RINGPROT_MUST_CHECK;

/*
 * ---------------------------------------------------------------------
 * SEARCH keys.
 * ---------------------------------------------------------------------
 */
enum imap_search_op {
	IMAP_SK_ALL = 1,
	IMAP_SK_AND,	 /* children: every one (a group, the top level) */
	IMAP_SK_OR,	 /* children: two */
	IMAP_SK_NOT,	 /* children: one */
	IMAP_SK_FLAG,	 /* flag: IMAP_FLAG_* set */
	IMAP_SK_UNFLAG,	 /* flag: IMAP_FLAG_* clear */
	IMAP_SK_NEW,	 /* RECENT UNSEEN */
	IMAP_SK_OLD,	 /* NOT RECENT */
	IMAP_SK_KEYWORD, /* str */
	IMAP_SK_UNKEYWORD,
	IMAP_SK_SEQSET, /* set */
	IMAP_SK_UIDSET, /* set */
	IMAP_SK_BEFORE, /* days, internal date */
	IMAP_SK_ON,
	IMAP_SK_SINCE,
	IMAP_SK_SENTBEFORE, /* days, Date: header */
	IMAP_SK_SENTON,
	IMAP_SK_SENTSINCE,
	IMAP_SK_LARGER, /* size */
	IMAP_SK_SMALLER,
	IMAP_SK_HEADER, /* field, str */
	IMAP_SK_BODY,	/* str */
	IMAP_SK_TEXT,	/* str */
};

struct imap_search_key {
	enum imap_search_op op;
	unsigned flag;
	const char
		*field; /* HEADER's, or "From"... for FROM/TO/CC/BCC/SUBJECT */
	const char *str;
	struct imap_seqset set;
	int64_t days;
	uint64_t size;
	struct imap_search_key *child; /* AND, OR, NOT */
	struct imap_search_key *next;
};

enum {
	IMAP_SEARCH_RET_MIN = 1u << 0,
	IMAP_SEARCH_RET_MAX = 1u << 1,
	IMAP_SEARCH_RET_ALL = 1u << 2,
	IMAP_SEARCH_RET_COUNT = 1u << 3,
	IMAP_SEARCH_RET_SAVE = 1u << 4,
};

struct imap_search {
	bool esearch; /* RETURN (...) given: answer ESEARCH */
	unsigned ret; /* IMAP_SEARCH_RET_*; RETURN () means ALL */
	bool utf8;    /* CHARSET UTF-8 */
	struct imap_search_key *root; /* AND of the keys */
};

/*
 * SEARCH's arguments: [RETURN (...)] [CHARSET x] key... -ENOENT for a
 * charset other than US-ASCII/UTF-8 (NO [BADCHARSET]), -EPROTO, -ENOMEM,
 * -ELOOP.
 */
int imap_parse_search(const struct imap_arg *first, struct imap_pool *pool,
		      struct imap_search *out,
		      const char **err_out) RINGPROT_MUST_CHECK;

/*
 * ---------------------------------------------------------------------
 * Mailbox names: modified UTF-7 (RFC 3501 5.1.3).
 * ---------------------------------------------------------------------
 */
/*
 * Is name valid modified UTF-7 (printable ASCII, '&' shifts to modified
 * base64 ending in '-', "&-" for '&'; the UTF-16 inside valid, no
 * printable ASCII or NUL encoded)?
 */
bool imap_mutf7_valid(const char *name);
/* mUTF-7 to UTF-8 into out (size bytes): length, -EINVAL (invalid),
 * -ENOSPC. */
int imap_mutf7_to_utf8(const char *in, char *out,
		       size_t size) RINGPROT_MUST_CHECK;
/* UTF-8 to mUTF-7: length, -EINVAL (invalid UTF-8), -ENOSPC. */
int imap_utf8_to_mutf7(const char *in, char *out,
		       size_t size) RINGPROT_MUST_CHECK;

#endif /* RINGPROT_IMAPD_PARSE_H */
