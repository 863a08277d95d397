from conftest import build_tiny_model


def test_tiny_tokenizer_applies_chat_template(tiny_tokenizer):
    text = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Question: 2+2?"}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    ids = tiny_tokenizer(text)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text


def test_tiny_checkpoint_round_trips(tiny_checkpoint):
    import torch
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    ids = torch.tensor([[1, 5, 9, 12]])
    ref = build_tiny_model("llama")
    torch.testing.assert_close(loaded(ids).logits, ref(ids).logits)
