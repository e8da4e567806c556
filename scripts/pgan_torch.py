"""A pgan generator in PyTorch: loads the `.safetensors` file `pgan export` writes and draws the
same images `pgan render` draws for the same latents (to within one 8-bit level).

Self-contained: needs only torch and numpy (the safetensors file is parsed here). The network
is ProGAN's generator as pgan builds it (crates/pgan-model, docs/MODEL.md): pixel-normalised
latents → an equalised dense layer to 4x4 → 3x3 convs with leaky ReLU (0.2) and pixel norm, a
nearest-neighbour 2x upsampling and two 3x3 convs per stage, a 1x1 toRGB per stage, and during a
fade-in the blend of the upsampled previous stage's RGB with the new one. Equalised learning
rate: each stored weight is multiplied at run time by gain / sqrt(fan_in) (gain √2, √2/4 for the
dense layer, 1 for toRGB), so the stored weights are the unscaled ones.

    import numpy as np, torch
    from pgan_torch import load_generator, to_uint8
    g = load_generator("g_ema.safetensors")             # stage and alpha of the checkpoint
    z = torch.from_numpy(np.load("latents.npy"))        # pgan render --save-latents latents.npy
    images = g(z)                                       # [n, C, H, W] in [-1, 1]
    pixels = to_uint8(images)                           # [n, H, W, C] uint8, as pgan's PNGs

From the command line, one PNG per latent:

    python3 scripts/pgan_torch.py g_ema.safetensors --latents latents.npy --out-dir images/
"""

import argparse
import json
import math
import pathlib
import struct

import numpy as np
import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2
PIXEL_NORM_EPS = 1e-8
GAIN = math.sqrt(2.0)

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": None}


def read_safetensors(path):
    """(tensors, metadata) of a .safetensors file: 8-byte little-endian header length, a JSON
    header of {name: {dtype, shape, data_offsets}} plus `__metadata__`, then the data."""
    raw = pathlib.Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    metadata = header.pop("__metadata__", {}) or {}
    data = raw[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"])
        tensors[name] = torch.from_numpy(array.astype(np.float32))
    return tensors, metadata


def pixel_norm(x):
    return x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + PIXEL_NORM_EPS)


def lrelu(x):
    return F.leaky_relu(x, LRELU_SLOPE)


def upsample2x(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


class EqualizedConv(torch.nn.Module):
    def __init__(self, weight, bias, gain):
        super().__init__()
        c_out, c_in, k, _ = weight.shape
        self.weight = torch.nn.Parameter(weight)
        self.bias = torch.nn.Parameter(bias)
        # pgan stores the scale as f32 computed in f64.
        self.scale = float(np.float32(gain / math.sqrt(c_in * k * k)))
        self.padding = k // 2

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(torch.nn.Module):
    def __init__(self, weight, bias, gain):
        super().__init__()
        # burn's layout: [in, out].
        self.weight = torch.nn.Parameter(weight)
        self.bias = torch.nn.Parameter(bias)
        self.scale = float(np.float32(gain / math.sqrt(weight.shape[0])))

    def forward(self, x):
        return x @ (self.weight * self.scale) + self.bias


class UpBlock(torch.nn.Module):
    def __init__(self, conv1, conv2):
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2

    def forward(self, x):
        x = upsample2x(x)
        x = pixel_norm(lrelu(self.conv1(x)))
        return pixel_norm(lrelu(self.conv2(x)))


class PganGenerator(torch.nn.Module):
    """The generator of a `pgan export` file; `forward(z)` runs it at the checkpoint's stage and
    fade-in alpha unless others are given."""

    def __init__(self, tensors, metadata):
        super().__init__()
        if metadata.get("pgan.network") not in ("g_ema", "g"):
            raise ValueError(
                f"not an exported generator (pgan.network = {metadata.get('pgan.network')!r}; "
                "export with --net g-ema or --net g)"
            )
        self.model = json.loads(metadata["pgan.model"])
        self.stage = int(metadata["pgan.stage"])
        self.alpha = float(metadata["pgan.alpha"])
        t = lambda name: tensors[name]  # noqa: E731
        dense_w = t("input.dense.weight")
        self.latent_dim = dense_w.shape[0]
        self.channels = dense_w.shape[1] // 16
        self.dense = EqualizedLinear(dense_w, t("input.dense.bias"), GAIN / 4.0)
        self.conv = EqualizedConv(t("input.conv.weight"), t("input.conv.bias"), GAIN)
        num_stages = len([k for k in tensors if k.startswith("to_rgb.") and k.endswith(".weight")])
        self.blocks = torch.nn.ModuleList(
            UpBlock(
                EqualizedConv(t(f"blocks.{i}.conv1.weight"), t(f"blocks.{i}.conv1.bias"), GAIN),
                EqualizedConv(t(f"blocks.{i}.conv2.weight"), t(f"blocks.{i}.conv2.bias"), GAIN),
            )
            for i in range(num_stages - 1)
        )
        self.to_rgb = torch.nn.ModuleList(
            EqualizedConv(t(f"to_rgb.{i}.weight"), t(f"to_rgb.{i}.bias"), 1.0)
            for i in range(num_stages)
        )

    @torch.no_grad()
    def forward(self, z, stage=None, alpha=None):
        stage = self.stage if stage is None else stage
        alpha = self.alpha if alpha is None else alpha
        if not 0 <= stage < len(self.to_rgb):
            raise ValueError(f"stage {stage} out of range (the model has {len(self.to_rgb)})")
        n = z.shape[0]
        x = self.dense(pixel_norm(z.float())).reshape(n, self.channels, 4, 4)
        x = pixel_norm(lrelu(x))
        x = pixel_norm(lrelu(self.conv(x)))
        if stage == 0:
            return self.to_rgb[0](x)
        for block in self.blocks[: stage - 1]:
            x = block(x)
        new_rgb = self.to_rgb[stage](self.blocks[stage - 1](x))
        if alpha >= 1.0:
            return new_rgb
        alpha = min(max(alpha, 0.0), 1.0)
        old_rgb = upsample2x(self.to_rgb[stage - 1](x))
        return old_rgb * (1.0 - alpha) + new_rgb * alpha


def load_generator(path):
    """The generator in a `pgan export` file."""
    tensors, metadata = read_safetensors(path)
    return PganGenerator(tensors, metadata).eval()


def to_uint8(images):
    """[n, C, H, W] in [-1, 1] → [n, H, W, C] uint8, quantised as pgan writes PNGs."""
    pixels = ((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def main():
    parser = argparse.ArgumentParser(description="Draw images with an exported pgan generator.")
    parser.add_argument("generator", help="g_ema.safetensors from `pgan export`")
    parser.add_argument("--latents", required=True, help=".npy from `pgan render --save-latents`")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    from PIL import Image

    g = load_generator(args.generator)
    z = torch.from_numpy(np.load(args.latents))
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(to_uint8(g(z))):
        image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        image.save(out / f"{i:06d}.png")
    print(f"wrote {len(z)} images to {out}")


if __name__ == "__main__":
    main()
