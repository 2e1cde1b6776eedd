"""Benchmark: the longer run of lesson 11: xresnet18 on full Fashion-MNIST with data augmentation, target at least
94.5% validation accuracy within 20 epochs (anchors from the 2022 fast.ai course, on a GPU: 94.3% after 20 epochs
for a 5M-parameter model, 94.5% with test-time augmentation).

Lesson 11's recipe (`xres_learner`: adam_opt with weight decay, one-cycle, label smoothing, channels_last) plus
augmentation of the training batches only: random horizontal flips and random crops after padding with the
background value (lesson 10). Prints the accuracy and wall time of every epoch, then the final accuracy without
and with test-time augmentation (TTA: the softmax averaged over each validation image and its mirror image).

Usage: python bench/fashion_resnet.py [--epochs 20] [--lr 1e-2] [--wd 1e-2] [--ls 0.1] [--pad 2] [--bs 256]
                                      [--seed 0] [--threads N] [--subset N]
Not run in CI (about 20 epochs of a minute each on a quiet 2-core CPU).
"""
import time
from functools import partial

import torch
from common import fashion_datasets, recipe_args

from exp.all import (
    AugmentCallback,
    AvgStatsCallback,
    Callback,
    DataBunch,
    accuracy,
    flip_batch,
    get_dls,
    is_full_fashion,
    pad_crop,
    tta,
    xres_learner,
    xresnet18,
)


class EpochPrinter(Callback):
    "Prints each epoch's validation accuracy, its wall time and the time so far (after AvgStatsCallback has its row)."
    _order = AvgStatsCallback._order + 100
    def begin_fit(self): self.t0 = time.perf_counter()
    def after_epoch(self):
        h = self.avg_stats.history[-1]
        print(f"epoch {self.epoch + 1:>2}: valid accuracy {h['valid_accuracy']:.2%}, train loss {h['train_loss']:.4f}, "
              f"{h['time']}, {time.perf_counter() - self.t0:.0f} s so far", flush=True)


def main(argv=None):
    p = recipe_args(__doc__, epochs=20)
    p.add_argument('--pad', type=int, default=2, help='padding of the random crops')
    a = p.parse_args(argv)
    tr, va = fashion_datasets(a.subset)
    data = DataBunch(*get_dls(tr, va, a.bs), c=10)
    bg = float(tr.x.min())                            # a background (black) pixel after normalisation: the padding
    torch.manual_seed(a.seed)
    learn = xres_learner(data, xresnet18, lr=a.lr, wd=a.wd, ls=a.ls,
                         cbs=[AugmentCallback(flip_batch, partial(pad_crop, pad=a.pad, fill=bg)),
                              AvgStatsCallback([accuracy], show=False), EpochPrinter()])
    print(f'xresnet18 ({sum(p.numel() for p in learn.model.parameters()):,} parameters), {a.epochs} epochs, '
          f'lr {a.lr}, wd {a.wd}, label smoothing {a.ls}, batch {a.bs}, seed {a.seed}, '
          f'threads {torch.get_num_threads()}; augmentation: flip_batch + pad_crop(pad={a.pad}, fill={bg:.3f}) '
          f'from exp.nb_10 (lesson 10); {len(tr):,} training images (full Fashion-MNIST: {is_full_fashion(tr.x)})',
          flush=True)
    t0 = time.perf_counter()
    learn.fit(a.epochs)
    wall = time.perf_counter() - t0
    accs = [h['valid_accuracy'] for h in learn.avg_stats.history]
    first = next((i + 1 for i, v in enumerate(accs) if v >= 0.945), None)
    probs, tta_probs, targ = tta(learn.model, learn.data.valid_dl)   # softmax averaged over each image and its mirror
    plain, with_tta = ((p.argmax(1) == targ).float().mean().item() for p in (probs, tta_probs))
    print(f'final validation accuracy after {a.epochs} epochs: {plain:.2%} without TTA, {with_tta:.2%} with TTA (flip)')
    print(f"best epoch {max(accs):.2%}; first epoch at >= 94.5%: {first or 'never'}; {wall:.0f} s in all "
          f"({wall / a.epochs:.0f} s per epoch)")


if __name__ == '__main__':
    main()
