"""One GPU per job: jobs that ask for 'cuda' or 'auto' claim different GPUs through lock files.

CUDA is faked (device count, UUIDs, free memory), so these run on any machine; the locks are
real ``flock`` locks, taken from this process and from a second one.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from loki_pipeline import devices
from loki_pipeline.devices import LOCK_DIR_ENV, claim_free, resolve_device
from loki_pipeline.errors import LokiInputError

IDS = ["gpu-a", "gpu-b", "gpu-c"]


def test_claims_go_to_free_gpus_and_come_back_when_released(tmp_path):
    first, second, third = (claim_free(IDS, tmp_path) for _ in range(3))
    assert [first[0], second[0], third[0]] == [0, 1, 2]
    assert claim_free(IDS, tmp_path) is None  # all held
    second[1].close()  # the job on GPU 1 ended
    again = claim_free(IDS, tmp_path)
    assert again is not None and again[0] == 1


def test_a_gpu_held_by_another_process_is_skipped(tmp_path):
    holder = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from loki_pipeline.devices import claim_free
        index, handle = claim_free({IDS!r}, Path({str(tmp_path)!r}))
        print(index, flush=True)
        sys.stdin.read()  # hold the lock until the test closes stdin
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "0"
        index, _handle = claim_free(IDS, tmp_path)
        assert index == 1
    finally:
        proc.communicate("", timeout=30)
    # The other process exited: its lock is gone with it.
    assert claim_free(IDS, tmp_path)[0] == 0


@pytest.fixture
def fake_cuda(monkeypatch, tmp_path):
    """Two fake GPUs with UUIDs, a private lock folder and no claim made yet."""
    gpus = SimpleNamespace(free=[10, 50])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=f"uuid-{i}")
    )
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (gpus.free[i], 100))
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(devices, "_claimed", {})
    gpus.lock_dir = tmp_path
    return gpus


def test_cuda_and_auto_claim_one_gpu_for_the_whole_process(fake_cuda):
    assert resolve_device("cuda") == "cuda:0"
    assert resolve_device("auto") == "cuda:0"  # the same job keeps its GPU
    assert (fake_cuda.lock_dir / "gpu-uuid-0.lock").exists()
    assert resolve_device("cuda:1") == "cuda:1"  # an explicit index is taken as given


def test_a_second_job_gets_the_next_gpu(fake_cuda, monkeypatch):
    other_job = claim_free(["gpu-uuid-0", "gpu-uuid-1"], fake_cuda.lock_dir)
    assert other_job[0] == 0
    assert resolve_device("auto") == "cuda:1"


def test_more_jobs_than_gpus_share_the_emptiest_with_a_warning(fake_cuda, caplog):
    held = [claim_free(["gpu-uuid-0", "gpu-uuid-1"], fake_cuda.lock_dir) for _ in range(2)]
    assert all(held)
    with caplog.at_level(logging.WARNING):
        assert resolve_device("cuda") == "cuda:1"  # 50 free against 10
    assert "every GPU is claimed" in caplog.text


def test_devices_that_do_not_exist_are_rejected(fake_cuda, monkeypatch):
    with pytest.raises(LokiInputError, match="2 GPU"):
        resolve_device("cuda:5")
    with pytest.raises(LokiInputError, match="expected 'cpu'"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LokiInputError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


def test_processes_of_a_data_parallel_job_each_claim_a_gpu_and_never_share(fake_cuda, monkeypatch):
    from loki_pipeline.train.distributed import _rank_device

    other_process = claim_free(["gpu-uuid-0", "gpu-uuid-1"], fake_cuda.lock_dir)
    assert other_process[0] == 0  # the job's first process holds GPU 0
    assert _rank_device("cuda") == "cuda:1"
    monkeypatch.setattr(devices, "_claimed", {})  # a third process: no GPU left
    with pytest.raises(LokiInputError, match="no free GPU: all 2 are claimed"):
        _rank_device("auto")
