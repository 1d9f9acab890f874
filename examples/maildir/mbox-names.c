/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/maildir: the parsers of mailbox.h: mailbox names from clients,
 * flags in file names, uidlist lines. Pure C with no I/O (the fuzz target
 * links just this file): every input is untrusted, nothing here may read
 * past a NUL or trust a length it did not count.
 */
#include "mailbox.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* D F P R S T: the stored flags, in ASCII order, as bits 0-5. */
static const char flag_letters[] = "DFPRST";

bool md_mbox_is_inbox(const char *name)
{
	return name != NULL && strcasecmp(name, "INBOX") == 0;
}

static bool b64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '+' || c == ',';
}

/*
 * RFC 3501 5.1.3: '&' starts a shift ending at '-'; "&-" is a literal
 * '&'. Between them, modified base64. Returns the length of the shift
 * at p (p[0] == '&') or 0 if malformed.
 */
static size_t utf7_shift(const char *p)
{
	size_t i = 1;

	while (b64_char(p[i]))
		i++;
	return p[i] == '-' ? i + 1 : 0;
}

int md_mbox_name_check(const char *name)
{
	size_t i = 0, n;

	if (name == NULL)
		return -EINVAL;
	if (md_mbox_is_inbox(name))
		return 0;
	n = strnlen(name, MD_MBOX_NAME_MAX + 1);
	if (n == 0 || n > MD_MBOX_NAME_MAX || name[0] == '.' ||
	    name[n - 1] == '.')
		return -EINVAL;
	/* No level below INBOX: "INBOX.x" would be a second INBOX. */
	if (n > 5 && strncasecmp(name, "INBOX.", 6) == 0)
		return -EINVAL;
	while (i < n) {
		unsigned char c = (unsigned char)name[i];

		if (c < 0x20 || c >= 0x7f || c == '/' || c == '*' || c == '%')
			return -EINVAL;
		if (c == '.' && name[i + 1] == '.')
			return -EINVAL;
		if (c == '&') {
			size_t k = utf7_shift(name + i);

			if (k == 0)
				return -EINVAL;
			i += k;
			continue;
		}
		i++;
	}
	return 0;
}

bool md_keyword_ok(const char *kw)
{
	size_t n;

	if (kw == NULL || kw[0] == '\0' || kw[0] == '\\')
		return false;
	for (n = 0; kw[n] != '\0'; n++) {
		unsigned char c = (unsigned char)kw[n];

		/* RFC 3501 atom-specials, and no ']' (resp-specials). */
		if (n >= MD_KW_LEN_MAX || c <= 0x20 || c >= 0x7f ||
		    strchr("(){%*\"\\]", c) != NULL)
			return false;
	}
	return true;
}

void md_flags_parse(const char *fname, unsigned *flags_out, uint32_t *kw_out)
{
	const char *p = strchr(fname, ':');
	unsigned flags = 0;
	uint32_t kw = 0;

	/* strstr(":2,") without its search of the whole name: the info
	 * part starts at the first ':' (a base has none). */
	while (p != NULL && (p[1] != '2' || p[2] != ','))
		p = strchr(p + 1, ':');
	if (p != NULL) {
		for (p += 3; *p != '\0'; p++) {
			const char *f =
				*p != '\0' ? strchr(flag_letters, *p) : NULL;

			if (f != NULL)
				flags |= 1U << (f - flag_letters);
			else if (*p >= 'a' && *p <= 'z')
				kw |= 1U << (*p - 'a');
		}
	}
	*flags_out = flags;
	*kw_out = kw;
}

size_t md_flags_format(unsigned flags, uint32_t kw, char *out, size_t size)
{
	char buf[3 + 6 + MD_KW_MAX + 1];
	size_t n = 0;

	memcpy(buf, ":2,", 3);
	n = 3;
	for (unsigned i = 0; i < 6; i++)
		if (flags & (1U << i))
			buf[n++] = flag_letters[i];
	for (unsigned i = 0; i < MD_KW_MAX; i++)
		if (kw & (1U << i))
			buf[n++] = (char)('a' + i);
	buf[n] = '\0';
	if (size > 0)
		(void)snprintf(out, size, "%s", buf);
	return n;
}

size_t md_base_len(const char *fname)
{
	return strcspn(fname, ":");
}

int md_name_field(const char *fname, char key, uint64_t *val_out)
{
	size_t blen = md_base_len(fname);
	uint64_t v = 0;

	for (size_t i = 0; i + 3 < blen; i++) {
		size_t k;

		if (fname[i] != ',' || fname[i + 1] != key ||
		    fname[i + 2] != '=')
			continue;
		for (k = i + 3; k < blen && fname[k] >= '0' && fname[k] <= '9';
		     k++) {
			if (v > (UINT64_MAX - 9) / 10)
				return -ENOENT;
			v = v * 10 + (uint64_t)(fname[k] - '0');
		}
		if (k == i + 3 || (k < blen && fname[k] != ','))
			return -ENOENT;
		*val_out = v;
		return 0;
	}
	return -ENOENT;
}

/* A decimal uint32 at *pp, > 0, followed by sep; moves *pp past sep. */
static int parse_u32(const char **pp, char sep, uint32_t *out)
{
	const char *p = *pp;
	uint64_t v = 0;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > UINT32_MAX)
			return -EINVAL;
		p++;
	}
	if (v == 0 || *p != sep)
		return -EINVAL;
	*out = (uint32_t)v;
	*pp = sep == '\0' ? p : p + 1;
	return 0;
}

/* A base name we would have made or accept: no '/', ':', controls. */
static bool base_ok(const char *b)
{
	size_t n = 0;

	if (b[0] == '\0' || b[0] == '.')
		return false;
	for (; b[n] != '\0'; n++) {
		unsigned char c = (unsigned char)b[n];

		if (n >= 255 || c <= 0x20 || c == 0x7f || c == '/' || c == ':')
			return false;
	}
	return true;
}

int md_uidlist_parse(const char *line, int want_header, uint32_t *a,
		     uint32_t *b)
{
	static const char magic[] = "ringprot-uidlist 1 ";
	const char *p = line;

	if (want_header) {
		if (strncmp(p, magic, sizeof(magic) - 1) != 0)
			return -EINVAL;
		p += sizeof(magic) - 1;
		if (parse_u32(&p, ' ', a) < 0 || parse_u32(&p, '\0', b) < 0)
			return -EINVAL;
		return 0;
	}
	if (parse_u32(&p, ' ', a) < 0 || !base_ok(p))
		return -EINVAL;
	*b = (uint32_t)(p - line);
	return 1;
}
