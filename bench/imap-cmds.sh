#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# bench-run: scenario (bench/run runs this; see the top of bench/run)
# IMAP command benchmark (issue 17, "Commands"): throughput, server CPU
# and syscalls per command for ringprot-imapd against Dovecot and Cyrus,
# in the same run.
#
# Scenarios (SCENARIOS), each CONNS connections of bench/loadgen, closed
# loop (a connection sends its next command when the last one's tagged
# OK is in), for DURATION seconds after WARMUP seconds unmeasured:
#   noop    -m imap-noop as user0 (INBOX: one message): "c NOOP".
#   noop-py the same from bench/imap-noop.py (one Python asyncio process),
#           the kind of client issue 17's anchors were measured with:
#           it limits the rate, so the servers run below saturation.
#   fetch   -m imap-fetch as user1 (INBOX: FETCH_SMALL messages of about
#           SMALL_SIZE bytes, then one of LARGE_SIZE): per 10 requests 5
#           FETCH n (BODY.PEEK[HEADER]), 4 FETCH n BODY.PEEK[] of small
#           messages, 1 of the large one.
#   select  -m imap-select as user2 (INBOX: SELECT_N small messages):
#           SELECT INBOX again and again.
# Servers (SERVERS), all started once, privately, from bench/lib.sh
# (peer_start_*): ringprot, dovecot, cyrus in every scenario, and in
# noop only floor: bench/noop-floor, a single-threaded epoll server
# that answers each command "TAG OK" and does nothing else (no login,
# no mailbox): the kernel's price of one NOOP round trip on loopback,
# measured like the others, so that ringprot / floor is what the
# runtime and the IMAP server add to it.
# The IMAP servers each have their own config and data dir, loopback
# ports, same users and password, fsync on for all: ringprot fsync=yes, Dovecot mail_fsync =
# always, Cyrus as always), on one fresh loop-mounted ext4 (FS=loop) or
# /tmp (FS=host). Mailboxes are filled with the same messages
# (bench/imap-fill.py): written straight into the Maildirs of ringprot
# and Dovecot, delivered over LMTP to Cyrus (whose lmtpd adds its own
# Return-Path/Received lines). Dovecot without imap-hibernate; its
# imap-login in high-performance mode.
#
# Per run, server and scenario: loadgen opens every session (greeting,
# LOGIN, SELECT), warms up, and stops at its gate; then
#   - the server's CPU: utime + stime over its whole process tree from
#     /proc/PID/stat (bench/lib.sh tree_ticks, reaped children included),
#     read right before the measured interval and right after it;
#   - its syscalls: perf stat -e raw_syscalls:sys_enter -p <every pid of
#     the tree> (linux-perf; attached before the interval, stopped after
#     it: the sessions are idle outside it). If perf cannot count that
#     tracepoint here the report says so and has no syscall column.
#   - ops/s, latency, the client's own CPU from loadgen's result line;
#     other = busy CPU of the machine outside server and client.
# Runs are interleaved (run 1 of every scenario and server, then run 2);
# each figure is the median over RUNS runs with min-max. Servers run on
# SERVER_CPU, loadgen on CLIENT_CPU: with the client's CPU near 100% and
# the server's below, the client is what limits the rate.
#
# Environment: BENCH_MODE (quick or full: the defaults below, quick in
# brackets), RUNS (5 [2]), DURATION (10 [0.7]), WARMUP (1 [0.1]), CONNS
# (16), SCENARIOS ("noop noop-py fetch select"), SERVERS ("ringprot dovecot
# cyrus floor"), SELECT_N (10000 [1000]), FETCH_SMALL (200 [100]),
# SMALL_SIZE (4096), LARGE_SIZE (1048576), SERVER_CPU (0), CLIENT_CPU
# (1), WORKERS (1), QUIET_WAIT (10 [0]: quick does not wait for a quiet
# machine, other_cpu_pct says how busy it was), FS (loop), LOOP_SIZE
# (4G), PERF (1; 0: no
# syscall counts). Results: a text report in
# bench/results/<date>-<sha>-imap-cmds.txt, its rows as TSV next to it
# (.tsv) and, if BENCH_TSV is set, appended to that file.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 1
cd "$root" || exit 1
# shellcheck source=bench/lib.sh
. bench/lib.sh

