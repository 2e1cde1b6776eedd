"""Benchmark: lesson 06's from-scratch `conv2d` (im2col by strided slices, then one matrix product) against `F.conv2d`.

Three layer shapes of the lesson's CNN, batch 64, stride 2 and padding k//2 as in its `conv_layer`:
  (64,1,28,28) -> 8 filters 5x5,  (64,16,14,14) -> 32 filters 3x3,  (64,32,7,7) -> 64 filters 3x3
each timed forward only (under no_grad) and forward+backward (gradients for input, weight and bias), three ways:
  ours            exp.nb_06.conv2d
  ours, F.unfold  the same matmul on columns from F.unfold (shows what our im2col costs), for information
  F.conv2d        PyTorch's convolution (the reference)
Prints the median time per call over interleaved repeats and the ratio to F.conv2d, measured in this run. The
issue's target is a ratio of at most 3 for `ours`; the script prints whether each measured ratio meets it.

Usage: python bench/conv.py [--repeats 30] [--bs 64] [--threads N]
(--threads 1 gives steadier figures on a machine shared with other work.)
"""
import argparse
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
from exp.nb_06 import conv2d

SHAPES = [(1, 28, 8, 5), (16, 14, 32, 3), (32, 7, 64, 3)]   # in channels, image size, filters, kernel size
TARGET = 3.0


def conv2d_funfold(x, weight, bias=None, stride=1, padding=0):
    "Our conv2d with the columns from F.unfold, put in our (C*kh*kw, N*oh*ow) layout (for comparison)."
    nf, c, kh, kw = weight.shape
    oh, ow = [(n + 2 * padding - k) // stride + 1 for n, k in zip(x.shape[2:], (kh, kw))]
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride).transpose(0, 1).reshape(c * kh * kw, -1)
    out = weight.reshape(nf, -1) @ cols
    if bias is not None: out = out + bias[:, None]
    return out.reshape(nf, len(x), oh, ow).transpose(0, 1).contiguous()


WAYS: dict[str, Callable] = {'ours': conv2d, 'ours, F.unfold': conv2d_funfold, 'F.conv2d': F.conv2d}


def timed(f: Callable[[], object]) -> tuple[float, float]:
    "Wall-clock and process CPU seconds one call of `f` takes."
    t, c = time.perf_counter(), time.process_time()
    f()
    return time.perf_counter() - t, time.process_time() - c


def measure(bs: int, ci: int, n: int, nf: int, k: int, repeats: int) -> dict[tuple[str, str], tuple[float, float]]:
    "Median (wall, CPU) seconds per call of every way, forward and forward+backward, over `repeats` interleaved rounds."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(bs, ci, n, n, generator=g, requires_grad=True)
    w = (torch.randn(nf, ci, k, k, generator=g) / (ci * k * k) ** 0.5).requires_grad_()
    b = torch.randn(nf, generator=g, requires_grad=True)
    args = (x, w, b, 2, k // 2)
    def fwd(conv):
        def run():
            with torch.no_grad(): conv(*args)
        return run
    def fwd_bwd(conv):
        def run():
            conv(*args).sum().backward()
            x.grad = w.grad = b.grad = None
        return run
    runs = {(way, kind): make(conv) for way, conv in WAYS.items() for kind, make in [('fwd', fwd), ('fwd+bwd', fwd_bwd)]}
    for r in runs.values(): r()                                     # warm-up
    times: dict[tuple[str, str], list[tuple[float, float]]] = {k_: [] for k_ in runs}
    for _ in range(repeats):
        for k_, r in runs.items(): times[k_].append(timed(r))
    return {k_: (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts)) for k_, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=30)
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch decides)')
    a = p.parse_args(argv)
    if a.repeats < 1 or a.bs < 1: p.error('--repeats and --bs must be >= 1')
    if a.threads: torch.set_num_threads(a.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.bs}, stride 2, padding k//2, '
          f'median of {a.repeats} interleaved repeats')
    print(f"{'input -> filters':<26}{'pass':<9}" + ''.join(f'{w + " us":>18}' for w in WAYS) +
          ''.join(f'{"ratio " + w:>22}' for w in list(WAYS)[:-1]) + f'{"CPU ratio ours":>16}')
    worst, worst_cpu = 0., 0.
    for ci, n, nf, k in SHAPES:
        med = measure(a.bs, ci, n, nf, k, a.repeats)
        for kind in ('fwd', 'fwd+bwd'):
            ref, ref_cpu = med[('F.conv2d', kind)]
            ratios = [med[(w, kind)][0] / ref for w in list(WAYS)[:-1]]
            cpu = med[('ours', kind)][1] / ref_cpu
            worst, worst_cpu = max(worst, ratios[0]), max(worst_cpu, cpu)
            print(f'{f"({a.bs},{ci},{n},{n}) -> {nf}, {k}x{k}":<26}{kind:<9}' +
                  ''.join(f'{med[(w, kind)][0] * 1e6:18.0f}' for w in WAYS) + ''.join(f'{r:22.2f}' for r in ratios) +
                  f'{cpu:16.2f}')
    print('times: median wall-clock microseconds per call; ratios: to F.conv2d; CPU ratio: the same for process CPU '
          'time, steadier on a busy machine')
    print(f'\nlargest ratio ours / F.conv2d in this run: {worst:.2f} wall, {worst_cpu:.2f} CPU '
          f'({"meets" if worst <= TARGET else "misses"} the target of at most {TARGET:g} by wall-clock time)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
