"""Repo-wide checks on the generated exp/ modules and the committed notebooks."""
import ast
import builtins
import importlib
import os
import re
import subprocess
import symtable
import sys
from pathlib import Path

import nbformat
import pytest

from notebook2script import LESSON_LIBRARIES, TORCH_NAMESPACES, module_names, patched, sync_problems

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted((ROOT / 'exp').glob('nb_*.py'))
NOTEBOOKS = sorted((ROOT / 'nbs').glob('[0-9]*.ipynb'))


def _defined_names(path: Path) -> dict[str, int]:
    "Top-level names a module defines (def, class, assignment; not `@patch`ed methods), with their line numbers."
    names, text = {}, path.read_text(encoding='utf-8')
    methods = patched(text)
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name not in methods: names[node.name] = node.lineno
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name): names[n.id] = node.lineno
    return names


def test_exp_in_sync_with_notebooks():
    problems = sync_problems()
    assert not problems, 'exp/ is out of sync; run `python notebook2script.py`:\n' + '\n'.join(problems)


@pytest.mark.parametrize('path', MODULES, ids=lambda p: p.stem)
def test_module_imports(path):
    importlib.import_module(f'exp.{path.stem}')


def test_no_name_defined_in_two_modules():
    seen: dict[str, str] = {}
    clashes = []
    for path in MODULES:
        for name, line in _defined_names(path).items():
            if name.startswith('__'): continue
            if name in seen: clashes.append(f'{name}: {seen[name]} and {path.name}:{line}')
            else: seen[name] = f'{path.name}:{line}'
    assert not clashes, 'names defined in more than one module:\n' + '\n'.join(clashes)


@pytest.mark.parametrize('path', MODULES, ids=lambda p: p.stem)
def test_public_functions_and_classes_have_docstrings(path):
    text = path.read_text(encoding='utf-8')
    missing = [f'{path.name}:{n.lineno} {n.name}' for n in ast.parse(text).body
               if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
               and not n.name.startswith('_') and n.name not in patched(text)
               and not (ast.get_docstring(n) or '').strip()]
    assert not missing, 'exported without a docstring:\n' + '\n'.join(missing)


@pytest.mark.parametrize('path', MODULES, ids=lambda p: p.stem)
def test_modules_import_only_earlier_lessons(path):
    "A lesson builds on earlier lessons only: its module star-imports earlier modules, never itself or a later one."
    found = re.findall(r'^from exp\.(\w+) import', path.read_text(encoding='utf-8'), flags=re.M)
    assert all(m.startswith('nb_') and m < path.stem for m in found), f'{path.name} imports {found}'


@pytest.mark.parametrize('path', MODULES, ids=lambda p: p.stem)
def test_each_module_hands_over_its_own_names_only(path):
    "`from exp.nb_XX import *` gives exactly the public names that module defines: no libraries, no earlier lesson."
    names = {}
    exec(f'from exp.{path.stem} import *', names)
    own = {n for n in _defined_names(path) if not n.startswith('_')}
    assert set(names) - {'__builtins__'} == own


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_valid_and_executed(path):
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4
    nbformat.validate(nb)
    counts = [c.execution_count for c in nb.cells if c.cell_type == 'code']
    assert all(c is not None for c in counts), f'{path.name}: committed without running every code cell'
    assert counts == list(range(1, len(counts) + 1)), f'{path.name}: not run top to bottom in one fresh kernel'
    assert set(nb.metadata) <= {'kernelspec', 'language_info'}, f'{path.name}: extra metadata {set(nb.metadata)}'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_no_machine_paths(path):
    text = path.read_text(encoding='utf-8')
    bad = sorted(set(re.findall(r'(?:/work/|/root/|/home/|/tmp/|[A-Z]:\\\\Users)[^\s"\']*', text)))
    assert not bad, f'{path.name} contains machine-specific paths: {bad[:5]}'


