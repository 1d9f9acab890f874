/* SPDX-License-Identifier: BSD-3-Clause */
/* server/proxy: read and check PROXY protocol headers (HAProxy v1, v2). */
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <ringprot/uring.h>

/*
 * Design. The parser is pure and sees the bytes so far; it answers
 * "complete (this long)", "malformed", or "a valid beginning, and at
 * least need more bytes belong to the header". That last number is what
 * lets the reader stay exact without busy-looping: a peek that returns
 * the same partial header again would spin, and poll(POLLIN) is ready
 * as long as those bytes sit unread. So the reader peeks once (a whole
 * header usually arrives in one segment, spec 2.1: then one peek and
 * one recv of exactly its length), and when the peek shows only part of
 * a header, it takes those bytes (they are all the header's) and from
 * then on receives exactly need bytes at a time: a plain recv that
 * sleeps in the kernel and, need being a lower bound on what is left,
 * can never take a byte past the header's end.
 *
 * need for v1 is the length of the shortest valid completion of the
 * fields seen: the current field counted as possibly complete, each
 * missing one at its shortest ("0.0.0.0", "::", "0"), then CRLF.
 */

#define V1_MIN	 15 /* "PROXY UNKNOWN\r\n" */
#define V2_FIXED 16

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
				   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static int fail(struct srv__proxy_hdr *out, const char *why)
{
	out->error = why;
	return -EPROTO;
}

static int again(struct srv__proxy_hdr *out, size_t need)
{
	out->need = need > 0 ? need : 1;
	return -EAGAIN;
}

static unsigned be16(const uint8_t *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

/*
 * ---------------------------------------------------------------------
 * Version 1 (spec 2.1): one line of US-ASCII.
 * ---------------------------------------------------------------------
 */
enum v1_field {
	V1_PROXY,
	V1_PROTO,
	V1_SRC,
	V1_DST,
	V1_SPORT,
	V1_DPORT,
};

struct v1 {
	int family; /* from the protocol field; AF_UNSPEC for UNKNOWN */
	uint8_t addr[2][16];
	unsigned port[2];
};

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * Four decimal numbers 0..255 without leading zeros, single dots. With
 * partial, s may still grow: only what is there must be right.
 */
static bool v4_scan(const char *s, size_t n, bool partial, uint8_t out[4])
{
	unsigned part = 0, digits = 0, val = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (digits == 0 || part == 3)
				return false;
			out[part++] = (uint8_t)val;
			digits = 0;
			val = 0;
			continue;
		}
		if (!is_digit(s[i]))
			return false;
		if (digits == 1 && val == 0)
			return false; /* a leading zero (octal confusion) */
		val = val * 10 + (unsigned)(s[i] - '0');
		if (++digits > 3 || val > 255)
			return false;
	}
	if (partial)
		return true;
	if (part != 3 || digits == 0)
		return false;
	out[3] = (uint8_t)val;
	return true;
}

#define V6_TEXT_MAX 45 /* INET6_ADDRSTRLEN - 1: a dotted tail included */

static bool v6_scan(const char *s, size_t n, bool partial, uint8_t out[16])
{
	char text[V6_TEXT_MAX + 1];

	if (n > V6_TEXT_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!is_digit(c) && !(c >= 'a' && c <= 'f') &&
		    !(c >= 'A' && c <= 'F') && c != ':' && c != '.')
			return false;
	}
	if (partial)
		return true;
	memcpy(text, s, n);
	text[n] = '\0';
	return inet_pton(AF_INET6, text, out) == 1;
}

/* 0..65535 in decimal, no leading zeros. */
static bool port_scan(const char *s, size_t n, bool partial, unsigned *out)
{
	unsigned val = 0;

	if (n > 5 || (n == 0 && !partial))
		return false;
	if (n > 1 && s[0] == '0')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return false;
		val = val * 10 + (unsigned)(s[i] - '0');
	}
	if (val > 65535)
		return false;
	*out = val;
	return true;
}

static bool keyword(const char *s, size_t n, bool partial, const char *kw)
{
	size_t kn = strlen(kw);

	return n <= kn && memcmp(s, kw, n) == 0 && (partial || n == kn);
}

