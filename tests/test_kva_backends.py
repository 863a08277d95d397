"""The KVA backends agree with the brute-force oracle and with the integral they approximate."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_model

from loki_pipeline.errors import LokiInputError
from loki_pipeline.kva import QUADRATURES, attribute, attribute_prompt, attribute_prompts
from loki_pipeline.models import get_adapter

PROMPT_LEN = 24


def prompt(seed: int = 1, length: int = PROMPT_LEN) -> torch.Tensor:
    return torch.randint(3, 384, (length,), generator=torch.Generator().manual_seed(seed))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("quadrature", QUADRATURES)
def test_exact_matches_reference_for_every_quadrature(tiny_model, quadrature):
    ids = prompt()
    ref = attribute_prompt(tiny_model, ids, steps=5, method="reference", quadrature=quadrature)
    fast = attribute_prompt(tiny_model, ids, steps=5, method="exact", quadrature=quadrature)
    assert rel_err(fast.attributions, ref.attributions) <= 1e-4
    assert fast.predicted_token == ref.predicted_token
    assert fast.probability == pytest.approx(ref.probability, rel=1e-5)
    torch.testing.assert_close(
        fast.baseline_probabilities, ref.baseline_probabilities, rtol=1e-4, atol=1e-7
    )


@pytest.mark.parametrize("quadrature", ["left", "trapezoid", "gauss_legendre"])
def test_captum_matches_reference(tiny_model, quadrature):
    ids = prompt(2)
    ref = attribute_prompt(tiny_model, ids, steps=4, method="reference", quadrature=quadrature)
    cap = attribute_prompt(tiny_model, ids, steps=4, method="captum", quadrature=quadrature)
    assert rel_err(cap.attributions, ref.attributions) <= 1e-4


def test_reference_batched_steps_equal_one_step_at_a_time(tiny_qwen2):
    ids = prompt(3)
    batched = attribute_prompt(tiny_qwen2, ids, steps=3, method="reference", batch_steps=True)
    single = attribute_prompt(tiny_qwen2, ids, steps=3, method="reference", batch_steps=False)
    assert rel_err(batched.attributions, single.attributions) <= 1e-5


def test_masked_rows_equal_one_layer_at_a_time_path(tiny_model):
    ids = prompt(4)
    kw = dict(steps=4, method="exact", quadrature="midpoint")
    all_rows = attribute_prompt(tiny_model, ids, **kw)
    per_layer = attribute_prompt(tiny_model, ids, masked_rows=False, **kw)
    two_groups = attribute_prompt(tiny_model, ids, layers_per_batch=2, **kw)
    assert rel_err(per_layer.attributions, all_rows.attributions) <= 1e-5
    assert rel_err(two_groups.attributions, all_rows.attributions) <= 1e-5


def test_exact_matches_reference_through_sdpa_attention():
    model = build_tiny_model("llama", attn_implementation="sdpa")
    ids = prompt(5)
    ref = attribute(model, ids, steps=3, method="reference")
    fast = attribute(model, ids, steps=3, method="exact")
    assert rel_err(fast, ref) <= 1e-4


def test_exact_respects_a_sliding_window_shorter_than_the_prompt():
    # Mistral with a 6-token window: the reference gets HF's own sliding-window mask.
    model = build_tiny_model("mistral", sliding_window=6)
    ids = prompt(6, length=15)
    ref = attribute(model, ids, steps=3, method="reference")
    assert rel_err(attribute(model, ids, steps=3, method="exact"), ref) <= 1e-4


@pytest.mark.parametrize("length", [1, 2])
def test_exact_matches_reference_on_one_and_two_token_prompts(tiny_qwen2, length):
    ids = torch.arange(5, 5 + length)
    ref = attribute(tiny_qwen2, ids, steps=3, method="reference")
    assert rel_err(attribute(tiny_qwen2, ids, steps=3, method="exact"), ref) <= 1e-4


@pytest.mark.parametrize("arch", ["qwen3", "mistral"])
def test_exact_matches_reference_on_other_supported_architectures(arch):
    model = build_tiny_model(arch)
    ids = prompt(7)
    ref = attribute(model, ids, steps=3, method="reference")
    assert rel_err(attribute(model, ids, steps=3, method="exact"), ref) <= 1e-4


def test_completeness_gap_shrinks_as_steps_grow(tiny_llama):
    ids = prompt(8)
    gaps = [
        attribute_prompt(tiny_llama, ids, steps=m, quadrature="left").completeness_gap
        for m in (2, 8, 32)
    ]
    assert gaps[0] > gaps[1] > gaps[2]
    # Left Riemann converges like 1/m: the gap at 32 steps is at most ~ a quarter of 8 steps'.
    assert gaps[2] < 0.4 * gaps[1]
    assert (
        attribute_prompt(tiny_llama, ids, steps=8, quadrature="gauss_legendre").completeness_gap
        < 1e-5
    )


def test_sum_of_attributions_equals_probability_drop_measured_independently(tiny_qwen2):
    """Σ_j Attr_{l,j} -> P(x) - P(x; z_l <- 0), the drop measured by a plain hooked forward."""
    ids = prompt(9)
    adapter = get_adapter(tiny_qwen2)
    with torch.no_grad():
        probs = torch.softmax(tiny_qwen2(ids[None]).logits[0, -1], -1)
    token = int(probs.argmax())
    result = attribute_prompt(tiny_qwen2, ids, steps=12, quadrature="gauss_legendre")
    assert result.predicted_token == token
    for layer in range(adapter.num_layers):

        def zero_last(_m, _i, out):
            out = out.clone()
            out[0, -1] = 0
            return out

        handle = adapter.down_proj(layer).register_forward_hook(zero_last)
        with torch.no_grad():
            p0 = torch.softmax(tiny_qwen2(ids[None]).logits[0, -1], -1)[token]
        handle.remove()
        drop = float(probs[token] - p0)
        assert float(result.attributions[layer].sum()) == pytest.approx(drop, abs=1e-6)
        assert float(result.baseline_probabilities[layer]) == pytest.approx(float(p0), abs=1e-6)


def test_attribute_returns_float32_layers_by_nodes_for_1d_and_batched_ids(tiny_llama):
    ids = prompt(10)
    flat = attribute(tiny_llama, ids, steps=2)
    batched = attribute(tiny_llama, ids[None], steps=2)
    assert flat.dtype == torch.float32 and flat.shape == (3, 32)
    torch.testing.assert_close(flat, batched)
    assert flat.abs().sum() > 0


def test_attribute_leaves_model_parameters_trainable_as_before(tiny_llama):
    tiny_llama.lm_head.weight.requires_grad_(False)
    attribute(tiny_llama, prompt(11), steps=2)
    assert not tiny_llama.lm_head.weight.requires_grad
    assert tiny_llama.model.embed_tokens.weight.requires_grad
    assert all(p.grad is None for p in tiny_llama.parameters())


@pytest.mark.parametrize("steps", [0, -3])
def test_steps_below_one_is_rejected(tiny_llama, steps):
    with pytest.raises(LokiInputError, match="steps"):
        attribute(tiny_llama, prompt(), steps=steps)


def test_unknown_method_and_bad_ids_are_rejected(tiny_llama):
    with pytest.raises(LokiInputError, match="method"):
        attribute(tiny_llama, prompt(), method="fast")
    with pytest.raises(LokiInputError, match="one prompt"):
        attribute(tiny_llama, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(LokiInputError, match="empty"):
        attribute(tiny_llama, torch.zeros(0, dtype=torch.long))


# --- several prompts per pass (exact_attribute_many) --------------------------------------

MIXED_LENGTHS = (24, 1, 9, 17, 2)


def mixed_prompts(lengths=MIXED_LENGTHS) -> list[torch.Tensor]:
    return [prompt(20 + i, length=n) for i, n in enumerate(lengths)]


def assert_same_results(many, singles, tol=1e-5):
    assert len(many) == len(singles)
    for got, want in zip(many, singles, strict=True):
        assert rel_err(got.attributions, want.attributions) <= tol
        assert got.predicted_token == want.predicted_token
        assert got.prompt_length == want.prompt_length
        assert got.probability == pytest.approx(want.probability, rel=1e-5)
        torch.testing.assert_close(
            got.baseline_probabilities, want.baseline_probabilities, rtol=1e-4, atol=1e-7
        )


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_prompts_of_different_lengths_in_one_pass_equal_one_at_a_time(arch, attn):
    model = build_tiny_model(arch, attn_implementation=attn)
    prompts = mixed_prompts()
    many = attribute_prompts(model, prompts, steps=3)
    assert_same_results(many, [attribute_prompt(model, ids, steps=3) for ids in prompts])


def test_prompts_in_one_pass_match_the_reference_oracle(tiny_qwen2):
    prompts = mixed_prompts((13, 5, 21))
    many = attribute_prompts(tiny_qwen2, prompts, steps=4, quadrature="trapezoid")
    oracle = attribute_prompts(
        tiny_qwen2, prompts, steps=4, quadrature="trapezoid", method="reference"
    )
    assert_same_results(many, oracle, tol=1e-4)


def test_prompts_in_one_pass_respect_a_sliding_window_per_prompt():
    # The 6-token window cuts the long prompts' prefixes but not the short ones'.
    model = build_tiny_model("mistral", sliding_window=6)
    prompts = mixed_prompts((15, 4, 11, 6))
    many = attribute_prompts(model, prompts, steps=3)
    oracle = attribute_prompts(model, prompts, steps=3, method="reference")
    assert_same_results(many, oracle, tol=1e-4)


def test_prompts_in_one_pass_with_layer_groups_and_the_unmasked_fallback(tiny_llama):
    prompts = mixed_prompts()
    kw = dict(steps=3, quadrature="midpoint")
    all_rows = attribute_prompts(tiny_llama, prompts, **kw)
    assert_same_results(attribute_prompts(tiny_llama, prompts, layers_per_batch=2, **kw), all_rows)
    assert_same_results(attribute_prompts(tiny_llama, prompts, masked_rows=False, **kw), all_rows)


def test_prompt_order_and_company_do_not_change_a_prompt_s_attributions(tiny_llama):
    prompts = mixed_prompts()
    forward = attribute_prompts(tiny_llama, prompts, steps=2)
    backward = attribute_prompts(tiny_llama, prompts[::-1], steps=2)[::-1]
    assert_same_results(forward, backward)
    assert attribute_prompts(tiny_llama, [], steps=2) == []


def test_every_backend_takes_a_list_of_prompts(tiny_llama):
    prompts = mixed_prompts((8, 5))
    for method in ("reference", "captum"):
        results = attribute_prompts(tiny_llama, prompts, steps=2, method=method)
        assert [r.prompt_length for r in results] == [8, 5]
