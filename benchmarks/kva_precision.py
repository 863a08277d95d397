"""How much does computing KVA in bfloat16 move the selection? Real weights, same prompts.

    python benchmarks/kva_precision.py --work /tmp/kva_precision [--max-per-subject 1]

Attributes the same MMLU prompts with the real default model (SmolLM2-135M-Instruct) loaded in
float32 and in bfloat16 (``exact``, 7 steps, left Riemann, ``--batch-prompts`` per pass) and
reports, taking float32 as the truth:

- the relative error ``||a16 - a32|| / ||a32||`` pooled and per prompt, and the mean per-prompt
  Spearman rank correlation of the ``L x d`` attributions (selection only uses ranks);
- how often both predict the same token ŷ (KVA differentiates P(ŷ), so a changed ŷ changes
  that prompt's whole attribution);
- the share of selected nodes in common between the two selections, for the LoKI strategy and
  its high-contribution mirror at several q;
- a yardstick in the same units: the overlap between float32 selections from two disjoint
  halves of the prompts (even vs odd items), i.e. how much the selection moves anyway when the
  prompt sample changes. Precision matters when its overlap falls well below that one.

Each dtype's attributions are saved to ``--work`` as soon as they are computed and reused by a
rerun (bfloat16 is slow on CPUs without native bf16: ~30 s per prompt on this project's
development machine, against ~1.5 s in float32).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("layer_balanced_low", "layer_balanced_high")


def attribute_all(args: argparse.Namespace, dtype: str, work: Path) -> dict:
    """Attributions ``[prompts, L, d]`` of every prompt in ``dtype`` (cached in ``work``)."""
    path = work / f"{dtype}.npz"
    if path.exists():
        print(f"{dtype}: reusing {path}", file=sys.stderr)
        return dict(np.load(path))
    import torch
    from tqdm.auto import tqdm

    from loki_pipeline.data.mmlu import encode_prompt, load_mmlu
    from loki_pipeline.kva import attribute_prompts
    from loki_pipeline.models.loading import load_model

    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model_dir, dtype=dtype, device=args.device)
    items = load_mmlu(args.dataset, max_per_subject=args.max_per_subject)
    prompts = [encode_prompt(tok, item) for item in items[: args.limit]]
    attrs, tokens = [], []
    start = time.perf_counter()
    for i in tqdm(range(0, len(prompts), args.batch_prompts), desc=dtype):
        for r in attribute_prompts(model, prompts[i : i + args.batch_prompts], steps=args.steps):
            attrs.append(r.attributions.numpy())
            tokens.append(r.predicted_token)
    out = {
        "attributions": np.stack(attrs),
        "predicted_token": np.array(tokens),
        "seconds_per_prompt": np.array((time.perf_counter() - start) / len(prompts)),
    }
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


def ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, axis=-1), axis=-1).astype(np.float64)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = ranks(a.ravel()), ranks(b.ravel())
    return float(np.corrcoef(ra, rb)[0, 1])


def overlap(a: np.ndarray, b: np.ndarray, q: float, strategy: str) -> float:
    from loki_pipeline.select import select_nodes
    from loki_pipeline.select.stability import overlap_stats

    return overlap_stats(select_nodes(a, q, strategy), select_nodes(b, q, strategy))[1]


def compare(a32: dict, a16: dict, qs: list[float]) -> dict:
    x32, x16 = a32["attributions"].astype(np.float64), a16["attributions"].astype(np.float64)
    per_prompt = np.linalg.norm((x16 - x32).reshape(len(x32), -1), axis=1) / np.linalg.norm(
        x32.reshape(len(x32), -1), axis=1
    )
    result = {
        "prompts": len(x32),
        "seconds_per_prompt": {
            "float32": float(a32["seconds_per_prompt"]),
            "bfloat16": float(a16["seconds_per_prompt"]),
        },
        "rel_err_pooled": float(np.linalg.norm(x16 - x32) / np.linalg.norm(x32)),
        "rel_err_per_prompt_median": float(np.median(per_prompt)),
        "rel_err_per_prompt_max": float(per_prompt.max()),
        "spearman_per_prompt_mean": float(
            np.mean([spearman(u, v) for u, v in zip(x16, x32, strict=True)])
        ),
        "same_predicted_token": float(np.mean(a16["predicted_token"] == a32["predicted_token"])),
        "overlap": [],
    }
    for strategy in STRATEGIES:
        for q in qs:
            result["overlap"].append(
                {
                    "strategy": strategy,
                    "q": q,
                    "bf16_vs_fp32": overlap(a16["attributions"], a32["attributions"], q, strategy),
                    "fp32_half_vs_half": overlap(
                        a32["attributions"][0::2], a32["attributions"][1::2], q, strategy
                    ),
                }
            )
    return result


def markdown(r: dict) -> str:
    lines = [
        f"{r['prompts']} prompts; float32 {r['seconds_per_prompt']['float32']:.2f} s/prompt, "
        f"bfloat16 {r['seconds_per_prompt']['bfloat16']:.2f} s/prompt",
        "",
        "| rel. error pooled | per prompt median | per prompt max | Spearman (mean) | same ŷ |",
        "|---|---|---|---|---|",
        f"| {r['rel_err_pooled']:.3f} | {r['rel_err_per_prompt_median']:.3f} "
        f"| {r['rel_err_per_prompt_max']:.3f} | {r['spearman_per_prompt_mean']:.4f} "
        f"| {r['same_predicted_token']:.1%} |",
        "",
        "| strategy | q | overlap bf16 vs fp32 | overlap fp32 half vs half (yardstick) |",
        "|---|---|---|---|",
    ]
    for o in r["overlap"]:
        lines.append(
            f"| {o['strategy']} | {o['q']:g} | {o['bf16_vs_fp32']:.1%} "
            f"| {o['fp32_half_vs_half']:.1%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(ROOT / "resources/models/smollm2-135m"))
    parser.add_argument("--dataset", default=str(ROOT / "data/mmlu/mmlu_mini.jsonl"))
    parser.add_argument("--max-per-subject", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--batch-prompts", type=int, default=4)
    parser.add_argument("--q", default="5,10,20", help="comma-separated selection quotas")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", required=True, help="folder for the cached attributions")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    a32 = attribute_all(args, "float32", work)
    a16 = attribute_all(args, "bfloat16", work)
    result = compare(a32, a16, [float(q) for q in args.q.split(",")])
    (work / "result.json").write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