/* Check field f, s[0..n); NULL if it is (or may become) right. */
static const char *v1_token(struct v1 *v, enum v1_field f, const char *s,
			    size_t n, bool partial)
{
	if (n == 0 && !partial)
		return "v1: empty field (a double space?)";
	switch (f) {
	case V1_PROXY:
		if (!keyword(s, n, partial, "PROXY"))
			return "v1: no PROXY keyword";
		return NULL;
	case V1_PROTO:
		if (keyword(s, n, partial, "TCP4"))
			v->family = AF_INET;
		else if (keyword(s, n, partial, "TCP6"))
			v->family = AF_INET6;
		else if (keyword(s, n, partial, "UNKNOWN"))
			v->family = AF_UNSPEC;
		else
			return "v1: protocol not TCP4, TCP6 or UNKNOWN";
		return NULL;
	case V1_SRC:
	case V1_DST:
		if (v->family == AF_INET &&
		    !v4_scan(s, n, partial, v->addr[f - V1_SRC]))
			return "v1: bad IPv4 address";
		if (v->family == AF_INET6 &&
		    !v6_scan(s, n, partial, v->addr[f - V1_SRC]))
			return "v1: bad IPv6 address";
		return NULL;
	case V1_SPORT:
	case V1_DPORT:
		if (!port_scan(s, n, partial, &v->port[f - V1_SPORT]))
			return "v1: bad port";
		return NULL;
	}
	return "v1: too many fields";
}

/* The shortest rest of a valid line, field f being n bytes so far. */
static size_t v1_need(const struct v1 *v, enum v1_field f, size_t n, size_t len)
{
	size_t addr_min = v->family == AF_INET ? 7 : 2; /* 0.0.0.0, :: */
	size_t need = 2;				/* CRLF */

	if (f <= V1_PROTO)
		return len < V1_MIN ? V1_MIN - len : 1;
	for (int g = V1_DPORT; g > (int)f; g--)
		need += 1 + (g >= V1_SPORT ? 1 : addr_min);
	if (n == 0)
		need += f >= V1_SPORT ? 1 : addr_min;
	return need;
}

static void v1_fill(const struct v1 *v, struct srv__proxy_hdr *out)
{
	out->version = 1;
	out->family = v->family;
	if (v->family == AF_UNSPEC)
		return;
	out->socktype = SOCK_STREAM;
	for (int i = 0; i < 2; i++) {
		struct sockaddr_storage *ss = i == 0 ? &out->src : &out->dst;

		if (v->family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)ss;

			sin->sin_family = AF_INET;
			sin->sin_port = htons((uint16_t)v->port[i]);
			memcpy(&sin->sin_addr, v->addr[i], 4);
			out->addrlen = sizeof(*sin);
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons((uint16_t)v->port[i]);
			memcpy(&sin6->sin6_addr, v->addr[i], 16);
			out->addrlen = sizeof(*sin6);
		}
	}
}

/*
 * Find the line's end (the first CR) within 107 bytes, then walk the
 * space-separated fields up to it. Without a CR yet, the last field is
 * partial: checked as far as it goes, so garbage is refused early.
 */
static int parse_v1(const uint8_t *p, size_t len, struct srv__proxy_hdr *out)
{
	size_t lim = len < SRV__PROXY_V1_MAX ? len : SRV__PROXY_V1_MAX;
	const char *s = (const char *)p;
	struct v1 v = {.family = AF_UNSPEC};
	size_t eol, i = 0;
	bool ended, crlf = false;
	enum v1_field f;

	for (eol = 0; eol < lim; eol++) {
		if (p[eol] == '\r')
			break;
		if (p[eol] == '\n')
			return fail(out, "v1: LF without CR");
		if (p[eol] < 0x20 || p[eol] > 0x7e)
			return fail(out, "v1: byte outside printable US-ASCII");
	}
	ended = eol < lim;
	if (ended ? eol + 1 == SRV__PROXY_V1_MAX : len >= SRV__PROXY_V1_MAX)
		return fail(out, "v1: no CRLF in the first 107 bytes");
	if (ended && eol + 1 < len) {
		if (p[eol + 1] != '\n')
			return fail(out, "v1: CR not followed by LF");
		crlf = true;
	}
	for (f = V1_PROXY;; f++) {
		size_t start = i;
		const char *why;
		bool partial;

		while (i < eol && p[i] != ' ')
			i++;
		partial = i == eol && !ended;
		why = v1_token(&v, f, s + start, i - start, partial);
		if (why != NULL)
			return fail(out, why);
		if (partial)
			return again(out, v1_need(&v, f, i - start, len));
		if (f == V1_PROTO && v.family == AF_UNSPEC)
			break; /* UNKNOWN: the rest of the line is ignored */
		if (i == eol) {
			if (f != V1_DPORT)
				return fail(out, "v1: fields missing");
			break;
		}
		if (f == V1_DPORT)
			return fail(out, "v1: more after the ports");
		i++; /* the one space */
	}
	if (!crlf)
		return again(out, ended ? 1 : 2);
	v1_fill(&v, out);
	return (int)(eol + 2);
}

