"""The library's GLIMPSE against the direct float64 reference (tests/reference.py).

Positions V and P are computed here independently of the library (from the processor's ids), and
every map and weight must match: Pearson r >= 0.9999 and close values, in float32.
"""

import pytest

import glimpse
from reference import assert_match, named_like_reference, reference_glimpse, reference_inputs
from tiny_models import build_tiny_llava, rand_image

pytestmark = pytest.mark.every_path  # every GLIMPSE run here: full-matrix, block-wise and batched

QUESTIONS = ["what color is the object?", "Describe the image.",
             "Is there a red circle on the left of the image, and what is next to it?"]


def check_against_reference(model, processor, explanation, question, **options):
    inputs, Y, V, P = reference_inputs(processor, explanation, question)
    ref = reference_glimpse(model, inputs, Y, V, P, **options)
    for name in ("token_visual", "token_prompt", "visual", "prompt", "beta_visual", "beta_prompt", "gamma",
                 "probs", "alpha", "head_weights"):
        assert_match(named_like_reference(explanation)[name], ref[name], name)
    assert explanation.layers == ref["layers"].tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("question,answer", [
    (QUESTIONS[0], " a red circle"),
    (QUESTIONS[1], " the image shows a blue square on the left of a red circle"),
    (QUESTIONS[2], " no"),
])
def test_given_answer_matches_reference(seed, question, answer):
    model, processor = build_tiny_llava(seed=seed)
    image = rand_image(72, 56, seed=seed)
    explanation = glimpse.explain(model, processor, image, question, answer=answer)
    check_against_reference(model, processor, explanation, question)


@pytest.mark.parametrize("seed", [0, 3])
def test_generated_answer_matches_reference(seed):
    model, processor = build_tiny_llava(seed=seed, layers=3)
    explanation = glimpse.explain(model, processor, rand_image(56, 80, seed=seed), QUESTIONS[0], max_new_tokens=6)
    assert explanation.answer_generated and len(explanation.answer_token_ids) >= 1
    check_against_reference(model, processor, explanation, QUESTIONS[0])


@pytest.mark.parametrize("options", [
    {"layer_fraction": 0.5}, {"token_weighting": "confidence"}, {"token_weighting": "prompt"},
    {"token_weighting": "uniform"}, {"head_lambda": 0.2, "depth_lambda": 0.6},
])
def test_options_match_reference(options):
    model, processor = build_tiny_llava(seed=4, layers=4)
    explanation = glimpse.explain(model, processor, rand_image(64, 64, seed=4), QUESTIONS[0],
                                  answer=" a red circle on the left", **options)
    mode = options.get("token_weighting", "full")
    ref_options = {k: v for k, v in options.items() if k != "token_weighting"}
    check_against_reference(model, processor, explanation, QUESTIONS[0], mode=mode, **ref_options)


def test_depth_scale_auto_is_the_reference_with_rescaled_depth_lambda():
    """method.md's DECISION: depth_scale="auto" uses depth_lambda * 64 / L."""
    model, processor = build_tiny_llava(seed=6, layers=4)
    explanation = glimpse.explain(model, processor, rand_image(64, 64, seed=6), QUESTIONS[0],
                                  answer=" a red circle", depth_scale="auto")
    assert explanation.params["depth_scale"] == "auto"
    check_against_reference(model, processor, explanation, QUESTIONS[0], depth_lambda=0.2 * 64 / 4)
