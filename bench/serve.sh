#!/usr/bin/env bash
# bench/serve.sh — `mailgate serve` measured against the docker-mailserver
# stack (Postfix + Dovecot) in the same run, and on its own at 1, 16 and 64
# sessions. Needs root (the DMS stack's Postfix and Dovecot masters start as
# root), Go, and the Debian packages of ../shared/kits/dms-stack/README.md.
#
#   bench/serve.sh                 # everything (~5 min)
#   PART=dms bench/serve.sh        # only the same-run comparison (kit bench.sh, OTHER_ADDR = mailgate)
#   PART=own bench/serve.sh        # only mailgate at 1/16/64 sessions, submission→relay and inbound→Maildir
#
# Env: KIT (the dms-stack kit dir), REPS (3), BENCH_EXTRA (1), CERT=rsa to give
# mailgate the RSA-2048 certificate the DMS stack uses (default: mailgate's own
# self-signed ECDSA P-256 certificate), OUT (results dir; default a temp dir).
# Prints the kit's per-run lines and medians, then one line per own scenario,
# and mailgate's peak RSS.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIT=${KIT:-$ROOT/../shared/kits/dms-stack}
FIXTURE=${FIXTURE:-$KIT/../fixture/dms}
PART=${PART:-all}
OUT=${OUT:-$(mktemp -d -t mailgate-bench.XXXXXX)}
mkdir -p "$OUT"
[ -x "$KIT/bench.sh" ] || { echo "serve.sh: no dms-stack kit at $KIT (set KIT=)" >&2; exit 1; }

free_port() { # a loopback TCP port nobody listens on
  local p
  while :; do
    p=$(( 20000 + RANDOM % 40000 ))
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
  done
}

echo "# building mailgate and smtpload" >&2
(cd "$ROOT" && go build -o "$OUT/mailgate" ./cmd/mailgate && go build -o "$OUT/smtpload" ./bench/smtpload)

SINK_PORT=$(free_port); SUBMISSION_PORT=$(free_port); SUBMISSIONS_PORT=$(free_port)
MG_SMTP=$(free_port); MG_SUB=$(free_port); MG_SUBS=$(free_port)
CFG=$OUT/config; DATA=$OUT/data
rm -rf "$CFG" "$DATA"; mkdir -p "$CFG"; cp "$FIXTURE"/* "$CFG"/

TLSARGS=()
if [ "${CERT:-}" = rsa ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=mail.example.test \
    -keyout "$OUT/rsa.key" -out "$OUT/rsa.crt" 2>/dev/null
  TLSARGS=(--tls-cert "$OUT/rsa.crt" --tls-key "$OUT/rsa.key")
fi

SINK_PID=
start_mailgate() {
  # All load comes from 127.0.0.1: the per-address limit (default 50) must
  # admit 64 sessions.
  "$OUT/mailgate" --config-dir "$CFG" --data-dir "$DATA" --set hostname=mail.example.test \
    --set max_connections_per_ip=1000 \
    serve --smtp "127.0.0.1:$MG_SMTP" --submission "127.0.0.1:$MG_SUB" --submissions "127.0.0.1:$MG_SUBS" \
    --relay-host "127.0.0.1:$SINK_PORT" --log-level warn "${TLSARGS[@]}" 2>>"$OUT/mailgate.log" &
  MG_PID=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$MG_SUB) 2>/dev/null && return 0
    sleep 0.1
  done
  echo "serve.sh: mailgate did not start; see $OUT/mailgate.log" >&2; exit 1
}
cleanup() {
  [ -n "${MG_PID:-}" ] && kill "$MG_PID" 2>/dev/null && wait "$MG_PID" 2>/dev/null
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null
  true
}
trap cleanup EXIT
start_mailgate
echo "# mailgate pid $MG_PID: smtp $MG_SMTP submission $MG_SUB submissions $MG_SUBS relay 127.0.0.1:$SINK_PORT; results in $OUT" >&2

if [ "$PART" = all ] || [ "$PART" = dms ]; then
  # The kit starts its own stack on these ports (its sink is our relay host)
  # and runs each scenario against DMS, then against mailgate, interleaved.
  SINK_PORT=$SINK_PORT SUBMISSION_PORT=$SUBMISSION_PORT SUBMISSIONS_PORT=$SUBMISSIONS_PORT \
  OTHER_ADDR=127.0.0.1:$MG_SUB OTHER_IMPLICIT_ADDR=127.0.0.1:$MG_SUBS OTHER_PID=$MG_PID \
  REPS=${REPS:-3} BENCH_EXTRA=${BENCH_EXTRA:-1} BENCH_OUT="$OUT/dms" "$KIT/bench.sh" "$FIXTURE" | tee "$OUT/dms.txt"
fi

if [ "$PART" = all ] || [ "$PART" = own ]; then
  # Our own sink for the relay (the kit's stack is gone by now).
  /usr/sbin/smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1024 >/dev/null 2>&1 &
  SINK_PID=$!
  sleep 0.5
  AUTH=(--auth user1@localhost.localdomain:mypassword --from user1@localhost.localdomain --to someone@remote.example --size 2048)
  IN=(--from sender@remote.example --to user1@localhost.localdomain --size 2048)
  printf '%-34s %s\n' scenario result | tee "$OUT/own.txt"
  for s in 1 16 64; do
    n=$(( s == 1 ? 1000 : 5000 ))
    for kind in relay inbound; do
      if [ $kind = relay ]; then args=(--addr "127.0.0.1:$MG_SUB" --tls starttls "${AUTH[@]}")
      else args=(--addr "127.0.0.1:$MG_SMTP" --tls none "${IN[@]}"); fi
      for mode in reuse newconn; do
        extra=(); [ $mode = reuse ] && extra=(--reuse)
        line=$("$OUT/smtpload" "${args[@]}" --sessions "$s" --messages "$n" "${extra[@]}" 2>&1 | tail -1) || true
        printf '%-34s %s\n' "${kind}_${s}s_${mode}" "$line" | tee -a "$OUT/own.txt"
        sleep 1
      done
    done
  done
  # Sustained load: memory must stay flat.
  for i in 1 2 3; do
    "$OUT/smtpload" --addr "127.0.0.1:$MG_SUB" --tls starttls "${AUTH[@]}" --sessions 16 --reuse --messages 20000 >/dev/null 2>&1 || true
    printf 'after %d x 20000 msgs: %s\n' "$i" "$(grep -E 'VmRSS|VmHWM' /proc/$MG_PID/status | tr -s ' \t\n' ' ')" | tee -a "$OUT/own.txt"
  done
fi
echo "mailgate peak RSS: $(grep VmHWM /proc/$MG_PID/status | tr -s ' ')" | tee -a "$OUT/own.txt"
