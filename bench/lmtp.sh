#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# bench-run: scenario (bench/run runs this; see the top of bench/run)
# LMTP delivery benchmark (issue 15): ringprot-lmtpd against Dovecot's
# lmtp (dovecot-lmtpd) and Cyrus's lmtpd, all driven the same way by
# Postfix's smtp-source -L (-d: one LMTP session per client, kept open).
#
# Cases: SESSIONS parallel sessions x RCPTS recipients per message x
# FSYNCS (on, and off where the server allows it: ringprot fsync=no,
# Dovecot mail_fsync=never; Cyrus has no such switch and runs "on" only).
# Messages are SIZE bytes (smtp-source -l). A delivery is one message to
# one recipient; a run is DELIVERIES deliveries (DELIVERIES / RCPTS
# messages). Each server gets RUNS runs per case, interleaved (run 1 of
# every server, then run 2...) so that drift on a shared VM hits all
# alike; each figure is the median over the runs.
#
# Servers run privately: each from its own configuration in a temporary
# directory, on a loopback port, stopped by pid at the end. Durability:
#   ringprot  fsync=yes: each message file and its new/ directory fsynced
#             before the 250 (fsync=no: neither).
#   dovecot   maildir, mail_fsync=always (never): the message file is
#             fsynced before its rename into new/.
#   cyrus     its own store (not Maildir), fsyncs as it always does;
#             duplicate suppression off (smtp-source's Message-Ids).
# Users: smtp-source -r N sends to 1user..Nuser (it prefixes a number),
# -r 1 to "user"; every server knows user, 1user..10user.
#
# Server CPU, from /proc/PID/stat (bench/lib.sh), taken right before and
# after smtp-source runs:
#   ringprot  utime + stime of the process (all its worker threads).
#   dovecot   "cpu": the lmtp processes (comm "lmtp", one per session)
#             plus the master's reaped children; "all": the whole tree
#             under the dovecot master (auth, log, config, anvil, stats
#             and the master too).
#   cyrus     "cpu": the lmtpd processes plus the master's reaped
#             children; "all": the whole tree under the Cyrus master.
# For ringprot "cpu" and "all" are the same figure.
#
# The server is pinned to SERVER_CPU, smtp-source to CLIENT_CPU. Before
# each run the script waits (QUIET_WAIT seconds at most) for the machine
# to be idle; every store is emptied before each run so that no run
# delivers into a bigger mailbox than another (ringprot: new/ emptied;
# Dovecot: the maildirs removed with their index and uidlist files;
# Cyrus: every message expunged with ipurge), then an unmeasured
# warm-up delivers a few messages to every user.
#
# Storage: every store lives on a fresh ext4 (mkfs.ext4 defaults: with a
# journal, as mail hosts run it) made in a sparse image file and
# loop-mounted under the run's temporary directory, so that all three
# write to the same kind of filesystem, whatever the host's is. This
# matters: this machine's root is an ext4 without a journal, where
# creating a file scans every inode deleted in the last minutes
# (ext4's recently_deleted(), only checked without a journal), so each
# emptying of a store between runs made every later delivery slower,
# for all three alike, and hid the servers' own costs (kernel profile:
# 65% of ringprot-lmtpd's CPU was in recently_deleted). FS=host keeps
# the stores under /tmp as they are.
#
# Environment: RUNS (3), DELIVERIES per run (4000), SIZE (4096), SESSIONS
# ("1 16"), RCPTS ("1 10"), FSYNCS ("on off"), SERVERS ("ringprot
# dovecot cyrus"), WORKERS for ringprot-lmtpd (1), SERVER_CPU (0),
# CLIENT_CPU (1), QUIET_WAIT (10), FS ("loop" or "host"), LOOP_SIZE
# (the image's size, "8G": sparse, it takes what is written), BUILD_DIR
# (build-bench). BENCH_MODE=quick (bench/run quick) changes the defaults
# to RUNS=1 DELIVERIES=400 SESSIONS=16 RCPTS=1 FSYNCS=on QUIET_WAIT=0
# (no wait for a quiet machine: other% says how busy it was).
# The report goes to stdout and to bench/results/<date>-<sha>-lmtp.txt,
# its medians as TSV rows (bench/run) to the .tsv next to it and, if
# BENCH_TSV is set, appended to that file.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 1
cd "$root" || exit 1
# shellcheck source=bench/lib.sh
. bench/lib.sh

