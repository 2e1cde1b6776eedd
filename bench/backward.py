"""Hand-written backward pass (exp.nb_02.FastModel) against nn.Module + autograd: time and peak memory.

    python bench/backward.py                 # timings, per-step breakdown, peak memory (about a minute)
    python bench/backward.py --reps 30       # more timed rounds
    python bench/backward.py --no-memory     # timings only

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
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

import torch
from torch import nn

from exp.nb_00a import data_dir, get_data, is_full_mnist
from exp.nb_02 import FastLin, FastModel, Model, mse, normalize

ROWS, N_IN, NH = 50_000, 784, 50
Fns = tuple[Callable[[], None], Callable[[], None], Callable[[], None]]  # reset, forward, backward


class LinMatmul(FastLin):
    "FastLin with the weight gradient written `inp.t() @ out.g` (the lesson's second form)."
    def bwd(self, out, inp, inp_grad=True):
        self.w.g = inp.t() @ out.g
        self.b.g = out.g.sum(0)
        if inp_grad: inp.g = out.g @ self.w.t()


class LinEinsum(FastLin):
    "FastLin with the weight gradient written as an einsum."
    def bwd(self, out, inp, inp_grad=True):
        self.w.g = torch.einsum('bi,bj->ij', inp, out.g)
        self.b.g = out.g.sum(0)
        if inp_grad: inp.g = out.g @ self.w.t()


class TorchModel(nn.Module):
    "The same network with nn.Linear and autograd; `forward(x, targ)` returns the loss."
    def __init__(self, params: list[torch.Tensor]) -> None:
        super().__init__()
        w1, b1, w2, b2 = params
        self.layers = nn.Sequential(nn.Linear(N_IN, NH), nn.ReLU(), nn.Linear(NH, 1))
        with torch.no_grad():
            for lt, w, b in ((self.layers[0], w1, b1), (self.layers[2], w2, b2)):
                lt.weight.copy_(w.t()); lt.bias.copy_(b)

    def forward(self, x: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
        return mse(self.layers(x), targ)


def make_params(seed: int = 0) -> list[torch.Tensor]:
    "Kaiming-initialised w1, b1, w2, b2 as in the lesson."
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(N_IN, NH, generator=g) * (2 / N_IN) ** 0.5, torch.zeros(NH),
            torch.randn(NH, 1, generator=g) / NH ** 0.5, torch.zeros(1)]


def synthetic_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    "Random data of the full batch's shape: normalised-looking inputs and digit-like float targets."
    g = torch.Generator().manual_seed(seed)
    return torch.randn(ROWS, N_IN, generator=g), torch.randint(0, 10, (ROWS,), generator=g).float()


def load_batch() -> tuple[torch.Tensor, torch.Tensor, str]:
    "Full MNIST's normalised training set if data/mnist.pkl.gz is there, else a synthetic batch."
    if (data_dir() / 'mnist.pkl.gz').exists():
        x, y, _, _ = get_data()
        if is_full_mnist(x):
            x = normalize(x, x.mean(), x.std())
            return x, y.float(), 'full MNIST training set'
    x, y = synthetic_batch()
    return x, y, 'random numbers (full MNIST not found)'


def clear_grads(x: torch.Tensor) -> None:
    "Drop a previous run's input gradient, under either name."
    x.g = None
    x.grad = None


def hand_fns(x: torch.Tensor, y: torch.Tensor, inp_grad: bool, lin_cls: type = FastLin) -> Fns:
    "reset/forward/backward closures for exp.nb_02.FastModel (optionally with another FastLin's backward)."
    params = make_params()
    model = FastModel(*params)
    model.layers[0], model.layers[2] = lin_cls(*params[:2]), lin_cls(*params[2:])
    def reset() -> None:
        clear_grads(x)
        x.requires_grad_(False)
    def fwd() -> None: model(x, y)
    def bwd() -> None: model.backward(inp_grad)
    return reset, fwd, bwd


def plain_fns(x: torch.Tensor, y: torch.Tensor) -> Fns:
    "reset/forward/backward closures for the lesson's plain exp.nb_02.Model (always computes x.g)."
    model = Model(*make_params())
    def reset() -> None:
        clear_grads(x)
        x.requires_grad_(False)
    def fwd() -> None: model(x, y)
    def bwd() -> None: model.backward()
    return reset, fwd, bwd


def torch_fns(x: torch.Tensor, y: torch.Tensor, inp_grad: bool) -> Fns:
    "reset/forward/backward closures for TorchModel; `inp_grad` sets x.requires_grad."
    model, state = TorchModel(make_params()), {}
    def reset() -> None:
        model.zero_grad(set_to_none=True)
        clear_grads(x)
        x.requires_grad_(inp_grad)
    def fwd() -> None: state['loss'] = model(x, y)
    def bwd() -> None: state.pop('loss').backward()
    return reset, fwd, bwd


VARIANTS: dict[str, Callable[[torch.Tensor, torch.Tensor], Fns]] = {
    'FastModel, with x.g':                lambda x, y: hand_fns(x, y, True),
    'autograd, with x.grad':              lambda x, y: torch_fns(x, y, True),
    'FastModel, without x.g':             lambda x, y: hand_fns(x, y, False),
    'autograd, without x.grad':           lambda x, y: torch_fns(x, y, False),
    'Fast w.g=inp.t()@out.g, no x.g':     lambda x, y: hand_fns(x, y, False, LinMatmul),
    'Fast w.g=einsum, no x.g':            lambda x, y: hand_fns(x, y, False, LinEinsum),
    'plain Model, with x.g':              plain_fns,
}
PAIRS = [('FastModel, with x.g', 'autograd, with x.grad'), ('FastModel, without x.g', 'autograd, without x.grad'),
         ('Fast w.g=inp.t()@out.g, no x.g', 'autograd, without x.grad'),
         ('Fast w.g=einsum, no x.g', 'autograd, without x.grad')]
REFERENCE_PAIRS = [('plain Model, with x.g', 'autograd, with x.grad')]   # printed, no target


def time_variants(x: torch.Tensor, y: torch.Tensor, reps: int) -> dict[str, tuple[float, float]]:
    "Median forward and backward ms of every variant, interleaved round by round after two warm-ups."
    fns = {k: make(x, y) for k, make in VARIANTS.items()}
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in fns}
    for i in range(reps + 2):
        for k, (reset, fwd, bwd) in fns.items():
            reset()
            t0 = time.perf_counter(); fwd(); t1 = time.perf_counter(); bwd(); t2 = time.perf_counter()
            if i >= 2: times[k][0].append(t1 - t0); times[k][1].append(t2 - t1)
        x.requires_grad_(False)
    clear_grads(x)
    return {k: (statistics.median(f) * 1e3, statistics.median(b) * 1e3) for k, (f, b) in times.items()}


def print_times(times: dict[str, tuple[float, float]], reps: int) -> None:
    print(f'\nTime: median of {reps} interleaved rounds, ms')
    print(f'{"variant":34s}{"forward":>9s}{"backward":>10s}{"total":>9s}')
    for k, (f, b) in times.items(): print(f'{k:34s}{f:9.1f}{b:10.1f}{f + b:9.1f}')
    width = max(len(f'{a} / {b}') for a, b in PAIRS + REFERENCE_PAIRS) + 2
    print(f'\n{"ratio (this run)":{width}s}{"backward":>9s}{"fwd+bwd":>9s}')
    for a, b in PAIRS:
        rb, rt = times[a][1] / times[b][1], sum(times[a]) / sum(times[b])
        flag = '' if rt <= 1.10 else '   > 1.10x target'
        print(f'{a + " / " + b:{width}s}{rb:8.2f}x{rt:8.2f}x{flag}')
    for a, b in REFERENCE_PAIRS:
        rb, rt = times[a][1] / times[b][1], sum(times[a]) / sum(times[b])
        print(f'{a + " / " + b:{width}s}{rb:8.2f}x{rt:8.2f}x   (the lesson\'s main line, no target)')


def breakdown(x: torch.Tensor, y: torch.Tensor, reps: int) -> None:
    "Where the time goes: our backward step by step, and autograd's backward ops from the profiler."
    from torch.profiler import ProfilerActivity, profile
    model = FastModel(*make_params())
    steps: dict[str, list[float]] = {k: [] for k in ('Mse', 'Lin 2', 'Relu', 'Lin 1 (w, b)', 'Lin 1 (x.g)')}
    for i in range(reps + 1):
        clear_grads(x)
        model(x, y)
        l1, r, l2 = model.layers
        inp, out = l1.args[0], l1.out
        for k, f in (('Mse', model.loss.backward), ('Lin 2', l2.backward), ('Relu', r.backward),
                     ('Lin 1 (w, b)', lambda: l1.backward(False)),
                     ('Lin 1 (x.g)', lambda: setattr(inp, 'g', out.g @ l1.w.t()))):
            t0 = time.perf_counter(); f(); dt = time.perf_counter() - t0
            if i: steps[k].append(dt)
    clear_grads(x)
    print('\nWhere the time goes, our FastModel.backward() step by step (median ms):')
    print('  ' + '   '.join(f'{k} {statistics.median(v) * 1e3:.1f}' for k, v in steps.items()))
    reset, fwd, bwd = torch_fns(x, y, True)
    reset(); fwd(); bwd()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            reset(); fwd(); bwd()
    x.requires_grad_(False); clear_grads(x)
    ops = sorted((e for e in prof.key_averages() if e.self_cpu_time_total > 0.005 * reps * 1e3),
                 key=lambda e: -e.self_cpu_time_total)
    print('autograd with x.grad, forward + backward, ops by self time (mean ms per run):')
    print('  ' + '   '.join(f'{e.key} {e.self_cpu_time_total / reps / 1e3:.1f}' for e in ops[:8]))


def profiler_peak(fwd: Callable[[], None], bwd: Callable[[], None]) -> int:
    "Peak bytes live at once among the blocks torch allocates during fwd() + bwd() (from the profiler's events)."
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fwd(); bwd()
    fd, path = tempfile.mkstemp(suffix='.json')
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f: events = json.load(f)['traceEvents']
    finally:
        os.remove(path)
    live: dict[int, int] = {}
    now = peak = 0
    for e in sorted((e for e in events if e.get('name') == '[memory]'), key=lambda e: e['ts']):
        addr, n = e['args']['Addr'], e['args']['Bytes']
        if n > 0: live[addr] = n; now += n
        elif addr in live: now -= live.pop(addr)   # frees of blocks from before the run don't count
        peak = max(peak, now)
    return peak


def _proc_status() -> dict[str, int]:
    "VmRSS and VmHWM (peak RSS of this process's memory map) in KiB, from /proc/self/status."
    with open('/proc/self/status') as f:
        return {k: int(v.split()[0]) for k, v in (l.split(':', 1) for l in f) if k in ('VmRSS', 'VmHWM')}


def rss_child(variant: str) -> None:
    "Child process: print JSON with the resident set before and at the peak of 3 runs of `variant` (KiB)."
    torch.set_num_threads(1)
    x, y = synthetic_batch()
    reset, fwd, bwd = VARIANTS[variant](x, y)
    try:   # restart the peak counter at the current RSS, so that setup's transient peaks don't hide ours
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        st = _proc_status(); base = st['VmRSS']
    except OSError:
        st = _proc_status(); base = st['VmHWM']
    for _ in range(3):
        reset(); fwd(); bwd()
    print(json.dumps({'base_kib': base, 'peak_kib': _proc_status()['VmHWM']}))


def rss_peaks(variants: list[str]) -> dict[str, dict[str, int]]:
    "Run each variant in its own process (glibc told to mmap big blocks, so freed memory leaves RSS)."
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='131072')
    out = {}
    for v in variants:
        p = subprocess.run([sys.executable, __file__, '--rss-child', v], capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise SystemExit(f'bench/backward.py: memory child for {v!r} failed: {p.stderr.strip().splitlines()[-1:]}')
        out[v] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def print_memory(x: torch.Tensor, y: torch.Tensor) -> None:
    main = [v for pair in PAIRS[:2] for v in pair]
    mib = 2 ** 20
    print('\nPeak memory. Fair comparison: both sides start from the same tensors (the 50,000 x 784 input,')
    print("the targets, the weights) and have dropped the previous run's gradients; we count what one")
    print('forward + backward adds on top of that (the gradients it leaves behind included).')
    print(f'  input x alone: {x.numel() * x.element_size() / mib:.1f} MiB')
    print('(a) torch.profiler: peak of the bytes torch allocates during one run, after a warm-up run:')
    peaks = {}
    for v in main:
        reset, fwd, bwd = VARIANTS[v](x, y)
        reset(); fwd(); bwd(); reset()
        peaks[v] = profiler_peak(fwd, bwd)
        x.requires_grad_(False)
    clear_grads(x)
    for v in main: print(f'  {v:28s}{peaks[v] / mib:8.1f} MiB')
    inp_mib = x.numel() * x.element_size() / mib
    for a, b in PAIRS[:2]:
        print(f'  {a} / {b}: {peaks[a] / peaks[b]:.3f}x added memory, '
              f'{(peaks[a] / mib + inp_mib) / (peaks[b] / mib + inp_mib):.3f}x counting the input')
    print('(b) peak resident set size (VmHWM, what ru_maxrss reports, read per process because ru_maxrss')
    print("    can carry the parent's peak over exec), each variant alone in a fresh process on random data of")
    print('    the same shape, 3 runs; "added" is the peak minus the RSS after setup (imports, data, weights):')
    rss = rss_peaks(main)
    for v in main:
        r = rss[v]
        print(f'  {v:28s} process peak {r["peak_kib"] / 1024:8.1f} MiB'
              f'   added {(r["peak_kib"] - r["base_kib"]) / 1024:7.1f} MiB')
    for a, b in PAIRS[:2]:
        da, db = (rss[v]['peak_kib'] - rss[v]['base_kib'] for v in (a, b))
        print(f'  {a} / {b}: {da / db if db else float("nan"):.3f}x added,'
              f' {rss[a]["peak_kib"] / rss[b]["peak_kib"]:.3f}x process peak')


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--reps', type=int, default=15, help='timed rounds (default 15)')
    ap.add_argument('--no-memory', action='store_true', help='skip the memory measurements')
    ap.add_argument('--rss-child', metavar='VARIANT', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.rss_child:
        if a.rss_child not in VARIANTS: raise SystemExit(f'bench/backward.py: unknown variant {a.rss_child!r}')
        rss_child(a.rss_child)
        return 0
    if a.reps < 1: raise SystemExit('bench/backward.py: --reps must be at least 1')
    torch.set_num_threads(1)
    x, y, what = load_batch()
    print(f'Data: {what}, x {tuple(x.shape)}. torch {torch.__version__}, {torch.get_num_threads()} thread.')
    times = time_variants(x, y, a.reps)
    print_times(times, a.reps)
    breakdown(x, y, min(a.reps, 5))
    if not a.no_memory: print_memory(x, y)
    return 0


if __name__ == '__main__':
    sys.exit(main())
