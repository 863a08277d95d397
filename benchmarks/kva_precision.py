"""How much does computing KVA in bfloat16 move the selection? Real weights, same prompts.

    python benchmarks/kva_precision.py --work /tmp/kva_precision [--max-per-subject 1]

Attributes the same MMLU prompts with the real default model (SmolLM2-135M-Instruct) three
ways (``exact``, 7 steps, left Riemann, ``--batch-prompts`` per pass):

- ``float32``: the checkpoint as it is (float32 weights);
- ``float32_bf16_weights``: the weights rounded to bfloat16, computed in float32. The paper's
  checkpoints (Llama-3.1, Qwen2.5) are stored in bf16, so for them this *is* the exact answer;
- ``bfloat16``: weights and computation in bfloat16, as the paper config runs on a GPU.

``bfloat16`` against ``float32_bf16_weights`` isolates the rounding of the computation (what a
bf16 checkpoint sees); against ``float32`` it adds the rounding of the weights. Each comparison
reports the relative error ``||a - b|| / ||b||`` pooled and per prompt, the mean per-prompt
Spearman rank correlation of the ``L x d`` attributions (selection only uses ranks), how often
both predict the same token ŷ (KVA differentiates P(ŷ), so a changed ŷ changes that prompt's
whole attribution), and the share of selected nodes in common, for the LoKI strategy and its
high-contribution mirror at several q. The yardstick, in the same units: the overlap between
float32 selections from two disjoint halves of the prompts (even vs odd items), i.e. how much
the selection moves anyway when the prompt sample changes.

Each variant's attributions are saved to ``--work`` as soon as they are computed and reused by
a rerun (bfloat16 is slow on CPUs without native bf16: ~30 s per prompt on this project's
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
#: variant -> (dtype the model is loaded in, round the weights to bfloat16 first)
VARIANTS = {
    "float32": ("float32", False),
    "float32_bf16_weights": ("float32", True),
    "bfloat16": ("bfloat16", False),
}
#: (label, attributions compared, the truth they are compared with)
COMPARISONS = (
    ("bf16 compute (bf16 weights)", "bfloat16", "float32_bf16_weights"),
    ("bf16 weights + compute", "bfloat16", "float32"),
    ("bf16 weights only", "float32_bf16_weights", "float32"),
)


def attribute_all(args: argparse.Namespace, variant: str, work: Path) -> dict:
    """Attributions ``[prompts, L, d]`` of every prompt in one variant (cached in ``work``)."""
    path = work / f"{variant}.npz"
    if path.exists():
        print(f"{variant}: reusing {path}", file=sys.stderr)
        return dict(np.load(path))
    dtype, round_weights = VARIANTS[variant]
    import torch
    from tqdm.auto import tqdm

    from loki_pipeline.data.mmlu import encode_prompt, load_mmlu
    from loki_pipeline.kva import attribute_prompts
    from loki_pipeline.models.loading import load_model

    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model_dir, dtype=dtype, device=args.device)
    if round_weights:
        with torch.no_grad():
            for param in model.parameters():
                param.copy_(param.bfloat16().float())
    items = load_mmlu(args.dataset, max_per_subject=args.max_per_subject)
    prompts = [encode_prompt(tok, item) for item in items[: args.limit]]
    attrs, tokens = [], []
    start = time.perf_counter()
    for i in tqdm(range(0, len(prompts), args.batch_prompts), desc=variant):
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


def compare(other: dict, truth: dict, qs: list[float]) -> dict:
    """How far ``other``'s attributions and selections are from ``truth``'s."""
    x, t = other["attributions"].astype(np.float64), truth["attributions"].astype(np.float64)
    n = len(t)
    per_prompt = np.linalg.norm((x - t).reshape(n, -1), axis=1) / np.linalg.norm(
        t.reshape(n, -1), axis=1
    )
    return {
        "rel_err_pooled": float(np.linalg.norm(x - t) / np.linalg.norm(t)),
        "rel_err_per_prompt_median": float(np.median(per_prompt)),
        "rel_err_per_prompt_max": float(per_prompt.max()),
        "spearman_per_prompt_mean": float(
            np.mean([spearman(u, v) for u, v in zip(x, t, strict=True)])
        ),
        "same_predicted_token": float(
            np.mean(other["predicted_token"] == truth["predicted_token"])
        ),
        "overlap": {
            f"{strategy}_q{q:g}": overlap(other["attributions"], truth["attributions"], q, strategy)
            for strategy in STRATEGIES
            for q in qs
        },
    }


def yardstick(a32: dict, qs: list[float]) -> dict:
    """Overlap of float32 selections from the even and the odd prompts."""
    a = a32["attributions"]
    return {
        f"{strategy}_q{q:g}": overlap(a[0::2], a[1::2], q, strategy)
        for strategy in STRATEGIES
        for q in qs
    }


def by_prompt_count(other: dict, truth: dict, q: float, seeds: int = 5) -> dict:
    """Overlap of the LoKI selections as the number of prompts grows (mean over random
    subsets), and over the prompts whose predicted token agrees: rounding noise in single
    prompts averages out in the vote, a flipped ŷ does not."""
    x, t = other["attributions"], truth["attributions"]
    n = len(t)
    rng = np.random.default_rng(0)
    counts = {}
    for size in sorted({s for s in (8, 16, 32) if s < n} | {n}):
        subsets = [rng.permutation(n)[:size] for _ in range(seeds)] if size < n else [slice(None)]
        counts[str(size)] = float(
            np.mean([overlap(x[i], t[i], q, "layer_balanced_low") for i in subsets])
        )
    same = np.flatnonzero(other["predicted_token"] == truth["predicted_token"])
    return {
        "q": q,
        "by_prompts": counts,
        "same_token_prompts": int(len(same)),
        "same_token_overlap": overlap(x[same], t[same], q, "layer_balanced_low"),
    }


def markdown(r: dict) -> str:
    speed = ", ".join(f"{k} {v:.2f} s/prompt" for k, v in r["seconds_per_prompt"].items())
    keys = list(r["yardstick"])
    lines = [
        f"{r['prompts']} prompts; {speed}",
        "",
        "| comparison | rel. error pooled | per prompt median | per prompt max "
        "| Spearman (mean) | same ŷ |",
        "|---|---|---|---|---|---|",
    ]
    for label, c in r["comparisons"].items():
        lines.append(
            f"| {label} | {c['rel_err_pooled']:.3f} | {c['rel_err_per_prompt_median']:.3f} "
            f"| {c['rel_err_per_prompt_max']:.3f} | {c['spearman_per_prompt_mean']:.4f} "
            f"| {c['same_predicted_token']:.1%} |"
        )
    lines += [
        "",
        "Share of selected nodes in common",
        "",
        "| selection | " + " | ".join(r["comparisons"]) + " | fp32 half vs half (yardstick) |",
        "|---|" + "---|" * (len(r["comparisons"]) + 1),
    ]
    for key in keys:
        cells = [f"{c['overlap'][key]:.1%}" for c in r["comparisons"].values()]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {r['yardstick'][key]:.1%} |")
    g = r["growth"]
    lines += [
        "",
        f"bf16 compute vs float32 (bf16 weights), LoKI q={g['q']:g}: overlap by number of prompts "
        "(mean of 5 random subsets), and over the prompts whose ŷ agrees",
        "",
        "| " + " | ".join(f"{k} prompts" for k in g["by_prompts"]) + " | same-ŷ prompts only |",
        "|" + "---|" * (len(g["by_prompts"]) + 1),
        "| "
        + " | ".join(f"{v:.1%}" for v in g["by_prompts"].values())
        + f" | {g['same_token_overlap']:.1%} ({g['same_token_prompts']} prompts) |",
    ]
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
    attrs = {variant: attribute_all(args, variant, work) for variant in VARIANTS}
    qs = [float(q) for q in args.q.split(",")]
    result = {
        "prompts": len(attrs["float32"]["attributions"]),
        "seconds_per_prompt": {v: float(a["seconds_per_prompt"]) for v, a in attrs.items()},
        "comparisons": {
            label: compare(attrs[other], attrs[truth], qs) for label, other, truth in COMPARISONS
        },
        "yardstick": yardstick(attrs["float32"], qs),
        "growth": by_prompt_count(attrs["bfloat16"], attrs["float32_bf16_weights"], 10.0),
    }
    (work / "result.json").write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