if [ "${BENCH_MODE:-full}" = quick ]; then
	: "${RUNS:=1}" "${DELIVERIES:=400}" "${SESSIONS:=16}" "${RCPTS:=1}"
	: "${FSYNCS:=on}" "${QUIET_WAIT:=0}"
fi
RUNS=${RUNS:-3}
DELIVERIES=${DELIVERIES:-4000}
SIZE=${SIZE:-4096}
SESSIONS=${SESSIONS:-"1 16"}
RCPTS=${RCPTS:-"1 10"}
FSYNCS=${FSYNCS:-"on off"}
SERVERS=${SERVERS:-"ringprot dovecot cyrus"}
WORKERS=${WORKERS:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
QUIET_WAIT=${QUIET_WAIT:-10}
FS=${FS:-loop}
LOOP_SIZE=${LOOP_SIZE:-8G}
hz=$(getconf CLK_TCK)
smtp_source=/usr/sbin/smtp-source
cyrus_bin=/usr/lib/cyrus/bin
# bench/lib.sh's peers: LMTP only, smtp-source's users.
PEER_PROTOCOLS=lmtp
PEER_USERS="user 1user 2user 3user 4user 5user 6user 7user 8user 9user 10user"
PASS=bench-pw
# Cyrus: an expunge (empty_store) unlinks the files at once.
CYRUS_EXTRA="expunge_mode: immediate"

die() {
	echo "lmtp.sh: $*" >&2
	exit 1
}

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
apt_install() {
	echo "lmtp.sh: installing $*"
	"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends "$@" \
		</dev/null >/dev/null
}

bash scripts/deps.sh || die "scripts/deps.sh failed"
[ -x "$smtp_source" ] || apt_install postfix || die "no smtp-source"
case " $SERVERS " in
*" dovecot "*)
	if ! [ -x /usr/lib/dovecot/lmtp ] || ! command -v dovecot >/dev/null; then
		apt_install dovecot-core dovecot-lmtpd ||
			die "could not install dovecot-lmtpd"
	fi
	;;
esac
case " $SERVERS " in
*" cyrus "*)
	# cyrus-common holds lmtpd and master (cyrus-imapd, the IMAP
	# server, is not needed).
	[ -x "$cyrus_bin/lmtpd" ] || apt_install cyrus-common ||
		die "could not install cyrus-common"
	;;
esac

bench_build
lmtpd=$bdir/examples/ringprot-lmtpd
[ -x "$lmtpd" ] || die "not built: $lmtpd"

tmp=$(mktemp -d /tmp/ringprot-lmtp-bench.XXXXXX) || die "mktemp failed"
declare -A spids sports scmds
src_pid=""
mounted=""

cleanup() {
	local p
	[ -n "$src_pid" ] && kill -TERM "$src_pid" 2>/dev/null
	for p in "${spids[@]}"; do
		stop_tree "$p"
	done
	wait 2>/dev/null
	store_unmount
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$FS" != loop ] || command -v mkfs.ext4 >/dev/null ||
	apt_install e2fsprogs || die "no mkfs.ext4"
store_mount

# The store of server $1 (for counting and emptying new/).
store_dir() {
	echo "$tmp/$1/mail"
}

# Messages delivered in server $1's store so far.
count_store() {
	local d
	d=$(store_dir "$1")
	case "$1" in
	cyrus) find "$d" -type f -name '[0-9]*.' | wc -l ;;
	*) find "$d" -path '*/new/*' -type f | wc -l ;;
	esac
}