/*
 * ---------------------------------------------------------------------
 * Version 2 (spec 2.2): a binary block, then TLVs.
 * ---------------------------------------------------------------------
 */

/* CRC32c (Castagnoli, reflected 0x82F63B78), as RFC 4960 appendix B. */
static uint32_t crc32c_update(uint32_t crc, const uint8_t *p, size_t n)
{
	while (n-- > 0) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82F63B78U & (0U - (crc & 1U)));
	}
	return crc;
}

/* The header's checksum with the 4 bytes at value_at taken as zeros. */
static uint32_t crc32c_hdr(const uint8_t *p, size_t len, size_t value_at)
{
	static const uint8_t zero[4];
	uint32_t crc = 0xFFFFFFFFU;

	crc = crc32c_update(crc, p, value_at);
	crc = crc32c_update(crc, zero, sizeof(zero));
	crc = crc32c_update(crc, p + value_at + 4, len - value_at - 4);
	return ~crc;
}

/* The address block's size for the family byte, or SIZE_MAX when the
 * spec gives none (an UNSPEC half with a specified other half). */
static size_t v2_addr_len(uint8_t fam)
{
	switch (fam) {
	case 0x00:
		return 0;
	case 0x11:
	case 0x12:
		return 12;
	case 0x21:
	case 0x22:
		return 36;
	case 0x31:
	case 0x32:
		return 216;
	default:
		return SIZE_MAX;
	}
}

static void v2_fill_addrs(const uint8_t *a, uint8_t fam,
			  struct srv__proxy_hdr *out)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)&out->src;
	struct sockaddr_in *d4 = (struct sockaddr_in *)&out->dst;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->src;
	struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&out->dst;
	struct sockaddr_un *su = (struct sockaddr_un *)&out->src;
	struct sockaddr_un *du = (struct sockaddr_un *)&out->dst;

	if (fam == 0x00)
		return; /* AF_UNSPEC: nothing to report */
	out->socktype = (fam & 0xF) == 1 ? SOCK_STREAM : SOCK_DGRAM;
	switch (fam >> 4) {
	case 1:
		out->family = s4->sin_family = d4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, a, 4);
		memcpy(&d4->sin_addr, a + 4, 4);
		memcpy(&s4->sin_port, a + 8, 2); /* both in network order */
		memcpy(&d4->sin_port, a + 10, 2);
		out->addrlen = sizeof(struct sockaddr_in);
		break;
	case 2:
		out->family = s6->sin6_family = d6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, a, 16);
		memcpy(&d6->sin6_addr, a + 16, 16);
		memcpy(&s6->sin6_port, a + 32, 2);
		memcpy(&d6->sin6_port, a + 34, 2);
		out->addrlen = sizeof(struct sockaddr_in6);
		break;
	default:
		out->family = su->sun_family = du->sun_family = AF_UNIX;
		memcpy(su->sun_path, a, 108);
		memcpy(du->sun_path, a + 108, 108);
		out->addrlen = sizeof(struct sockaddr_un);
		break;
	}
}

/*
 * One step of a TLV walk over p[*off..end): the type, the value and its
 * length, or an error. Shared by the top level and the SSL sub-TLVs.
 */
static int tlv_next(const uint8_t *p, size_t *off, size_t end,
		    uint8_t *type_out, const uint8_t **v_out, size_t *n_out,
		    struct srv__proxy_hdr *out)
{
	size_t n;

	if (end - *off < 3)
		return fail(out, "v2: TLV cut by the end of its block");
	n = be16(p + *off + 1);
	if (n > end - *off - 3)
		return fail(out, "v2: TLV longer than its block");
	*type_out = p[*off];
	*v_out = p + *off + 3;
	*n_out = n;
	*off += 3 + n;
	return 0;
}

/* The struct pp2_tlv_ssl value: client, verify, then sub-TLVs. */
static int v2_ssl(const uint8_t *v, size_t n, struct srv__proxy_hdr *out)
{
	size_t off = 5;

	if (n < 5)
		return fail(out, "v2: SSL TLV shorter than 5 bytes");
	out->ssl_client = v[0];
	out->ssl_verify = be32(v + 1);
	while (off < n) {
		const uint8_t *sv;
		uint8_t type;
		size_t sn;
		int ret = tlv_next(v, &off, n, &type, &sv, &sn, out);

		if (ret < 0)
			return ret;
		if (type != SRV__PP2_SUBTYPE_SSL_VERSION)
			continue;
		if ((out->tlvs | out->tlv_toolong) & SRV__PROXY_TLV_SSL_VERSION)
			return fail(out, "v2: SSL version sub-TLV repeated");
		if (sn > SRV__PROXY_SSL_VERSION_MAX) {
			out->tlv_toolong |= SRV__PROXY_TLV_SSL_VERSION;
			continue;
		}
		memcpy(out->ssl_version, sv, sn);
		out->ssl_version_len = (uint8_t)sn;
		out->tlvs |= SRV__PROXY_TLV_SSL_VERSION;
	}
	out->tlvs |= SRV__PROXY_TLV_SSL;
	return 0;
}

