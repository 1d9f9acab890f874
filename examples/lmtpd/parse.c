/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/lmtpd/parse: the LMTP command parser, the recipient mapping
 * and the DATA reader, as pure functions so that a fuzz target drives
 * exactly the code the daemon runs.
 *
 * Strictness: a verb is matched without regard to case and must be
 * followed by a space or the end; paths must be in angle brackets
 * (RFC 5321 §4.1.2; the space some clients put after "FROM:" is
 * accepted). Every syntax error names the reply the session sends, so
 * that the session has no protocol text of its own for them.
 *
 * The DATA reader is a byte-at-a-time state machine: its state survives
 * between feeds, so input cut anywhere (".\r" in one read, "\n" in the
 * next) unstuffs the same way as in one piece.
 */
#include "parse.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

static const struct {
	const char *name;
	enum lmtp_verb verb;
} verbs[] = {
	{"LHLO", LMTP_LHLO}, {"HELO", LMTP_HELO},	  {"EHLO", LMTP_HELO},
	{"MAIL", LMTP_MAIL}, {"RCPT", LMTP_RCPT},	  {"DATA", LMTP_DATA},
	{"BDAT", LMTP_BDAT}, {"RSET", LMTP_RSET},	  {"NOOP", LMTP_NOOP},
	{"QUIT", LMTP_QUIT}, {"VRFY", LMTP_VRFY},	  {"AUTH", LMTP_AUTH},
	{"HELP", LMTP_HELP}, {"STARTTLS", LMTP_STARTTLS},
};

#define E_SYNTAX     "501 5.5.4 Syntax error in parameters or arguments"
#define E_NOARGS     "501 5.5.4 No parameters allowed"
#define E_MAIL	     "501 5.5.4 Syntax: MAIL FROM:<address> [SIZE=n] [BODY=8BITMIME]"
#define E_RCPT	     "501 5.5.4 Syntax: RCPT TO:<address>"
#define E_PATH	     "501 5.1.7 Bad address syntax"
#define E_PATH_LONG  "501 5.5.4 Path too long"
#define E_PARAM	     "555 5.5.4 Unsupported parameter"
#define E_SIZE	     "501 5.5.4 Bad SIZE= value"
#define E_BODY	     "501 5.5.4 Bad BODY= value"
#define E_BDAT	     "501 5.5.4 Syntax: BDAT size [LAST]"
#define E_ARG_NEEDED "501 5.5.4 Argument required"
#define E_UNKNOWN    "500 5.5.2 Syntax error, command unrecognized"

static int fail(struct lmtp_cmd *cmd, const char *reply)
{
	cmd->error = reply;
	return -EPROTO;
}

/* Parse decimal digits of s (all of it) into *v; false on overflow. */
static bool parse_u64(const char *s, uint64_t *v)
{
	uint64_t n = 0;

	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return false;
		if (n > (UINT64_MAX - 9) / 10)
			return false;
		n = n * 10 + (uint64_t)(*s - '0');
	}
	*v = n;
	return true;
}

/*
 * "<path>" at *sp: copy the path into cmd->path and move *sp past '>'.
 * Quoted strings and backslash pairs may hold '>' (RFC 5321 §4.1.2).
 */
static int parse_path(char **sp, struct lmtp_cmd *cmd)
{
	char *s = *sp;
	size_t n = 0;
	bool quoted = false;

	if (*s != '<')
		return -EPROTO;
	for (s++; *s != '\0'; s++) {
		if (!quoted && *s == '>')
			break;
		if (*s == '"')
			quoted = !quoted;
		else if (*s == '\\' && s[1] != '\0') {
			if (n + 1 >= LMTP_PATH_MAX)
				return -EMSGSIZE;
			cmd->path[n++] = *s++;
		}
		/* No CR or other controls: the path goes into a header. */
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return -EPROTO;
		if (!quoted && (*s == '<' || *s == ' '))
			return -EPROTO;
		if (n >= LMTP_PATH_MAX)
			return -EMSGSIZE;
		cmd->path[n++] = *s;
	}
	if (*s != '>')
		return -EPROTO;
	cmd->path[n] = '\0';
	*sp = s + 1;
	return 0;
}

