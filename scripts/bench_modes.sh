#!/usr/bin/env bash
# Mode-coverage benchmark (the mode-collapse check): a synthetic dataset with K known modes,
# trained with configs/cpu-quick.toml with and without minibatch-stddev, then classified with
# `pgan eval --modes`. Prints one JSON line per run (modes covered, KL(generated || uniform)).
#
#   scripts/bench_modes.sh                      # CPU, K=64, cpu-quick's own length
#   PGAN_BACKEND=cuda PGAN_KIMG=60 PGAN=path/to/pgan scripts/bench_modes.sh
#
# Environment: PGAN (binary; default: build the dev profile), PGAN_BACKEND (cpu|wgpu|cuda),
# PGAN_MODES (K, default 64), PGAN_KIMG (total kimg; default cpu-quick's), PGAN_PHASE_KIMG
# (kimg per stabilize/fade phase; default cpu-quick's), PGAN_EMA_KIMG (EMA half-life in kimg;
# default cpu-quick's 1), PGAN_MBSTD ("4 0": group sizes to try),
# PGAN_EVAL_NUM (generated images classified, default 2048), PGAN_RES (dataset and final
# resolution, default 32), PGAN_WORK (scratch folder). The variants train side by side (each
# mostly uses one core on the CPU backend).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PGAN:-}" ]; then
    cargo build -q -p pgan
    PGAN="${CARGO_TARGET_DIR:-target}/debug/pgan"
fi
backend="${PGAN_BACKEND:-cpu}"
modes="${PGAN_MODES:-64}"
res="${PGAN_RES:-32}"
work="${PGAN_WORK:-$(mktemp -d)}"
mkdir -p "$work"

extra=(--resolution "$res")
if [ -n "${PGAN_KIMG:-}" ]; then extra+=(--total-kimg "$PGAN_KIMG"); fi
if [ -n "${PGAN_PHASE_KIMG:-}" ]; then extra+=(--phase-kimg "$PGAN_PHASE_KIMG"); fi
if [ -n "${PGAN_EMA_KIMG:-}" ]; then extra+=(--ema-half-life-kimg "$PGAN_EMA_KIMG"); fi

synth="$work/synth-$modes-$res"
if [ ! -f "$synth/modes.json" ]; then
    "$PGAN" synth "$synth" --modes "$modes" --resolution "$res" --count $((modes * 100)) --seed 0 >&2
fi
"$PGAN" prepare "$synth" "$synth.pgan" --resolution "$res" --force >&2

groups=(${PGAN_MBSTD:-4 0})
for group in "${groups[@]}"; do
    out="$work/runs-mbstd$group"
    rm -rf "$out"
    (
        start=$(date +%s)
        "$PGAN" train --config configs/cpu-quick.toml --data "$synth.pgan" --out-dir "$out" \
            --backend "$backend" --mbstd-group "$group" --eval-every-kimg 0 --no-progress \
            "${extra[@]}" >"$work/train-mbstd$group.log" 2>&1
        echo $(($(date +%s) - start)) >"$work/train-mbstd$group.seconds"
    ) &
done
wait

for group in "${groups[@]}"; do
    out="$work/runs-mbstd$group"
    secs=$(cat "$work/train-mbstd$group.seconds")
    run=$(ls -d "$out"/*/ | sort | tail -n 1)
    "$PGAN" eval "$run" --modes "$synth/modes.json" --num "${PGAN_EVAL_NUM:-2048}" \
        --pairs 256 --backend "$backend" --json "$work/eval-mbstd$group.json" --force >&2
    "$PGAN" render "$run" --out "$work/sheet-mbstd$group.png" --seeds 0-63 --rows 8 --cols 8 \
        --backend "$backend" --force >&2
    python3 - "$work/eval-mbstd$group.json" "$group" "$backend" "$secs" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
cov = report["modes"]
real = report.get("modes_real") or {}
print(json.dumps({
    "bench": "mode_coverage",
    "mbstd_group": int(sys.argv[2]),
    "backend": sys.argv[3],
    "kimg": report["kimg"],
    "train_seconds": int(sys.argv[4]),
    "modes": cov["modes"],
    "covered": cov["covered"],
    "coverage_fraction": cov["coverage_fraction"],
    "kl_to_uniform": cov["kl_to_uniform"],
    "unrecognised": cov["unrecognised"],
    "samples": cov["samples"],
    "histogram": cov["histogram"],
    # Share of the recognised samples per shape / colour / position (1.0 = uniform).
    "attributes": {a["attribute"]: dict(a["shares"]) for a in cov.get("attributes", [])},
    "msssim_fake": report.get("msssim_fake"),
    "msssim_real": report.get("msssim_real"),
    "swd_mean": (report.get("swd") or {}).get("mean"),
    "swd_real_floor": (report.get("swd_real_floor") or {}).get("mean"),
    # The same classifier on as many reals: the ceiling at this resolution.
    "real_covered": real.get("covered"),
    "real_unrecognised": real.get("unrecognised"),
    "real_kl_to_uniform": real.get("kl_to_uniform"),
}))
EOF
done
echo "sheets and logs: $work" >&2
