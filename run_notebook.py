"""Run the lesson notebooks headless: the notebooks are the test suite.

    python run_notebook.py                          # every numbered notebook in nbs/, in order
    python run_notebook.py nbs/01_matmul.ipynb      # just these notebooks (or folders of numbered notebooks)
    python run_notebook.py --workers 2 --timeout 300
    python run_notebook.py nbs/02_fully_connected.ipynb --save

Options: --timeout S (seconds each cell may take; default 600), --workers N (notebooks run at once, each in
its own kernel; default 1), --threads N (OMP_NUM_THREADS for each kernel: with --workers 2 on 2 cores, use
--threads 1, or the kernels' threads fight over the cores), --save (write each notebook that passed back with
its outputs, without timing metadata; a notebook that failed is never written), --no-check (skip the exp/ sync
check below).

Each notebook runs top to bottom in a fresh kernel on this Python, with the notebook's folder as working
directory. A line is printed as each notebook finishes; a failure is explained (the cell, its source with
the failing line marked, its output, the traceback, and a dead kernel's stderr); a summary table follows,
ending with `N passed, N failed`.

Before running notebooks of this repo's nbs/, exp/ is checked to be in sync with them (as
`python notebook2script.py --check` does); if it is not, nothing runs.
Exit codes: 0 every notebook passed, 1 a notebook failed or exp/ is out of sync, 2 usage error,
130 interrupted (Ctrl-C stops every kernel).

In Python: `run_notebook(path)` returns a NotebookResult (`.passed`, `.report()`); `NotebookRunner` runs several
at once (tests/test_notebooks.py uses it to make each lesson a pytest test).
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import os
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from notebook2script import ROOT, ExportError, find_notebooks, read_cells, shown, sync_problems

OUTPUT_LINES = 60  # at most this many lines of a failing cell's output, or of a dead kernel's stderr, are shown
_ANSI = re.compile(r'\x1b\[[0-?]*[ -/]*[@-~]')
_CELL_LINE = re.compile(r'Cell In\s*\[(\d+)\],\s*line (\d+)')
_MODULE_LINE = re.compile(r'File "?([^\s"]+\.py)"?(?::|, line )(\d+)')  # IPython's and Python's traceback lines
_CELL_MARKER = re.compile(r'# %% (\S+\.ipynb), code cell (\d+)')
_TCP_WARNING = re.compile(r'^\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption.*\n?', re.M)


# --------------------------------------------------------------------------- results and reports

@dataclass
class CellFailure:
    "Why and where a notebook stopped."
    kind: str                       # 'error', 'timeout', 'dead' or 'runner'
    message: str                    # one line, e.g. "AssertionError: x should be 2"
    cell_pos: int | None = None     # 1-based position among the notebook's code cells
    n_code_cells: int = 0
    execution_count: int | None = None
    source: str = ''
    marked_lines: frozenset = frozenset()
    output: str = ''                # the cell's stdout/stderr up to the failure
    traceback: str = ''
    kernel_log: str = ''            # the end of the kernel's stderr

    def where(self) -> str:
        "The cell as Jupyter shows it, e.g. 'in code cell 4 of 7 (In [4])'."
        if self.cell_pos is None:
            return 'before its first cell'
        return f"in code cell {self.cell_pos} of {self.n_code_cells} (In [{self.execution_count or ' '}])"

    def short(self) -> str:
        "A few words for the summary table."
        cell = f'cell {self.cell_pos}' if self.cell_pos else 'startup'
        return {'error': f"{self.message.split(':', 1)[0]} in {cell}", 'timeout': f'timeout in {cell}',
                'dead': f'kernel died in {cell}'}.get(self.kind, self.message.split(':', 1)[0])


@dataclass
class NotebookResult:
    "The outcome of running one notebook."
    path: Path
    name: str                       # how the notebook is named in the report
    passed: bool
    seconds: float
    failure: CellFailure | None = None
    saved: bool = False

    def line(self, width: int = 0) -> str:
        "The line printed when the notebook finishes."
        return f"{self.name:<{width}}  {'passed' if self.passed else 'FAILED'}  {self.seconds:6.1f} s" + (
            ' (saved)' if self.saved else '')

    def report(self) -> str:
        "Everything a learner needs to find and fix a failure ('' when it passed)."
        f = self.failure
        if f is None:
            return ''
        parts = [f'=== {self.name} failed {f.where()}: {f.message}']
        if f.source:
            numbered = [f"{'-->' if i in f.marked_lines else '   '} {i:3d} | {line}"
                        for i, line in enumerate(f.source.split('\n'), 1)]
            parts += [f"--- cell source{' (--> marks the failing line)' if f.marked_lines else ''}", *numbered]
        if f.cell_pos is not None:
            parts += ['--- cell output (stdout/stderr) up to the failure', _indent(f.output) or '    (none)']
        if f.traceback:
            parts += ['--- traceback', f.traceback.rstrip()]
            origins = notebook_origins(f.traceback)
            if origins:
                parts += ['--- the generated lines in this traceback come from (edit the notebook, not exp/)', *origins]
        if f.kind == 'dead' or f.kernel_log:
            parts += ["--- last lines of the kernel's stderr", _indent(f.kernel_log) or '    (empty)']
        return '\n'.join(parts) + '\n'


def notebook_origins(traceback: str) -> list[str]:
    "For each line of a generated exp/ module in `traceback`, the notebook cell and line it was exported from."
    found = []
    for file, line in dict.fromkeys(_MODULE_LINE.findall(traceback)):
        path, line = Path(file), int(line)
        if not (path.name.startswith('nb_') and path.is_file()):
            continue
        lines = path.read_text('utf-8', errors='replace').splitlines()[:line]
        marks = [(i, m) for i, text in enumerate(lines, 1) if (m := _CELL_MARKER.fullmatch(text))]
        if marks:  # the block after a marker starts at the cell's line 2 (line 1 is the #export directive)
            at, m = marks[-1]
            found.append(f'    {shown(path)}, line {line}: {m[1]}, code cell {m[2]}, line {line - at + 1}')
    return found


def format_summary(results: list[NotebookResult]) -> str:
    "The closing table, ending with the line `N passed, N failed`."
    width = max([len('notebook')] + [len(r.name) for r in results])
    rows = [f"{'notebook':<{width}}  result  seconds  detail", '-' * (width + 32)]
    rows += [f"{r.name:<{width}}  {'passed' if r.passed else 'FAILED'}  {r.seconds:7.1f}  "
             f"{r.failure.short() if r.failure else ''}".rstrip() for r in results]
    n_pass = sum(r.passed for r in results)
    return '\n'.join(rows + [f'{n_pass} passed, {len(results) - n_pass} failed'])


def _clean(text: str) -> str:
    "`text` without ANSI colour codes, each line as a terminal shows it after '\\r' redraws, its last lines only."
    lines = [line.rsplit('\r', 1)[-1] for line in _ANSI.sub('', text).rstrip().split('\n')]
    cut = len(lines) - OUTPUT_LINES
    return '\n'.join([f'... ({cut} earlier lines not shown)'] * (cut > 0) + lines[-OUTPUT_LINES:])


def _indent(text: str) -> str:
    return '\n'.join('    ' + line if line else line for line in text.split('\n')) if text.strip() else ''


# --------------------------------------------------------------------------- running

def _failure(nb, state: dict, kind: str, message: str, **extra) -> CellFailure:
    "A CellFailure filled in from the code cell that was running (`state['cell']`, an index into `nb.cells`)."
    cell_index = state['cell']
    if cell_index is None:
        return CellFailure(kind, message, **extra)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == 'code']
    cell = nb.cells[cell_index]
    streams = [o for o in cell.outputs if o.output_type == 'stream']
    both = len({o.name for o in streams}) > 1  # then label each run of stderr and stdout
    output = ''.join((f'[{o.name}]\n' if both and (i == 0 or streams[i - 1].name != o.name) else '') + o.text
                     for i, o in enumerate(streams))
    return CellFailure(kind, message, code.index(cell_index) + 1, len(code),
                       cell.get('execution_count') or state['count'], cell.source, output=_clean(output), **extra)


def _run(path: Path, timeout: float, save: bool, stop: threading.Event, kernels: set,
         env: dict | None = None) -> NotebookResult:
    "Run one notebook in a fresh kernel (with environment `env`, if given); never raises for a failure of the notebook."
    import nbformat
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    start, state, failure, saved = time.perf_counter(), {'cell': None}, None, False

    def on_start(notebook) -> None:
        state['kernel'] = km.provisioner.process
        kernels.add(state['kernel'])

    def on_cell(cell, cell_index: int) -> None:
        if stop.is_set():
            raise RuntimeError('interrupted')
        state['cell'], state['count'] = cell_index, client.code_cells_executed + 1

    with tempfile.TemporaryFile() as log:
        try:
            nb = nbformat.read(path, as_version=4)
            metadata = copy.deepcopy(nb.metadata)
            # 'python3' is ipykernel on this interpreter, whatever kernel.json a Jupyter folder may hold
            km = AsyncKernelManager(kernel_name='python3', kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
            client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False, shutdown_kernel='immediate',
                                    resources={'metadata': {'path': str(path.parent)}})
            client.on_notebook_start, client.on_cell_execute = on_start, on_cell
            extra = {} if env is None else {'env': env}
            asyncio.run(client.async_execute(cleanup_kc=True, stdout=log, stderr=log, **extra))  # ends every task
        except CellExecutionError as e:
            cell = nb.cells[state['cell']]
            errors = [o for o in cell.outputs if o.output_type == 'error']
            tb = _ANSI.sub('', '\n'.join(errors[-1].traceback)) if errors else ''
            failure = _failure(nb, state, 'error', f'{e.ename}: {e.evalue}'.rstrip(': '), traceback=tb,
                               marked_lines=_marked_lines(tb, cell))
        except CellTimeoutError:
            failure = _failure(nb, state, 'timeout',
                               f'the cell did not finish within the {timeout:g} s limit (--timeout {timeout:g})')
        except DeadKernelError:
            code = state['kernel'].poll() if 'kernel' in state else None
            how = 'exit status unknown' if code is None else f'signal {-code}' if code < 0 else f'exit code {code}'
            failure = _failure(nb, state, 'dead', f'the kernel died ({how})', kernel_log=_log(log))
        except Exception as e:  # unreadable notebook, a kernel that never starts, ...
            why = _ANSI.sub('', str(e)).strip().split('\n')[0]
            failure = CellFailure('runner', f'{type(e).__name__}: {why}'.rstrip(': '), kernel_log=_log(log))
        finally:
            kernels.discard(state.get('kernel'))
    if failure is None and save:
        nb.metadata = metadata  # the kernel's language_info is not ours to commit
        from exp.nb_00 import atomic_write  # the library's one atomic writer (lesson 00)
        atomic_write(path, nbformat.writes(nb) + '\n')
        saved = True
    return NotebookResult(path, shown(path), failure is None, time.perf_counter() - start, failure, saved)


def _marked_lines(traceback: str, cell) -> frozenset:
    "Lines of the failing cell named by the traceback ('Cell In[N], line L')."
    hits = [(int(n), int(line)) for n, line in _CELL_LINE.findall(traceback)]
    counts = {n for n, _ in hits}
    mine = cell.get('execution_count') if cell.get('execution_count') in counts else max(counts, default=None)
    return frozenset(line for n, line in hits if n == mine)


def _log(log) -> str:
    "What the kernel wrote to its stderr (and to fd 1), cleaned and cut to its last lines."
    log.seek(0)
    text = _TCP_WARNING.sub('', log.read().decode('utf-8', 'replace'))
    return _clean(text) if text.strip() else ''


class NotebookRunner:
    """Runs notebooks `workers` at a time, each in a fresh kernel (on `threads` threads, if given): `submit(path)`
    gives a Future of its NotebookResult, `kill()` drops queued notebooks and kills every running kernel.

    Leaving a `with` block waits for the notebooks submitted, or kills them when an exception (Ctrl-C) ends it."""
    def __init__(self, timeout: float = 600, workers: int = 1, save: bool = False, threads: int | None = None,
                 on_done=None):
        self.timeout, self.save, self.on_done = timeout, save, on_done
        self.env = None if threads is None else {**os.environ, 'OMP_NUM_THREADS': str(threads)}
        self.stop, self.kernels = threading.Event(), set()
        self.pool = ThreadPoolExecutor(workers)  # worker threads, so nbclient installs no signal handlers

    def _one(self, path: Path) -> NotebookResult:
        result = _run(path, self.timeout, self.save, self.stop, self.kernels, self.env)
        if self.on_done and not self.stop.is_set():
            self.on_done(result)
        return result

    def submit(self, path: Path | str) -> Future:
        "Queue one notebook; a Future of its NotebookResult."
        return self.pool.submit(self._one, Path(path).resolve())

    def kill(self) -> None:
        "Start no more notebooks or cells, kill every running kernel, and wait for the worker threads to end."
        self.stop.set()
        for kernel in list(self.kernels):
            kernel.kill()
        self.pool.shutdown(cancel_futures=True)

    def __enter__(self) -> NotebookRunner:
        return self

    def __exit__(self, kind, *_) -> None:
        self.kill() if kind else self.pool.shutdown()


def run_notebooks(paths: list[Path], timeout: float = 600, workers: int = 1, save: bool = False,
                  on_done=None, threads: int | None = None) -> list[NotebookResult]:
    """Run notebooks, `workers` at a time, each in its own kernel; the results in the order given.

    `on_done(result)` is called from a worker thread as each notebook finishes. Ctrl-C kills every running
    kernel and raises KeyboardInterrupt once their threads have ended."""
    with NotebookRunner(timeout, workers, save, threads, on_done) as runner:
        return [f.result() for f in [runner.submit(p) for p in paths]]


def run_notebook(path: Path | str, timeout: float = 600, save: bool = False,
                 threads: int | None = None) -> NotebookResult:
    "Run one notebook (blocking)."
    return run_notebooks([Path(path)], timeout, 1, save, threads=threads)[0]


# --------------------------------------------------------------------------- command line

class UsageError(Exception):
    "A bad command line: reported after the usage line, exit code 2."


def resolve_paths(args: list[str]) -> list[Path]:
    "The notebooks named by the command line (files or folders; none means nbs/); UsageError if one is bad."
    found = []
    for arg in args or [str(ROOT / 'nbs')]:
        p = Path(arg)
        if p.is_dir():
            if not find_notebooks(p):
                raise UsageError(f'{arg}: no numbered notebooks (like 01_name.ipynb) in this folder')
            found += find_notebooks(p)
        elif p.exists() and p.suffix != '.ipynb':
            raise UsageError(f'{arg}: not a notebook (expected a .ipynb file)')
        else:
            try:
                read_cells(p, arg)
            except ExportError as e:
                raise UsageError(str(e)) from None
            found.append(p)
    return list(dict.fromkeys(p.resolve() for p in found))


def sync_report(paths: list[Path]) -> list[str]:
    "The lines to print (and stop on) when exp/ is not in sync with the repo's notebooks; [] when it is."
    if not any(Path(p).resolve().parent == (ROOT / 'nbs').resolve() for p in paths):
        return []  # no notebook of this repo is being run
    try:
        problems = sync_problems()
    except ExportError as e:
        return [f'cannot check that exp/ is in sync: {e}',
                'Fix the notebook (or pass --no-check to run anyway); nothing was run.']
    if not problems:
        return []
    orphans = ', and delete the orphaned modules' if any(p.startswith('orphaned') for p in problems) else ''
    return (['exp/ is out of sync with the notebooks in nbs/; nothing was run:', *[f'  {p}' for p in problems],
             f'Fix: run `python notebook2script.py` in {ROOT} to regenerate exp/{orphans}'
             ' (or pass --no-check to run anyway).'])


def _positive(kind: type):
    "An argparse type: a positive number of `kind` (int or float), or a plain-words error."
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"takes a positive {'whole ' * (kind is int)}number, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


def parser() -> argparse.ArgumentParser:
    "The command line's options; `--help` shows them after the module's docstring."
    p = argparse.ArgumentParser(prog='run_notebook.py', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('paths', nargs='*', metavar='NOTEBOOK', help='notebooks or folders of them (default: nbs/)')
    p.add_argument('--timeout', type=_positive(float), default=600, metavar='S', help='seconds each cell may take')
    p.add_argument('--workers', type=_positive(int), default=1, metavar='N', help='notebooks run at once')
    p.add_argument('--threads', type=_positive(int), metavar='N',
                   help="threads each kernel's torch uses (OMP_NUM_THREADS; default: torch's own, one per core)")
    p.add_argument('--save', action='store_true', help='write each notebook that passed back with its outputs')
    p.add_argument('--no-check', action='store_true', help='skip the check that exp/ is in sync with nbs/')
    return p


def run(opts: argparse.Namespace) -> int:
    "Run the notebooks the options name, printing a line as each finishes and a summary; the exit code."
    paths = resolve_paths(opts.paths)
    problems = [] if opts.no_check else sync_report(paths)
    if problems:
        print('\n'.join(problems))
        return 1
    width, lock = max(len(shown(p)) for p in paths), threading.Lock()

    def done(r: NotebookResult) -> None:
        with lock:  # one whole block at a time, so that parallel notebooks never interleave
            print(r.line(width) + ('\n' + r.report() if r.failure else ''), flush=True)

    results = run_notebooks(paths, opts.timeout, opts.workers, opts.save, done, opts.threads)
    print('\n' + format_summary(results))
    return 0 if all(r.passed for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    "The command line: returns the exit code (2 on a usage error, after argparse's usage line)."
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(errors='backslashreplace')  # never crash printing a name on an ASCII console
    p = parser()
    try:
        return run(p.parse_args(argv))
    except UsageError as e:
        p.print_usage(sys.stderr)
        print(f'run_notebook.py: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('run_notebook.py: interrupted', file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `--help | head -2`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == '__main__':
    sys.exit(main())
