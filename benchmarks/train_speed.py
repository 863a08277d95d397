"""Step time and peak memory of LoKI q=10, LoKI* (q=10, r=16), LoRA r=16 and full fine-tuning.

Same model, same batch (B x T tokens, loss on the second half of each sequence, as in chat SFT),
same loop (``loki_pipeline.train.trainer``: AdamW, supervised-positions-only LM head). Each
method runs in its own subprocess so its peak memory (max RSS on CPU, max allocated on CUDA) is
its own. The LoKI selection is random at q=10 (layer-balanced, k_l = floor(q/100 * d_model)):
speed does not depend on which rows are chosen.

    python benchmarks/train_speed.py --model resources/models/smollm2-135m --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

METHODS = ["loki_q10", "loki_lora_q10_r16", "lora_r16", "full"]


def one(args: argparse.Namespace) -> dict:
    import resource

    import torch

    from loki_pipeline.implant.selection import Selection
    from loki_pipeline.models.architecture import get_adapter
    from loki_pipeline.models.loading import load_model
    from loki_pipeline.train.methods import parse_method
    from loki_pipeline.train.settings import TrainSettings
    from loki_pipeline.train.trainer import prepare_model, sft_loss

    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model, device=args.device)
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
    times = []
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss, _ = sft_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times = times[args.warmup :]
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if args.device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "method": args.method,
        "trainable_params": sum(p.numel() for p in params),
        "step_s_median": round(statistics.median(times), 3),
        "step_s_min": round(min(times), 3),
        "peak_mb": round(peak),
    }


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
    parser.add_argument("--method", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.method:
        print(json.dumps(one(args)))
        return
    rows = []
    for method in args.methods:
        cmd = [sys.executable, __file__, "--method", method] + [
            f"--{k}={getattr(args, k)}"
            for k in ("model", "batch", "seq", "steps", "warmup", "threads", "device")
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
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
