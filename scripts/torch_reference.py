#!/usr/bin/env python3
"""PyTorch reference of the ProGAN architecture and one WGAN-GP training step.

This is the baseline a user would reach for instead of pgan: the same networks
and the same training step, written directly in PyTorch, so that both can be
timed side by side on the same machine.  It is written from the paper

    T. Karras, T. Aila, S. Laine, J. Lehtinen,
    "Progressive Growing of GANs for Improved Quality, Stability, and
    Variation", ICLR 2018 (arXiv:1710.10196)

and its stated defaults (section numbers and Table 2 refer to that paper; the
channel formula nf() follows the official release's defaults).  It does no
data loading: the "real" images are random normals, as only speed matters.

Examples
    # one line of JSON for the CPU-sized configuration
    python3 scripts/torch_reference.py --resolution 32 --batch 16 \
        --fmap-base 2048 --fmap-max 128 --latent 128 --steps 20 --warmup 3 --threads 2
    # one line per resolution 4, 8, 16, 32
    python3 scripts/torch_reference.py ... --per-resolution
    # the GPU comparison of scripts/gpu_check.sh: paper networks, gpu-256.toml's minibatches
    python3 scripts/torch_reference.py --device cuda --fmap-base 8192 --fmap-max 512 \
        --latent 512 --resolutions 4,8,16,32,64,128,256,512 --minibatch-from configs/gpu-256.toml
    # parameter counts of the full paper network (Table 2: 23.1M each)
    python3 scripts/torch_reference.py --fmap-base 8192 --fmap-max 512 --latent 512 \
        --resolution 1024 --count-only
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# --- Constants from the paper ------------------------------------------------
LRELU_SLOPE = 0.2      # Sec. A.1: leaky ReLU with leakiness 0.2 everywhere but the last layers
PIXELNORM_EPS = 1e-8   # Sec. 4.2: b = a / sqrt(mean(a^2) + eps), eps = 1e-8
MBSTD_GROUP = 4        # Sec. 3 / A.1: minibatch stddev over groups of 4 samples
GP_LAMBDA = 10.0       # Sec. A.1: WGAN-GP with lambda = 10 (Gulrajani et al. 2017)
DRIFT_EPS = 0.001      # Sec. A.1: drift term eps_drift * E[D(x)^2], eps_drift = 0.001
ADAM_LR = 0.001        # Sec. A.1: Adam, alpha = 0.001, beta1 = 0, beta2 = 0.99, eps = 1e-8
ADAM_BETAS = (0.0, 0.99)
ADAM_EPS = 1e-8
GAIN_RELU = math.sqrt(2.0)  # He initialiser gain (Sec. 4.1)


def nf(stage, fmap_base, fmap_max, fmap_decay=1.0):
    """Feature maps of a stage: min(fmap_base / 2^(stage * fmap_decay), fmap_max).

    Resolution 2^r uses nf(r - 1): 4x4 -> nf(1), 8x8 -> nf(2), ...; with the
    paper's fmap_base 8192 / fmap_max 512 that is 512 up to 32x32, then
    256, 128, 64, 32, 16 at 64 ... 1024 (Table 2).
    """
    return min(int(fmap_base / (2.0 ** (stage * fmap_decay))), fmap_max)


# --- Equalized learning rate (Sec. 4.1) --------------------------------------
# Weights are drawn from N(0, 1) and scaled at run time by the per-layer
# He constant c = gain / sqrt(fan_in); biases start at zero.


class EqConv2d(nn.Module):
    def __init__(self, cin, cout, kernel, gain=GAIN_RELU):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin * kernel * kernel)
        self.pad = kernel // 2

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.pad)


class EqLinear(nn.Module):
    def __init__(self, fin, fout, gain=GAIN_RELU):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fout, fin))
        self.bias = nn.Parameter(torch.zeros(fout))
        self.scale = gain / math.sqrt(fin)

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, self.bias)


def lrelu(x):
    return F.leaky_relu(x, LRELU_SLOPE)


def pixel_norm(x):
    """Sec. 4.2: normalise each pixel's feature vector to unit length."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + PIXELNORM_EPS)


