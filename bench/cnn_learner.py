"""Benchmark: lesson 06's CNN trained by the Learner with its callbacks, against a plain PyTorch loop;
and the cost of hooks.

One epoch (all training batches, then the validation pass) of the lesson's CNN (nfs [16,32,64,64], GeneralRelu(leak=0.1,
sub=0.4, maxv=6), init_cnn), SGD with momentum 0.9, on random MNIST-shaped rows, with the same initial weights, the
same DataLoaders (lesson 03's `get_dls`) and the same shuffling, four ways:

  (1) plain loop     a hand-written PyTorch loop: reshape each batch to (N,1,28,28), move it to the device, forward,
                     loss, backward, step; sums the training loss, the validation loss and accuracy (what (2) reports)
  (2) Learner        DeviceCallback + BatchTransformXCallback(mnist_resize) + AvgStatsCallback([accuracy],
                     train_metrics=False, show=False): the same arithmetic as (1) plus the callback machinery
  (3) + hooks        (2) + ActivationStats() (mean, std and a histogram of the first 8 items, per hooked layer and
                     training batch: the lesson's default)
  (4) + full hists   (2) + ActivationStats(hist_items=batch size): histograms over the whole batch, for information

Repeats are interleaved; prints median seconds per epoch and ratios measured in this run. Targets from the issue:
(2)/(1) at most 1.05; (3)/(2) is the per-epoch cost of the activation statistics. On a busy machine epoch times swing
by more than the overhead being measured, so the script also times the callbacks alone: the six events of a
training batch dispatched many times with the model's work left out (CPU time, best of several rounds),
next to the time per batch of (1)'s fastest epoch; and the hooks alone: one batch's forward and backward pass
with and without ActivationStats' hooks.

Usage: python bench/cnn_learner.py [--bs 64] [--repeats 3] [--n 50000] [--threads N] [--device cpu]
"""
import argparse
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import optim

from exp.nb_03 import ArrayDataset, accuracy, get_dls
from exp.nb_04 import AvgStatsCallback, DataBunch, Learner
from exp.nb_06 import (
    ActivationStats,
    BatchTransformXCallback,
    DeviceCallback,
    Hooks,
    default_device,
    get_cnn_model,
    init_cnn,
    mnist_resize,
)

NFS, GR = [16, 32, 64, 64], dict(leak=0.1, sub=0.4, maxv=6.)
Run = Callable[[], tuple[float, float]]


def make_dls(n: int, n_valid: int, bs: int, seed: int = 0) -> tuple:
    "Lesson 03 DataLoaders over random MNIST-shaped rows: `n` training, `n_valid` validation."
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n + n_valid, 784, generator=g), torch.randint(0, 10, (n + n_valid,), generator=g)
    return get_dls(ArrayDataset(x[:n], y[:n]), ArrayDataset(x[n:], y[n:]), bs)


def fresh(device: torch.device) -> tuple:
    "The lesson's CNN, identically initialised, and its optimizer; also resets the shuffling RNG."
    torch.manual_seed(42)
    model = init_cnn(get_cnn_model(DataBunch(None, None, c=10), NFS, **GR), a=0.1).to(device)
    return model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def sync(device: torch.device) -> None:
    "Wait for the GPU to finish (timings are otherwise meaningless there)."
    if device.type == 'cuda': torch.cuda.synchronize()


def plain_loop(dls: tuple, device: torch.device) -> Run:
    "(1): one epoch by hand, with the statistics AvgStatsCallback would compute."
    def run() -> float:
        model, opt = fresh(device)
        sync(device); t, c = time.perf_counter(), time.process_time()
        model.train()
        tot, k = 0., 0
        for xb, yb in dls[0]:
            xb, yb = mnist_resize(xb.to(device)), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(); loss.backward(); opt.step()
            tot, k = tot + loss.item() * len(yb), k + len(yb)
        model.eval()
        vl, va, kv = 0., 0., 0
        with torch.no_grad():
            for xb, yb in dls[1]:
                xb, yb = mnist_resize(xb.to(device)), yb.to(device)
                out = model(xb)
                vl += F.cross_entropy(out, yb).item() * len(yb)
                va += float(accuracy(out, yb)) * len(yb)
                kv += len(yb)
        sync(device)
        return time.perf_counter() - t, time.process_time() - c
    return run


def learner(dls: tuple, device: torch.device, extra: Callable[[], list]) -> Run:
    "(2)-(4): the Learner with device, reshape and stats callbacks, plus `extra()`."
    def run() -> float:
        model, opt = fresh(device)
        cbs = [DeviceCallback(device), BatchTransformXCallback(mnist_resize),
               AvgStatsCallback([accuracy], show=False, train_metrics=False)] + extra()
        learn = Learner(model, opt, F.cross_entropy, DataBunch(*dls, c=10), cbs=cbs)
        sync(device); t, c = time.perf_counter(), time.process_time()
        learn.fit(1)
        sync(device)
        return time.perf_counter() - t, time.process_time() - c
    return run


