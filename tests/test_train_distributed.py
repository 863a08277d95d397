"""Data-parallel training: 2 CPU processes under torchrun (gloo) against 1 with grad_accum x 2.

The oracle is the one-process loop the other training tests check: the same global batches
split across two processes must give the same weights and log (the loop's contract in
``train/trainer.py``). One torchrun launch (tests/distributed_worker.py) serves every test of
the module: starting the processes is most of its time.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model, build_tiny_tokenizer
from distributed_worker import Killed, train_job
from safetensors.torch import load_file
from test_train import TOOLACE_ROWS

from loki_pipeline.errors import LokiInputError
from loki_pipeline.io import exclusive_lock
from loki_pipeline.train import distributed
from loki_pipeline.train.settings import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
#: 11 examples in micro-batches of 2 (the last one short) for 2 epochs: 12 micro-batches
#: the plain loss (its float32 sums in one order); the chunked loss has tests of its own below
BASE = {"learning_rate": 1e-2, "epochs": 2, "batch_size": 2, "seed": 7, "warmup_ratio": 0.2,
        "loss_chunk_tokens": 0}  # fmt: skip
ONE = {**BASE, "grad_accum": 2}  # the oracle: one process
TWO = {**BASE, "grad_accum": 1}  # each of 2 processes: the same global batch of 4
RESUMED = {**BASE, "save_every": 2}  # killed after step 3: resumes from step 2


def torchrun(script: Path, *args: str, cwd: Path) -> str:
    """``script ARGS`` as 2 processes, started as the train rule starts them
    (``launch.exec_torchrun``: torchrun --standalone); their stdout and stderr (its log)."""
    path = [str(ROOT / "src"), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    log = cwd / "torchrun.log"
    code = (
        "import sys; from loki_pipeline.train.launch import exec_torchrun as x; x(2, *sys.argv[1:])"
    )
    command = [sys.executable, "-c", code, str(script), str(log), *args]
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + log.read_text()
    assert proc.returncode == 0, output[-4000:]
    return output


def _saved(out: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    return load_file(f"{out}.safetensors"), json.loads(Path(f"{out}.json").read_text())


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One 2-process launch (tests/distributed_worker.py) of: LoKI and LoRA, whole, with
    gradient checkpointing (their one-process oracles without it); LoKI and full fine-tuning
    (DDP) with checkpointing and the chunked loss (their oracles with the plain loss); LoKI* killed after step 3
    (to be resumed by one process); a LoKI* run and a full fine-tuning that one process was
    killed in, resumed (the latter sharded by FSDP); and `loki train` of full fine-tuning with
    FSDP and gradient checkpointing. Returns (folder, torchrun's output)."""
    tmp = tmp_path_factory.mktemp("ddp")
    for method in ("loki_lora_q10_r2", "full"):  # one process, killed after step 3
        with pytest.raises(Killed):
            train_job({"method": method, "settings": {**RESUMED, **ONE}, "stop_at": 3,
                       "checkpoint_dir": str(tmp / f"{method}-killed-by-1")})  # fmt: skip
    fsdp = {**RESUMED, **TWO, "distributed": "fsdp"}
    # with gradient checkpointing, against the oracle without it: the same weights
    checkpointed = {**TWO, "gradient_checkpointing": True}
    jobs = [
        {"method": m, "settings": checkpointed, "out": str(tmp / m)}
        for m in ("loki_q10", "lora_r2")
    ] + [  # the chunked loss (5 tokens: divides no batch's count), against the plain one
        {"method": m, "settings": {**checkpointed, "loss_chunk_tokens": 5},
         "out": str(tmp / f"{m}-chunked")}
        for m in ("loki_q10", "full")
    ] + [
        {"method": "loki_lora_q10_r2", "settings": {**RESUMED, **TWO},
         "checkpoint_dir": str(tmp / "killed-by-2"), "stop_at": 3},
        {"method": "loki_lora_q10_r2", "settings": {**RESUMED, **TWO},
         "checkpoint_dir": str(tmp / "loki_lora_q10_r2-killed-by-1"),
         "out": str(tmp / "loki_lora_q10_r2-resumed-by-2")},
        {"method": "full", "settings": fsdp, "checkpoint_dir": str(tmp / "full-killed-by-1"),
         "out": str(tmp / "full-resumed-by-2")},
    ]  # fmt: skip
    for job in jobs:
        job["kind"] = "train"
    fsdp_argv = _loki_train_fsdp(tmp)
    jobs.append({"kind": "cli", "argv": fsdp_argv})
    busy = [f"{tmp}/busy" if arg == f"{tmp}/run" else arg for arg in fsdp_argv]
    jobs.append({"kind": "cli", "argv": busy, "exit_code": 2})  # its lock held by this process
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    with exclusive_lock(tmp / "busy"):
        output = torchrun(ROOT / "tests" / "distributed_worker.py", str(tmp / "jobs.json"),
                          cwd=tmp)  # fmt: skip
    return tmp, output


