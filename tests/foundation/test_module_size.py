"""No gandiff module is over 400 lines unless its docstring says why it is one module, on a line starting
``One module:`` (what a split would lose: one protocol, one format, helpers the parts share)."""

from __future__ import annotations

import ast
from pathlib import Path

import gandiff

PACKAGE = Path(gandiff.__file__).resolve().parent
MAX_LINES = 400
MARKER = "One module:"


def oversized_without_reason(package: Path = PACKAGE, max_lines: int = MAX_LINES) -> list[str]:
    """``<path>: N lines`` for every module over ``max_lines`` whose docstring has no ``One module:`` line."""
    out = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n <= max_lines:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.strip().startswith(MARKER) for line in doc.splitlines()):
            out.append(f"{package.name}/{path.relative_to(package).as_posix()}: {n} lines")
    return out


def test_every_long_module_says_why_it_is_one_module():
    bad = oversized_without_reason()
    assert not bad, (f"modules over {MAX_LINES} lines: split each, or add to its docstring a line starting "
                     f"{MARKER!r} saying what a split would lose:\n" + "\n".join(bad))


def test_the_rule_finds_a_long_module_and_accepts_a_stated_reason(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    body = "x = 1\n" * 400
    (pkg / "short.py").write_text('"""Short."""\n' + body[:-6 * 2])  # 399 lines
    (pkg / "sub" / "long.py").write_text('"""Long.\n\nMany things."""\n' + body)  # 403 lines
    (pkg / "reason.py").write_text('"""Long, for a reason.\n\nOne module: one file format."""\n' + body)
    (pkg / "quoted.py").write_text('"""Long.\n\nNot One module: a mention is not a reason."""\n' + body)
    (pkg / "comment.py").write_text("# One module: a comment is not the docstring\n" + body)
    assert oversized_without_reason(pkg) == [
        "pkg/comment.py: 401 lines", "pkg/quoted.py: 403 lines", "pkg/sub/long.py: 403 lines"]
