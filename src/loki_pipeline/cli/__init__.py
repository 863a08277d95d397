"""The ``loki`` command line: one sub-command per pipeline step.

Each sub-command is a module of this package (``cli/<command>.py``) that exposes
``HELP`` (its description), ``add_arguments(parser)`` and ``run(args) -> int``. Only the module
of the command being run is imported, so ``loki --help`` answers without loading torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from loki_pipeline import __version__
from loki_pipeline.cli.help import HelpFormatter, did_you_mean
from loki_pipeline.errors import LokiInputError, LokiWriteError
from loki_pipeline.interrupt import EXIT_STATUS, MESSAGE

#: sub-command -> (module implementing it, one-line summary). Adding a command is one entry.
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-model": (
        "loki_pipeline.cli.prepare_model",
        "fetch a model, save a safetensors checkpoint",
    ),
    "kva": (
        "loki_pipeline.cli.kva",
        "attribute a prompt set (MMLU, a prompts file or an lm-eval task) with KVA into an "
        "HDF5 shard",
    ),
    "kva-gather": ("loki_pipeline.cli.kva_gather", "merge KVA shards into one kva.h5"),
    "select": (
        "loki_pipeline.cli.select",
        "select trainable nodes from a kva.h5, or check a selection",
    ),
    "train": (
        "loki_pipeline.cli.train",
        "fine-tune with LoKI, LoKI*, full or a PEFT baseline",
    ),
    "merge": ("loki_pipeline.cli.merge", "fold an adapter into a plain checkpoint"),
    "suppress": (
        "loki_pipeline.cli.suppress",
        "zero selected down_proj rows (ablation)",
    ),
    "eval-general": (
        "loki_pipeline.cli.eval_general",
        "six general benchmarks with lm-eval",
    ),
    "eval-task": (
        "loki_pipeline.cli.eval_task",
        "task performance: BFCL (ToolACE), reranking, or a task of your own's held-out split "
        "and lm-eval tasks",
    ),
    "forgetting": (
        "loki_pipeline.cli.forgetting",
        "forgetting table from lm-eval result files",
    ),
    "plan": (
        "loki_pipeline.cli.plan",
        "peak memory of every KVA, training and evaluation job of a config",
    ),
}


def build_parser(
    argv: list[str] | None = None, commands: dict[str, argparse.ArgumentParser] | None = None
) -> argparse.ArgumentParser:
    """The CLI parser; only the command named in ``argv`` gets its arguments (and imports).

    ``commands``, when given, collects each sub-command's parser by name."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="loki", description="LoKI: Low-damage Knowledge Implanting of LLMs."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, summary) in COMMANDS.items():
        cmd = sub.add_parser(name, help=summary, description=summary, formatter_class=HelpFormatter)
        if commands is not None:
            commands[name] = cmd
        if name == chosen:
            module = importlib.import_module(module_name)
            cmd.description = module.HELP
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; an unknown flag is an error of its sub-command, with a did-you-mean."""
    argv = sys.argv[1:] if argv is None else argv
    commands: dict[str, argparse.ArgumentParser] = {}
    parser = build_parser(argv, commands)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        cmd = commands.get(args.command, parser)
        hints = [f"{u} (did you mean {m}?)" if (m := did_you_mean(u, cmd)) else u for u in unknown]
        cmd.error(f"unrecognized arguments: {' '.join(hints)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
