"""Shared fixtures: tiny random Llama / Qwen2 models and a tiny chat tokenizer, built in-process.

Nothing here touches the network; the models are small enough that every test runs in seconds
on one CPU thread, but they keep the real architectures (GQA attention, RoPE, SwiGLU MLP).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 384


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer with a ChatML chat template (any text encodes)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "There is a single choice question about astronomy. Answer the question by replying "
        "A, B, C or D.\nQuestion: Which planet is largest?\nChoices:\nA. Mars\nB. Jupiter\n"
        "C. Venus\nD. Mercury\nAnswer: \n",
        '[get_weather(city="Paris", unit="celsius")] The capital of France is Paris.',
        "<<<Query>>>\nhow to bake bread\n\n<<<Context>>>\nMix flour, water and yeast.",
    ] * 4
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus, vocab_size=VOCAB_SIZE, min_frequency=1, special_tokens=SPECIAL_TOKENS
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_tiny_model(arch: str = "llama", *, layers: int = 3, seed: int = 0, **overrides):
    """A tiny random causal LM of the given architecture, float32, eval mode."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    classes = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
        "mistral": (MistralConfig, MistralForCausalLM),
    }
    config_cls, model_cls = classes[arch]
    kwargs = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    if arch == "qwen3":
        kwargs["head_dim"] = 8
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs))
    # Larger-than-default init so attributions are not vanishingly small.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    return model.float().eval()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(params=["llama", "qwen2"])
def tiny_model(request):
    """Each test using it runs once on a tiny Llama and once on a tiny Qwen2."""
    return build_tiny_model(request.param)


@pytest.fixture
def tiny_llama():
    return build_tiny_model("llama")


@pytest.fixture
def tiny_qwen2():
    return build_tiny_model("qwen2")


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, tiny_tokenizer) -> Path:
    """A tiny Llama saved as a plain Hugging Face checkpoint (safetensors + tokenizer)."""
    model = build_tiny_model("llama")
    out = tmp_path / "tiny-llama"
    model.save_pretrained(out, safe_serialization=True)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(autouse=True)
def _single_thread():
    """Tests are small; one thread keeps them deterministic and fair to other jobs."""
    torch.set_num_threads(1)
    yield


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a tmpfs of the given size, so writes fail with a real ENOSPC (full disk).

    ``small_disk(nbytes) -> Path``; ``small_disk.grow(nbytes)`` enlarges it in place ("free
    space and rerun"). Needs permission to mount (root, as on CI); skipped elsewhere.
    """
    import subprocess

    mounted: list[Path] = []

    def make(nbytes: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={nbytes}", "tmpfs", str(where)]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            pytest.skip(
                "cannot mount a tmpfs here to simulate a full disk: it needs root "
                "(`sudo .venv/bin/pytest tests/test_io_full_disk.py`)"
            )
        mounted.append(where)
        return where

    def grow(nbytes: int) -> None:
        for where in mounted:
            opts = f"remount,size={nbytes}"
            subprocess.run(["mount", "-o", opts, str(where)], check=True, capture_output=True)

    make.grow = grow
    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def lock_held_elsewhere():
    """``lock_held_elsewhere(path)``: a context in which another process holds ``path``'s lock.

    Locks are re-entrant within a process, so "another run" must really be another process.
    """
    import contextlib
    import subprocess
    import sys

    @contextlib.contextmanager
    def hold(path):
        code = (
            "import sys\nfrom loki_pipeline.io import exclusive_lock\n"
            f"with exclusive_lock({str(path)!r}):\n"
            "    print('locked', flush=True)\n    sys.stdin.read()\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().strip() == "locked"
            yield proc.pid
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)

    return hold
