"""Makes tiny_torchscript.pt, the TorchScript archive the reader's tests read (run once; the
output is committed so CI needs no PyTorch).

    python3 crates/pgan-inception/testdata/make_tiny_torchscript.py
"""

import pathlib
from typing import List

import torch


class Inner(torch.nn.Module):
    # A List[int] attribute, pickled through torch.jit._pickle.build_intlist (as the FID
    # Inception's paddings are).
    sizes: List[int]

    def __init__(self):
        super().__init__()
        self.sizes = [3, 1]
        self.weight = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3))
        self.bias = torch.nn.Parameter(torch.tensor([0.5, -0.5]))

    def forward(self, x):
        return x @ self.weight.t() + self.bias


class Outer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()
        self.scale = torch.nn.Parameter(torch.tensor([10.0, 11.0, 12.0, 13.0]))

    def forward(self, x):
        return self.inner(x).sum() * self.scale


out = pathlib.Path(__file__).with_name("tiny_torchscript.pt")
# torch.jit.save stores entries uncompressed (the reader test that damages a byte relies on it).
torch.jit.save(torch.jit.script(Outer()), str(out))
print(out, out.stat().st_size, "bytes")
