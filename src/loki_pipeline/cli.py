"""The ``loki`` command line: one sub-command per pipeline step.

Each sub-command lives next to the code it drives, in a ``commands`` module that exposes
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Those modules import only
``argparse`` at top level, so ``loki --help`` stays fast; heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from loki_pipeline import __version__
from loki_pipeline.errors import LokiInputError

#: sub-command name -> module implementing it. Adding a command is one entry here.
COMMANDS: dict[str, str] = {
    "prepare-model": "loki_pipeline.models.commands",
    "kva": "loki_pipeline.kva.commands",
    "kva-gather": "loki_pipeline.kva.commands_gather",
    "select": "loki_pipeline.select.commands",
    "train": "loki_pipeline.train.commands",
    "merge": "loki_pipeline.implant.commands_merge",
    "suppress": "loki_pipeline.implant.commands_suppress",
    "eval-general": "loki_pipeline.evaluate.commands_general",
    "eval-task": "loki_pipeline.evaluate.commands_task",
    "forgetting": "loki_pipeline.report.commands_forgetting",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loki", description="LoKI: Low-damage Knowledge Implanting of LLMs."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # a stage package (or its commands module) not written yet; real import errors raise
            if err.name is None or not (module_name + ".").startswith(err.name + "."):
                raise
            continue  # a stage not installed in this build
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args) or 0)
    except LokiInputError as err:
        print(f"loki {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
