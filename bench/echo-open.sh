#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Echo latency under a fixed offered load (issue 14: echo closed and open
# loop with latency percentiles): bench/loadgen's open loop (-r) against
# ringprot-echo on io_uring and on epoll (-w 1) and the hand-written
# epoll twin (bench/epoll-echo), at a series of rates up to and past
# saturation, plus the closed loop ("closed" in RATES) for each server
# as the saturation reference.
#
# Open loop: requests go out on a schedule spread evenly over CONNS
# connections, and each latency counts from when its request was due, so
# a server that falls behind is charged for the whole queue it built (no
# coordinated omission). loadgen reports the rate achieved against the
# rate asked and who fell behind: "server" when more than 1% of the
# requests were due while their connection still awaited a reply or were
# never sent, "client" when loadgen's own send lag passed 1 ms at p99
# (then the latencies hold the client's delay too and say little about
# the server). With POLL=1 (default) loadgen busy-polls its ring (-B):
# no wake-up per request, so the client keeps up to well past the
# servers' saturation, at the cost of its whole CPU (its lg% reads 100).
#
# Each server gets RUNS runs per rate, interleaved (run 1 of every
# server, then run 2...); the server is pinned to SERVER_CPU, loadgen to
# CLIENT_CPU. Before each run the script waits up to QUIET_WAIT seconds
# for the CPUs to be idle; "other%" is CPU time (all CPUs, % of one) that
# neither the server nor loadgen used during the measured interval. A
# run with other% over MAX_OTHER is set aside (listed at the end, not in
# the table) and done again, up to TRIES times in all; the last try
# counts whatever it saw. Figures are medians over the runs. On a machine that is never quiet
# (a shared CI box), NICE=-20 runs the server and loadgen at that nice
# level, so that other work on the same CPUs mostly waits while they run
# (it still gets some CPU, unlike with a real-time policy); the header
# says so.
#
# Environment: RUNS (3), DURATION seconds (3), WARMUP seconds (0.5),
# CONNS (64), SIZE bytes (64), RATES ("10000 50000 100000 150000 200000
# 250000 closed"), SERVERS ("ringprot-uring ringprot-epoll epoll-lt"),
# POLL (1), NICE (none), MAX_OTHER % (15), TRIES (4), SERVER_CPU (0),
# CLIENT_CPU (1), QUIET_WAIT (20), BUILD
# (build-bench, configured release as bench/echo.sh does; another
# existing build dir is only compiled). The report goes to stdout and to
# bench/results/<date>-<sha>-echo-open.txt.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 1
cd "$root" || exit 1
# shellcheck source=bench/lib.sh
. bench/lib.sh

RUNS=${RUNS:-3}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-0.5}
CONNS=${CONNS:-64}
SIZE=${SIZE:-64}
RATES=${RATES:-"10000 50000 100000 150000 200000 250000 closed"}
SERVERS=${SERVERS:-"ringprot-uring ringprot-epoll epoll-lt"}
POLL=${POLL:-1}
NICE=${NICE:-}
MAX_OTHER=${MAX_OTHER:-15}
TRIES=${TRIES:-4}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
QUIET_WAIT=${QUIET_WAIT:-20}
BUILD=${BUILD:-build-bench}
hz=$(getconf CLK_TCK)

die() {
	echo "echo-open.sh: $*" >&2
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
for exe in "$loadgen" "$BUILD/bench/epoll-echo" \
	"$BUILD/examples/ringprot-echo"; do
	[ -x "$exe" ] || die "not built: $exe"
done
buildtype=$(meson introspect --buildoptions "$BUILD" 2>/dev/null |
	python3 -c 'import json,sys
print(next((o["value"] for o in json.load(sys.stdin)
            if o["name"] == "buildtype"), "?"))' 2>/dev/null)
poll=()
[ "$POLL" = 1 ] && poll=(-B)
prio=()
[ -n "$NICE" ] && prio=(nice -n "$NICE")

tmp=$(mktemp -d /tmp/ringprot-echo-open.XXXXXX) || die "mktemp failed"
declare -A spid sport
lg_pid=""

cleanup() {
	local p
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
		echo "env RINGPROT_BACKEND=uring $BUILD/examples/ringprot-echo -w 1 -l 127.0.0.1:0" ;;
	ringprot-epoll)
		echo "env RINGPROT_BACKEND=epoll $BUILD/examples/ringprot-echo -w 1 -l 127.0.0.1:0" ;;
	ringprot-uring-D)
		echo "env RINGPROT_BACKEND=uring $BUILD/examples/ringprot-echo -w 1 -D -l 127.0.0.1:0" ;;
	ringprot-epoll-D)
		echo "env RINGPROT_BACKEND=epoll $BUILD/examples/ringprot-echo -w 1 -D -l 127.0.0.1:0" ;;
	epoll-lt) echo "$BUILD/bench/epoll-echo -l 127.0.0.1:0" ;;
	epoll-et) echo "$BUILD/bench/epoll-echo -e -l 127.0.0.1:0" ;;
	*) return 1 ;;
	esac
}

