"""run_notebook.py on fixture notebooks in temp folders, through the CLI and the runner function.

Kernel starts are the cost (1-3 s each), so one folder of five notebooks is run twice (--workers 1 and
--workers 2) and most checks read those two runs.
"""
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from run_notebook import NotebookRunner, run_notebook

from conftest import META, help_into_closed_pipe, make_nb

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / 'run_notebook.py'
DATA = 'hello from the notebook folder\n'
NOTEBOOKS = {
    '01_pass': [f'import os, sys\nassert os.path.realpath(sys.executable) == os.path.realpath({sys.executable!r})',
                "text = open('data.txt').read()\nprint(text)", f'assert text == {DATA!r}, text'],
    '02_fail': ["x = 1\nprint('cell one ran')", ('markdown', 'a markdown cell between'),
                "import sys\nprint('computing x')\nprint('a warning', file=sys.stderr)\n"
                "assert x == 2, f'x should be 2, got {x}'\nprint('not reached')", "print('never run')"],
    '03_syntax': ['y = 1', 'z = (1,\nprint(y)'],
    '04_dies': ["print('still alive')",  # the pause lets ipykernel copy what was written to the kernel's stderr
                "import os, time\nos.write(2, b'about to die\\n')\ntime.sleep(0.5)\nos._exit(1)"],
    '05_loop': ["print('spinning')\nwhile True:\n    pass", "print('never run')"],
}


def make_folder(folder: Path, names: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'data.txt').write_text(DATA)
    for name in names:
        make_nb(folder / f'{name}.ipynb', NOTEBOOKS[name])
    return folder


def cli(*args, cwd: Path, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    "Run a run_notebook.py as a learner would, from `cwd`."
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def blocks(stdout: str) -> dict:
    "The failure report of each notebook, by notebook file name."
    found = re.findall(r'^=== (\S+) failed (.*?)(?=^\S+ +(?:passed|FAILED) |^notebook +result|\Z)', stdout, re.M | re.S)
    return {Path(name).name: text for name, text in found}


def summary_rows(stdout: str) -> list:
    "The summary table's rows as 'file-name status detail', without the seconds."
    table = stdout[stdout.rindex('\nnotebook '):].strip().splitlines()
    rows = [re.fullmatch(r'(\S+) +(passed|FAILED) +[\d.]+ *(.*)', row) for row in table[2:-1]]
    return [f'{Path(m[1]).name} {m[2]} {m[3]}'.strip() for m in rows]


@pytest.fixture(scope='module')
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp('nbs'), list(NOTEBOOKS))


@pytest.fixture(scope='module')
def snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope='module', params=[1, 2], ids=['workers1', 'workers2'])
def run(request, folder, snapshot, tmp_path_factory) -> subprocess.CompletedProcess:
    "The folder run from elsewhere with a 3 s cell timeout, one notebook at a time, then two at a time."
    return cli(folder, '--timeout', '3', '--workers', request.param, cwd=tmp_path_factory.mktemp('elsewhere'))


# ------------------------------------------------------------------------------------ one run, five notebooks

def test_exit_code_status_lines_and_summary(run):
    assert run.returncode == 1 and 'Traceback' not in run.stderr, run.stdout + run.stderr
    statuses = re.findall(r'^\S+/(\d\d_\w+)\.ipynb +(passed|FAILED) +[\d.]+ s$', run.stdout, re.M)
    assert sorted(statuses) == [('01_pass', 'passed'), ('02_fail', 'FAILED'), ('03_syntax', 'FAILED'),
                                ('04_dies', 'FAILED'), ('05_loop', 'FAILED')]  # one line each as they finish
    assert summary_rows(run.stdout) == ['01_pass.ipynb passed', '02_fail.ipynb FAILED AssertionError in cell 2',
                                        '03_syntax.ipynb FAILED SyntaxError in cell 2',
                                        '04_dies.ipynb FAILED kernel died in cell 2',
                                        '05_loop.ipynb FAILED timeout in cell 1']
    assert run.stdout.rstrip().splitlines()[-1] == '1 passed, 4 failed'


def test_failing_assert_names_the_cell_and_shows_its_output(run):
    report = blocks(run.stdout)['02_fail.ipynb']
    assert report.startswith('in code cell 2 of 3 (In [2]): AssertionError: x should be 2, got 1')
    assert re.search(r'^--> +4 \| assert x == 2', report, re.M)  # the failing line is marked
    assert re.search(r'^    +1 \| import sys', report, re.M)  # the others are not
    output = report.split('--- cell output (stdout/stderr) up to the failure')[1].split('--- traceback')[0]
    assert 'computing x' in output and 'a warning' in output and '[stderr]' in output
    assert 'not reached' not in output and 'cell one ran' not in output and 'never run' not in report
    assert 'Cell In[2], line 4' in report.split('--- traceback')[1] and '\x1b[' not in report  # no ANSI colours