static unsigned tlv_bit(uint8_t type)
{
	switch (type) {
	case SRV__PP2_TYPE_ALPN:
		return SRV__PROXY_TLV_ALPN;
	case SRV__PP2_TYPE_AUTHORITY:
		return SRV__PROXY_TLV_AUTHORITY;
	case SRV__PP2_TYPE_CRC32C:
		return SRV__PROXY_TLV_CRC32C;
	case SRV__PP2_TYPE_UNIQUE_ID:
		return SRV__PROXY_TLV_UNIQUE_ID;
	case SRV__PP2_TYPE_SSL:
		return SRV__PROXY_TLV_SSL;
	default:
		return 0; /* NOOP, NETNS, custom...: skipped */
	}
}

/* Store one TLV of interest; others are skipped. */
static int v2_tlv(uint8_t type, const uint8_t *v, size_t n,
		  struct srv__proxy_hdr *out)
{
	switch (type) {
	case SRV__PP2_TYPE_ALPN:
		if (n > SRV__PROXY_ALPN_MAX) {
			out->tlv_toolong |= SRV__PROXY_TLV_ALPN;
			return 0;
		}
		memcpy(out->alpn, v, n);
		out->alpn_len = (uint8_t)n;
		break;
	case SRV__PP2_TYPE_AUTHORITY:
		if (n > SRV__PROXY_AUTHORITY_MAX)
			return fail(out, "v2: AUTHORITY longer than 255 bytes");
		memcpy(out->authority, v, n);
		out->authority_len = (uint16_t)n;
		break;
	case SRV__PP2_TYPE_UNIQUE_ID:
		if (n > SRV__PROXY_UNIQUE_ID_MAX)
			return fail(out, "v2: UNIQUE_ID longer than 128 bytes");
		memcpy(out->unique_id, v, n);
		out->unique_id_len = (uint8_t)n;
		break;
	case SRV__PP2_TYPE_SSL:
		return v2_ssl(v, n, out);
	default:
		return 0;
	}
	out->tlvs |= tlv_bit(type);
	return 0;
}

static int v2_tlvs(const uint8_t *p, size_t off, size_t end,
		   struct srv__proxy_hdr *out)
{
	size_t crc_at = 0;
	unsigned seen = 0;

	while (off < end) {
		const uint8_t *v;
		uint8_t type;
		size_t n;
		int ret = tlv_next(p, &off, end, &type, &v, &n, out);

		if (ret < 0)
			return ret;
		if (seen & tlv_bit(type))
			return fail(out, "v2: TLV repeated");
		seen |= tlv_bit(type);
		if (type == SRV__PP2_TYPE_CRC32C) {
			if (n != 4)
				return fail(out, "v2: CRC32c TLV not 4 bytes");
			crc_at = (size_t)(v - p);
			continue;
		}
		ret = v2_tlv(type, v, n, out);
		if (ret < 0)
			return ret;
	}
	/* Spec 2.2.3: over the whole header, the checksum taken as 0. */
	if (crc_at != 0) {
		if (crc32c_hdr(p, end, crc_at) != be32(p + crc_at))
			return fail(out, "v2: CRC32c mismatch");
		out->tlvs |= SRV__PROXY_TLV_CRC32C;
	}
	return 0;
}

static int parse_v2(const uint8_t *p, size_t len, struct srv__proxy_hdr *out)
{
	size_t total, alen;
	int ret;

	if (memcmp(p, v2_sig, len < 12 ? len : 12) != 0)
		return fail(out, "v2: bad signature");
	if (len > 12 && (p[12] >> 4) != 2)
		return fail(out, "v2: version not 2");
	if (len > 12 && (p[12] & 0xF) > 1)
		return fail(out, "v2: command neither LOCAL nor PROXY");
	if (len > 13 && (p[13] >> 4) > 3)
		return fail(out, "v2: unknown address family");
	if (len > 13 && (p[13] & 0xF) > 2)
		return fail(out, "v2: unknown transport protocol");
	if (len < V2_FIXED)
		return again(out, V2_FIXED - len);
	total = V2_FIXED + be16(p + 14);
	if (total > SRV__PROXY_MAX_LEN)
		return fail(out, "v2: header longer than 4096 bytes");
	out->local = (p[12] & 0xF) == 0;
	alen = v2_addr_len(p[13]);
	if (!out->local && alen != SIZE_MAX && V2_FIXED + alen > total)
		return fail(out, "v2: length shorter than the address block");
	if (len < total)
		return again(out, total - len);
	out->version = 2;
	out->family = AF_UNSPEC;
	if (!out->local && alen != SIZE_MAX)
		v2_fill_addrs(p + V2_FIXED, p[13], out);
	/*
	 * LOCAL ignores the addresses (spec 2.2) but its TLVs are read all
	 * the same when they can be found: a checksum is still checked.
	 */
	if (alen != SIZE_MAX && V2_FIXED + alen <= total) {
		ret = v2_tlvs(p, V2_FIXED + alen, total, out);
		if (ret < 0)
			return ret;
	}
	return (int)total;
}

