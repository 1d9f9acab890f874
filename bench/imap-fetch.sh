#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# bench-run: scenario
# IMAP FETCH benchmark (issue 17): server CPU per MiB of large messages
# fetched, ringprot-imapd against Dovecot in the same run.
#
# Each server is started privately (its own configuration and store in a
# temporary directory, loopback ports, stopped by pid), and one message of
# MSG_MIB MiB (CRLF text lines) is delivered to user0 over its LMTP:
#   ringprot     ringprot-imapd -w WORKERS with mail_save_crlf=yes: the
#                message is stored with CRLF and FETCH BODY[] sends it
#                from the file (splice through a pipe: no user copy).
#   ringprot-lf  the same with mail_save_crlf=no: stored with LF, read,
#                parsed and converted to CRLF through the stream buffer
#                (the path before issue 17), for comparison.
#   dovecot      dovecot-imapd + dovecot-lmtpd, Maildir, mail_save_crlf
#                = yes (it then sends from the file: sendfile).
#   dovecot-lf   the same with Dovecot's default mail_save_crlf = no (not
#                in SERVERS by default): for comparison.
# bench/imap-fetch.py opens CONNS plaintext sessions as user0 (LOGIN,
# SELECT INBOX), fetches the message once on each (page cache warm,
# helpers up), then for SECS seconds every session FETCHes 1
# (BODY.PEEK[]) again as soon as the previous one is complete, reading
# the literal into a scratch buffer and dropping it. The server's CPU is
# utime + stime over its whole process tree (/proc/PID/stat of the
# process and its descendants plus what reaped children left; io_uring
# workers are threads of the process and count) from just before to just
# after that phase (lib.sh tree_ticks). The figures: MiB/s the client
# received, and server CPU seconds per GiB fetched (the ratio is per MiB
# the same). Servers on SERVER_CPU, the client on CLIENT_CPU: the rate
# is what one server CPU and one client CPU give, the CPU per byte is
# the server's own.
#
# Storage: a fresh ext4 (mkfs.ext4 defaults) in a sparse image,
# loop-mounted (FS=host: /tmp as it is); the message stays in the page
# cache throughout, so this measures the send path, not the disk.
#
# Environment: SERVERS ("ringprot ringprot-lf dovecot"), CONNS (16),
# MSG_MIB (10), SECS (20; BENCH_MODE=quick: 1), RUNS (1; interleaved),
# WORKERS (1), SERVER_CPU (0), CLIENT_CPU (1), FS (loop or host),
# LOOP_SIZE (1G). The report goes to stdout and to
# bench/results/<date>-<sha>-imap-fetch.txt; under bench/run (BENCH_TSV)
# rows of scenario imap-fetch-large too (cpu_ms_per_mib, mib_per_s).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 1
cd "$root" || exit 1
# shellcheck source=bench/lib.sh
. bench/lib.sh

SERVERS=${SERVERS:-"ringprot ringprot-lf dovecot"}
CONNS=${CONNS:-16}
MSG_MIB=${MSG_MIB:-10}
if [ "${BENCH_MODE:-full}" = quick ]; then
	SECS=${SECS:-1}
else
	SECS=${SECS:-20}
