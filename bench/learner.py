"""Benchmark: the callback Learner (lesson 04/05) against the plain `fit` loop of lesson 03.

One epoch (all training batches, then the validation pass) of the lessons' 784-50-10 model, with the same
initial weights, the same DataLoaders (lesson 03's `get_dls`) and the same shuffling, three ways:

  (1) fit          exp.nb_03 `fit(1, model, F.cross_entropy, opt, train_dl, valid_dl)` (its printed line is discarded)
  (2) Learner      only the built-in TrainEvalCallback
  (3) Learner+cbs  the statistics fit computes (training loss; validation loss and accuracy):
                   AvgStatsCallback([accuracy], train_metrics=False, show=False), plus a one-cycle ParamScheduler
                   on lr and ProgressCallback(show=False)
  (4) same as (3) but with accuracy on the training batches too (train_metrics=True): more work than fit does,
                   shown for information

The data is random and shaped like MNIST (the speed does not depend on the values). Repeats are interleaved;
the table shows median seconds per epoch and the ratio to (1), all measured in this run.

On a busy machine epoch times can swing by more than the overhead being measured, so the script also times the
callback machinery alone: the six per-batch events of a training batch dispatched many times with the loss and
predictions already computed (CPU time, best of several rounds), and prints it next to the time per batch of
(1)'s fastest epoch. The target for (3), which does the same
arithmetic as (1) and adds only the callback machinery, is a ratio of at most 1.05 at batch size 64.

Usage: python bench/learner.py [--bs 64] [--repeats 7] [--n 50000] [--threads N]
"""
import argparse
import contextlib
import io
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from exp.nb_03 import ArrayDataset, accuracy, fit, get_dls, get_model
from exp.nb_04 import AvgStatsCallback, DataBunch, Learner, ProgressCallback
from exp.nb_05 import ParamScheduler, sched_one_cycle

Run = Callable[[], tuple[float, float]]


def make_dls(n: int, n_valid: int, bs: int, seed: int = 0) -> tuple:
    "Lesson 03 DataLoaders over random MNIST-shaped data: `n` training rows, `n_valid` validation rows."
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n + n_valid, 784, generator=g), torch.randint(0, 10, (n + n_valid,), generator=g)
    return get_dls(ArrayDataset(x[:n], y[:n]), ArrayDataset(x[n:], y[n:]), bs)


def fresh_model(lr: float = 0.2) -> tuple:
    "The lessons' model and SGD optimizer, identically initialised; also resets the shuffling RNG."
    torch.manual_seed(42)
    return get_model(784, 50, 10, lr)


def plain_fit(dls: tuple) -> Run:
    "(1): lesson 03's fit for one epoch."
    def run() -> float:
        model, opt = fresh_model()
        t, c = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()): fit(1, model, F.cross_entropy, opt, *dls)
        return time.perf_counter() - t, time.process_time() - c
    return run


def learner(dls: tuple, make_cbs: Callable[[], list]) -> Run:
    "(2)/(3): a Learner with the callbacks `make_cbs()` for one epoch."
    def run() -> float:
        model, opt = fresh_model()
        learn = Learner(model, opt, F.cross_entropy, DataBunch(*dls, c=10), cbs=make_cbs())
        t, c = time.perf_counter(), time.process_time()
        learn.fit(1)
        return time.perf_counter() - t, time.process_time() - c
    return run


def full_cbs(train_metrics: bool) -> Callable[[], list]:
    "Stats, an lr scheduler, and a progress bar that is switched off."
    def make() -> list:
        return [AvgStatsCallback([accuracy], show=False, train_metrics=train_metrics),
                ParamScheduler('lr', sched_one_cycle(0.008, 0.2, 2e-5)), ProgressCallback(show=False)]
    return make


def event_cost_us(make_cbs: Callable[[], list], dls: tuple, n: int = 5000) -> float:
    "CPU microseconds that the six per-batch training events cost with these callbacks (no model work)."
    model, opt = fresh_model()
    xb, yb = next(iter(dls[0]))
    learn = Learner(model, opt, F.cross_entropy, DataBunch([(xb, yb)], [(xb, yb)], c=10), cbs=make_cbs())
    learn.fit(1)                                        # sets everything up once
    learn._build_handlers()
    learn('begin_fit'); learn.epochs, learn.epoch, learn.dl, learn.iters = 1, 0, dls[0], 10 ** 9
    learn('begin_epoch')
    learn.xb, learn.yb = xb, yb
    learn.pred = model(xb); learn.loss = F.cross_entropy(learn.pred, yb)
    events = ['begin_batch', 'after_pred', 'after_loss', 'after_backward', 'after_step', 'after_batch']
    best = float('inf')
    for _ in range(5):
        c = time.process_time()
        for _ in range(n):
            for e in events: learn(e)
        best = min(best, (time.process_time() - c) / n * 1e6)
    return best


def measure(ways: dict[str, Run], repeats: int) -> dict[str, list[tuple[float, float]]]:
    "One warm-up run of each way, then `repeats` interleaved rounds; (wall, CPU) seconds per run."
    for run in ways.values(): run()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in ways}
    for _ in range(repeats):
        for k, run in ways.items(): times[k].append(run())
    return times


def report(times: dict[str, list[tuple[float, float]]], base: str) -> None:
    "Print median wall seconds per epoch (min, max) and its ratio to `base`; also the ratio of median CPU times."
    med = {k: (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts)) for k, ts in times.items()}
    bw, bc = med[base]
    print(f"{'way':<42}{'median s':>9}{'min s':>8}{'max s':>8}{'ratio':>7}{'CPU ratio':>11}")
    for k, ts in times.items():
        w = [t for t, _ in ts]
        print(f'{k:<42}{med[k][0]:9.3f}{min(w):8.3f}{max(w):8.3f}{med[k][0] / bw:7.3f}{med[k][1] / bc:11.3f}')
    print('ratio: median wall-clock time over that of (1); CPU ratio: the same for process CPU time, '
          'steadier on a busy machine')


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--n', type=int, default=50_000, help='training rows (validation: n/5)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch decides)')
    a = p.parse_args(argv)
    if a.bs < 1 or a.repeats < 1 or a.n < 5: p.error('--bs and --repeats must be >= 1 and --n >= 5')
    if a.threads: torch.set_num_threads(a.threads)
    dls = make_dls(a.n, a.n // 5, a.bs)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {a.n:,} + {a.n // 5:,} rows,'
          f' batch size {a.bs}, '
          f'{len(dls[0])} + {len(dls[1])} batches per epoch, {a.repeats} repeats')
    ways = {'(1) fit (lesson 03)': plain_fit(dls),
            '(2) Learner': learner(dls, list),
            '(3) Learner + stats + scheduler + bar off': learner(dls, full_cbs(False)),
            '(4) = (3) + train accuracy': learner(dls, full_cbs(True))}
    times = measure(ways, a.repeats)
    report(times, '(1) fit (lesson 03)')
    per_batch = min(w for w, _ in times['(1) fit (lesson 03)']) / (len(dls[0]) + len(dls[1])) * 1e6
    print(f'\ncallback machinery alone, per training batch (CPU time, best of 5 rounds), '
          f"against {per_batch:.0f} us per batch in (1)'s fastest epoch")
    for k, make in [('(2) Learner', list), ('(3) stats + scheduler + bar off', full_cbs(False)),
                    ('(4) = (3) + train accuracy', full_cbs(True))]:
        us = event_cost_us(make, dls)
        print(f'{k:<42}{us:8.1f} us  = {us / per_batch:6.1%} of (1) per batch')
    return 0


if __name__ == '__main__':
    sys.exit(main())
