"""Copy a checkpoint's files without following links out of it or widening their modes.

A ``local:`` checkpoint folder is the user's, but what its links point to may not be: a
``tokenizer.json`` that links to ``/etc/shadow`` or another user's file would otherwise be
copied into ``resources/models/`` and made world-readable. A link is followed only when its
target stays inside ``inside`` (the checkpoint folder; for a hub snapshot, the repository's
cache folder, whose snapshot links point into its ``blobs/``), and a copy's mode is the
source's masked to ``0o644``: never wider than the file it came from.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from loki_pipeline.errors import LokiInputError

#: Widest mode a copied file gets (the source's mode is kept where it is narrower).
COPY_MODE = 0o644


def copy_checkpoint_files(
    src: Path, dst: Path, patterns: Iterable[str], *, inside: Path, skip: Iterable[str] = ()
) -> dict[str, int]:
    """Copy the files of ``src`` matching ``patterns`` into ``dst``; return name -> mode given.

    Raises ``LokiInputError`` naming the first link whose target leaves ``inside``.
    """
    inside, skip = inside.resolve(), set(skip)
    modes: dict[str, int] = {}
    for pattern in patterns:
        for f in sorted(src.glob(pattern)):
            if f.name in skip or f.name in modes:
                continue
            target = f.resolve()
            if not target.is_relative_to(inside):
                raise LokiInputError(
                    f"checkpoint {src}: {f.name} links to {target}, outside the checkpoint "
                    f"folder {inside}; links may only point inside it (copy the file in instead)"
                )
            if not target.is_file():
                continue
            shutil.copyfile(target, dst / f.name)
            modes[f.name] = stat.S_IMODE(target.stat().st_mode) & COPY_MODE
            os.chmod(dst / f.name, modes[f.name])
    return modes