def event_cost_us(dls: tuple, device: torch.device, extra: Callable[[], list], n: int = 2000) -> float:
    "CPU microseconds the callbacks of (2) + `extra()` cost per training batch, the model's work left out."
    model, opt = fresh(device)
    xb0, yb0 = next(iter(dls[0]))
    cbs = [DeviceCallback(device), BatchTransformXCallback(mnist_resize),
           AvgStatsCallback([accuracy], show=False, train_metrics=False)] + extra()
    learn = Learner(model, opt, F.cross_entropy, DataBunch([(xb0, yb0)], [(xb0, yb0)], c=10), cbs=cbs)
    learn.fit(1)                                                    # sets everything up once
    learn._build_handlers()
    learn('begin_fit'); learn.epochs, learn.epoch, learn.dl, learn.iters = 1, 0, dls[0], 10 ** 9
    learn('begin_epoch')
    learn.yb = yb0.to(device)
    learn.pred = model(mnist_resize(xb0.to(device))); learn.loss = F.cross_entropy(learn.pred, learn.yb)
    events = ['begin_batch', 'after_pred', 'after_loss', 'after_backward', 'after_step', 'after_batch']
    best = float('inf')
    for _ in range(5):
        c = time.process_time()
        for _ in range(n):
            learn.xb = xb0
            for e in events: learn(e)
        best = min(best, (time.process_time() - c) / n * 1e6)
    learn('after_fit')
    return best


def hook_cost_us(device: torch.device, bs: int, hist_items: int = 8, n: int = 30) -> tuple[float, float]:
    "CPU microseconds of one training batch's forward+backward without and with ActivationStats' hooks."
    model, _ = fresh(device)
    g = torch.Generator().manual_seed(0)
    xb, yb = torch.randn(bs, 1, 28, 28, generator=g).to(device), torch.randint(0, 10, (bs,), generator=g).to(device)
    def step(): F.cross_entropy(model(xb), yb).backward()
    def best() -> float:
        step()
        res = float('inf')
        for _ in range(5):
            sync(device); c = time.process_time()
            for _ in range(n): step()
            sync(device); res = min(res, (time.process_time() - c) / n * 1e6)
        return res
    plain = best()
    with Hooks([m for m in model.children() if next(m.parameters(), None) is not None],
               ActivationStats(hist_items=hist_items).f):
        hooked = best()
    return plain, hooked


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--n', type=int, default=50_000, help='training rows (validation: n/5)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch decides)')
    p.add_argument('--device', default=None, help='default: default_device()')
    a = p.parse_args(argv)
    if a.bs < 1 or a.repeats < 1 or a.n < 5: p.error('--bs and --repeats must be >= 1 and --n >= 5')
    if a.threads: torch.set_num_threads(a.threads)
    device = torch.device(a.device) if a.device else default_device()
    dls = make_dls(a.n, a.n // 5, a.bs)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, '
          f'{a.n:,} + {a.n // 5:,} rows, '
          f'batch size {a.bs}, {len(dls[0])} + {len(dls[1])} batches per epoch, {a.repeats} repeats')
    ways = {'(1) plain loop': plain_loop(dls, device),
            '(2) Learner + device + reshape + stats': learner(dls, device, list),
            '(3) (2) + ActivationStats': learner(dls, device, lambda: [ActivationStats()]),
            '(4) (2) + ActivationStats, full histograms':
                learner(dls, device, lambda: [ActivationStats(hist_items=a.bs)])}
    for run in ways.values(): run()                                 # warm-up
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in ways}
    for _ in range(a.repeats):
        for k, run in ways.items(): times[k].append(run())
    med = {k: statistics.median(w for w, _ in ts) for k, ts in times.items()}
    cpu = {k: statistics.median(c for _, c in ts) for k, ts in times.items()}
    one, two, three, four = ways
    print(f"{'way':<46}{'median s':>9}{'min s':>8}{'max s':>8}{'/ (1)':>8}{'/ (2)':>8}"
          f"{'CPU / (1)':>11}{'CPU / (2)':>11}")
    for k, ts in times.items():
        w = [t for t, _ in ts]
        print(f'{k:<46}{med[k]:9.3f}{min(w):8.3f}{max(w):8.3f}{med[k] / med[one]:8.3f}{med[k] / med[two]:8.3f}'
              f'{cpu[k] / cpu[one]:11.3f}{cpu[k] / cpu[two]:11.3f}')
    print('ratios of median wall-clock times; CPU: the same for process CPU time, steadier on a busy machine '
          '(on a GPU the CPU time does not count the GPU work)')
    r, rc = med[two] / med[one], cpu[two] / cpu[one]
    print(f'\nLearner with callbacks / plain loop: {r:.3f} wall, {rc:.3f} CPU '
          f'({"meets" if r <= 1.05 else "misses"} the target of at most 1.05 by wall-clock time)')
    per_batch = min(w for w, _ in times[one]) / (len(dls[0]) + len(dls[1])) * 1e6
    print(f'\ncallbacks alone, per training batch (CPU time, best of 5 rounds, model work left out), '
          f"against {per_batch:.0f} us per batch in (1)'s fastest epoch:")
    us = event_cost_us(dls, device, list)
    print(f'  {two:<44}{us:8.1f} us = {us / per_batch:6.1%} of (1) per batch')
    for label, items in [('8 items (default)', 8), ('full batch', a.bs)]:
        plain, hooked = hook_cost_us(device, a.bs, items)
        print(f'forward+backward of one batch (CPU time, best of 5 rounds) without hooks {plain:.0f} us, with '
              f'ActivationStats hooks, histograms of {label}, {hooked:.0f} us: {hooked / plain - 1:+.1%}')
    print(f'\nactivation statistics cost per epoch: {med[three] - med[two]:+.2f} s '
          f'({med[three] / med[two] - 1:+.1%} wall, '
          f'{cpu[three] / cpu[two] - 1:+.1%} CPU); with full histograms {med[four] / med[two] - 1:+.1%} wall, '
          f'{cpu[four] / cpu[two] - 1:+.1%} CPU')
    return 0


if __name__ == '__main__':
    sys.exit(main())
