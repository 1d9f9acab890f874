#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# bench-run: scenario (bench/run runs this; see the top of bench/run)
# IMAP IDLE benchmark (issue 17): server memory per connection parked in
# IDLE, and the delay from a delivery's final LMTP 250 to the idlers'
# "* N EXISTS", for ringprot-imapd against Dovecot (with and without
# imap-hibernate) and Cyrus, in the same run.
#
# Servers (SERVERS), each run privately from its own configuration in a
# temporary directory, on loopback ports, stopped by pid:
#   ringprot     ringprot-imapd -D -w WORKERS, LMTP in the same process
#                (lmtp.listen), fsync=yes; users in a sasldb.
#   dovecot-hib  dovecot-imapd + dovecot-lmtpd, imap_hibernate_timeout =
#                1s and the imap-hibernate service: after 1 s in IDLE a
#                session's imap process hands its connection to
#                imap-hibernate and exits.
#   dovecot      the same without hibernation (imap_hibernate_timeout =
#                0): one imap process per session.
#   cyrus        Cyrus master with imapd (from cyrus-imapd, unpacked with
#                dpkg-deb -x into the temp dir: Debian's cyrus-imapd
#                conflicts with dovecot-imapd), lmtpd (cyrus-common) and
#                idled (push to IDLE sessions); one imapd process per
#                session. Users in a sasldb (auxprop).
# Login processes: Dovecot's imap-login in high-performance mode
# (service_count = 0: a few processes serve all logins), Cyrus's imapd
# does its own login.
#
# Storage and durability: every store lives on a fresh ext4 with a
# journal (mkfs.ext4 defaults) in a sparse image, loop-mounted under the
# temp dir (FS=host: /tmp as it is). ringprot: its Maildir, fsync=yes
# (a delivered file and new/ fsynced before the 250). Dovecot: Maildir,
# mail_fsync = always. Cyrus: its own store (a file per message, not
# Maildir), which fsyncs as it always does. Every server has the same
# users, user0..user$((NUSERS - 1)) with the same password; before any
# measurement one message is delivered over LMTP to each (Cyrus makes
# the INBOX then: autocreate_post), so every INBOX holds one message.
#
# Memory: for each N in NS, each server is started afresh, warmed (the
# deliveries above and one loadgen pass of 10 IDLE sessions, closed
# again, so that lazily started helpers such as Dovecot's auth and
# imap-login processes are in the baseline), then sampled; bench/loadgen
# -m imap-idle (-D, direct descriptors) opens N sessions as user0 (LOGIN,
# SELECT INBOX, IDLE, at most WINDOW opening at once) and reports ready
# once every one has its "+ " continuation; after SETTLE seconds (at
# least HIB_SETTLE for dovecot-hib, which hibernates after 1 s) the
# server is sampled again. A sample is the sum of RSS and of PSS
# (/proc/PID/smaps_rollup) over the server's whole process tree (the
# process and all its descendants: bench/proc-mem.py), with a count per
# process name. The figure is (after - before) / N, KiB per connection.
# Servers that fork a process per session are capped at FORK_MAX_N
# (Dovecot without hibernation) and CYRUS_MAX_N sessions (Cyrus, at about
# 3.3 MiB each, does not fit 10,000 in this machine's memory); a larger N
# is skipped for them and the report says so.
#
# Push delay: each server started afresh and warmed as above, then
# bench/imap-push.py holds PUSH_IDLERS IDLE sessions of user0 through
# loadgen and delivers PUSH_N messages to user0 over one LMTP session,
# one at a time, each PUSH_PAUSE seconds after every idler had the last
# one (for dovecot-hib PUSH_PAUSE_HIB, longer than Dovecot's 1 s
# hibernation timeout, so that each delivery finds the idlers
# hibernated); the delay of each idler's EXISTS from the 250 is
# CLOCK_MONOTONIC in both processes. p50 and p99 over all idlers and
# deliveries.
#
# Servers on SERVER_CPU, loadgen (and the push driver) on CLIENT_CPU.
# Timing is reported, never judged.
#
# Environment: NS ("1000 10000"), RUNS (1; runs are interleaved),
# SERVERS ("ringprot dovecot-hib dovecot cyrus"), WORKERS (1), WINDOW
# (64), SETTLE (2), HIB_SETTLE (5), FORK_MAX_N (10000), CYRUS_MAX_N
# (2000), NUSERS (10), PUSH_IDLERS (10), PUSH_N (50), PUSH_PAUSE (1.5),
# PUSH_PAUSE_HIB (PUSH_PAUSE),
# PUSH (1; 0 skips the push part), MEM (1; 0 skips the memory part),
# SERVER_CPU (0), CLIENT_CPU (1), FS (loop or host), LOOP_SIZE (4G),
# BUILD_DIR (build-bench). BENCH_MODE=quick (bench/run quick) changes the
# defaults to NS="100 10000" with FORK_MAX_N=100, CYRUS_MAX_N=100 and
# HIB_MAX_N=100 (the forking peers at 100 sessions only), PUSH_N=5,
# PUSH_PAUSE=0.2, PUSH_PAUSE_HIB=1.2, SETTLE=0.5,
# HIB_SETTLE=2 (then it waits, as always, until the imap processes have
# gone). HIB_MAX_N (default: no cap) caps dovecot-hib.
# The report goes to stdout and to bench/results/<date>-<sha>-imap-idle.txt,
# its figures as TSV rows (bench/run) to the .tsv next to it and, if
# BENCH_TSV is set, appended to that file.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 1
cd "$root" || exit 1
# shellcheck source=bench/lib.sh
. bench/lib.sh

