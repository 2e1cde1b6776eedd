"""Benchmark: one `step()` of lesson 09's optimizers against PyTorch's, on a model of about 1.2M parameters.

The model is `--layers` linear layers of `--width` by `--width` (default 30 of 200 x 200: 60 tensors, 1,206,000
parameters), with fixed random gradients. Each optimizer is built over the same parameters and timed on its own
copy of them (so the steps do not interfere), repeats interleaved; the table shows the median time per step in
microseconds and the ratio to the matching PyTorch default, all measured in this run:

  SGD with momentum 0.9:   sgd_opt(mom=0.9), sgd_opt(mom=0.9, foreach=True)   vs  torch.optim.SGD(momentum=0.9)
  AdamW (wd 1e-2):         adam_opt(wd=1e-2), adam_opt(..., foreach=True)  vs  torch.optim.AdamW (default; foreach=True)
  LAMB (no PyTorch LAMB):  lamb_opt, shown against AdamW's default for scale

PyTorch's default on a CPU is its single-tensor loop (foreach is the default only on CUDA). The target: ours at
most 1.0x PyTorch's default (the foreach path may be used). `--layers 30 --width 40` gives the same 60 tensors
but about 50k parameters, where per-tensor Python overhead dominates.

Usage: python bench/optimizers.py [--layers 30] [--width 200] [--steps 20] [--repeats 7] [--threads N]
"""
import argparse
import statistics
import sys
import time

import torch
from torch import nn

from exp.nb_09 import adam_opt, lamb_opt, sgd_opt


def make_params(layers: int, width: int, seed: int = 0) -> list[torch.Tensor]:
    "The parameters of `layers` Linear(width, width), each with a fixed random gradient."
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
    ps = [p.detach().requires_grad_() for p in model.parameters()]
    for p in ps: p.grad = torch.randn_like(p) * 1e-2
    return ps


def fresh(ps: list[torch.Tensor]) -> list[torch.Tensor]:
    "A copy of `ps` with copies of their gradients."
    out = [p.detach().clone().requires_grad_() for p in ps]
    for q, p in zip(out, ps): q.grad = p.grad.clone()
    return out


ADAMW = dict(betas=(0.9, 0.99), eps=1e-5, weight_decay=1e-2)   # adam_opt's defaults, and wd=1e-2
OPTS = {
    'torch SGD(momentum=0.9)':        lambda ps: torch.optim.SGD(ps, 1e-3, momentum=0.9),
    'sgd_opt(mom=0.9)':               lambda ps: sgd_opt(ps, 1e-3, mom=0.9),
    'sgd_opt(mom=0.9, foreach=True)': lambda ps: sgd_opt(ps, 1e-3, mom=0.9, foreach=True),
    'torch AdamW':                    lambda ps: torch.optim.AdamW(ps, 1e-3, **ADAMW),
    'torch AdamW(foreach=True)':      lambda ps: torch.optim.AdamW(ps, 1e-3, **ADAMW, foreach=True),
    'adam_opt(wd=1e-2)':              lambda ps: adam_opt(ps, 1e-3, wd=1e-2),
    'adam_opt(wd=1e-2, foreach=True)': lambda ps: adam_opt(ps, 1e-3, wd=1e-2, foreach=True),
    'lamb_opt(wd=1e-2)':              lambda ps: lamb_opt(ps, 1e-3, wd=1e-2),
}
BASE = {'sgd_opt': 'torch SGD(momentum=0.9)', 'adam_opt': 'torch AdamW', 'lamb_opt': 'torch AdamW',
        'torch AdamW(': 'torch AdamW'}


def base_of(name: str) -> str:
    "The PyTorch default that `name` is compared with."
    return next((b for k, b in BASE.items() if name.startswith(k)), name)


def measure(params: list[torch.Tensor], steps: int, repeats: int) -> dict[str, list[float]]:
    "Median-able lists of microseconds per step, repeats interleaved across optimizers."
    opts = {k: make(fresh(params)) for k, make in OPTS.items()}
    for o in opts.values():
        for _ in range(3): o.step()                          # warm up: state allocated, first-step paths taken
    times = {k: [] for k in opts}
    for _ in range(repeats):
        for k, o in opts.items():
            t0 = time.perf_counter()
            for _ in range(steps): o.step()
            times[k].append((time.perf_counter() - t0) / steps * 1e6)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--layers', type=int, default=30)
    p.add_argument('--width', type=int, default=200)
    p.add_argument('--steps', type=int, default=20, help='steps per timed repeat')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch decides)')
    a = p.parse_args(argv)
    if min(a.layers, a.width, a.steps, a.repeats) < 1: p.error('--layers, --width, --steps and --repeats must be >= 1')
    if a.threads: torch.set_num_threads(a.threads)
    ps = make_params(a.layers, a.width)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {len(ps)} tensors, '
          f'{sum(p.numel() for p in ps):,} parameters, {a.repeats} repeats of {a.steps} steps')
    med = {k: statistics.median(v) for k, v in measure(ps, a.steps, a.repeats).items()}
    print(f"\n{'optimizer':<34}{'us/step':>10}  {'ratio':>6}  vs")
    for k, us in med.items():
        b = base_of(k)
        print(f'{k:<34}{us:10.0f}  {us / med[b]:6.2f}  {b if b != k else "(baseline)"}')
    worst = max(med[k] / med[base_of(k)] for k in ('sgd_opt(mom=0.9, foreach=True)', 'adam_opt(wd=1e-2, foreach=True)'))
    print(f'\nfast path (foreach) vs PyTorch default: worst ratio {worst:.2f} '
          f"({'meets' if worst <= 1.0 else 'misses'} the target of 1.0)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
