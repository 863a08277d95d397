"""Which OpenCompass model config a checkpoint is asked under, and that evaluate_general uses it.

Oracles: the model configs of OpenCompass 0.4.1 (``hf_llama3_1_8b_instruct.py`` has a meta
template of HUMAN and BOT turns and max_out_len 1024; ``hf_qwen2_5_*_instruct.py`` have none and
4096); what they render is checked against OpenCompass's own code in
``test_evaluate_opencompass_oracle``. Here: recognition from stand-in config files carrying the
real models' fields, and the prompts and caps a whole run sends to a scripted model.
"""

from __future__ import annotations

import json
from pathlib import Path

import opencompass_oracle
import pytest

from loki_pipeline.data import lm_eval_items
from loki_pipeline.evaluate import general
from loki_pipeline.evaluate.opencompass_models import (
    DEFAULT,
    LLAMA_3_1_8B_INSTRUCT,
    QWEN_2_5_INSTRUCT,
    opencompass_model,
)

#: Excerpts of the real chat templates (the lines that tell the families apart).
LLAMA_3_1 = '{{- "Cutting Knowledge Date: December 2023\\n" }}{{- "Today Date: " + date_string }}'
LLAMA_3 = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
QWEN_2_5 = "{{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}"
QWEN_2 = "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"


def checkpoint(tmp_path: Path, name: str, template: str, *, jinja: bool = False, **config) -> Path:
    out = tmp_path / name
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config))
    if jinja:  # transformers 5 saves the template beside the tokenizer config
        (out / "chat_template.jinja").write_text(template)
        (out / "tokenizer_config.json").write_text("{}")
    else:
        (out / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return out


@pytest.mark.parametrize(
    ("template", "config", "jinja", "expected"),
    [
        (
            LLAMA_3_1,
            {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32},
            False,
            LLAMA_3_1_8B_INSTRUCT,
        ),
        (
            LLAMA_3_1,
            {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32},
            True,
            LLAMA_3_1_8B_INSTRUCT,
        ),
        # Llama-3-8B-Instruct: same shape, no 3.1 template; its OpenCompass config has no meta
        # template
        (
            LLAMA_3,
            {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32},
            False,
            DEFAULT,
        ),
        # Llama-3.1-70B-Instruct: its OpenCompass config has no meta template either
        (
            LLAMA_3_1,
            {"model_type": "llama", "hidden_size": 8192, "num_hidden_layers": 80},
            False,
            DEFAULT,
        ),
        (
            QWEN_2_5,
            {"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24},
            False,
            QWEN_2_5_INSTRUCT,
        ),
        (
            QWEN_2_5,
            {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28},
            True,
            QWEN_2_5_INSTRUCT,
        ),
        # Qwen2-0.5B-Instruct: the same architecture, Qwen2's template, max_out_len 1024
        (
            QWEN_2,
            {"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24},
            False,
            DEFAULT,
        ),
        (
            QWEN_2_5,
            {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30},
            False,
            DEFAULT,
        ),
    ],
)
def test_the_model_config_follows_architecture_and_chat_template(
    tmp_path, template, config, jinja, expected
):
    assert opencompass_model(checkpoint(tmp_path, "m", template, jinja=jinja, **config)) == expected


def test_a_directory_without_a_readable_config_gets_the_default(tmp_path):
    assert opencompass_model(tmp_path) == DEFAULT
    (tmp_path / "config.json").write_text("{not json")
    assert opencompass_model(tmp_path) == DEFAULT


def test_messages_add_the_suffix_to_user_turns_only_and_copy():
    chat = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "q2"},
    ]
    assert [m["content"] for m in QWEN_2_5_INSTRUCT.messages(chat)] == ["s", "q\n", "a", "q2\n"]
    assert LLAMA_3_1_8B_INSTRUCT.messages(chat) == chat
    assert chat[1]["content"] == "q"  # the caller's list is left alone


def test_the_oracle_says_what_is_missing_and_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "opencompass" else real(name, *a),
    )
    assert "(opencompass missing)" in opencompass_oracle.missing()
    assert opencompass_oracle.INSTALL.startswith("pip install --no-deps opencompass==0.4.1 ")


# --- a whole run -----------------------------------------------------------------------------


def scripted_run(tiny_checkpoint, tmp_path, monkeypatch, profile=None) -> tuple[dict, dict]:
    """evaluate_general under protocol opencompass with a model that answers "The answer is B"
    and records each request: task -> [(context, generation kwargs)]."""
    from lm_eval.models.huggingface import HFLM

    seen: dict = {}

    def generate_until(self, requests, **kw):
        for r in requests:
            seen.setdefault(r.task_name, []).append(r.args)
        return ["The answer is B"] * len(requests)

    monkeypatch.setattr(HFLM, "generate_until", generate_until)
    if profile is not None:
        monkeypatch.setattr(general, "opencompass_model", lambda path: profile)
    summary = general.evaluate_general(
        tiny_checkpoint,
        tmp_path / "general.json",
        tasks=["hellaswag", "gsm8k"],
        protocol="opencompass",
        batch_size=4,
        limit=2,
    )
    return summary, seen