if [ "${BENCH_MODE:-full}" = quick ]; then
	: "${NS:=100 10000}" "${FORK_MAX_N:=100}" "${CYRUS_MAX_N:=100}"
	: "${HIB_MAX_N:=100}" "${PUSH_N:=5}" "${PUSH_PAUSE:=0.2}" "${SETTLE:=0.5}"
	: "${PUSH_PAUSE_HIB:=1.2}" "${HIB_SETTLE:=2}"
fi
NS=${NS:-"1000 10000"}
HIB_MAX_N=${HIB_MAX_N:-1000000000}
RUNS=${RUNS:-1}
SERVERS=${SERVERS:-"ringprot dovecot-hib dovecot cyrus"}
WORKERS=${WORKERS:-1}
WINDOW=${WINDOW:-64}
SETTLE=${SETTLE:-2}
HIB_SETTLE=${HIB_SETTLE:-5}
FORK_MAX_N=${FORK_MAX_N:-10000}
CYRUS_MAX_N=${CYRUS_MAX_N:-2000}
NUSERS=${NUSERS:-10}
PUSH_IDLERS=${PUSH_IDLERS:-10}
PUSH_N=${PUSH_N:-50}
PUSH_PAUSE=${PUSH_PAUSE:-1.5}
PUSH_PAUSE_HIB=${PUSH_PAUSE_HIB:-$PUSH_PAUSE}
PUSH=${PUSH:-1}
MEM=${MEM:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
FS=${FS:-loop}
LOOP_SIZE=${LOOP_SIZE:-4G}
PASS=bench-pw
# ringprot-imapd's -D table per worker (server/main.c direct_files).
DIRECT_FILES=16384
LG_PER_THREAD=15000
cyrus_bin=/usr/lib/cyrus/bin
hz=$(getconf CLK_TCK)

die() {
	echo "imap-idle.sh: $*" >&2
	exit 1
}

users() {
	peer_users
}

apt_install() {
	echo "imap-idle.sh: installing $*"
	env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends "$@" </dev/null >/dev/null
}

[ "$(id -u)" -eq 0 ] || die "run as root (loop mount, the peers' users)"
bash scripts/deps.sh || die "scripts/deps.sh failed"
command -v saslpasswd2 >/dev/null || apt_install sasl2-bin ||
	die "no saslpasswd2"
case " $SERVERS " in
*" dovecot"*)
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

# BUILD_DIR: a release build dir (default build-bench), made if missing.
bench_build
imapd=$bdir/examples/ringprot-imapd
loadgen=$bdir/bench/loadgen
for exe in "$imapd" "$loadgen"; do
	[ -x "$exe" ] || die "not built: $exe"
done

nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
ulimit -n "$nofile" 2>/dev/null

