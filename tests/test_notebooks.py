"""Every numbered lesson notebook in nbs/ runs top to bottom, in a fresh kernel, as its own test.

Each test calls run_notebook.py's runner function, so the usual pytest tools work: `python -m pytest -k
"notebook_runs and matmul"` runs one lesson, and a failure shows run_notebook's report (cell, marked source,
output, traceback). Running lessons against a stale exp/ proves nothing, so when exp/ is out of sync the
lessons are skipped and the sync failure is reported once (by test_exports.py, or by the first lesson when
that test is not part of the run).
"""
from types import SimpleNamespace

import pytest

from notebook2script import ROOT, find_notebooks
from run_notebook import run_notebook, sync_report

NOTEBOOKS = find_notebooks(ROOT / 'nbs')


@pytest.fixture(scope='session')
def exp_sync(request) -> SimpleNamespace:
    "run_notebook's out-of-sync message ([] when exp/ is in sync), and whether a test has reported it yet."
    reported = any(item.name == 'test_exp_in_sync_with_notebooks' for item in request.session.items)
    return SimpleNamespace(problems=sync_report(NOTEBOOKS), reported=reported)


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, exp_sync):
    if exp_sync.problems and exp_sync.reported:
        pytest.skip('exp/ is out of sync with nbs/ (reported by one failing test)')
    if exp_sync.problems:
        exp_sync.reported = True
        pytest.fail('\n'.join(exp_sync.problems), pytrace=False)
    result = run_notebook(path)
    if not result.passed:
        pytest.fail(result.report(), pytrace=False)