def upsample2x(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


def downsample2x(x):
    return F.avg_pool2d(x, 2)


def minibatch_stddev(x, group=MBSTD_GROUP):
    """Sec. 3: stddev of each feature over a group of samples, averaged over
    features and pixels into one scalar per group, appended as an extra map."""
    n, c, h, w = x.shape
    g = min(group, n)
    assert n % g == 0, "batch size must be divisible by the mbstd group size"
    y = x.reshape(g, -1, c, h, w)                      # [G, M, C, H, W]
    y = y - y.mean(dim=0, keepdim=True)
    y = torch.sqrt(y.pow(2).mean(dim=0) + 1e-8)        # [M, C, H, W]
    y = y.mean(dim=(1, 2, 3))                          # [M]
    y = y.reshape(1, -1, 1, 1).repeat(g, 1, h, w)      # [N, 1, H, W] (sample i -> group i % M)
    y = y.reshape(n, 1, h, w)
    return torch.cat([x, y], dim=1)


# --- Generator (Table 2, left) -----------------------------------------------


class Generator(nn.Module):
    """Latent -> 4x4 ... 2^max_res x 2^max_res RGB, grown up to `resolution`.

    Keeps a toRGB for every resolution, as a progressively grown network does.
    """

    def __init__(self, resolution, latent, fmap_base, fmap_max):
        super().__init__()
        self.max_res = int(math.log2(resolution))
        self.latent = latent
        f = lambda s: nf(s, fmap_base, fmap_max)
        c4 = f(1)
        self.c4 = c4
        # 4x4 block: dense (gain sqrt(2)/4, as the official code, i.e. a 4x4
        # "conv" on a 1x1 input) -> lrelu -> pixelnorm -> conv3x3 -> lrelu -> pixelnorm
        self.dense = EqLinear(latent, c4 * 16, gain=GAIN_RELU / 4)
        self.conv4 = EqConv2d(c4, c4, 3)
        # 8x8 and up: upsample -> conv3x3 -> lrelu -> pn -> conv3x3 -> lrelu -> pn
        self.blocks = nn.ModuleList()
        for r in range(3, self.max_res + 1):
            self.blocks.append(nn.ModuleList([EqConv2d(f(r - 2), f(r - 1), 3),
                                              EqConv2d(f(r - 1), f(r - 1), 3)]))
        # 1x1 toRGB per resolution, linear, gain 1
        self.to_rgb = nn.ModuleList(EqConv2d(f(r - 1), 3, 1, gain=1.0)
                                    for r in range(2, self.max_res + 1))

    def forward(self, z, alpha=1.0):
        x = pixel_norm(z)                              # Sec. 4.2: normalise the latent too
        x = self.dense(x).reshape(-1, self.c4, 4, 4)
        x = pixel_norm(lrelu(x))
        x = pixel_norm(lrelu(self.conv4(x)))
        prev = None
        for conv0, conv1 in self.blocks:
            prev = x
            x = upsample2x(x)
            x = pixel_norm(lrelu(conv0(x)))
            x = pixel_norm(lrelu(conv1(x)))
        img = self.to_rgb[-1](x)
        if prev is not None and alpha < 1.0:
            # Fig. 2 fade-in: lerp from the upsampled lower-resolution output.
            low = upsample2x(self.to_rgb[-2](prev))
            img = low + (img - low) * alpha
        return img


# --- Discriminator (Table 2, right) ------------------------------------------


class Discriminator(nn.Module):
    def __init__(self, resolution, fmap_base, fmap_max):
        super().__init__()
        self.max_res = int(math.log2(resolution))
        f = lambda s: nf(s, fmap_base, fmap_max)
        # 1x1 fromRGB per resolution (+ lrelu)
        self.from_rgb = nn.ModuleList(EqConv2d(3, f(r - 1), 1)
                                      for r in range(2, self.max_res + 1))
        # Blocks from the top resolution down to 8x8: conv3x3 -> lrelu ->
        # conv3x3 -> lrelu -> 2x2 average pool
        self.blocks = nn.ModuleList()
        for r in range(self.max_res, 2, -1):
            self.blocks.append(nn.ModuleList([EqConv2d(f(r - 1), f(r - 1), 3),
                                              EqConv2d(f(r - 1), f(r - 2), 3)]))
        # 4x4 block: mbstd -> conv3x3 nf(1) -> lrelu -> dense nf(0) -> lrelu -> dense 1 (gain 1)
        self.conv4 = EqConv2d(f(1) + 1, f(1), 3)
        self.dense0 = EqLinear(f(1) * 16, f(0))
        self.dense1 = EqLinear(f(0), 1, gain=1.0)

    def forward(self, img, alpha=1.0):
        x = lrelu(self.from_rgb[-1](img))
        for i, (conv0, conv1) in enumerate(self.blocks):
            x = lrelu(conv0(x))
            x = lrelu(conv1(x))
            x = downsample2x(x)
            if i == 0 and alpha < 1.0:
                # Fig. 2 fade-in, mirrored: lerp towards fromRGB of the downscaled image.
                low = lrelu(self.from_rgb[-2](downsample2x(img)))
                x = low + (x - low) * alpha
        x = minibatch_stddev(x)
        x = lrelu(self.conv4(x))
        x = lrelu(self.dense0(x.flatten(1)))
        return self.dense1(x)


# --- One training step (Sec. A.1: WGAN-GP, n_critic = 1) ---------------------


def d_step(G, D, opt_d, reals, latent, alpha):
    n = reals.shape[0]
    z = torch.randn(n, latent, device=reals.device)
    with torch.no_grad():
        fakes = G(z, alpha)
    d_real = D(reals, alpha)
    d_fake = D(fakes, alpha)
    loss = d_fake - d_real                                       # WGAN critic loss
    # Gradient penalty on per-sample uniform interpolates (Gulrajani et al.)
    mix = torch.rand(n, 1, 1, 1, device=reals.device)
    mixed = (reals + (fakes - reals) * mix).requires_grad_(True)
    d_mixed = D(mixed, alpha)
    (grad,) = torch.autograd.grad(d_mixed.sum(), mixed, create_graph=True)
    grad_norm = grad.flatten(1).norm(dim=1, keepdim=True)
    loss = loss + GP_LAMBDA * (grad_norm - 1.0).pow(2)
    loss = loss + DRIFT_EPS * d_real.pow(2)                      # drift term
    loss = loss.mean()
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()


def g_step(G, D, opt_g, n, latent, alpha, device, freeze_d=True):
    z = torch.randn(n, latent, device=device)
    # pgan's G step runs D without parameter gradients (burn's `no_grad()`);
    # stylegan2-ada-pytorch does the same with requires_grad_(False). Without
    # freezing (--no-freeze-d, the earlier comparison; bench-log.md) PyTorch also
    # computes D's weight gradients here and then throws them away.
    if freeze_d:
        D.requires_grad_(False)
    loss = -D(G(z, alpha), alpha).mean()
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()
    if freeze_d:
        D.requires_grad_(True)


def count_params(m):
    return sum(p.numel() for p in m.parameters())


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(args, resolution, device):
    torch.manual_seed(0)
    G = Generator(resolution, args.latent, args.fmap_base, args.fmap_max).to(device)
    D = Discriminator(resolution, args.fmap_base, args.fmap_max).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=ADAM_LR, betas=ADAM_BETAS, eps=ADAM_EPS)
    opt_d = torch.optim.Adam(D.parameters(), lr=ADAM_LR, betas=ADAM_BETAS, eps=ADAM_EPS)
    reals = torch.randn(args.batch, 3, resolution, resolution, device=device)
    alpha = args.alpha

    def one_step():
        sync(device)
        t0 = time.perf_counter()
        d_step(G, D, opt_d, reals, args.latent, alpha)
        sync(device)
        t1 = time.perf_counter()
        g_step(G, D, opt_g, args.batch, args.latent, alpha, device, args.freeze_d)
        sync(device)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    for _ in range(args.warmup):
        one_step()
    if device.type == "cuda":
        # Peak memory of the timed steps alone (the warm-up's cuDNN workspace trials excluded).
        torch.cuda.reset_peak_memory_stats(device)
    load_before = os.getloadavg()[0]
    d_times, g_times = [], []
    for _ in range(args.steps):
        d, g = one_step()
        d_times.append(d)
        g_times.append(g)
    d_tot, g_tot = sum(d_times), sum(g_times)
    ms = 1000.0 * (d_tot + g_tot) / args.steps
    step_ms = [1000.0 * (d + g) for d, g in zip(d_times, g_times)]
    cuda = {}
    if device.type == "cuda":
        mib = 1024.0 * 1024.0
        cuda = {
            "gpu": torch.cuda.get_device_name(device),
            "max_memory_allocated_mb": round(torch.cuda.max_memory_allocated(device) / mib, 1),
            "max_memory_reserved_mb": round(torch.cuda.max_memory_reserved(device) / mib, 1),
            # PyTorch's defaults, recorded: TF32 in cuDNN convolutions, not in matmuls.
            "tf32_conv": torch.backends.cudnn.allow_tf32,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn": torch.backends.cudnn.version(),
        }
    return {
        "impl": "pytorch",
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "resolution": resolution,
        "batch": args.batch,
        "fmap_base": args.fmap_base,
        "fmap_max": args.fmap_max,
        "latent": args.latent,
        "alpha": alpha,
        "freeze_d_in_g_step": args.freeze_d,
        "steps": args.steps,
        "ms_per_step": round(ms, 3),
        "d_ms": round(1000.0 * d_tot / args.steps, 3),
        "g_ms": round(1000.0 * g_tot / args.steps, 3),
        "img_per_s": round(args.batch / (ms / 1000.0), 3),
        "params_g": count_params(G),
        "params_d": count_params(D),
        # Robustness aids, not part of the comparison itself: the median step
        # is less sensitive to other processes sharing the cores, and the
        # 1-minute load average (host-wide) shows whether they did.
        "ms_per_step_median": round(statistics.median(step_ms), 3),
        "loadavg_1m": round(load_before, 2),
        **cuda,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolution", type=int, default=32, help="final resolution (power of two >= 4)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--fmap-base", type=int, default=2048)
    p.add_argument("--fmap-max", type=int, default=128)
    p.add_argument("--latent", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--alpha", type=float, default=1.0,
                   help="fade-in weight of the newest block; < 1 also runs the lower-res branch")
    p.add_argument("--no-freeze-d", dest="freeze_d", action="store_false",
                   help="compute D's parameter gradients in the G step too (unlike pgan)")
    p.add_argument("--per-resolution", action="store_true",
                   help="one line per resolution 4, 8, ... up to --resolution")
    p.add_argument("--resolutions", type=str, default=None,
                   help="comma list of resolutions, one line each (instead of --resolution)")
    p.add_argument("--minibatch-from", type=str, default=None, metavar="CONFIG",
                   help="a pgan training config: the minibatch per resolution from its "
                        "[schedule] minibatch table and minibatch_default (instead of --batch)")
    p.add_argument("--count-only", action="store_true",
                   help="print parameter counts of G and D and exit")
    args = p.parse_args()

    res_log2 = int(math.log2(args.resolution))
    if args.resolution < 4 or 2 ** res_log2 != args.resolution:
        p.error("--resolution must be a power of two >= 4")

    if args.count_only:
        G = Generator(args.resolution, args.latent, args.fmap_base, args.fmap_max)
        D = Discriminator(args.resolution, args.fmap_base, args.fmap_max)
        # The networks keep one toRGB / fromRGB per resolution; also report the
        # counts with only the final one, which is what Table 2 lists.
        extra_g = sum(count_params(m) for m in G.to_rgb[:-1])
        extra_d = sum(count_params(m) for m in D.from_rgb[:-1])
        print(json.dumps({
            "impl": "pytorch", "resolution": args.resolution, "fmap_base": args.fmap_base,
            "fmap_max": args.fmap_max, "latent": args.latent,
            "params_g": count_params(G), "params_d": count_params(D),
            "params_g_final_rgb_only": count_params(G) - extra_g,
            "params_d_final_rgb_only": count_params(D) - extra_d,
        }))
        return

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA requested but torch.cuda.is_available() is False")

    resolutions = ([2 ** r for r in range(2, res_log2 + 1)] if args.per_resolution
                   else [args.resolution])
    if args.resolutions:
        resolutions = [int(r) for r in args.resolutions.split(",")]
        for r in resolutions:
            if r < 4 or r & (r - 1):
                p.error(f"--resolutions: {r} is not a power of two >= 4")
    batches = {}
    if args.minibatch_from:
        import tomllib
        with open(args.minibatch_from, "rb") as f:
            schedule = tomllib.load(f).get("schedule", {})
        default = int(schedule.get("minibatch_default", args.batch))
        table = {int(k): int(v) for k, v in schedule.get("minibatch", {}).items()}
        batches = {r: table.get(r, default) for r in resolutions}
    for res in resolutions:
        args.batch = batches.get(res, args.batch)
        print(json.dumps(bench(args, res, device)), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
