"""Export the `#export` cells of the notebooks in nbs/ into Python modules in exp/.

    python notebook2script.py                         # every numbered notebook in nbs/
    python notebook2script.py nbs/01_matmul.ipynb     # one (or several) notebooks, or folders of them
    python notebook2script.py --dest DIR              # write somewhere other than exp/
    python notebook2script.py --check                 # write nothing; exit 1 if exp/ is out of date

An export cell is a code cell whose first non-blank line is an export directive (`#export`, `# export`,
`#|export`, `#| export`, `# | export`, any case). Its other lines go into `exp/nb_XX.py`, where XX is the
part of the notebook's file name before the first `_`, after a marker naming the cell
(`# %% nbs/04_callbacks.ipynb, code cell 20`). Numbered notebooks are zero-padded, so name order is
lesson order.

Each module ends with an `__all__` that makes `from exp.nb_XX import *` hand over exactly the public names
(no leading `_`) that its own export cells define: not what it imports (torch, the earlier lessons' modules),
so a module's plumbing (gzip, Path, ...) stays private and each name has one home. A lesson imports, in its
first cell, the earlier lessons it builds on.

With `--check`, lines like `stale: exp/nb_01.py (from nbs/01_matmul.ipynb)` name every module that is
stale, missing or orphaned (its notebook is gone or has no export cells any more).
Exit codes: 0 success, 1 `--check` found differences, 2 bad input or usage.

Every export also writes `all.py` beside the modules (`--check` of every notebook checks it), the aggregate:
`from exp.all import *` hands over every module's names and the libraries the lessons use (LESSON_LIBRARIES),
leaving out the lessons' teaching versions of what PyTorch has under the same name (TORCH_NAMESPACES).

From Python: `export('05_anneal.ipynb')` (a lesson's last cell) raises ExportError on failure.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import symtable
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
GENERATOR = 'notebook2script.py'
DIRECTIVE = re.compile(r'#\s*\|?\s*export\s*', re.IGNORECASE)  # a whole (stripped) line
NEAR_DIRECTIVE = re.compile(r'#\s*\|?\s*export', re.IGNORECASE)  # the start of a (stripped) line
AGGREGATE = 'all.py'  # `from exp.all import *`: the whole library, written beside the lesson modules
LIBRARY_IMPORTS = ('import math, statistics, time', 'from functools import partial', 'import torch',
                   'from torch import tensor, nn, optim', 'import torch.nn.functional as F',
                   'import matplotlib.pyplot as plt')
LESSON_LIBRARIES = ('math', 'statistics', 'time', 'partial', 'torch', 'tensor', 'nn', 'F', 'optim', 'plt')
TORCH_NAMESPACES = ('torch.nn', 'torch.nn.functional', 'torch.utils.data', 'torch.optim')


class ExportError(Exception):
    """Bad input for the exporter; each message is one line naming the file (and cell) at fault."""

    def __init__(self, *messages: str) -> None:
        super().__init__(*messages)
        self.messages = list(messages)

    def __str__(self) -> str:
        more = len(self.messages) - 1
        return self.messages[0] + (f' (and {more} more error{"s" * (more > 1)})' if more > 0 else '')


# --------------------------------------------------------------------------- naming files

def shown(path: Path, bases: tuple[Path, ...] | None = None) -> str:
    """`path` for messages: relative to the first of `bases` (default: repo root, cwd) holding it, else absolute."""
    path = Path(path).resolve()
    for base in bases or (ROOT, Path.cwd()):
        if path.is_relative_to(base.resolve()):
            return path.relative_to(base.resolve()).as_posix()
    return str(path)


# --------------------------------------------------------------------------- finding and reading notebooks

def find_notebooks(folder: Path) -> list[Path]:
    """Numbered notebooks (the name starts with a digit) directly in `folder`, in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f'{shown(folder)}: no such folder of notebooks')
    return sorted(p for p in folder.glob('[0-9]*.ipynb') if p.is_file())


def module_name(notebook: Path) -> str:
    """`nb_` + the part of the notebook's name before the first `_`: `05b_early_stopping.ipynb` -> `nb_05b`."""
    return 'nb_' + Path(notebook).stem.split('_', 1)[0]


