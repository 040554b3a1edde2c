#!/usr/bin/env python3
"""Reference values for tests/test_cs_ib.cpp ("[cs_ib][official]"), computed in float64 by
the authors' own loss_cs.py.  Run with Debian's python3 (python3-torch, numpy):

  mkdir -p /tmp/csib && cd /tmp/csib
  git -C <Cauchy-Schwarz-Information-Bottleneck clone> archive 252f86be104e37780894242be4ebd3e9bfea41a6 loss_cs.py | tar x
  PYTHONPATH=/tmp/csib /usr/bin/python3 tests/torch/cs_ib_official_references.py

Official code: github.com/SJYuCNEL/Cauchy-Schwarz-Information-Bottleneck @ 252f86be104e37780894242be4ebd3e9bfea41a6
(loss_cs.py; the training objective is the one of CS_IB_Housing.py at that commit:
CS_Div(x, y, yhat, sigma=1) + beta * CS_QMI_normalized(x, z, sigma=1), with y passed as N x 1).
Inputs are the integer LCG of test_cs_ib.cpp (official_data), exact in double; the
arrays here are N x D (rows = samples), losskit's are their transposes.
"""
import numpy as np
import torch

import loss_cs

torch.set_default_dtype(torch.float64)


def lcg(seed, n):
    out = np.empty(n)
    s = seed
    for i in range(n):
        s = (s * 1103515245 + 12345) % 2 ** 31
        out[i] = ((s >> 8) % 65536) / 65536.0
    return out


def official_data(n, d, seed, scale=1.0):
    """N x d: (LCG(seed) - 0.5) * scale, filled sample after sample (losskit's column-major d x N)."""
    return torch.tensor((lcg(seed, n * d) - 0.5).reshape(n, d) * scale)


def show(name, v):
    v = v.detach().reshape(-1).tolist()
    print(f"{name}: " + ", ".join(f"{a:.17g}" for a in v))


def sigma_none_widths(tag, x):
    # The width CS_QMI(sigma=None) uses for this variable: 10 * sigma_estimation(x, x).
    show(f"{tag} official width", torch.tensor(10 * loss_cs.sigma_estimation(x, x)))


# (N, scale of x, scale of z): at unit scale the rule's kernels are within 1e-3 of 1 and
# CS_QMI is a 1e-5 difference of O(1) logs (ill-conditioned: ~1e-11 relative in any double
# evaluation); at scale 0.25 / 0.5 they are not.
for n, sx, sz in ((7, 0.25, 0.5), (8, 0.25, 0.5), (8, 1.0, 2.0)):
    x = official_data(n, 3, 11, sx)
    z = official_data(n, 2, 12, sz).requires_grad_(True)
    print(f"--- N = {n}, x = {sx} (LCG(11) - 0.5), z = {sz} (LCG(12) - 0.5): CS_QMI(x, z) with sigma=None (log2)")
    sigma_none_widths("x", x)
    sigma_none_widths("z", z)
    v = loss_cs.CS_QMI(x, z)
    v.backward()
    show("CS_QMI", v)
    show("d/dz (N x 2)", z.grad)
    z.grad = None
    v = loss_cs.CS_QMI_normalized(x, z, None)
    v.backward()
    show("CS_QMI_normalized(sigma=None)", v)
    show("d/dz (N x 2)", z.grad)

# Floor (median < 1e-2) and mean fallback (median 0: three of four samples coincide).
x = official_data(6, 2, 21, 0.1)
z = official_data(6, 2, 22, 0.25)
print("--- floor: x = 0.1 (LCG(21) - 0.5), z = 0.25 (LCG(22) - 0.5)")
sigma_none_widths("x", x)
show("CS_QMI", loss_cs.CS_QMI(x, z))
x = torch.tensor([[0.05, -0.1], [0.05, -0.1], [0.05, -0.1], [0.2, 0.15]])
z = official_data(4, 2, 23, 0.5)
print("--- mean fallback: x = (0.05, -0.1) x3, (0.2, 0.15); z = 0.5 (LCG(23) - 0.5)")
sigma_none_widths("x", x)
show("CS_QMI", loss_cs.CS_QMI(x, z))

# The released training objective (CS_IB_Housing.py), beta = 0.01.
n = 8
x = official_data(n, 3, 31)
y = official_data(n, 1, 32)
yhat = (y + 0.3 * official_data(n, 1, 33)).requires_grad_(True)
z = official_data(n, 2, 34).requires_grad_(True)
beta = 0.01
v = loss_cs.CS_Div(x, y, yhat, sigma=1) + beta * loss_cs.CS_QMI_normalized(x, z, sigma=1)
v.backward()
print("--- training objective CS_Div(x, y, yhat, 1) + 0.01 CS_QMI_normalized(x, z, 1), yhat = y + 0.3 LCG(33)")
show("objective", v)
show("d/dyhat", yhat.grad)
show("d/dz (N x 2)", z.grad)
