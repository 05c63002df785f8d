"""The layers the folders name hold: no import cycle, and each layer imports only those below it
(imports under `if TYPE_CHECKING:` are for annotations and do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "starcoder_router"

# What each layer may import from the others. `_routing` is the pure core: request, fitting,
# decision; `_autocomplete` (completion modes, cutting answers) is pure too and reads requests.
# `_running` drives everything.
ALLOWED = {
    "_transports": set(),
    "_routing": set(),
    "_autocomplete": {"_routing"},
    "_providers": {"_routing", "_transports"},
    "_stores": {"_routing"},
    "_fleet": {"_routing"},
    "_running": {"_routing", "_autocomplete", "_providers", "_transports", "_stores", "_fleet"},
    "_server": {"_routing", "_autocomplete", "_providers", "_transports", "_stores",
                "_running", "_fleet"},
    "_simulate": {"_routing", "_autocomplete", "_providers", "_transports", "_stores",
                  "_running"},
    "_doctor": {"_routing", "_autocomplete", "_providers", "_transports", "_stores",
                "_running", "_fleet"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _runtime_imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Package modules imported at module level (not in functions, not for type checking)."""
    is_pkg = path.name == "__init__.py"
    deps: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = name.split(".") if is_pkg else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = ".".join([*base, *([node.module] if node.module else [])])
            for cand in [target, *(f"{target}.{a.name}" for a in node.names)]:
                if cand in known and cand != name:
                    deps.add(cand)
    return deps


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _runtime_imports(name, path, known) for name, path in known.items()}


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, dep]))
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for name, deps in _graph().items():
        layer = name.split(".")[1] if name.count(".") else ""
        if layer not in ALLOWED:
            continue
        for dep in deps:
            other = dep.split(".")[1] if dep.count(".") else ""
            if other in ALLOWED and other != layer and other not in ALLOWED[layer]:
                wrong.append(f"{name} -> {dep}")
    assert wrong == []
