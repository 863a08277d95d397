"""Speed of BFCL multi-turn evaluation with the prefix cache against generating every step afresh.

One multi-turn item (its whole ~5.5k-token API docs) through ``toolace.evaluate`` twice in the
same run: with ``PrefixCachedChat`` (the shipped path) and with every step's prompt computed
from scratch by ``generate_greedy`` (the straightforward method). Answers must be identical.

    python benchmarks/multi_turn_cache.py --model resources/models/smollm2-135m
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from loki_pipeline.evaluate import generation, toolace
from loki_pipeline.evaluate.bfcl_multi_turn import load_bfcl
from loki_pipeline.models.loading import load_model

WHEEL = Path("resources/cache/wheels/bfcl_eval-2026.3.23-py3-none-any.whl")


class FreshChat:
    """Every step's prompt computed from scratch (no cache kept between steps)."""

    def __init__(self, model, tokenizer, *, max_new_tokens):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.computed_tokens = self.reused_tokens = 0

    def __call__(self, messages):
        return generation.generate_greedy(
            self.model, self.tokenizer, [messages], max_new_tokens=self.max_new_tokens
        )[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resources/models/smollm2-135m")
    parser.add_argument("--item", default="multi_turn_base_1")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-steps-per-turn", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, dtype="float32", device="cpu")
    category = args.item.rsplit("_", 1)[0]
    items = load_bfcl(WHEEL, [category], max_per_category=1, multi_turn_ids=[args.item])
    settings = toolace.BfclSettings(
        max_new_tokens=args.max_new_tokens, max_steps_per_turn=args.max_steps_per_turn
    )
    shipped = generation.PrefixCachedChat
    timings, outputs = {}, {}
    for name, chat in (("prefix cache", shipped), ("afresh", FreshChat)):
        generation.PrefixCachedChat = chat
        start = time.perf_counter()
        outputs[name] = toolace.evaluate(model, tokenizer, items, settings)["items"]
        timings[name] = time.perf_counter() - start
    generation.PrefixCachedChat = shipped
    steps = sum(len(turn) for turn in outputs["afresh"][0]["output"])
    same = outputs["prefix cache"] == outputs["afresh"]
    print(f"{args.item}: {len(items[0]['turns'])} turns, {steps} answers, "
          f"{args.threads} thread(s), answers identical: {same}")  # fmt: skip
    for name, seconds in timings.items():
        print(f"  {name:>12}: {seconds:7.1f} s  ({seconds / steps:5.1f} s per answer)")
    print(f"  speed-up: {timings['afresh'] / timings['prefix cache']:.2f}x")


if __name__ == "__main__":
    main()
