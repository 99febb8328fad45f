#!/usr/bin/env bash
# Directory sources (docs/performance.md, "Directory sources"): MaySend and
# Route per source — file, PostgreSQL, LDAP with and without its cache — on
# the same data (DMS's LDAP test data), with the median and 99th percentile
# of individually timed calls; then the cost of a PostgreSQL reload (what
# every node does on each change) at 10k and 100k entries, on the node and
# on the server.
#
# Needs slapd, ldap-utils and postgresql (./test.sh installs them). Each run
# starts its own throwaway slapd (test/ldap/instance.sh) and PostgreSQL
# cluster (test/pg/instance.sh) on loopback ports.
#
#   bench/directories.sh              # CALLS=20000 calls per case
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${CALLS:-20000}"

echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), go $(go env GOVERSION)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

echo "== MaySend / Route per source ($calls calls per case)"
printf '%-14s %-16s %12s %12s %12s\n' source op mean-ns p50-ns p99-ns
go test ./internal/dirsource -run '^$' -bench 'BenchmarkSources' -benchtime "${calls}x" -count 1 |
	awk '/^BenchmarkSources\// {
		split($1, p, "/"); sub("source=", "", p[2]); op = p[3]; sub("op=", "", op); sub(/-[0-9]+$/, "", op)
		mean = $3; p50 = ""; p99 = ""
		for (i = 4; i < NF; i++) { if ($(i+1) == "p50-ns") p50 = $i; if ($(i+1) == "p99-ns") p99 = $i }
		printf "%-14s %-16s %12s %12s %12s\n", p[2], op, mean, p50, p99
	}'
echo

echo "== PostgreSQL reload (Load of the whole directory; 10 loads per size)"
printf '%-16s %14s %16s\n' entries node-ms server-cpu-ms
go test ./internal/pgstore -run '^$' -bench 'BenchmarkLoad' -benchtime 10x -count 1 |
	awk '/^BenchmarkLoad\// {
		split($1, p, "/"); n = p[2]; sub("entries=", "", n); sub(/-[0-9]+$/, "", n)
		cpu = ""
		for (i = 4; i < NF; i++) if ($(i+1) == "server-cpu-ms") cpu = $i
		printf "%-16s %14.1f %16s\n", n, $3 / 1e6, cpu
	}'