def read_cells(notebook: Path, label: str) -> list:
    """The cells of a valid nbformat v4 notebook; ExportError naming `label` if it is missing or invalid."""
    import nbformat
    invalid: dict = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # e.g. nbformat's MissingIDFieldWarning
            nb = nbformat.read(notebook, as_version=4, capture_validation_error=invalid)
    except FileNotFoundError:
        raise ExportError(f'{label}: no such file') from None
    except IsADirectoryError:
        raise ExportError(f'{label}: is a folder, not a notebook') from None
    except OSError as e:
        raise ExportError(f'{label}: cannot read ({e.strerror or e})') from None
    except Exception as e:  # not UTF-8, not JSON, not a notebook, cannot be converted to v4
        why = (getattr(e, 'message', None) or str(e) or type(e).__name__).splitlines()[0]
        raise ExportError(f'{label}: not a valid notebook ({why})') from None
    if invalid:
        raise ExportError(f"{label}: not a valid notebook ({invalid['ValidationError'].message})")
    return nb.cells


# --------------------------------------------------------------------------- export cells to module text

def is_directive(line: str) -> bool:
    """True for an export directive line: `#export`, `# export`, `#|export`, `#| export`, `# | export`, any case."""
    return DIRECTIVE.fullmatch(line.strip()) is not None


def is_near_directive(line: str) -> bool:
    """True for a line that looks like an export directive but is not one (`#exports`, `# export:`)."""
    return NEAR_DIRECTIVE.match(line.strip()) is not None and not is_directive(line)


def check_code(code: str, where: str) -> tuple[list[str], list[str]]:
    """Compile one export cell; (errors, warnings) naming the cell and the line (counted from the cell's top)."""
    errors = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            compile(code, where, 'exec', dont_inherit=True)
        except SyntaxError as e:
            text = (e.text or '').strip()
            if text.startswith(('%', '!')):
                errors.append(f'{where}, line {e.lineno or 1}: IPython magic or shell command {text!r} is not allowed'
                              ' in an export cell (move it to a cell without #export)')
            else:
                errors.append(f'{where}, line {e.lineno or 1}: syntax error: {e.msg}: {text!r}')
        except ValueError as e:  # e.g. null bytes in the source
            errors.append(f'{where}: cannot compile: {e}')
    return errors, [f'warning: {where}, line {w.lineno}: {w.message}' for w in caught]


def export_blocks(cells: list, label: str) -> tuple[list[tuple[int, str]], list[str], list[str]]:
    """The (code cell number, code) of each export cell, plus errors and warnings naming the cells at fault."""
    blocks, errors, found, number = [], [], [], 0
    for index, cell in enumerate(cells, 1):
        lines = re.split(r'\r\n|\r|\n', cell['source'])
        first = next((i for i, line in enumerate(lines) if line.strip()), None)
        if cell['cell_type'] != 'code':
            if first is not None and NEAR_DIRECTIVE.match(lines[first].strip()):
                found.append(f"warning: {label}, cell {index} ({cell['cell_type']}): starts with"
                             f' {lines[first].strip()!r} but only code cells are exported')
            continue
        number += 1
        where = f'{label}, code cell {number}'
        if first is not None and is_near_directive(lines[first]):
            found.append(f'warning: {where}, line {first + 1}: {lines[first].strip()!r} is not an export'
                         " directive (use '#export' alone on the line); cell not exported")
        found += [f'warning: {where}, line {i + 1}: {line.strip()!r} is ignored: an export directive must be'
                  ' the first non-blank line of the cell; cell not exported'
                  for i, line in enumerate(lines) if i != first and is_directive(line)]
        if first is None or not is_directive(lines[first]):
            continue
        body = '\n'.join(lines[first + 1:]).rstrip()
        if not body.strip():
            found.append(f'warning: {where}: export cell has no code')
            continue
        # Compile with the directive blanked out, so that line numbers count from the top of the cell.
        cell_errors, cell_warnings = check_code('\n' * (first + 1) + body, where)
        errors, found = errors + cell_errors, found + cell_warnings
        blocks.append((number, re.sub(r'\A([ \t]*\n)+', '', body)))
    return blocks, errors, found


def patched(code: str) -> set[str]:
    """Names of the top-level functions decorated with `@patch`: methods of a class, not names of the module."""
    return {n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)
            and any(getattr(d, 'id', None) == 'patch' for d in n.decorator_list)}


def own_names(code: str, label: str) -> list[str]:
    """The public names (no leading `_`) that `code` defines itself, less `@patch`ed methods: its `__all__`."""
    names = {s.get_name() for s in symtable.symtable(code, label, 'exec').get_symbols() if s.is_assigned()}
    return sorted(n for n in names - patched(code) if not n.startswith('_'))