# Dovecot's imap processes (and imap-hibernate) watch the mailbox with
# inotify; with more sessions than fs.inotify.max_user_instances (128 by
# default, per uid: all sessions run as one uid here) the rest fall back
# to polling and never hibernate. Raised for the run as a Dovecot host
# with many sessions is configured, and put back at the end.
inotify_old=$(cat /proc/sys/fs/inotify/max_user_instances)
inotify_need=0
for n in $NS; do
	[ $((n * 2 + 1024)) -gt "$inotify_need" ] && inotify_need=$((n * 2 + 1024))
done
inotify_set=""
if [[ " $SERVERS " == *" dovecot"* ]] && [ "$inotify_old" -lt "$inotify_need" ]; then
	echo "$inotify_need" >/proc/sys/fs/inotify/max_user_instances ||
		die "cannot raise fs.inotify.max_user_instances to $inotify_need"
	inotify_set=1
fi

tmp=$(mktemp -d /tmp/ringprot-imap-idle.XXXXXX) || die "mktemp failed"
spid=""
lg_pid=""
mounted=""

cleanup() {
	[ -n "$lg_pid" ] && kill -TERM "$lg_pid" 2>/dev/null
	[ -n "$spid" ] && stop_tree "$spid"
	wait 2>/dev/null
	[ -n "$inotify_set" ] &&
		echo "$inotify_old" >/proc/sys/fs/inotify/max_user_instances
	if [ -n "${KEEP:-}" ]; then
		echo "imap-idle.sh: KEEP: left $tmp (and its mount)" >&2
		return
	fi
	store_unmount
}
trap cleanup EXIT
trap 'exit 130' INT TERM

store_mount

# The private Cyrus imapd and idled, from the cyrus-imapd package.
if [[ " $SERVERS " == *" cyrus "* ]]; then
	peer_cyrus_unpack "$tmp/cyrus-imapd"
fi

# Largest N server $1 is started for (its process and connection limits).
max_n() {
	local m=0 n
	for n in $NS; do
		[ "$n" -gt "$m" ] && m=$n
	done
	case "$1" in
	dovecot-hib) [ "$m" -gt "$HIB_MAX_N" ] && m=$HIB_MAX_N ;;
	dovecot) [ "$m" -gt "$FORK_MAX_N" ] && m=$FORK_MAX_N ;;
	cyrus) [ "$m" -gt "$CYRUS_MAX_N" ] && m=$CYRUS_MAX_N ;;
	esac
	echo "$m"
}

# Why server $1 is not measured at N=$2; nothing if it is.
no_fit() {
	case "$1" in
	ringprot)
		[ $(($2 * 11 / 10)) -gt $((WORKERS * DIRECT_FILES)) ] &&
			echo "$2 sessions over $WORKERS workers of $DIRECT_FILES direct slots do not fit (raise WORKERS)"
		;;
	dovecot-hib)
		[ "$2" -gt "$HIB_MAX_N" ] &&
			echo "capped at HIB_MAX_N=$HIB_MAX_N (quick mode)"
		;;
	dovecot)
		[ "$2" -gt "$FORK_MAX_N" ] &&
			echo "a process per session: capped at FORK_MAX_N=$FORK_MAX_N"
		;;
	cyrus)
		[ "$2" -gt "$CYRUS_MAX_N" ] &&
			echo "a process per session (about 3.3 MiB each): capped at CYRUS_MAX_N=$CYRUS_MAX_N for this machine's memory"
		;;
	esac
	return 0
}

start_ringprot() {
	peer_start_ringprot "$tmp/ringprot"
}

start_dovecot() {
	peer_start_dovecot "$tmp/$2" "$1" "$(max_n "$2")"
}

start_dovecot_hib() {
	start_dovecot 1s dovecot-hib
}

start_dovecot_plain() {
	start_dovecot 0 dovecot
}

start_cyrus() {
	peer_start_cyrus "$tmp/cyrus" "$(max_n cyrus)"
}

# Start server $1 afresh: sets spid, sport (IMAP), lport (LMTP), scmd,
# slog; delivers one message to each user.
start_server() {
	local name=$1
	rm -rf "${tmp:?}/$name"
	mkdir -p "$tmp/$name"
	case "$name" in
	ringprot) start_ringprot ;;
	dovecot-hib) start_dovecot_hib ;;
	dovecot) start_dovecot_plain ;;
	cyrus) start_cyrus ;;
	*) die "unknown server $name" ;;
	esac
	# shellcheck disable=SC2046 # one word per user
	python3 - "$lport" $(users) <<'EOF' || die "$name: warm-up deliveries failed"
