#!/usr/bin/env python3
"""Independent NumPy reference for pgan-metrics' deterministic pieces.

Writes crates/pgan-metrics/tests/fixtures/reference.json, which
crates/pgan-metrics/tests/reference.rs compares against (no Python needed at test time).

Covered:
  * Laplacian pyramid (ProGAN metrics/sliced_wasserstein.py: pyr_down, pyr_up,
    generate_laplacian_pyramid; scipy.ndimage.convolve(mode='mirror') == np.pad(mode='reflect'));
  * descriptor extraction at given positions, finalize_descriptors (per-channel normalisation);
  * the sorted-projection distance for given descriptors and given directions;
  * MS-SSIM (ProGAN metrics/ms_ssim.py: _FSpecialGauss, _SSIMForMultiScale, _HoxDownsample,
    msssim), with inputs mapped from [-1, 1] to [0, 255] (clamped) and odd sizes cropped to even
    before the 2x2 average.

Only NumPy is required:  python3 -m pip install numpy && python3 scripts/metrics_reference.py
"""
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "pgan-metrics", "tests", "fixtures", "reference.json")

# ---------------------------------------------------------------- Laplacian pyramid

BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
GAUSS_5X5 = np.outer(BINOMIAL, BINOMIAL)  # == the official gaussian_filter / 256


def conv5_mirror(img, gain=1.0):
    """2-D 5x5 convolution of every channel (C, H, W) with mirror (reflect-101) borders."""
    c, h, w = img.shape
    padded = np.pad(img, ((0, 0), (2, 2), (2, 2)), mode="reflect")
    out = np.zeros_like(img, dtype=np.float64)
    for dy in range(5):
        for dx in range(5):
            out += GAUSS_5X5[dy, dx] * padded[:, dy:dy + h, dx:dx + w]
    return out * gain


def pyr_down(img):
    return conv5_mirror(img)[:, ::2, ::2]


