"""One strict selection reader: ``select --check``, ``train`` and ``suppress`` accept and refuse
the same files, with the same message naming the file, the layer and the offending value."""

from __future__ import annotations

import json

import pytest
from conftest import build_tiny_model, build_tiny_tokenizer

from loki_pipeline.cli import main
from loki_pipeline.errors import LokiInputError
from loki_pipeline.implant.suppress import suppress_checkpoint
from loki_pipeline.select.selection_file import (
    Selection,
    check_fits_checkpoint,
    checkpoint_shape,
    read_selection_file,
)
from loki_pipeline.train.run import run_training
from loki_pipeline.train.settings import TrainSettings

LAYERS, D_MODEL = 3, 32  # the tiny Llama of conftest


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "tiny-llama"
    build_tiny_model("llama").save_pretrained(out, safe_serialization=True)
    build_tiny_tokenizer().save_pretrained(out)
    return out


# (file content, what the message must say besides the file name)
BAD = {
    "duplicate": ([[1, 1], [0], [2]], "layer 0 repeats node(s) [1]"),
    "float": ([[0], [8.7], [2]], "layer 1 holds 8.7 (a float); node indices must be integers"),
    "integral float": ([[0], [8.0], [2]], "layer 1 holds 8.0 (a float)"),
    "string": ([[0], ["8"], [2]], "layer 1 holds '8' (a string)"),
    "boolean": ([[0], [True], [2]], "layer 1 holds True (a boolean)"),
    "null": ([[0], [None], [2]], "layer 1 holds None (null)"),
    "negative": ([[0], [-1], [2]], "layer 1 node -1 is outside [0, d_model)"),
    "beyond d_model": ([[0], [D_MODEL], [2]], f"layer 1 node {D_MODEL} is outside [0, {D_MODEL})"),
    "beyond recorded width": (
        {"nodes_per_layer": D_MODEL, "positions": [[0], [40], [2]]},
        "layer 1 node 40 is outside [0, 32)",
    ),
    "number as layer": ([[0], 3, [2]], "layer 1 is not a list of node indices (got 3)"),
    "object as layer": ({"positions": [[0], {"8": 1}, [2]]}, "layer 1 is not a list"),
    "flat list": ([0, 1, 2], "layer 0 is not a list of node indices (got 0)"),
    "positions not a list": ({"positions": {"0": [1]}}, "'positions' must be a list"),
    "no positions": ({"model": "m"}, "expected a selection object with 'positions'"),
    "layer count": ([[0]] * 4, "has 4 layer lists but model"),
    "recorded layer count": ({"num_layers": 4, "positions": [[0], [1], [2]]}, "num_layers=4"),
    "string layer count": ({"num_layers": "3", "positions": [[0], [1], [2]]}, "num_layers is '3'"),
    "boolean width": ({"nodes_per_layer": True, "positions": [[0]] * 3}, "nodes_per_layer is True"),
    "other width": (
        {"model": "big", "nodes_per_layer": 64, "positions": [[0], [1], [2]]},
        "records nodes_per_layer=64 (made for 'big') but model",
    ),
    "string q": ({"q": "10", "positions": [[0], [1], [2]]}, "q is '10', expected a number"),
    "empty": ([[], [], []], "selects no nodes at all"),
}


