/* SPDX-License-Identifier: BSD-3-Clause */
/* server/proxy: the PROXY protocol (HAProxy, versions 1 and 2), receiver. */
#ifndef RINGPROT_SRV_PROXY_H
#define RINGPROT_SRV_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ringprot/common.h>

/*
 * Spec: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt
 * (sections cited as "spec 2.1" and so on).
 *
 * A listener configured for the PROXY protocol reads one header from each
 * connection before anything else (srv__proxy_read()), and only from
 * peers on its trust list (srv__proxy_trusted()): the spec forbids
 * guessing whether a header is there (spec 2, 5).
 */

/* The longest v1 line, CRLF included (spec 2.1). */
#define SRV__PROXY_V1_MAX  107
/*
 * The longest v2 header accepted: 16 bytes and the length field. The
 * spec sizes headers to fit 536 bytes; real ones with TLVs stay below
 * 1 KiB. Longer ones are refused (-EPROTO), never read in part.
 */
#define SRV__PROXY_MAX_LEN 4096

/* Stored TLV values: the longest kept (see srv__proxy_hdr.tlv_toolong). */
#define SRV__PROXY_ALPN_MAX	   64
#define SRV__PROXY_AUTHORITY_MAX   255 /* longer: -EPROTO, as HAProxy */
#define SRV__PROXY_UNIQUE_ID_MAX   128 /* longer: -EPROTO (spec 2.2.5) */
#define SRV__PROXY_SSL_VERSION_MAX 32

/* v2 TLV types and SSL subtypes (spec 2.2). */
#define SRV__PP2_TYPE_ALPN	     0x01
#define SRV__PP2_TYPE_AUTHORITY	     0x02
#define SRV__PP2_TYPE_CRC32C	     0x03
#define SRV__PP2_TYPE_NOOP	     0x04
#define SRV__PP2_TYPE_UNIQUE_ID	     0x05
#define SRV__PP2_TYPE_SSL	     0x20
#define SRV__PP2_SUBTYPE_SSL_VERSION 0x21
#define SRV__PP2_SUBTYPE_SSL_CN	     0x22
#define SRV__PP2_CLIENT_SSL	     0x01
#define SRV__PP2_CLIENT_CERT_CONN    0x02
#define SRV__PP2_CLIENT_CERT_SESS    0x04

/* Bits of srv__proxy_hdr.tlvs and .tlv_toolong. */
enum srv__proxy_tlv {
	SRV__PROXY_TLV_ALPN = 1U << 0,
	SRV__PROXY_TLV_AUTHORITY = 1U << 1,
	SRV__PROXY_TLV_CRC32C = 1U << 2, /* present, and it matched */
	SRV__PROXY_TLV_UNIQUE_ID = 1U << 3,
	SRV__PROXY_TLV_SSL = 1U << 4, /* ssl_client and ssl_verify */
	SRV__PROXY_TLV_SSL_VERSION = 1U << 5,
};

/*
 * A parsed header. Everything but need and error describes a complete
 * header (srv__proxy_parse() returned > 0); the parser clears the whole
 * struct first.
 */
struct srv__proxy_hdr {
	uint8_t version; /* 1 or 2 */
	/*
	 * v2 LOCAL (the proxy's own connection, a health check). family is
	 * then AF_UNSPEC whatever the header said.
	 */
	bool local;
	/*
	 * AF_INET, AF_INET6, AF_UNIX: src and dst hold the client's and
	 * the address it connected to, addrlen long each (an AF_UNIX path
	 * fills sun_path's 108 bytes and is NUL-terminated only when
	 * shorter). AF_UNSPEC (v1 UNKNOWN, v2 LOCAL, v2 UNSPEC family or
	 * transport): keep the connection's real addresses (spec 2.1, 2.2).
	 */
	int family;
	int socktype; /* SOCK_STREAM (v1, v2 STREAM), SOCK_DGRAM, 0 */
	socklen_t addrlen;
	struct sockaddr_storage src, dst;

	/* v2 TLVs (spec 2.2): the enum srv__proxy_tlv bits present. */
	unsigned tlvs;
	/*
	 * TLVs present but not stored because the value is longer than its
	 * field here (ALPN, SSL version): never a truncated value.
	 */
	unsigned tlv_toolong;
	/* Values with their lengths; NUL-terminated for logs, but they may
	 * hold NUL bytes themselves. */
	uint8_t alpn_len;
	char alpn[SRV__PROXY_ALPN_MAX + 1];
	uint16_t authority_len;
	char authority[SRV__PROXY_AUTHORITY_MAX + 1];
	uint8_t unique_id_len;
	uint8_t unique_id[SRV__PROXY_UNIQUE_ID_MAX];
	uint8_t ssl_client;  /* SRV__PP2_CLIENT_* bits */
	uint32_t ssl_verify; /* 0: the client certificate was verified */
	uint8_t ssl_version_len;
	char ssl_version[SRV__PROXY_SSL_VERSION_MAX + 1];

	/* -EAGAIN: at least this many more bytes belong to the header. */
	size_t need;
	/* -EPROTO (and some other errors): static text for the log. */
	const char *error;
};

