"""The HDF5 shard writer resumes, refuses other runs' files, and gather restores the order."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from loki_pipeline.errors import LokiInputError
from loki_pipeline.kva.storage import (
    SAMPLE_FIELDS,
    ShardWriter,
    gather_shards,
    load_kva,
    partial_path,
)

LAYERS, NODES = 3, 4


def meta(**changes):
    base = {
        "model": "tiny",
        "steps": 7,
        "method": "exact",
        "quadrature": "left",
        "dtype": "float32",
        "package_version": "0.1.0",
        "config_hash": "abc",
        "num_layers": LAYERS,
        "d_model": NODES,
        "shard": 0,
        "num_shards": 1,
    }
    return {**base, **changes}


def sample(i: int) -> dict:
    rng = np.random.default_rng(i)
    return dict(
        attributions=rng.normal(size=(LAYERS, NODES)).astype(np.float32),
        subject="astronomy",
        question_id=f"q{i}",
        predicted_token=100 + i,
        prompt_length=20 + i,
        probability=0.5 + i / 100,
        completeness_gap=i / 1000,
    )


def write(out: Path, indices, m=None, finish=True, expected=None) -> ShardWriter:
    writer = ShardWriter(out, m or meta(), expected_ids=expected)
    for i in indices:
        writer.append(**sample(i))
    if finish:
        writer.finish()
    else:
        writer.close()
    return writer


def contents(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        data = {name: f[name][()] for name in f}
        data["attrs"] = {k: f.attrs[k] for k in f.attrs}
    return data


def assert_same_file_contents(a: Path, b: Path) -> None:
    ca, cb = contents(a), contents(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        if key == "attrs":
            assert ca[key].keys() == cb[key].keys()
            for k in ca[key]:
                assert ca[key][k] == cb[key][k], k
        else:
            np.testing.assert_array_equal(ca[key], cb[key])


def test_killed_shard_resumes_and_ends_identical_to_uninterrupted_run(tmp_path):
    ids = [f"q{i}" for i in range(5)]
    write(tmp_path / "full.h5", range(5), expected=ids)

    out = tmp_path / "resumed.h5"
    write(out, range(2), finish=False, expected=ids)  # "killed" after 2 samples
    assert not out.exists() and partial_path(out).exists()
    writer = ShardWriter(out, meta(), expected_ids=ids)
    assert writer.num_done == 2
    for i in range(writer.num_done, 5):
        writer.append(**sample(i))
    writer.finish()
    assert not partial_path(out).exists()
    assert_same_file_contents(out, tmp_path / "full.h5")


def test_sample_written_but_not_counted_is_dropped_on_resume(tmp_path):
    out = tmp_path / "s.h5"
    write(out, range(2), finish=False)
    # Simulate death between writing sample 2's datasets and counting it.
    with h5py.File(partial_path(out), "a") as f:
        for name in ("attributions", *SAMPLE_FIELDS):
            f[name].resize(3, axis=0)
    writer = ShardWriter(out, meta())
    assert writer.num_done == 2
    writer.append(**sample(2))
    writer.finish()
    data = load_kva(out)
    assert data.question_id == ["q0", "q1", "q2"]
    np.testing.assert_array_equal(data.attributions[2], sample(2)["attributions"])


@pytest.mark.parametrize(
    "change", [{"model": "other-model"}, {"steps": 3}, {"quadrature": "midpoint"}]
)
def test_partial_shard_from_another_run_is_refused_and_kept(tmp_path, change):
    out = tmp_path / "s.h5"
    write(out, range(2), finish=False)
    key = next(iter(change))
    with pytest.raises(LokiInputError, match=rf"{partial_path(out).name}.*{key}"):
        ShardWriter(out, meta(**change))
    assert partial_path(out).exists()  # nothing computed is lost
    assert ShardWriter(out, meta()).num_done == 2


def test_partial_shard_of_a_changed_dataset_is_refused(tmp_path):
    out = tmp_path / "s.h5"
    write(out, range(2), finish=False)
    with pytest.raises(LokiInputError, match="dataset changed"):
        ShardWriter(out, meta(), expected_ids=["q0", "other", "q2"])


def test_file_attrs_and_per_sample_fields_follow_the_contract(tmp_path):
    out = tmp_path / "s.h5"
    write(out, range(3))
    with h5py.File(out, "r") as f:
        assert f["attributions"].dtype == np.float32
        assert f["attributions"].shape == (3, LAYERS, NODES)
        assert f["predicted_token"].dtype == np.int64
        assert f["prompt_length"].dtype == np.int64
        assert f["probability"].dtype == np.float32
        assert f["completeness_gap"].dtype == np.float32
        assert f["subject"][0].decode() == "astronomy"
        for key in (
            "model",
            "steps",
            "method",
            "quadrature",
            "dtype",
            "package_version",
            "config_hash",
            "num_layers",
            "d_model",
        ):
            assert key in f.attrs
        assert f.attrs["num_samples"] == 3 and bool(f.attrs["complete"])


def test_gather_restores_round_robin_order_and_keeps_metadata(tmp_path):
    total, shards = 7, 3
    paths = []
    for s in range(shards):
        path = tmp_path / f"{s}.h5"
        write(path, range(s, total, shards), m=meta(shard=s, num_shards=shards))
        paths.append(path)
    out = tmp_path / "kva.h5"
    gather_shards(list(reversed(paths)), out)
    data = load_kva(out)
    assert data.question_id == [f"q{i}" for i in range(total)]
    for i in range(total):
        np.testing.assert_array_equal(data.attributions[i], sample(i)["attributions"])
        assert data.predicted_token[i] == 100 + i
    assert data.attrs["num_samples"] == total and data.attrs["complete"]
    assert data.attrs["model"] == "tiny" and data.attrs["steps"] == 7
    assert "shard" not in data.attrs


def test_gather_refuses_disagreeing_missing_or_unfinished_shards(tmp_path):
    write(tmp_path / "0.h5", [0, 2], m=meta(shard=0, num_shards=2))
    write(tmp_path / "1.h5", [1], m=meta(shard=1, num_shards=2, steps=3))
    with pytest.raises(LokiInputError, match="steps"):
        gather_shards([tmp_path / "0.h5", tmp_path / "1.h5"], tmp_path / "kva.h5")
    with pytest.raises(LokiInputError, match="expected all of 0..1"):
        gather_shards([tmp_path / "0.h5"], tmp_path / "kva.h5")
    write(tmp_path / "x.h5", [1], m=meta(shard=1, num_shards=2), finish=False)
    with pytest.raises(LokiInputError, match="no such KVA shard"):
        gather_shards([tmp_path / "0.h5", tmp_path / "x.h5"], tmp_path / "kva.h5")
    partial_path(tmp_path / "x.h5").rename(tmp_path / "x.h5")  # an unfinished file, renamed
    with pytest.raises(LokiInputError, match="not complete"):
        gather_shards([tmp_path / "0.h5", tmp_path / "x.h5"], tmp_path / "kva.h5")
    assert not (tmp_path / "kva.h5").exists()
