"""Run the lesson notebooks headless: the notebooks are the test suite.

    python run_notebook.py                          # every numbered notebook in nbs/, in order
    python run_notebook.py nbs/01_matmul.ipynb      # just these notebooks
    python run_notebook.py some/folder              # the numbered notebooks in a folder
    python run_notebook.py --workers 2 --timeout 300
    python run_notebook.py nbs/02_fully_connected.ipynb --save

Each notebook runs top to bottom in its own fresh `python3` kernel (ipykernel on this very Python
interpreter), with the notebook's own folder as working directory. One line is printed per notebook as
it finishes; a failure is explained (cell, source with the failing line marked, the cell's output, the
traceback); a summary table follows and the last line reads `N passed, N failed`.

Before anything runs, when a notebook being run lives in this repo's `nbs/`, `exp/` is checked to be in
sync with the notebooks (`notebook2script.sync_problems`); if it is not, nothing runs and the exit code
is 1, with the stale modules and the fixing command (`python notebook2script.py`). `--no-check` skips
this. Notebooks outside the repo's `nbs/` (a scratch folder, a test's temp dir) are never checked.

Exit codes: 0 every notebook passed, 1 a notebook failed (or exp/ is out of sync), 2 usage error,
130 interrupted (Ctrl-C stops every running kernel). `--save` writes a notebook that passed back in place
(outputs, no timing metadata, notebook metadata as it was); a notebook that failed is never written.
`--workers N` runs N notebooks at once, each in its own kernel, from one asyncio event loop.

In Python: `run_notebook(path)` returns a NotebookResult (`.passed`, `.report()`); tests/test_notebooks.py
uses it to make each lesson a pytest test.
"""
from __future__ import annotations

import asyncio
import copy
import os
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Coroutine, Sequence

ROOT = Path(__file__).resolve().parent
FIX_COMMAND = 'python notebook2script.py'
OUTPUT_LINES = 60        # at most this many lines of a failing cell's stdout/stderr are shown
KERNEL_LOG_LINES = 20    # last lines of a dead kernel's stderr that are shown
STOP_TRIES, STOP_WAIT = 4, 5.0   # on Ctrl-C: cancel, wait up to STOP_WAIT s for the kernels to stop, repeat

_ANSI = re.compile(r'\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)')
_CELL_LINE = re.compile(r'Cell In\s*\[(\d+)\],\s*line (\d+)')
# Run in each kernel at startup (no name is left in the notebook's namespace): a crash (segfault) prints the
# Python stack to the kernel's real stderr, which ipykernel keeps as a copy of fd 2 once it captures fd 2.
_FAULTHANDLER = ("--IPKernelApp.exec_lines=__import__('faulthandler').enable("
                 "getattr(__import__('sys').stderr, '_original_stdstream_copy', None) or 2, all_threads=False)")
_IPYTHON_FRAME = re.compile(r'[/\\](IPython|ipykernel|tornado|asyncio|traitlets)[/\\]|ipykernel_launcher|<frozen runpy>')
_CELL_FRAME = re.compile(r'^  File "([^"]*ipykernel_\d+[/\\]\d+\.py)", line (\d+) in (\S+)', re.M)
_KERNEL_NOISE = re.compile(r'^\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption.*$\n?', re.M)


class UsageError(Exception):
    "A bad command line: reported in one line, exit code 2."


# ----------------------------------------------------------------------------------------- results

