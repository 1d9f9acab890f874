/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/imapd/fetch: FETCH and UID FETCH (RFC 3501 6.4.5, BINARY of
 * RFC 3516).
 *
 * What comes from the message list (mailbox.h's md_msg_info) costs no
 * file access: UID, FLAGS, RFC822.SIZE (the W= of the name: the size
 * with CRLF line ends); INTERNALDATE (the file's mtime) a stat at the
 * first ask (md_mbox_msg_date). Anything of the
 * content (ENVELOPE, BODY[STRUCTURE], sections, BINARY) reads the file
 * whole and parses it (mime.c); the stored LF line ends go out as
 * CRLF.
 *
 * Zero copy (issue 17): a message stored with CRLF line ends (the
 * store's save_crlf, md_msg_is_crlf) is its own wire form, so when a
 * FETCH asks only for the whole of it (BODY[], BODY.PEEK[], RFC822, their
 * partials: a range of the file) besides what the message list answers,
 * the file is not read: the range goes to the stream with prot_sendfile,
 * spliced to a plain socket, read in chunks through TLS or COMPRESS.
 * BINARY[] stays on the parsed path (its parts' Content-Transfer-Encodings
 * are undone), as do small messages (a pipe per call costs
 * more than the copy) and a file whose size is not its name's.
 *
 * A FETCH of a body section without .PEEK sets \Seen (not on a
 * read-only mailbox), and the new FLAGS go out with that message's
 * FETCH response, as RFC 3501 asks.
 */
#include "mbox.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ringprot/prot.h>

#include "mime.h"

/* Largest message FETCH reads into memory. */
#define FETCH_MAX_MSG ((size_t)1 << 30)
/* Smallest message sent from its file (zero copy). */
#define FETCH_ZC_MIN  ((uint64_t)64 << 10)

struct fetch_job {
	struct imap_fetch f;
	struct imap_mime_msg *mime; /* parse, made at the first need */
	bool readonly;
	int err; /* a per-message failure to report in the tagged reply */
	const char *err_text;
};

static const char *const month[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
				    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static void print_internaldate(struct protstream *out, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	(void)prot_printf(out, "\"%2d-%s-%04d %02d:%02d:%02d +0000\"",
			  tm.tm_mday, month[tm.tm_mon], tm.tm_year + 1900,
			  tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* prot_write of n bytes (imap_mime_write_fn). */
static int out_write(void *arg, const char *p, size_t n)
{
	return prot_write(arg, p, (unsigned)n) == EOF ? -EIO : 0;
}

/* Does the section's decoded content hold a NUL (literal8 needed)? */
static int nul_scan(void *arg, const char *p, size_t n)
{
	if (memchr(p, '\0', n) != NULL)
		*(bool *)arg = true;
	return 0;
}

/*
 * The response name of a section: the client's text without ".PEEK" and
 * without the partial's length ("BODY[1]<0>").
 */
static void print_section_name(struct protstream *out,
			       const struct imap_section *sec)
{
	const char *name = sec->name, *br = strchr(name, '[');
	const char *end = strrchr(name, ']');

	if (br == NULL || end == NULL || end < br)
		return;
	switch (sec->kind) {
	case IMAP_BODY_SECTION:
		(void)prot_puts(out, "BODY");
		break;
	case IMAP_BINARY:
		(void)prot_puts(out, "BINARY");
		break;
	case IMAP_BINARY_SIZE:
		(void)prot_puts(out, "BINARY.SIZE");
		break;
	}
	(void)prot_write(out, br, (unsigned)(end - br) + 1);
	if (sec->partial)
		(void)prot_printf(out, "<%" PRIu32 ">", sec->off);
}

/* The spec between the brackets of sec's name. */
static const char *section_spec(const struct imap_section *sec, size_t *n)
{
	const char *br = strchr(sec->name, '[');
	const char *end = strrchr(sec->name, ']');

	if (br == NULL || end == NULL || end < br) {
		*n = 0;
		return "";
	}
	*n = (size_t)(end - br - 1);
	return br + 1;
}

/* "{n}\r\n" then the window of the section. */
static int send_section(struct imap_sess *s, struct fetch_job *j,
			const struct imap_section *sec)
{
	struct protstream *out = s->c->out;
	struct imap_mime_section ms;
	uint64_t from = 0, count = UINT64_MAX, size, len;
	const char *spec;
	bool whole;
	size_t n;
	int ret;

	spec = section_spec(sec, &n);
	ret = imap_mime_section_find(j->mime, spec, n, &ms);
	if (sec->partial) {
		from = sec->off;
		count = sec->len;
	}
	print_section_name(out, sec);
	if (ret < 0) {
		/* A part the message does not have: empty (RFC 3501 gives
		 * no error for it; Dovecot and Cyrus answer NIL or ""). */
		(void)prot_puts(out, " NIL");
		return 0;
	}
	if (sec->kind == IMAP_BODY_SECTION) {
		size = ms.size;
		len = from >= size ? 0 : size - from;
		if (len > count)
			len = count;
		(void)prot_printf(out, " {%" PRIu64 "}\r\n", len);
		return imap_mime_section_write(j->mime, &ms, from, count,
					       out_write, out);
	}
	/*
	 * BINARY, BINARY.SIZE: RFC 9051 6.4.5 reads an empty section as for
	 * BODY[], the whole message, header included.
	 */
	whole = n == 0;
	ret = imap_mime_binary_size(j->mime, ms.part, whole, &size);
	if (ret == -EPROTONOSUPPORT) {
		j->err = ret;
		j->err_text = "[UNKNOWN-CTE] Unknown Content-Transfer-Encoding";
		(void)prot_puts(out, " NIL");
		return 0;
	}
	if (ret < 0) {
		(void)prot_puts(out, " NIL");
		return 0;
	}
	if (sec->kind == IMAP_BINARY_SIZE) {
		(void)prot_printf(out, " %" PRIu64, size);
		return 0;
	}
	len = from >= size ? 0 : size - from;
	if (len > count)
		len = count;
	{
		bool nul = false;

		if (imap_mime_binary_write(j->mime, ms.part, whole, from, count,
					   nul_scan, &nul, NULL) < 0) {
			/* sizes were computed: the scan cannot fail */
		}
		(void)prot_printf(out, " %s{%" PRIu64 "}\r\n", nul ? "~" : "",
				  len);
	}
	return imap_mime_binary_write(j->mime, ms.part, whole, from, count,
				      out_write, out, NULL);
}

/* A whole-message item (RFC822, RFC822.HEADER, RFC822.TEXT). */
static int send_rfc822(struct imap_sess *s, struct fetch_job *j,
		       const char *item, const char *spec)
{
	struct imap_mime_section ms;
	int ret = imap_mime_section_find(j->mime, spec, strlen(spec), &ms);

	if (ret < 0)
		return 0;
	(void)prot_printf(s->c->out, "%s {%" PRIu64 "}\r\n", item, ms.size);
	return imap_mime_section_write(j->mime, &ms, 0, UINT64_MAX, out_write,
				       s->c->out);
}

/*
 * Can this FETCH of mi go from the file: is every content item the whole
 * message, and is the message stored as it is sent?
 */
static bool zero_copy_ok(const struct imap_fetch *f,
			 const struct md_msg_info *mi)
{
	if (f->items &
	    (IMAP_FETCH_ENVELOPE | IMAP_FETCH_BODY | IMAP_FETCH_BODYSTRUCTURE |
	     IMAP_FETCH_RFC822_HEADER | IMAP_FETCH_RFC822_TEXT))
		return false;
	if (!(f->items & IMAP_FETCH_RFC822) && f->nsections == 0)
		return false;
	for (const struct imap_section *sec = f->sections; sec != NULL;
	     sec = sec->next)
		if (sec->kind != IMAP_BODY_SECTION ||
		    sec->spec != IMAP_SECTION_ALL || sec->nparts != 0)
			return false;
	return mi->size >= FETCH_ZC_MIN && md_msg_is_crlf(mi);
}

/*
 * The message's file for zero copy, if its size is still the name's
 * (else -1: the parsed path); -ENOENT if it was expunged, -errno.
 */
static int zero_copy_open(struct md_mbox *mb, const struct md_msg_info *mi)
{
	uint64_t size = mi->size;
	struct stat st;
	int fd = md_mbox_msg_open(mb, mi->uid);

	if (fd < 0)
		return fd;
	if (fstat(fd, &st) == 0 && (uint64_t)st.st_size == size)
		return fd;
	close(fd);
	return -1;
}

/* " {n}\r\n" and [from, from + count) of the file of size bytes. */
static int send_file(struct protstream *out, int fd, uint64_t size,
		     uint64_t from, uint64_t count)
{
	uint64_t len = from >= size ? 0 : size - from;

	if (len > count)
		len = count;
	(void)prot_printf(out, " {%" PRIu64 "}\r\n", len);
	if (len > 0 && prot_sendfile(out, fd, (off_t)from, (size_t)len) == EOF)
		return -EIO;
	return 0;
}

/* BODY[] (or its partial) from the file. */
static int send_section_file(struct protstream *out, int fd, uint64_t size,
			     const struct imap_section *sec)
{
	print_section_name(out, sec);
	return send_file(out, fd, size, sec->partial ? sec->off : 0,
			 sec->partial ? sec->len : UINT64_MAX);
}

static int print_buf(struct imap_sess *s, struct buf *b, int ret)
{
	if (ret == 0)
		(void)prot_write(s->c->out, b->s, (unsigned)b->len);
	free(b->s);
	*b = (struct buf)BUF_INITIALIZER;
	return ret;
}

static int fetch_one(struct imap_sess *s, uint32_t seq,
		     const struct md_msg_info *mi, void *arg)
{
	struct fetch_job *j = arg;
	struct protstream *out = s->c->out;
	struct md_mbox *mb = imap_mbox_md(s);
	const struct imap_fetch *f = &j->f;
	unsigned items = f->items;
	bool content = (items & (IMAP_FETCH_ENVELOPE | IMAP_FETCH_BODY |
				 IMAP_FETCH_BODYSTRUCTURE | IMAP_FETCH_RFC822 |
				 IMAP_FETCH_RFC822_HEADER |
				 IMAP_FETCH_RFC822_TEXT)) != 0 ||
		       f->nsections > 0;
	bool sep = false;
	char *data = NULL;
	size_t len = 0;
	uint32_t uid = mi->uid;
	int64_t date = 0;
	int ret = 0, fd = -1;

	/* \Seen first: the store may move the file, and FLAGS must say it. */
	if ((f->sets_seen ||
	     (items & (IMAP_FETCH_RFC822 | IMAP_FETCH_RFC822_TEXT))) &&
	    !j->readonly && !(mi->flags & MD_F_SEEN)) {
		ret = md_mbox_store(mb, uid,
				    (mi->flags & MD_F_STORED) | MD_F_SEEN,
				    mi->keywords);
		if (ret == -ENOENT)
			return 0; /* expunged meanwhile */
		if (ret < 0)
			return ret;
		items |= IMAP_FETCH_FLAGS;
		mi = imap_mbox_info(s, seq);
		if (mi == NULL)
			return 0;
	}
	if (items & IMAP_FETCH_INTERNALDATE) {
		ret = md_mbox_msg_date(mb, uid, &date);
		if (ret == -ENOENT)
			return 0; /* expunged meanwhile */
		if (ret < 0)
			return ret;
		mi = imap_mbox_info(s, seq); /* may resync names */
		if (mi == NULL)
			return 0;
	}
	if (content && zero_copy_ok(f, mi)) {
		fd = zero_copy_open(mb, mi);
		if (fd == -ENOENT)
			return 0; /* expunged meanwhile */
		if (fd < -1)
			return fd;
		content = fd < 0;
		mi = imap_mbox_info(s, seq); /* opening may resync names */
		if (mi == NULL) {
			if (fd >= 0)
				close(fd);
			return 0;
		}
	}
	if (content) {
		ret = md_mbox_msg_read(mb, uid, FETCH_MAX_MSG, &data, &len);
		if (ret == -ENOENT)
			return 0; /* expunged meanwhile: nothing to send */
		if (ret < 0)
			return ret;
		if (j->mime == NULL) {
			j->mime = malloc(sizeof(*j->mime));
			if (j->mime == NULL) {
				free(data);
				return -ENOMEM;
			}
		}
		imap_mime_parse(j->mime, data, len);
		mi = imap_mbox_info(s, seq); /* reading may resync names */
		if (mi == NULL) {
			free(data);
			return 0;
		}
	}

	(void)prot_printf(out, "* %" PRIu32 " FETCH (", seq);
#define SEP() ((void)(sep ? prot_putc(' ', out) : 0), sep = true)
	if (items & IMAP_FETCH_UID) {
		SEP();
		(void)prot_printf(out, "UID %" PRIu32, mi->uid);
	}
	if (items & IMAP_FETCH_FLAGS) {
		SEP();
		(void)prot_puts(out, "FLAGS ");
		imap_print_flags(s, mi);
	}
	if (items & IMAP_FETCH_INTERNALDATE) {
		SEP();
		(void)prot_puts(out, "INTERNALDATE ");
		print_internaldate(out, date);
	}
	if (items & IMAP_FETCH_RFC822_SIZE) {
		SEP();
		(void)prot_printf(out, "RFC822.SIZE %" PRIu64, mi->size);
	}
	if (items & IMAP_FETCH_ENVELOPE) {
		struct buf b = BUF_INITIALIZER;

		SEP();
		(void)prot_puts(out, "ENVELOPE ");
		ret = print_buf(s, &b, imap_mime_envelope(j->mime, 0, &b));
	}
	if (ret == 0 && (items & IMAP_FETCH_BODYSTRUCTURE)) {
		struct buf b = BUF_INITIALIZER;

		SEP();
		(void)prot_puts(out, "BODYSTRUCTURE ");
		ret = print_buf(s, &b,
				imap_mime_bodystructure(j->mime, 0, true, &b));
	}
	if (ret == 0 && (items & IMAP_FETCH_BODY)) {
		struct buf b = BUF_INITIALIZER;

		SEP();
		(void)prot_puts(out, "BODY ");
		ret = print_buf(s, &b,
				imap_mime_bodystructure(j->mime, 0, false, &b));
	}
	if (ret == 0 && (items & IMAP_FETCH_RFC822_HEADER)) {
		SEP();
		ret = send_rfc822(s, j, "RFC822.HEADER", "HEADER");
	}
	if (ret == 0 && (items & IMAP_FETCH_RFC822_TEXT)) {
		SEP();
		ret = send_rfc822(s, j, "RFC822.TEXT", "TEXT");
	}
	if (ret == 0 && (items & IMAP_FETCH_RFC822)) {
		SEP();
		if (fd >= 0) {
			(void)prot_puts(out, "RFC822");
			ret = send_file(out, fd, mi->size, 0, UINT64_MAX);
		} else {
			ret = send_rfc822(s, j, "RFC822", "");
		}
	}
	for (const struct imap_section *sec = f->sections;
	     ret == 0 && sec != NULL; sec = sec->next) {
		SEP();
		if (fd >= 0)
			ret = send_section_file(out, fd, mi->size, sec);
		else
			ret = send_section(s, j, sec);
	}
#undef SEP
	(void)prot_puts(out, ")\r\n");
	free(data);
	if (fd >= 0)
		close(fd);
	return ret;
}

int cmd_fetch(struct imap_sess *s, const char *tag)
{
	struct fetch_job j = {0};
	struct imap_seqset set;
	struct imap_arg *a;
	unsigned ghosts = 0;
	int ret;

	ret = imap_args(s, &a);
	if (ret < 0)
		return ret;
	if (ret != 2 || a->type != IMAP_ARG_ATOM) {
		s->lx.err = "FETCH takes a set and attributes";
		return -EPROTO;
	}
	ret = imap_seqset_parse(a->str, &s->pool, &set, &s->lx.err);
	if (ret == 0)
		ret = imap_parse_fetch(a->next, &s->pool, &j.f, &s->lx.err);
	if (ret < 0)
		return ret;
	if (s->uid)
		j.f.items |= IMAP_FETCH_UID;
	j.readonly = md_mbox_readonly(imap_mbox_md(s));
	ret = imap_mbox_each(s, &set, s->uid, fetch_one, &j, &ghosts);
	free(j.mime);
	if (ret == -ENOMEM || ret == -EIO)
		return ret;
	if (ret == 0)
		ret = imap_mbox_sync(s, s->uid);
	if (ret < 0)
		imap_tagged(s, tag, "NO", "[SERVERBUG] FETCH failed");
	else if (j.err != 0)
		imap_tagged(s, tag, "NO", "%s", j.err_text);
	else if (ghosts > 0)
		/* RFC 2180 4.1.3: messages expunged by another session. */
		imap_tagged(s, tag, "NO",
			    "Some of the requested messages no longer exist");
	else
		imap_tagged(s, tag, "OK", "FETCH completed");
	return 0;
}
