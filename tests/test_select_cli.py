"""`loki select`: writes the same selection as the API, checks and converts selection files."""

from __future__ import annotations

import json

import numpy as np
from test_select import write_kva

from loki_pipeline.cli import main
from loki_pipeline.select import load_selection, select_nodes


def test_cli_writes_the_api_selection_with_metadata(tmp_path):
    a = np.random.default_rng(0).standard_normal((7, 3, 20)).astype(np.float32)
    kva = write_kva(tmp_path / "kva.h5", a)
    out = tmp_path / "global_low_q10.json"
    assert main(["select", "--kva", str(kva), "--q", "10", "--strategy", "global_low",
                 "--out", str(out)]) == 0  # fmt: skip
    doc = json.loads(out.read_text())
    assert doc["positions"] == select_nodes(a, 10, "global_low")
    assert (doc["model"], doc["strategy"], doc["q"], doc["num_samples"]) == (
        "tiny",
        "global_low",
        10,
        7,
    )


def test_cli_checks_an_upstream_file_against_a_model_and_converts_it(tmp_path, capsys):
    tiny_checkpoint = tmp_path / "model"  # only config.json is read: the shape to check against
    tiny_checkpoint.mkdir()
    config = {"model_type": "llama", "num_hidden_layers": 3, "hidden_size": 32}
    (tiny_checkpoint / "config.json").write_text(json.dumps(config))
    upstream = tmp_path / "10.json"
    upstream.write_text(json.dumps([[5, 1, 3], [0, 31, 2], [7, 8, 9]]))  # 3 layers, d_model 32
    out = tmp_path / "converted.json"
    args = ["select", "--check", str(upstream), "--model", str(tiny_checkpoint), "--q", "10"]
    assert main([*args, "--out", str(out)]) == 0
    assert "valid; 3 layers, 9 nodes" in capsys.readouterr().out
    assert load_selection(out, num_layers=3, nodes_per_layer=32)[0] == [1, 3, 5]
    assert json.loads(out.read_text())["nodes_per_layer"] == 32

    upstream.write_text(json.dumps([[5], [32], [1]]))
    assert main(["select", "--check", str(upstream), "--model", str(tiny_checkpoint)]) == 2
    assert "layer 1 node 32 is outside [0, 32)" in capsys.readouterr().err


def test_cli_rejects_bad_q_and_strategy_before_reading(tmp_path, capsys):
    base = ["select", "--kva", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "o.json")]
    assert main([*base, "--q", "100"]) == 2
    assert "open interval (0, 100)" in capsys.readouterr().err
    assert main([*base, "--q", "10", "--strategy", "top"]) == 2
    assert "unknown selection strategy 'top'" in capsys.readouterr().err
