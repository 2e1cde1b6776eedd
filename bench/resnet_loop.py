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
on this machine: channels_last on/off and the batch size (a few training steps each), with the thread count.

Usage: python bench/resnet_loop.py [--epochs 5] [--bs 256] [--lr 1e-2] [--threads N] [--no-probe]
       python bench/resnet_loop.py --epochs 1 --subset 2000      # a smoke test of a minute or two
Not run in CI; about 11 minutes on a quiet 2-core machine with the defaults.
"""
import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
import torch.utils.data as tud

from exp.nb_03 import ArrayDataset, accuracy
from exp.nb_04 import AvgStatsCallback, Callback, DataBunch
from exp.nb_11 import fashion_images, xres_learner, xresnet18

TARGET = 0.93


def seeded_dls(train_ds, valid_ds, bs, seed):
    "Training loader shuffled by a generator seeded with `seed` (the same batches every time), validation in order."
    g = torch.Generator().manual_seed(seed)
    dl = lambda ds, b, s: tud.DataLoader(ds, batch_size=None, sampler=tud.BatchSampler(s, b, drop_last=False))
    train = dl(train_ds, bs, tud.RandomSampler(train_ds, generator=g))
    return train, dl(valid_ds, 2 * bs, tud.SequentialSampler(valid_ds))


def step_seconds(channels_last, bs, x, y, n=5):
    "Median seconds of a training step of a fresh xresnet18 on `bs` images, channels_last or not."
    m, xb, yb = xresnet18(), x[:bs], y[:bs]
    if channels_last: m, xb = m.to(memory_format=torch.channels_last), xb.contiguous(memory_format=torch.channels_last)
    opt, ts = torch.optim.AdamW(m.parameters(), 1e-3), []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        F.cross_entropy(m(xb), yb).backward(); opt.step(); opt.zero_grad()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts[1:])


def probe(x, y):
    "Print images/s of a training step with channels_last off/on at batch 256, and at batch sizes 128/256/512."
    print(f'what makes it fast (training steps of xresnet18, threads {torch.get_num_threads()}, '
          f'mkldnn {torch.backends.mkldnn.is_available()}):')
    for cl, bs in [(False, 256), (True, 256), (True, 128), (True, 512)]:
        t = step_seconds(cl, bs, x, y)
        print(f"  channels_last {'on ' if cl else 'off'} batch {bs:>3}: {bs / t:6.0f} images/s")


class PlainLoop:
    "The plain PyTorch side: model, AdamW, OneCycleLR and loaders; `epoch()` trains one epoch and validates."
    def __init__(self, model, data, epochs, lr, wd, ls, pct_start=0.25, foreach=None):
        self.model, self.data, self.ls = model.to(memory_format=torch.channels_last), data, ls
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
            loss = F.cross_entropy(m(xb.contiguous(memory_format=torch.channels_last)), yb, label_smoothing=self.ls)
            self.opt.zero_grad(); loss.backward(); self.opt.step(); self.sched.step()
        m.eval(); right, n = 0, 0
        with torch.no_grad():
            for xb, yb in self.data.valid_dl:
                pred = m(xb.contiguous(memory_format=torch.channels_last)).argmax(1)
                right, n = right + (pred == yb).sum().item(), n + len(yb)
        return right / n


class Interleave(Callback):
    "Times each of our epochs (begin_epoch to after_epoch), then runs one plain epoch and times it."
    _order = 100
    def __init__(self, plain): self.plain, self.ours, self.theirs = plain, [], []
    def begin_epoch(self): self.t0 = time.perf_counter()
    def after_epoch(self):
        self.ours.append((time.perf_counter() - self.t0, self.avg_stats.history[-1]['valid_accuracy']))
        t0 = time.perf_counter(); acc = self.plain.epoch()
        self.theirs.append((time.perf_counter() - t0, acc))
        (so, ao), (sp, ap) = self.ours[-1], self.theirs[-1]
        print(f'epoch {self.epoch + 1}: ours {so:5.1f} s, {ao:.2%} | plain {sp:5.1f} s, {ap:.2%} | '
              f'ratio {so / sp:.3f}x', flush=True)


def time_to(rows):
    "Seconds until the validation accuracy first reaches TARGET (cumulative epoch times), or None."
    t = 0.
    for s, acc in rows:
        t += s
        if acc >= TARGET: return t
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--epochs', type=int, default=5)
    ap.add_argument('--bs', type=int, default=256)
    ap.add_argument('--lr', type=float, default=1e-2)
    ap.add_argument('--wd', type=float, default=1e-2)
    ap.add_argument('--ls', type=float, default=0.1)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--subset', type=int, default=None, help='only the first N training images (smoke test)')
    ap.add_argument('--no-probe', action='store_true', help='skip the channels_last / batch size measurements')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    full = fashion_images(a.bs)
    tr, va = full.train_ds, full.valid_ds
    if a.subset: tr, va = ArrayDataset(tr.x[:a.subset], tr.y[:a.subset]), ArrayDataset(va.x[:a.subset // 5], va.y[:a.subset // 5])
    if not a.no_probe: probe(tr.x, tr.y)
    torch.manual_seed(a.seed)
    model = xresnet18()
    plain_data = DataBunch(*seeded_dls(tr, va, a.bs, a.seed), c=10)
    plain = PlainLoop(copy.deepcopy(model), plain_data, a.epochs, a.lr, a.wd, a.ls)
    inter = Interleave(plain)
    learn = xres_learner(DataBunch(*seeded_dls(tr, va, a.bs, a.seed), c=10), lambda c_out: model, lr=a.lr, wd=a.wd,
                         ls=a.ls, cbs=[AvgStatsCallback([accuracy], show=False, train_metrics=False), inter])
    print(f'xresnet18, {len(tr):,} training images, batch {a.bs}, lr {a.lr}, wd {a.wd}, label smoothing {a.ls}, '
          f'{a.epochs} epochs, threads {torch.get_num_threads()}, channels_last on both sides; '
          f'plain AdamW foreach={plain.opt.defaults.get("foreach")} (None: PyTorch default, a per-tensor loop on CPU)',
          flush=True)
    learn.fit(a.epochs)
    so, sp = [s for s, _ in inter.ours], [s for s, _ in inter.theirs]
    mo, mp = statistics.median(so), statistics.median(sp)
    print(f'median seconds per epoch: ours {mo:.1f}, plain {mp:.1f}: ours / plain = {mo / mp:.3f}x '
          f"(target <= 1.05x: {'met' if mo / mp <= 1.05 else 'NOT met'})")
    for name, rows in (('ours', inter.ours), ('plain', inter.theirs)):
        t = time_to(rows)
        ep = next((i + 1 for i, (_, acc) in enumerate(rows) if acc >= TARGET), None)
        print(f'{name:>5}: final accuracy {rows[-1][1]:.2%}; first >= {TARGET:.1%} after '
              + (f'{t:.0f} s ({ep} epochs)' if t else 'never'))


if __name__ == '__main__':
    main()
