"""Peak memory and step time of the chunked loss against the plain loss (issue 26, item 1).

The loss step alone (forward and backward of the LM head and the cross-entropy over the
supervised tokens: what ``training.loss_chunk_tokens`` changes; the decoder below it is the
same either way), at SmolLM2-135M's head shape (d_model 576, vocabulary 49152, random weights)
over 1 x 4096 supervised tokens, float32 on the CPU:

    python benchmarks/loss_chunk.py --threads 1 --repeats 3 --steps 4

``--head-trainable`` also trains the head (full fine-tuning; SmolLM2 ties it to the
embeddings); by default it is frozen, as under LoKI, LoKI* and the PEFT methods. Each
configuration (``--chunks``, 0 = the plain loss: every supervised token's float32 logits and
their gradient at once) runs in a fresh process, ``--repeats`` times, alternating, so every
configuration sees the same machine load. Peak memory: the process's max RSS above the RSS
before the first step, with glibc's mmap threshold pinned at 64 KiB so freed tensors return to
the system and the high-water mark follows the live tensors (as in train_speed.py). Times:
median per step over every timed step of every repeat, with the min and max. Ratios are
chunked / plain of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MMAP_THRESHOLD = 65536


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> dict:
    """One configuration in this process: peak and per-step times."""
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from loki_pipeline.train.loss import chunked_cross_entropy

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the head's initialisation: the same weights in every process
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(args.d_model, args.vocab, bias=False)
    head.weight.requires_grad_(args.head_trainable)
    hidden = torch.randn(args.tokens, args.d_model, generator=g, requires_grad=True)
    targets = torch.randint(0, args.vocab, (args.tokens,), generator=g)
    before = rss_mb()
    times, losses = [], []
    for _ in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = chunked_cross_entropy(head, hidden, targets, args.chunk)
        loss.backward()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
        hidden.grad = None
        head.weight.grad = None
    return {
        "chunk": args.chunk,
        "times": times[args.warmup :],
        "loss": losses[-1],
        "step_peak_mb": peak_rss_mb() - before,
    }


def run(args: argparse.Namespace, chunk: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--chunk", str(chunk)]
    for key in ("threads", "tokens", "d_model", "vocab", "steps", "warmup"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if args.head_trainable:
        cmd.append("--head-trainable")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", default="0,512,1024,2048,4096")
    parser.add_argument("--tokens", type=int, default=4096, help="supervised tokens (1 x 4096)")
    parser.add_argument("--d-model", type=int, default=576, help="SmolLM2-135M")
    parser.add_argument("--vocab", type=int, default=49152, help="SmolLM2-135M")
    parser.add_argument("--head-trainable", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return {}
    chunks = [int(c) for c in args.chunks.split(",")]
    runs: dict[int, list[dict]] = {c: [] for c in chunks}
    for _ in range(args.repeats):
        for chunk in chunks:
            runs[chunk].append(run(args, chunk))
    plain = runs.get(0)
    rows = []
    for chunk, results in runs.items():
        times = [t for r in results for t in r["times"]]
        peaks = [r["step_peak_mb"] for r in results]
        row = {
            "chunk": chunk,
            "n_steps": len(times),
            "step_s_median": statistics.median(times),
            "step_s_min": min(times),
            "step_s_max": max(times),
            "peak_mb_median": statistics.median(peaks),
            "peak_mb_min": min(peaks),
            "peak_mb_max": max(peaks),
            "loss": results[-1]["loss"],
        }
        if plain:
            base_t = statistics.median([t for r in plain for t in r["times"]])
            base_m = statistics.median([r["step_peak_mb"] for r in plain])
            row["time_ratio"] = row["step_s_median"] / base_t
            row["peak_ratio"] = row["peak_mb_median"] / base_m
        rows.append(row)
    print(f"{args.tokens} supervised tokens, d_model {args.d_model}, vocabulary {args.vocab}, "
          f"head {'trained' if args.head_trainable else 'frozen'}, {args.threads} thread(s), "
          f"{args.repeats} processes x {args.steps} steps each")  # fmt: skip
    print("| chunk | step s median [min, max] | peak MB median [min, max] | time / plain "
          "| peak / plain |")  # fmt: skip
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['chunk'] or 'plain'} | {r['step_s_median']:.3f} [{r['step_s_min']:.3f}, "
              f"{r['step_s_max']:.3f}] | {r['peak_mb_median']:.0f} [{r['peak_mb_min']:.0f}, "
              f"{r['peak_mb_max']:.0f}] | {r.get('time_ratio', float('nan')):.2f} | "
              f"{r.get('peak_ratio', float('nan')):.2f} |")  # fmt: skip
    result = {"args": {k: v for k, v in vars(args).items() if k not in ("child", "chunk")},
              "rows": rows}  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
