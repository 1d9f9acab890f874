/* SPDX-License-Identifier: BSD-3-Clause */
/* test/imap-mime: examples/imapd's MIME parser, byte for byte. */
#include "t-helpers.h" /* stdarg, stddef, setjmp, cmocka: in that order */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mime.h" /* examples/imapd */

/*
 * Expected strings are what RFC 3501 §7.4.2 prescribes, in Dovecot's
 * spelling where the RFC leaves a choice (see mime.h). Every message is
 * checked twice: as stored (LF) and as sent (CRLF); both must give the
 * same structure and the same CRLF sizes.
 */

static struct imap_mime_msg msg;
static char *msg_copy;

/* Parse s with LF line ends (crlf false) or with each LF made CRLF. */
static void parse(const char *s, bool crlf)
{
	size_t n = strlen(s), k = 0;

	free(msg_copy);
	msg_copy = malloc(2 * n + 1);
	assert_non_null(msg_copy);
	for (size_t i = 0; i < n; i++) {
		if (crlf && s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
			msg_copy[k++] = '\r';
		msg_copy[k++] = s[i];
	}
	imap_mime_parse(&msg, msg_copy, k);
}

/* CR and LF shown as \r and \n in failure messages. */
static const char *show(const char *s, size_t n)
{
	static char out[2][4096];
	static int which;
	char *o = out[which ^= 1];
	size_t k = 0;

	for (size_t i = 0; i < n && k + 3 < sizeof(out[0]); i++) {
		if (s[i] == '\r' || s[i] == '\n') {
			o[k++] = '\\';
			o[k++] = s[i] == '\r' ? 'r' : 'n';
		} else {
			o[k++] = s[i];
		}
	}
	o[k] = '\0';
	return o;
}

static void expect_buf(struct buf *b, const char *want)
{
	if (b->len != strlen(want) || memcmp(b->s, want, b->len) != 0)
		fail_msg("got  %s\nwant %s", show(b->s, b->len),
			 show(want, strlen(want)));
	free(b->s);
	*b = (struct buf)BUF_INITIALIZER;
}

static void expect_env(int idx, const char *want)
{
	struct buf b = BUF_INITIALIZER;

	assert_int_equal(imap_mime_envelope(&msg, idx, &b), 0);
	expect_buf(&b, want);
}

static void expect_body(bool ext, const char *want)
{
	struct buf b = BUF_INITIALIZER;

	assert_int_equal(imap_mime_bodystructure(&msg, 0, ext, &b), 0);
	expect_buf(&b, want);
}

/* LF made CRLF (CRLF kept): the bytes as sent. Caller frees. */
static char *to_crlf(const char *want)
{
	char *w = malloc(2 * strlen(want) + 1);
	size_t k = 0;

	assert_non_null(w);
	for (size_t i = 0; want[i] != '\0'; i++) {
		if (want[i] == '\n' && (i == 0 || want[i - 1] != '\r'))
			w[k++] = '\r';
		w[k++] = want[i];
	}
	w[k] = '\0';
	return w;
}

/* The window [from, from+count) of a section: want exactly, as sent. */
static void expect_section_part(const char *spec, uint64_t from, uint64_t count,
				const char *want)
{
	struct imap_mime_section s;
	struct buf b = BUF_INITIALIZER;

	assert_int_equal(imap_mime_section_find(&msg, spec, strlen(spec), &s),
			 0);
	assert_int_equal(imap_mime_section_write(&msg, &s, from, count,
						 imap_mime_buf_append, &b),
			 0);
	expect_buf(&b, want);
}

/* The whole section: want with LF made CRLF, and its announced size. */
static void expect_section(const char *spec, const char *want)
{
	struct imap_mime_section s;
	char *w = to_crlf(want);

	assert_int_equal(imap_mime_section_find(&msg, spec, strlen(spec), &s),
			 0);
	assert_int_equal(s.size, strlen(w));
	expect_section_part(spec, 0, UINT64_MAX, w);
	free(w);
}

static void expect_section_err(const char *spec, int err)
{
	struct imap_mime_section s;

	assert_int_equal(imap_mime_section_find(&msg, spec, strlen(spec), &s),
			 err);
}

static void expect_binary(int idx, bool hdr, const char *want, size_t n);

static int teardown(void **state)
{
	(void)state;
	free(msg_copy);
	msg_copy = NULL;
	return 0;
}

/* ---- single part ---- */

static const char simple[] = "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
			     "From: Terry Gray <gray@cac.washington.edu>\n"
			     "Subject: IMAP4rev1 WG mtg summary and minutes\n"
			     "To: imap@cac.washington.edu\n"
			     "cc: minutes@CNRI.Reston.VA.US,\n"
			     "\tJohn Klensin <KLENSIN@MIT.EDU>\n"
			     "Message-Id: <B27397-0100000@cac.washington.edu>\n"
			     "MIME-Version: 1.0\n"
			     "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
			     "\n"
			     "Hello\n"
			     "World\n";

static const char simple_hdr[] =
	"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
	"From: Terry Gray <gray@cac.washington.edu>\n"
	"Subject: IMAP4rev1 WG mtg summary and minutes\n"
	"To: imap@cac.washington.edu\n"
	"cc: minutes@CNRI.Reston.VA.US,\n"
	"\tJohn Klensin <KLENSIN@MIT.EDU>\n"
	"Message-Id: <B27397-0100000@cac.washington.edu>\n"
	"MIME-Version: 1.0\n"
	"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
	"\n";

static void test_imap_mime_simple(void **state)
{
	(void)state;
	for (int crlf = 0; crlf < 2; crlf++) {
		parse(simple, crlf);
		/* RFC 3501 §8's example envelope, Sender and Reply-To from
		 * From. */
		expect_env(0, "(\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" "
			      "\"IMAP4rev1 WG mtg summary and minutes\" "
			      "((\"Terry Gray\" NIL \"gray\" "
			      "\"cac.washington.edu\")) "
			      "((\"Terry Gray\" NIL \"gray\" "
			      "\"cac.washington.edu\")) "
			      "((\"Terry Gray\" NIL \"gray\" "
			      "\"cac.washington.edu\")) "
			      "((NIL NIL \"imap\" \"cac.washington.edu\")) "
			      "((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")"
			      "(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) "
			      "NIL NIL "
			      "\"<B27397-0100000@cac.washington.edu>\")");
		expect_body(true, "(\"TEXT\" \"PLAIN\" (\"CHARSET\" "
				  "\"US-ASCII\") NIL NIL \"7bit\" 14 2 "
				  "NIL NIL NIL NIL)");
		expect_body(false, "(\"TEXT\" \"PLAIN\" (\"CHARSET\" "
				   "\"US-ASCII\") NIL NIL \"7bit\" 14 2)");
		/* RFC822.SIZE: bytes plus bare LFs. */
		assert_int_equal(imap_mime_crlf_len(msg.base, 0, msg.len),
				 strlen(simple) + 12);
		expect_section("", simple);
		expect_section("1", "Hello\nWorld\n");
		expect_section("TEXT", "Hello\nWorld\n");
		/* Part 1 of a single-part message: its MIME header is the
		 * message header. */
		expect_section("1.MIME", simple_hdr);
		expect_section_err("2", -ENOENT);
		expect_section_err("1.1", -ENOENT);
		expect_section_err("0", -EINVAL);
		expect_section_err("1.", -EINVAL);
		expect_section_err("BOGUS", -EINVAL);
		expect_section_err("MIME", -EINVAL);
		expect_section_err("1.HEADER", -ENOENT);
	}
}

static void test_imap_mime_header_sections(void **state)
{
	(void)state;
	for (int crlf = 0; crlf < 2; crlf++) {
		parse(simple, crlf);
		expect_section("HEADER", simple_hdr);
		/* Case-insensitive names, folded lines kept, blank line. */
		expect_section("HEADER.FIELDS (CC \"from\")",
			       "From: Terry Gray <gray@cac.washington.edu>\n"
			       "cc: minutes@CNRI.Reston.VA.US,\n"
			       "\tJohn Klensin <KLENSIN@MIT.EDU>\n"
			       "\n");
		expect_section(
			"header.fields.not (Date From Subject To Cc "
			"Content-Type)",
			"Message-Id: <B27397-0100000@cac.washington.edu>\n"
			"MIME-Version: 1.0\n"
			"\n");
		/* Nothing matches: still the blank line. */
		expect_section("HEADER.FIELDS (X-None)", "\n");
		expect_section_err("HEADER.FIELDS ()", -EINVAL);
		expect_section_err("HEADER.FIELDS From", -EINVAL);
		expect_section_err("HEADER.FIELDS (From", -EINVAL);
	}
}