BENCH_MODE=${BENCH_MODE:-full}
if [ "$BENCH_MODE" = quick ]; then
	q=1
else
	q=0
fi
pick() { if [ "$q" -eq 1 ]; then echo "$2"; else echo "$1"; fi; }
RUNS=${RUNS:-$(pick 5 2)}
DURATION=${DURATION:-$(pick 10 0.7)}
WARMUP=${WARMUP:-$(pick 1 0.1)}
CONNS=${CONNS:-16}
SCENARIOS=${SCENARIOS:-"noop noop-py fetch select"}
SERVERS=${SERVERS:-"ringprot dovecot cyrus floor"}
SELECT_N=${SELECT_N:-$(pick 10000 1000)}
FETCH_SMALL=${FETCH_SMALL:-$(pick 200 100)}
SMALL_SIZE=${SMALL_SIZE:-4096}
LARGE_SIZE=${LARGE_SIZE:-1048576}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
WORKERS=${WORKERS:-1}
QUIET_WAIT=${QUIET_WAIT:-$(pick 10 0)}
FS=${FS:-loop}
LOOP_SIZE=${LOOP_SIZE:-4G}
PERF=${PERF:-1}
PASS=bench-pw
NUSERS=3
cyrus_bin=/usr/lib/cyrus/bin
hz=$(getconf CLK_TCK)

die() {
	echo "imap-cmds.sh: $*" >&2
	exit 1
}

apt_install() {
	echo "imap-cmds.sh: installing $*" >&2
	env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends "$@" </dev/null >/dev/null
}

[ "$(id -u)" -eq 0 ] || die "run as root (loop mount, the peers' users, perf)"
bash scripts/deps.sh >/dev/null || die "scripts/deps.sh failed"
command -v saslpasswd2 >/dev/null || apt_install sasl2-bin ||
	die "no saslpasswd2"
case " $SERVERS " in
*" dovecot "*)
	[ -x /usr/lib/dovecot/imap ] && [ -x /usr/lib/dovecot/lmtp ] ||
		apt_install dovecot-core dovecot-imapd dovecot-lmtpd ||
		die "could not install dovecot-imapd, dovecot-lmtpd"
	;;
esac
case " $SERVERS " in
*" cyrus "*)
	[ -x "$cyrus_bin/lmtpd" ] || apt_install cyrus-common ||
		die "could not install cyrus-common"
	;;
esac
perf_ok=""
perf_why="PERF=0"
if [ "$PERF" -eq 1 ]; then
	command -v perf >/dev/null || apt_install linux-perf
	if ! command -v perf >/dev/null; then
		perf_why="no perf (apt-get install linux-perf failed)"
	elif out=$(perf stat -x, -e raw_syscalls:sys_enter true 2>&1) &&
		grep -q 'raw_syscalls:sys_enter' <<<"$out" &&
		! grep -q 'not supported\|not counted' <<<"$out"; then
		perf_ok=1
	else
		perf_why="perf cannot count raw_syscalls:sys_enter here: $(head -n 2 <<<"$out" | tr '\n' ' ')"
	fi
fi

# BUILD_DIR: a release build dir (default build-bench), made if missing.
bench_build
imapd=$bdir/examples/ringprot-imapd
loadgen=$bdir/bench/loadgen
floor=$bdir/bench/noop-floor
for exe in "$imapd" "$loadgen" "$floor"; do
	[ -x "$exe" ] || die "not built: $exe"
done

tmp=$(mktemp -d /tmp/ringprot-imap-cmds.XXXXXX) || die "mktemp failed"
lg_pid=""
perf_pid=""
mounted=""
declare -A spids sports

cleanup() {
	local n
	[ -n "$perf_pid" ] && kill -INT "$perf_pid" 2>/dev/null
	[ -n "$lg_pid" ] && kill -TERM "$lg_pid" 2>/dev/null
	for n in "${!spids[@]}"; do
		stop_tree "${spids[$n]}"
	done
	wait 2>/dev/null
	if [ -n "${KEEP:-}" ]; then
		echo "imap-cmds.sh: KEEP: left $tmp (and its mount)" >&2
		return
	fi
	store_unmount
}
trap cleanup EXIT
trap 'exit 130' INT TERM

