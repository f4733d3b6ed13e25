"""The package reads top-down: no module imports one that imports it back (at module level or
for type checking), and the layers only import downwards: `pipeline/` and `storage/` know
nothing of the strategy, the commands, the load generator or the benchmarks."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "consumer"

# What each layer must not import (prefixes of module names).
FORBIDDEN = {
    "consumer.pipeline": (
        "consumer.strategy", "consumer.cli", "consumer.loadgen", "consumer.bench",
        "consumer.worker", "consumer.supervisor",
    ),
    "consumer.storage": (
        "consumer.pipeline", "consumer.strategy", "consumer.cli", "consumer.loadgen",
        "consumer.bench", "consumer.worker",
    ),
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules of the package that `path` imports: at module level (TYPE_CHECKING blocks
    included) or, with `top_level_only=False`, anywhere."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if not top_level_only else _module_level(tree.body)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("consumer")}


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    statements: list[ast.stmt] = []
    for statement in body:
        statements.append(statement)
        if isinstance(statement, ast.If | ast.Try):
            statements.extend(_module_level(statement.body))
    return statements


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {other for other in imports(path, top_level_only=True) if other in modules} - {name}
        for name, path in modules.items()
    }


def cycle_from(start: str, edges: dict[str, set[str]]) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in edges.get(node, ()):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_import_circle() -> None:
    edges = graph()
    # A package's __init__ importing its own submodules is how a package offers them, not a
    # circle: leave those edges out.
    edges = {
        name: {o for o in targets if not (o.startswith(name + ".") and name != "consumer")}
        for name, targets in edges.items()
    }
    circles = [c for name in sorted(edges) if (c := cycle_from(name, edges)) is not None]
    assert circles == [], " -> ".join(circles[0])


def test_layers_import_only_downwards() -> None:
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        for layer, forbidden in FORBIDDEN.items():
            if name == layer or name.startswith(layer + "."):
                wrong += [
                    f"{name} imports {other}"
                    for other in imports(path, top_level_only=False)
                    if other.startswith(forbidden)
                ]
    assert wrong == []