static void test_imap_mime_partial(void **state)
{
	(void)state;
	parse("Subject: x\n\nab\ncd\nef\n", false);
	/* As sent: "Subject: x\r\n\r\nab\r\ncd\r\nef\r\n" (26 octets). */
	expect_section_part("", 0, 10, "Subject: x");
	expect_section_part("", 10, 1, "\r");
	expect_section_part("", 11, 3, "\n\r\n");
	expect_section_part("", 13, 100, "\nab\r\ncd\r\nef\r\n");
	expect_section_part("", 26, 5, "");
	expect_section_part("", 24, 5, "\r\n");
	expect_section_part("", 500, 5, "");
	expect_section_part("TEXT", 3, 4, "\ncd\r");
	expect_section_part("TEXT", 0, UINT64_MAX, "ab\r\ncd\r\nef\r\n");
	expect_section_part("HEADER.FIELDS (subject)", 5, 100, "ct: x\r\n\r\n");
	/* CRLF input: the same bytes, the same windows. */
	parse("Subject: x\r\n\r\nab\r\ncd\r\nef\r\n", false);
	expect_section_part("", 11, 3, "\n\r\n");
	expect_section_part("TEXT", 3, 4, "\ncd\r");
	expect_section_part("1", 0, 0, "");
}

static void test_imap_mime_defaults(void **state)
{
	(void)state;
	/* No header at all, no Content-Type: text/plain us-ascii, NILs. */
	parse("\nbody\n", false);
	expect_env(0, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
	expect_body(true, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL "
			  "NIL \"7bit\" 6 1 NIL NIL NIL NIL)");
	expect_section("HEADER", "\n");
	expect_section("TEXT", "body\n");

	/* Header only, no blank line, no trailing newline. */
	parse("Subject: only", false);
	expect_env(0, "(NIL \"only\" NIL NIL NIL NIL NIL NIL NIL NIL)");
	expect_body(false, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") "
			   "NIL NIL \"7bit\" 0 0)");
	expect_section("HEADER", "Subject: only");
	expect_section("TEXT", "");

	/* Empty message. */
	parse("", false);
	expect_body(false, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") "
			   "NIL NIL \"7bit\" 0 0)");
	expect_section("", "");

	/* Non-text without subtype; text with parameters but no charset. */
	parse("Content-Type: application\n\nx", false);
	expect_body(false, "(\"application\" \"unknown\" NIL NIL NIL \"7bit\" "
			   "1)");
	parse("Content-Type: text/html; format=flowed\n"
	      "Content-Transfer-Encoding: quoted-printable\n\nx\n",
	      false);
	expect_body(false, "(\"text\" \"html\" (\"format\" \"flowed\" "
			   "\"charset\" \"us-ascii\") NIL NIL "
			   "\"quoted-printable\" 3 1)");
}

/* ---- multipart ---- */

static const char mixed[] =
	"From: a@example.com\n"
	"Subject: multi\n"
	"Content-Type: multipart/mixed; boundary=\"==outer==\"\n"
	"\n"
	"This is a multi-part message in MIME format.\n"
	"--==outer==\n"
	"Content-Type: multipart/alternative;\n"
	" boundary=\"==outer==-alt\"\n"
	"\n"
	"--==outer==-alt\n"
	"Content-Type: text/plain; charset=utf-8\n"
	"Content-Transfer-Encoding: quoted-printable\n"
	"\n"
	"Caf=C3=A9 au lait=\n"
	" please\n"
	"\n"
	"--==outer==-alt\n"
	"Content-Type: text/html; charset=utf-8\n"
	"\n"
	"<p>Caf\xc3\xa9</p>\n"
	"\n"
	"--==outer==-alt--\n"
	"\n"
	"--==outer==\n"
	"Content-Type: application/pdf; name=\"report.pdf\"\n"
	"Content-Disposition: attachment; filename=\"report.pdf\";\n"
	" size=12\n"
	"Content-Transfer-Encoding: base64\n"
	"Content-ID: <part3@example.com>\n"
	"Content-Description: The \"report\"\n"
	"Content-Language: en, fr\n"
	"Content-Location: http://example.com/r.pdf\n"
	"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
	"\n"
	"JVBERi0xLjQK\n"
	"aGVsbG8=\n"
	"--==outer==--\n"
	"epilogue\n";

static void test_imap_mime_multipart(void **state)
{
	(void)state;
	for (int crlf = 0; crlf < 2; crlf++) {
		parse(mixed, crlf);
		assert_int_equal(msg.nparts, 5);
		expect_body(
			true,
			"(((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL "
			"NIL \"quoted-printable\" 29 2 NIL NIL NIL NIL)"
			"(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL "
			"\"7bit\" 14 1 NIL NIL NIL NIL) \"alternative\" "
			"(\"boundary\" \"==outer==-alt\") NIL NIL NIL)"
			"(\"application\" \"pdf\" (\"name\" \"report.pdf\") "
			"\"<part3@example.com>\" \"The \\\"report\\\"\" "
			"\"base64\" 22 \"Q2hlY2sgSW50ZWdyaXR5IQ==\" "
			"(\"attachment\" (\"filename\" \"report.pdf\" "
			"\"size\" \"12\")) (\"en\" \"fr\") "
			"\"http://example.com/r.pdf\") \"mixed\" "
			"(\"boundary\" \"==outer==\") NIL NIL NIL)");
		expect_body(
			false,
			"(((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL "
			"NIL \"quoted-printable\" 29 2)"
			"(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL "
			"\"7bit\" 14 1) \"alternative\")"
			"(\"application\" \"pdf\" (\"name\" \"report.pdf\") "
			"\"<part3@example.com>\" \"The \\\"report\\\"\" "
			"\"base64\" 22) \"mixed\")");
		expect_section("1.1", "Caf=C3=A9 au lait=\n please\n");
		expect_section("1.2", "<p>Caf\xc3\xa9</p>\n");
		expect_section("1.2.MIME",
			       "Content-Type: text/html; charset=utf-8\n\n");
		expect_section("2", "JVBERi0xLjQK\naGVsbG8=");
		expect_section("1", "--==outer==-alt\n"
				    "Content-Type: text/plain; charset=utf-8\n"
				    "Content-Transfer-Encoding: "
				    "quoted-printable\n"
				    "\n"
				    "Caf=C3=A9 au lait=\n"
				    " please\n"
				    "\n"
				    "--==outer==-alt\n"
				    "Content-Type: text/html; charset=utf-8\n"
				    "\n"
				    "<p>Caf\xc3\xa9</p>\n"
				    "\n"
				    "--==outer==-alt--\n");
		expect_section_err("3", -ENOENT);
		expect_section_err("1.3", -ENOENT);
		/* "2.1" of a leaf is the leaf, once (as Dovecot reads it). */
		expect_section("2.1", "JVBERi0xLjQK\naGVsbG8=");
		expect_section("1.2.1.MIME",
			       "Content-Type: text/html; charset=utf-8\n\n");
		expect_section_err("2.1.1", -ENOENT);
		expect_section_err("1.HEADER", -ENOENT);
		expect_section_err("1.TEXT", -ENOENT);
	}
}

static void test_imap_mime_multipart_broken(void **state)
{
	(void)state;
	/* Missing close delimiter: the last part runs to the end. */
	parse("Content-Type: multipart/mixed; boundary=b\n\n"
	      "--b\n\none\n--b\nContent-Type: text/x-foo\n\ntwo\n",
	      false);
	expect_body(false, "((\"text\" \"plain\" (\"charset\" \"us-ascii\") "
			   "NIL NIL \"7bit\" 3 0)(\"text\" \"x-foo\" "
			   "(\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 1) "
			   "\"mixed\")");
	expect_section("2", "two\n");

	/* No boundary at all: an empty multipart, as Dovecot writes it. */
	parse("Content-Type: multipart/mixed; boundary=zz\n\nno parts\n",
	      false);
	expect_body(true, "((\"text\" \"plain\" (\"charset\" \"us-ascii\") "
			  "NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) \"mixed\" "
			  "(\"boundary\" \"zz\") NIL NIL NIL)");
	expect_section_err("1", -ENOENT);

	/* Without a boundary parameter: no parts either (Dovecot too). */
	parse("Content-Type: multipart/mixed\n\n--x\n\nbody\n", false);
	expect_body(true, "((\"text\" \"plain\" (\"charset\" \"us-ascii\") "
			  "NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) \"mixed\" NIL "
			  "NIL NIL NIL)");

	/* "--b" inside "--bb" lines, trailing blanks, empty parts. */
	parse("Content-Type: multipart/mixed; boundary=b\n\n"
	      "--bb\n--b \t\n\n--b\n--b--junk\nepilogue\n--b\n\nlost\n",
	      false);
	expect_body(false, "((\"text\" \"plain\" (\"charset\" \"us-ascii\") "
			   "NIL NIL \"7bit\" 0 0)(\"text\" \"plain\" "
			   "(\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0) "
			   "\"mixed\")");

	/* Boundary at the very start of the body; CR LF before it. */
	parse("Content-Type: multipart/related; boundary=\"q\\\"x\"\n\n"
	      "--q\"x\r\n\r\nA\r\n--q\"x--\r\n",
	      false);
	expect_body(false, "((\"text\" \"plain\" (\"charset\" \"us-ascii\") "
			   "NIL NIL \"7bit\" 1 0) \"related\")");
	expect_section("1", "A");
}

static void test_imap_mime_digest(void **state)
{
	(void)state;
	/* RFC 2046 §5.1.5: parts of a digest default to message/rfc822. */
	parse("Content-Type: multipart/digest; boundary=d\n\n"
	      "--d\n\nFrom: x@y\nSubject: one\n\nbody one\n"
	      "--d\nContent-Type: text/plain\n\nnote\n--d--\n",
	      false);
	expect_body(false,
		    "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 35 "
		    "(NIL \"one\" ((NIL NIL \"x\" \"y\")) ((NIL NIL \"x\" "
		    "\"y\")) ((NIL NIL \"x\" \"y\")) NIL NIL NIL NIL NIL) "
		    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
		    "\"7bit\" 8 0) 3)(\"text\" \"plain\" (\"charset\" "
		    "\"us-ascii\") NIL NIL \"7bit\" 4 0) \"digest\")");
	expect_section("1.HEADER", "From: x@y\nSubject: one\n\n");
	expect_section("1.TEXT", "body one");
	expect_section("1.1", "body one");
}

/* A Postfix bounce: multipart/report, message/delivery-status (no line
 * count: not text), text/rfc822-headers (text: default charset). */
static const char bounce[] =
	"Return-Path: <>\n"
	"Date: Mon, 7 Dec 2026 10:00:00 +0100\n"
	"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\n"
	"To: alice@example.org\n"
	"Subject: Undelivered Mail Returned to Sender\n"
	"Auto-Submitted: auto-replied\n"
	"MIME-Version: 1.0\n"
	"Content-Type: multipart/report; report-type=delivery-status;\n"
	"\tboundary=\"4F1C2A.1701.mx\"\n"
	"Message-Id: <20261207090000.4F1C2A@mx.example.org>\n"
	"\n"
	"This is a MIME-encapsulated message.\n"
	"\n"
	"--4F1C2A.1701.mx\n"
	"Content-Description: Notification\n"
	"Content-Type: text/plain; charset=us-ascii\n"
	"\n"
	"I am sorry.\n"
	"\n"
	"--4F1C2A.1701.mx\n"
	"Content-Description: Delivery report\n"
	"Content-Type: message/delivery-status\n"
	"\n"
	"Reporting-MTA: dns; mx.example.org\n"
	"\n"
	"Final-Recipient: rfc822; bob@example.net\n"
	"Action: failed\n"
	"\n"
	"--4F1C2A.1701.mx\n"
	"Content-Description: Undelivered Message Headers\n"
	"Content-Type: text/rfc822-headers\n"
	"\n"
	"From: alice@example.org\n"
	"Subject: hi\n"
	"\n"
	"--4F1C2A.1701.mx--\n";

static void test_imap_mime_bounce(void **state)
{
	(void)state;
	for (int crlf = 0; crlf < 2; crlf++) {
		parse(bounce, crlf);
		expect_env(0,
			   "(\"Mon, 7 Dec 2026 10:00:00 +0100\" "
			   "\"Undelivered Mail Returned to Sender\" "
			   "((\"Mail Delivery System\" NIL \"MAILER-DAEMON\" "
			   "\"mx.example.org\")) ((\"Mail Delivery System\" "
			   "NIL \"MAILER-DAEMON\" \"mx.example.org\")) "
			   "((\"Mail Delivery System\" NIL \"MAILER-DAEMON\" "
			   "\"mx.example.org\")) ((NIL NIL \"alice\" "
			   "\"example.org\")) NIL NIL NIL "
			   "\"<20261207090000.4F1C2A@mx.example.org>\")");
		expect_body(
			true,
			"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL "
			"\"Notification\" \"7bit\" 13 1 NIL NIL NIL NIL)"
			"(\"message\" \"delivery-status\" NIL NIL "
			"\"Delivery report\" \"7bit\" 96 NIL NIL NIL NIL)"
			"(\"text\" \"rfc822-headers\" (\"charset\" "
			"\"us-ascii\") NIL \"Undelivered Message Headers\" "
			"\"7bit\" 38 2 NIL NIL NIL NIL) \"report\" "
			"(\"report-type\" \"delivery-status\" \"boundary\" "
			"\"4F1C2A.1701.mx\") NIL NIL NIL)");
		expect_section("3", "From: alice@example.org\nSubject: hi\n");
		expect_section("1", "I am sorry.\n");
	}
}

/* Thunderbird: alternative of text and related (HTML, inline image). */
static const char thunderbird[] =
	"Message-ID: <5f3e1c2a-1111-2222-3333-444455556666@example.com>\n"
	"Date: Sun, 6 Dec 2026 18:04:11 +0100\n"
	"MIME-Version: 1.0\n"
	"User-Agent: Mozilla Thunderbird\n"
	"Content-Language: en-US\n"
	"To: Bob <bob@example.net>\n"
	"From: Alice <alice@example.com>\n"
	"Subject: Photo\n"
	"Content-Type: multipart/alternative;\n"
	" boundary=\"------------Ab12Cd34Ef56\"\n"
	"\n"
	"This is a multi-part message in MIME format.\n"
	"--------------Ab12Cd34Ef56\n"
	"Content-Type: text/plain; charset=UTF-8; format=flowed\n"
	"Content-Transfer-Encoding: 7bit\n"
	"\n"
	"Here it is: \n"
	"the photo.\n"
	"\n"
	"--------------Ab12Cd34Ef56\n"
	"Content-Type: multipart/related;\n"
	" boundary=\"------------Zz98Yy76\"\n"
	"\n"
	"--------------Zz98Yy76\n"
	"Content-Type: text/html; charset=UTF-8\n"
	"Content-Transfer-Encoding: 7bit\n"
	"\n"
	"<html><body><img src=\"cid:part1.abc@example.com\"></body></html>\n"
	"\n"
	"--------------Zz98Yy76\n"
	"Content-Type: image/png; name=\"dot.png\"\n"
	"Content-Disposition: inline; filename=\"dot.png\"\n"
	"Content-Id: <part1.abc@example.com>\n"
	"Content-Transfer-Encoding: base64\n"
	"\n"
	"iVBORw0KGgo=\n"
	"\n"
	"--------------Zz98Yy76--\n"
	"\n"
	"--------------Ab12Cd34Ef56--\n";

static void test_imap_mime_thunderbird(void **state)
{
	(void)state;
	for (int crlf = 0; crlf < 2; crlf++) {
		parse(thunderbird, crlf);
		expect_body(
			true,
			"((\"text\" \"plain\" (\"charset\" \"UTF-8\" \"format\" "
			"\"flowed\") NIL NIL \"7bit\" 26 2 NIL NIL NIL NIL)"
			"((\"text\" \"html\" (\"charset\" \"UTF-8\") NIL NIL "
			"\"7bit\" 65 1 NIL NIL NIL NIL)(\"image\" \"png\" "
			"(\"name\" \"dot.png\") \"<part1.abc@example.com>\" NIL "
			"\"base64\" 14 NIL (\"inline\" (\"filename\" "
			"\"dot.png\")) NIL NIL) \"related\" (\"boundary\" "
			"\"------------Zz98Yy76\") NIL NIL NIL) \"alternative\" "
			"(\"boundary\" \"------------Ab12Cd34Ef56\") NIL "
			"(\"en-US\") NIL)");
		expect_section("2.2", "iVBORw0KGgo=\n");
		expect_section("2.2.MIME",
			       "Content-Type: image/png; name=\"dot.png\"\n"
			       "Content-Disposition: inline; "
			       "filename=\"dot.png\"\n"
			       "Content-Id: <part1.abc@example.com>\n"
			       "Content-Transfer-Encoding: base64\n\n");
		expect_section("1", "Here it is: \nthe photo.\n");
		expect_binary(4, false, "\x89PNG\r\n\x1a\n", 8);
	}
}

/*
 * Real-world shapes (Outlook, Apple Mail, a Mailman digest): expected
 * strings are what Dovecot 2.3.19 answers (doveadm fetch imap.envelope,
 * imap.bodystructure, imap.body) for the same bytes.
 */
static const char outlook_msg[] =
	"From: \"Smith, John\" <John.Smith@corp.example>\r\n"
	"To: \"Doe, Jane\" <jane@corp.example>\r\n"
	"Subject: RE: Budget\r\n"
	"Thread-Topic: Budget\r\n"
	"Date: Fri, 4 Dec 2026 14:02:11 +0000\r\n"
	"Message-ID: <AM0PR01MB1234ABCD@AM0PR01MB1234.eurprd01.prod.outlook.com>\r\n"
	"In-Reply-To: <AM0PR01MB9999@x.outlook.com>\r\n"
	"Content-Language: en-GB\r\n"
	"Content-Type: multipart/mixed;\r\n"
	"\tboundary=\"_004_AM0PR01MB1234_\"\r\n"
	"MIME-Version: 1.0\r\n"
	"\r\n"
	"--_004_AM0PR01MB1234_\r\n"
	"Content-Type: multipart/alternative;\r\n"
	"\tboundary=\"_000_AM0PR01MB1234_\"\r\n"
	"\r\n"
	"--_000_AM0PR01MB1234_\r\n"
	"Content-Type: text/plain; charset=\"iso-8859-1\"\r\n"
	"Content-Transfer-Encoding: quoted-printable\r\n"
	"\r\n"
	"See attached=2E\r\n"
	"\r\n"
	"--_000_AM0PR01MB1234_\r\n"
	"Content-Type: text/html; charset=\"iso-8859-1\"\r\n"
	"Content-Transfer-Encoding: quoted-printable\r\n"
	"\r\n"
	"<html><body>See attached.</body></html>\r\n"
	"\r\n"
	"--_000_AM0PR01MB1234_--\r\n"
	"\r\n"
	"--_004_AM0PR01MB1234_\r\n"
	"Content-Type: application/vnd.openxmlformats-officedocument.spreadsheetml.sheet;\r\n"
	"\tname=\"Budget 2027.xlsx\"\r\n"
	"Content-Description: Budget 2027.xlsx\r\n"
	"Content-Disposition: attachment; filename=\"Budget 2027.xlsx\"; size=10;\r\n"
	"\tcreation-date=\"Fri, 04 Dec 2026 14:01:00 GMT\";\r\n"
	"\tmodification-date=\"Fri, 04 Dec 2026 14:01:00 GMT\"\r\n"
	"Content-Transfer-Encoding: base64\r\n"
	"\r\n"
	"UEsDBBQABgAI\r\n"
	"\r\n"
	"--_004_AM0PR01MB1234_--\r\n";

static void test_imap_mime_dovecot_outlook(void **state)
{
	(void)state;
	for (int crlf = 0; crlf < 2; crlf++) {
		parse(outlook_msg, crlf);
		expect_env(
			0,
			"(\"Fri, 4 Dec 2026 14:02:11 +0000\" \"RE: Budget\" ((\"Smith"
			", John\" NIL \"John.Smith\" \"corp.example\")) ((\"Smith, Jo"
			"hn\" NIL \"John.Smith\" \"corp.example\")) ((\"Smith, John\""
			" NIL \"John.Smith\" \"corp.example\")) ((\"Doe, Jane\" NIL \""
			"jane\" \"corp.example\")) NIL NIL \"<AM0PR01MB9999@x.outlook"
			".com>\" \"<AM0PR01MB1234ABCD@AM0PR01MB1234.eurprd01.prod.out"
			"look.com>\")");
		expect_body(
			true,
			"(((\"text\" \"plain\" (\"charset\" \"iso-8859-1\") NIL NIL \""
			"quoted-printable\" 17 1 NIL NIL NIL NIL)(\"text\" \"html\" ("
			"\"charset\" \"iso-8859-1\") NIL NIL \"quoted-printable\" 41 "
			"1 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"_000_AM0P"
			"R01MB1234_\") NIL NIL NIL)(\"application\" \"vnd.openxmlform"
			"ats-officedocument.spreadsheetml.sheet\" (\"name\" \"Budget "
			"2027.xlsx\") NIL \"Budget 2027.xlsx\" \"base64\" 14 NIL (\"a"
			"ttachment\" (\"filename\" \"Budget 2027.xlsx\" \"size\" \"10"
			"\" \"creation-date\" \"Fri, 04 Dec 2026 14:01:00 GMT\" \"mod"
			"ification-date\" \"Fri, 04 Dec 2026 14:01:00 GMT\")) NIL NIL"
			") \"mixed\" (\"boundary\" \"_004_AM0PR01MB1234_\") NIL (\"en"
			"-GB\") NIL)");
		expect_body(
			false,
			"(((\"text\" \"plain\" (\"charset\" \"iso-8859-1\") NIL NIL \""
			"quoted-printable\" 17 1)(\"text\" \"html\" (\"charset\" \"is"
			"o-8859-1\") NIL NIL \"quoted-printable\" 41 1) \"alternative"
			"\")(\"application\" \"vnd.openxmlformats-officedocument.spre"
			"adsheetml.sheet\" (\"name\" \"Budget 2027.xlsx\") NIL \"Budg"
			"et 2027.xlsx\" \"base64\" 14) \"mixed\")");
	}
}

static const char apple_msg[] =
	"From: Ann <ann@icloud.example>\n"
	"Content-Type: multipart/alternative;\n"
	"\tboundary=\"Apple-Mail=_11111111-2222\"\n"
	"Mime-Version: 1.0 (Mac OS X Mail 16.0 \\(3731.500.231\\))\n"
	"Subject: Lunch?\n"
	"Date: Sat, 5 Dec 2026 11:00:00 +0100\n"
	"Message-Id: <AAAA-BBBB@icloud.example>\n"
	"To: Bob <bob@example.net>\n"
	"\n"
	"\n"
	"--Apple-Mail=_11111111-2222\n"
	"Content-Transfer-Encoding: 7bit\n"
	"Content-Type: text/plain;\n"
	"\tcharset=us-ascii\n"
	"\n"
	"Noon?\n"
	"\n"
	"--Apple-Mail=_11111111-2222\n"
	"Content-Type: multipart/related;\n"
	"\ttype=\"text/html\";\n"
	"\tboundary=\"Apple-Mail=_33333333-4444\"\n"
	"\n"
	"\n"
	"--Apple-Mail=_33333333-4444\n"
	"Content-Transfer-Encoding: 7bit\n"
	"Content-Type: text/html;\n"
	"\tcharset=us-ascii\n"
	"\n"
	"<html>Noon?<img src=\"cid:X\"></html>\n"
	"--Apple-Mail=_33333333-4444\n"
	"Content-Transfer-Encoding: base64\n"
	"Content-Disposition: inline;\n"
	"\tfilename=sig.png\n"
	"Content-Type: image/png;\n"
	"\tx-unix-mode=0644;\n"
	"\tname=\"sig.png\"\n"
	"Content-Id: <X>\n"
	"\n"
	"iVBORw0KGgo=\n"
	"\n"
	"--Apple-Mail=_33333333-4444--\n"
	"\n"
	"--Apple-Mail=_11111111-2222--\n";

static void test_imap_mime_dovecot_apple(void **state)
{
	(void)state;
	for (int crlf = 0; crlf < 2; crlf++) {
		parse(apple_msg, crlf);
		expect_env(
			0,
			"(\"Sat, 5 Dec 2026 11:00:00 +0100\" \"Lunch?\" ((\"Ann\" NIL"
			" \"ann\" \"icloud.example\")) ((\"Ann\" NIL \"ann\" \"icloud"
			".example\")) ((\"Ann\" NIL \"ann\" \"icloud.example\")) ((\""
			"Bob\" NIL \"bob\" \"example.net\")) NIL NIL NIL \"<AAAA-BBBB"
			"@icloud.example>\")");
		expect_body(
			true,
			"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7b"
			"it\" 7 1 NIL NIL NIL NIL)((\"text\" \"html\" (\"charset\" \""
			"us-ascii\") NIL NIL \"7bit\" 35 0 NIL NIL NIL NIL)(\"image\""
			" \"png\" (\"x-unix-mode\" \"0644\" \"name\" \"sig.png\") \"<"
			"X>\" NIL \"base64\" 14 NIL (\"inline\" (\"filename\" \"sig.p"
			"ng\")) NIL NIL) \"related\" (\"type\" \"text/html\" \"bounda"
			"ry\" \"Apple-Mail=_33333333-4444\") NIL NIL NIL) \"alternati"
			"ve\" (\"boundary\" \"Apple-Mail=_11111111-2222\") NIL NIL NI"
			"L)");
		expect_body(
			false,
			"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7b"
			"it\" 7 1)((\"text\" \"html\" (\"charset\" \"us-ascii\") NIL "
			"NIL \"7bit\" 35 0)(\"image\" \"png\" (\"x-unix-mode\" \"0644"
			"\" \"name\" \"sig.png\") \"<X>\" NIL \"base64\" 14) \"relate"
			"d\") \"alternative\")");
	}
}

static const char listdigest_msg[] =
	"From: list-bounces@lists.example\n"
	"List-Id: <dev.lists.example>\n"
	"Subject: [dev] Digest, Vol 1, Issue 2\n"
	"MIME-Version: 1.0\n"
	"Content-Type: multipart/mixed; boundary=\"===============1==\"\n"
	"\n"
	"--===============1==\n"
	"Content-Type: text/plain; charset=\"us-ascii\"\n"
	"MIME-Version: 1.0\n"
	"Content-Transfer-Encoding: 7bit\n"
	"Content-Description: dev Digest, Vol 1, Issue 2\n"
	"\n"
	"Today's Topics:\n"
	"\n"
	"--===============1==\n"
	"Content-Type: multipart/digest; boundary=\"===============2==\"\n"
	"MIME-Version: 1.0\n"
	"\n"
	"--===============2==\n"
	"Content-Type: message/rfc822\n"
	"MIME-Version: 1.0\n"
	"\n"
	"From: a@b\n"
	"Subject: one\n"
	"Message-ID: <1@b>\n"
	"\n"
	"first\n"
	"\n"
	"--===============2==\n"
	"\n"
	"From: c@d\n"
	"Subject: two\n"
	"\n"
	"second\n"
	"\n"
	"--===============2==--\n"
	"\n"
	"--===============1==--\n";

static void test_imap_mime_dovecot_listdigest(void **state)
{
	(void)state;
	for (int crlf = 0; crlf < 2; crlf++) {
		parse(listdigest_msg, crlf);
		expect_env(
			0,
			"(NIL \"[dev] Digest, Vol 1, Issue 2\" ((NIL NIL \"list-bounc"
			"es\" \"lists.example\")) ((NIL NIL \"list-bounces\" \"lists."
			"example\")) ((NIL NIL \"list-bounces\" \"lists.example\")) N"
			"IL NIL NIL NIL NIL)");
		expect_body(
			true,
			"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL \"dev Di"
			"gest, Vol 1, Issue 2\" \"7bit\" 17 1 NIL NIL NIL NIL)((\"mes"
			"sage\" \"rfc822\" NIL NIL NIL \"7bit\" 53 (NIL \"one\" ((NIL"
			" NIL \"a\" \"b\")) ((NIL NIL \"a\" \"b\")) ((NIL NIL \"a\" \""
			"b\")) NIL NIL NIL NIL \"<1@b>\") (\"text\" \"plain\" (\"char"
			"set\" \"us-ascii\") NIL NIL \"7bit\" 7 1 NIL NIL NIL NIL) 5 "
			"NIL NIL NIL NIL)(\"message\" \"rfc822\" NIL NIL NIL \"7bit\""
			" 35 (NIL \"two\" ((NIL NIL \"c\" \"d\")) ((NIL NIL \"c\" \"d"
			"\")) ((NIL NIL \"c\" \"d\")) NIL NIL NIL NIL NIL) (\"text\" "
			"\"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 8 1 NI"
			"L NIL NIL NIL) 4 NIL NIL NIL NIL) \"digest\" (\"boundary\" \""
			"===============2==\") NIL NIL NIL) \"mixed\" (\"boundary\" \""
			"===============1==\") NIL NIL NIL)");
		expect_body(
			false,
			"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL \"dev Di"
			"gest, Vol 1, Issue 2\" \"7bit\" 17 1)((\"message\" \"rfc822\""
			" NIL NIL NIL \"7bit\" 53 (NIL \"one\" ((NIL NIL \"a\" \"b\")"
			") ((NIL NIL \"a\" \"b\")) ((NIL NIL \"a\" \"b\")) NIL NIL NI"
			"L NIL \"<1@b>\") (\"text\" \"plain\" (\"charset\" \"us-ascii"
			"\") NIL NIL \"7bit\" 7 1) 5)(\"message\" \"rfc822\" NIL NIL "
			"NIL \"7bit\" 35 (NIL \"two\" ((NIL NIL \"c\" \"d\")) ((NIL N"
			"IL \"c\" \"d\")) ((NIL NIL \"c\" \"d\")) NIL NIL NIL NIL NIL"
			") (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7"
			"bit\" 8 1) 4) \"digest\") \"mixed\")");
	}
}

/* ---- message/rfc822 ---- */

static const char forwarded[] =
	"From: Fwd <fwd@example.org>\n"
	"Subject: Fwd: hi\n"
	"Content-Type: multipart/mixed; boundary=o\n"
	"\n"
	"--o\n"
	"\n"
	"see below\n"
	"--o\n"
	"Content-Type: message/rfc822\n"
	"Content-Disposition: inline\n"
	"\n"
	"From: \"Orig, Sender\" <orig@example.net>\n"
	"To: undisclosed-recipients:;\n"
	"Subject: hi\n"
	"Message-ID: <1@example.net>\n"
	"In-Reply-To: <0@example.net>\n"
	"Content-Type: multipart/alternative; boundary=i\n"
	"\n"
	"--i\n"
	"\n"
	"plain\n"
	"--i\n"
	"Content-Type: text/html\n"
	"\n"
	"<b>html</b>\n"
	"--i--\n"
	"--o--\n";

static void test_imap_mime_rfc822(void **state)
{
	(void)state;
	for (int crlf = 0; crlf < 2; crlf++) {
		parse(forwarded, crlf);
		expect_body(true,
			    "((\"text\" \"plain\" (\"charset\" \"us-ascii\") "
			    "NIL NIL \"7bit\" 9 0 NIL NIL NIL NIL)"
			    "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 258 "
			    "(NIL \"hi\" ((\"Orig, Sender\" NIL \"orig\" "
			    "\"example.net\")) ((\"Orig, Sender\" NIL \"orig\" "
			    "\"example.net\")) ((\"Orig, Sender\" NIL \"orig\" "
			    "\"example.net\")) ((NIL NIL "
			    "\"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) "
			    "NIL NIL \"<0@example.net>\" \"<1@example.net>\") "
			    "((\"text\" \"plain\" (\"charset\" \"us-ascii\") "
			    "NIL NIL \"7bit\" 5 0 NIL NIL NIL NIL)(\"text\" "
			    "\"html\" (\"charset\" \"us-ascii\") NIL NIL "
			    "\"7bit\" 11 0 NIL NIL NIL NIL) \"alternative\" "
			    "(\"boundary\" \"i\") NIL NIL NIL) 14 NIL "
			    "(\"inline\" NIL) NIL NIL) \"mixed\" (\"boundary\" "
			    "\"o\") NIL NIL NIL)");
		expect_section("2.HEADER",
			       "From: \"Orig, Sender\" <orig@example.net>\n"
			       "To: undisclosed-recipients:;\n"
			       "Subject: hi\n"
			       "Message-ID: <1@example.net>\n"
			       "In-Reply-To: <0@example.net>\n"
			       "Content-Type: multipart/alternative; "
			       "boundary=i\n"
			       "\n");
		expect_section("2.HEADER.FIELDS (Subject)", "Subject: hi\n\n");
		expect_section("2.TEXT", "--i\n\nplain\n--i\nContent-Type: "
					 "text/html\n\n<b>html</b>\n--i--");
		expect_section("2.1", "plain");
		expect_section("2.2", "<b>html</b>");
		expect_section("2.2.MIME", "Content-Type: text/html\n\n");
		expect_section("2.MIME", "Content-Type: message/rfc822\n"
					 "Content-Disposition: inline\n\n");
		{
			struct imap_mime_section a, h, t;

			assert_int_equal(
				imap_mime_section_find(&msg, "2", 1, &a), 0);
			assert_int_equal(
				imap_mime_section_find(&msg, "2.HEADER", 8, &h),
				0);
			assert_int_equal(
				imap_mime_section_find(&msg, "2.TEXT", 6, &t),
				0);
			assert_int_equal(a.size, 258);
			assert_int_equal(h.size + t.size, a.size);
		}
		expect_section_err("2.3", -ENOENT);
		expect_section("2.1.1", "plain");
		expect_section_err("2.1.1.1", -ENOENT);
		expect_env(msg.part[2].child,
			   "(NIL \"hi\" ((\"Orig, Sender\" NIL \"orig\" "
			   "\"example.net\")) ((\"Orig, Sender\" NIL \"orig\" "
			   "\"example.net\")) ((\"Orig, Sender\" NIL \"orig\" "
			   "\"example.net\")) ((NIL NIL "
			   "\"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) "
			   "NIL NIL \"<0@example.net>\" \"<1@example.net>\")");
		{
			struct buf b = BUF_INITIALIZER;

			assert_int_equal(imap_mime_envelope(&msg, 1, &b),
					 -EINVAL);
			free(b.s);
		}
	}
}

static void test_imap_mime_rfc822_single(void **state)
{
	(void)state;
	/* A whole message that is message/rfc822: 1 is the inner message. */
	parse("Content-Type: message/rfc822\n\nSubject: in\n\ninner\n", false);
	expect_body(false, "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 22 "
			   "(NIL \"in\" NIL NIL NIL NIL NIL NIL NIL NIL) "
			   "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL "
			   "NIL \"7bit\" 7 1) 3)");
	expect_section("1", "Subject: in\n\ninner\n");
	expect_section("1.HEADER", "Subject: in\n\n");
	expect_section("1.TEXT", "inner\n");
	expect_section("1.1", "inner\n");

	/*
	 * Encoded message/rfc822 (RFC 2046 forbids it) is parsed as it
	 * stands: a header with no field, an empty body (Dovecot's answer).
	 */
	parse("Content-Type: message/rfc822\n"
	      "Content-Transfer-Encoding: base64\n\nU3ViamVjdDogeA==\n",
	      false);
	expect_body(false,
		    "(\"message\" \"rfc822\" NIL NIL NIL \"base64\" 18 "
		    "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" "
		    "\"plain\" (\"charset\" \"us-ascii\") NIL NIL "
		    "\"7bit\" 0 0) 1)");

	/* message/global: a basic body (IMAP4rev1's grammar), sections
	 * inside it all the same. */
	parse("Content-Type: message/global\n\nSubject: g\n\nx\n", false);
	expect_body(false, "(\"message\" \"global\" NIL NIL NIL \"7bit\" 17)");
	expect_section("1.HEADER", "Subject: g\n\n");
	expect_section("1.1", "x\n");
}

static void test_imap_mime_depth(void **state)
{
	struct buf b = BUF_INITIALIZER;
	char *s = malloc(64 * 40 + 16), *p = s;

	(void)state;
	assert_non_null(s);
	for (int i = 0; i < 40; i++)
		p += sprintf(p, "Content-Type: message/rfc822\n\n");
	memcpy(p, "x\n", 3);
	imap_mime_parse(&msg, s, strlen(s));
	assert_true(msg.truncated);
	assert_int_equal(msg.nparts, IMAP_MIME_MAX_DEPTH + 1);
	assert_int_equal(imap_mime_bodystructure(&msg, 0, true, &b), 0);
	/* The deepest part is opaque: 32 envelopes, no more. */
	assert_non_null(strstr(b.s, "\"application\" \"octet-stream\""));
	free(b.s);
	free(s);
}

static void test_imap_mime_many_parts(void **state)
{
	struct buf b = BUF_INITIALIZER;
	char *s = malloc(20 * 400 + 100), *p = s;
	struct imap_mime_section sec;

	(void)state;
	assert_non_null(s);
	p += sprintf(p, "Content-Type: multipart/mixed; boundary=b\n\n");
	for (int i = 0; i < 400; i++)
		p += sprintf(p, "--b\n\n%d\n", i);
	imap_mime_parse(&msg, s, strlen(s));
	assert_true(msg.truncated);
	assert_int_equal(msg.nparts, IMAP_MIME_MAX_PARTS);
	assert_int_equal(imap_mime_bodystructure(&msg, 0, false, &b), 0);
	assert_int_equal(imap_mime_section_find(&msg, "255", 3, &sec), 0);
	assert_int_equal(imap_mime_section_find(&msg, "256", 3, &sec), -ENOENT);
	free(b.s);
	free(s);
}

static void test_imap_mime_mixed_line_ends(void **state)
{
	static const char m[] = "Subject : obs\r\nFrom: a@b\n"
				"X-Long:\r\n folded\n\r\nbody\nline2\r\n";
	struct buf b = BUF_INITIALIZER;
	char *subject = malloc(1100 + 20);

	(void)state;
	parse(m, false);
	/* Two bare LFs: two more octets than stored. */
	assert_int_equal(imap_mime_crlf_len(msg.base, 0, msg.len),
			 strlen(m) + 3);
	expect_section("HEADER", "Subject : obs\r\nFrom: a@b\n"
				 "X-Long:\r\n folded\n\r\n");
	expect_section("HEADER.FIELDS (SUBJECT x-long)",
		       "Subject : obs\r\nX-Long:\r\n folded\n\n");
	expect_section("TEXT", "body\nline2\r\n");
	expect_env(0, "(NIL \"obs\" ((NIL NIL \"a\" \"b\")) ((NIL NIL \"a\" "
		      "\"b\")) ((NIL NIL \"a\" \"b\")) NIL NIL NIL NIL NIL)");
	expect_body(false, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") "
			   "NIL NIL \"7bit\" 13 2)");

	/* A subject of 1100 bytes goes out as a literal. */
	assert_non_null(subject);
	(void)snprintf(subject, 10, "Subject: ");
	memset(subject + 9, 'x', 1100);
	memcpy(subject + 1109, "\n\n", 3);
	parse(subject, false);
	assert_int_equal(imap_mime_envelope(&msg, 0, &b), 0);
	assert_true(b.len > 20);
	assert_memory_equal(b.s, "(NIL {1100}\r\nxxx", 16);
	assert_memory_equal(b.s + 13 + 1100, " NIL NIL", 8);
	free(b.s);
	free(subject);
}

/* ---- addresses ---- */

static void expect_from(const char *from, const char *want)
{
	char m[2048];
	struct buf b = BUF_INITIALIZER;
	const char *p;

	(void)snprintf(m, sizeof(m), "From: %s\n\n", from);
	parse(m, false);
	assert_int_equal(imap_mime_envelope(&msg, 0, &b), 0);
	/* The From list: after "NIL NIL " (no Date, no Subject). */
	assert_true(b.len > 8);
	p = b.s + 9;
	if (strncmp(p, want, strlen(want)) != 0 || p[strlen(want)] != ' ')
		fail_msg("From: %s\ngot  %.*s\nwant %s", from, (int)(b.len - 9),
			 p, want);
	free(b.s);
}

static void test_imap_mime_addresses(void **state)
{
	(void)state;
	expect_from("a@b", "((NIL NIL \"a\" \"b\"))");
	expect_from("<a@b>", "((NIL NIL \"a\" \"b\"))");
	expect_from("John Q. Public <JQP@x.example>",
		    "((\"John Q. Public\" NIL \"JQP\" \"x.example\"))");
	/* Names with quotes go out as literals (Dovecot, Cyrus). */
	expect_from("\"Joe \\\"Q\\\" Doe\" <j@x>",
		    "(({11}\r\nJoe \"Q\" Doe NIL \"j\" \"x\"))");
	expect_from("a@b (c\\\"d)", "(({3}\r\nc\"d NIL \"a\" \"b\"))");
	expect_from("\"\" <a@b>", "((NIL NIL \"a\" \"b\"))");
	expect_from("a@b c@d", "((NIL NIL \"a\" \"b\"))");
	expect_from("Name <broken, c@d", "((\"Name\" NIL \"broken\" "
					 "\"SYNTAX_ERROR\")(NIL NIL \"c\" "
					 "\"d\"))");
	expect_from("\"john doe\"@example.com",
		    "((NIL NIL \"john doe\" \"example.com\"))");
	expect_from("pete(his account)@silly.test(his host)",
		    "((\"his host\" NIL \"pete\" \"silly.test\"))");
	expect_from("a@b (Real Name)", "((\"Real Name\" NIL \"a\" \"b\"))");
	expect_from("Mary Smith <mary@x.test>, jdoe@example.org, Who? "
		    "<one@y.test>",
		    "((\"Mary Smith\" NIL \"mary\" \"x.test\")(NIL NIL "
		    "\"jdoe\" \"example.org\")(\"Who?\" NIL \"one\" "
		    "\"y.test\"))");
	expect_from("A Group:Ed Jones <c@a.test>,joe@where.test,John "
		    "<jdoe@one.test>;",
		    "((NIL NIL \"A Group\" NIL)(\"Ed Jones\" NIL \"c\" "
		    "\"a.test\")(NIL NIL \"joe\" \"where.test\")(\"John\" NIL "
		    "\"jdoe\" \"one.test\")(NIL NIL NIL NIL))");
	expect_from("Undisclosed recipients:;",
		    "((NIL NIL \"Undisclosed recipients\" NIL)"
		    "(NIL NIL NIL NIL))");
	expect_from("<@a.test,@b.test:joe@c.test>",
		    "((NIL \"@a.test,@b.test\" \"joe\" \"c.test\"))");
	expect_from("=?utf-8?q?J=C3=B6rg?= <j@x>",
		    "((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"j\" \"x\"))");
	expect_from("joe@[192.0.2.1]", "((NIL NIL \"joe\" \"[192.0.2.1]\"))");
	expect_from("\"folded\n name\" <f@x>",
		    "((\"folded name\" NIL \"f\" \"x\"))");
	/* Broken input: still addresses, never NIL hosts for mailboxes. */
	expect_from("justaname",
		    "((NIL NIL \"justaname\" \"MISSING_DOMAIN\"))");
	expect_from("@nolocal", "((NIL NIL \"MISSING_MAILBOX\" \"nolocal\"))");
	expect_from("Name <broken", "((\"Name\" NIL \"broken\" "
				    "\"SYNTAX_ERROR\"))");
	expect_from(", , a@b,,", "((NIL NIL \"a\" \"b\"))");
	expect_from("<>", "((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\"))");
	expect_from("", "NIL");
	expect_from("G: a@b", "((NIL NIL \"G\" NIL)(NIL NIL \"a\" \"b\")"
			      "(NIL NIL NIL NIL))");
	/* An unclosed quote runs to the end: no local part (Dovecot). */
	expect_from("\"unterminated <x@y>",
		    "((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\"))");
	expect_from("\"unterminated name <x@y>",
		    "((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\"))");
	expect_from("B\xc3\xa4r <b@x>",
		    "(({4}\r\nB\xc3\xa4r NIL \"b\" \"x\"))");
}

static void test_imap_mime_envelope_fields(void **state)
{
	(void)state;
	/* Empty Sender and Reply-To take From (RFC 3501 §7.4.2). */
	parse("From: f@x\nSender:\nReply-To: r@x\nTo: t@x\nBcc: b@x\n"
	      "Subject: =?iso-8859-1?q?caf=E9?=  \n"
	      "Message-ID:\n <folded@x>\n\n",
	      false);
	expect_env(0,
		   "(NIL \"=?iso-8859-1?q?caf=E9?=\" ((NIL NIL \"f\" \"x\")) "
		   "((NIL NIL \"f\" \"x\")) ((NIL NIL \"r\" \"x\")) "
		   "((NIL NIL \"t\" \"x\")) NIL ((NIL NIL \"b\" \"x\")) "
		   "NIL \" <folded@x>\")");
	/*
	 * Quotes and backslashes: escaped in most strings, a literal for
	 * the subject and names (as Dovecot sends them); 8-bit: literal.
	 * Blanks after the colon go, trailing ones stay (Dovecot's rule)
	 * except in the subject.
	 */
	parse("Subject: say \"hi\" \\o/ \nIn-Reply-To: caf\xc3\xa9\n"
	      "Message-ID: <a\"b\\c@x>  \n\n",
	      false);
	expect_env(0, "(NIL {12}\r\nsay \"hi\" \\o/ NIL NIL NIL NIL NIL NIL "
		      "{5}\r\ncaf\xc3\xa9 \"<a\\\"b\\\\c@x>  \")");
	/* The first of repeated fields counts; an empty Subject is "". */
	parse("Subject:\nSubject: second\n\n", false);
	expect_env(0, "(NIL \"\" NIL NIL NIL NIL NIL NIL NIL NIL)");
}

static void test_imap_mime_params(void **state)
{
	(void)state;
	/* RFC 2231 continuations joined, after the plain parameters as
	 * Dovecot puts them; extended ones keep name*. */
	parse("Content-Type: application/x-stuff;\n"
	      " title*0*=us-ascii'en'This%20is%20even%20more%20;\n"
	      " title*1*=%2A%2A%2Afun%2A%2A%2A%20;\n"
	      " title*2=\"isn't it!\"; NAME=plain (comment);\n"
	      " junk; =novalue; x=\"a\\\\b\"\n"
	      "Content-Disposition: ATTACHMENT; filename*0=\"long\";"
	      " filename*1=\"name.txt\"\n\n",
	      false);
	expect_body(
		true,
		"(\"application\" \"x-stuff\" (\"NAME\" \"plain\" \"x\" "
		"\"a\\\\b\" \"title*\" \"us-ascii'en'This%20is%20even%20more"
		"%20%2A%2A%2Afun%2A%2A%2A%20isn't it!\") NIL NIL \"7bit\" 0 "
		"NIL (\"ATTACHMENT\" (\"filename\" \"longname.txt\")) NIL "
		"NIL)");
}

/* ---- search, dates, binary ---- */

static void test_imap_mime_search(void **state)
{
	size_t off, len;

	(void)state;
	parse(mixed, false);
	assert_int_equal(imap_mime_header_search(&msg, 0, "subject", "MULT", 4),
			 1);
	assert_int_equal(imap_mime_header_search(&msg, 0, "from", "multi", 5),
			 0);
	assert_int_equal(imap_mime_header_search(&msg, 0, NULL, "FROM: A@", 8),
			 1);
	assert_int_equal(imap_mime_header_search(&msg, 0, "Subject", "", 0), 1);
	assert_int_equal(imap_mime_header_search(&msg, 0, "X-None", "", 0), 0);
	/* QP decoded, soft line break joined, across chunks. */
	assert_int_equal(
		imap_mime_body_search(&msg, "caf\xc3\xa9 au laIT please", 20),
		1);
	assert_int_equal(imap_mime_body_search(&msg, "=C3", 3), 0);
	/* The base64 part is no text: not searched. */
	assert_int_equal(imap_mime_body_search(&msg, "hello", 5), 0);
	assert_int_equal(imap_mime_body_search(&msg, "<P>CAF", 6), 1);
	/* Folded header values are unfolded for search. */
	parse("Subject: abc\n def\n\nbase64 below\n", false);
	assert_int_equal(
		imap_mime_header_search(&msg, 0, "subject", "abc def", 7), 1);
	assert_int_equal(
		imap_mime_header_get(&msg, 0, "SUBJECT", 0, &off, &len), 0);
	assert_memory_equal(msg.base + off, " abc\n def", len);
	assert_int_equal(
		imap_mime_header_get(&msg, 0, "subject", 1, &off, &len),
		-ENOENT);
	{
		struct buf v = BUF_INITIALIZER;

		assert_int_equal(
			imap_mime_header_value(&msg, 0, "Subject", 0, &v), 0);
		assert_int_equal(v.len, 7);
		assert_memory_equal(v.s, "abc def", 7);
		free(v.s);
		assert_int_equal(
			imap_mime_header_value(&msg, 0, "Subject", 1, &v),
			-ENOENT);
	}
	/* RFC 2047: decoded, blanks between encoded words dropped. */
	parse("Subject: =?utf-8?q?caf=C3=A9_au?=\n =?UTF-8?B?IGxhaXQ=?= "
	      "=?x?q?broken ?= tail\nX-Empty:\n\n",
	      false);
	assert_int_equal(imap_mime_header_search(&msg, 0, "subject",
						 "caf\xc3\xa9 au lait ", 14),
			 1);
	assert_int_equal(imap_mime_header_search(&msg, 0, "subject",
						 "lait =?x?q?broken ?= TAIL",
						 25),
			 1);
	assert_int_equal(imap_mime_header_search(&msg, 0, "subject", "C3", 2),
			 0);
	assert_int_equal(imap_mime_header_search(&msg, 0, "x-empty", "", 0), 1);
	assert_int_equal(imap_mime_header_search(&msg, 0, "x-empty", " ", 1),
			 0);
	parse("Content-Transfer-Encoding: base64\n\naGVs\nbG8g\nd29y bGQ=\n",
	      false);
	assert_int_equal(imap_mime_body_search(&msg, "LO WOR", 6), 1);
	assert_int_equal(imap_mime_body_search(&msg, "aGVs", 4), 0);
	{
		static char big[IMAP_MIME_NEEDLE_MAX + 1];

		assert_int_equal(imap_mime_body_search(&msg, big, sizeof(big)),
				 -E2BIG);
	}
	/* KMP: a needle whose prefix repeats. */
	parse("\naaab aabaab\n", false);
	assert_int_equal(imap_mime_body_search(&msg, "aabaab", 6), 1);
	assert_int_equal(imap_mime_body_search(&msg, "aaaa", 4), 0);
}

static void expect_date(const char *s, long want, int want_zone)
{
	time_t t;
	int zone = 12345;

	assert_int_equal(imap_mime_date_parse(s, strlen(s), &t, &zone), 0);
	if ((long)t != want || zone != want_zone)
		fail_msg("%s: got %ld %d, want %ld %d", s, (long)t, zone, want,
			 want_zone);
}

static void test_imap_mime_dates(void **state)
{
	time_t t;

	(void)state;
	/* date -u -d '1996-07-17 09:23:25' +%s = 837595405 */
	expect_date("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)", 837595405, -420);
	expect_date("17 Jul 1996 09:23:25 +0000", 837595405, 0);
	expect_date(" 17 jul 96 09:23:25 GMT", 837595405, 0);
	expect_date("Wed,17 Jul 1996 05:23:25 EDT", 837595405, -240);
	expect_date("Thu, 1 Jan 1970 00:00 +0100", -3600, 60);
	expect_date("29 Feb 2024 23:59:60 +0000", 1709251200, 0);
	expect_date("1 Mar 2000 00:00:00 XYZ", 951868800, 0);
	expect_date("1 March 2000", 951868800, 0);
	expect_date("Sat, 1 Jan 05 12:00:00 +0000 (comment)", 1104580800, 0);
	assert_int_equal(imap_mime_date_parse("", 0, &t, NULL), -EINVAL);
	assert_int_equal(imap_mime_date_parse("32 Jan 2000", 11, &t, NULL),
			 -EINVAL);
	assert_int_equal(imap_mime_date_parse("1 Foo 2000", 10, &t, NULL),
			 -EINVAL);
	assert_int_equal(imap_mime_date_parse("1 Jan 2000 25:00", 16, &t, NULL),
			 -EINVAL);
	assert_int_equal(imap_mime_date_parse("1 Jan", 5, &t, NULL), -EINVAL);
	parse(simple, false);
	assert_int_equal(imap_mime_date(&msg, 0, &t, NULL), 0);
	assert_int_equal((long)t, 837595405);
	parse("\n", false);
	assert_int_equal(imap_mime_date(&msg, 0, &t, NULL), -ENOENT);
}

static void expect_bytes(const char *got, size_t gn, const char *want, size_t n)
{
	if (gn != n || (n > 0 && memcmp(got, want, n) != 0))
		fail_msg("got  %s\nwant %s", show(got, gn), show(want, n));
}

/*
 * BINARY of part idx (hdr: with its header) is want[0..n), and every
 * window of it (from each offset, 5 bytes and to the end) is the same
 * slice of it.
 */
static void expect_binary(int idx, bool hdr, const char *want, size_t n)
{
	struct buf b = BUF_INITIALIZER;
	uint64_t size = 0;

	assert_int_equal(imap_mime_binary_write(&msg, idx, hdr, 0, UINT64_MAX,
						imap_mime_buf_append, &b,
						&size),
			 0);
	expect_bytes(b.s, b.len, want, n);
	assert_int_equal(size, n);
	size = 0;
	assert_int_equal(imap_mime_binary_size(&msg, idx, hdr, &size), 0);
	assert_int_equal(size, n);
	for (size_t from = 0; from <= n; from++) {
		for (uint64_t count = 5; count != 0;
		     count = count == 5 ? UINT64_MAX : 0) {
			size_t len =
				n - from < count ? n - from : (size_t)count;

			b.len = 0;
			assert_int_equal(imap_mime_binary_write(
						 &msg, idx, hdr, from, count,
						 imap_mime_buf_append, &b,
						 NULL),
					 0);
			expect_bytes(b.s, b.len, want + from, len);
		}
	}
	free(b.s);
}

#define EXPECT_BINARY(idx, hdr, s) expect_binary(idx, hdr, s, sizeof(s) - 1)

/* mixed (above) as BINARY[] sends it. */
static const char mixed_binary[] =
	"From: a@example.com\r\n"
	"Subject: multi\r\n"
	"Content-Type: multipart/mixed; boundary=\"==outer==\"\r\n"
	"\r\n"
	"This is a multi-part message in MIME format.\r\n"
	"--==outer==\r\n"
	"Content-Type: multipart/alternative;\r\n"
	" boundary=\"==outer==-alt\"\r\n"
	"\r\n"
	"--==outer==-alt\r\n"
	"Content-Type: text/plain; charset=utf-8\r\n"
	"Content-Transfer-Encoding: binary\r\n"
	"\r\n"
	"Caf\xc3\xa9 au lait please\r\n"
	"\r\n"
	"--==outer==-alt\r\n"
	"Content-Type: text/html; charset=utf-8\r\n"
	"\r\n"
	"<p>Caf\xc3\xa9</p>\r\n"
	"\r\n"
	"--==outer==-alt--\r\n"
	"\r\n"
	"--==outer==\r\n"
	"Content-Type: application/pdf; name=\"report.pdf\"\r\n"
	"Content-Disposition: attachment; filename=\"report.pdf\";\r\n"
	" size=12\r\n"
	"Content-ID: <part3@example.com>\r\n"
	"Content-Description: The \"report\"\r\n"
	"Content-Language: en, fr\r\n"
	"Content-Location: http://example.com/r.pdf\r\n"
	"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
	"Content-Transfer-Encoding: binary\r\n"
	"\r\n"
	"%PDF-1.4\nhello"
	"\r\n"
	"--==outer==--\r\n"
	"epilogue\r\n";

static void test_imap_mime_binary(void **state)
{
	const char *alt = strstr(mixed_binary, "--==outer==-alt\r\n");
	const char *alt_end = strstr(mixed_binary, "--==outer==-alt--\r\n");

	(void)state;
	for (int crlf = 0; crlf < 2; crlf++) {
		parse(mixed, crlf);
		/* Part 1.1 (QP), 1.2 (identity: CRLF), 2 (base64). */
		EXPECT_BINARY(2, false, "Caf\xc3\xa9 au lait please\r\n");
		EXPECT_BINARY(3, false, "<p>Caf\xc3\xa9</p>\r\n");
		EXPECT_BINARY(4, false, "%PDF-1.4\nhello");
		/* BINARY[]: the whole message, each decoded part's CTE
		 * field replaced by "binary" (RFC 9051 6.4.5, Dovecot). */
		EXPECT_BINARY(0, true, mixed_binary);
		/* BINARY[1] of a multipart part: its body (as BODY[1], up
		 * to the line break before the outer boundary), decoded. */
		expect_binary(1, false, alt,
			      (size_t)(alt_end - alt) +
				      strlen("--==outer==-alt--\r\n"));
	}
	assert_int_equal(imap_mime_binary_write(&msg, 5, false, 0, UINT64_MAX,
						imap_mime_buf_append, NULL,
						NULL),
			 -EINVAL);
	assert_int_equal(imap_mime_binary_write(&msg, -1, true, 0, UINT64_MAX,
						imap_mime_buf_append, NULL,
						NULL),
			 -EINVAL);

	/* A single part: BINARY[1] is the body, BINARY[] adds the header. */
	parse("Subject: q\n"
	      "Content-Transfer-Encoding: Quoted-Printable\n"
	      "X-A: 1\n"
	      "\n"
	      "a=3Db\n",
	      false);
	EXPECT_BINARY(0, false, "a=b\r\n");
	EXPECT_BINARY(0, true,
		      "Subject: q\r\nX-A: 1\r\n"
		      "Content-Transfer-Encoding: binary\r\n\r\na=b\r\n");
	/* Nothing to decode: BINARY[] is BODY[], byte for byte. */
	parse("Subject: plain\n"
	      "Content-Transfer-Encoding: 8bit\n"
	      "\n"
	      "caf\xc3\xa9\n",
	      false);
	EXPECT_BINARY(0, true,
		      "Subject: plain\r\nContent-Transfer-Encoding: 8bit\r\n"
		      "\r\ncaf\xc3\xa9\r\n");
	/* Folded and repeated CTE fields all go; junk lines stay. */
	parse("Content-Transfer-Encoding:\n"
	      "  base64\n"
	      "junk line\n"
	      "content-transfer-encoding: base64\n"
	      "\n"
	      "aGk=\n",
	      false);
	EXPECT_BINARY(0, true,
		      "junk line\r\nContent-Transfer-Encoding: binary\r\n"
		      "\r\nhi");
	/* A header that ends mid-line: the added field has a line of its
	 * own; no blank line is made up. */
	parse("Content-Transfer-Encoding: base64\nSubject: cut", false);
	EXPECT_BINARY(0, true,
		      "Subject: cut\r\nContent-Transfer-Encoding: binary\r\n");
	/* message/rfc822: the encapsulated message's parts decoded. */
	parse("Content-Type: multipart/mixed; boundary=b\n"
	      "\n"
	      "--b\n"
	      "Content-Type: message/rfc822\n"
	      "\n"
	      "Subject: in\n"
	      "Content-Transfer-Encoding: base64\n"
	      "\n"
	      "aW5uZXI=\n"
	      "--b--\n",
	      false);
	EXPECT_BINARY(1, false,
		      "Subject: in\r\nContent-Transfer-Encoding: binary\r\n"
		      "\r\ninner");
	/* An unknown encoding anywhere inside: [UNKNOWN-CTE]. */
	parse("Content-Transfer-Encoding: x-uuencode\n\nbegin\n", false);
	assert_int_equal(imap_mime_binary_size(&msg, 0, false, NULL),
			 -EPROTONOSUPPORT);
	assert_int_equal(imap_mime_binary_size(&msg, 0, true, NULL),
			 -EPROTONOSUPPORT);
	parse("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nok\n--b\n"
	      "Content-Transfer-Encoding: x-uuencode\n\nbegin\n--b--\n",
	      false);
	EXPECT_BINARY(1, false, "ok");
	assert_int_equal(imap_mime_binary_size(&msg, 0, true, NULL),
			 -EPROTONOSUPPORT);
	assert_int_equal(imap_mime_binary_size(&msg, 2, false, NULL),
			 -EPROTONOSUPPORT);
	/* Broken QP: "=" kept, "=4" kept, trailing blanks dropped. */
	parse("Content-Transfer-Encoding: Quoted-Printable\n\n"
	      "a=zz=4\nb  \t\nc=3d=\n",
	      false);
	EXPECT_BINARY(0, false, "a=zz=4\r\nb\r\nc=");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_imap_mime_simple, teardown),
		cmocka_unit_test_teardown(test_imap_mime_header_sections,
					  teardown),
		cmocka_unit_test_teardown(test_imap_mime_partial, teardown),
		cmocka_unit_test_teardown(test_imap_mime_defaults, teardown),
		cmocka_unit_test_teardown(test_imap_mime_mixed_line_ends,
					  teardown),
		cmocka_unit_test_teardown(test_imap_mime_multipart, teardown),
		cmocka_unit_test_teardown(test_imap_mime_multipart_broken,
					  teardown),
		cmocka_unit_test_teardown(test_imap_mime_digest, teardown),
		cmocka_unit_test_teardown(test_imap_mime_bounce, teardown),
		cmocka_unit_test_teardown(test_imap_mime_thunderbird, teardown),
		cmocka_unit_test_teardown(test_imap_mime_dovecot_outlook,
					  teardown),
		cmocka_unit_test_teardown(test_imap_mime_dovecot_apple,
					  teardown),
		cmocka_unit_test_teardown(test_imap_mime_dovecot_listdigest,
					  teardown),
		cmocka_unit_test_teardown(test_imap_mime_rfc822, teardown),
		cmocka_unit_test_teardown(test_imap_mime_rfc822_single,
					  teardown),
		cmocka_unit_test_teardown(test_imap_mime_depth, teardown),
		cmocka_unit_test_teardown(test_imap_mime_many_parts, teardown),
		cmocka_unit_test_teardown(test_imap_mime_addresses, teardown),
		cmocka_unit_test_teardown(test_imap_mime_envelope_fields,
					  teardown),
		cmocka_unit_test_teardown(test_imap_mime_params, teardown),
		cmocka_unit_test_teardown(test_imap_mime_search, teardown),
		cmocka_unit_test_teardown(test_imap_mime_dates, teardown),
		cmocka_unit_test_teardown(test_imap_mime_binary, teardown),
	};

	return cmocka_run_group_tests_name("imap-mime", tests, NULL, NULL);
}
