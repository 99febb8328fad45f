#!/usr/bin/env bash
# Measures what loading a large configuration costs a real process: generates
# the 100k and the 1M+1M directories (bench/gendir), builds cmd/mailgate and
# runs `mailgate --config-dir DIR domain list` (whose work is the load: the
# settings, every file, the snapshot) under bench/runstat, which prints the
# wall time and the peak RSS (getrusage ru_maxrss) of the process.
#
#   bench/load.sh              # RUNS (default 3) runs per size
#   SIZES=100k bench/load.sh   # only the 100k directory
#
# Temporary files (about 230 MB) are removed on exit; it takes about a minute.
set -euo pipefail

cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
sizes="${SIZES:-100k 1M}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

go build -o "$tmp/gendir" ./bench/gendir
go build -o "$tmp/runstat" ./bench/runstat
go build -o "$tmp/mailgate" ./cmd/mailgate

echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), go $(go env GOVERSION)"
printf "%-6s %-9s %-8s %8s %10s %8s %8s\n" size files run wall_ms maxrss_MB user_ms sys_ms
for size in $sizes; do
	case "$size" in
	100k) n=100000 ;;
	1M) n=1000000 ;;
	*) echo "unknown size $size" >&2; exit 2 ;;
	esac
	dir="$tmp/$size"
	"$tmp/gendir" -accounts "$n" -aliases "$n" -grants 10000 -regexps 1000 -domains 100 -catchalls 50 "$dir"
	files="$(du -sm "$dir" | cut -f1)MB"
	for run in $(seq "$runs"); do
		# A clean environment: no DMS or MAILGATE_* variable changes the settings.
		stats="$(env -i PATH="$PATH" timeout 120 "$tmp/runstat" -q "$tmp/mailgate" --config-dir "$dir" domain list 2>&1 >/dev/null | tail -1)"
		eval "$stats" # wall_ms=… maxrss_kb=… user_ms=… sys_ms=… status=…
		if [[ "$status" != 0 ]]; then
			echo "mailgate failed on $dir: $stats" >&2
			exit 1
		fi
		printf "%-6s %-9s %-8s %8d %10d %8d %8d\n" "$size" "$files" "$run/$runs" "$wall_ms" $((maxrss_kb / 1024)) "$user_ms" "$sys_ms"
	done
	rm -rf "$dir"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
