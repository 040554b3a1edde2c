#!/usr/bin/env python3
"""Reference values for tests/test_ldr.cpp ("[ldr][official]"), computed in double by
the authors' own code: Optimization-AI/ICML2023_LDR @ 732fc85dbd8b30b6dd16cd2dfb79d6c325558d71,
loss.py (classes LDRLoss_V1 and ALDRLoss_V1). Run with Debian's python3 (python3-torch):

  mkdir -p /tmp/ldr_official && cd /tmp/ldr_official
  git -C <ICML2023_LDR clone> show 732fc85dbd8b30b6dd16cd2dfb79d6c325558d71:loss.py > loss.py
  PYTHONPATH=/tmp/ldr_official /usr/bin/python3 <losskit>/tests/torch/ldr_official_references.py

loss.py itself is used unchanged. What this script changes around it, to run it on a CPU
in double:
  - torch.set_default_dtype(torch.float64) before anything is built;
  - torch.Tensor.cuda is replaced by the identity (loss.py calls .cuda() on its buffers);
  - after constructing ALDRLoss_V1, its per-example buffer self.Lambda (built with
    .float(), i.e. float32) is replaced by the same values as a float64 tensor; its
    Lambda_ref is already float64 (torch.tensor of a Python float under the default dtype).
Everything else (softplus / L1 scaling, the 1e-5 smoothing, F.normalize, the fixed-point
step, the per-example write self.Lambda[ids] = ..., the detached λ) is the official code.

The logits are an integer LCG mapped to multiples of 1/32 in [-4, 4): exact in double, so
the C++ test regenerates them bit for bit (official_logits there).
"""
import torch

torch.set_default_dtype(torch.float64)
torch.Tensor.cuda = lambda self, *args, **kwargs: self

import loss as official  # noqa: E402  (loss.py of the commit above)


class Lcg:
    def __init__(self, seed):
        self.s = seed

    def next(self):
        self.s = (self.s * 1103515245 + 12345) % 2 ** 31
        return ((self.s >> 8) % 256) / 32.0 - 4.0


def logits(lcg, n, c):
    """N x C (official layout); drawn sample by sample, class by class."""
    return torch.tensor([[lcg.next() for _ in range(c)] for _ in range(n)])


def one_hot(labels, c):
    return torch.nn.functional.one_hot(torch.tensor(labels), num_classes=c).double()


def show(name, values):
    print(name, ", ".join(f"{v:.17g}" for v in values))


C, N, EXAMPLES = 5, 4, 6
IDS = [[0, 1, 2, 3], [4, 5, 0, 1], [2, 5, 2, 3], [1, 0, 4, 2]]  # call 2 visits example 2 twice


def labels_of(call):
    return [(call + 2 * j) % C for j in range(N)]


# 1. ALDRLoss_V1, a sequence of calls (state carried between them).
for name, softplus, lambda0, alpha, seed in (("meanabs", False, 1.0, 2.0, 1), ("softplus", True, 0.5, 2.0, 2)):
    aldr = official.ALDRLoss_V1(N=EXAMPLES, threshold=0.1, Lambda=lambda0, alpha=alpha, softplus=softplus)
    aldr.Lambda = aldr.Lambda.double()
    lcg = Lcg(seed)
    for call, ids in enumerate(IDS):
        x = logits(lcg, N, C).requires_grad_(True)
        value = aldr(x, one_hot(labels_of(call), C), torch.tensor(ids))
        value.backward()
        show(f"aldr_{name}_call{call}_loss", [value.item()])
        show(f"aldr_{name}_call{call}_lambda", aldr.Lambda.flatten().tolist())
        show(f"aldr_{name}_call{call}_grad", x.grad.flatten().tolist())  # N x C, row by row

# 2. LDRLoss_V1 (always softplus-then-mean scaled), one call per λ.
lcg = Lcg(3)
for lam in (0.5, 10.0):
    ldr = official.LDRLoss_V1(threshold=0.1, Lambda=lam)
    x = logits(lcg, N, C).requires_grad_(True)
    value = ldr(x, one_hot(labels_of(0), C))
    value.backward()
    show(f"ldr_softplus_lambda{lam}_loss", [value.item()])
    show(f"ldr_softplus_lambda{lam}_grad", x.grad.flatten().tolist())
