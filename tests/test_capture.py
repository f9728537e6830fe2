"""Capture: attention through the registered function, cleanup on exit and on error, causality."""

import copy

import pytest
import torch

import glimpse
from capture_checks import leftover_registrations, model_state
from glimpse import capture as capture_module
from glimpse.capture import CAPTURE_PREFIX, Capture
from tiny_models import build_tiny_llava, rand_image

QUESTION = "what color is the object?"


def assert_released(model, before):
    assert model_state(model) == before
    assert leftover_registrations() == []


def test_explain_leaves_model_as_it_was(tiny_llava):
    model, processor = tiny_llava
    before = model_state(model)
    glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red circle")
    assert_released(model, before)
    assert all(p.grad is None for p in model.parameters())


def test_released_when_an_exception_is_raised_inside(tiny_llava):
    model, processor = tiny_llava
    before = model_state(model)

    def explode(attn, grad, query):
        raise RuntimeError("boom")

    adapter = glimpse.adapter_for(model, processor)
    image = rand_image(64, 48)
    text = adapter.render_prompt(QUESTION, 1)
    inputs = adapter.with_answer(adapter.encode([image], text), adapter.answer_ids(text, " a red"))
    layout = adapter.layout(inputs, [image], text, QUESTION, 2)
    with pytest.raises(RuntimeError, match="boom"):
        with Capture(model, "text_config", explode) as cap:
            assert model.config.text_config._attn_implementation == cap.name
            assert cap.name.startswith(CAPTURE_PREFIX)
            # The vision tower keeps its own attention implementation.
            assert model.config.vision_config._attn_implementation == before[1]
            cap.run(inputs, layout)
    assert_released(model, before)


def test_works_whatever_attention_the_model_was_loaded_with():
    model, processor = build_tiny_llava(seed=5)
    image = rand_image(64, 48, seed=5)
    eager = glimpse.explain(model, processor, image, QUESTION, answer=" a red circle")
    sdpa_model = copy.deepcopy(model)
    sdpa_model.set_attn_implementation("sdpa")
    sdpa = glimpse.explain(sdpa_model, processor, image, QUESTION, answer=" a red circle")
    assert sdpa_model.config.text_config._attn_implementation == "sdpa"
    torch.testing.assert_close(torch.from_numpy(sdpa.token_visual), torch.from_numpy(eager.token_visual))
    torch.testing.assert_close(torch.from_numpy(sdpa.prompt), torch.from_numpy(eager.prompt))


def test_missing_causal_mask_is_detected(tiny_llava, monkeypatch):
    model, processor = tiny_llava
    before = model_state(model)

    def no_mask(batch_size, q_length, kv_length, dtype=torch.float32, **kwargs):
        return torch.zeros(batch_size, 1, q_length, kv_length, dtype=dtype)

    monkeypatch.setattr(capture_module, "eager_mask", no_mask)
    with pytest.raises(glimpse.CaptureError, match="future tokens"):
        glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red")
    assert_released(model, before)


def test_mask_none_gets_an_explicit_causal_mask(tiny_llava, monkeypatch):
    """Where a model passes no mask at all, capture must still be causal (never bidirectional)."""
    model, processor = tiny_llava
    image = rand_image(64, 48)
    expected = glimpse.explain(model, processor, image, QUESTION, answer=" a red")
    monkeypatch.setattr(capture_module, "eager_mask", lambda **kwargs: None)
    result = glimpse.explain(model, processor, image, QUESTION, answer=" a red")
    torch.testing.assert_close(torch.from_numpy(result.token_visual), torch.from_numpy(expected.token_visual))


def test_no_captured_attention_is_a_clear_error(tiny_llava, monkeypatch):
    model, processor = tiny_llava
    before = model_state(model)
    # Simulate a language model that never dispatches through the attention interface.
    monkeypatch.setattr(Capture, "_impl", lambda self, name: "eager")
    with pytest.raises(glimpse.CaptureError, match="no language-model attention was captured"):
        glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red")
    monkeypatch.undo()
    assert_released(model, before)


def test_gradients_reach_the_image(tiny_llava):
    model, processor = tiny_llava
    adapter = glimpse.adapter_for(model, processor)
    text = adapter.render_prompt(QUESTION, 1)
    inputs = adapter.encode([rand_image(64, 48)], text)
    pixels = inputs["pixel_values"].clone().requires_grad_(True)
    logits = model(**dict(inputs, pixel_values=pixels)).logits
    (grad,) = torch.autograd.grad(logits[0, -1].max(), pixels)
    assert grad.abs().sum() > 0


def test_blockwise_explain_leaves_model_as_it_was(tiny_llava):
    model, processor = tiny_llava
    before = model_state(model)
    result = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red circle", path="blockwise")
    assert result.cost["attention_path"] == "blockwise"
    assert_released(model, before)
    assert all(p.grad is None for p in model.parameters())


def test_blockwise_non_causal_mask_is_detected(tiny_llava, monkeypatch):
    model, processor = tiny_llava
    before = model_state(model)

    def everything(batch_size, q_length, kv_length, **kwargs):
        return torch.ones(batch_size, 1, q_length, kv_length, dtype=torch.bool)

    monkeypatch.setattr(capture_module, "sdpa_mask", everything)
    with pytest.raises(glimpse.CaptureError, match="future tokens"):
        glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red", path="blockwise")
    assert_released(model, before)


def test_blockwise_keeps_no_attention_matrix(tiny_llava, monkeypatch):
    """Nothing of size N x N is built per layer: the model's own sdpa runs, and the largest
    recomputed block is a few rows (blocks of at most 2**11 elements here)."""
    from glimpse import blocks

    model, processor = tiny_llava
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 1 << 11)
    shapes = []
    original = blocks.LayerAttention._probabilities

    def probabilities(self, rows, keys):
        out = original(self, rows, keys)
        shapes.append((out.shape, self.query.shape[1]))
        return out
    monkeypatch.setattr(blocks.LayerAttention, "_probabilities", probabilities)
    glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red", path="blockwise")
    assert shapes
    for (heads, rows, keys), n in shapes:
        assert heads * rows * keys <= max(1 << 11, heads * keys) and rows < n


def test_batched_backward_failure_falls_back_visibly(tiny_llava, monkeypatch):
    """A model whose backward cannot be vmapped: the tokens are redone one at a time, with a warning
    and a note, and the result is the unbatched one."""
    model, processor = tiny_llava
    image = rand_image(64, 48)
    expected = glimpse.explain(model, processor, image, QUESTION, answer=" a red circle", path="blockwise")
    original = torch.autograd.grad

    def no_vmap(*args, is_grads_batched=False, **kwargs):
        if is_grads_batched:
            raise RuntimeError("Batching rule not implemented for aten::something")
        return original(*args, **kwargs)
    monkeypatch.setattr(torch.autograd, "grad", no_vmap)
    with pytest.warns(glimpse.FallbackWarning, match="one at a time"):
        result = glimpse.explain(model, processor, image, QUESTION, answer=" a red circle", path="blockwise",
                                 max_memory=1.0)
    assert any("one at a time" in line for line in result.notes)
    torch.testing.assert_close(torch.from_numpy(result.token_visual), torch.from_numpy(expected.token_visual))
