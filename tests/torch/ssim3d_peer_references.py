#!/usr/bin/env python3
"""Reference values for the 3-D tests of tests/test_ssim.cpp ("[ssim3d][peer]"):
pytorch-msssim's 5-D ssim / ms_ssim (N×C×D×H×W, conv3d with the 1-D window along
each spatial axis, valid mode, avg_pool3d(kernel_size=2, padding=[s % 2 ...])
between scales), run in float64 with torch autograd for the gradients.
Only pytorch-msssim and torch are needed (the 2-D peers are in
ssim_peer_references.py):

  mkdir -p /tmp/peers && cd /tmp/peers
  git -C <pytorch-msssim clone> archive b057b072dd869ae3f6b88543786f44d008315f69 pytorch_msssim | tar x
  PYTHONPATH=/tmp/peers /usr/bin/python3 tests/torch/ssim3d_peer_references.py

pytorch-msssim: github.com/VainF/pytorch-msssim @ b057b072dd869ae3f6b88543786f44d008315f69
The window is passed as `win` in float64 (the peer's _fspecial_gauss_1d builds its
taps in float32, which moves SSIM by ~1e-8); the volumes are the integer LCG of
test_ssim.cpp (peer_image), exact in double, flattened in NCDHW order.
Peer conventions to keep in mind: ms_ssim asserts only min(H, W) > (win_size − 1)·16
(whatever the number of levels) and gaussian_filter silently skips an axis shorter
than the window; every case below keeps every axis at least the window at every
scale, where losskit and the peer compute the same thing.
"""
import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)

import pytorch_msssim  # noqa: E402


def lcg(seed, n):
    out = np.empty(n)
    s = seed
    for i in range(n):
        s = (s * 1103515245 + 12345) % 2 ** 31
        out[i] = ((s >> 8) % 65536) / 65536.0
    return out


def peer_volume(n, c, *spatial, seed=1, anti=False):
    """x: LCG(seed); y = 0.75 x + 0.25 LCG(seed + 1), or 1 − that for odd channels when anti."""
    size = n * c * int(np.prod(spatial))
    x = lcg(seed, size)
    y = 0.75 * x + 0.25 * lcg(seed + 1, size)
    x = x.reshape(n, c, *spatial)
    y = y.reshape(n, c, *spatial)
    if anti:
        y[:, 1::2] = 1.0 - y[:, 1::2]
    return torch.tensor(x), torch.tensor(y)


def gauss64(size=11, sigma=1.5):
    g = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(g ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def win3d(taps, channels):
    return taps.view(1, 1, -1).repeat(channels, 1, 1).view(channels, 1, 1, 1, -1)


def grad_entries(g, idx):
    f = g.detach().flatten()
    return [f[i].item() for i in idx if i < f.numel()] + [f.abs().sum().item()]


def show(name, values):
    print(name, ", ".join(f"{v:.17g}" for v in values))


def loss_and_grad(fn, x, y, idx, **kw):
    xg = x.clone().requires_grad_(True)
    (1 - fn(xg, y, **kw)).backward()
    return grad_entries(xg.grad, idx)


IDX = (0, 1, 17, 123, 599, 1000, 2000)

# 1. ssim, default 11-tap Gaussian: N=2, C=2, 13×17×15.
x, y = peer_volume(2, 2, 13, 17, 15, seed=11)
win = win3d(gauss64(), 2)
show("ssim3d_per_image", pytorch_msssim.ssim(x, y, data_range=1, win=win, size_average=False).tolist())
show("ssim3d_grad", loss_and_grad(pytorch_msssim.ssim, x, y, IDX, data_range=1, win=win))

# 2. ssim, nonnegative_ssim=True, odd channels anti-correlated: N=1, C=2, 12×13×14.
x, y = peer_volume(1, 2, 12, 13, 14, seed=13, anti=True)
win = win3d(gauss64(), 2)
per_channel, _ = sys.modules["pytorch_msssim.ssim"]._ssim(x, y, data_range=1, win=win, size_average=False)
show("ssim3d_nonneg_per_channel", per_channel.flatten().tolist())
show("ssim3d_nonneg", [pytorch_msssim.ssim(x, y, data_range=1, win=win, nonnegative_ssim=True).item()])
show("ssim3d_nonneg_grad", loss_and_grad(pytorch_msssim.ssim, x, y, IDX, data_range=1, win=win,
                                         nonnegative_ssim=True))

# 3. ssim with an asymmetric custom window [1, 2, 4, 2.5, 0.5]/10, data_range=255, K=(0.02, 0.05):
#    N=1, C=1, 9×10×11, values scaled to [0, 255).
x, y = peer_volume(1, 1, 9, 10, 11, seed=15)
x, y = 255 * x, 255 * y
taps = torch.tensor([1.0, 2.0, 4.0, 2.5, 0.5])
win = win3d(taps / taps.sum(), 1)
show("ssim3d_custom", [pytorch_msssim.ssim(x, y, data_range=255, win=win, K=(0.02, 0.05)).item()])
show("ssim3d_custom_grad", loss_and_grad(pytorch_msssim.ssim, x, y, IDX, data_range=255, win=win,
                                         K=(0.02, 0.05)))

# 4. ms_ssim, 5 default weights, 3-tap Gaussian (σ = 1.5): N=1, C=1, 33×35×34
#    (33 → 17 → 9 → 5 → 3, 35 → 18 → 9 → 5 → 3, 34 → 17 → 9 → 5 → 3: odd axes at every scale).
x, y = peer_volume(1, 1, 33, 35, 34, seed=17)
win = win3d(gauss64(3), 1)
show("ms_ssim3d", [pytorch_msssim.ms_ssim(x, y, data_range=1, win=win).item()])
show("ms_ssim3d_grad", loss_and_grad(pytorch_msssim.ms_ssim, x, y, IDX, data_range=1, win=win))

# 5. ms_ssim, 3 levels (weights [0.2, 0.3, 0.5]), 5-tap Gaussian σ = 1: N=2, C=2, 17×65×66
#    (the peer's assert needs min(H, W) > 64 whatever the levels).
x, y = peer_volume(2, 2, 17, 65, 66, seed=19)
win = win3d(gauss64(5, 1.0), 2)
show("ms_ssim3d_3level_per_image",
     pytorch_msssim.ms_ssim(x, y, data_range=1, win=win, weights=[0.2, 0.3, 0.5], size_average=False).tolist())
show("ms_ssim3d_3level_grad", loss_and_grad(pytorch_msssim.ms_ssim, x, y, IDX + (100000, 290000), data_range=1,
                                            win=win, weights=[0.2, 0.3, 0.5]))
