"""Export the `#export` cells of the notebooks in nbs/ into Python modules in exp/.

    python notebook2script.py                         # every numbered notebook in nbs/
    python notebook2script.py nbs/01_matmul.ipynb     # one (or several) notebooks
    python notebook2script.py --dest DIR              # write somewhere other than exp/
    python notebook2script.py --check                 # write nothing; exit 1 if exp/ is out of date

An export cell is a code cell whose first non-blank line is an export directive (`#export`,
`# export`, `#|export`, `#| export`, `# | export`, any case). Its other lines go into
`exp/nb_XX.py`, where XX is the part of the notebook's file name before the first `_`.

A notebook argument may also be a folder: its numbered notebooks are exported. With `--check`, lines
like `stale: exp/nb_01.py (from nbs/01_matmul.ipynb)` name every module that is stale, missing or
orphaned (a module whose notebook is gone or has no export cells any more).

Exit codes: 0 success, 1 `--check` found differences, 2 bad input or usage.

Other tooling can use `find_notebooks` and `sync_problems`.
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

DIRECTIVE = re.compile(r"#\s*\|?\s*export\s*", re.IGNORECASE)  # whole (stripped) line
NEAR_DIRECTIVE = re.compile(r"#\s*\|?\s*export", re.IGNORECASE)  # start of a (stripped) line
MAGIC_START = ("%", "!")
GENERATOR = "notebook2script.py"


class ExportError(Exception):
    """Bad input for the exporter; each message is one line naming the file (and cell) at fault."""

    def __init__(self, *messages: str) -> None:
        super().__init__(*messages)
        self.messages: list[str] = list(messages)

    def __str__(self) -> str:
        first = self.messages[0] if self.messages else "export failed"
        more = len(self.messages) - 1
        return first if more <= 0 else f"{first} (and {more} more error{'s' if more > 1 else ''})"


@dataclass(frozen=True)
class Module:
    """What one notebook exports: `text` is None when the notebook has no export cells."""

    notebook: Path
    label: str  # the notebook as named in headers and messages, e.g. nbs/01_matmul.ipynb
    path: Path  # the module file in dest
    text: str | None
    n_cells: int


@dataclass(frozen=True)
class Plan:
    """Every module a run would write, plus the warnings found on the way."""

    modules: list[Module]
    warnings: list[str]
    dest: Path
    complete: bool  # True when `modules` covers every numbered notebook, so any other module is orphaned


# ---------------------------------------------------------------------------------------------
# Finding and naming notebooks


def repo_root() -> Path:
    """The folder holding this script: the repository root."""
    return Path(__file__).resolve().parent


def natural_key(text: str) -> list[Any]:
    """Sort key that orders digit runs by value: `2_x` before `10_x`."""
    return [int(part) if re.fullmatch(r"[0-9]+", part) else part.lower() for part in re.split(r"([0-9]+)", text)]


def notebook_prefix(notebook: Path) -> str:
    """The part of the notebook's file name before the first `_` (`05b_early_stopping` -> `05b`)."""
    return notebook.stem.split("_", 1)[0]


def notebook_sort_key(notebook: Path) -> tuple[list[Any], list[Any], str]:
    """Natural order by module prefix first (`05` before `05b`), then by the whole name."""
    return natural_key(notebook_prefix(notebook)), natural_key(notebook.name), notebook.name


def find_notebooks(folder: Path) -> list[Path]:
    """Numbered notebooks (file name starts with digits) directly in `folder`, in natural order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{shown(folder)}: no such folder of notebooks")
    found = [p for p in folder.iterdir() if p.suffix == ".ipynb" and re.match(r"[0-9]", p.name) and p.is_file()]
    return sorted(found, key=notebook_sort_key)


def module_name(notebook: Path) -> str:
    """`nb_` + the notebook's prefix: `00_exports.ipynb` -> `nb_00`."""
    return "nb_" + notebook_prefix(notebook)


