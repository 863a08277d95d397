"""Every skip in the tests says which command prepares what the skipped test needs (a command in
backticks), so a user who sees "skipped" knows how to run it."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SKIPS = {"skip", "skipif", "importorskip"}


def _strings(node: ast.AST, constants: dict[str, str]) -> str:
    """The text of every string constant in ``node`` (module-level names resolved)."""
    parts = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            parts.append(sub.value)
        elif isinstance(sub, ast.Name) and sub.id in constants:
            parts.append(constants[sub.id])
    return " ".join(parts)


def test_every_skip_message_names_a_command():
    missing = []
    for path in sorted(TESTS.glob("*.py")):
        tree = ast.parse(path.read_text())
        constants = {
            t.id: _strings(node.value, {})
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = ast.unparse(node.func.value)
            if node.func.attr not in SKIPS or owner not in ("pytest", "pytest.mark"):
                continue
            if node.func.attr == "skipif" and not node.keywords:
                continue
            message = _strings(ast.Module(body=[ast.Expr(a) for a in node.args[1:]] + [
                ast.Expr(k.value) for k in node.keywords], type_ignores=[]), constants)  # fmt: skip
            if node.func.attr == "skip":
                message = _strings(node, constants)
            if message.count("`") < 2:
                missing.append(f"{path.name}:{node.lineno}")
    assert not missing, f"skips without a command: {missing}"
