/* SPDX-License-Identifier: BSD-3-Clause */
/* server/tls: the server's TLS context, built from config, reloadable. */
#ifndef RINGPROT_SRV_TLS_H
#define RINGPROT_SRV_TLS_H

#include <stdbool.h>

#include <openssl/ssl.h>

#include <ringprot/common.h>

/*
 * Built only with OpenSSL in the build (server/meson.build). One
 * struct srv__tls per TLS service; its current SSL_CTX is shared by every
 * worker thread. Nothing here yields or logs.
 *
 * Errors: functions taking errstr_out set it (if not NULL) to one line
 * naming the setting, the file and the reason, e.g.
 *   "tls_cert_file /x/y.pem: No such file or directory"
 *   "tls_key_file /x/k.pem: key does not match certificate"
 * or to NULL on success. The text lives in a thread-local buffer: valid
 * until the next srv__tls_* call on the same thread; copy it to keep it.
 */

/* What a TLS service is built from; the strings are borrowed. */
struct srv__tls_opts {
	const char *cert_file;	    /* PEM: the certificate, then its chain */
	const char *key_file;	    /* PEM private key; NULL: in cert_file */
	const char *chain_file;	    /* optional extra chain certificates */
	const char *ciphers;	    /* TLS <= 1.2 cipher list; NULL: default */
	const char *ciphersuites;   /* TLS 1.3 suites; NULL: default */
	const char *min_version;    /* "TLSv1", "TLSv1.1", "TLSv1.2" (default),
				     * "TLSv1.3" */
	const char *max_version;    /* as min_version; NULL: the newest */
	const char *client_ca_file; /* PEM CAs that sign client certificates */
	int verify_client;	    /* 0 none, 1 optional, 2 required; 1 and 2
				     * need client_ca_file. A certificate that
				     * is sent must verify, even when optional. */
	bool prefer_server_ciphers;
	unsigned session_timeout_s; /* 0: 3600; at most 86400 */
	const unsigned char *alpn;  /* protocols to select, wire format
				     * ("\x04imap"), or NULL */
	unsigned alpn_len;
};

struct srv__tls;

/*
 * Build a server SSL_CTX from o (every file read and checked now: the
 * key must match the certificate) and a new srv__tls holding it.
 * Returns 0 with *out set, or -ENOENT/-EACCES/-EISDIR/... (a file could
 * not be read: open(2)'s errno), -EINVAL (bad PEM, key mismatch, unknown
 * version, empty cipher list, inconsistent settings), -ENOMEM; then
 * *out is NULL and *errstr_out says why (see above).
 */
int srv__tls_new(const struct srv__tls_opts *o, struct srv__tls **out,
		 const char **errstr_out) RINGPROT_MUST_CHECK;

/*
 * A new reference to the current SSL_CTX (never NULL), for one
 * handshake: pass it to pl_tls_accept, then SSL_CTX_free it (the SSL
 * keeps its own reference). Any thread, concurrently with
 * srv__tls_reload.
 */
SSL_CTX *srv__tls_ctx_ref(struct srv__tls *t);

/*
 * Build a new SSL_CTX from o as srv__tls_new does and make it current.
 * Handshakes that took a reference before keep the old context, and so
 * do established connections; the old context is freed with its last
 * user. Returns 0, or as srv__tls_new with the old context still
 * current. Any thread; concurrent reloads are serialised.
 */
int srv__tls_reload(struct srv__tls *t, const struct srv__tls_opts *o,
		    const char **errstr_out) RINGPROT_MUST_CHECK;

/* Drop t's reference to its context and free t; NULL is fine. */
void srv__tls_free(struct srv__tls **t);

/*
 * Write a self-signed certificate (EC P-256, SHA-256, valid from now for
 * days, CN common_name, subjectAltName DNS:common_name, DNS:localhost,
 * IP:127.0.0.1, IP:::1) to cert_path (mode 0644) and its key to key_path
 * (mode 0600). Each file is written to a temporary name beside it and
 * renamed over the target, so a reader sees the old file or the new one.
 * key_path may equal cert_path (one 0600 file, key first). Returns 0,
 * -EINVAL (NULL or empty argument, days 0), -ENOMEM, or open/write/rename
 * -errno. For demos and tests, not production.
 */
int srv__tls_selfsigned(const char *cert_path, const char *key_path,
			const char *common_name,
			unsigned days) RINGPROT_MUST_CHECK;

#endif /* RINGPROT_SRV_TLS_H */
