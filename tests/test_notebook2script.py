"""Tests for notebook2script.py: fixture notebooks are built with nbformat in tmp_path.

The CLI runs in subprocesses (with a copy of the script in tmp_path whenever the default nbs/ or exp/ is
involved), so these tests never write into the repository's exp/.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

import notebook2script as n2s

SCRIPT = Path(n2s.__file__).resolve()
Cell = tuple  # (cell_type, source) where source is a str or a list of lines


# ---------------------------------------------------------------------------------------------
# Helpers


def make_nb(path: Path, cells: list[Cell]) -> Path:
    """Write a valid nbformat v4 notebook; each source is stored exactly as given (str or list of lines)."""
    makers = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
              "raw": nbformat.v4.new_raw_cell}
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    nb.cells = [makers[kind](source=src) for kind, src in cells]
    for cell in nb.cells:
        cell.pop("id", None)  # keep the JSON small; ids are optional in nbformat 4.4
    nb.nbformat_minor = 4
    nbformat.validate(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    # json.dump (not nbformat.write, which splits string sources into lists) keeps the source form.
    path.write_text(json.dumps(nb, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


def code(src: str | list[str]) -> Cell:
    return ("code", src)


def md(src: str | list[str]) -> Cell:
    return ("markdown", src)


def run_cli(script: Path, *args: str, cwd: Path, env: dict[str, str] | None = None,
            flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run a notebook2script.py via the current interpreter and capture its output."""
    full_env = {**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})}
    return subprocess.run([sys.executable, *flags, str(script), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, encoding="utf-8", timeout=60)


def project(tmp_path: Path) -> Path:
    """A throwaway project: a copy of the script at tmp_path/proj, so its default nbs/ and exp/ are there."""
    root = tmp_path / "proj"
    (root / "nbs").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "notebook2script.py")
    return root


