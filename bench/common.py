"""What the benches share: the command line (--threads and sizes), interleaved repeats summarised by medians,
table printers, random MNIST-shaped rows, the Learner's per-batch event cost, and lesson 11's recipe's options
and data.

A bench imports it with `from common import ...`: Python puts the script's folder first on sys.path. Every
figure a bench prints comes from its own run: the ways it compares take turns, round by round, after untimed
warm-up rounds, so that a noisy machine slows them all alike, and the medians are taken over the rounds.
"""
import argparse
import statistics
import time

import torch

from exp.all import ArrayDataset, fashion_images


class BenchArgs(argparse.ArgumentParser):
    "The bench's docstring as --help, --threads, and one option per size; parse_args() checks them and sets threads."
    def __init__(self, doc, threads=None, **sizes):
        super().__init__(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        self.sizes, many = sizes, isinstance(threads, list)
        self.add_argument('--threads', type=int, default=threads, nargs='+' if many else None,
                          help="torch threads (default: %(default)s; None: torch's own choice)")
        for k, v in sizes.items():
            one = v[0] if isinstance(v, list) else v
            self.add_argument(f"--{k.replace('_', '-')}", type=type(one), default=v,
                              nargs='+' if isinstance(v, list) else None, help='(default: %(default)s)')

    def parse_args(self, argv=None, namespace=None):
        "Parse; sizes must be >= 1 (>= 0 where the default is 0, floats >= 0); a single --threads sets torch's."
        a = super().parse_args(argv, namespace)
        for k, default in dict(self.sizes, threads=[1]).items():
            v = getattr(a, k)
            low = 0 if isinstance(default, float) or default == 0 else 1
            if v is not None and min(v if isinstance(v, list) else [v]) < low:
                self.error(f"--{k.replace('_', '-')} must be at least {low}")
        if isinstance(a.threads, int): torch.set_num_threads(a.threads)
        return a


def machine():
    "torch's version and thread count, for the first line of a bench's output."
    return f'torch {torch.__version__}, {torch.get_num_threads()} thread(s)'


def clock(f, *args, device=None):
    "Wall-clock and process CPU seconds of one call `f(*args)` (a CUDA `device` is waited for at both ends)."
    sync = torch.cuda.synchronize if device is not None and torch.device(device).type == 'cuda' else lambda: None
    sync(); t, c = time.perf_counter(), time.process_time()
    f(*args); sync()
    return time.perf_counter() - t, time.process_time() - c


def interleave(ways, repeats, warmup=1):
    "Call the functions of the dict `ways` in turns: `warmup` untimed rounds, then `repeats`; {name: [results]}."
    for _ in range(warmup):
        for f in ways.values(): f()
    out = {k: [] for k in ways}
    for _ in range(repeats):
        for k, f in ways.items(): out[k].append(f())
    return out


def medians(results):
    "{name: median}: of each component where the results are tuples (e.g. (wall, CPU) from `clock`)."
    return {k: tuple(map(statistics.median, zip(*rs))) if isinstance(rs[0], tuple) else statistics.median(rs)
            for k, rs in results.items()}


def fastest(results):
    "{name: the smallest first component}: the fastest call's wall-clock time, steadier on a busy machine."
    return {k: min(r[0] if isinstance(r, tuple) else r for r in rs) for k, rs in results.items()}


def verdict(ratio, target, most=True):
    "'meets' or 'misses' the target of at most (or at least) `target`x."
    ok = ratio <= target if most else ratio >= target
    return f"{'meets' if ok else 'misses'} the target of at {'most' if most else 'least'} {target:g}x"


def table(header, rows, fmts='{:.3f}'):
    "Print `rows` (a label, then values) under `header`; numbers through `fmts` (one format, or one per column)."
    fmts = [fmts] * (len(header) - 1) if isinstance(fmts, str) else fmts
    text = lambda v: isinstance(v, str) and not v.lstrip('~')[:1].isdigit()      # left-aligned; numbers right
    num = [i > 0 and not all(text(r[i]) for r in rows) for i in range(len(header))]
    cells = [[str(r[0])] + [f.format(v) if isinstance(v, (int, float)) else str(v) for v, f in zip(r[1:], fmts)]
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    for cs in [header] + cells:
        print('  '.join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cs, widths, num)).rstrip())


def epoch_table(times, *bases):
    "Print median, min and max of each way's (wall, CPU) seconds and the ratios of the medians to each of `bases`."
    med, tag = medians(times), lambda b: b.split()[0]
    table(['way', 'median s', 'min s', 'max s'] + [f'/ {tag(b)}' for b in bases] + [f'CPU / {tag(b)}' for b in bases],
          [[k, med[k][0], min(ts)[0], max(ts)[0]] + [med[k][0] / med[b][0] for b in bases]
           + [med[k][1] / med[b][1] for b in bases] for k, ts in times.items()])
    return med


def random_rows(n, shape=(784,), seed=0):
    "Random inputs of `shape` and labels 0-9 for `n` rows, like MNIST's (speed does not depend on the values)."
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def event_cost_us(learn, xb, yb, n=2000):
    "CPU µs of the six events of a training batch, dispatched `n` times (best of 5) with the model's work left out."
    learn.fit(1)                                             # sets everything up once
    learn('begin_fit'); learn.epochs, learn.epoch, learn.dl, learn.iters = 1, 0, learn.data.train_dl, 10 ** 9
    learn('begin_epoch')
    learn.xb, learn.yb = xb, yb; learn('begin_batch')                 # the batch as the callbacks make it
    learn.pred = learn.model(learn.xb); learn.loss = learn.loss_func(learn.pred, learn.yb)
    events, best = ['begin_batch', 'after_pred', 'after_loss', 'after_backward', 'after_step', 'after_batch'], 1e9
    for _ in range(5):
        c = time.process_time()
        for _ in range(n):
            learn.xb = xb
            for e in events: learn(e)
        best = min(best, (time.process_time() - c) / n * 1e6)
    learn('after_fit')
    return best


def recipe_args(doc, epochs):
    "BenchArgs for lesson 11's recipe: --epochs, --bs, --lr, --wd, --ls, --seed, and --subset N (a smoke test)."
    p = BenchArgs(doc, epochs=epochs, bs=256, lr=1e-2, wd=1e-2, ls=0.1, seed=0)
    p.add_argument('--subset', type=int, default=None, help='only the first N training images (N // 5 validation)')
    return p


def fashion_datasets(subset=None):
    "Lesson 11's normalised Fashion-MNIST images (fashion_images), training and validation; or their first images."
    data = fashion_images()
    tr, va = data.train_ds, data.valid_ds
    if not subset: return tr, va
    return ArrayDataset(tr.x[:subset], tr.y[:subset]), ArrayDataset(va.x[:subset // 5], va.y[:subset // 5])
