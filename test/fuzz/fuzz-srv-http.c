/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/srv-http: the /metrics request reader on any bytes. */
#include "fuzz.h"

#include "metrics.h"

#include <errno.h>
#include <stdbool.h>

#include <ringprot/prot.h>

/*
 * Input: the bytes a client sends, read through a map stream (EOF at the
 * end); the answer goes to a buf stream. Whatever the input: the result is
 * one of the statuses the header lists or -EPIPE; -EPIPE writes nothing;
 * a status writes one well-formed answer with that status, Connection:
 * close, and a Content-Length equal to the body that follows (none for
 * HEAD, whose length is still the GET's).
 */

static int render(struct buf *out, void *rock)
{
	static const char text[] = "# HELP ringprot_x X.\n"
				   "# TYPE ringprot_x counter\n"
				   "ringprot_x_total 1\n";

	(void)rock;
	if (out->alloc < out->len + sizeof(text)) {
		char *s = realloc(out->s, out->len + sizeof(text));

		if (s == NULL)
			return -ENOMEM;
		out->s = s;
		out->alloc = out->len + sizeof(text);
	}
	memcpy(out->s + out->len, text, sizeof(text));
	out->len += sizeof(text) - 1;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf b = BUF_INITIALIZER;
	struct protstream *in, *out;
	const char *head_end, *cl;
	char want[32];
	size_t body;
	int ret;

	if (size > 100000)
		return 0;
	in = prot_readmap((const char *)data, (uint32_t)size);
	out = prot_writebuf(&b);
	FUZZ_CHECK(in != NULL && out != NULL);
	ret = srv__metrics_http(in, out, render, NULL);
	FUZZ_CHECK(ret == -EPIPE || ret == 200 || ret == 400 || ret == 404 ||
		   ret == 405);
	prot_free(in);
	prot_free(out);
	if (ret < 0) {
		FUZZ_CHECK(b.len == 0);
		free(b.s);
		return 0;
	}
	HINT(ret == 200);
	HINT(ret == 405);
	FUZZ_CHECK(b.s != NULL);
	snprintf(want, sizeof(want), "HTTP/1.1 %d ", ret);
	FUZZ_CHECK(b.len > strlen(want) &&
		   memcmp(b.s, want, strlen(want)) == 0);
	head_end = memmem(b.s, b.len, "\r\n\r\n", 4);
	FUZZ_CHECK(head_end != NULL);
	FUZZ_CHECK(memmem(b.s, (size_t)(head_end - b.s),
			  "\r\nConnection: close", 19) != NULL);
	cl = memmem(b.s, (size_t)(head_end - b.s), "\r\nContent-Length: ", 18);
	FUZZ_CHECK(cl != NULL);
	body = b.len - (size_t)(head_end + 4 - b.s);
	/* HEAD: no body; otherwise the length is the body's. */
	FUZZ_CHECK(body == 0 || strtoul(cl + 18, NULL, 10) == body);
	free(b.s);
	return 0;
}