import smtplib, sys
port, users = int(sys.argv[1]), sys.argv[2:]
with smtplib.LMTP("127.0.0.1", port) as l:
    for u in users:
        # One at a time: Cyrus makes each INBOX on its first delivery.
        r = l.sendmail("bench@localhost", [u],
                       b"From: bench@localhost\r\nSubject: first\r\n\r\nfirst\r\n")
        if r:
            sys.exit(f"refused: {r}")
EOF
}

stop_server() {
	stop_tree "$spid"
	spid=""
}

mem() {
	python3 bench/proc-mem.py "$spid"
}

# Count of server $1's processes named $2.
count_comm() {
	python3 bench/proc-mem.py "$1" | tr ',' '\n' |
		awk -F: -v c="$2" '$1 ~ c "$" {n += $2} END {print n + 0}'
}

# loadgen -m imap-idle for $2 sessions against the server; $1 is a name
# for logs. Leaves it gated at "ready" (coprocess LG) or returns 1.
lg_open() {
	local n=$2 threads
	threads=$(((n + LG_PER_THREAD - 1) / LG_PER_THREAD))
	: >"$tmp/lg.out"
	LG_LOG=$tmp/lg.out
	coproc LG { exec taskset -c "$CLIENT_CPU" "$loadgen" -m imap-idle -D -g \
		-U user0 -P "$PASS" -c "$n" -t "$threads" -W "$WINDOW" -d 0 \
		"127.0.0.1:$sport" 2>"$tmp/lg.err"; }
	# shellcheck disable=SC2153 # set by coproc
	lg_pid=$LG_PID
	# Forking servers open sessions slower (Cyrus: about 30/s here on
	# the loop-mounted store).
	local secs=$((n / 5 + 120))
	[ "$1" = ringprot ] && secs=$((n / 20 + 120))
	expect_line "loadgen: ready" "$secs" && return 0
	echo "imap-idle.sh: $1 n=$n: loadgen did not get every session into IDLE:" >&2
	grep -v '^exists' "$tmp/lg.out" | tail -n 5 >&2
	head -n 5 "$tmp/lg.err" >&2
	kill -TERM "$lg_pid" 2>/dev/null
	wait "$lg_pid" 2>/dev/null
	lg_pid=""
	return 1
}

lg_close() {
	echo go >&"${LG[1]}"
	expect_line "result:" 60
	LG_RESULT=$REPLY
	expect_line "loadgen: done" 10
	echo quit >&"${LG[1]}"
	wait "$lg_pid"
	local rc=$?
	lg_pid=""
	return "$rc"
}