def test_syntax_error_kernel_death_and_timeout(run):
    reports = blocks(run.stdout)
    assert reports['03_syntax.ipynb'].startswith('in code cell 2 of 2') and 'SyntaxError' in reports['03_syntax.ipynb']
    dies = reports['04_dies.ipynb']
    assert dies.startswith('in code cell 2 of 2 (In [2]): the kernel died (exit code 1)')
    assert 'about to die' in dies.split("--- last lines of the kernel's stderr")[1]
    loop = reports['05_loop.ipynb']
    assert loop.startswith('in code cell 1 of 2 (In [1]): the cell did not finish within the 3 s limit')
    assert 'while True:' in loop and 'spinning' in loop


def test_without_save_no_file_changes(folder, snapshot, run):
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == snapshot  # nor temp files left behind


# ------------------------------------------------------------------------------------------------- --save

def test_save_writes_outputs_of_passing_notebooks_only(tmp_path):
    folder = make_folder(tmp_path / 'nbs', ['01_pass', '02_fail'])
    os.chmod(folder / '01_pass.ipynb', 0o640)
    failing = (folder / '02_fail.ipynb').read_bytes()
    r = cli(folder / '01_pass.ipynb', folder / '02_fail.ipynb', '--save', cwd=tmp_path)
    assert r.returncode == 1 and re.search(r'01_pass\.ipynb +passed +[\d.]+ s \(saved\)', r.stdout), r.stdout
    nb = nbformat.read(folder / '01_pass.ipynb', as_version=4)
    nbformat.validate(nb)
    assert [c.execution_count for c in nb.cells] == [1, 2, 3]
    assert nb.cells[1].outputs[0]['text'].strip() == DATA.strip()
    assert nb.metadata == META and all('execution' not in c.metadata for c in nb.cells)  # no timing metadata
    assert stat.S_IMODE((folder / '01_pass.ipynb').stat().st_mode) == 0o640
    assert (folder / '02_fail.ipynb').read_bytes() == failing  # a failed run is never written
    assert sorted(p.name for p in folder.iterdir()) == ['01_pass.ipynb', '02_fail.ipynb', 'data.txt']


def test_runner_function_returns_a_structured_result(folder):
    result = run_notebook(folder / '02_fail.ipynb', timeout=60)
    assert not result.passed and not result.saved
    f = result.failure
    assert (f.kind, f.cell_pos, f.n_code_cells, f.execution_count, f.marked_lines) == ('error', 2, 3, 2, {4})
    assert f.message == 'AssertionError: x should be 2, got 1' and 'computing x' in f.output
    assert result.report().startswith(f'=== {result.name} failed in code cell 2 of 3 (In [2])')


def test_threads_reach_the_kernel_and_kill_stops_a_running_notebook(tmp_path):
    threads = make_nb(tmp_path / '01_threads.ipynb', ['import os, torch\nprint(os.environ["OMP_NUM_THREADS"])\n'
                                                     'assert torch.get_num_threads() == 1'])
    loop = make_folder(tmp_path, ['05_loop']) / '05_loop.ipynb'
    with NotebookRunner(timeout=60, workers=2, threads=1) as runner:
        done, spinning = runner.submit(threads), runner.submit(loop)
        assert done.result().passed, done.result().report()
        runner.kill()  # the loop would run for its 60 s timeout; a killed kernel ends it at once
        assert not spinning.result(timeout=20).passed  # killed, or stopped before its first cell if still starting


# ----------------------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize('args', [
    ['missing.ipynb'], ['notes.txt'], ['broken.ipynb'], ['empty'], ['nbs', '--bogus'], ['nbs', '--workers', '0'],
    ['nbs', '--workers', 'two'], ['nbs', '--timeout', '-1'], ['nbs', '--save=yes'], ['nbs', '--threads', '0'],
], ids=['missing', 'not-a-notebook', 'not-json', 'no-notebooks', 'unknown-option', 'workers-0', 'workers-word',
        'timeout-negative', 'flag-with-value', 'threads-0'])
