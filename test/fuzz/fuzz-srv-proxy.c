/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/srv-proxy: PROXY protocol headers and trust lists. */
#include "fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <sys/un.h>

#include "proxy.h" /* server/'s internal header */

/*
 * The whole input is a header for srv__proxy_parse(), and, as a C
 * string, a trust list for srv__proxy_trust_parse(). Invariants:
 *  - the answer is a length, -EAGAIN with need >= 1, or -EPROTO with a
 *    text; a length fits the input and its version's limits (v1 ends in
 *    CRLF within 107 bytes);
 *  - growing the input only moves forward: every prefix of a complete
 *    header is incomplete with a need that reaches at most its end (so
 *    the reader never takes an application byte), the header's own
 *    length gives the same answer, and once malformed always malformed;
 *  - a parsed header, built again by srv__proxy_format_v1/v2(), parses
 *    to the same addresses and TLVs;
 *  - trust: a list parses or says why; an IPv4 peer and its mapped
 *    IPv6 form are trusted alike.
 */

#define ALL_PREFIXES 600 /* inputs up to this size: every prefix */

static void check_one(const uint8_t *data, size_t size,
		      const struct srv__proxy_hdr *h, int r)
{
	if (r == -EAGAIN) {
		FUZZ_CHECK(h->need >= 1);
		FUZZ_CHECK(size + h->need <= SRV__PROXY_MAX_LEN);
		return;
	}
	if (r == -EPROTO) {
		FUZZ_CHECK(h->error != NULL);
		return;
	}
	FUZZ_CHECK(r > 0 && (size_t)r <= size);
	FUZZ_CHECK(h->version == 1 || h->version == 2);
	if (h->version == 1) {
		FUZZ_CHECK(r >= 15 && r <= SRV__PROXY_V1_MAX);
		FUZZ_CHECK(data[r - 2] == '\r' && data[r - 1] == '\n');
		FUZZ_CHECK(!h->local && h->tlvs == 0);
	} else {
		FUZZ_CHECK(r >= 16 && r <= SRV__PROXY_MAX_LEN);
		FUZZ_CHECK(data[0] == '\r');
	}
	switch (h->family) {
	case AF_UNSPEC:
		FUZZ_CHECK(h->socktype == 0 && h->addrlen == 0);
		break;
	case AF_INET:
		FUZZ_CHECK(h->addrlen == sizeof(struct sockaddr_in));
		break;
	case AF_INET6:
		FUZZ_CHECK(h->addrlen == sizeof(struct sockaddr_in6));
		break;
	case AF_UNIX:
		FUZZ_CHECK(h->version == 2);
		FUZZ_CHECK(h->addrlen == sizeof(struct sockaddr_un));
		break;
	default:
		FUZZ_CHECK(0);
	}
	if (h->family != AF_UNSPEC) {
		FUZZ_CHECK(!h->local);
		FUZZ_CHECK(h->src.ss_family == h->family);
		FUZZ_CHECK(h->dst.ss_family == h->family);
		FUZZ_CHECK(h->socktype == SOCK_STREAM ||
			   h->socktype == SOCK_DGRAM);
	}
	FUZZ_CHECK((h->tlvs & h->tlv_toolong) == 0);
	FUZZ_CHECK(h->alpn_len <= SRV__PROXY_ALPN_MAX);
	FUZZ_CHECK(h->authority_len <= SRV__PROXY_AUTHORITY_MAX);
	FUZZ_CHECK(h->unique_id_len <= SRV__PROXY_UNIQUE_ID_MAX);
	FUZZ_CHECK(h->ssl_version_len <= SRV__PROXY_SSL_VERSION_MAX);
	if (h->tlvs & SRV__PROXY_TLV_SSL_VERSION)
		FUZZ_CHECK(h->tlvs & SRV__PROXY_TLV_SSL);

	HINT(h->version == 1 && r == SRV__PROXY_V1_MAX);
	HINT(h->version == 1 && h->family == AF_INET6);
	HINT(h->version == 2 && h->local && h->tlvs != 0);
	HINT(h->version == 2 && h->family == AF_UNIX);
	HINT(h->version == 2 && h->socktype == SOCK_DGRAM);
	HINT(h->tlvs & SRV__PROXY_TLV_CRC32C);
	HINT(h->tlvs & SRV__PROXY_TLV_SSL_VERSION);
	HINT(h->tlv_toolong != 0);
	HINT(h->tlvs == (SRV__PROXY_TLV_ALPN | SRV__PROXY_TLV_AUTHORITY |
			 SRV__PROXY_TLV_UNIQUE_ID | SRV__PROXY_TLV_SSL));
}

/* Prefix k of the input, given the whole input's answer want. */
static void check_prefix(const uint8_t *data, size_t k, int want, bool *bad)
{
	struct srv__proxy_hdr h;
	int r = srv__proxy_parse(data, k, &h);

	check_one(data, k, &h, r);
	if (*bad || r == -EPROTO) {
		FUZZ_CHECK(r == -EPROTO && want == -EPROTO);
		*bad = true;
		return;
	}
	if (want > 0 && k >= (size_t)want) {
		FUZZ_CHECK(r == want);
		return;
	}
	FUZZ_CHECK(r == -EAGAIN);
	if (want > 0)
		FUZZ_CHECK(h.need <= (size_t)want - k);
}