int srv__proxy_parse(const void *buf, size_t len, struct srv__proxy_hdr *out)
{
	const uint8_t *p = buf;

	memset(out, 0, sizeof(*out));
	out->family = AF_UNSPEC;
	if (len == 0)
		return again(out, V1_MIN);
	/* Spec 2.2: the first byte tells the versions apart. */
	if (p[0] == 'P')
		return parse_v1(p, len, out);
	if (p[0] == '\r')
		return parse_v2(p, len, out);
	return fail(out, "not a PROXY protocol header");
}

/*
 * ---------------------------------------------------------------------
 * Reading from a socket.
 * ---------------------------------------------------------------------
 */

/* recv with a deadline; buf is the kernel's until the op is reaped. */
static ssize_t recv_until(struct ur_loop *loop, int fd, void *buf, size_t len,
			  int flags, uint64_t deadline_ns)
{
	struct ur_op op;
	int ret;

	ur_op_init(&op, NULL, NULL);
	ret = ur_recv_start(loop, &op, fd, buf, len, flags);
	if (ret < 0)
		return ret;
	if (deadline_ns == 0)
		return ur_op_wait(&op);
	ret = ur_op_wait_until(&op, CLOCK_MONOTONIC, deadline_ns);
	/* The deadline could not be armed: never leave buf to the kernel. */
	while (ur_op_is_busy(&op)) {
		if (ur_op_cancel(&op) < 0) {
			/* then it completes by itself */
		}
		ret = ur_op_wait(&op);
	}
	return ret;
}

/* Take exactly n bytes known to be queued (they were peeked). */
static int take(struct ur_loop *loop, int fd, uint8_t *buf, size_t n,
		uint64_t deadline_ns, struct srv__proxy_hdr *out)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = recv_until(loop, fd, buf + got, n - got, 0,
				       deadline_ns);

		if (r < 0)
			return (int)r;
		if (r == 0)
			return fail(out, "connection closed inside the header");
		got += (size_t)r;
	}
	return 0;
}

/* After a partial peek: take what was seen, then need bytes at a time. */
static int read_rest(struct ur_loop *loop, int fd, uint8_t *buf, size_t have,
		     uint64_t deadline_ns, struct srv__proxy_hdr *out)
{
	int ret = take(loop, fd, buf, have, deadline_ns, out);

	while (ret == 0) {
		size_t need = out->need;
		ssize_t n;

		if (need > SRV__PROXY_MAX_LEN - have)
			return fail(out, "header longer than the buffer");
		n = recv_until(loop, fd, buf + have, need, 0, deadline_ns);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return fail(out, "connection closed inside the header");
		have += (size_t)n;
		ret = srv__proxy_parse(buf, have, out);
		if (ret > 0 && (size_t)ret != have)
			return fail(out, "read past the header (parser bug)");
		if (ret == -EAGAIN)
			ret = 0;
		else if (ret > 0)
			return 0;
	}
	return ret;
}

int srv__proxy_read(int fd, uint64_t deadline_ns, struct srv__proxy_hdr *out)
{
	struct ur_loop *loop;
	uint8_t *buf;
	ssize_t n;
	int ret;

	memset(out, 0, sizeof(*out));
	ret = ur_loop_get(&loop);
	if (ret < 0)
		return ret;
	buf = malloc(SRV__PROXY_MAX_LEN);
	if (buf == NULL)
		return -ENOMEM;
	n = recv_until(loop, fd, buf, SRV__PROXY_MAX_LEN, MSG_PEEK,
		       deadline_ns);
	if (n <= 0) {
		ret = n < 0 ? (int)n : -ECONNRESET;
		if (n == 0)
			out->error = "connection closed before the header";
		goto out_free;
	}
	ret = srv__proxy_parse(buf, (size_t)n, out);
	if (ret > 0)
		ret = take(loop, fd, buf, (size_t)ret, deadline_ns, out);
	else if (ret == -EAGAIN)
		ret = read_rest(loop, fd, buf, (size_t)n, deadline_ns, out);
out_free:
	free(buf);
	if (ret == -ETIMEDOUT)
		out->error = "no complete header before the deadline";
	return ret;
}