def render_all(names: list[str], start: str = '') -> str:
    """`__all__ = ['a', 'b']` wrapped to 120 columns; with `start='from m import ('`: `from m import (a, b)`."""
    items, close = (names, ')') if start else (map(repr, names), ']')
    lines, line, indent = [], start or '__all__ = [', '    '
    for item in items:
        if len(line) + len(item) > 116:
            lines, line = lines + [line.rstrip()], indent
        line += item + ', '
    return '\n'.join(lines + [line.removesuffix(', ') + close])


def render_module(label: str, module: str, blocks: list[tuple[int, str]]) -> str:
    """Module text: a header, each block after its cell marker, then the `__all__` block; one final newline."""
    header = (f'# AUTOGENERATED by {GENERATOR} from {label}: do not edit this file.\n'
              f'# Edit the notebook instead, then run: python {GENERATOR} {label}\n'
              '# Each block below is preceded by the notebook cell it came from (code cells counted from 1).')
    parts = [header] + [f'# %% {label}, code cell {number}\n{code}' for number, code in blocks]
    names = own_names('\n\n'.join(parts), label)
    parts.append(f'# %% what `from exp.{module} import *` hands over: the names defined above (see {GENERATOR})\n'
                 + render_all(names))
    return '\n\n\n'.join(parts) + '\n'


def module_names(text: str) -> list[str]:
    """The `__all__` of a generated module's text ([] if it has none)."""
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and [getattr(t, 'id', None) for t in node.targets] == ['__all__']:
            return list(ast.literal_eval(node.value))
    return []


def torch_names() -> dict[str, str]:
    """Every public name in TORCH_NAMESPACES, with the first namespace that defines it."""
    import importlib
    found: dict[str, str] = {}
    for ns in TORCH_NAMESPACES:
        for name in dir(importlib.import_module(ns)):
            if not name.startswith('_'): found.setdefault(name, ns)
    return found


def render_aggregate(modules: dict[str, str]) -> str:
    """`exp/all.py`: star-imports every module (by name, in lesson order), leaves out the teaching versions that
    share a name with PyTorch's, and hands over the rest plus the libraries the lessons use."""
    theirs, ours = torch_names(), {m: module_names(t) for m, t in sorted(modules.items())}
    left_out = sorted((n, m, theirs[n]) for m, names in ours.items() for n in names if n in theirs)
    names = sorted({n for ns in ours.values() for n in ns} - {n for n, _, _ in left_out} | set(LESSON_LIBRARIES))
    doc = (f'# AUTOGENERATED by {GENERATOR} from the modules beside it: do not edit this file.\n'
           '"""The whole library in one import, for your own notebooks and code: `from exp.all import *`.\n\n'
           "It hands over each lesson module's own names and the libraries the lessons use, except a lesson's\n"
           'teaching version of something PyTorch has under the same name (in torch.nn, torch.nn.functional,\n'
           "torch.utils.data or torch.optim): those names stay PyTorch's. To use a teaching version, import it\n"
           'from its lesson, e.g. `from exp.nb_03 import DataLoader`.\n"""')
    skipped = {n for n, _, _ in left_out}
    imports = [render_all([n for n in ns if n not in skipped], f'from exp.{m} import (')
               for m, ns in ours.items() if set(ns) - skipped]
    notes = ''.join(f'\n#   {n:<18} exp.{m:<7} ({ns}.{n})' for n, m, ns in left_out)
    return '\n'.join([doc, *LIBRARY_IMPORTS, *imports, '',
                      "# Left out: the teaching versions that share a name with PyTorch's, and where each is defined:"
                      + notes, render_all(names)]) + '\n'


def notebook_module(cells: list, label: str, module: str = 'nb_00') -> tuple[str | None, int, list[str], list[str]]:
    """(module text or None, number of export cells, errors, warnings) for a notebook's cells."""
    blocks, errors, found = export_blocks(cells, label)
    if errors or not blocks:
        return None, len(blocks), errors, found
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # already reported cell by cell
            text = render_module(label, module, blocks)
            compile(text, label, 'exec', dont_inherit=True)
    except SyntaxError as e:  # e.g. `from __future__` in a later cell
        return None, len(blocks), [f'{label}: the exported cells do not compile together: {e.msg}'
                                   f' (module line {e.lineno})'], found
    return text, len(blocks), [], found


# --------------------------------------------------------------------------- planning, writing, checking

@dataclass(frozen=True)
class Module:
    """What one notebook exports to `path`: `text` is None when the notebook has no export cells."""
    label: str  # the notebook as named in headers and messages, e.g. nbs/01_matmul.ipynb
    path: Path
    text: str | None
    n_cells: int


