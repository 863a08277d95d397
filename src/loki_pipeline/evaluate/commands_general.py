"""``loki eval-general``: a checkpoint's general-ability scores through lm-eval."""

from __future__ import annotations

import argparse

HELP = (
    "Score a checkpoint on TriviaQA, GSM8K, HellaSwag, WinoGrande, HumanEval and IFEval with "
    "lm-eval; write a summary JSON and lm-eval's own results and samples beside it."
)

ALL_TASKS = "triviaqa,gsm8k,hellaswag,winogrande,humaneval,ifeval"


def _metric(text: str) -> tuple[str, str]:
    task, sep, key = text.partition("=")
    if not sep or not task or not key:
        raise argparse.ArgumentTypeError(f"expected TASK=METRIC,FILTER, got {text!r}")
    return task, key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
    parser.add_argument("--out", required=True, help="summary JSON to write (general.json)")
    parser.add_argument(
        "--lm-eval-dir", help="where lm-eval's files go (default: OUT's dir/lm_eval)"
    )
    parser.add_argument("--name", help="model name recorded in the summary (default: dir name)")
    parser.add_argument("--run", help="run name recorded in the summary (e.g. base)")
    parser.add_argument("--tasks", default=ALL_TASKS, help=f"comma-separated (default {ALL_TASKS})")
    parser.add_argument(
        "--source",
        choices=["local", "hub"],
        default="local",
        help="local: project items under --data-dir; hub: lm-eval's official datasets",
    )
    parser.add_argument("--data-dir", help="local items (default: the checkout's data/lm_eval)")
    parser.add_argument("--limit", type=int, help="at most this many items per task")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--dtype", default="auto", help="model dtype (auto, float32, bfloat16)")
    parser.add_argument(
        "--max-gen-toks", type=int, help="cap on new tokens per answer (default: each task's own)"
    )
    parser.add_argument(
        "--num-fewshot",
        type=int,
        help="few-shot examples for every task (default: each task's own)",
    )
    parser.add_argument("--apply-chat-template", action="store_true")
    parser.add_argument(
        "--allow-code-execution",
        action="store_true",
        help="needed for humaneval: runs model-written code in 'python -I' subprocesses",
    )
    parser.add_argument("--code-timeout", type=float, default=10.0, help="seconds per program")
    parser.add_argument(
        "--metric",
        type=_metric,
        action="append",
        default=[],
        metavar="TASK=METRIC,FILTER",
        help="score a task by another lm-eval result key (repeatable)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads for torch")


def run(args: argparse.Namespace) -> int:
    import json

    from loki_pipeline.evaluate.general import evaluate_general

    summary = evaluate_general(
        args.model,
        args.out,
        model=args.name,
        run=args.run,
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
        source=args.source,
        data_dir=args.data_dir,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        max_gen_toks=args.max_gen_toks,
        num_fewshot=args.num_fewshot,
        apply_chat_template=args.apply_chat_template,
        allow_code_execution=args.allow_code_execution,
        code_timeout=args.code_timeout,
        metrics=dict(args.metric) or None,
        lm_eval_dir=args.lm_eval_dir,
        threads=args.threads,
    )
    print(json.dumps(summary["scores"], indent=2))
    return 0
