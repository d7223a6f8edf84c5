"""The house as a newcomer reads it: imports run one way, read from the source (tests/import_graph.py).

Floors, top to bottom: the commands (cli, demo); publishing and batch runs; rendering; checking;
the base layer. An arrow may point down or sideways within a floor, never up, and never in a loop.
The local hub stands apart; the tiny-checkpoint factory (hubfuse.testing) serves tests, the demo and
bench, never production code.
"""

from __future__ import annotations

import ast

import pytest
from import_graph import PACKAGE_ROOT, floors, graph, loops, modules

ENTRY, PUBLISH, RENDER, CHECK, BASE = 4, 3, 2, 1, 0
FLOOR_NAMES = {ENTRY: "commands", PUBLISH: "publish", RENDER: "render", CHECK: "check", BASE: "base"}
MAX_LINES = 500
# Modules that may read the process environment: the settings (every user setting), the child
# environments' token stripping, the worker's internal variables, and the three modules that also run
# inside a release's environment, where hubfuse is not importable (they read transformers' own flag,
# and the shared torch's folder).
ENVIRONMENT_READERS = {
    "hubfuse.settings",
    "hubfuse.childenv",
    "hubfuse.check.worker",
    "hubfuse.check.transformers_fusion",
    "hubfuse.check.downstream_probe",
    "hubfuse.check.probe_host",
}


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def floor_of(name: str) -> int | None:
    """The floor a hubfuse module belongs to; None for the two that stand apart (localhub, testing)."""
    if _under(name, "hubfuse.localhub", "hubfuse.testing"):
        return None
    if _under(name, "hubfuse.cli", "hubfuse.demo", "hubfuse.__main__"):
        return ENTRY
    if _under(name, "hubfuse.publish", "hubfuse.batch", "hubfuse.spec", "hubfuse.ledger"):
        return PUBLISH
    if _under(name, "hubfuse.render"):
        return RENDER
    if _under(name, "hubfuse.check"):
        return CHECK
    return BASE


EDGES = graph()
KNOWN = modules()


def test_the_import_graph_has_no_loops() -> None:
    found = loops(EDGES)
    assert not found, "\n".join(" <-> ".join(c) for c in found)


def test_no_import_climbs_a_floor() -> None:
    climbing = [
        f"{source} ({FLOOR_NAMES[floor_of(source)]}) -> {target} ({FLOOR_NAMES[floor_of(target)]})"
        for source, targets in sorted(EDGES.items())
        for target in sorted(targets)
        if floor_of(source) is not None
        and floor_of(target) is not None
        and floor_of(target) > floor_of(source)
    ]
    assert not climbing, "\n".join(climbing)


def test_only_the_commands_reach_the_local_hub_and_the_test_factory() -> None:
    reaching = [
        f"{source} -> {target}"
        for source, targets in sorted(EDGES.items())
        for target in sorted(targets)
        if _under(target, "hubfuse.localhub", "hubfuse.testing") and floor_of(source) not in (ENTRY, None)
    ]
    assert not reaching, "\n".join(reaching)


def test_the_local_hub_imports_only_leaf_modules() -> None:
    """Leaves: modules importing nothing of hubfuse, or only such modules (a parser and its errors)."""
    leaves = {name for name, floor in floors(EDGES).items() if floor <= 1 and floor_of(name) == BASE}
    outside = [
        f"{source} -> {target}"
        for source, targets in sorted(EDGES.items())
        if _under(source, "hubfuse.localhub")
        for target in sorted(targets)
        if not _under(target, "hubfuse.localhub") and target not in leaves
    ]
    assert not outside, "\n".join(outside)


def test_no_family_plugin_imports_another() -> None:
    package = "hubfuse.check.families"
    shared = {package, f"{package}.base", f"{package}.registry", f"{package}.protocol"}
    plugins = {name for name in KNOWN if _under(name, package) and name not in shared}
    assert plugins, "no family plugin found under hubfuse/check/families/"
    crossing = [f"{p} -> {t}" for p in sorted(plugins) for t in sorted(EDGES[p] & plugins)]
    assert not crossing, "\n".join(crossing)


@pytest.mark.parametrize(
    "name", sorted(n for n in KNOWN if not _under(n, "hubfuse.testing", "hubfuse.localhub.templates"))
)
def test_no_module_is_over_the_line_budget(name: str) -> None:
    assert KNOWN[name].lines <= MAX_LINES, f"{KNOWN[name].path.relative_to(PACKAGE_ROOT.parent)}"


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _reads_a_variable(node: ast.AST) -> bool:
    """`os.environ.get(...)`, `os.environ[...]` read, `... in os.environ`, `os.getenv(...)`; a write, or
    a copy of the whole environment handed to a child process, is not a read of a setting."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        owner, attr = node.func.value, node.func.attr
        if attr == "get" and _is_os_environ(owner):
            return True
        if attr == "getenv" and isinstance(owner, ast.Name) and owner.id == "os":
            return True
    if isinstance(node, ast.Subscript) and _is_os_environ(node.value):
        return isinstance(node.ctx, ast.Load)
    if isinstance(node, ast.Compare) and any(_is_os_environ(c) for c in node.comparators):
        return True
    return (
        isinstance(node, ast.ImportFrom)
        and node.module == "os"
        and any(alias.name in ("environ", "getenv") for alias in node.names)
    )


def test_the_environment_is_read_in_few_places() -> None:
    readers = {
        name
        for name, module in KNOWN.items()
        if not _under(name, "hubfuse.localhub", "hubfuse.testing")
        and any(map(_reads_a_variable, ast.walk(ast.parse(module.path.read_text(encoding="utf-8")))))
    }
    assert readers <= ENVIRONMENT_READERS, "\n".join(sorted(readers - ENVIRONMENT_READERS))
