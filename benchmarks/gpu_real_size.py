"""KVA and training at real size on one GPU (issue 7, item 4): random weights, real shapes.

    PYTHONPATH=src python3 benchmarks/gpu_real_size.py --out gpu_real_size.json
    python benchmarks/gpu_real_size.py --tiny --device cpu --out /tmp/tiny.json   # a check

Builds Llama-3.1-8B- and Qwen2.5-0.5B-shaped models with random weights directly on the device
in bf16 (nothing is downloaded; 16 GB of weights never sit on CPU) and measures, in one run:

- **kva**: seconds per prompt of ``loki_pipeline.kva`` ``exact`` and ``reference`` (7 steps,
  left Riemann) on random-token prompts, after one warm-up each, with the GPU synchronised, and
  how far ``exact`` is from ``reference`` (``||a - b|| / ||b||``) on the prompts both ran;
  then ``exact`` with ``--batch-prompts`` prompts per pass (weights read once for all of them:
  the route to <= 0.03 s per prompt at 8B) on the same prompts;
- **precision**: the same prompts attributed with the model cast to float32 (the same weights):
  relative error of bf16 ``exact`` (and bf16 ``reference``) against it, and the share of nodes
  that the layer-balanced selection (``select_nodes``, q=10) keeps in common, pooled over all
  prompts and per prompt. Float32 at 8B needs 32 GB: it runs only for models in ``--float32``;
- **train**: step time (median after warm-up) and peak GPU memory of LoKI q=10 (random
  layer-balanced selection) against LoRA r=16 on all linear layers, one batch of
  ``--train-batch x --train-seq`` random tokens, loss on the second half of each sequence.
  The model, the method set-up (``train.trainer.prepare_model``), the loss (``sft_loss``) and
  the precision (bf16 weights, trainable tensors in float32, bf16 autocast, AdamW) are the
  pipeline's own.

Each measurement is guarded: an out-of-memory (or any other failure) is recorded in the JSON
with ``status`` ``oom``/``error`` and the run goes on. The JSON is rewritten after every
measurement, so a run cut short still leaves what it measured. ``--tiny`` shrinks every shape
(a few layers, small hidden size and vocabulary) so that the whole script runs on CPU in
seconds: it checks the script, it measures nothing worth reporting.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # runs without an installed package (the GPU box)
    sys.path.insert(0, str(ROOT / "src"))

from loki_pipeline.kva import attribute_prompts  # noqa: E402
from loki_pipeline.models.architecture import get_adapter  # noqa: E402
from loki_pipeline.select import select_nodes  # noqa: E402
from loki_pipeline.select.selection_file import Selection  # noqa: E402
from loki_pipeline.train.loss import chunked_cross_entropy  # noqa: E402
from loki_pipeline.train.methods import parse_method  # noqa: E402
from loki_pipeline.train.settings import TrainSettings  # noqa: E402
from loki_pipeline.train.trainer import prepare_model, sft_loss  # noqa: E402

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
GB = 2**30
TRAIN_METHODS = ("loki_q10", "lora_r16")
SELECT_Q = 10.0


@dataclass(frozen=True)
class Shape:
    """One architecture: the config class's name and its keyword arguments."""

    config: str
    kwargs: dict
    tiny: dict = field(default_factory=dict)  # what --tiny overrides


#: Real shapes (the published configs' sizes); ``tiny`` keeps the head layout's ratios.
SHAPES: dict[str, Shape] = {
    "llama8b": Shape(
        "LlamaConfig",
        dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=128256,
            max_position_embeddings=131072,
            rms_norm_eps=1e-5,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
            tie_word_embeddings=False,
        ),
        tiny=dict(
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=1,
            vocab_size=512,
        ),
    ),
    "qwen0.5b": Shape(
        "Qwen2Config",
        dict(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            vocab_size=151936,
            max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
        ),
        tiny=dict(
            hidden_size=56,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=14,
            num_key_value_heads=2,
            vocab_size=512,
        ),
    ),
    # SmolLM2-135M-Instruct, the embedded default's model (train_speed.py's CPU runs)
    "smollm2-135m": Shape(
        "LlamaConfig",
        dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            vocab_size=49152,
            max_position_embeddings=8192,
            rms_norm_eps=1e-5,
            rope_theta=100000.0,
            tie_word_embeddings=True,
        ),
        tiny=dict(
            hidden_size=48,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=3,
            num_key_value_heads=1,
            vocab_size=512,
        ),
    ),
}


