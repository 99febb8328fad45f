#!/usr/bin/env bash
# test/postfix/instance.sh — a throwaway Postfix instance under one directory,
# wired to mailgate by the output of `mailgate postfix config`. Used by the
# end-to-end test (test/e2e/postfix_test.go) and by bench/postfix.sh.
#
#   instance.sh start RUN RELAY CONFIG [SMTP]
#       RUN     a new or empty directory: etc/ (config_directory), queue/, data/
#               (owned by postfix), mail/ (the Maildir root, owned by 5000:5000),
#               maillog, cert.pem/key.pem (a fresh RSA-2048 self-signed pair)
#       RELAY   HOST:PORT of the relay host (a test sink)
#       CONFIG  a file holding the output of `mailgate postfix config … --mail-root RUN/mail
#               --submission HOST:PORT --submissions HOST:PORT`
#       SMTP    optional HOST:PORT of an inbound smtpd service
#   instance.sh stop RUN
#
# Needs root (Postfix's master starts as root), postfix and openssl. Everything
# listens on 127.0.0.1; nothing outside RUN is written. Services are not
# chrooted; DNS is off.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
die() { echo "postfix/instance.sh: $*" >&2; exit 1; }

case "${1:-}" in
stop)
  [ $# -eq 2 ] || die "usage: instance.sh stop RUN"
  RUN=$2
  postfix -c "$RUN/etc" stop >/dev/null 2>&1 || true
  if [ -s "$RUN/queue/pid/master.pid" ]; then kill -9 "$(tr -d ' \n' <"$RUN/queue/pid/master.pid")" 2>/dev/null || true; fi
  exit 0 ;;
start)
  [ $# -ge 4 ] && [ $# -le 5 ] || die "usage: instance.sh start RUN RELAY CONFIG [SMTP]" ;;
*) die "usage: instance.sh start|stop …" ;;
esac
RUN=$2 RELAY=$3 CONFIG=$4 SMTP=${5:-}
[ -f "$CONFIG" ] || die "no such file: $CONFIG"
[ "$(id -u)" -eq 0 ] || die "must run as root"
mkdir -p "$RUN/etc" "$RUN/queue" "$RUN/data" "$RUN/mail"
chmod 755 "$RUN"
chown postfix "$RUN/data"; chown 5000:5000 "$RUN/mail"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=mail.example.test \
  -keyout "$RUN/key.pem" -out "$RUN/cert.pem" >/dev/null 2>&1 || die "openssl req failed"
GEN=$(cat "$CONFIG")
case "$GEN" in *"# --- master.cf"*) ;; *) die "$CONFIG has no master.cf part" ;; esac
cat >"$RUN/etc/main.cf" <<MAIN
queue_directory = $RUN/queue
data_directory = $RUN/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $RUN/maillog
maillog_file_prefixes = $RUN
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtp_dns_support_level = disabled
myhostname = mail.example.test
mydomain = example.test
mydestination =
local_transport = error:5.3.0 local delivery disabled
relayhost = [${RELAY%:*}]:${RELAY##*:}
mynetworks = 127.0.0.2/32
smtpd_tls_chain_files = $RUN/key.pem $RUN/cert.pem
smtpd_tls_security_level = may
smtputf8_enable = no
compatibility_level = 3.6
smtpd_forbid_bare_newline = yes
message_size_limit = 26214400
${GEN%%"# --- master.cf"*}
MAIN
{
  [ -n "$SMTP" ] && printf '%s inet n - n - - smtpd\n  -o syslog_name=postfix/smtp\n' "$SMTP"
  echo "# --- master.cf${GEN#*"# --- master.cf"}"
  cat <<'SERVICES'
pickup fifo n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
SERVICES
} >"$RUN/etc/master.cf"
postconf -c "$RUN/etc" -n >/dev/null || die "postconf -n failed"
postfix -c "$RUN/etc" check || die "postfix check failed"
postfix -c "$RUN/etc" start >/dev/null 2>&1 || die "postfix start failed: $(tail -5 "$RUN/maillog" 2>/dev/null)"
for _ in $(seq 100); do [ -s "$RUN/queue/pid/master.pid" ] && exit 0; sleep 0.1; done
die "no master.pid after 10 s (see $RUN/maillog)"
