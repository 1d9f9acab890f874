#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Where ringprot-imapd's time goes per IMAP command (issue 17: at most 5
# us of server CPU per NOOP). Starts ringprot-imapd alone (bench/lib.sh
# peer_start_ringprot: fsync=yes, -D, one worker), fills user0's INBOX as
# bench/imap-cmds.sh does for the scenario CMD (noop: 1 message; fetch:
# FETCH_SMALL small and one large; select: SELECT_N), drives it with
# bench/loadgen -m imap-CMD at CONNS connections, and over three gated
# windows of DURATION seconds each measures:
#   1. server CPU per command, /proc/PID/stat, nothing attached;
#   2. syscalls per command, by syscall (perf stat -e
#      'syscalls:sys_enter_*');
#   3. a profile, perf record -e cpu-clock -g: the top symbols (self), the
#      main kernel paths (children), user space against kernel.
# The report goes to stdout and bench/results/<date>-<sha>-CMD-profile.txt.
# Environment: CMD (noop), CONNS (16), DURATION (5), SERVER_CPU (0),
# CLIENT_CPU (1), BUILD_DIR (build-bench), WORKERS (1), SELECT_N (10000),
# FETCH_SMALL (200); PERF_CALLGRAPH (perf record's call graph option,
# default -g; "--call-graph dwarf" with a debugoptimized BUILD_DIR finds
# the callers of libc functions), KEEP_PERF (a path: keep perf.data).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 1
cd "$root" || exit 1
# shellcheck source=bench/lib.sh
. bench/lib.sh

CMD=${CMD:-noop}
SELECT_N=${SELECT_N:-10000}
FETCH_SMALL=${FETCH_SMALL:-200}
CONNS=${CONNS:-16}
DURATION=${DURATION:-5}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
WORKERS=${WORKERS:-1}
PASS=bench-pw
NUSERS=1
hz=$(getconf CLK_TCK)

die() {
	echo "imap-profile.sh: $*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (perf)"
command -v perf >/dev/null ||
	env DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf \
		</dev/null >/dev/null || die "no perf"
bench_build
imapd=$bdir/examples/ringprot-imapd
loadgen=$bdir/bench/loadgen

tmp=$(mktemp -d /tmp/ringprot-imap-profile.XXXXXX) || die "mktemp failed"
spid=""
lg_pid=""
cleanup() {
	[ -n "$lg_pid" ] && kill -TERM "$lg_pid" 2>/dev/null
	[ -n "$spid" ] && stop_tree "$spid"
	[ -n "${KEEP_PERF:-}" ] && cp "$tmp/perf.data" "$KEEP_PERF"
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

peer_start_ringprot "$tmp/ringprot"
case "$CMD" in
noop) fill=(1 4096) ;;
fetch) fill=("$FETCH_SMALL" 4096 --large 1048576) ;;
select) fill=("$SELECT_N" 4096) ;;
*) die "CMD is noop, fetch or select, not $CMD" ;;
esac
python3 bench/imap-fill.py maildir "$tmp/ringprot/mail/users/user0" \
	"${fill[@]}" || die "fill failed"
# The directories' mtimes must be over 2 s old, or every sync lists
# them again (maildir's same-tick guard): as in a mailbox at rest.
sleep 3

