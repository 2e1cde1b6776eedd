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
import contextlib
import io

import torch
import torch.nn.functional as F
from common import BenchArgs, clock, epoch_table, event_cost_us, fastest, interleave, machine, random_rows

from exp.all import (
    ArrayDataset,
    AvgStatsCallback,
    DataBunch,
    Learner,
    ParamScheduler,
    ProgressCallback,
    accuracy,
    fit,
    get_dls,
    get_model,
    sched_one_cycle,
)


def fresh_model(lr=0.2):
    "The lessons' model and SGD optimizer, identically initialised; also resets the shuffling RNG."
    torch.manual_seed(42)
    return get_model(784, 50, 10, lr)


def plain_fit(dls):
    "(1): lesson 03's fit for one epoch; (wall, CPU) seconds."
    model, opt = fresh_model()
    with contextlib.redirect_stdout(io.StringIO()): return clock(fit, 1, model, F.cross_entropy, opt, *dls)


def cbs(train_metrics=None):
    "No callbacks (None), or stats, an lr scheduler, and a progress bar that is switched off."
    return [] if train_metrics is None else [
        AvgStatsCallback([accuracy], show=False, train_metrics=train_metrics),
        ParamScheduler('lr', sched_one_cycle(0.008, 0.2, 2e-5)), ProgressCallback(show=False)]


def learner(dls, train_metrics=None):
    "A Learner for one epoch on `dls` with `cbs(train_metrics)`."
    return Learner(*fresh_model(), F.cross_entropy, DataBunch(*dls, c=10), cbs=cbs(train_metrics))


def main(argv=None):
    a = BenchArgs(__doc__, bs=64, repeats=7, n=50_000).parse_args(argv)
    if a.n < 5: raise SystemExit('bench/learner.py: --n must be at least 5')
    x, y = random_rows(a.n + a.n // 5)
    dls = get_dls(ArrayDataset(x[:a.n], y[:a.n]), ArrayDataset(x[a.n:], y[a.n:]), a.bs)
    print(f'{machine()}, {a.n:,} + {a.n // 5:,} rows, batch size {a.bs}, '
          f'{len(dls[0])} + {len(dls[1])} batches per epoch, {a.repeats} repeats')
    cb_sets = {'(2) Learner': None, '(3) Learner + stats + scheduler + bar off': False,
               '(4) = (3) + train accuracy': True}
    epoch = lambda tm: lambda: clock(learner(dls, tm).fit, 1)
    times = interleave({'(1) fit (lesson 03)': lambda: plain_fit(dls)} |
                       {k: epoch(tm) for k, tm in cb_sets.items()}, a.repeats)
    epoch_table(times, '(1) fit (lesson 03)')
    print('/ (1): median wall-clock time over that of (1); CPU / (1): the same for process CPU time, '
          'steadier on a busy machine')
    per_batch = fastest(times)['(1) fit (lesson 03)'] / (len(dls[0]) + len(dls[1])) * 1e6
    print(f'\ncallback machinery alone, per training batch (CPU time, best of 5 rounds), '
          f"against {per_batch:.0f} us per batch in (1)'s fastest epoch")
    xb, yb = next(iter(dls[0]))
    for k, tm in cb_sets.items():
        us = event_cost_us(learner([[(xb, yb)]] * 2, tm), xb, yb, n=5000)
        print(f'{k:<42}{us:8.1f} us  = {us / per_batch:6.1%} of (1) per batch')


if __name__ == '__main__':
    main()