def shown(path: Path) -> str:
    """A path for messages: relative to the repo root or the current folder when inside them, else absolute."""
    return display_path(path, [repo_root(), Path.cwd()], absolute=True)


def display_path(path: Path, bases: Sequence[Path], absolute: bool = False) -> str:
    """`path` relative to the first base that contains it; else absolute, or (default) its folder and name."""
    resolved = path.resolve()
    for base in bases:
        try:
            return resolved.relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    if absolute:
        return str(resolved)
    return f"{resolved.parent.name}/{resolved.name}" if resolved.parent.name else resolved.name


# ---------------------------------------------------------------------------------------------
# Reading notebooks and turning them into module text


def load_cells(notebook: Path, label: str) -> list[dict[str, Any]]:
    """The cells of an nbformat v4 notebook, read as raw JSON (so `source` keeps its str/list form).

    Errors name the file as `label` (pass the path as the user gave it)."""
    try:
        with open(notebook, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ExportError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ExportError(f"{label}: is a folder, not a notebook") from None
    except UnicodeDecodeError as e:
        raise ExportError(f"{label}: not a notebook (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ExportError(f"{label}: not a notebook (invalid JSON at line {e.lineno}, column {e.colno}: {e.msg})") from None
    except OSError as e:
        raise ExportError(f"{label}: cannot read ({e.strerror or e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ExportError(f"{label}: not a Jupyter notebook (no 'cells' list; only nbformat v4 is supported)")
    version = data.get("nbformat")
    if not isinstance(version, int) or version < 4:
        raise ExportError(f"{label}: not an nbformat v4 notebook (nbformat={version!r})")
    for i, cell in enumerate(data["cells"], 1):
        ok = isinstance(cell, dict) and isinstance(cell.get("cell_type"), str)
        src = cell.get("source") if ok else None
        if not ok or not (isinstance(src, str) or (isinstance(src, list) and all(isinstance(s, str) for s in src))):
            raise ExportError(f"{label}: not a valid notebook (cell {i} has no cell_type or no text source)")
    return data["cells"]


def source_lines(cell: dict[str, Any]) -> list[str]:
    """A cell's source as lines without line endings, whether stored as one string or a list of lines."""
    src = cell["source"]
    text = src if isinstance(src, str) else "".join(src)
    return re.split(r"\r\n|\r|\n", text)


def first_code_line(lines: list[str]) -> int | None:
    """Index of the first non-blank line, or None for an empty cell."""
    return next((i for i, line in enumerate(lines) if line.strip()), None)


def is_directive(line: str) -> bool:
    """True for an export directive line: `#export`, `# export`, `#|export`, `#| export`, `# | export`, any case."""
    return DIRECTIVE.fullmatch(line.strip()) is not None


def is_near_directive(line: str) -> bool:
    """True for a line that looks like an export directive but is not one (`#exports`, `# export:`)."""
    return NEAR_DIRECTIVE.match(line.strip()) is not None and not is_directive(line)


def cell_warnings(lines: list[str], where: str, first: int | None) -> list[str]:
    """Near-miss warnings for one code cell: a near-directive first line, or a directive on a later line."""
    found = []
    if first is not None and is_near_directive(lines[first]):
        found.append(f"warning: {where}, line {first + 1}: {lines[first].strip()!r} is not an export directive"
                     " (use '#export' alone on the line); cell not exported")
    for i, line in enumerate(lines):
        if i != first and is_directive(line):
            found.append(f"warning: {where}, line {i + 1}: {line.strip()!r} is ignored: an export directive"
                         " must be the first non-blank line of the cell; cell not exported")
    return found


def check_code(code: str, where: str) -> tuple[list[str], list[str]]:
    """Compile one export cell; return (errors, warnings). Line numbers count from the top of the cell."""
    lines = code.split("\n")
    errors: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            compile(code, where, "exec", dont_inherit=True)
        except SyntaxError as e:
            lineno = e.lineno or 1
            text = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else (e.text or "").strip()
            if text.startswith(MAGIC_START):
                errors.append(f"{where}, line {lineno}: IPython magic or shell command {text!r} is not allowed"
                              " in an export cell (move it to a cell without #export)")
            else:
                errors.append(f"{where}, line {lineno}: syntax error: {e.msg}: {text!r}")
        except ValueError as e:  # e.g. null bytes in the source
            errors.append(f"{where}: cannot compile: {e}")
    found = [f"warning: {where}, line {getattr(w, 'lineno', '?')}: {w.message}" for w in caught]
    return errors, found


def module_header(label: str) -> list[str]:
    """The comment lines that open every generated module."""
    return [f"# AUTOGENERATED by {GENERATOR} from {label}: do not edit this file.",
            f"# Edit the notebook instead, then run: python {GENERATOR} {label}",
            "# Each block below is preceded by the notebook cell it came from (code cells counted from 1)."]


def cell_marker(label: str, number: int) -> str:
    """The comment naming the notebook cell an exported block came from."""
    return f"# {label}, code cell {number}"


def render_module(label: str, blocks: list[tuple[int, str]]) -> str:
    """Module text: header, then each (code cell number, code) block after its marker; one final newline."""
    parts = ["\n".join(module_header(label))]
    parts += [f"{cell_marker(label, number)}\n{code}" for number, code in blocks]
    return "\n\n\n".join(parts) + "\n"


def notebook_module(cells: list[dict[str, Any]], label: str) -> tuple[str | None, int, list[str], list[str]]:
    """Turn a notebook's cells into module text. Returns (text or None, number of cells, errors, warnings)."""
    blocks: list[tuple[int, str]] = []
    errors: list[str] = []
    found: list[str] = []
    code_number = 0
    for index, cell in enumerate(cells, 1):
        lines = source_lines(cell)
        first = first_code_line(lines)
        if cell["cell_type"] != "code":
            if first is not None and (is_directive(lines[first]) or is_near_directive(lines[first])):
                found.append(f"warning: {label}, cell {index} ({cell['cell_type']}): starts with"
                             f" {lines[first].strip()!r} but only code cells are exported")
            continue
        code_number += 1
        where = f"{label}, code cell {code_number}"
        found += cell_warnings(lines, where, first)
        if first is None or not is_directive(lines[first]):
            continue
        body = lines[first + 1:]
        while body and not body[-1].strip():
            body.pop()
        if not any(line.strip() for line in body):
            found.append(f"warning: {where}: export cell has no code")
            continue
        # Compile with the directive blanked out, so error line numbers match the cell's lines.
        cell_errors, cell_found = check_code("\n".join([""] * (first + 1) + body), where)
        errors += cell_errors
        found += cell_found
        while not body[0].strip():
            body.pop(0)
        blocks.append((code_number, "\n".join(body)))
    if errors or not blocks:
        return None, len(blocks), errors, found
    text = render_module(label, blocks)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # already reported cell by cell
            compile(text, label, "exec", dont_inherit=True)
    except SyntaxError as e:  # e.g. `from __future__` in a later cell
        errors.append(f"{label}: the exported cells do not compile together: {e.msg} (module line {e.lineno})")
    return (None if errors else text), len(blocks), errors, found


# ---------------------------------------------------------------------------------------------
# Planning, writing and checking


def plan_modules(notebooks: Sequence[Path], dest: Path, complete: bool) -> Plan:
    """Read and compile every notebook; raise ExportError listing every problem, before anything is written."""
    dest = Path(dest)
    bases = [repo_root(), dest.resolve().parent]
    errors: list[str] = []
    found: list[str] = []
    modules: list[Module] = []
    owners: dict[str, str] = {}
    seen: set[Path] = set()
    for notebook in notebooks:
        notebook = Path(notebook)
        if notebook.resolve() in seen:
            continue
        seen.add(notebook.resolve())
        label = display_path(notebook, bases)
        name = module_name(notebook)
        target = dest / f"{name}.py"
        if not name.isidentifier():
            errors.append(f"{label}: module name {target.name!r} is not a valid Python identifier;"
                          " rename the notebook (e.g. 03_callbacks.ipynb)")
        elif name in owners:
            errors.append(f"{owners[name]} and {label} both export to {target.name}; rename one of them")
        else:
            owners[name] = label
        try:
            cells = load_cells(notebook, str(notebook))
        except ExportError as e:
            errors += e.messages
            continue
        text, n_cells, cell_errors, cell_found = notebook_module(cells, label)
        errors += cell_errors
        found += cell_found
        modules.append(Module(notebook, label, target, text, n_cells))
    if errors:
        raise ExportError(*errors)
    return Plan(modules, found, dest, complete)


def default_plan_inputs(notebooks: Sequence[Path] | None, dest: Path | None) -> tuple[list[Path], Path, bool]:
    """Fill in the defaults: every numbered notebook in nbs/ and exp/, both next to this script."""
    root = repo_root()
    dest = root / "exp" if dest is None else Path(dest)
    if notebooks is None:
        return find_notebooks(root / "nbs"), dest, True
    return [Path(n) for n in notebooks], dest, False


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or None if it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def orphaned_modules(plan: Plan) -> list[tuple[Path, str]]:
    """Existing modules in dest that no notebook of the plan exports any more, with the reason."""
    no_exports = {m.path.name: m.label for m in plan.modules if m.text is None}
    exported = {m.path.name for m in plan.modules if m.text is not None}
    if plan.complete and plan.dest.is_dir():
        candidates = sorted((p for p in plan.dest.glob("nb_*.py") if p.is_file()), key=lambda p: natural_key(p.name))
    else:
        candidates = [m.path for m in plan.modules if m.text is None and m.path.is_file()]
    orphans = []
    for path in candidates:
        if path.name in exported:
            continue
        reason = (f"{no_exports[path.name]} has no export cells any more" if path.name in no_exports
                  else "no notebook exports to it any more")
        orphans.append((path, reason))
    return orphans


def plan_problems(plan: Plan) -> list[str]:
    """Human-readable lines for every module that is stale, missing or orphaned; empty when in sync."""
    problems = []
    for m in plan.modules:
        if m.text is None:
            continue
        current = read_bytes(m.path)
        if current is None:
            problems.append(f"missing: {shown(m.path)} (from {m.label})")
        elif current != m.text.encode("utf-8"):
            problems.append(f"stale: {shown(m.path)} (from {m.label})")
    for path, reason in orphaned_modules(plan):
        problems.append(f"orphaned: {shown(path)} ({reason})")
    return problems


def sync_problems(notebooks: list[Path] | None = None, dest: Path | None = None) -> list[str]:
    """What `--check` reports: lines like `stale: exp/nb_01.py (from nbs/01_matmul.ipynb)`; [] when in sync.

    `notebooks=None` means every numbered notebook in nbs/ (then any other nb_*.py in dest is orphaned);
    `dest=None` means exp/ next to this script. Raises ExportError for bad input."""
    paths, dest, complete = default_plan_inputs(notebooks, dest)
    return plan_problems(plan_modules(paths, dest, complete))


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_plan(plan: Plan) -> list[str]:
    """Write every changed module (unchanged files are left alone); return one report line per notebook."""
    report = []
    if any(m.text is not None for m in plan.modules):
        plan.dest.mkdir(parents=True, exist_ok=True)
    for m in plan.modules:
        where = shown(m.path)
        if m.text is None:
            line = f"{m.label}: no export cells, no module written"
            if m.path.is_file():
                line += f" ({where} exists and is now orphaned: delete it)"
            report.append(line)
            continue
        data = m.text.encode("utf-8")
        cells = f"{m.n_cells} cell{'s' if m.n_cells != 1 else ''}"
        if read_bytes(m.path) == data:
            report.append(f"unchanged: {where} ({cells} from {m.label})")
        else:
            atomic_write(m.path, data)
            report.append(f"wrote {where} ({cells} from {m.label})")
    return report


# ---------------------------------------------------------------------------------------------
# Command line


def run(notebooks: Sequence[str], dest: str | None, check: bool) -> int:
    """Export (or with `check`, compare) and return the exit code; expected errors become ExportError."""
    paths: list[Path] | None = None
    if notebooks:
        paths = []
        for n in notebooks:
            p = Path(n)
            paths += find_notebooks(p) if p.is_dir() else [p]
    paths, dest_path, complete = default_plan_inputs(paths, None if dest is None else Path(dest))
    if complete and not paths:
        print(f"no numbered notebooks in {shown(repo_root() / 'nbs')}/", file=sys.stderr)
    if dest_path.exists() and not dest_path.is_dir():
        raise ExportError(f"{shown(dest_path)}: --dest is not a folder")
    plan = plan_modules(paths, dest_path, complete)
    for line in plan.warnings:
        print(line, file=sys.stderr)
    if not check:
        for line in write_plan(plan):
            print(line)
        return 0
    problems = plan_problems(plan)
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} module(s) out of sync: run python {GENERATOR} to update", file=sys.stderr)
        return 1
    n = sum(m.text is not None for m in plan.modules)
    print(f"in sync: {shown(dest_path)}/ matches its notebooks ({n} module{'s' if n != 1 else ''})")
    return 0


def export(*notebooks: str, dest: str | None = None) -> None:
    """Export notebooks from Python (a lesson's last cell); an export problem raises ExportError."""
    run([str(n) for n in notebooks], dest, check=False)


def main(*notebooks: str, dest: str | None = None, check: bool = False) -> None:
    """Export the #export cells of notebooks (default: every numbered notebook in nbs/) into exp/nb_XX.py.

    Args:
        notebooks: notebook files (or folders of numbered notebooks); none means every numbered notebook in nbs/.
        dest: folder for the modules (default: exp/ next to this script).
        check: write nothing; report stale, missing or orphaned modules and exit 1 if there are any.
    """
    if not isinstance(check, bool):
        usage_error(f"--check takes no value (got {check!r})")
    if dest is not None and not isinstance(dest, (str, int)) or isinstance(dest, bool):
        usage_error("--dest needs a folder name")
    bad = [n for n in notebooks if not isinstance(n, (str, int)) or isinstance(n, bool)]
    if bad:
        usage_error(f"not a notebook path: {bad[0]!r}")
    try:
        code = run([str(n) for n in notebooks], None if dest is None else str(dest), check)
    except ExportError as e:
        for line in e.messages:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


def usage_error(message: str) -> None:
    """Print a usage error and exit 2."""
    print(f"error: {message}\nusage: python {GENERATOR} [NOTEBOOK ...] [--dest DIR] [--check]  (--help for more)",
          file=sys.stderr)
    sys.exit(2)


KNOWN_FLAGS = ("--dest", "-d", "--check", "-c", "--nocheck", "--help", "-h")


def unknown_flags(argv: Sequence[str]) -> list[str]:
    """Flags fire would only reject after running the export; we reject them before anything happens."""
    bad = []
    for arg in argv:
        if arg == "--":
            break  # what follows are fire's own flags
        if arg.startswith("-") and len(arg) > 1 and arg.split("=", 1)[0] not in KNOWN_FLAGS:
            bad.append(arg)
    return bad


def cli(argv: Sequence[str]) -> None:
    """Entry point: show help or reject unknown flags, then let fire parse the command line and call `main`."""
    for stream in (sys.stdout, sys.stderr):  # never crash printing a non-ASCII name on an ASCII console
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    options = list(argv)[:list(argv).index("--")] if "--" in argv else list(argv)
    if "--help" in options or "-h" in options:
        print((__doc__ or "").strip())
        return
    bad = unknown_flags(argv)
    if bad:
        usage_error(f"unknown option {bad[0]}")
    import fire  # imported here so `from notebook2script import ...` does not need fire

    fire.Fire(main, command=list(argv), name=GENERATOR)


if __name__ == "__main__":
    cli(sys.argv[1:])
