#!/usr/bin/env bash
# Times the management commands on large files, including process start:
# `alias add` on a 100k-line postfix-virtual.cf and `email add` on a
# 100k-line postfix-accounts.cf (target: ≤ 100 ms per command). Every run
# is a real, fsynced, locked edit of the file.
#
#   bench/cli.sh            # 100k lines, 21 runs per command
#   LINES=1000000 RUNS=5 bench/cli.sh
set -euo pipefail
cd "$(dirname "$0")/.."
lines="${LINES:-100000}"
runs="${RUNS:-21}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/mailgate" ./cmd/mailgate
go build -o "$tmp/runstat" ./bench/runstat
go build -o "$tmp/gendir" ./bench/gendir
"$tmp/gendir" -accounts "$lines" -aliases "$lines" -grants 0 -regexps 0 -catchalls 0 "$tmp/config" >/dev/null

echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), go $(go env GOVERSION)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "files: $(wc -l <"$tmp/config/postfix-accounts.cf") accounts, $(wc -l <"$tmp/config/postfix-virtual.cf") aliases"
echo

# time_runs NAME CMD… — runs CMD $runs times (the string RUN is replaced by
# the run number) and prints median, 90th percentile and max wall time.
time_runs() {
	local name=$1
	shift
	local ms=()
	for i in $(seq 1 "$runs"); do
		local args=("${@//RUN/$i}")
		local out
		out=$("$tmp/runstat" -q "$tmp/mailgate" --config-dir "$tmp/config" --set hostname=bench.example "${args[@]}" 2>&1 >/dev/null | tail -1)
		case "$out" in
		*status=0*) ;;
		*) echo "$name failed: $out" >&2; exit 1 ;;
		esac
		ms+=("$(sed -n 's/.*wall_ms=\([0-9.]*\).*/\1/p' <<<"$out")")
	done
	printf '%s\n' "${ms[@]}" | sort -n | awk -v name="$name" '
		{ v[NR] = $1 }
		END { printf "%-36s median %7.1f ms   p90 %7.1f ms   max %7.1f ms   (%d runs)\n", name, v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.5)], v[NR], NR }'
}

time_runs "alias add (new key)" alias add "bench-RUN@d1.example" "user1@d1.example"
time_runs "alias add (existing key, line 50000)" alias add "alias50000@d0.example" "extra-RUN@x.example"
time_runs "email add" email add "new-RUN@d1.example" "benchmark password"
time_runs "sender add" sender add "noreply-RUN@x.example" "user1@d1.example"
time_runs "domain list (load only, no write)" domain list
echo
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
