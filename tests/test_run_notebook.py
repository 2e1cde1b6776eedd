"""run_notebook.py: fixture notebooks built in temp folders, run through the CLI and the runner function.

Kernel starts are the cost (1-3 s each), so one folder of five notebooks is run twice (--workers 1 and
--workers 2) and most checks read those two runs; 15 kernels are started in all.
"""
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from conftest import make_nb
from run_notebook import CellFailure, NotebookResult, format_summary, run_notebook

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / 'run_notebook.py'
META = {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
        'language_info': {'name': 'python'}}
DATA = 'hello from the notebook folder\n'

PASS = [f"import os, sys\nassert os.path.realpath(sys.executable) == os.path.realpath({sys.executable!r}), sys.executable",
        "text = open('data.txt').read()\nprint(text)",
        f"assert text == {DATA!r}, text"]
FAIL = ["x = 1\nprint('cell one ran')",
        ('markdown', 'a markdown cell between'),
        "import sys\nprint('computing x')\nprint('a warning', file=sys.stderr)\nassert x == 2, f'x should be 2, got {x}'\nprint('not reached')",
        "print('never run')"]
SYNTAX = ["y = 1", "z = (1,\nprint(y)"]
DIES = ["print('still alive')", "import os\nos.write(2, b'about to die\\n')\nos._exit(1)"]
LOOP = ["print('spinning')\nwhile True:\n    pass", "print('never run')"]
NOTEBOOKS = {'01_pass': PASS, '02_fail': FAIL, '03_syntax': SYNTAX, '04_dies': DIES, '05_loop': LOOP}


def make_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'data.txt').write_text(DATA)
    for name in names: make_nb(folder / f'{name}.ipynb', NOTEBOOKS[name])
    return folder


def cli(*args: str, cwd: Path, script: Path = SCRIPT, timeout: float = 120) -> subprocess.CompletedProcess:
    "Run a run_notebook.py as a learner would, from `cwd`."
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def blocks(stdout: str) -> dict[str, str]:
    "The failure report of each notebook, by notebook file name."
    found = re.findall(r'^=== (\S+) failed (.*?)(?=^\S+ +(?:passed|FAILED) |^notebook +result|\Z)', stdout, re.M | re.S)
    return {Path(name).name: text for name, text in found}


def status_lines(stdout: str) -> dict[str, tuple[str, float]]:
    "The line printed as each notebook finished: name -> (status, seconds)."
    lines = re.findall(r'^(\S+\.ipynb) +(passed|FAILED) +([\d.]+) s', stdout, re.M)
    return {Path(n).name: (s, float(t)) for n, s, t in lines}


def summary_rows(stdout: str) -> list[str]:
    "The summary table's rows as 'file-name status detail', without the seconds."
    table = stdout[stdout.rindex('\nnotebook '):].strip().splitlines()
    rows = [re.fullmatch(r'(\S+) +(passed|FAILED) +[\d.]+ *(.*)', row) for row in table[2:-1]]
    return [f'{Path(m[1]).name} {m[2]} {m[3]}'.strip() for m in rows]


@pytest.fixture(scope='module')
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp('nbs'), list(NOTEBOOKS))


@pytest.fixture(scope='module')
def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob('*.ipynb')}


def _timed_run(folder: Path, cwd: Path, workers: int) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    r = cli(folder, '--timeout', '3', '--workers', workers, cwd=cwd)
    return r, time.perf_counter() - start


@pytest.fixture(scope='module')
def sequential(folder, snapshot, tmp_path_factory):
    return _timed_run(folder, tmp_path_factory.mktemp('elsewhere'), 1)


@pytest.fixture(scope='module')
def parallel(folder, snapshot, tmp_path_factory):
    return _timed_run(folder, tmp_path_factory.mktemp('elsewhere'), 2)


# ------------------------------------------------------------------------------------ one run, five notebooks

def test_exit_code_status_lines_and_summary(sequential):
    r, _ = sequential
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr
    assert r.stdout.rstrip('\n').splitlines()[-1] == '1 passed, 4 failed'
    lines = status_lines(r.stdout)
    assert list(lines) == [f'{n}.ipynb' for n in NOTEBOOKS]        # natural order, one line each
    assert {n: s for n, (s, _) in lines.items()} == {
        '01_pass.ipynb': 'passed', '02_fail.ipynb': 'FAILED', '03_syntax.ipynb': 'FAILED',
        '04_dies.ipynb': 'FAILED', '05_loop.ipynb': 'FAILED'}
    assert summary_rows(r.stdout) == ['01_pass.ipynb passed', '02_fail.ipynb FAILED AssertionError in cell 2',
                                      '03_syntax.ipynb FAILED SyntaxError in cell 2',
                                      '04_dies.ipynb FAILED kernel died in cell 2',
                                      '05_loop.ipynb FAILED timeout in cell 1']