def test_modules_import_from_any_folder(tmp_path):
    "The editable install makes `exp` importable in a downstream script, with no sys.path tricks."
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    r = subprocess.run([sys.executable, '-c', 'from exp.all import *; print(test_eq.__module__, Learner.__module__)'],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ['exp.nb_00', 'exp.nb_04']


def _aggregate() -> dict:
    names = {}
    exec('from exp.all import *', names)
    names.pop('__builtins__')
    return names


def test_aggregate_hands_over_every_lesson_name_and_the_libraries():
    "`from exp.all import *`: every module's names (less the teaching versions below), the lessons' libraries."
    names = _aggregate()
    defined = {n for path in MODULES for n in module_names(path.read_text(encoding='utf-8'))}
    assert set(names) - defined - set(LESSON_LIBRARIES) == set(), 'stray names'
    assert {'torch', 'tensor', 'nn', 'F', 'plt', 'math', 'Learner', 'get_fashion', 'xresnet18'} <= set(names)
    assert not {'gzip', 'pickle', 'tempfile', 're', 'os', 'sys', 'Path', 'exp', 'copy', 'bisect'} & set(names)


def test_aggregate_never_shadows_pytorch():
    "No name the aggregate hands over is one of torch.nn, F, torch.utils.data or torch.optim bound to another object."
    spaces = [importlib.import_module(ns) for ns in TORCH_NAMESPACES]
    clashes = [f'{n} (also {ns.__name__}.{n})' for n, obj in _aggregate().items() for ns in spaces
               if hasattr(ns, n) and getattr(ns, n) is not obj]
    assert clashes == []
    assert {'DataLoader', 'Module', 'LayerNorm', 'conv2d', 'cross_entropy'} & set(_aggregate()) == set()


def test_aggregate_lists_what_it_leaves_out():
    "Each teaching version the aggregate leaves out is named in exp/all.py with its module, so a reader can find it."
    text = (ROOT / 'exp' / 'all.py').read_text(encoding='utf-8')
    for name, module in (('DataLoader', 'nb_03'), ('Module', 'nb_02'), ('conv2d', 'nb_06')):
        assert re.search(rf'^#\s+{name}\s+exp\.{module}\b', text, re.M), name


def _global_uses(table: symtable.SymbolTable) -> set:
    "Global names read anywhere in a module (at the top level or inside its functions and classes)."
    found = {s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()}
    return found.union(*(_global_uses(t) for t in table.get_children()))


@pytest.mark.parametrize('path', MODULES, ids=lambda p: p.stem)
def test_every_global_a_module_reads_exists(path):
    "A name a module takes from an earlier module's star import must be one that import hands over."
    module = importlib.import_module(f'exp.{path.stem}')
    uses = _global_uses(symtable.symtable(path.read_text(encoding='utf-8'), path.name, 'exec'))
    assert sorted(n for n in uses if not hasattr(module, n) and not hasattr(builtins, n)) == []


def test_downstream_test_file_collects_only_its_own_tests(tmp_path):
    "The test helpers a star import hands over (`test_eq`, ...) are not collected by pytest as tests."
    (tmp_path / 'test_mine.py').write_text('from exp.all import *\n\n'
                                           'def test_mine():\n    test_eq(1 + 1, 2)\n')
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'test_mine.py'], cwd=tmp_path,
                       capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)}, timeout=120)
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith('1 passed'), r.stdout + r.stderr


def test_readme_callback_order_table_is_true():
    "README's table of `_order` values lists every exported callback with the value it has."
    names = _aggregate()
    text = (ROOT / 'README.md').read_text(encoding='utf-8').split('### Callback order', 1)[1].split('\n\n##', 1)[0]
    rows = re.findall(r'^\| (-?\d+) \| (.+?) \|', text, re.M)
    table = {cls: int(order) for order, cells in rows for cls in re.findall(r'`(\w+)`', cells)}
    callbacks = {n for n, o in names.items() if isinstance(o, type) and issubclass(o, names['Callback'])}
    assert {n: names[n]._order for n in table} == table
    assert callbacks - set(table) == set(), 'callbacks missing from the table'
