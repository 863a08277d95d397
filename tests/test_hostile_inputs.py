"""Hostile data files and configs end in one ``LokiInputError`` line naming the file (and the
row where there is one), quickly, instead of a traceback that names no file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from loki_pipeline.config import apply_extends, resolve_extends, validate_config
from loki_pipeline.data.prompts import load_prompts
from loki_pipeline.data.records import read_records
from loki_pipeline.errors import LokiInputError

REPO = Path(__file__).resolve().parents[1]
PROMPT = '{"prompt": "What is the capital of France?", "subject": "geo"}\n'


def _one_line_error(fn, *needles, seconds=5.0, longest=600):
    start = time.monotonic()
    with pytest.raises(LokiInputError) as info:
        fn()
    message = str(info.value)
    assert time.monotonic() - start < seconds, message[:200]
    assert "\n" not in message and len(message) < longest, message[:longest]
    for needle in needles:
        assert str(needle) in message, message
    return message


def test_prompt_data_with_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "protect.jsonl"
    path.write_bytes(PROMPT.encode() + b'{"prompt": "caf\xe9", "subject": "geo"}\n')
    _one_line_error(lambda: load_prompts(path), path, "line 2", "UTF-8")


def test_task_data_with_invalid_utf8_json_names_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_bytes(b'[{"instruction": "caf\xe9"}]')
    _one_line_error(lambda: list(read_records(path)), path, "UTF-8")


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_json_nested_100000_deep_names_file(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    _one_line_error(lambda: list(read_records(path)), path, "nested too deeply")


def test_a_lone_surrogate_names_file_and_row(tmp_path):
    path = tmp_path / "protect.jsonl"
    path.write_text(PROMPT + '{"prompt": "x \\ud800 y", "subject": "geo"}\n')
    _one_line_error(lambda: load_prompts(path), path, "line 2", "surrogate")
    rows = tmp_path / "data.json"
    rows.write_text('[{"a": "ok"}, {"a": ["fine", {"b": "\\udfff"}]}]')
    _one_line_error(lambda: list(read_records(rows)), rows, "row 1", "surrogate")


def test_extends_naming_a_binary_file(tmp_path):
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
    _one_line_error(lambda: resolve_extends({"extends": str(binary)}), binary, "binary")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"models:\n  caf\xe9: {}\n")
    _one_line_error(lambda: resolve_extends({"extends": str(latin)}), latin, "line 2", "UTF-8")


def test_duplicate_keys_are_refused_naming_the_key_and_both_lines(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text(
        "extends: config/config.yaml\ntraining:\n  learning_rate: 1.0e-5\nmodels: {}\n"
        "training:\n  epochs: 2\n"
    )
    message = _one_line_error(
        lambda: apply_extends({}, [user]), user, "'training'", "lines 2 and 5"
    )
    assert "twice" in message
    nested = tmp_path / "base.yaml"
    nested.write_text("training:\n  epochs: 1\n  lr: 2\n  epochs: 3\n")
    _one_line_error(lambda: resolve_extends({"extends": str(nested)}), "'epochs'", "lines 2 and 4")
    # a merge key's values may be overridden: that is no duplicate
    merged = tmp_path / "merge.yaml"
    merged.write_text("a: &a {x: 1}\nb:\n  <<: *a\n  x: 2\n")
    assert resolve_extends({"extends": str(merged)})["b"] == {"x": 2}


def test_an_anchor_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    lines = ["a: &a ['lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol']"]
    for i in range(1, 10):
        prev, name = chr(96 + i), chr(97 + i)
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    _one_line_error(lambda: apply_extends({}, [bomb]), bomb, "anchor", seconds=2)
    _one_line_error(lambda: resolve_extends({"extends": str(bomb)}), bomb, seconds=2)


def test_no_message_quotes_more_than_a_few_hundred_characters_of_a_value():
    huge = "x" * 1_000_000
    with pytest.raises(LokiInputError) as info:
        validate_config({"models": huge, "training": {"epochs": huge}})
    assert all(len(line) < 500 for line in str(info.value).splitlines()), len(str(info.value))


LOOPING_TEMPLATE = (
    "{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}"
    "{{ '' }}{% endfor %}{% endfor %}{% endfor %}"
)


@pytest.mark.parametrize("render", ["chat_prompt", "encode_conversation", "kva_prompt"])
def test_a_looping_chat_template_stops_naming_the_checkpoints_template(monkeypatch, render):
    from conftest import build_tiny_tokenizer

    from loki_pipeline.data import chat_render
    from loki_pipeline.data.chat import encode_conversation
    from loki_pipeline.data.kva_prompt import encode_chat
    from loki_pipeline.evaluate.generation import chat_prompt

    monkeypatch.setattr(chat_render, "RENDER_SECONDS", 0.5)
    tok = build_tiny_tokenizer()
    tok.chat_template = LOOPING_TEMPLATE
    tok.name_or_path = "resources/models/evil"
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    calls = {
        "chat_prompt": lambda: chat_prompt(tok, messages[:1]),
        "encode_conversation": lambda: encode_conversation(tok, messages, cutoff_len=64),
        "kva_prompt": lambda: encode_chat(tok, messages[:1]),
    }
    _one_line_error(calls[render], "resources/models/evil", "chat template", "0.5 s")


def _checkpoint_copy(tiny_checkpoint, tmp_path):
    import shutil

    src = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, src)
    return src


def test_a_local_checkpoint_link_out_of_its_folder_is_refused(tiny_checkpoint, tmp_path):
    from loki_pipeline.models.loading import prepare_model

    src = _checkpoint_copy(tiny_checkpoint, tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("not the user's to share")
    (src / "notes.txt").symlink_to(secret)
    out = tmp_path / "models" / "m"
    _one_line_error(lambda: prepare_model(f"local:{src}", out, verify=False), "notes.txt", secret)
    assert not out.exists()
    # a link that stays inside the checkpoint folder is followed
    (src / "notes.txt").unlink()
    (src / "sub").mkdir()
    (src / "sub" / "notes.txt").write_text("inside")
    (src / "notes.txt").symlink_to(src / "sub" / "notes.txt")
    prepare_model(f"local:{src}", out, verify=False)
    assert (out / "notes.txt").read_text() == "inside" and not (out / "notes.txt").is_symlink()


def test_copied_checkpoint_files_are_never_wider_than_their_source(tiny_checkpoint, tmp_path):
    import stat

    from loki_pipeline.models.loading import prepare_model

    src = _checkpoint_copy(tiny_checkpoint, tmp_path)
    (src / "config.json").chmod(0o600)
    (src / "model.safetensors").chmod(0o640)
    (src / "tokenizer.json").chmod(0o666)
    out = prepare_model(f"local:{src}", tmp_path / "models" / "m", verify=False)

    def mode(p):
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(out / "config.json") == 0o600
    assert mode(out / "model.safetensors") == 0o640
    assert mode(out / "tokenizer.json") == 0o644  # never group/world-writable


def _hub_error(cls, message="x"):
    import importlib

    from huggingface_hub import errors

    http = importlib.import_module(errors.Response.__module__.split(".")[0])  # httpx or httpx2
    request = http.Request("GET", "https://huggingface.co/api/models/org/tiny")
    return cls(message, response=http.Response(404, request=request))


@pytest.mark.parametrize(
    "raised, needles",
    [
        ("not_found", ["hf:org/tnyi", "not found", "spelling"]),
        ("gated", ["hf:org/tnyi", "gated", "hf auth login"]),
        ("offline", ["hf:org/tnyi", "offline", "local:<folder>"]),
    ],
)
def test_hub_failures_end_in_one_line_saying_which(monkeypatch, tmp_path, raised, needles):
    import huggingface_hub
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    from loki_pipeline.models.loading import prepare_model

    errors = {
        "not_found": lambda: _hub_error(RepositoryNotFoundError),
        "gated": lambda: _hub_error(GatedRepoError),
        "offline": lambda: LocalEntryNotFoundError("cannot find the requested files"),
    }

    def fake_download(*args, **kwargs):
        raise errors[raised]()

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    message = _one_line_error(lambda: prepare_model("hf:org/tnyi", tmp_path / "m"), *needles)
    assert ("offline" in message) == (raised == "offline")


def test_an_unreachable_hub_is_reported_offline_without_retries(monkeypatch, tmp_path):
    """A local endpoint nobody listens on: the real ``huggingface_hub`` would retry for ~27 s;
    the probe finds it unreachable and the cache alone is asked."""
    import socket

    from huggingface_hub import constants

    from loki_pipeline.models.loading import prepare_model

    with socket.socket() as s:  # a port that was free a moment ago: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    _one_line_error(
        lambda: prepare_model("hf:org/never-cached", tmp_path / "m"),
        "hf:org/never-cached",
        "offline",
        f"127.0.0.1:{port}",
        seconds=8,
    )


def test_a_misspelt_hub_dataset_is_one_line(monkeypatch):
    import datasets

    class DatasetNotFoundError(FileNotFoundError):
        pass

    def fake_load_dataset(*args, **kwargs):
        raise DatasetNotFoundError("Dataset 'org/nope' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    _one_line_error(lambda: list(read_records("hf:org/nope")), "hf:org/nope", "not found")


def test_invalid_yaml_is_one_line_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  a: [1, 2\ntraining: {}\n")
    _one_line_error(lambda: resolve_extends({"extends": str(bad)}), bad, "line 3", "not valid YAML")
