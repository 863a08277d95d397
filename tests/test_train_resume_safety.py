"""Training's resumable state is safe to load and never mixes runs.

A checkpoint is safetensors + JSON (a planted pickle is never opened); a corrupt or truncated
one is set aside with a log line; one made from other inputs (new weights, new data) restarts
training; a full disk ends ``loki train`` with a clear error and the same command resumes once
space is freed; a second run on the same output is refused; clean-up deletes only what the
trainer wrote.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_train import TOOLACE_ROWS, _trained

from loki_pipeline.cli import main
from loki_pipeline.train import checkpoint, trainer
from loki_pipeline.train.run import run_training
from loki_pipeline.train.settings import TrainSettings

LOGGER = checkpoint.__name__  # resuming and setting aside are the checkpoint module's


def _assert_same_trainable(a, b) -> None:
    a = {n: p for n, p in a.named_parameters() if p.requires_grad}
    b = {n: p for n, p in b.named_parameters() if p.requires_grad}
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)


class _Planted:
    """Unpickling this creates ``marker`` (stands for any code a hostile pickle would run)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickle_checkpoint_is_never_loaded(tmp_path, caplog):
    marker = tmp_path / "code-ran"
    (tmp_path / "b").mkdir()
    torch.save({"fingerprint": None, "step": 3, "x": _Planted(str(marker))}, tmp_path / "b/last.pt")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model, rows = _trained(tmp_path, ckpt="b")
    assert not marker.exists()
    assert "never loaded" in caplog.text and "resumed" not in caplog.text
    straight, straight_rows = _trained(tmp_path, ckpt="a")
    assert [r["loss"] for r in rows] == [r["loss"] for r in straight_rows]  # from step 0
    _assert_same_trainable(model, straight)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: _truncate(d / checkpoint.TENSORS_FILE),
        lambda d: _flip_last_byte(d / checkpoint.TENSORS_FILE),
        lambda d: (d / checkpoint.TENSORS_FILE).unlink(),
        lambda d: _truncate(d / checkpoint.STATE_FILE),
        lambda d: (d / checkpoint.STATE_FILE).write_text('["not", "a", "checkpoint"]'),
    ],
    ids=["tensors-truncated", "tensors-bit-flip", "tensors-missing", "json-truncated", "json"],
)
def test_damaged_checkpoint_restarts_from_step_0_with_a_log_line(tmp_path, caplog, damage):
    straight, rows = _trained(tmp_path, ckpt="a")
    with pytest.raises(KeyboardInterrupt):
        _trained(tmp_path, stop_at=3, ckpt="b")  # last checkpoint at step 2
    last = tmp_path / "b" / checkpoint.CHECKPOINT_NAME
    assert json.loads((last / checkpoint.STATE_FILE).read_text())["step"] == 2
    damage(last)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        restarted, restarted_rows = _trained(tmp_path, ckpt="b")
    assert "is unusable" in caplog.text and "starts over from step 0" in caplog.text
    assert "resumed" not in caplog.text
    assert [r["loss"] for r in restarted_rows] == [r["loss"] for r in rows]
    _assert_same_trainable(restarted, straight)


# --------------------------------------------------------------------------- whole runs
def _data(tmp_path, rows=TOOLACE_ROWS):
    path = tmp_path / "toolace.json"
    path.write_text(json.dumps(rows))
    return path


def _settings() -> TrainSettings:
    return TrainSettings(
        learning_rate=1e-2, max_steps=4, batch_size=2, cutoff_len=128, save_every=1
    )


def _killed_after(monkeypatch, step: int) -> None:
    original = trainer.train_model

    def killed(*args, **kwargs):
        def on_step(s, row):
            if s == step:
                raise KeyboardInterrupt

        return original(*args, **{**kwargs, "on_step": on_step})

    monkeypatch.setattr(trainer, "train_model", killed)


def _merged(run) -> dict[str, torch.Tensor]:
    return load_file(run / "merged" / "model.safetensors")


