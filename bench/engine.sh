#!/usr/bin/env bash
# Runs the engine benchmarks (go test -bench) and prints a table: MaySend and
# Route per case (median and 99th percentile of individually timed calls,
# mean, bytes and allocations per call) and the snapshot load time.
#
#   bench/engine.sh            # 100k accounts/aliases, 10k grants, 1k regexp rules
#   bench/engine.sh --large    # and 1M accounts + 1M aliases
#
# CALLS (default 50000) is the number of calls per case and run. Every case
# runs RUNS times (default 3, go test -count); the table shows, per column,
# the median over the runs, so that one run disturbed by other processes on
# the machine does not decide a figure. The script stops after 5 minutes.
set -euo pipefail

cd "$(dirname "$0")/.."
large=0
if [[ "${1:-}" == "--large" ]]; then
	large=1
fi
calls="${CALLS:-50000}"
runs="${RUNS:-3}"
start=$SECONDS

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), go $(go env GOVERSION)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

export MAILGATE_BENCH_LARGE="$large"
overtime() {
	echo "bench/engine.sh: $1 did not finish within the time limit (is the machine busy? try fewer CALLS or RUNS)" >&2
	exit 1
}
timeout 210 go test -run '^$' -bench 'MaySend|Route' -benchtime "${calls}x" -count "$runs" -timeout 5m \
	./internal/policy >"$tmp/policy.txt" || overtime "go test -bench ./internal/policy"
timeout $((290 - (SECONDS - start))) go test -run '^$' -bench 'Load' -benchtime 2x -timeout 5m \
	./internal/directory >"$tmp/load.txt" || overtime "go test -bench ./internal/directory"

echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo "calls per case and run: $calls, runs: $runs"
echo
# A benchmark line is: name iterations (value unit)…
awk '
function median(list,    n, v, i, j, x) {
	n = split(list, v, " ")
	for (i = 2; i <= n; i++) {
		x = v[i] + 0
		for (j = i - 1; j >= 1 && v[j] + 0 > x; j--) v[j + 1] = v[j]
		v[j + 1] = x
	}
	return v[int((n + 1) / 2)]
}
/^Benchmark(MaySend|Route)\// {
	split($1, p, "/"); sub(/^Benchmark/, "", p[1]); sub(/^size=/, "", p[2]); sub(/^case=/, "", p[3]); sub(/-[0-9]+$/, "", p[3])
	k = sprintf("%-8s %-14s %-13s", p[1], p[2], p[3])
	if (!(k in seen)) { seen[k] = 1; order[++n] = k }
	for (i = 3; i < NF; i += 2) val[k, $(i+1)] = val[k, $(i+1)] " " $i
}
END {
	printf "%-8s %-14s %-13s %9s %9s %9s %7s %7s\n", "call", "size", "case", "p50 ns", "p99 ns", "mean ns", "B/op", "allocs"
	for (i = 1; i <= n; i++) {
		k = order[i]
		printf "%s %9d %9d %9d %7d %7d\n", k, median(val[k, "p50-ns"]), median(val[k, "p99-ns"]), median(val[k, "ns/op"]), median(val[k, "B/op"]), median(val[k, "allocs/op"])
	}
}
' "$tmp/policy.txt"
echo
awk '
BEGIN { printf "%-8s %-14s %10s %12s %12s %10s\n", "call", "size", "ms/load", "live heap MB", "alloc MB", "allocs" }
/^BenchmarkLoad\// {
	split($1, p, "/"); sub(/^size=/, "", p[2]); sub(/-[0-9]+$/, "", p[2])
	for (i = 3; i < NF; i += 2) m[$(i+1)] = $i
	printf "%-8s %-14s %10.0f %12.0f %12.0f %10d\n", "Load", p[2], m["ns/op"] / 1e6, m["live-MB"], m["B/op"] / 1048576, m["allocs/op"]
}
' "$tmp/load.txt"