# Start server $1 on an ephemeral loopback port; sets spid and sport.
start_server() {
	local name=$1 cmd i port=""
	cmd=$(server_cmd "$name") || die "unknown server: $name"
	# taskset and env exec: $! is the server's own pid.
	# shellcheck disable=SC2086
	taskset -c "$SERVER_CPU" "${prio[@]}" $cmd >"$tmp/$name.out" \
		2>"$tmp/$name.err" &
	spid[$name]=$!
	for i in $(seq 100); do
		# "listening on addr:port", ringprot-echo adds " (engine)".
		port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)\( (.*)\)\{0,1\}$/\1/p' \
			"$tmp/$name.out" | head -n 1)
		[ -n "$port" ] && break
		kill -0 "${spid[$name]}" 2>/dev/null ||
			die "$name exited: $(head -n 3 "$tmp/$name.err")"
		sleep 0.05
	done
	[ -n "$port" ] || die "$name did not report its port"
	sport[$name]=$port
}

# One measured run: server $1 at rate $2 (or "closed"). Writes to
# run.txt "name rate rps p50 p99 p999 max behind lag_p99 late_pct
# unsent cpu_us lg_pct other_pct failed".
measure() {
	local name=$1 rate=$2 pid=${spid[$1]} res kv rargs=()
	local t0 t1 b0 b1 l0 l1 other cpu_us late
	local requests=0 rps p50 p99 p999 max behind=closed lagp99=nan
	local due=0 backlogged=0 unsent=0 lgcpu failed secs
	[ "$rate" != closed ] && rargs=(-r "$rate" "${poll[@]}")
	wait_quiet || echo "echo-open.sh: machine not quiet after" \
		"${QUIET_WAIT}s; measuring anyway (see other%)" >&2
	coproc LG { exec taskset -c "$CLIENT_CPU" "${prio[@]}" "$loadgen" -g \
		-c "$CONNS" -s "$SIZE" -d "$DURATION" -w "$WARMUP" \
		"${rargs[@]}" "127.0.0.1:${sport[$name]}" 2>"$tmp/lg.err"; }
	# shellcheck disable=SC2153 # set by coproc
	lg_pid=$LG_PID
	if ! expect_line "loadgen: ready"; then
		echo "echo-open.sh: $name r=$rate: loadgen failed:" \
			"$(head -n 3 "$tmp/lg.err")" >&2
		wait "$lg_pid" 2>/dev/null
		lg_pid=""
		return 1
	fi
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
		p999_us=*) p999=${kv#*=} ;;
		max_us=*) max=${kv#*=} ;;
		cpu_pct=*) lgcpu=${kv#*=} ;;
		failed=*) failed=${kv#*=} ;;
		secs=*) secs=${kv#*=} ;;
		due=*) due=${kv#*=} ;;
		backlogged=*) backlogged=${kv#*=} ;;
		unsent=*) unsent=${kv#*=} ;;
		lag_p99_us=*) lagp99=${kv#*=} ;;
		behind=*) behind=${kv#*=} ;;
		esac
	done
	[ "$requests" -gt 0 ] || return 1
	cpu_us=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v n="$requests" \
		'BEGIN {printf "%.3f", d / hz * 1e6 / n}')
	other=$(awk -v d=$(((b1 - b0) - (t1 - t0) - (l1 - l0))) -v hz="$hz" \
		-v s="$secs" 'BEGIN {printf "%.1f", d / hz / s * 100}')
	late=$(awk -v b="$backlogged" -v u="$unsent" -v d="$due" \
		'BEGIN {printf "%.2f", (d > 0 ? 100 * (b + u) / d : 0)}')
	echo "$name $rate $rps $p50 $p99 $p999 $max $behind $lagp99 $late" \
		"$unsent $cpu_us $lgcpu $other $failed" >"$tmp/run.txt"
	printf '  %-15s r=%-7s %9.0f req/s  p50 %9s  p99 %9s  p99.9 %9s  max %9s us  behind %-6s late %6s%%  lg %s%%  other %s%%\n' \
		"$name" "$rate" "$rps" "$p50" "$p99" "$p999" "$max" "$behind" \
		"$late" "$lgcpu" "$other"
}

for name in $SERVERS; do
	start_server "$name"
done

