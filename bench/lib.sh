# shellcheck shell=bash
# SPDX-License-Identifier: BSD-3-Clause
# Shell helpers the benchmark scripts share (echo.sh, echo-open.sh,
# park-mem.sh source this file). They read the caller's globals: hz
# (getconf CLK_TCK) and QUIET_WAIT (seconds).

# User plus system CPU ticks of process $1 (utime + stime of
# /proc/PID/stat, fields 14 and 15: the name may hold spaces).
cpu_ticks() {
	local s
	s=$(cat /proc/"$1"/stat) || return 1
	s=${s##*) }
	# shellcheck disable=SC2086
	set -- $s
	echo $((${12} + ${13}))
}

# Busy CPU ticks of the whole machine: user nice system idle iowait irq
# softirq; a server's softirq time is busy time too (without it a
# machine's busy time came out below the server's own).
busy_ticks() {
	local u n s q sq
	read -r _ u n s _ _ q sq _ </proc/stat
	echo $((u + n + s + q + sq))
}

# Wait until other processes use under 5% of a CPU (0.5 s samples), for
# at most QUIET_WAIT seconds. Returns 1 if the machine stayed busy.
wait_quiet() {
	local until=$((SECONDS + QUIET_WAIT)) b0 b1
	: "${hz:?the caller sets hz}"
	while :; do
		b0=$(busy_ticks)
		sleep 0.5
		b1=$(busy_ticks)
		# 5% of one CPU over 0.5 s, in ticks (a tick of slack).
		[ $(((b1 - b0) * 1000)) -le $((hz * 25 + 1000)) ] && return 0
		[ "$SECONDS" -ge "$until" ] && return 1
		sleep 1
	done
}
