"""Check the memory plan (loki_pipeline.plan) against peaks measured on CPU, SmolLM2-135M.

Each case runs in a fresh subprocess, one thread: it imports what the job imports, notes its
resident memory, runs the job's own code path on inputs of exactly the planned sizes, and
reports the peak resident memory (VmHWM). The measured peak is VmHWM minus the resident memory
after the imports; the estimate is the plan's device peak for the same settings (on CPU the
device is the host). Run from the repository root once the model is prepared
(``snakemake --cores 1 resources/models/smollm2-135m``)::

    python benchmarks/memory_plan.py [--cases kva,train_loki,...] [--model DIR]

Cases: kva (exact backend, 4 prompts of 128 tokens, 7 steps), train_loki (loki_q10) and
train_lora (lora_r16) with 2 sequences of 1024 and 1000 tokens, a quarter of them supervised,
two optimizer steps (the default config's cutoff and batch), train_loki_gc (the same with
gradient checkpointing), eval (greedy generation, 8 prompts of up to ~550 tokens, 64 new tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MODEL = Path("resources/models/smollm2-135m")
CASES = ("kva", "train_loki", "train_lora", "train_loki_gc", "eval")
#: the train cases: (method, gradient checkpointing)
TRAIN = {"train_loki": ("loki_q10", False), "train_lora": ("lora_r16", False),
         "train_loki_gc": ("loki_q10", True)}  # fmt: skip
SEQS, SUPERVISED = (1024, 1000), 0.25
KVA_PROMPTS, KVA_TOKENS, KVA_STEPS = 4, 128, 7
EVAL_BATCH, EVAL_PROMPT, EVAL_NEW = 8, 512, 64


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_case(case: str, model_dir: str) -> dict:
    """Inside the subprocess: imports, baseline, the job, peak. Returns what it measured."""
    import peft  # noqa: F401  (the training job imports it)
    import torch
    import transformers  # noqa: F401

    torch.set_num_threads(1)
    torch.manual_seed(0)
    from loki_pipeline.models.loading import load_model

    baseline = rss_kb("VmRSS")
    model, tokenizer = load_model(model_dir, dtype="float32", device="cpu")
    info: dict = {}
    if case == "kva":
        import numpy as np

        from loki_pipeline.kva.exact import exact_attribute_many
        from loki_pipeline.kva.quadrature import quadrature_rule

        alphas, weights = quadrature_rule("left", KVA_STEPS)
        prompts = [torch.randint(10, 40000, (KVA_TOKENS,)) for _ in range(KVA_PROMPTS)]
        exact_attribute_many(model, prompts, np.asarray(alphas), np.asarray(weights))
    elif case in TRAIN:
        from loki_pipeline.select.selection_file import Selection
        from loki_pipeline.train.methods import parse_method
        from loki_pipeline.train.settings import TrainSettings
        from loki_pipeline.train.trainer import prepare_model, train_model

        name, checkpointing = TRAIN[case]
        method = parse_method(name)
        settings = TrainSettings(batch_size=2, cutoff_len=max(SEQS), max_steps=2, dtype="float32")
        selection = None
        if method.needs_selection:
            from loki_pipeline.select.naming import nodes_per_layer_quota

            d, layers = model.config.hidden_size, model.config.num_hidden_layers
            k = nodes_per_layer_quota(method.q, d)
            positions = [sorted(torch.randperm(d)[:k].tolist()) for _ in range(layers)]
            selection = Selection(positions=positions)
        model = prepare_model(model, method, settings, selection=selection)
        if checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        examples = []
        for n in SEQS:
            ids = torch.randint(10, 40000, (n,)).tolist()
            cut = int(n * (1 - SUPERVISED))
            examples.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:]})
        train_model(model, examples, settings, pad_id=0, progress=False)
    elif case == "eval":
        from loki_pipeline.evaluate.generation import generate_greedy

        words = [tokenizer.decode([i]) for i in range(1000, 1000 + EVAL_PROMPT)]
        conversations = [
            [{"role": "user", "content": "".join(words[i % 7 :])}] for i in range(EVAL_BATCH)
        ]
        generate_greedy(
            model, tokenizer, conversations, max_new_tokens=EVAL_NEW, batch_size=EVAL_BATCH
        )
        from loki_pipeline.evaluate.generation import chat_prompt

        info["prompt_tokens"] = max(
            len(tokenizer(chat_prompt(tokenizer, c), add_special_tokens=False)["input_ids"])
            for c in conversations
        )
    peak = rss_kb("VmHWM")
    return {"case": case, "baseline_kb": baseline, "peak_kb": peak, **info}


def estimate(case: str, model_dir: str, measured: dict) -> float:
    """The plan's device peak for the case's settings (bytes)."""
    from loki_pipeline.kva.settings import KVASettings
    from loki_pipeline.plan.dims import model_dims
    from loki_pipeline.plan.memory import eval_memory, kva_memory, training_memory
    from loki_pipeline.train.methods import parse_method
    from loki_pipeline.train.settings import TrainSettings

    dims = model_dims("smollm2-135m", "", model_dir=model_dir)
    if case == "kva":
        settings = KVASettings(batch_prompts=KVA_PROMPTS, steps=KVA_STEPS, dtype="float32")
        return kva_memory(dims, settings, prompt_tokens=KVA_TOKENS, on_gpu=False).device
    if case in TRAIN:
        name, checkpointing = TRAIN[case]
        settings = TrainSettings(batch_size=2, cutoff_len=max(SEQS), dtype="float32")
        settings.gradient_checkpointing = checkpointing  # read with getattr by the plan
        return training_memory(
            dims, parse_method(name), settings, supervised_fraction=SUPERVISED, on_gpu=False
        ).device
    call = {"batch": EVAL_BATCH, "prompt": measured["prompt_tokens"], "new_tokens": EVAL_NEW}
    return eval_memory(dims, "float32", [call], on_gpu=False).device


#: glibc returns every allocation over 128 KiB to the system when it is freed, so resident
#: memory follows the live tensors (by default it raises that threshold as large blocks are
#: freed and keeps them, so RSS also holds freed transients: the second measurement)
LIVE_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def measure(case: str, model_dir: str, env: dict[str, str]) -> dict:
    """Run one case in a fresh process; ``peak``: its peak resident bytes over the imports."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", case, "--model", model_dir],
        check=True, capture_output=True, text=True, env={**os.environ, **env},
    ).stdout  # fmt: skip
    measured = json.loads(out.strip().splitlines()[-1])
    return measured | {"peak": (measured["peak_kb"] - measured["baseline_kb"]) * 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.model)))
        return 0
    if not (Path(args.model) / "config.json").is_file():
        print(f"{args.model} is not prepared: snakemake --cores 1 {args.model}", file=sys.stderr)
        return 2
    print("| case | imports GB | live peak GB | estimate GB | estimate / live | RSS peak GB "
          "(glibc default) | RSS / live |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for case in args.cases.split(","):
        live = measure(case, args.model, LIVE_ENV)
        rss = measure(case, args.model, {})
        est = estimate(case, args.model, live)
        worst = max(worst, abs(est / live["peak"] - 1))
        print(f"| {case} | {live['baseline_kb'] * 1024 / 1e9:.2f} | {live['peak'] / 1e9:.3f} | "
              f"{est / 1e9:.3f} | {est / live['peak']:.2f} | {rss['peak'] / 1e9:.3f} | "
              f"{rss['peak'] / live['peak']:.2f} |", flush=True)  # fmt: skip
    print(f"\nlargest deviation: {worst:.0%} (target: within 25%)")
    return 0 if worst <= 0.25 else 1


if __name__ == "__main__":
    sys.exit(main())
