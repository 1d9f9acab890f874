#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Echo servers side by side (issue 13): ringprot-echo on its io_uring and
# epoll backends (RINGPROT_BACKEND=uring|epoll) and bench/epoll-echo,
# level- and edge-triggered, all driven by bench/loadgen's closed loop.
#
# For each connection count and message size, each server gets RUNS runs,
# interleaved (run 1 of every server, then run 2...) so that drift on a
# shared VM hits all of them alike. The server is pinned to SERVER_CPU
# and loadgen (and perf) to CLIENT_CPU. Around exactly the measured
# interval (loadgen -g: every connection open, warmed up and idle at both
# ends) the script takes the server's utime+stime from /proc/PID/stat
# and counts its syscalls with perf's raw_syscalls:sys_enter tracepoint
# (not strace, which would stop each syscall and undo any batching).
# Each figure is the median over the runs.
#
# Other work on the machine spoils such figures, so before each run the
# script waits (up to QUIET_WAIT seconds) for the CPUs to be idle, and it
# reports "other%": CPU time (user+system, all CPUs) that neither the
# server, loadgen nor perf used during the interval, in % of one CPU.
#
# Environment: RUNS (3), DURATION seconds (3), WARMUP seconds (0.5),
# CONNS ("1 64 1000"), SIZES ("64 4096"), SERVERS (all four, by name),
# SERVER_CPU (0), CLIENT_CPU (1), QUIET_WAIT (10). The report goes to
# stdout and to bench/results/<date>-<sha>-echo.txt.
#
# Loopback caveat: TCP on loopback does the receiver's softirq work on
# the sender's CPU, so "server CPU" also holds part of the client's
# receive path and the other way round; it is the same for every server.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 1
cd "$root" || exit 1
# shellcheck source=bench/lib.sh
. bench/lib.sh

RUNS=${RUNS:-3}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-0.5}
CONNS=${CONNS:-"1 64 1000"}
SIZES=${SIZES:-"64 4096"}
SERVERS=${SERVERS:-"ringprot-uring ringprot-epoll epoll-lt epoll-et"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
QUIET_WAIT=${QUIET_WAIT:-10}
hz=$(getconf CLK_TCK)

die() {
	echo "echo.sh: $*" >&2
	exit 1
}

bash scripts/deps.sh || die "scripts/deps.sh failed"
if ! command -v perf >/dev/null 2>&1; then
	echo "echo.sh: installing linux-perf"
	as_root=()
	[ "$(id -u)" -eq 0 ] || as_root=(sudo)
	"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends linux-perf \
		</dev/null >/dev/null || echo "echo.sh: could not install linux-perf" >&2
fi
have_perf=0
if command -v perf >/dev/null 2>&1 &&
	perf stat -x, -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
	have_perf=1
else
	echo "echo.sh: perf cannot count raw_syscalls:sys_enter here;" \
		"syscalls per request will read n/a" >&2
fi

if [ -f build-bench/meson-private/coredata.dat ]; then
	meson setup --reconfigure build-bench --buildtype=release >/dev/null
else
	meson setup build-bench --buildtype=release >/dev/null
fi || die "meson setup failed"
meson compile -C build-bench >/dev/null || die "build failed"
loadgen=build-bench/bench/loadgen
for exe in "$loadgen" build-bench/bench/epoll-echo \
	build-bench/examples/ringprot-echo; do
	[ -x "$exe" ] || die "not built: $exe"
done

tmp=$(mktemp -d /tmp/ringprot-echo-bench.XXXXXX) || die "mktemp failed"
declare -A spid sport
perf_pid=""
lg_pid=""

cleanup() {
	local p
	[ -n "$perf_pid" ] && kill -INT "$perf_pid" 2>/dev/null
	[ -n "$lg_pid" ] && kill -TERM "$lg_pid" 2>/dev/null
	for p in "${spid[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

server_cmd() {
	case "$1" in
	ringprot-uring)
		echo "env RINGPROT_BACKEND=uring build-bench/examples/ringprot-echo -w 1 -l 127.0.0.1:0" ;;
	ringprot-epoll)
		echo "env RINGPROT_BACKEND=epoll build-bench/examples/ringprot-echo -w 1 -l 127.0.0.1:0" ;;
	# Connections as direct descriptors (-D): on epoll, registered
	# edge-triggered once instead of one epoll_ctl per wait.
	ringprot-uring-D)
		echo "env RINGPROT_BACKEND=uring build-bench/examples/ringprot-echo -w 1 -D -l 127.0.0.1:0" ;;
	ringprot-epoll-D)
		echo "env RINGPROT_BACKEND=epoll build-bench/examples/ringprot-echo -w 1 -D -l 127.0.0.1:0" ;;
	# Not in the default set: SQPOLL's poller thread is the server's,
	# pinned with it to SERVER_CPU by taskset (it spins for its idle
	# time after each submission, 100 ms by default).
	ringprot-sqpoll)
		echo "build-bench/examples/ringprot-echo -w 1 -e sqpoll -l 127.0.0.1:0" ;;
	# The poller pinned to the client's CPU instead (IORING_SETUP_SQ_AFF).
	ringprot-sqpoll-x)
		echo "build-bench/examples/ringprot-echo -w 1 -e sqpoll -o sqpoll_cpu=$CLIENT_CPU -l 127.0.0.1:0" ;;
	ringprot-defer)
		echo "build-bench/examples/ringprot-echo -w 1 -e defer -l 127.0.0.1:0" ;;
	epoll-lt) echo "build-bench/bench/epoll-echo -l 127.0.0.1:0" ;;
	epoll-et) echo "build-bench/bench/epoll-echo -e -l 127.0.0.1:0" ;;
	*) return 1 ;;
	esac
}

