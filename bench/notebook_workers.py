"""How much does `run_notebook.py --workers 2` save over `--workers 1`?

    python bench/notebook_workers.py                  # 5 notebooks per set, 3 timed repeats
    python bench/notebook_workers.py --n 6 --repeats 5

Small notebooks are dominated by kernel start-up, which is CPU work; on a 2-core machine running two at
once may or may not help, so this measures it. Two sets of tiny notebooks are made in a temp folder:
`bare` (a few cells of plain Python) and `torch` (imports torch and multiplies small matrices, like a
lesson's first cells). Each set is run through run_notebook's runner with workers=1 and workers=2, the
two alternating, after one warm-up run of each; the table shows the median wall time and the ratio.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import fire
import nbformat
from nbformat import v4

from run_notebook import run_notebooks

SETS = {
    'bare': ['import math, os', 'xs = [math.sqrt(i) for i in range(10_000)]\nprint(len(xs))', 'assert xs[4] == 2.0'],
    'torch': ['import torch\ntorch.manual_seed(0)',
              'a, b = torch.randn(64, 64), torch.randn(64, 64)\nc = a @ b\nprint(c.shape)',
              "assert torch.allclose(c, torch.einsum('ik,kj->ij', a, b), atol=1e-4)"],
}


def make_set(folder: Path, cells: list[str], n: int) -> list[Path]:
    "n copies of a tiny notebook, numbered 01_... to n."
    folder.mkdir(parents=True)
    paths = []
    for i in range(1, n + 1):
        nb = v4.new_notebook(cells=[v4.new_code_cell(c) for c in cells])
        path = folder / f'{i:02d}_tiny.ipynb'
        nbformat.write(nb, path)
        paths.append(path)
    return paths


def time_run(paths: list[Path], workers: int) -> float:
    "Seconds to run every notebook with `workers` at once; exits if one fails (a broken bench measures nothing)."
    start = time.perf_counter()
    results = run_notebooks(paths, timeout=120, workers=workers)
    seconds = time.perf_counter() - start
    failed = [r for r in results if not r.passed]
    if failed: sys.exit(f'bench notebook failed:\n{failed[0].report()}')
    return seconds


def measure(paths: list[Path], repeats: int) -> dict[int, list[float]]:
    "Timings for workers=1 and workers=2, alternating, after a warm-up run of each."
    for w in (1, 2): time_run(paths, w)
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for w in (1, 2): times[w].append(time_run(paths, w))
    return times


def main(n: int = 5, repeats: int = 3) -> None:
    "Time `n` tiny notebooks per set with workers=1 and workers=2 (`repeats` timed runs each) and print a table."
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name, cells in SETS.items():
            times = measure(make_set(Path(tmp) / name, cells, n), repeats)
            one, two = statistics.median(times[1]), statistics.median(times[2])
            rows.append((name, one, two, one / two))
    print(f'{n} notebooks per set, median of {repeats} runs, each notebook in its own fresh kernel')
    print(f"{'set':<6} {'workers=1 (s)':>14} {'workers=2 (s)':>14} {'speed-up':>9}")
    for name, one, two, ratio in rows:
        print(f'{name:<6} {one:>14.2f} {two:>14.2f} {ratio:>8.2f}x')


if __name__ == '__main__':
    fire.Fire(main)
