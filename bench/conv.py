"""Benchmark: lesson 06's from-scratch convolutions (im2col, then one matrix product) against `F.conv2d`.

Three layer shapes of the lesson's CNN, batch 64, stride 2 and padding k//2 as in its `conv_layer`:
  (64,1,28,28) -> 8 filters 5x5,  (64,16,14,14) -> 32 filters 3x3,  (64,32,7,7) -> 64 filters 3x3
each timed forward only (under no_grad) and forward+backward (gradients for input, weight and bias), three ways:
  conv2d       exp.nb_06.conv2d, the lesson's main line (im2col by strided slices + stack, autograd's backward)
  conv2d_fast  exp.nb_06.conv2d_fast, the lesson's "Making it fast" version (patches as a Tensor.unfold view copied
               once, channels-last layout when C >= 8, one 2-D matmul, its own backward: 2 matmuls + col2im)
  F.conv2d     PyTorch's convolution (the reference)
at each thread count of --threads (default 1 and 2; the thread count is printed with the figures).
Prints the median time per call over interleaved repeats and the ratio to F.conv2d, measured in this run, by
median wall-clock, by median process CPU time and by the fastest call (both steadier on a busy machine). The
issue's target, at most 3x F.conv2d, is judged on `conv2d_fast` (the plain `conv2d` is printed for comparison)
by median wall-clock time; the script prints whether it is met.

Usage: python bench/conv.py [--repeats 30] [--bs 64] [--threads 1,2]
"""
import argparse
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from exp.nb_06 import conv2d, conv2d_fast

SHAPES = [(1, 28, 8, 5), (16, 14, 32, 3), (32, 7, 64, 3)]   # in channels, image size, filters, kernel size
TARGET = 3.0
WAYS: dict[str, Callable] = {'conv2d': conv2d, 'conv2d_fast': conv2d_fast, 'F.conv2d': F.conv2d}
JUDGED = 'conv2d_fast'


def timed(f: Callable[[], object]) -> tuple[float, float]:
    "Wall-clock and process CPU seconds one call of `f` takes."
    t, c = time.perf_counter(), time.process_time()
    f()
    return time.perf_counter() - t, time.process_time() - c


Timings = dict[tuple[str, str], tuple[float, float, float]]


def measure(bs: int, ci: int, n: int, nf: int, k: int, repeats: int) -> Timings:
    "Median wall, median CPU and fastest wall seconds per call of every way, fwd and fwd+bwd, over interleaved rounds."
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
    kinds = [('fwd', fwd), ('fwd+bwd', fwd_bwd)]
    runs = {(way, kind): make(conv) for way, conv in WAYS.items() for kind, make in kinds}
    for r in runs.values(): r()                                     # warm-up
    times: dict[tuple[str, str], list[tuple[float, float]]] = {k_: [] for k_ in runs}
    for _ in range(repeats):
        for k_, r in runs.items(): times[k_].append(timed(r))
    return {k_: (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts), min(w for w, _ in ts))
            for k_, ts in times.items()}


def report(bs: int, repeats: int) -> tuple[float, float, float]:
    "Print the table at the current thread count; return the largest ratios of JUDGED to F.conv2d (wall, CPU, fastest)."
    print(f'\ntorch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {bs}, stride 2, padding k//2, '
          f'median of {repeats} interleaved repeats')
    others = list(WAYS)[:-1]
    print(f"{'input -> filters':<26}{'pass':<9}" + ''.join(f'{w + " us":>16}' for w in WAYS) +
          ''.join(f'{"ratio " + w:>19}' for w in others) + f'{"CPU ratio " + JUDGED:>23}' + f'{"fastest ratio":>15}')
    worst, worst_cpu, worst_min = 0., 0., 0.
    for ci, n, nf, k in SHAPES:
        med = measure(bs, ci, n, nf, k, repeats)
        for kind in ('fwd', 'fwd+bwd'):
            ref, ref_cpu, ref_min = med[('F.conv2d', kind)]
            ratios = {w: med[(w, kind)][0] / ref for w in others}
            cpu, fastest = med[(JUDGED, kind)][1] / ref_cpu, med[(JUDGED, kind)][2] / ref_min
            worst, worst_cpu, worst_min = max(worst, ratios[JUDGED]), max(worst_cpu, cpu), max(worst_min, fastest)
            print(f'{f"({bs},{ci},{n},{n}) -> {nf}, {k}x{k}":<26}{kind:<9}' +
                  ''.join(f'{med[(w, kind)][0] * 1e6:16.0f}' for w in WAYS) +
                  ''.join(f'{ratios[w]:19.2f}' for w in others) + f'{cpu:23.2f}{fastest:15.2f}')
    print(f'largest ratio {JUDGED} / F.conv2d at {torch.get_num_threads()} thread(s): {worst:.2f} wall, '
          f'{worst_cpu:.2f} CPU, {worst_min:.2f} fastest-of-{repeats} wall '
          f'({"meets" if worst <= TARGET else "misses"} the target of at most {TARGET:g} by median wall-clock time)')
    return worst, worst_cpu, worst_min


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=30)
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--threads', default='1,2', help='comma-separated torch thread counts (default 1,2)')
    a = p.parse_args(argv)
    try: threads = [int(t) for t in a.threads.split(',')]
    except ValueError: p.error(f'--threads must be comma-separated integers, got {a.threads!r}')
    if a.repeats < 1 or a.bs < 1 or min(threads) < 1: p.error('--repeats, --bs and --threads must be >= 1')
    print('times: median wall-clock microseconds per call; ratios: to F.conv2d; CPU ratio: the same for process CPU '
          'time; fastest ratio: of the fastest calls. On a busy machine a call longer than a scheduler time slice is '
          'often descheduled, which inflates the median wall-clock time of the slower way; CPU time and the fastest '
          'call are then the steadier figures.')
    results = {}
    for t in threads:
        torch.set_num_threads(t)
        results[t] = report(a.bs, a.repeats)
    print('\nsummary, ' + JUDGED + ' vs F.conv2d, worst over shapes and passes: ' + '; '.join(
        f'{t} thread(s): {w:.2f}x wall, {c:.2f}x CPU, {m:.2f}x fastest ({"meets" if w <= TARGET else "misses"} '
        f'<= {TARGET:g}x by median wall)' for t, (w, c, m) in results.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
