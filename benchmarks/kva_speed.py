"""Time the KVA backends on the real default model: exact vs reference (steps batched) vs captum.

    python benchmarks/kva_speed.py [--prompts 4] [--reference-prompts 1] [--captum-prompts 1] \
        [--batch-prompts 4] [--threads 1]

Each backend runs in its own subprocess (so its peak RSS is its own) on the first prompts of
the default MMLU-style set, with the same settings as the pipeline (7 steps, left Riemann,
float32). Prints seconds per prompt, the speed-up of ``exact`` over each backend, peak memory,
and the relative error ``||a - b|| / ||b||`` of every backend against ``reference`` on the
prompts both ran. ``exact-batch`` is ``exact`` with ``--batch-prompts`` prompts per
forward/backward (timed per batch, reported per prompt). ``reference`` and ``captum`` are slow (minutes per prompt on one CPU
thread), so by default they see one prompt each. CPU seconds (process time) are printed
beside wall seconds: on a shared machine they are the fairer basis for the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """Run one backend on ``args.n`` prompts; write times and attributions to ``args.out``."""
    import numpy as np
    import torch

    from loki_pipeline.data.mmlu import encode_prompt, load_mmlu
    from loki_pipeline.kva import attribute_prompts
    from loki_pipeline.models.loading import load_model

    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model_dir, dtype="float32", device=args.device)
    items = load_mmlu(args.dataset)[: args.n]
    prompts = [encode_prompt(tok, item) for item in items]
    method, batch = (
        ("exact", args.batch_prompts) if args.method == "exact-batch" else (args.method, 1)
    )
    # Warm-up on a short prompt (allocator, lazy imports) so the first timing is fair.
    attribute_prompts(model, [prompts[0][-8:]] * batch, steps=2, method=method)
    times, cpu_times, attrs, gaps = [], [], [], []
    for start in range(0, len(prompts), batch):
        group = prompts[start : start + batch]
        t0, cpu0 = time.perf_counter(), time.process_time()
        results = attribute_prompts(model, group, steps=args.steps, method=method)
        times += [(time.perf_counter() - t0) / len(group)] * len(group)
        cpu_times += [(time.process_time() - cpu0) / len(group)] * len(group)
        attrs += [r.attributions.numpy() for r in results]
        gaps += [r.completeness_gap for r in results]
        print(
            f"  {args.method}: {[len(ids) for ids in group]} tokens, "
            f"{times[-1]:.2f} s/prompt ({cpu_times[-1]:.2f} s CPU)",
            file=sys.stderr,
        )
    np.save(args.out + ".npy", np.stack(attrs))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out).write_text(
        json.dumps(
            {
                "times": times,
                "cpu_times": cpu_times,
                "tokens": [len(p) for p in prompts],
                "peak_rss_mb": peak_mb,
                "gaps": gaps,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(ROOT / "resources/models/smollm2-135m"))
    parser.add_argument("--dataset", default=str(ROOT / "data/mmlu/mmlu_mini.jsonl"))
    parser.add_argument("--prompts", type=int, default=4, help="prompts for exact")
    parser.add_argument(
        "--batch-prompts", type=int, default=4, help="prompts per pass of exact-batch"
    )
    parser.add_argument("--reference-prompts", type=int, default=1, help="prompts for reference")
    parser.add_argument("--captum-prompts", type=int, default=1, help="prompts for captum")
    parser.add_argument("--methods", default="exact,exact-batch,reference,captum")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--method", help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        worker(args)
        return

    methods = args.methods.split(",")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            n = {"reference": args.reference_prompts, "captum": args.captum_prompts}.get(
                method, args.prompts
            )
            out = os.path.join(tmp, method + ".json")
            cmd = [sys.executable, __file__, "--method", method, "--n", str(n), "--out", out,
                   "--model-dir", args.model_dir, "--dataset", args.dataset,
                   "--steps", str(args.steps), "--threads", str(args.threads),
                   "--device", args.device, "--batch-prompts", str(args.batch_prompts)]  # fmt: skip
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            subprocess.run(cmd, check=True, env=env)
            import numpy as np

            results[method] = json.loads(Path(out).read_text())
            results[method]["attr"] = np.load(out + ".npy")

    import numpy as np

    tokens = results[methods[0]]["tokens"]
    print(f"\nKVA speed: {Path(args.model_dir).name}, {args.steps} steps (left Riemann), float32, "
          f"{args.threads} thread(s), {args.device}; prompts of {tokens} tokens")  # fmt: skip
    print(f"{'method':<12} {'prompts':>7} {'s/prompt':>9} {'CPU s/prompt':>12} {'exact x':>8} "
          f"{'CPU exact x':>11} {'peak RSS MB':>11} {'rel err vs ref':>14} {'mean gap':>9}")  # fmt: skip
    has_exact = "exact" in results
    exact_s = np.mean(results["exact"]["times"]) if has_exact else None
    exact_cpu = np.mean(results["exact"]["cpu_times"]) if has_exact else None
    for method, r in results.items():
        sec, cpu = float(np.mean(r["times"])), float(np.mean(r["cpu_times"]))
        speedup = f"{sec / exact_s:.1f}" if exact_s else "-"
        cpu_speedup = f"{cpu / exact_cpu:.1f}" if exact_cpu else "-"
        err = "-"
        if "reference" in results:
            ref = results["reference"]["attr"]
            k = min(len(ref), len(r["attr"]))
            a, b = r["attr"][:k], ref[:k]
            err = f"{np.linalg.norm(a - b) / np.linalg.norm(b):.2e}"
        print(f"{method:<12} {len(r['times']):>7} {sec:>9.2f} {cpu:>12.2f} {speedup:>8} "
              f"{cpu_speedup:>11} {r['peak_rss_mb']:>11.0f} {err:>14} "
              f"{np.mean(r['gaps']):>9.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
