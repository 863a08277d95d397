import pytest
from conftest import build_tiny_model

from loki_pipeline.errors import LokiInputError
from loki_pipeline.models import get_adapter


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral"])
def test_adapter_finds_down_proj_on_every_supported_architecture(arch):
    model = build_tiny_model(arch, layers=2)
    adapter = get_adapter(model)
    assert adapter.num_layers == 2
    assert (adapter.d_model, adapter.d_ff) == (32, 48)
    assert adapter.down_proj(1).weight.shape == (32, 48)
    assert adapter.down_proj(0) is model.model.layers[0].mlp.down_proj


def test_unsupported_architecture_is_named_in_the_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(LokiInputError, match=r"'gpt2'.*llama, qwen2, qwen3, mistral"):
        get_adapter(model)
