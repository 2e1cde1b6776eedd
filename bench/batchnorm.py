"""Benchmark: lesson 07's BatchNorm against nn.BatchNorm2d.

(1) One batchnorm layer, forward + backward in training mode, at the shapes of a small CNN's activations
    (default (256,32,14,14) and (256,64,7,7)): our fast BatchNorm (`FastBatchNorm`, hand-written backward,
    conv_norm's default), the plain maths `BatchNorm` of the lesson's main line (for information) and
    nn.BatchNorm2d. Median of many calls, the three interleaved round by round. Target: fast BatchNorm at most
    2.5x nn.BatchNorm2d.
(2) One training epoch (forward, backward, SGD step on every batch; no validation) of lesson 07's CNN,
    `get_cnn_model(data, [16, 32, 64, 64, 64], conv_norm, norm=...)`, with our FastBatchNorm and with nn.BatchNorm2d:
    same initial conv and linear weights, same batches, on random MNIST-shaped data (the speed does not depend on the
    values). Repeats are interleaved; median seconds per epoch. Target: ours at most 1.3x.

Every ratio is measured in this run. On a busy machine a median can be far off (with several torch threads a
thread that loses its core holds up the others), so the ratios of the fastest calls/epochs, and for (2) of the
median process CPU times, are printed too; a quiet machine makes them agree. Usage:
    python bench/batchnorm.py [--repeats 3] [--n 50000] [--bs 64] [--calls 20] [--threads N] [--layer-bs 256]
"""
import torch
import torch.nn.functional as F
from common import BenchArgs, clock, epoch_table, fastest, interleave, machine, medians, random_rows, table, verdict
from torch import nn

from exp.all import BatchNorm, FastBatchNorm, conv_norm, get_cnn_model

NFS = [16, 32, 64, 64, 64]


def layer_times(shape, calls):
    "Medians and fastest µs of forward+backward, `calls` calls of each layer at `shape`, interleaved call by call."
    x, g = torch.randn(shape, requires_grad=True), torch.randn(shape)
    layers = {'fast BatchNorm': FastBatchNorm(shape[1]), 'plain BatchNorm': BatchNorm(shape[1]),
              'nn.BatchNorm2d': nn.BatchNorm2d(shape[1])}
    times = interleave({k: lambda l=l: clock(lambda: l(x).backward(g)) for k, l in layers.items()}, calls, warmup=3)
    return {k: m[0] * 1e6 for k, m in medians(times).items()}, {k: t * 1e6 for k, t in fastest(times).items()}


def epoch_secs(norm, batches):
    "Wall and process CPU seconds for one training epoch of the lesson's CNN with `norm` layers."
    torch.manual_seed(42)
    model = get_cnn_model(type('Data', (), {'c': 10})(), NFS, conv_norm, norm=norm, leak=0.1, sub=0.4, maxv=6.)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    def epoch():
        for xb, yb in batches:
            F.cross_entropy(model(xb), yb).backward()
            opt.step(); opt.zero_grad()
    return clock(epoch)


def main(argv=None):
    a = BenchArgs(__doc__, repeats=3, n=50_000, bs=64, calls=20, layer_bs=256).parse_args(argv)
    if a.bs < 2: raise SystemExit('bench/batchnorm.py: --bs must be at least 2: batchnorm needs more than one value')
    print(machine())
    print(f'\n(1) one layer, forward + backward in training mode, median of {a.calls} calls (microseconds)')
    rows = []
    for shape in [(a.layer_bs, 32, 14, 14), (a.layer_bs, 64, 7, 7)]:
        t, low = layer_times(shape, a.calls)
        rows.append([str(shape), t['fast BatchNorm'], t['plain BatchNorm'], t['nn.BatchNorm2d'],
                     t['fast BatchNorm'] / t['nn.BatchNorm2d'], t['plain BatchNorm'] / t['nn.BatchNorm2d'],
                     low['fast BatchNorm'] / low['nn.BatchNorm2d']])
    table(['shape', 'fast BatchNorm', 'plain', 'nn.BatchNorm2d', 'fast ratio', 'plain ratio', 'fast ratio of fastest'],
          rows, ['{:.0f}'] * 3 + ['{:.2f}'] * 3)
    worst = max(r[4] for r in rows)
    print(f'largest fast ratio (medians): {worst:.2f} ({verdict(worst, 2.5)})')

    x, y = random_rows(a.n, (1, 28, 28))
    batches = list(zip(x.split(a.bs), y.split(a.bs)))
    print(f'\n(2) one training epoch of the CNN nfs={NFS}, {a.n:,} images, batch size {a.bs} ({len(batches)} batches), '
          f'{a.repeats} interleaved repeats after a warm-up')
    ways = {'our BatchNorm': FastBatchNorm, 'nn.BatchNorm2d': nn.BatchNorm2d}
    for norm in ways.values(): epoch_secs(norm, batches[:50])                   # warm-up: 50 batches
    secs = interleave({k: lambda norm=norm: epoch_secs(norm, batches) for k, norm in ways.items()}, a.repeats, 0)
    ours, theirs = ways
    med, low = epoch_table(secs, theirs), fastest(secs)
    r = med[ours][0] / med[theirs][0]
    print(f'epoch ratio ours / nn.BatchNorm2d: {r:.2f} ({verdict(r, 1.3)}); '
          f'fastest epochs {low[ours] / low[theirs]:.2f}, CPU time {med[ours][1] / med[theirs][1]:.2f}')


if __name__ == '__main__':
    main()
