/* SPDX-License-Identifier: BSD-3-Clause */
/* examples/imapd/mime: the message parser behind FETCH and SEARCH. */
#ifndef RINGPROT_IMAPD_MIME_H
#define RINGPROT_IMAPD_MIME_H

/*
 * Pure functions on one stored message: a byte buffer the caller mmaps or
 * reads, borrowed (never copied) for as long as the parse is used. No I/O,
 * no session, no allocation except growing the struct buf given for
 * output. Bad input is never an error here: a broken message still has a
 * structure (the parts that could be found, the rest opaque text).
 *
 * Sizes. Stored messages end lines with LF (Maildir); IMAP sends them with
 * CRLF. Every size and offset IMAP sees (RFC822.SIZE, BODYSTRUCTURE octets,
 * section sizes, partial offsets) counts each bare LF (an LF not preceded
 * by CR in the buffer) as two bytes; CRLF input, or mixed, counts as is.
 * Line counts are the LFs of a body, as Dovecot and Cyrus count them.
 *
 * Output follows Dovecot 2.3's choices where RFC 3501 leaves room, and
 * was compared with doveadm fetch imap.envelope/imap.bodystructure on the
 * test messages: type, subtype and parameter names as the message wrote
 * them, "7bit" and ("charset" "us-ascii") as defaults, RFC 2231 joined
 * parameters last, Content-Language always as a list, MISSING_MAILBOX /
 * MISSING_DOMAIN / SYNTAX_ERROR in broken addresses, subject and names
 * with quotes as literals, encoded words passed through, message/global
 * as a basic body. Deliberate differences: a part's size never includes
 * the line break before the next boundary (Dovecot counts it after a
 * nested close delimiter), boundary lines must match exactly (Dovecot
 * takes "--b" as a prefix), an address list goes on after junk, and the
 * subject is trimmed but quoted. MIME-Version is not required.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <ringprot/buf.h>
#include <ringprot/common.h>

/* Deeper parts are not split further; more parts are not recorded. */
#define IMAP_MIME_MAX_DEPTH 32
#define IMAP_MIME_MAX_PARTS 256

/* Longest string imap_mime_*_search looks for. */
#define IMAP_MIME_NEEDLE_MAX 1024

enum imap_mime_kind {
	IMAP_MIME_LEAF,
	IMAP_MIME_MULTIPART, /* children: the body parts, in order */
	IMAP_MIME_MESSAGE,   /* message/rfc822, message/global: one child,
				the encapsulated message (header and body) */
};

/* A header field's value in the buffer (after the colon, still folded). */
struct imap_mime_span {
	size_t off, len; /* off == SIZE_MAX: field absent */
};

/*
 * One part. Offsets index the message buffer. The header range includes
 * the blank line ending it (when there is one); the body follows it up to
 * the line break before the next boundary (or the end of the parent).
 * Indexes of other parts are into imap_mime_msg.part, -1 for none.
 */
struct imap_mime_part {
	size_t hdr_off, hdr_len;
	size_t body_off, body_len;
	struct imap_mime_span ctype, cte, cid, cdesc, cdisp, clang, cloc, cmd5;
	int parent, child, next;
	unsigned depth;
	enum imap_mime_kind kind;
	bool in_digest; /* a child of multipart/digest: default message/rfc822
			 */
};

/*
 * A parsed message, in caller storage (about 45 KiB: not for a fiber
 * stack). part[0] is the message itself: its header is the message header,
 * its body the message body.
 */
struct imap_mime_msg {
	const char *base;
	size_t len;
	unsigned nparts;
	bool truncated; /* a limit was hit: some structure is opaque */
	struct imap_mime_part part[IMAP_MIME_MAX_PARTS];
};

/*
 * A FETCH section resolved against a parse. off/len are the stored bytes
 * (for HEADER.FIELDS: the header the fields are picked from, without its
 * blank line); size is the octet count IMAP announces (CRLF terms, after
 * the field filter). fields borrows the section spec given to
 * imap_mime_section_find: the "(name ...)" list of HEADER.FIELDS[.NOT].
 */
struct imap_mime_section {
	size_t off, len;
	uint64_t size;
	int part; /* the part the section names (0: the message) */
	const char *fields;
	size_t fields_len;
	bool fields_not;
};

/*
 * Output sink for section bytes: return 0 to go on, or any other value to
 * stop, which the writing call then returns.
 */
typedef int imap_mime_write_fn(void *arg, const char *p, size_t n);

/* Parse base[0..len) into m. m borrows base. Never fails. */
void imap_mime_parse(struct imap_mime_msg *m, const char *base, size_t len);

/* Octets of base[off..off+len) in CRLF terms (len + its bare LFs). */
uint64_t imap_mime_crlf_len(const char *base, size_t off, size_t len);

/*
 * ENVELOPE of message part idx (0, or the child of a MESSAGE part),
 * appended to out. Returns 0, -EINVAL for an index that is no message,
 * -ENOMEM (out then holds a partial result).
 */
int imap_mime_envelope(const struct imap_mime_msg *m, int idx,
		       struct buf *out) RINGPROT_MUST_CHECK;

/*
 * BODYSTRUCTURE (extended true) or BODY (false) of part idx (0: the
 * message) appended to out, parenthesised. Returns 0 or -ENOMEM.
 */
int imap_mime_bodystructure(const struct imap_mime_msg *m, int idx,
			    bool extended, struct buf *out) RINGPROT_MUST_CHECK;

