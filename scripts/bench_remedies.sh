#!/usr/bin/env bash
# GAN-remedies benchmark (issue 26): on `pgan synth` K-mode data at 16x16, the baseline
# (WGAN-GP + minibatch stddev), each remedy alone, and the failing setups they are meant to fix,
# all on the same schedule and kimg budget, several seeds each. Every run is measured with
# `pgan eval --modes` (modes covered, KL to uniform, SWD, MS-SSIM) and its log is searched for
# the alarms that fired. scripts/bench_remedies.py aggregates the results (mean ± sd over
# seeds) into one JSON file and a Markdown table.
#
#   scripts/bench_remedies.sh                          # writes docs/bench/remedies.json
#   PGAN_SEEDS="0 1 2" PGAN_KIMG=36 PGAN_VARIANTS=baseline PGAN_OUT=/tmp/b.json scripts/bench_remedies.sh
#
# The same script is issue 21's bf16 quality guard: on the CUDA backend the "bf16" variant (the
# baseline with bf16 convolution inputs) runs beside the baseline (f32), both measured by
# `pgan eval` with f32 inference (the weights are f32), and scripts/gpu_check.sh compares the two
# over the seeds:
#   PGAN=.../pgan PGAN_BACKEND=cuda PGAN_VARIANTS="baseline bf16" scripts/bench_remedies.sh
#
# Environment: PGAN (binary; default: the dev-profile build), PGAN_BACKEND (cpu|wgpu|cuda,
# default cpu; training and evaluation), PGAN_MODES (K, default 16),
# PGAN_KIMG (kimg per run, default 12), PGAN_SEEDS (default "0 1 2"), PGAN_JOBS (runs side by
# side, default 3: one run keeps about two thirds of a core busy), PGAN_EVAL_NUM (generated
# images classified, default 256), PGAN_VARIANTS (names to run, default all;
# bf16 only on cuda), PGAN_WORK
# (scratch folder), PGAN_OUT (JSON path, default docs/bench/remedies.json).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PGAN:-}" ]; then
    cargo build -q -p pgan
    PGAN="${CARGO_TARGET_DIR:-target}/debug/pgan"