# --------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    """Peak GPU memory allocated since the last reset (None on CPU: no such counter)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / GB, 2)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed_steps(step: Callable[[], torch.Tensor], device: torch.device, warmup: int,
                steps: int) -> tuple[list[float], torch.Tensor]:
    """Seconds of each of ``steps`` calls of ``step`` after ``warmup`` untimed ones (the device
    synchronised around each), and the last call's loss."""
    times = []
    for _ in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        loss = step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times[warmup:], loss


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b|| / ||b||`` over everything (float64)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def selection_overlap(a: np.ndarray, b: np.ndarray, q: float = SELECT_Q) -> float:
    """Share of the nodes selected from ``b`` (``[samples, layers, nodes]``) also selected from ``a``."""
    sa, sb = select_nodes(a, q), select_nodes(b, q)
    common = sum(len(set(x) & set(y)) for x, y in zip(sa, sb, strict=True))
    return common / max(1, sum(len(y) for y in sb))


def build_model(name: str, tiny: bool, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """A randomly initialised causal LM of the named shape, created on ``device`` in ``dtype``."""
    import transformers
    from transformers import AutoModelForCausalLM

    shape = SHAPES[name]
    kwargs = {**shape.kwargs, **(shape.tiny if tiny else {})}
    config = getattr(transformers, shape.config)(**kwargs)
    torch.manual_seed(seed)
    with torch.device(device):
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        except TypeError:  # transformers < 4.56 names it torch_dtype
            model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    return model.eval()


def random_prompts(vocab: int, count: int, length: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (length,), generator=g) for _ in range(count)]


def random_selection(num_layers: int, d_model: int, q: float, seed: int = 0) -> Selection:
    """Layer-balanced random selection (speed does not depend on which rows are chosen)."""
    g = torch.Generator().manual_seed(seed)
    k = int(q / 100 * d_model)
    return Selection(
        positions=[
            sorted(torch.randperm(d_model, generator=g)[:k].tolist()) for _ in range(num_layers)
        ]
    )