# Start server $1 on an ephemeral loopback port; sets spid and sport.
start_server() {
	local name=$1 cmd i port
	cmd=$(server_cmd "$name") || die "unknown server: $name"
	: >"$tmp/$name.out"
	# taskset and env exec: $! is the server's own pid.
	# shellcheck disable=SC2086
	taskset -c "$SERVER_CPU" $cmd >"$tmp/$name.out" 2>"$tmp/$name.err" &
	spid[$name]=$!
	for i in $(seq 100); do
		# "listening on addr:port", ringprot-echo adds " (engine)".
		port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)\( (.*)\)\{0,1\}$/\1/p' \
			"$tmp/$name.out")
		[ -n "$port" ] && break
		kill -0 "${spid[$name]}" 2>/dev/null ||
			die "$name exited: $(cat "$tmp/$name.err")"
		sleep 0.05
	done
	[ -n "$port" ] || die "$name did not report its port"
	sport[$name]=$port
}

# Which engines the process holds: io_uring and eventpoll fds.
engines() {
	local pid=$1 l u=0 e=0
	for l in /proc/"$pid"/fd/*; do
		case "$(readlink "$l" 2>/dev/null)" in
		*io_uring*) u=$((u + 1)) ;;
		*eventpoll*) e=$((e + 1)) ;;
		esac
	done
	echo "io_uring fds: $u, epoll fds: $e"
}

# One measured run: server $1, $2 connections, $3-byte messages.
# Appends "name conns size rps cpu_us sys_per_req p50 p99 lg_cpu failed
# other_pct".
measure() {
	local name=$1 c=$2 s=$3 pid=${spid[$1]} t0 t1 res sys="" kv
	local requests rps p50 p99 lgcpu failed cpu_us spr secs
	local b0 b1 l0 l1 p0=0 p1=0 other
	wait_quiet || echo "echo.sh: machine not quiet after ${QUIET_WAIT}s;" \
		"measuring anyway (see other%)" >&2
	coproc LG { exec taskset -c "$CLIENT_CPU" "$loadgen" -g -c "$c" -s "$s" \
		-d "$DURATION" -w "$WARMUP" "127.0.0.1:${sport[$name]}" \
		2>"$tmp/lg.err"; }
	lg_pid=$LG_PID
	if ! expect_line "loadgen: ready"; then
		echo "echo.sh: $name c=$c s=$s: loadgen failed:" \
			"$(cat "$tmp/lg.err")" >&2
		wait "$lg_pid" 2>/dev/null
		lg_pid=""
		return 1
	fi
	if [ "$have_perf" -eq 1 ]; then
		taskset -c "$CLIENT_CPU" perf stat -x, -e raw_syscalls:sys_enter \
			-p "$pid" -o "$tmp/perf.txt" 2>/dev/null &
		perf_pid=$!
		sleep 0.3 # let perf attach before the interval starts
	fi
	[ -n "$perf_pid" ] && p0=$(cpu_ticks "$perf_pid")
	l0=$(cpu_ticks "$lg_pid")
	b0=$(busy_ticks)
	t0=$(cpu_ticks "$pid")
	echo go >&"${LG[1]}"
	REPLY=""
	expect_line "result:"
	res=$REPLY
	t1=$(cpu_ticks "$pid")
	b1=$(busy_ticks)
	l1=$(cpu_ticks "$lg_pid")
	[ -n "$perf_pid" ] && p1=$(cpu_ticks "$perf_pid")
	if [ -n "$perf_pid" ]; then
		kill -INT "$perf_pid"
		wait "$perf_pid" 2>/dev/null
		perf_pid=""
		sys=$(awk -F, '/raw_syscalls:sys_enter/ {print $1; exit}' \
			"$tmp/perf.txt")
	fi
	echo quit >&"${LG[1]}"
	wait "$lg_pid" 2>/dev/null
	lg_pid=""
	[ -n "$res" ] || return 1
	for kv in $res; do
		case "$kv" in
		requests=*) requests=${kv#*=} ;;
		rps=*) rps=${kv#*=} ;;
		p50_us=*) p50=${kv#*=} ;;
		p99_us=*) p99=${kv#*=} ;;
		cpu_pct=*) lgcpu=${kv#*=} ;;
		failed=*) failed=${kv#*=} ;;
		secs=*) secs=${kv#*=} ;;
		esac
	done
	[ "${requests:-0}" -gt 0 ] || return 1
	cpu_us=$(awk -v d=$((t1 - t0)) -v hz="$hz" \
		-v n="$requests" 'BEGIN {printf "%.3f", d / hz * 1e6 / n}')
	other=$(awk -v d=$(((b1 - b0) - (t1 - t0) - (l1 - l0) - (p1 - p0))) \
		-v hz="$hz" -v s="$secs" 'BEGIN {printf "%.1f", d / hz / s * 100}')
	spr=nan
	case "$sys" in
	'' | *[!0-9]*) ;;
	*) spr=$(awk -v a="$sys" -v n="$requests" \
		'BEGIN {printf "%.3f", a / n}') ;;
	esac
	echo "$name $c $s $rps $cpu_us $spr $p50 $p99 $lgcpu $failed $other" \
		>>"$tmp/runs.txt"
	printf '  %-15s c=%-5s s=%-5s %9.0f req/s  cpu %7s us/req  sys %6s/req  p50 %8s us  p99 %8s us  loadgen %s%%  other %s%%\n' \
		"$name" "$c" "$s" "$rps" "$cpu_us" "$spr" "$p50" "$p99" "$lgcpu" "$other"
}

for name in $SERVERS; do
	start_server "$name"
done

sha=$(git rev-parse --short HEAD 2>/dev/null || echo nocommit)
mkdir -p bench/results
out=bench/results/$(date +%Y-%m-%d)-$sha-echo.txt
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
	echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "commit:   $(git rev-parse HEAD 2>/dev/null || echo none)"
	echo "kernel:   $(uname -r)"
	echo "cpu:      ${cpu:-unknown} ($(nproc) online)"
	echo "compiler: $(cc --version | head -n 1)"
	echo "liburing: $(pkg-config --modversion liburing)"
	echo "build:    meson buildtype=release (build-bench/)"
	echo "command:  RUNS=$RUNS DURATION=$DURATION WARMUP=$WARMUP" \
		"CONNS=\"$CONNS\" SIZES=\"$SIZES\" bench/echo.sh"
	echo "pinning:  servers on CPU $SERVER_CPU, loadgen and perf on CPU $CLIENT_CPU"
	for name in $SERVERS; do
		echo "server:   $name: $(server_cmd "$name")"
		echo "          pid ${spid[$name]}, $(engines "${spid[$name]}");" \
			"says: $(head -n 1 "$tmp/$name.out")"
	done
} >"$tmp/head.txt"
cat "$tmp/head.txt"
: >"$tmp/runs.txt"

for c in $CONNS; do
	for s in $SIZES; do
		for r in $(seq "$RUNS"); do
			echo "c=$c s=$s run $r/$RUNS"
			for name in $SERVERS; do
				measure "$name" "$c" "$s" ||
					echo "echo.sh: $name c=$c s=$s run $r failed" >&2
			done
		done
	done
done

for name in $SERVERS; do
	kill -TERM "${spid[$name]}"
	wait "${spid[$name]}"
	echo "exit:     $name: $(tail -n 1 "$tmp/$name.out")" >>"$tmp/head.txt"
	unset "spid[$name]"
done

python3 - "$tmp/runs.txt" "$SERVERS" >"$tmp/table.txt" <<'EOF'
import statistics, sys

rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
servers = sys.argv[2].split()
groups = {}
for r in rows:
    groups.setdefault((int(r[1]), int(r[2]), r[0]), []).append(r)

def med(key, col):
    vals = [float(r[col]) for r in groups.get(key, [])
            if r[col] not in ("nan", "n/a")]
    return statistics.median(vals) if vals else float("nan")

def fmt(v, f):
    return "n/a" if v != v else f % v

print("Medians; cpu = server utime+stime per request; sys = server syscalls")
print("per request (perf raw_syscalls:sys_enter); lg = loadgen CPU %;")
print("other = CPU % of one CPU used by other processes meanwhile.")
print()
hdr = "%-6s %-5s %-15s %10s %9s %8s %9s %9s %5s %6s %4s" % (
    "conns", "size", "server", "req/s", "cpu us", "sys/req", "p50 us",
    "p99 us", "lg%", "other%", "n")
print(hdr)
print("-" * len(hdr))
confs = sorted({(k[0], k[1]) for k in groups})
for c, s in confs:
    for name in servers:
        k = (c, s, name)
        if k not in groups:
            continue
        fails = sum(int(r[9]) for r in groups[k])
        print("%-6d %-5d %-15s %10s %9s %8s %9s %9s %5s %6s %4d%s" % (
            c, s, name, fmt(med(k, 3), "%.0f"), fmt(med(k, 4), "%.2f"),
            fmt(med(k, 5), "%.2f"), fmt(med(k, 6), "%.1f"),
            fmt(med(k, 7), "%.1f"), fmt(med(k, 8), "%.0f"),
            fmt(med(k, 10), "%.1f"), len(groups[k]),
            "  (%d connections failed)" % fails if fails else ""))
print()

pairs = [("ringprot-uring", "ringprot-epoll"),
         ("ringprot-epoll", "epoll-lt"), ("ringprot-epoll", "epoll-et"),
         ("ringprot-uring", "epoll-lt")]
pairs = [p for p in pairs if p[0] in servers and p[1] in servers]
if pairs:
    print("Ratios of the medians (a / b): req/s, cpu per request, "
          "syscalls per request")
    hdr = "%-6s %-5s %-32s %7s %7s %7s" % ("conns", "size", "a / b",
                                           "req/s", "cpu", "sys")
    print(hdr)
    print("-" * len(hdr))
    for c, s in confs:
        for a, b in pairs:
            ka, kb = (c, s, a), (c, s, b)
            def ratio(col):
                x, y = med(ka, col), med(kb, col)
                return fmt(x / y if y else float("nan"), "%.2f")
            print("%-6d %-5d %-32s %7s %7s %7s" % (
                c, s, a + " / " + b, ratio(3), ratio(4), ratio(5)))
EOF
{
	cat "$tmp/head.txt"
	echo
	cat "$tmp/table.txt"
	echo
	echo "Runs (server conns size req/s cpu_us sys/req p50 p99 lg% failed other%):"
	cat "$tmp/runs.txt"
} >"$out"
echo
cat "$tmp/table.txt"
echo "results: $out"