def _assert_same_run(got, want) -> None:
    (tensors, rows), (ref_tensors, ref_rows) = got, want
    assert tensors.keys() == ref_tensors.keys()
    for name, ref in ref_tensors.items():
        torch.testing.assert_close(tensors[name], ref, rtol=1e-5, atol=1e-6, msg=name)
    assert len(rows) == len(ref_rows) == 6  # 12 micro-batches, 2 per global batch
    for row, ref in zip(rows, ref_rows, strict=True):
        assert (row["step"], row["epoch"], row["tokens"]) == (ref["step"], ref["epoch"],
                                                              ref["tokens"])  # fmt: skip
        assert row["learning_rate"] == pytest.approx(ref["learning_rate"])
        assert row["loss"] == pytest.approx(ref["loss"], abs=2e-6)
        assert row["grad_norm"] == pytest.approx(ref["grad_norm"], abs=2e-6)


@pytest.mark.parametrize("method", ["loki_q10", "lora_r2"])
def test_two_processes_train_the_weights_and_log_of_one_with_twice_the_accumulation(
    launched, method
):
    ref = train_job({"method": method, "settings": ONE})
    tensors, rows = _saved(launched[0] / method)
    _assert_same_run((tensors, rows), ref)
    assert any(t.abs().sum() > 0 for n, t in tensors.items() if "lora_A" in n or "delta" in n)
    assert [r["epoch"] for r in rows] == [0, 0, 0, 1, 1, 1]  # global batches cross the epoch


