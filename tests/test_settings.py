"""Stage settings take their defaults from the config schema, and nothing else."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from loki_pipeline.errors import LokiInputError
from loki_pipeline.settings import StageSettings, from_schema, lookup, schema_default


@dataclasses.dataclass
class _KVA(StageSettings):
    steps: int = from_schema("kva.steps")
    dataset: dict = from_schema("kva.dataset")
    out: str | None = None


def test_schema_default_reads_nested_keys_and_refs():
    assert schema_default("kva.steps") == _KVA().steps
    assert schema_default("training.batch_size") >= 1  # behind a $ref to the shared definition
    with pytest.raises(KeyError, match="kva.nope"):
        schema_default("kva.nope")


def test_from_config_from_cli_and_defaults():
    default = _KVA()
    assert _KVA.schema_defaults() == {"steps": default.steps, "dataset": default.dataset}
    assert _KVA().dataset is not _KVA().dataset  # mutable defaults are not shared
    got = _KVA.from_config({"kva": {"steps": 3}}, out="x.h5")
    assert (got.steps, got.dataset, got.out) == (3, default.dataset, "x.h5")
    args = argparse.Namespace(steps=None, out="y.h5", unrelated=1)
    assert _KVA.from_cli(args) == _KVA(out="y.h5")
    assert _KVA.from_cli(argparse.Namespace(steps=5)).steps == 5


def test_lookup():
    assert lookup({"a": {"b": 1}}, "a.b") == 1
    assert lookup({"a": {}}, "a.b", None) is None
    with pytest.raises(LokiInputError, match="a.b"):
        lookup({"a": 1}, "a.b")


def test_schema_default_follows_maps_whose_keys_share_a_schema():
    assert schema_default("models.any-name.trust_remote_code") is False
