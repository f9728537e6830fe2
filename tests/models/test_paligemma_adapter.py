"""The PaliGemma / PaliGemma 2 adapter against ground truth on tiny random models.

Layouts: every image token's pixels (gradient footprints through a token-local vision tower) and where they
come from in the original image (a coordinate-encoded image), for non-square images of several sizes, one or
several per prompt. The prefix: images first, then <bos>, the question and "\\n", all attending
bidirectionally, the answer as causal suffix. Then the question span, multi-image maps, the float64
reference (bidirectional prefix allowed, nothing else), gradients to the pixels and caught future leaks.
"""

import pytest
import torch
from family_checks import QUESTION, prepare
from gemma_checks import (
    check_against_reference,
    check_leaks_are_caught,
    check_reference_refuses_without_allowance,
    reference_case,
    runs_allowed,
)

import glimpse
from glimpse.models.base import Adapter
from tiny_families_gemma import build
from tiny_models import rand_image

pytestmark = pytest.mark.every_path  # every GLIMPSE run here: full-matrix, block-wise and batched

CELL = 8  # pixels per token side: SigLIP 40 px, patch 8 -> 5 x 5 tokens
FAMILIES = ["paligemma", "paligemma2"]
SIZES = [[(100, 60)], [(30, 90), (57, 57)], [(130, 41), (20, 75), (64, 48)]]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(family="paligemma", seed=0):
        if (family, seed) not in cache:
            cache[family, seed] = build(family, seed)
        return cache[family, seed]
    return get


@pytest.mark.parametrize("n_images", [1, 2])
def test_prefix_then_causal_answer(models, n_images):
    """Images are the first image_seq_length tokens each, then <bos>, the question, "\\n" and the answer; the
    whole prompt is the bidirectional prefix (token_type_ids 0), the answer the causal suffix (1)."""
    model, processor = models()
    adapter, inputs, layout = prepare(model, processor, [rand_image(64, 48, seed=k) for k in range(n_images)])
    ids, tok = inputs["input_ids"][0], processor.tokenizer
    images = n_images * processor.image_seq_length
    assert all(len(image.tiles) == 1 for image in layout.images)
    assert layout.image_positions == list(range(images))
    assert int(ids[images]) == tok.bos_token_id and layout.prompt[0] == images + 1
    assert tok.decode(ids[layout.prompt[-1] + 1: layout.answer[0]]) == "\n"
    answer = len(layout.answer)
    assert inputs["token_type_ids"][0].tolist() == [0] * (layout.length - answer) + [1] * answer
    prefix = runs_allowed(layout.length, range(layout.answer[0]))
    assert torch.equal(adapter.bidirectional_pairs(inputs, layout), prefix)


# A given answer, or (None) one the model generates; one or two images.
REFERENCE_CASES = [("paligemma", 0, "a red circle", 1), ("paligemma2", 1, "the image shows a blue square", 1),
                   ("paligemma", 2, None, 1), ("paligemma2", 3, "a red circle", 2)]


def check_prefix_lm_reference(model, processor, explanation, **options):
    """Against the reference on PaliGemma's own prompt built without the adapter: one <image> per image before
    the question, the answer as suffix (token type 1), future attention allowed within the prompt only."""
    text = "<image>" * len(explanation.images) + QUESTION
    inputs, Y, V, P = reference_case(model, processor, explanation, text, answer_type=1)
    check_against_reference(model, explanation, inputs, Y, V, P, runs_allowed(Y[-1] + 1, range(Y[0])), **options)
    return inputs, Y, V, P


@pytest.mark.parametrize("family,seed,answer,n_images", REFERENCE_CASES)
def test_matches_reference(models, family, seed, answer, n_images):
    model, processor = models(family, seed)
    images = [rand_image(100, 60, seed=seed), rand_image(30, 90, seed=seed + 1)][:n_images]
    explanation = glimpse.explain(model, processor, images, QUESTION, answer=answer, max_new_tokens=4)
    assert explanation.answer_generated == (answer is None)
    case = check_prefix_lm_reference(model, processor, explanation)
    if seed == 0:
        check_reference_refuses_without_allowance(model, *case)


def test_fast_approximation_matches_reference(models):
    """glimpse_fast cuts the shared fused matrices to each token's rows and columns: exact with the prefix too."""
    model, processor = models("paligemma2", 4)
    explanation = glimpse.explain(model, processor, rand_image(100, 60, seed=4), QUESTION,
                                  answer="a red circle on the left", method="glimpse_fast")
    check_prefix_lm_reference(model, processor, explanation, summed_gradients=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_future_leaks_are_caught(models, family, monkeypatch):
    """The answer extended with token type 0 (the base adapter's default) joins the bidirectional prefix:
    every answer token would see the later ones."""
    model, processor = models(family)
    adapter = glimpse.adapter_for(model, processor)

    def answer_in_prefix(inputs, n_answer):
        prompt = {k: v[:, :-n_answer] if k in ("input_ids", "attention_mask", "token_type_ids") else v
                  for k, v in inputs.items()}
        leaked = Adapter.with_answer(adapter, prompt, inputs["input_ids"][0, -n_answer:].tolist())
        assert leaked["token_type_ids"][0].tolist() == [0] * leaked["input_ids"].shape[1]
        return leaked
    check_leaks_are_caught(model, processor, answer_in_prefix, monkeypatch)
