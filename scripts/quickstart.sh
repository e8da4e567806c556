#!/usr/bin/env bash
# The README's main job on the bundled emoji faces, CPU only:
# prepare -> train (configs/quickstart.toml, 4x4 up to 16x16) -> render -> report.
set -euo pipefail
cd "$(dirname "$0")/.."

# The dev profile compiles dependencies with opt-level 2 (see Cargo.toml), so this shares one
# build with the test suite instead of compiling burn a second time for release. PGAN_BIN runs
# a pgan built already instead (the test suite's), PGAN_QUICK_OUT writes elsewhere than runs/.
if [[ -n "${PGAN_BIN:-}" ]]; then
  pgan="$PGAN_BIN"
else
  cargo build -p pgan
  pgan="${CARGO_TARGET_DIR:-target}/debug/pgan"
fi
runs="${PGAN_QUICK_OUT:-runs}"

mkdir -p "$runs"
"$pgan" prepare data/emoji "$runs/emoji.pgan" --resolution 32 --background ffffff --force
# Training to 16x16 over 26 kimg takes a few minutes on two cores (docs/BENCHMARKS.md).
# PGAN_QUICK_RES=32 goes on to 32x32 (a 32x32 step costs ~4x a 16x16 one on the CPU);
# PGAN_QUICK_KIMG sets the length.
extra=()
[[ -n "${PGAN_QUICK_RES:-}" ]] && extra+=(--resolution "$PGAN_QUICK_RES")
[[ -n "${PGAN_QUICK_KIMG:-}" ]] && extra+=(--total-kimg "$PGAN_QUICK_KIMG")
"$pgan" train --config configs/quickstart.toml --data "$runs/emoji.pgan" --out-dir "$runs/quickstart" \
    "${extra[@]}" "$@"
run=$(ls -d "$runs"/quickstart/*/ | sort | tail -n 1)
"$pgan" render "$run" --out "$run/sheet.png" --seeds 0-47 --rows 6 --cols 8
"$pgan" render "$run" --out "$run/interpolation.png" --seeds 1,2,3,4 --interpolate 8
"$pgan" render "$run" --out "$run/samples/timeline.png" --seeds 0-7 --timeline
"$pgan" report "$run"
echo
echo "sample sheet:   ${run}sheet.png"
echo "interpolation:  ${run}interpolation.png (+ .gif)"
echo "report:         ${run}report.html"