# One memory run: server $1 at $2 sessions. Appends to mem.txt
# "name n rss0 pss0 procs0 rss1 pss1 procs1 connect_s breakdown1".
measure_mem() {
	local name=$1 n=$2 s0 s1 settle=$SETTLE t0 t1 i
	start_server "$name"
	echo "server:   $name: $scmd (pid $spid, imap $sport, lmtp $lport)" >>"$tmp/servers.txt"
	# Warm: the first logins start what starts lazily.
	if ! { lg_open "$name" 10 && lg_close; }; then
		echo "imap-idle.sh: $name: warm-up sessions failed" >&2
		stop_server
		return 1
	fi
	sleep "$SETTLE"
	s0=$(mem) || die "cannot read the memory of $name"
	t0=$(date +%s.%N)
	if ! lg_open "$name" "$n"; then
		{
			echo "--- $name n=$n: open descriptors of the server tree, by target:"
			for p in $(tree_pids "$spid"); do
				ls -l /proc/"$p"/fd 2>/dev/null
			done | awk 'NR > 0 && $NF != "" {print $NF}' |
				sed 's/[0-9][0-9]*/N/g' | sort | uniq -c | sort -rn | head -n 8
			echo "--- $name n=$n: last server log lines"
			tail -n 20 "$slog" 2>/dev/null
		} >>"$tmp/evidence.txt"
		grep -v '^exists' "$tmp/lg.out" | tail -n 5 >>"$tmp/evidence.txt"
		stop_server
		return 1
	fi
	t1=$(date +%s.%N)
	# Seconds, not always whole (quick: SETTLE=0.5).
	[ "$name" = dovecot-hib ] && settle=$(awk -v a="$HIB_SETTLE" \
		-v b="$settle" 'BEGIN {print (a > b) ? a : b}')
	sleep "$settle"
	if [ "$name" = dovecot-hib ]; then
		# Hibernation is done when the imap processes are gone.
		for i in $(seq 60); do
			[ "$(count_comm "$spid" imap)" -le 1 ] && break
			sleep 1
		done
	fi
	s1=$(mem) || die "cannot read the memory of $name"
	kill -0 "$spid" 2>/dev/null || echo "imap-idle.sh: $name died" >&2
	lg_close || echo "imap-idle.sh: $name n=$n: loadgen: $LG_RESULT" >&2
	case "$LG_RESULT" in
	*" failed=0 "*) ;;
	*)
		echo "imap-idle.sh: $name n=$n: sessions failed while held: $LG_RESULT" >&2
		echo "--- $name n=$n: failed while held: $LG_RESULT" >>"$tmp/evidence.txt"
		tail -n 20 "$slog" >>"$tmp/evidence.txt" 2>/dev/null
		;;
	esac
	stop_server
	# shellcheck disable=SC2086
	set -- $s0 $s1
	echo "$name $n $1 $2 $3 $5 $6 $7 $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') $8 $(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<<"$LG_RESULT")" \
		>>"$tmp/mem.txt"
	awk -v name="$name" -v n="$n" -v r0="$1" -v p0="$2" -v r1="$5" -v p1="$6" \
		-v np="$7" 'BEGIN {
		printf "  %-12s n=%-6d rss %8d -> %8d kB (%.2f KiB/conn), pss %.2f KiB/conn, %d processes\n",
			name, n, r0, r1, (r1 - r0) / n, (p1 - p0) / n, np }'
}

# Push delay at PUSH_IDLERS idlers for server $1; appends its delays
# to push-NAME.txt and the summary line to push.txt.
measure_push() {
	local name=$1 out pause=$PUSH_PAUSE
	[ "$name" = dovecot-hib ] && pause=$PUSH_PAUSE_HIB
	start_server "$name"
	echo "server:   $name: $scmd (pid $spid, imap $sport, lmtp $lport)" >>"$tmp/servers.txt"
	out=$(taskset -c "$CLIENT_CPU" python3 bench/imap-push.py "$loadgen" \
		"$sport" "$lport" user0 "$PASS" "$PUSH_IDLERS" "$PUSH_N" \
		"$pause")
	grep '^delay_us' <<<"$out" | awk '{print $2}' >>"$tmp/push-$name.txt"
	if ! grep -q '^push: deliveries' <<<"$out"; then
		echo "imap-idle.sh: $name: push run failed: $(tail -n 3 <<<"$out")" >&2
		echo "--- $name push failed: $(tail -n 3 <<<"$out")" >>"$tmp/evidence.txt"
		tail -n 10 "$slog" >>"$tmp/evidence.txt" 2>/dev/null
	else
		echo "$name $(grep '^push: deliveries' <<<"$out")" | tee -a "$tmp/push.txt"
	fi
	stop_server
}

