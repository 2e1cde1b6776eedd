"""Every numbered lesson notebook in nbs/ runs top to bottom, in a fresh kernel, as its own test.

Each test calls the runner function of run_notebook.py (not a subprocess), so the usual pytest tools
work: `python -m pytest -k matmul` runs one lesson, `--junitxml` records each lesson, and a failure shows
run_notebook's report (cell, marked source, output, traceback). If exp/ is out of sync with the notebooks,
every lesson fails with the message `python run_notebook.py` would give, since running lessons against
stale modules proves nothing.
"""
from pathlib import Path

import pytest

from notebook2script import find_notebooks
from run_notebook import run_notebook, sync_report

NBS = Path(__file__).resolve().parent.parent / 'nbs'
NOTEBOOKS = find_notebooks(NBS)


@pytest.fixture(scope='session')
def exp_sync_problems() -> list[str]:
    "run_notebook's out-of-sync message for the repo ([] when exp/ matches the notebooks); checked once."
    return sync_report(NOTEBOOKS)


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, exp_sync_problems: list[str]) -> None:
    if exp_sync_problems:
        pytest.fail('\n'.join(exp_sync_problems), pytrace=False)
    result = run_notebook(path)
    if not result.passed:
        pytest.fail(result.report(), pytrace=False)