/*
 * ---------------------------------------------------------------------
 * Trust list.
 * ---------------------------------------------------------------------
 */
struct trust_net {
	int family; /* AF_INET or AF_INET6 */
	unsigned prefix;
	uint8_t addr[16];
};

struct srv__proxy_trust {
	bool unix_ok;
	size_t n;
	struct trust_net nets[];
};

#define TRUST_SEPS	" \t\r\n,"
#define TRUST_TOKEN_MAX 63

static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned bits)
{
	unsigned full = bits / 8, rem = bits % 8;

	if (memcmp(a, net, full) != 0)
		return false;
	return rem == 0 ||
	       ((a[full] ^ net[full]) & (0xFF00U >> rem) & 0xFFU) == 0;
}

/* Parse one "addr[/prefix]" token of n bytes into e; NULL or why not. */
static const char *trust_token(const char *s, size_t n, struct trust_net *e)
{
	char text[TRUST_TOKEN_MAX + 1];
	const char *slash;
	unsigned bytes, max;
	size_t alen;

	if (n > TRUST_TOKEN_MAX)
		return "entry too long";
	memcpy(text, s, n);
	text[n] = '\0';
	slash = strchr(text, '/');
	alen = slash != NULL ? (size_t)(slash - text) : n;
	text[alen] = '\0';
	if (inet_pton(AF_INET, text, e->addr) == 1)
		e->family = AF_INET;
	else if (inet_pton(AF_INET6, text, e->addr) == 1)
		e->family = AF_INET6;
	else
		return "not an IPv4 or IPv6 address";
	bytes = e->family == AF_INET ? 4 : 16;
	max = bytes * 8;
	e->prefix = max;
	if (slash != NULL) {
		const char *d = slash + 1;
		size_t dn = n - alen - 1;
		unsigned v = 0;

		if (dn == 0 || dn > 3 || (dn > 1 && d[0] == '0'))
			return "bad prefix length";
		for (size_t i = 0; i < dn; i++) {
			if (!is_digit(d[i]))
				return "bad prefix length";
			v = v * 10 + (unsigned)(d[i] - '0');
		}
		if (v > max)
			return "prefix length out of range";
		e->prefix = v;
	}
	for (unsigned b = e->prefix; b < max; b++)
		if (e->addr[b / 8] & (0x80U >> (b % 8)))
			return "address has bits set past its prefix length";
	return NULL;
}

int srv__proxy_trust_parse(const char *list, struct srv__proxy_trust **out,
			   const char **errstr_out)
{
	struct srv__proxy_trust *t;
	size_t count = 0;
	const char *s;

	*out = NULL;
	*errstr_out = NULL;
	if (list == NULL) {
		*errstr_out = "no trusted address given";
		return -EINVAL;
	}
	for (s = list + strspn(list, TRUST_SEPS); *s != '\0';
	     s += strspn(s, TRUST_SEPS)) {
		count++;
		s += strcspn(s, TRUST_SEPS);
	}
	if (count == 0) {
		*errstr_out = "no trusted address given";
		return -EINVAL;
	}
	t = calloc(1, sizeof(*t) + count * sizeof(t->nets[0]));
	if (t == NULL)
		return -ENOMEM;
	for (s = list + strspn(list, TRUST_SEPS); *s != '\0';
	     s += strspn(s, TRUST_SEPS)) {
		size_t n = strcspn(s, TRUST_SEPS);
		const char *why;

		if (n == 4 && memcmp(s, "unix", 4) == 0) {
			t->unix_ok = true;
		} else {
			why = trust_token(s, n, &t->nets[t->n]);
			if (why != NULL) {
				*errstr_out = why;
				free(t);
				return -EINVAL;
			}
			t->n++;
		}
		s += n;
	}
	*out = t;
	return 0;
}

void srv__proxy_trust_free(struct srv__proxy_trust **tp)
{
	free(*tp);
	*tp = NULL;
}

static bool trust_match(const struct srv__proxy_trust *t, const uint8_t *v4,
			const uint8_t *v6)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct trust_net *e = &t->nets[i];

		if (e->family == AF_INET && v4 != NULL &&
		    prefix_match(v4, e->addr, e->prefix))
			return true;
		if (e->family == AF_INET6 &&
		    prefix_match(v6, e->addr, e->prefix))
			return true;
	}
	return false;
}

