"""Read a user's text and JSON files so that a hostile one ends in one clear line.

Bytes that are not UTF-8, a NUL (a binary file), JSON nested deeper than Python's recursion
allows (``RecursionError`` from ``json``) and a string holding a lone surrogate (``"\\ud800"``
is valid JSON, but no tokenizer takes it) each end in a ``LokiInputError`` naming the file and,
where there is one, the line or row. ``clip`` keeps any quoted value to a few hundred characters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError

#: Most characters of a user's value quoted in a message.
MAX_QUOTE = 300


def clip(text: object, limit: int = MAX_QUOTE) -> str:
    """``str(text)`` cut to ``limit`` characters, saying how much was left out."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of ``path``; ``LokiInputError`` naming it when it is binary or not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise LokiInputError(f"{what} {path}: cannot read it ({err.strerror or err})") from None
    if b"\0" in data:
        raise LokiInputError(f"{what} {path}: a binary file (NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        return _decode(data, f"{what} {path} line {line}")  # raises, naming the line


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LokiInputError(
            f"{where}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})"
        ) from None


def check_strings(value: Any, where: str) -> None:
    """Refuse a lone surrogate in any string of ``value`` (walked without recursion)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError as err:
                    raise LokiInputError(
                        f"{where}: a lone surrogate {v[err.start]!r} at character {err.start} "
                        f"of {clip(repr(v), 80)} (not text any tokenizer takes)"
                    ) from None
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)


def loads_json(text: str, where: str, *, strings: bool = True) -> Any:
    """``json.loads(text)``, its failures and lone surrogates one ``LokiInputError`` at ``where``
    (``strings=False``: the caller checks the strings, e.g. row by row, with ``check_strings``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise LokiInputError(f"{where}: invalid JSON ({clip(err)})") from None
    except RecursionError:
        raise LokiInputError(f"{where}: JSON nested too deeply to read") from None
    if strings:
        check_strings(value, where)
    return value


def read_json(path: str | os.PathLike, what: str = "file", *, strings: bool = True) -> Any:
    """The JSON document in ``path``, read as ``loads_json`` reads text."""
    return loads_json(read_text(path, what), f"{what} {path}", strings=strings)


def iter_json_lines(path: str | os.PathLike, *, strings: bool = True) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank line of a JSON Lines file, streamed, each read
    as ``loads_json`` reads text."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path} line {lineno}"
            if b"\0" in raw:
                raise LokiInputError(f"{where}: a binary file (NUL bytes), not JSON Lines")
            line = _decode(raw, where)
            if line.strip():
                yield lineno, loads_json(line, where, strings=strings)