@dataclass
class CellFailure:
    "Why and where a notebook stopped."
    kind: str                        # 'error', 'timeout', 'dead', 'runner'
    message: str                     # one line, e.g. "AssertionError: x should be 2"
    cell_pos: int | None = None      # 1-based position among the notebook's code cells
    n_code_cells: int = 0
    execution_count: int | None = None
    source: str = ''
    marked_lines: frozenset[int] = frozenset()
    output: str = ''                 # the cell's stdout/stderr up to the failure
    traceback: str = ''
    kernel_log: str = ''             # last lines the kernel wrote to its stderr (kernel death)

    def where(self) -> str:
        "The cell as Jupyter shows it, e.g. 'in code cell 4 of 7 (In [4])'."
        if self.cell_pos is None: return 'before its first cell'
        count = f'In [{self.execution_count}]' if self.execution_count else 'In [ ]'
        return f'in code cell {self.cell_pos} of {self.n_code_cells} ({count})'

    def short(self) -> str:
        "A few words for the summary table."
        cell = f'cell {self.cell_pos}' if self.cell_pos else 'startup'
        name = self.message.split(':', 1)[0]
        return {'error': f'{name} in {cell}', 'timeout': f'timeout in {cell}',
                'dead': f'kernel died in {cell}'}.get(self.kind, name)


@dataclass
class NotebookResult:
    "The outcome of running one notebook."
    path: Path
    name: str                        # how the notebook is named in the report
    passed: bool
    seconds: float
    failure: CellFailure | None = None
    saved: bool = False

    def line(self, width: int = 0) -> str:
        "The one line printed when the notebook finishes."
        status = 'passed' if self.passed else 'FAILED'
        extra = ' (saved)' if self.saved else ''
        return f'{self.name:<{width}}  {status}  {self.seconds:6.1f} s{extra}'

    def report(self) -> str:
        "Everything a learner needs to find and fix a failure ('' when it passed)."
        return format_failure(self.name, self.failure) if self.failure else ''


@dataclass
class _Run:
    "What the runner tracks while one notebook executes."
    cell_index: int | None = None
    execution_count: int | None = None   # the number nbclient gives the running cell (In [n])
    process: object = None               # the kernel's Popen, to read its exit status


# -------------------------------------------------------------------------------------- formatting

def strip_ansi(text: str) -> str:
    "Remove ANSI colour and cursor codes."
    return _ANSI.sub('', text)


def _collapse_cr(text: str) -> str:
    "Keep what a terminal would show of lines redrawn with '\\r' (progress bars)."
    return '\n'.join(line.rsplit('\r', 1)[-1] for line in text.split('\n'))


def _tail(text: str, n: int) -> str:
    "The last `n` lines of `text`, saying how many were left out."
    lines = text.rstrip('\n').split('\n')
    if len(lines) <= n: return '\n'.join(lines)
    return '\n'.join([f'... ({len(lines) - n} earlier lines not shown)'] + lines[-n:])


def _indent(text: str, prefix: str = '    ') -> str:
    return '\n'.join(prefix + line if line else line for line in text.split('\n'))


def number_source(source: str, marked: frozenset[int]) -> str:
    "The cell's source with line numbers, the failing line(s) marked with '-->'."
    return '\n'.join(f"{'-->' if i in marked else '   '} {i:3d} | {line}"
                     for i, line in enumerate(source.split('\n'), 1))


def format_failure(name: str, f: CellFailure) -> str:
    "The failure report for one notebook."
    parts = [f'=== {name} failed {f.where()}: {f.message}']
    if f.source:
        marked = ' (--> marks the failing line)' if f.marked_lines else ''
        parts += [f'--- cell source{marked}', number_source(f.source, f.marked_lines)]
    if f.cell_pos is not None:
        parts += ['--- cell output (stdout/stderr) up to the failure',
                  _indent(f.output) if f.output.strip() else '    (none)']
    if f.traceback:
        parts += ['--- traceback', f.traceback.rstrip()]
    if f.kind == 'dead' or (f.kind == 'runner' and f.kernel_log.strip()):
        parts += ["--- last lines of the kernel's stderr",
                  _indent(f.kernel_log) if f.kernel_log.strip() else '    (empty)']
    return '\n'.join(parts) + '\n'


def format_summary(results: Sequence[NotebookResult]) -> str:
    "The closing table, ending with the line `N passed, N failed`."
    width = max([len('notebook')] + [len(r.name) for r in results])
    rows = [f"{'notebook':<{width}}  result  seconds  detail", '-' * (width + 32)]
    for r in results:
        detail = r.failure.short() if r.failure else ''
        rows.append(f"{r.name:<{width}}  {'passed' if r.passed else 'FAILED'}  {r.seconds:7.1f}  {detail}".rstrip())
    n_pass = sum(r.passed for r in results)
    rows.append(f'{n_pass} passed, {len(results) - n_pass} failed')
    return '\n'.join(rows)


