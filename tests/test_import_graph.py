"""The engine's import graph, read from the source (every import statement that runs,
function-level ones included): no cycle among float_core modules, no UI library, no private
name of another module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "float_core"
UI_PACKAGES = ("float_studio", "gradio", "plotly")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` inside ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only: never executed,
    so they cannot form an import cycle)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every import the file executes,
    at module level or inside functions."""
    module, is_package = _module_name(path), path.name == "__init__.py"
    found = []
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((_resolve(module, is_package, node.level, node.module), [a.name for a in node.names],
                          node.lineno))
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _edges() -> dict[str, set[str]]:
    """float_core module -> the float_core modules it imports (a package import counts as the
    package's __init__; ``from pkg import sub`` as the submodule)."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, names, _ in _imports(path):
            if not target.startswith("float_core"):
                continue
            for name in names or [None]:
                sub = f"{target}.{name}" if name else None
                dest = sub if sub in MODULES else target
                if dest in MODULES and dest != module:
                    edges[module].add(dest)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_reader_sees_function_level_imports():
    """Guard for the checks below: the reader finds known edges, including an import inside a
    function (pipeline imports streaming only inside FloatPipeline.stream)."""
    edges = _edges()
    assert "float_core.streaming" in edges["float_core.pipeline"]
    assert "float_core.inputs" in edges["float_core.streaming"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_among_engine_modules():
    """Package ``__init__`` files re-export lazily (no edge from a package to its modules'
    importers is needed), so any cycle is a real one."""
    edges = _edges()
    # A package __init__ that only re-exports its own submodules does not make a cycle with them.
    for module in edges:
        if MODULES[module].name == "__init__.py":
            edges[module] = {d for d in edges[module] if not d.startswith(module + ".")}
    assert _cycle(edges) is None, f"import cycle: {' -> '.join(_cycle(edges) or [])}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_engine_module_imports_no_ui_and_no_private_names(module):
    for target, names, line in _imports(MODULES[module]):
        assert target.split(".")[0] not in UI_PACKAGES, f"{module}:{line} imports {target}"
        if target.startswith("float_core") and target != module:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{module}:{line} imports private {private} from {target}"


#: Agent frameworks (optional extras): each imported only by its adapter module.
FRAMEWORKS = {"pipecat": "float_core.integrations.pipecat"}


def test_agent_frameworks_stay_in_their_adapters():
    """``import float_core`` (or any engine module) never imports an agent framework: only its
    adapter in ``float_core.integrations`` imports it, and no module outside that package
    imports an adapter."""
    for module, path in MODULES.items():
        for target, names, line in _imports(path):
            top = target.split(".")[0]
            if top in FRAMEWORKS:
                assert module == FRAMEWORKS[top], f"{module}:{line} imports {target}"
            adapters = [target] + [f"{target}.{n}" for n in names]
            if not module.startswith("float_core.integrations"):
                assert not any(a.startswith("float_core.integrations") for a in adapters), \
                    f"{module}:{line} imports {target}"
    edges = _edges()
    assert any(e.startswith("float_core.avatar") for e in edges["float_core.integrations.pipecat"])  # seen


def test_public_names_are_exported_and_resolve():
    """``float_core.__all__`` lists the eager names and every lazily imported one, and each
    resolves to an object defined in the module the lazy table names."""
    import float_core

    eager = {n for n in float_core.__all__ if n not in float_core._LAZY}
    assert set(float_core.__all__) == eager | set(float_core._LAZY)
    assert eager == {"EMOTIONS", "FPS", "SAMPLE_RATE", "SAMPLES_PER_FRAME", "FloatConfig", "SamplingConfig",
                     "StreamOptions"}
    for name, module in float_core._LAZY.items():
        value = getattr(float_core, name)
        assert getattr(value, "__module__", f"float_core.{module}") == f"float_core.{module}", name
