"""Training jobs for tests/test_train_distributed.py, run by torchrun (each process its share).

``python -m torch.distributed.run --nproc-per-node N tests/distributed_worker.py JOBS.json``
runs the jobs in order, in one launch (starting processes is most of the time): ``train``
jobs through the trainer, rank 0 saving what each trained; ``cli`` jobs through ``loki``'s
``main``, as ``torchrun -m loki_pipeline.cli`` runs it (with the exit code they expect). The tests import :func:`train_job`
too, so the one-process reference runs the very same code.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from conftest import build_tiny_model
from test_train import positions, synthetic_examples

from loki_pipeline.train import distributed, parse_method
from loki_pipeline.train.settings import TrainSettings
from loki_pipeline.train.trainer import enable_gradient_checkpointing, prepare_model, train_model


class Killed(Exception):
    """Stands for a kill right after step ``stop_at`` (its checkpoint is on disk)."""


def train_job(job: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Train a tiny Llama on 11 synthetic examples: (trained tensors, log rows)."""
    settings = TrainSettings(**job["settings"])
    model = prepare_model(
        build_tiny_model("llama"), parse_method(job["method"]), settings, selection=positions()
    )
    if settings.gradient_checkpointing:  # as train.run does
        enable_gradient_checkpointing(model)

    def on_step(step: int, row: dict) -> None:
        if step == job.get("stop_at"):
            raise Killed

    rows = train_model(
        model,
        synthetic_examples(11),
        settings,
        checkpoint_dir=job.get("checkpoint_dir"),
        on_step=on_step,
        progress=False,
    )
    trained = {  # FSDP shards gathered (every rank takes part)
        n: distributed.full_tensor(p.detach()).clone()
        for n, p in model.named_parameters()
        if p.requires_grad
    }
    return trained, rows


def main(spec_path: str) -> None:
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)  # the tests read "resumed from ..." in the output
    jobs = json.loads(Path(spec_path).read_text())
    with distributed.process_group("cpu") as world:
        for job in jobs:
            if job["kind"] == "cli":
                from loki_pipeline.cli import main as loki

                assert loki(job["argv"]) == job.get("exit_code", 0)
                continue
            try:
                trained, rows = train_job(job)
            except Killed:
                continue
            if world.main:
                save_file(trained, f"{job['out']}.safetensors")
                Path(f"{job['out']}.json").write_text(json.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1])
