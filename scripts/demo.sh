#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The demo mail server: install what is missing, build, and run
# ringprot-imapd with LMTP in the same process, in the foreground on
# loopback until Ctrl-C:
#
#   LMTP   127.0.0.1:${LMTP_PORT:-2424}   (STARTTLS)
#   IMAP   127.0.0.1:${IMAP_PORT:-1143}   (STARTTLS)
#   IMAPS  127.0.0.1:${IMAPS_PORT:-1993}  (implicit TLS)
#
# Everything lives in demo-data/ under the checkout, made on the first
# run and kept: the Maildir store, a sasldb with the user "demo" (its
# password, random, in demo-data/password), a self-signed certificate
# for "localhost" (demo-data/cert.pem). Remove demo-data/ to start over.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

lmtp_port=${LMTP_PORT:-2424}
imap_port=${IMAP_PORT:-1143}
imaps_port=${IMAPS_PORT:-1993}
for p in "$lmtp_port" "$imap_port" "$imaps_port"; do
	case "$p" in
	'' | *[!0-9]*)
		echo "demo.sh: ports must be numbers, not '$p'" >&2
		exit 2
		;;
	esac
done

bash scripts/deps.sh

if [ -f build/meson-private/coredata.dat ]; then
	meson setup --reconfigure build >/dev/null
else
	meson setup build >/dev/null
fi
# Only the daemon: the demo does not wait for the whole tree to build.
ninja -C build examples/ringprot-imapd

data=$root/demo-data
mkdir -p "$data"
chmod 700 "$data"
if [ ! -s "$data/password" ]; then
	(umask 077 && openssl rand -hex 8 >"$data/password")
fi
password=$(cat "$data/password")
if [ ! -s "$data/sasldb" ]; then
	rm -f "$data/sasldb"
	printf '%s' "$password" |
		saslpasswd2 -p -c -f "$data/sasldb" demo
fi
if [ ! -s "$data/cert.pem" ] || [ ! -s "$data/key.pem" ]; then
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
		-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
		-keyout "$data/key.pem" -out "$data/cert.pem" 2>/dev/null
	chmod 600 "$data/key.pem"
fi
# The user's INBOX: LMTP delivers only to users the store has.
mkdir -p "$data/mail/users/demo/tmp" "$data/mail/users/demo/new" \
	"$data/mail/users/demo/cur"

cat <<MSG

ringprot demo mail server (Ctrl-C stops it). User "demo", password
"$password" (in demo-data/password). From another terminal:

Deliver a message over LMTP:

  swaks --protocol LMTP --server 127.0.0.1:$lmtp_port --to demo@localhost \\
        --from you@example.com --header 'Subject: hello from swaks'

Read it over IMAP (plain on loopback, STARTTLS, implicit TLS):

  curl 'imap://127.0.0.1:$imap_port/INBOX;UID=1' --user 'demo:$password'
  curl --ssl-reqd --cacert demo-data/cert.pem 'imap://localhost:$imap_port/INBOX;UID=1' --user 'demo:$password'
  curl --cacert demo-data/cert.pem 'imaps://localhost:$imaps_port/INBOX;UID=1' --user 'demo:$password'

List the mailboxes, or wait for new mail with IDLE (any IMAP client:
server 127.0.0.1, port $imap_port or $imaps_port with TLS, user demo):

  curl 'imap://127.0.0.1:$imap_port/' --user 'demo:$password'
  openssl s_client -quiet -crlf -starttls imap -connect 127.0.0.1:$imap_port

MSG
exec build/examples/ringprot-imapd \
	-o data_dir="$data/mail" \
	-o sasldb_path="$data/sasldb" \
	-o tls_cert_file="$data/cert.pem" -o tls_key_file="$data/key.pem" \
	-o imap.listen="127.0.0.1:$imap_port" \
	-o imaps.tls_listen="127.0.0.1:$imaps_port" \
	-o lmtp.listen="127.0.0.1:$lmtp_port"
