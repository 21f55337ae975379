"""Every `ApplicationError` Airlock raises names its `type` from `contracts.errors`, where the
tree of error types is drawn: a client matching on a type finds it there, and a new error cannot
cross Temporal untyped (an untyped one reaches callers as the bare class name)."""

from __future__ import annotations

import ast
from pathlib import Path

from contracts import errors

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contracts", "runtime", "policy", "tools", "activities", "workflows", "recorder", "airlock")
# Re-raises a tool's own typed error with its text scrubbed of secrets: the type is the tool's.
PASSES_ON_A_TYPE = {("tools/secret_guard.py", "_scrubbed")}


def _raised(path: Path) -> list[tuple[str, int, ast.Call]]:
    """Each `ApplicationError(...)` call with the name of the function it is in."""
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Call) and getattr(child.func, "id", None) == "ApplicationError":
                found.append((function, child.lineno, child))
            visit(child, child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function)

    visit(tree, "<module>")
    return found


def _sources() -> list[Path]:
    files = [ROOT / "worker.py"]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def test_every_application_error_names_a_type_from_the_errors_module() -> None:
    untyped = []
    for path in _sources():
        relative = path.relative_to(ROOT).as_posix()
        for function, line, call in _raised(path):
            if (relative, function) in PASSES_ON_A_TYPE:
                continue
            kind = next((k.value for k in call.keywords if k.arg == "type"), None)
            if not (
                isinstance(kind, ast.Attribute)
                and isinstance(kind.value, ast.Name)
                and kind.value.id == "errors"
                and getattr(errors, kind.attr, None) in errors.ALL
            ):
                untyped.append(f"{relative}:{line}")
    assert not untyped, f"ApplicationError without a type from contracts.errors: {untyped}"


def test_the_error_types_are_distinct_and_drawn_in_the_module_docstring() -> None:
    names = [v for k, v in vars(errors).items() if k.isupper() and isinstance(v, str)]
    assert len(names) == len(set(names)) == len(errors.ALL)
    doc = errors.__doc__ or ""
    assert [n for n in names if n not in doc] == []