result_file echo-open
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
	echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "commit:   $(git rev-parse HEAD 2>/dev/null || echo none)$dirty"
	echo "kernel:   $(uname -r)"
	echo "cpu:      ${cpu:-unknown} ($(nproc) online)"
	echo "compiler: $(cc --version | head -n 1)"
	echo "liburing: $(pkg-config --modversion liburing)"
	echo "build:    meson buildtype=${buildtype:-?} ($BUILD/)"
	echo "command:  RUNS=$RUNS DURATION=$DURATION WARMUP=$WARMUP" \
		"CONNS=$CONNS SIZE=$SIZE RATES=\"$RATES\" POLL=$POLL" \
		"${NICE:+NICE=$NICE }MAX_OTHER=$MAX_OTHER TRIES=$TRIES" \
		"bench/echo-open.sh"
	echo "loadgen:  $loadgen -g -c $CONNS -s $SIZE -d $DURATION" \
		"-w $WARMUP -r RATE ${poll[*]} (closed: without -r)"
	echo "pinning:  servers on CPU $SERVER_CPU, loadgen on CPU" \
		"$CLIENT_CPU${NICE:+, both at nice $NICE}"
	for name in $SERVERS; do
		echo "server:   $name: $(server_cmd "$name");" \
			"says: $(head -n 1 "$tmp/$name.out")"
	done
} >"$tmp/head.txt"
cat "$tmp/head.txt"
: >"$tmp/runs.txt"
: >"$tmp/disturbed.txt"

for rate in $RATES; do
	for r in $(seq "$RUNS"); do
		echo "rate $rate, run $r/$RUNS"
		for name in $SERVERS; do
			for t in $(seq "$TRIES"); do
				if ! measure "$name" "$rate"; then
					echo "echo-open.sh: $name r=$rate run $r" \
						"failed" >&2
					break
				fi
				# other% is column 14: keep a quiet run, or the last.
				if [ "$t" -lt "$TRIES" ] && awk -v m="$MAX_OTHER" \
					'{exit !($14 > m)}' "$tmp/run.txt"; then
					cat "$tmp/run.txt" >>"$tmp/disturbed.txt"
					echo "  (other% over $MAX_OTHER: again)"
					continue
				fi
				cat "$tmp/run.txt" >>"$tmp/runs.txt"
				break
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

python3 - "$tmp/runs.txt" "$SERVERS" "$RATES" >"$tmp/table.txt" <<'EOF'
import statistics, sys

rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
servers = sys.argv[2].split()
rates = sys.argv[3].split()
g = {}
for r in rows:
    g.setdefault((r[1], r[0]), []).append(r)

def med(rs, i, f="%.0f"):
    vals = [float(r[i]) for r in rs if r[i] not in ("nan", "n/a")]
    return f % statistics.median(vals) if vals else "n/a"

print("Open-loop echo: latency from each request's due time, in us;")
print("medians over the runs. asked = offered req/s over all connections")
print("(closed: the closed loop, one request outstanding per connection:")
print("the saturation reference). behind: who fell behind in each run")
print("(server: over 1% of requests due while their connection still")
print("awaited a reply, or never sent; client: loadgen's send lag p99 over")
print("1 ms). late% = those requests in % of all due. srv us/req = server")
print("utime+stime per request; lg% = loadgen CPU; other% = CPU % of one")
print("CPU used by other processes meanwhile.")
print()
print("| asked | server | achieved req/s | p50 | p99 | p99.9 | max | behind "
      "| late% | client lag p99 | srv us/req | lg% | other% | runs |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for rate in rates:
    for name in servers:
        rs = g.get((rate, name), [])
        if not rs:
            continue
        fails = sum(int(r[14]) for r in rs)
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s "
              "| %s | %d%s |" % (
                  rate, name, med(rs, 2), med(rs, 3, "%.1f"),
                  med(rs, 4, "%.1f"), med(rs, 5, "%.1f"), med(rs, 6, "%.1f"),
                  ",".join(r[7] for r in rs), med(rs, 9, "%.2f"),
                  med(rs, 8, "%.1f"), med(rs, 11, "%.2f"), med(rs, 12),
                  med(rs, 13, "%.1f"), len(rs),
                  " (%d conns failed)" % fails if fails else ""))
print()
EOF
{
	cat "$tmp/head.txt"
	echo
	cat "$tmp/table.txt"
	echo "Runs (server rate req/s p50 p99 p99.9 max behind lag_p99 late%"
	echo "unsent srv_us/req lg% other% failed):"
	cat "$tmp/runs.txt"
	if [ -s "$tmp/disturbed.txt" ]; then
		echo
		echo "Set aside, other% over $MAX_OTHER (same columns):"
		cat "$tmp/disturbed.txt"
	fi
} >"$out"
echo
cat "$tmp/table.txt"
echo "results: $out"
