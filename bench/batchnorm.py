"""Benchmark: lesson 07's BatchNorm against nn.BatchNorm2d.

(1) One batchnorm layer, forward + backward in training mode, at the shapes of a small CNN's activations
    (default (256,32,14,14) and (256,64,7,7)): our fast BatchNorm (hand-written backward, the exported one), the plain
    maths version it replaced (`BatchNorm.forward_plain`, for information) and nn.BatchNorm2d. Median of many calls,
    the three interleaved round by round. Target: fast BatchNorm at most 2.5x nn.BatchNorm2d.
(2) One training epoch (forward, backward, SGD step on every batch; no validation) of lesson 07's CNN,
    `get_cnn_model(data, [16, 32, 64, 64, 64], conv_norm, norm=...)`, with our BatchNorm and with nn.BatchNorm2d:
    same initial conv and linear weights, same batches, on random MNIST-shaped data (the speed does not depend on the
    values). Repeats are interleaved; median seconds per epoch. Target: ours at most 1.3x.

Every ratio is measured in this run. On a busy machine a median can be far off (with several torch threads a
thread that loses its core holds up the others), so the ratios of the fastest calls/epochs, and for (2) of the
median process CPU times, are printed too; a quiet machine makes them agree. Usage:
    python bench/batchnorm.py [--repeats 3] [--n 50000] [--bs 64] [--calls 20] [--threads N]
"""
import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from exp.nb_06 import get_cnn_model
from exp.nb_07 import BatchNorm, conv_norm

NFS = [16, 32, 64, 64, 64]


class PlainBatchNorm(BatchNorm):
    "BatchNorm with the plain maths forward of the lesson's main line (autograd does the backward)."
    forward = BatchNorm.forward_plain


def layer_times(shape: tuple, calls: int) -> dict[str, list[float]]:
    "Microseconds of forward+backward, `calls` calls of each layer at `shape`, interleaved call by call."
    x, g = torch.randn(shape, requires_grad=True), torch.randn(shape)
    layers = {'fast BatchNorm': BatchNorm(shape[1]), 'plain BatchNorm': PlainBatchNorm(shape[1]),
              'nn.BatchNorm2d': nn.BatchNorm2d(shape[1])}
    times: dict[str, list[float]] = {k: [] for k in layers}
    for i in range(calls + 3):
        for k, l in layers.items():
            t = time.perf_counter()
            l(x).backward(g)
            if i >= 3: times[k].append((time.perf_counter() - t) * 1e6)      # 3 warm-up calls
    return times


def make_batches(n: int, bs: int, seed: int = 0) -> list:
    "Random MNIST-shaped (N,1,28,28) batches with labels."
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    return list(zip(x.split(bs), y.split(bs)))


def epoch_secs(norm, batches: list) -> tuple[float, float]:
    "Wall and process CPU seconds for one training epoch of the lesson's CNN with `norm` layers."
    torch.manual_seed(42)
    model = get_cnn_model(type('Data', (), {'c': 10})(), NFS, conv_norm, norm=norm, leak=0.1, sub=0.4, maxv=6.)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    t, c = time.perf_counter(), time.process_time()
    for xb, yb in batches:
        F.cross_entropy(model(xb), yb).backward()
        opt.step(); opt.zero_grad()
    return time.perf_counter() - t, time.process_time() - c


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=3, help='timed epochs per way (after one warm-up epoch each)')
    p.add_argument('--n', type=int, default=50_000, help='training images per epoch')
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--calls', type=int, default=20, help='timed forward+backward calls per layer and shape')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch decides)')
    a = p.parse_args(argv)
    if min(a.repeats, a.n, a.bs, a.calls) < 1: p.error('--repeats, --n, --bs and --calls must be at least 1')
    if a.bs < 2: p.error('--bs must be at least 2: batchnorm needs more than one value per channel')
    if a.threads: torch.set_num_threads(a.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads')

    print(f'\n(1) one layer, forward + backward in training mode, median of {a.calls} calls (microseconds)')
    print(f"{'shape':<20}{'fast BatchNorm':>16}{'plain':>10}{'nn.BatchNorm2d':>16}{'fast ratio':>12}{'plain ratio':>13}"
          f"{'fast ratio of fastest':>23}")
    worst = 0.
    for shape in [(256, 32, 14, 14), (256, 64, 7, 7)]:
        ts = layer_times(shape, a.calls)
        t = {k: statistics.median(v) for k, v in ts.items()}
        r, rp = t['fast BatchNorm'] / t['nn.BatchNorm2d'], t['plain BatchNorm'] / t['nn.BatchNorm2d']
        worst = max(worst, r)
        print(f"{str(shape):<20}{t['fast BatchNorm']:16.0f}{t['plain BatchNorm']:10.0f}{t['nn.BatchNorm2d']:16.0f}"
              f"{r:12.2f}{rp:13.2f}"
              f"{min(ts['fast BatchNorm']) / min(ts['nn.BatchNorm2d']):23.2f}")
    print(f'largest fast ratio (medians): {worst:.2f} (target <= 2.5): {"met" if worst <= 2.5 else "NOT met"}')

    batches = make_batches(a.n, a.bs)
    print(f'\n(2) one training epoch of the CNN nfs={NFS}, {a.n:,} images, batch size {a.bs} ({len(batches)} batches), '
          f'{a.repeats} interleaved repeats after a warm-up')
    ways = {'our BatchNorm': BatchNorm, 'nn.BatchNorm2d': nn.BatchNorm2d}
    for norm in ways.values(): epoch_secs(norm, batches[:50])
    secs: dict[str, list[tuple[float, float]]] = {k: [] for k in ways}
    for _ in range(a.repeats):
        for k, norm in ways.items(): secs[k].append(epoch_secs(norm, batches))
    wall = {k: [w for w, _ in v] for k, v in secs.items()}
    med = {k: statistics.median(v) for k, v in wall.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in secs.items()}
    for k, v in wall.items():
        print(f'{k:<16} median {med[k]:6.2f} s  (min {min(v):.2f}, max {max(v):.2f}), median CPU {cpu[k]:.2f} s')
    ours, theirs = 'our BatchNorm', 'nn.BatchNorm2d'
    ratio = med[ours] / med[theirs]
    print(f'epoch ratio ours / nn.BatchNorm2d: {ratio:.2f} (target <= 1.3): {"met" if ratio <= 1.3 else "NOT met"}; '
          f'fastest epochs {min(wall[ours]) / min(wall[theirs]):.2f}, CPU time {cpu[ours] / cpu[theirs]:.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
