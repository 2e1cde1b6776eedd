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

Each module ends with an `__all__` that makes `from exp.nb_XX import *` hand over exactly: the public
names (no leading `_`) that its export cells define, those of its imports named in LESSON_LIBRARIES (the
few libraries the lessons use: torch, tensor, nn, F, plt, ...), and everything the exp modules it
star-imports hand over. Nothing else, so a module's plumbing (gzip, Path, ...) stays private.

With `--check`, lines like `stale: exp/nb_01.py (from nbs/01_matmul.ipynb)` name every module that is
stale, missing or orphaned (its notebook is gone or has no export cells any more).
Exit codes: 0 success, 1 `--check` found differences, 2 bad input or usage.

From Python: `export('05_anneal.ipynb')` (a lesson's last cell) raises ExportError on failure.
run_notebook.py and data/make_sample.py share `atomic_write`, `shown`, `setup_streams` and `parse_args`.
"""
from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import symtable
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
GENERATOR = 'notebook2script.py'
DIRECTIVE = re.compile(r'#\s*\|?\s*export\s*', re.IGNORECASE)  # a whole (stripped) line
NEAR_DIRECTIVE = re.compile(r'#\s*\|?\s*export', re.IGNORECASE)  # the start of a (stripped) line
LESSON_LIBRARIES = ('math', 'statistics', 'time', 'partial', 'torch', 'tensor', 'nn', 'F', 'optim', 'plt')


class UsageError(Exception):
    """A bad command line: reported in one line, exit code 2."""


class ExportError(Exception):
    """Bad input for the exporter; each message is one line naming the file (and cell) at fault."""

    def __init__(self, *messages: str) -> None:
        super().__init__(*messages)
        self.messages = list(messages)

    def __str__(self) -> str:
        more = len(self.messages) - 1
        return self.messages[0] + (f' (and {more} more error{"s" * (more > 1)})' if more > 0 else '')


# --------------------------------------------------------------------------- shared with the other tools

def shown(path: Path, bases: tuple[Path, ...] | None = None) -> str:
    """`path` for messages: relative to the first of `bases` (default: repo root, cwd) holding it, else absolute."""
    path = Path(path).resolve()
    for base in bases or (ROOT, Path.cwd()):
        if path.is_relative_to(base.resolve()):
            return path.relative_to(base.resolve()).as_posix()
    return str(path)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temp file in the same folder and a rename: never a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data.encode('utf-8') if isinstance(data, str) else data)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def setup_streams() -> None:
    """Never crash printing a non-ASCII name or output on an ASCII console."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, 'reconfigure'):
            stream.reconfigure(errors='backslashreplace')


def parse_args(options, argv: list[str], name: str, flags: tuple[str, ...] = ()) -> dict:
    """Parse `argv` with fire against `options` (which returns its arguments); UsageError for what fire rejects."""
    import fire
    argv = [f'{a}=True' if a in flags else a for a in argv]  # a bare flag must not swallow the next argument
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return fire.Fire(options, command=argv, name=name, serialize=lambda _: None)
    except fire.core.FireExit:
        first = next((line for line in err.getvalue().splitlines() if line.strip()), 'bad command line')
        raise UsageError(f"{first.removeprefix('ERROR: ').strip()} (see --help)") from None


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


def star_surface(code: str, label: str) -> tuple[list[str], list[str]]:
    """(the exp modules `code` star-imports, the names it hands over itself) for the module's `__all__`."""
    earlier = [n.module for n in ast.walk(ast.parse(code)) if isinstance(n, ast.ImportFrom)
               and n.module and n.module.startswith('exp.') and n.names[0].name == '*']
    names = [s.get_name() for s in symtable.symtable(code, label, 'exec').get_symbols()
             if s.is_assigned() or (s.is_imported() and s.get_name() in LESSON_LIBRARIES)]
    return earlier, sorted(n for n in names if not n.startswith('_'))


def render_module(label: str, module: str, blocks: list[tuple[int, str]]) -> str:
    """Module text: a header, each block after its cell marker, then the `__all__` block; one final newline."""
    header = (f'# AUTOGENERATED by {GENERATOR} from {label}: do not edit this file.\n'
              f'# Edit the notebook instead, then run: python {GENERATOR} {label}\n'
              '# Each block below is preceded by the notebook cell it came from (code cells counted from 1).')
    parts = [header] + [f'# %% {label}, code cell {number}\n{code}' for number, code in blocks]
    earlier, names = star_surface('\n\n'.join(parts), label)
    imports = ''.join(f"from {m} import __all__ as _{m.split('.')[-1]}_all\n" for m in earlier)
    items = [f"*_{m.split('.')[-1]}_all" for m in earlier] + [repr(n) for n in names]
    lines, line = [], '__all__ = sorted({'
    for item in items:
        if len(line) + len(item) > 112:
            lines, line = lines + [line.rstrip()], '    '
        line += item + ', '
    parts.append(f'# %% what `from exp.{module} import *` hands over (see {GENERATOR})\n{imports}'
                 + '\n'.join(lines + [line.removesuffix(', ') + '})']))
    return '\n\n\n'.join(parts) + '\n'


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
             else 'no notebook exports to it any more')
            for p in candidates if p.is_file() and p.name not in exported]


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or None if it does not exist."""
    return path.read_bytes() if path.is_file() else None


def plan_problems(plan: Plan) -> list[str]:
    """One line for every module that is stale, missing or orphaned; [] when in sync."""
    problems = []
    for m in plan.modules:
        current = read_bytes(m.path)
        if m.text is not None and current != m.text.encode('utf-8'):
            problems.append(f"{'missing' if current is None else 'stale'}: {shown(m.path)} (from {m.label})")
    return problems + [f'orphaned: {shown(p)} ({why})' for p, why in orphaned_modules(plan)]


def default_inputs(notebooks: list[Path] | None, dest: Path | None) -> tuple[list[Path], Path, bool]:
    """Fill in the defaults: every numbered notebook in nbs/ (so the plan is complete), and exp/."""
    dest = ROOT / 'exp' if dest is None else Path(dest)
    return (find_notebooks(ROOT / 'nbs'), dest, True) if notebooks is None else (list(notebooks), dest, False)


def sync_problems(notebooks: list[Path] | None = None, dest: Path | None = None) -> list[str]:
    """What `--check` reports: lines like `stale: exp/nb_01.py (from nbs/01_matmul.ipynb)`; [] when in sync.

    `notebooks=None` means every numbered notebook in nbs/ (then any other nb_*.py in dest is orphaned);
    `dest=None` means exp/ next to this script. Raises ExportError for bad input."""
    return plan_problems(plan_modules(*default_inputs(notebooks, dest)))


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
            atomic_write(m.path, m.text)
            report.append(f'wrote {what}')
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


def _options(*notebooks: str, dest: str | None = None, check: bool = False) -> dict:
    if type(check) is not bool:
        raise UsageError(f'--check takes no value (got {check!r})')
    if dest is not None and type(dest) not in (str, int):
        raise UsageError('--dest needs a folder name')
    bad = [n for n in notebooks if type(n) not in (str, int)]
    if bad:
        raise UsageError(f'not a notebook path: {bad[0]!r}')
    return dict(notebooks=[str(n) for n in notebooks], dest=None if dest is None else str(dest), check=check)


def main(argv: list[str] | None = None) -> int:
    """The command line: returns the exit code."""
    setup_streams()
    argv = sys.argv[1:] if argv is None else list(argv)
    if '--help' in argv or '-h' in argv:
        print(__doc__.strip())
        return 0
    try:
        return run(**parse_args(_options, argv, GENERATOR, flags=('--check', '-c')))
    except UsageError as e:
        print(f'error: {e}\nusage: python {GENERATOR} [NOTEBOOK ...] [--dest DIR] [--check]', file=sys.stderr)
    except ExportError as e:
        print('\n'.join(f'error: {line}' for line in e.messages), file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main())