def test_failing_assert_names_the_cell_and_shows_its_output(sequential):
    report = blocks(sequential[0].stdout)['02_fail.ipynb']
    assert report.startswith('in code cell 2 of 3 (In [2]): AssertionError: x should be 2, got 1')
    assert re.search(r"^--> +4 \| assert x == 2", report, re.M)        # the failing line is marked
    assert re.search(r"^    +1 \| import sys", report, re.M)          # other lines are not
    output = report.split('--- cell output (stdout/stderr) up to the failure')[1].split('--- traceback')[0]
    assert 'computing x' in output and 'a warning' in output and '[stderr]' in output
    assert 'not reached' not in output and 'cell one ran' not in output and 'never run' not in report
    traceback = report.split('--- traceback')[1]
    assert 'AssertionError' in traceback and 'Cell In[2], line 4' in traceback
    assert '\x1b[' not in report                                        # ANSI colours stripped


def test_syntax_error(sequential):
    report = blocks(sequential[0].stdout)['03_syntax.ipynb']
    assert report.startswith('in code cell 2 of 2')
    assert 'SyntaxError' in report and '\x1b[' not in report


def test_kernel_death_is_reported_with_its_stderr_and_the_run_goes_on(sequential):
    r, _ = sequential
    report = blocks(r.stdout)['04_dies.ipynb']
    assert report.startswith('in code cell 2 of 2 (In [2]): the kernel died (exit code 1)')
    assert 'about to die' in report.split("--- last lines of the kernel's stderr")[1]
    assert '05_loop.ipynb' in status_lines(r.stdout)                   # the next notebook still ran


def test_timeout_stops_the_cell_quickly(sequential):
    r, _ = sequential
    report = blocks(r.stdout)['05_loop.ipynb']
    assert report.startswith('in code cell 1 of 2 (In [1]): the cell did not finish within the 3 s limit')
    assert 'while True:' in report and 'spinning' in report
    assert status_lines(r.stdout)['05_loop.ipynb'][1] < 20


def test_passing_notebook_ran_in_its_folder_with_this_python(sequential):
    # the notebook asserts the kernel's interpreter is ours and reads data.txt next to it while cwd is elsewhere
    assert status_lines(sequential[0].stdout)['01_pass.ipynb'][0] == 'passed'


def test_workers_2_gives_the_same_results(sequential, parallel):
    (one, _), (two, seconds) = sequential, parallel
    assert two.returncode == one.returncode == 1
    assert summary_rows(two.stdout) == summary_rows(one.stdout)
    headline = lambda out: {n: b.splitlines()[0] for n, b in blocks(out).items()}
    assert headline(two.stdout) == headline(one.stdout)
    assert two.stdout.rstrip().splitlines()[-1] == '1 passed, 4 failed'
    assert seconds < 60


def test_without_save_no_file_changes(folder, snapshot, sequential, parallel):
    assert {p.name: p.read_bytes() for p in folder.glob('*.ipynb')} == snapshot
    assert sorted(p.name for p in folder.iterdir()) == sorted([*snapshot, 'data.txt'])   # no temp files left


# ------------------------------------------------------------------------------------------------- --save

def test_save_writes_outputs_of_passing_notebooks_only(tmp_path):
    folder = make_folder(tmp_path / 'nbs', ['01_pass', '02_fail'])
    os.chmod(folder / '01_pass.ipynb', 0o640)
    failing = (folder / '02_fail.ipynb').read_bytes()
    r = cli(folder / '01_pass.ipynb', folder / '02_fail.ipynb', '--save', cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r'01_pass\.ipynb +passed +[\d.]+ s \(saved\)', r.stdout)
    nb = nbformat.read(folder / '01_pass.ipynb', as_version=4)
    nbformat.validate(nb)
    assert [c.execution_count for c in nb.cells] == [1, 2, 3]
    assert nb.cells[1].outputs[0]['text'].strip() == DATA.strip()
    assert nb.metadata == META                                          # not the kernel's language_info
    assert all('execution' not in c.metadata for c in nb.cells)         # no timing metadata
    assert stat.S_IMODE((folder / '01_pass.ipynb').stat().st_mode) == 0o640
    assert (folder / '02_fail.ipynb').read_bytes() == failing          # a failed run is never written
    assert sorted(p.name for p in folder.iterdir()) == ['01_pass.ipynb', '02_fail.ipynb', 'data.txt']


