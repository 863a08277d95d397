"""The help of every ``loki`` command: each flag's default shown, a mistyped flag answered."""

from __future__ import annotations

import argparse
import difflib


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that names each flag's default: argparse's ``(default: X)`` unless the help text
    already says it (a flag whose default comes from the config schema, or is computed)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required or action.default in (None, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def did_you_mean(unknown: str, parser: argparse.ArgumentParser) -> str | None:
    """The flag of ``parser`` that ``unknown`` most likely meant: one whose name or destination
    it spells (``--learning-rate`` is ``--lr``'s ``learning_rate``), else the closest name."""
    flag = unknown.split("=", 1)[0]
    options = {
        o: a.dest for a in parser._actions if a.help != argparse.SUPPRESS for o in a.option_strings
    }
    by_dest = [o for o, dest in options.items() if dest == flag.lstrip("-").replace("-", "_")]
    close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
    return (by_dest or close or [None])[0]
