"""The HDF5 shard writer resumes, restarts on other inputs, and gather restores the order."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from loki_pipeline import cli
from loki_pipeline.errors import LokiBusyError, LokiInputError, LokiWriteError
from loki_pipeline.kva.storage import (
    CHECKSUM,
    SAMPLE_FIELDS,
    ShardWriter,
    check_finished,
    gather_shards,
    load_kva,
    partial_path,
    row_crc32,
    stale_path,
    verify_kva_file,
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


def write(out: Path, indices, m=None, finish=True, expected=None, num_rows=None) -> ShardWriter:
    indices = list(indices)
    num_rows = num_rows if num_rows is not None or expected else len(indices)
    writer = ShardWriter(out, m or meta(), expected_ids=expected, num_rows=num_rows)
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


def raw_write_row(path: Path, k: int, row: dict) -> None:
    """Write row ``k`` of every dataset behind the writer's back, without counting it."""
    with h5py.File(path, "a") as f:
        f["attributions"][k] = row["attributions"]
        f[CHECKSUM][k] = row_crc32(row["attributions"][None])[0]
        for name in SAMPLE_FIELDS:
            value = row[name]
            f[name][k] = value.encode() if isinstance(value, str) else value


def test_sample_written_but_not_counted_is_dropped_on_resume(tmp_path, caplog):
    out = tmp_path / "s.h5"
    write(out, range(2), finish=False, num_rows=4)
    # Death between writing sample 2's datasets and counting it: the row is there, uncounted.
    raw_write_row(partial_path(out), 2, sample(2))
    writer = ShardWriter(out, meta(), num_rows=4)
    assert writer.num_done == 2
    writer.close()
    # A count ahead of its rows (row 3 never reached the disk: still NaN) is cut back to them.
    with h5py.File(partial_path(out), "a") as f:
        f.attrs["num_samples"] = 4
    writer = ShardWriter(out, meta(), num_rows=4)
    assert writer.num_done == 3
    assert "sample 3: row checksum does not match" in caplog.text
    with h5py.File(partial_path(out), "r") as f:
        assert f.attrs["num_samples"] == 3
    writer.append(**sample(3))
    writer.finish()
    data = load_kva(out)
    assert data.question_id == ["q0", "q1", "q2", "q3"]
    for i in range(4):
        np.testing.assert_array_equal(data.attributions[i], sample(i)["attributions"])
    assert not stale_path(out).exists()


def test_counted_row_without_its_question_id_is_cut_back(tmp_path):
    out = tmp_path / "s.h5"
    ids = ["q0", "q1", "q2"]
    write(out, range(1), finish=False, expected=ids)
    row = sample(1)
    raw_write_row(partial_path(out), 1, {**row, "question_id": ""})  # the id never got there
    with h5py.File(partial_path(out), "a") as f:
        f.attrs["num_samples"] = 2
    assert ShardWriter(out, meta(), expected_ids=ids).num_done == 1
    assert not stale_path(out).exists()


@pytest.mark.parametrize(
    "change", [{"model": "other-model"}, {"steps": 3}, {"quadrature": "midpoint"}]
)
def test_partial_shard_from_another_run_is_set_aside_and_restarted(tmp_path, change, caplog):
    out = tmp_path / "s.h5"
    write(out, range(2), finish=False, num_rows=3)
    key = next(iter(change))
    writer = ShardWriter(out, meta(**change), num_rows=3)
    assert writer.num_done == 0
    writer.close()
    assert key in caplog.text and "starting this shard over" in caplog.text
    # Nothing computed is destroyed unseen: the old rows are in the stale sibling.
    with h5py.File(stale_path(out), "r") as f:
        assert f.attrs["num_samples"] == 2 and f.attrs["steps"] == 7