class Recorder:
    """Runs guarded measurements and rewrites the JSON after each one."""

    def __init__(self, out: Path, results: dict, device: torch.device):
        self.out, self.results, self.device = out, results, device

    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(self.results, indent=1))
        os.replace(tmp, self.out)

    def measure(self, store: dict, key: str, fn: Callable[[], dict], label: str) -> dict:
        print(f"[{label}] ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            entry = {"status": "ok", **fn()}
        except OOM as err:
            entry = {"status": "oom", "error": str(err).splitlines()[0][:300]}
        except Exception as err:  # one failure must not cost the run's other measurements
            entry = {
                "status": "error",
                "error": f"{type(err).__name__}: {err}"[:500],
                "traceback": traceback.format_exc(limit=6),
            }
        entry["wall_s"] = round(time.perf_counter() - t0, 2)
        store[key] = entry
        free_memory(self.device)
        shown = {k: v for k, v in entry.items() if k not in ("times", "traceback", "per_prompt")}
        print(f"[{label}] {json.dumps(shown)}", file=sys.stderr, flush=True)
        self.write()
        return entry


# --------------------------------------------------------------------------- measurements
def time_kva(
    model, prompts, method: str, steps: int, device: torch.device, batch: int = 1
) -> tuple[dict, list]:
    """Warm up once, then attribute every prompt, ``batch`` per pass; seconds and attributions."""
    attribute_prompts(model, prompts[:batch], steps=steps, method=method)
    sync(device)
    reset_peak(device)
    times, attrs, gaps = [], [], []
    for start in range(0, len(prompts), batch):
        group = prompts[start : start + batch]
        sync(device)
        t0 = time.perf_counter()
        results = attribute_prompts(model, group, steps=steps, method=method)
        sync(device)
        times += [(time.perf_counter() - t0) / len(group)] * len(group)
        attrs += [r.attributions.numpy() for r in results]
        gaps += [r.completeness_gap for r in results]
    stats = {
        "prompts": len(prompts),
        "batch_prompts": batch,
        "tokens": int(prompts[0].numel()),
        "s_per_prompt": statistics.mean(times),
        "s_per_prompt_median": statistics.median(times),
        "times": times,
        "mean_completeness_gap": float(np.mean(gaps)),
        "peak_gb": peak_gb(device),
    }
    return stats, attrs


def measure_kva(rec: Recorder, entry: dict, model, prompts, args, device, name: str) -> dict:
    """bf16 ``exact`` on every prompt, ``reference`` on the first few; attributions kept."""
    kva: dict = {}
    entry["kva"] = kva
    attrs: dict[str, list] = {}

    def run(method: str, n: int) -> Callable[[], dict]:
        def fn() -> dict:
            stats, attrs[method] = time_kva(model, prompts[:n], method, args.steps, device)
            return stats

        return fn

    rec.measure(kva, "exact", run("exact", args.prompts), f"{name} kva exact bf16")
    for batch in args.batch_prompts:
        key = f"exact_batch{batch}"

        def batched(batch=batch, key=key) -> dict:
            stats, attrs[key] = time_kva(model, prompts, "exact", args.steps, device, batch)
            if attrs.get("exact"):  # the same prompts one at a time: equal up to rounding
                stats["rel_err_vs_one_at_a_time"] = rel_err(
                    np.stack(attrs[key]), np.stack(attrs["exact"])
                )
            return stats

        rec.measure(kva, key, batched, f"{name} kva exact bf16, {batch} prompts per pass")
    if args.reference_prompts > 0:
        rec.measure(
            kva, "reference", run("reference", args.reference_prompts), f"{name} kva reference"
        )
    else:
        kva["reference"] = {"status": "skipped", "reason": "--reference-prompts 0"}
    ex, ref = kva["exact"], kva["reference"]
    if ex["status"] == "ok" and ref["status"] == "ok":
        k = min(len(attrs["exact"]), len(attrs["reference"]))
        a, b = np.stack(attrs["exact"][:k]), np.stack(attrs["reference"][:k])
        kva["speedup_reference_over_exact"] = ref["s_per_prompt"] / ex["s_per_prompt"]
        kva["rel_err_exact_vs_reference"] = rel_err(a, b)
        rec.write()
    return attrs


def measure_precision(rec: Recorder, entry: dict, model, prompts, attrs, args, device, name):
    """Cast the same model to float32 and attribute the same prompts; compare with bf16."""

    def fn() -> dict:
        if not attrs.get("exact"):
            raise RuntimeError("no bf16 exact attributions to compare (kva exact failed)")
        n = len(attrs["exact"])
        model.float()  # in place, parameter by parameter: bf16 -> float32 is exact
        free_memory(device)
        stats, fp32 = time_kva(model, prompts[:n], "exact", args.steps, device)
        a16, a32 = np.stack(attrs["exact"]), np.stack(fp32)
        per_prompt_err = [rel_err(x, y) for x, y in zip(a16, a32, strict=True)]
        per_prompt_overlap = [
            selection_overlap(x[None], y[None]) for x, y in zip(a16, a32, strict=True)
        ]
        out = {
            "prompts": n,
            "fp32_s_per_prompt": stats["s_per_prompt"],
            "fp32_peak_gb": stats["peak_gb"],
            "rel_err_bf16_vs_fp32": rel_err(a16, a32),
            "rel_err_bf16_vs_fp32_max_prompt": max(per_prompt_err),
            "selection_overlap_q10": selection_overlap(a16, a32),
            "selection_overlap_q10_per_prompt_mean": float(np.mean(per_prompt_overlap)),
            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        }
        if attrs.get("reference"):
            k = len(attrs["reference"])
            out["rel_err_reference_bf16_vs_fp32"] = rel_err(np.stack(attrs["reference"]), a32[:k])
        return out

    if name not in args.float32:
        entry["precision"] = {"status": "skipped", "reason": f"{name} not in --float32"}
        rec.write()
        return
    rec.measure(entry, "precision", fn, f"{name} precision bf16 vs fp32")


def measure_loss(rec: Recorder, store: dict, name: str, chunk: int, args, device) -> None:
    """Step time and peak memory of the loss alone (LM head + cross-entropy, forward and
    backward; the head frozen, as under LoKI) over ``--loss-tokens`` supervised tokens in bf16
    autocast: ``chunk`` 0 is the plain loss (every token's float32 logits at once), else
    ``train.loss.chunked_cross_entropy`` (``training.loss_chunk_tokens``)."""

    def fn() -> dict:
        cfg = {**SHAPES[name].kwargs, **(SHAPES[name].tiny if args.tiny else {})}
        torch.manual_seed(3)  # the same head for every chunk size
        head = torch.nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        head = head.to(device=device, dtype=torch.bfloat16).requires_grad_(False)
        g = torch.Generator().manual_seed(3)
        hidden = torch.randn(args.loss_tokens, cfg["hidden_size"], generator=g)
        hidden = hidden.to(device=device, dtype=torch.bfloat16).requires_grad_(True)
        targets = torch.randint(0, cfg["vocab_size"], (args.loss_tokens,), generator=g).to(device)
        sync(device)
        reset_peak(device)

        def step() -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = chunked_cross_entropy(head, hidden, targets, chunk)
            loss.backward()
            hidden.grad = None
            return loss

        times, loss = timed_steps(step, device, args.train_warmup, args.train_steps)
        out = {"tokens": args.loss_tokens, "chunk": chunk, "loss": float(loss.detach()),
               "step_s_median": statistics.median(times), "times": times,
               "peak_gb": peak_gb(device)}  # fmt: skip
        return out

    rec.measure(store, f"chunk{chunk}" if chunk else "plain", fn, f"{name} loss chunk={chunk}")


def measure_train(
    rec: Recorder, store: dict, name: str, method_name: str, args, device, chunk: int = 0
) -> None:
    """Step time and peak memory of one method, on a freshly built bf16 model; ``chunk``:
    the loss's ``loss_chunk_tokens`` (0 = the plain loss)."""

    def fn() -> dict:
        model = build_model(name, args.tiny, torch.bfloat16, device)
        arch = get_adapter(model)
        method = parse_method(method_name)
        selection = random_selection(arch.num_layers, arch.d_model, method.q) if method.q else None
        model = prepare_model(model, method, TrainSettings(dtype="bfloat16"), selection=selection)
        # As train.run does for bf16: trainable tensors (and AdamW state) in float32, compute
        # under bf16 autocast.
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.data = p.data.float()
        opt = torch.optim.AdamW(params, lr=1e-5)
        g = torch.Generator().manual_seed(2)
        vocab = model.config.vocab_size
        ids = torch.randint(0, vocab, (args.train_batch, args.train_seq), generator=g)
        labels = ids.clone()
        labels[:, : args.train_seq // 2] = -100
        batch = {
            "input_ids": ids.to(device),
            "labels": labels.to(device),
            "attention_mask": torch.ones_like(ids).to(device),
        }
        model.train()
        sync(device)
        weights = torch.cuda.memory_allocated(device) / GB if device.type == "cuda" else None
        reset_peak(device)

        def step() -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss, _ = sft_loss(model, batch, chunk)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        times, loss = timed_steps(step, device, args.train_warmup, args.train_steps)
        out = {
            "trainable_params": sum(p.numel() for p in params),
            "trainable_dtype": str(params[0].dtype).replace("torch.", ""),
            "loss_chunk_tokens": chunk,
            "batch": [args.train_batch, args.train_seq],
            "step_s_median": statistics.median(times),
            "step_s_min": min(times),
            "times": times,
            "loss": float(loss.detach()),
            "memory_before_gb": None if weights is None else round(weights, 2),
            "peak_gb": peak_gb(device),
        }
        return out

    key = f"{method_name}+chunk{chunk}" if chunk else method_name
    rec.measure(store, key, fn, f"{name} train {key}")


def run_model(rec: Recorder, name: str, args, device: torch.device) -> None:
    entry: dict = {}
    rec.results["models"][name] = entry
    holder: dict = {}

    def build() -> dict:
        sync(device)
        t0 = time.perf_counter()
        holder["model"] = model = build_model(name, args.tiny, torch.bfloat16, device)
        sync(device)
        arch = get_adapter(model)
        return {
            "config": {k: v for k, v in SHAPES[name].kwargs.items() if k != "rope_scaling"}
            | {k: getattr(model.config, k) for k in SHAPES[name].tiny},
            "params": sum(p.numel() for p in model.parameters()),
            "layers": arch.num_layers,
            "d_model": arch.d_model,
            "d_ff": arch.d_ff,
            "attn_implementation": model.config._attn_implementation,
            "build_s": time.perf_counter() - t0,
            "weights_gb": round(torch.cuda.memory_allocated(device) / GB, 2)
            if device.type == "cuda"
            else None,
        }

    rec.measure(entry, "build", build, f"{name} build bf16")
    model = holder.pop("model", None)
    if model is not None:
        prompts = random_prompts(model.config.vocab_size, args.prompts, args.prompt_len)
        attrs = measure_kva(rec, entry, model, prompts, args, device, name)
        measure_precision(rec, entry, model, prompts, attrs, args, device, name)
        del model, attrs
        free_memory(device)
    else:
        for key in ("kva", "precision"):
            entry[key] = {"status": "skipped", "reason": "model build failed"}
    entry["loss"] = {}
    for chunk in args.loss_chunks:
        measure_loss(rec, entry["loss"], name, chunk, args, device)
    entry["train"] = {}
    for method_name in TRAIN_METHODS:
        for chunk in args.loss_chunks:
            measure_train(rec, entry["train"], name, method_name, args, device, chunk)


# --------------------------------------------------------------------------- report
def _fmt(x, spec: str = ".3g") -> str:
    if x is None:
        return "-"
    return format(x, spec) if isinstance(x, (int, float)) else str(x)


def _cell(entry: dict, key: str, spec: str = ".3g") -> str:
    if entry.get("status") not in (None, "ok"):
        return entry["status"]
    return _fmt(entry.get(key), spec)


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        f"{meta['device_name']}, torch {meta['torch']}, transformers {meta['transformers']}, "
        f"{meta['steps']} steps (left Riemann), prompts of {meta['prompt_len']} random tokens"
        + (" (--tiny: shapes shrunk, numbers meaningless)" if meta["tiny"] else ""),
        "",
        "KVA, bf16 (random weights, real shapes)",
        "",
        "| model | exact s/prompt | prompts | reference s/prompt | prompts | reference/exact |"
        " rel err exact vs ref | exact peak GB | reference peak GB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        kva = m.get("kva", {})
        ex, ref = kva.get("exact", {}), kva.get("reference", {})
        lines.append(
            f"| {name} | {_cell(ex, 's_per_prompt', '.4f')} | {_cell(ex, 'prompts')} | "
            f"{_cell(ref, 's_per_prompt', '.3f')} | {_cell(ref, 'prompts')} | "
            f"{_fmt(kva.get('speedup_reference_over_exact'), '.1f')} | "
            f"{_fmt(kva.get('rel_err_exact_vs_reference'), '.2e')} | "
            f"{_cell(ex, 'peak_gb')} | {_cell(ref, 'peak_gb')} |"
        )
    lines += [
        "",
        "KVA exact, bf16, several prompts per pass (the same prompts)",
        "",
        "| model | prompts per pass | s/prompt | vs one at a time | rel err vs one at a time |"
        " peak GB |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        kva = m.get("kva", {})
        single = kva.get("exact", {}).get("s_per_prompt")
        for key, e in kva.items():
            if not key.startswith("exact_batch"):
                continue
            speedup = single / e["s_per_prompt"] if single and e.get("status") == "ok" else None
            lines.append(
                f"| {name} | {key.removeprefix('exact_batch')} | "
                f"{_cell(e, 's_per_prompt', '.4f')} | {_fmt(speedup, '.2f')} | "
                f"{_cell(e, 'rel_err_vs_one_at_a_time', '.2e')} | {_cell(e, 'peak_gb')} |"
            )
    lines += [
        "",
        "bf16 against float32 (same weights, same prompts; selection: layer-balanced, q=10)",
        "",
        "| model | prompts | rel err exact bf16 vs fp32 | worst prompt | rel err reference bf16"
        " vs fp32 | selection overlap (pooled) | selection overlap (per prompt, mean) |"
        " fp32 exact s/prompt |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        p = m.get("precision", {})
        lines.append(
            f"| {name} | {_cell(p, 'prompts')} | {_cell(p, 'rel_err_bf16_vs_fp32', '.2e')} | "
            f"{_cell(p, 'rel_err_bf16_vs_fp32_max_prompt', '.2e')} | "
            f"{_cell(p, 'rel_err_reference_bf16_vs_fp32', '.2e')} | "
            f"{_cell(p, 'selection_overlap_q10', '.2%')} | "
            f"{_cell(p, 'selection_overlap_q10_per_prompt_mean', '.2%')} | "
            f"{_cell(p, 'fp32_s_per_prompt', '.3f')} |"
        )
    lines += [
        "",
        f"Loss alone (LM head + cross-entropy, head frozen, bf16 autocast), "
        f"{meta['loss_tokens']} supervised tokens: plain vs chunked (training.loss_chunk_tokens)",
        "",
        "| model | loss | step s (median) | peak GB | time / plain | peak / plain |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        loss = m.get("loss", {})
        plain = loss.get("plain", {})
        for key, e in loss.items():
            ok = e.get("status") == "ok" and plain.get("status") == "ok"
            t = e["step_s_median"] / plain["step_s_median"] if ok else None
            mem = e["peak_gb"] / plain["peak_gb"] if ok and plain.get("peak_gb") else None
            lines.append(
                f"| {name} | {key} | {_cell(e, 'step_s_median', '.4f')} | {_cell(e, 'peak_gb')} "
                f"| {_fmt(t, '.2f')} | {_fmt(mem, '.2f')} |"
            )
    lines += [
        "",
        f"Training step (batch {meta['train_batch']} x {meta['train_seq']} tokens, bf16 weights,"
        " float32 trainable tensors, bf16 autocast, AdamW)",
        "",
        "| model | method | trainable params | step s (median) | peak GB | before step GB |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        for method, t in m.get("train", {}).items():
            lines.append(
                f"| {name} | {method} | {_cell(t, 'trainable_params', ',')} | "
                f"{_cell(t, 'step_s_median', '.3f')} | {_cell(t, 'peak_gb')} | "
                f"{_cell(t, 'memory_before_gb')} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="llama8b,qwen0.5b", help=",".join(SHAPES))
    parser.add_argument("--prompts", type=int, help="prompts for exact (16; --tiny 2)")
    parser.add_argument("--reference-prompts", type=int, help="prompts for reference (2; --tiny 1)")
    parser.add_argument("--prompt-len", type=int, help="tokens per prompt (150; --tiny 24)")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument(
        "--batch-prompts",
        help="prompts per pass of the batched exact runs, comma-separated (4,8,16; --tiny 2)",
    )
    parser.add_argument(
        "--float32",
        help="models whose bf16 attributions are compared with float32 ones "
        "(default qwen0.5b; --tiny: all; 'none' for none). llama8b needs 32 GB more.",
    )
    parser.add_argument("--train-batch", type=int, help="sequences per step (4; --tiny 2)")
    parser.add_argument("--train-seq", type=int, help="tokens per sequence (512; --tiny 32)")
    parser.add_argument("--train-steps", type=int, help="timed steps (5; --tiny 2)")
    parser.add_argument("--train-warmup", type=int, default=1)
    parser.add_argument(
        "--loss-chunks",
        default="0,1024,4096",
        help="loss_chunk_tokens of the loss and training measurements (0 = the plain loss)",
    )
    parser.add_argument(
        "--loss-tokens",
        type=int,
        help="supervised tokens of the loss measurement (32768: the paper's 4 x 8192; --tiny 256)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="CPU threads (torch's default)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: a CPU check")
    parser.add_argument("--out", default="gpu_real_size.json")
    args = parser.parse_args(argv)

    defaults = {
        "prompts": (16, 2),
        "reference_prompts": (2, 1),
        "prompt_len": (150, 24),
        "train_batch": (4, 2),
        "train_seq": (512, 32),
        "train_steps": (5, 2),
        "loss_tokens": (32768, 256),
        "batch_prompts": ("4,8,16", "2"),
    }
    for key, (real, tiny) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else real)
    args.batch_prompts = [int(b) for b in str(args.batch_prompts).split(",") if b]
    args.loss_chunks = [int(c) for c in str(args.loss_chunks).split(",") if c]
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in SHAPES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(SHAPES)}")
    if args.float32 is None:
        args.float32 = ",".join(models) if args.tiny else "qwen0.5b"
    args.float32 = [] if args.float32 == "none" else args.float32.split(",")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    import peft
    import transformers

    results = {
        "meta": {
            "command": " ".join(
                [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]
            ),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads)",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "tiny": args.tiny,
            "models": models,
            "steps": args.steps,
            "quadrature": "left",
            "prompt_len": args.prompt_len,
            "batch_prompts": args.batch_prompts,
            "float32": args.float32,
            "train_batch": args.train_batch,
            "train_seq": args.train_seq,
            "train_steps": args.train_steps,
            "loss_tokens": args.loss_tokens,
            "loss_chunks": args.loss_chunks,
            "weights": "random (HF init); real shapes" + (" shrunk by --tiny" if args.tiny else ""),
        },
        "models": {},
    }
    rec = Recorder(Path(args.out), results, device)
    rec.write()
    t0 = time.perf_counter()
    for name in models:
        run_model(rec, name, args, device)
    results["meta"]["total_s"] = round(time.perf_counter() - t0, 1)
    table = markdown(results)
    results["table_md"] = table
    rec.write()
    print(table)
    return results


if __name__ == "__main__":
    main()
