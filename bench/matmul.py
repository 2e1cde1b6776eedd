"""Time the matrix multiplications of nbs/01_matmul.ipynb against torch's `@`.

    python bench/matmul.py               # versions on torch's default threads (as the lesson times them)
    python bench/matmul.py --threads 1   # versions on one thread

Prints µs per call and the ratio to `@` for every version on (5x784)@(784x10) and (10000x784)@(784x10),
where the two loop versions are timed on a few rows and scaled linearly (marked `~`), then `@`'s GFLOP/s
on a 2048x2048 by 2048x2048 product, on one thread and on all of torch's default threads. Every table
and line says how many threads it used.
Random tensors, fixed seed; no data file needed. Takes well under a minute.
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch

from exp.nb_01 import matmul_broadcast, matmul_einsum, matmul_elementwise, matmul_loops, timeit_us

Matmul = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# name, function, rows to time when estimating (None: time the whole product), repeats
VERSIONS: list[tuple[str, Matmul, int | None, int]] = [
    ('loops', matmul_loops, 2, 3),
    ('elementwise', matmul_elementwise, 100, 3),
    ('broadcast', matmul_broadcast, None, 5),
    ('einsum', matmul_einsum, None, 50),
    ('@', lambda a, b: a @ b, None, 50),
]
CASES = [(5, 784, 10), (10_000, 784, 10)]
SQUARE = 2048


def gflops(n: int, k: int, m: int, us: float) -> float:
    "GFLOP/s of an (n,k)@(k,m) product that took `us` microseconds."
    return 2 * n * k * m / (us * 1e-6) / 1e9


def time_version(f: Matmul, a: torch.Tensor, b: torch.Tensor, est_rows: int | None, reps: int) -> tuple[float, bool]:
    "µs per call of `f(a, b)`, and whether it was estimated by timing `est_rows` rows and scaling linearly."
    if est_rows is None or est_rows >= len(a):
        return timeit_us(f, a, b, n=reps), False
    return timeit_us(f, a[:est_rows], b, n=reps) * len(a) / est_rows, True


def bench_case(n: int, k: int, m: int) -> list[dict]:
    "Time every version on a random (n,k)@(k,m) product; one dict per version."
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, k, generator=g), torch.randn(k, m, generator=g)
    rows = []
    for name, f, est_rows, reps in VERSIONS:
        us, est = time_version(f, a, b, est_rows if n > 5 else None, reps)
        rows.append(dict(version=name, us=us, est=est, gflops=gflops(n, k, m, us)))
    at = next(r['us'] for r in rows if r['version'] == '@')
    for r in rows: r['ratio'] = r['us'] / at
    return rows


def fmt(x: float, est: bool = False) -> str:
    "A number to a sensible precision, `~` in front when it is an estimate."
    s = f'{x:,.0f}' if x >= 100 else f'{x:.1f}' if x >= 1 else f'{x:.2g}'
    return ('~' if est else '') + s


def print_case(n: int, k: int, m: int, rows: list[dict]) -> None:
    "Print one case as a small table."
    print(f'\n({n}x{k}) @ ({k}x{m}), {torch.get_num_threads()} thread(s)')
    print(f"  {'version':<12}{'µs/call':>16}{'x @':>14}{'GFLOP/s':>10}")
    for r in rows:
        print(f"  {r['version']:<12}{fmt(r['us'], r['est']):>16}{fmt(r['ratio'], r['est']):>14}"
              f"{fmt(r['gflops'], r['est']):>10}")


def bench_square(threads: int) -> float:
    "GFLOP/s of `@` on a SQUARE^3 product with `threads` threads."
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(SQUARE, SQUARE, generator=g), torch.randn(SQUARE, SQUARE, generator=g)
    torch.set_num_threads(threads)
    return gflops(SQUARE, SQUARE, SQUARE, timeit_us(lambda a, b: a @ b, A, B, n=3))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_threads = torch.get_num_threads()
    p.add_argument('--threads', type=int, default=default_threads,
                   help=f"torch threads for the version table (default: torch's default, {default_threads} here)")
    args = p.parse_args(argv)
    if args.threads < 1: p.error('--threads must be at least 1')
    torch.set_num_threads(args.threads)
    results = {}
    for case in CASES:
        results[case] = bench_case(*case)
        print_case(*case, results[case])
    few = {r['version']: r for r in results[CASES[0]]}
    ratio = few['broadcast']['ratio']
    print(f'\nbroadcast / @ on {CASES[0][0]} rows, {args.threads} thread(s): {ratio:.1f}x '
          f"({few['broadcast']['us'] / CASES[0][0]:.1f} µs of broadcast per row, {few['@']['us']:.1f} µs for all of @)")
    print(f'\n@ on {SQUARE}x{SQUARE} by {SQUARE}x{SQUARE}:')
    for t in sorted({1, default_threads}):
        print(f'  {t} thread(s): {bench_square(t):,.1f} GFLOP/s')
    print('\n~ = estimated: timed on a few rows, scaled linearly to all rows')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