def test_partial_shard_says_which_input_changed(tmp_path, caplog):
    out = tmp_path / "s.h5"
    old = {"model": "aaa", "dataset": "ddd", "steps": 7}
    write(out, [0], finish=False, num_rows=2, m=meta(inputs=json.dumps(old), config_hash="h1"))
    new = {**old, "model": "bbb"}
    ShardWriter(out, meta(inputs=json.dumps(new), config_hash="h2"), num_rows=2).close()
    assert "inputs changed: model content (aaa -> bbb)" in caplog.text
    assert "config_hash" not in caplog.text


def test_partial_shard_of_a_changed_dataset_is_restarted(tmp_path, caplog):
    out = tmp_path / "s.h5"
    write(out, range(2), finish=False, expected=["q0", "q1", "q2"])
    writer = ShardWriter(out, meta(), expected_ids=["q0", "other", "q2"])
    assert writer.num_done == 0 and "data changed" in caplog.text
    writer.close()
    assert stale_path(out).exists()


def test_unreadable_partial_is_set_aside(tmp_path, caplog):
    out = tmp_path / "s.h5"
    partial_path(out).write_bytes(b"not hdf5")
    writer = ShardWriter(out, meta(), num_rows=1)
    writer.append(**sample(0))
    writer.finish()
    assert "unreadable" in caplog.text and stale_path(out).read_bytes() == b"not hdf5"


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
        # Fixed-length strings: no HDF5 heap that a killed run could leave half-rewritten.
        assert h5py.check_string_dtype(f["subject"].dtype).length == 64
        assert h5py.check_string_dtype(f["question_id"].dtype).length == 256
        assert f[CHECKSUM].dtype == np.uint32
        np.testing.assert_array_equal(f[CHECKSUM][()], row_crc32(f["attributions"][()]))
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
    write(tmp_path / "x.h5", [1], m=meta(shard=1, num_shards=2), finish=False, num_rows=2)
    with pytest.raises(LokiInputError, match="no such KVA shard"):
        gather_shards([tmp_path / "0.h5", tmp_path / "x.h5"], tmp_path / "kva.h5")
    partial_path(tmp_path / "x.h5").rename(tmp_path / "x.h5")  # an unfinished file, renamed
    with pytest.raises(LokiInputError, match="not complete"):
        gather_shards([tmp_path / "0.h5", tmp_path / "x.h5"], tmp_path / "kva.h5")
    assert not (tmp_path / "kva.h5").exists()


def finished_shards(tmp_path: Path, total: int = 5, shards: int = 2) -> list[Path]:
    paths = []
    for s in range(shards):
        path = tmp_path / f"{s}.h5"
        write(path, range(s, total, shards), m=meta(shard=s, num_shards=shards))
        paths.append(path)
    return paths


def test_gathered_file_carries_the_row_checksums(tmp_path):
    out = gather_shards(finished_shards(tmp_path), tmp_path / "kva.h5")
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f[CHECKSUM][()], row_crc32(f["attributions"][()]))
    verify_kva_file(out)


