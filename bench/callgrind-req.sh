#!/usr/bin/env bash
# Instructions the relay spends on one REQ of a query shape, counted by callgrind: figures
# that do not move with whatever else the machine is doing (bench/RESULTS.md, performance
# pass 2).
#
#   bench/callgrind-req.sh <data-dir | postgres://…> <shape> [short-seconds] [long-seconds]
#
# The relay runs under callgrind with the throughput flags; one connection of
# `starling-bench query` runs the shape twice, for a short and a long time, and the counters
# are dumped after each. The difference of the two dumps over the difference of the REQs
# answered is the cost of one more REQ: start-up, connecting and the `ids` shape's first
# lookup of stored notes cancel out.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${S:-target/release/starling}
B=${B:-target/release/starling-bench}
store=$1 shape=$2 short=${3:-2} long=${4:-8}
port=${PORT:-7850}
work=$(mktemp -d)
trap 'kill "$relay" 2>/dev/null || true; rm -rf "$work"' EXIT

limits=(--max-reqs-per-minute-per-connection 0 --max-reqs-per-minute-per-ip 0
  --max-connections-per-ip 0 --max-connections-per-minute-per-ip 0
  --query-ms-per-minute-per-connection 0 --query-ms-per-minute-per-ip 0)
if [[ $store == postgres* ]]; then
  DATABASE_URL=$store RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    "$S" --bind 127.0.0.1:"$port" --data-dir "$work/node" "${limits[@]}" 2>"$work/relay.log" &
else
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    "$S" --bind 127.0.0.1:"$port" --data-dir "$store" "${limits[@]}" 2>"$work/relay.log" &
fi
relay=$!
for _ in $(seq 600); do
  curl -sf -H 'Accept: application/nostr+json' "http://127.0.0.1:$port/" >/dev/null && break
  sleep 0.5
done

# Instructions since the last dump (callgrind zeroes its counters at each dump).
dump() {
  rm -f "$work"/cg.out.*
  callgrind_control --dump "$relay" >/dev/null 2>&1
  for _ in $(seq 100); do compgen -G "$work/cg.out.*" >/dev/null && break; sleep 0.1; done
  sleep 0.5 # the dump file is written in one go once named; let it finish
  awk '/^summary:/ {print $2}' "$work"/cg.out.*
}
# REQs the bench answered, from its JSON.
answered() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"]["shapes"][0]["count"])' "$1"; }

dump >/dev/null
"$B" query --url "ws://127.0.0.1:$port/" --connections 1 --seconds "$short" --shapes "$shape" --json "$work/short.json" >/dev/null
short_ir=$(dump)
"$B" query --url "ws://127.0.0.1:$port/" --connections 1 --seconds "$long" --shapes "$shape" --json "$work/long.json" >/dev/null
long_ir=$(dump)
short_n=$(answered "$work/short.json") long_n=$(answered "$work/long.json")
echo "$shape: $(( (long_ir - short_ir) / (long_n - short_n) )) instructions a REQ ($short_n and $long_n REQs)"
