"""How much does `run_notebook.py --workers 2` save over `--workers 1`?

    python bench/notebook_workers.py                  # 5 notebooks per set, 3 timed repeats
    python bench/notebook_workers.py --n 6 --repeats 5
    python bench/notebook_workers.py --n 1 --repeats 1 --warmup 0     # a smoke test

Small notebooks are dominated by kernel start-up, which is CPU work; on a 2-core machine running two at
once may or may not help, so this measures it. Two sets of tiny notebooks are made in a temp folder:
`bare` (a few cells of plain Python) and `torch` (imports torch and multiplies small matrices, like a
lesson's first cells). Each set is run through run_notebook's runner with workers=1 and workers=2, the
two alternating, after one warm-up run of each (--warmup); the table shows the median wall time and the ratio.
"""
import tempfile
from pathlib import Path

import nbformat
from common import BenchArgs, clock, interleave, medians, table
from nbformat import v4

from run_notebook import run_notebooks

SETS = {
    'bare': ['import math, os', 'xs = [math.sqrt(i) for i in range(10_000)]\nprint(len(xs))', 'assert xs[4] == 2.0'],
    'torch': ['import torch\ntorch.manual_seed(0)',
              'a, b = torch.randn(64, 64), torch.randn(64, 64)\nc = a @ b\nprint(c.shape)',
              "assert torch.allclose(c, torch.einsum('ik,kj->ij', a, b), atol=1e-4)"],
}


def make_set(folder, cells, n):
    "n copies of a tiny notebook, numbered 01_... to n."
    folder.mkdir(parents=True)
    paths = [folder / f'{i:02d}_tiny.ipynb' for i in range(1, n + 1)]
    for path in paths: nbformat.write(v4.new_notebook(cells=[v4.new_code_cell(c) for c in cells]), path)
    return paths


def time_run(paths, workers):
    "Seconds to run every notebook with `workers` at once; exits if one fails (a broken bench measures nothing)."
    results = []
    seconds = clock(lambda: results.extend(run_notebooks(paths, timeout=120, workers=workers)))[0]
    failed = [r for r in results if not r.passed]
    if failed: raise SystemExit(f'bench notebook failed:\n{failed[0].report()}')
    return seconds


def main(argv=None):
    p = BenchArgs(__doc__, n=5, repeats=3)
    p.add_argument('--warmup', type=int, default=1, help='untimed runs of each before the timed ones')
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name, cells in SETS.items():
            paths = make_set(Path(tmp) / name, cells, a.n)
            runs = {w: lambda w=w: time_run(paths, w) for w in (1, 2)}
            one, two = medians(interleave(runs, a.repeats, a.warmup)).values()
            rows.append([name, one, two, one / two])
    print(f'{a.n} notebooks per set, median of {a.repeats} runs, each notebook in its own fresh kernel')
    table(['set', 'workers=1 (s)', 'workers=2 (s)', 'speed-up'], rows, ['{:.2f}', '{:.2f}', '{:.2f}x'])


if __name__ == '__main__':
    main()