def test_usage_errors_exit_2_with_the_usage_line(tmp_path, args):
    (tmp_path / 'notes.txt').write_text('hi')
    (tmp_path / 'broken.ipynb').write_text('{"cells": [')
    (tmp_path / 'empty').mkdir()
    make_folder(tmp_path / 'nbs', ['01_pass'])
    r = cli(*args, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (2, ''), r.stdout + r.stderr  # nothing ran
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith('usage: run_notebook.py') and lines[-1].startswith('run_notebook.py: error: ')
    assert 'Traceback' not in r.stderr


def test_usage_errors_say_what_is_wrong_in_plain_words(tmp_path):
    make_folder(tmp_path / 'nbs', ['01_pass'])
    assert 'unrecognized arguments: --bogus' in cli('nbs', '--bogus', cwd=tmp_path).stderr
    assert 'argument --timeout: expected one argument' in cli('nbs', '--timeout', cwd=tmp_path).stderr
    assert "--workers: takes a positive whole number, got 'two'" in cli('nbs', '--workers', 'two', cwd=tmp_path).stderr


def test_help_into_a_closed_pipe_is_quiet(tmp_path):
    "`run_notebook.py --help | head -1`: the reader leaves early, and no BrokenPipeError is shown."
    for r in help_into_closed_pipe(SCRIPT, tmp_path):
        assert r.stdout.startswith('usage: run_notebook.py') and r.stderr == '', r.stderr



# ----------------------------------------------------------------------------- exp/ in sync (a fake repo)

@pytest.fixture
def repo(tmp_path) -> Path:
    "A tiny copy of the repo layout: the two tools, nbs/ with one exporting notebook, an empty exp/."
    repo = tmp_path / 'repo'
    (repo / 'exp').mkdir(parents=True)
    for tool in ('run_notebook.py', 'notebook2script.py'):
        shutil.copy(ROOT / tool, repo / tool)
    make_nb(repo / 'nbs' / '00_tiny.ipynb', ['#export\ndef double(x):\n    "Twice x."\n    return 2 * x',
                                             'assert double(2) == 4'])
    return repo


def test_out_of_sync_exp_stops_the_run(repo, tmp_path):
    r = cli(cwd=tmp_path, script=repo / 'run_notebook.py')
    assert r.returncode == 1 and 'nothing was run' in r.stdout and 'passed' not in r.stdout, r.stdout + r.stderr
    assert 'missing: exp/nb_00.py' in r.stdout and 'python notebook2script.py' in r.stdout
    make_nb(repo / 'nbs' / '00_tiny.ipynb', ['#export\ndef broken(:\n    pass'])
    r = cli(cwd=tmp_path, script=repo / 'run_notebook.py')
    assert r.returncode == 1 and 'cannot check that exp/ is in sync' in r.stdout and '00_tiny.ipynb' in r.stdout
    assert 'Traceback' not in r.stdout + r.stderr


def test_in_sync_exp_runs_and_no_check_skips_the_check(repo, tmp_path):
    subprocess.run([sys.executable, 'notebook2script.py'], cwd=repo, check=True, capture_output=True)
    r = cli(cwd=tmp_path, script=repo / 'run_notebook.py')
    assert r.returncode == 0 and r.stdout.rstrip().endswith('1 passed, 0 failed'), r.stdout + r.stderr
    (repo / 'exp' / 'nb_00.py').unlink()
    assert cli('--no-check', cwd=tmp_path, script=repo / 'run_notebook.py').returncode == 0


def test_a_failure_in_generated_code_names_the_notebook_cell_it_came_from(tmp_path):
    "A traceback through exp/nb_XX.py also names the notebook cell and line: the learner edits notebooks, not exp/."
    (tmp_path / 'mods').mkdir()
    (tmp_path / 'mods' / 'nb_13.py').write_text('# header\n\n\n# %% nbs/13_text.ipynb, code cell 4\ndef tokenize(s):\n'
                                                 "    'Split.'\n    raise ValueError('no text')\n")
    make_nb(tmp_path / 'nbs' / '01_uses.ipynb', [f'import sys; sys.path.insert(0, {str(tmp_path / "mods")!r})',
                                                 'from nb_13 import tokenize\ntokenize("")'])
    r = cli(tmp_path / 'nbs' / '01_uses.ipynb', '--no-check', cwd=tmp_path)
    assert r.returncode == 1
    origin = r.stdout.split('--- the generated lines in this traceback come from')[1]
    assert 'nb_13.py, line 7: nbs/13_text.ipynb, code cell 4, line 4' in origin
