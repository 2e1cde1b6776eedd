"""Benchmark: time to accuracy of lesson 11's recipe, ours against a plain PyTorch loop, on full Fashion-MNIST.

The same model (xresnet18, the same initial weights), the same data and the same batches (each side's sampler is
seeded the same way), the same hyper-parameters, trained twice, epochs interleaved (ours, plain, ours, plain, ...)
so that both see the same machine load:

  ours:  Learner + callbacks (DeviceCallback, ChannelsLastCallback, ParamScheduler one-cycle, AvgStatsCallback)
         + lesson 09's adam_opt(foreach=True), i.e. lesson 11's `xres_learner`
  plain: a for loop with torch.optim.AdamW and torch.optim.lr_scheduler.OneCycleLR (cosine warm-up over the same
         fraction, same start/peak/final learning rates, no momentum cycling), channels_last, no callbacks

Prints the seconds of each epoch (training + validation) for each side, the ratio ours/plain (target: at most 1.05x),
and the time until each first reaches 93.0% validation accuracy. Before that it measures what makes the step fast
on this machine: channels_last on/off and the batch size (a few training steps each, the four settings in turns),
with the thread count.

Usage: python bench/resnet_loop.py [--epochs 5] [--bs 256] [--lr 1e-2] [--threads N] [--no-probe]
       python bench/resnet_loop.py --epochs 1 --subset 2000      # a smoke test of a minute or two
Not run in CI; about 11 minutes on a quiet 2-core machine with the defaults.
"""
import copy
import statistics
import time

import torch
import torch.nn.functional as F
import torch.utils.data as tud
from common import clock, fashion_datasets, interleave, medians, recipe_args, verdict

from exp.all import AvgStatsCallback, Callback, DataBunch, accuracy, eval_mode, xres_learner, xresnet18

TARGET = 0.93
CL = torch.channels_last


def seeded_dls(train_ds, valid_ds, bs, seed):
    "Training loader shuffled by a generator seeded with `seed` (the same batches every time), validation in order."
    g = torch.Generator().manual_seed(seed)
    dl = lambda ds, b, s: tud.DataLoader(ds, batch_size=None, sampler=tud.BatchSampler(s, b, drop_last=False))
    return DataBunch(dl(train_ds, bs, tud.RandomSampler(train_ds, generator=g)),
                     dl(valid_ds, 2 * bs, tud.SequentialSampler(valid_ds)), c=10)