# ------------------------------------------------------------------------------------- the runner function

def test_runner_function_returns_a_structured_result(folder):
    result = run_notebook(folder / '02_fail.ipynb', timeout=60)
    assert isinstance(result, NotebookResult) and not result.passed and not result.saved
    f = result.failure
    assert (f.kind, f.cell_pos, f.n_code_cells, f.execution_count) == ('error', 2, 3, 2)
    assert f.message == 'AssertionError: x should be 2, got 1'
    assert f.marked_lines == {4} and 'computing x' in f.output
    assert result.report().startswith(f'=== {result.name} failed in code cell 2 of 3 (In [2])')


def test_summary_last_line():
    ok = NotebookResult(Path('a.ipynb'), 'a.ipynb', True, 1.0)
    bad = NotebookResult(Path('b.ipynb'), 'b.ipynb', False, 2.0, CellFailure('timeout', 'slow', cell_pos=1))
    assert format_summary([ok, bad, ok]).splitlines()[-1] == '2 passed, 1 failed'


# ----------------------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize('args', [
    ['missing.ipynb'], ['notes.txt'], ['broken.ipynb'], ['empty'], ['nbs', '--bogus'], ['nbs', '--workers', '0'],
    ['nbs', '--workers', 'two'], ['nbs', '--timeout', '-1'], ['nbs', '--save=yes'],
], ids=['missing', 'not-a-notebook', 'not-json', 'no-notebooks', 'unknown-option', 'workers-0', 'workers-word',
        'timeout-negative', 'flag-with-value'])
def test_usage_errors_exit_2_with_one_line(tmp_path, args):
    (tmp_path / 'notes.txt').write_text('hi')
    (tmp_path / 'broken.ipynb').write_text('{"cells": [')
    (tmp_path / 'empty').mkdir()
    make_folder(tmp_path / 'nbs', ['01_pass'])
    r = cli(*args, cwd=tmp_path, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == ''                                               # nothing ran
    assert len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr
    assert r.stderr.startswith('run_notebook.py: error: ')


# ----------------------------------------------------------------------------- exp/ in sync (a fake repo)

EXPORTING = ["#export\ndef double(x):\n    \"Twice x.\"\n    return 2 * x", "assert double(2) == 4"]


@pytest.fixture
def repo(tmp_path) -> Path:
    "A tiny copy of the repo layout: the two tools, nbs/ with one exporting notebook, an empty exp/."
    repo = tmp_path / 'repo'
    (repo / 'nbs').mkdir(parents=True)
    (repo / 'exp').mkdir()
    for tool in ('run_notebook.py', 'notebook2script.py'): shutil.copy(ROOT / tool, repo / tool)
    make_nb(repo / 'nbs' / '00_tiny.ipynb', EXPORTING)
    return repo


def test_out_of_sync_exp_stops_the_run(repo, tmp_path):
    r = cli(cwd=tmp_path, script=repo / 'run_notebook.py')
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'exp/nb_00.py' in r.stdout and 'python notebook2script.py' in r.stdout
    assert 'nothing was run' in r.stdout and 'passed' not in r.stdout
    subprocess.run([sys.executable, 'notebook2script.py'], cwd=repo, check=True, capture_output=True)
    module = repo / 'exp' / 'nb_00.py'
    module.write_text(module.read_text() + '\nextra = 1\n')
    r = cli('nbs/00_tiny.ipynb', cwd=repo, script=repo / 'run_notebook.py')
    assert r.returncode == 1 and 'stale: exp/nb_00.py' in r.stdout, r.stdout + r.stderr


def test_in_sync_exp_runs_and_no_check_skips_the_check(repo, tmp_path):
    subprocess.run([sys.executable, 'notebook2script.py'], cwd=repo, check=True, capture_output=True)
    r = cli(cwd=tmp_path, script=repo / 'run_notebook.py')
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().splitlines()[-1] == '1 passed, 0 failed'
    (repo / 'exp' / 'nb_00.py').unlink()
    r = cli('--no-check', cwd=tmp_path, script=repo / 'run_notebook.py')
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_notebook_that_cannot_be_exported_stops_the_run(repo, tmp_path):
    make_nb(repo / 'nbs' / '00_tiny.ipynb', ["#export\ndef broken(:\n    pass"])
    r = cli(cwd=tmp_path, script=repo / 'run_notebook.py')
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'cannot check that exp/ is in sync' in r.stdout and '00_tiny.ipynb' in r.stdout
    assert 'Traceback' not in r.stdout + r.stderr