# Empty server $1's mailboxes between runs, with no run in progress.
empty_store() {
	local d
	d=$(store_dir "$1")
	case "$1" in
	ringprot) find "$d" -path '*/new/*' -type f -delete ;;
	# Its uidlist and index files too: they keep growing otherwise
	# (nothing expunges), and deliveries with them get slower.
	dovecot) find "$d" -mindepth 1 -delete ;;
	# Expunge everything (expunge_mode: immediate unlinks the files).
	cyrus) runuser -u cyrus -- "$cyrus_bin/ipurge" -C "$tmp/cyrus/imapd.conf" \
		-f -b 0 >/dev/null 2>&1 ||
		echo "lmtp.sh: ipurge failed" >&2 ;;
	esac
}

# Start server $1 with fsync $2 (on, off) from bench/lib.sh's peers,
# LMTP only: spids, sports, scmds of $1.
start_server() {
	local name=$1 fs=$2
	PEER_FSYNC=yes
	[ "$fs" = off ] && PEER_FSYNC=no
	case "$name" in
	ringprot) peer_start_ringprot "$tmp/ringprot" ;;
	dovecot) peer_start_dovecot "$tmp/dovecot" 0 0 ;;
	cyrus) peer_start_cyrus "$tmp/cyrus" 0 ;;
	*) die "unknown server $name" ;;
	esac
	spids[$name]=$spid
	sports[$name]=$lport
	scmds[$name]=$scmd
}

# Server $1's CPU ticks as "all named" (see the head comment).
server_ticks() {
	local t
	case "$1" in
	ringprot)
		t=$(cpu_ticks "${spids[$1]}") || return 1
		echo "$t $t"
		;;
	dovecot) tree_ticks "${spids[$1]}" lmtp ;;
	cyrus) tree_ticks "${spids[$1]}" lmtpd ;;
	esac
}

# smtp-source against server $1: $2 sessions, $3 recipients, $4
# messages. Its exit status.
drive() {
	local name=$1 s=$2 r=$3 m=$4
	taskset -c "$CLIENT_CPU" "$smtp_source" -L -d -s "$s" -m "$m" \
		-l "$SIZE" -r "$r" -f bench@localhost -t user@localhost \
		"127.0.0.1:${sports[$name]}" >"$tmp/src.out" 2>&1 &
	src_pid=$!
	wait "$src_pid"
	local rc=$?
	src_pid=""
	return "$rc"
}

# One measured run: server $1, fsync $2, $3 sessions, $4 recipients.
# Appends "name fsync sessions rcpts dps msgps cpu_ms all_ms other_pct".
measure() {
	local name=$1 fs=$2 s=$3 r=$4 t0 t1 n0 n1 b0 b1 c0 c1 secs dl rc
	local m=$((DELIVERIES / $4))
	empty_store "$name"
	# Warm-up: every session opens and every user is delivered to.
	drive "$name" "$s" 10 "$s" ||
		echo "lmtp.sh: $name warm-up failed: $(tail -n 2 "$tmp/src.out")" >&2
	wait_quiet || echo "lmtp.sh: machine not quiet after ${QUIET_WAIT}s;" \
		"measuring anyway (see other%)" >&2
	n0=$(count_store "$name")
	c0=$(server_ticks "$name")
	b0=$(busy_ticks)
	t0=$(date +%s.%N)
	drive "$name" "$s" "$r" "$m"
	rc=$?
	t1=$(date +%s.%N)
	b1=$(busy_ticks)
	c1=$(server_ticks "$name")
	n1=$(count_store "$name")
	if [ "$rc" -ne 0 ]; then
		echo "lmtp.sh: $name fsync=$fs s=$s r=$r: smtp-source failed:" \
			"$(tail -n 2 "$tmp/src.out")" >&2
		return 1
	fi
	dl=$((m * r))
	if [ $((n1 - n0)) -ne "$dl" ]; then
		echo "lmtp.sh: $name fsync=$fs s=$s r=$r: $((n1 - n0)) messages" \
			"stored, $dl expected" >&2
		return 1
	fi
	# other%: machine busy time that neither the server nor
	# smtp-source used (smtp-source's is not in the server's tree;
	# taken as the client CPU's share: an estimate).
	read -r secs <<<"$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f", b - a}')"
	# Two "all named" pairs: word splitting wanted.
	# shellcheck disable=SC2086
	set -- $c0 $c1
	awk -v name="$name" -v fs="$fs" -v s="$s" -v r="$r" -v m="$m" \
		-v dl="$dl" -v secs="$secs" -v hz="$hz" -v a0="$1" -v n0="$2" \
		-v a1="$3" -v n1="$4" -v busy=$((b1 - b0)) 'BEGIN {
		srv = (n1 - n0) / hz; all = (a1 - a0) / hz
		other = (busy / hz - all) / secs * 100
		printf "%s %s %d %d %.1f %.1f %.3f %.3f %.1f\n", name, fs, s, r,
			dl / secs, m / secs, srv / dl * 1000, all / dl * 1000, other
	}' >>"$tmp/runs.txt"
	tail -n 1 "$tmp/runs.txt" | awk '{printf "  %-8s fsync=%-3s s=%-2s r=%-2s %8.1f deliveries/s %8.1f msg/s  cpu %6.3f s/1000  all %6.3f s/1000  busy-other %s%%\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}'
}

