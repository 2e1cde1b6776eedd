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
import torch
from common import BenchArgs, machine, table, verdict
from torch import nn

from exp.all import adam_opt, compare_us, lamb_opt, sgd_opt

ADAMW = dict(betas=(0.9, 0.99), eps=1e-5, weight_decay=1e-2)   # adam_opt's defaults, and wd=1e-2
SGD, ADAM = 'torch SGD(momentum=0.9)', 'torch AdamW'
OPTS = {   # name: (make the optimizer, the PyTorch default it is compared with)
    SGD:                               (lambda ps: torch.optim.SGD(ps, 1e-3, momentum=0.9), SGD),
    'sgd_opt(mom=0.9)':                (lambda ps: sgd_opt(ps, 1e-3, mom=0.9), SGD),
    'sgd_opt(mom=0.9, foreach=True)':  (lambda ps: sgd_opt(ps, 1e-3, mom=0.9, foreach=True), SGD),
    ADAM:                              (lambda ps: torch.optim.AdamW(ps, 1e-3, **ADAMW), ADAM),
    'torch AdamW(foreach=True)':       (lambda ps: torch.optim.AdamW(ps, 1e-3, **ADAMW, foreach=True), ADAM),
    'adam_opt(wd=1e-2)':               (lambda ps: adam_opt(ps, 1e-3, wd=1e-2), ADAM),
    'adam_opt(wd=1e-2, foreach=True)': (lambda ps: adam_opt(ps, 1e-3, wd=1e-2, foreach=True), ADAM),
    'lamb_opt(wd=1e-2)':               (lambda ps: lamb_opt(ps, 1e-3, wd=1e-2), ADAM),
}


def make_params(layers, width, seed=0):
    "The parameters of `layers` Linear(width, width), each with a fixed random gradient."
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
    ps = [p.detach().requires_grad_() for p in model.parameters()]
    for p in ps: p.grad = torch.randn_like(p) * 1e-2
    return ps


def fresh(ps):
    "A copy of `ps` with copies of their gradients."
    out = [p.detach().clone().requires_grad_() for p in ps]
    for q, p in zip(out, ps): q.grad = p.grad.clone()
    return out


def main(argv=None):
    a = BenchArgs(__doc__, layers=30, width=200, steps=20, repeats=7).parse_args(argv)
    ps = make_params(a.layers, a.width)
    print(f'{machine()}, {len(ps)} tensors, {sum(p.numel() for p in ps):,} parameters, '
          f'{a.repeats} repeats of {a.steps} steps')
    opts = {k: make(fresh(ps)) for k, (make, _) in OPTS.items()}
    steps = {k: lambda o=o: [o.step() for _ in range(a.steps)] for k, o in opts.items()}
    us = {k: t / a.steps for k, t in compare_us(steps, n=a.repeats).items()}  # the warm-up round: a.steps steps
    print()
    rows = [[k, t, t / us[b], b if b != k else '(baseline)'] for k, t in us.items() for b in [OPTS[k][1]]]
    table(['optimizer', 'us/step', 'ratio', 'vs'], rows, ['{:.0f}', '{:.2f}', '{}'])
    worst = max(us[k] / us[OPTS[k][1]] for k in ('sgd_opt(mom=0.9, foreach=True)', 'adam_opt(wd=1e-2, foreach=True)'))
    print(f'\nfast path (foreach) vs PyTorch default: worst ratio {worst:.2f} ({verdict(worst, 1.0)})')


if __name__ == '__main__':
    main()