def _message_of(call) -> str:
    with pytest.raises(LokiInputError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize("case", BAD)
def test_train_suppress_and_select_check_refuse_identically(tmp_path, checkpoint, capsys, case):
    content, expected = BAD[case]
    path = tmp_path / "sel.json"
    path.write_text(json.dumps(content))
    settings = TrainSettings(max_steps=1)
    via_train = _message_of(
        lambda: run_training(
            checkpoint,
            "toolace",
            None,
            "loki_q10",
            tmp_path / "run",
            settings,
            selection_path=path,
            progress=False,
        )  # fmt: skip
    )
    via_suppress = _message_of(lambda: suppress_checkpoint(checkpoint, path, tmp_path / "sup"))
    capsys.readouterr()
    assert main(["select", "--check", str(path), "--model", str(checkpoint)]) == 2
    via_select = capsys.readouterr().err.strip().removeprefix("loki select: error: ")
    assert via_train == via_suppress == via_select
    assert via_train.startswith(f"{path}: ") and expected in via_train, via_train
    assert not (tmp_path / "run").exists() and not (tmp_path / "sup").exists()


def test_both_formats_load_the_same_selection(tmp_path, checkpoint, capsys):
    upstream, pipeline = tmp_path / "10.json", tmp_path / "layer_balanced_low_q10.json"
    upstream.write_text(json.dumps([[5, 1], [0, 31], [7]]))
    pipeline.write_text(
        json.dumps({"model": "tiny", "strategy": "layer_balanced_low", "q": 10, "num_layers": 3,
                    "nodes_per_layer": D_MODEL, "num_samples": 4,
                    "positions": [[1, 5], [0, 31], [7]]})
    )  # fmt: skip
    for path in (upstream, pipeline):
        selection = read_selection_file(path)
        assert isinstance(selection, Selection) and selection.positions == [[1, 5], [0, 31], [7]]
        check_fits_checkpoint(selection, checkpoint)
        assert main(["select", "--check", str(path), "--model", str(checkpoint)]) == 0
    assert "valid; 3 layers, 5 nodes" in capsys.readouterr().out
    meta = read_selection_file(pipeline)
    assert (meta.strategy, meta.q, meta.nodes_per_layer, meta.extra) == (
        "layer_balanced_low",
        10,
        D_MODEL,
        {"num_samples": 4},
    )
    assert read_selection_file(upstream).q is None and read_selection_file(upstream).extra == {}


def _config_dir(tmp_path, config) -> str:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def test_multimodal_config_is_read_from_text_config(tmp_path, capsys):
    nested = {
        "model_type": "mistral3",
        "text_config": {"model_type": "mistral", "num_hidden_layers": 3, "hidden_size": 32},
        "vision_config": {"num_hidden_layers": 24, "hidden_size": 1024},
    }
    model = _config_dir(tmp_path, nested)
    assert checkpoint_shape(model) == (3, 32)
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps([[0], [1], [31]]))
    check_fits_checkpoint(read_selection_file(sel), model)
    assert main(["select", "--check", str(sel), "--model", model]) == 0
    sel.write_text(json.dumps([[0]] * 24))  # the vision tower's layer count is not the LM's
    with pytest.raises(LokiInputError, match="has 24 layer lists but model .* has 3 layers"):
        check_fits_checkpoint(read_selection_file(sel), model)
    # the top level wins when it has the key
    assert checkpoint_shape(_config_dir(tmp_path, {**nested, "hidden_size": 64})) == (3, 64)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "llama", "hidden_size": 32}, "no num_hidden_layers .* text_config"),
        ({"num_hidden_layers": 3, "hidden_size": "32"}, "hidden_size is '32', expected a pos"),
        ({"text_config": {"num_hidden_layers": 2.0, "hidden_size": 8}}, "text_config.num_hid"),
        ([3, 32], "expected a JSON object"),
    ],
)
def test_bad_model_config_is_refused(tmp_path, config, message):
    with pytest.raises(LokiInputError, match=message):
        checkpoint_shape(_config_dir(tmp_path, config))


def test_an_upstream_selection_file_is_imported_as_the_pipelines_own(tmp_path, checkpoint):
    import hashlib

    from loki_pipeline.select.selection_file import import_selection

    upstream = tmp_path / "pos_q10.json"  # upstream LoKI's published format: lists per layer
    upstream.write_text(json.dumps([[5, 1], [0, 31], [7]]))
    out = tmp_path / "layer_balanced_low_q10.json"
    import_selection(upstream, out, checkpoint, model="tiny", strategy="layer_balanced_low", q=10)
    doc = json.loads(out.read_text())
    assert doc["positions"] == [[1, 5], [0, 31], [7]]  # sorted, the same nodes
    assert (doc["model"], doc["strategy"], doc["q"], doc["num_layers"]) == (
        "tiny", "layer_balanced_low", 10, 3
    )  # fmt: skip
    assert doc["nodes_per_layer"] == D_MODEL and doc["imported_from"] == str(upstream)
    assert doc["source_sha256"] == hashlib.sha256(upstream.read_bytes()).hexdigest()
    assert read_selection_file(out).positions == [[1, 5], [0, 31], [7]]
    upstream.write_text(json.dumps([[5, 1], [0, 31]]))  # another model's: 2 layers
    with pytest.raises(LokiInputError, match="has 2 layer lists but model .* has 3 layers"):
        import_selection(upstream, out, checkpoint, model="tiny", strategy="global_low", q=10)