store_mount
[[ " $SERVERS " == *" cyrus "* ]] && peer_cyrus_unpack "$tmp/cyrus-imapd"

# Mailboxes of server $1 (started: its dir is $tmp/$1, its LMTP lport).
fill() {
	local name=$1 d=$tmp/$1 md
	case "$name" in
	ringprot | dovecot)
		if [ "$name" = ringprot ]; then
			md=$d/mail/users
			own=""
		else
			md=$d/mail
			own="--owner 65534:65534"
		fi
		# shellcheck disable=SC2086
		python3 bench/imap-fill.py maildir "$md/user0" 1 "$SMALL_SIZE" $own &&
			python3 bench/imap-fill.py maildir "$md/user1" "$FETCH_SMALL" \
				"$SMALL_SIZE" --large "$LARGE_SIZE" $own &&
			python3 bench/imap-fill.py maildir "$md/user2" "$SELECT_N" \
				"$SMALL_SIZE" $own
		;;
	cyrus)
		python3 bench/imap-fill.py lmtp "$lport" user0 1 "$SMALL_SIZE" &&
			python3 bench/imap-fill.py lmtp "$lport" user1 "$FETCH_SMALL" \
				"$SMALL_SIZE" --large "$LARGE_SIZE" &&
			python3 bench/imap-fill.py lmtp "$lport" user2 "$SELECT_N" \
				"$SMALL_SIZE" --parallel 8
		;;
	floor) ;; # no mailboxes
	esac
}

# Does server $1 take part in scenario $2? The floor answers NOOPs only.
takes_part() {
	[ "$1" != floor ] || [ "$2" = noop ]
}

start_all() {
	local name t0
	for name in $SERVERS; do
		mkdir -p "$tmp/$name"
		case "$name" in
		ringprot) peer_start_ringprot "$tmp/ringprot" ;;
		dovecot) peer_start_dovecot "$tmp/dovecot" 0 $((CONNS * 2 + 20)) ;;
		cyrus) peer_start_cyrus "$tmp/cyrus" $((CONNS * 2 + 20)) ;;
		floor) peer_start_floor "$tmp/floor" ;;
		*) die "unknown server $name" ;;
		esac
		spids[$name]=$spid
		sports[$name]=$sport
		echo "server:   $name: $scmd (pid $spid, imap $sport, lmtp $lport)" >>"$tmp/servers.txt"
		t0=$SECONDS
		fill "$name" || die "$name: filling the mailboxes failed"
		echo "imap-cmds.sh: $name started and filled in $((SECONDS - t0)) s" >&2
	done
}

# Bring every mailbox to rest before any measurement: one session per
# user and server selects it once (Maildir servers move new/ to cur/,
# Dovecot builds its index, Cyrus its caches), then a pause past
# ringprot's 2 s same-tick guard (a directory changed in the last 2 s is
# listed again on every sync). Without it the first run measured that
# one-off work: syscalls per NOOP went from 3 to 12. The three users of
# a server at once (nothing is measured here), and the pause counts from
# ringprot's SELECTs: the other servers' take part of it.
settle() {
	local name u t_rp
	local -A upid
	t_rp=$(date +%s.%N)
	for name in $SERVERS; do
		[ "$name" = floor ] && continue
		for u in user0 user1 user2; do
			taskset -c "$CLIENT_CPU" "$loadgen" -m imap-noop -U "$u" \
				-P "$PASS" -c 1 -d 0.1 -w 0 \
				"127.0.0.1:${sports[$name]}" >"$tmp/settle-$u.out" 2>&1 &
			upid[$u]=$!
		done
		for u in user0 user1 user2; do
			wait "${upid[$u]}" ||
				die "$name: $u: first SELECT failed: $(tail -n 2 "$tmp/settle-$u.out")"
		done
		[ "$name" = ringprot ] && t_rp=$(date +%s.%N)
	done
	sleep "$(awk -v t="$t_rp" -v now="$(date +%s.%N)" \
		'BEGIN {s = 3 - (now - t); printf "%.2f", (s > 0 ? s : 0)}')"
}

