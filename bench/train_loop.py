"""Benchmark: one training epoch of a 784-50-10 MLP on 50,000 x 784 data, four ways.

  (1) ours, per item  exp.nb_03 DataLoader stacking items one by one with `collate`
  (2) ours, batched   exp.nb_03 DataLoader(batched=True): one indexing op per batch
  (3) PyTorch         torch DataLoader(batch_size=bs, shuffle=True) + F.cross_entropy + optim.SGD (reference)
  (4) plain slices    no DataLoader: x[i:i+bs] in order
(1), (2) and (4) use our `cross_entropy`, `BasicOptimizer` and a shuffled `Sampler` ((4) does not shuffle).
All four train the same nn.Sequential model. The data is random (speed does not depend on the values).
Prints median samples/second over interleaved repeats and the ratio to (3), measured in this run, then the
issue's target: the better of our DataLoader paths (1) and (2) against (3). (4) is not a DataLoader (no
shuffling, no copies); it is printed as a reference row only.

Usage: python bench/train_loop.py [--bs 64 512] [--repeats 5] [--n 50000] [--threads N]
(--threads 1 gives steadier figures on a machine shared with other work.)
"""
import argparse
import statistics
import sys
import time
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
import torch.utils.data as tud
from torch import nn, optim

from exp.nb_03 import ArrayDataset, BasicOptimizer, DataLoader, Sampler, cross_entropy

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def make_data(n: int, n_in: int = 784, n_out: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    "Random inputs and integer labels shaped like MNIST."
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_in, generator=g), torch.randint(0, n_out, (n,), generator=g)


def make_model(n_in: int = 784, nh: int = 50, n_out: int = 10) -> nn.Module:
    "The lesson's MLP."
    return nn.Sequential(nn.Linear(n_in, nh), nn.ReLU(), nn.Linear(nh, n_out))


def train_epoch(model: nn.Module, batches: Batches, loss_func: Callable, opt) -> int:
    "One pass of forward, backward and step over `batches`; returns the number of samples seen."
    n = 0
    for xb, yb in batches:
        loss_func(model(xb), yb).backward()
        opt.step()
        opt.zero_grad()
        n += len(yb)
    return n


def slices(x: torch.Tensor, y: torch.Tensor, bs: int) -> Batches:
    "Consecutive slices of the tensors, no shuffling."
    for i in range(0, len(x), bs): yield x[i:i + bs], y[i:i + bs]


def make_ways(x: torch.Tensor, y: torch.Tensor, bs: int) -> dict[str, Callable[[], int]]:
    "One zero-argument function per way, each training a fresh model for one epoch."
    ds = ArrayDataset(x, y)
    def ours(batched: bool) -> Callable[[], int]:
        def run() -> int:
            model = make_model()
            dl = DataLoader(ds, Sampler(ds, bs, shuffle=True), batched=batched)
            return train_epoch(model, dl, cross_entropy, BasicOptimizer(model.parameters(), lr=0.1))
        return run
    def pytorch() -> int:
        model = make_model()
        dl = tud.DataLoader(tud.TensorDataset(x, y), batch_size=bs, shuffle=True)
        return train_epoch(model, dl, F.cross_entropy, optim.SGD(model.parameters(), lr=0.1))
    def plain() -> int:
        model = make_model()
        return train_epoch(model, slices(x, y, bs), cross_entropy, BasicOptimizer(model.parameters(), lr=0.1))
    return {'(1) ours, per item': ours(False), '(2) ours, batched': ours(True),
            '(3) PyTorch DataLoader + SGD': pytorch, '(4) plain slices': plain}


def time_ways(ways: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    "Median samples/second per way; one warm-up, then `repeats` rounds that interleave the ways."
    for f in ways.values(): f()
    rates: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(repeats):
        for k, f in ways.items():
            t = time.perf_counter()
            n = f()
            rates[k].append(n / (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in rates.items()}


REF = '(3) PyTorch DataLoader + SGD'
OURS = ('(1) ours, per item', '(2) ours, batched')
YARDSTICK = '(4) plain slices'


def best_of_ours(rates: dict[str, float], ours: tuple[str, ...] = OURS) -> str:
    "The faster of our DataLoader paths (the plain-slice row is not a DataLoader, so it never counts)."
    return max(ours, key=rates.__getitem__)


def report(bs: int, rates: dict[str, float], ref: str = REF) -> None:
    "Print one table (samples/second, ratio to the reference) and the target line: best of (1)/(2) vs (3)."
    print(f'\nbatch size {bs}')
    print(f'{"way":32s} {"samples/s":>11s} {"vs (3)":>7s}')
    for k, r in rates.items():
        note = '  (reference row: no DataLoader)' if k == YARDSTICK else ''
        print(f'{k:32s} {r:11,.0f} {r / rates[ref]:6.2f}x{note}')
    best = best_of_ours(rates)
    ratio = rates[best] / rates[ref]
    verdict = 'meets' if ratio >= 1 else 'misses'
    print(f'target, our best DataLoader path vs (3): {best} at {ratio:.2f}x -> {verdict} "at least as fast as (3)"')


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bs', type=int, nargs='+', default=[64, 512])
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--n', type=int, default=50_000)
    p.add_argument('--threads', type=int, default=0, help="torch threads (default: torch's own choice)")
    a = p.parse_args(argv)
    if a.n < 1 or a.repeats < 1 or min(a.bs) < 1 or a.threads < 0:
        print('error: --n, --repeats, --bs must be positive and --threads >= 0', file=sys.stderr); return 2
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x, y = make_data(a.n)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {a.n:,} x {x.shape[1]} samples, '
          f'median over {a.repeats} epoch(s) per way')
    for bs in a.bs: report(bs, time_ways(make_ways(x, y, bs), a.repeats))
    return 0


if __name__ == '__main__':
    sys.exit(main())