fi
# Each run works in its own folder (where cubecl looks for a cubecl.toml, up from there): the
# binary's path must not depend on this one.
case "$PGAN" in */*) PGAN="$(cd "$(dirname "$PGAN")" && pwd)/$(basename "$PGAN")" ;; esac
backend="${PGAN_BACKEND:-cpu}"
modes="${PGAN_MODES:-16}"
kimg="${PGAN_KIMG:-12}"
seeds=(${PGAN_SEEDS:-0 1 2})
jobs="${PGAN_JOBS:-3}"
work="${PGAN_WORK:-$(mktemp -d)}"
out_json="${PGAN_OUT:-docs/bench/remedies.json}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"

# name|role|flags: role is baseline, remedy or failing.
variants=(
    "baseline|baseline|"
    "non-saturating|remedy|--loss non-saturating"
    "label-smoothing|remedy|--loss non-saturating --real-label 0.9"
    "instance-noise|remedy|--instance-noise 0.1 --instance-noise-kimg $kimg"
    "feature-matching|remedy|--feature-matching 1"
    "ttur|remedy|--lr-g-mult 0.5 --lr-d-mult 2"
    "minibatch-discrimination|remedy|--minibatch discrimination"
    "minimax-no-remedy|failing|--loss minimax --minibatch none"
    "no-stddev|failing|--minibatch none"
)
# The baseline with bf16 convolution inputs: by default only on CUDA, the one backend that has
# them (the others refuse the option, which the dry run of scripts/gpu_check.sh checks).
if [ "$backend" = cuda ] || [ -n "${PGAN_VARIANTS:-}" ]; then
    variants+=("bf16|precision|--precision bf16")
fi
if [ -n "${PGAN_VARIANTS:-}" ]; then
    keep=()
    for v in "${variants[@]}"; do
        for name in $PGAN_VARIANTS; do
            if [ "${v%%|*}" = "$name" ]; then keep+=("$v"); fi
        done
    done
    variants=("${keep[@]}")
fi

# Tiny networks grown 4x4 → 16x16 over the same phases in every run; an evaluation every kimg
# feeds the collapse alarms (128 images, 64 pairs: with 32 pairs the reals' own MS-SSIM swung
# from 0.24 to 0.31 between evaluations, noise of the size of the alarm's margin).
config="$work/remedies.toml"
cat >"$config" <<TOML
[run]
tick_kimg = 0.5
checkpoint_ticks = 1000
keep_checkpoints = 1
sample_ticks = 1000
sample_rows = 4
sample_cols = 4
sample_cell_px = 16
progress = false

[model]
preset = "cpu-small"
resolution = 16
fmap_base = 256
fmap_max = 32
latent_dim = 32

[schedule]
start_resolution = 4
lod_training_kimg = 0.6
lod_transition_kimg = 0.6
total_kimg = $kimg
minibatch_default = 16
lr_default = 0.002

[ema]
half_life_kimg = 0.5

[eval]
every_kimg = 1.0
num_images = 128
msssim_pairs = 64
TOML

synth="$work/synth-$modes-16"
if [ ! -f "$synth/modes.json" ]; then
    "$PGAN" synth "$synth" --modes "$modes" --resolution 16 --count $((modes * 100)) --seed 0 >&2
fi
"$PGAN" prepare "$synth" "$synth.pgan" --resolution 16 --force >&2

# One run: train, evaluate, record the wall time and the flags. A run that fails leaves its
# command's last lines in `error` (the aggregate reports them) instead of stopping the others.
one_run() {
    local name="$1" flags="$2" seed="$3"
    local dir="$work/$name-seed$seed"
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "$flags" >"$dir/flags"
    cd "$dir"
    local start end
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    if ! "$PGAN" train --config "$config" --data "$synth.pgan" --out-dir "$dir/runs" --seed "$seed" \
        --backend "$backend" --no-progress $flags >"$dir/train.log" 2>&1; then
        { echo "pgan train failed:"; tail -n 5 "$dir/train.log"; } >"$dir/error"
        echo "failed $name seed $seed (pgan train)" >&2
        return
    fi
    end=$(date +%s.%N)
    echo "$start $end" >"$dir/seconds"
    local run
    run=$(ls -d "$dir"/runs/*/ | sort | tail -n 1)
    cp "$run/log.txt" "$dir/log.txt"
    if ! "$PGAN" eval "$run" --modes "$synth/modes.json" --num "${PGAN_EVAL_NUM:-256}" --pairs 64 \
        --backend "$backend" --json "$dir/eval.json" --force >"$dir/eval.log" 2>&1; then
        { echo "pgan eval failed:"; tail -n 5 "$dir/eval.log"; } >"$dir/error"
        echo "failed $name seed $seed (pgan eval)" >&2
        return
    fi
    echo "done $name seed $seed" >&2
}

started=$(date +%s)
running=0
for v in "${variants[@]}"; do
    IFS='|' read -r name role flags <<<"$v"
    echo "$role" >"$work/$name.role"
    for seed in "${seeds[@]}"; do
        one_run "$name" "$flags" "$seed" &
        running=$((running + 1))
        if [ "$running" -ge "$jobs" ]; then
            # A run that failed outside its guarded commands is reported by the aggregate.
            wait -n || true
            running=$((running - 1))
        fi
    done
done
wait || true
wall=$(($(date +%s) - started))

names=()
for v in "${variants[@]}"; do names+=("${v%%|*}"); done
python3 scripts/bench_remedies.py "$work" "$out_json" --kimg "$kimg" --modes "$modes" \
    --jobs "$jobs" --wall-seconds "$wall" --backend "$backend" --variants "${names[@]}"
