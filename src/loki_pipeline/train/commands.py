"""``loki train``: fine-tune a model on a task with one method (LoKI, LoKI*, full, PEFT)."""

from __future__ import annotations

import argparse

HELP = "Fine-tune a model on a task (LoKI, LoKI*, full or a PEFT baseline)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings flags default to None: not given, the config's (or the schema's) stands."""
    from loki_pipeline.cli_options import add_device
    from loki_pipeline.train.settings import DTYPES

    parser.add_argument("--model", required=True, help="base model checkpoint directory")
    parser.add_argument(
        "--task",
        required=True,
        help="toolace or reranker (the paper's), or any other name: a task of your own, its "
        "data in LLaMA-Factory's alpaca or sharegpt format (--format, or tasks.<task>.train "
        "of --config)",
    )
    parser.add_argument("--data", default=None, help="training data file (default: shipped set)")
    parser.add_argument(
        "--format",
        choices=["alpaca", "sharegpt"],
        default=None,
        help="a task of your own: its data's format (default: tasks.<task>.train.format of "
        "--config); the held-out rows of tasks.<task>.eval.heldout are left out",
    )
    parser.add_argument(
        "--method",
        required=True,
        help="loki_q{q}, loki_{strategy}_q{q}, loki_lora_q{q}_r{r}, full, lora_r{r}, dora_r{r}, "
        "pissa_r{r}, corda_r{r}",
    )
    parser.add_argument("--selection", default=None, help="selection JSON (LoKI methods)")
    parser.add_argument("--out", required=True, help="run directory to write (atomic)")
    parser.add_argument(
        "--checkpoint-dir",
        default=None,
        help="resumable state (default: {out}/../.checkpoints/{out name})",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="YAML/JSON file with a 'training' block (defaults and overrides), checked against "
        "the pipeline config's schema, and for a task of your own its 'tasks.<task>' block "
        "(data, format, held-out split); other keys of the file are ignored",
    )
    add_device(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    group = parser.add_argument_group("training settings (override the config)")
    group.add_argument("--max-steps", type=int, default=None)
    group.add_argument("--lr", dest="learning_rate", type=float, default=None)
    group.add_argument("--epochs", type=float, default=None)
    group.add_argument("--batch-size", type=int, default=None)
    group.add_argument("--grad-accum", type=int, default=None)
    group.add_argument("--cutoff-len", type=int, default=None)
    group.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--warmup-ratio", type=float, default=None)
    group.add_argument("--scheduler", default=None)
    group.add_argument("--seed", type=int, default=None)
    group.add_argument("--dtype", default=None, choices=DTYPES)
    group.add_argument("--max-samples", type=int, default=None)
    group.add_argument("--save-every", type=int, default=None)
    group.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute activations in the backward pass: less memory, same weights",
    )
    group.add_argument(
        "--loss-chunk-tokens",
        type=int,
        default=None,
        help="LM head and loss over this many supervised tokens at a time (0: all at once)",
    )


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from loki_pipeline.errors import LokiInputError
    from loki_pipeline.schemas import validate_training
    from loki_pipeline.tasks import is_generic, loader_options, train_data
    from loki_pipeline.train.launch import launched_rank
    from loki_pipeline.train.methods import parse_method
    from loki_pipeline.train.run import run_training
    from loki_pipeline.train.settings import TrainSettings

    parse_method(args.method)  # a bad name fails before anything is read
    training: dict = {}
    task_config: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise LokiInputError(f"config file {path} does not exist")
        import yaml

        try:
            text = path.read_text()
            cfg = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as err:
            raise LokiInputError(f"config file {path}: not valid JSON/YAML ({err})") from None
        if cfg is not None and not isinstance(cfg, dict):
            raise LokiInputError(f"config file {path}: expected a mapping with a 'training' key")
        # The same schema as the pipeline's `training` block (one definition of every setting).
        training = dict(validate_training((cfg or {}).get("training"), prefix=f"{path}: training"))
        if is_generic(args.task):  # a paper task's data options stay the command line's
            task_config = dict(((cfg or {}).get("tasks") or {}).get(args.task) or {})
    data = train_data(args.task, task_config)
    if args.format is not None:
        data["format"] = args.format
    data_options = loader_options(args.task, data)  # a task without a format fails here
    threads = args.threads or training.get("threads")  # a setting of the job, not of the run
    settings = TrainSettings.from_cli(
        args, config={"training": training, "tasks": {args.task: {"train": data}}}
    )
    if threads:
        import torch

        torch.set_num_threads(threads)
    run_training(
        args.model,
        args.task,
        args.data if args.data is not None else data.get("source"),
        args.method,
        args.out,
        settings,
        selection_path=args.selection,
        checkpoint_dir=args.checkpoint_dir,
        device=args.device,
        data_options=data_options,
    )
    if launched_rank() == 0:  # under torchrun, rank 0 wrote the run
        print(f"run written to {args.out}")
    return 0