bool srv__proxy_trusted(const struct srv__proxy_trust *t,
			const struct sockaddr *peer)
{
	uint8_t v6[16] = {[10] = 0xFF, [11] = 0xFF};
	const struct sockaddr_in6 *sin6;
	const struct sockaddr_in *sin;

	if (t == NULL || peer == NULL)
		return false;
	switch (peer->sa_family) {
	case AF_INET:
		/* Seen as ::ffff:a.b.c.d by the IPv6 entries. */
		sin = (const struct sockaddr_in *)(const void *)peer;
		memcpy(v6 + 12, &sin->sin_addr, 4);
		return trust_match(t, v6 + 12, v6);
	case AF_INET6:
		sin6 = (const struct sockaddr_in6 *)(const void *)peer;
		memcpy(v6, &sin6->sin6_addr, 16);
		return trust_match(
			t,
			IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) ? v6 + 12 : NULL,
			v6);
	case AF_UNIX:
		return t->unix_ok;
	default:
		return false;
	}
}

/*
 * ---------------------------------------------------------------------
 * Building headers (tests, the load generator).
 * ---------------------------------------------------------------------
 */
int srv__proxy_format_v1(char *buf, size_t size, const struct sockaddr *src,
			 const struct sockaddr *dst)
{
	char line[160], a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
	const void *sa, *da;
	unsigned sp, dp;
	int n;

	if (src == NULL ||
	    (src->sa_family != AF_INET && src->sa_family != AF_INET6)) {
		n = snprintf(line, sizeof(line), "PROXY UNKNOWN\r\n");
	} else {
		if (dst == NULL || dst->sa_family != src->sa_family)
			return -EINVAL;
		if (src->sa_family == AF_INET) {
			const struct sockaddr_in *s4 = (const void *)src;
			const struct sockaddr_in *d4 = (const void *)dst;

			sa = &s4->sin_addr;
			da = &d4->sin_addr;
			sp = ntohs(s4->sin_port);
			dp = ntohs(d4->sin_port);
		} else {
			const struct sockaddr_in6 *s6 = (const void *)src;
			const struct sockaddr_in6 *d6 = (const void *)dst;

			sa = &s6->sin6_addr;
			da = &d6->sin6_addr;
			sp = ntohs(s6->sin6_port);
			dp = ntohs(d6->sin6_port);
		}
		if (inet_ntop(src->sa_family, sa, a, sizeof(a)) == NULL ||
		    inet_ntop(src->sa_family, da, b, sizeof(b)) == NULL)
			return -EINVAL;
		n = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n",
			     src->sa_family == AF_INET ? "TCP4" : "TCP6", a, b,
			     sp, dp);
	}
	if (n < 0 || (size_t)n >= sizeof(line))
		return -EINVAL;
	if ((size_t)n > size)
		return -ENOSPC;
	memcpy(buf, line, (size_t)n);
	if ((size_t)n < size)
		buf[n] = '\0';
	return n;
}

struct wbuf {
	uint8_t *p;
	size_t size, len;
	bool full;
};

static uint8_t *put(struct wbuf *w, const void *src, size_t n)
{
	uint8_t *at;

	if (w->full || n > w->size - w->len) {
		w->full = true;
		return NULL;
	}
	at = w->p + w->len;
	if (src != NULL)
		memcpy(at, src, n);
	else
		memset(at, 0, n);
	w->len += n;
	return at;
}

static uint8_t *put_tlv(struct wbuf *w, uint8_t type, const void *v, size_t n)
{
	uint8_t h[3] = {type, (uint8_t)(n >> 8), (uint8_t)n};

	if (put(w, h, 3) == NULL)
		return NULL;
	return put(w, v, n);
}

static int v2_fam_byte(const struct srv__proxy_hdr *h, uint8_t *fam_out,
		       size_t *alen_out)
{
	unsigned f, t;

	if (h->local || h->family == AF_UNSPEC) {
		*fam_out = 0;
		*alen_out = 0;
		return 0;
	}
	if (h->family == AF_INET)
		f = 1;
	else if (h->family == AF_INET6)
		f = 2;
	else if (h->family == AF_UNIX)
		f = 3;
	else
		return -EINVAL;
	if (h->socktype == SOCK_STREAM)
		t = 1;
	else if (h->socktype == SOCK_DGRAM)
		t = 2;
	else
		return -EINVAL;
	*fam_out = (uint8_t)(f << 4 | t);
	*alen_out = v2_addr_len(*fam_out);
	return 0;
}

