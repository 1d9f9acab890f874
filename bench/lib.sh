# shellcheck shell=bash
# The peers' start functions set and read the callers' globals:
# shellcheck disable=SC2034,SC2154
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
# QUIET_WAIT=0: no wait, not even one sample (quick modes).
wait_quiet() {
	local until=$((SECONDS + QUIET_WAIT)) b0 b1
	[ "$QUIET_WAIT" -gt 0 ] || return 0
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

# CPU ticks of process tree $1 (the process and its descendants, from
# /proc/PID/stat) as "all named": all is utime + stime + cutime + cstime
# summed over the tree; named sums utime + stime over the processes whose
# name (comm) is $2, plus the cutime + cstime of $1 itself. A child that
# exits moves its ticks into its parent's cutime + cstime when reaped, so
# both sums only grow and the difference of two calls counts processes
# that started or ended in between. In "named" every reaped child of $1
# is taken to be a $2 process: in a daemon whose other children live as
# long as it does (Dovecot's auth, log, ...; Cyrus's) that is so.
tree_ticks() {
	local root=$1 want=$2 f s pid comm all=0 named=0 q
	local -A kids pname own reaped
	for f in /proc/[0-9]*/stat; do
		read -r s 2>/dev/null <"$f" || continue
		pid=${s%% *}
		comm=${s#*(}
		comm=${comm%) *}
		s=${s##*) }
		# shellcheck disable=SC2086
		set -- $s
		kids[$2]+=" $pid"
		pname[$pid]=$comm
		own[$pid]=$((${12} + ${13}))
		reaped[$pid]=$((${14} + ${15}))
	done
	[ -n "${own[$root]:-}" ] || return 1
	named=${reaped[$root]}
	q=$root
	while [ -n "$q" ]; do
		# shellcheck disable=SC2086
		set -- $q
		[ "$#" -gt 0 ] || break
		pid=$1
		shift
		q="$* ${kids[$pid]:-}"
		[ -n "${own[$pid]:-}" ] || continue
		all=$((all + own[$pid] + reaped[$pid]))
		[ "${pname[$pid]}" = "$want" ] && named=$((named + own[$pid]))
	done
	echo "$all $named"
}

# Read the load generator's output (coprocess LG) until a line starting
# with $1, for at most $2 seconds (default 60); REPLY is that line.
# With LG_LOG set, every line read is appended to that file. Returns 1
# on timeout or end of output.
expect_line() {
	local want=$1 until=$((SECONDS + ${2:-60})) line
	while [ "$SECONDS" -lt "$until" ] &&
		IFS= read -r -t $((until - SECONDS + 1)) -u "${LG[0]}" line; do
		[ -n "${LG_LOG:-}" ] && echo "$line" >>"$LG_LOG"
		case "$line" in
		"$want"*)
			REPLY=$line
			return 0
			;;
		esac
	done
	return 1
}

# Pids of process $1 and its descendants.
tree_pids() {
	local q=$1 p out=""
	while [ -n "$q" ]; do
		# shellcheck disable=SC2086
		set -- $q
		[ "$#" -gt 0 ] || break
		p=$1
		shift
		out+=" $p"
		q="$* $(cat /proc/"$p"/task/*/children 2>/dev/null | tr '\n' ' ')"
	done
	echo "$out"
}

# Is process $1 there and not a zombie (which has closed its files)?
# Orphans are reaped by this machine's init only every second or two.
is_running() {
	local s
	s=$(cat /proc/"$1"/stat 2>/dev/null) || return 1
	s=${s##*) }
	[ "${s%% *}" != Z ]
}

# SIGTERM to process $1 and right after it to the rest of its tree, then
# (after 10 s) SIGKILL to whatever is left, each by pid. Dovecot's master
# told alone took 1.5-3 s to stop its children; told together they are
# gone in 0.1 s (Dovecot's stops were 11 of imap-idle.sh's 51 s in
# quick mode, and as much again with the zombies waited for below).
stop_tree() {
	local pid=$1 pids p
	pids=$(tree_pids "$pid")
	for p in $pids; do
		kill -TERM "$p" 2>/dev/null
	done
	for _ in $(seq 100); do
		is_running "$pid" || break
		sleep 0.1
	done
	for p in $pids; do
		kill -KILL "$p" 2>/dev/null
	done
	wait "$pid" 2>/dev/null
	# A process in uninterruptible sleep (Cyrus's, in the store) dies
	# late; the store cannot be unmounted before it has.
	for p in $pids; do
		for _ in $(seq 100); do
			is_running "$p" || break
			sleep 0.1
		done
	done
}

# A TCP port of 127.0.0.1 that was free a moment ago.
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait until something answers a line starting with $3 on 127.0.0.1:$1
# (server pid $2, which must stay alive); $4, if given, is sent back
# (QUIT) before the probe hangs up. Returns 1 after 30 s.
wait_banner() {
	local port=$1 pid=$2 want=$3 bye=${4:-} l
	for _ in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || return 1
		# In a subshell: its exec and descriptor stay there.
		l=$({ exec 9<>/dev/tcp/127.0.0.1/"$port" &&
			read -r -t 5 l <&9 &&
			{ [ -z "$bye" ] || printf '%s\r\n' "$bye" >&9; } &&
			echo "$l"; } 2>/dev/null)
		case "$l" in "$want"*) return 0 ;; esac
		sleep 0.1
	done
	return 1
}

# ---- Peers: ringprot, Dovecot and Cyrus, each run privately from its
# own configuration in its own directory, on loopback ports, stopped by
# pid (stop_tree). Used by imap-idle.sh, imap-cmds.sh, imap-fetch.sh and
# lmtp.sh. The caller defines die() and sets: PASS (every user's
# password), NUSERS (users user0..user$((NUSERS - 1))) or PEER_USERS
# (the user names, one word each), SERVER_CPU (taskset), imapd (path of
# ringprot-imapd), WORKERS (its -w; default 1); for Cyrus cyrus_bin
# (cyrus-common's, /usr/lib/cyrus/bin) and cyrus_x (peer_cyrus_unpack).
# PEER_PROTOCOLS is "imap lmtp" (the default) or "lmtp": LMTP only, as
# lmtp.sh wants it (ringprot-lmtpd, path in lmtpd, instead of imapd; no
# IMAP service in Dovecot; no imapd and idled in Cyrus, so no
# peer_cyrus_unpack either). A start sets spid (the server's pid), sport
# (IMAP port; empty for LMTP only), lport (LMTP port), scmd (its
# command, for the report) and slog (its log file). Durability is the
# same for all three: ringprot fsync=yes, Dovecot mail_fsync = always,
# Cyrus as it always does (it has no switch); PEER_FSYNC=no turns it
# off where a server can (ringprot fsync=no, Dovecot mail_fsync =
# never).
# Mail locations, for scripts that fill mailboxes directly:
#   ringprot  DIR/mail/users/USER/{tmp,new,cur} (Maildir, LF line ends)
#   dovecot   DIR/mail/USER/{tmp,new,cur} (Maildir, uid/gid 65534)
#   cyrus     its own store under DIR/mail: deliver over LMTP.

peer_users() {
	if [ -n "${PEER_USERS:-}" ]; then
		# shellcheck disable=SC2086 # one word per user
		printf '%s\n' $PEER_USERS
	else
		seq -f 'user%g' 0 $((NUSERS - 1))
	fi
}

# Is the peer to serve IMAP (PEER_PROTOCOLS)?
peer_has_imap() {
	[[ " ${PEER_PROTOCOLS:-imap lmtp} " == *" imap "* ]]
}

# bench/noop-floor (path in floor) in directory $1: imap-cmds.sh's NOOP
# floor, an epoll server that answers every tagged command OK, with no
# mailbox, login or LMTP (lport empty).
peer_start_floor() {
	local d=$1
	mkdir -p "$d"
	scmd="$floor -l 127.0.0.1:0"
	# shellcheck disable=SC2086
	taskset -c "$SERVER_CPU" $scmd >"$d/out" 2>"$d/err" &
	spid=$!
	sport=$(peer_ports "$d/out" "$spid" 1)
	[ -n "$sport" ] || die "noop-floor did not start: $(tail -n 3 "$d/err")"
	lport=""
	slog=$d/err
}

# The private Cyrus imapd and idled, from the cyrus-imapd package
# (Debian's cyrus-imapd conflicts with dovecot-imapd, so it is unpacked
# with dpkg-deb -x under $1, not installed). Sets cyrus_x, cyrus_ver.
peer_cyrus_unpack() {
	local dir=$1 deb
	cyrus_x=$dir/usr/lib/cyrus/bin
	mkdir -p "$dir"
	(cd "$dir" && apt-get download -q cyrus-imapd >/dev/null 2>&1) ||
		die "apt-get download cyrus-imapd failed"
	deb=$(ls "$dir"/cyrus-imapd_*.deb) || die "no cyrus-imapd .deb"
	dpkg-deb -x "$deb" "$dir" || die "dpkg-deb -x $deb failed"
	cyrus_ver=$(dpkg-deb -f "$deb" Version)
	chmod -R a+rX "$dir"
}

# The ports in the "listening on ADDR:PORT[ (...)]" lines that the
# server of pid $2 writes to file $1, once there are $3 of them: at most
# 5 s, and nothing more once it has exited.
peer_ports() {
	local f=$1 pid=$2 want=$3 ports
	for _ in $(seq 100); do
		ports=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)\( (.*)\)\{0,1\}$/\1/p' "$f" 2>/dev/null)
		[ "$(echo "$ports" | wc -w)" -eq "$want" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	echo "$ports"
}

# ringprot-imapd -D in directory $1 (made), LMTP in the same process;
# users in a sasldb. For LMTP only (PEER_PROTOCOLS) ringprot-lmtpd, no
# sasldb. RINGPROT_EXTRA: more options ("-o key=value").
peer_start_ringprot() {
	local d=$1 u want=2
	mkdir -p "$d/mail"
	for u in $(peer_users); do
		mkdir -p "$d/mail/users/$u/"{tmp,new,cur}
		peer_has_imap || continue
		echo -n "$PASS" | saslpasswd2 -f "$d/sasldb" -c -p "$u" ||
			die "saslpasswd2 failed"
	done
	if peer_has_imap; then
		scmd="$imapd -D -w ${WORKERS:-1} -o data_dir=$d/mail -o sasldb_path=$d/sasldb -o fsync=${PEER_FSYNC:-yes} -o imap.listen=127.0.0.1:0 -o lmtp.listen=127.0.0.1:0 ${RINGPROT_EXTRA:-}"
	else
		scmd="$lmtpd -l 127.0.0.1:0 -w ${WORKERS:-1} -o data_dir=$d/mail -o fsync=${PEER_FSYNC:-yes} ${RINGPROT_EXTRA:-}"
		want=1
	fi
	# shellcheck disable=SC2086
	taskset -c "$SERVER_CPU" $scmd >"$d/out" 2>"$d/err" &
	spid=$!
	# shellcheck disable=SC2046 # one word per port
	set -- $(peer_ports "$d/out" "$spid" "$want")
	[ "$#" -eq "$want" ] ||
		die "ringprot did not report its ports: $(tail -n 3 "$d/err")"
	if [ "$want" -eq 2 ]; then
		sport=$1
		lport=$2
	else
		sport=""
		lport=$1
	fi
	slog=$d/err
}

# Dovecot (imap-login in high-performance mode, one imap process per
# session) in directory $1, imap_hibernate_timeout $2 (0: none), for up
# to $3 sessions. DOVECOT_EXTRA: more settings (lines) at the end.
peer_start_dovecot() {
	local d=$1 hib=$2 m=$3 u protocols="imap lmtp" fsync=always
	mkdir -p "$d/run" "$d/state" "$d/mail"
	sport=$(free_port)
	lport=$(free_port)
	peer_has_imap || protocols=lmtp
	[ "${PEER_FSYNC:-yes}" = no ] && fsync=never
	: >"$d/users"
	for u in $(peer_users); do
		echo "$u:{PLAIN}$PASS:65534:65534::$d/mail/$u::" >>"$d/users"
	done
	chown 65534:65534 "$d/mail"
	cat >"$d/dovecot.conf" <<EOF
# ringprot bench (lib.sh peer_start_dovecot): a private Dovecot, IMAP and LMTP.
base_dir = $d/run
state_dir = $d/state
log_path = $d/log
info_log_path = $d/log
protocols = $protocols
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
first_valid_uid = 100
mail_location = maildir:$d/mail/%u
mail_fsync = $fsync
lmtp_save_to_detail_mailbox = no
imap_hibernate_timeout = $hib
default_process_limit = $((m + 200))
default_client_limit = $((m + 1000))
protocol imap {
  mail_max_userip_connections = $((m + 100))
}
passdb {
  driver = passwd-file
  args = $d/users
}
userdb {
  driver = passwd-file
  args = $d/users
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $sport
  }
  inet_listener imaps {
    port = 0
  }
  service_count = 0
  process_min_avail = 1
}
service imap {
  process_limit = $((m + 200))
  unix_listener imap-master {
    mode = 0666
  }
}
service imap-hibernate {
  unix_listener imap-hibernate {
    mode = 0666
  }
  client_limit = $((m + 200))
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lport
  }
  unix_listener lmtp {
    mode = 0600
  }
  process_limit = 64
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
${DOVECOT_EXTRA:-}
EOF
	scmd="dovecot -F -c $d/dovecot.conf (protocols = $protocols, mail_fsync = $fsync, imap_hibernate_timeout = $hib)"
	taskset -c "$SERVER_CPU" dovecot -F -c "$d/dovecot.conf" \
		>"$d/out" 2>"$d/err" &
	spid=$!
	slog=$d/log
	if peer_has_imap; then
		wait_banner "$sport" "$spid" "* OK"
	else
		sport=""
		wait_banner "$lport" "$spid" 220 QUIT
	fi || die "dovecot did not start: $(cat "$d/err" "$d/log" 2>/dev/null | tail -n 5)"
}