# ---------------------------------------------------------------------------- reading the failure

def _stream_text(outputs: Sequence[dict]) -> str:
    "The stdout/stderr a cell printed, in order; stderr runs are labelled when both streams appear."
    chunks = [(o.get('name', 'stdout'), o.get('text', '')) for o in outputs if o.get('output_type') == 'stream']
    names = {n for n, _ in chunks}
    merged: list[list[str]] = []
    for n, text in chunks:
        if merged and merged[-1][0] == n: merged[-1][1] += text
        else: merged.append([n, text])
    label = len(names) > 1
    pieces = [(f'[{n}]\n' if label else '') + _collapse_cr(strip_ansi(t)).rstrip('\n') for n, t in merged]
    return _tail('\n'.join(pieces), OUTPUT_LINES) if pieces else ''


def _marked_lines(traceback: str, execution_count: int | None) -> frozenset[int]:
    "Lines of the failing cell named by the traceback ('Cell In[N], line L')."
    hits = [(int(n), int(l)) for n, l in _CELL_LINE.findall(traceback)]
    if not hits: return frozenset()
    ns = {n for n, _ in hits}
    mine = execution_count if execution_count in ns else max(ns)
    return frozenset(l for n, l in hits if n == mine)


def _cell_failure(nb, run: _Run, kind: str, message: str, **extra) -> CellFailure:
    "A CellFailure filled in from the notebook cell that was running."
    if run.cell_index is None: return CellFailure(kind, message, **extra)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == 'code']
    cell = nb.cells[run.cell_index]
    return CellFailure(kind, message, cell_pos=code.index(run.cell_index) + 1, n_code_cells=len(code),
                       execution_count=cell.get('execution_count') or run.execution_count, source=cell.source,
                       output=_stream_text(cell.get('outputs', [])), **extra)


def _error_failure(nb, run: _Run, exc: Exception) -> CellFailure:
    "The failure for a cell that raised an exception."
    cell = nb.cells[run.cell_index] if run.cell_index is not None else None
    errors = [o for o in (cell.get('outputs', []) if cell else []) if o.get('output_type') == 'error']
    ename = errors[-1].get('ename', '') if errors else getattr(exc, 'ename', type(exc).__name__)
    evalue = errors[-1].get('evalue', '') if errors else getattr(exc, 'evalue', str(exc))
    tb = strip_ansi('\n'.join(errors[-1].get('traceback', []))) if errors else ''
    f = _cell_failure(nb, run, 'error', f'{ename}: {evalue}' if evalue else ename, traceback=tb)
    f.marked_lines = _marked_lines(tb, f.execution_count)
    return f


def _exit_description(returncode: int | None) -> str:
    "How the kernel process ended, in words."
    if returncode is None: return 'exit status unknown'
    if returncode < 0:
        try: return f'killed by signal {signal.Signals(-returncode).name}'
        except ValueError: return f'killed by signal {-returncode}'
    return f'exit code {returncode}'


# ------------------------------------------------------------------------------------------ kernel

def _kernel_manager_class() -> type:
    """An AsyncKernelManager whose 'python3' kernel is ipykernel on the interpreter running this script.

    jupyter_client already swaps a kernel.json's bare `python` for sys.executable, but a python3 spec in the
    user's Jupyter folder may name another interpreter; this one cannot. A kernel that segfaults prints the Python
    stack of the crash to its stderr (see _FAULTHANDLER), which the report shows."""
    from ipykernel.kernelspec import make_ipkernel_cmd
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from traitlets import default

    class ThisPythonKernelSpecs(KernelSpecManager):
        "Kernel specs where 'python3' always means this interpreter, whatever kernel.json says."
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            if kernel_name != 'python3': return super().get_kernel_spec(kernel_name)
            argv = make_ipkernel_cmd(executable=sys.executable, extra_arguments=[_FAULTHANDLER])
            return KernelSpec(argv=argv, display_name='Python 3',
                              language='python', resource_dir='', metadata={})

    class ThisPythonKernelManager(AsyncKernelManager):
        "Starts the python3 kernel on this interpreter."
        @default('kernel_spec_manager')
        def _default_specs(self) -> KernelSpecManager:
            return ThisPythonKernelSpecs(data_dir=self.data_dir)

    return ThisPythonKernelManager


