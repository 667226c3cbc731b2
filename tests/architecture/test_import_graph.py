"""The server's import graph, read from the source (AST, no import): core depends on no store, transport or
built-in job, and no two packages import each other. Imports under `if TYPE_CHECKING:` do not count."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import xcron.server

ROOT = Path(xcron.server.__file__).parent
PACKAGE = "xcron.server"


def _runtime_imports(tree: ast.Module) -> Iterator[str]:
    def walk(nodes: list[ast.stmt]) -> Iterator[str]:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from walk(node.orelse)
                continue
            for child in ast.walk(node):
                if isinstance(child, ast.Import):
                    yield from (alias.name for alias in child.names)
                elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                    yield child.module

    yield from walk(tree.body)


def unit_of(module: str) -> str | None:
    """The part of the server a module belongs to: a subpackage (core, stores, api, jobs) or a top module."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    parts = module.removeprefix(PACKAGE).strip(".").split(".")
    return parts[0] or None


def import_graph() -> dict[str, set[str]]:
    """unit -> the units it imports at run time."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT).with_suffix("")
        if relative.parts == ("__init__",):
            continue  # the package's public re-exports (xcron.server.Job...)
        unit = relative.parts[0]
        targets = {unit_of(name) for name in _runtime_imports(ast.parse(path.read_text(), str(path)))}
        graph.setdefault(unit, set()).update(t for t in targets if t is not None and t != unit)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_core_imports_no_store_transport_or_job() -> None:
    graph = import_graph()
    assert graph["core"] <= {"core"}, f"core imports {sorted(graph['core'])}: declare what it needs in core/ports.py"


@pytest.mark.parametrize("layer", ["stores", "jobs"])
def test_lower_layers_do_not_import_transports(layer: str) -> None:
    graph = import_graph()
    assert "api" not in graph[layer] and "app" not in graph[layer]


def test_no_cycle_between_packages() -> None:
    assert find_cycle(import_graph()) is None


def test_the_check_sees_a_new_arrow_and_a_cycle() -> None:
    """The checks above would fail on a violation (they are not vacuous)."""
    graph = import_graph()
    assert "stores" in graph and "core" in graph["stores"]
    assert find_cycle({**graph, "core": {"stores"}}) in (["core", "stores", "core"], ["stores", "core", "stores"])
    tree = ast.parse("from xcron.server.stores.sqlite import X\nif TYPE_CHECKING:\n    import xcron.server.api\n")
    assert [unit_of(m) for m in _runtime_imports(tree)] == ["stores"]
