"""Tests for notebook2script.py on fixture notebooks in tmp_path.

The CLI runs in subprocesses, with a copy of the script in tmp_path whenever the default nbs/ or exp/ is
involved, so these tests never write into the repository's exp/.
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import notebook2script as n2s

from conftest import help_into_closed_pipe, make_nb

SCRIPT = Path(n2s.__file__).resolve()


def run_cli(script: Path, *args: str, cwd: Path, env: dict | None = None, flags: tuple = ()):
    "Run a copy of notebook2script.py with this interpreter; the completed process."
    env = {**os.environ, 'PYTHONIOENCODING': 'utf-8', **(env or {})}
    return subprocess.run([sys.executable, *flags, str(script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, encoding='utf-8', timeout=60)


def project(tmp_path: Path) -> Path:
    "A throwaway project: a copy of the script in tmp_path/proj, so that its default nbs/ and exp/ are there."
    root = tmp_path / 'proj'
    (root / 'nbs').mkdir(parents=True)
    shutil.copy(SCRIPT, root / 'notebook2script.py')
    return root


def module_for(cells: list, label: str = 'nbs/00_t.ipynb') -> tuple:
    "(module text, errors, warnings) for cells (code sources or (cell_type, source)), without files."
    cells = [{'cell_type': 'code', 'source': c} if isinstance(c, str) else {'cell_type': c[0], 'source': c[1]}
             for c in cells]
    text, _, errors, warnings = n2s.notebook_module(cells, label)
    return text, errors, warnings


def body(text: str) -> str:
    "The exported code of a one-cell module: between the cell marker and the __all__ block."
    return text.split('code cell 1\n', 1)[1].split('\n\n\n# %% what', 1)[0]


def files_in(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


# ------------------------------------------------------------------------------------------ finding cells

@pytest.mark.parametrize('directive', ['#export', '# export', '#|export', '#| export', '# | export', '#EXPORT',
                                       '# Export', '#| EXPORT', '  #export  ', '#export\t'])
def test_every_directive_spelling_exports_the_cell_without_the_directive(directive):
    text, errors, warnings = module_for([f'{directive}\nx = 1\ndef f(): return x'])
    assert (errors, warnings) == ([], [])
    assert body(text) == 'x = 1\ndef f(): return x'


def test_directive_after_blank_lines_counts_as_first_line():
    text, errors, warnings = module_for(['\n   \n#export\n  \ny = 2\n\n'])
    assert (errors, warnings) == ([], []) and body(text) == 'y = 2'


@pytest.mark.parametrize('first_line', ['#exports', '# export:', '#export this', '#| exports', '#exporting'])
def test_near_miss_directive_is_not_exported_and_warns(first_line):
    text, errors, warnings = module_for(['#export\na = 1', f'{first_line}\nb = 2'])
    assert errors == [] and 'a = 1' in text and 'b = 2' not in text
    assert len(warnings) == 1 and 'nbs/00_t.ipynb, code cell 2, line 1' in warnings[0] and first_line in warnings[0]


def test_directive_on_a_later_line_warns_and_is_not_exported():
    text, errors, warnings = module_for(['c = 3\n#export\nd = 4'])
    assert text is None and errors == []
    assert len(warnings) == 1 and 'nbs/00_t.ipynb, code cell 1, line 2' in warnings[0]


def test_ordinary_comments_do_not_warn():
    text, errors, warnings = module_for(['# exponent of the learning rate\ne = 5', '#export\nf = 6'])
    assert (errors, warnings) == ([], []) and 'e = 5' not in text


def test_compiler_warnings_name_cell_and_line():
    text, errors, warnings = module_for(["#export\nimport re\n\npattern = re.compile('\\d+')"])
    assert errors == [] and len(warnings) == 1
    assert 'nbs/00_t.ipynb, code cell 1, line 4' in warnings[0] and 'escape' in warnings[0]


def test_markdown_and_raw_cells_are_never_exported():
    cells = [('markdown', '#export\nmd = 1'), ('raw', '#export\nraw = 2'), '#export\nc = 3']
    text, errors, warnings = module_for(cells)
    assert errors == [] and 'c = 3' in text and 'md = 1' not in text and 'raw = 2' not in text
    assert len(warnings) == 2 and 'markdown' in warnings[0] and 'raw' in warnings[1]


def test_string_list_and_windows_sources_give_the_same_module(tmp_path):
    src = "#export\nimport math\n\ndef area(r):\n    'Area of a circle.'\n    return math.pi * r**2\n"
    nbs = [make_nb(tmp_path / 'nbs' / '00_s.ipynb', [src]),
           make_nb(tmp_path / 'nbs' / '01_l.ipynb', [('code', src.splitlines(keepends=True))]),
           make_nb(tmp_path / 'nbs' / '02_w.ipynb', [src.replace('\n', '\r\n')])]
    dest = tmp_path / 'exp'
    n2s.write_plan(n2s.plan_modules(nbs, dest, complete=False))
    bodies = {body((dest / f'nb_0{i}.py').read_text('utf-8')) for i in range(3)}
    assert bodies == {"import math\n\ndef area(r):\n    'Area of a circle.'\n    return math.pi * r**2"}


# ------------------------------------------------------------------------------------------ module text

def test_header_markers_and_final_newline(tmp_path):
    nb = make_nb(tmp_path / 'nbs' / '01_matmul.ipynb', [
        ('markdown', '# Matmul'), '#export\nfrom exp.nb_00 import *\n\n\n', "print('not exported')",
        ('markdown', 'text'), "#export\ndef mm(a, b):\n    'Multiply.'\n    return a @ b\n\n"])
    dest = tmp_path / 'exp'
    n2s.write_plan(n2s.plan_modules([nb], dest, complete=False))
    text = (dest / 'nb_01.py').read_text('utf-8')
    header = '\n'.join(text.splitlines()[:3]).lower()
    assert 'autogenerated' in header and 'nbs/01_matmul.ipynb' in header and 'do not edit' in header
    assert '\n\n\n# %% nbs/01_matmul.ipynb, code cell 1\nfrom exp.nb_00 import *\n\n\n' in text
    assert "\n\n\n# %% nbs/01_matmul.ipynb, code cell 3\ndef mm(a, b):\n    'Multiply.'\n    return a @ b\n\n\n" in text
    assert text.endswith("__all__ = ['mm']\n") and str(tmp_path) not in text and 'not exported' not in text


def test_star_import_hands_over_the_modules_own_public_names_only(tmp_path):
    nb0 = make_nb(tmp_path / 'nbs' / '00_base.ipynb', [
        "#export\nimport gzip, math\nfrom pathlib import Path\nimport torch.nn.functional as F\n"
        "def base():\n    'One.'\n    return 1\n_private, RATE = 0, 0.1\nclass Thing: pass"])
    nb1 = make_nb(tmp_path / 'nbs' / '01_next.ipynb', [
        '#export\nfrom exp.nb_00 import *\nimport os',
        "#export\ndef more():\n    'Two, from nb_00.'\n    return base() + 1"])
    dest = tmp_path / 'exp'
    n2s.write_plan(n2s.plan_modules([nb0, nb1], dest, complete=False))
    (dest / '__init__.py').write_text('')
    program = ('from exp.nb_01 import *\nimport exp\n'
               "print(more(), sorted(k for k in dir() if not k.startswith('__')), exp.__file__)")
    r = subprocess.run([sys.executable, '-c', program], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={**os.environ, 'PYTHONPATH': str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split('] ')[0] + ']' == "2 ['exp', 'more']"  # not base (nb_00's), nor os, F, math
    assert Path(r.stdout.split('] ')[1].strip()) == dest / '__init__.py'
    assert n2s.module_names((dest / 'nb_00.py').read_text('utf-8')) == ['RATE', 'Thing', 'base']


def test_aggregate_hands_over_every_module_but_leaves_pytorchs_names_alone(tmp_path):
    root = project(tmp_path)
    make_nb(root / 'nbs' / '00_base.ipynb', ["#export\nimport torch\ndef base():\n    'One.'\n    return 1\n"
                                            "class DataLoader:\n    'A teaching version.'\ndef relu(x):\n    'Too.'"])
    make_nb(root / 'nbs' / '01_next.ipynb', ["#export\nfrom exp.nb_00 import *\n"
                                            "def more():\n    'Two.'\n    return base() + 1"])
    r = run_cli(root / 'notebook2script.py', cwd=root)
    assert r.returncode == 0 and 'wrote exp/all.py' in r.stdout, r.stderr
    text = (root / 'exp' / 'all.py').read_text('utf-8')
    assert re.search(r'^#\s+DataLoader\s+exp\.nb_00\s+\(torch\.utils\.data\.DataLoader\)', text, re.M)
    (root / 'exp' / '__init__.py').write_text('')
    program = "from exp.all import *\nprint(more(), DataLoader.__module__, relu is F.relu, 'torch' in dir())"
    r = subprocess.run([sys.executable, '-c', program], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={**os.environ, 'PYTHONPATH': str(root)})
    assert r.returncode != 0 and "name 'DataLoader' is not defined" in r.stderr  # the teaching version stays out
    program = "from exp.all import *\nprint(more(), 'relu' in dir(), 'torch' in dir(), 'plt' in dir())"
    r = subprocess.run([sys.executable, '-c', program], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={**os.environ, 'PYTHONPATH': str(root)})
    assert r.stdout.split() == ['2', 'False', 'True', 'True'], r.stderr  # our relu would hide F.relu: left out
    assert run_cli(root / 'notebook2script.py', '--check', cwd=root).returncode == 0
    (root / 'exp' / 'all.py').write_text(text + '# edited\n')
    r = run_cli(root / 'notebook2script.py', '--check', cwd=root)
    assert r.returncode == 1 and 'stale: exp/all.py' in r.stdout


def test_unicode_survives_on_an_ascii_locale(tmp_path):
    root = project(tmp_path)
    src = "#export\nα, β = 0.9, 0.99\ndef 平均(xs):\n    '计算平均值 μ.'\n    return sum(xs) / len(xs)\n"
    make_nb(root / 'nbs' / '00_unicode.ipynb', [src])
    # Python with UTF-8 mode off in the C locale uses ASCII as its default file encoding.
    env = {'LC_ALL': 'C', 'LANG': 'C', 'PYTHONCOERCECLOCALE': '0', 'PYTHONUTF8': '0'}
    r = run_cli(root / 'notebook2script.py', cwd=root, env=env, flags=('-X', 'utf8=0'))
    assert r.returncode == 0, r.stderr
    namespace = {}
    exec(compile((root / 'exp' / 'nb_00.py').read_bytes(), 'nb_00.py', 'exec'), namespace)
    assert namespace['α'] == 0.9 and namespace['平均']([1, 2, 3]) == 2 and 'α' in namespace['__all__']


# ------------------------------------------------------------------------------------------ errors: nothing is written

@pytest.mark.parametrize('cell, line, what', [
    ('#export\nx = 1\n%time y = 2', 3, 'magic'),
    ('#export\n%%timeit\nz = 3', 2, 'magic'),
    ('#export\n!ls', 2, 'magic'),
    ('#export\ndef f():\n    %time g()\n    return 1', 3, 'magic'),
    ('#export\n\ndef f(:\n    pass', 3, 'syntax error'),
    ('#export\nx = (1,\n', 2, 'syntax error'),
])
def test_magics_and_syntax_errors_name_cell_and_line(tmp_path, cell, line, what):
    good = make_nb(tmp_path / 'nbs' / '00_good.ipynb', ['#export\nok = 1'])
    bad = make_nb(tmp_path / 'nbs' / '01_bad.ipynb', ['#export\nfine = 1', ('markdown', 'text'), cell])
    with pytest.raises(n2s.ExportError) as info:
        n2s.plan_modules([good, bad], tmp_path / 'exp', complete=False)
    [message] = info.value.messages
    assert message.startswith(f'nbs/01_bad.ipynb, code cell 2, line {line}: ') and what in message.lower()


def test_cli_error_in_one_notebook_writes_no_module_at_all(tmp_path):
    root = project(tmp_path)
    make_nb(root / 'nbs' / '00_good.ipynb', ['#export\nok = 1'])
    make_nb(root / 'nbs' / '01_bad.ipynb', ['#export\nfine = 1', ('markdown', 'text'), '#export\n%time x = 1'])
    make_nb(root / 'nbs' / '02_worse.ipynb', ['#export\ndef f(:\n  pass'])
    (root / 'exp').mkdir()
    (root / 'exp' / 'nb_00.py').write_text('old = 0\n')
    r = run_cli(root / 'notebook2script.py', cwd=root)
    assert (r.returncode, r.stdout) == (2, '')
    assert r.stderr.splitlines() == [
        "error: nbs/01_bad.ipynb, code cell 2, line 2: IPython magic or shell command '%time x = 1' is not allowed"
        ' in an export cell (move it to a cell without #export)',
        "error: nbs/02_worse.ipynb, code cell 1, line 2: syntax error: invalid syntax: 'def f(:'"]
    assert files_in(root / 'exp') == {'nb_00.py': b'old = 0\n'}  # not even the good notebook's module


def test_cells_that_do_not_compile_together_are_an_error():
    text, errors, _ = module_for(['#export\nx = 1', '#export\nfrom __future__ import annotations'])
    assert text is None and len(errors) == 1 and errors[0].startswith('nbs/00_t.ipynb: the exported cells')


@pytest.mark.parametrize('content', ['{"cells": [', '[1, 2]', '{"metadata": {}}', '{"nbformat": 3, "cells": []}',
                                     '{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{}]}', b'\xff{}'])
def test_unreadable_notebook_is_a_one_line_error(tmp_path, content):
    nb = tmp_path / '03_broken.ipynb'
    nb.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(n2s.ExportError) as info:
        n2s.plan_modules([nb], tmp_path / 'out', complete=False)
    [message] = info.value.messages
    assert message.startswith(f'{nb}: not a valid notebook (') and '\n' not in message


def test_cli_bad_notebooks_are_one_line_errors(tmp_path):
    (tmp_path / 'nbs').mkdir()
    (tmp_path / 'nbs' / '03_broken.ipynb').write_text('{"cells": [')
    r = run_cli(SCRIPT, 'nbs/03_broken.ipynb', 'nbs/07_nowhere.ipynb', '--dest', 'out', cwd=tmp_path)
    assert (r.returncode, r.stdout) == (2, '')
    assert r.stderr.splitlines() == [
        'error: nbs/03_broken.ipynb: not a valid notebook (Notebook does not appear to be JSON: \'{"cells": [\')',
        'error: nbs/07_nowhere.ipynb: no such file']
    assert not (tmp_path / 'out').exists()


def test_two_notebooks_with_the_same_module_name_is_an_error_naming_both(tmp_path):
    nbs = [make_nb(tmp_path / 'nbs' / f'05_{n}.ipynb', [f'#export\n{n} = 1']) for n in ('first', 'second')]
    with pytest.raises(n2s.ExportError, match='nbs/05_first.ipynb and nbs/05_second.ipynb both export to nb_05.py'):
        n2s.plan_modules(nbs, tmp_path / 'exp', complete=False)


@pytest.mark.parametrize('name', ['04-callbacks.ipynb', '04 callbacks.ipynb', '04.5_x.ipynb'])
def test_module_name_that_is_not_an_identifier_is_an_error(tmp_path, name):
    nb = make_nb(tmp_path / 'nbs' / name, ['#export\nx = 1'])
    with pytest.raises(n2s.ExportError, match=f'nbs/{name}: module name .nb_04.* not a valid Python identifier'):
        n2s.plan_modules([nb], tmp_path / 'exp', complete=False)


def test_module_names():
    assert [n2s.module_name(Path(p)) for p in ('nbs/00_exports.ipynb', '05b_early_stopping.ipynb', '10_x_y.ipynb')] \
        == ['nb_00', 'nb_05b', 'nb_10']


# ------------------------------------------------------------------------------------------ writing

def test_unchanged_modules_are_not_rewritten_and_notebooks_without_exports_write_nothing(tmp_path):
    nb = make_nb(tmp_path / 'nbs' / '00_a.ipynb', ['#export\nx = 1'])
    plain = make_nb(tmp_path / 'nbs' / '02_plain.ipynb', [('markdown', '# Prose'), "print('hello')"])
    dest, module = tmp_path / 'exp', tmp_path / 'exp' / 'nb_00.py'
    n2s.write_plan(n2s.plan_modules([nb], dest, complete=False))
    os.utime(module, ns=(1_000_000_000, 1_000_000_000))
    report = n2s.write_plan(n2s.plan_modules([nb, plain], dest, complete=False))
    assert module.stat().st_mtime_ns == 1_000_000_000 and report[0].startswith('unchanged')
    assert report[1] == 'nbs/02_plain.ipynb: no export cells, no module written'
    make_nb(nb, ['#export\nx = 2'])
    assert n2s.write_plan(n2s.plan_modules([nb], dest, complete=False))[0].startswith('wrote')
    assert 'x = 2' in module.read_text('utf-8')
    assert sorted(p.name for p in dest.iterdir()) == ['all.py', 'nb_00.py']  # no temp files left behind


def test_default_dest_is_exp_next_to_the_script_whatever_the_cwd(tmp_path):
    root = project(tmp_path)
    make_nb(root / 'nbs' / '00_a.ipynb', ['#export\nx = 1'])
    make_nb(root / 'nbs' / '01_b.ipynb', ['#export\ny = 2'])
    cwd = tmp_path / 'somewhere'
    cwd.mkdir()
    r = run_cli(root / 'notebook2script.py', cwd=cwd)  # no argument: every numbered notebook in nbs/
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (root / 'exp').iterdir()) == ['all.py', 'nb_00.py', 'nb_01.py']
    assert not any(cwd.iterdir())
    # A notebook named from nbs/ (as a lesson's `!python ../notebook2script.py 01_b.ipynb` does) also goes to exp/.
    make_nb(root / 'nbs' / '01_b.ipynb', ['#export\ny = 3'])
    assert run_cli(root / 'notebook2script.py', '01_b.ipynb', cwd=root / 'nbs').returncode == 0
    text = (root / 'exp' / 'nb_01.py').read_text('utf-8')
    assert text.startswith('# AUTOGENERATED by notebook2script.py from nbs/01_b.ipynb') and 'y = 3' in text


def test_dest_option_and_export_from_python(tmp_path, monkeypatch):
    root = project(tmp_path)
    make_nb(root / 'nbs' / '00_a.ipynb', ['#export\nx = 1'])
    r = run_cli(root / 'notebook2script.py', 'nbs/00_a.ipynb', '--dest', 'elsewhere/mods', cwd=root)
    assert r.returncode == 0, r.stderr
    assert (root / 'elsewhere' / 'mods' / 'nb_00.py').is_file() and not (root / 'exp').exists()
    r = run_cli(root / 'notebook2script.py', '--dest=elsewhere/mods', '--check', cwd=root)
    assert r.returncode == 0 and 'in sync' in r.stdout
    monkeypatch.chdir(root / 'nbs')
    n2s.export('00_a.ipynb', dest=str(root / 'exp'))
    assert (root / 'exp' / 'nb_00.py').is_file()
    make_nb(root / 'nbs' / '00_a.ipynb', ['#export\n%time x = 1'])
    with pytest.raises(n2s.ExportError, match='00_a.ipynb, code cell 1, line 2: IPython magic'):
        n2s.export('00_a.ipynb', dest=str(root / 'exp'))


# ------------------------------------------------------------------------------------------ --check and sync_problems

def test_check_in_sync_stale_missing_and_orphaned(tmp_path, monkeypatch):
    root = project(tmp_path)
    script, exp = root / 'notebook2script.py', root / 'exp'
    make_nb(root / 'nbs' / '00_a.ipynb', ['#export\nx = 1'])
    make_nb(root / 'nbs' / '01_b.ipynb', ['#export\ny = 2'])
    assert run_cli(script, cwd=root).returncode == 0
    r = run_cli(script, '--check', cwd=root)
    assert (r.returncode, r.stdout) == (0, 'in sync: exp/ matches its notebooks (2 modules)\n')

    make_nb(root / 'nbs' / '00_a.ipynb', ['#export\nx = 10'])  # stale
    (exp / 'nb_01.py').unlink()  # missing
    (exp / 'nb_09.py').write_text('z = 3\n')  # orphaned: no notebook
    make_nb(root / 'nbs' / '02_c.ipynb', ["print('no exports')"])
    (exp / 'nb_02.py').write_text('w = 4\n')  # orphaned: no export cells any more
    before = files_in(exp)
    r = run_cli(script, '--check', cwd=tmp_path)
    expected = ['stale: exp/nb_00.py (from nbs/00_a.ipynb)', 'missing: exp/nb_01.py (from nbs/01_b.ipynb)',
                'orphaned: exp/nb_02.py (nbs/02_c.ipynb has no export cells any more)',
                'orphaned: exp/nb_09.py (no notebook in nbs/ exports to it any more)']
    assert (r.returncode, r.stdout.splitlines()) == (1, expected)
    assert files_in(exp) == before  # --check writes nothing

    spec = importlib.util.spec_from_file_location('n2s_copy', script)  # the copy: its defaults are in tmp_path
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, copy)  # dataclasses look their module up there
    spec.loader.exec_module(copy)
    assert copy.sync_problems() == expected
    assert copy.sync_problems([root / 'nbs' / '01_b.ipynb']) == [expected[1]]
    assert copy.sync_problems([root / 'nbs' / '02_c.ipynb']) == [expected[2]]  # only the notebooks given
    assert copy.sync_problems([root / 'nbs' / '01_b.ipynb'], tmp_path / 'out') == [
        f"missing: {tmp_path / 'out' / 'nb_01.py'} (from nbs/01_b.ipynb)"]


# ------------------------------------------------------------------------------------------ finding notebooks, CLI

def test_find_notebooks_in_name_order(tmp_path):
    for name in ['10_ten.ipynb', '05b_early.ipynb', '05_five.ipynb', '00a_data.ipynb', '00_zero.ipynb',
                 'readme.ipynb', 'x_01.ipynb', '03_notes.txt']:
        (tmp_path / name).write_text('{}')
    (tmp_path / '04_folder.ipynb').mkdir()
    (tmp_path / '.ipynb_checkpoints').mkdir()
    (tmp_path / '.ipynb_checkpoints' / '06_six-checkpoint.ipynb').write_text('{}')
    assert [p.name for p in n2s.find_notebooks(tmp_path)] == [
        '00_zero.ipynb', '00a_data.ipynb', '05_five.ipynb', '05b_early.ipynb', '10_ten.ipynb']


def test_help_usage_errors_and_warnings(tmp_path):
    root = project(tmp_path)
    make_nb(root / 'nbs' / '00_a.ipynb', ['#export\nx = 1', '#exports\ny = 2'])
    script = root / 'notebook2script.py'
    r = run_cli(script, '--help', cwd=root)
    assert r.returncode == 0 and '--dest' in r.stdout and '--check' in r.stdout
    for args in (['--bogus'], ['nbs/00_a.ipynb', '--chek'], ['--check=maybe'], ['--dest'], ['[1]']):
        r = run_cli(script, *args, cwd=root)
        assert r.returncode == 2 and r.stderr.startswith(('usage: notebook2script.py', 'error: ')), (args, r)
        assert 'Traceback' not in r.stderr
    assert not (root / 'exp').exists()  # a bad flag never exports first
    r = run_cli(script, cwd=root)
    assert r.returncode == 0 and 'Traceback' not in r.stderr
    assert r.stderr.startswith("warning: nbs/00_a.ipynb, code cell 2, line 1: '#exports' is not an export directive")


def test_a_notebook_of_another_project_exports_beside_its_own_nbs(tmp_path):
    "A numbered notebook outside this repo goes to the exp/ next to its own nbs/, never into this repo's exp/."
    other = tmp_path / 'mine'
    make_nb(other / 'nbs' / '20_own.ipynb', ["#export\ndef own():\n    'Mine.'\n    return 20"])
    r = run_cli(SCRIPT, str(other / 'nbs' / '20_own.ipynb'), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (other / 'exp' / 'nb_20.py').is_file() and not (n2s.ROOT / 'exp' / 'nb_20.py').exists()
    loose = make_nb(tmp_path / 'loose' / '21_loose.ipynb', ['#export\nz = 1'])
    r = run_cli(SCRIPT, str(loose), cwd=tmp_path)
    assert r.returncode == 2 and 'not in a folder named nbs/' in r.stderr and '--dest DIR' in r.stderr
    assert not (tmp_path / 'loose' / 'exp').exists()


def test_orphan_message_names_the_notebook_that_wrote_the_module(tmp_path):
    root = project(tmp_path)
    make_nb(root / 'nbs' / '00_a.ipynb', ['#export\nx = 1'])
    make_nb(root / 'nbs' / '05_gone.ipynb', ['#export\ny = 1'])
    assert run_cli(root / 'notebook2script.py', cwd=root).returncode == 0
    (root / 'nbs' / '05_gone.ipynb').unlink()
    r = run_cli(root / 'notebook2script.py', '--check', cwd=root)
    assert ('orphaned: exp/nb_05.py (no notebook in nbs/ exports to it any more; it was written from'
            ' nbs/05_gone.ipynb)') in r.stdout


def test_help_into_a_closed_pipe_is_quiet(tmp_path):
    "`notebook2script.py --help | head -1`: the reader leaves early, and no BrokenPipeError is shown."
    for r in help_into_closed_pipe(SCRIPT, tmp_path):
        assert r.stdout.startswith('usage: notebook2script.py') and r.stderr == '', r.stderr



@pytest.mark.parametrize('command', ['notebook2script', 'run_notebook'])
def test_tools_are_installed_as_commands(command, tmp_path):
    "pip's editable install ([project.scripts]) puts both tools beside this Python, with the same options."
    exe = Path(sys.executable).parent / command
    assert exe.exists(), f'{exe} missing: install the repo with `python -m pip install -e .`'
    r = subprocess.run([str(exe), '--help'], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith(f'usage: {command}')
    r = subprocess.run([str(exe), '--bogus'], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and 'usage:' in r.stderr and 'Traceback' not in r.stderr