@dataclass(frozen=True)
class Plan:
    """Every module a run would write, plus the warnings found on the way."""
    modules: list[Module]
    warnings: list[str]
    dest: Path
    complete: bool  # True when `modules` covers every numbered notebook, so any other module is orphaned


def plan_modules(notebooks: list[Path], dest: Path, complete: bool) -> Plan:
    """Read and compile every notebook; ExportError listing every problem, before anything is written."""
    dest, errors, found, modules, owners = Path(dest), [], [], [], {}
    for notebook in dict.fromkeys(Path(n).resolve() for n in notebooks):
        label = shown(notebook, (ROOT, dest.resolve().parent, notebook.parent.parent))
        name = module_name(notebook)
        if not name.isidentifier():
            errors.append(f'{label}: module name {name + ".py"!r} is not a valid Python identifier;'
                          ' rename the notebook (e.g. 03_callbacks.ipynb)')
        elif name in owners:
            errors.append(f'{owners[name]} and {label} both export to {name}.py; rename one of them')
        owners.setdefault(name, label)
        try:
            cells = read_cells(notebook, shown(notebook, (Path.cwd(),)))
        except ExportError as e:
            errors += e.messages
            continue
        text, n_cells, cell_errors, cell_warnings = notebook_module(cells, label, name)
        errors, found = errors + cell_errors, found + cell_warnings
        modules.append(Module(label, dest / f'{name}.py', text, n_cells))
    if errors:
        raise ExportError(*errors)
    return Plan(modules, found, dest, complete)


def orphaned_modules(plan: Plan) -> list[tuple[Path, str]]:
    """Existing modules in dest that no notebook of the plan exports any more, with the reason."""
    empty = {m.path.name: m.label for m in plan.modules if m.text is None}
    exported = {m.path.name for m in plan.modules if m.text is not None}
    candidates = (sorted(plan.dest.glob('nb_*.py')) if plan.complete
                  else [m.path for m in plan.modules if m.text is None])
    return [(p, f'{empty[p.name]} has no export cells any more' if p.name in empty
             else f'no notebook in nbs/ exports to it any more{last_writer(p)}')
            for p in candidates if p.is_file() and p.name not in exported]