def _read_log(log: IO[bytes]) -> str:
    "What the kernel wrote to its stderr (and fd-level stdout), less ipykernel's start-up warning."
    log.flush()
    log.seek(0)
    return _KERNEL_NOISE.sub('', strip_ansi(log.read().decode('utf-8', 'replace')))


def _trim_crash_stack(text: str) -> str:
    "Drop the IPython/ipykernel frames below the cell from a faulthandler stack (they are always the same)."
    out: list[str] = []
    hidden = 0
    for line in text.split('\n'):
        is_frame = line.startswith('  File ')
        if is_frame and (hidden or _IPYTHON_FRAME.search(line)):
            hidden += 1
            continue
        if hidden: out.append(f'  ... ({hidden} IPython/ipykernel frames not shown)')
        hidden = 0
        out.append(line)
    return '\n'.join(out)


def _crash_lines(text: str) -> frozenset[int]:
    "Lines of the running cell named by a faulthandler stack (frames in the cell's ipykernel temp file)."
    frames = _CELL_FRAME.findall(text)
    cell_files = [f for f, _, where in frames if where == '<module>']
    return frozenset(int(l) for f, l, _ in frames if cell_files and f == cell_files[0])


def _kernel_log(text: str) -> str:
    "The last lines of the kernel's stderr, as the report shows them."
    return _tail(_trim_crash_stack(text), KERNEL_LOG_LINES) if text.strip() else ''


def _display_name(path: Path) -> str:
    "The notebook's path relative to the current folder or else the repo root when below one, else absolute."
    for base in (Path.cwd().resolve(), ROOT):
        try: return str(path.relative_to(base))
        except ValueError: pass
    return str(path)


def save_notebook(nb, path: Path) -> None:
    "Write `nb` to `path` atomically (temp file + os.replace), keeping the file's permissions."
    import nbformat
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.stem}.', suffix='.ipynb.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f: nbformat.write(nb, f)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def _execute(nb, path: Path, timeout: int, log: IO[bytes], run: _Run,
                   stop: threading.Event) -> CellFailure | None:
    "Execute `nb` in a fresh kernel; None when every cell ran, else why it stopped."
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', record_timing=False,
                            kernel_manager_class=_kernel_manager_class(), shutdown_kernel='immediate',
                            iopub_timeout=10, resources={'metadata': {'path': str(path.parent)}})

    def on_cell_execute(cell, cell_index: int) -> None:
        run.cell_index, run.execution_count = cell_index, client.code_cells_executed + 1

    def on_notebook_start(notebook) -> None:
        run.process = getattr(getattr(client.km, 'provisioner', None), 'process', None)

    client.on_cell_execute, client.on_notebook_start = on_cell_execute, on_notebook_start
    try:
        await client.async_execute(stdout=log, stderr=log)
        return None
    except CellExecutionError as e:
        return _error_failure(nb, run, e)
    except CellTimeoutError:
        return _cell_failure(nb, run, 'timeout',
                             f'the cell did not finish within the {timeout} s limit (--timeout {timeout})')
    except DeadKernelError:
        if stop.is_set(): raise asyncio.CancelledError from None   # Ctrl-C: nbclient turns our cancel into this
        status = _exit_description(getattr(run.process, 'poll', lambda: None)())
        text = _read_log(log)
        return _cell_failure(nb, run, 'dead', f'the kernel died ({status})',
                             kernel_log=_kernel_log(text), marked_lines=_crash_lines(text))


