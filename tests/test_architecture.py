"""The layout is the architecture (docs/architecture.md): these tests fail on an import circle,
on a lower layer importing a higher one, or on a private name imported across modules.

Every ``import`` counts, at module level or inside a function: a circle hidden in a function
body is still a circle a reader has to untangle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# the layers, lowest first (docs/architecture.md); a module may import its own layer's and
# lower layers' modules only. The root package (``mpbench/__init__.py``) registers the
# built-in models and sits outside the ranking (importing it for ``__version__`` is fine).
LAYERS = [
    ("leaves", ["mpbench.errors", "mpbench.storage", "mpbench.config", "mpbench.plugins",
                "mpbench.registry"]),
    ("baselines", ["mpbench.baselines"]),
    ("models", ["mpbench.models"]),
    ("data", ["mpbench.data"]),
    ("complexity", ["mpbench.complexity"]),
    ("training", ["mpbench.training"]),
    ("bench", ["mpbench.bench"]),
    ("suite", ["mpbench.suite"]),
    ("report", ["mpbench.report"]),
    ("cli", ["mpbench.cli", "mpbench.__main__"]),
]


def module_files() -> dict[str, Path]:
    """Every mpbench module by dotted name (``baselines/`` is installed as mpbench.baselines)."""
    out = {}
    for root, package in ((REPO / "mpbench", "mpbench"), (REPO / "baselines", "mpbench.baselines")):
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = module_files()


def _where(name: str) -> str:
    path = MODULES[name]
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports_of(name: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in module ``name``."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    package = name if _is_package(name) else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES:  # `from mpbench import data`: the module itself
                    found.append((sub, None, node.lineno))
                else:
                    found.append((base, alias.name, node.lineno))
    return [(mod, attr, line) for mod, attr, line in found
            if mod == "mpbench" or mod.startswith("mpbench.")]


def _resolve(mod: str) -> str | None:
    while mod and mod not in MODULES:
        mod = mod.rpartition(".")[0]
    return mod or None


def graph() -> dict[str, set[str]]:
    return {name: {t for mod, _, _ in imports_of(name) if (t := _resolve(mod)) and t != name}
            for name in MODULES}


def rank(name: str) -> int | None:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    return None


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
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


def test_every_module_has_a_layer():
    unranked = [m for m in MODULES if m != "mpbench" and rank(m) is None]
    assert not unranked, f"modules outside every layer (add them to docs/architecture.md): {unranked}"


def test_no_import_circles():
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_lower_layers_never_import_higher_ones():
    bad = []
    for name in MODULES:
        if name == "mpbench":
            continue
        for mod, _, line in imports_of(name):
            target = _resolve(mod)
            if target in (None, "mpbench", name):
                continue
            if rank(target) > rank(name):
                bad.append(f"{_where(name)}:{line}: {LAYERS[rank(name)][0]} "
                           f"imports {target} ({LAYERS[rank(target)][0]})")
    assert not bad, "\n".join(bad)


def test_no_private_name_is_imported_across_modules():
    bad = [f"{_where(name)}:{line}: from {mod} import {attr}"
           for name in MODULES for mod, attr, line in imports_of(name)
           if attr and attr.startswith("_") and not attr.startswith("__") and _resolve(mod) != name]
    bad += [f"{_where(name)}:{line}: import {mod}"
            for name in MODULES for mod, attr, line in imports_of(name)
            if attr is None and any(p.startswith("_") and not p.startswith("__") for p in mod.split("."))]
    assert not bad, "\n".join(bad)


def test_the_trainer_knows_nothing_of_fine_tuning():
    """Frozen backbones, resizing and weight loading reach the loop as callbacks only."""
    reached = set()
    todo = ["mpbench.training.trainer"]
    edges = graph()
    while todo:
        for nxt in edges[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    assert not reached & {"mpbench.training.init", "mpbench.training.callbacks", "mpbench.suite.starts"}
    source = MODULES["mpbench.training.trainer"].read_text()
    assert "freeze_backbone" not in source and "input_size" not in source


# the checker itself must be able to fail: a circle, an upward import and a private import
def test_the_checks_catch_what_they_claim(tmp_path, monkeypatch):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    fake = {"mpbench.registry": tmp_path / "registry.py", "mpbench.cli.x": tmp_path / "x.py"}
    fake["mpbench.registry"].write_text("def f():\n    from mpbench.cli.x import _hidden\n")
    fake["mpbench.cli.x"].write_text("import mpbench.registry\n")
    monkeypatch.setattr(__import__(__name__), "MODULES", fake)
    with pytest.raises(AssertionError, match="leaves imports mpbench.cli.x"):
        test_lower_layers_never_import_higher_ones()
    with pytest.raises(AssertionError, match="import circle"):
        test_no_import_circles()
    with pytest.raises(AssertionError, match="_hidden"):
        test_no_private_name_is_imported_across_modules()
