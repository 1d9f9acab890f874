#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Server memory per idle connection (issue 14): examples/echo with parked
# connections (-P: no fiber, no buffer while the client is silent) next
# to the same server keeping a fiber per connection blocked in a read,
# on io_uring with direct descriptors (-D) and on epoll.
#
# Each run starts a fresh server (SERVER_CPU), takes its RSS and PSS from
# /proc/PID/smaps_rollup, then bench/loadgen (CLIENT_CPU) opens N
# connections in its hold mode: each sends one LINE-byte line and waits
# for the echo, at most -W per loadgen worker at once, so the server has
# read, answered and gone idle (parked) on every one of them. After
# SETTLE seconds the server is sampled again with every connection open
# and silent, then loadgen closes them all (RST) and, SETTLE seconds
# later, a third sample shows what the server kept. The figure is
# (held - before) / N, in KiB per connection; "marginal" is the slope
# between the two connection counts ((M(N2) - M(N1)) / (N2 - N1), of the
# medians), which leaves out what does not grow with N (fiber stack pool,
# malloc arenas, per-worker tables).
#
# Loopback needs both ends on this machine within RLIMIT_NOFILE (20,000
# here, a hard cap): loadgen holds its connections as direct descriptors
# (-D) over several rings (threads) and several 127.0.0.x source
# addresses (~28k ephemeral ports each); the io_uring servers do too,
# over WORKERS rings of 16,384 slots (examples/echo's ECHO_DIRECT_FILES;
# SO_REUSEPORT spreads connections over the workers). The epoll engine
# holds real fds, so it runs only where N fits the fd table; a
# configuration that cannot fit N is skipped and says why.
#
# A configuration named ...-tls is the same server with an implicit TLS
# listener (a self-signed P-256 certificate made in the temp dir) and
# loadgen as a TLS client (-T): handshake, the line and its echo as
# records, then silence; what a parked TLS connection costs next to a
# plaintext one. The handshakes cost CPU at both ends, so each run also
# reports the server's and loadgen's CPU time while connecting, per
# connection, and the wall time connecting took.
#
# Kernel memory is not in a process's RSS: socket structures (both ends
# of each loopback connection), the ring tables and poll entries are
# slab. The report gives the machine's Slab delta per connection from
# /proc/meminfo (both ends, and whatever else ran meanwhile) and the TCP
# buffer pages of /proc/net/sockstat, as context only.
#
# Environment: RUNS (3), NS ("10000 100000"), CONFIGS (by name: the
# four plaintext ones, uring-park-tls and epoll-park-tls by default;
# uring-fiber-tls and epoll-fiber-tls too), WORKERS (8), LINE (16; 0:
# the client sends nothing), WINDOW (256), SETTLE seconds (1),
# SERVER_CPU (0), CLIENT_CPU (1), QUIET_WAIT (20), BUILD (build-bench,
# configured as bench/run.sh does; another existing build dir is only
# compiled). The report goes to stdout and to
# bench/results/<date>-<sha>-park-mem.txt.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 1
cd "$root" || exit 1
# shellcheck source=bench/lib.sh
. bench/lib.sh

