"""The method registry: every kind is one entry (names + prepare/save/merge hooks), a method's
selection name round-trips through the Selecting stage's q format, and a new kind is one entry."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import build_tiny_model

from loki_pipeline.errors import LokiInputError
from loki_pipeline.implant.adapter import CONFIG_NAME
from loki_pipeline.select.naming import Q_PATTERN, STRATEGIES
from loki_pipeline.train import methods
from loki_pipeline.train.methods import METHOD_KINDS, adapter_kind, parse_method, peft_kind
from loki_pipeline.train.settings import TrainSettings
from loki_pipeline.train.trainer import prepare_model

EXAMPLES = {
    "loki": "loki_global_low_q2.5",
    "loki*": "loki_lora_q30_r32",
    "full": "full",
    "lora": "lora_r16",
    "dora": "dora_r16",
    "pissa": "pissa_r8",
    "corda": "corda_r8",
}


def test_every_kind_is_an_entry_with_its_hooks_and_names():
    assert set(METHOD_KINDS) == set(EXAMPLES)
    for kind, name in EXAMPLES.items():
        spec = parse_method(name).spec
        assert spec is METHOD_KINDS[kind] and callable(spec.prepare) and callable(spec.save)
        assert spec.grammar in methods.grammar()
    assert [k for k, s in METHOD_KINDS.items() if s.initial_adapter] == ["pissa", "corda"]
    assert [k for k, s in METHOD_KINDS.items() if s.needs_selection] == ["loki", "loki*"]
    assert METHOD_KINDS["loki"].adapter_file == CONFIG_NAME  # the file save_loki_adapter writes


@pytest.mark.parametrize("q", ["12.3456789", "2.5", "10", "0.25"])
@pytest.mark.parametrize("star", [False, True])
def test_a_methods_selection_name_round_trips_through_the_q_wildcard(q, star):
    name = f"loki_lora_q{q}_r4" if star else f"loki_q{q}"
    method = parse_method(name)
    stem = method.selection_name
    strategy, _, written = stem.rpartition("_q")
    assert strategy == STRATEGIES[0] and written == q  # 12.3456789, not 12.3457
    assert re.fullmatch(Q_PATTERN, written) and float(written) == method.q


def test_registering_a_kind_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        methods.register(METHOD_KINDS["lora"])


def test_a_new_peft_baseline_is_one_entry(monkeypatch, tmp_path, tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    kind = peft_kind("rslora", lambda settings: {"use_rslora": True})
    monkeypatch.setitem(METHOD_KINDS, kind.name, kind)
    method = parse_method("rslora_r4")
    assert method.kind == "rslora" and method.rank == 4 and "rslora_r{r}" in methods.grammar()

    ids = torch.randint(0, 384, (2, 8), generator=torch.Generator().manual_seed(3))
    model = prepare_model(AutoModelForCausalLM.from_pretrained(tiny_checkpoint), method,
                          TrainSettings())  # fmt: skip
    assert model.peft_config["default"].use_rslora
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05)  # as if trained
        trained = model(ids).logits
    adapter = tmp_path / "adapter"
    merged = method.spec.save(model, method, adapter, model_dir=tiny_checkpoint,
                              selection_path=None, initial_adapter=None)  # fmt: skip
    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    remerged = adapter_kind(adapter).merge(base, adapter)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, trained, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(remerged(ids).logits, trained, rtol=1e-4, atol=1e-4)


def test_merge_names_every_adapter_format_it_knows(tmp_path):
    with pytest.raises(LokiInputError, match=r"neither a LoKI adapter \(loki_config.json\) nor "
                       r"a PEFT adapter \(adapter_config.json\)"):  # fmt: skip
        adapter_kind(tmp_path)


def test_loki_needs_its_selection_and_full_trains_everything():
    settings = TrainSettings()
    with pytest.raises(LokiInputError, match="needs a selection file"):
        prepare_model(build_tiny_model("llama"), parse_method("loki_q10"), settings)
    model = prepare_model(build_tiny_model("llama"), parse_method("full"), settings)
    assert all(p.requires_grad for p in model.parameters())