/*
 * Parse the header at the start of buf[0..len). Pure: reads nothing but
 * buf, no allocation, any thread. Returns
 *  - the header's length (> 0): out describes it, and buf[ret..] is the
 *    application's;
 *  - -EAGAIN: buf holds a valid beginning of a header but not all of it;
 *    out->need > 0 more bytes at least belong to the header. Reading
 *    exactly out->need more bytes never takes a byte past its end: the
 *    header cannot be shorter than len + out->need.
 *  - -EPROTO: not a valid header (out->error says why). Once a prefix of
 *    an input gives -EPROTO, every longer one does too.
 *
 * Strictness (spec 2.1): "PROXY", then single spaces, "TCP4", "TCP6" or
 * "UNKNOWN"; IPv4 as four decimal numbers 0..255 without leading zeros;
 * IPv6 as inet_pton(3) takes it: 1 to 4 hex digits a group, one "::" at
 * most, a dotted IPv4 tail allowed, 128 bits (inet_ntop(3) senders such
 * as HAProxy compress zeros, so the spec's "sets of 4 digits" is not
 * required); ports 0..65535 without leading zeros ("0" itself is fine);
 * a CRLF within the first 107 bytes, a lone CR or LF refused; only
 * printable US-ASCII before it. After UNKNOWN the rest of the line is
 * ignored (it must still start with a space). v2 (spec 2.2): the
 * signature, version 2, command LOCAL or PROXY, family 0..3, transport
 * 0..2, at most SRV__PROXY_MAX_LEN bytes, an address block no longer
 * than the length field for families with addresses; TLVs must fit the
 * header exactly, an SSL TLV its own sub-TLVs; a CRC32c TLV is 4 bytes
 * and must match; ALPN, AUTHORITY, CRC32C, UNIQUE_ID, SSL and the SSL
 * version may each appear once. A TLV is parsed only where the address
 * block's size is known (the combinations spec 2.2 lists), else the rest
 * is skipped as the spec allows.
 */
int srv__proxy_parse(const void *buf, size_t len,
		     struct srv__proxy_hdr *out) RINGPROT_MUST_CHECK;

/*
 * Read the header from fd, a connected stream socket (or UR_FIXED(slot))
 * nothing has read from yet, taking exactly the header's bytes: the
 * first byte after it is the next reader's. deadline_ns is on
 * CLOCK_MONOTONIC (0: none). Uses only ur_* ops, so fd may be a direct
 * descriptor; call it in a fiber (or on a thread whose loop it then
 * drives). Allocates one SRV__PROXY_MAX_LEN buffer while it runs.
 * Returns 0 with out filled, or
 *  - -EPROTO: a malformed header, or the peer closed inside one
 *    (out->error says which);
 *  - -ECONNRESET: the peer closed before sending any byte (a TCP health
 *    check), or reset the connection;
 *  - -ETIMEDOUT: the deadline passed first;
 *  - -ECANCELED: the calling fiber was cancelled;
 *  - -ENOMEM, or another -errno of recv.
 * After an error some header bytes may have been consumed: close the
 * connection.
 */
int srv__proxy_read(int fd, uint64_t deadline_ns, struct srv__proxy_hdr *out)
	UR_MAY_YIELD RINGPROT_MUST_CHECK;

/*
 * Trusted senders: the addresses a PROXY header is accepted from.
 */
struct srv__proxy_trust;

/*
 * Parse list: entries separated by spaces, tabs, newlines or commas,
 * each an IPv4 or IPv6 address with an optional /prefix (v4 0..32, v6
 * 0..128; host bits past the prefix must be 0), or "unix" (peers on
 * AF_UNIX sockets). Returns 0 with *out set (free with
 * srv__proxy_trust_free()), -EINVAL with *errstr_out a static text
 * (an empty list is an error: a PROXY listener trusting nobody is a
 * mistake), or -ENOMEM.
 */
int srv__proxy_trust_parse(const char *list, struct srv__proxy_trust **out,
			   const char **errstr_out) RINGPROT_MUST_CHECK;

/*
 * Is peer (as accept(2) gave it) on the list? An IPv4-mapped IPv6 peer
 * (::ffff:a.b.c.d) matches IPv4 entries, and an IPv4 peer matches IPv6
 * entries as its mapped address. t NULL: false. Any thread.
 */
bool srv__proxy_trusted(const struct srv__proxy_trust *t,
			const struct sockaddr *peer);

/* Free *tp and clear it; NULL is fine. */
void srv__proxy_trust_free(struct srv__proxy_trust **tp);

/*
 * Build a v1 line into buf[0..size): "PROXY TCP4|TCP6 ..." from src and
 * dst (both AF_INET or both AF_INET6), or "PROXY UNKNOWN" when src is
 * NULL or of another family. NUL-terminated when there is room. Returns
 * the header's length, -ENOSPC, or -EINVAL (families differ).
 */
int srv__proxy_format_v1(char *buf, size_t size, const struct sockaddr *src,
			 const struct sockaddr *dst) RINGPROT_MUST_CHECK;

/* srv__proxy_format_v2() flags. */
#define SRV__PROXY_F_CRC32C 0x1U /* add a CRC32c TLV (spec 2.2.3) */

/*
 * Build a v2 header into buf[0..size) from h: LOCAL if h->local, else
 * PROXY with h->family (AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX) and
 * h->socktype (0, SOCK_STREAM, SOCK_DGRAM), then the TLVs h->tlvs names
 * (ALPN, AUTHORITY, UNIQUE_ID, SSL with its version), and with
 * SRV__PROXY_F_CRC32C a checksum. Returns the header's length, -ENOSPC,
 * or -EINVAL (a family or socktype it cannot encode, a value too long).
 */
int srv__proxy_format_v2(void *buf, size_t size, const struct srv__proxy_hdr *h,
			 unsigned flags) RINGPROT_MUST_CHECK;

#endif /* RINGPROT_SRV_PROXY_H */
