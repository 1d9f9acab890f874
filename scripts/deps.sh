#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Install the Debian 12 packages ringprot needs to build, test and
# benchmark, but only those that are missing. Quiet when all are present.
set -euo pipefail

pkgs=(
	meson ninja-build pkg-config gcc clang
	liburing-dev libssl-dev libsasl2-dev zlib1g-dev libcmocka-dev
	sasl2-bin libsasl2-modules libsasl2-modules-db
	python3 valgrind openssl swaks curl
	# nc, for talking to the demo server by hand.
	netcat-openbsd
	# libcyrus.so.0, the original prot layer, for differential tests.
	cyrus-common
	# server/ operations tests: the reference Prometheus text parser,
	# fail2ban-regex for the filter in examples/deploy, and the proxies
	# whose example configs test/integration checks (nginx-light has no
	# mail module: libnginx-mod-mail adds it).
	python3-prometheus-client fail2ban haproxy nginx-light libnginx-mod-mail
	# examples/lmtpd's integration test: smtp-source -L (Postfix's load
	# generator; swaks and python3's smtplib are listed above). Postfix
	# is installed unconfigured and never started: see below. swaks
	# needs Net::SSLeay for --tls.
	postfix libnet-ssleay-perl
	# examples/imapd's client test (test/integration/
	# test_imapd_clients.py): fetchmail, mbsync (isync) and
	# Mail::IMAPTalk; curl and openssl are listed above.
	fetchmail isync libmail-imaptalk-perl
	# systemd-socket-activate, for the socket activation test
	# (test/integration/test_server.py).
	systemd
)

die() {
	echo "deps.sh: $*" >&2
	exit 1
}

command -v dpkg-query >/dev/null 2>&1 ||
	die "no dpkg-query: this script is for Debian 12 (bookworm)"

# Print the arguments that are not installed ("ii"), one per line.
not_installed() {
	local p status
	for p in "$@"; do
		status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
		case "$status" in
		ii*) ;;
		*) echo "$p" ;;
		esac
	done
}

mapfile -t missing < <(not_installed "${pkgs[@]}")
[ "${#missing[@]}" -eq 0 ] && exit 0

echo "deps.sh: installing missing packages: ${missing[*]}"

if [ "$(id -u)" -eq 0 ]; then
	as_root=()
elif command -v sudo >/dev/null 2>&1; then
	as_root=(sudo)
else
	die "need root (or sudo) to install: ${missing[*]}"
fi

# Postfix: "No configuration" writes no main.cf, and its postinst then
# starts nothing (no MTA on port 25); it replaces exim4 as the system's
# mail-transport-agent (cyrus-common depends on one).
if printf '%s\n' "${missing[@]}" | grep -qx postfix; then
	echo "postfix postfix/main_mailer_type select No configuration" |
		"${as_root[@]}" debconf-set-selections ||
		die "debconf-set-selections failed for postfix"
fi

"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
	die "apt-get update failed"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null ||
	die "apt-get install failed for: ${missing[*]}"

# Check again: apt-get can exit 0 yet leave a package unconfigured.
mapfile -t still < <(not_installed "${missing[@]}")
[ "${#still[@]}" -eq 0 ] || die "still missing after install: ${still[*]}"
echo "deps.sh: done"
