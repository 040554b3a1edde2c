#!/usr/bin/env python3
"""Reference values for tests/test_ssim.cpp ("[ssim][peer]"), computed in double by
the peers' own code.  Run with Debian's python3 (python3-torch, python3-skimage):

  mkdir -p /tmp/peers && cd /tmp/peers
  git -C <pytorch-msssim clone> archive b057b072dd869ae3f6b88543786f44d008315f69 pytorch_msssim | tar x
  git -C <piq clone> archive 9948a52fc09ac5f7fb3618ce64b7086f5c3109da piq | tar x
  PYTHONPATH=/tmp/peers /usr/bin/python3 tests/torch/ssim_peer_references.py

pytorch-msssim: github.com/VainF/pytorch-msssim @ b057b072dd869ae3f6b88543786f44d008315f69
piq:            github.com/photosynthesis-team/piq @ 9948a52fc09ac5f7fb3618ce64b7086f5c3109da
scikit-image:   Debian bookworm python3-skimage 0.19.3
The images are the integer LCG of test_ssim.cpp (peer_image), exact in double.
"""
import sys
import types

import numpy as np
import torch

torch.set_default_dtype(torch.float64)

# piq/__init__ imports modules that need torchvision; load only piq.ssim / piq.ms_ssim.
import importlib.util, os
for p in sys.path:
    if os.path.isdir(os.path.join(p, "piq")):
        pkg = types.ModuleType("piq")
        pkg.__path__ = [os.path.join(p, "piq")]
        sys.modules["piq"] = pkg
        break
import piq.ssim as piq_ssim  # noqa: E402
import piq.ms_ssim as piq_ms_ssim  # noqa: E402
import pytorch_msssim  # noqa: E402
from pytorch_msssim import ssim as _msssim_module  # noqa: E402
from skimage.metrics import structural_similarity  # noqa: E402


def lcg(seed, n):
    out = np.empty(n)
    s = seed
    for i in range(n):
        s = (s * 1103515245 + 12345) % 2 ** 31
        out[i] = ((s >> 8) % 65536) / 65536.0
    return out


def peer_image(n, c, *spatial, seed=1, anti=False):
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


def msssim_win(taps, channels, dims):
    return taps.view(1, 1, -1).repeat([channels] + [1] * (dims + 1)).view(channels, 1, *([1] * (dims - 1)), -1)


def grad_entries(g, idx=(0, 1, 17, 123, 599, 1000)):
    f = g.detach().flatten()
    return [f[i].item() for i in idx if i < f.numel()] + [f.abs().sum().item()]


def show(name, values):
    print(name, ", ".join(f"{v:.17g}" for v in values))


# 1. pytorch-msssim ssim(..., nonnegative_ssim=True): N=2, C=2, 20x30, odd channel anti-correlated.
x, y = peer_image(2, 2, 20, 30, seed=1, anti=True)
win = msssim_win(gauss64(), 2, 2)
per_channel, _ = sys.modules["pytorch_msssim.ssim"]._ssim(x, y, data_range=1, win=win, size_average=False)
show("msssim_ssim_per_channel", per_channel.flatten().tolist())
show("msssim_ssim_nonneg_per_image",
     pytorch_msssim.ssim(x, y, data_range=1, win=win, size_average=False, nonnegative_ssim=True).tolist())
xg = x.clone().requires_grad_(True)
(1 - pytorch_msssim.ssim(xg, y, data_range=1, win=win, size_average=True, nonnegative_ssim=True)).backward()
show("msssim_ssim_nonneg_grad", grad_entries(xg.grad))

# 2. pytorch-msssim ssim(..., win=custom) with asymmetric taps (normalised: losskit divides by the sum).
taps = torch.tensor([1.0, 2.0, 4.0, 2.5, 0.5])
taps = taps / taps.sum()
x, y = peer_image(1, 1, 20, 30, seed=3)
win = msssim_win(taps, 1, 2)
show("msssim_ssim_custom", [pytorch_msssim.ssim(x, y, data_range=1, win=win).item()])
xg = x.clone().requires_grad_(True)
(1 - pytorch_msssim.ssim(xg, y, data_range=1, win=win)).backward()
show("msssim_ssim_custom_grad", grad_entries(xg.grad))

# 3. skimage structural_similarity defaults (7x7 uniform, sample covariance), full map.
x, y = peer_image(1, 1, 20, 30, seed=5)
xs, ys = x[0, 0].numpy(), y[0, 0].numpy()
val, smap = structural_similarity(xs, ys, data_range=1.0, full=True)
show("skimage_uniform_sample", [val])
crop = smap[3:-3, 3:-3]
show("skimage_uniform_map_entries", [crop[0, 0], crop[2, 5], crop[13, 23], crop.shape[0], crop.shape[1]])
# 3b. Gaussian weights with sample covariance.
val = structural_similarity(xs, ys, data_range=1.0, gaussian_weights=True, sigma=1.5,
                            use_sample_covariance=True)
show("skimage_gauss_sample", [val])
# 3c. uniform window, population covariance, 5x5
val = structural_similarity(xs, ys, data_range=1.0, win_size=5, use_sample_covariance=False)
show("skimage_uniform5_population", [val])

# 4. piq ssim(..., downsample=True): 400x523 (f = round(400/256) = 2, last column dropped), C = 2.
x, y = peer_image(1, 2, 400, 523, seed=7)
show("piq_ssim_downsample", [piq_ssim.ssim(x, y, data_range=1.0, reduction="none", downsample=True).item()])
xg = x.clone().requires_grad_(True)
(1 - piq_ssim.ssim(xg, y, data_range=1.0, downsample=True)).backward()
show("piq_ssim_downsample_grad", grad_entries(xg.grad, (0, 1, 523, 523 * 2 + 5, 523 * 399 + 522, 400 * 523 + 7)))
print("python_round", round(384 / 256), round(640 / 256), round(1152 / 256), round(383 / 256))

# 5. piq multi_scale_ssim: 171x182 (an odd side at every scale), N = 2.
x, y = peer_image(2, 1, 171, 182, seed=9)
show("piq_ms_ssim", piq_ms_ssim.multi_scale_ssim(x, y, data_range=1.0, reduction="none").tolist())
xg = x.clone().requires_grad_(True)
(1 - piq_ms_ssim.multi_scale_ssim(xg, y, data_range=1.0)).backward()
show("piq_ms_ssim_grad", grad_entries(xg.grad, (0, 1, 182, 4000, 171 * 182 - 1, 171 * 182 + 3)))

# 3-D (pytorch-msssim's 5-D ssim / ms_ssim): tests/torch/ssim3d_peer_references.py.
