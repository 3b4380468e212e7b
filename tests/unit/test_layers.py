"""The package's layers, read from its source: arrows point down, and there are no cycles.

Bottom up: the foundation (errors, policy values, failure classes, events, handlers), the
wire (``_transports``, SSE parsing), the exchange of one request (``_exchange``), the
protocol eras (``_eras``, which build on the exchange), the recovery layer (``_recovery``,
``_routing``), the public client (``_client``, ``_sync``), the public names
(``__init__``), and the optional packages on top. An import made at runtime (anywhere in a
module, functions included) may only go to the same layer or one below; imports under
``if TYPE_CHECKING:`` are for annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mcp_resilient

PACKAGE = "mcp_resilient"
ROOT = Path(mcp_resilient.__file__).parent

FOUNDATION, WIRE, EXCHANGE, ERA, RECOVERY, CLIENT, PUBLIC, OPTIONAL = range(8)
LAYER_NAMES = ["foundation", "wire", "exchange", "era", "recovery", "client", "public", "optional"]

LAYERS: dict[str, int] = {
    "errors": FOUNDATION,
    "_policy": FOUNDATION,
    "_pool": FOUNDATION,
    "_classify": FOUNDATION,
    "_headers": FOUNDATION,
    "_telemetry": FOUNDATION,
    "_events": FOUNDATION,
    "_background": FOUNDATION,
    "_handlers": FOUNDATION,
    "_results": FOUNDATION,
    "_sse": WIRE,
    "_transports": WIRE,
    "_exchange": EXCHANGE,
    "_eras": ERA,
    "_routing": RECOVERY,
    "_recovery": RECOVERY,
    "_client": CLIENT,
    "_sync": CLIENT,
    "__init__": PUBLIC,
    "__main__": OPTIONAL,  # `python -m mcp_resilient`: the CLI
    "auth": OPTIONAL,
    "server": OPTIONAL,
    "integrations": OPTIONAL,
    "cli": OPTIONAL,
    "testing": OPTIONAL,
}
"""Top-level module or package of ``mcp_resilient`` -> its layer (a package's modules share it)."""


def _modules() -> dict[str, Path]:
    """Dotted name (``mcp_resilient._eras._base``) -> file, for every module of the package."""
    found: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()  # a package is known by its own name
        found[".".join([PACKAGE, *parts])] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST, *, deferred: bool = True) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement outside ``if TYPE_CHECKING:`` blocks; ``deferred``: function
    bodies too (imports made when called), else only those made when the module loads."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for branch in node.orelse:
                walk(branch)
            return
        if not deferred and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(tree)
    return found


def _targets(
    module: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]
) -> set[str]:
    """The package's modules one import statement loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return {name for name in names if name in known}
    if node.level:
        here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base_parts = here[: len(here) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if not (base == PACKAGE or base.startswith(PACKAGE + ".")):
        return set()
    found: set[str] = set()
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        found.add(submodule if submodule in known else base)
    return {name for name in found if name in known}


def import_graph(modules: dict[str, Path], *, deferred: bool = True) -> dict[str, set[str]]:
    """Module -> the package's modules it imports at runtime (``deferred``: see above)."""
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in _runtime_imports(tree, deferred=deferred):
            edges |= _targets(module, path, node, known)
        edges.discard(module)
        graph[module] = edges
    return graph


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top not in LAYERS:
        raise AssertionError(f"{module} has no layer: add {top!r} to LAYERS in test_layers.py")
    return LAYERS[top]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def core(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph below the optional packages."""
    return {
        module: {target for target in targets if layer_of(target) < OPTIONAL}
        for module, targets in graph.items()
        if layer_of(module) < OPTIONAL
    }


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} ({LAYER_NAMES[layer_of(module)]}) imports {target}"
        f" ({LAYER_NAMES[layer_of(target)]})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(_modules())


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    for module in graph:
        layer_of(module)
    assert "mcp_resilient._recovery" in graph
    assert "mcp_resilient._exchange" in graph


def test_the_runtime_imports_have_no_cycle(graph: dict[str, set[str]]) -> None:
    """No cycle when the package loads; none at all, deferred imports included, below the
    optional packages (which may defer an import to break a cycle among their own modules)."""
    loading = import_graph(_modules(), deferred=False)
    assert find_cycle(loading) is None, " -> ".join(find_cycle(loading) or [])
    assert find_cycle(core(graph)) is None, " -> ".join(find_cycle(core(graph)) or [])


def test_lower_layers_never_import_higher_ones(graph: dict[str, set[str]]) -> None:
    assert upward_imports(graph) == []


def test_the_layers_are_used_as_the_story_says(graph: dict[str, set[str]]) -> None:
    """The graph is not trivially empty: each layer builds on the one below."""
    assert "mcp_resilient._transports" in graph["mcp_resilient._exchange"]
    assert "mcp_resilient._exchange" in graph["mcp_resilient._eras._stateless"]
    assert {"mcp_resilient._eras", "mcp_resilient._exchange"} <= graph["mcp_resilient._recovery"]
    assert "mcp_resilient._recovery" in graph["mcp_resilient._client"]
    assert "mcp_resilient._client" in graph["mcp_resilient"]


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    """The checks themselves can fail: the exchange importing recovery is caught."""
    modules = _modules()
    exchange = tmp_path / "_exchange.py"
    exchange.write_text(
        modules["mcp_resilient._exchange"].read_text(encoding="utf-8")
        + "\nfrom ._recovery import Recovery\n",
        encoding="utf-8",
    )
    modules["mcp_resilient._exchange"] = exchange
    bad = import_graph(modules)
    assert "mcp_resilient._exchange (exchange) imports mcp_resilient._recovery (recovery)" in (
        upward_imports(bad)
    )
    cycle = find_cycle(core(bad))
    assert cycle is not None
    assert "mcp_resilient._recovery" in cycle

    typed_only = tmp_path / "_exchange_typed.py"
    typed_only.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._recovery import Recovery\n",
        encoding="utf-8",
    )
    modules["mcp_resilient._exchange"] = typed_only
    assert upward_imports(import_graph(modules)) == []