# Does server $1 have an fsync=off mode?
has_fsync_off() {
	[ "$1" != cyrus ]
}

result_file lmtp
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
fstype=$(findmnt -n -o FSTYPE --target "$tmp" 2>/dev/null || stat -f -c %T "$tmp")
{
	echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "commit:   $(git rev-parse HEAD 2>/dev/null || echo none)$dirty"
	echo "kernel:   $(uname -r)"
	echo "cpu:      ${cpu:-unknown} ($(nproc) online)"
	if [ -n "$mounted" ]; then
		echo "storage:  a fresh $fstype (mkfs.ext4 defaults, journal) in a $LOOP_SIZE sparse image, loop-mounted (FS=loop)"
	else
		echo "storage:  $fstype under /tmp ($(df -P "$tmp" | awk 'NR == 2 {print $1}')) (FS=host)"
	fi
	echo "compiler: $(cc --version | head -n 1)"
	echo "build:    meson buildtype=release ($bdir/)"
	echo "dovecot:  $(dovecot --version 2>/dev/null || echo none)"
	echo "cyrus:    $(dpkg-query -W -f '${Version}' cyrus-common 2>/dev/null || echo none)"
	echo "postfix:  $(dpkg-query -W -f '${Version}' postfix 2>/dev/null) (smtp-source -L -d)"
	echo "command:  RUNS=$RUNS DELIVERIES=$DELIVERIES SIZE=$SIZE SESSIONS=\"$SESSIONS\"" \
		"RCPTS=\"$RCPTS\" FSYNCS=\"$FSYNCS\" SERVERS=\"$SERVERS\"" \
		"WORKERS=$WORKERS bench/lmtp.sh"
	echo "load:     smtp-source -L -d -s SESSIONS -m $DELIVERIES/RCPTS -l $SIZE -r RCPTS" \
		"-f bench@localhost -t user@localhost 127.0.0.1:PORT"
	echo "pinning:  servers on CPU $SERVER_CPU, smtp-source on CPU $CLIENT_CPU"
} >"$tmp/head.txt"
cat "$tmp/head.txt"
: >"$tmp/runs.txt"

# One server process per (server, fsync): fsync is a start-up setting.
for fs in $FSYNCS; do
	names=""
	for name in $SERVERS; do
		[ "$fs" = off ] && ! has_fsync_off "$name" && continue
		rm -rf "${tmp:?}/$name"
		mkdir -p "$tmp/$name"
		start_server "$name" "$fs"
		echo "server:   $name fsync=$fs: ${scmds[$name]} (pid ${spids[$name]}, port ${sports[$name]})" |
			tee -a "$tmp/head.txt"
		# One session first: Cyrus makes each INBOX on its first
		# delivery (autocreate_post), and sessions racing to make
		# the same one get 451.
		{ drive "$name" 1 10 1 && drive "$name" 1 1 1; } ||
			die "$name: first deliveries failed: $(tail -n 2 "$tmp/src.out")"
		names+=" $name"
	done
	for s in $SESSIONS; do
		for r in $RCPTS; do
			for run in $(seq "$RUNS"); do
				echo "fsync=$fs sessions=$s rcpts=$r run $run/$RUNS"
				for name in $names; do
					measure "$name" "$fs" "$s" "$r" ||
						echo "lmtp.sh: $name fsync=$fs s=$s r=$r run $run failed" >&2
				done
			done
		done
	done
	for name in $names; do
		stop_tree "${spids[$name]}"
		unset "spids[$name]"
		rm -rf "${tmp:?}/$name"
	done