def pyr_up(img, h, w):
    up = np.zeros((img.shape[0], h, w))
    up[:, ::2, ::2] = img[:, : (h + 1) // 2, : (w + 1) // 2]
    return conv5_mirror(up, 4.0)


def laplacian_pyramid(img, min_res):
    levels, res = 0, min(img.shape[1:])
    while res >= min_res:
        levels += 1
        res //= 2
    levels = max(levels, 1)
    pyr = [img.astype(np.float64)]
    for _ in range(1, levels):
        down = pyr_down(pyr[-1])
        pyr[-1] = pyr[-1] - pyr_up(down, pyr[-1].shape[1], pyr[-1].shape[2])
        pyr.append(down)
    return pyr


# ---------------------------------------------------------------- SWD pieces


def extract(level, positions, patch):
    return np.stack([level[:, y:y + patch, x:x + patch] for (y, x) in positions])  # (N, C, P, P)


def finalize_descriptors(desc):
    desc = desc - np.mean(desc, axis=(0, 2, 3), keepdims=True)
    desc = desc / np.std(desc, axis=(0, 2, 3), keepdims=True)
    return desc.reshape(desc.shape[0], -1)


def sliced_distance(a, b, dirs):
    """dirs: (n_dirs, dim), used as given. Mean over directions and descriptors."""
    pa = np.sort(a @ dirs.T, axis=0)
    pb = np.sort(b @ dirs.T, axis=0)
    return float(np.mean(np.abs(pa - pb)))


# ---------------------------------------------------------------- MS-SSIM


def fspecial_gauss(size, sigma):
    radius = size // 2
    offset, start, stop = 0.0, -radius, radius + 1
    if size % 2 == 0:
        offset, stop = 0.5, stop - 1
    x, y = np.mgrid[offset + start:stop, offset + start:stop]
    g = np.exp(-((x ** 2 + y ** 2) / (2.0 * sigma ** 2)))
    return g / g.sum()


def conv_valid(img, window):
    """Valid 2-D correlation of (C, H, W) with a symmetric (k, k) window."""
    c, h, w = img.shape
    k = window.shape[0]
    out = np.zeros((c, h - k + 1, w - k + 1))
    for dy in range(k):
        for dx in range(k):
            out += window[dy, dx] * img[:, dy:dy + h - k + 1, dx:dx + w - k + 1]
    return out


def ssim_for_multiscale(img1, img2, max_val=255.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03):
    _, height, width = img1.shape
    size = min(filter_size, height, width)
    sigma = size * filter_sigma / filter_size
    window = fspecial_gauss(size, sigma)
    mu1, mu2 = conv_valid(img1, window), conv_valid(img2, window)
    sigma11 = conv_valid(img1 * img1, window) - mu1 * mu1
    sigma22 = conv_valid(img2 * img2, window) - mu2 * mu2
    sigma12 = conv_valid(img1 * img2, window) - mu1 * mu2
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    v1 = 2.0 * sigma12 + c2
    v2 = sigma11 + sigma22 + c2
    ssim = np.mean(((2.0 * mu1 * mu2 + c1) * v1) / ((mu1 * mu1 + mu2 * mu2 + c1) * v2))
    cs = np.mean(v1 / v2)
    return ssim, cs


def hox_downsample(img):
    h, w = img.shape[1] // 2 * 2, img.shape[2] // 2 * 2
    img = img[:, :h, :w]
    return (img[:, 0::2, 0::2] + img[:, 1::2, 0::2] + img[:, 0::2, 1::2] + img[:, 1::2, 1::2]) * 0.25


def msssim(a, b):
    """a, b: (C, H, W) in [-1, 1]."""
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    im1 = np.clip((a.astype(np.float64) + 1.0) * 127.5, 0.0, 255.0)
    im2 = np.clip((b.astype(np.float64) + 1.0) * 127.5, 0.0, 255.0)
    mssim, mcs = [], []
    for _ in range(len(weights)):
        ssim, cs = ssim_for_multiscale(im1, im2)
        mssim.append(ssim)
        mcs.append(cs)
        im1, im2 = hox_downsample(im1), hox_downsample(im2)
    mssim = np.clip(np.asarray(mssim), 0.0, np.inf)
    mcs = np.clip(np.asarray(mcs), 0.0, np.inf)
    return float(np.prod(mcs[:-1] ** weights[:-1]) * mssim[-1] ** weights[-1])


# ---------------------------------------------------------------- inputs


def pattern(c, h, w, phase):
    """Deterministic test image in [-1, 1] from a formula."""
    ch, y, x = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    v = 0.55 * np.sin(0.31 * x + phase + ch) * np.cos(0.27 * y - 0.5 * ch) + 0.3 * np.sin(0.05 * (x - 2 * y) * (1 + phase))
    return np.clip(v, -1.0, 1.0).astype(np.float32)


def flat(a):
    """Values as JSON numbers: float32 data with the shortest round-trip repr (exact when read
    back as f32), float64 results to 10 significant digits."""
    a = np.asarray(a)
    if a.dtype == np.float32:
        return [float(str(v)) for v in a.ravel()]
    return [float("%.10g" % v) for v in a.astype(np.float64).ravel()]


def main():
    rng = np.random.default_rng(20240607)
    cases = {}

    # Pyramids: a 3x32x32 image down to 8 (levels 32, 16, 8) and a 1x24x40 image down to 6.
    pyramids = []
    for (c, h, w, min_res, phase) in [(3, 32, 32, 8, 0.4), (1, 24, 40, 6, 1.3)]:
        img = pattern(c, h, w, phase) + rng.uniform(-0.1, 0.1, size=(c, h, w)).astype(np.float32)
        img = np.clip(img, -1, 1).astype(np.float32)
        pyr = laplacian_pyramid(img, min_res)
        pyramids.append({
            "c": c, "h": h, "w": w, "min_resolution": min_res, "image": flat(img),
            "levels": [{"h": l.shape[1], "w": l.shape[2], "data": flat(l)} for l in pyr],
        })
    cases["pyramids"] = pyramids

    # Descriptors at given positions from the first pyramid's levels, then normalisation.
    img0 = np.array(pyramids[0]["image"], dtype=np.float32).reshape(3, 32, 32)
    pyr0 = laplacian_pyramid(img0, 8)
    patch = 7
    desc_cases = []
    for li, level in enumerate(pyr0):
        hh, ww = level.shape[1:]
        positions = [(int(rng.integers(0, hh - patch + 1)), int(rng.integers(0, ww - patch + 1))) for _ in range(8)]
        raw = extract(level.astype(np.float32).astype(np.float64), positions, patch)
        desc_cases.append({"level": li, "positions": [list(p) for p in positions], "raw": flat(raw), "normalized": flat(finalize_descriptors(raw))})
    cases["descriptors"] = {"patch": patch, "min_resolution": 8, "levels": desc_cases}

    # Distances for given descriptors and directions.
    dist_cases = []
    for (n, c, p, n_dirs, shift) in [(24, 3, 7, 24, 0.3), (50, 1, 5, 10, 0.0)]:
        dim = c * p * p
        a = rng.normal(size=(n, c, p, p)).astype(np.float32)
        b = (rng.normal(size=(n, c, p, p)) * 1.3 + shift).astype(np.float32)
        dirs = rng.normal(size=(n_dirs, dim))
        dirs = (dirs / np.sqrt(np.sum(dirs ** 2, axis=1, keepdims=True))).astype(np.float32)
        na = finalize_descriptors(a.astype(np.float64)).astype(np.float32)
        nb = finalize_descriptors(b.astype(np.float64)).astype(np.float32)
        dist_cases.append({
            "n": n, "channels": c, "patch": p, "a": flat(a), "b": flat(b), "directions": flat(dirs),
            "distance_raw": sliced_distance(a.reshape(n, -1).astype(np.float64), b.reshape(n, -1).astype(np.float64), dirs.astype(np.float64)),
            "distance_normalized": sliced_distance(na.astype(np.float64), nb.astype(np.float64), dirs.astype(np.float64)),
        })
    cases["distances"] = dist_cases

    # MS-SSIM pairs.
    ms_cases = []
    for (c, h, w, noise, phase_b) in [(3, 32, 32, 0.1, None), (1, 32, 48, 0.0, 0.9), (3, 40, 24, 0.25, None), (3, 16, 16, 0.05, None), (1, 16, 16, 0.05, 2.0), (1, 24, 20, 0.6, None)]:
        a = pattern(c, h, w, 0.2)
        b = pattern(c, h, w, phase_b) if phase_b is not None else a
        b = np.clip(b + rng.uniform(-noise, noise, size=b.shape), -1.2, 1.2).astype(np.float32)
        ms_cases.append({"c": c, "h": h, "w": w, "a": flat(a), "b": flat(b), "ms_ssim": msssim(a, b)})
    cases["ms_ssim"] = ms_cases

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"generator": "scripts/metrics_reference.py", "numpy": np.__version__, **cases}, f, separators=(",", ":"))
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT) // 1024} KiB)")
    for m in ms_cases:
        print(f"ms-ssim {m['c']}x{m['h']}x{m['w']}: {m['ms_ssim']:.9f}")
    for d in dist_cases:
        print(f"distance n={d['n']} dim={d['channels'] * d['patch'] ** 2}: raw {d['distance_raw']:.6f} normalised {d['distance_normalized']:.6f}")


if __name__ == "__main__":
    main()