# One gated loadgen run; $1 is what to do in the window: "cpu", "stat"
# or "record". Prints "requests secs ticks".
window() {
	local what=$1 t0 t1 res
	: >"$tmp/lg.out"
	LG_LOG=$tmp/lg.out
	coproc LG { exec taskset -c "$CLIENT_CPU" "$loadgen" -m "imap-$CMD" \
		-s 65536 -U user0 -P "$PASS" -c "$CONNS" -d "$DURATION" -w 1 -g \
		"127.0.0.1:$sport" 2>"$tmp/lg.err"; }
	# shellcheck disable=SC2153 # set by coproc
	lg_pid=$LG_PID
	expect_line "loadgen: ready" 60 || die "loadgen did not open: $(cat "$tmp/lg.err")"
	case "$what" in
	stat)
		perf stat -x, -e 'syscalls:sys_enter_*' -p "$spid" \
			-o "$tmp/stat.out" &
		;;
	record)
		# shellcheck disable=SC2086 # PERF_CALLGRAPH: one or two words
		perf record -q -e cpu-clock ${PERF_CALLGRAPH:--g} -p "$spid" -o "$tmp/perf.data" \
			>/dev/null 2>&1 &
		;;
	esac
	local ppid=$!
	[ "$what" != cpu ] && sleep 0.5
	t0=$(cpu_ticks "$spid")
	echo go >&"${LG[1]}"
	expect_line "result:" $((DURATION + 60)) || die "no result"
	res=$REPLY
	t1=$(cpu_ticks "$spid")
	if [ "$what" != cpu ]; then
		kill -INT "$ppid"
		wait "$ppid" 2>/dev/null
	fi
	expect_line "loadgen: done" 10
	echo quit >&"${LG[1]}"
	wait "$lg_pid"
	lg_pid=""
	echo "$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$res") $(sed -n 's/.* secs=\([0-9.]*\).*/\1/p' <<<"$res") $((t1 - t0)) $(sed -n 's/.* cpu_pct=\([0-9.]*\).*/\1/p' <<<"$res")"
}

sha=$(git rev-parse --short HEAD 2>/dev/null || echo nocommit)
mkdir -p bench/results
out=bench/results/$(date +%Y-%m-%d)-$sha-$CMD-profile.txt
{
	echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "commit:   $(git rev-parse HEAD 2>/dev/null || echo none)"
	echo "kernel:   $(uname -r), $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "server:   $scmd (CPU $SERVER_CPU); INBOX: imap-fill.py ${fill[*]}"
	echo "load:     loadgen -m imap-$CMD -c $CONNS -d $DURATION (CPU $CLIENT_CPU)"
	echo
	# shellcheck disable=SC2046
	set -- $(window cpu)
	awk -v r="$1" -v s="$2" -v t="$3" -v c="$4" -v hz="$hz" 'BEGIN {
		printf "1. no tool attached: %.0f commands/s, server %.1f us of CPU per command (%.0f%% of a CPU), client %.0f%% of a CPU\n",
			r / s, t / hz * 1e6 / r, t / hz / s * 100, c }'
	# shellcheck disable=SC2046
	set -- $(window stat)
	echo
	awk -v r="$1" -v s="$2" 'BEGIN { printf "2. syscalls per command (perf stat syscalls:sys_enter_*, %.0f commands/s while attached):\n", r / s }'
	awk -F, -v r="$1" '$1 ~ /^[0-9]+$/ && $1 > 0 {
		sub("syscalls:sys_enter_", "", $3); printf "   %-20s %8.3f\n", $3, $1 / r; tot += $1 }
		END { printf "   %-20s %8.3f\n", "total", tot / r }' "$tmp/stat.out" | sort -k2 -rn
	# shellcheck disable=SC2046
	set -- $(window record)
	echo
	awk -v r="$1" -v s="$2" 'BEGIN { printf "3. perf record -e cpu-clock -g (%.0f commands/s while recording)\n", r / s }'
	echo "   user space vs kernel (self):"
	perf report -i "$tmp/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
		grep '%' | head -n 5 | sed 's/^/   /'
	echo "   main kernel paths (children, % of all samples):"
	perf report -i "$tmp/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
		grep -E '\] (__do_sys_io_uring_enter|io_submit_sqes|io_send|tcp_sendmsg|net_rx_action|do_softirq\.part\.0|io_recv|tcp_recvmsg|__GI___fstatat64|__GI___fstat64|vfs_fstatat|vfs_fstat|io_cqring_wait|__schedule|iterate_dir|__x64_sys_getdents64|__x64_sys_openat|__x64_sys_read|io_read|io_openat|io_statx|filemap_read) ' |
		awk '{printf "   %8s  %s\n", $1, $4}'
	echo "   top 25 symbols (self):"
	perf report -i "$tmp/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null |
		grep '%' | head -n 25 | awk '{printf "   %8s  %s %s\n", $1, $2, $3}'
	echo "   top 15 user-space symbols (self):"
	perf report -i "$tmp/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null |
		grep '\[\.\]' | head -n 15 | awk '{printf "   %8s  %s\n", $1, $3}'
} | tee "$out"
echo "results: $out"
