"""Read a YAML config the way a hostile file cannot abuse: one clear ``LokiInputError`` instead.

PyYAML's ``safe_load`` keeps the last of two equal keys (a user's first ``training:`` block
silently lost), shares an anchor's node among its aliases, so that a few lines of nested aliases
(an "anchor bomb") expand to billions of values as soon as anything walks or prints the config,
and decodes a binary or non-UTF-8 file into a traceback that names no file. ``load_yaml``
refuses each: a binary file, invalid UTF-8, a duplicate key (naming the key and both its lines),
nesting deeper than ``MAX_DEPTH`` and a document whose aliases expand to more than
``MAX_NODES`` values. Messages quote at most ``clip``'s few hundred characters of any value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from loki_pipeline.errors import LokiInputError
from loki_pipeline.safe_text import clip, read_text

#: Values (scalars, lists, mappings) a config may expand to once its aliases are followed;
#: the project's largest config has a few thousand.
MAX_NODES = 100_000
#: Deepest nesting of lists and mappings a config may have.
MAX_DEPTH = 100
_MERGE = "tag:yaml.org,2002:merge"


def _check_nodes(root: yaml.Node, path: str) -> None:
    """Duplicate keys, depth and expanded size of a composed document, walked without recursion."""
    expanded: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    on_path: set[int] = set()
    while stack:
        node, depth, done = stack.pop()
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            on_path.discard(id(node))
            expanded[id(node)] = 1 + sum(expanded[id(c)] for c in children)
            if expanded[id(node)] > MAX_NODES:
                raise LokiInputError(
                    f"{path}: its anchors and aliases expand to over {MAX_NODES} values (an "
                    f"'anchor bomb'?); write the values out instead (near line "
                    f"{node.start_mark.line + 1})"
                )
            continue
        if id(node) in expanded:
            continue
        if id(node) in on_path:
            raise LokiInputError(f"{path} line {node.start_mark.line + 1}: an alias inside itself")
        if depth > MAX_DEPTH:
            raise LokiInputError(
                f"{path} line {node.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels"
            )
        if isinstance(node, yaml.MappingNode):
            _check_duplicates(node, path)
        on_path.add(id(node))
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in expanded)


def _check_duplicates(node: yaml.MappingNode, path: str) -> None:
    first: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE:
            continue
        line = key.start_mark.line + 1
        seen = first.get((key.tag, key.value))
        first.setdefault((key.tag, key.value), line)
        if seen is not None:
            raise LokiInputError(
                f"{path}: key {clip(key.value, 80)!r} appears twice (lines {seen} and {line}); "
                "YAML would keep only the last silently: merge the two"
            )


def load_yaml(path: str | os.PathLike, what: str = "config") -> Any:
    """The document in the YAML file ``path`` (``safe_load`` semantics), after the checks in
    the module docstring; any failure is one ``LokiInputError`` line naming the file."""
    path = Path(path)
    text = read_text(path, what)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, f"{what} {path}")
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise LokiInputError(f"{what} {path}{where}: not valid YAML ({clip(problem)})") from None
    except RecursionError:
        raise LokiInputError(f"{what} {path}: nested too deeply to read") from None
    finally:
        loader.dispose()
