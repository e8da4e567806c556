#!/usr/bin/env bash
# Rebuilds the bundled default dataset in data/emoji/ from the npm package
# emoji-datasource-twitter (Twemoji 64x64 PNGs, graphics CC-BY-4.0).
#
# The subset is chosen from the package's emoji.json metadata:
#   * every "Smileys & Emotion" emoji whose subcategory is a face
#     (face-*, cat-face, monkey-face), base form only;
#   * every "People & Body" emoji of subcategory "person" (head-and-shoulders
#     portraits: baby, child, adult, man, woman, older adult, beard, hair
#     colours), in the default yellow plus all five skin-tone variations.
# Hearts, hands, flags, objects, ... are left out: a set of round faces and
# portraits trains much better at 64x64 than a random mix of emoji.
#
# Usage: scripts/make-default-dataset.sh [VERSION]   (default 16.0.0)
# Needs: npm, python3 (stdlib only). Output: data/emoji/*.png (replaced).
set -euo pipefail

VERSION="${1:-16.0.0}"
PKG="emoji-datasource-twitter"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/data/emoji"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "==> npm pack $PKG@$VERSION into $work"
(cd "$work" && npm pack --loglevel=error "$PKG@$VERSION" >/dev/null)
tar -xzf "$work/$PKG-$VERSION.tgz" -C "$work"

echo "==> selecting faces and portraits from emoji.json"
mkdir -p "$OUT"
find "$OUT" -maxdepth 1 -name '*.png' -delete
python3 - "$work/package" "$OUT" <<'PY'
import json, os, shutil, sys

pkg, out = sys.argv[1], sys.argv[2]
src_dir = os.path.join(pkg, "img", "twitter", "64")
emoji = json.load(open(os.path.join(pkg, "emoji.json"), encoding="utf-8"))

def is_face(e):
    sub = e["subcategory"]
    return e["category"] == "Smileys & Emotion" and (
        sub.startswith("face-") or sub in ("cat-face", "monkey-face"))

def is_portrait(e):
    return e["category"] == "People & Body" and e["subcategory"] == "person"

picked = []
for e in sorted(emoji, key=lambda e: e["sort_order"]):
    if not e.get("has_img_twitter"):
        continue
    if is_face(e):
        picked.append((e["subcategory"], e["short_name"], e["image"]))
    elif is_portrait(e):
        picked.append(("person", e["short_name"], e["image"]))
        for tone, var in sorted(e.get("skin_variations", {}).items()):
            if var.get("has_img_twitter"):
                picked.append(("person", e["short_name"] + "-" + tone.lower(), var["image"]))

n = 0
for i, (sub, name, image) in enumerate(picked):
    src = os.path.join(src_dir, image)
    if not os.path.exists(src):
        print(f"   skip {image}: not in package", file=sys.stderr)
        continue
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    shutil.copyfile(src, os.path.join(out, f"{i:03d}-{sub}-{safe}.png"))
    n += 1
print(f"   copied {n} PNGs to {out}")
PY
du -sh --apparent-size "$OUT"
