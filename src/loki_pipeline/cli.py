"""The ``loki`` command line: one sub-command per pipeline step.

Each sub-command lives next to the code it drives, in a ``commands`` module that exposes
``HELP`` (its description), ``add_arguments(parser)`` and ``run(args) -> int``. Only the module
of the command being run is imported, so ``loki --help`` answers without loading torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from loki_pipeline import __version__
from loki_pipeline.errors import LokiInputError, LokiWriteError
from loki_pipeline.interrupt import EXIT_STATUS, MESSAGE

#: sub-command -> (module implementing it, one-line summary). Adding a command is one entry.
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-model": (
        "loki_pipeline.models.commands",
        "fetch a model, save a safetensors checkpoint",
    ),
    "kva": ("loki_pipeline.kva.commands", "attribute MMLU prompts with KVA into an HDF5 shard"),
    "kva-gather": ("loki_pipeline.kva.commands_gather", "merge KVA shards into one kva.h5"),
    "select": (
        "loki_pipeline.select.commands",
        "select trainable nodes from a kva.h5, or check a selection",
    ),
    "train": (
        "loki_pipeline.train.commands",
        "fine-tune with LoKI, LoKI*, full or a PEFT baseline",
    ),
    "merge": ("loki_pipeline.implant.commands_merge", "fold an adapter into a plain checkpoint"),
    "suppress": (
        "loki_pipeline.implant.commands_suppress",
        "zero selected down_proj rows (ablation)",
    ),
    "eval-general": (
        "loki_pipeline.evaluate.commands_general",
        "six general benchmarks with lm-eval",
    ),
    "eval-task": (
        "loki_pipeline.evaluate.commands_task",
        "task performance: BFCL AST accuracy or reranking",
    ),
    "forgetting": (
        "loki_pipeline.report.commands_forgetting",
        "forgetting table from lm-eval result files",
    ),
    "plan": (
        "loki_pipeline.plan.commands",
        "peak memory of every KVA, training and evaluation job of a config",
    ),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The CLI parser; only the command named in ``argv`` gets its arguments (and imports)."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="loki", description="LoKI: Low-damage Knowledge Implanting of LLMs."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, summary) in COMMANDS.items():
        cmd = sub.add_parser(name, help=summary, description=summary)
        if name == chosen:
            module = importlib.import_module(module_name)
            cmd.description = module.HELP
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args) or 0)
    except LokiInputError as err:
        print(f"loki {args.command}: error: {err}", file=sys.stderr)
        return 2
    except LokiWriteError as err:
        print(f"loki {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: what was finished is kept; the same command resumes
        print(f"loki {args.command}: {MESSAGE}", file=sys.stderr)
        return EXIT_STATUS


if __name__ == "__main__":
    sys.exit(main())