def test_a_run_asks_with_the_default_model_configs_turns_and_cap(
    tiny_checkpoint, tmp_path, monkeypatch
):
    summary, seen = scripted_run(tiny_checkpoint, tmp_path, monkeypatch)
    for context, kwargs in seen["hellaswag"]:
        assert context.endswith("Answer:\n<|im_end|>\n<|im_start|>assistant\n")
        assert kwargs["max_gen_toks"] == DEFAULT.max_out_len == 1024
    for context, kwargs in seen["gsm8k"]:
        # every user turn, the four worked examples' too
        assert context.count("Answer:\n<|im_end|>") == 5
        assert kwargs["max_gen_toks"] == 512  # the dataset config's own
    assert DEFAULT.note() in summary["notes"]


@pytest.mark.parametrize("profile", [LLAMA_3_1_8B_INSTRUCT, QWEN_2_5_INSTRUCT])
def test_a_run_asks_with_the_recognised_model_configs_turns_and_cap(
    tiny_checkpoint, tmp_path, monkeypatch, profile
):
    summary, seen = scripted_run(tiny_checkpoint, tmp_path, monkeypatch, profile)
    end = f"Answer:{profile.user_suffix}<|im_end|>\n<|im_start|>assistant\n"
    for context, kwargs in seen["hellaswag"]:
        assert context.endswith(end)
        assert kwargs["max_gen_toks"] == profile.max_out_len
    assert profile.note() in summary["notes"]
    assert profile.config in profile.note()


def test_the_lm_eval_protocol_is_unchanged(tiny_checkpoint, tmp_path, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    seen = []
    monkeypatch.setattr(
        HFLM,
        "generate_until",
        lambda self, requests, **kw: seen.extend(r.args for r in requests) or [""] * len(requests),
    )
    general.evaluate_general(
        tiny_checkpoint,
        tmp_path / "g.json",
        tasks=["gsm8k"],
        protocol="lm-eval",
        limit=1,
        apply_chat_template=True,
    )
    assert seen and seen[0][0].endswith("Answer:<|im_end|>\n<|im_start|>assistant\n")


# --- IFEval's language checks repeat -----------------------------------------------------------


def test_langdetect_is_random_unseeded_and_repeats_seeded():
    """The lowercase-English check on a short text: unseeded, langdetect's verdict varies from
    call to call (both OpenCompass and lm-eval leave it unseeded); seeded it is one verdict."""
    import langdetect

    from loki_pipeline.evaluate.ifeval_offline import langdetect_seeded

    text = "*a* only"
    unseeded = {langdetect.detect(text) for _ in range(60)}
    with langdetect_seeded():
        seeded = {langdetect.detect(text) for _ in range(60)}
    assert len(unseeded) > 1
    assert len(seeded) == 1
    assert langdetect.DetectorFactory.seed is None  # restored


def test_a_run_scores_ifeval_with_langdetect_seeded(tiny_checkpoint, tmp_path, monkeypatch):
    import langdetect
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks.ifeval import instructions

    seeds = []
    real = langdetect.detect

    def detect(text):
        seeds.append(langdetect.DetectorFactory.seed)
        return real(text)

    monkeypatch.setattr(instructions.langdetect, "detect", detect)
    monkeypatch.setattr(
        HFLM, "generate_until", lambda self, requests, **kw: ["all lower case"] * len(requests)
    )
    summary = general.evaluate_general(
        tiny_checkpoint, tmp_path / "g.json", tasks=["ifeval"], protocol="opencompass", limit=2
    )
    assert seeds and set(seeds) == {0}
    assert any("langdetect seeded" in n for n in summary["notes"])


def test_hub_tasks_carry_the_model_configs_cap(tmp_path):
    """Under source hub the run's task files extend the protocol's YAMLs with the model's cap."""
    import yaml

    from loki_pipeline.evaluate.opencompass_models import generation_overrides

    out = general.write_opencompass_hub_tasks(
        tmp_path,
        ["hellaswag", "gsm8k"],
        generation_overrides(["hellaswag", "gsm8k"], QWEN_2_5_INSTRUCT),
    )
    hella = yaml.safe_load((out / "hellaswag.yaml").read_text())
    assert hella["include"] == str(lm_eval_items.opencompass_tasks_dir() / "hellaswag.yaml")
    assert hella["generation_kwargs"] == {"until": [], "do_sample": False, "max_gen_toks": 4096}
    assert yaml.safe_load((out / "gsm8k.yaml").read_text()) == {
        "include": str(lm_eval_items.opencompass_tasks_dir() / "gsm8k.yaml")
    }
