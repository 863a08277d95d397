"""Where a config's results go, so that two configs never write the same file.

Every output of the workflow is a function of the config that made it; two configs writing the
same path (the worked example's KVA of its own prompt set over the default's KVA of MMLU) would
each redo and overwrite the other's results. So each config file gets a folder of its own:
``results`` for the embedded default ``config/config.yaml`` (today's paths) and
``results/<name>`` for a config file ``<name>.yaml`` given with ``--configfile``, unless the
config sets ``results_dir`` itself. ``results_dir`` is never inherited through ``extends``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError

#: The embedded default's folder (its paths are the ones documented everywhere).
DEFAULT = "results"
#: The folders the default config writes inside ``results/``: a derived ``results/<name>`` may
#: not be one of them, or one config's files would sit among the other's.
STAGE_FOLDERS = frozenset(
    {"kva", "select", "figures", "train", "suppress", "eval", "tables", "benchmarks", "logs"}
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def results_dir(
    config: Mapping[str, Any], config_files: Iterable[str | Path], default_config: str | Path
) -> str:
    """The config's results folder: its ``results_dir``, else ``results`` when no config file
    or the embedded default ``default_config`` was given, else ``results/<stem of the last
    config file>``."""
    explicit = config.get("results_dir")
    if explicit:
        return str(explicit)
    files = [Path(f) for f in config_files]
    if not files or files[-1].resolve() == Path(default_config).resolve():
        return DEFAULT
    name = files[-1].stem
    if not _NAME.match(name) or name in STAGE_FOLDERS:
        raise LokiInputError(
            f"{files[-1]}: its results would go to {DEFAULT}/{name}, which is not a plain "
            f"folder name of its own (letters, digits, '.', '_', '-'; not one of "
            f"{', '.join(sorted(STAGE_FOLDERS))}): set results_dir in the config"
        )
    return f"{DEFAULT}/{name}"


def logs_dir(results: str) -> str:
    """The jobs' log folder: ``logs`` for the default's ``results``, else ``<results>/logs``."""
    return "logs" if results == DEFAULT else f"{results}/logs"
