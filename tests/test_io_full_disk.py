"""Selection, merge and suppress outputs on a full disk (a real ENOSPC on a small tmpfs).

Each command must end with exit code 1 and one line naming the output (no traceback), leave
nothing that looks finished, and succeed once space is freed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_select import write_kva
from transformers import AutoModelForCausalLM

from loki_pipeline.cli import main
from loki_pipeline.implant import apply_loki, save_loki_adapter
from loki_pipeline.select import load_selection

SMALL, ROOMY = 32 << 10, 8 << 20  # the tiny checkpoint is ~250 KB


def _assert_failed_cleanly(rc: int, err: str, out, disk) -> None:
    assert rc == 1, err
    assert f"{out}: could not write the output: No space left on device" in err
    assert "Traceback" not in err
    assert not out.exists() and os.listdir(disk) == []  # no temporary left behind either


@pytest.fixture
def kva(tmp_path):
    # 3 layers x 4000 nodes at q=50: a ~30 KB selection file
    a = np.random.default_rng(0).standard_normal((4, 3, 4000)).astype(np.float32)
    return write_kva(tmp_path / "kva.h5", a)


def test_select_on_full_disk(small_disk, kva, capsys):
    disk = small_disk(8 << 10)
    out = disk / "layer_balanced_low_q50.json"
    args = ["select", "--kva", str(kva), "--q", "50", "--output", str(out)]
    _assert_failed_cleanly(main(args), capsys.readouterr().err, out, disk)
    small_disk.grow(ROOMY)
    assert main(args) == 0
    assert sum(map(len, load_selection(out, num_layers=3, nodes_per_layer=4000))) == 6000


def test_select_on_full_disk_exits_1_in_a_subprocess(small_disk, kva):
    disk = small_disk(8 << 10)
    out = disk / "sel.json"
    cmd = [sys.executable, "-m", "loki_pipeline.cli", "select", "--kva", str(kva), "--q", "50",
           "--output", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    _assert_failed_cleanly(proc.returncode, proc.stderr, out, disk)
    small_disk.grow(ROOMY)
    assert subprocess.run(cmd, capture_output=True, timeout=120).returncode == 0
    assert json.loads(out.read_text())["q"] == 50


def test_merge_on_full_disk(small_disk, tmp_path, tiny_checkpoint, capsys):
    model = apply_loki(AutoModelForCausalLM.from_pretrained(tiny_checkpoint), [[0], [1], [2]])
    save_loki_adapter(model, tmp_path / "adapter", base_model=str(tiny_checkpoint))
    disk = small_disk(SMALL)
    out = disk / "merged"
    args = ["merge", "--model", str(tiny_checkpoint), "--adapter", str(tmp_path / "adapter"),
            "--out", str(out)]  # fmt: skip
    _assert_failed_cleanly(main(args), capsys.readouterr().err, out, disk)
    small_disk.grow(ROOMY)
    assert main(args) == 0
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 3


def test_suppress_on_full_disk(small_disk, tmp_path, tiny_checkpoint, capsys):
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps([[0, 1], [2], [3]]))
    disk = small_disk(SMALL)
    out = disk / "suppressed"
    args = ["suppress", "--model", str(tiny_checkpoint), "--selection", str(sel),
            "--out", str(out)]  # fmt: skip
    _assert_failed_cleanly(main(args), capsys.readouterr().err, out, disk)
    small_disk.grow(ROOMY)
    assert main(args) == 0
    weight = AutoModelForCausalLM.from_pretrained(out).model.layers[0].mlp.down_proj.weight
    assert torch.count_nonzero(weight[[0, 1]]) == 0
