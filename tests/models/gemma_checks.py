"""Checks shared by the PaliGemma and Gemma 3 adapter tests: families whose prompt attends bidirectionally.

The ground truth never asks the adapter: the float64 reference (reference.py) runs on inputs rebuilt from the
processor, with V the positions whose embedding depends on the pixels, P the last run of the question's ids and
the allowed bidirectional pairs written down from the family's definition. The leak checks build genuinely
wrong inputs and expect capture to refuse them.
"""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from family_checks import QUESTION, prepare
from tiles_checks import pixel_dependent_positions

import glimpse
from reference import assert_match, named_like_reference, reference_glimpse
from tiny_models import rand_image

COMPARED = ("token_visual", "token_prompt", "visual", "prompt", "beta_visual", "beta_prompt", "gamma", "probs", "alpha")


def reference_case(model, processor, explanation, text: str, answer_type: int):
    """(inputs, Y, V, P): `text` and the explanation's images through the processor, the answer ids appended
    and token_type_ids grown with `answer_type` over them (PaliGemma's suffix 1, Gemma 3's text 0)."""
    encoded = dict(processor(images=explanation.images, text=text, return_tensors="pt"))
    encoded.pop("labels", None)
    prompt_ids = encoded["input_ids"][0].tolist()
    answer = explanation.answer_token_ids
    ids = torch.tensor([prompt_ids + answer])
    types = torch.cat([encoded["token_type_ids"], torch.full((1, len(answer)), answer_type)], dim=1)
    inputs = dict(encoded, input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=types)
    question = processor.tokenizer.encode(explanation.question, add_special_tokens=False)
    start = max(i for i in range(len(prompt_ids)) if prompt_ids[i:i + len(question)] == question)
    return (inputs, list(range(len(prompt_ids), ids.shape[1])), pixel_dependent_positions(model, inputs),
            list(range(start, start + len(question))))


def runs_allowed(length: int, positions: list[int]) -> torch.Tensor:
    """Boolean [length, length]: query and key in the same run of consecutive `positions`."""
    allowed, members = torch.zeros(length, length, dtype=torch.bool), set(positions)
    starts = sorted(p for p in members if p - 1 not in members)
    ends = sorted(p + 1 for p in members if p + 1 not in members)
    for start, end in zip(starts, ends):
        allowed[start:end, start:end] = True
    return allowed


def check_against_reference(model, explanation, inputs, Y, V, P, allowed: torch.Tensor, **options) -> None:
    """Every map and weight equals the float64 reference's, which accepts future attention at `allowed` only."""
    ref = reference_glimpse(model, inputs, Y, V, P, bidirectional=allowed, **options)
    for name in COMPARED:
        assert_match(named_like_reference(explanation)[name], ref[name], name)
    assert explanation.layers == ref["layers"].tolist()


def check_leaks_are_caught(model, processor, leak: Callable[[dict, int], dict], monkeypatch) -> None:
    """Capture accepts the family's own bidirectional pairs and nothing else.

    * `leak(inputs, n_answer)` returns teacher-forced inputs whose answer tokens attend to later answer tokens:
      capture must refuse them, whichever method runs.
    * Without the adapter's allowance, the correct inputs must be refused as well: the model really attends to
      later prompt tokens, so the allowance is what lets them through (the check is not vacuous).
    * An allowance reaching into the answer is refused before the forward pass.
    """
    adapter, inputs, layout = prepare(model, processor, [rand_image(64, 48)])
    n_answer = len(layout.answer)
    for method in ("glimpse", "rollout"):
        with pytest.raises(glimpse.CaptureError, match="future tokens"):
            glimpse.get_method(method).run(model, adapter, leak(inputs, n_answer), layout)
    glimpse.get_method("glimpse").run(model, adapter, inputs, layout)  # the correct inputs pass
    with monkeypatch.context() as patch:
        patch.setattr(type(adapter), "bidirectional_pairs", lambda self, inputs, layout: None)
        with pytest.raises(glimpse.CaptureError, match="future tokens"):
            glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red")
    with monkeypatch.context() as patch:
        everything = torch.ones(layout.length, layout.length, dtype=torch.bool)
        patch.setattr(type(adapter), "bidirectional_pairs", lambda self, inputs, layout: everything)
        with pytest.raises(glimpse.CaptureError, match="inside the answer"):
            glimpse.get_method("glimpse").run(model, adapter, inputs, layout)


def check_reference_refuses_without_allowance(model, inputs, Y, V, P) -> None:
    """The reference's default causality check is intact: bidirectional attention fails it."""
    with pytest.raises(AssertionError, match="not causal"):
        reference_glimpse(model, inputs, Y, V, P)
