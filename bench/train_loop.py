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
import time

import torch
import torch.nn.functional as F
import torch.utils.data as tud
from common import BenchArgs, interleave, machine, medians, random_rows, table, verdict
from torch import nn, optim

from exp.all import ArrayDataset, BasicOptimizer
from exp.nb_03 import DataLoader, Sampler, cross_entropy

REF, OURS, YARDSTICK = '(3) PyTorch DataLoader + SGD', ('(1) ours, per item', '(2) ours, batched'), '(4) plain slices'


def rate(batches, loss_func, opt_func):
    "Samples per second of one epoch over `batches` for a fresh MLP (forward, backward, step)."
    model = nn.Sequential(nn.Linear(784, 50), nn.ReLU(), nn.Linear(50, 10))
    opt, n, t = opt_func(model.parameters(), lr=0.1), 0, time.perf_counter()
    for xb, yb in batches:
        loss_func(model(xb), yb).backward()
        opt.step(); opt.zero_grad()
        n += len(yb)
    return n / (time.perf_counter() - t)


def ways(x, y, bs):
    "One zero-argument function per way, each training a fresh model for one epoch; returns samples/s."
    ds = ArrayDataset(x, y)
    ours = lambda batched: lambda: rate(DataLoader(ds, Sampler(ds, bs, shuffle=True), batched=batched),
                                        cross_entropy, BasicOptimizer)
    return {OURS[0]: ours(False), OURS[1]: ours(True),
            REF: lambda: rate(tud.DataLoader(tud.TensorDataset(x, y), batch_size=bs, shuffle=True),
                              F.cross_entropy, optim.SGD),
            YARDSTICK: lambda: rate(((x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)),
                                    cross_entropy, BasicOptimizer)}


def main(argv=None):
    a = BenchArgs(__doc__, bs=[64, 512], repeats=5, n=50_000).parse_args(argv)
    torch.manual_seed(0)
    x, y = random_rows(a.n)
    print(f'{machine()}, {a.n:,} x {x.shape[1]} samples, median over {a.repeats} epoch(s) per way')
    for bs in a.bs:
        rates = medians(interleave(ways(x, y, bs), a.repeats))
        print(f'\nbatch size {bs}')
        note = {YARDSTICK: '(reference row: no DataLoader)'}
        table(['way', 'samples/s', 'vs (3)', ''], [[k, r, r / rates[REF], note.get(k, '')] for k, r in rates.items()],
              ['{:,.0f}', '{:.2f}x', '{}'])
        best = max(OURS, key=rates.__getitem__)    # the plain-slice row is not a DataLoader, so it never counts
        r = rates[best] / rates[REF]
        print(f'target, our best DataLoader path vs (3): {best} at {r:.2f}x -> {verdict(r, 1, most=False)} (3)')


if __name__ == '__main__':
    main()
