#!/usr/bin/env bash
# Quick-start benchmark: the README's main job (scripts/quickstart.sh, configs/quickstart.toml)
# timed end to end, then its final checkpoint measured against the emoji reals: SWD (and its
# real-vs-real noise floor) and MS-SSIM diversity on 149 images, plus FID when the Inception
# weights are present (scripts/fetch-inception.sh) and PGAN_FID=1. Prints one JSON line and
# appends it to docs/bench/quickstart.jsonl.
#
#   scripts/bench_quickstart.sh            # CPU, the quick start's own config
#   PGAN_FID=1 scripts/bench_quickstart.sh # + FID (Inception features: docs/BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q -p pgan
pgan="${CARGO_TARGET_DIR:-target}/debug/pgan"
mkdir -p runs
start=$(date +%s.%N)
bash scripts/quickstart.sh --no-progress > runs/quickstart.log 2>&1
end=$(date +%s.%N)
# quickstart.sh makes a new numbered run folder next to earlier ones: the newest is this one.
run=$(ls -d runs/quickstart/*/ | sort | tail -n 1)
# Training alone, from the run's own metrics (wall seconds at the last tick).
train_s=$(python3 -c 'import json,sys; rows=[json.loads(l) for l in open(sys.argv[1])]; print(rows[-1]["time_s"])' "$run/metrics.jsonl")

fid=()
if [ "${PGAN_FID:-0}" = 1 ]; then fid=(--fid); fi
# SWD's real-vs-real floor needs two disjoint draws of --num reals: the emoji set's 298 images
# allow 149 (with more, the draws share images and the floor reads low).
"$pgan" eval "$run" --num 149 --pairs 256 --json "$run/eval-bench.json" --force "${fid[@]}" > /dev/null
python3 - "$run/eval-bench.json" "$start" "$end" "$train_s" "$(nproc)" <<'PY' | tee -a docs/bench/quickstart.jsonl
import json, sys, datetime
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
e = json.load(open(sys.argv[1]))
print(json.dumps({
    "bench": "quickstart", "date": datetime.date.today().isoformat(),
    "cpus": int(sys.argv[5]), "cpu": cpu,
    "config": "configs/quickstart.toml", "kimg": e["kimg"], "resolution": e["resolution"],
    "wall_s_total": round(float(sys.argv[3]) - float(sys.argv[2]), 1),
    "train_s": None if sys.argv[4] == "null" else round(float(sys.argv[4]), 1),
    "swd_x1e3": round(e["swd"]["mean"], 2), "swd_real_floor_x1e3": round(e["swd_real_floor"]["mean"], 2),
    "msssim_fake": round(e["msssim_fake"], 4), "msssim_real": round(e["msssim_real"], 4),
    "fid": e.get("fid"), "num_images": e["num_images"],
}))
PY
