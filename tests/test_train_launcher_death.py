"""Killing the torchrun launcher outright kills the training processes it started
(``launch.die_with_launcher``: a parent-death signal armed as each process joins the group)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loki_pipeline.train.launch import torchrun_command

ROOT = Path(__file__).resolve().parents[1]
WORKER = """
import os, sys, time
from loki_pipeline.train import distributed
with distributed.process_group("cpu"):
    open(os.path.join(sys.argv[1], f"{os.getpid()}.pid"), "w").close()
    time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has died; only its exit status is left


@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="PR_SET_PDEATHSIG is Linux's: on Linux, `pytest tests/test_train_launcher_death.py`",
)
def test_workers_die_with_a_killed_launcher(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    launcher = subprocess.Popen(
        torchrun_command(2, str(script), str(pids)),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while len(workers) < 2 and time.monotonic() < deadline and launcher.poll() is None:
            workers = [int(p.stem) for p in pids.glob("*.pid")]
            time.sleep(0.2)
        assert len(workers) == 2, f"workers did not start (launcher exit {launcher.poll()})"
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived their launcher"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
