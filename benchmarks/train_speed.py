"""Step time and peak memory of LoKI q=10, LoKI* (q=10, r=16), LoRA r=16 and full fine-tuning.

Same model, same batch (B x T tokens, loss on the second half of each sequence, as in chat SFT),
same loop (``loki_pipeline.train.trainer``: AdamW, supervised-positions-only LM head). Each
method runs in its own subprocess so its peak memory (max RSS on CPU, max allocated on CUDA) is
its own. The LoKI selection is random at q=10 (layer-balanced, k_l = floor(q/100 * d_model)):
speed does not depend on which rows are chosen.

    python benchmarks/train_speed.py --model resources/models/smollm2-135m --threads 2

``--gradient-checkpointing`` runs every method with and without it (``training.
gradient_checkpointing``, :func:`loki_pipeline.train.trainer.enable_gradient_checkpointing`),
``--repeats`` fresh processes each, alternating, so both see the same machine load, and prints
the ratios with/without. ``--model random:smollm2-135m`` builds SmolLM2-135M's architecture
with random weights (``gpu_real_size.SHAPES``; no download; time and memory do not depend on
the weights' values).

Peak memory on CPU is the process's max RSS (``getrusage``) in a fresh process per
configuration: torch's CPU allocator keeps no statistics and ``tracemalloc`` does not see its
allocations. glibc's heap keeps freed memory (and fragments), so the plain max RSS overstates
what the tensors needed; the comparison therefore also runs one process per configuration with
glibc's mmap threshold pinned at 64 KiB (``MALLOC_MMAP_THRESHOLD_``): every tensor above that
is then its own mapping, returned to the system when freed, and the high-water mark follows the
live tensors, as ``torch.cuda.max_memory_allocated`` does on a GPU (those processes are slower,
so time is measured in the plain ones). ``step_peak_mb`` is the peak above the RSS just before
the first step (weights, libraries): what training adds (activations, gradients, optimizer
state, logits).

    python benchmarks/train_speed.py --model random:smollm2-135m --gradient-checkpointing \
        --methods loki_q10 lora_r16 --batch 1 --seq 1024 --steps 3 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

METHODS = ["loki_q10", "loki_lora_q10_r16", "lora_r16", "full"]
MMAP_THRESHOLD = 65536


def load(model: str, device: str):
    """The checkpoint at ``model``, or ``random:<shape>`` built with random weights."""
    if model.startswith("random:"):  # a shape of gpu_real_size.SHAPES, float32
        import torch
        from gpu_real_size import build_model

        return build_model(
            model.removeprefix("random:"), False, torch.float32, torch.device(device)
        )
    from loki_pipeline.models.loading import load_model

    return load_model(model, device=device)[0]


def current_rss_mb() -> float:
    """Resident memory now (Linux ``/proc/self/statm``), in MiB."""
    import os

    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one(args: argparse.Namespace) -> dict:
    import resource

    import torch

    from loki_pipeline.models.architecture import get_adapter
    from loki_pipeline.select.selection_file import Selection
    from loki_pipeline.train.methods import parse_method
    from loki_pipeline.train.settings import TrainSettings
    from loki_pipeline.train.trainer import (
        enable_gradient_checkpointing,
        prepare_model,
        sft_loss,
    )

    torch.set_num_threads(args.threads)
    model = load(args.model, args.device)
    arch = get_adapter(model)
    method = parse_method(args.method)
    g = torch.Generator().manual_seed(0)
    k = int(10 / 100 * arch.d_model)
    sel = Selection(
        positions=[
            sorted(torch.randperm(arch.d_model, generator=g)[:k].tolist())
            for _ in range(arch.num_layers)
        ]
    )
    model = prepare_model(model, method, TrainSettings(), selection=sel)
    if args.checkpointing == "on":
        enable_gradient_checkpointing(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=g)
    labels = ids.clone()
    labels[:, : args.seq // 2] = -100
    batch = {
        "input_ids": ids.to(args.device),
        "labels": labels.to(args.device),
        "attention_mask": torch.ones_like(ids).to(args.device),
    }
    model.train()
    times, cpu_times = [], []
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = current_rss_mb()
    for _ in range(args.warmup + args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss, _ = sft_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    times, cpu_times = times[args.warmup :], cpu_times[args.warmup :]
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if args.device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "method": args.method,
        "checkpointing": args.checkpointing,
        "trainable_params": sum(p.numel() for p in params),
        "step_s_median": round(statistics.median(times), 3),
        "step_s_min": round(min(times), 3),
        "times": [round(t, 3) for t in times],
        "cpu_times": [round(t, 3) for t in cpu_times],
        "peak_mb": round(peak),
        "step_peak_mb": round(peak - before),
    }


def child(args: argparse.Namespace, method: str, checkpointing: str = "off", **kw) -> dict:
    """One configuration in a fresh process (its own peak memory); ``kw`` overrides ``args``,
    ``pinned=True`` pins glibc's mmap threshold (see the module docstring)."""
    import os

    pinned = kw.pop("pinned", False)
    values = {**vars(args), **kw}
    cmd = [sys.executable, __file__, "--method", method, "--checkpointing", checkpointing] + [
        f"--{k}={values[k]}"
        for k in ("model", "batch", "seq", "steps", "warmup", "threads", "device")
    ]
    env = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)} if pinned else {})}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare_checkpointing(args: argparse.Namespace) -> None:
    """Each method without and with gradient checkpointing: ``repeats`` timed processes each
    (glibc's allocator as it is), alternating so both see the same machine load, then one
    process each with the mmap threshold pinned for the peak memory (two steps: the second
    runs with AdamW's state allocated)."""
    modes = ("off", "on")
    rows, ratios = [], []
    for method in args.methods:
        timed: dict[str, list[dict]] = {mode: [] for mode in modes}
        for _ in range(args.repeats):
            for mode in modes:
                timed[mode].append(child(args, method, mode))
                print(json.dumps(timed[mode][-1]), file=sys.stderr, flush=True)
        s = {}
        for mode in modes:
            pinned = child(args, method, mode, steps=1, warmup=1, pinned=True)
            print(json.dumps(pinned), file=sys.stderr, flush=True)
            runs = timed[mode]
            s[mode] = {
                "wall": statistics.median(t for r in runs for t in r["times"]),
                "cpu": statistics.median(t for r in runs for t in r["cpu_times"]),
                "peak": statistics.median(r["peak_mb"] for r in runs),
                "pinned_peak": pinned["peak_mb"],
                "pinned_step": pinned["step_peak_mb"],
            }
            rows.append((method, mode, s[mode]))
        ratios.append((method, {k: s["on"][k] / s["off"][k] for k in s["on"]}))
    print(
        f"\n{args.device}, {args.threads} thread(s), batch {args.batch} x {args.seq} tokens, "
        f"fp32; time: median of {args.repeats} processes x {args.steps} steps"
    )
    print(
        "| method | checkpointing | step s | CPU s/step | peak RSS MB | peak RSS MB, pinned "
        "| step peak MB, pinned |"
    )
    print("|---|---|---|---|---|---|---|")
    for method, mode, r in rows:
        print(
            f"| {method} | {mode} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['peak']:.0f} | "
            f"{r['pinned_peak']} | {r['pinned_step']} |"
        )
    print("\nwith / without checkpointing")
    print("| method | step time | CPU time | peak RSS | peak RSS, pinned | step peak, pinned |")
    print("|---|---|---|---|---|---|")
    for method, r in ratios:
        print(
            f"| {method} | {r['wall']:.2f}x | {r['cpu']:.2f}x | {r['peak']:.2f} | "
            f"{r['pinned_peak']:.2f} | {r['pinned_step']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resources/models/smollm2-135m")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="compare every method with and without gradient checkpointing",
    )
    parser.add_argument("--repeats", type=int, default=3, help="processes per configuration")
    parser.add_argument("--method", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--checkpointing", default="off", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(one(args)))
        return
    if args.gradient_checkpointing:
        compare_checkpointing(args)
        return
    rows = []
    for method in args.methods:
        rows.append(child(args, method))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.device}, {args.threads} threads, batch {args.batch} x {args.seq} tokens, fp32")
    print("| method | trainable | step (s, median) | peak (MB) |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['trainable_params']:,} | {r['step_s_median']} | {r['peak_mb']} |"
        )


if __name__ == "__main__":
    main()
