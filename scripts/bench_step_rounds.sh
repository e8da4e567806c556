#!/usr/bin/env bash
# Interleaved training-step comparison on the CPU: pgan's train_step bench binaries and the
# PyTorch reference run back to back, ROUNDS times, so that a change in machine load hits every
# contender alike. Prints one JSON line per contender, round and resolution, then one line per
# contender and resolution with the median over the rounds (and its ratio to PyTorch's).
#
#   cargo bench -p pgan-train --bench train_step --no-run      # prints the binary's path
#   scripts/bench_step_rounds.sh 4 16 20 target/release/deps/train_step-<hash> torch
#
# ROUNDS, MAX_RES (4..32) and STEPS (timed steps per resolution) are positional; each further
# argument is a contender: a train_step bench binary (several, to A/B builds) or `torch`
# (scripts/torch_reference.py with the issue's CPU-sized config, 2 threads).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 4 ]; then
  echo "usage: $0 ROUNDS MAX_RES STEPS CONTENDER... (a train_step binary, or torch)" >&2
  exit 2
fi
rounds=$1 max_res=$2 steps=$3
shift 3
for c in "$@"; do
  if [ "$c" != torch ] && [ ! -x "$c" ]; then
    echo "error: contender '$c' is neither 'torch' nor an executable bench binary" >&2
    exit 2
  fi
done

rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
for round in $(seq 1 "$rounds"); do
  for c in "$@"; do
    if [ "$c" = torch ]; then
      out=$(python3 scripts/torch_reference.py --resolution "$max_res" --batch 16 --fmap-base 2048 \
        --fmap-max 128 --latent 128 --threads 2 --per-resolution --steps "$steps")
    else
      out=$(PGAN_BENCH_MAX_RES=$max_res PGAN_BENCH_STEPS=$steps "$c")
    fi
    # Tag each JSON line with its contender and round.
    printf '%s\n' "$out" | python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        row = json.loads(line)
        row["contender"], row["round"] = sys.argv[1], int(sys.argv[2])
        print(json.dumps(row))
' "$c" "$round" | tee -a "$rows"
  done
done

python3 - "$rows" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault((r["contender"], r["resolution"]), []).append(r["ms_per_step"])
torch = {res: statistics.median(v) for (c, res), v in by.items() if c == "torch"}
for (c, res), v in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    med = statistics.median(v)
    out = {"summary": "median_ms_per_step", "contender": c, "resolution": res,
           "rounds": len(v), "median_ms": round(med, 2), "all_ms": [round(x, 2) for x in v]}
    if res in torch and c != "torch":
        out["vs_torch"] = round(med / torch[res], 3)
    print(json.dumps(out))
EOF