/* One "KEY=VALUE" parameter of MAIL. */
static int mail_param(char *p, struct lmtp_cmd *cmd)
{
	char *eq = strchr(p, '=');
	const char *v;

	if (eq == NULL)
		return fail(cmd, E_PARAM);
	*eq = '\0';
	v = eq + 1;
	if (strcasecmp(p, "SIZE") == 0) {
		if (cmd->has_size || !parse_u64(v, &cmd->size))
			return fail(cmd, E_SIZE);
		cmd->has_size = true;
	} else if (strcasecmp(p, "BODY") == 0) {
		if (strcasecmp(v, "7BIT") == 0)
			cmd->body = LMTP_BODY_7BIT;
		else if (strcasecmp(v, "8BITMIME") == 0)
			cmd->body = LMTP_BODY_8BITMIME;
		else if (strcasecmp(v, "BINARYMIME") == 0)
			cmd->body = LMTP_BODY_BINARYMIME;
		else
			return fail(cmd, E_BODY);
	} else if (strcasecmp(p, "AUTH") == 0) {
		/* RFC 4954 §5: the original submitter; recorded nowhere. */
		if (*v == '\0')
			return fail(cmd, E_SYNTAX);
	} else {
		return fail(cmd, E_PARAM);
	}
	return 0;
}

/* MAIL FROM:<path> params, RCPT TO:<path> params. */
static int parse_mail_rcpt(char *a, struct lmtp_cmd *cmd)
{
	bool mail = cmd->verb == LMTP_MAIL;
	const char *kw = mail ? "FROM:" : "TO:";
	const char *usage = mail ? E_MAIL : E_RCPT;
	size_t kwlen = strlen(kw);
	int ret;

	if (strncasecmp(a, kw, kwlen) != 0)
		return fail(cmd, usage);
	a += kwlen;
	if (*a == ' ')
		a++;
	ret = parse_path(&a, cmd);
	if (ret == -EMSGSIZE)
		return fail(cmd, E_PATH_LONG);
	if (ret < 0)
		return fail(cmd, *a == '<' ? E_PATH : usage);
	while (*a != '\0') {
		char *p, save;

		if (*a != ' ')
			return fail(cmd, usage);
		while (*a == ' ')
			a++;
		if (*a == '\0')
			break;
		if (!mail)
			return fail(cmd, E_PARAM);
		p = a;
		while (*a != '\0' && *a != ' ')
			a++;
		save = *a;
		*a = '\0';
		ret = mail_param(p, cmd);
		if (ret < 0)
			return ret;
		*a = save;
	}
	return 0;
}

static int parse_bdat(char *a, struct lmtp_cmd *cmd)
{
	char *sp = strchr(a, ' ');

	if (sp != NULL) {
		*sp = '\0';
		if (strcasecmp(sp + 1, "LAST") != 0)
			return fail(cmd, E_BDAT);
		cmd->last = true;
	}
	if (!parse_u64(a, &cmd->chunk))
		return fail(cmd, E_BDAT);
	return 0;
}

int lmtp_cmd_parse(char *line, size_t len, struct lmtp_cmd *cmd)
{
	size_t vlen = 0;
	char *arg;

	memset(cmd, 0, sizeof(*cmd));
	cmd->arg = "";
	while (vlen < len && line[vlen] != ' ')
		vlen++;
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strlen(verbs[i].name) == vlen &&
		    strncasecmp(line, verbs[i].name, vlen) == 0)
			cmd->verb = verbs[i].verb;
	if (cmd->verb == LMTP_UNKNOWN) {
		cmd->error = E_UNKNOWN;
		return -ENOSYS;
	}
	arg = vlen < len ? line + vlen + 1 : line + len;
	cmd->arg = arg;
	switch (cmd->verb) {
	case LMTP_DATA:
	case LMTP_RSET:
	case LMTP_QUIT:
	case LMTP_STARTTLS:
		if (vlen < len)
			return fail(cmd, E_NOARGS);
		return 0;
	case LMTP_LHLO:
	case LMTP_HELO:
	case LMTP_AUTH:
		if (*arg == '\0')
			return fail(cmd, E_ARG_NEEDED);
		return 0;
	case LMTP_MAIL:
	case LMTP_RCPT:
		return parse_mail_rcpt(arg, cmd);
	case LMTP_BDAT:
		return parse_bdat(arg, cmd);
	default:
		return 0; /* NOOP, VRFY, HELP: any argument */
	}
}

static bool name_char_ok(unsigned char ch)
{
	return ch > 0x20 && ch != 0x7f && ch != '/' && ch != '\\';
}

/* A user or folder name: no leading '.', no "." or "..", safe bytes. */
static bool name_ok(const char *s, size_t n)
{
	if (n == 0 || n > LMTP_USER_MAX || s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!name_char_ok((unsigned char)s[i]))
			return false;
	return true;
}