# loadgen arguments of scenario $1.
lg_args() {
	case "$1" in
	noop | noop-py) echo "-m imap-noop -U user0" ;;
	fetch) echo "-m imap-fetch -U user1 -s 65536" ;;
	select) echo "-m imap-select -U user2" ;;
	*) die "unknown scenario $1" ;;
	esac
}

# One measured run of scenario $2 against server $1: appends to rows.txt
# "scenario server requests secs cpu_ticks syscalls(or -) client_cpu_pct
#  p50_us p99_us errors failed data_bytes other_pct".
measure() {
	local name=$1 scen=$2 pid=${spids[$1]} port=${sports[$1]} pids t0 t1
	local b0 b1 sc="-" res secs req cpu ccpu other
	wait_quiet || echo "imap-cmds.sh: machine still busy after ${QUIET_WAIT}s; measuring anyway" >&2
	: >"$tmp/lg.out"
	LG_LOG=$tmp/lg.out
	local cmd
	if [ "$scen" = noop-py ]; then
		cmd=(python3 "$root/bench/imap-noop.py" "127.0.0.1:$port" user0
			"$PASS" "$CONNS" "$DURATION" "$WARMUP")
	else
		# shellcheck disable=SC2207
		cmd=("$loadgen" $(lg_args "$scen") -P "$PASS" -c "$CONNS"
			-d "$DURATION" -w "$WARMUP" -g "127.0.0.1:$port")
	fi
	coproc LG { exec taskset -c "$CLIENT_CPU" "${cmd[@]}" 2>"$tmp/lg.err"; }
	# shellcheck disable=SC2153 # set by coproc
	lg_pid=$LG_PID
	if ! expect_line "loadgen: ready" 300; then
		echo "imap-cmds.sh: $name $scen: sessions did not open:" >&2
		tail -n 3 "$tmp/lg.out" "$tmp/lg.err" >&2
		echo "--- $name $scen: $(tail -n 2 "$tmp/lg.out" "$tmp/lg.err" | tr '\n' ' ')" >>"$tmp/evidence.txt"
		kill -TERM "$lg_pid" 2>/dev/null
		wait "$lg_pid" 2>/dev/null
		lg_pid=""
		return 1
	fi
	pids=$(tree_pids "$pid")
	if [ -n "$perf_ok" ]; then
		# shellcheck disable=SC2086
		perf stat -x, -e raw_syscalls:sys_enter -o "$tmp/perf.out" \
			-p "$(echo $pids | tr ' ' ,)" 2>/dev/null &
		perf_pid=$!
		sleep 0.3 # attached before the interval starts
	fi
	t0=$(tree_ticks "$pid" none) || die "$name died"
	b0=$(busy_ticks)
	echo go >&"${LG[1]}"
	expect_line "result:" $((${DURATION%.*} + 120)) || {
		echo "imap-cmds.sh: $name $scen: no result" >&2
		return 1
	}
	res=$REPLY
	t1=$(tree_ticks "$pid" none) || die "$name died"
	b1=$(busy_ticks)
	if [ -n "$perf_pid" ]; then
		kill -INT "$perf_pid" 2>/dev/null
		wait "$perf_pid" 2>/dev/null
		perf_pid=""
		sc=$(awk -F, '/raw_syscalls:sys_enter/ {print $1}' "$tmp/perf.out")
		case "$sc" in '' | *[!0-9]*) sc="-" ;; esac
	fi
	expect_line "loadgen: done" 10
	echo quit >&"${LG[1]}"
	wait "$lg_pid"
	lg_pid=""
	kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$res"; }
	secs=$(kv secs)
	req=$(kv requests)
	ccpu=$(kv cpu_pct)
	cpu=$((${t1%% *} - ${t0%% *}))
	# Busy ticks of the machine less the server's and the client's.
	other=$(awk -v b="$((b1 - b0))" -v s="$cpu" -v c="$ccpu" -v t="$secs" \
		-v hz="$hz" 'BEGIN {o = (b - s) / hz / t * 100 - c; if (o < 0) o = 0; printf "%.0f", o}')
	echo "$scen $name $req $secs $cpu $sc $ccpu $(kv p50_us) $(kv p99_us) $(kv errors) $(kv failed) $(kv data_bytes) $other" >>"$tmp/rows.txt"
	awk -v n="$name" -v s="$scen" -v r="$req" -v t="$secs" -v c="$cpu" \
		-v hz="$hz" -v sc="$sc" -v cc="$ccpu" 'BEGIN {
		printf "  %-7s %-9s %9.0f ops/s  server cpu %7.1f us/op (%3.0f%% of a CPU)  syscalls/op %s  client cpu %s%%\n",
			s, n, r / t, c / hz * 1e6 / r, c / hz / t * 100,
			sc == "-" ? "n/a" : sprintf("%.2f", sc / r), cc }'
	grep -q "failed at the server" "$tmp/lg.out" &&
		echo "--- $name $scen: $(grep 'failed at the server' "$tmp/lg.out") $(head -n 1 "$tmp/lg.err")" >>"$tmp/evidence.txt"
	return 0
}