def last_writer(module: Path) -> str:
    """`; it was written from X` for a generated module whose header names its notebook X, else ''."""
    first = module.read_text('utf-8', errors='replace').split('\n', 1)[0]
    found = re.match(rf'# AUTOGENERATED by {re.escape(GENERATOR)} from (.+?): do not edit', first)
    return f'; it was written from {found[1]}' if found else ''


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or None if it does not exist."""
    return path.read_bytes() if path.is_file() else None


def planned_aggregate(plan: Plan) -> str:
    """The text `dest/all.py` should have after the plan is written: the aggregate of every module there."""
    texts = {} if plan.complete else {p.stem: p.read_text('utf-8') for p in plan.dest.glob('nb_*.py')}
    for m in plan.modules:
        texts.pop(m.path.stem, None)
        if m.text is not None: texts[m.path.stem] = m.text
    return render_aggregate(texts)


def plan_problems(plan: Plan) -> list[str]:
    """One line for every module that is stale, missing or orphaned; [] when in sync."""
    problems = []
    for m in plan.modules:
        current = read_bytes(m.path)
        if m.text is not None and current != m.text.encode('utf-8'):
            problems.append(f"{'missing' if current is None else 'stale'}: {shown(m.path)} (from {m.label})")
    aggregate, path = planned_aggregate(plan) if plan.complete else None, plan.dest / AGGREGATE
    if aggregate is not None and read_bytes(path) != aggregate.encode('utf-8'):
        problems.append(f"{'missing' if read_bytes(path) is None else 'stale'}: {shown(path)} (from every module)")
    return problems + [f'orphaned: {shown(p)} ({why})' for p, why in orphaned_modules(plan)]


def home_exp(notebooks: list[Path]) -> Path:
    """The exp/ beside the nbs/ folder that holds `notebooks` (their own project's); ExportError if there is none."""
    homes = set()
    for n in notebooks:
        folder = Path(n).resolve().parent
        if folder.name != 'nbs':
            raise ExportError(f'{shown(n)}: not in a folder named nbs/, so there is no exp/ beside it to export to;'
                              ' say where its module goes with --dest DIR')
        homes.add(folder.parent / 'exp')
    if len(homes) > 1:
        raise ExportError('these notebooks belong to different projects (' + ', '.join(sorted(map(shown, homes)))
                          + '): export each project on its own, or pass --dest DIR')
    return homes.pop() if homes else ROOT / 'exp'


def default_inputs(notebooks: list[Path] | None, dest: Path | None) -> tuple[list[Path], Path, bool]:
    """Fill in the defaults: every numbered notebook in this repo's nbs/ (a complete plan), and the exp/ beside the
    notebooks' nbs/ folder (this repo's exp/ when none are named)."""
    if notebooks is None:
        return find_notebooks(ROOT / 'nbs'), ROOT / 'exp' if dest is None else Path(dest), True
    return list(notebooks), home_exp(notebooks) if dest is None else Path(dest), False


def sync_problems(notebooks: list[Path] | None = None, dest: Path | None = None) -> list[str]:
    """What `--check` reports: lines like `stale: exp/nb_01.py (from nbs/01_matmul.ipynb)`; [] when in sync.

    `notebooks=None` means every numbered notebook in nbs/ (then any other nb_*.py in dest is orphaned);
    `dest=None` means exp/ next to this script. Raises ExportError for bad input."""
    return plan_problems(plan_modules(*default_inputs(notebooks, dest)))


def _write(path: Path, text: str) -> None:
    """Write `text` through a temp file and a rename. The exporter writes exp/ itself, so it cannot import the
    library's `atomic_write` (lesson 00) from the very modules it generates: this is its bootstrap copy."""
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        tmp.write_bytes(text.encode('utf-8'))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_plan(plan: Plan) -> list[str]:
    """Write every changed module (unchanged files are left alone); one report line per notebook."""
    report = []
    for m in plan.modules:
        if m.text is None:
            orphan = f' ({shown(m.path)} exists and is now orphaned: delete it)' if m.path.is_file() else ''
            report.append(f'{m.label}: no export cells, no module written{orphan}')
            continue
        what = f"{shown(m.path)} ({m.n_cells} cell{'s' * (m.n_cells != 1)} from {m.label})"
        if read_bytes(m.path) == m.text.encode('utf-8'):
            report.append(f'unchanged: {what}')
        else:
            m.path.parent.mkdir(parents=True, exist_ok=True)
            _write(m.path, m.text)
            report.append(f'wrote {what}')
    aggregate, path = planned_aggregate(plan), plan.dest / AGGREGATE
    if read_bytes(path) != aggregate.encode('utf-8'):
        _write(path, aggregate)
        report.append(f'wrote {shown(path)} (the whole library: from exp.all import *)')
    return report


# --------------------------------------------------------------------------- Python and command line

def run(notebooks: list[str], dest: str | None = None, check: bool = False) -> int:
    """Export (or with `check`, compare) and print the report; the exit code. ExportError for bad input."""
    paths = [q for n in notebooks for q in (find_notebooks(Path(n)) if Path(n).is_dir() else [Path(n)])]
    paths, dest_path, complete = default_inputs(paths if notebooks else None, dest if dest is None else Path(dest))
    if dest_path.exists() and not dest_path.is_dir():
        raise ExportError(f'{shown(dest_path)}: --dest is not a folder')
    plan = plan_modules(paths, dest_path, complete)
    for line in plan.warnings:
        print(line, file=sys.stderr)
    if not check:
        print('\n'.join(write_plan(plan)))
        return 0
    problems = plan_problems(plan)
    if problems:
        print('\n'.join(problems))
        print(f'{len(problems)} module(s) out of sync: run python {GENERATOR} to update', file=sys.stderr)
        return 1
    n = sum(m.text is not None for m in plan.modules)
    print(f"in sync: {shown(dest_path)}/ matches its notebooks ({n} module{'s' * (n != 1)})")
    return 0


def export(*notebooks: str, dest: str | None = None) -> None:
    """Export notebooks from Python (a lesson's last cell); an export problem raises ExportError."""
    run([str(n) for n in notebooks], dest)


def parser() -> argparse.ArgumentParser:
    """The command line's options; `--help` shows them after the module's docstring."""
    p = argparse.ArgumentParser(prog=GENERATOR, description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('notebooks', nargs='*', metavar='NOTEBOOK', help='notebooks or folders of them (default: nbs/)')
    p.add_argument('--dest', metavar='DIR', help='where the modules go (default: exp/)')
    p.add_argument('--check', action='store_true', help='write nothing; exit 1 if the modules are out of date')
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line: returns the exit code (argparse exits with 2 on a usage error)."""
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(errors='backslashreplace')  # never crash printing a name on an ASCII console
    try:
        args = parser().parse_args(argv)
        return run(args.notebooks, args.dest, args.check)
    except ExportError as e:
        print('\n'.join(f'error: {line}' for line in e.messages), file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `--help | head -2`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == '__main__':
    sys.exit(main())
