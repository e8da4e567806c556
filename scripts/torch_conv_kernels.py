"""PyTorch reference for benches/conv_kernels.rs: the 3x3 128->128 conv at batch 16, forward,
forward + input gradient, forward + weight gradient, median ms on 2 threads.

python3 scripts/torch_conv_kernels.py
"""
import torch, time
torch.set_num_threads(2)
for res in [4,8,16,32]:
    x=torch.randn(16,128,res,res,requires_grad=True); w=torch.randn(128,128,3,3,requires_grad=True)
    gf=2*16*128*128*9*res*res/1e9
    def t(f):
        f(); ts=[]
        for _ in range(10):
            a=time.perf_counter(); f(); ts.append(time.perf_counter()-a)
        ts.sort(); return ts[5]*1e3
    fw=t(lambda: torch.nn.functional.conv2d(x,w,padding=1))
    y=torch.nn.functional.conv2d(x,w,padding=1); g=torch.randn_like(y)
    ig=t(lambda: torch.autograd.grad(torch.nn.functional.conv2d(x,w,padding=1),x,g))
    wg=t(lambda: torch.autograd.grad(torch.nn.functional.conv2d(x,w,padding=1),w,g))
    print(res, "fwd %.2f ms %.0f GF/s; fwd+ig %.2f; fwd+wg %.2f"%(fw,gf/fw*1e3,ig,wg))
