"""KVA shards survive what real runs meet: a full disk, failing writes, and kills at any point.

Each test ends by resuming and comparing with an uninterrupted run, array for array.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_kva_storage import assert_same_file_contents, fill_leaving

from loki_pipeline.kva.runner import run_kva_shard
from loki_pipeline.kva.storage import ShardWriter, partial_path, stale_path

REPO = Path(__file__).resolve().parents[1]


def mini_mmlu(path: Path) -> Path:
    subjects = ["astronomy", "virology", "world_religions"]
    rows = [
        {"question": f"Toy question {i}?", "subject": s, "choices": list("abcd"), "answer": i % 4}
        for i, s in enumerate(subjects * 2)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow  # the CLI in a subprocess (to see its exit status) imports transformers: ~4 s
def test_kva_on_a_full_disk_exits_1_without_a_signal_and_resumes_once_space_is_freed(
    tiny_checkpoint, tmp_path, small_disk
):
    data = mini_mmlu(tmp_path / "mini.jsonl")
    disk = small_disk(1 << 20)
    fill_leaving(disk, 4096)  # room for the lock file only
    out = disk / "0.h5"
    argv = ["--model-dir", str(tiny_checkpoint), "--dataset", str(data), "--out", str(out)]
    argv += ["--steps", "2", "--device", "cpu"]
    proc = subprocess.run(
        [sys.executable, "-m", "loki_pipeline.cli", "kva", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # an error exit, not a signal (negative)
    assert f"{partial_path(out)}: could not write the output: No space left" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # nothing marked complete

    small_disk.grow(4 << 20)
    kw = dict(model_dir=tiny_checkpoint, dataset=str(data), steps=2, device="cpu")
    run_kva_shard(out_path=out, **kw)
    assert_same_file_contents(out, run_kva_shard(out_path=tmp_path / "full.h5", **kw))


LAYERS, NODES = 8, 512  # 16 KiB rows: writing one takes long enough to be killed half-way
META = {
    "model": "fake",
    "steps": 7,
    "method": "exact",
    "quadrature": "left",
    "dtype": "float32",
    "package_version": "0",
    "config_hash": "abc",
    "inputs": json.dumps({"model": "m"}),
    "num_layers": LAYERS,
    "d_model": NODES,
    "shard": 0,
    "num_shards": 1,
}


def fake_rows(n: int) -> list[dict]:
    """What a KVA producer would write, made up (no model): deterministic per row."""
    rng = np.random.default_rng(0)
    return [
        dict(
            attributions=rng.normal(size=(LAYERS, NODES)).astype(np.float32),
            subject="astronomy",
            question_id=f"astronomy/{i}",
            predicted_token=i,
            prompt_length=10 + i,
            probability=0.5,
            completeness_gap=i / 7,
        )
        for i in range(n)
    ]


def produce(out: Path, rows: list[dict]) -> None:
    """A shard run: resume the partial file, write the remaining rows, finish."""
    if out.exists():
        return
    writer = ShardWriter(out, META, expected_ids=[r["question_id"] for r in rows])
    for row in rows[writer.num_done :]:
        writer.append(**row)
    writer.finish()


def test_writer_killed_at_random_points_resumes_to_the_uninterrupted_file(tmp_path):
    rows = fake_rows(200)
    start = time.perf_counter()
    produce(tmp_path / "full.h5", rows)
    per_row = (time.perf_counter() - start) / len(rows)

    out, rng = tmp_path / "s.h5", random.Random(11)
    span, counts = 5 * per_row, [-1]  # -1: no partial file yet
    # up to 60 runs: on a loaded machine the first kills often land before the file exists
    while not out.exists() and len(counts) <= 60:
        pid = os.fork()
        if pid == 0:  # the child is the shard run, SIGKILLed whenever the delay ends
            code = 1
            try:
                produce(out, rows)
                code = 0
            finally:
                os._exit(code)
        time.sleep(rng.uniform(0, span))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) or os.WEXITSTATUS(status) == 0
        count = len(rows) if out.exists() else -1  # finished before the kill came
        if partial_path(out).exists():
            with h5py.File(partial_path(out), "r") as f:
                count = int(f.attrs["num_samples"])
        # Disk speed varies: aim at ~3 rows per run, so the kills spread over the whole file
        # (creation, start-up, mid-row, mid-flush) rather than finishing it in a few runs.
        progress = count - counts[-1]
        span *= 1.25 if progress <= 0 else min(1.25, max(0.3, 3 / progress))
        counts.append(count)
    killed = [c for c in counts[1:] if c < len(rows)]  # the runs that the kill interrupted
    assert len(killed) >= 20 and len(set(killed)) >= 8, counts  # killed at many points
    assert counts == sorted(counts), counts  # no kill lost a counted row
    produce(out, rows)
    assert not stale_path(out).exists()  # every killed file was resumed, none thrown aside
    assert not list(tmp_path.glob(".*.tmp"))  # creations killed half-way left nothing behind
    assert_same_file_contents(out, tmp_path / "full.h5")


FAILING_WRITER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[2])
    from test_kva_crash import META, fake_rows
    from loki_pipeline.errors import LokiWriteError
    from loki_pipeline.kva.storage import ShardWriter

    rows = fake_rows(6)
    writer = ShardWriter(sys.argv[1], META, expected_ids=[r["question_id"] for r in rows])
    for row in rows[:3]:
        writer.append(**row)
    # From now on every write of the file fails, as on a dying disk (EIO) or a full one.
    os.dup2(os.open(writer.path, os.O_RDONLY), writer.file.id.get_vfd_handle())
    try:
        writer.append(**rows[3])
    except LokiWriteError as err:
        print(err)
        sys.exit(3)
    """
)


def test_failing_write_mid_shard_is_a_clean_error_and_the_shard_resumes(tmp_path):
    out = tmp_path / "s.h5"
    proc = subprocess.run(
        [sys.executable, "-c", FAILING_WRITER, str(out), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr  # the error reached the caller; no segfault
    assert f"{partial_path(out)}: could not write the output" in proc.stdout
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    with h5py.File(partial_path(out), "r") as f:
        assert f.attrs["num_samples"] == 3 and not f.attrs["complete"]

    rows = fake_rows(6)
    writer = ShardWriter(out, META, expected_ids=[r["question_id"] for r in rows])
    assert writer.num_done == 3
    writer.close()
    produce(out, rows)
    produce(tmp_path / "full.h5", rows)
    assert_same_file_contents(out, tmp_path / "full.h5")