def _assert_same_merged(a, b) -> None:
    wa, wb = _merged(a), _merged(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def _change_weights(tmp_path, model_dir) -> None:
    weights = model_dir / "model.safetensors"
    tensors = load_file(weights)
    tensors = {k: v + 0.01 if k.endswith("mlp.up_proj.weight") else v for k, v in tensors.items()}
    save_file(tensors, weights, metadata={"format": "pt"})


def _change_data(tmp_path, model_dir) -> None:
    rows = json.loads(json.dumps(TOOLACE_ROWS))
    for row in rows:
        row["conversations"][1]["value"] = row["conversations"][1]["value"].replace("C", "Town ")
    _data(tmp_path, rows)


@pytest.mark.parametrize(
    "change,named",
    [(_change_weights, "model"), (_change_data, "data, examples")],
    ids=["weights", "data"],
)
def test_changed_inputs_restart_training_instead_of_resuming(
    tmp_path, tiny_checkpoint, monkeypatch, caplog, change, named
):
    data = _data(tmp_path)
    with monkeypatch.context() as patch:
        _killed_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            run_training(tiny_checkpoint, "toolace", data, "lora_r2", tmp_path / "run", _settings())
    assert any((tmp_path / ".checkpoints/run").iterdir())  # a checkpoint of step 2
    change(tmp_path, tiny_checkpoint)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run = run_training(
            tiny_checkpoint,
            "toolace",
            data,
            "lora_r2",
            tmp_path / "run",
            _settings(),
            progress=False,
        )
    fresh = run_training(
        tiny_checkpoint, "toolace", data, "lora_r2", tmp_path / "fresh", _settings(), progress=False
    )
    _assert_same_merged(run, fresh)
    assert f"other inputs (changed: {named})" in caplog.text and "resumed" not in caplog.text


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(
    tmp_path, tiny_checkpoint, monkeypatch, capsys
):
    data = _data(tmp_path)
    args = ["train", "--model", str(tiny_checkpoint), "--task", "toolace", "--data", str(data)]
    args += ["--method", "lora_r2", "--out", str(tmp_path / "run"), "--max-steps", "2"]
    second: list[int] = []
    called: list[bool] = []
    original = trainer.train_model

    errors: list[str] = []

    def first_run(*a, **kw):
        def on_step(step, row):
            if step == 1 and not called:
                called.append(True)
                ckpt = sorted(p.name for p in (tmp_path / ".checkpoints/run").rglob("*"))
                # the second run is another process (locks are re-entrant within one)
                proc = subprocess.run(
                    [sys.executable, "-m", "loki_pipeline.cli", *args],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                second.append(proc.returncode)
                errors.append(proc.stderr)
                assert sorted(p.name for p in (tmp_path / ".checkpoints/run").rglob("*")) == ckpt

        return original(*a, **{**kw, "on_step": on_step})

    monkeypatch.setattr(trainer, "train_model", first_run)
    run_training(tiny_checkpoint, "toolace", data, "lora_r2", tmp_path / "run", _settings())
    err = errors[0]
    assert second == [2] and "in use by another run" in err and "Traceback" not in err
    assert (tmp_path / "run" / "merged" / "model.safetensors").is_file()


def _cli(model_dir, data, out) -> list[str]:
    return [
        "train",
        "--model",
        str(model_dir),
        "--task",
        "toolace",
        "--data",
        str(data),
        "--method",
        "lora_r2",
        "--out",
        str(out),
        "--max-steps",
        "4",
        "--batch-size",
        "2",
        "--cutoff-len",
        "128",
        "--lr",
        "1e-2",
        "--save-every",
        "1",
    ]


def _assert_clean_failure(capsys, rc: int, disk) -> None:
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "No space left on device" in err and "nothing was marked finished" in err
    assert "Traceback" not in err
    assert not (disk / "run").exists()
    leftovers = [p.name for p in disk.rglob("*") if p.name.endswith((".tmp", ".old"))]
    assert leftovers == []


def test_full_disk_at_the_final_write_fails_cleanly_then_resumes(
    tmp_path, tiny_checkpoint, small_disk, capsys, caplog
):
    data = _data(tmp_path)
    assert main(_cli(tiny_checkpoint, data, tmp_path / "reference")) == 0
    disk = small_disk(200_000)  # room for the checkpoints (~65 kB), not for the run (~275 kB)
    _assert_clean_failure(capsys, main(_cli(tiny_checkpoint, data, disk / "run")), disk)
    state = disk / ".checkpoints/run" / checkpoint.CHECKPOINT_NAME / checkpoint.STATE_FILE
    assert json.loads(state.read_text())["step"] == 4
    small_disk.grow(4_000_000)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert main(_cli(tiny_checkpoint, data, disk / "run")) == 0
    assert "at step 4" in caplog.text
    _assert_same_merged(disk / "run", tmp_path / "reference")
    assert not (disk / ".checkpoints/run").exists()


def test_full_disk_during_training_keeps_the_last_checkpoint_then_resumes(
    tmp_path, tiny_checkpoint, small_disk, monkeypatch, capsys, caplog
):
    data = _data(tmp_path)
    assert main(_cli(tiny_checkpoint, data, tmp_path / "reference")) == 0
    disk = small_disk(4_000_000)
    original = trainer.train_model

    def disk_fills_after_step_2(*args, **kwargs):
        def on_step(step, row):
            if step == 2:
                try:
                    with open(disk / "filler", "wb") as fh:
                        while True:
                            fh.write(b"\0" * 4096)
                            fh.flush()
                except OSError:
                    pass  # full: the checkpoint of step 3 will not fit

        return original(*args, **{**kwargs, "on_step": on_step})

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "train_model", disk_fills_after_step_2)
        rc = main(_cli(tiny_checkpoint, data, disk / "run"))
    _assert_clean_failure(capsys, rc, disk)
    last = disk / ".checkpoints/run" / checkpoint.CHECKPOINT_NAME
    assert json.loads((last / checkpoint.STATE_FILE).read_text())["step"] == 2
    (disk / "filler").unlink()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert main(_cli(tiny_checkpoint, data, disk / "run")) == 0
    assert "at step 2" in caplog.text
    _assert_same_merged(disk / "run", tmp_path / "reference")


def test_clean_up_removes_only_what_the_trainer_wrote(tmp_path, tiny_checkpoint):
    ckpt = tmp_path / "mine"
    ckpt.mkdir()
    (ckpt / "notes.txt").write_text("not the trainer's")
    run_training(
        tiny_checkpoint,
        "toolace",
        _data(tmp_path),
        "lora_r2",
        tmp_path / "run",
        _settings(),
        checkpoint_dir=ckpt,
        progress=False,
    )
    assert sorted(p.name for p in ckpt.iterdir()) == ["notes.txt"]
