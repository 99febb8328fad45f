#!/usr/bin/env bash
# bench/postfix.sh — Postfix deciding through mailgate (SPEC §9) against Postfix
# with docker-mailserver's static tables + Dovecot SASL, same run, same load.
#
# Starts `mailgate serve` with only the Postfix listeners (--policy --socketmap
# --milter --sasl), a throwaway Postfix configured by `mailgate postfix config`
# (RSA-2048 certificate like the DMS stack's, relay to the kit's sink), then runs
# ../shared/kits/dms-stack/bench.sh with OTHER_ADDR / OTHER_IMPLICIT_ADDR at that
# Postfix: every scenario against both stacks, interleaved.
# Needs root, Go, and the packages of ../shared/kits/dms-stack/README.md.
#
# Env: KIT, REPS (3), BENCH_EXTRA (1), OUT (results dir; default a temp dir),
#      MAILGATE_BIN (use this binary), HOLD=SECONDS (skip the kit's runs: keep the
#      Postfix+mailgate stack up with a sink for that long, for manual measurements).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIT=${KIT:-$ROOT/../shared/kits/dms-stack}
FIXTURE=${FIXTURE:-$KIT/../fixture/dms}
OUT=${OUT:-$(mktemp -d -t mailgate-pfbench.XXXXXX)}
mkdir -p "$OUT"; chmod 755 "$OUT"
[ -x "$KIT/bench.sh" ] || { echo "postfix.sh: no dms-stack kit at $KIT (set KIT=)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "postfix.sh: must run as root (Postfix's master)" >&2; exit 1; }

free_port() {
  local p
  while :; do p=$(( 20000 + RANDOM % 40000 )); (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }; done
}
wait_port() { for _ in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

if [ -n "${MAILGATE_BIN:-}" ]; then cp "$MAILGATE_BIN" "$OUT/mailgate"; else (cd "$ROOT" && go build -o "$OUT/mailgate" ./cmd/mailgate); fi
SINK_PORT=$(free_port); SUBMISSION_PORT=$(free_port); SUBMISSIONS_PORT=$(free_port)
PF_SUB=$(free_port); PF_SUBS=$(free_port)
POLICY=$(free_port); SOCKETMAP=$(free_port); MILTER=$(free_port); SASL=$(free_port)
CFG=$OUT/config; DATA=$OUT/data; RUN=$OUT/postfix
rm -rf "$CFG" "$DATA" "$RUN"; mkdir -p "$CFG" "$DATA" "$RUN/etc" "$RUN/queue" "$RUN/data" "$RUN/mail"
chmod 711 "$DATA"; chmod 755 "$RUN"
cp "$FIXTURE"/* "$CFG"/
chown postfix "$RUN/data"; chown 5000:5000 "$RUN/mail"

"$OUT/mailgate" --config-dir "$CFG" --data-dir "$DATA" --set hostname=mail.example.test serve \
  --smtp "" --submission "" --submissions "" --log-level warn \
  --policy 127.0.0.1:$POLICY --socketmap 127.0.0.1:$SOCKETMAP --milter 127.0.0.1:$MILTER --sasl 127.0.0.1:$SASL \
  2>>"$OUT/mailgate.log" &
MG_PID=$!
cleanup() {
  postfix -c "$RUN/etc" stop >/dev/null 2>&1 || true
  kill "$MG_PID" 2>/dev/null; wait "$MG_PID" 2>/dev/null || true
}
trap cleanup EXIT
wait_port $SASL || { echo "mailgate did not start (see $OUT/mailgate.log)" >&2; exit 1; }

openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=mail.example.test \
  -keyout "$RUN/key.pem" -out "$RUN/cert.pem" >/dev/null 2>&1
GEN=$("$OUT/mailgate" --config-dir "$CFG" --data-dir "$DATA" postfix config --policy 127.0.0.1:$POLICY --socketmap 127.0.0.1:$SOCKETMAP \
  --milter 127.0.0.1:$MILTER --sasl 127.0.0.1:$SASL --mail-root "$RUN/mail" \
  --submission 127.0.0.1:$PF_SUB --submissions 127.0.0.1:$PF_SUBS)
MAINPART=${GEN%%"# --- master.cf"*}
MASTERPART="# --- master.cf${GEN#*"# --- master.cf"}"
cat >"$RUN/etc/main.cf" <<EOF
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
relayhost = [127.0.0.1]:$SINK_PORT
mynetworks = 127.0.0.2/32
smtpd_tls_chain_files = $RUN/key.pem $RUN/cert.pem
smtpd_tls_security_level = may
smtputf8_enable = no
compatibility_level = 3.6
smtpd_forbid_bare_newline = yes
message_size_limit = 10240000
$MAINPART
EOF
{ echo "$MASTERPART"; cat <<'EOF'
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
EOF
} >"$RUN/etc/master.cf"
postfix -c "$RUN/etc" check
postfix -c "$RUN/etc" start >/dev/null
wait_port $PF_SUB && wait_port $PF_SUBS || { echo "postfix did not start (see $RUN/maillog)" >&2; exit 1; }
echo "# Postfix+mailgate: submission $PF_SUB submissions $PF_SUBS; mailgate pid $MG_PID; results in $OUT" >&2

if [ -n "${HOLD:-}" ]; then # keep Postfix+mailgate up for manual measurements, with a sink
  smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1000 >/dev/null 2>&1 & SINK_PID=$!
  echo "PF_SUB=$PF_SUB PF_SUBS=$PF_SUBS MG_PID=$MG_PID; holding for $HOLD s" >&2
  sleep "$HOLD"; kill $SINK_PID; exit 0
fi
SINK_PORT=$SINK_PORT SUBMISSION_PORT=$SUBMISSION_PORT SUBMISSIONS_PORT=$SUBMISSIONS_PORT \
OTHER_ADDR=127.0.0.1:$PF_SUB OTHER_IMPLICIT_ADDR=127.0.0.1:$PF_SUBS OTHER_PID=$MG_PID \
REPS=${REPS:-3} BENCH_EXTRA=${BENCH_EXTRA:-1} BENCH_OUT="$OUT/dms" "$KIT/bench.sh" "$FIXTURE" | tee "$OUT/dms.txt"
