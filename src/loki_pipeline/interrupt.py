"""Ctrl-C of a long job or command: one line that says how to go on, and exit status 130.

Every stage keeps what it has finished (atomic outputs, flushed KVA rows, training
checkpoints), so an interrupted command is resumed by running it again. A traceback ending in
``KeyboardInterrupt`` says none of that; the ``loki`` commands and the workflow's long jobs
end with :data:`MESSAGE` instead (:func:`exit_on_sigint` in a job's script), and the workflow prints it once more when Snakemake stops on
the user's request (:func:`snakemake_was_interrupted`, the Snakefile's ``onerror``).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable

#: 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C.
EXIT_STATUS = 130
MESSAGE = (
    "interrupted: rerun the same command to resume (finished outputs and saved progress are "
    "kept)"
)
#: What Snakemake logs when Ctrl-C stops a workflow (its own message, Snakemake 9).
SNAKEMAKE_STOPPED = "Terminating processes on user request"


def exit_on_sigint(prefix: str = "") -> None:
    """From now on Ctrl-C (SIGINT) prints ``prefix + MESSAGE`` to stderr and exits with status
    130: it raises SystemExit where KeyboardInterrupt would be raised, so every ``finally``
    and ``with`` block still cleans up on the way out. For a job's script, first thing."""

    def stop(signum: int, frame: object) -> None:
        print(f"{prefix}{MESSAGE}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_STATUS)

    signal.signal(signal.SIGINT, stop)


def snakemake_was_interrupted(
    logs: str | os.PathLike | Iterable[str | os.PathLike] | None,
) -> bool:
    """Whether the Snakemake run that wrote ``logs`` (its log file, or the list of them that
    Snakemake 9 hands to ``onerror``) was stopped by Ctrl-C."""
    if logs is None:
        return False
    paths = [logs] if isinstance(logs, (str, os.PathLike)) else list(logs)
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as log:
                if any(SNAKEMAKE_STOPPED in line for line in log):
                    return True
        except OSError:
            continue
    return False