def probe(x, y, bs, n=5):
    "Print images/s of training steps of xresnet18 with channels_last off/on at batch `bs`, and at bs/2 and 2*bs."
    print(f'what makes it fast (training steps of xresnet18, threads {torch.get_num_threads()}, '
          f'mkldnn {torch.backends.mkldnn.is_available()}):')
    def step(channels_last, b):
        m, xb, yb = xresnet18(), x[:b], y[:b]
        if channels_last: m, xb = m.to(memory_format=CL), xb.contiguous(memory_format=CL)
        opt = torch.optim.AdamW(m.parameters(), 1e-3)
        def run(): F.cross_entropy(m(xb), yb).backward(); opt.step(); opt.zero_grad()
        return lambda: clock(run)[0]
    settings = [(False, bs), (True, bs), (True, bs // 2), (True, 2 * bs)]
    for (cl, b), t in medians(interleave({s: step(*s) for s in settings}, n)).items():
        print(f"  channels_last {'on ' if cl else 'off'} batch {b:>3}: {b / t:6.0f} images/s")


class PlainLoop:
    "The plain PyTorch side: model, AdamW, OneCycleLR and loaders; `epoch()` trains one epoch and validates."
    def __init__(self, model, data, epochs, lr, wd, ls, pct_start=0.25, foreach=None):
        self.model, self.data, self.ls = model.to(memory_format=CL), data, ls
        if epochs * len(data.train_dl) * pct_start < 2:
            raise SystemExit(f'resnet_loop: {epochs} epochs of {len(data.train_dl)} batches are too few for OneCycleLR '
                             f'(its warm-up would have under 2 steps); use more epochs or a larger --subset')
        self.opt = torch.optim.AdamW(model.parameters(), lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=wd,
                                     foreach=foreach)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=lr, total_steps=epochs * len(data.train_dl), pct_start=pct_start, anneal_strategy='cos',
            cycle_momentum=False, div_factor=25., final_div_factor=400.)            # ends at lr / 25 / 400 = lr / 1e4

    def epoch(self):
        "One training epoch and one validation pass; returns the validation accuracy."
        m = self.model.train()
        for xb, yb in self.data.train_dl:
            loss = F.cross_entropy(m(xb.contiguous(memory_format=CL)), yb, label_smoothing=self.ls)
            self.opt.zero_grad(); loss.backward(); self.opt.step(); self.sched.step()
        right, n = 0, 0
        with eval_mode(m):
            for xb, yb in self.data.valid_dl:
                right, n = right + (m(xb.contiguous(memory_format=CL)).argmax(1) == yb).sum().item(), n + len(yb)
        return right / n


class Interleave(Callback):
    "Times each of our epochs (begin_epoch to after_epoch), then runs one plain epoch and times it."
    _order = AvgStatsCallback._order + 100            # after the stats callback has its row
    def __init__(self, plain): self.plain, self.ours, self.theirs = plain, [], []
    def begin_epoch(self): self.t0 = time.perf_counter()
    def after_epoch(self):
        self.ours.append((time.perf_counter() - self.t0, self.avg_stats.history[-1]['valid_accuracy']))
        t0 = time.perf_counter(); acc = self.plain.epoch()
        self.theirs.append((time.perf_counter() - t0, acc))
        (so, ao), (sp, ap) = self.ours[-1], self.theirs[-1]
        print(f'epoch {self.epoch + 1}: ours {so:5.1f} s, {ao:.2%} | plain {sp:5.1f} s, {ap:.2%} | '
              f'ratio {so / sp:.3f}x', flush=True)


def main(argv=None):
    p = recipe_args(__doc__, epochs=5)
    p.add_argument('--no-probe', action='store_true', help='skip the channels_last / batch size measurements')
    a = p.parse_args(argv)
    tr, va = fashion_datasets(a.subset)
    if not a.no_probe: probe(tr.x, tr.y, a.bs)
    torch.manual_seed(a.seed)
    model = xresnet18()
    plain = PlainLoop(copy.deepcopy(model), seeded_dls(tr, va, a.bs, a.seed), a.epochs, a.lr, a.wd, a.ls)
    inter = Interleave(plain)
    learn = xres_learner(seeded_dls(tr, va, a.bs, a.seed), lambda c_out: model, lr=a.lr, wd=a.wd, ls=a.ls,
                         cbs=[AvgStatsCallback([accuracy], show=False, train_metrics=False), inter])
    print(f'xresnet18, {len(tr):,} training images, batch {a.bs}, lr {a.lr}, wd {a.wd}, label smoothing {a.ls}, '
          f'{a.epochs} epochs, threads {torch.get_num_threads()}, channels_last on both sides; '
          f'plain AdamW foreach={plain.opt.defaults.get("foreach")} (None: PyTorch default, a per-tensor loop on CPU)',
          flush=True)
    learn.fit(a.epochs)
    mo, mp = (statistics.median(s for s, _ in rows) for rows in (inter.ours, inter.theirs))
    print(f'median seconds per epoch: ours {mo:.1f}, plain {mp:.1f}: ours / plain = {mo / mp:.3f}x '
          f'({verdict(mo / mp, 1.05)})')
    for name, rows in (('ours', inter.ours), ('plain', inter.theirs)):
        ep = next((i + 1 for i, (_, acc) in enumerate(rows) if acc >= TARGET), None)
        t = sum(s for s, _ in rows[:ep]) if ep else None     # seconds until the accuracy first reaches TARGET
        print(f'{name:>5}: final accuracy {rows[-1][1]:.2%}; first >= {TARGET:.1%} after '
              + (f'{t:.0f} s ({ep} epochs)' if t else 'never'))


if __name__ == '__main__':
    main()