fi
RUNS=${RUNS:-1}
WORKERS=${WORKERS:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
FS=${FS:-loop}
LOOP_SIZE=${LOOP_SIZE:-1G}
PASS=bench-pw
NUSERS=1 # peer_users: user0
hz=$(getconf CLK_TCK)

die() {
	echo "imap-fetch.sh: $*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (loop mount, Dovecot's users)"
bash scripts/deps.sh || die "scripts/deps.sh failed"
case " $SERVERS " in
*" dovecot"*)
	[ -x /usr/lib/dovecot/imap ] && [ -x /usr/lib/dovecot/lmtp ] ||
		env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends dovecot-core dovecot-imapd \
			dovecot-lmtpd </dev/null >/dev/null ||
		die "could not install dovecot-imapd, dovecot-lmtpd"
	;;
esac

# BUILD_DIR: a release build dir (default build-bench), made if missing.
bench_build
imapd=$bdir/examples/ringprot-imapd
[ -x "$imapd" ] || die "not built: $imapd"

tmp=$(mktemp -d /tmp/ringprot-imap-fetch.XXXXXX) || die "mktemp failed"
spid=""
lg_pid=""
mounted=""

cleanup() {
	[ -n "$lg_pid" ] && kill -TERM "$lg_pid" 2>/dev/null
	[ -n "$spid" ] && stop_tree "$spid"
	wait 2>/dev/null
	store_unmount
}
trap cleanup EXIT
trap 'exit 130' INT TERM

store_mount

start_ringprot() {
	RINGPROT_EXTRA="-o mail_save_crlf=$2" peer_start_ringprot "$tmp/$1"
}

start_dovecot() {
	DOVECOT_EXTRA="mail_save_crlf = $2" peer_start_dovecot "$tmp/$1" 0 "$CONNS"
	scmd="$scmd (mail_save_crlf = $2)"
}

# Start server $1 afresh (spid, sport, lport, scmd) and deliver the
# message to user0.
start_server() {
	rm -rf "${tmp:?}/$1"
	mkdir -p "$tmp/$1"
	case "$1" in
	ringprot) start_ringprot ringprot yes ;;
	ringprot-lf) start_ringprot ringprot-lf no ;;
	dovecot) start_dovecot dovecot yes ;;
	dovecot-lf) start_dovecot dovecot-lf no ;;
	*) die "unknown server $1" ;;
	esac
	python3 - "$lport" "$MSG_MIB" <<'PY' || die "$1: delivery failed"
import smtplib, sys
port, mib = int(sys.argv[1]), int(sys.argv[2])
head = (b"From: bench@localhost\r\nTo: user0@localhost\r\n"
        b"Subject: a large message\r\n\r\n")
line = b"%08d the quick brown fox jumps over the lazy dog, 0123456789\r\n"
body = b"".join(line % i for i in range((mib << 20) // len(line % 0)))
with smtplib.LMTP("127.0.0.1", port) as l:
    r = l.sendmail("bench@localhost", ["user0"], head + body)
    if r:
        sys.exit(f"refused: {r}")
PY
}

# One run of server $1: appends "name ticks bytes secs mib_s fetches".
measure() {
	local name=$1 c0 c1 res
	start_server "$name"
	echo "server:   $name: $scmd" >>"$tmp/servers.txt"
	coproc LG { exec taskset -c "$CLIENT_CPU" python3 bench/imap-fetch.py \
		"$sport" user0 "$PASS" "$CONNS" "$SECS" 2>"$tmp/lg.err"; }
	# shellcheck disable=SC2153 # set by coproc
	lg_pid=$LG_PID
	expect_line "ready" 120 || {
		echo "imap-fetch.sh: $name: the client did not get ready: $(tail -n 3 "$tmp/lg.err")" >&2
		kill -TERM "$lg_pid" 2>/dev/null
		wait "$lg_pid" 2>/dev/null
		lg_pid=""
		stop_tree "$spid"
		spid=""
		return 1
	}
	sleep 1
	c0=$(tree_ticks "$spid" x) || die "cannot read $name's CPU"
	echo go >&"${LG[1]}"
	expect_line "result:" $((SECS * 3 + 60)) || die "$name: no result"
	res=$REPLY
	c1=$(tree_ticks "$spid" x) || die "cannot read $name's CPU"
	echo quit >&"${LG[1]}"
	wait "$lg_pid"
	lg_pid=""
	stop_tree "$spid"
	spid=""
	# shellcheck disable=SC2086
	set -- $c0 $c1
	local ticks=$(($3 - $1))
	# shellcheck disable=SC2001 # four fields reordered: sed says it best
	echo "$name $ticks $(sed 's/^result: bytes=\([0-9]*\) fetches=\([0-9]*\) secs=\([0-9.]*\) mib_s=\([0-9.]*\)$/\1 \3 \4 \2/' <<<"$res")" |
		tee -a "$tmp/runs.txt"
}

result_file imap-fetch
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
	echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "commit:   $(git rev-parse HEAD 2>/dev/null || echo none)$dirty"
	echo "kernel:   $(uname -r)"
	echo "cpu:      ${cpu:-unknown} ($(nproc) online)," \
		"$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
	echo "storage:  $([ -n "$mounted" ] && echo "a fresh ext4 in a $LOOP_SIZE image, loop-mounted" || echo "/tmp (FS=host)")"
	echo "build:    meson buildtype=release ($bdir/), $(cc --version | head -n 1)"
	echo "dovecot:  $(dovecot --version 2>/dev/null || echo none)"
	echo "command:  SERVERS=\"$SERVERS\" CONNS=$CONNS MSG_MIB=$MSG_MIB SECS=$SECS" \
		"RUNS=$RUNS WORKERS=$WORKERS bench/imap-fetch.sh"
	echo "pinning:  servers on CPU $SERVER_CPU, bench/imap-fetch.py on CPU $CLIENT_CPU"
	echo "load:     $CONNS plaintext sessions, FETCH 1 (BODY.PEEK[]) of a $MSG_MIB MiB message, back to back, $SECS s"
} >"$tmp/head.txt"
cat "$tmp/head.txt"
: >"$tmp/runs.txt"
: >"$tmp/servers.txt"