result_file imap-cmds
: >"$tmp/servers.txt"
: >"$tmp/rows.txt"
: >"$tmp/evidence.txt"
start_all
settle
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
	echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "commit:   $(git rev-parse HEAD 2>/dev/null || echo none)$dirty"
	echo "kernel:   $(uname -r)"
	echo "cpu:      ${cpu:-unknown} ($(nproc) online)"
	if [ -n "$mounted" ]; then
		echo "storage:  a fresh ext4 (mkfs.ext4 defaults) in a $LOOP_SIZE sparse image, loop-mounted (FS=loop)"
	else
		echo "storage:  $(stat -f -c %T "$tmp") under /tmp (FS=host)"
	fi
	echo "dovecot:  $(dovecot --version 2>/dev/null || echo none)"
	echo "cyrus:    cyrus-common $(dpkg-query -W -f '${Version}' cyrus-common 2>/dev/null || echo none), cyrus-imapd ${cyrus_ver:-none} (dpkg-deb -x)"
	echo "command:  BENCH_MODE=$BENCH_MODE RUNS=$RUNS DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS" \
		"SCENARIOS=\"$SCENARIOS\" SERVERS=\"$SERVERS\" SELECT_N=$SELECT_N FETCH_SMALL=$FETCH_SMALL" \
		"SMALL_SIZE=$SMALL_SIZE LARGE_SIZE=$LARGE_SIZE WORKERS=$WORKERS bench/imap-cmds.sh"
	echo "pinning:  servers on CPU $SERVER_CPU, loadgen on CPU $CLIENT_CPU"
	echo "loadgen:  loadgen -m imap-{noop,fetch,select} -c $CONNS -d $DURATION -w $WARMUP -g"
	if [ -n "$perf_ok" ]; then
		echo "syscalls: perf stat -e raw_syscalls:sys_enter -p <server tree> ($(perf --version 2>/dev/null))"
	else
		echo "syscalls: not counted: $perf_why"
	fi
	cat "$tmp/servers.txt"
} >"$tmp/head.txt"
cat "$tmp/head.txt"

for r in $(seq "$RUNS"); do
	echo "run $r/$RUNS"
	for scen in $SCENARIOS; do
		for name in $SERVERS; do
			takes_part "$name" "$scen" || continue
			measure "$name" "$scen" ||
				echo "$scen $name run $r failed" >>"$tmp/fails.txt"
		done
	done
done

tsv=${out%.txt}.tsv
python3 - "$tmp/rows.txt" "$SERVERS" "$SCENARIOS" "$hz" "$tsv" <<'EOF' >"$tmp/table.txt"
import statistics, sys

rows_f, servers, scens, hz, tsv = sys.argv[1], sys.argv[2].split(), \
    sys.argv[3].split(), int(sys.argv[4]), sys.argv[5]
g = {}
for l in open(rows_f):
    f = l.split()
    if len(f) < 13:
        continue
    g.setdefault((f[0], f[1]), []).append(f)

def num(x):
    return None if x == "-" else float(x)

