#!/usr/bin/env bash
# instance.sh — a throwaway OpenLDAP slapd for mailgate's tests.
#
#   instance.sh start        make a temp dir, start slapd on a free loopback
#                            port, load dms-test.ldif, print shell assignments
#   instance.sh pause DIR    stop slapd, keep its data and port
#   instance.sh resume DIR   start it again on the same port with the same data
#                            (prints the assignments again)
#   instance.sh stop DIR     stop slapd and remove DIR
#
# The assignments printed on stdout (KEY='value', one a line) are LDAP_DIR,
# LDAP_PORT, LDAP_SERVER_HOST, LDAP_SEARCH_BASE, LDAP_BIND_DN, LDAP_BIND_PW
# SLAPD_PID and, when openssl made its certificate, LDAP_CA_FILE and
# LDAPS_SERVER_HOST (ldaps:// on the next port; StartTLS on the first);
# use them with eval "$(test/ldap/instance.sh start)".
# Everything else goes to stderr.
#
# Exit status 77 means slapd or the OpenLDAP client tools are not installed
# (Debian: apt-get install slapd ldap-utils); other failures exit 1.
#
# As root, slapd runs as nobody (its own -u/-g) and DIR is owned by nobody.
# Environment: SLAPD_START_TIMEOUT (seconds, default 15), SLAPD_DEBUG (slapd
# -d level, default 0; the log is DIR/slapd.log).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
marker=.mailgate-test-slapd
base_dn='dc=example,dc=test'
root_dn="cn=admin,$base_dn"
root_pw=secret
timeout=${SLAPD_START_TIMEOUT:-15}

die() {
	echo "instance.sh: $*" >&2
	exit 1
}

