"""The time plan (``loki plan --device``): FLOPs by counting, seconds by the device's bound.

Oracles: the FLOPs of one forward pass counted by torch's FlopCounterMode on a tiny model (the
plan's per-token formula must match what the model really multiplies), the textbook ratios
(a backward pass with weight gradients costs twice the forward, without them once), and the
vendor numbers the GPU profiles must carry.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_tiny_model

from loki_pipeline.cli import main
from loki_pipeline.cli.plan import load_config
from loki_pipeline.plan import timing
from loki_pipeline.plan.dims import ModelDims
from loki_pipeline.plan.rows import plan_rows


def _dims(model) -> ModelDims:
    return ModelDims.from_config(model.config.to_dict())


def test_forward_flops_equal_what_the_model_multiplies():
    from torch.utils.flop_counter import FlopCounterMode

    model = build_tiny_model("llama", layers=3)
    seq = 64
    ids = torch.randint(0, model.config.vocab_size, (1, seq))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=ids)
    counted = counter.get_total_flops()
    # the plan's mean causal context is seq / 2 per token; eager attention multiplies the
    # whole seq x seq square (masked afterwards): 2 x the plan's attention term
    dims = _dims(model)
    plan = timing.forward_flops(dims, seq, seq, seq)
    attention_square = 2 * dims.num_layers * dims.q_dim * seq * seq
    assert plan + attention_square == pytest.approx(counted, rel=0.01)


def test_backward_costs_twice_the_forward_with_weight_gradients_and_once_without():
    dims = _dims(build_tiny_model("llama"))
    kw = dict(tokens=1000, seq=100, supervised=0)
    forward = timing.forward_flops(dims, 1000, 100, 0)
    assert timing.training_flops(dims, "full", checkpointing=False, **kw) == 3 * forward
    assert timing.training_flops(dims, "loki", checkpointing=False, **kw) == 2 * forward
    assert timing.training_flops(dims, "loki", checkpointing=True, **kw) == 3 * forward


def test_gpu_profiles_carry_the_vendor_peaks_and_a_stated_efficiency():
    assert timing.GPUS["h100"].flops == 989e12 and timing.GPUS["h100"].bandwidth == 3.35e12
    assert timing.GPUS["h200"].bandwidth == 4.8e12 and timing.GPUS["a100"].flops == 312e12
    assert timing.GPUS["rtx4090"].flops == 165.2e12
    assert all(0 < d.efficiency < 1 and 0 < d.bw_efficiency < 1 for d in timing.GPUS.values())


def test_decoding_is_bound_by_bandwidth():
    dims = _dims(build_tiny_model("llama"))
    fast = timing.Device("x", 1e12, 2e12, 0.5, 0.5, 0.0)
    slow = timing.Device("x", 1e15, 1e12, 0.5, 0.5, 0.0)  # more FLOP/s, half the bandwidth
    kw = dict(batches=3, batch=4, context=100, new_tokens=10, weight_bytes=2)
    assert timing.decode_seconds(dims, slow, **kw) == pytest.approx(
        2 * timing.decode_seconds(dims, fast, **kw)
    )


def test_the_cpu_is_calibrated_once_and_then_read_from_the_cache(tmp_path, monkeypatch):
    path = tmp_path / "cal.json"
    first = timing.calibrate_cpu(1, path=path)
    assert first[0] > 1e8 and first[1] > 1e8  # FLOP/s and bytes/s of a real CPU
    monkeypatch.setattr(torch, "randn", lambda *a, **k: pytest.fail("measured again"))
    assert timing.calibrate_cpu(1, path=path) == first
    assert json.loads(path.read_text())


@pytest.mark.parametrize("device", ["h100", "a100"])
def test_rows_carry_flops_and_seconds_and_the_output_total_gpu_hours(device, capsys):
    config = load_config("config/paper.yaml")
    rows = plan_rows(config, device)
    assert all(r["flops"] > 0 and r["est_seconds"] > 0 for r in rows)
    assert main(["plan", "--configfile", "config/paper.yaml", "--device", device,
                 "--format", "json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["device"] == device
    want = sum(r["est_seconds"] * r["count"] * max(1, r["gpus"]) for r in out["rows"]) / 3600
    assert out["total_gpu_hours"] == pytest.approx(want, rel=1e-3)
    assert sum(out["gpu_hours_by"].values()) == pytest.approx(want, rel=1e-3)
    assert main(["plan", "--configfile", "config/paper.yaml", "--device", device]) == 0
    assert f"Time on {device}:" in capsys.readouterr().out


def test_a_slower_gpu_takes_longer_and_the_config_names_the_device():
    config = load_config("config/paper.yaml")
    h100 = {r["job"]: r["est_seconds"] for r in plan_rows(config, "h100")}
    a100 = {r["job"]: r["est_seconds"] for r in plan_rows(config, "a100")}
    assert all(a100[j] > h100[j] for j in h100)
    from loki_pipeline.plan.time_jobs import plan_device

    assert plan_device(config) == "h100"  # device: cuda
    config["plan"]["device"] = "rtx4090"
    assert plan_device(config) == "rtx4090" and plan_device(config, "cpu") == "cpu"


def test_the_work_comes_from_the_data_when_it_is_here():
    config = load_config("config/config.yaml")
    rows = {r["rule"]: r for r in plan_rows(config, "h100")}
    assert rows["train"]["work_from"] == "data" and rows["kva"]["work_from"] == "data"
    paper = {r["rule"]: r for r in plan_rows(load_config("config/paper.yaml"), "h100")}
    assert paper["train"]["work_from"] == "shipped table"


def test_the_largest_batch_the_seeded_order_forms(tiny_checkpoint, tmp_path):
    """Oracle: the examples tokenized directly and the order replayed with randperm."""
    from transformers import AutoTokenizer

    from loki_pipeline.tasks.registry import loader_options, task_examples, train_data
    from loki_pipeline.train.settings import TrainSettings

    config = load_config("config/config.yaml")
    config["models"] = {"tiny": {"source": f"local:{tiny_checkpoint}", "analyse_only": False}}
    config["experiments"] = {"tiny": {"reranker": ["loki_q10"]}}
    config["training"]["tasks"]["reranker"]["max_steps"] = 5
    config["tasks"]["reranker"]["train"]["cutoff_len"] = 512  # the tiny tokenizer's longer rows
    row = next(r for r in plan_rows(config, data=True) if r["rule"] == "train")
    got = row["largest_batch"]
    s = TrainSettings.from_config(config, "reranker", "loki_q10")
    data = train_data("reranker", config["tasks"]["reranker"])
    examples = task_examples("reranker", data["source"],
                                 AutoTokenizer.from_pretrained(str(tiny_checkpoint)),
                                 cutoff_len=s.cutoff_len, **loader_options("reranker", data))  # fmt: skip
    per_epoch = -(-len(examples) // s.batch_size)
    lengths = []
    for m in range(5 * s.grad_accum):
        epoch, j = divmod(m, per_epoch)
        order = torch.randperm(
            len(examples), generator=torch.Generator().manual_seed(s.seed + epoch)
        )
        batch = order[j * s.batch_size : (j + 1) * s.batch_size].tolist()
        lengths.append(max(len(examples[i]["input_ids"]) for i in batch))
    assert got["padded_len"] == max(lengths) <= s.cutoff_len
    assert got["micro_batches"] == 5 * s.grad_accum
    assert got["device_gb"] <= row["device_gb"]  # never above the worst case


def test_a_shared_rows_time_is_of_its_own_runs_tasks():
    """config/reranker.yaml: base is evaluated on both tasks, each trained run on its own, and
    the runs of one task share a row (``{run}``). The time of a task evaluation is the sum over
    its tasks, so base's FLOPs are the reranker row's plus the ToolACE row's (each row was timed
    as base, both tasks, while the plan read the run back out of its label)."""
    rows = plan_rows(load_config("config/reranker.yaml"), "h100")
    task = {r["what"].split(",")[0]: r for r in rows if r["rule"] == "eval_task"}
    assert task["reranker"]["count"] == task["toolace"]["count"] == 2
    both = task["reranker+toolace"]
    assert both["count"] == 1 and both["job"].endswith("/base/task.json")
    assert both["flops"] == pytest.approx(task["reranker"]["flops"] + task["toolace"]["flops"])
    assert (
        max(task["reranker"]["est_seconds"], task["toolace"]["est_seconds"]) < both["est_seconds"]
    )