static void check_prefixes(const uint8_t *data, size_t size, int want)
{
	bool bad = false;
	size_t step = size <= ALL_PREFIXES ? 1 : size / 64;

	for (size_t k = 0; k < size; k += step)
		check_prefix(data, k, want, &bad);
	/* And the last bytes before the end of the header, or the input. */
	bad = false;
	if (want > 0) {
		for (size_t k = want > 20 ? (size_t)want - 20 : 0;
		     k < (size_t)want; k++)
			check_prefix(data, k, want, &bad);
	}
}

static bool same_addr(const struct srv__proxy_hdr *a,
		      const struct srv__proxy_hdr *b)
{
	if (a->family != b->family || a->socktype != b->socktype ||
	    a->addrlen != b->addrlen)
		return false;
	return a->family == AF_UNSPEC ||
	       (memcmp(&a->src, &b->src, a->addrlen) == 0 &&
		memcmp(&a->dst, &b->dst, a->addrlen) == 0);
}

static bool same_tlvs(const struct srv__proxy_hdr *a,
		      const struct srv__proxy_hdr *b)
{
	return a->tlvs == b->tlvs && a->alpn_len == b->alpn_len &&
	       memcmp(a->alpn, b->alpn, a->alpn_len) == 0 &&
	       a->authority_len == b->authority_len &&
	       memcmp(a->authority, b->authority, a->authority_len) == 0 &&
	       a->unique_id_len == b->unique_id_len &&
	       memcmp(a->unique_id, b->unique_id, a->unique_id_len) == 0 &&
	       a->ssl_client == b->ssl_client &&
	       a->ssl_verify == b->ssl_verify &&
	       a->ssl_version_len == b->ssl_version_len &&
	       memcmp(a->ssl_version, b->ssl_version, a->ssl_version_len) == 0;
}

static void round_trip(const struct srv__proxy_hdr *h)
{
	uint8_t buf[SRV__PROXY_MAX_LEN];
	struct srv__proxy_hdr back;
	int n, r;

	if (h->version == 1) {
		n = srv__proxy_format_v1(
			(char *)buf, sizeof(buf),
			h->family == AF_UNSPEC
				? NULL
				: (const struct sockaddr *)&h->src,
			(const struct sockaddr *)&h->dst);
		FUZZ_CHECK(n > 0);
		r = srv__proxy_parse(buf, (size_t)n, &back);
		FUZZ_CHECK(r == n);
		FUZZ_CHECK(same_addr(h, &back));
		return;
	}
	n = srv__proxy_format_v2(
		buf, sizeof(buf), h,
		(h->tlvs & SRV__PROXY_TLV_CRC32C) ? SRV__PROXY_F_CRC32C : 0);
	FUZZ_CHECK(n >= 16);
	r = srv__proxy_parse(buf, (size_t)n, &back);
	FUZZ_CHECK(r == n);
	FUZZ_CHECK(back.local == h->local);
	FUZZ_CHECK(same_addr(h, &back));
	FUZZ_CHECK(same_tlvs(h, &back));
}

static void set_v4(struct sockaddr_in *sin, const uint8_t a[4])
{
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	memcpy(&sin->sin_addr, a, 4);
}

static void check_trust(const uint8_t *data, size_t size)
{
	static const uint8_t probes[][4] = {{127, 0, 0, 1},
					    {10, 1, 2, 3},
					    {0, 0, 0, 0},
					    {255, 255, 255, 255}};
	struct srv__proxy_trust *t = NULL;
	const char *err = NULL;
	char *list = malloc(size + 1);
	int r;

	FUZZ_CHECK(list != NULL);
	memcpy(list, data, size);
	list[size] = '\0';
	r = srv__proxy_trust_parse(list, &t, &err);
	free(list);
	if (r < 0) {
		FUZZ_CHECK(r == -EINVAL && t == NULL && err != NULL);
		return;
	}
	FUZZ_CHECK(r == 0 && t != NULL && err == NULL);
	for (size_t i = 0; i <= sizeof(probes) / sizeof(probes[0]); i++) {
		struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
		struct sockaddr_in sin;
		uint8_t a[4];

		/* The fixed probes, then the input's first bytes. */
		if (i < sizeof(probes) / sizeof(probes[0]))
			memcpy(a, probes[i], 4);
		else
			for (size_t j = 0; j < 4; j++)
				a[j] = j < size ? data[j] : 0;
		set_v4(&sin, a);
		sin6.sin6_addr.s6_addr[10] = 0xFF;
		sin6.sin6_addr.s6_addr[11] = 0xFF;
		memcpy(&sin6.sin6_addr.s6_addr[12], a, 4);
		FUZZ_CHECK(srv__proxy_trusted(t, (struct sockaddr *)&sin) ==
			   srv__proxy_trusted(t, (struct sockaddr *)&sin6));
		HINT(srv__proxy_trusted(t, (struct sockaddr *)&sin));
	}
	srv__proxy_trust_free(&t);
	FUZZ_CHECK(t == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct srv__proxy_hdr h;
	int r;

	r = srv__proxy_parse(data, size, &h);
	check_one(data, size, &h, r);
	check_prefixes(data, size, r);
	if (r > 0) {
		struct srv__proxy_hdr again;

		FUZZ_CHECK(srv__proxy_parse(data, (size_t)r, &again) == r);
		round_trip(&h);
	}
	check_trust(data, size);
	return 0;
}
