#!/bin/bash
# Runs every query shape on several relays in turn, so that each comparison is taken within
# the same minute (this machine's speed moves by a fifth from one hour to the next, more
# than most differences measured here). The relays are already running and filled with the
# same events; only one is under load at a time. The order rotates from round to round.
#
#   bench/interleave.sh ROUNDS SECONDS OUT_DIR name=ws://host:port/ [name=ws://… …]
#
# Prints one line per run (round, relay, the `starling-bench query` row) and writes each
# run's JSON to OUT_DIR/<name>-<shape>-<round>.json.
set -euo pipefail
rounds=$1 seconds=$2 out=$3
shift 3
B=${B:-target/release/starling-bench}
mkdir -p "$out"
relays=("$@")
for round in $(seq "$rounds"); do
  for shape in authors-kinds p-tag e-tag kinds t-tag-kinds ids; do
    for i in "${!relays[@]}"; do
      pick=${relays[$(((i + round - 1) % ${#relays[@]}))]}
      name=${pick%%=*} url=${pick#*=}
      row=$("$B" query --url "$url" --connections 8 --seconds "$seconds" --shapes "$shape" \
        --json "$out/$name-$shape-$round.json" | tail -1)
      echo "$round $name $row"
    done
  done
done