def load_copy(root: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import the copied script so that its defaults (nbs/, exp/) point into tmp_path."""
    spec = importlib.util.spec_from_file_location("notebook2script_copy", root / "notebook2script.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def module_for(cells: list[Cell], label: str = "nbs/00_t.ipynb") -> tuple[str | None, list[str], list[str]]:
    """Module text, errors and warnings for cells, computed without touching the file system."""
    raw = [{"cell_type": kind, "source": src, "metadata": {}} for kind, src in cells]
    text, _, errors, warnings = n2s.notebook_module(raw, label)
    return text, errors, warnings


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


# ---------------------------------------------------------------------------------------------
# Finding cells


@pytest.mark.parametrize("directive", ["#export", "# export", "#|export", "#| export", "# | export", "#EXPORT",
                                       "# Export", "#| EXPORT", "  #export  ", "#export\t"])
def test_every_directive_spelling_exports_the_cell_without_the_directive(directive: str) -> None:
    text, errors, warnings = module_for([code(f"{directive}\nx = 1\ndef f(): return x")])
    assert errors == [] and warnings == []
    assert text is not None
    assert "x = 1\ndef f(): return x\n" in text
    assert directive.strip() not in text.splitlines()


def test_directive_after_blank_lines_counts_as_first_line() -> None:
    text, errors, warnings = module_for([code("\n   \n#export\ny = 2")])
    assert errors == [] and warnings == [] and text is not None and "\ny = 2\n" in text


@pytest.mark.parametrize("first_line", ["#exports", "# export:", "#export this", "#| exports", "#exporting",
                                        "# export - helpers"])
def test_near_miss_directive_is_not_exported_and_warns(first_line: str) -> None:
    text, errors, warnings = module_for([code("#export\na = 1"), code(f"{first_line}\nb = 2")])
    assert errors == []
    assert text is not None and "a = 1" in text and "b = 2" not in text
    assert len(warnings) == 1
    assert "nbs/00_t.ipynb, code cell 2" in warnings[0] and first_line.strip() in warnings[0]


def test_directive_on_a_later_line_warns_and_is_not_exported() -> None:
    text, errors, warnings = module_for([code("c = 3\n#export\nd = 4")])
    assert text is None and errors == []
    assert len(warnings) == 1 and "nbs/00_t.ipynb, code cell 1, line 2" in warnings[0]


def test_ordinary_comments_do_not_warn() -> None:
    text, errors, warnings = module_for([code("# exponent of the learning rate\ne = 5"), code("#export\nf = 6")])
    assert warnings == [] and errors == [] and text is not None and "e = 5" not in text


def test_compiler_warnings_name_cell_and_line() -> None:
    text, errors, warnings = module_for([code("#export\nimport re\n\npattern = re.compile('\\d+')")])
    assert errors == [] and text is not None
    assert len(warnings) == 1 and "nbs/00_t.ipynb, code cell 1, line 4" in warnings[0] and "escape" in warnings[0]


def test_markdown_and_raw_cells_are_never_exported() -> None:
    cells = [md("#export\nmarkdown_text = 1"), ("raw", "#export\nraw_text = 2"), code("#export\ncode_text = 3")]
    text, errors, warnings = module_for(cells)
    assert errors == [] and text is not None
    assert "code_text = 3" in text and "markdown_text" not in text and "raw_text" not in text
    assert len(warnings) == 2 and "markdown" in warnings[0] and "raw" in warnings[1]


def test_string_and_list_sources_give_the_same_module(tmp_path: Path) -> None:
    src = "#export\nimport math\n\ndef area(r):\n    'Area of a circle.'\n    return math.pi * r**2\n"
    as_str = make_nb(tmp_path / "nbs" / "00_s.ipynb", [md("# Title"), code(src)])
    as_list = make_nb(tmp_path / "nbs" / "01_l.ipynb", [md(["# Title"]), code(src.splitlines(keepends=True))])
    assert isinstance(json.loads(as_str.read_text("utf-8"))["cells"][1]["source"], str)
    assert isinstance(json.loads(as_list.read_text("utf-8"))["cells"][1]["source"], list)
    dest = tmp_path / "exp"
    assert n2s.write_plan(n2s.plan_modules([as_str, as_list], dest, complete=False))
    body = lambda name: (dest / name).read_text("utf-8").split("code cell 1\n", 1)[1]  # noqa: E731
    assert body("nb_00.py") == body("nb_01.py") == "import math\n\ndef area(r):\n    'Area of a circle.'\n    return math.pi * r**2\n"


def test_windows_line_endings_in_source_are_normalised() -> None:
    text, errors, _ = module_for([code("#export\r\nx = 1\r\ny = 2\r\n")])
    assert errors == [] and text is not None and "x = 1\ny = 2\n" in text and "\r" not in text


# ---------------------------------------------------------------------------------------------
# Module text


def test_header_marker_and_final_newline(tmp_path: Path) -> None:
    nb = make_nb(tmp_path / "nbs" / "01_matmul.ipynb", [
        md("# Matmul"), code("#export\nfrom exp.nb_00 import *\n\n\n"), code("print('not exported')"),
        md("text"), code("#export\ndef mm(a, b):\n    'Multiply.'\n    return a @ b\n\n")])
    dest = tmp_path / "exp"
    n2s.write_plan(n2s.plan_modules([nb], dest, complete=False))
    text = (dest / "nb_01.py").read_text("utf-8")
    lines = text.splitlines()
    header = "\n".join(lines[:3]).lower()
    assert lines[0].startswith("#") and "generated" in header and "nbs/01_matmul.ipynb" in lines[0]
    assert "edit the notebook" in header and "do not edit" in header
    assert "# nbs/01_matmul.ipynb, code cell 1\nfrom exp.nb_00 import *\n" in text
    assert "# nbs/01_matmul.ipynb, code cell 3\ndef mm(a, b):" in text  # counted among code cells only
    assert text.endswith("return a @ b\n") and not text.endswith("\n\n")
    assert str(tmp_path) not in text and "not exported" not in text


def test_exported_cells_are_separated_by_blank_lines() -> None:
    text, _, _ = module_for([code("#export\na = 1"), code("#export\nb = 2")])
    assert text is not None and "a = 1\n\n\n# nbs/00_t.ipynb, code cell 2\nb = 2\n" in text


def test_unicode_survives_on_an_ascii_locale(tmp_path: Path) -> None:
    root = project(tmp_path)
    src = "#export\nα, β = 0.9, 0.99\ndef 平均(xs):\n    '计算平均值 μ.'\n    return sum(xs) / len(xs)\n"
    make_nb(root / "nbs" / "00_unicode.ipynb", [code(src)])
    # Python with UTF-8 mode off in the C locale uses ASCII as its default file encoding.
    env = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    result = run_cli(root / "notebook2script.py", cwd=root, env=env, flags=("-X", "utf8=0"))
    assert result.returncode == 0, result.stderr
    data = (root / "exp" / "nb_00.py").read_bytes()
    assert "α, β = 0.9, 0.99\ndef 平均(xs):\n    '计算平均值 μ.'\n".encode("utf-8") in data
    namespace: dict[str, object] = {}
    exec(compile(data, "nb_00.py", "exec"), namespace)
    assert namespace["α"] == 0.9 and namespace["平均"]([1, 2, 3]) == 2  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------
# Errors: nothing is written


@pytest.mark.parametrize("cell, line, what", [
    ("#export\nx = 1\n%time y = 2", 3, "magic"),
    ("#export\n%%timeit\nz = 3", 2, "magic"),
    ("#export\n!ls", 2, "magic"),
    ("#export\ndef f():\n    %time g()\n    return 1", 3, "magic"),
    ("#export\nfor i in range(2):\n    !ls", 3, "magic"),
    ("#export\n\ndef f(:\n    pass", 3, "syntax error"),
    ("#export\nx = (1,\n", 2, "syntax error"),
])
def test_magics_and_syntax_errors_name_cell_and_line_and_write_nothing(
        tmp_path: Path, cell: str, line: int, what: str) -> None:
    good = make_nb(tmp_path / "nbs" / "00_good.ipynb", [code("#export\nok = 1")])
    bad = make_nb(tmp_path / "nbs" / "01_bad.ipynb", [code("#export\nfine = 1"), md("text"), code(cell)])
    with pytest.raises(n2s.ExportError) as info:
        n2s.plan_modules([good, bad], tmp_path / "exp", complete=False)
    assert len(info.value.messages) == 1
    message = info.value.messages[0]
    assert message.startswith(f"nbs/01_bad.ipynb, code cell 2, line {line}: ") and what in message.lower()
    assert "\n" not in message
    assert not (tmp_path / "exp").exists()


def test_cli_error_in_one_notebook_writes_no_module_at_all(tmp_path: Path) -> None:
    root = project(tmp_path)
    make_nb(root / "nbs" / "00_good.ipynb", [code("#export\nok = 1")])
    make_nb(root / "nbs" / "01_bad.ipynb", [code("#export\nfine = 1"), md("text"), code("#export\n%time x = 1")])
    make_nb(root / "nbs" / "02_worse.ipynb", [code("#export\ndef f(:\n  pass")])
    result = run_cli(root / "notebook2script.py", cwd=root)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: nbs/01_bad.ipynb, code cell 2, line 2: IPython magic or shell command '%time x = 1' is not allowed"
        " in an export cell (move it to a cell without #export)",
        "error: nbs/02_worse.ipynb, code cell 1, line 2: syntax error: invalid syntax: 'def f(:'"]
    assert not (root / "exp").exists()  # not even the good notebook's module


def test_cell_that_would_break_the_module_is_an_error() -> None:
    text, errors, _ = module_for([code("#export\nx = 1"), code("#export\nfrom __future__ import annotations")])
    assert text is None and len(errors) == 1 and "nbs/00_t.ipynb" in errors[0]


def test_existing_modules_are_untouched_when_any_notebook_fails(tmp_path: Path) -> None:
    good = make_nb(tmp_path / "nbs" / "00_good.ipynb", [code("#export\nok = 1")])
    bad = make_nb(tmp_path / "nbs" / "01_bad.ipynb", [code("#export\n!pip install torch")])
    dest = tmp_path / "exp"
    dest.mkdir()
    (dest / "nb_00.py").write_text("old = 0\n", encoding="utf-8")
    with pytest.raises(n2s.ExportError) as info:
        n2s.plan_modules([good, bad], dest, complete=False)
    assert "nbs/01_bad.ipynb, code cell 1, line 2" in str(info.value) and "\n" not in str(info.value)
    assert files_in(dest) == {"nb_00.py": b"old = 0\n"}


@pytest.mark.parametrize("content, expect", [
    ('{"cells": [', "invalid JSON"),
    ("[1, 2]", "not a Jupyter notebook"),
    ('{"metadata": {}}', "not a Jupyter notebook"),
    ('{"nbformat": 3, "worksheets": [], "cells": []}', "nbformat v4"),
    ('{"nbformat": 4, "cells": [{"cell_type": "code"}]}', "cell 1"),
    (b"\xff\xfe{}", "not UTF-8"),
])
def test_unreadable_notebook_is_a_one_line_error(tmp_path: Path, content: str | bytes, expect: str) -> None:
    nb = tmp_path / "nbs" / "03_broken.ipynb"
    nb.parent.mkdir()
    nb.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(n2s.ExportError) as info:
        n2s.plan_modules([nb], tmp_path / "out", complete=False)
    assert len(info.value.messages) == 1 and "\n" not in str(info.value)
    assert str(nb) in str(info.value) and expect in str(info.value)


def test_cli_invalid_json_is_one_line_without_traceback(tmp_path: Path) -> None:
    nb = tmp_path / "nbs" / "03_broken.ipynb"
    nb.parent.mkdir()
    nb.write_text('{"cells": [', encoding="utf-8")
    result = run_cli(SCRIPT, "nbs/03_broken.ipynb", "--dest", "out", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: nbs/03_broken.ipynb: not a notebook (invalid JSON at line 1, column 12: Expecting value)"]
    assert not (tmp_path / "out").exists()


def test_missing_notebook_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_cli(SCRIPT, "nbs/07_nowhere.ipynb", "--dest", "out", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: nbs/07_nowhere.ipynb: no such file"]
    with pytest.raises(n2s.ExportError, match="07_nowhere.ipynb: no such file"):
        n2s.sync_problems([tmp_path / "07_nowhere.ipynb"], tmp_path / "out")


def test_two_notebooks_with_the_same_module_name_is_an_error_naming_both(tmp_path: Path) -> None:
    root = project(tmp_path)
    make_nb(root / "nbs" / "05_first.ipynb", [code("#export\na = 1")])
    make_nb(root / "nbs" / "05_second.ipynb", [code("#export\nb = 2")])
    result = run_cli(root / "notebook2script.py", cwd=root)
    assert result.returncode == 2
    assert "nbs/05_first.ipynb" in result.stderr and "nbs/05_second.ipynb" in result.stderr
    assert "nb_05.py" in result.stderr and not (root / "exp").exists()


@pytest.mark.parametrize("name", ["04-callbacks.ipynb", "04 callbacks.ipynb", "04.5_x.ipynb"])
def test_module_name_that_is_not_an_identifier_is_an_error(tmp_path: Path, name: str) -> None:
    nb = make_nb(tmp_path / "nbs" / name, [code("#export\nx = 1")])
    with pytest.raises(n2s.ExportError) as info:
        n2s.plan_modules([nb], tmp_path / "exp", complete=False)
    message = str(info.value)
    assert f"nbs/{name}" in message and "nb_04" in message and "identifier" in message


def test_module_names() -> None:
    assert n2s.module_name(Path("nbs/00_exports.ipynb")) == "nb_00"
    assert n2s.module_name(Path("nbs/05b_early_stopping.ipynb")) == "nb_05b"
    assert n2s.module_name(Path("10_x_y.ipynb")) == "nb_10"


def test_notebook_without_export_cells_writes_nothing_and_says_so(tmp_path: Path) -> None:
    make_nb(tmp_path / "nbs" / "02_plain.ipynb", [md("# Just prose"), code("print('hello')")])
    result = run_cli(SCRIPT, "nbs/02_plain.ipynb", "--dest", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "nbs/02_plain.ipynb" in result.stdout and "no export cells" in result.stdout
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Writing


def test_unchanged_content_is_not_rewritten(tmp_path: Path) -> None:
    nb = make_nb(tmp_path / "nbs" / "00_a.ipynb", [code("#export\nx = 1")])
    dest = tmp_path / "exp"
    n2s.write_plan(n2s.plan_modules([nb], dest, complete=False))
    module = dest / "nb_00.py"
    os.utime(module, ns=(1_000_000_000, 1_000_000_000))
    report = n2s.write_plan(n2s.plan_modules([nb], dest, complete=False))
    assert module.stat().st_mtime_ns == 1_000_000_000 and report[0].startswith("unchanged")
    make_nb(nb, [code("#export\nx = 2")])
    report = n2s.write_plan(n2s.plan_modules([nb], dest, complete=False))
    assert module.stat().st_mtime_ns != 1_000_000_000 and report[0].startswith("wrote")
    assert module.read_text("utf-8").endswith("\nx = 2\n")
    assert sorted(p.name for p in dest.iterdir()) == ["nb_00.py"]  # no temp files left behind


def test_dest_option(tmp_path: Path) -> None:
    root = project(tmp_path)
    make_nb(root / "nbs" / "00_a.ipynb", [code("#export\nx = 1")])
    result = run_cli(root / "notebook2script.py", "nbs/00_a.ipynb", "--dest", "elsewhere/mods", cwd=root)
    assert result.returncode == 0, result.stderr
    assert (root / "elsewhere" / "mods" / "nb_00.py").is_file() and not (root / "exp").exists()
    result = run_cli(root / "notebook2script.py", "--dest=elsewhere/mods", "--check", cwd=root)
    assert result.returncode == 0 and "in sync" in result.stdout


def test_default_dest_is_exp_next_to_the_script_whatever_the_cwd(tmp_path: Path) -> None:
    root = project(tmp_path)
    make_nb(root / "nbs" / "00_a.ipynb", [code("#export\nx = 1")])
    make_nb(root / "nbs" / "01_b.ipynb", [code("#export\ny = 2")])
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    result = run_cli(root / "notebook2script.py", cwd=cwd)  # no argument: every numbered notebook in nbs/
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (root / "exp").iterdir()) == ["nb_00.py", "nb_01.py"]
    assert list(cwd.iterdir()) == []
    # A notebook given relative to the cwd (as `!python ../notebook2script.py 01_b.ipynb` from nbs/) also goes to exp/.
    make_nb(root / "nbs" / "01_b.ipynb", [code("#export\ny = 3")])
    result = run_cli(root / "notebook2script.py", "01_b.ipynb", cwd=root / "nbs")
    assert result.returncode == 0, result.stderr
    assert (root / "exp" / "nb_01.py").read_text("utf-8").startswith(
        "# AUTOGENERATED by notebook2script.py from nbs/01_b.ipynb")
    assert (root / "exp" / "nb_01.py").read_text("utf-8").endswith("y = 3\n") and not (root / "nbs" / "exp").exists()


def test_generated_modules_import_and_chain(tmp_path: Path) -> None:
    nb0 = make_nb(tmp_path / "nbs" / "00_base.ipynb", [code("#export\ndef base():\n    'One.'\n    return 1")])
    nb1 = make_nb(tmp_path / "nbs" / "01_next.ipynb", [
        code("#export\nfrom exp.nb_00 import *"), code("#export\ndef more():\n    'Two.'\n    return base() + 1")])
    dest = tmp_path / "exp"
    n2s.write_plan(n2s.plan_modules([nb0, nb1], dest, complete=False))
    (dest / "__init__.py").write_text("", encoding="utf-8")
    program = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
               "from exp.nb_01 import *\nimport exp\nprint(base(), more(), exp.__file__)")
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    one, two, where = result.stdout.split()
    assert (one, two) == ("1", "2") and Path(where).resolve() == (dest / "__init__.py").resolve()


# ---------------------------------------------------------------------------------------------
# --check and sync_problems


def test_check_in_sync_stale_missing_and_orphaned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path)
    script = root / "notebook2script.py"
    make_nb(root / "nbs" / "00_a.ipynb", [code("#export\nx = 1")])
    make_nb(root / "nbs" / "01_b.ipynb", [code("#export\ny = 2")])
    assert run_cli(script, cwd=root).returncode == 0
    exp = root / "exp"
    before = files_in(exp)

    result = run_cli(script, "--check", cwd=root)
    assert (result.returncode, result.stdout.startswith("in sync")) == (0, True), result

    make_nb(root / "nbs" / "00_a.ipynb", [code("#export\nx = 10")])  # stale
    (exp / "nb_01.py").unlink()  # missing
    (exp / "nb_09.py").write_text("z = 3\n", encoding="utf-8")  # orphaned: no notebook
    make_nb(root / "nbs" / "02_c.ipynb", [code("print('no exports')")])
    (exp / "nb_02.py").write_text("w = 4\n", encoding="utf-8")  # orphaned: no export cells any more
    before = files_in(exp)
    result = run_cli(script, "--check", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "stale: exp/nb_00.py (from nbs/00_a.ipynb)",
        "missing: exp/nb_01.py (from nbs/01_b.ipynb)",
        "orphaned: exp/nb_02.py (nbs/02_c.ipynb has no export cells any more)",
        "orphaned: exp/nb_09.py (no notebook exports to it any more)"]
    assert files_in(exp) == before  # --check writes nothing

    copy = load_copy(root, monkeypatch)
    assert copy.sync_problems() == result.stdout.splitlines()
    assert copy.sync_problems([root / "nbs" / "01_b.ipynb"]) == ["missing: exp/nb_01.py (from nbs/01_b.ipynb)"]

    (exp / "nb_09.py").unlink()
    (exp / "nb_02.py").unlink()
    assert run_cli(script, cwd=root).returncode == 0
    assert copy.sync_problems() == []
    assert run_cli(script, "--check", cwd=root).returncode == 0


def test_sync_problems_with_explicit_notebooks_and_dest(tmp_path: Path) -> None:
    nb = make_nb(tmp_path / "nbs" / "03_x.ipynb", [code("#export\nq = 1")])
    dest = tmp_path / "out"
    assert n2s.sync_problems([nb], dest) == ["missing: " + n2s.shown(dest / "nb_03.py") + " (from nbs/03_x.ipynb)"]
    n2s.write_plan(n2s.plan_modules([nb], dest, complete=False))
    assert n2s.sync_problems([nb], dest) == []
    (dest / "nb_99.py").write_text("", encoding="utf-8")
    assert n2s.sync_problems([nb], dest) == []  # only the given notebooks are compared
    make_nb(nb, [md("#export is gone")])
    problems = n2s.sync_problems([nb], dest)
    assert len(problems) == 1 and problems[0].startswith("orphaned: ") and "nb_03.py" in problems[0]


# ---------------------------------------------------------------------------------------------
# Finding notebooks, command line


def test_find_notebooks_natural_order(tmp_path: Path) -> None:
    names = ["10_ten.ipynb", "2_two.ipynb", "05b_early.ipynb", "05_five.ipynb", "00_zero.ipynb", "1_one.ipynb",
             "readme.ipynb", "x_01.ipynb", "03_notes.txt", "11_eleven.ipynb"]
    for name in names:
        (tmp_path / name).write_text("{}", encoding="utf-8")
    (tmp_path / "04_folder.ipynb").mkdir()
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "06_six-checkpoint.ipynb").write_text("{}", encoding="utf-8")
    found = [p.name for p in n2s.find_notebooks(tmp_path)]
    assert found == ["00_zero.ipynb", "1_one.ipynb", "2_two.ipynb", "05_five.ipynb", "05b_early.ipynb",
                     "10_ten.ipynb", "11_eleven.ipynb"]
    assert all(isinstance(p, Path) for p in n2s.find_notebooks(tmp_path))


def test_help_and_usage_errors(tmp_path: Path) -> None:
    root = project(tmp_path)
    make_nb(root / "nbs" / "00_a.ipynb", [code("#export\nx = 1")])
    script = root / "notebook2script.py"
    result = run_cli(script, "--help", cwd=root)
    assert result.returncode == 0 and "--dest" in result.stdout and "--check" in result.stdout
    for args in (["--bogus"], ["nbs/00_a.ipynb", "--chek"], ["--check=maybe"], ["--dest"]):
        result = run_cli(script, *args, cwd=root)
        assert result.returncode == 2, (args, result)
        assert "Traceback" not in result.stderr and "error" in result.stderr.lower()
    assert not (root / "exp").exists()  # a bad flag never exports first


def test_no_python_traceback_for_a_warning_only_run(tmp_path: Path) -> None:
    make_nb(tmp_path / "nbs" / "00_a.ipynb", [code("#export\nx = 1"), code("#exports\ny = 2")])
    result = run_cli(SCRIPT, "nbs/00_a.ipynb", "--dest", "out", cwd=tmp_path)
    assert result.returncode == 0
    assert "warning: nbs/00_a.ipynb, code cell 2" in result.stderr and "Traceback" not in result.stderr
    assert "wrote" in result.stdout and "y = 2" not in (tmp_path / "out" / "nb_00.py").read_text("utf-8")