RUNS=${RUNS:-3}
NS=${NS:-"10000 100000"}
CONFIGS=${CONFIGS:-"uring-park uring-fiber epoll-park epoll-fiber uring-park-tls epoll-park-tls"}
WORKERS=${WORKERS:-8}
LINE=${LINE:-16}
WINDOW=${WINDOW:-256}
SETTLE=${SETTLE:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
QUIET_WAIT=${QUIET_WAIT:-20}
BUILD=${BUILD:-build-bench}
# examples/echo/echo.c: ECHO_DIRECT_FILES, the -D table of each worker.
ECHO_DIRECT_FILES=16384
# loadgen connections per thread (each thread's ring table is capped at
# RLIMIT_NOFILE slots).
LG_PER_THREAD=15000
hz=$(getconf CLK_TCK)

die() {
	echo "park-mem.sh: $*" >&2
	exit 1
}

bash scripts/deps.sh || die "scripts/deps.sh failed"
if [ "$BUILD" = build-bench ]; then
	if [ -f build-bench/meson-private/coredata.dat ]; then
		meson setup --reconfigure build-bench --buildtype=release >/dev/null
	else
		meson setup build-bench --buildtype=release >/dev/null
	fi || die "meson setup failed"
fi
meson compile -C "$BUILD" >/dev/null || die "build failed"
loadgen=$BUILD/bench/loadgen
echo_exe=$BUILD/examples/ringprot-echo
for exe in "$loadgen" "$echo_exe"; do
	[ -x "$exe" ] || die "not built: $exe"
done
buildtype=$(meson introspect --buildoptions "$BUILD" 2>/dev/null |
	python3 -c 'import json,sys
print(next((o["value"] for o in json.load(sys.stdin)
            if o["name"] == "buildtype"), "?"))' 2>/dev/null)

nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
ulimit -n "$nofile" 2>/dev/null

tmp=$(mktemp -d /tmp/ringprot-park-mem.XXXXXX) || die "mktemp failed"
spid=""
lg_pid=""

cleanup() {
	[ -n "$lg_pid" ] && kill -TERM "$lg_pid" 2>/dev/null
	[ -n "$spid" ] && kill -TERM "$spid" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Is configuration $1 a TLS one?
is_tls() {
	case "$1" in
	*-tls) return 0 ;;
	*) return 1 ;;
	esac
}

server_args() {
	local tls=""
	is_tls "$1" && tls=" -o tls_cert_file=$tmp/cert.pem" &&
		tls="$tls -o tls_key_file=$tmp/key.pem" &&
		tls="$tls -o echo.tls_listen=127.0.0.1:0"
	case "${1%-tls}" in
	uring-park) echo "-e uring -P -D -w $WORKERS$tls" ;;
	uring-fiber) echo "-e uring -D -w $WORKERS$tls" ;;
	epoll-park) echo "-e epoll -P -w $WORKERS$tls" ;;
	epoll-fiber) echo "-e epoll -w $WORKERS$tls" ;;
	*) return 1 ;;
	esac
}

# Why server $1 cannot hold $2 connections here; nothing if it can.
no_fit() {
	local name=$1 n=$2
	case "$name" in
	uring-*)
		# SO_REUSEPORT's hash is not an exact split: keep 10% slack.
		if [ $((n * 11 / 10)) -gt $((WORKERS * ECHO_DIRECT_FILES)) ]; then
			echo "$n connections over $WORKERS workers of" \
				"$ECHO_DIRECT_FILES direct slots each do not fit" \
				"(raise WORKERS)"
		fi
		;;
	epoll-*)
		if [ $((n + 64)) -gt "$nofile" ]; then
			echo "epoll holds real fds: $n connections do not fit" \
				"the fd table of $nofile (RLIMIT_NOFILE hard cap)"
		fi
		;;
	esac
}

# Start server $1 on an ephemeral loopback port; sets spid and sport
# (with TLS, the port of the TLS listener: the second one printed).
start_server() {
	local name=$1 args i port="" which=1
	args=$(server_args "$name") || die "unknown server: $name"
	is_tls "$name" && which=2
	: >"$tmp/server.out"
	# shellcheck disable=SC2086
	taskset -c "$SERVER_CPU" "$echo_exe" $args -l 127.0.0.1:0 \
		>"$tmp/server.out" 2>"$tmp/server.err" &
	spid=$!
	for i in $(seq 100); do
		port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\) (.*)$/\1/p' \
			"$tmp/server.out" | sed -n "${which}p")
		[ -n "$port" ] && break
		kill -0 "$spid" 2>/dev/null ||
			die "$name exited: $(head -n 3 "$tmp/server.err")"
		sleep 0.05
	done
	[ -n "$port" ] || die "$name did not report its port"
	sport=$port
	engine=$(sed -n 's/^listening on .* (\(.*\))$/\1/p' "$tmp/server.out" |
		head -n 1)
}

stop_server() {
	kill -TERM "$spid" 2>/dev/null
	wait "$spid" 2>/dev/null
	spid=""
}

# "rss_kb pss_kb vmas" of process $1.
mem_sample() {
	local pid=$1 rss pss vmas
	rss=$(awk '/^Rss:/ {print $2}' /proc/"$pid"/smaps_rollup) || return 1
	pss=$(awk '/^Pss:/ {print $2}' /proc/"$pid"/smaps_rollup) || return 1
	vmas=$(wc -l <"/proc/$pid/maps")
	echo "$rss $pss $vmas"
}