result_file imap-idle
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
fstype=$(findmnt -n -o FSTYPE --target "$tmp" 2>/dev/null || stat -f -c %T "$tmp")
{
	echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "commit:   $(git rev-parse HEAD 2>/dev/null || echo none)$dirty"
	echo "kernel:   $(uname -r)"
	echo "cpu:      ${cpu:-unknown} ($(nproc) online)," \
		"$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
	if [ -n "$mounted" ]; then
		echo "storage:  a fresh $fstype (mkfs.ext4 defaults, journal) in a $LOOP_SIZE sparse image, loop-mounted (FS=loop)"
	else
		echo "storage:  $fstype under /tmp (FS=host)"
	fi
	echo "build:    meson buildtype=release ($bdir/), $(cc --version | head -n 1)"
	echo "dovecot:  $(dovecot --version 2>/dev/null || echo none)"
	echo "cyrus:    cyrus-common $(dpkg-query -W -f '${Version}' cyrus-common 2>/dev/null || echo none), cyrus-imapd ${cyrus_ver:-none} (dpkg-deb -x)"
	echo "command:  NS=\"$NS\" RUNS=$RUNS SERVERS=\"$SERVERS\" WORKERS=$WORKERS" \
		"WINDOW=$WINDOW SETTLE=$SETTLE HIB_SETTLE=$HIB_SETTLE FORK_MAX_N=$FORK_MAX_N" \
		"CYRUS_MAX_N=$CYRUS_MAX_N NUSERS=$NUSERS PUSH_IDLERS=$PUSH_IDLERS" \
		"PUSH_N=$PUSH_N PUSH_PAUSE=$PUSH_PAUSE PUSH_PAUSE_HIB=$PUSH_PAUSE_HIB" \
		"bench/imap-idle.sh"
	echo "limits:   RLIMIT_NOFILE $nofile, fs.inotify.max_user_instances" \
		"$(cat /proc/sys/fs/inotify/max_user_instances) during the run" \
		"(${inotify_old} before${inotify_set:+: raised for Dovecot})"
	echo "pinning:  servers on CPU $SERVER_CPU, loadgen and imap-push.py on CPU $CLIENT_CPU"
	echo "loadgen:  loadgen -m imap-idle -D -g -U user0 -c N -W $WINDOW -d 0"
} >"$tmp/head.txt"
cat "$tmp/head.txt"
: >"$tmp/mem.txt"
: >"$tmp/push.txt"
: >"$tmp/skips.txt"
: >"$tmp/servers.txt"
: >"$tmp/evidence.txt"

if [ "$MEM" -eq 1 ]; then
	for r in $(seq "$RUNS"); do
		for n in $NS; do
			echo "memory run $r/$RUNS, n=$n"
			for name in $SERVERS; do
				why=$(no_fit "$name" "$n")
				if [ -n "$why" ]; then
					[ "$r" -eq 1 ] && echo "$name $n $why" >>"$tmp/skips.txt"
					continue
				fi
				measure_mem "$name" "$n" ||
					echo "$name $n run $r failed" >>"$tmp/fails.txt"
			done
		done
	done
fi
if [ "$PUSH" -eq 1 ]; then
	echo "push delay, $PUSH_IDLERS idlers, $PUSH_N deliveries"
	for name in $SERVERS; do
		: >"$tmp/push-$name.txt"
		measure_push "$name"
	done
fi

python3 - "$tmp" "$SERVERS" "$NS" "$PUSH_IDLERS" "${out%.txt}.tsv" >"$tmp/table.txt" <<'EOF'
import os, statistics, sys

tmp, servers, ns, idlers = sys.argv[1], sys.argv[2].split(), \
    [int(x) for x in sys.argv[3].split()], sys.argv[4]
tsv = open(sys.argv[5], "w")

def row(scen, server, metric, v, unit, x=""):
    """A TSV row for bench/run: median, min, max of v."""
    tsv.write("%s\t%s\t%s\t%.6g\t%.6g\t%.6g\t%s\t%s\n" % (
        scen, server, metric, statistics.median(v), min(v), max(v), unit, x))
rows = [l.split() for l in open(os.path.join(tmp, "mem.txt")) if l.strip()]
skips = [l.strip().split(None, 2) for l in open(os.path.join(tmp, "skips.txt"))
         if l.strip()]
g = {}
for r in rows:
    g.setdefault((r[0], int(r[1])), []).append(r)

def per(rs, a, b):
    return [(float(r[b]) - float(r[a])) / int(r[1]) for r in rs]

def cell(v):
    if not v:
        return "n/a"
    m = statistics.median(v)
    return "%.2f" % m if len(v) == 1 else "%.2f (%.2f-%.2f)" % (m, min(v), max(v))

def procs(b):
    # comm:count:pss_kb, largest first: the top four.
    out = []
    for p in b.split(",")[:4]:
        c, k, kb = p.split(":")
        out.append("%s x%s %.1f MiB" % (c, k, int(kb) / 1024))
    return ", ".join(out)