async def run_notebook_async(path: Path, timeout: int = 600, save: bool = False,
                             stop: threading.Event | None = None) -> NotebookResult:
    """Run one notebook in a fresh kernel with its folder as working directory; never raises for a failure.

    `stop` is set when the run is being cancelled (Ctrl-C), so a kernel killed for that is not a failure."""
    import nbformat
    stop = stop or threading.Event()
    path = Path(path).resolve()
    start, run = time.perf_counter(), _Run()
    failure, saved = None, False
    with tempfile.TemporaryFile() as log:
        try:
            nb = nbformat.read(path, as_version=4)
            metadata = copy.deepcopy(nb.metadata)
            failure = await _execute(nb, path, timeout, log, run, stop)
            if failure is None and save:
                nb.metadata = metadata            # the kernel's language_info is not ours to commit
                save_notebook(nb, path)
                saved = True
        except asyncio.CancelledError:
            raise
        except Exception as e:                    # unreadable notebook, kernel that never starts, ...
            msg = strip_ansi(str(e)).strip().split('\n')[0] or type(e).__name__
            failure = CellFailure('runner', f'{type(e).__name__}: {msg}', kernel_log=_kernel_log(_read_log(log)))
    return NotebookResult(path, _display_name(path), failure is None, time.perf_counter() - start, failure, saved)


def run_notebook(path: Path | str, timeout: int = 600, save: bool = False) -> NotebookResult:
    "Run one notebook (blocking): the function the pytest notebook tests call."
    return _run_sync(lambda stop: run_notebook_async(Path(path), timeout, save, stop))


async def run_notebooks_async(paths: Sequence[Path], timeout: int = 600, workers: int = 1, save: bool = False,
                              on_done: Callable[[NotebookResult], None] = lambda r: None,
                              stop: threading.Event | None = None) -> list[NotebookResult]:
    "Run notebooks, `workers` at a time, calling `on_done` as each finishes; results in the order given."
    gate, stop = asyncio.Semaphore(workers), stop or threading.Event()

    async def one(p: Path) -> NotebookResult:
        async with gate:
            result = await run_notebook_async(p, timeout, save, stop)
        if stop.is_set(): raise asyncio.CancelledError
        on_done(result)
        return result

    tasks = [asyncio.ensure_future(one(p)) for p in paths]
    if not tasks: return []
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:                # unlike gather, wait for every kernel to be shut down
        for t in tasks: t.cancel()
        await asyncio.wait(tasks)
        raise
    return [t.result() for t in tasks]


def run_notebooks(paths: Sequence[Path], timeout: int = 600, workers: int = 1, save: bool = False,
                  on_done: Callable[[NotebookResult], None] = lambda r: None) -> list[NotebookResult]:
    "Blocking version of `run_notebooks_async` (`on_done` is called from the runner's own thread)."
    return _run_sync(lambda stop: run_notebooks_async(paths, timeout, workers, save, on_done, stop))


def _cancel(loop: asyncio.AbstractEventLoop, task: asyncio.Task, everything: bool) -> None:
    "From another thread: cancel the run's main task, or with `everything` every task on its loop."
    def go() -> None:
        for t in (asyncio.all_tasks(loop) if everything else [task]): t.cancel()
    try: loop.call_soon_threadsafe(go)
    except RuntimeError: pass                     # the loop has closed: the run is over


