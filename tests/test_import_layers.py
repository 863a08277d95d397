"""The package's import graph is layered: no circle, and no import runs up a layer.

Every import is read from the source (``ast``), the ones inside functions included: those
closed the circles this test was written against, unseen by ruff and by import time. A
package's ``__init__`` is a node of its own. The layers are the pipeline's order (README "Layout"): foundations, then the
stages in their order, the registries, config validation, plan/report/figures, the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "loki_pipeline"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

#: (layer, module prefixes), lowest first; a module belongs to its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundations",
        (
            "errors",
            "io",
            "devices",
            "interrupt",
            "safe_text",
            "safe_yaml",
            "time_limit",
            "hub_access",
        ),
    ),
    ("schema", ("schemas", "settings")),
    ("data and models", ("data", "models")),
    ("kva", ("kva",)),
    ("select", ("select",)),
    ("implant", ("implant",)),
    ("train", ("train",)),
    ("evaluate", ("evaluate",)),
    ("registries", ("tasks", "runs")),
    ("config", ("config", "results_dir")),
    ("plan, report, figures", ("plan", "report", "figures")),
    ("cli", ("cli",)),
]

#: Imports allowed to run up a layer: (importer, imported) -> why. At most one (issue 24).
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    ("train.run", "tasks.registry"): "the training driver asks the task registry for its data "
    "once (tasks.registry.task_examples) and hands the conversations down to data.sft",
}


def modules() -> dict[str, Path]:
    """Dotted name (without the package prefix; '' for the package) -> file."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _targets(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of the package that importing ``name`` runs, function-level included."""
    found: set[str] = set()
    is_init = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            dotted = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = [PACKAGE, *name.split(".")] if name else [PACKAGE]
                if not is_init:
                    base = base[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            dotted = [module, *(f"{module}.{a.name}" for a in node.names)]
        else:
            continue
        for full in dotted:
            if full != PACKAGE and not full.startswith(PACKAGE + "."):
                continue
            # as import-linter counts: the most specific module named (``from a import b``
            # is an import of module ``a.b`` where that exists, else of ``a``)
            target = full.split(".")[1:]
            while target and ".".join(target) not in known:
                target.pop()
            if target and ".".join(target) != name:
                found.add(".".join(target))
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: _targets(name, path, known) for name, path in known.items() if name}


def layer_of(name: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    if rank is None:
        raise AssertionError(f"module {name!r} is in no layer of LAYERS: add it")
    return rank


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted(
        (a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a)
    )


def test_the_oracle_finds_a_circle_and_an_upward_import():
    graph = {"kva.a": {"select.b"}, "select.b": {"kva.a"}, "cli": {"errors"}}
    assert circles(graph) == [["kva.a", "select.b"]]
    assert upward_imports(graph) == [("kva.a", "select.b")]


def test_function_level_and_relative_imports_are_read(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "kva").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "kva" / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "kva" / "x.py").write_text(
        "def f():\n    from ..errors import E\n    import loki_pipeline.cli\n"
    )
    (pkg / "cli.py").write_text("")
    known = {"": pkg, "errors": pkg, "cli": pkg, "kva": pkg, "kva.x": pkg}
    assert _targets("kva.x", pkg / "kva" / "x.py", known) == {"errors", "cli"}


def test_every_module_has_a_layer():
    for name in import_graph():
        layer_of(name)


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_no_import_runs_up_a_layer():
    upward = upward_imports(import_graph())
    assert [u for u in upward if u not in ALLOWED_UPWARD] == [], [
        f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})" for a, b in upward
    ]
    assert len(ALLOWED_UPWARD) <= 1


def private_imports() -> list[str]:
    """``from loki_pipeline.x import _name`` in the package: a private name used across modules."""
    found = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
                found += [f"{name}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]  # fmt: skip
    return found


def test_no_module_imports_another_modules_private_name():
    assert private_imports() == []


@pytest.mark.parametrize("name", ["cli"])
def test_the_cli_is_the_top_floor(name):
    assert layer_of(name) == len(LAYERS) - 1
