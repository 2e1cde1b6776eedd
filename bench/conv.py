"""Benchmark: lesson 06's from-scratch convolutions (im2col, then one matrix product) against `F.conv2d`.

Three layer shapes of the lesson's CNN, batch 64, stride 2 and padding k//2 as in its `conv_layer`:
  (64,1,28,28) -> 8 filters 5x5,  (64,16,14,14) -> 32 filters 3x3,  (64,32,7,7) -> 64 filters 3x3
each timed forward only (under no_grad) and forward+backward (gradients for input, weight and bias), three ways:
  conv2d       exp.nb_06.conv2d, the lesson's main line (im2col by strided slices + stack, autograd's backward)
  conv2d_fast  exp.nb_06.conv2d_fast, the lesson's "Making it fast" version (patches as a Tensor.unfold view copied
               once, channels-last layout when C >= 8, one 2-D matmul, its own backward: 2 matmuls + col2im)
  F.conv2d     PyTorch's convolution (the reference)
at each thread count of --threads (default 1 and 2; the thread count is printed with the figures).
Prints the median time per call over interleaved repeats and the ratio to F.conv2d, measured in this run, by
median wall-clock, by median process CPU time and by the fastest call (both steadier on a busy machine). The
issue's target, at most 3x F.conv2d, is judged on `conv2d_fast` (the plain `conv2d` is printed for comparison)
by median wall-clock time; the script prints whether it is met.

Usage: python bench/conv.py [--repeats 30] [--bs 64] [--threads 1 2]
"""
import torch
import torch.nn.functional as F
from common import BenchArgs, clock, fastest, interleave, machine, medians, table, verdict

from exp.all import conv2d_fast
from exp.nb_06 import conv2d

SHAPES = [(1, 28, 8, 5), (16, 14, 32, 3), (32, 7, 64, 3)]   # in channels, image size, filters, kernel size
TARGET, JUDGED = 3.0, 'conv2d_fast'
WAYS = {'conv2d': conv2d, 'conv2d_fast': conv2d_fast, 'F.conv2d': F.conv2d}


def measure(bs, ci, n, nf, k, repeats):
    "{(way, pass): [(wall, CPU) seconds of each call]} for both passes of every way, in interleaved rounds."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(bs, ci, n, n, generator=g, requires_grad=True)
    w = (torch.randn(nf, ci, k, k, generator=g) / (ci * k * k) ** 0.5).requires_grad_()
    b = torch.randn(nf, generator=g, requires_grad=True)
    def fwd(conv):
        with torch.no_grad(): conv(x, w, b, 2, k // 2)
    def fwd_bwd(conv):
        conv(x, w, b, 2, k // 2).sum().backward()
        x.grad = w.grad = b.grad = None
    return interleave({(way, kind): lambda f=f, conv=conv: clock(f, conv) for way, conv in WAYS.items()
                       for kind, f in (('fwd', fwd), ('fwd+bwd', fwd_bwd))}, repeats)


def report(bs, repeats):
    "Print the table at the current thread count; return the largest ratios of JUDGED to F.conv2d (wall, CPU, fastest)."
    print(f'\n{machine()}, batch {bs}, stride 2, padding k//2, median of {repeats} interleaved repeats')
    rows, worst = [], (0., 0., 0.)
    for ci, n, nf, k in SHAPES:
        times = measure(bs, ci, n, nf, k, repeats)
        med, low = medians(times), fastest(times)
        for kind in ('fwd', 'fwd+bwd'):
            (ref, ref_cpu), judged = med[('F.conv2d', kind)], med[(JUDGED, kind)]
            ratios = [med[(w, kind)][0] / ref for w in list(WAYS)[:-1]]
            r = (judged[0] / ref, judged[1] / ref_cpu, low[(JUDGED, kind)] / low[('F.conv2d', kind)])
            worst = tuple(map(max, worst, r))
            rows.append([f'({bs},{ci},{n},{n}) -> {nf}, {k}x{k}', kind] + [med[(w, kind)][0] * 1e6 for w in WAYS]
                        + ratios + list(r[1:]))
    table(['input -> filters', 'pass'] + [f'{w} us' for w in WAYS] + [f'ratio {w}' for w in list(WAYS)[:-1]]
          + [f'CPU ratio {JUDGED}', 'fastest ratio'], rows, ['{}'] + ['{:.0f}'] * 3 + ['{:.2f}'] * 4)
    print(f'largest ratio {JUDGED} / F.conv2d at {torch.get_num_threads()} thread(s): {worst[0]:.2f} wall, '
          f'{worst[1]:.2f} CPU, {worst[2]:.2f} fastest-of-{repeats} wall ({verdict(worst[0], TARGET)} by median '
          'wall-clock time)')
    return worst


def main(argv=None):
    a = BenchArgs(__doc__, threads=[1, 2], repeats=30, bs=64).parse_args(argv)
    print('times: median wall-clock microseconds per call; ratios: to F.conv2d; CPU ratio: the same for process CPU '
          'time; fastest ratio: of the fastest calls. On a busy machine a call longer than a scheduler time slice is '
          'often descheduled, which inflates the median wall-clock time of the slower way; CPU time and the fastest '
          'call are then the steadier figures.')
    results = {}
    for t in a.threads:
        torch.set_num_threads(t)
        results[t] = report(a.bs, a.repeats)
    print('\nsummary, ' + JUDGED + ' vs F.conv2d, worst over shapes and passes: ' + '; '.join(
        f'{t} thread(s): {w:.2f}x wall, {c:.2f}x CPU, {m:.2f}x fastest ({verdict(w, TARGET)} by median wall)'
        for t, (w, c, m) in results.items()))


if __name__ == '__main__':
    main()