def _run_sync(make: Callable[[threading.Event], Coroutine[Any, Any, Any]]) -> Any:
    """Run `make(stop)` with asyncio.run in a thread of its own, and wait for it.

    That thread is not the main thread, so nbclient installs no signal handlers of its own; Ctrl-C reaches
    this (main) thread, which sets `stop`, cancels the run so every kernel is shut down, waits for that,
    and raises KeyboardInterrupt. (It waits on an Event: in Python 3.11 a Thread.join() interrupted by
    Ctrl-C marks the thread as finished, so a second join would not wait.)"""
    stop, started, finished, box = threading.Event(), threading.Event(), threading.Event(), {}

    async def main() -> Any:
        box['loop'], box['task'] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        return await make(stop)

    def work() -> None:
        try: box['result'] = asyncio.run(main())
        except BaseException as e: box['error'] = e
        finally: started.set(); finished.set()

    thread = threading.Thread(target=work, name='run_notebook', daemon=True)
    thread.start()
    try:
        finished.wait()
    except KeyboardInterrupt:
        stop.set()
        started.wait()
        for attempt in range(STOP_TRIES):         # a cancel can be lost in a library race: ask again, harder
            if 'task' in box: _cancel(box['loop'], box['task'], everything=attempt > 0)
            if finished.wait(STOP_WAIT): break
        raise                                     # a second Ctrl-C also lands here; kernels whose runner
    thread.join()                                 # is gone exit by themselves (ipykernel watches its parent)
    if 'error' in box: raise box['error']
    return box['result']


# ------------------------------------------------------------------------------- choosing notebooks

def _numbered(folder: Path) -> list[Path]:
    "The numbered notebooks of a folder, in natural order (the rule notebook2script.py uses)."
    from notebook2script import find_notebooks
    return [Path(p) for p in find_notebooks(folder)]


def _readable(p: Path, arg: str) -> Path:
    "`p` if it reads as an nbformat v4 notebook; UsageError naming `arg` otherwise."
    import nbformat
    try: nbformat.read(p, as_version=4)
    except Exception as e:
        why = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f'{arg}: not a readable notebook ({why})') from None
    return p


def resolve_paths(args: Sequence[str], root: Path = ROOT) -> list[Path]:
    "The notebooks named by the command line (files or folders; none means root/nbs); UsageError if bad."
    args = [str(a) for a in args] or [str(root / 'nbs')]
    found: list[Path] = []
    for arg in args:
        p = Path(arg)
        if not p.exists(): raise UsageError(f'{arg}: no such file or folder')
        if p.is_dir():
            nbs = _numbered(p)
            if not nbs: raise UsageError(f'{arg}: no numbered notebooks (like 01_name.ipynb) in this folder')
            found += nbs
        elif p.suffix != '.ipynb': raise UsageError(f'{arg}: not a notebook (expected a .ipynb file)')
        else: found.append(_readable(p, arg))
    unique = dict.fromkeys(p.resolve() for p in found)
    return list(unique)


def sync_check(paths: Sequence[Path]) -> list[str]:
    """What `notebook2script.py --check` reports about exp/ (stale, missing, orphaned modules), when any of
    `paths` is a notebook of this repo's nbs/; [] when in sync or when no repo notebook is being run.
    Raises notebook2script's ExportError (one line) when a repo notebook cannot be read or exported."""
    nbs = (ROOT / 'nbs').resolve()
    if not any(Path(p).resolve().parent == nbs for p in paths): return []
    from notebook2script import sync_problems
    return list(sync_problems())


# ------------------------------------------------------------------------------------------------ CLI

@dataclass
class Options:
    "The command line, as fire parsed it."
    paths: tuple
    timeout: object
    workers: object
    save: object
    no_check: object

    def validate(self) -> None:
        "Raise UsageError for option values fire let through."
        if type(self.timeout) is float and self.timeout.is_integer(): self.timeout = int(self.timeout)
        if type(self.timeout) is not int or self.timeout <= 0:
            raise UsageError(f'--timeout takes a positive whole number of seconds, got {self.timeout!r}')
        if type(self.workers) is not int or self.workers < 1:
            raise UsageError(f'--workers takes a positive whole number, got {self.workers!r}')
        for name in ('save', 'no_check'):
            if type(getattr(self, name)) is not bool:
                raise UsageError(f"--{name.replace('_', '-')} is a flag and takes no value, got {getattr(self, name)!r}")