# Cyrus master with imapd, lmtpd and idled in directory $1, for up to $2
# sessions; users in a sasldb (auxprop). Needs peer_cyrus_unpack first,
# unless LMTP only (PEER_PROTOCOLS: lmtpd alone, from cyrus-common).
# CYRUS_EXTRA: more imapd.conf lines at the end.
peer_start_cyrus() {
	local d=$1 m=$2 u imap="" idled=""
	mkdir -p "$d/conf/socket" "$d/conf/proc" "$d/conf/lock" \
		"$d/conf/db" "$d/conf/sieve" "$d/mail"
	# imapd asks SASL for the realm of its servername.
	for u in $(peer_users); do
		echo -n "$PASS" | saslpasswd2 -f "$d/sasldb" -c -p -u localhost "$u" ||
			die "saslpasswd2 failed"
	done
	sport=$(free_port)
	lport=$(free_port)
	cat >"$d/imapd.conf" <<EOF
configdirectory: $d/conf
partition-default: $d/mail
sievedir: $d/conf/sieve
lmtpsocket: $d/conf/socket/lmtp
idlesocket: $d/conf/socket/idle
notifysocket: $d/conf/socket/notify
servername: localhost
admins: cyrus
unixhierarchysep: yes
virtdomains: off
lmtp_downcase_rcpt: yes
autocreate_post: yes
autocreate_quota: 0
duplicatesuppression: no
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: $d/sasldb
sasl_mech_list: PLAIN
syslog_prefix: ringprot-bench-cyrus
${CYRUS_EXTRA:-}
EOF
	if peer_has_imap; then
		imap="imap cmd=\"$cyrus_x/imapd -C $d/imapd.conf\" listen=\"127.0.0.1:$sport\" prefork=1 maxchild=$((m + 200))"
		idled="idled cmd=\"$cyrus_x/idled -C $d/imapd.conf\""
	fi
	cat >"$d/cyrus.conf" <<EOF
START {
  recover cmd="ctl_cyrusdb -r -C $d/imapd.conf"
}
SERVICES {
  $imap
  lmtp cmd="lmtpd -a -C $d/imapd.conf" listen="127.0.0.1:$lport" prefork=1 maxchild=64
}
EVENTS {
}
DAEMON {
  $idled
}
EOF
	chown -R cyrus:mail "$d"
	scmd="$cyrus_bin/master -C $d/imapd.conf -M $d/cyrus.conf -p $d/master.pid"
	# shellcheck disable=SC2086
	taskset -c "$SERVER_CPU" $scmd >"$d/out" 2>"$d/err" &
	spid=$!
	slog=$d/err
	peer_has_imap || sport=""
	if ! wait_banner "$lport" "$spid" 220 QUIT ||
		{ [ -n "$sport" ] && ! wait_banner "$sport" "$spid" "* OK"; }; then
		die "cyrus did not start: $(tail -n 5 "$d/err")"
	fi
}