done

python3 - "$tmp/runs.txt" "$SERVERS" "${out%.txt}.tsv" >"$tmp/table.txt" <<'EOF'
import statistics, sys

rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
servers = sys.argv[2].split()
groups = {}
for r in rows:
    groups.setdefault((r[1], int(r[2]), int(r[3]), r[0]), []).append(r)

def med(key, col):
    vals = [float(r[col]) for r in groups.get(key, [])]
    return statistics.median(vals) if vals else float("nan")

def fmt(v, f):
    return "n/a" if v != v else f % v

print("Medians. dlv/s = deliveries (message x recipient) per second;")
print("cpu = server CPU seconds per 1,000 deliveries (ringprot: the")
print("process; dovecot: its lmtp processes; cyrus: its lmtpd processes);")
print("all = the whole server process tree; other = busy CPU % of one CPU")
print("outside the server's tree (smtp-source included).")
print()
print("| fsync | sessions | rcpts | server | dlv/s | msg/s | cpu s/1000 | all s/1000 | other% | n |")
print("|---|---|---|---|---|---|---|---|---|---|")
confs = sorted({k[:3] for k in groups}, key=lambda c: (c[0] != "on", c[1], c[2]))
for c in confs:
    for name in servers:
        k = c + (name,)
        if k not in groups:
            continue
        print("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %d |" % (
            c[0], c[1], c[2], name, fmt(med(k, 4), "%.0f"),
            fmt(med(k, 5), "%.0f"), fmt(med(k, 6), "%.3f"),
            fmt(med(k, 7), "%.3f"), fmt(med(k, 8), "%.0f"), len(groups[k])))
print()
peers = [p for p in servers if p != "ringprot"]
if "ringprot" in servers and peers:
    print("Ratios of the medians, ringprot / peer at the same fsync setting:")
    print("dlv/s (higher is better for ringprot), cpu per delivery (lower is")
    print("better; lmtp processes only, and the whole tree).")
    print()
    print("| fsync | sessions | rcpts | peer | dlv/s | cpu | all |")
    print("|---|---|---|---|---|---|---|")
    for c in confs:
        for p in peers:
            ka, kb = c + ("ringprot",), c + (p,)
            if ka not in groups or kb not in groups:
                continue
            def ratio(col):
                x, y = med(ka, col), med(kb, col)
                return fmt(x / y if y else float("nan"), "%.2f")
            print("| %s | %d | %d | %s | %s | %s | %s |" % (
                c[0], c[1], c[2], p, ratio(4), ratio(6), ratio(7)))
# TSV rows for bench/run: scenario server metric median min max unit x.
with open(sys.argv[3], "w") as t:
    for k, rs in sorted(groups.items()):
        scen = "lmtp-fsync-%s-s%d-r%d" % k[:3]
        for col, metric, unit in ((4, "dlv_per_s", "deliveries/s"),
                                  (6, "cpu_s_per_1000", "s"),
                                  (7, "all_cpu_s_per_1000", "s")):
            v = [float(r[col]) for r in rs]
            t.write("%s\t%s\t%s\t%.6g\t%.6g\t%.6g\t%s\t\n" % (
                scen, k[3], metric, statistics.median(v), min(v), max(v), unit))
EOF
{
	cat "$tmp/head.txt"
	echo
	cat "$tmp/table.txt"
	echo
	echo "Runs (server fsync sessions rcpts dlv/s msg/s cpu_s/1000 all_s/1000 other%):"
	cat "$tmp/runs.txt"
} >"$out"
[ -n "${BENCH_TSV:-}" ] && cat "${out%.txt}.tsv" >>"$BENCH_TSV"
echo
cat "$tmp/table.txt"
echo "results: $out"
