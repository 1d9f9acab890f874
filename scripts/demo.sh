#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Install what is missing, build, and run the echo server in the
# foreground on 127.0.0.1:${PORT:-7777} until Ctrl-C.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

port=${PORT:-7777}
case "$port" in
'' | *[!0-9]*)
	echo "demo.sh: PORT must be a number, not '$port'" >&2
	exit 2
	;;
esac

bash scripts/deps.sh

if [ -f build/meson-private/coredata.dat ]; then
	meson setup --reconfigure build >/dev/null
else
	meson setup build >/dev/null
fi
# Only the example: the demo does not wait for the whole tree to build.
ninja -C build examples/ringprot-echo

cat <<MSG

ringprot echo demo on 127.0.0.1:$port (Ctrl-C stops it). From another terminal:

  printf 'hello\n' | nc -N 127.0.0.1 $port

or, without nc:

  python3 -c 'import socket; s = socket.create_connection(("127.0.0.1", $port)); s.sendall(b"hello\n"); s.shutdown(1); print(s.makefile("rb").read().decode(), end="")'

MSG
exec build/examples/ringprot-echo -l "127.0.0.1:$port"