for r in $(seq "$RUNS"); do
	for name in $SERVERS; do
		measure "$name" || echo "$name run $r failed" >>"$tmp/fails.txt"
	done
done

python3 - "$tmp/runs.txt" "$SERVERS" "$hz" "${BENCH_TSV:-}" >"$tmp/table.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
servers, hz, tsv = sys.argv[2].split(), int(sys.argv[3]), sys.argv[4]
g = {}
for name, ticks, b, secs, mib_s, n in rows:
    g.setdefault(name, []).append(
        (int(ticks) / hz / (int(b) / 2**30), float(mib_s), int(ticks) / hz,
         int(b) / 2**20))

def cell(v, f="%.2f"):
    m = statistics.median(v)
    return f % m if len(v) == 1 else (f + " (" + f + "-" + f + ")") % (m, min(v), max(v))

print("Server CPU per GiB fetched (utime + stime of the whole process tree")
print("during the load), and the rate the client received; median (min-max)")
print("over the runs.")
print()
print("| server | runs | CPU s per GiB | MiB/s | CPU s | MiB fetched |")
print("|---|---|---|---|---|---|")
for s in servers:
    v = g.get(s)
    if not v:
        print("| %s | 0 | failed | | | |" % s)
        continue
    print("| %s | %d | %s | %s | %s | %s |" % (
        s, len(v), cell([x[0] for x in v], "%.3f"), cell([x[1] for x in v], "%.0f"),
        cell([x[2] for x in v]), cell([x[3] for x in v], "%.0f")))
print()
base = g.get("dovecot")
if base:
    d = statistics.median(x[0] for x in base)
    for s in servers:
        if s != "dovecot" and g.get(s):
            print("%s / dovecot, server CPU per MiB: %.2fx" % (
                s, statistics.median(x[0] for x in g[s]) / d))
    print()
if tsv:
    with open(tsv, "a") as t:
        for s, v in g.items():
            for metric, unit, col, k in (("cpu_ms_per_mib", "ms", 0, 1000 / 1024),
                                         ("mib_per_s", "MiB/s", 1, 1)):
                x = [r[col] * k for r in v]
                t.write("imap-fetch-large\t%s\t%s\t%.4g\t%.4g\t%.4g\t%s\t\n" % (
                    s, metric, statistics.median(x), min(x), max(x), unit))
PY
{
	cat "$tmp/head.txt"
	cat "$tmp/servers.txt"
	echo
	cat "$tmp/table.txt"
	if [ -s "$tmp/fails.txt" ] 2>/dev/null; then
		echo "Failed runs:"
		cat "$tmp/fails.txt"
		echo
	fi
	echo "Runs (server ticks bytes secs mib_s fetches; $hz ticks/s):"
	cat "$tmp/runs.txt"
} >"$out"
echo
cat "$tmp/table.txt"
echo "results: $out"