@pytest.mark.parametrize("method", ["loki_q10", "full"])
def test_two_processes_with_the_chunked_loss_train_the_weights_of_one_with_the_plain_loss(
    launched, method
):
    ref_tensors, ref_rows = train_job({"method": method, "settings": ONE})  # the plain loss
    tensors, rows = _saved(launched[0] / f"{method}-chunked")
    assert tensors.keys() == ref_tensors.keys()
    for name, ref in ref_tensors.items():
        torch.testing.assert_close(tensors[name], ref, rtol=1e-5, atol=1e-6, msg=name)
    # relative: the chunks reorder float32 sums (full fine-tuning's grad_norm is ~7, so the
    # other tests' abs 2e-6 would be 3e-7 relative, float32's rounding; see test_train_loss)
    for row, ref in zip(rows, ref_rows, strict=True):
        assert row["tokens"] == ref["tokens"]
        assert row["loss"] == pytest.approx(ref["loss"], rel=1e-5)
        assert row["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5)


def test_a_run_killed_under_two_processes_resumes_under_one_to_the_same_weights(launched, caplog):
    uninterrupted = train_job({"method": "loki_lora_q10_r2", "settings": {**RESUMED, **ONE}})
    with caplog.at_level(logging.INFO, logger="loki_pipeline.train.checkpoint"):
        resumed = train_job({"method": "loki_lora_q10_r2", "settings": {**RESUMED, **ONE},
                             "checkpoint_dir": str(launched[0] / "killed-by-2")})  # fmt: skip
    assert "killed-by-2/last at step 2" in caplog.text  # resumed, not started over
    _assert_same_run(resumed, uninterrupted)


@pytest.mark.parametrize("method", ["loki_lora_q10_r2", "full"])
def test_a_run_killed_under_one_process_resumes_under_two_to_the_same_weights(launched, method):
    """Full fine-tuning resumes sharded by FSDP: each process loads its shard of the state."""
    tmp, output = launched
    uninterrupted = train_job({"method": method, "settings": {**RESUMED, **ONE}})
    assert f"{method}-killed-by-1/last at step 2" in output  # resumed, not started over
    _assert_same_run(_saved(tmp / f"{method}-resumed-by-2"), uninterrupted)


def test_the_checkpoint_fingerprint_has_the_global_batch_not_the_process_count():
    from loki_pipeline.train.trainer import _fingerprint

    def fingerprint(**settings):
        return _fingerprint(TrainSettings(**{"batch_size": 2, **settings}), {})

    same = fingerprint(grad_accum=4)
    assert fingerprint(grad_accum=2, processes=2) == same
    assert fingerprint(grad_accum=1, processes=4, distributed="fsdp") == same
    assert fingerprint(grad_accum=2) != same  # another global batch: other weights
    assert fingerprint(grad_accum=3) != fingerprint(grad_accum=1, processes=3, batch_size=3)


# --------------------------------------------------------------------------- loki train, FSDP
TRAINING = {"distributed": "fsdp", "save_every": 2, "max_steps": 3, "learning_rate": 1e-3,
            "gradient_checkpointing": True}  # fmt: skip


def _loki_train_fsdp(tmp: Path) -> list[str]:
    """`loki train` of full fine-tuning sharded by FSDP, on a tiny checkpoint."""
    build_tiny_model("llama").save_pretrained(tmp / "model")
    build_tiny_tokenizer().save_pretrained(tmp / "model")
    (tmp / "toolace.json").write_text(json.dumps(TOOLACE_ROWS * 2))
    (tmp / "config.json").write_text(json.dumps({"training": TRAINING}))
    return ["train", "--model", f"{tmp}/model", "--task", "toolace", "--data",
            f"{tmp}/toolace.json", "--method", "full", "--out", f"{tmp}/run", "--config",
            f"{tmp}/config.json", "--batch-size", "2", "--cutoff-len", "128", "--device", "cpu"]  # fmt: skip


def test_loki_train_under_torchrun_shards_full_fine_tuning_and_equals_one_process(launched):
    from loki_pipeline.train.run import run_training

    tmp, output = launched
    assert output.count("run written to") == 1  # rank 0 speaks for the run
    settings = TrainSettings(**{**TRAINING, "distributed": "ddp", "gradient_checkpointing": False},
                             batch_size=2, grad_accum=2, cutoff_len=128)  # fmt: skip
    run_training(tmp / "model", "toolace", tmp / "toolace.json", "full", tmp / "ref", settings,
                 progress=False)  # fmt: skip
    got, want = (
        load_file(tmp / "run/merged/model.safetensors"),
        load_file(tmp / "ref/merged/model.safetensors"),
    )
    assert got.keys() == want.keys()
    base = load_file(tmp / "model/model.safetensors")
    for name, ref in want.items():
        torch.testing.assert_close(got[name], ref, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(want[n], base[n]) for n in base)  # it did train
    rows, ref_rows = ([r for r in csv.DictReader((tmp / d / "train_log.csv").open())]
                      for d in ("run", "ref"))  # fmt: skip
    assert [(r["step"], r["tokens"]) for r in rows] == [(r["step"], r["tokens"]) for r in ref_rows]
    for row, ref in zip(rows, ref_rows, strict=True):
        assert float(row["loss"]) == pytest.approx(float(ref["loss"]), abs=2e-6)
    config = json.loads((tmp / "run/train_config.json").read_text())
    assert (config["settings"]["processes"], config["settings"]["distributed"]) == (2, "fsdp")
    assert config["settings"]["gradient_checkpointing"]
    assert not (tmp / ".checkpoints" / "run").exists()  # rank 0 cleaned up after itself


def test_a_run_in_use_elsewhere_stops_every_process_with_the_lock_message(launched):
    """Rank 0 alone takes the locks; the others learn it was refused and stop too."""
    tmp, output = launched
    assert output.count(f"{tmp}/busy: in use by another run (process {os.getpid()}") == 2
    assert not (tmp / "busy").exists()


# --------------------------------------------------------------------------- clear refusals
def test_fsdp_is_refused_for_methods_that_train_a_small_part(tmp_path, tiny_checkpoint):
    from loki_pipeline.train.run import run_training

    settings = TrainSettings(distributed="fsdp", max_steps=1)
    with pytest.raises(LokiInputError, match="fsdp' shards full fine-tuning only; lora_r2"):
        run_training(tiny_checkpoint, "toolace", None, "lora_r2", tmp_path / "o", settings)


def test_processes_need_a_gpu_each_not_one_named_gpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LokiInputError, match="'cuda:0' with 2 processes: every process"):
        distributed._rank_device("cuda:0")


def test_processes_without_torchrun_train_in_one_process_and_say_so(caplog):
    from loki_pipeline.train.run import _launched_settings

    with caplog.at_level(logging.WARNING):
        settings = _launched_settings(TrainSettings(processes=4, batch_size=2, grad_accum=3), 1)
    assert settings.processes == 1
    assert "processes=4, but 1 process(es) run: global batch 6 examples instead of 24" in (
        caplog.text
    )


def test_processes_resolve_per_task_and_method_like_any_training_setting():
    config = {"training": {"processes": 2, "methods": {"lora_*": {"processes": 4}}}}
    assert TrainSettings.from_config(config, "toolace", "lora_r16").processes == 4
    assert TrainSettings.from_config(config, "toolace", "loki_q10").processes == 2
    with pytest.raises(LokiInputError, match="processes"):
        TrainSettings.from_config({"training": {"processes": 0}}, "toolace", "full")
    with pytest.raises(LokiInputError, match="distributed"):
        TrainSettings.from_config({"training": {"distributed": "zero3"}}, "toolace", "full")