static void lower_copy(char *dst, const char *src, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char ch = src[i];

		dst[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
	}
	dst[n] = '\0';
}

int lmtp_rcpt_map(const char *addr, const struct lmtp_map_opts *o,
		  char user[LMTP_USER_MAX + 1], char folder[LMTP_USER_MAX + 1])
{
	const char *at = strrchr(addr, '@');
	size_t local_len = at != NULL ? (size_t)(at - addr) : strlen(addr);
	size_t base_len = local_len, dom_len = 0;
	const char *detail = NULL;

	user[0] = folder[0] = '\0';
	/* Source routes ("@a:b@c"), quoted local parts and a second '@'
	 * are refused. */
	if (local_len == 0 || addr[0] == '@' || addr[0] == '"' ||
	    strchr(addr, ':') != NULL || strchr(addr, '@') != at)
		return -EINVAL;
	if (at != NULL) {
		dom_len = strlen(at + 1);
		if (dom_len == 0 || !name_ok(at + 1, dom_len))
			return -EINVAL;
	}
	if (o->detail_delim != '\0') {
		const char *d = memchr(addr, o->detail_delim, local_len);

		if (d != NULL) {
			base_len = (size_t)(d - addr);
			detail = d + 1;
		}
	}
	if (!name_ok(addr, base_len))
		return -EINVAL;
	if (detail != NULL) {
		size_t n = local_len - base_len - 1;

		/* "user+" is the user's INBOX. */
		if (n > 0 && !name_ok(detail, n))
			return -EINVAL;
		memcpy(folder, detail, n);
		folder[n] = '\0';
	}
	if (o->domain && at != NULL) {
		if (base_len + 1 + dom_len > LMTP_USER_MAX)
			return -EINVAL;
		lower_copy(user, addr, base_len);
		user[base_len] = '@';
		lower_copy(user + base_len + 1, at + 1, dom_len);
	} else {
		lower_copy(user, addr, base_len);
	}
	return 0;
}

/*
 * ---------------------------------------------------------------------
 * The DATA reader.
 * ---------------------------------------------------------------------
 */
enum {
	DOT_BOL,    /* at the start of a line */
	DOT_DOT,    /* read a line's leading '.' */
	DOT_DOT_CR, /* read ".\r" */
	DOT_MID,    /* inside a line */
};

void lmtp_dot_init(struct lmtp_dot *d, size_t line_max)
{
	memset(d, 0, sizeof(*d));
	d->line_max = line_max;
	d->state = DOT_BOL;
}

/* A byte inside a line: counted, emitted (NUL is noted and dropped). */
static size_t mid_byte(struct lmtp_dot *d, uint8_t ch, uint8_t *out)
{
	d->line_len++;
	if (ch == '\n' && !d->cr)
		d->bare_lf = true;
	d->cr = ch == '\r';
	if (ch == '\n') {
		if (d->line_max != 0 && d->line_len > d->line_max)
			d->long_line = true;
		d->line_len = 0;
		d->state = DOT_BOL;
	} else {
		d->state = DOT_MID;
		if (ch == '\0') {
			d->nul = true;
			return 0;
		}
	}
	*out = ch;
	return 1;
}

size_t lmtp_dot_feed(struct lmtp_dot *d, const uint8_t *in, size_t len,
		     uint8_t *out, size_t out_size, size_t *out_len)
{
	size_t i = 0, o = 0;

	while (i < len && !d->done && o + 2 <= out_size) {
		uint8_t ch = in[i++];

		switch (d->state) {
		case DOT_BOL:
			if (ch == '.') {
				d->line_len = 1;
				d->cr = false;
				d->state = DOT_DOT;
				continue;
			}
			o += mid_byte(d, ch, out + o);
			break;
		case DOT_DOT:
			if (ch == '\n') {
				d->bare_lf = true; /* ".\n" */
				d->done = true;
			} else if (ch == '\r') {
				d->line_len++;
				d->cr = true;
				d->state = DOT_DOT_CR;
			} else {
				o += mid_byte(d, ch, out + o);
			}
			break;
		case DOT_DOT_CR:
			if (ch == '\n') {
				d->done = true;
				break;
			}
			out[o++] = '\r'; /* ".\rX": the dot was stuffing */
			o += mid_byte(d, ch, out + o); /* X is no LF here */
			break;
		default:
			o += mid_byte(d, ch, out + o);
			break;
		}
	}
	d->size += o;
	*out_len = o;
	return i;
}
