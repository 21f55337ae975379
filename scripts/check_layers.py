"""Checks that imports only point down the layers, and that workflow code imports only what the
workflow sandbox passes through.

    python scripts/check_layers.py [ROOT]

Layers, bottom to top (a module may import its own layer and those below):

    contracts   what crosses Temporal: pydantic models and pure functions over them
    runtime     process plumbing: settings, logging, telemetry, converter, sealing
    policy      the policy engine
    tools       tool API, registry, runner, the demo back office
    activities  activities: tool calls, model calls, the control store
    workflows   workflow code
    recorder    the flight recorder (it replays workflows)
    worker      worker.py
    airlock     the applications: CLI, dev, show, counterfactual
    (bench, chaos, tests, scripts sit on top and may import anything)

Stricter still: `contracts` imports no other layer; `policy` imports only `contracts`; workflow code
imports only `contracts`, `policy`, `runtime.instruments` and `workflows`. Modules kept only so that
an old import path works (they call `runtime.moved.moved`) are not checked. Prints each import that
breaks a rule, per package the arrows that run up, and exits 1 when there is any.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

LAYERS = ["contracts", "runtime", "policy", "tools", "activities", "workflows", "recorder", "worker", "airlock"]
RANK = {name: i for i, name in enumerate(LAYERS)}
ON_TOP = {"bench", "chaos", "tests", "scripts"}
ONLY = {
    "contracts": ("contracts",),
    "policy": ("contracts", "policy"),
    "workflows": ("contracts", "policy", "workflows", "runtime.instruments"),
}


def _layer(module: str) -> str | None:
    top = module.split(".", 1)[0]
    return top if top in RANK or top in ON_TOP else None


def _module_of(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    found = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from contracts import models` imports contracts.models
            found += [
                (node.lineno, f"{base}.{a.name}" if base in RANK or not node.module else base) for a in node.names
            ]
    return found


def _is_shim(tree: ast.Module) -> bool:
    return any(
        isinstance(n, ast.Expr) and isinstance(n.value, ast.Call) and getattr(n.value.func, "id", "") == "moved"
        for n in tree.body
    )


def violations(root: Path) -> list[tuple[str, int, str, str]]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if any(part.startswith(".") or part in {"build", "node_modules"} for part in path.relative_to(root).parts):
            continue
        module = _module_of(path, root)
        layer = _layer(module)
        if layer is None or layer in ON_TOP:
            continue
        tree = ast.parse(path.read_text(), str(path))
        if _is_shim(tree):
            continue
        for line, target in _imports(tree, module):
            to = _layer(target)
            if to is None or to == layer:
                continue
            allowed = ONLY.get(layer)
            if to in ON_TOP or RANK[to] > RANK[layer]:
                found.append((str(path.relative_to(root)), line, target, f"{layer} imports up into {to}"))
            elif allowed is not None and not any(target == a or target.startswith(a + ".") for a in allowed):
                found.append(
                    (str(path.relative_to(root)), line, target, f"{layer} may import only {', '.join(allowed)}")
                )
    return sorted(set(found))


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    found = violations(root)
    for path, line, target, why in found:
        print(f"{path}:{line}: {target}: {why}")
    arrows = Counter(
        (path.split("/", 1)[0].removesuffix(".py"), target.split(".", 1)[0]) for path, _, target, _ in found
    )
    for (source, target), count in sorted(arrows.items()):
        print(f"arrow {source} -> {target}: {count} import(s)")
    print(f"{len(found)} import(s) break the layers" if found else "imports point down the layers")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
