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
import torch
import torch.nn.functional as F
from common import BenchArgs, clock, epoch_table, event_cost_us, fastest, interleave, machine, random_rows, verdict
from torch import optim

from exp.all import (
    ActivationStats,
    ArrayDataset,
    AvgStatsCallback,
    BatchTransformXCallback,
    DataBunch,
    DeviceCallback,
    Hooks,
    Learner,
    accuracy,
    default_device,
    eval_mode,
    get_cnn_model,
    get_dls,
    init_cnn,
    mnist_resize,
)

NFS, GR = [16, 32, 64, 64], dict(leak=0.1, sub=0.4, maxv=6.)


def fresh(device):
    "The lesson's CNN, identically initialised, and its optimizer; also resets the shuffling RNG."
    torch.manual_seed(42)
    model = init_cnn(get_cnn_model(DataBunch(None, None, c=10), NFS, **GR), a=0.1).to(device)
    return model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def plain_epoch(model, opt, dls, device):
    "(1): one epoch by hand, with the statistics AvgStatsCallback would compute."
    tot, k = 0., 0
    for xb, yb in dls[0]:
        xb, yb = mnist_resize(xb.to(device)), yb.to(device)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(); loss.backward(); opt.step()
        tot, k = tot + loss.item() * len(yb), k + len(yb)
    vl, va, kv = 0., 0., 0
    with eval_mode(model):
        for xb, yb in dls[1]:
            xb, yb = mnist_resize(xb.to(device)), yb.to(device)
            out = model(xb)
            vl += F.cross_entropy(out, yb).item() * len(yb)
            va, kv = va + float(accuracy(out, yb)) * len(yb), kv + len(yb)


def learner(dls, device, *extra):
    "(2)-(4): the Learner with device, reshape and stats callbacks, plus `extra`."
    cbs = [DeviceCallback(device), BatchTransformXCallback(mnist_resize),
           AvgStatsCallback([accuracy], show=False, train_metrics=False), *extra]
    return Learner(*fresh(device), F.cross_entropy, DataBunch(*dls, c=10), cbs=cbs)


def hook_cost_us(device, bs, hist_items=8, n=30):
    "CPU microseconds of one training batch's forward+backward without and with ActivationStats' hooks."
    model, _ = fresh(device)
    g = torch.Generator().manual_seed(0)
    xb, yb = torch.randn(bs, 1, 28, 28, generator=g).to(device), torch.randint(0, 10, (bs,), generator=g).to(device)
    one = lambda: F.cross_entropy(model(xb), yb).backward()
    def best():
        one()                                                          # warm-up
        return min(clock(lambda: [one() for _ in range(n)], device=device)[1] for _ in range(5)) / n * 1e6
    plain = best()
    with Hooks([m for m in model.children() if next(m.parameters(), None) is not None],
               ActivationStats(hist_items=hist_items).f):
        return plain, best()


def main(argv=None):
    p = BenchArgs(__doc__, bs=64, repeats=3, n=50_000)
    p.add_argument('--device', default=None, help='default: default_device()')
    a = p.parse_args(argv)
    if a.n < 5: p.error('--n must be at least 5')
    device = torch.device(a.device) if a.device else default_device()
    x, y = random_rows(a.n + a.n // 5)
    dls = get_dls(ArrayDataset(x[:a.n], y[:a.n]), ArrayDataset(x[a.n:], y[a.n:]), a.bs)
    print(f'{machine()}, device {device}, {a.n:,} + {a.n // 5:,} rows, '
          f'batch size {a.bs}, {len(dls[0])} + {len(dls[1])} batches per epoch, {a.repeats} repeats')
    one, two, three, four = ways = ['(1) plain loop', '(2) Learner + device + reshape + stats',
                                    '(3) (2) + ActivationStats', '(4) (2) + ActivationStats, full histograms']
    extras = {two: list, three: lambda: [ActivationStats()], four: lambda: [ActivationStats(hist_items=a.bs)]}
    runs = {one: lambda: clock(plain_epoch, *fresh(device), dls, device, device=device)}
    runs |= {k: lambda k=k: clock(learner(dls, device, *extras[k]()).fit, 1, device=device) for k in ways[1:]}
    times = interleave(runs, a.repeats)
    both = epoch_table(times, one, two)
    med, cpu = ({k: m[i] for k, m in both.items()} for i in (0, 1))
    print('ratios of median wall-clock times; CPU: the same for process CPU time, steadier on a busy machine '
          '(on a GPU the CPU time does not count the GPU work)')
    r, rc = med[two] / med[one], cpu[two] / cpu[one]
    print(f'\nLearner with callbacks / plain loop: {r:.3f} wall, {rc:.3f} CPU ({verdict(r, 1.05)} by wall-clock time)')
    per_batch = fastest(times)[one] / (len(dls[0]) + len(dls[1])) * 1e6
    print(f'\ncallbacks alone, per training batch (CPU time, best of 5 rounds, model work left out), '
          f"against {per_batch:.0f} us per batch in (1)'s fastest epoch:")
    xb, yb = next(iter(dls[0]))
    us = event_cost_us(learner([[(xb, yb)]] * 2, device), xb, yb)
    print(f'  {two:<44}{us:8.1f} us = {us / per_batch:6.1%} of (1) per batch')
    for label, items in [('8 items (default)', 8), ('full batch', a.bs)]:
        plain, hooked = hook_cost_us(device, a.bs, items)
        print(f'forward+backward of one batch (CPU time, best of 5 rounds) without hooks {plain:.0f} us, with '
              f'ActivationStats hooks, histograms of {label}, {hooked:.0f} us: {hooked / plain - 1:+.1%}')
    print(f'\nactivation statistics cost per epoch: {med[three] - med[two]:+.2f} s ({med[three] / med[two] - 1:+.1%} '
          f'wall, {cpu[three] / cpu[two] - 1:+.1%} CPU); with full histograms {med[four] / med[two] - 1:+.1%} wall, '
          f'{cpu[four] / cpu[two] - 1:+.1%} CPU')


if __name__ == '__main__':
    main()