/*
 * Resolve spec, the text between "[" and "]" of BODY[...] (e.g. "",
 * "1.2", "HEADER", "2.MIME", "1.HEADER.FIELDS (From To)", "TEXT";
 * case-insensitive; the field list as atoms or quoted strings). Part
 * numbers as RFC 3501 and Dovecot read them: a single-part message has
 * part 1; "N.1" of a leaf part N is N itself (once); HEADER, TEXT and
 * HEADER.FIELDS after part numbers need a message/rfc822 part. Checked
 * against doveadm fetch body.<section> on the test messages. Returns 0,
 * -EINVAL for bad syntax, -ENOENT for a part the message does not have.
 * out borrows spec.
 */
int imap_mime_section_find(const struct imap_mime_msg *m, const char *spec,
			   size_t n,
			   struct imap_mime_section *out) RINGPROT_MUST_CHECK;

/*
 * Write the section's bytes as IMAP sends them (CRLF-expanded, fields
 * filtered) through fn, limited to the partial window [from, from+count)
 * of those bytes (count UINT64_MAX: to the end). Returns 0 or what fn
 * returned to stop.
 */
int imap_mime_section_write(const struct imap_mime_msg *m,
			    const struct imap_mime_section *s, uint64_t from,
			    uint64_t count, imap_mime_write_fn *fn,
			    void *arg) RINGPROT_MUST_CHECK;

/* An imap_mime_write_fn appending to the struct buf arg: 0 or -ENOMEM. */
int imap_mime_buf_append(void *arg, const char *p, size_t n);

/*
 * BINARY (RFC 3516, RFC 9051 §6.4.5): part idx (imap_mime_section_find's
 * .part) with every Content-Transfer-Encoding in it undone, through fn in
 * the window [from, from+count) of those bytes. hdr: with the part's own
 * header first. BINARY[] is idx 0 with hdr (the whole message); BINARY[n]
 * is n's part without (so, as for BODY, BINARY[1] of a single-part message
 * is idx 0 without hdr: its body).
 *
 * A leaf's body is decoded (base64, quoted-printable; 7bit, 8bit and
 * binary go CRLF-expanded as stored). A multipart or message part goes
 * as stored around its parts, each part with its header and decoded
 * body; a header whose body was decoded loses its
 * Content-Transfer-Encoding fields and gets "Content-Transfer-Encoding:
 * binary" last (as Dovecot answers BINARY of a multipart).
 *
 * *size_out (may be NULL) gets the whole decoded size when the window
 * reaches the end. Returns 0, what fn returned, -EINVAL for no such idx,
 * -EPROTONOSUPPORT when a leaf in it has an unknown encoding
 * ([UNKNOWN-CTE]; output may have begun: take the size first).
 */
int imap_mime_binary_write(const struct imap_mime_msg *m, int idx, bool hdr,
			   uint64_t from, uint64_t count,
			   imap_mime_write_fn *fn, void *arg,
			   uint64_t *size_out) RINGPROT_MUST_CHECK;

/* Decoded size of the same (BINARY.SIZE): 0 or as above. */
int imap_mime_binary_size(const struct imap_mime_msg *m, int idx, bool hdr,
			  uint64_t *size_out) RINGPROT_MUST_CHECK;

/*
 * The nth (from 0) field called name (case-insensitive) in the header of
 * part idx: its raw value, still folded, in *off_out and *len_out. Returns 0
 * or -ENOENT.
 */
int imap_mime_header_get(const struct imap_mime_msg *m, int idx,
			 const char *name, unsigned nth, size_t *off_out,
			 size_t *len_out) RINGPROT_MUST_CHECK;

/*
 * The same field's value unfolded (line breaks removed, the blanks after
 * them kept, leading and trailing blanks trimmed) appended to out as raw
 * bytes (no quoting). Returns 0, -ENOENT, or -ENOMEM.
 */
int imap_mime_header_value(const struct imap_mime_msg *m, int idx,
			   const char *name, unsigned nth,
			   struct buf *out) RINGPROT_MUST_CHECK;

/*
 * SEARCH HEADER: 1 if any field called name (NULL: any field, names
 * included, as TEXT searches) of the header of part idx contains needle,
 * ASCII case-insensitive, in its unfolded value with RFC 2047 encoded
 * words decoded (bytes in their own charset: no conversion); else 0. An
 * empty needle matches every present field. -E2BIG for a needle longer
 * than IMAP_MIME_NEEDLE_MAX.
 */
int imap_mime_header_search(const struct imap_mime_msg *m, int idx,
			    const char *name, const char *needle,
			    size_t n) RINGPROT_MUST_CHECK;

/*
 * SEARCH BODY: 1 if a text part of the message (text/ *, or no type
 * outside a digest; in encapsulated messages too) contains needle, ASCII
 * case-insensitive, after undoing base64 or quoted-printable; else 0.
 * Charsets are not converted. -E2BIG as above.
 */
int imap_mime_body_search(const struct imap_mime_msg *m, const char *needle,
			  size_t n) RINGPROT_MUST_CHECK;

/*
 * An RFC 5322 date-time (obsolete forms too: two-digit years, zone names,
 * comments, no seconds, no weekday): *t_out the instant (UTC), *zone_out
 * (may be NULL) the zone offset in minutes east, so t + zone * 60 is the
 * date "disregarding time and timezone" that SENTON compares. Returns 0
 * or -EINVAL.
 */
int imap_mime_date_parse(const char *s, size_t n, time_t *t_out,
			 int *zone_out) RINGPROT_MUST_CHECK;

/* The Date: of message part idx, as imap_mime_date_parse; -ENOENT. */
int imap_mime_date(const struct imap_mime_msg *m, int idx, time_t *t_out,
		   int *zone_out) RINGPROT_MUST_CHECK;

#endif /* RINGPROT_IMAPD_MIME_H */
