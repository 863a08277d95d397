"""The time plan: FLOPs and seconds of each KVA, training and evaluation job on a device.

Each stage is modelled by what bounds it:

- training and prefill by compute: ``2 n`` FLOPs per token and ``n`` weights for the forward
  pass (plus attention's ``2 L s q`` per token at mean context ``s``), the backward pass twice
  that where weights get gradients (full fine-tuning) and once where only the activations do
  (LoKI, LoKI* and the PEFT methods: the frozen weights' gradients are never computed), one more
  forward of the blocks under gradient checkpointing; the LM head (``2 h V`` per supervised
  token) likewise;
- greedy decoding by memory bandwidth: each generated token of a batch reads the weights and
  the batch's KV cache once, plus a per-step overhead (kernel launches, Python);
- KVA (the exact backend) by its steps x prompts: the prompt's forward, then ``m`` rows per
  layer run forward and backward (activation gradients only) through the blocks after theirs.

The device's FLOP/s and bytes/s are the vendor's peaks times an assumed efficiency (GPUs), or
measured on this machine once (the CPU: a short float32 matmul and copy benchmark, cached).
The work comes from the data when it is present (examples counted, tokens estimated from their
text at :data:`CHARS_PER_TOKEN`), else from :data:`PAPER_DATA`. Light: torch only for the CPU
calibration.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loki_pipeline.plan.dims import ModelDims
from loki_pipeline.safe_text import iter_json_lines, read_json

#: ASSUMPTION: characters per token of English/JSON text under the Llama/SmolLM/Qwen BPE
#: tokenizers (their usual 3.5-4.5); the plan does not load a tokenizer.
CHARS_PER_TOKEN = 4.0
#: ASSUMPTION: a chat template's and instruction's tokens around each prompt or example.
TEMPLATE_TOKENS = 40


@dataclass(frozen=True)
class Device:
    """Peak dense FLOP/s (bf16 on GPUs, float32 on the CPU) and memory bandwidth, with the
    share of each a job reaches."""

    name: str
    flops: float
    bandwidth: float
    efficiency: float  # of peak FLOP/s, training and prefill
    bw_efficiency: float  # of peak bandwidth, decoding
    step_overhead_s: float  # per decoding step and per training micro-batch

    @property
    def flop_rate(self) -> float:
        return self.flops * self.efficiency

    @property
    def byte_rate(self) -> float:
        return self.bandwidth * self.bw_efficiency


# ASSUMPTION (all GPUs): 40% of peak dense bf16 for training and prefill (transformers' eager
# kernels at batch x sequence in the thousands; published model-FLOPs utilisation of plain
# PyTorch training sits at 30-50%), 60% of peak bandwidth while decoding, 20 ms per decoding
# step of transformers' generate (its kernel launches and Python at batch <= 8).
GPUS: dict[str, Device] = {
    # NVIDIA H100 SXM5 datasheet: 989 TFLOPS dense BF16 (1,979 with sparsity), 3.35 TB/s HBM3
    "h100": Device("NVIDIA H100 SXM5 80 GB", 989e12, 3.35e12, 0.4, 0.6, 0.02),
    # NVIDIA H200 datasheet: the H100's 989 TFLOPS dense BF16, 4.8 TB/s HBM3e
    "h200": Device("NVIDIA H200 SXM 141 GB", 989e12, 4.8e12, 0.4, 0.6, 0.02),
    # NVIDIA A100 datasheet: 312 TFLOPS dense BF16, 2,039 GB/s (80 GB SXM)
    "a100": Device("NVIDIA A100 SXM 80 GB", 312e12, 2.039e12, 0.4, 0.6, 0.02),
    # NVIDIA Ada (AD102) whitepaper: 165.2 TFLOPS dense BF16 with FP32 accumulate, 1,008 GB/s
    "rtx4090": Device("NVIDIA GeForce RTX 4090 24 GB", 165.2e12, 1.008e12, 0.4, 0.6, 0.02),
}
DEVICES = ("cpu", *GPUS)
#: ASSUMPTION (the CPU): the share of the calibrated float32 matmul rate that a model's
#: forward and backward reach (its matmuls are as large as the calibration's: at 135M and
#: ~1k-token batches they run near that rate), and of the copy bandwidth that decoding
#: reaches; 30 ms per decoding step (generate's Python at 135M). Chosen knowing the measured
#: default run (benchmarks/RESULTS.md, "Time plan"), so that validation is not independent.
CPU_EFFICIENCY, CPU_BW_EFFICIENCY, CPU_STEP_S = 0.8, 0.5, 0.03

#: The paper's datasets where the data is not present: (rows, mean tokens per row). Rows from
#: the dataset cards: ToolACE (huggingface.co/datasets/Team-ACE/ToolACE, one data.json of
#: 11,300 dialogues), the LB reranker's training set (huggingface.co/datasets/lightblue/
#: reranker_continuous_filt_max7_train, 2.28M query/text pairs). ASSUMPTION: the mean tokens per
#: row (not measured here: a ToolACE dialogue with its function documents ~1,500 tokens, a
#: reranker pair with its chat template ~300). Measured values replace them when the data is
#: present.
PAPER_DATA: dict[str, tuple[int, int]] = {
    "toolace": (11_300, 1_500),
    "reranker": (2_280_000, 300),
}


# --------------------------------------------------------------------------- the CPU
def calibration_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "loki-pipeline" / "cpu_calibration.json"


def calibrate_cpu(threads: int, *, path: Path | None = None) -> tuple[float, float]:
    """(float32 FLOP/s, copy bytes/s) of this CPU with ``threads`` threads: measured once by a
    512^3 matmul and a 16 MB copy, the best of 50 and 20 (a fraction of a second; the best
    of many short runs finds the rate of an unloaded core on a shared machine), then read
    from the cache."""
    path = path or calibration_path()
    key = f"v2:{platform.machine()}:{os.cpu_count()}:{threads}"
    cache: dict[str, Any] = {}
    if path.is_file():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
    if key in cache:
        return float(cache[key][0]), float(cache[key][1])
    import time

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(512, 512), torch.randn(512, 512)
        src, dst = torch.randn(4 * 2**20), torch.empty(4 * 2**20)
        best_mm, best_copy = math.inf, math.inf
        for i in range(50):
            t0 = time.perf_counter()
            a @ b
            best_mm = min(best_mm, time.perf_counter() - t0)
            if i < 20:
                t0 = time.perf_counter()
                dst.copy_(src)
                best_copy = min(best_copy, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    measured = (2 * 512**3 / best_mm, 2 * src.numel() * 4 / best_copy)
    cache[key] = measured
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cache, indent=1) + "\n")
    except OSError:
        pass  # a read-only home: measure again next time
    return measured


def device_profile(name: str, threads: int = 1) -> Device:
    """The device ``name`` (``cpu``: this machine with ``threads`` threads, calibrated; more
    threads are never slower than fewer, so a count measured on a busy machine below a smaller
    count's rate takes that rate)."""
    if name == "cpu":
        measured = [calibrate_cpu(t) for t in sorted({1, max(1, threads)})]
        flops, bandwidth = max(m[0] for m in measured), max(m[1] for m in measured)
        return Device(
            f"this CPU, {threads} thread(s)", flops, bandwidth, CPU_EFFICIENCY,
            CPU_BW_EFFICIENCY, CPU_STEP_S,
        )  # fmt: skip
    return GPUS[name]


# --------------------------------------------------------------------------- FLOPs
def block_params(dims: ModelDims) -> int:
    return dims.num_layers * dims.layer_params()


def forward_flops(dims: ModelDims, tokens: float, context: float, head_tokens: float) -> float:
    """One forward pass: ``2 x`` the blocks' weights per token, attention over ``context``
    (mean causal context ``context / 2``: ``2 L q context`` per token), the head on
    ``head_tokens``."""
    blocks = tokens * (2 * block_params(dims) + 2 * dims.num_layers * dims.q_dim * context)
    return blocks + head_tokens * 2 * dims.hidden_size * dims.vocab_size


def training_flops(
    dims: ModelDims, kind: str, *, tokens: float, seq: float, supervised: float,
    checkpointing: bool,
) -> float:  # fmt: skip
    """Forward, backward and recompute of ``tokens`` (sequences of mean length ``seq``)."""
    blocks = forward_flops(dims, tokens, seq, 0)
    head = supervised * 2 * dims.hidden_size * dims.vocab_size
    backward = 2.0 if kind == "full" else 1.0  # frozen weights: activation gradients only
    return blocks * (1 + backward + (1 if checkpointing else 0)) + head * (1 + backward)


def kva_flops(dims: ModelDims, *, prompts: float, tokens: float, rows: int) -> float:
    """The exact backend per shard: each prompt's forward, then ``rows`` per layer through the
    blocks after theirs (``rows L (L - 1) / 2`` block passes), forward and backward, and their
    head."""
    prefix = forward_flops(dims, tokens, tokens, 1)
    per_block = 2 * dims.layer_params() + 2 * dims.q_dim * tokens
    passes = rows * dims.num_layers * (dims.num_layers - 1) / 2
    head = rows * dims.num_layers * 2 * dims.hidden_size * dims.vocab_size
    return prompts * (prefix + 2 * (passes * per_block + head))


def decode_seconds(
    dims: ModelDims, device: Device, *, batches: float, batch: int, context: float,
    new_tokens: float, weight_bytes: int,
) -> float:  # fmt: skip
    """Greedy decoding: per step the weights and the batch's KV cache read once."""
    kv = batch * context * dims.num_layers * 2 * dims.kv_dim * weight_bytes
    per_step = (dims.num_params() * weight_bytes + kv) / device.byte_rate + device.step_overhead_s
    return batches * new_tokens * per_step


# --------------------------------------------------------------------------- the data
def text_tokens(text: str) -> float:
    return len(text) / CHARS_PER_TOKEN + TEMPLATE_TOKENS


def jsonl_rows(path: Path) -> list[Any]:
    return [row for _, row in iter_json_lines(path, strings=False)]


def data_rows(path: str | Path) -> list[Any] | None:
    """The rows of a JSON or JSON-lines data file (None when it is not here)."""
    p = Path(path)
    if not p.is_file():
        return None
    if p.suffix == ".jsonl":
        return jsonl_rows(p)
    data = read_json(p, "data file", strings=False)
    return data if isinstance(data, list) else None


def dataset_size(
    source: str | None, task: str, cutoff: int, max_samples: int
) -> tuple[int, float, str]:
    """(examples, mean tokens per example capped at ``cutoff``, where from) of a task's
    training data: measured from the file when it is here, else :data:`PAPER_DATA`."""
    rows = data_rows(source) if source else None
    if rows:
        if max_samples:
            rows = rows[:max_samples]
        lengths = [min(cutoff, text_tokens(json.dumps(r, ensure_ascii=False))) for r in rows]
        return len(rows), sum(lengths) / len(lengths), "data"
    count, mean = PAPER_DATA.get(task, (1000, cutoff))
    if max_samples:
        count = min(count, max_samples)
    return count, min(cutoff, mean), "shipped table"


def mean_prompt_tokens(rows: list[Mapping[str, Any]], fields: tuple[str, ...]) -> float:
    texts = [" ".join(str(r.get(f, "")) for f in fields) for r in rows]
    return sum(text_tokens(t) for t in texts) / max(1, len(texts))