# "slab_kb tcp_mem_pages" of the whole machine.
kernel_sample() {
	local slab mem
	slab=$(awk '/^Slab:/ {print $2}' /proc/meminfo)
	mem=$(awk '/^TCP:/ {for (i = 1; i < NF; i++) if ($i == "mem")
		print $(i + 1)}' /proc/net/sockstat)
	echo "$slab ${mem:-0}"
}

# One run: server $1 holds $2 connections. Appends to runs.txt "name n
# rss0 rss1 rss2 pss0 pss1 pss2 vmas0 vmas1 slab0 slab1 tcpmem1 quiet
# connect_s sources lg_threads srv_connect_ticks lg_connect_ticks".
measure() {
	local name=$1 n=$2 threads quiet=1 s0 s1 s2 k0 k1 res connect="" line
	local c0 c1 lc1 tls=()
	is_tls "$name" && tls=(-T)
	threads=$(((n + LG_PER_THREAD - 1) / LG_PER_THREAD))
	wait_quiet || {
		quiet=0
		echo "park-mem.sh: machine not quiet after ${QUIET_WAIT}s;" \
			"measuring anyway (marked)" >&2
	}
	start_server "$name"
	sleep "$SETTLE"
	s0=$(mem_sample "$spid") || die "cannot read /proc/$spid"
	k0=$(kernel_sample)
	c0=$(cpu_ticks "$spid")
	: >"$tmp/lg.out"
	LG_LOG=$tmp/lg.out
	coproc LG { exec taskset -c "$CLIENT_CPU" "$loadgen" -m hold -D -g \
		"${tls[@]}" -c "$n" -t "$threads" -s "$LINE" -W "$WINDOW" \
		-d 0 "127.0.0.1:$sport" 2>"$tmp/lg.err"; }
	# shellcheck disable=SC2153 # set by coproc
	lg_pid=$LG_PID
	if ! expect_line "loadgen: ready" 300; then
		echo "park-mem.sh: $name n=$n: loadgen failed:" \
			"$(tail -n 3 "$tmp/lg.out") $(head -n 3 "$tmp/lg.err")" >&2
		kill -TERM "$lg_pid" 2>/dev/null
		wait "$lg_pid" 2>/dev/null
		lg_pid=""
		stop_server
		return 1
	fi
	# Connecting is all either side has done so far.
	c1=$(cpu_ticks "$spid")
	lc1=$(cpu_ticks "$lg_pid")
	line=$(grep '^loadgen: connected' "$tmp/lg.out")
	connect=$(echo "$line" | sed -n 's/.* in \([0-9.]*\) s .*/\1/p')
	sources=$(echo "$line" | sed -n 's/.*(\([0-9]*\) source addr.*/\1/p')
	sleep "$SETTLE"
	s1=$(mem_sample "$spid") || die "cannot read /proc/$spid"
	k1=$(kernel_sample)
	echo go >&"${LG[1]}"
	REPLY=""
	expect_line "result:" 60
	res=$REPLY
	expect_line "loadgen: done" 10
	echo quit >&"${LG[1]}"
	wait "$lg_pid"
	local rc=$?
	lg_pid=""
	sleep "$SETTLE"
	s2=$(mem_sample "$spid") || die "cannot read /proc/$spid"
	stop_server
	case "$res" in
	*" failed=0 "*) ;;
	*)
		echo "park-mem.sh: $name n=$n: connections failed: $res" >&2
		return 1
		;;
	esac
	[ "$rc" -eq 0 ] || {
		echo "park-mem.sh: $name n=$n: loadgen exited $rc" >&2
		return 1
	}
	# shellcheck disable=SC2086
	set -- $s0 $s1 $s2 $k0 $k1
	# rss0 pss0 vmas0 rss1 pss1 vmas1 rss2 pss2 vmas2 slab0 mem0 slab1 mem1
	echo "$name $n $1 $4 $7 $2 $5 $8 $3 $6 ${10} ${12} ${13} $quiet" \
		"${connect:-nan} ${sources:-?} $threads $((c1 - c0)) $lc1" \
		>>"$tmp/runs.txt"
	awk -v name="$name" -v n="$n" -v r0="$1" -v r1="$4" -v r2="$7" \
		-v p0="$2" -v p1="$5" -v c="$connect" -v q="$quiet" \
		-v sc=$((c1 - c0)) -v lc="$lc1" -v hz="$hz" 'BEGIN {
		printf "  %-14s n=%-6d rss %7d -> %7d kB (%.2f KiB/conn), " \
			"pss %.2f KiB/conn, after close %+.2f KiB/conn, " \
			"connect %s s, cpu/conn server %.0f us, loadgen %.0f " \
			"us%s\n", name, n, r0, r1, (r1 - r0) / n,
			(p1 - p0) / n, (r2 - r0) / n, c, sc / hz * 1e6 / n,
			lc / hz * 1e6 / n, q ? "" : " (not quiet)"
	}'
}

