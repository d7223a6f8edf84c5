"""The import graph of the hubfuse package, read from the source with ast (nothing is imported).

Every import counts: module level, inside functions, and under `if TYPE_CHECKING:`, because each is
an arrow a reader has to follow. Run it as a script to print the graph's loops, floors and sizes:

    .venv/bin/python tests/import_graph.py
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "hubfuse"


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def lines(self) -> int:
        return len(self.path.read_text(encoding="utf-8").splitlines())


def modules(root: Path = PACKAGE_ROOT) -> dict[str, Module]:
    found: dict[str, Module] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        found[name] = Module(name, path, is_package)
    return found


def _absolute(node: ast.ImportFrom, module: Module) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: Module, known: dict[str, Module]) -> set[str]:
    """The hubfuse modules `module` imports; `from pkg import name` counts as pkg.name when that is a module."""
    targets: set[str] = set()
    for node in ast.walk(ast.parse(module.path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                targets.add(candidate if candidate in known else base)
    return {t for t in targets if t in known and t != module.name}


def graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports_of(module, known) for name, module in known.items()}


def loops(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def floors(edges: dict[str, set[str]]) -> dict[str, int]:
    """Floor 0 imports no hubfuse module; each module sits one floor above its highest import.
    The modules of a loop share one floor (the graph is read through its loops, condensed)."""
    component_of = {member: tuple(c) for c in loops(edges) for member in c}
    floor: dict[str, int] = {}

    def height(node: str) -> int:
        if node not in floor:
            members = component_of.get(node, (node,))
            floor.update({m: 0 for m in members})  # a provisional floor cuts the walk around a loop
            below = [height(t) for m in members for t in edges[m] if t not in members]
            floor.update({m: 1 + max(below) if below else 0 for m in members})
        return floor[node]

    for node in sorted(edges):
        height(node)
    return floor


def main() -> None:
    edges = graph()
    known = modules()
    found = loops(edges)
    floor = floors(edges)
    print(f"{len(edges)} modules on {max(floor.values()) + 1} floors, {len(found)} loop(s)")
    for component in found:
        print("  loop:", " <-> ".join(component))
    for name in sorted(edges, key=lambda n: (floor[n], n)):
        print(f"  {floor[name]:>2}  {known[name].lines:>5}  {name}")


if __name__ == "__main__":
    main()
