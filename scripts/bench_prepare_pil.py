#!/usr/bin/env python3
"""Baseline for `pgan prepare`: the pipeline a user would otherwise write with
Pillow + numpy, single process.

For every image in FOLDER (recursive, sorted): decode, apply EXIF orientation,
convert to RGB, centre-crop to a square, resize to RESOLUTION with LANCZOS,
build the 2x2 box-average pyramid down to 4x4 (float chain, np.rint, as in
ProGAN's dataset_tool.py) and append every level's raw bytes to OUTPUT.

Usage: bench_prepare_pil.py FOLDER RESOLUTION [OUTPUT]
Prints one JSON line: {"bench":"prepare_pil", ..., "images_per_sec": ...}
"""
import json
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageOps

EXTS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def list_images(folder):
    out = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if os.path.splitext(name)[1].lower() in EXTS:
                out.append(os.path.join(root, name))
    return sorted(out)


def load(path, res):
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
        img = img.resize((res, res), Image.LANCZOS)
        return np.asarray(img, dtype=np.uint8)


def pyramid(top):
    levels = [top]
    img = top.astype(np.float32)
    while img.shape[0] > 4:
        img = (img[0::2, 0::2] + img[0::2, 1::2] + img[1::2, 0::2] + img[1::2, 1::2]) * 0.25
        levels.append(np.rint(img).clip(0, 255).astype(np.uint8))
    return levels


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    folder, res = sys.argv[1], int(sys.argv[2])
    output = sys.argv[3] if len(sys.argv) == 4 else os.path.join(tempfile.gettempdir(), f"pil_bench_{res}.raw")
    paths = list_images(folder)
    start = time.perf_counter()
    written = 0
    with open(output, "wb") as f:
        for p in paths:
            try:
                levels = pyramid(load(p, res))
            except Exception as e:  # skip undecodable files like pgan does
                print(f"skipped {p}: {e}", file=sys.stderr)
                continue
            for level in levels:
                f.write(level.tobytes())
            written += 1
    elapsed = time.perf_counter() - start
    print(json.dumps({
        "bench": "prepare_pil",
        "images": written,
        "source": folder,
        "resolution": res,
        "processes": 1,
        "seconds": round(elapsed, 3),
        "images_per_sec": round(written / elapsed, 1),
        "bytes": os.path.getsize(output),
    }))
    if len(sys.argv) == 3:
        os.remove(output)


if __name__ == "__main__":
    main()