if rows or skips:
    print("Server memory per IDLE session, KiB: (with N sessions in IDLE -")
    print("before) / N, summed over the server's whole process tree; median")
    print("(min-max) over the runs. RSS counts shared pages once per process")
    print("(so it overstates forking servers); PSS splits them.")
    print()
    print("| server | N | runs | PSS KiB/conn | RSS KiB/conn | processes held | largest, by PSS | open s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in servers:
        for n in ns:
            rs = g.get((name, n), [])
            if not rs:
                why = next((s[2] for s in skips if s[0] == name and int(s[1]) == n),
                           "failed (see below)")
                print("| %s | %d | 0 | skipped: %s | | | | |" % (name, n, why))
                continue
            row("imap-idle-mem", name, "pss_kib_per_conn", per(rs, 3, 6), "KiB", n)
            row("imap-idle-mem", name, "rss_kib_per_conn", per(rs, 2, 5), "KiB", n)
            print("| %s | %d | %d | %s | %s | %s | %s | %s |" % (
                name, n, len(rs), cell(per(rs, 3, 6)), cell(per(rs, 2, 5)),
                rs[-1][7], procs(rs[-1][9]),
                "%.1f" % statistics.median(float(r[8]) for r in rs)))
    print()
    if "ringprot" in servers:
        print("Ratios, peer PSS per session / ringprot's, same N:")
        print()
        print("| N | " + " | ".join(p for p in servers if p != "ringprot") + " |")
        print("|---|" + "---|" * (len(servers) - 1))
        for n in ns:
            a = g.get(("ringprot", n))
            if not a:
                continue
            ra = statistics.median(per(a, 3, 6))
            cells = []
            for p in servers:
                if p == "ringprot":
                    continue
                b = g.get((p, n))
                cells.append("%.1fx" % (statistics.median(per(b, 3, 6)) / ra)
                             if b and ra > 0 else "n/a")
            print("| %d | %s |" % (n, " | ".join(cells)))
        print()

push = {}
for name in servers:
    f = os.path.join(tmp, "push-%s.txt" % name)
    if os.path.exists(f):
        v = sorted(float(l) for l in open(f) if l.strip())
        if v:
            push[name] = v
if push:
    def q(v, p):
        return v[min(len(v) - 1, int(p * len(v)))]
    print("Push delay at %s idlers (one user's INBOX), ms from the final LMTP" % idlers)
    print("250 to each idler's * N EXISTS (CLOCK_MONOTONIC both ends; negative:")
    print("the EXISTS came before the 250).")
    print()
    print("| server | delays | p50 ms | p99 ms | min ms | max ms |")
    print("|---|---|---|---|---|---|")
    for name in servers:
        v = push.get(name)
        if not v:
            print("| %s | 0 | n/a | n/a | n/a | n/a |" % name)
            continue
        print("| %s | %d | %.2f | %.2f | %.2f | %.2f |" % (
            name, len(v), q(v, .5) / 1e3, q(v, .99) / 1e3, v[0] / 1e3, v[-1] / 1e3))
        # Percentiles of the pooled delays (one sample set: no spread).
        for p in (10, 25, 50, 75, 90, 95, 99, 100):
            row("imap-push", name, "delay_ms",
                [q(v, p / 100.0) / 1e3 if p < 100 else v[-1] / 1e3], "ms", p)
    if "ringprot" in push:
        print()
        r50 = q(push["ringprot"], .5)
        for p in servers:
            if p != "ringprot" and p in push:
                print("ringprot p50 / %s p50: %.2f" % (p, r50 / q(push[p], .5)))
    print()
EOF
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
	if [ -s "$tmp/evidence.txt" ]; then
		echo "Evidence (server log tails, loadgen lines):"
		cat "$tmp/evidence.txt"
		echo
	fi
	echo "Memory runs (server n rss0 pss0 procs0 rss1 pss1 procs1 open_s breakdown_after failed; kB):"
	cat "$tmp/mem.txt"
	echo
	echo "Push summaries:"
	cat "$tmp/push.txt"
} >"$out"
[ -n "${BENCH_TSV:-}" ] && cat "${out%.txt}.tsv" >>"$BENCH_TSV"
echo
cat "$tmp/table.txt"
echo "results: $out"