result_file park-mem
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
	echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "commit:   $(git rev-parse HEAD 2>/dev/null || echo none)$dirty"
	echo "kernel:   $(uname -r)"
	echo "cpu:      ${cpu:-unknown} ($(nproc) online)," \
		"$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
	echo "compiler: $(cc --version | head -n 1)"
	echo "liburing: $(pkg-config --modversion liburing)"
	echo "build:    meson buildtype=${buildtype:-?} ($BUILD/)"
	echo "command:  RUNS=$RUNS NS=\"$NS\" CONFIGS=\"$CONFIGS\"" \
		"WORKERS=$WORKERS LINE=$LINE WINDOW=$WINDOW SETTLE=$SETTLE" \
		"bench/park-mem.sh"
	echo "limits:   RLIMIT_NOFILE $nofile, vm.max_map_count" \
		"$(cat /proc/sys/vm/max_map_count), tcp_mem" \
		"$(tr '\t' ' ' </proc/sys/net/ipv4/tcp_mem) pages," \
		"ip_local_port_range" \
		"$(tr '\t' '-' </proc/sys/net/ipv4/ip_local_port_range)"
	echo "pinning:  server on CPU $SERVER_CPU, loadgen on CPU $CLIENT_CPU"
	echo "loadgen:  $loadgen -m hold -D -g -c N -t ceil(N/$LG_PER_THREAD)" \
		"-s $LINE -W $WINDOW -d 0 [-T for -tls] (direct descriptors;" \
		"source addresses 127.0.0.1.. one per 16384 connections)"
	for name in $CONFIGS; do
		echo "server:   $name: $echo_exe $(server_args "$name") -l 127.0.0.1:0"
	done
} >"$tmp/head.txt"
cat "$tmp/head.txt"
: >"$tmp/runs.txt"
: >"$tmp/skips.txt"

need_cert=0
for name in $CONFIGS; do
	server_args "$name" >/dev/null || die "unknown server: $name"
	is_tls "$name" && need_cert=1
	for n in $NS; do
		why=$(no_fit "$name" "$n")
		[ -n "$why" ] && echo "$name $n $why" >>"$tmp/skips.txt"
	done
done
if [ "$need_cert" -eq 1 ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-days 2 -subj /CN=localhost -keyout "$tmp/key.pem" \
		-out "$tmp/cert.pem" >/dev/null 2>&1 ||
		die "cannot make a self-signed certificate (openssl req)"
	echo "tls:      self-signed P-256 certificate (openssl req -x509" \
		"-newkey ec -pkeyopt ec_paramgen_curve:P-256); loadgen -T:" \
		"OpenSSL $(openssl version | cut -d' ' -f2), no verification," \
		"no session resumption" >>"$tmp/head.txt"
fi
engines_seen=""
for r in $(seq "$RUNS"); do
	for n in $NS; do
		echo "run $r/$RUNS, n=$n"
		for name in $CONFIGS; do
			[ -n "$(no_fit "$name" "$n")" ] && continue
			if measure "$name" "$n"; then
				case "$engines_seen" in
				*"$name:"*) ;;
				*) engines_seen="$engines_seen$name: $engine; " ;;
				esac
			else
				echo "$name $n run $r failed" >>"$tmp/fails.txt"
			fi
		done
	done
done
echo "engines:  ${engines_seen:-none}" >>"$tmp/head.txt"

python3 - "$tmp/runs.txt" "$tmp/skips.txt" "$CONFIGS" "$NS" "$hz" \
	>"$tmp/table.txt" <<'EOF'
import statistics, sys

rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
skips = [l.strip().split(None, 2) for l in open(sys.argv[2]) if l.strip()]
configs = sys.argv[3].split()
ns = [int(x) for x in sys.argv[4].split()]
hz = float(sys.argv[5])
g = {}
for r in rows:
    g.setdefault((r[0], int(r[1])), []).append(r)

def per_conn(rs, a, b):
    """KiB per connection of column b - column a, for each run."""
    return [(float(r[b]) - float(r[a])) / int(r[1]) for r in rs]

def cell(vals):
    if not vals:
        return "n/a"
    m = statistics.median(vals)
    if len(vals) == 1:
        return "%.2f" % m
    return "%.2f (%.2f-%.2f)" % (m, min(vals), max(vals))

print("Server memory per held connection, KiB: (held - before) / N;")
print("median (min-max) over the runs. RSS and PSS from")
print("/proc/PID/smaps_rollup; kept = (after close - before) / N; vmas =")
print("the server's mappings while holding; slab = the machine's")
print("/proc/meminfo Slab delta / N: kernel memory, both ends of each")
print("loopback connection, not in any RSS (context only). connect: wall")
print("time for all N, and utime+stime per connection while connecting")
print("(for -tls rows: mostly the handshakes).")
print()
print("| server | N | runs | RSS KiB/conn | PSS KiB/conn | kept KiB/conn "
      "| vmas | kernel slab KiB/conn | connect s | connect CPU us/conn "
      "server, loadgen |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name in configs:
    for n in ns:
        rs = g.get((name, n), [])
        if not rs:
            why = next((s[2] for s in skips if s[0] == name
                        and int(s[1]) == n), "every run failed")
            print("| %s | %d | 0 | skipped: %s | | | | | | |" % (name, n,
                                                              why))
            continue
        noisy = sum(1 for r in rs if r[13] == "0")
        # Clock ticks spent connecting, in us per connection.
        def cpu(i):
            if any(len(r) <= i for r in rs):
                return "n/a"
            return "%.0f" % statistics.median(
                float(r[i]) / hz * 1e6 / n for r in rs)
        print("| %s | %d | %d%s | %s | %s | %s | %s | %s | %s | %s, %s |" % (
            name, n, len(rs), " (%d not quiet)" % noisy if noisy else "",
            cell(per_conn(rs, 2, 3)), cell(per_conn(rs, 5, 6)),
            cell(per_conn(rs, 2, 4)),
            "%d" % statistics.median(int(r[9]) for r in rs),
            cell(per_conn(rs, 10, 11)),
            "%.2f" % statistics.median(float(r[14]) for r in rs),
            cpu(17), cpu(18)))
print()
if len(ns) >= 2:
    a, b = min(ns), max(ns)
    print("Marginal cost from N=%d to N=%d, KiB per connection (slope of" %
          (a, b))
    print("the medians: leaves out what does not grow with N):")
    print()
    print("| server | RSS KiB/conn | PSS KiB/conn |")
    print("|---|---|---|")
    for name in configs:
        ra, rb = g.get((name, a), []), g.get((name, b), [])
        if not ra or not rb:
            continue
        def med(rs, i, j):
            return statistics.median(float(r[j]) - float(r[i]) for r in rs)
        print("| %s | %.2f | %.2f |" % (
            name, (med(rb, 2, 3) - med(ra, 2, 3)) / (b - a),
            (med(rb, 5, 6) - med(ra, 5, 6)) / (b - a)))
    print()
EOF
{
	cat "$tmp/head.txt"
	echo
	cat "$tmp/table.txt"
	if [ -s "$tmp/fails.txt" ] 2>/dev/null; then
		echo "Failed runs:"
		cat "$tmp/fails.txt"
		echo
	fi
	echo "Runs (server n rss0 rss1 rss2 pss0 pss1 pss2 vmas0 vmas1 slab0"
	echo "slab1 tcp_mem_pages1 quiet connect_s sources lg_threads"
	echo "srv_connect_ticks lg_connect_ticks; kB, ticks of 1/$hz s):"
	cat "$tmp/runs.txt"
} >"$out"
echo
cat "$tmp/table.txt"
[ -s "$tmp/fails.txt" ] 2>/dev/null && cat "$tmp/fails.txt"
echo "results: $out"
