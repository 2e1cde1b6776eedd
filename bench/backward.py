"""Hand-written backward pass (exp.nb_02.FastModel) against nn.Module + autograd: time and peak memory.

    python bench/backward.py                 # timings, per-step breakdown, peak memory (about a minute)
    python bench/backward.py --reps 30       # more timed rounds
    python bench/backward.py --no-memory     # timings only
    python bench/backward.py --rows 500      # a smaller batch (random numbers), a smoke test of seconds

The model is lesson 2's: 784 -> 50 -> ReLU -> 1 with an MSE loss, run forward and backward on one batch
of 50,000 rows (full MNIST's training set when data/mnist.pkl.gz is present, else random numbers of the
same shape: the timings and the memory do not depend on the values). Both sides do the same work:
autograd gets the same weights (transposed into nn.Linear's layout) and the same loss function, and
computes the input's gradient only when asked, so we compare two pairs, with and without it. Before each
run the previous gradients are dropped (x.g / x.grad, the parameters' grads), as optimizer.zero_grad()
does. The target: FastModel / autograd at most 1.10x, forward + backward, in both pairs (the lesson's
plain Model, which always computes x.g, is timed for reference, with no target). One torch thread;
variants are interleaved round by round so that a noisy machine slows all of
them alike; the figures are medians, and the ratios come from this one run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from common import BenchArgs, interleave, machine, medians, table
from torch import nn
from torch.profiler import ProfilerActivity, profile

from exp.all import FastLin, FastModel, Model, data_dir, get_data, is_full_mnist, mse
from exp.nb_02 import normalize

N_IN, NH = 784, 50


class LinMatmul(FastLin):
    "FastLin with the weight gradient written `inp.t() @ out.g` (the lesson's second form)."
    def bwd(self, out, inp, inp_grad=True):
        self.w.g, self.b.g = inp.t() @ out.g, out.g.sum(0)
        if inp_grad: inp.g = out.g @ self.w.t()


class LinEinsum(FastLin):
    "FastLin with the weight gradient written as an einsum."
    def bwd(self, out, inp, inp_grad=True):
        self.w.g, self.b.g = torch.einsum('bi,bj->ij', inp, out.g), out.g.sum(0)
        if inp_grad: inp.g = out.g @ self.w.t()


def make_params(seed=0):
    "Kaiming-initialised w1, b1, w2, b2 as in the lesson."
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(N_IN, NH, generator=g) * (2 / N_IN) ** 0.5, torch.zeros(NH),
            torch.randn(NH, 1, generator=g) / NH ** 0.5, torch.zeros(1)]


def synthetic_batch(rows, seed=0):
    "Random data of the batch's shape: normalised-looking inputs and digit-like float targets."
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, N_IN, generator=g), torch.randint(0, 10, (rows,), generator=g).float()


def load_batch(rows):
    "Full MNIST's normalised training set if data/mnist.pkl.gz is there (and `rows` is 50,000), else random numbers."
    if rows == 50_000 and (data_dir() / 'mnist.pkl.gz').exists():
        x, y, _, _ = get_data()
        if is_full_mnist(x): return normalize(x, x.mean(), x.std()), y.float(), 'full MNIST training set'
    return *synthetic_batch(rows), 'random numbers' + (' (full MNIST not found)' if rows == 50_000 else '')


def clear_grads(x, requires_grad=False):
    "Drop a previous run's input gradient, under either name, and set whether autograd tracks `x`."
    x.g = x.grad = None
    x.requires_grad_(requires_grad)


def hand_fns(x, y, inp_grad, lin_cls=FastLin):
    "reset/forward/backward closures for FastModel (with `lin_cls`'s backward), or the plain Model (`lin_cls` None)."
    params = make_params()
    model = Model(*params) if lin_cls is None else FastModel(*params)
    if lin_cls is not None: model.layers[0], model.layers[2] = lin_cls(*params[:2]), lin_cls(*params[2:])
    return (lambda: clear_grads(x), lambda: model(x, y),
            model.backward if lin_cls is None else lambda: model.backward(inp_grad))


def torch_fns(x, y, inp_grad):
    "reset/forward/backward closures for the same network with nn.Linear and autograd; `inp_grad`: x.requires_grad."
    w1, b1, w2, b2 = make_params()
    layers, state = nn.Sequential(nn.Linear(N_IN, NH), nn.ReLU(), nn.Linear(NH, 1)), {}
    with torch.no_grad():
        for lt, w, b in ((layers[0], w1, b1), (layers[2], w2, b2)): lt.weight.copy_(w.t()); lt.bias.copy_(b)
    def reset(): layers.zero_grad(set_to_none=True); clear_grads(x, inp_grad)
    def fwd(): state['loss'] = mse(layers(x), y)
    return reset, fwd, lambda: state.pop('loss').backward()


VARIANTS = {
    'FastModel, with x.g':            lambda x, y: hand_fns(x, y, True),
    'autograd, with x.grad':          lambda x, y: torch_fns(x, y, True),
    'FastModel, without x.g':         lambda x, y: hand_fns(x, y, False),
    'autograd, without x.grad':       lambda x, y: torch_fns(x, y, False),
    'Fast w.g=inp.t()@out.g, no x.g': lambda x, y: hand_fns(x, y, False, LinMatmul),
    'Fast w.g=einsum, no x.g':        lambda x, y: hand_fns(x, y, False, LinEinsum),
    'plain Model, with x.g':          lambda x, y: hand_fns(x, y, True, None),
}
PAIRS = [('FastModel, with x.g', 'autograd, with x.grad'), ('FastModel, without x.g', 'autograd, without x.grad'),
         ('Fast w.g=inp.t()@out.g, no x.g', 'autograd, without x.grad'),
         ('Fast w.g=einsum, no x.g', 'autograd, without x.grad')]
REFERENCE_PAIRS = [('plain Model, with x.g', 'autograd, with x.grad')]   # printed, no target


def timed(reset, fwd, bwd):
    "A function that resets, then returns the seconds of the forward and of the backward pass."
    def run():
        reset(); t0 = time.perf_counter(); fwd(); t1 = time.perf_counter(); bwd()
        return t1 - t0, time.perf_counter() - t1
    return run


def print_times(x, y, reps):
    "Median forward and backward ms of every variant, interleaved round by round after two warm-ups; the ratios."
    times = medians(interleave({k: timed(*make(x, y)) for k, make in VARIANTS.items()}, reps, warmup=2))
    clear_grads(x)
    print(f'\nTime: median of {reps} interleaved rounds, ms')
    table(['variant', 'forward', 'backward', 'total'], [[k, f * 1e3, b * 1e3, (f + b) * 1e3]
                                                        for k, (f, b) in times.items()], '{:.1f}')
    rows = []
    for a, b in PAIRS + REFERENCE_PAIRS:
        rt = sum(times[a]) / sum(times[b])
        note = ("(the lesson's main line, no target)" if (a, b) in REFERENCE_PAIRS else
                '' if rt <= 1.10 else '> 1.10x target')
        rows.append([f'{a} / {b}', times[a][1] / times[b][1], rt, note])
    print()
    table(['ratio (this run)', 'backward', 'fwd+bwd', ''], rows, ['{:.2f}x', '{:.2f}x', '{}'])


def breakdown(x, y, reps):
    "Where the time goes: our backward step by step, and autograd's backward ops from the profiler."
    model = FastModel(*make_params())
    steps = {k: [] for k in ('Mse', 'Lin 2', 'Relu', 'Lin 1 (w, b)', 'Lin 1 (x.g)')}
    for i in range(reps + 1):
        clear_grads(x); model(x, y)
        l1, r, l2 = model.layers
        inp, out = l1.args[0], l1.out
        for k, f in zip(steps, (model.loss.backward, l2.backward, r.backward, lambda: l1.backward(False),
                                lambda: setattr(inp, 'g', out.g @ l1.w.t()))):
            t0 = time.perf_counter(); f(); dt = time.perf_counter() - t0
            if i: steps[k].append(dt)
    print('\nWhere the time goes, our FastModel.backward() step by step (median ms):')
    print('  ' + '   '.join(f'{k} {statistics.median(v) * 1e3:.1f}' for k, v in steps.items()))
    run = timed(*torch_fns(x, y, True))
    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps): run()
    clear_grads(x)
    ops = sorted((e for e in prof.key_averages() if e.self_cpu_time_total > 0.005 * reps * 1e3),
                 key=lambda e: -e.self_cpu_time_total)
    print('autograd with x.grad, forward + backward, ops by self time (mean ms per run):')
    print('  ' + '   '.join(f'{e.key} {e.self_cpu_time_total / reps / 1e3:.1f}' for e in ops[:8]))


def profiler_peak(fwd, bwd):
    "Peak bytes live at once among the blocks torch allocates during fwd() + bwd() (from the profiler's events)."
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fwd(); bwd()
    with tempfile.TemporaryDirectory() as d:
        prof.export_chrome_trace(f'{d}/trace.json')
        with open(f'{d}/trace.json') as f: events = json.load(f)['traceEvents']
    live, now, peak = {}, 0, 0
    for e in sorted((e for e in events if e.get('name') == '[memory]'), key=lambda e: e['ts']):
        addr, n = e['args']['Addr'], e['args']['Bytes']
        if n > 0: live[addr] = n; now += n
        elif addr in live: now -= live.pop(addr)   # frees of blocks from before the run don't count
        peak = max(peak, now)
    return peak


def _proc_status():
    "VmRSS and VmHWM (peak RSS of this process's memory map) in KiB, from /proc/self/status."
    with open('/proc/self/status') as f:
        return {k: int(v.split()[0]) for k, v in (l.split(':', 1) for l in f) if k in ('VmRSS', 'VmHWM')}


def rss_child(variant, rows):
    "Child process: print JSON with the resident set before and at the peak of 3 runs of `variant` (KiB)."
    reset, fwd, bwd = VARIANTS[variant](*synthetic_batch(rows))
    try:   # restart the peak counter at the current RSS, so that setup's transient peaks don't hide ours
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        base = _proc_status()['VmRSS']
    except OSError: base = _proc_status()['VmHWM']
    for _ in range(3): reset(); fwd(); bwd()
    print(json.dumps({'base_kib': base, 'peak_kib': _proc_status()['VmHWM']}))


def rss_peak(variant, rows):
    "Run `variant` in its own process (glibc told to mmap big blocks, so freed memory leaves RSS)."
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='131072')
    p = subprocess.run([sys.executable, __file__, '--rss-child', variant, '--rows', str(rows)],
                       capture_output=True, text=True, env=env)
    if p.returncode: raise SystemExit(f'bench/backward.py: memory child for {variant!r} failed: {p.stderr[-500:]}')
    return json.loads(p.stdout.strip().splitlines()[-1])


def print_memory(x, y):
    main, mib = [v for pair in PAIRS[:2] for v in pair], 2 ** 20
    inp_mib = x.numel() * x.element_size() / mib
    print(f'\nPeak memory. Fair comparison: both sides start from the same tensors (the {len(x):,} x {N_IN} input,')
    print("the targets, the weights) and have dropped the previous run's gradients; we count what one")
    print('forward + backward adds on top of that (the gradients it leaves behind included).')
    print(f'  input x alone: {inp_mib:.1f} MiB')
    print('(a) torch.profiler: peak of the bytes torch allocates during one run, after a warm-up run:')
    peaks = {}
    for v in main:
        reset, fwd, bwd = VARIANTS[v](x, y)
        reset(); fwd(); bwd(); reset()
        peaks[v] = profiler_peak(fwd, bwd)
    clear_grads(x)
    for v in main: print(f'  {v:28s}{peaks[v] / mib:8.1f} MiB')
    for a, b in PAIRS[:2]:
        print(f'  {a} / {b}: {peaks[a] / peaks[b]:.3f}x added memory, '
              f'{(peaks[a] / mib + inp_mib) / (peaks[b] / mib + inp_mib):.3f}x counting the input')
    print('(b) peak resident set size (VmHWM, what ru_maxrss reports, read per process because ru_maxrss')
    print("    can carry the parent's peak over exec), each variant alone in a fresh process on random data of")
    print('    the same shape, 3 runs; "added" is the peak minus the RSS after setup (imports, data, weights):')
    rss = {v: rss_peak(v, len(x)) for v in main}
    for v, r in rss.items():
        print(f'  {v:28s} process peak {r["peak_kib"] / 1024:8.1f} MiB'
              f'   added {(r["peak_kib"] - r["base_kib"]) / 1024:7.1f} MiB')
    for a, b in PAIRS[:2]:
        da, db = (rss[v]['peak_kib'] - rss[v]['base_kib'] for v in (a, b))
        print(f'  {a} / {b}: {da / db if db else float("nan"):.3f}x added,'
              f' {rss[a]["peak_kib"] / rss[b]["peak_kib"]:.3f}x process peak')


def main(argv=None):
    p = BenchArgs(__doc__, threads=1, reps=15, rows=50_000)
    p.add_argument('--no-memory', action='store_true', help='skip the memory measurements')
    p.add_argument('--rss-child', metavar='VARIANT', choices=VARIANTS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.rss_child: return rss_child(a.rss_child, a.rows)
    x, y, what = load_batch(a.rows)
    print(f'Data: {what}, x {tuple(x.shape)}. {machine()}.')
    print_times(x, y, a.reps)
    breakdown(x, y, min(a.reps, 5))
    if not a.no_memory: print_memory(x, y)


if __name__ == '__main__':
    main()
