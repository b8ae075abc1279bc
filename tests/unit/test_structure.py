"""The size limits of the layout (README "Architecture"): small modules, short functions,
thin handlers. The import rules are held by import-linter (`lint-imports` in make test)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "receiver"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
MAX_HANDLER_LINES = 30
MODULES = sorted(PACKAGE.rglob("*.py"))


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return (node.end_lineno or node.lineno) - node.lineno + 1


def _is_handler(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A request handler takes the request alone (a middleware also takes the handler)."""
    args = node.args.args
    return len(args) == 1 and ast.unparse(args[0].annotation or ast.Constant("")) == "web.Request"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_are_short(path: Path) -> None:
    tree = ast.parse(path.read_text())
    too_long = {f.name: _length(f) for f in _functions(tree) if _length(f) > MAX_FUNCTION_LINES}
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


@pytest.mark.parametrize(
    "path",
    sorted([*(PACKAGE / "http").glob("*.py"), *(PACKAGE / "ui").glob("*.py")]),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_handlers_are_thin(path: Path) -> None:
    tree = ast.parse(path.read_text())
    fat = {
        f.name: _length(f)
        for f in _functions(tree)
        if _is_handler(f) and _length(f) > MAX_HANDLER_LINES
    }
    assert not fat, f"handlers over {MAX_HANDLER_LINES} lines: {fat}"


_SQL = re.compile(
    r"^\s*(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|WITH\s+\w+\s+AS)\b", re.I
)


@pytest.mark.parametrize(
    "path",
    # embedded_pg provisions a local server for `make run` (CREATE DATABASE): not data access.
    [p for p in MODULES if "db" not in p.relative_to(PACKAGE).parts and p.name != "embedded_pg.py"],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_raw_sql_only_in_the_database_layer(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imports_text = any(
        isinstance(n, ast.ImportFrom)
        and (n.module or "").startswith("sqlalchemy")
        and any(a.name == "text" for a in n.names)
        for n in ast.walk(tree)
    )
    sql = [
        n.value[:40]
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and _SQL.match(n.value)
    ]
    assert not imports_text, "sqlalchemy.text outside receiver/db"
    assert not sql, f"SQL text outside receiver/db: {sql}"