# find prints the path of an OpenLDAP program, also from the sbin
# directories a non-root PATH often lacks.
find_prog() {
	local p
	if p=$(command -v "$1" 2>/dev/null); then
		echo "$p"
		return 0
	fi
	for p in /usr/sbin/"$1" /usr/local/sbin/"$1" /usr/libexec/"$1"; do
		if [ -x "$p" ]; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

need_progs() {
	local missing=()
	SLAPD=$(find_prog slapd) || missing+=(slapd)
	LDAPSEARCH=$(find_prog ldapsearch) || missing+=(ldapsearch)
	LDAPADD=$(find_prog ldapadd) || missing+=(ldapadd)
	if [ ${#missing[@]} -gt 0 ]; then
		echo "instance.sh: not installed: ${missing[*]} (Debian: apt-get install slapd ldap-utils)" >&2
		exit 77
	fi
}

# check_dir makes sure DIR is an instance this script made.
check_dir() {
	local dir=$1
	[ -n "$dir" ] || die "missing instance directory"
	[ -d "$dir" ] || die "$dir: no such directory"
	[ -f "$dir/$marker" ] || die "$dir: not an instance made by instance.sh start"
}

# alive reports whether pid is a running (not zombie) slapd of this instance.
alive() {
	local dir=$1 pid=$2 state
	[ -n "$pid" ] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	if [ -r "/proc/$pid/stat" ]; then
		state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
		[ "$state" != Z ] || return 1
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/slapd.conf" || return 1
	fi
	return 0
}

# running reports whether our own child pid still runs (not a zombie). Unlike
# alive it does not look for slapd in the command line: just after the fork
# the child is still this shell, not yet slapd.
running() {
	local pid=$1 state
	kill -0 "$pid" 2>/dev/null || return 1
	state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 0
	[ "$state" != Z ]
}

answers() {
	local port=$1
	"$LDAPSEARCH" -x -LLL -H "ldap://127.0.0.1:$port/" -o nettimeout=2 \
		-b '' -s base namingContexts >/dev/null 2>&1
}

port_in_use() {
	# A connect that succeeds means someone listens there.
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# launch starts slapd for dir on port and waits until it answers. It returns
# 2 when the port turned out to be taken, 1 on any other failure.
launch() {
	local dir=$1 port=$2 pid deadline
	local urls="ldap://127.0.0.1:$port/"
	if [ -f "$dir/tls.crt" ]; then
		# With a certificate, ldaps:// (TLS from the first byte) on the
		# next port as well.
		urls="$urls ldaps://127.0.0.1:$((port + 1))/"
	fi
	local args=(-d "${SLAPD_DEBUG:-0}" -f "$dir/slapd.conf" -h "$urls")
	if [ "$(id -u)" = 0 ]; then
		args+=(-u nobody -g "$(id -gn nobody)")
	fi
	: >"$dir/slapd.log"
	# In the foreground (-d), with every standard stream redirected, so that
	# the caller's pipes close when this script exits.
	"$SLAPD" "${args[@]}" </dev/null >>"$dir/slapd.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/pid"
	deadline=$((SECONDS + timeout))
	while :; do
		if ! running "$pid"; then
			if grep -q 'Address already in use' "$dir/slapd.log"; then
				return 2
			fi
			echo "instance.sh: slapd exited at start; its log ($dir/slapd.log):" >&2
			sed 's/^/  /' "$dir/slapd.log" >&2
			return 1
		fi
		if answers "$port"; then
			return 0
		fi
		if [ $SECONDS -ge $deadline ]; then
			echo "instance.sh: slapd on port $port did not answer within ${timeout}s; its log:" >&2
			sed 's/^/  /' "$dir/slapd.log" >&2
			kill -KILL "$pid" 2>/dev/null || true
			return 1
		fi
		sleep 0.1
	done
}

# halt stops the slapd of dir, if it runs.
halt() {
	local dir=$1 pid deadline
	pid=$(cat "$dir/pid" 2>/dev/null || true)
	if ! alive "$dir" "$pid"; then
		rm -f "$dir/pid"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + 10))
	while alive "$dir" "$pid"; do
		if [ $SECONDS -ge $deadline ]; then
			echo "instance.sh: slapd $pid did not stop within 10s, killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
			break
		fi
		sleep 0.05
	done
	rm -f "$dir/pid"
}

assignments() {
	local dir=$1 port
	port=$(cat "$dir/port")
	cat <<EOF
LDAP_DIR='$dir'
LDAP_PORT='$port'
LDAP_SERVER_HOST='ldap://127.0.0.1:$port'
LDAP_SEARCH_BASE='$base_dn'
LDAP_BIND_DN='$root_dn'
LDAP_BIND_PW='$root_pw'
SLAPD_PID='$(cat "$dir/pid")'
EOF
	if [ -f "$dir/tls.crt" ]; then
		echo "LDAP_CA_FILE='$dir/tls.crt'"
		echo "LDAPS_SERVER_HOST='ldaps://127.0.0.1:$((port + 1))'"
	fi
}

write_conf() {
	local dir=$1 hash
	hash=$("$(find_prog slappasswd || echo slappasswd)" -s "$root_pw" 2>/dev/null) || hash=$root_pw
	cp "$here/postfix-book.schema" "$dir/postfix-book.schema"
	mkdir "$dir/data"
	# A self-signed certificate for 127.0.0.1, for StartTLS (the clients
	# trust it through LDAP_CA_FILE, e.g. Go's SSL_CERT_FILE).
	local tls=""
	if command -v openssl >/dev/null 2>&1 &&
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
			-subj /CN=127.0.0.1 -addext "subjectAltName=IP:127.0.0.1" \
			-keyout "$dir/tls.key" -out "$dir/tls.crt" >"$dir/openssl.log" 2>&1; then
		tls="TLSCertificateFile $dir/tls.crt
TLSCertificateKeyFile $dir/tls.key"
	fi
	cat >"$dir/slapd.conf" <<EOF
# Written by mailgate's test/ldap/instance.sh.
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include $dir/postfix-book.schema

pidfile $dir/slapd.pid
argsfile $dir/slapd.args

modulepath /usr/lib/ldap
moduleload back_mdb
$tls

sizelimit 500
timelimit 30

database mdb
maxsize 67108864
suffix "$base_dn"
rootdn "$root_dn"
rootpw $hash
directory $dir/data
index objectClass eq
index mail,mailAlias,mailGroupMember,uid eq

access to attrs=userPassword
	by self write
	by anonymous auth
	by * none
access to *
	by * read
EOF
}

cmd_start() {
	need_progs
	local dir port tries rc
	for s in core cosine inetorgperson nis; do
		[ -r "/etc/ldap/schema/$s.schema" ] || die "/etc/ldap/schema/$s.schema missing (is slapd installed?)"
	done
	dir=$(mktemp -d "${TMPDIR:-/tmp}/mailgate-slapd.XXXXXX") || die "mktemp failed"
	touch "$dir/$marker"
	write_conf "$dir"
	if [ "$(id -u)" = 0 ]; then
		chmod 755 "$dir"
		chown -R nobody:"$(id -gn nobody)" "$dir"
		if command -v setpriv >/dev/null &&
			! setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups test -w "$dir/data"; then
			rm -rf "$dir"
			die "$dir is not writable by nobody (set TMPDIR to a directory everyone can enter)"
		fi
	fi
	tries=0
	while :; do
		tries=$((tries + 1))
		port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		if port_in_use "$port" || port_in_use $((port + 1)); then
			continue
		fi
		rc=0
		launch "$dir" "$port" || rc=$?
		if [ $rc = 0 ]; then
			break
		fi
		if [ $rc = 2 ] && [ $tries -lt 20 ]; then
			continue
		fi
		rm -rf "$dir"
		die "could not start slapd"
	done
	echo "$port" >"$dir/port"
	if ! "$LDAPADD" -x -H "ldap://127.0.0.1:$port/" -o nettimeout=5 -D "$root_dn" -w "$root_pw" \
		-f "$here/dms-test.ldif" >"$dir/ldapadd.log" 2>&1; then
		echo "instance.sh: loading dms-test.ldif failed:" >&2
		sed 's/^/  /' "$dir/ldapadd.log" >&2
		halt "$dir"
		rm -rf "$dir"
		exit 1
	fi
	assignments "$dir"
}

cmd_pause() {
	check_dir "${1:-}"
	halt "$1"
}

cmd_resume() {
	need_progs
	local dir=${1:-} port rc=0
	check_dir "$dir"
	port=$(cat "$dir/port" 2>/dev/null) || die "$dir/port missing"
	if alive "$dir" "$(cat "$dir/pid" 2>/dev/null || true)"; then
		assignments "$dir"
		return 0
	fi
	if port_in_use "$port" || { [ -f "$dir/tls.crt" ] && port_in_use $((port + 1)); }; then
		die "port $port or $((port + 1)) is taken by another program; cannot resume $dir"
	fi
	launch "$dir" "$port" || rc=$?
	case $rc in
	0) ;;
	2) die "port $port is taken by another program; cannot resume $dir" ;;
	*) die "could not restart slapd for $dir" ;;
	esac
	assignments "$dir"
}

cmd_stop() {
	check_dir "${1:-}"
	halt "$1"
	rm -rf "$1"
}

case "${1:-}" in
start) cmd_start ;;
pause) cmd_pause "${2:-}" ;;
resume) cmd_resume "${2:-}" ;;
stop) cmd_stop "${2:-}" ;;
*)
	echo "usage: $0 start | pause DIR | resume DIR | stop DIR" >&2
	exit 2
	;;
esac