def _options(*paths: str, timeout: int = 600, workers: int = 1, save: bool = False, no_check: bool = False) -> Options:
    """Run numbered lesson notebooks headless, each in a fresh kernel, and report failures.

    Each notebook runs with its own folder as working directory. Before running notebooks of this repo's
    nbs/, exp/ is checked to be in sync with them (as `python notebook2script.py --check` does).
    Exit codes: 0 all passed; 1 a notebook failed, or exp/ is out of sync; 2 usage error.

    Args:
        paths: notebooks (.ipynb) or folders of numbered notebooks; default: nbs/ next to this script.
        timeout: seconds each cell may take.
        workers: notebooks run at once (each in its own kernel).
        save: write each notebook that passed back in place with its new outputs.
        no_check: skip checking that exp/ is in sync with the notebooks (spelt --no-check or --no_check).
    """
    return Options(paths, timeout, workers, save, no_check)


_FLAGS = ('--save', '-s', '--no-check', '--no_check', '-n')


def parse_args(argv: Sequence[str]) -> Options:
    "Parse the command line with fire; UsageError (one line) for anything fire rejects."
    import contextlib
    import io

    import fire
    argv = [f'{a}=True' if a in _FLAGS else a for a in argv]   # a bare flag must not swallow the next argument
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            opts = fire.Fire(_options, command=argv, name='run_notebook.py', serialize=lambda _: None)
    except fire.core.FireExit as e:
        if e.code == 0:                           # --help: fire wrote the help text to (our) stderr
            _say(sys.stdout, '\n'.join(l for l in err.getvalue().splitlines() if not l.startswith('INFO: ')).strip())
            raise
        first = next((l for l in err.getvalue().splitlines() if l.strip()), 'bad command line')
        raise UsageError(f"{first.removeprefix('ERROR: ').strip()} (see --help)") from None
    opts.validate()
    return opts


def _say(out: IO[str], text: str) -> None:
    "Print one whole block (callers pass complete lines, so parallel notebooks never interleave)."
    try:
        print(text, file=out, flush=True)
    except BrokenPipeError:                       # the reader went away (`| head`): keep running, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    "The command line: returns the exit code."
    for stream in (sys.stdout, sys.stderr):       # a notebook's non-ASCII output must not crash the report
        if hasattr(stream, 'reconfigure'): stream.reconfigure(errors='backslashreplace')
    out = out or sys.stdout
    say = lambda text: _say(out, text)
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
        paths = resolve_paths(opts.paths)
    except (UsageError, ImportError) as e:        # ImportError: notebook2script.py is not next to this file
        print(f'run_notebook.py: error: {e}', file=sys.stderr)
        return 2
    problems = [] if opts.no_check else sync_report(paths)
    if problems:
        for line in problems: say(line)
        return 1
    width = max(len(_display_name(p)) for p in paths)

    def done(r: NotebookResult) -> None:
        say(r.line(width) + ('\n' + r.report() if r.failure else ''))

    try:
        results = run_notebooks(paths, opts.timeout, opts.workers, opts.save, done)
    except KeyboardInterrupt:
        print('run_notebook.py: interrupted', file=sys.stderr)
        return 130
    say('\n' + format_summary(results))
    return 0 if all(r.passed for r in results) else 1


def sync_report(paths: Sequence[Path]) -> list[str]:
    "The lines to print (and stop on) when exp/ is not in sync with the repo's notebooks; [] when it is."
    try:
        problems = sync_check(paths)
    except Exception as e:                        # notebook2script's ExportError: a notebook it cannot export
        return [f'cannot check that exp/ is in sync: {str(e).splitlines()[0] if str(e) else type(e).__name__}',
                'Fix the notebook (or pass --no-check to run anyway); nothing was run.']
    if not problems: return []
    orphans = ', and delete the orphaned modules' if any(p.startswith('orphaned') for p in problems) else ''
    return (['exp/ is out of sync with the notebooks in nbs/; nothing was run:'] + [f'  {p}' for p in problems]
            + [f'Fix: run `{FIX_COMMAND}` in {ROOT} to regenerate exp/{orphans} (or pass --no-check to run anyway).'])


if __name__ == '__main__':
    sys.exit(main())