# ---- The release build the scenarios run: bench_build configures
# BUILD_DIR (default build-bench) as buildtype=release if it must, builds
# it, and sets bdir to its absolute path. Under bench/run (BENCH_BUILT=1,
# built just before) it only sets bdir: a meson reconfigure per script
# cost seconds of every quick run.
bench_build() {
	bdir=${BUILD_DIR:-build-bench}
	if [ "${BENCH_BUILT:-0}" != 1 ]; then
		if [ -f "$bdir/meson-private/coredata.dat" ]; then
			meson setup --reconfigure "$bdir" --buildtype=release >/dev/null
		else
			meson setup "$bdir" --buildtype=release >/dev/null
		fi || die "meson setup failed"
		meson compile -C "$bdir" >/dev/null || die "build failed"
	fi
	bdir=$(cd "$bdir" && pwd) || die "no build directory $bdir"
}

# ---- The stores' filesystem. store_mount: $tmp (a fresh, empty
# directory) becomes a fresh ext4 (mkfs defaults, so a journal) in a
# sparse $tmp.img of LOOP_SIZE, loop-mounted (FS=loop, the default), or
# stays on /tmp's own filesystem (FS=host); sets mounted. This machine's
# root ext4 has no journal, and there every file creation scans the
# inodes deleted in the last minutes (recently_deleted()): the servers'
# figures would be that scan. store_unmount takes it down again (retried
# while the servers' last files close) and removes both. The caller
# defines die(); as_root, if set, prefixes mount and umount (sudo).
store_mount() {
	mounted=""
	case ${FS:-loop} in
	loop)
		command -v mkfs.ext4 >/dev/null || die "no mkfs.ext4 (e2fsprogs)"
		{ truncate -s "$LOOP_SIZE" "$tmp.img" &&
			mkfs.ext4 -q -F "$tmp.img" >/dev/null; } ||
			die "could not make an ext4 image in $tmp.img"
		${as_root[@]+"${as_root[@]}"} mount -o loop "$tmp.img" "$tmp" ||
			die "could not loop-mount $tmp.img (FS=host runs without it)"
		mounted=1
		;;
	host) ;;
	*) die "FS must be loop or host, not $FS" ;;
	esac
	chmod 755 "$tmp"
}

store_unmount() {
	if [ -n "${mounted:-}" ]; then
		for _ in $(seq 50); do
			${as_root[@]+"${as_root[@]}"} umount "$tmp" 2>/dev/null && break
			sleep 0.2
		done
		mountpoint -q "$tmp" &&
			echo "$(basename "$0"): $tmp still mounted" >&2
	fi
	rm -rf "$tmp" "$tmp.img"
}

# ---- Where a scenario writes its report: result_file NAME sets out to
# bench/results/<date>-<short commit>-NAME.txt (-NAME-2.txt, -3... when
# that run's file exists already), sha to the short commit, and dirty to
# a note when the working tree has uncommitted changes (else empty).
result_file() {
	local name=$1 i=2
	sha=$(git rev-parse --short HEAD 2>/dev/null || echo nocommit)
	dirty=""
	[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] &&
		dirty=" (working tree has uncommitted changes)"
	mkdir -p bench/results
	out=bench/results/$(date +%Y-%m-%d)-$sha-$name.txt
	while [ -e "$out" ]; do
		out=bench/results/$(date +%Y-%m-%d)-$sha-$name-$i.txt
		i=$((i + 1))
	done
}
