#!/usr/bin/env bash
# The whole test suite: every crate's unit tests and the CLI end-to-end tests, with the wgpu
# backend compiled in (run on Mesa's lavapipe when there is no GPU), then a compile check of the
# CUDA backend. One cargo invocation per step so the shared target directory is built once.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && [ -z "${VK_ICD_FILENAMES:-}" ]; then
  echo "note: no Vulkan driver found; wgpu tests will be skipped (install mesa-vulkan-drivers)" >&2
fi
# Kernel autotuning on a software rasteriser takes minutes per shape: keep it minimal.
export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"

cargo test --workspace --features wgpu
cargo check -p pgan --features cuda
echo "all tests passed"
