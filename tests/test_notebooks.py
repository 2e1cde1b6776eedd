"""Every numbered lesson notebook in nbs/ runs top to bottom, in a fresh kernel, as its own test.

The lessons selected start two at a time, each kernel on one thread, when the first of them asks (on 2 cores
that beat one lesson at a time on two threads: see the test paragraph of README.md's Setup); each test waits for
its own lesson and reports it. The usual pytest tools work: `python -m pytest -k "notebook_runs and matmul"` runs one
lesson, and a failure shows run_notebook's report (cell, marked source, output, traceback). Running lessons
against a stale exp/ proves nothing, so when exp/ is out of sync no lesson starts and the sync failure is
reported once (by test_exports.py, or by the first lesson when that test is not part of the run).
"""
from types import SimpleNamespace

import pytest

from notebook2script import ROOT, find_notebooks
from run_notebook import NotebookRunner, sync_report

from conftest import selected

NOTEBOOKS = find_notebooks(ROOT / 'nbs')
# Each lesson's budget (6 minutes on a quiet 2-core machine) is measured in the README's lesson table, not
# here: a loaded machine took over 10 minutes for lesson 11's 5-epoch cell, and a slow machine is not a bug.
CELL_LIMIT = 1800


@pytest.fixture(scope='session')
def exp_sync(request) -> SimpleNamespace:
    "run_notebook's out-of-sync message ([] when exp/ is in sync), and whether a test has reported it yet."
    reported = any(item.name == 'test_exp_in_sync_with_notebooks' for item in request.session.items)
    return SimpleNamespace(problems=sync_report(NOTEBOOKS), reported=reported)


@pytest.fixture(scope='module')
def started(request, exp_sync) -> dict:
    "The selected lessons' runs, started two at a time, one thread each: {path: a Future of the result}."
    if exp_sync.problems:
        yield {}
        return
    paths = selected(request, 'test_notebook_runs', 'path')
    runner = NotebookRunner(timeout=CELL_LIMIT, workers=2, threads=1)
    try:
        yield {p: runner.submit(p) for p in paths}
    finally:
        runner.kill()  # nothing left to stop after a whole run; after Ctrl-C or `-x`, the lessons still running


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, exp_sync, started):
    if exp_sync.problems and exp_sync.reported:
        pytest.skip('exp/ is out of sync with nbs/ (reported by one failing test)')
    if exp_sync.problems:
        exp_sync.reported = True
        pytest.fail('\n'.join(exp_sync.problems), pytrace=False)
    result = started[path].result()
    if not result.passed:
        pytest.fail(result.report(), pytrace=False)