def test_truncated_shard_or_output_is_refused_naming_the_file(tmp_path, caplog):
    paths = finished_shards(tmp_path)
    out = gather_shards(paths, tmp_path / "kva.h5")
    for path in (paths[1], out):
        with open(path, "r+b") as fh:  # `truncate -s 50%`
            fh.truncate(path.stat().st_size // 2)
        with pytest.raises(LokiInputError, match=rf"{path}: unreadable or truncated"):
            load_kva(path)
    with pytest.raises(LokiInputError, match=rf"{paths[1]}: unreadable or truncated"):
        gather_shards(paths, tmp_path / "again.h5")
    assert not check_finished(paths[1], meta(shard=1, num_shards=2))
    assert "truncated" in caplog.text


def test_row_that_does_not_match_its_checksum_is_refused(tmp_path):
    paths = finished_shards(tmp_path)
    with h5py.File(paths[0], "a") as f:
        f["attributions"][1, 0, 0] += 1.0  # a bit flipped on the disk, or a row half-written
    with pytest.raises(LokiInputError, match=rf"{paths[0]}: sample 1: row checksum"):
        load_kva(paths[0])
    with pytest.raises(LokiInputError, match="sample 1: row checksum"):
        gather_shards(paths, tmp_path / "kva.h5")
    assert not (tmp_path / "kva.h5").exists()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_attributions_are_refused(tmp_path, bad):
    out = tmp_path / "s.h5"
    writer = ShardWriter(out, meta(), num_rows=2)
    writer.append(**sample(0))
    row = sample(1)
    row["attributions"][2, 1] = bad
    with pytest.raises(LokiInputError, match="question 'q1' hold NaN or inf"):
        writer.append(**row)
    assert writer.num_done == 1
    writer.close()
    # A file that holds one anyway (checksum right) is refused by every reader.
    paths = finished_shards(tmp_path, total=2, shards=1)
    with h5py.File(paths[0], "a") as f:
        f["attributions"][1] = row["attributions"]
        f[CHECKSUM][1] = row_crc32(row["attributions"][None])[0]
    with pytest.raises(LokiInputError, match="sample 1: attributions hold NaN or inf"):
        verify_kva_file(paths[0])
    with pytest.raises(LokiInputError, match="NaN or inf"):
        gather_shards(paths, tmp_path / "kva.h5")


def test_unfinished_file_and_other_layouts_are_refused(tmp_path):
    out = tmp_path / "s.h5"
    write(out, range(1), finish=False, num_rows=2)
    with pytest.raises(LokiInputError, match="not complete"):
        verify_kva_file(partial_path(out))
    with h5py.File(tmp_path / "old.h5", "w") as f:  # variable-length strings, no checksums
        f.create_dataset("attributions", data=np.zeros((1, LAYERS, NODES), np.float32))
    with pytest.raises(LokiInputError, match="not a KVA file of this version"):
        load_kva(tmp_path / "old.h5")


def test_strings_that_do_not_fit_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(LokiInputError, match="question_id 'xxx.*at most 256 UTF-8 bytes"):
        ShardWriter(tmp_path / "s.h5", meta(), expected_ids=["q0", "x" * 300])
    assert not partial_path(tmp_path / "s.h5").exists()


def test_finished_file_of_other_settings_is_redone_not_an_error(tmp_path, caplog):
    out = tmp_path / "s.h5"
    write(out, range(2))
    assert check_finished(out, meta())
    assert not check_finished(out, meta(steps=3))
    assert "made from other inputs" in caplog.text and "computing it again" in caplog.text


def test_gather_while_another_run_writes_the_output_is_told_it_is_in_use(
    tmp_path, lock_held_elsewhere
):
    paths = finished_shards(tmp_path)
    busy = pytest.raises(LokiBusyError, match="in use by another run")
    with lock_held_elsewhere(tmp_path / "kva.h5"), busy:
        gather_shards(paths, tmp_path / "kva.h5")
    assert not (tmp_path / "kva.h5").exists()
    gather_shards(paths, tmp_path / "kva.h5")


@pytest.mark.parametrize("free", [0, 4096])  # no room for the lock file / for kva.h5
def test_gather_onto_a_full_disk_fails_cleanly_and_succeeds_once_space_is_freed(
    tmp_path, small_disk, capsys, free
):
    paths = finished_shards(tmp_path, total=40, shards=2)
    disk = small_disk(1 << 20)
    fill_leaving(disk, free)
    out = disk / "kva.h5"
    with pytest.raises(LokiWriteError, match=rf"{out}: .*No space left on device"):
        gather_shards(paths, out)
    assert cli.main(["kva-gather", *map(str, paths), "--out", str(out)]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no output, no temporary
    small_disk.grow(4 << 20)
    gather_shards(paths, out)
    reference = gather_shards(paths, tmp_path / "kva.h5")
    assert_same_file_contents(out, reference)


def fill_leaving(disk: Path, free: int) -> None:
    """Fill the tmpfs at ``disk`` with a file so that only ``free`` bytes stay available."""
    stat = os.statvfs(disk)
    size = stat.f_bavail * stat.f_frsize - free
    with open(disk / "filler", "wb") as fh:
        fh.write(b"\0" * size)
