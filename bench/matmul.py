"""Time the matrix multiplications of nbs/01_matmul.ipynb against torch's `@`.

    python bench/matmul.py               # versions on torch's default threads (as the lesson times them)
    python bench/matmul.py --threads 1   # versions on one thread
    python bench/matmul.py --inner 16 --rows 100 --square 64   # a smoke test of seconds

Prints µs per call and the ratio to `@` for every version on (5x784)@(784x10) and (10000x784)@(784x10),
where the two loop versions are timed on a few rows and scaled linearly (marked `~`), then `@`'s GFLOP/s
on a 2048x2048 by 2048x2048 product, on one thread and on all of torch's default threads. Every table
and line says how many threads it used.
Random tensors, fixed seed; no data file needed. Takes well under a minute.
"""
import torch
from common import BenchArgs, table

from exp.all import matmul_broadcast, matmul_einsum, matmul_elementwise, matmul_loops, timeit_us

# name, function, rows to time when estimating (None: time the whole product), repeats
VERSIONS = [('loops', matmul_loops, 2, 3), ('elementwise', matmul_elementwise, 100, 3),
            ('broadcast', matmul_broadcast, None, 5), ('einsum', matmul_einsum, None, 50),
            ('@', lambda a, b: a @ b, None, 50)]


def gflops(n, k, m, us):
    "GFLOP/s of an (n,k)@(k,m) product that took `us` microseconds."
    return 2 * n * k * m / (us * 1e-6) / 1e9


def fmt(x, est=False):
    "A number to a sensible precision, `~` in front when it is an estimate."
    return ('~' if est else '') + (f'{x:,.0f}' if x >= 100 else f'{x:.1f}' if x >= 1 else f'{x:.2g}')


def bench_case(n, k, m):
    "Print µs per call, ratio to `@` and GFLOP/s of every version on a random (n,k)@(k,m) product; return the µs."
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, k, generator=g), torch.randn(k, m, generator=g)
    us, est = {}, {}
    for name, f, rows, reps in VERSIONS:
        est[name] = rows is not None and n > 5 and rows < n
        us[name] = timeit_us(f, a[:rows] if est[name] else a, b, n=reps) * (n / rows if est[name] else 1)
    print(f'\n({n}x{k}) @ ({k}x{m}), {torch.get_num_threads()} thread(s)')
    table(['  version', 'µs/call', 'x @', 'GFLOP/s'], [[f'  {v}'] + [fmt(x, est[v]) for x in
          (t, t / us['@'], gflops(n, k, m, t))] for v, t in us.items()])
    return us


def main(argv=None):
    default = torch.get_num_threads()
    a = BenchArgs(__doc__, threads=default, inner=784, rows=10_000, square=2048).parse_args(argv)
    few = [bench_case(n, a.inner, 10) for n in (5, a.rows)][0]
    print(f"\nbroadcast / @ on 5 rows, {a.threads} thread(s): {few['broadcast'] / few['@']:.1f}x "
          f"({few['broadcast'] / 5:.1f} µs of broadcast per row, {few['@']:.1f} µs for all of @)")
    g, s = torch.Generator().manual_seed(1), a.square
    A, B = torch.randn(s, s, generator=g), torch.randn(s, s, generator=g)
    print(f'\n@ on {s}x{s} by {s}x{s}:')
    for t in sorted({1, default}):
        torch.set_num_threads(t)
        print(f'  {t} thread(s): {gflops(s, s, s, timeit_us(lambda a, b: a @ b, A, B, n=3)):,.1f} GFLOP/s')
    print('\n~ = estimated: timed on a few rows, scaled linearly to all rows')


if __name__ == '__main__':
    main()