static void v2_put_addrs(struct wbuf *w, const struct srv__proxy_hdr *h)
{
	const struct sockaddr_in *s4 = (const void *)&h->src;
	const struct sockaddr_in *d4 = (const void *)&h->dst;
	const struct sockaddr_in6 *s6 = (const void *)&h->src;
	const struct sockaddr_in6 *d6 = (const void *)&h->dst;
	const struct sockaddr_un *su = (const void *)&h->src;
	const struct sockaddr_un *du = (const void *)&h->dst;

	if (h->family == AF_INET) {
		put(w, &s4->sin_addr, 4);
		put(w, &d4->sin_addr, 4);
		put(w, &s4->sin_port, 2);
		put(w, &d4->sin_port, 2);
	} else if (h->family == AF_INET6) {
		put(w, &s6->sin6_addr, 16);
		put(w, &d6->sin6_addr, 16);
		put(w, &s6->sin6_port, 2);
		put(w, &d6->sin6_port, 2);
	} else {
		put(w, su->sun_path, 108);
		put(w, du->sun_path, 108);
	}
}

static int v2_put_tlvs(struct wbuf *w, const struct srv__proxy_hdr *h)
{
	if (h->tlvs & SRV__PROXY_TLV_ALPN) {
		if (h->alpn_len > SRV__PROXY_ALPN_MAX)
			return -EINVAL;
		put_tlv(w, SRV__PP2_TYPE_ALPN, h->alpn, h->alpn_len);
	}
	if (h->tlvs & SRV__PROXY_TLV_AUTHORITY) {
		if (h->authority_len > SRV__PROXY_AUTHORITY_MAX)
			return -EINVAL;
		put_tlv(w, SRV__PP2_TYPE_AUTHORITY, h->authority,
			h->authority_len);
	}
	if (h->tlvs & SRV__PROXY_TLV_UNIQUE_ID) {
		if (h->unique_id_len > SRV__PROXY_UNIQUE_ID_MAX)
			return -EINVAL;
		put_tlv(w, SRV__PP2_TYPE_UNIQUE_ID, h->unique_id,
			h->unique_id_len);
	}
	if (h->tlvs & SRV__PROXY_TLV_SSL) {
		bool ver = (h->tlvs & SRV__PROXY_TLV_SSL_VERSION) != 0;
		size_t n = 5 + (ver ? 3U + h->ssl_version_len : 0U);
		/* The TLV's header, then struct pp2_tlv_ssl's fixed part. */
		uint8_t ssl[8] = {SRV__PP2_TYPE_SSL,
				  (uint8_t)(n >> 8),
				  (uint8_t)n,
				  h->ssl_client,
				  (uint8_t)(h->ssl_verify >> 24),
				  (uint8_t)(h->ssl_verify >> 16),
				  (uint8_t)(h->ssl_verify >> 8),
				  (uint8_t)h->ssl_verify};

		if (h->ssl_version_len > SRV__PROXY_SSL_VERSION_MAX)
			return -EINVAL;
		put(w, ssl, sizeof(ssl));
		if (ver)
			put_tlv(w, SRV__PP2_SUBTYPE_SSL_VERSION, h->ssl_version,
				h->ssl_version_len);
	}
	return 0;
}

int srv__proxy_format_v2(void *buf, size_t size, const struct srv__proxy_hdr *h,
			 unsigned flags)
{
	struct wbuf w = {.p = buf, .size = size};
	uint8_t head[4], *crc = NULL;
	size_t alen, body;
	int ret;

	ret = v2_fam_byte(h, &head[1], &alen);
	if (ret < 0)
		return ret;
	head[0] = h->local ? 0x20 : 0x21;
	put(&w, v2_sig, sizeof(v2_sig));
	put(&w, head, 4); /* the length goes in last */
	if (alen > 0)
		v2_put_addrs(&w, h);
	ret = v2_put_tlvs(&w, h);
	if (ret < 0)
		return ret;
	if (flags & SRV__PROXY_F_CRC32C)
		crc = put_tlv(&w, SRV__PP2_TYPE_CRC32C, NULL, 4);
	if (w.full)
		return -ENOSPC;
	if (w.len > SRV__PROXY_MAX_LEN)
		return -EINVAL;
	body = w.len - V2_FIXED;
	w.p[14] = (uint8_t)(body >> 8);
	w.p[15] = (uint8_t)body;
	if (crc != NULL) {
		uint32_t c = crc32c_hdr(w.p, w.len, (size_t)(crc - w.p));

		crc[0] = (uint8_t)(c >> 24);
		crc[1] = (uint8_t)(c >> 16);
		crc[2] = (uint8_t)(c >> 8);
		crc[3] = (uint8_t)c;
	}
	return (int)w.len;
}