# metric: (unit, function of a row, digits)
metrics = [
    ("ops_per_s", "ops/s", lambda f: float(f[2]) / float(f[3]), 0),
    ("cpu_us_per_op", "us", lambda f: float(f[4]) / hz * 1e6 / float(f[2]), 1),
    ("syscalls_per_op", "syscalls",
     lambda f: None if num(f[5]) is None else float(f[5]) / float(f[2]), 2),
    ("server_cpu_pct", "% of a CPU", lambda f: float(f[4]) / hz / float(f[3]) * 100, 0),
    ("client_cpu_pct", "% of a CPU", lambda f: float(f[6]), 0),
    ("other_cpu_pct", "% of a CPU", lambda f: float(f[12]), 0),
    ("latency_p50_us", "us", lambda f: float(f[7]), 0),
    ("latency_p99_us", "us", lambda f: float(f[8]), 0),
    ("errors", "replies", lambda f: float(f[9]), 0),
]
fetch_metrics = [
    ("mib_per_s", "MiB/s", lambda f: float(f[11]) / 2**20 / float(f[3]), 1),
    ("cpu_ms_per_mib", "ms",
     lambda f: float(f[4]) / hz * 1e3 / (float(f[11]) / 2**20) if float(f[11]) > 0 else None, 2),
]
titles = {"noop": "NOOP round trips", "noop-py": "NOOP round trips, Python asyncio client (as the anchors)", "fetch": "FETCH mix (5 headers, 4 small, 1 large per 10)",
          "select": "SELECT of the big INBOX"}

def stats(rs, fn):
    v = [x for x in (fn(f) for f in rs) if x is not None]
    if not v:
        return None
    return statistics.median(v), min(v), max(v)

def cell(s, d):
    if s is None:
        return "n/a"
    m, lo, hi = s
    fmt = "%%.%df" % d
    return (fmt % m) if lo == hi else (fmt + " (" + fmt + "-" + fmt + ")") % (m, lo, hi)

out = open(tsv, "w")
for scen in scens:
    ms = metrics + (fetch_metrics if scen == "fetch" else [])
    print("### imap-%s: %s\n" % (scen, titles.get(scen, scen)))
    print("Median (min-max) over the runs.\n")
    cols = ["ops/s", "server CPU us/op", "syscalls/op", "server CPU %",
            "client CPU %", "other CPU %", "p50 us", "p99 us", "NO/BAD"]
    if scen == "fetch":
        cols += ["MiB/s", "server CPU ms/MiB"]
    print("| server | runs | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    med = {}
    for name in servers:
        rs = g.get((scen, name), [])
        if not rs and name == "floor":
            continue  # the floor runs in noop only
        cells = []
        for key, unit, fn, d in ms:
            s = stats(rs, fn) if rs else None
            cells.append(cell(s, d))
            if s is not None:
                med[(name, key)] = s[0]
                out.write("imap-%s\t%s\t%s\t%.6g\t%.6g\t%.6g\t%s\t\n" %
                          (scen, name, key, s[0], s[1], s[2], unit))
        print("| %s | %d | %s |" % (name, len(rs), " | ".join(cells)))
    print()
    if "ringprot" in servers:
        for p in servers:
            if p == "ringprot":
                continue
            parts = []
            for key, label in (("ops_per_s", "ops/s"), ("cpu_us_per_op", "CPU/op"),
                               ("syscalls_per_op", "syscalls/op"),
                               ("cpu_ms_per_mib", "CPU/MiB")):
                a, b = med.get(("ringprot", key)), med.get((p, key))
                if a and b:
                    parts.append("%s %.2fx" % (label, a / b))
            if parts:
                print("ringprot / %s: %s  " % (p, ", ".join(parts)))
        print()
out.close()
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
	if [ -s "$tmp/evidence.txt" ]; then
		echo "Evidence:"
		cat "$tmp/evidence.txt"
		echo
	fi
	echo "Runs (scenario server requests secs server_cpu_ticks(hz=$hz) syscalls client_cpu_pct p50_us p99_us errors failed data_bytes other_cpu_pct):"
	cat "$tmp/rows.txt"
} >"$out"
[ -n "${BENCH_TSV:-}" ] && cat "$tsv" >>"$BENCH_TSV"
echo
cat "$tmp/table.txt"
echo "results: $out"
echo "tsv:     $tsv"
