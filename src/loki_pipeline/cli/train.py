"""``loki train``: fine-tune a model on a task with one method (LoKI, LoKI*, full, PEFT)."""

from __future__ import annotations

import argparse

HELP = "Fine-tune a model on a task (LoKI, LoKI*, full or a PEFT baseline)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings flags default to None: not given, the config's (or the schema's) stands."""
    import functools

    from loki_pipeline.cli.options import add_device, add_setting

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
    parser.add_argument(
        "--selection", default=None, help="selection JSON (LoKI methods; required there)"
    )
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
    setting = functools.partial(add_setting, parser)
    setting("--threads", "training.threads", "torch CPU threads", type=int)
    group = parser.add_argument_group(
        "training settings (override the config; the defaults are the schema's)"
    )
    setting = functools.partial(add_setting, group)
    setting("--max-steps", "training.max_steps", "optimizer steps; 0: run --epochs", type=int)
    setting("--lr", "training.learning_rate", "peak learning rate", dest="learning_rate",
            type=float)  # fmt: skip
    setting("--epochs", "training.epochs", "passes over the data (when --max-steps is 0)",
            type=float)  # fmt: skip
    setting("--batch-size", "training.batch_size", "examples per device step", type=int)
    setting("--grad-accum", "training.grad_accum", "gradient accumulation steps", type=int)
    setting("--cutoff-len", "training.cutoff_len", "tokens kept of each example", type=int)
    setting("--packing", "training.packing", "pack whole examples into --cutoff-len sequences",
            action=argparse.BooleanOptionalAction)  # fmt: skip
    setting("--warmup-ratio", "training.warmup_ratio", "share of steps warming up", type=float)
    setting("--scheduler", "training.scheduler", "learning-rate schedule")
    setting("--seed", "training.seed", "seed of data order and initialisation", type=int)
    setting("--dtype", "training.dtype", "training dtype")
    setting("--max-samples", "training.max_samples", "rows of the task's data; 0: all",
            type=int)  # fmt: skip
    setting("--save-every", "training.save_every", "steps between resumable checkpoints",
            type=int)  # fmt: skip
    setting(
        "--gradient-checkpointing",
        "training.gradient_checkpointing",
        "recompute activations in the backward pass: less memory, same weights",
        action=argparse.BooleanOptionalAction,
    )
    setting("--loss-chunk-tokens", "training.loss_chunk_tokens",
            "LM head and loss over this many supervised tokens at a time (0: all at once)",
            type=int)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from loki_pipeline.errors import LokiInputError
    from loki_pipeline.schemas import validate_training
    from loki_pipeline.tasks.registry import is_generic, loader_options, train_data
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
        from loki_pipeline.safe_text import read_json
        from loki_pipeline.safe_yaml import load_yaml

        cfg = read_json(path, "config file") if path.suffix == ".json" else load_yaml(path)
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
