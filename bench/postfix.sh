#!/usr/bin/env bash
# bench/postfix.sh — Postfix deciding through mailgate (SPEC §9) against Postfix
# with docker-mailserver's static tables + Dovecot SASL, same run, same load.
#
# Starts `mailgate serve` with only the Postfix listeners (--policy --socketmap
# --milter --sasl), a throwaway Postfix configured by `mailgate postfix config`
# (test/postfix/instance.sh: RSA-2048 certificate like the DMS stack's, relay to
# the kit's sink), then runs
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
rm -rf "$CFG" "$DATA" "$RUN"; mkdir -p "$CFG" "$DATA"
chmod 711 "$DATA"
cp "$FIXTURE"/* "$CFG"/

"$OUT/mailgate" --config-dir "$CFG" --data-dir "$DATA" --set hostname=mail.example.test serve \
  --smtp "" --submission "" --submissions "" --log-level warn \
  --policy 127.0.0.1:$POLICY --socketmap 127.0.0.1:$SOCKETMAP --milter 127.0.0.1:$MILTER --sasl 127.0.0.1:$SASL \
  2>>"$OUT/mailgate.log" &
MG_PID=$!
cleanup() {
  "$ROOT/test/postfix/instance.sh" stop "$RUN"
  kill "$MG_PID" 2>/dev/null; wait "$MG_PID" 2>/dev/null || true
}
trap cleanup EXIT
wait_port $SASL || { echo "mailgate did not start (see $OUT/mailgate.log)" >&2; exit 1; }

"$OUT/mailgate" --config-dir "$CFG" --data-dir "$DATA" postfix config --policy 127.0.0.1:$POLICY --socketmap 127.0.0.1:$SOCKETMAP \
  --milter 127.0.0.1:$MILTER --sasl 127.0.0.1:$SASL --mail-root "$RUN/mail" \
  --submission 127.0.0.1:$PF_SUB --submissions 127.0.0.1:$PF_SUBS >"$OUT/postfix-config.txt"
"$ROOT/test/postfix/instance.sh" start "$RUN" "127.0.0.1:$SINK_PORT" "$OUT/postfix-config.txt"
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
